#!/usr/bin/env bash
# The PyTorch ATen CPU backend (python/): installs libtorch, PyTorch and
# torchvision, builds normkit with -Dtorch=enabled (-Werror) in build-torch
# and runs python/run_tests.sh against it.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/install-deps.sh torch
# Debian's interpreter: python3-torch installs into /usr/lib/python3
python=${PYTHON:-/usr/bin/python3}
if [ -f build-torch/build.ninja ]; then
  meson configure build-torch -Dtorch=enabled -Dpython="$python"
else
  meson setup build-torch --werror -Dtorch=enabled -Dpython="$python" -Dtests=disabled \
    -Dbench=disabled >/dev/null
fi
ninja -C build-torch
PYTHON="$python" bash python/run_tests.sh build-torch
