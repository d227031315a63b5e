#!/usr/bin/env bash
# Builds normkit (-Werror) and runs the whole test suite on the best ISA.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/install-deps.sh test
[ -f build/build.ninja ] || meson setup build --werror >/dev/null
ninja -C build
meson test -C build --print-errorlogs
