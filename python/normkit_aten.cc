// normkit as the CPU kernel of ATen's normalization operators (PyTorch 1.13).
//
// enable() registers kernels for aten::native_batch_norm,
// aten::native_layer_norm and aten::native_group_norm and for their
// backward operators aten::native_batch_norm_backward,
// native_layer_norm_backward and native_group_norm_backward at the CPU
// dispatch key through a torch::Library handle; disable() destroys the
// handle, which deregisters them and puts ATen's own kernels back in the
// dispatch table. Every path above the CPU key stays ATen's: F.batch_norm
// reaches native_batch_norm through _batch_norm_impl_index, F.instance_norm
// through batch_norm on a (1, N*C, ...) view, F.layer_norm and F.group_norm
// through their CompositeImplicit decompositions; autograd records the
// outputs of the forward kernels (save_mean / save_invstd, mean / rstd) and
// hands them to the backward operators (InstanceNorm's gradient is the one
// of native_batch_norm on that view).
//
// A call normkit does not cover (other dtypes, BatchNorm and GroupNorm input
// strides other than dense channels-first / channels-last, empty tensors,
// mismatched parameter or statistics types, a shape or value normkit
// refuses) goes to ATen's CPU implementation, at::native::batch_norm_cpu /
// layer_norm_cpu / native_group_norm and batch_norm_backward_cpu /
// layer_norm_backward_cpu / native_group_norm_backward, called directly and
// not through the dispatcher, so it never comes back here.
//
// Threads: normkit's nk_threadpool runs on ATen's intra-op pool
// (at::parallel_for), at at::get_num_threads() threads.
//
// The extension is a plain shared library loaded by torch.ops.load_library;
// it registers the operators normkit::enable(), normkit::disable(),
// normkit::is_enabled(), normkit::stats() and the steps of synchronized
// BatchNorm (normkit::bn_stats ... bn_backward_elemt, see below) for
// python/normkit/torch.py.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/ops/native_batch_norm_backward_native.h>
#include <ATen/ops/native_batch_norm_native.h>
#include <ATen/ops/native_group_norm_backward_native.h>
#include <ATen/ops/native_group_norm_native.h>
#include <ATen/ops/native_layer_norm_backward_native.h>
#include <ATen/ops/native_layer_norm_native.h>
#include <c10/core/SymIntArrayRef.h>
#include <c10/util/Exception.h>
#include <torch/library.h>

#include <normkit.h>

#include <array>
#include <atomic>
#include <memory>
#include <mutex>
#include <string>
#include <tuple>
#include <vector>

namespace {

using Tensors3 = std::tuple<at::Tensor, at::Tensor, at::Tensor>;
using Mask3 = std::array<bool, 3>;

// Calls served by normkit and calls passed to ATen, per operator
enum Op {
    BATCH_NORM,
    LAYER_NORM,
    GROUP_NORM,
    BATCH_NORM_BWD,
    LAYER_NORM_BWD,
    GROUP_NORM_BWD,
    NUM_OPS
};
std::atomic<int64_t> g_served[NUM_OPS];
std::atomic<int64_t> g_fallback[NUM_OPS];

// ---- nk_threadpool on ATen's intra-op pool ---------------------------------

size_t pool_num_threads(void *)
{
    return at::in_parallel_region() ? 1 : static_cast<size_t>(at::get_num_threads());
}

void pool_parallel_for(void *, void (*task)(void *arg, size_t i), void *arg, size_t n)
{
    at::parallel_for(0, static_cast<int64_t>(n), 1, [&](int64_t begin, int64_t end) {
        for (int64_t i = begin; i < end; i++)
            task(arg, static_cast<size_t>(i));
    });
}

const nk_threadpool g_pool = {nullptr, pool_num_threads, pool_parallel_for};

nk_context make_context()
{
    nk_context ctx = NK_CONTEXT_INIT;
    ctx.pool = &g_pool;
    return ctx;
}

// The workspace with which the backward of layer on d takes its parameter
// gradients from the dx pass, set in ctx; the returned tensor holds it for
// the call (undefined when the call uses none or its size is unknown).
at::Tensor backward_workspace(nk_context *ctx, uint32_t layer, const nk_tensor_desc &d,
                              int64_t groups, const at::Tensor &like)
{
    size_t bytes = 0;
    if (nk_backward_workspace_size(layer, &d, groups, &bytes) != NK_OK || !bytes)
        return at::Tensor();
    at::Tensor ws = at::empty({static_cast<int64_t>(bytes)}, like.options().dtype(at::kByte));
    ctx->workspace = ws.data_ptr();
    ctx->workspace_size = bytes;
    return ws;
}

// ---- what normkit takes -----------------------------------------------------

bool dense_dtype(const at::Tensor &t)
{
    return t.scalar_type() == at::kFloat || t.scalar_type() == at::kBFloat16;
}

uint32_t nk_dtype(at::ScalarType t) { return t == at::kBFloat16 ? NK_DTYPE_BF16 : NK_DTYPE_F32; }

bool plain_cpu(const at::Tensor &t)
{
    return t.device().is_cpu() && t.layout() == at::kStrided && !t.is_quantized() &&
           !t.is_neg() && !t.is_conj() && !t.is_nested();
}

// A per-channel vector: undefined, or 1-D dense with c values
bool channel_vector(const at::Tensor &t, int64_t c)
{
    return !t.defined() ||
           (plain_cpu(t) && t.dim() == 1 && t.size(0) == c && t.is_contiguous() && dense_dtype(t));
}

// The memory format of a dense (N, C, *) tensor as normkit sees it: its
// layout, or false when the tensor is neither dense channels-first nor dense
// channels-last. y is allocated in the same format (ATen's
// empty_like(input, input.suggest_memory_format())).
bool nc_layout(const at::Tensor &x, at::MemoryFormat *fmt, uint32_t *layout)
{
    at::MemoryFormat f = x.suggest_memory_format();
    if (!x.is_contiguous(f))
        return false;
    *fmt = f;
    *layout = (f == at::MemoryFormat::ChannelsLast || f == at::MemoryFormat::ChannelsLast3d)
                  ? NK_CHANNELS_LAST
                  : NK_CHANNELS_FIRST;
    return true;
}

// The descriptor of a dense (N, C, *) fp32 / bf16 tensor x: layout (see
// nc_layout), dtype, n, c and spatial (the product of the extents after C,
// so an empty batch has its own spatial size); param_dtype is left at fp32.
// False when x's memory is neither dense channels-first nor channels-last.
bool nc_desc(const at::Tensor &x, at::MemoryFormat *fmt, nk_tensor_desc *d)
{
    if (!nc_layout(x, fmt, &d->layout))
        return false;
    d->dtype = nk_dtype(x.scalar_type());
    d->n = x.size(0);
    d->c = x.size(1);
    d->spatial = c10::multiply_integers(x.sizes().slice(2));
    return true;
}

const at::Tensor &value(const c10::optional<at::Tensor> &t)
{
    static const at::Tensor undefined;
    return t.has_value() ? *t : undefined;
}

// The single element type of the defined tensors among ts; false when they
// disagree. *none is set when none is defined.
bool common_type(std::initializer_list<const at::Tensor *> ts, at::ScalarType *type, bool *none)
{
    *none = true;
    for (const at::Tensor *t : ts) {
        if (!t->defined())
            continue;
        if (*none) {
            *type = t->scalar_type();
            *none = false;
        } else if (t->scalar_type() != *type) {
            return false;
        }
    }
    return true;
}

void *opt_ptr(const at::Tensor &t) { return t.defined() ? t.data_ptr() : nullptr; }

// The incoming gradient of an output of x's sizes and element type, dense in
// x's memory format fmt as normkit reads it: dy itself when it is, else a
// copy (autograd hands on expanded and strided gradients, e.g. of a sum).
// False when dy is not such a gradient.
bool grad_like(const at::Tensor &dy, const at::Tensor &x, at::MemoryFormat fmt, at::Tensor *out)
{
    if (!plain_cpu(dy) || dy.scalar_type() != x.scalar_type() || dy.sizes() != x.sizes())
        return false;
    *out = dy.contiguous(fmt);
    return true;
}

// Saved statistics as normkit takes them: count fp32 values in a row, from a
// tensor t of count values of element type type (a copy unless t is fp32
// and contiguous). False for anything else.
bool stat_f32(const at::Tensor &t, int64_t count, at::ScalarType type, at::Tensor *out)
{
    if (!t.defined() || !plain_cpu(t) || t.scalar_type() != type || t.numel() != count)
        return false;
    *out = t.to(at::kFloat).contiguous().reshape({count});
    return true;
}

// ---- aten::native_batch_norm ------------------------------------------------

// The descriptor of a BatchNorm input x (non-empty, dense (N, C, *)) and
// *pt, the element type of its per-channel tensors ps (weight, bias, running
// and saved statistics; undefined ones are absent, defined ones must be C
// contiguous values). ATen's rules: fp32 input with fp32 parameters; bf16
// input with them all fp32 (mixed) or all bf16. False when x or ps break them.
bool bn_desc(const at::Tensor &x, std::initializer_list<const at::Tensor *> ps,
             at::MemoryFormat *fmt, nk_tensor_desc *d, at::ScalarType *pt)
{
    if (!plain_cpu(x) || !dense_dtype(x) || x.dim() < 2 || x.numel() == 0)
        return false;
    for (const at::Tensor *p : ps)
        if (!channel_vector(*p, x.size(1)))
            return false;
    bool none;
    if (!common_type(ps, pt, &none))
        return false;
    if (none)
        *pt = x.scalar_type();
    if (x.scalar_type() == at::kFloat && *pt != at::kFloat)
        return false;
    if (!nc_desc(x, fmt, d))
        return false;
    d->param_dtype = nk_dtype(*pt);
    return true;
}

// The normkit path; returns false (having written nothing) to leave the call
// to ATen.
bool batch_norm_nk(const at::Tensor &x, const at::Tensor &w, const at::Tensor &b,
                   const at::Tensor &rm, const at::Tensor &rv, bool training, double momentum,
                   double eps, Tensors3 *out)
{
    if (rm.defined() != rv.defined() || (!training && !rm.defined()))
        return false;
    at::MemoryFormat fmt;
    nk_tensor_desc d = NK_TENSOR_DESC_INIT;
    at::ScalarType pt;
    if (!bn_desc(x, {&w, &b, &rm, &rv}, &fmt, &d, &pt))
        return false;
    const int64_t c = d.c;
    const bool mixed = x.scalar_type() != pt;
    at::Tensor y = at::empty_like(x, fmt);
    // saved statistics: fp32, or x's type when parameters are of x's type
    const at::TensorOptions fo = x.options().dtype(at::kFloat);
    const at::ScalarType save_type = mixed ? at::kFloat : x.scalar_type();
    // running statistics in place when fp32, through fp32 copies when bf16
    at::Tensor rm32, rv32;
    if (rm.defined()) {
        rm32 = rm.scalar_type() == at::kFloat ? rm : rm.to(at::kFloat);
        rv32 = rv.scalar_type() == at::kFloat ? rv : rv.to(at::kFloat);
    }
    nk_context ctx = make_context();
    const void *wp = opt_ptr(w);
    const void *bp = opt_ptr(b);
    nk_status st;
    at::Tensor save_mean, save_invstd;
    if (training) {
        save_mean = at::empty({c}, fo);
        save_invstd = at::empty({c}, fo);
        nk_running_stats rs = {};
        rs.momentum = momentum;
        rs.unbiased = 1;
        if (rm.defined()) {
            rs.mean = rm32.data_ptr<float>();
            rs.var = rv32.data_ptr<float>();
        }
        st = nk_batch_norm_train_ex(&ctx, &d, x.data_ptr(), y.data_ptr(), wp, bp, eps,
                                    rm.defined() ? &rs : nullptr, save_mean.data_ptr<float>(),
                                    save_invstd.data_ptr<float>());
        if (st != NK_OK)
            return false;
        if (rm.defined() && rm.scalar_type() != at::kFloat) {
            rm.copy_(rm32);
            rv.copy_(rv32);
        }
        if (save_type != at::kFloat) {
            save_mean = save_mean.to(save_type);
            save_invstd = save_invstd.to(save_type);
        }
    } else {
        st = nk_batch_norm_infer_ex(&ctx, &d, x.data_ptr(), y.data_ptr(), wp, bp,
                                    rm32.data_ptr<float>(), rv32.data_ptr<float>(), eps);
        if (st != NK_OK)
            return false;
        // ATen returns empty statistics in inference
        save_mean = at::empty({0}, x.options().dtype(save_type));
        save_invstd = at::empty({0}, x.options().dtype(save_type));
    }
    *out = Tensors3(y, save_mean, save_invstd);
    return true;
}

Tensors3 native_batch_norm(const at::Tensor &input, const c10::optional<at::Tensor> &weight,
                           const c10::optional<at::Tensor> &bias,
                           const c10::optional<at::Tensor> &running_mean,
                           const c10::optional<at::Tensor> &running_var, bool training,
                           double momentum, double eps)
{
    Tensors3 out;
    if (batch_norm_nk(input, value(weight), value(bias), value(running_mean), value(running_var),
                      training, momentum, eps, &out)) {
        g_served[BATCH_NORM]++;
        return out;
    }
    g_fallback[BATCH_NORM]++;
    return at::native::batch_norm_cpu(input, weight, bias, running_mean, running_var, training,
                                      momentum, eps);
}

// ---- aten::native_batch_norm_backward ---------------------------------------

// Training (train): the batch statistics save_mean / save_invstd; eval: the
// running statistics and eps. dx in x's memory format, dweight / dbias C
// values of the parameter type (fp32 for a bf16 input with fp32 parameters),
// each only where mask asks for it (undefined otherwise), as ATen.
bool batch_norm_backward_nk(const at::Tensor &grad_out, const at::Tensor &x, const at::Tensor &w,
                            const at::Tensor &rm, const at::Tensor &rv, const at::Tensor &sm,
                            const at::Tensor &si, bool train, double eps, Mask3 mask,
                            Tensors3 *out)
{
    static const at::Tensor undefined;
    // eval mode: the saved statistics are empty and unused
    const at::Tensor &sm_used = train ? sm : undefined, &si_used = train ? si : undefined;
    // training: mean and invstd; eval: mean and variance
    const at::Tensor &s0 = train ? sm : rm, &s1 = train ? si : rv;
    at::MemoryFormat fmt;
    nk_tensor_desc d = NK_TENSOR_DESC_INIT;
    at::ScalarType pt;
    if (!s0.defined() || !s1.defined() ||
        !bn_desc(x, {&w, &rm, &rv, &sm_used, &si_used}, &fmt, &d, &pt))
        return false;
    const int64_t c = d.c;
    at::Tensor s0f, s1f, dy;
    if (!stat_f32(s0, c, pt, &s0f) || !stat_f32(s1, c, pt, &s1f) ||
        !grad_like(grad_out, x, fmt, &dy))
        return false;
    const at::TensorOptions po = x.options().dtype(pt);
    at::Tensor dx = mask[0] ? at::empty_like(x, fmt) : at::Tensor();
    at::Tensor dw = mask[1] ? at::empty({c}, po) : at::Tensor();
    at::Tensor db = mask[2] ? at::empty({c}, po) : at::Tensor();
    nk_context ctx = make_context();
    nk_status st =
        train ? nk_batch_norm_backward_ex(&ctx, &d, x.data_ptr(), nullptr, dy.data_ptr(),
                                          opt_ptr(dx), opt_ptr(w), s0f.data_ptr<float>(),
                                          s1f.data_ptr<float>(), opt_ptr(dw), opt_ptr(db))
              : nk_batch_norm_infer_backward_ex(&ctx, &d, x.data_ptr(), nullptr, dy.data_ptr(),
                                                opt_ptr(dx), opt_ptr(w), s0f.data_ptr<float>(),
                                                s1f.data_ptr<float>(), eps, opt_ptr(dw),
                                                opt_ptr(db));
    if (st != NK_OK)
        return false;
    *out = Tensors3(dx, dw, db);
    return true;
}

Tensors3 native_batch_norm_backward(const at::Tensor &grad_out, const at::Tensor &input,
                                    const c10::optional<at::Tensor> &weight,
                                    const c10::optional<at::Tensor> &running_mean,
                                    const c10::optional<at::Tensor> &running_var,
                                    const c10::optional<at::Tensor> &save_mean,
                                    const c10::optional<at::Tensor> &save_invstd, bool train,
                                    double eps, Mask3 mask)
{
    Tensors3 out;
    if (batch_norm_backward_nk(grad_out, input, value(weight), value(running_mean),
                               value(running_var), value(save_mean), value(save_invstd), train,
                               eps, mask, &out)) {
        g_served[BATCH_NORM_BWD]++;
        return out;
    }
    g_fallback[BATCH_NORM_BWD]++;
    return at::native::batch_norm_backward_cpu(grad_out, input, weight, running_mean, running_var,
                                               save_mean, save_invstd, train, eps, mask);
}

// ---- aten::native_layer_norm ------------------------------------------------

// *x, the contiguous input (input itself or a copy of a strided one, as
// ATen normalizes), and the (rows, cols) descriptor of a LayerNorm over its
// trailing normalized_shape. False when input is empty or not fp32 / bf16,
// or weight and bias (either undefined) are not contiguous tensors of
// input's type shaped as normalized_shape (ATen 1.13's CPU rules).
bool ln_desc(const at::Tensor &input, at::IntArrayRef normalized_shape, const at::Tensor &w,
             const at::Tensor &b, at::Tensor *x, nk_tensor_desc *d)
{
    const int64_t nd = static_cast<int64_t>(normalized_shape.size());
    if (!plain_cpu(input) || !dense_dtype(input) || input.numel() == 0 || nd < 1 ||
        input.dim() < nd || input.sizes().slice(input.dim() - nd) != normalized_shape)
        return false;
    for (const at::Tensor *p : {&w, &b}) {
        if (p->defined() && (!plain_cpu(*p) || p->scalar_type() != input.scalar_type() ||
                             p->sizes() != normalized_shape || !p->is_contiguous()))
            return false;
    }
    *x = input.contiguous();
    const int64_t cols = c10::multiply_integers(normalized_shape);
    d->dtype = d->param_dtype = nk_dtype(input.scalar_type());
    d->layout = NK_CHANNELS_LAST;
    d->n = input.numel() / cols;
    d->c = cols;
    d->spatial = 1;
    return true;
}

bool layer_norm_nk(const at::Tensor &input, at::IntArrayRef normalized_shape,
                   const at::Tensor &w, const at::Tensor &b, double eps, Tensors3 *out)
{
    at::Tensor x;
    nk_tensor_desc d = NK_TENSOR_DESC_INIT;
    if (!ln_desc(input, normalized_shape, w, b, &x, &d))
        return false;
    const int64_t rows = d.n;
    at::Tensor y = at::empty_like(x, at::MemoryFormat::Contiguous);
    at::Tensor mean = at::empty({rows}, x.options().dtype(at::kFloat));
    at::Tensor rstd = at::empty({rows}, x.options().dtype(at::kFloat));
    nk_context ctx = make_context();
    nk_status st = nk_layer_norm_ex(&ctx, &d, x.data_ptr(), y.data_ptr(), opt_ptr(w), opt_ptr(b),
                                    eps, mean.data_ptr<float>(), rstd.data_ptr<float>());
    if (st != NK_OK)
        return false;
    // mean / rstd: x's type, shaped x.sizes()[:axis] + [1] * len(normalized_shape)
    const int64_t axis = x.dim() - static_cast<int64_t>(normalized_shape.size());
    std::vector<int64_t> stat_shape(x.sizes().begin(), x.sizes().begin() + axis);
    stat_shape.resize(x.dim(), 1);
    mean = mean.to(x.scalar_type()).view(stat_shape);
    rstd = rstd.to(x.scalar_type()).view(stat_shape);
    *out = Tensors3(y, mean, rstd);
    return true;
}

Tensors3 native_layer_norm(const at::Tensor &input, c10::SymIntArrayRef normalized_shape,
                           const c10::optional<at::Tensor> &weight,
                           const c10::optional<at::Tensor> &bias, double eps)
{
    at::IntArrayRef shape = c10::asIntArrayRefSlow(normalized_shape);
    Tensors3 out;
    if (layer_norm_nk(input, shape, value(weight), value(bias), eps, &out)) {
        g_served[LAYER_NORM]++;
        return out;
    }
    g_fallback[LAYER_NORM]++;
    return at::native::layer_norm_cpu(input, shape, weight, bias, eps);
}

// ---- aten::native_layer_norm_backward ----------------------------------------

// mean / rstd: one per row, of x's type (as the forward returns them); dx
// contiguous, dweight / dbias shaped as weight / bias, as ATen. ATen
// requires weight for dweight and bias for dbias.
bool layer_norm_backward_nk(const at::Tensor &grad_out, const at::Tensor &input,
                            at::IntArrayRef normalized_shape, const at::Tensor &mean,
                            const at::Tensor &rstd, const at::Tensor &w, const at::Tensor &b,
                            Mask3 mask, Tensors3 *out)
{
    at::Tensor x, dy, mean32, rstd32;
    nk_tensor_desc d = NK_TENSOR_DESC_INIT;
    if ((mask[1] && !w.defined()) || (mask[2] && !b.defined()) ||
        !ln_desc(input, normalized_shape, w, b, &x, &d) ||
        !stat_f32(mean, d.n, x.scalar_type(), &mean32) ||
        !stat_f32(rstd, d.n, x.scalar_type(), &rstd32) ||
        !grad_like(grad_out, x, at::MemoryFormat::Contiguous, &dy))
        return false;
    at::Tensor dx = mask[0] ? at::empty_like(x, at::MemoryFormat::Contiguous) : at::Tensor();
    at::Tensor dw = mask[1] ? at::empty_like(w, at::MemoryFormat::Contiguous) : at::Tensor();
    at::Tensor db = mask[2] ? at::empty_like(b, at::MemoryFormat::Contiguous) : at::Tensor();
    nk_context ctx = make_context();
    const at::Tensor ws = backward_workspace(&ctx, NK_LAYER_LAYER_NORM, d, 1, x);
    if (nk_layer_norm_backward_ex(&ctx, &d, x.data_ptr(), nullptr, dy.data_ptr(), opt_ptr(dx),
                                  opt_ptr(w), mean32.data_ptr<float>(), rstd32.data_ptr<float>(),
                                  opt_ptr(dw), opt_ptr(db)) != NK_OK)
        return false;
    *out = Tensors3(dx, dw, db);
    return true;
}

Tensors3 native_layer_norm_backward(const at::Tensor &grad_out, const at::Tensor &input,
                                    c10::SymIntArrayRef normalized_shape, const at::Tensor &mean,
                                    const at::Tensor &rstd, const c10::optional<at::Tensor> &weight,
                                    const c10::optional<at::Tensor> &bias, Mask3 mask)
{
    at::IntArrayRef shape = c10::asIntArrayRefSlow(normalized_shape);
    Tensors3 out;
    if (layer_norm_backward_nk(grad_out, input, shape, mean, rstd, value(weight), value(bias),
                               mask, &out)) {
        g_served[LAYER_NORM_BWD]++;
        return out;
    }
    g_fallback[LAYER_NORM_BWD]++;
    return at::native::layer_norm_backward_cpu(grad_out, input, shape, mean, rstd, weight, bias,
                                               mask);
}

// ---- aten::native_group_norm ------------------------------------------------

// The descriptor of a GroupNorm input x (non-empty, fp32 / bf16, dense
// (N, C, *) of the given extents, groups dividing C) with weight and bias
// (either undefined) C values of x's type (ATen 1.13's CPU rules).
bool gn_desc(const at::Tensor &x, const at::Tensor &w, const at::Tensor &b, int64_t n, int64_t c,
             int64_t hxw, int64_t groups, at::MemoryFormat *fmt, nk_tensor_desc *d)
{
    if (!plain_cpu(x) || !dense_dtype(x) || x.numel() == 0 || x.dim() < 2 || groups < 1 ||
        c % groups != 0 || x.size(0) != n || x.size(1) != c || n * c * hxw != x.numel())
        return false;
    for (const at::Tensor *p : {&w, &b}) {
        if (p->defined() && (!channel_vector(*p, c) || p->scalar_type() != x.scalar_type()))
            return false;
    }
    if (!nc_layout(x, fmt, &d->layout))
        return false;
    d->dtype = d->param_dtype = nk_dtype(x.scalar_type());
    d->n = n;
    d->c = c;
    d->spatial = hxw;
    return true;
}

bool group_norm_nk(const at::Tensor &x, const at::Tensor &w, const at::Tensor &b, int64_t n,
                   int64_t c, int64_t hxw, int64_t groups, double eps, Tensors3 *out)
{
    at::MemoryFormat fmt;
    nk_tensor_desc d = NK_TENSOR_DESC_INIT;
    if (!gn_desc(x, w, b, n, c, hxw, groups, &fmt, &d))
        return false;
    at::Tensor y = at::empty_like(x, fmt);
    at::Tensor mean = at::empty({n, groups}, x.options().dtype(at::kFloat));
    at::Tensor rstd = at::empty({n, groups}, x.options().dtype(at::kFloat));
    nk_context ctx = make_context();
    nk_status st = nk_group_norm_ex(&ctx, &d, x.data_ptr(), y.data_ptr(), groups, opt_ptr(w),
                                    opt_ptr(b), eps, mean.data_ptr<float>(),
                                    rstd.data_ptr<float>());
    if (st != NK_OK)
        return false;
    *out = Tensors3(y, mean.to(x.scalar_type()), rstd.to(x.scalar_type()));
    return true;
}

Tensors3 native_group_norm(const at::Tensor &input, const c10::optional<at::Tensor> &weight,
                           const c10::optional<at::Tensor> &bias, c10::SymInt n, c10::SymInt c,
                           c10::SymInt hxw, int64_t groups, double eps)
{
    const int64_t n_ = n.expect_int(), c_ = c.expect_int(), hxw_ = hxw.expect_int();
    Tensors3 out;
    if (group_norm_nk(input, value(weight), value(bias), n_, c_, hxw_, groups, eps, &out)) {
        g_served[GROUP_NORM]++;
        return out;
    }
    g_fallback[GROUP_NORM]++;
    return at::native::native_group_norm(input, weight, bias, n_, c_, hxw_, groups, eps);
}

// ---- aten::native_group_norm_backward ----------------------------------------

// ATen 1.13's autograd hands this operator contiguous (channels-first)
// grad_out and input, and its CPU kernel reads both as such whatever their
// strides: normkit serves contiguous tensors and leaves any other to ATen,
// which keeps its results. mean / rstd: (N, groups) of x's type; dx
// contiguous, dweight and dbias shaped and typed as weight (which ATen
// requires for either).
bool group_norm_backward_nk(const at::Tensor &grad_out, const at::Tensor &x,
                            const at::Tensor &mean, const at::Tensor &rstd, const at::Tensor &w,
                            int64_t n, int64_t c, int64_t hxw, int64_t groups, Mask3 mask,
                            Tensors3 *out)
{
    static const at::Tensor undefined;
    at::MemoryFormat fmt;
    nk_tensor_desc d = NK_TENSOR_DESC_INIT;
    at::Tensor dy, mean32, rstd32;
    if (((mask[1] || mask[2]) && !w.defined()) || !x.is_contiguous() ||
        !grad_out.is_contiguous() ||
        !gn_desc(x, w, undefined, n, c, hxw, groups, &fmt, &d) ||
        !grad_like(grad_out, x, at::MemoryFormat::Contiguous, &dy) ||
        !stat_f32(mean, n * groups, x.scalar_type(), &mean32) ||
        !stat_f32(rstd, n * groups, x.scalar_type(), &rstd32))
        return false;
    // dense in both formats when C or the spatial size is 1: the same addresses
    d.layout = NK_CHANNELS_FIRST;
    at::Tensor dx = mask[0] ? at::empty_like(x, at::MemoryFormat::Contiguous) : at::Tensor();
    at::Tensor dw = mask[1] ? at::empty_like(w, at::MemoryFormat::Contiguous) : at::Tensor();
    at::Tensor db = mask[2] ? at::empty_like(w, at::MemoryFormat::Contiguous) : at::Tensor();
    nk_context ctx = make_context();
    const at::Tensor ws = backward_workspace(&ctx, NK_LAYER_GROUP_NORM, d, groups, x);
    if (nk_group_norm_backward_ex(&ctx, &d, x.data_ptr(), nullptr, dy.data_ptr(), opt_ptr(dx),
                                  groups, opt_ptr(w), mean32.data_ptr<float>(),
                                  rstd32.data_ptr<float>(), opt_ptr(dw), opt_ptr(db)) != NK_OK)
        return false;
    *out = Tensors3(dx, dw, db);
    return true;
}

Tensors3 native_group_norm_backward(const at::Tensor &grad_out, const at::Tensor &input,
                                    const at::Tensor &mean, const at::Tensor &rstd,
                                    const c10::optional<at::Tensor> &weight, c10::SymInt n,
                                    c10::SymInt c, c10::SymInt hxw, int64_t groups, Mask3 mask)
{
    const int64_t n_ = n.expect_int(), c_ = c.expect_int(), hxw_ = hxw.expect_int();
    Tensors3 out;
    if (group_norm_backward_nk(grad_out, input, mean, rstd, value(weight), n_, c_, hxw_, groups,
                               mask, &out)) {
        g_served[GROUP_NORM_BWD]++;
        return out;
    }
    g_fallback[GROUP_NORM_BWD]++;
    return at::native::native_group_norm_backward(grad_out, input, mean, rstd, weight, n_, c_,
                                                  hxw_, groups, mask);
}

// ---- synchronized BatchNorm ------------------------------------------------
//
// The per-rank steps of normkit.torch.SyncBatchNorm, which runs the
// collectives between them (torch.distributed):
//   bn_stats            x -> (C, 3) float64 moments (count, mean, m2) of this rank
//   bn_merge_moments    the all-gathered (world, C, 3) -> (C, 3), merged in rank order
//   bn_apply_moments    normalizes x with the merged moments and updates the
//                       running statistics -> (y, save_mean, save_invstd)
//   bn_backward_reduce  this rank's sum_dy, sum_dy_xmu (float64) and its own
//                       dweight, dbias
//   bn_backward_elemt   dx from the all-reduced sums and the global count
// x: fp32 or bf16, at least 2-D, dense channels-first or channels-last
// (anything else is normalized from a contiguous copy, as PyTorch's
// SyncBatchNorm does); weight and bias fp32, or bf16 with a bf16 x; running
// statistics fp32 in place (other types through fp32 copies).

static_assert(sizeof(nk_moments) == 3 * sizeof(double), "nk_moments is (count, mean, m2)");

void check_nk(nk_status st, const char *op)
{
    TORCH_CHECK(st == NK_OK, "normkit::", op, ": ", nk_last_error());
}

struct SyncInput {
    at::Tensor x; // dense in fmt
    at::MemoryFormat fmt;
    nk_tensor_desc d;
};

SyncInput sync_input(const at::Tensor &input, const char *op)
{
    TORCH_CHECK(plain_cpu(input) && dense_dtype(input), "normkit::", op,
                ": expected a CPU float32 or bfloat16 tensor, got ", input.toString());
    TORCH_CHECK(input.dim() >= 2 && input.size(1) >= 1, "normkit::", op,
                ": expected an (N, C, *) input with C >= 1, got sizes ", input.sizes());
    SyncInput in = {input, at::MemoryFormat::Contiguous, NK_TENSOR_DESC_INIT};
    if (!nc_desc(in.x, &in.fmt, &in.d)) {
        in.x = input.contiguous();
        const bool dense = nc_desc(in.x, &in.fmt, &in.d);
        TORCH_INTERNAL_ASSERT(dense);
    }
    return in;
}

// A tensor of x's sizes in x's memory format and element type (dy)
at::Tensor like_input(const at::Tensor &t, const SyncInput &in, const char *op, const char *name)
{
    TORCH_CHECK(plain_cpu(t) && t.sizes() == in.x.sizes(), "normkit::", op, ": ", name,
                " must be a CPU tensor of sizes ", in.x.sizes(), ", got ", t.sizes());
    return t.to(in.x.scalar_type()).contiguous(in.fmt);
}

// A per-channel float32 or float64 vector of c values (statistics, sums)
at::Tensor channel_stat(const at::Tensor &t, int64_t c, at::ScalarType type, const char *op,
                        const char *name)
{
    TORCH_CHECK(t.defined() && plain_cpu(t) && t.dim() == 1 && t.size(0) == c &&
                    t.scalar_type() == type,
                "normkit::", op, ": ", name, " must be a CPU ", c10::toString(type),
                " vector of ", c, " values");
    return t.contiguous();
}

// weight and bias (b may be null; undefined tensors are absent) and the
// descriptor's param_dtype: fp32, or bf16 when x and every defined parameter
// are bf16
void sync_params(SyncInput *in, at::Tensor *w, at::Tensor *b, const char *op)
{
    static const at::Tensor undefined;
    for (at::Tensor *p : {w, b})
        if (p && p->defined())
            *p = p->contiguous();
    const at::Tensor &bv = b ? *b : undefined;
    bool none;
    at::ScalarType pt = at::kFloat;
    TORCH_CHECK(common_type({w, &bv}, &pt, &none), "normkit::", op,
                ": weight and bias must have one type");
    if (none)
        pt = at::kFloat;
    TORCH_CHECK(channel_vector(*w, in->d.c) && channel_vector(bv, in->d.c), "normkit::", op,
                ": weight and bias must be CPU float32 or bfloat16 vectors of ", in->d.c,
                " values");
    TORCH_CHECK(pt == at::kFloat || in->x.scalar_type() == pt, "normkit::", op,
                ": bfloat16 weight and bias need a bfloat16 input");
    in->d.param_dtype = nk_dtype(pt);
}

at::Tensor bn_stats(const at::Tensor &input)
{
    SyncInput in = sync_input(input, "bn_stats");
    at::Tensor m = at::empty({in.d.c, 3}, input.options().dtype(at::kDouble));
    nk_context ctx = make_context();
    check_nk(nk_batch_norm_stats_ex(&ctx, &in.d, in.x.data_ptr(),
                                    reinterpret_cast<nk_moments *>(m.data_ptr<double>())),
             "bn_stats");
    return m;
}

// gathered[r] holds rank r's moments; the result is
// ((gathered[0] (+) gathered[1]) (+) gathered[2]) ... per channel, so every
// rank that merges the same gathered tensor gets the same bits
at::Tensor bn_merge_moments(const at::Tensor &gathered)
{
    TORCH_CHECK(plain_cpu(gathered) && gathered.scalar_type() == at::kDouble &&
                    gathered.dim() == 3 && gathered.size(2) == 3,
                "normkit::bn_merge_moments: expected a CPU float64 (world, C, 3) tensor, got ",
                gathered.toString(), " of sizes ", gathered.sizes());
    const at::Tensor g = gathered.contiguous();
    const int64_t world = g.size(0), c = g.size(1);
    at::Tensor out = at::zeros({c, 3}, g.options());
    auto *acc = reinterpret_cast<nk_moments *>(out.data_ptr<double>());
    const auto *parts = reinterpret_cast<const nk_moments *>(g.data_ptr<double>());
    for (int64_t r = 0; r < world; r++)
        for (int64_t i = 0; i < c; i++)
            nk_moments_merge(&acc[i], &parts[r * c + i]);
    return out;
}

Tensors3 bn_apply_moments(const at::Tensor &input, const at::Tensor &moments,
                          const c10::optional<at::Tensor> &weight,
                          const c10::optional<at::Tensor> &bias,
                          const c10::optional<at::Tensor> &running_mean,
                          const c10::optional<at::Tensor> &running_var, double momentum, double eps)
{
    static const char op[] = "bn_apply_moments";
    SyncInput in = sync_input(input, op);
    const int64_t c = in.d.c;
    TORCH_CHECK(plain_cpu(moments) && moments.scalar_type() == at::kDouble &&
                    moments.dim() == 2 && moments.size(0) == c && moments.size(1) == 3,
                "normkit::", op, ": moments must be a CPU float64 (", c, ", 3) tensor");
    const at::Tensor mo = moments.contiguous();
    at::Tensor w = value(weight), b = value(bias);
    sync_params(&in, &w, &b, op);
    const at::Tensor &rm = value(running_mean), &rv = value(running_var);
    TORCH_CHECK(rm.defined() == rv.defined(), "normkit::", op,
                ": running_mean and running_var go together");
    TORCH_CHECK(channel_vector(rm, c) && channel_vector(rv, c), "normkit::", op,
                ": running statistics must be CPU float32 or bfloat16 vectors of ", c, " values");
    at::Tensor rm32, rv32;
    nk_running_stats rs = {};
    if (rm.defined()) {
        rm32 = rm.scalar_type() == at::kFloat ? rm : rm.to(at::kFloat);
        rv32 = rv.scalar_type() == at::kFloat ? rv : rv.to(at::kFloat);
        rs.mean = rm32.data_ptr<float>();
        rs.var = rv32.data_ptr<float>();
        rs.momentum = momentum;
        rs.unbiased = 1;
    }
    at::Tensor y = at::empty_like(in.x, in.fmt);
    const at::TensorOptions fo = input.options().dtype(at::kFloat);
    at::Tensor save_mean = at::empty({c}, fo), save_invstd = at::empty({c}, fo);
    nk_context ctx = make_context();
    check_nk(nk_batch_norm_apply_moments_ex(
                 &ctx, &in.d, in.x.data_ptr(), y.data_ptr(),
                 reinterpret_cast<const nk_moments *>(mo.data_ptr<double>()), opt_ptr(w),
                 opt_ptr(b), eps, rm.defined() ? &rs : nullptr, save_mean.data_ptr<float>(),
                 save_invstd.data_ptr<float>()),
             op);
    if (rm.defined() && rm.scalar_type() != at::kFloat) {
        rm.copy_(rm32);
        rv.copy_(rv32);
    }
    return Tensors3(y, save_mean, save_invstd);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor>
bn_backward_reduce(const at::Tensor &grad_output, const at::Tensor &input, const at::Tensor &mean,
                   const at::Tensor &invstd, const c10::optional<at::Tensor> &weight,
                   bool weight_grad, bool bias_grad)
{
    static const char op[] = "bn_backward_reduce";
    SyncInput in = sync_input(input, op);
    const int64_t c = in.d.c;
    const at::Tensor dy = like_input(grad_output, in, op, "grad_output");
    const at::Tensor m = channel_stat(mean, c, at::kFloat, op, "mean");
    const at::Tensor is = channel_stat(invstd, c, at::kFloat, op, "invstd");
    at::Tensor w = value(weight);
    sync_params(&in, &w, nullptr, op);
    const at::TensorOptions po =
        input.options().dtype(in.d.param_dtype == NK_DTYPE_BF16 ? at::kBFloat16 : at::kFloat);
    const at::TensorOptions dop = input.options().dtype(at::kDouble);
    at::Tensor sum_dy = at::empty({c}, dop), sum_dy_xmu = at::empty({c}, dop);
    at::Tensor dw = weight_grad ? at::empty({c}, po) : at::Tensor();
    at::Tensor db = bias_grad ? at::empty({c}, po) : at::Tensor();
    nk_context ctx = make_context();
    check_nk(nk_batch_norm_backward_reduce_ex(
                 &ctx, &in.d, in.x.data_ptr(), nullptr, dy.data_ptr(), m.data_ptr<float>(),
                 is.data_ptr<float>(), sum_dy.data_ptr<double>(), sum_dy_xmu.data_ptr<double>(),
                 opt_ptr(dw), opt_ptr(db)),
             op);
    return std::make_tuple(sum_dy, sum_dy_xmu, dw, db);
}

at::Tensor bn_backward_elemt(const at::Tensor &grad_output, const at::Tensor &input,
                             const at::Tensor &mean, const at::Tensor &invstd,
                             const c10::optional<at::Tensor> &weight, const at::Tensor &sum_dy,
                             const at::Tensor &sum_dy_xmu, int64_t count)
{
    static const char op[] = "bn_backward_elemt";
    SyncInput in = sync_input(input, op);
    const int64_t c = in.d.c;
    const at::Tensor dy = like_input(grad_output, in, op, "grad_output");
    const at::Tensor m = channel_stat(mean, c, at::kFloat, op, "mean");
    const at::Tensor is = channel_stat(invstd, c, at::kFloat, op, "invstd");
    const at::Tensor sd = channel_stat(sum_dy, c, at::kDouble, op, "sum_dy");
    const at::Tensor sdx = channel_stat(sum_dy_xmu, c, at::kDouble, op, "sum_dy_xmu");
    at::Tensor w = value(weight);
    sync_params(&in, &w, nullptr, op);
    at::Tensor dx = at::empty_like(in.x, in.fmt);
    nk_context ctx = make_context();
    check_nk(nk_batch_norm_backward_elemt_ex(
                 &ctx, &in.d, in.x.data_ptr(), nullptr, dy.data_ptr(), dx.data_ptr(), opt_ptr(w),
                 m.data_ptr<float>(), is.data_ptr<float>(), sd.data_ptr<double>(),
                 sdx.data_ptr<double>(), count),
             op);
    return dx;
}

// ---- enable / disable -------------------------------------------------------

std::mutex g_mutex;
std::unique_ptr<torch::Library> g_impl; // alive while normkit serves the operators

// Registering over ATen's CPU kernels makes the dispatcher warn once per
// operator ("Overriding a previously registered kernel"); that is the
// intended effect here, so those warnings are dropped and any other goes on
// to the handler that was installed.
class QuietOverride : public c10::WarningHandler {
  public:
    explicit QuietOverride(c10::WarningHandler *next) : next_(next) {}
    void process(const c10::SourceLocation &loc, const std::string &msg,
                 const bool verbatim) override
    {
        if (msg.find("Overriding a previously registered kernel") != std::string::npos)
            return;
        next_->process(loc, msg, verbatim);
    }

  private:
    c10::WarningHandler *next_;
};

void enable()
{
    std::lock_guard<std::mutex> lock(g_mutex);
    if (g_impl)
        return;
    QuietOverride quiet(c10::Warning::get_warning_handler());
    c10::Warning::WarningHandlerGuard guard(&quiet);
    auto lib = std::make_unique<torch::Library>(torch::Library::IMPL, "aten",
                                                c10::DispatchKey::CPU, __FILE__, __LINE__);
    lib->impl("native_batch_norm", TORCH_FN(native_batch_norm));
    lib->impl("native_layer_norm", TORCH_FN(native_layer_norm));
    lib->impl("native_group_norm", TORCH_FN(native_group_norm));
    lib->impl("native_batch_norm_backward", TORCH_FN(native_batch_norm_backward));
    lib->impl("native_layer_norm_backward", TORCH_FN(native_layer_norm_backward));
    lib->impl("native_group_norm_backward", TORCH_FN(native_group_norm_backward));
    g_impl = std::move(lib);
}

void disable()
{
    std::lock_guard<std::mutex> lock(g_mutex);
    g_impl.reset();
}

bool is_enabled()
{
    std::lock_guard<std::mutex> lock(g_mutex);
    return g_impl != nullptr;
}

// [served, fallback] per Op, in its order; reset clears them
std::vector<int64_t> stats(bool reset)
{
    std::vector<int64_t> v;
    for (int i = 0; i < NUM_OPS; i++) {
        v.push_back(reset ? g_served[i].exchange(0) : g_served[i].load());
        v.push_back(reset ? g_fallback[i].exchange(0) : g_fallback[i].load());
    }
    return v;
}

std::string isa() { return nk_isa_name(nk_get_isa()); }

} // namespace

TORCH_LIBRARY(normkit, m)
{
    m.def("enable() -> ()", &enable);
    m.def("disable() -> ()", &disable);
    m.def("is_enabled() -> bool", &is_enabled);
    m.def("stats(bool reset=False) -> int[]", &stats);
    m.def("isa() -> str", &isa);
    m.def("bn_stats(Tensor input) -> Tensor", &bn_stats);
    m.def("bn_merge_moments(Tensor gathered) -> Tensor", &bn_merge_moments);
    m.def("bn_apply_moments(Tensor input, Tensor moments, Tensor? weight, Tensor? bias, "
          "Tensor(a!)? running_mean, Tensor(b!)? running_var, float momentum, float eps) "
          "-> (Tensor, Tensor, Tensor)",
          &bn_apply_moments);
    m.def("bn_backward_reduce(Tensor grad_output, Tensor input, Tensor mean, Tensor invstd, "
          "Tensor? weight, bool weight_grad, bool bias_grad) -> (Tensor, Tensor, Tensor, Tensor)",
          &bn_backward_reduce);
    m.def("bn_backward_elemt(Tensor grad_output, Tensor input, Tensor mean, Tensor invstd, "
          "Tensor? weight, Tensor sum_dy, Tensor sum_dy_xmu, int count) -> Tensor",
          &bn_backward_elemt);
}
