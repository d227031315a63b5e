/*
 * Scalar conversions between fp32 and the 16-bit element types, portable
 * integer code (no _Float16 / __bf16: gcc 12 on x86, AArch64 and ARMv7 alike).
 * The reference kernels, the vector kernels' scalar parts and the tests use
 * these; every vector conversion (kernels/x86/nk_x86.h, kernels/arm/nk_neon.h)
 * gives their bits.
 *
 *   16 -> 32  exact. fp16: a NaN comes out quiet with its payload (what
 *             vcvtph2ps and fcvtl do); bf16: the bits shifted up, unchanged.
 *   32 -> 16  round to nearest even, as PyTorch and oneDNN: overflow to Inf
 *             where the format rounds past its largest finite value (fp16:
 *             |x| >= 65520; bf16: |x| >= 0x1.ffp127), Inf stays Inf, ±0
 *             keeps its sign, fp32 denormals and 16-bit denormals rounded
 *             correctly (nothing flushed), and a NaN stays NaN: quiet, with
 *             its sign and the top bits of its payload (vcvtps2ph, fcvtn,
 *             vcvtneps2bf16).
 */
#ifndef NK_KERNELS_CVT_H
#define NK_KERNELS_CVT_H

#include <stdint.h>
#include <string.h>

static inline uint32_t nk_f32_bits(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

static inline float nk_bits_f32(uint32_t u)
{
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

/* all three cases computed and one selected by masks, without branches,
 * so that loops over arrays vectorise */
static inline float nk_f16_to_f32(uint16_t h)
{
    const uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    const uint32_t e = (h >> 10) & 0x1fu, m = h & 0x3ffu;
    /* Inf, or NaN made quiet */
    const uint32_t special = sign | 0x7f800000u | (m << 13) | ((uint32_t)(m != 0) << 22);
    const uint32_t normal = sign | ((e + 112u) << 23) | (m << 13);
    /* ±0 and denormals, m * 2^-24: exact in fp32, and normal unless 0 */
    const uint32_t small = sign | nk_f32_bits((float)(int32_t)m * 0x1p-24f);
    const uint32_t is_special = 0u - (uint32_t)(e == 0x1fu), is_small = 0u - (uint32_t)(e == 0);
    return nk_bits_f32((special & is_special) | (small & is_small) |
                       (normal & ~(is_special | is_small)));
}

static inline uint16_t nk_f32_to_f16(float f)
{
    const uint32_t x = nk_f32_bits(f), a = x & 0x7fffffffu;
    const uint16_t sign = (uint16_t)((x >> 16) & 0x8000u);
    if (a > 0x7f800000u) /* NaN: quiet, top of the payload */
        return (uint16_t)(sign | 0x7e00u | ((a & 0x7fffffu) >> 13));
    if (a >= 0x477ff000u) /* 65520 and up (Inf included) round to Inf */
        return (uint16_t)(sign | 0x7c00u);
    if (a >= 0x38800000u) { /* fp16 normal: rebias, round at bit 13 */
        uint32_t r = a - (112u << 23);
        r += 0xfffu + ((r >> 13) & 1u);
        return (uint16_t)(sign | (r >> 13));
    }
    if (a <= 0x33000000u) /* at most 2^-25: to zero (the tie goes to even 0) */
        return sign;
    /* fp16 denormal: the significand in units of 2^-24, rounded to even */
    const uint32_t e = a >> 23, m = (a & 0x7fffffu) | 0x800000u;
    const uint32_t sh = 126u - e; /* 14..24 */
    const uint32_t q = m >> sh, rem = m & ((1u << sh) - 1u), half = 1u << (sh - 1u);
    return (uint16_t)(sign | (q + (rem > half || (rem == half && (q & 1u)))));
}

static inline float nk_bf16_to_f32(uint16_t h) { return nk_bits_f32((uint32_t)h << 16); }

static inline uint16_t nk_f32_to_bf16(float f)
{
    const uint32_t x = nk_f32_bits(f);
    if ((x & 0x7fffffffu) > 0x7f800000u) /* NaN: quiet, top of the payload */
        return (uint16_t)((x >> 16) | 0x40u);
    return (uint16_t)((x + 0x7fffu + ((x >> 16) & 1u)) >> 16);
}

#endif
