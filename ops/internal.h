/* Shared by the operators in ops/: error reporting, validation, statistics. */
#ifndef NK_OPS_INTERNAL_H
#define NK_OPS_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dispatch/dispatch.h"
#include "dispatch/status.h"
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
nk_status nk_check_io(const char *fn, const float *x, const float *y, size_t total, double eps,
                      const nk_options *opts, nk_epilogue *ep);
/* The checks every (x, shape, y, eps, opts) operator starts with; fills the
 * element count and the epilogue (stream when the output outlives the cache). */
nk_status nk_check_tensor_args(const char *fn, const float *x, const nk_shape *s, const float *y,
                               double eps, const nk_options *opts, size_t *total, nk_epilogue *ep);
nk_status nk_check_running(const nk_running_stats *rs, const char *fn, bool need_momentum);
nk_status nk_check_product(int64_t a, int64_t b, const char *fn, size_t *out);

/* Writes "[n, c]" or "[n, c, spatial]" into buf. */
void nk_format_size(char *buf, size_t len, int64_t a, int64_t b, int64_t spatial);

/* Moments of rows with the current kernels, fp64 recompute when fp32 overflowed. */
void nk_rows_moments(const nk_kernels *k, const float *x, size_t rows, size_t len, size_t stride,
                     nk_moments *out);
void nk_cols_moments(const nk_kernels *k, const float *x, size_t rows, size_t cols, size_t stride,
                     nk_moments *acc);

/*
 * Per-channel data as a matrix of columns: `rows` rows of `width` floats,
 * row r at x + r * width, column j belonging to channel (j % width) / rep.
 *   channels-last (N, S, C):          rows = N * S, width = C,     rep = 1
 *   channels-first (N, C, S), small S: rows = N,     width = C * S, rep = S
 * The column moments and normalize kernels then run on whole rows however
 * short the spatial extent; narrow rows are widened to full vectors.
 */
typedef struct nk_colview {
    size_t rows, width, rep;
} nk_colview;

/* Channels-first tensors whose spatial extent is below this use the column
 * view for BatchNorm; longer (n, c) rows run the row kernels. */
#ifndef NK_COLVIEW_MAX_SPATIAL
#  define NK_COLVIEW_MAX_SPATIAL 32
#endif

/* The column view of a per-channel (BatchNorm) shape; false when the row
 * kernels are the better fit (channels-first with long rows). */
bool nk_bn_colview(const nk_shape *s, nk_colview *v);
/* Channels per block so that a block has at most NK_CBLK columns (>= 1). */
size_t nk_colview_block(const nk_colview *v);
/* Merges the moments of channels [c0, c0 + nc) into acc[0 .. nc). */
void nk_colview_moments(const nk_kernels *k, const float *x, const nk_colview *v, size_t c0,
                        size_t nc, nk_moments *acc);
/* Normalizes channels [c0, c0 + nc) given m, a, b per channel (indexed from c0). */
void nk_colview_normalize(const nk_kernels *k, const float *x, float *y, const nk_colview *v,
                          size_t c0, size_t nc, const float *m, const float *a, const float *b,
                          const nk_epilogue *ep);

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

/* Output size in bytes above which stores may bypass the cache. */
size_t nk_stream_threshold(void);

/* nk_batch_norm_infer with fn naming the caller's entry point in messages. */
nk_status nk_batch_norm_infer_as(const char *fn, const float *x, const nk_shape *shape,
                                 const float *weight, const float *bias, const float *running_mean,
                                 const float *running_var, double eps, float *y,
                                 const nk_options *opts);

/* momentum after bumping num_batches_tracked when cumulative (BatchNorm rule). */
double nk_effective_momentum(nk_running_stats *rs);

#endif
