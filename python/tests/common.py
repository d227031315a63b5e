"""Shared helpers of the normkit.torch tests."""
import copy
import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import normkit.torch as nt  # noqa: E402


def rel_err(a, b):
    """max |a - b| / max(max |b|, 1e-6), in float64."""
    a = a.detach().double()
    b = b.detach().double()
    if a.numel() == 0 and b.numel() == 0:
        return 0.0
    return ((a - b).abs().max() / b.abs().max().clamp_min(1e-6)).item()


def run_both(fn):
    """fn() with ATen's kernels, then with normkit's: (aten result, normkit
    result, normkit.torch.stats() of the normkit run)."""
    was = nt.is_enabled()
    nt.disable()
    ref = fn()
    nt.enable()
    nt.stats(reset=True)
    got = fn()
    st = nt.stats(reset=True)
    if not was:
        nt.disable()
    return ref, got, st


def served(st, op=None):
    ops = [op] if op else list(st)
    return sum(st[o][0] for o in ops)


def fallen_back(st, op=None):
    ops = [op] if op else list(st)
    return sum(st[o][1] for o in ops)


def clone_model(m):
    return copy.deepcopy(m)
