#!/usr/bin/env bash
# Installs the Debian packages a job needs. Usage: install-deps.sh test|bench|cross|golden|fuzz|torch|mpi
#   test    native build and cmocka tests (SLEEF, SIMDe for the emulated AVX-512 table),
#           and Open MPI for examples/syncbn_mpi.c and its tests (the jobs below that
#           add to test leave Open MPI out)
#   bench   test + Google Benchmark, oneDNN, libtorch, matplotlib
#   cross   aarch64 and armhf cross toolchains, qemu-user and the arm64/armhf
#           -dev packages (adds those foreign architectures): tools/cross-test.sh
#   golden  test + PyTorch to regenerate tests/golden
#   torch   test + libtorch, PyTorch and torchvision for the ATen CPU backend
#           (python/, meson -Dtorch=enabled): tools/test-torch.sh
#   fuzz    test + clang 14, its libFuzzer/ASan/UBSan runtimes (libclang-rt-14-dev) and
#           llvm-symbolizer (llvm-14): tools/fuzz.sh; tools/tsan.sh uses gcc's libtsan2
#   mpi     native build and Open MPI (mpicc, mpiexec): examples/syncbn_mpi.c alone
# Idempotent: nothing is fetched when every package is already installed.
set -euo pipefail
what=${1:-test}
SUDO=""
[ "$(id -u)" = 0 ] || SUDO=sudo
export DEBIAN_FRONTEND=noninteractive

base="meson ninja-build pkg-config"
mpi="openmpi-bin libopenmpi-dev"
native="$base build-essential g++ libcmocka-dev libsleef-dev libsimde-dev"
foreign_archs=""
case "$what" in
  test) pkgs="$native $mpi" ;;
  bench) pkgs="$native libbenchmark-dev libdnnl-dev libtorch-dev python3-matplotlib python3-numpy" ;;
  golden) pkgs="$native python3-torch python3-numpy" ;;
  torch) pkgs="$native libtorch-dev python3-torch python3-torchvision python3-numpy" ;;
  cross)
    foreign_archs="arm64 armhf"
    pkgs="$base qemu-user
      gcc-aarch64-linux-gnu g++-aarch64-linux-gnu libc6-dev-arm64-cross binutils-aarch64-linux-gnu
      gcc-arm-linux-gnueabihf g++-arm-linux-gnueabihf libc6-dev-armhf-cross binutils-arm-linux-gnueabihf
      libcmocka-dev:arm64 libcmocka-dev:armhf libsleef-dev:arm64 libsleef-dev:armhf" ;;
  fuzz) pkgs="$native clang libclang-rt-14-dev llvm-14" ;;
  mpi) pkgs="$base build-essential $mpi" ;;
  *) echo "unknown job $what (test, bench, cross, golden, fuzz, torch or mpi)" >&2; exit 2 ;;
esac

for arch in $foreign_archs; do
  if ! dpkg --print-foreign-architectures | grep -qx "$arch"; then
    echo "adding foreign architecture $arch"
    $SUDO dpkg --add-architecture "$arch"
  fi
done

missing=""
for p in $pkgs; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
[ -n "$missing" ] || exit 0

# apt-get update exits non-zero when any one index fails (a mirror caught
# mid-sync, "File has unexpected size"), although every other index was
# fetched. Retry a few times; then go on with what was fetched and let the
# install decide: it only fails if a package we need is really unknown.
apt_update() {
  local try
  for try in 1 2 3; do
    if $SUDO apt-get update -qq; then
      return 0
    fi
    echo "apt-get update: an index failed (try $try of 3)" >&2
    [ "$try" = 3 ] || sleep $((try * 5))
  done
  echo "apt-get update: still failing; continuing with the indexes that were fetched" >&2
  return 0
}

echo "installing:$missing"
apt_update
# shellcheck disable=SC2086
if ! $SUDO apt-get install -y -qq --no-install-recommends $missing; then
  echo "apt-get install failed; refreshing the indexes once more" >&2
  apt_update
  # shellcheck disable=SC2086
  $SUDO apt-get install -y -qq --no-install-recommends $missing
fi
