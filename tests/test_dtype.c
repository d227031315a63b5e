/*
 * The element types of the kernel layer: the scalar conversions of
 * kernels/cvt.h against an independent fp64 reference (exhaustive over
 * every fp16 and bf16 bit pattern, every tie of both formats, the edges of
 * both ranges, fp32 denormals, NaN payloads, and millions of random fp32
 * bit patterns), and the per-dtype tables of the dispatcher. The vector
 * conversions are checked against these through every table's kernels in
 * test_kernels.c.
 */
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dispatch/dispatch.h"
#include "kernels/cvt.h"
#include "nk_test.h"

/* ------------------------------------------------------ fp64 reference */

/* A binary format of 16 bits: mbits fraction bits, exponent bias, and the
 * exponent range of its normal numbers. */
typedef struct fmt {
    const char *name;
    int mbits, bias, emin, emax;
} fmt;
static const fmt F16 = {"fp16", 10, 15, -14, 15};
static const fmt BF16 = {"bf16", 7, 127, -126, 127};

/* the value of bits h, in double, from the definition of the format */
static double ref_decode(const fmt *f, uint16_t h)
{
    const int sign = h >> 15, e = (h & 0x7fff) >> f->mbits, m = h & ((1 << f->mbits) - 1);
    const int emax_field = (1 << (15 - f->mbits)) - 1;
    double v;
    if (e == emax_field)
        v = m ? NAN : INFINITY;
    else if (e == 0)
        v = ldexp((double)m, f->emin - f->mbits);
    else
        v = ldexp(1.0 + ldexp((double)m, -f->mbits), e - f->bias);
    return sign ? -v : v;
}

/* v (an fp32 value, exact in double) rounded to nearest even in the format,
 * by scaling to its ulp and nearbyint; non-NaN only */
static uint16_t ref_round(const fmt *f, double v)
{
    const uint16_t sign = signbit(v) ? 0x8000u : 0u;
    const uint16_t inf = (uint16_t)(((1u << (15 - f->mbits)) - 1u) << f->mbits);
    double a = fabs(v);
    if (isinf(a))
        return sign | inf;
    int e = a == 0.0 ? f->emin : ilogb(a);
    if (e < f->emin)
        e = f->emin;
    const double ulp = ldexp(1.0, e - f->mbits);
    const double r = nearbyint(a / ulp) * ulp; /* the default mode: ties to even */
    if (r >= ldexp(1.0, f->emax + 1))
        return sign | inf;
    if (r == 0.0)
        return sign;
    const int E = ilogb(r);
    if (E < f->emin) /* denormal: exponent field 0 */
        return sign | (uint16_t)(r / ldexp(1.0, f->emin - f->mbits));
    const double frac = r / ldexp(1.0, E - f->mbits) - ldexp(1.0, f->mbits);
    return sign | (uint16_t)((unsigned)(E + f->bias) << f->mbits) | (uint16_t)frac;
}

/* NaN: the sign, the quiet bit, the top fraction bits of the payload */
static uint16_t ref_nan(const fmt *f, uint32_t x)
{
    const uint16_t sign = (uint16_t)((x >> 16) & 0x8000u);
    const uint16_t inf = (uint16_t)(((1u << (15 - f->mbits)) - 1u) << f->mbits);
    const uint16_t quiet = (uint16_t)(1u << (f->mbits - 1));
    const uint16_t top = (uint16_t)((x & 0x7fffffu) >> (23 - f->mbits));
    return sign | inf | quiet | top;
}

static uint16_t ref_from_f32(const fmt *f, uint32_t x)
{
    const float v = nk_bits_f32(x);
    return isnan(v) ? ref_nan(f, x) : ref_round(f, (double)v);
}

static uint16_t cvt_to(const fmt *f, float v)
{
    return f == &F16 ? nk_f32_to_f16(v) : nk_f32_to_bf16(v);
}

static float cvt_from(const fmt *f, uint16_t h)
{
    return f == &F16 ? nk_f16_to_f32(h) : nk_bf16_to_f32(h);
}

static int nfail;

static void check_to(const fmt *f, uint32_t x, const char *what)
{
    const uint16_t got = cvt_to(f, nk_bits_f32(x)), want = ref_from_f32(f, x);
    if (got != want) {
        if (nfail++ < 10)
            print_error("%s %s: fp32 0x%08x (%a) -> 0x%04x, expected 0x%04x\n", f->name, what, x,
                        (double)nk_bits_f32(x), got, want);
    }
}

/* -------------------------------------------------------------- tests */

/* Every 16-bit pattern: the fp32 value is the format's value (NaN: quiet,
 * payload kept for fp16, the bits shifted for bf16), and back to 16 bits
 * gives the pattern (NaN: quiet). */
static void exhaustive16(const fmt *f)
{
    nfail = 0;
    for (uint32_t h = 0; h < 0x10000u; h++) {
        const float v = cvt_from(f, (uint16_t)h);
        const double want = ref_decode(f, (uint16_t)h);
        const uint32_t vb = nk_f32_bits(v);
        int ok;
        if (isnan(want)) {
            /* the fraction moved up, made quiet (fp16), or the bits as they are (bf16) */
            const uint32_t up = (h & 0x8000u) << 16 | 0x7f800000u | (h & ((1u << f->mbits) - 1u))
                                                                        << (23 - f->mbits);
            ok = isnan(v) && vb == (f == &F16 ? (up | 0x00400000u) : up);
        } else {
            ok = (double)v == want && !signbit(v) == !signbit(want);
        }
        const uint16_t back = cvt_to(f, v);
        const uint16_t quiet = (uint16_t)(1u << (f->mbits - 1));
        if (isnan(want))
            ok &= back == (uint16_t)(h | quiet);
        else
            ok &= back == h;
        if (!ok && nfail++ < 10)
            print_error("%s 0x%04x: fp32 %a (0x%08x), expected %a; back 0x%04x\n", f->name, h,
                        (double)v, vb, want, back);
    }
    assert_int_equal(nfail, 0);
}

static void test_f16_exhaustive(void **state)
{
    (void)state;
    exhaustive16(&F16);
}

static void test_bf16_exhaustive(void **state)
{
    (void)state;
    exhaustive16(&BF16);
}

/* fp32 -> 16 bits: every tie of the format (the midpoint of two neighbours,
 * denormals and the overflow threshold included) and one fp32 ulp on each
 * side of it, the edges of the range, fp32 denormals, zeros, infinities,
 * NaN payloads; both signs. */
static void edges(const fmt *f)
{
    nfail = 0;
    const uint32_t fmax = ((1u << (15 - f->mbits)) - 2u) << f->mbits | ((1u << f->mbits) - 1u);
    for (uint32_t h = 0; h <= fmax; h++) {
        /* the midpoint of h and h + 1 (h + 1 may be Inf: the overflow threshold) */
        const double lo = ref_decode(f, (uint16_t)h);
        const double hi = h < fmax ? ref_decode(f, (uint16_t)(h + 1))
                                   : lo + ldexp(1.0, f->emax - f->mbits);
        const float mid = (float)((lo + hi) / 2); /* exact: one more bit than the format */
        assert_true((double)mid == (lo + hi) / 2);
        const float vs[3] = {mid, nextafterf(mid, 0.0f), nextafterf(mid, INFINITY)};
        for (int k = 0; k < 3; k++)
            for (int s = 0; s < 2; s++)
                check_to(f, nk_f32_bits(vs[k]) ^ (s ? 0x80000000u : 0u), "tie");
        check_to(f, nk_f32_bits((float)lo), "exact");
        check_to(f, nk_f32_bits((float)lo) | 0x80000000u, "exact");
    }
    static const uint32_t special[] = {
        0x00000000u, 0x00000001u, 0x00000002u, 0x003fffffu, 0x00400000u, 0x00400001u,
        0x007fffffu, 0x00800000u, 0x00800001u, 0x7f7fffffu, 0x7f800000u, 0x7f800001u,
        0x7fa00001u, 0x7fbfffffu, 0x7fc00000u, 0x7fc00001u, 0x7fd55555u, 0x7fffe000u,
        0x7fffffffu, 0x477fe000u, 0x477fefffu, 0x477ff000u, 0x477ff001u, 0x47800000u,
        0x33000000u, 0x33000001u, 0x32ffffffu, 0x33800000u, 0x33c00000u, 0x387fc000u,
        0x387fe000u, 0x387fffffu, 0x38800000u, 0x7f7f8000u, 0x7f7f7fffu, 0x7f7f8001u,
        0x3f800000u, 0x3f808000u, 0x3f818000u, 0x3f800001u, 0x3f807fffu, 0x00010000u,
        0x00018000u, 0x00008000u, 0x0000ffffu, 0x00ff8000u, 0x00808000u,
    };
    for (size_t i = 0; i < sizeof special / sizeof special[0]; i++)
        for (int s = 0; s < 2; s++)
            check_to(f, special[i] ^ (s ? 0x80000000u : 0u), "edge");
    assert_int_equal(nfail, 0);
}

static void test_f16_edges(void **state)
{
    (void)state;
    edges(&F16);
    /* the values the contract names */
    assert_int_equal(nk_f32_to_f16(65504.0f), 0x7bff);
    assert_int_equal(nk_f32_to_f16(65519.996f), 0x7bff);
    assert_int_equal(nk_f32_to_f16(65520.0f), 0x7c00);
    assert_int_equal(nk_f32_to_f16(-INFINITY), 0xfc00);
    assert_int_equal(nk_f32_to_f16(0x1p-24f), 0x0001);
    assert_int_equal(nk_f32_to_f16(0x1p-25f), 0x0000);
    assert_int_equal(nk_f32_to_f16(0x1.8p-24f), 0x0002); /* tie to even */
    assert_int_equal(nk_f32_to_f16(-0.0f), 0x8000);
    assert_int_equal(nk_f32_to_f16(nk_bits_f32(0xffc12345u)), 0xfe09);
}

static void test_bf16_edges(void **state)
{
    (void)state;
    edges(&BF16);
    assert_int_equal(nk_f32_to_bf16(FLT_MAX), 0x7f80);
    assert_int_equal(nk_f32_to_bf16(nk_bits_f32(0x7f7f7fffu)), 0x7f7f);
    assert_int_equal(nk_f32_to_bf16(nk_bits_f32(0x007fffffu)), 0x0080); /* denormal, not flushed */
    assert_int_equal(nk_f32_to_bf16(nk_bits_f32(0x00018000u)), 0x0002);
    assert_int_equal(nk_f32_to_bf16(nk_bits_f32(0x807fffffu)), 0x8080);
    assert_int_equal(nk_f32_to_bf16(nk_bits_f32(0x7f800001u)), 0x7fc0);
    assert_int_equal(nk_f32_to_bf16(nk_bits_f32(0xffc12345u)), 0xffc1);
}

/* random fp32 bit patterns, every class of value alike */
static void test_random_bits(void **state)
{
    (void)state;
    nkt_rng rng;
    nkt_seed(&rng, 51);
    nfail = 0;
    for (int i = 0; i < 1 << 21; i++) {
        const uint64_t r = nkt_next(&rng);
        check_to(&F16, (uint32_t)r, "random");
        check_to(&BF16, (uint32_t)(r >> 32), "random");
    }
    assert_int_equal(nfail, 0);
}

/* ----------------------------------------------------------- dispatch */

static void test_dtype_tables(void **state)
{
    (void)state;
    static const unsigned dts[] = {NK_DTYPE_F32, NK_DTYPE_F16, NK_DTYPE_BF16};
    assert_ptr_equal(nk_kernels_current_dtype(NK_DTYPE_F32), nk_kernels_current());
    assert_null(nk_kernels_current_dtype(3));
    for (int isa = 0; isa <= NK_ISA_NEON; isa++) {
        const nk_kernels *f = nk_kernels_for((nk_isa)isa);
        assert_ptr_equal(nk_kernels_for_dtype((nk_isa)isa, NK_DTYPE_F32), f);
        assert_null(nk_kernels_for_dtype((nk_isa)isa, 3));
        assert_null(nk_kernels_for_dtype((nk_isa)isa, ~0u));
        for (size_t d = 0; d < 3; d++) {
            const nk_kernels *t = nk_kernels_for_dtype((nk_isa)isa, dts[d]);
            if (!t) {
                /* only an ARMv7 NEON without the fp16 conversions lacks one */
                assert_true(!f || (isa == NK_ISA_NEON && dts[d] == NK_DTYPE_F16));
                continue;
            }
            assert_non_null(f);
            assert_int_equal(t->isa, isa);
            assert_int_equal(t->dtype, dts[d]);
            assert_true(t->moments_rows && t->moments_cols && t->sumsq_rows && t->norm_rows &&
                        t->norm_cols && t->norm_affine && t->norm_short);
            /* no x or y: the fp32 table's */
            assert_ptr_equal(t->inv_scale, f->inv_scale);
            assert_ptr_equal(t->inv_std, f->inv_std);
            if (d) { /* the entries that read x or y are the dtype's own */
                assert_ptr_not_equal(t->norm_rows, f->norm_rows);
                assert_ptr_not_equal(t->moments_rows, f->moments_rows);
                assert_ptr_not_equal(t->norm_short, f->norm_short);
            }
        }
    }
    assert_null(nk_kernels_for_dtype((nk_isa)(NK_ISA_NEON + 1), NK_DTYPE_F16));
    for (size_t d = 0; d < 3; d++) {
        const nk_kernels *t = nk_kernels_current_dtype(dts[d]);
        assert_non_null(t);
        assert_int_equal(t->dtype, dts[d]);
        assert_true(t->isa <= nk_get_isa());
        assert_ptr_equal(t, nk_kernels_for_dtype(t->isa, dts[d]));
    }
    /* the ISA in use holds for every dtype */
    const nk_isa saved = nk_get_isa();
    assert_int_equal(nk_set_isa(NK_ISA_SCALAR), NK_OK);
    for (size_t d = 0; d < 3; d++)
        assert_ptr_equal(nk_kernels_current_dtype(dts[d]),
                         nk_kernels_for_dtype(NK_ISA_SCALAR, dts[d]));
    assert_int_equal(nk_set_isa(saved), NK_OK);
}

/* the fp64 fallbacks read the dtype */
static void test_f64_fallbacks(void **state)
{
    (void)state;
    const float xf[5] = {1.5f, -2.25f, 3.0f, 1e4f, -0.5f};
    uint16_t xh[5], xb[5];
    for (int i = 0; i < 5; i++) {
        xh[i] = nk_f32_to_f16(xf[i]);
        xb[i] = nk_f32_to_bf16(xf[i]);
    }
    const void *xs[3] = {xf, xh, xb};
    for (unsigned d = 0; d < 3; d++) {
        double s = 0.0, mean = 0.0, m2 = 0.0;
        for (int i = 0; i < 5; i++) {
            const double v = d == 0 ? xf[i] : d == 1 ? nk_f16_to_f32(xh[i]) : nk_bf16_to_f32(xb[i]);
            s += v * v;
            mean += v / 5.0;
        }
        for (int i = 0; i < 5; i++) {
            const double v = d == 0 ? xf[i] : d == 1 ? nk_f16_to_f32(xh[i]) : nk_bf16_to_f32(xb[i]);
            m2 += (v - mean) * (v - mean);
        }
        assert_true(fabs(nk_sumsq_f64(d, xs[d], 5) - s) <= 1e-12 * s);
        nk_moments mo;
        nk_moments_f64(d, xs[d], 5, 1, &mo);
        assert_true(mo.count == 5.0 && fabs(mo.mean - mean) <= 1e-12 * fabs(mean));
        assert_true(fabs(mo.m2 - m2) <= 1e-12 * m2);
        float m, r;
        nk_short_stats_f64(d, xs[d], 5, 0.0f, 0, &m, &r);
        assert_true(m == (float)mean && r == (float)(1.0 / sqrt(m2 / 5.0)));
        nk_short_stats_f64(d, xs[d], 5, 0.0f, 1, &m, &r);
        assert_true(m == 0.0f && r == (float)(1.0 / sqrt(s / 5.0)));
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_f16_exhaustive), cmocka_unit_test(test_bf16_exhaustive),
        cmocka_unit_test(test_f16_edges),      cmocka_unit_test(test_bf16_edges),
        cmocka_unit_test(test_random_bits),    cmocka_unit_test(test_dtype_tables),
        cmocka_unit_test(test_f64_fallbacks),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
