// PyTorch ATen adapter for the benchmark suite: the functional calls a
// PyTorch user makes (at::batch_norm, at::instance_norm, at::group_norm,
// at::layer_norm), one thread, inference mode, output allocated by ATen as
// in eager PyTorch. An activation runs as the in-place op a model applies
// after the norm. ATen 1.13 has no RMSNorm: the Llama reference
// formulation w * (x * rsqrt(mean(x^2) + eps)), computed in fp32 and cast
// back to x's type (Hugging Face LlamaRMSNorm), is what users run there.
// Element types: x (and so y) in the case's dtype (at::kFloat,
// at::kBFloat16, at::kHalf); weight, bias and running statistics in its
// param_dtype where ATen takes that combination. create() runs the case
// once: where ATen refuses fp32 parameters with 16-bit input it retries with
// parameters of x's type (what a model converted with .to(dtype) holds) and
// says so in why; where it refuses the input type itself the case is n/a
// with ATen's own message.
// A fused case (residual add before LayerNorm / RMSNorm) is the composite a
// PyTorch model runs: at::add(x, skip), for NKB_FUSE_ADDSUM then .add_ of
// the skip_bias (in the parameters' type), and the normalization above of
// that sum, on the case's weight and bias. ATen 1.13 has no at::rms_norm,
// so the RMSNorm composite is the add then the reference formulation.
// Kept in one small translation unit: the ATen headers are slow to compile.
#include "ext.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <c10/core/InferenceMode.h>
#if __has_include(<torch/csrc/api/include/torch/version.h>)
#include <torch/csrc/api/include/torch/version.h>
#endif
#ifndef TORCH_VERSION
#define TORCH_VERSION "unknown"
#endif

#include <array>
#include <cstdio>
#include <stdexcept>
#include <exception>
#include <memory>
#include <string>

struct nkb_ext {
    nkb_case cs;
    at::Tensor x, w, b, rm, rv, w_x, y; /* w_x: RMSNorm's weight in x's type */
    at::Tensor dy, mean, rstd, xr, wr;  /* backward: saved statistics; InstanceNorm's
                                           x and weight as BatchNorm's (1, N * C, S) */
    at::Tensor skip, sum, sb;           /* fused: skip, x + skip (+ sb), sb the skip_bias */
    at::Tensor wf, bf, sbf;             /* fused: weight, bias, skip_bias as given (fp32) */
};

namespace {

void say(char *why, size_t len, const std::string &s)
{
    if (why && len)
        std::snprintf(why, len, "%s", s.c_str());
}

void activation(at::Tensor &y, nk_activation act)
{
    switch (act) {
    case NK_ACT_RELU: at::relu_(y); break;
    case NK_ACT_LEAKY_RELU: at::leaky_relu_(y, 0.01); break;
    case NK_ACT_SILU: at::silu_(y); break;
    case NK_ACT_GELU_ERF: y = at::gelu(y); break;
    case NK_ACT_GELU_TANH: y = at::gelu(y, "tanh"); break;
    default: break;
    }
}

at::ScalarType scalar_type_of(uint32_t dtype)
{
    return dtype == NK_DTYPE_BF16 ? at::kBFloat16 : dtype == NK_DTYPE_F16 ? at::kHalf : at::kFloat;
}

const char *dtype_name(uint32_t dtype)
{
    return dtype == NK_DTYPE_BF16 ? "bf16" : dtype == NK_DTYPE_F16 ? "f16" : "f32";
}

const char *op_name(nkb_op op)
{
    switch (op) {
    case NKB_OP_BN_TRAIN: return "batch_norm (training)";
    case NKB_OP_BN_INFER: return "batch_norm (eval)";
    case NKB_OP_IN: return "instance_norm";
    case NKB_OP_GN: return "group_norm";
    case NKB_OP_LN: return "layer_norm";
    case NKB_OP_RMS: return "RMSNorm reference";
    }
    return "?";
}

// The first line of an ATen error, without the C++ stack trace that follows
std::string first_line(const char *what)
{
    std::string s(what);
    size_t nl = s.find('\n');
    return nl == std::string::npos ? s : s.substr(0, nl);
}

void params(nkb_ext *e, at::ScalarType pt, at::ScalarType xt)
{
    at::TensorOptions o = at::TensorOptions().dtype(pt);
    int64_t c = e->cs.c;
    e->w = e->wf.defined() ? e->wf.to(pt) : at::ones({c}, o);
    e->b = e->bf.defined() ? e->bf.to(pt) : at::zeros({c}, o);
    e->rm = at::zeros({c}, o);
    e->rv = at::ones({c}, o);
    e->w_x = e->w.to(xt);
    if (e->sbf.defined())
        e->sb = e->sbf.to(pt);
}

void forward(nkb_ext *e)
{
    const nkb_case &cs = e->cs;
    at::Tensor x = e->x;
    if (cs.fuse != NKB_FUSE_NONE) {
        e->sum = at::add(e->x, e->skip);
        if (e->sb.defined())
            e->sum.add_(e->sb);
        x = e->sum;
    }
    switch (cs.op) {
    case NKB_OP_BN_TRAIN:
    case NKB_OP_BN_INFER:
        e->y = at::batch_norm(x, e->w, e->b, e->rm, e->rv, cs.op == NKB_OP_BN_TRAIN, 0.1, cs.eps,
                              false);
        break;
    case NKB_OP_IN:
        e->y = at::instance_norm(x, e->w, e->b, {}, {}, true, 0.1, cs.eps, false);
        break;
    case NKB_OP_GN:
        e->y = at::group_norm(x, cs.groups, e->w, e->b, cs.eps, false);
        break;
    case NKB_OP_LN:
        e->y = at::layer_norm(x, {cs.c}, e->w, e->b, cs.eps, false);
        break;
    case NKB_OP_RMS: {
        // LlamaRMSNorm: fp32 inside, the weight applied in x's type
        at::Tensor h = x.to(at::kFloat);
        h = h * at::rsqrt(h.pow(2).mean(-1, true) + cs.eps);
        e->y = e->w_x * h.to(x.scalar_type());
        break;
    }
    }
    activation(e->y, cs.act);
}

// Backward, as autograd calls it: the activation's backward on the forward
// output, then the native backward kernel with every gradient wanted.
// InstanceNorm runs BatchNorm's on (1, N * C, S) as at::instance_norm does.
void backward_setup(nkb_ext *e)
{
    const nkb_case &cs = e->cs;
    e->dy = at::randn_like(e->x);
    const int64_t n = cs.n, c = cs.c, s = cs.spatial;
    switch (cs.op) {
    case NKB_OP_BN_TRAIN: {
        auto r = at::native_batch_norm(e->x, e->w, e->b, e->rm, e->rv, true, 0.1, cs.eps);
        e->y = std::get<0>(r), e->mean = std::get<1>(r), e->rstd = std::get<2>(r);
        break;
    }
    case NKB_OP_BN_INFER:
        e->y = at::batch_norm(e->x, e->w, e->b, e->rm, e->rv, false, 0.1, cs.eps, false);
        break;
    case NKB_OP_IN: {
        if (cs.layout == NK_CHANNELS_LAST)
            throw std::runtime_error("channels-last InstanceNorm backward copies to NCHW in ATen");
        e->xr = e->x.reshape({1, n * c, s});
        e->wr = e->w.repeat({n});
        auto r = at::native_batch_norm(e->xr, e->wr, e->b.repeat({n}), {}, {}, true, 0.1, cs.eps);
        e->y = std::get<0>(r).view_as(e->x), e->mean = std::get<1>(r), e->rstd = std::get<2>(r);
        break;
    }
    case NKB_OP_GN: {
        auto r = at::native_group_norm(e->x, e->w, e->b, n, c, s, cs.groups, cs.eps);
        e->y = std::get<0>(r), e->mean = std::get<1>(r), e->rstd = std::get<2>(r);
        break;
    }
    case NKB_OP_LN: {
        auto r = at::native_layer_norm(e->x, {c}, e->w, e->b, cs.eps);
        e->y = std::get<0>(r), e->mean = std::get<1>(r), e->rstd = std::get<2>(r);
        break;
    }
    case NKB_OP_RMS:
        throw std::runtime_error("ATen 1.13 has no RMSNorm backward kernel");
    }
    if (cs.act != NK_ACT_NONE && cs.act != NK_ACT_RELU && cs.act != NK_ACT_LEAKY_RELU)
        throw std::runtime_error("the activation's backward needs its input");
    activation(e->y, cs.act);
}

void backward(nkb_ext *e)
{
    const nkb_case &cs = e->cs;
    at::Tensor g = e->dy;
    if (cs.act == NK_ACT_RELU)
        g = at::threshold_backward(g, e->y, 0);
    else if (cs.act == NK_ACT_LEAKY_RELU)
        g = at::leaky_relu_backward(g, e->y, 0.01, true);
    const std::array<bool, 3> all = {true, true, true};
    switch (cs.op) {
    case NKB_OP_BN_TRAIN:
        at::native_batch_norm_backward(g, e->x, e->w, e->rm, e->rv, e->mean, e->rstd, true, cs.eps,
                                       all);
        break;
    case NKB_OP_BN_INFER:
        at::native_batch_norm_backward(g, e->x, e->w, e->rm, e->rv, {}, {}, false, cs.eps, all);
        break;
    case NKB_OP_IN:
        at::native_batch_norm_backward(g.reshape(e->xr.sizes()), e->xr, e->wr, {}, {}, e->mean,
                                       e->rstd, true, cs.eps, all);
        break;
    case NKB_OP_GN:
        at::native_group_norm_backward(g, e->x, e->mean, e->rstd, e->w, cs.n, cs.c, cs.spatial,
                                       cs.groups, all);
        break;
    case NKB_OP_LN:
        at::native_layer_norm_backward(g, e->x, {cs.c}, e->mean, e->rstd, e->w, e->b, all);
        break;
    case NKB_OP_RMS:
        break;
    }
}

} // namespace

extern "C" {

const char *nkb_aten_version(void) { return TORCH_VERSION; }

nkb_ext *nkb_aten_create(const nkb_case *cs, const void *x, const nkb_fuse_inputs *fuse, char *why,
                         size_t why_len)
{
    try {
        at::set_num_threads(1);
        std::unique_ptr<nkb_ext> e(new nkb_ext);
        e->cs = *cs;
        c10::InferenceMode guard;
        int64_t n = cs->n, c = cs->c, s = cs->spatial;
        void *xp = const_cast<void *>(x);
        const at::ScalarType xt = scalar_type_of(cs->dtype);
        at::TensorOptions xo = at::TensorOptions().dtype(xt);
        if (cs->op == NKB_OP_LN || cs->op == NKB_OP_RMS) {
            e->x = at::from_blob(xp, {n * s, c}, xo).clone();
        } else if (cs->layout == NK_CHANNELS_LAST) {
            // NHWC bytes seen as an N x C x S x 1 tensor in channels_last format
            e->x = at::from_blob(xp, {n, s, 1, c}, xo).permute({0, 3, 1, 2}).clone(
                at::MemoryFormat::ChannelsLast);
        } else {
            e->x = at::from_blob(xp, {n, c, s, 1}, xo).clone();
        }
        if (cs->fuse != NKB_FUSE_NONE) {
            if (!fuse || cs->backward || (cs->op != NKB_OP_LN && cs->op != NKB_OP_RMS)) {
                say(why, why_len,
                    "fused case without skip and parameters, or not LayerNorm / RMSNorm forward");
                return nullptr;
            }
            at::TensorOptions fo = at::TensorOptions().dtype(at::kFloat);
            e->skip = at::from_blob(const_cast<void *>(fuse->skip), {n * s, c}, xo).clone();
            e->wf = at::from_blob(const_cast<float *>(fuse->weight), {c}, fo).clone();
            e->bf = at::from_blob(const_cast<float *>(fuse->bias), {c}, fo).clone();
            if (cs->fuse == NKB_FUSE_ADDSUM && fuse->skip_bias)
                e->sbf = at::from_blob(const_cast<float *>(fuse->skip_bias), {c}, fo).clone();
        }
        const at::ScalarType pt = scalar_type_of(cs->param_dtype);
        params(e.get(), pt, xt);
        if (cs->backward) {
            try {
                backward_setup(e.get());
                backward(e.get());
            } catch (const std::exception &ex) {
                say(why, why_len, std::string("ATen ") + TORCH_VERSION + " " + op_name(cs->op) +
                                      " backward: " + first_line(ex.what()));
                return nullptr;
            }
            return e.release();
        }
        // one run: ATen checks the types when it runs, not before
        try {
            forward(e.get());
        } catch (const std::exception &ex) {
            if (pt == xt) {
                say(why, why_len, std::string("ATen ") + TORCH_VERSION + ": no " + dtype_name(cs->dtype) + " " +
                                      op_name(cs->op) + " on the CPU: " + first_line(ex.what()));
                return nullptr;
            }
            // fp32 parameters refused with 16-bit input: those of a model
            // converted to x's type
            params(e.get(), xt, xt);
            try {
                forward(e.get());
            } catch (const std::exception &ex2) {
                say(why, why_len, std::string("ATen ") + TORCH_VERSION + ": no " + dtype_name(cs->dtype) + " " +
                                      op_name(cs->op) + " on the CPU: " + first_line(ex2.what()));
                return nullptr;
            }
            say(why, why_len, std::string("ATen ") + TORCH_VERSION + " " + op_name(cs->op) + ": weight/bias in " +
                                  dtype_name(cs->dtype) + " (with fp32: " + first_line(ex.what()) + ")");
        }
        return e.release();
    } catch (const std::exception &ex) {
        say(why, why_len, std::string("ATen: ") + first_line(ex.what()));
        return nullptr;
    }
}

void nkb_aten_run(nkb_ext *e)
{
    c10::InferenceMode guard;
    if (e->cs.backward)
        backward(e);
    else
        forward(e);
}

// The fused case's outputs of the last run (contiguous: ATen allocates them)
const void *nkb_aten_y(const nkb_ext *e)
{
    if (e->cs.fuse == NKB_FUSE_NONE || !e->y.defined() || !e->y.is_contiguous())
        return nullptr;
    return e->y.data_ptr();
}

const void *nkb_aten_sum(const nkb_ext *e)
{
    if (e->cs.fuse != NKB_FUSE_ADDSUM || !e->sum.defined() || !e->sum.is_contiguous())
        return nullptr;
    return e->sum.data_ptr();
}

void nkb_aten_destroy(nkb_ext *e) { delete e; }

} // extern "C"
