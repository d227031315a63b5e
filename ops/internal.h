/* Shared by the operators in ops/: error reporting, validation, statistics. */
#ifndef NK_OPS_INTERNAL_H
#define NK_OPS_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dispatch/dispatch.h"
#include "dispatch/status.h"
#include "ops/driver.h"
#include "normkit.h"

/* Channel block for per-column parameter arrays kept on the stack. */
#define NK_CBLK 256


/* The size rule of every entry point: the product of the extents, each
 * zero counted as 1, is at most PTRDIFF_MAX / elem_size. So a tensor's
 * element count, and every per-channel, per-group or per-row array derived
 * from its extents, fits in memory on any target (32-bit ones included),
 * and the answer does not depend on the order of the extents. */
bool nk_extents_fit(const int64_t *ext, int count, size_t elem_size);
/* Element count of shape, checked: extents >= 0, c >= 1, the size rule. */
nk_status nk_check_shape(const nk_shape *shape, const char *fn, size_t *total);
nk_status nk_check_eps(double eps, const char *fn);
/* Validates opts (NULL = defaults) and fills the kernel epilogue. */
nk_status nk_check_options(const nk_options *opts, const char *fn, nk_epilogue *ep);
/* x / y present unless empty, eps, options; fills the epilogue. */
nk_status nk_check_io(const char *fn, const void *x, const void *y, size_t total, double eps,
                      const nk_options *opts, nk_epilogue *ep);
/* The checks every (x, shape, y, eps, opts) operator starts with; fills the
 * element count and the epilogue (stream when the output outlives the cache). */
nk_status nk_check_tensor_args(const char *fn, const float *x, const nk_shape *s, const float *y,
                               double eps, const nk_options *opts, size_t *total, nk_epilogue *ep);
nk_status nk_check_running(const nk_running_stats *rs, const char *fn, bool need_momentum);
nk_status nk_check_product(int64_t a, int64_t b, const char *fn, size_t *out);

/*
 * One validated call: extents, element strides (the innermost extent is
 * contiguous; see nk_tensor_desc), buffers, epilogue and execution.
 *   channels-first (n, c, s) at n * xs0 + c * xs1 + s
 *   channels-last  (n, s, c) at n * xs0 + s * xs1 + c
 */
typedef struct nk_call {
    const char *fn;
    size_t n, c, s;
    int layout;
    size_t xs0, xs1, ys0, ys1;
    size_t total;
    const void *x; /* elements of k->dtype */
    void *y;
    unsigned pdt;  /* weight and bias: NK_DTYPE_F32 or k->dtype */
    nk_epilogue ep;
    nk_exec ex;
    const nk_kernels *k; /* the current ISA's table for the call's dtype */
} nk_call;

/* Bytes of one element of a table's dtype, and element i of x / y. */
static inline size_t nk_esize(unsigned dtype) { return dtype == NK_DTYPE_F32 ? 4u : 2u; }
static inline const void *nk_xat(const nk_kernels *k, const void *x, size_t i)
{
    return (const char *)x + i * nk_esize(k->dtype);
}
static inline void *nk_yat(const nk_kernels *k, void *y, size_t i)
{
    return (char *)y + i * nk_esize(k->dtype);
}

/* Weight and bias of an _ex call as fp32 arrays of c entries: the caller's
 * arrays for NK_DTYPE_F32, else converted (exactly) once per call into the
 * call's stack up to NK_PARAM_STACK entries each. Longer 16-bit arrays:
 * with `chunked` (an operator that converts slices where it uses them:
 * LayerNorm, RMSNorm) w and b are NULL and w16, b16 the caller's arrays;
 * else one heap buffer (NK_ERR_OUT_OF_MEMORY when there is none). NULL
 * stays NULL. */
#define NK_PARAM_STACK 2048
typedef struct nk_params {
    const float *w, *b;
    const void *w16, *b16; /* chunked, long 16-bit arrays only */
    float *heap;
    float st[2][NK_PARAM_STACK];
} nk_params;
nk_status nk_call_params(const nk_call *cl, const void *weight, const void *bias, bool chunked,
                         nk_params *p);
void nk_params_free(nk_params *p);
/* n entries from i0 of a parameter array of k's dtype into out, exact
 * (the table's widen kernel). */
void nk_params_to_f32(const nk_kernels *k, const void *p, size_t i0, size_t n, float *out);

/* The functions without _ex: nk_check_tensor_args on a dense tensor, run in
 * the calling thread. */
nk_status nk_call_from_shape(nk_call *cl, const char *fn, const float *x, const nk_shape *s,
                             const float *y, double eps, const nk_options *opts);
/* (rows, cols) of LayerNorm / RMSNorm without _ex. */
nk_status nk_call_from_rows(nk_call *cl, const char *fn, const float *x, int64_t rows,
                            int64_t cols, const float *y, double eps, const nk_options *opts);
/* The _ex functions: context, descriptor (y == NULL allowed when !has_y). */
nk_status nk_call_from_desc(nk_call *cl, const char *fn, const nk_context *ctx,
                            const nk_tensor_desc *d, const void *x, const void *y, double eps,
                            bool has_y);
/* The bytes of a caller's struct from `known` to `caller` (its struct_size)
 * are 0: fields of a newer header that this library cannot honour are not set. */
bool nk_tail_zero(const void *p, size_t caller, size_t known);
/* One tensor's strides (name: "desc->x", "fusion->skip", ...): 0 = dense;
 * else no two rows overlap and the last element is addressable. n samples
 * of mid rows of inner elements; out: the strides in elements. */
nk_status nk_check_strides(const char *fn, const char *name, const int64_t in[2], size_t n,
                           size_t mid, size_t inner, size_t total, size_t out[2]);
/* A caller's context (NULL: the calling thread), checked and copied with the
 * fields past the caller's struct_size zero. */
nk_status nk_check_context(const char *fn, const nk_context *ctx, nk_context *out);
/* Both tensors dense. */
bool nk_call_dense(const nk_call *cl);
/* The (n, c, spatial, layout) of a call as an nk_shape. */
nk_shape nk_call_shape(const nk_call *cl);
/* Runs pl with scratch from the calling thread's stack. */
void nk_call_run(nk_call *cl, const nk_plan *pl);

/* Writes "[n, c]" or "[n, c, spatial]" into buf. */
void nk_format_size(char *buf, size_t len, int64_t a, int64_t b, int64_t spatial);

/* Moments of rows with the current kernels, fp64 recompute when fp32 overflowed. */
void nk_rows_moments(const nk_kernels *k, const void *x, size_t rows, size_t len, size_t stride,
                     nk_moments *out);
void nk_cols_moments(const nk_kernels *k, const void *x, size_t rows, size_t cols, size_t stride,
                     nk_moments *acc);

/*
 * Rows of a two-level grid: row r at (r / per) * s0 + (r % per) * s1 in x
 * (ys0, ys1 in y). Kernels take runs of equally strided rows.
 */
typedef struct nk_grid {
    size_t per, xs0, xs1, ys0, ys1;
} nk_grid;

static inline size_t nk_grid_x(const nk_grid *g, size_t r)
{
    return (r / g->per) * g->xs0 + (r % g->per) * g->xs1;
}
static inline size_t nk_grid_y(const nk_grid *g, size_t r)
{
    return (r / g->per) * g->ys0 + (r % g->per) * g->ys1;
}
/* End (at most r1) of the run of equally strided rows from r; its strides. */
static inline size_t nk_grid_run(const nk_grid *g, size_t r, size_t r1, size_t *xs, size_t *ys)
{
    if (g->per == 1) {
        *xs = g->xs0, *ys = g->ys0;
        return r1;
    }
    *xs = g->xs1, *ys = g->ys1;
    if (g->xs0 == g->per * g->xs1 && g->ys0 == g->per * g->ys1)
        return r1;
    size_t e = (r / g->per + 1) * g->per;
    return e < r1 ? e : r1;
}

/*
 * Per-channel data as a matrix of columns: `rows` rows of `width` floats,
 * column j belonging to channel (j % width) / rep; rows on the grid g.
 *   channels-last (N, S, C):           rows = N * S, width = C,     rep = 1, per = S
 *   channels-first (N, C, S), small S: rows = N,     width = C * S, rep = S, per = N
 * The column moments and normalize kernels then run on whole rows however
 * short the spatial extent; narrow contiguous rows are widened to full
 * vectors (several rows read as one).
 */
typedef struct nk_cv {
    const nk_kernels *k;
    const void *x; /* elements of k->dtype */
    void *y;
    size_t rows, width, rep;
    nk_grid g;
    bool contiguous; /* row r at r * width in x and y */
} nk_cv;

/* Channels-first tensors whose spatial extent is below this use the column
 * view for BatchNorm; longer (n, c) rows run the row kernels. */
#ifndef NK_COLVIEW_MAX_SPATIAL
#  define NK_COLVIEW_MAX_SPATIAL 32
#endif

/* The column view of a BatchNorm call; false when the row kernels are the
 * better fit (channels-first with long rows, or with padded channels). */
bool nk_cv_for_bn(const nk_call *cl, nk_cv *cv);
/* The column view of sample n of a channels-last call (InstanceNorm, GroupNorm). */
void nk_cv_for_sample(const nk_call *cl, size_t n, nk_cv *cv);
/* Channel block granularity: whole vectors of columns where possible. */
size_t nk_cv_align(const nk_cv *cv);
/* Columns of the parameter arrays of a block of nc channels. */
size_t nk_cv_cols(const nk_cv *cv, size_t nc);
/* Per-channel m, a, b of channels [c0, c0 + nc) -> per-column arrays of
 * nk_cv_cols(cv, nc) entries. */
void nk_cv_expand(const nk_cv *cv, size_t nc, const float *m, const float *a, const float *b,
                  float *cm, float *ca, float *cb);
/* Merges the moments of channels [c0, c0 + nc) over rows [r0, r1) into acc[0 .. nc). */
void nk_cv_moments(const nk_cv *cv, size_t r0, size_t r1, size_t c0, size_t nc, nk_moments *acc);
/* Pieces of rows of a column plan (shape only): about NK_PIECE_FLOATS each,
 * and few enough that `parts` partial moments per piece fit the scratch of
 * one wave; with partial moments at least NK_CV_PIECE_ROWS rows a piece,
 * without (parts == 0, inference) at least one. */
size_t nk_cv_pieces(const nk_cv *cv, size_t parts);
/* Channels per block of a column plan whose wave needs `per_channel` scratch
 * bytes per channel: at most max_ch (and C), as many as NK_STACK_SCRATCH
 * holds, in whole vectors of columns. */
size_t nk_cv_block(const nk_cv *cv, const nk_plan *pl, size_t C, size_t max_ch);
/* Channels per block of a column plan whose groups are not split into
 * pieces: blocks that run fused (their parameters fit a task's stack) and
 * hold about NK_PIECE_FLOATS floats each, so that mid-sized tensors spread
 * over a pool. Shape only. */
size_t nk_cv_fused_channels(const nk_cv *cv, size_t C);
/* Floats of a training tensor from which its column plan is split into
 * blocks of channels when its rows are too few to cut. */
#ifndef NK_CV_SPLIT_FLOATS
#  define NK_CV_SPLIT_FLOATS ((size_t)1 << 16)
#endif
/* Normalizes rows [r0, r1) of channels [c0, c0 + nc) with the expanded arrays. */
void nk_cv_normalize(const nk_cv *cv, size_t r0, size_t r1, size_t c0, size_t nc, const float *cm,
                     const float *ca, const float *cb, const nk_epilogue *ep);

/* 1 / sqrt(max(var, 0) + eps) (LayerNorm / GroupNorm: NaN path for eps == 0 kept). */
double nk_rstd(double var, double eps);

/*
 * Rows (or groups) per block of the fused statistics + normalize passes. A
 * block of about NK_BLOCK_FLOATS floats is still in L1 when the normalize
 * pass re-reads it, so each element is read from memory (or L2/L3) once and
 * the second read is nearly free; longer rows go one per block and are
 * re-read from L2. Measured with normkit-speed (tools/speed.c).
 */
#ifndef NK_BLOCK_FLOATS
#  define NK_BLOCK_FLOATS 4096
#endif
static inline size_t nk_row_block(size_t len)
{
    size_t rb = (size_t)NK_BLOCK_FLOATS / (len ? len : 1);
    return rb < 1 ? 1 : rb > 64 ? 64 : rb;
}

/* Rows per block of the plans on the fused short-row kernel (norm_short):
 * one kernel call per run of rows, by shape only. */
#define NK_SHORT_BLOCK NK_MAX_BGROUPS
/* The finalize of those plans: the kernel computes the statistics and the
 * output together, so there is nothing to finalize. */
static inline void nk_short_finalize(void *op, size_t b, const nk_moments *mo, void *par)
{
    (void)op, (void)b, (void)mo, (void)par;
}

/* Output size in bytes above which stores may bypass the cache. */
size_t nk_stream_threshold(void);
/* The same for calls that run on a pool of several threads (larger). */
size_t nk_stream_threshold_pool(void);

/* BatchNorm inference of a validated call (InstanceNorm without input
 * statistics runs it too). */
nk_status nk_bn_infer_call(nk_call *cl, const float *weight, const float *bias,
                           const float *running_mean, const float *running_var, double eps);

/* A group made of rows of len floats, row j at x + j * stride, seen as one
 * sequence of positions: moments of positions [lo, hi) merged in order into
 * acc (the kernels' chunking per row, 64 rows per call); normalize of the
 * same positions with one m, a, b. */
void nk_segs_moments(const nk_kernels *k, const void *x, size_t len, size_t stride, size_t lo,
                     size_t hi, nk_moments *acc);
void nk_segs_normalize(const nk_kernels *k, const void *x, void *y, size_t len, size_t xstride,
                       size_t ystride, size_t lo, size_t hi, float m, float a, float b,
                       const nk_epilogue *ep);

/* LayerNorm's (rms false) or RMSNorm's (rms true) per-row statistics from
 * the moments of n rows: m[i] the mean (0 for RMSNorm), s[i] 1 / sqrt(var +
 * eps) (1 / rms); copied to save_mean / save_inv where not NULL (RMSNorm
 * leaves save_mean). */
void nk_ln_stats(const nk_moments *mo, size_t n, bool rms, double eps, float *m, float *s,
                 float *save_mean, float *save_inv);

/* LayerNorm (rms false) or RMSNorm (rms true) of a validated channels-first
 * call: over c at every (n, s), weight and bias (the call's param dtype)
 * per channel, save_mean / save_inv of n * s entries, index n * s + s
 * (ops/layer_norm_cf.c). */
nk_status nk_ln_channels_first(nk_call *cl, const void *weight, const void *bias, double eps,
                               float *save_mean, float *save_inv, bool rms);

/* momentum after bumping num_batches_tracked when cumulative (BatchNorm rule). */
double nk_effective_momentum(nk_running_stats *rs);

#endif
