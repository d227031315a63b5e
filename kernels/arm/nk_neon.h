/*
 * NEON vocabulary of the vector kernels (kernels/simd/nk_simd.h lists what a
 * vocabulary header provides; the algorithm files in kernels/simd are
 * written once against it). Included only through nk_simd.h, by the
 * kernels/arm units, the only ones compiled with NEON enabled. One header
 * serves both targets, 4 float lanes each:
 *
 *   AArch64 (Advanced SIMD): 32 q registers, FMA, IEEE vector divide and
 *     square root, across-vector adds.
 *   32-bit ARMv7 NEON: 16 q registers, FMA only with VFPv4, no vector divide
 *     or square root (vf_div is a reciprocal estimate refined twice, about
 *     1 ulp; vf_rcp_sqrt and vf_sqrt go through scalar VFP, correctly
 *     rounded), no across-vector add (pairwise adds instead).
 *
 *   NK_HAVE_SLEEF: exp/erf/tanh for SiLU and GELU from SLEEF's NEON
 *                  functions (advsimd; ARMv7 neonvfpv4 with FMA, neon
 *                  without); without it libm's expf/erff/tanhf per lane, the
 *                  scalar path's functions. ReLU, LeakyReLU and no
 *                  activation are vectorised either way.
 *
 * Tails use lane loads and stores, so no kernel reads or writes memory
 * outside its rows. There are no non-temporal stores (NK_STREAM is 0: the
 * epilogue's stream flag is ignored).
 *
 * 16-bit element types (NK_DT fp16 / bf16; the vh_* operations nk_simd.h
 * composes into vx_*): four elements are a uint16x4_t, tails move lanes.
 *   fp16: vcvt_f32_f16 / vcvt_f16_f32 (fcvtl / fcvtn: baseline on AArch64;
 *         on ARMv7 the half-precision extension, -mfpu=neon-fp16, offered by
 *         the dispatcher only with HWCAP_VFPv4). ARMv7 Advanced SIMD always
 *         runs with the default NaN, so the NaN lanes of both conversions
 *         are redone by integer operations (quiet, payload kept, as
 *         kernels/cvt.h); its flush-to-zero does not touch fp16 values.
 *   bf16: widened by a 16-bit shift, narrowed by the integer rounding of
 *         kernels/cvt.h (bits + 0x7fff + lsb, NaN quiet), both targets.
 * (ARMv7 NEON arithmetic itself flushes fp32 denormals, bf16's included,
 * as it does for fp32 data.)
 */
#ifndef NK_KERNELS_ARM_NK_NEON_H
#define NK_KERNELS_ARM_NK_NEON_H

#include <arm_neon.h>

#if NK_USE_SLEEF
#  include <sleef.h>
#endif

#define NK_VL 4
#define NK_FN(name) NK_CAT3(nk_##name, NK_DT_TAG, __neon)
#define NK_INIT NK_CAT3(nk_kernels_init_neon, NK_DT_TAG, )

#if defined(__aarch64__)
#  define NK_NREGS 32
#  define NK_IEEE_VDIV 1
#else
#  define NK_NREGS 16
#  define NK_IEEE_VDIV 0
#endif
#define NK_HAVE_INV_STD 0

/* no non-temporal stores: ep->stream is never read (the kernel sweep under
 * qemu relies on it, NKT_STREAMS in tests/test_kernels.c) */
#define NK_STREAM(ep) 0
NK_INLINE void nk_stream_fence(void) {}
NK_INLINE void nk_prefetch(const void *p) { __builtin_prefetch(p); }

typedef float32x4_t vf;

/* lane masks: the first n lanes of vld1q_u32(nk_neon_mask + 4 - n) */
static const uint32_t nk_neon_mask[8] = {~0u, ~0u, ~0u, ~0u, 0u, 0u, 0u, 0u};
NK_INLINE uint32x4_t vm_first(size_t n) { return vld1q_u32(nk_neon_mask + 4 - n); }

NK_INLINE vf vf_zero(void) { return vdupq_n_f32(0.0f); }
NK_INLINE vf vf_set1(float v) { return vdupq_n_f32(v); }
NK_INLINE vf vf_loadu(const float *p) { return vld1q_f32(p); }
NK_INLINE void vf_storeu(float *p, vf v) { vst1q_f32(p, v); }
NK_INLINE vf vf_add(vf a, vf b) { return vaddq_f32(a, b); }
NK_INLINE vf vf_sub(vf a, vf b) { return vsubq_f32(a, b); }
NK_INLINE vf vf_mul(vf a, vf b) { return vmulq_f32(a, b); }
/* a * b + c: fused where the target has it (the scalar path uses fmaf);
 * ARMv7 without VFPv4 rounds the product first. */
NK_INLINE vf vf_fma(vf a, vf b, vf c)
{
#if defined(__aarch64__) || defined(__ARM_FEATURE_FMA)
    return vfmaq_f32(c, a, b);
#else
    return vmlaq_f32(c, a, b);
#endif
}
/* a / b. ARMv7: reciprocal estimate and two Newton-Raphson steps (about
 * 1 ulp; VRECPS gives 2 for inf * 0, so an infinite b still yields a zero
 * quotient as the division would). */
NK_INLINE vf vf_div(vf a, vf b)
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
#if defined(__aarch64__)
NK_INLINE vf vf_sqrt(vf v) { return vsqrtq_f32(v); }
NK_INLINE vf vf_rcp_sqrt(vf v) { return vdivq_f32(vdupq_n_f32(1.0f), vsqrtq_f32(v)); }
#else
/* no vector square root: scalar VFP per lane, IEEE */
NK_INLINE float nk_rcp_sqrtf(float x) { return 1.0f / sqrtf(x); }
NK_INLINE vf vf_sqrt(vf v) { NK_LANES(sqrtf); }
NK_INLINE vf vf_rcp_sqrt(vf v) { NK_LANES(nk_rcp_sqrtf); }
#endif
/* v < 0 ? 0 : v and v < 0 ? v * alpha : v, selected as the scalar path
 * does, so that -0 and NaN come out the same */
NK_INLINE vf vf_relu(vf v)
{
    return vbslq_f32(vcltq_f32(v, vdupq_n_f32(0.0f)), vdupq_n_f32(0.0f), v);
}
NK_INLINE vf vf_leaky(vf v, vf alpha)
{
    return vbslq_f32(vcltq_f32(v, vdupq_n_f32(0.0f)), vmulq_f32(v, alpha), v);
}
/* y > 0 ? a : b lane by lane (NaN y: b), the backward's activation mask */
NK_INLINE vf vf_pos_select(vf y, vf a, vf b) { return vbslq_f32(vcgtq_f32(y, vdupq_n_f32(0.0f)), a, b); }
/* x - m on the first n lanes (n <= 4), 0 elsewhere */
NK_INLINE vf vf_sub_n(vf x, vf m, size_t n)
{
    return vreinterpretq_f32_u32(vandq_u32(vreinterpretq_u32_f32(vsubq_f32(x, m)), vm_first(n)));
}
/* lanes below n from a, the others from b (n < 4) */
NK_INLINE vf vf_first(size_t n, vf a, vf b) { return vbslq_f32(vm_first(n), a, b); }

/* n (0..4) floats into the low lanes, the others 0; never reads past p + n */
NK_INLINE vf vf_load_n(const float *p, size_t n)
{
    switch (n) {
    case 1: return vsetq_lane_f32(p[0], vdupq_n_f32(0.0f), 0);
    case 2: return vcombine_f32(vld1_f32(p), vdup_n_f32(0.0f));
    case 3: return vcombine_f32(vld1_f32(p), vset_lane_f32(p[2], vdup_n_f32(0.0f), 0));
    case 4: return vld1q_f32(p);
    default: return vdupq_n_f32(0.0f);
    }
}
/* the low n (0..4) lanes; never writes past p + n */
NK_INLINE void vf_store_n(float *p, vf v, size_t n)
{
    switch (n) {
    case 1: vst1q_lane_f32(p, v, 0); break;
    case 2: vst1_f32(p, vget_low_f32(v)); break;
    case 3:
        vst1_f32(p, vget_low_f32(v));
        vst1q_lane_f32(p + 2, v, 2);
        break;
    case 4: vst1q_f32(p, v); break;
    default: break;
    }
}
NK_INLINE void vf_stream(float *p, vf v) { vst1q_f32(p, v); }

#if NK_DT != NK_DTYPE_F32
typedef uint16x4_t vh;
NK_INLINE vh vh_loadu(const xt *p) { return vld1_u16(p); }
NK_INLINE void vh_storeu(xt *p, vh h) { vst1_u16(p, h); }
NK_INLINE void vh_stream(xt *p, vh h) { vst1_u16(p, h); }
/* n (0..4) elements into the low lanes, the others 0; never reads past p + n */
NK_INLINE vh vh_load_n(const xt *p, size_t n)
{
    vh h = vdup_n_u16(0);
    if (n >= 4)
        return vld1_u16(p);
    if (n >= 3)
        h = vld1_lane_u16(p + 2, h, 2);
    if (n >= 2)
        h = vld1_lane_u16(p + 1, h, 1);
    if (n >= 1)
        h = vld1_lane_u16(p, h, 0);
    return h;
}
/* the low n (0..4) lanes; never writes past p + n */
NK_INLINE void vh_store_n(xt *p, vh h, size_t n)
{
    if (n >= 4) {
        vst1_u16(p, h);
        return;
    }
    if (n >= 1)
        vst1_lane_u16(p, h, 0);
    if (n >= 2)
        vst1_lane_u16(p + 1, h, 1);
    if (n >= 3)
        vst1_lane_u16(p + 2, h, 2);
}
#  if NK_DT == NK_DTYPE_F16
#    if defined(__aarch64__)
NK_INLINE vf vh_to_vf(vh h) { return vcvt_f32_f16(vreinterpret_f16_u16(h)); }
NK_INLINE vh vf_to_vh(vf v) { return vreinterpret_u16_f16(vcvt_f16_f32(v)); }
#    else
/* the default NaN of ARMv7 Advanced SIMD replaced: sign, quiet, payload */
NK_INLINE vf vh_to_vf(vh h)
{
    const vf v = vcvt_f32_f16(vreinterpret_f16_u16(h));
    const uint16x4_t nan16 = vcgt_u16(vand_u16(h, vdup_n_u16(0x7fff)), vdup_n_u16(0x7c00));
    const uint32x4_t nan = vreinterpretq_u32_s32(vmovl_s16(vreinterpret_s16_u16(nan16)));
    const uint32x4_t w = vmovl_u16(h);
    const uint32x4_t sign = vandq_u32(vshlq_n_u32(w, 16), vdupq_n_u32(0x80000000u));
    const uint32x4_t frac = vandq_u32(vshlq_n_u32(w, 13), vdupq_n_u32(0x007fe000u));
    const uint32x4_t bits = vorrq_u32(vorrq_u32(sign, vdupq_n_u32(0x7fc00000u)), frac);
    return vbslq_f32(nan, vreinterpretq_f32_u32(bits), v);
}
NK_INLINE vh vf_to_vh(vf v)
{
    const vh h = vreinterpret_u16_f16(vcvt_f16_f32(v));
    const uint32x4_t x = vreinterpretq_u32_f32(v);
    const uint32x4_t sign = vandq_u32(vshrq_n_u32(x, 16), vdupq_n_u32(0x8000u));
    const uint32x4_t frac = vandq_u32(vshrq_n_u32(x, 13), vdupq_n_u32(0x3ffu));
    const uint32x4_t bits = vorrq_u32(vorrq_u32(sign, vdupq_n_u32(0x7e00u)), frac);
    const uint16x4_t nan = vmovn_u32(vmvnq_u32(vceqq_f32(v, v)));
    return vbsl_u16(nan, vmovn_u32(bits), h);
}
#    endif
#  else
NK_INLINE vf vh_to_vf(vh h) { return vreinterpretq_f32_u32(vshll_n_u16(h, 16)); }
/* kernels/cvt.h's rounding: bits + 0x7fff + lsb, NaN quiet (x | 0x400000) */
NK_INLINE vh vf_to_vh(vf v)
{
    const uint32x4_t x = vreinterpretq_u32_f32(v);
    const uint32x4_t lsb = vandq_u32(vshrq_n_u32(x, 16), vdupq_n_u32(1));
    uint32x4_t r = vaddq_u32(x, vaddq_u32(lsb, vdupq_n_u32(0x7fff)));
    r = vbslq_u32(vmvnq_u32(vceqq_f32(v, v)), vorrq_u32(x, vdupq_n_u32(0x400000)), r);
    return vshrn_n_u32(r, 16);
}
#  endif
#endif

NK_INLINE float vf_hsum(vf v)
{
#if defined(__aarch64__)
    return vaddvq_f32(v);
#else
    float32x2_t s = vpadd_f32(vget_low_f32(v), vget_high_f32(v));
    return vget_lane_f32(vpadd_f32(s, s), 0);
#endif
}

/* Transposing row sums of 4 vectors (see vf_fold_rows in nk_simd.h): the
 * same pairwise tree for every row (lane i + lane i + 2, then + 1). */
/* [a.lo | b.hi] */
NK_INLINE vf vf_fold_p(vf a, vf b) { return vcombine_f32(vget_low_f32(a), vget_high_f32(b)); }
/* [a.hi | b.lo] */
NK_INLINE vf vf_fold_q(vf a, vf b) { return vcombine_f32(vget_high_f32(a), vget_low_f32(b)); }
NK_INLINE vf vf_sum_folded(vf *w)
{
    /* single lanes: [a0 b0 a2 b2] + [a1 b1 a3 b3] */
    float32x4x2_t t = vtrnq_f32(w[0], w[1]);
    return vaddq_f32(t.val[0], t.val[1]);
}
/* bit r set where lane r of v is infinite or NaN (v * 0 is NaN there) */
NK_INLINE unsigned vf_nonfinite(vf v)
{
    static const uint32_t bits[4] = {1u, 2u, 4u, 8u};
    const uint32x4_t bad = vmvnq_u32(vceqq_f32(vmulq_f32(v, vdupq_n_f32(0.0f)), vdupq_n_f32(0.0f)));
    const uint32x4_t m = vandq_u32(bad, vld1q_u32(bits));
#if defined(__aarch64__)
    return vaddvq_u32(m);
#else
    uint32x2_t s = vpadd_u32(vget_low_u32(m), vget_high_u32(m));
    return vget_lane_u32(vpadd_u32(s, s), 0);
#endif
}

/* lanes below n (n <= 4) of v, integral values in [-128, 255], as bytes
 * (the low 8 bits of each) */
NK_INLINE void vf_store_b(uint8_t *p, vf v, size_t n)
{
    const int16x4_t h = vmovn_s32(vcvtq_s32_f32(v));
    uint8_t t[8];
    vst1_u8(t, vreinterpret_u8_s8(vmovn_s16(vcombine_s16(h, h))));
    memcpy(p, t, n);
}

/* exp / erf / tanh, u10 (1.0 ulp) like libm's float versions */
#if NK_USE_SLEEF
#  if defined(__aarch64__)
NK_INLINE vf vf_exp(vf v) { return Sleef_expf4_u10advsimd(v); }
NK_INLINE vf vf_erf(vf v) { return Sleef_erff4_u10advsimd(v); }
NK_INLINE vf vf_tanh(vf v) { return Sleef_tanhf4_u10advsimd(v); }
#  elif defined(__ARM_FEATURE_FMA)
NK_INLINE vf vf_exp(vf v) { return Sleef_expf4_u10neonvfpv4(v); }
NK_INLINE vf vf_erf(vf v) { return Sleef_erff4_u10neonvfpv4(v); }
NK_INLINE vf vf_tanh(vf v) { return Sleef_tanhf4_u10neonvfpv4(v); }
#  else
NK_INLINE vf vf_exp(vf v) { return Sleef_expf4_u10neon(v); }
NK_INLINE vf vf_erf(vf v) { return Sleef_erff4_u10neon(v); }
NK_INLINE vf vf_tanh(vf v) { return Sleef_tanhf4_u10neon(v); }
#  endif
#else
NK_INLINE vf vf_exp(vf v) { NK_LANES(expf); }
NK_INLINE vf vf_erf(vf v) { NK_LANES(erff); }
NK_INLINE vf vf_tanh(vf v) { NK_LANES(tanhf); }
#endif

#endif
