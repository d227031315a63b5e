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

/* Sums of squares of rows x of len elements (dtype of k, row stride xs)
 * into ss[0, rows): the kernel's, redone in fp64 where it overflowed. */
static void ln_sumsq_rows(const nk_kernels *k, const void *x, size_t rows, size_t len, size_t xs,
                          double *ss)
{
    k->sumsq_rows(x, rows, len, xs, ss);
    for (size_t i = 0; i < rows; i++)
        if (!isfinite(ss[i]))
            ss[i] = nk_sumsq_f64(k->dtype, nk_xat(k, x, i * xs), len);
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
            ln_sumsq_rows(cl->k, x, e - r, len, xs, ss);
            for (size_t i = 0; i < e - r; i++)
                out[i] = (nk_moments){(double)len, 0.0, ss[i]};
        } else {
            nk_rows_moments(cl->k, x, e - r, len, xs, out);
        }
        r = e;
    }
}

void nk_ln_stats(const nk_moments *mo, size_t n, bool rms, double eps, float *m, float *s,
                 float *save_mean, float *save_inv)
{
    for (size_t i = 0; i < n; i++) {
        if (rms) {
            s[i] = (float)(1.0 / sqrt(mo[i].m2 / mo[i].count + eps));
            m[i] = 0.0f;
        } else {
            s[i] = (float)nk_rstd(mo[i].m2 / mo[i].count, eps);
            m[i] = (float)mo[i].mean;
            if (save_mean)
                save_mean[i] = m[i];
        }
        if (save_inv)
            save_inv[i] = s[i];
    }
}

static void ln_finalize(void *op, size_t b, const nk_moments *mo, void *par)
{
    const ln_op *o = op;
    ln_par *pp = par;
    const size_t r0 = o->pieces > 1 ? b : b * o->rb;
    nk_ln_stats(mo, ln_groups(op, b), o->rms, o->eps, pp->m, pp->s,
                o->save_mean ? o->save_mean + r0 : NULL, o->save_inv ? o->save_inv + r0 : NULL);
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

/* LayerNorm / RMSNorm (no bias) of a validated call, either layout. */
static nk_status ln_plain(nk_call *cl, const void *weight, const void *bias, double eps,
                          float *save_mean, float *save_inv, bool rms)
{
    if (cl->layout == NK_CHANNELS_FIRST)
        return nk_ln_channels_first(cl, weight, bias, eps, save_mean, save_inv, rms);
    nk_params pp;
    nk_status st = nk_call_params(cl, weight, bias, true, &pp);
    if (st)
        return st;
    ln_run(cl, pp.w, pp.b, pp.w16, pp.b16, eps, save_mean, save_inv, rms);
    nk_params_free(&pp);
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
    return st ? st : ln_plain(&cl, weight, bias, eps, save_mean, save_invstd, false);
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
    return st ? st : ln_plain(&cl, weight, NULL, eps, NULL, save_rstd, true);
}

/* ------------------------------------------------------------------------ */
/* Fused: residual add and quantized output (nk_layer_norm_fused_ex)         */
/* ------------------------------------------------------------------------ */
/*
 * Each block of rows goes through an fp32 buffer s on the task's stack:
 * add_rows stages s = (x + skip) + skip_bias (or the widened x), the fp32
 * table's statistics run on s, and the output step normalizes s into y
 * (fp32 without quantization), or into s itself and then narrows (16-bit
 * y) or quantizes it. Rows of up to FZ_FLOATS floats are staged once per
 * block, and the sum output is written by that staging (x and skip are not
 * read again, so sum may overwrite either). Longer rows go one per block in
 * column chunks of FZ_FLOATS: the statistics pass stages each chunk, the
 * output pass stages it again and writes sum then (after the last read of
 * x and skip); NK_QUANT_ROW adds a pass for the row's absmax. A row's
 * result depends on the row alone: blocks are a matter of the shape.
 */
#define FZ_FLOATS 4096

typedef struct fz_op {
    ln_op ln;
    const nk_kernels *k32; /* the fp32 table of the call's ISA */
    const void *skip;
    void *sum;
    const float *sbias; /* skip_bias as fp32 */
    nk_grid gk;         /* skip (xs) and sum (ys) rows */
    unsigned quant;
    float scale;
    int zp, lo, hi;
    float *row_scale;
    bool shortr;
    nk_epilogue ep_s; /* the epilogue of the in-place normalize (no streaming) */
} fz_op;

/* Rows [r0, r1), columns [j, j + w), into s (rows of w floats); sum with it. */
static void fz_stage(const fz_op *o, size_t r0, size_t r1, size_t j, size_t w, float *s,
                     bool with_sum)
{
    const nk_call *cl = o->ln.cl;
    for (size_t r = r0; r < r1;) {
        size_t xs, ys, ks, ss;
        size_t e = nk_grid_run(&o->ln.g, r, r1, &xs, &ys);
        if (o->skip) {
            size_t e2 = nk_grid_run(&o->gk, r, r1, &ks, &ss);
            e = e2 < e ? e2 : e;
        } else {
            ks = ss = 0;
        }
        const void *x = nk_xat(cl->k, cl->x, nk_grid_x(&o->ln.g, r) + j);
        const void *k = o->skip ? nk_xat(cl->k, o->skip, nk_grid_x(&o->gk, r) + j) : NULL;
        void *sum = with_sum && o->sum ? nk_yat(cl->k, o->sum, nk_grid_y(&o->gk, r) + j) : NULL;
        cl->k->add_rows(x, k, o->sbias ? o->sbias + j : NULL, s + (r - r0) * w, sum, e - r, w, xs,
                        ks, ss);
        r = e;
    }
}

/* Statistics of rows [0, rows) of s (rows of w floats) merged into mo. */
static void fz_stats(const fz_op *o, const float *s, size_t rows, size_t w, nk_moments *mo)
{
    if (o->ln.rms) {
        double ss[64];
        ln_sumsq_rows(o->k32, s, rows, w, w, ss);
        for (size_t i = 0; i < rows; i++) {
            mo[i].count += (double)w;
            mo[i].m2 += ss[i];
        }
        return;
    }
    nk_moments part[64];
    nk_rows_moments(o->k32, s, rows, w, w, part);
    for (size_t i = 0; i < rows; i++)
        nk_moments_merge_inline(&mo[i], part[i].count, part[i].mean, part[i].m2);
}

/* Rows [r0, r1), columns [j, j + w), normalized in s, into y: narrowed to
 * the dtype or quantized (NK_QUANT_ROW with the rows' scales qs). */
static void fz_store(const fz_op *o, size_t r0, size_t r1, size_t j, size_t w, const float *s,
                     const float *qs)
{
    const nk_call *cl = o->ln.cl;
    for (size_t r = r0; r < r1;) {
        size_t xs, ys, e = nk_grid_run(&o->ln.g, r, r1, &xs, &ys);
        const size_t yi = nk_grid_y(&o->ln.g, r) + j, i = r - r0;
        if (!o->quant)
            cl->k->narrow_rows(s + i * w, nk_yat(cl->k, cl->y, yi), e - r, w, ys);
        else if (o->quant == NK_QUANT_TENSOR)
            o->k32->quant_rows(s + i * w, (uint8_t *)cl->y + yi, e - r, w, ys, &o->scale, 0, o->zp,
                               o->lo, o->hi);
        else
            o->k32->quant_rows(s + i * w, (uint8_t *)cl->y + yi, e - r, w, ys, qs + i, 1, 0, o->lo,
                               o->hi);
        r = e;
    }
}

/* Width of the column chunk at j of a row of D floats. */
static size_t fz_width(size_t D, size_t j) { return D - j < FZ_FLOATS ? D - j : FZ_FLOATS; }

/* y is written straight from s by the normalize kernel (not quantized) */
static bool fz_direct(const fz_op *o) { return !o->quant; }

/* Rows [r0, r1), columns [j, j + w), staged in s: normalized with the rows'
 * m and s (pp); in place unless `direct` (the output then goes to y). */
static void fz_normalize(const fz_op *o, size_t r0, size_t r1, size_t j, size_t w, float *s,
                         const ln_par *pp, bool direct)
{
    const nk_call *cl = o->ln.cl;
    const float *g = o->ln.weight ? o->ln.weight + j : NULL;
    const float *b = o->ln.bias ? o->ln.bias + j : NULL;
    const float *m = o->ln.rms ? NULL : pp->m;
    if (!direct) {
        o->k32->norm_affine(s, s, r1 - r0, w, w, w, m, pp->s, g, b, &o->ep_s);
        return;
    }
    for (size_t r = r0; r < r1;) {
        size_t xs, ys, e = nk_grid_run(&o->ln.g, r, r1, &xs, &ys);
        const size_t i = r - r0;
        void *y = nk_yat(cl->k, cl->y, nk_grid_y(&o->ln.g, r) + j);
        if (cl->k->dtype == NK_DTYPE_F32)
            o->k32->norm_affine(s + i * w, y, e - r, w, w, ys, m ? m + i : NULL, pp->s + i, g, b,
                                &cl->ep);
        else
            cl->k->norm_affine_s(s + i * w, y, e - r, w, ys, m ? m + i : NULL, pp->s + i, g, b,
                                 &cl->ep);
        r = e;
    }
}

/* Statistics and output of short rows [r0, r1) staged in s: norm_short,
 * into y (direct: fp32 y) or in place. */
static void fz_short(const fz_op *o, size_t r0, size_t r1, float *s, bool direct)
{
    const nk_call *cl = o->ln.cl;
    const size_t D = cl->c;
    const unsigned fl = o->ln.rms ? NK_SHORT_RMS : 0u;
    float *sm = !o->ln.rms && o->ln.save_mean ? o->ln.save_mean + r0 : NULL;
    float *si = o->ln.save_inv ? o->ln.save_inv + r0 : NULL;
    if (!direct) {
        o->k32->norm_short(s, s, r1 - r0, D, D, D, o->ln.weight, o->ln.bias, (float)o->ln.eps, fl,
                           sm, si, &o->ep_s);
        return;
    }
    for (size_t r = r0; r < r1;) {
        size_t xs, ys, e = nk_grid_run(&o->ln.g, r, r1, &xs, &ys);
        const size_t i = r - r0;
        o->k32->norm_short(s + i * D, (float *)cl->y + nk_grid_y(&o->ln.g, r), e - r, D, D, ys,
                           o->ln.weight, o->ln.bias, (float)o->ln.eps, fl, sm ? sm + i : NULL,
                           si ? si + i : NULL, &cl->ep);
        r = e;
    }
}

/* m and s of rows [r0, r0 + n) from their statistics. */
static void fz_finalize(const fz_op *o, size_t r0, size_t n, const nk_moments *mo, ln_par *pp)
{
    nk_ln_stats(mo, n, o->ln.rms, o->ln.eps, pp->m, pp->s,
                o->ln.save_mean ? o->ln.save_mean + r0 : NULL,
                o->ln.save_inv ? o->ln.save_inv + r0 : NULL);
}

/* NK_QUANT_ROW: row_scale = absmax / 127 of rows staged and normalized in s. */
static void fz_row_scales(const fz_op *o, size_t r0, size_t n, const float *amax, float *qs)
{
    for (size_t i = 0; i < n; i++) {
        qs[i] = amax[i] / 127.0f;
        o->row_scale[r0 + i] = qs[i];
    }
}

static void fz_task(void *arg, size_t b)
{
    const fz_op *o = arg;
    const size_t D = o->ln.cl->c, r0 = b * o->ln.rb, r1 = r0 + ln_groups((void *)&o->ln, b);
    const size_t n = r1 - r0;
    const bool direct = fz_direct(o);
    _Alignas(64) float s[FZ_FLOATS];
    ln_par pp;
    nk_moments mo[64];
    float amax[64], qs[64];
    memset(mo, 0, n * sizeof mo[0]);
    if (D <= FZ_FLOATS) {
        /* the whole block at once: staged (and sum written) once */
        fz_stage(o, r0, r1, 0, D, s, true);
        if (o->shortr) {
            /* into y only when fp32; else in place, then narrowed */
            const bool d32 = direct && o->ln.cl->k->dtype == NK_DTYPE_F32;
            fz_short(o, r0, r1, s, d32);
            if (d32)
                return;
        } else {
            fz_stats(o, s, n, D, mo);
            fz_finalize(o, r0, n, mo, &pp);
            fz_normalize(o, r0, r1, 0, D, s, &pp, direct);
            if (direct)
                return;
        }
        if (o->quant == NK_QUANT_ROW) {
            o->k32->absmax_rows(s, n, D, amax);
            fz_row_scales(o, r0, n, amax, qs);
        }
        fz_store(o, r0, r1, 0, D, s, qs);
        return;
    }
    /* one long row (rb == 1), in column chunks */
    for (size_t j = 0; j < D; j += FZ_FLOATS) {
        const size_t w = fz_width(D, j);
        fz_stage(o, r0, r1, j, w, s, false);
        fz_stats(o, s, 1, w, mo);
    }
    fz_finalize(o, r0, 1, mo, &pp);
    if (o->quant == NK_QUANT_ROW) {
        float best = 0.0f, a;
        for (size_t j = 0; j < D; j += FZ_FLOATS) {
            const size_t w = fz_width(D, j);
            fz_stage(o, r0, r1, j, w, s, false);
            fz_normalize(o, r0, r1, j, w, s, &pp, false);
            o->k32->absmax_rows(s, 1, w, &a);
            best = a > best ? a : best;
        }
        fz_row_scales(o, r0, 1, &best, qs);
    }
    for (size_t j = 0; j < D; j += FZ_FLOATS) {
        const size_t w = fz_width(D, j);
        fz_stage(o, r0, r1, j, w, s, true);
        fz_normalize(o, r0, r1, j, w, s, &pp, direct);
        if (!direct)
            fz_store(o, r0, r1, j, w, s, qs);
    }
}

/* Validates fusion against the validated call cl; fills o's fusion fields.
 * *active: the fusion fuses something (else the plain path runs). */
static nk_status fz_check(const nk_call *cl, const nk_norm_fusion *f, fz_op *o, bool *active)
{
    const char *fn = cl->fn;
    *active = false;
    if (!f)
        return NK_OK;
    const size_t v1 = sizeof(nk_norm_fusion);
    if (f->struct_size < v1)
        return nk_fail(NK_ERR_BAD_PARAM,
                       "%s: fusion->struct_size must be at least %zu (sizeof(nk_norm_fusion)), got %u",
                       fn, v1, (unsigned)f->struct_size);
    if (!nk_tail_zero(f, f->struct_size, v1))
        return nk_fail(NK_ERR_UNSUPPORTED,
                       "%s: fusion sets fields past the %zu bytes of nk_norm_fusion this normkit %s "
                       "knows",
                       fn, v1, NK_VERSION_STRING);
    if (f->flags & ~NK_FUSION_SKIP_BROADCAST)
        return nk_fail(NK_ERR_BAD_PARAM, "%s: fusion->flags has unknown bits %#x", fn,
                       (unsigned)(f->flags & ~NK_FUSION_SKIP_BROADCAST));
    for (size_t i = 0; i < sizeof f->reserved / sizeof f->reserved[0]; i++)
        if (f->reserved[i])
            return nk_fail(NK_ERR_BAD_PARAM, "%s: fusion->reserved[%zu] must be 0", fn, i);
    if (f->quant > NK_QUANT_ROW)
        return nk_fail(NK_ERR_BAD_PARAM,
                       "%s: fusion->quant must be NK_QUANT_NONE (0), NK_QUANT_TENSOR (1) or "
                       "NK_QUANT_ROW (2), got %u",
                       fn, (unsigned)f->quant);
    if (!f->skip) {
        if (f->sum)
            return nk_fail(NK_ERR_NULL_POINTER, "%s: fusion->skip is NULL but fusion->sum is set",
                           fn);
        if (f->skip_bias)
            return nk_fail(NK_ERR_NULL_POINTER,
                           "%s: fusion->skip is NULL but fusion->skip_bias is set", fn);
        if (f->flags)
            return nk_fail(NK_ERR_BAD_PARAM,
                           "%s: fusion->flags NK_FUSION_SKIP_BROADCAST needs fusion->skip", fn);
    }
    const bool bc = (f->flags & NK_FUSION_SKIP_BROADCAST) != 0;
    *active = f->skip || f->quant;
    if (!*active)
        return NK_OK;
    if (cl->layout != NK_CHANNELS_LAST)
        return nk_fail(NK_ERR_UNSUPPORTED,
                       "%s: the residual add and quantized output need desc->layout "
                       "NK_CHANNELS_LAST (1), got %d",
                       fn, cl->layout);
    nk_status st;
    size_t ks[2] = {0, 0}, ss[2] = {0, 0};
    if (f->skip) {
        if ((st = nk_check_strides(fn, "fusion->skip", f->skip_stride, bc ? 1 : cl->n, cl->s,
                                   cl->c, bc ? cl->s * cl->c : cl->total, ks)))
            return st;
        if (bc)
            ks[0] = 0;
        if (f->sum) {
            if ((st = nk_check_strides(fn, "fusion->sum", f->sum_stride, cl->n, cl->s, cl->c,
                                       cl->total, ss)))
                return st;
            if (cl->total && f->sum == cl->y)
                return nk_fail(NK_ERR_BAD_PARAM, "%s: fusion->sum and y are the same array", fn);
            if (cl->total && f->sum == cl->x && (ss[0] != cl->xs0 || ss[1] != cl->xs1))
                return nk_fail(NK_ERR_BAD_PARAM,
                               "%s: fusion->sum == x needs equal strides, got sum {%zu, %zu} and "
                               "x {%zu, %zu}",
                               fn, ss[0], ss[1], cl->xs0, cl->xs1);
            if (cl->total && f->sum == f->skip && (bc || ss[0] != ks[0] || ss[1] != ks[1]))
                return nk_fail(NK_ERR_BAD_PARAM,
                               "%s: fusion->sum == fusion->skip needs equal strides and no "
                               "NK_FUSION_SKIP_BROADCAST",
                               fn);
        }
        if (cl->total && f->skip == cl->y)
            return nk_fail(NK_ERR_BAD_PARAM, "%s: y and fusion->skip are the same array", fn);
    }
    o->skip = f->skip;
    o->sum = f->sum;
    o->gk = (nk_grid){cl->s, ks[0], ks[1], ss[0], ss[1]};
    o->quant = f->quant;
    o->scale = 1.0f;
    o->zp = 0;
    o->lo = -128;
    o->hi = 127;
    o->row_scale = NULL;
    if (!f->quant)
        return NK_OK;
    if (cl->total && cl->y == cl->x)
        return nk_fail(NK_ERR_BAD_PARAM, "%s: y == x is not allowed with a quantized output", fn);
    if (f->y_dtype != NK_DTYPE_S8 && f->y_dtype != NK_DTYPE_U8)
        return nk_fail(NK_ERR_BAD_PARAM,
                       "%s: fusion->y_dtype must be NK_DTYPE_S8 (3) or NK_DTYPE_U8 (4), got %u", fn,
                       (unsigned)f->y_dtype);
    if (f->quant == NK_QUANT_ROW) {
        if (f->y_dtype != NK_DTYPE_S8)
            return nk_fail(NK_ERR_BAD_PARAM,
                           "%s: NK_QUANT_ROW needs fusion->y_dtype NK_DTYPE_S8 (3), got %u", fn,
                           (unsigned)f->y_dtype);
        if (!f->row_scale && cl->total)
            return nk_fail(NK_ERR_NULL_POINTER, "%s: fusion->row_scale is NULL with NK_QUANT_ROW",
                           fn);
        o->row_scale = f->row_scale;
        return NK_OK;
    }
    if (!(f->y_scale > 0.0f) || !isfinite(f->y_scale))
        return nk_fail(NK_ERR_BAD_PARAM, "%s: fusion->y_scale must be finite and > 0, got %g", fn,
                       (double)f->y_scale);
    o->lo = f->y_dtype == NK_DTYPE_S8 ? -128 : 0;
    o->hi = f->y_dtype == NK_DTYPE_S8 ? 127 : 255;
    if (f->y_zero_point < o->lo || f->y_zero_point > o->hi)
        return nk_fail(NK_ERR_BAD_PARAM, "%s: fusion->y_zero_point must be in [%d, %d], got %ld", fn,
                       o->lo, o->hi, (long)f->y_zero_point);
    o->scale = f->y_scale;
    o->zp = (int)f->y_zero_point;
    return NK_OK;
}

static nk_status fz_entry(const char *fn, const nk_context *ctx, const nk_tensor_desc *desc,
                          const nk_norm_fusion *fusion, const void *x, void *y, const void *weight,
                          const void *bias, double eps, float *save_mean, float *save_inv,
                          bool rms)
{
    nk_call cl;
    nk_status st = nk_call_from_desc(&cl, fn, ctx, desc, x, y, eps, true);
    if (st)
        return st;
    fz_op o;
    memset(&o, 0, sizeof o);
    bool active;
    if ((st = fz_check(&cl, fusion, &o, &active)))
        return st;
    /* no fusion: the plain call */
    if (!active)
        return ln_plain(&cl, weight, bias, eps, save_mean, save_inv, rms);
    nk_params pp, pb = {0};
    if ((st = nk_call_params(&cl, weight, bias, false, &pp)))
        return st;
    if (fusion->skip_bias && (st = nk_call_params(&cl, fusion->skip_bias, NULL, false, &pb))) {
        nk_params_free(&pp);
        return st;
    }
    const size_t rows = cl.n * cl.s, D = cl.c;
    if (rows) {
        o.ln = (ln_op){&cl, pp.w, pp.b, NULL, NULL, eps, save_mean, save_inv, rms, rows,
                       D <= FZ_FLOATS ? nk_row_block(D) : 1, 1,
                       {cl.s, cl.xs0, cl.xs1, cl.ys0, cl.ys1}};
        o.k32 = nk_kernels_for_dtype(cl.k->isa, NK_DTYPE_F32);
        o.sbias = fusion->skip_bias ? pb.w : NULL;
        o.shortr = D <= NK_SHORT_ROW && (eps == 0.0 || (float)eps > 0.0f);
        o.ep_s = cl.ep;
        o.ep_s.stream = 0;
        const size_t blocks = (rows + o.ln.rb - 1) / o.ln.rb;
        nk_par_run(&cl.ex, blocks, 2 * cl.total + (o.skip ? cl.total : 0), fz_task, &o);
    }
    nk_params_free(&pb);
    nk_params_free(&pp);
    nk_clear_error();
    return NK_OK;
}

nk_status nk_layer_norm_fused_ex(const nk_context *ctx, const nk_tensor_desc *desc,
                                 const nk_norm_fusion *fusion, const void *x, void *y,
                                 const void *weight, const void *bias, double eps,
                                 float *save_mean, float *save_invstd)
{
    return fz_entry("nk_layer_norm_fused_ex", ctx, desc, fusion, x, y, weight, bias, eps,
                    save_mean, save_invstd, false);
}

nk_status nk_rms_norm_fused_ex(const nk_context *ctx, const nk_tensor_desc *desc,
                               const nk_norm_fusion *fusion, const void *x, void *y,
                               const void *weight, double eps, float *save_rstd)
{
    return fz_entry("nk_rms_norm_fused_ex", ctx, desc, fusion, x, y, weight, NULL, eps, NULL,
                    save_rstd, true);
}
