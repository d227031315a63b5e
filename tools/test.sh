#!/usr/bin/env bash
# Builds normkit (-Werror) and runs the whole test suite on the best ISA: the
# cmocka suites and the synchronized BatchNorm example over MPI (suite 'mpi'),
# then the PyTorch backend's (tools/test-torch.sh; NORMKIT_NO_TORCH=1 leaves
# it out, for a machine without PyTorch).
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/install-deps.sh test
# -Dtests=enabled -Dexamples=enabled: a missing cmocka or MPI is an error here,
# never a silent skip (the MPI example's tests are the suite 'mpi')
if [ -f build/build.ninja ]; then
  meson configure build -Dtests=enabled -Dexamples=enabled
else
  meson setup build --werror -Dtests=enabled -Dexamples=enabled >/dev/null
fi
ninja -C build
meson test -C build --print-errorlogs
if [ -z "${NORMKIT_NO_TORCH:-}" ]; then
  bash tools/test-torch.sh
fi
