#!/usr/bin/env bash
# Builds normkit with ThreadSanitizer in build-tsan/ and runs the concurrent
# first-use test (tests/test_threads.c) under every ISA this CPU supports,
# then the helper pool's test (tests/test_threadpool.c; no kernels run, so once) and
# every operator on real thread pools (tests/test_exec.c, once, on the default ISA).
#   bash tools/tsan.sh            (CC=clang bash tools/tsan.sh for clang)
set -euo pipefail
cd "$(dirname "$0")/.."
build=${TSAN_BUILD:-build-tsan}
if [ ! -f "$build/build.ninja" ]; then
  meson setup "$build" -Db_sanitize=thread -Db_lundef=false -Dbuildtype=debugoptimized \
    -Dbench=disabled >/dev/null
fi
ninja -C "$build" -j2 normkit-isa tests/test_threads tests/test_threadpool tests/test_exec >/dev/null
export TSAN_OPTIONS=${TSAN_OPTIONS:-halt_on_error=1:second_deadlock_stack=1}
# TSan needs the usual address-space layout; newer kernels randomise mmap
# more than it supports, which setarch -R turns off for the child.
run() { if setarch "$(uname -m)" -R true 2>/dev/null; then setarch "$(uname -m)" -R "$@"; else "$@"; fi; }
for isa in $(run "$build/normkit-isa" --supported); do
  echo "-- ThreadSanitizer, NORMKIT_ISA=$isa"
  NORMKIT_ISA=$isa run "$build/tests/test_threads"
done
echo "-- ThreadSanitizer, helper pool"
run "$build/tests/test_threadpool"
echo "-- ThreadSanitizer, every operator on real thread pools"
run "$build/tests/test_exec"
echo "ThreadSanitizer: ok"
