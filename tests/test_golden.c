/*
 * Golden vectors from real PyTorch 1.13 (tests/golden/torch_golden.h, made by
 * tests/gen_golden.py), replayed through the functional API and through the
 * PyTorch module API (nk_module_*).
 *
 * Each case is a torch module (BatchNorm1d/2d/3d, InstanceNorm1d/2d/3d,
 * GroupNorm, LayerNorm, optionally followed by an activation) and a sequence of
 * forward calls ("steps") in train or eval mode. After each step the output,
 * the running statistics and num_batches_tracked must match torch's.
 *
 * Tolerance: 1e-6 absolute + 1e-6 relative (nkt_assert_close). torch and
 * normkit both compute in fp32 with statistics accumulated in higher precision
 * but fold the affine transform differently ((x - m) * invstd * w + b against
 * (x - m) * (w * invstd) + b), so the outputs differ by a few fp32 ulps
 * (|y| <= ~10 here, 1 ulp <= 1e-6): well inside the bound.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nk_test.h"
#include "golden/torch_golden.h"

#define NCASES (sizeof gold_cases / sizeof gold_cases[0])
#define GOLD_ATOL 1e-6
#define GOLD_RTOL 1e-6
#define TOO_FEW_PREFIX "Expected more than 1 value per channel when training"
#define SENTINEL 12345.0f

static void check_close(const float *got, const float *ref, int64_t n, const char *what)
{
    double *r = malloc((size_t)(n ? n : 1) * sizeof *r);
    assert_non_null(r);
    for (int64_t i = 0; i < n; i++)
        r[i] = ref[i];
    nkt_assert_close(got, r, (size_t)n, GOLD_ATOL, GOLD_RTOL, what);
    free(r);
}

/*
 * Outputs normalized with batch statistics. torch rounds each set's mean to
 * fp32 before it computes x - mean, so its y carries an error of up to about
 * one ulp of the mean times the slope |w| * invstd. That is large when a set's
 * spread is small against its mean: bn1d_2d_m01_noaffine, channel 3 holds the
 * three values 2.5577, 2.4722, 2.4997 (mean 2.51, invstd 28), and torch's
 * y = -0.284450769 is 2.1e-6 off the float64 result -0.28444869 while normkit
 * gives -0.284448683. So each element gets 1e-6 + 1e-6 |ref| as everywhere
 * plus ulp_fp32(mean) * slope (6.7e-6 for that channel, below 1e-6 for most
 * sets here): tight enough that a wrong mean, variance, eps or affine fails.
 */
static int64_t set_of(const gold_case *gc, const gold_step *s, int64_t i, int64_t *chan)
{
    const int64_t C = gc->c, S = s->spatial;
    if (gc->layer == NK_LAYER_LAYER_NORM) {
        *chan = i % C;
        return i / C;
    }
    int64_t n, c;
    if (gc->layout == NK_CHANNELS_FIRST) {
        n = i / (C * S);
        c = (i / S) % C;
    } else {
        n = i / (S * C);
        c = i % C;
    }
    *chan = c;
    switch (gc->layer) {
    case NK_LAYER_BATCH_NORM: return c;
    case NK_LAYER_INSTANCE_NORM: return n * C + c;
    default: return n * gc->groups + c / (C / gc->groups);
    }
}

static void check_batch_output(const gold_case *gc, const gold_step *s, const float *got, const char *what)
{
    const int64_t n = s->numel;
    int64_t nsets = n, chan;
    double *sum = calloc((size_t)nsets, sizeof *sum), *sq = calloc((size_t)nsets, sizeof *sq);
    double *cnt = calloc((size_t)nsets, sizeof *cnt);
    assert_true(sum && sq && cnt);
    for (int64_t i = 0; i < n; i++) { /* float64 two-pass statistics per set */
        int64_t k = set_of(gc, s, i, &chan);
        sum[k] += s->x[i];
        cnt[k] += 1.0;
    }
    for (int64_t i = 0; i < n; i++) {
        int64_t k = set_of(gc, s, i, &chan);
        double d = s->x[i] - sum[k] / cnt[k];
        sq[k] += d * d;
    }
    for (int64_t i = 0; i < n; i++) {
        int64_t k = set_of(gc, s, i, &chan);
        double mean = sum[k] / cnt[k], var = sq[k] / cnt[k];
        double w = gc->weight ? fabs((double)gc->weight[chan]) : 1.0;
        double slope = var + gc->eps > 0.0 ? w / sqrt(var + gc->eps) : 0.0;
        double r = s->y[i], v = got[i];
        float fm = fabsf((float)mean);
        double tol = GOLD_ATOL + GOLD_RTOL * fabs(r) + (double)(nextafterf(fm, INFINITY) - fm) * slope;
        /* a constant set (eps = 0 edge cases): invstd is 0 or the centred value
         * is exactly 0, and y must be exactly act(beta) as in torch */
        if (var == 0.0)
            tol = 0.0;
        if (!(fabs(v - r) <= tol)) {
            print_error("%s: element %lld: got %.9g, expected %.9g (tol %.3g)\n", what, (long long)i, v, r, tol);
            fail();
        }
    }
    free(sum);
    free(sq);
    free(cnt);
}

static void check_error(nk_status st, const gold_step *s, const char *what)
{
    if (st != NK_ERR_TOO_FEW_VALUES || strncmp(nk_last_error(), TOO_FEW_PREFIX, strlen(TOO_FEW_PREFIX)))
        print_error("%s: expected NK_ERR_TOO_FEW_VALUES and torch's \"%s\", got status %d \"%s\"\n", what,
                    s->error, (int)st, nk_last_error());
    assert_int_equal(st, NK_ERR_TOO_FEW_VALUES);
    assert_memory_equal(nk_last_error(), TOO_FEW_PREFIX, strlen(TOO_FEW_PREFIX));
    /* torch's own message starts the same way */
    assert_memory_equal(s->error, TOO_FEW_PREFIX, strlen(TOO_FEW_PREFIX));
}

/* Output buffer: all SENTINEL, guarded. After an error it must stay SENTINEL. */
static void check_untouched(const nkt_buf *y, const char *what)
{
    for (size_t i = 0; i < y->n; i++)
        if (y->p[i] != SENTINEL) {
            print_error("%s: output %zu written on error\n", what, i);
            fail();
        }
}

static void reset_out(nkt_buf *y)
{
    for (size_t i = 0; i < y->n; i++)
        y->p[i] = SENTINEL;
}

static void check_running(const gold_case *gc, const gold_step *s, const float *rm, const float *rv,
                          const char *what)
{
    char buf[200];
    assert_non_null(rm);
    assert_non_null(rv);
    snprintf(buf, sizeof buf, "%s running_mean", what);
    check_close(rm, s->rmean, gc->c, buf);
    snprintf(buf, sizeof buf, "%s running_var", what);
    check_close(rv, s->rvar, gc->c, buf);
}

static void check_output(const gold_case *gc, const gold_step *s, const float *got, const char *what)
{
    int batch_stats = gc->layer == NK_LAYER_GROUP_NORM || gc->layer == NK_LAYER_LAYER_NORM ||
                      s->training || !gc->track;
    if (batch_stats)
        check_batch_output(gc, s, got, what);
    else
        check_close(got, s->y, s->numel, what);
}

/* ------------------------------------------------------------------------ */
/* Functional API                                                             */
/* ------------------------------------------------------------------------ */

static void run_functional(void **state)
{
    const gold_case *gc = *state;
    const int64_t C = gc->c;
    const nk_options opts = {gc->act, gc->alpha};
    float *rm = calloc((size_t)C, sizeof *rm), *rv = calloc((size_t)C, sizeof *rv);
    assert_non_null(rm);
    assert_non_null(rv);
    for (int64_t c = 0; c < C; c++) /* torch's initial running statistics */
        rv[c] = 1.0f;
    nk_running_stats rs = {rm, rv, gc->momentum, gc->cumulative, 1, 0};

    for (int k = 0; k < gc->nsteps; k++) {
        const gold_step *s = &gc->steps[k];
        char what[160];
        snprintf(what, sizeof what, "%s step %d (%s)", gc->name, k, s->training ? "train" : "eval");
        nkt_buf y = nkt_alloc((size_t)s->numel, (size_t)k % 4); /* guarded, misaligned by k */
        reset_out(&y);
        nk_shape sh = {s->n, C, s->spatial, gc->layout};
        nk_status st;
        switch (gc->layer) {
        case NK_LAYER_BATCH_NORM:
            if (gc->track && !s->training)
                st = nk_batch_norm_infer(s->x, &sh, gc->weight, gc->bias, rm, rv, gc->eps, y.p, &opts);
            else
                st = nk_batch_norm_train(s->x, &sh, gc->weight, gc->bias, gc->eps,
                                         gc->track ? &rs : NULL, y.p, NULL, NULL, &opts);
            break;
        case NK_LAYER_INSTANCE_NORM: {
            int use_input = s->training || !gc->track;
            st = nk_instance_norm(s->x, &sh, gc->weight, gc->bias, gc->eps, use_input,
                                  gc->track ? &rs : NULL, y.p, NULL, NULL, &opts);
            break;
        }
        case NK_LAYER_GROUP_NORM:
            st = nk_group_norm(s->x, &sh, gc->groups, gc->weight, gc->bias, gc->eps, y.p, NULL, NULL, &opts);
            break;
        default:
            st = nk_layer_norm(s->x, s->numel / C, C, gc->weight, gc->bias, gc->eps, y.p, NULL, NULL, &opts);
            break;
        }
        assert_true(nkt_guard_ok(&y));
        if (s->error) {
            check_error(st, s, what);
            check_untouched(&y, what);
            /* torch's Python module increments num_batches_tracked before
             * F.batch_norm raises; normkit leaves every running statistic
             * untouched on error (normkit.h). Align with torch to continue. */
            assert_int_equal(rs.num_batches_tracked, s->nbt - 1);
            rs.num_batches_tracked = s->nbt;
        } else {
            if (st != NK_OK)
                print_error("%s: status %d: %s\n", what, (int)st, nk_last_error());
            assert_int_equal(st, NK_OK);
            if (s->numel)
                check_output(gc, s, y.p, what);
        }
        if (gc->track) {
            check_running(gc, s, rm, rv, what);
            assert_int_equal(rs.num_batches_tracked, s->nbt);
        }
        nkt_free(&y);
    }
    free(rm);
    free(rv);
}

/* ------------------------------------------------------------------------ */
/* PyTorch module API                                                         */
/* ------------------------------------------------------------------------ */

static void run_module(void **state)
{
    const gold_case *gc = *state;
    const int64_t C = gc->c;
    nk_module_config cfg;
    nk_module_config_init(&cfg);
    cfg.eps = gc->eps;
    cfg.options.activation = gc->act;
    cfg.options.alpha = gc->alpha;
    if (gc->layer == NK_LAYER_BATCH_NORM || gc->layer == NK_LAYER_INSTANCE_NORM) {
        cfg.momentum = gc->cumulative ? NK_MOMENTUM_NONE : gc->momentum;
        cfg.track_running_stats = gc->track;
    }
    cfg.affine = gc->affine;
    if (gc->layer == NK_LAYER_GROUP_NORM)
        cfg.num_groups = gc->groups;
    if (gc->layer == NK_LAYER_LAYER_NORM) {
        cfg.normalized_ndim = gc->norm_ndim;
        for (int i = 0; i < gc->norm_ndim; i++)
            cfg.normalized_shape[i] = gc->norm_shape[i];
    }
    nk_module *m = NULL;
    nk_status st = nk_module_create(NK_FW_PYTORCH, gc->layer, gc->spatial_rank, C, &cfg, &m);
    if (st != NK_OK)
        print_error("%s: nk_module_create: %s\n", gc->name, nk_last_error());
    assert_int_equal(st, NK_OK);
    assert_int_equal(nk_module_training(m), 1); /* torch modules start in training mode */
    assert_int_equal(nk_module_param_size(m), C);
    assert_true(nk_module_eps(m) == gc->eps);
    if (gc->affine) {
        assert_non_null(nk_module_weight(m));
        assert_non_null(nk_module_bias(m));
        memcpy(nk_module_weight(m), gc->weight, (size_t)C * sizeof(float));
        memcpy(nk_module_bias(m), gc->bias, (size_t)C * sizeof(float));
    } else {
        assert_null(nk_module_weight(m));
        assert_null(nk_module_bias(m));
    }
    if (gc->track) {
        assert_non_null(nk_module_running_mean(m));
    } else {
        assert_null(nk_module_running_mean(m));
        assert_null(nk_module_running_var(m));
    }

    int64_t nbt_lag = 0; /* error steps: see below */
    for (int k = 0; k < gc->nsteps; k++) {
        const gold_step *s = &gc->steps[k];
        char what[160];
        snprintf(what, sizeof what, "%s module step %d (%s)", gc->name, k, s->training ? "train" : "eval");
        nkt_buf y = nkt_alloc((size_t)s->numel, (size_t)k % 4); /* guarded, misaligned by k */
        reset_out(&y);
        assert_int_equal(nk_module_set_training(m, s->training), NK_OK);
        st = nk_module_forward(m, s->x, s->ndim, s->dims, y.p);
        assert_true(nkt_guard_ok(&y));
        if (s->error) {
            check_error(st, s, what);
            check_untouched(&y, what);
            /* torch increments num_batches_tracked before raising; normkit
             * keeps running statistics untouched on error. */
            nbt_lag++;
        } else {
            if (st != NK_OK)
                print_error("%s: status %d: %s\n", what, (int)st, nk_last_error());
            assert_int_equal(st, NK_OK);
            if (s->numel)
                check_output(gc, s, y.p, what);
        }
        if (gc->track) {
            check_running(gc, s, nk_module_running_mean(m), nk_module_running_var(m), what);
            assert_int_equal(nk_module_num_batches_tracked(m), s->nbt - nbt_lag);
        }
        nkt_free(&y);
    }
    nk_module_destroy(m);
}

/* The data itself: a golden set that does not hold what it claims would make
 * every comparison above vacuous. */
static void golden_sanity(void **state)
{
    (void)state;
    int errors = 0, bn = 0, in = 0, gn = 0, ln = 0, cl = 0, act = 0;
    for (size_t i = 0; i < NCASES; i++) {
        const gold_case *gc = &gold_cases[i];
        assert_true(gc->nsteps >= 1);
        assert_true(gc->c >= 1);
        for (int k = 0; k < gc->nsteps; k++) {
            const gold_step *s = &gc->steps[k];
            errors += s->error != NULL;
            assert_true((s->y != NULL) == (s->error == NULL && s->numel > 0));
            assert_true((s->rmean != NULL) == (gc->track != 0));
        }
        bn += gc->layer == NK_LAYER_BATCH_NORM;
        in += gc->layer == NK_LAYER_INSTANCE_NORM;
        gn += gc->layer == NK_LAYER_GROUP_NORM;
        ln += gc->layer == NK_LAYER_LAYER_NORM;
        cl += gc->layout == NK_CHANNELS_LAST;
        act += gc->act != NK_ACT_NONE;
    }
    assert_int_equal(errors, 2);
    assert_true(bn >= 20 && in >= 10 && gn >= 6 && ln >= 6 && cl >= 10 && act >= 10);
}

int main(void)
{
    struct CMUnitTest *t = calloc(2 * NCASES + 1, sizeof *t);
    char (*names)[96] = calloc(2 * NCASES, sizeof *names);
    if (!t || !names)
        return 1;
    size_t nt = 0;
    t[nt++] = (struct CMUnitTest){"golden_sanity", golden_sanity, NULL, NULL, NULL};
    for (size_t i = 0; i < NCASES; i++) {
        const gold_case *gc = &gold_cases[i];
        snprintf(names[2 * i], sizeof names[0], "functional/%s", gc->name);
        t[nt++] = (struct CMUnitTest){names[2 * i], run_functional, NULL, NULL, (void *)gc};
        /* torch modules take channels-first input only: channels-last cases
         * are torch's NCHW computation permuted, for the functional API. */
        if (gc->layout == NK_CHANNELS_FIRST) {
            snprintf(names[2 * i + 1], sizeof names[0], "module/%s", gc->name);
            t[nt++] = (struct CMUnitTest){names[2 * i + 1], run_module, NULL, NULL, (void *)gc};
        }
    }
    printf("normkit ISA: %s\n", nk_isa_name(nk_get_isa()));
    int rc = _cmocka_run_group_tests("golden", t, nt, NULL, NULL);
    free(t);
    free(names);
    return rc;
}
