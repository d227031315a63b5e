/*
 * Normalize-scale kernels (norm_rows, norm_cols, norm_affine), written once
 * and compiled per ISA through nk_x86.h: y = act((x - m) * a + b), centred
 * and never folded (see kernels/ref/normalize_ref.c), with the activation
 * fused so the output is written once.
 *
 * The activation and the presence of gamma/beta are compile-time constants
 * of always-inlined bodies (one specialised loop each, selected by a switch
 * outside the loops). With ep->stream the full vectors go out with
 * non-temporal stores once the destination is vector aligned; head and tail
 * use ordinary masked stores, and an sfence orders the streamed data before
 * the kernel returns.
 */
#include "kernels/x86/nk_x86.h"

#define SQRT1_2 0.70710678118654752f
#define GELU_K 0.7978845608028654f

/* Same expressions as nk_act_ref, lane-wise. */
NK_INLINE vf act_apply(vf v, const int act, vf alpha)
{
    const vf one = vf_set1(1.0f), half = vf_set1(0.5f);
    switch (act) {
    case NK_ACT_RELU:
        return vf_relu(v);
    case NK_ACT_LEAKY_RELU:
        return vf_leaky(v, alpha);
    case NK_ACT_SILU:
        return vf_div(v, vf_add(one, vf_exp(vf_sub(vf_zero(), v))));
    case NK_ACT_GELU_ERF:
        return vf_mul(vf_mul(half, v), vf_add(one, vf_erf(vf_mul(v, vf_set1(SQRT1_2)))));
    case NK_ACT_GELU_TANH: {
        vf cube = vf_mul(vf_mul(vf_mul(vf_set1(0.044715f), v), v), v);
        vf inner = vf_mul(vf_set1(GELU_K), vf_add(v, cube));
        return vf_mul(vf_mul(half, v), vf_add(one, vf_tanh(inner)));
    }
    default:
        return v;
    }
}

NK_INLINE vf norm1(vf x, vf m, vf a, vf b, const int act, vf alpha)
{
    return act_apply(vf_fma(vf_sub(x, m), a, b), act, alpha);
}

/* One run of n floats with scalar m, a, b. */
NK_INLINE void span_scalar(const float *x, float *y, size_t n, vf m, vf a, vf b, const int act,
                           vf alpha, int stream)
{
    size_t i = 0;
    if (stream) {
        size_t h = nk_head(y);
        h = h < n ? h : n;
        if (h)
            vf_store_n(y, norm1(vf_load_n(x, h), m, a, b, act, alpha), h);
        for (i = h; i + NK_VL <= n; i += NK_VL)
            vf_stream(y + i, norm1(vf_loadu(x + i), m, a, b, act, alpha));
    } else {
        for (; i + 2 * NK_VL <= n; i += 2 * NK_VL) {
            vf v0 = norm1(vf_loadu(x + i), m, a, b, act, alpha);
            vf v1 = norm1(vf_loadu(x + i + NK_VL), m, a, b, act, alpha);
            vf_storeu(y + i, v0);
            vf_storeu(y + i + NK_VL, v1);
        }
        for (; i + NK_VL <= n; i += NK_VL)
            vf_storeu(y + i, norm1(vf_loadu(x + i), m, a, b, act, alpha));
    }
    if (i < n)
        vf_store_n(y + i, norm1(vf_load_n(x + i, n - i), m, a, b, act, alpha), n - i);
}

NK_INLINE void rows_body(const float *x, float *y, size_t rows, size_t len, size_t xstride,
                         size_t ystride, const float *m, const float *a, const float *b, size_t ps,
                         const int act, const nk_epilogue *ep)
{
    const vf alpha = vf_set1(ep->alpha);
    for (size_t r = 0; r < rows; r++)
        span_scalar(x + r * xstride, y + r * ystride, len, vf_set1(m[r * ps]), vf_set1(a[r * ps]),
                    vf_set1(b[r * ps]), act, alpha, ep->stream);
}

#define NK_ACT_SWITCH(body)                                                                       \
    switch (ep->act) {                                                                            \
    case NK_ACT_RELU: body(NK_ACT_RELU); break;                                                   \
    case NK_ACT_LEAKY_RELU: body(NK_ACT_LEAKY_RELU); break;                                       \
    case NK_ACT_SILU: body(NK_ACT_SILU); break;                                                   \
    case NK_ACT_GELU_ERF: body(NK_ACT_GELU_ERF); break;                                           \
    case NK_ACT_GELU_TANH: body(NK_ACT_GELU_TANH); break;                                         \
    default: body(NK_ACT_NONE); break;                                                            \
    }

static void NK_FN(norm_rows)(const float *x, float *y, size_t rows, size_t len, size_t xstride,
                             size_t ystride, const float *m, const float *a, const float *b,
                             size_t ps, const nk_epilogue *ep)
{
#define ROWS(ACT) rows_body(x, y, rows, len, xstride, ystride, m, a, b, ps, ACT, ep)
    NK_ACT_SWITCH(ROWS)
#undef ROWS
    if (ep->stream)
        _mm_sfence();
}

/* ---- norm_cols: per-column m, a, b ---- */

#define COLS_REG 4 /* rows up to COLS_REG vectors wide keep m, a, b in registers */
#define COLS_TILE 4096 /* floats per row tile of wider rows (16 KiB, in L1) */

NK_INLINE void cols_body(const float *x, float *y, size_t rows, size_t cols, size_t xstride,
                         size_t ystride, const float *m, const float *a, const float *b,
                         const int act, const nk_epilogue *ep)
{
    const vf alpha = vf_set1(ep->alpha);
    /* streaming only when every row's full vectors are aligned */
    const int stream = ep->stream && nk_aligned(y) && ystride % NK_VL == 0;
    const size_t nfull = cols / NK_VL, tail = cols % NK_VL;
    if (cols <= COLS_REG * NK_VL) {
        vf vm[COLS_REG + 1], va[COLS_REG + 1], vb[COLS_REG + 1];
        for (size_t v = 0; v < nfull; v++) {
            vm[v] = vf_loadu(m + v * NK_VL);
            va[v] = vf_loadu(a + v * NK_VL);
            vb[v] = vf_loadu(b + v * NK_VL);
        }
        if (tail) {
            vm[nfull] = vf_load_n(m + nfull * NK_VL, tail);
            va[nfull] = vf_load_n(a + nfull * NK_VL, tail);
            vb[nfull] = vf_load_n(b + nfull * NK_VL, tail);
        }
        for (size_t r = 0; r < rows; r++) {
            const float *xr = x + r * xstride;
            float *yr = y + r * ystride;
            for (size_t v = 0; v < nfull; v++) {
                vf o = norm1(vf_loadu(xr + v * NK_VL), vm[v], va[v], vb[v], act, alpha);
                if (stream)
                    vf_stream(yr + v * NK_VL, o);
                else
                    vf_storeu(yr + v * NK_VL, o);
            }
            if (tail)
                vf_store_n(yr + nfull * NK_VL,
                           norm1(vf_load_n(xr + nfull * NK_VL, tail), vm[nfull], va[nfull],
                                 vb[nfull], act, alpha),
                           tail);
        }
        return;
    }
    /* Wide rows: tiles of about COLS_TILE floats of consecutive rows; inside a
     * tile, blocks of COLS_REG vectors of columns keep their m, a, b in
     * registers across the tile's rows, so each output vector costs one load
     * of x and the tile is still in L1 for the next column block. */
    const size_t tile = cols >= COLS_TILE ? 1 : COLS_TILE / cols;
    for (size_t r0 = 0; r0 < rows; r0 += tile) {
        const size_t nr = rows - r0 < tile ? rows - r0 : tile;
        size_t j = 0;
        for (; j + COLS_REG * NK_VL <= cols; j += COLS_REG * NK_VL) {
            vf vm[COLS_REG], va[COLS_REG], vb[COLS_REG];
            for (int v = 0; v < COLS_REG; v++) {
                vm[v] = vf_loadu(m + j + (size_t)v * NK_VL);
                va[v] = vf_loadu(a + j + (size_t)v * NK_VL);
                vb[v] = vf_loadu(b + j + (size_t)v * NK_VL);
            }
            for (size_t r = r0; r < r0 + nr; r++) {
                const float *xr = x + r * xstride + j;
                float *yr = y + r * ystride + j;
                for (int v = 0; v < COLS_REG; v++) {
                    vf o = norm1(vf_loadu(xr + v * NK_VL), vm[v], va[v], vb[v], act, alpha);
                    if (stream)
                        vf_stream(yr + v * NK_VL, o);
                    else
                        vf_storeu(yr + v * NK_VL, o);
                }
            }
        }
        for (size_t r = r0; r < r0 + nr; r++) {
            const float *xr = x + r * xstride;
            float *yr = y + r * ystride;
            size_t i = j;
            for (; i + NK_VL <= cols; i += NK_VL) {
                vf o = norm1(vf_loadu(xr + i), vf_loadu(m + i), vf_loadu(a + i), vf_loadu(b + i),
                             act, alpha);
                if (stream)
                    vf_stream(yr + i, o);
                else
                    vf_storeu(yr + i, o);
            }
            if (i < cols)
                vf_store_n(yr + i,
                           norm1(vf_load_n(xr + i, cols - i), vf_load_n(m + i, cols - i),
                                 vf_load_n(a + i, cols - i), vf_load_n(b + i, cols - i), act,
                                 alpha),
                           cols - i);
        }
    }
}

static void NK_FN(norm_cols)(const float *x, float *y, size_t rows, size_t cols, size_t xstride,
                             size_t ystride, const float *m, const float *a, const float *b,
                             const nk_epilogue *ep)
{
#define COLS(ACT) cols_body(x, y, rows, cols, xstride, ystride, m, a, b, ACT, ep)
    NK_ACT_SWITCH(COLS)
#undef COLS
    if (ep->stream)
        _mm_sfence();
}

/* ---- norm_affine: per-row m, s; per-column gamma, beta ---- */

/* ((x - m) * s) * g + b on n < NK_VL lanes or a full vector at offset i */
#define AFF_G(i, n) (HG ? ((n) ? vf_load_n(g + (i), (n)) : vf_loadu(g + (i))) : one)
#define AFF_B(i, n) (HB ? ((n) ? vf_load_n(b + (i), (n)) : vf_loadu(b + (i))) : vf_zero())
#define AFF_X(i, n) ((n) ? vf_load_n(xr + (i), (n)) : vf_loadu(xr + (i)))
#define AFF(i, n) \
    act_apply(vf_fma(vf_mul(vf_sub(AFF_X(i, n), vm), vs), AFF_G(i, n), AFF_B(i, n)), act, alpha)

NK_INLINE void affine_body(const float *x, float *y, size_t rows, size_t len, size_t xstride,
                           size_t ystride, const float *m, const float *s, const float *g,
                           const float *b, const int act, const int HG, const int HB,
                           const nk_epilogue *ep)
{
    const vf alpha = vf_set1(ep->alpha), one = vf_set1(1.0f);
    for (size_t r = 0; r < rows; r++) {
        const float *xr = x + r * xstride;
        float *yr = y + r * ystride;
        const vf vm = vf_set1(m ? m[r] : 0.0f), vs = vf_set1(s[r]);
        size_t i = 0;
        if (ep->stream) {
            size_t h = nk_head(yr);
            h = h < len ? h : len;
            if (h)
                vf_store_n(yr, AFF(0, h), h);
            for (i = h; i + NK_VL <= len; i += NK_VL)
                vf_stream(yr + i, AFF(i, 0));
        } else {
            for (; i + 2 * NK_VL <= len; i += 2 * NK_VL) {
                vf v0 = AFF(i, 0), v1 = AFF(i + NK_VL, 0);
                vf_storeu(yr + i, v0);
                vf_storeu(yr + i + NK_VL, v1);
            }
            for (; i + NK_VL <= len; i += NK_VL)
                vf_storeu(yr + i, AFF(i, 0));
        }
        if (i < len)
            vf_store_n(yr + i, AFF(i, len - i), len - i);
    }
}
#undef AFF
#undef AFF_X
#undef AFF_B
#undef AFF_G

static void NK_FN(norm_affine)(const float *x, float *y, size_t rows, size_t len, size_t xstride,
                               size_t ystride, const float *m, const float *s, const float *g,
                               const float *b, const nk_epilogue *ep)
{
#define AFFINE(ACT)                                                                                \
    do {                                                                                           \
        if (g && b)                                                                                \
            affine_body(x, y, rows, len, xstride, ystride, m, s, g, b, ACT, 1, 1, ep);             \
        else if (g)                                                                                \
            affine_body(x, y, rows, len, xstride, ystride, m, s, g, b, ACT, 1, 0, ep);             \
        else if (b)                                                                                \
            affine_body(x, y, rows, len, xstride, ystride, m, s, g, b, ACT, 0, 1, ep);             \
        else                                                                                       \
            affine_body(x, y, rows, len, xstride, ystride, m, s, g, b, ACT, 0, 0, ep);             \
    } while (0)
    NK_ACT_SWITCH(AFFINE)
#undef AFFINE
    if (ep->stream)
        _mm_sfence();
}

void NK_INIT(nk_kernels *k)
{
    NK_FN(kernels_init_moments)(k);
    k->norm_rows = NK_FN(norm_rows);
    k->norm_cols = NK_FN(norm_cols);
    k->norm_affine = NK_FN(norm_affine);
}
