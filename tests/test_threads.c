/*
 * Concurrent first use: 16 threads, released together by a barrier, make the
 * process's first calls into the library (so the lazily initialised dispatch
 * table is set up under contention), each running a different operator. After
 * they join, every job runs again on this thread and its outputs must be
 * bit-identical. One job makes failing calls: the thread-local error message
 * must stay its own. Meant to run under ThreadSanitizer too (tools/tsan.sh).
 *
 * Nothing may call normkit before first_calls_race runs.
 */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "nk_test.h"

#define NTHREADS 16
#define N 3
#define C 24
#define S 257 /* odd: vector tails */
#define TOTAL (N * C * S)
#define OUT_FLOATS (TOTAL + 4 * N * C + 64)

typedef struct job {
    int id;
    const float *x, *w, *b;
    float *out;       /* everything the operator writes, flattened */
    nk_status st[4];  /* statuses of the calls it makes */
    char err[160];    /* nk_last_error() after its last call */
    int err_was_empty_after_success;
} job;

static void init_running(float *m, float *v)
{
    for (int c = 0; c < C; c++) {
        m[c] = 0.1f * (float)c;
        v[c] = 1.0f + 0.05f * (float)c;
    }
}

static void note_ok(job *j, nk_status st)
{
    if (st == NK_OK && nk_last_error()[0] != '\0')
        j->err_was_empty_after_success = 0;
}

static void run_job(job *j)
{
    const nk_shape cf = {N, C, S, NK_CHANNELS_FIRST}, cl = {N, C, S, NK_CHANNELS_LAST};
    const nk_options silu = {NK_ACT_SILU, 0.0f}, leaky = {NK_ACT_LEAKY_RELU, 0.1f};
    float *y = j->out, *extra = j->out + TOTAL;
    float *rm = extra, *rv = extra + C, *sm = extra + 2 * C, *si = extra + 2 * C + N * C;
    nk_running_stats rs = {rm, rv, 0.1, 0, 1, 7};
    nk_status st = NK_OK;
    j->err_was_empty_after_success = 1;
    switch (j->id) {
    case 0:
        init_running(rm, rv);
        st = nk_batch_norm_train(j->x, &cf, j->w, j->b, 1e-5, &rs, y, sm, si, NULL);
        break;
    case 1:
        init_running(rm, rv);
        rs.cumulative = 1;
        st = nk_batch_norm_train(j->x, &cl, j->w, j->b, 1e-5, &rs, y, sm, si, &silu);
        break;
    case 2:
        init_running(rm, rv);
        st = nk_batch_norm_infer(j->x, &cf, j->w, j->b, rm, rv, 1e-3, y, &leaky);
        break;
    case 3:
        init_running(rm, rv);
        st = nk_batch_norm_infer(j->x, &cl, NULL, NULL, rm, rv, 1e-3, y, NULL);
        break;
    case 4: {
        nk_moments mo[C];
        st = nk_batch_norm_stats(j->x, &cl, mo);
        for (int c = 0; c < C; c++) {
            extra[c] = (float)mo[c].mean;
            extra[C + c] = (float)mo[c].m2;
        }
        break;
    }
    case 5: {
        nk_moments mo[C];
        init_running(rm, rv);
        j->st[1] = nk_batch_norm_stats(j->x, &cf, mo);
        st = nk_batch_norm_apply_moments(j->x, &cf, mo, j->w, NULL, 1e-5, &rs, y, sm, si, NULL);
        break;
    }
    case 6:
        init_running(rm, rv);
        st = nk_instance_norm(j->x, &cf, j->w, j->b, 1e-5, 1, &rs, y, sm, si, NULL);
        break;
    case 7:
        st = nk_instance_norm(j->x, &cl, NULL, NULL, 1e-5, 1, NULL, y, sm, si, &silu);
        break;
    case 8:
        st = nk_group_norm(j->x, &cf, 6, j->w, j->b, 1e-5, y, sm, si, NULL);
        break;
    case 9:
        st = nk_group_norm(j->x, &cl, 4, j->w, j->b, 1e-5, y, sm, si, &leaky);
        break;
    case 10:
        st = nk_layer_norm(j->x, N * C, S, NULL, NULL, 1e-5, y, sm, si, NULL);
        break;
    case 11:
        st = nk_rms_norm(j->x, N * C, S, NULL, NK_RMS_EPS_DEFAULT, y, sm, NULL);
        break;
    case 12: {
        nk_moments m;
        st = nk_moments_compute(j->x, TOTAL, &m);
        extra[0] = (float)m.mean;
        extra[1] = (float)m.m2;
        extra[2] = (float)nk_moments_var(&m, 1);
        break;
    }
    case 13: {
        nk_module *m = NULL;
        const int64_t dims[4] = {N, C, 1, S};
        j->st[1] = nk_module_create(NK_FW_PYTORCH, NK_LAYER_BATCH_NORM, 2, C, NULL, &m);
        if (j->st[1] != NK_OK)
            break;
        st = nk_module_forward(m, j->x, 4, dims, y);
        memcpy(rm, nk_module_running_mean(m), C * sizeof(float));
        memcpy(rv, nk_module_running_var(m), C * sizeof(float));
        nk_module_destroy(m);
        break;
    }
    case 14: {
        nk_module *m = NULL;
        const int64_t dims[3] = {N, S, C};
        j->st[1] = nk_module_create(NK_FW_KERAS, NK_LAYER_LAYER_NORM, 1, C, NULL, &m);
        if (j->st[1] != NK_OK)
            break;
        st = nk_module_forward(m, j->x, 3, dims, y);
        nk_module_destroy(m);
        break;
    }
    default: {
        /* failing calls: this thread's message only */
        nk_shape bad = {N, 0, S, NK_CHANNELS_FIRST};
        j->st[1] = nk_batch_norm_train(j->x, &bad, NULL, NULL, 1e-5, NULL, y, NULL, NULL, NULL);
        j->st[2] = nk_layer_norm(j->x, 1, 0, NULL, NULL, 1e-5, y, NULL, NULL, NULL);
        extra[0] = (float)nk_get_isa();
        st = nk_group_norm(j->x, &cf, 5, NULL, NULL, 1e-5, y, NULL, NULL, NULL); /* 24 % 5 != 0 */
        break;
    }
    }
    j->st[0] = st;
    note_ok(j, st);
    strncpy(j->err, nk_last_error(), sizeof j->err - 1);
    j->err[sizeof j->err - 1] = '\0';
}

static pthread_barrier_t g_barrier;

static void *thread_main(void *arg)
{
    pthread_barrier_wait(&g_barrier);
    run_job((job *)arg);
    return NULL;
}

static float *make_input(void)
{
    float *x = malloc(TOTAL * sizeof(float));
    assert_non_null(x);
    /* deterministic data without calling the library */
    uint64_t s = 12345;
    for (int i = 0; i < TOTAL; i++) {
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        x[i] = (float)((int)(s >> 40 & 0xffff) - 32768) / 4096.0f + (float)(i % 7);
    }
    return x;
}

static void first_calls_race(void **state)
{
    (void)state;
    float *x = make_input();
    float w[C], b[C];
    for (int c = 0; c < C; c++) {
        w[c] = 0.5f + 0.03f * (float)c;
        b[c] = -0.25f + 0.01f * (float)c;
    }

    job jobs[NTHREADS], ref[NTHREADS];
    pthread_t th[NTHREADS];
    memset(jobs, 0, sizeof jobs);
    memset(ref, 0, sizeof ref);
    for (int i = 0; i < NTHREADS; i++) {
        jobs[i].id = ref[i].id = i;
        jobs[i].x = ref[i].x = x;
        jobs[i].w = ref[i].w = w;
        jobs[i].b = ref[i].b = b;
        jobs[i].out = calloc(OUT_FLOATS, sizeof(float));
        ref[i].out = calloc(OUT_FLOATS, sizeof(float));
        assert_non_null(jobs[i].out);
        assert_non_null(ref[i].out);
    }
    assert_int_equal(pthread_barrier_init(&g_barrier, NULL, NTHREADS), 0);
    for (int i = 0; i < NTHREADS; i++)
        assert_int_equal(pthread_create(&th[i], NULL, thread_main, &jobs[i]), 0);
    for (int i = 0; i < NTHREADS; i++)
        assert_int_equal(pthread_join(th[i], NULL), 0);
    pthread_barrier_destroy(&g_barrier);

    /* single-threaded references, computed only now */
    for (int i = 0; i < NTHREADS; i++)
        run_job(&ref[i]);

    for (int i = 0; i < NTHREADS; i++) {
        const job *j = &jobs[i], *r = &ref[i];
        if (i < NTHREADS - 1) {
            if (j->st[0] != NK_OK)
                print_error("job %d failed: %s\n", i, j->err);
            assert_int_equal(j->st[0], NK_OK);
            assert_true(j->err_was_empty_after_success);
            assert_string_equal(j->err, "");
        } else {
            assert_int_equal(j->st[1], NK_ERR_BAD_SHAPE);
            assert_int_equal(j->st[2], NK_ERR_BAD_SHAPE);
            assert_int_equal(j->st[0], NK_ERR_BAD_PARAM);
            assert_non_null(strstr(j->err, "num_groups"));
        }
        for (int k = 0; k < 4; k++)
            assert_int_equal(j->st[k], r->st[k]);
        assert_string_equal(j->err, r->err);
        if (memcmp(j->out, r->out, OUT_FLOATS * sizeof(float))) {
            for (int k = 0; k < OUT_FLOATS; k++)
                if (memcmp(&j->out[k], &r->out[k], sizeof(float))) {
                    print_error("job %d: float %d is %.9g threaded, %.9g alone\n", i, k,
                                (double)j->out[k], (double)r->out[k]);
                    break;
                }
            fail();
        }
    }
    for (int i = 0; i < NTHREADS; i++) {
        free(jobs[i].out);
        free(ref[i].out);
    }
    free(x);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(first_calls_race),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
