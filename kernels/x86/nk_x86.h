/*
 * x86 vocabulary of the vector kernels (kernels/simd/nk_simd.h lists what a
 * vocabulary header provides; the algorithm files in kernels/simd are
 * written once against it). Included only through nk_simd.h.
 *
 *   NK_X86_AVX512 defined: 16 float lanes, AVX-512 F/BW/DQ/VL (+FMA)
 *   otherwise:             8 float lanes, AVX2 + FMA
 *   NK_SIMDE defined:      the AVX-512 algorithm built against SIMDe, a
 *                          test-only copy that runs on CPUs without AVX-512
 *                          (symbols get an _emu suffix).
 *   NK_HAVE_SLEEF:         exp/erf/tanh from SLEEF; without it the vector
 *                          activations fall back to a per-lane libm loop
 *                          (correct, slower; only the fused activations pay).
 *
 * Tail handling uses masked loads that read nothing past the end and masked
 * stores that write nothing past it, so no kernel touches memory outside
 * its rows.
 */
#ifndef NK_KERNELS_X86_NK_X86_H
#define NK_KERNELS_X86_NK_X86_H

#if defined(NK_SIMDE)
#  if !defined(NK_X86_AVX512)
#    error "NK_SIMDE emulates the AVX-512 kernels only"
#  endif
#  define SIMDE_ENABLE_NATIVE_ALIASES
#  include <simde/x86/avx512.h>
/* SIMDe 0.7.4 has it without the native alias (and GCC's own is a macro
 * without optimisation) */
#  undef _mm512_shuffle_f32x4
#  define _mm512_shuffle_f32x4 simde_mm512_shuffle_f32x4
#else
#  include <immintrin.h>
#endif

#if NK_USE_SLEEF
#  include <sleef.h>
#endif

/* Non-temporal stores where ep asks for them; an sfence orders them before
 * the kernel returns. */
#define NK_STREAM(ep) ((ep)->stream)
NK_INLINE void nk_stream_fence(void) { _mm_sfence(); }
NK_INLINE void nk_prefetch(const void *p) { _mm_prefetch((const char *)p, _MM_HINT_T0); }
#define NK_IEEE_VDIV 1
/* inv_std in fp64 vectors: kernels/x86/inv_std_x86.c */
#define NK_HAVE_INV_STD 1

/* ------------------------------------------------------------------------ */
#if defined(NK_X86_AVX512)

#  define NK_VL 16
#  define NK_NREGS 32
#  if defined(NK_SIMDE)
#    define NK_FN(name) NK_CAT3(nk_##name, NK_DT_TAG, __avx512_emu)
#    define NK_INIT NK_CAT3(nk_kernels_init_avx512_emu, NK_DT_TAG, )
#  else
#    define NK_FN(name) NK_CAT3(nk_##name, NK_DT_TAG, __avx512)
#    define NK_INIT NK_CAT3(nk_kernels_init_avx512, NK_DT_TAG, )
#  endif

typedef __m512 vf;
#  if defined(NK_SIMDE)
typedef simde__mmask16 vmask; /* SIMDe 0.7.4 aliases __mmask16 only with -mavx2 */
#  else
typedef __mmask16 vmask;
#  endif

NK_INLINE vf vf_zero(void) { return _mm512_setzero_ps(); }
NK_INLINE vf vf_set1(float v) { return _mm512_set1_ps(v); }
NK_INLINE vf vf_loadu(const float *p) { return _mm512_loadu_ps(p); }
NK_INLINE void vf_storeu(float *p, vf v) { _mm512_storeu_ps(p, v); }
NK_INLINE vf vf_add(vf a, vf b) { return _mm512_add_ps(a, b); }
NK_INLINE vf vf_sub(vf a, vf b) { return _mm512_sub_ps(a, b); }
NK_INLINE vf vf_mul(vf a, vf b) { return _mm512_mul_ps(a, b); }
NK_INLINE vf vf_div(vf a, vf b) { return _mm512_div_ps(a, b); }
NK_INLINE vf vf_sqrt(vf a) { return _mm512_sqrt_ps(a); }
NK_INLINE vf vf_fma(vf a, vf b, vf c) { return _mm512_fmadd_ps(a, b, c); }
/* max(0, v) with 0 first: NaN in v propagates, -0 stays -0 (as the ref). */
NK_INLINE vf vf_relu(vf v) { return _mm512_max_ps(_mm512_setzero_ps(), v); }
/* v < 0 ? v * alpha : v */
NK_INLINE vf vf_leaky(vf v, vf alpha)
{
    vmask neg = _mm512_cmp_ps_mask(v, _mm512_setzero_ps(), _CMP_LT_OQ);
    return _mm512_mask_mul_ps(v, neg, v, alpha);
}
/* x - m on the first n lanes (n < 16), 0 elsewhere */
NK_INLINE vf vf_sub_n(vf x, vf m, size_t n)
{
    return _mm512_maskz_sub_ps((vmask)((1u << n) - 1u), x, m);
}
/* lanes below n from a, the others from b (n < 16) */
NK_INLINE vf vf_first(size_t n, vf a, vf b)
{
    return _mm512_mask_blend_ps((vmask)((1u << n) - 1u), b, a);
}

#  if defined(NK_SIMDE)
/* SIMDe 0.7.4 lacks masked loads/stores, reductions and streaming stores;
 * these stand-ins behave the same (no access past n) and check alignment
 * where the real instruction would fault. */
NK_INLINE vf vf_load_n(const float *p, size_t n)
{
    float t[16] = {0};
    memcpy(t, p, n * sizeof(float));
    return _mm512_loadu_ps(t);
}
NK_INLINE void vf_store_n(float *p, vf v, size_t n)
{
    float t[16];
    _mm512_storeu_ps(t, v);
    memcpy(p, t, n * sizeof(float));
}
NK_INLINE void vf_stream(float *p, vf v)
{
    if ((uintptr_t)p % 64)
        __builtin_trap(); /* vmovntps would fault */
    _mm512_store_ps(p, v);
}
NK_INLINE float vf_hsum(vf v)
{
    float t[16];
    _mm512_storeu_ps(t, v);
    for (int w = 8; w >= 1; w /= 2)
        for (int i = 0; i < w; i++)
            t[i] += t[i + w];
    return t[0];
}
#  else
NK_INLINE vf vf_load_n(const float *p, size_t n)
{
    return _mm512_maskz_loadu_ps((vmask)((1u << n) - 1u), p);
}
NK_INLINE void vf_store_n(float *p, vf v, size_t n)
{
    _mm512_mask_storeu_ps(p, (vmask)((1u << n) - 1u), v);
}
NK_INLINE void vf_stream(float *p, vf v) { _mm512_stream_ps(p, v); }
NK_INLINE float vf_hsum(vf v)
{
    __m256 h = _mm256_add_ps(_mm512_castps512_ps256(v), _mm512_extractf32x8_ps(v, 1));
    __m128 q = _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
    q = _mm_add_ps(q, _mm_movehl_ps(q, q));
    q = _mm_add_ss(q, _mm_movehdup_ps(q));
    return _mm_cvtss_f32(q);
}
#  endif

/*
 * Transposing row sums of 16 vectors v[r] into one whose lane r is the sum
 * of the lanes of v[r]: four levels of 16 -> 8 -> ... -> 1 vectors, a level
 * combining two vectors with a blend, one shuffle and an add (15 shuffles
 * for 16 rows, against 4 per row for horizontal sums). Every row's lanes
 * are added by the same pairwise tree (lane i + lane i + 8, then + 4, + 2,
 * + 1) whatever its position, so a row's sum depends on that row alone.
 * The first level, w[i] = vf_fold_rows(v[i], v[i + 8]) = vf_fold_p + vf_fold_q,
 * is the caller's, so that it can fold rows as it goes and reuse the parts;
 * vf_sum_folded(w) does the rest on the 8 folded vectors.
 */
/* [a.lo | b.hi] */
NK_INLINE vf vf_fold_p(vf a, vf b) { return _mm512_mask_blend_ps(0xFF00, a, b); }
NK_INLINE vf vf_fold_q(vf a, vf b) /* [a.hi | b.lo] */
{
    return _mm512_shuffle_f32x4(a, b, _MM_SHUFFLE(1, 0, 3, 2));
}
NK_INLINE vf vf_sum_folded(vf *w)
{
    /* 128-bit quarters: [a0 b1 a2 b3] + [a1 b0 a3 b2] */
    const __m512i iq = _mm512_set_epi32(27, 26, 25, 24, 15, 14, 13, 12, 19, 18, 17, 16, 7, 6, 5, 4);
    for (int i = 0; i < 4; i++)
        w[i] = _mm512_add_ps(_mm512_mask_blend_ps(0xF0F0, w[i], w[i + 4]),
                             _mm512_permutex2var_ps(w[i], iq, w[i + 4]));
    for (int i = 0; i < 2; i++) /* pairs in each quarter: [a0 a1 b2 b3] + [a2 a3 b0 b1] */
        w[i] = _mm512_add_ps(_mm512_mask_blend_ps(0xCCCC, w[i], w[i + 2]),
                             _mm512_shuffle_ps(w[i], w[i + 2], _MM_SHUFFLE(1, 0, 3, 2)));
    /* single lanes: [a0 b1 a2 b3] + [a1 b0 a3 b2] */
    const __m512i il = _mm512_set_epi32(30, 15, 28, 13, 26, 11, 24, 9, 22, 7, 20, 5, 18, 3, 16, 1);
    return _mm512_add_ps(_mm512_mask_blend_ps(0xAAAA, w[0], w[1]),
                         _mm512_permutex2var_ps(w[0], il, w[1]));
}
/* bit r set where lane r of v is infinite or NaN (v * 0 is NaN there) */
NK_INLINE unsigned vf_nonfinite(vf v)
{
    return (unsigned)_mm512_cmp_ps_mask(_mm512_mul_ps(v, _mm512_setzero_ps()), _mm512_setzero_ps(),
                                        _CMP_NEQ_UQ);
}

/* exp / erf / tanh, u10 (1.0 ulp) like libm's float versions */
#  if NK_USE_SLEEF && !defined(NK_SIMDE)
NK_INLINE vf vf_exp(vf v) { return Sleef_expf16_u10avx512f(v); }
NK_INLINE vf vf_erf(vf v) { return Sleef_erff16_u10avx512f(v); }
NK_INLINE vf vf_tanh(vf v) { return Sleef_tanhf16_u10avx512f(v); }
#  elif NK_USE_SLEEF && defined(__AVX2__) && defined(__FMA__)
/* Emulated build: SLEEF's AVX-512 code cannot run without AVX-512, so the
 * two 8-lane halves go through SLEEF's AVX2 functions instead. */
#    define NK_HALVES(v8)                                                  \
        do {                                                                   \
            float t_[16];                                                      \
            _mm512_storeu_ps(t_, v);                                           \
            _mm256_storeu_ps(t_, v8(_mm256_loadu_ps(t_)));                     \
            _mm256_storeu_ps(t_ + 8, v8(_mm256_loadu_ps(t_ + 8)));             \
            return _mm512_loadu_ps(t_);                                        \
        } while (0)
NK_INLINE vf vf_exp(vf v) { NK_HALVES(Sleef_expf8_u10avx2); }
NK_INLINE vf vf_erf(vf v) { NK_HALVES(Sleef_erff8_u10avx2); }
NK_INLINE vf vf_tanh(vf v) { NK_HALVES(Sleef_tanhf8_u10avx2); }
#  else
NK_INLINE vf vf_exp(vf v) { NK_LANES(expf); }
NK_INLINE vf vf_erf(vf v) { NK_LANES(erff); }
NK_INLINE vf vf_tanh(vf v) { NK_LANES(tanhf); }
#  endif

/* ------------------------------------------------------------------------ */
#else /* AVX2 + FMA */

#  define NK_VL 8
#  define NK_NREGS 16
#  define NK_FN(name) NK_CAT3(nk_##name, NK_DT_TAG, __avx2)
#  define NK_INIT NK_CAT3(nk_kernels_init_avx2, NK_DT_TAG, )

typedef __m256 vf;

/* maskload/maskstore lane masks: the first n lanes of load(nk_x86_mask + 8 - n) */
static const int32_t nk_x86_mask[16] = {-1, -1, -1, -1, -1, -1, -1, -1, 0, 0, 0, 0, 0, 0, 0, 0};
NK_INLINE __m256i vm_first(size_t n)
{
    return _mm256_loadu_si256((const __m256i *)(const void *)(nk_x86_mask + 8 - n));
}

NK_INLINE vf vf_zero(void) { return _mm256_setzero_ps(); }
NK_INLINE vf vf_set1(float v) { return _mm256_set1_ps(v); }
NK_INLINE vf vf_loadu(const float *p) { return _mm256_loadu_ps(p); }
NK_INLINE void vf_storeu(float *p, vf v) { _mm256_storeu_ps(p, v); }
NK_INLINE vf vf_add(vf a, vf b) { return _mm256_add_ps(a, b); }
NK_INLINE vf vf_sub(vf a, vf b) { return _mm256_sub_ps(a, b); }
NK_INLINE vf vf_mul(vf a, vf b) { return _mm256_mul_ps(a, b); }
NK_INLINE vf vf_div(vf a, vf b) { return _mm256_div_ps(a, b); }
NK_INLINE vf vf_sqrt(vf a) { return _mm256_sqrt_ps(a); }
NK_INLINE vf vf_fma(vf a, vf b, vf c) { return _mm256_fmadd_ps(a, b, c); }
NK_INLINE vf vf_relu(vf v) { return _mm256_max_ps(_mm256_setzero_ps(), v); }
NK_INLINE vf vf_leaky(vf v, vf alpha)
{
    vf neg = _mm256_cmp_ps(v, _mm256_setzero_ps(), _CMP_LT_OQ);
    return _mm256_blendv_ps(v, _mm256_mul_ps(v, alpha), neg);
}
NK_INLINE vf vf_sub_n(vf x, vf m, size_t n)
{
    return _mm256_and_ps(_mm256_sub_ps(x, m), _mm256_castsi256_ps(vm_first(n)));
}
/* lanes below n from a, the others from b (n < 8) */
NK_INLINE vf vf_first(size_t n, vf a, vf b)
{
    return _mm256_blendv_ps(b, a, _mm256_castsi256_ps(vm_first(n)));
}
NK_INLINE vf vf_load_n(const float *p, size_t n) { return _mm256_maskload_ps(p, vm_first(n)); }
NK_INLINE void vf_store_n(float *p, vf v, size_t n) { _mm256_maskstore_ps(p, vm_first(n), v); }
NK_INLINE void vf_stream(float *p, vf v) { _mm256_stream_ps(p, v); }
NK_INLINE float vf_hsum(vf v)
{
    __m128 q = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    q = _mm_add_ps(q, _mm_movehl_ps(q, q));
    q = _mm_add_ss(q, _mm_movehdup_ps(q));
    return _mm_cvtss_f32(q);
}

/* Transposing row sums of 8 vectors (see the AVX-512 version): the same
 * pairwise tree for every row (lane i + lane i + 4, then + 2, + 1). */
/* [a.lo | b.hi] */
NK_INLINE vf vf_fold_p(vf a, vf b) { return _mm256_blend_ps(a, b, 0xF0); }
/* [a.hi | b.lo] */
NK_INLINE vf vf_fold_q(vf a, vf b) { return _mm256_permute2f128_ps(a, b, 0x21); }
NK_INLINE vf vf_sum_folded(vf *w)
{
    for (int i = 0; i < 2; i++) /* pairs in each half: [a0 a1 b2 b3] + [a2 a3 b0 b1] */
        w[i] = _mm256_add_ps(_mm256_blend_ps(w[i], w[i + 2], 0xCC),
                             _mm256_shuffle_ps(w[i], w[i + 2], _MM_SHUFFLE(1, 0, 3, 2)));
    /* single lanes: [a0 b1 a2 b3] + [a1 b0 a3 b2] */
    return _mm256_add_ps(_mm256_blend_ps(w[0], w[1], 0xAA),
                         _mm256_permute_ps(_mm256_blend_ps(w[1], w[0], 0xAA),
                                           _MM_SHUFFLE(2, 3, 0, 1)));
}
NK_INLINE unsigned vf_nonfinite(vf v)
{
    return (unsigned)_mm256_movemask_ps(
        _mm256_cmp_ps(_mm256_mul_ps(v, _mm256_setzero_ps()), _mm256_setzero_ps(), _CMP_NEQ_UQ));
}

#  if NK_USE_SLEEF
NK_INLINE vf vf_exp(vf v) { return Sleef_expf8_u10avx2(v); }
NK_INLINE vf vf_erf(vf v) { return Sleef_erff8_u10avx2(v); }
NK_INLINE vf vf_tanh(vf v) { return Sleef_tanhf8_u10avx2(v); }
#  else
NK_INLINE vf vf_exp(vf v) { NK_LANES(expf); }
NK_INLINE vf vf_erf(vf v) { NK_LANES(erff); }
NK_INLINE vf vf_tanh(vf v) { NK_LANES(tanhf); }
#  endif

#endif

NK_INLINE vf vf_rcp_sqrt(vf v) { return vf_div(vf_set1(1.0f), vf_sqrt(v)); }

#endif
