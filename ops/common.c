#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "ops/internal.h"

static _Thread_local char nk_errbuf[320];

nk_status nk_fail(nk_status st, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(nk_errbuf, sizeof nk_errbuf, fmt, ap);
    va_end(ap);
    return st;
}

void nk_clear_error(void) { nk_errbuf[0] = '\0'; }

const char *nk_last_error(void) { return nk_errbuf; }

const char *nk_version(void) { return NK_VERSION_STRING; }
int nk_version_number(void) { return NK_VERSION_NUMBER; }

const char *nk_status_string(nk_status status)
{
    switch (status) {
    case NK_OK: return "ok";
    case NK_ERR_NULL_POINTER: return "null pointer";
    case NK_ERR_BAD_SHAPE: return "bad shape";
    case NK_ERR_BAD_PARAM: return "bad parameter";
    case NK_ERR_TOO_FEW_VALUES: return "too few values for batch statistics";
    case NK_ERR_UNSUPPORTED: return "unsupported";
    case NK_ERR_OUT_OF_MEMORY: return "out of memory";
    }
    return "unknown status";
}

nk_status nk_check_product(int64_t a, int64_t b, const char *fn, size_t *out)
{
    int64_t p;
    if (__builtin_mul_overflow(a, b, &p) || p > (int64_t)(PTRDIFF_MAX / sizeof(float)))
        return nk_fail(NK_ERR_BAD_SHAPE, "%s: tensor size %lld x %lld overflows", fn, (long long)a,
                       (long long)b);
    *out = (size_t)p;
    return NK_OK;
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
        return nk_fail(NK_ERR_BAD_PARAM, "%s: unknown layout %d", fn, (int)s->layout);
    size_t nc = 0;
    nk_status st = nk_check_product(s->n, s->c, fn, &nc);
    if (st)
        return st;
    return nk_check_product((int64_t)nc, s->spatial, fn, total);
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
        return nk_fail(NK_ERR_BAD_PARAM, "%s: unknown activation %d", fn, (int)o->activation);
    if (o->activation == NK_ACT_LEAKY_RELU && !isfinite(o->alpha))
        return nk_fail(NK_ERR_BAD_PARAM, "%s: LeakyReLU alpha must be finite, got %g", fn,
                       (double)o->alpha);
    ep->act = o->activation;
    ep->alpha = o->alpha;
    return NK_OK;
}

nk_status nk_check_io(const char *fn, const float *x, const float *y, size_t total, double eps,
                      const nk_options *opts, nk_epilogue *ep)
{
    nk_status st;
    if ((!x || !y) && total)
        return nk_fail(NK_ERR_NULL_POINTER, "%s: %s is NULL", fn, x ? "output" : "input");
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
        return nk_fail(NK_ERR_NULL_POINTER, "%s: running statistics given without %s buffer", fn,
                       rs->mean ? "var" : "mean");
    if (need_momentum && !rs->cumulative && !(rs->momentum >= 0.0 && rs->momentum <= 1.0))
        return nk_fail(NK_ERR_BAD_PARAM, "%s: momentum must be in [0, 1], got %g", fn, rs->momentum);
    if (rs->num_batches_tracked < 0)
        return nk_fail(NK_ERR_BAD_PARAM, "%s: num_batches_tracked must be >= 0, got %lld", fn,
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

void nk_rows_moments(const nk_kernels *k, const float *x, size_t rows, size_t len, size_t stride,
                     nk_moments *out)
{
    k->moments_rows(x, rows, len, stride, out);
    for (size_t r = 0; r < rows; r++)
        if (moments_bad(&out[r]))
            nk_moments_f64(x + r * stride, len, 1, &out[r]);
}

void nk_cols_moments(const nk_kernels *k, const float *x, size_t rows, size_t cols, size_t stride,
                     nk_moments *acc)
{
    nk_moments part[NK_CBLK];
    for (size_t c0 = 0; c0 < cols; c0 += NK_CBLK) {
        size_t nc = cols - c0 < NK_CBLK ? cols - c0 : NK_CBLK;
        memset(part, 0, nc * sizeof part[0]);
        k->moments_cols(x + c0, rows, nc, stride, part);
        for (size_t c = 0; c < nc; c++) {
            if (moments_bad(&part[c]))
                nk_moments_f64(x + c0 + c, rows, stride, &part[c]);
            nk_moments_merge_inline(&acc[c0 + c], part[c].count, part[c].mean, part[c].m2);
        }
    }
}

/* Smallest multiple of C that is also a multiple of 16 floats, when small:
 * lets channels-last data with few channels run full-width vectors. */
static size_t widened(size_t C)
{
    if (C % 16 == 0 || C > 64)
        return C;
    size_t w = C;
    while (w % 16)
        w += C;
    return w <= 256 ? w : C;
}

void nk_channels_last_moments(const nk_kernels *k, const float *x, size_t rows, size_t C,
                              size_t c0, size_t cols, nk_moments *acc)
{
    size_t W = (c0 == 0 && cols == C) ? widened(C) : C;
    size_t head = 0;
    if (W != C) {
        size_t per = W / C, vrows = rows / per;
        if (vrows) {
            nk_moments wide[256];
            memset(wide, 0, W * sizeof wide[0]);
            nk_cols_moments(k, x, vrows, W, W, wide);
            for (size_t j = 0; j < W; j++)
                nk_moments_merge_inline(&acc[j % C], wide[j].count, wide[j].mean, wide[j].m2);
            head = vrows * per;
        }
    }
    if (head < rows)
        nk_cols_moments(k, x + head * C + c0, rows - head, cols, C, acc);
}

void nk_channels_last_normalize(const nk_kernels *k, const float *x, float *y, size_t rows,
                                size_t C, size_t c0, size_t cols, const float *m, const float *a,
                                const float *b, const nk_epilogue *ep)
{
    size_t W = (c0 == 0 && cols == C) ? widened(C) : C;
    size_t head = 0;
    if (W != C) {
        size_t per = W / C, vrows = rows / per;
        if (vrows) {
            float wm[256], wa[256], wb[256];
            for (size_t j = 0; j < W; j++) {
                wm[j] = m[j % C];
                wa[j] = a[j % C];
                wb[j] = b[j % C];
            }
            k->norm_cols(x, y, vrows, W, W, W, wm, wa, wb, ep);
            head = vrows * per;
        }
    }
    if (head < rows)
        k->norm_cols(x + head * C + c0, y + head * C + c0, rows - head, cols, C, C, m, a, b, ep);
}

double nk_invstd_bn(double var, double eps)
{
    if (var == 0.0 && eps == 0.0)
        return 0.0;
    return 1.0 / sqrt(var + eps);
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

double nk_effective_momentum(nk_running_stats *rs)
{
    rs->num_batches_tracked += 1;
    if (rs->cumulative)
        return 1.0 / (double)rs->num_batches_tracked;
    return rs->momentum;
}
