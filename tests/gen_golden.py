#!/usr/bin/python3
"""Golden vectors from real PyTorch for tests/test_golden.c.

Regenerate (needs Debian's python3-torch 1.13 and numpy; CI only uses the
committed header and never needs torch):

    /usr/bin/python3 tests/gen_golden.py            # writes tests/golden/torch_golden.h

Every case seeds torch with its own fixed seed (crc32 of its name), so the
output is deterministic and adding a case does not change the others. Floats
are printed with %.9g, which round-trips every fp32 value exactly.

What is recorded per case: torch's module configuration, its weight / bias
(random when affine), and one "step" per forward call: the input, the mode
(train / eval), the expected output (or the expected error), and the running
mean / var / num_batches_tracked after the call. Channels-last cases run the
same torch computation on NCHW data and store input and output permuted to
NLC / NHWC / NDHWC.
"""
import math
import os
import sys
import zlib

import torch
import torch.nn as nn
import torch.nn.functional as F

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "golden", "torch_golden.h")

LAYER = {"bn": "NK_LAYER_BATCH_NORM", "in": "NK_LAYER_INSTANCE_NORM",
         "gn": "NK_LAYER_GROUP_NORM", "ln": "NK_LAYER_LAYER_NORM"}
ACT = {None: "NK_ACT_NONE", "relu": "NK_ACT_RELU", "leaky": "NK_ACT_LEAKY_RELU",
       "silu": "NK_ACT_SILU", "gelu": "NK_ACT_GELU_ERF", "gelu_tanh": "NK_ACT_GELU_TANH"}


def fmt(v):
    s = "%.9g" % float(v)
    if not math.isfinite(float(v)):
        raise ValueError("non-finite golden value")
    if not any(ch in s for ch in ".e"):
        s += ".0"
    return s + "f"


class Writer:
    def __init__(self):
        self.arrays = []   # C definitions
        self.cases = []    # C initialisers of gold_case
        self.names = set()
        self.nfloats = 0

    def array(self, name, t):
        if t is None or t.numel() == 0:
            return "NULL"
        vals = t.detach().contiguous().view(-1).tolist()
        self.nfloats += len(vals)
        lines = []
        for i in range(0, len(vals), 8):
            lines.append("    " + ", ".join(fmt(v) for v in vals[i:i + 8]) + ",")
        self.arrays.append("static const float %s[%d] = {\n%s\n};\n" % (name, len(vals), "\n".join(lines)))
        return name


def seed_for(name):
    torch.manual_seed(zlib.crc32(name.encode()))


def to_last(t):
    """(N, C, *S) -> (N, *S, C)."""
    if t.dim() < 3:
        return t
    return t.permute(0, *range(2, t.dim()), 1).contiguous()


def rand_input(shape, c_dim=1):
    """Normal data with per-channel offsets and scales (so channels differ)."""
    x = torch.randn(*shape)
    if x.numel() and x.dim() > c_dim:
        C = shape[c_dim]
        view = [1] * len(shape)
        view[c_dim] = C
        off = (torch.rand(C) * 6 - 3).view(view)
        sc = (torch.rand(C) * 2 + 0.5).view(view)
        x = x * sc + off
    return x.float()


def set_affine(mod, shape):
    with torch.no_grad():
        if getattr(mod, "weight", None) is not None:
            mod.weight.copy_(torch.rand(shape) + 0.5)
        if getattr(mod, "bias", None) is not None:
            mod.bias.copy_(torch.randn(shape) * 0.5)


ACT_FN = {None: lambda y: y, "relu": F.relu, "leaky": lambda y: F.leaky_relu(y, 0.2),
          "silu": F.silu, "gelu": lambda y: F.gelu(y, approximate="none"),
          "gelu_tanh": lambda y: F.gelu(y, approximate="tanh")}


def emit_case(w, name, layer, mod, steps_spec, *, spatial_rank=0, layout="first", C=0,
              groups=0, norm_shape=(), act=None, cumulative=False, momentum=0.1):
    """Runs steps_spec = [(training, x), ...] through mod (x in torch's NC... layout)
    and records each step: input, output or torch's error, running statistics."""
    assert name not in w.names
    w.names.add(name)
    ident = "g_" + name
    affine = int(getattr(mod, "weight", None) is not None)
    track = int(getattr(mod, "running_mean", None) is not None)
    weight = w.array(ident + "_w", mod.weight) if affine else "NULL"
    bias = w.array(ident + "_b", mod.bias) if getattr(mod, "bias", None) is not None else "NULL"
    step_inits = []
    for k, (training, x) in enumerate(steps_spec):
        mod.train(training)
        err = None
        y = None
        try:
            with torch.no_grad():
                y = ACT_FN[act](mod(x))
        except (RuntimeError, ValueError) as e:
            err = str(e)
        dims = list(x.shape)
        if layer in ("bn", "in", "gn"):
            unbatched = layer == "in" and x.dim() == spatial_rank + 1
            n = 1 if unbatched else dims[0]
            sp = 1
            for d in dims[(1 if unbatched else 2):]:
                sp *= d
        else:
            n = sp = 0
        if layout == "last":
            xs, ys = to_last(x), (to_last(y) if y is not None else None)
        else:
            xs, ys = x, y
        sid = "%s_s%d" % (ident, k)
        xa = w.array(sid + "_x", xs)
        ya = w.array(sid + "_y", ys) if ys is not None else "NULL"
        rm = w.array(sid + "_rm", mod.running_mean) if track else "NULL"
        rv = w.array(sid + "_rv", mod.running_var) if track else "NULL"
        nbt = int(mod.num_batches_tracked) if getattr(mod, "num_batches_tracked", None) is not None else 0
        total = x.numel()
        errc = "NULL" if err is None else '"%s"' % err.replace("\\", "\\\\").replace('"', '\\"')
        step_inits.append(
            "    {%d, %d, {%s}, %d, %d, %d, %s, %s, %s, %s, %s, %d}," % (
                int(training), len(dims), ", ".join(str(d) for d in dims) or "0", n, sp, total,
                xa, ya, errc, rm, rv, nbt))
    w.arrays.append("static const gold_step %s_steps[%d] = {\n%s\n};\n" % (
        ident, len(step_inits), "\n".join(step_inits)))
    eps = mod.eps
    ns = list(norm_shape) + [0] * (3 - len(norm_shape))
    w.cases.append(
        '    {"%s", %s, %d, %s, %d, %d, %d, %d, %r, %r, %d, %d, {%s}, %s, %s, %s, %s, %d, %s_steps},' % (
            name, LAYER[layer], spatial_rank,
            "NK_CHANNELS_LAST" if layout == "last" else "NK_CHANNELS_FIRST",
            C, affine, track, int(cumulative), float(momentum), float(eps), groups, len(norm_shape),
            ", ".join(str(d) for d in ns), ACT[act], "0.2f" if act == "leaky" else "0.01f",
            weight, bias, len(step_inits), ident))


# ---------------------------------------------------------------------------


def bn_cases(w):
    spec = {  # name: (module class, spatial_rank, input shape)
        "bn1d_2d": (nn.BatchNorm1d, 1, (3, 4)),
        "bn1d_3d": (nn.BatchNorm1d, 1, (3, 4, 5)),
        "bn2d": (nn.BatchNorm2d, 2, (3, 4, 3, 4)),
        "bn3d": (nn.BatchNorm3d, 3, (3, 4, 2, 3, 2)),
    }
    for base, (cls, rank, shape) in spec.items():
        for mom_name, mom in (("m01", 0.1), ("mnone", None)):
            for aff in (1, 0):
                name = "%s_%s_%s" % (base, mom_name, "affine" if aff else "noaffine")
                layouts = ["first"] + (["last"] if len(shape) > 2 and aff == 1 else [])
                for layout in layouts:
                    cname = name + ("_cl" if layout == "last" else "")
                    seed_for(cname)
                    mod = cls(shape[1], momentum=mom, affine=bool(aff))
                    set_affine(mod, (shape[1],))
                    steps = [(True, rand_input(shape)) for _ in range(3)] + [(False, rand_input(shape))]
                    emit_case(w, cname, "bn", mod, steps, spatial_rank=rank, layout=layout, C=shape[1],
                              cumulative=mom is None, momentum=0.0 if mom is None else mom)
        # track_running_stats=False: batch statistics in training and in eval
        for layout in ["first"] + (["last"] if len(shape) > 2 else []):
            cname = base + "_notrack" + ("_cl" if layout == "last" else "")
            seed_for(cname)
            mod = cls(shape[1], track_running_stats=False)
            set_affine(mod, (shape[1],))
            steps = [(True, rand_input(shape)), (True, rand_input(shape)), (False, rand_input(shape))]
            emit_case(w, cname, "bn", mod, steps, spatial_rank=rank, layout=layout, C=shape[1])
    # odd channel count, momentum 0.3
    seed_for("bn2d_c5_m03")
    mod = nn.BatchNorm2d(5, momentum=0.3, eps=1e-3)
    set_affine(mod, (5,))
    steps = [(True, rand_input((2, 5, 3, 3))) for _ in range(3)] + [(False, rand_input((2, 5, 3, 3)))]
    emit_case(w, "bn2d_c5_m03", "bn", mod, steps, spatial_rank=2, C=5, momentum=0.3)


def in_cases(w):
    spec = {
        "in1d": (nn.InstanceNorm1d, 1, (3, 4, 5)),
        "in2d": (nn.InstanceNorm2d, 2, (3, 4, 3, 4)),
        "in3d": (nn.InstanceNorm3d, 3, (3, 4, 2, 3, 2)),
    }
    for base, (cls, rank, shape) in spec.items():
        C = shape[1]
        for variant in ("default", "affine", "track"):
            for layout in ("first", "last"):
                if layout == "last" and variant == "default" and rank != 2:
                    continue
                cname = "%s_%s%s" % (base, variant, "_cl" if layout == "last" else "")
                seed_for(cname)
                if variant == "default":
                    mod = cls(C)
                    steps = [(True, rand_input(shape)), (False, rand_input(shape))]
                elif variant == "affine":
                    mod = cls(C, affine=True)
                    set_affine(mod, (C,))
                    steps = [(True, rand_input(shape)), (False, rand_input(shape))]
                else:  # track_running_stats=True (+ affine): 2 training steps, then eval
                    mod = cls(C, affine=True, track_running_stats=True)
                    set_affine(mod, (C,))
                    steps = [(True, rand_input(shape)), (True, rand_input(shape)), (False, rand_input(shape))]
                emit_case(w, cname, "in", mod, steps, spatial_rank=rank, layout=layout, C=C)
    # unbatched (C, L)
    for variant in ("default", "track"):
        cname = "in1d_unbatched_" + variant
        seed_for(cname)
        if variant == "default":
            mod = nn.InstanceNorm1d(4)
            steps = [(True, rand_input((4, 7), c_dim=0))]
        else:
            mod = nn.InstanceNorm1d(4, affine=True, track_running_stats=True, momentum=0.2)
            set_affine(mod, (4,))
            steps = [(True, rand_input((4, 7), c_dim=0)), (True, rand_input((4, 7), c_dim=0)),
                     (False, rand_input((4, 7), c_dim=0))]
        emit_case(w, cname, "in", mod, steps, spatial_rank=1, C=4, momentum=mod.momentum)


def gn_cases(w):
    for C, G, shape in ((6, 1, (3, 6, 5)), (6, 2, (3, 6, 3, 4)), (6, 3, (2, 6, 2, 3, 2)),
                        (6, 6, (3, 6, 3, 4)), (4, 2, (3, 4)), (5, 5, (2, 5, 7))):
        for layout in ("first", "last"):
            if layout == "last" and len(shape) == 2:
                continue
            for aff in (1, 0):
                if layout == "last" and not aff:
                    continue
                cname = "gn_c%d_g%d_%dd%s%s" % (C, G, len(shape), "" if aff else "_noaffine",
                                                "_cl" if layout == "last" else "")
                seed_for(cname)
                mod = nn.GroupNorm(G, C, affine=bool(aff))
                set_affine(mod, (C,))
                emit_case(w, cname, "gn", mod, [(True, rand_input(shape))], C=C, groups=G, layout=layout)


def ln_cases(w):
    for shape, ns in (((3, 7), (7,)), ((3, 5, 6), (6,)), ((3, 5, 6), (5, 6)), ((2, 3, 4, 5), (4, 5))):
        for aff in (True, False):
            cname = "ln_%s_ns%s%s" % ("x".join(map(str, shape)), "x".join(map(str, ns)),
                                      "" if aff else "_noaffine")
            seed_for(cname)
            mod = nn.LayerNorm(ns, elementwise_affine=aff)
            set_affine(mod, ns)
            # per-row offsets so rows differ
            x = torch.randn(*shape) * 1.5 + (torch.rand(*shape[:len(shape) - len(ns)], *([1] * len(ns))) * 4 - 2)
            P = 1
            for d in ns:
                P *= d
            emit_case(w, cname, "ln", mod, [(True, x.float())], C=P, norm_shape=ns)


def act_cases(w):
    for act in ("relu", "leaky", "silu", "gelu", "gelu_tanh"):
        # BatchNorm2d training then eval, both layouts
        for layout in ("first", "last"):
            cname = "act_%s_bn2d%s" % (act, "_cl" if layout == "last" else "")
            seed_for(cname)
            mod = nn.BatchNorm2d(4)
            set_affine(mod, (4,))
            steps = [(True, rand_input((3, 4, 3, 4))), (False, rand_input((3, 4, 3, 4)))]
            emit_case(w, cname, "bn", mod, steps, spatial_rank=2, layout=layout, C=4, act=act)
        cname = "act_%s_gn" % act
        seed_for(cname)
        mod = nn.GroupNorm(2, 4)
        set_affine(mod, (4,))
        emit_case(w, cname, "gn", mod, [(True, rand_input((3, 4, 5)))], C=4, groups=2, act=act)
        cname = "act_%s_ln" % act
        seed_for(cname)
        mod = nn.LayerNorm((6,))
        set_affine(mod, (6,))
        emit_case(w, cname, "ln", mod, [(True, torch.randn(3, 4, 6) * 1.5)], C=6, norm_shape=(6,), act=act)
        cname = "act_%s_in1d" % act
        seed_for(cname)
        mod = nn.InstanceNorm1d(4, affine=True)
        set_affine(mod, (4,))
        emit_case(w, cname, "in", mod, [(True, rand_input((3, 4, 5)))], spatial_rank=1, C=4, act=act)


def edge_cases(w):
    # one value per channel in training: error; the running stats stay as they are
    # (torch increments num_batches_tracked before raising: recorded as torch does it)
    for cname, cls, rank, shape in (("edge_bn1d_one_value", nn.BatchNorm1d, 1, (1, 4)),
                                    ("edge_bn2d_one_value", nn.BatchNorm2d, 2, (1, 4, 1, 1))):
        seed_for(cname)
        mod = cls(4)
        set_affine(mod, (4,))
        good = (2,) + shape[1:]
        steps = [(True, rand_input(good)), (True, rand_input(shape)), (True, rand_input(good))]
        emit_case(w, cname, "bn", mod, steps, spatial_rank=rank, C=4)
    # eps = 0 with a constant channel: invstd 0, y == beta on that channel
    for cname, layout in (("edge_bn2d_eps0_const", "first"), ("edge_bn2d_eps0_const_cl", "last")):
        seed_for(cname)
        mod = nn.BatchNorm2d(4, eps=0.0)
        set_affine(mod, (4,))
        steps = []
        for _ in range(2):
            x = rand_input((3, 4, 3, 4))
            x[:, 2] = 1.75
            steps.append((True, x))
        emit_case(w, cname, "bn", mod, steps, spatial_rank=2, layout=layout, C=4)
    # empty batch: nothing to write, num_batches_tracked still increments, running stats unchanged;
    # with momentum=None the next batch then gets momentum 1/3
    for cname, mom in (("edge_bn2d_empty_m01", 0.1), ("edge_bn2d_empty_mnone", None)):
        seed_for(cname)
        mod = nn.BatchNorm2d(4, momentum=mom)
        set_affine(mod, (4,))
        steps = [(True, rand_input((3, 4, 3, 4))), (True, torch.empty(0, 4, 3, 4)),
                 (True, rand_input((3, 4, 3, 4))), (False, rand_input((3, 4, 3, 4)))]
        emit_case(w, cname, "bn", mod, steps, spatial_rank=2, C=4, cumulative=mom is None,
                  momentum=0.0 if mom is None else mom)


HEADER = """/* Generated by tests/gen_golden.py from PyTorch %s. Do not edit.
 * Regenerate: /usr/bin/python3 tests/gen_golden.py
 * %d cases, %d float values. */
#ifndef NK_TORCH_GOLDEN_H
#define NK_TORCH_GOLDEN_H

#include <stddef.h>
#include <stdint.h>

#include "normkit.h"

/* One forward call of the torch module. */
typedef struct gold_step {
    int training;            /* module.train(training) before the call */
    int ndim;                /* torch input rank */
    int64_t dims[5];         /* torch input extents (channels-first, as torch takes them) */
    int64_t n, spatial;      /* nk_shape n / spatial (BatchNorm, InstanceNorm, GroupNorm) */
    int64_t numel;
    const float *x;          /* input in the case layout; NULL when empty */
    const float *y;          /* expected output in the case layout; NULL when empty or error */
    const char *error;       /* torch's error message, NULL when the call succeeds */
    const float *rmean, *rvar; /* running statistics after the call (NULL: none) */
    int64_t nbt;             /* num_batches_tracked after the call (0 when none) */
} gold_step;

typedef struct gold_case {
    const char *name;
    nk_layer layer;
    int spatial_rank;        /* 1/2/3 for BatchNormNd / InstanceNormNd */
    nk_layout layout;        /* layout of the stored x and y */
    int64_t c;               /* num_features, num_channels, or prod(normalized_shape) */
    int affine, track, cumulative;
    double momentum, eps;    /* momentum in torch's convention; cumulative: momentum=None */
    int64_t groups;
    int norm_ndim;
    int64_t norm_shape[3];
    nk_activation act;       /* applied in torch after the norm */
    float alpha;
    const float *weight, *bias; /* torch's parameters (NULL: none) */
    int nsteps;
    const gold_step *steps;
} gold_case;

"""


def main():
    torch.set_num_threads(1)
    w = Writer()
    bn_cases(w)
    in_cases(w)
    gn_cases(w)
    ln_cases(w)
    act_cases(w)
    edge_cases(w)
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    with open(OUT, "w") as f:
        f.write(HEADER % (torch.__version__, len(w.cases), w.nfloats))
        f.write("\n".join(w.arrays))
        f.write("\nstatic const gold_case gold_cases[%d] = {\n%s\n};\n\n#endif\n" % (
            len(w.cases), "\n".join(w.cases)))
    print("wrote %s: %d cases, %d floats, %d bytes" % (OUT, len(w.cases), w.nfloats, os.path.getsize(OUT)))


if __name__ == "__main__":
    sys.exit(main())
