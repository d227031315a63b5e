/*
 * GroupNorm: statistics per (n, g) over C / G channels and every spatial
 * position. Plans on the block driver:
 *   channels-first  a group is C / G rows of `spatial` floats (one row of
 *                   (C / G) * spatial when the channels are back to back);
 *                   fused blocks of groups, long groups cut into pieces.
 *   channels-last   the column view of each sample: blocks of whole groups,
 *                   pieces of positions; per-channel moments merge into their
 *                   group in channel order (Chan, exact).
 */
#include <math.h>
#include <string.h>

#include "ops/internal.h"

typedef struct gn_op {
    const nk_call *cl;
    const float *weight, *bias;
    double eps;
    float *save_mean, *save_invstd;
    size_t G, cpg;
    size_t gb, pieces, groups; /* groups per block, pieces, all groups (N * G) */
    size_t nblk;               /* channels-last: blocks per sample */
    bool rowwise;              /* channels-first with back-to-back channels */
    nk_grid g;                 /* rowwise: group q at grid row q */
} gn_op;

typedef struct gn_par {
    float mean[NK_CBLK], rstd[NK_CBLK];
} gn_par;

static void gn_stats(const gn_op *o, size_t q, const nk_moments *mo, gn_par *pp, size_t i)
{
    double r = nk_rstd(mo->m2 / mo->count, o->eps);
    pp->mean[i] = (float)mo->mean;
    pp->rstd[i] = (float)r;
    if (o->save_mean)
        o->save_mean[q] = (float)mo->mean;
    if (o->save_invstd)
        o->save_invstd[q] = (float)r;
}

/* m/a/b of nc channels from c (all in one group). */
static void gn_params(const gn_op *o, size_t c, size_t nc, float mean, float rstd, float *m, float *a,
                      float *b)
{
    for (size_t i = 0; i < nc; i++) {
        m[i] = mean;
        a[i] = (o->weight ? o->weight[c + i] : 1.0f) * rstd;
        b[i] = o->bias ? o->bias[c + i] : 0.0f;
    }
}

/* ---- channels-first ---- */

static size_t gn_rows_groups(void *op, size_t b)
{
    const gn_op *o = op;
    return o->groups - b * o->gb < o->gb ? o->groups - b * o->gb : o->gb;
}

static size_t gn_xoff(const gn_op *o, size_t q)
{
    const nk_call *cl = o->cl;
    return (q / o->G) * cl->xs0 + (q % o->G) * o->cpg * cl->xs1;
}

static size_t gn_yoff(const gn_op *o, size_t q)
{
    const nk_call *cl = o->cl;
    return (q / o->G) * cl->ys0 + (q % o->G) * o->cpg * cl->ys1;
}

static void gn_rows_moments(void *op, size_t b, size_t p, nk_moments *part)
{
    const gn_op *o = op;
    const nk_call *cl = o->cl;
    const size_t q0 = b * o->gb, q1 = q0 + gn_rows_groups(op, b), L = o->cpg * cl->s;
    size_t lo = 0, hi = L;
    if (o->pieces > 1)
        nk_piece_range(L, o->pieces, p, &lo, &hi);
    if (o->rowwise && o->pieces == 1) {
        for (size_t q = q0; q < q1;) {
            size_t xs, ys, e = nk_grid_run(&o->g, q, q1, &xs, &ys);
            nk_rows_moments(cl->k, nk_xat(cl->k, cl->x, nk_grid_x(&o->g, q)), e - q, L, xs, part + (q - q0));
            q = e;
        }
        return;
    }
    for (size_t q = q0; q < q1; q++) {
        const void *x = nk_xat(cl->k, cl->x, gn_xoff(o, q));
        if (o->rowwise)
            nk_segs_moments(cl->k, x, L, L, lo, hi, &part[q - q0]);
        else
            nk_segs_moments(cl->k, x, cl->s, cl->xs1, lo, hi, &part[q - q0]);
    }
}

static void gn_rows_finalize(void *op, size_t b, const nk_moments *mo, void *par)
{
    const gn_op *o = op;
    for (size_t i = 0, g = gn_rows_groups(op, b); i < g; i++)
        gn_stats(o, b * o->gb + i, &mo[i], par, i);
}

static void gn_rows_normalize(void *op, size_t b, size_t p, const void *par)
{
    const gn_op *o = op;
    const nk_call *cl = o->cl;
    const gn_par *pp = par;
    const size_t q0 = b * o->gb, S = cl->s, L = o->cpg * S;
    size_t lo = 0, hi = L;
    if (o->pieces > 1)
        nk_piece_range(L, o->pieces, p, &lo, &hi);
    float m[64], a[64], bb[64];
    for (size_t i = 0, ng = gn_rows_groups(op, b); i < ng; i++) {
        const size_t q = q0 + i, c0 = (q % o->G) * o->cpg;
        const void *x = nk_xat(cl->k, cl->x, gn_xoff(o, q));
        void *y = nk_yat(cl->k, cl->y, gn_yoff(o, q));
        if (lo == 0 && hi == L) {
            /* whole channels, 64 per call */
            for (size_t j0 = 0; j0 < o->cpg; j0 += 64) {
                size_t nj = o->cpg - j0 < 64 ? o->cpg - j0 : 64;
                gn_params(o, c0 + j0, nj, pp->mean[i], pp->rstd[i], m, a, bb);
                cl->k->norm_rows(nk_xat(cl->k, x, j0 * cl->xs1), nk_yat(cl->k, y, j0 * cl->ys1), nj, S, cl->xs1, cl->ys1, m, a,
                                 bb, 1, &cl->ep);
            }
            continue;
        }
        /* a piece: the channels it overlaps, each its part */
        for (size_t j = lo / S; j * S < hi; j++) {
            size_t s0 = j * S > lo ? j * S : lo, s1 = (j + 1) * S < hi ? (j + 1) * S : hi;
            gn_params(o, c0 + j, 1, pp->mean[i], pp->rstd[i], m, a, bb);
            nk_segs_normalize(cl->k, nk_xat(cl->k, x, j * cl->xs1), nk_yat(cl->k, y, j * cl->ys1), S, S, S, s0 - j * S,
                              s1 - j * S, m[0], a[0], bb[0], &cl->ep);
        }
    }
}

static void gn_channels_first(nk_call *cl, gn_op *o)
{
    const size_t L = o->cpg * cl->s;
    o->groups = cl->n * o->G;
    o->rowwise = o->cpg == 1 || (cl->xs1 == cl->s && cl->ys1 == cl->s);
    o->g = (nk_grid){o->G, cl->xs0, o->cpg * cl->xs1, cl->ys0, o->cpg * cl->ys1};
    o->gb = L > NK_FUSE_FLOATS ? 1 : nk_row_block(L);
    o->pieces = L > NK_FUSE_FLOATS ? nk_pieces_for(L) : 1;
    nk_plan pl = {
        .blocks = (o->groups + o->gb - 1) / o->gb,
        .pieces = o->pieces,
        .bgroups = o->gb,
        .bfloats = 2 * o->gb * L,
        .op = o,
        .groups = gn_rows_groups,
        .moments = gn_rows_moments,
        .finalize = gn_rows_finalize,
        .normalize = gn_rows_normalize,
        .param_bytes = sizeof(gn_par),
    };
    nk_call_run(cl, &pl);
}

/* ---- channels-last ---- */

/* Block b: sample n, first group, group count. */
static void gn_cblock(const gn_op *o, size_t b, size_t *n, size_t *g0, size_t *ng)
{
    *n = b / o->nblk;
    *g0 = (b % o->nblk) * o->gb;
    *ng = o->G - *g0 < o->gb ? o->G - *g0 : o->gb;
}

static size_t gn_cols_groups(void *op, size_t b)
{
    size_t n, g0, ng;
    gn_cblock(op, b, &n, &g0, &ng);
    return ng;
}

static void gn_cols_moments(void *op, size_t b, size_t p, nk_moments *part)
{
    const gn_op *o = op;
    size_t n, g0, ng, r0, r1;
    gn_cblock(o, b, &n, &g0, &ng);
    nk_cv cv;
    nk_cv_for_sample(o->cl, n, &cv);
    nk_piece_range(cv.rows, o->pieces, p, &r0, &r1);
    const size_t c0 = g0 * o->cpg, c1 = (g0 + ng) * o->cpg;
    nk_moments ch[NK_CBLK];
    for (size_t c = c0; c < c1; c += NK_CBLK) {
        size_t nc = c1 - c < NK_CBLK ? c1 - c : NK_CBLK;
        memset(ch, 0, nc * sizeof ch[0]);
        nk_cv_moments(&cv, r0, r1, c, nc, ch);
        for (size_t i = 0; i < nc; i++)
            nk_moments_merge_inline(&part[(c - c0 + i) / o->cpg], ch[i].count, ch[i].mean, ch[i].m2);
    }
}

static void gn_cols_finalize(void *op, size_t b, const nk_moments *mo, void *par)
{
    const gn_op *o = op;
    size_t n, g0, ng;
    gn_cblock(o, b, &n, &g0, &ng);
    for (size_t i = 0; i < ng; i++)
        gn_stats(o, n * o->G + g0 + i, &mo[i], par, i);
}

static void gn_cols_normalize(void *op, size_t b, size_t p, const void *par)
{
    const gn_op *o = op;
    const gn_par *pp = par;
    size_t n, g0, ng, r0, r1;
    gn_cblock(o, b, &n, &g0, &ng);
    nk_cv cv;
    nk_cv_for_sample(o->cl, n, &cv);
    nk_piece_range(cv.rows, o->pieces, p, &r0, &r1);
    const size_t c0 = g0 * o->cpg, c1 = (g0 + ng) * o->cpg;
    float m[NK_CBLK], a[NK_CBLK], bb[NK_CBLK], w[3 * NK_CBLK];
    for (size_t c = c0; c < c1; c += NK_CBLK) {
        size_t nc = c1 - c < NK_CBLK ? c1 - c : NK_CBLK;
        for (size_t i = 0; i < nc;) {
            /* runs of channels of one group */
            size_t q = (c - c0 + i) / o->cpg, end = (q + 1) * o->cpg + c0 - c;
            end = end < nc ? end : nc;
            gn_params(o, c + i, end - i, pp->mean[q], pp->rstd[q], m + i, a + i, bb + i);
            i = end;
        }
        const size_t W = nk_cv_cols(&cv, nc);
        nk_cv_expand(&cv, nc, m, a, bb, w, w + W, w + 2 * W);
        nk_cv_normalize(&cv, r0, r1, c, nc, w, w + W, w + 2 * W, &o->cl->ep);
    }
}

static void gn_channels_last(nk_call *cl, gn_op *o)
{
    const size_t S = cl->s;
    nk_cv cv;
    nk_cv_for_sample(cl, 0, &cv);
    o->pieces = nk_cv_pieces(&cv, o->G);
    /* whole groups, at most NK_CBLK of them, as many as one wave's partials hold */
    size_t gb = o->cpg >= NK_CBLK ? 1 : NK_CBLK / o->cpg;
    size_t fit = (NK_STACK_SCRATCH - 512) / (o->pieces * sizeof(nk_moments));
    gb = gb < fit ? gb : fit;
    o->gb = gb < o->G ? gb : o->G;
    o->nblk = (o->G + o->gb - 1) / o->gb;
    nk_plan pl = {
        .blocks = cl->n * o->nblk,
        .pieces = o->pieces,
        .bgroups = o->gb,
        .bfloats = 2 * S * o->gb * o->cpg,
        .op = o,
        .groups = gn_cols_groups,
        .moments = gn_cols_moments,
        .finalize = gn_cols_finalize,
        .normalize = gn_cols_normalize,
        .param_bytes = sizeof(gn_par),
    };
    nk_call_run(cl, &pl);
}

static nk_status gn_run(nk_call *cl, int64_t groups, const float *weight, const float *bias,
                        double eps, float *save_mean, float *save_invstd)
{
    const char *fn = cl->fn;
    if (groups < 1)
        return nk_fail(NK_ERR_BAD_PARAM, "%s: num_groups must be at least 1, got %lld", fn,
                       (long long)groups);
    if ((int64_t)cl->c % groups)
        return nk_fail(NK_ERR_BAD_PARAM,
                       "Expected number of channels in input to be divisible by num_groups, but got "
                       "input of shape [%lld, %lld, %lld] and num_groups=%lld",
                       (long long)cl->n, (long long)cl->c, (long long)cl->s, (long long)groups);
    if (cl->total == 0) {
        nk_clear_error();
        return NK_OK;
    }
    if (cl->n * (cl->c / (size_t)groups) * cl->s == 1) {
        char sz[96];
        nk_format_size(sz, sizeof sz, (int64_t)(cl->n * cl->c / (size_t)groups), groups,
                       (int64_t)cl->s);
        return nk_fail(NK_ERR_TOO_FEW_VALUES,
                       "Expected more than 1 value per channel when training, got input size %s", sz);
    }
    gn_op o = {.cl = cl, .weight = weight, .bias = bias, .eps = eps, .save_mean = save_mean,
               .save_invstd = save_invstd, .G = (size_t)groups, .cpg = cl->c / (size_t)groups};
    if (cl->layout == NK_CHANNELS_FIRST)
        gn_channels_first(cl, &o);
    else
        gn_channels_last(cl, &o);
    nk_clear_error();
    return NK_OK;
}

nk_status nk_group_norm(const float *x, const nk_shape *shape, int64_t groups, const float *weight,
                        const float *bias, double eps, float *y, float *save_mean,
                        float *save_invstd, const nk_options *opts)
{
    nk_call cl;
    nk_status st = nk_call_from_shape(&cl, "nk_group_norm", x, shape, y, eps, opts);
    return st ? st : gn_run(&cl, groups, weight, bias, eps, save_mean, save_invstd);
}

nk_status nk_group_norm_ex(const nk_context *ctx, const nk_tensor_desc *desc, const void *x, void *y,
                           int64_t groups, const void *weight, const void *bias, double eps,
                           float *save_mean, float *save_invstd)
{
    nk_call cl;
    nk_status st = nk_call_from_desc(&cl, "nk_group_norm_ex", ctx, desc, x, y, eps, true);
    nk_params pp;
    if (st || (st = nk_call_params(&cl, weight, bias, false, &pp)))
        return st;
    st = gn_run(&cl, groups, pp.w, pp.b, eps, save_mean, save_invstd);
    nk_params_free(&pp);
    return st;
}
