/*
 * Every operator against a float64 oracle (tests/nk_test.c) on the ISA in use:
 * random shapes including every length 1..70 and primes, both layouts, with and
 * without affine, every activation, groups of more than 1e6 elements, and the
 * robustness cases of SEMANTICS.md section 4.
 * Tolerance: 1e-5 absolute for unit-scale data. For data with |mean| >> std the
 * fp32 output cannot be closer than half an ulp of the mean divided by std (the
 * mean itself is a float), so those cases add that term.
 */
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nk_test.h"

#define ATOL 1e-5

static const nk_options acts[] = {
    {NK_ACT_NONE, 0.0f},     {NK_ACT_RELU, 0.0f},      {NK_ACT_LEAKY_RELU, 0.2f},
    {NK_ACT_SILU, 0.0f},     {NK_ACT_GELU_ERF, 0.0f},  {NK_ACT_GELU_TANH, 0.0f},
};

typedef struct bufs {
    float *x, *y, *w, *b;
    double *ref;
} bufs;

static bufs alloc_bufs(size_t n, size_t c, nkt_rng *r, double mean, double std)
{
    bufs B;
    B.x = malloc(n * sizeof(float));
    B.y = malloc(n * sizeof(float));
    B.ref = malloc(n * sizeof(double));
    B.w = malloc(c * sizeof(float));
    B.b = malloc(c * sizeof(float));
    assert_true(B.x && B.y && B.ref && B.w && B.b);
    nkt_fill(r, B.x, n, mean, std);
    nkt_fill(r, B.w, c, 1.0, 0.5);
    nkt_fill(r, B.b, c, 0.0, 0.5);
    return B;
}

static void free_bufs(bufs *B)
{
    free(B->x);
    free(B->y);
    free(B->ref);
    free(B->w);
    free(B->b);
}

/* One channel operator case against the oracle. kind: NKT_BN / NKT_IN / NKT_GN;
 * infer runs BatchNorm inference with made-up running statistics. */
static void check_channel_op(int kind, int infer, const nk_shape *s, int64_t groups, int affine,
                             const nk_options *o, nkt_rng *r, double atol)
{
    size_t n = (size_t)(s->n * s->c * s->spatial);
    bufs B = alloc_bufs(n, (size_t)s->c, r, 0.3, 1.0);
    const float *w = affine ? B.w : NULL, *b = affine ? B.b : NULL;
    nk_status st;
    char what[160];
    snprintf(what, sizeof what, "kind %d%s [%lld, %lld, %lld] %s groups %lld affine %d act %d", kind,
             infer ? " infer" : "", (long long)s->n, (long long)s->c, (long long)s->spatial,
             s->layout == NK_CHANNELS_LAST ? "NHWC" : "NCHW", (long long)groups, affine,
             (int)o->activation);
    if (infer) {
        float *rm = malloc((size_t)s->c * sizeof(float)), *rv = malloc((size_t)s->c * sizeof(float));
        for (int64_t c = 0; c < s->c; c++) {
            rm[c] = (float)(0.1 * (double)(c % 7) - 0.2);
            rv[c] = (float)(0.5 + 0.01 * (double)(c % 11));
        }
        st = nk_batch_norm_infer(B.x, s, w, b, rm, rv, 1e-5, B.y, o);
        assert_int_equal(st, NK_OK);
        for (int64_t nn = 0; nn < s->n; nn++)
            for (int64_t c = 0; c < s->c; c++)
                for (int64_t p = 0; p < s->spatial; p++) {
                    size_t i = s->layout == NK_CHANNELS_FIRST ? (size_t)((nn * s->c + c) * s->spatial + p)
                                                              : (size_t)((nn * s->spatial + p) * s->c + c);
                    double v = (B.x[i] - (double)rm[c]) / sqrt((double)rv[c] + 1e-5);
                    B.ref[i] = nkt_act(v * (w ? w[c] : 1.0) + (b ? b[c] : 0.0), o);
                }
        free(rm);
        free(rv);
    } else {
        if (kind == NKT_BN)
            st = nk_batch_norm_train(B.x, s, w, b, 1e-5, NULL, B.y, NULL, NULL, o);
        else if (kind == NKT_IN)
            st = nk_instance_norm(B.x, s, w, b, 1e-5, 1, NULL, B.y, NULL, NULL, o);
        else
            st = nk_group_norm(B.x, s, groups, w, b, 1e-5, B.y, NULL, NULL, o);
        if (st != NK_OK)
            print_error("%s: %s\n", what, nk_last_error());
        assert_int_equal(st, NK_OK);
        nkt_oracle_norm(B.x, s, kind, groups, w, b, 1e-5, o, B.ref);
    }
    nkt_assert_close(B.y, B.ref, n, atol, 0.0, what);
    free_bufs(&B);
}

static void channel_ops_lengths(void **state)
{
    (void)state;
    nkt_rng r;
    nkt_seed(&r, 1);
    for (int64_t len = 1; len <= 70; len++) {
        for (int lay = 0; lay < 2; lay++) {
            const nk_options *o = &acts[len % 6];
            int affine = (int)(len & 1);
            /* spatial = len */
            nk_shape s = {2, 3, len, (nk_layout)lay};
            check_channel_op(NKT_BN, 0, &s, 0, affine, o, &r, ATOL);
            check_channel_op(NKT_BN, 1, &s, 0, affine, o, &r, ATOL);
            if (len > 1)
                check_channel_op(NKT_IN, 0, &s, 0, affine, o, &r, ATOL);
            /* channels = len: every channels-last width, incl. the widened view */
            nk_shape sc = {2, len, 7, (nk_layout)lay};
            check_channel_op(NKT_BN, 0, &sc, 0, !affine, o, &r, ATOL);
            check_channel_op(NKT_IN, 0, &sc, 0, !affine, o, &r, ATOL);
            int64_t g = len % 3 == 0 ? 3 : len % 2 == 0 ? 2 : 1;
            check_channel_op(NKT_GN, 0, &sc, g, affine, o, &r, ATOL);
            check_channel_op(NKT_GN, 0, &sc, len, affine, o, &r, ATOL);
        }
    }
}

static void channel_ops_primes_and_wide(void **state)
{
    (void)state;
    nkt_rng r;
    nkt_seed(&r, 2);
    const int64_t primes[] = {97, 127, 251, 257, 509, 1021, 4099};
    for (size_t i = 0; i < sizeof primes / sizeof primes[0]; i++)
        for (int lay = 0; lay < 2; lay++) {
            const nk_options *o = &acts[i % 6];
            nk_shape s = {3, 5, primes[i], (nk_layout)lay};
            check_channel_op(NKT_BN, 0, &s, 0, 1, o, &r, ATOL);
            check_channel_op(NKT_IN, 0, &s, 0, 1, o, &r, ATOL);
            nk_shape sc = {2, primes[i], 3, (nk_layout)lay};
            check_channel_op(NKT_BN, 0, &sc, 0, 1, o, &r, ATOL);
            check_channel_op(NKT_BN, 1, &sc, 0, 1, o, &r, ATOL);
            check_channel_op(NKT_GN, 0, &sc, 1, 1, o, &r, ATOL);
        }
    /* more channels than one stack block, groups spanning blocks */
    for (int lay = 0; lay < 2; lay++) {
        nk_shape s = {2, 1040, 9, (nk_layout)lay};
        check_channel_op(NKT_BN, 0, &s, 0, 1, &acts[0], &r, ATOL);
        check_channel_op(NKT_IN, 0, &s, 0, 1, &acts[3], &r, ATOL);
        check_channel_op(NKT_GN, 0, &s, 2, 1, &acts[4], &r, ATOL);
        check_channel_op(NKT_GN, 0, &s, 130, 1, &acts[1], &r, ATOL);
        check_channel_op(NKT_BN, 1, &s, 0, 1, &acts[2], &r, ATOL);
        nk_shape many = {70, 3, 5, (nk_layout)lay}; /* more images than a row block */
        check_channel_op(NKT_BN, 0, &many, 0, 1, &acts[5], &r, ATOL);
    }
}

static void check_rows(int rms, int64_t rows, int64_t cols, int affine, const nk_options *o, nkt_rng *r,
                       double mean, double std, double atol)
{
    size_t n = (size_t)(rows * cols);
    bufs B = alloc_bufs(n, (size_t)cols, r, mean, std);
    const float *w = affine ? B.w : NULL, *b = affine ? B.b : NULL;
    nk_status st;
    if (rms) {
        st = nk_rms_norm(B.x, rows, cols, w, 1e-6, B.y, NULL, o);
        nkt_oracle_rms_norm(B.x, rows, cols, w, 1e-6, o, B.ref);
    } else {
        st = nk_layer_norm(B.x, rows, cols, w, b, 1e-5, B.y, NULL, NULL, o);
        nkt_oracle_layer_norm(B.x, rows, cols, w, b, 1e-5, o, B.ref);
    }
    assert_int_equal(st, NK_OK);
    char what[96];
    snprintf(what, sizeof what, "%s %lldx%lld affine %d act %d", rms ? "RMSNorm" : "LayerNorm",
             (long long)rows, (long long)cols, affine, (int)o->activation);
    nkt_assert_close(B.y, B.ref, n, atol, 0.0, what);
    free_bufs(&B);
}

static void row_ops_lengths(void **state)
{
    (void)state;
    nkt_rng r;
    nkt_seed(&r, 3);
    for (int64_t len = 1; len <= 70; len++)
        for (int rms = 0; rms < 2; rms++) {
            if (!rms && len == 1)
                continue; /* a single value has no spread: covered by the constant tests */
            check_rows(rms, 5, len, (int)(len & 1), &acts[len % 6], &r, 0.0, 1.0, ATOL);
        }
    const int64_t primes[] = {97, 127, 251, 257, 509, 769, 1021, 4099, 65537};
    for (size_t i = 0; i < sizeof primes / sizeof primes[0]; i++)
        for (int rms = 0; rms < 2; rms++)
            check_rows(rms, 3, primes[i], 1, &acts[i % 6], &r, 0.0, 1.0, ATOL);
    check_rows(0, 300, 33, 1, &acts[0], &r, 0.0, 1.0, ATOL); /* many short rows */
    check_rows(1, 300, 33, 1, &acts[3], &r, 0.0, 1.0, ATOL);
}

/* A pool that runs the tasks inline in reverse order: any dependence of a
 * result on the task order or on which blocks share a call shows. */
static size_t rev_threads(void *ctx)
{
    (void)ctx;
    return 4;
}
static void rev_for(void *ctx, void (*task)(void *arg, size_t i), void *arg, size_t n)
{
    (void)ctx;
    for (size_t i = n; i-- > 0;)
        task(arg, i);
}

/*
 * LayerNorm / RMSNorm over c <= 64 (the fused short-row kernel) and c = 65
 * (the row kernels) through the _ex entry points: channels-last tensors with
 * padded rows and samples in x and y, saved statistics, inline and on a
 * pool. Outputs and statistics match the float64 oracle, the padding of y is
 * untouched, and the pool gives the inline bits.
 */
static void short_rows_strided(void **state)
{
    (void)state;
    static const int64_t cs[] = {1, 5, 16, 17, 33, 64, 65};
    enum { N = 3, S = 401 };
    nkt_rng r;
    nkt_seed(&r, 23);
    const nk_threadpool pool = {NULL, rev_threads, rev_for};
    nk_context pc = NK_CONTEXT_INIT;
    pc.pool = &pool;
    for (size_t ci = 0; ci < sizeof cs / sizeof cs[0]; ci++)
        for (int rms = 0; rms < 2; rms++) {
            const int64_t C = cs[ci], rows = N * S;
            const int64_t xs1 = C + 3, xs0 = S * xs1 + 5, ys1 = C + 7, ys0 = S * ys1 + 1;
            float *x = malloc((size_t)(N * xs0) * sizeof *x);
            float *y = malloc((size_t)(N * ys0) * sizeof *y);
            float *y2 = malloc((size_t)(N * ys0) * sizeof *y2);
            float *xd = malloc((size_t)(rows * C) * sizeof *xd);
            double *ref = malloc((size_t)(rows * C) * sizeof *ref);
            float *w = malloc((size_t)C * sizeof *w), *b = malloc((size_t)C * sizeof *b);
            float sm[2][N * S], si[2][N * S];
            assert_true(x && y && y2 && xd && ref && w && b);
            nkt_fill(&r, x, (size_t)(N * xs0), 3.0, 2.0);
            nkt_fill(&r, w, (size_t)C, 1.0, 0.3);
            nkt_fill(&r, b, (size_t)C, 0.0, 0.5);
            for (int64_t i = 0; i < N * ys0; i++)
                y[i] = y2[i] = 777.0f;
            for (int64_t n = 0; n < N; n++)
                for (int64_t sp = 0; sp < S; sp++)
                    memcpy(xd + (n * S + sp) * C, x + n * xs0 + sp * xs1, (size_t)C * sizeof *xd);
            nk_tensor_desc d = NK_TENSOR_DESC_INIT;
            d.layout = NK_CHANNELS_LAST;
            d.n = N, d.c = C, d.spatial = S;
            d.x_stride[0] = xs0, d.x_stride[1] = xs1, d.y_stride[0] = ys0, d.y_stride[1] = ys1;
            d.activation = (int32_t)(ci % 6);
            d.alpha = acts[ci % 6].alpha;
            for (int k = 0; k < 2; k++) {
                const nk_context *ctx = k ? &pc : NULL;
                float *yk = k ? y2 : y;
                if (rms)
                    assert_int_equal(nk_rms_norm_ex(ctx, &d, x, yk, w, 1e-6, si[k]), NK_OK);
                else
                    assert_int_equal(nk_layer_norm_ex(ctx, &d, x, yk, w, b, 1e-5, sm[k], si[k]),
                                     NK_OK);
            }
            char what[96];
            snprintf(what, sizeof what, "%s _ex c %lld strided", rms ? "RMSNorm" : "LayerNorm",
                     (long long)C);
            if (memcmp(y, y2, (size_t)(N * ys0) * sizeof *y) ||
                memcmp(si[0], si[1], sizeof si[0]) ||
                (!rms && memcmp(sm[0], sm[1], sizeof sm[0]))) {
                print_error("%s: a pool gives other bits than the calling thread\n", what);
                fail();
            }
            if (rms)
                nkt_oracle_rms_norm(xd, rows, C, w, 1e-6, &acts[ci % 6], ref);
            else
                nkt_oracle_layer_norm(xd, rows, C, w, b, 1e-5, &acts[ci % 6], ref);
            for (int64_t n = 0; n < N; n++)
                for (int64_t sp = 0; sp < S; sp++) {
                    const int64_t row = n * S + sp;
                    nkt_assert_close(y + n * ys0 + sp * ys1, ref + row * C, (size_t)C, ATOL, 0.0,
                                     what);
                    for (int64_t i = C; i < ys1 && n * ys0 + sp * ys1 + i < N * ys0; i++)
                        assert_true(y[n * ys0 + sp * ys1 + i] == 777.0f);
                    /* the saved statistics against float64 */
                    const float *xr = xd + row * C;
                    double mean = 0.0, ss = 0.0, m2 = 0.0;
                    for (int64_t i = 0; i < C; i++)
                        mean += xr[i], ss += (double)xr[i] * xr[i];
                    mean /= (double)C;
                    for (int64_t i = 0; i < C; i++)
                        m2 += (xr[i] - mean) * (xr[i] - mean);
                    const double inv =
                        1.0 / sqrt((rms ? ss : m2) / (double)C + (rms ? 1e-6 : 1e-5));
                    if (!(fabs(si[0][row] - inv) <= 1e-5 * inv) ||
                        (!rms && !(fabs(sm[0][row] - mean) <= 1e-6 * (fabs(mean) + 1.0)))) {
                        print_error("%s row %lld: saved %.9g %.9g, oracle %.9g %.9g\n", what,
                                    (long long)row, rms ? 0.0 : (double)sm[0][row],
                                    (double)si[0][row], rms ? 0.0 : mean, inv);
                        fail();
                    }
                }
            free(x);
            free(y);
            free(y2);
            free(xd);
            free(ref);
            free(w);
            free(b);
        }
}

/*
 * Channels-first InstanceNorm over spatial <= 64 (the short-row kernel with
 * the per-row affine) and 65 (the row kernels) through nk_instance_norm_ex:
 * C = 300, so blocks of rows straddle samples; dense and with padded
 * channels and samples in x and y; inline and on a pool. Outputs and saved
 * statistics match the float64 oracle, the padding of y is untouched, and
 * the pool gives the inline bits; so does the dense call on the short-row
 * kernel, where each row's result depends on that row's values alone
 * (kernels/kernels.h). The row-kernel path (spatial 65) is not held to the
 * dense bits: its saved statistics differ from the strided call's in the
 * last bits.
 */
static void instance_short_strided(void **state)
{
    (void)state;
    static const int64_t ss[] = {2, 7, 16, 17, 49, 64, 65};
    enum { N = 3, C = 300 };
    nkt_rng r;
    nkt_seed(&r, 29);
    const nk_threadpool pool = {NULL, rev_threads, rev_for};
    nk_context pc = NK_CONTEXT_INIT;
    pc.pool = &pool;
    for (size_t si_ = 0; si_ < sizeof ss / sizeof ss[0]; si_++) {
        const int64_t S = ss[si_], rows = N * C;
        const int64_t xs1 = S + 3, xs0 = C * xs1 + 5, ys1 = S + 7, ys0 = C * ys1 + 1;
        float *x = malloc((size_t)(N * xs0) * sizeof *x);
        float *y = malloc((size_t)(N * ys0) * sizeof *y);
        float *y2 = malloc((size_t)(N * ys0) * sizeof *y2);
        float *xd = malloc((size_t)(rows * S) * sizeof *xd);
        float *yd = malloc((size_t)(rows * S) * sizeof *yd);
        double *ref = malloc((size_t)(rows * S) * sizeof *ref);
        float *w = malloc(C * sizeof *w), *b = malloc(C * sizeof *b);
        float sm[3][N * C], si[3][N * C];
        assert_true(x && y && y2 && xd && yd && ref && w && b);
        /* the data of check_channel_op: a spatial extent of 2 leaves some rows
         * with sd far below the mean, where x - mean cancels (any path) */
        nkt_fill(&r, x, (size_t)(N * xs0), 0.3, 1.0);
        nkt_fill(&r, w, C, 1.0, 0.3);
        nkt_fill(&r, b, C, 0.0, 0.5);
        for (int64_t i = 0; i < N * ys0; i++)
            y[i] = y2[i] = 777.0f;
        for (int64_t q = 0; q < rows; q++)
            memcpy(xd + q * S, x + (q / C) * xs0 + (q % C) * xs1, (size_t)S * sizeof *xd);
        const nk_options *o = &acts[si_ % 6];
        nk_tensor_desc d = NK_TENSOR_DESC_INIT;
        d.layout = NK_CHANNELS_FIRST;
        d.n = N, d.c = C, d.spatial = S;
        d.x_stride[0] = xs0, d.x_stride[1] = xs1, d.y_stride[0] = ys0, d.y_stride[1] = ys1;
        d.activation = (int32_t)o->activation;
        d.alpha = o->alpha;
        for (int k = 0; k < 2; k++)
            assert_int_equal(nk_instance_norm_ex(k ? &pc : NULL, &d, x, k ? y2 : y, w, b, 1e-5, 1,
                                                 NULL, sm[k], si[k]),
                             NK_OK);
        const nk_shape sh = {N, C, S, NK_CHANNELS_FIRST};
        assert_int_equal(nk_instance_norm(xd, &sh, w, b, 1e-5, 1, NULL, yd, sm[2], si[2], o),
                         NK_OK);
        char what[96];
        snprintf(what, sizeof what, "InstanceNorm _ex spatial %lld strided", (long long)S);
        const int short_rows = S <= 64; /* NK_SHORT_ROW */
        if (memcmp(y, y2, (size_t)(N * ys0) * sizeof *y) || memcmp(si[0], si[1], sizeof si[0]) ||
            memcmp(sm[0], sm[1], sizeof sm[0]) ||
            (short_rows &&
             (memcmp(si[0], si[2], sizeof si[0]) || memcmp(sm[0], sm[2], sizeof sm[0])))) {
            print_error("%s: a pool or the dense call gives other bits than the calling thread\n",
                        what);
            fail();
        }
        nkt_oracle_norm(xd, &sh, NKT_IN, 0, w, b, 1e-5, o, ref);
        for (int64_t q = 0; q < rows; q++) {
            const float *yq = y + (q / C) * ys0 + (q % C) * ys1;
            nkt_assert_close(yq, ref + q * S, (size_t)S, ATOL, 0.0, what);
            if (short_rows && memcmp(yq, yd + q * S, (size_t)S * sizeof *yq)) {
                print_error("%s row %lld: strided and dense outputs differ\n", what,
                            (long long)q);
                fail();
            }
            for (int64_t i = S; i < ys1 && (q / C) * ys0 + (q % C) * ys1 + i < N * ys0; i++)
                assert_true(yq[i] == 777.0f);
            const float *xr = xd + q * S;
            double mean = 0.0, m2 = 0.0;
            for (int64_t i = 0; i < S; i++)
                mean += xr[i];
            mean /= (double)S;
            for (int64_t i = 0; i < S; i++)
                m2 += (xr[i] - mean) * (xr[i] - mean);
            const double inv = 1.0 / sqrt(m2 / (double)S + 1e-5);
            if (!(fabs(si[0][q] - inv) <= 1e-5 * inv) ||
                !(fabs(sm[0][q] - mean) <= 1e-6 * (fabs(mean) + 1.0))) {
                print_error("%s row %lld: saved %.9g %.9g, oracle %.9g %.9g\n", what,
                            (long long)q, (double)sm[0][q], (double)si[0][q], mean, inv);
                fail();
            }
        }
        free(x);
        free(y);
        free(y2);
        free(xd);
        free(yd);
        free(ref);
        free(w);
        free(b);
    }
}

static void large_groups(void **state)
{
    (void)state;
    nkt_rng r;
    nkt_seed(&r, 5);
    /* groups of more than 1e6 elements */
    nk_shape in = {1, 2, (1 << 20) + 3, NK_CHANNELS_FIRST};
    check_channel_op(NKT_IN, 0, &in, 0, 1, &acts[0], &r, ATOL);
    nk_shape bn = {2, 3, 600001, NK_CHANNELS_LAST};
    check_channel_op(NKT_BN, 0, &bn, 0, 1, &acts[1], &r, ATOL);
    nk_shape gn = {1, 4, 300007, NK_CHANNELS_FIRST};
    check_channel_op(NKT_GN, 0, &gn, 1, 1, &acts[3], &r, ATOL);
    check_rows(0, 1, 1100003, 1, &acts[0], &r, 0.0, 1.0, ATOL);
    check_rows(1, 1, 1100003, 1, &acts[0], &r, 0.0, 1.0, ATOL);
}

/* pytorch#54293: GroupNorm over tens of millions of elements agrees with float64,
 * here with a mean of 1000 where sequential fp32 sums drift badly. */
static void groupnorm_tens_of_millions(void **state)
{
    (void)state;
    nkt_rng r;
    nkt_seed(&r, 6);
    const nk_shape s = {1, 4, 5000000, NK_CHANNELS_FIRST};
    const size_t n = 20000000;
    bufs B = alloc_bufs(n, 4, &r, 1000.0, 1.0);
    float save_mean, save_invstd;
    assert_int_equal(nk_group_norm(B.x, &s, 1, NULL, NULL, 1e-5, B.y, &save_mean, &save_invstd, NULL), NK_OK);
    double sum = 0, m2 = 0;
    for (size_t i = 0; i < n; i++)
        sum += B.x[i];
    double mean = sum / (double)n;
    for (size_t i = 0; i < n; i++)
        m2 += (B.x[i] - mean) * (B.x[i] - mean);
    double var = m2 / (double)n;
    assert_true(fabs(save_mean - mean) <= 0.5 * 6.2e-5);                       /* within half an ulp */
    assert_true(fabs(save_invstd - 1.0 / sqrt(var + 1e-5)) <= 1e-6 / sqrt(var)); /* relative 1e-6 */
    nkt_oracle_norm(B.x, &s, NKT_GN, 1, NULL, NULL, 1e-5, NULL, B.ref);
    nkt_assert_close(B.y, B.ref, n, ATOL + 0.5 * 6.2e-5, 0.0, "GroupNorm 20M elements, mean 1000");
    free_bufs(&B);
}

/* SEMANTICS.md section 4 */
static void mean_shifted_rows(void **state)
{
    (void)state;
    nkt_rng r;
    nkt_seed(&r, 7);
    /* pytorch#51102: a row shifted by +2000; the mean is a float, ulp(2000) = 1.2e-4
     * (no affine, so the weight does not scale that term) */
    check_rows(0, 8, 1000, 0, &acts[0], &r, 2000.0, 1.0, ATOL + 0.5 * 1.23e-4);
    /* burn#5607: E[x^2] - E[x]^2 fails at mean 100 */
    check_rows(0, 8, 4096, 0, &acts[0], &r, 100.0, 1.0, ATOL + 0.5 * 7.7e-6);
    for (int lay = 0; lay < 2; lay++) {
        nk_shape s = {4, 3, 999, (nk_layout)lay};
        size_t n = 4 * 3 * 999;
        bufs B = alloc_bufs(n, 3, &r, 100.0, 0.01);
        assert_int_equal(nk_batch_norm_train(B.x, &s, NULL, NULL, 1e-5, NULL, B.y, NULL, NULL, NULL), NK_OK);
        nkt_oracle_norm(B.x, &s, NKT_BN, 0, NULL, NULL, 1e-5, NULL, B.ref);
        /* std 0.01: half an ulp of 100 is 3.8e-6, times invstd 100 */
        nkt_assert_close(B.y, B.ref, n, ATOL + 3.9e-4, 0.0, "BatchNorm mean 100 std 0.01");
        free_bufs(&B);
    }
}

static void row_40000(void **state)
{
    (void)state;
    /* onnxruntime#28463 */
    const float x[4] = {40000.0f, 40001.0f, 40002.0f, 40003.0f};
    float y[4];
    double ref[4];
    assert_int_equal(nk_layer_norm(x, 1, 4, NULL, NULL, 1e-5, y, NULL, NULL, NULL), NK_OK);
    nkt_oracle_layer_norm(x, 1, 4, NULL, NULL, 1e-5, NULL, ref);
    nkt_assert_close(y, ref, 4, ATOL, 0.0, "LayerNorm [40000 .. 40003]");
    const nk_shape s = {1, 1, 4, NK_CHANNELS_FIRST};
    assert_int_equal(nk_instance_norm(x, &s, NULL, NULL, 1e-5, 1, NULL, y, NULL, NULL, NULL), NK_OK);
    nkt_assert_close(y, ref, 4, ATOL, 0.0, "InstanceNorm [40000 .. 40003]");
}

static void constant_rows_every_length(void **state)
{
    (void)state;
    /* onnxruntime#21935 and the mean-rounding trap: every length, exactly beta */
    const float values[] = {1234.0f, 0.1f, -3.3e-3f, 7.0e5f, 1.0e-20f};
    enum { MAXLEN = 1100 };
    float *x = malloc(MAXLEN * 3 * sizeof(float)), *y = malloc(MAXLEN * 3 * sizeof(float));
    float w[3] = {1.5f, -2.0f, 0.75f}, b[3] = {0.25f, -1.0f, 3.5f};
    float *g = malloc(MAXLEN * sizeof(float)), *bb = malloc(MAXLEN * sizeof(float));
    for (int i = 0; i < MAXLEN; i++) {
        g[i] = 1.0f + (float)(i % 5);
        bb[i] = 0.125f * (float)(i % 9) - 0.5f;
    }
    for (size_t v = 0; v < sizeof values / sizeof values[0]; v++)
        for (int len = 1; len <= MAXLEN; len += (len < 300 ? 1 : 97)) {
            for (int i = 0; i < 3 * len; i++)
                x[i] = values[v];
            assert_int_equal(nk_layer_norm(x, 1, len, g, bb, 1e-5, y, NULL, NULL, NULL), NK_OK);
            for (int i = 0; i < len; i++)
                if (y[i] != bb[i]) {
                    print_error("LayerNorm constant %g len %d: y[%d] = %.9g, beta %.9g\n",
                                (double)values[v], len, i, (double)y[i], (double)bb[i]);
                    fail();
                }
            for (int lay = 0; lay < 2; lay++) {
                const nk_shape s = {1, 3, len, (nk_layout)lay};
                if (len > 1) {
                    assert_int_equal(nk_instance_norm(x, &s, w, b, 1e-5, 1, NULL, y, NULL, NULL, NULL), NK_OK);
                    for (int i = 0; i < 3 * len; i++)
                        assert_true(y[i] == b[lay ? i % 3 : i / len]);
                    assert_int_equal(nk_batch_norm_train(x, &s, w, b, 1e-5, NULL, y, NULL, NULL, NULL), NK_OK);
                    for (int i = 0; i < 3 * len; i++)
                        assert_true(y[i] == b[lay ? i % 3 : i / len]);
                }
                const nk_shape gs = {1, 3, len, (nk_layout)lay};
                if (len > 1 || lay) {
                    nk_status st = nk_group_norm(x, &gs, 1, w, b, 1e-5, y, NULL, NULL, NULL);
                    assert_int_equal(st, NK_OK);
                    for (int i = 0; i < 3 * len; i++)
                        assert_true(y[i] == b[lay ? i % 3 : i / len]);
                }
            }
        }
    free(x);
    free(y);
    free(g);
    free(bb);
}

static void huge_magnitudes(void **state)
{
    (void)state;
    /* pytorch#162489: |x| near 1e30 must not silently give zeros; the fp32
     * squares overflow, the fp64 recompute keeps the statistics exact */
    const float x[4] = {1e30f, 2e30f, 3e30f, 4e30f};
    float y[4];
    double ref[4];
    assert_int_equal(nk_layer_norm(x, 1, 4, NULL, NULL, 1e-5, y, NULL, NULL, NULL), NK_OK);
    nkt_oracle_layer_norm(x, 1, 4, NULL, NULL, 1e-5, NULL, ref);
    nkt_assert_close(y, ref, 4, ATOL, 0.0, "LayerNorm 1e30");
    assert_true(fabs(ref[0] + 1.3416407) < 1e-6);
    for (int lay = 0; lay < 2; lay++) {
        const nk_shape s = {4, 1, 1, (nk_layout)lay};
        assert_int_equal(nk_batch_norm_train(x, &s, NULL, NULL, 1e-5, NULL, y, NULL, NULL, NULL), NK_OK);
        nkt_assert_close(y, ref, 4, ATOL, 0.0, "BatchNorm 1e30");
    }
    const nk_shape gs = {1, 2, 2, NK_CHANNELS_FIRST};
    assert_int_equal(nk_group_norm(x, &gs, 1, NULL, NULL, 1e-5, y, NULL, NULL, NULL), NK_OK);
    nkt_assert_close(y, ref, 4, ATOL, 0.0, "GroupNorm 1e30");
    assert_int_equal(nk_rms_norm(x, 1, 4, NULL, 1e-6, y, NULL, NULL), NK_OK);
    nkt_oracle_rms_norm(x, 1, 4, NULL, 1e-6, NULL, ref);
    nkt_assert_close(y, ref, 4, ATOL, 0.0, "RMSNorm 1e30");
    /* a long channels-last case through the column kernels */
    enum { L = 5000 };
    float *xl = malloc(L * 2 * sizeof(float)), *yl = malloc(L * 2 * sizeof(float));
    double *rl = malloc(L * 2 * sizeof(double));
    nkt_rng r;
    nkt_seed(&r, 8);
    nkt_fill(&r, xl, L * 2, 0.0, 1e30);
    const nk_shape cl = {1, 2, L, NK_CHANNELS_LAST};
    assert_int_equal(nk_instance_norm(xl, &cl, NULL, NULL, 1e-5, 1, NULL, yl, NULL, NULL, NULL), NK_OK);
    nkt_oracle_norm(xl, &cl, NKT_IN, 0, NULL, NULL, 1e-5, NULL, rl);
    nkt_assert_close(yl, rl, L * 2, ATOL, 0.0, "InstanceNorm channels-last 1e30");
    free(xl);
    free(yl);
    free(rl);
}

static void moments_and_sync_batch_norm(void **state)
{
    (void)state;
    nkt_rng r;
    nkt_seed(&r, 9);
    enum { N = 100003 };
    float *x = malloc(N * sizeof(float));
    nkt_fill(&r, x, N, 5.0, 2.0);
    nk_moments whole, a = {0, 0, 0}, part;
    assert_int_equal(nk_moments_compute(x, N, &whole), NK_OK);
    double sum = 0, m2 = 0;
    for (int i = 0; i < N; i++)
        sum += x[i];
    for (int i = 0; i < N; i++)
        m2 += (x[i] - sum / N) * (x[i] - sum / N);
    assert_true(whole.count == N);
    assert_true(fabs(whole.mean - sum / N) < 1e-6 * fabs(sum / N));
    assert_true(fabs(whole.m2 - m2) < 1e-6 * m2);
    const int cuts[] = {0, 1, 17, 4096, 50001, 99999, N};
    for (int k = 0; k + 1 < 7; k++) {
        assert_int_equal(nk_moments_compute(x + cuts[k], cuts[k + 1] - cuts[k], &part), NK_OK);
        nk_moments_merge(&a, &part);
    }
    assert_true(a.count == N);
    assert_true(fabs(a.mean - whole.mean) < 1e-9 * fabs(whole.mean));
    assert_true(fabs(a.m2 - whole.m2) < 1e-6 * whole.m2);
    assert_true(fabs(nk_moments_var(&a, 1) - m2 / (N - 1)) < 1e-6 * m2 / N);
    assert_true(fabs(nk_moments_var(&a, 0) - m2 / N) < 1e-6 * m2 / N);
    nk_moments one = {1, 3, 0};
    assert_true(isnan(nk_moments_var(&one, 1)));
    free(x);

    /* synchronized BatchNorm: two shards == one batch, in both layouts. Every
     * shard (one rank each) keeps its own running statistics, and each must
     * end as the single call over the whole batch leaves its own. */
    for (int lay = 0; lay < 2; lay++) {
        enum { C = 6, S = 37, SHARDS = 2 };
        const nk_shape whole_s = {5, C, S, (nk_layout)lay};
        const nk_shape shard_s[SHARDS] = {{2, C, S, (nk_layout)lay}, {3, C, S, (nk_layout)lay}};
        const size_t n = 5 * C * S, off[SHARDS] = {0, 2 * C * S};
        float *xb = malloc(n * sizeof(float)), *ya = malloc(n * sizeof(float)), *yb = malloc(n * sizeof(float));
        assert_true(xb && ya && yb);
        float w[C], b[C], rm[C], rv[C], sm[C], si[C];
        float rm_s[SHARDS][C], rv_s[SHARDS][C], sm_s[SHARDS][C], si_s[SHARDS][C];
        nkt_fill(&r, xb, n, 1.0, 3.0);
        nkt_fill(&r, w, C, 1.0, 0.3);
        nkt_fill(&r, b, C, 0.0, 0.3);
        for (int c = 0; c < C; c++) {
            rm[c] = 0.5f + 0.1f * (float)c;
            rv[c] = 1.5f - 0.1f * (float)c;
            for (int k = 0; k < SHARDS; k++) {
                rm_s[k][c] = rm[c];
                rv_s[k][c] = rv[c];
            }
        }
        nk_running_stats rs = {rm, rv, 0.1, 0, 1, 0};
        assert_int_equal(nk_batch_norm_train(xb, &whole_s, w, b, 1e-5, &rs, ya, sm, si, NULL), NK_OK);

        /* NHWC shards too: the batch dimension is outermost in both layouts */
        nk_moments global[C], shard_m[C];
        for (int c = 0; c < C; c++)
            global[c] = (nk_moments){0, 0, 0};
        for (int k = 0; k < SHARDS; k++) {
            assert_int_equal(nk_batch_norm_stats(xb + off[k], &shard_s[k], shard_m), NK_OK);
            for (int c = 0; c < C; c++)
                nk_moments_merge(&global[c], &shard_m[c]);
        }
        nk_running_stats rs_s[SHARDS];
        for (int k = 0; k < SHARDS; k++) {
            rs_s[k] = (nk_running_stats){rm_s[k], rv_s[k], 0.1, 0, 1, 0};
            assert_int_equal(nk_batch_norm_apply_moments(xb + off[k], &shard_s[k], global, w, b, 1e-5,
                                                         &rs_s[k], yb + off[k], sm_s[k], si_s[k], NULL),
                             NK_OK);
        }
        double *ref = malloc(n * sizeof(double));
        for (size_t i = 0; i < n; i++)
            ref[i] = ya[i];
        nkt_assert_close(yb, ref, n, 1e-6, 1e-6, "sync BatchNorm output");
        assert_int_equal(rs.num_batches_tracked, 1);
        for (int k = 0; k < SHARDS; k++) {
            for (int c = 0; c < C; c++)
                if (!(fabsf(rm_s[k][c] - rm[c]) <= 1e-6f * (1.0f + fabsf(rm[c]))) ||
                    !(fabsf(rv_s[k][c] - rv[c]) <= 1e-6f * (1.0f + fabsf(rv[c]))) ||
                    !(fabsf(sm_s[k][c] - sm[c]) <= 1e-6f * (1.0f + fabsf(sm[c]))) ||
                    !(fabsf(si_s[k][c] - si[c]) <= 1e-6f * fabsf(si[c]))) {
                    print_error("%s shard %d channel %d: running {%.9g, %.9g} saved {%.9g, %.9g}, "
                                "single call running {%.9g, %.9g} saved {%.9g, %.9g}\n",
                                lay ? "NHWC" : "NCHW", k, c, (double)rm_s[k][c], (double)rv_s[k][c],
                                (double)sm_s[k][c], (double)si_s[k][c], (double)rm[c], (double)rv[c],
                                (double)sm[c], (double)si[c]);
                    fail();
                }
            if (rs_s[k].num_batches_tracked != 1) {
                print_error("shard %d: num_batches_tracked %lld\n", k,
                            (long long)rs_s[k].num_batches_tracked);
                fail();
            }
        }
        free(ref);
        free(xb);
        free(ya);
        free(yb);
    }
}

static void running_stats_updates(void **state)
{
    (void)state;
    /* BatchNorm: momentum, cumulative average, biased / unbiased, checked in double */
    nkt_rng r;
    nkt_seed(&r, 10);
    const nk_shape s = {4, 2, 9, NK_CHANNELS_FIRST};
    float x[72], y[72], rm[2] = {0.3f, -0.2f}, rv[2] = {1.2f, 0.8f};
    for (int mode = 0; mode < 3; mode++) {
        float m[2] = {rm[0], rm[1]}, v[2] = {rv[0], rv[1]};
        nk_running_stats rs = {m, v, 0.25, mode == 1, mode != 2, 3};
        double em[2] = {rm[0], rm[1]}, ev[2] = {rv[0], rv[1]};
        for (int step = 0; step < 3; step++) {
            nkt_fill(&r, x, 72, 0.5 * step, 1.0 + step);
            assert_int_equal(nk_batch_norm_train(x, &s, NULL, NULL, 1e-5, &rs, y, NULL, NULL, NULL), NK_OK);
            double mom = mode == 1 ? 1.0 / (4 + step) : 0.25;
            for (int c = 0; c < 2; c++) {
                double sum = 0, m2 = 0;
                for (int n = 0; n < 4; n++)
                    for (int p = 0; p < 9; p++)
                        sum += x[(n * 2 + c) * 9 + p];
                double mean = sum / 36;
                for (int n = 0; n < 4; n++)
                    for (int p = 0; p < 9; p++)
                        m2 += pow(x[(n * 2 + c) * 9 + p] - mean, 2);
                em[c] = (float)((1 - mom) * em[c] + mom * mean);
                ev[c] = (float)((1 - mom) * ev[c] + mom * (mode == 2 ? m2 / 36 : m2 / 35));
            }
            assert_int_equal(rs.num_batches_tracked, 4 + step);
            nkt_assert_close(m, em, 2, 1e-6, 1e-6, "running mean");
            nkt_assert_close(v, ev, 2, 1e-6, 1e-6, "running var");
        }
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(channel_ops_lengths),
        cmocka_unit_test(channel_ops_primes_and_wide),
        cmocka_unit_test(row_ops_lengths),
        cmocka_unit_test(short_rows_strided),
        cmocka_unit_test(instance_short_strided),
        cmocka_unit_test(large_groups),
        cmocka_unit_test(groupnorm_tens_of_millions),
        cmocka_unit_test(mean_shifted_rows),
        cmocka_unit_test(row_40000),
        cmocka_unit_test(constant_rows_every_length),
        cmocka_unit_test(huge_magnitudes),
        cmocka_unit_test(moments_and_sync_batch_norm),
        cmocka_unit_test(running_stats_updates),
    };
    return cmocka_run_group_tests_name("numerics", tests, NULL, NULL);
}
