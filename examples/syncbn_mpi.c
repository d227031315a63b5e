/*
 * Synchronized (data-parallel) BatchNorm over MPI with normkit.
 *
 * Every rank holds a shard of the batch: a run of whole samples, NCHW or
 * NHWC fp32, of any size, none at all included. One training step is the
 * protocol of normkit.torch.SyncBatchNorm (python/normkit/torch.py), with
 * MPI in place of torch.distributed:
 *
 *   forward
 *     1. nk_batch_norm_stats_ex          per-channel (count, mean, M2) of the shard
 *     2. MPI_Allgather                   every rank's C moments
 *     3. nk_moments_merge, rank order    the whole batch's moments, the same
 *                                        bits on every rank
 *     4. nk_batch_norm_apply_moments_ex  y of the shard, save_mean /
 *                                        save_invstd, and the running mean /
 *                                        var (PyTorch momentum, unbiased
 *                                        variance from the global count)
 *   backward
 *     5. nk_batch_norm_backward_reduce_ex  sum(dy) and sum(dy * (x - mean)) of
 *                                          the shard, per channel, in fp64
 *     6. MPI_Allgather, summed in rank order
 *     7. nk_batch_norm_backward_elemt_ex   dx of the shard from the global sums
 *                                          and the global count
 *     8. dweight = invstd * sum(dy * (x - mean)), dbias = sum(dy), global
 *
 * normkit.torch.SyncBatchNorm, as PyTorch's, returns each rank's own
 * dweight / dbias (nk_batch_norm_backward_reduce_ex gives those) and leaves
 * their reduction to DistributedDataParallel; here step 8 makes the whole
 * batch's from the global sums, the same on every rank, with no further
 * collective.
 *
 * Steps 3 and 6 fix the order of every floating-point operation across
 * ranks: an MPI_Allreduce would also add the sums, but the order in which
 * it adds them is up to the MPI implementation (it may depend on the number
 * of ranks, the message size and the network), so its result need not be
 * the same bits on every rank or in every run. The price is volume: each
 * rank receives world * 2 C doubles where an all-reduce returns 2 C, small
 * for the channels of one layer and a few ranks.
 *
 * The program checks itself. Every rank generates the whole batch (the same
 * counter-based generator and seed on every rank) and runs single-process
 * nk_batch_norm_train_ex and nk_batch_norm_backward_ex on it, then compares
 * its shard of y and dx, the saved statistics, the running statistics and
 * dweight / dbias with that reference (see TOLERANCE), the global count and
 * num_batches_tracked exactly, and that every rank holds the same bits of
 * the merged moments, the global sums, the saved and running statistics and
 * dweight / dbias. It runs several configurations (layouts, unequal shards,
 * an empty rank, affine off, momentum and cumulative averages, several steps
 * each) and exits non-zero with a message naming the rank, configuration,
 * step and quantity on any mismatch; rank 0 prints a summary.
 *
 *   mpiexec -n 2 ./syncbn_mpi          (any number of ranks, 1 included)
 *
 * --fault=merge-order|local-sums|local-count breaks one step of the
 * protocol on purpose (each rank merges its own moments first; the backward
 * sums are not exchanged; the elementwise step gets the shard's own count)
 * to show that the checks catch it: the program then reports the
 * mismatches and exits 0 when there were any, 1 when the fault went
 * unnoticed (the meson tests run each fault on 2 ranks).
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <mpi.h>
#include <normkit.h>

/*
 * Tolerance of the comparisons with the single-process reference, relative
 * to a scale: |got - want| <= TOLERANCE * scale for every element, where the
 * scale of y, dx and the saved and running statistics is the largest |want|
 * of the reference array (the whole batch's, so every rank judges by the
 * same scale), and that of dweight[c] and dbias[c], sums whose terms cancel,
 * is the sum of their terms' magnitudes over the batch,
 * invstd[c] * sum |dy (x - mean[c])| and sum |dy|.
 *
 * The two computations differ only in rounding: normkit sums fp32 values in
 * chunks and merges the chunks in fp64, and a shard boundary moves where
 * chunks begin, so the merged moments and the backward sums differ from the
 * whole batch's by a few fp32 roundings of their terms (relative 1e-7 of
 * the scales above). save_mean and save_invstd, rounded to fp32, differ by
 * an ulp or two, and y, dx and dweight inherit that through x - mean and
 * invstd, with |mean| / std of a few here. The errors seen on 1 to 6 ranks
 * are below 1e-6; 1e-5 (80 to 170 fp32 ulps of the scale) leaves a margin
 * of ten. A protocol error (a shard missing from a sum, the shard's own
 * count or moments in place of the global ones, the biased variance) is of
 * the order of a shard's share of the batch, 1e-2 or more.
 */
#define TOLERANCE 1e-5

enum fault { FAULT_NONE, FAULT_MERGE_ORDER, FAULT_LOCAL_SUMS, FAULT_LOCAL_COUNT };

typedef struct config {
    const char *name;
    nk_layout layout;
    int64_t c, spatial;
    /* samples per rank: rank r holds shards[r % nshards] */
    int shards[3];
    int nshards;
    int affine;
    double momentum; /* < 0: cumulative average (PyTorch momentum=None) */
    int steps;
} config;

static const config configs[] = {
    {"nchw-unequal", NK_CHANNELS_FIRST, 3, 5 * 7, {3, 1, 2}, 3, 1, 0.1, 3},
    {"nhwc-empty-rank", NK_CHANNELS_LAST, 8, 4 * 4, {5, 0, 2}, 3, 1, 0.1, 3},
    {"nc-cumulative-no-affine", NK_CHANNELS_FIRST, 6, 1, {7, 2, 4}, 3, 0, -1.0, 4},
    {"nchw-large", NK_CHANNELS_FIRST, 5, 48 * 64, {6, 3, 1}, 3, 1, 0.1, 2},
    {"nhwc-large", NK_CHANNELS_LAST, 16, 32 * 32, {9, 5, 0}, 3, 1, 0.3, 2},
};

#define EPS 1e-5
#define SEED 20240607u

static int rank, world;
static enum fault fault = FAULT_NONE;

/* ------------------------------------------------------------------------ */
/* Errors                                                                     */
/* ------------------------------------------------------------------------ */

/* A failed normkit call leaves the ranks out of step (the others wait in a
 * collective): report it and end the whole job. */
static void check_status(nk_status st, const char *call)
{
    if (st == NK_OK)
        return;
    fprintf(stderr, "rank %d: %s failed: %s: %s\n", rank, call, nk_status_string(st),
            nk_last_error());
    MPI_Abort(MPI_COMM_WORLD, 2);
}

static void *xmalloc(size_t bytes)
{
    void *p = malloc(bytes ? bytes : 1);
    if (!p) {
        fprintf(stderr, "rank %d: out of memory (%zu bytes)\n", rank, bytes);
        MPI_Abort(MPI_COMM_WORLD, 2);
    }
    return p;
}

/* ------------------------------------------------------------------------ */
/* Test data: a counter-based generator, the same values on every rank       */
/* ------------------------------------------------------------------------ */

static uint64_t mix64(uint64_t z)
{
    z += 0x9e3779b97f4a7c15u;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9u;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebu;
    return z ^ (z >> 31);
}

/* Uniform in [-1, 1), from (stream, i) alone. */
static float uniform(uint64_t stream, uint64_t i)
{
    return (float)((double)(mix64(mix64(stream) ^ i) >> 11) * 0x1p-52 - 1.0);
}

/* count values of a tensor of c channels whose element i belongs to channel
 * ch = (i / run) % c: offset + offset_step * ch + (scale + scale_step * ch)
 * times a uniform value in [-1, 1). */
static void fill(float *v, size_t count, uint64_t stream, int64_t c, int64_t run, double offset,
                 double offset_step, double scale, double scale_step)
{
    for (size_t i = 0; i < count; i++) {
        int64_t ch = (int64_t)(i / (size_t)run) % c;
        v[i] = (float)(offset + offset_step * (double)ch +
                       (scale + scale_step * (double)ch) * uniform(stream, i));
    }
}

/* ------------------------------------------------------------------------ */
/* Collectives                                                                */
/* ------------------------------------------------------------------------ */

/* nk_moments travel as 3 MPI_DOUBLEs */
_Static_assert(sizeof(nk_moments) == 3 * sizeof(double), "nk_moments is (count, mean, m2)");

/* Steps 2 and 3: the moments of every rank, merged in rank order. */
static void allgather_merge(const nk_moments *local, nk_moments *all, nk_moments *merged, int64_t c)
{
    MPI_Allgather(local, (int)(3 * c), MPI_DOUBLE, all, (int)(3 * c), MPI_DOUBLE, MPI_COMM_WORLD);
    memset(merged, 0, (size_t)c * sizeof *merged); /* count 0: the neutral element */
    for (int i = 0; i < world; i++) {
        int r = i;
        if (fault == FAULT_MERGE_ORDER) /* this rank first: a rank-dependent order */
            r = i == 0 ? rank : i <= rank ? i - 1 : i;
        for (int64_t k = 0; k < c; k++)
            nk_moments_merge(&merged[k], &all[(size_t)r * (size_t)c + (size_t)k]);
    }
}

/* Step 6: sums (n doubles per rank) of every rank, added in rank order. */
static void allgather_sum(const double *local, double *all, double *sum, int64_t n)
{
    MPI_Allgather(local, (int)n, MPI_DOUBLE, all, (int)n, MPI_DOUBLE, MPI_COMM_WORLD);
    for (int64_t k = 0; k < n; k++) {
        double s = 0.0;
        for (int r = 0; r < world; r++)
            s += all[(size_t)r * (size_t)n + (size_t)k];
        sum[k] = s;
    }
}

/* ------------------------------------------------------------------------ */
/* One layer's state on one rank                                              */
/* ------------------------------------------------------------------------ */

typedef struct layer {
    float *weight, *bias; /* NULL: affine off */
    float *running_mean, *running_var;
    nk_running_stats rs;
} layer;

static void layer_init(layer *l, const config *cf)
{
    const size_t c = (size_t)cf->c;
    l->weight = l->bias = NULL;
    if (cf->affine) {
        l->weight = xmalloc(c * sizeof(float));
        l->bias = xmalloc(c * sizeof(float));
        fill(l->weight, c, SEED ^ 0x77, 1, 1, 1.0, 0.0, 0.5, 0.0);
        fill(l->bias, c, SEED ^ 0x78, 1, 1, 0.0, 0.0, 0.5, 0.0);
    }
    l->running_mean = xmalloc(c * sizeof(float));
    l->running_var = xmalloc(c * sizeof(float));
    for (size_t k = 0; k < c; k++) {
        l->running_mean[k] = 0.0f;
        l->running_var[k] = 1.0f;
    }
    nk_running_stats rs = {.mean = l->running_mean,
                           .var = l->running_var,
                           .momentum = cf->momentum < 0 ? 0.0 : cf->momentum,
                           .cumulative = cf->momentum < 0,
                           .unbiased = 1,
                           .num_batches_tracked = 0};
    l->rs = rs;
}

static void layer_free(layer *l)
{
    free(l->weight);
    free(l->bias);
    free(l->running_mean);
    free(l->running_var);
}

/* What one step leaves on one rank (synchronized or reference). */
typedef struct step_out {
    float *y, *dx; /* the shard's (reference: the whole batch's) */
    float *save_mean, *save_invstd, *dweight, *dbias;
    nk_moments *moments; /* synchronized: the whole batch's, merged */
    double *sums;        /* synchronized: global sum(dy), then sum(dy * (x - mean)) */
} step_out;

static void out_alloc(step_out *o, size_t elems, int64_t c)
{
    const size_t n = (size_t)c;
    o->y = xmalloc(elems * sizeof(float));
    o->dx = xmalloc(elems * sizeof(float));
    o->save_mean = xmalloc(n * sizeof(float));
    o->save_invstd = xmalloc(n * sizeof(float));
    o->dweight = xmalloc(n * sizeof(float));
    o->dbias = xmalloc(n * sizeof(float));
    o->moments = xmalloc(n * sizeof(nk_moments));
    o->sums = xmalloc(2 * n * sizeof(double));
}

static void out_free(step_out *o)
{
    free(o->y);
    free(o->dx);
    free(o->save_mean);
    free(o->save_invstd);
    free(o->dweight);
    free(o->dbias);
    free(o->moments);
    free(o->sums);
}

/* ------------------------------------------------------------------------ */
/* The synchronized step and the single-process reference                    */
/* ------------------------------------------------------------------------ */

/* One synchronized training step on this rank's shard (desc->n samples). */
static void sync_step(const nk_context *ctx, const nk_tensor_desc *desc, const float *x,
                      const float *dy, layer *l, step_out *o)
{
    const int64_t c = desc->c;
    const size_t cn = (size_t)c;
    nk_moments *local = xmalloc(cn * sizeof *local);
    nk_moments *all = xmalloc((size_t)world * cn * sizeof *all);
    double *sums = xmalloc(2 * cn * sizeof *sums);
    double *all_sums = xmalloc((size_t)world * 2 * cn * sizeof *all_sums);

    /* forward */
    check_status(nk_batch_norm_stats_ex(ctx, desc, x, local), "nk_batch_norm_stats_ex");
    allgather_merge(local, all, o->moments, c);
    /* counts are whole numbers well below 2^53: exact in the double */
    const int64_t count = (int64_t)o->moments[0].count;
    check_status(nk_batch_norm_apply_moments_ex(ctx, desc, x, o->y, o->moments, l->weight, l->bias,
                                                EPS, &l->rs, o->save_mean, o->save_invstd),
                 "nk_batch_norm_apply_moments_ex");

    /* backward: the forward's y is not needed without an activation */
    check_status(nk_batch_norm_backward_reduce_ex(ctx, desc, x, NULL, dy, o->save_mean,
                                                  o->save_invstd, sums, sums + cn, NULL, NULL),
                 "nk_batch_norm_backward_reduce_ex");
    if (fault == FAULT_LOCAL_SUMS)
        memcpy(o->sums, sums, 2 * cn * sizeof *sums);
    else
        allgather_sum(sums, all_sums, o->sums, 2 * c);
    const int64_t elemt_count = fault == FAULT_LOCAL_COUNT ? desc->n * desc->spatial : count;
    check_status(nk_batch_norm_backward_elemt_ex(ctx, desc, x, NULL, dy, o->dx, l->weight,
                                                 o->save_mean, o->save_invstd, o->sums,
                                                 o->sums + cn, elemt_count),
                 "nk_batch_norm_backward_elemt_ex");
    /* as nk_batch_norm_backward_ex rounds them: the fp64 products to fp32 */
    for (size_t k = 0; k < cn; k++) {
        o->dbias[k] = (float)o->sums[k];
        o->dweight[k] = (float)((double)o->save_invstd[k] * o->sums[cn + k]);
    }
    free(local);
    free(all);
    free(sums);
    free(all_sums);
}

/* The same step, single-process, on the whole batch (desc->n samples). */
static void reference_step(const nk_context *ctx, const nk_tensor_desc *desc, const float *x,
                           const float *dy, layer *l, step_out *o)
{
    check_status(nk_batch_norm_train_ex(ctx, desc, x, o->y, l->weight, l->bias, EPS, &l->rs,
                                        o->save_mean, o->save_invstd),
                 "nk_batch_norm_train_ex");
    check_status(nk_batch_norm_backward_ex(ctx, desc, x, NULL, dy, o->dx, l->weight, o->save_mean,
                                           o->save_invstd, o->dweight, o->dbias),
                 "nk_batch_norm_backward_ex");
}

/* ------------------------------------------------------------------------ */
/* Checks                                                                     */
/* ------------------------------------------------------------------------ */

typedef struct check {
    const char *config;
    int step;
    int failures;
    double worst; /* largest error relative to the reference's scale */
} check;

static double max_abs(const float *v, size_t n)
{
    double m = 0.0;
    for (size_t i = 0; i < n; i++)
        m = fmax(m, fabs((double)v[i]));
    return m;
}

/* got[0, n) against want[0, n), element i on the scale scales[i] (when
 * scales is not NULL) or scale. */
static void compare(check *ck, const char *what, const float *got, const float *want, size_t n,
                    double scale, const double *scales)
{
    double worst = 0.0;
    size_t at = 0;
    for (size_t i = 0; i < n; i++) {
        const double si = scales ? scales[i] : scale;
        const double d = fabs((double)got[i] - (double)want[i]);
        const double rel = si > 0.0 ? d / si : d;
        if (!(rel <= worst)) { /* NaN included */
            worst = rel;
            at = i;
            if (isnan(rel))
                break;
        }
    }
    if (!(worst <= TOLERANCE)) {
        fprintf(stderr,
                "rank %d: %s step %d: %s differs from the single-process reference: "
                "element %zu is %.9g, expected %.9g (|diff| / scale = %.3g > %g)\n",
                rank, ck->config, ck->step, what, at, (double)got[at], (double)want[at], worst,
                TOLERANCE);
        ck->failures++;
    }
    if (!isnan(worst))
        ck->worst = fmax(ck->worst, worst);
}

/* The scales of dbias[c] and dweight[c]: sum |dy| and
 * invstd[c] * sum |dy (x - mean[c])| over the batch (count values). */
static void gradient_scales(const float *x, const float *dy, size_t count, int64_t c, int64_t run,
                            const float *mean, const float *invstd, double *dbias_scale,
                            double *dweight_scale)
{
    for (int64_t k = 0; k < c; k++)
        dbias_scale[k] = dweight_scale[k] = 0.0;
    for (size_t i = 0; i < count; i++) {
        const size_t k = (i / (size_t)run) % (size_t)c;
        dbias_scale[k] += fabs((double)dy[i]);
        dweight_scale[k] += fabs((double)dy[i] * ((double)x[i] - (double)mean[k]));
    }
    for (int64_t k = 0; k < c; k++)
        dweight_scale[k] *= (double)invstd[k];
}

static void expect_equal(check *ck, const char *what, double got, double want)
{
    if (got != want) {
        fprintf(stderr, "rank %d: %s step %d: %s is %.17g, expected %.17g\n", rank, ck->config,
                ck->step, what, got, want);
        ck->failures++;
    }
}

/* Every rank must hold the bits rank 0 holds (a collective call). */
static void same_on_every_rank(check *ck, const char *what, const void *p, size_t bytes)
{
    unsigned char *root = xmalloc(bytes);
    memcpy(root, p, bytes);
    MPI_Bcast(root, (int)bytes, MPI_BYTE, 0, MPI_COMM_WORLD);
    if (memcmp(root, p, bytes) != 0) {
        fprintf(stderr, "rank %d: %s step %d: %s: not the bits rank 0 holds\n", rank, ck->config,
                ck->step, what);
        ck->failures++;
    }
    free(root);
}

/* ------------------------------------------------------------------------ */
/* One configuration                                                          */
/* ------------------------------------------------------------------------ */

static int samples_of(const config *cf, int r)
{
    return cf->shards[r % cf->nshards];
}

/* Runs cf's steps; returns the failures of all ranks (the same on each) and
 * the largest relative error of all ranks in *worst. */
static int run_config(const nk_context *ctx, const config *cf, int ci, double *worst)
{
    const int64_t c = cf->c, s = cf->spatial;
    int64_t total = 0, first = 0;
    for (int r = 0; r < world; r++) {
        if (r == rank)
            first = total;
        total += samples_of(cf, r);
    }
    const int64_t n = samples_of(cf, rank);
    const size_t per_sample = (size_t)(c * s), all_elems = (size_t)total * per_sample;
    const size_t elems = (size_t)n * per_sample, offset = (size_t)first * per_sample;
    /* element i of either layout belongs to channel (i / run) % c */
    const int64_t run = cf->layout == NK_CHANNELS_FIRST ? s : 1;

    nk_tensor_desc whole = NK_TENSOR_DESC_INIT;
    whole.layout = (uint32_t)cf->layout;
    whole.n = total;
    whole.c = c;
    whole.spatial = s;
    /* the shard: samples [first, first + n) of the batch, dense in both layouts */
    nk_tensor_desc shard = whole;
    shard.n = n;

    float *x = xmalloc(all_elems * sizeof(float)), *dy = xmalloc(all_elems * sizeof(float));
    double *dweight_scale = xmalloc((size_t)c * sizeof(double));
    double *dbias_scale = xmalloc((size_t)c * sizeof(double));
    layer sync_layer, ref_layer;
    layer_init(&sync_layer, cf);
    layer_init(&ref_layer, cf);
    step_out got, want;
    out_alloc(&got, elems, c);
    out_alloc(&want, all_elems, c);
    check ck = {cf->name, 0, 0, 0.0};

    for (int step = 0; step < cf->steps; step++) {
        ck.step = step;
        const uint64_t stream = ((uint64_t)SEED << 16) ^ ((uint64_t)ci << 8) ^ (uint64_t)step;
        /* channel means 1 to 3, deviations 0.5 to 2: mean-shifted data */
        fill(x, all_elems, 2 * stream, c, run, 1.0 + step, 2.0 / (double)c, 0.5, 1.5 / (double)c);
        fill(dy, all_elems, 2 * stream + 1, c, run, 0.1, 0.0, 1.0, 0.0);

        sync_step(ctx, &shard, x + offset, dy + offset, &sync_layer, &got);
        reference_step(ctx, &whole, x, dy, &ref_layer, &want);

        const size_t cn = (size_t)c;
        for (size_t k = 0; k < cn; k++)
            expect_equal(&ck, "merged count", got.moments[k].count, (double)(total * s));
        expect_equal(&ck, "num_batches_tracked", (double)sync_layer.rs.num_batches_tracked,
                     (double)ref_layer.rs.num_batches_tracked);
        compare(&ck, "y", got.y, want.y + offset, elems, max_abs(want.y, all_elems), NULL);
        compare(&ck, "dx", got.dx, want.dx + offset, elems, max_abs(want.dx, all_elems), NULL);
        compare(&ck, "save_mean", got.save_mean, want.save_mean, cn, max_abs(want.save_mean, cn),
                NULL);
        compare(&ck, "save_invstd", got.save_invstd, want.save_invstd, cn,
                max_abs(want.save_invstd, cn), NULL);
        compare(&ck, "running_mean", sync_layer.running_mean, ref_layer.running_mean, cn,
                max_abs(ref_layer.running_mean, cn), NULL);
        compare(&ck, "running_var", sync_layer.running_var, ref_layer.running_var, cn,
                max_abs(ref_layer.running_var, cn), NULL);
        gradient_scales(x, dy, all_elems, c, run, want.save_mean, want.save_invstd, dbias_scale,
                        dweight_scale);
        compare(&ck, "dweight", got.dweight, want.dweight, cn, 0.0, dweight_scale);
        compare(&ck, "dbias", got.dbias, want.dbias, cn, 0.0, dbias_scale);

        same_on_every_rank(&ck, "merged moments", got.moments, cn * sizeof(nk_moments));
        same_on_every_rank(&ck, "global backward sums", got.sums, 2 * cn * sizeof(double));
        same_on_every_rank(&ck, "save_mean", got.save_mean, cn * sizeof(float));
        same_on_every_rank(&ck, "save_invstd", got.save_invstd, cn * sizeof(float));
        same_on_every_rank(&ck, "running_mean", sync_layer.running_mean, cn * sizeof(float));
        same_on_every_rank(&ck, "running_var", sync_layer.running_var, cn * sizeof(float));
        same_on_every_rank(&ck, "dweight", got.dweight, cn * sizeof(float));
        same_on_every_rank(&ck, "dbias", got.dbias, cn * sizeof(float));
    }

    int failures = 0;
    MPI_Allreduce(&ck.failures, &failures, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
    MPI_Allreduce(&ck.worst, worst, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
    if (rank == 0) {
        printf("  %-24s %s C=%-2lld spatial=%-4lld shards", cf->name,
               cf->layout == NK_CHANNELS_FIRST ? "NCHW" : "NHWC", (long long)c, (long long)s);
        for (int r = 0; r < world; r++)
            printf("%c%d", r ? ',' : ' ', samples_of(cf, r));
        printf("  %d steps  max rel err %.2e  %s\n", cf->steps, *worst, failures ? "FAILED" : "ok");
    }
    out_free(&got);
    out_free(&want);
    layer_free(&sync_layer);
    layer_free(&ref_layer);
    free(x);
    free(dy);
    free(dweight_scale);
    free(dbias_scale);
    return failures;
}

/* ------------------------------------------------------------------------ */

static int parse_args(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--fault=merge-order"))
            fault = FAULT_MERGE_ORDER;
        else if (!strcmp(argv[i], "--fault=local-sums"))
            fault = FAULT_LOCAL_SUMS;
        else if (!strcmp(argv[i], "--fault=local-count"))
            fault = FAULT_LOCAL_COUNT;
        else {
            if (rank == 0)
                fprintf(stderr,
                        "usage: mpiexec -n RANKS %s "
                        "[--fault=merge-order|local-sums|local-count]\n",
                        argv[0]);
            return 0;
        }
    }
    return 1;
}

int main(int argc, char **argv)
{
    MPI_Init(&argc, &argv);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &world);
    if (!parse_args(argc, argv)) {
        MPI_Finalize();
        return 2;
    }

    /* the calling thread only; a runtime would hand its pool over in ctx.pool */
    const nk_context ctx = NK_CONTEXT_INIT;
    if (rank == 0)
        printf("syncbn_mpi: %d rank%s, normkit %s (%s kernels), tolerance %g "
               "(relative)%s\n",
               world, world == 1 ? "" : "s", nk_version(), nk_isa_name(nk_get_isa()), TOLERANCE,
               fault ? ", with a fault injected" : "");

    int failures = 0;
    double worst = 0.0;
    for (size_t i = 0; i < sizeof configs / sizeof configs[0]; i++) {
        double w = 0.0;
        failures += run_config(&ctx, &configs[i], (int)i, &w);
        worst = fmax(worst, w);
    }
    if (rank == 0) {
        if (fault)
            printf("syncbn_mpi: %s\n", failures ? "the checks caught the injected fault"
                                                : "FAILED: the injected fault went unnoticed");
        else if (failures)
            printf("syncbn_mpi: FAILED: %d mismatches (messages above)\n", failures);
        else
            printf("syncbn_mpi: ok: every rank's shard matches single-process BatchNorm "
                   "(max rel err %.2e) and every rank holds the same statistics and "
                   "gradients, bit for bit\n",
                   worst);
    }
    MPI_Finalize();
    return (failures != 0) == (fault != FAULT_NONE) ? 0 : 1;
}
