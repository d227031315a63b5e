"""normkit.torch at the operator level: every output of aten::native_batch_norm,
native_layer_norm and native_group_norm (values, dtypes, shapes, memory
formats), running statistics, gradients, the fallback to ATen, thread-count
independence and enable()/disable()."""
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

    def check(self, ref, got, tol, what="", truth=None):
        for i, (r, g) in enumerate(zip(ref, got)):
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
        self.assertEqual(nt.stats(reset=True), {"batch_norm": (1, 0), "layer_norm": (1, 0),
                                                 "group_norm": (1, 0)})
        with nt.disabled():
            F.batch_norm(x, None, None, training=True)
        self.assertTrue(nt.is_enabled())
        nt.disable()
        with nt.enabled():
            F.layer_norm(x, (5,))
        self.assertFalse(nt.is_enabled())
        self.assertEqual(nt.stats(reset=True), {"batch_norm": (0, 0), "layer_norm": (1, 0),
                                                 "group_norm": (0, 0)})

    def test_threads_bitwise(self):
        # large enough to be cut into tiles run on the intra-op pool
        x = torch.randn(8, 32, 40, 40)
        xl = torch.randn(512, 768)
        saved = torch.get_num_threads()

        def run():
            rm, rv = torch.zeros(32), torch.ones(32)
            return (torch.ops.aten.native_batch_norm(x, None, None, rm, rv, True, 0.1, 1e-5)
                    + (rm, rv)
                    + torch.ops.aten.native_batch_norm(x.contiguous(memory_format=CL), None,
                                                       None, None, None, True, 0.1, 1e-5)
                    + torch.ops.aten.native_group_norm(x, None, None, 8, 32, 1600, 4, 1e-5)
                    + torch.ops.aten.native_layer_norm(xl, [768], None, None, 1e-5))

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


if __name__ == "__main__":
    unittest.main()
