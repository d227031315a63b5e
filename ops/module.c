/*
 * Framework modules: each framework's normalization layer on top of the
 * functional API. A module maps its framework's parameter names, defaults,
 * momentum convention, train/eval rules and accepted ranks onto one call.
 */
#include <float.h>
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ops/internal.h"

struct nk_module {
    nk_framework fw;
    nk_layer layer;
    int spatial_rank;
    int64_t C;          /* channels, or normalized size P for LayerNorm / RMSNorm */
    double eps;
    double momentum;    /* own convention, as configured */
    int cumulative;     /* PyTorch momentum=None */
    int affine;
    int track;          /* owns running statistics */
    int training;
    int mode;           /* use_batch_statistics / use_global_stats, NK_DEFAULT = None */
    int freeze, trainable;
    int unbiased;
    nk_layout layout;
    int logical_nc;     /* dims are (N, C, *) whatever the memory layout (PyTorch) */
    int64_t groups;
    int norm_ndim;
    int64_t norm_shape[NK_MAX_NORM_DIMS];
    int begin_norm_axis, begin_params_axis, axis;
    nk_options opts;
    int64_t nbt;
    float *weight, *bias, *rmean, *rvar;
    float storage[];
};

#define DEF(v) ((v) == NK_DEFAULT)

const char *nk_framework_name(nk_framework fw)
{
    switch (fw) {
    case NK_FW_PYTORCH: return "PyTorch";
    case NK_FW_MINDSPORE: return "MindSpore";
    case NK_FW_MEGENGINE: return "MegEngine";
    case NK_FW_ONNX: return "ONNX";
    case NK_FW_KERAS: return "Keras";
    case NK_FW_PADDLE: return "Paddle";
    }
    return "unknown";
}

static const char *layer_name(nk_layer l)
{
    switch (l) {
    case NK_LAYER_BATCH_NORM: return "BatchNorm";
    case NK_LAYER_INSTANCE_NORM: return "InstanceNorm";
    case NK_LAYER_GROUP_NORM: return "GroupNorm";
    case NK_LAYER_LAYER_NORM: return "LayerNorm";
    case NK_LAYER_RMS_NORM: return "RMSNorm";
    }
    return "unknown";
}

/* Which layers each framework has. */
static int layer_exists(nk_framework fw, nk_layer l)
{
    switch (fw) {
    case NK_FW_PYTORCH: case NK_FW_MINDSPORE: case NK_FW_ONNX:
        return 1;
    case NK_FW_MEGENGINE: case NK_FW_PADDLE:
        return l != NK_LAYER_RMS_NORM;
    case NK_FW_KERAS:
        return l != NK_LAYER_INSTANCE_NORM;
    }
    return 0;
}

double nk_default_eps(nk_framework fw, nk_layer layer)
{
    if ((unsigned)fw > NK_FW_PADDLE || (unsigned)layer > NK_LAYER_RMS_NORM || !layer_exists(fw, layer))
        return NAN;
    if (fw == NK_FW_KERAS)
        return layer == NK_LAYER_RMS_NORM ? 1e-6 : 1e-3;
    if (fw == NK_FW_MINDSPORE && layer == NK_LAYER_LAYER_NORM)
        return 1e-7;
    if (fw == NK_FW_MINDSPORE && layer == NK_LAYER_RMS_NORM)
        return 1e-6;
    if (fw == NK_FW_PYTORCH && layer == NK_LAYER_RMS_NORM)
        return FLT_EPSILON; /* eps=None: torch.finfo(float32).eps */
    return 1e-5;
}

double nk_default_momentum(nk_framework fw, nk_layer layer)
{
    if ((unsigned)fw > NK_FW_PADDLE || !layer_exists(fw, layer))
        return NAN;
    if (layer == NK_LAYER_BATCH_NORM) {
        switch (fw) {
        case NK_FW_PYTORCH: return 0.1;
        case NK_FW_KERAS: return 0.99;
        default: return 0.9;
        }
    }
    if (layer == NK_LAYER_INSTANCE_NORM && (fw == NK_FW_PYTORCH || fw == NK_FW_MINDSPORE))
        return 0.1; /* MindSpore accepts it and never uses it */
    if (layer == NK_LAYER_INSTANCE_NORM && fw == NK_FW_PADDLE)
        return 0.9;
    return NAN;
}

double nk_momentum_to_torch(nk_framework fw, double m)
{
    return fw == NK_FW_PYTORCH ? m : 1.0 - m;
}

double nk_momentum_from_torch(nk_framework fw, double m)
{
    return fw == NK_FW_PYTORCH ? m : 1.0 - m;
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

static nk_status not_for(nk_framework fw, const char *field)
{
    return nk_fail(NK_ERR_BAD_PARAM, "nk_module_create: %s has no parameter '%s'",
                   nk_framework_name(fw), field);
}

/* Fields a framework does not have must stay at NK_DEFAULT. */
static nk_status check_fields(nk_framework fw, nk_layer l, const nk_module_config *c)
{
    int bn = l == NK_LAYER_BATCH_NORM;
    if (!DEF(c->track_running_stats) && !(fw == NK_FW_PYTORCH && (bn || l == NK_LAYER_INSTANCE_NORM)) &&
        !(fw == NK_FW_MEGENGINE && bn))
        return not_for(fw, "track_running_stats");
    if (!DEF(c->use_batch_statistics) && !(fw == NK_FW_MINDSPORE && bn))
        return not_for(fw, "use_batch_statistics");
    if ((!DEF(c->gamma_init) || !DEF(c->beta_init)) && fw != NK_FW_MINDSPORE)
        return not_for(fw, "gamma_init/beta_init");
    if ((!DEF(c->moving_mean_init) || !DEF(c->moving_var_init)) && !(fw == NK_FW_MINDSPORE && bn))
        return not_for(fw, "moving_mean_init/moving_var_init");
    if ((!DEF(c->begin_norm_axis) || !DEF(c->begin_params_axis)) &&
        !(fw == NK_FW_MINDSPORE && l == NK_LAYER_LAYER_NORM))
        return not_for(fw, "begin_norm_axis/begin_params_axis");
    if (!DEF(c->freeze) && !(fw == NK_FW_MEGENGINE && bn))
        return not_for(fw, "freeze");
    if (!DEF(c->training_mode) && !(fw == NK_FW_ONNX && bn))
        return not_for(fw, "training_mode");
    if (!DEF(c->axis) && fw != NK_FW_ONNX && fw != NK_FW_KERAS)
        return not_for(fw, "axis");
    if (!DEF(c->trainable) && fw != NK_FW_KERAS)
        return not_for(fw, "trainable");
    if (!DEF(c->use_global_stats) && !(fw == NK_FW_PADDLE && bn))
        return not_for(fw, "use_global_stats");
    if (!DEF(c->bias) && !(fw == NK_FW_PYTORCH && l == NK_LAYER_LAYER_NORM))
        return not_for(fw, "bias");
    if (!DEF(c->running_var_unbiased) && !(fw == NK_FW_MINDSPORE && bn))
        return not_for(fw, "running_var_unbiased (backend-dependent only in MindSpore)");
    if (!DEF(c->num_groups) && l != NK_LAYER_GROUP_NORM)
        return not_for(fw, "num_groups");
    if (!DEF(c->data_format) && !((fw == NK_FW_MINDSPORE && bn) || fw == NK_FW_PADDLE) &&
        !(fw == NK_FW_PYTORCH && (bn || l == NK_LAYER_INSTANCE_NORM || l == NK_LAYER_GROUP_NORM)))
        return not_for(fw, "data_format");
    return NK_OK;
}

static int tri(int v) { return v == NK_DEFAULT || v == 0 || v == 1; }

nk_status nk_module_create(nk_framework fw, nk_layer layer, int spatial_rank, int64_t num_features,
                           const nk_module_config *cfg_in, nk_module **out)
{
    static const char fn[] = "nk_module_create";
    if (!out)
        return nk_fail(NK_ERR_NULL_POINTER, "%s: out is NULL", fn);
    if ((unsigned)fw > NK_FW_PADDLE)
        return nk_fail(NK_ERR_BAD_PARAM, "%s: fw must be an nk_framework in [0, %d], got %d", fn,
                       (int)NK_FW_PADDLE, (int)fw);
    if ((unsigned)layer > NK_LAYER_RMS_NORM)
        return nk_fail(NK_ERR_BAD_PARAM, "%s: layer must be an nk_layer in [0, %d], got %d", fn,
                       (int)NK_LAYER_RMS_NORM, (int)layer);
    if (!layer_exists(fw, layer))
        return nk_fail(NK_ERR_UNSUPPORTED, "%s: %s has no %s layer", fn, nk_framework_name(fw),
                       layer_name(layer));
    nk_module_config cfg;
    if (cfg_in)
        cfg = *cfg_in;
    else
        nk_module_config_init(&cfg);
    nk_status st = check_fields(fw, layer, &cfg);
    if (st)
        return st;
    const struct {
        const char *name;
        int v;
    } flags[] = {{"affine", cfg.affine},
                 {"track_running_stats", cfg.track_running_stats},
                 {"use_batch_statistics", cfg.use_batch_statistics},
                 {"freeze", cfg.freeze},
                 {"training_mode", cfg.training_mode},
                 {"trainable", cfg.trainable},
                 {"use_global_stats", cfg.use_global_stats},
                 {"bias", cfg.bias},
                 {"running_var_unbiased", cfg.running_var_unbiased}};
    for (size_t i = 0; i < sizeof flags / sizeof flags[0]; i++)
        if (!tri(flags[i].v))
            return nk_fail(NK_ERR_BAD_PARAM, "%s: %s %s: cfg.%s takes NK_DEFAULT (-1), 0 or 1, got %d",
                           fn, nk_framework_name(fw), layer_name(layer), flags[i].name, flags[i].v);

    int channel_layer = layer == NK_LAYER_BATCH_NORM || layer == NK_LAYER_INSTANCE_NORM;
    if (channel_layer && fw != NK_FW_ONNX && fw != NK_FW_KERAS &&
        !(fw == NK_FW_MEGENGINE && layer == NK_LAYER_INSTANCE_NORM)) {
        if (spatial_rank < 1 || spatial_rank > 3)
            return nk_fail(NK_ERR_BAD_PARAM, "%s: spatial_rank must be 1, 2 or 3, got %d", fn, spatial_rank);
        if (fw == NK_FW_MEGENGINE && spatial_rank == 3)
            return nk_fail(NK_ERR_UNSUPPORTED, "%s: MegEngine has no BatchNorm3d", fn);
    }

    /* normalized shape (LayerNorm / RMSNorm) */
    int nd = 1;
    int64_t nshape[NK_MAX_NORM_DIMS] = {num_features};
    int64_t P = num_features;
    if (layer == NK_LAYER_LAYER_NORM || layer == NK_LAYER_RMS_NORM) {
        if (!DEF(cfg.normalized_ndim)) {
            if (cfg.normalized_ndim < 1 || cfg.normalized_ndim > NK_MAX_NORM_DIMS)
                return nk_fail(NK_ERR_BAD_PARAM, "%s: normalized_ndim must be in [1, %d], got %d", fn,
                               NK_MAX_NORM_DIMS, cfg.normalized_ndim);
            nd = cfg.normalized_ndim;
            P = 1;
            for (int i = 0; i < nd; i++) {
                nshape[i] = cfg.normalized_shape[i];
                if (nshape[i] < 1)
                    return nk_fail(NK_ERR_BAD_SHAPE, "%s: normalized_shape[%d] must be >= 1, got %lld", fn,
                                   i, (long long)nshape[i]);
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
    } else if (!DEF(cfg.normalized_ndim)) {
        return not_for(fw, "normalized_shape");
    }
    if (P < 1)
        return nk_fail(NK_ERR_BAD_SHAPE, "%s: %s %s: num_features must be at least 1, got %lld", fn,
                       nk_framework_name(fw), layer_name(layer), (long long)P);

    /* eps and momentum */
    double eps = cfg.eps;
    if (eps == NK_DEFAULT || (eps == NK_EPS_NONE && fw == NK_FW_PYTORCH && layer == NK_LAYER_RMS_NORM))
        eps = nk_default_eps(fw, layer);
    else if (eps == NK_EPS_NONE)
        return nk_fail(NK_ERR_BAD_PARAM,
                       "%s: %s %s: cfg.eps = NK_EPS_NONE (-2) is PyTorch RMSNorm's eps=None only", fn,
                       nk_framework_name(fw), layer_name(layer));
    if (!(eps >= 0.0) || isinf(eps))
        return nk_fail(NK_ERR_BAD_PARAM, "%s: %s %s: cfg.eps must be finite and >= 0, got %g", fn,
                       nk_framework_name(fw), layer_name(layer), eps);
    double mom = cfg.momentum;
    int cumulative = 0;
    double defmom = nk_default_momentum(fw, layer);
    if (mom == NK_DEFAULT) {
        mom = defmom;
    } else if (isnan(defmom)) {
        return not_for(fw, "momentum");
    } else if (mom == NK_MOMENTUM_NONE && fw == NK_FW_PYTORCH) {
        cumulative = 1;
        mom = 0.0;
    } else if (mom == NK_MOMENTUM_NONE) {
        return nk_fail(NK_ERR_BAD_PARAM,
                       "%s: %s %s: cfg.momentum = NK_MOMENTUM_NONE (-2) is PyTorch's momentum=None "
                       "only; %s takes a momentum in [0, 1]",
                       fn, nk_framework_name(fw), layer_name(layer), nk_framework_name(fw));
    } else if (!(mom >= 0.0 && mom <= 1.0)) {
        return nk_fail(NK_ERR_BAD_PARAM, "%s: %s %s: cfg.momentum must be in [0, 1], got %g", fn,
                       nk_framework_name(fw), layer_name(layer), mom);
    }

    nk_epilogue ep;
    if ((st = nk_check_options(&cfg.options, fn, &ep)))
        return st;

    /* affine, running statistics, mode */
    int affine = DEF(cfg.affine) ? !(fw == NK_FW_PYTORCH && layer == NK_LAYER_INSTANCE_NORM) : cfg.affine;
    if (fw == NK_FW_ONNX || fw == NK_FW_MINDSPORE)
        affine = 1; /* ONNX scale/B are inputs; MindSpore applies frozen gamma/beta */
    int track = 0;
    if (layer == NK_LAYER_BATCH_NORM)
        track = (fw == NK_FW_PYTORCH || fw == NK_FW_MEGENGINE) ? (DEF(cfg.track_running_stats) ? 1 : cfg.track_running_stats) : 1;
    else if (layer == NK_LAYER_INSTANCE_NORM && fw == NK_FW_PYTORCH)
        track = DEF(cfg.track_running_stats) ? 0 : cfg.track_running_stats;
    int unbiased = 1;
    if (fw == NK_FW_ONNX || fw == NK_FW_KERAS || fw == NK_FW_PADDLE)
        unbiased = 0;
    if (fw == NK_FW_MINDSPORE && !DEF(cfg.running_var_unbiased))
        unbiased = cfg.running_var_unbiased;
    int training = fw == NK_FW_PYTORCH || fw == NK_FW_MEGENGINE || fw == NK_FW_PADDLE;
    if (fw == NK_FW_ONNX && !DEF(cfg.training_mode))
        training = cfg.training_mode;

    nk_layout layout = NK_CHANNELS_FIRST;
    if (fw == NK_FW_KERAS) {
        if (!DEF(cfg.axis) && cfg.axis != 1)
            return nk_fail(NK_ERR_UNSUPPORTED, "%s: Keras axis must be -1 (channels-last) or 1, got %d", fn, cfg.axis);
        layout = cfg.axis == 1 ? NK_CHANNELS_FIRST : NK_CHANNELS_LAST;
        if (layer == NK_LAYER_LAYER_NORM || layer == NK_LAYER_RMS_NORM) {
            if (cfg.axis == 1)
                return nk_fail(NK_ERR_UNSUPPORTED, "%s: Keras %s over axis 1 is not supported; use -1", fn,
                               layer_name(layer));
        }
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
        groups = DEF(cfg.num_groups) ? (fw == NK_FW_KERAS ? 32 : 0) : cfg.num_groups;
        if (groups < 1)
            return nk_fail(NK_ERR_BAD_PARAM, "%s: %s GroupNorm: cfg.num_groups must be at least 1, got %lld",
                           fn, nk_framework_name(fw), (long long)groups);
        if (num_features % groups)
            return nk_fail(NK_ERR_BAD_PARAM,
                           "%s: %s GroupNorm: num_channels (%lld) must be divisible by num_groups (%lld)",
                           fn, nk_framework_name(fw), (long long)num_features, (long long)groups);
    }

    int has_bias = affine;
    if (fw == NK_FW_PYTORCH && layer == NK_LAYER_LAYER_NORM && cfg.bias == 0)
        has_bias = 0;
    if (layer == NK_LAYER_RMS_NORM)
        has_bias = 0;

    /* P floats per parameter array: the bytes must fit size_t and ptrdiff_t
     * on this target (a 32-bit size_t wraps long before 2^40) */
    const int64_t arrays = (affine ? 1 : 0) + (has_bias ? 1 : 0) + (track ? 2 : 0);
    const int64_t ext[2] = {P, arrays};
    if (!nk_extents_fit(ext, 2, sizeof(float)) ||
        (uint64_t)(P * arrays) > (uint64_t)((PTRDIFF_MAX - sizeof(nk_module)) / sizeof(float)))
        return nk_fail(NK_ERR_BAD_SHAPE,
                       "%s: %s %s: num_features = %lld needs %lld parameter arrays of that size, more "
                       "than this target can address",
                       fn, nk_framework_name(fw), layer_name(layer), (long long)P, (long long)arrays);
    size_t nfloats = (size_t)P * (size_t)arrays;
    nk_module *m = calloc(1, sizeof *m + nfloats * sizeof(float));
    if (!m)
        return nk_fail(NK_ERR_OUT_OF_MEMORY, "%s: cannot allocate %zu parameters", fn, nfloats);
    m->fw = fw;
    m->layer = layer;
    m->spatial_rank = spatial_rank;
    m->C = P;
    m->eps = eps;
    m->momentum = mom;
    m->cumulative = cumulative;
    m->affine = affine;
    m->track = track;
    m->training = training;
    m->mode = fw == NK_FW_MINDSPORE ? cfg.use_batch_statistics : fw == NK_FW_PADDLE ? cfg.use_global_stats : NK_DEFAULT;
    m->freeze = cfg.freeze == 1;
    m->trainable = cfg.trainable != 0;
    m->unbiased = unbiased;
    m->layout = layout;
    m->logical_nc = fw == NK_FW_PYTORCH;
    m->groups = groups;
    m->norm_ndim = nd;
    memcpy(m->norm_shape, nshape, sizeof nshape);
    m->begin_norm_axis = DEF(cfg.begin_norm_axis) ? -1 : cfg.begin_norm_axis;
    m->begin_params_axis = DEF(cfg.begin_params_axis) ? -1 : cfg.begin_params_axis;
    m->axis = DEF(cfg.axis) ? -1 : cfg.axis;
    m->opts = cfg.options;

    float *p = m->storage;
    float g0 = fw == NK_FW_MINDSPORE && !DEF(cfg.gamma_init) ? (float)cfg.gamma_init : 1.0f;
    float b0 = fw == NK_FW_MINDSPORE && !DEF(cfg.beta_init) ? (float)cfg.beta_init : 0.0f;
    float mm0 = fw == NK_FW_MINDSPORE && !DEF(cfg.moving_mean_init) ? (float)cfg.moving_mean_init : 0.0f;
    float mv0 = fw == NK_FW_MINDSPORE && !DEF(cfg.moving_var_init) ? (float)cfg.moving_var_init : 1.0f;
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
        return nk_fail(NK_ERR_UNSUPPORTED, "%s: this %s %s tracks no running statistics", fn,
                       nk_framework_name(m->fw), layer_name(m->layer));
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
    return nk_momentum_to_torch(m->fw, m->momentum);
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

/* Accepted ranks of BatchNorm / InstanceNorm; sets *unbatched for (C, L...) input. */
static nk_status check_rank(const nk_module *m, int ndim, int *unbatched)
{
    static const char *const names[3][3] = {
        {"2D or 3D", "4D", "5D"},                                                 /* BatchNorm */
        {"2D (unbatched) or 3D", "3D (unbatched) or 4D", "4D (unbatched) or 5D"}, /* PyTorch IN */
        {"3D", "4D", "5D"}};                                                      /* exact rank */
    int r = m->spatial_rank;
    *unbatched = 0;
    if (m->layer == NK_LAYER_BATCH_NORM) {
        if (m->fw == NK_FW_ONNX)
            return ndim >= 1 ? NK_OK : rank_error("at least 1D", ndim);
        if (m->fw == NK_FW_KERAS)
            return ndim >= 2 ? NK_OK : rank_error("at least 2D", ndim);
        int ok = r == 1 ? (ndim == 2 || ndim == 3) : ndim == r + 2;
        return ok ? NK_OK : rank_error(names[0][r - 1], ndim);
    }
    /* InstanceNorm */
    switch (m->fw) {
    case NK_FW_PYTORCH:
        if (ndim == r + 1) {
            *unbatched = 1;
            return NK_OK;
        }
        return ndim == r + 2 ? NK_OK : rank_error(names[1][r - 1], ndim);
    case NK_FW_MEGENGINE:
        return ndim == 4 ? NK_OK : rank_error("4D (N, C, H, W)", ndim);
    case NK_FW_ONNX:
        return ndim >= 3 ? NK_OK : rank_error("at least 3D", ndim);
    default:
        return ndim == r + 2 ? NK_OK : rank_error(names[2][r - 1], ndim);
    }
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
    const int cfirst = m->layout == NK_CHANNELS_FIRST || m->logical_nc;
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
 * module's layer, not the internal entry point. */
static nk_status module_error(const nk_module *m, nk_status st)
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
    return nk_fail(st, "nk_module_forward: %s %s: %s", nk_framework_name(m->fw), layer_name(m->layer),
                   copy);
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

static nk_status forward_bn(nk_module *m, const float *x, int ndim, const int64_t *dims, float *y,
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
    /* batch statistics or running statistics, and whether to update them */
    int batch, update;
    switch (m->fw) {
    case NK_FW_PYTORCH:
        batch = m->training || !m->track;
        update = m->training && m->track;
        break;
    case NK_FW_MINDSPORE:
        batch = m->mode == NK_DEFAULT ? m->training : m->mode;
        update = batch;
        break;
    case NK_FW_MEGENGINE:
        /* freeze takes effect only with running statistics to freeze */
        batch = !(m->freeze && m->track) && (m->training || !m->track);
        update = batch && m->training && m->track;
        break;
    case NK_FW_KERAS:
        batch = update = m->training && m->trainable;
        break;
    case NK_FW_PADDLE:
        batch = m->mode == NK_DEFAULT ? m->training : !m->mode;
        update = batch && m->training;
        break;
    default: /* ONNX training_mode */
        batch = update = m->training;
        break;
    }
    if (!batch) {
        st = nk_batch_norm_infer(x, &s, m->weight, m->bias, m->rmean, m->rvar, m->eps, y, &m->opts);
        if (st == NK_OK)
            running_as_saved(m->rmean, m->rvar, m->eps, s.c, o);
        return module_error(m, st);
    }
    nk_running_stats rs = {m->rmean, m->rvar, nk_momentum_to_torch(m->fw, m->momentum), m->cumulative,
                           m->unbiased, m->nbt};
    st = nk_batch_norm_train(x, &s, m->weight, m->bias, m->eps, update ? &rs : NULL, y, o->mean,
                             o->invstd, &m->opts);
    if (st == NK_ERR_TOO_FEW_VALUES) {
        char sz[200];
        format_dims(sz, sizeof sz, ndim, dims);
        return nk_fail(st, "Expected more than 1 value per channel when training, got input size %s", sz);
    }
    if (st == NK_OK && update)
        m->nbt = rs.num_batches_tracked;
    return module_error(m, st);
}

static nk_status forward_in(nk_module *m, const float *x, int ndim, const int64_t *dims, float *y,
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
        if (!(m->fw == NK_FW_PYTORCH && !m->affine && !m->track))
            return nk_fail(NK_ERR_BAD_SHAPE,
                           "expected input's size at dim=%d to match num_features (%lld), but got: %lld.",
                           unb ? 0 : 1, (long long)m->C, (long long)s.c);
    }
    int use_input = 1, update = 0;
    if (m->fw == NK_FW_PYTORCH && m->track) {
        use_input = m->training;
        update = m->training;
    }
    nk_running_stats rs = {m->rmean, m->rvar, nk_momentum_to_torch(m->fw, m->momentum), m->cumulative,
                           m->unbiased, 0};
    /* PyTorch checks the spatial size alone: (0, C, 1) is refused too */
    if (s.spatial == 1 && use_input) {
        char sz[200];
        format_dims(sz, sizeof sz, ndim, dims);
        return nk_fail(NK_ERR_TOO_FEW_VALUES,
                       "Expected more than 1 spatial element when training, got input size %s", sz);
    }
    st = nk_instance_norm(x, &s, m->weight, m->bias, m->eps, use_input,
                          (update || !use_input) ? &rs : NULL, y, use_input ? o->mean : NULL,
                          use_input ? o->invstd : NULL, &m->opts);
    if (st == NK_OK && !use_input)
        for (int64_t n = 0; n < s.n; n++) { /* N * C entries, each image the running ones */
            nk_module_outputs on = {sizeof on, 0, o->mean ? o->mean + n * s.c : NULL,
                                    o->invstd ? o->invstd + n * s.c : NULL, NULL, NULL};
            running_as_saved(m->rmean, m->rvar, m->eps, s.c, &on);
        }
    return module_error(m, st);
}

static nk_status forward_gn(nk_module *m, const float *x, int ndim, const int64_t *dims, float *y,
                            const nk_module_outputs *o)
{
    if (ndim < 2)
        return rank_error("at least 2D", ndim);
    nk_shape s;
    nk_status st = channel_shape(m, ndim, dims, 0, &s);
    if (st)
        return st;
    /* without weight and bias only divisibility by num_groups matters */
    if (s.c != m->C && m->affine)
        return nk_fail(NK_ERR_BAD_SHAPE, "expected %lld channels, got input with %lld", (long long)m->C,
                       (long long)s.c);
    return module_error(m, nk_group_norm(x, &s, m->groups, m->weight, m->bias, m->eps, y, o->mean,
                                         o->invstd, &m->opts));
}

static int norm_axis(int a, int ndim) { return a < 0 ? a + ndim : a; }

static nk_status forward_ln(nk_module *m, const float *x, int ndim, const int64_t *dims, float *y,
                            const nk_module_outputs *o)
{
    int rs, ps; /* first reduced dim, first parameter dim */
    if (m->fw == NK_FW_MINDSPORE && m->layer == NK_LAYER_LAYER_NORM) {
        rs = norm_axis(m->begin_norm_axis, ndim);
        ps = norm_axis(m->begin_params_axis, ndim);
    } else if (m->fw == NK_FW_ONNX) {
        rs = ps = norm_axis(m->axis, ndim);
    } else {
        rs = ps = ndim - m->norm_ndim;
    }
    if (rs < 0 || rs >= ndim || ps < 0 || ps >= ndim)
        return nk_fail(NK_ERR_BAD_SHAPE, "%s %s: normalization axes out of range for a %dD input",
                       nk_framework_name(m->fw), layer_name(m->layer), ndim);
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
    if (m->layer == NK_LAYER_RMS_NORM)
        return module_error(m, nk_rms_norm(x, rows, D, m->weight, m->eps, y, o->invstd, &m->opts));
    if (ps == rs)
        return module_error(m, nk_layer_norm(x, rows, D, m->weight, m->bias, m->eps, y, o->mean,
                                             o->invstd, &m->opts));
    if (ps < rs) {
        /* parameters also span trailing row dims: row r uses the slice (r % (P / D)) */
        int64_t k = P / D;
        for (int64_t r = 0; r < rows; r++) {
            int64_t off = (r % k) * D;
            st = nk_layer_norm(x + r * D, 1, D, m->weight ? m->weight + off : NULL,
                               m->bias ? m->bias + off : NULL, m->eps, y + r * D,
                               o->mean ? o->mean + r : NULL, o->invstd ? o->invstd + r : NULL, &m->opts);
            if (st)
                return module_error(m, st);
        }
        return NK_OK;
    }
    /* ps > rs: each row holds D / P slices sharing the parameters */
    if ((st = nk_layer_norm(x, rows, D, NULL, NULL, m->eps, y, o->mean, o->invstd, NULL)))
        return module_error(m, st);
    nk_epilogue ep;
    nk_check_options(&m->opts, "nk_module_forward", &ep);
    const nk_kernels *kt = nk_kernels_current();
    const float one = 1.0f;
    for (int64_t i = 0; i < rows * (D / P); i++)
        kt->norm_affine(y + i * P, y + i * P, 1, (size_t)P, (size_t)P, (size_t)P, NULL, &one, m->weight,
                        m->bias, &ep);
    nk_clear_error();
    return NK_OK;
}

nk_status nk_module_forward(nk_module *m, const float *x, int ndim, const int64_t *dims, float *y)
{
    return nk_module_forward_ex(m, x, ndim, dims, y, NULL);
}

/* Size of the first version of nk_module_outputs. */
#define OUTPUTS_V1_SIZE (offsetof(nk_module_outputs, running_var) + sizeof(float *))

nk_status nk_module_forward_ex(nk_module *m, const float *x, int ndim, const int64_t *dims, float *y,
                               const nk_module_outputs *outputs)
{
    if (!m || !dims)
        return nk_fail(NK_ERR_NULL_POINTER, "nk_module_forward: %s is NULL", m ? "dims" : "module");
    if (ndim < 1 || ndim > 16)
        return nk_fail(NK_ERR_BAD_SHAPE, "nk_module_forward: rank must be in [1, 16], got %d", ndim);
    for (int i = 0; i < ndim; i++)
        if (dims[i] < 0)
            return nk_fail(NK_ERR_BAD_SHAPE, "nk_module_forward: negative extent %lld at dim %d",
                           (long long)dims[i], i);
    /* the size rule of every entry point, over all dims (zeros counted as 1) */
    if (!nk_extents_fit(dims, ndim, sizeof(float))) {
        char sz[200];
        format_dims(sz, sizeof sz, ndim, dims);
        return nk_fail(NK_ERR_BAD_SHAPE,
                       "nk_module_forward: input of size %s is too large: the product of its non-zero "
                       "extents must be at most %lld elements",
                       sz, (long long)(PTRDIFF_MAX / sizeof(float)));
    }
    int64_t total = 0;
    nk_status st = dims_product(dims, 0, ndim, &total);
    if (st)
        return st;
    if (total && (!x || !y))
        return nk_fail(NK_ERR_NULL_POINTER, "nk_module_forward: %s is NULL", x ? "output" : "input");
    nk_module_outputs o = {sizeof o, 0, NULL, NULL, NULL, NULL};
    if (outputs) {
        if (outputs->struct_size < OUTPUTS_V1_SIZE)
            return nk_fail(NK_ERR_BAD_PARAM,
                           "nk_module_forward_ex: outputs->struct_size must be at least %zu "
                           "(sizeof(nk_module_outputs) of the header you compiled with), got %u",
                           (size_t)OUTPUTS_V1_SIZE, (unsigned)outputs->struct_size);
        /* fields past the caller's struct_size stay NULL */
        memcpy(&o, outputs, outputs->struct_size < sizeof o ? outputs->struct_size : sizeof o);
        if ((o.running_mean || o.running_var) && m->layer != NK_LAYER_BATCH_NORM)
            return nk_fail(NK_ERR_BAD_PARAM,
                           "nk_module_forward_ex: %s %s has no running statistics to return "
                           "(outputs->running_mean / running_var must be NULL)",
                           nk_framework_name(m->fw), layer_name(m->layer));
        if ((o.running_mean || o.running_var) && !m->rmean)
            return nk_fail(NK_ERR_BAD_PARAM,
                           "nk_module_forward_ex: this %s BatchNorm tracks no running statistics "
                           "(outputs->running_mean / running_var must be NULL)",
                           nk_framework_name(m->fw));
    }
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
