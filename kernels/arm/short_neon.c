/*
 * NEON norm_short (contract in kernels/kernels.h), the algorithm of
 * kernels/x86/short_x86.c on four lanes: four rows at a time, one per lane
 * of the statistics. Each row's vectors are accumulated in order, then
 * nk_sum_rows4 adds the four rows' lanes in one pairwise tree ((x0 + x1) +
 * (x2 + x3), the same for every row and on AArch64 and ARMv7 alike), so a
 * row's sum depends on that row alone. LayerNorm: pass 1 sums x - K with K
 * the row's first element, mean = K + sum / n; pass 2 sums (x - mean)^2.
 * RMSNorm: one pass of x^2. 1 / sqrt is IEEE on both targets (AArch64
 * vector sqrt and divide; ARMv7 NEON has only estimates, so the four lanes
 * go through scalar VFP). Rows whose statistics are not finite are
 * recomputed by nk_short_stats_f64. Rows of a last, partial block repeat
 * its last row (computed and dropped). The affine is per column (gamma and
 * beta padded to whole vectors, loaded per vector) or, NK_SHORT_ROW_AFFINE,
 * per row (broadcast once per row); the two modes are compiled apart.
 */
#include "kernels/arm/neon_util.h"

/* lane r: the sum of the lanes of vr */
NK_INLINE float32x4_t nk_sum_rows4(float32x4_t v0, float32x4_t v1, float32x4_t v2,
                                   float32x4_t v3)
{
#if defined(__aarch64__)
    return vpaddq_f32(vpaddq_f32(v0, v1), vpaddq_f32(v2, v3));
#else
    float32x2_t a = vpadd_f32(vget_low_f32(v0), vget_high_f32(v0));
    float32x2_t b = vpadd_f32(vget_low_f32(v1), vget_high_f32(v1));
    float32x2_t c = vpadd_f32(vget_low_f32(v2), vget_high_f32(v2));
    float32x2_t d = vpadd_f32(vget_low_f32(v3), vget_high_f32(v3));
    return vcombine_f32(vpadd_f32(a, b), vpadd_f32(c, d));
#endif
}

/* Vector j of a row of nv vectors whose last holds tail (1..4) floats. */
NK_INLINE float32x4_t row_vec(const float *p, size_t j, size_t nv, size_t tail)
{
    return j + 1 < nv || tail == 4 ? vld1q_f32(p + 4 * j) : nk_load_partial(p + 4 * j, tail);
}

/* 1 / sqrt(S2 / n + eps), IEEE */
NK_INLINE float32x4_t rstd4(float32x4_t s2, float inv, float eps)
{
#if defined(__aarch64__)
    float32x4_t v = vaddq_f32(vmulq_f32(s2, vdupq_n_f32(inv)), vdupq_n_f32(eps));
    return vdivq_f32(vdupq_n_f32(1.0f), vsqrtq_f32(v));
#else
    float t[4];
    vst1q_f32(t, s2);
    for (int i = 0; i < 4; i++)
        t[i] = 1.0f / sqrtf(t[i] * inv + eps);
    return vld1q_f32(t);
#endif
}

/* bit r set where lane r of v is infinite or NaN (v * 0 is NaN there) */
NK_INLINE unsigned nonfinite4(float32x4_t v)
{
    uint32_t t[4];
    vst1q_u32(t, vceqq_f32(vmulq_f32(v, vdupq_n_f32(0.0f)), vdupq_n_f32(0.0f)));
    return (t[0] ? 0u : 1u) | (t[1] ? 0u : 2u) | (t[2] ? 0u : 4u) | (t[3] ? 0u : 8u);
}

/* m[r], s[r] of the four rows p[r] */
static void stats4(const float *const *p, size_t len, float inv, float eps, int rms, float *m,
                   float *s)
{
    const size_t nv = (len + 3) / 4, tail = len - 4 * (nv - 1);
    /* the valid lanes of the last vector */
    static const uint32_t lanes[8] = {~0u, ~0u, ~0u, ~0u, 0u, 0u, 0u, 0u};
    const uint32x4_t last = vld1q_u32(lanes + 4 - tail);
    float32x4_t a[4], S1 = vdupq_n_f32(0.0f);
    if (!rms) {
        for (int r = 0; r < 4; r++) {
            const float32x4_t k = vdupq_n_f32(p[r][0]);
            a[r] = vdupq_n_f32(0.0f);
            for (size_t j = 0; j < nv; j++) {
                float32x4_t d = vsubq_f32(row_vec(p[r], j, nv, tail), k);
                if (j + 1 == nv)
                    d = vreinterpretq_f32_u32(vandq_u32(vreinterpretq_u32_f32(d), last));
                a[r] = vaddq_f32(a[r], d);
            }
        }
        S1 = nk_sum_rows4(a[0], a[1], a[2], a[3]);
        float c[4];
        vst1q_f32(c, vmulq_f32(S1, vdupq_n_f32(inv)));
        for (int r = 0; r < 4; r++)
            m[r] = p[r][0] + c[r];
    } else {
        for (int r = 0; r < 4; r++)
            m[r] = 0.0f;
    }
    for (int r = 0; r < 4; r++) {
        const float32x4_t mr = vdupq_n_f32(m[r]);
        a[r] = vdupq_n_f32(0.0f);
        for (size_t j = 0; j < nv; j++) {
            float32x4_t d = vsubq_f32(row_vec(p[r], j, nv, tail), mr);
            if (j + 1 == nv)
                d = vreinterpretq_f32_u32(vandq_u32(vreinterpretq_u32_f32(d), last));
            a[r] = nk_fma_f32(a[r], d, d);
        }
    }
    const float32x4_t S2 = nk_sum_rows4(a[0], a[1], a[2], a[3]);
    vst1q_f32(s, rstd4(S2, inv, eps));
    unsigned bad = nonfinite4(S1) | nonfinite4(S2);
    for (int r = 0; r < 4; r++)
        if (bad >> r & 1u)
            nk_short_stats_f64(p[r], len, eps, rms, &m[r], &s[r]);
}

/* y = act(((x - m) * s) * g + b) for one row; gv / bv: g / b (or 1 / 0)
 * padded to whole vectors, or with ROWAFF the row's g and b */
NK_INLINE void norm_row(const float *x, float *y, size_t len, float m, float s, const float *gv,
                        const float *bv, const int ROWAFF, const int act, float32x4_t alpha)
{
    const float32x4_t vm = vdupq_n_f32(m), vs = vdupq_n_f32(s);
    const float32x4_t rg = vdupq_n_f32(ROWAFF ? gv[0] : 0.0f);
    const float32x4_t rb = vdupq_n_f32(ROWAFF ? bv[0] : 0.0f);
#define G(i) (ROWAFF ? rg : vld1q_f32(gv + (i)))
#define B(i) (ROWAFF ? rb : vld1q_f32(bv + (i)))
    size_t i = 0;
    for (; i + 4 <= len; i += 4) {
        float32x4_t v = vmulq_f32(vsubq_f32(vld1q_f32(x + i), vm), vs);
        vst1q_f32(y + i, nk_act_f32(nk_fma_f32(B(i), v, G(i)), act, alpha));
    }
    if (i < len) {
        float32x4_t v = vmulq_f32(vsubq_f32(nk_load_partial(x + i, len - i), vm), vs);
        nk_store_partial(y + i, nk_act_f32(nk_fma_f32(B(i), v, G(i)), act, alpha), len - i);
    }
#undef G
#undef B
}

/* ROWAFF: g / b hold a float per row (NULL: 1 / 0); otherwise gv / bv are
 * the padded vectors */
NK_INLINE void short_act(const float *x, float *y, size_t rows, size_t len, size_t xstride,
                         size_t ystride, const float *gv, const float *bv, const float *g,
                         const float *b, float eps, int rms, float *mean_out, float *rstd_out,
                         const int ROWAFF, const int act, float32x4_t alpha)
{
    static const float one = 1.0f, zero = 0.0f;
    const float inv = 1.0f / (float)len;
    for (size_t r0 = 0; r0 < rows; r0 += 4) {
        const size_t nr = rows - r0 < 4 ? rows - r0 : 4;
        const float *p[4], *q = x + r0 * xstride;
        for (size_t r = 0; r < 4; r++) {
            p[r] = q;
            q += r + 1 < nr ? xstride : 0;
        }
        float m[4], s[4];
        stats4(p, len, inv, eps, rms, m, s);
        for (size_t r = 0; r < nr; r++) {
            if (mean_out)
                mean_out[r0 + r] = m[r];
            if (rstd_out)
                rstd_out[r0 + r] = s[r];
            if (ROWAFF)
                norm_row(p[r], y + (r0 + r) * ystride, len, m[r], s[r],
                         g ? g + r0 + r : &one, b ? b + r0 + r : &zero, 1, act, alpha);
            else
                norm_row(p[r], y + (r0 + r) * ystride, len, m[r], s[r], gv, bv, 0, act, alpha);
        }
    }
}

static void nk_norm_short__neon(const float *x, float *y, size_t rows, size_t len,
                                size_t xstride, size_t ystride, const float *g, const float *b,
                                float eps, unsigned flags, float *mean_out, float *rstd_out,
                                const nk_epilogue *ep)
{
    const int rms = (flags & NK_SHORT_RMS) != 0;
    const float32x4_t al = vdupq_n_f32(ep->alpha);
    if (flags & NK_SHORT_ROW_AFFINE) {
#define SHORT(A)                                                                                   \
    short_act(x, y, rows, len, xstride, ystride, NULL, NULL, g, b, eps, rms, mean_out, rstd_out,  \
              1, A, al)
        NK_ACT_SWITCH(SHORT)
#undef SHORT
        return;
    }
    float gv[NK_SHORT_ROW + 4], bv[NK_SHORT_ROW + 4];
    nk_short_affine(g, b, len, NK_SHORT_ROW + 4, gv, bv);
#define SHORT(A)                                                                                   \
    short_act(x, y, rows, len, xstride, ystride, gv, bv, NULL, NULL, eps, rms, mean_out,          \
              rstd_out, 0, A, al)
    NK_ACT_SWITCH(SHORT)
#undef SHORT
}

void nk_kernels_init_neon_short(nk_kernels *k) { k->norm_short = nk_norm_short__neon; }
