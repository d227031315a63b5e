/*
 * Framework modules: each framework's normalization layer on top of the
 * functional API. What differs between frameworks lives in one table, a row
 * per (framework, layer): defaults, momentum convention, running-variance
 * bias, accepted ranks, the train/eval rule, layout and the framework's own
 * argument names. The code reads the row and never tests a framework, so a
 * framework is added as rows.
 */
#include <float.h>
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ops/internal.h"

#define DEF(v) ((v) == NK_DEFAULT)

/* How a momentum converts to PyTorch's weight of the new batch. Each
 * convention is its own inverse, so one conversion serves both ways. */
enum convention {
    MOM_NEW_WEIGHT, /* PyTorch: momentum is the weight of the new batch */
    MOM_OLD_WEIGHT  /* the weight of the old value: m_torch = 1 - m */
};

enum affine {
    AFFINE_ON,    /* affine defaults to True */
    AFFINE_OFF,   /* affine defaults to False (PyTorch InstanceNorm) */
    AFFINE_ALWAYS /* weight and bias whatever affine says: ONNX scale/B are inputs,
                   * MindSpore applies gamma/beta even when they are frozen */
};

/* What the config's axis means. */
enum axis_rule {
    AXIS_NONE,
    AXIS_NORM,  /* ONNX: first normalized (and parameter) axis of LayerNorm / RMSNorm */
    AXIS_LAYOUT /* Keras: -1 is channels-last, 1 channels-first */
};

/* Which statistics a BatchNorm / InstanceNorm call normalizes with. */
enum stats {
    STATS_TRAINING,    /* batch statistics when training or without running ones; updated when training */
    STATS_RUNNING,     /* running statistics where there are some, never updated */
    STATS_BATCH,       /* batch statistics; running ones updated when training */
    STATS_BATCH_UPDATE /* batch statistics; running ones updated in both modes */
};

/* The arguments of nk_module_config whose meaning or presence differs
 * between rows, in the order they are checked (the order decides which error
 * a config with several mistakes gets): the name the messages give each and
 * what "has no parameter" adds to it. Every row has affine; an argument a row
 * lacks must stay NK_DEFAULT. */
#define MODULE_ARGS(X)                                                                             \
    X(AFFINE, "affine", "")                                                                        \
    X(TRACK_RUNNING_STATS, "track_running_stats", "")                                              \
    X(USE_BATCH_STATISTICS, "use_batch_statistics", "")                                            \
    X(GAMMA_BETA_INIT, "gamma_init/beta_init", "")                                                 \
    X(MOVING_INIT, "moving_mean_init/moving_var_init", "")                                         \
    X(BEGIN_AXES, "begin_norm_axis/begin_params_axis", "") /* they place the LayerNorm axes */     \
    X(FREEZE, "freeze", "")                                                                        \
    X(TRAINING_MODE, "training_mode", "")                                                          \
    X(AXIS, "axis", "")                                                                            \
    X(TRAINABLE, "trainable", "")                                                                  \
    X(USE_GLOBAL_STATS, "use_global_stats", "")                                                    \
    X(BIAS, "bias", "")                                                                            \
    X(RUNNING_VAR_UNBIASED, "running_var_unbiased", " (backend-dependent only in MindSpore)")      \
    X(NUM_GROUPS, "num_groups", "")                                                                \
    X(DATA_FORMAT, "data_format", "")                                                              \
    X(NORMALIZED_SHAPE, "normalized_shape", "")                                                    \
    X(MOMENTUM, "momentum", "") /* whose default is the row's */

enum arg {
#define ARG_ID(id, name, note) ARG_##id,
    MODULE_ARGS(ARG_ID)
#undef ARG_ID
    ARG_MOMENTUM_NONE, /* momentum=None (NK_MOMENTUM_NONE): cumulative average */
    ARG_EPS_NONE,      /* eps=None (NK_EPS_NONE): the default eps */
    ARG_COUNT
};
#define A(name) (1u << ARG_##name)
/* the arguments checked before any value is */
#define A_FIELDS (((A(DATA_FORMAT) << 1) - 1) & ~A(AFFINE))

static const struct {
    const char *name, *note;
} args[] = {
#define ARG_NAME(id, name, note) {name, note},
    MODULE_ARGS(ARG_NAME)
#undef ARG_NAME
};
#define NAMED_ARGS ((int)(sizeof args / sizeof args[0]))

/* The train/eval rule: the statistics each value of the framework's mode
 * flag selects. A row without a mode flag leaves it zero: every value then
 * selects STATS_TRAINING. */
typedef struct mode_rule {
    enum arg flag;
    enum stats by[3]; /* for NK_DEFAULT (None), 0 and 1 */
} mode_rule;

/* Accepted input ranks of a channel layer, by spatial_rank 1, 2, 3 (entry 0
 * alone where the row ignores spatial_rank). */
typedef struct rank_rule {
    uint32_t ndims[3];   /* bit k: a kD input is accepted */
    const char *want[3]; /* the accepted ranks as the error message names them */
    int unbatched;       /* a (C, *spatial) input, one rank short, is accepted as N = 1 */
} rank_rule;

#define ND(k) (1u << (k))
#define ND_FROM(k) (~0u << (k))

static const rank_rule batched = {{ND(2) | ND(3), ND(4), ND(5)}, {"2D or 3D", "4D", "5D"}, 0};
static const rank_rule maybe_batched = {
    {ND(2) | ND(3), ND(3) | ND(4), ND(4) | ND(5)},
    {"2D (unbatched) or 3D", "3D (unbatched) or 4D", "4D (unbatched) or 5D"},
    1};
static const rank_rule exact = {{ND(3), ND(4), ND(5)}, {"3D", "4D", "5D"}, 0};
static const rank_rule nchw = {{ND(4)}, {"4D (N, C, H, W)"}, 0};
static const rank_rule from_1d = {{ND_FROM(1)}, {"at least 1D"}, 0};
static const rank_rule from_2d = {{ND_FROM(2)}, {"at least 2D"}, 0};
static const rank_rule from_3d = {{ND_FROM(3)}, {"at least 3D"}, 0};

typedef struct module_row {
    const char *name; /* the framework's; NULL where it has no such layer */
    /* framework-wide: equal in every row of a framework */
    enum convention convention;
    int unbiased;    /* running variance n / (n - 1) times the batch one */
    int training;    /* mode after construction */
    int dims_nc;     /* dims are (N, C, *) in either memory format (PyTorch) */
    nk_layout layout;
    enum axis_rule axis;
    /* the layer's */
    enum affine affine;
    double eps;
    double momentum;  /* own convention; with A(MOMENTUM) only */
    int track;        /* running statistics by default */
    int weight_only;  /* no bias (RMSNorm) */
    int spatial;      /* highest spatial_rank (1d/2d/3d) accepted; 0: spatial_rank is ignored */
    const rank_rule *ranks; /* NULL: any rank, the normalized axes decide (LayerNorm / RMSNorm) */
    int any_channels; /* InstanceNorm: without weight or running statistics any channel count goes */
    mode_rule mode;
    int64_t groups;   /* default num_groups; 0: required */
    unsigned args;    /* A(...) */
} module_row;

#define LAYER_COUNT (NK_LAYER_SKIP_RMS_NORM + 1)

/* SEMANTICS.md section 2. */
static const module_row table[][LAYER_COUNT] = {
    [NK_FW_PYTORCH] = {
        [NK_LAYER_BATCH_NORM] = {
            .name = "PyTorch", .convention = MOM_NEW_WEIGHT, .unbiased = 1, .training = 1, .dims_nc = 1,
            .eps = 1e-5, .momentum = 0.1, .track = 1, .spatial = 3, .ranks = &batched,
            .args = A(MOMENTUM) | A(MOMENTUM_NONE) | A(TRACK_RUNNING_STATS) | A(DATA_FORMAT)},
        [NK_LAYER_INSTANCE_NORM] = {
            .name = "PyTorch", .convention = MOM_NEW_WEIGHT, .unbiased = 1, .training = 1, .dims_nc = 1,
            .affine = AFFINE_OFF, .eps = 1e-5, .momentum = 0.1, .spatial = 3, .ranks = &maybe_batched,
            .any_channels = 1,
            .args = A(MOMENTUM) | A(MOMENTUM_NONE) | A(TRACK_RUNNING_STATS) | A(DATA_FORMAT)},
        [NK_LAYER_GROUP_NORM] = {
            .name = "PyTorch", .convention = MOM_NEW_WEIGHT, .unbiased = 1, .training = 1, .dims_nc = 1,
            .eps = 1e-5, .ranks = &from_2d, .args = A(NUM_GROUPS) | A(DATA_FORMAT)},
        [NK_LAYER_LAYER_NORM] = {
            .name = "PyTorch", .convention = MOM_NEW_WEIGHT, .unbiased = 1, .training = 1, .dims_nc = 1,
            .eps = 1e-5, .args = A(NORMALIZED_SHAPE) | A(BIAS) | A(DATA_FORMAT)},
        [NK_LAYER_RMS_NORM] = {
            .name = "PyTorch", .convention = MOM_NEW_WEIGHT, .unbiased = 1, .training = 1, .dims_nc = 1,
            .eps = FLT_EPSILON, /* eps=None: torch.finfo(float32).eps */
            .weight_only = 1, .args = A(NORMALIZED_SHAPE) | A(EPS_NONE) | A(DATA_FORMAT)},
    },
    [NK_FW_MINDSPORE] = {
        [NK_LAYER_BATCH_NORM] = {
            .name = "MindSpore", .convention = MOM_OLD_WEIGHT, .unbiased = 1, .affine = AFFINE_ALWAYS,
            .eps = 1e-5, .momentum = 0.9, .track = 1, .spatial = 3, .ranks = &batched,
            .mode = {ARG_USE_BATCH_STATISTICS, {STATS_TRAINING, STATS_RUNNING, STATS_BATCH_UPDATE}},
            .args = A(MOMENTUM) | A(USE_BATCH_STATISTICS) | A(GAMMA_BETA_INIT) | A(MOVING_INIT) |
                    A(RUNNING_VAR_UNBIASED) | A(DATA_FORMAT)},
        [NK_LAYER_INSTANCE_NORM] = {
            .name = "MindSpore", .convention = MOM_OLD_WEIGHT, .unbiased = 1, .affine = AFFINE_ALWAYS,
            .eps = 1e-5, .momentum = 0.1, /* accepted, never used */
            .spatial = 3, .ranks = &exact, .args = A(MOMENTUM) | A(GAMMA_BETA_INIT)},
        [NK_LAYER_GROUP_NORM] = {
            .name = "MindSpore", .convention = MOM_OLD_WEIGHT, .unbiased = 1, .affine = AFFINE_ALWAYS,
            .eps = 1e-5, .ranks = &from_2d, .args = A(GAMMA_BETA_INIT) | A(NUM_GROUPS)},
        [NK_LAYER_LAYER_NORM] = {
            .name = "MindSpore", .convention = MOM_OLD_WEIGHT, .unbiased = 1, .affine = AFFINE_ALWAYS,
            .eps = 1e-7, .args = A(GAMMA_BETA_INIT) | A(BEGIN_AXES) | A(NORMALIZED_SHAPE)},
        [NK_LAYER_RMS_NORM] = {
            .name = "MindSpore", .convention = MOM_OLD_WEIGHT, .unbiased = 1, .affine = AFFINE_ALWAYS,
            .eps = 1e-6, .weight_only = 1, .args = A(GAMMA_BETA_INIT) | A(NORMALIZED_SHAPE)},
    },
    [NK_FW_MEGENGINE] = {
        [NK_LAYER_BATCH_NORM] = {
            .name = "MegEngine", .convention = MOM_OLD_WEIGHT, .unbiased = 1, .training = 1,
            .eps = 1e-5, .momentum = 0.9, .track = 1, .spatial = 2, .ranks = &batched,
            /* freeze acts only with running statistics to freeze (STATS_RUNNING) */
            .mode = {ARG_FREEZE, {STATS_TRAINING, STATS_TRAINING, STATS_RUNNING}},
            .args = A(MOMENTUM) | A(TRACK_RUNNING_STATS) | A(FREEZE)},
        [NK_LAYER_INSTANCE_NORM] = {
            .name = "MegEngine", .convention = MOM_OLD_WEIGHT, .unbiased = 1, .training = 1,
            .eps = 1e-5, .ranks = &nchw},
        [NK_LAYER_GROUP_NORM] = {
            .name = "MegEngine", .convention = MOM_OLD_WEIGHT, .unbiased = 1, .training = 1,
            .eps = 1e-5, .ranks = &from_2d, .args = A(NUM_GROUPS)},
        [NK_LAYER_LAYER_NORM] = {
            .name = "MegEngine", .convention = MOM_OLD_WEIGHT, .unbiased = 1, .training = 1,
            .eps = 1e-5, .args = A(NORMALIZED_SHAPE)},
    },
    [NK_FW_ONNX] = {
        [NK_LAYER_BATCH_NORM] = {
            .name = "ONNX", .convention = MOM_OLD_WEIGHT, .axis = AXIS_NORM, .affine = AFFINE_ALWAYS,
            .eps = 1e-5, .momentum = 0.9, .track = 1, .ranks = &from_1d,
            .args = A(MOMENTUM) | A(TRAINING_MODE) | A(AXIS)},
        [NK_LAYER_INSTANCE_NORM] = {
            .name = "ONNX", .convention = MOM_OLD_WEIGHT, .axis = AXIS_NORM, .affine = AFFINE_ALWAYS,
            .eps = 1e-5, .ranks = &from_3d, .args = A(AXIS)},
        [NK_LAYER_GROUP_NORM] = {
            .name = "ONNX", .convention = MOM_OLD_WEIGHT, .axis = AXIS_NORM, .affine = AFFINE_ALWAYS,
            .eps = 1e-5, .ranks = &from_2d, .args = A(AXIS) | A(NUM_GROUPS)},
        [NK_LAYER_LAYER_NORM] = {
            .name = "ONNX", .convention = MOM_OLD_WEIGHT, .axis = AXIS_NORM, .affine = AFFINE_ALWAYS,
            .eps = 1e-5, .args = A(AXIS) | A(NORMALIZED_SHAPE) | A(DATA_FORMAT)},
        [NK_LAYER_RMS_NORM] = {
            .name = "ONNX", .convention = MOM_OLD_WEIGHT, .axis = AXIS_NORM, .affine = AFFINE_ALWAYS,
            .eps = 1e-5, .weight_only = 1, .args = A(AXIS) | A(NORMALIZED_SHAPE) | A(DATA_FORMAT)},
        /* com.microsoft SkipLayerNormalization / SkipSimplifiedLayerNormalization: over
         * the last axis (no axis attribute); epsilon defaults to 1e-12 in both schemas;
         * beta is an optional input (bias=False leaves it out) */
        [NK_LAYER_SKIP_LAYER_NORM] = {
            .name = "ONNX", .convention = MOM_OLD_WEIGHT, .axis = AXIS_NORM, .affine = AFFINE_ALWAYS,
            .eps = 1e-12, .args = A(BIAS)},
        [NK_LAYER_SKIP_RMS_NORM] = {
            .name = "ONNX", .convention = MOM_OLD_WEIGHT, .axis = AXIS_NORM, .affine = AFFINE_ALWAYS,
            .eps = 1e-12, .weight_only = 1},
    },
    [NK_FW_KERAS] = {
        [NK_LAYER_BATCH_NORM] = {
            .name = "Keras", .convention = MOM_OLD_WEIGHT, .layout = NK_CHANNELS_LAST, .axis = AXIS_LAYOUT,
            .eps = 1e-3, .momentum = 0.99, .track = 1, .ranks = &from_2d,
            .mode = {ARG_TRAINABLE, {STATS_TRAINING, STATS_RUNNING, STATS_TRAINING}},
            .args = A(MOMENTUM) | A(AXIS) | A(TRAINABLE)},
        [NK_LAYER_GROUP_NORM] = {
            .name = "Keras", .convention = MOM_OLD_WEIGHT, .layout = NK_CHANNELS_LAST, .axis = AXIS_LAYOUT,
            .eps = 1e-3, .ranks = &from_2d, .groups = 32, .args = A(AXIS) | A(TRAINABLE) | A(NUM_GROUPS)},
        [NK_LAYER_LAYER_NORM] = {
            .name = "Keras", .convention = MOM_OLD_WEIGHT, .layout = NK_CHANNELS_LAST, .axis = AXIS_LAYOUT,
            .eps = 1e-3, .args = A(AXIS) | A(TRAINABLE) | A(NORMALIZED_SHAPE)},
        [NK_LAYER_RMS_NORM] = {
            .name = "Keras", .convention = MOM_OLD_WEIGHT, .layout = NK_CHANNELS_LAST, .axis = AXIS_LAYOUT,
            .eps = 1e-6, .weight_only = 1, .args = A(AXIS) | A(TRAINABLE) | A(NORMALIZED_SHAPE)},
    },
    [NK_FW_PADDLE] = {
        [NK_LAYER_BATCH_NORM] = {
            .name = "Paddle", .convention = MOM_OLD_WEIGHT, .training = 1,
            .eps = 1e-5, .momentum = 0.9, .track = 1, .spatial = 3, .ranks = &batched,
            .mode = {ARG_USE_GLOBAL_STATS, {STATS_TRAINING, STATS_BATCH, STATS_RUNNING}},
            .args = A(MOMENTUM) | A(USE_GLOBAL_STATS) | A(DATA_FORMAT)},
        [NK_LAYER_INSTANCE_NORM] = {
            .name = "Paddle", .convention = MOM_OLD_WEIGHT, .training = 1,
            .eps = 1e-5, .momentum = 0.9, .spatial = 3, .ranks = &exact,
            .args = A(MOMENTUM) | A(DATA_FORMAT)},
        [NK_LAYER_GROUP_NORM] = {
            .name = "Paddle", .convention = MOM_OLD_WEIGHT, .training = 1,
            .eps = 1e-5, .ranks = &from_2d, .args = A(NUM_GROUPS) | A(DATA_FORMAT)},
        [NK_LAYER_LAYER_NORM] = {
            .name = "Paddle", .convention = MOM_OLD_WEIGHT, .training = 1,
            .eps = 1e-5, .args = A(NORMALIZED_SHAPE) | A(DATA_FORMAT)},
    },
};

#define FW_COUNT ((int)(sizeof table / sizeof table[0]))

static const char *const layer_names[LAYER_COUNT] = {
    [NK_LAYER_BATCH_NORM] = "BatchNorm",
    [NK_LAYER_INSTANCE_NORM] = "InstanceNorm",
    [NK_LAYER_GROUP_NORM] = "GroupNorm",
    [NK_LAYER_LAYER_NORM] = "LayerNorm",
    [NK_LAYER_RMS_NORM] = "RMSNorm",
    [NK_LAYER_SKIP_LAYER_NORM] = "SkipLayerNorm",
    [NK_LAYER_SKIP_RMS_NORM] = "SkipRMSNorm",
};

/* The layers that take a residual input (nk_module_forward_skip). */
static int skip_layer(nk_layer layer)
{
    return layer == NK_LAYER_SKIP_LAYER_NORM || layer == NK_LAYER_SKIP_RMS_NORM;
}

/* The row of (fw, layer); NULL when the framework has no such layer. */
static const module_row *find_row(nk_framework fw, nk_layer layer)
{
    if ((unsigned)fw >= (unsigned)FW_COUNT || (unsigned)layer >= LAYER_COUNT || !table[fw][layer].name)
        return NULL;
    return &table[fw][layer];
}

/* Any row of fw, for the framework-wide columns. */
static const module_row *framework_row(nk_framework fw)
{
    for (int l = 0; l < LAYER_COUNT; l++) {
        const module_row *r = find_row(fw, (nk_layer)l);
        if (r)
            return r;
    }
    return NULL;
}

static double default_momentum(const module_row *r)
{
    return r->args & A(MOMENTUM) ? r->momentum : NAN;
}

/* The public conversions take any fw: one out of range (no row) converts
 * as 1 - m. */
static double to_torch(const module_row *r, double m)
{
    return r && r->convention == MOM_NEW_WEIGHT ? m : 1.0 - m;
}

/* ------------------------------------------------------------------------ */

struct nk_module {
    const module_row *row;
    nk_layer layer;
    int spatial_rank;
    int64_t C;          /* channels, or normalized size P for LayerNorm / RMSNorm */
    double eps;
    double momentum;    /* own convention, as configured */
    int cumulative;     /* PyTorch momentum=None */
    int affine;
    int track;          /* owns running statistics */
    int training;
    enum stats stats;   /* what the row's mode flag selected */
    int unbiased;
    nk_layout layout;
    int64_t groups;
    int norm_ndim;
    int64_t norm_shape[NK_MAX_NORM_DIMS];
    /* LayerNorm / RMSNorm: first reduced and first parameter dim, < 0 from the end */
    int norm_axis, params_axis;
    /* LayerNorm / RMSNorm with data_format NK_CHANNELS_FIRST: over dim 1 of
     * (N, C, *) (ConvNeXt's channels_first) */
    int ln_channels_first;
    nk_options opts;
    unsigned dtype; /* x and y: nk_module_set_dtype */
    nk_context ctx; /* nk_module_set_context: the pool the calls run on */
    int64_t nbt;
    float *weight, *bias, *rmean, *rvar;
    float storage[];
};

const char *nk_framework_name(nk_framework fw)
{
    const module_row *r = framework_row(fw);
    return r ? r->name : "unknown";
}

double nk_default_eps(nk_framework fw, nk_layer layer)
{
    const module_row *r = find_row(fw, layer);
    return r ? r->eps : NAN;
}

double nk_default_momentum(nk_framework fw, nk_layer layer)
{
    const module_row *r = find_row(fw, layer);
    return r ? default_momentum(r) : NAN;
}

double nk_momentum_to_torch(nk_framework fw, double m)
{
    return to_torch(framework_row(fw), m);
}

double nk_momentum_from_torch(nk_framework fw, double m)
{
    return to_torch(framework_row(fw), m);
}

void nk_module_config_init(nk_module_config *cfg)
{
    if (!cfg)
        return;
    cfg->eps = NK_DEFAULT;
    cfg->momentum = NK_DEFAULT;
    cfg->affine = NK_DEFAULT;
    cfg->track_running_stats = NK_DEFAULT;
    cfg->bias = NK_DEFAULT;
    cfg->use_batch_statistics = NK_DEFAULT;
    cfg->gamma_init = cfg->beta_init = cfg->moving_mean_init = cfg->moving_var_init = NK_DEFAULT;
    cfg->begin_norm_axis = cfg->begin_params_axis = NK_DEFAULT;
    cfg->freeze = NK_DEFAULT;
    cfg->training_mode = NK_DEFAULT;
    cfg->axis = NK_DEFAULT;
    cfg->trainable = NK_DEFAULT;
    cfg->use_global_stats = NK_DEFAULT;
    cfg->data_format = NK_DEFAULT;
    cfg->num_groups = NK_DEFAULT;
    cfg->normalized_ndim = NK_DEFAULT;
    for (int i = 0; i < NK_MAX_NORM_DIMS; i++)
        cfg->normalized_shape[i] = NK_DEFAULT;
    cfg->running_var_unbiased = NK_DEFAULT;
    cfg->options.activation = NK_ACT_NONE;
    cfg->options.alpha = 0.01f;
}

/* The A(...) arguments cfg sets. */
static unsigned given_args(const nk_module_config *c)
{
    return (DEF(c->track_running_stats) ? 0 : A(TRACK_RUNNING_STATS)) |
           (DEF(c->use_batch_statistics) ? 0 : A(USE_BATCH_STATISTICS)) |
           (DEF(c->gamma_init) && DEF(c->beta_init) ? 0 : A(GAMMA_BETA_INIT)) |
           (DEF(c->moving_mean_init) && DEF(c->moving_var_init) ? 0 : A(MOVING_INIT)) |
           (DEF(c->begin_norm_axis) && DEF(c->begin_params_axis) ? 0 : A(BEGIN_AXES)) |
           (DEF(c->freeze) ? 0 : A(FREEZE)) | (DEF(c->training_mode) ? 0 : A(TRAINING_MODE)) |
           (DEF(c->axis) ? 0 : A(AXIS)) | (DEF(c->trainable) ? 0 : A(TRAINABLE)) |
           (DEF(c->use_global_stats) ? 0 : A(USE_GLOBAL_STATS)) | (DEF(c->bias) ? 0 : A(BIAS)) |
           (DEF(c->running_var_unbiased) ? 0 : A(RUNNING_VAR_UNBIASED)) |
           (DEF(c->num_groups) ? 0 : A(NUM_GROUPS)) | (DEF(c->data_format) ? 0 : A(DATA_FORMAT)) |
           (DEF(c->normalized_ndim) ? 0 : A(NORMALIZED_SHAPE)) | (DEF(c->momentum) ? 0 : A(MOMENTUM));
}

/* Fails on the first of the arguments given that row r does not have. */
static nk_status check_args(const module_row *r, unsigned given)
{
    const unsigned lacking = given & ~r->args;
    for (int i = 0; i < NAMED_ARGS; i++)
        if (lacking & (1u << i))
            return nk_fail(NK_ERR_BAD_PARAM, "nk_module_create: %s has no parameter '%s%s'", r->name,
                           args[i].name, args[i].note);
    return NK_OK;
}

static int tri(int v) { return v == NK_DEFAULT || v == 0 || v == 1; }

/* The configured value of a tri-state flag, else the row's default. */
static int flag_or(int v, int row_default) { return DEF(v) ? row_default : v; }

nk_status nk_module_create(nk_framework fw, nk_layer layer, int spatial_rank, int64_t num_features,
                           const nk_module_config *cfg_in, nk_module **out)
{
    static const char fn[] = "nk_module_create";
    if (!out)
        return nk_fail(NK_ERR_NULL_POINTER, "%s: out is NULL", fn);
    if ((unsigned)fw >= (unsigned)FW_COUNT)
        return nk_fail(NK_ERR_BAD_PARAM, "%s: fw must be an nk_framework in [0, %d], got %d", fn,
                       FW_COUNT - 1, (int)fw);
    if ((unsigned)layer >= LAYER_COUNT)
        return nk_fail(NK_ERR_BAD_PARAM, "%s: layer must be an nk_layer in [0, %d], got %d", fn,
                       LAYER_COUNT - 1, (int)layer);
    const module_row *r = find_row(fw, layer);
    const char *lname = layer_names[layer];
    if (!r)
        return nk_fail(NK_ERR_UNSUPPORTED, "%s: %s has no %s layer", fn, nk_framework_name(fw), lname);
    nk_module_config cfg;
    if (cfg_in)
        cfg = *cfg_in;
    else
        nk_module_config_init(&cfg);
    const unsigned given = given_args(&cfg);
    nk_status st = check_args(r, given & A_FIELDS);
    if (st)
        return st;
    /* the tri-state flags (NK_DEFAULT, 0 or 1); 0 stands in for the other arguments */
    const int flag[ARG_COUNT] = {
        [ARG_AFFINE] = cfg.affine,
        [ARG_TRACK_RUNNING_STATS] = cfg.track_running_stats,
        [ARG_USE_BATCH_STATISTICS] = cfg.use_batch_statistics,
        [ARG_FREEZE] = cfg.freeze,
        [ARG_TRAINING_MODE] = cfg.training_mode,
        [ARG_TRAINABLE] = cfg.trainable,
        [ARG_USE_GLOBAL_STATS] = cfg.use_global_stats,
        [ARG_BIAS] = cfg.bias,
        [ARG_RUNNING_VAR_UNBIASED] = cfg.running_var_unbiased,
    };
    for (int i = 0; i < NAMED_ARGS; i++)
        if (!tri(flag[i]))
            return nk_fail(NK_ERR_BAD_PARAM, "%s: %s %s: cfg.%s takes NK_DEFAULT (-1), 0 or 1, got %d",
                           fn, r->name, lname, args[i].name, flag[i]);

    if (r->spatial) {
        if (spatial_rank < 1 || spatial_rank > 3)
            return nk_fail(NK_ERR_BAD_PARAM, "%s: spatial_rank must be 1, 2 or 3, got %d", fn, spatial_rank);
        if (spatial_rank > r->spatial)
            return nk_fail(NK_ERR_UNSUPPORTED, "%s: %s has no %s%dd", fn, r->name, lname, spatial_rank);
    }

    /* normalized shape (LayerNorm / RMSNorm) */
    int nd = 1;
    int64_t nshape[NK_MAX_NORM_DIMS] = {num_features};
    int64_t P = num_features;
    if ((st = check_args(r, given & A(NORMALIZED_SHAPE))))
        return st;
    if (!DEF(cfg.normalized_ndim)) {
        if (cfg.normalized_ndim < 1 || cfg.normalized_ndim > NK_MAX_NORM_DIMS)
            return nk_fail(NK_ERR_BAD_PARAM, "%s: normalized_ndim must be in [1, %d], got %d", fn,
                           NK_MAX_NORM_DIMS, cfg.normalized_ndim);
        nd = cfg.normalized_ndim;
        P = 1;
        for (int i = 0; i < nd; i++) {
            nshape[i] = cfg.normalized_shape[i];
            if (nshape[i] < 1)
                return nk_fail(NK_ERR_BAD_SHAPE, "%s: normalized_shape[%d] must be >= 1, got %lld", fn, i,
                               (long long)nshape[i]);
            size_t p;
            if ((st = nk_check_product(P, nshape[i], fn, &p)))
                return st;
            P = (int64_t)p;
        }
        if (num_features != 0 && num_features != NK_DEFAULT && num_features != P)
            return nk_fail(NK_ERR_BAD_PARAM,
                           "%s: num_features = %lld disagrees with normalized_shape, whose product "
                           "is %lld: pass 0, NK_DEFAULT or %lld",
                           fn, (long long)num_features, (long long)P, (long long)P);
    }
    if (P < 1)
        return nk_fail(NK_ERR_BAD_SHAPE, "%s: %s %s: num_features must be at least 1, got %lld", fn,
                       r->name, lname, (long long)P);

    /* eps and momentum */
    double eps = cfg.eps;
    if (eps == NK_DEFAULT || (eps == NK_EPS_NONE && (r->args & A(EPS_NONE))))
        eps = r->eps;
    else if (eps == NK_EPS_NONE)
        return nk_fail(NK_ERR_BAD_PARAM,
                       "%s: %s %s: cfg.eps = NK_EPS_NONE (-2) is PyTorch RMSNorm's eps=None only", fn,
                       r->name, lname);
    if (!(eps >= 0.0) || isinf(eps))
        return nk_fail(NK_ERR_BAD_PARAM, "%s: %s %s: cfg.eps must be finite and >= 0, got %g", fn,
                       r->name, lname, eps);
    double mom = cfg.momentum;
    int cumulative = 0;
    if (mom == NK_DEFAULT) {
        mom = default_momentum(r);
    } else if ((st = check_args(r, A(MOMENTUM)))) {
        return st;
    } else if (mom == NK_MOMENTUM_NONE && (r->args & A(MOMENTUM_NONE))) {
        cumulative = 1;
        mom = 0.0;
    } else if (mom == NK_MOMENTUM_NONE) {
        return nk_fail(NK_ERR_BAD_PARAM,
                       "%s: %s %s: cfg.momentum = NK_MOMENTUM_NONE (-2) is PyTorch's momentum=None "
                       "only; %s takes a momentum in [0, 1]",
                       fn, r->name, lname, r->name);
    } else if (!(mom >= 0.0 && mom <= 1.0)) {
        return nk_fail(NK_ERR_BAD_PARAM, "%s: %s %s: cfg.momentum must be in [0, 1], got %g", fn, r->name,
                       lname, mom);
    }

    nk_epilogue ep;
    if ((st = nk_check_options(&cfg.options, fn, &ep)))
        return st;

    /* Flags a row does not have are NK_DEFAULT here (check_args), so each
     * resolves to the row's default. */
    const int affine = r->affine == AFFINE_ALWAYS || flag_or(flag[ARG_AFFINE], r->affine == AFFINE_ON);
    const int track = flag_or(flag[ARG_TRACK_RUNNING_STATS], r->track);

    nk_layout layout = r->layout;
    if (r->axis == AXIS_LAYOUT) {
        if (!DEF(cfg.axis) && cfg.axis != 1)
            return nk_fail(NK_ERR_UNSUPPORTED, "%s: %s axis must be -1 (channels-last) or 1, got %d", fn,
                           r->name, cfg.axis);
        if (cfg.axis == 1 && (layer == NK_LAYER_LAYER_NORM || layer == NK_LAYER_RMS_NORM))
            return nk_fail(NK_ERR_UNSUPPORTED, "%s: %s %s over axis 1 is not supported; use -1", fn, r->name,
                           lname);
        if (cfg.axis == 1)
            layout = NK_CHANNELS_FIRST;
    }
    if (!DEF(cfg.data_format)) {
        if (cfg.data_format != NK_CHANNELS_FIRST && cfg.data_format != NK_CHANNELS_LAST)
            return nk_fail(NK_ERR_BAD_PARAM,
                           "%s: cfg.data_format must be NK_DEFAULT, NK_CHANNELS_FIRST (0) or "
                           "NK_CHANNELS_LAST (1), got %d",
                           fn, cfg.data_format);
        layout = (nk_layout)cfg.data_format;
    }

    int64_t groups = 0;
    if (layer == NK_LAYER_GROUP_NORM) {
        groups = DEF(cfg.num_groups) ? r->groups : cfg.num_groups;
        if (groups < 1)
            return nk_fail(NK_ERR_BAD_PARAM, "%s: %s GroupNorm: cfg.num_groups must be at least 1, got %lld",
                           fn, r->name, (long long)groups);
        if (num_features % groups)
            return nk_fail(NK_ERR_BAD_PARAM,
                           "%s: %s GroupNorm: num_channels (%lld) must be divisible by num_groups (%lld)",
                           fn, r->name, (long long)num_features, (long long)groups);
    }

    /* PyTorch / ONNX LayerNorm and RMSNorm: data_format NK_CHANNELS_FIRST
     * normalizes over dim 1 of (N, C, *), one dim of num_features (ConvNeXt's
     * data_format="channels_first"); the axis, where the framework has one,
     * may only say the same. Paddle's LayerNorm takes data_format and, as
     * Paddle, ignores it. */
    const int ln_cf = (fw == NK_FW_PYTORCH || fw == NK_FW_ONNX) &&
                      (layer == NK_LAYER_LAYER_NORM || layer == NK_LAYER_RMS_NORM) &&
                      cfg.data_format == NK_CHANNELS_FIRST;
    if (ln_cf && nd != 1)
        return nk_fail(NK_ERR_BAD_PARAM,
                       "%s: %s %s: data_format NK_CHANNELS_FIRST normalizes over dim 1 alone: "
                       "normalized_shape must have one dim, got %d",
                       fn, r->name, lname, nd);
    if (ln_cf && r->axis == AXIS_NORM && !DEF(cfg.axis) && cfg.axis != 1)
        return nk_fail(NK_ERR_BAD_PARAM,
                       "%s: %s %s: data_format NK_CHANNELS_FIRST normalizes over axis 1, got axis %d",
                       fn, r->name, lname, cfg.axis);

    const int has_bias = affine && !r->weight_only && cfg.bias != 0;

    /* P floats per parameter array: the bytes must fit size_t and ptrdiff_t
     * on this target (a 32-bit size_t wraps long before 2^40) */
    const int64_t arrays = (affine ? 1 : 0) + (has_bias ? 1 : 0) + (track ? 2 : 0);
    const int64_t ext[2] = {P, arrays};
    if (!nk_extents_fit(ext, 2, sizeof(float)) ||
        (uint64_t)(P * arrays) > (uint64_t)((PTRDIFF_MAX - sizeof(nk_module)) / sizeof(float)))
        return nk_fail(NK_ERR_BAD_SHAPE,
                       "%s: %s %s: num_features = %lld needs %lld parameter arrays of that size, more "
                       "than this target can address",
                       fn, r->name, lname, (long long)P, (long long)arrays);
    size_t nfloats = (size_t)P * (size_t)arrays;
    nk_module *m = calloc(1, sizeof *m + nfloats * sizeof(float));
    if (!m)
        return nk_fail(NK_ERR_OUT_OF_MEMORY, "%s: cannot allocate %zu parameters", fn, nfloats);
    m->row = r;
    m->ctx = (nk_context)NK_CONTEXT_INIT;
    m->layer = layer;
    m->spatial_rank = spatial_rank;
    m->C = P;
    m->eps = eps;
    m->momentum = mom;
    m->cumulative = cumulative;
    m->affine = affine;
    m->track = track;
    m->training = flag_or(flag[ARG_TRAINING_MODE], r->training);
    m->stats = r->mode.by[flag[r->mode.flag] + 1];
    m->unbiased = flag_or(flag[ARG_RUNNING_VAR_UNBIASED], r->unbiased);
    m->layout = layout;
    m->groups = groups;
    m->norm_ndim = nd;
    memcpy(m->norm_shape, nshape, sizeof nshape);
    /* the trailing nd dims, unless the framework places the axes (their
     * NK_DEFAULT, -1, is the last axis) */
    m->norm_axis = m->params_axis = -nd;
    if (r->args & A(BEGIN_AXES)) {
        m->norm_axis = cfg.begin_norm_axis;
        m->params_axis = cfg.begin_params_axis;
    } else if (r->axis == AXIS_NORM) {
        m->norm_axis = m->params_axis = cfg.axis;
    }
    m->ln_channels_first = ln_cf;
    m->opts = cfg.options;

    float *p = m->storage;
    float g0 = DEF(cfg.gamma_init) ? 1.0f : (float)cfg.gamma_init;
    float b0 = DEF(cfg.beta_init) ? 0.0f : (float)cfg.beta_init;
    float mm0 = DEF(cfg.moving_mean_init) ? 0.0f : (float)cfg.moving_mean_init;
    float mv0 = DEF(cfg.moving_var_init) ? 1.0f : (float)cfg.moving_var_init;
    if (affine) {
        m->weight = p;
        for (int64_t i = 0; i < P; i++)
            p[i] = g0;
        p += P;
    }
    if (has_bias) {
        m->bias = p;
        for (int64_t i = 0; i < P; i++)
            p[i] = b0;
        p += P;
    }
    if (track) {
        m->rmean = p;
        m->rvar = p + P;
        for (int64_t i = 0; i < P; i++) {
            m->rmean[i] = mm0;
            m->rvar[i] = mv0;
        }
    }
    *out = m;
    nk_clear_error();
    return NK_OK;
}

void nk_module_destroy(nk_module *m) { free(m); }

nk_status nk_module_set_training(nk_module *m, int training)
{
    if (!m)
        return nk_fail(NK_ERR_NULL_POINTER, "nk_module_set_training: module is NULL");
    m->training = training != 0;
    nk_clear_error();
    return NK_OK;
}

int nk_module_training(const nk_module *m) { return m ? m->training : 0; }
int64_t nk_module_param_size(const nk_module *m) { return m ? m->C : 0; }
float *nk_module_weight(nk_module *m) { return m ? m->weight : NULL; }
float *nk_module_bias(nk_module *m) { return m ? m->bias : NULL; }
float *nk_module_running_mean(nk_module *m) { return m ? m->rmean : NULL; }
float *nk_module_running_var(nk_module *m) { return m ? m->rvar : NULL; }
int64_t nk_module_num_batches_tracked(const nk_module *m) { return m ? m->nbt : 0; }

nk_status nk_module_set_num_batches_tracked(nk_module *m, int64_t count)
{
    static const char fn[] = "nk_module_set_num_batches_tracked";
    if (!m)
        return nk_fail(NK_ERR_NULL_POINTER, "%s: module is NULL", fn);
    if (m->layer != NK_LAYER_BATCH_NORM || !m->track)
        return nk_fail(NK_ERR_UNSUPPORTED, "%s: this %s %s tracks no running statistics", fn, m->row->name,
                       layer_names[m->layer]);
    /* every training call adds one: INT64_MAX has no successor */
    if (count < 0 || count == INT64_MAX)
        return nk_fail(NK_ERR_BAD_PARAM, "%s: count must be in [0, INT64_MAX - 1], got %lld", fn,
                       (long long)count);
    m->nbt = count;
    nk_clear_error();
    return NK_OK;
}
double nk_module_eps(const nk_module *m) { return m ? m->eps : NAN; }

double nk_module_momentum_torch(const nk_module *m)
{
    if (!m || m->cumulative)
        return NAN;
    return to_torch(m->row, m->momentum);
}

/* ------------------------------------------------------------------------ */

/* "[d0, d1, ...]" */
static void format_dims(char *buf, size_t cap, int ndim, const int64_t *dims)
{
    size_t len = 1;
    buf[0] = '[';
    buf[1] = '\0';
    for (int i = 0; i < ndim && len + 24 < cap; i++)
        len += (size_t)snprintf(buf + len, cap - len, "%s%lld", i ? ", " : "", (long long)dims[i]);
    snprintf(buf + len, cap - len, "]");
}

static nk_status rank_error(const char *want, int ndim)
{
    return nk_fail(NK_ERR_BAD_SHAPE, "expected %s input (got %dD input)", want, ndim);
}

/* The row's accepted input ranks (BatchNorm, InstanceNorm, GroupNorm); sets
 * *unbatched for a (C, *spatial) input. */
static nk_status check_rank(const nk_module *m, int ndim, int *unbatched)
{
    const module_row *r = m->row;
    const int i = r->spatial ? m->spatial_rank - 1 : 0;
    *unbatched = r->ranks->unbatched && ndim == m->spatial_rank + 1;
    return r->ranks->ndims[i] >> ndim & 1u ? NK_OK : rank_error(r->ranks->want[i], ndim);
}

static nk_status dims_product(const int64_t *dims, int from, int to, int64_t *out)
{
    int64_t p = 1;
    for (int i = from; i < to; i++) {
        if (dims[i] < 0)
            return nk_fail(NK_ERR_BAD_SHAPE, "nk_module_forward: negative extent %lld at dim %d",
                           (long long)dims[i], i);
        size_t q;
        nk_status st = nk_check_product(p, dims[i], "nk_module_forward", &q);
        if (st)
            return st;
        p = (int64_t)q;
    }
    *out = p;
    return NK_OK;
}

/* (N, C, spatial) of a channel layer's input in the module's layout. */
static nk_status channel_shape(const nk_module *m, int ndim, const int64_t *dims, int unbatched,
                               nk_shape *s)
{
    nk_status st;
    s->layout = m->layout;
    if (ndim == 1) { /* ONNX BatchNormalization: (N), C = 1 */
        s->n = dims[0];
        s->c = 1;
        s->spatial = 1;
        return dims[0] < 0 ? nk_fail(NK_ERR_BAD_SHAPE, "nk_module_forward: negative extent") : NK_OK;
    }
    int b = unbatched ? 0 : 1; /* number of batch dims */
    int64_t n = unbatched ? 1 : dims[0];
    if (n < 0)
        return nk_fail(NK_ERR_BAD_SHAPE, "nk_module_forward: negative extent %lld at dim 0", (long long)n);
    /* PyTorch names the dims (N, C, *) in either memory format */
    const int cfirst = m->layout == NK_CHANNELS_FIRST || m->row->dims_nc;
    int cdim = cfirst ? b : ndim - 1;
    int64_t sp = 0;
    if (cfirst)
        st = dims_product(dims, b + 1, ndim, &sp);
    else
        st = dims_product(dims, b, ndim - 1, &sp);
    if (st)
        return st;
    s->n = n;
    s->c = dims[cdim];
    s->spatial = sp;
    return NK_OK;
}

/* Re-words the message of an operator the module called so it names the
 * module's entry point fn and layer, not the internal entry point. */
static nk_status module_error_in(const char *fn, const nk_module *m, nk_status st)
{
    if (st == NK_OK)
        return st;
    const char *msg = nk_last_error();
    char copy[320];
    size_t i = 0;
    if (!strncmp(msg, "nk_", 3)) {
        while (msg[i] && msg[i] != ':' && msg[i] != ' ')
            i++;
        if (msg[i] == ':' && msg[i + 1] == ' ')
            i += 2;
        else
            i = 0;
    }
    snprintf(copy, sizeof copy, "%s", msg + i);
    return nk_fail(st, "%s: %s %s: %s", fn, m->row->name, layer_names[m->layer], copy);
}

static nk_status module_error(const nk_module *m, nk_status st)
{
    return module_error_in("nk_module_forward", m, st);
}

/* The descriptor of a dense call on s with the module's activation. */
static nk_tensor_desc module_desc(const nk_module *m, const nk_shape *s)
{
    nk_tensor_desc d = NK_TENSOR_DESC_INIT;
    d.n = s->n;
    d.c = s->c;
    d.spatial = s->spatial;
    d.layout = (uint32_t)s->layout;
    d.dtype = m->dtype;
    d.activation = (int32_t)m->opts.activation;
    d.alpha = m->opts.alpha;
    return d;
}

/* LayerNorm / RMSNorm of rows x D through the module's context. */
static nk_status module_rows(const nk_module *m, const void *x, int64_t rows, int64_t D,
                             const float *w, const float *b, void *y, float *mean, float *invstd,
                             int with_act)
{
    const nk_shape s = {rows, D, 1, NK_CHANNELS_LAST};
    nk_tensor_desc d = module_desc(m, &s);
    if (!with_act)
        d.activation = NK_ACT_NONE;
    if (m->layer == NK_LAYER_RMS_NORM)
        return nk_rms_norm_ex(&m->ctx, &d, x, y, w, m->eps, invstd);
    return nk_layer_norm_ex(&m->ctx, &d, x, y, w, b, m->eps, mean, invstd);
}

/* Eval mode: the statistics used are the running ones. */
static void running_as_saved(const float *rmean, const float *rvar, double eps, int64_t C,
                             const nk_module_outputs *o)
{
    for (int64_t c = 0; c < C; c++) {
        if (o->mean)
            o->mean[c] = rmean[c];
        if (o->invstd)
            o->invstd[c] = (float)(1.0 / sqrt((double)rvar[c] + eps));
    }
}

/* Whether a BatchNorm / InstanceNorm call normalizes with batch (instance)
 * statistics, and whether it updates the running ones. */
static void stats_rule(const nk_module *m, int *batch, int *update)
{
    const int running =
        m->track && (m->stats == STATS_RUNNING || (m->stats == STATS_TRAINING && !m->training));
    *batch = !running;
    *update = !running && m->track && (m->training || m->stats == STATS_BATCH_UPDATE);
}

static nk_status forward_bn(nk_module *m, const void *x, int ndim, const int64_t *dims, void *y,
                            const nk_module_outputs *o)
{
    int unb;
    nk_status st = check_rank(m, ndim, &unb);
    if (st)
        return st;
    nk_shape s;
    if ((st = channel_shape(m, ndim, dims, 0, &s)))
        return st;
    /* only a per-channel buffer can mismatch: without affine parameters and
     * running statistics any channel count goes, as in PyTorch */
    if (s.c != m->C && (m->track || m->affine))
        return nk_fail(NK_ERR_BAD_SHAPE, "%s should contain %lld elements not %lld",
                       m->track ? "running_mean" : "weight", (long long)s.c, (long long)m->C);
    int batch, update;
    stats_rule(m, &batch, &update);
    if (!batch) {
        const nk_tensor_desc d = module_desc(m, &s);
        st = nk_batch_norm_infer_ex(&m->ctx, &d, x, y, m->weight, m->bias, m->rmean, m->rvar, m->eps);
        if (st == NK_OK)
            running_as_saved(m->rmean, m->rvar, m->eps, s.c, o);
        return module_error(m, st);
    }
    nk_running_stats rs = {m->rmean, m->rvar, to_torch(m->row, m->momentum), m->cumulative,
                           m->unbiased, m->nbt};
    const nk_tensor_desc d = module_desc(m, &s);
    st = nk_batch_norm_train_ex(&m->ctx, &d, x, y, m->weight, m->bias, m->eps, update ? &rs : NULL,
                                o->mean, o->invstd);
    if (st == NK_ERR_TOO_FEW_VALUES) {
        char sz[200];
        format_dims(sz, sizeof sz, ndim, dims);
        return nk_fail(st, "Expected more than 1 value per channel when training, got input size %s", sz);
    }
    if (st == NK_OK && update)
        m->nbt = rs.num_batches_tracked;
    return module_error(m, st);
}

static nk_status forward_in(nk_module *m, const void *x, int ndim, const int64_t *dims, void *y,
                            const nk_module_outputs *o)
{
    int unb;
    nk_status st = check_rank(m, ndim, &unb);
    if (st)
        return st;
    nk_shape s;
    if ((st = channel_shape(m, ndim, dims, unb, &s)))
        return st;
    if (s.c != m->C) {
        /* PyTorch only warns when affine is off and there is nothing per channel */
        if (!(m->row->any_channels && !m->affine && !m->track))
            return nk_fail(NK_ERR_BAD_SHAPE,
                           "expected input's size at dim=%d to match num_features (%lld), but got: %lld.",
                           unb ? 0 : 1, (long long)m->C, (long long)s.c);
    }
    int use_input, update;
    stats_rule(m, &use_input, &update);
    nk_running_stats rs = {m->rmean, m->rvar, to_torch(m->row, m->momentum), m->cumulative,
                           m->unbiased, 0};
    /* PyTorch checks the spatial size alone: (0, C, 1) is refused too */
    if (s.spatial == 1 && use_input) {
        char sz[200];
        format_dims(sz, sizeof sz, ndim, dims);
        return nk_fail(NK_ERR_TOO_FEW_VALUES,
                       "Expected more than 1 spatial element when training, got input size %s", sz);
    }
    const nk_tensor_desc d = module_desc(m, &s);
    st = nk_instance_norm_ex(&m->ctx, &d, x, y, m->weight, m->bias, m->eps, use_input,
                             (update || !use_input) ? &rs : NULL, use_input ? o->mean : NULL,
                             use_input ? o->invstd : NULL);
    if (st == NK_OK && !use_input)
        for (int64_t n = 0; n < s.n; n++) { /* N * C entries, each image the running ones */
            nk_module_outputs on = {sizeof on, 0, o->mean ? o->mean + n * s.c : NULL,
                                    o->invstd ? o->invstd + n * s.c : NULL, NULL, NULL};
            running_as_saved(m->rmean, m->rvar, m->eps, s.c, &on);
        }
    return module_error(m, st);
}

static nk_status forward_gn(nk_module *m, const void *x, int ndim, const int64_t *dims, void *y,
                            const nk_module_outputs *o)
{
    int unb;
    nk_status st = check_rank(m, ndim, &unb);
    if (st)
        return st;
    nk_shape s;
    if ((st = channel_shape(m, ndim, dims, 0, &s)))
        return st;
    /* without weight and bias only divisibility by num_groups matters */
    if (s.c != m->C && m->affine)
        return nk_fail(NK_ERR_BAD_SHAPE, "expected %lld channels, got input with %lld", (long long)m->C,
                       (long long)s.c);
    const nk_tensor_desc d = module_desc(m, &s);
    return module_error(m, nk_group_norm_ex(&m->ctx, &d, x, y, m->groups, m->weight, m->bias,
                                            m->eps, o->mean, o->invstd));
}

static int norm_axis(int a, int ndim) { return a < 0 ? a + ndim : a; }

/* data_format NK_CHANNELS_FIRST: over dim 1 of (N, C, *), statistics per
 * (n, position) */
static nk_status forward_ln_cf(nk_module *m, const void *x, int ndim, const int64_t *dims,
                               void *y, const nk_module_outputs *o)
{
    int64_t total = 0, S = 0;
    nk_status st = dims_product(dims, 0, ndim, &total);
    if (st)
        return st;
    if (ndim < 2 || dims[1] != m->C) {
        char got[200];
        format_dims(got, sizeof got, ndim, dims);
        return nk_fail(NK_ERR_BAD_SHAPE,
                       "channels_first: expected input with shape [N, %lld, *], but got input of size%s",
                       (long long)m->C, got);
    }
    (void)total;
    if ((st = dims_product(dims, 2, ndim, &S)))
        return st;
    const nk_shape s = {dims[0], m->C, S, NK_CHANNELS_FIRST};
    const nk_tensor_desc d = module_desc(m, &s);
    if (m->layer == NK_LAYER_RMS_NORM)
        st = nk_rms_norm_ex(&m->ctx, &d, x, y, m->weight, m->eps, o->invstd);
    else
        st = nk_layer_norm_ex(&m->ctx, &d, x, y, m->weight, m->bias, m->eps, o->mean, o->invstd);
    return module_error(m, st);
}

static nk_status forward_ln(nk_module *m, const void *x, int ndim, const int64_t *dims, void *y,
                            const nk_module_outputs *o)
{
    if (m->ln_channels_first)
        return forward_ln_cf(m, x, ndim, dims, y, o);
    const int rs = norm_axis(m->norm_axis, ndim);   /* first reduced dim */
    const int ps = norm_axis(m->params_axis, ndim); /* first parameter dim */
    if (rs < 0 || rs >= ndim || ps < 0 || ps >= ndim)
        return nk_fail(NK_ERR_BAD_SHAPE, "%s %s: normalization axes out of range for a %dD input",
                       m->row->name, layer_names[m->layer], ndim);
    int64_t rows = 0, D = 0, P = 0;
    nk_status st;
    if ((st = dims_product(dims, 0, rs, &rows)) || (st = dims_product(dims, rs, ndim, &D)) ||
        (st = dims_product(dims, ps, ndim, &P)))
        return st;
    /* the parameter shape must be the input's trailing shape from ps on */
    int match = ndim - ps == m->norm_ndim || (m->norm_ndim == 1 && P == m->C);
    for (int i = 0; match && ndim - ps == m->norm_ndim && i < m->norm_ndim; i++)
        match = dims[ps + i] == m->norm_shape[i];
    if (!match || P != m->C) {
        char want[200], got[200];
        format_dims(want, sizeof want, m->norm_ndim, m->norm_shape);
        format_dims(got, sizeof got, ndim, dims);
        want[strlen(want) - 1] = '\0';
        return nk_fail(NK_ERR_BAD_SHAPE,
                       "Given normalized_shape=%s], expected input with shape [*, %s], but got input of size%s",
                       want, want + 1, got);
    }
    if (rows * D == 0) {
        nk_clear_error();
        return NK_OK;
    }
    if (m->layer == NK_LAYER_RMS_NORM || ps == rs)
        return module_error(m, module_rows(m, x, rows, D, m->weight, m->bias, y, o->mean,
                                           o->invstd, 1));
    const nk_kernels *kt = nk_kernels_current_dtype(m->dtype);
    if (ps < rs) {
        /* parameters also span trailing row dims: row r uses the slice (r % (P / D)) */
        int64_t k = P / D;
        for (int64_t r = 0; r < rows; r++) {
            int64_t off = (r % k) * D;
            st = module_rows(m, nk_xat(kt, x, (size_t)(r * D)), 1, D,
                             m->weight ? m->weight + off : NULL, m->bias ? m->bias + off : NULL,
                             nk_yat(kt, y, (size_t)(r * D)), o->mean ? o->mean + r : NULL,
                             o->invstd ? o->invstd + r : NULL, 1);
            if (st)
                return module_error(m, st);
        }
        return NK_OK;
    }
    /* ps > rs: each row holds D / P slices sharing the parameters (a
     * 16-bit y is rounded twice here: after normalizing, after the affine) */
    if ((st = module_rows(m, x, rows, D, NULL, NULL, y, o->mean, o->invstd, 0)))
        return module_error(m, st);
    nk_epilogue ep;
    nk_check_options(&m->opts, "nk_module_forward", &ep);
    const float one = 1.0f;
    for (int64_t i = 0; i < rows * (D / P); i++)
        kt->norm_affine(nk_yat(kt, y, (size_t)(i * P)), nk_yat(kt, y, (size_t)(i * P)), 1, (size_t)P,
                        (size_t)P, (size_t)P, NULL, &one, m->weight, m->bias, &ep);
    nk_clear_error();
    return NK_OK;
}

nk_status nk_module_set_context(nk_module *m, const nk_context *ctx)
{
    if (!m)
        return nk_fail(NK_ERR_NULL_POINTER, "nk_module_set_context: module is NULL");
    nk_context c;
    nk_status st = nk_check_context("nk_module_set_context", ctx, &c);
    if (st)
        return st;
    m->ctx = c;
    m->ctx.struct_size = sizeof m->ctx;
    nk_clear_error();
    return NK_OK;
}

nk_status nk_module_set_dtype(nk_module *m, uint32_t dtype)
{
    if (!m)
        return nk_fail(NK_ERR_NULL_POINTER, "nk_module_set_dtype: module is NULL");
    if (dtype > NK_DTYPE_BF16)
        return nk_fail(NK_ERR_BAD_PARAM,
                       "nk_module_set_dtype: dtype must be NK_DTYPE_F32 (0), NK_DTYPE_F16 (1) or "
                       "NK_DTYPE_BF16 (2), got %u",
                       (unsigned)dtype);
    m->dtype = dtype;
    nk_clear_error();
    return NK_OK;
}

uint32_t nk_module_dtype(const nk_module *m) { return m ? m->dtype : NK_DTYPE_F32; }

nk_status nk_module_forward(nk_module *m, const void *x, int ndim, const int64_t *dims, void *y)
{
    return nk_module_forward_ex(m, x, ndim, dims, y, NULL);
}

/* Size of the first version of nk_module_outputs. */
#define OUTPUTS_V1_SIZE (offsetof(nk_module_outputs, running_var) + sizeof(float *))

/* The checks of extents dims that come before any layer's: rank in
 * [min_rank, 16], no negative extent, the size rule; *total the number of
 * elements. what: NULL for the input, else the argument ("skip"), whose
 * rank and extents the messages name as what_ndim and what_dims. */
static nk_status check_extents(const char *fn, const char *what, int min_rank, int ndim,
                               const int64_t *dims, int64_t *total)
{
    if (ndim < min_rank || ndim > 16)
        return what ? nk_fail(NK_ERR_BAD_SHAPE, "%s: %s_ndim must be in [%d, 16], got %d", fn, what,
                              min_rank, ndim)
                    : nk_fail(NK_ERR_BAD_SHAPE, "%s: rank must be in [%d, 16], got %d", fn, min_rank,
                              ndim);
    for (int i = 0; i < ndim; i++)
        if (dims[i] < 0)
            return what ? nk_fail(NK_ERR_BAD_SHAPE, "%s: negative extent %lld at %s_dims[%d]", fn,
                                  (long long)dims[i], what, i)
                        : nk_fail(NK_ERR_BAD_SHAPE, "%s: negative extent %lld at dim %d", fn,
                                  (long long)dims[i], i);
    /* the size rule of every entry point, over all dims (zeros counted as 1) */
    if (!nk_extents_fit(dims, ndim, sizeof(float))) {
        char sz[200];
        format_dims(sz, sizeof sz, ndim, dims);
        return nk_fail(NK_ERR_BAD_SHAPE,
                       "%s: %s of size %s is too large: the product of its non-zero "
                       "extents must be at most %lld elements",
                       fn, what ? what : "input", sz, (long long)(PTRDIFF_MAX / sizeof(float)));
    }
    return dims_product(dims, 0, ndim, total);
}

/* Copies the caller's outputs (may be NULL) into *o after checking them. */
static nk_status read_outputs(const nk_module *m, const nk_module_outputs *outputs,
                              nk_module_outputs *o)
{
    const char *fn = skip_layer(m->layer) ? "nk_module_forward_skip" : "nk_module_forward_ex";
    *o = (nk_module_outputs){sizeof *o, 0, NULL, NULL, NULL, NULL};
    if (!outputs)
        return NK_OK;
    if (outputs->struct_size < OUTPUTS_V1_SIZE)
        return nk_fail(NK_ERR_BAD_PARAM,
                       "%s: outputs->struct_size must be at least %zu "
                       "(sizeof(nk_module_outputs) of the header you compiled with), got %u",
                       fn, (size_t)OUTPUTS_V1_SIZE, (unsigned)outputs->struct_size);
    /* fields past the caller's struct_size stay NULL */
    memcpy(o, outputs, outputs->struct_size < sizeof *o ? outputs->struct_size : sizeof *o);
    if ((o->running_mean || o->running_var) && m->layer != NK_LAYER_BATCH_NORM)
        return nk_fail(NK_ERR_BAD_PARAM,
                       "%s: %s %s has no running statistics to return "
                       "(outputs->running_mean / running_var must be NULL)",
                       fn, m->row->name, layer_names[m->layer]);
    if ((o->running_mean || o->running_var) && !m->rmean)
        return nk_fail(NK_ERR_BAD_PARAM,
                       "%s: this %s BatchNorm tracks no running statistics "
                       "(outputs->running_mean / running_var must be NULL)",
                       fn, m->row->name);
    return NK_OK;
}

nk_status nk_module_forward_ex(nk_module *m, const void *x, int ndim, const int64_t *dims, void *y,
                               const nk_module_outputs *outputs)
{
    if (!m)
        return nk_fail(NK_ERR_NULL_POINTER, "nk_module_forward: module is NULL");
    if (skip_layer(m->layer))
        return nk_fail(NK_ERR_NULL_POINTER,
                       "nk_module_forward: %s %s requires a skip input: run it with "
                       "nk_module_forward_skip",
                       m->row->name, layer_names[m->layer]);
    if (!dims)
        return nk_fail(NK_ERR_NULL_POINTER, "nk_module_forward: dims is NULL");
    int64_t total = 0;
    nk_status st = check_extents("nk_module_forward", NULL, 1, ndim, dims, &total);
    if (st)
        return st;
    if (total && (!x || !y))
        return nk_fail(NK_ERR_NULL_POINTER, "nk_module_forward: %s is NULL", x ? "output" : "input");
    nk_module_outputs o;
    if ((st = read_outputs(m, outputs, &o)))
        return st;
    switch (m->layer) {
    case NK_LAYER_BATCH_NORM: st = forward_bn(m, x, ndim, dims, y, &o); break;
    case NK_LAYER_INSTANCE_NORM: st = forward_in(m, x, ndim, dims, y, &o); break;
    case NK_LAYER_GROUP_NORM: st = forward_gn(m, x, ndim, dims, y, &o); break;
    default: st = forward_ln(m, x, ndim, dims, y, &o); break;
    }
    if (st == NK_OK) {
        /* ONNX BatchNormalization(training_mode) outputs: the running
         * statistics after this call */
        if (o.running_mean)
            memcpy(o.running_mean, m->rmean, (size_t)m->C * sizeof(float));
        if (o.running_var)
            memcpy(o.running_var, m->rvar, (size_t)m->C * sizeof(float));
        nk_clear_error();
    }
    return st;
}

/* How skip (extents kd, rank kn) lies against an input of extents dims: 0
 * with the input's own extents, 1 as one (S, H) sample added to every
 * sample of a (B, S, H) input (skip (1, S, H) or (S, H)), -1 neither. */
static int skip_fit(int ndim, const int64_t *dims, int kn, const int64_t *kd)
{
    int same = kn == ndim;
    for (int i = 0; same && i < ndim; i++)
        same = kd[i] == dims[i];
    if (same)
        return 0;
    if (ndim == 3 && ((kn == 3 && kd[0] == 1 && kd[1] == dims[1] && kd[2] == dims[2]) ||
                      (kn == 2 && kd[0] == dims[1] && kd[1] == dims[2])))
        return 1;
    return -1;
}

nk_status nk_module_forward_skip(nk_module *m, const void *x, int ndim, const int64_t *dims,
                                 const void *skip, int skip_ndim, const int64_t *skip_dims,
                                 const float *skip_bias, void *y, void *sum,
                                 const nk_module_outputs *outputs)
{
    static const char fn[] = "nk_module_forward_skip";
    if (!m)
        return nk_fail(NK_ERR_NULL_POINTER, "%s: module is NULL", fn);
    if (!skip_layer(m->layer))
        return nk_fail(NK_ERR_UNSUPPORTED,
                       "%s: %s %s takes no skip input; nk_module_forward_skip runs ONNX "
                       "SkipLayerNorm and SkipRMSNorm modules (NK_LAYER_SKIP_LAYER_NORM, "
                       "NK_LAYER_SKIP_RMS_NORM), nk_module_forward the others",
                       fn, m->row->name, layer_names[m->layer]);
    if (!dims || !skip_dims)
        return nk_fail(NK_ERR_NULL_POINTER, "%s: %s is NULL", fn, dims ? "skip_dims" : "dims");
    int64_t total = 0, ktotal = 0;
    nk_status st = check_extents(fn, NULL, 2, ndim, dims, &total);
    if (st || (st = check_extents(fn, "skip", 2, skip_ndim, skip_dims, &ktotal)))
        return st;
    char got[200], want[200];
    format_dims(got, sizeof got, ndim, dims);
    const int64_t H = dims[ndim - 1];
    if (H != m->C)
        return nk_fail(NK_ERR_BAD_SHAPE,
                       "%s: %s %s: the input's last dim (hidden size) must be num_features = "
                       "%lld, got input of size %s",
                       fn, m->row->name, layer_names[m->layer], (long long)m->C, got);
    const int bc = skip_fit(ndim, dims, skip_ndim, skip_dims);
    if (bc < 0) {
        format_dims(want, sizeof want, skip_ndim, skip_dims);
        return nk_fail(NK_ERR_BAD_SHAPE,
                       "%s: skip of size %s does not fit the input of size %s: skip_dims must "
                       "equal dims%s",
                       fn, want, got,
                       ndim == 3 ? ", or be (1, S, H) or (S, H) for an input (B, S, H)" : "");
    }
    if (total) {
        if (!x || !skip || !y)
            return nk_fail(NK_ERR_NULL_POINTER, "%s: %s is NULL", fn,
                           !x ? "input" : !skip ? "skip" : "output");
        if (sum == y)
            return nk_fail(NK_ERR_BAD_PARAM, "%s: sum and y are the same array", fn);
        if (skip == y)
            return nk_fail(NK_ERR_BAD_PARAM, "%s: y and skip are the same array", fn);
        if (bc && sum == skip)
            return nk_fail(NK_ERR_BAD_PARAM,
                           "%s: sum == skip needs a skip of the input's size, got skip of size %s "
                           "broadcast over the batch",
                           fn, (format_dims(want, sizeof want, skip_ndim, skip_dims), want));
    }
    nk_module_outputs o;
    if ((st = read_outputs(m, outputs, &o)))
        return st;
    if (!total) {
        nk_clear_error();
        return NK_OK;
    }
    /* broadcast: n = B samples of spatial = S rows each share the skip
     * sample; else one row per H elements */
    const nk_shape s = {bc ? dims[0] : total / H, H, bc ? dims[1] : 1, NK_CHANNELS_LAST};
    const nk_tensor_desc d = module_desc(m, &s);
    nk_norm_fusion f = NK_NORM_FUSION_INIT;
    f.flags = bc ? NK_FUSION_SKIP_BROADCAST : 0;
    f.skip = skip;
    f.skip_bias = skip_bias;
    f.sum = sum;
    if (m->layer == NK_LAYER_SKIP_RMS_NORM)
        st = nk_rms_norm_fused_ex(&m->ctx, &d, &f, x, y, m->weight, m->eps, o.invstd);
    else
        st = nk_layer_norm_fused_ex(&m->ctx, &d, &f, x, y, m->weight, m->bias, m->eps, o.mean,
                                    o.invstd);
    if (st)
        return module_error_in(fn, m, st);
    nk_clear_error();
    return NK_OK;
}
