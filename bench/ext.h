/*
 * C interface of the adapters to the libraries users would pick instead of
 * normkit (ext_onednn.cc, ext_aten.cc). Each adapter is optional at build
 * time: NKB_HAVE_ONEDNN / NKB_HAVE_ATEN are 1 when it is compiled in.
 *
 * create() copies the input (n * c * spatial elements of cs->dtype; 16-bit
 * types as uint16_t bit patterns) into memory the library owns, prepares
 * everything that can be prepared once (primitives, parameters) and returns
 * NULL with a reason in why when the library has no equivalent of the case.
 * When it succeeds but runs the case differently from normkit (a parameter
 * type the library refuses, ...), it says so in why as well: a note printed
 * under the headline table. run() is one forward pass, the work that is
 * timed; create() has run it once, so run() does not throw. For a backward
 * case (cs->backward) run() is one backward pass and the setup it needs (the
 * forward that produces the saved statistics) is part of create().
 */
#ifndef NKB_EXT_H
#define NKB_EXT_H

#include <stddef.h>
#include <stdint.h>

#include "normkit.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum nkb_op {
    NKB_OP_BN_TRAIN = 0,
    NKB_OP_BN_INFER = 1,
    NKB_OP_IN = 2,
    NKB_OP_GN = 3,
    NKB_OP_LN = 4, /* rows = n * spatial, cols = c (normalizes over channels) */
    NKB_OP_RMS = 5 /* as NKB_OP_LN */
} nkb_op;

typedef struct nkb_case {
    nkb_op op;
    nk_layout layout; /* LN / RMS: always channels-last (rows of c values) */
    int64_t n, c, spatial;
    int64_t groups; /* GroupNorm only */
    nk_activation act;
    double eps;
    uint32_t dtype;       /* x and y: NK_DTYPE_F32, NK_DTYPE_F16 or NK_DTYPE_BF16 */
    uint32_t param_dtype; /* weight and bias: NK_DTYPE_F32 or dtype */
    int backward;         /* 1: the op's backward: x, dy (and y for a ReLU mask) read, dx,
                             dweight and dbias written, from saved statistics */
} nkb_case;

/* What a backward case reads besides x, shared by normkit's row and the
 * library's so that their gradients can be compared: dy (n * c * spatial
 * elements of cs->dtype, laid out as x), weight and bias (c floats) and,
 * for BatchNorm eval, the running mean and variance (c floats). */
typedef struct nkb_bwd_inputs {
    const void *dy;
    const float *weight, *bias;
    const float *running_mean, *running_var;
} nkb_bwd_inputs;

typedef struct nkb_ext nkb_ext;

/* bwd: the inputs of a backward case (NULL for a forward one) */
nkb_ext *nkb_onednn_create(const nkb_case *cs, const void *x, const nkb_bwd_inputs *bwd, char *why,
                           size_t why_len);
void nkb_onednn_run(nkb_ext *e);
/* Backward: dx as run() leaves it (elements of cs->dtype, laid out as x);
 * NULL for a forward case */
const void *nkb_onednn_dx(const nkb_ext *e);
void nkb_onednn_destroy(nkb_ext *e);
const char *nkb_onednn_version(void);

nkb_ext *nkb_aten_create(const nkb_case *cs, const void *x, char *why, size_t why_len);
void nkb_aten_run(nkb_ext *e);
void nkb_aten_destroy(nkb_ext *e);
const char *nkb_aten_version(void);

#ifdef __cplusplus
}
#endif

#endif /* NKB_EXT_H */
