/*
 * Backward passes against a float64 analytic gradient computed here from the
 * same inputs and saved statistics, finite differences of a float64 forward,
 * the activation masks, the synchronized BatchNorm pieces against the
 * one-shot backward, thread-count determinism and validation.
 */
#include <math.h>
#include <stddef.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/cvt.h"
#include "nk_test.h"

enum { OP_BN, OP_BN_INFER, OP_IN, OP_GN, OP_LN, OP_RMS };
static const char *const op_names[] = {"bn", "bn_infer", "in", "gn", "ln", "rms"};

typedef struct tcase {
    int op;
    int64_t n, c, s;
    int layout;
    int64_t groups; /* GroupNorm */
    int act;
    float alpha;
    int affine;
    double shift;    /* added to x: mean-shifted data */
    int constant;    /* x constant per set */
} tcase;

static size_t elem(const tcase *t, int64_t n, int64_t c, int64_t s)
{
    if (t->layout == NK_CHANNELS_FIRST)
        return (size_t)((n * t->c + c) * t->s + s);
    return (size_t)((n * t->s + s) * t->c + c);
}

static size_t set_of(const tcase *t, int64_t n, int64_t c, int64_t s)
{
    switch (t->op) {
    case OP_BN:
    case OP_BN_INFER: return (size_t)c;
    case OP_IN: return (size_t)(n * t->c + c);
    case OP_GN: return (size_t)(n * t->groups + c / (t->c / t->groups));
    default: return (size_t)(n * t->s + s);
    }
}

static size_t nsets(const tcase *t)
{
    switch (t->op) {
    case OP_BN:
    case OP_BN_INFER: return (size_t)t->c;
    case OP_IN: return (size_t)(t->n * t->c);
    case OP_GN: return (size_t)(t->n * t->groups);
    default: return (size_t)(t->n * t->s);
    }
}

static size_t total(const tcase *t) { return (size_t)(t->n * t->c * t->s); }

static nk_tensor_desc make_desc(const tcase *t)
{
    nk_tensor_desc d = NK_TENSOR_DESC_INIT;
    d.n = t->n;
    d.c = t->c;
    d.spatial = t->s;
    d.layout = (uint32_t)t->layout;
    d.activation = t->act;
    d.alpha = t->alpha;
    return d;
}

/* The float64 gradient for the given statistics (BatchNorm inference:
 * m = running mean, s = 1 / sqrt(running var + eps)). With scale != NULL
 * also the size of what each result cancels from: per element the sum of
 * the magnitudes of its terms (dx), per channel the sums of |terms| (dw,
 * db), the bound fp32 arithmetic is held to. */
typedef struct ref_scale {
    double *x, *w, *b;
} ref_scale;
static void ref_backward_s(const tcase *t, const float *x, const float *y, const float *dy,
                           const float *w, const float *mean, const float *inv, double eps,
                           double *dx, double *dw, double *db, const ref_scale *sc)
{
    const size_t ns = nsets(t);
    double *A = calloc(ns, sizeof(double)), *B = calloc(ns, sizeof(double));
    double *cnt = calloc(ns, sizeof(double));
    double *Aa = calloc(ns, sizeof(double)), *Ba = calloc(ns, sizeof(double));
    for (int64_t c = 0; c < t->c; c++) {
        dw[c] = db[c] = 0.0;
        if (sc)
            sc->w[c] = sc->b[c] = 0.0;
    }
    for (int pass = 0; pass < 2; pass++)
        for (int64_t n = 0; n < t->n; n++)
            for (int64_t c = 0; c < t->c; c++)
                for (int64_t s = 0; s < t->s; s++) {
                    const size_t e = elem(t, n, c, s), q = set_of(t, n, c, s);
                    double g = dy[e];
                    if (t->act == NK_ACT_RELU)
                        g = y[e] > 0.0f ? g : 0.0;
                    else if (t->act == NK_ACT_LEAKY_RELU)
                        g = y[e] > 0.0f ? g : g * t->alpha;
                    double m = t->op == OP_RMS ? 0.0 : mean[q];
                    double sd = t->op == OP_BN_INFER ? 1.0 / sqrt((double)inv[c] + eps) : inv[q];
                    const double wc = w ? w[c] : 1.0, xm = x[e] - m;
                    if (pass == 0) {
                        A[q] += wc * g;
                        B[q] += wc * g * xm;
                        cnt[q] += 1.0;
                        dw[c] += g * xm * sd;
                        db[c] += g;
                        Aa[q] += fabs(wc * g);
                        Ba[q] += fabs(wc * g * xm);
                        if (sc) {
                            sc->w[c] += fabs(g * xm * sd);
                            sc->b[c] += fabs(g);
                        }
                        continue;
                    }
                    if (sc)
                        sc->x[e] = fabs(sd * wc * g) +
                                   (t->op == OP_BN_INFER ? 0.0
                                                         : fabs(sd * Aa[q] / cnt[q]) +
                                                               fabs(xm * sd * sd * sd * Ba[q] / cnt[q]));
                    if (t->op == OP_BN_INFER)
                        dx[e] = sd * wc * g;
                    else
                        dx[e] = sd * wc * g - (t->op == OP_RMS ? 0.0 : sd * A[q] / cnt[q]) -
                                xm * sd * sd * sd * B[q] / cnt[q];
                }
    free(A);
    free(B);
    free(Aa);
    free(Ba);
    free(cnt);
}

/* Inputs and the forward of one case. */
typedef struct fwd {
    float *x, *y, *dy, *w, *b, *mean, *inv;
    double eps;
} fwd;

static void fwd_forward(const tcase *t, fwd *f);

static void fwd_make(const tcase *t, uint64_t seed, fwd *f)
{
    const size_t T = total(t), ns = nsets(t), C = (size_t)t->c;
    nkt_rng r;
    nkt_seed(&r, seed);
    f->x = malloc((T + 1) * sizeof(float));
    f->y = malloc((T + 1) * sizeof(float));
    f->dy = malloc((T + 1) * sizeof(float));
    f->w = malloc(C * sizeof(float));
    f->b = malloc(C * sizeof(float));
    f->mean = malloc((ns + 1) * sizeof(float));
    f->inv = malloc((ns + 1) * sizeof(float));
    f->eps = 1e-5;
    nkt_fill(&r, f->x, T, t->shift, 1.0);
    nkt_fill(&r, f->dy, T, 0.0, 1.0);
    nkt_fill(&r, f->w, C, 0.5, 1.0);
    nkt_fill(&r, f->b, C, 0.0, 0.5);
    if (t->constant)
        for (int64_t n = 0; n < t->n; n++)
            for (int64_t c = 0; c < t->c; c++)
                for (int64_t s = 0; s < t->s; s++)
                    f->x[elem(t, n, c, s)] = (float)(t->shift + 0.25 * (double)(set_of(t, n, c, s) % 7));
    if (t->op == OP_BN_INFER) {
        /* running statistics: the mean and inv arrays hold mean and var */
        nkt_fill(&r, f->mean, C, 0.1, 0.5);
        for (size_t c = 0; c < C; c++)
            f->inv[c] = (float)(0.5 + nkt_uniform(&r));
    }
    fwd_forward(t, f);
}

/* y and the saved statistics of f's inputs (BatchNorm inference: y from the
 * running statistics in mean / inv) */
static void fwd_forward(const tcase *t, fwd *f)
{
    const nk_tensor_desc d = make_desc(t);
    const void *w = t->affine ? f->w : NULL, *b = t->affine ? f->b : NULL;
    nk_status st = NK_OK;
    switch (t->op) {
    case OP_BN:
        st = nk_batch_norm_train_ex(NULL, &d, f->x, f->y, w, b, f->eps, NULL, f->mean, f->inv);
        break;
    case OP_BN_INFER:
        st = nk_batch_norm_infer_ex(NULL, &d, f->x, f->y, w, b, f->mean, f->inv, f->eps);
        break;
    case OP_IN:
        st = nk_instance_norm_ex(NULL, &d, f->x, f->y, w, b, f->eps, 1, NULL, f->mean, f->inv);
        break;
    case OP_GN:
        st = nk_group_norm_ex(NULL, &d, f->x, f->y, t->groups, w, b, f->eps, f->mean, f->inv);
        break;
    case OP_LN:
        st = nk_layer_norm_ex(NULL, &d, f->x, f->y, w, b, f->eps, f->mean, f->inv);
        break;
    case OP_RMS:
        st = nk_rms_norm_ex(NULL, &d, f->x, f->y, w, f->eps, f->inv);
        break;
    }
    if (st != NK_OK)
        fail_msg("%s forward: %s", op_names[t->op], nk_last_error());
}

static void fwd_free(fwd *f)
{
    free(f->x);
    free(f->y);
    free(f->dy);
    free(f->w);
    free(f->b);
    free(f->mean);
    free(f->inv);
}

/* The backward entry point of t->op. */
static nk_status run_bwd(const nk_context *ctx, const tcase *t, const nk_tensor_desc *d,
                         const fwd *f, const float *dy, float *dx, float *dw, float *db)
{
    const void *w = t->affine ? f->w : NULL;
    switch (t->op) {
    case OP_BN:
        return nk_batch_norm_backward_ex(ctx, d, f->x, f->y, dy, dx, w, f->mean, f->inv, dw, db);
    case OP_BN_INFER:
        return nk_batch_norm_infer_backward_ex(ctx, d, f->x, f->y, dy, dx, w, f->mean, f->inv,
                                               f->eps, dw, db);
    case OP_IN:
        return nk_instance_norm_backward_ex(ctx, d, f->x, f->y, dy, dx, w, f->mean, f->inv, dw, db);
    case OP_GN:
        return nk_group_norm_backward_ex(ctx, d, f->x, f->y, dy, dx, t->groups, w, f->mean, f->inv,
                                         dw, db);
    case OP_LN:
        return nk_layer_norm_backward_ex(ctx, d, f->x, f->y, dy, dx, w, f->mean, f->inv, dw, db);
    default:
        return nk_rms_norm_backward_ex(ctx, d, f->x, f->y, dy, dx, w, f->inv, dw);
    }
}

static double max_abs(const double *v, size_t n)
{
    double m = 0.0;
    for (size_t i = 0; i < n; i++)
        m = fmax(m, fabs(v[i]));
    return m;
}

/* |got - ref| <= tol * scale: scale[i] when given (the magnitude of the
 * terms result i cancels from), else max |ref| + 1e-3. */
static void expect_close_s(const float *got, const double *ref, const double *scales, size_t n,
                           double tol, const char *what, const tcase *t)
{
    const double whole = max_abs(ref, n) + 1e-3;
    for (size_t i = 0; i < n; i++) {
        const double err = fabs((double)got[i] - ref[i]);
        const double scale = scales ? scales[i] + 1e-30 : whole;
        if (!(err <= tol * scale))
            fail_msg("%s %s n=%lld c=%lld s=%lld layout=%d act=%d affine=%d: [%zu] = %.9g, "
                     "expected %.9g (scale %.3g)",
                     op_names[t->op], what, (long long)t->n, (long long)t->c, (long long)t->s,
                     t->layout, t->act, t->affine, i, (double)got[i], ref[i], scale);
    }
}

static void expect_close(const float *got, const double *ref, size_t n, double tol, const char *what,
                         const tcase *t)
{
    expect_close_s(got, ref, NULL, n, tol, what, t);
}

/* One case: every output against the float64 gradient, then subsets of the
 * outputs (each alone gives the same bits). */
static void check_case(const tcase *t, uint64_t seed)
{
    fwd f;
    fwd_make(t, seed, &f);
    const size_t T = total(t), C = (size_t)t->c;
    const nk_tensor_desc d = make_desc(t);
    nkt_buf dx = nkt_alloc(T, 0), dw = nkt_alloc(C, 0), db = nkt_alloc(C, 0);
    double *rx = malloc((T + 1) * sizeof(double)), *rw = malloc(C * sizeof(double)),
           *rb = malloc(C * sizeof(double));
    const bool has_db = t->op != OP_RMS;
    assert_int_equal(run_bwd(NULL, t, &d, &f, f.dy, dx.p, dw.p, has_db ? db.p : NULL), NK_OK);
    ref_scale sc = {malloc((T + 1) * sizeof(double)), malloc(C * sizeof(double)),
                    malloc(C * sizeof(double))};
    ref_backward_s(t, f.x, f.y, f.dy, t->affine ? f.w : NULL, f.mean, f.inv, f.eps, rx, rw, rb,
                   &sc);
    /* fp32 arithmetic on the terms; fp32 sums in chunks of a few hundred */
    const double tol = 2e-6;
    expect_close_s(dx.p, rx, sc.x, T, tol, "dx", t);
    expect_close_s(dw.p, rw, sc.w, C, tol, "dweight", t);
    if (has_db)
        expect_close_s(db.p, rb, sc.b, C, tol, "dbias", t);
    free(sc.x);
    free(sc.w);
    free(sc.b);
    assert_true(nkt_guard_ok(&dx) && nkt_guard_ok(&dw) && nkt_guard_ok(&db));
    /* subsets: dx alone, dweight alone */
    nkt_buf dx2 = nkt_alloc(T, 0), dw2 = nkt_alloc(C, 0);
    assert_int_equal(run_bwd(NULL, t, &d, &f, f.dy, dx2.p, NULL, NULL), NK_OK);
    assert_memory_equal(dx2.p, dx.p, T * sizeof(float));
    assert_int_equal(run_bwd(NULL, t, &d, &f, f.dy, NULL, dw2.p, NULL), NK_OK);
    assert_memory_equal(dw2.p, dw.p, C * sizeof(float));
    /* in place: dx over a copy of dy */
    memcpy(dx2.p, f.dy, T * sizeof(float));
    memset(dw2.p, 0, C * sizeof(float));
    assert_int_equal(run_bwd(NULL, t, &d, &f, dx2.p, dx2.p, dw2.p, NULL), NK_OK);
    assert_memory_equal(dx2.p, dx.p, T * sizeof(float));
    assert_memory_equal(dw2.p, dw.p, C * sizeof(float));
    nkt_free(&dx2);
    nkt_free(&dw2);
    nkt_free(&dx);
    nkt_free(&dw);
    nkt_free(&db);
    free(rx);
    free(rw);
    free(rb);
    fwd_free(&f);
}

static const int64_t shapes[][3] = {
    {2, 3, 5}, {4, 16, 1}, {1, 7, 33}, {3, 64, 49}, {2, 130, 3}, {8, 5, 257}, {5, 96, 17},
};

static void analytic_all_ops(void **state)
{
    (void)state;
    uint64_t seed = nkt_run_seed();
    for (int op = OP_BN; op <= OP_RMS; op++)
        for (size_t si = 0; si < sizeof shapes / sizeof shapes[0]; si++)
            for (int layout = 0; layout < 2; layout++)
                for (int affine = 0; affine < 2; affine++)
                    for (int act = 0; act < 3; act++) {
                        if ((op == OP_LN || op == OP_RMS) && layout == NK_CHANNELS_FIRST)
                            continue;
#if defined(NKT_EMULATED) && NKT_EMULATED
                        /* under qemu: one activation per shape and layout */
                        if ((size_t)act != (si + (size_t)layout + (size_t)affine) % 3)
                            continue;
#endif
                        tcase t = {op, shapes[si][0], shapes[si][1], shapes[si][2], layout, 1, act,
                                   act == NK_ACT_LEAKY_RELU ? 0.1f : 0.01f, affine, 0.0, 0};
                        if (op == OP_IN && t.s == 1)
                            t.s = 2;
                        if (op == OP_GN)
                            t.groups = t.c % 4 == 0 ? 4 : t.c % 5 == 0 ? 5 : 1;
                        check_case(&t, seed++);
                    }
}

/* One value per set, constant sets, mean-shifted data, large sets (cut
 * into pieces by the plans). */
static void edge_cases(void **state)
{
    (void)state;
    uint64_t seed = nkt_run_seed() + 1000;
    const tcase cases[] = {
        /* one value per set: LayerNorm over one column, GroupNorm with a
         * group per channel of one position, BatchNorm of two values */
        {OP_LN, 6, 1, 1, NK_CHANNELS_LAST, 1, 0, 0.01f, 1, 0.0, 0},
        {OP_RMS, 6, 1, 1, NK_CHANNELS_LAST, 1, 0, 0.01f, 1, 0.0, 0},
        {OP_GN, 3, 4, 1, NK_CHANNELS_FIRST, 4, 0, 0.01f, 1, 0.0, 0},
        {OP_GN, 3, 4, 1, NK_CHANNELS_LAST, 4, 0, 0.01f, 1, 0.0, 0},
        {OP_BN, 2, 3, 1, NK_CHANNELS_FIRST, 1, 0, 0.01f, 1, 0.0, 0},
        {OP_IN, 2, 3, 2, NK_CHANNELS_LAST, 1, 0, 0.01f, 1, 0.0, 0},
        /* constant sets: x - mean is 0, invstd 1 / sqrt(eps) */
        {OP_BN, 4, 5, 9, NK_CHANNELS_FIRST, 1, 0, 0.01f, 1, 0.0, 1},
        {OP_BN, 4, 5, 9, NK_CHANNELS_LAST, 1, 0, 0.01f, 1, 0.0, 1},
        {OP_IN, 4, 5, 9, NK_CHANNELS_FIRST, 1, 0, 0.01f, 1, 0.0, 1},
        {OP_GN, 4, 6, 9, NK_CHANNELS_LAST, 3, 0, 0.01f, 1, 0.0, 1},
        {OP_LN, 4, 40, 3, NK_CHANNELS_LAST, 1, 0, 0.01f, 1, 0.0, 1},
        /* mean-shifted */
        {OP_BN, 4, 5, 100, NK_CHANNELS_FIRST, 1, 0, 0.01f, 1, 1000.0, 0},
        {OP_BN, 4, 5, 100, NK_CHANNELS_LAST, 1, 1, 0.01f, 1, 1000.0, 0},
        {OP_IN, 4, 5, 100, NK_CHANNELS_LAST, 1, 0, 0.01f, 1, 1000.0, 0},
        {OP_GN, 4, 8, 100, NK_CHANNELS_FIRST, 2, 0, 0.01f, 1, 1000.0, 0},
        {OP_LN, 64, 300, 1, NK_CHANNELS_LAST, 1, 0, 0.01f, 1, 1000.0, 0},
        {OP_RMS, 64, 300, 1, NK_CHANNELS_LAST, 1, 0, 0.01f, 1, 1000.0, 0},
        /* large sets: pieces of a channel, of a row, of a group */
        {OP_BN, 3, 2, 70000, NK_CHANNELS_FIRST, 1, 1, 0.01f, 1, 0.5, 0},
        {OP_BN, 40, 3, 5000, NK_CHANNELS_LAST, 1, 2, 0.2f, 1, 0.5, 0},
        {OP_IN, 1, 2, 200000, NK_CHANNELS_FIRST, 1, 0, 0.01f, 1, 0.0, 0},
        {OP_GN, 2, 8, 40000, NK_CHANNELS_FIRST, 1, 0, 0.01f, 1, 0.0, 0},
        {OP_GN, 2, 8, 40000, NK_CHANNELS_LAST, 2, 1, 0.01f, 1, 0.0, 0},
        {OP_LN, 2, 140000, 1, NK_CHANNELS_LAST, 1, 0, 0.01f, 1, 0.0, 0},
        {OP_RMS, 2, 140000, 1, NK_CHANNELS_LAST, 1, 0, 0.01f, 1, 0.0, 0},
        {OP_BN_INFER, 3, 2, 70000, NK_CHANNELS_FIRST, 1, 0, 0.01f, 1, 0.0, 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        check_case(&cases[i], seed++);
}

/* Central differences of L(x, w, b) = sum dy * y, the forward in float64
 * (the test's oracles), against the library's gradients. x is quantized so
 * that x +- h is exact. */
static double fd_loss(const tcase *t, const float *x, const float *w, const float *b, double eps,
                      const float *dy, double *ybuf)
{
    const nk_shape s = {t->n, t->c, t->s, (nk_layout)t->layout};
    const nk_options o = {(nk_activation)t->act, t->alpha};
    switch (t->op) {
    case OP_BN: nkt_oracle_norm(x, &s, NKT_BN, 1, w, b, eps, &o, ybuf); break;
    case OP_IN: nkt_oracle_norm(x, &s, NKT_IN, 1, w, b, eps, &o, ybuf); break;
    case OP_GN: nkt_oracle_norm(x, &s, NKT_GN, t->groups, w, b, eps, &o, ybuf); break;
    case OP_LN: nkt_oracle_layer_norm(x, t->n, t->c, w, b, eps, &o, ybuf); break;
    default: nkt_oracle_rms_norm(x, t->n, t->c, w, eps, &o, ybuf); break;
    }
    double l = 0.0;
    for (size_t i = 0; i < total(t); i++)
        l += (double)dy[i] * ybuf[i];
    return l;
}

static void finite_differences(void **state)
{
    (void)state;
    const tcase cases[] = {
        {OP_BN, 3, 4, 5, NK_CHANNELS_FIRST, 1, 0, 0.01f, 1, 0.0, 0},
        {OP_BN, 3, 4, 5, NK_CHANNELS_LAST, 1, 0, 0.01f, 1, 0.0, 0},
        {OP_IN, 2, 3, 7, NK_CHANNELS_LAST, 1, 0, 0.01f, 1, 0.0, 0},
        {OP_GN, 2, 6, 4, NK_CHANNELS_FIRST, 3, 0, 0.01f, 1, 0.0, 0},
        {OP_GN, 2, 6, 4, NK_CHANNELS_LAST, 2, 0, 0.01f, 1, 0.0, 0},
        {OP_LN, 5, 9, 1, NK_CHANNELS_LAST, 1, 0, 0.01f, 1, 0.0, 0},
        {OP_RMS, 5, 9, 1, NK_CHANNELS_LAST, 1, 0, 0.01f, 1, 0.0, 0},
    };
    const double h = 1.0 / 1024;
    uint64_t seed = nkt_run_seed() + 2000;
    for (size_t ci = 0; ci < sizeof cases / sizeof cases[0]; ci++) {
        const tcase *t = &cases[ci];
        fwd f;
        fwd_make(t, seed++, &f);
        const size_t T = total(t), C = (size_t)t->c;
        for (size_t i = 0; i < T; i++)
            f.x[i] = (float)(round(f.x[i] * 4096.0) / 4096.0);
        /* y and the statistics of the quantized x */
        fwd_forward(t, &f);
        const nk_tensor_desc d = make_desc(t);
        float *dx = malloc(T * sizeof(float)), *dw = malloc(C * sizeof(float)),
              *db = malloc(C * sizeof(float));
        double *yb = malloc(T * sizeof(double)), *fx = malloc(T * sizeof(double)),
               *fw = malloc(C * sizeof(double)), *fb = malloc(C * sizeof(double));
        assert_int_equal(run_bwd(NULL, t, &d, &f, f.dy, dx, dw, t->op == OP_RMS ? NULL : db), NK_OK);
        for (size_t i = 0; i < T; i++) {
            const float x0 = f.x[i];
            f.x[i] = (float)(x0 + h);
            double lp = fd_loss(t, f.x, f.w, f.b, f.eps, f.dy, yb);
            f.x[i] = (float)(x0 - h);
            double lm = fd_loss(t, f.x, f.w, f.b, f.eps, f.dy, yb);
            f.x[i] = x0;
            fx[i] = (lp - lm) / (2 * h);
        }
        for (size_t c = 0; c < C; c++) {
            float *p[2] = {f.w, f.b};
            for (int k = 0; k < 2; k++) {
                const float v0 = p[k][c];
                p[k][c] = (float)(v0 + h);
                double lp = fd_loss(t, f.x, f.w, f.b, f.eps, f.dy, yb);
                p[k][c] = (float)(v0 - h);
                double lm = fd_loss(t, f.x, f.w, f.b, f.eps, f.dy, yb);
                p[k][c] = v0;
                (k ? fb : fw)[c] = (lp - lm) / (2 * h);
            }
        }
        expect_close(dx, fx, T, 2e-4, "dx (finite differences)", t);
        expect_close(dw, fw, C, 2e-4, "dweight (finite differences)", t);
        if (t->op != OP_RMS)
            expect_close(db, fb, C, 2e-4, "dbias (finite differences)", t);
        free(dx);
        free(dw);
        free(db);
        free(yb);
        free(fx);
        free(fw);
        free(fb);
        fwd_free(&f);
    }
}

/* The masks: ReLU passes where y > 0 only, LeakyReLU scales the rest by
 * alpha. A backward with the activation equals one without it given the
 * masked dy. */
static void activation_masks(void **state)
{
    (void)state;
    for (int op = OP_BN; op <= OP_RMS; op++)
        for (int act = NK_ACT_RELU; act <= NK_ACT_LEAKY_RELU; act++) {
            tcase t = {op, 3, 8, 6, NK_CHANNELS_LAST, 2, act, 0.3f, 1, 0.0, 0};
            fwd f;
            fwd_make(&t, nkt_run_seed() + 3000 + (uint64_t)(op * 4 + act), &f);
            const size_t T = total(&t), C = 8;
            float *g = malloc(T * sizeof(float)), *dx1 = malloc(T * sizeof(float)),
                  *dx2 = malloc(T * sizeof(float)), dw1[8], dw2[8];
            size_t masked = 0;
            for (size_t i = 0; i < T; i++) {
                g[i] = f.y[i] > 0.0f ? f.dy[i] : act == NK_ACT_RELU ? 0.0f : f.dy[i] * 0.3f;
                masked += !(f.y[i] > 0.0f);
            }
            assert_true(masked > 0 && masked < T);
            nk_tensor_desc d = make_desc(&t);
            assert_int_equal(run_bwd(NULL, &t, &d, &f, f.dy, dx1, dw1, NULL), NK_OK);
            tcase t0 = t;
            t0.act = NK_ACT_NONE;
            d = make_desc(&t0);
            assert_int_equal(run_bwd(NULL, &t0, &d, &f, g, dx2, dw2, NULL), NK_OK);
            for (size_t i = 0; i < T; i++)
                assert_float_equal(dx1[i], dx2[i], 1e-6 * (1 + fabs(dx2[i])));
            for (size_t c = 0; c < C; c++)
                assert_float_equal(dw1[c], dw2[c], 1e-6 * (1 + fabs(dw2[c])));
            free(g);
            free(dx1);
            free(dx2);
            fwd_free(&f);
        }
}

/* Synchronized BatchNorm: shards of the batch, their sums added, the
 * elementwise step with the global count equals the one-shot backward. */
static void sync_pieces(void **state)
{
    (void)state;
    for (int layout = 0; layout < 2; layout++)
        for (int act = 0; act < 2; act++) {
            tcase t = {OP_BN, 7, 6, 45, layout, 1, act, 0.01f, 1, 2.0, 0};
            fwd f;
            fwd_make(&t, nkt_run_seed() + 4000 + (uint64_t)(layout * 2 + act), &f);
            const size_t T = total(&t), C = 6, per = (size_t)(t.c * t.s);
            float *dx = malloc(T * sizeof(float)), *dxs = malloc(T * sizeof(float));
            float dw[6], db[6], dws[6] = {0}, dbs[6] = {0};
            double sdy[6] = {0}, sdx[6] = {0};
            nk_tensor_desc d = make_desc(&t);
            assert_int_equal(nk_batch_norm_backward_ex(NULL, &d, f.x, f.y, f.dy, dx, f.w, f.mean,
                                                       f.inv, dw, db),
                             NK_OK);
            /* an empty shard among them: its elementwise step leaves the sums */
            const int64_t cut[] = {0, 2, 2, 3, 7};
            for (int k = 0; k < 4; k++) {
                nk_tensor_desc ds = d;
                ds.n = cut[k + 1] - cut[k];
                const size_t o = (size_t)cut[k] * per;
                double a[6], b[6];
                float lw[6], lb[6];
                assert_int_equal(nk_batch_norm_backward_reduce_ex(NULL, &ds, f.x + o, f.y + o,
                                                                  f.dy + o, f.mean, f.inv, a, b,
                                                                  lw, lb),
                                 NK_OK);
                for (size_t c = 0; c < C; c++) {
                    sdy[c] += a[c];
                    sdx[c] += b[c];
                    dws[c] += lw[c];
                    dbs[c] += lb[c];
                }
            }
            for (int k = 0; k < 4; k++) {
                nk_tensor_desc ds = d;
                ds.n = cut[k + 1] - cut[k];
                const size_t o = (size_t)cut[k] * per;
                assert_int_equal(nk_batch_norm_backward_elemt_ex(NULL, &ds, f.x + o, f.y + o,
                                                                 f.dy + o, dxs + o, f.w, f.mean,
                                                                 f.inv, sdy, sdx, t.n * t.s),
                                 NK_OK);
            }
            for (size_t i = 0; i < T; i++)
                assert_float_equal(dxs[i], dx[i], 1e-5 * (1 + fabs(dx[i])));
            for (size_t c = 0; c < C; c++) {
                assert_float_equal(dws[c], dw[c], 1e-4 * (1 + fabs(dw[c])));
                assert_float_equal(dbs[c], db[c], 1e-4 * (1 + fabs(db[c])));
                assert_float_equal((float)sdy[c], db[c], 1e-4 * (1 + fabs(db[c])));
            }
            free(dx);
            free(dxs);
            fwd_free(&f);
        }
}

/* A pool that claims `threads` threads and runs the tasks in the calling
 * thread in reverse order: the plans' cut at that thread count without
 * threads (qemu user emulation hangs on real ones). */
typedef struct serial_pool {
    size_t threads;
} serial_pool;
static size_t serial_threads(void *ctx) { return ((serial_pool *)ctx)->threads; }
static void serial_for(void *ctx, void (*task)(void *, size_t), void *arg, size_t n)
{
    (void)ctx;
    for (size_t i = n; i-- > 0;)
        task(arg, i);
}

/* Bitwise the same results for 1, 2, 3 and 7 threads of the helper pool
 * (native builds) and of a serial pool running the tasks in reverse, on
 * shapes large enough to reach the pool and to be cut into pieces. */
static void thread_determinism(void **state)
{
    (void)state;
    const tcase cases[] = {
        {OP_BN, 4, 3, 50000, NK_CHANNELS_FIRST, 1, 1, 0.01f, 1, 0.0, 0},
        {OP_BN, 64, 40, 300, NK_CHANNELS_LAST, 1, 0, 0.01f, 1, 0.0, 0},
        {OP_BN_INFER, 64, 40, 300, NK_CHANNELS_LAST, 1, 0, 0.01f, 1, 0.0, 0},
        {OP_IN, 4, 40, 3000, NK_CHANNELS_FIRST, 1, 0, 0.01f, 1, 0.0, 0},
        {OP_IN, 4, 40, 3000, NK_CHANNELS_LAST, 1, 2, 0.1f, 1, 0.0, 0},
        {OP_GN, 4, 96, 1000, NK_CHANNELS_FIRST, 8, 0, 0.01f, 1, 0.0, 0},
        {OP_GN, 4, 96, 1000, NK_CHANNELS_LAST, 8, 0, 0.01f, 1, 0.0, 0},
        {OP_LN, 512, 700, 1, NK_CHANNELS_LAST, 1, 0, 0.01f, 1, 0.0, 0},
        {OP_RMS, 2, 300000, 1, NK_CHANNELS_LAST, 1, 0, 0.01f, 1, 0.0, 0},
    };
    const int threads[] = {1, 2, 3, 7};
    for (size_t ci = 0; ci < sizeof cases / sizeof cases[0]; ci++) {
        const tcase *t = &cases[ci];
        fwd f;
        fwd_make(t, nkt_run_seed() + 5000 + ci, &f);
        const size_t T = total(t), C = (size_t)t->c;
        const nk_tensor_desc d = make_desc(t);
        float *dx0 = malloc(T * sizeof(float)), *dx = malloc(T * sizeof(float));
        float *dw0 = malloc(C * sizeof(float)), *dw = malloc(C * sizeof(float));
        float *db0 = malloc(C * sizeof(float)), *db = malloc(C * sizeof(float));
        float *dbp = t->op == OP_RMS ? NULL : db, *db0p = t->op == OP_RMS ? NULL : db0;
        assert_int_equal(run_bwd(NULL, t, &d, &f, f.dy, dx0, dw0, db0p), NK_OK);
        for (size_t k = 0; k < 2 * sizeof threads / sizeof threads[0]; k++) {
            const size_t nt = (size_t)threads[k / 2];
            const bool real = k % 2 == 0;
            nk_threadpool *pool = NULL;
            serial_pool sp = {nt};
            const nk_threadpool serial = {&sp, serial_threads, serial_for};
#if defined(NKT_EMULATED) && NKT_EMULATED
            if (real)
                continue;
#endif
            if (real)
                assert_int_equal(nk_threadpool_create((int)nt, &pool), NK_OK);
            nk_context ctx = NK_CONTEXT_INIT;
            ctx.pool = real ? pool : &serial;
            memset(dx, 0, T * sizeof(float));
            assert_int_equal(run_bwd(&ctx, t, &d, &f, f.dy, dx, dw, dbp), NK_OK);
            assert_memory_equal(dx, dx0, T * sizeof(float));
            assert_memory_equal(dw, dw0, C * sizeof(float));
            if (dbp)
                assert_memory_equal(db, db0, C * sizeof(float));
            nk_threadpool_destroy(pool);
        }
        free(dx0);
        free(dx);
        free(dw0);
        free(dw);
        free(db0);
        free(db);
        fwd_free(&f);
    }
}

/* fp16 / bf16: x, y, dy, dx of the dtype, weight and parameter gradients of
 * param_dtype. The arithmetic is the fp32 path's on the widened values, so
 * dx is the fp32 backward's dx on those values rounded once, bit for bit,
 * and so are 16-bit dweight / dbias. */
static uint16_t to16(unsigned dt, float v) { return dt == NK_DTYPE_F16 ? nk_f32_to_f16(v) : nk_f32_to_bf16(v); }
static float from16(unsigned dt, uint16_t h) { return dt == NK_DTYPE_F16 ? nk_f16_to_f32(h) : nk_bf16_to_f32(h); }

static void low_precision(void **state)
{
    (void)state;
    for (unsigned dt = NK_DTYPE_F16; dt <= NK_DTYPE_BF16; dt++)
        for (int op = OP_BN; op <= OP_RMS; op++)
            for (int layout = 0; layout < 2; layout++)
                for (unsigned pdt = 0; pdt < 2; pdt++) {
                    if ((op == OP_LN || op == OP_RMS) && layout == NK_CHANNELS_FIRST)
                        continue;
                    tcase t = {op, 3, 12, 37, layout, 3, layout ? NK_ACT_RELU : NK_ACT_NONE, 0.01f,
                               1, 0.0, 0};
                    fwd f;
                    fwd_make(&t, nkt_run_seed() + 6000 + dt * 100 + (uint64_t)(op * 4 + layout * 2) + pdt, &f);
                    const size_t T = total(&t), C = (size_t)t.c;
                    const unsigned wdt = pdt ? dt : NK_DTYPE_F32;
                    uint16_t *x16 = malloc(T * 2), *y16 = malloc(T * 2), *dy16 = malloc(T * 2),
                             *dx16 = malloc(T * 2), w16[12], dw16[12], db16[12];
                    float *dx = malloc(T * sizeof(float)), dw[12], db[12], dwf[12], dbf[12];
                    for (size_t i = 0; i < T; i++) {
                        x16[i] = to16(dt, f.x[i]);
                        y16[i] = to16(dt, f.y[i]);
                        dy16[i] = to16(dt, f.dy[i]);
                        f.x[i] = from16(dt, x16[i]);
                        f.y[i] = from16(dt, y16[i]);
                        f.dy[i] = from16(dt, dy16[i]);
                    }
                    if (pdt)
                        for (size_t c = 0; c < C; c++) {
                            w16[c] = to16(dt, f.w[c]);
                            f.w[c] = from16(dt, w16[c]);
                        }
                    nk_tensor_desc d = make_desc(&t);
                    float *dbp = op == OP_RMS ? NULL : db;
                    assert_int_equal(run_bwd(NULL, &t, &d, &f, f.dy, dx, dw, dbp), NK_OK);
                    fwd h = f;
                    h.x = (float *)(void *)x16;
                    h.y = (float *)(void *)y16;
                    if (pdt)
                        h.w = (float *)(void *)w16;
                    d.dtype = dt;
                    d.param_dtype = wdt;
                    void *ow = pdt ? (void *)dw16 : (void *)dwf, *ob = pdt ? (void *)db16 : (void *)dbf;
                    assert_int_equal(run_bwd(NULL, &t, &d, &h, (const float *)(void *)dy16,
                                             (float *)(void *)dx16, ow, op == OP_RMS ? NULL : ob),
                                     NK_OK);
                    for (size_t i = 0; i < T; i++)
                        if (dx16[i] != to16(dt, dx[i]))
                            fail_msg("%s dtype %u layout %d: dx[%zu] = %.6g, fp32 path %.6g",
                                     op_names[op], dt, layout, i, (double)from16(dt, dx16[i]),
                                     (double)dx[i]);
                    for (size_t c = 0; c < C; c++) {
                        if (pdt) {
                            assert_int_equal(dw16[c], to16(dt, dw[c]));
                            if (dbp)
                                assert_int_equal(db16[c], to16(dt, db[c]));
                        } else {
                            assert_true(dwf[c] == dw[c]);
                            if (dbp)
                                assert_true(dbf[c] == db[c]);
                        }
                    }
                    free(x16);
                    free(y16);
                    free(dy16);
                    free(dx16);
                    free(dx);
                    fwd_free(&f);
                }
}

/* PyTorch 1.13 autograd (tests/gen_golden_backward.py): the forward here
 * gives y and the statistics, the backward the gradients torch computed. */
typedef struct bwd_golden {
    const char *name;
    int op, layout;
    int64_t n, c, s, groups;
    int act;
    float alpha;
    int affine;
    double eps;
    const float *x, *dy, *w, *b, *rm, *rv, *dx, *dw, *db;
} bwd_golden;
#include "golden/torch_golden_backward.h"

static void torch_goldens(void **state)
{
    (void)state;
    for (size_t gi = 0; gi < sizeof bwd_goldens / sizeof bwd_goldens[0]; gi++) {
        const bwd_golden *gd = &bwd_goldens[gi];
        tcase t = {gd->op, gd->n, gd->c, gd->s, gd->layout, gd->groups, gd->act, gd->alpha,
                   gd->affine, 0.0, 0};
        const size_t T = total(&t), C = (size_t)t.c, ns = nsets(&t);
        fwd f;
        f.x = malloc(T * sizeof(float));
        f.y = malloc(T * sizeof(float));
        f.dy = malloc(T * sizeof(float));
        f.w = malloc(C * sizeof(float));
        f.b = malloc(C * sizeof(float));
        f.mean = malloc((ns > C ? ns : C) * sizeof(float));
        f.inv = malloc((ns > C ? ns : C) * sizeof(float));
        f.eps = gd->eps;
        memcpy(f.x, gd->x, T * sizeof(float));
        memcpy(f.dy, gd->dy, T * sizeof(float));
        memcpy(f.w, gd->w, C * sizeof(float));
        memcpy(f.b, gd->b, C * sizeof(float));
        if (t.op == OP_BN_INFER) {
            memcpy(f.mean, gd->rm, C * sizeof(float));
            memcpy(f.inv, gd->rv, C * sizeof(float));
        }
        fwd_forward(&t, &f);
        float *dx = malloc(T * sizeof(float)), *dw = malloc(C * sizeof(float)),
              *db = malloc(C * sizeof(float));
        const nk_tensor_desc d = make_desc(&t);
        const bool has_db = t.op != OP_RMS;
        assert_int_equal(run_bwd(NULL, &t, &d, &f, f.dy, dx, dw, has_db ? db : NULL), NK_OK);
        /* the magnitudes of the terms each gradient cancels from (the
         * float64 reference's), the scale of the fp32 rounding on both sides */
        double *r = malloc((T > C ? T : C) * sizeof(double));
        double *rx = malloc(T * sizeof(double)), *rw = malloc(C * sizeof(double)),
               *rb = malloc(C * sizeof(double));
        ref_scale sc = {malloc(T * sizeof(double)), malloc(C * sizeof(double)),
                        malloc(C * sizeof(double))};
        ref_backward_s(&t, f.x, f.y, f.dy, t.affine ? f.w : NULL, f.mean, f.inv, f.eps, rx, rw, rb,
                       &sc);
        const struct {
            const char *what;
            const float *got, *want;
            const double *scale;
            size_t n;
            bool on;
        } outs[] = {{"dx", dx, gd->dx, sc.x, T, true},
                    {"dweight", dw, gd->dw, sc.w, C, t.affine != 0},
                    {"dbias", db, gd->db, sc.b, C, t.affine && has_db}};
        for (size_t k = 0; k < 3; k++) {
            if (!outs[k].on)
                continue;
            for (size_t i = 0; i < outs[k].n; i++)
                r[i] = outs[k].want[i];
            /* fp32 on both sides, statistics rounded apart; torch's own
             * cancellation (gradients that are 0 here, such as the
             * dweight of one-element groups) within an absolute 1e-5 of
             * these O(1) data */
            const double tol = 1e-5 * max_abs(r, outs[k].n) + 1e-5;
            for (size_t i = 0; i < outs[k].n; i++)
                if (!(fabs((double)outs[k].got[i] - r[i]) <= tol + 4e-6 * outs[k].scale[i]))
                    fail_msg("golden %s %s[%zu] = %.9g, torch %.9g", gd->name, outs[k].what, i,
                             (double)outs[k].got[i], r[i]);
        }
        free(r);
        free(rx);
        free(rw);
        free(rb);
        free(sc.x);
        free(sc.w);
        free(sc.b);
        free(dx);
        free(dw);
        free(db);
        fwd_free(&f);
    }
}

/* Every bad argument: a status, a message naming it, outputs untouched. */
/* LayerNorm / RMSNorm with dx and dweight / dbias in one call compute the
 * parameter gradients in the dx pass (with ctx->workspace, or on the stack
 * for small shapes); asked separately, or without room, they take their own
 * pass. The results are the same bits either way, for every dtype and
 * thread count, and the workspace is written inside the bytes
 * nk_backward_workspace_size asks for only. */
static nk_status run_rows_bwd(const nk_context *ctx, int op, const nk_tensor_desc *d,
                              const void *x, const void *y, const void *dy, void *dx,
                              const void *w, const float *mean, const float *inv, void *dw,
                              void *db)
{
    if (op == OP_LN)
        return nk_layer_norm_backward_ex(ctx, d, x, y, dy, dx, w, mean, inv, dw, db);
    return nk_rms_norm_backward_ex(ctx, d, x, y, dy, dx, w, inv, dw);
}

static void fused_param_grads(void **state)
{
    (void)state;
    /* n, c, s, act, x row stride (0: dense) */
    static const int64_t rshapes[][5] = {
        {1000, 300, 1, NK_ACT_NONE, 0},       /* strips beyond the stack */
        {37, 45, 1, NK_ACT_RELU, 0},          /* on the stack */
        {130, 17, 1, NK_ACT_LEAKY_RELU, 0},   /* one partial vector per row */
        {6, 33, 70, NK_ACT_NONE, 0},          /* rows over n and spatial */
        {300, 100, 1, NK_ACT_NONE, 131},      /* padded rows */
        {2, 4000, 1, NK_ACT_RELU, 0},         /* one row per block */
    };
    const int threads[] = {1, 3};
    for (size_t si = 0; si < sizeof rshapes / sizeof rshapes[0]; si++)
        for (int op = OP_LN; op <= OP_RMS; op++)
            for (unsigned dt = NK_DTYPE_F32; dt <= NK_DTYPE_BF16; dt++) {
                const tcase t = {op, rshapes[si][0], rshapes[si][1], rshapes[si][2],
                                 NK_CHANNELS_LAST, 1, (int)rshapes[si][3], 0.05f, 1, 0.0, 0};
                fwd f;
                fwd_make(&t, nkt_run_seed() + 7000 + si * 10 + (uint64_t)op * 3 + dt, &f);
                const size_t rows = (size_t)(t.n * t.s), C = (size_t)t.c;
                const size_t rs = rshapes[si][4] ? (size_t)rshapes[si][4] : C;
                const size_t es = dt == NK_DTYPE_F32 ? 4 : 2, T = (rows - 1) * rs + C;
                nk_tensor_desc d = make_desc(&t);
                d.dtype = dt;
                if (rs != C) /* padded rows (s == 1) */
                    d.x_stride[0] = d.y_stride[0] = (int64_t)rs;
                unsigned char *x = calloc(T, es), *y = calloc(T, es), *dy = calloc(T, es);
                for (size_t r = 0; r < rows; r++)
                    for (size_t c = 0; c < C; c++) {
                        const size_t i = r * C + c, j = r * rs + c;
                        if (dt == NK_DTYPE_F32) {
                            ((float *)(void *)x)[j] = f.x[i];
                            ((float *)(void *)y)[j] = f.y[i];
                            ((float *)(void *)dy)[j] = f.dy[i];
                        } else {
                            ((uint16_t *)(void *)x)[j] = to16(dt, f.x[i]);
                            ((uint16_t *)(void *)y)[j] = to16(dt, f.y[i]);
                            ((uint16_t *)(void *)dy)[j] = to16(dt, f.dy[i]);
                        }
                    }
                float *db0 = op == OP_RMS ? NULL : calloc(C, 4), *db1 = op == OP_RMS ? NULL : calloc(C, 4);
                float *dw0 = calloc(C, 4), *dw1 = calloc(C, 4);
                unsigned char *dx0 = calloc(T, es), *dx1 = calloc(T, es);
                /* dx alone, then the parameter gradients alone: separate passes */
                assert_int_equal(run_rows_bwd(NULL, op, &d, x, y, dy, dx0, f.w, f.mean, f.inv, NULL,
                                              NULL), NK_OK);
                assert_int_equal(run_rows_bwd(NULL, op, &d, x, y, dy, NULL, f.w, f.mean, f.inv, dw0,
                                              db0), NK_OK);
                size_t bytes = 0;
                assert_int_equal(nk_backward_workspace_size(op == OP_LN ? NK_LAYER_LAYER_NORM
                                                                        : NK_LAYER_RMS_NORM,
                                                            &d, 1, &bytes), NK_OK);
                assert_true(bytes > 0);
                enum { GUARD = 64 };
                unsigned char *wsb = malloc(bytes + 2 * GUARD + 64);
                for (int k = 0; k < 3 * 2 * 2; k++) {
                    /* k: no workspace, one too small, the asked size at an odd address; each
                     * with 1 or 3 threads, dx apart or in place (dx == dy) */
                    const int wk = k / 4;
                    const size_t nt = (size_t)threads[(k / 2) % 2];
                    const bool inplace = k % 2;
                    nk_threadpool *pool = NULL;
#if defined(NKT_EMULATED) && NKT_EMULATED
                    serial_pool sp = {nt};
                    const nk_threadpool serial = {&sp, serial_threads, serial_for};
#else
                    assert_int_equal(nk_threadpool_create((int)nt, &pool), NK_OK);
#endif
                    nk_context ctx = NK_CONTEXT_INIT;
                    ctx.pool = pool;
#if defined(NKT_EMULATED) && NKT_EMULATED
                    ctx.pool = &serial;
#endif
                    const size_t off = 1 + (size_t)k;
                    memset(wsb, 0xA5, bytes + 2 * GUARD + 64);
                    if (wk) {
                        ctx.workspace = wsb + GUARD + off;
                        ctx.workspace_size = wk == 1 ? bytes - 64 : bytes;
                    }
                    unsigned char *out = dx1;
                    if (inplace) {
                        memcpy(dx1, dy, T * es);
                        out = dx1;
                    } else {
                        memset(dx1, 0, T * es);
                    }
                    memset(dw1, 0, C * 4);
                    if (db1)
                        memset(db1, 0, C * 4);
                    assert_int_equal(run_rows_bwd(&ctx, op, &d, x, y, inplace ? dx1 : dy, out, f.w,
                                                  f.mean, f.inv, dw1, db1), NK_OK);
                    if (memcmp(dx1, dx0, T * es) || memcmp(dw1, dw0, C * 4) ||
                        (db1 && memcmp(db1, db0, C * 4)))
                        fail_msg("%s %s %zux%zu (s %lld, row stride %zu): workspace case %d, %zu "
                                 "threads%s: the one-call gradients differ from the separate passes",
                                 op_names[op], dt == NK_DTYPE_F32 ? "f32" : dt == 1 ? "f16" : "bf16",
                                 rows, C, (long long)t.s, rs, wk, nt, inplace ? ", in place" : "");
                    for (size_t i = 0; i < GUARD + off; i++)
                        assert_int_equal(wsb[i], 0xA5);
                    const size_t end = GUARD + off + (wk ? ctx.workspace_size : 0);
                    for (size_t i = end; i < bytes + 2 * GUARD + 64; i++)
                        assert_int_equal(wsb[i], 0xA5);
                    nk_threadpool_destroy(pool);
                }
                free(wsb);
                free(x);
                free(y);
                free(dy);
                free(dx0);
                free(dx1);
                free(dw0);
                free(dw1);
                free(db0);
                free(db1);
                fwd_free(&f);
            }
    /* InstanceNorm and GroupNorm channels-first: the sums of the dx pass */
    static const tcase sets[] = {
        {OP_IN, 2, 40, 300, NK_CHANNELS_FIRST, 1, NK_ACT_NONE, 0.01f, 1, 0.0, 0},
        {OP_IN, 40, 64, 100, NK_CHANNELS_FIRST, 1, NK_ACT_RELU, 0.01f, 1, 0.0, 0},
        {OP_GN, 4, 96, 1000, NK_CHANNELS_FIRST, 8, NK_ACT_NONE, 0.01f, 1, 0.0, 0},
        {OP_GN, 30, 96, 50, NK_CHANNELS_FIRST, 8, NK_ACT_LEAKY_RELU, 0.1f, 1, 0.0, 0},
        {OP_GN, 3, 24, 77, NK_CHANNELS_FIRST, 24, NK_ACT_NONE, 0.01f, 1, 0.0, 0},
        {OP_IN, 2, 3, 140000, NK_CHANNELS_FIRST, 1, NK_ACT_NONE, 0.01f, 1, 0.0, 0},
        {OP_GN, 3, 16, 200, NK_CHANNELS_LAST, 4, NK_ACT_NONE, 0.01f, 1, 0.0, 0},
    };
    for (size_t ci = 0; ci < sizeof sets / sizeof sets[0]; ci++) {
        const tcase *t = &sets[ci];
        fwd f;
        fwd_make(t, nkt_run_seed() + 7500 + ci, &f);
        const size_t T = total(t), C = (size_t)t->c;
        const nk_tensor_desc d = make_desc(t);
        float *dx0 = malloc(T * 4), *dx1 = malloc(T * 4), *g = malloc(T * 4);
        float *dw0 = malloc(C * 4), *db0 = malloc(C * 4), *dw1 = malloc(C * 4), *db1 = malloc(C * 4);
        assert_int_equal(run_bwd(NULL, t, &d, &f, f.dy, dx0, NULL, NULL), NK_OK);
        assert_int_equal(run_bwd(NULL, t, &d, &f, f.dy, NULL, dw0, db0), NK_OK);
        size_t bytes = 0;
        assert_int_equal(nk_backward_workspace_size(t->op == OP_IN ? NK_LAYER_INSTANCE_NORM
                                                                   : NK_LAYER_GROUP_NORM,
                                                    &d, t->groups, &bytes), NK_OK);
        assert_true((bytes > 0) == (ci < 5));
        unsigned char *wsb = malloc(bytes + 128);
        for (int k = 0; k < 4; k++) {
            nk_context ctx = NK_CONTEXT_INIT;
            if (k & 1) {
                memset(wsb, 0xA5, bytes + 128);
                ctx.workspace = wsb + 3;
                ctx.workspace_size = bytes;
            }
            float *out = dx1;
            const float *dy = f.dy;
            if (k & 2) { /* in place */
                memcpy(g, f.dy, T * 4);
                out = g;
                dy = g;
            }
            assert_int_equal(run_bwd(&ctx, t, &d, &f, dy, out, dw1, db1), NK_OK);
            if (memcmp(out, dx0, T * 4) || memcmp(dw1, dw0, C * 4) || memcmp(db1, db0, C * 4))
                fail_msg("%s case %zu, workspace %d%s: the one-call gradients differ from the "
                         "separate passes",
                         op_names[t->op], ci, k & 1, k & 2 ? ", in place" : "");
            if (k & 1)
                for (size_t i = 3 + bytes; i < bytes + 128; i++)
                    assert_int_equal(wsb[i], 0xA5);
        }
        free(wsb);
        free(dx0);
        free(dx1);
        free(g);
        free(dw0);
        free(db0);
        free(dw1);
        free(db1);
        fwd_free(&f);
    }
    /* the query: BatchNorm uses none; bad arguments */
    nk_tensor_desc d = NK_TENSOR_DESC_INIT;
    d.n = 64, d.c = 768, d.layout = NK_CHANNELS_LAST;
    size_t bytes = 7;
    assert_int_equal(nk_backward_workspace_size(NK_LAYER_BATCH_NORM, &d, 1, &bytes), NK_OK);
    assert_int_equal(bytes, 0);
    assert_int_equal(nk_backward_workspace_size(NK_LAYER_LAYER_NORM, &d, 1, &bytes), NK_OK);
    assert_true(bytes >= 768 * 2 * sizeof(float));
    bytes = 7;
    assert_int_equal(nk_backward_workspace_size(9, &d, 1, &bytes), NK_ERR_BAD_PARAM);
    assert_non_null(strstr(nk_last_error(), "layer"));
    assert_int_equal(bytes, 7);
    assert_int_equal(nk_backward_workspace_size(NK_LAYER_LAYER_NORM, &d, 1, NULL),
                     NK_ERR_NULL_POINTER);
    d.n = -1;
    assert_int_equal(nk_backward_workspace_size(NK_LAYER_LAYER_NORM, &d, 1, &bytes), NK_ERR_BAD_SHAPE);
    assert_int_equal(bytes, 7);
    /* sizes near SIZE_MAX: 0 (no workspace), never a wrapped small size.
     * InstanceNorm of n x 1 x 1 keeps 16 bytes per sample: with n =
     * SIZE_MAX / 16 they are SIZE_MAX - 15 bytes (32-bit targets: a bf16
     * tensor of 512 MiB, a valid descriptor) */
    nk_tensor_desc dn = NK_TENSOR_DESC_INIT;
    dn.n = (int64_t)(SIZE_MAX / 16 < (size_t)INT64_MAX ? SIZE_MAX / 16 : INT64_MAX);
    dn.c = 1;
    dn.spatial = 1;
    dn.dtype = NK_DTYPE_BF16;
    bytes = 7;
    const nk_status sn = nk_backward_workspace_size(NK_LAYER_INSTANCE_NORM, &dn, 1, &bytes);
    if (sn == NK_OK)
        assert_true(bytes == 0 || bytes >= (size_t)dn.n * 16);
    /* a NULL workspace with a size */
    nk_context ctx = NK_CONTEXT_INIT;
    ctx.workspace_size = 16;
    d.n = 4;
    static float v[4 * 768], g[4 * 768], dxo[4 * 768], st[4];
    assert_int_equal(nk_layer_norm_backward_ex(&ctx, &d, v, NULL, g, dxo, NULL, st, st, NULL, NULL),
                     NK_ERR_NULL_POINTER);
    assert_non_null(strstr(nk_last_error(), "ctx->workspace"));
    /* a context of the first version's size: nothing past it is read */
    const size_t v1 = offsetof(nk_context, workspace);
    unsigned char *old = malloc(v1);
    nk_context init = NK_CONTEXT_INIT;
    init.struct_size = (uint32_t)v1;
    memcpy(old, &init, v1);
    assert_int_equal(nk_layer_norm_backward_ex((const nk_context *)(void *)old, &d, v, NULL, g, dxo,
                                               NULL, st, st, NULL, NULL),
                     NK_OK);
    free(old);
}

static void validation(void **state)
{
    (void)state;
    tcase t = {OP_BN, 2, 3, 4, NK_CHANNELS_FIRST, 1, 0, 0.01f, 1, 0.0, 0};
    fwd f;
    fwd_make(&t, 7, &f);
    nk_tensor_desc d = make_desc(&t);
    float dx[24], dw[3], db[3];
    double sa[3], sb[3];
    memset(dx, 0x5a, sizeof dx);
    memset(dw, 0x5a, sizeof dw);
    float dx0[24], dw0[3];
    memcpy(dx0, dx, sizeof dx);
    memcpy(dw0, dw, sizeof dw);
#define EXPECT(call, status, text)                                                                  \
    do {                                                                                           \
        assert_int_equal((call), (status));                                                        \
        if (!strstr(nk_last_error(), (text)))                                                      \
            fail_msg("message '%s' lacks '%s'", nk_last_error(), (text));                          \
        assert_memory_equal(dx, dx0, sizeof dx);                                                   \
        assert_memory_equal(dw, dw0, sizeof dw);                                                   \
    } while (0)
    d.activation = NK_ACT_SILU;
    EXPECT(nk_batch_norm_backward_ex(NULL, &d, f.x, f.y, f.dy, dx, f.w, f.mean, f.inv, dw, db),
           NK_ERR_UNSUPPORTED, "NK_ACT_SILU");
    d.activation = NK_ACT_GELU_TANH;
    EXPECT(nk_layer_norm_backward_ex(NULL, &d, f.x, f.y, f.dy, dx, f.w, f.mean, f.inv, dw, db),
           NK_ERR_UNSUPPORTED, "NK_ACT_GELU_TANH");
    d.activation = NK_ACT_LEAKY_RELU;
    d.alpha = -0.5f;
    EXPECT(nk_batch_norm_backward_ex(NULL, &d, f.x, f.y, f.dy, dx, f.w, f.mean, f.inv, dw, db),
           NK_ERR_UNSUPPORTED, "alpha");
    d.alpha = 0.1f;
    EXPECT(nk_batch_norm_backward_ex(NULL, &d, f.x, NULL, f.dy, dx, f.w, f.mean, f.inv, dw, db),
           NK_ERR_NULL_POINTER, "y is NULL");
    d.activation = NK_ACT_NONE;
    EXPECT(nk_batch_norm_backward_ex(NULL, &d, f.x, NULL, NULL, dx, f.w, f.mean, f.inv, dw, db),
           NK_ERR_NULL_POINTER, "dy is NULL");
    EXPECT(nk_batch_norm_backward_ex(NULL, &d, NULL, NULL, f.dy, dx, f.w, f.mean, f.inv, dw, db),
           NK_ERR_NULL_POINTER, "x is NULL");
    EXPECT(nk_batch_norm_backward_ex(NULL, &d, f.x, NULL, f.dy, dx, f.w, NULL, f.inv, dw, db),
           NK_ERR_NULL_POINTER, "save_mean");
    EXPECT(nk_batch_norm_backward_ex(NULL, &d, f.x, NULL, f.dy, dx, f.w, f.mean, NULL, dw, db),
           NK_ERR_NULL_POINTER, "save_invstd");
    EXPECT(nk_batch_norm_infer_backward_ex(NULL, &d, f.x, NULL, f.dy, dx, f.w, f.mean, f.inv, -1.0,
                                           dw, db),
           NK_ERR_BAD_PARAM, "eps");
    EXPECT(nk_batch_norm_backward_ex(NULL, &d, f.x, NULL, f.dy, (void *)f.x, f.w, f.mean, f.inv,
                                     dw, db),
           NK_ERR_BAD_PARAM, "dx may alias dy only");
    nk_tensor_desc ds = d;
    ds.y_stride[1] = 5;
    ds.y_stride[0] = 20;
    float dyc[40] = {0};
    EXPECT(nk_batch_norm_backward_ex(NULL, &ds, f.x, NULL, dyc, dyc, f.w, f.mean, f.inv, dw, db),
           NK_ERR_BAD_PARAM, "in place");
    EXPECT(nk_batch_norm_backward_elemt_ex(NULL, &d, f.x, NULL, f.dy, dx, f.w, f.mean, f.inv, sa,
                                           sb, 7),
           NK_ERR_BAD_PARAM, "count");
    EXPECT(nk_batch_norm_backward_elemt_ex(NULL, &d, f.x, NULL, f.dy, dx, f.w, f.mean, f.inv, NULL,
                                           sb, 8),
           NK_ERR_NULL_POINTER, "sum_dy");
    EXPECT(nk_batch_norm_backward_reduce_ex(NULL, &d, f.x, NULL, f.dy, f.mean, f.inv, sa, NULL, dw,
                                            db),
           NK_ERR_NULL_POINTER, "sum_dy_xmu");
    EXPECT(nk_group_norm_backward_ex(NULL, &d, f.x, NULL, f.dy, dx, 2, f.w, f.mean, f.inv, dw, db),
           NK_ERR_BAD_PARAM, "divisible");
    EXPECT(nk_group_norm_backward_ex(NULL, &d, f.x, NULL, f.dy, dx, 0, f.w, f.mean, f.inv, dw, db),
           NK_ERR_BAD_PARAM, "num_groups");
    EXPECT(nk_layer_norm_backward_ex(NULL, &d, f.x, NULL, f.dy, dx, f.w, f.mean, f.inv, dw, db),
           NK_ERR_UNSUPPORTED, "NK_CHANNELS_LAST");
    EXPECT(nk_rms_norm_backward_ex(NULL, NULL, f.x, NULL, f.dy, dx, f.w, f.inv, dw),
           NK_ERR_NULL_POINTER, "desc");
    nk_tensor_desc db16 = d;
    db16.param_dtype = NK_DTYPE_BF16;
    EXPECT(nk_instance_norm_backward_ex(NULL, &db16, f.x, NULL, f.dy, dx, f.w, f.mean, f.inv, dw,
                                        db),
           NK_ERR_BAD_PARAM, "param_dtype");
    nk_tensor_desc dn = d;
    dn.n = -1;
    EXPECT(nk_instance_norm_backward_ex(NULL, &dn, f.x, NULL, f.dy, dx, f.w, f.mean, f.inv, dw, db),
           NK_ERR_BAD_SHAPE, "");
#undef EXPECT
    /* nothing wanted: validation only, NULL inputs accepted */
    assert_int_equal(nk_batch_norm_backward_ex(NULL, &d, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
                                               NULL, NULL),
                     NK_OK);
    /* elemt's sums are inputs: without dx nothing is wanted either */
    sa[0] = sa[1] = sa[2] = sb[0] = sb[1] = sb[2] = 1.0;
    assert_int_equal(nk_batch_norm_backward_elemt_ex(NULL, &d, NULL, NULL, NULL, NULL, NULL, NULL,
                                                     NULL, sa, sb, 8),
                     NK_OK);
    assert_string_equal(nk_last_error(), "");
    /* an empty tensor with no output wanted: validation only, whatever C */
    nk_tensor_desc de = d;
    de.n = 0;
    de.c = (int64_t)(PTRDIFF_MAX / sizeof(float));
    de.spatial = 1;
    assert_int_equal(nk_batch_norm_backward_ex(NULL, &de, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
                                               NULL, NULL),
                     NK_OK);
    assert_int_equal(nk_group_norm_backward_ex(NULL, &de, NULL, NULL, NULL, NULL, 1, NULL, NULL,
                                               NULL, NULL, NULL),
                     NK_OK);
    /* an empty batch: zero parameter gradients */
    d.n = 0;
    dw[0] = dw[1] = dw[2] = 5.0f;
    db[0] = db[1] = db[2] = 5.0f;
    assert_int_equal(nk_group_norm_backward_ex(NULL, &d, NULL, NULL, NULL, NULL, 3, f.w, NULL,
                                               NULL, dw, db),
                     NK_OK);
    for (int c = 0; c < 3; c++)
        assert_true(dw[c] == 0.0f && db[c] == 0.0f);
    fwd_free(&f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(analytic_all_ops),
        cmocka_unit_test(edge_cases),
        cmocka_unit_test(finite_differences),
        cmocka_unit_test(activation_masks),
        cmocka_unit_test(sync_pieces),
        cmocka_unit_test(thread_determinism),
        cmocka_unit_test(low_precision),
        cmocka_unit_test(torch_goldens),
        cmocka_unit_test(fused_param_grads),
        cmocka_unit_test(validation),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
