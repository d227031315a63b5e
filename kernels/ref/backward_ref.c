/*
 * Portable backward kernels (kernels.h: nk_bwd_*), compiled once per
 * element type: the fallback of every ISA and the oracle of the vector
 * kernels. x, y, dy widen exactly to fp32; dx is rounded once from the
 * fp32 result. Sums are fp32 inside chunks and fp64 across, so long rows
 * and columns keep the accuracy of the forward's moments.
 */
#include "kernels/dtype.h"
#include "kernels/kernels.h"

/* g of element i of a row (y unread without ReLU / LeakyReLU) */
static inline float bwd_g(const xt *y, const xt *dy, size_t i, const nk_epilogue *ep)
{
    const float d = nk_xload(&dy[i]);
    if (ep->act != NK_ACT_RELU && ep->act != NK_ACT_LEAKY_RELU)
        return d;
    return nk_bwd_g(d, nk_xload(&y[i]), ep);
}

static void bwd_sums_rows_ref(const void *xv, const void *yv, const void *dyv, size_t rows,
                              size_t len, size_t xstride, size_t ystride, const float *m, size_t ps,
                              const float *w, const nk_epilogue *ep, double *sg, double *sgx)
{
    const xt *x = xv, *y = yv, *dy = dyv;
    for (size_t r = 0; r < rows; r++) {
        const xt *xr = x + r * xstride, *dr = dy + r * ystride, *yr = y ? y + r * ystride : NULL;
        const float mr = m[r * ps];
        double a = 0.0, b = 0.0;
        for (size_t i0 = 0; i0 < len; i0 += NK_BWD_CHUNK) {
            const size_t i1 = len - i0 < NK_BWD_CHUNK ? len : i0 + NK_BWD_CHUNK;
            float fa = 0.0f, fb = 0.0f;
            for (size_t i = i0; i < i1; i++) {
                float g = bwd_g(yr, dr, i, ep);
                if (w)
                    g *= w[i];
                fa += g;
                fb = fmaf(g, nk_xload(&xr[i]) - mr, fb);
            }
            a += fa;
            b += fb;
        }
        sg[r] = a;
        sgx[r] = b;
    }
}

static void bwd_sums_cols_ref(const void *xv, const void *yv, const void *dyv, size_t rows,
                              size_t cols, size_t xstride, size_t ystride, const float *mc,
                              const float *mr, const float *sr, const nk_epilogue *ep, double *sg,
                              double *sgx)
{
    const xt *x = xv, *y = yv, *dy = dyv;
    float fa[64], fb[64];
    for (size_t c0 = 0; c0 < cols; c0 += 64) {
        const size_t nc = cols - c0 < 64 ? cols - c0 : 64;
        for (size_t r0 = 0; r0 < rows; r0 += NK_BWD_CHUNK_ROWS) {
            const size_t r1 = rows - r0 < NK_BWD_CHUNK_ROWS ? rows : r0 + NK_BWD_CHUNK_ROWS;
            for (size_t c = 0; c < nc; c++)
                fa[c] = fb[c] = 0.0f;
            for (size_t r = r0; r < r1; r++) {
                const xt *xr = x + r * xstride + c0, *dr = dy + r * ystride + c0;
                const xt *yr = y ? y + r * ystride + c0 : NULL;
                const float s = sr ? sr[r] : 1.0f;
                for (size_t c = 0; c < nc; c++) {
                    const float M = mr ? mr[r] : mc ? mc[c0 + c] : 0.0f;
                    const float g = bwd_g(yr, dr, c, ep);
                    fa[c] += g;
                    fb[c] = fmaf(g, (nk_xload(&xr[c]) - M) * s, fb[c]);
                }
            }
            for (size_t c = 0; c < nc; c++) {
                sg[c0 + c] += fa[c];
                sgx[c0 + c] += fb[c];
            }
        }
    }
}

static void bwd_dx_rows_ref(const void *xv, const void *yv, const void *dyv, void *dxv, size_t rows,
                            size_t len, size_t xstride, size_t ystride, const float *m,
                            const float *k1, const float *k2, const float *k3, size_t ps,
                            const float *w, const nk_epilogue *ep)
{
    const xt *x = xv, *y = yv, *dy = dyv;
    xt *dx = dxv;
    for (size_t r = 0; r < rows; r++) {
        const xt *xr = x + r * xstride, *dr = dy + r * ystride, *yr = y ? y + r * ystride : NULL;
        xt *o = dx + r * xstride;
        const float mr = m[r * ps], a = k1[r * ps], b = k2[r * ps], c = k3[r * ps];
        for (size_t i = 0; i < len; i++) {
            const float g = bwd_g(yr, dr, i, ep);
            nk_xstore(&o[i], fmaf(w ? a * w[i] : a, g, fmaf(b, nk_xload(&xr[i]) - mr, c)));
        }
    }
}

static void bwd_dx_rows_acc_ref(const void *xv, const void *yv, const void *dyv, void *dxv,
                                size_t rows, size_t len, size_t xstride, size_t ystride,
                                const float *m, const float *k1, const float *k2, const float *k3,
                                const float *s, const float *w, const nk_epilogue *ep, float *fa,
                                float *fb)
{
    const xt *x = xv, *y = yv, *dy = dyv;
    xt *dx = dxv;
    for (size_t r = 0; r < rows; r++) {
        const xt *xr = x + r * xstride, *dr = dy + r * ystride, *yr = y ? y + r * ystride : NULL;
        xt *o = dx + r * xstride;
        const float mr = m[r], a = k1[r], b = k2[r], c = k3[r], sr = s[r];
        for (size_t i = 0; i < len; i++) {
            const float g = bwd_g(yr, dr, i, ep), xi = nk_xload(&xr[i]);
            fa[i] += g;
            fb[i] = fmaf(g, (xi - mr) * sr, fb[i]);
            nk_xstore(&o[i], fmaf(w ? a * w[i] : a, g, fmaf(b, xi - mr, c)));
        }
    }
}

static void bwd_dx_cols_ref(const void *xv, const void *yv, const void *dyv, void *dxv, size_t rows,
                            size_t cols, size_t xstride, size_t ystride, const float *m,
                            const float *k1, const float *k2, const float *k3,
                            const nk_epilogue *ep)
{
    const xt *x = xv, *y = yv, *dy = dyv;
    xt *dx = dxv;
    for (size_t r = 0; r < rows; r++) {
        const xt *xr = x + r * xstride, *dr = dy + r * ystride, *yr = y ? y + r * ystride : NULL;
        xt *o = dx + r * xstride;
        for (size_t c = 0; c < cols; c++) {
            const float g = bwd_g(yr, dr, c, ep);
            nk_xstore(&o[c], fmaf(k1[c], g, fmaf(k2[c], nk_xload(&xr[c]) - m[c], k3[c])));
        }
    }
}

void NK_DT_NAME(nk_kernels_init_ref_backward)(nk_kernels *k);
void NK_DT_NAME(nk_kernels_init_ref_backward)(nk_kernels *k)
{
    k->bwd_sums_rows = bwd_sums_rows_ref;
    k->bwd_sums_cols = bwd_sums_cols_ref;
    k->bwd_dx_rows = bwd_dx_rows_ref;
    k->bwd_dx_rows_acc = bwd_dx_rows_acc_ref;
    k->bwd_dx_cols = bwd_dx_cols_ref;
}
