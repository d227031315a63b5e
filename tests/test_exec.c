/*
 * Execution context and tensor descriptors of the _ex entry points:
 *   - results never depend on the pool: serial pools reporting 1 .. 64
 *     threads that run the tasks in index, reverse or a seeded random order,
 *     and a concurrent pthread pool, give y, saved statistics, running
 *     statistics and per-channel moments bitwise equal to ctx == NULL, for
 *     every operator and layout, on shapes below and above the inline
 *     threshold and with groups cut into pieces;
 *   - strided views (padding between rows and between samples, x and y with
 *     their own strides) agree with the dense call on a compact copy, leave
 *     y's padding and x untouched, and in place equals out of place bitwise;
 *   - every malformed context or descriptor returns its status, names the
 *     argument and value in nk_last_error() and leaves the outputs untouched;
 *     the _ex calls with ctx == NULL and a dense descriptor equal the entry
 *     points without _ex bitwise;
 *   - the pool is called for large shapes only, never when it reports one
 *     thread, with more than one task per call and never from inside a task.
 *
 * Builds with NKT_EMULATED (the cross builds, run under qemu user
 * emulation, which hangs on multi-threaded programs) skip the concurrent pool
 * and sweep fewer thread counts with the serial ones.
 */
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#ifndef NKT_EMULATED
#  include <pthread.h>
#endif

#include "nk_test.h"

/* ------------------------------------------------------------ operators */

enum {
    BN_TRAIN,
    BN_TRAIN_CUM, /* cumulative moving average (momentum=None) */
    BN_INFER,
    BN_STATS,
    BN_APPLY,
    IN_RUN,   /* use_input_stats = 1, running statistics updated */
    IN_PLAIN, /* use_input_stats = 1, no running statistics */
    IN_EVAL,  /* use_input_stats = 0 */
    GN,
    LN,
    RMS,
    NUM_OPS
};
static const char *const op_names[NUM_OPS] = {
    "bn_train", "bn_train_cumulative", "bn_infer", "bn_stats", "bn_apply_moments",
    "in_running", "in", "in_eval", "gn", "ln", "rms"};
static const char *const ex_names[NUM_OPS] = {
    "nk_batch_norm_train_ex", "nk_batch_norm_train_ex", "nk_batch_norm_infer_ex",
    "nk_batch_norm_stats_ex", "nk_batch_norm_apply_moments_ex", "nk_instance_norm_ex",
    "nk_instance_norm_ex", "nk_instance_norm_ex", "nk_group_norm_ex", "nk_layer_norm_ex",
    "nk_rms_norm_ex"};

#define COUNT(a) (sizeof a / sizeof a[0])
#define EPS 1e-5
#define RMS_EPS 1e-6
#define TRACKED0 3 /* num_batches_tracked before every call */

typedef struct tcase {
    int op;
    int64_t n, c, s;
    int layout;
    int64_t groups; /* GroupNorm */
    int act;
    float alpha;
} tcase;

static size_t numel(const tcase *t) { return (size_t)(t->n * t->c * t->s); }
static int has_y(const tcase *t) { return t->op != BN_STATS; }
static size_t inner_ext(const tcase *t) { return (size_t)(t->layout ? t->c : t->s); }
static size_t mid_ext(const tcase *t) { return (size_t)(t->layout ? t->s : t->c); }

/* Saved statistics per call: one per reduced set. */
static size_t nsave(const tcase *t)
{
    switch (t->op) {
    case IN_RUN: case IN_PLAIN: case IN_EVAL: return (size_t)(t->n * t->c);
    case GN: return (size_t)(t->n * t->groups);
    case LN: case RMS: return (size_t)(t->n * t->s);
    default: return (size_t)t->c;
    }
}

static const char *label(const tcase *t)
{
    static char buf[160];
    snprintf(buf, sizeof buf, "%s [%lld, %lld, %lld] %s G=%lld act=%d", op_names[t->op],
             (long long)t->n, (long long)t->c, (long long)t->s, t->layout ? "NHWC" : "NCHW",
             (long long)t->groups, t->act);
    return buf;
}

static float *falloc(size_t n)
{
    float *p = malloc((n ? n : 1) * sizeof *p);
    assert_non_null(p);
    return p;
}

/* NaN sentinels with distinct payloads: x's padding, y (and its padding),
 * saved statistics. A kernel that carries x's padding into y shows x's. */
#define X_PAD 0x7fc0dea1u
#define Y_PAD 0x7fc1beefu
#define SAVE_PAD 0x7fc2cafeu
#define MOMENT_BYTE 0x5a

static void fill_bits(float *p, size_t n, uint32_t bits)
{
    for (size_t i = 0; i < n; i++)
        memcpy(&p[i], &bits, sizeof bits);
}

/* ------------------------------------------------------------ inputs and outputs */

typedef struct inputs {
    const float *w, *b;    /* c values */
    const nk_moments *mom; /* BN_APPLY: c merged moments */
} inputs;

/* Everything a call writes besides y, and y itself (ny floats; NULL when
 * the operator has none). */
typedef struct outs {
    float *y, *sm, *si, *rm, *rv;
    nk_moments *mo;
    size_t ny, ns, nc;
    int64_t tracked;
} outs;

static void outs_alloc(outs *o, const tcase *t, size_t ny)
{
    o->ny = has_y(t) ? ny : 0;
    o->ns = nsave(t);
    o->nc = (size_t)t->c;
    o->y = o->ny ? falloc(o->ny) : NULL;
    o->sm = falloc(o->ns);
    o->si = falloc(o->ns);
    o->rm = falloc(o->nc);
    o->rv = falloc(o->nc);
    o->mo = malloc(o->nc * sizeof *o->mo);
    assert_non_null(o->mo);
}

static void outs_reset(outs *o)
{
    fill_bits(o->y, o->ny, Y_PAD);
    fill_bits(o->sm, o->ns, SAVE_PAD);
    fill_bits(o->si, o->ns, SAVE_PAD);
    for (size_t c = 0; c < o->nc; c++) {
        o->rm[c] = 0.1f * (float)(c % 5) + 2.5f;
        o->rv[c] = 0.5f + 0.125f * (float)(c % 7);
    }
    memset(o->mo, MOMENT_BYTE, o->nc * sizeof *o->mo);
    o->tracked = TRACKED0;
}

static void outs_free(outs *o)
{
    free(o->y);
    free(o->sm);
    free(o->si);
    free(o->rm);
    free(o->rv);
    free(o->mo);
}

/* ------------------------------------------------------------ one call */

enum { API_EX, API_OLD };

static nk_tensor_desc desc_of(const tcase *t)
{
    nk_tensor_desc d = NK_TENSOR_DESC_INIT;
    d.layout = (uint32_t)t->layout;
    d.n = t->n;
    d.c = t->c;
    d.spatial = t->s;
    d.activation = t->act;
    d.alpha = t->alpha;
    return d;
}

/* One operator through the _ex entry point (ctx, d) or the one without _ex
 * (dense, API_OLD); side outputs from o, y may be x (in place). */
static nk_status run_op(const tcase *t, int api, const nk_context *ctx, const nk_tensor_desc *d,
                        const float *x, float *y, const inputs *in, outs *o)
{
    const nk_shape s = {t->n, t->c, t->s, (nk_layout)t->layout};
    const nk_options opt = {(nk_activation)t->act, t->alpha};
    const int old = api == API_OLD;
    const int64_t rows = t->n * t->s;
    nk_running_stats rs = {o->rm, o->rv, 0.1, t->op == BN_TRAIN_CUM, 1, o->tracked};
    nk_running_stats *run = t->op == IN_PLAIN ? NULL : &rs;
    nk_status st = NK_ERR_UNSUPPORTED;
    switch (t->op) {
    case BN_TRAIN:
    case BN_TRAIN_CUM:
        st = old ? nk_batch_norm_train(x, &s, in->w, in->b, EPS, &rs, y, o->sm, o->si, &opt)
                 : nk_batch_norm_train_ex(ctx, d, x, y, in->w, in->b, EPS, &rs, o->sm, o->si);
        break;
    case BN_INFER:
        st = old ? nk_batch_norm_infer(x, &s, in->w, in->b, o->rm, o->rv, EPS, y, &opt)
                 : nk_batch_norm_infer_ex(ctx, d, x, y, in->w, in->b, o->rm, o->rv, EPS);
        break;
    case BN_STATS:
        st = old ? nk_batch_norm_stats(x, &s, o->mo) : nk_batch_norm_stats_ex(ctx, d, x, o->mo);
        break;
    case BN_APPLY:
        st = old ? nk_batch_norm_apply_moments(x, &s, in->mom, in->w, in->b, EPS, &rs, y, o->sm,
                                               o->si, &opt)
                 : nk_batch_norm_apply_moments_ex(ctx, d, x, y, in->mom, in->w, in->b, EPS, &rs,
                                                  o->sm, o->si);
        break;
    case IN_RUN:
    case IN_PLAIN:
    case IN_EVAL: {
        const int use_input = t->op != IN_EVAL;
        st = old ? nk_instance_norm(x, &s, in->w, in->b, EPS, use_input, run, y, o->sm, o->si,
                                    &opt)
                 : nk_instance_norm_ex(ctx, d, x, y, in->w, in->b, EPS, use_input, run, o->sm,
                                       o->si);
        break;
    }
    case GN:
        st = old ? nk_group_norm(x, &s, t->groups, in->w, in->b, EPS, y, o->sm, o->si, &opt)
                 : nk_group_norm_ex(ctx, d, x, y, t->groups, in->w, in->b, EPS, o->sm, o->si);
        break;
    case LN:
        st = old ? nk_layer_norm(x, rows, t->c, in->w, in->b, EPS, y, o->sm, o->si, &opt)
                 : nk_layer_norm_ex(ctx, d, x, y, in->w, in->b, EPS, o->sm, o->si);
        break;
    case RMS:
        st = old ? nk_rms_norm(x, rows, t->c, in->w, RMS_EPS, y, o->si, &opt)
                 : nk_rms_norm_ex(ctx, d, x, y, in->w, RMS_EPS, o->si);
        break;
    }
    o->tracked = rs.num_batches_tracked;
    return st;
}

static void run_ok(const tcase *t, int api, const nk_context *ctx, const nk_tensor_desc *d,
                   const float *x, float *y, const inputs *in, outs *o, const char *who)
{
    nk_status st = run_op(t, api, ctx, d, x, y, in, o);
    if (st != NK_OK)
        print_error("%s %s: status %d: %s\n", label(t), who, st, nk_last_error());
    assert_int_equal(st, NK_OK);
    assert_string_equal(nk_last_error(), "");
}

/* ------------------------------------------------------------ comparisons */

static double elem(const void *p, size_t i, size_t esz)
{
    if (esz == sizeof(float)) {
        float f;
        memcpy(&f, (const char *)p + i * esz, esz);
        return f;
    }
    double v;
    memcpy(&v, (const char *)p + i * esz, esz);
    return v;
}

static void assert_bits(const void *got, const void *want, size_t n, size_t esz, const char *what,
                        const tcase *t, const char *who)
{
    if (!n || !memcmp(got, want, n * esz))
        return;
    size_t i = 0;
    while (!memcmp((const char *)got + i * esz, (const char *)want + i * esz, esz))
        i++;
    const int digits = esz == sizeof(float) ? 9 : 17;
    print_error("%s %s: %s[%zu] = %.*g, expected %.*g (bitwise)\n", label(t), who, what, i, digits,
                elem(got, i, esz), digits, elem(want, i, esz));
    fail();
}

/* |got - want| <= 1e-6 + 1e-5 |want|, NaN where want is NaN */
static void assert_near(const void *got, const void *want, size_t n, size_t esz, const char *what,
                        const tcase *t, const char *who)
{
    for (size_t i = 0; i < n; i++) {
        double g = elem(got, i, esz), w = elem(want, i, esz);
        if (isnan(w) ? isnan(g) : fabs(g - w) <= 1e-6 + 1e-5 * fabs(w))
            continue;
        print_error("%s %s: %s[%zu] = %.9g, expected %.9g\n", label(t), who, what, i, g, w);
        fail();
    }
}

typedef void (*cmp_fn)(const void *, const void *, size_t, size_t, const char *, const tcase *,
                       const char *);

/* Side outputs (and y when with_y) of two runs of t. */
static void outs_compare(cmp_fn cmp, const outs *got, const outs *want, int with_y, const tcase *t,
                         const char *who)
{
    if (with_y)
        cmp(got->y, want->y, got->ny, sizeof(float), "y", t, who);
    cmp(got->sm, want->sm, got->ns, sizeof(float), "save_mean", t, who);
    cmp(got->si, want->si, got->ns, sizeof(float), "save_invstd", t, who);
    cmp(got->rm, want->rm, got->nc, sizeof(float), "running_mean", t, who);
    cmp(got->rv, want->rv, got->nc, sizeof(float), "running_var", t, who);
    if (t->op == BN_STATS)
        cmp(got->mo, want->mo, 3 * got->nc, sizeof(double), "moments (count, mean, m2)", t, who);
    assert_int_equal(got->tracked, want->tracked);
}

/* ------------------------------------------------------------ pools */

/* What a pool saw. */
typedef struct pool_log {
    size_t calls, tasks, min_n;
    int nested;   /* parallel_for called from inside a task */
    int miscount; /* a call ran another number of tasks than asked */
} pool_log;

enum { ORDER_INDEX, ORDER_REVERSE, ORDER_RANDOM };

typedef struct serial_pool {
    pool_log log;
    nk_threadpool iface;
    size_t threads;
    int order;
    int in_task;
    nkt_rng rng;
} serial_pool;

static size_t serial_threads(void *ctx) { return ((serial_pool *)ctx)->threads; }

static void log_call(pool_log *l, size_t n, int nested)
{
    l->calls++;
    l->tasks += n;
    l->min_n = l->calls == 1 || n < l->min_n ? n : l->min_n;
    l->nested |= nested;
}

static void serial_for(void *ctx, void (*task)(void *, size_t), void *arg, size_t n)
{
    serial_pool *p = ctx;
    log_call(&p->log, n, p->in_task);
    size_t *perm = NULL;
    if (p->order == ORDER_RANDOM) {
        perm = malloc((n ? n : 1) * sizeof *perm);
        assert_non_null(perm);
        for (size_t i = 0; i < n; i++)
            perm[i] = i;
        for (size_t i = n; i > 1; i--) {
            size_t j = (size_t)(nkt_next(&p->rng) % i), tmp = perm[i - 1];
            perm[i - 1] = perm[j];
            perm[j] = tmp;
        }
    }
    p->in_task = 1;
    for (size_t i = 0; i < n; i++)
        task(arg, perm ? perm[i] : p->order == ORDER_REVERSE ? n - 1 - i : i);
    p->in_task = 0;
    free(perm);
}

static void serial_init(serial_pool *p, size_t threads, int order, uint64_t seed)
{
    memset(p, 0, sizeof *p);
    p->threads = threads;
    p->order = order;
    nkt_seed(&p->rng, seed);
    p->iface = (nk_threadpool){p, serial_threads, serial_for};
}

#ifndef NKT_EMULATED
/* T worker threads take task indices from a shared counter (each index
 * exactly once), starting together once all of them have woken up; the
 * caller waits until every worker is done with the call. */
#  define MAX_WORKERS 8
typedef struct thread_pool {
    pool_log log;
    nk_threadpool iface;
    pthread_t th[MAX_WORKERS];
    size_t nth;
    pthread_mutex_t mu;
    pthread_cond_t wake, start, done;
    unsigned long gen; /* one per parallel_for */
    int stop;
    void (*task)(void *, size_t);
    void *arg;
    size_t n, next, ran, arrived, finished;
} thread_pool;

static _Thread_local int tls_in_task;

static size_t thread_threads(void *ctx) { return ((thread_pool *)ctx)->nth; }

static void *worker(void *arg)
{
    thread_pool *p = arg;
    unsigned long seen = 0;
    pthread_mutex_lock(&p->mu);
    for (;;) {
        while (!p->stop && p->gen == seen)
            pthread_cond_wait(&p->wake, &p->mu);
        if (p->stop)
            break;
        seen = p->gen;
        if (++p->arrived == p->nth)
            pthread_cond_broadcast(&p->start);
        while (p->arrived < p->nth)
            pthread_cond_wait(&p->start, &p->mu);
        while (p->next < p->n) {
            size_t i = p->next++;
            pthread_mutex_unlock(&p->mu);
            tls_in_task = 1;
            p->task(p->arg, i);
            tls_in_task = 0;
            pthread_mutex_lock(&p->mu);
            p->ran++;
        }
        if (++p->finished == p->nth)
            pthread_cond_signal(&p->done);
    }
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

static void thread_for(void *ctx, void (*task)(void *, size_t), void *arg, size_t n)
{
    thread_pool *p = ctx;
    pthread_mutex_lock(&p->mu);
    log_call(&p->log, n, tls_in_task);
    if (tls_in_task) {
        /* from inside a task: the workers are busy, run inline (reported) */
        pthread_mutex_unlock(&p->mu);
        for (size_t i = 0; i < n; i++)
            task(arg, i);
        return;
    }
    p->task = task;
    p->arg = arg;
    p->n = n;
    p->next = p->ran = p->arrived = p->finished = 0;
    p->gen++;
    pthread_cond_broadcast(&p->wake);
    while (p->finished < p->nth)
        pthread_cond_wait(&p->done, &p->mu);
    p->log.miscount |= p->ran != n;
    pthread_mutex_unlock(&p->mu);
}

static void thread_pool_start(thread_pool *p, size_t nth)
{
    memset(p, 0, sizeof *p);
    p->nth = nth;
    p->iface = (nk_threadpool){p, thread_threads, thread_for};
    assert_int_equal(pthread_mutex_init(&p->mu, NULL), 0);
    assert_int_equal(pthread_cond_init(&p->wake, NULL), 0);
    assert_int_equal(pthread_cond_init(&p->start, NULL), 0);
    assert_int_equal(pthread_cond_init(&p->done, NULL), 0);
    for (size_t i = 0; i < nth; i++)
        assert_int_equal(pthread_create(&p->th[i], NULL, worker, p), 0);
}

static void thread_pool_stop(thread_pool *p)
{
    pthread_mutex_lock(&p->mu);
    p->stop = 1;
    pthread_cond_broadcast(&p->wake);
    pthread_mutex_unlock(&p->mu);
    for (size_t i = 0; i < p->nth; i++)
        assert_int_equal(pthread_join(p->th[i], NULL), 0);
    pthread_cond_destroy(&p->wake);
    pthread_cond_destroy(&p->start);
    pthread_cond_destroy(&p->done);
    pthread_mutex_destroy(&p->mu);
}
#endif

/* A pool under test: its interface, its log, its name in messages. */
typedef struct pool_ref {
    const nk_threadpool *iface;
    pool_log *log;
    char name[48];
} pool_ref;

typedef struct pool_set {
    pool_ref p[16];
    size_t n;
} pool_set;

static void pool_set_add(pool_set *s, const nk_threadpool *iface, pool_log *log, const char *kind,
                         size_t threads)
{
    pool_ref *r = &s->p[s->n++];
    r->iface = iface;
    r->log = log;
    snprintf(r->name, sizeof r->name, "%s pool, %zu threads", kind, threads);
}

/* ------------------------------------------------------------ case tables */

#define CF_ 1
#define CL_ 2
#define BOTH_ 3
#define DET 1 /* determinism, equality with the entry points without _ex, pool use */
#define STR 2 /* strided views */

typedef struct shape {
    int64_t n, c, s;
    int layouts; /* CF_, CL_ or BOTH_ */
    int sets;    /* DET and / or STR */
    int64_t groups;
    int act;
    float alpha;
} shape;

typedef struct family {
    const int *ops;
    size_t nops;
    const shape *shapes;
    size_t nshapes;
} family;

#define FAMILY(ops, shapes) {ops, COUNT(ops), shapes, COUNT(shapes)}

static const int bn_ops[] = {BN_TRAIN, BN_TRAIN_CUM, BN_INFER, BN_STATS, BN_APPLY};
static const int in_ops[] = {IN_RUN, IN_PLAIN, IN_EVAL};
static const int gn_ops[] = {GN};
static const int ln_ops[] = {LN, RMS};

/* DET: below the inline threshold (x + y under 32768 floats), above it, and
 * groups long enough to be cut into pieces (BatchNorm N * spatial,
 * InstanceNorm spatial, GroupNorm C / G * spatial and LayerNorm c above
 * 131072). STR: short and long rows, split groups, (N, C) inputs. */
static const shape bn_shapes[] = {
    {2, 3, 50, BOTH_, DET, 0, NK_ACT_NONE, 0},
    {3, 5, 37, BOTH_, STR, 0, NK_ACT_NONE, 0},
    {8, 16, 1, BOTH_, DET, 0, NK_ACT_RELU, 0},
    {4, 64, 3136, BOTH_, DET, 0, NK_ACT_SILU, 0},
    {4, 16, 3000, BOTH_, STR, 0, NK_ACT_SILU, 0},
    {2048, 256, 1, CF_, DET, 0, NK_ACT_NONE, 0},
    {64, 512, 1, BOTH_, DET, 0, NK_ACT_NONE, 0},
    {256, 8, 1, BOTH_, STR, 0, NK_ACT_NONE, 0},
    {32, 128, 9, BOTH_, DET, 0, NK_ACT_LEAKY_RELU, 0.2f},
    {64, 32, 9, BOTH_, STR, 0, NK_ACT_LEAKY_RELU, 0.2f},
    {8, 3, 5000, BOTH_, DET | STR, 0, NK_ACT_NONE, 0},
    {1, 1024, 49, BOTH_, DET, 0, NK_ACT_NONE, 0},
    {2, 2, 70000, BOTH_, DET | STR, 0, NK_ACT_NONE, 0},
};
static const shape in_shapes[] = {
    {2, 3, 40, BOTH_, DET | STR, 0, NK_ACT_NONE, 0},
    {2, 32, 56 * 56, BOTH_, DET, 0, NK_ACT_LEAKY_RELU, 0.1f},
    {2, 8, 56 * 56, BOTH_, STR, 0, NK_ACT_SILU, 0},
    {1, 4, 300000, BOTH_, DET, 0, NK_ACT_NONE, 0},
    {1, 2, 140000, CF_, STR, 0, NK_ACT_NONE, 0},
    {2, 4096, 16, BOTH_, DET, 0, NK_ACT_NONE, 0},
    {2, 64, 3000, BOTH_, DET | STR, 0, NK_ACT_GELU_ERF, 0},
};
static const shape gn_shapes[] = {
    {2, 12, 50, BOTH_, DET | STR, 3, NK_ACT_NONE, 0},
    {2, 320, 4096, CF_, DET, 32, NK_ACT_SILU, 0},
    {1, 64, 70000, CF_, DET, 1, NK_ACT_NONE, 0},
    {1, 16, 20000, CL_, DET, 1, NK_ACT_NONE, 0},
    {1, 2, 70000, BOTH_, STR, 1, NK_ACT_NONE, 0},
    {2, 320, 1024, BOTH_, DET, 32, NK_ACT_GELU_ERF, 0},
    {2, 32, 1024, BOTH_, STR, 8, NK_ACT_RELU, 0},
};
static const shape ln_shapes[] = {
    {4, 16, 1, CL_, DET, 0, NK_ACT_NONE, 0},
    {5, 33, 1, CL_, STR, 0, NK_ACT_NONE, 0},
    {2048, 768, 1, CL_, DET, 0, NK_ACT_RELU, 0},
    {64, 768, 1, CL_, STR, 0, NK_ACT_NONE, 0},
    {4, 200000, 1, CL_, DET, 0, NK_ACT_NONE, 0},
    {2, 140000, 1, CL_, STR, 0, NK_ACT_NONE, 0},
    {3000, 16, 1, CL_, DET, 0, NK_ACT_NONE, 0},
    {2, 96, 300, CL_, DET, 0, NK_ACT_GELU_TANH, 0},
    {3, 100, 7, CL_, STR, 0, NK_ACT_GELU_TANH, 0},
    /* channels-first (ConvNeXt's LayerNorm2d): tiles of positions */
    {2, 96, 3136, CF_, DET | STR, 0, NK_ACT_GELU_ERF, 0},
    {3, 17, 300, CF_, DET | STR, 0, NK_ACT_NONE, 0},
    {1, 768, 50, CF_, DET | STR, 0, NK_ACT_SILU, 0},
    {4, 3, 1, CF_, STR, 0, NK_ACT_NONE, 0},
};
static const family families[] = {FAMILY(bn_ops, bn_shapes), FAMILY(in_ops, in_shapes),
                                  FAMILY(gn_ops, gn_shapes), FAMILY(ln_ops, ln_shapes)};

typedef void (*case_fn)(const tcase *t, const float *x, const inputs *in, void *arg);

/* Every (shape, layout, operator) of the set: x uniform in [2, 4) (a
 * non-zero mean, so the merge order shows in the last bits). */
static void for_each_case(int set, uint64_t seed, case_fn fn, void *arg)
{
    for (size_t fi = 0; fi < COUNT(families); fi++) {
        const family *f = &families[fi];
        for (size_t si = 0; si < f->nshapes; si++) {
            const shape *sh = &f->shapes[si];
            if (!(sh->sets & set))
                continue;
            const size_t total = (size_t)(sh->n * sh->c * sh->s), C = (size_t)sh->c;
            nkt_rng r;
            nkt_seed(&r, seed + 100 * fi + si);
            float *x = falloc(total), *w = falloc(C), *b = falloc(C);
            for (size_t i = 0; i < total; i++)
                x[i] = (float)(2.0 + 2.0 * nkt_uniform(&r));
            for (size_t c = 0; c < C; c++) {
                w[c] = (float)(0.5 + nkt_uniform(&r));
                b[c] = (float)(nkt_uniform(&r) - 0.5);
            }
            nk_moments *mom = malloc(C * sizeof *mom);
            assert_non_null(mom);
            for (int layout = 0; layout < 2; layout++) {
                if (!(sh->layouts & (1 << layout)))
                    continue;
                for (size_t oi = 0; oi < f->nops; oi++) {
                    const tcase t = {f->ops[oi], sh->n, sh->c, sh->s, layout, sh->groups,
                                     sh->act, sh->alpha};
                    if (t.op == BN_APPLY) {
                        /* this shard merged with another one's moments */
                        const nk_shape s = {t.n, t.c, t.s, (nk_layout)layout};
                        const nk_moments other = {100.0, 2.5, 80.0};
                        assert_int_equal(nk_batch_norm_stats(x, &s, mom), NK_OK);
                        for (size_t c = 0; c < C; c++)
                            nk_moments_merge(&mom[c], &other);
                    }
                    const inputs in = {w, b, mom};
                    fn(&t, x, &in, arg);
                }
            }
            free(mom);
            free(x);
            free(w);
            free(b);
        }
    }
}


/* ------------------------------------------------------------ 1. determinism */

static void determinism_case(const tcase *t, const float *x, const inputs *in, void *arg)
{
    const pool_set *ps = arg;
    const nk_tensor_desc d = desc_of(t);
    outs ref, got;
    outs_alloc(&ref, t, numel(t));
    outs_alloc(&got, t, numel(t));
    outs_reset(&ref);
    run_ok(t, API_EX, NULL, &d, x, ref.y, in, &ref, "ctx == NULL");
    for (size_t i = 0; i < ps->n; i++) {
        nk_context ctx = NK_CONTEXT_INIT;
        ctx.pool = ps->p[i].iface;
        outs_reset(&got);
        run_ok(t, API_EX, &ctx, &d, x, got.y, in, &got, ps->p[i].name);
        outs_compare(assert_bits, &got, &ref, 1, t, ps->p[i].name);
        assert_false(ps->p[i].log->nested);
        assert_false(ps->p[i].log->miscount);
    }
    outs_free(&ref);
    outs_free(&got);
}

static void determinism_serial_pools(void **state)
{
    (void)state;
#ifdef NKT_EMULATED
    static const size_t threads[] = {1, 2, 64};
#else
    static const size_t threads[] = {1, 2, 3, 4, 7, 16, 64};
#endif
    enum { NT = COUNT(threads) };
    serial_pool sp[NT + 3];
    pool_set ps = {.n = 0};
    for (size_t i = 0; i < NT; i++) {
        serial_init(&sp[i], threads[i], ORDER_INDEX, 0);
        pool_set_add(&ps, &sp[i].iface, &sp[i].log, "index-order", threads[i]);
    }
    serial_init(&sp[NT], 4, ORDER_REVERSE, 0);
    pool_set_add(&ps, &sp[NT].iface, &sp[NT].log, "reverse-order", 4);
    serial_init(&sp[NT + 1], 8, ORDER_RANDOM, 71);
    pool_set_add(&ps, &sp[NT + 1].iface, &sp[NT + 1].log, "random-order", 8);
    serial_init(&sp[NT + 2], 64, ORDER_RANDOM, 72);
    pool_set_add(&ps, &sp[NT + 2].iface, &sp[NT + 2].log, "random-order", 64);
    for_each_case(DET, 1000, determinism_case, &ps);
    /* the pools did run tasks (the large shapes) */
    assert_true(sp[NT].log.calls > 0 && sp[NT + 1].log.calls > 0);
}

static void determinism_thread_pools(void **state)
{
    (void)state;
#ifdef NKT_EMULATED
    skip();
#else
    thread_pool tp[3];
    pool_set ps = {.n = 0};
    for (size_t i = 0; i < 3; i++) {
        thread_pool_start(&tp[i], i + 2);
        pool_set_add(&ps, &tp[i].iface, &tp[i].log, "pthread", i + 2);
    }
    for_each_case(DET, 1000, determinism_case, &ps);
    for (size_t i = 0; i < 3; i++) {
        assert_true(tp[i].log.calls > 0);
        thread_pool_stop(&tp[i]);
    }
#endif
}

/* ------------------------------------------------------------ 2. strides */

/* A strided view of t: element (n, m, i) (m the middle extent, i the
 * innermost) at n * s0 + m * s1 + i, in a buffer of size floats. */
typedef struct view {
    int64_t s0, s1;
    size_t n, mid, inner, size;
} view;

static view view_of(const tcase *t, int64_t pad_row, int64_t pad_sample)
{
    view v = {0, 0, (size_t)t->n, mid_ext(t), inner_ext(t), 0};
    v.s1 = (int64_t)v.inner + pad_row;
    v.s0 = (int64_t)v.mid * v.s1 + pad_sample;
    v.size = v.n * (size_t)v.s0 + 3; /* padding after the last sample too */
    return v;
}

static size_t view_row(const view *v, size_t r)
{
    return (r / v->mid) * (size_t)v->s0 + (r % v->mid) * (size_t)v->s1;
}

/* dense -> view (padding = pad bits) and back */
static void scatter(const view *v, const float *dense, float *buf, uint32_t pad)
{
    fill_bits(buf, v->size, pad);
    for (size_t r = 0; r < v->n * v->mid; r++)
        memcpy(buf + view_row(v, r), dense + r * v->inner, v->inner * sizeof(float));
}

static void gather(const view *v, const float *buf, float *dense)
{
    for (size_t r = 0; r < v->n * v->mid; r++)
        memcpy(dense + r * v->inner, buf + view_row(v, r), v->inner * sizeof(float));
}

/* Every element of buf outside the view's rows still holds pad. */
static void assert_padding(const view *v, const float *buf, uint32_t pad, const tcase *t,
                           const char *who)
{
    size_t end = 0;
    for (size_t r = 0; r <= v->n * v->mid; r++) {
        size_t start = r < v->n * v->mid ? view_row(v, r) : v->size;
        for (size_t i = end; i < start; i++)
            if (memcmp(&buf[i], &pad, sizeof pad)) {
                print_error("%s %s: padding element %zu (after row %zu) was written: %.9g\n",
                            label(t), who, i, r, (double)buf[i]);
                fail();
            }
        end = start + v->inner;
    }
}

/* Extra elements: x between rows, x between samples, y between rows, y
 * between samples. */
typedef struct pads {
    int64_t x_row, x_sample, y_row, y_sample;
} pads;
static const pads stride_pads[] = {
    {3, 5, 1, 11}, /* both padded, differently */
    {0, 7, 0, 2},  /* between samples only (rows back to back) */
    {2, 0, 0, 0},  /* x padded, y dense (explicit strides) */
    {0, 0, 5, 3},  /* x dense, y padded */
};

static void set_strides(nk_tensor_desc *d, const view *vx, const view *vy)
{
    d->x_stride[0] = vx->s0;
    d->x_stride[1] = vx->s1;
    d->y_stride[0] = vy->s0;
    d->y_stride[1] = vy->s1;
}

static void strided_case(const tcase *t, const float *x, const inputs *in, void *arg)
{
    serial_pool *pool = arg;
    nk_context pctx = NK_CONTEXT_INIT;
    pctx.pool = &pool->iface;
    const size_t total = numel(t);
    const nk_tensor_desc dense = desc_of(t);
    outs ref;
    outs_alloc(&ref, t, total);
    outs_reset(&ref);
    run_ok(t, API_EX, NULL, &dense, x, ref.y, in, &ref, "dense");
    float *yd = falloc(total);
    for (size_t k = 0; k < COUNT(stride_pads); k++) {
        const pads *pd = &stride_pads[k];
        const view vx = view_of(t, pd->x_row, pd->x_sample);
        const view vy = view_of(t, pd->y_row, pd->y_sample);
        nk_tensor_desc d = dense;
        set_strides(&d, &vx, &vy);
        char who[96];
        snprintf(who, sizeof who, "x strides {%lld, %lld}, y strides {%lld, %lld}",
                 (long long)vx.s0, (long long)vx.s1, (long long)vy.s0, (long long)vy.s1);
        float *xb = falloc(vx.size), *xkeep = falloc(vx.size);
        scatter(&vx, x, xb, X_PAD);
        memcpy(xkeep, xb, vx.size * sizeof(float));
        outs sv, pv;
        outs_alloc(&sv, t, vy.size);
        outs_alloc(&pv, t, vy.size);

        /* strided vs dense: rounding-level agreement, padding untouched */
        outs_reset(&sv);
        run_ok(t, API_EX, NULL, &d, xb, sv.y, in, &sv, who);
        assert_bits(xb, xkeep, vx.size, sizeof(float), "x (input)", t, who);
        outs_compare(assert_near, &sv, &ref, 0, t, who);
        if (has_y(t)) {
            assert_padding(&vy, sv.y, Y_PAD, t, who);
            gather(&vy, sv.y, yd);
            assert_near(yd, ref.y, total, sizeof(float), "y", t, who);
        }

        /* through a pool: bitwise the strided call without one */
        outs_reset(&pv);
        run_ok(t, API_EX, &pctx, &d, xb, pv.y, in, &pv, who);
        outs_compare(assert_bits, &pv, &sv, 1, t, who);

        if (has_y(t)) {
            /* in place (y strides = x strides) vs out of place, bitwise */
            d.y_stride[0] = d.x_stride[0];
            d.y_stride[1] = d.x_stride[1];
            outs_reset(&sv);
            float *yo = falloc(vx.size);
            fill_bits(yo, vx.size, Y_PAD);
            run_ok(t, API_EX, NULL, &d, xb, yo, in, &sv, who);
            outs_reset(&pv);
            run_ok(t, API_EX, &pctx, &d, xb, xb, in, &pv, "in place");
            outs_compare(assert_bits, &pv, &sv, 0, t, "in place");
            assert_padding(&vx, xb, X_PAD, t, "in place");
            float *yi = falloc(total);
            gather(&vx, yo, yd);
            gather(&vx, xb, yi);
            assert_bits(yi, yd, total, sizeof(float), "y in place", t, who);
            free(yi);
            free(yo);
        }
        outs_free(&sv);
        outs_free(&pv);
        free(xb);
        free(xkeep);
    }
    free(yd);
    outs_free(&ref);
}

static void strided_views(void **state)
{
    (void)state;
    serial_pool pool;
    serial_init(&pool, 4, ORDER_RANDOM, 81);
    for_each_case(STR, 2000, strided_case, &pool);
    assert_false(pool.log.nested);
}

/* ------------------------------------------------------------ 3. validation */

enum {
    V_CTX_SIZE,
    V_CTX_FLAGS,
    V_CTX_RESERVED,
    V_CTX_NO_FOR,
    V_CTX_TAIL,
    V_CTX_TAIL_ZERO,
    V_DESC_NULL,
    V_DESC_SIZE,
    V_DESC_TAIL,
    V_DESC_TAIL_ZERO,
    V_DTYPE,
    V_LAYOUT,
    V_DESC_FLAGS,
    V_DESC_RESERVED,
    V_X_NEG,
    V_Y_NEG,
    V_X_INNER,
    V_Y_MID,
    V_X_SAMPLE,
    V_X_HUGE,
    V_Y_HUGE,
    V_X_OVERFLOW,
    V_X_WRAP,
    V_Y_WRAP,
    V_INPLACE,
    V_ACT,
    V_ALPHA_NAN,
    V_ALPHA_NAN_NO_ACT,
};

#define NA (-1)
typedef struct vcase {
    int kind;
    int want, want_stats; /* nk_status; NA: not applicable to nk_batch_norm_stats_ex */
    const char *arg;      /* the argument the message names (NULL when accepted) */
    const char *name;
} vcase;

static const vcase vcases[] = {
    {V_CTX_SIZE, NK_ERR_BAD_PARAM, NK_ERR_BAD_PARAM, "ctx->struct_size",
     "ctx->struct_size too small"},
    {V_CTX_FLAGS, NK_ERR_BAD_PARAM, NK_ERR_BAD_PARAM, "ctx->flags", "ctx->flags = 4"},
    {V_CTX_RESERVED, NK_ERR_BAD_PARAM, NK_ERR_BAD_PARAM, "ctx->reserved[5]",
     "ctx->reserved[5] = 9"},
    {V_CTX_NO_FOR, NK_ERR_NULL_POINTER, NK_ERR_NULL_POINTER, "ctx->pool->parallel_for",
     "pool without parallel_for"},
    {V_CTX_TAIL, NK_ERR_UNSUPPORTED, NK_ERR_UNSUPPORTED, "ctx sets fields past",
     "ctx, non-zero trailing field"},
    {V_CTX_TAIL_ZERO, NK_OK, NK_OK, NULL, "ctx, zero trailing field"},
    {V_DESC_NULL, NK_ERR_NULL_POINTER, NK_ERR_NULL_POINTER, "desc is NULL", "desc NULL"},
    {V_DESC_SIZE, NK_ERR_BAD_PARAM, NK_ERR_BAD_PARAM, "desc->struct_size",
     "desc->struct_size too small"},
    {V_DESC_TAIL, NK_ERR_UNSUPPORTED, NK_ERR_UNSUPPORTED, "desc sets fields past",
     "desc, non-zero trailing field"},
    {V_DESC_TAIL_ZERO, NK_OK, NK_OK, NULL, "desc, zero trailing field"},
    {V_DTYPE, NK_ERR_UNSUPPORTED, NK_ERR_UNSUPPORTED, "desc->dtype", "got 3"},
    {V_LAYOUT, NK_ERR_BAD_PARAM, NK_ERR_BAD_PARAM, "desc->layout", "layout 2"},
    {V_DESC_FLAGS, NK_ERR_BAD_PARAM, NK_ERR_BAD_PARAM, "desc->flags", "desc->flags = 2"},
    {V_DESC_RESERVED, NK_ERR_BAD_PARAM, NK_ERR_BAD_PARAM, "desc->reserved[2]",
     "desc->reserved[2] = 1"},
    {V_X_NEG, NK_ERR_BAD_SHAPE, NK_ERR_BAD_SHAPE, "desc->x_stride[0]", "x_stride[0] = -3"},
    /* nk_batch_norm_stats_ex ignores desc's y fields */
    {V_Y_NEG, NK_ERR_BAD_SHAPE, NK_OK, "desc->y_stride[1]", "y_stride[1] = -1"},
    {V_X_INNER, NK_ERR_BAD_SHAPE, NK_ERR_BAD_SHAPE, "desc->x_stride[1]",
     "x_stride[1] < innermost extent"},
    {V_Y_MID, NK_ERR_BAD_SHAPE, NK_OK, "desc->y_stride[0]",
     "y_stride[0] = dense - 1"},
    {V_X_SAMPLE, NK_ERR_BAD_SHAPE, NK_ERR_BAD_SHAPE, "desc->x_stride[0]",
     "x_stride[0] < (middle extent - 1) * x_stride[1] + innermost extent"},
    {V_X_HUGE, NK_ERR_BAD_SHAPE, NK_ERR_BAD_SHAPE, "desc->x_stride",
     "x_stride[0] = PTRDIFF_MAX / 4"},
    {V_Y_HUGE, NK_ERR_BAD_SHAPE, NK_OK, "desc->y_stride", "y_stride[1] past PTRDIFF_MAX / 4"},
    {V_X_OVERFLOW, NK_ERR_BAD_SHAPE, NK_ERR_BAD_SHAPE, "desc->x_stride[1]",
     "x_stride[1] = INT64_MAX"},
    /* 2^62 + a valid stride: the low 32 bits alone would pass */
    {V_X_WRAP, NK_ERR_BAD_SHAPE, NK_ERR_BAD_SHAPE, "desc->x_stride",
     "x_stride[1] = 2^62 + innermost extent"},
    {V_Y_WRAP, NK_ERR_BAD_SHAPE, NK_OK, "desc->y_stride", "y_stride[0] = 2^62 + dense stride"},
    {V_INPLACE, NK_ERR_BAD_PARAM, NA, "in place", "in place, other strides"},
    {V_ACT, NK_ERR_BAD_PARAM, NA, "desc->activation", "activation 99"},
    {V_ALPHA_NAN, NK_ERR_BAD_PARAM, NA, "desc->alpha", "LeakyReLU alpha NaN"},
    {V_ALPHA_NAN_NO_ACT, NK_OK, NK_OK, NULL, "alpha NaN, no activation"},
};

static size_t four_threads(void *ctx)
{
    (void)ctx;
    return 4;
}

/* A context and descriptor with one fault; room for a trailing field. */
typedef struct bad_call {
    union {
        nk_context c;
        unsigned char b[sizeof(nk_context) + 16];
    } ctx;
    union {
        nk_tensor_desc d;
        unsigned char b[sizeof(nk_tensor_desc) + 16];
    } desc;
    nk_threadpool pool;
    const nk_context *pctx;
    const nk_tensor_desc *pdesc;
    float *y;
    char value[96]; /* the value the message must show ("" when none) */
} bad_call;

static void make_bad(bad_call *bc, int kind, const tcase *t, float *x, float *y)
{
    const nk_context c0 = NK_CONTEXT_INIT;
    memset(bc, 0, sizeof *bc);
    bc->ctx.c = c0;
    bc->desc.d = desc_of(t);
    bc->pctx = &bc->ctx.c;
    bc->pdesc = &bc->desc.d;
    bc->y = y;
    nk_context *c = &bc->ctx.c;
    nk_tensor_desc *d = &bc->desc.d;
    const int64_t inner = (int64_t)inner_ext(t), mid = (int64_t)mid_ext(t);
    const int64_t far = (int64_t)(PTRDIFF_MAX / sizeof(float));
    char *v = bc->value;
    const size_t vn = sizeof bc->value;
    switch (kind) {
    case V_CTX_SIZE:
        /* below the first version's size (fields up to reserved[]) */
        c->struct_size = (uint32_t)(offsetof(nk_context, reserved) + sizeof c->reserved - 8);
        snprintf(v, vn, "got %u", (unsigned)c->struct_size);
        break;
    case V_CTX_FLAGS:
        c->flags = 4;
        snprintf(v, vn, "0x4");
        break;
    case V_CTX_RESERVED:
        c->reserved[5] = 9;
        break;
    case V_CTX_NO_FOR:
        bc->pool = (nk_threadpool){NULL, four_threads, NULL};
        c->pool = &bc->pool;
        break;
    case V_CTX_TAIL:
        bc->ctx.b[sizeof *c + 3] = 1;
        snprintf(v, vn, "%zu bytes", sizeof *c);
        /* fall through */
    case V_CTX_TAIL_ZERO:
        c->struct_size = sizeof *c + 16;
        break;
    case V_DESC_NULL:
        bc->pdesc = NULL;
        break;
    case V_DESC_SIZE:
        /* the first version of the struct ended with reserved[] */
        d->struct_size = (uint32_t)(offsetof(nk_tensor_desc, reserved) + sizeof d->reserved - 4);
        snprintf(v, vn, "got %u", (unsigned)d->struct_size);
        break;
    case V_DESC_TAIL:
        bc->desc.b[sizeof *d + 7] = 0x80;
        snprintf(v, vn, "%zu bytes", sizeof *d);
        /* fall through */
    case V_DESC_TAIL_ZERO:
        d->struct_size = sizeof *d + 16;
        break;
    case V_DTYPE:
        d->dtype = 3; /* not an NK_DTYPE_* code */
        snprintf(v, vn, "got 3");
        break;
    case V_LAYOUT:
        d->layout = 2;
        snprintf(v, vn, "got 2");
        break;
    case V_DESC_FLAGS:
        d->flags = 2;
        snprintf(v, vn, "0x2");
        break;
    case V_DESC_RESERVED:
        d->reserved[2] = 1;
        break;
    case V_X_NEG:
        d->x_stride[0] = -3;
        snprintf(v, vn, "= -3");
        break;
    case V_Y_NEG:
        d->y_stride[1] = -1;
        snprintf(v, vn, "= -1");
        break;
    case V_X_INNER:
        d->x_stride[1] = inner - 1;
        snprintf(v, vn, "= %lld", (long long)(inner - 1));
        break;
    case V_Y_MID:
        d->y_stride[0] = mid * inner - 1;
        snprintf(v, vn, "= %lld", (long long)(mid * inner - 1));
        break;
    case V_X_SAMPLE:
        /* one float short of a sample's span */
        d->x_stride[1] = inner + 2;
        d->x_stride[0] = (mid - 1) * (inner + 2) + inner - 1;
        snprintf(v, vn, "= %lld", (long long)d->x_stride[0]);
        break;
    case V_X_HUGE:
        /* the second sample starts at the last addressable float */
        d->x_stride[0] = far;
        snprintf(v, vn, "{%lld, 0}", (long long)far);
        break;
    case V_Y_HUGE:
        d->y_stride[1] = far / (mid - 1) + 1;
        snprintf(v, vn, "{0, %lld}", (long long)d->y_stride[1]);
        break;
    case V_X_OVERFLOW:
        d->x_stride[1] = INT64_MAX;
        snprintf(v, vn, "%lld", (long long)INT64_MAX);
        break;
    case V_X_WRAP:
        d->x_stride[1] = ((int64_t)1 << 62) + inner;
        snprintf(v, vn, "%lld", (long long)d->x_stride[1]);
        break;
    case V_Y_WRAP:
        d->y_stride[0] = ((int64_t)1 << 62) + mid * inner;
        snprintf(v, vn, "%lld", (long long)d->y_stride[0]);
        break;
    case V_INPLACE:
        d->x_stride[1] = inner + 1;
        bc->y = x;
        break;
    case V_ACT:
        d->activation = 99;
        snprintf(v, vn, "got 99");
        break;
    case V_ALPHA_NAN:
        d->activation = NK_ACT_LEAKY_RELU;
        d->alpha = NAN;
        snprintf(v, vn, "nan");
        break;
    case V_ALPHA_NAN_NO_ACT:
        d->alpha = NAN;
        break;
    }
}

/* 1 when nk_last_error() holds part (or part is empty) */
static int has_message(const char *part, const tcase *t, const char *what)
{
    if (!part || !part[0] || strstr(nk_last_error(), part))
        return 1;
    print_error("%s %s: message \"%s\" lacks \"%s\"\n", label(t), what, nk_last_error(), part);
    return 0;
}

/* Every fault on every _ex entry point (a (2, 4, 6) channels-last tensor);
 * a wrong status or message is counted, and the test fails after all ran. */
static void validation(void **state)
{
    (void)state;
    static const int ops[] = {BN_TRAIN, BN_INFER, BN_STATS, BN_APPLY, IN_RUN, GN, LN, RMS};
    nkt_rng r;
    nkt_seed(&r, 3000);
    enum { N = 2, C = 4, S = 6, TOTAL = N * C * S, XFLOATS = 2 * TOTAL };
    float x[XFLOATS], xkeep[XFLOATS], w[C], b[C];
    nkt_fill(&r, x, XFLOATS, 3.0, 1.0);
    memcpy(xkeep, x, sizeof x);
    for (int c = 0; c < C; c++) {
        w[c] = 1.0f + 0.25f * (float)c;
        b[c] = 0.5f - 0.25f * (float)c;
    }
    nk_moments mom[C];
    for (int c = 0; c < C; c++)
        mom[c] = (nk_moments){200.0, 3.0 + 0.1 * c, 150.0 + c};
    const inputs in = {w, b, mom};
    size_t wrong = 0;
    for (size_t oi = 0; oi < COUNT(ops); oi++) {
        const tcase t = {ops[oi], N, C, S, NK_CHANNELS_LAST, 2, NK_ACT_NONE, 0.0f};
        const nk_tensor_desc dense = desc_of(&t);
        outs ref, got, fresh;
        outs_alloc(&ref, &t, TOTAL);
        outs_alloc(&got, &t, TOTAL);
        outs_alloc(&fresh, &t, TOTAL);
        outs_reset(&ref);
        outs_reset(&fresh);
        run_ok(&t, API_EX, NULL, &dense, x, ref.y, &in, &ref, "baseline");
        for (size_t k = 0; k < COUNT(vcases); k++) {
            const vcase *vc = &vcases[k];
            const int want = t.op == BN_STATS ? vc->want_stats : vc->want;
            if (want == NA)
                continue;
            bad_call bc;
            outs_reset(&got);
            make_bad(&bc, vc->kind, &t, x, got.y);
            nk_status st = run_op(&t, API_EX, bc.pctx, bc.pdesc, x, bc.y, &in, &got);
            const char *what = vc->name;
            if ((int)st != want) {
                print_error("%s %s: status %d, expected %d; message: %s\n", label(&t), what, st,
                            want, nk_last_error());
                wrong++;
                memcpy(x, xkeep, sizeof x);
                continue;
            }
            assert_bits(x, xkeep, XFLOATS, sizeof(float), "x", &t, what);
            if (want == NK_OK) {
                /* accepted: the same results as the plain call */
                assert_string_equal(nk_last_error(), "");
                outs_compare(assert_bits, &got, &ref, 1, &t, what);
                continue;
            }
            wrong += !(has_message(ex_names[t.op], &t, what) & has_message(vc->arg, &t, what) &
                       has_message(bc.value, &t, what));
            outs_compare(assert_bits, &got, &fresh, 1, &t, what);
        }
        outs_free(&ref);
        outs_free(&got);
        outs_free(&fresh);
    }

    assert_int_equal(wrong, 0);
}

/* ------------------------------------------------------------ _ex == entry points without _ex */

static void old_api_case(const tcase *t, const float *x, const inputs *in, void *arg)
{
    (void)arg;
    /* no entry point without _ex takes channels-first LayerNorm / RMSNorm */
    if ((t->op == LN || t->op == RMS) && t->layout == NK_CHANNELS_FIRST)
        return;
    const size_t total = numel(t);
    nk_tensor_desc d = desc_of(t);
    outs ex, old;
    outs_alloc(&ex, t, total);
    outs_alloc(&old, t, total);
    outs_reset(&old);
    run_ok(t, API_OLD, NULL, NULL, x, old.y, in, &old, "without _ex");
    outs_reset(&ex);
    run_ok(t, API_EX, NULL, &d, x, ex.y, in, &ex, "_ex, strides 0");
    outs_compare(assert_bits, &ex, &old, 1, t, "_ex, strides 0");
    /* the dense strides spelled out */
    d.x_stride[1] = d.y_stride[1] = (int64_t)inner_ext(t);
    d.x_stride[0] = d.y_stride[0] = (int64_t)(mid_ext(t) * inner_ext(t));
    outs_reset(&ex);
    run_ok(t, API_EX, NULL, &d, x, ex.y, in, &ex, "_ex, dense strides");
    outs_compare(assert_bits, &ex, &old, 1, t, "_ex, dense strides");
    outs_free(&ex);
    outs_free(&old);
}

static void ex_equals_plain_entry_points(void **state)
{
    (void)state;
    for_each_case(DET, 4000, old_api_case, NULL);
}

/* ------------------------------------------------------------ 4. the pool is used */

static size_t no_threads(void *ctx)
{
    (void)ctx;
    return 0; /* as 1 */
}

/* x + y floats of a call (x alone for the statistics). */
static size_t moved_floats(const tcase *t) { return (has_y(t) ? 2 : 1) * numel(t); }

static void run_counted(const tcase *t, const float *x, const inputs *in, serial_pool *p)
{
    const nk_tensor_desc d = desc_of(t);
    nk_context ctx = NK_CONTEXT_INIT;
    ctx.pool = &p->iface;
    outs o;
    outs_alloc(&o, t, numel(t));
    outs_reset(&o);
    run_ok(t, API_EX, &ctx, &d, x, o.y, in, &o, "counting pool");
    outs_free(&o);
    assert_false(p->log.nested);
}

/* Well below the inline threshold: no call; a pool of one thread (num_threads
 * 1, 0 or NULL): never called; every call has work for two threads. */
static void pool_idle_case(const tcase *t, const float *x, const inputs *in, void *arg)
{
    (void)arg;
    serial_pool counting, one, zero, unknown;
    serial_init(&counting, 4, ORDER_INDEX, 0);
    serial_init(&one, 1, ORDER_INDEX, 0);
    serial_init(&zero, 1, ORDER_INDEX, 0);
    zero.iface.num_threads = no_threads;
    serial_init(&unknown, 1, ORDER_INDEX, 0);
    unknown.iface.num_threads = NULL;
    run_counted(t, x, in, &counting);
    if ((moved_floats(t) <= 16384 && counting.log.calls) ||
        (counting.log.calls && counting.log.min_n < 2)) {
        print_error("%s: %zu parallel_for calls (fewest tasks %zu) for %zu floats\n", label(t),
                    counting.log.calls, counting.log.min_n, moved_floats(t));
        fail();
    }
    serial_pool *const idle[] = {&one, &zero, &unknown};
    for (size_t i = 0; i < COUNT(idle); i++) {
        run_counted(t, x, in, idle[i]);
        assert_int_equal(idle[i]->log.calls, 0);
    }
}

static void pool_idle_for_small_shapes_and_one_thread(void **state)
{
    (void)state;
    for_each_case(DET, 5000, pool_idle_case, NULL);
}

/* At least four times the inline threshold (x + y >= 131072 floats): the
 * pool is called. (Between two and four times it, BatchNorm training whose
 * rows are too few to cut stays in one task: ops/batch_norm.c.) Counts the
 * cases that never reach it. */
static void pool_busy_case(const tcase *t, const float *x, const inputs *in, void *arg)
{
    size_t *missed = arg;
    if (moved_floats(t) < 131072)
        return;
    serial_pool counting;
    serial_init(&counting, 4, ORDER_INDEX, 0);
    run_counted(t, x, in, &counting);
    if (!counting.log.calls) {
        print_error("%s: %zu floats, no parallel_for call\n", label(t), moved_floats(t));
        (*missed)++;
    }
}

static void pool_called_for_large_shapes(void **state)
{
    (void)state;
    size_t missed = 0;
    for_each_case(DET, 6000, pool_busy_case, &missed);
    assert_int_equal(missed, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(determinism_serial_pools),
        cmocka_unit_test(determinism_thread_pools),
        cmocka_unit_test(strided_views),
        cmocka_unit_test(validation),
        cmocka_unit_test(ex_equals_plain_entry_points),
        cmocka_unit_test(pool_idle_for_small_shapes_and_one_thread),
        cmocka_unit_test(pool_called_for_large_shapes),
    };
    return cmocka_run_group_tests_name("exec", tests, NULL, NULL);
}
