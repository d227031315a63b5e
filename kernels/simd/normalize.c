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
        for (i = h; i + NK_VL <= n; i += NK_VL)
            vx_stream(y + i, norm1(vx_loadu(x + i), m, a, b, act, alpha));
    } else {
        for (; i + 2 * NK_VL <= n; i += 2 * NK_VL) {
            vf v0 = norm1(vx_loadu(x + i), m, a, b, act, alpha);
            vf v1 = norm1(vx_loadu(x + i + NK_VL), m, a, b, act, alpha);
            vx_storeu(y + i, v0);
            vx_storeu(y + i + NK_VL, v1);
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

NK_INLINE void rows_flat(const xt *x, xt *y, size_t rows, size_t len, const float *m,
                         const float *a, const float *b, const int act, vf alpha, const int stream)
{
    const size_t n = rows * len;
    size_t i = 0, r = 0, left = len; /* lanes of row r from position i */
    vf vm = vf_set1(m[0]), va = vf_set1(a[0]), vb = vf_set1(b[0]);
    if (stream) {
        /* up to the first aligned output vector: inside row 0 (len >= NK_VL) */
        size_t h = nk_head(y);
        if (h) {
            vx_store_n(y, norm1(vx_load_n(x, h), vm, va, vb, act, alpha), h);
            i = h;
            left -= h;
        }
    }
    for (; i + NK_VL <= n; i += NK_VL) {
        vf pm = vm, pa = va, pb = vb;
        if (left <= NK_VL) {
            /* row r ends in this vector: the lanes past it belong to r + 1 */
            const size_t in = left;
            if (r + 1 < rows) {
                r++;
                vm = vf_set1(m[r]), va = vf_set1(a[r]), vb = vf_set1(b[r]);
            }
            if (in < NK_VL)
                pm = vf_first(in, pm, vm), pa = vf_first(in, pa, va), pb = vf_first(in, pb, vb);
            left = len - (NK_VL - in);
        } else {
            left -= NK_VL;
        }
        vf o = norm1(vx_loadu(x + i), pm, pa, pb, act, alpha);
        if (stream)
            vx_stream(y + i, o);
        else
            vx_storeu(y + i, o);
    }
    /* the tail (< NK_VL <= len) lies in the last row */
    if (i < n)
        vx_store_n(y + i, norm1(vx_load_n(x + i, n - i), vm, va, vb, act, alpha), n - i);
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
        for (int v = 0; v < V; v++) {
            const size_t o = (size_t)v * NK_VL;
            vf o1 = norm1(tail ? vx_load_n(xr, tail) : vx_loadu(xr + o), vm[v], va[v], vb[v], act,
                          alpha);
            if (tail)
                vx_store_n(yr, o1, tail);
            else if (stream)
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
#define AFF(i, n) \
    act_apply(vf_fma(vf_mul(vf_sub(AFF_X(i, n), vm), vs), AFF_G(i, n), AFF_B(i, n)), act, alpha)

NK_INLINE void affine_body(const xt *x, xt *y, size_t rows, size_t len, size_t xstride,
                           size_t ystride, const float *m, const float *s, const float *g,
                           const float *b, const int act, const int HG, const int HB,
                           const nk_epilogue *ep)
{
    const vf alpha = vf_set1(ep->alpha), one = vf_set1(1.0f);
    for (size_t r = 0; r < rows; r++) {
        const xt *xr = x + r * xstride;
        xt *yr = y + r * ystride;
        const vf vm = vf_set1(m ? m[r] : 0.0f), vs = vf_set1(s[r]);
        size_t i = 0;
        if (NK_STREAM(ep)) {
            size_t h = nk_head(yr);
            h = h < len ? h : len;
            if (h)
                vx_store_n(yr, AFF(0, h), h);
            for (i = h; i + NK_VL <= len; i += NK_VL)
                vx_stream(yr + i, AFF(i, 0));
        } else {
            for (; i + 2 * NK_VL <= len; i += 2 * NK_VL) {
                vf v0 = AFF(i, 0), v1 = AFF(i + NK_VL, 0);
                vx_storeu(yr + i, v0);
                vx_storeu(yr + i + NK_VL, v1);
            }
            for (; i + NK_VL <= len; i += NK_VL)
                vx_storeu(yr + i, AFF(i, 0));
        }
        if (i < len)
            vx_store_n(yr + i, AFF(i, len - i), len - i);
    }
}
#undef AFF
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
    k->norm_rows = NK_FN(norm_rows);
    k->norm_cols = NK_FN(norm_cols);
    k->norm_affine = NK_FN(norm_affine);
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
