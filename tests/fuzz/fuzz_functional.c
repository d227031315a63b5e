/*
 * libFuzzer target: the functional API. Each input is a sequence of calls;
 * every call decodes its extents, enums, scalars, NULL choices and tensor
 * data from the input. Buffers are allocated exactly as the shape implies
 * (with guard zones) when that is at most NKF_MAX_BYTES; shapes the size rule
 * rejects get small stand-ins or NULL, which the library must never touch.
 *
 * Checked after every call:
 *   - guard zones intact (and poisoned for ASan, so any access is reported);
 *   - inputs unchanged;
 *   - failure: every output, saved statistic and the running statistics
 *     (struct included) byte-identical, nk_last_error() non-empty;
 *   - success: nk_last_error() empty, num_batches_tracked +1 for BatchNorm
 *     training with running statistics, unchanged for InstanceNorm;
 *   - a shape whose size overflows (or with a negative extent, C == 0, an
 *     unknown layout, a bad eps or activation) is rejected.
 */
#include "fuzz_common.h"

enum {
    OP_BN_TRAIN,
    OP_BN_INFER,
    OP_BN_STATS,
    OP_BN_APPLY,
    OP_INSTANCE,
    OP_GROUP,
    OP_LAYER,
    OP_RMS,
    OP_MOMENTS,
    OP_MERGE_VAR,
    OP_COUNT
};

/* ------------------------------------------------------------------------ */
/* Known library bugs (being fixed); see fuzz_common.h                        */
/* ------------------------------------------------------------------------ */

/* num_batches_tracked == INT64_MAX is accepted and then incremented. */
static int nkf_known_nbt_max(const nk_running_stats *rs)
{
    return NKF_SKIP_KNOWN && rs && rs->num_batches_tracked == INT64_MAX;
}

/* A shape with a zero extent whose other extents (or per-channel arrays)
 * overflow is accepted as empty: covers {0, 2^62, 2^62} (extent-order
 * dependent check) and {0, 0x0AAAAAAAAAAAAAAB, 1} (stats clears a wrapped
 * size, apply_moments reads past the per-channel array). */
static int nkf_known_empty_overflow(int shape_bad, const int64_t *e, int k)
{
    return NKF_SKIP_KNOWN && shape_bad && nkf_has_zero(e, k);
}

/* Found here: C whose floats fit in PTRDIFF_MAX but whose nk_moments (24
 * bytes each) do not, e.g. {1, 0x0AAAAAAAAAAAAAAB, 1}, is accepted with a
 * non-empty tensor too: nk_batch_norm_stats clears a wrapped size and reads
 * x past its end, apply_moments reads past the per-channel array. */
static int nkf_found_moments_array_overflow(int op, int64_t c)
{
    return NKF_SKIP_FOUND && (op == OP_BN_STATS || op == OP_BN_APPLY) &&
           (uint64_t)c > (uint64_t)PTRDIFF_MAX / sizeof(nk_moments) &&
           (uint64_t)c <= (uint64_t)PTRDIFF_MAX / sizeof(float);
}

/* ------------------------------------------------------------------------ */

typedef struct call {
    nkf_buf *out[10];
    int nout;
    nkf_buf *in[10];
    int nin;
    nk_running_stats *rs;
    nk_running_stats rs_copy;
    float *rs_mean, *rs_var; /* the arrays behind rs */
} call;

static void add_out(call *k, nkf_buf *b) { k->out[k->nout++] = b; }
static void add_in(call *k, nkf_buf *b) { k->in[k->nin++] = b; }

static void before(call *k)
{
    for (int i = 0; i < k->nout; i++)
        nkf_snapshot(k->out[i]);
    for (int i = 0; i < k->nin; i++)
        nkf_snapshot(k->in[i]);
    if (k->rs)
        k->rs_copy = *k->rs;
}

static void after(call *k, nk_status st, const char *fn, int must_fail)
{
    nkf_check_status(st, fn);
    for (int i = 0; i < k->nout; i++)
        nkf_check_guard(k->out[i], fn);
    for (int i = 0; i < k->nin; i++) {
        nkf_check_guard(k->in[i], fn);
        if (!nkf_unchanged(k->in[i]))
            nkf_die("%s changed input buffer %d", fn, i);
    }
    if (must_fail && st == NK_OK)
        nkf_die("%s accepted arguments it must reject", fn);
    if (st != NK_OK) {
        for (int i = 0; i < k->nout; i++)
            if (!nkf_unchanged(k->out[i]))
                nkf_die("%s failed (%s: %s) but changed output buffer %d", fn, nk_status_string(st),
                        nk_last_error(), i);
        if (k->rs && memcmp(&k->rs_copy, k->rs, sizeof *k->rs))
            nkf_die("%s failed (%s) but changed the running statistics struct", fn, nk_last_error());
    } else if (k->rs) {
        nk_running_stats a = k->rs_copy, b = *k->rs;
        if (a.mean != b.mean || a.var != b.var || memcmp(&a.momentum, &b.momentum, sizeof a.momentum) ||
            a.cumulative != b.cumulative || a.unbiased != b.unbiased)
            nkf_die("%s changed a configuration field of the running statistics", fn);
    }
}

static void free_all(nkf_buf *b, int n)
{
    for (int i = 0; i < n; i++)
        nkf_free(&b[i]);
}

/* A buffer of count elements of elem bytes. Absent (NULL) unless present;
 * allocated exactly when small enough, else a small stand-in or NULL. */
static void make_buf(nkf_in *in, nkf_buf *b, int present, uint64_t count, int count_ok, size_t elem,
                     int floats)
{
    memset(b, 0, sizeof *b);
    if (!present)
        return;
    uint64_t bytes;
    /* misalign floats by whole floats; moments keep their double alignment */
    size_t shift = (nkf_u8(in) & 3) * (floats ? sizeof(float) : sizeof(double));
    if (count_ok && nkf_mul(count, elem, &bytes) && bytes <= NKF_MAX_BYTES) {
        *b = nkf_alloc((size_t)bytes, shift);
    } else {
        if (nkf_u8(in) & 1)
            return; /* NULL stand-in */
        *b = nkf_alloc(NKF_SMALL * elem, shift);
        count = NKF_SMALL;
    }
    if (floats) {
        float *f = (float *)b->p;
        for (size_t i = 0; i < b->bytes / sizeof(float); i++)
            f[i] = nkf_value(in, i);
    } else {
        memset(b->p, 0, b->bytes);
    }
}


static int eps_bad(double eps) { return !(eps >= 0.0) || isinf(eps); }

static int opts_bad(const nk_options *o)
{
    if (!o)
        return 0;
    if ((unsigned)o->activation > NK_ACT_GELU_TANH)
        return 1;
    return o->activation == NK_ACT_LEAKY_RELU && !isfinite(o->alpha);
}

/* Running statistics: absent, or with any of their fields garbage. */
static nk_running_stats *make_running(nkf_in *in, nk_running_stats *rs, nkf_buf *mean, nkf_buf *var,
                                      int64_t c, int c_ok)
{
    uint8_t b = nkf_u8(in);
    if (b < 80) {
        memset(mean, 0, sizeof *mean);
        memset(var, 0, sizeof *var);
        return NULL;
    }
    make_buf(in, mean, nkf_u8(in) > 8, (uint64_t)c, c_ok, sizeof(float), 1);
    make_buf(in, var, nkf_u8(in) > 8, (uint64_t)c, c_ok, sizeof(float), 1);
    rs->mean = (float *)mean->p;
    rs->var = (float *)var->p;
    rs->momentum = nkf_momentum(in);
    uint8_t f = nkf_u8(in);
    rs->cumulative = f & 1 ? 1 : (f & 2 ? (int)(f >> 2) - 32 : 0);
    rs->unbiased = f & 16 ? 1 : 0;
    rs->num_batches_tracked = nkf_nbt(in);
    return rs;
}

/* Sets the thread-local message to a non-empty or to the empty state, so
 * both "forgot to set" and "forgot to clear" are observable. */
static void prime_error(nkf_in *in)
{
    if (nkf_u8(in) & 1) {
        nkf_dirty_error();
    } else {
        nk_moments m;
        nk_moments_compute(NULL, 0, &m);
    }
}

/* ------------------------------------------------------------------------ */

typedef struct shape_plan {
    nk_shape s;
    int64_t e[3];
    uint64_t total; /* elements, valid when total_ok */
    int total_ok;   /* every extent >= 0 and the product fits in 64 bits */
    int bad;        /* the library must reject the shape */
} shape_plan;

static void decode_shape(nkf_in *in, shape_plan *p)
{
    p->s.n = nkf_extent(in);
    p->s.c = nkf_extent(in);
    p->s.spatial = nkf_extent(in);
    p->s.layout = (nk_layout)nkf_enum(in, 2);
    p->e[0] = p->s.n;
    p->e[1] = p->s.c;
    p->e[2] = p->s.spatial;
    p->total_ok = nkf_count3(p->s.n, p->s.c, p->s.spatial, &p->total);
    NKF_TRACE("shape n=%lld c=%lld spatial=%lld layout=%d\n", (long long)p->s.n, (long long)p->s.c,
              (long long)p->s.spatial, (int)p->s.layout);
    p->bad = p->s.n < 0 || p->s.c < 1 || p->s.spatial < 0 || !nkf_fits(p->e, 3, sizeof(float)) ||
             (unsigned)p->s.layout > NK_CHANNELS_LAST;
}

/* The call needs buffers larger than the harness allocates: skip it. */
static int too_big(const shape_plan *p, uint64_t per_channel_bytes)
{
    if (p->bad)
        return 0;
    return !nkf_small_enough(p->total, sizeof(float)) ||
           !nkf_small_enough((uint64_t)p->s.c, per_channel_bytes);
}

/* x and y (possibly the same buffer). Returns the y pointer. */
static float *make_xy(nkf_in *in, call *k, const shape_plan *p, nkf_buf *x, nkf_buf *y)
{
    uint8_t f = nkf_u8(in);
    make_buf(in, x, f >= 8, p->total, p->total_ok, sizeof(float), 1);
    if (f & 0x80 && x->p) { /* in place */
        memset(y, 0, sizeof *y);
        add_out(k, x);
        return (float *)x->p;
    }
    make_buf(in, y, (f & 7) != 0, p->total, p->total_ok, sizeof(float), 1);
    add_in(k, x);
    add_out(k, y);
    return (float *)y->p;
}

static void fuzz_batch_norm(nkf_in *in, int op)
{
    static const char *const names[] = {"nk_batch_norm_train", "nk_batch_norm_infer",
                                        "nk_batch_norm_stats", "nk_batch_norm_apply_moments"};
    const char *fn = names[op - OP_BN_TRAIN];
    shape_plan p;
    decode_shape(in, &p);
    /* per_channel moments must fit as an array too */
    int pc_bad = (op == OP_BN_STATS || op == OP_BN_APPLY) && p.s.c > 0 &&
                 (uint64_t)p.s.c > (uint64_t)PTRDIFF_MAX / sizeof(nk_moments);
    p.bad |= pc_bad;
    if (nkf_known_empty_overflow(p.bad, p.e, 3) || nkf_found_moments_array_overflow(op, p.s.c))
        return;
    if (too_big(&p, op == OP_BN_STATS || op == OP_BN_APPLY ? sizeof(nk_moments) : sizeof(float)))
        return;
    int c_ok = p.s.c >= 0;
    uint64_t C = (uint64_t)p.s.c;

    enum { X, Y, W, B, SM, SI, RM, RV, MO, NB };
    nkf_buf bf[NB];
    memset(bf, 0, sizeof bf);
    call k = {0};
    nk_options o;
    nk_running_stats rs;
    nk_status st;
    int must_fail = p.bad;

    if (op == OP_BN_STATS) {
        make_buf(in, &bf[X], nkf_u8(in) >= 8, p.total, p.total_ok, sizeof(float), 1);
        make_buf(in, &bf[MO], nkf_u8(in) >= 8, C, c_ok, sizeof(nk_moments), 0);
        add_in(&k, &bf[X]);
        add_out(&k, &bf[MO]);
        prime_error(in);
        before(&k);
        st = nk_batch_norm_stats((const float *)bf[X].p, nkf_u8(in) < 4 ? NULL : &p.s,
                                 (nk_moments *)bf[MO].p);
        after(&k, st, fn, must_fail);
        /* a valid shard: its moments count N * spatial values per channel */
        if (st == NK_OK)
            for (uint64_t c = 0; c < C; c++) {
                const nk_moments *m = (const nk_moments *)bf[MO].p + c;
                if (m->count != (double)p.s.n * (double)p.s.spatial)
                    nkf_die("%s: channel %llu counts %g values", fn, (unsigned long long)c, m->count);
            }
        free_all(bf, NB);
        return;
    }

    float *y = make_xy(in, &k, &p, &bf[X], &bf[Y]);
    uint8_t f = nkf_u8(in);
    make_buf(in, &bf[W], f & 1, C, c_ok, sizeof(float), 1);
    make_buf(in, &bf[B], f & 2, C, c_ok, sizeof(float), 1);
    add_in(&k, &bf[W]);
    add_in(&k, &bf[B]);
    double eps = nkf_eps(in);
    const nk_options *opts = nkf_options(in, &o);
    must_fail |= eps_bad(eps) || opts_bad(opts);

    if (op == OP_BN_INFER) {
        make_buf(in, &bf[RM], nkf_u8(in) >= 8, C, c_ok, sizeof(float), 1);
        make_buf(in, &bf[RV], nkf_u8(in) >= 8, C, c_ok, sizeof(float), 1);
        add_in(&k, &bf[RM]);
        add_in(&k, &bf[RV]);
        prime_error(in);
        before(&k);
        st = nk_batch_norm_infer((const float *)bf[X].p, nkf_u8(in) < 4 ? NULL : &p.s,
                                 (const float *)bf[W].p, (const float *)bf[B].p,
                                 (const float *)bf[RM].p, (const float *)bf[RV].p, eps, y, opts);
        after(&k, st, fn, must_fail);
        free_all(bf, NB);
        return;
    }

    make_buf(in, &bf[SM], f & 4, C, c_ok, sizeof(float), 0);
    make_buf(in, &bf[SI], f & 8, C, c_ok, sizeof(float), 0);
    add_out(&k, &bf[SM]);
    add_out(&k, &bf[SI]);
    nk_running_stats *run = make_running(in, &rs, &bf[RM], &bf[RV], p.s.c, c_ok);
    add_out(&k, &bf[RM]);
    add_out(&k, &bf[RV]);
    k.rs = run;
    if (nkf_known_nbt_max(run))
        goto done;

    if (op == OP_BN_APPLY) {
        /* the moments: from nk_batch_norm_stats (a consistent shard) or fuzzed */
        make_buf(in, &bf[MO], nkf_u8(in) >= 8, C, c_ok, sizeof(nk_moments), 0);
        add_in(&k, &bf[MO]);
        if (bf[MO].p) {
            nk_moments *mo = (nk_moments *)bf[MO].p;
            size_t nmo = bf[MO].bytes / sizeof *mo;
            if ((nkf_u8(in) & 3) && !p.bad && bf[X].p) {
                if (nk_batch_norm_stats((const float *)bf[X].p, &p.s, mo) != NK_OK)
                    nkf_die("nk_batch_norm_stats rejected a shape apply_moments will get: %s",
                            nk_last_error());
            } else {
                static const double counts[] = {0, 1, 2, 3, 4, 1.5, -1, NAN, INFINITY, 1e300,
                                                9007199254740993.0, -0.0};
                for (size_t c = 0; c < nmo; c++) {
                    uint8_t b = nkf_u8(in);
                    mo[c].count = b < 128 ? (double)p.s.n * (double)p.s.spatial
                                          : counts[b % (sizeof counts / sizeof counts[0])];
                    mo[c].mean = nkf_value(in, c);
                    mo[c].m2 = nkf_u8(in) & 1 ? fabs(nkf_value(in, c)) : nkf_value(in, c);
                }
            }
        }
        prime_error(in);
        before(&k);
        st = nk_batch_norm_apply_moments((const float *)bf[X].p, nkf_u8(in) < 4 ? NULL : &p.s,
                                         (const nk_moments *)bf[MO].p, (const float *)bf[W].p,
                                         (const float *)bf[B].p, eps, run, y, (float *)bf[SM].p,
                                         (float *)bf[SI].p, opts);
    } else {
        prime_error(in);
        before(&k);
        st = nk_batch_norm_train((const float *)bf[X].p, nkf_u8(in) < 4 ? NULL : &p.s,
                                 (const float *)bf[W].p, (const float *)bf[B].p, eps, run, y,
                                 (float *)bf[SM].p, (float *)bf[SI].p, opts);
    }
    after(&k, st, fn, must_fail);
    if (st == NK_OK && run && run->num_batches_tracked != k.rs_copy.num_batches_tracked + 1)
        nkf_die("%s: num_batches_tracked went from %lld to %lld", fn,
                (long long)k.rs_copy.num_batches_tracked, (long long)run->num_batches_tracked);
done:
    free_all(bf, NB);
}

static void fuzz_instance_group(nkf_in *in, int op)
{
    const char *fn = op == OP_INSTANCE ? "nk_instance_norm" : "nk_group_norm";
    shape_plan p;
    decode_shape(in, &p);
    int64_t groups = op == OP_GROUP ? (nkf_u8(in) < 200 ? 1 + (p.s.c > 0 ? (int64_t)(nkf_u8(in) % 8) : 0)
                                                        : nkf_extent(in))
                                    : 0;
    if (op == OP_GROUP && groups > 0 && p.s.c > 0 && nkf_u8(in) < 128 && p.s.c % groups)
        groups = 1; /* mostly divisible */
    if (nkf_known_empty_overflow(p.bad, p.e, 3))
        return;
    /* saves: N * C (instance) or N * groups values */
    uint64_t nsave = 0;
    int save_ok = p.s.n >= 0 && nkf_mul((uint64_t)p.s.n, (uint64_t)(op == OP_GROUP ? groups : p.s.c),
                                        &nsave) && (op == OP_INSTANCE || groups >= 0) && p.s.c >= 0;
    if (too_big(&p, sizeof(float)) || (!p.bad && save_ok && !nkf_small_enough(nsave, sizeof(float))))
        return;
    int c_ok = p.s.c >= 0;
    uint64_t C = (uint64_t)p.s.c;

    enum { X, Y, W, B, SM, SI, RM, RV, NB };
    nkf_buf bf[NB];
    memset(bf, 0, sizeof bf);
    call k = {0};
    nk_options o;
    nk_running_stats rs;
    nk_status st;

    float *y = make_xy(in, &k, &p, &bf[X], &bf[Y]);
    uint8_t f = nkf_u8(in);
    make_buf(in, &bf[W], f & 1, C, c_ok, sizeof(float), 1);
    make_buf(in, &bf[B], f & 2, C, c_ok, sizeof(float), 1);
    make_buf(in, &bf[SM], f & 4, nsave, save_ok, sizeof(float), 0);
    make_buf(in, &bf[SI], f & 8, nsave, save_ok, sizeof(float), 0);
    add_in(&k, &bf[W]);
    add_in(&k, &bf[B]);
    add_out(&k, &bf[SM]);
    add_out(&k, &bf[SI]);
    double eps = nkf_eps(in);
    const nk_options *opts = nkf_options(in, &o);
    int must_fail = p.bad || eps_bad(eps) || opts_bad(opts);
    const nk_shape *sp = nkf_u8(in) < 4 ? NULL : &p.s;

    if (op == OP_INSTANCE) {
        int use_input = f & 16 ? 1 : (f & 32 ? 0 : (int)(f >> 6) - 1);
        nk_running_stats *run = make_running(in, &rs, &bf[RM], &bf[RV], p.s.c, c_ok);
        add_out(&k, &bf[RM]);
        add_out(&k, &bf[RV]);
        k.rs = run;
        prime_error(in);
        before(&k);
        st = nk_instance_norm((const float *)bf[X].p, sp, (const float *)bf[W].p,
                              (const float *)bf[B].p, eps, use_input, run, y, (float *)bf[SM].p,
                              (float *)bf[SI].p, opts);
        after(&k, st, fn, must_fail);
        if (st == NK_OK && run && run->num_batches_tracked != k.rs_copy.num_batches_tracked)
            nkf_die("%s changed num_batches_tracked", fn);
    } else {
        prime_error(in);
        before(&k);
        st = nk_group_norm((const float *)bf[X].p, sp, groups, (const float *)bf[W].p,
                           (const float *)bf[B].p, eps, y, (float *)bf[SM].p, (float *)bf[SI].p, opts);
        after(&k, st, fn, must_fail || groups < 1);
    }
    free_all(bf, NB);
}

static void fuzz_rows(nkf_in *in, int op)
{
    const char *fn = op == OP_LAYER ? "nk_layer_norm" : "nk_rms_norm";
    int64_t rows = nkf_extent(in), cols = nkf_extent(in);
    int64_t e[2] = {rows, cols};
    int bad = rows < 0 || cols < 1 || !nkf_fits(e, 2, sizeof(float));
    if (nkf_known_empty_overflow(bad, e, 2))
        return;
    uint64_t total = 0;
    int total_ok = rows >= 0 && cols >= 0 && nkf_mul((uint64_t)rows, (uint64_t)cols, &total);
    if (!bad && (!nkf_small_enough(total, sizeof(float)) || !nkf_small_enough((uint64_t)cols, sizeof(float)) ||
                 !nkf_small_enough((uint64_t)rows, sizeof(float))))
        return;

    enum { X, Y, W, B, SM, SI, NB };
    nkf_buf bf[NB];
    memset(bf, 0, sizeof bf);
    call k = {0};
    nk_options o;
    nk_status st;
    shape_plan p = {.total = total, .total_ok = total_ok};
    float *y = make_xy(in, &k, &p, &bf[X], &bf[Y]);
    uint8_t f = nkf_u8(in);
    make_buf(in, &bf[W], f & 1, (uint64_t)cols, cols >= 0, sizeof(float), 1);
    make_buf(in, &bf[B], f & 2, (uint64_t)cols, cols >= 0, sizeof(float), 1);
    make_buf(in, &bf[SM], f & 4, (uint64_t)rows, rows >= 0, sizeof(float), 0);
    make_buf(in, &bf[SI], f & 8, (uint64_t)rows, rows >= 0, sizeof(float), 0);
    add_in(&k, &bf[W]);
    add_in(&k, &bf[B]);
    add_out(&k, &bf[SM]);
    add_out(&k, &bf[SI]);
    double eps = (f & 16) ? NK_RMS_EPS_DEFAULT : nkf_eps(in);
    const nk_options *opts = nkf_options(in, &o);
    int must_fail = bad || eps_bad(eps) || opts_bad(opts);
    prime_error(in);
    before(&k);
    if (op == OP_LAYER)
        st = nk_layer_norm((const float *)bf[X].p, rows, cols, (const float *)bf[W].p,
                           (const float *)bf[B].p, eps, y, (float *)bf[SM].p, (float *)bf[SI].p, opts);
    else
        st = nk_rms_norm((const float *)bf[X].p, rows, cols, (const float *)bf[W].p, eps, y,
                         (float *)bf[SI].p, opts);
    after(&k, st, fn, must_fail);
    free_all(bf, NB);
}

static void fuzz_moments(nkf_in *in)
{
    static const char fn[] = "nk_moments_compute";
    int64_t n = nkf_extent(in);
    int bad = n < 0 || (uint64_t)n > (uint64_t)PTRDIFF_MAX / sizeof(float);
    if (!bad && !nkf_small_enough((uint64_t)n, sizeof(float)))
        return;
    nkf_buf x, out;
    call k = {0};
    make_buf(in, &x, nkf_u8(in) >= 8, (uint64_t)n, n >= 0, sizeof(float), 1);
    make_buf(in, &out, nkf_u8(in) >= 8, 1, 1, sizeof(nk_moments), 0);
    add_in(&k, &x);
    add_out(&k, &out);
    prime_error(in);
    before(&k);
    nk_status st = nk_moments_compute((const float *)x.p, n, (nk_moments *)out.p);
    after(&k, st, fn, bad);
    if (st == NK_OK) {
        const nk_moments *m = (const nk_moments *)out.p;
        if (m->count != (double)n)
            nkf_die("%s: count %g for %lld values", fn, m->count, (long long)n);
        if (n && x.p) {
            int finite = 1;
            for (int64_t i = 0; i < n; i++)
                finite &= isfinite(((const float *)x.p)[i]);
            if (finite && (!isfinite(m->mean) || !(m->m2 >= 0.0)))
                nkf_die("%s: finite input gave mean %g m2 %g", fn, m->mean, m->m2);
        }
    }
    nkf_free(&x);
    nkf_free(&out);
}

static void fuzz_merge_var(nkf_in *in)
{
    static const double tab[] = {0, 1, 2, 3, -1, 0.5, NAN, INFINITY, -INFINITY, 1e300, -0.0,
                                 1e-300, 9007199254740993.0, 4.9e-324};
    nk_moments a, b;
    a.count = nkf_double_from(in, tab, sizeof tab / sizeof tab[0]);
    a.mean = nkf_double_from(in, tab, sizeof tab / sizeof tab[0]);
    a.m2 = nkf_double_from(in, tab, sizeof tab / sizeof tab[0]);
    b.count = nkf_double_from(in, tab, sizeof tab / sizeof tab[0]);
    b.mean = nkf_double_from(in, tab, sizeof tab / sizeof tab[0]);
    b.m2 = nkf_double_from(in, tab, sizeof tab / sizeof tab[0]);
    nkf_buf ba = nkf_alloc(sizeof a, 0), bb = nkf_alloc(sizeof b, 0);
    memcpy(ba.p, &a, sizeof a);
    memcpy(bb.p, &b, sizeof b);
    nkf_snapshot(&bb);
    uint8_t f = nkf_u8(in);
    nk_moments_merge(f & 1 ? NULL : (nk_moments *)ba.p, f & 2 ? NULL : (const nk_moments *)bb.p);
    if (f & 4) /* self-merge */
        nk_moments_merge((nk_moments *)ba.p, (const nk_moments *)ba.p);
    if (!nkf_unchanged(&bb))
        nkf_die("nk_moments_merge changed its const argument");
    (void)nk_moments_var(f & 8 ? NULL : (const nk_moments *)ba.p, (int)(f >> 4) - 4);
    double v = nk_moments_var(NULL, 1);
    if (!isnan(v))
        nkf_die("nk_moments_var(NULL) = %g", v);
    nkf_check_guard(&ba, "nk_moments_merge");
    nkf_check_guard(&bb, "nk_moments_merge");
    nkf_free(&ba);
    nkf_free(&bb);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    nkf_in in = {data, size, 0};
    for (int calls = 0; calls < 4 && nkf_left(&in); calls++) {
        int op = nkf_u8(&in) % OP_COUNT;
        NKF_TRACE("op %d\n", op);
        switch (op) {
        case OP_BN_TRAIN: case OP_BN_INFER: case OP_BN_STATS: case OP_BN_APPLY:
            fuzz_batch_norm(&in, op);
            break;
        case OP_INSTANCE: case OP_GROUP:
            fuzz_instance_group(&in, op);
            break;
        case OP_LAYER: case OP_RMS:
            fuzz_rows(&in, op);
            break;
        case OP_MOMENTS:
            fuzz_moments(&in);
            break;
        default:
            fuzz_merge_var(&in);
            break;
        }
    }
    return 0;
}
