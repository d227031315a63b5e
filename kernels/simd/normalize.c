/*
 * Normalize-scale kernels (norm_rows, norm_cols, norm_affine), written once
 * and compiled per ISA through nk_simd.h (AVX2, AVX-512, NEON): y = act((x - m) * a + b), centred
 * and never folded (see kernels/ref/normalize_ref.c), with the activation
 * fused so the output is written once.
 *
 * The activation and the presence of gamma/beta are compile-time constants
 * of always-inlined bodies (one specialised loop each, selected by a switch
 * outside the loops). With NK_STREAM(ep) the full vectors go out with
 * non-temporal stores once the destination is vector aligned; head and tail
 * use ordinary masked stores, and nk_stream_fence (sfence) orders the
 * streamed data before the kernel returns. Targets without non-temporal
 * stores (NEON) have NK_STREAM 0 and compile only the ordinary stores.
 */
#include "kernels/simd/nk_simd.h"

NK_INLINE vf norm1(vf x, vf m, vf a, vf b, const int act, vf alpha)
{
    return act_apply(vf_fma(vf_sub(x, m), a, b), act, alpha);
}

/* One run of n elements with scalar m, a, b. */
NK_INLINE void span_scalar(const xt *x, xt *y, size_t n, vf m, vf a, vf b, const int act,
                           vf alpha, int stream)
{
    size_t i = 0;
    if (stream) {
        size_t h = nk_head(y);
        h = h < n ? h : n;
        if (h)
            vx_store_n(y, norm1(vx_load_n(x, h), m, a, b, act, alpha), h);
        for (i = h; i + 2 * NK_VL <= n; i += 2 * NK_VL) {
            vf v0, v1;
            vx_loadu2(x + i, &v0, &v1);
            vx_stream2(y + i, norm1(v0, m, a, b, act, alpha), norm1(v1, m, a, b, act, alpha));
        }
        for (; i + NK_VL <= n; i += NK_VL)
            vx_stream(y + i, norm1(vx_loadu(x + i), m, a, b, act, alpha));
    } else {
        for (; i + 2 * NK_VL <= n; i += 2 * NK_VL) {
            vf v0, v1;
            vx_loadu2(x + i, &v0, &v1);
            vx_storeu2(y + i, norm1(v0, m, a, b, act, alpha), norm1(v1, m, a, b, act, alpha));
        }
        for (; i + NK_VL <= n; i += NK_VL)
            vx_storeu(y + i, norm1(vx_loadu(x + i), m, a, b, act, alpha));
    }
    if (i < n)
        vx_store_n(y + i, norm1(vx_load_n(x + i, n - i), m, a, b, act, alpha), n - i);
}

/* Back-to-back rows of NK_VL <= len < ROWS_FLAT_MAX elements with their own
 * m, a, b: one stream of rows * len elements, each vector covering at most two
 * rows (blended parameters where it straddles). Short rows then cost no
 * per-row masked tail (BatchNorm at 7x7: 3.06 vectors of data per row
 * instead of 4 stores). */
#define ROWS_FLAT_MAX 256

/* The parameters of the next full vector of a flat run: row r's m, a, b in
 * vm, va, vb, `left` lanes of row r from the vector's start. */
typedef struct flat_pos {
    size_t r, left;
    vf vm, va, vb;
} flat_pos;

NK_INLINE void flat_next(flat_pos *f, size_t rows, size_t len, const float *m, const float *a,
                         const float *b, vf *pm, vf *pa, vf *pb)
{
    *pm = f->vm, *pa = f->va, *pb = f->vb;
    if (f->left <= NK_VL) {
        /* row r ends in this vector: the lanes past it belong to r + 1 */
        const size_t in = f->left;
        if (f->r + 1 < rows) {
            f->r++;
            f->vm = vf_set1(m[f->r]), f->va = vf_set1(a[f->r]), f->vb = vf_set1(b[f->r]);
        }
        if (in < NK_VL)
            *pm = vf_first(in, *pm, f->vm), *pa = vf_first(in, *pa, f->va),
            *pb = vf_first(in, *pb, f->vb);
        f->left = len - (NK_VL - in);
    } else {
        f->left -= NK_VL;
    }
}

NK_INLINE void rows_flat(const xt *x, xt *y, size_t rows, size_t len, const float *m,
                         const float *a, const float *b, const int act, vf alpha, const int stream)
{
    const size_t n = rows * len;
    size_t i = 0;
    flat_pos f = {0, len, vf_set1(m[0]), vf_set1(a[0]), vf_set1(b[0])};
    if (stream) {
        /* up to the first aligned output vector: inside row 0 (len >= NK_VL) */
        size_t h = nk_head(y);
        if (h) {
            vx_store_n(y, norm1(vx_load_n(x, h), f.vm, f.va, f.vb, act, alpha), h);
            i = h;
            f.left -= h;
        }
    }
    /* pairs of vectors (the pair conversions of nk_simd.h), then one */
    for (; i + 2 * NK_VL <= n; i += 2 * NK_VL) {
        vf pm0, pa0, pb0, pm1, pa1, pb1, v0, v1;
        flat_next(&f, rows, len, m, a, b, &pm0, &pa0, &pb0);
        flat_next(&f, rows, len, m, a, b, &pm1, &pa1, &pb1);
        vx_loadu2(x + i, &v0, &v1);
        v0 = norm1(v0, pm0, pa0, pb0, act, alpha);
        v1 = norm1(v1, pm1, pa1, pb1, act, alpha);
        if (stream)
            vx_stream2(y + i, v0, v1);
        else
            vx_storeu2(y + i, v0, v1);
    }
    if (i + NK_VL <= n) {
        vf pm, pa, pb;
        flat_next(&f, rows, len, m, a, b, &pm, &pa, &pb);
        vf o = norm1(vx_loadu(x + i), pm, pa, pb, act, alpha);
        if (stream)
            vx_stream(y + i, o);
        else
            vx_storeu(y + i, o);
        i += NK_VL;
    }
    /* the tail (< NK_VL <= len) lies in the last row */
    if (i < n)
        vx_store_n(y + i, norm1(vx_load_n(x + i, n - i), f.vm, f.va, f.vb, act, alpha), n - i);
}

NK_INLINE void rows_body(const xt *x, xt *y, size_t rows, size_t len, size_t xstride,
                         size_t ystride, const float *m, const float *a, const float *b, size_t ps,
                         const int act, const nk_epilogue *ep)
{
    const vf alpha = vf_set1(ep->alpha);
    if (ps && rows > 1 && xstride == len && ystride == len && len >= NK_VL && len < ROWS_FLAT_MAX) {
        if (NK_STREAM(ep))
            rows_flat(x, y, rows, len, m, a, b, act, alpha, 1);
        else
            rows_flat(x, y, rows, len, m, a, b, act, alpha, 0);
        return;
    }
    for (size_t r = 0; r < rows; r++)
        span_scalar(x + r * xstride, y + r * ystride, len, vf_set1(m[r * ps]), vf_set1(a[r * ps]),
                    vf_set1(b[r * ps]), act, alpha, NK_STREAM(ep));
}

static void NK_FN(norm_rows)(const void *x, void *y, size_t rows, size_t len, size_t xstride,
                             size_t ystride, const float *m, const float *a, const float *b,
                             size_t ps, const nk_epilogue *ep)
{
#define ROWS(ACT)                                                                                 \
    rows_body((const xt *)x, (xt *)y, rows, len, xstride, ystride, m, a, b, ps, ACT, ep)
    NK_ACT_SWITCH(ROWS)
#undef ROWS
    if (NK_STREAM(ep))
        nk_stream_fence();
}

/* ---- norm_cols: per-column m, a, b ---- */

/* Narrow rows (at most 4 vectors) are processed in tiles of at least
 * COLS_MIN_ROWS rows and about COLS_TILE elements; inside a tile, blocks of
 * 4/2/1 vectors and a tail keep their m, a, b in registers across the tile's
 * rows, so each output vector costs one load of x. */
#define COLS_TILE 4096
#define COLS_MIN_ROWS 8

/* One column block: V full vectors (V constant after inlining), or one
 * masked vector of `tail` lanes when tail != 0, over nr rows. */
NK_INLINE void cols_block(const xt *x, xt *y, size_t nr, size_t xstride, size_t ystride,
                          const float *m, const float *a, const float *b, const int V, size_t tail,
                          const int act, vf alpha, int stream)
{
    vf vm[4], va[4], vb[4];
    for (int v = 0; v < V; v++) {
        const size_t o = (size_t)v * NK_VL;
        vm[v] = tail ? vf_load_n(m, tail) : vf_loadu(m + o);
        va[v] = tail ? vf_load_n(a, tail) : vf_loadu(a + o);
        vb[v] = tail ? vf_load_n(b, tail) : vf_loadu(b + o);
    }
    for (size_t r = 0; r < nr; r++) {
        const xt *xr = x + r * xstride;
        xt *yr = y + r * ystride;
        if (tail) {
            vx_store_n(yr, norm1(vx_load_n(xr, tail), vm[0], va[0], vb[0], act, alpha), tail);
            continue;
        }
        int v = 0;
        for (; v + 2 <= V; v += 2) {
            const size_t o = (size_t)v * NK_VL;
            vf v0, v1;
            vx_loadu2(xr + o, &v0, &v1);
            v0 = norm1(v0, vm[v], va[v], vb[v], act, alpha);
            v1 = norm1(v1, vm[v + 1], va[v + 1], vb[v + 1], act, alpha);
            if (stream)
                vx_stream2(yr + o, v0, v1);
            else
                vx_storeu2(yr + o, v0, v1);
        }
        if (v < V) {
            const size_t o = (size_t)v * NK_VL;
            vf o1 = norm1(vx_loadu(xr + o), vm[v], va[v], vb[v], act, alpha);
            if (stream)
                vx_stream(yr + o, o1);
            else
                vx_storeu(yr + o, o1);
        }
    }
}

NK_INLINE void cols_tiled(const xt *x, xt *y, size_t rows, size_t cols, size_t xstride,
                          size_t ystride, const float *m, const float *a, const float *b,
                          const int act, const nk_epilogue *ep)
{
    const vf alpha = vf_set1(ep->alpha);
    /* streaming only when every row's full vectors are aligned */
    const int stream = NK_STREAM(ep) && nk_aligned(y) && ystride % NK_VL == 0;
    /* a row of several blocks: the next block re-reads the tile's shared
     * lines from L1, so each line of x comes from memory once */
    const size_t tile = COLS_TILE / cols > COLS_MIN_ROWS ? COLS_TILE / cols : COLS_MIN_ROWS;
    for (size_t r0 = 0; r0 < rows; r0 += tile) {
        const size_t nr = rows - r0 < tile ? rows - r0 : tile;
        const xt *xq = x + r0 * xstride;
        xt *yq = y + r0 * ystride;
        size_t j = 0;
#define BLOCK(V, tail)                                                                            \
    cols_block(xq + j, yq + j, nr, xstride, ystride, m + j, a + j, b + j, V, tail, act, alpha,    \
               stream)
        for (; j + 4 * NK_VL <= cols; j += 4 * NK_VL)
            BLOCK(4, 0);
        if (j + 2 * NK_VL <= cols) {
            BLOCK(2, 0);
            j += 2 * NK_VL;
        }
        if (j + NK_VL <= cols) {
            BLOCK(1, 0);
            j += NK_VL;
        }
        if (j < cols)
            BLOCK(1, cols - j);
#undef BLOCK
    }
}

/* Wider rows: row by row, each row left to right, so x and y stream in
 * address order (the hardware prefetchers follow them) while m, a, b come
 * from L1 with every vector. Keeping blocks of m, a, b in registers across a
 * tile of rows saves those loads but walks x in strided pieces of a row:
 * slower from L2 and from memory alike (AVX-512, 64x512: 0.63 -> 0.81 of
 * memcpy from L2; 2048x256: 0.80 -> 0.88). */
NK_INLINE void cols_vec(const xt *x, xt *y, const float *m, const float *a, const float *b,
                        size_t j, size_t tail, const int act, vf alpha, int stream)
{
    if (tail) {
        vx_store_n(y + j,
                   norm1(vx_load_n(x + j, tail), vf_load_n(m + j, tail), vf_load_n(a + j, tail),
                         vf_load_n(b + j, tail), act, alpha),
                   tail);
        return;
    }
    vf o = norm1(vx_loadu(x + j), vf_loadu(m + j), vf_loadu(a + j), vf_loadu(b + j), act, alpha);
    if (stream)
        vx_stream(y + j, o);
    else
        vx_storeu(y + j, o);
}

#define COLS_ROWS 2
NK_INLINE void cols_body(const xt *x, xt *y, size_t rows, size_t cols, size_t xstride,
                         size_t ystride, const float *m, const float *a, const float *b,
                         const int act, const nk_epilogue *ep)
{
    /* rows of at most 4 vectors: their m, a, b stay in registers and a tile
     * of whole rows is still read in address order */
    if (cols <= 4 * NK_VL) {
        cols_tiled(x, y, rows, cols, xstride, ystride, m, a, b, act, ep);
        return;
    }
    const vf alpha = vf_set1(ep->alpha);
    /* streaming only when every row's full vectors are aligned */
    const int stream = NK_STREAM(ep) && nk_aligned(y) && ystride % NK_VL == 0;
    size_t r = 0;
    for (; r + COLS_ROWS <= rows; r += COLS_ROWS) {
        const xt *xr = x + r * xstride;
        xt *yr = y + r * ystride;
        size_t j = 0;
        for (; j + 2 * NK_VL <= cols; j += 2 * NK_VL) {
            const vf vm0 = vf_loadu(m + j), va0 = vf_loadu(a + j), vb0 = vf_loadu(b + j);
            const vf vm1 = vf_loadu(m + j + NK_VL), va1 = vf_loadu(a + j + NK_VL),
                     vb1 = vf_loadu(b + j + NK_VL);
            for (int q = 0; q < COLS_ROWS; q++) {
                vf v0, v1;
                vx_loadu2(xr + q * xstride + j, &v0, &v1);
                v0 = norm1(v0, vm0, va0, vb0, act, alpha);
                v1 = norm1(v1, vm1, va1, vb1, act, alpha);
                if (stream)
                    vx_stream2(yr + q * ystride + j, v0, v1);
                else
                    vx_storeu2(yr + q * ystride + j, v0, v1);
            }
        }
        for (; j + NK_VL <= cols; j += NK_VL) {
            const vf vm = vf_loadu(m + j), va = vf_loadu(a + j), vb = vf_loadu(b + j);
            for (int q = 0; q < COLS_ROWS; q++) {
                vf o = norm1(vx_loadu(xr + q * xstride + j), vm, va, vb, act, alpha);
                if (stream)
                    vx_stream(yr + q * ystride + j, o);
                else
                    vx_storeu(yr + q * ystride + j, o);
            }
        }
        if (j < cols)
            for (int q = 0; q < COLS_ROWS; q++)
                cols_vec(xr + q * xstride, yr + q * ystride, m, a, b, j, cols - j, act, alpha, stream);
    }
    for (; r < rows; r++) {
        const xt *xr = x + r * xstride;
        xt *yr = y + r * ystride;
        size_t j = 0;
        for (; j + 2 * NK_VL <= cols; j += 2 * NK_VL) {
            cols_vec(xr, yr, m, a, b, j, 0, act, alpha, stream);
            cols_vec(xr, yr, m, a, b, j + NK_VL, 0, act, alpha, stream);
        }
        if (j + NK_VL <= cols) {
            cols_vec(xr, yr, m, a, b, j, 0, act, alpha, stream);
            j += NK_VL;
        }
        if (j < cols)
            cols_vec(xr, yr, m, a, b, j, cols - j, act, alpha, stream);
    }
}

static void NK_FN(norm_cols)(const void *x, void *y, size_t rows, size_t cols, size_t xstride,
                             size_t ystride, const float *m, const float *a, const float *b,
                             const nk_epilogue *ep)
{
#define COLS(ACT)                                                                                 \
    cols_body((const xt *)x, (xt *)y, rows, cols, xstride, ystride, m, a, b, ACT, ep)
    NK_ACT_SWITCH(COLS)
#undef COLS
    if (NK_STREAM(ep))
        nk_stream_fence();
}

/* ---- norm_affine: per-row m, s; per-column gamma, beta ---- */

/* ((x - m) * s) * g + b on n < NK_VL lanes or a full vector at offset i */
#define AFF_G(i, n) (HG ? ((n) ? vf_load_n(g + (i), (n)) : vf_loadu(g + (i))) : one)
#define AFF_B(i, n) (HB ? ((n) ? vf_load_n(b + (i), (n)) : vf_loadu(b + (i))) : vf_zero())
#define AFF_X(i, n) ((n) ? vx_load_n(xr + (i), (n)) : vx_loadu(xr + (i)))
#define AFF_V(v, i, n) \
    act_apply(vf_fma(vf_mul(vf_sub((v), vm), vs), AFF_G(i, n), AFF_B(i, n)), act, alpha)
#define AFF(i, n) AFF_V(AFF_X(i, n), i, n)
/* the same with the row's m, s and loaded gamma, beta */
#define AFF_GB(v, vm, vs, vg, vb) act_apply(vf_fma(vf_mul(vf_sub((v), (vm)), (vs)), (vg), (vb)), act, alpha)

/* Row xr from column i on: the element pairs, then a vector, then a tail. */
NK_INLINE void affine_row(const xt *xr, xt *yr, size_t i, size_t len, vf vm, vf vs,
                          const float *g, const float *b, const int act, const int HG,
                          const int HB, vf alpha, vf one, const nk_epilogue *ep)
{
    if (NK_STREAM(ep)) {
        size_t h = nk_head(yr + i);
        h = h < len - i ? h : len - i;
        if (h)
            vx_store_n(yr + i, AFF(i, h), h);
        for (i += h; i + 2 * NK_VL <= len; i += 2 * NK_VL) {
            vf v0, v1;
            vx_loadu2(xr + i, &v0, &v1);
            vx_stream2(yr + i, AFF_V(v0, i, 0), AFF_V(v1, i + NK_VL, 0));
        }
        for (; i + NK_VL <= len; i += NK_VL)
            vx_stream(yr + i, AFF(i, 0));
    } else {
        for (; i + 2 * NK_VL <= len; i += 2 * NK_VL) {
            vf v0, v1;
            vx_loadu2(xr + i, &v0, &v1);
            vx_storeu2(yr + i, AFF_V(v0, i, 0), AFF_V(v1, i + NK_VL, 0));
        }
        for (; i + NK_VL <= len; i += NK_VL)
            vx_storeu(yr + i, AFF(i, 0));
    }
    if (i < len)
        vx_store_n(yr + i, AFF(i, len - i), len - i);
}

NK_INLINE void affine_body(const xt *x, xt *y, size_t rows, size_t len, size_t xstride,
                           size_t ystride, const float *m, const float *s, const float *g,
                           const float *b, const int act, const int HG, const int HB,
                           const nk_epilogue *ep)
{
    const vf alpha = vf_set1(ep->alpha), one = vf_set1(1.0f);
    size_t r = 0;
    /* Rows up to AFF_PAIR_MAX: two at a time share each load of gamma and
     * beta, 4 loads of parameters and x per 2 output vectors instead of 6
     * (the loads bound this loop from cache; AVX-512, 128x768 from L2: fp32
     * 3.24 -> 3.09, bf16 3.65 -> 3.15 ns per 16 elements). Longer rows
     * lose more to two rows and gamma, beta no longer sharing L1 (64x4096
     * fp32: 3.85 -> 4.1). */
#define AFF_PAIR_MAX 1024
    if (!NK_STREAM(ep) && len <= AFF_PAIR_MAX)
        for (; r + 2 <= rows; r += 2) {
            const xt *xr = x + r * xstride, *xq = xr + xstride;
            xt *yr = y + r * ystride, *yq = yr + ystride;
            const vf m0 = vf_set1(m ? m[r] : 0.0f), s0 = vf_set1(s[r]);
            const vf m1 = vf_set1(m ? m[r + 1] : 0.0f), s1 = vf_set1(s[r + 1]);
            size_t i = 0;
            for (; i + 2 * NK_VL <= len; i += 2 * NK_VL) {
                const vf g0 = AFF_G(i, 0), g1 = AFF_G(i + NK_VL, 0);
                const vf b0 = AFF_B(i, 0), b1 = AFF_B(i + NK_VL, 0);
                vf a0, a1, c0, c1;
                vx_loadu2(xr + i, &a0, &a1);
                vx_loadu2(xq + i, &c0, &c1);
                vx_storeu2(yr + i, AFF_GB(a0, m0, s0, g0, b0), AFF_GB(a1, m0, s0, g1, b1));
                vx_storeu2(yq + i, AFF_GB(c0, m1, s1, g0, b0), AFF_GB(c1, m1, s1, g1, b1));
            }
            affine_row(xr, yr, i, len, m0, s0, g, b, act, HG, HB, alpha, one, ep);
            affine_row(xq, yq, i, len, m1, s1, g, b, act, HG, HB, alpha, one, ep);
        }
    for (; r < rows; r++)
        affine_row(x + r * xstride, y + r * ystride, 0, len, vf_set1(m ? m[r] : 0.0f),
                   vf_set1(s[r]), g, b, act, HG, HB, alpha, one, ep);
}
#undef AFF
#undef AFF_GB
#undef AFF_V
#undef AFF_X
#undef AFF_B
#undef AFF_G

static void NK_FN(norm_affine)(const void *x, void *y, size_t rows, size_t len, size_t xstride,
                               size_t ystride, const float *m, const float *s, const float *g,
                               const float *b, const nk_epilogue *ep)
{
#define X_ ((const xt *)x)
#define Y_ ((xt *)y)
#define AFFINE(ACT)                                                                                \
    do {                                                                                           \
        if (g && b)                                                                                \
            affine_body(X_, Y_, rows, len, xstride, ystride, m, s, g, b, ACT, 1, 1, ep);           \
        else if (g)                                                                                \
            affine_body(X_, Y_, rows, len, xstride, ystride, m, s, g, b, ACT, 1, 0, ep);           \
        else if (b)                                                                                \
            affine_body(X_, Y_, rows, len, xstride, ystride, m, s, g, b, ACT, 0, 1, ep);           \
        else                                                                                       \
            affine_body(X_, Y_, rows, len, xstride, ystride, m, s, g, b, ACT, 0, 0, ep);           \
    } while (0)
    NK_ACT_SWITCH(AFFINE)
#undef AFFINE
#undef Y_
#undef X_
    if (NK_STREAM(ep))
        nk_stream_fence();
}

/* ---- norm_cols_affine: per-column m, s; per-row gamma, beta ----
 *
 * Blocks of up to 4 vectors of columns keep their m and s in registers
 * across all rows; each row broadcasts its gamma and beta. Absent m, gamma
 * and beta are 0, 1 and 0: x - 0 and fma(v, 1, 0) are the scalar kernel's
 * values of the same expression, so they need no loops of their own.
 */

NK_INLINE vf caff1(vf x, vf m, vf s, vf g, vf b, const int act, vf alpha)
{
    return act_apply(vf_fma(vf_mul(vf_sub(x, m), s), g, b), act, alpha);
}

NK_INLINE void caff_block(const xt *x, xt *y, size_t rows, size_t xstride, size_t ystride,
                          const float *m, const float *s, const float *g, const float *b,
                          const int V, size_t tail, const int act, vf alpha, int stream)
{
    vf vm[4], vs[4];
    for (int v = 0; v < V; v++) {
        const size_t o = (size_t)v * NK_VL;
        vm[v] = !m ? vf_zero() : tail ? vf_load_n(m, tail) : vf_loadu(m + o);
        vs[v] = tail ? vf_load_n(s, tail) : vf_loadu(s + o);
    }
    for (size_t r = 0; r < rows; r++) {
        const xt *xr = x + r * xstride;
        xt *yr = y + r * ystride;
        const vf g1 = vf_set1(g ? g[r] : 1.0f), b1 = vf_set1(b ? b[r] : 0.0f);
        if (tail) {
            vx_store_n(yr, caff1(vx_load_n(xr, tail), vm[0], vs[0], g1, b1, act, alpha), tail);
            continue;
        }
        int v = 0;
        for (; v + 2 <= V; v += 2) {
            const size_t o = (size_t)v * NK_VL;
            vf v0, v1;
            vx_loadu2(xr + o, &v0, &v1);
            v0 = caff1(v0, vm[v], vs[v], g1, b1, act, alpha);
            v1 = caff1(v1, vm[v + 1], vs[v + 1], g1, b1, act, alpha);
            if (stream)
                vx_stream2(yr + o, v0, v1);
            else
                vx_storeu2(yr + o, v0, v1);
        }
        if (v < V) {
            const size_t o = (size_t)v * NK_VL;
            vf o1 = caff1(vx_loadu(xr + o), vm[v], vs[v], g1, b1, act, alpha);
            if (stream)
                vx_stream(yr + o, o1);
            else
                vx_storeu(yr + o, o1);
        }
    }
}

NK_INLINE void caff_body(const xt *x, xt *y, size_t rows, size_t cols, size_t xstride,
                         size_t ystride, const float *m, const float *s, const float *g,
                         const float *b, const int act, const nk_epilogue *ep)
{
    const vf alpha = vf_set1(ep->alpha);
    /* streaming only when every row's full vectors are aligned */
    const int stream = NK_STREAM(ep) && nk_aligned(y) && ystride % NK_VL == 0;
    size_t j = 0;
#define BLOCK(V, tail)                                                                            \
    caff_block(x + j, y + j, rows, xstride, ystride, m ? m + j : NULL, s + j, g, b, V, tail, act, \
               alpha, stream)
    for (; j + 4 * NK_VL <= cols; j += 4 * NK_VL)
        BLOCK(4, 0);
    if (j + 2 * NK_VL <= cols) {
        BLOCK(2, 0);
        j += 2 * NK_VL;
    }
    if (j + NK_VL <= cols) {
        BLOCK(1, 0);
        j += NK_VL;
    }
    if (j < cols)
        BLOCK(1, cols - j);
#undef BLOCK
}

static void NK_FN(norm_cols_affine)(const void *x, void *y, size_t rows, size_t cols,
                                    size_t xstride, size_t ystride, const float *m,
                                    const float *s, const float *g, const float *b,
                                    const nk_epilogue *ep)
{
#define CAFF(ACT)                                                                                 \
    caff_body((const xt *)x, (xt *)y, rows, cols, xstride, ystride, m, s, g, b, ACT, ep)
    NK_ACT_SWITCH(CAFF)
#undef CAFF
    if (NK_STREAM(ep))
        nk_stream_fence();
}

/* ---- inv_scale: the same IEEE operations as the scalar kernel ---- */

/* fp32 parameters only: compiled in the fp32 unit, shared by every table */
#if NK_IEEE_VDIV && NK_DT == NK_DTYPE_F32
static void NK_FN(inv_scale)(const float *var, const float *w, float eps, size_t n, float *a)
{
    const vf ve = vf_set1(eps);
    size_t i = 0;
    for (; i + NK_VL <= n; i += NK_VL) {
        vf inv = vf_rcp_sqrt(vf_add(vf_loadu(var + i), ve));
        vf_storeu(a + i, w ? vf_mul(inv, vf_loadu(w + i)) : inv);
    }
    if (i < n) {
        vf inv = vf_rcp_sqrt(vf_add(vf_load_n(var + i, n - i), ve));
        vf_store_n(a + i, w ? vf_mul(inv, vf_load_n(w + i, n - i)) : inv, n - i);
    }
}
#endif

static void NK_FN(widen)(const void *xv, size_t n, float *out)
{
    const xt *x = xv;
    size_t i = 0;
    for (; i + NK_VL <= n; i += NK_VL)
        vf_storeu(out + i, vx_loadu(x + i));
    if (i < n)
        vf_store_n(out + i, vx_load_n(x + i, n - i), n - i);
}

/* inv_std (fp64) is the architecture's own where NK_HAVE_INV_STD; inv_scale
 * and inv_std are filled by the fp32 unit only (the dispatcher gives the
 * other dtypes' tables the fp32 table's) */
void NK_INIT(nk_kernels *k)
{
    NK_FN(kernels_init_moments)(k);
    NK_FN(kernels_init_short)(k);
    NK_FN(kernels_init_backward)(k);
    NK_FN(kernels_init_fusion)(k);
    k->norm_rows = NK_FN(norm_rows);
    k->norm_cols = NK_FN(norm_cols);
    k->norm_affine = NK_FN(norm_affine);
    k->norm_cols_affine = NK_FN(norm_cols_affine);
    k->widen = NK_FN(widen);
#if NK_DT == NK_DTYPE_F32
#  if NK_IEEE_VDIV
    k->inv_scale = NK_FN(inv_scale);
#  endif
#  if NK_HAVE_INV_STD
    NK_FN(kernels_init_inv_std)(k);
#  endif
#endif
}
