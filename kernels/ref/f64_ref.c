/*
 * The fp64 fallbacks by element type: ops/ and the tests name the dtype, the
 * kernels call the typed functions of their own unit (the units of
 * kernels/ref, compiled once per element type, define those).
 */
#include "kernels/kernels.h"

void nk_moments_f64(unsigned dtype, const void *x, size_t n, size_t step, nk_moments *out)
{
    switch (dtype) {
    case NK_DTYPE_F16: nk_moments_f64_f16(x, n, step, out); break;
    case NK_DTYPE_BF16: nk_moments_f64_bf16(x, n, step, out); break;
    default: nk_moments_f64_f32(x, n, step, out); break;
    }
}

double nk_sumsq_f64(unsigned dtype, const void *x, size_t n)
{
    switch (dtype) {
    case NK_DTYPE_F16: return nk_sumsq_f64_f16(x, n);
    case NK_DTYPE_BF16: return nk_sumsq_f64_bf16(x, n);
    default: return nk_sumsq_f64_f32(x, n);
    }
}

void nk_short_stats_f64(unsigned dtype, const void *x, size_t len, float eps, int rms, float *m,
                        float *s)
{
    switch (dtype) {
    case NK_DTYPE_F16: nk_short_stats_f64_f16(x, len, eps, rms, m, s); break;
    case NK_DTYPE_BF16: nk_short_stats_f64_bf16(x, len, eps, rms, m, s); break;
    default: nk_short_stats_f64_f32(x, len, eps, rms, m, s); break;
    }
}
