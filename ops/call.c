/* Validation of the two argument styles (nk_shape + nk_options, nk_context +
 * nk_tensor_desc) into one nk_call. */
#include <math.h>
#include <string.h>

#include "ops/internal.h"

static void call_dense(nk_call *cl)
{
    const size_t inner = cl->layout == NK_CHANNELS_FIRST ? cl->s : cl->c;
    const size_t mid = cl->layout == NK_CHANNELS_FIRST ? cl->c : cl->s;
    cl->xs1 = cl->ys1 = inner;
    cl->xs0 = cl->ys0 = mid * inner;
}

static void call_common(nk_call *cl, const char *fn, const void *x, const void *y, unsigned dtype)
{
    cl->fn = fn;
    cl->x = x;
    cl->y = (void *)y;
    cl->k = nk_kernels_current_dtype(dtype);
    cl->pdt = NK_DTYPE_F32;
    nk_exec_init(&cl->ex, NULL);
}

nk_status nk_call_from_shape(nk_call *cl, const char *fn, const float *x, const nk_shape *s,
                             const float *y, double eps, const nk_options *opts)
{
    nk_status st = nk_check_tensor_args(fn, x, s, y, eps, opts, &cl->total, &cl->ep);
    if (st)
        return st;
    cl->n = (size_t)s->n;
    cl->c = (size_t)s->c;
    cl->s = (size_t)s->spatial;
    cl->layout = s->layout;
    call_dense(cl);
    call_common(cl, fn, x, y, NK_DTYPE_F32);
    return NK_OK;
}

nk_status nk_call_from_rows(nk_call *cl, const char *fn, const float *x, int64_t rows,
                            int64_t cols, const float *y, double eps, const nk_options *opts)
{
    if (rows < 0 || cols < 1)
        return nk_fail(NK_ERR_BAD_SHAPE, "%s: need rows >= 0 and cols >= 1, got rows=%lld cols=%lld",
                       fn, (long long)rows, (long long)cols);
    const int64_t ext[2] = {rows, cols};
    if (!nk_extents_fit(ext, 2, sizeof(float)))
        return nk_fail(NK_ERR_BAD_SHAPE,
                       "%s: rows=%lld x cols=%lld is too large: the product of the non-zero extents "
                       "must be at most %lld elements",
                       fn, (long long)rows, (long long)cols, (long long)(PTRDIFF_MAX / sizeof(float)));
    cl->total = (size_t)rows * (size_t)cols;
    nk_status st = nk_check_io(fn, x, y, cl->total, eps, opts, &cl->ep);
    if (st)
        return st;
    cl->n = (size_t)rows;
    cl->c = (size_t)cols;
    cl->s = 1;
    cl->layout = NK_CHANNELS_LAST;
    call_dense(cl);
    call_common(cl, fn, x, y, NK_DTYPE_F32);
    return NK_OK;
}

/* The bytes of a caller's struct past the ones this build knows must be 0:
 * they are fields of a newer header that this library cannot honour. */
bool nk_tail_zero(const void *p, size_t caller, size_t known)
{
    const unsigned char *b = p;
    for (size_t i = known; i < caller; i++)
        if (b[i])
            return false;
    return true;
}

nk_status nk_check_context(const char *fn, const nk_context *ctx, nk_context *out)
{
    memset(out, 0, sizeof *out);
    if (!ctx)
        return NK_OK;
    const size_t v1 = offsetof(nk_context, reserved) + sizeof ctx->reserved;
    if (ctx->struct_size < v1)
        return nk_fail(NK_ERR_BAD_PARAM,
                       "%s: ctx->struct_size must be at least %zu (sizeof(nk_context)), got %u", fn,
                       v1, (unsigned)ctx->struct_size);
    if (!nk_tail_zero(ctx, ctx->struct_size, sizeof *ctx))
        return nk_fail(NK_ERR_UNSUPPORTED,
                       "%s: ctx sets fields past the %zu bytes of nk_context this normkit %s knows",
                       fn, sizeof *ctx, NK_VERSION_STRING);
    /* fields past the caller's struct_size read as zero */
    memcpy(out, ctx, ctx->struct_size < sizeof *out ? ctx->struct_size : sizeof *out);
    out->struct_size = sizeof *out;
    if (out->flags)
        return nk_fail(NK_ERR_BAD_PARAM, "%s: ctx->flags must be 0, got %#x", fn,
                       (unsigned)out->flags);
    for (size_t i = 0; i < sizeof out->reserved / sizeof out->reserved[0]; i++)
        if (out->reserved[i])
            return nk_fail(NK_ERR_BAD_PARAM, "%s: ctx->reserved[%zu] must be 0", fn, i);
    if (out->pool && !out->pool->parallel_for)
        return nk_fail(NK_ERR_NULL_POINTER, "%s: ctx->pool->parallel_for is NULL", fn);
    if (!out->workspace && out->workspace_size)
        return nk_fail(NK_ERR_NULL_POINTER, "%s: ctx->workspace is NULL with workspace_size %zu",
                       fn, out->workspace_size);
    return NK_OK;
}

nk_status nk_check_strides(const char *fn, const char *name, const int64_t in[2], size_t n,
                               size_t mid, size_t inner, size_t total, size_t out[2])
{
    for (int i = 0; i < 2; i++) {
        if (in[i] < 0)
            return nk_fail(NK_ERR_BAD_SHAPE, "%s: %s_stride[%d] = %lld must be >= 0", fn,
                           name, i, (long long)in[i]);
        if ((uint64_t)in[i] > PTRDIFF_MAX / sizeof(float))
            return nk_fail(NK_ERR_BAD_SHAPE,
                           "%s: %s_stride[%d] = %lld: a stride above %lld floats cannot be "
                           "addressed",
                           fn, name, i, (long long)in[i], (long long)(PTRDIFF_MAX / sizeof(float)));
    }
    out[1] = in[1] ? (size_t)in[1] : inner;
    if (mid > 1 && out[1] < inner)
        return nk_fail(NK_ERR_BAD_SHAPE,
                       "%s: %s_stride[1] = %lld is below the innermost extent %zu (rows "
                       "would overlap)",
                       fn, name, (long long)in[1], inner);
    /* one sample's span: (mid - 1) * stride[1] + inner */
    uint64_t need0 = 0;
    if (mid && (__builtin_mul_overflow((uint64_t)(mid - 1), (uint64_t)out[1], &need0) ||
                __builtin_add_overflow(need0, (uint64_t)inner, &need0)))
        return nk_fail(NK_ERR_BAD_SHAPE, "%s: %s_stride[1] = %lld is too large", fn, name,
                       (long long)in[1]);
    if (!in[0]) {
        /* dense: mid * stride[1], the span itself when stride[1] is dense */
        uint64_t d;
        if (__builtin_mul_overflow((uint64_t)mid, (uint64_t)out[1], &d) || d > (uint64_t)SIZE_MAX)
            return nk_fail(NK_ERR_BAD_SHAPE, "%s: %s_stride[1] = %lld is too large", fn, name,
                           (long long)in[1]);
        out[0] = (size_t)d;
    } else {
        out[0] = (size_t)in[0];
    }
    if (n > 1 && (uint64_t)out[0] < need0)
        return nk_fail(NK_ERR_BAD_SHAPE,
                       "%s: %s_stride[0] = %lld is below one sample's span %llu "
                       "((middle extent - 1) * stride[1] + innermost extent): samples would overlap",
                       fn, name, (long long)in[0], (unsigned long long)need0);
    /* strides of an extent of 1 are never stepped: dense values, so no
     * kernel computes an address from them */
    if (mid <= 1)
        out[1] = inner;
    if (n <= 1)
        out[0] = (size_t)need0;
    if (!total)
        return NK_OK;
    /* last element: (n-1)*s0 + (mid-1)*s1 + inner - 1 < PTRDIFF_MAX / 4 */
    uint64_t a, b, end;
    if (__builtin_mul_overflow((uint64_t)(n - 1), (uint64_t)out[0], &a) ||
        __builtin_mul_overflow((uint64_t)(mid - 1), (uint64_t)out[1], &b) ||
        __builtin_add_overflow(a, b, &end) || __builtin_add_overflow(end, (uint64_t)inner, &end) ||
        end > (uint64_t)(PTRDIFF_MAX / sizeof(float)))
        return nk_fail(NK_ERR_BAD_SHAPE,
                       "%s: %s_stride = {%lld, %lld} addresses elements past %lld floats", fn,
                       name, (long long)in[0], (long long)in[1],
                       (long long)(PTRDIFF_MAX / sizeof(float)));
    return NK_OK;
}

nk_status nk_call_from_desc(nk_call *cl, const char *fn, const nk_context *ctx,
                            const nk_tensor_desc *d, const void *x, const void *y, double eps,
                            bool has_y)
{
    nk_context c;
    nk_status st = nk_check_context(fn, ctx, &c);
    if (st)
        return st;
    if (!d)
        return nk_fail(NK_ERR_NULL_POINTER, "%s: desc is NULL", fn);
    const size_t v1 = offsetof(nk_tensor_desc, reserved) + sizeof d->reserved;
    if (d->struct_size < v1)
        return nk_fail(NK_ERR_BAD_PARAM,
                       "%s: desc->struct_size must be at least %zu (sizeof(nk_tensor_desc)), got %u",
                       fn, v1, (unsigned)d->struct_size);
    if (!nk_tail_zero(d, d->struct_size, sizeof *d))
        return nk_fail(NK_ERR_UNSUPPORTED,
                       "%s: desc sets fields past the %zu bytes of nk_tensor_desc this normkit %s "
                       "knows",
                       fn, sizeof *d, NK_VERSION_STRING);
    if (d->dtype > NK_DTYPE_BF16)
        return nk_fail(NK_ERR_UNSUPPORTED,
                       "%s: desc->dtype must be NK_DTYPE_F32 (0), NK_DTYPE_F16 (1) or "
                       "NK_DTYPE_BF16 (2), got %u",
                       fn, (unsigned)d->dtype);
    /* fields appended after reserved[]: zero for callers that predate them */
    const bool has_pdt = d->struct_size >= offsetof(nk_tensor_desc, reserved2) + sizeof d->reserved2;
    const unsigned pdt = has_pdt ? d->param_dtype : NK_DTYPE_F32;
    if (pdt != NK_DTYPE_F32 && pdt != d->dtype)
        return nk_fail(NK_ERR_BAD_PARAM,
                       "%s: desc->param_dtype must be NK_DTYPE_F32 (0) or desc->dtype (%u), got %u",
                       fn, (unsigned)d->dtype, pdt);
    if (has_pdt && d->reserved2)
        return nk_fail(NK_ERR_BAD_PARAM, "%s: desc->reserved2 must be 0, got %u", fn,
                       (unsigned)d->reserved2);
    if (d->flags)
        return nk_fail(NK_ERR_BAD_PARAM, "%s: desc->flags must be 0, got %#x", fn,
                       (unsigned)d->flags);
    for (size_t i = 0; i < sizeof d->reserved / sizeof d->reserved[0]; i++)
        if (d->reserved[i])
            return nk_fail(NK_ERR_BAD_PARAM, "%s: desc->reserved[%zu] must be 0", fn, i);
    if (d->layout > 1u)
        return nk_fail(NK_ERR_BAD_PARAM,
                       "%s: desc->layout must be NK_CHANNELS_FIRST (0) or NK_CHANNELS_LAST (1), got %u",
                       fn, (unsigned)d->layout);
    nk_shape s = {d->n, d->c, d->spatial, (nk_layout)d->layout};
    if ((st = nk_check_shape(&s, fn, &cl->total)))
        return st;
    cl->n = (size_t)d->n;
    cl->c = (size_t)d->c;
    cl->s = (size_t)d->spatial;
    cl->layout = (int)d->layout;
    const size_t inner = cl->layout == NK_CHANNELS_FIRST ? cl->s : cl->c;
    const size_t mid = cl->layout == NK_CHANNELS_FIRST ? cl->c : cl->s;
    size_t xs[2], ys[2];
    if ((st = nk_check_strides(fn, "desc->x", d->x_stride, cl->n, mid, inner, cl->total, xs)))
        return st;
    if (has_y && (st = nk_check_strides(fn, "desc->y", d->y_stride, cl->n, mid, inner, cl->total, ys)))
        return st;
    if (!has_y)
        ys[0] = xs[0], ys[1] = xs[1];
    cl->xs0 = xs[0], cl->xs1 = xs[1], cl->ys0 = ys[0], cl->ys1 = ys[1];
    if (has_y && x && x == y && cl->total && (xs[0] != ys[0] || xs[1] != ys[1]))
        return nk_fail(NK_ERR_BAD_PARAM,
                       "%s: in place (x == y) needs equal strides, got x {%zu, %zu} and y {%zu, %zu}",
                       fn, xs[0], xs[1], ys[0], ys[1]);
    nk_options o = {(nk_activation)d->activation, d->alpha};
    if (has_y) {
        if ((unsigned)d->activation > (unsigned)NK_ACT_GELU_TANH)
            return nk_fail(NK_ERR_BAD_PARAM, "%s: desc->activation must be in [0, %d], got %d", fn,
                           (int)NK_ACT_GELU_TANH, (int)d->activation);
        if (d->activation == NK_ACT_LEAKY_RELU && !isfinite(d->alpha))
            return nk_fail(NK_ERR_BAD_PARAM,
                           "%s: desc->alpha (LeakyReLU slope) must be finite, got %g", fn,
                           (double)d->alpha);
        if ((st = nk_check_io(fn, x, y, cl->total, eps, &o, &cl->ep)))
            return st;
    } else {
        if (!x && cl->total)
            return nk_fail(NK_ERR_NULL_POINTER, "%s: x is NULL", fn);
        memset(&cl->ep, 0, sizeof cl->ep);
    }
    call_common(cl, fn, x, y, d->dtype);
    cl->pdt = pdt;
    nk_exec_init(&cl->ex, &c);
    const size_t bytes = cl->total * nk_esize(d->dtype);
    if (has_y && bytes <= (cl->ex.pool ? nk_stream_threshold_pool() : nk_stream_threshold()))
        cl->ep.stream = 0;
    return NK_OK;
}

bool nk_call_dense(const nk_call *cl)
{
    const size_t inner = cl->layout == NK_CHANNELS_FIRST ? cl->s : cl->c;
    const size_t mid = cl->layout == NK_CHANNELS_FIRST ? cl->c : cl->s;
    return (mid <= 1 || (cl->xs1 == inner && cl->ys1 == inner)) &&
           (cl->n <= 1 || (cl->xs0 == mid * inner && cl->ys0 == mid * inner));
}

nk_shape nk_call_shape(const nk_call *cl)
{
    nk_shape s = {(int64_t)cl->n, (int64_t)cl->c, (int64_t)cl->s, (nk_layout)cl->layout};
    return s;
}

void nk_call_run(nk_call *cl, const nk_plan *pl)
{
    _Alignas(64) unsigned char scratch[NK_STACK_SCRATCH];
    cl->ex.scratch = scratch;
    cl->ex.scratch_size = sizeof scratch;
    nk_plan_run(&cl->ex, pl);
    cl->ex.scratch = NULL;
    cl->ex.scratch_size = 0;
}
