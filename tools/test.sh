#!/usr/bin/env bash
# Builds normkit (-Werror) and runs the whole test suite on the best ISA: the
# cmocka suites, then the PyTorch backend's (tools/test-torch.sh; NORMKIT_NO_TORCH=1
# leaves it out, for a machine without PyTorch).
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/install-deps.sh test
# -Dtests=enabled: a missing cmocka is an error here, never a silent skip
if [ -f build/build.ninja ]; then
  meson configure build -Dtests=enabled
else
  meson setup build --werror -Dtests=enabled >/dev/null
fi
ninja -C build
meson test -C build --print-errorlogs
if [ -z "${NORMKIT_NO_TORCH:-}" ]; then
  bash tools/test-torch.sh
fi
