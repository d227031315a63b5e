/*
 * Backward passes of every operator, on the block driver.
 *
 * Every operator's input gradient has one form. Over a reduced set (a
 * BatchNorm channel, an InstanceNorm (n, c), a GroupNorm (n, g), a LayerNorm
 * row) of M elements with mean m and inverse deviation s, with g the output
 * gradient after the activation mask and w the weight of each element,
 *   A = sum w g,  B = sum w g (x - m),
 *   dx = s w g - s A / M - (x - m) s^3 B / M       (RMSNorm: m = 0, no A term)
 * so a plan's phase 1 sums A and B of each set (the driver's nk_moments
 * carry {count, A, B}, pieces merged by addition in piece order), finalize
 * turns them into per-set coefficients (k1, k2, k3 of the nk_bwd_dx kernels)
 * and phase 2 writes dx. Where the weight is one per set (BatchNorm,
 * InstanceNorm) the sums are taken without it and finalize applies it, so
 * BatchNorm's dweight = s B and dbias = A come from the same sums.
 *
 * Two plans, as the forward's:
 *   rows     a set is R rows of `len` elements (BatchNorm channels-first: N
 *            rows of spatial; InstanceNorm: one row; GroupNorm: C / G rows;
 *            LayerNorm: one row of c). Sets that fit NK_FUSE_FLOATS run fused
 *            (sums, finalize, dx while in cache), several per block; longer
 *            ones are cut into pieces of their positions.
 *   columns  channels-last (and BatchNorm of (N, C)): per sample, blocks of
 *            whole sets of channels, pieces of rows; column sums merged into
 *            their set in channel order.
 *
 * dweight / dbias of InstanceNorm, GroupNorm, LayerNorm and RMSNorm sum over
 * samples (rows) with each sample's own statistics, in an order the shape
 * alone fixes. Asked for together with dx and given scratch (the caller's
 * workspace, or the stack for small shapes) they come from the dx pass:
 * LayerNorm / RMSNorm strips of rows add their fp32 column partials in the
 * dx kernel (bw_rows_fused), channels-first InstanceNorm / GroupNorm keep
 * phase 1's per-(sample, channel) sums (bw_per_sample). Otherwise a pass of
 * their own (bw_params: blocks of 64 channels or 256 columns, one task per
 * block walking every sample in order) reads x and dy once more, with the
 * same arithmetic, so the bits do not depend on the path.
 */
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "kernels/cvt.h"
#include "ops/internal.h"

enum { BW_BN, BW_BN_INFER, BW_BN_REDUCE, BW_BN_ELEMT, BW_IN, BW_GN, BW_LN, BW_RMS };

/* Sets per block (their coefficients are bw_par arrays) and channels per
 * block of the column plans and of the parameter gradients. */
#define BW_SETS 64
/* Most pieces of a column plan: their partial sums fit the waves scratch. */
#define BW_COL_PIECES 16

typedef struct bw_op {
    const nk_call *cl; /* x is cl->x, dx is cl->y */
    const void *y, *dy;
    int kind;
    const float *w;           /* fp32, NULL = 1 */
    const float *mean, *inv;  /* per set (BN_INFER: running mean, inv from rvar) */
    const float *rvar;
    double eps;
    double *sum_dy, *sum_dy_xmu; /* BN_REDUCE: written; BN_ELEMT: read */
    double M;                    /* elements per set (BN_ELEMT: the global count) */
    void *dw, *db;
    double *pc; /* per (sample, channel) {sum g, sum g (x - m)} kept by phase 1 (NULL: none) */
    bool dx;
    size_t gps, cpg; /* sets per sample (BatchNorm: C, nsamp 1), channels per set */
    /* plan geometry */
    size_t sets, gb, pieces;
    size_t R, len, xr, yr; /* rows plan: set q has R rows of len at grid row q */
    nk_grid g;             /* rows plan: sets; columns plan: rows of a sample */
    size_t rows, nsamp, bps, sx, sy; /* columns plan */
} bw_op;

typedef struct bw_par {
    float m[BW_SETS], k1[BW_SETS], k2[BW_SETS], k3[BW_SETS];
} bw_par;

static const float bw_zero = 0.0f;

static bool bw_weighted(const bw_op *o) { return o->kind == BW_GN || o->kind == BW_LN || o->kind == BW_RMS; }

/* One parameter-gradient entry, rounded once to the parameter dtype. */
static void bw_put(unsigned pdt, void *p, size_t i, double v)
{
    if (pdt == NK_DTYPE_F32)
        ((float *)p)[i] = (float)v;
    else if (pdt == NK_DTYPE_F16)
        ((uint16_t *)p)[i] = nk_f32_to_f16((float)v);
    else
        ((uint16_t *)p)[i] = nk_f32_to_bf16((float)v);
}

/* Coefficients of set st (channel ch) from its sums A, B; BatchNorm's
 * outputs of channel ch. */
static void bw_coef(const bw_op *o, size_t st, size_t ch, double A, double B, bw_par *pp, size_t i)
{
    const unsigned pdt = o->cl->pdt;
    double s, m, W = 1.0;
    if (o->kind == BW_BN_INFER) {
        s = 1.0 / sqrt((double)o->rvar[ch] + o->eps);
        m = o->mean[ch];
    } else {
        s = o->inv[st];
        m = o->kind == BW_RMS ? 0.0 : o->mean[st];
    }
    if (!bw_weighted(o) && o->w)
        W = o->w[ch];
    if (o->kind == BW_BN_ELEMT)
        A = o->sum_dy[ch], B = o->sum_dy_xmu[ch];
    pp->m[i] = (float)m;
    pp->k1[i] = (float)(W * s);
    if (o->kind == BW_BN_INFER) {
        pp->k2[i] = pp->k3[i] = 0.0f;
    } else {
        pp->k2[i] = (float)(-(W * s * s * s) * (B / o->M));
        pp->k3[i] = o->kind == BW_RMS ? 0.0f : (float)(-(W * s) * (A / o->M));
    }
    if (o->kind == BW_BN || o->kind == BW_BN_INFER || o->kind == BW_BN_REDUCE) {
        if (o->dw)
            bw_put(pdt, o->dw, ch, s * B);
        if (o->db)
            bw_put(pdt, o->db, ch, A);
        if (o->sum_dy && o->kind == BW_BN_REDUCE) {
            o->sum_dy[ch] = A;
            o->sum_dy_xmu[ch] = B;
        }
    }
}

/* ---- rows plan ---- */

static size_t bw_rows_sets(void *op, size_t b)
{
    const bw_op *o = op;
    return o->sets - b * o->gb < o->gb ? o->sets - b * o->gb : o->gb;
}

/* Positions [lo, hi) of set q (R rows of len) as spans of whole rows, 64 a
 * call, and partial head and tail rows: fn(o, q, j, off, rows, n, arg). */
typedef void (*bw_span_fn)(const bw_op *o, size_t q, size_t j, size_t off, size_t rows, size_t n,
                           void *arg);
static void bw_spans(const bw_op *o, size_t q, size_t lo, size_t hi, bw_span_fn fn, void *arg)
{
    const size_t len = o->len;
    size_t j = lo / len, off = lo % len;
    if (off && lo < hi) {
        const size_t n = len - off < hi - lo ? len - off : hi - lo;
        fn(o, q, j, off, 1, n, arg);
        lo += n;
        j++;
    }
    const size_t full = (hi - lo) / len;
    for (size_t j0 = 0; j0 < full; j0 += 64)
        fn(o, q, j + j0, 0, full - j0 < 64 ? full - j0 : 64, len, arg);
    lo += full * len;
    if (lo < hi)
        fn(o, q, j + full, 0, 1, hi - lo, arg);
}

/* Weight of row j of set q (GroupNorm's channel), 1 elsewhere. */
static float bw_row_weight(const bw_op *o, size_t q, size_t j)
{
    if (o->kind != BW_GN || !o->w)
        return 1.0f;
    return o->w[(q % o->gps) * o->cpg + j];
}

/* Weight of columns from off (LayerNorm, RMSNorm) */
static const float *bw_col_weight(const bw_op *o, size_t off)
{
    return (o->kind == BW_LN || o->kind == BW_RMS) && o->w ? o->w + off : NULL;
}

/* Phase 1's unweighted sums of rows j.. of set q (channels of one sample)
 * into o->pc: a set's rows are whole there (one piece). */
static void bw_keep(const bw_op *o, size_t q, size_t j, size_t rows, const double *sg,
                    const double *sgx)
{
    const size_t ch = (q / o->gps) * o->cl->c + (q % o->gps) * o->cpg + j;
    for (size_t i = 0; i < rows; i++) {
        o->pc[2 * (ch + i)] = sg[i];
        o->pc[2 * (ch + i) + 1] = sgx[i];
    }
}

static void bw_span_sums(const bw_op *o, size_t q, size_t j, size_t off, size_t rows, size_t n,
                         void *arg)
{
    const nk_call *cl = o->cl;
    const nk_kernels *k = cl->k;
    nk_moments *acc = arg;
    double sg[64], sgx[64];
    const size_t xo = nk_grid_x(&o->g, q) + j * o->xr + off, yo = nk_grid_y(&o->g, q) + j * o->yr + off;
    const float *m = o->kind == BW_RMS ? &bw_zero : o->mean + q;
    k->bwd_sums_rows(nk_xat(k, cl->x, xo), o->y ? nk_xat(k, o->y, yo) : NULL, nk_xat(k, o->dy, yo),
                     rows, n, o->xr, o->yr, m, 0, bw_col_weight(o, off), &cl->ep, sg, sgx);
    for (size_t i = 0; i < rows; i++) {
        const double wr = bw_row_weight(o, q, j + i);
        acc->mean += wr * sg[i];
        acc->m2 += wr * sgx[i];
    }
    if (o->pc)
        bw_keep(o, q, j, rows, sg, sgx);
    acc->count += (double)(rows * n);
}

static void bw_rows_sums(void *op, size_t b, size_t p, nk_moments *part)
{
    const bw_op *o = op;
    const nk_call *cl = o->cl;
    const nk_kernels *k = cl->k;
    const size_t q0 = b * o->gb, q1 = q0 + bw_rows_sets(op, b);
    if (o->R == 1 && o->pieces == 1) {
        /* one row per set: runs of equally strided sets share a call */
        double sg[BW_SETS], sgx[BW_SETS];
        for (size_t q = q0; q < q1;) {
            size_t xs, ys, e = nk_grid_run(&o->g, q, q1, &xs, &ys);
            const size_t yo = nk_grid_y(&o->g, q);
            const bool rms = o->kind == BW_RMS;
            k->bwd_sums_rows(nk_xat(k, cl->x, nk_grid_x(&o->g, q)), o->y ? nk_xat(k, o->y, yo) : NULL,
                             nk_xat(k, o->dy, yo), e - q, o->len, xs, ys,
                             rms ? &bw_zero : o->mean + q, rms ? 0 : 1, bw_col_weight(o, 0),
                             &cl->ep, sg + (q - q0), sgx + (q - q0));
            q = e;
        }
        for (size_t q = q0; q < q1; q++) {
            const double wr = bw_row_weight(o, q, 0);
            part[q - q0] = (nk_moments){(double)o->len, wr * sg[q - q0], wr * sgx[q - q0]};
            if (o->pc)
                bw_keep(o, q, 0, 1, sg + (q - q0), sgx + (q - q0));
        }
        return;
    }
    size_t lo = 0, hi = o->R * o->len;
    if (o->pieces > 1)
        nk_piece_range(hi, o->pieces, p, &lo, &hi);
    for (size_t q = q0; q < q1; q++)
        bw_spans(o, q, lo, hi, bw_span_sums, &part[q - q0]);
}

static void bw_rows_finalize(void *op, size_t b, const nk_moments *mo, void *par)
{
    const bw_op *o = op;
    for (size_t i = 0, n = bw_rows_sets(op, b); i < n; i++) {
        const size_t q = b * o->gb + i;
        bw_coef(o, q, q % o->cl->c, mo ? mo[i].mean : 0.0, mo ? mo[i].m2 : 0.0, par, i);
    }
}

/* dx of a span of set q with the set's coefficients (arg: bw_par, entry i) */
typedef struct bw_dxarg {
    const bw_par *pp;
    size_t i;
} bw_dxarg;

static void bw_span_dx(const bw_op *o, size_t q, size_t j, size_t off, size_t rows, size_t n,
                       void *arg)
{
    const nk_call *cl = o->cl;
    const nk_kernels *k = cl->k;
    const bw_dxarg *a = arg;
    float m[64], k1[64], k2[64], k3[64];
    for (size_t i = 0; i < rows; i++) {
        m[i] = a->pp->m[a->i];
        k1[i] = a->pp->k1[a->i] * bw_row_weight(o, q, j + i);
        k2[i] = a->pp->k2[a->i];
        k3[i] = a->pp->k3[a->i];
    }
    const size_t xo = nk_grid_x(&o->g, q) + j * o->xr + off, yo = nk_grid_y(&o->g, q) + j * o->yr + off;
    k->bwd_dx_rows(nk_xat(k, cl->x, xo), o->y ? nk_xat(k, o->y, yo) : NULL, nk_xat(k, o->dy, yo),
                   nk_yat(k, cl->y, xo), rows, n, o->xr, o->yr, m, k1, k2, k3, 1,
                   bw_col_weight(o, off), &cl->ep);
}

static void bw_rows_dx(void *op, size_t b, size_t p, const void *par)
{
    const bw_op *o = op;
    const nk_call *cl = o->cl;
    const nk_kernels *k = cl->k;
    const bw_par *pp = par;
    const size_t q0 = b * o->gb, q1 = q0 + bw_rows_sets(op, b);
    if (o->R == 1 && o->pieces == 1) {
        /* GroupNorm of one channel per group: the set's weight in k1 */
        float k1[BW_SETS];
        for (size_t q = q0; q < q1; q++)
            k1[q - q0] = pp->k1[q - q0] * bw_row_weight(o, q, 0);
        for (size_t q = q0; q < q1;) {
            size_t xs, ys, e = nk_grid_run(&o->g, q, q1, &xs, &ys);
            const size_t xo = nk_grid_x(&o->g, q), yo = nk_grid_y(&o->g, q), i = q - q0;
            k->bwd_dx_rows(nk_xat(k, cl->x, xo), o->y ? nk_xat(k, o->y, yo) : NULL,
                           nk_xat(k, o->dy, yo), nk_yat(k, cl->y, xo), e - q, o->len, xs, ys,
                           pp->m + i, k1 + i, pp->k2 + i, pp->k3 + i, 1, bw_col_weight(o, 0),
                           &cl->ep);
            q = e;
        }
        return;
    }
    size_t lo = 0, hi = o->R * o->len;
    if (o->pieces > 1)
        nk_piece_range(hi, o->pieces, p, &lo, &hi);
    for (size_t q = q0; q < q1; q++) {
        bw_dxarg a = {pp, q - q0};
        bw_spans(o, q, lo, hi, bw_span_dx, &a);
    }
}

/* ---- columns plan ---- */

static size_t bw_cols_sets(void *op, size_t b)
{
    const bw_op *o = op;
    const size_t l0 = (b % o->bps) * o->gb;
    return o->gps - l0 < o->gb ? o->gps - l0 : o->gb;
}

/* Channels [c, c + nc) of block b's sample, rows [r0, r1): fn per run of
 * equally strided rows with the x and y offsets of its first element. */
typedef struct bw_colarg {
    const float *mc, *k1, *k2, *k3;
    double *sg, *sgx;
} bw_colarg;

static void bw_cols_each(const bw_op *o, size_t n, size_t c, size_t nc, size_t r0, size_t r1,
                         const bw_colarg *a, bool dx)
{
    const nk_call *cl = o->cl;
    const nk_kernels *k = cl->k;
    for (size_t r = r0; r < r1;) {
        size_t xs, ys, e = nk_grid_run(&o->g, r, r1, &xs, &ys);
        const size_t xo = n * o->sx + nk_grid_x(&o->g, r) + c, yo = n * o->sy + nk_grid_y(&o->g, r) + c;
        const void *y = o->y ? nk_xat(k, o->y, yo) : NULL;
        if (dx)
            k->bwd_dx_cols(nk_xat(k, cl->x, xo), y, nk_xat(k, o->dy, yo), nk_yat(k, cl->y, xo),
                           e - r, nc, xs, ys, a->mc, a->k1, a->k2, a->k3, &cl->ep);
        else
            k->bwd_sums_cols(nk_xat(k, cl->x, xo), y, nk_xat(k, o->dy, yo), e - r, nc, xs, ys,
                             a->mc, NULL, NULL, &cl->ep, a->sg, a->sgx);
        r = e;
    }
}

static void bw_cols_sums(void *op, size_t b, size_t p, nk_moments *part)
{
    const bw_op *o = op;
    const size_t n = b / o->bps, l0 = (b % o->bps) * o->gb, ns = bw_cols_sets(op, b);
    const size_t c0 = l0 * o->cpg, c1 = (l0 + ns) * o->cpg;
    size_t r0, r1;
    nk_piece_range(o->rows, o->pieces, p, &r0, &r1);
    float mc[64];
    double sg[64], sgx[64];
    for (size_t c = c0; c < c1; c += 64) {
        const size_t nc = c1 - c < 64 ? c1 - c : 64;
        for (size_t i = 0; i < nc; i++) {
            mc[i] = o->mean[n * o->gps + (c + i) / o->cpg];
            sg[i] = sgx[i] = 0.0;
        }
        const bw_colarg a = {mc, NULL, NULL, NULL, sg, sgx};
        bw_cols_each(o, n, c, nc, r0, r1, &a, false);
        for (size_t i = 0; i < nc; i++) {
            nk_moments *t = &part[(c + i) / o->cpg - l0];
            const double wc = o->kind == BW_GN && o->w ? o->w[c + i] : 1.0;
            t->count += (double)(r1 - r0);
            t->mean += wc * sg[i];
            t->m2 += wc * sgx[i];
        }
    }
}

static void bw_cols_finalize(void *op, size_t b, const nk_moments *mo, void *par)
{
    const bw_op *o = op;
    const size_t n = b / o->bps, l0 = (b % o->bps) * o->gb;
    for (size_t i = 0, ns = bw_cols_sets(op, b); i < ns; i++)
        bw_coef(o, n * o->gps + l0 + i, l0 + i, mo ? mo[i].mean : 0.0, mo ? mo[i].m2 : 0.0, par, i);
}

static void bw_cols_dx(void *op, size_t b, size_t p, const void *par)
{
    const bw_op *o = op;
    const bw_par *pp = par;
    const size_t n = b / o->bps, l0 = (b % o->bps) * o->gb, ns = bw_cols_sets(op, b);
    const size_t c0 = l0 * o->cpg, c1 = (l0 + ns) * o->cpg;
    size_t r0, r1;
    nk_piece_range(o->rows, o->pieces, p, &r0, &r1);
    float m[64], k1[64], k2[64], k3[64];
    for (size_t c = c0; c < c1; c += 64) {
        const size_t nc = c1 - c < 64 ? c1 - c : 64;
        for (size_t i = 0; i < nc; i++) {
            const size_t l = (c + i) / o->cpg - l0;
            m[i] = pp->m[l];
            k1[i] = pp->k1[l] * (o->kind == BW_GN && o->w ? o->w[c + i] : 1.0f);
            k2[i] = pp->k2[l];
            k3[i] = pp->k3[l];
        }
        const bw_colarg a = {m, k1, k2, k3, NULL, NULL};
        bw_cols_each(o, n, c, nc, r0, r1, &a, true);
    }
}

/* ---- plans ---- */

/* The plan of o: rows (o->sets sets of o->R rows of o->len) or columns
 * (o->nsamp samples of o->rows rows, o->gps sets of o->cpg channels each);
 * without `sums` the coefficients come from finalize alone. */
static void bw_run(nk_call *cl, bw_op *o, bool sums, bool cols)
{
    size_t blocks, bfloats;
    if (cols) {
        o->gb = o->cpg >= BW_SETS ? 1 : BW_SETS / o->cpg;
        o->gb = o->gb < o->gps ? o->gb : o->gps;
        o->bps = (o->gps + o->gb - 1) / o->gb;
        const size_t w = o->gb * o->cpg;
        o->pieces = nk_pieces_for(o->rows * w);
        o->pieces = o->pieces > BW_COL_PIECES ? BW_COL_PIECES : o->pieces;
        o->pieces = o->pieces > o->rows ? (o->rows ? o->rows : 1) : o->pieces;
        blocks = o->nsamp * o->bps;
        bfloats = 3 * o->rows * w;
    } else {
        const size_t L = o->R * o->len;
        o->gb = L > NK_FUSE_FLOATS ? 1 : (size_t)NK_BLOCK_FLOATS / L;
        o->gb = o->gb < 1 ? 1 : o->gb > BW_SETS ? BW_SETS : o->gb;
        o->pieces = L > NK_FUSE_FLOATS ? nk_pieces_for(L) : 1;
        blocks = (o->sets + o->gb - 1) / o->gb;
        bfloats = 3 * o->gb * L;
    }
    nk_plan pl = {
        .blocks = blocks,
        .pieces = o->pieces,
        .bgroups = o->gb,
        .bfloats = bfloats,
        .op = o,
        .groups = cols ? bw_cols_sets : bw_rows_sets,
        .moments = !sums ? NULL : cols ? bw_cols_sums : bw_rows_sums,
        .finalize = cols ? bw_cols_finalize : bw_rows_finalize,
        .normalize = !o->dx ? NULL : cols ? bw_cols_dx : bw_rows_dx,
        .param_bytes = sizeof(bw_par),
        .merge = nk_sums_add,
    };
    nk_call_run(cl, &pl);
}

/* ---- parameter gradients of the per-sample operators ---- */

/* Columns per task of LayerNorm's and RMSNorm's parameter gradients: rows
 * are read in runs of 1 KiB (fp32) per array. A column's sum does not depend
 * on the block it is in (the kernels' lanes are independent). */
#define BW_PARAM_COLS 256

static size_t bw_params_block(const bw_op *o)
{
    return o->kind == BW_LN || o->kind == BW_RMS ? BW_PARAM_COLS : BW_SETS;
}

/* Rows per strip of LayerNorm's and RMSNorm's parameter gradients: fp32
 * partials over a strip's rows (one chunk of the column sums), fp64 across
 * strips in order. About 32 strips (the tasks of the fused pass), 16 to
 * NK_BWD_CHUNK_ROWS rows each; the shape alone decides. */
static size_t bw_strip_rows(size_t rows)
{
    const size_t r = (rows + 31) / 32;
    return r < 16 ? 16 : r > NK_BWD_CHUNK_ROWS ? NK_BWD_CHUNK_ROWS : r;
}

/* dweight / dbias [c0, c0 + nc) from their fp64 sums aw, ab. */
static void bw_put_grads(const bw_op *o, size_t c0, size_t nc, const double *aw, const double *ab)
{
    for (size_t i = 0; i < nc; i++) {
        if (o->dw)
            bw_put(o->cl->pdt, o->dw, c0 + i, aw[i]);
        if (o->db)
            bw_put(o->cl->pdt, o->db, c0 + i, ab[i]);
    }
}

/* Channels [c0, c0 + nc) (columns of LayerNorm / RMSNorm), every sample in
 * order: task t owns block t. */
static void bw_params_task(void *arg, size_t t)
{
    const bw_op *o = arg;
    const nk_call *cl = o->cl;
    const nk_kernels *k = cl->k;
    const size_t blk = bw_params_block(o);
    const size_t c0 = t * blk, nc = cl->c - c0 < blk ? cl->c - c0 : blk;
    double aw[BW_PARAM_COLS] = {0}, ab[BW_PARAM_COLS] = {0}, sg[BW_SETS], sgx[BW_SETS];
    float mrow[BW_SETS];
    if (o->kind == BW_LN || o->kind == BW_RMS) {
        const size_t rows = cl->n * cl->s, sr = bw_strip_rows(rows);
        for (size_t r = 0; r < rows;) {
            size_t xs, ys, e = nk_grid_run(&o->g, r, rows, &xs, &ys);
            /* one call per strip: the fp32 partials of bw_strip_task */
            e = e < (r / sr + 1) * sr ? e : (r / sr + 1) * sr;
            const size_t xo = nk_grid_x(&o->g, r) + c0, yo = nk_grid_y(&o->g, r) + c0;
            k->bwd_sums_cols(nk_xat(k, cl->x, xo), o->y ? nk_xat(k, o->y, yo) : NULL,
                             nk_xat(k, o->dy, yo), e - r, nc, xs, ys, NULL,
                             o->kind == BW_LN ? o->mean + r : NULL, o->inv + r, &cl->ep, ab, aw);
            r = e;
        }
    } else {
        for (size_t n = 0; n < cl->n; n++) {
            for (size_t i = 0; i < nc; i++)
                mrow[i] = o->mean[n * o->gps + (c0 + i) / o->cpg];
            const void *y = NULL;
            if (cl->layout == NK_CHANNELS_FIRST) {
                const size_t xo = n * cl->xs0 + c0 * cl->xs1, yo = n * cl->ys0 + c0 * cl->ys1;
                if (o->y)
                    y = nk_xat(k, o->y, yo);
                k->bwd_sums_rows(nk_xat(k, cl->x, xo), y, nk_xat(k, o->dy, yo), nc, cl->s, cl->xs1,
                                 cl->ys1, mrow, 1, NULL, &cl->ep, sg, sgx);
            } else {
                const size_t xo = n * cl->xs0 + c0, yo = n * cl->ys0 + c0;
                if (o->y)
                    y = nk_xat(k, o->y, yo);
                memset(sg, 0, sizeof sg);
                memset(sgx, 0, sizeof sgx);
                k->bwd_sums_cols(nk_xat(k, cl->x, xo), y, nk_xat(k, o->dy, yo), cl->s, nc, cl->xs1,
                                 cl->ys1, mrow, NULL, NULL, &cl->ep, sg, sgx);
            }
            for (size_t i = 0; i < nc; i++) {
                ab[i] += sg[i];
                aw[i] += (double)o->inv[n * o->gps + (c0 + i) / o->cpg] * sgx[i];
            }
        }
    }
    bw_put_grads(o, c0, nc, aw, ab);
}

/* dweight / dbias of channel block t from phase 1's kept sums, samples in
 * order: the arithmetic of bw_params_task on the same per-channel sums. */
static void bw_kept_task(void *arg, size_t t)
{
    const bw_op *o = arg;
    const nk_call *cl = o->cl;
    const size_t c0 = t * BW_SETS, nc = cl->c - c0 < BW_SETS ? cl->c - c0 : BW_SETS;
    double aw[BW_SETS] = {0}, ab[BW_SETS] = {0};
    for (size_t n = 0; n < cl->n; n++)
        for (size_t i = 0; i < nc; i++) {
            const double *p = o->pc + 2 * (n * cl->c + c0 + i);
            ab[i] += p[0];
            aw[i] += (double)o->inv[n * o->gps + (c0 + i) / o->cpg] * p[1];
        }
    bw_put_grads(o, c0, nc, aw, ab);
}

static void bw_params(nk_call *cl, bw_op *o)
{
    const size_t blk = bw_params_block(o);
    nk_par_run(&cl->ex, (cl->c + blk - 1) / blk, 2 * cl->total, bw_params_task, o);
}

/* ---- LayerNorm / RMSNorm: parameter gradients fused into the dx pass ----
 *
 * Task t owns strip t of bw_strip_rows rows: L1 blocks of rows get their
 * sums, coefficients and dx (as the rows plan), and the dx kernel adds the
 * rows' fp32 column partials into the strip's two arrays of the workspace.
 * Then blocks of columns sum the strips in order in fp64: the arithmetic of
 * bw_params_task, which runs instead when there is no workspace. x and dy
 * are read once. */

#define BW_STREAM_ROW_BYTES 4096

typedef struct bw_strips {
    const bw_op *o;
    float *ws;     /* per strip: fa[cp], fb[cp] */
    size_t rows, sr, strips, cp, gb, xs, ys;
} bw_strips;

/* The strips of an op of rows x c: rows per strip, strips, and the floats
 * of each of a strip's two arrays (c rounded up to 64 bytes). */
static void bw_strips_geom(bw_strips *st, size_t rows, size_t c)
{
    st->rows = rows;
    st->sr = bw_strip_rows(rows);
    st->strips = (rows + st->sr - 1) / st->sr;
    st->cp = (c + 15) & ~(size_t)15;
}

/* Bytes of workspace the fused pass of an op of rows x c needs (0: none,
 * rows too long for one block). */
static size_t bw_strips_bytes(size_t rows, size_t c)
{
    if (c > NK_FUSE_FLOATS || !rows)
        return 0;
    bw_strips st;
    bw_strips_geom(&st, rows, c);
    if (st.strips > SIZE_MAX / (2 * st.cp * sizeof(float)))
        return 0;
    return st.strips * 2 * st.cp * sizeof(float);
}

static void bw_strip_task(void *arg, size_t t)
{
    const bw_strips *st = arg;
    const bw_op *o = st->o;
    const nk_call *cl = o->cl;
    const nk_kernels *k = cl->k;
    const size_t r0 = t * st->sr, r1 = st->rows - r0 < st->sr ? st->rows : r0 + st->sr;
    float *fa = st->ws + t * 2 * st->cp, *fb = fa + st->cp;
    memset(fa, 0, 2 * st->cp * sizeof(float));
    const bool rms = o->kind == BW_RMS;
    const float *w = bw_col_weight(o, 0);
    /* dx streams from rows of BW_STREAM_ROW_BYTES on: with shorter rows
     * (many to a block) non-temporal stores measured slower than plain ones
     * here (LayerNorm 50176x64 fp32: 0.39 against 0.67 of memcpy; 768
     * columns 0.77 against 0.85; 1024 columns and more faster streamed) */
    nk_epilogue ep = cl->ep;
    if (o->len * nk_esize(k->dtype) < BW_STREAM_ROW_BYTES)
        ep.stream = 0;
    for (size_t q = r0; q < r1; q += st->gb) {
        const size_t nb = r1 - q < st->gb ? r1 - q : st->gb;
        const size_t xo = nk_grid_x(&o->g, q), yo = nk_grid_y(&o->g, q);
        const void *y = o->y ? nk_xat(k, o->y, yo) : NULL;
        double sg[BW_SETS], sgx[BW_SETS];
        bw_par pp;
        k->bwd_sums_rows(nk_xat(k, cl->x, xo), y, nk_xat(k, o->dy, yo), nb, o->len, st->xs, st->ys,
                         rms ? &bw_zero : o->mean + q, rms ? 0 : 1, w, &cl->ep, sg, sgx);
        for (size_t i = 0; i < nb; i++)
            bw_coef(o, q + i, (q + i) % cl->c, sg[i], sgx[i], &pp, i);
        k->bwd_dx_rows_acc(nk_xat(k, cl->x, xo), y, nk_xat(k, o->dy, yo), nk_yat(k, cl->y, xo), nb,
                           o->len, st->xs, st->ys, pp.m, pp.k1, pp.k2, pp.k3, o->inv + q, w,
                           &ep, fa, fb);
    }
}

static void bw_strip_reduce(void *arg, size_t t)
{
    const bw_strips *st = arg;
    const bw_op *o = st->o;
    const size_t c0 = t * BW_PARAM_COLS, nc = o->len - c0 < BW_PARAM_COLS ? o->len - c0 : BW_PARAM_COLS;
    double aw[BW_PARAM_COLS] = {0}, ab[BW_PARAM_COLS] = {0};
    for (size_t j = 0; j < st->strips; j++) {
        const float *fa = st->ws + j * 2 * st->cp + c0, *fb = fa + st->cp;
        for (size_t i = 0; i < nc; i++) {
            ab[i] += fa[i];
            aw[i] += fb[i];
        }
    }
    bw_put_grads(o, c0, nc, aw, ab);
}

/* The fused pass where it applies (dx and a parameter gradient wanted, rows
 * of at most NK_FUSE_FLOATS in one run of equal strides, workspace or stack
 * room for the strips); false: nothing done. */
static __attribute__((noinline)) bool bw_rows_fused(nk_call *cl, bw_op *o)
{
    const size_t rows = cl->n * cl->s, bytes = bw_strips_bytes(rows, cl->c);
    _Alignas(64) unsigned char stack[NK_STACK_SCRATCH];
    bw_strips st = {.o = o};
    bw_strips_geom(&st, rows, cl->c);
    if (!o->dx || !(o->dw || o->db) || !bytes || nk_grid_run(&o->g, 0, rows, &st.xs, &st.ys) != rows)
        return false;
    if (bytes <= cl->ex.ws_size)
        st.ws = cl->ex.ws;
    else if (bytes <= sizeof stack)
        st.ws = (float *)(void *)stack;
    else
        return false;
    o->len = cl->c;
    st.gb = NK_BLOCK_FLOATS / cl->c;
    st.gb = st.gb < 1 ? 1 : st.gb > BW_SETS ? BW_SETS : st.gb;
    nk_par_run(&cl->ex, st.strips, 3 * cl->total, bw_strip_task, &st);
    nk_par_run(&cl->ex, (cl->c + BW_PARAM_COLS - 1) / BW_PARAM_COLS, st.strips * 2 * st.cp,
               bw_strip_reduce, &st);
    return true;
}

/* ---- operators ---- */

static void bw_batch_norm(nk_call *cl, bw_op *o)
{
    o->gps = cl->c;
    o->cpg = 1;
    const bool sums = o->kind != BW_BN_ELEMT && (o->kind != BW_BN_INFER || o->dw || o->db);
    if (!sums && !o->dx)
        return;
    if (cl->layout == NK_CHANNELS_LAST || (cl->s == 1 && cl->xs1 == 1 && cl->ys1 == 1)) {
        /* rows of C channels: (n, s) of channels-last, n of an (N, C) input */
        const bool last = cl->layout == NK_CHANNELS_LAST;
        o->g = last ? (nk_grid){cl->s, cl->xs0, cl->xs1, cl->ys0, cl->ys1}
                    : (nk_grid){1, cl->xs0, 0, cl->ys0, 0};
        o->rows = cl->n * cl->s;
        o->nsamp = 1;
        bw_run(cl, o, sums, true);
        return;
    }
    o->sets = cl->c;
    o->R = cl->n;
    o->len = cl->s;
    o->xr = cl->xs0;
    o->yr = cl->ys0;
    o->g = (nk_grid){cl->c, 0, cl->xs1, 0, cl->ys1};
    bw_run(cl, o, sums, false);
}

/* Bytes of the per-(sample, channel) sums with which InstanceNorm and
 * GroupNorm channels-first take dweight / dbias from the dx plan's phase 1
 * (sets of one piece); 0: not that plan. */
static size_t bw_kept_bytes(size_t n, size_t c, size_t cpg, size_t s, int layout)
{
    if (layout != NK_CHANNELS_FIRST || cpg * s > NK_FUSE_FLOATS || n > SIZE_MAX / 16 / (c ? c : 1))
        return 0;
    return n * c * 2 * sizeof(double);
}

/* Kept sums on the stack up to this many bytes (beside the plan's scratch) */
#define BW_KEPT_STACK ((size_t)16 << 10)

/* InstanceNorm (cpg = 1) and GroupNorm: sets of cpg channels per sample.
 * Channels-first with dx and a parameter gradient wanted and room for the
 * kept sums (workspace or stack): one plan, then the kept sums' reduction;
 * otherwise the parameter gradients take their own pass first. */
static __attribute__((noinline)) void bw_per_sample(nk_call *cl, bw_op *o)
{
    _Alignas(64) double stack[BW_KEPT_STACK / sizeof(double)];
    const size_t kb = bw_kept_bytes(cl->n, cl->c, o->cpg, cl->s, cl->layout);
    if (o->dx && (o->dw || o->db) && kb) {
        if (kb <= cl->ex.ws_size)
            o->pc = cl->ex.ws;
        else if (kb <= sizeof stack)
            o->pc = stack;
    }
    /* before dx: dx may be dy */
    if ((o->dw || o->db) && !o->pc)
        bw_params(cl, o);
    if (o->dx) {
        if (cl->layout == NK_CHANNELS_LAST) {
            o->g = (nk_grid){1, cl->xs1, 0, cl->ys1, 0};
            o->rows = cl->s;
            o->nsamp = cl->n;
            o->sx = cl->xs0;
            o->sy = cl->ys0;
            bw_run(cl, o, true, true);
        } else {
            o->sets = cl->n * o->gps;
            o->R = o->cpg;
            o->len = cl->s;
            o->xr = cl->xs1;
            o->yr = cl->ys1;
            o->g = (nk_grid){o->gps, cl->xs0, o->cpg * cl->xs1, cl->ys0, o->cpg * cl->ys1};
            bw_run(cl, o, true, false);
        }
    }
    if (o->pc)
        nk_par_run(&cl->ex, (cl->c + BW_SETS - 1) / BW_SETS, 2 * cl->n * cl->c, bw_kept_task, o);
}

static void bw_rows_op(nk_call *cl, bw_op *o)
{
    o->g = (nk_grid){cl->s, cl->xs0, cl->xs1, cl->ys0, cl->ys1};
    if (bw_rows_fused(cl, o))
        return;
    /* before dx: dx may be dy */
    if (o->dw || o->db)
        bw_params(cl, o);
    if (o->dx) {
        o->sets = cl->n * cl->s;
        o->R = 1;
        o->len = cl->c;
        bw_run(cl, o, true, false);
    }
}

/* ---- validation ---- */

static const char *bw_act_name(int act)
{
    switch (act) {
    case NK_ACT_SILU: return "NK_ACT_SILU";
    case NK_ACT_GELU_ERF: return "NK_ACT_GELU_ERF";
    case NK_ACT_GELU_TANH: return "NK_ACT_GELU_TANH";
    default: return "?";
    }
}

/* The checks every backward entry point starts with: context, descriptor,
 * strides and activation as the forward (nk_call_from_desc, cl->y = dx),
 * then the backward's own: which activations, which pointers, aliasing. */
static nk_status bw_begin(nk_call *cl, bw_op *o, const char *fn, const nk_context *ctx,
                          const nk_tensor_desc *desc, const void *x, const void *y,
                          const void *dy, void *dx, bool any_out)
{
    /* the pointers are checked below by their own names: two distinct
     * non-NULL stand-ins keep nk_call_from_desc's x / y checks quiet */
    static const char stand_in[2];
    nk_status st = nk_call_from_desc(cl, fn, ctx, desc, &stand_in[0], &stand_in[1], 0.0, true);
    if (st)
        return st;
    /* dx is written once and never re-read: it streams where the forward's
     * output would (nk_call_from_desc's size rule); the column kernels do
     * not stream */
    if (cl->ep.act != NK_ACT_NONE && cl->ep.act != NK_ACT_RELU && cl->ep.act != NK_ACT_LEAKY_RELU)
        return nk_fail(NK_ERR_UNSUPPORTED,
                       "%s: the backward of desc->activation %s needs the pre-activation; only "
                       "NK_ACT_NONE, NK_ACT_RELU and NK_ACT_LEAKY_RELU are fused in backward",
                       fn, bw_act_name(cl->ep.act));
    if (cl->ep.act == NK_ACT_LEAKY_RELU && cl->ep.alpha < 0.0f)
        return nk_fail(NK_ERR_UNSUPPORTED,
                       "%s: LeakyReLU backward needs desc->alpha >= 0 (the sign of y is the sign "
                       "of its input only then), got %g",
                       fn, (double)cl->ep.alpha);
    const bool masked = cl->ep.act != NK_ACT_NONE;
    if (any_out && cl->total) {
        if (!x)
            return nk_fail(NK_ERR_NULL_POINTER, "%s: x is NULL", fn);
        if (!dy)
            return nk_fail(NK_ERR_NULL_POINTER, "%s: dy is NULL", fn);
        if (masked && !y)
            return nk_fail(NK_ERR_NULL_POINTER,
                           "%s: y is NULL: the activation's backward reads the forward output", fn);
    }
    if (dx && cl->total) {
        if (dx == x || (masked && dx == y))
            return nk_fail(NK_ERR_BAD_PARAM, "%s: dx may alias dy only, not %s", fn,
                           dx == x ? "x" : "y");
        if (dx == dy && (cl->xs0 != cl->ys0 || cl->xs1 != cl->ys1))
            return nk_fail(NK_ERR_BAD_PARAM,
                           "%s: in place (dx == dy) needs equal strides, got x {%zu, %zu} and y "
                           "{%zu, %zu}",
                           fn, cl->xs0, cl->xs1, cl->ys0, cl->ys1);
    }
    cl->x = x;
    cl->y = dx;
    memset(o, 0, sizeof *o);
    o->cl = cl;
    o->y = masked ? y : NULL;
    o->dy = dy;
    o->dx = dx != NULL;
    return NK_OK;
}

static nk_status bw_need(const char *fn, const void *p, const char *name)
{
    return p ? NK_OK : nk_fail(NK_ERR_NULL_POINTER, "%s: %s is NULL", fn, name);
}

/* Weight as fp32 (the forward's nk_call_params) */
static nk_status bw_weight(nk_call *cl, bw_op *o, const void *weight, nk_params *pp)
{
    nk_status st = nk_call_params(cl, weight, NULL, false, pp);
    o->w = pp->w;
    return st;
}

/* Zeros of an empty tensor's parameter gradients (nothing to do, whatever
 * n, when neither is wanted). */
static void bw_zero_params(const nk_call *cl, void *dw, void *db, size_t n)
{
    if (!dw && !db)
        return;
    for (size_t i = 0; i < n; i++) {
        if (dw)
            bw_put(cl->pdt, dw, i, 0.0);
        if (db)
            bw_put(cl->pdt, db, i, 0.0);
    }
}

static nk_status bw_bn(const char *fn, int kind, const nk_context *ctx, const nk_tensor_desc *desc,
                       const void *x, const void *y, const void *dy, void *dx, const void *weight,
                       const float *mean, const float *inv, const float *rvar, double eps,
                       double *sum_dy, double *sum_dy_xmu, int64_t count, void *dw, void *db)
{
    nk_call cl;
    bw_op o;
    /* the outputs wanted: the sums are the reduction's outputs and the
     * elementwise step's inputs */
    const bool any = dx || dw || db || (kind == BW_BN_REDUCE && (sum_dy || sum_dy_xmu));
    nk_status st = bw_begin(&cl, &o, fn, ctx, desc, x, y, dy, dx, any);
    if (st)
        return st;
    if (kind == BW_BN_INFER && (st = nk_check_eps(eps, fn)))
        return st;
    if (kind == BW_BN_REDUCE && !sum_dy != !sum_dy_xmu)
        return nk_fail(NK_ERR_NULL_POINTER, "%s: %s is NULL (sum_dy and sum_dy_xmu go together)",
                       fn, sum_dy ? "sum_dy_xmu" : "sum_dy");
    const bool reads = kind == BW_BN_ELEMT ? dx != NULL : any;
    if (reads && cl.total) {
        if ((st = bw_need(fn, mean, kind == BW_BN_INFER ? "running_mean"
                                    : kind == BW_BN ? "save_mean" : "mean")) ||
            (st = bw_need(fn, kind == BW_BN_INFER ? (const void *)rvar : inv,
                          kind == BW_BN_INFER ? "running_var"
                          : kind == BW_BN ? "save_invstd" : "invstd")))
            return st;
    }
    if (kind == BW_BN_ELEMT && dx && cl.total) {
        if ((st = bw_need(fn, sum_dy, "sum_dy")) || (st = bw_need(fn, sum_dy_xmu, "sum_dy_xmu")))
            return st;
        if (count < (int64_t)(cl.n * cl.s))
            return nk_fail(NK_ERR_BAD_PARAM,
                           "%s: count must be at least this shard's N * spatial = %zu, got %lld",
                           fn, cl.n * cl.s, (long long)count);
    }
    nk_params pp;
    if ((st = bw_weight(&cl, &o, weight, &pp)))
        return st;
    if (!cl.total) {
        bw_zero_params(&cl, dw, db, cl.c);
        /* the sums are outputs of the reduction only; the elementwise step
         * reads them (the caller's global sums) */
        for (size_t c = 0; kind == BW_BN_REDUCE && sum_dy && c < cl.c; c++)
            sum_dy[c] = sum_dy_xmu[c] = 0.0;
    } else if (any) {
        o.kind = kind;
        o.mean = mean;
        o.inv = inv;
        o.rvar = rvar;
        o.eps = eps;
        o.sum_dy = kind == BW_BN_ELEMT ? (double *)sum_dy : sum_dy;
        o.sum_dy_xmu = sum_dy_xmu;
        o.M = kind == BW_BN_ELEMT ? (double)count : (double)(cl.n * cl.s);
        o.dw = dw;
        o.db = db;
        if (kind == BW_BN_REDUCE)
            o.dx = false;
        bw_batch_norm(&cl, &o);
    }
    nk_params_free(&pp);
    nk_clear_error();
    return NK_OK;
}

nk_status nk_batch_norm_backward_ex(const nk_context *ctx, const nk_tensor_desc *desc,
                                    const void *x, const void *y, const void *dy, void *dx,
                                    const void *weight, const float *save_mean,
                                    const float *save_invstd, void *dweight, void *dbias)
{
    return bw_bn("nk_batch_norm_backward_ex", BW_BN, ctx, desc, x, y, dy, dx, weight, save_mean,
                 save_invstd, NULL, 0.0, NULL, NULL, 0, dweight, dbias);
}

nk_status nk_batch_norm_infer_backward_ex(const nk_context *ctx, const nk_tensor_desc *desc,
                                          const void *x, const void *y, const void *dy, void *dx,
                                          const void *weight, const float *running_mean,
                                          const float *running_var, double eps, void *dweight,
                                          void *dbias)
{
    return bw_bn("nk_batch_norm_infer_backward_ex", BW_BN_INFER, ctx, desc, x, y, dy, dx, weight,
                 running_mean, NULL, running_var, eps, NULL, NULL, 0, dweight, dbias);
}

nk_status nk_batch_norm_backward_reduce_ex(const nk_context *ctx, const nk_tensor_desc *desc,
                                           const void *x, const void *y, const void *dy,
                                           const float *mean, const float *invstd, double *sum_dy,
                                           double *sum_dy_xmu, void *dweight, void *dbias)
{
    return bw_bn("nk_batch_norm_backward_reduce_ex", BW_BN_REDUCE, ctx, desc, x, y, dy, NULL,
                 NULL, mean, invstd, NULL, 0.0, sum_dy, sum_dy_xmu, 0, dweight, dbias);
}

nk_status nk_batch_norm_backward_elemt_ex(const nk_context *ctx, const nk_tensor_desc *desc,
                                          const void *x, const void *y, const void *dy, void *dx,
                                          const void *weight, const float *mean,
                                          const float *invstd, const double *sum_dy,
                                          const double *sum_dy_xmu, int64_t count)
{
    return bw_bn("nk_batch_norm_backward_elemt_ex", BW_BN_ELEMT, ctx, desc, x, y, dy, dx, weight,
                 mean, invstd, NULL, 0.0, (double *)sum_dy, (double *)sum_dy_xmu, count, NULL,
                 NULL);
}

/* InstanceNorm, GroupNorm, LayerNorm, RMSNorm: statistics per set of each
 * sample (row); nstat of them. */
static nk_status bw_sets(const char *fn, int kind, const nk_context *ctx,
                         const nk_tensor_desc *desc, const void *x, const void *y, const void *dy,
                         void *dx, int64_t groups, const void *weight, const float *mean,
                         const float *inv, void *dw, void *db)
{
    nk_call cl;
    bw_op o;
    const bool any = dx || dw || db;
    nk_status st = bw_begin(&cl, &o, fn, ctx, desc, x, y, dy, dx, any);
    if (st)
        return st;
    if ((kind == BW_LN || kind == BW_RMS) && cl.layout != NK_CHANNELS_LAST)
        return nk_fail(NK_ERR_UNSUPPORTED,
                       "%s: desc->layout must be NK_CHANNELS_LAST (1): LayerNorm and RMSNorm "
                       "normalize over c, the innermost extent",
                       fn);
    if (kind == BW_GN) {
        if (groups < 1)
            return nk_fail(NK_ERR_BAD_PARAM, "%s: num_groups must be at least 1, got %lld", fn,
                           (long long)groups);
        if ((int64_t)cl.c % groups)
            return nk_fail(NK_ERR_BAD_PARAM,
                           "%s: the number of channels (%zu) must be divisible by num_groups "
                           "(%lld)",
                           fn, cl.c, (long long)groups);
    }
    if (any && cl.total) {
        if ((kind != BW_RMS && (st = bw_need(fn, mean, "save_mean"))) ||
            (st = bw_need(fn, inv, kind == BW_RMS ? "save_rstd" : "save_invstd")))
            return st;
    }
    nk_params pp;
    if ((st = bw_weight(&cl, &o, weight, &pp)))
        return st;
    if (!cl.total) {
        bw_zero_params(&cl, dw, db, cl.c);
    } else if (any) {
        o.kind = kind;
        o.mean = mean;
        o.inv = inv;
        o.dw = dw;
        o.db = db;
        if (kind == BW_LN || kind == BW_RMS) {
            o.M = (double)cl.c;
            bw_rows_op(&cl, &o);
        } else {
            o.gps = kind == BW_GN ? (size_t)groups : cl.c;
            o.cpg = cl.c / o.gps;
            o.M = (double)(o.cpg * cl.s);
            bw_per_sample(&cl, &o);
        }
    }
    nk_params_free(&pp);
    nk_clear_error();
    return NK_OK;
}

nk_status nk_instance_norm_backward_ex(const nk_context *ctx, const nk_tensor_desc *desc,
                                       const void *x, const void *y, const void *dy, void *dx,
                                       const void *weight, const float *save_mean,
                                       const float *save_invstd, void *dweight, void *dbias)
{
    return bw_sets("nk_instance_norm_backward_ex", BW_IN, ctx, desc, x, y, dy, dx, 1, weight,
                   save_mean, save_invstd, dweight, dbias);
}

nk_status nk_group_norm_backward_ex(const nk_context *ctx, const nk_tensor_desc *desc,
                                    const void *x, const void *y, const void *dy, void *dx,
                                    int64_t groups, const void *weight, const float *save_mean,
                                    const float *save_invstd, void *dweight, void *dbias)
{
    return bw_sets("nk_group_norm_backward_ex", BW_GN, ctx, desc, x, y, dy, dx, groups, weight,
                   save_mean, save_invstd, dweight, dbias);
}

nk_status nk_layer_norm_backward_ex(const nk_context *ctx, const nk_tensor_desc *desc,
                                    const void *x, const void *y, const void *dy, void *dx,
                                    const void *weight, const float *save_mean,
                                    const float *save_invstd, void *dweight, void *dbias)
{
    return bw_sets("nk_layer_norm_backward_ex", BW_LN, ctx, desc, x, y, dy, dx, 1, weight,
                   save_mean, save_invstd, dweight, dbias);
}

nk_status nk_rms_norm_backward_ex(const nk_context *ctx, const nk_tensor_desc *desc, const void *x,
                                  const void *y, const void *dy, void *dx, const void *weight,
                                  const float *save_rstd, void *dweight)
{
    return bw_sets("nk_rms_norm_backward_ex", BW_RMS, ctx, desc, x, y, dy, dx, 1, weight, NULL,
                   save_rstd, dweight, NULL);
}

nk_status nk_backward_workspace_size(uint32_t layer, const nk_tensor_desc *desc, int64_t groups,
                                     size_t *bytes)
{
    static const char fn[] = "nk_backward_workspace_size";
    static const char stand_in[2];
    if (!bytes)
        return nk_fail(NK_ERR_NULL_POINTER, "%s: bytes is NULL", fn);
    if (layer > NK_LAYER_SKIP_RMS_NORM)
        return nk_fail(NK_ERR_BAD_PARAM, "%s: layer must be an nk_layer code (0 to %d), got %u", fn,
                       (int)NK_LAYER_SKIP_RMS_NORM, (unsigned)layer);
    /* the skip layers' gradients are LayerNorm's / RMSNorm's on the sum s */
    if (layer == NK_LAYER_SKIP_LAYER_NORM)
        layer = NK_LAYER_LAYER_NORM;
    else if (layer == NK_LAYER_SKIP_RMS_NORM)
        layer = NK_LAYER_RMS_NORM;
    nk_call cl;
    nk_status st = nk_call_from_desc(&cl, fn, NULL, desc, &stand_in[0], &stand_in[1], 0.0, true);
    if (st)
        return st;
    size_t b = 0;
    if ((layer == NK_LAYER_LAYER_NORM || layer == NK_LAYER_RMS_NORM) &&
        cl.layout == NK_CHANNELS_LAST)
        b = bw_strips_bytes(cl.n * cl.s, cl.c);
    if (layer == NK_LAYER_INSTANCE_NORM)
        b = bw_kept_bytes(cl.n, cl.c, 1, cl.s, cl.layout);
    if (layer == NK_LAYER_GROUP_NORM && groups >= 1 && cl.c % (size_t)groups == 0)
        b = bw_kept_bytes(cl.n, cl.c, cl.c / (size_t)groups, cl.s, cl.layout);
    /* the 64-byte alignment the call gives the caller's pointer; no
     * workspace where that would not fit a size_t */
    *bytes = b && b <= SIZE_MAX - 63 ? b + 63 : 0;
    nk_clear_error();
    return NK_OK;
}
