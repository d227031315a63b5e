/*
 * The element type of a kernel unit. The kernel sources (kernels/ref and
 * kernels/simd) are written once and compiled once per element type, with
 * NK_DT set to one of the NK_DTYPE_* codes of normkit.h (-DNK_DT=1 by the
 * build; fp32 when unset). This header turns it into:
 *
 *   xt               the storage type of x and y: float, or uint16_t for
 *                    fp16 and bf16 (no _Float16 / __bf16 C types)
 *   NK_DT_TAG        symbol suffix of the unit's typed functions: empty for
 *                    fp32 (its symbols keep their names), _f16, _bf16
 *   NK_DT_NAME(n)    n with the unit's suffix (nk_kernels_init_ref_f16)
 *   NK_DT_F64(n)     the typed fp64 fallbacks: n_f32, n_f16, n_bf16
 *   nk_xload(p)      *p as float, exact
 *   nk_xstore(p, v)  v rounded to the element type (kernels/cvt.h) into *p
 */
#ifndef NK_KERNELS_DTYPE_H
#define NK_KERNELS_DTYPE_H

#include "kernels/cvt.h"
#include "normkit.h"

#ifndef NK_DT
#  define NK_DT NK_DTYPE_F32
#endif

#define NK_CAT3_(a, b, c) a##b##c
#define NK_CAT3(a, b, c) NK_CAT3_(a, b, c)

#if NK_DT == NK_DTYPE_F32
typedef float xt;
#  define NK_DT_TAG
#  define NK_DT_F64(n) n##_f32
#  define nk_xload(p) (*(p))
#  define nk_xstore(p, v) (*(p) = (v))
#elif NK_DT == NK_DTYPE_F16
typedef uint16_t xt;
#  define NK_DT_TAG _f16
#  define NK_DT_F64(n) n##_f16
static inline float nk_xload(const xt *p) { return nk_f16_to_f32(*p); }
static inline void nk_xstore(xt *p, float v) { *p = nk_f32_to_f16(v); }
#elif NK_DT == NK_DTYPE_BF16
typedef uint16_t xt;
#  define NK_DT_TAG _bf16
#  define NK_DT_F64(n) n##_bf16
static inline float nk_xload(const xt *p) { return nk_bf16_to_f32(*p); }
static inline void nk_xstore(xt *p, float v) { *p = nk_f32_to_bf16(v); }
#else
#  error "NK_DT: not an NK_DTYPE_* code"
#endif

#define NK_DT_NAME(n) NK_CAT3(n, NK_DT_TAG, )

#endif
