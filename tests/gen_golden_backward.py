#!/usr/bin/python3
"""Backward goldens from real PyTorch autograd for tests/test_backward.c.

Regenerate (needs Debian's python3-torch 1.13; the tests only read the
committed header):

    /usr/bin/python3 tests/gen_golden_backward.py   # writes tests/golden/torch_golden_backward.h

Each case seeds torch with crc32 of its name (deterministic, independent of
the other cases), builds the module, runs y = act(module(x)) in fp32 and
records the gradients of sum(y * dy) with respect to x, weight and bias.
BatchNorm in eval mode uses random running statistics. RMSNorm (not in
torch 1.13) is x * rsqrt(mean(x^2) + eps) * weight, differentiated by
autograd. Channels-last cases store x, dy and dx permuted to NLC / NHWC /
NDHWC; the computation is torch's on the NCHW tensor. Floats are printed
with %.9g (exact for fp32).
"""
import math
import os
import zlib

import torch
import torch.nn as nn
import torch.nn.functional as F

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "golden",
                   "torch_golden_backward.h")

OP = {"bn": "OP_BN", "bn_eval": "OP_BN_INFER", "in": "OP_IN", "gn": "OP_GN", "ln": "OP_LN",
      "rms": "OP_RMS"}
ACT = {None: "NK_ACT_NONE", "relu": "NK_ACT_RELU", "leaky": "NK_ACT_LEAKY_RELU"}
ALPHA = 0.2

# name, op, dims (N, C, *spatial; LayerNorm / RMSNorm: rows..., cols),
# channels_last, affine, act, groups, shift (added to x)
CASES = [
    ("bn1d_nc", "bn", (6, 4), False, True, None, 0, 0.0),
    ("bn1d_ncl", "bn", (3, 5, 7), False, True, None, 0, 0.0),
    ("bn2d", "bn", (2, 3, 4, 5), False, True, None, 0, 0.0),
    ("bn2d_nhwc", "bn", (2, 3, 4, 5), True, True, None, 0, 0.0),
    ("bn2d_noaffine_relu", "bn", (2, 3, 4, 5), False, False, "relu", 0, 0.0),
    ("bn3d_nhwc_leaky", "bn", (2, 3, 2, 3, 4), True, True, "leaky", 0, 0.0),
    ("bn2d_two_values", "bn", (2, 3, 1, 1), False, True, None, 0, 0.0),
    ("bn2d_shifted", "bn", (4, 3, 5, 5), False, True, None, 0, 100.0),
    ("bn_eval", "bn_eval", (2, 3, 4, 5), False, True, None, 0, 0.0),
    ("bn_eval_nhwc_relu", "bn_eval", (2, 3, 4, 5), True, True, "relu", 0, 0.0),
    ("in1d", "in", (2, 3, 9), False, True, None, 0, 0.0),
    ("in2d_noaffine", "in", (2, 4, 3, 5), False, False, None, 0, 0.0),
    ("in2d_nhwc_relu", "in", (2, 4, 3, 5), True, True, "relu", 0, 0.0),
    ("in3d", "in", (1, 2, 3, 3, 3), False, True, "leaky", 0, 0.0),
    ("gn", "gn", (2, 6, 4, 5), False, True, None, 3, 0.0),
    ("gn_nhwc", "gn", (2, 6, 4, 5), True, True, "relu", 2, 0.0),
    ("gn_one_per_group", "gn", (3, 4, 1), False, True, None, 4, 0.0),
    ("gn_noaffine_shifted", "gn", (2, 8, 16), False, False, None, 2, 50.0),
    ("ln", "ln", (4, 16), True, True, None, 0, 0.0),
    ("ln_3d", "ln", (2, 3, 24), True, True, "relu", 0, 0.0),
    ("ln_noaffine", "ln", (5, 33), True, False, None, 0, 0.0),
    ("ln_shifted", "ln", (3, 64), True, True, "leaky", 0, 100.0),
    ("rms", "rms", (4, 16), True, True, None, 0, 0.0),
    ("rms_relu", "rms", (3, 40), True, True, "relu", 0, 0.0),
]


def fmt(v):
    v = float(v)
    if not math.isfinite(v):
        raise ValueError("non-finite golden value")
    s = "%.9g" % v
    return s if any(ch in s for ch in ".en") else s + ".0"


def arr(name, t):
    vals = [fmt(v) for v in t.detach().reshape(-1).tolist()]
    lines = []
    for i in range(0, len(vals), 8):
        lines.append("    " + ", ".join(v + "f" for v in vals[i:i + 8]) + ",")
    return "static const float %s[] = {\n%s\n};\n" % (name, "\n".join(lines) if vals else "    0.0f,")


def stored(t, channels_last):
    """NC* tensor as normkit reads it: N, C, S or N, S, C."""
    n, c = t.shape[0], t.shape[1]
    flat = t.reshape(n, c, -1)
    return flat.permute(0, 2, 1).contiguous() if channels_last else flat.contiguous()


def run(case):
    name, op, dims, cl, affine, act, groups, shift = case
    torch.manual_seed(zlib.crc32(name.encode()))
    eps = 1e-5
    x = (torch.randn(dims) + shift).requires_grad_(True)
    dy = torch.randn(dims)
    rm = rv = None
    if op in ("ln", "rms"):
        cols = dims[-1]
        w = (torch.rand(cols) + 0.5).requires_grad_(True)
        b = (torch.randn(cols) * 0.5).requires_grad_(True)
        if op == "ln":
            h = F.layer_norm(x, (cols,), w if affine else None, b if affine else None, eps)
        else:
            h = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)
            if affine:
                h = h * w
    else:
        c = dims[1]
        w = (torch.rand(c) + 0.5).requires_grad_(True)
        b = (torch.randn(c) * 0.5).requires_grad_(True)
        wa, ba = (w, b) if affine else (None, None)
        if op == "bn":
            h = F.batch_norm(x, None, None, wa, ba, True, 0.1, eps)
        elif op == "bn_eval":
            rm = torch.randn(c) * 0.3
            rv = torch.rand(c) + 0.5
            h = F.batch_norm(x, rm, rv, wa, ba, False, 0.1, eps)
        elif op == "in":
            h = F.instance_norm(x, None, None, wa, ba, True, 0.1, eps)
        else:
            h = F.group_norm(x, groups, wa, ba, eps)
    if act == "relu":
        y = F.relu(h)
    elif act == "leaky":
        y = F.leaky_relu(h, ALPHA)
    else:
        y = h
    (y * dy).sum().backward()
    dw = w.grad if affine else torch.zeros_like(w)
    db = b.grad if (affine and op != "rms") else torch.zeros_like(b)
    if op in ("ln", "rms"):
        n, c, s = x.numel() // dims[-1], dims[-1], 1
        sx, sdy, sdx = x.detach(), dy, x.grad
    else:
        n, c = dims[0], dims[1]
        s = x[0, 0].numel()
        sx, sdy, sdx = stored(x.detach(), cl), stored(dy, cl), stored(x.grad, cl)
    out = []
    out.append(arr(name + "_x", sx))
    out.append(arr(name + "_dy", sdy))
    out.append(arr(name + "_w", w.detach()))
    out.append(arr(name + "_b", b.detach()))
    out.append(arr(name + "_rm", rm if rm is not None else torch.zeros(1)))
    out.append(arr(name + "_rv", rv if rv is not None else torch.ones(1)))
    out.append(arr(name + "_dx", sdx))
    out.append(arr(name + "_dw", dw))
    out.append(arr(name + "_db", db))
    entry = ("    {\"%s\", %s, %d, %d, %d, %d, %d, %s, %sf, %d, %s, %s_x, %s_dy, %s_w, %s_b, "
             "%s_rm, %s_rv, %s_dx, %s_dw, %s_db},\n" %
             (name, OP[op], 1 if cl else 0, n, c, s, groups if op == "gn" else 1, ACT[act],
              fmt(ALPHA), 1 if affine else 0, fmt(eps), name, name, name, name, name, name, name,
              name, name))
    return "".join(out), entry


def main():
    arrays, entries = [], []
    for case in CASES:
        a, e = run(case)
        arrays.append(a)
        entries.append(e)
    with open(OUT, "w") as f:
        f.write("/* Generated by tests/gen_golden_backward.py with torch %s: do not edit. */\n"
                % torch.__version__)
        f.write("".join(arrays))
        f.write("static const bwd_golden bwd_goldens[] = {\n")
        f.write("".join(entries))
        f.write("};\n")


if __name__ == "__main__":
    main()
