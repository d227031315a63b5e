/*
 * Public API contract: bad input on every entry point gives its status and
 * message and leaves every output untouched; the edge cases of SEMANTICS.md
 * section 3; status strings. The dispatcher has its own suite (test_dispatch.c).
 */
#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "nk_test.h"

#define C_ 4
#define N_ 3
#define S_ 5
#define TOTAL (N_ * C_ * S_)
#define SENT 777.0f

typedef struct fixture {
    float x[TOTAL], y[TOTAL], w[C_], b[C_], rm[C_], rv[C_], sm[N_ * C_], si[N_ * C_];
} fixture;

static void fx_init(fixture *f)
{
    nkt_rng r;
    nkt_seed(&r, 11);
    nkt_fill(&r, f->x, TOTAL, 0.5, 2.0);
    for (int i = 0; i < TOTAL; i++)
        f->y[i] = SENT;
    for (int c = 0; c < C_; c++) {
        f->w[c] = 1.0f + 0.1f * (float)c;
        f->b[c] = -0.2f * (float)c;
        f->rm[c] = 0.25f;
        f->rv[c] = 2.0f;
    }
    for (int i = 0; i < N_ * C_; i++)
        f->sm[i] = f->si[i] = SENT;
}

/* outputs, saves and running statistics as fx_init left them */
static void assert_untouched(const fixture *f)
{
    for (int i = 0; i < TOTAL; i++)
        assert_true(f->y[i] == SENT);
    for (int i = 0; i < N_ * C_; i++)
        assert_true(f->sm[i] == SENT && f->si[i] == SENT);
    for (int c = 0; c < C_; c++)
        assert_true(f->rm[c] == 0.25f && f->rv[c] == 2.0f);
}

static void expect(nk_status got, nk_status want, const char *msg_part)
{
    if (got != want)
        print_error("status %d (%s), expected %d; message: %s\n", got, nk_status_string(got), want,
                    nk_last_error());
    assert_int_equal(got, want);
    if (msg_part && !strstr(nk_last_error(), msg_part)) {
        print_error("message \"%s\" lacks \"%s\"\n", nk_last_error(), msg_part);
        fail();
    }
}

static const nk_shape good = {N_, C_, S_, NK_CHANNELS_FIRST};

typedef nk_status (*op_fn)(fixture *f, const nk_shape *s, double eps, const nk_options *o, double mom);

static nk_status op_bn_train(fixture *f, const nk_shape *s, double eps, const nk_options *o, double mom)
{
    nk_running_stats rs = {f->rm, f->rv, mom, 0, 1, 0};
    return nk_batch_norm_train(f->x, s, f->w, f->b, eps, &rs, f->y, f->sm, f->si, o);
}
static nk_status op_bn_infer(fixture *f, const nk_shape *s, double eps, const nk_options *o, double mom)
{
    (void)mom;
    return nk_batch_norm_infer(f->x, s, f->w, f->b, f->rm, f->rv, eps, f->y, o);
}
static nk_status op_in(fixture *f, const nk_shape *s, double eps, const nk_options *o, double mom)
{
    nk_running_stats rs = {f->rm, f->rv, mom, 0, 1, 0};
    return nk_instance_norm(f->x, s, f->w, f->b, eps, 1, &rs, f->y, f->sm, f->si, o);
}
static nk_status op_gn(fixture *f, const nk_shape *s, double eps, const nk_options *o, double mom)
{
    (void)mom;
    return nk_group_norm(f->x, s, 2, f->w, f->b, eps, f->y, f->sm, f->si, o);
}
static nk_status op_apply(fixture *f, const nk_shape *s, double eps, const nk_options *o, double mom)
{
    nk_moments mo[C_];
    for (int c = 0; c < C_; c++)
        mo[c] = (nk_moments){(double)(N_ * S_), 0.5, 3.0};
    nk_running_stats rs = {f->rm, f->rv, mom, 0, 1, 0};
    return nk_batch_norm_apply_moments(f->x, s, mo, f->w, f->b, eps, &rs, f->y, f->sm, f->si, o);
}

static const op_fn shaped_ops[] = {op_bn_train, op_bn_infer, op_in, op_gn, op_apply};
static const char *const shaped_names[] = {"nk_batch_norm_train", "nk_batch_norm_infer",
                                           "nk_instance_norm", "nk_group_norm",
                                           "nk_batch_norm_apply_moments"};

static void bad_shapes_every_op(void **state)
{
    (void)state;
    fixture f;
    const nk_options relu = {NK_ACT_RELU, 0.0f};
    for (size_t k = 0; k < sizeof shaped_ops / sizeof shaped_ops[0]; k++) {
        const nk_shape bad[] = {
            {-1, C_, S_, NK_CHANNELS_FIRST},
            {N_, -4, S_, NK_CHANNELS_FIRST},
            {N_, C_, -5, NK_CHANNELS_LAST},
            {N_, 0, S_, NK_CHANNELS_FIRST},
            {INT64_MAX / 2, C_, S_, NK_CHANNELS_FIRST},
            {(int64_t)1 << 22, (int64_t)1 << 21, (int64_t)1 << 20, NK_CHANNELS_FIRST},
            {(int64_t)1 << 20, (int64_t)1 << 20, (int64_t)1 << 22, NK_CHANNELS_LAST},
        };
        for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
            fx_init(&f);
            expect(shaped_ops[k](&f, &bad[i], 1e-5, &relu, 0.1), NK_ERR_BAD_SHAPE, shaped_names[k]);
            assert_untouched(&f);
        }
        fx_init(&f);
        nk_shape lay = good;
        lay.layout = (nk_layout)7;
        expect(shaped_ops[k](&f, &lay, 1e-5, NULL, 0.1), NK_ERR_BAD_PARAM, "layout");
        expect(shaped_ops[k](&f, NULL, 1e-5, NULL, 0.1), NK_ERR_NULL_POINTER, "shape is NULL");
        assert_untouched(&f);
    }
}

static void bad_params_every_op(void **state)
{
    (void)state;
    fixture f;
    const double bad_eps[] = {-1e-5, NAN, INFINITY, -INFINITY};
    const nk_options bad_act = {(nk_activation)99, 0.0f};
    const nk_options bad_alpha = {NK_ACT_LEAKY_RELU, NAN};
    for (size_t k = 0; k < sizeof shaped_ops / sizeof shaped_ops[0]; k++) {
        for (size_t i = 0; i < 4; i++) {
            fx_init(&f);
            expect(shaped_ops[k](&f, &good, bad_eps[i], NULL, 0.1), NK_ERR_BAD_PARAM, "eps must be");
            assert_untouched(&f);
        }
        fx_init(&f);
        expect(shaped_ops[k](&f, &good, 1e-5, &bad_act, 0.1), NK_ERR_BAD_PARAM, "opts.activation must be in [0, 5], got");
        expect(shaped_ops[k](&f, &good, 1e-5, &bad_alpha, 0.1), NK_ERR_BAD_PARAM, "alpha");
        assert_untouched(&f);
    }
    /* momentum outside [0, 1] where running statistics are updated */
    const double bad_mom[] = {-0.1, 1.5, NAN};
    const op_fn with_mom[] = {op_bn_train, op_in, op_apply};
    for (size_t k = 0; k < 3; k++)
        for (size_t i = 0; i < 3; i++) {
            fx_init(&f);
            expect(with_mom[k](&f, &good, 1e-5, NULL, bad_mom[i]), NK_ERR_BAD_PARAM, "momentum");
            assert_untouched(&f);
        }
    /* groups */
    fx_init(&f);
    expect(nk_group_norm(f.x, &good, 3, f.w, f.b, 1e-5, f.y, f.sm, f.si, NULL), NK_ERR_BAD_PARAM,
           "Expected number of channels in input to be divisible by num_groups, but got input of "
           "shape [3, 4, 5] and num_groups=3");
    expect(nk_group_norm(f.x, &good, 0, f.w, f.b, 1e-5, f.y, f.sm, f.si, NULL), NK_ERR_BAD_PARAM,
           "num_groups");
    expect(nk_group_norm(f.x, &good, -2, f.w, f.b, 1e-5, f.y, f.sm, f.si, NULL), NK_ERR_BAD_PARAM,
           "num_groups");
    assert_untouched(&f);
}

static void null_pointers(void **state)
{
    (void)state;
    fixture f;
    fx_init(&f);
    nk_running_stats rs = {f.rm, f.rv, 0.1, 0, 1, 0};
    expect(nk_batch_norm_train(NULL, &good, NULL, NULL, 1e-5, NULL, f.y, NULL, NULL, NULL),
           NK_ERR_NULL_POINTER, "x is NULL");
    expect(nk_batch_norm_train(f.x, &good, NULL, NULL, 1e-5, NULL, NULL, NULL, NULL, NULL),
           NK_ERR_NULL_POINTER, "y is NULL");
    rs.var = NULL;
    expect(nk_batch_norm_train(f.x, &good, NULL, NULL, 1e-5, &rs, f.y, NULL, NULL, NULL),
           NK_ERR_NULL_POINTER, "var");
    expect(nk_batch_norm_infer(f.x, &good, NULL, NULL, NULL, f.rv, 1e-5, f.y, NULL),
           NK_ERR_NULL_POINTER, "running_mean");
    expect(nk_instance_norm(f.x, &good, NULL, NULL, 1e-5, 1, NULL, NULL, NULL, NULL, NULL),
           NK_ERR_NULL_POINTER, "y is NULL");
    expect(nk_group_norm(NULL, &good, 2, NULL, NULL, 1e-5, f.y, NULL, NULL, NULL),
           NK_ERR_NULL_POINTER, "x is NULL");
    expect(nk_layer_norm(NULL, 3, 4, NULL, NULL, 1e-5, f.y, NULL, NULL, NULL), NK_ERR_NULL_POINTER,
           "x is NULL");
    expect(nk_rms_norm(f.x, 3, 4, NULL, 1e-5, NULL, NULL, NULL), NK_ERR_NULL_POINTER, "y is NULL");
    expect(nk_batch_norm_stats(f.x, &good, NULL), NK_ERR_NULL_POINTER, "per_channel");
    expect(nk_batch_norm_apply_moments(f.x, &good, NULL, NULL, NULL, 1e-5, NULL, f.y, NULL, NULL, NULL),
           NK_ERR_NULL_POINTER, "per_channel is NULL");
    expect(nk_moments_compute(NULL, 3, &(nk_moments){0, 0, 0}), NK_ERR_NULL_POINTER, "x is NULL");
    expect(nk_moments_compute(f.x, 3, NULL), NK_ERR_NULL_POINTER, "out");
    expect(nk_module_forward(NULL, f.x, 1, (int64_t[]){3}, f.y), NK_ERR_NULL_POINTER, "module");
    expect(nk_module_create(NK_FW_PYTORCH, NK_LAYER_BATCH_NORM, 1, 4, NULL, NULL), NK_ERR_NULL_POINTER,
           "out");
    fx_init(&f);
    assert_untouched(&f);
    /* NULL data is fine for an empty tensor */
    const nk_shape empty = {0, C_, S_, NK_CHANNELS_FIRST};
    expect(nk_batch_norm_train(NULL, &empty, NULL, NULL, 1e-5, NULL, NULL, NULL, NULL, NULL), NK_OK, NULL);
    assert_string_equal(nk_last_error(), "");
}

static void rows_api_bad_input(void **state)
{
    (void)state;
    fixture f;
    fx_init(&f);
    const int64_t bad[][2] = {{-1, 4}, {3, 0}, {3, -4}, {INT64_MAX / 2, 8}};
    for (size_t i = 0; i < 4; i++) {
        expect(nk_layer_norm(f.x, bad[i][0], bad[i][1], f.w, f.b, 1e-5, f.y, f.sm, f.si, NULL),
               NK_ERR_BAD_SHAPE, "nk_layer_norm");
        expect(nk_rms_norm(f.x, bad[i][0], bad[i][1], f.w, 1e-5, f.y, f.si, NULL), NK_ERR_BAD_SHAPE,
               "nk_rms_norm");
    }
    expect(nk_layer_norm(f.x, 3, 4, f.w, f.b, -1.0, f.y, f.sm, f.si, NULL), NK_ERR_BAD_PARAM, "eps");
    expect(nk_rms_norm(f.x, 3, 4, f.w, NAN, f.y, f.si, NULL), NK_ERR_BAD_PARAM, "eps");
    expect(nk_rms_norm(f.x, 3, 4, f.w, 1e-5, f.y, f.si, &(nk_options){(nk_activation)-1, 0}),
           NK_ERR_BAD_PARAM, "activation");
    expect(nk_moments_compute(f.x, -1, &(nk_moments){0, 0, 0}), NK_ERR_BAD_SHAPE, "negative");
    assert_untouched(&f);
}

static void too_few_values(void **state)
{
    (void)state;
    fixture f;
    fx_init(&f);
    const nk_shape one = {1, 4, 1, NK_CHANNELS_FIRST};
    nk_running_stats rs = {f.rm, f.rv, 0.1, 0, 1, 0};
    expect(nk_batch_norm_train(f.x, &one, f.w, f.b, 1e-5, &rs, f.y, f.sm, f.si, NULL),
           NK_ERR_TOO_FEW_VALUES, NULL);
    assert_string_equal(nk_last_error(),
                        "Expected more than 1 value per channel when training, got input size [1, 4]");
    assert_int_equal(rs.num_batches_tracked, 0);
    const nk_shape one_sp = {3, 4, 1, NK_CHANNELS_FIRST};
    expect(nk_instance_norm(f.x, &one_sp, NULL, NULL, 1e-5, 1, NULL, f.y, NULL, NULL, NULL),
           NK_ERR_TOO_FEW_VALUES, NULL);
    assert_string_equal(nk_last_error(),
                        "Expected more than 1 spatial element when training, got input size [3, 4, 1]");
    /* GroupNorm checks [N * C / G, G, spatial...] as PyTorch does: 1 x 1 x 1 per group */
    const nk_shape gn1 = {1, 4, 1, NK_CHANNELS_FIRST};
    expect(nk_group_norm(f.x, &gn1, 4, NULL, NULL, 1e-5, f.y, NULL, NULL, NULL), NK_ERR_TOO_FEW_VALUES,
           NULL);
    assert_string_equal(nk_last_error(),
                        "Expected more than 1 value per channel when training, got input size [1, 4]");
    assert_untouched(&f);
    /* ... but N = 2 with one value per group is allowed and gives beta */
    const nk_shape gn2 = {2, 4, 1, NK_CHANNELS_FIRST};
    expect(nk_group_norm(f.x, &gn2, 4, f.w, f.b, 1e-5, f.y, NULL, NULL, NULL), NK_OK, NULL);
    for (int i = 0; i < 8; i++)
        assert_true(f.y[i] == f.b[i % 4]);
    /* merged moments with a single value */
    nk_moments mo[C_];
    for (int c = 0; c < C_; c++)
        mo[c] = (nk_moments){1.0, 0.0, 0.0};
    fx_init(&f);
    const nk_shape one_each = {1, C_, 1, NK_CHANNELS_FIRST};
    expect(nk_batch_norm_apply_moments(f.x, &one_each, mo, NULL, NULL, 1e-5, NULL, f.y, NULL, NULL, NULL),
           NK_ERR_TOO_FEW_VALUES, "Expected more than 1 value per channel");
    assert_untouched(&f);
    /* InstanceNorm in eval without running statistics */
    expect(nk_instance_norm(f.x, &good, NULL, NULL, 1e-5, 0, NULL, f.y, NULL, NULL, NULL),
           NK_ERR_BAD_PARAM, "running_mean and running_var");
    assert_untouched(&f);
}

static void eps_zero(void **state)
{
    (void)state;
    /* constant channel, eps 0: BatchNorm/InstanceNorm invstd is 0, y == beta exactly */
    float x[2 * 3 * 4], y[2 * 3 * 4], w[3] = {2, 3, 4}, b[3] = {0.5f, -1.5f, 7.25f}, si[3], sm[3];
    for (int i = 0; i < 24; i++)
        x[i] = 3.75f;
    const nk_shape s = {2, 3, 4, NK_CHANNELS_FIRST};
    assert_int_equal(nk_batch_norm_train(x, &s, w, b, 0.0, NULL, y, sm, si, NULL), NK_OK);
    for (int i = 0; i < 24; i++)
        assert_true(y[i] == b[(i / 4) % 3]);
    for (int c = 0; c < 3; c++) {
        assert_true(si[c] == 0.0f);
        assert_true(sm[c] == 3.75f);
    }
    assert_int_equal(nk_instance_norm(x, &s, w, b, 0.0, 1, NULL, y, NULL, NULL, NULL), NK_OK);
    for (int i = 0; i < 24; i++)
        assert_true(y[i] == b[(i / 4) % 3]);
    /* LayerNorm / GroupNorm with eps 0: 0 * inf, NaN as in PyTorch */
    assert_int_equal(nk_group_norm(x, &s, 3, w, b, 0.0, y, NULL, NULL, NULL), NK_OK);
    for (int i = 0; i < 24; i++)
        assert_true(isnan(y[i]));
    assert_int_equal(nk_layer_norm(x, 4, 6, NULL, NULL, 0.0, y, NULL, NULL, NULL), NK_OK);
    for (int i = 0; i < 24; i++)
        assert_true(isnan(y[i]));
    /* eps > 0, constant rows of every length, large value: exactly beta */
    static float big[4096], out[4096], g[4096], bb[4096];
    for (int len = 1; len <= 300; len++) {
        for (int i = 0; i < len; i++) {
            big[i] = 1234.0f;
            g[i] = 1.5f;
            bb[i] = 0.25f * (float)(i % 7);
        }
        assert_int_equal(nk_layer_norm(big, 1, len, g, bb, 1e-5, out, NULL, NULL, NULL), NK_OK);
        for (int i = 0; i < len; i++)
            assert_true(out[i] == bb[i]);
    }
}

static void empty_tensors(void **state)
{
    (void)state;
    fixture f;
    fx_init(&f);
    const nk_shape e1 = {0, C_, S_, NK_CHANNELS_FIRST}, e2 = {N_, C_, 0, NK_CHANNELS_LAST};
    nk_running_stats rs = {f.rm, f.rv, 0.1, 0, 1, 5};
    assert_int_equal(nk_batch_norm_train(f.x, &e1, f.w, f.b, 1e-5, &rs, f.y, f.sm, f.si, NULL), NK_OK);
    assert_int_equal(rs.num_batches_tracked, 6); /* incremented, statistics untouched */
    assert_int_equal(nk_batch_norm_train(f.x, &e2, f.w, f.b, 1e-5, &rs, f.y, f.sm, f.si, NULL), NK_OK);
    assert_int_equal(rs.num_batches_tracked, 7);
    assert_int_equal(nk_batch_norm_infer(f.x, &e1, f.w, f.b, f.rm, f.rv, 1e-5, f.y, NULL), NK_OK);
    assert_int_equal(nk_instance_norm(f.x, &e2, NULL, NULL, 1e-5, 1, &rs, f.y, f.sm, f.si, NULL), NK_OK);
    assert_int_equal(nk_group_norm(f.x, &e1, 2, NULL, NULL, 1e-5, f.y, f.sm, f.si, NULL), NK_OK);
    assert_int_equal(nk_layer_norm(f.x, 0, 7, NULL, NULL, 1e-5, f.y, f.sm, f.si, NULL), NK_OK);
    assert_int_equal(nk_rms_norm(f.x, 0, 7, NULL, 1e-5, f.y, f.si, NULL), NK_OK);
    nk_moments m = {9, 9, 9};
    assert_int_equal(nk_moments_compute(NULL, 0, &m), NK_OK);
    assert_true(m.count == 0.0 && m.mean == 0.0 && m.m2 == 0.0);
    assert_untouched(&f);
}

static void nan_inf_propagation(void **state)
{
    (void)state;
    /* one NaN poisons its reduced set (and that channel's running stats), nothing else */
    fixture f;
    fx_init(&f);
    f.x[1 * S_ + 2] = NAN; /* n = 0, c = 1 */
    nk_running_stats rs = {f.rm, f.rv, 0.1, 0, 1, 0};
    assert_int_equal(nk_batch_norm_train(f.x, &good, f.w, f.b, 1e-5, &rs, f.y, NULL, NULL, NULL), NK_OK);
    for (int n = 0; n < N_; n++)
        for (int c = 0; c < C_; c++)
            for (int p = 0; p < S_; p++) {
                float v = f.y[(n * C_ + c) * S_ + p];
                assert_true(c == 1 ? isnan(v) : isfinite(v));
            }
    for (int c = 0; c < C_; c++) {
        assert_true(c == 1 ? isnan(f.rm[c]) : isfinite(f.rm[c]));
        assert_true(c == 1 ? isnan(f.rv[c]) : isfinite(f.rv[c]));
    }
    fx_init(&f);
    f.x[1 * S_ + 2] = INFINITY;
    assert_int_equal(nk_instance_norm(f.x, &good, NULL, NULL, 1e-5, 1, NULL, f.y, NULL, NULL, NULL), NK_OK);
    for (int i = 0; i < TOTAL; i++)
        assert_true((i / S_ == 1) ? isnan(f.y[i]) : isfinite(f.y[i]));
    fx_init(&f);
    f.x[7] = -INFINITY;
    assert_int_equal(nk_layer_norm(f.x, N_ * C_, S_, NULL, NULL, 1e-5, f.y, NULL, NULL, NULL), NK_OK);
    for (int i = 0; i < TOTAL; i++)
        assert_true((i / S_ == 1) ? isnan(f.y[i]) : isfinite(f.y[i]));
}

static void status_strings(void **state)
{
    (void)state;
    assert_string_equal(nk_status_string(NK_OK), "ok");
    assert_string_equal(nk_status_string(NK_ERR_NULL_POINTER), "null pointer");
    assert_string_equal(nk_status_string(NK_ERR_BAD_SHAPE), "bad shape");
    assert_string_equal(nk_status_string(NK_ERR_BAD_PARAM), "bad parameter");
    assert_string_equal(nk_status_string(NK_ERR_TOO_FEW_VALUES), "too few values for batch statistics");
    assert_string_equal(nk_status_string(NK_ERR_UNSUPPORTED), "unsupported");
    assert_string_equal(nk_status_string(NK_ERR_OUT_OF_MEMORY), "out of memory");
    assert_string_equal(nk_status_string((nk_status)1234), "unknown status");
    assert_string_equal(nk_version(), NK_VERSION_STRING);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(bad_shapes_every_op),
        cmocka_unit_test(bad_params_every_op),
        cmocka_unit_test(null_pointers),
        cmocka_unit_test(rows_api_bad_input),
        cmocka_unit_test(too_few_values),
        cmocka_unit_test(eps_zero),
        cmocka_unit_test(empty_tensors),
        cmocka_unit_test(nan_inf_propagation),
        cmocka_unit_test(status_strings),
    };
    return cmocka_run_group_tests_name("api", tests, NULL, NULL);
}
