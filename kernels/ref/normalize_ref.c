/*
 * Portable normalize-scale kernels: y = act((x - m) * a + b).
 * Centring before scaling keeps x == mean at exactly b (constant inputs give
 * beta) and keeps large means from costing output bits, which the folded
 * x * a + (b - m * a) form does not.
 *
 * Compiled once per element type (kernels/dtype.h): x widened exactly to
 * fp32 by nk_xload, y rounded from the fp32 result by nk_xstore. The
 * dtype-independent parts (nk_act_ref, inv_scale, inv_std) are in the fp32
 * unit only.
 */
#include <math.h>

#include "kernels/dtype.h"
#include "kernels/kernels.h"

#if NK_DT == NK_DTYPE_F32
float nk_act_ref(float v, const nk_epilogue *ep)
{
    switch (ep->act) {
    case NK_ACT_RELU:
        return v < 0.0f ? 0.0f : v;
    case NK_ACT_LEAKY_RELU:
        return v < 0.0f ? v * ep->alpha : v;
    case NK_ACT_SILU:
        return v / (1.0f + expf(-v));
    case NK_ACT_GELU_ERF:
        return 0.5f * v * (1.0f + erff(v * 0.70710678118654752f));
    case NK_ACT_GELU_TANH: {
        float inner = 0.7978845608028654f * (v + 0.044715f * v * v * v);
        return 0.5f * v * (1.0f + tanhf(inner));
    }
    default:
        return v;
    }
}
#endif

static void norm_rows_ref(const void *xv, void *yv, size_t rows, size_t len, size_t xstride,
                          size_t ystride, const float *m, const float *a, const float *b,
                          size_t ps, const nk_epilogue *ep)
{
    const xt *x = xv;
    xt *y = yv;
    for (size_t r = 0; r < rows; r++) {
        const xt *xr = x + r * xstride;
        xt *yr = y + r * ystride;
        const float mr = m[r * ps], ar = a[r * ps], br = b[r * ps];
        if (ep->act == NK_ACT_NONE) {
            for (size_t i = 0; i < len; i++)
                nk_xstore(&yr[i], fmaf(nk_xload(&xr[i]) - mr, ar, br));
        } else {
            for (size_t i = 0; i < len; i++)
                nk_xstore(&yr[i], nk_act_ref(fmaf(nk_xload(&xr[i]) - mr, ar, br), ep));
        }
    }
}

static void norm_cols_ref(const void *xv, void *yv, size_t rows, size_t cols, size_t xstride,
                          size_t ystride, const float *m, const float *a, const float *b,
                          const nk_epilogue *ep)
{
    const xt *x = xv;
    xt *y = yv;
    for (size_t r = 0; r < rows; r++) {
        const xt *xr = x + r * xstride;
        xt *yr = y + r * ystride;
        for (size_t c = 0; c < cols; c++)
            nk_xstore(&yr[c], nk_act_ref(fmaf(nk_xload(&xr[c]) - m[c], a[c], b[c]), ep));
    }
}

static void norm_affine_ref(const void *xv, void *yv, size_t rows, size_t len, size_t xstride,
                            size_t ystride, const float *m, const float *s, const float *g,
                            const float *b, const nk_epilogue *ep)
{
    const xt *x = xv;
    xt *y = yv;
    for (size_t r = 0; r < rows; r++) {
        const xt *xr = x + r * xstride;
        xt *yr = y + r * ystride;
        const float mr = m ? m[r] : 0.0f, sr = s[r];
        for (size_t i = 0; i < len; i++) {
            float v = (nk_xload(&xr[i]) - mr) * sr;
            float gi = g ? g[i] : 1.0f, bi = b ? b[i] : 0.0f;
            nk_xstore(&yr[i], nk_act_ref(fmaf(v, gi, bi), ep));
        }
    }
}

static void norm_cols_affine_ref(const void *xv, void *yv, size_t rows, size_t cols,
                                 size_t xstride, size_t ystride, const float *m, const float *s,
                                 const float *g, const float *b, const nk_epilogue *ep)
{
    const xt *x = xv;
    xt *y = yv;
    for (size_t r = 0; r < rows; r++) {
        const xt *xr = x + r * xstride;
        xt *yr = y + r * ystride;
        const float gr = g ? g[r] : 1.0f, br = b ? b[r] : 0.0f;
        for (size_t c = 0; c < cols; c++) {
            float v = (nk_xload(&xr[c]) - (m ? m[c] : 0.0f)) * s[c];
            nk_xstore(&yr[c], nk_act_ref(fmaf(v, gr, br), ep));
        }
    }
}

static void widen_ref(const void *xv, size_t n, float *out)
{
    const xt *x = xv;
    for (size_t i = 0; i < n; i++)
        out[i] = nk_xload(&x[i]);
}

#if NK_DT == NK_DTYPE_F32
static void inv_scale_ref(const float *var, const float *w, float eps, size_t n, float *a)
{
    for (size_t i = 0; i < n; i++)
        a[i] = nk_inv_scale1(var[i], w ? w + i : NULL, eps);
}

static void inv_std_ref(const nk_moments *mo, size_t n, double eps, double *var, double *inv)
{
    for (size_t i = 0; i < n; i++) {
        var[i] = mo[i].count > 0.0 ? mo[i].m2 / mo[i].count : 0.0;
        inv[i] = nk_inv_std1(var[i], eps);
    }
}

static void bn_finalize_ref(const nk_moments *mo, size_t n, const nk_bn_fin *f, float *m,
                            float *a, float *b)
{
    for (size_t c = 0; c < n; c++)
        nk_bn_finalize1(mo, c, f, m, a, b);
}
#endif

void NK_DT_NAME(nk_kernels_init_ref_moments)(nk_kernels *k);
void NK_DT_NAME(nk_kernels_init_ref_short)(nk_kernels *k);
void NK_DT_NAME(nk_kernels_init_ref_backward)(nk_kernels *k);
void NK_DT_NAME(nk_kernels_init_ref_fusion)(nk_kernels *k);

void NK_DT_NAME(nk_kernels_init_ref)(nk_kernels *k)
{
    k->isa = NK_ISA_SCALAR;
    k->dtype = NK_DT;
    NK_DT_NAME(nk_kernels_init_ref_moments)(k);
    k->norm_rows = norm_rows_ref;
#if NK_DT == NK_DTYPE_F32
    k->inv_scale = inv_scale_ref;
    k->inv_std = inv_std_ref;
    k->bn_finalize = bn_finalize_ref;
#endif
    k->norm_cols = norm_cols_ref;
    k->norm_affine = norm_affine_ref;
    k->norm_cols_affine = norm_cols_affine_ref;
    k->widen = widen_ref;
    NK_DT_NAME(nk_kernels_init_ref_short)(k);
    NK_DT_NAME(nk_kernels_init_ref_backward)(k);
    NK_DT_NAME(nk_kernels_init_ref_fusion)(k);
}
