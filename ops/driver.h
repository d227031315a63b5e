/*
 * The block driver: every operator is a plan over reduction groups.
 *
 * Groups (a channel, an (n, c) row, an (n, g) group, a LayerNorm row) are
 * gathered into blocks; each block is cut into `pieces` along the reduction.
 *   phase 1  moments(b, p): partial moments of block b's groups over piece p
 *   merge    the pieces of each group, in piece order (Chan)
 *   finalize finalize(b): a, b, saved statistics, running statistics
 *   phase 2  normalize(b, p)
 * Blocks and pieces follow from the shape alone, never from the thread
 * count, and the merge order is fixed, so every result is bitwise the same
 * for any pool and any order it runs tasks in.
 *
 * Two schedules:
 *   fused  (pieces == 1, finalize independent per block): one task per block
 *          runs all three steps while the block is in L1/L2.
 *   waves  otherwise: consecutive blocks of at most NK_WAVE_FLOATS (a core's
 *          L2) go through phase 1 in parallel, then merge + finalize in block
 *          order in the calling thread, then phase 2 in parallel. Sequential
 *          finalize lets an operator accumulate across blocks (InstanceNorm's
 *          running statistics).
 */
#ifndef NK_OPS_DRIVER_H
#define NK_OPS_DRIVER_H

#include <stdbool.h>
#include <stddef.h>

#include "kernels/kernels.h"

/* Calls below this many floats (read + written) run in the calling thread:
 * waking a pool costs a few microseconds. */
#ifndef NK_PAR_MIN_FLOATS
#  define NK_PAR_MIN_FLOATS ((size_t)1 << 15)
#endif
/* Blocks of one wave: about one core's L2, re-read by phase 2 from cache. */
#ifndef NK_WAVE_FLOATS
#  define NK_WAVE_FLOATS ((size_t)1 << 17)
#endif
/* Target floats of one piece of a split group. */
#ifndef NK_PIECE_FLOATS
#  define NK_PIECE_FLOATS ((size_t)1 << 14)
#endif
/* Groups up to this length run fused (moments, finalize, normalize in one task). */
#ifndef NK_FUSE_FLOATS
#  define NK_FUSE_FLOATS ((size_t)1 << 17)
#endif
/* Most pieces per block. */
#define NK_MAX_PIECES 64
/* Most groups per block of the fused schedule (more run in waves). */
#define NK_MAX_BGROUPS 256
/* Parameters of one block in a fused task (on that task's stack). */
#define NK_FUSED_PARAM_BYTES ((size_t)8 << 10)
/* Scratch of the waves schedule (partials and parameters of one wave) when
 * the caller gives no workspace: on the calling thread's stack. */
#define NK_STACK_SCRATCH ((size_t)40 << 10)

typedef struct nk_exec {
    const nk_threadpool *pool; /* NULL: inline */
    size_t threads;
    void *scratch; /* waves scratch, 64-byte aligned */
    size_t scratch_size;
    void *ws; /* the context's workspace, 64-byte aligned (NULL: none) */
    size_t ws_size;
} nk_exec;

/* From a validated context (NULL: inline). */
void nk_exec_init(nk_exec *ex, const nk_context *ctx);

/* fn(arg, i) for i < n: through the pool when it has several threads, n > 1
 * and work (floats) reaches NK_PAR_MIN_FLOATS; else in order, inline. */
void nk_par_run(const nk_exec *ex, size_t n, size_t work, void (*fn)(void *arg, size_t i),
                void *arg);

typedef struct nk_plan {
    size_t blocks;   /* >= 1 */
    size_t pieces;   /* per block, 1 .. NK_MAX_PIECES */
    size_t bgroups;  /* groups per block, 1 .. NK_MAX_BGROUPS */
    size_t bfloats;  /* floats of a (full) block: wave sizing */
    bool seq_finalize; /* finalize must run in block order (forces waves) */
    void *op;
    /* groups of block b (<= bgroups) */
    size_t (*groups)(void *op, size_t b);
    /* merges piece p of block b into part[0 .. groups(b)), which start empty
     * (count 0); NULL: the moments come from finalize alone (inference) */
    void (*moments)(void *op, size_t b, size_t p, nk_moments *part);
    /* block b's merged moments (NULL when moments is NULL) -> the operator's
     * per-block parameters, kept in `par` (param_bytes per block) */
    void (*finalize)(void *op, size_t b, const nk_moments *mo, void *par);
    /* NULL: statistics only */
    void (*normalize)(void *op, size_t b, size_t p, const void *par);
    size_t param_bytes; /* per block */
    /* how piece p's entries join piece 0's: NULL is Chan's merge of moments;
     * the backward plans carry sums in the same three doubles and add them
     * (nk_sums_add) */
    void (*merge)(nk_moments *acc, const nk_moments *q);
} nk_plan;

/* The merge of plans whose entries are sums: every field adds. */
static inline void nk_sums_add(nk_moments *acc, const nk_moments *q)
{
    acc->count += q->count;
    acc->mean += q->mean;
    acc->m2 += q->m2;
}

/* Scratch bytes a wave of nb blocks needs. */
size_t nk_plan_wave_bytes(const nk_plan *pl, size_t nb);
/* Runs the plan; ex->scratch must hold nk_plan_wave_bytes(pl, 1). */
void nk_plan_run(const nk_exec *ex, const nk_plan *pl);

/* Pieces for a group of len floats cut along its reduction: shape-only. */
static inline size_t nk_pieces_for(size_t len)
{
    size_t p = (len + NK_PIECE_FLOATS - 1) / NK_PIECE_FLOATS;
    return p < 1 ? 1 : p > NK_MAX_PIECES ? NK_MAX_PIECES : p;
}

/* [lo, hi) of piece p of n items cut into P near-equal ranges. */
static inline void nk_piece_range(size_t n, size_t P, size_t p, size_t *lo, size_t *hi)
{
    size_t q = n / P, r = n % P;
    *lo = p * q + (p < r ? p : r);
    *hi = *lo + q + (p < r);
}

#endif
