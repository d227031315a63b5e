#!/usr/bin/env bash
# Builds the libFuzzer targets (tests/fuzz) with clang, ASan and UBSan in
# build-fuzz/ and runs each target for a bounded time under every ISA this
# CPU supports (NORMKIT_ISA). Exits non-zero when any run crashes or breaks
# an invariant; the failing input is left in build-fuzz/fuzz-artifacts/.
#
#   bash tools/fuzz.sh [seconds-per-target-and-ISA]   (default 15)
#
# Environment: FUZZ_TARGETS (default "fuzz_functional fuzz_module fuzz_ex
# fuzz_backward fuzz_fused"), FUZZ_ISAS (default: every supported ISA), FUZZ_BUILD
# (default build-fuzz).
# A crash replays with: NORMKIT_ISA=<isa> build-fuzz/tests/fuzz/<target> <file>
# (NKF_TRACE=1 prints the decoded calls).
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-15}
build=${FUZZ_BUILD:-build-fuzz}
targets=${FUZZ_TARGETS:-"fuzz_functional fuzz_module fuzz_ex fuzz_backward fuzz_fused"}

if [ ! -f "$build/build.ninja" ]; then
  CC=clang meson setup "$build" -Dfuzz=enabled -Db_sanitize=address,undefined -Db_lundef=false \
    -Dbuildtype=debugoptimized -Dtests=disabled -Dbench=disabled >/dev/null
fi
ninja -C "$build" -j2 >/dev/null

isas=${FUZZ_ISAS:-$("$build/normkit-isa" --supported)}
# allocator_may_return_null: nk_module_create reports a failed huge allocation
# as NK_ERR_OUT_OF_MEMORY, which the harness checks like any other error
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1:symbolize=1:allocator_may_return_null=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1}

art="$build/fuzz-artifacts"
mkdir -p "$art"
failed=0
start=$(date +%s)
for t in $targets; do
  # a working corpus per target, seeded from the committed one and shared by
  # the ISAs, so each run starts where the previous one stopped
  work="$build/fuzz-corpus/$t"
  mkdir -p "$work"
  for isa in $isas; do
    log="$build/fuzz-$t-$isa.log"
    printf '%-16s %-7s %3ss ... ' "$t" "$isa" "$secs"
    if NORMKIT_ISA=$isa "$build/tests/fuzz/$t" -max_total_time="$secs" -timeout=30 -rss_limit_mb=2048 \
        -max_len=4096 -print_final_stats=1 -artifact_prefix="$art/$t-$isa-" \
        "$work" "tests/fuzz/corpus/$t" >"$log" 2>&1; then
      runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
      echo "ok (${runs:-?} runs)"
    else
      echo "FAILED"
      grep -E "invariant violated|ERROR|runtime error|SUMMARY|Test unit written" "$log" | head -n 20 || true
      echo "   full log: $log"
      failed=1
    fi
  done
done
echo "fuzzing took $(( $(date +%s) - start ))s"
exit $failed
