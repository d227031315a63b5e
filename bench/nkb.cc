// nkb: the C shim over Google Benchmark (see nkb.h). The only C++ file that
// includes <benchmark/benchmark.h>; the benchmarks themselves are C.
#include "nkb.h"

#include <benchmark/benchmark.h>
#include <unistd.h>

#include <cstdio>
#include <iostream>
#include <map>
#include <string>
#include <vector>

struct nkb_state {
    benchmark::State *s;
    void *ctx;
};

namespace {

struct Result {
    std::string name;
    bool skipped;
    std::string message;
    double cpu_s;
    double real_s;
    std::map<std::string, double> counters;
};

std::vector<Result> g_results;
bool g_real_time = false;

// Console output as usual, plus a copy of every iteration run for the
// summary printed by the C side.
class CollectingReporter : public benchmark::ConsoleReporter {
  public:
    explicit CollectingReporter(OutputOptions o) : benchmark::ConsoleReporter(o) {}
    void ReportRuns(const std::vector<Run> &reports) override
    {
        for (const Run &r : reports) {
            if (r.run_type != Run::RT_Iteration)
                continue;
            Result res;
            res.name = r.benchmark_name();
            res.skipped = r.error_occurred;
            res.message = r.error_message;
            double it = r.iterations > 0 ? static_cast<double>(r.iterations) : 1.0;
            res.cpu_s = r.cpu_accumulated_time / it;
            res.real_s = r.real_accumulated_time / it;
            for (const auto &kv : r.counters)
                res.counters[kv.first] = kv.second.value;
            g_results.push_back(res);
        }
        benchmark::ConsoleReporter::ReportRuns(reports);
    }
};

benchmark::Counter::Flags flags_of(nkb_counter_kind k)
{
    switch (k) {
    case NKB_RATE: return benchmark::Counter::kIsRate;
    case NKB_INVARIANT_RATE: return benchmark::Counter::kIsIterationInvariantRate;
    case NKB_AVG_ITER: return benchmark::Counter::kAvgIterations;
    default: return benchmark::Counter::kDefaults;
    }
}

} // namespace

extern "C" {

int nkb_register(const char *name, nkb_fn fn, void *ctx, int nargs, const int64_t *args,
                 const char *const *arg_names, double min_time_s)
{
    if (nargs < 0 || nargs > 16 || (nargs > 0 && !args))
        return -1;
    benchmark::internal::Benchmark *b = benchmark::RegisterBenchmark(
        name, [fn, ctx](benchmark::State &s) {
            nkb_state st{&s, ctx};
            fn(&st);
        });
    if (nargs > 0) {
        b->Args(std::vector<int64_t>(args, args + nargs));
        if (arg_names)
            b->ArgNames(std::vector<std::string>(arg_names, arg_names + nargs));
    }
    if (min_time_s > 0)
        b->MinTime(min_time_s);
    if (g_real_time)
        b->UseRealTime();
    b->Unit(benchmark::kMicrosecond);
    return 0;
}

void nkb_use_real_time(int on) { g_real_time = on != 0; }

void *nkb_ctx(nkb_state *st) { return st->ctx; }
int64_t nkb_arg(nkb_state *st, int i) { return st->s->range(static_cast<std::size_t>(i)); }
int nkb_keep_running(nkb_state *st) { return st->s->KeepRunning() ? 1 : 0; }
int64_t nkb_iterations(nkb_state *st) { return static_cast<int64_t>(st->s->iterations()); }
void nkb_pause_timing(nkb_state *st) { st->s->PauseTiming(); }
void nkb_resume_timing(nkb_state *st) { st->s->ResumeTiming(); }

void nkb_set_bytes(nkb_state *st, int64_t bytes_per_iteration)
{
    st->s->SetBytesProcessed(static_cast<int64_t>(st->s->iterations()) * bytes_per_iteration);
}

void nkb_set_items(nkb_state *st, int64_t items_per_iteration)
{
    st->s->SetItemsProcessed(static_cast<int64_t>(st->s->iterations()) * items_per_iteration);
}

void nkb_counter(nkb_state *st, const char *name, double value, nkb_counter_kind kind)
{
    st->s->counters[name] = benchmark::Counter(value, flags_of(kind));
}

void nkb_set_label(nkb_state *st, const char *label) { st->s->SetLabel(label); }

void nkb_skip(nkb_state *st, const char *reason)
{
#ifdef NKB_HAVE_SKIP_WITH_MESSAGE
    st->s->SkipWithMessage(reason);
#else
    std::string msg = std::string("skipped: ") + reason;
    st->s->SkipWithError(msg.c_str());
#endif
}

void nkb_fail(nkb_state *st, const char *reason) { st->s->SkipWithError(reason); }

void nkb_do_not_optimize(const void *p) { benchmark::DoNotOptimize(p); benchmark::ClobberMemory(); }

int nkb_init(int *argc, char **argv)
{
    benchmark::Initialize(argc, argv);
    return 0;
}

size_t nkb_run(int quiet_stdout)
{
    g_results.clear();
    int fd = quiet_stdout ? STDERR_FILENO : STDOUT_FILENO;
    CollectingReporter rep(isatty(fd) ? benchmark::ConsoleReporter::OO_ColorTabular
                                      : benchmark::ConsoleReporter::OO_Tabular);
    if (quiet_stdout) {
        rep.SetOutputStream(&std::cerr);
        rep.SetErrorStream(&std::cerr);
    }
    return benchmark::RunSpecifiedBenchmarks(&rep);
}

void nkb_shutdown(void) { benchmark::Shutdown(); }

size_t nkb_result_count(void) { return g_results.size(); }
const char *nkb_result_name(size_t i) { return g_results.at(i).name.c_str(); }
int nkb_result_skipped(size_t i) { return g_results.at(i).skipped ? 1 : 0; }
const char *nkb_result_message(size_t i) { return g_results.at(i).message.c_str(); }
double nkb_result_cpu_seconds(size_t i) { return g_results.at(i).cpu_s; }
double nkb_result_real_seconds(size_t i) { return g_results.at(i).real_s; }

int nkb_result_counter(size_t i, const char *name, double *value)
{
    const auto &c = g_results.at(i).counters;
    auto it = c.find(name);
    if (it == c.end()) {
        *value = 0;
        return 0;
    }
    *value = it->second;
    return 1;
}

} // extern "C"
