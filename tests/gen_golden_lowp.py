#!/usr/bin/python3
"""Low-precision golden vectors from real PyTorch (bf16, and fp16 where torch's
CPU kernels take it) for the 16-bit dtype tests of normkit.

Regenerate (needs Debian's python3-torch 1.13 and numpy; the tests only use the
committed header and never need torch):

    /usr/bin/python3 tests/gen_golden_lowp.py       # writes tests/golden/torch_golden_lowp.h

Same conventions as tests/gen_golden.py: every case seeds torch with crc32 of
its base name (the name without the dtype suffix), so the variants of one case
that differ only in dtypes see the same data (rounded to their dtypes), the
output is deterministic, and adding a case does not change the others. fp32
values are printed with %.9g (exact round trip); 16-bit values are stored as
their bit patterns (uint16_t, hex).

Each case runs the fp32-built module and its inputs converted to the case's
dtypes:
  activation dtype  x and y: bfloat16 (float16 where torch accepts it, see below)
  parameter dtype   weight, bias and the running statistics: float32, or the
                    activation dtype (module.to(dtype)); "none" when the module
                    has no floating parameters or buffers.
Recorded per step: the input and torch's output (bits), the running statistics
after the call in their torch dtype, num_batches_tracked, and the float64
reference: the same operation evaluated in float64 from the upcast 16-bit
input, the upcast parameters and (eval) the upcast running statistics torch
held before the call, with the activation applied in float64, rounded once
(round to nearest even) to the activation dtype. The reference is stored
sparsely: it equals torch's y except at the listed indices. Per step the
number of elements where torch's y differs from it, by 1, 2 and more ulps,
the largest difference in ulps and the largest |y - float64 result| document
how far PyTorch itself is from the correctly rounded result (normkit's
contract is 1 ulp of the reference). Ulps are counted along the 16-bit grid
through zero, so an output near zero that torch gets slightly wrong in absolute
terms (or with the wrong sign) shows as thousands of ulps; max|err| puts those
in proportion. The script prints the per-case table and a summary at the end.
With torch 1.13: bf16 x with float32 parameters (torch's mixed-type batch_norm
kernel) is correctly rounded in every element; every all-bf16 path (bf16
parameters, or none: BatchNorm, InstanceNorm, GroupNorm, LayerNorm) differs in
25-90% of the elements, by up to 0.04 in absolute terms.

Channels-last cases hand torch the channels-last data as a strided view
(NHWC / NDHWC memory is torch.channels_last / channels_last_3d, NLC is an
(N, L, C) tensor transposed), so torch runs the kernel it picks for that memory
format; input and output are stored in the channels-last order (NLC / NHWC /
NDHWC), like gen_golden.py.

Activation cases: torch computes act(norm(x)) as two bf16 operations, so the
normalized value is rounded to bf16 before the activation and the activation's
result is rounded again. ReLU commutes with rounding (relu(rne(v)) ==
rne(relu(v))), so those cases are exact. SiLU and GELU cases
(torch_rounds_twice = 1) are not: normkit fuses the activation in fp32 and
rounds once, so it is comparable with torch's y only within 1-2 bf16 ulps
where the activation's relative slope is moderate (all of SiLU here). In
GELU's negative tail (x below about -2, outputs of -1e-2 and smaller) the
input's rounding is magnified: act_gelu_bn2d_bf16_f32 has torch at -1.65e-7
against -8.2e-8 (128 ulps) although its normalized value is correctly
rounded. Compare normkit with the float64 reference in those cases.

What torch 1.13 (CPU) accepts, probed at generation time (see the header's
comment for the exact list and messages):
  bfloat16 x, float32 weight/bias/running stats: BatchNorm1d/2d/3d and
      InstanceNorm1d/2d (mixed-type batch_norm); LayerNorm and GroupNorm reject
      it ("expected scalar type BFloat16 but found Float"); such cases are
      skipped. No-affine LayerNorm / GroupNorm / InstanceNorm without running
      statistics have no parameters and appear once.
  bfloat16 x, bfloat16 weight/bias/running stats: every layer.
  Mixing within the parameters (weight fp32 with running stats bf16 or the
      reverse) is rejected for BatchNorm and InstanceNorm: not generated.
  float16 x: every layer is rejected on CPU ('"batch_norm" not implemented for
      'Half'', '"LayerNormKernelImpl" ...', '"GroupNormKernelImpl" ...'); so are
      relu, silu and gelu on Half. No fp16 case is generated.
"""
import copy
import math
import os
import sys
import zlib

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

# the helpers shared with the fp32 generator (same directory)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from gen_golden import fmt, rand_input, seed_for, set_affine  # noqa: E402

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "golden", "torch_golden_lowp.h")

LAYER = {"bn": "NK_LAYER_BATCH_NORM", "in": "NK_LAYER_INSTANCE_NORM",
         "gn": "NK_LAYER_GROUP_NORM", "ln": "NK_LAYER_LAYER_NORM"}
ACT = {None: "NK_ACT_NONE", "relu": "NK_ACT_RELU", "silu": "NK_ACT_SILU", "gelu": "NK_ACT_GELU_ERF"}
ACT_FN = {None: lambda y: y, "relu": F.relu, "silu": F.silu, "gelu": lambda y: F.gelu(y, approximate="none")}
ROUNDS_TWICE = {None: 0, "relu": 0, "silu": 1, "gelu": 1}

BF16, F16, F32 = torch.bfloat16, torch.float16, torch.float32
DT_NAME = {F32: "f32", BF16: "bf16", F16: "f16", None: "none"}
DT_CODE = {F32: "GOLD_LP_F32", BF16: "GOLD_LP_BF16", F16: "GOLD_LP_F16", None: "GOLD_LP_NONE"}
# (fraction bits, smallest normal exponent, largest finite value) of the 16-bit formats
FORMAT = {BF16: (7, -126, float.fromhex("0x1.fep127")), F16: (10, -14, 65504.0)}
ACT_DTYPES = (BF16, F16)


def bits_of(t):
    """16-bit tensor -> numpy uint16 bit patterns (C order)."""
    return t.detach().contiguous().view(torch.int16).numpy().astype(np.uint16).reshape(-1)


def round_to(v, dt):
    """float64 array -> bit patterns of the nearest `dt` value (ties to even),
    rounded once from float64. Not torch's .to(bfloat16): from float64 that
    goes through float32 and rounds twice (1 + 2^-8 + 2^-30 becomes 1.0)."""
    mant, emin, vmax = FORMAT[dt]
    v = np.asarray(v, dtype=np.float64)
    assert np.all(np.isfinite(v)), "non-finite reference"
    _, e = np.frexp(v)                        # v = m * 2^e, 0.5 <= |m| < 1
    q = np.maximum(e - 1, emin) - mant        # exponent of one ulp (subnormals: fixed)
    r = np.ldexp(np.round(np.ldexp(v, -q)), q)  # np.round: half to even; scaling is exact
    assert np.all(np.abs(r) <= vmax), "reference overflows the dtype"
    if dt == BF16:
        return (r.astype(np.float32).view(np.uint32) >> 16).astype(np.uint16)
    return r.astype(np.float16).view(np.uint16)


def ordered(bits):
    """Bit patterns -> integers whose differences count ulps (+0 == -0)."""
    b = bits.astype(np.int64)
    return np.where(b & 0x8000, -(b & 0x7FFF), b)


def to_last(t):
    """(N, C, *S) -> (N, *S, C), contiguous."""
    if t.dim() < 3:
        return t.contiguous()
    return t.permute(0, *range(2, t.dim()), 1).contiguous()


def last_view(t_last):
    """(N, *S, C) contiguous -> the same memory seen as (N, C, *S)."""
    d = t_last.dim()
    return t_last.permute(0, d - 1, *range(1, d - 1))


def ln_input(shape, nd):
    """Normal data with per-row offsets (so rows differ)."""
    rows = shape[:len(shape) - nd]
    return (torch.randn(*shape) * 1.5 + (torch.rand(*rows, *([1] * nd)) * 4 - 2)).float()


# ---------------------------------------------------------------------------
# float64 reference


def f64(t):
    return None if t is None else t.detach().double().numpy()


def act64(v, act):
    if act is None:
        return v
    if act == "relu":
        return np.maximum(v, 0.0)
    if act == "silu":
        return v / (1.0 + np.exp(-v))
    if act == "gelu":
        return 0.5 * v * (1.0 + np.vectorize(math.erf)(v / math.sqrt(2.0)))
    raise ValueError(act)


def reference(layer, x, w, b, rm, rv, eps, batch_stats, groups, norm_ndim, act):
    """act(norm(x)) in float64; x channels-first (N, C, *S) or LayerNorm's input."""
    x = x.astype(np.float64)
    if layer == "ln":
        axes = tuple(range(x.ndim - norm_ndim, x.ndim))
        mean = x.mean(axis=axes, keepdims=True)
        var = ((x - mean) ** 2).mean(axis=axes, keepdims=True)
        y = (x - mean) / np.sqrt(var + eps)
        if w is not None:
            y = y * w + b
        return act64(y, act)
    C = x.shape[1]
    cshape = [1, C] + [1] * (x.ndim - 2)
    if layer == "gn":
        g = x.reshape(x.shape[0], groups, -1)
        mean = g.mean(axis=2, keepdims=True)
        var = ((g - mean) ** 2).mean(axis=2, keepdims=True)
        y = ((g - mean) / np.sqrt(var + eps)).reshape(x.shape)
    else:
        if batch_stats:
            axes = (0,) + tuple(range(2, x.ndim)) if layer == "bn" else tuple(range(2, x.ndim))
            mean = x.mean(axis=axes, keepdims=True)
            var = ((x - mean) ** 2).mean(axis=axes, keepdims=True)
        else:
            mean, var = rm.reshape(cshape), rv.reshape(cshape)
        y = (x - mean) / np.sqrt(var + eps)
    if w is not None:
        y = y * w.reshape(cshape) + b.reshape(cshape)
    return act64(y, act)


# ---------------------------------------------------------------------------


class Unsupported(Exception):
    pass


# torch's messages for dtype combinations its CPU kernels do not implement
REJECT = ("not implemented for 'Half'", "expected scalar type", "mixed dtype")


class Writer:
    def __init__(self):
        self.arrays = []     # C definitions
        self.cases = []      # C initialisers of gold_lp_case
        self.names = set()
        self.shared = {}     # inputs shared by the parameter-dtype variants of a case
        self.nvalues = 0
        self.summary = []    # (name, layer, adt, pdt, act, numel, ndiff, u1, u2, umore, umax)
        self.accepted = {}   # (what, adt, pdt) -> number of cases
        self.rejected = {}   # (what, adt, pdt) -> torch's message

    def _lines(self, items, per):
        return "\n".join("    " + ",".join(items[i:i + per]) + "," for i in range(0, len(items), per))

    def f32(self, name, t):
        vals = t.detach().float().contiguous().view(-1).tolist()
        self.nvalues += len(vals)
        self.arrays.append("static const float %s[%d] = {\n%s\n};\n" % (
            name, len(vals), self._lines([fmt(v) for v in vals], 8)))
        return name

    def u16(self, name, bits):
        bits = np.asarray(bits, dtype=np.uint16).reshape(-1)
        self.nvalues += bits.size
        self.arrays.append("static const uint16_t %s[%d] = {\n%s\n};\n" % (
            name, bits.size, self._lines(["0x%04x" % v for v in bits.tolist()], 16)))
        return name

    def i32(self, name, vals):
        vals = [int(v) for v in vals]
        self.nvalues += len(vals)
        self.arrays.append("static const int32_t %s[%d] = {\n%s\n};\n" % (
            name, len(vals), self._lines(["%d" % v for v in vals], 16)))
        return name

    def vec(self, name, t):
        """A parameter / statistic vector as a gold_lp_array initialiser."""
        if t is None:
            return "{NULL, NULL}"
        if t.dtype == F32:
            return "{%s, NULL}" % self.f32(name, t)
        return "{NULL, %s}" % self.u16(name, bits_of(t))


def param_dtype(mod):
    ts = [t for t in list(mod.parameters()) + list(mod.buffers()) if t.is_floating_point()]
    return ts[0].dtype if ts else None


def run_case(w, base, layer, mod32, steps_spec, adt, pdt, *, spatial_rank=0, layout="first", C=0,
             groups=0, norm_shape=(), act=None, cumulative=False, momentum=0.1):
    """Runs steps_spec = [(training, x fp32 channels-first), ...] through a copy of
    mod32 converted to pdt, with inputs in adt, and records it. Raises
    Unsupported when torch rejects the dtype combination."""
    name = base + "_" + DT_NAME[adt] + ("" if pdt is None else "_" + DT_NAME[pdt])
    assert name not in w.names
    mod = copy.deepcopy(mod32)
    if pdt is not None:
        mod = mod.to(pdt)
    assert param_dtype(mod) == pdt
    ident = "g_" + name
    affine = int(getattr(mod, "weight", None) is not None)
    track = int(getattr(mod, "running_mean", None) is not None)
    arrays_mark, values_mark = len(w.arrays), w.nvalues
    step_inits = []
    tot = np.zeros(5, dtype=np.int64)  # numel, ndiff, 1 ulp, 2 ulps, more
    umax, emax = 0, 0.0
    for k, (training, x32) in enumerate(steps_spec):
        x = x32.to(adt)                      # channels-first values in the 16-bit dtype
        xt = last_view(to_last(x)) if layout == "last" else x
        mod.train(training)
        before = copy.deepcopy(mod)
        try:
            with torch.no_grad():
                y = ACT_FN[act](mod(xt))
        except RuntimeError as e:
            msg = str(e).splitlines()[0]
            if k == 0 and any(s in msg for s in REJECT):
                del w.arrays[arrays_mark:]
                w.nvalues = values_mark
                raise Unsupported(msg)
            raise
        assert y.dtype == adt and y.shape == x.shape
        if pdt is not None:
            assert param_dtype(mod) == pdt
        # float64 reference from the 16-bit input and what the module held before the call
        batch_stats = layer in ("gn", "ln") or training or not track
        ref = reference(layer, f64(x), f64(before.weight) if affine else None,
                        f64(before.bias) if affine else None,
                        f64(before.running_mean) if track else None,
                        f64(before.running_var) if track else None,
                        mod.eps, batch_stats, groups, len(norm_shape), act)
        # cross-check the float64 formula against torch's own float64 module
        m64 = before.double()
        with torch.no_grad():
            y64 = f64(ACT_FN[act](m64(x.double())))
        assert np.allclose(ref, y64, rtol=1e-12, atol=1e-12), (name, np.abs(ref - y64).max())
        ys = to_last(y) if layout == "last" else y.contiguous()
        xs = to_last(x) if layout == "last" else x.contiguous()
        refs = torch.from_numpy(ref)
        refs = to_last(refs) if layout == "last" else refs.contiguous()
        ybits, rbits = bits_of(ys), round_to(refs.numpy().reshape(-1), adt)
        ulps = np.abs(ordered(ybits) - ordered(rbits))
        idx = np.nonzero(ulps)[0]
        hist = [int(np.sum(ulps == 1)), int(np.sum(ulps == 2)), int(np.sum(ulps > 2))]
        smax = int(ulps.max()) if ulps.size else 0
        umax = max(umax, smax)
        serr = float(np.abs(ys.double().numpy().reshape(-1) - refs.numpy().reshape(-1)).max())
        emax = max(emax, serr)
        tot += np.array([ulps.size, idx.size] + hist)

        dims = list(x.shape)
        if layer in ("bn", "in", "gn"):
            n, sp = dims[0], 1
            for d in dims[2:]:
                sp *= d
        else:
            n = sp = 0
        sid = "%s_s%d" % (ident, k)
        # variants that differ only in the parameter dtype share their input
        xkey = "g_%s_%s_s%d_x" % (base, DT_NAME[adt], k)
        if xkey not in w.shared:
            w.shared[xkey] = w.u16(xkey, bits_of(xs))
        xa = w.shared[xkey]
        ya = w.u16(sid + "_y", ybits)
        rm = w.vec(sid + "_rm", mod.running_mean if track else None)
        rv = w.vec(sid + "_rv", mod.running_var if track else None)
        nbt = int(mod.num_batches_tracked) if getattr(mod, "num_batches_tracked", None) is not None else 0
        di = w.i32(sid + "_di", idx) if idx.size else "NULL"
        dr = w.u16(sid + "_dr", rbits[idx]) if idx.size else "NULL"
        step_inits.append(
            "    {%d, %d, {%s}, %d, %d, %d, %s, %s, %s, %s, %d, %d, %s, %s, {%d, %d, %d}, %d, %s}," % (
                int(training), len(dims), ", ".join(str(d) for d in dims), n, sp, x.numel(),
                xa, ya, rm, rv, nbt, idx.size, di, dr, hist[0], hist[1], hist[2], smax, fmt(serr)))

    w.names.add(name)
    w.arrays.append("static const gold_lp_step %s_steps[%d] = {\n%s\n};\n" % (
        ident, len(step_inits), "\n".join(step_inits)))
    weight = w.vec(ident + "_w", mod.weight if affine else None)
    bias = w.vec(ident + "_b", mod.bias if affine else None)
    stats_dt = mod.running_mean.dtype if track else None
    ns = list(norm_shape) + [0] * (3 - len(norm_shape))
    w.cases.append(
        '    {"%s", %s, %d, %s, %d, %d, %d, %d, %r, %r, %d, %d, {%s}, %s, 0.01f, %d,\n'
        '     %s, %s, %s, %s, %s, %d, %s_steps},' % (
            name, LAYER[layer], spatial_rank,
            "NK_CHANNELS_LAST" if layout == "last" else "NK_CHANNELS_FIRST",
            C, affine, track, int(cumulative), float(momentum), float(mod.eps), groups, len(norm_shape),
            ", ".join(str(d) for d in ns), ACT[act], ROUNDS_TWICE[act],
            DT_CODE[adt], DT_CODE[pdt if affine else None], DT_CODE[stats_dt], weight, bias,
            len(step_inits), ident))
    w.summary.append((name, layer, adt, pdt, act, layout, *tot.tolist(), umax, emax))


def emit(w, base, layer, mod32, steps_spec, **kw):
    """Every (activation dtype, parameter dtype) combination of one case."""
    what = kw.pop("what")
    for adt in ACT_DTYPES:
        pdts = [None] if param_dtype(mod32) is None else [F32, adt]
        for pdt in pdts:
            key = (what.split("+")[0], DT_NAME[adt], DT_NAME[pdt])
            try:
                run_case(w, base, layer, mod32, steps_spec, adt, pdt, **kw)
                w.accepted[key] = w.accepted.get(key, 0) + 1
            except Unsupported as e:
                w.rejected.setdefault(key, str(e))


# ---------------------------------------------------------------------------
# cases


def bn_cases(w):
    spec = {  # name: (module class, spatial_rank, input shape)
        "bn1d_2d": (nn.BatchNorm1d, 1, (5, 4)),
        "bn1d_3d": (nn.BatchNorm1d, 1, (2, 4, 5)),
        "bn2d": (nn.BatchNorm2d, 2, (2, 4, 3, 3)),
        "bn3d": (nn.BatchNorm3d, 3, (2, 4, 2, 2, 2)),
    }
    for base, (cls, rank, shape) in spec.items():
        what = "BatchNorm%s" % base[2:4]
        for mom_name, mom in (("m01", 0.1), ("mnone", None)):
            if mom is None and base == "bn1d_3d":
                continue  # momentum=None: bn1d_2d, bn2d, bn3d
            layouts = ["first"] + (["last"] if len(shape) > 2 and mom == 0.1 else [])
            for layout in layouts:
                cname = "%s_%s%s" % (base, mom_name, "_cl" if layout == "last" else "")
                seed_for(cname)
                mod = cls(shape[1], momentum=mom)
                set_affine(mod, (shape[1],))
                steps = [(True, rand_input(shape)) for _ in range(3)] + [(False, rand_input(shape))]
                emit(w, cname, "bn", mod, steps, what=what, spatial_rank=rank, layout=layout, C=shape[1],
                     cumulative=mom is None, momentum=0.0 if mom is None else mom)
    # affine=False: the running statistics alone carry the parameter dtype
    seed_for("bn2d_m01_noaffine")
    mod = nn.BatchNorm2d(4, affine=False)
    steps = [(True, rand_input((2, 4, 3, 4))) for _ in range(2)] + [(False, rand_input((2, 4, 3, 4)))]
    emit(w, "bn2d_m01_noaffine", "bn", mod, steps, what="BatchNorm2d", spatial_rank=2, C=4)
    # track_running_stats=False: batch statistics in training and in eval
    seed_for("bn2d_notrack")
    mod = nn.BatchNorm2d(4, track_running_stats=False)
    set_affine(mod, (4,))
    steps = [(True, rand_input((2, 4, 3, 4))), (False, rand_input((2, 4, 3, 4)))]
    emit(w, "bn2d_notrack", "bn", mod, steps, what="BatchNorm2d", spatial_rank=2, C=4)
    # odd channel count past a vector width, momentum 0.3, eps 1e-3, both layouts
    for layout in ("first", "last"):
        cname = "bn2d_c19_m03" + ("_cl" if layout == "last" else "")
        seed_for(cname)
        mod = nn.BatchNorm2d(19, momentum=0.3, eps=1e-3)
        set_affine(mod, (19,))
        steps = [(True, rand_input((1, 19, 2, 2))), (False, rand_input((1, 19, 2, 2)))]
        emit(w, cname, "bn", mod, steps, what="BatchNorm2d", spatial_rank=2, layout=layout, C=19, momentum=0.3)


def in_cases(w):
    spec = {
        "in1d": (nn.InstanceNorm1d, 1, (3, 4, 5)),
        "in2d": (nn.InstanceNorm2d, 2, (2, 4, 3, 4)),
    }
    for base, (cls, rank, shape) in spec.items():
        C = shape[1]
        what = "InstanceNorm%s" % base[2:4]
        for variant in ("default", "affine", "track"):
            layouts = ["first"] + (["last"] if variant == "affine" else [])
            for layout in layouts:
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
                emit(w, cname, "in", mod, steps, what=what, spatial_rank=rank, layout=layout, C=C)


def gn_cases(w):
    # (G, shape, layouts, affine variants)
    spec = (
        (1, (1, 64, 3), ("first",), (1, 0)),
        (2, (1, 64, 3), ("first",), (1, 0)),
        (32, (1, 64, 3), ("first",), (1, 0)),
        (32, (2, 64), ("first",), (1,)),              # spatial 1: two values per group
        (32, (1, 64, 3, 3), ("first",), (1,)),
        (2, (1, 64, 2, 2), ("last",), (1,)),
        (32, (1, 64, 2, 2), ("last",), (1,)),
    )
    for G, shape, layouts, affs in spec:
        for layout in layouts:
            for aff in affs:
                cname = "gn_c64_g%d_%s%s%s" % (G, "x".join(map(str, shape)), "" if aff else "_noaffine",
                                               "_cl" if layout == "last" else "")
                seed_for(cname)
                mod = nn.GroupNorm(G, 64, affine=bool(aff))
                set_affine(mod, (64,))
                emit(w, cname, "gn", mod, [(True, rand_input(shape))], what="GroupNorm", C=64, groups=G,
                     layout=layout)


def ln_cases(w):
    for shape, ns, affs in (((3, 7), (7,), (1, 0)), ((4, 15), (15,), (1,)), ((4, 16), (16,), (1,)),
                            ((4, 37), (37,), (1, 0)), ((3, 5, 6), (5, 6), (1,)),
                            ((2, 768), (768,), (1,)), ((1, 768), (768,), (0,))):
        for aff in affs:
            cname = "ln_%s_ns%s%s" % ("x".join(map(str, shape)), "x".join(map(str, ns)),
                                      "" if aff else "_noaffine")
            seed_for(cname)
            mod = nn.LayerNorm(ns, elementwise_affine=bool(aff))
            set_affine(mod, ns)
            P = 1
            for d in ns:
                P *= d
            emit(w, cname, "ln", mod, [(True, ln_input(shape, len(ns)))], what="LayerNorm", C=P, norm_shape=ns)


def act_cases(w):
    for act in ("relu", "silu", "gelu"):
        cname = "act_%s_bn2d" % act
        seed_for(cname)
        mod = nn.BatchNorm2d(4)
        set_affine(mod, (4,))
        steps = [(True, rand_input((2, 4, 2, 3))), (False, rand_input((2, 4, 2, 3)))]
        emit(w, cname, "bn", mod, steps, what="BatchNorm2d+" + act, spatial_rank=2, C=4, act=act)
        cname = "act_%s_ln" % act
        seed_for(cname)
        mod = nn.LayerNorm((24,))
        set_affine(mod, (24,))
        emit(w, cname, "ln", mod, [(True, ln_input((4, 24), 1))], what="LayerNorm+" + act, C=24,
             norm_shape=(24,), act=act)
    cname = "act_silu_gn"
    seed_for(cname)
    mod = nn.GroupNorm(4, 8)
    set_affine(mod, (8,))
    emit(w, cname, "gn", mod, [(True, rand_input((2, 8, 5)))], what="GroupNorm+silu", C=8, groups=4, act="silu")


def probe_more(w):
    """Combinations no case above tries: the activations alone on 16-bit tensors,
    and BatchNorm / InstanceNorm with weight and bias in one dtype and the
    running statistics in the other. Recorded in the accepted / rejected lists."""
    for adt in ACT_DTYPES:
        for act in ("relu", "silu", "gelu"):
            key = (act + " alone", DT_NAME[adt], "none")
            try:
                ACT_FN[act](torch.linspace(-3, 3, 7).to(adt))
                w.accepted[key] = 0
            except RuntimeError as e:
                w.rejected[key] = str(e).splitlines()[0]
    x = torch.linspace(-2, 2, 24).view(2, 4, 3)
    for what, cls, kw in (("BatchNorm1d", nn.BatchNorm1d, {}),
                          ("InstanceNorm1d", nn.InstanceNorm1d, {"affine": True, "track_running_stats": True})):
        for adt in ACT_DTYPES:
            for pdt, sdt in ((F32, adt), (adt, F32)):
                mod = cls(4, **kw)
                mod.weight.data, mod.bias.data = mod.weight.data.to(pdt), mod.bias.data.to(pdt)
                mod.running_mean, mod.running_var = mod.running_mean.to(sdt), mod.running_var.to(sdt)
                key = (what, DT_NAME[adt], "%s, running stats %s" % (DT_NAME[pdt], DT_NAME[sdt]))
                try:
                    with torch.no_grad():
                        mod(x.to(adt))
                    w.accepted[key] = 0
                except RuntimeError as e:
                    w.rejected[key] = str(e).splitlines()[0]


# ---------------------------------------------------------------------------

HEADER = """/* Generated by tests/gen_golden_lowp.py from PyTorch %s (CPU). Do not edit.
 * Regenerate: /usr/bin/python3 tests/gen_golden_lowp.py
 * %d cases, %d stored values.
 *
 * 16-bit golden vectors: x and y as bit patterns (uint16_t) of the activation
 * dtype; weight, bias and running statistics in the module's dtype (float32 or
 * the activation dtype), as torch holds them. Channels-last cases store x, y
 * and the reference in NLC / NHWC / NDHWC order.
 *
 * The float64 reference of a step (the operation evaluated in float64 on the
 * upcast 16-bit input, parameters and, in eval, running statistics, then
 * rounded once to the activation dtype) equals y except at the ndiff indices
 * diff_idx, where it is diff_ref; gold_lp_ref_fill() expands it. ulp_hist
 * counts the elements where torch's y is 1, 2 and more than 2 ulps from it.
 *
 * torch_rounds_twice: torch rounded norm(x) to the activation dtype before the
 * activation (SiLU, GELU), so its y is comparable with a once-rounded fused
 * result only within 1-2 ulps where the activation is moderate, and much less
 * in GELU's negative tail (128 ulps on a -1e-7 output here): compare normkit
 * with the reference there, not with torch's y.
 *
 * Dtype combinations PyTorch %s rejected on CPU (no cases generated):
%s
 *
 * torch's y against the correctly rounded float64 reference (elements; ulps
 * counted through zero, so a near-zero output torch gets slightly wrong
 * shows as thousands; max|err| = largest |y - unrounded float64 result|):
%s
 */
#ifndef NK_TORCH_GOLDEN_LOWP_H
#define NK_TORCH_GOLDEN_LOWP_H

#include <stddef.h>
#include <stdint.h>

#include "normkit.h"

/* Element types of the recorded tensors. */
#define GOLD_LP_NONE 0 /* no such tensor (no affine / no running statistics) */
#define GOLD_LP_F32 1  /* float values in gold_lp_array.f32 */
#define GOLD_LP_BF16 2 /* bfloat16 bit patterns in gold_lp_array.u16 */
#define GOLD_LP_F16 3  /* IEEE binary16 bit patterns in gold_lp_array.u16 */

/* A per-channel vector in its dtype: at most one of f32 / u16 is non-NULL. */
typedef struct gold_lp_array {
    const float *f32;
    const uint16_t *u16;
} gold_lp_array;

/* One forward call of the torch module. */
typedef struct gold_lp_step {
    int training;             /* module.train(training) before the call */
    int ndim;                 /* torch input rank */
    int64_t dims[5];          /* torch input extents (channels-first, as torch takes them) */
    int64_t n, spatial;       /* nk_shape n / spatial (BatchNorm, InstanceNorm, GroupNorm) */
    int64_t numel;
    const uint16_t *x;        /* input bits in the case layout */
    const uint16_t *y;        /* torch's output bits in the case layout */
    gold_lp_array rmean, rvar; /* running statistics after the call, in stats_dtype */
    int64_t nbt;              /* num_batches_tracked after the call (0 when none) */
    int64_t ndiff;            /* elements where y differs from the float64 reference */
    const int32_t *diff_idx;  /* their indices (ascending; NULL when ndiff == 0) */
    const uint16_t *diff_ref; /* the reference's bits there */
    int64_t ulp_hist[3];      /* of those: 1 ulp, 2 ulps, more than 2 ulps apart */
    int32_t max_ulp;          /* largest |y - reference| in ulps (counted through zero) */
    float max_abs_err;        /* largest |y - unrounded float64 result| */
} gold_lp_step;

typedef struct gold_lp_case {
    const char *name;
    nk_layer layer;
    int spatial_rank;         /* 1/2/3 for BatchNormNd / InstanceNormNd */
    nk_layout layout;         /* layout of the stored x, y and reference */
    int64_t c;                /* num_features, num_channels, or prod(normalized_shape) */
    int affine, track, cumulative;
    double momentum, eps;     /* momentum in torch's convention; cumulative: momentum=None */
    int64_t groups;
    int norm_ndim;
    int64_t norm_shape[3];
    nk_activation act;        /* applied in torch after the norm */
    float alpha;
    int torch_rounds_twice;   /* see above */
    int act_dtype;            /* GOLD_LP_BF16 or GOLD_LP_F16: x and y */
    int param_dtype;          /* weight and bias (GOLD_LP_NONE without affine) */
    int stats_dtype;          /* running statistics (GOLD_LP_NONE without them) */
    gold_lp_array weight, bias;
    int nsteps;
    const gold_lp_step *steps;
} gold_lp_case;

/* The float64 reference of step s, rounded to the dtype, into ref[numel]. */
static inline void gold_lp_ref_fill(const gold_lp_step *s, uint16_t *ref)
{
    for (int64_t i = 0; i < s->numel; i++)
        ref[i] = s->y[i];
    for (int64_t k = 0; k < s->ndiff; k++)
        ref[s->diff_idx[k]] = s->diff_ref[k];
}

"""


def summary_rows(w):
    """Per (layer, dtypes, activation) totals and per case lines."""
    groups = {}
    for (name, layer, adt, pdt, act, layout, numel, ndiff, u1, u2, umore, umax, emax) in w.summary:
        key = (layer, DT_NAME[adt], DT_NAME[pdt], act or "-")
        g = groups.setdefault(key, [0, 0, 0, 0, 0, 0, 0, 0.0])
        for i, v in enumerate((1, numel, ndiff, u1, u2, umore)):
            g[i] += v
        g[6] = max(g[6], umax)
        g[7] = max(g[7], emax)
    head = "%-6s %-5s %-5s %-5s %5s %8s %7s %6s %6s %6s %6s %8s" % (
        "layer", "x", "param", "act", "cases", "elements", "differ", "1ulp", "2ulp", ">2ulp", "maxulp", "max|err|")
    rows = [head]
    for key in sorted(groups, key=lambda k: ("bn in gn ln".split().index(k[0]), k[3] != "-", k)):
        g = groups[key]
        rows.append("%-6s %-5s %-5s %-5s %5d %8d %7d %6d %6d %6d %6d %8.2g" % (key + tuple(g)))
    return rows


def main():
    torch.set_num_threads(1)
    w = Writer()
    bn_cases(w)
    in_cases(w)
    gn_cases(w)
    ln_cases(w)
    act_cases(w)
    probe_more(w)

    rejected = ["%s, x %s, params %s: %s" % (k + (m,)) for k, m in sorted(w.rejected.items())]
    rows = summary_rows(w)
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    with open(OUT, "w") as f:
        f.write(HEADER % (torch.__version__, len(w.cases), w.nvalues, torch.__version__,
                          "\n".join(" *   " + r.replace("*/", "* /") for r in rejected),
                          "\n".join(" *   " + r for r in rows)))
        f.write("\n".join(w.arrays))
        f.write("\nstatic const gold_lp_case gold_lp_cases[%d] = {\n%s\n};\n\n#endif\n" % (
            len(w.cases), "\n".join(w.cases)))

    print("PyTorch %s, CPU" % torch.__version__)
    print("\naccepted (cases generated):")
    for k in sorted(w.accepted):
        print("  %-14s x %-4s params %-4s %s" % (k + (w.accepted[k] or "(probe)",)))
    print("\nrejected (skipped):")
    for r in rejected:
        print("  " + r)
    print("\nper case: torch's y against the float64 reference rounded to the dtype")
    print("  %-34s %7s %7s %5s %5s %5s %6s %8s" % ("case", "numel", "differ", "1ulp", "2ulp", ">2", "maxulp",
                                                  "max|err|"))
    for (name, layer, adt, pdt, act, layout, numel, ndiff, u1, u2, umore, umax, emax) in w.summary:
        print("  %-34s %7d %7d %5d %5d %5d %6d %8.2g" % (name, numel, ndiff, u1, u2, umore, umax, emax))
    print("\nsummary:")
    for r in rows:
        print("  " + r)
    print("\nwrote %s: %d cases, %d values, %d bytes" % (OUT, len(w.cases), w.nvalues, os.path.getsize(OUT)))


if __name__ == "__main__":
    sys.exit(main())
