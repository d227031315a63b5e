/*
 * LayerNorm and RMSNorm over the trailing `cols` elements of each row. Rows
 * go in blocks that stay in L2 between the statistics and normalize passes,
 * and the kernels take whole blocks so short rows share one call.
 */
#include <math.h>

#include "ops/internal.h"

static nk_status rows_check(const char *fn, const float *x, int64_t rows, int64_t cols,
                            const float *y, double eps, const nk_options *opts, size_t *total,
                            nk_epilogue *ep)
{
    if (rows < 0 || cols < 1)
        return nk_fail(NK_ERR_BAD_SHAPE, "%s: need rows >= 0 and cols >= 1, got rows=%lld cols=%lld",
                       fn, (long long)rows, (long long)cols);
    const int64_t ext[2] = {rows, cols};
    if (!nk_extents_fit(ext, 2, sizeof(float)))
        return nk_fail(NK_ERR_BAD_SHAPE,
                       "%s: rows=%lld x cols=%lld is too large: the product of the non-zero extents "
                       "must be at most %lld elements",
                       fn, (long long)rows, (long long)cols, (long long)(PTRDIFF_MAX / sizeof(float)));
    *total = (size_t)rows * (size_t)cols;
    return nk_check_io(fn, x, y, *total, eps, opts, ep);
}

nk_status nk_layer_norm(const float *x, int64_t rows, int64_t cols, const float *weight,
                        const float *bias, double eps, float *y, float *save_mean,
                        float *save_invstd, const nk_options *opts)
{
    static const char fn[] = "nk_layer_norm";
    size_t total;
    nk_epilogue ep;
    nk_status st = rows_check(fn, x, rows, cols, y, eps, opts, &total, &ep);
    if (st)
        return st;
    const nk_kernels *k = nk_kernels_current();
    const size_t R = (size_t)rows, D = (size_t)cols, rb = nk_row_block(D);
    nk_moments mo[64];
    float m[64], s[64];
    for (size_t r0 = 0; r0 < R; r0 += rb) {
        size_t nb = R - r0 < rb ? R - r0 : rb;
        nk_rows_moments(k, x + r0 * D, nb, D, D, mo);
        for (size_t i = 0; i < nb; i++) {
            double r = nk_rstd(mo[i].m2 / mo[i].count, eps);
            m[i] = (float)mo[i].mean;
            s[i] = (float)r;
            if (save_mean)
                save_mean[r0 + i] = m[i];
            if (save_invstd)
                save_invstd[r0 + i] = s[i];
        }
        k->norm_affine(x + r0 * D, y + r0 * D, nb, D, D, D, m, s, weight, bias, &ep);
    }
    nk_clear_error();
    return NK_OK;
}

nk_status nk_rms_norm(const float *x, int64_t rows, int64_t cols, const float *weight, double eps,
                      float *y, float *save_rstd, const nk_options *opts)
{
    static const char fn[] = "nk_rms_norm";
    size_t total;
    nk_epilogue ep;
    nk_status st = rows_check(fn, x, rows, cols, y, eps, opts, &total, &ep);
    if (st)
        return st;
    const nk_kernels *k = nk_kernels_current();
    const size_t R = (size_t)rows, D = (size_t)cols, rb = nk_row_block(D);
    double ss[64];
    float s[64];
    for (size_t r0 = 0; r0 < R; r0 += rb) {
        size_t nb = R - r0 < rb ? R - r0 : rb;
        k->sumsq_rows(x + r0 * D, nb, D, D, ss);
        for (size_t i = 0; i < nb; i++) {
            if (!isfinite(ss[i]))
                ss[i] = nk_sumsq_f64(x + (r0 + i) * D, D);
            s[i] = (float)(1.0 / sqrt(ss[i] / (double)D + eps));
            if (save_rstd)
                save_rstd[r0 + i] = s[i];
        }
        k->norm_affine(x + r0 * D, y + r0 * D, nb, D, D, D, NULL, s, weight, NULL, &ep);
    }
    nk_clear_error();
    return NK_OK;
}
