#!/usr/bin/python3
"""Turns normkit-bench JSON (--benchmark_out=FILE --benchmark_out_format=json)
into PNG charts:

  heatmap_<op>_<layout>_<dtype>_<isa>.png  fraction of memcpy over channels x spatial
  heatmaps_<dtype>_<isa>.png       the same, every operator and layout on one page
  models_<dtype>.png               GB/s of each model shape: memcpy, oneDNN,
                                   ATen and normkit on every ISA that ran
  models_speedup_<dtype>.png       normkit (best ISA) / oneDNN and / ATen

<dtype> is the rows' element type as their names carry it: f32, bf16, f16
(bf16_w16, f16_w16 with 16-bit weights). Rows named without one (older
normkit-bench JSON) count as f32.

Usage: plot.py bench.json [OUTDIR]      (OUTDIR defaults to the JSON's folder)
Needs matplotlib (Debian: python3-matplotlib).
"""
import json
import math
import os
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.colors import LinearSegmentedColormap  # noqa: E402

ISAS = ["scalar", "avx2", "avx512", "neon"]
OP_TITLES = {
    "bn_train": "BatchNorm train",
    "bn_infer": "BatchNorm infer",
    "in": "InstanceNorm",
    "gn": "GroupNorm",
    "ln": "LayerNorm",
    "rms": "RMSNorm",
}
LAYOUT_TITLES = {"cf": "channels-first", "cl": "channels-last", "rows": "rows = spatial, cols = channels"}


def parse(name):
    """'sweep/gn/cf/bf16/avx2/c:64/s:49/n:1/min_time:0.020' -> (['sweep','gn','cf','bf16','avx2'], {'c': 64, ...})"""
    parts, args = [], {}
    for p in name.split("/"):
        if ":" in p:
            k, v = p.split(":", 1)
            try:
                args[k] = float(v) if "." in v else int(v)
            except ValueError:
                args[k] = v
        else:
            parts.append(p)
    return parts, args


def load(path):
    with open(path) as f:
        data = json.load(f)
    runs = [b for b in data.get("benchmarks", []) if b.get("run_type", "iteration") == "iteration"]
    return data.get("context", {}), runs


def with_dtype(parts, n):
    """parts of a row named with its element type (n parts), or without one
    (n - 1, older JSON: f32), as n parts; None for other rows"""
    if len(parts) == n - 1:
        return parts[:-1] + ["f32", parts[-1]]
    return parts if len(parts) == n else None


def heatmap_data(runs):
    """{(op, layout, dtype, isa): {(c, s): ratio or None (skipped)}}"""
    cells = {}
    for b in runs:
        parts, args = parse(b["name"])
        parts = with_dtype(parts, 5)
        if not parts or parts[0] != "sweep" or "c" not in args or "s" not in args:
            continue
        key = tuple(parts[1:5])
        val = None if b.get("error_occurred") or b.get("skipped") else b.get("memcpy_ratio")
        cells.setdefault(key, {})[(args["c"], args["s"])] = (val, args.get("n", 1))
    return cells


CMAP = LinearSegmentedColormap.from_list("nk", ["#7f0000", "#d7301f", "#fdae61", "#ffffbf", "#a6d96a", "#1a9641"])


def draw_heatmap(ax, grid, title):
    cs = sorted({c for c, _ in grid})
    ss = sorted({s for _, s in grid})
    z = [[math.nan] * len(ss) for _ in cs]
    for i, c in enumerate(cs):
        for j, s in enumerate(ss):
            v = grid.get((c, s), (None, 1))[0]
            if v is not None:
                z[i][j] = v
    im = ax.imshow(z, cmap=CMAP, vmin=0.0, vmax=1.0, aspect="auto", origin="lower")
    ax.set_xticks(range(len(ss)), [str(s) for s in ss])
    ax.set_yticks(range(len(cs)), [str(c) for c in cs])
    ax.set_xlabel("spatial (rows for LN/RMS)")
    ax.set_ylabel("channels")
    ax.set_title(title, fontsize=10)
    for i in range(len(cs)):
        for j in range(len(ss)):
            v = z[i][j]
            txt = "skip" if math.isnan(v) else f"{v:.2f}"
            ax.text(j, i, txt, ha="center", va="center", fontsize=8, color="black" if not math.isnan(v) and 0.25 < v < 0.9 else "white" if not math.isnan(v) else "grey")
    ax.set_facecolor("#eeeeee")
    return im


def plot_heatmaps(runs, outdir, machine):
    cells = heatmap_data(runs)
    written = []
    for (op, layout, dtype, isa), grid in sorted(cells.items()):
        if all(v[0] is None for v in grid.values()):
            continue  # ISA not available on this machine: nothing to show
        n = max(v[1] for v in grid.values())
        fig, ax = plt.subplots(figsize=(7, 4.2))
        title = f"{OP_TITLES.get(op, op)}, {LAYOUT_TITLES.get(layout, layout)}, {dtype}, {isa}" + (f", batch {n}" if n > 1 else "")
        im = draw_heatmap(ax, grid, title + "\nfraction of memcpy bandwidth (1 = physical limit)")
        fig.colorbar(im, ax=ax, label="memcpy ratio")
        fig.text(0.01, 0.01, machine, fontsize=7, color="grey")
        fig.tight_layout(rect=(0, 0.03, 1, 1))
        path = os.path.join(outdir, f"heatmap_{op}_{layout}_{dtype}_{isa}.png")
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    # one page per element type and ISA
    for dtype, isa in sorted({(k[2], k[3]) for k in cells}):
        keys = [k for k in sorted(cells) if k[2:] == (dtype, isa) and any(v[0] is not None for v in cells[k].values())]
        if not keys:
            continue
        cols = 2
        rows = (len(keys) + cols - 1) // cols
        fig, axes = plt.subplots(rows, cols, figsize=(13, 3.6 * rows), squeeze=False)
        im = None
        for ax, k in zip([a for r in axes for a in r], keys):
            im = draw_heatmap(ax, cells[k], f"{OP_TITLES.get(k[0], k[0])}, {LAYOUT_TITLES.get(k[1], k[1])}")
        for ax in [a for r in axes for a in r][len(keys):]:
            ax.axis("off")
        fig.suptitle(f"normkit {isa}, {dtype}: fraction of memcpy bandwidth over channels x spatial  ({machine})", fontsize=11)
        fig.tight_layout(rect=(0, 0, 0.94, 0.98))
        if im is not None:
            fig.colorbar(im, ax=axes, fraction=0.02, pad=0.01, label="memcpy ratio")
        path = os.path.join(outdir, f"heatmaps_{dtype}_{isa}.png")
        fig.savefig(path, dpi=90)
        plt.close(fig)
        written.append(path)
    return written


def plot_models(runs, outdir, machine):
    """models_<dtype>.png and models_speedup_<dtype>.png for each element type"""
    dtypes = {}
    for b in runs:
        parts, _ = parse(b["name"])
        parts = with_dtype(parts, 4)
        if parts and parts[0] == "model":
            dtypes.setdefault(parts[2], []).append(b)
    written = []
    for dtype, rows in dtypes.items():
        written += plot_models_of(rows, dtype, outdir, machine)
    return written


def plot_models_of(runs, dtype, outdir, machine):
    models = {}
    order = []
    for b in runs:
        parts, _ = parse(b["name"])
        parts = with_dtype(parts, 4)
        name, impl = parts[1], parts[3]
        if name not in models:
            models[name] = {"label": b.get("label", name), "impl": {}}
            order.append(name)
        if b.get("error_occurred") or b.get("skipped") or "bytes_per_second" not in b:
            continue
        models[name]["impl"][impl] = b
    if not order:
        return []
    impls = ["memcpy", "onednn", "aten"] + ISAS
    present = [i for i in impls if any(i in m["impl"] for m in models.values())]
    colors = {"memcpy": "#bbbbbb", "onednn": "#1f77b4", "aten": "#ff7f0e", "scalar": "#9467bd", "avx2": "#2ca02c", "avx512": "#d62728", "neon": "#8c564b"}
    names = {"memcpy": "memcpy (limit)", "onednn": "oneDNN", "aten": "PyTorch ATen"}
    fig, ax = plt.subplots(figsize=(11, 0.55 * len(order) * max(1, len(present)) / 2.5 + 1.5))
    h = 0.8 / len(present)
    for k, impl in enumerate(present):
        ys, xs = [], []
        for i, name in enumerate(order):
            b = models[name]["impl"].get(impl)
            if b:
                ys.append(i + (k - (len(present) - 1) / 2) * h)
                xs.append(b["bytes_per_second"] / 1e9)
        ax.barh(ys, xs, height=h, color=colors.get(impl, None), label=names.get(impl, "normkit " + impl))
    ax.set_yticks(range(len(order)), [f"{n}\n{models[n]['label']}" for n in order], fontsize=7)
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.set_xlabel("GB/s (input read + output written), log scale; one thread")
    ax.set_title(f"Model shapes in {dtype}: normkit vs oneDNN vs PyTorch ATen vs memcpy  ({machine})", fontsize=10)
    ax.grid(axis="x", which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    path = os.path.join(outdir, f"models_{dtype}.png")
    fig.savefig(path, dpi=100)
    plt.close(fig)
    written = [path]

    # speed-up of the best ISA over the other libraries
    rows = []
    for name in order:
        best = None
        for isa in ISAS:
            b = models[name]["impl"].get(isa)
            if b and (best is None or b["bytes_per_second"] > best["bytes_per_second"]):
                best = b
        if best:
            rows.append((name, best.get("vs_onednn"), best.get("vs_aten")))
    if rows:
        fig, ax = plt.subplots(figsize=(10, 0.42 * len(rows) + 1.5))
        for k, (key, lab, col) in enumerate([(1, "vs oneDNN", "#1f77b4"), (2, "vs PyTorch ATen", "#ff7f0e")]):
            ys = [i + (k - 0.5) * 0.4 for i, r in enumerate(rows) if r[key]]
            xs = [r[key] for r in rows if r[key]]
            ax.barh(ys, xs, height=0.4, color=col, label=lab)
            for y, x in zip(ys, xs):
                ax.text(x, y, f" {x:.2f}x", va="center", fontsize=7)
        ax.axvline(1.0, color="black", lw=1)
        ax.set_xscale("log")
        ax.set_yticks(range(len(rows)), [r[0] for r in rows], fontsize=8)
        ax.invert_yaxis()
        ax.set_xlabel("their time / normkit's (best ISA); > 1: normkit faster; missing bar: no equivalent")
        ax.set_title(f"normkit speed-up on model shapes in {dtype}  ({machine})", fontsize=10)
        ax.legend(fontsize=8, loc="lower right")
        ax.grid(axis="x", which="both", alpha=0.3)
        fig.tight_layout()
        path = os.path.join(outdir, f"models_speedup_{dtype}.png")
        fig.savefig(path, dpi=100)
        plt.close(fig)
        written.append(path)
    return written


def main(argv):
    if len(argv) < 2 or argv[1] in ("-h", "--help"):
        print(__doc__)
        return 0 if len(argv) >= 2 else 2
    path = argv[1]
    outdir = argv[2] if len(argv) > 2 else (os.path.dirname(os.path.abspath(path)))
    os.makedirs(outdir, exist_ok=True)
    ctx, runs = load(path)
    machine = f"{ctx.get('host_name', '?')}, {ctx.get('num_cpus', '?')} CPUs @ {ctx.get('mhz_per_cpu', '?')} MHz"
    written = plot_heatmaps(runs, outdir, machine) + plot_models(runs, outdir, machine)
    for w in written:
        print(w)
    if not written:
        print("plot.py: no sweep or model rows in " + path, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
