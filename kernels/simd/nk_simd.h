/*
 * The vector kernels' vocabulary (SLEEF's helper-header pattern): the
 * algorithm files of kernels/simd (moments.c, normalize.c, short.c,
 * backward.c) are written once against it and compiled once per ISA, each
 * time against the vocabulary header of the target, and once per element
 * type of x and y
 * (NK_DT, kernels/dtype.h: fp32, fp16, bf16):
 *
 *   kernels/x86/nk_x86.h   AVX2 (8 lanes), AVX-512 (16 lanes, also built
 *                          against SIMDe for the tests)
 *   kernels/arm/nk_neon.h  NEON, AArch64 and 32-bit ARMv7 (4 lanes)
 *
 * A vocabulary header defines, with the same semantics on every target:
 *
 *   NK_VL, vf              lanes per vector (even), the fp32 vector type
 *   NK_NREGS               vector registers of the target (16 or 32): the
 *                          algorithms size their unrolling by it
 *   NK_FN(name), NK_INIT   per-ISA, per-dtype symbol names (fp32 without a
 *                          dtype suffix), the table filler the dispatcher
 *                          calls
 *   vf_zero set1 loadu storeu add sub mul div sqrt fma relu leaky
 *   vf_load_n / vf_store_n the first n (0..NK_VL) lanes, nothing read or
 *                          written past them; other lanes load as 0
 *   vf_sub_n, vf_first     lane-masked subtract, blend of the first n lanes
 *   vf_hsum                sum of the lanes
 *   vf_fold_p / vf_fold_q / vf_sum_folded
 *                          transposing row sums (see vf_fold_rows below)
 *   vf_nonfinite           bit r set where lane r is infinite or NaN
 *   vf_store_b(p, v, n)    the first n (1..NK_VL) lanes, integral values in
 *                          [-128, 255], as bytes (their low 8 bits)
 *   vf_rcp_sqrt            1 / sqrt(v), both operations correctly rounded
 *   vf_exp / vf_erf / vf_tanh
 *                          SLEEF's 1.0-ulp functions (NK_HAVE_SLEEF), or
 *                          libm's per lane without SLEEF
 *   NK_STREAM(ep), vf_stream, nk_stream_fence()
 *                          non-temporal stores: whether ep asks for them
 *                          (0 where the target has none), the store, and
 *                          the fence after the last of a call
 *   nk_prefetch(p)         software prefetch into L1 of the byte at p (never
 *                          faults)
 *   NK_IEEE_VDIV           1 where vf_div and vf_sqrt are correctly rounded
 *                          vector instructions (the inv_scale kernel is
 *                          compiled only there)
 *   NK_HAVE_INV_STD        1 where the architecture has an inv_std kernel
 *                          of its own (fp64, outside this vocabulary):
 *                          NK_FN(kernels_init_inv_std) fills it
 *
 * The elements of x and y (xt, the unit's storage type: float or uint16_t)
 * go in and out of vf only through the element-typed vocabulary; everything
 * else (parameters, statistics, scratch arrays) is float and uses vf_*:
 *
 *   vx_loadu(p)            NK_VL elements from p (any alignment of xt),
 *                          widened exactly to fp32
 *   vx_load_n(p, n)        the first n (0..NK_VL) elements, nothing read
 *                          past them; other lanes 0
 *   vx_storeu(p, v)        NK_VL lanes rounded to xt (to nearest even,
 *                          kernels/cvt.h, bit for bit) into p
 *   vx_store_n(p, v, n)    the first n (0..NK_VL) lanes, nothing written
 *                          past them
 *   vx_stream(p, v)        vx_storeu, non-temporal: p aligned to NK_XBYTES
 *   vx_loadu2 / vx_storeu2 / vx_stream2
 *                          two consecutive vectors at once (below)
 *   vx_loadu_vecs(p, v, V) V consecutive vectors, in pairs
 *   NK_XBYTES              bytes of NK_VL elements (streaming alignment)
 *   NK_XLINE               elements per 64-byte cache line (prefetch step)
 *   nk_xload(p)            one element as float (kernels/dtype.h)
 *
 * For fp32 they are the vf_* operations above (defined here). For a 16-bit
 * type they are composed here from what the vocabulary header provides:
 *
 *   vh                     NK_VL 16-bit elements (an integer vector)
 *   vh_loadu / vh_load_n / vh_storeu / vh_store_n / vh_stream
 *                          the moves, with the semantics of the vx_ ones
 *                          (masked lanes 0, nothing touched past n)
 *   vh_to_vf, vf_to_vh     the conversions of kernels/cvt.h, bit for bit
 *
 * so a new element type is added once per architecture; the algorithms do
 * not change.
 */
#ifndef NK_KERNELS_SIMD_NK_SIMD_H
#define NK_KERNELS_SIMD_NK_SIMD_H

#include <math.h>
#include <stdint.h>
#include <string.h>

#include "kernels/dtype.h"
#include "kernels/kernels.h"

#if defined(NK_HAVE_SLEEF) && NK_HAVE_SLEEF
#  define NK_USE_SLEEF 1
#else
#  define NK_USE_SLEEF 0
#endif

#define NK_INLINE static inline __attribute__((always_inline))

/* The body of a vocabulary function of vf v: fn on each lane, through
 * memory (libm without SLEEF, scalar VFP square roots on ARMv7). */
#define NK_LANES(fn)                                                                              \
    do {                                                                                          \
        float t_[NK_VL];                                                                          \
        vf_storeu(t_, v);                                                                         \
        for (int i_ = 0; i_ < NK_VL; i_++)                                                        \
            t_[i_] = fn(t_[i_]);                                                                  \
        return vf_loadu(t_);                                                                      \
    } while (0)

#if defined(__x86_64__) || defined(__i386__)
#  include "kernels/x86/nk_x86.h"
#elif defined(__ARM_NEON) || defined(__ARM_NEON__) || defined(__aarch64__)
#  include "kernels/arm/nk_neon.h"
#else
#  error "kernels/simd: no vocabulary header for this target"
#endif

/*
 * Transposing row sums of NK_VL vectors v[r] into one whose lane r is the
 * sum of the lanes of v[r]: log2(NK_VL) levels, each combining pairs of
 * vectors; every row's lanes are added by the same pairwise tree (lane i +
 * lane i + NK_VL / 2, then + NK_VL / 4, ..., + 1) whatever its position, so
 * a row's sum depends on that row alone. The first level,
 * w[i] = vf_fold_rows(v[i], v[i + NK_VL / 2]) = vf_fold_p + vf_fold_q
 * ([a.lo | b.hi] + [a.hi | b.lo]), is the caller's, so that it can fold rows
 * as it goes and reuse the parts; vf_sum_folded(w) does the rest on the
 * NK_VL / 2 folded vectors.
 */
NK_INLINE vf vf_fold_rows(vf a, vf b) { return vf_add(vf_fold_p(a, b), vf_fold_q(a, b)); }

/* The fused activation: the same expressions as nk_act_ref, lane-wise. */
#define NK_SQRT1_2 0.70710678118654752f
#define NK_GELU_K 0.7978845608028654f
NK_INLINE vf act_apply(vf v, const int act, vf alpha)
{
    const vf one = vf_set1(1.0f), half = vf_set1(0.5f);
    switch (act) {
    case NK_ACT_RELU:
        return vf_relu(v);
    case NK_ACT_LEAKY_RELU:
        return vf_leaky(v, alpha);
    case NK_ACT_SILU:
        return vf_div(v, vf_add(one, vf_exp(vf_sub(vf_zero(), v))));
    case NK_ACT_GELU_ERF:
        return vf_mul(vf_mul(half, v), vf_add(one, vf_erf(vf_mul(v, vf_set1(NK_SQRT1_2)))));
    case NK_ACT_GELU_TANH: {
        vf cube = vf_mul(vf_mul(vf_mul(vf_set1(0.044715f), v), v), v);
        vf inner = vf_mul(vf_set1(NK_GELU_K), vf_add(v, cube));
        return vf_mul(vf_mul(half, v), vf_add(one, vf_tanh(inner)));
    }
    default:
        return v;
    }
}

/* x and y: the element-typed loads and stores (16-bit types: the vocabulary
 * header's) */
#if NK_DT == NK_DTYPE_F32
/* the vf_* functions themselves (macros: fp32 compiles as before) */
#  define vx_loadu vf_loadu
#  define vx_load_n vf_load_n
#  define vx_storeu vf_storeu
#  define vx_store_n vf_store_n
#  define vx_stream vf_stream
#else
NK_INLINE vf vx_loadu(const xt *p) { return vh_to_vf(vh_loadu(p)); }
NK_INLINE vf vx_load_n(const xt *p, size_t n) { return vh_to_vf(vh_load_n(p, n)); }
NK_INLINE void vx_storeu(xt *p, vf v) { vh_storeu(p, vf_to_vh(v)); }
NK_INLINE void vx_store_n(xt *p, vf v, size_t n) { vh_store_n(p, vf_to_vh(v), n); }
NK_INLINE void vx_stream(xt *p, vf v) { vh_stream(p, vf_to_vh(v)); }
#endif
/* Two consecutive vectors (2 * NK_VL elements) in one operation: the same
 * values as two vx_loadu / vx_storeu / vx_stream, where the vocabulary has
 * cheaper pair conversions (NK_HAVE_VH2: vh2_loadu, vh2_storeu, vh2_stream;
 * AVX-512 bf16 widens 32 elements with one permute and two unpacks and
 * narrows them with one vcvtne2ps2bf16 and one denormal test). */
#if NK_DT != NK_DTYPE_F32 && defined(NK_HAVE_VH2)
#  define vx_loadu2 vh2_loadu
#  define vx_storeu2 vh2_storeu
#  define vx_stream2 vh2_stream
#else
NK_INLINE void vx_loadu2(const xt *p, vf *v0, vf *v1)
{
    *v0 = vx_loadu(p);
    *v1 = vx_loadu(p + NK_VL);
}
NK_INLINE void vx_storeu2(xt *p, vf v0, vf v1)
{
    vx_storeu(p, v0);
    vx_storeu(p + NK_VL, v1);
}
NK_INLINE void vx_stream2(xt *p, vf v0, vf v1)
{
    vx_stream(p, v0);
    vx_stream(p + NK_VL, v1);
}
#endif
/* V consecutive vectors (V a constant after inlining), in pairs */
NK_INLINE void vx_loadu_vecs(const xt *p, vf *v, const int V)
{
    int i = 0;
    for (; i + 2 <= V; i += 2)
        vx_loadu2(p + (size_t)i * NK_VL, &v[i], &v[i + 1]);
    if (i < V)
        v[i] = vx_loadu(p + (size_t)i * NK_VL);
}
#define NK_XBYTES (NK_VL * sizeof(xt))
#define NK_XLINE (64 / sizeof(xt))

/* Streaming stores need a destination aligned to NK_XBYTES. */
NK_INLINE int nk_aligned(const xt *p) { return ((uintptr_t)p % NK_XBYTES) == 0; }
/* Elements before p reaches that alignment (p must be xt-aligned). */
NK_INLINE size_t nk_head(const xt *p)
{
    size_t mis = ((uintptr_t)p % NK_XBYTES) / sizeof(xt);
    return mis ? NK_VL - mis : 0;
}

/* moments.c fills the moments entries, short.c norm_short, backward.c the
 * bwd_* entries, fusion.c those of the fused LayerNorm / RMSNorm,
 * normalize.c the rest and calls the others from NK_INIT. */
void NK_INIT(nk_kernels *k);
void NK_FN(kernels_init_moments)(nk_kernels *k);
void NK_FN(kernels_init_short)(nk_kernels *k);
void NK_FN(kernels_init_backward)(nk_kernels *k);
void NK_FN(kernels_init_fusion)(nk_kernels *k);
#if NK_HAVE_INV_STD
void NK_FN(kernels_init_inv_std)(nk_kernels *k);
#endif

#endif
