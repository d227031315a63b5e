/*
 * BatchNorm: statistics per channel over the batch and every spatial position.
 * Two plans on the block driver:
 *   rows     channels-first with long rows: a group is a channel, N rows of
 *            `spatial` floats. Channels that fit NK_FUSE_FLOATS run fused
 *            (moments, finalize, normalize while in cache), several per block
 *            when short; longer ones are cut into pieces of their N * spatial
 *            positions.
 *   columns  channels-last, or channels-first with a short spatial extent such
 *            as an (N, C) input (nk_cv): blocks of channels, pieces of rows;
 *            moments of every piece, merged in piece order, then normalize.
 * Training, inference, given moments (nk_batch_norm_apply_moments) and
 * statistics alone (nk_batch_norm_stats) are the same plans with a different
 * finalize.
 */
#include <math.h>
#include <string.h>

#include "ops/internal.h"

enum { BN_TRAIN, BN_GIVEN, BN_INFER, BN_STATS };

typedef struct bn_op {
    const nk_call *cl;
    int mode;
    const float *weight, *bias;
    double eps, momentum;
    nk_running_stats *rs;
    float *save_mean, *save_invstd;
    const nk_moments *given;   /* BN_GIVEN */
    const float *rmean, *rvar; /* BN_INFER */
    nk_moments *stats;         /* BN_STATS */
    bool cols;
    nk_cv cv;
    size_t cb;     /* channels per block (inference rows: (n, c) rows per block) */
    size_t pieces; /* per block */
    nk_grid g;     /* inference rows: (n, c) rows in memory order */
} bn_op;

static size_t bn_groups(void *op, size_t b)
{
    const bn_op *o = op;
    size_t c0 = b * o->cb;
    return o->cl->c - c0 < o->cb ? o->cl->c - c0 : o->cb;
}

/* Statistics of channels [c0, c0 + nc) -> their m, a, b; running statistics
 * and saves, in fp64 vectors by the kernel table's bn_finalize (short inputs
 * with many channels spend much of their time here). */
static void bn_finalize_chunk(const bn_op *o, size_t c0, size_t nc, const nk_moments *mo, float *m,
                              float *a, float *b)
{
    const nk_bn_fin f = {
        .eps = o->eps,
        .momentum = o->momentum,
        .unbiased = o->rs ? o->rs->unbiased : 0,
        .weight = o->weight ? o->weight + c0 : NULL,
        .bias = o->bias ? o->bias + c0 : NULL,
        .save_mean = o->save_mean ? o->save_mean + c0 : NULL,
        .save_invstd = o->save_invstd ? o->save_invstd + c0 : NULL,
        .rmean = o->rs ? o->rs->mean + c0 : NULL,
        .rvar = o->rs ? o->rs->var + c0 : NULL,
    };
    o->cl->k->bn_finalize(mo, nc, &f, m, a, b);
}

/* Inference m, a, b of nc channels from the running statistics (a in fp32,
 * as PyTorch's inference). */
static void bn_infer_chunk(const bn_op *o, size_t c0, size_t nc, float *m, float *a, float *b)
{
    o->cl->k->inv_scale(o->rvar + c0, o->weight ? o->weight + c0 : NULL, (float)o->eps, nc, a);
    memcpy(m, o->rmean + c0, nc * sizeof *m);
    if (o->bias)
        memcpy(b, o->bias + c0, nc * sizeof *b);
    else
        memset(b, 0, nc * sizeof *b);
}

/* Per-channel m, a, b of block b's channels; false for statistics only. */
static bool bn_params(const bn_op *o, size_t blk, const nk_moments *mo, float *m, float *a, float *b)
{
    const size_t c0 = blk * o->cb, nc = bn_groups((void *)o, blk);
    if (o->mode == BN_STATS) {
        memcpy(o->stats + c0, mo, nc * sizeof *mo);
        return false;
    }
    for (size_t i = 0; i < nc; i += NK_CBLK) {
        size_t n = nc - i < NK_CBLK ? nc - i : NK_CBLK;
        if (o->mode == BN_INFER)
            bn_infer_chunk(o, c0 + i, n, m + i, a + i, b + i);
        else
            bn_finalize_chunk(o, c0 + i, n, o->mode == BN_GIVEN ? o->given + c0 + i : mo + i, m + i,
                              a + i, b + i);
    }
    return true;
}

/* ---- rows plan: channels-first, long rows ---- */

typedef struct bn_rpar {
    float m[64], a[64], b[64];
} bn_rpar;

/* Channel c's positions [lo, hi) of its N rows of S: moments merged into acc. */
static void bn_rows_moments(void *op, size_t blk, size_t p, nk_moments *part)
{
    const bn_op *o = op;
    const nk_call *cl = o->cl;
    const size_t S = cl->s, L = cl->n * S;
    for (size_t i = 0, nc = bn_groups(op, blk); i < nc; i++) {
        size_t lo = 0, hi = L;
        if (o->pieces > 1)
            nk_piece_range(L, o->pieces, p, &lo, &hi);
        nk_segs_moments(cl->k, nk_xat(cl->k, cl->x, (blk * o->cb + i) * cl->xs1), S, cl->xs0, lo, hi, &part[i]);
    }
}

static void bn_rows_finalize(void *op, size_t blk, const nk_moments *mo, void *par)
{
    bn_rpar *pp = par;
    bn_params(op, blk, mo, pp->m, pp->a, pp->b);
}

static void bn_rows_normalize(void *op, size_t blk, size_t p, const void *par)
{
    const bn_op *o = op;
    if (!o->cl->total) /* an empty shard: statistics only */
        return;
    const nk_call *cl = o->cl;
    const bn_rpar *pp = par;
    const size_t S = cl->s, L = cl->n * S;
    for (size_t i = 0, nc = bn_groups(op, blk); i < nc; i++) {
        size_t lo = 0, hi = L, c = blk * o->cb + i;
        if (o->pieces > 1)
            nk_piece_range(L, o->pieces, p, &lo, &hi);
        nk_segs_normalize(cl->k, nk_xat(cl->k, cl->x, c * cl->xs1), nk_yat(cl->k, cl->y, c * cl->ys1), S, cl->xs0, cl->ys0, lo,
                          hi, pp->m[i], pp->a[i], pp->b[i], &cl->ep);
    }
}

/* Inference, channels-first with long rows: (n, c) rows in memory order,
 * blocks of rows; a block's parameters are its channels' (recomputed per
 * sample: a few per thousand elements). */
static size_t bn_irows_groups(void *op, size_t b)
{
    const bn_op *o = op;
    const size_t rows = o->cl->n * o->cl->c;
    return rows - b * o->cb < o->cb ? rows - b * o->cb : o->cb;
}

static void bn_irows_finalize(void *op, size_t b, const nk_moments *mo, void *par)
{
    const bn_op *o = op;
    bn_rpar *pp = par;
    const size_t C = o->cl->c, q0 = b * o->cb, nq = bn_irows_groups(op, b);
    for (size_t i = 0; i < nq;) {
        /* runs of consecutive channels, broken where a sample ends */
        size_t c = (q0 + i) % C, n = C - c < nq - i ? C - c : nq - i;
        bn_infer_chunk(o, c, n, pp->m + i, pp->a + i, pp->b + i);
        i += n;
    }
}

static void bn_irows_normalize(void *op, size_t b, size_t p, const void *par)
{
    const bn_op *o = op;
    const nk_call *cl = o->cl;
    const bn_rpar *pp = par;
    const size_t q0 = b * o->cb, q1 = q0 + bn_irows_groups(op, b);
    for (size_t q = q0; q < q1;) {
        size_t xs, ys, e = nk_grid_run(&o->g, q, q1, &xs, &ys);
        cl->k->norm_rows(nk_xat(cl->k, cl->x, nk_grid_x(&o->g, q)), nk_yat(cl->k, cl->y, nk_grid_y(&o->g, q)), e - q, cl->s, xs,
                         ys, pp->m + (q - q0), pp->a + (q - q0), pp->b + (q - q0), 1, &cl->ep);
        q = e;
    }
}

/* ---- columns plan ---- */

static void bn_cols_moments(void *op, size_t blk, size_t p, nk_moments *part)
{
    const bn_op *o = op;
    size_t r0, r1;
    nk_piece_range(o->cv.rows, o->pieces, p, &r0, &r1);
    nk_cv_moments(&o->cv, r0, r1, blk * o->cb, bn_groups(op, blk), part);
}

/* Per-column parameters of a block: m, a, b of nk_cv_cols columns each. */
static void bn_cols_finalize(void *op, size_t blk, const nk_moments *mo, void *par)
{
    const bn_op *o = op;
    const size_t nc = bn_groups(op, blk), W = nk_cv_cols(&o->cv, nc);
    float *cm = par, *ca = cm + W, *cb = ca + W;
    float m[NK_CBLK], a[NK_CBLK], b[NK_CBLK];
    if (o->mode == BN_STATS) {
        bn_params(o, blk, mo, m, a, b);
        return;
    }
    if (nc <= NK_CBLK && W != nc) {
        /* expansion: per channel first */
        bn_params(o, blk, mo, m, a, b);
        nk_cv_expand(&o->cv, nc, m, a, b, cm, ca, cb);
        return;
    }
    /* one column per channel: straight into the column arrays */
    bn_params(o, blk, mo, cm, ca, cb);
    if (W != nc) {
        /* rep > 1 with more than NK_CBLK channels: expand in place from the end */
        for (size_t c = nc; c-- > 0;)
            for (size_t j = o->cv.rep; j-- > 0;) {
                cm[c * o->cv.rep + j] = cm[c];
                ca[c * o->cv.rep + j] = ca[c];
                cb[c * o->cv.rep + j] = cb[c];
            }
    }
}

static void bn_cols_normalize(void *op, size_t blk, size_t p, const void *par)
{
    const bn_op *o = op;
    if (!o->cl->total) /* an empty shard: statistics only */
        return;
    const size_t nc = bn_groups(op, blk), W = nk_cv_cols(&o->cv, nc);
    const float *cm = par, *ca = cm + W, *cb = ca + W;
    size_t r0, r1;
    nk_piece_range(o->cv.rows, o->pieces, p, &r0, &r1);
    nk_cv_normalize(&o->cv, r0, r1, blk * o->cb, nc, cm, ca, cb, &o->cl->ep);
}

static void bn_run(nk_call *cl, bn_op *o)
{
    const size_t N = cl->n, C = cl->c, S = cl->s;
    nk_plan pl = {.op = o, .groups = bn_groups};
    const bool stats = o->mode == BN_STATS, given = o->mode != BN_TRAIN && !stats;
    o->cols = nk_cv_for_bn(cl, &o->cv);
    if (o->cols) {
        const size_t rows = o->cv.rows;
        o->pieces = nk_cv_pieces(&o->cv, given ? 0 : C);
        pl.pieces = o->pieces;
        pl.moments = given ? NULL : bn_cols_moments;
        o->cb = nk_cv_block(&o->cv, &pl, C, C);
        if (given && o->cb < C) {
            /* inference whose per-column parameters do not fit one wave:
             * fused blocks of channels over whole rows instead of waves of
             * one block */
            o->pieces = pl.pieces = 1;
            o->cb = nk_cv_block(&o->cv, &pl, C, nk_cv_fused_channels(&o->cv, C));
        } else if (!given && o->pieces == 1 && rows * o->cv.width >= NK_CV_SPLIT_FLOATS) {
            /* training with rows too few to cut: blocks of channels, once the
             * tensor is large enough to pay for reading rows in strided
             * parts (AVX-512, 64x512 in two blocks of 256 channels: 0.20 ->
             * 0.18 of memcpy on one thread) */
            o->cb = nk_cv_block(&o->cv, &pl, C, nk_cv_fused_channels(&o->cv, C));
        }
        pl.bgroups = o->cb;
        pl.param_bytes = stats ? 0 : 3 * nk_cv_cols(&o->cv, o->cb) * sizeof(float);
        pl.bfloats = 2 * rows * o->cb * o->cv.rep;
        pl.finalize = bn_cols_finalize;
        pl.normalize = stats ? NULL : bn_cols_normalize;
    } else if (o->mode == BN_INFER) {
        o->g = (nk_grid){C, cl->xs0, cl->xs1, cl->ys0, cl->ys1};
        /* one pass over the data: blocks of about 4 pieces, at most 64 rows */
        o->cb = 4 * NK_PIECE_FLOATS / S;
        o->cb = o->cb < 1 ? 1 : o->cb > 64 ? 64 : o->cb;
        o->pieces = 1;
        pl.pieces = 1;
        pl.bgroups = o->cb;
        pl.groups = bn_irows_groups;
        pl.param_bytes = sizeof(bn_rpar);
        pl.bfloats = 2 * o->cb * S;
        pl.finalize = bn_irows_finalize;
        pl.normalize = bn_irows_normalize;
        pl.blocks = (N * C + o->cb - 1) / o->cb;
        nk_call_run(cl, &pl);
        return;
    } else {
        const size_t L = N * S;
        o->cb = L > NK_FUSE_FLOATS ? 1 : nk_row_block(L);
        o->pieces = L > NK_FUSE_FLOATS ? nk_pieces_for(L) : 1;
        pl.pieces = o->pieces;
        pl.bgroups = o->cb;
        pl.moments = given ? NULL : bn_rows_moments;
        pl.param_bytes = stats ? 0 : sizeof(bn_rpar);
        pl.bfloats = 2 * o->cb * L;
        pl.finalize = bn_rows_finalize;
        pl.normalize = stats ? NULL : bn_rows_normalize;
    }
    pl.blocks = (C + o->cb - 1) / o->cb;
    nk_call_run(cl, &pl);
}

/* per_channel holds C nk_moments: larger than a float per channel */
static nk_status bn_check_moments_array(const char *fn, const nk_call *cl)
{
    const int64_t c = (int64_t)cl->c;
    if (!nk_extents_fit(&c, 1, sizeof(nk_moments)))
        return nk_fail(NK_ERR_BAD_SHAPE,
                       "%s: c=%lld channels of per_channel moments do not fit in memory (at most %lld)",
                       fn, (long long)c, (long long)(PTRDIFF_MAX / sizeof(nk_moments)));
    return NK_OK;
}

/* ---- training ---- */

static nk_status bn_train(nk_call *cl, const float *weight, const float *bias, double eps,
                          nk_running_stats *running, float *save_mean, float *save_invstd)
{
    nk_status st;
    if (running && (st = nk_check_running(running, cl->fn, true)))
        return st;
    if (cl->total == 0) {
        if (running)
            nk_effective_momentum(running);
        nk_clear_error();
        return NK_OK;
    }
    if (cl->n * cl->s == 1) {
        char sz[96];
        nk_format_size(sz, sizeof sz, (int64_t)cl->n, (int64_t)cl->c, (int64_t)cl->s);
        return nk_fail(NK_ERR_TOO_FEW_VALUES,
                       "Expected more than 1 value per channel when training, got input size %s", sz);
    }
    bn_op o = {.cl = cl, .mode = BN_TRAIN, .weight = weight, .bias = bias, .eps = eps,
               .rs = running, .save_mean = save_mean, .save_invstd = save_invstd};
    if (running)
        o.momentum = nk_effective_momentum(running);
    bn_run(cl, &o);
    nk_clear_error();
    return NK_OK;
}

nk_status nk_batch_norm_train(const float *x, const nk_shape *shape, const float *weight,
                              const float *bias, double eps, nk_running_stats *running, float *y,
                              float *save_mean, float *save_invstd, const nk_options *opts)
{
    nk_call cl;
    nk_status st = nk_call_from_shape(&cl, "nk_batch_norm_train", x, shape, y, eps, opts);
    return st ? st : bn_train(&cl, weight, bias, eps, running, save_mean, save_invstd);
}

nk_status nk_batch_norm_train_ex(const nk_context *ctx, const nk_tensor_desc *desc, const void *x,
                                 void *y, const void *weight, const void *bias, double eps,
                                 nk_running_stats *running, float *save_mean, float *save_invstd)
{
    nk_call cl;
    nk_status st = nk_call_from_desc(&cl, "nk_batch_norm_train_ex", ctx, desc, x, y, eps, true);
    nk_params pp;
    if (st || (st = nk_call_params(&cl, weight, bias, false, &pp)))
        return st;
    st = bn_train(&cl, pp.w, pp.b, eps, running, save_mean, save_invstd);
    nk_params_free(&pp);
    return st;
}

/* ---- statistics alone ---- */

static nk_status bn_stats(nk_call *cl, nk_moments *per_channel)
{
    nk_status st;
    if (!per_channel)
        return nk_fail(NK_ERR_NULL_POINTER, "%s: per_channel is NULL", cl->fn);
    if ((st = bn_check_moments_array(cl->fn, cl)))
        return st;
    memset(per_channel, 0, cl->c * sizeof per_channel[0]);
    if (cl->total) {
        bn_op o = {.cl = cl, .mode = BN_STATS, .stats = per_channel};
        bn_run(cl, &o);
    }
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
    nk_call cl;
    /* y is not touched: the checks of an output see x */
    if ((st = nk_call_from_shape(&cl, fn, x, shape, x, 0.0, NULL)))
        return st;
    cl.y = NULL;
    return bn_stats(&cl, per_channel);
}

nk_status nk_batch_norm_stats_ex(const nk_context *ctx, const nk_tensor_desc *desc, const void *x,
                                 nk_moments *per_channel)
{
    nk_call cl;
    nk_status st = nk_call_from_desc(&cl, "nk_batch_norm_stats_ex", ctx, desc, x, NULL, 0.0, false);
    return st ? st : bn_stats(&cl, per_channel);
}

/* ---- given moments ---- */

static nk_status bn_apply(nk_call *cl, const nk_moments *per_channel, const float *weight,
                          const float *bias, double eps, nk_running_stats *running,
                          float *save_mean, float *save_invstd)
{
    const char *fn = cl->fn;
    nk_status st;
    if (running && (st = nk_check_running(running, fn, true)))
        return st;
    if (!per_channel)
        return nk_fail(NK_ERR_NULL_POINTER, "%s: per_channel is NULL", fn);
    if ((st = bn_check_moments_array(fn, cl)))
        return st;
    const double own = (double)cl->n * (double)cl->s;
    for (size_t c = 0; c < cl->c; c++) {
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
    bn_op o = {.cl = cl, .mode = BN_GIVEN, .weight = weight, .bias = bias, .eps = eps,
               .rs = running, .save_mean = save_mean, .save_invstd = save_invstd,
               .given = per_channel};
    if (running)
        o.momentum = nk_effective_momentum(running);
    bn_run(cl, &o);
    nk_clear_error();
    return NK_OK;
}

nk_status nk_batch_norm_apply_moments(const float *x, const nk_shape *shape,
                                      const nk_moments *per_channel, const float *weight,
                                      const float *bias, double eps, nk_running_stats *running,
                                      float *y, float *save_mean, float *save_invstd,
                                      const nk_options *opts)
{
    nk_call cl;
    nk_status st = nk_call_from_shape(&cl, "nk_batch_norm_apply_moments", x, shape, y, eps, opts);
    return st ? st
              : bn_apply(&cl, per_channel, weight, bias, eps, running, save_mean, save_invstd);
}

nk_status nk_batch_norm_apply_moments_ex(const nk_context *ctx, const nk_tensor_desc *desc,
                                         const void *x, void *y, const nk_moments *per_channel,
                                         const void *weight, const void *bias, double eps,
                                         nk_running_stats *running, float *save_mean,
                                         float *save_invstd)
{
    nk_call cl;
    nk_status st =
        nk_call_from_desc(&cl, "nk_batch_norm_apply_moments_ex", ctx, desc, x, y, eps, true);
    nk_params pp;
    if (st || (st = nk_call_params(&cl, weight, bias, false, &pp)))
        return st;
    st = bn_apply(&cl, per_channel, pp.w, pp.b, eps, running, save_mean, save_invstd);
    nk_params_free(&pp);
    return st;
}

/* ---- inference ---- */

nk_status nk_bn_infer_call(nk_call *cl, const float *weight, const float *bias,
                           const float *running_mean, const float *running_var, double eps)
{
    if (!running_mean || !running_var)
        return nk_fail(NK_ERR_NULL_POINTER, "%s: running_%s is NULL", cl->fn,
                       running_mean ? "var" : "mean");
    if (cl->total) {
        bn_op o = {.cl = cl, .mode = BN_INFER, .weight = weight, .bias = bias, .eps = eps,
                   .rmean = running_mean, .rvar = running_var};
        bn_run(cl, &o);
    }
    nk_clear_error();
    return NK_OK;
}

nk_status nk_batch_norm_infer(const float *x, const nk_shape *shape, const float *weight,
                              const float *bias, const float *running_mean,
                              const float *running_var, double eps, float *y,
                              const nk_options *opts)
{
    nk_call cl;
    nk_status st = nk_call_from_shape(&cl, "nk_batch_norm_infer", x, shape, y, eps, opts);
    return st ? st : nk_bn_infer_call(&cl, weight, bias, running_mean, running_var, eps);
}

nk_status nk_batch_norm_infer_ex(const nk_context *ctx, const nk_tensor_desc *desc, const void *x,
                                 void *y, const void *weight, const void *bias,
                                 const float *running_mean, const float *running_var, double eps)
{
    nk_call cl;
    nk_status st = nk_call_from_desc(&cl, "nk_batch_norm_infer_ex", ctx, desc, x, y, eps, true);
    nk_params pp;
    if (st || (st = nk_call_params(&cl, weight, bias, false, &pp)))
        return st;
    st = nk_bn_infer_call(&cl, pp.w, pp.b, running_mean, running_var, eps);
    nk_params_free(&pp);
    return st;
}
