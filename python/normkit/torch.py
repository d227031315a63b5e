"""normkit as PyTorch's CPU kernel of the normalization operators.

    import normkit.torch
    normkit.torch.enable()

enable() makes normkit the CPU kernel of aten::native_batch_norm,
aten::native_layer_norm and aten::native_group_norm and of their backward
operators (native_batch_norm_backward, native_layer_norm_backward,
native_group_norm_backward) for the whole process (BatchNorm, InstanceNorm,
LayerNorm and GroupNorm modules and their torch.nn.functional forms reach
these, and autograd calls the backward operators with the statistics the
forward returned); disable() restores ATen's kernels. fp32 and bf16 tensors
in dense channels-first or channels-last memory are computed by normkit on
PyTorch's intra-op threads (torch.get_num_threads()); every other call runs
ATen's own CPU implementation.

SyncBatchNorm is torch.nn.SyncBatchNorm on the CPU over torch.distributed
(gloo): each rank's per-channel moments come from normkit, are all-gathered
and merged in rank order, and the backward all-reduces two per-channel sums.

The extension library is looked up in $NORMKIT_TORCH_LIBRARY, then next to
this file (where `meson install` puts it).
"""
import os as _os

import torch as _torch
import torch.distributed as _dist
import torch.nn.functional as _F

_LIB_NAME = "_normkit_aten.so"
_loaded = None


def library_path():
    """The path of the extension library that is (or would be) loaded."""
    env = _os.environ.get("NORMKIT_TORCH_LIBRARY")
    if env:
        return env
    return _os.path.join(_os.path.dirname(_os.path.abspath(__file__)), _LIB_NAME)


def _load():
    global _loaded
    if _loaded is None:
        path = library_path()
        if not _os.path.exists(path):
            raise ImportError(
                "normkit.torch: extension library %s not found (build with "
                "meson -Dtorch=enabled, or set NORMKIT_TORCH_LIBRARY)" % path)
        _torch.ops.load_library(path)
        _loaded = path
    return _torch.ops.normkit


_ops = _load()


def enable():
    """Makes normkit the CPU kernel of the normalization operators."""
    _ops.enable()


def disable():
    """Gives the normalization operators back to ATen's CPU kernels."""
    _ops.disable()


def is_enabled():
    return bool(_ops.is_enabled())


class enabled:
    """Context manager: normkit serves the operators inside the block and the
    previous state returns after it."""

    def __enter__(self):
        self._was = is_enabled()
        enable()
        return self

    def __exit__(self, *exc):
        if not self._was:
            disable()
        return False


class disabled:
    """Context manager: ATen serves the operators inside the block."""

    def __enter__(self):
        self._was = is_enabled()
        disable()
        return self

    def __exit__(self, *exc):
        if self._was:
            enable()
        return False


_OPS = ("batch_norm", "layer_norm", "group_norm", "batch_norm_backward", "layer_norm_backward",
        "group_norm_backward")


def stats(reset=False):
    """Calls since the last reset: {op: (served by normkit, passed to ATen)},
    op one of batch_norm, layer_norm, group_norm and their *_backward."""
    v = list(_ops.stats(reset))
    return {op: (v[2 * i], v[2 * i + 1]) for i, op in enumerate(_OPS)}


def isa():
    """The instruction set normkit's kernels run with ("avx2", "avx512", ...)."""
    return _ops.isa()


# ---- synchronized BatchNorm -------------------------------------------------


def _gather_moments(input, process_group, world_size):
    """The (C, 3) float64 moments (count, mean, m2) of the inputs of every
    rank of process_group: this rank's from normkit, all-gathered (an empty
    input contributes count 0) and merged in rank order, so every rank holds
    the same bits."""
    local = _ops.bn_stats(input)
    gathered = [_torch.empty_like(local) for _ in range(world_size)]
    _dist.all_gather(gathered, local, process_group)
    return _ops.bn_merge_moments(_torch.stack(gathered))


class _SyncBatchNormFunction(_torch.autograd.Function):
    """torch.nn.modules._functions.SyncBatchNorm with normkit's steps."""

    @staticmethod
    def forward(ctx, input, weight, bias, running_mean, running_var, eps, momentum,
                process_group, world_size):
        # one dense copy of any other strides, as PyTorch's (the ops would
        # each make their own)
        if not (input.is_contiguous() or input.is_contiguous(memory_format=_torch.channels_last)
                or input.is_contiguous(memory_format=_torch.channels_last_3d)):
            input = input.contiguous()
        moments = _gather_moments(input, process_group, world_size)
        count = int(moments[0, 0].item())
        if count == 1:
            raise ValueError("Expected more than 1 value per channel when training, "
                             "got input size {}".format(count))
        y, mean, invstd = _ops.bn_apply_moments(input, moments, weight, bias, running_mean,
                                                running_var, float(momentum), float(eps))
        ctx.save_for_backward(input, weight, mean, invstd)
        ctx.count = count
        ctx.process_group = process_group
        return y

    @staticmethod
    def backward(ctx, grad_output):
        input, weight, mean, invstd = ctx.saved_tensors
        need_input, need_weight, need_bias = ctx.needs_input_grad[:3]
        # each rank's own dweight / dbias, as PyTorch's SyncBatchNorm
        # (DistributedDataParallel reduces them with the other parameters)
        sum_dy, sum_dy_xmu, grad_weight, grad_bias = _ops.bn_backward_reduce(
            grad_output, input, mean, invstd, weight,
            bool(need_weight and weight is not None), bool(need_bias and weight is not None))
        grad_input = None
        if need_input:
            c = sum_dy.shape[0]
            combined = _torch.cat([sum_dy, sum_dy_xmu])
            _dist.all_reduce(combined, _dist.ReduceOp.SUM, ctx.process_group)
            sum_dy, sum_dy_xmu = _torch.split(combined, c)
            grad_input = _ops.bn_backward_elemt(grad_output, input, mean, invstd, weight,
                                                sum_dy, sum_dy_xmu, ctx.count)
        return grad_input, grad_weight, grad_bias, None, None, None, None, None, None


class SyncBatchNorm(_torch.nn.modules.batchnorm._BatchNorm):
    """torch.nn.SyncBatchNorm for CPU tensors (fp32, or bf16 with fp32 or bf16
    parameters; channels-first or channels-last) over a torch.distributed
    process group (gloo). Training with batch statistics synchronizes: the
    per-channel (count, mean, M2) of every rank are all-gathered and merged
    in rank order in float64, so outputs, gradients and running statistics
    are those of BatchNorm over the concatenated batch, identical on every
    rank; ranks may have different batch sizes, an empty one included. The
    backward all-reduces sum(dy) and sum(dy * (x - mean)); dweight and dbias
    are each rank's own, as PyTorch's (zeros on an empty rank). In eval mode,
    without an initialised process group or with a world of one it is
    F.batch_norm, as PyTorch's.

    Not a subclass of torch.nn.SyncBatchNorm: DistributedDataParallel
    refuses CPU modules that contain one."""

    def __init__(self, num_features, eps=1e-5, momentum=0.1, affine=True,
                 track_running_stats=True, process_group=None, device=None, dtype=None):
        super().__init__(num_features, eps, momentum, affine, track_running_stats,
                         device=device, dtype=dtype)
        self.process_group = process_group

    def _check_input_dim(self, input):
        if input.dim() < 2:
            raise ValueError("expected at least 2D input (got {}D input)".format(input.dim()))

    def _check_non_zero_input_channels(self, input):
        if input.size(1) == 0:
            raise ValueError("SyncBatchNorm number of input channels should be non-zero")

    def _sync_group(self):
        """(group, size) to synchronize over, or None: training with batch
        statistics in an initialised process group of more than one rank."""
        if not (_dist.is_available() and _dist.is_initialized()):
            return None
        group = self.process_group if self.process_group else _dist.group.WORLD
        size = _dist.get_world_size(group)
        return (group, size) if size > 1 else None

    def forward(self, input):
        self._check_input_dim(input)
        self._check_non_zero_input_channels(input)
        # running statistics: updated in training when tracked (momentum
        # None = cumulative average over num_batches_tracked), read in eval
        tracked = self.track_running_stats and self.running_mean is not None
        factor = 0.0 if self.momentum is None else self.momentum
        if self.training and tracked:
            self.num_batches_tracked.add_(1)
            if self.momentum is None:
                factor = 1.0 / self.num_batches_tracked.item()
        use_batch_stats = self.training or self.running_mean is None
        keep = tracked or not self.training
        rmean = self.running_mean if keep else None
        rvar = self.running_var if keep else None
        sync = self._sync_group() if self.training else None
        if sync is None:
            return _F.batch_norm(input, rmean, rvar, self.weight, self.bias, use_batch_stats,
                                 factor, self.eps)
        return _SyncBatchNormFunction.apply(input, self.weight, self.bias, rmean, rvar,
                                            self.eps, factor, sync[0], sync[1])

    @classmethod
    def convert_sync_batchnorm(cls, module, process_group=None):
        """torch.nn.SyncBatchNorm.convert_sync_batchnorm making normkit
        SyncBatchNorm layers: every BatchNorm*d (any _BatchNorm) in module
        becomes one sharing its parameters (so requires_grad too) and buffers,
        in the same training mode; returns the new module when module itself
        is one, else module with its layers replaced."""
        if isinstance(module, _torch.nn.modules.batchnorm._BatchNorm):
            layer = cls(module.num_features, module.eps, module.momentum, module.affine,
                        module.track_running_stats, process_group)
            if module.affine:
                layer.weight, layer.bias = module.weight, module.bias
            for buf in ("running_mean", "running_var", "num_batches_tracked"):
                setattr(layer, buf, getattr(module, buf))
            layer.train(module.training)
            if hasattr(module, "qconfig"):
                layer.qconfig = module.qconfig
        else:
            layer = module
        for name, child in list(module.named_children()):
            layer.add_module(name, cls.convert_sync_batchnorm(child, process_group))
        return layer


def convert_sync_batchnorm(module, process_group=None):
    """SyncBatchNorm.convert_sync_batchnorm(module, process_group)."""
    return SyncBatchNorm.convert_sync_batchnorm(module, process_group)
