/*
 * InstanceNorm: statistics per (n, c) over the spatial positions. Rows are
 * handled in blocks that stay in L2 between the moments and normalize passes.
 * With running statistics, PyTorch updates each (n, c) copy of channel c's
 * running value and keeps their mean over n; the loop runs channel-major then,
 * so each channel's update is finished before the next.
 */
#include <math.h>
#include <string.h>

#include "ops/internal.h"

typedef struct in_ctx {
    const float *weight, *bias;
    double eps, momentum;
    nk_running_stats *rs;
    float *save_mean, *save_invstd;
    size_t C;
} in_ctx;

/* Row (n, c): m, a, b; saves; returns the row's contribution to the running update. */
static void in_finalize(const in_ctx *cx, size_t n, size_t c, const nk_moments *mo, float *m,
                        float *a, float *b, double *upd_mean, double *upd_var)
{
    double var = mo->m2 / mo->count;
    double inv = nk_inv_std1(var, cx->eps);
    *m = (float)mo->mean;
    *a = (float)((cx->weight ? cx->weight[c] : 1.0) * inv);
    *b = cx->bias ? cx->bias[c] : 0.0f;
    if (cx->save_mean)
        cx->save_mean[n * cx->C + c] = (float)mo->mean;
    if (cx->save_invstd)
        cx->save_invstd[n * cx->C + c] = (float)inv;
    if (cx->rs) {
        double mom = cx->momentum;
        double v = cx->rs->unbiased ? mo->m2 / (mo->count - 1.0) : var;
        /* each per-(n, c) copy is rounded to float as PyTorch stores it */
        *upd_mean += (float)(mom * mo->mean + (1.0 - mom) * (double)cx->rs->mean[c]);
        *upd_var += (float)(mom * v + (1.0 - mom) * (double)cx->rs->var[c]);
    }
}

static void in_channels_first(const nk_kernels *k, const float *x, const nk_shape *s,
                              const in_ctx *cx, float *y, const nk_epilogue *ep)
{
    const size_t N = (size_t)s->n, C = (size_t)s->c, S = (size_t)s->spatial;
    const size_t rb = nk_row_block(S);
    nk_moments mo[64];
    float m[64], a[64], b[64];
    if (!cx->rs) {
        /* (n, c) rows are contiguous: walk them in order */
        const size_t rows = N * C;
        for (size_t r0 = 0; r0 < rows; r0 += rb) {
            size_t nb = rows - r0 < rb ? rows - r0 : rb;
            nk_rows_moments(k, x + r0 * S, nb, S, S, mo);
            for (size_t i = 0; i < nb; i++) {
                double dm = 0, dv = 0;
                in_finalize(cx, (r0 + i) / C, (r0 + i) % C, &mo[i], &m[i], &a[i], &b[i], &dm, &dv);
            }
            k->norm_rows(x + r0 * S, y + r0 * S, nb, S, S, S, m, a, b, 1, ep);
        }
        return;
    }
    for (size_t c = 0; c < C; c++) {
        double sum_mean = 0.0, sum_var = 0.0;
        for (size_t n0 = 0; n0 < N; n0 += rb) {
            size_t nb = N - n0 < rb ? N - n0 : rb;
            size_t off = (n0 * C + c) * S;
            nk_rows_moments(k, x + off, nb, S, C * S, mo);
            for (size_t i = 0; i < nb; i++)
                in_finalize(cx, n0 + i, c, &mo[i], &m[i], &a[i], &b[i], &sum_mean, &sum_var);
            k->norm_rows(x + off, y + off, nb, S, C * S, C * S, m, a, b, 1, ep);
        }
        cx->rs->mean[c] = (float)(sum_mean / (double)N);
        cx->rs->var[c] = (float)(sum_var / (double)N);
    }
}

static void in_channels_last(const nk_kernels *k, const float *x, const nk_shape *s,
                             const in_ctx *cx, float *y, const nk_epilogue *ep)
{
    const size_t N = (size_t)s->n, C = (size_t)s->c, S = (size_t)s->spatial;
    for (size_t c0 = 0; c0 < C; c0 += NK_CBLK) {
        size_t nc = C - c0 < NK_CBLK ? C - c0 : NK_CBLK;
        nk_moments acc[NK_CBLK];
        float m[NK_CBLK], a[NK_CBLK], b[NK_CBLK];
        double sum_mean[NK_CBLK], sum_var[NK_CBLK];
        memset(sum_mean, 0, sizeof sum_mean);
        memset(sum_var, 0, sizeof sum_var);
        const nk_colview v = {S, C, 1};
        for (size_t n = 0; n < N; n++) {
            const float *xn = x + n * S * C;
            memset(acc, 0, nc * sizeof acc[0]);
            nk_colview_moments(k, xn, &v, c0, nc, acc);
            for (size_t c = 0; c < nc; c++)
                in_finalize(cx, n, c0 + c, &acc[c], &m[c], &a[c], &b[c], &sum_mean[c], &sum_var[c]);
            nk_colview_normalize(k, xn, y + n * S * C, &v, c0, nc, m, a, b, ep);
        }
        if (cx->rs)
            for (size_t c = 0; c < nc; c++) {
                cx->rs->mean[c0 + c] = (float)(sum_mean[c] / (double)N);
                cx->rs->var[c0 + c] = (float)(sum_var[c] / (double)N);
            }
    }
}

nk_status nk_instance_norm(const float *x, const nk_shape *shape, const float *weight,
                           const float *bias, double eps, int use_input_stats,
                           nk_running_stats *running, float *y, float *save_mean,
                           float *save_invstd, const nk_options *opts)
{
    static const char fn[] = "nk_instance_norm";
    size_t total;
    nk_epilogue ep;
    nk_status st = nk_check_tensor_args(fn, x, shape, y, eps, opts, &total, &ep);
    if (st)
        return st;
    if (running && (st = nk_check_running(running, fn, use_input_stats != 0)))
        return st;
    if (!use_input_stats) {
        if (!running)
            return nk_fail(NK_ERR_BAD_PARAM,
                           "Expected running_mean and running_var to be defined when "
                           "use_input_stats is false");
        return nk_batch_norm_infer_as(fn, x, shape, weight, bias, running->mean, running->var, eps,
                                      y, opts);
    }
    /* PyTorch checks the spatial size alone, so an empty batch is refused too */
    if (shape->spatial == 1)
        return nk_fail(NK_ERR_TOO_FEW_VALUES,
                       "Expected more than 1 spatial element when training, got input size "
                       "[%lld, %lld, 1]",
                       (long long)shape->n, (long long)shape->c);
    if (total == 0) {
        nk_clear_error();
        return NK_OK;
    }
    in_ctx cx = {weight, bias, eps, 0.0, running, save_mean, save_invstd, (size_t)shape->c};
    if (running)
        cx.momentum = running->cumulative ? 0.0 : running->momentum;
    const nk_kernels *k = nk_kernels_current();
    if (shape->layout == NK_CHANNELS_FIRST)
        in_channels_first(k, x, shape, &cx, y, &ep);
    else
        in_channels_last(k, x, shape, &cx, y, &ep);
    nk_clear_error();
    return NK_OK;
}
