/*
 * Framework modules: defaults, momentum conventions, train/eval rules,
 * running-variance bias, accepted ranks, layouts and parameter names of each
 * framework (SEMANTICS.md section 2 and 5).
 */
#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "nk_test.h"

static nk_module *make(nk_framework fw, nk_layer l, int rank, int64_t c, const nk_module_config *cfg)
{
    nk_module *m = NULL;
    nk_status st = nk_module_create(fw, l, rank, c, cfg, &m);
    if (st != NK_OK)
        print_error("nk_module_create(%s): %s\n", nk_framework_name(fw), nk_last_error());
    assert_int_equal(st, NK_OK);
    return m;
}

static void fwd(nk_module *m, const float *x, int nd, const int64_t *d, float *y)
{
    nk_status st = nk_module_forward(m, x, nd, d, y);
    if (st != NK_OK)
        print_error("forward: %s\n", nk_last_error());
    assert_int_equal(st, NK_OK);
}

static void close1(double got, double want, double tol)
{
    if (!(fabs(got - want) <= tol)) {
        print_error("got %.10g, expected %.10g\n", got, want);
        fail();
    }
}

static void defaults_and_conversions(void **state)
{
    (void)state;
    close1(nk_default_eps(NK_FW_PYTORCH, NK_LAYER_BATCH_NORM), 1e-5, 0);
    close1(nk_default_eps(NK_FW_PYTORCH, NK_LAYER_RMS_NORM), FLT_EPSILON, 0);
    close1(nk_default_eps(NK_FW_MINDSPORE, NK_LAYER_LAYER_NORM), 1e-7, 0);
    close1(nk_default_eps(NK_FW_MINDSPORE, NK_LAYER_BATCH_NORM), 1e-5, 0);
    close1(nk_default_eps(NK_FW_KERAS, NK_LAYER_BATCH_NORM), 1e-3, 0);
    close1(nk_default_eps(NK_FW_ONNX, NK_LAYER_RMS_NORM), 1e-5, 0);
    close1(nk_default_eps(NK_FW_PADDLE, NK_LAYER_GROUP_NORM), 1e-5, 0);
    assert_true(isnan(nk_default_eps(NK_FW_KERAS, NK_LAYER_INSTANCE_NORM)));
    assert_true(isnan(nk_default_eps(NK_FW_MEGENGINE, NK_LAYER_RMS_NORM)));
    close1(nk_default_momentum(NK_FW_PYTORCH, NK_LAYER_BATCH_NORM), 0.1, 0);
    close1(nk_default_momentum(NK_FW_MINDSPORE, NK_LAYER_BATCH_NORM), 0.9, 0);
    close1(nk_default_momentum(NK_FW_MEGENGINE, NK_LAYER_BATCH_NORM), 0.9, 0);
    close1(nk_default_momentum(NK_FW_ONNX, NK_LAYER_BATCH_NORM), 0.9, 0);
    close1(nk_default_momentum(NK_FW_KERAS, NK_LAYER_BATCH_NORM), 0.99, 0);
    close1(nk_default_momentum(NK_FW_PADDLE, NK_LAYER_BATCH_NORM), 0.9, 0);
    assert_true(isnan(nk_default_momentum(NK_FW_PYTORCH, NK_LAYER_GROUP_NORM)));
    close1(nk_momentum_to_torch(NK_FW_MINDSPORE, 0.9), 0.1, 1e-15);
    close1(nk_momentum_to_torch(NK_FW_KERAS, 0.99), 0.01, 1e-15);
    close1(nk_momentum_to_torch(NK_FW_PYTORCH, 0.1), 0.1, 0);
    close1(nk_momentum_from_torch(NK_FW_PADDLE, 0.1), 0.9, 1e-15);
    close1(nk_momentum_from_torch(NK_FW_PYTORCH, 0.3), 0.3, 0);
    assert_string_equal(nk_framework_name(NK_FW_MEGENGINE), "MegEngine");

    /* default modes after construction */
    const nk_framework fws[] = {NK_FW_PYTORCH, NK_FW_MINDSPORE, NK_FW_MEGENGINE, NK_FW_ONNX, NK_FW_KERAS, NK_FW_PADDLE};
    const int training[] = {1, 0, 1, 0, 0, 1};
    for (int i = 0; i < 6; i++) {
        nk_module *m = make(fws[i], NK_LAYER_BATCH_NORM, 2, 8, NULL);
        assert_int_equal(nk_module_training(m), training[i]);
        close1(nk_module_eps(m), nk_default_eps(fws[i], NK_LAYER_BATCH_NORM), 0);
        close1(nk_module_momentum_torch(m), nk_momentum_to_torch(fws[i], nk_default_momentum(fws[i], NK_LAYER_BATCH_NORM)), 1e-15);
        assert_int_equal(nk_module_param_size(m), 8);
        for (int c = 0; c < 8; c++) {
            assert_true(nk_module_weight(m)[c] == 1.0f && nk_module_bias(m)[c] == 0.0f);
            assert_true(nk_module_running_mean(m)[c] == 0.0f && nk_module_running_var(m)[c] == 1.0f);
        }
        nk_module_destroy(m);
    }
    /* affine defaults: PyTorch InstanceNorm off, MindSpore/MegEngine InstanceNorm on */
    nk_module *m = make(NK_FW_PYTORCH, NK_LAYER_INSTANCE_NORM, 2, 3, NULL);
    assert_null(nk_module_weight(m));
    nk_module_destroy(m);
    m = make(NK_FW_MINDSPORE, NK_LAYER_INSTANCE_NORM, 2, 3, NULL);
    assert_non_null(nk_module_weight(m));
    nk_module_destroy(m);
    /* layers a framework does not have */
    nk_module *none = NULL;
    assert_int_equal(nk_module_create(NK_FW_KERAS, NK_LAYER_INSTANCE_NORM, 2, 3, NULL, &none), NK_ERR_UNSUPPORTED);
    assert_int_equal(nk_module_create(NK_FW_MEGENGINE, NK_LAYER_BATCH_NORM, 3, 3, NULL, &none), NK_ERR_UNSUPPORTED);
    assert_int_equal(nk_module_create(NK_FW_MEGENGINE, NK_LAYER_RMS_NORM, 0, 3, NULL, &none), NK_ERR_UNSUPPORTED);
    assert_null(none);
}

static void config_validation(void **state)
{
    (void)state;
    nk_module_config cfg;
    nk_module *m = NULL;
    nk_module_config_init(&cfg);
    cfg.gamma_init = 2.0;
    assert_int_equal(nk_module_create(NK_FW_PYTORCH, NK_LAYER_BATCH_NORM, 2, 4, &cfg, &m), NK_ERR_BAD_PARAM);
    assert_string_equal(nk_last_error(), "nk_module_create: PyTorch has no parameter 'gamma_init/beta_init'");
    nk_module_config_init(&cfg);
    cfg.freeze = 1;
    assert_int_equal(nk_module_create(NK_FW_PADDLE, NK_LAYER_BATCH_NORM, 2, 4, &cfg, &m), NK_ERR_BAD_PARAM);
    nk_module_config_init(&cfg);
    cfg.momentum = 1.5;
    assert_int_equal(nk_module_create(NK_FW_MINDSPORE, NK_LAYER_BATCH_NORM, 2, 4, &cfg, &m), NK_ERR_BAD_PARAM);
    cfg.momentum = NK_MOMENTUM_NONE; /* PyTorch only */
    assert_int_equal(nk_module_create(NK_FW_MINDSPORE, NK_LAYER_BATCH_NORM, 2, 4, &cfg, &m), NK_ERR_BAD_PARAM);
    nk_module_config_init(&cfg);
    cfg.eps = -1e-3;
    assert_int_equal(nk_module_create(NK_FW_ONNX, NK_LAYER_BATCH_NORM, 0, 4, &cfg, &m), NK_ERR_BAD_PARAM);
    nk_module_config_init(&cfg);
    cfg.affine = 2;
    assert_int_equal(nk_module_create(NK_FW_PYTORCH, NK_LAYER_BATCH_NORM, 2, 4, &cfg, &m), NK_ERR_BAD_PARAM);
    assert_int_equal(nk_module_create(NK_FW_PYTORCH, NK_LAYER_BATCH_NORM, 4, 4, NULL, &m), NK_ERR_BAD_PARAM);
    assert_int_equal(nk_module_create(NK_FW_PYTORCH, NK_LAYER_BATCH_NORM, 2, 0, NULL, &m), NK_ERR_BAD_SHAPE);
    assert_int_equal(nk_module_create(NK_FW_PYTORCH, NK_LAYER_GROUP_NORM, 0, 6, NULL, &m), NK_ERR_BAD_PARAM);
    nk_module_config_init(&cfg);
    cfg.num_groups = 4;
    assert_int_equal(nk_module_create(NK_FW_PYTORCH, NK_LAYER_GROUP_NORM, 0, 6, &cfg, &m), NK_ERR_BAD_PARAM);
    nk_module_config_init(&cfg);
    cfg.options.activation = (nk_activation)17;
    assert_int_equal(nk_module_create(NK_FW_PYTORCH, NK_LAYER_LAYER_NORM, 0, 6, &cfg, &m), NK_ERR_BAD_PARAM);
    assert_null(m);
}

/* One training step on x = 1..8 (N = 8, C = 1): mean 4.5, biased var 5.25,
 * unbiased 6. Returns the running variance after the step. */
static float one_step_running_var(nk_module *m)
{
    float x[8], y[8];
    for (int i = 0; i < 8; i++)
        x[i] = (float)(i + 1);
    const int64_t d[] = {8, 1};
    assert_int_equal(nk_module_set_training(m, 1), NK_OK);
    fwd(m, x, 2, d, y);
    float v = nk_module_running_var(m)[0];
    nk_module_destroy(m);
    return v;
}

static void running_variance_bias(void **state)
{
    (void)state;
    /* running_var = (1 - m) * 1 + m * v, m in PyTorch convention */
    const double ub = 6.0, b = 5.25;
    close1(one_step_running_var(make(NK_FW_PYTORCH, NK_LAYER_BATCH_NORM, 1, 1, NULL)), 0.9 + 0.1 * ub, 1e-6);
    close1(one_step_running_var(make(NK_FW_MEGENGINE, NK_LAYER_BATCH_NORM, 1, 1, NULL)), 0.9 + 0.1 * ub, 1e-6);
    close1(one_step_running_var(make(NK_FW_MINDSPORE, NK_LAYER_BATCH_NORM, 1, 1, NULL)), 0.9 + 0.1 * ub, 1e-6);
    close1(one_step_running_var(make(NK_FW_ONNX, NK_LAYER_BATCH_NORM, 0, 1, NULL)), 0.9 + 0.1 * b, 1e-6);
    close1(one_step_running_var(make(NK_FW_KERAS, NK_LAYER_BATCH_NORM, 0, 1, NULL)), 0.99 + 0.01 * b, 1e-6);
    close1(one_step_running_var(make(NK_FW_PADDLE, NK_LAYER_BATCH_NORM, 1, 1, NULL)), 0.9 + 0.1 * b, 1e-6);
    nk_module_config cfg;
    nk_module_config_init(&cfg);
    cfg.running_var_unbiased = 0; /* MindSpore's CPU backend */
    close1(one_step_running_var(make(NK_FW_MINDSPORE, NK_LAYER_BATCH_NORM, 1, 1, &cfg)), 0.9 + 0.1 * b, 1e-6);
    /* PyTorch momentum=None: cumulative average 1 / num_batches_tracked */
    nk_module_config_init(&cfg);
    cfg.momentum = NK_MOMENTUM_NONE;
    nk_module *m = make(NK_FW_PYTORCH, NK_LAYER_BATCH_NORM, 1, 1, &cfg);
    assert_true(isnan(nk_module_momentum_torch(m)));
    float x[8], y[8];
    const int64_t d[] = {8, 1};
    double sum_mean = 0;
    for (int step = 1; step <= 3; step++) {
        for (int i = 0; i < 8; i++)
            x[i] = (float)(i * step);
        fwd(m, x, 2, d, y);
        sum_mean += 3.5 * step;
        assert_int_equal(nk_module_num_batches_tracked(m), step);
        close1(nk_module_running_mean(m)[0], sum_mean / step, 1e-5); /* plain average of the batch means */
    }
    nk_module_destroy(m);
}

/* whether a BatchNorm module used batch statistics (output mean ~ 0) and
 * whether it updated its running statistics */
static void probe(nk_module *m, int *batch, int *updated)
{
    float x[16], y[16];
    for (int i = 0; i < 16; i++)
        x[i] = 10.0f + (float)(i % 8);
    const int64_t d[] = {8, 2};
    float before = nk_module_running_mean(m)[0];
    fwd(m, x, 2, d, y);
    double mean = 0;
    for (int i = 0; i < 16; i += 2)
        mean += y[i] / 8.0;
    *batch = fabs(mean) < 1e-4;
    *updated = nk_module_running_mean(m)[0] != before;
}

static void expect_mode(nk_module *m, int training, int batch, int updated)
{
    int b, u;
    nk_module_set_training(m, training);
    probe(m, &b, &u);
    assert_int_equal(b, batch);
    assert_int_equal(u, updated);
}

static void train_eval_rules(void **state)
{
    (void)state;
    nk_module_config cfg;
    nk_module *m;
    /* PyTorch: batch statistics when training or without running stats */
    m = make(NK_FW_PYTORCH, NK_LAYER_BATCH_NORM, 1, 2, NULL);
    expect_mode(m, 1, 1, 1);
    expect_mode(m, 0, 0, 0);
    nk_module_destroy(m);
    nk_module_config_init(&cfg);
    cfg.track_running_stats = 0;
    m = make(NK_FW_PYTORCH, NK_LAYER_BATCH_NORM, 1, 2, &cfg);
    assert_null(nk_module_running_mean(m));
    float x[16], y[16];
    for (int i = 0; i < 16; i++)
        x[i] = (float)i;
    const int64_t d[] = {8, 2};
    nk_module_set_training(m, 0);
    fwd(m, x, 2, d, y); /* eval without running stats: batch statistics */
    close1(y[0], (0.0 - 7.0) / sqrt(21.0 + 1e-5), 1e-5);
    nk_module_destroy(m);
    /* MindSpore use_batch_statistics None / True / False */
    m = make(NK_FW_MINDSPORE, NK_LAYER_BATCH_NORM, 1, 2, NULL);
    expect_mode(m, 1, 1, 1);
    expect_mode(m, 0, 0, 0);
    nk_module_destroy(m);
    nk_module_config_init(&cfg);
    cfg.use_batch_statistics = 1;
    m = make(NK_FW_MINDSPORE, NK_LAYER_BATCH_NORM, 1, 2, &cfg);
    expect_mode(m, 0, 1, 1);
    nk_module_destroy(m);
    cfg.use_batch_statistics = 0;
    m = make(NK_FW_MINDSPORE, NK_LAYER_BATCH_NORM, 1, 2, &cfg);
    expect_mode(m, 1, 0, 0);
    nk_module_destroy(m);
    /* MegEngine freeze: running statistics, never updated */
    nk_module_config_init(&cfg);
    cfg.freeze = 1;
    m = make(NK_FW_MEGENGINE, NK_LAYER_BATCH_NORM, 1, 2, &cfg);
    expect_mode(m, 1, 0, 0);
    nk_module_destroy(m);
    /* Paddle use_global_stats */
    nk_module_config_init(&cfg);
    cfg.use_global_stats = 1;
    m = make(NK_FW_PADDLE, NK_LAYER_BATCH_NORM, 1, 2, &cfg);
    expect_mode(m, 1, 0, 0);
    nk_module_destroy(m);
    cfg.use_global_stats = 0;
    m = make(NK_FW_PADDLE, NK_LAYER_BATCH_NORM, 1, 2, &cfg);
    expect_mode(m, 0, 1, 0);
    expect_mode(m, 1, 1, 1);
    nk_module_destroy(m);
    /* Keras: training and trainable */
    nk_module_config_init(&cfg);
    cfg.trainable = 0;
    cfg.axis = 1;
    m = make(NK_FW_KERAS, NK_LAYER_BATCH_NORM, 0, 2, &cfg);
    expect_mode(m, 1, 0, 0);
    nk_module_destroy(m);
    /* ONNX training_mode */
    nk_module_config_init(&cfg);
    cfg.training_mode = 1;
    m = make(NK_FW_ONNX, NK_LAYER_BATCH_NORM, 0, 2, &cfg);
    assert_true(nk_module_training(m));
    expect_mode(m, 1, 1, 1);
    expect_mode(m, 0, 0, 0);
    nk_module_destroy(m);
}

static void instance_norm_running_stats(void **state)
{
    (void)state;
    /* PyTorch InstanceNorm with tracking: per-(n, c) updates averaged over n */
    nk_module_config cfg;
    nk_module_config_init(&cfg);
    cfg.track_running_stats = 1;
    nk_module *m = make(NK_FW_PYTORCH, NK_LAYER_INSTANCE_NORM, 1, 2, &cfg);
    assert_int_equal(nk_module_num_batches_tracked(m), 0);
    const float x[12] = {1, 2, 3, 10, 20, 30, /* n = 0 */ 5, 5, 8, -1, 0, 1 /* n = 1 */};
    float y[12];
    const int64_t d[] = {2, 2, 3};
    fwd(m, x, 3, d, y);
    /* means: (2, 20) and (6, 0); unbiased vars: (1, 100) and (3, 1) */
    close1(nk_module_running_mean(m)[0], 0.1 * (2 + 6) / 2, 1e-7);
    close1(nk_module_running_mean(m)[1], 0.1 * (20 + 0) / 2, 1e-7);
    close1(nk_module_running_var(m)[0], 0.9 + 0.1 * (1 + 3) / 2, 1e-6);
    close1(nk_module_running_var(m)[1], 0.9 + 0.1 * (100 + 1) / 2, 1e-6);
    /* eval: running statistics */
    nk_module_set_training(m, 0);
    fwd(m, x, 3, d, y);
    close1(y[3], (10 - 1.0) / sqrt(0.9 + 5.05 + 1e-5), 1e-5);
    /* spatial size 1 in training is an error, with PyTorch's message */
    nk_module_set_training(m, 1);
    const int64_t d1[] = {2, 2, 1};
    assert_int_equal(nk_module_forward(m, x, 3, d1, y), NK_ERR_TOO_FEW_VALUES);
    assert_string_equal(nk_last_error(), "Expected more than 1 spatial element when training, got input size [2, 2, 1]");
    nk_module_destroy(m);
}

static void accepted_ranks(void **state)
{
    (void)state;
    float x[64] = {0}, y[64];
    for (int i = 0; i < 64; i++)
        x[i] = (float)(i % 5);
    nk_module *m = make(NK_FW_PYTORCH, NK_LAYER_BATCH_NORM, 1, 2, NULL);
    fwd(m, x, 2, (int64_t[]){4, 2}, y);
    fwd(m, x, 3, (int64_t[]){4, 2, 3}, y);
    assert_int_equal(nk_module_forward(m, x, 4, (int64_t[]){2, 2, 2, 2}, y), NK_ERR_BAD_SHAPE);
    assert_string_equal(nk_last_error(), "expected 2D or 3D input (got 4D input)");
    assert_int_equal(nk_module_forward(m, x, 2, (int64_t[]){1, 2}, y), NK_ERR_TOO_FEW_VALUES);
    assert_string_equal(nk_last_error(), "Expected more than 1 value per channel when training, got input size [1, 2]");
    assert_int_equal(nk_module_forward(m, x, 2, (int64_t[]){4, 3}, y), NK_ERR_BAD_SHAPE);
    nk_module_destroy(m);
    m = make(NK_FW_PYTORCH, NK_LAYER_BATCH_NORM, 2, 2, NULL);
    assert_int_equal(nk_module_forward(m, x, 3, (int64_t[]){4, 2, 3}, y), NK_ERR_BAD_SHAPE);
    assert_string_equal(nk_last_error(), "expected 4D input (got 3D input)");
    nk_module_destroy(m);
    m = make(NK_FW_PYTORCH, NK_LAYER_INSTANCE_NORM, 2, 2, NULL);
    fwd(m, x, 3, (int64_t[]){2, 4, 4}, y); /* unbatched (C, H, W) */
    fwd(m, x, 4, (int64_t[]){2, 2, 4, 2}, y);
    assert_int_equal(nk_module_forward(m, x, 2, (int64_t[]){2, 8}, y), NK_ERR_BAD_SHAPE);
    nk_module_destroy(m);
    m = make(NK_FW_MINDSPORE, NK_LAYER_INSTANCE_NORM, 2, 2, NULL);
    assert_int_equal(nk_module_forward(m, x, 3, (int64_t[]){2, 4, 4}, y), NK_ERR_BAD_SHAPE);
    assert_string_equal(nk_last_error(), "expected 4D input (got 3D input)");
    nk_module_destroy(m);
    m = make(NK_FW_ONNX, NK_LAYER_INSTANCE_NORM, 0, 2, NULL);
    assert_int_equal(nk_module_forward(m, x, 2, (int64_t[]){4, 2}, y), NK_ERR_BAD_SHAPE);
    fwd(m, x, 5, (int64_t[]){2, 2, 2, 2, 2}, y);
    nk_module_destroy(m);
    /* ONNX BatchNormalization on 1-D input (N): C = 1 */
    nk_module_config cfg;
    nk_module_config_init(&cfg);
    cfg.training_mode = 1;
    m = make(NK_FW_ONNX, NK_LAYER_BATCH_NORM, 0, 1, &cfg);
    fwd(m, x, 1, (int64_t[]){5}, y);
    close1(y[0], -2.0 / sqrt(2.0 + 1e-5), 1e-5);
    nk_module_destroy(m);
    /* bad dims */
    m = make(NK_FW_PYTORCH, NK_LAYER_BATCH_NORM, 1, 2, NULL);
    assert_int_equal(nk_module_forward(m, x, 2, (int64_t[]){-4, 2}, y), NK_ERR_BAD_SHAPE);
    assert_int_equal(nk_module_forward(m, x, 0, (int64_t[]){4}, y), NK_ERR_BAD_SHAPE);
    assert_int_equal(nk_module_forward(m, x, 2, NULL, y), NK_ERR_NULL_POINTER);
    assert_int_equal(nk_module_forward(m, x, 3, (int64_t[]){INT64_MAX / 4, 2, 4}, y), NK_ERR_BAD_SHAPE);
    nk_module_destroy(m);
}

static void layouts_and_inits(void **state)
{
    (void)state;
    nkt_rng r;
    nkt_seed(&r, 3);
    enum { N = 2, H = 3, W = 5, C = 4, T = N * H * W * C };
    float x[T], y[T], y2[T];
    nkt_fill(&r, x, T, 1.0, 2.0);
    const nk_shape nhwc = {N, C, H * W, NK_CHANNELS_LAST};
    /* Keras BatchNormalization: channels-last, eps 1e-3, inference by default */
    nk_module *m = make(NK_FW_KERAS, NK_LAYER_BATCH_NORM, 0, C, NULL);
    nk_module_set_training(m, 1);
    fwd(m, x, 4, (int64_t[]){N, H, W, C}, y);
    assert_int_equal(nk_batch_norm_train(x, &nhwc, NULL, NULL, 1e-3, NULL, y2, NULL, NULL, NULL), NK_OK);
    for (int i = 0; i < T; i++)
        assert_true(y[i] == y2[i]);
    nk_module_destroy(m);
    /* MindSpore BatchNorm2d, data_format NHWC, affine=False still applies gamma_init/beta_init */
    nk_module_config cfg;
    nk_module_config_init(&cfg);
    cfg.data_format = NK_CHANNELS_LAST;
    cfg.affine = 0;
    cfg.gamma_init = 2.0;
    cfg.beta_init = 0.5;
    cfg.moving_mean_init = 1.0;
    cfg.moving_var_init = 4.0;
    m = make(NK_FW_MINDSPORE, NK_LAYER_BATCH_NORM, 2, C, &cfg);
    assert_true(nk_module_running_mean(m)[0] == 1.0f && nk_module_running_var(m)[3] == 4.0f);
    fwd(m, x, 4, (int64_t[]){N, H, W, C}, y); /* inference: moving statistics */
    for (int i = 0; i < T; i++)
        close1(y[i], (x[i] - 1.0) / sqrt(4.0 + 1e-5) * 2.0 + 0.5, 1e-5);
    nk_module_destroy(m);
    /* Paddle BatchNorm1D NLC */
    nk_module_config_init(&cfg);
    cfg.data_format = NK_CHANNELS_LAST;
    m = make(NK_FW_PADDLE, NK_LAYER_BATCH_NORM, 1, C, &cfg);
    fwd(m, x, 3, (int64_t[]){N, H * W, C}, y);
    assert_int_equal(nk_batch_norm_train(x, &nhwc, NULL, NULL, 1e-5, NULL, y2, NULL, NULL, NULL), NK_OK);
    for (int i = 0; i < T; i++)
        assert_true(y[i] == y2[i]);
    nk_module_destroy(m);
    /* Keras GroupNormalization: groups 32 by default, channels-last, eps 1e-3 */
    nk_module_config_init(&cfg);
    cfg.num_groups = 2;
    m = make(NK_FW_KERAS, NK_LAYER_GROUP_NORM, 0, C, &cfg);
    fwd(m, x, 4, (int64_t[]){N, H, W, C}, y);
    assert_int_equal(nk_group_norm(x, &nhwc, 2, NULL, NULL, 1e-3, y2, NULL, NULL, NULL), NK_OK);
    for (int i = 0; i < T; i++)
        assert_true(y[i] == y2[i]);
    nk_module_destroy(m);
    nk_module *bad = NULL;
    assert_int_equal(nk_module_create(NK_FW_KERAS, NK_LAYER_GROUP_NORM, 0, 48, NULL, &bad), NK_ERR_BAD_PARAM);
    /* fused activation from the config */
    nk_module_config_init(&cfg);
    cfg.num_groups = 2;
    cfg.options.activation = NK_ACT_GELU_TANH;
    m = make(NK_FW_PYTORCH, NK_LAYER_GROUP_NORM, 0, C, &cfg);
    fwd(m, x, 4, (int64_t[]){N, C, H, W}, y);
    const nk_shape nchw = {N, C, H * W, NK_CHANNELS_FIRST};
    double ref[T];
    nkt_oracle_norm(x, &nchw, NKT_GN, 2, NULL, NULL, 1e-5, &cfg.options, ref);
    nkt_assert_close(y, ref, T, 1e-5, 0, "PyTorch GroupNorm + GELU(tanh)");
    nk_module_destroy(m);
}

static void layer_and_rms_norm(void **state)
{
    (void)state;
    nkt_rng r;
    nkt_seed(&r, 4);
    enum { A = 2, B = 3, D = 4, T = A * B * D };
    float x[T], y[T];
    double ref[T];
    nkt_fill(&r, x, T, 0.0, 1.0);
    nk_module_config cfg;
    /* PyTorch LayerNorm([3, 4]) */
    nk_module_config_init(&cfg);
    cfg.normalized_ndim = 2;
    cfg.normalized_shape[0] = B;
    cfg.normalized_shape[1] = D;
    nk_module *m = make(NK_FW_PYTORCH, NK_LAYER_LAYER_NORM, 0, 0, &cfg);
    assert_int_equal(nk_module_param_size(m), B * D);
    for (int i = 0; i < B * D; i++) {
        nk_module_weight(m)[i] = 1.0f + 0.1f * (float)i;
        nk_module_bias(m)[i] = -0.05f * (float)i;
    }
    fwd(m, x, 3, (int64_t[]){A, B, D}, y);
    nkt_oracle_layer_norm(x, A, B * D, nk_module_weight(m), nk_module_bias(m), 1e-5, NULL, ref);
    nkt_assert_close(y, ref, T, 1e-5, 0, "PyTorch LayerNorm([3, 4])");
    assert_int_equal(nk_module_forward(m, x, 3, (int64_t[]){A, D, B}, y), NK_ERR_BAD_SHAPE);
    assert_string_equal(nk_last_error(),
                        "Given normalized_shape=[3, 4], expected input with shape [*, 3, 4], but got input of size[2, 4, 3]");
    nk_module_destroy(m);
    /* bias=False */
    nk_module_config_init(&cfg);
    cfg.bias = 0;
    m = make(NK_FW_PYTORCH, NK_LAYER_LAYER_NORM, 0, D, &cfg);
    assert_non_null(nk_module_weight(m));
    assert_null(nk_module_bias(m));
    nk_module_destroy(m);
    /* MindSpore LayerNorm: eps 1e-7, begin_norm_axis 1 with parameters over the last axis */
    nk_module_config_init(&cfg);
    cfg.begin_norm_axis = 1;
    cfg.begin_params_axis = -1;
    m = make(NK_FW_MINDSPORE, NK_LAYER_LAYER_NORM, 0, D, &cfg);
    close1(nk_module_eps(m), 1e-7, 0);
    for (int i = 0; i < D; i++) {
        nk_module_weight(m)[i] = 2.0f - 0.25f * (float)i;
        nk_module_bias(m)[i] = 0.5f * (float)i;
    }
    fwd(m, x, 3, (int64_t[]){A, B, D}, y);
    nkt_oracle_layer_norm(x, A, B * D, NULL, NULL, 1e-7, NULL, ref);
    for (int i = 0; i < T; i++)
        ref[i] = ref[i] * nk_module_weight(m)[i % D] + nk_module_bias(m)[i % D];
    nkt_assert_close(y, ref, T, 1e-5, 0, "MindSpore LayerNorm begin_norm_axis=1");
    nk_module_destroy(m);
    /* ONNX LayerNormalization axis = 1 over (3, 4) */
    nk_module_config_init(&cfg);
    cfg.axis = 1;
    cfg.normalized_ndim = 2;
    cfg.normalized_shape[0] = B;
    cfg.normalized_shape[1] = D;
    m = make(NK_FW_ONNX, NK_LAYER_LAYER_NORM, 0, 0, &cfg);
    fwd(m, x, 3, (int64_t[]){A, B, D}, y);
    nkt_oracle_layer_norm(x, A, B * D, NULL, NULL, 1e-5, NULL, ref);
    nkt_assert_close(y, ref, T, 1e-5, 0, "ONNX LayerNormalization axis=1");
    nk_module_destroy(m);
    /* PyTorch RMSNorm, eps=None: FLT_EPSILON */
    nk_module_config_init(&cfg);
    cfg.eps = NK_EPS_NONE;
    m = make(NK_FW_PYTORCH, NK_LAYER_RMS_NORM, 0, D, &cfg);
    close1(nk_module_eps(m), FLT_EPSILON, 0);
    assert_null(nk_module_bias(m));
    fwd(m, x, 3, (int64_t[]){A, B, D}, y);
    nkt_oracle_rms_norm(x, A * B, D, NULL, FLT_EPSILON, NULL, ref);
    nkt_assert_close(y, ref, T, 1e-5, 0, "PyTorch RMSNorm");
    nk_module_destroy(m);
    /* ONNX RMSNormalization */
    m = make(NK_FW_ONNX, NK_LAYER_RMS_NORM, 0, D, NULL);
    fwd(m, x, 2, (int64_t[]){A * B, D}, y);
    nkt_oracle_rms_norm(x, A * B, D, NULL, 1e-5, NULL, ref);
    nkt_assert_close(y, ref, T, 1e-5, 0, "ONNX RMSNormalization");
    nk_module_destroy(m);
}

/* A pool that runs its tasks one after another in reverse order and counts them. */
typedef struct count_pool {
    size_t calls, tasks;
} count_pool;

static size_t count_threads(void *ctx)
{
    (void)ctx;
    return 4;
}

static void count_for(void *ctx, void (*task)(void *, size_t), void *arg, size_t n)
{
    count_pool *p = ctx;
    p->calls++;
    p->tasks += n;
    for (size_t i = n; i-- > 0;)
        task(arg, i);
}

/* nk_module_set_context: later calls run on the pool, with the bits of the
 * calling-thread module; a bad context is refused. */
static void module_context(void **state)
{
    (void)state;
    const int64_t N = 8, C = 32, H = 32, W = 32, total = N * C * H * W;
    const int64_t dims[4] = {N, C, H, W};
    float *x = malloc((size_t)total * sizeof *x), *y0 = malloc((size_t)total * sizeof *y0),
          *y1 = malloc((size_t)total * sizeof *y1);
    assert_true(x && y0 && y1);
    for (int64_t i = 0; i < total; i++)
        x[i] = 3.0f + (float)((i * 7919) % 1013) / 1013.0f;
    for (int layer = NK_LAYER_BATCH_NORM; layer <= NK_LAYER_GROUP_NORM; layer++) {
        nk_module_config cfg;
        nk_module_config_init(&cfg);
        if (layer == NK_LAYER_GROUP_NORM)
            cfg.num_groups = 8;
        nk_module *a, *b;
        assert_int_equal(nk_module_create(NK_FW_PYTORCH, (nk_layer)layer, 2, C, &cfg, &a), NK_OK);
        assert_int_equal(nk_module_create(NK_FW_PYTORCH, (nk_layer)layer, 2, C, &cfg, &b), NK_OK);
        count_pool cp = {0, 0};
        nk_threadpool pool = {&cp, count_threads, count_for};
        nk_context ctx = NK_CONTEXT_INIT;
        ctx.pool = &pool;
        assert_int_equal(nk_module_set_context(b, &ctx), NK_OK);
        assert_int_equal(nk_module_forward(a, x, 4, dims, y0), NK_OK);
        assert_int_equal(nk_module_forward(b, x, 4, dims, y1), NK_OK);
        assert_true(cp.calls > 0 && cp.tasks > cp.calls);
        assert_memory_equal(y0, y1, (size_t)total * sizeof *y0);
        if (layer == NK_LAYER_BATCH_NORM) {
            assert_memory_equal(nk_module_running_mean(a), nk_module_running_mean(b), C * sizeof(float));
            assert_memory_equal(nk_module_running_var(a), nk_module_running_var(b), C * sizeof(float));
        }
        /* back to the calling thread */
        assert_int_equal(nk_module_set_context(b, NULL), NK_OK);
        size_t before = cp.calls;
        assert_int_equal(nk_module_forward(b, x, 4, dims, y1), NK_OK);
        assert_int_equal(cp.calls, before);
        nk_context bad = NK_CONTEXT_INIT;
        bad.struct_size = 4;
        assert_int_equal(nk_module_set_context(b, &bad), NK_ERR_BAD_PARAM);
        assert_non_null(strstr(nk_last_error(), "struct_size"));
        nk_module_destroy(a);
        nk_module_destroy(b);
    }
    assert_int_equal(nk_module_set_context(NULL, NULL), NK_ERR_NULL_POINTER);
    free(x);
    free(y0);
    free(y1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(defaults_and_conversions),
        cmocka_unit_test(config_validation),
        cmocka_unit_test(running_variance_bias),
        cmocka_unit_test(train_eval_rules),
        cmocka_unit_test(instance_norm_running_stats),
        cmocka_unit_test(accepted_ranks),
        cmocka_unit_test(layouts_and_inits),
        cmocka_unit_test(layer_and_rms_norm),
        cmocka_unit_test(module_context),
    };
    return cmocka_run_group_tests_name("module", tests, NULL, NULL);
}
