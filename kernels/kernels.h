/*
 * Internal kernel contract. Every operator in ops/ is a composition of these
 * two families on a canonical view of the tensor:
 *   moments:          count/mean/M2 of contiguous rows, or of columns across rows
 *   normalize-scale:  y = act((x - m) * a + b) with m, a, b per row or per column
 * One table per (ISA, element type). The vector ISAs compile the algorithms
 * of kernels/simd (one file per family) against their vocabulary header
 * (kernels/simd/nk_simd.h); a new ISA supplies such a header, or files of
 * its own, and fills a table.
 *
 * Element types (the table's dtype, NK_DTYPE_* of normkit.h): x and y are
 * arrays of fp32, fp16 (IEEE binary16) or bf16, stored as float or uint16_t
 * (kernels/dtype.h), always of the same type, which is the table's; strides
 * and lengths count elements. Everything else (m, a, b, g, s, mean_out,
 * rstd_out, the moments and sums) is fp32 / fp64 whatever the dtype. Loads
 * widen exactly to fp32, the arithmetic is the fp32 kernels', and stores
 * round the fp32 result once to the element type (round to nearest even,
 * kernels/cvt.h). So the statistics keep the fp32 contracts below (the
 * inputs are exactly representable in fp32), and an output of a 16-bit type
 * is its fp32 result rounded: the vector and scalar kernels of one dtype
 * round fp32 values that lie within the fp32 bound of each other, and so
 * differ by at most that bound plus 1 ulp of the dtype (1 ulp for the
 * relative fp32 bounds: two fp32 values much closer than an ulp of the
 * dtype round to the same or to adjacent values).
 */
#ifndef NK_KERNELS_KERNELS_H
#define NK_KERNELS_KERNELS_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "nk_config.h"
#include "normkit.h"

/* Fused epilogue of the normalize kernels. */
typedef struct nk_epilogue {
    int act;     /* nk_activation */
    float alpha; /* LeakyReLU slope */
    int stream;  /* 1: output is not re-read soon; non-temporal stores allowed */
} nk_epilogue;

/*
 * Moments of `rows` rows of `len` contiguous elements; row r starts at
 * x + r * stride. out[r] = {len, mean, m2}. len >= 1.
 * Accuracy contract: chunked two-pass (fp32 inside chunks of at most a few
 * hundred elements per lane, fp64 Chan merge across chunks); a constant row
 * gives its value as mean and m2 == 0 exactly. Non-finite results on finite
 * input (fp32 overflow of squares) are recomputed in fp64 by the caller.
 */
typedef void (*nk_moments_rows_fn)(const void *x, size_t rows, size_t len, size_t stride,
                                   nk_moments *out);

/*
 * Column moments: `rows` rows of `cols` contiguous elements, row r at
 * x + r * stride. Merges (Chan) the moments of column c into acc[c];
 * an acc entry with count 0 is empty. rows >= 1, cols >= 1.
 * Accuracy contract: M2 within about 6 gamma_k M2 and the mean within
 * u |mean| + gamma_k sigma (k = 64 rows with AVX-512, 128 with AVX2, 256
 * with NEON: the longest segment), whatever the order of the rows (the vector kernels reduce a two-pass head, then one
 * pass per segment shifted by the running mean: kernels/simd/moments.c);
 * a constant column gives its value and M2 == 0 exactly. Columns whose
 * fp32 sums are not finite (an fp32 overflow of a square, or non-finite
 * input) are recomputed by the kernel with nk_moments_f64 before they are
 * merged, the same on every ISA.
 */
typedef void (*nk_moments_cols_fn)(const void *x, size_t rows, size_t cols, size_t stride,
                                   nk_moments *acc);

/* out[r] = sum of x^2 over row r (fp32 chunks, fp64 across chunks). */
typedef void (*nk_sumsq_rows_fn)(const void *x, size_t rows, size_t len, size_t stride,
                                 double *out);

/*
 * Row normalize: for r < rows, i < len:
 *   y[r * ystride + i] = act((x[r * xstride + i] - m[r * ps]) * a[r * ps] + b[r * ps])
 * ps (parameter stride) is 0 (one m, a, b for all rows) or 1.
 */
typedef void (*nk_norm_rows_fn)(const void *x, void *y, size_t rows, size_t len,
                                size_t xstride, size_t ystride, const float *m, const float *a,
                                const float *b, size_t ps, const nk_epilogue *ep);

/*
 * Column normalize: y[r][c] = act((x[r][c] - m[c]) * a[c] + b[c]), c < cols.
 */
typedef void (*nk_norm_cols_fn)(const void *x, void *y, size_t rows, size_t cols,
                                size_t xstride, size_t ystride, const float *m, const float *a,
                                const float *b, const nk_epilogue *ep);

/*
 * LayerNorm / RMSNorm normalize, per-row statistics and per-column affine:
 *   y[r][i] = act(((x[r][i] - m[r]) * s[r]) * g[i] + b[i])
 * m == NULL means 0 (RMSNorm), g == NULL means 1, b == NULL means 0.
 */
typedef void (*nk_norm_affine_fn)(const void *x, void *y, size_t rows, size_t len,
                                  size_t xstride, size_t ystride, const float *m, const float *s,
                                  const float *g, const float *b, const nk_epilogue *ep);

/*
 * Column sums of squares: acc[c] += sum over r < rows of x[r][c]^2 for
 * c < cols, row r at x + r * stride; rows >= 1. fp32 sums inside chunks of
 * NK_SUMSQ_COLS_CHUNK rows (each column's rows in order), added to acc in
 * fp64 chunk by chunk. A chunk column whose fp32 sum is not finite (an fp32
 * overflow of a square, or non-finite input) is summed again in fp64, rows
 * in order, by nk_sumsq_col_f64, the same on every ISA.
 */
#define NK_SUMSQ_COLS_CHUNK 64
typedef void (*nk_sumsq_cols_fn)(const void *x, size_t rows, size_t cols, size_t stride,
                                 double *acc);

/*
 * Channels-first LayerNorm / RMSNorm normalize, per-column statistics and
 * per-row affine (a sample of an (N, C, S) tensor is C rows of S columns):
 *   y[r][c] = act(((x[r][c] - m[c]) * s[c]) * g[r] + b[r])
 * m == NULL means 0 (RMSNorm), g == NULL means 1, b == NULL means 0. The
 * expression of norm_affine with rows and columns swapped.
 */
typedef void (*nk_norm_cols_affine_fn)(const void *x, void *y, size_t rows, size_t cols,
                                       size_t xstride, size_t ystride, const float *m,
                                       const float *s, const float *g, const float *b,
                                       const nk_epilogue *ep);

/*
 * LayerNorm or RMSNorm (flags & NK_SHORT_RMS) of `rows` rows of len elements,
 * 1 <= len <= NK_SHORT_ROW, statistics and output in one call; row r at
 * x + r * xstride, its output at y + r * ystride (x == y with equal strides
 * allowed):
 *   y[r][i] = act(((x[r][i] - m) * s) * G + B)
 *   LayerNorm: m = mean, s = 1 / sqrt(M2 / len + eps)
 *   RMSNorm:   m = 0,    s = 1 / sqrt(sum(x^2) / len + eps)
 * The affine is per column, G = g[i] and B = b[i] (g, b hold len floats;
 * LayerNorm, RMSNorm), or with flags & NK_SHORT_ROW_AFFINE per row,
 * G = g[r] and B = b[r] (g, b hold `rows` floats; InstanceNorm, whose rows
 * are the (n, c) channels of a sample and g, b the channels' weight and
 * bias). Either way g == NULL means 1, b == NULL means 0, and the output is
 * the same expression, so the bound below holds for both; mean_out[r] and
 * rstd_out[r] receive m and s when non-NULL. The kernels reduce rows in
 * blocks (one row per vector lane), but each row's arithmetic depends on
 * that row (and, per row, its g[r], b[r]) alone: its
 * result does not depend on the other rows or on how a caller splits them
 * into calls, and is deterministic per ISA.
 *
 * Algorithm and accuracy, fp32 throughout (u = 2^-24, n = len, k the depth
 * of the kernel's sums: n - 1 for the scalar kernel, at most 17 for the
 * vector ones; gamma_j = j u / (1 - j u), gamma_{n+6} <= 4.2e-6 for
 * n <= 64; barring underflow):
 *   LayerNorm in two passes: with K = x[0], m = K + sum(x - K) / n, then
 *   M2 = sum((x - m)^2). With sigma^2 = M2* / n and A = mean(|x - K|)
 *   (at most sqrt(n) sigma, about sigma for ordinary data):
 *     |m - mean*|   <= u |mean*| + gamma_{k+4} A
 *     |M2 - M2*|    <= (gamma_{k+3} + 1.01 e^2) M2*,  e = |m - mean*| / sigma
 *     |s - s*| / s* <= gamma_{k+6} / 2 + 0.51 e^2 + 2u
 *   e^2 is the fp32 rounding of the mean itself (below 4e-7 while
 *   |mean| / sigma < 1e4). A constant row gives x - K = 0 and x - m = 0
 *   exactly: m is the value, M2 is 0 and y == b whenever eps > 0.
 *   RMSNorm: |s - s*| / s* <= gamma_{k+4} / 2 + 2u.
 * Rows whose fp32 statistics are not finite (an fp32 overflow of a sum or
 * a square, or non-finite input) are recomputed in fp64 by
 * nk_short_stats_f64, the same on every ISA.
 */
#define NK_SHORT_ROW 64
/* flags of nk_norm_short_fn */
#define NK_SHORT_RMS 1u        /* RMSNorm: m = 0 */
#define NK_SHORT_ROW_AFFINE 2u /* g[r], b[r] per row instead of g[i], b[i] per column */
typedef void (*nk_norm_short_fn)(const void *x, void *y, size_t rows, size_t len,
                                 size_t xstride, size_t ystride, const float *g, const float *b,
                                 float eps, unsigned flags, float *mean_out, float *rstd_out,
                                 const nk_epilogue *ep);

/*
 * Inference scale of n channels: a[c] = (1 / sqrt(var[c] + eps)) * w[c] in
 * fp32 (w == NULL: the reciprocal alone). Every operation is IEEE, correctly
 * rounded, so each ISA gives the scalar result bit for bit; it is also the
 * expression PyTorch evaluates for BatchNorm inference.
 */
typedef void (*nk_inv_scale_fn)(const float *var, const float *w, float eps, size_t n, float *a);

/*
 * Training statistics of n channels from their moments, fp64:
 * var[c] = m2 / count (0 for an empty channel) and
 * inv[c] = 1 / sqrt(var[c] + eps), 0 where var[c] + eps == 0 (PyTorch's rule
 * for a constant channel with eps == 0). Correctly rounded operations: every
 * ISA gives the scalar result bit for bit.
 */
typedef void (*nk_inv_std_fn)(const nk_moments *mo, size_t n, double eps, double *var,
                              double *inv);

/*
 * BatchNorm training finalize of n channels from their moments (every
 * pointer, those of f included, at the first of the n channels):
 *   var = count > 0 ? m2 / count : 0,  inv = nk_inv_std1(var, eps)  (fp64)
 *   m[c] = (float)mean, a[c] = (float)(weight[c] * inv) ((float)inv without
 *   weight), b[c] = bias[c] (0 without bias); save_mean[c] = m[c] and
 *   save_invstd[c] = (float)inv where those are non-NULL;
 *   with rmean (and rvar): v = unbiased ? m2 / (count - 1) : var and
 *   rmean[c] = (float)(momentum * mean + (1 - momentum) * rmean[c]),
 *   rvar[c] likewise with v, both left as they are where count == 0.
 * Every operation is IEEE, correctly rounded and uncontracted, so each ISA
 * gives the scalar result (nk_bn_finalize1) bit for bit.
 */
typedef struct nk_bn_fin {
    double eps, momentum;
    int unbiased;
    const float *weight, *bias;
    float *save_mean, *save_invstd, *rmean, *rvar;
} nk_bn_fin;
typedef void (*nk_bn_finalize_fn)(const nk_moments *mo, size_t n, const nk_bn_fin *f, float *m,
                                  float *a, float *b);

/* n elements of the table's dtype to fp32 (exact): 16-bit weight and bias
 * widened for the fp32 arithmetic. */
typedef void (*nk_widen_fn)(const void *x, size_t n, float *out);

/*
 * Backward kernels. g is dy masked by the forward's activation, read from
 * the forward output y: NK_ACT_RELU g = y > 0 ? dy : 0, NK_ACT_LEAKY_RELU
 * g = y > 0 ? dy : alpha * dy (nk_bwd_g); any other ep->act g = dy and y is
 * not read (may be NULL). x and dx rows are at xstride, y and dy rows at
 * ystride (dx may be dy with equal strides: every element is read before it
 * is written). Sums are fp32 inside chunks of NK_BWD_CHUNK elements of a
 * row (rows kernels) or NK_BWD_CHUNK_ROWS rows (column kernels) and fp64
 * across chunks; the chunking depends on the arguments only.
 *
 * Row sums (written, not accumulated): for r < rows, w == NULL meaning 1,
 *   sg[r]  = sum_i w[i] g[r][i]
 *   sgx[r] = sum_i w[i] g[r][i] (x[r][i] - m[r * ps])       (ps 0 or 1)
 */
#define NK_BWD_CHUNK 256
#define NK_BWD_CHUNK_ROWS 64
typedef void (*nk_bwd_sums_rows_fn)(const void *x, const void *y, const void *dy, size_t rows,
                                    size_t len, size_t xstride, size_t ystride, const float *m,
                                    size_t ps, const float *w, const nk_epilogue *ep, double *sg,
                                    double *sgx);
/*
 * Column sums (accumulated into sg, sgx): for c < cols,
 *   sg[c]  += sum_r g[r][c]
 *   sgx[c] += sum_r g[r][c] (x[r][c] - M) * S
 * M = mr[r] when mr is given, else mc[c], else 0; S = sr[r] when sr is
 * given, else 1 (per-row statistics: LayerNorm's weight gradient).
 */
typedef void (*nk_bwd_sums_cols_fn)(const void *x, const void *y, const void *dy, size_t rows,
                                    size_t cols, size_t xstride, size_t ystride, const float *mc,
                                    const float *mr, const float *sr, const nk_epilogue *ep,
                                    double *sg, double *sgx);
/*
 * Row input gradient, per-row coefficients (index r * ps, ps 0 or 1) and an
 * optional per-column weight w (NULL = 1); ep->stream allows non-temporal
 * stores of dx:
 *   dx[r][i] = fma(k1[r] * w[i], g, fma(k2[r], x[r][i] - m[r], k3[r]))
 */
typedef void (*nk_bwd_dx_rows_fn)(const void *x, const void *y, const void *dy, void *dx,
                                  size_t rows, size_t len, size_t xstride, size_t ystride,
                                  const float *m, const float *k1, const float *k2,
                                  const float *k3, size_t ps, const float *w,
                                  const nk_epilogue *ep);
/*
 * Row input gradient as nk_bwd_dx_rows (ps 1) that also accumulates the
 * rows' per-column parameter-gradient partials, fp32, rows in order:
 *   fa[i] += g[r][i],  fb[i] = fma(g[r][i], (x[r][i] - m[r]) * s[r], fb[i])
 * Lane for lane the arithmetic of nk_bwd_sums_cols over the same rows (one
 * chunk, mr = m, sr = s), so both give the same fp32 partials.
 */
typedef void (*nk_bwd_dx_rows_acc_fn)(const void *x, const void *y, const void *dy, void *dx,
                                      size_t rows, size_t len, size_t xstride, size_t ystride,
                                      const float *m, const float *k1, const float *k2,
                                      const float *k3, const float *s, const float *w,
                                      const nk_epilogue *ep, float *fa, float *fb);
/* Column input gradient, per-column coefficients:
 *   dx[r][c] = fma(k1[c], g, fma(k2[c], x[r][c] - m[c], k3[c])) */
typedef void (*nk_bwd_dx_cols_fn)(const void *x, const void *y, const void *dy, void *dx,
                                  size_t rows, size_t cols, size_t xstride, size_t ystride,
                                  const float *m, const float *k1, const float *k2,
                                  const float *k3, const nk_epilogue *ep);

/*
 * The fused LayerNorm / RMSNorm (nk_layer_norm_fused_ex) stages each block
 * of rows through an fp32 buffer s (dense, rows of len floats): add_rows
 * fills it, the fp32 table's statistics and normalize kernels run on it,
 * and narrow_rows or quant_rows store it.
 *
 * add_rows: for r < rows, i < len (x rows at xstride, skip rows at kstride,
 * sum rows at sumstride, elements of the table's dtype):
 *   s[r * len + i] = (x[r][i] + skip[r][i]) + bias[i]   (fp32, in that order)
 * skip NULL: s = x (+ bias); bias NULL: no bias; sum != NULL receives s
 * rounded to the dtype. sum may be x or skip with the same stride: every
 * element is read before it is written.
 */
typedef void (*nk_add_rows_fn)(const void *x, const void *skip, const float *bias, float *s,
                               void *sum, size_t rows, size_t len, size_t xstride, size_t kstride,
                               size_t sumstride);
/* norm_affine (above) from fp32 rows s (dense, len floats each) into y of
 * the table's dtype: the values of the fp32 table's norm_affine into fp32,
 * rounded once. */
typedef void (*nk_norm_affine_s_fn)(const float *s, void *y, size_t rows, size_t len,
                                    size_t ystride, const float *m, const float *sc,
                                    const float *g, const float *b, const nk_epilogue *ep);
/* y[r][i] = s[r * len + i] rounded to the table's dtype (rows at ystride). */
typedef void (*nk_narrow_rows_fn)(const float *s, void *y, size_t rows, size_t len,
                                  size_t ystride);
/*
 * Quantize rows (fp32 table; the other dtypes' tables share it): for
 * r < rows, i < len, with c = scale[r * ps] (ps 0 or 1):
 *   q[r * qstride + i] = clamp(rne(s[r * len + i] / c) + zp, lo, hi)
 * as a byte (int8 or uint8 by lo, hi), where rne rounds the exact quotient
 * to nearest, ties to even (never a double rounding), NaN gives zp and
 * +-Inf saturate. A scale that is not finite and > 0 gives zp everywhere.
 * -128 <= lo <= zp <= hi <= 255, hi - lo <= 255.
 */
typedef void (*nk_quant_rows_fn)(const float *s, uint8_t *q, size_t rows, size_t len,
                                 size_t qstride, const float *scale, size_t ps, int zp, int lo,
                                 int hi);
/* out[r] = the largest |s[r * len + i]|, i < len, NaN ignored (0 when every
 * element is NaN); exact, so every ISA gives the same value. */
typedef void (*nk_absmax_rows_fn)(const float *s, size_t rows, size_t len, float *out);

/* One element of nk_quant_rows_fn, exactly (fp64 quotient: a quotient of two
 * floats is either a tie of the exact one or at least 2^-25 of its
 * magnitude away from one, far beyond fp64's rounding). */
static inline uint8_t nk_quant1(float v, float scale, int zp, int lo, int hi)
{
    if (!(scale > 0.0f) || !isfinite(scale) || isnan(v))
        return (uint8_t)zp;
    double q = rint((double)v / (double)scale) + (double)zp;
    q = q < (double)lo ? (double)lo : q > (double)hi ? (double)hi : q;
    return (uint8_t)(int)q;
}

/* g of one element (the scalar kernels and the vector kernels' tails) */
static inline float nk_bwd_g(float dy, float y, const nk_epilogue *ep)
{
    if (ep->act == NK_ACT_RELU)
        return y > 0.0f ? dy : 0.0f;
    if (ep->act == NK_ACT_LEAKY_RELU)
        return y > 0.0f ? dy : dy * ep->alpha;
    return dy;
}

typedef struct nk_kernels {
    nk_isa isa;
    unsigned dtype; /* NK_DTYPE_*: the element type of x and y of every entry */
    nk_moments_rows_fn moments_rows;
    nk_moments_cols_fn moments_cols;
    nk_sumsq_rows_fn sumsq_rows;
    nk_norm_rows_fn norm_rows;
    nk_norm_cols_fn norm_cols;
    nk_norm_affine_fn norm_affine;
    nk_norm_short_fn norm_short;
    nk_inv_scale_fn inv_scale;
    nk_inv_std_fn inv_std;
    nk_bn_finalize_fn bn_finalize;
    nk_widen_fn widen;
    nk_bwd_sums_rows_fn bwd_sums_rows;
    nk_bwd_sums_cols_fn bwd_sums_cols;
    nk_bwd_dx_rows_fn bwd_dx_rows;
    nk_bwd_dx_rows_acc_fn bwd_dx_rows_acc;
    nk_bwd_dx_cols_fn bwd_dx_cols;
    nk_add_rows_fn add_rows;
    nk_narrow_rows_fn narrow_rows;
    nk_norm_affine_s_fn norm_affine_s;
    nk_quant_rows_fn quant_rows;
    nk_absmax_rows_fn absmax_rows;
    /* channels-first LayerNorm / RMSNorm (ops/layer_norm_cf.c) */
    nk_sumsq_cols_fn sumsq_cols;
    nk_norm_cols_affine_fn norm_cols_affine;
} nk_kernels;

/* Per-ISA table fillers, one per element type (no suffix: fp32), called in
 * ascending order on a table of their dtype; each overwrites the entries it
 * implements (dav1d's pattern). The 16-bit fillers leave inv_scale and
 * inv_std, which have no x or y, to the dispatcher (the fp32 table's). */
void nk_kernels_init_ref(nk_kernels *k);
void nk_kernels_init_ref_f16(nk_kernels *k);
void nk_kernels_init_ref_bf16(nk_kernels *k);
#if NK_HAVE_AVX2
void nk_kernels_init_avx2(nk_kernels *k);
void nk_kernels_init_avx2_f16(nk_kernels *k);
void nk_kernels_init_avx2_bf16(nk_kernels *k);
#endif
#if NK_HAVE_AVX512
void nk_kernels_init_avx512(nk_kernels *k);
void nk_kernels_init_avx512_f16(nk_kernels *k);
void nk_kernels_init_avx512_bf16(nk_kernels *k);
#endif
#if NK_HAVE_AVX512BF16
/* bf16 with AVX512-BF16 stores (vcvtneps2bf16), for CPUs that have it */
void nk_kernels_init_avx512bf16_bf16(nk_kernels *k);
#endif
#if NK_HAVE_NEON
void nk_kernels_init_neon(nk_kernels *k);
void nk_kernels_init_neon_f16(nk_kernels *k); /* ARMv7: needs VFPv4 / fp16 (HWCAP) */
void nk_kernels_init_neon_bf16(nk_kernels *k);
#endif

/* The activation dispatch of every vector kernel: body(ACT) with the
 * activation of ep as a compile-time constant (the kernels compile one loop
 * per activation). A new activation is added here, in NK_ACT_EACH, in
 * nk_act_ref and in act_apply (kernels/simd/nk_simd.h). */
#define NK_ACT_SWITCH(body)                                                                       \
    switch (ep->act) {                                                                            \
    case NK_ACT_RELU: body(NK_ACT_RELU); break;                                                   \
    case NK_ACT_LEAKY_RELU: body(NK_ACT_LEAKY_RELU); break;                                       \
    case NK_ACT_SILU: body(NK_ACT_SILU); break;                                                   \
    case NK_ACT_GELU_ERF: body(NK_ACT_GELU_ERF); break;                                           \
    case NK_ACT_GELU_TANH: body(NK_ACT_GELU_TANH); break;                                         \
    default: body(NK_ACT_NONE); break;                                                            \
    }
/* X(ACT) for each activation of NK_ACT_SWITCH: where the per-activation
 * bodies are functions of their own, they are defined from this list */
#define NK_ACT_EACH(X)                                                                            \
    X(NK_ACT_NONE)                                                                                \
    X(NK_ACT_RELU)                                                                                \
    X(NK_ACT_LEAKY_RELU)                                                                          \
    X(NK_ACT_SILU)                                                                                \
    X(NK_ACT_GELU_ERF)                                                                            \
    X(NK_ACT_GELU_TANH)

/* gamma and beta of norm_short as n >= len floats each, 1 and 0 where absent
 * and past len, so that the vector kernels load whole vectors of them. Copied,
 * not selected lane by lane: a vectorised `g ? g[i] : 1` becomes a masked
 * load from NULL, which faults nothing but costs a microcode assist (about
 * 100 ns a call, AVX-512). */
static inline void nk_short_affine(const float *g, const float *b, size_t len, size_t n, float *gl,
                                   float *bl)
{
    for (size_t i = 0; i < n; i++) {
        gl[i] = 1.0f;
        bl[i] = 0.0f;
    }
    if (g)
        memcpy(gl, g, len * sizeof(float));
    if (b)
        memcpy(bl, b, len * sizeof(float));
}

/* Chan's merge, shared by every kernel and by ops/. */
static inline void nk_moments_merge_inline(nk_moments *acc, double n, double mean, double m2)
{
    if (n <= 0.0)
        return;
    if (acc->count <= 0.0) {
        acc->count = n;
        acc->mean = mean;
        acc->m2 = m2;
        return;
    }
    double tot = acc->count + n;
    double delta = mean - acc->mean;
    acc->mean += delta * (n / tot);
    acc->m2 += m2 + delta * delta * (acc->count * n / tot);
    acc->count = tot;
}

/* One channel of nk_inv_std_fn / nk_inv_scale_fn: the scalar kernels, the
 * vector kernels' tails and ops/ share these expressions. */
static inline double nk_inv_std1(double var, double eps)
{
    double v = var + eps;
    return v == 0.0 ? 0.0 : 1.0 / sqrt(v);
}

/* Channel c of nk_bn_finalize_fn. */
static inline void nk_bn_finalize1(const nk_moments *mo, size_t c, const nk_bn_fin *f, float *m,
                                   float *a, float *b)
{
    const double cnt = mo[c].count, mean = mo[c].mean, m2 = mo[c].m2;
    const double var = cnt > 0.0 ? m2 / cnt : 0.0, inv = nk_inv_std1(var, f->eps);
    m[c] = (float)mean;
    a[c] = f->weight ? (float)((double)f->weight[c] * inv) : (float)inv;
    b[c] = f->bias ? f->bias[c] : 0.0f;
    if (f->save_mean)
        f->save_mean[c] = m[c];
    if (f->save_invstd)
        f->save_invstd[c] = (float)inv;
    if (f->rmean && cnt > 0.0) {
        const double v = f->unbiased ? m2 / (cnt - 1.0) : var, mom = f->momentum;
        f->rmean[c] = (float)(mom * mean + (1.0 - mom) * (double)f->rmean[c]);
        f->rvar[c] = (float)(mom * v + (1.0 - mom) * (double)f->rvar[c]);
    }
}

static inline float nk_inv_scale1(float var, const float *w, float eps)
{
    float inv = 1.0f / sqrtf(var + eps);
    return w ? inv * *w : inv;
}

/* fp64 reference moments of a strided sequence of elements of type dtype
 * (fallback for fp32 overflow). */
void nk_moments_f64(unsigned dtype, const void *x, size_t n, size_t step, nk_moments *out);
double nk_sumsq_f64(unsigned dtype, const void *x, size_t n);
/* m and s of one row of nk_norm_short_fn in fp64, rounded to float: the
 * fallback of every norm_short kernel for rows whose fp32 statistics are
 * not finite. */
void nk_short_stats_f64(unsigned dtype, const void *x, size_t len, float eps, int rms, float *m,
                        float *s);
/* The same, one function per element type (the kernels call their own) */
void nk_moments_f64_f32(const float *x, size_t n, size_t step, nk_moments *out);
void nk_moments_f64_f16(const uint16_t *x, size_t n, size_t step, nk_moments *out);
void nk_moments_f64_bf16(const uint16_t *x, size_t n, size_t step, nk_moments *out);
double nk_sumsq_f64_f32(const float *x, size_t n);
double nk_sumsq_f64_f16(const uint16_t *x, size_t n);
double nk_sumsq_f64_bf16(const uint16_t *x, size_t n);
void nk_short_stats_f64_f32(const float *x, size_t len, float eps, int rms, float *m, float *s);
void nk_short_stats_f64_f16(const uint16_t *x, size_t len, float eps, int rms, float *m, float *s);
void nk_short_stats_f64_bf16(const uint16_t *x, size_t len, float eps, int rms, float *m, float *s);

/* The fp64 sum of squares of n elements at x, x + step, ... of a dtype
 * (xt of kernels/dtype.h): the fallback of every sumsq_cols kernel. Rows
 * in order, so every ISA gets the same value. */
#define NK_SUMSQ_COL_F64(xt, load)                                                                \
    static inline double nk_sumsq_col_f64(const xt *x, size_t n, size_t step)                     \
    {                                                                                             \
        double s = 0.0;                                                                           \
        for (size_t i = 0; i < n; i++) {                                                          \
            const double v = (double)load(&x[i * step]);                                          \
            s += v * v;                                                                           \
        }                                                                                         \
        return s;                                                                                 \
    }

/* Scalar activation, the reference for every vector epilogue. */
float nk_act_ref(float v, const nk_epilogue *ep);

#endif
