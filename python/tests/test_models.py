"""normkit.torch on whole models, random weights: eval outputs and, after
training steps (SGD with momentum, normkit serving the forward and the
backward operators), the losses, gradients, parameters and running
statistics match stock PyTorch.

Tolerances (relative to the largest magnitude of each tensor):
  fp32 eval outputs                          EVAL_TOL
  fp32 losses, running statistics, params    TRAIN_TOL
  fp32 gradients                             GRAD_TOL, the L2 norm of the
      difference of all the model's gradients (one vector) relative to theirs
  Each fp32 training quantity passes when normkit is within the tolerance of
  ATen's fp32 value, or when it is within FP64_FACTOR times ATen's distance
  of the fp64 value (ATen's fp32 kernels are the inaccurate ones in places,
  e.g. BatchNorm training on channels-last input, and a deep network at
  random initialisation amplifies rounding of either).
  bf16 eval outputs (model.to(bfloat16))     compared with the fp64 model:
      normkit's error at most BF16_FACTOR times ATen's bf16 error, or
      BF16_TOL
Set NORMKIT_TORCH_TEST_VERBOSE=1 to print the errors measured.
"""
import os
import unittest

import torch
import torch.nn.functional as F

import models
from common import nt, rel_err, clone_model

EVAL_TOL = 1e-4
TRAIN_TOL = 1e-4
GRAD_TOL = 1e-3
FP64_FACTOR = 2.0
BF16_FACTOR = 1.5
BF16_TOL = 2e-2
STEPS = 3
LR = 1e-3
VERBOSE = os.environ.get("NORMKIT_TORCH_TEST_VERBOSE") == "1"
CL = torch.channels_last


def report(name, **errs):
    if VERBOSE:
        print("\n  %-34s %s" % (name, "  ".join("%s %.2e" % kv for kv in errs.items())))


def max_err(pairs):
    return max((rel_err(a, b) for a, b in pairs), default=0.0)


class ModelCase(unittest.TestCase):
    def setUp(self):
        nt.disable()
        nt.stats(reset=True)

    def tearDown(self):
        nt.disable()

    def forward(self, model, inputs, use_normkit):
        if use_normkit:
            with nt.enabled():
                return model(*inputs)
        with nt.disabled():
            return model(*inputs)

    def check_served(self, ops):
        st = nt.stats(reset=True)
        for op in ops:
            self.assertGreater(st[op][0], 0, "normkit served no %s call: %s" % (op, st))
        self.assertEqual(sum(v[1] for v in st.values()), 0, "calls passed to ATen: %s" % st)

    def eval_case(self, name, model, inputs, ops, memory_format=None):
        model = model.eval()
        if memory_format is not None:
            model = model.to(memory_format=memory_format)
            inputs = tuple(i.contiguous(memory_format=memory_format) if i.dim() == 4 else i
                           for i in inputs)
        with torch.no_grad():
            ref = self.forward(model, inputs, False)
            nt.stats(reset=True)
            got = self.forward(model, inputs, True)
        self.check_served(ops)
        err = rel_err(got, ref)
        report(name + " eval", out=err)
        self.assertEqual(got.dtype, ref.dtype)
        self.assertLessEqual(err, EVAL_TOL, name)

    def bf16_case(self, name, model, inputs, ops):
        model = model.eval()
        m16 = clone_model(model).to(torch.bfloat16)
        m64 = clone_model(model).double()
        with torch.no_grad():
            truth = m64(*(i.double() if i.is_floating_point() else i for i in inputs))
            in16 = tuple(i.bfloat16() if i.is_floating_point() else i for i in inputs)
            ref = self.forward(m16, in16, False)
            nt.stats(reset=True)
            got = self.forward(m16, in16, True)
        self.check_served(ops)
        self.assertEqual(got.dtype, torch.bfloat16)
        e_nk, e_aten = rel_err(got, truth), rel_err(ref, truth)
        report(name + " bf16 eval", normkit_vs_fp64=e_nk, aten_vs_fp64=e_aten,
               normkit_vs_aten=rel_err(got, ref))
        self.assertLessEqual(e_nk, max(BF16_TOL, BF16_FACTOR * e_aten), name)

    def train_case(self, name, model, inputs, target, loss_fn, ops, memory_format=None,
                   steps=STEPS):
        """steps training steps of the model three times in lockstep: ATen
        fp32, normkit fp32 and ATen fp64 (the reference where the fp32 runs
        differ by more than the tolerance: ATen's own fp32 kernels are the
        less accurate ones in places, e.g. BatchNorm training on
        channels-last input)."""
        model = model.train()
        if memory_format is not None:
            model = model.to(memory_format=memory_format)
            inputs = tuple(i.contiguous(memory_format=memory_format) if i.dim() == 4 else i
                           for i in inputs)
        runs = []  # (model, optimizer, inputs, target, use normkit)
        for dtype, use in ((torch.float32, False), (torch.float32, True), (torch.float64, False)):
            m = clone_model(model).to(dtype)
            cv = tuple(i.to(dtype) if i.is_floating_point() else i for i in inputs)
            tg = target.to(dtype) if target.is_floating_point() else target
            runs.append((m, torch.optim.SGD(m.parameters(), lr=LR, momentum=0.9), cv, tg, use))
        worst = {}

        def close(what, tensors, tol, scale=None, norm=lambda d: d.abs().max().item()):
            """tensors: (ATen, normkit, fp64) values of one quantity; errors
            norm(difference) / scale"""
            aten, nk, f64 = (t.detach().double() for t in tensors)
            if scale is None:
                scale = max(norm(f64), 1e-6)
            e = norm(nk - aten) / scale
            e_nk = norm(nk - f64) / scale
            e_aten = norm(aten - f64) / scale
            key = what.split(",")[0].split(" ")[0]
            worst[key] = max(worst.get(key, 0.0), e)
            worst[key + "_vs_fp64"] = max(worst.get(key + "_vs_fp64", 0.0), e_nk)
            self.assertTrue(e <= tol or e_nk <= max(tol, FP64_FACTOR * e_aten),
                            "%s %s: normkit vs ATen %.3g, normkit vs fp64 %.3g, ATen vs fp64 "
                            "%.3g, tolerance %.3g" % (name, what, e, e_nk, e_aten, tol))

        for step in range(steps):
            losses = []
            for m, o, x, tg, use in runs:
                o.zero_grad()
                with nt.enabled() if use else nt.disabled():
                    nt.stats(reset=True)
                    loss = loss_fn(m(*x), tg)
                    loss.backward()
                if use:
                    # every normalization layer's forward and backward
                    self.check_served(ops + [op + "_backward" for op in ops])
                losses.append(loss)
            close("loss, step %d" % step, losses, TRAIN_TOL)
            # all gradients of the model as one vector
            grads = [torch.cat([p.grad.detach().double().flatten() for p in r[0].parameters()])
                     for r in runs]
            close("grad, step %d" % step, grads, GRAD_TOL, norm=lambda d: d.norm().item())
            for r in runs:
                r[1].step()
        for (pn, p64), p32, pnk in zip(runs[2][0].named_parameters(), runs[0][0].parameters(),
                                       runs[1][0].parameters()):
            close("params %s" % pn, (p32, pnk, p64), TRAIN_TOL)
        for (bn, b64), b32, bnk in zip(runs[2][0].named_buffers(), runs[0][0].buffers(),
                                       runs[1][0].buffers()):
            if b64.is_floating_point():
                close("running_stats %s" % bn, (b32, bnk, b64), TRAIN_TOL)
            else:  # num_batches_tracked
                self.assertTrue(torch.equal(bnk, b32))
        report(name + " train", **worst)


def cls_loss(out, target):
    return F.cross_entropy(out, target)


def mse(out, target):
    return F.mse_loss(out, target)


class ResNet(ModelCase):
    def small(self):
        torch.manual_seed(0)
        return models.randomize_norms(
            models.resnet50_like(layers=(1, 2, 2, 1), width=16, num_classes=10))

    def data(self):
        torch.manual_seed(1)
        return (torch.randn(4, 3, 64, 64),), torch.randint(0, 10, (4,))

    def test_eval(self):
        x, _ = self.data()
        self.eval_case("resnet-like", self.small(), x, ["batch_norm"])
        self.eval_case("resnet-like channels_last", self.small(), x, ["batch_norm"], CL)

    def test_train(self):
        x, y = self.data()
        self.train_case("resnet-like", self.small(), x, y, cls_loss, ["batch_norm"])
        self.train_case("resnet-like channels_last", self.small(), x, y, cls_loss,
                        ["batch_norm"], CL)

    def test_bf16(self):
        x, _ = self.data()
        self.bf16_case("resnet-like", self.small(), x, ["batch_norm"])

    @unittest.skipIf(models.torchvision_resnet50() is None, "torchvision is not installed")
    def test_torchvision_resnet50(self):
        torch.manual_seed(0)
        m = models.randomize_norms(models.torchvision_resnet50())
        torch.manual_seed(1)
        x, y = torch.randn(4, 3, 128, 128), torch.randint(0, 1000, (4,))
        self.eval_case("torchvision resnet50", m, (x,), ["batch_norm"])
        # One step: at random initialisation ResNet-50's gradients are ill
        # conditioned (ATen's fp32 gradients are 2% off the fp64 ones, and so
        # are normkit's), so later steps of the fp32 runs drift apart by
        # chance whatever computes the norm layers.
        self.train_case("torchvision resnet50", m, (x,), y, cls_loss, ["batch_norm"], steps=1)


class StyleTransfer(ModelCase):
    def small(self, reflect=True):
        torch.manual_seed(0)
        return models.randomize_norms(models.style_transfer(width=8, residual=2,
                                                            reflect=reflect))

    def data(self):
        torch.manual_seed(1)
        return (torch.randn(2, 3, 48, 48),), torch.randn(2, 3, 48, 48)

    def test_eval(self):
        x, _ = self.data()
        self.eval_case("style transfer", self.small(), x, ["batch_norm"])

    def test_train(self):
        x, y = self.data()
        self.train_case("style transfer", self.small(), x, y, mse, ["batch_norm"])

    def test_bf16(self):
        x, _ = self.data()
        self.bf16_case("style transfer", self.small(reflect=False), x, ["batch_norm"])


class UNet(ModelCase):
    def small(self):
        torch.manual_seed(0)
        return models.randomize_norms(models.unet(width=16, groups=8))

    def data(self):
        torch.manual_seed(1)
        return (torch.randn(2, 3, 32, 32), torch.tensor([3, 500])), torch.randn(2, 3, 32, 32)

    def test_eval(self):
        x, _ = self.data()
        self.eval_case("unet groupnorm+silu", self.small(), x, ["group_norm"])
        self.eval_case("unet groupnorm+silu channels_last", self.small(), x, ["group_norm"], CL)

    def test_train(self):
        x, y = self.data()
        self.train_case("unet groupnorm+silu", self.small(), x, y, mse, ["group_norm"])
        self.train_case("unet groupnorm+silu channels_last", self.small(), x, y, mse,
                        ["group_norm"], CL)

    def test_bf16(self):
        x, _ = self.data()
        self.bf16_case("unet groupnorm+silu", self.small(), x, ["group_norm"])


class Transformer(ModelCase):
    def small(self):
        torch.manual_seed(0)
        return models.randomize_norms(models.transformer(d_model=64, nhead=4, ff=128, layers=2))

    def data(self):
        torch.manual_seed(1)
        return (torch.randn(4, 24, 64),), torch.randn(4, 24, 64)

    def test_eval(self):
        x, _ = self.data()
        self.eval_case("transformer encoder", self.small(), x, ["layer_norm"])

    def test_train(self):
        x, y = self.data()
        self.train_case("transformer encoder", self.small(), x, y, mse, ["layer_norm"])

    def test_bf16(self):
        x, _ = self.data()
        self.bf16_case("transformer encoder", self.small(), x, ["layer_norm"])


if __name__ == "__main__":
    unittest.main()
