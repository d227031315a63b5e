/*
 * libFuzzer target: the backward entry points (nk_*_backward_ex, the
 * synchronized BatchNorm reduce / elemt pair). Each input is a sequence of
 * calls; every call decodes its operator, the descriptor (struct_size,
 * dtype, param_dtype, layout, extents, strides, activation and alpha), the
 * context (none, serial, a pool of 1 to 3 threads, bad fields), which
 * arrays are given (any may be NULL), in place (dx == dy) or a forbidden
 * alias (dx == x, dx == y), eps, groups, the global count, and the data:
 * x / y / dy, weight, saved or running statistics and the global sums.
 * Every array is allocated exactly (x and dx as the x strides address
 * them, y and dy as the y strides do, gaps included; C weights and
 * gradients; C, N * C, N * groups or rows statistics) between guard zones.
 * Extents too large to allocate are called with every array NULL: the
 * arguments are validated, nothing is read or written.
 *
 * Checked after every call:
 *   - the status is a documented code, nk_last_error() empty on success and
 *     non-empty on failure; guard zones intact; inputs unchanged (x, y, dy
 *     unless in place, weight, statistics, elemt's sums);
 *   - rejected when it must be: bad context or descriptor fields, bad
 *     shape or strides (overflowing extents included), activation out of
 *     range or LeakyReLU with a non-finite alpha, SiLU / GELU and LeakyReLU
 *     with alpha < 0 (NK_ERR_UNSUPPORTED when that is the only fault),
 *     LayerNorm / RMSNorm channels-first, bad groups or eps, a required
 *     array NULL (x, dy, y under ReLU / LeakyReLU, the statistics, elemt's
 *     sums), sum_dy without sum_dy_xmu, elemt's count below N * spatial,
 *     dx aliasing x, or y under a mask, or dy with other strides;
 *   - accepted otherwise (a 16-bit weight of more than 2048 entries may
 *     also give NK_ERR_OUT_OF_MEMORY);
 *   - failure: every output byte-identical;
 *   - success: dx's gaps untouched; an empty tensor's dweight / dbias (and
 *     reduce's sums) zero; outputs finite where the inputs and statistics
 *     are finite and bound every intermediate well inside the output's
 *     range; and the outputs of a serial call and of a call with a pool
 *     (1 to 3 threads) bitwise identical, from the same starting bytes.
 */
#include <stddef.h>

#include "fuzz_common.h"

enum { OP_BN, OP_BN_INFER, OP_BN_REDUCE, OP_BN_ELEMT, OP_IN, OP_GN, OP_LN, OP_RMS, OP_COUNT };
static const char *const op_names[OP_COUNT] = {
    "nk_batch_norm_backward_ex",        "nk_batch_norm_infer_backward_ex",
    "nk_batch_norm_backward_reduce_ex", "nk_batch_norm_backward_elemt_ex",
    "nk_instance_norm_backward_ex",     "nk_group_norm_backward_ex",
    "nk_layer_norm_backward_ex",        "nk_rms_norm_backward_ex"};

/* The call itself; every pointer as decoded. mean / inv are the saved
 * statistics, BN_INFER's running mean / var, RMSNorm's rstd (inv). */
typedef struct args {
    int op;
    const nk_context *ctx;
    const nk_tensor_desc *d;
    const void *x, *y, *dy;
    void *dx;
    const void *w;
    const float *mean, *inv;
    double eps;
    int64_t groups, count;
    double *sdy, *sdyx;
    void *dw, *db;
} args;

static nk_status call(const args *a)
{
    switch (a->op) {
    case OP_BN:
        return nk_batch_norm_backward_ex(a->ctx, a->d, a->x, a->y, a->dy, a->dx, a->w, a->mean,
                                         a->inv, a->dw, a->db);
    case OP_BN_INFER:
        return nk_batch_norm_infer_backward_ex(a->ctx, a->d, a->x, a->y, a->dy, a->dx, a->w,
                                               a->mean, a->inv, a->eps, a->dw, a->db);
    case OP_BN_REDUCE:
        return nk_batch_norm_backward_reduce_ex(a->ctx, a->d, a->x, a->y, a->dy, a->mean, a->inv,
                                                a->sdy, a->sdyx, a->dw, a->db);
    case OP_BN_ELEMT:
        return nk_batch_norm_backward_elemt_ex(a->ctx, a->d, a->x, a->y, a->dy, a->dx, a->w,
                                               a->mean, a->inv, a->sdy, a->sdyx, a->count);
    case OP_IN:
        return nk_instance_norm_backward_ex(a->ctx, a->d, a->x, a->y, a->dy, a->dx, a->w, a->mean,
                                            a->inv, a->dw, a->db);
    case OP_GN:
        return nk_group_norm_backward_ex(a->ctx, a->d, a->x, a->y, a->dy, a->dx, a->groups, a->w,
                                         a->mean, a->inv, a->dw, a->db);
    case OP_LN:
        return nk_layer_norm_backward_ex(a->ctx, a->d, a->x, a->y, a->dy, a->dx, a->w, a->mean,
                                         a->inv, a->dw, a->db);
    default:
        return nk_rms_norm_backward_ex(a->ctx, a->d, a->x, a->y, a->dy, a->dx, a->w, a->inv,
                                       a->dw);
    }
}

/* Every buffer of a call. dx is absent in place (dx is dy's buffer). */
typedef struct bufset {
    nkf_buf x, y, dy, dx, w, mean, inv, sdy, sdyx, dw, db;
} bufset;
#define NBUF 11

static nkf_buf *buf_at(bufset *s, int i) { return &s->x + i; }

static void free_bufs(bufset *s)
{
    for (int i = 0; i < NBUF; i++)
        nkf_free(buf_at(s, i));
}

/* which of them the call writes: dx (dy's buffer in place), dweight,
 * dbias, reduce's sums */
static int is_output(const args *a, const bufset *s, const nkf_buf *b)
{
    if (b == &s->dx || b == &s->dw || b == &s->db)
        return 1;
    if (b == &s->dy)
        return a->dx && a->dx == s->dy.p;
    if (b == &s->sdy || b == &s->sdyx)
        return a->op == OP_BN_REDUCE;
    return 0;
}

/* The shape model of one call */
typedef struct model {
    uint32_t dt, pdt;
    uint64_t N, C, S, total, mid, inner;
    nkf_strides sx, sy;
} model;

/* max |v| over the elements (n, m, i) a strided tensor addresses */
static double max_abs_tensor(const model *md, const void *p, const nkf_strides *st, uint32_t dt)
{
    double v = 0.0;
    for (uint64_t n = 0; n < md->N; n++)
        for (uint64_t m = 0; m < md->mid; m++)
            for (uint64_t i = 0; i < md->inner; i++) {
                const double e = fabs((double)nkf_widen(dt, p, (size_t)(n * st->s0 + m * st->s1 + i)));
                v = e > v || isnan(e) ? e : v; /* NaN stays */
            }
    return v;
}

static double max_abs(const void *p, size_t count, uint32_t dt)
{
    double v = 0.0;
    for (size_t i = 0; i < count; i++) {
        const double e = fabs((double)nkf_widen(dt, p, i));
        v = e > v || isnan(e) ? e : v;
    }
    return v;
}

static double max_abs_f64(const double *p, size_t count)
{
    double v = 0.0;
    for (size_t i = 0; i < count; i++) {
        const double e = fabs(p[i]);
        v = e > v || isnan(e) ? e : v;
    }
    return v;
}

/* Bounds of a successful call's outputs from its inputs: every
 * intermediate, dx, the parameter gradients; all INFINITY (nothing to
 * check) when an input is not finite. */
typedef struct bounds {
    double all, dx, dw, db;
} bounds;

static bounds output_bounds(const args *a, const void *dy, const model *md, size_t nstat)
{
    const bounds none = {INFINITY, INFINITY, INFINITY, INFINITY};
    const double X = max_abs_tensor(md, a->x, &md->sx, md->dt);
    double G = max_abs_tensor(md, dy, &md->sy, md->dt);
    if (a->d->activation == NK_ACT_LEAKY_RELU && fabs((double)a->d->alpha) > 1.0)
        G *= fabs((double)a->d->alpha);
    const double W = a->w ? max_abs(a->w, (size_t)md->C, md->pdt) : 1.0;
    const double Mn = a->op == OP_RMS ? 0.0 : max_abs(a->mean, nstat, NK_DTYPE_F32);
    double S;
    if (a->op == OP_BN_INFER) {
        S = 0.0;
        for (size_t c = 0; c < nstat; c++) {
            const double v = (double)a->inv[c] + a->eps;
            const double r = v > 0.0 ? 1.0 / sqrt(v) : INFINITY;
            S = r > S || isnan(r) ? r : S;
        }
    } else {
        S = max_abs(a->inv, nstat, NK_DTYPE_F32);
    }
    const double D = X + Mn, T = (double)md->total;
    /* |A| / M and |B| / M of the coefficients: the shard's own, or elemt's
     * global sums over the global count */
    double QA = W * G, QB = W * G * D;
    if (a->op == OP_BN_ELEMT) {
        QA = max_abs_f64(a->sdy, (size_t)md->C) / (double)a->count * W;
        QB = max_abs_f64(a->sdyx, (size_t)md->C) / (double)a->count * W;
    }
    bounds b;
    b.dx = S * W * G + S * QA + S * S * S * QB * D;
    b.dw = T * G * D * S;
    b.db = T * G;
    const double parts[] = {X, G, W, Mn, S, D, W * G, T * W * G * (D + 1.0), S * W,
                            S * S * S * QB, b.dx, b.dw, b.db};
    b.all = 0.0;
    for (size_t i = 0; i < sizeof parts / sizeof parts[0]; i++)
        b.all = parts[i] > b.all || isnan(parts[i]) ? parts[i] : b.all;
    return b.all < (double)FLT_MAX / 16 ? b : none;
}

/* the largest finite value of a dtype, halved */
static double dtype_room(uint32_t dt) { return dt == NK_DTYPE_F16 ? 32752.0 : (double)FLT_MAX / 2; }

static void check_finite(const args *a, const bufset *s, const model *md, size_t nstat)
{
    const char *fn = op_names[a->op];
    /* dy as it was (in place it now holds dx) */
    const bounds b = output_bounds(a, a->dx == s->dy.p ? s->dy.copy : a->dy, md, nstat);
    if (!(b.all < INFINITY))
        return;
    if (a->dx && b.dx < dtype_room(md->dt))
        for (uint64_t n = 0; n < md->N; n++)
            for (uint64_t m = 0; m < md->mid; m++)
                for (uint64_t i = 0; i < md->inner; i++) {
                    const size_t e = (size_t)(n * md->sx.s0 + m * md->sx.s1 + i);
                    if (!isfinite(nkf_widen(md->dt, a->dx, e)))
                        nkf_die("%s: dx[%llu, %llu, %llu] = %g from finite inputs (bound %g)", fn,
                                (unsigned long long)n, (unsigned long long)m,
                                (unsigned long long)i, (double)nkf_widen(md->dt, a->dx, e), b.dx);
                }
    for (uint64_t c = 0; c < md->C; c++) {
        if (a->dw && b.dw < dtype_room(md->pdt) && !isfinite(nkf_widen(md->pdt, a->dw, (size_t)c)))
            nkf_die("%s: dweight[%llu] not finite from finite inputs (bound %g)", fn,
                    (unsigned long long)c, b.dw);
        if (a->db && b.db < dtype_room(md->pdt) && !isfinite(nkf_widen(md->pdt, a->db, (size_t)c)))
            nkf_die("%s: dbias[%llu] not finite from finite inputs (bound %g)", fn,
                    (unsigned long long)c, b.db);
        if (a->op == OP_BN_REDUCE && a->sdy && (!isfinite(a->sdy[c]) || !isfinite(a->sdyx[c])))
            nkf_die("%s: sums of channel %llu not finite from finite inputs", fn,
                    (unsigned long long)c);
    }
}

/* Saved statistics: mostly moderate means and positive inverse deviations
 * (so the finiteness check applies), sometimes anything. */
static void fill_stats(nkf_in *in, const args *a, bufset *s)
{
    for (size_t i = 0; s->mean.p && i < s->mean.bytes / 4; i++)
        ((float *)s->mean.p)[i] = nkf_value(in, i);
    for (size_t i = 0; s->inv.p && i < s->inv.bytes / 4; i++) {
        const uint8_t b = nkf_u8(in);
        float v = b < 200 ? (float)(b % 64 + 1) / 32.0f : nkf_value(in, i);
        if (a->op == OP_BN_INFER && b < 200)
            v = (float)(b % 64) / 16.0f; /* running variance */
        ((float *)s->inv.p)[i] = v;
    }
    for (size_t i = 0; s->sdy.p && i < s->sdy.bytes / 8; i++)
        ((double *)s->sdy.p)[i] = (double)nkf_value(in, i) * 4.0;
    for (size_t i = 0; s->sdyx.p && i < s->sdyx.bytes / 8; i++)
        ((double *)s->sdyx.p)[i] = (double)nkf_value(in, i) * 16.0;
}

/* The determinism check: the call again from the outputs' starting bytes
 * with the other kind of context (serial if the first had a pool, else a
 * pool); every output bitwise equal. */
static uint32_t op_layer(int op)
{
    switch (op) {
    case OP_IN: return NK_LAYER_INSTANCE_NORM;
    case OP_GN: return NK_LAYER_GROUP_NORM;
    case OP_LN: return NK_LAYER_LAYER_NORM;
    case OP_RMS: return NK_LAYER_RMS_NORM;
    default: return NK_LAYER_BATCH_NORM;
    }
}

/* With ws, the second call also gets the workspace nk_backward_workspace_size
 * asks for, at an odd address between guards: the same bits (the parameter
 * gradients from the dx pass), nothing written outside it. */
static void rerun(args a, bufset *s, const nk_context *first, nk_threadpool *other, int ws)
{
    const char *fn = op_names[a.op];
    nk_context ctx = NK_CONTEXT_INIT;
    const int pooled = first && first->pool;
    if (!pooled && !other)
        return;
    ctx.pool = pooled ? NULL : other;
    a.ctx = &ctx;
    enum { WG = 64 };
    size_t wbytes = 0;
    unsigned char *wsb = NULL;
    if (ws && nk_backward_workspace_size(op_layer(a.op), a.d, a.groups, &wbytes) == NK_OK &&
        wbytes && wbytes <= ((size_t)64 << 20)) {
        wsb = malloc(wbytes + 2 * WG);
        if (!wsb)
            nkf_die("out of memory");
        memset(wsb, 0x5A, wbytes + 2 * WG);
        ctx.workspace = wsb + WG - 1;
        ctx.workspace_size = wbytes;
    }
    unsigned char *got[NBUF] = {0};
    for (int i = 0; i < NBUF; i++) {
        nkf_buf *b = buf_at(s, i);
        if (b->p && is_output(&a, s, b))
            got[i] = nkf_rewind(b);
    }
    const nk_status st = call(&a);
    if (st != NK_OK)
        nkf_die("%s: %s refused what %s accepted: %s", fn, pooled ? "a serial call" : "a pool",
                pooled ? "a pool" : "a serial call", nk_last_error());
    for (size_t i = 0; wsb && i < wbytes + 2 * WG; i++)
        if ((i < WG - 1 || i >= WG - 1 + wbytes) && wsb[i] != 0x5A)
            nkf_die("%s wrote byte %zd outside its workspace of %zu bytes", fn,
                    (ptrdiff_t)i - (WG - 1), wbytes);
    free(wsb);
    for (int i = 0; i < NBUF; i++) {
        nkf_buf *b = buf_at(s, i);
        nkf_check_guard(b, fn);
        if (!got[i])
            continue;
        const ptrdiff_t k = nkf_first_diff(b, got[i]);
        if (k >= 0)
            nkf_die("%s: output buffer %d differs at byte %td between a serial call and a pool of "
                    "%zu threads",
                    fn, i, k, (pooled ? first->pool : other)->num_threads(
                                  (pooled ? first->pool : other)->ctx));
        free(got[i]);
    }
}

static void fuzz_call(nkf_in *in)
{
    args a = {0};
    a.op = nkf_u8(in) % OP_COUNT;
    const char *fn = op_names[a.op];
    const int rows_op = a.op == OP_LN || a.op == OP_RMS;
    /* must_fail: some error status; unsupported: NK_ERR_UNSUPPORTED when it
     * is the only fault; may_fail: neither required nor excluded */
    int must_fail = 0, unsupported = 0, may_fail = 0;

    /* descriptor */
    nkf_desc dd;
    uint32_t dt, pdt;
    must_fail |= nkf_desc_head(in, &dd, &dt, &pdt);
    nk_tensor_desc *d = &dd.d;
    d->n = nkf_extent(in);
    if (a.op == OP_BN_ELEMT && nkf_u8(in) < 48)
        d->n = 0; /* an empty shard */
    d->c = nkf_extent(in);
    d->spatial = rows_op && nkf_u8(in) < 128 ? 1 : nkf_extent(in);
    d->layout = (uint32_t)nkf_enum(in, 2);
    if (rows_op && nkf_u8(in) < 224)
        d->layout = NK_CHANNELS_LAST;
    const int64_t ext[3] = {d->n, d->c, d->spatial};
    const int shape_bad = d->n < 0 || d->c < 1 || d->spatial < 0 ||
                          !nkf_fits(ext, 3, sizeof(float)) || d->layout > 1u;
    must_fail |= shape_bad;
    /* activation: none / ReLU / LeakyReLU mostly, the unsupported ones and
     * out-of-range codes; alpha from the tensor values (negative, NaN ...) */
    const uint8_t act = nkf_u8(in);
    d->activation = act < 160 ? act % 3 : act < 208 ? act % 6 : nkf_enum(in, 7);
    d->alpha = act & 1 ? nkf_value(in, 0) : act & 2 ? 0.2f : 0.01f;
    if ((uint32_t)d->activation > NK_ACT_GELU_TANH ||
        (d->activation == NK_ACT_LEAKY_RELU && !isfinite(d->alpha)))
        must_fail = 1;
    else if (d->activation >= NK_ACT_SILU || (d->activation == NK_ACT_LEAKY_RELU && d->alpha < 0.0f))
        unsupported = 1;
    const int masked = d->activation == NK_ACT_RELU || d->activation == NK_ACT_LEAKY_RELU;
    if (shape_bad && nkf_u8(in) < 128)
        return; /* mostly spend the input on shapes that run */
    if (!shape_bad && rows_op && d->layout == NK_CHANNELS_FIRST)
        unsupported = 1;

    model md = {.dt = dt, .pdt = pdt};
    int huge = 0;
    if (!shape_bad) {
        md.N = (uint64_t)d->n, md.C = (uint64_t)d->c, md.S = (uint64_t)d->spatial;
        md.total = md.N * md.C * md.S;
        huge = !nkf_small_enough(md.total, 4) || !nkf_small_enough(md.C, 8) ||
               !nkf_small_enough(md.N * md.C, 4) || !nkf_small_enough(md.N * md.S, 4);
    }
    md.mid = d->layout == NK_CHANNELS_LAST ? md.S : md.C;
    md.inner = d->layout == NK_CHANNELS_LAST ? md.C : md.S;
    /* aliasing of dx: in place over dy (equal strides, or any), dx == x,
     * dx == y */
    const uint8_t al = a.op == OP_BN_REDUCE ? 0 : nkf_u8(in);
    const int in_place = al >= 200 && al < 240, same_strides = al < 230;
    const int alias_x = al >= 240 && al < 248, alias_y = al >= 248 && masked;
    nkf_decode_strides(in, d->x_stride, md.mid, md.inner);
    if (in_place && same_strides) {
        d->y_stride[0] = d->x_stride[0];
        d->y_stride[1] = d->x_stride[1];
    } else {
        nkf_decode_strides(in, d->y_stride, md.mid, md.inner);
    }
    if (!shape_bad) {
        md.sx = nkf_resolve(d->x_stride, md.N, md.mid, md.inner, md.total != 0);
        md.sy = nkf_resolve(d->y_stride, md.N, md.mid, md.inner, md.total != 0);
        must_fail |= md.sx.reject || md.sy.reject;
        if ((!md.sx.reject && !nkf_small_enough(md.sx.span, 4)) ||
            (!md.sy.reject && !nkf_small_enough(md.sy.span, 4)))
            huge = 1;
    }

    /* context */
    nk_context ctx = NK_CONTEXT_INIT;
    const uint8_t cb = nkf_u8(in);
    a.ctx = cb < 48 ? NULL : &ctx;
    if (cb >= 96 && cb < 240)
        ctx.pool = nkf_pool(1 + cb % 3);
    else if (cb >= 240 && cb < 248)
        ctx.flags = 1u + (cb & 7), must_fail = 1;
    else if (cb >= 248)
        ctx.reserved[cb & 3] = 1, must_fail = 1;
    nk_threadpool *other = nkf_pool(1 + (cb >> 4) % 3);

    /* scalars */
    if (a.op == OP_BN_INFER) {
        a.eps = nkf_eps(in);
        if (!(a.eps >= 0.0) || isinf(a.eps))
            must_fail = 1;
    }
    if (a.op == OP_GN) {
        a.groups = nkf_u8(in) < 200 ? 1 + (int64_t)(nkf_u8(in) % 8) : nkf_extent(in);
        if (!shape_bad && a.groups > 0 && md.C % (uint64_t)a.groups && nkf_u8(in) < 160)
            a.groups = 1;
        if (a.groups < 1 || (!shape_bad && md.C % (uint64_t)a.groups))
            must_fail = 1;
    }

    /* which arrays are given: one bit each, mostly set */
    const uint16_t pres = nkf_u16(in) | nkf_u16(in);
    const int has_x = pres & 1, has_y = (pres & 2) || alias_y, has_dy = (pres & 4) || in_place,
              has_dx = a.op != OP_BN_REDUCE && ((pres & 8) || in_place || alias_x || alias_y),
              has_w = pres & 16,
              has_mean = (pres & 32) && a.op != OP_RMS, has_inv = pres & 64,
              has_dw = (pres & 128) && a.op != OP_BN_ELEMT,
              has_db = (pres & 256) && a.op != OP_BN_ELEMT && a.op != OP_RMS,
              has_sdy = (pres & 512) && (a.op == OP_BN_REDUCE || a.op == OP_BN_ELEMT),
              has_sdyx = (pres & 1024) && (a.op == OP_BN_REDUCE || a.op == OP_BN_ELEMT);

    if (a.op == OP_BN_ELEMT) {
        const uint8_t k = nkf_u8(in);
        const int64_t own = shape_bad ? 0 : (int64_t)(md.N * md.S);
        a.count = k < 160 ? own + (k & 7) : k < 192 ? own * (1 + (k & 3)) : k < 216 ? own - 1
                                                                                      : nkf_extent(in);
    }

    if (huge) {
        /* every array NULL: only the validation runs */
        a.d = d;
        if (nkf_u8(in) & 1)
            nkf_dirty_error();
        const nk_status st = call(&a);
        NKF_TRACE("%s huge [%lld %lld %lld] -> %d %s\n", fn, (long long)d->n, (long long)d->c,
                  (long long)d->spatial, (int)st, nk_last_error());
        nkf_check_status(st, fn);
        if (must_fail && st == NK_OK)
            nkf_die("%s accepted arguments it must reject", fn);
        if (!must_fail && st != NK_OK && !(unsupported && st == NK_ERR_UNSUPPORTED))
            nkf_die("%s refused a call without outputs: %s", fn, nk_last_error());
        if (!must_fail && unsupported && st != NK_ERR_UNSUPPORTED)
            nkf_die("%s: %s where only NK_ERR_UNSUPPORTED applies", fn, nk_status_string(st));
        return;
    }

    /* buffers: exact sizes; stand-ins for shapes the library must refuse */
    const size_t ex = nkf_esize(dt), pe = nkf_esize(pdt);
    const uint64_t xn = shape_bad || md.sx.reject ? NKF_SMALL : md.sx.span;
    const uint64_t yn = shape_bad || md.sy.reject ? NKF_SMALL : md.sy.span;
    const uint64_t CP = shape_bad ? NKF_SMALL : md.C;
    uint64_t nstat = CP;
    if (!shape_bad) {
        if (a.op == OP_IN)
            nstat = md.N * md.C;
        else if (a.op == OP_GN)
            nstat = a.groups > 0 && (uint64_t)a.groups <= md.C ? md.N * (uint64_t)a.groups : NKF_SMALL;
        else if (rows_op)
            nstat = md.N * md.S;
    }
    bufset s;
    memset(&s, 0, sizeof s);
    nkf_make(in, &s.x, has_x, xn, ex);
    nkf_fill(in, &s.x, dt);
    nkf_make(in, &s.y, has_y, alias_y && xn > yn ? xn : yn, ex);
    nkf_fill(in, &s.y, dt);
    nkf_make(in, &s.dy, has_dy, in_place && !same_strides && xn > yn ? xn : yn, ex);
    nkf_fill(in, &s.dy, dt);
    if (has_dx && !in_place && !alias_x && !alias_y) {
        nkf_make(in, &s.dx, 1, xn, ex);
        nkf_fill(in, &s.dx, dt); /* starting bytes: gaps must keep them */
    }
    nkf_make(in, &s.w, has_w, CP, pe);
    nkf_fill(in, &s.w, pdt);
    nkf_make(in, &s.mean, has_mean, nstat, 4);
    nkf_make(in, &s.inv, has_inv, nstat, 4);
    nkf_make(in, &s.sdy, has_sdy, CP, 8);
    nkf_make(in, &s.sdyx, has_sdyx, CP, 8);
    nkf_make(in, &s.dw, has_dw, CP, pe);
    nkf_make(in, &s.db, has_db, CP, pe);
    nkf_fill(in, &s.dw, pdt);
    nkf_fill(in, &s.db, pdt);
    a.x = s.x.p;
    a.y = s.y.p;
    a.dy = s.dy.p;
    a.dx = in_place ? s.dy.p : alias_x ? s.x.p : alias_y ? s.y.p : s.dx.p;
    a.w = s.w.p;
    a.mean = s.mean.p;
    a.inv = s.inv.p;
    a.sdy = s.sdy.p;
    a.sdyx = s.sdyx.p;
    a.dw = s.dw.p;
    a.db = s.db.p;
    fill_stats(in, &a, &s);

    /* the model's verdict on the pointers */
    /* the outputs (elemt's sums are inputs) */
    const int any = a.dx || a.dw || a.db || (a.op == OP_BN_REDUCE && (a.sdy || a.sdyx));
    const int nonempty = !shape_bad && md.total;
    if (any && nonempty) {
        must_fail |= !a.x || !a.dy || (masked && !a.y);
        if (a.op == OP_BN_ELEMT)
            must_fail |= a.dx && (!a.mean || !a.inv || !a.sdy || !a.sdyx ||
                                  a.count < (int64_t)(md.N * md.S));
        else
            must_fail |= (a.op != OP_RMS && !a.mean) || !a.inv;
    }
    if (a.op == OP_BN_REDUCE && !a.sdy != !a.sdyx)
        must_fail = 1;
    if (a.op == OP_BN_ELEMT && a.count < (int64_t)(md.N * md.S))
        may_fail = 1; /* checked where dx is computed, above */
    if (a.dx && nonempty) {
        must_fail |= alias_x || alias_y;
        if (in_place && !same_strides)
            may_fail = 1; /* the library compares its resolved strides */
    }
    if (a.dx && !nonempty && (alias_x || alias_y || (in_place && !same_strides)))
        may_fail = 1;
    if (pdt != NK_DTYPE_F32 && a.w && md.C > 2048)
        may_fail = 1; /* the widened weight's heap buffer */
    /* desc NULL rarely, and never once the input has run out (reads give 0) */
    a.d = nkf_u8(in) >= 252 ? (must_fail = 1, (const nk_tensor_desc *)NULL) : d;

    /* the call */
    for (int i = 0; i < NBUF; i++)
        nkf_snapshot(buf_at(&s, i));
    if (nkf_u8(in) & 1)
        nkf_dirty_error();
    const nk_status st = call(&a);
    NKF_TRACE("%s dtype %u pdt %u [%lld %lld %lld] layout %u act %d alpha %g ctx %d -> %d %s\n", fn,
              (unsigned)d->dtype, (unsigned)d->param_dtype, (long long)d->n, (long long)d->c,
              (long long)d->spatial, (unsigned)d->layout, (int)d->activation, (double)d->alpha,
              a.ctx ? (a.ctx->pool ? (int)a.ctx->pool->num_threads(a.ctx->pool->ctx) : 0) : -1,
              (int)st, nk_last_error());

    nkf_check_status(st, fn);
    for (int i = 0; i < NBUF; i++) {
        nkf_buf *b = buf_at(&s, i);
        nkf_check_guard(b, fn);
        if (!is_output(&a, &s, b) && !nkf_unchanged(b))
            nkf_die("%s changed input buffer %d", fn, i);
    }
    if (must_fail && st == NK_OK)
        nkf_die("%s accepted arguments it must reject", fn);
    if (!must_fail && !may_fail) {
        if (unsupported && st != NK_ERR_UNSUPPORTED)
            nkf_die("%s returned %s where only NK_ERR_UNSUPPORTED applies (%s)", fn,
                    nk_status_string(st), nk_last_error());
        if (!unsupported && st != NK_OK)
            nkf_die("%s refused valid arguments: %s", fn, nk_last_error());
    }
    if (st != NK_OK) {
        for (int i = 0; i < NBUF; i++)
            if (!nkf_unchanged(buf_at(&s, i)))
                nkf_die("%s failed (%s) but changed buffer %d", fn, nk_last_error(), i);
        free_bufs(&s);
        return;
    }
    if (a.dx && md.total) {
        /* gaps of dx: elements no (n, mid, inner) addresses keep their bytes */
        const nkf_buf *xb = in_place ? &s.dy : &s.dx;
        unsigned char *hit = calloc((size_t)xb->bytes / ex + 1, 1);
        if (!hit)
            nkf_die("out of memory");
        for (uint64_t n = 0; n < md.N; n++)
            for (uint64_t m = 0; m < md.mid; m++)
                memset(hit + n * md.sx.s0 + m * md.sx.s1, 1, (size_t)md.inner);
        for (size_t e = 0; e < xb->bytes / ex; e++)
            if (!hit[e] && memcmp((const char *)xb->p + e * ex, xb->copy + e * ex, ex))
                nkf_die("%s wrote dx element %zu, which lies between rows", fn, e);
        free(hit);
    }
    if (!md.total) {
        for (uint64_t c = 0; c < md.C; c++) {
            if ((a.dw && nkf_widen(pdt, a.dw, (size_t)c) != 0.0f) ||
                (a.db && nkf_widen(pdt, a.db, (size_t)c) != 0.0f))
                nkf_die("%s: an empty tensor's parameter gradient %llu is not 0", fn,
                        (unsigned long long)c);
            if (a.op == OP_BN_REDUCE && a.sdy && (a.sdy[c] != 0.0 || a.sdyx[c] != 0.0))
                nkf_die("%s: an empty shard's sums of channel %llu are not 0", fn,
                        (unsigned long long)c);
        }
    } else if (a.x && a.dy && (a.op == OP_RMS || a.mean) && a.inv &&
               (a.op != OP_BN_ELEMT || (a.sdy && a.sdyx))) {
        check_finite(&a, &s, &md, (size_t)nstat);
    }
    rerun(a, &s, a.ctx, other, cb & 1);
    free_bufs(&s);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    nkf_calls(data, size, fuzz_call);
    return 0;
}
