/*
 * normkit-bench: every operator and layout on every ISA the dispatcher
 * offers at run time (forced with nk_set_isa; the others are skipped with
 * the dispatcher's reason), as a channels x spatial sweep and on real model
 * shapes, next to memcpy of the same bytes and, where built, oneDNN and
 * PyTorch ATen.
 *
 * Usage: normkit-bench [--models] [--sweep] [--quick] [--table] [--threads=T]
 *                      [--dtype=f32,bf16,f16] [--param-dtype=f32|x]
 *                      [--min-time=SECONDS] [--train-batch=N] [--max-mb=MB]
 *                      [Google Benchmark flags: --benchmark_filter=...,
 *                       --benchmark_out=FILE --benchmark_out_format=json ...]
 * Without --models / --sweep both run. --table sends the per-benchmark
 * lines to stderr and prints the headline table of the model shapes on
 * stdout.
 *
 * Element types: --dtype lists the types of x and y (default: f32, bf16 and
 * f16 for the model shapes, f32 for the sweep); weight and bias are fp32
 * (PyTorch's mixed default, desc.param_dtype = NK_DTYPE_F32) unless
 * --param-dtype=x puts them in x's type. Row names carry the type:
 * model/<shape>/<dtype>/<impl>, sweep/<op>/<layout>/<dtype>/<isa>/...,
 * <dtype> being f32, bf16, f16 (bf16_w16, f16_w16 with 16-bit parameters).
 * memcpy rows copy the tensor's bytes: elements x 2 for the 16-bit types.
 * Every model shape also has backward rows, model/<shape>.bwd/...: normkit's
 * *_backward_ex with dx, dweight and dbias wanted, from the forward's saved
 * statistics and the workspace nk_backward_workspace_size asks for; ATen's
 * native_*_backward (after threshold_backward /
 * leaky_relu_backward for a fused activation); memcpy of half the bytes the
 * backward moves (x and dy read, dx written), so memcpy_ratio is again the
 * fraction of the copy bandwidth; oneDNN's batch and layer normalization
 * backward (prop_kind::backward, from the statistics of a forward training
 * run made outside the timed loop) on the same dy, weight and bias as
 * normkit's row. Its dx is checked against normkit's once per row before it
 * is timed; a disagreement fails the row (FAILED in the table, exit status 1).
 * Residual add before LayerNorm / RMSNorm, model/<shape>.add/... and
 * model/<shape>.addsum/... on the transformer shapes of fused_models[]:
 * normkit's nk_layer_norm_fused_ex / nk_rms_norm_fused_ex with
 * y = norm(x + skip) (.add), or y = norm(x + skip + skip_bias) and that sum
 * written too (.addsum); ATen's at::add (+ add_ of the bias) then the
 * normalization; oneDNN's binary add (the bias a post-op) then layer
 * normalization; memcpy of half the bytes moved (x and skip read, y and for
 * .addsum the sum written). The libraries' y and sum are checked against
 * normkit's once per row, as a backward's dx is.
 *
 * Counters of every row
 *   bytes_per_second  input read once + output written once (memcpy traffic),
 *                     in the row's element type
 *   items_per_second  elements normalized
 *   memcpy_ratio      memcpy time of the same bytes / our time: the fraction
 *                     of the physical limit reached (memcpy measured in this
 *                     process, per size)
 *   vs_onednn, vs_aten  (model rows of normkit) their time / ours: > 1 = faster
 *
 * --threads=T (0: one per online CPU) runs normkit through the _ex entry
 * points on an nk_threadpool_create(T) pool, times wall-clock, and takes as
 * memcpy the faster of one thread and T threads copying slices on the same
 * pool (the T-thread ceiling). oneDNN and ATen rows run at T = 1 only.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ext.h"
#include "kernels/cvt.h"
#include "nkb.h"
#include "normkit.h"

#ifndef NKB_HAVE_ONEDNN
#define NKB_HAVE_ONEDNN 0
#endif
#ifndef NKB_HAVE_ATEN
#define NKB_HAVE_ATEN 0
#endif

/* ------------------------------------------------------------------------ */
/* Settings                                                                   */
/* ------------------------------------------------------------------------ */

static double g_min_time = 0;   /* 0: Google Benchmark's own (--benchmark_min_time) */
static double g_ref_time = 0.1; /* seconds spent timing a reference measured ad hoc */
static int64_t g_train_batch = 8;
static int64_t g_max_mb = 1024; /* cap on x + y of a sweep cell */

static int g_threads = 1;       /* --threads */
static nk_threadpool *g_pool;   /* g_threads > 1 */
static nk_context g_ctx = NK_CONTEXT_INIT;

/* Element types: bit d set = NK_DTYPE d runs (--dtype) */
#define DT_BIT(d) (1u << (d))
static unsigned g_model_dtypes = DT_BIT(NK_DTYPE_F32) | DT_BIT(NK_DTYPE_BF16) | DT_BIT(NK_DTYPE_F16);
static unsigned g_sweep_dtypes = DT_BIT(NK_DTYPE_F32);
static int g_param_x;           /* --param-dtype=x: weight and bias in x's type */
/* the order rows and tables follow */
static const uint32_t dtype_order[3] = {NK_DTYPE_F32, NK_DTYPE_BF16, NK_DTYPE_F16};

static const char *dtype_name(uint32_t dt)
{
    return dt == NK_DTYPE_BF16 ? "bf16" : dt == NK_DTYPE_F16 ? "f16" : "f32";
}

static size_t dtype_size(uint32_t dt) { return dt == NK_DTYPE_F32 ? sizeof(float) : sizeof(uint16_t); }

/* 16-bit bits of v, rounded to nearest even */
static uint16_t to_16(uint32_t dt, float v) { return dt == NK_DTYPE_BF16 ? nk_f32_to_bf16(v) : nk_f32_to_f16(v); }
static float from_16(uint32_t dt, uint16_t h) { return dt == NK_DTYPE_BF16 ? nk_bf16_to_f32(h) : nk_f16_to_f32(h); }

static double cpu_seconds(void)
{
    /* one thread: process CPU time, the clock Google Benchmark divides rates
     * by; several: wall-clock, as the benchmarks then use real time */
    struct timespec ts;
    clock_gettime(g_threads > 1 ? CLOCK_MONOTONIC : CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* ------------------------------------------------------------------------ */
/* Buffers: allocated once per shape, outside every timed loop               */
/* ------------------------------------------------------------------------ */

static uint64_t g_rng = 0x9e3779b97f4a7c15ull;

static float rnd(void)
{
    g_rng ^= g_rng >> 12;
    g_rng ^= g_rng << 25;
    g_rng ^= g_rng >> 27;
    uint64_t r = g_rng * 0x2545f4914f6cdd1dull;
    return (float)((double)(r >> 40) * (1.0 / 16777216.0)) * 4.0f - 1.5f; /* [-1.5, 2.5) */
}

static void *xalloc(size_t bytes)
{
    void *p = NULL;
    if (bytes == 0)
        bytes = 64;
    if (posix_memalign(&p, 64, (bytes + 63) & ~(size_t)63)) {
        fprintf(stderr, "normkit-bench: out of memory (%zu bytes)\n", bytes);
        exit(1);
    }
    return p;
}

/* One slot: consecutive rows of one shape and element type (every ISA, the
 * references) share the same random input. Every element type draws the
 * same values (the 16-bit ones rounded to nearest even). */
static struct {
    size_t elems;
    uint32_t dtype;
    void *x, *y;
} g_buf;

static void buffers(size_t elems, uint32_t dtype, void **x, void **y)
{
    if (g_buf.elems != elems || g_buf.dtype != dtype || !g_buf.x) {
        size_t bytes = elems * dtype_size(dtype);
        free(g_buf.x);
        free(g_buf.y);
        g_buf.x = xalloc(bytes);
        g_buf.y = xalloc(bytes);
        uint64_t saved = g_rng;
        g_rng = 0x9e3779b97f4a7c15ull ^ (uint64_t)elems;
        for (size_t i = 0; i < elems; i++) {
            float v = rnd();
            if (dtype == NK_DTYPE_F32)
                ((float *)g_buf.x)[i] = v;
            else
                ((uint16_t *)g_buf.x)[i] = to_16(dtype, v);
        }
        g_rng = saved;
        memset(g_buf.y, 0, bytes); /* fault the pages in */
        g_buf.elems = elems;
        g_buf.dtype = dtype;
    }
    *x = g_buf.x;
    *y = g_buf.y;
}

/* ------------------------------------------------------------------------ */
/* Reference times, cached per key for the whole run                          */
/* ------------------------------------------------------------------------ */

#define REF_MAX 512
static struct {
    char key[128];
    double sec; /* CPU seconds per iteration; < 0: not available */
    char why[256]; /* sec < 0: why not; else a note of the library's (ext.h), or "" */
    int failed;    /* sec < 0 because the library's result disagreed with normkit's */
} g_ref[REF_MAX];
static int g_nref;
static int g_failures; /* rows failed by a check of their results: the exit status */

static int ref_find(const char *key)
{
    for (int i = 0; i < g_nref; i++)
        if (!strcmp(g_ref[i].key, key))
            return i;
    return -1;
}

static void ref_store(const char *key, double sec, const char *why)
{
    int i = ref_find(key);
    if (i < 0) {
        if (g_nref == REF_MAX)
            return;
        i = g_nref++;
        snprintf(g_ref[i].key, sizeof g_ref[i].key, "%s", key);
    }
    g_ref[i].sec = sec;
    snprintf(g_ref[i].why, sizeof g_ref[i].why, "%s", why ? why : "");
    g_ref[i].failed = 0;
}

/* key's library produced a wrong result: no time, and the table says so */
static void ref_fail(const char *key, const char *why)
{
    ref_store(key, -1, why);
    int i = ref_find(key);
    if (i >= 0)
        g_ref[i].failed = 1;
}

typedef void (*run_fn)(void *ctx);

/* Median of 5 batches, each at least g_ref_time / 5 seconds of CPU time. */
static double time_it(run_fn fn, void *ctx)
{
    double med[5];
    fn(ctx); /* warm: caches, page faults, lazy initialisation */
    long reps = 1;
    for (;;) {
        double t0 = cpu_seconds();
        for (long r = 0; r < reps; r++)
            fn(ctx);
        double t = cpu_seconds() - t0;
        if (t >= g_ref_time / 5 || reps > (1L << 30))
            break;
        reps = t > 0 ? (long)((double)reps * (g_ref_time / 5) / t * 1.2) + 1 : reps * 10;
    }
    for (int b = 0; b < 5; b++) {
        double t0 = cpu_seconds();
        for (long r = 0; r < reps; r++)
            fn(ctx);
        med[b] = (cpu_seconds() - t0) / (double)reps;
    }
    for (int i = 1; i < 5; i++) /* insertion sort, 5 values */
        for (int j = i; j > 0 && med[j] < med[j - 1]; j--) {
            double t = med[j];
            med[j] = med[j - 1];
            med[j - 1] = t;
        }
    return med[2];
}

struct copy_ctx {
    void *dst;
    const void *src;
    size_t bytes;
};

static void run_copy(void *p)
{
    struct copy_ctx *c = p;
    memcpy(c->dst, c->src, c->bytes);
    nkb_do_not_optimize(c->dst);
}

static void copy_slice(void *p, size_t i)
{
    struct copy_ctx *c = p;
    size_t per = (c->bytes / (size_t)g_threads + 63) & ~(size_t)63, lo = i * per;
    if (lo < c->bytes)
        memcpy((char *)c->dst + lo, (const char *)c->src + lo, c->bytes - lo < per ? c->bytes - lo : per);
}

/* memcpy in g_threads slices on the pool */
static void run_copy_pool(void *p)
{
    g_pool->parallel_for(g_pool->ctx, copy_slice, p, (size_t)g_threads);
    nkb_do_not_optimize(((struct copy_ctx *)p)->dst);
}

/* Seconds per memcpy of bytes (read bytes + write bytes), cached per size. */
static double memcpy_seconds(size_t bytes)
{
    char key[64];
    snprintf(key, sizeof key, "memcpy:%zu", bytes);
    int i = ref_find(key);
    if (i >= 0)
        return g_ref[i].sec;
    struct copy_ctx c = {xalloc(bytes), xalloc(bytes), bytes};
    memset(c.dst, 0, bytes);
    memset((void *)c.src, 1, bytes);
    double t = time_it(run_copy, &c);
    if (g_pool) {
        /* the T-thread ceiling: the faster of one thread and the pool */
        double tp = time_it(run_copy_pool, &c);
        t = tp < t ? tp : t;
    }
    free(c.dst);
    free((void *)c.src);
    ref_store(key, t, NULL);
    return t;
}

/* ------------------------------------------------------------------------ */
/* Cases                                                                      */
/* ------------------------------------------------------------------------ */

static const char *const op_names[] = {"bn_train", "bn_infer", "in", "gn", "ln", "rms"};

static int64_t case_elems(const nkb_case *cs) { return cs->n * cs->c * cs->spatial; }

/* bytes of x (and of y) */
static size_t tensor_bytes(const nkb_case *cs) { return (size_t)case_elems(cs) * dtype_size(cs->dtype); }
/* what memcpy copies: half the bytes moved, (read + written) / 2: the
 * bytes of x (read once, y written once); for a backward x and dy read, dx
 * written; for a residual add x and skip read, y (.add) or y and the sum
 * (.addsum) written */
static size_t case_bytes(const nkb_case *cs)
{
    if (cs->fuse == NKB_FUSE_ADD)
        return 3 * tensor_bytes(cs) / 2;
    if (cs->fuse == NKB_FUSE_ADDSUM)
        return 2 * tensor_bytes(cs);
    return cs->backward ? 3 * tensor_bytes(cs) / 2 : tensor_bytes(cs);
}

/* ".bwd", ".add", ".addsum" or "": appended to a model shape's name */
static const char *case_suffix(const nkb_case *cs)
{
    if (cs->backward)
        return ".bwd";
    return cs->fuse == NKB_FUSE_ADD ? ".add" : cs->fuse == NKB_FUSE_ADDSUM ? ".addsum" : "";
}

/* "bf16", or "bf16_w16" when weight and bias are 16-bit too */
static const char *dtype_tag(const nkb_case *cs)
{
    if (cs->dtype == NK_DTYPE_F32 || cs->param_dtype == NK_DTYPE_F32)
        return dtype_name(cs->dtype);
    return cs->dtype == NK_DTYPE_BF16 ? "bf16_w16" : "f16_w16";
}

/* Parameters of one case: C-sized vectors and the statistics outputs.
 * wp / bp: weight and bias as the call takes them (w / b, or their 16-bit
 * copies w16 / b16 when cs->param_dtype is 16-bit). */
struct params {
    float *w, *b, *rmean, *rvar, *smean, *sinv;
    uint16_t *w16, *b16;
    const void *wp, *bp;
    nk_running_stats running;
    /* backward: the forward output, dy, dx, dweight, dbias, and the
     * workspace nk_backward_workspace_size asks for (on the first call) */
    void *y0, *dy, *dx, *dw, *db;
    void *ws;
    size_t ws_size;
    /* fused: skip (laid out as x), the sum output (NKB_FUSE_ADDSUM), the
     * skip_bias (c floats, sb16 its 16-bit copy with a 16-bit param_dtype;
     * sbp as the call takes it) */
    void *skip, *sum;
    float *sb;
    uint16_t *sb16;
    const void *sbp;
};

static void params_init(struct params *p, const nkb_case *cs)
{
    size_t c = (size_t)cs->c, nc = (size_t)(cs->n * cs->c);
    if (cs->op == NKB_OP_LN || cs->op == NKB_OP_RMS)
        nc = (size_t)(cs->n * cs->spatial); /* one statistic per row */
    p->w = xalloc(c * sizeof(float));
    p->b = xalloc(c * sizeof(float));
    p->rmean = xalloc(c * sizeof(float));
    p->rvar = xalloc(c * sizeof(float));
    p->smean = xalloc((nc > c ? nc : c) * sizeof(float));
    p->sinv = xalloc((nc > c ? nc : c) * sizeof(float));
    for (size_t i = 0; i < c; i++) {
        p->w[i] = 0.5f + 0.5f * (rnd() + 1.5f) / 4.0f;
        p->b[i] = 0.1f * rnd();
        p->rmean[i] = 0.1f * rnd();
        p->rvar[i] = 1.0f + 0.25f * (rnd() + 1.5f);
    }
    p->running.mean = p->rmean;
    p->running.var = p->rvar;
    p->running.momentum = 0.1;
    p->running.cumulative = 0;
    p->running.unbiased = 1;
    p->running.num_batches_tracked = 0;
    p->w16 = p->b16 = NULL;
    p->wp = p->w;
    p->bp = p->b;
    if (cs->param_dtype != NK_DTYPE_F32) {
        p->w16 = xalloc(c * sizeof(uint16_t));
        p->b16 = xalloc(c * sizeof(uint16_t));
        /* w and b keep the values of w16 and b16, which a library that
         * takes fp32 parameters then gets */
        for (size_t i = 0; i < c; i++) {
            p->w16[i] = to_16(cs->param_dtype, p->w[i]);
            p->b16[i] = to_16(cs->param_dtype, p->b[i]);
            p->w[i] = from_16(cs->param_dtype, p->w16[i]);
            p->b[i] = from_16(cs->param_dtype, p->b16[i]);
        }
        p->wp = p->w16;
        p->bp = p->b16;
    }
    p->y0 = p->dy = p->dx = p->dw = p->db = p->ws = NULL;
    p->ws_size = 0;
    if (cs->backward) {
        const size_t bytes = tensor_bytes(cs), elems = (size_t)case_elems(cs);
        p->y0 = xalloc(bytes);
        p->dy = xalloc(bytes);
        p->dx = xalloc(bytes);
        p->dw = xalloc(c * sizeof(float));
        p->db = xalloc(c * sizeof(float));
        for (size_t i = 0; i < elems; i++) {
            float v = rnd();
            if (cs->dtype == NK_DTYPE_F32)
                ((float *)p->dy)[i] = v;
            else
                ((uint16_t *)p->dy)[i] = to_16(cs->dtype, v);
        }
        memset(p->dx, 0, bytes);
    }
    p->skip = p->sum = NULL;
    p->sb = NULL;
    p->sb16 = NULL;
    p->sbp = NULL;
    if (cs->fuse != NKB_FUSE_NONE) {
        const size_t bytes = tensor_bytes(cs), elems = (size_t)case_elems(cs);
        p->skip = xalloc(bytes);
        for (size_t i = 0; i < elems; i++) {
            float v = rnd();
            if (cs->dtype == NK_DTYPE_F32)
                ((float *)p->skip)[i] = v;
            else
                ((uint16_t *)p->skip)[i] = to_16(cs->dtype, v);
        }
        if (cs->fuse == NKB_FUSE_ADDSUM) {
            p->sum = xalloc(bytes);
            memset(p->sum, 0, bytes);
            /* as large as x's values: a bias added wrongly (or not at all)
             * moves every output by about its own size */
            p->sb = xalloc(c * sizeof(float));
            for (size_t i = 0; i < c; i++)
                p->sb[i] = rnd();
            p->sbp = p->sb;
            if (cs->param_dtype != NK_DTYPE_F32) {
                p->sb16 = xalloc(c * sizeof(uint16_t));
                for (size_t i = 0; i < c; i++) {
                    p->sb16[i] = to_16(cs->param_dtype, p->sb[i]);
                    p->sb[i] = from_16(cs->param_dtype, p->sb16[i]);
                }
                p->sbp = p->sb16;
            }
        }
    }
}

static void params_free(struct params *p)
{
    free(p->w);
    free(p->b);
    free(p->rmean);
    free(p->rvar);
    free(p->smean);
    free(p->sinv);
    free(p->w16);
    free(p->b16);
    free(p->y0);
    free(p->dy);
    free(p->dx);
    free(p->dw);
    free(p->db);
    free(p->ws);
    free(p->skip);
    free(p->sum);
    free(p->sb);
    free(p->sb16);
}

/* The backward of cs on x with the forward's output and statistics in p
 * (bwd_prepare), every gradient wanted. */
static nk_status run_backward(const nkb_case *cs, struct params *p, nk_tensor_desc *d, const void *x)
{
    static const uint32_t layers[] = {
        [NKB_OP_BN_TRAIN] = NK_LAYER_BATCH_NORM, [NKB_OP_BN_INFER] = NK_LAYER_BATCH_NORM,
        [NKB_OP_IN] = NK_LAYER_INSTANCE_NORM,    [NKB_OP_GN] = NK_LAYER_GROUP_NORM,
        [NKB_OP_LN] = NK_LAYER_LAYER_NORM,       [NKB_OP_RMS] = NK_LAYER_RMS_NORM,
    };
    nk_context c = g_ctx;
    const nk_context *ctx = &c;
    if (cs->op == NKB_OP_LN || cs->op == NKB_OP_RMS) {
        d->n = cs->n * cs->spatial;
        d->spatial = 1;
        d->layout = NK_CHANNELS_LAST;
    }
    if (!p->ws) {
        size_t bytes = 0;
        nk_status st = nk_backward_workspace_size(layers[cs->op], d, cs->groups, &bytes);
        if (st)
            return st;
        p->ws = xalloc(bytes ? bytes : 1);
        p->ws_size = bytes;
    }
    c.workspace = p->ws;
    c.workspace_size = p->ws_size;
    switch (cs->op) {
    case NKB_OP_BN_TRAIN:
        return nk_batch_norm_backward_ex(ctx, d, x, p->y0, p->dy, p->dx, p->wp, p->smean, p->sinv,
                                         p->dw, p->db);
    case NKB_OP_BN_INFER:
        return nk_batch_norm_infer_backward_ex(ctx, d, x, p->y0, p->dy, p->dx, p->wp, p->rmean,
                                               p->rvar, cs->eps, p->dw, p->db);
    case NKB_OP_IN:
        return nk_instance_norm_backward_ex(ctx, d, x, p->y0, p->dy, p->dx, p->wp, p->smean,
                                            p->sinv, p->dw, p->db);
    case NKB_OP_GN:
        return nk_group_norm_backward_ex(ctx, d, x, p->y0, p->dy, p->dx, cs->groups, p->wp,
                                         p->smean, p->sinv, p->dw, p->db);
    case NKB_OP_LN:
    case NKB_OP_RMS:
        if (cs->op == NKB_OP_LN)
            return nk_layer_norm_backward_ex(ctx, d, x, p->y0, p->dy, p->dx, p->wp, p->smean,
                                             p->sinv, p->dw, p->db);
        return nk_rms_norm_backward_ex(ctx, d, x, p->y0, p->dy, p->dx, p->wp, p->sinv, p->dw);
    }
    return NK_ERR_BAD_PARAM;
}

static nk_status run_ours(const nkb_case *cs, struct params *p, const void *x, void *y);

/* The forward of a backward case: its output and saved statistics. */
static nk_status bwd_prepare(const nkb_case *cs, struct params *p, const void *x)
{
    nkb_case f = *cs;
    f.backward = 0;
    nk_tensor_desc d = NK_TENSOR_DESC_INIT;
    d.dtype = cs->dtype;
    d.param_dtype = cs->param_dtype;
    d.n = cs->n * (cs->op == NKB_OP_LN || cs->op == NKB_OP_RMS ? cs->spatial : 1);
    d.c = cs->c;
    d.spatial = cs->op == NKB_OP_LN || cs->op == NKB_OP_RMS ? 1 : cs->spatial;
    d.layout = cs->op == NKB_OP_LN || cs->op == NKB_OP_RMS ? NK_CHANNELS_LAST : (uint32_t)cs->layout;
    d.activation = (int32_t)cs->act;
    switch (cs->op) {
    case NKB_OP_LN:
        return nk_layer_norm_ex(&g_ctx, &d, x, p->y0, p->wp, p->bp, cs->eps, p->smean, p->sinv);
    case NKB_OP_RMS:
        return nk_rms_norm_ex(&g_ctx, &d, x, p->y0, p->wp, cs->eps, p->sinv);
    default:
        /* BatchNorm training saves its statistics; the others as run_ours */
        return run_ours(&f, p, x, p->y0);
    }
}

static nk_status run_ours(const nkb_case *cs, struct params *p, const void *x, void *y)
{
    nk_tensor_desc d = NK_TENSOR_DESC_INIT;
    d.dtype = cs->dtype;
    d.param_dtype = cs->param_dtype;
    d.n = cs->n;
    d.c = cs->c;
    d.spatial = cs->spatial;
    d.layout = (uint32_t)cs->layout;
    d.activation = (int32_t)cs->act;
    const nk_context *ctx = &g_ctx;
    if (cs->backward)
        return run_backward(cs, p, &d, x);
    switch (cs->op) {
    case NKB_OP_BN_TRAIN:
        /* as PyTorch training: running statistics and saved statistics */
        return nk_batch_norm_train_ex(ctx, &d, x, y, p->wp, p->bp, cs->eps, &p->running, p->smean,
                                      p->sinv);
    case NKB_OP_BN_INFER:
        return nk_batch_norm_infer_ex(ctx, &d, x, y, p->wp, p->bp, p->rmean, p->rvar, cs->eps);
    case NKB_OP_IN:
        return nk_instance_norm_ex(ctx, &d, x, y, p->wp, p->bp, cs->eps, 1, NULL, p->smean, p->sinv);
    case NKB_OP_GN:
        return nk_group_norm_ex(ctx, &d, x, y, cs->groups, p->wp, p->bp, cs->eps, p->smean, p->sinv);
    case NKB_OP_LN:
    case NKB_OP_RMS:
        /* rows of c: n * spatial of them */
        d.n = cs->n * cs->spatial;
        d.spatial = 1;
        d.layout = NK_CHANNELS_LAST;
        if (cs->fuse != NKB_FUSE_NONE) {
            nk_norm_fusion f = NK_NORM_FUSION_INIT;
            f.skip = p->skip;
            if (cs->fuse == NKB_FUSE_ADDSUM) {
                f.skip_bias = p->sbp;
                f.sum = p->sum;
            }
            if (cs->op == NKB_OP_LN)
                return nk_layer_norm_fused_ex(ctx, &d, &f, x, y, p->wp, p->bp, cs->eps, NULL, NULL);
            return nk_rms_norm_fused_ex(ctx, &d, &f, x, y, p->wp, cs->eps, NULL);
        }
        if (cs->op == NKB_OP_LN)
            return nk_layer_norm_ex(ctx, &d, x, y, p->wp, p->bp, cs->eps, NULL, NULL);
        return nk_rms_norm_ex(ctx, &d, x, y, p->wp, cs->eps, NULL);
    }
    return NK_ERR_BAD_PARAM;
}

/* ------------------------------------------------------------------------ */
/* Implementations: the ISAs, then the other libraries                       */
/* ------------------------------------------------------------------------ */

enum impl { IMPL_SCALAR, IMPL_AVX2, IMPL_AVX512, IMPL_NEON, IMPL_MEMCPY, IMPL_ONEDNN, IMPL_ATEN, IMPL_COUNT };
static const char *const impl_names[IMPL_COUNT] = {"scalar", "avx2", "avx512", "neon", "memcpy", "onednn", "aten"};
static const nk_isa impl_isa[4] = {NK_ISA_SCALAR, NK_ISA_AVX2, NK_ISA_AVX512, NK_ISA_NEON};

typedef struct ext_api {
    nkb_ext *(*create)(const nkb_case *, const void *, const nkb_bwd_inputs *, const nkb_fuse_inputs *,
                       char *, size_t);
    void (*run)(nkb_ext *);
    const void *(*dx)(const nkb_ext *); /* a backward's dx; NULL: the adapter keeps it */
    const void *(*y)(const nkb_ext *);   /* a fused case's y and sum (ext.h) */
    const void *(*sum)(const nkb_ext *);
    void (*destroy)(nkb_ext *);
} ext_api;

#if NKB_HAVE_ATEN
/* ATen's backward draws its own dy and runs on unit weights */
static nkb_ext *aten_create(const nkb_case *cs, const void *x, const nkb_bwd_inputs *bwd,
                            const nkb_fuse_inputs *fuse, char *why, size_t why_len)
{
    (void)bwd;
    return nkb_aten_create(cs, x, fuse, why, why_len);
}
#endif

static int ext_of(enum impl im, ext_api *api)
{
#if NKB_HAVE_ONEDNN
    if (im == IMPL_ONEDNN) {
        api->create = nkb_onednn_create;
        api->run = nkb_onednn_run;
        api->dx = nkb_onednn_dx;
        api->y = nkb_onednn_y;
        api->sum = nkb_onednn_sum;
        api->destroy = nkb_onednn_destroy;
        return 1;
    }
#endif
#if NKB_HAVE_ATEN
    if (im == IMPL_ATEN) {
        api->create = aten_create;
        api->run = nkb_aten_run;
        api->dx = NULL;
        api->y = nkb_aten_y;
        api->sum = nkb_aten_sum;
        api->destroy = nkb_aten_destroy;
        return 1;
    }
#endif
    (void)im;
    (void)api;
    return 0;
}

/* One registered row */
struct item {
    nkb_case cs;
    enum impl impl;
    char model[48]; /* "" for sweep rows */
    char label[96];
    int checked; /* a library's backward or fused row: its dx (y and sum) was found to
                    agree with normkit's */
};

static void ext_key(char *key, size_t len, enum impl im, const struct item *it)
{
    const nkb_case *cs = &it->cs;
    snprintf(key, len, "%s:%d:%d:%lld:%lld:%lld:%lld:%d:%s:%d:%d", impl_names[im], (int)cs->op,
             (int)cs->layout, (long long)cs->n, (long long)cs->c, (long long)cs->spatial,
             (long long)cs->groups, (int)cs->act, dtype_tag(cs), cs->backward, (int)cs->fuse);
}

static void run_ext_adapter(void *p)
{
    const ext_api *api = ((void **)p)[0];
    api->run(((void **)p)[1]);
}

static float elem_f32(uint32_t dt, const void *p, size_t i)
{
    return dt == NK_DTYPE_F32 ? ((const float *)p)[i] : from_16(dt, ((const uint16_t *)p)[i]);
}

/* ||a - b|| / ||b|| (2-norms) over n elements of dt: rounding differences
 * and the odd ReLU mask element on either side of 0 weigh little, a wrong
 * input or layout about 1. NaN when either has one. */
static double rel_diff(uint32_t dt, const void *a, const void *b, size_t n)
{
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) {
        double u = elem_f32(dt, a, i), v = elem_f32(dt, b, i);
        num += (u - v) * (u - v);
        den += v * v;
    }
    return den > 0 ? sqrt(num / den) : sqrt(num);
}

/* The other library's adapter for it on x, or NULL with the reason in why.
 * A backward case runs on p's dy and parameters, a fused case on p's skip,
 * skip_bias and parameters; when want (normkit's result on the same inputs:
 * dx of a backward, y of a fused case, whose sum is p->sum) is given and
 * the adapter shows its own, the two are compared to a tolerance of the
 * element type: *verdict = 1 when they agree, -1 when they do not (the
 * adapter is wired wrong: NULL, the reason in why and on stderr), 0 when
 * not compared. */
static nkb_ext *ext_open(enum impl im, const struct item *it, const void *x, const struct params *p,
                         const void *want, char *why, size_t why_len, int *verdict)
{
    ext_api api;
    *verdict = 0;
    if (!ext_of(im, &api)) {
        snprintf(why, why_len, "not built (library not found at configure time)");
        return NULL;
    }
    const nkb_case *cs = &it->cs;
    nkb_bwd_inputs in = {0};
    nkb_fuse_inputs fin = {0};
    if (cs->backward)
        in = (nkb_bwd_inputs){p->dy, p->w, p->b, p->rmean, p->rvar};
    if (cs->fuse != NKB_FUSE_NONE)
        fin = (nkb_fuse_inputs){p->skip, p->sb, p->w, p->b};
    nkb_ext *e = api.create(cs, x, cs->backward ? &in : NULL, cs->fuse != NKB_FUSE_NONE ? &fin : NULL,
                            why, why_len);
    if (!e || !want)
        return e;
    /* what to compare: dx; y, then the sum */
    const void *got[2] = {NULL, NULL}, *ours[2] = {want, NULL};
    const char *what[2] = {"dx", "sum"};
    if (cs->backward) {
        got[0] = api.dx ? api.dx(e) : NULL;
    } else if (cs->fuse != NKB_FUSE_NONE) {
        got[0] = api.y(e);
        what[0] = "y";
        if (cs->fuse == NKB_FUSE_ADDSUM) {
            got[1] = api.sum(e);
            ours[1] = p->sum;
        }
    }
    if (!got[0])
        return e;
    /* 16-bit results: each element rounded once by each library (the
     * composites' sums and the sum they normalize: once more) */
    const double tol = cs->dtype == NK_DTYPE_F32 ? 5e-3 : 3e-2;
    double err = 0, errs[2] = {0, 0};
    int k;
    for (k = 0; k < 2 && got[k]; k++) {
        err = errs[k] = rel_diff(cs->dtype, got[k], ours[k], (size_t)case_elems(cs));
        if (!(err <= tol))
            break;
    }
    *verdict = k == 2 || !got[k] ? 1 : -1;
    if (*verdict > 0) {
        /* the agreement, on stderr beside the rows */
        fprintf(stderr, "normkit-bench: %s/%s/%s: %s agrees with normkit's, ||diff|| / ||%s|| = %.3g",
                it->model, dtype_tag(cs), impl_names[im], what[0], what[0], errs[0]);
        if (got[1])
            fprintf(stderr, ", %s %.3g", what[1], errs[1]);
        fprintf(stderr, " (<= %.0e)\n", tol);
        return e;
    }
    snprintf(why, why_len,
             "FAILED: %s/%s/%s: %s differs from normkit's, ||diff|| / ||%s|| = %.3g > %.0e",
             it->model, dtype_tag(cs), impl_names[im], what[k], what[k], err, tol);
    fprintf(stderr, "normkit-bench: %s\n", why);
    api.destroy(e);
    g_failures++;
    return NULL;
}

/* The other library's seconds per iteration on this case: from its own row
 * when that ran earlier in this process, else measured now. < 0: none.
 * p: the case's parameters, with normkit's dx for a backward and its sum for
 * a fused case; want: what ext_open compares (normkit's dx, or y). */
static double ext_seconds(enum impl im, const struct item *it, const void *x, const struct params *p,
                          const void *want)
{
    char key[128];
    ext_key(key, sizeof key, im, it);
    int i = ref_find(key);
    if (i >= 0)
        return g_ref[i].sec;
    ext_api api;
    if (!ext_of(im, &api))
        return -1;
    char why[256] = "";
    int verdict;
    nkb_ext *e = ext_open(im, it, x, p, want, why, sizeof why, &verdict);
    if (!e) {
        if (verdict < 0)
            ref_fail(key, why);
        else
            ref_store(key, -1, why);
        return -1;
    }
    void *ctx[2] = {&api, e};
    double t = time_it(run_ext_adapter, ctx);
    api.destroy(e);
    ref_store(key, t, why);
    return t;
}

/* sec: our CPU seconds per iteration, timed around the loop with the clock
 * Google Benchmark uses, so that ratios print as plain numbers. */
static void common_counters(nkb_state *st, const nkb_case *cs, double sec)
{
    int64_t elems = case_elems(cs);
    nkb_set_bytes(st, 2 * (int64_t)case_bytes(cs)); /* backward: x + dy + dx */
    nkb_set_items(st, elems);
    /* memcpy of the input: reads and writes exactly these bytes */
    if (sec > 0)
        nkb_counter(st, "memcpy_ratio", memcpy_seconds(case_bytes(cs)) / sec, NKB_VALUE);
}

static double loop_seconds(nkb_state *st, double t0)
{
    double t = cpu_seconds() - t0;
    int64_t it = nkb_iterations(st);
    return it > 0 ? t / (double)it : 0;
}

static void bm_ours(nkb_state *st)
{
    struct item *it = nkb_ctx(st);
    nk_isa isa = impl_isa[it->impl];
    if (!nk_isa_supported(isa)) {
        nkb_skip(st, nk_isa_reason(isa));
        return;
    }
    int64_t elems = case_elems(&it->cs);
    if (it->model[0] == 0 && 2 * (int64_t)case_bytes(&it->cs) > g_max_mb * 1024 * 1024) {
        char why[96];
        snprintf(why, sizeof why, "x + y over the %lld MiB cap (--max-mb)", (long long)g_max_mb);
        nkb_skip(st, why);
        return;
    }
    nk_set_isa(isa);
    void *x, *y;
    buffers((size_t)elems, it->cs.dtype, &x, &y);
    struct params p;
    params_init(&p, &it->cs);
    nk_status s = it->cs.backward ? bwd_prepare(&it->cs, &p, x) : NK_OK;
    if (s == NK_OK)
        s = run_ours(&it->cs, &p, x, y);
    if (s != NK_OK) {
        char why[256];
        snprintf(why, sizeof why, "%s: %s", nk_status_string(s), nk_last_error());
        nkb_skip(st, why);
        params_free(&p);
        return;
    }
    /* references first: their timing must not sit inside our loop */
    double ref[2] = {-1, -1};
    if (it->model[0] && g_threads == 1) {
        const void *want = it->cs.backward ? p.dx : it->cs.fuse != NKB_FUSE_NONE ? y : NULL;
        ref[0] = ext_seconds(IMPL_ONEDNN, it, x, &p, want);
        ref[1] = ext_seconds(IMPL_ATEN, it, x, &p, want);
    }
    (void)memcpy_seconds(case_bytes(&it->cs));
    nk_set_isa(isa);
    double t0 = cpu_seconds();
    while (nkb_keep_running(st))
        run_ours(&it->cs, &p, x, y);
    double sec = loop_seconds(st, t0);
    nkb_do_not_optimize(y);
    common_counters(st, &it->cs, sec);
    if (ref[0] > 0 && sec > 0)
        nkb_counter(st, "vs_onednn", ref[0] / sec, NKB_VALUE);
    if (ref[1] > 0 && sec > 0)
        nkb_counter(st, "vs_aten", ref[1] / sec, NKB_VALUE);
    nkb_set_label(st, it->label);
    params_free(&p);
}

static void bm_ext(nkb_state *st)
{
    struct item *it = nkb_ctx(st);
    ext_api api;
    char key[128];
    ext_key(key, sizeof key, it->impl, it);
    if (!ext_of(it->impl, &api)) {
        nkb_skip(st, "not built (library not found at configure time)");
        return;
    }
    if (g_threads > 1) {
        static const char why1[] = "oneDNN and ATen run at --threads=1 only: the one-thread table has their ratios";
        ref_store(key, -1, why1);
        nkb_skip(st, why1);
        return;
    }
    void *x, *y;
    buffers((size_t)case_elems(&it->cs), it->cs.dtype, &x, &y);
    /* a backward's dy and parameters (a fused case's skip, skip_bias and
     * parameters), and normkit's dx (y and sum) on them until the library's
     * have been found to agree once */
    struct params p, *pp = NULL;
    const void *want = NULL;
    if (it->cs.backward) {
        pp = &p;
        params_init(pp, &it->cs);
        if (api.dx && !it->checked && bwd_prepare(&it->cs, pp, x) == NK_OK &&
            run_ours(&it->cs, pp, x, y) == NK_OK)
            want = p.dx;
    } else if (it->cs.fuse != NKB_FUSE_NONE) {
        pp = &p;
        params_init(pp, &it->cs);
        if (!it->checked && run_ours(&it->cs, pp, x, y) == NK_OK)
            want = y;
    }
    char why[256] = "";
    int verdict;
    nkb_ext *e = ext_open(it->impl, it, x, pp, want, why, sizeof why, &verdict);
    if (!e) {
        if (pp)
            params_free(pp);
        if (verdict < 0) {
            ref_fail(key, why);
            nkb_fail(st, why);
        } else {
            ref_store(key, -1, why);
            nkb_skip(st, why);
        }
        return;
    }
    it->checked |= verdict > 0;
    (void)memcpy_seconds(case_bytes(&it->cs));
    api.run(e); /* warm */
    double t0 = cpu_seconds();
    while (nkb_keep_running(st))
        api.run(e);
    double sec = loop_seconds(st, t0);
    api.destroy(e);
    if (pp)
        params_free(pp);
    /* the last call of this function is the measured one: it wins */
    if (sec > 0)
        ref_store(key, sec, why);
    common_counters(st, &it->cs, sec);
    if (why[0]) {
        /* how the library ran it differently (ext.h): in the row's label */
        char label[384];
        snprintf(label, sizeof label, "%s; %s", it->label, why);
        nkb_set_label(st, label);
    } else {
        nkb_set_label(st, it->label);
    }
}

static void bm_memcpy(nkb_state *st)
{
    struct item *it = nkb_ctx(st);
    size_t bytes = case_bytes(&it->cs), es = dtype_size(it->cs.dtype);
    void *x, *y;
    buffers((bytes + es - 1) / es, it->cs.dtype, &x, &y);
    struct copy_ctx c = {y, x, bytes};
    double t0 = cpu_seconds();
    while (nkb_keep_running(st)) {
        if (g_pool)
            run_copy_pool(&c);
        else
            run_copy(&c);
    }
    double sec = loop_seconds(st, t0);
    char key[64];
    snprintf(key, sizeof key, "memcpy:%zu", bytes);
    /* with a pool the ceiling is the faster of one thread and the pool,
     * which memcpy_seconds measures */
    if (sec > 0 && !g_pool)
        ref_store(key, sec, NULL);
    nkb_set_bytes(st, 2 * (int64_t)bytes);
    nkb_set_items(st, case_elems(&it->cs));
    nkb_set_label(st, it->label);
}

/* ------------------------------------------------------------------------ */
/* What runs                                                                  */
/* ------------------------------------------------------------------------ */

struct model {
    const char *name, *what;
    nkb_op op;
    nk_layout layout;
    int64_t n, c, spatial, groups;
    nk_activation act;
};

#define CF NK_CHANNELS_FIRST
#define CL NK_CHANNELS_LAST
static const struct model models[] = {
    {"style_in2d", "InstanceNorm2d 1x64x256x256", NKB_OP_IN, CF, 1, 64, 256 * 256, 0, NK_ACT_NONE},
    {"nnunet_in3d", "InstanceNorm3d 2x32x64x128x128", NKB_OP_IN, CF, 2, 32, 64 * 128 * 128, 0, NK_ACT_NONE},
    {"sd_gn_silu", "GroupNorm(32)+SiLU 2x320x64x64", NKB_OP_GN, CF, 2, 320, 64 * 64, 32, NK_ACT_SILU},
    {"resnet_bn_eval_relu", "BatchNorm2d eval+ReLU 1x256x56x56", NKB_OP_BN_INFER, CF, 1, 256, 56 * 56, 0, NK_ACT_RELU},
    {"resnet_bn_train", "BatchNorm2d train 32x64x56x56", NKB_OP_BN_TRAIN, CF, 32, 64, 56 * 56, 0, NK_ACT_NONE},
    {"audio_in1d", "InstanceNorm1d 8x80x1000", NKB_OP_IN, CF, 8, 80, 1000, 0, NK_ACT_NONE},
    {"bert_ln", "LayerNorm 4096x768", NKB_OP_LN, CL, 4096, 768, 1, 0, NK_ACT_NONE},
    {"llama_rms", "RMSNorm 512x4096", NKB_OP_RMS, CL, 512, 4096, 1, 0, NK_ACT_NONE},
    /* issue #3 targets */
    {"i3_in2d", "InstanceNorm2d 1x32x56x56", NKB_OP_IN, CF, 1, 32, 56 * 56, 0, NK_ACT_NONE},
    {"i3_gn32", "GroupNorm(32) 2x320x64x64", NKB_OP_GN, CF, 2, 320, 64 * 64, 32, NK_ACT_NONE},
    {"i3_ln_2048x768", "LayerNorm 2048x768", NKB_OP_LN, CL, 2048, 768, 1, 0, NK_ACT_NONE},
    {"i3_ln_512x4096", "LayerNorm 512x4096", NKB_OP_LN, CL, 512, 4096, 1, 0, NK_ACT_NONE},
    {"i3_in3d", "InstanceNorm3d 1x32x64x64x64", NKB_OP_IN, CF, 1, 32, 64 * 64 * 64, 0, NK_ACT_NONE},
    {"i3_bn_train_nhwc", "BatchNorm2d train 32x64x56x56 NHWC", NKB_OP_BN_TRAIN, CL, 32, 64, 56 * 56, 0, NK_ACT_NONE},
    /* BatchNorm1d on (N, C) and short (N, C, L) inputs */
    {"bn1d_train_2048x256", "BatchNorm1d train 2048x256", NKB_OP_BN_TRAIN, CF, 2048, 256, 1, 0, NK_ACT_NONE},
    {"bn1d_eval_2048x256", "BatchNorm1d eval 2048x256", NKB_OP_BN_INFER, CF, 2048, 256, 1, 0, NK_ACT_NONE},
    {"bn1d_train_64x512", "BatchNorm1d train 64x512", NKB_OP_BN_TRAIN, CF, 64, 512, 1, 0, NK_ACT_NONE},
    {"bn1d_eval_64x512", "BatchNorm1d eval 64x512", NKB_OP_BN_INFER, CF, 64, 512, 1, 0, NK_ACT_NONE},
    {"bn1d_train_32x128x9", "BatchNorm1d train 32x128x9", NKB_OP_BN_TRAIN, CF, 32, 128, 9, 0, NK_ACT_NONE},
    {"bn1d_eval_32x128x9", "BatchNorm1d eval 32x128x9", NKB_OP_BN_INFER, CF, 32, 128, 9, 0, NK_ACT_NONE},
    /* short groups and small tensors: the per-group cost */
    {"ln_8192x16", "LayerNorm 8192x16", NKB_OP_LN, CL, 8192, 16, 1, 0, NK_ACT_NONE},
    {"ln_50176x16", "LayerNorm 50176x16", NKB_OP_LN, CL, 50176, 16, 1, 0, NK_ACT_NONE},
    {"ln_50176x64", "LayerNorm 50176x64", NKB_OP_LN, CL, 50176, 64, 1, 0, NK_ACT_NONE},
    {"rms_8192x16", "RMSNorm 8192x16", NKB_OP_RMS, CL, 8192, 16, 1, 0, NK_ACT_NONE},
    {"rms_50176x16", "RMSNorm 50176x16", NKB_OP_RMS, CL, 50176, 16, 1, 0, NK_ACT_NONE},
    {"ln_decode_1x4096", "LayerNorm 1x4096 (one token)", NKB_OP_LN, CL, 1, 4096, 1, 0, NK_ACT_NONE},
    {"rms_decode_1x4096", "RMSNorm 1x4096 (one token)", NKB_OP_RMS, CL, 1, 4096, 1, 0, NK_ACT_NONE},
    {"in2d_1x256x7x7", "InstanceNorm2d 1x256x7x7", NKB_OP_IN, CF, 1, 256, 49, 0, NK_ACT_NONE},
    {"in2d_1x64x14x14", "InstanceNorm2d 1x64x14x14", NKB_OP_IN, CF, 1, 64, 196, 0, NK_ACT_NONE},
    {"bn_eval_1x512x7x7", "BatchNorm2d eval 1x512x7x7", NKB_OP_BN_INFER, CF, 1, 512, 49, 0, NK_ACT_NONE},
    {"bn_eval_1x1024x7x7", "BatchNorm2d eval 1x1024x7x7", NKB_OP_BN_INFER, CF, 1, 1024, 49, 0, NK_ACT_NONE},
    {"bn_eval_1x256x7x7_nhwc", "BatchNorm2d eval 1x256x7x7 NHWC", NKB_OP_BN_INFER, CL, 1, 256, 49, 0, NK_ACT_NONE},
};
#define N_MODELS (sizeof models / sizeof models[0])

/* Residual add + LayerNorm / RMSNorm of a transformer block: rows .add
 * (x + skip, y written) and .addsum (x + skip + skip_bias, y and the sum
 * written) of each shape, forward only */
static const struct model fused_models[] = {
    {"bert_ln", "LayerNorm 4096x768", NKB_OP_LN, CL, 4096, 768, 1, 0, NK_ACT_NONE},
    {"bert_rms", "RMSNorm 4096x768", NKB_OP_RMS, CL, 4096, 768, 1, 0, NK_ACT_NONE},
    {"llama_ln", "LayerNorm 512x4096", NKB_OP_LN, CL, 512, 4096, 1, 0, NK_ACT_NONE},
    {"llama_rms", "RMSNorm 512x4096", NKB_OP_RMS, CL, 512, 4096, 1, 0, NK_ACT_NONE},
    {"ln_2048x768", "LayerNorm 2048x768", NKB_OP_LN, CL, 2048, 768, 1, 0, NK_ACT_NONE},
    {"rms_2048x768", "RMSNorm 2048x768", NKB_OP_RMS, CL, 2048, 768, 1, 0, NK_ACT_NONE},
};
#define N_FUSED (sizeof fused_models / sizeof fused_models[0])

/* One line of the headline table: a model shape, forward or backward, or a
 * fused shape with its residual add. Forward rows first, then backward,
 * then fused, in the order of models[] and fused_models[]. */
struct spec {
    const struct model *md;
    int backward;
    nkb_fuse fuse;
};
#define N_SPECS (2 * N_MODELS + 2 * N_FUSED)

static struct spec spec_at(size_t i)
{
    struct spec sp = {NULL, 0, NKB_FUSE_NONE};
    if (i < 2 * N_MODELS) {
        sp.md = &models[i % N_MODELS];
        sp.backward = i >= N_MODELS;
    } else {
        i -= 2 * N_MODELS;
        sp.md = &fused_models[i / 2];
        sp.fuse = i % 2 ? NKB_FUSE_ADDSUM : NKB_FUSE_ADD;
    }
    return sp;
}

/* The table's shape column: "LayerNorm 4096x768", with the residual add of
 * a fused row: "add+LayerNorm 4096x768", "add+bias+LayerNorm 4096x768 +sum" */
static void spec_what(char *buf, size_t len, const struct spec *sp)
{
    const char *pre = sp->fuse == NKB_FUSE_ADD ? "add+" : sp->fuse == NKB_FUSE_ADDSUM ? "add+bias+" : "";
    snprintf(buf, len, "%s%s%s", pre, sp->md->what, sp->fuse == NKB_FUSE_ADDSUM ? " +sum" : "");
}

static const int64_t sweep_c[] = {3, 16, 64, 256, 1024};
static const int64_t sweep_s[] = {1, 49, 196, 3136, 12544, 50176};
static const int64_t quick_c[] = {16, 256};
static const int64_t quick_s[] = {49, 3136};

static struct item *g_items;
static size_t g_nitems, g_capitems;

static struct item *new_item(void)
{
    if (g_nitems == g_capitems) {
        g_capitems = g_capitems ? 2 * g_capitems : 256;
        /* items are referenced by registered benchmarks: never moved, so
         * allocate blocks and chain them instead of realloc */
        g_items = xalloc(g_capitems * sizeof *g_items);
        g_nitems = 0;
    }
    struct item *it = &g_items[g_nitems++];
    memset(it, 0, sizeof *it);
    return it;
}

static int64_t sweep_groups(int64_t c) { return c % 32 == 0 ? 32 : c % 8 == 0 ? 8 : 1; }

static void register_sweep(int quick)
{
    const int64_t *cs = quick ? quick_c : sweep_c, *ss = quick ? quick_s : sweep_s;
    size_t ncs = quick ? 2 : 5, nss = quick ? 2 : 6;
    static const char *const names[] = {"c", "s", "n"};
    for (int op = 0; op <= NKB_OP_RMS; op++)
        for (int lay = 0; lay < 2; lay++) {
            int rows = op == NKB_OP_LN || op == NKB_OP_RMS;
            if (rows && lay == CF)
                continue;
            for (int k = 0; k < 3; k++) {
                uint32_t dt = dtype_order[k];
                if (!(g_sweep_dtypes & DT_BIT(dt)))
                    continue;
                for (int im = IMPL_SCALAR; im <= IMPL_NEON; im++) {
                    for (size_t i = 0; i < ncs; i++)
                        for (size_t j = 0; j < nss; j++) {
                            struct item *it = new_item();
                            it->impl = (enum impl)im;
                            it->cs.op = (nkb_op)op;
                            it->cs.layout = (nk_layout)lay;
                            it->cs.n = op == NKB_OP_BN_TRAIN ? g_train_batch : 1;
                            it->cs.c = cs[i];
                            it->cs.spatial = ss[j];
                            it->cs.groups = sweep_groups(cs[i]);
                            it->cs.act = NK_ACT_NONE;
                            it->cs.eps = op == NKB_OP_RMS ? 1e-6 : 1e-5;
                            it->cs.dtype = dt;
                            it->cs.param_dtype = g_param_x ? dt : NK_DTYPE_F32;
                            char name[96];
                            snprintf(name, sizeof name, "sweep/%s/%s/%s/%s", op_names[op],
                                     rows ? "rows" : lay == CF ? "cf" : "cl", dtype_tag(&it->cs), impl_names[im]);
                            int64_t args[3] = {cs[i], ss[j], it->cs.n};
                            nkb_register(name, bm_ours, it, 3, args, names, g_min_time);
                        }
                }
            }
        }
}

/* "model/<shape>[.bwd|.add|.addsum]/<dtype>/<impl>" */
static void model_row_name(char *name, size_t len, const struct model *md, const nkb_case *cs, enum impl im)
{
    snprintf(name, len, "model/%s%s/%s/%s", md->name, case_suffix(cs), dtype_tag(cs), impl_names[im]);
}

static void model_case(nkb_case *cs, const struct model *md, uint32_t dt)
{
    memset(cs, 0, sizeof *cs);
    cs->op = md->op;
    cs->layout = md->layout;
    cs->n = md->n;
    cs->c = md->c;
    cs->spatial = md->spatial;
    cs->groups = md->groups;
    cs->act = md->act;
    cs->eps = md->op == NKB_OP_RMS ? 1e-6 : 1e-5;
    cs->dtype = dt;
    cs->param_dtype = g_param_x ? dt : NK_DTYPE_F32;
}

/* Per shape, each element type in turn (f32, bf16, f16): the rows of one
 * shape run close together in time, so the machine's state is alike. */
static void register_models(void)
{
    /* memcpy and the other libraries first: our rows reuse their times */
    static const int order[IMPL_COUNT] = {IMPL_MEMCPY, IMPL_ONEDNN, IMPL_ATEN, IMPL_SCALAR,
                                          IMPL_AVX2,   IMPL_AVX512, IMPL_NEON};
    for (size_t i = 0; i < N_SPECS; i++)
        for (int d = 0; d < 3; d++) {
            const struct spec sp = spec_at(i);
            const struct model *md = sp.md;
            uint32_t dt = dtype_order[d];
            if (!(g_model_dtypes & DT_BIT(dt)))
                continue;
            for (int k = 0; k < IMPL_COUNT; k++) {
                enum impl im = (enum impl)order[k];
                ext_api api;
                if ((im == IMPL_ONEDNN || im == IMPL_ATEN) && !ext_of(im, &api))
                    continue;
                struct item *it = new_item();
                it->impl = im;
                model_case(&it->cs, md, dt);
                it->cs.backward = sp.backward;
                it->cs.fuse = sp.fuse;
                snprintf(it->model, sizeof it->model, "%s%s", md->name, case_suffix(&it->cs));
                char what[64];
                spec_what(what, sizeof what, &sp);
                snprintf(it->label, sizeof it->label, "%s %s%s", what, dtype_tag(&it->cs),
                         sp.backward ? " backward" : "");
                char name[96];
                model_row_name(name, sizeof name, md, &it->cs, im);
                nkb_fn fn = im == IMPL_MEMCPY ? bm_memcpy : im >= IMPL_ONEDNN ? bm_ext : bm_ours;
                nkb_register(name, fn, it, 0, NULL, NULL, g_min_time);
            }
        }
}

/* ------------------------------------------------------------------------ */
/* Headline table                                                             */
/* ------------------------------------------------------------------------ */

/* name, or name followed by what Google Benchmark appends ("/min_time:...") */
static long find_result(const char *name)
{
    size_t n = strlen(name);
    for (size_t i = 0; i < nkb_result_count(); i++) {
        const char *r = nkb_result_name(i);
        if (!strncmp(r, name, n) && (r[n] == 0 || r[n] == '/'))
            return (long)i;
    }
    return -1;
}

/* The reference row of (shape, element type): its ext_key entry, or -1 */
static int ext_ref(enum impl im, const nkb_case *cs)
{
    struct item tmp;
    memset(&tmp, 0, sizeof tmp);
    tmp.cs = *cs;
    char key[128];
    ext_key(key, sizeof key, im, &tmp);
    return ref_find(key);
}

/* "1.23x"; "1.23x*" when the library ran the case its own way (a note
 * under the table); "n/a" when it has no equivalent; "FAILED" when its
 * result disagreed with normkit's; "-" when not run */
static void ratio_cell(char *buf, size_t len, long row, const char *counter, enum impl im,
                       const struct model *md, const nkb_case *cs)
{
    double v;
    ext_api api;
    if (!ext_of(im, &api)) {
        snprintf(buf, len, "not built");
        return;
    }
    int ref = ext_ref(im, cs);
    if (row >= 0 && nkb_result_counter((size_t)row, counter, &v) && v > 0) {
        snprintf(buf, len, "%.2fx%s", v, ref >= 0 && g_ref[ref].sec > 0 && g_ref[ref].why[0] ? "*" : "");
        return;
    }
    if (ref >= 0 && g_ref[ref].failed) {
        snprintf(buf, len, "FAILED");
        return;
    }
    char name[96];
    model_row_name(name, sizeof name, md, cs, im);
    long r = find_result(name);
    snprintf(buf, len, "%s", r >= 0 && nkb_result_skipped((size_t)r) ? "n/a" : "-");
}

/* Each distinct reason (unavailable: sec < 0) or note (sec > 0) once */
static void print_reasons(int notes)
{
    for (int i = 0; i < g_nref; i++) {
        if (!g_ref[i].why[0] || (notes ? g_ref[i].sec <= 0 : g_ref[i].sec >= 0))
            continue;
        int seen = 0;
        for (int j = 0; j < i; j++)
            seen |= (notes ? g_ref[j].sec > 0 : g_ref[j].sec < 0) && !strcmp(g_ref[j].why, g_ref[i].why);
        if (!seen)
            printf("  %s\n", g_ref[i].why);
    }
}

/* One row per model shape and element type, the element types of a shape
 * together. */
static void print_table(void)
{
    if (g_threads > 1)
        printf("\nnormkit %s, %d threads (memcpy: the faster of 1 and %d threads); ratio columns: in the "
               "one-thread table\n",
               nk_version(), g_threads, g_threads);
    else
        printf("\nnormkit %s, one thread; ratio columns: their time / ours (> 1: normkit faster)\n",
               nk_version());
    printf("memcpy: of the row's own bytes (16-bit rows: half those of f32)%s\n",
           g_param_x ? "; weight and bias in the row's type" : "; weight and bias fp32");
    printf("%-26s %-8s %-36s %-7s %8s %7s %10s %9s\n", "model", "dtype", "shape", "best", "GB/s", "memcpy",
           "vs oneDNN", "vs ATen");
    int any_na = 0, any_note = 0;
    for (size_t i = 0; i < N_SPECS; i++)
        for (int d = 0; d < 3; d++) {
            const struct spec sp = spec_at(i);
            const struct model *md = sp.md;
            uint32_t dt = dtype_order[d];
            if (!(g_model_dtypes & DT_BIT(dt)))
                continue;
            nkb_case cs;
            model_case(&cs, md, dt);
            cs.backward = sp.backward;
            cs.fuse = sp.fuse;
            char shape[48], what[64];
            snprintf(shape, sizeof shape, "%s%s", md->name, case_suffix(&cs));
            spec_what(what, sizeof what, &sp);
            long best = -1;
            double best_bps = 0;
            int best_impl = -1;
            for (int im = IMPL_SCALAR; im <= IMPL_NEON; im++) {
                char name[96];
                model_row_name(name, sizeof name, md, &cs, (enum impl)im);
                long r = find_result(name);
                double bps;
                if (r < 0 || nkb_result_skipped((size_t)r) ||
                    !nkb_result_counter((size_t)r, "bytes_per_second", &bps))
                    continue;
                if (bps > best_bps) {
                    best_bps = bps;
                    best = r;
                    best_impl = im;
                }
            }
            if (best < 0) {
                printf("%-26s %-8s %-36s %-7s\n", shape, dtype_tag(&cs), what, "(not run)");
                continue;
            }
            double ratio = 0;
            nkb_result_counter((size_t)best, "memcpy_ratio", &ratio);
            char dn[32], at[32];
            ratio_cell(dn, sizeof dn, best, "vs_onednn", IMPL_ONEDNN, md, &cs);
            ratio_cell(at, sizeof at, best, "vs_aten", IMPL_ATEN, md, &cs);
            any_na |= !strcmp(dn, "n/a") || !strcmp(at, "n/a") || !strcmp(dn, "FAILED");
            any_note |= strchr(dn, '*') || strchr(at, '*');
            printf("%-26s %-8s %-36s %-7s %8.2f %7.2f %10s %9s\n", shape, dtype_tag(&cs), what,
                   impl_names[best_impl], best_bps / 1e9, ratio, dn, at);
        }
    if (any_na) {
        printf("\nn/a: no time of the library for the case, because\n");
        print_reasons(0);
    }
    if (any_note) {
        printf("\n*: the library ran the case its own way\n");
        print_reasons(1);
    }
}

/* ------------------------------------------------------------------------ */

static int opt_value(const char *arg, const char *name, const char **val)
{
    size_t n = strlen(name);
    if (strncmp(arg, name, n) || arg[n] != '=')
        return 0;
    *val = arg + n + 1;
    return 1;
}

/* "f32,bf16,f16" (any subset, any order) -> DT_BIT mask; 0 on an unknown name */
static unsigned parse_dtypes(const char *v)
{
    unsigned mask = 0;
    while (*v) {
        size_t n = strcspn(v, ",");
        int found = 0;
        for (int k = 0; k < 3; k++) {
            const char *name = dtype_name(dtype_order[k]);
            if (strlen(name) == n && !strncmp(v, name, n)) {
                mask |= DT_BIT(dtype_order[k]);
                found = 1;
            }
        }
        if (!found)
            return 0;
        v += n + (v[n] == ',');
    }
    return mask;
}

static void usage(void)
{
    fprintf(stderr,
            "usage: normkit-bench [--models] [--sweep] [--quick] [--table] [--min-time=S]\n"
            "                     [--dtype=f32,bf16,f16] [--param-dtype=f32|x]\n"
            "                     [--train-batch=N] [--max-mb=MB] [--benchmark_* flags]\n"
            "  --models       model shapes with memcpy, oneDNN and ATen rows\n"
            "  --sweep        channels x spatial sweep of every operator and layout\n"
            "                 (neither: both)\n"
            "  --quick        2x2 sweep, min time 0.02 s (about a minute in all)\n"
            "  --table        per-benchmark lines to stderr, headline table to stdout\n"
            "  --dtype=LIST   element types of x and y, comma-separated (default: f32,bf16,f16\n"
            "                 for the model shapes, f32 for the sweep; given: both)\n"
            "  --param-dtype  weight and bias: f32 (default, PyTorch's mixed precision) or\n"
            "                 x (the type of x, as a model converted with .to(dtype))\n"
            "  --min-time=S   minimum time per benchmark (default: Google Benchmark's)\n"
            "  --train-batch  BatchNorm training batch of the sweep (default 8)\n"
            "  --max-mb       skip sweep cells whose x + y exceed this (default 1024)\n"
            "  --threads=T    normkit on a T-thread pool (0: every online CPU), wall-clock,\n"
            "                 against the T-thread memcpy; oneDNN/ATen rows at 1 thread only\n");
}

int main(int argc, char **argv)
{
    int models_on = 0, sweep_on = 0, quick = 0, table = 0;
    int out = 1;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v;
        if (!strcmp(a, "--models"))
            models_on = 1;
        else if (!strcmp(a, "--sweep"))
            sweep_on = 1;
        else if (!strcmp(a, "--quick"))
            quick = 1;
        else if (!strcmp(a, "--table"))
            table = 1;
        else if (opt_value(a, "--min-time", &v))
            g_min_time = strtod(v, NULL);
        else if (opt_value(a, "--train-batch", &v))
            g_train_batch = strtoll(v, NULL, 10);
        else if (opt_value(a, "--max-mb", &v))
            g_max_mb = strtoll(v, NULL, 10);
        else if (opt_value(a, "--threads", &v))
            g_threads = atoi(v);
        else if (opt_value(a, "--dtype", &v)) {
            g_model_dtypes = g_sweep_dtypes = parse_dtypes(v);
            if (!g_model_dtypes) {
                fprintf(stderr, "normkit-bench: --dtype=%s: a comma-separated list of f32, bf16, f16\n", v);
                return 2;
            }
        } else if (opt_value(a, "--param-dtype", &v)) {
            if (strcmp(v, "f32") && strcmp(v, "x")) {
                fprintf(stderr, "normkit-bench: --param-dtype=%s: f32 or x\n", v);
                return 2;
            }
            g_param_x = !strcmp(v, "x");
        }
        else if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage();
            return 0;
        } else
            argv[out++] = argv[i]; /* Google Benchmark's */
    }
    argc = out;
    argv[argc] = NULL;
    if (!models_on && !sweep_on)
        models_on = sweep_on = 1;
    if (quick && g_min_time == 0)
        g_min_time = 0.02;
    if (g_min_time > 0)
        g_ref_time = g_min_time < 0.1 ? (g_min_time > 0.02 ? g_min_time : 0.02) : 0.1;
    if (g_train_batch < 2)
        g_train_batch = 2;
    if (g_threads != 1) {
        if (nk_threadpool_create(g_threads, &g_pool) != NK_OK) {
            fprintf(stderr, "normkit-bench: --threads=%d: %s\n", g_threads, nk_last_error());
            return 2;
        }
        g_threads = (int)g_pool->num_threads(g_pool->ctx);
        g_ctx.pool = g_pool;
        nkb_use_real_time(g_threads > 1);
    }

    nkb_init(&argc, argv);
    if (argc > 1) {
        fprintf(stderr, "normkit-bench: unknown argument %s\n", argv[1]);
        usage();
        return 2;
    }
    fprintf(stderr, "normkit-bench: normkit %s, %d thread(s), ISA default %s; oneDNN %s, ATen %s\n",
            nk_version(), g_threads, nk_isa_name(nk_get_isa()),
#if NKB_HAVE_ONEDNN
            nkb_onednn_version(),
#else
            "not built",
#endif
#if NKB_HAVE_ATEN
            nkb_aten_version()
#else
            "not built"
#endif
    );
    if (models_on)
        register_models();
    if (sweep_on)
        register_sweep(quick);
    nkb_run(table);
    if (table && models_on)
        print_table();
    nkb_shutdown();
    nk_threadpool_destroy(g_pool);
    free(g_buf.x);
    free(g_buf.y);
    if (g_failures) {
        fprintf(stderr, "normkit-bench: %d row(s) FAILED the check of their results\n", g_failures);
        return 1;
    }
    return 0;
}
