#!/usr/bin/env bash
# The benchmark job: installs what it needs, builds the release build with the
# bench suite and prints the headline table of the model shapes.
#
#   tools/bench.sh            model shapes in f32, bf16 and f16 on every ISA + memcpy, oneDNN,
#                             ATen; headline tables at one thread and at every core (THREADS,
#                             default: all online CPUs)
#   tools/bench.sh --quick    the same with short timings plus a 2x2 f32 sweep
#   tools/bench.sh --full     sweeps (f32) + model shapes, JSON and PNG plots into bench-out/
#
# Environment: BUILD_DIR (default build-bench), OUT_DIR (default bench-out),
# MIN_TIME (seconds per benchmark; --full default 0.2), NORMKIT_BENCH_ARGS
# (extra arguments for normkit-bench, e.g. --benchmark_filter=model/bert, or
# --dtype=f32 for the fp32 rows alone), THREADS (the second headline's thread
# count; 1 skips it).
set -euo pipefail
cd "$(dirname "$0")/.."
mode=headline
for a in "$@"; do
  case "$a" in
    --quick) mode=quick ;;
    --full) mode=full ;;
    --headline) mode=headline ;;
    -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
    *) echo "bench.sh: unknown argument $a" >&2; exit 2 ;;
  esac
done
build=${BUILD_DIR:-build-bench}
out=${OUT_DIR:-bench-out}

bash tools/install-deps.sh bench
if [ ! -f "$build/build.ninja" ]; then
  meson setup "$build" --buildtype=release -Dbench=enabled -Dtests=disabled >/dev/null
fi
ninja -C "$build" bench/normkit-bench >/dev/null

# one thread everywhere: oneDNN and ATen use OpenMP, read at library load
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
bin="$build/bench/normkit-bench"
[ "$mode" = full ] || echo "bench.sh: running $mode (progress in $build/bench-progress.log)" >&2
extra=(${NORMKIT_BENCH_ARGS:-})
case "$mode" in
  headline)
    "$bin" --models --table ${MIN_TIME:+--min-time=$MIN_TIME} "${extra[@]}" 2>"$build/bench-progress.log"
    threads=${THREADS:-$(nproc)}
    if [ "$threads" -gt 1 ]; then
      # normkit on a pool of every core against the same-thread memcpy
      "$bin" --models --table --threads="$threads" ${MIN_TIME:+--min-time=$MIN_TIME} "${extra[@]}" \
        2>>"$build/bench-progress.log"
    fi ;;
  quick)
    "$bin" --models --sweep --quick --table ${MIN_TIME:+--min-time=$MIN_TIME} "${extra[@]}" 2>"$build/bench-progress.log" ;;
  full)
    mkdir -p "$out"
    "$bin" --models --sweep --table --min-time="${MIN_TIME:-0.2}" \
      --benchmark_out="$out/bench.json" --benchmark_out_format=json "${extra[@]}" \
      2>"$out/bench-console.txt" | tee "$out/headline.txt"
    /usr/bin/python3 bench/plot.py "$out/bench.json" "$out"
    echo "JSON, console log, headline table and plots in $out/" ;;
esac
