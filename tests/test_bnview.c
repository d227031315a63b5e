/*
 * BatchNorm on short spatial extents: (N, C) and (N, C, L) channels-first
 * inputs run on the column view (ops/common.c), like channels-last data.
 * Every path is checked against a float64 oracle: outputs, saved
 * statistics, running statistics, the per-channel moments of
 * nk_batch_norm_stats, and nk_batch_norm_apply_moments given those moments
 * must reproduce nk_batch_norm_train bit for bit.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nk_test.h"

typedef struct ref_stats {
    double *mean, *var; /* biased variance per channel */
} ref_stats;

static size_t at(const nk_shape *s, int64_t n, int64_t c, int64_t p)
{
    return s->layout == NK_CHANNELS_FIRST ? (size_t)((n * s->c + c) * s->spatial + p)
                                          : (size_t)((n * s->spatial + p) * s->c + c);
}

static void oracle_stats(const float *x, const nk_shape *s, ref_stats *r)
{
    for (int64_t c = 0; c < s->c; c++) {
        double sum = 0.0, m2 = 0.0, cnt = (double)(s->n * s->spatial);
        for (int64_t n = 0; n < s->n; n++)
            for (int64_t p = 0; p < s->spatial; p++)
                sum += x[at(s, n, c, p)];
        double mean = sum / cnt;
        for (int64_t n = 0; n < s->n; n++)
            for (int64_t p = 0; p < s->spatial; p++) {
                double d = x[at(s, n, c, p)] - mean;
                m2 += d * d;
            }
        r->mean[c] = mean;
        r->var[c] = m2 / cnt;
    }
}

static void close_to(double got, double want, double tol, const char *what, int64_t c)
{
    if (!(fabs(got - want) <= tol * (1.0 + fabs(want)))) {
        print_error("%s[%lld]: got %.9g, want %.9g\n", what, (long long)c, got, want);
        fail();
    }
}

static void check_shape(nkt_rng *r, const nk_shape *s, const nk_options *o)
{
    const size_t C = (size_t)s->c, total = (size_t)(s->n * s->c * s->spatial);
    const double cnt = (double)(s->n * s->spatial), eps = 1e-5, mom = 0.1;
    char what[128];
    snprintf(what, sizeof what, "[%lld, %lld, %lld] %s act %d", (long long)s->n, (long long)s->c,
             (long long)s->spatial, s->layout == NK_CHANNELS_FIRST ? "NCL" : "NLC", (int)o->activation);
    float *x = malloc(total * sizeof *x), *y = malloc(total * sizeof *y), *y2 = malloc(total * sizeof *y2);
    float *w = malloc(C * sizeof *w), *b = malloc(C * sizeof *b), *sm = malloc(C * sizeof *sm),
          *si = malloc(C * sizeof *si), *rm = malloc(C * sizeof *rm), *rv = malloc(C * sizeof *rv),
          *rm0 = malloc(C * sizeof *rm0), *rv0 = malloc(C * sizeof *rv0);
    double *ref = malloc(total * sizeof *ref);
    ref_stats rs = {malloc(C * sizeof(double)), malloc(C * sizeof(double))};
    nk_moments *mo = malloc(C * sizeof *mo);
    /* channel c has its own mean so a channel mix-up shows */
    for (int64_t n = 0; n < s->n; n++)
        for (int64_t c = 0; c < s->c; c++)
            for (int64_t p = 0; p < s->spatial; p++)
                x[at(s, n, c, p)] = (float)(0.25 * (double)(c % 13) - 1.0 + nkt_normal(r));
    nkt_fill(r, w, C, 1.0, 0.3);
    nkt_fill(r, b, C, 0.0, 0.3);
    nkt_fill(r, rm0, C, 0.0, 0.5);
    for (size_t c = 0; c < C; c++)
        rv0[c] = (float)(0.5 + nkt_uniform(r));
    memcpy(rm, rm0, C * sizeof *rm);
    memcpy(rv, rv0, C * sizeof *rv);
    oracle_stats(x, s, &rs);

    /* training: output, saved statistics, running statistics */
    nk_running_stats run = {rm, rv, mom, 0, 1, 0};
    assert_int_equal(nk_batch_norm_train(x, s, w, b, eps, &run, y, sm, si, o), NK_OK);
    nkt_oracle_norm(x, s, NKT_BN, 0, w, b, eps, o, ref);
    nkt_assert_close(y, ref, total, 2e-5, 2e-5, what);
    for (size_t c = 0; c < C; c++) {
        close_to(sm[c], rs.mean[c], 1e-6, "save_mean", (int64_t)c);
        close_to(si[c], 1.0 / sqrt(rs.var[c] + eps), 1e-5, "save_invstd", (int64_t)c);
        close_to(rm[c], mom * rs.mean[c] + (1 - mom) * rm0[c], 1e-6, "running_mean", (int64_t)c);
        close_to(rv[c], mom * rs.var[c] * cnt / (cnt - 1) + (1 - mom) * rv0[c], 1e-5, "running_var",
                 (int64_t)c);
    }

    /* per-channel moments, and the training step given them: bit-identical */
    assert_int_equal(nk_batch_norm_stats(x, s, mo), NK_OK);
    for (size_t c = 0; c < C; c++) {
        assert_true(mo[c].count == cnt);
        close_to(mo[c].mean, rs.mean[c], 1e-6, "moments mean", (int64_t)c);
        close_to(mo[c].m2 / cnt, rs.var[c], 1e-5, "moments var", (int64_t)c);
    }
    assert_int_equal(nk_batch_norm_apply_moments(x, s, mo, w, b, eps, NULL, y2, NULL, NULL, o), NK_OK);
    assert_memory_equal(y, y2, total * sizeof *y);

    /* inference from the running statistics */
    assert_int_equal(nk_batch_norm_infer(x, s, w, b, rm0, rv0, eps, y, o), NK_OK);
    for (int64_t n = 0; n < s->n; n++)
        for (int64_t c = 0; c < s->c; c++)
            for (int64_t p = 0; p < s->spatial; p++) {
                size_t i = at(s, n, c, p);
                double v = (x[i] - (double)rm0[c]) / sqrt((double)rv0[c] + eps) * w[c] + b[c];
                ref[i] = nkt_act(v, o);
            }
    nkt_assert_close(y, ref, total, 2e-5, 2e-5, what);

    free(x), free(y), free(y2), free(w), free(b), free(sm), free(si), free(rm), free(rv);
    free(rm0), free(rv0), free(ref), free(rs.mean), free(rs.var), free(mo);
}

/* Short spatial extents around the view's threshold, channel counts around
 * the vector widths, the widened rows (C * L <= 64) and several channel
 * blocks (C * L > 256). */
static void short_spatial_grid(void **state)
{
    (void)state;
    static const int64_t ns[] = {2, 3, 33};
    static const int64_t cs[] = {1, 3, 7, 16, 17, 29, 64, 100, 300};
    static const int64_t ss[] = {1, 2, 3, 5, 9, 16, 31, 32, 33};
    static const nk_options acts[] = {{NK_ACT_NONE, 0.0f}, {NK_ACT_RELU, 0.0f},
                                      {NK_ACT_LEAKY_RELU, 0.1f}, {NK_ACT_SILU, 0.0f}};
    nkt_rng r;
    nkt_seed(&r, 21);
    int k = 0;
    for (size_t i = 0; i < sizeof ns / sizeof ns[0]; i++)
        for (size_t j = 0; j < sizeof cs / sizeof cs[0]; j++)
            for (size_t l = 0; l < sizeof ss / sizeof ss[0]; l++, k++) {
                nk_shape s = {ns[i], cs[j], ss[l], NK_CHANNELS_FIRST};
                check_shape(&r, &s, &acts[k % 4]);
                if (ss[l] == 1 || ss[l] == 9) {
                    s.layout = NK_CHANNELS_LAST;
                    check_shape(&r, &s, &acts[(k + 1) % 4]);
                }
            }
}

/* The model shapes of the bench rows, and more rows than a moments chunk. */
static void model_shapes(void **state)
{
    (void)state;
    nkt_rng r;
    nkt_seed(&r, 22);
    static const nk_shape shapes[] = {{2048, 256, 1, NK_CHANNELS_FIRST},
                                      {64, 512, 1, NK_CHANNELS_FIRST},
                                      {32, 128, 9, NK_CHANNELS_FIRST},
                                      {1000, 5, 3, NK_CHANNELS_FIRST}};
    const nk_options none = {NK_ACT_NONE, 0.0f};
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++)
        check_shape(&r, &shapes[i], &none);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(short_spatial_grid),
        cmocka_unit_test(model_shapes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
