/*
 * NEON moments kernels: the algorithm of kernels/ref/moments_ref.c, vectorised.
 * Each chunk is reduced two-pass in fp32 (sum -> provisional mean m0 ->
 * sums of d = x - m0 and d^2), its mean is m0 + sum(d)/n and its M2
 * sum(d^2) - sum(d)^2/n, and chunks are merged in fp64 (Chan). The lane
 * partials are added in fp64. m0 is one broadcast value per chunk, so a
 * constant chunk gives the same d (0 or one rounding step of m0) in every
 * lane; every partial sum is then a small multiple of d or d^2 and exact,
 * the corrected mean is the value itself and M2 is exactly 0.
 *
 * Rows shorter than NK_NEON_SHORT_ROW are reduced four at a time, one row per
 * lane: the reference's sequential order per row, without horizontal sums.
 */
#include "kernels/arm/neon_util.h"

/* Elements per row chunk: 32 (AArch64) or 64 (ARMv7) per lane accumulator,
 * and the chunk (4 KiB) stays in L1 for the second pass. */
#define NK_ROW_CHUNK 1024
/* Rows per chunk of the column kernel: one value per row in each lane. */
#define NK_COL_CHUNK 256
#define NK_NEON_SHORT_ROW 16

/* Adds v[0..nv) pairwise into v[0]. */
NK_INLINE float32x4_t tree_sum(float32x4_t *v, const int nv)
{
    for (int w = nv / 2; w >= 1; w /= 2)
        for (int u = 0; u < w; u++)
            v[u] = vaddq_f32(v[u], v[u + w]);
    return v[0];
}

/* One chunk of n (1..NK_ROW_CHUNK) contiguous floats merged into acc. */
static void row_chunk(const float *p, size_t n, nk_moments *acc)
{
    enum { U = NK_NEON_U };
    float32x4_t s[U];
    for (int u = 0; u < U; u++)
        s[u] = vdupq_n_f32(0.0f);
    size_t i = 0;
    for (; i + 4 * U <= n; i += 4 * U)
        for (int u = 0; u < U; u++)
            s[u] = vaddq_f32(s[u], vld1q_f32(p + i + 4 * u));
    for (; i + 4 <= n; i += 4)
        s[0] = vaddq_f32(s[0], vld1q_f32(p + i));
    float st = nk_hsum_f32(tree_sum(s, U));
    for (; i < n; i++)
        st += p[i];

    const float m0 = st * (1.0f / (float)n);
    const float32x4_t vm0 = vdupq_n_f32(m0);
    float32x4_t s1[U], s2[U];
    for (int u = 0; u < U; u++)
        s1[u] = s2[u] = vdupq_n_f32(0.0f);
    i = 0;
    for (; i + 4 * U <= n; i += 4 * U)
        for (int u = 0; u < U; u++) {
            float32x4_t d = vsubq_f32(vld1q_f32(p + i + 4 * u), vm0);
            s1[u] = vaddq_f32(s1[u], d);
            s2[u] = nk_fma_f32(s2[u], d, d);
        }
    for (; i + 4 <= n; i += 4) {
        float32x4_t d = vsubq_f32(vld1q_f32(p + i), vm0);
        s1[0] = vaddq_f32(s1[0], d);
        s2[0] = nk_fma_f32(s2[0], d, d);
    }
    float t1 = 0.0f, t2 = 0.0f;
    for (; i < n; i++) {
        float d = p[i] - m0;
        t1 += d;
        t2 += d * d;
    }
    const double dn = (double)n;
    double S1 = nk_hsum_f64(tree_sum(s1, U)) + (double)t1;
    double S2 = nk_hsum_f64(tree_sum(s2, U)) + (double)t2;
    double mean = (double)m0 + S1 / dn;
    double m2 = S2 - S1 * S1 / dn;
    if (m2 < 0.0)
        m2 = 0.0;
    nk_moments_merge_inline(acc, dn, mean, m2);
}

/* Four rows of len (< NK_NEON_SHORT_ROW) elements, row k at x + k * stride. */
static void rows4_short(const float *x, size_t len, size_t stride, nk_moments *out)
{
    float32x4_t s = vdupq_n_f32(0.0f);
    for (size_t i = 0; i < len; i++)
        s = vaddq_f32(s, nk_gather4(x + i, stride));
    const float32x4_t m0 = vmulq_f32(s, vdupq_n_f32(1.0f / (float)len));
    float32x4_t s1 = vdupq_n_f32(0.0f), s2 = vdupq_n_f32(0.0f);
    for (size_t i = 0; i < len; i++) {
        float32x4_t d = vsubq_f32(nk_gather4(x + i, stride), m0);
        s1 = vaddq_f32(s1, d);
        s2 = nk_fma_f32(s2, d, d);
    }
    float fm0[4], f1[4], f2[4];
    vst1q_f32(fm0, m0);
    vst1q_f32(f1, s1);
    vst1q_f32(f2, s2);
    const double dn = (double)len;
    for (int k = 0; k < 4; k++) {
        double m2 = (double)f2[k] - (double)f1[k] * (double)f1[k] / dn;
        out[k].count = dn;
        out[k].mean = (double)fm0[k] + (double)f1[k] / dn;
        out[k].m2 = m2 < 0.0 ? 0.0 : m2;
    }
}

static void nk_moments_rows__neon(const float *x, size_t rows, size_t len, size_t stride,
                                  nk_moments *out)
{
    size_t r = 0;
    if (len < NK_NEON_SHORT_ROW)
        for (; r + 4 <= rows; r += 4)
            rows4_short(x + r * stride, len, stride, out + r);
    for (; r < rows; r++) {
        const float *p = x + r * stride;
        nk_moments acc = {0.0, 0.0, 0.0};
        for (size_t i = 0; i < len; i += NK_ROW_CHUNK)
            row_chunk(p + i, len - i < NK_ROW_CHUNK ? len - i : NK_ROW_CHUNK, &acc);
        out[r] = acc;
    }
}

/*
 * Columns [0, 4 * nv) (the last vector holding `tail` (1..4) columns) of
 * `rows` rows, merged into acc. nv is a constant at each call site: the
 * block's m0 / s1 / s2 stay in registers across the rows of a chunk.
 */
NK_INLINE void cols_block(const float *x, size_t rows, size_t stride, nk_moments *acc,
                          const int nv, size_t tail)
{
    float32x4_t s[NK_NEON_CU], s1[NK_NEON_CU], s2[NK_NEON_CU];
    float fm0[4 * NK_NEON_CU], f1[4 * NK_NEON_CU], f2[4 * NK_NEON_CU];
    const size_t ncols = 4 * (size_t)(nv - 1) + tail;

#define NK_LOAD_COL(p, v) ((v) == nv - 1 && tail < 4 ? nk_load_partial((p) + 4 * (v), tail) \
                                                     : vld1q_f32((p) + 4 * (v)))
    for (size_t r0 = 0; r0 < rows; r0 += NK_COL_CHUNK) {
        const size_t n = rows - r0 < NK_COL_CHUNK ? rows - r0 : NK_COL_CHUNK;
        const float *xc = x + r0 * stride;
        for (int v = 0; v < nv; v++)
            s[v] = vdupq_n_f32(0.0f);
        for (size_t r = 0; r < n; r++) {
            const float *p = xc + r * stride;
            for (int v = 0; v < nv; v++)
                s[v] = vaddq_f32(s[v], NK_LOAD_COL(p, v));
        }
        const float32x4_t inv = vdupq_n_f32(1.0f / (float)n);
        for (int v = 0; v < nv; v++) {
            s[v] = vmulq_f32(s[v], inv); /* now m0 */
            s1[v] = s2[v] = vdupq_n_f32(0.0f);
        }
        for (size_t r = 0; r < n; r++) {
            const float *p = xc + r * stride;
            for (int v = 0; v < nv; v++) {
                float32x4_t d = vsubq_f32(NK_LOAD_COL(p, v), s[v]);
                s1[v] = vaddq_f32(s1[v], d);
                s2[v] = nk_fma_f32(s2[v], d, d);
            }
        }
        for (int v = 0; v < nv; v++) {
            vst1q_f32(fm0 + 4 * v, s[v]);
            vst1q_f32(f1 + 4 * v, s1[v]);
            vst1q_f32(f2 + 4 * v, s2[v]);
        }
        const double dn = (double)n;
        for (size_t c = 0; c < ncols; c++) {
            double mean = (double)fm0[c] + (double)f1[c] / dn;
            double m2 = (double)f2[c] - (double)f1[c] * (double)f1[c] / dn;
            nk_moments_merge_inline(&acc[c], dn, mean, m2 < 0.0 ? 0.0 : m2);
        }
    }
#undef NK_LOAD_COL
}

static void nk_moments_cols__neon(const float *x, size_t rows, size_t cols, size_t stride,
                                  nk_moments *acc)
{
    size_t c = 0;
    for (; c + 4 * NK_NEON_CU <= cols; c += 4 * NK_NEON_CU)
        cols_block(x + c, rows, stride, acc + c, NK_NEON_CU, 4);
    for (; c + 4 <= cols; c += 4)
        cols_block(x + c, rows, stride, acc + c, 1, 4);
    if (c < cols)
        cols_block(x + c, rows, stride, acc + c, 1, cols - c);
}

static void nk_sumsq_rows__neon(const float *x, size_t rows, size_t len, size_t stride,
                                double *out)
{
    enum { U = NK_NEON_U };
    size_t r = 0;
    if (len < NK_NEON_SHORT_ROW)
        for (; r + 4 <= rows; r += 4) {
            const float *p = x + r * stride;
            float32x4_t s = vdupq_n_f32(0.0f);
            for (size_t i = 0; i < len; i++) {
                float32x4_t v = nk_gather4(p + i, stride);
                s = nk_fma_f32(s, v, v);
            }
            out[r] = (double)vgetq_lane_f32(s, 0);
            out[r + 1] = (double)vgetq_lane_f32(s, 1);
            out[r + 2] = (double)vgetq_lane_f32(s, 2);
            out[r + 3] = (double)vgetq_lane_f32(s, 3);
        }
    for (; r < rows; r++) {
        const float *p = x + r * stride;
        double tot = 0.0;
        for (size_t c0 = 0; c0 < len; c0 += NK_ROW_CHUNK) {
            const size_t n = len - c0 < NK_ROW_CHUNK ? len - c0 : NK_ROW_CHUNK;
            const float *q = p + c0;
            float32x4_t s[U];
            for (int u = 0; u < U; u++)
                s[u] = vdupq_n_f32(0.0f);
            size_t i = 0;
            for (; i + 4 * U <= n; i += 4 * U)
                for (int u = 0; u < U; u++) {
                    float32x4_t v = vld1q_f32(q + i + 4 * u);
                    s[u] = nk_fma_f32(s[u], v, v);
                }
            for (; i + 4 <= n; i += 4) {
                float32x4_t v = vld1q_f32(q + i);
                s[0] = nk_fma_f32(s[0], v, v);
            }
            float t = 0.0f;
            for (; i < n; i++)
                t += q[i] * q[i];
            tot += nk_hsum_f64(tree_sum(s, U)) + (double)t;
        }
        out[r] = tot;
    }
}

void nk_kernels_init_neon_moments(nk_kernels *k)
{
    k->moments_rows = nk_moments_rows__neon;
    k->moments_cols = nk_moments_cols__neon;
    k->sumsq_rows = nk_sumsq_rows__neon;
}
