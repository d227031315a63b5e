/*
 * Channels-first LayerNorm and RMSNorm (nk_layer_norm_ex / nk_rms_norm_ex
 * with desc->layout NK_CHANNELS_FIRST, ConvNeXt's LayerNorm2d): over c at
 * every (n, s) of an (N, C, S) tensor, computed through column moments
 * (ops/layer_norm_cf.c).
 *
 *   kernels   every table this build and CPU have (each ISA, each dtype, and
 *             the AVX-512 kernels built against SIMDe where there is AVX2):
 *             sumsq_cols against a float64 oracle and the scalar kernel
 *             (accumulation into acc, guard entries, the fp64 fallback of
 *             overflowing fp32 sums bit for bit); norm_cols_affine against
 *             the scalar kernel at awkward row and column counts, with and
 *             without m / gamma / beta, every activation, streaming on and
 *             off, padded strides, misaligned pointers, guarded buffers;
 *             the vector tables have kernels of their own
 *   operator  every ISA (only the dispatcher's when NORMKIT_ISA is set, so
 *             the per-ISA reruns differ), fp32 / fp16 / bf16, param_dtype
 *             fp32 or the dtype, every activation, C in {1, 3, 17, 64, 96,
 *             768}, spatial in {1, 5, 31, 3136}, n up to 3, dense and padded
 *             strides (x and y padded differently) inside guard zones, y and
 *             saved statistics against a float64 oracle (16-bit outputs:
 *             the fp32 tolerance plus one ulp of the format); in place
 *             (y == x) gives the bits of the out-of-place call
 *   threads   a pool of 3 threads and of 2 against the calling thread alone:
 *             y and the saved statistics bit for bit
 *   layouts   channels-first equals channels-last LayerNorm / RMSNorm of the
 *             transposed tensor within the fp32 tolerance
 *   golden    PyTorch's ConvNeXt LayerNorm (F.layer_norm over C of the NHWC
 *             permutation, tests/gen_golden_cf.py) on every ISA
 *   module    PyTorch / ONNX LayerNorm and RMSNorm modules with data_format
 *             NK_CHANNELS_FIRST: the functional call's bits and statistics,
 *             the golden values, the shapes and configurations refused;
 *             channels-last and the default keep the trailing dims
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dispatch/dispatch.h"
#include "golden/torch_golden_cf.h"
#include "kernels/cvt.h"
#include "nk_test.h"
#include "ops/internal.h"

#define COUNT(a) (sizeof a / sizeof a[0])

/* ----------------------------------------------------------- dtypes */

static size_t dt_size(unsigned dt) { return dt == NK_DTYPE_F32 ? 4 : 2; }

static float dt_round(unsigned dt, float v)
{
    switch (dt) {
    case NK_DTYPE_F16: return nk_f16_to_f32(nk_f32_to_f16(v));
    case NK_DTYPE_BF16: return nk_bf16_to_f32(nk_f32_to_bf16(v));
    default: return v;
    }
}

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

/* one ulp of the dtype at |v| (0 for fp32) */
static double dt_ulp(unsigned dt, double v)
{
    if (dt == NK_DTYPE_F32 || !isfinite(v))
        return 0.0;
    const int mbits = dt == NK_DTYPE_F16 ? 10 : 7, emin = dt == NK_DTYPE_F16 ? -14 : -126;
    int e = v == 0.0 ? emin : ilogb(v);
    return ldexp(1.0, (e < emin ? emin : e) - mbits);
}

static const char *const dt_names[3] = {"fp32", "fp16", "bf16"};

/* ------------------------------------------------- guarded buffers */

/* n elements of es bytes, GB canary bytes on each side, the start `shift`
 * elements past a 64-byte boundary */
#define GB 64
#define CANARY 0x5A
typedef struct gbuf {
    unsigned char *base;
    void *p;
    size_t n, es;
} gbuf;

static gbuf gb_alloc(size_t n, size_t es, size_t shift)
{
    gbuf b = {NULL, NULL, n, es};
    const size_t bytes = n * es + 2 * GB + shift * es + 64;
    b.base = malloc(bytes);
    assert_non_null(b.base);
    memset(b.base, CANARY, bytes);
    unsigned char *a = (unsigned char *)(((uintptr_t)b.base + 63) & ~(uintptr_t)63);
    b.p = a + GB + shift * es;
    return b;
}

static int gb_ok(const gbuf *b)
{
    const unsigned char *p = b->p;
    for (size_t i = 0; i < GB; i++)
        if (p[-(ptrdiff_t)i - 1] != CANARY || p[b->n * b->es + i] != CANARY)
            return 0;
    return 1;
}

static void gb_free(gbuf *b)
{
    free(b->base);
    b->base = NULL;
}

/* ---------------------------------------------------------- kernels */

typedef struct ktbl {
    char name[32];
    unsigned dt;
    const nk_kernels *k, *ref;
} ktbl;

static ktbl ktabs[5 * 3];
static int nktabs;

#if defined(NKT_HAVE_EMU) && NKT_HAVE_EMU
/* the AVX-512 kernels built against SIMDe (tests/meson.build): fp32, bf16 */
void nk_kernels_init_avx512_emu(nk_kernels *k);
void nk_kernels_init_avx512_emu_bf16(nk_kernels *k);
static nk_kernels emu_tabs[3];
#endif

static void load_ktabs(void)
{
    nktabs = 0;
    for (unsigned dt = 0; dt < 3; dt++) {
        for (int i = 0; i <= NK_ISA_NEON; i++) {
            const nk_kernels *t = nk_kernels_for_dtype((nk_isa)i, dt);
            if (!t)
                continue;
            ktbl *e = &ktabs[nktabs++];
            snprintf(e->name, sizeof e->name, "%s/%s", nk_isa_name((nk_isa)i), dt_names[dt]);
            e->dt = dt;
            e->k = t;
            e->ref = nk_kernels_for_dtype(NK_ISA_SCALAR, dt);
        }
#if defined(NKT_HAVE_EMU) && NKT_HAVE_EMU
        /* compiled with -mavx2 -mfma -mf16c: an AVX2 CPU runs it */
        if (nk_kernels_for(NK_ISA_AVX2) && dt != NK_DTYPE_F16) {
            emu_tabs[dt] = *nk_kernels_for_dtype(NK_ISA_SCALAR, dt);
            if (dt == NK_DTYPE_F32)
                nk_kernels_init_avx512_emu(&emu_tabs[dt]);
            else
                nk_kernels_init_avx512_emu_bf16(&emu_tabs[dt]);
            emu_tabs[dt].isa = NK_ISA_AVX512;
            ktbl *e = &ktabs[nktabs++];
            snprintf(e->name, sizeof e->name, "avx512-emu/%s", dt_names[dt]);
            e->dt = dt;
            e->k = &emu_tabs[dt];
            e->ref = nk_kernels_for_dtype(NK_ISA_SCALAR, dt);
        }
#endif
    }
}

static void test_kernel_entries(void **state)
{
    (void)state;
    print_message("tables:");
    for (int i = 0; i < nktabs; i++) {
        print_message(" %s", ktabs[i].name);
        assert_non_null(ktabs[i].k->sumsq_cols);
        assert_non_null(ktabs[i].k->norm_cols_affine);
        if (ktabs[i].k->isa != NK_ISA_SCALAR) {
            assert_ptr_not_equal(ktabs[i].k->sumsq_cols, ktabs[i].ref->sumsq_cols);
            assert_ptr_not_equal(ktabs[i].k->norm_cols_affine, ktabs[i].ref->norm_cols_affine);
        }
    }
    print_message("\n");
}

static void run_ssq(const ktbl *t, nkt_rng *rng, size_t rows, size_t cols, size_t pad,
                    size_t shift, double mu, double sd)
{
    const size_t stride = cols + pad, nx = (rows - 1) * stride + cols, es = dt_size(t->dt);
    float *xf = malloc(nx * sizeof *xf);
    assert_non_null(xf);
    nkt_fill(rng, xf, nx, mu, sd);
    gbuf x = gb_alloc(nx, es, shift);
    for (size_t i = 0; i < nx; i++) {
        xf[i] = dt_round(t->dt, xf[i]);
        dt_set(t->dt, x.p, i, xf[i]);
    }
    double *acc = malloc((cols + 2) * sizeof *acc), *racc = malloc(cols * sizeof *racc);
    assert_true(acc && racc);
    acc[0] = acc[cols + 1] = -7.0;
    for (size_t c = 0; c < cols; c++)
        acc[1 + c] = racc[c] = (double)(c % 3); /* accumulates */
    t->k->sumsq_cols(x.p, rows, cols, stride, acc + 1);
    t->ref->sumsq_cols(x.p, rows, cols, stride, racc);
    assert_true(acc[0] == -7.0 && acc[cols + 1] == -7.0);
    for (size_t c = 0; c < cols; c++) {
        double want = (double)(c % 3);
        for (size_t r = 0; r < rows; r++)
            want += (double)xf[r * stride + c] * xf[r * stride + c];
        if (!(fabs(acc[1 + c] - want) <= 1e-5 * want) || !(fabs(acc[1 + c] - racc[c]) <= 2e-5 * want)) {
            print_error("%s sumsq_cols (%zu, %zu) col %zu: got %.17g want %.17g scalar %.17g\n",
                        t->name, rows, cols, c, acc[1 + c], want, racc[c]);
            fail();
        }
    }
    assert_true(gb_ok(&x));
    gb_free(&x);
    free(acc);
    free(racc);
    free(xf);
}

static void test_sumsq_cols(void **state)
{
    (void)state;
    static const size_t nrows[] = {1, 2, 3, 17, 63, 64, 65, 96, 129, 768};
    static const size_t ncols[] = {1, 3, 7, 8, 15, 16, 17, 31, 32, 33, 63, 64, 65, 100, 129, 256, 257};
    for (int ti = 0; ti < nktabs; ti++) {
        nkt_rng rng;
        nkt_seed(&rng, 101);
        for (size_t a = 0; a < COUNT(nrows); a++)
            for (size_t b = 0; b < COUNT(ncols); b++)
                run_ssq(&ktabs[ti], &rng, nrows[a], ncols[b], (a + b) % 3, (a + 2 * b) % 4,
                        (double)(b % 3), 1.0 + (double)(a % 2));
    }
}

/* fp32 sums of squares that overflow: every table falls back to the same
 * fp64 sum of the chunk, so the result is the scalar kernel's bit for bit */
static void test_sumsq_cols_overflow(void **state)
{
    (void)state;
    enum { R = 70, CC = 37 };
    for (int ti = 0; ti < nktabs; ti++) {
        const ktbl *t = &ktabs[ti];
        if (t->dt == NK_DTYPE_F16)
            continue; /* fp16 squares never overflow fp32 */
        gbuf x = gb_alloc(R * CC, dt_size(t->dt), 1);
        for (size_t i = 0; i < R * CC; i++)
            dt_set(t->dt, x.p, i, (i % CC) % 3 == 0 ? 3e19f * (float)(1 + i % 5) : (float)(i % 7));
        double acc[CC] = {0}, racc[CC] = {0};
        t->k->sumsq_cols(x.p, R, CC, CC, acc);
        t->ref->sumsq_cols(x.p, R, CC, CC, racc);
        for (size_t c = 0; c < CC; c++) {
            if (!isfinite(acc[c]) || memcmp(&acc[c], &racc[c], sizeof acc[c])) {
                print_error("%s sumsq_cols overflow col %zu: %a scalar %a\n", t->name, c, acc[c],
                            racc[c]);
                fail();
            }
        }
        assert_true(gb_ok(&x));
        gb_free(&x);
    }
}

#define FILLV 777.0f

static double act_tol(int act) { return act >= NK_ACT_SILU ? 4e-6 : 4e-7; }

static void run_caff(const ktbl *t, nkt_rng *rng, size_t rows, size_t cols, size_t pad,
                     size_t xsh, size_t ysh, int flags, int act, int stream)
{
    const unsigned dt = t->dt;
    const size_t es = dt_size(dt), xstride = cols + pad, ystride = cols + (pad * 2) % 5;
    const size_t nx = (rows - 1) * xstride + cols, ny = (rows - 1) * ystride + cols;
    gbuf x = gb_alloc(nx, es, xsh), y = gb_alloc(ny, es, ysh), yr = gb_alloc(ny, es, 0);
    gbuf m = gb_alloc(cols, 4, 1), s = gb_alloc(cols, 4, 2), g = gb_alloc(rows, 4, 3),
         b = gb_alloc(rows, 4, 0);
    float *mp = m.p, *sp = s.p, *gp = g.p, *bp = b.p;
    for (size_t i = 0; i < nx; i++)
        dt_set(dt, x.p, i, (float)(10.0 + 3.0 * nkt_normal(rng)));
    for (size_t c = 0; c < cols; c++) {
        mp[c] = (float)(10.0 + nkt_normal(rng));
        sp[c] = (float)(0.3 + 0.1 * nkt_uniform(rng));
    }
    for (size_t r = 0; r < rows; r++) {
        gp[r] = (float)(1.0 + 0.3 * nkt_normal(rng));
        bp[r] = (float)(0.5 * nkt_normal(rng));
    }
    for (size_t i = 0; i < ny; i++) {
        dt_set(dt, y.p, i, FILLV);
        dt_set(dt, yr.p, i, FILLV);
    }
    const nk_epilogue ep = {act, 0.05f, stream};
    const float *M = flags & 1 ? mp : NULL, *G = flags & 2 ? gp : NULL, *B = flags & 4 ? bp : NULL;
    t->k->norm_cols_affine(x.p, y.p, rows, cols, xstride, ystride, M, sp, G, B, &ep);
    t->ref->norm_cols_affine(x.p, yr.p, rows, cols, xstride, ystride, M, sp, G, B, &ep);
    const double tol = act_tol(act);
    for (size_t r = 0; r < rows; r++)
        for (size_t i = 0; i < ystride && r * ystride + i < ny; i++) {
            const float got = dt_get(dt, y.p, r * ystride + i), want = dt_get(dt, yr.p, r * ystride + i);
            int ok;
            if (i >= cols)
                ok = got == dt_round(dt, FILLV);
            else
                ok = got == want ||
                     fabs((double)got - want) <= tol * (1.0 + fabsf(want)) + dt_ulp(dt, want);
            if (!ok) {
                print_error("%s norm_cols_affine (%zu x %zu, flags %d, act %d, stream %d): "
                            "y[%zu][%zu] = %.9g, scalar %.9g\n",
                            t->name, rows, cols, flags, act, stream, r, i, got, want);
                fail();
            }
        }
    assert_true(gb_ok(&x) && gb_ok(&y) && gb_ok(&yr) && gb_ok(&m) && gb_ok(&s) && gb_ok(&g) &&
                gb_ok(&b));
    gb_free(&x);
    gb_free(&y);
    gb_free(&yr);
    gb_free(&m);
    gb_free(&s);
    gb_free(&g);
    gb_free(&b);
}

static void test_norm_cols_affine(void **state)
{
    (void)state;
    static const size_t nrows[] = {1, 3, 17, 64};
    for (int ti = 0; ti < nktabs; ti++) {
        if (ktabs[ti].k->isa == NK_ISA_SCALAR)
            continue; /* the oracle itself */
        nkt_rng rng;
        nkt_seed(&rng, 102);
        /* every flag and store kind without an activation; each activation
         * (applied after the affine step, before the store) with every
         * flag on one store kind and the full affine on the other */
        for (int act = 0; act <= NK_ACT_GELU_TANH; act++)
            for (int stream = 0; stream < 2; stream++)
                for (int flags = 0; flags < 8; flags++) {
                    if (act != NK_ACT_NONE && stream != act % 2 && flags != 7)
                        continue;
                    /* with an activation every third width, the start
                     * rotating with the flags (all widths across them) */
                    const size_t step = act == NK_ACT_NONE ? 1 : 3;
                    for (size_t cols = 1 + (size_t)(act + flags) % step; cols <= 80; cols += step)
                        run_caff(&ktabs[ti], &rng, nrows[(cols + (size_t)flags) % 4], cols,
                                 cols % 3, cols % 4, cols % 5 == 0 ? 0 : (cols + 1) % 4, flags,
                                 act, stream);
                    static const size_t wide[] = {96, 127, 128, 200, 255, 256, 257};
                    for (size_t k = 0; k < COUNT(wide); k++)
                        run_caff(&ktabs[ti], &rng, 1 + k * 5, wide[k], k % 2 ? 0 : 16, k % 4,
                                 k % 2 ? 0 : 3, flags, act, stream);
                }
        run_caff(&ktabs[ti], &rng, 768, 80, 3056, 1, 0, 7, NK_ACT_NONE, 0);
    }
}

/* x == y: the bits of the out-of-place call */
static void test_norm_cols_affine_inplace(void **state)
{
    (void)state;
    enum { R = 17, CC = 75 };
    for (int ti = 0; ti < nktabs; ti++) {
        const ktbl *t = &ktabs[ti];
        const size_t es = dt_size(t->dt);
        nkt_rng rng;
        nkt_seed(&rng, 103);
        gbuf x = gb_alloc(R * CC, es, 1), y = gb_alloc(R * CC, es, 1);
        float m[CC], s[CC], g[R], b[R];
        for (size_t c = 0; c < CC; c++)
            m[c] = (float)nkt_normal(&rng), s[c] = (float)(0.5 + nkt_uniform(&rng));
        for (size_t r = 0; r < R; r++)
            g[r] = (float)nkt_normal(&rng), b[r] = (float)nkt_normal(&rng);
        for (int act = 0; act <= NK_ACT_GELU_TANH; act++)
            for (int stream = 0; stream < 2; stream++) {
                const nk_epilogue ep = {act, 0.1f, stream};
                for (size_t i = 0; i < R * CC; i++)
                    dt_set(t->dt, x.p, i, (float)nkt_normal(&rng));
                t->k->norm_cols_affine(x.p, y.p, R, CC, CC, CC, m, s, g, b, &ep);
                t->k->norm_cols_affine(x.p, x.p, R, CC, CC, CC, m, s, g, b, &ep);
                assert_memory_equal(x.p, y.p, R * CC * es);
            }
        assert_true(gb_ok(&x) && gb_ok(&y));
        gb_free(&x);
        gb_free(&y);
    }
}

/* --------------------------------------------------------- operator */

/* float64 oracle over c at every (n, s); x dense (N, C, S), y likewise */
static void oracle_cf(const float *x, size_t N, size_t C, size_t S, const float *w,
                      const float *b, double eps, int rms, const nk_options *o, double *y,
                      double *mean, double *inv)
{
    for (size_t n = 0; n < N; n++)
        for (size_t s = 0; s < S; s++) {
            const float *p = x + n * C * S + s;
            double mu = 0.0, v = 0.0;
            if (!rms) {
                for (size_t c = 0; c < C; c++)
                    mu += p[c * S];
                mu /= (double)C;
            }
            for (size_t c = 0; c < C; c++) {
                const double d = p[c * S] - mu;
                v += d * d;
            }
            const double r = 1.0 / sqrt(v / (double)C + eps);
            mean[n * S + s] = mu;
            inv[n * S + s] = r;
            for (size_t c = 0; c < C; c++) {
                double t = (p[c * S] - mu) * r;
                if (w)
                    t *= w[c];
                if (b)
                    t += b[c];
                y[(n * C + c) * S + s] = nkt_act(t, o);
            }
        }
}

typedef struct cf_case {
    unsigned dt, pdt;
    size_t N, C, S;
    int padded, act, rms, affine;
} cf_case;

/* strides: dense, or padded rows and samples (x and y differently) */
static void strides_of(const cf_case *k, size_t *xs0, size_t *xs1, size_t *ys0, size_t *ys1)
{
    *xs1 = k->padded ? k->S + 3 : k->S;
    *xs0 = k->padded ? k->C * *xs1 + 5 : k->C * k->S;
    *ys1 = k->padded ? k->S + 1 : k->S;
    *ys0 = k->padded ? k->C * *ys1 + 2 : k->C * k->S;
}

static size_t span(size_t N, size_t C, size_t S, size_t s0, size_t s1)
{
    return N && C && S ? (N - 1) * s0 + (C - 1) * s1 + S : 0;
}

/* Runs one call: x from xf (dense values, already rounded to the dtype) at
 * the case's x strides, y at its y strides (y == x in place); returns y's
 * buffer (caller frees) and fills the saves. */
static nk_status call_cf(const cf_case *k, const nk_context *ctx, const float *xf, const float *w,
                         const float *b, double eps, int inplace, gbuf *yout, float *smean,
                         float *sinv)
{
    size_t xs0, xs1, ys0, ys1;
    strides_of(k, &xs0, &xs1, &ys0, &ys1);
    if (inplace)
        ys0 = xs0, ys1 = xs1;
    const size_t es = dt_size(k->dt), nx = span(k->N, k->C, k->S, xs0, xs1);
    const size_t ny = span(k->N, k->C, k->S, ys0, ys1);
    gbuf x = gb_alloc(nx ? nx : 1, es, 1);
    gbuf y = inplace ? x : gb_alloc(ny ? ny : 1, es, 2);
    for (size_t i = 0; i < (inplace ? nx : ny); i++)
        dt_set(k->dt, y.p, i, FILLV);
    for (size_t n = 0; n < k->N; n++)
        for (size_t c = 0; c < k->C; c++)
            for (size_t s = 0; s < k->S; s++)
                dt_set(k->dt, x.p, n * xs0 + c * xs1 + s, xf[(n * k->C + c) * k->S + s]);
    /* parameters in the param dtype */
    uint16_t *w16 = NULL, *b16 = NULL;
    const void *wp = w, *bp = b;
    if (k->pdt != NK_DTYPE_F32) {
        w16 = malloc(k->C * 2);
        b16 = malloc(k->C * 2);
        assert_true(w16 && b16);
        for (size_t c = 0; c < k->C; c++) {
            if (w)
                dt_set(k->pdt, w16, c, w[c]);
            if (b)
                dt_set(k->pdt, b16, c, b[c]);
        }
        wp = w ? w16 : NULL;
        bp = b ? b16 : NULL;
    }
    nk_tensor_desc d = NK_TENSOR_DESC_INIT;
    d.dtype = k->dt;
    d.param_dtype = k->pdt;
    d.layout = NK_CHANNELS_FIRST;
    d.n = (int64_t)k->N;
    d.c = (int64_t)k->C;
    d.spatial = (int64_t)k->S;
    d.activation = k->act;
    d.alpha = 0.07f;
    if (k->padded) {
        d.x_stride[0] = (int64_t)xs0, d.x_stride[1] = (int64_t)xs1;
        d.y_stride[0] = (int64_t)ys0, d.y_stride[1] = (int64_t)ys1;
    }
    nk_status st = k->rms ? nk_rms_norm_ex(ctx, &d, x.p, y.p, wp, eps, sinv)
                          : nk_layer_norm_ex(ctx, &d, x.p, y.p, wp, bp, eps, smean, sinv);
    free(w16);
    free(b16);
    if (!inplace) {
        /* x untouched */
        for (size_t n = 0; n < k->N; n++)
            for (size_t c = 0; c < k->C; c++)
                for (size_t s = 0; s < k->S; s++)
                    assert_true(dt_get(k->dt, x.p, n * xs0 + c * xs1 + s) ==
                                xf[(n * k->C + c) * k->S + s]);
        assert_true(gb_ok(&x));
        gb_free(&x);
    }
    assert_true(gb_ok(&y));
    *yout = y;
    return st;
}

static float *rand_x(nkt_rng *rng, const cf_case *k, double offset)
{
    const size_t total = k->N * k->C * k->S;
    float *xf = malloc((total ? total : 1) * sizeof *xf);
    assert_non_null(xf);
    for (size_t n = 0; n < k->N; n++)
        for (size_t c = 0; c < k->C; c++) {
            /* channels with their own offsets and scales */
            const double mu = offset + 0.5 * (double)(c % 5), sd = 0.5 + 0.25 * (double)(c % 3);
            for (size_t s = 0; s < k->S; s++)
                xf[(n * k->C + c) * k->S + s] =
                    dt_round(k->dt, (float)(mu + sd * nkt_normal(rng)));
        }
    return xf;
}

static long ncalls;

static void run_case(const cf_case *k, nkt_rng *rng)
{
    const size_t N = k->N, C = k->C, S = k->S, total = N * C * S, NS = N * S;
    const double eps = 1e-5;
    float *xf = rand_x(rng, k, 2.0);
    float *w = NULL, *b = NULL;
    if (k->affine) {
        w = malloc(C * sizeof *w);
        b = malloc(C * sizeof *b);
        assert_true(w && b);
        for (size_t c = 0; c < C; c++) {
            /* the values the kernel sees: rounded to a 16-bit param dtype */
            w[c] = dt_round(k->pdt, (float)(1.0 + 0.3 * nkt_normal(rng)));
            b[c] = dt_round(k->pdt, (float)(0.3 * nkt_normal(rng)));
        }
    }
    double *want = malloc((total ? total : 1) * sizeof *want);
    double *wm = malloc((NS ? NS : 1) * sizeof *wm), *wi = malloc((NS ? NS : 1) * sizeof *wi);
    assert_true(want && wm && wi);
    const nk_options o = {(nk_activation)k->act, 0.07f};
    oracle_cf(xf, N, C, S, w, k->rms ? NULL : b, eps, k->rms, &o, want, wm, wi);

    gbuf sm = gb_alloc(NS ? NS : 1, 4, 0), si = gb_alloc(NS ? NS : 1, 4, 3);
    gbuf y;
    assert_int_equal(call_cf(k, NULL, xf, w, b, eps, 0, &y, sm.p, si.p), NK_OK);
    ncalls++;
    size_t xs0, xs1, ys0, ys1;
    strides_of(k, &xs0, &xs1, &ys0, &ys1);
    const char *what = k->rms ? "rms_norm_ex" : "layer_norm_ex";
    /* every addressed element within tolerance; every other one untouched */
    const size_t ny = span(N, C, S, ys0, ys1);
    char *addressed = calloc(ny ? ny : 1, 1);
    assert_non_null(addressed);
    for (size_t n = 0; n < N; n++)
        for (size_t c = 0; c < C; c++)
            for (size_t s = 0; s < S; s++) {
                const size_t at = n * ys0 + c * ys1 + s;
                addressed[at] = 1;
                const double r = want[(n * C + c) * S + s];
                const double g = dt_get(k->dt, y.p, at);
                const double tol = 2e-5 * (1.0 + fabs(r)) + dt_ulp(k->dt, r);
                if (!(fabs(g - r) <= tol)) {
                    print_error("%s %s/%s (%zu, %zu, %zu) padded %d act %d: y[%zu][%zu][%zu] = %.9g, "
                                "oracle %.9g\n",
                                nk_isa_name(nk_get_isa()), what, dt_names[k->dt], N, C, S,
                                k->padded, k->act, n, c, s, g, r);
                    fail();
                }
            }
    for (size_t i = 0; i < ny; i++)
        if (!addressed[i] && dt_get(k->dt, y.p, i) != dt_round(k->dt, FILLV)) {
            print_error("%s: y[%zu] between rows / samples written\n", what, i);
            fail();
        }
    free(addressed);
    /* saved statistics */
    const float *smp = sm.p, *sip = si.p;
    for (size_t i = 0; i < NS; i++) {
        if (!k->rms) {
            const double sd = 1.0 / wi[i];
            if (!(fabs(smp[i] - wm[i]) <= 1e-6 * fabs(wm[i]) + 1e-5 * sd)) {
                print_error("%s save_mean[%zu] = %.9g, oracle %.9g\n", what, i, smp[i], wm[i]);
                fail();
            }
        }
        if (!(fabs(sip[i] - wi[i]) <= 1e-5 * wi[i])) {
            print_error("%s save_invstd[%zu] = %.9g, oracle %.9g\n", what, i, sip[i], wi[i]);
            fail();
        }
    }
    assert_true(gb_ok(&sm) && gb_ok(&si));

    /* in place: the bits of the out-of-place call (small cases) */
    if (total <= 20000) {
        gbuf z;
        assert_int_equal(call_cf(k, NULL, xf, w, b, eps, 1, &z, NULL, NULL), NK_OK);
        for (size_t n = 0; n < N; n++)
            for (size_t c = 0; c < C; c++)
                for (size_t s = 0; s < S; s++) {
                    const float a = dt_get(k->dt, y.p, n * ys0 + c * ys1 + s);
                    const float bz = dt_get(k->dt, z.p, n * xs0 + c * xs1 + s);
                    if (memcmp(&a, &bz, sizeof a) && !(isnan(a) && isnan(bz))) {
                        print_error("%s in place (%zu, %zu, %zu): %a, out of place %a\n", what, N,
                                    C, S, (double)bz, (double)a);
                        fail();
                    }
                }
        gb_free(&z);
    }
    gb_free(&y);
    gb_free(&sm);
    gb_free(&si);
    free(want);
    free(wm);
    free(wi);
    free(w);
    free(b);
    free(xf);
}

static void test_operator(void **state)
{
    (void)state;
    static const size_t shapes[][3] = {
        {1, 1, 1},  {2, 1, 5},   {1, 3, 31},   {2, 17, 5},  {1, 64, 31}, {2, 96, 5},
        {1, 768, 5}, {3, 3, 1},  {2, 768, 1},  {1, 17, 3136}, {1, 96, 3136}, {2, 768, 31},
        {2, 64, 300},
    };
    const nk_isa saved = nk_get_isa();
    nk_isa isas[4];
    const int nisa = nkt_isa_list(isas);
    ncalls = 0;
    for (int ii = 0; ii < nisa; ii++) {
        assert_int_equal(nk_set_isa(isas[ii]), NK_OK);
        nkt_rng rng;
        nkt_seed(&rng, 200);
        for (unsigned dt = 0; dt < 3; dt++)
            for (unsigned pp = 0; pp < (dt ? 2u : 1u); pp++)
                for (size_t si = 0; si < COUNT(shapes); si++) {
                    const size_t total = shapes[si][0] * shapes[si][1] * shapes[si][2];
                    for (int rms = 0; rms < 2; rms++)
                        for (int act = 0; act <= NK_ACT_GELU_TANH; act++)
                            for (int padded = 0; padded < 2; padded++) {
                                /* every activation on small fp32 shapes (the
                                 * kernel tests sweep them all); elsewhere
                                 * none and one that rotates with the shape */
                                const int rot = 1 + (int)((si + 2 * (size_t)rms) % 5);
                                if ((dt != NK_DTYPE_F32 || total > 5000) && act != NK_ACT_NONE &&
                                    act != rot)
                                    continue;
                                /* large shapes: padded, fp32 parameters */
                                if (total > 50000 && (!padded || pp))
                                    continue;
                                cf_case k = {dt, pp ? dt : NK_DTYPE_F32, shapes[si][0],
                                             shapes[si][1], shapes[si][2], padded, act, rms,
                                             (int)((si + (size_t)act) % 4 != 3)};
                                run_case(&k, &rng);
                            }
                }
    }
    print_message("%ld calls checked on %d ISA(s)\n", ncalls, nisa);
    assert_int_equal(nk_set_isa(saved), NK_OK);
}

/* Empty tensors: nothing written, NK_OK. */
static void test_empty(void **state)
{
    (void)state;
    float x = 1.0f, y = 2.0f, sm = 3.0f, si = 4.0f;
    nk_tensor_desc d = NK_TENSOR_DESC_INIT;
    d.layout = NK_CHANNELS_FIRST;
    d.c = 4;
    d.n = 0;
    d.spatial = 7;
    assert_int_equal(nk_layer_norm_ex(NULL, &d, &x, &y, NULL, NULL, 1e-5, &sm, &si), NK_OK);
    d.n = 3;
    d.spatial = 0;
    assert_int_equal(nk_layer_norm_ex(NULL, &d, &x, &y, NULL, NULL, 1e-5, &sm, &si), NK_OK);
    assert_int_equal(nk_rms_norm_ex(NULL, &d, &x, &y, NULL, 1e-5, &si), NK_OK);
    assert_true(y == 2.0f && sm == 3.0f && si == 4.0f);
}

/* --------------------------------------------------------- threads */

#ifdef NKT_EMULATED
/* Under qemu user emulation (cross builds) a thread pool hangs or crashes
 * (tests/meson.build): pools that report n threads and run the tasks on
 * the caller, last index first, stand in. */
static size_t rev_threads(void *ctx) { return *(const size_t *)ctx; }
static void rev_for(void *ctx, void (*task)(void *, size_t), void *arg, size_t n)
{
    (void)ctx;
    while (n--)
        task(arg, n);
}
static size_t rev_n[2] = {3, 2};
static nk_threadpool rev_pools[2] = {{&rev_n[0], rev_threads, rev_for},
                                     {&rev_n[1], rev_threads, rev_for}};
#endif

static void test_threads(void **state)
{
    (void)state;
    static const size_t shapes[][3] = {{2, 96, 3136}, {1, 768, 200}, {3, 17, 1000}, {4, 3, 5}};
#ifdef NKT_EMULATED
    const nk_threadpool *p3 = &rev_pools[0], *p2 = &rev_pools[1];
#else
    nk_threadpool *p3 = NULL, *p2 = NULL;
    assert_int_equal(nk_threadpool_create(3, &p3), NK_OK);
    assert_int_equal(nk_threadpool_create(2, &p2), NK_OK);
#endif
    nk_context c3 = NK_CONTEXT_INIT, c2 = NK_CONTEXT_INIT;
    c3.pool = p3;
    c2.pool = p2;
    const nk_isa saved = nk_get_isa();
    nk_isa isas[4];
    const int nisa = nkt_isa_list(isas);
    for (int ii = 0; ii < nisa; ii++) {
        assert_int_equal(nk_set_isa(isas[ii]), NK_OK);
        nkt_rng rng;
        nkt_seed(&rng, 300);
        for (unsigned dt = 0; dt < 3; dt += 2)
            for (size_t si = 0; si < COUNT(shapes); si++)
                for (int rms = 0; rms < 2; rms++) {
                    cf_case k = {dt, NK_DTYPE_F32, shapes[si][0], shapes[si][1], shapes[si][2],
                                 (int)(si % 2), NK_ACT_GELU_ERF, rms, 1};
                    float *xf = rand_x(&rng, &k, 1.0);
                    float *w = malloc(k.C * sizeof *w), *b = malloc(k.C * sizeof *b);
                    for (size_t c = 0; c < k.C; c++)
                        w[c] = (float)nkt_normal(&rng), b[c] = (float)nkt_normal(&rng);
                    const size_t NS = k.N * k.S;
                    float *sm[3], *sv[3];
                    gbuf y[3];
                    const nk_context *ctxs[3] = {NULL, &c3, &c2};
                    for (int t = 0; t < 3; t++) {
                        sm[t] = malloc(NS * sizeof(float));
                        sv[t] = malloc(NS * sizeof(float));
                        assert_int_equal(call_cf(&k, ctxs[t], xf, w, b, 1e-6, 0, &y[t], sm[t], sv[t]),
                                         NK_OK);
                    }
                    for (int t = 1; t < 3; t++) {
                        assert_memory_equal(y[0].p, y[t].p, y[0].n * y[0].es);
                        if (!rms)
                            assert_memory_equal(sm[0], sm[t], NS * sizeof(float));
                        assert_memory_equal(sv[0], sv[t], NS * sizeof(float));
                    }
                    for (int t = 0; t < 3; t++) {
                        gb_free(&y[t]);
                        free(sm[t]);
                        free(sv[t]);
                    }
                    free(w);
                    free(b);
                    free(xf);
                }
    }
    assert_int_equal(nk_set_isa(saved), NK_OK);
#ifndef NKT_EMULATED
    nk_threadpool_destroy(p3);
    nk_threadpool_destroy(p2);
#endif
}

/* ---------------------------------------- channels-first vs transposed */

static void test_vs_channels_last(void **state)
{
    (void)state;
    static const size_t shapes[][3] = {{2, 3, 31}, {1, 17, 5}, {2, 96, 300}, {1, 768, 31},
                                       {1, 64, 3136}, {3, 1, 7}};
    const nk_isa saved = nk_get_isa();
    nk_isa isas[4];
    const int nisa = nkt_isa_list(isas);
    for (int ii = 0; ii < nisa; ii++) {
        assert_int_equal(nk_set_isa(isas[ii]), NK_OK);
        nkt_rng rng;
        nkt_seed(&rng, 400);
        for (size_t si = 0; si < COUNT(shapes); si++)
            for (int rms = 0; rms < 2; rms++) {
                const size_t N = shapes[si][0], C = shapes[si][1], S = shapes[si][2];
                cf_case k = {NK_DTYPE_F32, NK_DTYPE_F32, N, C, S, 0, NK_ACT_SILU, rms, 1};
                float *xf = rand_x(&rng, &k, 3.0);
                float *xt = malloc(N * C * S * sizeof *xt), *yl = malloc(N * C * S * sizeof *yl);
                float *w = malloc(C * sizeof *w), *b = malloc(C * sizeof *b);
                float *sm = malloc(N * S * sizeof *sm), *si_ = malloc(N * S * sizeof *si_);
                float *lm = malloc(N * S * sizeof *lm), *li = malloc(N * S * sizeof *li);
                assert_true(xt && yl && w && b && sm && si_ && lm && li);
                for (size_t c = 0; c < C; c++)
                    w[c] = (float)(1.0 + 0.2 * nkt_normal(&rng)), b[c] = (float)nkt_normal(&rng);
                for (size_t n = 0; n < N; n++)
                    for (size_t c = 0; c < C; c++)
                        for (size_t s = 0; s < S; s++)
                            xt[(n * S + s) * C + c] = xf[(n * C + c) * S + s];
                gbuf y;
                assert_int_equal(call_cf(&k, NULL, xf, w, b, 1e-5, 0, &y, sm, si_), NK_OK);
                nk_tensor_desc d = NK_TENSOR_DESC_INIT;
                d.layout = NK_CHANNELS_LAST;
                d.n = (int64_t)(N * S);
                d.c = (int64_t)C;
                d.spatial = 1;
                d.activation = NK_ACT_SILU;
                if (rms)
                    assert_int_equal(nk_rms_norm_ex(NULL, &d, xt, yl, w, 1e-5, li), NK_OK);
                else
                    assert_int_equal(nk_layer_norm_ex(NULL, &d, xt, yl, w, b, 1e-5, lm, li), NK_OK);
                const float *yp = y.p;
                for (size_t n = 0; n < N; n++)
                    for (size_t c = 0; c < C; c++)
                        for (size_t s = 0; s < S; s++) {
                            const double a = yp[(n * C + c) * S + s], e = yl[(n * S + s) * C + c];
                            if (!(fabs(a - e) <= 2e-5 * (1.0 + fabs(e)))) {
                                print_error("%s (%zu, %zu, %zu) rms %d: channels-first %.9g, "
                                            "channels-last of the transpose %.9g\n",
                                            nk_isa_name(isas[ii]), N, C, S, rms, a, e);
                                fail();
                            }
                        }
                for (size_t i = 0; i < N * S; i++) {
                    assert_true(fabs(si_[i] - li[i]) <= 1e-5 * li[i]);
                    if (!rms)
                        assert_true(fabs(sm[i] - lm[i]) <= 1e-6 * (fabs(lm[i]) + 1.0 / li[i]));
                }
                gb_free(&y);
                free(xf);
                free(xt);
                free(yl);
                free(w);
                free(b);
                free(sm);
                free(si_);
                free(lm);
                free(li);
            }
    }
    assert_int_equal(nk_set_isa(saved), NK_OK);
}

/* The fused entry points without a fusion are the plain calls, channels
 * first included; a fusion on a channels-first tensor is refused. */
static void test_fused_entry(void **state)
{
    (void)state;
    const size_t N = 2, C = 19, S = 37, total = N * C * S;
    nkt_rng rng;
    nkt_seed(&rng, 410);
    float *x = malloc(total * sizeof *x), *k = malloc(total * sizeof *k);
    float *y0 = malloc(total * sizeof *y0), *y1 = malloc(total * sizeof *y1);
    float w[19], b[19], m0[2 * 37], i0[2 * 37], m1[2 * 37], i1[2 * 37];
    assert_true(x && k && y0 && y1);
    for (size_t i = 0; i < total; i++)
        x[i] = (float)(2.0 + nkt_normal(&rng)), k[i] = (float)nkt_normal(&rng);
    for (size_t c = 0; c < C; c++)
        w[c] = (float)(1.0 + 0.3 * nkt_normal(&rng)), b[c] = (float)nkt_normal(&rng);
    nk_tensor_desc d = NK_TENSOR_DESC_INIT;
    d.layout = NK_CHANNELS_FIRST;
    d.n = (int64_t)N;
    d.c = (int64_t)C;
    d.spatial = (int64_t)S;
    d.activation = NK_ACT_GELU_ERF;
    for (int rms = 0; rms < 2; rms++)
        for (int given = 0; given < 2; given++) {
            nk_norm_fusion f = NK_NORM_FUSION_INIT;
            const nk_norm_fusion *fp = given ? &f : NULL;
            memset(y1, 0xA5, total * sizeof *y1);
            if (rms) {
                assert_int_equal(nk_rms_norm_ex(NULL, &d, x, y0, w, 1e-5, i0), NK_OK);
                assert_int_equal(nk_rms_norm_fused_ex(NULL, &d, fp, x, y1, w, 1e-5, i1), NK_OK);
            } else {
                assert_int_equal(nk_layer_norm_ex(NULL, &d, x, y0, w, b, 1e-5, m0, i0), NK_OK);
                assert_int_equal(nk_layer_norm_fused_ex(NULL, &d, fp, x, y1, w, b, 1e-5, m1, i1),
                                 NK_OK);
                assert_memory_equal(m0, m1, sizeof m0);
            }
            assert_memory_equal(i0, i1, sizeof i0);
            assert_memory_equal(y0, y1, total * sizeof *y0);
            /* a residual add needs channels-last rows: refused, y untouched */
            f.skip = k;
            memcpy(y1, y0, total * sizeof *y1);
            const nk_status st = rms ? nk_rms_norm_fused_ex(NULL, &d, &f, x, y1, w, 1e-5, NULL)
                                     : nk_layer_norm_fused_ex(NULL, &d, &f, x, y1, w, b, 1e-5,
                                                              NULL, NULL);
            assert_int_equal(st, NK_ERR_UNSUPPORTED);
            assert_memory_equal(y0, y1, total * sizeof *y0);
        }
    free(x);
    free(k);
    free(y0);
    free(y1);
}

/* ------------------------------------------------------------ golden */

static void test_golden(void **state)
{
    (void)state;
    const nk_isa saved = nk_get_isa();
    nk_isa isas[4];
    const int nisa = nkt_isa_list(isas);
    for (int ii = 0; ii < nisa; ii++) {
        assert_int_equal(nk_set_isa(isas[ii]), NK_OK);
        for (size_t gi = 0; gi < COUNT(gold_cf_cases); gi++) {
            const gold_cf *g = &gold_cf_cases[gi];
            const size_t total = (size_t)g->n * (size_t)g->c * (size_t)g->spatial;
            const size_t NS = (size_t)g->n * (size_t)g->spatial;
            float *y = malloc(total * sizeof *y), *sm = malloc(NS * sizeof *sm),
                  *si = malloc(NS * sizeof *si);
            assert_true(y && sm && si);
            nk_tensor_desc d = NK_TENSOR_DESC_INIT;
            d.layout = NK_CHANNELS_FIRST;
            d.n = g->n;
            d.c = g->c;
            d.spatial = g->spatial;
            if (g->rms)
                assert_int_equal(nk_rms_norm_ex(NULL, &d, g->x, y, g->w, g->eps, si), NK_OK);
            else
                assert_int_equal(nk_layer_norm_ex(NULL, &d, g->x, y, g->w, g->b, g->eps, sm, si),
                                 NK_OK);
            for (size_t i = 0; i < total; i++)
                if (!(fabs((double)y[i] - g->y[i]) <= 1e-5 * (1.0 + fabs((double)g->y[i])))) {
                    print_error("%s golden %s: y[%zu] = %.9g, torch %.9g\n", nk_isa_name(isas[ii]),
                                g->name, i, y[i], g->y[i]);
                    fail();
                }
            for (size_t i = 0; i < NS; i++) {
                assert_true(fabs((double)si[i] - g->inv[i]) <= 2e-6 * g->inv[i]);
                if (!g->rms)
                    assert_true(fabs((double)sm[i] - g->mean[i]) <=
                                1e-6 * (fabs((double)g->mean[i]) + 1.0 / g->inv[i]));
            }
            free(y);
            free(sm);
            free(si);
        }
    }
    assert_int_equal(nk_set_isa(saved), NK_OK);
}

/* ------------------------------------------------------------ module */

/* PyTorch / ONNX LayerNorm and RMSNorm with data_format NK_CHANNELS_FIRST:
 * over dim 1 of (N, C, *), the functional call's bits; PyTorch's golden
 * ConvNeXt values through the module; the configurations it refuses. */
static void test_module(void **state)
{
    (void)state;
    const gold_cf *g = &gold_cf_cases[0]; /* convnext-stem: (1, 96, 7, 7) */
    const size_t total = (size_t)g->n * (size_t)g->c * (size_t)g->spatial;
    const size_t NS = (size_t)g->n * (size_t)g->spatial;
    float *y = malloc(total * sizeof *y), *yf = malloc(total * sizeof *yf);
    float *mean = malloc(NS * sizeof *mean), *inv = malloc(NS * sizeof *inv);
    float *fm = malloc(NS * sizeof *fm), *fi = malloc(NS * sizeof *fi);
    assert_true(y && yf && mean && inv && fm && fi);
    const int64_t dims[4] = {g->n, g->c, 7, 7};
    static const nk_framework fws[] = {NK_FW_PYTORCH, NK_FW_ONNX};
    for (size_t fi_ = 0; fi_ < COUNT(fws); fi_++)
        for (int rms = 0; rms < 2; rms++) {
            nk_module_config cfg;
            nk_module_config_init(&cfg);
            cfg.data_format = NK_CHANNELS_FIRST;
            cfg.eps = g->eps;
            cfg.options.activation = NK_ACT_GELU_ERF;
            if (fws[fi_] == NK_FW_ONNX)
                cfg.axis = 1;
            nk_module *m = NULL;
            assert_int_equal(nk_module_create(fws[fi_], rms ? NK_LAYER_RMS_NORM : NK_LAYER_LAYER_NORM,
                                              2, g->c, &cfg, &m),
                             NK_OK);
            memcpy(nk_module_weight(m), g->w, (size_t)g->c * sizeof(float));
            if (!rms)
                memcpy(nk_module_bias(m), g->b, (size_t)g->c * sizeof(float));
            nk_module_outputs o = {sizeof o, 0, mean, inv, NULL, NULL};
            assert_int_equal(nk_module_forward_ex(m, g->x, 4, dims, y, &o), NK_OK);
            nk_tensor_desc d = NK_TENSOR_DESC_INIT;
            d.layout = NK_CHANNELS_FIRST;
            d.n = g->n;
            d.c = g->c;
            d.spatial = g->spatial;
            d.activation = NK_ACT_GELU_ERF;
            if (rms)
                assert_int_equal(nk_rms_norm_ex(NULL, &d, g->x, yf, g->w, g->eps, fi), NK_OK);
            else
                assert_int_equal(nk_layer_norm_ex(NULL, &d, g->x, yf, g->w, g->b, g->eps, fm, fi),
                                 NK_OK);
            assert_memory_equal(y, yf, total * sizeof *y);
            assert_memory_equal(inv, fi, NS * sizeof *inv);
            if (!rms)
                assert_memory_equal(mean, fm, NS * sizeof *mean);
            /* without the activation: PyTorch's values */
            if (!rms) {
                nk_module_config c2 = cfg;
                c2.options.activation = NK_ACT_NONE;
                nk_module *m2 = NULL;
                assert_int_equal(nk_module_create(fws[fi_], NK_LAYER_LAYER_NORM, 2, g->c, &c2, &m2),
                                 NK_OK);
                memcpy(nk_module_weight(m2), g->w, (size_t)g->c * sizeof(float));
                memcpy(nk_module_bias(m2), g->b, (size_t)g->c * sizeof(float));
                assert_int_equal(nk_module_forward(m2, g->x, 4, dims, y), NK_OK);
                for (size_t i = 0; i < total; i++)
                    assert_true(fabs((double)y[i] - g->y[i]) <= 1e-5 * (1.0 + fabs((double)g->y[i])));
                /* (N, C) input: one position per sample */
                assert_int_equal(nk_module_forward(m2, g->x, 2, (int64_t[]){49, 96}, y), NK_OK);
                /* dim 1 must be C */
                assert_int_equal(nk_module_forward(m2, g->x, 4, (int64_t[]){1, 49, 96, 1}, y),
                                 NK_ERR_BAD_SHAPE);
                assert_int_equal(nk_module_forward(m2, g->x, 1, (int64_t[]){96}, y),
                                 NK_ERR_BAD_SHAPE);
                nk_module_destroy(m2);
            }
            nk_module_destroy(m);
        }
    /* refused: more than one normalized dim, an ONNX axis other than 1 */
    nk_module_config cfg;
    nk_module_config_init(&cfg);
    cfg.data_format = NK_CHANNELS_FIRST;
    cfg.normalized_ndim = 2;
    cfg.normalized_shape[0] = 4;
    cfg.normalized_shape[1] = 4;
    nk_module *m = NULL;
    assert_int_equal(nk_module_create(NK_FW_PYTORCH, NK_LAYER_LAYER_NORM, 0, 16, &cfg, &m),
                     NK_ERR_BAD_PARAM);
    nk_module_config_init(&cfg);
    cfg.data_format = NK_CHANNELS_FIRST;
    cfg.axis = 2; /* -1 is NK_DEFAULT */
    assert_int_equal(nk_module_create(NK_FW_ONNX, NK_LAYER_LAYER_NORM, 0, 16, &cfg, &m),
                     NK_ERR_BAD_PARAM);
    /* channels-last, and the default: the trailing dim, as before */
    for (int k = 0; k < 2; k++) {
        nk_module_config_init(&cfg);
        if (k)
            cfg.data_format = NK_CHANNELS_LAST;
        assert_int_equal(nk_module_create(NK_FW_PYTORCH, NK_LAYER_LAYER_NORM, 0, 7, &cfg, &m), NK_OK);
        assert_int_equal(nk_module_forward(m, g->x, 4, (int64_t[]){1, 96, 7, 7}, y), NK_OK);
        assert_int_equal(nk_layer_norm(g->x, 96 * 7, 7, NULL, NULL, 1e-5, yf, NULL, NULL, NULL), NK_OK);
        for (size_t i = 0; i < total; i++)
            assert_true(fabs((double)y[i] - yf[i]) <= 1e-6 * (1.0 + fabs((double)yf[i])));
        nk_module_destroy(m);
    }
    free(y);
    free(yf);
    free(mean);
    free(inv);
    free(fm);
    free(fi);
}

static int setup(void **state)
{
    (void)state;
    load_ktabs();
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_kernel_entries),
        cmocka_unit_test(test_sumsq_cols),
        cmocka_unit_test(test_sumsq_cols_overflow),
        cmocka_unit_test(test_norm_cols_affine),
        cmocka_unit_test(test_norm_cols_affine_inplace),
        cmocka_unit_test(test_operator),
        cmocka_unit_test(test_empty),
        cmocka_unit_test(test_threads),
        cmocka_unit_test(test_vs_channels_last),
        cmocka_unit_test(test_fused_entry),
        cmocka_unit_test(test_golden),
        cmocka_unit_test(test_module),
    };
    if (getenv("NKT_FILTER")) /* e.g. NKT_FILTER='test_operator' */
        cmocka_set_test_filter(getenv("NKT_FILTER"));
    return cmocka_run_group_tests(tests, setup, NULL);
}
