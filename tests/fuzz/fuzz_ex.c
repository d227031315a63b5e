/*
 * libFuzzer target: the _ex entry points (context + tensor descriptor).
 * Each input is a sequence of calls; every call decodes its operator, the
 * descriptor (struct_size, dtype, param_dtype, layout, extents, strides,
 * activation, reserved fields), the context (none, a 2-thread pool, bad
 * fields) and the tensor data. x and y are allocated exactly as their
 * strides address them (gaps included), in the descriptor's element size,
 * with guard zones.
 *
 * Checked after every call:
 *   - guard zones intact; inputs unchanged (x, weight, bias, moments);
 *   - failure: every output byte-identical, nk_last_error() non-empty;
 *   - success: nk_last_error() empty, and y's gaps (elements between
 *     strided rows and samples) untouched;
 *   - rejected when it must be: unknown dtype, param_dtype other than fp32
 *     or dtype, non-zero reserved2, a struct_size below the first version,
 *     non-zero bytes past the known struct, strides that make rows or
 *     samples overlap or address past PTRDIFF_MAX, a bad shape, eps or
 *     activation, bad context fields;
 *   - fp16 / bf16, successful call: y equals the fp32 path run on the
 *     exactly widened x and parameters, rounded once to the 16-bit format,
 *     bit for bit, and the saved and running statistics equal the fp32
 *     path's (the same arithmetic).
 */
#include <stddef.h>

#include "fuzz_common.h"

enum { OP_BN_TRAIN, OP_BN_INFER, OP_BN_STATS, OP_BN_APPLY, OP_IN, OP_GN, OP_LN, OP_RMS, OP_COUNT };
static const char *const op_names[OP_COUNT] = {
    "nk_batch_norm_train_ex", "nk_batch_norm_infer_ex", "nk_batch_norm_stats_ex",
    "nk_batch_norm_apply_moments_ex", "nk_instance_norm_ex", "nk_group_norm_ex",
    "nk_layer_norm_ex", "nk_rms_norm_ex"};

typedef struct bufset {
    nkf_buf x, y, w, b, sm, si, rm, rv, mo;
} bufset;

static void free_set(bufset *s)
{
    nkf_buf *all[] = {&s->x, &s->y, &s->w, &s->b, &s->sm, &s->si, &s->rm, &s->rv, &s->mo};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        nkf_free(all[i]);
}

/* The call itself; every pointer as decoded. */
typedef struct args {
    int op;
    const nk_context *ctx;
    const nk_tensor_desc *d;
    const void *x;
    void *y;
    const void *w, *b;
    double eps;
    int64_t groups;
    int use_input;
    nk_running_stats *rs;
    float *rm, *rv, *sm, *si;
    nk_moments *mo;
} args;

static nk_status call(const args *a)
{
    switch (a->op) {
    case OP_BN_TRAIN:
        return nk_batch_norm_train_ex(a->ctx, a->d, a->x, a->y, a->w, a->b, a->eps, a->rs, a->sm,
                                      a->si);
    case OP_BN_INFER:
        return nk_batch_norm_infer_ex(a->ctx, a->d, a->x, a->y, a->w, a->b, a->rm, a->rv, a->eps);
    case OP_BN_STATS: return nk_batch_norm_stats_ex(a->ctx, a->d, a->x, a->mo);
    case OP_BN_APPLY:
        return nk_batch_norm_apply_moments_ex(a->ctx, a->d, a->x, a->y, a->mo, a->w, a->b, a->eps,
                                              a->rs, a->sm, a->si);
    case OP_IN:
        return nk_instance_norm_ex(a->ctx, a->d, a->x, a->y, a->w, a->b, a->eps, a->use_input,
                                   a->rs, a->sm, a->si);
    case OP_GN:
        return nk_group_norm_ex(a->ctx, a->d, a->x, a->y, a->groups, a->w, a->b, a->eps, a->sm,
                                a->si);
    case OP_LN: return nk_layer_norm_ex(a->ctx, a->d, a->x, a->y, a->w, a->b, a->eps, a->sm, a->si);
    default: return nk_rms_norm_ex(a->ctx, a->d, a->x, a->y, a->w, a->eps, a->si);
    }
}

static int bytes_equal(const void *a, const void *b, size_t n) { return !n || !memcmp(a, b, n); }

/* The fp32 path on the widened x (dense) and parameters: its y rounded to
 * dt must be y, its statistics the call's. xs: x before the call. */
static void differential(const args *a, const bufset *s, const unsigned char *xs, uint32_t dt,
                         uint32_t pdt, uint64_t N, uint64_t mid, uint64_t inner,
                         const nkf_strides *sx, const nkf_strides *sy,
                         const nk_running_stats *rs0, const float *rm0, const float *rv0)
{
    const char *fn = op_names[a->op];
    const uint64_t C = (uint64_t)a->d->c;
    /* x and y of the fp32 call strided as the call's, so it takes the same
     * kernel paths in the same order */
    float *xf = malloc((size_t)(sx->span ? sx->span : 1) * sizeof(float));
    float *yf = malloc((size_t)(sy->span ? sy->span : 1) * sizeof(float));
    float *wf = malloc((size_t)C * sizeof(float)), *bf = malloc((size_t)C * sizeof(float));
    const size_t nsave = s->si.bytes > s->sm.bytes ? s->si.bytes : s->sm.bytes;
    float *sm = malloc(nsave + 4), *si = malloc(nsave + 4);
    float *rm = malloc((size_t)C * sizeof(float) + 4), *rv = malloc((size_t)C * sizeof(float) + 4);
    nk_moments *mo = malloc((size_t)C * sizeof(nk_moments) + 8);
    if (!xf || !yf || !wf || !bf || !sm || !si || !rm || !rv || !mo)
        nkf_die("out of memory");
    for (uint64_t e = 0; e < sx->span; e++)
        xf[e] = nkf_widen(dt, xs, (size_t)e);
    for (uint64_t c = 0; c < C; c++) {
        wf[c] = a->w ? nkf_widen(pdt, a->w, (size_t)c) : 0.0f;
        bf[c] = a->b ? nkf_widen(pdt, a->b, (size_t)c) : 0.0f;
    }
    if (rm0 && s->rm.p)
        memcpy(rm, rm0, s->rm.bytes);
    if (rv0 && s->rv.p)
        memcpy(rv, rv0, s->rv.bytes);
    nk_running_stats rs;
    if (rs0) {
        rs = *rs0;
        rs.mean = rm;
        rs.var = rv;
    }
    nk_tensor_desc d = NK_TENSOR_DESC_INIT;
    d.n = a->d->n;
    d.c = a->d->c;
    d.spatial = a->d->spatial;
    d.layout = a->d->layout;
    d.activation = a->d->activation;
    d.alpha = a->d->alpha;
    memcpy(d.x_stride, a->d->x_stride, sizeof d.x_stride);
    memcpy(d.y_stride, a->d->y_stride, sizeof d.y_stride);
    args r = *a;
    r.d = &d;
    r.x = xf;
    r.y = a->x == a->y ? xf : yf; /* in place stays in place */
    r.w = a->w ? wf : NULL;
    r.b = a->b ? bf : NULL;
    r.sm = a->sm ? sm : NULL;
    r.si = a->si ? si : NULL;
    r.rs = rs0 ? &rs : NULL;
    if (a->op == OP_BN_INFER) {
        r.rm = rm;
        r.rv = rv;
    }
    if (a->op == OP_BN_STATS)
        r.mo = mo;
    const nk_status st = call(&r);
    if (st != NK_OK)
        nkf_die("%s: the fp32 path refused what dtype %u accepted: %s", fn, (unsigned)dt,
                nk_last_error());
    if (a->op == OP_BN_STATS) {
        if (!bytes_equal(mo, a->mo, (size_t)C * sizeof(nk_moments)))
            nkf_die("%s: dtype %u moments differ from the fp32 path", fn, (unsigned)dt);
    } else {
        for (uint64_t n = 0; n < N; n++)
            for (uint64_t m = 0; m < mid; m++)
                for (uint64_t i = 0; i < inner; i++) {
                    const float v = ((const float *)r.y)[n * sy->s0 + m * sy->s1 + i];
                    const uint16_t got = ((const uint16_t *)a->y)[n * sy->s0 + m * sy->s1 + i];
                    const uint16_t want = nkf_narrow(dt, v);
                    /* NaN: which operand's sign and payload an operation
                     * passes on is not specified; NaN-ness is */
                    const int nan = isnan(v) && isnan(nkf_widen(dt, &got, 0));
                    if (got != want && !nan)
                        nkf_die("%s: dtype %u y[%llu, %llu, %llu] = %#06x, fp32 path %a -> %#06x",
                                fn, (unsigned)dt, (unsigned long long)n, (unsigned long long)m,
                                (unsigned long long)i, got, (double)v, nkf_narrow(dt, v));
                }
    }
    if ((a->sm && !bytes_equal(sm, a->sm, s->sm.bytes)) ||
        (a->si && !bytes_equal(si, a->si, s->si.bytes)))
        nkf_die("%s: dtype %u saved statistics differ from the fp32 path", fn, (unsigned)dt);
    if (rs0 && ((s->rm.p && !bytes_equal(rm, s->rm.p, s->rm.bytes)) ||
                (s->rv.p && !bytes_equal(rv, s->rv.p, s->rv.bytes))))
        nkf_die("%s: dtype %u running statistics differ from the fp32 path", fn, (unsigned)dt);
    free(xf);
    free(yf);
    free(wf);
    free(bf);
    free(sm);
    free(si);
    free(rm);
    free(rv);
    free(mo);
}

static void fuzz_call(nkf_in *in)
{
    args a = {0};
    a.op = nkf_u8(in) % OP_COUNT;
    const char *fn = op_names[a.op];
    int must_fail = 0;

    /* descriptor */
    nkf_desc dd;
    uint32_t dt, pdt;
    must_fail |= nkf_desc_head(in, &dd, &dt, &pdt);
    nk_tensor_desc *d = &dd.d;
    d->n = nkf_extent(in);
    d->c = nkf_extent(in);
    d->spatial = a.op >= OP_LN && nkf_u8(in) < 128 ? 1 : nkf_extent(in);
    const int lay = nkf_enum(in, 2);
    d->layout = (uint32_t)lay;
    if (a.op >= OP_LN && nkf_u8(in) < 224)
        d->layout = NK_CHANNELS_LAST;
    const int64_t ext[3] = {d->n, d->c, d->spatial};
    const int shape_bad = d->n < 0 || d->c < 1 || d->spatial < 0 || !nkf_fits(ext, 3, sizeof(float)) ||
                          d->layout > 1u;
    must_fail |= shape_bad;
    const uint8_t act = nkf_u8(in);
    d->activation = act < 200 ? act % 7 : nkf_enum(in, 7);
    d->alpha = act & 1 ? nkf_value(in, 0) : 0.01f;
    const int has_y = a.op != OP_BN_STATS;
    if (has_y && ((uint32_t)d->activation > NK_ACT_GELU_TANH ||
                  (d->activation == NK_ACT_LEAKY_RELU && !isfinite(d->alpha))))
        must_fail = 1;
    if (shape_bad && nkf_u8(in) < 128)
        return; /* mostly spend the input on shapes that run */

    uint64_t N = 0, C = 0, S = 0, total = 0;
    if (!shape_bad) {
        N = (uint64_t)d->n, C = (uint64_t)d->c, S = (uint64_t)d->spatial;
        total = N * C * S;
        if (!nkf_small_enough(total, 4) || !nkf_small_enough(C, sizeof(nk_moments)) ||
            !nkf_small_enough(N * C, 4) || !nkf_small_enough(N * S, 4))
            return;
    }
    const uint64_t mid = d->layout == NK_CHANNELS_LAST ? S : C;
    const uint64_t inner = d->layout == NK_CHANNELS_LAST ? C : S;
    nkf_decode_strides(in, d->x_stride, mid, inner);
    const uint8_t ip = nkf_u8(in);
    const int in_place = has_y && ip >= 224;
    if (in_place) {
        d->y_stride[0] = d->x_stride[0];
        d->y_stride[1] = d->x_stride[1];
    } else {
        nkf_decode_strides(in, d->y_stride, mid, inner);
    }
    nkf_strides sx = {0}, sy = {0};
    if (!shape_bad) {
        sx = nkf_resolve(d->x_stride, N, mid, inner, total != 0);
        sy = has_y ? nkf_resolve(d->y_stride, N, mid, inner, total != 0) : sx;
        must_fail |= sx.reject || sy.reject;
        if ((!sx.reject && !nkf_small_enough(sx.span, 4)) || (!sy.reject && !nkf_small_enough(sy.span, 4)))
            return;
    }
    const size_t ex = nkf_esize(dt);

    /* context */
    nk_context ctx = NK_CONTEXT_INIT;
    const uint8_t cb = nkf_u8(in);
    a.ctx = cb < 64 ? NULL : &ctx;
    if (cb >= 128 && cb < 240)
        ctx.pool = nkf_pool(2);
    else if (cb >= 240 && cb < 248)
        ctx.flags = 1u + (cb & 7), must_fail = 1;
    else if (cb >= 248)
        ctx.reserved[cb & 3] = 1, must_fail = 1;

    /* buffers */
    bufset s;
    memset(&s, 0, sizeof s);
    const uint8_t pres = nkf_u8(in);
    const uint64_t xn = shape_bad || sx.reject ? NKF_SMALL : sx.span;
    nkf_make(in, &s.x, pres >= 2, xn, ex);
    nkf_fill(in, &s.x, dt);
    must_fail |= !s.x.p && total;
    if (has_y) {
        if (in_place && s.x.p) {
            a.y = s.x.p;
        } else {
            const uint64_t yn = shape_bad || sy.reject ? NKF_SMALL : sy.span;
            nkf_make(in, &s.y, (pres & 3) != 1, yn, ex);
            nkf_fill(in, &s.y, dt);
            a.y = s.y.p;
            must_fail |= !s.y.p && total;
        }
    }
    a.x = s.x.p;
    const uint64_t CP = shape_bad ? NKF_SMALL : C;
    const uint8_t f = nkf_u8(in);
    if (a.op != OP_BN_STATS) {
        nkf_make(in, &s.w, f & 1, CP, nkf_esize(pdt));
        nkf_make(in, &s.b, (f & 2) && a.op != OP_RMS, CP, nkf_esize(pdt));
        nkf_fill(in, &s.w, pdt);
        nkf_fill(in, &s.b, pdt);
        a.w = s.w.p;
        a.b = s.b.p;
    }
    a.eps = a.op == OP_RMS && (f & 16) ? NK_RMS_EPS_DEFAULT : nkf_eps(in);
    if (has_y && (!(a.eps >= 0.0) || isinf(a.eps)))
        must_fail = 1;
    if (a.op == OP_GN) {
        a.groups = nkf_u8(in) < 200 ? 1 + (int64_t)(nkf_u8(in) % 8) : nkf_extent(in);
        if (!shape_bad && a.groups > 0 && C % (uint64_t)a.groups && nkf_u8(in) < 160)
            a.groups = 1;
        if (a.groups < 1)
            must_fail = 1;
    }
    /* saves: BN C, IN N*C, GN N*G, LN/RMS rows N*S */
    uint64_t nsave = CP;
    if (!shape_bad) {
        if (a.op == OP_IN)
            nsave = N * C;
        else if (a.op == OP_GN)
            nsave = a.groups > 0 && (uint64_t)a.groups <= C ? N * (uint64_t)a.groups : NKF_SMALL;
        else if (a.op >= OP_LN)
            nsave = N * S;
    }
    if (a.op != OP_BN_INFER && a.op != OP_BN_STATS) {
        nkf_make(in, &s.sm, (f & 4) && a.op != OP_RMS, nsave, 4);
        nkf_make(in, &s.si, f & 8, nsave, 4);
        a.sm = s.sm.p;
        a.si = s.si.p;
    }
    nk_running_stats rs;
    const int wants_rs = a.op == OP_BN_TRAIN || a.op == OP_BN_APPLY || a.op == OP_IN;
    if (a.op == OP_BN_INFER || (wants_rs && (f & 32))) {
        nkf_make(in, &s.rm, 1, CP, 4);
        nkf_make(in, &s.rv, 1, CP, 4);
        for (size_t i = 0; i < s.rm.bytes / 4; i++) {
            ((float *)s.rm.p)[i] = nkf_value(in, i);
            ((float *)s.rv.p)[i] = fabsf(nkf_value(in, i));
        }
        a.rm = s.rm.p;
        a.rv = s.rv.p;
        if (wants_rs) {
            rs = (nk_running_stats){a.rm, a.rv, f & 64 ? 0.1 : 1.0, (f & 128) != 0, 1,
                                    (int64_t)(nkf_u8(in) % 4)};
            a.rs = &rs;
        }
    }
    if (a.op == OP_IN) {
        a.use_input = nkf_u8(in) < 200 ? 1 : 0;
        if (!a.use_input && !a.rs)
            must_fail = 1;
    }
    if (a.op == OP_BN_STATS || a.op == OP_BN_APPLY) {
        nkf_make(in, &s.mo, nkf_u8(in) >= 8, CP, sizeof(nk_moments));
        a.mo = s.mo.p;
        must_fail |= !a.mo;
        if (a.op == OP_BN_APPLY && a.mo) {
            /* a consistent shard's moments, from the library itself */
            nk_tensor_desc sd = *d;
            sd.struct_size = sizeof sd;
            if (must_fail || !a.x || nk_batch_norm_stats_ex(NULL, &sd, a.x, a.mo) != NK_OK)
                memset(s.mo.p, 0, s.mo.bytes);
        }
    }
    a.d = nkf_u8(in) < 4 ? (must_fail = 1, NULL) : d;

    /* the call */
    nkf_buf *outs[] = {&s.y, &s.sm, &s.si, &s.rm, &s.rv, a.op == OP_BN_STATS ? &s.mo : NULL,
                       in_place ? &s.x : NULL};
    nkf_buf *ins[] = {in_place ? NULL : &s.x, &s.w, &s.b, a.op == OP_BN_APPLY ? &s.mo : NULL,
                      a.op == OP_BN_INFER ? &s.rm : NULL, a.op == OP_BN_INFER ? &s.rv : NULL};
    const size_t no = sizeof outs / sizeof outs[0], ni = sizeof ins / sizeof ins[0];
    for (size_t i = 0; i < no; i++)
        if (outs[i])
            nkf_snapshot(outs[i]);
    for (size_t i = 0; i < ni; i++)
        if (ins[i])
            nkf_snapshot(ins[i]);
    const nk_running_stats rs0 = a.rs ? *a.rs : (nk_running_stats){0};
    if (nkf_u8(in) & 1)
        nkf_dirty_error();
    const nk_status st = call(&a);
    NKF_TRACE("%s dtype %u pdt %u [%lld %lld %lld] layout %u -> %d %s\n", fn, (unsigned)d->dtype,
              (unsigned)d->param_dtype, (long long)d->n, (long long)d->c, (long long)d->spatial,
              (unsigned)d->layout, (int)st, nk_last_error());

    nkf_check_status(st, fn);
    for (size_t i = 0; i < no; i++)
        if (outs[i])
            nkf_check_guard(outs[i], fn);
    for (size_t i = 0; i < ni; i++)
        if (ins[i]) {
            nkf_check_guard(ins[i], fn);
            if (!nkf_unchanged(ins[i]))
                nkf_die("%s changed input buffer %zu", fn, i);
        }
    if (must_fail && st == NK_OK)
        nkf_die("%s accepted arguments it must reject", fn);
    if (st != NK_OK) {
        for (size_t i = 0; i < no; i++)
            if (outs[i] && !nkf_unchanged(outs[i]))
                nkf_die("%s failed (%s) but changed output buffer %zu", fn, nk_last_error(), i);
        if (a.rs && memcmp(&rs0, a.rs, sizeof rs0))
            nkf_die("%s failed but changed the running statistics struct", fn);
    } else if (has_y && a.y && total) {
        /* gaps of y: elements no (n, mid, inner) addresses keep their bytes */
        nkf_buf *yb = in_place ? &s.x : &s.y;
        unsigned char *hit = calloc((size_t)sy.span, 1);
        if (!hit)
            nkf_die("out of memory");
        for (uint64_t n = 0; n < N; n++)
            for (uint64_t m = 0; m < mid; m++)
                memset(hit + n * sy.s0 + m * sy.s1, 1, (size_t)inner);
        for (uint64_t e = 0; e < sy.span; e++)
            if (!hit[e] && memcmp((const char *)yb->p + e * ex, yb->copy + e * ex, ex))
                nkf_die("%s wrote y element %llu, which lies between rows", fn,
                        (unsigned long long)e);
        free(hit);
    }
    if (st == NK_OK && ex == 2 && total && (a.op == OP_BN_STATS || a.y)) {
        const unsigned char *xs = in_place ? s.x.copy : (const unsigned char *)s.x.p;
        differential(&a, &s, xs, dt, pdt, N, mid, inner, &sx, &sy, a.rs ? &rs0 : NULL,
                     a.rs || a.op == OP_BN_INFER ? (const float *)s.rm.copy : NULL,
                     a.rs || a.op == OP_BN_INFER ? (const float *)s.rv.copy : NULL);
    }
    free_set(&s);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    nkf_calls(data, size, fuzz_call);
    return 0;
}
