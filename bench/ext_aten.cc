// PyTorch ATen adapter for the benchmark suite: the functional calls a
// PyTorch user makes (at::batch_norm, at::instance_norm, at::group_norm,
// at::layer_norm), one thread, inference mode, output allocated by ATen as
// in eager PyTorch. An activation runs as the in-place op a model applies
// after the norm. ATen 1.13 has no RMSNorm: the Llama reference
// formulation x * rsqrt(mean(x^2) + eps) * w is what users run there.
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

#include <cstdio>
#include <exception>
#include <memory>
#include <string>

struct nkb_ext {
    nkb_case cs;
    at::Tensor x, w, b, rm, rv, y;
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

} // namespace

extern "C" {

const char *nkb_aten_version(void) { return TORCH_VERSION; }

nkb_ext *nkb_aten_create(const nkb_case *cs, const float *x, char *why, size_t why_len)
{
    try {
        at::set_num_threads(1);
        std::unique_ptr<nkb_ext> e(new nkb_ext);
        e->cs = *cs;
        c10::InferenceMode guard;
        int64_t n = cs->n, c = cs->c, s = cs->spatial;
        float *xp = const_cast<float *>(x);
        at::TensorOptions f32 = at::TensorOptions().dtype(at::kFloat);
        if (cs->op == NKB_OP_LN || cs->op == NKB_OP_RMS) {
            e->x = at::from_blob(xp, {n * s, c}, f32).clone();
        } else if (cs->layout == NK_CHANNELS_LAST) {
            // NHWC bytes seen as an N x C x S x 1 tensor in channels_last format
            e->x = at::from_blob(xp, {n, s, 1, c}, f32).permute({0, 3, 1, 2}).clone(
                at::MemoryFormat::ChannelsLast);
        } else {
            e->x = at::from_blob(xp, {n, c, s, 1}, f32).clone();
        }
        e->w = at::ones({c}, f32);
        e->b = at::zeros({c}, f32);
        e->rm = at::zeros({c}, f32);
        e->rv = at::ones({c}, f32);
        return e.release();
    } catch (const std::exception &ex) {
        say(why, why_len, std::string("ATen: ") + ex.what());
        return nullptr;
    }
}

void nkb_aten_run(nkb_ext *e)
{
    c10::InferenceMode guard;
    const nkb_case &cs = e->cs;
    switch (cs.op) {
    case NKB_OP_BN_TRAIN:
    case NKB_OP_BN_INFER:
        e->y = at::batch_norm(e->x, e->w, e->b, e->rm, e->rv, cs.op == NKB_OP_BN_TRAIN, 0.1, cs.eps,
                              false);
        break;
    case NKB_OP_IN:
        e->y = at::instance_norm(e->x, e->w, e->b, {}, {}, true, 0.1, cs.eps, false);
        break;
    case NKB_OP_GN:
        e->y = at::group_norm(e->x, cs.groups, e->w, e->b, cs.eps, false);
        break;
    case NKB_OP_LN:
        e->y = at::layer_norm(e->x, {cs.c}, e->w, e->b, cs.eps, false);
        break;
    case NKB_OP_RMS:
        e->y = e->x * at::rsqrt(e->x.pow(2).mean(-1, true) + cs.eps) * e->w;
        break;
    }
    activation(e->y, cs.act);
}

void nkb_aten_destroy(nkb_ext *e) { delete e; }

} // extern "C"
