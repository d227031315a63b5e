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
 *
 * 16-bit element types (NK_DT fp16 / bf16; the vh_* operations that
 * nk_simd.h composes into vx_*): NK_VL elements are one vh, a 256-bit
 * vector with AVX-512, 128-bit with AVX2.
 *   fp16: vcvtph2ps / vcvtps2ph with the round-to-nearest-even immediate
 *         (F16C for AVX2: the AVX2 units are built with -mf16c).
 *   bf16: widened by a 16-bit shift; narrowed by the integer rounding of
 *         kernels/cvt.h (bits + 0x7fff + lsb, NaN made quiet), or with
 *         AVX512-BF16 (a second build of the bf16 AVX-512 units with
 *         -mavx512bf16, picked by the dispatcher where CPUID has it) by
 *         vcvtneps2bf16. That instruction flushes denormal fp32 inputs to
 *         ±0 (what it does with NaN and everything else is the rounding of
 *         kernels/cvt.h), so a vector holding a denormal (vfpclassps) takes
 *         the integer rounding instead: the same bits either way.
 *   tails: AVX-512 masks 16-bit lanes (AVX512BW vmovdqu16). AVX2 has no
 *         16-bit masked load or store: the first n elements are n / 2
 *         pairs moved as 32-bit lanes by vpmaskmovd, and with n odd the
 *         last element alone (a scalar load blended into its lane; a
 *         scalar store of its lane), so nothing is read or written past n.
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
#  elif defined(__AVX512BF16__) && NK_DT == NK_DTYPE_BF16
/* the bf16 units built a second time with vcvtneps2bf16 */
#    define NK_FN(name) NK_CAT3(nk_##name, NK_DT_TAG, __avx512bf16)
#    define NK_INIT NK_CAT3(nk_kernels_init_avx512bf16, NK_DT_TAG, )
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
/* y > 0 ? a : b lane by lane (NaN y: b), the backward's activation mask */
NK_INLINE vf vf_pos_select(vf y, vf a, vf b)
{
    return _mm512_mask_blend_ps(_mm512_cmp_ps_mask(y, _mm512_setzero_ps(), _CMP_GT_OQ), b, a);
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

/* 16-bit elements: 16 in a 256-bit vh */
#  if NK_DT != NK_DTYPE_F32
typedef __m256i vh;
/* the conversions: out of line in the emulated build (inlined at every
 * load and store, SIMDe's 512-bit integer emulation tripled its compile
 * time), inline otherwise */
#    if defined(NK_SIMDE)
#      define NK_CVT static __attribute__((noinline))
#    else
#      define NK_CVT NK_INLINE
#    endif
NK_INLINE vh vh_loadu(const xt *p) { return _mm256_loadu_si256((const __m256i *)(const void *)p); }
NK_INLINE void vh_storeu(xt *p, vh h) { _mm256_storeu_si256((__m256i *)(void *)p, h); }
#    if defined(NK_SIMDE)
NK_INLINE vh vh_load_n(const xt *p, size_t n)
{
    xt t[16] = {0};
    memcpy(t, p, n * sizeof(xt));
    return _mm256_loadu_si256((const __m256i *)(const void *)t);
}
NK_INLINE void vh_store_n(xt *p, vh h, size_t n)
{
    xt t[16];
    _mm256_storeu_si256((__m256i *)(void *)t, h);
    memcpy(p, t, n * sizeof(xt));
}
NK_INLINE void vh_stream(xt *p, vh h)
{
    if ((uintptr_t)p % 32)
        __builtin_trap(); /* vmovntdq would fault */
    _mm256_storeu_si256((__m256i *)(void *)p, h);
}
/* SIMDe 0.7.4 lacks the 512-bit widening and narrowing moves: lane by lane
 * through memory */
NK_INLINE __m512i nk_u16_to_u32(vh h)
{
    uint16_t t[16];
    uint32_t u[16];
    _mm256_storeu_si256((__m256i *)(void *)t, h);
    for (int i = 0; i < 16; i++)
        u[i] = t[i];
    return _mm512_loadu_si512(u);
}
NK_INLINE vh nk_u32_to_u16(__m512i v)
{
    uint32_t u[16];
    uint16_t t[16];
    _mm512_storeu_si512(u, v);
    for (int i = 0; i < 16; i++)
        t[i] = (uint16_t)u[i];
    return _mm256_loadu_si256((const __m256i *)(const void *)t);
}
#      if NK_DT == NK_DTYPE_F16
#        error "the emulated AVX-512 build has no fp16 copy (tests/meson.build)"
#      endif
#    else
NK_INLINE vh vh_load_n(const xt *p, size_t n)
{
    return _mm256_maskz_loadu_epi16((vmask)((1u << n) - 1u), p);
}
NK_INLINE void vh_store_n(xt *p, vh h, size_t n)
{
    _mm256_mask_storeu_epi16(p, (vmask)((1u << n) - 1u), h);
}
NK_INLINE void vh_stream(xt *p, vh h) { _mm256_stream_si256((__m256i *)(void *)p, h); }
NK_INLINE __m512i nk_u16_to_u32(vh h) { return _mm512_cvtepu16_epi32(h); }
NK_INLINE vh nk_u32_to_u16(__m512i v) { return _mm512_cvtepi32_epi16(v); }
#      if NK_DT == NK_DTYPE_F16
NK_INLINE vf vh_to_vf(vh h) { return _mm512_cvtph_ps(h); }
NK_INLINE vh vf_to_vh(vf v)
{
    return _mm512_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
}
#      endif
#    endif
#    if NK_DT == NK_DTYPE_BF16
NK_CVT vf vh_to_vf(vh h) { return _mm512_castsi512_ps(_mm512_slli_epi32(nk_u16_to_u32(h), 16)); }
/* kernels/cvt.h's rounding: bits + 0x7fff + lsb, NaN quiet (x | 0x400000) */
NK_CVT vh nk_bf16_round(vf v)
{
    const __m512i x = _mm512_castps_si512(v);
    const __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(x, 16), _mm512_set1_epi32(1));
    __m512i r = _mm512_add_epi32(x, _mm512_add_epi32(lsb, _mm512_set1_epi32(0x7fff)));
    r = _mm512_mask_mov_epi32(r, _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q),
                              _mm512_or_si512(x, _mm512_set1_epi32(0x400000)));
    return nk_u32_to_u16(_mm512_srli_epi32(r, 16));
}
#      if defined(__AVX512BF16__) && !defined(NK_SIMDE)
/* vcvtneps2bf16, unless a lane is an fp32 denormal (which it flushes) */
NK_INLINE vh vf_to_vh(vf v)
{
    if (_mm512_fpclass_ps_mask(v, 0x20)) /* denormal */
        return nk_bf16_round(v);
    return (vh)_mm512_cvtneps_pbh(v);
}
#      else
NK_INLINE vh vf_to_vh(vf v) { return nk_bf16_round(v); }
#      endif
#      if !defined(NK_SIMDE)
/* Pairs of vectors (nk_simd.h): 32 bf16 widen with one qword permute and
 * two in-lane unpacks (qwords 0 4 1 5 2 6 3 7, so that the unpacks of each
 * 128-bit lane give elements 0-15 and 16-31 in order), against two
 * vpmovzxwd and two shifts. With AVX512-BF16 they narrow with one
 * vcvtne2ps2bf16 and one denormal test for both: 0.77 against 1.35 ns per
 * 16 elements of an in-cache load-fma-store loop on Zen 4. */
#        define NK_HAVE_VH2 1
NK_INLINE void vh2_loadu(const xt *p, vf *v0, vf *v1)
{
    const __m512i x = _mm512_permutexvar_epi64(_mm512_set_epi64(7, 3, 6, 2, 5, 1, 4, 0),
                                               _mm512_loadu_si512((const void *)p));
    *v0 = _mm512_castsi512_ps(_mm512_unpacklo_epi16(_mm512_setzero_si512(), x));
    *v1 = _mm512_castsi512_ps(_mm512_unpackhi_epi16(_mm512_setzero_si512(), x));
}
#        if defined(__AVX512BF16__)
/* some lane of v0 or v1 is an fp32 denormal (kor + kortest measured
 * slower than the two masks or-ed in general registers) */
NK_INLINE int nk_denormal2(vf v0, vf v1)
{
    return (_mm512_fpclass_ps_mask(v0, 0x20) | _mm512_fpclass_ps_mask(v1, 0x20)) != 0;
}
NK_INLINE void vh2_storeu(xt *p, vf v0, vf v1)
{
    if (nk_denormal2(v0, v1)) {
        vh_storeu(p, nk_bf16_round(v0));
        vh_storeu(p + 16, nk_bf16_round(v1));
        return;
    }
    _mm512_storeu_si512((void *)p, (__m512i)_mm512_cvtne2ps_pbh(v1, v0));
}
/* p is aligned to 32 bytes only (NK_XBYTES): two 256-bit streams */
NK_INLINE void vh2_stream(xt *p, vf v0, vf v1)
{
    if (nk_denormal2(v0, v1)) {
        vh_stream(p, nk_bf16_round(v0));
        vh_stream(p + 16, nk_bf16_round(v1));
        return;
    }
    const __m512i h = (__m512i)_mm512_cvtne2ps_pbh(v1, v0);
    vh_stream(p, _mm512_castsi512_si256(h));
    vh_stream(p + 16, _mm512_extracti64x4_epi64(h, 1));
}
#        else
NK_INLINE void vh2_storeu(xt *p, vf v0, vf v1)
{
    vh_storeu(p, vf_to_vh(v0));
    vh_storeu(p + 16, vf_to_vh(v1));
}
NK_INLINE void vh2_stream(xt *p, vf v0, vf v1)
{
    vh_stream(p, vf_to_vh(v0));
    vh_stream(p + 16, vf_to_vh(v1));
}
#        endif
#      endif
#    endif
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
/* lanes below n (n <= 16) of v, integral values in [-128, 255], as bytes
 * (the low 8 bits of each) */
#  if defined(NK_SIMDE)
NK_INLINE void vf_store_b(uint8_t *p, vf v, size_t n)
{
    float t[16];
    _mm512_storeu_ps(t, v);
    for (size_t i = 0; i < n; i++)
        p[i] = (uint8_t)(int)t[i];
}
#  else
NK_INLINE void vf_store_b(uint8_t *p, vf v, size_t n)
{
    _mm_mask_storeu_epi8(p, (__mmask16)((1u << n) - 1u), _mm512_cvtepi32_epi8(_mm512_cvtps_epi32(v)));
}
#  endif

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
/* y > 0 ? a : b lane by lane (NaN y: b), the backward's activation mask */
NK_INLINE vf vf_pos_select(vf y, vf a, vf b)
{
    return _mm256_blendv_ps(b, a, _mm256_cmp_ps(y, _mm256_setzero_ps(), _CMP_GT_OQ));
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

/* 16-bit elements: 8 in a 128-bit vh */
#  if NK_DT != NK_DTYPE_F32
typedef __m128i vh;
/* vpmaskmovd lane masks of the first k (0..4) 32-bit lanes */
NK_INLINE __m128i vm_first4(size_t k)
{
    return _mm_loadu_si128((const __m128i *)(const void *)(nk_x86_mask + 8 - k));
}
/* lane i (0..7) of 16 bits set: the first 8 of nk_x86_lane16 + 8 - i */
static const int16_t nk_x86_lane16[16] = {0, 0, 0, 0, 0, 0, 0, 0, -1, 0, 0, 0, 0, 0, 0, 0};
NK_INLINE vh vh_loadu(const xt *p) { return _mm_loadu_si128((const __m128i *)(const void *)p); }
NK_INLINE void vh_storeu(xt *p, vh h) { _mm_storeu_si128((__m128i *)(void *)p, h); }
NK_INLINE void vh_stream(xt *p, vh h) { _mm_stream_si128((__m128i *)(void *)p, h); }
/* n / 2 pairs as 32-bit lanes, then the odd last element into lane n - 1 */
NK_INLINE vh vh_load_n(const xt *p, size_t n)
{
    vh h = _mm_maskload_epi32((const int *)(const void *)p, vm_first4(n / 2));
    if (n & 1) {
        const __m128i lane =
            _mm_loadu_si128((const __m128i *)(const void *)(nk_x86_lane16 + 9 - n));
        h = _mm_blendv_epi8(h, _mm_set1_epi16((short)p[n - 1]), lane);
    }
    return h;
}
/* n / 2 pairs as 32-bit lanes, then the odd last element alone */
NK_INLINE void vh_store_n(xt *p, vh h, size_t n)
{
    _mm_maskstore_epi32((int *)(void *)p, vm_first4(n / 2), h);
    if (n & 1) {
        /* the pair holding element n - 1 in lane 0; its low half */
        const __m128 q = _mm_permutevar_ps(_mm_castsi128_ps(h), _mm_cvtsi32_si128((int)(n / 2)));
        p[n - 1] = (xt)_mm_cvtsi128_si32(_mm_castps_si128(q));
    }
}
#    if NK_DT == NK_DTYPE_F16
NK_INLINE vf vh_to_vf(vh h) { return _mm256_cvtph_ps(h); }
NK_INLINE vh vf_to_vh(vf v) { return _mm256_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT); }
#    else
NK_INLINE vf vh_to_vf(vh h)
{
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}
/* kernels/cvt.h's rounding: bits + 0x7fff + lsb, NaN quiet (x | 0x400000) */
NK_INLINE vh vf_to_vh(vf v)
{
    const __m256i x = _mm256_castps_si256(v);
    const __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(x, 16), _mm256_set1_epi32(1));
    __m256i r = _mm256_add_epi32(x, _mm256_add_epi32(lsb, _mm256_set1_epi32(0x7fff)));
    r = _mm256_blendv_epi8(r, _mm256_or_si256(x, _mm256_set1_epi32(0x400000)),
                           _mm256_castps_si256(_mm256_cmp_ps(v, v, _CMP_UNORD_Q)));
    r = _mm256_srli_epi32(r, 16);
    return _mm_packus_epi32(_mm256_castsi256_si128(r), _mm256_extracti128_si256(r, 1));
}
#    endif
#  endif

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
NK_INLINE void vf_store_b(uint8_t *p, vf v, size_t n)
{
    const __m256i i = _mm256_and_si256(_mm256_cvtps_epi32(v), _mm256_set1_epi32(0xff));
    const __m128i w = _mm_packus_epi32(_mm256_castsi256_si128(i), _mm256_extracti128_si256(i, 1));
    const __m128i b = _mm_packus_epi16(w, w);
    if (n == 8) {
        _mm_storel_epi64((__m128i *)(void *)p, b);
    } else {
        uint8_t t[16];
        _mm_storeu_si128((__m128i *)(void *)t, b);
        memcpy(p, t, n);
    }
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
