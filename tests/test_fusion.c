/*
 * The fused LayerNorm / RMSNorm entry points (nk_layer_norm_fused_ex,
 * nk_rms_norm_fused_ex) against the specification in normkit.h:
 *
 *   residual    s = (x + skip) + skip_bias in fp32 from the widened
 *               elements, normalized by a float64 oracle (nkt_oracle_*),
 *               every activation, dtypes fp32 / fp16 / bf16, param_dtype
 *               fp32 and = dtype, every ISA this CPU runs, awkward rows and
 *               columns, skip_bias / weight / bias present or not;
 *   sum         s rounded once to the dtype, bit for bit; saved statistics
 *               are those of s;
 *   broadcast   NK_FUSION_SKIP_BROADCAST, one (spatial x c) sample added to
 *               each of n samples;
 *   strides     padded rows of x, y, skip and sum, every buffer inside guard
 *               zones: nothing outside the addressed elements is written,
 *               and the inputs are not written at all;
 *   in place    sum == x, sum == skip, y == x: the out-of-place bits;
 *   quantized   NK_QUANT_TENSOR (s8, u8) and NK_QUANT_ROW against the
 *               quantization, in double with ties to even, of v, the fp32
 *               output of the same call without quantization (fp16 / bf16:
 *               the fp32 value that call rounds, the output of the fp32 call
 *               on the widened inputs, whose rounding the 16-bit call's
 *               output is checked to be): exact ties, saturation, NaN,
 *               infinities, rows of scale 0, rows of NaN;
 *   threads     one thread against a pool of three, bitwise;
 *   bad input   the documented status, a message naming the field, every
 *               output untouched;
 *   plain       fusion NULL / NK_NORM_FUSION_INIT / no skip equal the plain
 *               _ex calls bit for bit, and in fp32 a skip equals the plain
 *               call on the precomputed fp32 sum.
 *
 * NKT_EMULATED (cross builds under qemu): fewer of the large shapes, no pool.
 */
#include <float.h>
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/cvt.h"
#include "nk_test.h"

#define COUNT(a) (sizeof a / sizeof a[0])

#ifdef NKT_EMULATED
static const int emulated = 1;
#else
static const int emulated = 0;
#endif

/* ------------------------------------------------------------ elements */

static size_t esz(unsigned dt)
{
    if (dt == NK_DTYPE_F32)
        return 4;
    if (dt == NK_DTYPE_S8 || dt == NK_DTYPE_U8)
        return 1;
    return 2;
}

static const char *dt_name(unsigned dt)
{
    static const char *const n[] = {"f32", "f16", "bf16", "s8", "u8"};
    return dt < COUNT(n) ? n[dt] : "?";
}

/* element i of p, widened to fp32 (exact) */
static float ld(unsigned dt, const void *p, int64_t i)
{
    if (dt == NK_DTYPE_F32) {
        float v;
        memcpy(&v, (const char *)p + 4 * i, 4);
        return v;
    }
    uint16_t h;
    memcpy(&h, (const char *)p + 2 * i, 2);
    return dt == NK_DTYPE_F16 ? nk_f16_to_f32(h) : nk_bf16_to_f32(h);
}

/* the bits of v rounded once to dt */
static uint32_t rbits(unsigned dt, float v)
{
    if (dt == NK_DTYPE_F32)
        return nk_f32_bits(v);
    return dt == NK_DTYPE_F16 ? nk_f32_to_f16(v) : nk_f32_to_bf16(v);
}

static uint32_t bits_at(unsigned dt, const void *p, int64_t i)
{
    if (dt == NK_DTYPE_F32) {
        uint32_t u;
        memcpy(&u, (const char *)p + 4 * i, 4);
        return u;
    }
    uint16_t h;
    memcpy(&h, (const char *)p + 2 * i, 2);
    return h;
}

static void st(unsigned dt, void *p, int64_t i, float v)
{
    if (dt == NK_DTYPE_F32) {
        memcpy((char *)p + 4 * i, &v, 4);
        return;
    }
    const uint16_t h = (uint16_t)rbits(dt, v);
    memcpy((char *)p + 2 * i, &h, 2);
}

static int is_nan_bits(unsigned dt, uint32_t b)
{
    if (dt == NK_DTYPE_F32)
        return (b & 0x7fffffffu) > 0x7f800000u;
    if (dt == NK_DTYPE_F16)
        return (b & 0x7fffu) > 0x7c00u;
    return (b & 0x7fffu) > 0x7f80u;
}

/* one ulp of the 16-bit format at |r| (the format's least denormal below
 * its smallest normal) */
static double ulp16(unsigned dt, double r)
{
    const int mbits = dt == NK_DTYPE_F16 ? 10 : 7, emin = dt == NK_DTYPE_F16 ? -14 : -126;
    int e;
    (void)frexp(fabs(r), &e); /* |r| in [2^(e-1), 2^e) */
    e -= 1;
    if (e < emin || r == 0.0)
        e = emin;
    return ldexp(1.0, e - mbits);
}

/* ------------------------------------------------------- guarded bytes */

/* A buffer of `bytes` usable bytes at p, GB bytes of guard either side,
 * shifted by `shift` bytes from 64-byte alignment. Every byte starts as a
 * pattern; gb_check compares the bytes not marked writable (mask) with the
 * snapshot taken by gb_snap. */
#define GB 64
typedef struct gbuf {
    unsigned char *base, *p, *snap, *mask;
    size_t total;
} gbuf;

static gbuf gb_new(size_t bytes, size_t shift)
{
    gbuf g;
    g.total = bytes + 2 * GB + shift + 64;
    g.base = malloc(g.total);
    g.snap = malloc(g.total);
    g.mask = calloc(g.total, 1);
    assert_true(g.base && g.snap && g.mask);
    for (size_t i = 0; i < g.total; i++)
        g.base[i] = (unsigned char)(0xA5u ^ (i * 29u));
    const uintptr_t a = ((uintptr_t)g.base + 63) & ~(uintptr_t)63;
    g.p = (unsigned char *)a + GB + shift;
    return g;
}

static void gb_free(gbuf *g)
{
    free(g->base);
    free(g->snap);
    free(g->mask);
    memset(g, 0, sizeof *g);
}

static void gb_snap(gbuf *g) { memcpy(g->snap, g->base, g->total); }

static void gb_allow(gbuf *g, size_t off, size_t len)
{
    memset(g->mask + (g->p - g->base) + off, 1, len);
}

static void gb_check(const gbuf *g, const char *name, const char *what)
{
    for (size_t i = 0; i < g->total; i++)
        if (!g->mask[i] && g->base[i] != g->snap[i]) {
            print_error("%s: %s written outside its elements (byte %td from the start)\n", what,
                        name, (ptrdiff_t)i - (g->p - g->base));
            fail();
        }
}

/* ------------------------------------------------------------ problems */

typedef struct cfg {
    int rms;
    unsigned dt, pdt;
    int64_t n, S, c;
    int act;
    int skip; /* 0 none, 1 full, 2 broadcast */
    int sb, sum, w, b;
    int xpad, ypad, kpad, spad; /* elements added to each row (0: dense strides) */
    int shift;                  /* y and sum misaligned by this many elements */
    unsigned quant, ydt;
    float yscale;
    int32_t zp;
    double eps;
    double xmean, xstd;
    uint64_t seed;
} cfg;

typedef struct geo {
    int64_t s0, s1;
} geo;

typedef struct prob {
    cfg k;
    int64_t rows;
    geo gx, gy, gk, gs;
    nk_tensor_desc d;
    nk_norm_fusion f;
    nk_options o;
    gbuf x, y, skip, sum, w, b, sb, sm, si, rs;
} prob;

static geo mkgeo(const cfg *k, int pad)
{
    geo g;
    g.s1 = k->c + pad;
    g.s0 = k->S * g.s1 + pad;
    return g;
}

static int64_t span(geo g, int64_t n, int64_t S, int64_t c)
{
    return (n - 1) * g.s0 + (S - 1) * g.s1 + c;
}

static int64_t at(geo g, int64_t n, int64_t s) { return n * g.s0 + s * g.s1; }

static void allow_rows(gbuf *b, geo g, int64_t n, int64_t S, int64_t c, size_t es)
{
    for (int64_t i = 0; i < n; i++)
        for (int64_t s = 0; s < S; s++)
            gb_allow(b, (size_t)at(g, i, s) * es, (size_t)c * es);
}

static unsigned ydt_of(const cfg *k) { return k->quant ? k->ydt : k->dt; }

static void fill(nkt_rng *r, unsigned dt, void *p, int64_t count, double mean, double std)
{
    for (int64_t i = 0; i < count; i++)
        st(dt, p, i, (float)(mean + std * nkt_normal(r)));
}

static void prob_init(prob *P, const cfg *k)
{
    memset(P, 0, sizeof *P);
    P->k = *k;
    P->rows = k->n * k->S;
    const int64_t n = k->n, S = k->S, c = k->c;
    const size_t ex = esz(k->dt), ep = esz(k->pdt), ey = esz(ydt_of(k));
    P->gx = mkgeo(k, k->xpad);
    P->gy = mkgeo(k, k->ypad);
    P->gk = mkgeo(k, k->kpad);
    P->gs = mkgeo(k, k->spad);
    if (k->skip == 2)
        P->gk.s0 = 0;
    nkt_rng r;
    nkt_seed(&r, k->seed);
    P->x = gb_new((size_t)span(P->gx, n, S, c) * ex, 0);
    P->y = gb_new((size_t)span(P->gy, n, S, c) * ey, (size_t)k->shift * ey);
    P->skip = gb_new((size_t)span(P->gk, k->skip == 2 ? 1 : n, S, c) * ex, 0);
    P->sum = gb_new((size_t)span(P->gs, n, S, c) * ex, (size_t)k->shift * ex);
    P->w = gb_new((size_t)c * ep, 0);
    P->b = gb_new((size_t)c * ep, 0);
    P->sb = gb_new((size_t)c * ep, 0);
    P->sm = gb_new((size_t)P->rows * 4, 0);
    P->si = gb_new((size_t)P->rows * 4, 0);
    P->rs = gb_new((size_t)P->rows * 4, 0);
    /* inputs on the addressed elements only: the padding keeps its pattern */
    for (int64_t i = 0; i < n; i++)
        for (int64_t s = 0; s < S; s++) {
            fill(&r, k->dt, P->x.p + (size_t)at(P->gx, i, s) * ex, c, k->xmean, k->xstd);
            if (k->skip == 1 || (k->skip == 2 && i == 0))
                fill(&r, k->dt, P->skip.p + (size_t)at(P->gk, i, s) * ex, c, 0.0, 1.0);
        }
    fill(&r, k->pdt, P->w.p, c, 1.0, 0.3);
    fill(&r, k->pdt, P->b.p, c, 0.0, 0.5);
    fill(&r, k->pdt, P->sb.p, c, 0.0, 0.3);
    allow_rows(&P->y, P->gy, n, S, c, ey);
    allow_rows(&P->sum, P->gs, n, S, c, ex);
    gb_allow(&P->sm, 0, (size_t)P->rows * 4);
    gb_allow(&P->si, 0, (size_t)P->rows * 4);
    gb_allow(&P->rs, 0, (size_t)P->rows * 4);

    nk_tensor_desc d = NK_TENSOR_DESC_INIT;
    d.dtype = k->dt;
    d.param_dtype = k->pdt;
    d.layout = NK_CHANNELS_LAST;
    d.n = n, d.c = c, d.spatial = S;
    if (k->xpad)
        d.x_stride[0] = P->gx.s0, d.x_stride[1] = P->gx.s1;
    if (k->ypad)
        d.y_stride[0] = P->gy.s0, d.y_stride[1] = P->gy.s1;
    d.activation = k->act;
    d.alpha = 0.125f;
    P->d = d;
    P->o.activation = (nk_activation)k->act;
    P->o.alpha = 0.125f;

    nk_norm_fusion f = NK_NORM_FUSION_INIT;
    if (k->skip) {
        f.skip = P->skip.p;
        if (k->skip == 2)
            f.flags = NK_FUSION_SKIP_BROADCAST;
        if (k->kpad)
            f.skip_stride[0] = P->gk.s0, f.skip_stride[1] = P->gk.s1;
    }
    if (k->sb)
        f.skip_bias = P->sb.p;
    if (k->sum) {
        f.sum = P->sum.p;
        if (k->spad)
            f.sum_stride[0] = P->gs.s0, f.sum_stride[1] = P->gs.s1;
    }
    f.quant = k->quant;
    if (k->quant) {
        f.y_dtype = k->ydt;
        f.y_scale = k->yscale;
        f.y_zero_point = k->zp;
        if (k->quant == NK_QUANT_ROW)
            f.row_scale = (float *)(void *)P->rs.p;
    }
    P->f = f;
}

static void prob_snap(prob *P)
{
    gbuf *all[] = {&P->x, &P->y, &P->skip, &P->sum, &P->w, &P->b, &P->sb, &P->sm, &P->si, &P->rs};
    for (size_t i = 0; i < COUNT(all); i++)
        gb_snap(all[i]);
}

static void prob_guards(const prob *P, const char *what)
{
    gb_check(&P->x, "x", what);
    gb_check(&P->y, "y", what);
    gb_check(&P->skip, "skip", what);
    gb_check(&P->sum, "sum", what);
    gb_check(&P->w, "weight", what);
    gb_check(&P->b, "bias", what);
    gb_check(&P->sb, "skip_bias", what);
    gb_check(&P->sm, "save_mean", what);
    gb_check(&P->si, "save_invstd", what);
    gb_check(&P->rs, "row_scale", what);
}

static void prob_free(prob *P)
{
    gbuf *all[] = {&P->x, &P->y, &P->skip, &P->sum, &P->w, &P->b, &P->sb, &P->sm, &P->si, &P->rs};
    for (size_t i = 0; i < COUNT(all); i++)
        gb_free(all[i]);
}

static nk_status prob_call_with(prob *P, const nk_context *ctx, const nk_tensor_desc *d,
                                const nk_norm_fusion *f, const void *x, void *y)
{
    const void *w = P->k.w ? P->w.p : NULL, *b = P->k.b ? P->b.p : NULL;
    float *sm = (float *)(void *)P->sm.p, *si = (float *)(void *)P->si.p;
    if (P->k.rms)
        return nk_rms_norm_fused_ex(ctx, d, f, x, y, w, P->k.eps, si);
    return nk_layer_norm_fused_ex(ctx, d, f, x, y, w, b, P->k.eps, sm, si);
}

static nk_status prob_call(prob *P, const nk_context *ctx)
{
    return prob_call_with(P, ctx, &P->d, &P->f, P->x.p, P->y.p);
}

static void describe(char *buf, size_t len, const cfg *k)
{
    snprintf(buf, len,
             "%s %s param %s %s n %lld S %lld c %lld act %d skip %d sb %d sum %d w %d b %d pads "
             "%d/%d/%d/%d shift %d quant %u %s scale %g zp %d",
             nk_isa_name(nk_get_isa()), k->rms ? "rms" : "ln", dt_name(k->pdt), dt_name(k->dt),
             (long long)k->n, (long long)k->S, (long long)k->c, k->act, k->skip, k->sb, k->sum,
             k->w, k->b, k->xpad, k->ypad, k->kpad, k->spad, k->shift, k->quant,
             k->quant ? dt_name(k->ydt) : "-", (double)k->yscale, (int)k->zp);
}

/* s = (x + skip) + skip_bias in fp32, dense rows x c */
static float *residual(const prob *P)
{
    const cfg *k = &P->k;
    float *s = malloc((size_t)(P->rows * k->c) * sizeof *s);
    assert_non_null(s);
    const size_t ex = esz(k->dt);
    for (int64_t i = 0; i < k->n; i++)
        for (int64_t sp = 0; sp < k->S; sp++) {
            const unsigned char *xr = P->x.p + (size_t)at(P->gx, i, sp) * ex;
            const unsigned char *kr =
                P->skip.p + (size_t)at(P->gk, k->skip == 2 ? 0 : i, sp) * ex;
            float *sr = s + (i * k->S + sp) * k->c;
            for (int64_t c = 0; c < k->c; c++) {
                float t = ld(k->dt, xr, c);
                if (k->skip) {
                    t = t + ld(k->dt, kr, c);
                    if (k->sb)
                        t = t + ld(k->pdt, P->sb.p, c);
                }
                sr[c] = t;
            }
        }
    return s;
}

static float *widen_params(const prob *P, const gbuf *g, int present)
{
    if (!present)
        return NULL;
    float *v = malloc((size_t)P->k.c * sizeof *v);
    assert_non_null(v);
    for (int64_t c = 0; c < P->k.c; c++)
        v[c] = ld(P->k.pdt, g->p, c);
    return v;
}

/* ------------------------------------------- the float64 oracle checks */

static void check_oracle(const prob *P, const char *what)
{
    const cfg *k = &P->k;
    const int64_t rows = P->rows, C = k->c;
    float *s = residual(P);
    float *w = widen_params(P, &P->w, k->w), *b = widen_params(P, &P->b, k->b);
    double *ref = malloc((size_t)(rows * C) * sizeof *ref);
    assert_non_null(ref);
    if (k->rms)
        nkt_oracle_rms_norm(s, rows, C, w, k->eps, &P->o, ref);
    else
        nkt_oracle_layer_norm(s, rows, C, w, b, k->eps, &P->o, ref);
    const size_t ex = esz(k->dt);
    for (int64_t i = 0; i < k->n; i++)
        for (int64_t sp = 0; sp < k->S; sp++) {
            const int64_t row = i * k->S + sp;
            const unsigned char *yr = P->y.p + (size_t)at(P->gy, i, sp) * ex;
            const unsigned char *sr = P->sum.p + (size_t)at(P->gs, i, sp) * ex;
            for (int64_t c = 0; c < C; c++) {
                const double r = ref[row * C + c], v = ld(k->dt, yr, c);
                const double tol = k->dt == NK_DTYPE_F32 ? 1e-5 + 1e-6 * fabs(r)
                                                         : ulp16(k->dt, r) + 1e-5;
                const int ok = isnan(r) ? isnan(v) : (!isnan(v) && fabs(v - r) <= tol);
                if (!ok) {
                    print_error("%s: y row %lld col %lld: got %.9g, expected %.9g (tol %g)\n",
                                what, (long long)row, (long long)c, v, r, tol);
                    fail();
                }
                if (k->sum) {
                    const float t = s[row * C + c];
                    const uint32_t got = bits_at(k->dt, sr, c), want = rbits(k->dt, t);
                    if (got != want && !(isnan(t) && is_nan_bits(k->dt, got))) {
                        print_error("%s: sum row %lld col %lld: bits %#x, expected %#x (s = %.9g)\n",
                                    what, (long long)row, (long long)c, (unsigned)got,
                                    (unsigned)want, (double)t);
                        fail();
                    }
                }
            }
            /* the saved statistics are those of s */
            const float *srow = s + row * C;
            double mean = 0.0, m2 = 0.0, ss = 0.0;
            for (int64_t c = 0; c < C; c++)
                mean += srow[c], ss += (double)srow[c] * srow[c];
            mean /= (double)C;
            for (int64_t c = 0; c < C; c++)
                m2 += (srow[c] - mean) * (srow[c] - mean);
            const float *si = (const float *)(const void *)P->si.p;
            if (k->rms) {
                const double rstd = 1.0 / sqrt(ss / (double)C + k->eps);
                if (!(fabs(si[row] - rstd) <= 1e-5 * rstd)) {
                    print_error("%s: save_rstd[%lld] %.9g, expected %.9g\n", what, (long long)row,
                                (double)si[row], rstd);
                    fail();
                }
            } else {
                const float *sm = (const float *)(const void *)P->sm.p;
                const double var = m2 / (double)C, invstd = 1.0 / sqrt(var + k->eps);
                if (!(fabs(sm[row] - mean) <= 1e-6 * (fabs(mean) + sqrt(var)) + 1e-30) ||
                    !(fabs(si[row] - invstd) <= 1e-5 * invstd)) {
                    print_error("%s: save_mean / save_invstd [%lld] %.9g / %.9g, expected %.9g / "
                                "%.9g\n",
                                what, (long long)row, (double)sm[row], (double)si[row], mean,
                                invstd);
                    fail();
                }
            }
        }
    free(s);
    free(w);
    free(b);
    free(ref);
}

static void set_isa(nk_isa isa) { assert_int_equal(nk_set_isa(isa), NK_OK); }

static cfg base_cfg(int rms, unsigned dt, unsigned pdt, int64_t n, int64_t S, int64_t c)
{
    cfg k;
    memset(&k, 0, sizeof k);
    k.rms = rms, k.dt = dt, k.pdt = pdt, k.n = n, k.S = S, k.c = c;
    k.skip = 1, k.sb = 1, k.sum = 1, k.w = 1, k.b = 1;
    k.quant = NK_QUANT_NONE, k.ydt = NK_DTYPE_S8, k.yscale = 1.0f;
    k.eps = rms ? 1e-6 : 1e-5;
    k.xmean = 1.0, k.xstd = 2.0;
    k.seed = 0xF05E0000u;
    return k;
}

/* run, check status, guards and the oracle */
static void run_checked(const cfg *k)
{
    char what[320];
    prob P;
    prob_init(&P, k);
    describe(what, sizeof what, k);
    prob_snap(&P);
    const nk_status st = prob_call(&P, NULL);
    if (st != NK_OK) {
        print_error("%s: status %d: %s\n", what, (int)st, nk_last_error());
        fail();
    }
    prob_guards(&P, what);
    check_oracle(&P, what);
    prob_free(&P);
}

/* 1, 2: the residual sweep */
static void test_residual(void **state)
{
    (void)state;
    static const int64_t cols[] = {1, 3, 17, 64, 65, 768, 1000, 4096, 5000};
    static const int64_t rowsv[] = {1, 2, 7, 33};
    nk_isa isas[4];
    const int ni = nkt_isa_list(isas);
    const nk_isa orig = nk_get_isa();
    unsigned idx = 0;
    for (int ii = 0; ii < ni; ii++) {
        set_isa(isas[ii]);
        for (int rms = 0; rms < 2; rms++)
            for (unsigned dt = NK_DTYPE_F32; dt <= NK_DTYPE_BF16; dt++)
                for (int pp = 0; pp < (dt == NK_DTYPE_F32 ? 1 : 2); pp++)
                    for (size_t ci = 0; ci < COUNT(cols); ci++)
                        for (size_t ri = 0; ri < COUNT(rowsv); ri++) {
                            if (emulated && cols[ci] >= 4096 && rowsv[ri] > 2)
                                continue;
                            cfg k = base_cfg(rms, dt, pp ? dt : NK_DTYPE_F32, rowsv[ri], 1,
                                             cols[ci]);
                            idx++;
                            k.act = (int)(idx % 6);
                            k.sb = (idx / 6) % 2;
                            k.sum = (idx / 3) % 3 != 0;
                            const unsigned aff = (idx / 5) % 3; /* both, none, weight only */
                            k.w = aff != 1;
                            k.b = aff == 0;
                            const unsigned pad = (idx / 7) % 4;
                            if (pad == 1)
                                k.xpad = 3, k.ypad = 1, k.kpad = 5, k.spad = 2;
                            else if (pad == 2)
                                k.xpad = 0, k.ypad = 7, k.kpad = 0, k.spad = 16;
                            k.shift = (int)(idx % 3);
                            k.seed = 0xF05E1000u + idx;
                            run_checked(&k);
                        }
    }
    set_isa(orig);
}

/* 3: broadcast skip, (B, S, H) with a (S, H) skip */
static void test_broadcast(void **state)
{
    (void)state;
    static const int64_t cols[] = {3, 17, 64, 768};
    nk_isa isas[4];
    const int ni = nkt_isa_list(isas);
    const nk_isa orig = nk_get_isa();
    unsigned idx = 0;
    for (int ii = 0; ii < ni; ii++) {
        set_isa(isas[ii]);
        for (int rms = 0; rms < 2; rms++)
            for (unsigned dt = NK_DTYPE_F32; dt <= NK_DTYPE_BF16; dt++)
                for (size_t ci = 0; ci < COUNT(cols); ci++) {
                    cfg k = base_cfg(rms, dt, NK_DTYPE_F32, 3, 5, cols[ci]);
                    idx++;
                    k.skip = 2;
                    k.act = (int)(idx % 6);
                    k.sb = (ci + dt + (unsigned)rms) % 2;
                    if (idx % 3 == 1)
                        k.xpad = 2, k.ypad = 5, k.kpad = 3, k.spad = 1;
                    k.seed = 0xF05E2000u + idx;
                    run_checked(&k);
                }
        /* skip_stride[0] is ignored with the broadcast */
        cfg k = base_cfg(0, NK_DTYPE_F32, NK_DTYPE_F32, 4, 3, 65);
        k.skip = 2, k.kpad = 4;
        char what[320];
        prob P;
        prob_init(&P, &k);
        P.f.skip_stride[0] = 1;
        describe(what, sizeof what, &k);
        prob_snap(&P);
        assert_int_equal(prob_call(&P, NULL), NK_OK);
        prob_guards(&P, what);
        check_oracle(&P, what);
        prob_free(&P);
    }
    set_isa(orig);
}

/* 4: every buffer padded, x / y / skip / sum with their own strides, over
 * spatial > 1 (both strides in use) */
static void test_strides(void **state)
{
    (void)state;
    nk_isa isas[4];
    const int ni = nkt_isa_list(isas);
    const nk_isa orig = nk_get_isa();
    unsigned idx = 0;
    for (int ii = 0; ii < ni; ii++) {
        set_isa(isas[ii]);
        for (int rms = 0; rms < 2; rms++)
            for (unsigned dt = NK_DTYPE_F32; dt <= NK_DTYPE_BF16; dt++)
                for (int64_t c = 15; c <= 130; c += 23) {
                    cfg k = base_cfg(rms, dt, dt, 3, 4, c);
                    idx++;
                    k.xpad = 1 + (int)(idx % 5), k.ypad = 9, k.kpad = 2 + (int)(idx % 3),
                    k.spad = 33;
                    k.shift = 1 + (int)(idx % 2);
                    k.act = NK_ACT_GELU_TANH;
                    k.seed = 0xF05E3000u + idx;
                    run_checked(&k);
                }
    }
    set_isa(orig);
}

/* ------------------------------------------------------------ in place */

static void same_elems(const unsigned char *a, geo ga, const unsigned char *b, geo gb, const cfg *k,
                       size_t es, const char *name, const char *what)
{
    for (int64_t i = 0; i < k->n; i++)
        for (int64_t s = 0; s < k->S; s++)
            if (memcmp(a + (size_t)at(ga, i, s) * es, b + (size_t)at(gb, i, s) * es,
                       (size_t)k->c * es)) {
                print_error("%s: %s row %lld differs from the reference call's\n", what, name,
                            (long long)(i * k->S + s));
                fail();
            }
}

static void same_stats(const prob *A, const prob *B, const char *what)
{
    const size_t nb = (size_t)A->rows * 4;
    if (memcmp(A->si.p, B->si.p, nb) || (!A->k.rms && memcmp(A->sm.p, B->sm.p, nb))) {
        print_error("%s: saved statistics differ from the reference call's\n", what);
        fail();
    }
}

/* 5 */
static void test_in_place(void **state)
{
    (void)state;
    nk_isa isas[4];
    const int ni = nkt_isa_list(isas);
    const nk_isa orig = nk_get_isa();
    for (int ii = 0; ii < ni; ii++) {
        set_isa(isas[ii]);
        for (int rms = 0; rms < 2; rms++)
            for (unsigned dt = NK_DTYPE_F32; dt <= NK_DTYPE_BF16; dt++)
                for (int pad = 0; pad < 2; pad++)
                    for (int mode = 0; mode < 3; mode++) { /* sum = x, sum = skip, y = x */
                        cfg k = base_cfg(rms, dt, NK_DTYPE_F32, 5, 1, 1000);
                        k.act = NK_ACT_SILU;
                        if (pad)
                            k.xpad = k.ypad = k.kpad = k.spad = 3;
                        k.seed = 0xF05E4000u + (uint64_t)(mode + 3 * pad);
                        char what[320], w2[400];
                        describe(what, sizeof what, &k);
                        static const char *const modes[] = {"sum == x", "sum == skip", "y == x"};
                        snprintf(w2, sizeof w2, "%s, %s", what, modes[mode]);
                        prob A, B;
                        prob_init(&A, &k);
                        prob_init(&B, &k);
                        assert_int_equal(prob_call(&A, NULL), NK_OK);
                        const size_t ex = esz(dt);
                        nk_norm_fusion f = B.f;
                        nk_tensor_desc d = B.d;
                        void *y = B.y.p;
                        gbuf *io = NULL;
                        if (mode == 0) {
                            f.sum = B.x.p, f.sum_stride[0] = d.x_stride[0],
                            f.sum_stride[1] = d.x_stride[1];
                            io = &B.x;
                        } else if (mode == 1) {
                            f.sum = B.skip.p, f.sum_stride[0] = f.skip_stride[0],
                            f.sum_stride[1] = f.skip_stride[1];
                            io = &B.skip;
                        } else {
                            y = B.x.p, d.y_stride[0] = d.x_stride[0],
                            d.y_stride[1] = d.x_stride[1];
                            io = &B.x;
                        }
                        allow_rows(io, mode == 1 ? B.gk : B.gx, k.n, k.S, k.c, ex);
                        prob_snap(&B);
                        const nk_status s = prob_call_with(&B, NULL, &d, &f, B.x.p, y);
                        if (s != NK_OK) {
                            print_error("%s: status %d: %s\n", w2, (int)s, nk_last_error());
                            fail();
                        }
                        prob_guards(&B, w2);
                        if (mode == 0) {
                            same_elems(B.x.p, B.gx, A.sum.p, A.gs, &k, ex, "sum (in x)", w2);
                            same_elems(B.y.p, B.gy, A.y.p, A.gy, &k, ex, "y", w2);
                        } else if (mode == 1) {
                            same_elems(B.skip.p, B.gk, A.sum.p, A.gs, &k, ex, "sum (in skip)", w2);
                            same_elems(B.y.p, B.gy, A.y.p, A.gy, &k, ex, "y", w2);
                        } else {
                            same_elems(B.x.p, B.gx, A.y.p, A.gy, &k, ex, "y (in x)", w2);
                            same_elems(B.sum.p, B.gs, A.sum.p, A.gs, &k, ex, "sum", w2);
                        }
                        same_stats(&A, &B, w2);
                        prob_free(&A);
                        prob_free(&B);
                    }
    }
    set_isa(orig);
}

/* ----------------------------------------------------------- quantized */

/* saturate(round_half_even(v / scale) + zp) to [lo, hi]; the quotient of two
 * floats in double is within half a double ulp of the exact one and cannot
 * be moved onto or off a tie by that rounding (24-bit operands) */
static int32_t qref(double v, double scale, int32_t zp, int lo, int hi)
{
    if (isnan(v))
        return zp;
    double q = rint(v / scale) + zp;
    if (q < lo)
        q = lo;
    if (q > hi)
        q = hi;
    return (int32_t)q;
}

static int32_t qload(unsigned ydt, const unsigned char *p, int64_t i)
{
    return ydt == NK_DTYPE_S8 ? (int32_t)(int8_t)p[i] : (int32_t)p[i];
}

/* V holds v: the fp32 output of the unquantized call (fp32 dtype) or of its
 * fp32 twin (fp16 / bf16: the value the 16-bit call rounds, see fp32_twin).
 * Q's y is compared with the quantization of V's y. Returns the number of
 * elements whose v / scale was an exact tie. */
static long check_quant(const prob *V, const prob *Q, const char *what)
{
    const cfg *k = &Q->k;
    const size_t ex = 4;
    const int lo = k->ydt == NK_DTYPE_S8 ? -128 : 0, hi = k->ydt == NK_DTYPE_S8 ? 127 : 255;
    const float *rs = (const float *)(const void *)Q->rs.p;
    long ties = 0;
    for (int64_t i = 0; i < k->n; i++)
        for (int64_t s = 0; s < k->S; s++) {
            const int64_t row = i * k->S + s;
            const unsigned char *vr = V->y.p + (size_t)at(V->gy, i, s) * ex;
            const unsigned char *qr = Q->y.p + (size_t)at(Q->gy, i, s);
            double scale = k->yscale;
            int32_t zp = k->zp;
            int zero_row = 0;
            if (k->quant == NK_QUANT_ROW) {
                float amax = 0.0f;
                for (int64_t c = 0; c < k->c; c++) {
                    const float v = fabsf(ld(NK_DTYPE_F32, vr, c));
                    if (!isnan(v) && v > amax)
                        amax = v;
                }
                const float want = amax / 127.0f;
                if (nk_f32_bits(rs[row]) != nk_f32_bits(want)) {
                    print_error("%s: row_scale[%lld] = %.9g, expected %.9g (absmax %.9g)\n", what,
                                (long long)row, (double)rs[row], (double)want, (double)amax);
                    fail();
                }
                scale = want;
                zp = 0;
                zero_row = !(want > 0.0f) || isinf(want);
            }
            for (int64_t c = 0; c < k->c; c++) {
                const double v = ld(NK_DTYPE_F32, vr, c);
                const int32_t want = zero_row ? 0 : qref(v, scale, zp, lo, hi);
                const int32_t got = qload(k->ydt, qr, c);
                if (!zero_row && !isnan(v) && !isinf(v)) {
                    const double q = v / scale;
                    if (q - floor(q) == 0.5)
                        ties++;
                }
                if (got != want) {
                    print_error("%s: y row %lld col %lld: %d, expected %d (v = %.9g, scale %.9g, "
                                "v / scale = %.17g, zero point %d)\n",
                                what, (long long)row, (long long)c, (int)got, (int)want, v, scale,
                                v / scale, (int)zp);
                    fail();
                }
            }
        }
    return ties;
}

/* hooks on the inputs of both problems before the calls */
typedef void (*prep_fn)(prob *P, void *arg);

/* A prob of dtype and param_dtype fp32 whose inputs are P's, widened: the
 * 16-bit call computes in fp32 what this one computes (one rounding at the
 * store), so its y is the fp32 v of P's call */
static void fp32_twin(prob *W, const prob *P)
{
    cfg k = P->k;
    k.dt = k.pdt = NK_DTYPE_F32;
    k.quant = NK_QUANT_NONE;
    prob_init(W, &k);
    const size_t ex = esz(P->k.dt);
    for (int64_t i = 0; i < k.n; i++)
        for (int64_t s = 0; s < k.S; s++) {
            for (int64_t c = 0; c < k.c; c++) {
                st(NK_DTYPE_F32, W->x.p + (size_t)at(W->gx, i, s) * 4, c,
                   ld(P->k.dt, P->x.p + (size_t)at(P->gx, i, s) * ex, c));
                if (k.skip == 1 || (k.skip == 2 && i == 0))
                    st(NK_DTYPE_F32, W->skip.p + (size_t)at(W->gk, i, s) * 4, c,
                       ld(P->k.dt, P->skip.p + (size_t)at(P->gk, i, s) * ex, c));
            }
        }
    for (int64_t c = 0; c < k.c; c++) {
        st(NK_DTYPE_F32, W->w.p, c, ld(P->k.pdt, P->w.p, c));
        st(NK_DTYPE_F32, W->b.p, c, ld(P->k.pdt, P->b.p, c));
        st(NK_DTYPE_F32, W->sb.p, c, ld(P->k.pdt, P->sb.p, c));
    }
}

/* A (unquantized) and Q (quantized) built from the same cfg apart from the
 * quantization, prep applied to both; for 16-bit dtypes W, the fp32 twin of
 * A, gives v, and A's y must be W's rounded to the dtype */
static long quant_case(const cfg *k, prep_fn prep, void *arg)
{
    cfg ku = *k;
    ku.quant = NK_QUANT_NONE;
    prob A, Q, W;
    prob_init(&A, &ku);
    prob_init(&Q, k);
    if (prep) {
        prep(&A, arg);
        prep(&Q, arg);
    }
    const int narrow = k->dt != NK_DTYPE_F32;
    if (narrow)
        fp32_twin(&W, &A);
    char what[320];
    describe(what, sizeof what, k);
    prob_snap(&Q);
    nk_status s = prob_call(&A, NULL);
    if (s == NK_OK)
        s = prob_call(&Q, NULL);
    if (s == NK_OK && narrow)
        s = prob_call(&W, NULL);
    if (s != NK_OK) {
        print_error("%s: status %d: %s\n", what, (int)s, nk_last_error());
        fail();
    }
    prob_guards(&Q, what);
    if (k->sum)
        same_elems(Q.sum.p, Q.gs, A.sum.p, A.gs, k, esz(k->dt), "sum", what);
    same_stats(&A, &Q, what);
    if (narrow) {
        same_stats(&A, &W, what);
        for (int64_t i = 0; i < k->n; i++)
            for (int64_t sp = 0; sp < k->S; sp++) {
                const unsigned char *ar = A.y.p + (size_t)at(A.gy, i, sp) * 2;
                const unsigned char *wr = W.y.p + (size_t)at(W.gy, i, sp) * 4;
                for (int64_t c = 0; c < k->c; c++) {
                    const float v = ld(NK_DTYPE_F32, wr, c);
                    const uint32_t got = bits_at(k->dt, ar, c), want = rbits(k->dt, v);
                    if (got != want && !(isnan(v) && is_nan_bits(k->dt, got))) {
                        print_error("%s: unquantized y row %lld col %lld: bits %#x, the fp32 "
                                    "path's %.9g rounds to %#x\n",
                                    what, (long long)(i * k->S + sp), (long long)c,
                                    (unsigned)got, (double)v, (unsigned)want);
                        fail();
                    }
                }
            }
    }
    const long ties = check_quant(narrow ? &W : &A, &Q, what);
    prob_free(&A);
    prob_free(&Q);
    if (narrow)
        prob_free(&W);
    return ties;
}

/* weight 0 and a bias of (j + 1/2) * scale / 2 + tiny: v = bias exactly, so
 * v / scale is a tie for even j; odd j lands on whole numbers, and biases
 * run past both ends of the range (saturation) */
typedef struct tie_arg {
    float scale;
    int kind; /* 0 ties, 1 + NaN row and Inf columns */
} tie_arg;

static void prep_ties(prob *P, void *arg)
{
    const tie_arg *t = arg;
    const cfg *k = &P->k;
    for (int64_t c = 0; c < k->c; c++) {
        st(k->pdt, P->w.p, c, 0.0f);
        const int64_t j = c - k->c / 2;
        st(k->pdt, P->b.p, c, (float)((double)j * 0.5 + 0.5) * t->scale);
    }
    if (t->kind) {
        /* +Inf and -Inf biases in two columns; a NaN in the first row's x
         * makes that row NaN */
        st(k->pdt, P->b.p, 0, INFINITY);
        if (k->c > 1)
            st(k->pdt, P->b.p, 1, -INFINITY);
        st(k->dt, P->x.p, 0, NAN);
    }
}

/* 6 */
static void test_quant_tensor(void **state)
{
    (void)state;
    static const struct {
        unsigned ydt;
        float scale;
        int32_t zp;
    } qs[] = {
        {NK_DTYPE_S8, 0.05f, 0},     {NK_DTYPE_S8, 0.0078125f, -128}, {NK_DTYPE_S8, 0.25f, 127},
        {NK_DTYPE_S8, 3.0f, 5},      {NK_DTYPE_S8, 1e-3f, -7},        {NK_DTYPE_U8, 0.05f, 128},
        {NK_DTYPE_U8, 0.015625f, 0}, {NK_DTYPE_U8, 0.5f, 255},        {NK_DTYPE_U8, 0.1f, 17},
    };
    static const int64_t cols[] = {1, 17, 65, 768, 1000};
    nk_isa isas[4];
    const int ni = nkt_isa_list(isas);
    const nk_isa orig = nk_get_isa();
    unsigned idx = 0;
    for (int ii = 0; ii < ni; ii++) {
        set_isa(isas[ii]);
        long ties = 0;
        for (int rms = 0; rms < 2; rms++)
            for (unsigned dt = NK_DTYPE_F32; dt <= NK_DTYPE_BF16; dt++)
                for (size_t qi = 0; qi < COUNT(qs); qi++)
                    for (size_t ci = 0; ci < COUNT(cols); ci++) {
                        cfg k = base_cfg(rms, dt, NK_DTYPE_F32, ci % 2 ? 7 : 2, 1, cols[ci]);
                        idx++;
                        k.quant = NK_QUANT_TENSOR;
                        k.ydt = qs[qi].ydt, k.yscale = qs[qi].scale, k.zp = qs[qi].zp;
                        k.act = (int)(idx % 6);
                        k.skip = idx % 3 ? 1 : 0;
                        k.sum = k.skip && idx % 2;
                        k.sb = k.skip && idx % 5 != 0;
                        if (idx % 4 == 1)
                            k.xpad = 3, k.ypad = 11, k.kpad = 1, k.spad = 2;
                        k.shift = (int)(idx % 3);
                        k.seed = 0xF05E5000u + idx;
                        /* random data, then exact ties (LayerNorm: v is the
                         * bias) with saturation, NaN and infinities */
                        quant_case(&k, NULL, NULL);
                        if (!rms) {
                            cfg kt = k;
                            kt.act = idx % 2 ? NK_ACT_NONE : NK_ACT_RELU;
                            tie_arg t = {k.yscale, 0};
                            ties += quant_case(&kt, prep_ties, &t);
                            t.kind = 1;
                            quant_case(&kt, prep_ties, &t);
                        }
                    }
        /* the tie construction does make ties */
        assert_true(ties > 1000);
    }
    set_isa(orig);
}

/* 7: per-row scales */
typedef struct row_arg {
    int kind;
} row_arg;

static void prep_rows(prob *P, void *arg)
{
    const row_arg *a = arg;
    const cfg *k = &P->k;
    const size_t ex = esz(k->dt);
    if (a->kind == 0)
        return;
    /* row 0 constant (LayerNorm: v = bias), row 1 constant with a zero bias
     * on the LayerNorm side (scale 0), row 2 of zeros (RMSNorm: 0 / sqrt(eps)) */
    for (int64_t c = 0; c < k->c; c++) {
        st(k->dt, P->x.p + (size_t)at(P->gx, 0, 0) * ex, c, 2.5f);
        if (k->n > 1)
            st(k->dt, P->x.p + (size_t)at(P->gx, 1, 0) * ex, c, -1.0f);
        if (k->n > 2)
            st(k->dt, P->x.p + (size_t)at(P->gx, 2, 0) * ex, c, 0.0f);
        if (k->skip) {
            for (int64_t r = 0; r < 3 && r < k->n; r++)
                st(k->dt, P->skip.p + (size_t)at(P->gk, r, 0) * ex, c, 0.0f);
        }
    }
    if (a->kind == 2)
        for (int64_t c = 0; c < k->c; c++)
            st(k->pdt, P->b.p, c, 0.0f);
    if (a->kind == 3) {
        /* a NaN column (ignored in the absmax), and a row of NaN (LayerNorm
         * and RMSNorm: a NaN in x makes the whole row NaN; the absmax of no
         * values is 0, so the row is 0) */
        st(k->pdt, P->b.p, k->c / 2, NAN);
        if (k->n > 3)
            st(k->dt, P->x.p + (size_t)at(P->gx, 3, 0) * ex, 1, NAN);
    }
    if (a->kind == 4) /* an infinite column: scale Inf, every row 0 */
        st(k->pdt, P->b.p, k->c / 2, INFINITY);
}

static void test_quant_row(void **state)
{
    (void)state;
    static const int64_t cols[] = {1, 3, 17, 64, 65, 768, 1000};
    nk_isa isas[4];
    const int ni = nkt_isa_list(isas);
    const nk_isa orig = nk_get_isa();
    unsigned idx = 0;
    for (int ii = 0; ii < ni; ii++) {
        set_isa(isas[ii]);
        for (int rms = 0; rms < 2; rms++)
            for (unsigned dt = NK_DTYPE_F32; dt <= NK_DTYPE_BF16; dt++)
                for (size_t ci = 0; ci < COUNT(cols); ci++)
                    for (int kind = 0; kind < 5; kind++) {
                        if (kind && cols[ci] < 3)
                            continue;
                        if (kind == 2 && rms) /* RMSNorm has no bias */
                            continue;
                        cfg k = base_cfg(rms, dt, dt, kind ? 4 : 7, 1, cols[ci]);
                        idx++;
                        k.quant = NK_QUANT_ROW;
                        k.act = (int)(idx % 6);
                        k.skip = idx % 3 ? 1 : 0;
                        k.sum = k.skip && idx % 2;
                        k.sb = k.skip && kind == 0 && idx % 5 != 0;
                        if (idx % 4 == 1)
                            k.xpad = 3, k.ypad = 11, k.kpad = 1, k.spad = 2;
                        if (kind)
                            k.act = NK_ACT_NONE;
                        k.seed = 0xF05E6000u + idx;
                        row_arg a = {kind};
                        quant_case(&k, prep_rows, &a);
                    }
    }
    set_isa(orig);
}

/* NK_QUANT_ROW leaves y_scale and y_zero_point unused: other values give the
 * same bytes and scales; and an empty tensor (n = 0 or spatial = 0) with
 * every fusion writes nothing */
static void test_row_unused_and_empty(void **state)
{
    (void)state;
    for (unsigned dt = NK_DTYPE_F32; dt <= NK_DTYPE_BF16; dt++) {
        cfg k = base_cfg(dt == NK_DTYPE_F16, dt, NK_DTYPE_F32, 5, 1, 65);
        k.quant = NK_QUANT_ROW;
        k.act = NK_ACT_GELU_TANH;
        prob A, B;
        prob_init(&A, &k);
        prob_init(&B, &k);
        B.f.y_scale = 0.0f, B.f.y_zero_point = 99;
        char what[320];
        describe(what, sizeof what, &k);
        assert_int_equal(prob_call(&A, NULL), NK_OK);
        const nk_status st2 = prob_call(&B, NULL);
        if (st2 != NK_OK) {
            print_error("%s: y_scale 0 and y_zero_point 99 with NK_QUANT_ROW: status %d: %s\n",
                        what, (int)st2, nk_last_error());
            fail();
        }
        same_elems(B.y.p, B.gy, A.y.p, A.gy, &k, 1, "y", what);
        if (memcmp(A.rs.p, B.rs.p, (size_t)A.rows * 4)) {
            print_error("%s: row_scale depends on y_scale / y_zero_point\n", what);
            fail();
        }
        prob_free(&A);
        prob_free(&B);
    }
    for (int e = 0; e < 2; e++)
        for (unsigned q = NK_QUANT_NONE; q <= NK_QUANT_ROW; q++) {
            cfg k = base_cfg(e, NK_DTYPE_BF16, NK_DTYPE_F32, 3, 2, 17);
            k.quant = q, k.yscale = 0.5f;
            k.skip = 1 + (int)(q % 2);
            prob P;
            prob_init(&P, &k);
            if (e)
                P.d.spatial = 0;
            else
                P.d.n = 0;
            memset(P.y.mask, 0, P.y.total);
            memset(P.sum.mask, 0, P.sum.total);
            memset(P.sm.mask, 0, P.sm.total);
            memset(P.si.mask, 0, P.si.total);
            memset(P.rs.mask, 0, P.rs.total);
            prob_snap(&P);
            char what[320];
            describe(what, sizeof what, &k);
            const nk_status s = prob_call(&P, NULL);
            if (s != NK_OK) {
                print_error("%s, empty: status %d: %s\n", what, (int)s, nk_last_error());
                fail();
            }
            prob_guards(&P, what);
            prob_free(&P);
        }
}

/* 16-bit dtypes quantize the fp32 value, not the rounded 16-bit one: bias
 * 2.50390625 (weight 0) is written as the bf16 2.5, a tie that would go to 2,
 * but quantizes (scale 1) from 2.50390625 to 3 */
static void test_quant_from_fp32(void **state)
{
    (void)state;
    nk_isa isas[4];
    const int ni = nkt_isa_list(isas);
    const nk_isa orig = nk_get_isa();
    for (int ii = 0; ii < ni; ii++) {
        set_isa(isas[ii]);
        cfg k = base_cfg(0, NK_DTYPE_BF16, NK_DTYPE_F32, 2, 1, 64);
        k.skip = 0, k.sum = 0, k.sb = 0;
        k.quant = NK_QUANT_TENSOR, k.ydt = NK_DTYPE_S8, k.yscale = 1.0f, k.zp = 0;
        cfg ku = k;
        ku.quant = NK_QUANT_NONE;
        prob A, Q;
        prob_init(&A, &ku);
        prob_init(&Q, &k);
        for (int64_t c = 0; c < k.c; c++) {
            st(NK_DTYPE_F32, A.w.p, c, 0.0f), st(NK_DTYPE_F32, Q.w.p, c, 0.0f);
            st(NK_DTYPE_F32, A.b.p, c, 2.50390625f), st(NK_DTYPE_F32, Q.b.p, c, 2.50390625f);
        }
        char what[320];
        describe(what, sizeof what, &k);
        nk_status s = prob_call(&A, NULL);
        if (s == NK_OK)
            s = prob_call(&Q, NULL);
        if (s != NK_OK) {
            print_error("%s: status %d: %s\n", what, (int)s, nk_last_error());
            fail();
        }
        for (int64_t r = 0; r < 2; r++)
            for (int64_t c = 0; c < k.c; c++) {
                const float v = ld(NK_DTYPE_BF16, A.y.p + (size_t)at(A.gy, r, 0) * 2, c);
                const int q = (int8_t)Q.y.p[at(Q.gy, r, 0) + c];
                if (v != 2.5f || q != 3) {
                    print_error("%s: row %lld col %lld: bf16 y %.9g (expected 2.5), int8 y %d "
                                "(expected 3)\n",
                                what, (long long)r, (long long)c, (double)v, q);
                    fail();
                }
            }
        prob_free(&A);
        prob_free(&Q);
    }
    set_isa(orig);
}

/* ------------------------------------------------------------- threads */

#ifndef NKT_EMULATED
/* a pool that counts the parallel_for calls it passes on to another */
typedef struct counting_pool {
    const nk_threadpool *inner;
    size_t calls;
} counting_pool;

static size_t cp_num_threads(void *c)
{
    const counting_pool *cp = c;
    return cp->inner->num_threads(cp->inner->ctx);
}

static void cp_parallel_for(void *c, void (*task)(void *arg, size_t i), void *arg, size_t n)
{
    counting_pool *cp = c;
    cp->calls++;
    cp->inner->parallel_for(cp->inner->ctx, task, arg, n);
}

/* 8: the calling thread alone against a pool of three, which the calls use */
static void test_threads(void **state)
{
    (void)state;
    nk_threadpool *pool = NULL;
    assert_int_equal(nk_threadpool_create(3, &pool), NK_OK);
    counting_pool cp = {pool, 0};
    const nk_threadpool counted = {&cp, cp_num_threads, cp_parallel_for};
    nk_context ctx = NK_CONTEXT_INIT;
    ctx.pool = &counted;
    for (int rms = 0; rms < 2; rms++)
        for (unsigned dt = NK_DTYPE_F32; dt <= NK_DTYPE_BF16; dt++)
            for (unsigned q = NK_QUANT_NONE; q <= NK_QUANT_ROW; q++) {
                cfg k = base_cfg(rms, dt, NK_DTYPE_F32, 300, 1, 768);
                k.act = NK_ACT_GELU_ERF;
                k.quant = q, k.ydt = NK_DTYPE_S8, k.yscale = 0.03f, k.zp = 3;
                k.xpad = 1, k.ypad = 2, k.kpad = 3, k.spad = 4;
                k.seed = 0xF05E7000u + q;
                prob A, B;
                prob_init(&A, &k);
                prob_init(&B, &k);
                char what[320];
                describe(what, sizeof what, &k);
                assert_int_equal(prob_call(&A, NULL), NK_OK);
                const size_t before = cp.calls;
                assert_int_equal(prob_call(&B, &ctx), NK_OK);
                if (cp.calls == before) {
                    print_error("%s: the pool was not used\n", what);
                    fail();
                }
                const size_t ey = esz(ydt_of(&k));
                same_elems(B.y.p, B.gy, A.y.p, A.gy, &k, ey, "y (3 threads)", what);
                same_elems(B.sum.p, B.gs, A.sum.p, A.gs, &k, esz(dt), "sum (3 threads)", what);
                same_stats(&A, &B, what);
                if (q == NK_QUANT_ROW && memcmp(A.rs.p, B.rs.p, (size_t)A.rows * 4)) {
                    print_error("%s: row_scale differs with 3 threads\n", what);
                    fail();
                }
                prob_free(&A);
                prob_free(&B);
            }
    nk_threadpool_destroy(pool);
}
#endif

/* ----------------------------------------------------------- bad input */

typedef struct bad_case {
    const char *name;
    nk_status status;
    const char *field; /* a substring of the message */
} bad_case;

/* 9 */
static void test_bad_input(void **state)
{
    (void)state;
    static const bad_case cases[] = {
        {"sum without skip", NK_ERR_NULL_POINTER, "sum"},
        {"row without row_scale", NK_ERR_NULL_POINTER, "row_scale"},
        {"y_scale 0", NK_ERR_BAD_PARAM, "y_scale"},
        {"y_scale -1", NK_ERR_BAD_PARAM, "y_scale"},
        {"y_scale NaN", NK_ERR_BAD_PARAM, "y_scale"},
        {"y_scale Inf", NK_ERR_BAD_PARAM, "y_scale"},
        {"y_scale -0", NK_ERR_BAD_PARAM, "y_scale"},
        {"s8 zero point 128", NK_ERR_BAD_PARAM, "y_zero_point"},
        {"s8 zero point -129", NK_ERR_BAD_PARAM, "y_zero_point"},
        {"u8 zero point -1", NK_ERR_BAD_PARAM, "y_zero_point"},
        {"u8 zero point 256", NK_ERR_BAD_PARAM, "y_zero_point"},
        {"quant 3", NK_ERR_BAD_PARAM, "quant"},
        {"y_dtype f32", NK_ERR_BAD_PARAM, "y_dtype"},
        {"y_dtype bf16", NK_ERR_BAD_PARAM, "y_dtype"},
        {"y_dtype 5", NK_ERR_BAD_PARAM, "y_dtype"},
        {"row with u8", NK_ERR_BAD_PARAM, "y_dtype"},
        {"reserved[0]", NK_ERR_BAD_PARAM, "reserved"},
        {"reserved[3]", NK_ERR_BAD_PARAM, "reserved"},
        {"flags 2", NK_ERR_BAD_PARAM, "flags"},
        {"sum == y", NK_ERR_BAD_PARAM, "sum"},
        {"y == x quantized", NK_ERR_BAD_PARAM, "y"},
        {"channels first", NK_ERR_UNSUPPORTED, "layout"},
        {"struct_size 8", NK_ERR_BAD_PARAM, "struct_size"},
        {"struct_size 0", NK_ERR_BAD_PARAM, "struct_size"},
        {"sum_stride overlapping", NK_ERR_BAD_SHAPE, "sum_stride"},
        {"skip_stride overlapping", NK_ERR_BAD_SHAPE, "skip_stride"},
        {"sum == skip broadcast", NK_ERR_BAD_PARAM, "sum"},
        {"sum == x other strides", NK_ERR_BAD_PARAM, "sum"},
        {"y == skip", NK_ERR_BAD_PARAM, "skip"},
    };
    for (int rms = 0; rms < 2; rms++)
        for (size_t ci = 0; ci < COUNT(cases); ci++) {
            const bad_case *bc = &cases[ci];
            cfg k = base_cfg(rms, NK_DTYPE_F32, NK_DTYPE_F32, 4, 1, 33);
            k.quant = NK_QUANT_TENSOR, k.ydt = NK_DTYPE_S8, k.yscale = 0.1f, k.zp = 0;
            if (!strcmp(bc->name, "row without row_scale") || !strcmp(bc->name, "row with u8"))
                k.quant = NK_QUANT_ROW;
            if (!strncmp(bc->name, "u8", 2))
                k.ydt = NK_DTYPE_U8;
            if (!strcmp(bc->name, "sum == y") || !strcmp(bc->name, "sum_stride overlapping") ||
                !strcmp(bc->name, "skip_stride overlapping") || !strncmp(bc->name, "sum ", 4) ||
                !strcmp(bc->name, "y == skip"))
                k.quant = NK_QUANT_NONE;
            if (!strcmp(bc->name, "sum == skip broadcast"))
                k.n = 2, k.S = 2, k.skip = 2;
            prob P;
            prob_init(&P, &k);
            nk_tensor_desc d = P.d;
            nk_norm_fusion f = P.f;
            const void *x = P.x.p;
            void *y = P.y.p;
            if (!strcmp(bc->name, "sum without skip"))
                f.skip = NULL;
            else if (!strcmp(bc->name, "row without row_scale"))
                f.row_scale = NULL;
            else if (!strcmp(bc->name, "y_scale 0"))
                f.y_scale = 0.0f;
            else if (!strcmp(bc->name, "y_scale -1"))
                f.y_scale = -1.0f;
            else if (!strcmp(bc->name, "y_scale NaN"))
                f.y_scale = NAN;
            else if (!strcmp(bc->name, "y_scale Inf"))
                f.y_scale = INFINITY;
            else if (!strcmp(bc->name, "y_scale -0"))
                f.y_scale = -0.0f;
            else if (!strcmp(bc->name, "s8 zero point 128"))
                f.y_zero_point = 128;
            else if (!strcmp(bc->name, "s8 zero point -129"))
                f.y_zero_point = -129;
            else if (!strcmp(bc->name, "u8 zero point -1"))
                f.y_zero_point = -1;
            else if (!strcmp(bc->name, "u8 zero point 256"))
                f.y_zero_point = 256;
            else if (!strcmp(bc->name, "quant 3"))
                f.quant = 3;
            else if (!strcmp(bc->name, "y_dtype f32"))
                f.y_dtype = NK_DTYPE_F32;
            else if (!strcmp(bc->name, "y_dtype bf16"))
                f.y_dtype = NK_DTYPE_BF16;
            else if (!strcmp(bc->name, "y_dtype 5"))
                f.y_dtype = 5;
            else if (!strcmp(bc->name, "row with u8"))
                f.y_dtype = NK_DTYPE_U8;
            else if (!strcmp(bc->name, "reserved[0]"))
                f.reserved[0] = 1;
            else if (!strcmp(bc->name, "reserved[3]"))
                f.reserved[3] = 0x8000000000000000ull;
            else if (!strcmp(bc->name, "flags 2"))
                f.flags = 2;
            else if (!strcmp(bc->name, "sum == y"))
                f.sum = y;
            else if (!strcmp(bc->name, "y == x quantized"))
                y = (void *)(uintptr_t)x;
            else if (!strcmp(bc->name, "channels first"))
                d.layout = NK_CHANNELS_FIRST;
            else if (!strcmp(bc->name, "struct_size 8"))
                f.struct_size = 8;
            else if (!strcmp(bc->name, "struct_size 0"))
                f.struct_size = 0;
            else if (!strcmp(bc->name, "sum_stride overlapping"))
                f.sum_stride[0] = 16, f.sum_stride[1] = 33; /* rows of 33 every 16 */
            else if (!strcmp(bc->name, "skip_stride overlapping"))
                f.skip_stride[0] = 20, f.skip_stride[1] = 33;
            else if (!strcmp(bc->name, "sum == skip broadcast"))
                f.sum = (void *)(uintptr_t)f.skip;
            else if (!strcmp(bc->name, "sum == x other strides"))
                f.sum = P.x.p, f.sum_stride[0] = 40, f.sum_stride[1] = 33;
            else if (!strcmp(bc->name, "y == skip"))
                y = (void *)(uintptr_t)f.skip;
            /* every output holds its pattern; x and skip too (aliases) */
            prob_snap(&P);
            memset(P.y.mask, 0, P.y.total);
            memset(P.sum.mask, 0, P.sum.total);
            memset(P.sm.mask, 0, P.sm.total);
            memset(P.si.mask, 0, P.si.total);
            memset(P.rs.mask, 0, P.rs.total);
            char what[360];
            snprintf(what, sizeof what, "%s: %s", rms ? "rms" : "ln", bc->name);
            const nk_status s = prob_call_with(&P, NULL, &d, &f, x, y);
            const char *msg = nk_last_error();
            if (s != bc->status) {
                print_error("%s: status %d, expected %d (%s)\n", what, (int)s, (int)bc->status, msg);
                fail();
            }
            if (getenv("NKT_VERBOSE"))
                printf("%s: %s\n", what, msg);
            if (!strstr(msg, bc->field)) {
                print_error("%s: the message does not name %s: \"%s\"\n", what, bc->field, msg);
                fail();
            }
            prob_guards(&P, what);
            prob_free(&P);
        }
}

/* ------------------------------------------------- the plain functions */

/* 9 (fusion NULL) and 10 */
static void test_plain(void **state)
{
    (void)state;
    static const int64_t cols[] = {1, 17, 65, 768, 1000};
    nk_isa isas[4];
    const int ni = nkt_isa_list(isas);
    const nk_isa orig = nk_get_isa();
    unsigned idx = 0;
    for (int ii = 0; ii < ni; ii++) {
        set_isa(isas[ii]);
        for (int rms = 0; rms < 2; rms++)
            for (unsigned dt = NK_DTYPE_F32; dt <= NK_DTYPE_BF16; dt++)
                for (size_t ci = 0; ci < COUNT(cols); ci++)
                    for (int mode = 0; mode < 4; mode++) {
                        /* 0 fusion NULL, 1 NK_NORM_FUSION_INIT, 2 no skip but
                         * a quant field of NONE, 3 skip against the plain
                         * call on the fp32 sum (fp32 only) */
                        if (mode == 3 && dt != NK_DTYPE_F32)
                            continue;
                        cfg k = base_cfg(rms, dt, dt, 7, 1, cols[ci]);
                        idx++;
                        /* every mode sees every activation, affine and padding */
                        const unsigned h = (unsigned)(ci + 5 * (size_t)rms + 3 * dt);
                        k.act = (int)(h % 6);
                        k.skip = mode == 3, k.sum = 0, k.sb = mode == 3 && (ci + rms) % 2;
                        k.w = h % 3 != 1, k.b = h % 3 == 0;
                        if ((ci + mode + rms) % 2)
                            k.xpad = 2, k.ypad = 3, k.kpad = 4;
                        k.seed = 0xF05E8000u + idx;
                        char what[320], w2[360];
                        describe(what, sizeof what, &k);
                        snprintf(w2, sizeof w2, "%s, mode %d", what, mode);
                        prob F, R;
                        prob_init(&F, &k);
                        prob_init(&R, &k);
                        const nk_norm_fusion init = NK_NORM_FUSION_INIT;
                        const nk_norm_fusion *fp = mode == 0 ? NULL : mode == 1 ? &init : &F.f;
                        assert_int_equal(prob_call_with(&F, NULL, &F.d, fp, F.x.p, F.y.p), NK_OK);
                        if (mode == 3) { /* R's x becomes (x + skip) + skip_bias */
                            float *s = residual(&R);
                            for (int64_t r = 0; r < R.rows; r++)
                                memcpy(R.x.p + (size_t)at(R.gx, r, 0) * 4, s + r * k.c,
                                       (size_t)k.c * 4);
                            free(s);
                        }
                        const void *w = k.w ? R.w.p : NULL, *b = k.b ? R.b.p : NULL;
                        float *sm = (float *)(void *)R.sm.p, *si = (float *)(void *)R.si.p;
                        const nk_status s =
                            rms ? nk_rms_norm_ex(NULL, &R.d, R.x.p, R.y.p, w, k.eps, si)
                                : nk_layer_norm_ex(NULL, &R.d, R.x.p, R.y.p, w, b, k.eps, sm, si);
                        assert_int_equal(s, NK_OK);
                        same_elems(F.y.p, F.gy, R.y.p, R.gy, &k, esz(dt), "y", w2);
                        same_stats(&F, &R, w2);
                        prob_free(&F);
                        prob_free(&R);
                    }
    }
    set_isa(orig);
}

int main(void)
{
    if (getenv("NKT_FILTER"))
        cmocka_set_test_filter(getenv("NKT_FILTER"));
    printf("ISA %s\n", nk_isa_name(nk_get_isa()));
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_residual),
        cmocka_unit_test(test_broadcast),
        cmocka_unit_test(test_strides),
        cmocka_unit_test(test_in_place),
        cmocka_unit_test(test_quant_tensor),
        cmocka_unit_test(test_quant_row),
        cmocka_unit_test(test_quant_from_fp32),
        cmocka_unit_test(test_row_unused_and_empty),
#ifndef NKT_EMULATED
        cmocka_unit_test(test_threads),
#endif
        cmocka_unit_test(test_bad_input),
        cmocka_unit_test(test_plain),
    };
    return cmocka_run_group_tests_name("fusion", tests, NULL, NULL);
}
