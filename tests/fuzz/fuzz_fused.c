/*
 * libFuzzer target: the fused LayerNorm / RMSNorm (nk_layer_norm_fused_ex,
 * nk_rms_norm_fused_ex). Each input is a sequence of calls; every call
 * decodes the operator, the descriptor as fuzz_ex does (struct_size, dtype,
 * param_dtype, extents, layout, strides, activation and alpha, y == x), the
 * context (none, serial, a pool of 1 to 3 threads, bad fields), eps, and
 * the fusion: NULL, or a struct with any struct_size (too small, this
 * header's, trailing bytes zero or set), flags (NK_FUSION_SKIP_BROADCAST,
 * unknown bits), reserved fields, skip (NULL or given, dense, padded or raw
 * strides), skip_bias, sum (NULL, its own buffer, or x, skip or y itself),
 * quant (NONE, TENSOR, ROW, garbage), y_dtype (S8, U8, garbage), y_scale
 * (0, negative, NaN, Inf, denormal, huge, tiny ...), y_zero_point (in and
 * out of range) and row_scale. Every array is allocated exactly as its
 * strides address it (a quantized y in bytes) between guard zones, with
 * NaN / Inf / denormal data.
 *
 * Checked after every call:
 *   - the status is a documented code, nk_last_error() empty on success and
 *     non-empty on failure; guard zones intact; inputs unchanged (x and skip
 *     unless sum overwrites them, weight, bias, skip_bias);
 *   - rejected when it must be (bad descriptor, context, shape, strides of x,
 *     y, skip or sum, activation, eps, fusion struct_size, flags, reserved,
 *     quant, y_dtype, y_scale, y_zero_point, sum / skip_bias / broadcast
 *     without skip, ROW without row_scale, forbidden aliasing,
 *     channels-first), accepted otherwise (a 16-bit param_dtype may give
 *     NK_ERR_OUT_OF_MEMORY: its weights are widened on the heap);
 *   - failure: every output (y, sum, row_scale, saved statistics) untouched;
 *   - success: the gaps between strided rows of y and sum untouched; a
 *     serial call and a pooled one bitwise equal (every buffer, from the
 *     same starting bytes);
 *   - sum = (x + skip) + skip_bias in fp32 from the widened elements,
 *     rounded once to the dtype (kernels/cvt.h);
 *   - fp32, quantized: the unquantized call's output v (same arguments,
 *     quant NONE, no sum) quantized exactly: TENSOR saturate(rint((double)v
 *     / (double)y_scale) + y_zero_point), NaN to the zero point; ROW
 *     row_scale[r] = (absmax of row r, NaN ignored) / 127.0f, y with zero
 *     point 0 in [-128, 127], a row whose scale is 0 or not finite all zero;
 *   - fp32, any active fusion, cols <= 4096: the output v and the saved
 *     statistics equal nk_layer_norm_ex / nk_rms_norm_ex on a dense copy of
 *     s = (x + skip) + skip_bias (s = x without skip) computed in float,
 *     bitwise (NaN only as NaN). Longer rows are processed in column chunks
 *     whose moments merge differently from the plain path's pieces, so they
 *     are only checked against themselves (pool, quantization, sum).
 */
#include <stddef.h>

#include "fuzz_common.h"

/* rows up to this many columns must match the plain call bit for bit */
#define REF_COLS 4096

typedef struct bufset {
    nkf_buf x, y, k, kb, sum, w, b, sm, si, rsc;
} bufset;
#define NBUF 10
static nkf_buf *buf_at(bufset *s, int i) { return &s->x + i; }
static const char *const buf_names[NBUF] = {"x",      "y", "skip",      "skip_bias", "sum",
                                            "weight", "bias", "save_mean", "save_invstd",
                                            "row_scale"};

static void free_bufs(bufset *s)
{
    for (int i = 0; i < NBUF; i++)
        nkf_free(buf_at(s, i));
}

/* A fusion struct as a caller passes it, with the bytes a newer header
 * would append. */
typedef struct fusion_in {
    nk_norm_fusion f;
    uint64_t extra[2];
} fusion_in;

typedef struct args {
    int rms;
    const nk_context *ctx;
    const nk_tensor_desc *d;
    const nk_norm_fusion *f;
    const void *x;
    void *y;
    const void *w, *b;
    double eps;
    float *sm, *si;
} args;

static nk_status call(const args *a)
{
    if (a->rms)
        return nk_rms_norm_fused_ex(a->ctx, a->d, a->f, a->x, a->y, a->w, a->eps, a->si);
    return nk_layer_norm_fused_ex(a->ctx, a->d, a->f, a->x, a->y, a->w, a->b, a->eps, a->sm,
                                  a->si);
}

/* The shape model of one call */
typedef struct model {
    uint32_t dt, pdt;
    uint64_t N, C, S, rows, total;
    int bc; /* skip broadcast over the samples */
    nkf_strides sx, sy, sk, ss;
} model;

/* element offset of row r (sample r / S, position r % S) */
static size_t row_at(const nkf_strides *st, uint64_t S, uint64_t r, int bc)
{
    return (size_t)((bc ? 0 : (r / S) * st->s0) + (r % S) * st->s1);
}

static int same_or_nan(float a, float b)
{
    return nk_f32_bits(a) == nk_f32_bits(b) || (isnan(a) && isnan(b));
}

/* s of row r, column c: (x + skip) + skip_bias in fp32, x alone without skip */
static float residual(const model *md, const nk_norm_fusion *f, const void *x, const void *k,
                      uint64_t r, uint64_t c)
{
    float v = nkf_widen(md->dt, x, row_at(&md->sx, md->S, r, 0) + (size_t)c);
    if (f && f->skip) {
        v += nkf_widen(md->dt, k, row_at(&md->sk, md->S, r, md->bc) + (size_t)c);
        if (f->skip_bias)
            v += nkf_widen(md->pdt, f->skip_bias, (size_t)c);
    }
    return v;
}

/* gaps of a strided output: elements no row addresses keep their bytes */
static void check_gaps(const char *fn, const char *what, const nkf_buf *b, const nkf_strides *st,
                       const model *md, size_t esz)
{
    if (!b->p || !md->total)
        return;
    const size_t count = b->bytes / esz;
    unsigned char *hit = calloc(count + 1, 1);
    if (!hit)
        nkf_die("out of memory");
    for (uint64_t r = 0; r < md->rows; r++)
        memset(hit + row_at(st, md->S, r, 0), 1, (size_t)md->C);
    for (size_t e = 0; e < count; e++)
        if (!hit[e] && memcmp((const char *)b->p + e * esz, b->copy + e * esz, esz))
            nkf_die("%s wrote %s element %zu, which lies between rows", fn, what, e);
    free(hit);
}

/* The call again from every buffer's starting bytes with the other kind of
 * context (serial after a pool, a pool after a serial call): every buffer
 * bitwise equal. */
static void rerun(args a, bufset *s, nk_threadpool *other, const char *fn)
{
    nk_context ctx = NK_CONTEXT_INIT;
    const int pooled = a.ctx && a.ctx->pool;
    if (!pooled && !other)
        return;
    ctx.pool = pooled ? NULL : other;
    a.ctx = &ctx;
    unsigned char *got[NBUF] = {0};
    for (int i = 0; i < NBUF; i++) {
        nkf_buf *b = buf_at(s, i);
        if (b->p)
            got[i] = nkf_rewind(b);
    }
    const nk_status st = call(&a);
    if (st != NK_OK)
        nkf_die("%s: %s refused what %s accepted: %s", fn, pooled ? "a serial call" : "a pool",
                pooled ? "a pool" : "a serial call", nk_last_error());
    for (int i = 0; i < NBUF; i++) {
        nkf_buf *b = buf_at(s, i);
        nkf_check_guard(b, fn);
        if (!got[i])
            continue;
        const ptrdiff_t k = nkf_first_diff(b, got[i]);
        if (k >= 0)
            nkf_die("%s: %s differs at byte %td between a serial call and a pool", fn,
                    buf_names[i], k);
        free(got[i]);
    }
}

/* sum = (x + skip) + skip_bias rounded once to the dtype (x and skip as
 * they were before the call) */
static void check_sum(const char *fn, const args *a, const bufset *s, const model *md)
{
    const nk_norm_fusion *f = a->f;
    const void *x0 = s->x.copy, *k0 = f->skip == s->x.p ? s->x.copy : s->k.copy;
    const void *sum = f->sum;
    for (uint64_t r = 0; r < md->rows; r++)
        for (uint64_t c = 0; c < md->C; c++) {
            const float v = residual(md, f, x0, k0, r, c);
            const size_t e = row_at(&md->ss, md->S, r, 0) + (size_t)c;
            const float got = nkf_widen(md->dt, sum, e);
            const float want = md->dt == NK_DTYPE_F32 ? v : nkf_widen(md->dt, &(uint16_t){nkf_narrow(md->dt, v)}, 0);
            if (!same_or_nan(got, want))
                nkf_die("%s: sum[%llu, %llu] = %a, (x + skip) + skip_bias = %a (dtype %u)", fn,
                        (unsigned long long)r, (unsigned long long)c, (double)got, (double)want,
                        (unsigned)md->dt);
        }
}

/* The fp32 checks against the unquantized call and the plain call. */
static void check_fp32(const char *fn, const args *a, const bufset *s, const model *md)
{
    const nk_norm_fusion *f = a->f;
    const size_t ny = (size_t)(md->sy.span ? md->sy.span : 1);
    const size_t nr = (size_t)(md->rows ? md->rows : 1);
    const void *x0 = s->x.copy, *k0 = f->skip == s->x.p ? s->x.copy : s->k.copy;
    float *yq = NULL, *smq = NULL, *siq = NULL;
    const float *v = a->y, *vsm = a->sm, *vsi = a->si;
    if (f->quant) {
        /* v: the unquantized call's output, from the starting bytes */
        /* the whole caller struct: struct_size may cover the appended bytes */
        fusion_in gi = *(const fusion_in *)(const void *)f;
        nk_norm_fusion *g = &gi.f;
        g->quant = NK_QUANT_NONE;
        g->sum = NULL;
        g->row_scale = NULL;
        g->skip = f->skip ? k0 : NULL;
        yq = malloc(ny * sizeof(float));
        smq = malloc(nr * sizeof(float));
        siq = malloc(nr * sizeof(float));
        if (!yq || !smq || !siq)
            nkf_die("out of memory");
        args b = *a;
        b.ctx = NULL;
        b.f = g;
        b.x = x0;
        b.y = yq;
        b.sm = a->sm ? smq : NULL;
        b.si = a->si ? siq : NULL;
        if (call(&b) != NK_OK)
            nkf_die("%s: the unquantized call refused what the quantized one accepted: %s", fn,
                    nk_last_error());
        v = yq;
        vsm = b.sm;
        vsi = b.si;
        if ((a->sm && memcmp(smq, a->sm, nr * 4)) || (a->si && memcmp(siq, a->si, nr * 4)))
            nkf_die("%s: saved statistics differ between the quantized and unquantized call", fn);
        const uint8_t *q = a->y;
        for (uint64_t r = 0; r < md->rows; r++) {
            const size_t o = row_at(&md->sy, md->S, r, 0);
            float scale = f->y_scale;
            int zp = f->y_zero_point, lo = f->y_dtype == NK_DTYPE_U8 ? 0 : -128,
                hi = f->y_dtype == NK_DTYPE_U8 ? 255 : 127;
            if (f->quant == NK_QUANT_ROW) {
                float m = 0.0f;
                for (uint64_t c = 0; c < md->C; c++) {
                    const float e = fabsf(v[o + c]);
                    m = e > m ? e : m; /* NaN ignored */
                }
                scale = m / 127.0f;
                zp = 0, lo = -128, hi = 127;
                if (nk_f32_bits(f->row_scale[r]) != nk_f32_bits(scale))
                    nkf_die("%s: row_scale[%llu] = %a, absmax %a / 127 = %a", fn,
                            (unsigned long long)r, (double)f->row_scale[r], (double)m,
                            (double)scale);
            }
            for (uint64_t c = 0; c < md->C; c++) {
                const float e = v[o + c];
                int want;
                if (f->quant == NK_QUANT_ROW && (!(scale > 0.0f) || !isfinite(scale))) {
                    want = 0;
                } else if (isnan(e)) {
                    want = zp;
                } else {
                    double t = rint((double)e / (double)scale) + (double)zp;
                    t = t < lo ? lo : t > hi ? hi : t;
                    want = (int)t;
                }
                const int got = f->y_dtype == NK_DTYPE_U8 ? (int)q[o + c] : (int)(int8_t)q[o + c];
                if (got != want)
                    nkf_die("%s: quantized y[%llu, %llu] = %d, v = %a scale %a zp %d -> %d", fn,
                            (unsigned long long)r, (unsigned long long)c, got, (double)e,
                            (double)scale, zp, want);
            }
        }
    }
    if (md->C <= REF_COLS) {
        /* the plain call on a dense copy of s */
        float *sx = malloc((size_t)(md->total ? md->total : 1) * sizeof(float));
        float *sy = malloc((size_t)(md->total ? md->total : 1) * sizeof(float));
        float *rsm = malloc(nr * sizeof(float)), *rsi = malloc(nr * sizeof(float));
        if (!sx || !sy || !rsm || !rsi)
            nkf_die("out of memory");
        for (uint64_t r = 0; r < md->rows; r++)
            for (uint64_t c = 0; c < md->C; c++)
                sx[r * md->C + c] = residual(md, f, x0, k0, r, c);
        nk_tensor_desc d = NK_TENSOR_DESC_INIT;
        d.layout = NK_CHANNELS_LAST;
        d.n = a->d->n;
        d.c = a->d->c;
        d.spatial = a->d->spatial;
        d.activation = a->d->activation;
        d.alpha = a->d->alpha;
        const nk_status st =
            a->rms ? nk_rms_norm_ex(NULL, &d, sx, sy, a->w, a->eps, vsi ? rsi : NULL)
                   : nk_layer_norm_ex(NULL, &d, sx, sy, a->w, a->b, a->eps, vsm ? rsm : NULL,
                                      vsi ? rsi : NULL);
        if (st != NK_OK)
            nkf_die("%s: the plain call refused what the fused one accepted: %s", fn,
                    nk_last_error());
        for (uint64_t r = 0; r < md->rows; r++) {
            const size_t o = row_at(&md->sy, md->S, r, 0);
            for (uint64_t c = 0; c < md->C; c++)
                if (!same_or_nan(v[o + c], sy[r * md->C + c]))
                    nkf_die("%s: %sy[%llu, %llu] = %a, the plain call on (x + skip) + skip_bias "
                            "gives %a",
                            fn, f->quant ? "unquantized " : "", (unsigned long long)r,
                            (unsigned long long)c, (double)v[o + c], (double)sy[r * md->C + c]);
            if ((vsm && !same_or_nan(vsm[r], rsm[r])) || (vsi && !same_or_nan(vsi[r], rsi[r])))
                nkf_die("%s: saved statistics of row %llu differ from the plain call's", fn,
                        (unsigned long long)r);
        }
        free(sx);
        free(sy);
        free(rsm);
        free(rsi);
    }
    free(yq);
    free(smq);
    free(siq);
}

/* columns: as fuzz_ex's extents, or (a first byte >= 248) 4000 .. 8399,
 * around the column chunks of long rows */
static int64_t decode_cols(nkf_in *in)
{
    if (in->i < in->n && in->p[in->i] >= 248) {
        in->i++;
        return 4000 + nkf_u16(in) % 4400;
    }
    return nkf_extent(in);
}

static float decode_scale(nkf_in *in)
{
    static const float tab[] = {1.0f,   0.5f,     0.1f,    0.0078125f, 1.0f / 127.0f, 3.7f,
                                0.0f,   -1.0f,    NAN,     INFINITY,   -INFINITY,     1e-45f,
                                1e-40f, 1e38f,    1e-30f,  FLT_MAX,    -0.0f,         0.02f};
    const uint8_t b = nkf_u8(in);
    if (b < 240)
        return tab[b % (sizeof tab / sizeof tab[0])];
    return nkf_bits_f32(nkf_u32(in));
}

static void fuzz_call(nkf_in *in)
{
    args a = {0};
    a.rms = nkf_u8(in) & 1;
    const char *fn = a.rms ? "nk_rms_norm_fused_ex" : "nk_layer_norm_fused_ex";
    /* must_fail: some error; may_fail: neither required nor excluded; oom:
     * NK_ERR_OUT_OF_MEMORY allowed */
    int must_fail = 0, may_fail = 0, oom = 0;

    /* descriptor */
    nkf_desc dd;
    model md = {0};
    must_fail |= nkf_desc_head(in, &dd, &md.dt, &md.pdt);
    nk_tensor_desc *d = &dd.d;
    d->n = nkf_extent(in);
    d->c = decode_cols(in);
    d->spatial = nkf_u8(in) < 128 ? 1 : nkf_extent(in);
    d->layout = (uint32_t)nkf_enum(in, 2);
    if (nkf_u8(in) < 224)
        d->layout = NK_CHANNELS_LAST;
    const int64_t ext[3] = {d->n, d->c, d->spatial};
    const int shape_bad = d->n < 0 || d->c < 1 || d->spatial < 0 ||
                          !nkf_fits(ext, 3, sizeof(float)) || d->layout > 1u;
    must_fail |= shape_bad;
    const uint8_t act = nkf_u8(in);
    d->activation = act < 200 ? act % 7 : nkf_enum(in, 7);
    d->alpha = act & 1 ? nkf_value(in, 0) : 0.01f;
    if ((uint32_t)d->activation > NK_ACT_GELU_TANH ||
        (d->activation == NK_ACT_LEAKY_RELU && !isfinite(d->alpha)))
        must_fail = 1;
    if (shape_bad && nkf_u8(in) < 128)
        return; /* mostly spend the input on shapes that run */
    /* channels-first: refused with a fusion, the plain channels-first
     * LayerNorm / RMSNorm without one (its own harness checks its values) */
    const int cf = !shape_bad && d->layout != NK_CHANNELS_LAST;
    if (!shape_bad) {
        md.N = (uint64_t)d->n, md.C = (uint64_t)d->c, md.S = (uint64_t)d->spatial;
        md.rows = md.N * md.S;
        md.total = md.rows * md.C;
        if (!nkf_small_enough(md.total, 4) || !nkf_small_enough(md.C, 4) ||
            !nkf_small_enough(md.rows, 4))
            return;
    }
    /* x, y (y == x: in place) */
    nkf_decode_strides(in, d->x_stride, md.S, md.C);
    const int in_place = nkf_u8(in) >= 240;
    if (in_place) {
        d->y_stride[0] = d->x_stride[0];
        d->y_stride[1] = d->x_stride[1];
    } else {
        nkf_decode_strides(in, d->y_stride, md.S, md.C);
    }
    if (!shape_bad) {
        md.sx = nkf_resolve(d->x_stride, md.N, md.S, md.C, md.total != 0);
        md.sy = nkf_resolve(d->y_stride, md.N, md.S, md.C, md.total != 0);
        must_fail |= md.sx.reject || md.sy.reject;
        if ((!md.sx.reject && !nkf_small_enough(md.sx.span, 4)) ||
            (!md.sy.reject && !nkf_small_enough(md.sy.span, 4)))
            return;
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

    /* fusion */
    fusion_in fi;
    memset(&fi, 0, sizeof fi);
    nk_norm_fusion *f = &fi.f;
    *f = (nk_norm_fusion)NK_NORM_FUSION_INIT;
    const int has_f = nkf_u8(in) >= 24;
    int has_skip = 0, has_kb = 0, own_sum = 0, nonempty = !shape_bad && md.total;
    enum { SUM_NONE, SUM_OWN, SUM_X, SUM_SKIP, SUM_Y } sum_kind = SUM_NONE;
    int has_rsc = 0;
    if (has_f) {
        const uint8_t sz = nkf_u8(in);
        if (sz >= 220 && sz < 236) {
            f->struct_size = (uint32_t)sizeof *f - 4 * (1 + (sz & 7));
            must_fail = 1;
        } else if (sz >= 236 && sz < 248) {
            f->struct_size = sizeof fi; /* a newer caller's, tail zero */
        } else if (sz >= 248) {
            f->struct_size = sizeof fi;
            fi.extra[sz & 1] = (uint64_t)1 << (sz & 63);
            must_fail = 1;
        }
        const uint8_t fl = nkf_u8(in);
        f->flags = fl < 160 ? 0u : fl < 240 ? NK_FUSION_SKIP_BROADCAST : nkf_u32(in);
        must_fail |= (f->flags & ~NK_FUSION_SKIP_BROADCAST) != 0;
        md.bc = (f->flags & NK_FUSION_SKIP_BROADCAST) != 0;
        const uint8_t rb = nkf_u8(in);
        if (rb >= 250)
            f->reserved[rb & 3] = 1u + nkf_u8(in), must_fail = 1;
        has_skip = nkf_u8(in) >= 64;
        if (has_skip) {
            nkf_decode_strides(in, f->skip_stride, md.S, md.C);
            if (md.bc && nkf_u8(in) >= 224)
                f->skip_stride[0] = nkf_extent(in); /* ignored, any value */
        }
        const uint8_t kbb = nkf_u8(in);
        has_kb = has_skip ? (kbb & 1) : kbb >= 248;
        const uint8_t sb = nkf_u8(in);
        sum_kind = sb < 100 ? SUM_NONE : sb < 180 ? SUM_OWN : sb < 200 ? SUM_X
                 : sb < 215 ? SUM_SKIP : sb < 225 ? SUM_Y : SUM_OWN;
        if (!has_skip && sum_kind != SUM_NONE && nkf_u8(in) < 192)
            sum_kind = SUM_NONE; /* mostly; a sum without skip must fail */
        if (!has_skip && sum_kind == SUM_SKIP)
            sum_kind = SUM_OWN;
        own_sum = sum_kind == SUM_OWN;
        if (own_sum)
            nkf_decode_strides(in, f->sum_stride, md.S, md.C);
        else if (sum_kind == SUM_X || sum_kind == SUM_Y || sum_kind == SUM_SKIP) {
            const int64_t *src = sum_kind == SUM_X ? d->x_stride
                               : sum_kind == SUM_Y ? d->y_stride : f->skip_stride;
            f->sum_stride[0] = src[0];
            f->sum_stride[1] = src[1];
            if (nkf_u8(in) >= 232) /* other strides: refused when they resolve differently */
                nkf_decode_strides(in, f->sum_stride, md.S, md.C);
        }
        const uint8_t qb = nkf_u8(in);
        f->quant = qb < 100 ? NK_QUANT_NONE : qb < 170 ? NK_QUANT_TENSOR
                 : qb < 240 ? NK_QUANT_ROW : (uint32_t)nkf_enum(in, 3);
        const uint8_t yb = nkf_u8(in);
        f->y_dtype = yb < 200 ? (f->quant == NK_QUANT_ROW || !(yb & 1) ? NK_DTYPE_S8 : NK_DTYPE_U8)
                              : (uint32_t)nkf_enum(in, 6);
        f->y_scale = decode_scale(in);
        const uint8_t zb = nkf_u8(in);
        static const int32_t zps[] = {-129, 128, 256, -1, INT32_MIN, INT32_MAX, 255, -128};
        if (zb < 200)
            f->y_zero_point = f->y_dtype == NK_DTYPE_U8 ? zb : (int32_t)(zb % 256) - 128;
        else
            f->y_zero_point = zb < 240 ? zps[zb % 8] : (int32_t)nkf_u32(in);
        f->y_zero_point = zb < 100 ? zb % 9 : f->y_zero_point; /* small ones often */
        has_rsc = nkf_u8(in) >= 8;
    }
    const int quant = has_f ? (int)f->quant : 0;
    const int qvalid = quant == NK_QUANT_TENSOR || quant == NK_QUANT_ROW;
    if (has_f) {
        if (f->quant > NK_QUANT_ROW)
            must_fail = 1;
        if (!has_skip && (has_kb || f->flags))
            must_fail = 1;
        if (has_skip && !shape_bad) {
            int64_t ks[2] = {md.bc ? 0 : f->skip_stride[0], f->skip_stride[1]};
            md.sk = nkf_resolve(ks, md.bc ? 1 : md.N, md.S, md.C, md.total != 0);
            must_fail |= md.sk.reject;
            if (md.bc && (f->skip_stride[0] < 0 ||
                          (uint64_t)f->skip_stride[0] > (uint64_t)PTRDIFF_MAX / sizeof(float)))
                may_fail = 1; /* "ignored", yet a stride out of range */
            if (!md.sk.reject && !nkf_small_enough(md.sk.span, 4))
                return;
        }
        if (sum_kind != SUM_NONE && !shape_bad) {
            md.ss = nkf_resolve(f->sum_stride, md.N, md.S, md.C, md.total != 0);
            must_fail |= md.ss.reject;
            if (!md.ss.reject && !nkf_small_enough(md.ss.span, 4))
                return;
        }
        if (qvalid) {
            const uint32_t yd = f->y_dtype;
            if (yd != NK_DTYPE_S8 && yd != NK_DTYPE_U8)
                must_fail = 1;
            else if (quant == NK_QUANT_ROW) {
                must_fail |= yd != NK_DTYPE_S8 || (!has_rsc && nonempty);
            } else {
                const int lo = yd == NK_DTYPE_S8 ? -128 : 0, hi = yd == NK_DTYPE_S8 ? 127 : 255;
                must_fail |= !(f->y_scale > 0.0f) || !isfinite(f->y_scale) ||
                             f->y_zero_point < lo || f->y_zero_point > hi;
            }
            must_fail |= in_place && nonempty;
        }
    }
    a.eps = nkf_eps(in);
    if (!(a.eps >= 0.0) || isinf(a.eps))
        must_fail = 1;

    /* buffers: exact sizes; stand-ins for shapes the library must refuse */
    const size_t ex = nkf_esize(md.dt), pe = nkf_esize(md.pdt);
    const size_t ey = qvalid ? 1 : ex; /* a quantized y holds bytes */
    const uint64_t xn = shape_bad || md.sx.reject ? NKF_SMALL : md.sx.span;
    const uint64_t yn = shape_bad || md.sy.reject ? NKF_SMALL : md.sy.span;
    const uint64_t kn = shape_bad || md.sk.reject ? NKF_SMALL : md.sk.span;
    const uint64_t sn = shape_bad || md.ss.reject ? NKF_SMALL : md.ss.span;
    const uint64_t CP = shape_bad ? NKF_SMALL : md.C, RP = shape_bad ? NKF_SMALL : md.rows;
    const uint8_t pres = nkf_u8(in), pf = nkf_u8(in);
    bufset s;
    memset(&s, 0, sizeof s);
    nkf_make(in, &s.x, pres >= 4, sum_kind == SUM_X && sn > xn ? sn : xn, ex);
    nkf_fill(in, &s.x, md.dt);
    if (!in_place) {
        nkf_make(in, &s.y, pres < 2 || pres >= 8, sum_kind == SUM_Y && sn * ex > yn * ey
                                                         ? (sn * ex + ey - 1) / ey : yn, ey);
        if (qvalid)
            for (size_t i = 0; i < s.y.bytes; i++)
                ((uint8_t *)s.y.p)[i] = nkf_left(in) ? nkf_u8(in) : (uint8_t)(0x3C + i);
        else
            nkf_fill(in, &s.y, md.dt);
    }
    nkf_make(in, &s.k, has_skip, sum_kind == SUM_SKIP && sn > kn ? sn : kn, ex);
    nkf_fill(in, &s.k, md.dt);
    nkf_make(in, &s.kb, has_kb, CP, pe);
    nkf_fill(in, &s.kb, md.pdt);
    nkf_make(in, &s.sum, own_sum, sn, ex);
    nkf_fill(in, &s.sum, md.dt);
    nkf_make(in, &s.w, pf & 1, CP, pe);
    nkf_make(in, &s.b, (pf & 2) && !a.rms, CP, pe);
    nkf_fill(in, &s.w, md.pdt);
    nkf_fill(in, &s.b, md.pdt);
    nkf_make(in, &s.sm, (pf & 4) && !a.rms, RP, 4);
    nkf_make(in, &s.si, pf & 8, RP, 4);
    nkf_make(in, &s.rsc, has_rsc, RP, 4);
    for (size_t i = 0; s.rsc.p && i < s.rsc.bytes / 4; i++)
        ((float *)s.rsc.p)[i] = nkf_value(in, i);
    a.x = s.x.p;
    a.y = in_place ? s.x.p : s.y.p;
    a.w = s.w.p;
    a.b = s.b.p;
    a.sm = s.sm.p;
    a.si = s.si.p;
    f->skip = s.k.p;
    f->skip_bias = s.kb.p;
    f->sum = sum_kind == SUM_OWN ? s.sum.p : sum_kind == SUM_X ? s.x.p
           : sum_kind == SUM_SKIP ? s.k.p : sum_kind == SUM_Y ? a.y : NULL;
    f->row_scale = s.rsc.p;
    a.f = has_f ? f : NULL;
    if (nonempty && (!a.x || !a.y))
        must_fail = 1;
    if (has_f && !has_skip && f->sum)
        must_fail = 1; /* sum needs skip */

    /* forbidden aliasing (checked on non-empty tensors only) */
    if (has_f && has_skip && f->sum && !shape_bad) {
        const int diff_x = md.ss.s0 != md.sx.s0 || md.ss.s1 != md.sx.s1;
        const int diff_k = md.ss.s0 != md.sk.s0 || md.ss.s1 != md.sk.s1;
        const int stepped = md.N > 1 && md.S > 1; /* both strides used */
        if (f->sum == a.y && a.y)
            nonempty ? (must_fail = 1) : (may_fail = 1);
        if (sum_kind == SUM_X && (f->sum_stride[0] != d->x_stride[0] ||
                                  f->sum_stride[1] != d->x_stride[1]))
            nonempty && stepped && diff_x ? (must_fail = 1) : (may_fail = 1);
        if (sum_kind == SUM_SKIP) {
            if (md.bc)
                nonempty ? (must_fail = 1) : (may_fail = 1);
            else if (f->sum_stride[0] != f->skip_stride[0] || f->sum_stride[1] != f->skip_stride[1])
                nonempty && stepped && diff_k ? (must_fail = 1) : (may_fail = 1);
        }
    }
    if (md.pdt != NK_DTYPE_F32 && md.C > 64)
        oom = 1; /* widened parameters on the heap */
    if (cf)
        has_f && (has_skip || f->quant) ? (must_fail = 1) : (may_fail = 1);
    a.d = nkf_u8(in) >= 252 ? (must_fail = 1, (const nk_tensor_desc *)NULL) : d;

    /* the call */
    for (int i = 0; i < NBUF; i++)
        nkf_snapshot(buf_at(&s, i));
    if (nkf_u8(in) & 1)
        nkf_dirty_error();
    const nk_status st = call(&a);
    NKF_TRACE("%s dtype %u pdt %u [%lld %lld %lld] layout %u xs {%lld %lld} ys {%lld %lld}%s "
              "act %d alpha %g eps %g ctx %d | fusion %s size %u flags %#x skip %s {%lld %lld} "
              "bias %d sum %d {%lld %lld} quant %u y_dtype %u scale %a zp %d row_scale %d "
              "| w %d b %d sm %d si %d -> %d %s\n",
              fn, (unsigned)d->dtype, (unsigned)d->param_dtype, (long long)d->n, (long long)d->c,
              (long long)d->spatial, (unsigned)d->layout, (long long)d->x_stride[0],
              (long long)d->x_stride[1], (long long)d->y_stride[0], (long long)d->y_stride[1],
              in_place ? " in place" : "", (int)d->activation, (double)d->alpha, a.eps,
              a.ctx ? (a.ctx->pool ? (int)a.ctx->pool->num_threads(a.ctx->pool->ctx) : 0) : -1,
              has_f ? "given" : "NULL", (unsigned)f->struct_size, (unsigned)f->flags,
              f->skip ? "given" : "NULL", (long long)f->skip_stride[0],
              (long long)f->skip_stride[1], f->skip_bias != NULL, (int)sum_kind,
              (long long)f->sum_stride[0], (long long)f->sum_stride[1], (unsigned)f->quant,
              (unsigned)f->y_dtype, (double)f->y_scale, (int)f->y_zero_point,
              f->row_scale != NULL, a.w != NULL, a.b != NULL, a.sm != NULL, a.si != NULL,
              (int)st, nk_last_error());

    nkf_check_status(st, fn);
    const int sum_writes_x = st == NK_OK && a.f && f->sum && f->sum == a.x;
    const int sum_writes_k = st == NK_OK && a.f && f->sum && f->sum == f->skip;
    for (int i = 0; i < NBUF; i++) {
        nkf_buf *b = buf_at(&s, i);
        nkf_check_guard(b, fn);
        const int input = b == &s.w || b == &s.b || b == &s.kb ||
                          (b == &s.x && !in_place && !sum_writes_x) ||
                          (b == &s.k && !sum_writes_k);
        if (input && !nkf_unchanged(b))
            nkf_die("%s changed its input %s", fn, buf_names[i]);
    }
    if (must_fail && st == NK_OK)
        nkf_die("%s accepted arguments it must reject", fn);
    if (!must_fail && !may_fail && st != NK_OK && !(oom && st == NK_ERR_OUT_OF_MEMORY))
        nkf_die("%s refused valid arguments: %s", fn, nk_last_error());
    if (st != NK_OK) {
        for (int i = 0; i < NBUF; i++)
            if (!nkf_unchanged(buf_at(&s, i)))
                nkf_die("%s failed (%s) but changed %s", fn, nk_last_error(), buf_names[i]);
        free_bufs(&s);
        return;
    }
    if (cf) { /* the strides address another geometry */
        free_bufs(&s);
        return;
    }
    const nkf_buf *yb = in_place ? &s.x : &s.y;
    check_gaps(fn, "y", yb, &md.sy, &md, ey);
    if (a.f && f->sum) {
        const nkf_buf *sb = f->sum == a.x ? &s.x : f->sum == f->skip ? &s.k : &s.sum;
        check_gaps(fn, "sum", sb, &md.ss, &md, ex);
        if (md.total)
            check_sum(fn, &a, &s, &md);
    }
    if (md.total && a.f && (has_skip || qvalid) && md.dt == NK_DTYPE_F32)
        check_fp32(fn, &a, &s, &md);
    rerun(a, &s, other, fn);
    free_bufs(&s);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    nkf_calls(data, size, fuzz_call);
    return 0;
}
