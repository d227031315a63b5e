/*
 * libFuzzer target: the module API. Each input builds an nk_module_config
 * (a few fields changed from nk_module_config_init, or every byte garbage),
 * creates any framework x layer (out-of-range values included), then runs a
 * sequence of set_training / set_dtype / set_num_batches_tracked / forward /
 * forward_skip / parameter writes / accessor calls; forwards run in the module's dtype
 * (fp32, fp16 or bf16 buffers of exactly the input's size).
 *
 * Forward inputs are either fuzzed (any rank, extents, NULLs) or well formed
 * for the module (the rank, channel position and normalized shape the
 * framework accepts); a well-formed input must be accepted (or fail only for
 * too few values in batch statistics).
 *
 * Checked after every call:
 *   - create: failure leaves *out untouched and sets the message; success
 *     clears it and every parameter accessor exposes param_size floats;
 *   - forward: guard zones intact, x unchanged (unless in place); failure
 *     leaves y, weight, bias, running statistics and num_batches_tracked
 *     byte-identical and sets the message; success clears it and bumps
 *     num_batches_tracked by at most one; rank / extent / NULL errors the
 *     harness can see are rejected;
 *   - forward_skip: see forward_skip below.
 */
#include "fuzz_common.h"
#include "kernels/cvt.h"

#define NKF_MAX_NDIM 16

/* A MegEngine BatchNorm with freeze=1 and track_running_stats=0 fails at
 * forward time (no running statistics to freeze on). */
static int nkf_known_megengine_freeze(int fw, int layer, const nk_module_config *c)
{
    return NKF_SKIP_KNOWN && fw == NK_FW_MEGENGINE && layer == NK_LAYER_BATCH_NORM &&
           c->freeze == 1 && c->track_running_stats == 0;
}

/* Same pattern as the functional target: zero extent plus an overflowing
 * product is accepted as empty. */
static int nkf_known_empty_overflow(int bad, const int64_t *e, int k)
{
    return NKF_SKIP_KNOWN && bad && nkf_has_zero(e, k);
}

static int small_int(nkf_in *in)
{
    static const int tab[] = {-2, 3, 2, -3, INT32_MIN, INT32_MAX, 8, 9, -8, -9};
    uint8_t b = nkf_u8(in);
    if (b < 200)
        return (int)(b % 3) - 1; /* NK_DEFAULT, 0, 1 */
    if (b < 250)
        return tab[b % (sizeof tab / sizeof tab[0])];
    return (int)nkf_u32(in);
}

static double init_value(nkf_in *in)
{
    static const double tab[] = {NK_DEFAULT, 0.0, 1.0, 0.5, -1.5, NAN, INFINITY, 1e30, 1e39, -0.0};
    return nkf_double_from(in, tab, sizeof tab / sizeof tab[0]);
}

/* Fields changed away from the defaults (bit per field). */
enum {
    F_EPS, F_MOMENTUM, F_AFFINE, F_TRACK, F_BIAS, F_UBS, F_GAMMA, F_BETA, F_MMEAN, F_MVAR,
    F_BNA, F_BPA, F_FREEZE, F_TMODE, F_AXIS, F_TRAINABLE, F_UGS, F_FORMAT, F_GROUPS, F_NDIM,
    F_NSHAPE, F_RVU, F_ACT, F_ALPHA, F_COUNT
};

static unsigned decode_config(nkf_in *in, nk_module_config *c)
{
    nk_module_config_init(c);
    uint8_t mode = nkf_u8(in);
    if (mode >= 248) { /* every byte garbage */
        unsigned char *p = (unsigned char *)c;
        for (size_t i = 0; i < sizeof *c; i++)
            p[i] = nkf_u8(in);
        return ~0u;
    }
    unsigned changed = 0;
    int nchanges = mode % 5;
    for (int i = 0; i < nchanges; i++) {
        int f = nkf_u8(in) % F_COUNT;
        changed |= 1u << f;
        switch (f) {
        case F_EPS: {
            uint8_t b = nkf_u8(in);
            c->eps = b < 32 ? NK_EPS_NONE : nkf_eps(in);
            break;
        }
        case F_MOMENTUM: c->momentum = nkf_momentum(in); break;
        case F_AFFINE: c->affine = small_int(in); break;
        case F_TRACK: c->track_running_stats = small_int(in); break;
        case F_BIAS: c->bias = small_int(in); break;
        case F_UBS: c->use_batch_statistics = small_int(in); break;
        case F_GAMMA: c->gamma_init = init_value(in); break;
        case F_BETA: c->beta_init = init_value(in); break;
        case F_MMEAN: c->moving_mean_init = init_value(in); break;
        case F_MVAR: c->moving_var_init = init_value(in); break;
        case F_BNA: c->begin_norm_axis = small_int(in); break;
        case F_BPA: c->begin_params_axis = small_int(in); break;
        case F_FREEZE: c->freeze = small_int(in); break;
        case F_TMODE: c->training_mode = small_int(in); break;
        case F_AXIS: c->axis = small_int(in); break;
        case F_TRAINABLE: c->trainable = small_int(in); break;
        case F_UGS: c->use_global_stats = small_int(in); break;
        case F_FORMAT: c->data_format = small_int(in); break;
        case F_GROUPS: c->num_groups = nkf_u8(in) < 200 ? 1 + nkf_u8(in) % 8 : nkf_extent(in); break;
        case F_NDIM: {
            uint8_t b = nkf_u8(in);
            c->normalized_ndim = b < 200 ? 1 + b % 3 : small_int(in);
            for (int d = 0; d < NK_MAX_NORM_DIMS; d++)
                c->normalized_shape[d] = 1 + nkf_u8(in) % 6;
            break;
        }
        case F_NSHAPE: c->normalized_shape[nkf_u8(in) % NK_MAX_NORM_DIMS] = nkf_extent(in); break;
        case F_RVU: c->running_var_unbiased = small_int(in); break;
        case F_ACT: c->options.activation = (nk_activation)nkf_enum(in, 6); break;
        default: {
            static const float a[] = {0.01f, NAN, INFINITY, -1.0f, 0.0f};
            c->options.alpha = a[nkf_u8(in) % 5];
            break;
        }
        }
    }
    return changed;
}

/* Everything the module may change, and forward must not on failure. */
typedef struct snap {
    int64_t P;
    float *ptr[4];
    float *copy[4];
    int64_t nbt;
    int training;
} snap;

static void take(nk_module *m, snap *s)
{
    s->P = nk_module_param_size(m);
    s->ptr[0] = nk_module_weight(m);
    s->ptr[1] = nk_module_bias(m);
    s->ptr[2] = nk_module_running_mean(m);
    s->ptr[3] = nk_module_running_var(m);
    for (int i = 0; i < 4; i++) {
        s->copy[i] = NULL;
        if (s->ptr[i]) {
            s->copy[i] = (float *)malloc((size_t)s->P * sizeof(float));
            if (!s->copy[i])
                nkf_die("out of memory");
            memcpy(s->copy[i], s->ptr[i], (size_t)s->P * sizeof(float));
        }
    }
    s->nbt = nk_module_num_batches_tracked(m);
    s->training = nk_module_training(m);
}

static void drop(snap *s)
{
    for (int i = 0; i < 4; i++)
        free(s->copy[i]);
}

static void compare(nk_module *m, const snap *s, const char *why)
{
    static const char *const names[4] = {"weight", "bias", "running_mean", "running_var"};
    for (int i = 0; i < 4; i++)
        if (s->ptr[i] && memcmp(s->copy[i], s->ptr[i], (size_t)s->P * sizeof(float)))
            nkf_die("%s changed %s", why, names[i]);
    if (nk_module_num_batches_tracked(m) != s->nbt)
        nkf_die("%s changed num_batches_tracked", why);
    if (nk_module_training(m) != s->training)
        nkf_die("%s changed the training flag", why);
}

typedef struct made {
    int fw, layer, rank;
    int64_t C;
    nk_module_config cfg;
    unsigned changed;
    nk_layout layout;
} made;

/* Builds dims the module must accept; returns ndim, 0 when the harness has
 * no rule for this configuration. */
static int well_formed(nkf_in *in, const made *md, int64_t *dims)
{
    const nk_module_config *c = &md->cfg;
    if (md->changed == ~0u)
        return 0;
    int64_t C = md->C;
    int64_t n = nkf_u8(in) % 5;                         /* 0 .. 4 */
    int nsp = 0;
    int64_t sp[3];
    switch (md->layer) {
    case NK_LAYER_BATCH_NORM:
    case NK_LAYER_INSTANCE_NORM: {
        int r = md->rank;
        if (md->fw == NK_FW_ONNX || md->fw == NK_FW_KERAS ||
            (md->fw == NK_FW_MEGENGINE && md->layer == NK_LAYER_INSTANCE_NORM))
            r = md->fw == NK_FW_MEGENGINE ? 2 : 1 + nkf_u8(in) % 3;
        if (md->layer == NK_LAYER_BATCH_NORM && md->fw != NK_FW_ONNX && md->fw != NK_FW_KERAS &&
            r == 1 && (nkf_u8(in) & 1))
            r = 0; /* BatchNorm1d on (N, C) */
        nsp = r;
        break;
    }
    case NK_LAYER_GROUP_NORM:
        nsp = nkf_u8(in) % 4;
        break;
    case NK_LAYER_SKIP_LAYER_NORM:
    case NK_LAYER_SKIP_RMS_NORM:
        return 0; /* nk_module_forward refuses them (no skip input) */
    default: {
        /* leading row dims, then the normalized shape */
        if (c->begin_norm_axis != NK_DEFAULT || c->begin_params_axis != NK_DEFAULT ||
            (c->axis != NK_DEFAULT && md->fw == NK_FW_ONNX))
            return 0;
        int nd = c->normalized_ndim == NK_DEFAULT ? 1 : c->normalized_ndim;
        if ((md->fw == NK_FW_PYTORCH || md->fw == NK_FW_ONNX) &&
            c->data_format == NK_CHANNELS_FIRST) {
            /* over dim 1 of (N, C, *): ConvNeXt's channels_first */
            int k = 0, ns = nkf_u8(in) % 3;
            dims[k++] = nkf_u8(in) % 4;
            dims[k++] = C;
            for (int i = 0; i < ns; i++)
                dims[k++] = nkf_u8(in) % 6;
            return k;
        }
        if (nd > 1 && (md->fw == NK_FW_ONNX ||
                       (md->fw == NK_FW_MINDSPORE && md->layer == NK_LAYER_LAYER_NORM)))
            return 0;
        int lead = 1 + nkf_u8(in) % 3;
        int k = 0;
        for (int i = 0; i < lead; i++)
            dims[k++] = nkf_u8(in) % 4;
        if (c->normalized_ndim == NK_DEFAULT)
            dims[k++] = C;
        else
            for (int i = 0; i < nd; i++)
                dims[k++] = c->normalized_shape[i];
        return k;
    }
    }
    for (int i = 0; i < nsp; i++)
        sp[i] = 1 + nkf_u8(in) % 5;
    int k = 0;
    dims[k++] = n;
    /* PyTorch's data_format is the memory format: dims stay (N, C, *) */
    int c_last = md->layout == NK_CHANNELS_LAST && md->fw != NK_FW_PYTORCH;
    if (!c_last)
        dims[k++] = C;
    for (int i = 0; i < nsp; i++)
        dims[k++] = sp[i];
    if (c_last)
        dims[k++] = C;
    return k;
}

static void forward(nkf_in *in, nk_module *m, const made *md)
{
    static const char fn[] = "nk_module_forward";
    int64_t dims_local[NKF_MAX_NDIM];
    int ndim;
    int wf = 0;
    uint8_t mode = nkf_u8(in);
    if (mode < 128 && (ndim = well_formed(in, md, dims_local)) > 0) {
        wf = 1;
    } else {
        static const int odd[] = {0, -1, 17, 16, INT32_MAX, INT32_MIN, 9};
        uint8_t b = nkf_u8(in);
        ndim = b < 224 ? 1 + b % 6 : odd[b % (sizeof odd / sizeof odd[0])];
        int nd = ndim < 0 ? 0 : ndim > NKF_MAX_NDIM ? NKF_MAX_NDIM : ndim;
        for (int i = 0; i < nd; i++)
            dims_local[i] = nkf_u8(in) < 160 ? (i == 1 || i == nd - 1 ? md->C : 1 + nkf_u8(in) % 4)
                                             : nkf_extent(in);
    }
    int nd = ndim < 0 ? 0 : ndim > NKF_MAX_NDIM ? NKF_MAX_NDIM : ndim;
    /* dims: exactly nd entries in a guarded buffer, or NULL */
    nkf_buf db = {0};
    int dims_null = !wf && nkf_u8(in) < 8;
    if (!dims_null) {
        db = nkf_alloc((size_t)nd * sizeof(int64_t), 0);
        memcpy(db.p, dims_local, (size_t)nd * sizeof(int64_t));
        nkf_snapshot(&db);
    }

    int bad = dims_null || ndim < 1 || ndim > NKF_MAX_NDIM;
    uint64_t total = 1;
    int total_ok = !bad;
    if (!bad) {
        for (int i = 0; i < nd; i++)
            if (dims_local[i] < 0)
                total_ok = 0;
        if (total_ok)
            for (int i = 0; i < nd && total_ok; i++)
                total_ok = nkf_mul(total, (uint64_t)dims_local[i], &total);
        bad = !nkf_fits(dims_local, nd, sizeof(float));
        if (nkf_known_empty_overflow(bad, dims_local, nd))
            goto out;
        if (!bad && !(total_ok && total <= NKF_MAX_BYTES / sizeof(float)))
            goto out; /* valid but larger than the harness allocates */
    }

    nkf_buf x = {0}, y = {0};
    uint8_t f = nkf_u8(in);
    /* x and y in the module's dtype (nk_module_set_dtype), exactly sized */
    const uint32_t dt = nk_module_dtype(m);
    const size_t esz = dt == NK_DTYPE_F32 ? sizeof(float) : sizeof(uint16_t);
    size_t shift = (f >> 4 & 3) * esz;
    if (total_ok && total <= NKF_MAX_BYTES / sizeof(float)) {
        if (wf || f >= 8) {
            x = nkf_alloc((size_t)total * esz, shift);
            for (size_t i = 0; i < total; i++) {
                const float v = nkf_value(in, i);
                if (dt == NK_DTYPE_F32)
                    ((float *)x.p)[i] = v;
                else
                    ((uint16_t *)x.p)[i] = dt == NK_DTYPE_F16 ? nk_f32_to_f16(v) : nk_f32_to_bf16(v);
            }
        }
        if (!(f & 0x80) && (wf || (f & 7)))
            y = nkf_alloc((size_t)total * esz, 0);
    } else if (!(f & 1)) {
        x = nkf_alloc(NKF_SMALL * sizeof(float), shift);
        y = nkf_alloc(NKF_SMALL * sizeof(float), 0);
        memset(x.p, 0, x.bytes);
    }
    if (y.p)
        memset(y.p, 0x7f, y.bytes);
    int in_place = (f & 0x80) && x.p;
    void *yp = in_place ? x.p : y.p;
    if (total_ok && total && (!x.p || !yp))
        bad = 1;
    nkf_snapshot(&x);
    nkf_snapshot(&y);

    snap s;
    take(m, &s);
    if (nkf_u8(in) & 1)
        nkf_dirty_error();
    /* nk_module_forward_ex: a fuzzed struct_size (one from a newer header
     * too) and the C-sized running-statistics outputs, guarded */
    uint8_t ex = nkf_u8(in);
    struct {
        nk_module_outputs o;
        float *newer_field; /* a field a later version might append */
    } out = {{0, 0, NULL, NULL, NULL, NULL}, NULL};
    static const uint32_t sizes[] = {0, 8, sizeof(nk_module_outputs), sizeof out};
    out.o.struct_size = sizes[(ex >> 1) & 3];
    nkf_buf orm = {0}, orv = {0};
    const int64_t P = nk_module_param_size(m);
    if ((ex & 8) && P > 0 && P <= 4096) {
        orm = nkf_alloc((size_t)P * sizeof(float), 0);
        orv = nkf_alloc((size_t)P * sizeof(float), 0);
        memset(orm.p, 0x7f, orm.bytes);
        memset(orv.p, 0x7f, orv.bytes);
        nkf_snapshot(&orm);
        nkf_snapshot(&orv);
        out.o.running_mean = (float *)orm.p;
        out.o.running_var = (ex & 16) ? (float *)orv.p : NULL;
    }
    const int use_ex = ex & 1;
    const int64_t *dp = dims_null ? NULL : (int64_t *)db.p;
    nk_status st = use_ex ? nk_module_forward_ex(m, x.p, ndim, dp, yp, &out.o)
                          : nk_module_forward(m, x.p, ndim, dp, yp);
    nkf_check_status(st, fn);
    /* outputs forward_ex must refuse, whatever the input */
    const int ex_bad = use_ex && (out.o.struct_size < sizeof(nk_module_outputs) ||
                                  (orm.p && (md->layer != NK_LAYER_BATCH_NORM || !nk_module_running_mean(m))));
    if (use_ex) {
        nkf_check_guard(&orm, "forward_ex running_mean");
        nkf_check_guard(&orv, "forward_ex running_var");
        int wants_running = out.o.running_mean || out.o.running_var;
        if (st == NK_OK && out.o.struct_size < sizeof(nk_module_outputs))
            nkf_die("forward_ex accepted struct_size %u", (unsigned)out.o.struct_size);
        if (st == NK_OK && wants_running && !nk_module_running_mean(m))
            nkf_die("forward_ex returned running statistics the module does not have");
        if (st == NK_OK && orm.p && memcmp(orm.p, nk_module_running_mean(m), (size_t)P * sizeof(float)))
            nkf_die("forward_ex running_mean differs from the module's");
        if (st != NK_OK && (!nkf_unchanged(&orm) || !nkf_unchanged(&orv)))
            nkf_die("failed forward_ex (%s) wrote its outputs", nk_last_error());
    }
    nkf_free(&orm);
    nkf_free(&orv);
    nkf_check_guard(&x, fn);
    nkf_check_guard(&y, fn);
    if (db.base) {
        nkf_check_guard(&db, fn);
        if (!nkf_unchanged(&db))
            nkf_die("%s changed dims", fn);
    }
    if (!in_place && !nkf_unchanged(&x))
        nkf_die("%s changed its input", fn);
    if (bad && st == NK_OK)
        nkf_die("%s accepted a rank, extent or NULL it must reject", fn);
    if (st != NK_OK) {
        compare(m, &s, "failed forward");
        if (!nkf_unchanged(&y) || (in_place && !nkf_unchanged(&x)))
            nkf_die("failed forward (%s) changed the output", nk_last_error());
        if (wf && !bad && !ex_bad && st != NK_ERR_TOO_FEW_VALUES &&
            !nkf_known_megengine_freeze(md->fw, md->layer, &md->cfg))
            nkf_die("%s rejected a well-formed %dD input for %s layer %d: %s", fn, ndim,
                    nk_framework_name((nk_framework)md->fw), md->layer, nk_last_error());
    } else {
        int64_t d = nk_module_num_batches_tracked(m) - s.nbt;
        if (d != 0 && d != 1)
            nkf_die("forward moved num_batches_tracked by %lld", (long long)d);
        if (nk_module_training(m) != s.training)
            nkf_die("forward changed the training flag");
        for (int i = 0; i < 2; i++) {
            float *p = i ? nk_module_bias(m) : nk_module_weight(m);
            if (p && memcmp(p, s.copy[i], (size_t)s.P * sizeof(float)))
                nkf_die("forward changed the %s", i ? "bias" : "weight");
        }
    }
    drop(&s);
    nkf_free(&x);
    nkf_free(&y);
out:
    nkf_free(&db);
}

/* nk_module_forward_skip on any module: a (B, S, H) or (R, H) input with a
 * skip of its own size, (1, S, H) or (S, H), or fuzzed extents; optional
 * skip_bias, sum (own array, x, the skip or y), outputs. Checked: modules
 * of other layers refuse; guards; x, skip and skip_bias unchanged (but for
 * an accepted in-place sum); failure leaves y, sum, the outputs and the
 * module untouched; a well-formed call with no refused aliasing succeeds,
 * and its fp32 sum is (x + skip) + skip_bias rounded once. */
static void forward_skip(nkf_in *in, nk_module *m, const made *md)
{
    static const char fn[] = "nk_module_forward_skip";
    const int is_skip = md->layer == NK_LAYER_SKIP_LAYER_NORM || md->layer == NK_LAYER_SKIP_RMS_NORM;
    const int64_t H = md->C;
    int64_t dims[3], kd[3];
    int ndim, kn;
    const uint8_t shape = nkf_u8(in);
    int wf = shape < 192, bc = 0;
    if (shape & 1) {
        ndim = 3;
        dims[0] = nkf_u8(in) % 3, dims[1] = nkf_u8(in) % 4, dims[2] = H;
    } else {
        ndim = 2;
        dims[0] = nkf_u8(in) % 5, dims[1] = H;
    }
    if (!wf) { /* fuzzed extents, any rank in [1, 3] */
        ndim = 1 + nkf_u8(in) % 3;
        for (int i = 0; i < ndim; i++)
            dims[i] = nkf_u8(in) < 200 ? (int64_t)(nkf_u8(in) % 5) : nkf_extent(in);
    }
    const uint8_t ks = nkf_u8(in);
    kn = ndim;
    memcpy(kd, dims, sizeof kd);
    if (ndim == 3 && (ks & 3) == 1)
        kd[0] = 1, bc = dims[0] != 1; /* B = 1: the input's own shape */
    else if (ndim == 3 && (ks & 3) == 2)
        kn = 2, kd[0] = dims[1], kd[1] = dims[2], bc = 1;
    else if ((ks & 3) == 3) {
        kd[nkf_u8(in) % kn] = nkf_u8(in) < 128 ? (int64_t)(nkf_u8(in) % 5) : nkf_extent(in);
        wf = 0;
    }
    uint64_t total = 1, ktotal = 1;
    int fits = nkf_fits(dims, ndim, sizeof(float)) && nkf_fits(kd, kn, sizeof(float));
    for (int i = 0; i < ndim && fits; i++)
        fits = dims[i] >= 0 && nkf_mul(total, (uint64_t)dims[i], &total);
    for (int i = 0; i < kn && fits; i++)
        fits = kd[i] >= 0 && nkf_mul(ktotal, (uint64_t)kd[i], &ktotal);
    if (!fits || total > 4096 || ktotal > 4096)
        return; /* the extents' own checks are forward's */
    const uint32_t dt = nk_module_dtype(m);
    const size_t esz = dt == NK_DTYPE_F32 ? sizeof(float) : sizeof(uint16_t);
    nkf_buf x = nkf_alloc((size_t)total * esz, (nkf_u8(in) % 4) * esz);
    nkf_buf k = nkf_alloc((size_t)ktotal * esz, 0), y = nkf_alloc((size_t)total * esz, 0);
    nkf_buf sum = {0}, kb = {0}, om = {0}, oi = {0};
    nkf_fill(in, &x, dt);
    nkf_fill(in, &k, dt);
    memset(y.p, 0x7f, y.bytes);
    const uint8_t opt = nkf_u8(in);
    if ((opt & 1) && H > 0 && H <= 4096) { /* modules without parameters take any H */
        kb = nkf_alloc((size_t)H * sizeof(float), 0);
        nkf_fill(in, &kb, NK_DTYPE_F32);
    }
    /* where the sum goes; y (refused) only with the top bit */
    enum { SUM_NONE, SUM_OWN, SUM_X, SUM_SKIP, SUM_Y } sk = (opt >> 1) % 4;
    if (opt & 0x80)
        sk = SUM_Y;
    if (sk == SUM_OWN) {
        sum = nkf_alloc((size_t)total * esz, 0);
        memset(sum.p, 0x7f, sum.bytes);
    }
    const int rows = (int)(H > 0 ? total / (uint64_t)H : 0);
    nk_module_outputs o = {sizeof o, 0, NULL, NULL, NULL, NULL};
    if (opt & 0x40) {
        om = nkf_alloc((size_t)rows * sizeof(float), 0);
        oi = nkf_alloc((size_t)rows * sizeof(float), 0);
        o.mean = (float *)om.p, o.invstd = (float *)oi.p;
        if (opt & 0x20)
            o.running_mean = (float *)om.p; /* refused: no running statistics */
    }
    void *sp = sk == SUM_OWN ? sum.p : sk == SUM_X ? x.p : sk == SUM_SKIP ? k.p
             : sk == SUM_Y ? y.p : NULL;
    nkf_buf *all[] = {&x, &k, &y, &sum, &kb, &om, &oi};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        nkf_snapshot(all[i]);
    snap sn;
    take(m, &sn);
    if (nkf_u8(in) & 1)
        nkf_dirty_error();
    const nk_status st = nk_module_forward_skip(m, x.p, ndim, dims, k.p, kn, kd,
                                                (const float *)kb.p, y.p, sp,
                                                (opt & 0x40) ? &o : NULL);
    NKF_TRACE("%s layer %d dtype %u ndim %d [%lld %lld %lld] skip_ndim %d bc %d bias %d sum %d "
              "outputs %#x -> %d %s\n",
              fn, md->layer, (unsigned)dt, ndim, (long long)dims[0], (long long)dims[1],
              (long long)dims[2], kn, bc, kb.p != NULL, (int)sk, opt & 0x60, (int)st,
              nk_last_error());
    nkf_check_status(st, fn);
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        nkf_check_guard(all[i], fn);
    const int refused_alias = total && (sk == SUM_Y || (sk == SUM_SKIP && bc));
    const int must_fail = !is_skip || refused_alias || ((opt & 0x60) == 0x60);
    if (must_fail && st == NK_OK)
        nkf_die("%s accepted a %s call it must refuse (layer %d, sum %d, broadcast %d)", fn,
                is_skip ? "skip" : "non-skip", md->layer, (int)sk, bc);
    if (!must_fail && wf && st != NK_OK)
        nkf_die("%s refused a well-formed call: %s", fn, nk_last_error());
    if (!nkf_unchanged(&kb) || (!(st == NK_OK && sk == SUM_X) && !nkf_unchanged(&x)) ||
        (!(st == NK_OK && sk == SUM_SKIP) && !nkf_unchanged(&k)))
        nkf_die("%s changed an input", fn);
    if (st != NK_OK) {
        compare(m, &sn, "failed forward_skip");
        for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
            if (!nkf_unchanged(all[i]))
                nkf_die("failed %s (%s) wrote buffer %zu", fn, nk_last_error(), i);
    } else if (sp && dt == NK_DTYPE_F32) {
        const float *x0 = (const float *)x.copy, *k0 = (const float *)k.copy;
        const float *b0 = (const float *)kb.copy;
        const uint64_t per = bc ? ktotal : total;
        for (uint64_t i = 0; i < total; i++) {
            float v = x0[i] + k0[i % per];
            if (b0)
                v += b0[i % (uint64_t)H];
            const float got = ((const float *)sp)[i];
            if (memcmp(&got, &v, sizeof v) && !(isnan(got) && isnan(v)))
                nkf_die("%s: sum[%llu] = %a, (x + skip) + bias = %a", fn, (unsigned long long)i,
                        (double)got, (double)v);
        }
    }
    drop(&sn);
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        nkf_free(all[i]);
}

/* Accessors on a live module: each array has param_size floats (ASan checks
 * the reads), values the checkpoint loader may write are any floats. */
static void touch_params(nkf_in *in, nk_module *m)
{
    int64_t P = nk_module_param_size(m);
    if (P < 1)
        nkf_die("param_size %lld", (long long)P);
    float *arr[4] = {nk_module_weight(m), nk_module_bias(m), nk_module_running_mean(m),
                     nk_module_running_var(m)};
    uint8_t which = nkf_u8(in);
    volatile float sink = 0.0f;
    for (int i = 0; i < 4; i++) {
        if (!arr[i])
            continue;
        for (int64_t j = 0; j < P; j++)
            sink += arr[i][j];
        if (which & (1u << i))
            for (int64_t j = 0; j < P; j++)
                arr[i][j] = nkf_value(in, (size_t)j);
    }
    (void)sink;
    (void)nk_module_eps(m);
    (void)nk_module_momentum_torch(m);
}

static void null_module_calls(void)
{
    if (nk_module_set_training(NULL, 1) != NK_ERR_NULL_POINTER || !nk_last_error()[0])
        nkf_die("nk_module_set_training(NULL) did not fail with a message");
    int64_t d = 1;
    float v = 0.0f;
    if (nk_module_forward(NULL, &v, 1, &d, &v) != NK_ERR_NULL_POINTER)
        nkf_die("nk_module_forward(NULL) did not fail");
    nkf_check_status(NK_ERR_NULL_POINTER, "nk_module_forward");
    if (nk_module_weight(NULL) || nk_module_bias(NULL) || nk_module_running_mean(NULL) ||
        nk_module_running_var(NULL) || nk_module_param_size(NULL) || nk_module_training(NULL) ||
        nk_module_num_batches_tracked(NULL) || !isnan(nk_module_eps(NULL)) ||
        !isnan(nk_module_momentum_torch(NULL)))
        nkf_die("an accessor on NULL returned a value");
    nk_module_destroy(NULL);
    nk_module_config_init(NULL);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    nkf_in in = {data, size, 0};
    made md;
    memset(&md, 0, sizeof md);
    md.fw = nkf_enum(&in, 6);
    md.layer = nkf_enum(&in, 7);
    {
        uint8_t b = nkf_u8(&in);
        static const int odd[] = {0, -1, 4, 7, INT32_MIN, INT32_MAX};
        md.rank = b < 224 ? 1 + b % 3 : odd[b % 6];
    }
    {
        uint8_t b = nkf_u8(&in);
        md.C = b < 224 ? 1 + b % 24 : nkf_extent(&in);
    }
    md.changed = decode_config(&in, &md.cfg);
    uint8_t flags = nkf_u8(&in);

    /* framework-level helpers take any value */
    (void)nk_default_eps((nk_framework)md.fw, (nk_layer)md.layer);
    (void)nk_default_momentum((nk_framework)md.fw, (nk_layer)md.layer);
    (void)nk_momentum_to_torch((nk_framework)md.fw, md.cfg.momentum);
    (void)nk_momentum_from_torch((nk_framework)md.fw, md.cfg.momentum);
    if (!nk_framework_name((nk_framework)md.fw))
        nkf_die("nk_framework_name returned NULL");
    if (flags & 0x40)
        null_module_calls();

    /* Modules own P floats per parameter array; a valid P up to 2^40 would be
     * allocated, so large ones are not created here. */
    {
        int64_t P = md.C;
        const nk_module_config *c = &md.cfg;
        if ((md.layer == NK_LAYER_LAYER_NORM || md.layer == NK_LAYER_RMS_NORM) &&
            c->normalized_ndim >= 1 && c->normalized_ndim <= NK_MAX_NORM_DIMS) {
            uint64_t p = 1;
            int ok = 1;
            for (int i = 0; i < c->normalized_ndim && ok; i++)
                ok = c->normalized_shape[i] >= 1 && nkf_mul(p, (uint64_t)c->normalized_shape[i], &p);
            P = ok && p <= (uint64_t)INT64_MAX ? (int64_t)p : -1;
        }
        if (P > (1 << 16) && P <= ((int64_t)1 << 40))
            return 0;
    }

    nk_module *sentinel = (nk_module *)(uintptr_t)0x5a5a5a5a;
    nk_module *m = sentinel;
    if (flags & 1)
        nkf_dirty_error();
    nk_status st = nk_module_create((nk_framework)md.fw, (nk_layer)md.layer, md.rank, md.C,
                                    (flags & 0x3e) == 0x3e ? NULL : &md.cfg, (flags & 0x80) && (flags & 2) ? NULL : &m);
    nkf_check_status(st, "nk_module_create");
    if (st != NK_OK) {
        if (m != sentinel)
            nkf_die("failed nk_module_create wrote *out");
        return 0;
    }
    if ((flags & 0x80) && (flags & 2))
        nkf_die("nk_module_create accepted out == NULL");
    if ((flags & 0x3e) == 0x3e) {
        md.changed = 0;
        nk_module_config_init(&md.cfg);
    }
    if (!m || m == sentinel)
        nkf_die("nk_module_create succeeded without a module");
    md.C = nk_module_param_size(m);
    md.layout = NK_CHANNELS_FIRST;
    if (md.cfg.data_format == NK_CHANNELS_FIRST || md.cfg.data_format == NK_CHANNELS_LAST)
        md.layout = (nk_layout)md.cfg.data_format;
    else if (md.fw == NK_FW_KERAS && md.cfg.axis != 1)
        md.layout = NK_CHANNELS_LAST;
    touch_params(&in, m);

    for (int step = 0; step < 8 && nkf_left(&in); step++) {
        uint8_t op = nkf_u8(&in);
        switch (op % 6) {
        case 5: {
            /* element type of later forwards: the three codes, or any other
             * (refused, dtype unchanged) */
            const uint32_t want = nkf_u8(&in) < 224 ? (uint32_t)(op >> 3) % 3 : nkf_u32(&in);
            const uint32_t before = nk_module_dtype(m);
            st = nk_module_set_dtype(m, want);
            nkf_check_status(st, "nk_module_set_dtype");
            if ((st == NK_OK) != (want <= NK_DTYPE_BF16))
                nkf_die("nk_module_set_dtype(%u) gave status %d", (unsigned)want, (int)st);
            if (nk_module_dtype(m) != (st == NK_OK ? want : before))
                nkf_die("nk_module_set_dtype(%u) left dtype %u", (unsigned)want,
                        (unsigned)nk_module_dtype(m));
            break;
        }
        case 4: {
            /* checkpoint restore of num_batches_tracked */
            int64_t want = (int64_t)nkf_u64(&in), before = nk_module_num_batches_tracked(m);
            st = nk_module_set_num_batches_tracked(m, want);
            nkf_check_status(st, "nk_module_set_num_batches_tracked");
            int ok = md.layer == NK_LAYER_BATCH_NORM && nk_module_running_mean(m) && want >= 0 &&
                     want != INT64_MAX;
            if ((st == NK_OK) != ok)
                nkf_die("nk_module_set_num_batches_tracked(%lld) gave status %d", (long long)want, (int)st);
            if (nk_module_num_batches_tracked(m) != (st == NK_OK ? want : before))
                nkf_die("nk_module_set_num_batches_tracked left %lld",
                        (long long)nk_module_num_batches_tracked(m));
            break;
        }
        case 0: {
            int t = (op >> 2) & 1 ? (int)(op >> 3) - 16 : (op >> 3) & 1;
            if (nkf_u8(&in) & 1)
                nkf_dirty_error();
            st = nk_module_set_training(m, t);
            nkf_check_status(st, "nk_module_set_training");
            if (st != NK_OK || nk_module_training(m) != (t != 0))
                nkf_die("nk_module_set_training(%d) gave training=%d", t, nk_module_training(m));
            break;
        }
        case 3:
            touch_params(&in, m);
            break;
        case 2:
            if (op & 0x80) {
                forward_skip(&in, m, &md);
                break;
            }
            forward(&in, m, &md);
            break;
        default:
            forward(&in, m, &md);
            break;
        }
    }
    nk_module_destroy(m);
    return 0;
}
