/*
 * Vector kernels of the fused LayerNorm / RMSNorm (kernels.h): add_rows and
 * narrow_rows per element type; quant_rows and absmax_rows in the fp32
 * unit of the targets whose vector division is IEEE (the others keep the
 * scalar ones).
 */
#include "kernels/simd/nk_simd.h"

/* ---- add_rows: s = (x + skip) + bias in fp32, sum = s in the dtype ---- */

NK_INLINE vf add_vec(const xt *x, const xt *k, const float *b, size_t i, size_t n, const int HK,
                     const int HB)
{
    vf v = n ? vx_load_n(x + i, n) : vx_loadu(x + i);
    if (HK)
        v = vf_add(v, n ? vx_load_n(k + i, n) : vx_loadu(k + i));
    if (HB)
        v = vf_add(v, n ? vf_load_n(b + i, n) : vf_loadu(b + i));
    return v;
}

NK_INLINE void add_body(const xt *x, const xt *k, const float *b, float *s, xt *sum, size_t rows,
                        size_t len, size_t xstride, size_t kstride, size_t sumstride, const int HK,
                        const int HB, const int HS)
{
    for (size_t r = 0; r < rows; r++) {
        const xt *xr = x + r * xstride, *kr = HK ? k + r * kstride : NULL;
        float *sr = s + r * len;
        xt *qr = HS ? sum + r * sumstride : NULL;
        size_t i = 0;
        for (; i + NK_VL <= len; i += NK_VL) {
            const vf v = add_vec(xr, kr, b, i, 0, HK, HB);
            vf_storeu(sr + i, v);
            if (HS)
                vx_storeu(qr + i, v);
        }
        if (i < len) {
            const vf v = add_vec(xr, kr, b, i, len - i, HK, HB);
            vf_store_n(sr + i, v, len - i);
            if (HS)
                vx_store_n(qr + i, v, len - i);
        }
    }
}

static void NK_FN(add_rows)(const void *x, const void *skip, const float *bias, float *s,
                            void *sum, size_t rows, size_t len, size_t xstride, size_t kstride,
                            size_t sumstride)
{
    const xt *X = x, *K = skip;
    xt *S = sum;
#define ADD(HK, HB)                                                                                \
    do {                                                                                           \
        if (S)                                                                                     \
            add_body(X, K, bias, s, S, rows, len, xstride, kstride, sumstride, HK, HB, 1);         \
        else                                                                                       \
            add_body(X, K, bias, s, S, rows, len, xstride, kstride, sumstride, HK, HB, 0);         \
    } while (0)
    if (K && bias)
        ADD(1, 1);
    else if (K)
        ADD(1, 0);
    else if (bias)
        ADD(0, 1);
    else
        ADD(0, 0);
#undef ADD
}

/* ---- narrow_rows: fp32 rows to the dtype ---- */

static void NK_FN(narrow_rows)(const float *s, void *y, size_t rows, size_t len, size_t ystride)
{
    for (size_t r = 0; r < rows; r++) {
        const float *sr = s + r * len;
        xt *yr = (xt *)y + r * ystride;
        size_t i = 0;
        for (; i + 2 * NK_VL <= len; i += 2 * NK_VL)
            vx_storeu2(yr + i, vf_loadu(sr + i), vf_loadu(sr + i + NK_VL));
        for (; i + NK_VL <= len; i += NK_VL)
            vx_storeu(yr + i, vf_loadu(sr + i));
        if (i < len)
            vx_store_n(yr + i, vf_load_n(sr + i, len - i), len - i);
    }
}

/* ---- quant_rows, absmax_rows (fp32 arrays: the fp32 unit only) ---- */

#if NK_DT == NK_DTYPE_F32 && NK_IEEE_VDIV
NK_INLINE vf vf_absv(vf v) { return vf_pos_select(v, v, vf_sub(vf_zero(), v)); }
/* max(v, lo) and min(v, hi) by comparison (NaN stays NaN) */
NK_INLINE vf vf_clamp(vf v, vf lo, vf hi)
{
    v = vf_pos_select(vf_sub(lo, v), lo, v);
    return vf_pos_select(vf_sub(v, hi), hi, v);
}

/*
 * One vector of a row: q = v / c correctly rounded, clamped to the integer
 * bounds [lo - zp, hi - zp] (saturating before rounding gives the same
 * result, rounding being monotonic), rounded to nearest even by adding and
 * subtracting 1.5 * 2^23 (exact for |q| < 2^22), then + zp. The fp32
 * quotient rounds as the exact one unless it lands on a half-integer that
 * the exact one is not, or is not finite: *suspect counts those lanes (a
 * lane with |q - rne(q)| > 0.5 - 2^-25 or a non-finite quotient), whose row
 * the caller redoes exactly.
 */
NK_INLINE void quant_vec(const float *s, uint8_t *q, size_t n, vf c, vf qlo, vf qhi, vf zp,
                         vf *suspect, unsigned *bad)
{
    const vf magic = vf_set1(12582912.0f), near_half = vf_set1(0.49999997f);
    const vf v = n < NK_VL ? vf_load_n(s, n) : vf_loadu(s);
    const vf quot = vf_div(v, c);
    *bad |= vf_nonfinite(quot);
    const vf qc = vf_clamp(quot, qlo, qhi);
    const vf r = vf_sub(vf_add(qc, magic), magic);
    *suspect = vf_add(*suspect, vf_pos_select(vf_sub(vf_absv(vf_sub(qc, r)), near_half),
                                              vf_set1(1.0f), vf_zero()));
    vf_store_b(q, vf_add(r, zp), n);
}

static void NK_FN(quant_rows)(const float *s, uint8_t *q, size_t rows, size_t len,
                              size_t qstride, const float *scale, size_t ps, int zp, int lo,
                              int hi)
{
    const vf qlo = vf_set1((float)(lo - zp)), qhi = vf_set1((float)(hi - zp));
    const vf vz = vf_set1((float)zp);
    for (size_t r = 0; r < rows; r++) {
        const float *sr = s + r * len, c = scale[r * ps];
        uint8_t *qr = q + r * qstride;
        if (!(c > 0.0f) || !isfinite(c)) {
            memset(qr, zp & 0xff, len);
            continue;
        }
        const vf vc = vf_set1(c);
        vf suspect = vf_zero();
        unsigned bad = 0;
        size_t i = 0;
        for (; i + NK_VL <= len; i += NK_VL)
            quant_vec(sr + i, qr + i, NK_VL, vc, qlo, qhi, vz, &suspect, &bad);
        if (i < len)
            quant_vec(sr + i, qr + i, len - i, vc, qlo, qhi, vz, &suspect, &bad);
        if (bad || vf_hsum(suspect) > 0.0f)
            for (size_t j = 0; j < len; j++)
                qr[j] = nk_quant1(sr[j], c, zp, lo, hi);
    }
}

static void NK_FN(absmax_rows)(const float *s, size_t rows, size_t len, float *out)
{
    for (size_t r = 0; r < rows; r++) {
        const float *sr = s + r * len;
        /* a > m ? a : m, as a - m > 0: never NaN, NaN lanes of s ignored */
        vf m = vf_zero();
        size_t i = 0;
        for (; i + NK_VL <= len; i += NK_VL) {
            const vf a = vf_absv(vf_loadu(sr + i));
            m = vf_pos_select(vf_sub(a, m), a, m);
        }
        if (i < len) {
            const vf a = vf_absv(vf_load_n(sr + i, len - i));
            m = vf_pos_select(vf_sub(a, m), a, m);
        }
        float t[NK_VL], best = 0.0f;
        vf_storeu(t, m);
        for (int l = 0; l < NK_VL; l++)
            best = t[l] > best ? t[l] : best;
        out[r] = best;
    }
}
#endif

void NK_FN(kernels_init_fusion)(nk_kernels *k)
{
    k->add_rows = NK_FN(add_rows);
    k->narrow_rows = NK_FN(narrow_rows);
#if NK_DT == NK_DTYPE_F32 && NK_IEEE_VDIV
    k->quant_rows = NK_FN(quant_rows);
    k->absmax_rows = NK_FN(absmax_rows);
#endif
}
