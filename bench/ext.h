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
 * A fused case (cs->fuse) is the library's composite of the same work: an
 * elementwise add of x and skip (and skip_bias), then the normalization of
 * that sum; run() is both, create() has run them once.
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

/* Residual add before LayerNorm / RMSNorm (nk_layer_norm_fused_ex,
 * nk_rms_norm_fused_ex): s = x + skip, the normalization of s into y */
typedef enum nkb_fuse {
    NKB_FUSE_NONE = 0,
    NKB_FUSE_ADD = 1,    /* s = x + skip; y written (PyTorch's layer_norm(x + residual)) */
    NKB_FUSE_ADDSUM = 2  /* s = x + skip + skip_bias; y and s written (ONNX Runtime's
                            SkipLayerNormalization with its bias and its sum output) */
} nkb_fuse;

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
    nkb_fuse fuse;        /* LN / RMS forward only: the residual add before it */
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

/* What a fused case reads besides x, shared by normkit's row and the
 * library's so that their outputs can be compared: skip (elements of
 * cs->dtype, laid out as x), skip_bias (c floats; NULL: none), weight and
 * bias of the normalization (c floats; RMSNorm: bias unused). With a 16-bit
 * param_dtype the floats hold values of that type. */
typedef struct nkb_fuse_inputs {
    const void *skip;
    const float *skip_bias;
    const float *weight, *bias;
} nkb_fuse_inputs;

typedef struct nkb_ext nkb_ext;

/* bwd: the inputs of a backward case, fuse those of a fused case (NULL
 * otherwise) */
nkb_ext *nkb_onednn_create(const nkb_case *cs, const void *x, const nkb_bwd_inputs *bwd,
                           const nkb_fuse_inputs *fuse, char *why, size_t why_len);
void nkb_onednn_run(nkb_ext *e);
/* Backward: dx as run() leaves it (elements of cs->dtype, laid out as x);
 * NULL for a forward case */
const void *nkb_onednn_dx(const nkb_ext *e);
/* Fused case: y, and the sum x + skip + skip_bias of NKB_FUSE_ADDSUM, as
 * run() leaves them (elements of cs->dtype, laid out as x); NULL otherwise */
const void *nkb_onednn_y(const nkb_ext *e);
const void *nkb_onednn_sum(const nkb_ext *e);
void nkb_onednn_destroy(nkb_ext *e);
const char *nkb_onednn_version(void);

nkb_ext *nkb_aten_create(const nkb_case *cs, const void *x, const nkb_fuse_inputs *fuse, char *why,
                         size_t why_len);
void nkb_aten_run(nkb_ext *e);
const void *nkb_aten_y(const nkb_ext *e);   /* as nkb_onednn_y */
const void *nkb_aten_sum(const nkb_ext *e); /* as nkb_onednn_sum */
void nkb_aten_destroy(nkb_ext *e);
const char *nkb_aten_version(void);

#ifdef __cplusplus
}
#endif

#endif /* NKB_EXT_H */
