/*
 * normkit on the 16-bit PyTorch 1.13 goldens (tests/golden/torch_golden_lowp.h,
 * made by tests/gen_golden_lowp.py: bf16 activations with fp32 or bf16
 * parameters, BatchNorm1d/2d/3d, InstanceNorm1d/2d, GroupNorm, LayerNorm,
 * some with ReLU / SiLU / GELU), through the _ex operators (dtype bf16,
 * param_dtype as the case's) on every ISA this CPU runs, and through the
 * PyTorch module API with nk_module_set_dtype(NK_DTYPE_BF16) (channels-first
 * cases; the module's fp32 weight and bias hold the bf16 parameters exactly).
 *
 * A separate program from golden_lowp_check.c on purpose: that one checks the
 * header's own consistency with the headers alone (no library, native builds
 * only); this one links normkit and runs in every build, cross builds under
 * qemu included (the goldens are architecture-independent, normkit's kernels
 * are not).
 *
 * Checks, each step:
 *   - every output element within one bf16 ulp of the case's float64
 *     reference (gold_lp_ref_fill: the operation in float64 on the upcast
 *     input, parameters and, in eval, the running statistics torch held,
 *     rounded once), the bound of tests/test_dtype_ops.c;
 *   - where torch's own output is the correctly rounded result (steps with
 *     ndiff == 0: every step of bf16 x with fp32 parameters, BatchNorm and
 *     InstanceNorm without a twice-rounded activation), how many elements
 *     equal torch's bits is counted and printed; elsewhere torch is up to
 *     thousands of ulps off the reference (the header's table) and normkit is
 *     compared with the reference only;
 *   - the module's output equals the functional call's bit for bit;
 *   - running statistics: each functional step starts from the statistics
 *     torch held before it (the previous step's, exact in fp32), so the
 *     reference's eval inputs are normkit's. fp32 running statistics after a
 *     training step are compared with torch's within the fp32 goldens'
 *     tolerance (test_golden.c: 1e-6 absolute + 1e-6 relative), in the
 *     module too, which keeps its own chain of statistics across the training
 *     steps. bf16 running statistics (a module converted with .to(bfloat16))
 *     are rounded to bf16 by torch after every update, normkit keeps fp32
 *     ones: there normkit's fp32 update of torch's previous (bf16) values,
 *     rounded to bf16, must be within one bf16 ulp of torch's value (the
 *     number of exact ones is printed); the module is handed torch's
 *     statistics before every step, since its unrounded chain drifts from
 *     torch's rounded one by design. num_batches_tracked equals torch's.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/cvt.h"
#include "nk_test.h"
#include "golden/torch_golden_lowp.h"

#define NCASES (sizeof gold_lp_cases / sizeof gold_lp_cases[0])
#define GOLD_ATOL 1e-6 /* test_golden.c's fp32 tolerance */
#define GOLD_RTOL 1e-6

static long key16(uint16_t h) { return h & 0x8000u ? -(long)(h & 0x7fffu) : (long)h; }

static unsigned nk_dt(int gold_dt)
{
    return gold_dt == GOLD_LP_BF16 ? NK_DTYPE_BF16 : gold_dt == GOLD_LP_F16 ? NK_DTYPE_F16 : NK_DTYPE_F32;
}

static float to_f32(int gold_dt, uint16_t h)
{
    return gold_dt == GOLD_LP_F16 ? nk_f16_to_f32(h) : nk_bf16_to_f32(h);
}

static uint16_t to_16(int gold_dt, float f)
{
    return gold_dt == GOLD_LP_F16 ? nk_f32_to_f16(f) : nk_f32_to_bf16(f);
}

/* a per-channel array as fp32 (exact) */
static void array_f32(int gold_dt, gold_lp_array a, int64_t n, float *out)
{
    for (int64_t i = 0; i < n; i++)
        out[i] = gold_dt == GOLD_LP_F32 ? a.f32[i] : to_f32(gold_dt, a.u16[i]);
}

/* Totals over the run, printed at the end. */
static struct {
    uint64_t elements, exact, one;       /* against the reference */
    uint64_t gelu_tail;                  /* more than 1 ulp, in GELU's tail */
    uint64_t torch_exact_elements, same_as_torch;
    uint64_t stats32;                    /* fp32 running statistics */
    uint64_t stats16, stats16_same, stats16_torch_rounded; /* bf16 ones */
    double stats16_torch_maxerr;
} tot;

static void check_output(const gold_lp_case *gc, const gold_lp_step *s, const uint16_t *y,
                         const char *what)
{
    uint16_t *ref = malloc((size_t)s->numel * sizeof *ref);
    assert_non_null(ref);
    gold_lp_ref_fill(s, ref);
    int64_t bad = 0;
    for (int64_t i = 0; i < s->numel; i++) {
        const long d = labs(key16(y[i]) - key16(ref[i]));
        tot.elements++;
        tot.exact += d == 0;
        tot.one += d == 1;
        if (d > 1 && (gc->act == NK_ACT_GELU_ERF || gc->act == NK_ACT_GELU_TANH)) {
            /* GELU's negative tail: 1 + erf(x / sqrt 2) cancels in fp32,
             * an absolute error of a few fp32 ulps of 1 times |x| / 2
             * (test_dtype_ops.c's fp32 window); torch is 120 ulps off here */
            const double r = to_f32(gc->act_dtype, ref[i]), v = to_f32(gc->act_dtype, y[i]);
            if (fabs(r) < 0x1p-16 && fabs(v - r) <= 0x1p-20) {
                tot.gelu_tail++;
                continue;
            }
        }
        if (d > 1 && bad++ < 5)
            print_error("%s: y[%lld] = 0x%04x (%.9g), reference 0x%04x (%.9g), torch 0x%04x: %ld ulps\n",
                        what, (long long)i, y[i], (double)to_f32(gc->act_dtype, y[i]), ref[i],
                        (double)to_f32(gc->act_dtype, ref[i]), s->y[i], d);
    }
    if (s->ndiff == 0) { /* torch is correctly rounded here */
        tot.torch_exact_elements += (uint64_t)s->numel;
        for (int64_t i = 0; i < s->numel; i++)
            tot.same_as_torch += y[i] == s->y[i];
    }
    free(ref);
    if (bad) {
        print_error("%s: %lld of %lld elements more than 1 ulp from the reference\n", what,
                    (long long)bad, (long long)s->numel);
        fail();
    }
}

/* The float64 update of the running statistics from torch's previous ones
 * (prm / prv, exact) and step s's exactly converted input: BatchNorm
 * (1 - mom) r + mom stat over the channel; InstanceNorm the same per
 * (n, c), then the mean over n (what torch does); var unbiased. */
static void stats_reference(const gold_lp_case *gc, const gold_lp_step *s, const float *prm,
                            const float *prv, double *rm, double *rv)
{
    const int64_t C = gc->c, S = s->spatial, N = s->n;
    const int in = gc->layer == NK_LAYER_INSTANCE_NORM;
    const double mom = gc->cumulative ? 1.0 / (double)s->nbt : gc->momentum;
    for (int64_t c = 0; c < C; c++) {
        double mean_acc = 0, var_acc = 0;
        const int64_t sets = in ? N : 1, per = in ? S : N * S;
        for (int64_t q = 0; q < sets; q++) {
            double sum = 0, m2 = 0;
            for (int pass = 0; pass < 2; pass++)
                for (int64_t j = 0; j < per; j++) {
                    const int64_t n = in ? q : j / S, p = in ? j : j % S;
                    const int64_t i = gc->layout == NK_CHANNELS_FIRST ? (n * C + c) * S + p : (n * S + p) * C + c;
                    const double x = to_f32(gc->act_dtype, s->x[i]);
                    if (pass == 0)
                        sum += x;
                    else
                        m2 += (x - sum / (double)per) * (x - sum / (double)per);
                }
            mean_acc += sum / (double)per;
            var_acc += m2 / (double)(per - 1);
        }
        rm[c] = (1.0 - mom) * prm[c] + mom * (mean_acc / (double)sets);
        rv[c] = (1.0 - mom) * prv[c] + mom * (var_acc / (double)sets);
    }
}

/* rm / rv: normkit's running statistics after step k (which started from
 * torch's before it, prm / prv) */
static void check_running(const gold_lp_case *gc, int k, const float *prm, const float *prv,
                          const float *rm, const float *rv, const char *what)
{
    const gold_lp_step *s = &gc->steps[k];
    const gold_lp_array *want[2] = {&s->rmean, &s->rvar};
    const float *got[2] = {rm, rv};
    double *ref[2] = {calloc((size_t)gc->c, sizeof(double)), calloc((size_t)gc->c, sizeof(double))};
    assert_true(ref[0] && ref[1]);
    stats_reference(gc, s, prm, prv, ref[0], ref[1]);
    for (int j = 0; j < 2; j++)
        for (int64_t c = 0; c < gc->c; c++) {
            /* fp32: torch's values; bf16: the float64 update (torch's bf16
             * values are counted only) */
            const double r = gc->stats_dtype == GOLD_LP_F32 ? want[j]->f32[c] : ref[j][c], v = got[j][c];
            if (!(fabs(v - r) <= GOLD_ATOL + GOLD_RTOL * fabs(r))) {
                print_error("%s: running_%s[%lld] = %.9g, %s %.9g\n", what, j ? "var" : "mean",
                            (long long)c, v, gc->stats_dtype == GOLD_LP_F32 ? "torch" : "float64 update", r);
                fail();
            }
            if (gc->stats_dtype == GOLD_LP_F32) {
                tot.stats32++;
                continue;
            }
            const uint16_t t = want[j]->u16[c];
            tot.stats16++;
            tot.stats16_same += to_16(gc->stats_dtype, got[j][c]) == t;
            tot.stats16_torch_rounded += to_16(gc->stats_dtype, (float)r) == t; /* near enough: r is fp32-rounded first */
            const double te = fabs((double)to_f32(gc->stats_dtype, t) - r);
            tot.stats16_torch_maxerr = te > tot.stats16_torch_maxerr ? te : tot.stats16_torch_maxerr;
        }
    free(ref[0]);
    free(ref[1]);
}

/* torch's running statistics before step k (its initial 0 / 1 for k == 0) */
static void stats_before(const gold_lp_case *gc, int k, float *rm, float *rv)
{
    if (k == 0) {
        for (int64_t c = 0; c < gc->c; c++) {
            rm[c] = 0.0f;
            rv[c] = 1.0f;
        }
        return;
    }
    array_f32(gc->stats_dtype, gc->steps[k - 1].rmean, gc->c, rm);
    array_f32(gc->stats_dtype, gc->steps[k - 1].rvar, gc->c, rv);
}

/* The step through the _ex operators into y; rm / rv hold torch's statistics
 * before the step and are updated. */
static nk_status run_step(const gold_lp_case *gc, const gold_lp_step *s, uint16_t *y, float *rm,
                          float *rv, int64_t *nbt)
{
    nk_tensor_desc d = NK_TENSOR_DESC_INIT;
    d.dtype = nk_dt(gc->act_dtype);
    d.param_dtype = gc->param_dtype == GOLD_LP_NONE ? NK_DTYPE_F32 : nk_dt(gc->param_dtype);
    d.activation = gc->act;
    d.alpha = gc->alpha;
    const void *w = NULL, *b = NULL;
    if (gc->affine) {
        w = gc->param_dtype == GOLD_LP_F32 ? (const void *)gc->weight.f32 : gc->weight.u16;
        b = gc->param_dtype == GOLD_LP_F32 ? (const void *)gc->bias.f32 : gc->bias.u16;
    }
    nk_running_stats rs = {rm, rv, gc->momentum, gc->cumulative, 1, *nbt};
    nk_status st;
    if (gc->layer == NK_LAYER_LAYER_NORM) {
        d.layout = NK_CHANNELS_LAST;
        d.n = s->numel / gc->c;
        d.c = gc->c;
        d.spatial = 1;
        return nk_layer_norm_ex(NULL, &d, s->x, y, w, b, gc->eps, NULL, NULL);
    }
    d.layout = (uint32_t)gc->layout;
    d.n = s->n;
    d.c = gc->c;
    d.spatial = s->spatial;
    switch (gc->layer) {
    case NK_LAYER_BATCH_NORM:
        if (gc->track && !s->training)
            st = nk_batch_norm_infer_ex(NULL, &d, s->x, y, w, b, rm, rv, gc->eps);
        else
            st = nk_batch_norm_train_ex(NULL, &d, s->x, y, w, b, gc->eps, gc->track ? &rs : NULL,
                                        NULL, NULL);
        break;
    case NK_LAYER_INSTANCE_NORM:
        st = nk_instance_norm_ex(NULL, &d, s->x, y, w, b, gc->eps, s->training || !gc->track,
                                 gc->track ? &rs : NULL, NULL, NULL);
        break;
    default: st = nk_group_norm_ex(NULL, &d, s->x, y, gc->groups, w, b, gc->eps, NULL, NULL); break;
    }
    *nbt = rs.num_batches_tracked;
    return st;
}

static void run_functional(void **state)
{
    const gold_lp_case *gc = *state;
    nk_isa isas[4];
    int nisa = 0;
    const nk_isa orig = nk_get_isa();
    for (int i = NK_ISA_SCALAR; i <= NK_ISA_NEON; i++)
        if (nk_isa_supported((nk_isa)i))
            isas[nisa++] = (nk_isa)i;
    float *rm = calloc((size_t)gc->c, sizeof *rm), *rv = calloc((size_t)gc->c, sizeof *rv);
    float *prm = calloc((size_t)gc->c, sizeof *rm), *prv = calloc((size_t)gc->c, sizeof *rv);
    assert_true(rm && rv && prm && prv);
    for (int ii = 0; ii < nisa; ii++) {
        assert_int_equal(nk_set_isa(isas[ii]), NK_OK);
        for (int k = 0; k < gc->nsteps; k++) {
            const gold_lp_step *s = &gc->steps[k];
            char what[160];
            snprintf(what, sizeof what, "%s step %d (%s) isa %s", gc->name, k,
                     s->training ? "train" : "eval", nk_isa_name(isas[ii]));
            uint16_t *y = calloc((size_t)s->numel, sizeof *y);
            assert_non_null(y);
            int64_t nbt = k ? gc->steps[k - 1].nbt : 0;
            if (gc->track) {
                stats_before(gc, k, rm, rv);
                stats_before(gc, k, prm, prv);
            }
            nk_status st = run_step(gc, s, y, rm, rv, &nbt);
            if (st != NK_OK)
                print_error("%s: status %d: %s\n", what, (int)st, nk_last_error());
            assert_int_equal(st, NK_OK);
            check_output(gc, s, y, what);
            if (gc->track && s->training && gc->layer == NK_LAYER_BATCH_NORM)
                assert_true(nbt == s->nbt);
            if (gc->track && s->training)
                check_running(gc, k, prm, prv, rm, rv, what);
            free(y);
        }
    }
    assert_int_equal(nk_set_isa(orig), NK_OK);
    free(rm);
    free(rv);
    free(prm);
    free(prv);
}

static void run_module(void **state)
{
    const gold_lp_case *gc = *state;
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
    assert_int_equal(nk_module_set_dtype(m, nk_dt(gc->act_dtype)), NK_OK);
    if (gc->affine) {
        array_f32(gc->param_dtype, gc->weight, C, nk_module_weight(m));
        array_f32(gc->param_dtype, gc->bias, C, nk_module_bias(m));
    }
    float *rm = calloc((size_t)C, sizeof *rm), *rv = calloc((size_t)C, sizeof *rv);
    float *prm = calloc((size_t)C, sizeof *rm), *prv = calloc((size_t)C, sizeof *rv);
    assert_true(rm && rv && prm && prv);
    for (int k = 0; k < gc->nsteps; k++) {
        const gold_lp_step *s = &gc->steps[k];
        char what[160];
        snprintf(what, sizeof what, "%s module step %d (%s)", gc->name, k, s->training ? "train" : "eval");
        uint16_t *y = calloc((size_t)s->numel, sizeof *y), *yf = calloc((size_t)s->numel, sizeof *yf);
        assert_true(y && yf);
        if (gc->track) /* what the module starts from */
            stats_before(gc, k, prm, prv);
        if (gc->track && (gc->stats_dtype != GOLD_LP_F32 || !s->training)) {
            /* torch's statistics (see the header) */
            memcpy(nk_module_running_mean(m), prm, (size_t)C * sizeof(float));
            memcpy(nk_module_running_var(m), prv, (size_t)C * sizeof(float));
            if (gc->layer == NK_LAYER_BATCH_NORM)
                assert_int_equal(nk_module_set_num_batches_tracked(m, k ? gc->steps[k - 1].nbt : 0), NK_OK);
        } else if (gc->track) {
            memcpy(prm, nk_module_running_mean(m), (size_t)C * sizeof(float));
            memcpy(prv, nk_module_running_var(m), (size_t)C * sizeof(float));
        }
        assert_int_equal(nk_module_set_training(m, s->training), NK_OK);
        st = nk_module_forward(m, s->x, s->ndim, s->dims, y);
        if (st != NK_OK)
            print_error("%s: status %d: %s\n", what, (int)st, nk_last_error());
        assert_int_equal(st, NK_OK);
        check_output(gc, s, y, what);
        /* the functional call on torch's statistics gives the same bits */
        int64_t nbt = k ? gc->steps[k - 1].nbt : 0;
        if (gc->track)
            stats_before(gc, k, rm, rv);
        assert_int_equal(run_step(gc, s, yf, rm, rv, &nbt), NK_OK);
        if (memcmp(y, yf, (size_t)s->numel * sizeof *y)) {
            print_error("%s: the module's output differs from the functional call's\n", what);
            fail();
        }
        if (gc->track && s->training) {
            check_running(gc, k, prm, prv, nk_module_running_mean(m), nk_module_running_var(m), what);
            if (gc->layer == NK_LAYER_BATCH_NORM)
                assert_true(nk_module_num_batches_tracked(m) == s->nbt);
        }
        free(y);
        free(yf);
    }
    nk_module_destroy(m);
    free(rm);
    free(rv);
    free(prm);
    free(prv);
}

/* Runs last: the totals, and at least 99% of the elements exactly the
 * reference (a store that truncated would keep every element within 1 ulp
 * and miss this by half). */
static void totals(void **state)
{
    (void)state;
    printf("normkit against the bf16 goldens (every ISA, functional and module calls):\n"
           "  %llu elements: %.3f%% the correctly rounded reference, %llu 1 ulp from it, %llu in "
           "GELU's negative tail within 2^-20\n"
           "  where torch is correctly rounded: %llu of %llu elements equal torch's bits\n"
           "  running statistics: %llu fp32 values within 1e-6 of torch's; %llu bf16 module "
           "values (fp32 in normkit) within 1e-6 of the float64 update, rounded to bf16 %llu equal "
           "torch's; torch's bf16 values: %llu the rounded float64 update, max error %.3g\n",
           (unsigned long long)tot.elements, 100.0 * (double)tot.exact / (double)(tot.elements ? tot.elements : 1),
           (unsigned long long)tot.one, (unsigned long long)tot.gelu_tail,
           (unsigned long long)tot.same_as_torch,
           (unsigned long long)tot.torch_exact_elements, (unsigned long long)tot.stats32,
           (unsigned long long)tot.stats16, (unsigned long long)tot.stats16_same,
           (unsigned long long)tot.stats16_torch_rounded, tot.stats16_torch_maxerr);
    assert_true(tot.elements > 0);
    assert_true((double)tot.exact >= 0.99 * (double)tot.elements);
}

int main(void)
{
    struct CMUnitTest *t = calloc(2 * NCASES + 1, sizeof *t);
    char (*names)[96] = calloc(2 * NCASES, sizeof *names);
    if (!t || !names)
        return 1;
    size_t nt = 0;
    for (size_t i = 0; i < NCASES; i++) {
        const gold_lp_case *gc = &gold_lp_cases[i];
        snprintf(names[2 * i], sizeof names[0], "functional/%s", gc->name);
        t[nt++] = (struct CMUnitTest){names[2 * i], run_functional, NULL, NULL, (void *)gc};
        if (gc->layout == NK_CHANNELS_FIRST) { /* torch modules take channels-first input */
            snprintf(names[2 * i + 1], sizeof names[0], "module/%s", gc->name);
            t[nt++] = (struct CMUnitTest){names[2 * i + 1], run_module, NULL, NULL, (void *)gc};
        }
    }
    t[nt++] = (struct CMUnitTest){"totals", totals, NULL, NULL, NULL};
    printf("normkit ISA: %s\n", nk_isa_name(nk_get_isa()));
    int rc = _cmocka_run_group_tests("golden_lowp_ops", t, nt, NULL, NULL);
    free(t);
    free(names);
    return rc;
}
