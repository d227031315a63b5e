"""normkit.torch at the operator level: every output of aten::native_batch_norm,
native_layer_norm and native_group_norm and of their backward operators
(values, dtypes, shapes, memory formats, undefined outputs), running
statistics, gradients through autograd, the fallback to ATen, thread-count
independence and enable()/disable()."""
import copy
import itertools
import unittest

import torch
import torch.nn.functional as F

from common import nt, rel_err, run_both, served, fallen_back

CL = torch.channels_last
CL3 = torch.channels_last_3d
F32_TOL = 1e-5   # fp32: relative to the largest magnitude
# bf16: normkit's outputs are compared with the fp64 result, and must be
# within BF16_TOL of it (relative to the largest magnitude: 2.5 bf16 ulps) or
# at least as close to it as ATen's bf16 outputs are (ATen 1.13 rounds
# intermediates to bf16 and is far off in places, e.g. GroupNorm of
# two-element groups)
BF16_TOL = 1e-2
NO_CALLS = {op: (0, 0) for op in ("batch_norm", "layer_norm", "group_norm", "batch_norm_backward",
                                  "layer_norm_backward", "group_norm_backward")}


def same_meta(test, a, b):
    test.assertEqual(a.dtype, b.dtype)
    test.assertEqual(tuple(a.shape), tuple(b.shape))
    test.assertEqual(a.stride(), b.stride())


class Base(unittest.TestCase):
    def setUp(self):
        torch.manual_seed(1234)
        nt.disable()
        nt.stats(reset=True)

    def tearDown(self):
        nt.disable()

    def bitwise_over_threads(self, run):
        """run() under normkit at 1, 2 and 3 intra-op threads: the same bits"""
        saved = torch.get_num_threads()
        nt.enable()
        try:
            outs = []
            for t in (1, 2, 3):
                torch.set_num_threads(t)
                outs.append(run())
        finally:
            torch.set_num_threads(saved)
        for o in outs[1:]:
            for a, b in zip(outs[0], o):
                self.assertTrue(torch.equal(a, b))

    def check(self, ref, got, tol, what="", truth=None):
        self.assertEqual(len(ref), len(got), what)
        for i, (r, g) in enumerate(zip(ref, got)):
            if r is None:  # an output not asked for
                self.assertIsNone(g, "%s output %d" % (what, i))
                continue
            self.assertIsNotNone(g, "%s output %d" % (what, i))
            same_meta(self, g, r)
            if truth is None:
                self.assertLessEqual(rel_err(g, r), tol, "%s output %d" % (what, i))
            else:
                t = truth[i]
                self.assertLessEqual(rel_err(g, t), max(tol, rel_err(r, t)),
                                     "%s output %d" % (what, i))


class BatchNorm(Base):
    def bn_case(self, shape, fmt=None, dtype=torch.float32, pdtype=torch.float32,
                training=True, affine=True, running=True, momentum=0.1, eps=1e-5):
        c = shape[1]
        x = (torch.randn(shape) * 3 + 1).to(dtype)
        if fmt is not None:
            x = x.contiguous(memory_format=fmt)
        w = torch.randn(c).to(pdtype) if affine else None
        b = torch.randn(c).to(pdtype) if affine else None
        rm0 = torch.randn(c).to(pdtype) if running else None
        rv0 = (torch.rand(c) + 0.5).to(pdtype) if running else None
        runs = []

        def fn(to=None):
            def cv(t):
                return t if t is None or to is None else t.to(to)
            rm = cv(rm0.clone()) if running else None
            rv = cv(rv0.clone()) if running else None
            out = torch.ops.aten.native_batch_norm(cv(x), cv(w), cv(b), rm, rv, training,
                                                   momentum, eps)
            runs.append((rm, rv))
            return out

        ref, got, st = run_both(fn)
        truth = None
        if dtype != torch.float32:
            nt.disable()
            truth = fn(torch.float64)
            if not running:
                truth = truth[:1] + tuple(t.to(got[1].dtype).double() for t in got[1:])
        tol = F32_TOL if dtype == torch.float32 else BF16_TOL
        what = "bn %s %s %s/%s train=%s" % (shape, fmt, dtype, pdtype, training)
        self.check(ref, got, tol, what, truth)
        self.assertEqual(served(st, "batch_norm"), 1, what)
        self.assertEqual(fallen_back(st), 0, what)
        if running:
            rtol = F32_TOL if pdtype == torch.float32 else BF16_TOL
            for i, (r, g) in enumerate(zip(runs[0], runs[1])):
                self.assertEqual(r.dtype, g.dtype)
                t = runs[2][i] if truth is not None else r
                self.assertLessEqual(rel_err(g, t), max(rtol, rel_err(r, t)),
                                     what + " running stats")
        return ref, got

    def test_layouts_fp32(self):
        for shape, fmt in [((8, 5), None), ((4, 6, 33), None), ((4, 6, 7, 9), None),
                           ((4, 6, 7, 9), CL), ((2, 5, 3, 4, 6), None), ((2, 5, 3, 4, 6), CL3),
                           ((16, 64, 24, 24), CL)]:
            for training in (True, False):
                self.bn_case(shape, fmt, training=training)

    def test_options(self):
        self.bn_case((4, 6, 7, 9), affine=False)
        self.bn_case((4, 6, 7, 9), running=False)
        self.bn_case((4, 6, 7, 9), affine=False, running=False)
        self.bn_case((4, 6, 7, 9), momentum=0.0, eps=0.0)
        self.bn_case((4, 6, 7, 9), momentum=1.0, eps=1e-1)
        self.bn_case((1, 6, 2), momentum=0.3)  # two values per channel

    def test_eval_stats_empty(self):
        ref, got = self.bn_case((4, 6, 7, 9), training=False)
        self.assertEqual(got[1].numel(), 0)

    def test_bf16(self):
        for fmt in (torch.contiguous_format, CL):
            for training in (True, False):
                # bf16 input, fp32 parameters and statistics (saved stats fp32)
                _, got = self.bn_case((4, 6, 7, 9), fmt, torch.bfloat16, torch.float32, training)
                if training:
                    self.assertEqual(got[1].dtype, torch.float32)
                # all bf16 (a module converted with .to(torch.bfloat16))
                _, got = self.bn_case((4, 6, 7, 9), fmt, torch.bfloat16, torch.bfloat16, training)
                if training:
                    self.assertEqual(got[1].dtype, torch.bfloat16)

    def test_instance_norm(self):
        for fmt in (torch.contiguous_format, CL):
            x = torch.randn(3, 5, 8, 8).contiguous(memory_format=fmt) * 2 + 3
            w, b = torch.randn(5), torch.randn(5)
            rm0, rv0 = torch.zeros(5), torch.ones(5)
            runs = []

            def fn():
                rm, rv = rm0.clone(), rv0.clone()
                y = F.instance_norm(x, rm, rv, w, b, use_input_stats=True, momentum=0.2)
                runs.append((rm, rv))
                return (y,)

            ref, got, st = run_both(fn)
            self.check(ref, got, F32_TOL, "instance_norm")
            self.assertEqual(served(st, "batch_norm"), 1)
            for r, g in zip(*runs):
                self.assertLessEqual(rel_err(g, r), F32_TOL)

    def test_fallback(self):
        x = torch.randn(4, 6, 5, 5)
        w, b, rm, rv = torch.randn(6), torch.randn(6), torch.zeros(6), torch.ones(6)
        cases = {
            "float64": lambda: F.batch_norm(x.double(), rm.double().clone(), rv.double().clone(),
                                            w.double(), b.double(), True),
            "strided": lambda: F.batch_norm(x.transpose(2, 3), rm.clone(), rv.clone(), w, b, True),
            "sliced": lambda: F.batch_norm(x[:, :, ::2], rm.clone(), rv.clone(), w, b, False),
            "momentum outside [0, 1]": lambda: torch.ops.aten.native_batch_norm(
                x, w, b, rm.clone(), rv.clone(), True, 1.5, 1e-5),
            "one value per channel": lambda: torch.ops.aten.native_batch_norm(
                x[:1, :, :1, :1], w, b, rm.clone(), rv.clone(), True, 0.1, 1e-5),
        }
        for name, fn in cases.items():
            ref, got, st = run_both(fn)
            if isinstance(ref, torch.Tensor):
                ref, got = (ref,), (got,)
            for r, g in zip(ref, got):
                same_meta(self, g, r)
                self.assertTrue(torch.equal(g, r) or torch.allclose(g, r, equal_nan=True), name)
            self.assertEqual(served(st), 0, name)
            self.assertEqual(fallen_back(st, "batch_norm"), 1, name)
        # ATen's own errors come through
        for fn in (lambda: torch.ops.aten.native_batch_norm(x.bfloat16(), w.bfloat16(), b, rm, rv,
                                                            True, 0.1, 1e-5),
                   lambda: F.batch_norm(x, None, None, w, b, training=False)):
            nt.enable()
            with self.assertRaises(RuntimeError):
                fn()

    def test_backward(self):
        for fmt in (torch.contiguous_format, CL):
            x0 = torch.randn(4, 6, 5, 5).contiguous(memory_format=fmt)
            w0, b0 = torch.randn(6), torch.randn(6)
            g = torch.randn(4, 6, 5, 5)

            def fn():
                x = x0.clone().requires_grad_()
                w = w0.clone().requires_grad_()
                b = b0.clone().requires_grad_()
                y = F.batch_norm(x, None, None, w, b, training=True)
                (y * g).sum().backward()
                return y, x.grad, w.grad, b.grad

            ref, got, st = run_both(fn)
            self.assertEqual(served(st, "batch_norm"), 1)
            for r, o in zip(ref, got):
                self.assertLessEqual(rel_err(o, r), 1e-5)


class LayerNorm(Base):
    def test_shapes_dtypes(self):
        for shape, norm in [((5, 16), (16,)), ((3, 7, 64), (64,)), ((2, 3, 4, 5), (4, 5)),
                            ((9, 1000), (1000,)), ((4, 96, 256), (256,))]:
            for dtype in (torch.float32, torch.bfloat16):
                for affine, bias in ((True, True), (True, False), (False, False)):
                    x = (torch.randn(shape) * 2 - 1).to(dtype)
                    w = torch.randn(norm).to(dtype) if affine else None
                    b = torch.randn(norm).to(dtype) if bias else None
                    def fn(to=None):
                        def cv(t):
                            return t if t is None or to is None else t.to(to)
                        return torch.ops.aten.native_layer_norm(cv(x), list(norm), cv(w), cv(b),
                                                                1e-5)
                    ref, got, st = run_both(fn)
                    truth = fn(torch.float64) if dtype != torch.float32 else None
                    tol = F32_TOL if dtype == torch.float32 else BF16_TOL
                    self.check(ref, got, tol, "ln %s %s" % (shape, dtype), truth)
                    self.assertEqual(served(st, "layer_norm"), 1)

    def test_fallback_and_backward(self):
        x0 = torch.randn(6, 10, 32)
        for x in (x0.double(), x0[:0]):
            ref, got, st = run_both(lambda: F.layer_norm(x, (32,)))
            self.assertTrue(torch.equal(got, ref))
            self.assertEqual(fallen_back(st, "layer_norm"), 1)
            self.assertEqual(served(st), 0)
        # strided input: normalized from a contiguous copy, as ATen does
        xt = x0.transpose(0, 1)
        ref, got, st = run_both(lambda: torch.ops.aten.native_layer_norm(xt, [32], None, None,
                                                                         1e-5))
        self.check(ref, got, F32_TOL, "ln strided")
        self.assertEqual(st["layer_norm"], (1, 0))
        w0, b0, g = torch.randn(32), torch.randn(32), torch.randn(6, 10, 32)

        def fn():
            x = x0.clone().requires_grad_()
            w = w0.clone().requires_grad_()
            b = b0.clone().requires_grad_()
            y = F.layer_norm(x, (32,), w, b)
            (y * g).sum().backward()
            return y, x.grad, w.grad, b.grad

        ref, got, st = run_both(fn)
        self.assertEqual(served(st, "layer_norm"), 1)
        for r, o in zip(ref, got):
            self.assertLessEqual(rel_err(o, r), 1e-5)


class GroupNorm(Base):
    def test_layouts_dtypes(self):
        for shape, groups, fmt in [((2, 6, 4, 5), 3, None), ((2, 6, 4, 5), 3, CL),
                                   ((4, 32, 16, 16), 8, None), ((4, 32, 16, 16), 8, CL),
                                   ((3, 12, 50), 4, None), ((2, 8, 3, 4, 5), 2, CL3),
                                   ((5, 4), 2, None)]:
            for dtype in (torch.float32, torch.bfloat16):
                x = (torch.randn(shape) + 2).to(dtype).contiguous(
                    memory_format=fmt or torch.contiguous_format)
                c = shape[1]
                w, b = torch.randn(c).to(dtype), torch.randn(c).to(dtype)
                hxw = x.numel() // (shape[0] * c)
                def fn(to=None):
                    def cv(t):
                        return t if to is None else t.to(to)
                    return torch.ops.aten.native_group_norm(cv(x), cv(w), cv(b), shape[0], c,
                                                            hxw, groups, 1e-5)
                ref, got, st = run_both(fn)
                truth = fn(torch.float64) if dtype != torch.float32 else None
                tol = F32_TOL if dtype == torch.float32 else BF16_TOL
                self.check(ref, got, tol, "gn %s %s %s" % (shape, fmt, dtype), truth)
                self.assertEqual(served(st, "group_norm"), 1)

    def test_fallback_and_backward(self):
        x0 = torch.randn(4, 8, 6, 6)
        for fn in (lambda: F.group_norm(x0.double(), 4),
                   lambda: F.group_norm(x0[:0], 4)):
            ref, got, st = run_both(fn)
            self.assertTrue(torch.equal(got, ref))
            self.assertEqual(fallen_back(st, "group_norm"), 1)
            self.assertEqual(served(st), 0)
        # ATen's own error for a strided input comes through
        nt.enable()
        with self.assertRaises(RuntimeError):
            torch.ops.aten.native_group_norm(x0.transpose(2, 3), None, None, 4, 8, 36, 4, 1e-5)
        self.assertEqual(nt.stats(reset=True)["group_norm"], (0, 1))
        w0, b0, g = torch.randn(8), torch.randn(8), torch.randn(4, 8, 6, 6)
        for fmt in (torch.contiguous_format, CL):
            def fn():
                x = x0.clone(memory_format=fmt).requires_grad_()
                w = w0.clone().requires_grad_()
                b = b0.clone().requires_grad_()
                y = F.group_norm(x, 4, w, b)
                (y * g).sum().backward()
                return y, x.grad, w.grad, b.grad

            ref, got, st = run_both(fn)
            self.assertEqual(served(st, "group_norm"), 1)
            for r, o in zip(ref, got):
                self.assertLessEqual(rel_err(o, r), 1e-5)


# ---- backward operators -------------------------------------------------------
#
# Gradients are compared with the fp64 gradients of the same computation
# (ATen in float64 from the same inputs and saved statistics): normkit's
# error (max |difference| relative to the largest magnitude) must be within
# GRAD_F32_TOL (fp32) or BF16_TOL (bf16 outputs, rounded once from fp32), or
# at most GRAD_FACTOR times ATen's own error. normkit sums dy and
# dy * (x - mean) in fp32 within chunks and in fp64 across them, ATen in
# another order (fp32 throughout on channels-last BatchNorm), so the two fp32
# results differ in the last bits of those sums, most where dx is a small
# difference of large terms; ATen's fp32 error itself can exceed 1e-5 there.
GRAD_F32_TOL = 1e-5
GRAD_FACTOR = 2.0
# every output_mask that asks for something
MASKS = [list(m) for m in itertools.product((False, True), repeat=3) if any(m)]
A = torch.ops.aten


def to(t, dtype):
    """t converted to dtype (None: t itself; so are undefined tensors)"""
    return t if t is None or dtype is None else t.to(dtype)


def fmt_of(shape, fmt):
    return torch.randn(shape).contiguous(memory_format=fmt or torch.contiguous_format)


class Backward(Base):
    def grad_check(self, ref, got, truth, lowp, what):
        """ref, got, truth: the outputs of ATen, normkit and ATen in fp64"""
        tol = BF16_TOL if lowp else GRAD_F32_TOL
        self.assertEqual(len(ref), len(got), what)
        for i, (r, g, t) in enumerate(zip(ref, got, truth)):
            if r is None:  # not asked for
                self.assertIsNone(g, "%s output %d" % (what, i))
                continue
            self.assertIsNotNone(g, "%s output %d" % (what, i))
            same_meta(self, g, r)
            e, e_aten = rel_err(g, t), rel_err(r, t)
            self.assertLessEqual(e, max(tol, GRAD_FACTOR * e_aten),
                                 "%s output %d: normkit vs fp64 %.3g, ATen vs fp64 %.3g"
                                 % (what, i, e, e_aten))

    def op_case(self, op, fn, what, lowp=False):
        """fn(dtype) calls a backward operator with its tensors converted to
        dtype (None: as they are); normkit must serve the call"""
        ref, got, st = run_both(lambda: fn(None))
        self.grad_check(ref, got, fn(torch.float64), lowp, what)
        self.assertEqual(st[op], (1, 0), what)

    def autograd_case(self, op, module, x, what, needs=(True, True, True), lowp=False,
                      calls=1):
        """y = module(x) and the gradients of (x, weight, bias) that needs
        asks for, for a random grad_output in x's memory format, through
        autograd; normkit must serve `calls` forward and backward calls"""
        g = torch.randn(x.shape).contiguous(memory_format=x_format(x))

        def run(dtype=None):
            m = copy.deepcopy(module)
            if dtype is not None:
                m = m.to(dtype)
            xi = to(x, dtype).detach().clone().requires_grad_(needs[0])
            ps = (m.weight, m.bias)
            for p, need in zip(ps, needs[1:]):
                if p is not None:
                    p.requires_grad_(need)
            y = m(xi)
            y.backward(g.to(y.dtype))
            return (y.detach(), xi.grad) + tuple(
                p.grad if p is not None else None for p in ps)

        ref, got, st = run_both(run)
        self.grad_check(ref, got, run(torch.float64), lowp, what)
        fwd = op[:-len("_backward")]
        self.assertEqual(st[fwd], (calls, 0), what)
        self.assertEqual(st[op], (calls, 0), what)

    def fallback_case(self, op, fn, what):
        """fn() under ATen and under normkit: the same outputs, or both a
        RuntimeError; normkit's backward leaves the call to ATen"""
        def safe():
            try:
                return fn()
            except RuntimeError as e:
                return e
        ref, got, st = run_both(safe)
        if isinstance(ref, RuntimeError):
            self.assertIsInstance(got, RuntimeError, what)
        else:
            for r, g in zip(ref, got):
                if r is None:
                    self.assertIsNone(g, what)
                else:
                    same_meta(self, g, r)
                    self.assertTrue(torch.equal(g, r) or torch.allclose(g, r, equal_nan=True),
                                    what)
        self.assertEqual(st[op], (0, 1), what)


def x_format(x):
    for fmt in (torch.contiguous_format, CL, CL3):
        if x.dim() == {CL: 4, CL3: 5}.get(fmt, x.dim()) and x.is_contiguous(memory_format=fmt):
            return fmt
    return torch.contiguous_format


class BatchNormBackward(Backward):
    def test_op(self):
        # every output_mask, with and without weight, training and eval
        for shape, fmt in [((8, 5), None), ((4, 6, 33), None), ((4, 6, 7, 9), None),
                           ((4, 6, 7, 9), CL), ((2, 5, 3, 4, 6), None), ((2, 5, 3, 4, 6), CL3)]:
            c = shape[1]
            x = fmt_of(shape, fmt) * 3 + 1
            g = fmt_of(shape, fmt)
            w, rm, rv = torch.randn(c), torch.randn(c), torch.rand(c) + 0.5
            for train in (True, False):
                _, sm, si = A.native_batch_norm(x, w, None, rm.clone(), rv.clone(), train, 0.1,
                                                1e-5)
                for mask, weight in itertools.product(MASKS, (w, None)):
                    self.op_case("batch_norm_backward", lambda dt: A.native_batch_norm_backward(
                        to(g, dt), to(x, dt), to(weight, dt), to(rm, dt), to(rv, dt),
                        to(sm, dt), to(si, dt), train, 1e-5, mask),
                        "bn %s %s train=%s mask=%s weight=%s" % (
                            shape, fmt, train, mask, weight is not None))

    def test_op_bf16(self):
        # bf16 input with fp32 parameters and statistics (dweight, dbias fp32)
        # or all bf16
        for fmt, pdtype, train in itertools.product((None, CL), (torch.float32, torch.bfloat16),
                                                    (True, False)):
            x = (fmt_of((4, 6, 7, 9), fmt) * 3 + 1).bfloat16()
            g = fmt_of((4, 6, 7, 9), fmt).bfloat16()
            w, rm, rv = torch.randn(6).to(pdtype), torch.randn(6).to(pdtype), (
                torch.rand(6) + 0.5).to(pdtype)
            _, sm, si = A.native_batch_norm(x, w, None, rm.clone(), rv.clone(), train, 0.1, 1e-5)
            for mask in ([True, True, True], [True, False, False], [False, True, True]):
                self.op_case("batch_norm_backward", lambda dt: A.native_batch_norm_backward(
                    to(g, dt), to(x, dt), to(w, dt), to(rm, dt), to(rv, dt), to(sm, dt),
                    to(si, dt), train, 1e-5, mask),
                    "bn bf16 %s %s train=%s mask=%s" % (fmt, pdtype, train, mask), lowp=True)

    def test_grad_layouts(self):
        # grad_out in any strides: expanded (a broadcast gradient), strided,
        # in the other memory format than the input
        x0 = torch.randn(4, 6, 7, 9) * 2 + 1
        w, rm, rv = torch.randn(6), torch.randn(6), torch.rand(6) + 0.5
        grads = {"expanded": torch.randn(1, 6, 7, 9).expand(4, 6, 7, 9),
                 "transposed": torch.randn(4, 6, 9, 7).transpose(2, 3),
                 "sliced": torch.randn(4, 6, 7, 18)[..., ::2],
                 "channels_last": fmt_of((4, 6, 7, 9), CL),
                 "contiguous": torch.randn(4, 6, 7, 9)}
        for fmt, train, (name, g) in itertools.product((None, CL), (True, False),
                                                       grads.items()):
            x = x0.contiguous(memory_format=fmt or torch.contiguous_format)
            _, sm, si = A.native_batch_norm(x, w, None, rm.clone(), rv.clone(), train, 0.1, 1e-5)
            self.op_case("batch_norm_backward", lambda dt: A.native_batch_norm_backward(
                to(g, dt), to(x, dt), to(w, dt), to(rm, dt), to(rv, dt), to(sm, dt), to(si, dt),
                train, 1e-5, [True, True, True]),
                "bn grad %s, input %s train=%s" % (name, fmt, train))

    def test_autograd(self):
        nn = torch.nn
        cases = [(nn.BatchNorm1d(5), (8, 5), None), (nn.BatchNorm1d(6), (4, 6, 33), None),
                 (nn.BatchNorm2d(6), (4, 6, 7, 9), None), (nn.BatchNorm2d(6), (4, 6, 7, 9), CL),
                 (nn.BatchNorm3d(5), (2, 5, 3, 4, 6), None),
                 (nn.BatchNorm3d(5), (2, 5, 3, 4, 6), CL3)]
        for proto, shape, fmt in cases:
            for opts, train in itertools.product(
                    ({}, {"affine": False}, {"track_running_stats": False}), (True, False)):
                torch.manual_seed(7)
                m = type(proto)(proto.num_features, **opts)
                for t in (m.weight, m.bias, m.running_mean):
                    if t is not None:
                        t.data.normal_()
                m.train(train)
                x = fmt_of(shape, fmt) * 2 + 1
                self.autograd_case("batch_norm_backward", m, x,
                                   "%s %s %s %s train=%s" % (type(m).__name__, shape, fmt, opts,
                                                             train))
        # the gradients of a subset: only the input, only the weight, ...
        m = nn.BatchNorm2d(6)
        m.weight.data.normal_()
        x = torch.randn(4, 6, 7, 9)
        for needs, train in itertools.product(
                [(True, False, False), (False, True, False), (False, False, True),
                 (False, True, True), (True, True, False)], (True, False)):
            self.autograd_case("batch_norm_backward", m.train(train), x,
                               "bn needs %s train=%s" % (needs, train), needs)

    def test_autograd_bf16(self):
        for fmt, train, module_dtype in itertools.product((None, CL), (True, False),
                                                          (torch.float32, torch.bfloat16)):
            torch.manual_seed(7)
            m = torch.nn.BatchNorm2d(6)
            m.weight.data.normal_()
            m.running_mean.normal_()
            m = m.to(module_dtype).train(train)
            x = (fmt_of((4, 6, 7, 9), fmt) * 2 + 1).bfloat16()
            self.autograd_case("batch_norm_backward", m, x,
                               "bn bf16 %s module %s train=%s" % (fmt, module_dtype, train),
                               lowp=True)

    def test_instance_norm(self):
        # InstanceNorm's gradient is native_batch_norm_backward's on a
        # (1, N * C, *) view: training with the batch statistics, and eval
        # with tracked running statistics (use_input_stats=False)
        nn = torch.nn
        for cls, shape in ((nn.InstanceNorm1d, (3, 5, 20)), (nn.InstanceNorm2d, (3, 5, 8, 8)),
                           (nn.InstanceNorm3d, (2, 4, 3, 4, 5))):
            for affine, track, train in itertools.product((True, False), (False, True),
                                                          (True, False)):
                torch.manual_seed(7)
                m = cls(shape[1], affine=affine, track_running_stats=track).train(train)
                if affine:
                    m.weight.data.normal_()
                if track:
                    m.running_mean.normal_()
                self.autograd_case("batch_norm_backward", m, torch.randn(shape) * 2 + 1,
                                   "%s affine=%s track=%s train=%s" % (
                                       cls.__name__, affine, track, train))
        m = nn.InstanceNorm2d(5, affine=True)
        self.autograd_case("batch_norm_backward", m, fmt_of((3, 5, 8, 8), CL) + 1,
                           "InstanceNorm2d channels_last")
        self.autograd_case("batch_norm_backward", m, torch.randn(3, 5, 8, 8).bfloat16(),
                           "InstanceNorm2d bf16", lowp=True)

    def test_fallback(self):
        x = torch.randn(4, 6, 5, 5)
        g = torch.randn(4, 6, 5, 5)
        w, rm, rv = torch.randn(6), torch.zeros(6), torch.ones(6)
        _, sm, si = A.native_batch_norm(x, w, None, None, None, True, 0.1, 1e-5)
        xb = x.bfloat16()
        _, smb, sib = A.native_batch_norm(xb, w, None, None, None, True, 0.1, 1e-5)

        def bwd(g, x, w, rm, rv, sm, si, train=True, mask=(True, True, True)):
            return lambda: A.native_batch_norm_backward(g, x, w, rm, rv, sm, si, train, 1e-5,
                                                        list(mask))

        cases = {
            "float64": bwd(g.double(), x.double(), w.double(), rm.double(), rv.double(),
                           sm.double(), si.double()),
            "float16": bwd(g.half(), x.half(), w.half(), None, None, sm.half(), si.half()),
            "strided input": bwd(g, x.transpose(2, 3), w, rm, rv, sm, si),
            "sliced input": bwd(g[..., :2], x[..., :2], w, rm, rv, sm, si, False),
            "strided weight": bwd(g, x, torch.randn(12)[::2], rm, rv, sm, si),
            # (empty tensors and eval mode without running statistics go to
            # ATen as well; its 1.13 kernel stops them with SIGFPE / SIGSEGV,
            # so they are not called here)
            "float64 save_mean": bwd(g, x, w, rm, rv, sm.double(), si),
            "bf16 save_mean with fp32 weight": bwd(g.bfloat16(), xb, w, None, None,
                                                   smb.bfloat16(), sib.bfloat16()),
            "grad of another dtype": bwd(g.double(), x, w, rm, rv, sm, si),
        }
        for name, fn in cases.items():
            self.fallback_case("batch_norm_backward", fn, name)
        # through autograd: a float64 module, a strided input
        for m, x in ((torch.nn.BatchNorm2d(6).double(), x.double()),
                     (torch.nn.BatchNorm2d(6), x.transpose(2, 3))):
            def fn():
                xi = x.clone().requires_grad_() if x.is_contiguous() else x.requires_grad_()
                m(xi).backward(g.to(x.dtype))
                return (m.weight.grad, m.bias.grad)
            x = x.detach()
            ref, got, st = run_both(fn)
            m.zero_grad()
            self.assertEqual(st["batch_norm_backward"], (0, 1))


class LayerNormBackward(Backward):
    def test_op(self):
        for shape, norm in [((5, 16), (16,)), ((3, 7, 64), (64,)), ((2, 3, 4, 5), (4, 5)),
                            ((9, 1000), (1000,))]:
            for dtype in (torch.float32, torch.bfloat16):
                x = (torch.randn(shape) * 2 - 1).to(dtype)
                g = torch.randn(shape).to(dtype)
                w, b = torch.randn(norm).to(dtype), torch.randn(norm).to(dtype)
                _, mean, rstd = A.native_layer_norm(x, list(norm), w, b, 1e-5)
                # ATen requires the weight for dweight and the bias for dbias
                for mask, weight, bias in [(m, w, b) for m in MASKS] + [
                        ([True, False, False], None, None), ([True, False, True], None, b)]:
                    self.op_case("layer_norm_backward", lambda dt: A.native_layer_norm_backward(
                        to(g, dt), to(x, dt), list(norm), to(mean, dt), to(rstd, dt),
                        to(weight, dt), to(bias, dt), mask),
                        "ln %s %s %s mask=%s weight=%s" % (shape, norm, dtype, mask,
                                                            weight is not None),
                        lowp=dtype != torch.float32)

    def test_layouts(self):
        # expanded and strided grad_out, a strided input (a contiguous copy, as ATen)
        x0 = torch.randn(6, 10, 32)
        w, b = torch.randn(32), torch.randn(32)
        grads = {"expanded": torch.randn(1, 10, 32).expand(6, 10, 32),
                 "transposed": torch.randn(10, 6, 32).transpose(0, 1),
                 "contiguous": torch.randn(6, 10, 32)}
        for (xname, x), (gname, g) in itertools.product(
                (("contiguous", x0), ("transposed", x0.transpose(0, 1).contiguous()
                                      .transpose(0, 1))), grads.items()):
            _, mean, rstd = A.native_layer_norm(x, [32], w, b, 1e-5)
            self.op_case("layer_norm_backward", lambda dt: A.native_layer_norm_backward(
                to(g, dt), to(x, dt), [32], to(mean, dt), to(rstd, dt), to(w, dt), to(b, dt),
                [True, True, True]), "ln input %s grad %s" % (xname, gname))

    def test_autograd(self):
        for (shape, norm), dtype, affine in itertools.product(
                [((4, 24, 64), (64,)), ((2, 3, 4, 5), (4, 5)), ((8, 1000), (1000,))],
                (torch.float32, torch.bfloat16), (True, False)):
            torch.manual_seed(7)
            m = torch.nn.LayerNorm(norm, elementwise_affine=affine)
            if affine:
                m.weight.data.normal_()
                m.bias.data.normal_()
            m = m.to(dtype)
            self.autograd_case("layer_norm_backward", m, (torch.randn(shape) * 2).to(dtype),
                               "LayerNorm %s %s %s affine=%s" % (shape, norm, dtype, affine),
                               lowp=dtype != torch.float32)
        m = torch.nn.LayerNorm(64)
        for needs in [(True, False, False), (False, True, False), (False, False, True),
                      (False, True, True)]:
            self.autograd_case("layer_norm_backward", m, torch.randn(4, 24, 64),
                               "LayerNorm needs %s" % (needs,), needs)

    def test_fallback(self):
        x = torch.randn(6, 10, 32)
        g = torch.randn(6, 10, 32)
        w, b = torch.randn(32), torch.randn(32)
        _, mean, rstd = A.native_layer_norm(x, [32], w, b, 1e-5)
        xb = x.bfloat16()
        _, meanb, rstdb = A.native_layer_norm(xb, [32], w.bfloat16(), b.bfloat16(), 1e-5)

        def bwd(g, x, mean, rstd, w, b, mask=(True, True, True)):
            return lambda: A.native_layer_norm_backward(g, x, [32], mean, rstd, w, b, list(mask))

        cases = {
            "float64": bwd(g.double(), x.double(), mean.double(), rstd.double(), w.double(),
                           b.double()),
            "empty": bwd(g[:0], x[:0], mean[:0], rstd[:0], w, b),
            "dweight without weight": bwd(g, x, mean, rstd, None, b),
            "fp32 statistics of a bf16 input": bwd(g.bfloat16(), xb, meanb.float(),
                                                   rstdb.float(), w.bfloat16(), b.bfloat16()),
            "fp32 weight of a bf16 input": bwd(g.bfloat16(), xb, meanb, rstdb, w, b),
        }
        for name, fn in cases.items():
            self.fallback_case("layer_norm_backward", fn, name)


class GroupNormBackward(Backward):
    def test_op(self):
        for (shape, groups), dtype in itertools.product(
                [((2, 6, 4, 5), 3), ((2, 6, 4, 5), 1), ((2, 6, 4, 5), 6), ((4, 32, 16, 16), 8),
                 ((3, 12, 50), 4), ((2, 8, 3, 4, 5), 2), ((5, 4), 2)],
                (torch.float32, torch.bfloat16)):
            n, c = shape[:2]
            hxw = torch.Size(shape[2:]).numel()
            x = (torch.randn(shape) + 2).to(dtype)
            g = torch.randn(shape).to(dtype)
            w, b = torch.randn(c).to(dtype), torch.randn(c).to(dtype)
            _, mean, rstd = A.native_group_norm(x, w, b, n, c, hxw, groups, 1e-5)
            # ATen requires the weight for dweight and dbias
            for mask, weight in [(m, w) for m in MASKS] + [([True, False, False], None)]:
                self.op_case("group_norm_backward", lambda dt: A.native_group_norm_backward(
                    to(g, dt), to(x, dt), to(mean, dt), to(rstd, dt), to(weight, dt), n, c, hxw,
                    groups, mask),
                    "gn %s groups=%d %s mask=%s weight=%s" % (shape, groups, dtype, mask,
                                                             weight is not None),
                    lowp=dtype != torch.float32)

    def test_autograd(self):
        # ATen's autograd passes contiguous grad_out and input (a channels-last
        # input is copied), which normkit serves
        for (shape, groups, fmt), dtype, affine in itertools.product(
                [((2, 6, 4, 5), 3, None), ((4, 32, 16, 16), 8, CL), ((2, 8, 3, 4, 5), 2, CL3),
                 ((3, 12, 50), 4, None)], (torch.float32, torch.bfloat16), (True, False)):
            torch.manual_seed(7)
            m = torch.nn.GroupNorm(groups, shape[1], affine=affine)
            if affine:
                m.weight.data.normal_()
                m.bias.data.normal_()
            m = m.to(dtype)
            x = (fmt_of(shape, fmt) + 1).to(dtype)
            self.autograd_case("group_norm_backward", m, x, "GroupNorm %s/%d %s %s affine=%s" % (
                shape, groups, fmt, dtype, affine), lowp=dtype != torch.float32)
        m = torch.nn.GroupNorm(3, 6)
        for needs in [(True, False, False), (False, True, False), (False, False, True)]:
            self.autograd_case("group_norm_backward", m, torch.randn(2, 6, 4, 5),
                               "GroupNorm needs %s" % (needs,), needs)

    def test_fallback(self):
        x = torch.randn(4, 6, 5, 5)
        g = torch.randn(4, 6, 5, 5)
        w = torch.randn(6)
        _, mean, rstd = A.native_group_norm(x, w, w, 4, 6, 25, 3, 1e-5)

        def bwd(g, x, mean, rstd, w, mask=(True, True, True)):
            n, c = x.shape[:2]
            return lambda: A.native_group_norm_backward(g, x, mean, rstd, w, n, c, 25, 3,
                                                        list(mask))

        cases = {
            "float64": bwd(g.double(), x.double(), mean.double(), rstd.double(), w.double()),
            "empty": bwd(g[:0], x[:0], mean[:0], rstd[:0], w),
            "dweight without weight": bwd(g, x, mean, rstd, None),
            # ATen's kernel reads both as contiguous whatever their strides
            "channels_last input": bwd(g, x.contiguous(memory_format=CL), mean, rstd, w),
            "transposed grad_out": bwd(g.transpose(2, 3).contiguous().transpose(2, 3), x, mean,
                                       rstd, w),
            "float64 statistics": bwd(g, x, mean.double(), rstd.double(), w),
        }
        for name, fn in cases.items():
            self.fallback_case("group_norm_backward", fn, name)


class BackwardThreads(Base):
    def test_threads_bitwise(self):
        # large enough to be cut into tiles run on the intra-op pool
        x = torch.randn(8, 32, 40, 40)
        xc = x.contiguous(memory_format=CL)
        g = torch.randn(8, 32, 40, 40)
        gc = g.contiguous(memory_format=CL)
        w, rm, rv = torch.randn(32), torch.randn(32), torch.rand(32) + 0.5
        xl, gl, wl = torch.randn(512, 768), torch.randn(512, 768), torch.randn(768)
        _, sm, si = A.native_batch_norm(x, w, None, None, None, True, 0.1, 1e-5)
        _, smc, sic = A.native_batch_norm(xc, w, None, None, None, True, 0.1, 1e-5)
        _, gm, gr = A.native_group_norm(x, w, w, 8, 32, 1600, 4, 1e-5)
        _, lm, lr = A.native_layer_norm(xl, [768], wl, wl, 1e-5)
        xi = x.view(1, 256, 40, 40)
        _, im, ir = A.native_batch_norm(xi, None, None, None, None, True, 0.1, 1e-5)
        m3 = [True, True, True]

        def run():
            return (A.native_batch_norm_backward(g, x, w, rm, rv, sm, si, True, 1e-5, m3)
                    + A.native_batch_norm_backward(gc, xc, w, rm, rv, smc, sic, True, 1e-5, m3)
                    + A.native_batch_norm_backward(g, x, w, rm, rv, None, None, False, 1e-5, m3)
                    + A.native_batch_norm_backward(g.view(1, 256, 40, 40), xi, None, None, None,
                                                   im, ir, True, 1e-5, m3)
                    + A.native_group_norm_backward(g, x, gm, gr, w, 8, 32, 1600, 4, m3)
                    + A.native_layer_norm_backward(gl, xl, [768], lm, lr, wl, wl, m3))

        self.bitwise_over_threads(run)
        st = nt.stats()
        self.assertEqual(st["batch_norm_backward"], (12, 0))
        self.assertEqual(st["group_norm_backward"], (3, 0))
        self.assertEqual(st["layer_norm_backward"], (3, 0))


class Switch(Base):
    def test_enable_disable(self):
        x = torch.randn(4, 6, 5, 5)
        self.assertFalse(nt.is_enabled())
        F.batch_norm(x, None, None, training=True)
        F.layer_norm(x, (5,))
        self.assertEqual(served(nt.stats()) + fallen_back(nt.stats()), 0)
        nt.enable()
        nt.enable()  # idempotent
        self.assertTrue(nt.is_enabled())
        F.batch_norm(x, None, None, training=True)
        F.layer_norm(x, (5,))
        F.group_norm(x, 3)
        self.assertEqual(nt.stats(reset=True), dict(NO_CALLS, batch_norm=(1, 0),
                                                     layer_norm=(1, 0), group_norm=(1, 0)))
        with nt.disabled():
            F.batch_norm(x, None, None, training=True)
        self.assertTrue(nt.is_enabled())
        nt.disable()
        with nt.enabled():
            F.layer_norm(x, (5,))
        self.assertFalse(nt.is_enabled())
        self.assertEqual(nt.stats(reset=True), dict(NO_CALLS, layer_norm=(1, 0)))

    def test_threads_bitwise(self):
        # large enough to be cut into tiles run on the intra-op pool
        x = torch.randn(8, 32, 40, 40)
        xl = torch.randn(512, 768)

        def run():
            rm, rv = torch.zeros(32), torch.ones(32)
            return (torch.ops.aten.native_batch_norm(x, None, None, rm, rv, True, 0.1, 1e-5)
                    + (rm, rv)
                    + torch.ops.aten.native_batch_norm(x.contiguous(memory_format=CL), None,
                                                       None, None, None, True, 0.1, 1e-5)
                    + torch.ops.aten.native_group_norm(x, None, None, 8, 32, 1600, 4, 1e-5)
                    + torch.ops.aten.native_layer_norm(xl, [768], None, None, 1e-5))

        self.bitwise_over_threads(run)


if __name__ == "__main__":
    unittest.main()
