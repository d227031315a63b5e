/*
 * LayerNorm and RMSNorm of a channels-first tensor: over c at every (n, s),
 * ConvNeXt's LayerNorm2d (data_format="channels_first"). No transpose: a
 * sample is a matrix of C rows (channels, stride xs1) and S columns
 * (positions, contiguous), and each position's statistics are the moments
 * (LayerNorm) or the sum of squares (RMSNorm) of its column over the C rows:
 *   phase 1  moments_cols / sumsq_cols of a tile of columns: fp32 inside the
 *            kernels' chunks of rows, fp64 across them
 *   finalize per column m = mean, s = 1 / sqrt(var + eps) (fp64, rounded
 *            to float), LayerNorm; m = 0, s = 1 / sqrt(sumsq / C + eps),
 *            RMSNorm; the expressions of the channels-last path
 *   phase 2  norm_cols_affine: y = act(((x - m[col]) * s[col]) * w[c] + b[c])
 * Plan: a block is a tile of at most CF_TILE consecutive positions of one
 * sample (its groups are the tile's columns), whole C per block, run fused:
 * the tile's C x T elements stay in L1 / L2 between the passes. Tiles
 * follow from (C, S) only, so every result is bitwise the same for any
 * thread count.
 */
#include <math.h>

#include "ops/internal.h"

/* Most columns of a tile: the fused schedule's group limit. */
#define CF_TILE NK_MAX_BGROUPS
/* Elements of a tile (C x T) aimed at: about a core's L2 in fp32. */
#ifndef NK_CF_TILE_FLOATS
#  define NK_CF_TILE_FLOATS ((size_t)1 << 16)
#endif
/* Fewest columns of a tile (when C is large): rows of a few cache lines. */
#define CF_TILE_MIN 64

typedef struct cf_op {
    const nk_call *cl;
    const float *weight, *bias; /* fp32, C entries each, or NULL */
    double eps;
    float *save_mean, *save_inv;
    bool rms;
    size_t tile, tiles; /* columns per tile, tiles per sample */
} cf_op;

typedef struct cf_par {
    float m[CF_TILE], s[CF_TILE];
} cf_par;

/* Sample and first position of block b, and its column count. */
static size_t cf_block(const cf_op *o, size_t b, size_t *n, size_t *s0)
{
    const size_t S = o->cl->s;
    *n = b / o->tiles;
    *s0 = (b % o->tiles) * o->tile;
    return S - *s0 < o->tile ? S - *s0 : o->tile;
}

static size_t cf_groups(void *op, size_t b)
{
    size_t n, s0;
    return cf_block(op, b, &n, &s0);
}

static void cf_moments(void *op, size_t b, size_t p, nk_moments *part)
{
    const cf_op *o = op;
    const nk_call *cl = o->cl;
    const nk_kernels *k = cl->k;
    (void)p;
    size_t n, s0;
    const size_t w = cf_block(o, b, &n, &s0);
    const void *x = nk_xat(k, cl->x, n * cl->xs0 + s0);
    if (o->rms) {
        double ss[CF_TILE];
        for (size_t i = 0; i < w; i++)
            ss[i] = 0.0;
        k->sumsq_cols(x, cl->c, w, cl->xs1, ss);
        for (size_t i = 0; i < w; i++)
            part[i] = (nk_moments){(double)cl->c, 0.0, ss[i]};
    } else {
        nk_cols_moments(k, x, cl->c, w, cl->xs1, part);
    }
}

static void cf_finalize(void *op, size_t b, const nk_moments *mo, void *par)
{
    const cf_op *o = op;
    cf_par *pp = par;
    size_t n, s0;
    const size_t w = cf_block(o, b, &n, &s0), at = n * o->cl->s + s0;
    nk_ln_stats(mo, w, o->rms, o->eps, pp->m, pp->s, o->save_mean ? o->save_mean + at : NULL,
                o->save_inv ? o->save_inv + at : NULL);
}

static void cf_normalize(void *op, size_t b, size_t p, const void *par)
{
    const cf_op *o = op;
    const nk_call *cl = o->cl;
    const nk_kernels *k = cl->k;
    const cf_par *pp = par;
    (void)p;
    size_t n, s0;
    const size_t w = cf_block(o, b, &n, &s0);
    k->norm_cols_affine(nk_xat(k, cl->x, n * cl->xs0 + s0), nk_yat(k, cl->y, n * cl->ys0 + s0),
                        cl->c, w, cl->xs1, cl->ys1, o->rms ? NULL : pp->m, pp->s, o->weight,
                        o->bias, &cl->ep);
}

/* Columns per tile for C channels and S positions: shape only. */
static size_t cf_tile(size_t C, size_t S)
{
    size_t t = NK_CF_TILE_FLOATS / C;
    t -= t % 16; /* whole vectors of every ISA */
    t = t < CF_TILE_MIN ? CF_TILE_MIN : t > CF_TILE ? CF_TILE : t;
    return S < t ? S : t;
}

nk_status nk_ln_channels_first(nk_call *cl, const void *weight, const void *bias, double eps,
                               float *save_mean, float *save_inv, bool rms)
{
    nk_params pp;
    nk_status st = nk_call_params(cl, weight, bias, false, &pp);
    if (st)
        return st;
    const size_t N = cl->n, C = cl->c, S = cl->s;
    if (N && S) {
        cf_op o = {cl, pp.w, pp.b, eps, save_mean, save_inv, rms, cf_tile(C, S), 0};
        o.tiles = (S + o.tile - 1) / o.tile;
        nk_plan pl = {
            .blocks = N * o.tiles,
            .pieces = 1,
            .bgroups = o.tile,
            .bfloats = 2 * C * o.tile,
            .op = &o,
            .groups = cf_groups,
            .moments = cf_moments,
            .finalize = cf_finalize,
            .normalize = cf_normalize,
            .param_bytes = sizeof(cf_par),
        };
        nk_call_run(cl, &pl);
    }
    nk_params_free(&pp);
    nk_clear_error();
    return NK_OK;
}
