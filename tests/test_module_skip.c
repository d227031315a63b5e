/*
 * ONNX SkipLayerNormalization / SkipSimplifiedLayerNormalization modules
 * (NK_LAYER_SKIP_LAYER_NORM, NK_LAYER_SKIP_RMS_NORM, nk_module_forward_skip)
 * against a float64 oracle of s = x + skip + bias followed by LayerNorm /
 * RMSNorm with gamma and beta over the last dim.
 */
#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/cvt.h"
#include "nk_test.h"

static nk_module *make(nk_layer l, int64_t h, const nk_module_config *cfg)
{
    nk_module *m = NULL;
    nk_status st = nk_module_create(NK_FW_ONNX, l, 0, h, cfg, &m);
    if (st != NK_OK)
        print_error("nk_module_create: %s\n", nk_last_error());
    assert_int_equal(st, NK_OK);
    return m;
}

/* The float64 reference: rows of h elements; skip row r is skip + (r %
 * skip_rows) * h (skip_rows = rows without broadcast). s in double. */
static void oracle(const float *x, const float *skip, int64_t skip_rows, const float *sbias,
                   int64_t rows, int64_t h, const float *gamma, const float *beta, double eps,
                   int rms, const nk_options *o, double *y, double *mean, double *invstd)
{
    double *s = malloc((size_t)h * sizeof *s);
    assert_non_null(s);
    for (int64_t r = 0; r < rows; r++) {
        const float *k = skip + (r % skip_rows) * h;
        double mu = 0.0, m2 = 0.0;
        for (int64_t j = 0; j < h; j++) {
            s[j] = (double)x[r * h + j] + (double)k[j] + (sbias ? (double)sbias[j] : 0.0);
            mu += s[j];
        }
        mu /= (double)h;
        for (int64_t j = 0; j < h; j++)
            m2 += rms ? s[j] * s[j] : (s[j] - mu) * (s[j] - mu);
        const double is = 1.0 / sqrt(m2 / (double)h + eps);
        for (int64_t j = 0; j < h; j++) {
            double v = (rms ? s[j] : s[j] - mu) * is * (gamma ? (double)gamma[j] : 1.0) +
                       (beta ? (double)beta[j] : 0.0);
            y[r * h + j] = o ? nkt_act(v, o) : v;
        }
        if (mean)
            mean[r] = mu;
        if (invstd)
            invstd[r] = is;
    }
    free(s);
}

/* The sum output in fp32: (x + skip) then + bias, each rounded to float. */
static void sum_f32(const float *x, const float *skip, int64_t skip_rows, const float *sbias,
                    int64_t rows, int64_t h, float *out)
{
    for (int64_t r = 0; r < rows; r++)
        for (int64_t j = 0; j < h; j++) {
            volatile float v = x[r * h + j] + skip[(r % skip_rows) * h + j];
            if (sbias)
                v = v + sbias[j];
            out[r * h + j] = v;
        }
}

static void set_params(nk_module *m, nkt_rng *rng)
{
    const int64_t h = nk_module_param_size(m);
    for (int64_t j = 0; j < h; j++) {
        nk_module_weight(m)[j] = (float)(0.5 + nkt_uniform(rng));
        if (nk_module_bias(m))
            nk_module_bias(m)[j] = (float)(nkt_uniform(rng) - 0.5);
    }
}

static void defaults_and_rows(void **state)
{
    (void)state;
    /* ONNX Runtime's epsilon default for both contrib ops */
    assert_true(nk_default_eps(NK_FW_ONNX, NK_LAYER_SKIP_LAYER_NORM) == 1e-12);
    assert_true(nk_default_eps(NK_FW_ONNX, NK_LAYER_SKIP_RMS_NORM) == 1e-12);
    assert_true(isnan(nk_default_momentum(NK_FW_ONNX, NK_LAYER_SKIP_LAYER_NORM)));
    assert_true(isnan(nk_default_eps(NK_FW_ONNX, (nk_layer)7)));
    /* ONNX only */
    const nk_framework others[] = {NK_FW_PYTORCH, NK_FW_MINDSPORE, NK_FW_MEGENGINE, NK_FW_KERAS,
                                   NK_FW_PADDLE};
    for (int i = 0; i < 5; i++)
        for (int l = NK_LAYER_SKIP_LAYER_NORM; l <= NK_LAYER_SKIP_RMS_NORM; l++) {
            nk_module *none = NULL;
            assert_true(isnan(nk_default_eps(others[i], (nk_layer)l)));
            assert_int_equal(nk_module_create(others[i], (nk_layer)l, 0, 8, NULL, &none),
                             NK_ERR_UNSUPPORTED);
            assert_null(none);
        }
    assert_string_equal(nk_last_error(), "nk_module_create: Paddle has no SkipRMSNorm layer");
    nk_module *none = NULL;
    assert_int_equal(nk_module_create(NK_FW_ONNX, (nk_layer)7, 0, 8, NULL, &none), NK_ERR_BAD_PARAM);
    assert_string_equal(nk_last_error(), "nk_module_create: layer must be an nk_layer in [0, 6], got 7");

    nk_module *m = make(NK_LAYER_SKIP_LAYER_NORM, 6, NULL);
    assert_true(nk_module_eps(m) == 1e-12);
    assert_int_equal(nk_module_training(m), 0);
    assert_int_equal(nk_module_param_size(m), 6);
    assert_null(nk_module_running_mean(m));
    for (int j = 0; j < 6; j++)
        assert_true(nk_module_weight(m)[j] == 1.0f && nk_module_bias(m)[j] == 0.0f);
    nk_module_destroy(m);
    m = make(NK_LAYER_SKIP_RMS_NORM, 6, NULL);
    assert_true(nk_module_eps(m) == 1e-12);
    assert_non_null(nk_module_weight(m));
    assert_null(nk_module_bias(m));
    nk_module_destroy(m);

    nk_module_config cfg;
    nk_module_config_init(&cfg);
    cfg.bias = 0; /* no beta input */
    m = make(NK_LAYER_SKIP_LAYER_NORM, 6, &cfg);
    assert_non_null(nk_module_weight(m));
    assert_null(nk_module_bias(m));
    nk_module_destroy(m);
    /* SkipSimplifiedLayerNormalization has no beta; neither has an axis */
    assert_int_equal(nk_module_create(NK_FW_ONNX, NK_LAYER_SKIP_RMS_NORM, 0, 6, &cfg, &m),
                     NK_ERR_BAD_PARAM);
    assert_string_equal(nk_last_error(), "nk_module_create: ONNX has no parameter 'bias'");
    nk_module_config_init(&cfg);
    cfg.axis = 2;
    assert_int_equal(nk_module_create(NK_FW_ONNX, NK_LAYER_SKIP_LAYER_NORM, 0, 6, &cfg, &m),
                     NK_ERR_BAD_PARAM);
    assert_string_equal(nk_last_error(), "nk_module_create: ONNX has no parameter 'axis'");
    nk_module_config_init(&cfg);
    cfg.eps = 1e-5;
    m = make(NK_LAYER_SKIP_RMS_NORM, 6, &cfg);
    assert_true(nk_module_eps(m) == 1e-5);
    nk_module_destroy(m);

    /* the backward workspace of a skip layer is the one of its norm on s */
    nk_tensor_desc d = NK_TENSOR_DESC_INIT;
    d.n = 64;
    d.c = 768;
    d.layout = NK_CHANNELS_LAST;
    size_t a = 1, b = 2;
    assert_int_equal(nk_backward_workspace_size(NK_LAYER_LAYER_NORM, &d, 1, &a), NK_OK);
    assert_int_equal(nk_backward_workspace_size(NK_LAYER_SKIP_LAYER_NORM, &d, 1, &b), NK_OK);
    assert_true(a == b);
    assert_int_equal(nk_backward_workspace_size(NK_LAYER_RMS_NORM, &d, 1, &a), NK_OK);
    assert_int_equal(nk_backward_workspace_size(NK_LAYER_SKIP_RMS_NORM, &d, 1, &b), NK_OK);
    assert_true(a == b);
    assert_int_equal(nk_backward_workspace_size(7, &d, 1, &a), NK_ERR_BAD_PARAM);
}

/* Full-size skip: y, sum (bit-exact fp32), mean / invstd against the oracle,
 * for both layers, with and without skip_bias and beta, with the default
 * eps on rows of small variance (where 1e-5 would show), and ReLU. */
static void full_skip(void **state)
{
    (void)state;
    enum { B = 2, S = 5, H = 48, T = B * S * H, R = B * S };
    nkt_rng rng;
    nkt_seed(&rng, 0x5c1);
    float *x = malloc(T * sizeof *x), *k = malloc(T * sizeof *k), *y = malloc(T * sizeof *y),
          *sum = malloc(T * sizeof *sum), *sref = malloc(T * sizeof *sref);
    double *ref = malloc(T * sizeof *ref);
    float sb[H], mean[R], inv[R];
    double rmean[R], rinv[R];
    assert_true(x && k && y && sum && sref && ref);
    const int64_t dims[3] = {B, S, H};
    for (int layer = NK_LAYER_SKIP_LAYER_NORM; layer <= NK_LAYER_SKIP_RMS_NORM; layer++) {
        const int rms = layer == NK_LAYER_SKIP_RMS_NORM;
        for (int variant = 0; variant < 4; variant++) {
            /* variant 1: small values (variance ~1e-6), 2: no skip_bias / beta, 3: ReLU */
            const double scale = variant == 1 ? 1e-3 : 1.0;
            nkt_fill(&rng, x, T, 0.25 * scale, scale);
            nkt_fill(&rng, k, T, -0.5 * scale, 0.5 * scale);
            for (int j = 0; j < H; j++)
                sb[j] = (float)((nkt_uniform(&rng) - 0.5) * scale);
            const float *sbias = variant == 2 ? NULL : sb;
            nk_module_config cfg;
            nk_module_config_init(&cfg);
            if (variant == 2 && !rms)
                cfg.bias = 0;
            if (variant == 3)
                cfg.options.activation = NK_ACT_RELU;
            nk_module *m = make((nk_layer)layer, H, &cfg);
            set_params(m, &rng);
            nk_module_outputs o = {sizeof o, 0, mean, inv, NULL, NULL};
            memset(mean, 0x7f, sizeof mean);
            nk_status st = nk_module_forward_skip(m, x, 3, dims, k, 3, dims, sbias, y, sum, &o);
            if (st)
                print_error("%s\n", nk_last_error());
            assert_int_equal(st, NK_OK);
            /* the default epsilon, ONNX Runtime's 1e-12 */
            const double eps = nk_default_eps(NK_FW_ONNX, (nk_layer)layer);
            assert_true(eps == 1e-12 && nk_module_eps(m) == eps);
            oracle(x, k, R, sbias, R, H, nk_module_weight(m), nk_module_bias(m), eps, rms,
                   variant == 3 ? &cfg.options : NULL, ref, rmean, rinv);
            nkt_assert_close(y, ref, T, 2e-5, 2e-5, rms ? "SkipRMSNorm y" : "SkipLayerNorm y");
            sum_f32(x, k, R, sbias, R, H, sref);
            assert_memory_equal(sum, sref, sizeof(float) * T);
            if (!rms)
                nkt_assert_close(mean, rmean, R, 1e-6 * scale, 1e-5, "mean");
            else
                for (int r = 0; r < R; r++) /* RMSNorm leaves mean */
                    assert_true(nk_f32_bits(mean[r]) == 0x7f7f7f7fu);
            nkt_assert_close(inv, rinv, R, 0, 1e-5, "invstd");
            /* without sum and outputs: the same y */
            float *y2 = malloc(T * sizeof *y2);
            assert_non_null(y2);
            assert_int_equal(nk_module_forward_skip(m, x, 3, dims, k, 3, dims, sbias, y2, NULL, NULL),
                             NK_OK);
            assert_memory_equal(y, y2, sizeof(float) * T);
            /* a 2D (tokens, H) input with a skip of its size */
            const int64_t d2[2] = {R, H};
            assert_int_equal(nk_module_forward_skip(m, x, 2, d2, k, 2, d2, sbias, y2, NULL, NULL),
                             NK_OK);
            assert_memory_equal(y, y2, sizeof(float) * T);
            free(y2);
            nk_module_destroy(m);
        }
    }
    free(x);
    free(k);
    free(y);
    free(sum);
    free(sref);
    free(ref);
}

/* (1, S, H) and (S, H) skips of a (B, S, H) input: every batch entry adds
 * the same sample; results equal those of the skip repeated B times. */
static void broadcast_skip(void **state)
{
    (void)state;
    enum { B = 3, S = 4, H = 40, T = B * S * H, R = B * S };
    nkt_rng rng;
    nkt_seed(&rng, 0xb0c);
    float x[T], k1[S * H], kfull[T], y[T], yfull[T], sum[T], sumfull[T], sref[T], sb[H], inv[R];
    double ref[T], rinv[R];
    nkt_fill(&rng, x, T, 0.0, 1.0);
    nkt_fill(&rng, k1, S * H, 0.5, 2.0);
    for (int j = 0; j < H; j++)
        sb[j] = (float)(nkt_uniform(&rng) - 0.5);
    for (int b = 0; b < B; b++)
        memcpy(kfull + b * S * H, k1, sizeof k1);
    const int64_t dims[3] = {B, S, H}, k3[3] = {1, S, H}, k2[2] = {S, H};
    for (int layer = NK_LAYER_SKIP_LAYER_NORM; layer <= NK_LAYER_SKIP_RMS_NORM; layer++) {
        const int rms = layer == NK_LAYER_SKIP_RMS_NORM;
        nk_module *m = make((nk_layer)layer, H, NULL);
        set_params(m, &rng);
        oracle(x, k1, S, sb, R, H, nk_module_weight(m), nk_module_bias(m), 1e-12, rms, NULL, ref,
               NULL, rinv);
        sum_f32(x, k1, S, sb, R, H, sref);
        assert_int_equal(nk_module_forward_skip(m, x, 3, dims, kfull, 3, dims, sb, yfull, sumfull,
                                                NULL),
                         NK_OK);
        for (int form = 0; form < 2; form++) {
            nk_module_outputs o = {sizeof o, 0, NULL, inv, NULL, NULL};
            nk_status st = nk_module_forward_skip(m, x, 3, dims, k1, form ? 2 : 3, form ? k2 : k3,
                                                  sb, y, sum, &o);
            if (st)
                print_error("%s\n", nk_last_error());
            assert_int_equal(st, NK_OK);
            nkt_assert_close(y, ref, T, 2e-5, 2e-5, form ? "(S, H) skip" : "(1, S, H) skip");
            nkt_assert_close(inv, rinv, R, 0, 1e-5, "invstd");
            assert_memory_equal(sum, sref, sizeof sum);
            assert_memory_equal(y, yfull, sizeof y);
            assert_memory_equal(sum, sumfull, sizeof sum);
        }
        /* B = 1: (1, S, H) is the input's own size */
        const int64_t d1[3] = {1, S, H};
        assert_int_equal(nk_module_forward_skip(m, x, 3, d1, k1, 2, k2, sb, y, NULL, NULL), NK_OK);
        assert_memory_equal(y, yfull, sizeof(float) * S * H);
        nk_module_destroy(m);
    }
}

/* bf16 module: x, skip, y and sum bf16; parameters, skip_bias and
 * statistics fp32; sum is the fp32 s rounded once. */
static void bf16_module(void **state)
{
    (void)state;
    enum { B = 2, S = 3, H = 64, T = B * S * H, R = B * S };
    nkt_rng rng;
    nkt_seed(&rng, 0xbf16);
    float xf[T], kf[S * H], sb[H], yf[T], sref[T], inv[R], mean[R];
    uint16_t x[T], k[S * H], y[T], sum[T];
    double ref[T], rmean[R], rinv[R];
    nkt_fill(&rng, xf, T, 0.1, 1.0);
    nkt_fill(&rng, kf, S * H, -0.2, 1.0);
    for (int i = 0; i < T; i++)
        xf[i] = nk_bf16_to_f32(x[i] = nk_f32_to_bf16(xf[i]));
    for (int i = 0; i < S * H; i++)
        kf[i] = nk_bf16_to_f32(k[i] = nk_f32_to_bf16(kf[i]));
    for (int j = 0; j < H; j++)
        sb[j] = (float)(nkt_uniform(&rng) - 0.5);
    const int64_t dims[3] = {B, S, H}, k2[2] = {S, H};
    for (int layer = NK_LAYER_SKIP_LAYER_NORM; layer <= NK_LAYER_SKIP_RMS_NORM; layer++) {
        const int rms = layer == NK_LAYER_SKIP_RMS_NORM;
        nk_module *m = make((nk_layer)layer, H, NULL);
        set_params(m, &rng);
        assert_int_equal(nk_module_set_dtype(m, NK_DTYPE_BF16), NK_OK);
        nk_module_outputs o = {sizeof o, 0, mean, inv, NULL, NULL};
        nk_status st = nk_module_forward_skip(m, x, 3, dims, k, 2, k2, sb, y, sum, &o);
        if (st)
            print_error("%s\n", nk_last_error());
        assert_int_equal(st, NK_OK);
        oracle(xf, kf, S, sb, R, H, nk_module_weight(m), nk_module_bias(m), 1e-12, rms, NULL, ref,
               rmean, rinv);
        for (int i = 0; i < T; i++)
            yf[i] = nk_bf16_to_f32(y[i]);
        nkt_assert_close(yf, ref, T, 1e-2, 8e-3, "bf16 y");
        sum_f32(xf, kf, S, sb, R, H, sref);
        for (int i = 0; i < T; i++)
            assert_int_equal(sum[i], nk_f32_to_bf16(sref[i]));
        nkt_assert_close(inv, rinv, R, 0, 1e-5, "bf16 invstd");
        if (!rms)
            nkt_assert_close(mean, rmean, R, 1e-6, 1e-5, "bf16 mean");
        nk_module_destroy(m);
    }
}

/* Results on a pool equal the calling thread's bit for bit. */
static size_t pool_threads(void *ctx)
{
    (void)ctx;
    return 4;
}

static void pool_for(void *ctx, void (*task)(void *, size_t), void *arg, size_t n)
{
    size_t *calls = ctx;
    ++*calls;
    for (size_t i = n; i-- > 0;)
        task(arg, i);
}

static void module_context(void **state)
{
    (void)state;
    enum { B = 16, S = 64, H = 256, T = B * S * H };
    nkt_rng rng;
    nkt_seed(&rng, 0xc7c);
    float *x = malloc(T * sizeof *x), *k = malloc(T * sizeof *k), *y0 = malloc(T * sizeof *y0),
          *y1 = malloc(T * sizeof *y1), *s0 = malloc(T * sizeof *s0), *s1 = malloc(T * sizeof *s1);
    assert_true(x && k && y0 && y1 && s0 && s1);
    nkt_fill(&rng, x, T, 1.0, 1.0);
    nkt_fill(&rng, k, T, 0.0, 1.0);
    const int64_t dims[3] = {B, S, H};
    nk_module *m = make(NK_LAYER_SKIP_LAYER_NORM, H, NULL);
    set_params(m, &rng);
    assert_int_equal(nk_module_forward_skip(m, x, 3, dims, k, 3, dims, NULL, y0, s0, NULL), NK_OK);
    size_t calls = 0;
    nk_threadpool pool = {&calls, pool_threads, pool_for};
    nk_context ctx = NK_CONTEXT_INIT;
    ctx.pool = &pool;
    assert_int_equal(nk_module_set_context(m, &ctx), NK_OK);
    assert_int_equal(nk_module_forward_skip(m, x, 3, dims, k, 3, dims, NULL, y1, s1, NULL), NK_OK);
    assert_true(calls > 0);
    assert_memory_equal(y0, y1, sizeof(float) * T);
    assert_memory_equal(s0, s1, sizeof(float) * T);
    nk_module_destroy(m);
    free(x);
    free(k);
    free(y0);
    free(y1);
    free(s0);
    free(s1);
}

/* Refused calls: status, a message naming the argument, and nothing written. */
static void expect_refused(nk_status got, nk_status want, const char *needle)
{
    if (got != want || !strstr(nk_last_error(), needle)) {
        print_error("status %d (want %d), message \"%s\" (want \"%s\" in it)\n", (int)got, (int)want,
                    nk_last_error(), needle);
        fail();
    }
}

static void bad_inputs(void **state)
{
    (void)state;
    enum { B = 2, S = 3, H = 8, T = B * S * H };
    float x[T], k[T], y[T], sum[T], mean[B * S], inv[B * S];
    for (int i = 0; i < T; i++) {
        x[i] = (float)i;
        k[i] = (float)(T - i);
    }
    const float sentinel = 1234.5f;
    for (int i = 0; i < T; i++)
        y[i] = sum[i] = sentinel;
    for (int i = 0; i < B * S; i++)
        mean[i] = inv[i] = sentinel;
    const nk_module_outputs o = {sizeof o, 0, mean, inv, NULL, NULL};
    const int64_t dims[3] = {B, S, H};
    nk_module *m = make(NK_LAYER_SKIP_LAYER_NORM, H, NULL);

    /* the plain forwards need the skip input */
    expect_refused(nk_module_forward(m, x, 3, dims, y), NK_ERR_NULL_POINTER,
                   "nk_module_forward: ONNX SkipLayerNorm requires a skip input: run it with "
                   "nk_module_forward_skip");
    expect_refused(nk_module_forward_ex(m, x, 3, dims, y, &o), NK_ERR_NULL_POINTER,
                   "nk_module_forward_skip");
    /* missing skip, NULL pointers */
    expect_refused(nk_module_forward_skip(m, x, 3, dims, NULL, 3, dims, NULL, y, sum, &o),
                   NK_ERR_NULL_POINTER, "nk_module_forward_skip: skip is NULL");
    expect_refused(nk_module_forward_skip(m, x, 3, dims, k, 3, NULL, NULL, y, sum, &o),
                   NK_ERR_NULL_POINTER, "skip_dims is NULL");
    expect_refused(nk_module_forward_skip(m, NULL, 3, dims, k, 3, dims, NULL, y, sum, &o),
                   NK_ERR_NULL_POINTER, "input is NULL");
    expect_refused(nk_module_forward_skip(m, x, 3, dims, k, 3, dims, NULL, NULL, sum, &o),
                   NK_ERR_NULL_POINTER, "output is NULL");
    expect_refused(nk_module_forward_skip(NULL, x, 3, dims, k, 3, dims, NULL, y, sum, &o),
                   NK_ERR_NULL_POINTER, "module is NULL");
    /* skips that fit neither rule */
    const int64_t bad1[3] = {2, 1, H}, bad2[2] = {B, H}, bad3[3] = {B, S, H / 2}, bad4[1] = {H},
                  bad5[3] = {1, 2, H};
    expect_refused(nk_module_forward_skip(m, x, 3, dims, k, 3, bad1, NULL, y, sum, &o),
                   NK_ERR_BAD_SHAPE,
                   "nk_module_forward_skip: skip of size [2, 1, 8] does not fit the input of size "
                   "[2, 3, 8]: skip_dims must equal dims, or be (1, S, H) or (S, H) for an input "
                   "(B, S, H)");
    const int64_t bad6[3] = {B + 1, S, H}; /* a batch of neither B nor 1 */
    expect_refused(nk_module_forward_skip(m, x, 3, dims, k, 3, bad6, NULL, y, sum, &o),
                   NK_ERR_BAD_SHAPE, "skip of size [3, 3, 8] does not fit");
    expect_refused(nk_module_forward_skip(m, x, 3, dims, k, 2, bad2, NULL, y, sum, &o),
                   NK_ERR_BAD_SHAPE, "skip of size [2, 8]");
    expect_refused(nk_module_forward_skip(m, x, 3, dims, k, 3, bad3, NULL, y, sum, &o),
                   NK_ERR_BAD_SHAPE, "skip of size [2, 3, 4]");
    expect_refused(nk_module_forward_skip(m, x, 3, dims, k, 1, bad4, NULL, y, sum, &o),
                   NK_ERR_BAD_SHAPE, "skip_ndim must be in [2, 16], got 1");
    /* broadcast is for 3D inputs only: a 4D input takes its own size */
    const int64_t d4[4] = {1, B, S, H};
    expect_refused(nk_module_forward_skip(m, x, 4, d4, k, 3, dims, NULL, y, sum, &o),
                   NK_ERR_BAD_SHAPE,
                   "skip of size [2, 3, 8] does not fit the input of size [1, 2, 3, 8]: skip_dims "
                   "must equal dims");
    const int64_t d2[2] = {B * S, H};
    expect_refused(nk_module_forward_skip(m, x, 2, d2, k, 2, bad5 + 1, NULL, y, sum, &o),
                   NK_ERR_BAD_SHAPE, "skip of size [2, 8] does not fit the input of size [6, 8]");
    const int64_t negk[3] = {B, -1, H};
    expect_refused(nk_module_forward_skip(m, x, 3, dims, k, 3, negk, NULL, y, sum, &o),
                   NK_ERR_BAD_SHAPE, "negative extent -1 at skip_dims[1]");
    /* the input: rank, hidden size */
    const int64_t d1[1] = {H};
    expect_refused(nk_module_forward_skip(m, x, 1, d1, k, 1, d1, NULL, y, sum, &o),
                   NK_ERR_BAD_SHAPE, "nk_module_forward_skip: rank must be in [2, 16], got 1");
    const int64_t wrongh[3] = {B, S * 2, H / 2};
    expect_refused(nk_module_forward_skip(m, x, 3, wrongh, k, 3, wrongh, NULL, y, sum, &o),
                   NK_ERR_BAD_SHAPE,
                   "nk_module_forward_skip: ONNX SkipLayerNorm: the input's last dim (hidden size) "
                   "must be num_features = 8, got input of size [2, 6, 4]");
    /* aliasing */
    expect_refused(nk_module_forward_skip(m, x, 3, dims, k, 3, dims, NULL, y, y, &o),
                   NK_ERR_BAD_PARAM, "sum and y are the same array");
    expect_refused(nk_module_forward_skip(m, x, 3, dims, y, 3, dims, NULL, y, sum, &o),
                   NK_ERR_BAD_PARAM, "y and skip are the same array");
    const int64_t k3[3] = {1, S, H};
    expect_refused(nk_module_forward_skip(m, x, 3, dims, sum, 3, k3, NULL, y, sum, &o),
                   NK_ERR_BAD_PARAM, "sum == skip needs a skip of the input's size");
    /* outputs */
    nk_module_outputs bad_o = o;
    bad_o.struct_size = 4;
    expect_refused(nk_module_forward_skip(m, x, 3, dims, k, 3, dims, NULL, y, sum, &bad_o),
                   NK_ERR_BAD_PARAM, "nk_module_forward_skip: outputs->struct_size");
    bad_o = o;
    bad_o.running_mean = inv;
    expect_refused(nk_module_forward_skip(m, x, 3, dims, k, 3, dims, NULL, y, sum, &bad_o),
                   NK_ERR_BAD_PARAM, "has no running statistics");
    for (int i = 0; i < T; i++)
        assert_true(y[i] == sentinel && sum[i] == sentinel);
    for (int i = 0; i < B * S; i++)
        assert_true(mean[i] == sentinel && inv[i] == sentinel);
    /* an empty input writes nothing and needs no data */
    const int64_t d0[3] = {0, S, H};
    assert_int_equal(nk_module_forward_skip(m, NULL, 3, d0, NULL, 2, k3 + 1, NULL, NULL, NULL, &o),
                     NK_OK);
    assert_string_equal(nk_last_error(), "");
    nk_module_destroy(m);

    /* a non-skip layer */
    m = NULL;
    assert_int_equal(nk_module_create(NK_FW_ONNX, NK_LAYER_LAYER_NORM, 0, H, NULL, &m), NK_OK);
    expect_refused(nk_module_forward_skip(m, x, 3, dims, k, 3, dims, NULL, y, sum, &o),
                   NK_ERR_UNSUPPORTED,
                   "nk_module_forward_skip: ONNX LayerNorm takes no skip input; "
                   "nk_module_forward_skip runs ONNX SkipLayerNorm and SkipRMSNorm modules");
    nk_module_destroy(m);
    assert_int_equal(nk_module_create(NK_FW_PYTORCH, NK_LAYER_RMS_NORM, 0, H, NULL, &m), NK_OK);
    expect_refused(nk_module_forward_skip(m, x, 3, dims, k, 3, dims, NULL, y, sum, &o),
                   NK_ERR_UNSUPPORTED, "PyTorch RMSNorm takes no skip input");
    nk_module_destroy(m);
    for (int i = 0; i < T; i++)
        assert_true(y[i] == sentinel && sum[i] == sentinel);
    for (int i = 0; i < B * S; i++)
        assert_true(mean[i] == sentinel && inv[i] == sentinel);

    /* SkipRMSNorm: the same rules */
    m = make(NK_LAYER_SKIP_RMS_NORM, H, NULL);
    expect_refused(nk_module_forward(m, x, 3, dims, y), NK_ERR_NULL_POINTER,
                   "ONNX SkipRMSNorm requires a skip input");
    expect_refused(nk_module_forward_skip(m, x, 3, dims, k, 3, bad1, NULL, y, sum, &o),
                   NK_ERR_BAD_SHAPE, "does not fit");
    for (int i = 0; i < T; i++)
        assert_true(y[i] == sentinel && sum[i] == sentinel);
    nk_module_destroy(m);
}

/* A hand-worked row: x = (1, 2, 3, 4), skip = (1, 1, 1, 1), bias = (0, 0,
 * 0, 4): s = (2, 3, 4, 9), mean 4.5, variance 7.25, mean square 27.5. */
static void worked_example(void **state)
{
    (void)state;
    const float x[4] = {1, 2, 3, 4}, k[4] = {1, 1, 1, 1}, sb[4] = {0, 0, 0, 4};
    const int64_t d[2] = {1, 4};
    float y[4], sum[4], mean, inv;
    nk_module *m = make(NK_LAYER_SKIP_LAYER_NORM, 4, NULL);
    nk_module_outputs o = {sizeof o, 0, &mean, &inv, NULL, NULL};
    assert_int_equal(nk_module_forward_skip(m, x, 2, d, k, 2, d, sb, y, sum, &o), NK_OK);
    const double sd = sqrt(7.25 + 1e-12);
    const double want[4] = {-2.5 / sd, -1.5 / sd, -0.5 / sd, 4.5 / sd};
    nkt_assert_close(y, want, 4, 1e-6, 0, "worked SkipLayerNorm");
    assert_true(sum[0] == 2 && sum[1] == 3 && sum[2] == 4 && sum[3] == 9);
    assert_true(mean == 4.5f);
    nk_module_destroy(m);
    m = make(NK_LAYER_SKIP_RMS_NORM, 4, NULL);
    assert_int_equal(nk_module_forward_skip(m, x, 2, d, k, 2, d, sb, y, NULL, NULL), NK_OK);
    const double rms = sqrt(27.5 + 1e-12);
    const double want_rms[4] = {2 / rms, 3 / rms, 4 / rms, 9 / rms};
    nkt_assert_close(y, want_rms, 4, 1e-6, 0, "worked SkipRMSNorm");
    nk_module_destroy(m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(defaults_and_rows), cmocka_unit_test(full_skip),
        cmocka_unit_test(broadcast_skip),    cmocka_unit_test(bf16_module),
        cmocka_unit_test(module_context),    cmocka_unit_test(bad_inputs),
        cmocka_unit_test(worked_example),
    };
    return cmocka_run_group_tests_name("module_skip", tests, NULL, NULL);
}
