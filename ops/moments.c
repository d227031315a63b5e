#include <math.h>

#include "ops/internal.h"

nk_status nk_moments_compute(const float *x, int64_t n, nk_moments *out)
{
    static const char fn[] = "nk_moments_compute";
    if (!out)
        return nk_fail(NK_ERR_NULL_POINTER, "%s: out is NULL", fn);
    if (n < 0)
        return nk_fail(NK_ERR_BAD_SHAPE, "%s: negative length n = %lld", fn, (long long)n);
    if (n > (int64_t)(PTRDIFF_MAX / sizeof(float)))
        return nk_fail(NK_ERR_BAD_SHAPE, "%s: n = %lld floats do not fit in memory", fn, (long long)n);
    if (n && !x)
        return nk_fail(NK_ERR_NULL_POINTER, "%s: x is NULL", fn);
    nk_moments m = {0.0, 0.0, 0.0};
    if (n)
        nk_rows_moments(nk_kernels_current(), x, 1, (size_t)n, (size_t)n, &m);
    *out = m;
    nk_clear_error();
    return NK_OK;
}

void nk_moments_merge(nk_moments *acc, const nk_moments *other)
{
    if (!acc || !other)
        return;
    nk_moments_merge_inline(acc, other->count, other->mean, other->m2);
}

double nk_moments_var(const nk_moments *m, int unbiased)
{
    if (!m)
        return NAN;
    double d = unbiased ? m->count - 1.0 : m->count;
    return d > 0.0 ? m->m2 / d : NAN;
}
