#!/usr/bin/env bash
# Runs the normkit.torch tests (unittest) against the extension built in a
# Meson build directory (default: build). Usage: python/run_tests.sh [builddir]
# PYTHON selects the interpreter (default: python3 if it imports torch, else
# /usr/bin/python3, Debian's, where python3-torch lives).
# NORMKIT_TORCH_TEST_VERBOSE=1 prints the errors measured on the models.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
builddir=${1:-build}
case "$builddir" in /*) ;; *) builddir="$root/$builddir" ;; esac
lib="$builddir/python/_normkit_aten.so"
[ -f "$lib" ] || { echo "error: $lib not found (meson setup $builddir -Dtorch=enabled)" >&2; exit 1; }
if [ -z "${PYTHON:-}" ]; then
  PYTHON=python3
  "$PYTHON" -c 'import torch' 2>/dev/null || PYTHON=/usr/bin/python3
fi
export NORMKIT_TORCH_LIBRARY="$lib"
# one intra-op thread (test_threads_bitwise sets 1, 2 and 3 itself): OpenMP
# workers spinning on a busy 2-core machine make the suite ten times slower
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
cd "$root/python/tests"
timeout 300 "$PYTHON" -m unittest discover -s . -p 'test_*.py' -v
