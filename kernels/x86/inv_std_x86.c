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

/*
 * bn_finalize in fp64 vectors of DL channels: the moments' counts, means
 * and M2 gathered from the {count, mean, m2} triples, then the expressions
 * of nk_bn_finalize1 lane by lane (no contraction: separate multiplies and
 * adds), empty channels blended back to their old running statistics.
 */
#if NK_VL == 16
#  define DL 8
typedef __m512d vd;
typedef __mmask8 vdm;
#  define vd_set1 _mm512_set1_pd
#  define vd_add _mm512_add_pd
#  define vd_sub _mm512_sub_pd
#  define vd_mul _mm512_mul_pd
#  define vd_div _mm512_div_pd
#  define vd_sqrt _mm512_sqrt_pd
NK_INLINE vdm vd_gt0(vd v) { return _mm512_cmp_pd_mask(v, _mm512_setzero_pd(), _CMP_GT_OQ); }
NK_INLINE vdm vd_eq0(vd v) { return _mm512_cmp_pd_mask(v, _mm512_setzero_pd(), _CMP_EQ_OQ); }
/* lanes of m from a, the others from b */
NK_INLINE vd vd_sel(vdm m, vd a, vd b) { return _mm512_mask_blend_pd(m, b, a); }
#  if defined(NK_SIMDE)
/* SIMDe 0.7.4 has no fp32 <-> fp64 conversions of 512-bit vectors */
NK_INLINE vd vd_ldf(const float *p)
{
    double t[8];
    for (int i = 0; i < 8; i++)
        t[i] = (double)p[i];
    return _mm512_loadu_pd(t);
}
NK_INLINE void vd_stf(float *p, vd v)
{
    double t[8];
    _mm512_storeu_pd(t, v);
    for (int i = 0; i < 8; i++)
        p[i] = (float)t[i];
}
#  else
NK_INLINE vd vd_ldf(const float *p) { return _mm512_cvtps_pd(_mm256_loadu_ps(p)); }
NK_INLINE void vd_stf(float *p, vd v) { _mm256_storeu_ps(p, _mm512_cvtpd_ps(v)); }
#  endif
NK_INLINE void vd_moments(const nk_moments *mo, vd *c, vd *mean, vd *m2)
{
    const double *p = (const double *)mo;
    const __m512i ic = _mm512_set_epi64(0, 0, 15, 12, 9, 6, 3, 0);
    const __m512i ic2 = _mm512_set_epi64(5, 2, 0, 0, 0, 0, 0, 0);
    const __m512i im = _mm512_set_epi64(0, 0, 0, 13, 10, 7, 4, 1);
    const __m512i im2 = _mm512_set_epi64(6, 3, 0, 0, 0, 0, 0, 0);
    const __m512i iq = _mm512_set_epi64(0, 0, 0, 14, 11, 8, 5, 2);
    const __m512i iq2 = _mm512_set_epi64(7, 4, 1, 0, 0, 0, 0, 0);
    __m512d v0 = _mm512_loadu_pd(p), v1 = _mm512_loadu_pd(p + 8), v2 = _mm512_loadu_pd(p + 16);
    *c = _mm512_mask_permutexvar_pd(_mm512_permutex2var_pd(v0, ic, v1), 0xC0, ic2, v2);
    *mean = _mm512_mask_permutexvar_pd(_mm512_permutex2var_pd(v0, im, v1), 0xE0, im2, v2);
    *m2 = _mm512_mask_permutexvar_pd(_mm512_permutex2var_pd(v0, iq, v1), 0xE0, iq2, v2);
}
#else
#  define DL 4
typedef __m256d vd;
typedef __m256d vdm;
#  define vd_set1 _mm256_set1_pd
#  define vd_add _mm256_add_pd
#  define vd_sub _mm256_sub_pd
#  define vd_mul _mm256_mul_pd
#  define vd_div _mm256_div_pd
#  define vd_sqrt _mm256_sqrt_pd
NK_INLINE vdm vd_gt0(vd v) { return _mm256_cmp_pd(v, _mm256_setzero_pd(), _CMP_GT_OQ); }
NK_INLINE vdm vd_eq0(vd v) { return _mm256_cmp_pd(v, _mm256_setzero_pd(), _CMP_EQ_OQ); }
NK_INLINE vd vd_sel(vdm m, vd a, vd b) { return _mm256_blendv_pd(b, a, m); }
NK_INLINE vd vd_ldf(const float *p) { return _mm256_cvtps_pd(_mm_loadu_ps(p)); }
NK_INLINE void vd_stf(float *p, vd v) { _mm_storeu_ps(p, _mm256_cvtpd_ps(v)); }
NK_INLINE void vd_moments(const nk_moments *mo, vd *c, vd *mean, vd *m2)
{
    const double *p = (const double *)mo;
    *c = _mm256_set_pd(p[9], p[6], p[3], p[0]);
    *mean = _mm256_set_pd(p[10], p[7], p[4], p[1]);
    *m2 = _mm256_set_pd(p[11], p[8], p[5], p[2]);
}
#endif

static void NK_FN(bn_finalize)(const nk_moments *mo, size_t n, const nk_bn_fin *f, float *m,
                               float *a, float *b)
{
    const vd eps = vd_set1(f->eps), one = vd_set1(1.0), zero = vd_set1(0.0);
    const vd mom = vd_set1(f->momentum), rest = vd_set1(1.0 - f->momentum);
    size_t c = 0;
    for (; c + DL <= n; c += DL) {
        vd cnt, mean, m2;
        vd_moments(mo + c, &cnt, &mean, &m2);
        const vdm full = vd_gt0(cnt);
        /* empty lanes divide by 1 and are then cleared */
        const vd var = vd_sel(full, vd_div(m2, vd_sel(full, cnt, one)), zero);
        const vd v = vd_add(var, eps);
        const vd inv = vd_sel(vd_eq0(v), zero, vd_div(one, vd_sqrt(v)));
        vd_stf(m + c, mean);
        vd_stf(a + c, f->weight ? vd_mul(vd_ldf(f->weight + c), inv) : inv);
        if (f->bias)
            memcpy(b + c, f->bias + c, DL * sizeof *b);
        else
            memset(b + c, 0, DL * sizeof *b);
        if (f->save_mean)
            vd_stf(f->save_mean + c, mean);
        if (f->save_invstd)
            vd_stf(f->save_invstd + c, inv);
        if (f->rmean) {
            const vd uv = f->unbiased ? vd_div(m2, vd_sub(cnt, one)) : var;
            const vd rm = vd_ldf(f->rmean + c), rv = vd_ldf(f->rvar + c);
            vd_stf(f->rmean + c, vd_sel(full, vd_add(vd_mul(mom, mean), vd_mul(rest, rm)), rm));
            vd_stf(f->rvar + c, vd_sel(full, vd_add(vd_mul(mom, uv), vd_mul(rest, rv)), rv));
        }
    }
    for (; c < n; c++)
        nk_bn_finalize1(mo, c, f, m, a, b);
}

void NK_FN(kernels_init_inv_std)(nk_kernels *k)
{
    k->inv_std = NK_FN(inv_std);
    k->bn_finalize = NK_FN(bn_finalize);
}
