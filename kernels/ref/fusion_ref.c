/*
 * Portable kernels of the fused LayerNorm / RMSNorm (kernels.h: add_rows,
 * narrow_rows per element type; quant_rows, absmax_rows in the fp32 unit,
 * shared by every table).
 */
#include <math.h>

#include "kernels/dtype.h"
#include "kernels/kernels.h"

static void add_rows_ref(const void *xv, const void *kv, const float *bias, float *s, void *sumv,
                         size_t rows, size_t len, size_t xstride, size_t kstride,
                         size_t sumstride)
{
    const xt *x = xv, *k = kv;
    xt *sum = sumv;
    for (size_t r = 0; r < rows; r++) {
        const xt *xr = x + r * xstride, *kr = k ? k + r * kstride : NULL;
        float *sr = s + r * len;
        for (size_t i = 0; i < len; i++) {
            float v = nk_xload(&xr[i]);
            if (kr)
                v += nk_xload(&kr[i]);
            if (bias)
                v += bias[i];
            sr[i] = v;
        }
        if (sum)
            for (size_t i = 0; i < len; i++)
                nk_xstore(&sum[r * sumstride + i], sr[i]);
    }
}

static void narrow_rows_ref(const float *s, void *yv, size_t rows, size_t len, size_t ystride)
{
    xt *y = yv;
    for (size_t r = 0; r < rows; r++)
        for (size_t i = 0; i < len; i++)
            nk_xstore(&y[r * ystride + i], s[r * len + i]);
}

#if NK_DT == NK_DTYPE_F32
static void quant_rows_ref(const float *s, uint8_t *q, size_t rows, size_t len, size_t qstride,
                           const float *scale, size_t ps, int zp, int lo, int hi)
{
    for (size_t r = 0; r < rows; r++)
        for (size_t i = 0; i < len; i++)
            q[r * qstride + i] = nk_quant1(s[r * len + i], scale[r * ps], zp, lo, hi);
}

static void absmax_rows_ref(const float *s, size_t rows, size_t len, float *out)
{
    for (size_t r = 0; r < rows; r++) {
        float m = 0.0f;
        for (size_t i = 0; i < len; i++) {
            float a = fabsf(s[r * len + i]);
            m = a > m ? a : m;
        }
        out[r] = m;
    }
}
#endif

void NK_DT_NAME(nk_kernels_init_ref_fusion)(nk_kernels *k);
void NK_DT_NAME(nk_kernels_init_ref_fusion)(nk_kernels *k)
{
    k->add_rows = add_rows_ref;
    k->narrow_rows = narrow_rows_ref;
#if NK_DT == NK_DTYPE_F32
    k->quant_rows = quant_rows_ref;
    k->absmax_rows = absmax_rows_ref;
#endif
}
