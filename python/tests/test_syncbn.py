"""normkit.torch.SyncBatchNorm: 2 and 4 gloo processes on this machine
(syncbn_cases.py) against one process running ATen's F.batch_norm in fp64
on the concatenated batch; the synchronized ops on shards within one
process; the fallback to F.batch_norm and convert_sync_batchnorm."""
import os
import shutil
import subprocess
import sys
import tempfile
import time
import unittest

import torch
import torch.nn.functional as F

from common import nt, rel_err
import syncbn_cases as sc

# fp32 outputs, gradients and running statistics, relative to the largest
# magnitude of the fp64 reference
F32_TOL = 1e-5
# bf16 input: y and dx are bf16 (2.5 ulps); the fp32 running statistics and
# dweight / dbias are computed from the same bf16 values as the reference
BF16_TOL = 1e-2
# one world size: process start, rendezvous and every case (about 5 s on a
# busy 2-core machine); the ranks' collectives time out after 30 s
WORLD_TIMEOUT_S = 45


def bits(t):
    """t's bytes as integers, for bitwise comparisons."""
    t = t.detach().contiguous()
    return t.view(torch.int64) if t.dtype == torch.float64 else t.view(torch.int32)


def chan_merge(parts):
    """((parts[0] (+) parts[1]) (+) parts[2]) ... of (C, 3) float64 moments
    in Python floats (IEEE double), Chan's formula as nk_moments_merge."""
    out = []
    for ch in range(parts[0].shape[0]):
        n, mean, m2 = 0.0, 0.0, 0.0
        for p in parts:
            pn, pmean, pm2 = (float(v) for v in p[ch])
            if pn <= 0.0:
                continue
            if n <= 0.0:
                n, mean, m2 = pn, pmean, pm2
                continue
            tot = n + pn
            delta = pmean - mean
            mean += delta * (pn / tot)
            m2 += pm2 + delta * delta * (n * pn / tot)
            n = tot
        out.append([n, mean, m2])
    return torch.tensor(out, dtype=torch.float64)


def reference(world, case):
    """One process, ATen's F.batch_norm in fp64 on the whole batch of every
    iteration: per iteration y, dx, dweight and dbias of each rank's shard
    (PyTorch's SyncBatchNorm convention: a rank's own), the merged moments;
    then the running statistics and the eval output."""
    was = nt.is_enabled()
    nt.disable()
    try:
        w0, b0, rm0, rv0 = sc.initial_state(world, case)
        rm, rv = rm0.double(), rv0.double()
        nbt = 0
        its = []
        for it in range(case["iters"]):
            x_all, dy_all = sc.batch(world, case, it)
            x = x_all.double().requires_grad_(True)
            dy = dy_all.double()
            w = w0.double().requires_grad_(True) if case["affine"] else None
            b = b0.double().requires_grad_(True) if case["affine"] else None
            factor = case["momentum"]
            if case["track"]:
                nbt += 1
                if factor is None:
                    factor = 1.0 / nbt
            y = F.batch_norm(x, rm if case["track"] else None, rv if case["track"] else None,
                             w, b, True, factor if factor is not None else 0.0, case["eps"])
            y.backward(dy)
            dims = [0] + list(range(2, x.dim()))
            xd = x.detach()
            mean = xd.mean(dims, keepdim=True)
            var = xd.var(dims, unbiased=False, keepdim=True)
            xhat = (xd - mean) / torch.sqrt(var + case["eps"])
            shards = []
            for r in range(world):
                xs, dys = sc.shard(xhat, case["sizes"], r), sc.shard(dy, case["sizes"], r)
                shards.append(dict(dweight=(dys * xs).sum(dims), dbias=dys.sum(dims)))
            cnt = x.numel() // x.shape[1]
            its.append(dict(y=y.detach(), dx=x.grad, shards=shards,
                            moments=torch.stack([torch.full_like(mean.flatten(), cnt),
                                                 mean.flatten(), var.flatten() * cnt], 1)))
        out = dict(iters=its)
        if case["track"]:
            out.update(running_mean=rm, running_var=rv, num_batches_tracked=nbt)
            x_eval, _ = sc.batch(world, case, case["iters"])
            out["eval_y"] = F.batch_norm(x_eval.double(), rm, rv,
                                         w0.double() if case["affine"] else None,
                                         b0.double() if case["affine"] else None,
                                         False, 0.0, case["eps"])
        return out
    finally:
        if was:
            nt.enable()


def run_world(world):
    """Starts the ranks of syncbn_cases.py, waits for them (WORLD_TIMEOUT_S
    in all, then kills them) and returns each rank's results."""
    tmp = tempfile.mkdtemp(prefix="normkit-syncbn-")
    procs = []
    try:
        env = dict(os.environ, OMP_NUM_THREADS="1", GLOO_SOCKET_IFNAME="lo",
                   MASTER_ADDR="127.0.0.1", SYNCBN_DUMP_S=str(WORLD_TIMEOUT_S - 5))
        script = os.path.abspath(sc.__file__)
        init = os.path.join(tmp, "rendezvous")
        for r in range(world):
            log = open(os.path.join(tmp, "log%d.txt" % r), "w")
            procs.append((subprocess.Popen(
                [sys.executable, script, str(r), str(world), init, tmp],
                stdout=log, stderr=subprocess.STDOUT, env=env), log))
        deadline = time.monotonic() + WORLD_TIMEOUT_S
        failed = []
        for r, (p, log) in enumerate(procs):
            try:
                rc = p.wait(timeout=max(1.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                rc = "timeout"
            if rc != 0:
                failed.append((r, rc))
        if failed:
            msgs = []
            for r, rc in failed:
                with open(os.path.join(tmp, "log%d.txt" % r)) as f:
                    msgs.append("rank %d: %s\n%s" % (r, rc, f.read()[-3000:]))
            raise AssertionError("world %d failed:\n%s" % (world, "\n".join(msgs)))
        return [torch.load(os.path.join(tmp, "rank%d.pt" % r)) for r in range(world)]
    finally:
        for p, log in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
            log.close()
        shutil.rmtree(tmp, ignore_errors=True)


class Distributed:
    """Mixin: the cases of one world size; setUpClass runs the ranks once."""
    WORLD = None

    @classmethod
    def setUpClass(cls):
        t0 = time.monotonic()
        cls.ranks = run_world(cls.WORLD)
        cls.seconds = time.monotonic() - t0

    def check_case(self, name):
        case = sc.full_case(next(c for c in sc.CASES[self.WORLD] if c["name"] == name))
        ref = reference(self.WORLD, case)
        got = [rk[name] for rk in self.ranks]
        bf16 = case["dtype"] == torch.bfloat16
        out_tol = BF16_TOL if bf16 else F32_TOL
        # dweight / dbias of bf16 dy: fp32 sums of the same bf16 values
        for it, r_it in enumerate(ref["iters"]):
            g_it = [g["iters"][it] for g in got]
            what = "%s iteration %d" % (name, it)
            # outputs and input gradients: the ranks' shards, in rank order
            y = torch.cat([g["y"] for g in g_it])
            dx = torch.cat([g["dx"] for g in g_it])
            self.assertEqual(y.dtype, case["dtype"])
            self.assertEqual(dx.dtype, case["dtype"])
            self.assertLessEqual(rel_err(y, r_it["y"]), out_tol, what + " y")
            self.assertLessEqual(rel_err(dx, r_it["dx"]), out_tol, what + " dx")
            for r, g in enumerate(g_it):
                self.assertEqual(tuple(g["y"].shape), tuple(sc.shard(r_it["y"], case["sizes"],
                                                                     r).shape))
                if case["cl"] and case["sizes"][r] > 0:
                    self.assertTrue(g["y_cl"] and g["dx_cl"], what + " channels_last")
                # dweight / dbias: each rank's own, their sum the whole batch's
                if case["affine"]:
                    self.assertLessEqual(rel_err(g["dweight"], r_it["shards"][r]["dweight"]),
                                         F32_TOL, "%s rank %d dweight" % (what, r))
                    self.assertLessEqual(rel_err(g["dbias"], r_it["shards"][r]["dbias"]),
                                         F32_TOL, "%s rank %d dbias" % (what, r))
                else:
                    self.assertIsNone(g["dweight"])
                    self.assertIsNone(g["dbias"])
            # merged moments: the same bits on every rank, Chan's merge of the
            # gathered local moments in rank order, the whole batch's moments
            merged = g_it[0]["merged"]
            for r, g in enumerate(g_it):
                self.assertTrue(torch.equal(bits(g["merged"]), bits(merged)),
                                "%s rank %d merged moments differ from rank 0's" % (what, r))
            chan = chan_merge([g["local"] for g in g_it])
            self.assertTrue(torch.equal(bits(merged), bits(chan)),
                            what + " merged moments are not the rank-order merge")
            self.assertTrue(torch.equal(merged[:, 0], r_it["moments"][:, 0]), what + " count")
            self.assertLessEqual(rel_err(merged[:, 1], r_it["moments"][:, 1]), 1e-6,
                                 what + " mean")
            self.assertLessEqual(rel_err(merged[:, 2], r_it["moments"][:, 2]), 1e-5,
                                 what + " m2")
        if case["track"]:
            for r, g in enumerate(got):
                for k in ("running_mean", "running_var"):
                    self.assertLessEqual(rel_err(g[k], ref[k]), F32_TOL,
                                         "%s rank %d %s" % (name, r, k))
                    self.assertTrue(torch.equal(bits(g[k]), bits(got[0][k])),
                                    "%s rank %d %s differs from rank 0's" % (name, r, k))
                self.assertEqual(g["num_batches_tracked"], ref["num_batches_tracked"])
            eval_y = torch.cat([g["eval_y"] for g in got])
            self.assertLessEqual(rel_err(eval_y, ref["eval_y"]), out_tol, name + " eval")
        else:
            self.assertNotIn("running_mean", got[0])


    def test_ddp(self):
        """One step under DistributedDataParallel: the parameter gradients
        are the mean of the ranks' own, the whole batch's over the world."""
        name = sc.DDP_CASE[self.WORLD]
        case = sc.full_case(next(c for c in sc.CASES[self.WORLD] if c["name"] == name))
        ref = reference(self.WORLD, case)["iters"][0]
        got = [rk["ddp"] for rk in self.ranks]
        self.assertLessEqual(rel_err(torch.cat([g["y"] for g in got]), ref["y"]), F32_TOL)
        self.assertLessEqual(rel_err(torch.cat([g["dx"] for g in got]), ref["dx"]), F32_TOL)
        for k in ("dweight", "dbias"):
            whole = sum(sh[k] for sh in ref["shards"])
            for r, g in enumerate(got):
                self.assertLessEqual(rel_err(g[k], whole / self.WORLD), F32_TOL,
                                     "rank %d %s" % (r, k))
        for g in got:
            self.assertTrue(torch.equal(bits(g["running_var"]), bits(got[0]["running_var"])))


class World2(Distributed, unittest.TestCase):
    WORLD = 2

    def test_equal(self):
        self.check_case("equal")

    def test_unequal_channels_last(self):
        self.check_case("unequal_channels_last")

    def test_momentum_none_strided(self):
        self.check_case("momentum_none_strided")

    def test_affine_off_2d(self):
        self.check_case("affine_off_2d")

    def test_bf16(self):
        self.check_case("bf16")


class World4(Distributed, unittest.TestCase):
    WORLD = 4

    def test_unequal_empty_rank(self):
        self.check_case("unequal_empty_rank")

    def test_equal_channels_last(self):
        self.check_case("equal_channels_last")

    def test_no_running_stats(self):
        self.check_case("no_running_stats")


class Shards(unittest.TestCase):
    """The synchronized ops within one process: shards of one batch, the
    collectives done by hand."""

    def setUp(self):
        torch.manual_seed(7)
        nt.disable()

    def run_shards(self, x, dy, sizes, w, b, rm, rv, momentum, eps=1e-5):
        xs = torch.split(x, sizes)
        dys = torch.split(dy, sizes)
        merged = nt._ops.bn_merge_moments(torch.stack([nt._ops.bn_stats(s) for s in xs]))
        ys, dxs, outs = [], [], []
        for i, s in enumerate(xs):
            # every shard updates its own copy of the running statistics
            rmi = rm.clone() if rm is not None else None
            rvi = rv.clone() if rv is not None else None
            y, mean, invstd = nt._ops.bn_apply_moments(s, merged, w, b, rmi, rvi, momentum, eps)
            ys.append(y)
            outs.append((mean, invstd, rmi, rvi))
        sums = [nt._ops.bn_backward_reduce(dys[i], s, outs[i][0], outs[i][1], w, True, True)
                for i, s in enumerate(xs)]
        sum_dy = sum(s[0] for s in sums)
        sum_dy_xmu = sum(s[1] for s in sums)
        count = int(merged[0, 0])
        for i, s in enumerate(xs):
            dxs.append(nt._ops.bn_backward_elemt(dys[i], s, outs[i][0], outs[i][1], w, sum_dy,
                                                 sum_dy_xmu, count))
        return torch.cat(ys), torch.cat(dxs), sums, outs

    def test_shards_match_batch_norm(self):
        for fmt in (None, torch.channels_last):
            x = torch.randn(6, 5, 3, 4) * 2 + 3
            dy = torch.randn(6, 5, 3, 4)
            if fmt is not None:
                x = x.contiguous(memory_format=fmt)
            w, b = torch.randn(5), torch.randn(5)
            rm, rv = torch.randn(5), torch.rand(5) + 0.5
            y, dx, sums, outs = self.run_shards(x, dy, [3, 0, 2, 1], w, b, rm, rv, 0.1)
            xr = x.double().requires_grad_(True)
            wr, br = w.double().requires_grad_(True), b.double().requires_grad_(True)
            rmr, rvr = rm.double(), rv.double()
            yr = F.batch_norm(xr, rmr, rvr, wr, br, True, 0.1, 1e-5)
            yr.backward(dy.double())
            self.assertLessEqual(rel_err(y, yr), F32_TOL)
            self.assertLessEqual(rel_err(dx, xr.grad), F32_TOL)
            self.assertLessEqual(rel_err(sum(s[2] for s in sums), wr.grad), F32_TOL)
            self.assertLessEqual(rel_err(sum(s[3] for s in sums), br.grad), F32_TOL)
            for mean, invstd, rmi, rvi in outs:
                self.assertLessEqual(rel_err(rmi, rmr), F32_TOL)
                self.assertLessEqual(rel_err(rvi, rvr), F32_TOL)
                self.assertTrue(torch.equal(bits(rmi), bits(outs[0][2])))
            # the empty shard: empty y and dx, zero sums and parameter gradients
            self.assertEqual(sums[1][0].abs().sum().item(), 0.0)
            self.assertEqual(sums[1][2].abs().sum().item(), 0.0)

    def test_shards_bf16_parameters(self):
        # bf16 input with bf16 weight and bias and bf16 running statistics
        x = (torch.randn(5, 4, 6) * 2 + 3).bfloat16()
        dy = torch.randn(5, 4, 6).bfloat16()
        w, b = torch.randn(4).bfloat16(), torch.randn(4).bfloat16()
        rm, rv = torch.randn(4).bfloat16(), (torch.rand(4) + 0.5).bfloat16()
        y, dx, sums, outs = self.run_shards(x, dy, [2, 0, 3], w, b, rm, rv, 0.1)
        xr = x.double().requires_grad_(True)
        wr, br = w.double().requires_grad_(True), b.double().requires_grad_(True)
        rmr, rvr = rm.double(), rv.double()
        F.batch_norm(xr, rmr, rvr, wr, br, True, 0.1, 1e-5).backward(dy.double())
        yr = F.batch_norm(x.double(), None, None, w.double(), b.double(), True, 0.1, 1e-5)
        self.assertEqual((y.dtype, dx.dtype, sums[0][2].dtype), (torch.bfloat16,) * 3)
        self.assertLessEqual(rel_err(y, yr), BF16_TOL)
        self.assertLessEqual(rel_err(dx, xr.grad), BF16_TOL)
        self.assertLessEqual(rel_err(sum(s[2].double() for s in sums), wr.grad), BF16_TOL)
        for _, _, rmi, rvi in outs:
            self.assertEqual(rmi.dtype, torch.bfloat16)
            self.assertLessEqual(rel_err(rmi, rmr), BF16_TOL)
            self.assertLessEqual(rel_err(rvi, rvr), BF16_TOL)

    def test_merge_is_rank_order(self):
        parts = [nt._ops.bn_stats(torch.randn(n, 3, 5) * (i + 1) + i)
                 for i, n in enumerate([3, 0, 7, 1, 2])]
        merged = nt._ops.bn_merge_moments(torch.stack(parts))
        self.assertTrue(torch.equal(bits(merged), bits(chan_merge(parts))))

    def test_bad_arguments(self):
        x = torch.randn(4, 3)
        with self.assertRaises(RuntimeError):
            nt._ops.bn_merge_moments(torch.zeros(2, 3, 2, dtype=torch.float64))
        with self.assertRaises(RuntimeError):  # moments below this shard's count
            nt._ops.bn_apply_moments(x, torch.zeros(3, 3, dtype=torch.float64), None, None,
                                     None, None, 0.1, 1e-5)
        with self.assertRaises(RuntimeError):
            nt._ops.bn_stats(torch.randn(4, 3, dtype=torch.float64))


class Module(unittest.TestCase):
    """Without an initialised process group: F.batch_norm, as PyTorch's."""

    def setUp(self):
        torch.manual_seed(11)
        nt.disable()

    def test_fallback_without_process_group(self):
        import torch.distributed as dist
        self.assertFalse(dist.is_initialized())
        for momentum in (0.1, None):
            ref = torch.nn.BatchNorm2d(3, momentum=momentum)
            m = nt.SyncBatchNorm(3, momentum=momentum)
            for _ in range(2):
                x = torch.randn(4, 3, 2, 2)
                self.assertTrue(torch.equal(m(x), ref(x)))
            self.assertTrue(torch.equal(m.running_var, ref.running_var))
            self.assertEqual(int(m.num_batches_tracked), 2)
            m.eval()
            ref.eval()
            x = torch.randn(4, 3, 2, 2)
            self.assertTrue(torch.equal(m(x), ref(x)))
        with self.assertRaises(ValueError):
            nt.SyncBatchNorm(3)(torch.randn(3))

    def test_convert_sync_batchnorm(self):
        net = torch.nn.Sequential(torch.nn.Conv2d(2, 3, 1), torch.nn.BatchNorm2d(3, eps=1e-3),
                                  torch.nn.Sequential(torch.nn.BatchNorm1d(4, momentum=None,
                                                                           affine=False)))
        net[1].weight.requires_grad_(False)
        net[1].running_mean.fill_(0.5)
        net[1].num_batches_tracked.fill_(7)
        net.eval()
        bn1, bn2 = net[1], net[2][0]
        out = nt.convert_sync_batchnorm(net)
        self.assertIs(out, net)
        s1, s2 = out[1], out[2][0]
        self.assertIsInstance(s1, nt.SyncBatchNorm)
        # DistributedDataParallel refuses CPU modules holding torch.nn.SyncBatchNorm
        self.assertNotIsInstance(s1, torch.nn.SyncBatchNorm)
        self.assertIsInstance(s2, nt.SyncBatchNorm)
        self.assertIsInstance(out[0], torch.nn.Conv2d)
        self.assertIs(s1.weight, bn1.weight)
        self.assertFalse(s1.weight.requires_grad)
        self.assertIs(s1.running_mean, bn1.running_mean)
        self.assertEqual(int(s1.num_batches_tracked), 7)
        self.assertEqual((s1.eps, s1.momentum, s2.momentum, s2.affine), (1e-3, 0.1, None, False))
        self.assertIsNone(s2.weight)
        self.assertFalse(s1.training or s2.training)
        single = nt.SyncBatchNorm.convert_sync_batchnorm(torch.nn.BatchNorm3d(2), "group")
        self.assertIsInstance(single, nt.SyncBatchNorm)
        self.assertEqual(single.process_group, "group")
        self.assertTrue(single.training)


if __name__ == "__main__":
    unittest.main()
