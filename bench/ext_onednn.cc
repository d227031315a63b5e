// oneDNN (2.x) adapter for the benchmark suite: batch normalization forward
// (training with batch statistics, inference with global statistics; NCHW
// and NHWC) and layer normalization, and their backward with every gradient
// (prop_kind::backward: dx, dscale, dshift). The backward reads the mean and
// variance of a forward training run made at creation (batch normalization
// eval: the running statistics, use_global_stats) and, with a fused ReLU,
// that forward's workspace. InstanceNorm channels-first is run as batch
// normalization of a 1 x (N*C) x S tensor, the way frameworks map it onto
// oneDNN. No GroupNorm / RMSNorm primitive exists in oneDNN 2.x.
// Element types: src / dst in the case's dtype (f32, bf16, f16 where this
// oneDNN has the primitive on this CPU: the primitive descriptor says so);
// scale, shift, mean and variance are f32, the only type oneDNN 2.x takes
// for them, whatever the case's param_dtype.
// A fused case (residual add before LayerNorm) is two primitives, as a
// framework maps it: binary add of x and skip into the sum s (with the
// skip_bias as a binary add post-op broadcast over the rows, f32), then
// layer normalization of s into y with the case's weight and bias.
#include "ext.h"

#include <oneapi/dnnl/dnnl.hpp>
#if DNNL_CPU_RUNTIME == DNNL_RUNTIME_OMP
#include <omp.h>
#endif

#include <cstdio>
#include <cstring>
#include <exception>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

struct nkb_ext {
    dnnl::engine eng;
    dnnl::stream strm;
    dnnl::primitive prim;
    std::unordered_map<int, dnnl::memory> args;
    // fused case: the binary add that runs before prim, and its arguments
    bool pre = false;
    dnnl::primitive pre_prim;
    std::unordered_map<int, dnnl::memory> pre_args;
    nkb_fuse fuse = NKB_FUSE_NONE;
};

namespace {

using tag = dnnl::memory::format_tag;
using dt = dnnl::memory::data_type;
using nf = dnnl::normalization_flags;

void say(char *why, size_t len, const std::string &s)
{
    if (why && len)
        std::snprintf(why, len, "%s", s.c_str());
}

// An f32 memory of md holding v[0 .. c-1] repeated until it is full
dnnl::memory tiled(const dnnl::memory::desc &md, const dnnl::engine &eng, const float *v, int64_t c)
{
    dnnl::memory m(md, eng);
    float *p = static_cast<float *>(m.get_data_handle());
    size_t n = md.get_size() / sizeof(float);
    for (size_t i = 0; i < n; i++)
        p[i] = v[i % static_cast<size_t>(c)];
    return m;
}

dnnl::memory filled(const dnnl::memory::desc &md, const dnnl::engine &eng, float v)
{
    return tiled(md, eng, &v, 1);
}

dt data_type_of(uint32_t dtype)
{
    return dtype == NK_DTYPE_BF16 ? dt::bf16 : dtype == NK_DTYPE_F16 ? dt::f16 : dt::f32;
}

const char *dtype_name(uint32_t dtype)
{
    return dtype == NK_DTYPE_BF16 ? "bf16" : dtype == NK_DTYPE_F16 ? "f16" : "f32";
}

// The primitive descriptor PD(args...): false where oneDNN has no
// implementation (an element type this CPU or version lacks), other errors
// thrown.
template <typename PD, typename... A> bool make_pd(PD &pd, const A &...args)
{
    try {
        pd = PD(args...);
        return true;
    } catch (const dnnl::error &err) {
        if (err.status != dnnl_unimplemented)
            throw;
        return false;
    }
}

// The backward of the primitive family Fwd / Bwd on data of md into e:
// the forward training primitive runs once here, writing the mean and
// variance the backward reads (with use_global_stats in flags it reads them
// instead, from rmean / rvar, c values tiled) and the workspace of a fused
// ReLU; e->prim becomes the backward primitive and e->args its arguments, dy
// copied into DIFF_DST, and the backward runs once. e->args[DNNL_ARG_SRC]
// holds x. Returns the primitive oneDNN has no implementation of, or "".
template <typename Fwd, typename Bwd>
std::string backward_setup(nkb_ext *e, const char *name, const dnnl::memory::desc &md, float eps,
                           nf flags, const dnnl::memory &scale, const dnnl::memory &shift,
                           const float *rmean, const float *rvar, int64_t c, const void *dy)
{
    typename Fwd::primitive_desc fpd;
    if (!make_pd(fpd, typename Fwd::desc(dnnl::prop_kind::forward_training, md, eps, flags), e->eng))
        return name;
    typename Bwd::primitive_desc bpd;
    if (!make_pd(bpd, typename Bwd::desc(dnnl::prop_kind::backward, md, md, eps, flags), e->eng, fpd))
        return std::string(name) + " backward";
    const bool global = (flags & nf::use_global_stats) != nf::none;
    dnnl::memory mean = global ? tiled(fpd.mean_desc(), e->eng, rmean, c)
                               : dnnl::memory(fpd.mean_desc(), e->eng);
    dnnl::memory var = global ? tiled(fpd.variance_desc(), e->eng, rvar, c)
                              : dnnl::memory(fpd.variance_desc(), e->eng);
    std::unordered_map<int, dnnl::memory> fwd = {
        {DNNL_ARG_SRC, e->args[DNNL_ARG_SRC]}, {DNNL_ARG_DST, dnnl::memory(md, e->eng)},
        {DNNL_ARG_SCALE, scale},               {DNNL_ARG_SHIFT, shift},
        {DNNL_ARG_MEAN, mean},                 {DNNL_ARG_VARIANCE, var}};
    if (fpd.workspace_desc().get_size() > 0)
        fwd[DNNL_ARG_WORKSPACE] = dnnl::memory(fpd.workspace_desc(), e->eng);
    Fwd(fpd).execute(e->strm, fwd);
    e->strm.wait();

    dnnl::memory ddst(md, e->eng), dsrc(md, e->eng);
    std::memcpy(ddst.get_data_handle(), dy, md.get_size());
    std::memset(dsrc.get_data_handle(), 0, md.get_size());
    e->prim = Bwd(bpd);
    e->args[DNNL_ARG_MEAN] = mean;
    e->args[DNNL_ARG_VARIANCE] = var;
    e->args[DNNL_ARG_SCALE] = scale;
    e->args[DNNL_ARG_SHIFT] = shift; // an input of oneDNN 2.6's backward with use_shift
    e->args[DNNL_ARG_DIFF_DST] = ddst;
    e->args[DNNL_ARG_DIFF_SRC] = dsrc;
    e->args[DNNL_ARG_DIFF_SCALE] = dnnl::memory(scale.get_desc(), e->eng);
    e->args[DNNL_ARG_DIFF_SHIFT] = dnnl::memory(shift.get_desc(), e->eng);
    if (bpd.workspace_desc().get_size() > 0)
        e->args[DNNL_ARG_WORKSPACE] = fwd.at(DNNL_ARG_WORKSPACE);
    e->prim.execute(e->strm, e->args);
    e->strm.wait();
    return "";
}

} // namespace

extern "C" {

const char *nkb_onednn_version(void)
{
    static char buf[32];
    const dnnl_version_t *v = dnnl_version();
    std::snprintf(buf, sizeof buf, "%d.%d.%d", v->major, v->minor, v->patch);
    return buf;
}

nkb_ext *nkb_onednn_create(const nkb_case *cs, const void *x, const nkb_bwd_inputs *bwd,
                           const nkb_fuse_inputs *fuse, char *why, size_t why_len)
{
#if DNNL_CPU_RUNTIME == DNNL_RUNTIME_OMP
    omp_set_num_threads(1); // single thread, as every row of the suite
#endif
    try {
        const float eps = static_cast<float>(cs->eps);
        int64_t n = cs->n, c = cs->c, s = cs->spatial;
        nf flags = nf::use_scale | nf::use_shift;
        if (cs->op == NKB_OP_GN || cs->op == NKB_OP_RMS) {
            say(why, why_len, cs->op == NKB_OP_GN ? "no group normalization primitive in oneDNN 2.x"
                                                  : "no RMS normalization primitive in oneDNN 2.x");
            return nullptr;
        }
        if (cs->backward && !bwd) {
            say(why, why_len, "backward case without dy and parameters");
            return nullptr;
        }
        if (cs->fuse != NKB_FUSE_NONE && (!fuse || cs->backward || cs->op != NKB_OP_LN)) {
            say(why, why_len, "fused case without skip and parameters, or not LayerNorm forward");
            return nullptr;
        }
        if (cs->act == NK_ACT_RELU && cs->op == NKB_OP_BN_INFER) {
            flags = flags | nf::fuse_norm_relu;
        } else if (cs->act != NK_ACT_NONE) {
            say(why, why_len, "oneDNN 2.x normalization fuses ReLU only (batch norm inference here)");
            return nullptr;
        }
        std::unique_ptr<nkb_ext> e(new nkb_ext);
        e->eng = dnnl::engine(dnnl::engine::kind::cpu, 0);
        e->strm = dnnl::stream(e->eng);
        dnnl::memory::desc data_md;
        const dt ddt = data_type_of(cs->dtype);
        int64_t channels = c;
        switch (cs->op) {
        case NKB_OP_BN_TRAIN:
        case NKB_OP_BN_INFER:
            data_md = dnnl::memory::desc({n, c, s, 1}, ddt,
                                         cs->layout == NK_CHANNELS_LAST ? tag::nhwc : tag::nchw);
            break;
        case NKB_OP_IN:
            if (cs->layout == NK_CHANNELS_LAST) {
                say(why, why_len, "no instance normalization in oneDNN 2.x; NHWC does not fold into batch norm");
                return nullptr;
            }
            channels = n * c;
            data_md = dnnl::memory::desc({1, n * c, s, 1}, ddt, tag::nchw);
            break;
        case NKB_OP_LN:
            channels = c;
            data_md = dnnl::memory::desc({n * s, c}, ddt, tag::ab);
            break;
        default:
            return nullptr; /* GN / RMS: answered above */
        }
        dnnl::memory src(data_md, e->eng), dst(data_md, e->eng);
        // the library's own layout equals ours, so the bytes copy as they are
        std::memcpy(src.get_data_handle(), x, data_md.get_size());
        std::memset(dst.get_data_handle(), 0, data_md.get_size());
        dnnl::memory::desc vec_md({channels}, dt::f32, tag::a);
        e->args[DNNL_ARG_SRC] = src;
        std::string note;
        if (cs->param_dtype != NK_DTYPE_F32)
            note = "oneDNN 2.x: scale and shift in f32, the only type it takes for them";
        auto unimplemented = [&](const std::string &prim) {
            char buf[160];
            std::snprintf(buf, sizeof buf, "oneDNN %s: no %s %s on this CPU (unimplemented)",
                          nkb_onednn_version(), dtype_name(cs->dtype), prim.c_str());
            say(why, why_len, buf);
        };
        if (cs->backward) {
            // the case's weight and bias; InstanceNorm's repeated for each sample
            dnnl::memory scale = tiled(vec_md, e->eng, bwd->weight, c);
            dnnl::memory shift = tiled(vec_md, e->eng, bwd->bias, c);
            std::string missing;
            if (cs->op == NKB_OP_LN) {
                missing = backward_setup<dnnl::layer_normalization_forward,
                                         dnnl::layer_normalization_backward>(
                    e.get(), "layer normalization", data_md, eps, flags, scale, shift, nullptr,
                    nullptr, c, bwd->dy);
            } else {
                const bool global = cs->op == NKB_OP_BN_INFER;
                missing = backward_setup<dnnl::batch_normalization_forward,
                                         dnnl::batch_normalization_backward>(
                    e.get(), "batch normalization", data_md, eps,
                    global ? flags | nf::use_global_stats : flags, scale, shift,
                    bwd->running_mean, bwd->running_var, c, bwd->dy);
            }
            if (!missing.empty()) {
                unimplemented(missing);
                return nullptr;
            }
            if (cs->op == NKB_OP_IN)
                note = "oneDNN 2.x InstanceNorm backward: dweight and dbias per sample and channel "
                       "(batch normalization of 1 x (N*C) x S), not summed over the batch" +
                       std::string(note.empty() ? "" : "; ") + note;
            say(why, why_len, note);
            return e.release();
        }
        e->args[DNNL_ARG_DST] = dst;
        e->args[DNNL_ARG_SCALE] = filled(vec_md, e->eng, 1.0f);
        e->args[DNNL_ARG_SHIFT] = filled(vec_md, e->eng, 0.0f);
        if (cs->fuse != NKB_FUSE_NONE) {
            // s = x + skip (+ skip_bias, a post-op of one row broadcast over
            // the n * s rows), the layer normalization's source
            dnnl::memory skip(data_md, e->eng), sum(data_md, e->eng);
            std::memcpy(skip.get_data_handle(), fuse->skip, data_md.get_size());
            std::memset(sum.get_data_handle(), 0, data_md.get_size());
            const bool with_bias = cs->fuse == NKB_FUSE_ADDSUM && fuse->skip_bias;
            dnnl::memory::desc row_md({1, c}, dt::f32, tag::ab);
            dnnl::primitive_attr attr;
            if (with_bias) {
                dnnl::post_ops po;
                po.append_binary(dnnl::algorithm::binary_add, row_md);
                attr.set_post_ops(po);
            }
            dnnl::binary::primitive_desc apd;
            if (!make_pd(apd, dnnl::binary::desc(dnnl::algorithm::binary_add, data_md, data_md, data_md),
                         attr, e->eng)) {
                unimplemented(with_bias ? "binary add with a bias post-op" : "binary add");
                return nullptr;
            }
            e->pre = true;
            e->pre_prim = dnnl::binary(apd);
            e->pre_args = {{DNNL_ARG_SRC_0, src}, {DNNL_ARG_SRC_1, skip}, {DNNL_ARG_DST, sum}};
            if (with_bias)
                e->pre_args[DNNL_ARG_ATTR_MULTIPLE_POST_OP(0) | DNNL_ARG_SRC_1] =
                    tiled(row_md, e->eng, fuse->skip_bias, c);
            e->args[DNNL_ARG_SRC] = sum;
            e->args[DNNL_ARG_SCALE] = tiled(vec_md, e->eng, fuse->weight, c);
            e->args[DNNL_ARG_SHIFT] = tiled(vec_md, e->eng, fuse->bias, c);
            e->fuse = cs->fuse;
        }
        if (cs->op == NKB_OP_LN) {
            dnnl::layer_normalization_forward::desc d(dnnl::prop_kind::forward_inference, data_md,
                                                      eps, flags);
            dnnl::layer_normalization_forward::primitive_desc pd;
            if (!make_pd(pd, d, e->eng)) {
                unimplemented("layer normalization");
                return nullptr;
            }
            e->prim = dnnl::layer_normalization_forward(pd);
            if (e->pre) {
                // the outputs are compared with normkit's after create()
                nkb_onednn_run(e.get());
            }
        } else {
            bool train = cs->op != NKB_OP_BN_INFER;
            if (!train)
                flags = flags | nf::use_global_stats;
            dnnl::batch_normalization_forward::desc d(
                train ? dnnl::prop_kind::forward_training : dnnl::prop_kind::forward_inference,
                data_md, eps, flags);
            dnnl::batch_normalization_forward::primitive_desc pd;
            if (!make_pd(pd, d, e->eng)) {
                unimplemented("batch normalization");
                return nullptr;
            }
            e->prim = dnnl::batch_normalization_forward(pd);
            e->args[DNNL_ARG_MEAN] = filled(vec_md, e->eng, 0.0f);
            e->args[DNNL_ARG_VARIANCE] = filled(vec_md, e->eng, 1.0f);
            if (pd.workspace_desc().get_size() > 0)
                e->args[DNNL_ARG_WORKSPACE] = dnnl::memory(pd.workspace_desc(), e->eng);
        }
        say(why, why_len, note);
        return e.release();
    } catch (const std::exception &ex) {
        say(why, why_len, std::string("oneDNN: ") + ex.what());
        return nullptr;
    }
}

void nkb_onednn_run(nkb_ext *e)
{
    if (e->pre)
        e->pre_prim.execute(e->strm, e->pre_args);
    e->prim.execute(e->strm, e->args);
    e->strm.wait();
}

const void *nkb_onednn_dx(const nkb_ext *e)
{
    auto it = e->args.find(DNNL_ARG_DIFF_SRC);
    return it == e->args.end() ? nullptr : it->second.get_data_handle();
}

const void *nkb_onednn_y(const nkb_ext *e)
{
    return e->pre ? e->args.at(DNNL_ARG_DST).get_data_handle() : nullptr;
}

const void *nkb_onednn_sum(const nkb_ext *e)
{
    return e->pre && e->fuse == NKB_FUSE_ADDSUM ? e->pre_args.at(DNNL_ARG_DST).get_data_handle() : nullptr;
}

void nkb_onednn_destroy(nkb_ext *e) { delete e; }

} // extern "C"
