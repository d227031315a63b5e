/*
 * normkit-speed: times operator shapes through the public API against a
 * memcpy of the same bytes (the read+write ceiling of a memory-bound
 * operator) and prints memcpy_time / op_time per ISA. Op and memcpy runs are
 * interleaved and the median of each is taken, so machine noise hits both.
 *
 *   normkit-speed [reps] [shape-substring] [isa]
 *
 * NORMKIT_SPEED_MIN=1 takes the fastest sample of each instead of the median:
 * steadier on a machine shared with other work. NORMKIT_SPEED_THREADS=T runs
 * the operators through the _ex entry points on an nk_threadpool_create(T)
 * pool and the memcpy in T slices on the same pool (the T-thread ceiling).
 * NORMKIT_SPEED_DTYPE=bf16|f16 runs x and y in that dtype (fp32 weight and
 * bias) through the _ex entry points, against a memcpy of the 16-bit bytes.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "normkit.h"

/* LN_CF, RMS_CF: channels-first (n, c, s), through the _ex entry points */
enum { IN, BN_TRAIN, BN_INFER, GN, LN, RMS, LN_CF, RMS_CF };

typedef struct shape_case {
    const char *name;
    int op;
    int64_t n, c, s; /* LN/RMS: rows = n, cols = c */
    int layout;
    int64_t groups;
} shape_case;

static const shape_case cases[] = {
    {"InstanceNorm2d 1x64x256x256", IN, 1, 64, 256 * 256, NK_CHANNELS_FIRST, 0},
    {"InstanceNorm2d 1x32x56x56", IN, 1, 32, 56 * 56, NK_CHANNELS_FIRST, 0},
    {"InstanceNorm1d 8x80x1000", IN, 8, 80, 1000, NK_CHANNELS_FIRST, 0},
    {"InstanceNorm3d 1x32x64x64x64", IN, 1, 32, 64 * 64 * 64, NK_CHANNELS_FIRST, 0},
    {"BatchNorm2d train 32x64x56x56 NCHW", BN_TRAIN, 32, 64, 56 * 56, NK_CHANNELS_FIRST, 0},
    {"BatchNorm2d train 32x64x56x56 NHWC", BN_TRAIN, 32, 64, 56 * 56, NK_CHANNELS_LAST, 0},
    {"BatchNorm2d infer 32x64x56x56 NCHW", BN_INFER, 32, 64, 56 * 56, NK_CHANNELS_FIRST, 0},
    {"BatchNorm2d infer 32x64x56x56 NHWC", BN_INFER, 32, 64, 56 * 56, NK_CHANNELS_LAST, 0},
    {"BatchNorm1d train 2048x256", BN_TRAIN, 2048, 256, 1, NK_CHANNELS_FIRST, 0},
    {"BatchNorm1d infer 2048x256", BN_INFER, 2048, 256, 1, NK_CHANNELS_FIRST, 0},
    {"BatchNorm1d train 64x512", BN_TRAIN, 64, 512, 1, NK_CHANNELS_FIRST, 0},
    {"BatchNorm1d infer 64x512", BN_INFER, 64, 512, 1, NK_CHANNELS_FIRST, 0},
    {"BatchNorm1d train 32x128x9", BN_TRAIN, 32, 128, 9, NK_CHANNELS_FIRST, 0},
    {"BatchNorm1d infer 32x128x9", BN_INFER, 32, 128, 9, NK_CHANNELS_FIRST, 0},
    {"BatchNorm NLC train 64x512", BN_TRAIN, 64, 512, 1, NK_CHANNELS_LAST, 0},
    {"BatchNorm NLC infer 64x512", BN_INFER, 64, 512, 1, NK_CHANNELS_LAST, 0},
    {"GroupNorm G32 2x320x64x64", GN, 2, 320, 64 * 64, NK_CHANNELS_FIRST, 32},
    {"LayerNorm 2048x768", LN, 2048, 768, 1, 0, 0},
    {"LayerNorm 512x4096", LN, 512, 4096, 1, 0, 0},
    {"RMSNorm 512x4096", RMS, 512, 4096, 1, 0, 0},
    /* short groups: the per-group cost */
    {"LayerNorm 8192x16", LN, 8192, 16, 1, 0, 0},
    {"LayerNorm 50176x16", LN, 50176, 16, 1, 0, 0},
    {"LayerNorm 50176x64", LN, 50176, 64, 1, 0, 0},
    {"RMSNorm 8192x16", RMS, 8192, 16, 1, 0, 0},
    {"LayerNorm 1x4096", LN, 1, 4096, 1, 0, 0},
    {"RMSNorm 1x4096", RMS, 1, 4096, 1, 0, 0},
    /* ConvNeXt's LayerNorm2d (channels_first), and the same bytes as rows */
    {"LayerNorm2d channels-first 1x96x56x56", LN_CF, 1, 96, 56 * 56, NK_CHANNELS_FIRST, 0},
    {"LayerNorm2d channels-first 1x768x7x7", LN_CF, 1, 768, 49, NK_CHANNELS_FIRST, 0},
    {"RMSNorm channels-first 1x96x56x56", RMS_CF, 1, 96, 56 * 56, NK_CHANNELS_FIRST, 0},
    {"LayerNorm 3136x96", LN, 3136, 96, 1, 0, 0},
    {"InstanceNorm2d 1x256x7x7", IN, 1, 256, 49, NK_CHANNELS_FIRST, 0},
    {"InstanceNorm2d 1x64x14x14", IN, 1, 64, 196, NK_CHANNELS_FIRST, 0},
    {"BatchNorm2d infer 1x512x7x7", BN_INFER, 1, 512, 49, NK_CHANNELS_FIRST, 0},
    {"BatchNorm2d infer 1x1024x7x7", BN_INFER, 1, 1024, 49, NK_CHANNELS_FIRST, 0},
};

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

typedef struct bufs {
    float *x, *y, *w, *b, *rm, *rv;
} bufs;

static nk_threadpool *g_pool;
static nk_context g_ctx = NK_CONTEXT_INIT;
static uint32_t g_dtype = NK_DTYPE_F32;

/* The same call through the _ex entry points and the pool. */
static nk_status run_ex(const shape_case *sc, const bufs *B)
{
    nk_tensor_desc d = NK_TENSOR_DESC_INIT;
    d.n = sc->n;
    d.c = sc->c;
    d.spatial = sc->s;
    d.layout = (uint32_t)sc->layout;
    d.dtype = g_dtype;
    switch (sc->op) {
    case IN:
        return nk_instance_norm_ex(&g_ctx, &d, B->x, B->y, B->w, B->b, 1e-5, 1, NULL, NULL, NULL);
    case BN_TRAIN:
        return nk_batch_norm_train_ex(&g_ctx, &d, B->x, B->y, B->w, B->b, 1e-5, NULL, NULL, NULL);
    case BN_INFER:
        return nk_batch_norm_infer_ex(&g_ctx, &d, B->x, B->y, B->w, B->b, B->rm, B->rv, 1e-5);
    case GN:
        return nk_group_norm_ex(&g_ctx, &d, B->x, B->y, sc->groups, B->w, B->b, 1e-5, NULL, NULL);
    case LN:
        d.layout = NK_CHANNELS_LAST;
        return nk_layer_norm_ex(&g_ctx, &d, B->x, B->y, B->w, B->b, 1e-5, NULL, NULL);
    case LN_CF:
        return nk_layer_norm_ex(&g_ctx, &d, B->x, B->y, B->w, B->b, 1e-6, NULL, NULL);
    case RMS_CF:
        return nk_rms_norm_ex(&g_ctx, &d, B->x, B->y, B->w, 1e-6, NULL);
    default:
        d.layout = NK_CHANNELS_LAST;
        return nk_rms_norm_ex(&g_ctx, &d, B->x, B->y, B->w, 1e-6, NULL);
    }
}

typedef struct copy_job {
    void *dst;
    const void *src;
    size_t bytes, parts;
} copy_job;

static void copy_part(void *arg, size_t i)
{
    const copy_job *j = arg;
    size_t per = (j->bytes / j->parts + 63) & ~(size_t)63, lo = i * per;
    if (lo < j->bytes)
        memcpy((char *)j->dst + lo, (const char *)j->src + lo, j->bytes - lo < per ? j->bytes - lo : per);
}

/* memcpy in one slice per pool thread (the whole pool moving the bytes), or
 * in the calling thread. */
static void copy_all(void *dst, const void *src, size_t bytes, int pooled)
{
    if (!pooled || !g_pool) {
        memcpy(dst, src, bytes);
        return;
    }
    copy_job j = {dst, src, bytes, g_pool->num_threads(g_pool->ctx)};
    g_pool->parallel_for(g_pool->ctx, copy_part, &j, j.parts);
}

static void run_op(const shape_case *sc, const bufs *B)
{
    nk_shape sh = {sc->n, sc->c, sc->s, (nk_layout)sc->layout};
    nk_status st = NK_OK;
    if (g_pool || g_dtype != NK_DTYPE_F32 || sc->op >= LN_CF) {
        st = run_ex(sc, B);
        if (st != NK_OK) {
            fprintf(stderr, "%s: %s\n", sc->name, nk_last_error());
            exit(1);
        }
        return;
    }
    switch (sc->op) {
    case IN:
        st = nk_instance_norm(B->x, &sh, B->w, B->b, 1e-5, 1, NULL, B->y, NULL, NULL, NULL);
        break;
    case BN_TRAIN:
        st = nk_batch_norm_train(B->x, &sh, B->w, B->b, 1e-5, NULL, B->y, NULL, NULL, NULL);
        break;
    case BN_INFER:
        st = nk_batch_norm_infer(B->x, &sh, B->w, B->b, B->rm, B->rv, 1e-5, B->y, NULL);
        break;
    case GN:
        st = nk_group_norm(B->x, &sh, sc->groups, B->w, B->b, 1e-5, B->y, NULL, NULL, NULL);
        break;
    case LN:
        st = nk_layer_norm(B->x, sc->n, sc->c, B->w, B->b, 1e-5, B->y, NULL, NULL, NULL);
        break;
    case RMS:
        st = nk_rms_norm(B->x, sc->n, sc->c, B->w, 1e-6, B->y, NULL, NULL);
        break;
    }
    if (st != NK_OK) {
        fprintf(stderr, "%s: %s\n", sc->name, nk_last_error());
        exit(1);
    }
}

int main(int argc, char **argv)
{
    int reps = argc > 1 ? atoi(argv[1]) : 21;
    const char *filter = argc > 2 && *argv[2] ? argv[2] : NULL;
    const char *only = argc > 3 ? argv[3] : NULL;
    if (reps < 1)
        reps = 1;
    const int use_min = getenv("NORMKIT_SPEED_MIN") != NULL;
    const char *threads = getenv("NORMKIT_SPEED_THREADS");
    const char *dtype = getenv("NORMKIT_SPEED_DTYPE");
    if (dtype && !strcmp(dtype, "bf16"))
        g_dtype = NK_DTYPE_BF16;
    else if (dtype && !strcmp(dtype, "f16"))
        g_dtype = NK_DTYPE_F16;
    else if (dtype && strcmp(dtype, "f32")) {
        fprintf(stderr, "NORMKIT_SPEED_DTYPE: f32, bf16 or f16, not %s\n", dtype);
        return 1;
    }
    const size_t esz = g_dtype == NK_DTYPE_F32 ? sizeof(float) : sizeof(uint16_t);
    if (threads && atoi(threads) > 1) {
        if (nk_threadpool_create(atoi(threads), &g_pool) != NK_OK) {
            fprintf(stderr, "nk_threadpool_create: %s\n", nk_last_error());
            return 1;
        }
        g_ctx.pool = g_pool;
    }
    const nk_isa isas[] = {NK_ISA_SCALAR, NK_ISA_AVX2, NK_ISA_AVX512, NK_ISA_NEON};
    double *top = malloc((size_t)reps * sizeof *top), *tmc = malloc((size_t)reps * sizeof *tmc);
    if (!top || !tmc)
        return 1;
    printf("%-36s %-7s %9s %9s %7s\n", "shape", "isa", "op GB/s", "cpy GB/s", "ratio");
    for (size_t ci = 0; ci < sizeof cases / sizeof cases[0]; ci++) {
        const shape_case *sc = &cases[ci];
        if (filter && !strstr(sc->name, filter))
            continue;
        size_t total = (size_t)(sc->n * sc->c * sc->s);
        size_t bytes = total * esz;
        size_t C = (size_t)sc->c;
        bufs B;
        B.x = aligned_alloc(64, total * sizeof(float));
        B.y = aligned_alloc(64, total * sizeof(float));
        B.w = malloc(C * sizeof(float));
        B.b = malloc(C * sizeof(float));
        B.rm = malloc(C * sizeof(float));
        B.rv = malloc(C * sizeof(float));
        float *y2 = aligned_alloc(64, bytes);
        if (!B.x || !B.y || !B.w || !B.b || !B.rm || !B.rv || !y2)
            return 1;
        uint64_t s = 88172645463325252ull;
        for (size_t i = 0; i < total; i++) {
            s ^= s << 13, s ^= s >> 7, s ^= s << 17;
            B.x[i] = (float)(s >> 40) * (1.0f / 16777216.0f) * 4.0f - 1.0f;
        }
        if (g_dtype != NK_DTYPE_F32) {
            /* 16-bit values in place: bf16 keeps the high half of the fp32
             * bits; fp16 gets random normal values in [0.25, 4) of either sign */
            uint16_t *h = (uint16_t *)B.x;
            for (size_t i = 0; i < total; i++) {
                uint32_t u;
                memcpy(&u, &B.x[i], sizeof u);
                s ^= s << 13, s ^= s >> 7, s ^= s << 17;
                h[i] = g_dtype == NK_DTYPE_BF16
                           ? (uint16_t)(u >> 16)
                           : (uint16_t)(((s >> 20) & 0x8000u) | ((13u + (s >> 40) % 4u) << 10) |
                                        ((s >> 8) & 0x3ffu));
            }
        }
        memset(B.y, 0, bytes);
        memset(y2, 0, bytes);
        for (size_t c = 0; c < C; c++) {
            B.w[c] = 1.0f + 0.01f * (float)(c % 7);
            B.b[c] = 0.1f * (float)(c % 5);
            B.rm[c] = 0.01f * (float)(c % 3);
            B.rv[c] = 1.0f + 0.1f * (float)(c % 4);
        }
        for (size_t ii = 0; ii < sizeof isas / sizeof isas[0]; ii++) {
            if (only && strcmp(only, nk_isa_name(isas[ii])))
                continue;
            if (nk_set_isa(isas[ii]) != NK_OK)
                continue;
            /* inner repetitions so one sample takes a few milliseconds */
            int inner = (int)(((size_t)32 << 20) / bytes) + 1;
            run_op(sc, &B);
            copy_all(y2, B.x, bytes, 1);
            for (int r = 0; r < reps; r++) {
                double t0 = now();
                for (int k = 0; k < inner; k++)
                    run_op(sc, &B);
                double t1 = now();
                for (int k = 0; k < inner; k++) {
                    copy_all(y2, B.x, bytes, 0);
                    __asm__ volatile("" : : "r"(y2) : "memory");
                }
                double t2 = now();
                top[r] = (t1 - t0) / inner;
                tmc[r] = (t2 - t1) / inner;
                if (g_pool) {
                    /* the T-thread ceiling: the faster of one thread and the pool */
                    for (int k = 0; k < inner; k++) {
                        copy_all(y2, B.x, bytes, 1);
                        __asm__ volatile("" : : "r"(y2) : "memory");
                    }
                    double t3 = now();
                    if ((t3 - t2) / inner < tmc[r])
                        tmc[r] = (t3 - t2) / inner;
                }
            }
            double to = median(top, reps), tm = median(tmc, reps);
            if (use_min) {
                to = top[0]; /* median() sorted them */
                tm = tmc[0];
            }
            printf("%-36s %-7s %9.2f %9.2f %7.3f\n", sc->name, nk_isa_name(isas[ii]),
                   2.0 * (double)bytes / to * 1e-9, 2.0 * (double)bytes / tm * 1e-9, tm / to);
            fflush(stdout);
        }
        free(B.x);
        free(B.y);
        free(B.w);
        free(B.b);
        free(B.rm);
        free(B.rv);
        free(y2);
    }
    free(top);
    free(tmc);
    nk_threadpool_destroy(g_pool);
    return 0;
}
