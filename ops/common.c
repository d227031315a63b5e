#include <math.h>
#include <stdio.h>
#include <string.h>

#include <stdlib.h>

#include "ops/internal.h"

nk_status nk_check_product(int64_t a, int64_t b, const char *fn, size_t *out)
{
    int64_t p;
    if (__builtin_mul_overflow(a, b, &p) || p > (int64_t)(PTRDIFF_MAX / sizeof(float)))
        return nk_fail(NK_ERR_BAD_SHAPE, "%s: tensor size %lld x %lld overflows", fn, (long long)a,
                       (long long)b);
    *out = (size_t)p;
    return NK_OK;
}

bool nk_extents_fit(const int64_t *ext, int count, size_t elem_size)
{
    /* zeros count as 1: an empty tensor obeys the same bound as a full one,
     * whatever the order of its extents */
    int64_t p = 1;
    for (int i = 0; i < count; i++) {
        int64_t e = ext[i] > 1 ? ext[i] : 1;
        if (__builtin_mul_overflow(p, e, &p))
            return false;
    }
    return (uint64_t)p <= (uint64_t)PTRDIFF_MAX / elem_size;
}

nk_status nk_check_shape(const nk_shape *s, const char *fn, size_t *total)
{
    if (!s)
        return nk_fail(NK_ERR_NULL_POINTER, "%s: shape is NULL", fn);
    if (s->n < 0 || s->c < 0 || s->spatial < 0)
        return nk_fail(NK_ERR_BAD_SHAPE, "%s: negative extent in shape [n=%lld, c=%lld, spatial=%lld]",
                       fn, (long long)s->n, (long long)s->c, (long long)s->spatial);
    if (s->c == 0)
        return nk_fail(NK_ERR_BAD_SHAPE, "%s: number of channels must be at least 1, got 0", fn);
    if (s->layout != NK_CHANNELS_FIRST && s->layout != NK_CHANNELS_LAST)
        return nk_fail(NK_ERR_BAD_PARAM, "%s: shape.layout must be NK_CHANNELS_FIRST (0) or "
                       "NK_CHANNELS_LAST (1), got %d", fn, (int)s->layout);
    const int64_t ext[3] = {s->n, s->c, s->spatial};
    if (!nk_extents_fit(ext, 3, sizeof(float)))
        return nk_fail(NK_ERR_BAD_SHAPE,
                       "%s: shape [n=%lld, c=%lld, spatial=%lld] is too large: the product of "
                       "its non-zero extents must be at most %lld elements",
                       fn, (long long)s->n, (long long)s->c, (long long)s->spatial,
                       (long long)(PTRDIFF_MAX / sizeof(float)));
    *total = (size_t)s->n * (size_t)s->c * (size_t)s->spatial;
    return NK_OK;
}

nk_status nk_check_eps(double eps, const char *fn)
{
    if (!(eps >= 0.0) || isinf(eps))
        return nk_fail(NK_ERR_BAD_PARAM, "%s: eps must be finite and >= 0, got %g", fn, eps);
    return NK_OK;
}

nk_status nk_check_options(const nk_options *o, const char *fn, nk_epilogue *ep)
{
    ep->act = NK_ACT_NONE;
    ep->alpha = 0.0f;
    ep->stream = 0;
    if (!o)
        return NK_OK;
    if ((unsigned)o->activation > (unsigned)NK_ACT_GELU_TANH)
        return nk_fail(NK_ERR_BAD_PARAM, "%s: opts.activation must be in [0, %d], got %d", fn,
                       (int)NK_ACT_GELU_TANH, (int)o->activation);
    if (o->activation == NK_ACT_LEAKY_RELU && !isfinite(o->alpha))
        return nk_fail(NK_ERR_BAD_PARAM, "%s: opts.alpha (LeakyReLU slope) must be finite, got %g", fn,
                       (double)o->alpha);
    ep->act = o->activation;
    ep->alpha = o->alpha;
    return NK_OK;
}

nk_status nk_check_io(const char *fn, const void *x, const void *y, size_t total, double eps,
                      const nk_options *opts, nk_epilogue *ep)
{
    nk_status st;
    if ((!x || !y) && total)
        return nk_fail(NK_ERR_NULL_POINTER, "%s: %s is NULL", fn, x ? "y" : "x");
    if ((st = nk_check_eps(eps, fn)))
        return st;
    if ((st = nk_check_options(opts, fn, ep)))
        return st;
    ep->stream = total * sizeof(float) > nk_stream_threshold();
    return NK_OK;
}

nk_status nk_check_tensor_args(const char *fn, const float *x, const nk_shape *s, const float *y,
                               double eps, const nk_options *opts, size_t *total, nk_epilogue *ep)
{
    nk_status st = nk_check_shape(s, fn, total);
    return st ? st : nk_check_io(fn, x, y, *total, eps, opts, ep);
}

nk_status nk_check_running(const nk_running_stats *rs, const char *fn, bool need_momentum)
{
    if (!rs->mean || !rs->var)
        return nk_fail(NK_ERR_NULL_POINTER, "%s: running.%s is NULL", fn,
                       rs->mean ? "var" : "mean");
    if (need_momentum && !rs->cumulative && !(rs->momentum >= 0.0 && rs->momentum <= 1.0))
        return nk_fail(NK_ERR_BAD_PARAM, "%s: running.momentum must be in [0, 1], got %g", fn,
                       rs->momentum);
    /* the training call increments it: INT64_MAX has no successor */
    if (rs->num_batches_tracked < 0 || rs->num_batches_tracked == INT64_MAX)
        return nk_fail(NK_ERR_BAD_PARAM,
                       "%s: running.num_batches_tracked must be in [0, INT64_MAX - 1], got %lld", fn,
                       (long long)rs->num_batches_tracked);
    return NK_OK;
}

void nk_format_size(char *buf, size_t len, int64_t a, int64_t b, int64_t spatial)
{
    if (spatial == 1)
        snprintf(buf, len, "[%lld, %lld]", (long long)a, (long long)b);
    else
        snprintf(buf, len, "[%lld, %lld, %lld]", (long long)a, (long long)b, (long long)spatial);
}

static bool moments_bad(const nk_moments *m) { return !isfinite(m->mean) || !isfinite(m->m2); }

void nk_rows_moments(const nk_kernels *k, const void *x, size_t rows, size_t len, size_t stride,
                     nk_moments *out)
{
    k->moments_rows(x, rows, len, stride, out);
    for (size_t r = 0; r < rows; r++)
        if (moments_bad(&out[r]))
            nk_moments_f64(k->dtype, nk_xat(k, x, r * stride), len, 1, &out[r]);
}

void nk_segs_moments(const nk_kernels *k, const void *x, size_t len, size_t stride, size_t lo,
                     size_t hi, nk_moments *acc)
{
    if (!len || lo >= hi)
        return;
    nk_moments part[64];
    size_t j = lo / len, off = lo % len;
    if (off && lo < hi) {
        size_t n = len - off < hi - lo ? len - off : hi - lo;
        nk_rows_moments(k, nk_xat(k, x, j * stride + off), 1, n, n, part);
        nk_moments_merge_inline(acc, part[0].count, part[0].mean, part[0].m2);
        lo += n;
        j++;
    }
    size_t full = (hi - lo) / len;
    for (size_t j0 = 0; j0 < full; j0 += 64) {
        size_t nb = full - j0 < 64 ? full - j0 : 64;
        nk_rows_moments(k, nk_xat(k, x, (j + j0) * stride), nb, len, stride, part);
        for (size_t i = 0; i < nb; i++)
            nk_moments_merge_inline(acc, part[i].count, part[i].mean, part[i].m2);
    }
    lo += full * len;
    if (lo < hi) {
        nk_rows_moments(k, nk_xat(k, x, (j + full) * stride), 1, hi - lo, hi - lo, part);
        nk_moments_merge_inline(acc, part[0].count, part[0].mean, part[0].m2);
    }
}

void nk_segs_normalize(const nk_kernels *k, const void *x, void *y, size_t len, size_t xstride,
                       size_t ystride, size_t lo, size_t hi, float m, float a, float b,
                       const nk_epilogue *ep)
{
    if (!len || lo >= hi)
        return;
    size_t j = lo / len, off = lo % len;
    if (off && lo < hi) {
        size_t n = len - off < hi - lo ? len - off : hi - lo;
        k->norm_rows(nk_xat(k, x, j * xstride + off), nk_yat(k, y, j * ystride + off), 1, n, n, n,
                     &m, &a, &b, 0, ep);
        lo += n;
        j++;
    }
    size_t full = (hi - lo) / len;
    if (full)
        k->norm_rows(nk_xat(k, x, j * xstride), nk_yat(k, y, j * ystride), full, len, xstride,
                     ystride, &m, &a, &b, 0, ep);
    lo += full * len;
    j += full;
    if (lo < hi)
        k->norm_rows(nk_xat(k, x, j * xstride), nk_yat(k, y, j * ystride), 1, hi - lo, hi - lo,
                     hi - lo, &m, &a, &b, 0, ep);
}

double nk_rstd(double var, double eps) { return 1.0 / sqrt((var > 0.0 ? var : 0.0) + eps); }

size_t nk_stream_threshold(void)
{
    /* Outputs several times larger than a core's L2 are not re-read from
     * L2 by the next layer; writing them around the cache saves the
     * read-for-ownership of every line, which made the store stream the
     * bottleneck (normkit-speed, AVX2: InstanceNorm2d 1x64x256x256 0.71 ->
     * 0.80 of memcpy, BatchNorm2d train NCHW 0.71 -> 0.87, GroupNorm 0.70 ->
     * 0.84, at 32 MiB these shapes did not stream). */
    return (size_t)4 << 20;
}

size_t nk_stream_threshold_pool(void)
{
    /* Streamed stores go to memory, whose write bandwidth the cores share;
     * stores into the last-level cache scale with the cores. With a pool,
     * outputs that an L3 holds beside their input are written through it
     * (2 threads, AVX-512: LayerNorm 2048x768 0.45 -> 0.57 of the 2-thread
     * memcpy, RMSNorm 512x4096 0.43 -> 0.70), larger ones still stream
     * (InstanceNorm2d 1x64x256x256: 0.71 unstreamed, 0.94 streamed). */
    return (size_t)12 << 20;
}

double nk_effective_momentum(nk_running_stats *rs)
{
    rs->num_batches_tracked += 1;
    if (rs->cumulative)
        return 1.0 / (double)rs->num_batches_tracked;
    return rs->momentum;
}

void nk_params_to_f32(const nk_kernels *k, const void *p, size_t i0, size_t n, float *out)
{
    k->widen(nk_xat(k, p, i0), n, out);
}

nk_status nk_call_params(const nk_call *cl, const void *weight, const void *bias, bool chunked,
                         nk_params *p)
{
    p->heap = NULL;
    p->w16 = p->b16 = NULL;
    if (cl->pdt == NK_DTYPE_F32) {
        p->w = weight;
        p->b = bias;
        return NK_OK;
    }
    const size_t n = cl->c;
    p->w = p->b = NULL;
    if (n > NK_PARAM_STACK && chunked) {
        p->w16 = weight;
        p->b16 = bias;
        return NK_OK;
    }
    float *dst[2] = {p->st[0], p->st[1]};
    if (n > NK_PARAM_STACK && (weight || bias)) {
        p->heap = n <= SIZE_MAX / (2 * sizeof(float)) ? malloc(2 * n * sizeof(float)) : NULL;
        if (!p->heap)
            return nk_fail(NK_ERR_OUT_OF_MEMORY,
                           "%s: no memory for the fp32 copies of %zu 16-bit weight and bias entries",
                           cl->fn, n);
        dst[0] = p->heap;
        dst[1] = p->heap + n;
    }
    if (weight) {
        nk_params_to_f32(cl->k, weight, 0, n, dst[0]);
        p->w = dst[0];
    }
    if (bias) {
        nk_params_to_f32(cl->k, bias, 0, n, dst[1]);
        p->b = dst[1];
    }
    return NK_OK;
}

void nk_params_free(nk_params *p)
{
    free(p->heap);
    p->heap = NULL;
}
