#!/usr/bin/env bash
# The PyTorch ATen CPU backend (python/): installs libtorch, PyTorch and
# torchvision, builds normkit with -Dtorch=enabled (-Werror) in build-torch
# and runs python/run_tests.sh against it.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/install-deps.sh torch
# Debian's interpreter: python3-torch installs into /usr/lib/python3
python=${PYTHON:-/usr/bin/python3}
# --prefix=/usr: the package goes to /usr/lib/python3/dist-packages, on the
# path of Debian's interpreter (the README's install line)
if [ -f build-torch/build.ninja ]; then
  meson configure build-torch --prefix=/usr -Dtorch=enabled -Dpython="$python"
else
  meson setup build-torch --werror --prefix=/usr -Dtorch=enabled -Dpython="$python" \
    -Dtests=disabled -Dbench=disabled >/dev/null
fi
ninja -C build-torch
PYTHON="$python" bash python/run_tests.sh build-torch
# What `meson install` puts in place: the package and its library side by
# side in the interpreter's site directory, importable from there
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
DESTDIR="$tmp" meson install -C build-torch --quiet --no-rebuild
init=$(find "$tmp" -path '*/normkit/__init__.py' | head -n 1)
[ -n "$init" ] || { echo "error: normkit/__init__.py not installed" >&2; exit 1; }
pkg=$(dirname "$init")
test -f "$pkg/torch.py" && test -f "$pkg/_normkit_aten.so"
site=$(dirname "${pkg#"$tmp"}")
"$python" -c 'import sys; sys.exit(sys.argv[1] not in sys.path)' "$site" ||
  { echo "error: installed into $site, which is not on $python's sys.path" >&2; exit 1; }
(cd "$tmp" && PYTHONPATH=$(dirname "$pkg") "$python" -c '
import torch, normkit.torch
normkit.torch.enable()
y = torch.nn.functional.layer_norm(torch.randn(4, 8), (8,))
assert normkit.torch.stats()["layer_norm"] == (1, 0), normkit.torch.stats()
print("installed normkit.torch: ok, ISA", normkit.torch.isa())')
