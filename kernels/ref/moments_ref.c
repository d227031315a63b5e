/*
 * Portable moments kernels: the fallback path and the oracle the SIMD kernels
 * are tested against. Same algorithm as the vector kernels: each chunk of at
 * most NK_REF_CHUNK elements is reduced two-pass in fp32 (sum -> provisional
 * mean m0 -> sums of d = x - m0 and d^2), its exact mean is m0 + sum(d)/n and
 * its M2 is sum(d^2) - sum(d)^2/n; chunks are merged in fp64 with Chan's
 * formula. For a constant chunk d is 0 or a single rounding step of m0, so
 * the corrected mean is the value itself and M2 is exactly 0.
 *
 * Compiled once per element type (kernels/dtype.h): x is read through
 * nk_xload, exactly widened to fp32; everything else is the fp32 code.
 */
#include <math.h>

#include "kernels/dtype.h"
#include "kernels/kernels.h"

#define NK_REF_CHUNK 256

static void chunk_moments(const xt *x, size_t n, size_t step, nk_moments *acc)
{
    float s = 0.0f;
    for (size_t i = 0; i < n; i++)
        s += nk_xload(&x[i * step]);
    const float inv = 1.0f / (float)n;
    const float m0 = s * inv;
    float s1 = 0.0f, s2 = 0.0f;
    for (size_t i = 0; i < n; i++) {
        float d = nk_xload(&x[i * step]) - m0;
        s1 += d;
        s2 += d * d;
    }
    double mean = (double)m0 + (double)s1 / (double)n;
    double m2 = (double)s2 - (double)s1 * (double)s1 / (double)n;
    if (m2 < 0.0)
        m2 = 0.0;
    nk_moments_merge_inline(acc, (double)n, mean, m2);
}

static void moments_strided(const xt *x, size_t n, size_t step, nk_moments *out)
{
    nk_moments acc = {0.0, 0.0, 0.0};
    for (size_t i = 0; i < n; i += NK_REF_CHUNK) {
        size_t len = n - i < NK_REF_CHUNK ? n - i : NK_REF_CHUNK;
        chunk_moments(x + i * step, len, step, &acc);
    }
    *out = acc;
}

static void moments_rows_ref(const void *xv, size_t rows, size_t len, size_t stride,
                             nk_moments *out)
{
    const xt *x = xv;
    for (size_t r = 0; r < rows; r++)
        moments_strided(x + r * stride, len, 1, &out[r]);
}

static void moments_cols_ref(const void *xv, size_t rows, size_t cols, size_t stride,
                             nk_moments *acc)
{
    const xt *x = xv;
    for (size_t c = 0; c < cols; c++) {
        nk_moments m;
        moments_strided(x + c, rows, stride, &m);
        if (!isfinite(m.mean) || !isfinite(m.m2))
            NK_DT_F64(nk_moments_f64)(x + c, rows, stride, &m);
        nk_moments_merge_inline(&acc[c], m.count, m.mean, m.m2);
    }
}

static void sumsq_rows_ref(const void *xv, size_t rows, size_t len, size_t stride, double *out)
{
    const xt *x = xv;
    for (size_t r = 0; r < rows; r++) {
        const xt *p = x + r * stride;
        double tot = 0.0;
        for (size_t i = 0; i < len; i += NK_REF_CHUNK) {
            size_t n = len - i < NK_REF_CHUNK ? len - i : NK_REF_CHUNK;
            float s = 0.0f;
            for (size_t j = 0; j < n; j++)
                s += nk_xload(&p[i + j]) * nk_xload(&p[i + j]);
            tot += (double)s;
        }
        out[r] = tot;
    }
}

NK_SUMSQ_COL_F64(xt, nk_xload)

static void sumsq_cols_ref(const void *xv, size_t rows, size_t cols, size_t stride, double *acc)
{
    const xt *x = xv;
    for (size_t c = 0; c < cols; c++)
        for (size_t r0 = 0; r0 < rows; r0 += NK_SUMSQ_COLS_CHUNK) {
            const size_t n = rows - r0 < NK_SUMSQ_COLS_CHUNK ? rows - r0 : NK_SUMSQ_COLS_CHUNK;
            const xt *p = x + r0 * stride + c;
            float s = 0.0f;
            for (size_t r = 0; r < n; r++)
                s += nk_xload(&p[r * stride]) * nk_xload(&p[r * stride]);
            acc[c] += isfinite(s) ? (double)s : nk_sumsq_col_f64(p, n, stride);
        }
}

void NK_DT_F64(nk_moments_f64)(const xt *x, size_t n, size_t step, nk_moments *out)
{
    double s = 0.0;
    for (size_t i = 0; i < n; i++)
        s += (double)nk_xload(&x[i * step]);
    double m0 = n ? s / (double)n : 0.0;
    double s1 = 0.0, s2 = 0.0;
    for (size_t i = 0; i < n; i++) {
        double d = (double)nk_xload(&x[i * step]) - m0;
        s1 += d;
        s2 += d * d;
    }
    out->count = (double)n;
    out->mean = n ? m0 + s1 / (double)n : 0.0;
    out->m2 = n ? s2 - s1 * s1 / (double)n : 0.0;
    if (out->m2 < 0.0)
        out->m2 = 0.0;
}

double NK_DT_F64(nk_sumsq_f64)(const xt *x, size_t n)
{
    double s = 0.0;
    for (size_t i = 0; i < n; i++)
        s += (double)nk_xload(&x[i]) * (double)nk_xload(&x[i]);
    return s;
}

void NK_DT_NAME(nk_kernels_init_ref_moments)(nk_kernels *k);
void NK_DT_NAME(nk_kernels_init_ref_moments)(nk_kernels *k)
{
    k->moments_rows = moments_rows_ref;
    k->moments_cols = moments_cols_ref;
    k->sumsq_rows = sumsq_rows_ref;
    k->sumsq_cols = sumsq_cols_ref;
}
