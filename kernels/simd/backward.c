/*
 * Backward kernels (kernels.h: nk_bwd_*), written once and compiled per ISA
 * and element type through nk_simd.h. Each reads x and dy (and y for the
 * ReLU / LeakyReLU mask) once: the sums keep fp32 vector accumulators over
 * a chunk (NK_BWD_CHUNK elements of a row, NK_BWD_CHUNK_ROWS rows of a
 * column block) and add each chunk to fp64, so the order of the fp32 sums
 * differs from the scalar kernels' (vector lanes) but their bound does not.
 * dx is the scalar kernel's expression, two fused multiply-adds per element,
 * so where the target fuses them (every x86 ISA here, AArch64) dx equals
 * the scalar result bit for bit given the same coefficients.
 *
 * The activation and the presence of a column weight are compile-time
 * constants of always-inlined bodies, selected outside the loops. dx rows
 * stream (non-temporal stores) where NK_STREAM(ep), as the forward's
 * outputs; the column kernel's stores are ordinary.
 */
#include "kernels/simd/nk_simd.h"

/* g of a vector: dy masked by y > 0 (ReLU: 0, LeakyReLU: alpha dy) */
NK_INLINE vf bwd_mask(vf dy, const xt *y, size_t n, const int act, vf alpha)
{
    if (act != NK_ACT_RELU && act != NK_ACT_LEAKY_RELU)
        return dy;
    const vf yv = n == NK_VL ? vx_loadu(y) : vx_load_n(y, n);
    return vf_pos_select(yv, dy, act == NK_ACT_RELU ? vf_zero() : vf_mul(dy, alpha));
}

NK_INLINE vf bwd_gv(const xt *y, const xt *dy, const int act, vf alpha)
{
    return bwd_mask(vx_loadu(dy), y, NK_VL, act, alpha);
}

/* the first n lanes, zero past them */
NK_INLINE vf bwd_gn(const xt *y, const xt *dy, size_t n, const int act, vf alpha)
{
    return bwd_mask(vx_load_n(dy, n), y, n, act, alpha);
}

/* ---- row sums ---- */

NK_INLINE void sums_row(const xt *x, const xt *y, const xt *dy, size_t len, float m,
                        const float *w, const int hw, const int act, vf alpha, double *sg,
                        double *sgx)
{
    const vf vm = vf_set1(m);
    double a = 0.0, b = 0.0;
    for (size_t i0 = 0; i0 < len; i0 += NK_BWD_CHUNK) {
        const size_t i1 = len - i0 < NK_BWD_CHUNK ? len : i0 + NK_BWD_CHUNK;
        vf fa0 = vf_zero(), fa1 = vf_zero(), fb0 = vf_zero(), fb1 = vf_zero();
        size_t i = i0;
        for (; i + 2 * NK_VL <= i1; i += 2 * NK_VL) {
            vf g0 = bwd_gv(y ? y + i : NULL, dy + i, act, alpha);
            vf g1 = bwd_gv(y ? y + i + NK_VL : NULL, dy + i + NK_VL, act, alpha);
            if (hw) {
                g0 = vf_mul(g0, vf_loadu(w + i));
                g1 = vf_mul(g1, vf_loadu(w + i + NK_VL));
            }
            fa0 = vf_add(fa0, g0);
            fa1 = vf_add(fa1, g1);
            fb0 = vf_fma(g0, vf_sub(vx_loadu(x + i), vm), fb0);
            fb1 = vf_fma(g1, vf_sub(vx_loadu(x + i + NK_VL), vm), fb1);
        }
        for (; i + NK_VL <= i1; i += NK_VL) {
            vf g = bwd_gv(y ? y + i : NULL, dy + i, act, alpha);
            if (hw)
                g = vf_mul(g, vf_loadu(w + i));
            fa0 = vf_add(fa0, g);
            fb0 = vf_fma(g, vf_sub(vx_loadu(x + i), vm), fb0);
        }
        if (i < i1) {
            const size_t n = i1 - i;
            vf g = bwd_gn(y ? y + i : NULL, dy + i, n, act, alpha);
            if (hw)
                g = vf_mul(g, vf_load_n(w + i, n));
            fa0 = vf_add(fa0, g);
            fb0 = vf_fma(g, vf_sub_n(vx_load_n(x + i, n), vm, n), fb0);
        }
        a += vf_hsum(vf_add(fa0, fa1));
        b += vf_hsum(vf_add(fb0, fb1));
    }
    *sg = a;
    *sgx = b;
}

NK_INLINE void sums_rows_body(const xt *x, const xt *y, const xt *dy, size_t rows, size_t len,
                              size_t xstride, size_t ystride, const float *m, size_t ps,
                              const float *w, const int act, const nk_epilogue *ep, double *sg,
                              double *sgx)
{
    const vf alpha = vf_set1(ep->alpha);
    for (size_t r = 0; r < rows; r++) {
        const xt *yr = y ? y + r * ystride : NULL;
        if (w)
            sums_row(x + r * xstride, yr, dy + r * ystride, len, m[r * ps], w, 1, act, alpha,
                     sg + r, sgx + r);
        else
            sums_row(x + r * xstride, yr, dy + r * ystride, len, m[r * ps], NULL, 0, act, alpha,
                     sg + r, sgx + r);
    }
}

/* activations of the backward: none, ReLU, LeakyReLU (the others never
 * reach a backward kernel) */
#define NK_BWD_ACT_SWITCH(body)                                                                   \
    switch (ep->act) {                                                                            \
    case NK_ACT_RELU: body(NK_ACT_RELU); break;                                                   \
    case NK_ACT_LEAKY_RELU: body(NK_ACT_LEAKY_RELU); break;                                       \
    default: body(NK_ACT_NONE); break;                                                            \
    }

static void NK_FN(bwd_sums_rows)(const void *x, const void *y, const void *dy, size_t rows,
                                 size_t len, size_t xstride, size_t ystride, const float *m,
                                 size_t ps, const float *w, const nk_epilogue *ep, double *sg,
                                 double *sgx)
{
#define BODY(ACT)                                                                                 \
    sums_rows_body((const xt *)x, (const xt *)y, (const xt *)dy, rows, len, xstride, ystride, m,  \
                   ps, w, ACT, ep, sg, sgx)
    NK_BWD_ACT_SWITCH(BODY)
#undef BODY
}

/* ---- column sums ---- */

/* Columns [0, V * NK_VL) (tail == 0) or one vector of `tail` lanes, rows
 * [0, rows), in chunks of NK_BWD_CHUNK_ROWS rows. */
NK_INLINE void sums_cols_block(const xt *x, const xt *y, const xt *dy, size_t rows, size_t xstride,
                               size_t ystride, const float *mc, const float *mr, const float *sr,
                               const int V, size_t tail, const int act, vf alpha, double *sg,
                               double *sgx)
{
    vf vmc[4];
    for (int j = 0; j < V; j++)
        vmc[j] = !mc ? vf_zero() : tail ? vf_load_n(mc, tail) : vf_loadu(mc + j * NK_VL);
    for (size_t r0 = 0; r0 < rows; r0 += NK_BWD_CHUNK_ROWS) {
        const size_t r1 = rows - r0 < NK_BWD_CHUNK_ROWS ? rows : r0 + NK_BWD_CHUNK_ROWS;
        vf fa[4], fb[4];
        for (int j = 0; j < V; j++)
            fa[j] = fb[j] = vf_zero();
        for (size_t r = r0; r < r1; r++) {
            const xt *xr = x + r * xstride, *dr = dy + r * ystride;
            const xt *yr = y ? y + r * ystride : NULL;
            const vf s = vf_set1(sr ? sr[r] : 1.0f), mrow = vf_set1(mr ? mr[r] : 0.0f);
            for (int j = 0; j < V; j++) {
                const size_t o = (size_t)j * NK_VL;
                vf g, xm;
                if (tail) {
                    g = bwd_gn(yr, dr, tail, act, alpha);
                    xm = vf_sub_n(vx_load_n(xr, tail), mr ? mrow : vmc[j], tail);
                } else {
                    g = bwd_gv(yr ? yr + o : NULL, dr + o, act, alpha);
                    xm = vf_sub(vx_loadu(xr + o), mr ? mrow : vmc[j]);
                }
                if (sr)
                    xm = vf_mul(xm, s);
                fa[j] = vf_add(fa[j], g);
                fb[j] = vf_fma(g, xm, fb[j]);
            }
        }
        for (int j = 0; j < V; j++) {
            float ta[NK_VL], tb[NK_VL];
            vf_storeu(ta, fa[j]);
            vf_storeu(tb, fb[j]);
            const size_t n = tail ? tail : NK_VL;
            for (size_t i = 0; i < n; i++) {
                sg[(size_t)j * NK_VL + i] += ta[i];
                sgx[(size_t)j * NK_VL + i] += tb[i];
            }
        }
    }
}

NK_INLINE void sums_cols_body(const xt *x, const xt *y, const xt *dy, size_t rows, size_t cols,
                              size_t xstride, size_t ystride, const float *mc, const float *mr,
                              const float *sr, const int act, const nk_epilogue *ep, double *sg,
                              double *sgx)
{
    const vf alpha = vf_set1(ep->alpha);
    /* chunks of rows outside, column blocks inside: each row is read in one
     * short window (wide rows far apart would defeat the prefetchers if
     * every block walked all rows); a column's sums are the same either way */
    for (size_t r0 = 0; r0 < rows; r0 += NK_BWD_CHUNK_ROWS) {
        const size_t nr = rows - r0 < NK_BWD_CHUNK_ROWS ? rows - r0 : NK_BWD_CHUNK_ROWS;
        const xt *xr = x + r0 * xstride, *dr = dy + r0 * ystride, *yr = y ? y + r0 * ystride : NULL;
        const float *mrr = mr ? mr + r0 : NULL, *srr = sr ? sr + r0 : NULL;
        size_t c = 0;
        for (; c + 4 * NK_VL <= cols; c += 4 * NK_VL)
            sums_cols_block(xr + c, yr ? yr + c : NULL, dr + c, nr, xstride, ystride,
                            mc ? mc + c : NULL, mrr, srr, 4, 0, act, alpha, sg + c, sgx + c);
        for (; c + NK_VL <= cols; c += NK_VL)
            sums_cols_block(xr + c, yr ? yr + c : NULL, dr + c, nr, xstride, ystride,
                            mc ? mc + c : NULL, mrr, srr, 1, 0, act, alpha, sg + c, sgx + c);
        if (c < cols)
            sums_cols_block(xr + c, yr ? yr + c : NULL, dr + c, nr, xstride, ystride,
                            mc ? mc + c : NULL, mrr, srr, 1, cols - c, act, alpha, sg + c, sgx + c);
    }
}

static void NK_FN(bwd_sums_cols)(const void *x, const void *y, const void *dy, size_t rows,
                                 size_t cols, size_t xstride, size_t ystride, const float *mc,
                                 const float *mr, const float *sr, const nk_epilogue *ep,
                                 double *sg, double *sgx)
{
#define BODY(ACT)                                                                                 \
    sums_cols_body((const xt *)x, (const xt *)y, (const xt *)dy, rows, cols, xstride, ystride,   \
                   mc, mr, sr, ACT, ep, sg, sgx)
    NK_BWD_ACT_SWITCH(BODY)
#undef BODY
}

/* ---- dx ---- */

NK_INLINE vf dx1(vf g, vf x, vf m, vf k1w, vf k2, vf k3)
{
    return vf_fma(k1w, g, vf_fma(k2, vf_sub(x, m), k3));
}

/* The parameter-gradient partials of nk_bwd_dx_rows_acc for elements
 * [i, i + n) of a row (full vector when n == NK_VL): the expression of
 * sums_cols_block, lane for lane. */
NK_INLINE void dx_acc(float *fa, float *fb, size_t i, size_t n, vf g, vf x, vf vm, vf vs)
{
    const vf xm = vf_mul(vf_sub(x, vm), vs);
    if (n == NK_VL) {
        vf_storeu(fa + i, vf_add(vf_loadu(fa + i), g));
        vf_storeu(fb + i, vf_fma(g, xm, vf_loadu(fb + i)));
    } else {
        vf_store_n(fa + i, vf_add(vf_load_n(fa + i, n), g), n);
        vf_store_n(fb + i, vf_fma(g, xm, vf_load_n(fb + i, n)), n);
    }
}

/* dx of elements [i, i + n) of a row, n <= NK_VL (with `ac`, their
 * partials into fa, fb) */
NK_INLINE vf dx_part(const xt *x, const xt *y, const xt *dy, size_t i, size_t n, vf vm, vf v1,
                     vf v2, vf v3, const float *w, const int hw, const int act, vf alpha,
                     const int ac, vf vs, float *fa, float *fb)
{
    const vf g = bwd_gn(y ? y + i : NULL, dy + i, n, act, alpha);
    const vf k1w = hw ? vf_mul(v1, vf_load_n(w + i, n)) : v1;
    const vf xv = vx_load_n(x + i, n);
    if (ac)
        dx_acc(fa, fb, i, n, g, xv, vm, vs);
    return dx1(g, xv, vm, k1w, v2, v3);
}

/* With `stream` the full vectors go out with non-temporal stores once dx is
 * vector aligned (outputs larger than the cache: no read for ownership);
 * head and tail use masked stores. With `ac` the row's partials are added
 * into fa, fb (s: the row's inverse deviation). */
NK_INLINE void dx_row(const xt *x, const xt *y, const xt *dy, xt *dx, size_t len, float m, float k1,
                      float k2, float k3, const float *w, const int hw, const int act, vf alpha,
                      const int stream, const int ac, float s, float *fa, float *fb)
{
    const vf vm = vf_set1(m), v1 = vf_set1(k1), v2 = vf_set1(k2), v3 = vf_set1(k3);
    const vf vs = vf_set1(s);
    size_t i = 0;
    if (stream) {
        size_t h = nk_head(dx);
        h = h < len ? h : len;
        if (h)
            vx_store_n(dx, dx_part(x, y, dy, 0, h, vm, v1, v2, v3, w, hw, act, alpha, ac, vs, fa, fb),
                       h);
        i = h;
    }
    for (; i + NK_VL <= len; i += NK_VL) {
        const vf g = bwd_gv(y ? y + i : NULL, dy + i, act, alpha);
        const vf k1w = hw ? vf_mul(v1, vf_loadu(w + i)) : v1;
        const vf xv = vx_loadu(x + i);
        if (ac)
            dx_acc(fa, fb, i, NK_VL, g, xv, vm, vs);
        const vf o = dx1(g, xv, vm, k1w, v2, v3);
        if (stream)
            vx_stream(dx + i, o);
        else
            vx_storeu(dx + i, o);
    }
    if (i < len)
        vx_store_n(dx + i,
                   dx_part(x, y, dy, i, len - i, vm, v1, v2, v3, w, hw, act, alpha, ac, vs, fa, fb),
                   len - i);
}

NK_INLINE void dx_rows_body(const xt *x, const xt *y, const xt *dy, xt *dx, size_t rows, size_t len,
                            size_t xstride, size_t ystride, const float *m, const float *k1,
                            const float *k2, const float *k3, size_t ps, const float *w,
                            const int act, const nk_epilogue *ep, const int ac, const float *s,
                            float *fa, float *fb)
{
    const vf alpha = vf_set1(ep->alpha);
    for (size_t r = 0; r < rows; r++) {
        const size_t p = r * ps;
        const xt *yr = y ? y + r * ystride : NULL;
#define ROW(W, HW, S)                                                                             \
    dx_row(x + r * xstride, yr, dy + r * ystride, dx + r * xstride, len, m[p], k1[p], k2[p], k3[p], \
           W, HW, act, alpha, S, ac, ac ? s[r] : 0.0f, fa, fb)
        if (NK_STREAM(ep)) {
            if (w)
                ROW(w, 1, 1);
            else
                ROW(NULL, 0, 1);
        } else {
            if (w)
                ROW(w, 1, 0);
            else
                ROW(NULL, 0, 0);
        }
#undef ROW
    }
}

static void NK_FN(bwd_dx_rows)(const void *x, const void *y, const void *dy, void *dx, size_t rows,
                               size_t len, size_t xstride, size_t ystride, const float *m,
                               const float *k1, const float *k2, const float *k3, size_t ps,
                               const float *w, const nk_epilogue *ep)
{
#define BODY(ACT)                                                                                 \
    dx_rows_body((const xt *)x, (const xt *)y, (const xt *)dy, (xt *)dx, rows, len, xstride,     \
                 ystride, m, k1, k2, k3, ps, w, ACT, ep, 0, NULL, NULL, NULL)
    NK_BWD_ACT_SWITCH(BODY)
#undef BODY
    if (NK_STREAM(ep))
        nk_stream_fence();
}

static void NK_FN(bwd_dx_rows_acc)(const void *x, const void *y, const void *dy, void *dx,
                                   size_t rows, size_t len, size_t xstride, size_t ystride,
                                   const float *m, const float *k1, const float *k2,
                                   const float *k3, const float *s, const float *w,
                                   const nk_epilogue *ep, float *fa, float *fb)
{
#define BODY(ACT)                                                                                 \
    dx_rows_body((const xt *)x, (const xt *)y, (const xt *)dy, (xt *)dx, rows, len, xstride,     \
                 ystride, m, k1, k2, k3, 1, w, ACT, ep, 1, s, fa, fb)
    NK_BWD_ACT_SWITCH(BODY)
#undef BODY
    if (NK_STREAM(ep))
        nk_stream_fence();
}

/* Columns [0, V * NK_VL) or one vector of `tail` lanes, every row, with the
 * block's coefficients in registers. */
NK_INLINE void dx_cols_block(const xt *x, const xt *y, const xt *dy, xt *dx, size_t rows,
                             size_t xstride, size_t ystride, const float *m, const float *k1,
                             const float *k2, const float *k3, const int V, size_t tail,
                             const int act, vf alpha)
{
    vf vm[4], v1[4], v2[4], v3[4];
    for (int j = 0; j < V; j++) {
        const size_t o = (size_t)j * NK_VL;
        vm[j] = tail ? vf_load_n(m, tail) : vf_loadu(m + o);
        v1[j] = tail ? vf_load_n(k1, tail) : vf_loadu(k1 + o);
        v2[j] = tail ? vf_load_n(k2, tail) : vf_loadu(k2 + o);
        v3[j] = tail ? vf_load_n(k3, tail) : vf_loadu(k3 + o);
    }
    for (size_t r = 0; r < rows; r++) {
        const xt *xr = x + r * xstride, *dr = dy + r * ystride;
        const xt *yr = y ? y + r * ystride : NULL;
        xt *o = dx + r * xstride;
        for (int j = 0; j < V; j++) {
            const size_t c = (size_t)j * NK_VL;
            if (tail) {
                const vf g = bwd_gn(yr, dr, tail, act, alpha);
                vx_store_n(o, dx1(g, vx_load_n(xr, tail), vm[j], v1[j], v2[j], v3[j]), tail);
            } else {
                const vf g = bwd_gv(yr ? yr + c : NULL, dr + c, act, alpha);
                vx_storeu(o + c, dx1(g, vx_loadu(xr + c), vm[j], v1[j], v2[j], v3[j]));
            }
        }
    }
}

NK_INLINE void dx_cols_body(const xt *x, const xt *y, const xt *dy, xt *dx, size_t rows,
                            size_t cols, size_t xstride, size_t ystride, const float *m,
                            const float *k1, const float *k2, const float *k3, const int act,
                            const nk_epilogue *ep)
{
    const vf alpha = vf_set1(ep->alpha);
    size_t c = 0;
    for (; c + 4 * NK_VL <= cols; c += 4 * NK_VL)
        dx_cols_block(x + c, y ? y + c : NULL, dy + c, dx + c, rows, xstride, ystride, m + c,
                      k1 + c, k2 + c, k3 + c, 4, 0, act, alpha);
    for (; c + NK_VL <= cols; c += NK_VL)
        dx_cols_block(x + c, y ? y + c : NULL, dy + c, dx + c, rows, xstride, ystride, m + c,
                      k1 + c, k2 + c, k3 + c, 1, 0, act, alpha);
    if (c < cols)
        dx_cols_block(x + c, y ? y + c : NULL, dy + c, dx + c, rows, xstride, ystride, m + c,
                      k1 + c, k2 + c, k3 + c, 1, cols - c, act, alpha);
}

static void NK_FN(bwd_dx_cols)(const void *x, const void *y, const void *dy, void *dx, size_t rows,
                               size_t cols, size_t xstride, size_t ystride, const float *m,
                               const float *k1, const float *k2, const float *k3,
                               const nk_epilogue *ep)
{
#define BODY(ACT)                                                                                 \
    dx_cols_body((const xt *)x, (const xt *)y, (const xt *)dy, (xt *)dx, rows, cols, xstride,    \
                 ystride, m, k1, k2, k3, ACT, ep)
    NK_BWD_ACT_SWITCH(BODY)
#undef BODY
}

void NK_FN(kernels_init_backward)(nk_kernels *k)
{
    k->bwd_sums_rows = NK_FN(bwd_sums_rows);
    k->bwd_sums_cols = NK_FN(bwd_sums_cols);
    k->bwd_dx_rows = NK_FN(bwd_dx_rows);
    k->bwd_dx_rows_acc = NK_FN(bwd_dx_rows_acc);
    k->bwd_dx_cols = NK_FN(bwd_dx_cols);
}
