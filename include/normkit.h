/*
 * normkit: SIMD normalization kernels with every framework's semantics.
 *
 * The whole public API. Plain C11, fp32 tensors, caller-owned memory.
 *
 * Guarantees
 *   - The functional API (nk_batch_norm_*, nk_instance_norm, nk_group_norm,
 *     nk_layer_norm, nk_rms_norm, nk_moments_*) never allocates, never starts
 *     threads and keeps no state besides the once-initialised dispatch table.
 *   - Every entry point validates its arguments first. On error it returns a
 *     status, sets a thread-local message (nk_last_error) and leaves every
 *     output buffer and running statistic untouched.
 *   - Every function is thread-safe when callers do not share output buffers.
 *
 * Tensor description
 *   nk_shape { n, c, spatial, layout }: spatial is the product of the spatial
 *   extents (1 for an (N, C) input). NK_CHANNELS_FIRST is NCL / NCHW / NCDHW,
 *   NK_CHANNELS_LAST is NLC / NHWC / NDHWC. Element (n, c, s) lives at
 *     channels-first: (n * C + c) * spatial + s
 *     channels-last:  (n * spatial + s) * C + c
 *   N == 0 or spatial == 0 is an empty tensor (valid, nothing is written);
 *   C must be at least 1; negative extents are NK_ERR_BAD_SHAPE.
 *
 * Size rule (every entry point, the same on every target)
 *   The product of the extents, each 0 counted as 1, must be at most
 *   PTRDIFF_MAX / sizeof(float) elements: n * c * spatial for nk_shape,
 *   rows * cols for LayerNorm / RMSNorm. So the tensor, and every array
 *   sized from its extents (C weights, N * C or N * groups saved statistics,
 *   rows saved statistics), is addressable, and an empty tensor is accepted
 *   or refused exactly as a full one of the same non-zero extents, whatever
 *   their order. Arrays of nk_moments (C entries) must also fit:
 *   c <= PTRDIFF_MAX / sizeof(nk_moments). Anything larger is NK_ERR_BAD_SHAPE.
 *
 * Numerics
 *   Moments use chunked two-pass Welford/Chan accumulation (fp32 inside a chunk,
 *   fp64 across chunks), so mean-shifted data, constant rows and groups of
 *   tens of millions of elements agree with a float64 reference. Outputs are
 *   computed as act((x - mean) * (gamma * invstd) + beta): centring before
 *   scaling keeps constant inputs at exactly beta and large means exact.
 */
#ifndef NORMKIT_H
#define NORMKIT_H

#include <stddef.h>
#include <stdint.h>

/* NK_VERSION_MAJOR/MINOR/PATCH, NK_VERSION_STRING, NK_VERSION_NUMBER,
 * generated from meson.build's project version */
#include "normkit_version.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Exported symbols: the library is compiled with -fvisibility=hidden and
 * exports exactly the NK_API functions. Supported platforms: Linux and other
 * POSIX systems with pthreads, built with GCC or Clang (ELF; Mach-O on
 * macOS). Windows is not supported (meson.build stops there), so there is no
 * dllexport/dllimport variant. */
#if defined(__GNUC__) && defined(NK_BUILDING_LIBRARY)
#  define NK_API __attribute__((visibility("default")))
#else
#  define NK_API
#endif

/* Version of the library loaded at run time: NK_VERSION_STRING and
 * NK_VERSION_NUMBER of the headers it was built with. */
NK_API const char *nk_version(void);
NK_API int nk_version_number(void);

/* ------------------------------------------------------------------------ */
/* Status codes                                                               */
/* ------------------------------------------------------------------------ */

typedef enum nk_status {
    NK_OK = 0,
    NK_ERR_NULL_POINTER = 1,   /* a required pointer is NULL */
    NK_ERR_BAD_SHAPE = 2,      /* negative / zero / overflowing extent, rank or shape mismatch */
    NK_ERR_BAD_PARAM = 3,      /* eps, momentum, groups, activation ... out of range */
    NK_ERR_TOO_FEW_VALUES = 4, /* batch statistics over a single value */
    NK_ERR_UNSUPPORTED = 5,    /* ISA not available, combination a framework does not offer */
    NK_ERR_OUT_OF_MEMORY = 6   /* module creation only; the functional API never allocates */
} nk_status;

/* Static, never NULL: "ok", "null pointer", ... */
NK_API const char *nk_status_string(nk_status status);

/* Thread-local message describing the last error returned on this thread,
 * e.g. "Expected more than 1 value per channel when training, got input size
 * [1, 4]". Empty string after a successful call. */
NK_API const char *nk_last_error(void);

/* ------------------------------------------------------------------------ */
/* Shapes, activations, options                                              */
/* ------------------------------------------------------------------------ */

typedef enum nk_layout {
    NK_CHANNELS_FIRST = 0, /* NCL, NCHW, NCDHW */
    NK_CHANNELS_LAST = 1   /* NLC, NHWC, NDHWC */
} nk_layout;

typedef struct nk_shape {
    int64_t n;       /* batch */
    int64_t c;       /* channels (features) */
    int64_t spatial; /* product of spatial extents, 1 for (N, C) */
    nk_layout layout;
} nk_shape;

typedef enum nk_activation {
    NK_ACT_NONE = 0,
    NK_ACT_RELU = 1,
    NK_ACT_LEAKY_RELU = 2, /* x >= 0 ? x : alpha * x */
    NK_ACT_SILU = 3,       /* x * sigmoid(x) */
    NK_ACT_GELU_ERF = 4,   /* 0.5 x (1 + erf(x / sqrt 2)) */
    NK_ACT_GELU_TANH = 5   /* 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))) */
} nk_activation;

/* Trailing options of every operator; NULL means all defaults. */
typedef struct nk_options {
    nk_activation activation; /* fused after the affine transform */
    float alpha;              /* LeakyReLU negative slope (finite) */
} nk_options;

#define NK_OPTIONS_DEFAULT {NK_ACT_NONE, 0.01f}

/* ------------------------------------------------------------------------ */
/* Partial moments (Welford/Chan): the basis of synchronized BatchNorm        */
/* ------------------------------------------------------------------------ */

/* count values, their mean and the sum of squared deviations from it. */
typedef struct nk_moments {
    double count;
    double mean;
    double m2;
} nk_moments;

/* Moments of n contiguous floats (best ISA). x may be NULL when n == 0. */
NK_API nk_status nk_moments_compute(const float *x, int64_t n, nk_moments *out);

/* acc <- acc (+) other, Chan's parallel formula; exact for any split. */
NK_API void nk_moments_merge(nk_moments *acc, const nk_moments *other);

/* Variance m2 / count (biased) or m2 / (count - 1) (unbiased); NaN when
 * the divisor is 0. */
NK_API double nk_moments_var(const nk_moments *m, int unbiased);

/* ------------------------------------------------------------------------ */
/* Running statistics (PyTorch momentum convention)                          */
/* ------------------------------------------------------------------------ */

typedef struct nk_running_stats {
    float *mean;         /* C values, updated in place (both NULL-checked together) */
    float *var;          /* C values, updated in place */
    double momentum;     /* weight of the new batch, in [0, 1]; ignored when cumulative */
    int cumulative;      /* PyTorch momentum=None: momentum = 1 / num_batches_tracked */
    int unbiased;        /* 1: var * n/(n-1) as PyTorch/MegEngine; 0: biased as ONNX/Keras/Paddle */
    int64_t num_batches_tracked; /* incremented by every training call (BatchNorm);
                                    must be in [0, INT64_MAX - 1] */
} nk_running_stats;

/* ------------------------------------------------------------------------ */
/* Functional API                                                             */
/* ------------------------------------------------------------------------ */
/*
 * Common arguments
 *   x, y          input and output, may alias exactly (in place), never partially
 *   weight, bias  C (or normalized) values; NULL = 1 / 0 (affine off)
 *   eps           finite, >= 0
 *   save_mean, save_invstd  optional outputs (NULL = not wanted): the statistics
 *                 a backward pass needs, one per reduced set
 *   opts          NULL = no activation
 */

/* BatchNorm with batch statistics. running may be NULL (track_running_stats=False).
 * Training needs more than one value per channel (N * spatial > 1) unless
 * the tensor is empty: an empty batch still increments num_batches_tracked
 * and leaves the running statistics as they are.
 * save_mean / save_invstd: C values. invstd is 0 when var == 0 and eps == 0. */
NK_API nk_status nk_batch_norm_train(const float *x, const nk_shape *shape,
                                     const float *weight, const float *bias, double eps,
                                     nk_running_stats *running, float *y,
                                     float *save_mean, float *save_invstd,
                                     const nk_options *opts);

/* BatchNorm in inference: running_mean / running_var (C values each). */
NK_API nk_status nk_batch_norm_infer(const float *x, const nk_shape *shape,
                                     const float *weight, const float *bias,
                                     const float *running_mean, const float *running_var,
                                     double eps, float *y, const nk_options *opts);

/* Per-channel moments of one shard (C entries), for synchronized BatchNorm:
 * merge the shards' moments with nk_moments_merge, then call
 * nk_batch_norm_apply_moments on each shard. */
NK_API nk_status nk_batch_norm_stats(const float *x, const nk_shape *shape, nk_moments *per_channel);

/* The training step given global moments (C entries): updates running (may be
 * NULL) from them, normalizes x and writes y. Same checks as nk_batch_norm_train
 * with the global count in place of N * spatial. Each per_channel[c] must have
 * a whole count of at least this shard's own N * spatial (the merged moments
 * of every shard) and m2 >= 0; a count of 1 is NK_ERR_TOO_FEW_VALUES.
 * Non-finite mean or m2 (from NaN or Inf data) are accepted and propagate
 * to y, the saved and the running statistics as they do in
 * nk_batch_norm_train. */
NK_API nk_status nk_batch_norm_apply_moments(const float *x, const nk_shape *shape,
                                             const nk_moments *per_channel,
                                             const float *weight, const float *bias, double eps,
                                             nk_running_stats *running, float *y,
                                             float *save_mean, float *save_invstd,
                                             const nk_options *opts);

/* InstanceNorm: statistics per (n, c) over the spatial positions.
 * use_input_stats = 1: batch statistics (needs spatial != 1, also when N == 0,
 * as PyTorch); when running is
 * not NULL its statistics are updated as PyTorch does (per-(n, c) update, then
 * the mean over n). num_batches_tracked is left as it is.
 * use_input_stats = 0: running statistics (running must be given) as BatchNorm
 * inference. save_mean / save_invstd: N * C values (use_input_stats only). */
NK_API nk_status nk_instance_norm(const float *x, const nk_shape *shape,
                                  const float *weight, const float *bias, double eps,
                                  int use_input_stats, nk_running_stats *running, float *y,
                                  float *save_mean, float *save_invstd,
                                  const nk_options *opts);

/* GroupNorm: statistics per (n, g) over the C / groups channels of group g and
 * every spatial position. C must be divisible by groups. weight / bias have C
 * values. save_mean / save_invstd: N * groups values. */
NK_API nk_status nk_group_norm(const float *x, const nk_shape *shape, int64_t groups,
                               const float *weight, const float *bias, double eps, float *y,
                               float *save_mean, float *save_invstd,
                               const nk_options *opts);

/* LayerNorm over rows: x is rows x cols (cols = product of normalized_shape),
 * weight / bias have cols values. save_mean / save_invstd: rows values. */
NK_API nk_status nk_layer_norm(const float *x, int64_t rows, int64_t cols,
                               const float *weight, const float *bias, double eps, float *y,
                               float *save_mean, float *save_invstd,
                               const nk_options *opts);

/* RMSNorm over rows: y = x / sqrt(mean(x^2) + eps) * weight. PyTorch's
 * eps=None is NK_RMS_EPS_DEFAULT (FLT_EPSILON). save_rstd: rows values. */
#define NK_RMS_EPS_DEFAULT 1.1920928955078125e-07
NK_API nk_status nk_rms_norm(const float *x, int64_t rows, int64_t cols, const float *weight,
                             double eps, float *y, float *save_rstd, const nk_options *opts);

/* ------------------------------------------------------------------------ */
/* Execution context, tensor descriptors and the _ex entry points            */
/* ------------------------------------------------------------------------ */

/*
 * Threads belong to the caller. A runtime hands normkit its own pool through
 * this interface (the shape of pthreadpool's executor and oneDNN's
 * threadpool_iface); normkit never starts a thread itself.
 *
 *   num_threads(ctx)  how many threads parallel_for may run at once (>= 1,
 *                     the calling thread included); NULL means 1.
 *   parallel_for(ctx, task, arg, n)
 *                     calls task(arg, i) exactly once for every i in [0, n),
 *                     in any order, on any of the pool's threads (the calling
 *                     thread may take part), and returns when every call has
 *                     returned. Tasks never block on each other and normkit
 *                     never calls parallel_for from inside a task, so a pool
 *                     may run the calls one after another.
 *
 * Results never depend on the pool: the work is cut into tiles by the shape
 * alone and partial moments merge in tile order, so outputs, saved and
 * running statistics are bitwise identical for 1, 2, 3 ... 64 threads and for
 * any order the pool runs the tasks in. Calls below a size threshold run in
 * the calling thread without touching the pool.
 */
typedef struct nk_threadpool {
    void *ctx;
    size_t (*num_threads)(void *ctx);
    void (*parallel_for)(void *ctx, void (*task)(void *arg, size_t i), void *arg, size_t n);
} nk_threadpool;

/*
 * A small pthread pool for callers without one: num_threads threads in all,
 * the caller of parallel_for included (num_threads - 1 are started here;
 * 0 = one per online CPU). One parallel_for at a time per pool (calls from
 * several threads are serialised). The only normkit functions that create or
 * join threads. NK_ERR_BAD_PARAM for num_threads < 0 or > 1024,
 * NK_ERR_OUT_OF_MEMORY when memory or threads cannot be had.
 */
NK_API nk_status nk_threadpool_create(int num_threads, nk_threadpool **out);
/* Joins the threads and frees the pool; NULL is a no-op. */
NK_API void nk_threadpool_destroy(nk_threadpool *pool);

/*
 * How a call runs. Start from NK_CONTEXT_INIT; ctx == NULL is the same as
 * NK_CONTEXT_INIT (the calling thread only). struct_size is the caller's
 * sizeof(nk_context): fields past it read as zero, so a caller built against
 * an older header keeps working after fields are appended.
 */
typedef struct nk_context {
    uint32_t struct_size;
    uint32_t flags;             /* 0 (no flags are defined yet) */
    const nk_threadpool *pool;  /* NULL: the calling thread only */
    uint64_t reserved[6];       /* 0 */
    /* appended in 0.4 (read as none from older callers' structs) */
    void *workspace;            /* caller memory a call may use, any alignment (NULL: none) */
    size_t workspace_size;      /* its bytes (0 with a NULL workspace) */
} nk_context;
#define NK_CONTEXT_INIT {sizeof(nk_context), 0, NULL, {0, 0, 0, 0, 0, 0}, NULL, 0}

/* Element types (uint32_t codes in descriptors). */
#define NK_DTYPE_F32 0u
#define NK_DTYPE_F16 1u
#define NK_DTYPE_BF16 2u

/*
 * One tensor pair: x and the output y share extents and element type and may
 * have their own strides. Start from NK_TENSOR_DESC_INIT.
 *
 *   n, c, spatial, layout   as nk_shape (layout NK_CHANNELS_FIRST = 0 or
 *                           NK_CHANNELS_LAST = 1, as a uint32_t code).
 *   x_stride[2], y_stride[2]
 *       element strides; the innermost extent is always contiguous:
 *         channels-first (n, c, s) at  n * stride[0] + c * stride[1] + s
 *         channels-last  (n, s, c) at  n * stride[0] + s * stride[1] + c
 *       0 means dense (stride[1] = spatial resp. c, stride[0] = c * spatial).
 *       Non-zero strides must not make rows overlap: stride[1] >= innermost
 *       extent when the middle extent exceeds 1, and stride[0] >= one
 *       sample's span, (middle extent - 1) * stride[1] + innermost extent,
 *       when n exceeds 1; every addressed element must fit in memory.
 *       In place (y == x) requires equal strides.
 *   activation, alpha      fused activation of the output (NK_ACT_*), alpha
 *                           the LeakyReLU slope; 0 and any alpha = none.
 *   dtype                  the element type of x and y: NK_DTYPE_F32,
 *                           NK_DTYPE_F16 or NK_DTYPE_BF16. Arithmetic is fp32
 *                           (statistics merged in fp64) whatever the dtype;
 *                           outputs are rounded to nearest even once, NaN
 *                           stays NaN, Inf stays Inf, overflow gives Inf.
 *   param_dtype            the element type of weight and bias:
 *                           NK_DTYPE_F32 (0, the default; PyTorch's bf16
 *                           activations with fp32 parameters) or dtype.
 *                           Running statistics, saved statistics and
 *                           per-channel moments are fp32 (fp64) always.
 *
 * LayerNorm and RMSNorm normalize over c at every (n, position), in
 * either layout: channels-last, a (rows, cols) matrix is n = rows,
 * c = cols, spatial = 1, x_stride[0] = the row stride; channels-first
 * (N, C, S) is ConvNeXt's LayerNorm2d (data_format="channels_first"),
 * reduced over c at each (n, s) without a transpose (column statistics,
 * fp32 inside chunks of channels and fp64 across them). Their saved
 * statistics hold n * spatial values, index n * spatial + s, in both. The
 * backward passes (nk_layer_norm_backward_ex, nk_rms_norm_backward_ex)
 * take channels-last only.
 */
typedef struct nk_tensor_desc {
    uint32_t struct_size;
    uint32_t dtype;
    uint32_t layout;
    uint32_t flags; /* 0 */
    int64_t n, c, spatial;
    int64_t x_stride[2];
    int64_t y_stride[2];
    int32_t activation;
    float alpha;
    uint64_t reserved[4]; /* 0 */
    /* appended in 0.2 (read as NK_DTYPE_F32 from older callers' structs) */
    uint32_t param_dtype;
    uint32_t reserved2; /* 0 */
} nk_tensor_desc;
#define NK_TENSOR_DESC_INIT                                                                        \
    {sizeof(nk_tensor_desc), NK_DTYPE_F32, 0, 0, 0, 0, 1, {0, 0}, {0, 0}, 0, 0.01f, {0, 0, 0, 0},   \
     NK_DTYPE_F32, 0}

/*
 * The _ex entry points: the functions above with a context and a descriptor.
 * x and y are typed by desc->dtype, weight and bias by desc->param_dtype;
 * every other array is fp32. Every other rule, output and message is the
 * one of the function without _ex, which is a wrapper over these.
 */
NK_API nk_status nk_batch_norm_train_ex(const nk_context *ctx, const nk_tensor_desc *desc,
                                        const void *x, void *y, const void *weight,
                                        const void *bias, double eps, nk_running_stats *running,
                                        float *save_mean, float *save_invstd);
NK_API nk_status nk_batch_norm_infer_ex(const nk_context *ctx, const nk_tensor_desc *desc,
                                        const void *x, void *y, const void *weight,
                                        const void *bias, const float *running_mean,
                                        const float *running_var, double eps);
/* desc's y fields are ignored. */
NK_API nk_status nk_batch_norm_stats_ex(const nk_context *ctx, const nk_tensor_desc *desc,
                                        const void *x, nk_moments *per_channel);
NK_API nk_status nk_batch_norm_apply_moments_ex(const nk_context *ctx, const nk_tensor_desc *desc,
                                                const void *x, void *y,
                                                const nk_moments *per_channel, const void *weight,
                                                const void *bias, double eps,
                                                nk_running_stats *running, float *save_mean,
                                                float *save_invstd);
NK_API nk_status nk_instance_norm_ex(const nk_context *ctx, const nk_tensor_desc *desc,
                                     const void *x, void *y, const void *weight,
                                     const void *bias, double eps, int use_input_stats,
                                     nk_running_stats *running, float *save_mean,
                                     float *save_invstd);
NK_API nk_status nk_group_norm_ex(const nk_context *ctx, const nk_tensor_desc *desc,
                                  const void *x, void *y, int64_t groups, const void *weight,
                                  const void *bias, double eps, float *save_mean,
                                  float *save_invstd);
/* save_mean / save_invstd / save_rstd: one value per normalized row, n * spatial
 * (channels-first: per (n, s), index n * spatial + s). */
NK_API nk_status nk_layer_norm_ex(const nk_context *ctx, const nk_tensor_desc *desc,
                                  const void *x, void *y, const void *weight, const void *bias,
                                  double eps, float *save_mean, float *save_invstd);
NK_API nk_status nk_rms_norm_ex(const nk_context *ctx, const nk_tensor_desc *desc, const void *x,
                                void *y, const void *weight, double eps, float *save_rstd);

/* ------------------------------------------------------------------------ */
/* Fused LayerNorm / RMSNorm: residual add and quantized output (0.5)        */
/* ------------------------------------------------------------------------ */
/*
 * One pass of a transformer block's normalization:
 *
 *   s = (x + skip) + skip_bias                        (residual; else s = x)
 *   v = act(LayerNorm(s) * weight + bias)  or  act(RMSNorm(s) * weight)
 *   y = v in desc->dtype, or quantized (below)
 *
 * Residual (skip != NULL), ONNX Runtime's SkipLayerNormalization and
 * SkipSimplifiedLayerNormalization (com.microsoft): s is computed in fp32
 * from the widened elements, (x + skip) first, then + skip_bias (NULL:
 * none, c values of desc->param_dtype), and the normalization, the saved
 * statistics and `sum` all see that fp32 s. skip has desc->dtype and x's
 * extents at strides skip_stride (rules of nk_tensor_desc's x_stride), or
 * with NK_FUSION_SKIP_BROADCAST one sample (spatial x c, as ONNX's
 * (S, H) / (1, S, H) skip of a (B, S, H) input) added to each of the n
 * samples (skip_stride[0] ignored). sum (NULL: not wanted) receives s
 * rounded once to desc->dtype at sum_stride: ONNX Runtime's fourth output,
 * the residual stream of the next block; it needs skip. sum may be x or
 * skip (without broadcast) with their strides (an in-place residual
 * update), never y; y may be x with equal strides (not with quantization).
 * No other overlap is allowed.
 *
 * Quantized output (quant != NK_QUANT_NONE): y holds bytes, y_stride counts
 * them, and v is the fp32 value of the unquantized call before its store:
 * for fp32 what that call writes, bit for bit; for fp16 / bf16 the value
 * it would round (the quantization rounds once, from fp32):
 *   NK_QUANT_TENSOR  ONNX QuantizeLinear with a per-tensor y_scale (finite,
 *                    > 0) and y_zero_point: y = saturate(round(v / y_scale)
 *                    + y_zero_point), y_dtype NK_DTYPE_S8 ([-128, 127],
 *                    zero point in that range) or NK_DTYPE_U8 ([0, 255]).
 *   NK_QUANT_ROW     dynamic per row (per token), symmetric int8:
 *                    row_scale[r] = absmax_r / 127 (fp32 division; absmax_r
 *                    the largest |v| of row r), y = saturate(round(v /
 *                    row_scale[r])); y_dtype NK_DTYPE_S8, y_scale and
 *                    y_zero_point unused (1 and 0); row_scale holds
 *                    n * spatial floats.
 * round is to nearest, ties to even, of the exact quotient (as if divided
 * in fp64; never a double rounding). NaN quantizes to the zero point;
 * infinities saturate. NK_QUANT_ROW ignores NaN in the absmax, and a row
 * whose scale is 0 (or not finite) quantizes every element to 0.
 *
 * fusion NULL (or NK_NORM_FUSION_INIT) is the plain nk_layer_norm_ex /
 * nk_rms_norm_ex. Fusions need desc->layout NK_CHANNELS_LAST. Errors name
 * the field: NK_ERR_NULL_POINTER (sum without skip, NK_QUANT_ROW without
 * row_scale), NK_ERR_BAD_PARAM (flags, quant, y_dtype, y_scale,
 * y_zero_point, reserved, aliasing), NK_ERR_BAD_SHAPE (strides).
 */
#define NK_DTYPE_S8 3u /* int8: quantized outputs only */
#define NK_DTYPE_U8 4u /* uint8: quantized outputs only */

#define NK_QUANT_NONE 0u
#define NK_QUANT_TENSOR 1u
#define NK_QUANT_ROW 2u

/* nk_norm_fusion.flags */
#define NK_FUSION_SKIP_BROADCAST 1u

typedef struct nk_norm_fusion {
    uint32_t struct_size;    /* sizeof(nk_norm_fusion) */
    uint32_t flags;          /* NK_FUSION_* */
    const void *skip;        /* NULL: no residual */
    const void *skip_bias;   /* c values of desc->param_dtype, or NULL */
    void *sum;               /* x + skip + skip_bias in desc->dtype, or NULL */
    int64_t skip_stride[2];  /* 0: dense */
    int64_t sum_stride[2];   /* 0: dense */
    uint32_t quant;          /* NK_QUANT_* */
    uint32_t y_dtype;        /* with quant: NK_DTYPE_S8 or NK_DTYPE_U8 */
    float y_scale;           /* NK_QUANT_TENSOR */
    int32_t y_zero_point;    /* NK_QUANT_TENSOR */
    float *row_scale;        /* NK_QUANT_ROW: one per row */
    uint64_t reserved[4];    /* 0 */
} nk_norm_fusion;
#define NK_NORM_FUSION_INIT                                                                        \
    {sizeof(nk_norm_fusion), 0, NULL, NULL, NULL, {0, 0}, {0, 0}, NK_QUANT_NONE, NK_DTYPE_S8,     \
     1.0f, 0, NULL, {0, 0, 0, 0}}

/* Added in 0.5: LayerNorm / RMSNorm with the fusions of `fusion` (may be
 * NULL). Every other argument and rule is nk_layer_norm_ex's /
 * nk_rms_norm_ex's; save_mean / save_invstd / save_rstd are those of s. */
NK_API nk_status nk_layer_norm_fused_ex(const nk_context *ctx, const nk_tensor_desc *desc,
                                        const nk_norm_fusion *fusion, const void *x, void *y,
                                        const void *weight, const void *bias, double eps,
                                        float *save_mean, float *save_invstd);
NK_API nk_status nk_rms_norm_fused_ex(const nk_context *ctx, const nk_tensor_desc *desc,
                                      const nk_norm_fusion *fusion, const void *x, void *y,
                                      const void *weight, double eps, float *save_rstd);

/* ------------------------------------------------------------------------ */
/* Backward passes                                                            */
/* ------------------------------------------------------------------------ */
/*
 * The gradients of the _ex operators (added in 0.3). Each takes the forward's context and
 * descriptor (same extents, layout, strides, dtype, param_dtype, activation
 * and alpha) and the statistics the forward saved.
 *
 *   x, dx        desc->dtype, laid out as the forward's x (desc->x_stride)
 *   y, dy        desc->dtype, laid out as the forward's y (desc->y_stride);
 *                y is the forward output and is read only when
 *                desc->activation is NK_ACT_RELU or NK_ACT_LEAKY_RELU (it
 *                may be NULL otherwise): the gradient passes where y > 0
 *                and is multiplied by alpha (0 for ReLU) elsewhere, as
 *                PyTorch. The other activations need the pre-activation:
 *                NK_ERR_UNSUPPORTED, and so is LeakyReLU with alpha < 0
 *                (the sign of y is then not the sign of its input).
 *   weight       desc->param_dtype; NULL means 1 (affine off)
 *   dweight, dbias  desc->param_dtype, C values (LayerNorm / RMSNorm: c),
 *                each its fp64 sum rounded to fp32 (and that to 16 bits for
 *                a 16-bit param_dtype). A 16-bit weight of more than 2048
 *                entries is widened into one heap buffer per call, as the
 *                forward's (NK_ERR_OUT_OF_MEMORY without one); nothing
 *                else allocates. With weight == NULL
 *                they are still the gradients with respect to an implicit
 *                weight of 1 and bias of 0 (PyTorch returns none; a caller
 *                that wants none passes NULL).
 *   statistics   fp32, as the forward saved them.
 *
 * Every output pointer may be NULL (not wanted); a call with every output
 * NULL validates its arguments and returns NK_OK. x and dy (and y where
 * read) are required for a non-empty tensor when any output is wanted, and
 * so are the statistics. dx may be dy exactly (in place) when x_stride ==
 * y_stride; dx may alias nothing else. An empty tensor writes zeros to
 * dweight and dbias (and to the sums of nk_batch_norm_backward_reduce_ex).
 *
 * Numerics: the sums of dy and of dy * (x - mean) are fp32 inside chunks
 * and fp64 across chunks, pieces and threads; dx is
 *   invstd * (w dy - mean(w dy) - (x - mean) invstd^2 mean(w dy (x - mean)))
 * over each reduced set (RMSNorm: no mean terms), evaluated in fp32 from
 * per-set coefficients computed in fp64. Results are bitwise identical for
 * any thread count: partial sums merge in an order fixed by the shape.
 * dweight / dbias of the per-sample operators (InstanceNorm, GroupNorm,
 * LayerNorm, RMSNorm) sum the samples (rows) in an order fixed by the shape:
 * LayerNorm and RMSNorm in strips of rows (fp32 inside a strip, fp64 across
 * strips, strips in order), InstanceNorm and GroupNorm per sample.
 *
 * Workspace: asked for dx and dweight (or dbias), these calls take the
 * parameter gradients from the pass that computes dx when they have
 * nk_backward_workspace_size bytes of scratch: ctx->workspace (the caller's
 * memory, used during the call only) or, for small shapes, the calling
 * thread's stack. This applies to LayerNorm and RMSNorm rows of up to 2^17
 * elements, and to channels-first InstanceNorm and GroupNorm whose groups
 * hold up to 2^17 elements. Without it such a call reads x and dy once more
 * for dweight / dbias than for dx alone. The results are the same bits
 * either way; a workspace that is too small is not an error, only unused.
 * BatchNorm needs none (its parameter gradients are its sums).
 */

/* Added in 0.4: bytes of ctx->workspace with which the backward of `layer`
 * (an nk_layer code) on desc (groups: GroupNorm's, else ignored) runs its
 * fastest path; 0 when it uses none. NK_LAYER_SKIP_LAYER_NORM and
 * NK_LAYER_SKIP_RMS_NORM (0.5) give LayerNorm's and RMSNorm's: their
 * gradients are those backwards run on the sum s (dx = dskip, dskip_bias
 * the column sums of ds). NK_ERR_NULL_POINTER for a NULL desc or bytes,
 * otherwise the validation of desc (NK_ERR_BAD_SHAPE, ...) and of layer
 * (NK_ERR_BAD_PARAM); *bytes is written on NK_OK only. */
NK_API nk_status nk_backward_workspace_size(uint32_t layer, const nk_tensor_desc *desc,
                                            int64_t groups, size_t *bytes);

/* Training BatchNorm: save_mean / save_invstd are the batch statistics
 * (C values each, as nk_batch_norm_train_ex saved them). */
NK_API nk_status nk_batch_norm_backward_ex(const nk_context *ctx, const nk_tensor_desc *desc,
                                           const void *x, const void *y, const void *dy, void *dx,
                                           const void *weight, const float *save_mean,
                                           const float *save_invstd, void *dweight, void *dbias);
/* Inference BatchNorm, and InstanceNorm with use_input_stats = 0: the
 * statistics are constants, dx = dy * weight / sqrt(running_var + eps). */
NK_API nk_status nk_batch_norm_infer_backward_ex(const nk_context *ctx,
                                                 const nk_tensor_desc *desc, const void *x,
                                                 const void *y, const void *dy, void *dx,
                                                 const void *weight, const float *running_mean,
                                                 const float *running_var, double eps,
                                                 void *dweight, void *dbias);
/* Synchronized BatchNorm, the per-shard reduction (PyTorch's
 * batch_norm_backward_reduce): sum_dy[c] = sum of dy and sum_dy_xmu[c] =
 * sum of dy * (x - mean[c]) over the shard (dy after the activation mask),
 * fp64, C values each, wanted together (both NULL or neither, else
 * NK_ERR_NULL_POINTER); dweight / dbias the shard's own (optional).
 * All-reduce the sums across shards, then call
 * nk_batch_norm_backward_elemt_ex. */
NK_API nk_status nk_batch_norm_backward_reduce_ex(const nk_context *ctx,
                                                  const nk_tensor_desc *desc, const void *x,
                                                  const void *y, const void *dy,
                                                  const float *mean, const float *invstd,
                                                  double *sum_dy, double *sum_dy_xmu,
                                                  void *dweight, void *dbias);
/* Synchronized BatchNorm, the elementwise step with the global sums and the
 * global count (at least this shard's N * spatial):
 *   dx = w invstd (dy - sum_dy / count - (x - mean) invstd^2 sum_dy_xmu / count) */
NK_API nk_status nk_batch_norm_backward_elemt_ex(const nk_context *ctx,
                                                 const nk_tensor_desc *desc, const void *x,
                                                 const void *y, const void *dy, void *dx,
                                                 const void *weight, const float *mean,
                                                 const float *invstd, const double *sum_dy,
                                                 const double *sum_dy_xmu, int64_t count);
/* InstanceNorm with batch statistics: save_mean / save_invstd N * C values. */
NK_API nk_status nk_instance_norm_backward_ex(const nk_context *ctx, const nk_tensor_desc *desc,
                                              const void *x, const void *y, const void *dy,
                                              void *dx, const void *weight,
                                              const float *save_mean, const float *save_invstd,
                                              void *dweight, void *dbias);
/* GroupNorm: save_mean / save_invstd N * groups values. */
NK_API nk_status nk_group_norm_backward_ex(const nk_context *ctx, const nk_tensor_desc *desc,
                                           const void *x, const void *y, const void *dy, void *dx,
                                           int64_t groups, const void *weight,
                                           const float *save_mean, const float *save_invstd,
                                           void *dweight, void *dbias);
/* LayerNorm (desc as for nk_layer_norm_ex): one mean / invstd per row. */
NK_API nk_status nk_layer_norm_backward_ex(const nk_context *ctx, const nk_tensor_desc *desc,
                                           const void *x, const void *y, const void *dy, void *dx,
                                           const void *weight, const float *save_mean,
                                           const float *save_invstd, void *dweight, void *dbias);
/* RMSNorm (desc as for nk_rms_norm_ex): save_rstd one per row. */
NK_API nk_status nk_rms_norm_backward_ex(const nk_context *ctx, const nk_tensor_desc *desc,
                                         const void *x, const void *y, const void *dy, void *dx,
                                         const void *weight, const float *save_rstd,
                                         void *dweight);

/* ------------------------------------------------------------------------ */
/* Dispatcher                                                                 */
/* ------------------------------------------------------------------------ */

typedef enum nk_isa {
    NK_ISA_SCALAR = 0,
    NK_ISA_AVX2 = 1,   /* AVX2 + FMA */
    NK_ISA_AVX512 = 2, /* AVX-512 F/BW/DQ/VL */
    NK_ISA_NEON = 3
} nk_isa;

/* The ISA whose kernels run now: the best one this CPU and build support,
 * unless NORMKIT_ISA=scalar|avx2|avx512|neon or nk_set_isa chose another. */
NK_API nk_isa nk_get_isa(void);
/* "scalar", "avx2", "avx512", "neon"; "unknown" for other values. */
NK_API const char *nk_isa_name(nk_isa isa);
/* 1 when this CPU, its OS and this build can run isa. */
NK_API int nk_isa_supported(nk_isa isa);
/* Why isa is (not) available, e.g. "AVX2 supported by the CPU, but not the OS". */
NK_API const char *nk_isa_reason(nk_isa isa);
/* Selects isa process-wide. NK_ERR_UNSUPPORTED (and no change) when this CPU,
 * OS or build lacks it. Not meant to race with running kernels. */
NK_API nk_status nk_set_isa(nk_isa isa);

/* ------------------------------------------------------------------------ */
/* Framework modules: each framework's layer, executable                      */
/* ------------------------------------------------------------------------ */

typedef enum nk_framework {
    NK_FW_PYTORCH = 0,
    NK_FW_MINDSPORE = 1,
    NK_FW_MEGENGINE = 2,
    NK_FW_ONNX = 3,
    NK_FW_KERAS = 4,
    NK_FW_PADDLE = 5
} nk_framework;

typedef enum nk_layer {
    NK_LAYER_BATCH_NORM = 0,    /* BatchNorm1d/2d/3d, ONNX BatchNormalization, Keras BatchNormalization */
    NK_LAYER_INSTANCE_NORM = 1, /* InstanceNorm1d/2d/3d, MegEngine InstanceNorm, ONNX InstanceNormalization */
    NK_LAYER_GROUP_NORM = 2,
    NK_LAYER_LAYER_NORM = 3,
    NK_LAYER_RMS_NORM = 4,
    /* Added in 0.5, NK_FW_ONNX only (other frameworks: NK_ERR_UNSUPPORTED at
     * creation); run with nk_module_forward_skip. num_features is the hidden
     * size H, the input's last dim; epsilon defaults to 1e-12 (ONNX Runtime's
     * default for both); weight is gamma (init 1). */
    NK_LAYER_SKIP_LAYER_NORM = 5, /* com.microsoft SkipLayerNormalization: bias is beta (init
                                     0; cfg->bias = 0 leaves it out, as an absent beta input) */
    NK_LAYER_SKIP_RMS_NORM = 6    /* com.microsoft SkipSimplifiedLayerNormalization: no bias */
} nk_layer;

/* Every field -1 (NK_DEFAULT) means "this framework's default"; set the fields
 * by their framework's own names. Start from nk_module_config_init(). Fields a
 * framework does not have must stay at NK_DEFAULT (else NK_ERR_BAD_PARAM). */
#define NK_DEFAULT (-1)
/* PyTorch BatchNorm momentum=None (cumulative moving average). */
#define NK_MOMENTUM_NONE (-2.0)
/* PyTorch RMSNorm eps=None. */
#define NK_EPS_NONE (-2.0)
#define NK_MAX_NORM_DIMS 8

typedef struct nk_module_config {
    /* all frameworks */
    double eps;      /* eps / epsilon; NK_EPS_NONE for PyTorch RMSNorm eps=None */
    double momentum; /* in the framework's own convention (MindSpore 0.9 == PyTorch 0.1) */
    int affine;      /* affine / elementwise_affine / center+scale (Keras) */
    /* PyTorch */
    int track_running_stats;
    int bias; /* LayerNorm bias=False */
    /* MindSpore */
    int use_batch_statistics; /* NK_DEFAULT = None, 0 = False, 1 = True */
    double gamma_init, beta_init, moving_mean_init, moving_var_init; /* constant initialisers */
    int begin_norm_axis, begin_params_axis; /* MindSpore LayerNorm */
    /* MegEngine */
    int freeze;
    /* ONNX */
    int training_mode;
    int axis; /* ONNX LayerNormalization / RMSNormalization axis; Keras axis (-1 or 1) */
    /* Keras */
    int trainable;
    /* Paddle */
    int use_global_stats; /* NK_DEFAULT = None */
    /* layout: MindSpore/Paddle data_format (dims given in that order, e.g.
     * NHWC); PyTorch BatchNorm/InstanceNorm/GroupNorm: the memory format
     * (NK_CHANNELS_LAST = torch.channels_last / channels_last_3d) with dims
     * still given as PyTorch's sizes (N, C, *); Keras follows axis.
     * PyTorch / ONNX LayerNorm and RMSNorm: NK_CHANNELS_FIRST normalizes
     * over dim 1 of an (N, C, *) input, num_features = C (ConvNeXt's
     * LayerNorm(C, data_format="channels_first"), its reference code's
     * F.layer_norm over C of the NHWC permutation): normalized_shape, if
     * given, is the one dim [C], the ONNX axis 1 or NK_DEFAULT; the statistics
     * (nk_module_outputs) are one per (n, position), N * prod(*) values,
     * index n * prod(*) + position. NK_DEFAULT and NK_CHANNELS_LAST keep
     * the trailing normalized dims. Paddle's LayerNorm takes data_format
     * and ignores it, as Paddle does. */
    int data_format; /* NK_DEFAULT, NK_CHANNELS_FIRST or NK_CHANNELS_LAST */
    /* GroupNorm */
    int64_t num_groups;
    /* LayerNorm / RMSNorm: normalized_shape (PyTorch); NK_DEFAULT = [num_features] */
    int normalized_ndim;
    int64_t normalized_shape[NK_MAX_NORM_DIMS];
    /* Backend-dependent behaviour: MindSpore running variance unbiased on
     * GPU/Ascend (default here), biased on CPU. NK_DEFAULT follows the table. */
    int running_var_unbiased;
    /* fused activation */
    nk_options options;
} nk_module_config;

NK_API void nk_module_config_init(nk_module_config *cfg);

typedef struct nk_module nk_module;

/* spatial_rank: 1, 2 or 3 for BatchNorm1d/2d/3d and InstanceNorm1d/2d/3d
 * (ignored for the other layers, where any rank the framework accepts goes).
 * num_features: C, or the normalized size for LayerNorm / RMSNorm when
 * cfg->normalized_ndim is NK_DEFAULT; with a normalized_shape it must be 0,
 * NK_DEFAULT or the shape's product (else NK_ERR_BAD_PARAM). The parameter
 * arrays must fit this target's address space (NK_ERR_BAD_SHAPE). cfg may be NULL (all defaults). The
 * module owns its weight, bias and running statistics, initialised as the
 * framework does, and starts in the framework's default mode (PyTorch,
 * MegEngine, Paddle: training; MindSpore, ONNX, Keras: inference). */
NK_API nk_status nk_module_create(nk_framework fw, nk_layer layer, int spatial_rank,
                                  int64_t num_features, const nk_module_config *cfg,
                                  nk_module **out);
NK_API void nk_module_destroy(nk_module *m);

NK_API nk_status nk_module_set_training(nk_module *m, int training);
NK_API int nk_module_training(const nk_module *m);

/* Runs the layer on an ndim-dimensional input of extents dims (the framework's
 * own layout: NCHW unless data_format / Keras says channels-last). Rejects the
 * ranks the framework rejects. y has as many elements as x. */
NK_API nk_status nk_module_forward(nk_module *m, const void *x, int ndim, const int64_t *dims,
                                   void *y);

/*
 * Optional outputs of nk_module_forward_ex. Set struct_size to
 * sizeof(nk_module_outputs); fields a later version appends are read only
 * when struct_size covers them. Every pointer may be NULL (not wanted); the
 * caller sizes each array from the input's shape:
 *   mean, invstd  the statistics the call normalized with: BatchNorm C values
 *                 (the running ones in eval mode), InstanceNorm N * C,
 *                 GroupNorm N * num_groups, LayerNorm one per normalized row
 *                 (ONNX LayerNormalization's Mean and InvStdDev outputs).
 *                 RMSNorm writes 1 / rms per row to invstd and leaves mean.
 *   running_mean, running_var  BatchNorm with running statistics only: their
 *                 values after the call, C each (ONNX BatchNormalization
 *                 training_mode outputs running_mean / running_var).
 * Nothing is written when the call fails.
 */
typedef struct nk_module_outputs {
    uint32_t struct_size;
    uint32_t reserved; /* 0 */
    float *mean;
    float *invstd;
    float *running_mean;
    float *running_var;
} nk_module_outputs;

/* nk_module_forward plus the optional outputs (outputs may be NULL).
 * Neither runs a SkipLayerNorm / SkipRMSNorm module: NK_ERR_NULL_POINTER,
 * skip is required (nk_module_forward_skip). */
NK_API nk_status nk_module_forward_ex(nk_module *m, const void *x, int ndim, const int64_t *dims,
                                      void *y, const nk_module_outputs *outputs);

/* The element type of x and y of later forwards: NK_DTYPE_F32 (the default),
 * NK_DTYPE_F16 (ONNX float16 tensors) or NK_DTYPE_BF16 (a PyTorch module
 * with dtype=torch.bfloat16). Weight, bias, running statistics and the
 * optional outputs stay fp32: a 16-bit checkpoint's values are exact in
 * fp32 and give the same results, and running statistics keep fp32
 * precision (PyTorch rounds a bf16 module's buffers to bf16 after every
 * update; normkit does not). NK_ERR_BAD_PARAM for other codes. */
NK_API nk_status nk_module_set_dtype(nk_module *m, uint32_t dtype);
NK_API uint32_t nk_module_dtype(const nk_module *m);

/* Later calls of m run with ctx's pool (NULL: the calling thread only). The
 * context is copied; the pool it points to must stay valid while m runs. */
NK_API nk_status nk_module_set_context(nk_module *m, const nk_context *ctx);

/*
 * Added in 0.5: runs an NK_LAYER_SKIP_LAYER_NORM or NK_LAYER_SKIP_RMS_NORM
 * module (ONNX Runtime's SkipLayerNormalization / SkipSimplifiedLayer-
 * Normalization) through nk_layer_norm_fused_ex / nk_rms_norm_fused_ex:
 *
 *   s = (x + skip) + skip_bias,   y = act(LayerNorm(s) * weight + bias)
 *                                 or act(RMSNorm(s) * weight)
 *
 * over the last dim, with the module's eps, activation, dtype and context.
 *   x, y       the input and output, ndim >= 2 dims, the last one
 *              num_features (H); y may be x (in place).
 *   skip       the residual, module dtype: skip_ndim / skip_dims equal to
 *              ndim / dims, or, for a 3D input (B, S, H), (1, S, H) or (S, H):
 *              one (S, H) sample added to every batch entry. Required (NULL
 *              only for an empty input); never y.
 *   skip_bias  ONNX Runtime's optional `bias` input: H fp32 values (like
 *              every module parameter) or NULL.
 *   sum        ONNX Runtime's optional fourth output input_skip_bias_sum: s
 *              rounded once to the module dtype (exactly (x + skip) +
 *              skip_bias in fp32), input's size; NULL: not wanted. It may be
 *              x, or skip of the input's size; never y.
 *   outputs    as nk_module_forward_ex: mean / invstd one per row (B * S
 *              rows) of s (SkipRMSNorm writes 1 / rms to invstd and leaves
 *              mean); running_mean / running_var must be NULL.
 * NK_ERR_UNSUPPORTED on a module of another layer; NK_ERR_NULL_POINTER for a
 * NULL module, dims or skip_dims, and a NULL x, skip or y of a non-empty
 * input; NK_ERR_BAD_SHAPE for a rank outside [2, 16], negative extents, a
 * last dim other than num_features and a skip that fits neither rule;
 * NK_ERR_BAD_PARAM for sum == y, skip == y, sum == a broadcast skip. An
 * empty input (any extent 0) writes nothing. Nothing is written on error.
 */
NK_API nk_status nk_module_forward_skip(nk_module *m, const void *x, int ndim, const int64_t *dims,
                                        const void *skip, int skip_ndim,
                                        const int64_t *skip_dims, const float *skip_bias, void *y,
                                        void *sum, const nk_module_outputs *outputs);

/* Parameter and buffer access (NULL when the module has none). Writable, for
 * loading checkpoints. */
NK_API int64_t nk_module_param_size(const nk_module *m);
NK_API float *nk_module_weight(nk_module *m);
NK_API float *nk_module_bias(nk_module *m);
NK_API float *nk_module_running_mean(nk_module *m);
NK_API float *nk_module_running_var(nk_module *m);
NK_API int64_t nk_module_num_batches_tracked(const nk_module *m);
/* Restores num_batches_tracked from a checkpoint (PyTorch momentum=None
 * BatchNorm resumes its cumulative average from it). BatchNorm modules with
 * running statistics only (else NK_ERR_UNSUPPORTED); count in
 * [0, INT64_MAX - 1] (else NK_ERR_BAD_PARAM). */
NK_API nk_status nk_module_set_num_batches_tracked(nk_module *m, int64_t count);
NK_API double nk_module_eps(const nk_module *m);
/* Momentum in PyTorch's convention (weight of the new batch); NaN when cumulative. */
NK_API double nk_module_momentum_torch(const nk_module *m);

/* Conversions */
NK_API double nk_momentum_to_torch(nk_framework fw, double momentum);
NK_API double nk_momentum_from_torch(nk_framework fw, double momentum_torch);
/* Default eps and momentum (own convention) of a framework's layer; NaN when
 * the layer has none. */
NK_API double nk_default_eps(nk_framework fw, nk_layer layer);
NK_API double nk_default_momentum(nk_framework fw, nk_layer layer);
NK_API const char *nk_framework_name(nk_framework fw);

#ifdef __cplusplus
}
#endif

#endif /* NORMKIT_H */
