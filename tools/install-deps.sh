#!/usr/bin/env bash
# Installs the Debian packages a job needs. Usage: install-deps.sh test|bench|cross|golden
set -euo pipefail
what=${1:-test}
SUDO=""
[ "$(id -u)" = 0 ] || SUDO=sudo
pkgs="build-essential g++ meson ninja-build pkg-config libcmocka-dev libsleef-dev libsimde-dev"
case "$what" in
  test) ;;
  bench) pkgs="$pkgs libbenchmark-dev libdnnl-dev libtorch-dev python3-matplotlib python3-numpy" ;;
  golden) pkgs="$pkgs python3-torch python3-numpy" ;;
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
