/*
 * Portable norm_short kernel (LayerNorm / RMSNorm / InstanceNorm of rows of
 * at most NK_SHORT_ROW floats, contract in kernels/kernels.h): the fallback
 * path and the oracle of the vector kernels. Each row is summed in order, in fp32,
 * with the same formulas as the vector kernels; only the summation order
 * differs. nk_short_stats_f64 is the fp64 fallback every ISA shares.
 * Compiled once per element type (kernels/dtype.h).
 */
#include <math.h>

#include "kernels/dtype.h"
#include "kernels/kernels.h"

void NK_DT_F64(nk_short_stats_f64)(const xt *x, size_t len, float eps, int rms, float *m,
                                   float *s)
{
    double ms;
    if (rms) {
        ms = NK_DT_F64(nk_sumsq_f64)(x, len) / (double)len;
        *m = 0.0f;
    } else {
        nk_moments mo;
        NK_DT_F64(nk_moments_f64)(x, len, 1, &mo);
        ms = mo.m2 / (double)len;
        *m = (float)mo.mean;
    }
    *s = (float)(1.0 / sqrt(ms + (double)eps));
}

/* m and s of one row; the fp64 fallback when they are not finite in fp32 */
static void row_stats(const xt *x, size_t n, float eps, int rms, float *m, float *s)
{
    const float inv = 1.0f / (float)n;
    if (rms) {
        float s2 = 0.0f;
        for (size_t i = 0; i < n; i++)
            s2 = fmaf(nk_xload(&x[i]), nk_xload(&x[i]), s2);
        if (!isfinite(s2)) {
            NK_DT_F64(nk_short_stats_f64)(x, n, eps, rms, m, s);
            return;
        }
        *m = 0.0f;
        *s = 1.0f / sqrtf(s2 * inv + eps);
        return;
    }
    /* the mean as K + sum(x - K) / n, K the first element; then the sum of
     * squared deviations from it */
    const float K = nk_xload(&x[0]);
    float s1 = 0.0f;
    for (size_t i = 0; i < n; i++)
        s1 += nk_xload(&x[i]) - K;
    const float mean = K + s1 * inv;
    float s2 = 0.0f;
    for (size_t i = 0; i < n; i++) {
        const float d = nk_xload(&x[i]) - mean;
        s2 = fmaf(d, d, s2);
    }
    if (!isfinite(s1) || !isfinite(s2)) {
        NK_DT_F64(nk_short_stats_f64)(x, n, eps, rms, m, s);
        return;
    }
    *m = mean;
    *s = 1.0f / sqrtf(s2 * inv + eps);
}

static void norm_short_ref(const void *xv, void *yv, size_t rows, size_t len, size_t xstride,
                           size_t ystride, const float *g, const float *b, float eps,
                           unsigned flags, float *mean_out, float *rstd_out, const nk_epilogue *ep)
{
    const xt *x = xv;
    xt *y = yv;
    const int rms = (flags & NK_SHORT_RMS) != 0, per_row = (flags & NK_SHORT_ROW_AFFINE) != 0;
    for (size_t r = 0; r < rows; r++) {
        const xt *xr = x + r * xstride;
        xt *yr = y + r * ystride;
        float m, s;
        row_stats(xr, len, eps, rms, &m, &s);
        if (mean_out)
            mean_out[r] = m;
        if (rstd_out)
            rstd_out[r] = s;
        for (size_t i = 0; i < len; i++) {
            /* gamma and beta of column i, or of row r */
            const size_t j = per_row ? r : i;
            float v = (nk_xload(&xr[i]) - m) * s;
            nk_xstore(&yr[i], nk_act_ref(fmaf(v, g ? g[j] : 1.0f, b ? b[j] : 0.0f), ep));
        }
    }
}

void NK_DT_NAME(nk_kernels_init_ref_short)(nk_kernels *k);
void NK_DT_NAME(nk_kernels_init_ref_short)(nk_kernels *k) { k->norm_short = norm_short_ref; }
