/*
 * nkb: a C face for Google Benchmark, so that normkit's benchmarks are
 * written in C. The implementation (nkb.cc) is the only C++ file that sees
 * <benchmark/benchmark.h>.
 *
 *   static void bm(nkb_state *st) {
 *       struct my_case *cs = nkb_ctx(st);
 *       if (!ready) { nkb_skip(st, "why"); return; }
 *       while (nkb_keep_running(st))
 *           kernel(...);
 *       nkb_set_bytes(st, bytes_per_iteration);
 *       nkb_counter(st, "memcpy_ratio", memcpy_seconds_per_iteration, NKB_INVARIANT_RATE);
 *   }
 *   int64_t args[] = {64, 3136};
 *   const char *names[] = {"c", "s"};
 *   nkb_register("sweep/op/avx2", bm, cs, 2, args, names);
 *
 * Rates are computed by Google Benchmark from its own CPU time of the
 * timed loop (as bytes_per_second is), so a ratio to a reference measured
 * elsewhere is expressed as an iteration-invariant rate: pass the
 * reference's seconds per iteration and the reported value is
 * reference time / our time.
 */
#ifndef NKB_H
#define NKB_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct nkb_state nkb_state;
typedef void (*nkb_fn)(nkb_state *st);

/* Counter kinds (mirror benchmark::Counter::Flags) */
typedef enum nkb_counter_kind {
    NKB_VALUE = 0,          /* reported as given */
    NKB_RATE = 1,           /* value / seconds */
    NKB_INVARIANT_RATE = 2, /* value * iterations / seconds */
    NKB_AVG_ITER = 3        /* value / iterations */
} nkb_counter_kind;

/* Registration. name is copied; ctx is passed back through nkb_ctx() and
 * must outlive the run. args (nargs values, may be 0) are appended to the
 * name by Google Benchmark, as "name:value" when arg_names is given.
 * min_time_s > 0 overrides --benchmark_min_time for this benchmark.
 * Returns 0, or -1 when nargs is out of range. */
int nkb_register(const char *name, nkb_fn fn, void *ctx, int nargs, const int64_t *args,
                 const char *const *arg_names, double min_time_s);

/* Benchmarks registered after this time wall-clock rather than CPU time
 * (work spread over threads). */
void nkb_use_real_time(int on);
/* Inside a benchmark */
void *nkb_ctx(nkb_state *st);
int64_t nkb_arg(nkb_state *st, int i);
int nkb_keep_running(nkb_state *st); /* the timed loop: while (nkb_keep_running(st)) { ... } */
int64_t nkb_iterations(nkb_state *st);
void nkb_pause_timing(nkb_state *st);
void nkb_resume_timing(nkb_state *st);
void nkb_set_bytes(nkb_state *st, int64_t bytes_per_iteration);  /* bytes_per_second */
void nkb_set_items(nkb_state *st, int64_t items_per_iteration);  /* items_per_second */
void nkb_counter(nkb_state *st, const char *name, double value, nkb_counter_kind kind);
void nkb_set_label(nkb_state *st, const char *label);
/* Ends the benchmark without a measurement; the reason is reported in the
 * console and in the JSON (error_message). Call it before the timed loop, or
 * after it and return. SkipWithMessage where Google Benchmark has it,
 * SkipWithError otherwise (1.7). */
void nkb_skip(nkb_state *st, const char *reason);
/* Ends the benchmark as failed (SkipWithError): a check of its results did
 * not pass. The reason is reported as nkb_skip's is. */
void nkb_fail(nkb_state *st, const char *reason);
/* Keeps the compiler from dropping a computation whose result is unused. */
void nkb_do_not_optimize(const void *p);

/* Running: nkb_run initialises Google Benchmark with argc/argv (it removes
 * the flags it knows), runs what the filter selects and returns the number
 * of benchmarks run. quiet_stdout: the per-benchmark console lines go to
 * stderr, so stdout stays free for a summary. */
int nkb_init(int *argc, char **argv);
size_t nkb_run(int quiet_stdout);
void nkb_shutdown(void);

/* Results of the last nkb_run (iteration runs only, no aggregates). */
size_t nkb_result_count(void);
const char *nkb_result_name(size_t i);       /* full name with arguments */
int nkb_result_skipped(size_t i);            /* 1 when skipped or failed */
const char *nkb_result_message(size_t i);    /* skip reason, "" otherwise */
double nkb_result_cpu_seconds(size_t i);     /* CPU seconds per iteration */
double nkb_result_real_seconds(size_t i);    /* wall seconds per iteration */
/* Finished value of a counter (rates already divided); 0 and returns 0 when
 * the run has no such counter. */
int nkb_result_counter(size_t i, const char *name, double *value);

#ifdef __cplusplus
}
#endif

#endif /* NKB_H */
