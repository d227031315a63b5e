/*
 * Input rules found by trying the API as an integrator would: sizes on
 * 32-bit targets, one overflow rule, per-channel array sizes, the
 * num_batches_tracked bound, PyTorch's shape rules in the module API, its
 * extra outputs, and messages that name the argument and its value.
 * Every failing call must leave outputs untouched and set a message.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nk_test.h"

#define POISON 0x5A

static void expect_fail(nk_status got, nk_status want, const char *needle)
{
    const char *msg = nk_last_error();
    if (got != want || !msg[0] || (needle && !strstr(msg, needle))) {
        print_error("status %d (want %d), message \"%s\" (want \"%s\")\n", (int)got, (int)want, msg,
                    needle ? needle : "");
        fail();
    }
}

static void expect_ok(nk_status got)
{
    if (got != NK_OK) {
        print_error("status %d: %s\n", (int)got, nk_last_error());
        fail();
    }
    assert_string_equal(nk_last_error(), "");
}

static int poisoned(const void *p, size_t n)
{
    const unsigned char *b = p;
    for (size_t i = 0; i < n; i++)
        if (b[i] != POISON)
            return 0;
    return 1;
}

/* The same rule whatever the order of the extents; empty and full alike. */
static void one_size_rule(void **state)
{
    (void)state;
    const int64_t big = (int64_t)1 << 62;
    float y[4];
    memset(y, POISON, sizeof y);
    const nk_shape refused[] = {{0, big, big, NK_CHANNELS_FIRST},
                                {big, 1, 0, NK_CHANNELS_FIRST},
                                {0, 1, big, NK_CHANNELS_LAST},
                                {big, 0x10, 0, NK_CHANNELS_LAST}};
    for (size_t i = 0; i < sizeof refused / sizeof refused[0]; i++) {
        expect_fail(nk_batch_norm_train(NULL, &refused[i], NULL, NULL, 1e-5, NULL, y, NULL, NULL, NULL),
                    NK_ERR_BAD_SHAPE, "is too large");
        expect_fail(nk_group_norm(NULL, &refused[i], 1, NULL, NULL, 1e-5, y, NULL, NULL, NULL),
                    NK_ERR_BAD_SHAPE, "spatial=");
    }
    /* the message quotes the shape, not a partial product */
    expect_fail(nk_instance_norm(NULL, &refused[1], NULL, NULL, 1e-5, 1, NULL, y, NULL, NULL, NULL),
                NK_ERR_BAD_SHAPE, "[n=4611686018427387904, c=1, spatial=0]");
    expect_fail(nk_layer_norm(NULL, 0, big, NULL, NULL, 1e-5, y, NULL, NULL, NULL), NK_ERR_BAD_SHAPE,
                "rows=0 x cols=4611686018427387904");
    /* empty tensors within the rule are fine in any order */
    const nk_shape fine[] = {{0, 3, 5, NK_CHANNELS_FIRST}, {5, 3, 0, NK_CHANNELS_LAST}};
    for (size_t i = 0; i < 2; i++)
        expect_ok(nk_batch_norm_train(NULL, &fine[i], NULL, NULL, 1e-5, NULL, NULL, NULL, NULL, NULL));
    assert_true(poisoned(y, sizeof y));
}

/* per_channel holds C nk_moments: a channel count whose floats fit but whose
 * moments wrap must be refused before anything is written or read. */
static void moments_array_size(void **state)
{
    (void)state;
    const nk_shape s = {0, (int64_t)0x0AAAAAAAAAAAAAABll, 1, NK_CHANNELS_FIRST};
    nk_moments mo[2];
    memset(mo, POISON, sizeof mo);
    /* on 32-bit targets the float count alone is already too large */
    const char *why = sizeof(size_t) == 4 ? "is too large" : "per_channel";
    expect_fail(nk_batch_norm_stats(NULL, &s, mo), NK_ERR_BAD_SHAPE, why);
    expect_fail(nk_batch_norm_apply_moments(NULL, &s, mo, NULL, NULL, 1e-5, NULL, NULL, NULL, NULL, NULL),
                NK_ERR_BAD_SHAPE, why);
    assert_true(poisoned(mo, sizeof mo));
    /* empty channels-first tensors with spatial 0 on every BatchNorm entry point */
    const nk_shape e = {3, 2, 0, NK_CHANNELS_FIRST};
    float x[1] = {0}, y[1], rm[2] = {0, 0}, rv[2] = {1, 1};
    memset(y, POISON, sizeof y);
    expect_ok(nk_batch_norm_infer(x, &e, NULL, NULL, rm, rv, 1e-5, y, NULL));
    expect_ok(nk_batch_norm_train(x, &e, NULL, NULL, 1e-5, NULL, y, NULL, NULL, NULL));
    expect_ok(nk_batch_norm_stats(x, &e, mo));
    assert_true(poisoned(y, sizeof y));
}

static void apply_moments_validation(void **state)
{
    (void)state;
    const nk_shape s = {2, 2, 3, NK_CHANNELS_FIRST}; /* 6 values per channel here */
    float x[12], y[12], rm[2] = {0, 0}, rv[2] = {1, 1};
    for (int i = 0; i < 12; i++)
        x[i] = (float)i;
    memset(y, POISON, sizeof y);
    nk_running_stats rs = {rm, rv, 0.1, 0, 1, 0};
    nk_moments below[2] = {{4, 0, 1}, {12, 0, 1}};
    expect_fail(nk_batch_norm_apply_moments(x, &s, below, NULL, NULL, 1e-5, &rs, y, NULL, NULL, NULL),
                NK_ERR_BAD_PARAM, "per_channel[0].count = 4 is below this shard's own 6");
    nk_moments neg[2] = {{12, 0, 1}, {12, 0, -1}};
    expect_fail(nk_batch_norm_apply_moments(x, &s, neg, NULL, NULL, 1e-5, &rs, y, NULL, NULL, NULL),
                NK_ERR_BAD_PARAM, "per_channel[1].m2 must be >= 0");
    assert_true(poisoned(y, sizeof y));
    assert_true(rm[0] == 0 && rv[0] == 1 && rs.num_batches_tracked == 0);
    /* NaN moments propagate, as NaN data does in the fused call */
    nk_moments nan_mean[2] = {{12, NAN, 1}, {12, 0, 1}};
    expect_ok(nk_batch_norm_apply_moments(x, &s, nan_mean, NULL, NULL, 1e-5, NULL, y, NULL, NULL, NULL));
    assert_true(isnan(y[0]));
}

static void num_batches_tracked_bound(void **state)
{
    (void)state;
    const nk_shape s = {2, 1, 2, NK_CHANNELS_FIRST};
    float x[4] = {1, 2, 3, 4}, y[4], rm[1] = {0}, rv[1] = {1};
    memset(y, POISON, sizeof y);
    nk_running_stats rs = {rm, rv, 0.0, 1, 1, INT64_MAX};
    expect_fail(nk_batch_norm_train(x, &s, NULL, NULL, 1e-5, &rs, y, NULL, NULL, NULL), NK_ERR_BAD_PARAM,
                "running.num_batches_tracked must be in [0, INT64_MAX - 1], got 9223372036854775807");
    assert_true(rs.num_batches_tracked == INT64_MAX && rm[0] == 0 && rv[0] == 1);
    assert_true(poisoned(y, sizeof y));
    rs.num_batches_tracked = INT64_MAX - 1;
    expect_ok(nk_batch_norm_train(x, &s, NULL, NULL, 1e-5, &rs, y, NULL, NULL, NULL));
    assert_true(rs.num_batches_tracked == INT64_MAX);
}

/* On a 32-bit target num_features = 2^30 used to wrap the allocation size;
 * on 64-bit ones 2^40 * 4 arrays is refused or fails to allocate. Nothing
 * may be written either way. */
static void module_parameter_sizes(void **state)
{
    (void)state;
    nk_module *m = (nk_module *)(uintptr_t)0x1;
    nk_status st;
    if (sizeof(size_t) == 4) {
        st = nk_module_create(NK_FW_PYTORCH, NK_LAYER_BATCH_NORM, 1, (int64_t)1 << 30, NULL, &m);
        expect_fail(st, NK_ERR_BAD_SHAPE, "num_features = 1073741824");
        st = nk_module_create(NK_FW_PYTORCH, NK_LAYER_LAYER_NORM, 0, (int64_t)1 << 29, NULL, &m);
        expect_fail(st, NK_ERR_BAD_SHAPE, "more than this target can address");
    }
    st = nk_module_create(NK_FW_PYTORCH, NK_LAYER_BATCH_NORM, 1, (int64_t)1 << 62, NULL, &m);
    expect_fail(st, NK_ERR_BAD_SHAPE, "num_features = 4611686018427387904");
    st = nk_module_create(NK_FW_PYTORCH, NK_LAYER_BATCH_NORM, 1, (int64_t)1 << 40, NULL, &m);
    assert_true(st == NK_ERR_BAD_SHAPE || st == NK_ERR_OUT_OF_MEMORY);
    assert_true(m == (nk_module *)(uintptr_t)0x1);
}

static nk_module *make(nk_framework fw, nk_layer l, int rank, int64_t C, const nk_module_config *cfg)
{
    nk_module *m = NULL;
    nk_status st = nk_module_create(fw, l, rank, C, cfg, &m);
    if (st != NK_OK)
        print_error("nk_module_create: %s\n", nk_last_error());
    assert_int_equal(st, NK_OK);
    return m;
}

static void pytorch_shape_rules(void **state)
{
    (void)state;
    float x[64], y[64];
    for (int i = 0; i < 64; i++)
        x[i] = (float)(i % 9) - 4.0f;
    /* InstanceNorm with batch statistics: spatial size 1 is refused even on
     * an empty batch */
    nk_module *m = make(NK_FW_PYTORCH, NK_LAYER_INSTANCE_NORM, 1, 3, NULL);
    expect_fail(nk_module_forward(m, x, 3, (int64_t[]){0, 3, 1}, y), NK_ERR_TOO_FEW_VALUES,
                "Expected more than 1 spatial element when training, got input size [0, 3, 1]");
    nk_module_destroy(m);
    m = make(NK_FW_PYTORCH, NK_LAYER_INSTANCE_NORM, 2, 3, NULL);
    expect_fail(nk_module_forward(m, x, 4, (int64_t[]){0, 3, 1, 1}, y), NK_ERR_TOO_FEW_VALUES,
                "[0, 3, 1, 1]");
    nk_module_destroy(m);
    const nk_shape e = {0, 3, 1, NK_CHANNELS_FIRST};
    expect_fail(nk_instance_norm(x, &e, NULL, NULL, 1e-5, 1, NULL, y, NULL, NULL, NULL),
                NK_ERR_TOO_FEW_VALUES, "spatial element");

    /* BatchNorm1d(3, affine=False, track_running_stats=False) on (4, 5) */
    nk_module_config cfg;
    nk_module_config_init(&cfg);
    cfg.affine = 0;
    cfg.track_running_stats = 0;
    m = make(NK_FW_PYTORCH, NK_LAYER_BATCH_NORM, 1, 3, &cfg);
    expect_ok(nk_module_forward(m, x, 2, (int64_t[]){4, 5}, y));
    nk_module_destroy(m);
    /* with affine parameters the buffer that mismatches is named */
    nk_module_config_init(&cfg);
    cfg.track_running_stats = 0;
    m = make(NK_FW_PYTORCH, NK_LAYER_BATCH_NORM, 1, 3, &cfg);
    expect_fail(nk_module_forward(m, x, 2, (int64_t[]){4, 5}, y), NK_ERR_BAD_SHAPE,
                "weight should contain 5 elements not 3");
    nk_module_destroy(m);
    /* GroupNorm(2, 4, affine=False) on 6 channels */
    nk_module_config_init(&cfg);
    cfg.num_groups = 2;
    cfg.affine = 0;
    m = make(NK_FW_PYTORCH, NK_LAYER_GROUP_NORM, 0, 4, &cfg);
    expect_ok(nk_module_forward(m, x, 3, (int64_t[]){2, 6, 4}, y));
    /* module errors name the layer, not the operator it calls */
    expect_fail(nk_module_forward(m, x, 3, (int64_t[]){2, 5, 4}, y), NK_ERR_BAD_PARAM,
                "nk_module_forward: PyTorch GroupNorm: Expected number of channels in input to be "
                "divisible by num_groups");
    nk_module_destroy(m);
}

/* MegEngine: freeze takes effect only with running statistics */
static void megengine_freeze_without_tracking(void **state)
{
    (void)state;
    nk_module_config cfg;
    nk_module_config_init(&cfg);
    cfg.freeze = 1;
    cfg.track_running_stats = 0;
    nk_module *m = make(NK_FW_MEGENGINE, NK_LAYER_BATCH_NORM, 2, 2, &cfg);
    float x[16], y[16];
    double ref[16];
    for (int i = 0; i < 16; i++)
        x[i] = (float)(i * i % 7);
    expect_ok(nk_module_forward(m, x, 4, (int64_t[]){2, 2, 2, 2}, y));
    const nk_shape s = {2, 2, 4, NK_CHANNELS_FIRST};
    nkt_oracle_norm(x, &s, NKT_BN, 0, NULL, NULL, 1e-5, NULL, ref);
    nkt_assert_close(y, ref, 16, 1e-5, 1e-5, "MegEngine freeze without running statistics");
    assert_int_equal(nk_module_set_training(m, 0), NK_OK);
    expect_ok(nk_module_forward(m, x, 4, (int64_t[]){2, 2, 2, 2}, y));
    nkt_assert_close(y, ref, 16, 1e-5, 1e-5, "MegEngine eval without running statistics");
    nk_module_destroy(m);
}

/* PyTorch torch.channels_last: dims (N, C, H, W), memory NHWC */
static void pytorch_channels_last(void **state)
{
    (void)state;
    enum { N = 2, C = 3, H = 2, W = 5, T = N * C * H * W };
    float x[T], xl[T], y[T], yl[T];
    nkt_rng r;
    nkt_seed(&r, 31);
    nkt_fill(&r, x, T, 0.5, 2.0);
    for (int n = 0; n < N; n++)
        for (int c = 0; c < C; c++)
            for (int p = 0; p < H * W; p++)
                xl[(n * H * W + p) * C + c] = x[(n * C + c) * H * W + p];
    const nk_layer layers[] = {NK_LAYER_BATCH_NORM, NK_LAYER_INSTANCE_NORM, NK_LAYER_GROUP_NORM};
    for (int i = 0; i < 3; i++) {
        nk_module_config cfg;
        nk_module_config_init(&cfg);
        if (layers[i] == NK_LAYER_GROUP_NORM)
            cfg.num_groups = 3;
        nk_module *a = make(NK_FW_PYTORCH, layers[i], 2, C, &cfg);
        cfg.data_format = NK_CHANNELS_LAST;
        nk_module *b = make(NK_FW_PYTORCH, layers[i], 2, C, &cfg);
        expect_ok(nk_module_forward(a, x, 4, (int64_t[]){N, C, H, W}, y));
        expect_ok(nk_module_forward(b, xl, 4, (int64_t[]){N, C, H, W}, yl));
        for (int n = 0; n < N; n++)
            for (int c = 0; c < C; c++)
                for (int p = 0; p < H * W; p++)
                    assert_float_equal(yl[(n * H * W + p) * C + c], y[(n * C + c) * H * W + p], 1e-6);
        if (layers[i] == NK_LAYER_BATCH_NORM)
            for (int c = 0; c < C; c++) {
                assert_float_equal(nk_module_running_mean(a)[c], nk_module_running_mean(b)[c], 1e-7);
                assert_float_equal(nk_module_running_var(a)[c], nk_module_running_var(b)[c], 1e-6);
            }
        nk_module_destroy(a);
        nk_module_destroy(b);
    }
}

static void module_extra_outputs(void **state)
{
    (void)state;
    enum { R = 3, D = 5 };
    float x[R * D], y[R * D], mean[R], inv[R];
    for (int i = 0; i < R * D; i++)
        x[i] = (float)((i * 7) % 11) * 0.5f;
    /* ONNX LayerNormalization: Mean and InvStdDev per row */
    nk_module *m = make(NK_FW_ONNX, NK_LAYER_LAYER_NORM, 0, D, NULL);
    nk_module_outputs o = {sizeof o, 0, mean, inv, NULL, NULL};
    expect_ok(nk_module_forward_ex(m, x, 2, (int64_t[]){R, D}, y, &o));
    for (int r = 0; r < R; r++) {
        double s = 0, q = 0;
        for (int i = 0; i < D; i++)
            s += x[r * D + i];
        for (int i = 0; i < D; i++)
            q += (x[r * D + i] - s / D) * (x[r * D + i] - s / D);
        assert_float_equal(mean[r], s / D, 1e-6);
        assert_float_equal(inv[r], 1.0 / sqrt(q / D + 1e-5), 1e-5);
    }
    /* outputs from a newer header than the library knows: the known part is used */
    nk_module_outputs bad = {8, 0, mean, inv, NULL, NULL};
    expect_fail(nk_module_forward_ex(m, x, 2, (int64_t[]){R, D}, y, &bad), NK_ERR_BAD_PARAM,
                "struct_size");
    float rm[D];
    nk_module_outputs norun = {sizeof norun, 0, NULL, NULL, rm, NULL};
    expect_fail(nk_module_forward_ex(m, x, 2, (int64_t[]){R, D}, y, &norun), NK_ERR_BAD_PARAM,
                "has no running statistics");
    nk_module_destroy(m);

    /* ONNX BatchNormalization(training_mode=1): running mean and var outputs */
    nk_module_config cfg;
    nk_module_config_init(&cfg);
    cfg.training_mode = 1;
    m = make(NK_FW_ONNX, NK_LAYER_BATCH_NORM, 0, D, &cfg);
    float rmean[D], rvar[D], bm[D], bi[D];
    nk_module_outputs ob = {sizeof ob, 0, bm, bi, rmean, rvar};
    expect_ok(nk_module_forward_ex(m, x, 2, (int64_t[]){R, D}, y, &ob));
    for (int c = 0; c < D; c++) {
        double s = 0, q = 0;
        for (int r = 0; r < R; r++)
            s += x[r * D + c];
        for (int r = 0; r < R; r++)
            q += (x[r * D + c] - s / R) * (x[r * D + c] - s / R);
        /* ONNX momentum 0.9: running = 0.9 * running + 0.1 * batch, biased variance */
        assert_float_equal(rmean[c], 0.1 * s / R, 1e-6);
        assert_float_equal(rvar[c], 0.9 + 0.1 * q / R, 1e-6);
        assert_true(rmean[c] == nk_module_running_mean(m)[c]);
        assert_float_equal(bm[c], s / R, 1e-6);
        assert_float_equal(bi[c], 1.0 / sqrt(q / R + 1e-5), 1e-5);
    }
    nk_module_destroy(m);
}

/* PyTorch momentum=None resumes its cumulative average from a checkpoint */
static void num_batches_tracked_setter(void **state)
{
    (void)state;
    nk_module_config cfg;
    nk_module_config_init(&cfg);
    cfg.momentum = NK_MOMENTUM_NONE;
    nk_module *m = make(NK_FW_PYTORCH, NK_LAYER_BATCH_NORM, 1, 1, &cfg);
    expect_ok(nk_module_set_num_batches_tracked(m, 3));
    nk_module_running_mean(m)[0] = 2.0f;
    float x[4] = {1, 2, 3, 6}, y[4];
    expect_ok(nk_module_forward(m, x, 2, (int64_t[]){4, 1}, y));
    assert_int_equal(nk_module_num_batches_tracked(m), 4);
    /* momentum 1/4: 0.25 * 3 + 0.75 * 2 */
    assert_float_equal(nk_module_running_mean(m)[0], 2.25, 1e-6);
    expect_fail(nk_module_set_num_batches_tracked(m, INT64_MAX), NK_ERR_BAD_PARAM, "INT64_MAX - 1");
    expect_fail(nk_module_set_num_batches_tracked(m, -1), NK_ERR_BAD_PARAM, "got -1");
    assert_int_equal(nk_module_num_batches_tracked(m), 4);
    nk_module_destroy(m);
    m = make(NK_FW_PYTORCH, NK_LAYER_LAYER_NORM, 0, 4, NULL);
    expect_fail(nk_module_set_num_batches_tracked(m, 1), NK_ERR_UNSUPPORTED, "tracks no running");
    nk_module_destroy(m);
}

static void module_messages(void **state)
{
    (void)state;
    nk_module *m = NULL;
    nk_module_config cfg;
    expect_fail(nk_module_create((nk_framework)6, NK_LAYER_BATCH_NORM, 1, 3, NULL, &m), NK_ERR_BAD_PARAM,
                "fw must be an nk_framework in [0, 5], got 6");
    expect_fail(nk_module_create(NK_FW_ONNX, (nk_layer)9, 1, 3, NULL, &m), NK_ERR_BAD_PARAM,
                "layer must be an nk_layer in [0, 6], got 9");
    nk_module_config_init(&cfg);
    cfg.affine = 7;
    expect_fail(nk_module_create(NK_FW_PYTORCH, NK_LAYER_BATCH_NORM, 1, 3, &cfg, &m), NK_ERR_BAD_PARAM,
                "cfg.affine takes NK_DEFAULT (-1), 0 or 1, got 7");
    nk_module_config_init(&cfg);
    cfg.momentum = NK_MOMENTUM_NONE;
    expect_fail(nk_module_create(NK_FW_KERAS, NK_LAYER_BATCH_NORM, 1, 3, &cfg, &m), NK_ERR_BAD_PARAM,
                "NK_MOMENTUM_NONE (-2) is PyTorch's momentum=None only");
    nk_module_config_init(&cfg);
    cfg.eps = NK_EPS_NONE;
    expect_fail(nk_module_create(NK_FW_PYTORCH, NK_LAYER_LAYER_NORM, 0, 3, &cfg, &m), NK_ERR_BAD_PARAM,
                "NK_EPS_NONE (-2) is PyTorch RMSNorm's eps=None only");
    nk_module_config_init(&cfg);
    cfg.num_groups = 4;
    expect_fail(nk_module_create(NK_FW_PYTORCH, NK_LAYER_GROUP_NORM, 0, 6, &cfg, &m), NK_ERR_BAD_PARAM,
                "num_channels (6) must be divisible by num_groups (4)");
    nk_module_config_init(&cfg);
    cfg.normalized_ndim = 2;
    cfg.normalized_shape[0] = 3;
    cfg.normalized_shape[1] = 4;
    expect_fail(nk_module_create(NK_FW_PYTORCH, NK_LAYER_LAYER_NORM, 0, 10, &cfg, &m), NK_ERR_BAD_PARAM,
                "num_features = 10 disagrees with normalized_shape, whose product is 12");
    assert_null(m);
    expect_ok(nk_module_create(NK_FW_PYTORCH, NK_LAYER_LAYER_NORM, 0, 12, &cfg, &m));
    nk_module_destroy(m);
    nk_module_config_init(&cfg);
    cfg.options.activation = (nk_activation)42;
    expect_fail(nk_module_create(NK_FW_PYTORCH, NK_LAYER_BATCH_NORM, 1, 2, &cfg, &m), NK_ERR_BAD_PARAM,
                "opts.activation must be in [0, 5], got 42");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(one_size_rule),
        cmocka_unit_test(moments_array_size),
        cmocka_unit_test(apply_moments_validation),
        cmocka_unit_test(num_batches_tracked_bound),
        cmocka_unit_test(module_parameter_sizes),
        cmocka_unit_test(pytorch_shape_rules),
        cmocka_unit_test(megengine_freeze_without_tracking),
        cmocka_unit_test(pytorch_channels_last),
        cmocka_unit_test(module_extra_outputs),
        cmocka_unit_test(num_batches_tracked_setter),
        cmocka_unit_test(module_messages),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
