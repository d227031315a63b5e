/*
 * Cases the other suites leave out, on every ISA this CPU runs:
 *   - in place (x == y) through every public operator, both layouts, with an
 *     activation: bitwise equal to the out-of-place call, running statistics
 *     and saved statistics included;
 *   - save_mean / save_invstd of InstanceNorm and GroupNorm with N > 1, and
 *     LayerNorm / RMSNorm outputs and saved statistics, against float64;
 *   - subnormal inputs: computed as IEEE values (the library never touches
 *     the floating-point environment), flushed where the hardware flushes
 *     (ARMv7 NEON) or where the caller's thread asks for it (x86 MXCSR
 *     FTZ/DAZ), and MXCSR is left exactly as the caller set it.
 */
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#if defined(__x86_64__) || defined(__i386__)
#  include <xmmintrin.h>
#  define NKT_X86 1
#else
#  define NKT_X86 0
#endif

#include "nk_test.h"

#define NUM_ISA (NK_ISA_NEON + 1)
#define ATOL 1e-5

static const nk_options acts[] = {
    {NK_ACT_NONE, 0.0f},    {NK_ACT_RELU, 0.0f},     {NK_ACT_LEAKY_RELU, 0.2f},
    {NK_ACT_SILU, 0.0f},    {NK_ACT_GELU_ERF, 0.0f}, {NK_ACT_GELU_TANH, 0.0f},
};

static size_t idx(const nk_shape *s, int64_t n, int64_t c, int64_t p)
{
    if (s->layout == NK_CHANNELS_FIRST)
        return (size_t)((n * s->c + c) * s->spatial + p);
    return (size_t)((n * s->spatial + p) * s->c + c);
}

static size_t numel(const nk_shape *s) { return (size_t)(s->n * s->c * s->spatial); }

static float *falloc(size_t n)
{
    float *p = malloc((n ? n : 1) * sizeof *p);
    assert_non_null(p);
    return p;
}

static double *dalloc(size_t n)
{
    double *p = malloc((n ? n : 1) * sizeof *p);
    assert_non_null(p);
    return p;
}

/* ------------------------------------------------------------ in place */

enum { OP_BN_TRAIN, OP_BN_INFER, OP_BN_APPLY, OP_IN, OP_GN, OP_LN, OP_RMS, NUM_OPS };
static const char *const op_names[NUM_OPS] = {"batch_norm_train", "batch_norm_infer",
                                              "batch_norm_apply_moments", "instance_norm",
                                              "group_norm", "layer_norm", "rms_norm"};

/* Everything an operator call writes besides y. */
typedef struct side {
    float *rm, *rv, *sm, *si;
    int64_t tracked;
} side;

static side side_alloc(size_t C, size_t nsave)
{
    side d = {falloc(C), falloc(C), falloc(nsave), falloc(nsave), 0};
    for (size_t c = 0; c < C; c++) {
        d.rm[c] = 0.1f * (float)(c % 5) - 0.2f;
        d.rv[c] = 0.5f + 0.125f * (float)(c % 7);
    }
    memset(d.sm, 0, nsave * sizeof(float));
    memset(d.si, 0, nsave * sizeof(float));
    return d;
}

static void side_free(side *d)
{
    free(d->rm);
    free(d->rv);
    free(d->sm);
    free(d->si);
}

/* Runs one operator; LayerNorm / RMSNorm see the tensor as (n * spatial) rows of c. */
static void run_op(int op, const float *x, float *y, const nk_shape *s, int64_t groups,
                   const float *w, const float *b, side *d, const nk_options *o)
{
    nk_running_stats rs = {d->rm, d->rv, 0.1, 0, 1, d->tracked};
    nk_status st = NK_OK;
    const int64_t rows = s->n * s->spatial;
    switch (op) {
    case OP_BN_TRAIN:
        st = nk_batch_norm_train(x, s, w, b, 1e-5, &rs, y, d->sm, d->si, o);
        break;
    case OP_BN_INFER:
        st = nk_batch_norm_infer(x, s, w, b, d->rm, d->rv, 1e-5, y, o);
        break;
    case OP_BN_APPLY: {
        nk_moments *m = malloc((size_t)s->c * sizeof *m);
        assert_non_null(m);
        assert_int_equal(nk_batch_norm_stats(x, s, m), NK_OK);
        st = nk_batch_norm_apply_moments(x, s, m, w, b, 1e-5, &rs, y, d->sm, d->si, o);
        free(m);
        break;
    }
    case OP_IN:
        st = nk_instance_norm(x, s, w, b, 1e-5, 1, &rs, y, d->sm, d->si, o);
        break;
    case OP_GN:
        st = nk_group_norm(x, s, groups, w, b, 1e-5, y, d->sm, d->si, o);
        break;
    case OP_LN:
        st = nk_layer_norm(x, rows, s->c, w, b, 1e-5, y, d->sm, d->si, o);
        break;
    case OP_RMS:
        st = nk_rms_norm(x, rows, s->c, w, 1e-6, y, d->si, o);
        break;
    }
    if (st != NK_OK)
        print_error("%s: %s\n", op_names[op], nk_last_error());
    assert_int_equal(st, NK_OK);
    d->tracked = rs.num_batches_tracked;
}

static void assert_same_bits(const void *a, const void *b, size_t bytes, const char *what,
                             const char *isa, const char *op, const nk_shape *s)
{
    if (memcmp(a, b, bytes)) {
        const float *fa = a, *fb = b;
        size_t i = 0;
        while (i + 1 < bytes / sizeof(float) && !memcmp(&fa[i], &fb[i], sizeof(float)))
            i++;
        print_error("%s %s [%lld, %lld, %lld] %s: in place differs from out of place in %s[%zu]: "
                    "%.9g vs %.9g\n",
                    isa, op, (long long)s->n, (long long)s->c, (long long)s->spatial,
                    s->layout ? "NHWC" : "NCHW", what, i, (double)fb[i], (double)fa[i]);
        fail();
    }
}

static void inplace_case(const char *isa, int op, const nk_shape *s, int64_t groups,
                         const nk_options *o, nkt_rng *r)
{
    const size_t n = numel(s), C = (size_t)s->c;
    const size_t nsave = op == OP_BN_TRAIN || op == OP_BN_APPLY ? C
                         : op == OP_IN                         ? (size_t)(s->n * s->c)
                         : op == OP_GN                         ? (size_t)(s->n * groups)
                                                               : (size_t)(s->n * s->spatial);
    float *x = falloc(n), *y = falloc(n), *z = falloc(n), *w = falloc(C), *b = falloc(C);
    nkt_fill(r, x, n, 0.5, 1.5);
    nkt_fill(r, w, C, 1.0, 0.3);
    nkt_fill(r, b, C, 0.0, 0.5);
    memcpy(z, x, n * sizeof *z);
    side d1 = side_alloc(C, nsave), d2 = side_alloc(C, nsave);
    run_op(op, x, y, s, groups, w, b, &d1, o);
    run_op(op, z, z, s, groups, w, b, &d2, o);
    assert_same_bits(y, z, n * sizeof *y, "y", isa, op_names[op], s);
    assert_same_bits(d1.rm, d2.rm, C * sizeof(float), "running_mean", isa, op_names[op], s);
    assert_same_bits(d1.rv, d2.rv, C * sizeof(float), "running_var", isa, op_names[op], s);
    assert_same_bits(d1.sm, d2.sm, nsave * sizeof(float), "save_mean", isa, op_names[op], s);
    assert_same_bits(d1.si, d2.si, nsave * sizeof(float), "save_invstd", isa, op_names[op], s);
    assert_int_equal(d1.tracked, d2.tracked);
    side_free(&d1);
    side_free(&d2);
    free(x);
    free(y);
    free(z);
    free(w);
    free(b);
}

static void inplace_operators(void **state)
{
    (void)state;
    /* small, widened channels-last view (C = 6), more channels than one block,
     * and one tensor of 4.8 MB whose output is written with streaming stores */
    static const nk_shape shapes[] = {
        {2, 3, 17, NK_CHANNELS_FIRST}, {3, 6, 41, NK_CHANNELS_FIRST},  {2, 19, 33, NK_CHANNELS_FIRST},
        {2, 1040, 9, NK_CHANNELS_FIRST}, {1, 4, 300007, NK_CHANNELS_FIRST},
        {2, 1000, 3, NK_CHANNELS_FIRST}, {300, 4096, 1, NK_CHANNELS_FIRST},
    };
    static const int64_t groups[] = {3, 2, 1, 130, 2, 8, 64};
    const nk_isa saved = nk_get_isa();
    int runs = 0;
    for (int i = 0; i < NUM_ISA; i++) {
        if (!nk_isa_supported((nk_isa)i))
            continue;
        assert_int_equal(nk_set_isa((nk_isa)i), NK_OK);
        nkt_rng r;
        nkt_seed(&r, 101);
        for (size_t k = 0; k < sizeof shapes / sizeof shapes[0]; k++)
            for (int op = 0; op < NUM_OPS; op++)
                for (int lay = 0; lay < 2; lay++) {
                    if ((op == OP_LN || op == OP_RMS) && lay)
                        continue; /* rows x cols: no layout */
                    nk_shape s = shapes[k];
                    s.layout = (nk_layout)lay;
                    if (op == OP_IN && s.spatial < 2)
                        continue; /* instance statistics need two values */
                    const nk_options *o = &acts[1 + (size_t)(op + (int)k + lay) % 5];
                    inplace_case(nk_isa_name((nk_isa)i), op, &s, groups[k], o, &r);
                    runs++;
                }
    }
    assert_int_equal(nk_set_isa(saved), NK_OK);
    assert_int_equal(nk_get_isa(), saved);
    print_message("in place == out of place: %d operator calls\n", runs);
}

/* ------------------------------------------------- saved statistics */

/* float64 mean and 1 / sqrt(var + eps) of every reduced set of a channel operator */
static void oracle_set_stats(const float *x, const nk_shape *s, int kind, int64_t groups, double eps,
                             double *mean, double *inv)
{
    const int64_t sets = kind == NKT_IN ? s->n * s->c : s->n * groups;
    const int64_t cpg = kind == NKT_GN ? s->c / groups : 1;
    for (int64_t q = 0; q < sets; q++) {
        int64_t n = kind == NKT_IN ? q / s->c : q / groups;
        int64_t c0 = kind == NKT_IN ? q % s->c : (q % groups) * cpg;
        double sum = 0.0, m2 = 0.0, cnt = (double)(cpg * s->spatial);
        for (int64_t c = c0; c < c0 + cpg; c++)
            for (int64_t p = 0; p < s->spatial; p++)
                sum += x[idx(s, n, c, p)];
        double mu = sum / cnt;
        for (int64_t c = c0; c < c0 + cpg; c++)
            for (int64_t p = 0; p < s->spatial; p++) {
                double dv = x[idx(s, n, c, p)] - mu;
                m2 += dv * dv;
            }
        mean[q] = mu;
        inv[q] = 1.0 / sqrt(m2 / cnt + eps);
    }
}

/* Largest |v| (plain compares: GCC 12 for AArch64 fails on a vectorized
 * fmax reduction) */
static double maxabs_f(const float *v, size_t n, double start)
{
    double m = start;
    for (size_t i = 0; i < n; i++)
        if (fabs(v[i]) > m)
            m = fabs(v[i]);
    return m;
}

static double maxabs_d(const double *v, size_t n, double start)
{
    double m = start;
    for (size_t i = 0; i < n; i++)
        if (fabs(v[i]) > m)
            m = fabs(v[i]);
    return m;
}

/* Output tolerance: ATOL, plus half an ulp of the largest |x| (the fp32 mean
 * is rounded) times the largest normalize scale. */
static double out_tol(const float *x, size_t n, const double *inv, size_t sets, const float *w,
                      size_t nw)
{
    const double xm = maxabs_f(x, n, 0.0), im = maxabs_d(inv, sets, 0.0);
    const double wm = w ? maxabs_f(w, nw, 1.0) : 1.0;
    return ATOL + 6e-8 * xm * im * wm;
}

/* |mean - mean*| <= 1e-6 (|mean*| + std*), |invstd - invstd*| <= 1e-5 invstd* */
static void check_stats(const float *sm, const float *si, const double *mean, const double *inv,
                        size_t sets, double eps, const char *what)
{
    for (size_t q = 0; q < sets; q++) {
        double sd = sqrt(fmax(1.0 / (inv[q] * inv[q]) - eps, 0.0));
        int ok = (!sm || fabs(sm[q] - mean[q]) <= 1e-6 * (fabs(mean[q]) + sd)) &&
                 fabs(si[q] - inv[q]) <= 1e-5 * inv[q];
        if (!ok) {
            print_error("%s: set %zu: saved {%.9g, %.9g}, expected {%.9g, %.9g}\n", what, q,
                        sm ? (double)sm[q] : 0.0, (double)si[q], sm ? mean[q] : 0.0, inv[q]);
            fail();
        }
    }
}

static void channel_stats_case(const char *isa, int kind, const nk_shape *s, int64_t groups,
                               const nk_options *o, nkt_rng *r)
{
    const size_t n = numel(s), C = (size_t)s->c;
    const size_t sets = kind == NKT_IN ? (size_t)(s->n * s->c) : (size_t)(s->n * groups);
    float *x = falloc(n), *y = falloc(n), *w = falloc(C), *b = falloc(C);
    float *sm = falloc(sets), *si = falloc(sets);
    double *ref = dalloc(n), *mean = dalloc(sets), *inv = dalloc(sets);
    nkt_fill(r, x, n, 3.0, 2.0);
    /* give every set its own offset and scale */
    for (int64_t nn = 0; nn < s->n; nn++)
        for (int64_t c = 0; c < s->c; c++)
            for (int64_t p = 0; p < s->spatial; p++) {
                size_t i = idx(s, nn, c, p);
                x[i] = (float)(x[i] * (1.0 + 0.25 * (double)((nn + c) % 4)) + 5.0 * (double)nn - (double)c);
            }
    nkt_fill(r, w, C, 1.0, 0.3);
    nkt_fill(r, b, C, 0.0, 0.5);
    nk_status st = kind == NKT_IN
                       ? nk_instance_norm(x, s, w, b, 1e-5, 1, NULL, y, sm, si, o)
                       : nk_group_norm(x, s, groups, w, b, 1e-5, y, sm, si, o);
    assert_int_equal(st, NK_OK);
    char what[128];
    snprintf(what, sizeof what, "%s %s [%lld, %lld, %lld] %s groups %lld", isa,
             kind == NKT_IN ? "InstanceNorm" : "GroupNorm", (long long)s->n, (long long)s->c,
             (long long)s->spatial, s->layout ? "NHWC" : "NCHW", (long long)groups);
    nkt_oracle_norm(x, s, kind, groups, w, b, 1e-5, o, ref);
    oracle_set_stats(x, s, kind, groups, 1e-5, mean, inv);
    nkt_assert_close(y, ref, n, out_tol(x, n, inv, sets, w, C), 0.0, what);
    check_stats(sm, si, mean, inv, sets, 1e-5, what);
    free(x);
    free(y);
    free(w);
    free(b);
    free(sm);
    free(si);
    free(ref);
    free(mean);
    free(inv);
}

static void row_stats_case(const char *isa, int rms, int64_t rows, int64_t cols, int affine,
                           const nk_options *o, nkt_rng *r)
{
    const size_t n = (size_t)(rows * cols);
    float *x = falloc(n), *y = falloc(n), *w = falloc((size_t)cols), *b = falloc((size_t)cols);
    float *sm = falloc((size_t)rows), *si = falloc((size_t)rows);
    double *ref = dalloc(n), *mean = dalloc((size_t)rows), *inv = dalloc((size_t)rows);
    for (int64_t i = 0; i < rows; i++)
        nkt_fill(r, x + i * cols, (size_t)cols, 2.0 * (double)i - 3.0, 0.5 + 0.5 * (double)(i % 3));
    nkt_fill(r, w, (size_t)cols, 1.0, 0.3);
    nkt_fill(r, b, (size_t)cols, 0.0, 0.5);
    const float *wp = affine ? w : NULL, *bp = affine ? b : NULL;
    const double eps = rms ? 1e-6 : 1e-5;
    for (int64_t i = 0; i < rows; i++) {
        const float *xr = x + i * cols;
        double sum = 0.0, sq = 0.0, m2 = 0.0;
        for (int64_t j = 0; j < cols; j++) {
            sum += xr[j];
            sq += (double)xr[j] * xr[j];
        }
        mean[i] = sum / (double)cols;
        for (int64_t j = 0; j < cols; j++)
            m2 += (xr[j] - mean[i]) * (xr[j] - mean[i]);
        inv[i] = 1.0 / sqrt((rms ? sq : m2) / (double)cols + eps);
    }
    char what[96];
    snprintf(what, sizeof what, "%s %s %lldx%lld affine %d act %d", isa, rms ? "RMSNorm" : "LayerNorm",
             (long long)rows, (long long)cols, affine, (int)o->activation);
    if (rms) {
        assert_int_equal(nk_rms_norm(x, rows, cols, wp, eps, y, si, o), NK_OK);
        nkt_oracle_rms_norm(x, rows, cols, wp, eps, o, ref);
    } else {
        assert_int_equal(nk_layer_norm(x, rows, cols, wp, bp, eps, y, sm, si, o), NK_OK);
        nkt_oracle_layer_norm(x, rows, cols, wp, bp, eps, o, ref);
    }
    nkt_assert_close(y, ref, n, rms ? ATOL : out_tol(x, n, inv, (size_t)rows, wp, (size_t)cols), 0.0,
                     what);
    check_stats(rms ? NULL : sm, si, mean, inv, (size_t)rows, eps, what);
    free(x);
    free(y);
    free(w);
    free(b);
    free(sm);
    free(si);
    free(ref);
    free(mean);
    free(inv);
}

static void saved_statistics(void **state)
{
    (void)state;
    static const nk_shape in_shapes[] = {
        {2, 3, 17, NK_CHANNELS_FIRST}, {3, 5, 2, NK_CHANNELS_FIRST}, {4, 16, 33, NK_CHANNELS_FIRST},
        {2, 7, 255, NK_CHANNELS_FIRST}, {3, 300, 5, NK_CHANNELS_FIRST}, {2, 6, 4099, NK_CHANNELS_FIRST},
    };
    static const int64_t gn_groups[] = {3, 5, 4, 7, 30, 2};
    static const int64_t cols[] = {1, 3, 17, 255, 1000, 4099};
    const nk_isa saved = nk_get_isa();
    for (int i = 0; i < NUM_ISA; i++) {
        if (!nk_isa_supported((nk_isa)i))
            continue;
        assert_int_equal(nk_set_isa((nk_isa)i), NK_OK);
        const char *isa = nk_isa_name((nk_isa)i);
        nkt_rng r;
        nkt_seed(&r, 102);
        for (size_t k = 0; k < sizeof in_shapes / sizeof in_shapes[0]; k++)
            for (int lay = 0; lay < 2; lay++) {
                nk_shape s = in_shapes[k];
                s.layout = (nk_layout)lay;
                const nk_options *o = &acts[(k + (size_t)lay) % 6];
                channel_stats_case(isa, NKT_IN, &s, 0, o, &r);
                channel_stats_case(isa, NKT_GN, &s, gn_groups[k], o, &r);
                channel_stats_case(isa, NKT_GN, &s, 1, o, &r);
            }
        for (size_t k = 0; k < sizeof cols / sizeof cols[0]; k++)
            for (int rms = 0; rms < 2; rms++)
                for (int affine = 0; affine < 2; affine++) {
                    const nk_options *o = &acts[(k + (size_t)affine) % 6];
                    row_stats_case(isa, rms, 1, cols[k], affine, o, &r);
                    row_stats_case(isa, rms, 7, cols[k], affine, o, &r);
                }
    }
    assert_int_equal(nk_set_isa(saved), NK_OK);
}

/* -------------------------------------------------------- subnormals */

#if NKT_X86
#  define MXCSR_DAZ 0x0040u
#  define MXCSR_FTZ 0x8000u
#  define MXCSR_FLAGS 0x003Fu /* sticky exception flags: arithmetic sets them */
#endif

/*
 * x86: when call_mode is not 0, every library call of the subnormal and
 * FTZ/DAZ tests runs with MXCSR = call_mode (the caller's mode), everything
 * else (data, float64 oracles) in the test's default mode; after each call
 * the MXCSR control bits must still be call_mode's.
 */
#if NKT_X86
static unsigned call_mode, default_csr;

static void lib_begin(void)
{
    if (call_mode)
        _mm_setcsr(call_mode);
}

static nk_status lib_end(nk_status st)
{
    if (call_mode) {
        unsigned after = _mm_getcsr();
        _mm_setcsr(default_csr);
        if ((after & ~MXCSR_FLAGS) != (call_mode & ~MXCSR_FLAGS)) {
            print_error("MXCSR control bits %#x before the call, %#x after\n",
                        call_mode & ~MXCSR_FLAGS, after & ~MXCSR_FLAGS);
            fail();
        }
    }
    return st;
}
#  define LIB(call) lib_end((lib_begin(), (call)))
#else
#  define LIB(call) (call)
#endif

/* a random subnormal float, either sign */
static float subnormal(nkt_rng *r)
{
    uint32_t bits = (uint32_t)(1 + nkt_next(r) % 0x7FFFFF) | (nkt_next(r) & 1 ? 0x80000000u : 0u);
    float v;
    memcpy(&v, &bits, sizeof v);
    return v;
}

/* v with a subnormal value replaced by a zero of its sign (bit test: no
 * floating-point compare, so no dependence on the current mode) */
static float flushed(float v)
{
    uint32_t bits;
    memcpy(&bits, &v, sizeof bits);
    if ((bits & 0x7F800000u) == 0)
        bits &= 0x80000000u;
    memcpy(&v, &bits, sizeof v);
    return v;
}

enum { DN_ALL, DN_TINY_MIXED, DN_UNIT_MIXED, DN_KINDS };

/* DN_ALL: every value subnormal; DN_TINY_MIXED: every other value a normal
 * in [2e-36, 3e-36], the others subnormal, so that every x - mean is a
 * normal float (the mean is about 1.3e-36) and the outputs (about 1e-34)
 * show whether the subnormal values were kept; DN_UNIT_MIXED: unit-scale
 * values, every fourth one replaced by a subnormal. The sets of every
 * shape used below take alternate elements. */
static void fill_denormal(nkt_rng *r, int kind, float *x, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (kind == DN_ALL)
            x[i] = subnormal(r);
        else if (kind == DN_TINY_MIXED)
            x[i] = i % 2 ? subnormal(r) : (float)(1e-36 * (2.0 + nkt_uniform(r)));
        else
            x[i] = i % 4 == 1 ? subnormal(r) : (float)nkt_normal(r);
    }
}

/*
 * y against the float64 oracle of x (IEEE mode) or of x with subnormals
 * flushed to zero (flush mode). The outputs of DN_ALL and DN_TINY_MIXED are
 * tiny, so the tolerance is relative to the largest of them: 1e-5 of it,
 * plus a subnormal ulp of the input times the largest scale (the fp32 mean
 * is rounded to a subnormal). In flush mode, plus 2 FLT_MIN (an output below
 * FLT_MIN may be flushed) and 16 FLT_MIN / nset times the scale: a partial
 * sum of deviations that comes within FLT_MIN of zero is flushed, which
 * moves the mean of a set of nset values by less than FLT_MIN / nset each
 * time (allowing 16 such). Keeping or flushing the subnormal inputs moves
 * the outputs of subnormal elements by up to FLT_MIN times the scale
 * (DN_TINY_MIXED), or all outputs (DN_ALL, where flushing gives exactly 0),
 * well beyond that.
 */
static void check_denormal(const float *y, const double *ref, size_t n, double scale, int flush,
                           double nset, const char *what)
{
    const double big = maxabs_d(ref, n, 0.0);
    double atol = 1e-5 * big + 2.0 * 1.4013e-45 * scale + (flush ? 2.0 * FLT_MIN + 16.0 * FLT_MIN * scale / nset : 0.0);
    if (big >= 0.01)
        atol = fmax(atol, ATOL); /* unit-scale outputs: the usual tolerance */
    nkt_assert_close(y, ref, n, atol, 0.0, what);
}

/* Every operator on one data kind; flush: the expected results are those of
 * the flushed input. Returns nothing; fails on the first mismatch. */
static void denormal_ops(const char *isa, int kind, int flush, nkt_rng *r)
{
    enum { N = 2, C = 3, S = 37, ROWS = 4, COLS = 1000 };
    const size_t nc = N * C * S, nr = ROWS * COLS;
    float *x = falloc(nr), *xf = falloc(nr), *y = falloc(nr), *w = falloc(COLS);
    double *ref = dalloc(nr);
    nkt_fill(r, w, COLS, 1.0, 0.3);
    /* scale of the normalize step: weight / sqrt(eps) (the variances are far below eps) */
    const double scale = maxabs_f(w, COLS, 0.0) / sqrt(1e-5);
    char what[128];
    const char *kn[DN_KINDS] = {"subnormal", "tiny normal + subnormal", "unit + subnormal"};

    fill_denormal(r, kind, x, nr);
    for (size_t i = 0; i < nr; i++)
        xf[i] = flush ? flushed(x[i]) : x[i];
    for (int lay = 0; lay < 2; lay++) {
        const nk_shape s = {N, C, S, (nk_layout)lay};
        const nk_shape g = {N, C, S, (nk_layout)lay};
        const char *ls = lay ? "NHWC" : "NCHW";
        snprintf(what, sizeof what, "%s %s BatchNorm %s%s", isa, kn[kind], ls, flush ? " (flush)" : "");
        assert_int_equal(LIB(nk_batch_norm_train(x, &s, w, NULL, 1e-5, NULL, y, NULL, NULL, NULL)), NK_OK);
        nkt_oracle_norm(xf, &s, NKT_BN, 1, w, NULL, 1e-5, NULL, ref);
        check_denormal(y, ref, nc, scale, flush, N * S, what);
        snprintf(what, sizeof what, "%s %s InstanceNorm %s%s", isa, kn[kind], ls, flush ? " (flush)" : "");
        assert_int_equal(LIB(nk_instance_norm(x, &s, w, NULL, 1e-5, 1, NULL, y, NULL, NULL, NULL)), NK_OK);
        nkt_oracle_norm(xf, &s, NKT_IN, 1, w, NULL, 1e-5, NULL, ref);
        check_denormal(y, ref, nc, scale, flush, S, what);
        snprintf(what, sizeof what, "%s %s GroupNorm %s%s", isa, kn[kind], ls, flush ? " (flush)" : "");
        assert_int_equal(LIB(nk_group_norm(x, &g, 1, w, NULL, 1e-5, y, NULL, NULL, NULL)), NK_OK);
        nkt_oracle_norm(xf, &g, NKT_GN, 1, w, NULL, 1e-5, NULL, ref);
        check_denormal(y, ref, nc, scale, flush, C * S, what);
        const nk_options leaky = {NK_ACT_LEAKY_RELU, 0.5f};
        snprintf(what, sizeof what, "%s %s BatchNorm infer %s%s", isa, kn[kind], ls, flush ? " (flush)" : "");
        const float rm[C] = {0.0f, 0.0f, 0.0f}, rv[C] = {0.0f, 0.0f, 0.0f};
        assert_int_equal(LIB(nk_batch_norm_infer(x, &s, w, NULL, rm, rv, 1e-5, y, &leaky)), NK_OK);
        for (int64_t n = 0; n < N; n++)
            for (int64_t c = 0; c < C; c++)
                for (int64_t p = 0; p < S; p++) {
                    size_t i = idx(&s, n, c, p);
                    ref[i] = nkt_act((double)xf[i] / sqrt(1e-5) * w[c], &leaky);
                }
        check_denormal(y, ref, nc, scale, flush, INFINITY, what); /* no sums */
    }
    snprintf(what, sizeof what, "%s %s LayerNorm%s", isa, kn[kind], flush ? " (flush)" : "");
    assert_int_equal(LIB(nk_layer_norm(x, ROWS, COLS, w, NULL, 1e-5, y, NULL, NULL, NULL)), NK_OK);
    nkt_oracle_layer_norm(xf, ROWS, COLS, w, NULL, 1e-5, NULL, ref);
    check_denormal(y, ref, nr, scale, flush, COLS, what);
    snprintf(what, sizeof what, "%s %s RMSNorm%s", isa, kn[kind], flush ? " (flush)" : "");
    assert_int_equal(LIB(nk_rms_norm(x, ROWS, COLS, w, 1e-5, y, NULL, NULL)), NK_OK);
    nkt_oracle_rms_norm(xf, ROWS, COLS, w, 1e-5, NULL, ref);
    check_denormal(y, ref, nr, scale, flush, INFINITY, what); /* no mean */
    free(x);
    free(xf);
    free(y);
    free(w);
    free(ref);
}

/* ARMv7 Advanced SIMD always flushes subnormals (docs/cross.md); every other
 * kernel table computes them as IEEE values. */
static int isa_flushes(nk_isa isa)
{
#if defined(__arm__)
    return isa == NK_ISA_NEON;
#else
    (void)isa;
    return 0;
#endif
}

static void denormal_inputs(void **state)
{
    (void)state;
    const nk_isa saved = nk_get_isa();
#if NKT_X86
    const unsigned csr0 = _mm_getcsr();
    /* the test runs in the default mode: nothing flushes */
    assert_int_equal(csr0 & (MXCSR_DAZ | MXCSR_FTZ), 0);
#endif
    for (int i = 0; i < NUM_ISA; i++) {
        if (!nk_isa_supported((nk_isa)i))
            continue;
        assert_int_equal(nk_set_isa((nk_isa)i), NK_OK);
        nkt_rng r;
        nkt_seed(&r, 103);
        for (int kind = 0; kind < DN_KINDS; kind++)
            denormal_ops(nk_isa_name((nk_isa)i), kind, isa_flushes((nk_isa)i), &r);
#if NKT_X86
        /* the library leaves MXCSR as it found it */
        assert_int_equal(_mm_getcsr() & ~MXCSR_FLAGS, csr0 & ~MXCSR_FLAGS);
#endif
    }
    assert_int_equal(nk_set_isa(saved), NK_OK);
}

#if NKT_X86
/* Unit-scale data through every operator, outputs against float64. */
static void normal_ops(const char *isa, nkt_rng *r)
{
    enum { N = 3, C = 5, S = 41, ROWS = 5, COLS = 300 };
    float x[ROWS * COLS], y[ROWS * COLS], w[COLS], b[COLS], rm[C], rv[C], sm[N * C], si[N * C];
    double ref[ROWS * COLS];
    nkt_fill(r, x, ROWS * COLS, 0.5, 2.0);
    nkt_fill(r, w, COLS, 1.0, 0.3);
    nkt_fill(r, b, COLS, 0.0, 0.5);
    const nk_options silu = {NK_ACT_SILU, 0.0f};
    char what[96];
    for (int lay = 0; lay < 2; lay++) {
        const nk_shape s = {N, C, S, (nk_layout)lay};
        for (int c = 0; c < C; c++) {
            rm[c] = 0.25f;
            rv[c] = 1.5f;
        }
        nk_running_stats rs = {rm, rv, 0.1, 0, 1, 0};
        snprintf(what, sizeof what, "%s FTZ+DAZ BatchNorm %s", isa, lay ? "NHWC" : "NCHW");
        assert_int_equal(LIB(nk_batch_norm_train(x, &s, w, b, 1e-5, &rs, y, sm, si, &silu)), NK_OK);
        nkt_oracle_norm(x, &s, NKT_BN, 1, w, b, 1e-5, &silu, ref);
        nkt_assert_close(y, ref, N * C * S, ATOL, 0.0, what);
        snprintf(what, sizeof what, "%s FTZ+DAZ InstanceNorm %s", isa, lay ? "NHWC" : "NCHW");
        assert_int_equal(LIB(nk_instance_norm(x, &s, w, b, 1e-5, 1, NULL, y, sm, si, &silu)), NK_OK);
        nkt_oracle_norm(x, &s, NKT_IN, 1, w, b, 1e-5, &silu, ref);
        nkt_assert_close(y, ref, N * C * S, ATOL, 0.0, what);
        snprintf(what, sizeof what, "%s FTZ+DAZ GroupNorm %s", isa, lay ? "NHWC" : "NCHW");
        assert_int_equal(LIB(nk_group_norm(x, &s, 1, w, b, 1e-5, y, sm, si, &silu)), NK_OK);
        nkt_oracle_norm(x, &s, NKT_GN, 1, w, b, 1e-5, &silu, ref);
        nkt_assert_close(y, ref, N * C * S, ATOL, 0.0, what);
    }
    snprintf(what, sizeof what, "%s FTZ+DAZ LayerNorm", isa);
    assert_int_equal(LIB(nk_layer_norm(x, ROWS, COLS, w, b, 1e-5, y, sm, si, &silu)), NK_OK);
    nkt_oracle_layer_norm(x, ROWS, COLS, w, b, 1e-5, &silu, ref);
    nkt_assert_close(y, ref, ROWS * COLS, ATOL, 0.0, what);
    snprintf(what, sizeof what, "%s FTZ+DAZ RMSNorm", isa);
    assert_int_equal(LIB(nk_rms_norm(x, ROWS, COLS, w, 1e-6, y, si, &silu)), NK_OK);
    nkt_oracle_rms_norm(x, ROWS, COLS, w, 1e-6, &silu, ref);
    nkt_assert_close(y, ref, ROWS * COLS, ATOL, 0.0, what);
}
#endif

/*
 * x86: the caller's thread sets FTZ and DAZ. Unit-scale results stay within
 * the oracle tolerance, subnormal inputs follow the mode (they read as zero),
 * and the library neither clears nor sets any MXCSR control bit.
 */
static void caller_ftz_daz(void **state)
{
    (void)state;
#if NKT_X86
    const nk_isa saved = nk_get_isa();
    default_csr = _mm_getcsr();
    assert_int_equal(default_csr & (MXCSR_DAZ | MXCSR_FTZ), 0);
    for (int i = 0; i < NUM_ISA; i++) {
        if (!nk_isa_supported((nk_isa)i))
            continue;
        assert_int_equal(nk_set_isa((nk_isa)i), NK_OK);
        const char *isa = nk_isa_name((nk_isa)i);
        nkt_rng r;
        nkt_seed(&r, 104);
        call_mode = default_csr | MXCSR_DAZ | MXCSR_FTZ;
        normal_ops(isa, &r);
        for (int kind = 0; kind < DN_KINDS; kind++)
            denormal_ops(isa, kind, 1, &r);
        call_mode = 0;
    }
    assert_int_equal(_mm_getcsr(), default_csr);
    assert_int_equal(nk_set_isa(saved), NK_OK);
#else
    skip();
#endif
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(inplace_operators),
        cmocka_unit_test(saved_statistics),
        cmocka_unit_test(denormal_inputs),
        cmocka_unit_test(caller_ftz_daz),
    };
    return cmocka_run_group_tests_name("coverage", tests, NULL, NULL);
}
