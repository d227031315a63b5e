/*
 * NEON normalize-scale kernels: y = act((x - m) * a + b), centred before
 * scaling exactly as kernels/ref/normalize_ref.c (never folded into
 * x * a + (b - m * a)), with the activation fused and vectorised (SLEEF for
 * exp / erf / tanh; built without SLEEF, SiLU and GELU call the scalar
 * nk_act_ref per lane). Every loop is instantiated per activation; the cheap
 * ones are unrolled NK_NEON_U vectors deep, the ones with a call are not. Tails use lane loads / stores, so nothing outside
 * [x, x + len) is read or [y, y + len) written; x == y (in place) is allowed.
 * Streaming stores are not used: AArch64 has no non-temporal store
 * intrinsic and STNP gives little on the cores this targets.
 */
#include "kernels/arm/neon_util.h"

/* Row kernel: y[i] = act((x[i] - m) * a + b), i < len. */
NK_INLINE void norm_row(const float *x, float *y, size_t len, float32x4_t m, float32x4_t a,
                        float32x4_t b, const int act, float32x4_t alpha)
{
    size_t i = 0;
    if (!NK_ACT_IS_CALL(act)) {
        enum { U = NK_NEON_U };
        for (; i + 4 * U <= len; i += 4 * U) {
            float32x4_t v[U];
            for (int u = 0; u < U; u++)
                v[u] = vld1q_f32(x + i + 4 * u);
            for (int u = 0; u < U; u++)
                v[u] = nk_act_f32(nk_fma_f32(b, vsubq_f32(v[u], m), a), act, alpha);
            for (int u = 0; u < U; u++)
                vst1q_f32(y + i + 4 * u, v[u]);
        }
    }
    for (; i + 4 <= len; i += 4) {
        float32x4_t v = vld1q_f32(x + i);
        vst1q_f32(y + i, nk_act_f32(nk_fma_f32(b, vsubq_f32(v, m), a), act, alpha));
    }
    if (i < len) {
        float32x4_t v = nk_load_partial(x + i, len - i);
        nk_store_partial(y + i, nk_act_f32(nk_fma_f32(b, vsubq_f32(v, m), a), act, alpha), len - i);
    }
}

NK_INLINE void norm_rows_act(const float *x, float *y, size_t rows, size_t len, size_t xstride,
                             size_t ystride, const float *m, const float *a, const float *b,
                             size_t ps, const int act, float32x4_t alpha)
{
    size_t r = 0;
    /* Rows shorter than a vector: four rows at once, one per lane. */
    if (len < 4)
        for (; r + 4 <= rows; r += 4) {
            float32x4_t vm, va, vb;
            if (ps) {
                vm = vld1q_f32(m + r);
                va = vld1q_f32(a + r);
                vb = vld1q_f32(b + r);
            } else {
                vm = vdupq_n_f32(m[0]);
                va = vdupq_n_f32(a[0]);
                vb = vdupq_n_f32(b[0]);
            }
            for (size_t i = 0; i < len; i++) {
                float32x4_t v = nk_gather4(x + r * xstride + i, xstride);
                v = nk_act_f32(nk_fma_f32(vb, vsubq_f32(v, vm), va), act, alpha);
                nk_scatter4(y + r * ystride + i, ystride, v);
            }
        }
    for (; r < rows; r++)
        norm_row(x + r * xstride, y + r * ystride, len, vdupq_n_f32(m[r * ps]),
                 vdupq_n_f32(a[r * ps]), vdupq_n_f32(b[r * ps]), act, alpha);
}

static void nk_norm_rows__neon(const float *x, float *y, size_t rows, size_t len, size_t xstride,
                               size_t ystride, const float *m, const float *a, const float *b,
                               size_t ps, const nk_epilogue *ep)
{
    const float32x4_t al = vdupq_n_f32(ep->alpha);
    switch (ep->act) {
#define NK_CASE(A)                                                                        \
    case A:                                                                               \
        norm_rows_act(x, y, rows, len, xstride, ystride, m, a, b, ps, A, al);             \
        break;
    NK_CASE(NK_ACT_RELU)
    NK_CASE(NK_ACT_LEAKY_RELU)
    NK_CASE(NK_ACT_SILU)
    NK_CASE(NK_ACT_GELU_ERF)
    NK_CASE(NK_ACT_GELU_TANH)
    default:
        norm_rows_act(x, y, rows, len, xstride, ystride, m, a, b, ps, NK_ACT_NONE, al);
        break;
    }
#undef NK_CASE
}

/*
 * Columns [0, 4 * nv) of rows [0, rows) (the last vector holding `tail`
 * columns): m / a / b of the block are held in registers across the rows.
 */
NK_INLINE void norm_cols_block(const float *x, float *y, size_t rows, size_t xstride,
                               size_t ystride, const float *m, const float *a, const float *b,
                               const int nv, size_t tail, const int act, float32x4_t alpha)
{
    float32x4_t vm[NK_NEON_CU], va[NK_NEON_CU], vb[NK_NEON_CU];
    for (int v = 0; v < nv; v++) {
        if (v == nv - 1 && tail < 4) {
            vm[v] = nk_load_partial(m + 4 * v, tail);
            va[v] = nk_load_partial(a + 4 * v, tail);
            vb[v] = nk_load_partial(b + 4 * v, tail);
        } else {
            vm[v] = vld1q_f32(m + 4 * v);
            va[v] = vld1q_f32(a + 4 * v);
            vb[v] = vld1q_f32(b + 4 * v);
        }
    }
    for (size_t r = 0; r < rows; r++) {
        const float *xr = x + r * xstride;
        float *yr = y + r * ystride;
        for (int v = 0; v < nv; v++) {
            if (v == nv - 1 && tail < 4) {
                float32x4_t t = nk_load_partial(xr + 4 * v, tail);
                t = nk_act_f32(nk_fma_f32(vb[v], vsubq_f32(t, vm[v]), va[v]), act, alpha);
                nk_store_partial(yr + 4 * v, t, tail);
            } else {
                float32x4_t t = vld1q_f32(xr + 4 * v);
                t = nk_act_f32(nk_fma_f32(vb[v], vsubq_f32(t, vm[v]), va[v]), act, alpha);
                vst1q_f32(yr + 4 * v, t);
            }
        }
    }
}

/* Rows per tile of the column kernel: the parameters of a column block are
 * loaded once per tile, and a tile's rows are walked front to back. */
#define NK_COLS_TILE 8

NK_INLINE void norm_cols_act(const float *x, float *y, size_t rows, size_t cols, size_t xstride,
                             size_t ystride, const float *m, const float *a, const float *b,
                             const int act, float32x4_t alpha)
{
    for (size_t r0 = 0; r0 < rows; r0 += NK_COLS_TILE) {
        const size_t nr = rows - r0 < NK_COLS_TILE ? rows - r0 : NK_COLS_TILE;
        const float *xt = x + r0 * xstride;
        float *yt = y + r0 * ystride;
        size_t c = 0;
        for (; c + 4 * NK_NEON_CU <= cols; c += 4 * NK_NEON_CU)
            norm_cols_block(xt + c, yt + c, nr, xstride, ystride, m + c, a + c, b + c, NK_NEON_CU,
                            4, act, alpha);
        for (; c + 4 <= cols; c += 4)
            norm_cols_block(xt + c, yt + c, nr, xstride, ystride, m + c, a + c, b + c, 1, 4, act,
                            alpha);
        if (c < cols)
            norm_cols_block(xt + c, yt + c, nr, xstride, ystride, m + c, a + c, b + c, 1,
                            cols - c, act, alpha);
    }
}

static void nk_norm_cols__neon(const float *x, float *y, size_t rows, size_t cols, size_t xstride,
                               size_t ystride, const float *m, const float *a, const float *b,
                               const nk_epilogue *ep)
{
    const float32x4_t al = vdupq_n_f32(ep->alpha);
    switch (ep->act) {
#define NK_CASE(A)                                                                        \
    case A:                                                                               \
        norm_cols_act(x, y, rows, cols, xstride, ystride, m, a, b, A, al);                \
        break;
    NK_CASE(NK_ACT_RELU)
    NK_CASE(NK_ACT_LEAKY_RELU)
    NK_CASE(NK_ACT_SILU)
    NK_CASE(NK_ACT_GELU_ERF)
    NK_CASE(NK_ACT_GELU_TANH)
    default:
        norm_cols_act(x, y, rows, cols, xstride, ystride, m, a, b, NK_ACT_NONE, al);
        break;
    }
#undef NK_CASE
}

/*
 * LayerNorm / RMSNorm: y = act(((x - m[r]) * s[r]) * g[i] + b[i]); has_g /
 * has_b are constants per instantiation (absent g is 1, absent b is 0, as in
 * the scalar path's fmaf(v, 1, b) and fmaf(v, g, 0)).
 */
NK_INLINE float32x4_t affine_one(float32x4_t xv, float32x4_t mr, float32x4_t sr,
                                 const float *g, const float *b, size_t i, size_t n,
                                 const int has_g, const int has_b, const int act,
                                 float32x4_t alpha)
{
    float32x4_t v = vmulq_f32(vsubq_f32(xv, mr), sr);
    float32x4_t gv = vdupq_n_f32(1.0f), bv = vdupq_n_f32(0.0f);
    if (has_g)
        gv = n == 4 ? vld1q_f32(g + i) : nk_load_partial(g + i, n);
    if (has_b)
        bv = n == 4 ? vld1q_f32(b + i) : nk_load_partial(b + i, n);
    return nk_act_f32(nk_fma_f32(bv, v, gv), act, alpha);
}

NK_INLINE void affine_act(const float *x, float *y, size_t rows, size_t len, size_t xstride,
                          size_t ystride, const float *m, const float *s, const float *g,
                          const float *b, const int has_g, const int has_b, const int act,
                          float32x4_t alpha)
{
    size_t r = 0;
    /* Rows shorter than a vector: four rows at once, one per lane. */
    if (len < 4)
        for (; r + 4 <= rows; r += 4) {
            const float32x4_t vm = m ? vld1q_f32(m + r) : vdupq_n_f32(0.0f);
            const float32x4_t vs = vld1q_f32(s + r);
            for (size_t i = 0; i < len; i++) {
                float32x4_t v = vmulq_f32(vsubq_f32(nk_gather4(x + r * xstride + i, xstride), vm), vs);
                float32x4_t gv = vdupq_n_f32(has_g ? g[i] : 1.0f);
                float32x4_t bv = vdupq_n_f32(has_b ? b[i] : 0.0f);
                nk_scatter4(y + r * ystride + i, ystride, nk_act_f32(nk_fma_f32(bv, v, gv), act, alpha));
            }
        }
    for (; r < rows; r++) {
        const float *xr = x + r * xstride;
        float *yr = y + r * ystride;
        const float32x4_t mr = vdupq_n_f32(m ? m[r] : 0.0f), sr = vdupq_n_f32(s[r]);
        size_t i = 0;
        if (!NK_ACT_IS_CALL(act)) {
            enum { U = NK_NEON_U };
            for (; i + 4 * U <= len; i += 4 * U) {
                float32x4_t v[U];
                for (int u = 0; u < U; u++)
                    v[u] = affine_one(vld1q_f32(xr + i + 4 * u), mr, sr, g, b, i + 4 * u, 4,
                                      has_g, has_b, act, alpha);
                for (int u = 0; u < U; u++)
                    vst1q_f32(yr + i + 4 * u, v[u]);
            }
        }
        for (; i + 4 <= len; i += 4)
            vst1q_f32(yr + i, affine_one(vld1q_f32(xr + i), mr, sr, g, b, i, 4, has_g, has_b, act,
                                         alpha));
        if (i < len)
            nk_store_partial(yr + i,
                             affine_one(nk_load_partial(xr + i, len - i), mr, sr, g, b, i, len - i,
                                        has_g, has_b, act, alpha),
                             len - i);
    }
}

NK_INLINE void affine_gb(const float *x, float *y, size_t rows, size_t len, size_t xstride,
                         size_t ystride, const float *m, const float *s, const float *g,
                         const float *b, const int act, float32x4_t alpha)
{
    if (g && b)
        affine_act(x, y, rows, len, xstride, ystride, m, s, g, b, 1, 1, act, alpha);
    else if (g)
        affine_act(x, y, rows, len, xstride, ystride, m, s, g, b, 1, 0, act, alpha);
    else if (b)
        affine_act(x, y, rows, len, xstride, ystride, m, s, g, b, 0, 1, act, alpha);
    else
        affine_act(x, y, rows, len, xstride, ystride, m, s, g, b, 0, 0, act, alpha);
}

static void nk_norm_affine__neon(const float *x, float *y, size_t rows, size_t len,
                                 size_t xstride, size_t ystride, const float *m, const float *s,
                                 const float *g, const float *b, const nk_epilogue *ep)
{
    const float32x4_t al = vdupq_n_f32(ep->alpha);
    switch (ep->act) {
#define NK_CASE(A)                                                                        \
    case A:                                                                               \
        affine_gb(x, y, rows, len, xstride, ystride, m, s, g, b, A, al);                  \
        break;
    NK_CASE(NK_ACT_RELU)
    NK_CASE(NK_ACT_LEAKY_RELU)
    NK_CASE(NK_ACT_SILU)
    NK_CASE(NK_ACT_GELU_ERF)
    NK_CASE(NK_ACT_GELU_TANH)
    default:
        affine_gb(x, y, rows, len, xstride, ystride, m, s, g, b, NK_ACT_NONE, al);
        break;
    }
#undef NK_CASE
}

#if defined(__aarch64__)
/* Same IEEE operations as the scalar kernel (AArch64 has vector sqrt and
 * division; ARMv7 NEON only estimates, so it keeps the scalar kernel). */
static void nk_inv_scale__neon(const float *var, const float *w, float eps, size_t n, float *a)
{
    const float32x4_t ve = vdupq_n_f32(eps), one = vdupq_n_f32(1.0f);
    size_t i = 0;
    for (; i + 4 <= n; i += 4) {
        float32x4_t inv = vdivq_f32(one, vsqrtq_f32(vaddq_f32(vld1q_f32(var + i), ve)));
        vst1q_f32(a + i, w ? vmulq_f32(inv, vld1q_f32(w + i)) : inv);
    }
    for (; i < n; i++)
        a[i] = nk_inv_scale1(var[i], w ? w + i : NULL, eps);
}
#endif

void nk_kernels_init_neon(nk_kernels *k)
{
    nk_kernels_init_neon_moments(k);
    nk_kernels_init_neon_short(k);
    k->norm_rows = nk_norm_rows__neon;
    k->norm_cols = nk_norm_cols__neon;
    k->norm_affine = nk_norm_affine__neon;
#if defined(__aarch64__)
    k->inv_scale = nk_inv_scale__neon;
#endif
}
