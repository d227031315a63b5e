/*
 * GroupNorm: statistics per (n, g) over C / G channels and every spatial
 * position. Channels-first groups are contiguous runs of (C / G) * spatial
 * floats; channels-last groups are column ranges, reduced per channel and
 * merged exactly with Chan's formula.
 */
#include <math.h>
#include <string.h>

#include "ops/internal.h"

typedef struct gn_ctx {
    const float *weight, *bias;
    double eps;
    float *save_mean, *save_invstd;
    size_t G;
} gn_ctx;

static void gn_stats(const gn_ctx *cx, size_t n, size_t g, const nk_moments *mo, float *mean,
                     float *rstd)
{
    double var = mo->m2 / mo->count;
    double r = nk_rstd(var, cx->eps);
    *mean = (float)mo->mean;
    *rstd = (float)r;
    if (cx->save_mean)
        cx->save_mean[n * cx->G + g] = (float)mo->mean;
    if (cx->save_invstd)
        cx->save_invstd[n * cx->G + g] = (float)r;
}

/* m/a/b for channels [c0, c0 + nc) of group g (all in the same group). */
static void gn_params(const gn_ctx *cx, size_t c0, size_t nc, float mean, float rstd, float *m,
                      float *a, float *b)
{
    for (size_t i = 0; i < nc; i++) {
        m[i] = mean;
        a[i] = (cx->weight ? cx->weight[c0 + i] : 1.0f) * rstd;
        b[i] = cx->bias ? cx->bias[c0 + i] : 0.0f;
    }
}

static void gn_channels_first(const nk_kernels *k, const float *x, const nk_shape *s,
                              const gn_ctx *cx, float *y, const nk_epilogue *ep)
{
    const size_t N = (size_t)s->n, C = (size_t)s->c, S = (size_t)s->spatial, G = cx->G;
    const size_t cpg = C / G, glen = cpg * S;
    const size_t gb = nk_row_block(glen);
    nk_moments mo[64];
    float m[NK_CBLK], a[NK_CBLK], b[NK_CBLK];
    const size_t groups = N * G;
    for (size_t q0 = 0; q0 < groups; q0 += gb) {
        size_t nq = groups - q0 < gb ? groups - q0 : gb;
        nk_rows_moments(k, x + q0 * glen, nq, glen, glen, mo);
        for (size_t i = 0; i < nq; i++) {
            size_t n = (q0 + i) / G, g = (q0 + i) % G;
            float mean, rstd;
            gn_stats(cx, n, g, &mo[i], &mean, &rstd);
            for (size_t j0 = 0; j0 < cpg; j0 += NK_CBLK) {
                size_t nj = cpg - j0 < NK_CBLK ? cpg - j0 : NK_CBLK;
                size_t c0 = g * cpg + j0;
                gn_params(cx, c0, nj, mean, rstd, m, a, b);
                size_t off = (n * C + c0) * S;
                k->norm_rows(x + off, y + off, nj, S, S, S, m, a, b, 1, ep);
            }
        }
    }
}

static void gn_channels_last(const nk_kernels *k, const float *x, const nk_shape *s,
                             const gn_ctx *cx, float *y, const nk_epilogue *ep)
{
    const size_t N = (size_t)s->n, C = (size_t)s->c, S = (size_t)s->spatial, G = cx->G;
    const size_t cpg = C / G;
    /* blocks of whole groups: several groups when they fit in NK_CBLK channels */
    const size_t blk = cpg <= NK_CBLK ? (NK_CBLK / cpg) * cpg : cpg;
    nk_moments ch[NK_CBLK], gacc[NK_CBLK];
    float m[NK_CBLK], a[NK_CBLK], b[NK_CBLK], gmean[NK_CBLK], grstd[NK_CBLK];
    const nk_colview v = {S, C, 1};
    for (size_t n = 0; n < N; n++) {
        const float *xn = x + n * S * C;
        float *yn = y + n * S * C;
        for (size_t c0 = 0; c0 < C; c0 += blk) {
            size_t nc = C - c0 < blk ? C - c0 : blk;
            size_t ng = nc / cpg;
            memset(gacc, 0, ng * sizeof gacc[0]);
            for (size_t j0 = 0; j0 < nc; j0 += NK_CBLK) {
                size_t nj = nc - j0 < NK_CBLK ? nc - j0 : NK_CBLK;
                memset(ch, 0, nj * sizeof ch[0]);
                nk_colview_moments(k, xn, &v, c0 + j0, nj, ch);
                for (size_t i = 0; i < nj; i++)
                    nk_moments_merge_inline(&gacc[(j0 + i) / cpg], ch[i].count, ch[i].mean, ch[i].m2);
            }
            for (size_t q = 0; q < ng; q++)
                gn_stats(cx, n, c0 / cpg + q, &gacc[q], &gmean[q], &grstd[q]);
            for (size_t j0 = 0; j0 < nc; j0 += NK_CBLK) {
                size_t nj = nc - j0 < NK_CBLK ? nc - j0 : NK_CBLK;
                for (size_t i = 0; i < nj; i++) {
                    size_t q = (j0 + i) / cpg, c = c0 + j0 + i;
                    m[i] = gmean[q];
                    a[i] = (cx->weight ? cx->weight[c] : 1.0f) * grstd[q];
                    b[i] = cx->bias ? cx->bias[c] : 0.0f;
                }
                nk_colview_normalize(k, xn, yn, &v, c0 + j0, nj, m, a, b, ep);
            }
        }
    }
}

nk_status nk_group_norm(const float *x, const nk_shape *shape, int64_t groups, const float *weight,
                        const float *bias, double eps, float *y, float *save_mean,
                        float *save_invstd, const nk_options *opts)
{
    static const char fn[] = "nk_group_norm";
    size_t total;
    nk_epilogue ep;
    nk_status st = nk_check_tensor_args(fn, x, shape, y, eps, opts, &total, &ep);
    if (st)
        return st;
    if (groups < 1)
        return nk_fail(NK_ERR_BAD_PARAM, "%s: num_groups must be at least 1, got %lld", fn,
                       (long long)groups);
    if (shape->c % groups)
        return nk_fail(NK_ERR_BAD_PARAM,
                       "Expected number of channels in input to be divisible by num_groups, but got "
                       "input of shape [%lld, %lld, %lld] and num_groups=%lld",
                       (long long)shape->n, (long long)shape->c, (long long)shape->spatial,
                       (long long)groups);
    if (total == 0) {
        nk_clear_error();
        return NK_OK;
    }
    if (shape->n * (shape->c / groups) * shape->spatial == 1) {
        char sz[96];
        nk_format_size(sz, sizeof sz, shape->n * shape->c / groups, groups, shape->spatial);
        return nk_fail(NK_ERR_TOO_FEW_VALUES,
                       "Expected more than 1 value per channel when training, got input size %s", sz);
    }
    gn_ctx cx = {weight, bias, eps, save_mean, save_invstd, (size_t)groups};
    const nk_kernels *k = nk_kernels_current();
    if (shape->layout == NK_CHANNELS_FIRST)
        gn_channels_first(k, x, shape, &cx, y, &ep);
    else
        gn_channels_last(k, x, shape, &cx, y, &ep);
    nk_clear_error();
    return NK_OK;
}
