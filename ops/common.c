#include <math.h>
#include <stdio.h>
#include <string.h>

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

nk_status nk_check_io(const char *fn, const float *x, const float *y, size_t total, double eps,
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

/* Smallest multiple of the row width that is also a multiple of 16 floats,
 * when small: lets narrow rows (channels-last data with few channels, (N, C)
 * BatchNorm input with few channels) run full-width vectors. */
static size_t widened(size_t width)
{
    if (width % 16 == 0 || width > 64)
        return width;
    size_t w = width;
    while (w % 16)
        w += width;
    return w <= NK_CBLK ? w : width;
}

/* Moments of columns [j0, j0 + ncols) of `rows` rows of `stride` floats,
 * merged in column order into acc[((j0 + j) % base) / rep - cbase]. */
static void colview_merge_moments(const nk_kernels *k, const float *x, size_t rows, size_t j0,
                                  size_t ncols, size_t stride, size_t base, size_t rep,
                                  size_t cbase, nk_moments *acc)
{
    if (rep == 1 && j0 + ncols <= base) {
        /* one column per channel: merge straight into the channels */
        nk_cols_moments(k, x + j0, rows, ncols, stride, acc + (j0 - cbase));
        return;
    }
    nk_moments part[NK_CBLK];
    /* channel of column j0, and the column's place inside its channel */
    size_t c = (j0 % base) / rep, in = (j0 % base) % rep, col = j0 % base;
    for (size_t b0 = 0; b0 < ncols; b0 += NK_CBLK) {
        size_t nb = ncols - b0 < NK_CBLK ? ncols - b0 : NK_CBLK;
        memset(part, 0, nb * sizeof part[0]);
        nk_cols_moments(k, x + j0 + b0, rows, nb, stride, part);
        for (size_t j = 0; j < nb; j++) {
            nk_moments_merge_inline(&acc[c - cbase], part[j].count, part[j].mean, part[j].m2);
            if (++col == base)
                col = c = in = 0;
            else if (++in == rep)
                c++, in = 0;
        }
    }
}

void nk_colview_moments(const nk_kernels *k, const float *x, const nk_colview *v, size_t c0,
                        size_t nc, nk_moments *acc)
{
    const size_t j0 = c0 * v->rep, ncols = nc * v->rep;
    const size_t W = ncols == v->width ? widened(v->width) : v->width;
    size_t head = 0;
    if (W != v->width) {
        size_t per = W / v->width, vrows = v->rows / per;
        if (vrows) {
            colview_merge_moments(k, x, vrows, 0, W, W, v->width, v->rep, 0, acc);
            head = vrows * per;
        }
    }
    if (head < v->rows)
        colview_merge_moments(k, x + head * v->width, v->rows - head, j0, ncols, v->width,
                              v->width, v->rep, c0, acc);
}

void nk_colview_normalize(const nk_kernels *k, const float *x, float *y, const nk_colview *v,
                          size_t c0, size_t nc, const float *m, const float *a, const float *b,
                          const nk_epilogue *ep)
{
    const size_t j0 = c0 * v->rep, ncols = nc * v->rep;
    const size_t W = ncols == v->width ? widened(v->width) : v->width;
    float wm[NK_CBLK], wa[NK_CBLK], wb[NK_CBLK];
    size_t head = 0;
    if (W == v->width && v->rep > 1) {
        /* per-column parameters of nc channels, rep columns each: runs of
         * one value that the compiler stores a vector at a time */
        for (size_t c = 0, j = 0; c < nc; c++, j += v->rep) {
            const float mc = m[c], ac = a[c], bc = b[c];
            for (size_t i = 0; i < v->rep; i++) {
                wm[j + i] = mc;
                wa[j + i] = ac;
                wb[j + i] = bc;
            }
        }
        m = wm;
        a = wa;
        b = wb;
    } else if (W != v->width) {
        /* widened: W columns, copies of the row's per-column parameters */
        for (size_t j = 0, c = 0, in = 0, col = 0; j < W; j++) {
            wm[j] = m[c];
            wa[j] = a[c];
            wb[j] = b[c];
            if (++col == v->width) /* widened: the next copy of the row */
                col = c = in = 0;
            else if (++in == v->rep)
                c++, in = 0;
        }
        m = wm;
        a = wa;
        b = wb;
    }
    if (W != v->width) {
        size_t per = W / v->width, vrows = v->rows / per;
        if (vrows) {
            k->norm_cols(x, y, vrows, W, W, W, m, a, b, ep);
            head = vrows * per;
        }
    }
    if (head < v->rows) {
        /* the remaining rows start at column 0 of the per-column arrays */
        size_t off = head * v->width + j0;
        k->norm_cols(x + off, y + off, v->rows - head, ncols, v->width, v->width, m, a, b, ep);
    }
}

/* Channels whose columns fill whole vectors: 16 / gcd(rep, 16). */
static size_t colview_align(const nk_colview *v)
{
    size_t g = 16, r = v->rep;
    while (r) {
        size_t t = g % r;
        g = r;
        r = t;
    }
    return 16 / g;
}

size_t nk_colview_block(const nk_colview *v)
{
    if (v->rep >= NK_CBLK)
        return 1;
    /* a block of whole vectors keeps the normalize loads aligned with the
     * rows' vectors and leaves no masked tail inside a row */
    size_t blk = NK_CBLK / v->rep, al = colview_align(v);
    return blk >= al ? blk - blk % al : blk;
}

bool nk_bn_colview(const nk_shape *s, nk_colview *v)
{
    const size_t N = (size_t)s->n, C = (size_t)s->c, S = (size_t)s->spatial;
    if (s->layout == NK_CHANNELS_LAST) {
        *v = (nk_colview){N * S, C, 1};
        return true;
    }
    /* S == 0 is empty (and would give rep 0): the row path writes nothing */
    if (S == 0 || S >= NK_COLVIEW_MAX_SPATIAL)
        return false;
    *v = (nk_colview){N, C * S, S};
    return true;
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
