/*
 * checkasm-style kernel tests: every table the build has and the CPU runs
 * (nk_kernels_for of every nk_isa: AVX2, AVX-512, NEON), and the AVX-512
 * algorithm built against SIMDe so it runs on any AVX2 machine, is compared
 * with the scalar reference kernels over a sweep
 * of lengths, row counts, strides, misaligned pointers, activations and
 * streaming on/off, with guard zones around every output (and, for the
 * backward kernels, every array against an inaccessible page). Moments are also
 * checked against a float64 oracle, and the SEMANTICS.md section 4 cases run
 * on every table and, through the public API, on every ISA.
 *
 * Every element type: the tables of fp16 and bf16 (each ISA's, the emulated
 * AVX-512 ones, and with AVX512-BF16 the integer-rounding bf16 table beside
 * the dispatcher's) run the same sweeps against the reference kernels of
 * their dtype, the inputs rounded to the dtype (the float64 oracles see the
 * rounded values), guard zones in elements of the dtype, outputs within the
 * fp32 tolerance plus one ulp of the dtype (kernels/kernels.h); the number of
 * outputs that differ from the reference at all is printed per table.
 */
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>
#if defined(__arm__) && defined(__linux__)
#  include <sys/auxv.h>
#endif
#if defined(__x86_64__) || defined(__i386__)
#  include <cpuid.h>
#endif

#include "dispatch/dispatch.h"
#include "kernels/cvt.h"
#include "nk_test.h"
#include "ops/internal.h"

/*
 * Under qemu user emulation (the cross builds define NKT_EMULATED) this
 * suite runs some twenty times slower per table than natively. NKT_BIG(n) is
 * n natively and 0, the size left out, under emulation, for the normalize
 * sweeps' 65537-element rows: they reach no code that their other sizes do not
 * (norm_rows and norm_affine run a row as pairs of vectors, a vector and a
 * tail; norm_cols runs rows of more than four vectors the same way, two rows
 * at a time; the flat rows and the row tiles apply to rows under 256 elements
 * and four vectors only), and they were much of those sweeps' time (nearly
 * two thirds of norm_affine's elements). Sizes that cross a blocking of their
 * kernel (the moments' chunks and segments, norm_cols' row tiles) are swept
 * in full everywhere.
 */
#ifdef NKT_EMULATED
#  define NKT_BIG(n) 0
#else
#  define NKT_BIG(n) (n)
#endif

/*
 * The streaming passes (ep->stream = 1) of the norm_rows, norm_cols and
 * norm_affine sweeps. On ARM no table reads ep->stream: the NEON kernels
 * have no non-temporal stores (NK_STREAM(ep) is 0 in kernels/arm/nk_neon.h)
 * and the scalar kernels never look at it, so there a streaming pass runs the
 * code of the ordinary one again, on other data. Emulated ARM builds leave
 * those passes out; test_norm_inplace and test_norm_short still give
 * stream = 1 to every table there.
 */
#if defined(NKT_EMULATED) && (defined(__aarch64__) || defined(__arm__))
#  define NKT_STREAMS 1
#else
#  define NKT_STREAMS 2
#endif

#if defined(NKT_HAVE_EMU) && NKT_HAVE_EMU
void nk_kernels_init_avx512_emu(nk_kernels *k);
void nk_kernels_init_avx512_emu_bf16(nk_kernels *k); /* no fp16 copy: tests/meson.build */
#endif

/* ---------------------------------------------------------- element types */

#define NKT_NUM_DT 3
static const char *const dt_names[NKT_NUM_DT] = {"fp32", "fp16", "bf16"};
static size_t dt_size(unsigned dt) { return dt == NK_DTYPE_F32 ? 4 : 2; }

/* v rounded to the dtype (kernels/cvt.h) and back */
static float dt_round(unsigned dt, float v)
{
    switch (dt) {
    case NK_DTYPE_F16: return nk_f16_to_f32(nk_f32_to_f16(v));
    case NK_DTYPE_BF16: return nk_bf16_to_f32(nk_f32_to_bf16(v));
    default: return v;
    }
}

static void dt_round_all(unsigned dt, float *x, size_t n)
{
    for (size_t i = 0; i < n; i++)
        x[i] = dt_round(dt, x[i]);
}

/* element i of a dtype array, as float; and stored (rounded) */
static float dt_get(unsigned dt, const void *p, size_t i)
{
    switch (dt) {
    case NK_DTYPE_F16: return nk_f16_to_f32(((const uint16_t *)p)[i]);
    case NK_DTYPE_BF16: return nk_bf16_to_f32(((const uint16_t *)p)[i]);
    default: return ((const float *)p)[i];
    }
}

static void dt_set(unsigned dt, void *p, size_t i, float v)
{
    switch (dt) {
    case NK_DTYPE_F16: ((uint16_t *)p)[i] = nk_f32_to_f16(v); break;
    case NK_DTYPE_BF16: ((uint16_t *)p)[i] = nk_f32_to_bf16(v); break;
    default: ((float *)p)[i] = v; break;
    }
}

/* spacing of the dtype's values at |v| (0 for fp32: its tolerances are the
 * fp32 ones) */
static double dt_ulp(unsigned dt, double v)
{
    if (dt == NK_DTYPE_F32 || !isfinite(v))
        return 0.0;
    const int mbits = dt == NK_DTYPE_F16 ? 10 : 7, emin = dt == NK_DTYPE_F16 ? -14 : -126;
    int e = v == 0.0 ? emin : ilogb(v);
    return ldexp(1.0, (e < emin ? emin : e) - mbits);
}

/* n elements of the dtype with NKT_GUARD elements of canary bytes on each
 * side, the start `shift` elements past a 64-byte boundary */
typedef struct xbuf {
    unsigned dt;
    size_t n, es;
    unsigned char *base;
    void *p;
} xbuf;
#define NKT_CANARY 0xA5

static xbuf xb_alloc(unsigned dt, size_t n, size_t shift)
{
    xbuf b;
    b.dt = dt;
    b.n = n;
    b.es = dt_size(dt);
    b.base = malloc((n + 2 * NKT_GUARD + shift) * b.es + 64);
    assert_non_null(b.base);
    unsigned char *a = (unsigned char *)(((uintptr_t)b.base + 63) & ~(uintptr_t)63);
    memset(a, NKT_CANARY, (n + 2 * NKT_GUARD + shift) * b.es);
    b.p = a + (NKT_GUARD + shift) * b.es;
    return b;
}

static int xb_guard_ok(const xbuf *b)
{
    const unsigned char *p = b->p;
    for (size_t i = 0; i < NKT_GUARD * b->es; i++)
        if (p[-(ptrdiff_t)i - 1] != NKT_CANARY || p[b->n * b->es + i] != NKT_CANARY)
            return 0;
    return 1;
}

static void xb_free(xbuf *b)
{
    free(b->base);
    b->base = NULL;
    b->p = NULL;
}

/* x rounded to the dtype in place (the oracles' values) and its elements
 * into a guarded buffer of the dtype */
static xbuf xb_from(unsigned dt, float *x, size_t n, size_t shift)
{
    xbuf b = xb_alloc(dt, n, shift);
    dt_round_all(dt, x, n);
    for (size_t i = 0; i < n; i++)
        dt_set(dt, b.p, i, x[i]);
    return b;
}

static void xb_fill(xbuf *b, float v)
{
    for (size_t i = 0; i < b->n; i++)
        dt_set(b->dt, b->p, i, v);
}

/* ---------------------------------------------------------------- tables */

typedef struct tbl {
    const char *name;
    unsigned dt;
    nk_kernels k;
    const nk_kernels *ref; /* the scalar table of the same dtype */
    long differ, compared;  /* outputs unequal to the reference's, of all compared */
} tbl;

/* every nk_isa value, plus the emulated AVX-512 table, and the integer bf16
 * AVX-512 table, per dtype */
#define NKT_NUM_ISA (NK_ISA_NEON + 1)
static tbl tables[(NKT_NUM_ISA + 2) * NKT_NUM_DT];
static int ntables;
/* the fp32 tables come first: tables[0 .. ntables32) */
static int ntables32;
static const nk_kernels *ref;

static void add_tbl(const char *isa, unsigned dt, const nk_kernels *k)
{
    static char names[(NKT_NUM_ISA + 2) * NKT_NUM_DT][40];
    tbl *t = &tables[ntables];
    if (dt == NK_DTYPE_F32)
        snprintf(names[ntables], sizeof names[0], "%s", isa);
    else
        snprintf(names[ntables], sizeof names[0], "%s/%s", isa, dt_names[dt]);
    t->name = names[ntables];
    t->dt = dt;
    t->k = *k;
    t->ref = nk_kernels_for_dtype(NK_ISA_SCALAR, dt);
    assert_non_null(t->ref);
    t->differ = t->compared = 0;
    ntables++;
}

static void load_tables(void)
{
    ref = nk_kernels_for(NK_ISA_SCALAR);
    assert_non_null(ref);
    ntables = 0;
    for (unsigned dt = 0; dt < NKT_NUM_DT; dt++) {
        /* every table the dispatcher offers on this CPU and build, scalar first */
        for (int i = 0; i < NKT_NUM_ISA; i++) {
            const nk_kernels *t = nk_kernels_for_dtype((nk_isa)i, dt);
            if (t)
                add_tbl(nk_isa_name((nk_isa)i), dt, t);
        }
#if NK_HAVE_AVX512
        /* the dispatcher's bf16 AVX-512 table stores with vcvtneps2bf16 where
         * the CPU has AVX512-BF16: the integer rounding is swept beside it */
        const nk_kernels *b5 = nk_kernels_for_dtype(NK_ISA_AVX512, dt);
        if (b5 && dt == NK_DTYPE_BF16) {
            nk_kernels e = *b5;
            nk_kernels_init_avx512_bf16(&e);
            if (e.norm_rows != b5->norm_rows)
                add_tbl("avx512-intbf16", dt, &e);
        }
#endif
#if defined(NKT_HAVE_EMU) && NKT_HAVE_EMU
        /* the emulated build is compiled with -mavx2 -mfma -mf16c (SIMDe runs
         * its 512-bit vectors as AVX2 halves), so it needs an AVX2 CPU */
        if (nk_kernels_for(NK_ISA_AVX2) && dt != NK_DTYPE_F16) {
            static void (*const emu_init[NKT_NUM_DT])(nk_kernels *) = {
                nk_kernels_init_avx512_emu, NULL, nk_kernels_init_avx512_emu_bf16};
            nk_kernels e = *nk_kernels_for_dtype(NK_ISA_SCALAR, dt);
            emu_init[dt](&e);
            e.isa = NK_ISA_AVX512;
            e.dtype = dt;
            add_tbl("avx512-emu", dt, &e);
        }
#endif
        if (dt == NK_DTYPE_F32)
            ntables32 = ntables;
    }
}

/* the outputs of one comparison: got differs from the reference's want by
 * at most the fp32 tolerance tol plus one ulp of the dtype */
static int dt_close(tbl *t, float got, float want, double tol)
{
    t->compared++;
    if (got == want || (isnan(got) && isnan(want)))
        return 1;
    t->differ++;
    return fabs((double)got - (double)want) <= tol + dt_ulp(t->dt, want);
}

static void print_differ(void)
{
    for (int ti = 0; ti < ntables; ti++)
        if (tables[ti].dt != NK_DTYPE_F32 && tables[ti].compared)
            print_message("%s: %ld of %ld outputs differ from the reference (within 1 ulp of the "
                          "dtype beyond the fp32 tolerance)\n",
                          tables[ti].name, tables[ti].differ, tables[ti].compared);
}

static int setup(void **state)
{
    (void)state;
    load_tables();
    return 0;
}

/* Which ISAs this CPU runs and this build has kernels for, found without the
 * library's dispatcher (GCC's CPU model checks XGETBV for AVX / AVX-512). */
static void expected_isas(int expect[NKT_NUM_ISA], int *expect_emu)
{
    for (int i = 0; i < NKT_NUM_ISA; i++)
        expect[i] = 0;
    expect[NK_ISA_SCALAR] = 1;
    *expect_emu = 0;
#if defined(__x86_64__) || defined(__i386__)
    __builtin_cpu_init();
    int avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    unsigned a1, b1, c1, d1;
    avx2 &= __get_cpuid(1, &a1, &b1, &c1, &d1) && ((c1 >> 29) & 1); /* F16C */
    int avx512 = avx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                 __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl");
    expect[NK_ISA_AVX2] = NK_HAVE_AVX2 && avx2;
    expect[NK_ISA_AVX512] = NK_HAVE_AVX2 && NK_HAVE_AVX512 && avx512;
#  if defined(NKT_HAVE_EMU) && NKT_HAVE_EMU
    *expect_emu = avx2;
#  endif
#elif defined(__aarch64__)
    expect[NK_ISA_NEON] = NK_HAVE_NEON; /* Advanced SIMD is baseline */
#elif defined(__arm__) && defined(__linux__)
    expect[NK_ISA_NEON] = NK_HAVE_NEON && (getauxval(AT_HWCAP) & (1ul << 12)) != 0; /* HWCAP_NEON */
#endif
}

static int swept(const char *name)
{
    for (int i = 0; i < ntables; i++)
        if (!strcmp(tables[i].name, name))
            return 1;
    return 0;
}

static void test_tables(void **state)
{
    (void)state;
    const nk_kernels *s = nk_kernels_for(NK_ISA_SCALAR);
    assert_non_null(s);
    assert_int_equal(s->isa, NK_ISA_SCALAR);
    print_message("kernel tables swept:");
    for (int i = 0; i < ntables; i++)
        print_message(" %s", tables[i].name);
    print_message("\n");
    int expect[NKT_NUM_ISA], expect_emu;
    expected_isas(expect, &expect_emu);
    for (int i = 0; i < NKT_NUM_ISA; i++) {
        if (!expect[i])
            continue;
        const nk_kernels *t = nk_kernels_for((nk_isa)i);
        if (!t || !swept(nk_isa_name((nk_isa)i))) {
            print_error("the build has %s kernels and this CPU runs them, but the sweep does not "
                        "cover them (%s)\n",
                        nk_isa_name((nk_isa)i), nk_isa_reason((nk_isa)i));
            fail();
        }
        assert_int_equal(t->isa, i);
        assert_non_null(t->moments_rows);
        assert_non_null(t->moments_cols);
        assert_non_null(t->sumsq_rows);
        assert_non_null(t->norm_rows);
        assert_non_null(t->norm_cols);
        assert_non_null(t->norm_affine);
        assert_non_null(t->norm_short);
        assert_non_null(t->inv_scale);
        assert_non_null(t->inv_std);
        assert_non_null(t->bn_finalize);
        if (i > 0) {
            /* every entry is this ISA's own kernel, not the inherited scalar one */
            assert_ptr_not_equal(t->moments_rows, s->moments_rows);
            assert_ptr_not_equal(t->moments_cols, s->moments_cols);
            assert_ptr_not_equal(t->sumsq_rows, s->sumsq_rows);
            assert_ptr_not_equal(t->norm_rows, s->norm_rows);
            assert_ptr_not_equal(t->norm_cols, s->norm_cols);
            assert_ptr_not_equal(t->norm_affine, s->norm_affine);
            assert_ptr_not_equal(t->norm_short, s->norm_short);
        }
    }
    /* the 16-bit tables: each ISA's own kernels, swept */
    for (unsigned dt = 1; dt < NKT_NUM_DT; dt++) {
        const nk_kernels *r = nk_kernels_for_dtype(NK_ISA_SCALAR, dt);
        assert_non_null(r);
        for (int i = 1; i < NKT_NUM_ISA; i++) {
            const nk_kernels *t = nk_kernels_for_dtype((nk_isa)i, dt);
            if (!expect[i]) {
                assert_null(t);
                continue;
            }
            char name[40];
            snprintf(name, sizeof name, "%s/%s", nk_isa_name((nk_isa)i), dt_names[dt]);
#if defined(__arm__)
            if (!t && dt == NK_DTYPE_F16) { /* an ARMv7 without the fp16 conversions */
                print_message("%s: not offered (%s)\n", name, nk_isa_reason((nk_isa)i));
                continue;
            }
#endif
            assert_non_null(t);
            if (!swept(name)) {
                print_error("the %s table is not swept\n", name);
                fail();
            }
            assert_int_equal(t->dtype, dt);
            assert_ptr_not_equal(t->moments_rows, r->moments_rows);
            assert_ptr_not_equal(t->moments_cols, r->moments_cols);
            assert_ptr_not_equal(t->sumsq_rows, r->sumsq_rows);
            assert_ptr_not_equal(t->norm_rows, r->norm_rows);
            assert_ptr_not_equal(t->norm_cols, r->norm_cols);
            assert_ptr_not_equal(t->norm_affine, r->norm_affine);
            assert_ptr_not_equal(t->norm_short, r->norm_short);
        }
        if (expect_emu && dt == NK_DTYPE_BF16) {
            char name[40];
            snprintf(name, sizeof name, "avx512-emu/%s", dt_names[dt]);
            assert_true(swept(name));
        }
    }
#if NK_HAVE_AVX512BF16 && defined(__x86_64__)
    /* AVX512-BF16 (CPUID 7.1 EAX bit 5): the dispatcher's bf16 AVX-512 table
     * stores with it, and the integer rounding is swept beside it */
    if (expect[NK_ISA_AVX512]) {
        unsigned a, b, c, d;
        int bf16 = __get_cpuid_count(7, 0, &a, &b, &c, &d) && a >= 1 &&
                   __get_cpuid_count(7, 1, &a, &b, &c, &d) && ((a >> 5) & 1);
        print_message("AVX512-BF16: %s\n", bf16 ? "yes" : "no");
        assert_int_equal(swept("avx512-intbf16/bf16"), bf16);
    }
#endif
    if (expect_emu && !swept("avx512-emu")) {
        print_error("the SIMDe-emulated AVX-512 table is built and this CPU has AVX2, but the "
                    "sweep does not cover it\n");
        fail();
    }
}

/* ---------------------------------------------------------- moments */

static void oracle_moments(const float *x, size_t n, size_t step, nk_moments *o)
{
    double s = 0.0;
    for (size_t i = 0; i < n; i++)
        s += x[i * step];
    double mean = s / (double)n, m2 = 0.0;
    for (size_t i = 0; i < n; i++) {
        double d = x[i * step] - mean;
        m2 += d * d;
    }
    o->count = (double)n;
    o->mean = mean;
    o->m2 = m2;
}

/* |mean - mean*| <= 2.5e-7 |mean*| + 1e-5 std*, |m2 - m2*| <= 2e-4 m2* (times tolf) */
static void check_moments(const nk_moments *got, const nk_moments *want, double tolf,
                          const char *what, size_t a, size_t b)
{
    double sd = want->count > 0 ? sqrt(want->m2 / want->count) : 0.0;
    double tm = tolf * (2.5e-7 * fabs(want->mean) + 1e-5 * sd) + 1e-30;
    double tq = tolf * 2e-4 * want->m2 + 1e-30;
    if (got->count != want->count || !(fabs(got->mean - want->mean) <= tm) ||
        !(fabs(got->m2 - want->m2) <= tq)) {
        print_error("%s (%zu, %zu): got {%g, %.17g, %.17g} want {%g, %.17g, %.17g}\n", what, a, b,
                    got->count, got->mean, got->m2, want->count, want->mean, want->m2);
        fail();
    }
}

static void run_moments_rows(tbl *t, nkt_rng *rng, size_t rows, size_t len, size_t pad,
                             size_t shift, double mu, double sd)
{
    const size_t stride = len + pad;
    nkt_buf xb = nkt_alloc(rows * stride, shift);
    nkt_fill(rng, xb.p, rows * stride, mu, sd);
    xbuf tx = xb_from(t->dt, xb.p, rows * stride, shift);
    nk_moments out[1 + 9 + 1], want[9], r[9];
    const nk_moments canary = {-7.0, -7.0, -7.0};
    out[0] = out[rows + 1] = canary;
    t->k.moments_rows(tx.p, rows, len, stride, out + 1);
    t->ref->moments_rows(tx.p, rows, len, stride, r);
    assert_memory_equal(&out[0], &canary, sizeof canary);
    assert_memory_equal(&out[rows + 1], &canary, sizeof canary);
    for (size_t i = 0; i < rows; i++) {
        oracle_moments(xb.p + i * stride, len, 1, &want[i]);
        check_moments(&out[1 + i], &want[i], 1.0, t->name, rows, len);
        check_moments(&out[1 + i], &r[i], 2.0, t->name, rows, len);
    }
    assert_true(nkt_guard_ok(&xb) && xb_guard_ok(&tx));
    nkt_free(&xb);
    xb_free(&tx);
}

static void test_moments_rows(void **state)
{
    (void)state;
    static const size_t nrows[] = {1, 2, 3, 4, 5, 9};
    static const size_t big[] = {1000, 1023, 1024, 1025, 4099, 65537};
    for (int ti = 0; ti < ntables; ti++) {
        nkt_rng rng;
        nkt_seed(&rng, 11);
        for (size_t len = 1; len <= 257; len++)
            for (size_t k = 0; k < sizeof nrows / sizeof nrows[0]; k++)
                run_moments_rows(&tables[ti], &rng, nrows[k], len, (len + k) % 5, (len + k) % 4,
                                 (double)(len % 7) * 300.0 - 900.0, 0.5 + (double)(len % 3));
        for (size_t k = 0; k < sizeof big / sizeof big[0]; k++)
            run_moments_rows(&tables[ti], &rng, k % 2 ? 5 : 1, big[k], k, k % 4, 2000.0, 1.0);
    }
}

static void run_moments_cols(tbl *t, nkt_rng *rng, size_t rows, size_t cols, size_t pad,
                             size_t shift, int preload)
{
    const size_t stride = cols + pad;
    nkt_buf xb = nkt_alloc(rows * stride, shift);
    nkt_fill(rng, xb.p, rows * stride, 100.0, 3.0);
    xbuf tx = xb_from(t->dt, xb.p, rows * stride, shift);
    nk_moments *acc = calloc(cols + 2, sizeof *acc), *racc = calloc(cols, sizeof *racc);
    assert_non_null(acc);
    assert_non_null(racc);
    const nk_moments canary = {-7.0, -7.0, -7.0};
    acc[0] = acc[cols + 1] = canary;
    for (size_t c = 0; c < cols && preload; c++) {
        nk_moments pre = {(double)(c % 4 + 1), 95.0 + (double)(c % 9), (double)(c % 5)};
        acc[1 + c] = racc[c] = pre;
    }
    t->k.moments_cols(tx.p, rows, cols, stride, acc + 1);
    t->ref->moments_cols(tx.p, rows, cols, stride, racc);
    assert_memory_equal(&acc[0], &canary, sizeof canary);
    assert_memory_equal(&acc[cols + 1], &canary, sizeof canary);
    for (size_t c = 0; c < cols; c++) {
        nk_moments want;
        oracle_moments(xb.p + c, rows, stride, &want);
        if (!preload)
            check_moments(&acc[1 + c], &want, 1.0, t->name, rows, cols);
        check_moments(&acc[1 + c], &racc[c], 2.0, t->name, rows, cols);
    }
    free(acc);
    free(racc);
    assert_true(xb_guard_ok(&tx));
    nkt_free(&xb);
    xb_free(&tx);
}

static void test_moments_cols(void **state)
{
    (void)state;
    static const size_t ncols[] = {1, 7, 16, 17, 64, 129};
    static const size_t nrows[] = {1, 5, 130};
    static const size_t wide[] = {255, 256, 257, 300, 600};
    for (int ti = 0; ti < ntables; ti++) {
        nkt_rng rng;
        nkt_seed(&rng, 12);
        for (size_t rows = 1; rows <= 257; rows++)
            for (size_t k = 0; k < sizeof ncols / sizeof ncols[0]; k++)
                run_moments_cols(&tables[ti], &rng, rows, ncols[k], rows % 3, (rows + k) % 4,
                                 (int)((rows + k) % 2));
        for (size_t cols = 1; cols <= 257; cols++)
            for (size_t k = 0; k < sizeof nrows / sizeof nrows[0]; k++)
                run_moments_cols(&tables[ti], &rng, nrows[k], cols, cols % 2, cols % 4, 0);
        for (size_t k = 0; k < sizeof wide / sizeof wide[0]; k++)
            run_moments_cols(&tables[ti], &rng, 70, wide[k], k, k % 4, (int)(k % 2));
        run_moments_cols(&tables[ti], &rng, 4099, 33, 0, 1, 0);
        run_moments_cols(&tables[ti], &rng, 65537, 16, 0, 0, 1);
    }
}

/*
 * Column data whose order defeats a fixed shift: the vector kernels reduce
 * columns in one pass per segment of rows, shifted by the running mean, and
 * must stay within the float64 oracle's tolerance whatever comes first.
 *   0: the first 1 + c % 20 rows are outliers at 1e4, the rest N(0, 1)
 *   1: a ramp, 10 per row, with N(0, 0.1) noise (sorted data)
 *   2: a step from 1e4 to -1e4 halfway, N(0, 0.01) noise
 *   3: geometric growth, 1.01^r, restarting every 2000 rows
 */
static void run_cols_order(tbl *t, nkt_rng *rng, size_t rows, size_t cols, int pattern)
{
    float *x = malloc(rows * cols * sizeof *x);
    assert_non_null(x);
    for (size_t r = 0; r < rows; r++)
        for (size_t c = 0; c < cols; c++) {
            double v;
            switch (pattern) {
            case 0: v = (r < 1 + c % 20 ? 1e4 : 0.0) + nkt_normal(rng); break;
            case 1: v = 10.0 * (double)r + 0.1 * nkt_normal(rng); break;
            case 2: v = (2 * r < rows ? 1e4 : -1e4) + 0.01 * nkt_normal(rng); break;
            default: v = pow(1.01, (double)(r % 2000)) * (1.0 + 1e-3 * (double)c); break;
            }
            x[r * cols + c] = (float)v;
        }
    nk_moments *acc = calloc(cols, sizeof *acc);
    assert_non_null(acc);
    xbuf tx = xb_from(t->dt, x, rows * cols, 0);
    t->k.moments_cols(tx.p, rows, cols, cols, acc);
    xb_free(&tx);
    char w[96];
    snprintf(w, sizeof w, "%s moments_cols pattern %d", t->name, pattern);
    for (size_t c = 0; c < cols; c++) {
        nk_moments want;
        oracle_moments(x + c, rows, cols, &want);
        check_moments(&acc[c], &want, 1.0, w, rows, c);
    }
    free(acc);
    free(x);
}

static void test_moments_cols_order(void **state)
{
    (void)state;
    static const size_t nrows[] = {17, 40, 100, 300, 1000, 20000};
    for (int ti = 0; ti < ntables; ti++) {
        nkt_rng rng;
        nkt_seed(&rng, 31);
        for (int pattern = 0; pattern < 4; pattern++)
            for (size_t k = 0; k < sizeof nrows / sizeof nrows[0]; k++)
                /* fp16: the ramp and the growth pass 65504 */
                if (tables[ti].dt != NK_DTYPE_F16 || pattern == 0 || pattern == 2)
                run_cols_order(&tables[ti], &rng, nrows[k], 37, pattern);
    }
}

static void run_sumsq(tbl *t, nkt_rng *rng, size_t rows, size_t len, size_t pad, size_t shift)
{
    const size_t stride = len + pad;
    nkt_buf xb = nkt_alloc(rows * stride, shift);
    nkt_fill(rng, xb.p, rows * stride, 0.5, 2.0);
    xbuf tx = xb_from(t->dt, xb.p, rows * stride, shift);
    double out[11], r[9];
    out[0] = out[rows + 1] = -7.0;
    t->k.sumsq_rows(tx.p, rows, len, stride, out + 1);
    t->ref->sumsq_rows(tx.p, rows, len, stride, r);
    assert_true(out[0] == -7.0 && out[rows + 1] == -7.0);
    for (size_t i = 0; i < rows; i++) {
        double want = 0.0;
        for (size_t j = 0; j < len; j++)
            want += (double)xb.p[i * stride + j] * xb.p[i * stride + j];
        if (!(fabs(out[1 + i] - want) <= 3e-5 * want) || !(fabs(out[1 + i] - r[i]) <= 6e-5 * want)) {
            print_error("%s sumsq (%zu, %zu): got %.17g want %.17g ref %.17g\n", t->name, rows, len,
                        out[1 + i], want, r[i]);
            fail();
        }
    }
    assert_true(xb_guard_ok(&tx));
    nkt_free(&xb);
    xb_free(&tx);
}

static void test_sumsq_rows(void **state)
{
    (void)state;
    static const size_t nrows[] = {1, 2, 3, 4, 7};
    static const size_t big[] = {1000, 1025, 4099, 65537};
    for (int ti = 0; ti < ntables; ti++) {
        nkt_rng rng;
        nkt_seed(&rng, 13);
        for (size_t len = 1; len <= 257; len++)
            for (size_t k = 0; k < sizeof nrows / sizeof nrows[0]; k++)
                run_sumsq(&tables[ti], &rng, nrows[k], len, (len + k) % 3, (len + k) % 4);
        for (size_t k = 0; k < sizeof big / sizeof big[0]; k++)
            run_sumsq(&tables[ti], &rng, 1 + 2 * (k % 2), big[k], k, k % 4);
    }
}

/* ---------------------------------------------------------- normalize */

#define FILLV 777.0f

static double act_tol(int act) { return act >= NK_ACT_SILU ? 4e-6 : 4e-7; }

/* y vs the reference's yr over the rows; gaps between rows (ystride > len)
 * must stay FILLV */
static void check_rows_out(tbl *t, const xbuf *yb, const xbuf *yr, size_t rows, size_t len,
                           size_t ystride, int act, size_t a, size_t b)
{
    const char *what = t->name;
    assert_true(xb_guard_ok(yb));
    const double tol = act_tol(act);
    const float fill = dt_round(t->dt, FILLV);
    for (size_t r = 0; r < rows; r++)
        for (size_t i = 0; i < ystride && r * ystride + i < yb->n; i++) {
            const float g = dt_get(t->dt, yb->p, r * ystride + i);
            const float w = dt_get(t->dt, yr->p, r * ystride + i);
            int ok;
            if (i >= len)
                ok = g == fill;
            else
                ok = isnan(w) ? isnan(g) : dt_close(t, g, w, tol * (1.0 + fabsf(w)));
            if (!ok) {
                print_error("%s (%zu, %zu, act %d): y[%zu][%zu] = %.9g, expected %.9g\n", what, a, b,
                            act, r, i, g, w);
                fail();
            }
        }
}

static void fill_const(nkt_buf *b, float v)
{
    for (size_t i = 0; i < b->n; i++)
        b->p[i] = v;
}

/* pad == SIZE_MAX: back-to-back rows in x and y (one stream of rows) */
static void run_norm_rows(tbl *t, nkt_rng *rng, size_t rows, size_t len, size_t pad,
                          size_t xs, size_t ys, size_t ps, int act, int stream)
{
    const int dense = pad == SIZE_MAX;
    const size_t xstride = dense ? len : len + pad, ystride = dense ? len : len + (pad + 1) % 4;
    const size_t nx = rows ? (rows - 1) * xstride + len : 0;
    const size_t ny = rows ? (rows - 1) * ystride + len : 0;
    nkt_buf xb = nkt_alloc(nx, xs);
    xbuf yb = xb_alloc(t->dt, ny, ys), yr = xb_alloc(t->dt, ny, 0);
    nkt_fill(rng, xb.p, nx, 1.5, 2.0);
    xbuf tx = xb_from(t->dt, xb.p, nx, xs);
    float m[9], a[9], b[9];
    for (size_t r = 0; r < 9; r++) {
        m[r] = (float)(1.5 + 0.1 * nkt_normal(rng));
        a[r] = (float)(0.5 + nkt_uniform(rng));
        b[r] = (float)nkt_normal(rng);
    }
    nk_epilogue ep = {act, 0.07f, stream};
    xb_fill(&yb, FILLV);
    xb_fill(&yr, FILLV);
    t->k.norm_rows(tx.p, yb.p, rows, len, xstride, ystride, m, a, b, ps, &ep);
    t->ref->norm_rows(tx.p, yr.p, rows, len, xstride, ystride, m, a, b, ps, &ep);
    check_rows_out(t, &yb, &yr, rows, len, ystride, act, rows, len);
    assert_true(nkt_guard_ok(&xb) && xb_guard_ok(&tx));
    xb_free(&yr);
    xb_free(&tx);
    nkt_free(&xb);
    xb_free(&yb);
}

static void test_norm_rows(void **state)
{
    (void)state;
    static const size_t big[] = {1000, 4099, NKT_BIG(65537)};
    for (int ti = 0; ti < ntables; ti++) {
        nkt_rng rng;
        nkt_seed(&rng, 14);
        for (int act = 0; act <= NK_ACT_GELU_TANH; act++)
            for (int stream = 0; stream < NKT_STREAMS; stream++) {
                for (size_t len = 0; len <= 257; len++)
                    run_norm_rows(&tables[ti], &rng, 1 + 2 * (len % 2), len, len % 3, len % 4,
                                  (len / 4) % 4, (len / 2) % 2, act, stream);
                for (size_t k = 0; k < sizeof big / sizeof big[0] && big[k]; k++)
                    run_norm_rows(&tables[ti], &rng, 2, big[k], k, k % 4, (k + 1) % 4, k % 2, act,
                                  stream);
                /* back-to-back rows with their own parameters: vectors that
                 * straddle two rows, heads and tails in every position */
                for (size_t len = 1; len <= 260; len += 1 + len / 40)
                    for (size_t rows = 2; rows <= 9; rows += 1 + rows / 3)
                        run_norm_rows(&tables[ti], &rng, rows, len, SIZE_MAX, len % 4,
                                      (len + rows) % 4, 1, act, stream);
            }
    }
}

static void run_norm_cols(tbl *t, nkt_rng *rng, size_t rows, size_t cols, size_t pad,
                          size_t xs, size_t ys, int act, int stream)
{
    const size_t xstride = cols + pad, ystride = cols + (pad ? pad - 1 : 0);
    const size_t nx = (rows - 1) * xstride + cols, ny = (rows - 1) * ystride + cols;
    nkt_buf xb = nkt_alloc(nx, xs);
    xbuf yb = xb_alloc(t->dt, ny, ys), yr = xb_alloc(t->dt, ny, 0);
    nkt_buf mb = nkt_alloc(cols, 1), ab = nkt_alloc(cols, 2), bb = nkt_alloc(cols, 3);
    nkt_fill(rng, xb.p, nx, -2.0, 3.0);
    xbuf tx = xb_from(t->dt, xb.p, nx, xs);
    nkt_fill(rng, mb.p, cols, -2.0, 0.3);
    nkt_fill(rng, ab.p, cols, 0.5, 0.2);
    nkt_fill(rng, bb.p, cols, 0.0, 1.0);
    nk_epilogue ep = {act, 0.2f, stream};
    xb_fill(&yb, FILLV);
    xb_fill(&yr, FILLV);
    t->k.norm_cols(tx.p, yb.p, rows, cols, xstride, ystride, mb.p, ab.p, bb.p, &ep);
    t->ref->norm_cols(tx.p, yr.p, rows, cols, xstride, ystride, mb.p, ab.p, bb.p, &ep);
    check_rows_out(t, &yb, &yr, rows, cols, ystride, act, rows, cols);
    assert_true(nkt_guard_ok(&mb) && nkt_guard_ok(&ab) && nkt_guard_ok(&bb));
    assert_true(xb_guard_ok(&tx));
    xb_free(&yr);
    xb_free(&tx);
    nkt_free(&xb);
    xb_free(&yb);
    nkt_free(&mb);
    nkt_free(&ab);
    nkt_free(&bb);
}

static void test_norm_cols(void **state)
{
    (void)state;
    for (int ti = 0; ti < ntables; ti++) {
        nkt_rng rng;
        nkt_seed(&rng, 15);
        for (int act = 0; act <= NK_ACT_GELU_TANH; act++)
            for (int stream = 0; stream < NKT_STREAMS; stream++) {
                for (size_t cols = 1; cols <= 257; cols++) {
                    /* pad 0 with aligned y: the streaming path; others: misaligned */
                    size_t pad = cols % 3, sh = cols % 5 == 0 ? 0 : cols % 4;
                    run_norm_cols(&tables[ti], &rng, 1 + cols % 4, cols, pad, cols % 4, sh, act,
                                  stream);
                }
                run_norm_cols(&tables[ti], &rng, 4099, 16, 0, 0, 0, act, stream);
                run_norm_cols(&tables[ti], &rng, 1000, 64, 0, 1, 0, act, stream);
                if (NKT_BIG(65537))
                    run_norm_cols(&tables[ti], &rng, 3, 65537, 1, 2, 3, act, stream);
                /* several row tiles with a partial last one, blocks of 8, 4
                 * and a tail inside each row */
                run_norm_cols(&tables[ti], &rng, 37, 200, 3, 1, 2, act, stream);
                run_norm_cols(&tables[ti], &rng, 19, 304, 0, 0, 0, act, stream);
            }
    }
}

/*
 * The per-channel scale kernels promise the scalar kernel's bits (IEEE
 * operations only): every table, lengths across the vector widths and
 * tails, zero variances with and without eps, empty channels; outputs are
 * compared bitwise and guarded on both sides.
 */
#define NKT_SENTINEL 7.25

static void test_inv_scale(void **state)
{
    (void)state;
    nkt_rng rng;
    nkt_seed(&rng, 31);
    for (int ti = 0; ti < ntables32; ti++)
        for (size_t n = 0; n <= 70; n++)
            for (int wcase = 0; wcase < 2; wcase++)
                for (int ecase = 0; ecase < 2; ecase++) {
                    const float eps = ecase ? 1e-5f : 0.0f;
                    nkt_buf vb = nkt_alloc(n ? n : 1, n % 3), wb = nkt_alloc(n ? n : 1, 1);
                    nkt_buf ab = nkt_alloc(n ? n : 1, n % 5), rb = nkt_alloc(n ? n : 1, 0);
                    for (size_t i = 0; i < n; i++) {
                        /* variances over many binades, some exactly 0 */
                        double u = nkt_uniform(&rng);
                        vb.p[i] = i % 7 == 3 ? 0.0f : (float)(u * u * pow(10.0, (double)(i % 9) - 4));
                        wb.p[i] = (float)(nkt_normal(&rng));
                        ab.p[i] = rb.p[i] = (float)NKT_SENTINEL;
                    }
                    const float *w = wcase ? wb.p : NULL;
                    tables[ti].k.inv_scale(vb.p, w, eps, n, ab.p);
                    ref->inv_scale(vb.p, w, eps, n, rb.p);
                    for (size_t i = 0; i < n; i++)
                        if (memcmp(&ab.p[i], &rb.p[i], sizeof(float))) {
                            print_error("%s inv_scale n=%zu w=%d eps=%g [%zu]: %a, scalar %a\n",
                                        tables[ti].name, n, wcase, (double)eps, i,
                                        (double)ab.p[i], (double)rb.p[i]);
                            fail();
                        }
                    assert_true(nkt_guard_ok(&vb) && nkt_guard_ok(&wb) && nkt_guard_ok(&ab));
                    nkt_free(&vb);
                    nkt_free(&wb);
                    nkt_free(&ab);
                    nkt_free(&rb);
                }
}

/* Every table's widen against the scalar conversions of kernels/cvt.h, bit
 * for bit: every length to 40 and a long one, misaligned inputs allocated
 * to their exact size, NaN / Inf / denormal patterns, a sentinel past the
 * output. */
static void test_widen(void **state)
{
    (void)state;
    nkt_rng rng;
    nkt_seed(&rng, 43);
    static const size_t lens[] = {0, 1, 2, 3, 5, 7, 8, 9, 15, 16, 17, 31, 32, 33, 40, 1003};
    for (int ti = 0; ti < ntables; ti++)
        for (size_t li = 0; li < sizeof lens / sizeof lens[0]; li++)
            for (size_t sh = 0; sh < 3; sh++) {
                const unsigned dt = tables[ti].dt;
                const size_t n = lens[li], es = dt == NK_DTYPE_F32 ? 4 : 2;
                unsigned char *raw = malloc(n * es + sh * es + 1);
                float *out = malloc((n + 1) * sizeof(float));
                assert_true(raw && out);
                unsigned char *x = raw + sh * es;
                for (size_t i = 0; i < n; i++) {
                    const uint32_t r = (uint32_t)nkt_next(&rng);
                    if (es == 4)
                        memcpy(x + 4 * i, &r, 4);
                    else
                        memcpy(x + 2 * i, &r, 2); /* every 16-bit pattern */
                }
                out[n] = NKT_SENTINEL;
                tables[ti].k.widen(x, n, out);
                for (size_t i = 0; i < n; i++) {
                    uint16_t h = 0;
                    float want;
                    if (es == 4) {
                        memcpy(&want, x + 4 * i, 4);
                    } else {
                        memcpy(&h, x + 2 * i, 2);
                        want = dt == NK_DTYPE_BF16 ? nk_bf16_to_f32(h) : nk_f16_to_f32(h);
                    }
                    if (memcmp(&out[i], &want, sizeof want)) {
                        print_error("%s widen n=%zu [%zu] %#06x: %a, scalar %a\n", tables[ti].name,
                                    n, i, h, (double)out[i], (double)want);
                        fail();
                    }
                }
                assert_true(memcmp(&out[n], &(float){NKT_SENTINEL}, sizeof(float)) == 0);
                free(raw);
                free(out);
            }
}

static void test_inv_std(void **state)
{
    (void)state;
    nkt_rng rng;
    nkt_seed(&rng, 37);
    for (int ti = 0; ti < ntables32; ti++)
        for (size_t n = 0; n <= 70; n++)
            for (int ecase = 0; ecase < 2; ecase++) {
                const double eps = ecase ? 1e-5 : 0.0;
                nk_moments *mo = malloc((n + 1) * sizeof *mo);
                /* one sentinel on each side of each output array */
                double *var = malloc((n + 2) * sizeof *var), *inv = malloc((n + 2) * sizeof *inv);
                double *rv = malloc((n + 2) * sizeof *rv), *ri = malloc((n + 2) * sizeof *ri);
                assert_true(mo && var && inv && rv && ri);
                for (size_t i = 0; i < n + 2; i++)
                    var[i] = inv[i] = rv[i] = ri[i] = NKT_SENTINEL;
                for (size_t i = 0; i < n; i++) {
                    double u = nkt_uniform(&rng);
                    /* empty channels, constant channels (m2 == 0), and spread ones */
                    mo[i].count = i % 11 == 5 ? 0.0 : (double)(1 + i * 37 % 1000);
                    mo[i].mean = nkt_normal(&rng);
                    mo[i].m2 = mo[i].count == 0.0 || i % 7 == 3 ? 0.0
                               : mo[i].count * u * u * pow(10.0, (double)(i % 9) - 4);
                }
                tables[ti].k.inv_std(mo, n, eps, var + 1, inv + 1);
                ref->inv_std(mo, n, eps, rv + 1, ri + 1);
                for (size_t i = 0; i < n + 2; i++)
                    if (memcmp(&var[i], &rv[i], sizeof(double)) ||
                        memcmp(&inv[i], &ri[i], sizeof(double))) {
                        print_error("%s inv_std n=%zu eps=%g [%zu]: var %a inv %a, scalar %a %a\n",
                                    tables[ti].name, n, eps, i, var[i], inv[i], rv[i], ri[i]);
                        fail();
                    }
                free(mo);
                free(var);
                free(inv);
                free(rv);
                free(ri);
            }
}

/* Every table's bn_finalize against the scalar one, bit for bit: empty,
 * constant and spread channels, with and without weight, bias, saves and
 * running statistics, biased and unbiased, eps 0 and 1e-5; one sentinel on
 * each side of every output. */
static void test_bn_finalize(void **state)
{
    (void)state;
    nkt_rng rng;
    nkt_seed(&rng, 41);
    enum { NOUT = 7 }; /* m, a, b, save_mean, save_invstd, rmean, rvar */
    for (int ti = 0; ti < ntables32; ti++)
        for (size_t n = 0; n <= 37; n++)
            for (int cs = 0; cs < 32; cs++) {
                nk_moments *mo = malloc((n + 1) * sizeof *mo);
                float *w = malloc((n + 1) * sizeof *w), *bi = malloc((n + 1) * sizeof *bi);
                float *o[2][NOUT];
                assert_true(mo && w && bi);
                for (int v = 0; v < 2; v++)
                    for (int j = 0; j < NOUT; j++) {
                        o[v][j] = malloc((n + 2) * sizeof(float));
                        assert_non_null(o[v][j]);
                        for (size_t i = 0; i < n + 2; i++)
                            o[v][j][i] = NKT_SENTINEL;
                    }
                for (size_t i = 0; i < n; i++) {
                    double u = nkt_uniform(&rng);
                    mo[i].count = i % 11 == 5 ? 0.0 : (double)(2 + i * 37 % 1000);
                    mo[i].mean = nkt_normal(&rng) * 10.0;
                    mo[i].m2 = mo[i].count == 0.0 || i % 7 == 3
                                   ? 0.0
                                   : mo[i].count * u * u * pow(10.0, (double)(i % 9) - 4);
                    w[i] = (float)nkt_normal(&rng);
                    bi[i] = (float)nkt_normal(&rng);
                    o[0][5][i + 1] = o[1][5][i + 1] = (float)nkt_normal(&rng);
                    o[0][6][i + 1] = o[1][6][i + 1] = (float)nkt_uniform(&rng);
                }
                for (int v = 0; v < 2; v++) {
                    const nk_bn_fin f = {
                        .eps = cs & 16 ? 1e-5 : 0.0,
                        .momentum = cs & 8 ? 0.1 : 0.75,
                        .unbiased = (cs & 8) != 0,
                        .weight = cs & 1 ? w : NULL,
                        .bias = cs & 2 ? bi : NULL,
                        .save_mean = cs & 4 ? o[v][3] + 1 : NULL,
                        .save_invstd = cs & 4 ? o[v][4] + 1 : NULL,
                        .rmean = cs & 8 ? o[v][5] + 1 : NULL,
                        .rvar = cs & 8 ? o[v][6] + 1 : NULL,
                    };
                    (v ? ref : &tables[ti].k)->bn_finalize(mo, n, &f, o[v][0] + 1, o[v][1] + 1,
                                                           o[v][2] + 1);
                }
                for (int j = 0; j < NOUT; j++)
                    for (size_t i = 0; i < n + 2; i++)
                        if (memcmp(&o[0][j][i], &o[1][j][i], sizeof(float))) {
                            print_error("%s bn_finalize n=%zu case %d output %d [%zu]: %a, scalar %a\n",
                                        tables[ti].name, n, cs, j, i, (double)o[0][j][i],
                                        (double)o[1][j][i]);
                            fail();
                        }
                for (int v = 0; v < 2; v++)
                    for (int j = 0; j < NOUT; j++)
                        free(o[v][j]);
                free(mo);
                free(w);
                free(bi);
            }
}

static void run_norm_affine(tbl *t, nkt_rng *rng, size_t rows, size_t len, size_t pad,
                            size_t xs, size_t ys, int flags, int act, int stream)
{
    const size_t xstride = len + pad, ystride = len + 2 * pad;
    const size_t nx = rows ? (rows - 1) * xstride + len : 0;
    const size_t ny = rows ? (rows - 1) * ystride + len : 0;
    nkt_buf xb = nkt_alloc(nx, xs);
    xbuf yb = xb_alloc(t->dt, ny, ys), yr = xb_alloc(t->dt, ny, 0);
    nkt_buf gb = nkt_alloc(len, (xs + 1) % 4), bb = nkt_alloc(len, (xs + 2) % 4);
    nkt_fill(rng, xb.p, nx, 40.0, 5.0);
    xbuf tx = xb_from(t->dt, xb.p, nx, xs);
    nkt_fill(rng, gb.p, len, 1.0, 0.3);
    nkt_fill(rng, bb.p, len, 0.0, 0.5);
    float m[9], s[9];
    for (size_t r = 0; r < 9; r++) {
        m[r] = (float)(40.0 + nkt_normal(rng));
        s[r] = (float)(0.2 + 0.01 * nkt_uniform(rng));
    }
    const float *mp = flags & 1 ? m : NULL, *gp = flags & 2 ? gb.p : NULL,
                *bp = flags & 4 ? bb.p : NULL;
    nk_epilogue ep = {act, 0.01f, stream};
    xb_fill(&yb, FILLV);
    xb_fill(&yr, FILLV);
    t->k.norm_affine(tx.p, yb.p, rows, len, xstride, ystride, mp, s, gp, bp, &ep);
    t->ref->norm_affine(tx.p, yr.p, rows, len, xstride, ystride, mp, s, gp, bp, &ep);
    check_rows_out(t, &yb, &yr, rows, len, ystride, act, rows, len);
    assert_true(xb_guard_ok(&tx));
    xb_free(&yr);
    xb_free(&tx);
    nkt_free(&xb);
    xb_free(&yb);
    nkt_free(&gb);
    nkt_free(&bb);
}

static void test_norm_affine(void **state)
{
    (void)state;
    static const size_t big[] = {768, 1000, 4099, NKT_BIG(65537)};
    for (int ti = 0; ti < ntables; ti++) {
        nkt_rng rng;
        nkt_seed(&rng, 16);
        for (int act = 0; act <= NK_ACT_GELU_TANH; act++)
            for (int stream = 0; stream < NKT_STREAMS; stream++)
                for (int flags = 0; flags < 8; flags++) {
                    for (size_t len = 0; len <= 257; len++)
                        run_norm_affine(&tables[ti], &rng, 1 + 2 * (len % 2), len, len % 3, len % 4,
                                        (len + (size_t)flags) % 4, flags, act, stream);
                    for (size_t k = 0; k < sizeof big / sizeof big[0] && big[k]; k++)
                        run_norm_affine(&tables[ti], &rng, 2, big[k], k % 2, k % 4, (k + 3) % 4,
                                        flags, act, stream);
                }
    }
}

/* x == y: norm_rows, norm_cols and norm_affine in place give the bits of
 * the out-of-place call, on every table, every activation, streaming on/off,
 * lengths around the vector widths and misaligned starts. */
static void check_inplace(const tbl *t, const char *kname, const void *want, const void *got,
                          size_t n, size_t len, int act, int stream)
{
    const size_t es = dt_size(t->dt);
    if (memcmp(want, got, n * es)) {
        size_t i = 0;
        while (!memcmp((const char *)want + i * es, (const char *)got + i * es, es))
            i++;
        print_error("%s %s in place (len %zu, act %d, stream %d): y[%zu] = %.9g, out of place "
                    "%.9g\n",
                    t->name, kname, len, act, stream, i, (double)dt_get(t->dt, got, i),
                    (double)dt_get(t->dt, want, i));
        fail();
    }
}

static void test_norm_inplace(void **state)
{
    (void)state;
    static const size_t lens[] = {1, 3, 7, 8, 15, 16, 17, 31, 33, 63, 64, 65, 129, 255, 257, 1000, 4099};
    enum { ROWS = 3 };
    /* x, y, z: elements of the table's dtype; xf the float values of x */
    float *x = malloc((ROWS * 4099 + 8) * sizeof *x), *y = malloc((ROWS * 4099 + 8) * sizeof *y);
    float *z = malloc((ROWS * 4099 + 8) * sizeof *z), *p = malloc(3 * 4099 * sizeof *p);
    float *xf = malloc(ROWS * 4099 * sizeof *xf);
    assert_true(x && y && z && p && xf);
    for (int ti = 0; ti < ntables; ti++) {
        const nk_kernels *k = &tables[ti].k;
        const unsigned dt = tables[ti].dt;
        const size_t es = dt_size(dt);
        nkt_rng rng;
        nkt_seed(&rng, 21);
        for (size_t li = 0; li < sizeof lens / sizeof lens[0]; li++) {
            const size_t len = lens[li], n = ROWS * len, sh = li % 4;
            char *xs = (char *)x + sh * es, *zs = (char *)z + sh * es;
            nkt_fill(&rng, p, 3 * len, 0.5, 0.5); /* m / a / b, or g / b */
            float m[ROWS], a[ROWS], b[ROWS];
            for (size_t r = 0; r < ROWS; r++) {
                m[r] = (float)nkt_normal(&rng);
                a[r] = (float)(0.5 + nkt_uniform(&rng));
                b[r] = (float)nkt_normal(&rng);
            }
            for (int act = 0; act <= NK_ACT_GELU_TANH; act++)
                for (int stream = 0; stream < 2; stream++) {
                    const nk_epilogue ep = {act, 0.1f, stream};
                    nkt_fill(&rng, xf, n, 0.0, 2.0);
                    for (size_t i = 0; i < n; i++)
                        dt_set(dt, xs, i, xf[i]);

                    k->norm_rows(xs, y, ROWS, len, len, len, m, a, b, 1, &ep);
                    memcpy(zs, xs, n * es);
                    k->norm_rows(zs, zs, ROWS, len, len, len, m, a, b, 1, &ep);
                    check_inplace(&tables[ti], "norm_rows", y, zs, n, len, act, stream);

                    k->norm_cols(xs, y, ROWS, len, len, len, p, p + len, p + 2 * len, &ep);
                    memcpy(zs, xs, n * es);
                    k->norm_cols(zs, zs, ROWS, len, len, len, p, p + len, p + 2 * len, &ep);
                    check_inplace(&tables[ti], "norm_cols", y, zs, n, len, act, stream);

                    k->norm_affine(xs, y, ROWS, len, len, len, m, a, p, p + len, &ep);
                    memcpy(zs, xs, n * es);
                    k->norm_affine(zs, zs, ROWS, len, len, len, m, a, p, p + len, &ep);
                    check_inplace(&tables[ti], "norm_affine", y, zs, n, len, act, stream);

                    k->norm_affine(xs, y, ROWS, len, len, len, NULL, a, NULL, NULL, &ep);
                    memcpy(zs, xs, n * es);
                    k->norm_affine(zs, zs, ROWS, len, len, len, NULL, a, NULL, NULL, &ep);
                    check_inplace(&tables[ti], "norm_affine (RMS)", y, zs, n, len, act, stream);
                }
        }
    }
    free(x);
    free(y);
    free(z);
    free(p);
    free(xf);
}

/* Normalize values: exact x == m gives exactly b on every table (beta
 * rounded to the dtype: 0.25 and 0 are exact in all three). */
static void test_norm_centred(void **state)
{
    (void)state;
    float x[37], y[37], a = 316.2f, b = 0.25f;
    nk_epilogue ep = {NK_ACT_NONE, 0.0f, 0};
    for (int ti = 0; ti < ntables; ti++) {
        const unsigned dt = tables[ti].dt;
        float m = dt_round(dt, 1234.0f);
        for (int i = 0; i < 37; i++)
            dt_set(dt, x, (size_t)i, m);
        tables[ti].k.norm_rows(x, y, 1, 37, 37, 37, &m, &a, &b, 0, &ep);
        for (int i = 0; i < 37; i++)
            assert_true(dt_get(dt, y, (size_t)i) == b);
        tables[ti].k.norm_affine(x, y, 1, 37, 37, 37, &m, &a, NULL, NULL, &ep);
        for (int i = 0; i < 37; i++)
            assert_true(dt_get(dt, y, (size_t)i) == 0.0f);
    }
}

/* ------------------------------------------------------------ norm_short */

/*
 * The error bound of kernels/kernels.h, evaluated from the float64 oracle
 * of one row: em bounds |m - mean*| and es bounds |s - s*| / s*.
 */
#define NKT_U (1.0 / 16777216.0)
static double nkt_gamma(double k) { return k * NKT_U / (1.0 - k * NKT_U); }

typedef struct short_row {
    double mean, sd, s; /* oracle: mean (0 for RMSNorm), sqrt(M2 / n), 1 / sqrt(. + eps) */
    double em, es;      /* bounds of |m - mean| and |s - s*| / s* */
    int constant;
} short_row;

static void short_oracle(const float *x, size_t n, double eps, int rms, short_row *o)
{
    nk_moments mo;
    oracle_moments(x, n, 1, &mo);
    double ss = 0.0, a = 0.0;
    int constant = 1;
    for (size_t i = 0; i < n; i++) {
        ss += (double)x[i] * x[i];
        a += fabs((double)x[i] - x[0]);
        constant &= x[i] == x[0];
    }
    const double k = (double)n; /* summation depth <= n - 1 on every table */
    o->constant = constant;
    o->sd = sqrt(mo.m2 / (double)n);
    if (rms) {
        o->mean = 0.0;
        o->s = 1.0 / sqrt(ss / (double)n + eps);
        o->em = 0.0;
        o->es = nkt_gamma(k + 4) / 2 + 2 * NKT_U;
        return;
    }
    /* kernels/kernels.h: A = mean |x - x[0]|, e = |m - mean| / sd */
    o->mean = mo.mean;
    o->s = 1.0 / sqrt(mo.m2 / (double)n + eps);
    o->em = NKT_U * fabs(mo.mean) + nkt_gamma(k + 4) * a / (double)n;
    const double e = o->sd > 0 ? o->em / o->sd : 0.0;
    o->es = nkt_gamma(k + 6) / 2 + 0.51 * e * e + 2 * NKT_U;
}

/* Row kinds of the sweep: plain, mean-shifted, constant, fp32-overflowing
 * squares and sums, small scale; rounded to the dtype (fp16: the kinds
 * beyond its range are mean-shifted rows, its constants at most 3.3e4). */
static void short_fill_row(nkt_rng *rng, float *x, size_t n, int kind, unsigned dt)
{
    static const float consts[] = {1234.0f, 0.1f, -3.3e7f, 7.0e-3f};
    if (dt == NK_DTYPE_F16 && (kind == 5 || kind == 6))
        kind = 3;
    switch (kind) {
    case 0: nkt_fill(rng, x, n, 0.0, 1.0); break;
    case 1: nkt_fill(rng, x, n, 2.0, 0.5); break;
    case 2: nkt_fill(rng, x, n, -3.0, 3.0); break;
    case 3: nkt_fill(rng, x, n, 1e4, 1.0); break; /* mean / sd = 1e4 */
    case 4: {
        float c = consts[nkt_next(rng) % 4];
        if (dt == NK_DTYPE_F16 && fabsf(c) > 6e4f)
            c = -3.3e4f;
        for (size_t i = 0; i < n; i++)
            x[i] = c;
        break;
    }
    case 5: nkt_fill(rng, x, n, 1e30, 5e29); break;   /* squares overflow fp32 */
    case 6: nkt_fill(rng, x, n, -1e37, 5e36); break;  /* and the sum too */
    default: nkt_fill(rng, x, n, 0.0, 1e-3); break;
    }
    dt_round_all(dt, x, n);
}
#define SHORT_KINDS 8

typedef struct short_case {
    size_t rows, len, xpad, ypad, xs, ys;
    int rms, act, flags, stream, kinds; /* flags: 1 g, 2 b, 4 mean_out, 8 rstd_out */
    float eps;
    int row_affine; /* NK_SHORT_ROW_AFFINE: g, b per row */
} short_case;

static unsigned short_flags(int rms, int row_affine)
{
    return (rms ? NK_SHORT_RMS : 0u) | (row_affine ? NK_SHORT_ROW_AFFINE : 0u);
}

static void run_norm_short(tbl *t, nkt_rng *rng, const short_case *c)
{
    const size_t rows = c->rows, len = c->len;
    const size_t xstride = len + c->xpad, ystride = len + c->ypad;
    const size_t nx = (rows - 1) * xstride + len, ny = (rows - 1) * ystride + len;
    /* gamma and beta: len floats per column, or rows floats per row */
    const size_t na = c->row_affine ? rows : len;
    const unsigned kf = short_flags(c->rms, c->row_affine);
    nkt_buf xb = nkt_alloc(nx, c->xs);
    xbuf yb = xb_alloc(t->dt, ny, c->ys), yr = xb_alloc(t->dt, ny, 0);
    nkt_buf gb = nkt_alloc(na, (c->xs + 1) % 4), bb = nkt_alloc(na, (c->xs + 2) % 4);
    nkt_buf mb = nkt_alloc(rows, c->ys % 3), sb = nkt_alloc(rows, (c->ys + 1) % 3);
    float *mr = malloc(rows * sizeof *mr);
    float *sr = malloc(rows * sizeof *sr);
    assert_true(mr && sr);
    nkt_fill(rng, xb.p, nx, 5.0, 1.0); /* the gaps between rows */
    for (size_t r = 0; r < rows; r++)
        short_fill_row(rng, xb.p + r * xstride, len, (int)((r * 5 + len) % (size_t)c->kinds),
                       t->dt);
    xbuf tx = xb_from(t->dt, xb.p, nx, c->xs);
    nkt_fill(rng, gb.p, na, 1.0, 0.3);
    nkt_fill(rng, bb.p, na, 0.0, 0.5);
    const float *g = c->flags & 1 ? gb.p : NULL, *b = c->flags & 2 ? bb.p : NULL;
    float *mo = c->flags & 4 ? mb.p : NULL, *so = c->flags & 8 ? sb.p : NULL;
    const nk_epilogue ep = {c->act, 0.05f, c->stream};
    xb_fill(&yb, FILLV);
    fill_const(&mb, FILLV);
    fill_const(&sb, FILLV);
    xb_fill(&yr, FILLV);
    t->k.norm_short(tx.p, yb.p, rows, len, xstride, ystride, g, b, c->eps, kf, mo, so, &ep);
    t->ref->norm_short(tx.p, yr.p, rows, len, xstride, ystride, g, b, c->eps, kf, mr, sr, &ep);
    assert_true(xb_guard_ok(&tx) && xb_guard_ok(&yb) && nkt_guard_ok(&mb) && nkt_guard_ok(&sb));
    assert_true(nkt_guard_ok(&gb) && nkt_guard_ok(&bb));
    for (size_t r = 0; r < rows; r++) {
        const float *xr = xb.p + r * xstride;
        short_row o;
        short_oracle(xr, len, (double)c->eps, c->rms, &o);
        /* saved statistics: the bound against the oracle, both tables */
        const float m = mo ? mo[r] : mr[r], s = so ? so[r] : sr[r];
        for (int k = 0; k < 2; k++) {
            const float mk = k ? mr[r] : m, sk = k ? sr[r] : s;
            int ok = fabs(mk - o.mean) <= o.em && (isinf(o.s) ? sk == o.s || isnan(sk)
                                                              : fabs(sk - o.s) <= o.es * o.s);
            if (!c->rms && o.constant && c->eps > 0.0f)
                ok &= mk == xr[0]; /* a constant row's mean is exact */
            if (!ok) {
                print_error("%s norm_short %s%s (rows %zu, len %zu, eps %g) row %zu: m %.9g "
                            "s %.9g, oracle %.17g %.17g (bounds %.3g, %.3g)\n",
                            k ? "scalar" : t->name, c->rms ? "RMS" : "LN",
                            c->row_affine ? " per-row affine" : "", rows, len,
                            (double)c->eps, r, (double)mk, (double)sk, o.mean, o.s, o.em,
                            o.es * o.s);
                fail();
            }
        }
        if (!mo)
            assert_true(mb.p[r] == FILLV);
        if (!so)
            assert_true(sb.p[r] == FILLV);
        /* y against the scalar table: both within the bound of the exact
         * result; without an activation, the scalar table's y against the
         * exact result itself (gamma and beta taken from the test's own
         * arrays, so a wrong index in the scalar table shows too) */
        for (size_t i = 0; i < ystride && r * ystride + i < ny; i++) {
            const float got = dt_get(t->dt, yb.p, r * ystride + i);
            const float want = dt_get(t->dt, yr.p, r * ystride + i);
            const size_t j = c->row_affine ? r : i; /* index of gamma and beta */
            int ok;
            if (i >= len) {
                ok = got == dt_round(t->dt, FILLV);
            } else if (isnan(want)) {
                ok = isnan(got);
            } else {
                const double gi = g ? fabs(g[j]) : 1.0;
                const double v = fabs((xr[i] - o.mean) * o.s);
                const double d =
                    gi * (v * (o.es + 2 * NKT_U) + o.em * o.s) + NKT_U * (fabs(want) + 1);
                const double tol = 2.4 * d + act_tol(c->act) * (1.0 + fabs(want));
                ok = dt_close(t, got, want, tol);
                if (c->act == NK_ACT_NONE && !isinf(o.s)) {
                    const double exact = ((double)xr[i] - o.mean) * o.s * (g ? g[j] : 1.0) +
                                         (b ? b[j] : 0.0);
                    ok &= fabs(want - exact) <= 1.2 * d + dt_ulp(t->dt, want);
                }
                /* y == beta exactly (rounded to the dtype) */
                if (!c->rms && o.constant && c->eps > 0.0f && c->act == NK_ACT_NONE)
                    ok &= got == dt_round(t->dt, b ? b[j] : 0.0f);
            }
            if (!ok) {
                print_error("%s norm_short %s%s (rows %zu, len %zu, strides %zu/%zu, act %d, "
                            "g %d, b %d, eps %g): y[%zu][%zu] = %.9g, scalar %.9g\n",
                            t->name, c->rms ? "RMS" : "LN",
                            c->row_affine ? " per-row affine" : "", rows, len, xstride, ystride,
                            c->act, !!g, !!b, (double)c->eps, r, i, (double)got, (double)want);
                fail();
            }
        }
    }
    xb_free(&yr);
    xb_free(&tx);
    free(mr);
    free(sr);
    nkt_free(&xb);
    xb_free(&yb);
    nkt_free(&gb);
    nkt_free(&bb);
    nkt_free(&mb);
    nkt_free(&sb);
}

/*
 * norm_short on every table against the scalar table and the error bound:
 * every length 1..NK_SHORT_ROW; rows 1..40 (partial blocks of 4, 8 and 16)
 * at 1, 15, 16, 17, 33, 64; strides beyond len, misaligned rows, every
 * activation, gamma / beta / saved statistics present or not, streaming,
 * eps 0 with constant rows; rows mean-shifted, constant, overflowing fp32.
 * The first sweep runs each case with the affine per column and per row
 * (NK_SHORT_ROW_AFFINE), the second alternates them.
 */
static void test_norm_short(void **state)
{
    (void)state;
    static const size_t lens[] = {1, 15, 16, 17, 33, 64};
    static const size_t some_rows[] = {1, 3, 8, 17, 33};
    for (int ti = 0; ti < ntables; ti++) {
        nkt_rng rng;
        nkt_seed(&rng, 41);
        int n = 0;
        for (size_t len = 1; len <= NK_SHORT_ROW; len++)
            for (size_t k = 0; k < sizeof some_rows / sizeof some_rows[0]; k++)
                for (int rms = 0; rms < 2; rms++, n++)
                    for (int ra = 0; ra < 2; ra++) {
                        short_case c = {some_rows[k], len, n % 4, (n / 2) % 5 * 4, n % 4,
                                        (n / 3) % 4, rms, n % 6, n % 16, (n / 5) % 2,
                                        SHORT_KINDS, 1e-5f, ra};
                        run_norm_short(&tables[ti], &rng, &c);
                    }
        for (size_t li = 0; li < sizeof lens / sizeof lens[0]; li++)
            for (size_t rows = 1; rows <= 40; rows++)
                for (int act = 0; act <= NK_ACT_GELU_TANH; act++)
                    for (int rms = 0; rms < 2; rms++, n++) {
                        short_case c = {rows, lens[li], n % 3, 17 * (n % 2), (n / 2) % 4, n % 4,
                                        rms, act, n % 16, n % 2, SHORT_KINDS, 1e-5f, (n / 7) % 2};
                        run_norm_short(&tables[ti], &rng, &c);
                        /* eps 0: constant rows have s = inf and NaN outputs */
                        c.eps = 0.0f;
                        c.kinds = 5;
                        c.flags = 15 - c.flags;
                        run_norm_short(&tables[ti], &rng, &c);
                    }
        /* per-row affine (InstanceNorm): every row count 1..64 at the
         * lengths of 7x7 and 14x14 feature maps and around the vector widths */
        static const size_t in_lens[] = {1, 7, 8, 9, 49, 63, 64};
        for (size_t li = 0; li < sizeof in_lens / sizeof in_lens[0]; li++)
            for (size_t rows = 1; rows <= 64; rows++, n++) {
                short_case c = {rows, in_lens[li], n % 3, 5 * (n % 2), n % 4, (n / 2) % 4,
                                0, n % 3 ? NK_ACT_NONE : NK_ACT_RELU, (n % 4) * 4 + 3,
                                (n / 3) % 2, SHORT_KINDS, 1e-5f, 1};
                run_norm_short(&tables[ti], &rng, &c);
            }
    }
}

/* norm_short: a row's result depends on that row alone (not on the other
 * rows of its block, nor on how the rows are split into calls), and in
 * place gives the bits of out of place; every table, the affine per column
 * and per row (a call from row r0 takes g + r0, b + r0 then). */
static void test_norm_short_rows_alone(void **state)
{
    (void)state;
    static const size_t lens[] = {1, 7, 16, 17, 33, 64};
    static const size_t splits[] = {1, 5, 15, 16, 17};
    enum { ROWS = 37 };
    for (int ti = 0; ti < ntables; ti++) {
        const nk_kernels *k = &tables[ti].k;
        const unsigned dt = tables[ti].dt;
        const size_t es = dt_size(dt);
        nkt_rng rng;
        nkt_seed(&rng, 42);
        for (size_t li = 0; li < sizeof lens / sizeof lens[0]; li++)
            for (int mode = 0; mode < 4; mode++) {
                const int rms = mode & 1, ra = mode >> 1;
                const unsigned kf = short_flags(rms, ra);
                const size_t len = lens[li], n = ROWS * len, na = ra ? ROWS : len;
                /* x, y, z: elements of the dtype */
                float *xf = malloc(n * sizeof *xf);
                char *x = malloc(n * es), *y = malloc(n * es), *z = malloc(n * es);
                float *g = malloc(na * sizeof *g);
                float m[ROWS], s[ROWS], m2[ROWS], s2[ROWS];
                assert_true(xf && x && y && z && g);
                for (size_t r = 0; r < ROWS; r++)
                    short_fill_row(&rng, xf + r * len, len, (int)(r % SHORT_KINDS), dt);
                for (size_t i = 0; i < n; i++)
                    dt_set(dt, x, i, xf[i]);
                nkt_fill(&rng, g, na, 1.0, 0.3);
                const nk_epilogue ep = {(int)(li % 6), 0.1f, 0};
                k->norm_short(x, y, ROWS, len, len, len, g, g, 1e-5f, kf, m, s, &ep);
                for (size_t si = 0; si < sizeof splits / sizeof splits[0]; si++) {
                    /* the rows in calls of splits[si] rows, the last one from row 0 */
                    for (size_t r0 = 0; r0 < ROWS; r0 += splits[si]) {
                        size_t nr = ROWS - r0 < splits[si] ? ROWS - r0 : splits[si];
                        const float *gr = ra ? g + r0 : g;
                        k->norm_short(x + r0 * len * es, z + r0 * len * es, nr, len, len, len,
                                      gr, gr, 1e-5f, kf, m2 + r0, s2 + r0, &ep);
                    }
                    if (memcmp(y, z, n * es) || memcmp(m, m2, sizeof m) ||
                        memcmp(s, s2, sizeof s)) {
                        print_error("%s norm_short len %zu flags %u: calls of %zu rows differ "
                                    "from one call\n",
                                    tables[ti].name, len, kf, splits[si]);
                        fail();
                    }
                }
                memcpy(z, x, n * es);
                k->norm_short(z, z, ROWS, len, len, len, g, g, 1e-5f, kf, NULL, NULL, &ep);
                check_inplace(&tables[ti], "norm_short", y, z, n, len, ep.act, 0);
                free(xf);
                free(x);
                free(y);
                free(z);
                free(g);
            }
    }
}

/* ------------------------------------------------------ conversions */

/* ARMv7 NEON arithmetic flushes fp32 denormals to zero and returns the
 * default NaN: its conversions are checked on normal values and NaN-ness */
static int armv7_neon(const tbl *t)
{
#if defined(__arm__)
    return t->k.isa == NK_ISA_NEON;
#else
    (void)t;
    return 0;
#endif
}

static uint16_t to16(unsigned dt, float v)
{
    return dt == NK_DTYPE_F16 ? nk_f32_to_f16(v) : nk_f32_to_bf16(v);
}

static void conv_fail(const tbl *t, const char *what, size_t i, uint32_t in, uint16_t got,
                      uint16_t want)
{
    print_error("%s %s [%zu]: input 0x%08x gives 0x%04x, the scalar conversion 0x%04x\n",
                t->name, what, i, in, got, want);
    fail();
}

/*
 * Each 16-bit table's vector conversions, through its kernels, give the
 * scalar conversions' bits: every 16-bit pattern loaded (norm_rows with
 * m = +0, a = 1, b = -0 is the identity on every value, -0 included), and
 * fp32 values stored (norm_cols of zeros with a = 0: y = round(b)): every
 * tie of the dtype and its fp32 neighbours, the range edges, fp32 denormals,
 * NaN payloads, 65536 random fp32 patterns; rows of whole vectors and of
 * tails, guard zones around the outputs.
 */
static void test_dtype_conversions(void **state)
{
    (void)state;
    enum { N = 65536 };
    uint16_t *x = malloc(N * sizeof *x);
    float *bv = malloc(N * sizeof *bv), *zf = calloc(N, sizeof *zf);
    assert_true(x && bv && zf);
    for (int ti = ntables32; ti < ntables; ti++) {
        tbl *t = &tables[ti];
        const unsigned dt = t->dt;
        const int lax = armv7_neon(t);
        const nk_epilogue ep = {NK_ACT_NONE, 0.0f, 0};
        for (uint32_t i = 0; i < N; i++)
            x[i] = (uint16_t)i;
        /* loads: 16 rows of 4096, then rows of 4093 (tails) */
        for (int pass = 0; pass < 2; pass++) {
            const size_t len = pass ? 4093 : 4096, rows = N / 4096;
            xbuf yb = xb_alloc(dt, N, 1);
            const float m = 0.0f, a = 1.0f, b = -0.0f;
            t->k.norm_rows(x, yb.p, rows, len, 4096, 4096, &m, &a, &b, 0, &ep);
            assert_true(xb_guard_ok(&yb));
            const uint16_t *y = yb.p;
            for (size_t r = 0; r < rows; r++)
                for (size_t i = r * 4096; i < r * 4096 + len; i++) {
                    const float v = dt_get(dt, x, i);
                    if (isnan(v)) {
                        /* quiet: the scalar conversions' round trip */
                        if (!isnan(dt_get(dt, y, i)) || (!lax && y[i] != to16(dt, v)))
                            conv_fail(t, "load", i, x[i], y[i], to16(dt, v));
                    } else if (y[i] != x[i] && !(lax && fabsf(v) < FLT_MIN)) {
                        conv_fail(t, "load", i, x[i], y[i], x[i]);
                    }
                }
            xb_free(&yb);
        }
        /* stores: values b in columns */
        nkt_rng rng;
        nkt_seed(&rng, 61);
        size_t nv = 0;
        static const uint32_t special[] = {
            0x00000000u, 0x00000001u, 0x007fffffu, 0x00400000u, 0x00018000u, 0x00800000u,
            0x7f7fffffu, 0x7f800000u, 0x7f800001u, 0x7fa00001u, 0x7fc00000u, 0x7fffffffu,
            0x477fefffu, 0x477ff000u, 0x477ff001u, 0x33000000u, 0x33000001u, 0x387fe000u,
            0x7f7f7fffu, 0x7f7f8000u, 0x3f808000u, 0x3f818000u, 0x3f800001u, 0x3f807fffu,
        };
        for (size_t k = 0; k < sizeof special / sizeof special[0]; k++) {
            bv[nv++] = nk_bits_f32(special[k]);
            bv[nv++] = nk_bits_f32(special[k] | 0x80000000u);
        }
        /* ties of the dtype around every 64th 16-bit value, one fp32 ulp either side */
        for (uint32_t h = 0; h < 0x7f00u && nv + 3 <= N / 2; h += 64) {
            const uint16_t hv[4] = {(uint16_t)h, (uint16_t)(h + 1), 0, 0};
            const float lo = dt_get(dt, hv, 0), hi = dt_get(dt, hv, 1);
            if (!isfinite(lo) || !isfinite(hi))
                break;
            const float mid = (float)(((double)lo + (double)hi) / 2);
            bv[nv++] = mid;
            bv[nv++] = nextafterf(mid, 0.0f);
            bv[nv++] = -nextafterf(mid, INFINITY);
        }
        while (nv < N)
            bv[nv++] = nk_bits_f32((uint32_t)nkt_next(&rng));
        const float *mz = zf, *az = zf;
        for (int pass = 0; pass < 2; pass++) {
            const size_t cols = pass ? 4093 : 4096, rows = N / 4096;
            for (size_t r = 0; r < rows; r++) {
                xbuf yb = xb_alloc(dt, cols, r % 4);
                const float *b = bv + r * 4096;
                t->k.norm_cols(zf, yb.p, 1, cols, cols, cols, mz, az, b, &ep);
                assert_true(xb_guard_ok(&yb));
                const uint16_t *y = yb.p;
                for (size_t i = 0; i < cols; i++) {
                    /* the kernel's fp32 value: (0 - 0) * 0 + b (-0 becomes +0) */
                    const float v = b[i] == 0.0f ? 0.0f : b[i];
                    const uint16_t want = to16(dt, v);
                    int ok = y[i] == want;
                    if (lax)
                        ok = isnan(v) ? isnan(dt_get(dt, y, i))
                                      : ok || fabsf(v) < FLT_MIN;
                    if (!ok)
                        conv_fail(t, "store", i, nk_f32_bits(v), y[i], want);
                }
                xb_free(&yb);
            }
        }
    }
    free(x);
    free(bv);
    free(zf);
}

/* ------------------------------------------- SEMANTICS.md section 4 */

/* Constant rows/columns of every length: mean == value, m2 == 0 exactly. */
static void test_constant_exact(void **state)
{
    (void)state;
    static const float vals[] = {1234.0f, 0.1f, -3.3e7f, 7.0e-3f};
    float *x = malloc(3 * 4200 * sizeof *x);
    assert_non_null(x);
    for (int ti = 0; ti < ntables; ti++)
        for (size_t v = 0; v < sizeof vals / sizeof vals[0]; v++) {
            /* the value in the dtype (fp16: -3.3e7 is past its range, -3.3e4) */
            const unsigned dt = tables[ti].dt;
            const float val = dt_round(dt, dt == NK_DTYPE_F16 && v == 2 ? -3.3e4f : vals[v]);
            for (size_t i = 0; i < 3 * 4200; i++)
                dt_set(dt, x, i, val);
            for (size_t len = 1; len <= 4100; len = len < 300 ? len + 1 : len * 2 + 3) {
                nk_moments o[2];
                tables[ti].k.moments_rows(x, 2, len, len, o);
                for (int r = 0; r < 2; r++)
                    if (o[r].mean != (double)val || o[r].m2 != 0.0 || o[r].count != (double)len) {
                        print_error("%s: constant %.9g len %zu: mean %.17g m2 %.17g\n",
                                    tables[ti].name, (double)val, len, o[r].mean, o[r].m2);
                        fail();
                    }
                /* the same data as len rows of 1 and as columns */
                nk_moments c[3] = {{0, 0, 0}, {0, 0, 0}, {0, 0, 0}};
                tables[ti].k.moments_cols(x, len, 3, 3, c);
                for (int j = 0; j < 3; j++)
                    if (c[j].mean != (double)val || c[j].m2 != 0.0 || c[j].count != (double)len) {
                        print_error("%s: constant column %.9g rows %zu: mean %.17g m2 %.17g\n",
                                    tables[ti].name, (double)val, len, c[j].mean, c[j].m2);
                        fail();
                    }
            }
        }
    free(x);
}

/* Shifted rows and [40000..40003] at the kernel level, every table. */
static void test_shifted_kernels(void **state)
{
    (void)state;
    float q[4] = {40000.0f, 40001.0f, 40002.0f, 40003.0f};
    nkt_rng rng;
    for (int ti = 0; ti < ntables; ti++) {
        nk_moments o;
        if (tables[ti].dt == NK_DTYPE_F32) { /* not representable in 16 bits */
            tables[ti].k.moments_rows(q, 1, 4, 4, &o);
            assert_true(o.mean == 40001.5 && o.m2 == 5.0);
        }
        nkt_seed(&rng, 17);
        for (size_t len = 2; len <= 5000; len = len * 3 + 1) {
            float *x = malloc(len * sizeof *x);
            assert_non_null(x);
            nkt_fill(&rng, x, len, 2000.0, 1.0);
            xbuf tx = xb_from(tables[ti].dt, x, len, 0);
            nk_moments want;
            oracle_moments(x, len, 1, &want);
            tables[ti].k.moments_rows(tx.p, 1, len, len, &o);
            xb_free(&tx);
            check_moments(&o, &want, 1.0, tables[ti].name, 1, len);
            /* variance relative to 1 (the true std), not to the mean */
            assert_true(fabs(o.m2 / (double)len - want.m2 / (double)len) <= 1e-4);
            free(x);
        }
    }
}

/* ------------------------------------------------ fp32 overflow */

/*
 * Kernel contract for data whose fp32 sums can overflow: a finite result
 * equals the float64 oracle within the usual tolerance; a non-finite one
 * flags the overflow so that the ops layer (nk_rows_moments /
 * nk_cols_moments) recomputes in fp64. A kernel may flag only where some
 * fp32 sum can overflow: the sum of the values, or the sum of squared
 * deviations from a provisional mean anywhere in [min, max].
 */
static int may_overflow(const float *x, size_t n, size_t step)
{
    double lo = INFINITY, hi = -INFINITY, amax = 0.0;
    for (size_t i = 0; i < n; i++) {
        double v = x[i * step];
        lo = v < lo ? v : lo;
        hi = v > hi ? v : hi;
        amax = fabs(v) > amax ? fabs(v) : amax;
    }
    double dlo = 0.0, dhi = 0.0; /* convex in the provisional mean: worst at an end */
    for (size_t i = 0; i < n; i++) {
        double v = x[i * step];
        dlo += (v - lo) * (v - lo);
        dhi += (v - hi) * (v - hi);
    }
    const double limit = 0.5 * FLT_MAX;
    return (double)n * amax >= limit || dlo >= limit || dhi >= limit;
}

typedef struct huge_count {
    int finite, flagged;
} huge_count;

static void check_contract(tbl *t, const char *what, const nk_moments *got,
                           const nk_moments *want, int overflow_possible, size_t a, size_t b,
                           huge_count *cnt)
{
    if (isfinite(got->mean) && isfinite(got->m2)) {
        char w[64];
        snprintf(w, sizeof w, "%s %s", t->name, what);
        check_moments(got, want, 1.0, w, a, b);
        cnt->finite++;
        return;
    }
    cnt->flagged++;
    if (!overflow_possible) {
        print_error("%s %s (%zu, %zu): non-finite {%g, %g, %g} although no fp32 sum can overflow "
                    "(oracle {%g, %.17g, %.17g})\n",
                    t->name, what, a, b, got->count, got->mean, got->m2, want->count, want->mean,
                    want->m2);
        fail();
    }
}

/* x[i] uniform in [mu - h, mu + h] */
static void fill_uniform(nkt_rng *rng, float *x, size_t n, double mu, double h)
{
    for (size_t i = 0; i < n; i++)
        x[i] = (float)(mu + h * (2.0 * nkt_uniform(rng) - 1.0));
}

/*
 * Half-width of uniform data of n values whose squared deviations from the
 * mean sum to about f * FLT_MAX: f < 0.1 never overflows fp32, f > 1 overflows
 * a plain fp32 sum, and a chunked / multi-lane kernel may or may not.
 */
static double overflow_halfwidth(size_t n, double f)
{
    return sqrt(3.0 * f * (double)FLT_MAX / (double)n);
}

static const size_t huge_lens[] = {1, 2, 3, 5, 8, 16, 17, 31, 64, 100, 255, 256, 257, 1000, 4099};
static const double huge_f[] = {0.01, 0.05, 0.5, 2.0, 20.0, 200.0};

/* One data set: rows x len (row stride len + 1) and the same values seen as
 * len rows of `rows` columns; kernel contract and fp64 fallback, rows and
 * columns, and the sum of squares. */
static void run_huge(tbl *t, const float *x, size_t rows, size_t len, huge_count *cnt)
{
    const size_t stride = len + 1;
    nk_moments got[3], want[3], fixed[3];
    char rw[64], cw[64];
    snprintf(rw, sizeof rw, "%s nk_rows_moments", t->name);
    snprintf(cw, sizeof cw, "%s nk_cols_moments", t->name);
    t->k.moments_rows(x, rows, len, stride, got);
    nk_rows_moments(&t->k, x, rows, len, stride, fixed);
    double ss[3];
    t->k.sumsq_rows(x, rows, len, stride, ss);
    for (size_t r = 0; r < rows; r++) {
        const float *xr = x + r * stride;
        oracle_moments(xr, len, 1, &want[r]);
        check_contract(t, "moments_rows", &got[r], &want[r], may_overflow(xr, len, 1), rows, len, cnt);
        check_moments(&fixed[r], &want[r], 1.0, rw, rows, len);
        double sq = 0.0, amax = 0.0;
        for (size_t i = 0; i < len; i++) {
            sq += (double)xr[i] * xr[i];
            amax = fabs(xr[i]) > amax ? fabs(xr[i]) : amax;
        }
        if (isfinite(ss[r])) {
            if (!(fabs(ss[r] - sq) <= 3e-5 * sq)) {
                print_error("%s sumsq_rows (%zu, %zu): got %.17g want %.17g\n", t->name, rows, len,
                            ss[r], sq);
                fail();
            }
        } else if (!((double)len * amax * amax >= 0.5 * FLT_MAX)) {
            print_error("%s sumsq_rows (%zu, %zu): non-finite %g although no fp32 sum can "
                        "overflow (oracle %.17g)\n",
                        t->name, rows, len, ss[r], sq);
            fail();
        }
    }
    /* columns: the first `rows` values of each row are column data of `len` rows */
    nk_moments acc[3] = {{0, 0, 0}, {0, 0, 0}, {0, 0, 0}}, facc[3] = {{0, 0, 0}, {0, 0, 0}, {0, 0, 0}};
    float *xc = malloc(len * rows * sizeof *xc);
    assert_non_null(xc);
    for (size_t i = 0; i < len; i++)
        for (size_t c = 0; c < rows; c++)
            xc[i * rows + c] = x[c * stride + i];
    t->k.moments_cols(xc, len, rows, rows, acc);
    nk_cols_moments(&t->k, xc, len, rows, rows, facc);
    for (size_t c = 0; c < rows; c++) {
        check_contract(t, "moments_cols", &acc[c], &want[c], may_overflow(xc + c, len, rows), len,
                       rows, cnt);
        check_moments(&facc[c], &want[c], 1.0, cw, len, rows);
    }
    free(xc);
}

/*
 * Values of 1e17..1e21 whose squared deviations sum to 0.01 .. 200 times
 * FLT_MAX (finite in fp32 for some lengths, chunkings and lane counts only),
 * and |x| ~ 1e30 (every square overflows) and ~1e37 (the plain sum overflows
 * too). Every table: the raw kernels keep the contract above, and
 * nk_rows_moments / nk_cols_moments give the float64 oracle.
 */
static void test_huge_kernels(void **state)
{
    (void)state;
    enum { ROWS = 3 };
    float *x = malloc(ROWS * (4099 + 1) * sizeof *x);
    assert_non_null(x);
    for (int ti = 0; ti < ntables32; ti++) {
        nkt_rng rng;
        nkt_seed(&rng, 18);
        huge_count cnt = {0, 0};
        for (size_t li = 0; li < sizeof huge_lens / sizeof huge_lens[0]; li++) {
            const size_t len = huge_lens[li];
            for (size_t fi = 0; fi < sizeof huge_f / sizeof huge_f[0]; fi++) {
                double h = overflow_halfwidth(len, huge_f[fi]);
                fill_uniform(&rng, x, ROWS * (len + 1), 2.0 * h + 1e18, h);
                run_huge(&tables[ti], x, ROWS, len, &cnt);
            }
            fill_uniform(&rng, x, ROWS * (len + 1), 1e30, 5e29);
            run_huge(&tables[ti], x, ROWS, len, &cnt);
            fill_uniform(&rng, x, ROWS * (len + 1), -1e37, 5e36);
            run_huge(&tables[ti], x, ROWS, len, &cnt);
        }
        print_message("%s: %d overflow-prone moments finite and exact, %d flagged non-finite\n",
                      tables[ti].name, cnt.finite, cnt.flagged);
        /* both outcomes occur: the sweep reaches past the fp32 range and stays inside it */
        assert_true(cnt.finite > 0 && cnt.flagged > 0);
    }
    free(x);
}

/* The same data through the public operators, on every ISA: outputs and
 * saved statistics equal the float64 oracle. */
static void check_saved(const float *got, const double *want, size_t n, double rtol, const char *what)
{
    for (size_t i = 0; i < n; i++)
        if (!(fabs(got[i] - want[i]) <= rtol * fabs(want[i]))) {
            print_error("%s[%zu]: got %.9g, expected %.9g\n", what, i, (double)got[i], want[i]);
            fail();
        }
}

static void huge_api_case(const float *x, size_t len, double ratio, const char *isa, const char *tag)
{
    enum { ROWS = 3 };
    const size_t n = ROWS * len;
    float *y = malloc(n * sizeof *y), *w = malloc(len * sizeof *w), *b = malloc(len * sizeof *b);
    double *yr = malloc(n * sizeof *yr);
    assert_true(y && w && b && yr);
    for (size_t i = 0; i < len; i++) {
        w[i] = 0.5f + 0.125f * (float)(i % 7);
        b[i] = 0.25f * (float)(i % 5) - 0.5f;
    }
    /* |mean| / std is up to `ratio`: the fp32 mean costs half an ulp of it */
    const double atol = 2e-5 + 1.2e-7 * ratio;
    char what[128];
    float sm[ROWS], si[ROWS];
    double wm[ROWS], wi[ROWS];
    for (size_t r = 0; r < ROWS; r++) {
        nk_moments m;
        oracle_moments(x + r * len, len, 1, &m);
        wm[r] = m.mean;
        wi[r] = 1.0 / sqrt(m.m2 / (double)len + 1e-5);
    }

    snprintf(what, sizeof what, "%s %s LayerNorm len %zu", isa, tag, len);
    assert_int_equal(nk_layer_norm(x, ROWS, (int64_t)len, w, b, 1e-5, y, sm, si, NULL), NK_OK);
    nkt_oracle_layer_norm(x, ROWS, (int64_t)len, w, b, 1e-5, NULL, yr);
    nkt_assert_close(y, yr, n, atol, 0.0, what);
    check_saved(sm, wm, ROWS, 1e-6, what);
    check_saved(si, wi, ROWS, 1e-5, what);

    snprintf(what, sizeof what, "%s %s RMSNorm len %zu", isa, tag, len);
    assert_int_equal(nk_rms_norm(x, ROWS, (int64_t)len, w, 1e-6, y, si, NULL), NK_OK);
    nkt_oracle_rms_norm(x, ROWS, (int64_t)len, w, 1e-6, NULL, yr);
    nkt_assert_close(y, yr, n, 2e-5, 0.0, what);
    for (size_t r = 0; r < ROWS; r++) {
        double sq = 0.0;
        for (size_t i = 0; i < len; i++)
            sq += (double)x[r * len + i] * x[r * len + i];
        wi[r] = 1.0 / sqrt(sq / (double)len + 1e-6);
    }
    check_saved(si, wi, ROWS, 1e-5, what);

    for (int lay = 0; lay < 2; lay++) {
        const nk_shape s = {1, ROWS, (int64_t)len, (nk_layout)lay};
        const char *ls = lay ? "NHWC" : "NCHW";
        if (len < 2)
            break;
        snprintf(what, sizeof what, "%s %s BatchNorm %s len %zu", isa, tag, ls, len);
        assert_int_equal(nk_batch_norm_train(x, &s, NULL, NULL, 1e-5, NULL, y, NULL, NULL, NULL),
                         NK_OK);
        nkt_oracle_norm(x, &s, NKT_BN, 1, NULL, NULL, 1e-5, NULL, yr);
        nkt_assert_close(y, yr, n, atol, 0.0, what);
        snprintf(what, sizeof what, "%s %s InstanceNorm %s len %zu", isa, tag, ls, len);
        assert_int_equal(nk_instance_norm(x, &s, NULL, NULL, 1e-5, 1, NULL, y, NULL, NULL, NULL),
                         NK_OK);
        nkt_oracle_norm(x, &s, NKT_IN, 1, NULL, NULL, 1e-5, NULL, yr);
        nkt_assert_close(y, yr, n, atol, 0.0, what);
        const nk_shape g = {ROWS, 1, (int64_t)len, (nk_layout)lay};
        snprintf(what, sizeof what, "%s %s GroupNorm %s len %zu", isa, tag, ls, len);
        assert_int_equal(nk_group_norm(x, &g, 1, NULL, NULL, 1e-5, y, NULL, NULL, NULL), NK_OK);
        nkt_oracle_norm(x, &g, NKT_GN, 1, NULL, NULL, 1e-5, NULL, yr);
        nkt_assert_close(y, yr, n, atol, 0.0, what);
    }
    free(y);
    free(w);
    free(b);
    free(yr);
}

static void test_huge_api(void **state)
{
    (void)state;
    static const size_t lens[] = {1, 3, 17, 255, 1000, 4099};
    const nk_isa saved = nk_get_isa();
    float *x = malloc(3 * 4099 * sizeof *x);
    assert_non_null(x);
    for (int i = 0; i < NKT_NUM_ISA; i++) {
        if (!nk_isa_supported((nk_isa)i))
            continue;
        assert_int_equal(nk_set_isa((nk_isa)i), NK_OK);
        nkt_rng rng;
        nkt_seed(&rng, 20);
        for (size_t li = 0; li < sizeof lens / sizeof lens[0]; li++) {
            const size_t len = lens[li];
            for (size_t fi = 0; fi < sizeof huge_f / sizeof huge_f[0]; fi++) {
                double h = overflow_halfwidth(len, huge_f[fi]), mu = 2.0 * h + 1e18;
                fill_uniform(&rng, x, 3 * len, mu, h);
                huge_api_case(x, len, mu / (h / sqrt(3.0)), nk_isa_name((nk_isa)i), "1e17..1e21");
            }
            fill_uniform(&rng, x, 3 * len, 1e30, 5e29);
            huge_api_case(x, len, 4.0, nk_isa_name((nk_isa)i), "1e30");
            fill_uniform(&rng, x, 3 * len, -1e37, 5e36);
            huge_api_case(x, len, 4.0, nk_isa_name((nk_isa)i), "1e37");
        }
    }
    assert_int_equal(nk_set_isa(saved), NK_OK);
    free(x);
}

/* Through the public API on every ISA this CPU runs. */
static void test_api_semantics(void **state)
{
    (void)state;
    const nk_isa isas[] = {NK_ISA_SCALAR, NK_ISA_AVX2, NK_ISA_AVX512, NK_ISA_NEON};
    const nk_isa saved = nk_get_isa();
    nkt_rng rng;
    for (size_t ii = 0; ii < sizeof isas / sizeof isas[0]; ii++) {
        if (!nk_isa_supported(isas[ii]))
            continue;
        assert_int_equal(nk_set_isa(isas[ii]), NK_OK);
        nkt_seed(&rng, 19);
        const int64_t D = 1031;
        float *x = malloc(4 * (size_t)D * sizeof *x), *y = malloc(4 * (size_t)D * sizeof *y);
        float *w = malloc((size_t)D * sizeof *w), *b = malloc((size_t)D * sizeof *b);
        double *yr = malloc(4 * (size_t)D * sizeof *yr);
        assert_true(x && y && w && b && yr);
        nkt_fill(&rng, w, (size_t)D, 1.0, 0.2);
        nkt_fill(&rng, b, (size_t)D, 0.0, 0.5);

        /* row shifted by +2000 (pytorch#51102) */
        nkt_fill(&rng, x, 4 * (size_t)D, 2000.0, 1.0);
        assert_int_equal(nk_layer_norm(x, 4, D, w, b, 1e-5, y, NULL, NULL, NULL), NK_OK);
        nkt_oracle_layer_norm(x, 4, D, w, b, 1e-5, NULL, yr);
        nkt_assert_close(y, yr, 4 * (size_t)D, 2e-4, 1e-4, "layer_norm +2000");

        /* [40000, 40001, 40002, 40003] (onnxruntime#28463) */
        float q[4] = {40000.0f, 40001.0f, 40002.0f, 40003.0f}, qy[4];
        double qr[4];
        assert_int_equal(nk_layer_norm(q, 1, 4, NULL, NULL, 1e-5, qy, NULL, NULL, NULL), NK_OK);
        nkt_oracle_layer_norm(q, 1, 4, NULL, NULL, 1e-5, NULL, qr);
        nkt_assert_close(qy, qr, 4, 1e-5, 1e-5, "layer_norm 40000..40003");

        /* constant rows 1234.0 of many lengths give beta exactly (onnxruntime#21935) */
        for (int64_t len = 1; len <= D; len += len < 40 ? 1 : 97) {
            for (int64_t i = 0; i < 2 * len; i++)
                x[i] = 1234.0f;
            assert_int_equal(nk_layer_norm(x, 2, len, w, b, 1e-5, y, NULL, NULL, NULL), NK_OK);
            for (int64_t i = 0; i < 2 * len; i++)
                if (y[i] != b[i % len]) {
                    print_error("%s: constant row len %lld: y[%lld] = %.9g, beta %.9g\n",
                                nk_isa_name(isas[ii]), (long long)len, (long long)i, (double)y[i],
                                (double)b[i % len]);
                    fail();
                }
        }

        /* |x| ~ 1e30 (pytorch#162489): finite, correct LayerNorm and BatchNorm */
        for (size_t i = 0; i < 4 * (size_t)D; i++)
            x[i] = (float)(1e30 * (1.0 + 0.5 * nkt_normal(&rng)));
        assert_int_equal(nk_layer_norm(x, 4, D, NULL, NULL, 1e-5, y, NULL, NULL, NULL), NK_OK);
        nkt_oracle_layer_norm(x, 4, D, NULL, NULL, 1e-5, NULL, yr);
        nkt_assert_close(y, yr, 4 * (size_t)D, 1e-4, 1e-4, "layer_norm 1e30");
        nk_shape sh = {4, 2, (D - 1) / 2, NK_CHANNELS_FIRST};
        size_t tot = (size_t)(sh.n * sh.c * sh.spatial);
        assert_int_equal(nk_batch_norm_train(x, &sh, NULL, NULL, 1e-5, NULL, y, NULL, NULL, NULL),
                         NK_OK);
        nkt_oracle_norm(x, &sh, NKT_BN, 1, NULL, NULL, 1e-5, NULL, yr);
        nkt_assert_close(y, yr, tot, 1e-4, 1e-4, "batch_norm 1e30 NCHW");
        sh.layout = NK_CHANNELS_LAST;
        assert_int_equal(nk_batch_norm_train(x, &sh, NULL, NULL, 1e-5, NULL, y, NULL, NULL, NULL),
                         NK_OK);
        nkt_oracle_norm(x, &sh, NKT_BN, 1, NULL, NULL, 1e-5, NULL, yr);
        nkt_assert_close(y, yr, tot, 1e-4, 1e-4, "batch_norm 1e30 NHWC");
        free(x);
        free(y);
        free(w);
        free(b);
        free(yr);
    }
    assert_int_equal(nk_set_isa(saved), NK_OK);
}

/* ---------------------------------------------------------------- backward */

/* n doubles between NKT_GUARD signalling-NaN canaries on each side: a
 * store and any arithmetic update (which quiets the NaN) change their bits. */
#define NKT_SNAN64 0x7ff4a5a5a5a5a5a5ull
typedef struct dbuf {
    double *base, *p;
    size_t n;
} dbuf;

/* in-range entries set to base + i * step */
static dbuf db_alloc(size_t n, double base, double step)
{
    dbuf b;
    const uint64_t canary = NKT_SNAN64;
    b.n = n;
    b.base = malloc((n + 2 * NKT_GUARD) * sizeof(double));
    assert_non_null(b.base);
    for (size_t i = 0; i < n + 2 * NKT_GUARD; i++)
        memcpy(b.base + i, &canary, sizeof canary);
    b.p = b.base + NKT_GUARD;
    for (size_t i = 0; i < n; i++)
        b.p[i] = base + (double)i * step;
    return b;
}

/* the first guard entry that changed (NKT_GUARD .. -1 before, n .. after), or
 * SIZE_MAX */
static size_t db_guard_hit(const dbuf *b)
{
    const uint64_t canary = NKT_SNAN64;
    for (size_t i = 0; i < NKT_GUARD; i++) {
        if (memcmp(b->p - 1 - i, &canary, sizeof canary))
            return (size_t)-1 - i;
        if (memcmp(b->p + b->n + i, &canary, sizeof canary))
            return b->n + i;
    }
    return SIZE_MAX;
}

static void db_free(dbuf *b)
{
    free(b->base);
    b->base = b->p = NULL;
}

/* the guards of a kernel's sums, with the call named on failure */
static void db_check(const tbl *t, const char *what, const dbuf *b, size_t rows, size_t len)
{
    const size_t hit = db_guard_hit(b);
    if (hit != SIZE_MAX)
        fail_msg("%s %s rows %zu len %zu: wrote entry %td of %zu", t->name, what, rows, len,
                 (ptrdiff_t)hit, b->n);
}

/* elements [len, stride) of every row but the last set to NaN: a kernel
 * that reads a row past its end (a vector tail lane) and lets the value
 * reach an output gives NaN there */
static void poison_padding(xbuf *b, size_t rows, size_t len, size_t stride)
{
    for (size_t r = 0; r + 1 < rows; r++)
        for (size_t i = len; i < stride; i++)
            dt_set(b->dt, b->p, r * stride + i, NAN);
}

/* g of element i (the kernels' mask) */
static float bwd_g_at(const tbl *t, const xbuf *y, const xbuf *dy, size_t i, const nk_epilogue *ep)
{
    return nk_bwd_g(dt_get(t->dt, dy->p, i), dt_get(t->dt, y->p, i), ep);
}

/* The four backward kernels of table t against its dtype's scalar kernels
 * on `rows` rows of `len` elements, row strides len + xpad (x, dx) and
 * len + ypad (y, dy), starts `shift` elements past a cache line, guard
 * zones around every buffer (the sums' in their own arrays of exactly rows
 * or len entries), NaN in the row padding of x, y and dy, and the row
 * padding of dx left as it was:
 *   sums   within 1e-5 of the sum of the magnitudes of their terms
 *   dx     within 1e-6 of the magnitudes of its three terms plus an ulp of
 *          the dtype (bitwise where the target fuses multiply-adds)
 * and dx in place over dy (equal strides) the bits of the out-of-place call. */
static void run_bwd(tbl *t, nkt_rng *rng, size_t rows, size_t len, size_t xpad, size_t ypad,
                    size_t shift, int act, int hw)
{
    const size_t xs = len + xpad, ys = len + ypad, nx = rows ? (rows - 1) * xs + len : 0;
    const size_t ny = rows ? (rows - 1) * ys + len : 0;
    float *f = malloc((nx + ny + ny + 1) * sizeof(float));
    float *par = malloc((4 * (rows > len ? rows : len) + 4) * sizeof(float));
    assert_true(f && par);
    nkt_fill(rng, f, nx + 2 * ny, 0.0, 1.0);
    xbuf x = xb_from(t->dt, f, nx, shift), y = xb_from(t->dt, f + nx, ny, (shift + 1) % 4);
    xbuf dy = xb_from(t->dt, f + nx + ny, ny, (shift + 2) % 4);
    poison_padding(&x, rows, len, xs);
    poison_padding(&y, rows, len, ys);
    poison_padding(&dy, rows, len, ys);
    xbuf d0 = xb_alloc(t->dt, nx, shift), d1 = xb_alloc(t->dt, nx, shift);
    xb_fill(&d0, 7.0f);
    xb_fill(&d1, 7.0f);
    const size_t np = rows > len ? rows : len;
    float *m = par, *k1 = par + np, *k2 = par + 2 * np, *k3 = par + 3 * np;
    nkt_fill(rng, par, 4 * np, 0.0, 1.0);
    float *w = malloc((len + 1) * sizeof(float));
    nkt_fill(rng, w, len, 0.5, 1.0);
    /* streaming stores of dx (x86) on half of the shapes */
    const nk_epilogue ep = {act, 0.25f, NKT_STREAMS > 1 ? (int)((len + rows) % 2) : 0};
    /* row sums, and column sums with per-column and per-row statistics */
    const float *wp = hw ? w : NULL;
    if (rows && len) {
        dbuf b0 = db_alloc(rows, 0.0, 0.0), b1 = db_alloc(rows, 0.0, 0.0);
        dbuf b2 = db_alloc(rows, 0.0, 0.0), b3 = db_alloc(rows, 0.0, 0.0);
        double *sg0 = b0.p, *sx0 = b1.p, *sg1 = b2.p, *sx1 = b3.p;
        t->ref->bwd_sums_rows(x.p, y.p, dy.p, rows, len, xs, ys, m, 1, wp, &ep, sg0, sx0);
        t->k.bwd_sums_rows(x.p, y.p, dy.p, rows, len, xs, ys, m, 1, wp, &ep, sg1, sx1);
        db_check(t, "bwd_sums_rows sg", &b2, rows, len);
        db_check(t, "bwd_sums_rows sgx", &b3, rows, len);
        for (size_t r = 0; r < rows; r++) {
            double ag = 0.0, ax = 0.0;
            for (size_t i = 0; i < len; i++) {
                const double g = fabs(bwd_g_at(t, &y, &dy, r * ys + i, &ep)) * (hw ? fabs(w[i]) : 1);
                ag += g;
                ax += g * fabs(dt_get(t->dt, x.p, r * xs + i) - m[r]);
            }
            if (!(fabs(sg1[r] - sg0[r]) <= 1e-5 * ag + 1e-30 && fabs(sx1[r] - sx0[r]) <= 1e-5 * ax + 1e-30))
                fail_msg("%s bwd_sums_rows rows %zu len %zu act %d w %d: row %zu {%.9g, %.9g}, "
                         "scalar {%.9g, %.9g}",
                         t->name, rows, len, act, hw, r, sg1[r], sx1[r], sg0[r], sx0[r]);
        }
        db_free(&b0);
        db_free(&b1);
        db_free(&b2);
        db_free(&b3);
        for (int mode = 0; mode < 3; mode++) {
            /* 0: per-column m; 1: per-row m and s; 2: no m. The column
             * kernel adds to its sums: they start at other values than 0 */
            const float *mc = mode == 0 ? m : NULL, *mr = mode == 1 ? k1 : NULL;
            const float *sr = mode == 1 ? k2 : NULL;
            b0 = db_alloc(len, 0.5, 0.25), b1 = db_alloc(len, -1.0, 0.125);
            b2 = db_alloc(len, 0.5, 0.25), b3 = db_alloc(len, -1.0, 0.125);
            sg0 = b0.p, sx0 = b1.p, sg1 = b2.p, sx1 = b3.p;
            t->ref->bwd_sums_cols(x.p, y.p, dy.p, rows, len, xs, ys, mc, mr, sr, &ep, sg0, sx0);
            t->k.bwd_sums_cols(x.p, y.p, dy.p, rows, len, xs, ys, mc, mr, sr, &ep, sg1, sx1);
            db_check(t, "bwd_sums_cols sg", &b2, rows, len);
            db_check(t, "bwd_sums_cols sgx", &b3, rows, len);
            for (size_t c = 0; c < len; c++) {
                double ag = 0.0, ax = 0.0;
                for (size_t r = 0; r < rows; r++) {
                    const double g = fabs(bwd_g_at(t, &y, &dy, r * ys + c, &ep));
                    const double M = mr ? mr[r] : mc ? mc[c] : 0.0;
                    ag += g;
                    ax += g * fabs((dt_get(t->dt, x.p, r * xs + c) - M) * (sr ? sr[r] : 1.0));
                }
                if (!(fabs(sg1[c] - sg0[c]) <= 1e-5 * ag + 1e-30 &&
                      fabs(sx1[c] - sx0[c]) <= 1e-5 * ax + 1e-30))
                    fail_msg("%s bwd_sums_cols mode %d rows %zu cols %zu act %d: col %zu {%.9g, "
                             "%.9g}, scalar {%.9g, %.9g}",
                             t->name, mode, rows, len, act, c, sg1[c], sx1[c], sg0[c], sx0[c]);
            }
            db_free(&b0);
            db_free(&b1);
            db_free(&b2);
            db_free(&b3);
        }
    }
    /* dx, rows then columns */
    for (int kind = 0; kind < 2 && rows && len; kind++) {
        xb_fill(&d0, 7.0f);
        xb_fill(&d1, 7.0f);
        if (kind == 0) {
            t->ref->bwd_dx_rows(x.p, y.p, dy.p, d0.p, rows, len, xs, ys, m, k1, k2, k3, 1, wp, &ep);
            t->k.bwd_dx_rows(x.p, y.p, dy.p, d1.p, rows, len, xs, ys, m, k1, k2, k3, 1, wp, &ep);
        } else {
            t->ref->bwd_dx_cols(x.p, y.p, dy.p, d0.p, rows, len, xs, ys, m, k1, k2, k3, &ep);
            t->k.bwd_dx_cols(x.p, y.p, dy.p, d1.p, rows, len, xs, ys, m, k1, k2, k3, &ep);
        }
        for (size_t r = 0; r < rows; r++)
            for (size_t i = 0; i < xs && r * xs + i < nx; i++) {
                const size_t e = r * xs + i;
                const float got = dt_get(t->dt, d1.p, e), want = dt_get(t->dt, d0.p, e);
                if (i >= len) {
                    if (got != 7.0f)
                        fail_msg("%s bwd_dx kind %d wrote row padding at %zu", t->name, kind, e);
                    continue;
                }
                const size_t p = kind ? i : r;
                const double g = bwd_g_at(t, &y, &dy, r * ys + i, &ep);
                const double terms = fabs(k1[p] * (kind == 0 && hw ? w[i] : 1.0) * g) +
                                     fabs(k2[p] * (dt_get(t->dt, x.p, e) - m[p])) + fabs(k3[p]);
                if (!dt_close(t, got, want, 1e-6 * terms))
                    fail_msg("%s bwd_dx kind %d rows %zu len %zu pad %zu/%zu act %d w %d: [%zu] = "
                             "%.9g, scalar %.9g",
                             t->name, kind, rows, len, xpad, ypad, act, hw, e, (double)got,
                             (double)want);
            }
        if (xpad == ypad) {
            /* in place over a copy of dy */
            xbuf io = xb_alloc(t->dt, nx, shift);
            memcpy(io.p, dy.p, nx * io.es);
            if (kind == 0)
                t->k.bwd_dx_rows(x.p, y.p, io.p, io.p, rows, len, xs, ys, m, k1, k2, k3, 1, wp, &ep);
            else
                t->k.bwd_dx_cols(x.p, y.p, io.p, io.p, rows, len, xs, ys, m, k1, k2, k3, &ep);
            for (size_t r = 0; r < rows; r++) {
                if (memcmp((char *)io.p + r * xs * io.es, (char *)d1.p + r * xs * io.es, len * io.es))
                    fail_msg("%s bwd_dx kind %d in place differs (row %zu, len %zu)", t->name, kind,
                             r, len);
                const size_t pad = r + 1 < rows ? xs - len : 0;
                if (memcmp((char *)io.p + (r * xs + len) * io.es,
                           (char *)dy.p + (r * xs + len) * io.es, pad * io.es))
                    fail_msg("%s bwd_dx kind %d in place wrote the padding of row %zu", t->name,
                             kind, r);
            }
            assert_true(xb_guard_ok(&io));
            xb_free(&io);
        }
    }
    assert_true(xb_guard_ok(&x) && xb_guard_ok(&y) && xb_guard_ok(&dy) && xb_guard_ok(&d0) &&
                xb_guard_ok(&d1));
    xb_free(&x);
    xb_free(&y);
    xb_free(&dy);
    xb_free(&d0);
    xb_free(&d1);
    free(f);
    free(par);
    free(w);
}

static void test_backward_kernels(void **state)
{
    (void)state;
    static const size_t big[] = {300, 513, 1000, NKT_BIG(4099)};
    for (int ti = 0; ti < ntables; ti++) {
        nkt_rng rng;
        nkt_seed(&rng, 31);
        for (int act = 0; act <= NK_ACT_LEAKY_RELU; act++)
            for (int hw = 0; hw < 2; hw++) {
                for (size_t len = 1; len <= 70; len++)
                    run_bwd(&tables[ti], &rng, 1 + len % 3, len, len % 3, (len + hw) % 3, len % 4,
                            act, hw);
                /* rows across the column kernels' chunk of 64 */
                run_bwd(&tables[ti], &rng, 130, 37, 1, 1, 1, act, hw);
                run_bwd(&tables[ti], &rng, 65, 64, 0, 0, 0, act, hw);
                for (size_t k = 0; k < sizeof big / sizeof big[0] && big[k]; k++)
                    run_bwd(&tables[ti], &rng, 2, big[k], k % 2, (k + 1) % 2, k % 4, act, hw);
            }
    }
}

/* ---------------------------------------- backward kernels at mapped edges */

/*
 * Every array of a backward kernel call placed against an inaccessible page:
 * ending where one begins, then starting where one ends. A kernel that reads
 * or writes one element outside its extents (a vector tail lane loaded or
 * stored whole, a coefficient vector loaded past the block's columns) faults,
 * whether or not the value reaches an output; masked loads and stores do not
 * fault on the lanes they leave out.
 */
typedef struct edge {
    unsigned char *map; /* inaccessible page, data pages, inaccessible page */
    size_t page, bytes; /* page size; data bytes */
} edge;

static edge edge_map(size_t bytes)
{
    edge e;
    e.page = (size_t)sysconf(_SC_PAGESIZE);
    e.bytes = (bytes + e.page - 1) / e.page * e.page;
    void *m = mmap(NULL, e.bytes + 2 * e.page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
                   -1, 0);
    assert_true(m != MAP_FAILED);
    e.map = m;
    assert_int_equal(mprotect(e.map, e.page, PROT_NONE), 0);
    assert_int_equal(mprotect(e.map + e.page + e.bytes, e.page, PROT_NONE), 0);
    return e;
}

/* n elements of es bytes against the page after the data (end) or before */
static void *edge_at(const edge *e, size_t n, size_t es, int end)
{
    unsigned char *lo = e->map + e->page;
    return end ? lo + e->bytes - n * es : lo;
}

static void edge_unmap(edge *e) { munmap(e->map, e->bytes + 2 * e->page); }

enum { EG_X, EG_Y, EG_DY, EG_DX, EG_W, EG_M, EG_K1, EG_K2, EG_K3, EG_SG, EG_SGX, EG_COUNT };
#define EDGE_ROWS 3
#define EDGE_LEN 70

/* n values of src into an edge placement of dtype dt (floats: dt F32) */
static void *edge_put(const edge *e, unsigned dt, const float *src, size_t n, int end)
{
    void *p = edge_at(e, n, dt_size(dt), end);
    for (size_t i = 0; i < n; i++)
        dt_set(dt, p, i, src[i]);
    return p;
}

static void test_backward_edges(void **state)
{
    (void)state;
    edge eg[EG_COUNT];
    for (int i = 0; i < EG_COUNT; i++)
        eg[i] = edge_map(EDGE_ROWS * EDGE_LEN * sizeof(double));
    float src[4][EDGE_ROWS * EDGE_LEN], par[4][EDGE_LEN];
    nkt_rng rng;
    nkt_seed(&rng, 37);
    for (int i = 0; i < 4; i++) {
        nkt_fill(&rng, src[i], EDGE_ROWS * EDGE_LEN, 0.0, 1.0);
        nkt_fill(&rng, par[i], EDGE_LEN, 0.5, 0.5);
    }
    for (int ti = 0; ti < ntables; ti++) {
        const tbl *t = &tables[ti];
        for (int end = 0; end < 2; end++)
            for (size_t rows = 1; rows <= EDGE_ROWS; rows++)
                for (size_t len = 1; len <= EDGE_LEN; len++)
                    for (int act = 0; act <= NK_ACT_LEAKY_RELU; act++)
                        for (int v = 0; v < 4; v++) {
                            const int hw = v & 1;
                            const nk_epilogue ep = {act, 0.25f, v >> 1};
                            const size_t nx = rows * len;
                            const void *x = edge_put(&eg[EG_X], t->dt, src[0], nx, end);
                            const void *y = edge_put(&eg[EG_Y], t->dt, src[1], nx, end);
                            const void *dy = edge_put(&eg[EG_DY], t->dt, src[2], nx, end);
                            void *dx = edge_at(&eg[EG_DX], nx, dt_size(t->dt), end);
                            const float *w = hw ? edge_put(&eg[EG_W], 0, par[0], len, end) : NULL;
                            double *sg = edge_at(&eg[EG_SG], len, sizeof(double), end);
                            double *sgx = edge_at(&eg[EG_SGX], len, sizeof(double), end);
                            /* per-row coefficients: rows entries */
                            const float *m = edge_put(&eg[EG_M], 0, par[0], rows, end);
                            const float *k1 = edge_put(&eg[EG_K1], 0, par[1], rows, end);
                            const float *k2 = edge_put(&eg[EG_K2], 0, par[2], rows, end);
                            const float *k3 = edge_put(&eg[EG_K3], 0, par[3], rows, end);
                            double *rg = edge_at(&eg[EG_SG], rows, sizeof(double), end);
                            double *rgx = edge_at(&eg[EG_SGX], rows, sizeof(double), end);
                            t->k.bwd_sums_rows(x, y, dy, rows, len, len, len, m, 1, w, &ep, rg, rgx);
                            t->k.bwd_dx_rows(x, y, dy, dx, rows, len, len, len, m, k1, k2, k3, 1, w,
                                             &ep);
                            /* per-row statistics of the column sums */
                            memset(sg, 0, len * sizeof(double));
                            memset(sgx, 0, len * sizeof(double));
                            t->k.bwd_sums_cols(x, y, dy, rows, len, len, len, NULL, k1, k2, &ep, sg,
                                               sgx);
                            /* per-column coefficients: len entries */
                            m = edge_put(&eg[EG_M], 0, par[0], len, end);
                            k1 = edge_put(&eg[EG_K1], 0, par[1], len, end);
                            k2 = edge_put(&eg[EG_K2], 0, par[2], len, end);
                            k3 = edge_put(&eg[EG_K3], 0, par[3], len, end);
                            t->k.bwd_sums_cols(x, y, dy, rows, len, len, len, m, NULL, NULL, &ep, sg,
                                               sgx);
                            t->k.bwd_dx_cols(x, y, dy, dx, rows, len, len, len, m, k1, k2, k3, &ep);
                        }
    }
    for (int i = 0; i < EG_COUNT; i++)
        edge_unmap(&eg[i]);
}

/* the outputs of 16-bit tables that differ from their reference kernels */
static void test_differ_counts(void **state)
{
    (void)state;
    print_differ();
}

/*
 * NKT_KERNELS_SMOKE set (and not "0"): every test but the long sweeps over
 * lengths and shapes, which are left out. tools/cross-test.sh runs that on
 * an emulated ARMv7 without NEON: the dispatcher offers only the scalar
 * tables there (test_tables checks it), which the default run sweeps in
 * full, and the smoke still calls every table's kernels on that CPU.
 */
int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_tables),
        cmocka_unit_test(test_moments_rows),
        cmocka_unit_test(test_moments_cols),
        cmocka_unit_test(test_moments_cols_order),
        cmocka_unit_test(test_sumsq_rows),
        cmocka_unit_test(test_norm_rows),
        cmocka_unit_test(test_norm_cols),
        cmocka_unit_test(test_norm_affine),
        cmocka_unit_test(test_inv_scale),
        cmocka_unit_test(test_widen),
        cmocka_unit_test(test_inv_std),
        cmocka_unit_test(test_bn_finalize),
        cmocka_unit_test(test_norm_inplace),
        cmocka_unit_test(test_norm_centred),
        cmocka_unit_test(test_norm_short),
        cmocka_unit_test(test_norm_short_rows_alone),
        cmocka_unit_test(test_constant_exact),
        cmocka_unit_test(test_shifted_kernels),
        cmocka_unit_test(test_huge_kernels),
        cmocka_unit_test(test_huge_api),
        cmocka_unit_test(test_api_semantics),
        cmocka_unit_test(test_dtype_conversions),
        cmocka_unit_test(test_backward_kernels),
        cmocka_unit_test(test_backward_edges),
        cmocka_unit_test(test_differ_counts),
    };
    /* the long sweeps over lengths and shapes, left out of the smoke run */
    static const char *const sweeps[] = {
        "test_moments_rows", "test_moments_cols", "test_moments_cols_order", "test_sumsq_rows",
        "test_norm_rows",    "test_norm_cols",    "test_norm_affine",        "test_norm_short"};
    const size_t nt = sizeof tests / sizeof tests[0], ns = sizeof sweeps / sizeof sweeps[0];
    const char *sm = getenv("NKT_KERNELS_SMOKE");
    if (sm && *sm && strcmp(sm, "0")) {
        struct CMUnitTest smoke[sizeof tests / sizeof tests[0]];
        size_t n = 0;
        print_message("NKT_KERNELS_SMOKE: left out");
        for (size_t i = 0; i < ns; i++)
            print_message(" %s", sweeps[i]);
        print_message("\n");
        for (size_t i = 0; i < nt; i++) {
            size_t k = 0;
            while (k < ns && strcmp(tests[i].name, sweeps[k]))
                k++;
            if (k == ns)
                smoke[n++] = tests[i];
        }
        return _cmocka_run_group_tests("kernels smoke", smoke, n, setup, NULL);
    }
    return cmocka_run_group_tests(tests, setup, NULL);
}
