/*
 * Per-target helpers for the NEON kernels, so that one source serves AArch64
 * (Advanced SIMD: 32 q registers, fp64 vectors, vdivq/vaddvq, FMA always)
 * and 32-bit ARMv7 NEON (16 q registers, no fp64 vectors, no divide, no
 * across-vector add, FMA only with VFPv4). Included only by the kernels/arm sources,
 * which are the only units compiled with NEON enabled.
 *
 *   NK_HAVE_SLEEF: exp/erf/tanh for SiLU and GELU from SLEEF's NEON
 *                  functions; without it those activations run nk_act_ref
 *                  (the scalar reference) lane by lane. ReLU, LeakyReLU and
 *                  no activation are vectorised either way.
 */
#ifndef NK_KERNELS_ARM_NEON_UTIL_H
#define NK_KERNELS_ARM_NEON_UTIL_H

#include <arm_neon.h>
#include <math.h>
#include <stddef.h>

#if defined(NK_HAVE_SLEEF) && NK_HAVE_SLEEF
#  include <sleef.h>
#  define NK_USE_SLEEF 1
#else
#  define NK_USE_SLEEF 0
#endif

#include "kernels/kernels.h"

#define NK_INLINE static inline __attribute__((always_inline))

/* moments_neon.c fills the moments entries, short_neon.c norm_short,
 * normalize_neon.c the rest. */
void nk_kernels_init_neon_moments(nk_kernels *k);
void nk_kernels_init_neon_short(nk_kernels *k);

#if defined(__aarch64__)
/* Vectors per unrolled step: 8 loads + 16 accumulators fit the 32 registers. */
#  define NK_NEON_U 8
/* Column block of the column kernels, in vectors (3 live vectors per block). */
#  define NK_NEON_CU 8
#  define NK_SLEEF_EXP Sleef_expf4_u10advsimd
#  define NK_SLEEF_ERF Sleef_erff4_u10advsimd
#  define NK_SLEEF_TANH Sleef_tanhf4_u10advsimd
#else
#  define NK_NEON_U 4
#  define NK_NEON_CU 3
#  if defined(__ARM_FEATURE_FMA)
#    define NK_SLEEF_EXP Sleef_expf4_u10neonvfpv4
#    define NK_SLEEF_ERF Sleef_erff4_u10neonvfpv4
#    define NK_SLEEF_TANH Sleef_tanhf4_u10neonvfpv4
#  else
#    define NK_SLEEF_EXP Sleef_expf4_u10neon
#    define NK_SLEEF_ERF Sleef_erff4_u10neon
#    define NK_SLEEF_TANH Sleef_tanhf4_u10neon
#  endif
#endif

/* acc + a * b: fused where the target has it (the scalar path uses fmaf);
 * ARMv7 without VFPv4 rounds the product first. */
NK_INLINE float32x4_t nk_fma_f32(float32x4_t acc, float32x4_t a, float32x4_t b)
{
#if defined(__aarch64__) || defined(__ARM_FEATURE_FMA)
    return vfmaq_f32(acc, a, b);
#else
    return vmlaq_f32(acc, a, b);
#endif
}

/* a / b. ARMv7 has no vector divide: reciprocal estimate and two
 * Newton-Raphson steps (about 1 ulp; VRECPS gives 2 for inf * 0, so an
 * infinite b still yields a zero quotient as the division would). */
NK_INLINE float32x4_t nk_div_f32(float32x4_t a, float32x4_t b)
{
#if defined(__aarch64__)
    return vdivq_f32(a, b);
#else
    float32x4_t r = vrecpeq_f32(b);
    r = vmulq_f32(r, vrecpsq_f32(b, r));
    r = vmulq_f32(r, vrecpsq_f32(b, r));
    return vmulq_f32(a, r);
#endif
}

NK_INLINE float nk_hsum_f32(float32x4_t v)
{
#if defined(__aarch64__)
    return vaddvq_f32(v);
#else
    float32x2_t s = vadd_f32(vget_low_f32(v), vget_high_f32(v));
    return vget_lane_f32(vpadd_f32(s, s), 0);
#endif
}

/* Sum of the four lanes in fp64 (the merge across chunks is fp64). */
NK_INLINE double nk_hsum_f64(float32x4_t v)
{
#if defined(__aarch64__)
    float64x2_t lo = vcvt_f64_f32(vget_low_f32(v));
    float64x2_t hi = vcvt_high_f64_f32(v);
    return vaddvq_f64(vaddq_f64(lo, hi));
#else
    return ((double)vgetq_lane_f32(v, 0) + (double)vgetq_lane_f32(v, 1)) +
           ((double)vgetq_lane_f32(v, 2) + (double)vgetq_lane_f32(v, 3));
#endif
}

/* n (1..3) floats into the low lanes, the others 0; never reads past p + n. */
NK_INLINE float32x4_t nk_load_partial(const float *p, size_t n)
{
    float32x4_t v = vdupq_n_f32(0.0f);
    v = vld1q_lane_f32(p, v, 0);
    if (n > 1)
        v = vld1q_lane_f32(p + 1, v, 1);
    if (n > 2)
        v = vld1q_lane_f32(p + 2, v, 2);
    return v;
}

/* Stores the low n (1..3) lanes; never writes past p + n. */
NK_INLINE void nk_store_partial(float *p, float32x4_t v, size_t n)
{
    vst1q_lane_f32(p, v, 0);
    if (n > 1)
        vst1q_lane_f32(p + 1, v, 1);
    if (n > 2)
        vst1q_lane_f32(p + 2, v, 2);
}

/* One element of each of four rows (row k at p + k * stride). */
NK_INLINE float32x4_t nk_gather4(const float *p, size_t stride)
{
    float32x4_t v = vdupq_n_f32(0.0f);
    v = vld1q_lane_f32(p, v, 0);
    v = vld1q_lane_f32(p + stride, v, 1);
    v = vld1q_lane_f32(p + 2 * stride, v, 2);
    v = vld1q_lane_f32(p + 3 * stride, v, 3);
    return v;
}

NK_INLINE void nk_scatter4(float *p, size_t stride, float32x4_t v)
{
    vst1q_lane_f32(p, v, 0);
    vst1q_lane_f32(p + stride, v, 1);
    vst1q_lane_f32(p + 2 * stride, v, 2);
    vst1q_lane_f32(p + 3 * stride, v, 3);
}

#if !NK_USE_SLEEF
/* SiLU / GELU without SLEEF: nk_act_ref on each lane. */
NK_INLINE float32x4_t nk_act_lanes(float32x4_t v, const int act)
{
    const nk_epilogue ep = {act, 0.0f, 0};
    float t[4];
    vst1q_f32(t, v);
    for (int i = 0; i < 4; i++)
        t[i] = nk_act_ref(t[i], &ep);
    return vld1q_f32(t);
}
#endif

/*
 * The fused activation, lane by lane the same expression as nk_act_ref
 * (kernels/ref/normalize_ref.c) with SLEEF's 1.0-ulp exp/erf/tanh (or
 * nk_act_ref itself per lane when built without SLEEF). `act` is
 * a constant at every call site, so each loop is compiled per activation.
 * ReLU / LeakyReLU select on v < 0 rather than using vmaxq so that -0 and
 * NaN come out exactly as in the scalar path.
 */
NK_INLINE float32x4_t nk_act_f32(float32x4_t v, const int act, float32x4_t alpha)
{
    const float32x4_t zero = vdupq_n_f32(0.0f);
#if NK_USE_SLEEF
    const float32x4_t one = vdupq_n_f32(1.0f);
    const float32x4_t half = vdupq_n_f32(0.5f);
#endif
    switch (act) {
    case NK_ACT_RELU:
        return vbslq_f32(vcltq_f32(v, zero), zero, v);
    case NK_ACT_LEAKY_RELU:
        return vbslq_f32(vcltq_f32(v, zero), vmulq_f32(v, alpha), v);
#if !NK_USE_SLEEF
    case NK_ACT_SILU:
    case NK_ACT_GELU_ERF:
    case NK_ACT_GELU_TANH:
        return nk_act_lanes(v, act);
#else
    case NK_ACT_SILU:
        return nk_div_f32(v, vaddq_f32(one, NK_SLEEF_EXP(vnegq_f32(v))));
    case NK_ACT_GELU_ERF: {
        float32x4_t e = NK_SLEEF_ERF(vmulq_f32(v, vdupq_n_f32(0.70710678118654752f)));
        return vmulq_f32(vmulq_f32(half, v), vaddq_f32(one, e));
    }
    case NK_ACT_GELU_TANH: {
        float32x4_t c3 = vmulq_f32(vmulq_f32(vmulq_f32(vdupq_n_f32(0.044715f), v), v), v);
        float32x4_t inner = vmulq_f32(vdupq_n_f32(0.7978845608028654f), vaddq_f32(v, c3));
        return vmulq_f32(vmulq_f32(half, v), vaddq_f32(one, NK_SLEEF_TANH(inner)));
    }
#endif
    default:
        return v;
    }
}

/* Activations that call into SLEEF (or nk_act_ref): the call clobbers most
 * registers, so those loops are not unrolled. */
#define NK_ACT_IS_CALL(act) ((act) >= NK_ACT_SILU)

#endif
