/* The column view (see nk_cv in internal.h). */
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "ops/internal.h"

bool nk_cv_for_bn(const nk_call *cl, nk_cv *cv)
{
    const size_t N = cl->n, C = cl->c, S = cl->s;
    if (cl->layout == NK_CHANNELS_LAST) {
        *cv = (nk_cv){cl->k, cl->x, cl->y, N * S, C, 1, {S, cl->xs0, cl->xs1, cl->ys0, cl->ys1},
                      nk_call_dense(cl)};
        return true;
    }
    /* S == 0 is empty (rep 0): the row path writes nothing. A sample's
     * channels must be back to back to form one row. */
    if (S == 0 || S >= NK_COLVIEW_MAX_SPATIAL ||
        (C > 1 && (cl->xs1 != S || cl->ys1 != S)))
        return false;
    *cv = (nk_cv){cl->k, cl->x, cl->y, N, C * S, S, {1, cl->xs0, 0, cl->ys0, 0},
                  N <= 1 || (cl->xs0 == C * S && cl->ys0 == C * S)};
    return true;
}

void nk_cv_for_sample(const nk_call *cl, size_t n, nk_cv *cv)
{
    const size_t S = cl->s, C = cl->c;
    *cv = (nk_cv){cl->k, nk_xat(cl->k, cl->x, n * cl->xs0),
                  cl->y ? nk_yat(cl->k, cl->y, n * cl->ys0) : NULL, S, C, 1,
                  {1, cl->xs1, 0, cl->ys1, 0}, S <= 1 || (cl->xs1 == C && cl->ys1 == C)};
}

/* Smallest multiple of the row width that is also a multiple of 16 floats,
 * when small: lets narrow rows (channels-last data with few channels, (N, C)
 * BatchNorm input with few channels) run full-width vectors. */
static size_t widened(const nk_cv *cv)
{
    const size_t width = cv->width;
    if (!cv->contiguous || width % 16 == 0 || width > 64)
        return width;
    size_t w = width;
    while (w % 16)
        w += width;
    return w <= NK_CBLK ? w : width;
}

size_t nk_cv_align(const nk_cv *cv)
{
    size_t g = 16, r = cv->rep;
    while (r) {
        size_t t = g % r;
        g = r;
        r = t;
    }
    return 16 / g;
}

size_t nk_cv_cols(const nk_cv *cv, size_t nc)
{
    return nc * cv->rep == cv->width ? widened(cv) : nc * cv->rep;
}

void nk_cv_expand(const nk_cv *cv, size_t nc, const float *m, const float *a, const float *b,
                  float *cm, float *ca, float *cb)
{
    const size_t W = nk_cv_cols(cv, nc);
    if (W == nc && cv->rep == 1) {
        memcpy(cm, m, nc * sizeof *cm);
        memcpy(ca, a, nc * sizeof *ca);
        memcpy(cb, b, nc * sizeof *cb);
        return;
    }
    if (W == nc * cv->rep) {
        /* rep columns per channel: runs of one value */
        for (size_t c = 0, j = 0; c < nc; c++, j += cv->rep) {
            const float mc = m[c], ac = a[c], bc = b[c];
            for (size_t i = 0; i < cv->rep; i++) {
                cm[j + i] = mc;
                ca[j + i] = ac;
                cb[j + i] = bc;
            }
        }
        return;
    }
    /* widened: W columns, copies of the row's per-column parameters */
    for (size_t j = 0, c = 0, in = 0, col = 0; j < W; j++) {
        cm[j] = m[c];
        ca[j] = a[c];
        cb[j] = b[c];
        if (++col == cv->width)
            col = c = in = 0;
        else if (++in == cv->rep)
            c++, in = 0;
    }
}

void nk_cols_moments(const nk_kernels *k, const void *x, size_t rows, size_t cols, size_t stride,
                     nk_moments *acc)
{
    /* the kernel merges into acc (a copy where acc is empty) and recomputes
     * non-finite columns in fp64 itself */
    k->moments_cols(x, rows, cols, stride, acc);
}

/* Moments of n groups of equal count: mean of the means, and the groups' M2
 * plus count * sum((mean_i - mean)^2), both sums in fp64 (n >= 1). */
static nk_moments combine_equal(const nk_moments *p, size_t n)
{
    if (n == 1)
        return p[0];
    double mean = 0.0, m2 = 0.0, dev = 0.0;
    for (size_t i = 0; i < n; i++)
        mean += p[i].mean;
    mean *= 1.0 / (double)n;
    for (size_t i = 0; i < n; i++) {
        double d = p[i].mean - mean;
        m2 += p[i].m2;
        dev += d * d;
    }
    return (nk_moments){p[0].count * (double)n, mean, m2 + p[0].count * dev};
}

/* Moments of columns [j0, j0 + ncols) of `rows` rows of `stride` floats,
 * merged in column order into acc[((j0 + j) % base) / rep - cbase]. The
 * columns of a channel that lie side by side (up to rep of them) have equal
 * counts: they are combined in closed form and merged once. */
static void merge_moments(const nk_kernels *k, const void *x, size_t rows, size_t j0,
                          size_t ncols, size_t stride, size_t base, size_t rep, size_t cbase,
                          nk_moments *acc)
{
    if (rep == 1 && j0 + ncols <= base) {
        /* one column per channel: merge straight into the channels */
        nk_cols_moments(k, nk_xat(k, x, j0), rows, ncols, stride, acc + (j0 - cbase));
        return;
    }
    nk_moments part[NK_CBLK];
    /* channel of column j0, the column's place inside its channel, and the
     * column's place in the row of `base` */
    size_t c = (j0 % base) / rep, in = (j0 % base) % rep, col = j0 % base;
    for (size_t b0 = 0; b0 < ncols; b0 += NK_CBLK) {
        size_t nb = ncols - b0 < NK_CBLK ? ncols - b0 : NK_CBLK;
        memset(part, 0, nb * sizeof part[0]);
        nk_cols_moments(k, nk_xat(k, x, j0 + b0), rows, nb, stride, part);
        for (size_t j = 0; j < nb;) {
            size_t run = rep - in;
            run = run < nb - j ? run : nb - j;
            nk_moments r = combine_equal(part + j, run);
            nk_moments_merge_inline(&acc[c - cbase], r.count, r.mean, r.m2);
            j += run;
            col += run;
            in += run;
            if (col == base)
                col = c = in = 0;
            else if (in == rep)
                c++, in = 0;
        }
    }
}

/* Rows [r0, r1) split into a widened head (whole groups of `per` rows read as
 * one row of W) and the rest; returns the head's row count. */
static size_t wide_head(const nk_cv *cv, size_t r0, size_t r1, size_t W)
{
    if (W <= cv->width)
        return 0; /* not widened: a block of some channels, or wide rows */
    size_t per = W / cv->width;
    return (r1 - r0) / per * per;
}

void nk_cv_moments(const nk_cv *cv, size_t r0, size_t r1, size_t c0, size_t nc, nk_moments *acc)
{
    const size_t j0 = c0 * cv->rep, ncols = nc * cv->rep;
    const size_t W = nk_cv_cols(cv, nc);
    size_t head = wide_head(cv, r0, r1, W);
    if (head)
        merge_moments(cv->k, nk_xat(cv->k, cv->x, r0 * cv->width), head / (W / cv->width), 0, W, W,
                      cv->width,
                      cv->rep, 0, acc);
    for (size_t r = r0 + head; r < r1;) {
        size_t xs, ys, e = nk_grid_run(&cv->g, r, r1, &xs, &ys);
        merge_moments(cv->k, nk_xat(cv->k, cv->x, nk_grid_x(&cv->g, r)), e - r, j0, ncols, xs,
                      cv->width, cv->rep, c0, acc);
        r = e;
    }
}

void nk_cv_normalize(const nk_cv *cv, size_t r0, size_t r1, size_t c0, size_t nc, const float *cm,
                     const float *ca, const float *cb, const nk_epilogue *ep)
{
    const size_t j0 = c0 * cv->rep, ncols = nc * cv->rep;
    const size_t W = nk_cv_cols(cv, nc);
    size_t head = wide_head(cv, r0, r1, W);
    if (head)
        cv->k->norm_cols(nk_xat(cv->k, cv->x, r0 * cv->width), nk_yat(cv->k, cv->y, r0 * cv->width),
                         head / (W / cv->width), W, W, W, cm, ca, cb, ep);
    for (size_t r = r0 + head; r < r1;) {
        size_t xs, ys, e = nk_grid_run(&cv->g, r, r1, &xs, &ys);
        cv->k->norm_cols(nk_xat(cv->k, cv->x, nk_grid_x(&cv->g, r) + j0),
                         nk_yat(cv->k, cv->y, nk_grid_y(&cv->g, r) + j0), e - r, ncols, xs, ys, cm,
                         ca, cb, ep);
        r = e;
    }
}

size_t nk_cv_block(const nk_cv *cv, const nk_plan *pl, size_t C, size_t max_ch)
{
    const size_t al = nk_cv_align(cv);
    nk_plan t = *pl;
    size_t cb = C <= max_ch ? C : max_ch - max_ch % al;
    cb = cb ? cb : max_ch;
    for (;;) {
        t.bgroups = cb;
        t.param_bytes = 3 * nk_cv_cols(cv, cb) * sizeof(float);
        if (cb <= al || nk_plan_wave_bytes(&t, 1) <= NK_STACK_SCRATCH)
            return cb;
        /* estimate from the per-channel cost, then step down */
        size_t per = pl->pieces * sizeof(nk_moments) + 3 * cv->rep * sizeof(float);
        size_t fit = (NK_STACK_SCRATCH - 256) / per;
        fit = fit < cb ? fit : cb - 1;
        cb = fit - fit % al;
        if (cb < al)
            cb = al;
    }
}

#define NK_CV_PIECE_ROWS 64

size_t nk_cv_fused_channels(const nk_cv *cv, size_t C)
{
    const size_t al = nk_cv_align(cv);
    /* the parameters fit a fused task; each block holds about a piece of work */
    size_t cols = NK_FUSED_PARAM_BYTES / (3 * sizeof(float));
    size_t work = cv->rows * cv->rep;
    size_t par = (NK_PIECE_FLOATS + work - 1) / (work ? work : 1);
    size_t cb = cols / cv->rep;
    cb = cb < par ? cb : par;
    cb = cb < NK_MAX_BGROUPS ? cb : NK_MAX_BGROUPS;
    cb -= cb % al;
    cb = cb < al ? al : cb;
    return cb < C ? cb : C;
}

size_t nk_cv_pieces(const nk_cv *cv, size_t parts)
{
    size_t p = nk_pieces_for(cv->rows * cv->width);
    if (parts) {
        /* every piece's partials of the whole width fit the scratch beside
         * the parameters: one block, whole rows in phase 2 */
        size_t par = 3 * nk_cv_cols(cv, cv->width / cv->rep) * sizeof(float) + 512;
        size_t room = NK_STACK_SCRATCH > par ? NK_STACK_SCRATCH - par : 0;
        size_t most = room / (parts * sizeof(nk_moments));
        p = p < most ? p : most ? most : 1;
    }
    /* each column pays a merge per piece: at least a chunk of rows each;
     * without partial moments (inference) any row count will do */
    size_t rows = parts ? cv->rows / NK_CV_PIECE_ROWS : cv->rows;
    return p < rows ? p : rows ? rows : 1;
}
