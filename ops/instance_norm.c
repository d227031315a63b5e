/*
 * InstanceNorm: statistics per (n, c) over the spatial positions.
 * Plans on the block driver:
 *   channels-first  a group is an (n, c) row of `spatial` floats; rows go in
 *                   fused blocks that stay in cache between the passes, long
 *                   rows are cut into pieces of positions. Rows of at most
 *                   NK_SHORT_ROW floats without running statistics go to
 *                   the fused short-row kernel instead.
 *   channels-last   the column view of each sample: blocks of channels,
 *                   pieces of positions.
 * With running statistics PyTorch updates each (n, c) copy of channel c's
 * running value and keeps their mean over n: groups are then ordered channel
 * major and finalized in order (the driver's sequential finalize), so each
 * channel's sum over n is formed in the same order for any thread count.
 */
#include <math.h>
#include <string.h>

#include "ops/internal.h"

typedef struct in_op {
    const nk_call *cl;
    const float *weight, *bias;
    double eps, momentum;
    nk_running_stats *rs;
    float *save_mean, *save_invstd;
    /* channels-first: groups are grid rows; channels-last: (n, channel block) */
    nk_grid g;
    size_t rb, pieces, rows;
    size_t cb, nblk; /* channels-last: channels per block, blocks per sample */
    /* running sums over n of the channels being finalized */
    double sum_mean[NK_CBLK], sum_var[NK_CBLK];
} in_op;

/* (n, c) of grid row q: channel major with running statistics. */
static void in_nc(const in_op *o, size_t q, size_t *n, size_t *c)
{
    if (o->rs)
        *c = q / o->cl->n, *n = q % o->cl->n;
    else
        *n = q / o->cl->c, *c = q % o->cl->c;
}

/* Groups (n[i], c[i]) of one block, i < g: m, a, b; saves; running update
 * (slot i: its channel's sums). The inverse standard deviations come
 * vectorised from the kernel table (the same IEEE expression as
 * nk_inv_std1). */
static void in_finalize(in_op *o, size_t g, const size_t *nn, const size_t *cc,
                        const nk_moments *mo, float *m, float *a, float *b)
{
    double var[NK_CBLK], inv[NK_CBLK];
    o->cl->k->inv_std(mo, g, o->eps, var, inv);
    const size_t C = o->cl->c, N = o->cl->n;
    for (size_t i = 0; i < g; i++) {
        const size_t n = nn[i], c = cc[i];
        m[i] = (float)mo[i].mean;
        a[i] = (float)((o->weight ? o->weight[c] : 1.0) * inv[i]);
        b[i] = o->bias ? o->bias[c] : 0.0f;
        if (o->save_mean)
            o->save_mean[n * C + c] = (float)mo[i].mean;
        if (o->save_invstd)
            o->save_invstd[n * C + c] = (float)inv[i];
    }
    if (!o->rs)
        return;
    const double mom = o->momentum;
    for (size_t i = 0; i < g; i++) {
        const size_t n = nn[i], c = cc[i];
        double v = o->rs->unbiased ? mo[i].m2 / (mo[i].count - 1.0) : var[i];
        /* slot of channel c: its position in a channels-last block, 0 for
         * the channel-major rows of channels-first */
        const size_t slot = o->rows ? 0 : i;
        if (n == 0)
            o->sum_mean[slot] = o->sum_var[slot] = 0.0;
        /* each per-(n, c) copy is rounded to float as PyTorch stores it */
        o->sum_mean[slot] += (float)(mom * mo[i].mean + (1.0 - mom) * (double)o->rs->mean[c]);
        o->sum_var[slot] += (float)(mom * v + (1.0 - mom) * (double)o->rs->var[c]);
        if (n == N - 1) {
            o->rs->mean[c] = (float)(o->sum_mean[slot] / (double)N);
            o->rs->var[c] = (float)(o->sum_var[slot] / (double)N);
        }
    }
}

/* ---- channels-first ---- */

typedef struct in_rpar {
    float m[64], a[64], b[64];
} in_rpar;

static size_t in_rows_groups(void *op, size_t b)
{
    const in_op *o = op;
    return o->rows - b * o->rb < o->rb ? o->rows - b * o->rb : o->rb;
}

static void in_rows_moments(void *op, size_t b, size_t p, nk_moments *part)
{
    const in_op *o = op;
    const nk_call *cl = o->cl;
    const size_t r0 = b * o->rb, r1 = r0 + in_rows_groups(op, b);
    if (o->pieces > 1) {
        size_t lo, hi;
        nk_piece_range(cl->s, o->pieces, p, &lo, &hi);
        nk_segs_moments(cl->k, nk_xat(cl->k, cl->x, nk_grid_x(&o->g, r0) + lo), hi - lo, hi - lo, 0, hi - lo,
                        part);
        return;
    }
    for (size_t r = r0; r < r1;) {
        size_t xs, ys, e = nk_grid_run(&o->g, r, r1, &xs, &ys);
        nk_rows_moments(cl->k, nk_xat(cl->k, cl->x, nk_grid_x(&o->g, r)), e - r, cl->s, xs, part + (r - r0));
        r = e;
    }
}

static void in_rows_finalize(void *op, size_t b, const nk_moments *mo, void *par)
{
    in_op *o = op;
    in_rpar *pp = par;
    const size_t r0 = b * o->rb, g = in_rows_groups(op, b);
    size_t nn[64], cc[64];
    for (size_t i = 0; i < g; i++)
        in_nc(o, r0 + i, &nn[i], &cc[i]);
    in_finalize(o, g, nn, cc, mo, pp->m, pp->a, pp->b);
}

static void in_rows_normalize(void *op, size_t b, size_t p, const void *par)
{
    const in_op *o = op;
    const nk_call *cl = o->cl;
    const in_rpar *pp = par;
    const size_t r0 = b * o->rb, r1 = r0 + in_rows_groups(op, b);
    if (o->pieces > 1) {
        size_t lo, hi;
        nk_piece_range(cl->s, o->pieces, p, &lo, &hi);
        cl->k->norm_rows(nk_xat(cl->k, cl->x, nk_grid_x(&o->g, r0) + lo), nk_yat(cl->k, cl->y, nk_grid_y(&o->g, r0) + lo), 1,
                         hi - lo, hi - lo, hi - lo, pp->m, pp->a, pp->b, 0, &cl->ep);
        return;
    }
    for (size_t r = r0; r < r1;) {
        size_t xs, ys, e = nk_grid_run(&o->g, r, r1, &xs, &ys);
        cl->k->norm_rows(nk_xat(cl->k, cl->x, nk_grid_x(&o->g, r)), nk_yat(cl->k, cl->y, nk_grid_y(&o->g, r)), e - r, cl->s, xs,
                         ys, pp->m + (r - r0), pp->a + (r - r0), pp->b + (r - r0), 1, &cl->ep);
        r = e;
    }
}

/*
 * Rows of at most NK_SHORT_ROW floats: norm_short with the per-row affine
 * computes each row's statistics and output in one call (fp32 statistics,
 * error bound in kernels/kernels.h), so a block is a call per run of rows
 * and nothing is left to finalize. A call's rows are equally strided and of
 * one sample, so their channels, and the weight and bias entries they take,
 * are consecutive. Rows are in sample-major order (no running statistics):
 * grid row q is (q / C, q % C), and save_mean / save_invstd index q too.
 */
static void in_short_normalize(void *op, size_t b, size_t p, const void *par)
{
    const in_op *o = op;
    const nk_call *cl = o->cl;
    (void)p, (void)par;
    const size_t C = cl->c, r0 = b * o->rb, r1 = r0 + in_rows_groups(op, b);
    for (size_t r = r0; r < r1;) {
        size_t xs, ys, e = nk_grid_run(&o->g, r, r1, &xs, &ys);
        const size_t c = r % C;
        if (e > r - c + C)
            e = r - c + C; /* the end of the sample: the channel wraps to 0 */
        cl->k->norm_short(nk_xat(cl->k, cl->x, nk_grid_x(&o->g, r)), nk_yat(cl->k, cl->y, nk_grid_y(&o->g, r)), e - r, cl->s,
                          xs, ys, o->weight ? o->weight + c : NULL, o->bias ? o->bias + c : NULL,
                          (float)o->eps, NK_SHORT_ROW_AFFINE,
                          o->save_mean ? o->save_mean + r : NULL,
                          o->save_invstd ? o->save_invstd + r : NULL, &cl->ep);
        r = e;
    }
}

static void in_channels_first(nk_call *cl, in_op *o)
{
    const size_t N = cl->n, C = cl->c, S = cl->s;
    o->rows = N * C;
    /* The short-row kernel keeps its statistics in fp32, while the running
     * update needs the fp64 variance; and it takes eps in fp32, so not where
     * eps would round to 0 (eps == 0 included: a constant row would get
     * 1 / sqrt(0), where the fp64 path gives PyTorch's 0). */
    if (!o->rs && S <= NK_SHORT_ROW && (float)o->eps > 0.0f) {
        o->g = (nk_grid){C, cl->xs0, cl->xs1, cl->ys0, cl->ys1};
        o->rb = NK_SHORT_BLOCK;
        o->pieces = 1;
        nk_plan pl = {
            .blocks = (o->rows + o->rb - 1) / o->rb,
            .pieces = 1,
            .bgroups = o->rb,
            .bfloats = 2 * o->rb * S,
            .op = o,
            .groups = in_rows_groups,
            .moments = NULL,
            .finalize = nk_short_finalize,
            .normalize = in_short_normalize,
            .param_bytes = 0,
        };
        nk_call_run(cl, &pl);
        return;
    }
    if (o->rs)
        o->g = (nk_grid){N, cl->xs1, cl->xs0, cl->ys1, cl->ys0};
    else
        o->g = (nk_grid){C, cl->xs0, cl->xs1, cl->ys0, cl->ys1};
    o->rb = S > NK_FUSE_FLOATS ? 1 : nk_row_block(S);
    o->pieces = S > NK_FUSE_FLOATS ? nk_pieces_for(S) : 1;
    nk_plan pl = {
        .blocks = (o->rows + o->rb - 1) / o->rb,
        .pieces = o->pieces,
        .bgroups = o->rb,
        .bfloats = 2 * o->rb * S,
        .seq_finalize = o->rs != NULL,
        .op = o,
        .groups = in_rows_groups,
        .moments = in_rows_moments,
        .finalize = in_rows_finalize,
        .normalize = in_rows_normalize,
        .param_bytes = sizeof(in_rpar),
    };
    nk_call_run(cl, &pl);
}

/* ---- channels-last ---- */

typedef struct in_cpar {
    float w[3 * NK_CBLK]; /* per-column m, a, b */
} in_cpar;

/* Block b: sample n and first channel; channel-block major with running
 * statistics (each channel's samples finalize consecutively). */
static void in_cblock(const in_op *o, size_t b, size_t *n, size_t *c0, size_t *nc)
{
    size_t cbi;
    if (o->rs)
        cbi = b / o->cl->n, *n = b % o->cl->n;
    else
        *n = b / o->nblk, cbi = b % o->nblk;
    *c0 = cbi * o->cb;
    *nc = o->cl->c - *c0 < o->cb ? o->cl->c - *c0 : o->cb;
}

static size_t in_cols_groups(void *op, size_t b)
{
    size_t n, c0, nc;
    in_cblock(op, b, &n, &c0, &nc);
    return nc;
}

static void in_cols_moments(void *op, size_t b, size_t p, nk_moments *part)
{
    const in_op *o = op;
    size_t n, c0, nc, r0, r1;
    in_cblock(o, b, &n, &c0, &nc);
    nk_cv cv;
    nk_cv_for_sample(o->cl, n, &cv);
    nk_piece_range(cv.rows, o->pieces, p, &r0, &r1);
    nk_cv_moments(&cv, r0, r1, c0, nc, part);
}

static void in_cols_finalize(void *op, size_t b, const nk_moments *mo, void *par)
{
    in_op *o = op;
    in_cpar *pp = par;
    size_t n, c0, nc;
    in_cblock(o, b, &n, &c0, &nc);
    float m[NK_CBLK], a[NK_CBLK], bb[NK_CBLK];
    size_t nn[NK_CBLK], cc[NK_CBLK];
    for (size_t i = 0; i < nc; i++)
        nn[i] = n, cc[i] = c0 + i;
    in_finalize(o, nc, nn, cc, mo, m, a, bb);
    nk_cv cv;
    nk_cv_for_sample(o->cl, n, &cv);
    const size_t W = nk_cv_cols(&cv, nc);
    nk_cv_expand(&cv, nc, m, a, bb, pp->w, pp->w + W, pp->w + 2 * W);
}

static void in_cols_normalize(void *op, size_t b, size_t p, const void *par)
{
    const in_op *o = op;
    const in_cpar *pp = par;
    size_t n, c0, nc, r0, r1;
    in_cblock(o, b, &n, &c0, &nc);
    nk_cv cv;
    nk_cv_for_sample(o->cl, n, &cv);
    nk_piece_range(cv.rows, o->pieces, p, &r0, &r1);
    const size_t W = nk_cv_cols(&cv, nc);
    nk_cv_normalize(&cv, r0, r1, c0, nc, pp->w, pp->w + W, pp->w + 2 * W, &o->cl->ep);
}

static void in_channels_last(nk_call *cl, in_op *o)
{
    const size_t N = cl->n, C = cl->c, S = cl->s;
    nk_cv cv;
    nk_cv_for_sample(cl, 0, &cv);
    o->pieces = nk_cv_pieces(&cv, C);
    nk_plan pl = {
        .pieces = o->pieces,
        .seq_finalize = o->rs != NULL,
        .op = o,
        .groups = in_cols_groups,
        .moments = in_cols_moments,
        .finalize = in_cols_finalize,
        .normalize = in_cols_normalize,
        .param_bytes = sizeof(in_cpar),
    };
    /* in_cpar: at most NK_CBLK columns (a widened full block has at most NK_CBLK too) */
    o->cb = nk_cv_block(&cv, &pl, C, NK_CBLK);
    o->nblk = (C + o->cb - 1) / o->cb;
    pl.bgroups = o->cb;
    pl.blocks = N * o->nblk;
    pl.bfloats = 2 * S * o->cb;
    nk_call_run(cl, &pl);
}

static nk_status in_run(nk_call *cl, const float *weight, const float *bias, double eps,
                        int use_input_stats, nk_running_stats *running, float *save_mean,
                        float *save_invstd)
{
    nk_status st;
    if (running && (st = nk_check_running(running, cl->fn, use_input_stats != 0)))
        return st;
    if (!use_input_stats) {
        if (!running)
            return nk_fail(NK_ERR_BAD_PARAM,
                           "Expected running_mean and running_var to be defined when "
                           "use_input_stats is false");
        return nk_bn_infer_call(cl, weight, bias, running->mean, running->var, eps);
    }
    /* PyTorch checks the spatial size alone, so an empty batch is refused too */
    if (cl->s == 1)
        return nk_fail(NK_ERR_TOO_FEW_VALUES,
                       "Expected more than 1 spatial element when training, got input size "
                       "[%lld, %lld, 1]",
                       (long long)cl->n, (long long)cl->c);
    if (cl->total) {
        in_op o = {.cl = cl, .weight = weight, .bias = bias, .eps = eps, .rs = running,
                   .save_mean = save_mean, .save_invstd = save_invstd};
        if (running)
            o.momentum = running->cumulative ? 0.0 : running->momentum;
        if (cl->layout == NK_CHANNELS_FIRST)
            in_channels_first(cl, &o);
        else
            in_channels_last(cl, &o);
    }
    nk_clear_error();
    return NK_OK;
}

nk_status nk_instance_norm(const float *x, const nk_shape *shape, const float *weight,
                           const float *bias, double eps, int use_input_stats,
                           nk_running_stats *running, float *y, float *save_mean,
                           float *save_invstd, const nk_options *opts)
{
    nk_call cl;
    nk_status st = nk_call_from_shape(&cl, "nk_instance_norm", x, shape, y, eps, opts);
    return st ? st
              : in_run(&cl, weight, bias, eps, use_input_stats, running, save_mean, save_invstd);
}

nk_status nk_instance_norm_ex(const nk_context *ctx, const nk_tensor_desc *desc, const void *x,
                              void *y, const void *weight, const void *bias, double eps,
                              int use_input_stats, nk_running_stats *running, float *save_mean,
                              float *save_invstd)
{
    nk_call cl;
    nk_status st = nk_call_from_desc(&cl, "nk_instance_norm_ex", ctx, desc, x, y, eps, true);
    nk_params pp;
    if (st || (st = nk_call_params(&cl, weight, bias, false, &pp)))
        return st;
    st = in_run(&cl, pp.w, pp.b, eps, use_input_stats, running, save_mean, save_invstd);
    nk_params_free(&pp);
    return st;
}
