/*
 * LayerNorm and RMSNorm over c at every (n, position) of a channels-last
 * tensor: rows of c floats. Plan: a group is a row; rows go in blocks that
 * stay in L1/L2 between the statistics and normalize passes (fused), and the
 * kernels take whole runs of equally strided rows so short rows share a call.
 * Rows longer than NK_FUSE_FLOATS are cut into pieces of columns; rows of at
 * most NK_SHORT_ROW floats go to the fused short-row kernel instead.
 */
#include <math.h>

#include "ops/internal.h"

typedef struct ln_op {
    const nk_call *cl;
    const float *weight, *bias;
    const void *w16, *b16; /* long 16-bit parameters, converted in slices */
    double eps;
    float *save_mean, *save_inv;
    bool rms;
    size_t rows, rb, pieces;
    nk_grid g;
} ln_op;

typedef struct ln_par {
    float m[64], s[64];
} ln_par;

static size_t ln_groups(void *op, size_t b)
{
    const ln_op *o = op;
    if (o->pieces > 1)
        return 1;
    return o->rows - b * o->rb < o->rb ? o->rows - b * o->rb : o->rb;
}

/* Rows [r0, r1), columns [lo, hi) of each: moments merged into part[r - r0]. */
static void ln_moments(void *op, size_t b, size_t p, nk_moments *part)
{
    const ln_op *o = op;
    const nk_call *cl = o->cl;
    size_t r0 = b * o->rb, r1 = r0 + ln_groups(op, b), lo = 0, hi = cl->c;
    if (o->pieces > 1)
        nk_piece_range(cl->c, o->pieces, p, &lo, &hi);
    const size_t len = hi - lo;
    for (size_t r = r0; r < r1;) {
        size_t xs, ys, e = nk_grid_run(&o->g, r, r1, &xs, &ys);
        const void *x = nk_xat(cl->k, cl->x, nk_grid_x(&o->g, r) + lo);
        nk_moments *out = part + (r - r0);
        if (o->rms) {
            double ss[64];
            cl->k->sumsq_rows(x, e - r, len, xs, ss);
            for (size_t i = 0; i < e - r; i++) {
                if (!isfinite(ss[i]))
                    ss[i] = nk_sumsq_f64(cl->k->dtype, nk_xat(cl->k, x, i * xs), len);
                out[i] = (nk_moments){(double)len, 0.0, ss[i]};
            }
        } else {
            nk_rows_moments(cl->k, x, e - r, len, xs, out);
        }
        r = e;
    }
}

static void ln_finalize(void *op, size_t b, const nk_moments *mo, void *par)
{
    const ln_op *o = op;
    ln_par *pp = par;
    size_t r0 = o->pieces > 1 ? b : b * o->rb, g = ln_groups(op, b);
    for (size_t i = 0; i < g; i++) {
        float s;
        if (o->rms) {
            s = (float)(1.0 / sqrt(mo[i].m2 / mo[i].count + o->eps));
            pp->m[i] = 0.0f;
        } else {
            s = (float)nk_rstd(mo[i].m2 / mo[i].count, o->eps);
            pp->m[i] = (float)mo[i].mean;
            if (o->save_mean)
                o->save_mean[r0 + i] = pp->m[i];
        }
        pp->s[i] = s;
        if (o->save_inv)
            o->save_inv[r0 + i] = s;
    }
}

static void ln_normalize(void *op, size_t b, size_t p, const void *par)
{
    const ln_op *o = op;
    const nk_call *cl = o->cl;
    const ln_par *pp = par;
    size_t r0 = o->pieces > 1 ? b : b * o->rb, r1 = r0 + ln_groups(op, b), lo = 0, hi = cl->c;
    if (o->pieces > 1)
        nk_piece_range(cl->c, o->pieces, p, &lo, &hi);
    /* 16-bit parameters too long for one fp32 copy: slices of NK_CBLK * 4
     * columns, each converted once per block of rows */
    const size_t step = o->w16 || o->b16 ? (size_t)NK_CBLK * 4 : hi - lo;
    float gs[NK_CBLK * 4], bs[NK_CBLK * 4];
    for (size_t j = lo; j < hi; j += step) {
        const size_t nj = hi - j < step ? hi - j : step;
        const float *g = o->weight ? o->weight + j : NULL, *bb = o->bias ? o->bias + j : NULL;
        if (o->w16) {
            nk_params_to_f32(cl->k, o->w16, j, nj, gs);
            g = gs;
        }
        if (o->b16) {
            nk_params_to_f32(cl->k, o->b16, j, nj, bs);
            bb = bs;
        }
        for (size_t r = r0; r < r1;) {
            size_t xs, ys, e = nk_grid_run(&o->g, r, r1, &xs, &ys);
            cl->k->norm_affine(nk_xat(cl->k, cl->x, nk_grid_x(&o->g, r) + j),
                               nk_yat(cl->k, cl->y, nk_grid_y(&o->g, r) + j), e - r, nj, xs, ys,
                               o->rms ? NULL : pp->m + (r - r0), pp->s + (r - r0), g, bb, &cl->ep);
            r = e;
        }
    }
}

/*
 * Rows of at most NK_SHORT_ROW floats: norm_short computes the statistics
 * and the output of a whole run of rows in one call, so a block is one call
 * (blocks of NK_SHORT_BLOCK rows, by shape only; the kernel's result for a
 * row does not depend on the block anyway) and nothing is left to finalize
 * (nk_short_finalize).
 */

static void ln_short_normalize(void *op, size_t b, size_t p, const void *par)
{
    const ln_op *o = op;
    const nk_call *cl = o->cl;
    (void)p, (void)par;
    size_t r0 = b * o->rb, r1 = r0 + ln_groups(op, b);
    for (size_t r = r0; r < r1;) {
        size_t xs, ys, e = nk_grid_run(&o->g, r, r1, &xs, &ys);
        cl->k->norm_short(nk_xat(cl->k, cl->x, nk_grid_x(&o->g, r)), nk_yat(cl->k, cl->y, nk_grid_y(&o->g, r)), e - r, cl->c,
                          xs, ys, o->weight, o->bias, (float)o->eps, o->rms ? NK_SHORT_RMS : 0u,
                          o->save_mean ? o->save_mean + r : NULL,
                          o->save_inv ? o->save_inv + r : NULL, &cl->ep);
        r = e;
    }
}

/* w16 / b16: long 16-bit parameters in place of weight / bias (nk_params) */
static void ln_run(nk_call *cl, const float *weight, const float *bias, const void *w16,
                   const void *b16, double eps, float *save_mean, float *save_inv, bool rms)
{
    const size_t rows = cl->n * cl->s, D = cl->c;
    if (rows) {
        /* the short-row kernel takes eps in fp32: not where a positive eps
         * would round to 0 */
        const bool shortr = D <= NK_SHORT_ROW && (eps == 0.0 || (float)eps > 0.0f);
        ln_op o = {cl, weight, bias, w16, b16, eps, save_mean, save_inv, rms, rows,
                   shortr ? NK_SHORT_BLOCK : nk_row_block(D), 1,
                   {cl->s, cl->xs0, cl->xs1, cl->ys0, cl->ys1}};
        if (D > NK_FUSE_FLOATS) {
            o.rb = 1;
            o.pieces = nk_pieces_for(D);
        }
        nk_plan pl = {
            .blocks = (rows + o.rb - 1) / o.rb,
            .pieces = o.pieces,
            .bgroups = o.rb,
            .bfloats = 2 * o.rb * D,
            .op = &o,
            .groups = ln_groups,
            .moments = shortr ? NULL : ln_moments,
            .finalize = shortr ? nk_short_finalize : ln_finalize,
            .normalize = shortr ? ln_short_normalize : ln_normalize,
            .param_bytes = shortr ? 0 : sizeof(ln_par),
        };
        nk_call_run(cl, &pl);
    }
    nk_clear_error();
}

static nk_status ln_layout(const nk_call *cl)
{
    if (cl->layout != NK_CHANNELS_LAST)
        return nk_fail(NK_ERR_UNSUPPORTED,
                       "%s: desc->layout must be NK_CHANNELS_LAST (1): LayerNorm and RMSNorm "
                       "normalize over c, the innermost extent",
                       cl->fn);
    return NK_OK;
}

nk_status nk_layer_norm(const float *x, int64_t rows, int64_t cols, const float *weight,
                        const float *bias, double eps, float *y, float *save_mean,
                        float *save_invstd, const nk_options *opts)
{
    nk_call cl;
    nk_status st = nk_call_from_rows(&cl, "nk_layer_norm", x, rows, cols, y, eps, opts);
    if (st)
        return st;
    ln_run(&cl, weight, bias, NULL, NULL, eps, save_mean, save_invstd, false);
    return NK_OK;
}

nk_status nk_layer_norm_ex(const nk_context *ctx, const nk_tensor_desc *desc, const void *x, void *y,
                           const void *weight, const void *bias, double eps, float *save_mean,
                           float *save_invstd)
{
    nk_call cl;
    nk_status st = nk_call_from_desc(&cl, "nk_layer_norm_ex", ctx, desc, x, y, eps, true);
    if (!st && cl.layout == NK_CHANNELS_FIRST)
        return nk_ln_channels_first(&cl, weight, bias, eps, save_mean, save_invstd, false);
    if (st || (st = ln_layout(&cl)))
        return st;
    nk_params pp;
    if ((st = nk_call_params(&cl, weight, bias, true, &pp)))
        return st;
    ln_run(&cl, pp.w, pp.b, pp.w16, pp.b16, eps, save_mean, save_invstd, false);
    nk_params_free(&pp);
    return NK_OK;
}

nk_status nk_rms_norm(const float *x, int64_t rows, int64_t cols, const float *weight, double eps,
                      float *y, float *save_rstd, const nk_options *opts)
{
    nk_call cl;
    nk_status st = nk_call_from_rows(&cl, "nk_rms_norm", x, rows, cols, y, eps, opts);
    if (st)
        return st;
    ln_run(&cl, weight, NULL, NULL, NULL, eps, NULL, save_rstd, true);
    return NK_OK;
}

nk_status nk_rms_norm_ex(const nk_context *ctx, const nk_tensor_desc *desc, const void *x, void *y,
                         const void *weight, double eps, float *save_rstd)
{
    nk_call cl;
    nk_status st = nk_call_from_desc(&cl, "nk_rms_norm_ex", ctx, desc, x, y, eps, true);
    if (!st && cl.layout == NK_CHANNELS_FIRST)
        return nk_ln_channels_first(&cl, weight, NULL, eps, NULL, save_rstd, true);
    if (st || (st = ln_layout(&cl)))
        return st;
    nk_params pp;
    if ((st = nk_call_params(&cl, weight, NULL, true, &pp)))
        return st;
    ln_run(&cl, pp.w, NULL, pp.w16, NULL, eps, NULL, save_rstd, true);
    nk_params_free(&pp);
    return NK_OK;
}
