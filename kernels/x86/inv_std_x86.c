/*
 * inv_std in fp64 vectors, compiled per x86 ISA with the kernels/simd
 * algorithms (NK_HAVE_INV_STD in nk_x86.h): the fp32 vocabulary has no
 * fp64 vectors, so this kernel is x86's own. The same IEEE operations as
 * the scalar kernel (nk_inv_std1), so every ISA gives its result bit for
 * bit.
 */
#include "kernels/simd/nk_simd.h"

static void NK_FN(inv_std)(const nk_moments *mo, size_t n, double eps, double *var, double *inv)
{
    const double *base = (const double *)mo; /* {count, mean, m2} per channel */
    size_t i = 0;
#if NK_VL == 16
    /* 8 channels are 24 doubles in three vectors: counts at 0, 3, ..., 21,
     * m2 at 2, 5, ..., 23 (permute index bit 3 picks the second source) */
    const __m512i ic = _mm512_set_epi64(0, 0, 15, 12, 9, 6, 3, 0);
    const __m512i ic2 = _mm512_set_epi64(5, 2, 0, 0, 0, 0, 0, 0);
    const __m512i iq = _mm512_set_epi64(0, 0, 0, 14, 11, 8, 5, 2);
    const __m512i iq2 = _mm512_set_epi64(7, 4, 1, 0, 0, 0, 0, 0);
    const __m512d ve = _mm512_set1_pd(eps), one = _mm512_set1_pd(1.0), zero = _mm512_setzero_pd();
    for (; i + 8 <= n; i += 8) {
        const double *p = base + 3 * i;
        __m512d v0 = _mm512_loadu_pd(p), v1 = _mm512_loadu_pd(p + 8), v2 = _mm512_loadu_pd(p + 16);
        __m512d c = _mm512_mask_permutexvar_pd(_mm512_permutex2var_pd(v0, ic, v1), 0xC0, ic2, v2);
        __m512d m2 = _mm512_mask_permutexvar_pd(_mm512_permutex2var_pd(v0, iq, v1), 0xE0, iq2, v2);
        __mmask8 full = _mm512_cmp_pd_mask(c, zero, _CMP_GT_OQ);
        __m512d v = _mm512_maskz_div_pd(full, m2, c);
        _mm512_storeu_pd(var + i, v);
        v = _mm512_add_pd(v, ve);
        __m512d r = _mm512_div_pd(one, _mm512_sqrt_pd(v));
        _mm512_storeu_pd(inv + i, _mm512_mask_blend_pd(_mm512_cmp_pd_mask(v, zero, _CMP_EQ_OQ), r,
                                                       zero));
    }
#else
    const __m256d ve = _mm256_set1_pd(eps), one = _mm256_set1_pd(1.0), zero = _mm256_setzero_pd();
    for (; i + 4 <= n; i += 4) {
        const double *p = base + 3 * i;
        __m256d c = _mm256_set_pd(p[9], p[6], p[3], p[0]);
        __m256d m2 = _mm256_set_pd(p[11], p[8], p[5], p[2]);
        __m256d full = _mm256_cmp_pd(c, zero, _CMP_GT_OQ);
        /* empty lanes divide by 1 and are then cleared */
        __m256d v = _mm256_and_pd(_mm256_div_pd(m2, _mm256_blendv_pd(one, c, full)), full);
        _mm256_storeu_pd(var + i, v);
        v = _mm256_add_pd(v, ve);
        __m256d r = _mm256_div_pd(one, _mm256_sqrt_pd(v));
        _mm256_storeu_pd(inv + i, _mm256_blendv_pd(r, zero, _mm256_cmp_pd(v, zero, _CMP_EQ_OQ)));
    }
#endif
    for (; i < n; i++) {
        var[i] = mo[i].count > 0.0 ? mo[i].m2 / mo[i].count : 0.0;
        inv[i] = nk_inv_std1(var[i], eps);
    }
}

void NK_FN(kernels_init_inv_std)(nk_kernels *k) { k->inv_std = NK_FN(inv_std); }
