"""normkit as PyTorch's CPU kernel of the normalization operators.

    import normkit.torch
    normkit.torch.enable()

enable() makes normkit the CPU kernel of aten::native_batch_norm,
aten::native_layer_norm and aten::native_group_norm for the whole process
(BatchNorm, InstanceNorm, LayerNorm and GroupNorm modules and their
torch.nn.functional forms reach these); disable() restores ATen's kernels.
fp32 and bf16 tensors in dense channels-first or channels-last memory are
computed by normkit on PyTorch's intra-op threads (torch.get_num_threads());
every other call runs ATen's own CPU implementation. Autograd is unchanged:
ATen's backward kernels take the statistics normkit's forward returns.

The extension library is looked up in $NORMKIT_TORCH_LIBRARY, then next to
this file (where `meson install` puts it).
"""
import os as _os

import torch as _torch

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


_OPS = ("batch_norm", "layer_norm", "group_norm")


def stats(reset=False):
    """Calls since the last reset: {op: (served by normkit, passed to ATen)}."""
    v = list(_ops.stats(reset))
    return {op: (v[2 * i], v[2 * i + 1]) for i, op in enumerate(_OPS)}


def isa():
    """The instruction set normkit's kernels run with ("avx2", "avx512", ...)."""
    return _ops.isa()
