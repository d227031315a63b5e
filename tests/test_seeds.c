/*
 * The examples printed in ../shared/seeds, reproduced through the module API
 * of the framework that printed them: 1e-6 relative, or 1e-6 absolute near 0.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "nk_test.h"

#define TOL 1e-6

static const float seed_x1[] = {0.7f, 0.5f, 0.5f, 0.6f, 0.5f, 0.4f, 0.6f, 0.9f};

static nk_module *make(nk_framework fw, nk_layer l, int rank, int64_t c, const nk_module_config *cfg)
{
    nk_module *m = NULL;
    nk_status st = nk_module_create(fw, l, rank, c, cfg, &m);
    if (st != NK_OK)
        print_error("nk_module_create: %s\n", nk_last_error());
    assert_int_equal(st, NK_OK);
    return m;
}

static void forward_ok(nk_module *m, const float *x, int ndim, const int64_t *dims, float *y)
{
    nk_status st = nk_module_forward(m, x, ndim, dims, y);
    if (st != NK_OK)
        print_error("nk_module_forward: %s\n", nk_last_error());
    assert_int_equal(st, NK_OK);
}

/* 000 / 002: InstanceNorm1d, PyTorch default vs MindSpore affine=False in training. */
static void seed_instance_norm1d(void **state)
{
    (void)state;
    static const double torch_out[] = {1.5064616e+00, -9.0387678e-01, -9.0387678e-01, 3.0129281e-01,
                                       -5.3444624e-01, -1.0688924e+00, 3.2054459e-08, 1.6033382e+00};
    static const double ms_out[] = {1.5064610e+00, -9.0387726e-01, -9.0387726e-01, 3.0129224e-01,
                                    -5.3444624e-01, -1.0688924e+00, 3.2054459e-08, 1.6033382e+00};
    const int64_t dims[] = {1, 2, 4};
    float y[8];

    nk_module *pt = make(NK_FW_PYTORCH, NK_LAYER_INSTANCE_NORM, 1, 2, NULL);
    assert_true(nk_module_training(pt)); /* PyTorch modules start in training */
    assert_null(nk_module_weight(pt));   /* affine=False by default */
    assert_null(nk_module_running_mean(pt));
    forward_ok(pt, seed_x1, 3, dims, y);
    nkt_assert_close(y, torch_out, 8, TOL, TOL, "PyTorch InstanceNorm1d");
    nk_module_destroy(pt);

    nk_module_config cfg;
    nk_module_config_init(&cfg);
    cfg.affine = 0;
    nk_module *ms = make(NK_FW_MINDSPORE, NK_LAYER_INSTANCE_NORM, 1, 2, &cfg);
    assert_false(nk_module_training(ms)); /* MindSpore cells start in inference */
    assert_int_equal(nk_module_set_training(ms, 1), NK_OK);
    forward_ok(ms, seed_x1, 3, dims, y);
    nkt_assert_close(y, ms_out, 8, TOL, TOL, "MindSpore InstanceNorm1d");
    /* MindSpore always uses instance statistics: same output in inference */
    nk_module_set_training(ms, 0);
    forward_ok(ms, seed_x1, 3, dims, y);
    nkt_assert_close(y, ms_out, 8, TOL, TOL, "MindSpore InstanceNorm1d (inference)");
    /* ... and only takes 3-D input, where PyTorch also takes unbatched (C, L) */
    const int64_t unbatched[] = {2, 4};
    assert_int_equal(nk_module_forward(ms, seed_x1, 2, unbatched, y), NK_ERR_BAD_SHAPE);
    nk_module_destroy(ms);

    pt = make(NK_FW_PYTORCH, NK_LAYER_INSTANCE_NORM, 1, 2, NULL);
    forward_ok(pt, seed_x1, 2, unbatched, y);
    nkt_assert_close(y, torch_out, 8, TOL, TOL, "PyTorch InstanceNorm1d unbatched");
    nk_module_destroy(pt);
}

/* 001: InstanceNorm3d. PyTorch is built with num_features=3 for a 2-channel
 * input and accepts it because affine is off; MindSpore with 2. */
static void seed_instance_norm3d(void **state)
{
    (void)state;
    static const float x[] = {0.1f, 0.2f, 0.3f, 0.4f, 0.9f, 1.0f, 1.1f, 1.2f};
    static const double torch_out[] = {-1.3411044, -0.44703478, 0.4470349, 1.3411044,
                                       -1.3411034, -0.44703388, 0.44703573, 1.3411053};
    static const double ms_out[] = {-1.3411045, -0.4470348, 0.44703496, 1.3411045,
                                    -1.3411034, -0.44703388, 0.44703573, 1.3411053};
    const int64_t dims[] = {1, 2, 1, 2, 2};
    float y[8];

    nk_module *pt = make(NK_FW_PYTORCH, NK_LAYER_INSTANCE_NORM, 3, 3, NULL);
    forward_ok(pt, x, 5, dims, y);
    nkt_assert_close(y, torch_out, 8, TOL, TOL, "PyTorch InstanceNorm3d(3) on 2 channels");
    nk_module_destroy(pt);

    /* with affine=True the channel count must match */
    nk_module_config cfg;
    nk_module_config_init(&cfg);
    cfg.affine = 1;
    pt = make(NK_FW_PYTORCH, NK_LAYER_INSTANCE_NORM, 3, 3, &cfg);
    memset(y, 0, sizeof y);
    assert_int_equal(nk_module_forward(pt, x, 5, dims, y), NK_ERR_BAD_SHAPE);
    assert_string_equal(nk_last_error(),
                        "expected input's size at dim=1 to match num_features (3), but got: 2.");
    for (int i = 0; i < 8; i++)
        assert_true(y[i] == 0.0f); /* untouched */
    nk_module_destroy(pt);

    nk_module_config_init(&cfg);
    cfg.affine = 0;
    nk_module *ms = make(NK_FW_MINDSPORE, NK_LAYER_INSTANCE_NORM, 3, 2, &cfg);
    nk_module_set_training(ms, 1);
    forward_ok(ms, x, 5, dims, y);
    nkt_assert_close(y, ms_out, 8, TOL, TOL, "MindSpore InstanceNorm3d");
    const int64_t four[] = {2, 1, 2, 2};
    assert_int_equal(nk_module_forward(ms, x, 4, four, y), NK_ERR_BAD_SHAPE);
    nk_module_destroy(ms);
}

/* 003: BatchNorm1d, PyTorch momentum 0.1 vs MindSpore momentum 0.9 (1 - m). */
static void seed_batch_norm1d(void **state)
{
    (void)state;
    static const double out[] = {0.9995001, 0.9980063, -0.998006, -0.99977785,
                                 -0.9995007, -0.9980057, 0.998006, 0.99977785};
    static const double ms_out[] = {0.9995001, 0.9980063, -0.998006, -0.9997778,
                                    -0.9995007, -0.9980057, 0.998006, 0.9997778};
    /* batch mean, unbiased batch var of the seed input, per channel */
    static const double mean[] = {0.6, 0.45, 0.55, 0.75};
    static const double uvar[] = {0.02, 0.005, 0.005, 0.045};
    const int64_t dims[] = {2, 4};
    float y[8];

    nk_module_config cfg;
    nk_module_config_init(&cfg);
    cfg.affine = 0;
    cfg.momentum = 0.1;
    nk_module *pt = make(NK_FW_PYTORCH, NK_LAYER_BATCH_NORM, 1, 4, &cfg);
    forward_ok(pt, seed_x1, 2, dims, y);
    nkt_assert_close(y, out, 8, TOL, TOL, "PyTorch BatchNorm1d");
    assert_int_equal(nk_module_num_batches_tracked(pt), 1);

    cfg.momentum = 0.9;
    nk_module *ms = make(NK_FW_MINDSPORE, NK_LAYER_BATCH_NORM, 1, 4, &cfg);
    assert_true(fabs(nk_module_momentum_torch(ms) - 0.1) < 1e-15);
    nk_module_set_training(ms, 1);
    forward_ok(ms, seed_x1, 2, dims, y);
    nkt_assert_close(y, ms_out, 8, TOL, TOL, "MindSpore BatchNorm1d");

    /* running statistics: both conventions give the same update */
    double rm[4], rv[4];
    for (int c = 0; c < 4; c++) {
        rm[c] = 0.1 * mean[c];
        rv[c] = 0.9 * 1.0 + 0.1 * uvar[c];
    }
    nkt_assert_close(nk_module_running_mean(pt), rm, 4, TOL, TOL, "PyTorch running_mean");
    nkt_assert_close(nk_module_running_var(pt), rv, 4, TOL, TOL, "PyTorch running_var");
    nkt_assert_close(nk_module_running_mean(ms), rm, 4, TOL, TOL, "MindSpore moving_mean");
    nkt_assert_close(nk_module_running_var(ms), rv, 4, TOL, TOL, "MindSpore moving_variance");
    for (int c = 0; c < 4; c++) {
        assert_true(nk_module_running_mean(pt)[c] == nk_module_running_mean(ms)[c]);
        assert_true(nk_module_running_var(pt)[c] == nk_module_running_var(ms)[c]);
    }

    /* inference: both use the running statistics */
    nk_module_set_training(pt, 0);
    nk_module_set_training(ms, 0);
    float y2[8];
    forward_ok(pt, seed_x1, 2, dims, y);
    forward_ok(ms, seed_x1, 2, dims, y2);
    double ref[8];
    for (int i = 0; i < 8; i++) {
        int c = i % 4;
        ref[i] = (seed_x1[i] - rm[c]) / sqrt(rv[c] + 1e-5);
    }
    nkt_assert_close(y, ref, 8, TOL, TOL, "PyTorch BatchNorm1d eval");
    nkt_assert_close(y2, ref, 8, TOL, TOL, "MindSpore BatchNorm1d inference");
    nk_module_destroy(pt);
    nk_module_destroy(ms);

    /* a fresh MindSpore cell is in inference: moving mean 0, moving var 1 */
    ms = make(NK_FW_MINDSPORE, NK_LAYER_BATCH_NORM, 1, 4, &cfg);
    forward_ok(ms, seed_x1, 2, dims, y);
    for (int i = 0; i < 8; i++)
        ref[i] = seed_x1[i] / sqrt(1.0 + 1e-5);
    nkt_assert_close(y, ref, 8, TOL, TOL, "MindSpore BatchNorm1d default inference");
    nk_module_destroy(ms);
}

/* 004: MegEngine InstanceNorm takes 4-D (N, C, H, W) only; it equals PyTorch's
 * InstanceNorm2d (MegEngine's affine weight starts at 1, bias at 0). */
static void seed_megengine_instance_norm(void **state)
{
    (void)state;
    const int64_t dims[] = {32, 64, 32, 32};
    const size_t n = 32 * 64 * 32 * 32;
    float *x = malloc(n * sizeof *x), *y1 = malloc(n * sizeof *y1), *y2 = malloc(n * sizeof *y2);
    assert_non_null(x);
    assert_non_null(y1);
    assert_non_null(y2);
    nkt_rng r;
    nkt_seed(&r, 4);
    nkt_fill(&r, x, n, 0.0, 1.0);

    nk_module *me = make(NK_FW_MEGENGINE, NK_LAYER_INSTANCE_NORM, 2, 64, NULL);
    assert_true(nk_module_training(me));
    assert_non_null(nk_module_weight(me));
    assert_null(nk_module_running_mean(me));
    forward_ok(me, x, 4, dims, y1);
    nk_module *pt = make(NK_FW_PYTORCH, NK_LAYER_INSTANCE_NORM, 2, 64, NULL);
    forward_ok(pt, x, 4, dims, y2);
    double *ref = malloc(n * sizeof *ref);
    assert_non_null(ref);
    for (size_t i = 0; i < n; i++)
        ref[i] = y2[i];
    nkt_assert_close(y1, ref, n, 0.0, 0.0, "MegEngine InstanceNorm == PyTorch InstanceNorm2d");

    /* other ranks are refused by MegEngine, and the output is untouched */
    const int64_t d3[] = {32, 64, 1024}, d5[] = {32, 64, 2, 16, 32};
    y1[0] = 42.0f;
    assert_int_equal(nk_module_forward(me, x, 3, d3, y1), NK_ERR_BAD_SHAPE);
    assert_string_equal(nk_last_error(), "expected 4D (N, C, H, W) input (got 3D input)");
    assert_int_equal(nk_module_forward(me, x, 5, d5, y1), NK_ERR_BAD_SHAPE);
    assert_true(y1[0] == 42.0f);
    /* PyTorch InstanceNorm2d takes 3-D as unbatched (C, H, W) */
    const int64_t unb[] = {64, 32, 32};
    assert_int_equal(nk_module_forward(pt, x, 3, unb, y2), NK_OK);
    /* MegEngine has neither momentum nor running statistics */
    nk_module_config cfg;
    nk_module_config_init(&cfg);
    cfg.momentum = 0.1;
    nk_module *bad = NULL;
    assert_int_equal(nk_module_create(NK_FW_MEGENGINE, NK_LAYER_INSTANCE_NORM, 2, 64, &cfg, &bad),
                     NK_ERR_BAD_PARAM);
    assert_null(bad);
    nk_module_config_init(&cfg);
    cfg.track_running_stats = 1;
    assert_int_equal(nk_module_create(NK_FW_MEGENGINE, NK_LAYER_INSTANCE_NORM, 2, 64, &cfg, &bad),
                     NK_ERR_BAD_PARAM);
    nk_module_destroy(me);
    nk_module_destroy(pt);
    free(x);
    free(y1);
    free(y2);
    free(ref);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(seed_instance_norm1d),
        cmocka_unit_test(seed_instance_norm3d),
        cmocka_unit_test(seed_batch_norm1d),
        cmocka_unit_test(seed_megengine_instance_norm),
    };
    return cmocka_run_group_tests_name("seeds", tests, NULL, NULL);
}
