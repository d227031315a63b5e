/* The block driver (see driver.h). */
#include <stdint.h>
#include <string.h>

#include "ops/driver.h"

void nk_exec_init(nk_exec *ex, const nk_context *ctx)
{
    ex->pool = ctx ? ctx->pool : NULL;
    ex->threads = 1;
    if (ex->pool)
        ex->threads = ex->pool->num_threads ? ex->pool->num_threads(ex->pool->ctx) : 1;
    if (ex->threads <= 1)
        ex->pool = NULL;
    ex->scratch = NULL;
    ex->scratch_size = 0;
    ex->ws = NULL;
    ex->ws_size = 0;
    if (ctx && ctx->workspace) {
        const uintptr_t a = (uintptr_t)ctx->workspace, pad = (64 - (a & 63)) & 63;
        if (ctx->workspace_size > pad) {
            ex->ws = (unsigned char *)ctx->workspace + pad;
            ex->ws_size = ctx->workspace_size - pad;
        }
    }
}

void nk_par_run(const nk_exec *ex, size_t n, size_t work, void (*fn)(void *arg, size_t i),
                void *arg)
{
    if (ex->pool && n > 1 && work >= NK_PAR_MIN_FLOATS) {
        ex->pool->parallel_for(ex->pool->ctx, fn, arg, n);
        return;
    }
    for (size_t i = 0; i < n; i++)
        fn(arg, i);
}

/* ---- fused: one task per block ---- */

static void fused_task(void *arg, size_t b)
{
    const nk_plan *pl = arg;
    nk_moments part[NK_MAX_BGROUPS];
    _Alignas(64) unsigned char par[NK_FUSED_PARAM_BYTES];
    const nk_moments *mo = NULL;
    if (pl->moments) {
        memset(part, 0, pl->groups(pl->op, b) * sizeof part[0]);
        pl->moments(pl->op, b, 0, part);
        mo = part;
    }
    pl->finalize(pl->op, b, mo, par);
    if (pl->normalize)
        pl->normalize(pl->op, b, 0, par);
}

/* ---- waves ---- */

typedef struct wave {
    const nk_plan *pl;
    size_t b0;
    nk_moments *part; /* [block][piece][bgroups] */
    unsigned char *par;
    size_t par_stride;
} wave;

static nk_moments *wave_part(const wave *w, size_t bi, size_t p)
{
    return w->part + (bi * w->pl->pieces + p) * w->pl->bgroups;
}

static void wave_moments(void *arg, size_t t)
{
    const wave *w = arg;
    const nk_plan *pl = w->pl;
    size_t bi = t / pl->pieces, p = t % pl->pieces, b = w->b0 + bi;
    nk_moments *part = wave_part(w, bi, p);
    memset(part, 0, pl->groups(pl->op, b) * sizeof part[0]);
    pl->moments(pl->op, b, p, part);
}

static void wave_normalize(void *arg, size_t t)
{
    const wave *w = arg;
    const nk_plan *pl = w->pl;
    size_t bi = t / pl->pieces, p = t % pl->pieces;
    pl->normalize(pl->op, w->b0 + bi, p, w->par + bi * w->par_stride);
}

static size_t par_stride(const nk_plan *pl) { return (pl->param_bytes + 63) & ~(size_t)63; }

static size_t part_bytes(const nk_plan *pl)
{
    return pl->moments ? pl->pieces * pl->bgroups * sizeof(nk_moments) : 0;
}

size_t nk_plan_wave_bytes(const nk_plan *pl, size_t nb)
{
    return nb * (((part_bytes(pl) + 63) & ~(size_t)63) + par_stride(pl));
}

void nk_plan_run(const nk_exec *ex, const nk_plan *pl)
{
    if (pl->pieces == 1 && !pl->seq_finalize && pl->param_bytes <= NK_FUSED_PARAM_BYTES &&
        pl->bgroups <= NK_MAX_BGROUPS) {
        nk_par_run(ex, pl->blocks, pl->blocks * pl->bfloats, fused_task, (void *)pl);
        return;
    }
    /* blocks per wave: about one L2 of data, as many as the scratch holds */
    size_t per = pl->bfloats ? NK_WAVE_FLOATS / pl->bfloats : pl->blocks;
    size_t fit = ex->scratch_size / nk_plan_wave_bytes(pl, 1);
    per = per < 1 ? 1 : per;
    per = per < fit ? per : fit;
    const size_t pb = (part_bytes(pl) + 63) & ~(size_t)63;
    for (size_t b0 = 0; b0 < pl->blocks; b0 += per) {
        size_t nb = pl->blocks - b0 < per ? pl->blocks - b0 : per;
        unsigned char *s = ex->scratch;
        wave w = {pl, b0, (nk_moments *)(void *)s, s + nb * pb, par_stride(pl)};
        size_t work = nb * pl->bfloats;
        if (pl->moments)
            nk_par_run(ex, nb * pl->pieces, work, wave_moments, &w);
        for (size_t bi = 0; bi < nb; bi++) {
            nk_moments *m = NULL;
            if (pl->moments) {
                /* pieces merge into piece 0, in piece order */
                size_t g = pl->groups(pl->op, b0 + bi);
                m = wave_part(&w, bi, 0);
                for (size_t p = 1; p < pl->pieces; p++) {
                    const nk_moments *q = wave_part(&w, bi, p);
                    for (size_t i = 0; i < g; i++) {
                        if (pl->merge)
                            pl->merge(&m[i], &q[i]);
                        else
                            nk_moments_merge_inline(&m[i], q[i].count, q[i].mean, q[i].m2);
                    }
                }
            }
            pl->finalize(pl->op, b0 + bi, m, w.par + bi * w.par_stride);
        }
        if (pl->normalize)
            nk_par_run(ex, nb * pl->pieces, work, wave_normalize, &w);
    }
}
