/*
 * Runtime dispatch: which ISA is picked by default, NORMKIT_ISA, nk_set_isa.
 * Runs on every architecture; tests/meson.build also runs it with
 * NORMKIT_ISA=scalar and with an unknown name. The first test must run
 * before anything calls nk_set_isa.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "dispatch/dispatch.h"
#include "nk_test.h"

#define NUM_ISA 4
static const nk_isa all_isa[NUM_ISA] = {NK_ISA_SCALAR, NK_ISA_AVX2, NK_ISA_AVX512, NK_ISA_NEON};

/* The ISA the library must pick without an override: the highest supported. */
static nk_isa best_supported(void)
{
    nk_isa best = NK_ISA_SCALAR;
    for (int i = 0; i < NUM_ISA; i++)
        if (nk_isa_supported(all_isa[i]))
            best = all_isa[i];
    return best;
}

/* NORMKIT_ISA when it names an ISA this machine and build run, else -1. */
static int env_isa(void)
{
    const char *env = getenv("NORMKIT_ISA");
    if (!env || !*env)
        return -1;
    for (int i = 0; i < NUM_ISA; i++)
        if (!strcmp(env, nk_isa_name(all_isa[i])))
            return nk_isa_supported(all_isa[i]) ? (int)all_isa[i] : -1;
    return -1;
}

static void default_isa(void **state)
{
    (void)state;
    int forced = env_isa();
    nk_isa want = forced >= 0 ? (nk_isa)forced : best_supported();
    assert_int_equal(nk_get_isa(), want);
    assert_int_equal(nk_kernels_current()->isa, want);
    assert_ptr_equal(nk_kernels_current(), nk_kernels_for(want));
    /* Scalar is always there, and the default is never below what the CPU runs. */
    assert_true(nk_isa_supported(NK_ISA_SCALAR));
    if (forced < 0 && best_supported() != NK_ISA_SCALAR)
        assert_int_not_equal(nk_get_isa(), NK_ISA_SCALAR);
}

/* The architecture's own ISAs; the others are never supported. */
static void isa_per_architecture(void **state)
{
    (void)state;
#if defined(__aarch64__)
#  if NK_HAVE_NEON
    /* NEON is baseline on AArch64: compiled in, supported and the default. */
    assert_true(nk_isa_supported(NK_ISA_NEON));
    assert_non_null(strstr(nk_isa_reason(NK_ISA_NEON), "baseline"));
    if (env_isa() < 0)
        assert_int_equal(nk_get_isa(), NK_ISA_NEON);
#  else
    assert_false(nk_isa_supported(NK_ISA_NEON));
    assert_non_null(strstr(nk_isa_reason(NK_ISA_NEON), "not compiled"));
#  endif
#endif
#if defined(__arm__) && NK_HAVE_NEON
    /* ARMv7: NEON follows AT_HWCAP and the reason says so. */
    assert_non_null(strstr(nk_isa_reason(NK_ISA_NEON), "AT_HWCAP"));
    if (nk_isa_supported(NK_ISA_NEON) && env_isa() < 0)
        assert_int_equal(nk_get_isa(), NK_ISA_NEON);
#endif
#if defined(__aarch64__) || defined(__arm__)
    assert_false(nk_isa_supported(NK_ISA_AVX2));
    assert_false(nk_isa_supported(NK_ISA_AVX512));
#endif
#if defined(__x86_64__) || defined(__i386__)
    assert_false(nk_isa_supported(NK_ISA_NEON));
    assert_non_null(strstr(nk_isa_reason(NK_ISA_NEON), "not compiled"));
#endif
    /* AVX-512 kernels are only ever used on top of AVX2. */
    if (nk_isa_supported(NK_ISA_AVX512))
        assert_true(nk_isa_supported(NK_ISA_AVX2));
}

/* Every table that is available is complete and labelled with its ISA. */
static void tables_complete(void **state)
{
    (void)state;
    for (int i = 0; i < NUM_ISA; i++) {
        const nk_kernels *k = nk_kernels_for(all_isa[i]);
        assert_int_equal(k != NULL, nk_isa_supported(all_isa[i]) != 0);
        if (!k)
            continue;
        assert_int_equal(k->isa, all_isa[i]);
        assert_non_null(k->moments_rows);
        assert_non_null(k->moments_cols);
        assert_non_null(k->sumsq_rows);
        assert_non_null(k->norm_rows);
        assert_non_null(k->norm_cols);
        assert_non_null(k->norm_affine);
    }
    assert_null(nk_kernels_for((nk_isa)NUM_ISA));
    assert_null(nk_kernels_for((nk_isa)-1));
}

static void set_unsupported_refused(void **state)
{
    (void)state;
    const nk_isa before = nk_get_isa();
    int refused = 0;
    for (int i = 0; i < NUM_ISA; i++) {
        if (nk_isa_supported(all_isa[i]))
            continue;
        assert_int_equal(nk_set_isa(all_isa[i]), NK_ERR_UNSUPPORTED);
        assert_non_null(strstr(nk_last_error(), nk_isa_name(all_isa[i])));
        assert_non_null(strstr(nk_last_error(), nk_isa_reason(all_isa[i])));
        assert_int_equal(nk_get_isa(), before);
        refused++;
    }
    /* No machine runs all of AVX2, AVX-512 and NEON. */
    assert_true(refused >= 1);

    /* Values outside the enum are refused too, and say so. */
    assert_int_equal(nk_set_isa((nk_isa)NUM_ISA), NK_ERR_UNSUPPORTED);
    assert_non_null(strstr(nk_last_error(), "unknown"));
    assert_int_equal(nk_set_isa((nk_isa)-1), NK_ERR_UNSUPPORTED);
    assert_non_null(strstr(nk_last_error(), "unknown"));
    assert_int_equal(nk_get_isa(), before);
}

/* Each supported ISA can be selected and then computes: moments of a
 * shifted ramp and a LayerNorm row, against values worked out by hand. */
static void set_each_supported(void **state)
{
    (void)state;
    const nk_isa before = nk_get_isa();
    float x[1000];
    for (int i = 0; i < 1000; i++)
        x[i] = 2000.0f + (float)(i % 10); /* mean 2004.5, population var 8.25 */
    for (int i = 0; i < NUM_ISA; i++) {
        if (!nk_isa_supported(all_isa[i]))
            continue;
        /* a failing call first, so that success has to clear the message */
        (void)nk_set_isa((nk_isa)NUM_ISA);
        assert_int_equal(nk_set_isa(all_isa[i]), NK_OK);
        assert_string_equal(nk_last_error(), "");
        assert_int_equal(nk_get_isa(), all_isa[i]);
        assert_ptr_equal(nk_kernels_current(), nk_kernels_for(all_isa[i]));

        nk_moments m;
        assert_int_equal(nk_moments_compute(x, 1000, &m), NK_OK);
        assert_true(m.count == 1000.0);
        assert_true(fabs(m.mean - 2004.5) < 1e-9);
        /* fp32 inside chunks: a few ulp of fp32 relative to the variance */
        assert_true(fabs(m.m2 / 1000.0 - 8.25) < 8.25e-6);

        /* constant row: mean is the value, m2 exactly 0 */
        float c[37];
        for (int j = 0; j < 37; j++)
            c[j] = 1234.0f;
        assert_int_equal(nk_moments_compute(c, 37, &m), NK_OK);
        assert_true(m.mean == 1234.0);
        assert_true(m.m2 == 0.0);
    }
    assert_int_equal(nk_set_isa(before), NK_OK);
    assert_int_equal(nk_get_isa(), before);
}

/* Forcing scalar always works and routes every kernel to the scalar table. */
static void force_scalar(void **state)
{
    (void)state;
    const nk_isa before = nk_get_isa();
    assert_int_equal(nk_set_isa(NK_ISA_SCALAR), NK_OK);
    assert_int_equal(nk_get_isa(), NK_ISA_SCALAR);
    const nk_kernels *k = nk_kernels_current();
    assert_int_equal(k->isa, NK_ISA_SCALAR);
    assert_ptr_equal(k, nk_kernels_for(NK_ISA_SCALAR));
    const nk_kernels *best = nk_kernels_for(best_supported());
    if (best_supported() != NK_ISA_SCALAR)
        assert_true(k->moments_rows != best->moments_rows || k->moments_cols != best->moments_cols ||
                    k->sumsq_rows != best->sumsq_rows || k->norm_rows != best->norm_rows ||
                    k->norm_cols != best->norm_cols || k->norm_affine != best->norm_affine);
    assert_int_equal(nk_set_isa(before), NK_OK);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(default_isa), /* first: before any nk_set_isa */
        cmocka_unit_test(isa_per_architecture),
        cmocka_unit_test(tables_complete),
        cmocka_unit_test(set_unsupported_refused),
        cmocka_unit_test(set_each_supported),
        cmocka_unit_test(force_scalar),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
