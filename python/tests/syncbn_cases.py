"""The cases of test_syncbn.py and one rank of them.

Each case is a SyncBatchNorm layer trained for a few iterations on a batch
split over the ranks (sizes[r] samples on rank r, possibly 0); the data of
every iteration is a function of the case and the iteration alone, so the
ranks and the single-process reference draw the same batch.

Run as a script, it is rank RANK of a gloo group of WORLD processes (over
loopback, rendezvous through INIT_FILE): it runs every case of CASES[WORLD]
with normkit.torch.SyncBatchNorm and saves what it computed to
OUT_DIR/rank<RANK>.pt.
    syncbn_cases.py RANK WORLD INIT_FILE OUT_DIR
"""
import datetime
import faulthandler
import os
import sys

import torch

CL = torch.channels_last

# name, per-rank batch sizes, (C, *spatial), channels_last input, affine,
# momentum (None: cumulative average), track_running_stats, iterations,
# input dtype (parameters and running statistics stay fp32), input in
# neither dense layout (channels-last strides of a 3-D tensor)
CASES = {
    2: [
        dict(name="equal", sizes=[3, 3], feat=(5, 3, 4)),
        dict(name="unequal_channels_last", sizes=[4, 1], feat=(6, 3, 2), cl=True),
        dict(name="momentum_none_strided", sizes=[2, 3], feat=(4, 5), momentum=None, iters=3,
             strided=True),
        dict(name="affine_off_2d", sizes=[5, 2], feat=(7,), affine=False),
        dict(name="bf16", sizes=[3, 2], feat=(4, 6), dtype=torch.bfloat16),
    ],
    4: [
        dict(name="unequal_empty_rank", sizes=[3, 1, 2, 0], feat=(5, 4), iters=3),
        dict(name="equal_channels_last", sizes=[2, 2, 2, 2], feat=(3, 2, 3), cl=True,
             momentum=None, iters=2),
        dict(name="no_running_stats", sizes=[1, 2, 0, 3], feat=(4, 3), track=False),
    ],
}

# the case of each world size that also runs under DistributedDataParallel
DDP_CASE = {2: "equal", 4: "unequal_empty_rank"}

DEFAULTS = dict(cl=False, affine=True, momentum=0.1, track=True, iters=2,
                dtype=torch.float32, eps=1e-5, strided=False)


def full_case(case):
    c = dict(DEFAULTS)
    c.update(case)
    return c


def case_seed(world, name):
    return 1000 * world + [c["name"] for c in CASES[world]].index(name)


def initial_state(world, case):
    """Initial weight, bias, running_mean, running_var (fp32)."""
    g = torch.Generator().manual_seed(case_seed(world, case["name"]))
    ch = case["feat"][0]
    return (torch.randn(ch, generator=g) * 0.5 + 1, torch.randn(ch, generator=g),
            torch.randn(ch, generator=g) * 0.1, torch.rand(ch, generator=g) + 0.5)


def batch(world, case, it):
    """The whole batch x (in the case's dtype) and the upstream gradient dy
    of iteration it, channels-first."""
    g = torch.Generator().manual_seed(100000 + 100 * case_seed(world, case["name"]) + it)
    shape = (sum(case["sizes"]),) + tuple(case["feat"])
    # a mean far from 0 and channel-dependent scales
    scale = torch.rand(shape[1], generator=g).view((1, -1) + (1,) * (len(shape) - 2)) * 3 + 0.5
    x = torch.randn(shape, generator=g) * scale + 4
    dy = torch.randn(shape, generator=g)
    return x.to(case["dtype"]), dy.to(case["dtype"])


def shard(t, sizes, rank):
    start = sum(sizes[:rank])
    return t[start:start + sizes[rank]]


def run_rank(rank, world, init_file):
    import torch.distributed as dist
    import normkit.torch as nt

    dist.init_process_group("gloo", init_method="file://" + init_file, rank=rank,
                            world_size=world, timeout=datetime.timedelta(seconds=30))
    results = {}
    for raw in CASES[world]:
        case = full_case(raw)
        w0, b0, rm0, rv0 = initial_state(world, case)
        m = nt.SyncBatchNorm(case["feat"][0], eps=case["eps"], momentum=case["momentum"],
                             affine=case["affine"], track_running_stats=case["track"])
        with torch.no_grad():
            if case["affine"]:
                m.weight.copy_(w0)
                m.bias.copy_(b0)
            if case["track"]:
                m.running_mean.copy_(rm0)
                m.running_var.copy_(rv0)
        its = []
        for it in range(case["iters"]):
            x_all, dy_all = batch(world, case, it)
            x = shard(x_all, case["sizes"], rank).clone()
            dy = shard(dy_all, case["sizes"], rank).clone()
            if case["cl"]:
                x = x.contiguous(memory_format=CL)
            x.requires_grad_(True)
            m.zero_grad(set_to_none=True)
            y = m(x.transpose(1, 2).contiguous().transpose(1, 2) if case["strided"] else x)
            y.backward(dy)
            local = nt._ops.bn_stats(x.detach())
            merged = nt._gather_moments(x.detach(), dist.group.WORLD, world)
            its.append(dict(
                y=y.detach(), dx=x.grad, local=local, merged=merged,
                y_cl=y.is_contiguous(memory_format=CL) if y.dim() == 4 else None,
                dx_cl=x.grad.is_contiguous(memory_format=CL) if y.dim() == 4 else None,
                dweight=None if m.weight is None or m.weight.grad is None
                else m.weight.grad.clone(),
                dbias=None if m.bias is None or m.bias.grad is None else m.bias.grad.clone()))
        out = dict(iters=its)
        if case["track"]:
            out["running_mean"] = m.running_mean.clone()
            out["running_var"] = m.running_var.clone()
            out["num_batches_tracked"] = int(m.num_batches_tracked)
        # eval: running statistics, no communication (a rank that hangs here
        # would time the group out)
        m.eval()
        x_all, _ = batch(world, case, case["iters"])
        with torch.no_grad():
            out["eval_y"] = m(shard(x_all, case["sizes"], rank))
        results[case["name"]] = out
    # one step under DistributedDataParallel (CPU, gloo) on DDP_CASE's first
    # batch: DDP averages the ranks' own dweight / dbias
    case = full_case(next(c for c in CASES[world] if c["name"] == DDP_CASE[world]))
    w0, b0, rm0, rv0 = initial_state(world, case)
    m = nt.SyncBatchNorm(case["feat"][0], eps=case["eps"], momentum=case["momentum"])
    with torch.no_grad():
        m.weight.copy_(w0)
        m.bias.copy_(b0)
        m.running_mean.copy_(rm0)
        m.running_var.copy_(rv0)
    ddp = torch.nn.parallel.DistributedDataParallel(m)
    x_all, dy_all = batch(world, case, 0)
    x = shard(x_all, case["sizes"], rank).clone().requires_grad_(True)
    y = ddp(x)
    y.backward(shard(dy_all, case["sizes"], rank))
    results["ddp"] = dict(y=y.detach(), dx=x.grad, dweight=m.weight.grad.clone(),
                          dbias=m.bias.grad.clone(), running_var=m.running_var.clone())
    # the DDP reducer goes while the process group is alive (dropping the
    # group's last reference with it after destroy_process_group can hang in
    # the gloo group's destructor)
    del ddp, y
    dist.barrier()
    dist.destroy_process_group()
    return results


def main(argv):
    rank, world, init_file, out_dir = int(argv[1]), int(argv[2]), argv[3], argv[4]
    # a rank still running after SYNCBN_DUMP_S seconds prints its threads'
    # stacks (to the log test_syncbn.py shows) and exits
    faulthandler.dump_traceback_later(float(os.environ.get("SYNCBN_DUMP_S", "40")), exit=True)
    torch.set_num_threads(1)
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import common  # noqa: F401 (puts normkit on the path)
    results = run_rank(rank, world, init_file)
    torch.save(results, os.path.join(out_dir, "rank%d.pt" % rank))
    sys.stdout.flush()
    sys.stderr.flush()
    # no interpreter teardown: the results are saved and the group is gone
    os._exit(0)


if __name__ == "__main__":
    main(sys.argv)
