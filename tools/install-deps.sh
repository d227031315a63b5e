#!/usr/bin/env bash
# Installs the Debian packages a job needs. Usage: install-deps.sh test|bench|cross|golden|fuzz
set -euo pipefail
what=${1:-test}
SUDO=""
[ "$(id -u)" = 0 ] || SUDO=sudo
pkgs="build-essential g++ meson ninja-build pkg-config libcmocka-dev libsleef-dev libsimde-dev"
case "$what" in
  test) ;;
  bench) pkgs="$pkgs libbenchmark-dev libdnnl-dev libtorch-dev python3-matplotlib python3-numpy" ;;
  golden) pkgs="$pkgs python3-torch python3-numpy" ;;
  # libFuzzer targets (tools/fuzz.sh): Debian 12's clang is clang 14, whose
  # libclang_rt.fuzzer / asan / ubsan runtimes are in libclang-rt-14-dev;
  # llvm-14 has llvm-symbolizer for readable stacks. ThreadSanitizer
  # (tools/tsan.sh) uses gcc's libtsan2, already pulled in by build-essential.
  fuzz) pkgs="$pkgs clang libclang-rt-14-dev llvm-14" ;;
  *) echo "unknown job $what" >&2; exit 2 ;;
esac
missing=""
for p in $pkgs; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq || $SUDO apt-get update -qq || true
  $SUDO apt-get install -y -qq --no-install-recommends $missing
fi
