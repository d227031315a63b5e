/*
 * BatchNorm: statistics per channel over the batch and every spatial position.
 * Channels-first with long rows: one channel at a time, moments then
 * normalize, so a channel that fits in L2 is read from DRAM once. Otherwise
 * (channels-last, or channels-first with a short spatial extent such as an
 * (N, C) input) the column view: blocks of channels, moments across all rows,
 * then normalize the block.
 */
#include <math.h>
#include <string.h>

#include "ops/internal.h"

typedef struct bn_ctx {
    const float *weight, *bias;
    double eps, momentum;
    nk_running_stats *rs;
    float *save_mean, *save_invstd;
} bn_ctx;

/* Statistics of channels [c0, c0 + nc) -> their m, a, b; running statistics
 * and saves. Branch-free loops over the block (the inverse standard
 * deviations come vectorised from the kernel table): short inputs with many
 * channels spend most of their time here. nc <= NK_CBLK. */
static void bn_finalize(const nk_kernels *k, const bn_ctx *cx, size_t c0, size_t nc,
                        const nk_moments *mo, float *m, float *a, float *b)
{
    double var[NK_CBLK], inv[NK_CBLK];
    k->inv_std(mo, nc, cx->eps, var, inv);
    for (size_t c = 0; c < nc; c++) {
        m[c] = (float)mo[c].mean;
        a[c] = (float)((cx->weight ? (double)cx->weight[c0 + c] : 1.0) * inv[c]);
        b[c] = cx->bias ? cx->bias[c0 + c] : 0.0f;
    }
    if (cx->save_mean)
        for (size_t c = 0; c < nc; c++)
            cx->save_mean[c0 + c] = (float)mo[c].mean;
    if (cx->save_invstd)
        for (size_t c = 0; c < nc; c++)
            cx->save_invstd[c0 + c] = (float)inv[c];
    if (!cx->rs)
        return;
    const double mom = cx->momentum;
    float *rm = cx->rs->mean + c0, *rv = cx->rs->var + c0;
    for (size_t c = 0; c < nc; c++) {
        if (!(mo[c].count > 0.0))
            continue;
        double v = cx->rs->unbiased ? mo[c].m2 / (mo[c].count - 1.0) : var[c];
        rm[c] = (float)(mom * mo[c].mean + (1.0 - mom) * (double)rm[c]);
        rv[c] = (float)(mom * v + (1.0 - mom) * (double)rv[c]);
    }
}

/* Moments of channel c of a channels-first tensor with long rows. */
static void bn_rows_channel(const nk_kernels *k, const float *x, size_t N, size_t C, size_t S,
                            size_t c, nk_moments *acc)
{
    nk_moments part[64];
    for (size_t n0 = 0; n0 < N; n0 += 64) {
        size_t nb = N - n0 < 64 ? N - n0 : 64;
        nk_rows_moments(k, x + (n0 * C + c) * S, nb, S, C * S, part);
        for (size_t i = 0; i < nb; i++)
            nk_moments_merge_inline(acc, part[i].count, part[i].mean, part[i].m2);
    }
}

/*
 * given == NULL: compute the moments from x; else use given[c].
 * Channels-first with long rows: one channel at a time (moments, then
 * normalize while the channel is in L2). Otherwise the column view: blocks of
 * channels, moments over every row, then normalize the block.
 */
static void bn_run(const nk_kernels *k, const float *x, const nk_shape *s,
                   const nk_moments *given, const bn_ctx *cx, float *y, const nk_epilogue *ep)
{
    const size_t N = (size_t)s->n, C = (size_t)s->c, S = (size_t)s->spatial;
    nk_colview v;
    if (!nk_bn_colview(s, &v)) {
        for (size_t c = 0; c < C; c++) {
            nk_moments acc = {0.0, 0.0, 0.0};
            if (given)
                acc = given[c];
            else
                bn_rows_channel(k, x, N, C, S, c, &acc);
            float m, a, b;
            bn_finalize(k, cx, c, 1, &acc, &m, &a, &b);
            if (N && S)
                k->norm_rows(x + c * S, y + c * S, N, S, C * S, C * S, &m, &a, &b, 0, ep);
        }
        return;
    }
    const size_t blk = nk_colview_block(&v);
    for (size_t c0 = 0; c0 < C; c0 += blk) {
        size_t nc = C - c0 < blk ? C - c0 : blk;
        nk_moments acc[NK_CBLK];
        float m[NK_CBLK], a[NK_CBLK], b[NK_CBLK];
        if (given) {
            memcpy(acc, given + c0, nc * sizeof acc[0]);
        } else {
            memset(acc, 0, nc * sizeof acc[0]);
            if (v.rows)
                nk_colview_moments(k, x, &v, c0, nc, acc);
        }
        bn_finalize(k, cx, c0, nc, acc, m, a, b);
        if (v.rows)
            nk_colview_normalize(k, x, y, &v, c0, nc, m, a, b, ep);
    }
}

/* per_channel holds C nk_moments: larger than a float per channel */
static nk_status bn_check_moments_array(const char *fn, const nk_shape *s)
{
    if (!nk_extents_fit(&s->c, 1, sizeof(nk_moments)))
        return nk_fail(NK_ERR_BAD_SHAPE,
                       "%s: c=%lld channels of per_channel moments do not fit in memory (at most %lld)",
                       fn, (long long)s->c, (long long)(PTRDIFF_MAX / sizeof(nk_moments)));
    return NK_OK;
}

static nk_status bn_check_common(const char *fn, const float *x, const nk_shape *s, const float *y,
                                 double eps, nk_running_stats *rs, const nk_options *opts,
                                 size_t *total, nk_epilogue *ep)
{
    nk_status st = nk_check_tensor_args(fn, x, s, y, eps, opts, total, ep);
    if (st)
        return st;
    return rs ? nk_check_running(rs, fn, true) : NK_OK;
}

nk_status nk_batch_norm_train(const float *x, const nk_shape *shape, const float *weight,
                              const float *bias, double eps, nk_running_stats *running, float *y,
                              float *save_mean, float *save_invstd, const nk_options *opts)
{
    static const char fn[] = "nk_batch_norm_train";
    size_t total;
    nk_epilogue ep;
    nk_status st = bn_check_common(fn, x, shape, y, eps, running, opts, &total, &ep);
    if (st)
        return st;
    if (total == 0) {
        if (running)
            nk_effective_momentum(running);
        nk_clear_error();
        return NK_OK;
    }
    if (shape->n * shape->spatial == 1) {
        char sz[96];
        nk_format_size(sz, sizeof sz, shape->n, shape->c, shape->spatial);
        return nk_fail(NK_ERR_TOO_FEW_VALUES,
                       "Expected more than 1 value per channel when training, got input size %s", sz);
    }
    bn_ctx cx = {weight, bias, eps, 0.0, running, save_mean, save_invstd};
    if (running)
        cx.momentum = nk_effective_momentum(running);
    bn_run(nk_kernels_current(), x, shape, NULL, &cx, y, &ep);
    nk_clear_error();
    return NK_OK;
}

nk_status nk_batch_norm_stats(const float *x, const nk_shape *shape, nk_moments *per_channel)
{
    static const char fn[] = "nk_batch_norm_stats";
    size_t total;
    nk_status st = nk_check_shape(shape, fn, &total);
    if (st)
        return st;
    if (!per_channel || (!x && total))
        return nk_fail(NK_ERR_NULL_POINTER, "%s: %s is NULL", fn, x ? "per_channel" : "x");
    if ((st = bn_check_moments_array(fn, shape)))
        return st;
    const nk_kernels *k = nk_kernels_current();
    const size_t N = (size_t)shape->n, C = (size_t)shape->c, S = (size_t)shape->spatial;
    memset(per_channel, 0, C * sizeof per_channel[0]);
    if (!total) {
        nk_clear_error();
        return NK_OK;
    }
    nk_colview v;
    if (!nk_bn_colview(shape, &v)) {
        for (size_t c = 0; c < C; c++)
            bn_rows_channel(k, x, N, C, S, c, &per_channel[c]);
    } else {
        const size_t blk = nk_colview_block(&v);
        for (size_t c0 = 0; c0 < C; c0 += blk)
            nk_colview_moments(k, x, &v, c0, C - c0 < blk ? C - c0 : blk, per_channel + c0);
    }
    nk_clear_error();
    return NK_OK;
}

nk_status nk_batch_norm_apply_moments(const float *x, const nk_shape *shape,
                                      const nk_moments *per_channel, const float *weight,
                                      const float *bias, double eps, nk_running_stats *running,
                                      float *y, float *save_mean, float *save_invstd,
                                      const nk_options *opts)
{
    static const char fn[] = "nk_batch_norm_apply_moments";
    size_t total;
    nk_epilogue ep;
    nk_status st = bn_check_common(fn, x, shape, y, eps, running, opts, &total, &ep);
    if (st)
        return st;
    if (!per_channel)
        return nk_fail(NK_ERR_NULL_POINTER, "%s: per_channel is NULL", fn);
    if ((st = bn_check_moments_array(fn, shape)))
        return st;
    const double own = (double)shape->n * (double)shape->spatial;
    for (int64_t c = 0; c < shape->c; c++) {
        double cnt = per_channel[c].count;
        if (!(cnt >= 0.0) || isinf(cnt) || cnt != floor(cnt))
            return nk_fail(NK_ERR_BAD_PARAM, "%s: per_channel[%lld].count must be a whole number >= 0, got %g",
                           fn, (long long)c, cnt);
        if (cnt < own)
            return nk_fail(NK_ERR_BAD_PARAM,
                           "%s: per_channel[%lld].count = %g is below this shard's own %g values "
                           "(n * spatial): the moments must be merged over every shard",
                           fn, (long long)c, cnt, own);
        if (per_channel[c].m2 < 0.0)
            return nk_fail(NK_ERR_BAD_PARAM, "%s: per_channel[%lld].m2 must be >= 0, got %g", fn,
                           (long long)c, per_channel[c].m2);
        if (cnt == 1.0)
            return nk_fail(NK_ERR_TOO_FEW_VALUES,
                           "Expected more than 1 value per channel when training, got %g value(s) "
                           "for channel %lld",
                           cnt, (long long)c);
    }
    bn_ctx cx = {weight, bias, eps, 0.0, running, save_mean, save_invstd};
    if (running)
        cx.momentum = nk_effective_momentum(running);
    bn_run(nk_kernels_current(), x, shape, per_channel, &cx, y, &ep);
    nk_clear_error();
    return NK_OK;
}

/* m, a, b of nc channels from running statistics (a in fp32, as PyTorch's
 * inference; vectorised by the kernel table: most of the cost of short
 * inputs). */
static void bn_infer_params(const nk_kernels *k, const float *rmean, const float *rvar,
                            const float *weight, const float *bias, double eps, size_t nc,
                            float *m, float *a, float *b)
{
    k->inv_scale(rvar, weight, (float)eps, nc, a);
    memcpy(m, rmean, nc * sizeof *m);
    if (bias)
        memcpy(b, bias, nc * sizeof *b);
    else
        memset(b, 0, nc * sizeof *b);
}

nk_status nk_batch_norm_infer(const float *x, const nk_shape *shape, const float *weight,
                              const float *bias, const float *running_mean,
                              const float *running_var, double eps, float *y,
                              const nk_options *opts)
{
    return nk_batch_norm_infer_as("nk_batch_norm_infer", x, shape, weight, bias, running_mean,
                                  running_var, eps, y, opts);
}

nk_status nk_batch_norm_infer_as(const char *fn, const float *x, const nk_shape *shape,
                                 const float *weight, const float *bias, const float *running_mean,
                                 const float *running_var, double eps, float *y,
                                 const nk_options *opts)
{
    size_t total;
    nk_epilogue ep;
    nk_status st = bn_check_common(fn, x, shape, y, eps, NULL, opts, &total, &ep);
    if (st)
        return st;
    if (!running_mean || !running_var)
        return nk_fail(NK_ERR_NULL_POINTER, "%s: running_%s is NULL", fn,
                       running_mean ? "var" : "mean");
    const nk_kernels *k = nk_kernels_current();
    const size_t N = (size_t)shape->n, C = (size_t)shape->c, S = (size_t)shape->spatial;
    nk_colview v;
    const bool cols = nk_bn_colview(shape, &v);
    const size_t blk = cols ? nk_colview_block(&v) : NK_CBLK;
    float m[NK_CBLK], a[NK_CBLK], b[NK_CBLK];
    for (size_t c0 = 0; c0 < C && total; c0 += blk) {
        size_t nc = C - c0 < blk ? C - c0 : blk;
        bn_infer_params(k, running_mean + c0, running_var + c0, weight ? weight + c0 : NULL,
                        bias ? bias + c0 : NULL, eps, nc, m, a, b);
        if (cols) {
            nk_colview_normalize(k, x, y, &v, c0, nc, m, a, b, &ep);
        } else {
            for (size_t n = 0; n < N; n++) {
                size_t off = (n * C + c0) * S;
                k->norm_rows(x + off, y + off, nc, S, S, S, m, a, b, 1, &ep);
            }
        }
    }
    nk_clear_error();
    return NK_OK;
}
