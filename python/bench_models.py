#!/usr/bin/env python3
"""End-to-end timing of normkit.torch: for ResNet-50 (torchvision's when
installed, else the same architecture from python/tests/models.py), a
style-transfer network with InstanceNorm, a UNet with GroupNorm + SiLU and a
TransformerEncoderLayer stack (random weights, fp32), the forward (eval,
no_grad) and training step (forward, backward, SGD) times with ATen's and
with normkit's normalization kernels, at 1 thread and at all threads, and
the share of that time spent in the normalization operators
(aten::native_{batch,layer,group}_norm and, in training, their _backward,
measured with torch.profiler), and how many of those operator calls normkit
served in one run with it enabled (forward; backward), out of all.

    NORMKIT_TORCH_LIBRARY=build-torch/python/_normkit_aten.so \\
        PYTHONPATH=python /usr/bin/python3 python/bench_models.py [--reps N] [--quick]
"""
import argparse
import os
import statistics
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "tests"))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import models  # noqa: E402
import normkit.torch as nt  # noqa: E402

NORM_OPS = ("aten::native_batch_norm", "aten::native_layer_norm", "aten::native_group_norm",
            "aten::native_batch_norm_backward", "aten::native_layer_norm_backward",
            "aten::native_group_norm_backward")


def make_cases(quick):
    s = 2 if quick else 1
    cases = []
    tv = models.torchvision_resnet50()
    torch.manual_seed(0)
    rn = tv if tv is not None else models.resnet50_like()
    cases.append(("ResNet-50%s (BN) 8x3x%dx%d" % ("" if tv is not None else " (same arch.)",
                                                  224 // s, 224 // s),
                  rn, (torch.randn(8, 3, 224 // s, 224 // s),),
                  lambda o: F.cross_entropy(o, torch.zeros(o.shape[0], dtype=torch.long))))
    cases.append(("style transfer (IN) 2x3x%dx%d" % (256 // s, 256 // s), models.style_transfer(),
                  (torch.randn(2, 3, 256 // s, 256 // s),), lambda o: o.square().mean()))
    cases.append(("UNet (GN+SiLU) 8x3x%dx%d" % (64 // s, 64 // s), models.unet(),
                  (torch.randn(8, 3, 64 // s, 64 // s), torch.arange(8) * 100),
                  lambda o: o.square().mean()))
    cases.append(("Transformer (LN) 8x%dx512" % (128 // s),
                  models.transformer(d_model=512, nhead=8, ff=2048, layers=2),
                  (torch.randn(8, 128 // s, 512),), lambda o: o.square().mean()))
    return cases


def timed_pair(fn, reps):
    """Median wall times of fn with ATen's and with normkit's kernels, the
    runs interleaved (A B A B ...) so that a busy machine's drift falls on both."""
    ts = {False: [], True: []}
    for rep in range(reps + 1):
        for use in (False, True):
            (nt.enable if use else nt.disable)()
            t0 = time.perf_counter()
            fn()
            if rep:  # the first round warms up
                ts[use].append(time.perf_counter() - t0)
    nt.disable()
    return statistics.median(ts[False]), statistics.median(ts[True])


def norm_share(fn):
    """Fraction of one run's wall time spent in the normalization operators,
    and normkit.torch.stats() of that run."""
    fn()
    nt.stats(reset=True)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        t0 = time.perf_counter()
        fn()
        wall = time.perf_counter() - t0
    st = nt.stats(reset=True)
    norm_us = sum(e.cpu_time_total for e in prof.key_averages() if e.key in NORM_OPS)
    return norm_us * 1e-6 / wall, st


def served(st):
    """"served/all" for the forward and the backward operators of stats st"""
    def part(ops):
        return "%d/%d" % (sum(st[o][0] for o in ops), sum(sum(st[o]) for o in ops))
    fwd = [o for o in st if not o.endswith("_backward")]
    return "%s; %s" % (part(fwd), part([o + "_backward" for o in fwd]))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--reps", type=int, default=3, help="timed runs per cell (median)")
    ap.add_argument("--quick", action="store_true", help="half the spatial sizes")
    args = ap.parse_args()
    all_threads = os.cpu_count() or 1
    print("torch %s, normkit ISA %s, %d CPUs, load average %.1f; median of %d runs" % (
        torch.__version__, nt.isa(), all_threads, os.getloadavg()[0], args.reps))
    head = ("model", "pass", "thr", "ATen ms", "normkit ms", "speed-up", "norm% ATen",
            "norm% normkit", "normkit calls (fwd; bwd)")
    print("| " + " | ".join(head) + " |")
    print("|" + "|".join("---" for _ in head) + "|")
    for name, model, inputs, loss_fn in make_cases(args.quick):
        opt = torch.optim.SGD(model.parameters(), lr=1e-4)

        def fwd():
            model.eval()
            with torch.no_grad():
                model(*inputs)

        def train():
            model.train()
            opt.zero_grad()
            loss_fn(model(*inputs)).backward()
            opt.step()

        for threads in sorted({1, all_threads}):
            torch.set_num_threads(threads)
            for pname, fn in (("forward", fwd), ("train step", train)):
                t_aten, t_nk = timed_pair(fn, args.reps)
                res = {}
                for use, t in ((False, t_aten), (True, t_nk)):
                    (nt.enable if use else nt.disable)()
                    res[use] = (t,) + norm_share(fn)
                nt.disable()
                print("| %s | %s | %d | %.1f | %.1f | %.2fx | %.1f%% | %.1f%% | %s |" % (
                    name, pname, threads, res[False][0] * 1e3, res[True][0] * 1e3,
                    res[False][0] / res[True][0], res[False][1] * 100, res[True][1] * 100,
                    served(res[True][2])), flush=True)


if __name__ == "__main__":
    main()
