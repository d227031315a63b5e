#!/usr/bin/env python3
"""Writes the seed corpus of the fuzz targets (tests/fuzz/corpus/<target>/).

Each seed is a short header the target decodes as the operator, extents,
layout or framework/layer (see the decoders in fuzz_functional.c and
fuzz_module.c) followed by filler bytes that decode as "buffer present",
small shifts, moderate tensor values and mostly valid flags. Deterministic:
rerunning rewrites the same files.

    python3 tests/fuzz/make_corpus.py
"""
import hashlib
import os

HERE = os.path.dirname(os.path.abspath(__file__))

# bytes that decode as: present (>= 8), y present (low bits), not in place
# (< 0x80), small shift, tensor values in [-7, 4]
FILLERS = [
    bytes([0x5F, 0x47, 0x6B, 0x53]),
    bytes([0x3B, 0x77, 0x19, 0x62, 0x4D]),
    bytes([0x2F, 0x6E, 0x55, 0x0B, 0x71, 0x38]),
]
SPECIAL_DATA = bytes([0xE0, 0xE2, 0xE4, 0xE9, 0xEA, 0xF3, 0x10, 0xE8])  # NaN, Inf, 1e30, denormal ...


def extent(v):
    """Encoding of an extent: 0 .. 15 in one byte, 16 .. 110 in two, or, as
    ('s', i), special extent i."""
    if isinstance(v, tuple):
        return bytes([0xC0, v[1]])
    if v >= 16:
        a = min(v - 16, 31)
        assert v - 16 - a < 64
        return bytes([0x80 | a, v - 16 - a])
    assert 0 <= v < 16
    return bytes([v])


def filler(k, n):
    f = FILLERS[k % len(FILLERS)]
    return (f * (n // len(f) + 1))[:n]


def write(target, seeds):
    d = os.path.join(HERE, "corpus", target)
    os.makedirs(d, exist_ok=True)
    for old in os.listdir(d):
        os.remove(os.path.join(d, old))
    for s in seeds:
        name = hashlib.sha1(s).hexdigest()[:16]
        with open(os.path.join(d, name), "wb") as f:
            f.write(s)
    print(f"{target}: {len(seeds)} seeds")


def functional():
    seeds = []
    # operators over (n, c, spatial, layout)
    shapes = [(2, 3, 5), (4, 8, 1), (1, 15, 9), (3, 2, 7), (0, 4, 3)]
    for op in range(6):  # BN train/infer/stats/apply, Instance, Group
        for i, (n, c, s) in enumerate(shapes[:4] if op != 0 else shapes):
            layout = i & 1
            seeds.append(bytes([op]) + extent(n) + extent(c) + extent(s) + bytes([layout]) +
                         filler(i + op, 160))
    # rows x cols operators
    for op in (6, 7):
        for i, (r, c) in enumerate([(3, 8), (1, 15), (5, 1), (0, 4)]):
            seeds.append(bytes([op]) + extent(r) + extent(c) + filler(i, 120))
    # moments, merge / var
    seeds.append(bytes([8]) + extent(13) + filler(0, 40))
    seeds.append(bytes([8]) + extent(7) + bytes([0x5F, 0x00]) + SPECIAL_DATA)
    seeds.append(bytes([9]) + bytes([1, 2, 3, 2, 0, 4, 0x04]))
    # non-finite data and special extents (2^62, 0x0AAAAAAAAAAAAAAB, INT64_MAX, -1)
    seeds.append(bytes([0]) + extent(2) + extent(3) + extent(4) + bytes([0, 0x5F, 0]) +
                 SPECIAL_DATA * 4 + filler(1, 60))
    seeds.append(bytes([6]) + extent(2) + extent(6) + bytes([0x5F, 0]) + SPECIAL_DATA * 2 +
                 filler(2, 60))
    for op, sp in ((0, 5), (2, 6), (4, 3), (6, 0)):
        seeds.append(bytes([op]) + extent(2) + extent(("s", sp)) + extent(3) + bytes([0]) +
                     filler(op, 40))
    return seeds


def module():
    seeds = []
    layers_of = {0: range(5), 1: range(5), 2: range(4), 3: range(5), 4: (0, 2, 3, 4), 5: range(4)}
    k = 0
    for fw, layers in layers_of.items():
        for layer in layers:
            rank = 1 + k % 3
            c = 1 + (3 * k) % 12
            if layer == 2:
                c = 4  # GroupNorm: divisible by the default groups of the seeds below
            cfg = bytes([0])  # no config field changed
            if layer == 2:
                cfg = bytes([1, 18, 0, 1])  # num_groups = 2
            flags = 0x00
            steps = bytes([1, 0x10]) + filler(k, 60)  # forward, well formed
            steps += bytes([0, 0x00, 0x00])  # set_training(0)
            steps += bytes([2, 0x10]) + filler(k + 1, 60)  # forward again
            seeds.append(bytes([fw, layer, rank - 1, c - 1]) + cfg + bytes([flags, 0]) + steps)
            k += 1
    # garbage-filled config, out-of-range framework/layer, fuzzed ranks
    seeds.append(bytes([0, 0, 0, 3, 0xF8]) + bytes(range(40, 200)))
    seeds.append(bytes([0xE0, 0xE1, 0, 3, 0]))
    seeds.append(bytes([0, 3, 0, 5, 0, 0x40, 0, 1, 0x90, 0xE2, 0x00, 0x00]))
    # MegEngine BatchNorm freeze=1, track_running_stats=0
    seeds.append(bytes([2, 0, 1, 3, 2, 12, 2, 3, 1, 0, 0, 1, 0x10]) + filler(0, 60))
    return seeds


def ex():
    """fuzz_ex: op, struct_size choice, dtype, param_dtype, reserved2, extents,
    layout, activation, strides of x, in place, strides of y, context."""
    seeds = []
    shapes = [(2, 3, 5), (4, 8, 1), (1, 13, 9), (3, 2, 7), (0, 4, 3)]
    k = 0
    for op in range(8):
        for dt in range(3):
            n, c, sp = shapes[(op + dt) % len(shapes)]
            lay = 1 if op >= 6 else (op + dt) & 1
            pb = 200 if (op + dt) % 2 else 0  # param_dtype = dtype, or fp32
            head = bytes([op, 0, dt, pb, 0]) + extent(n) + extent(c)
            if op >= 6:
                head += bytes([0x90]) + extent(sp) + bytes([lay, 0])  # spatial extent, kept
            else:
                head += extent(sp) + bytes([lay])
            act = (0, 2, 4)[k % 3]
            xs = 0 if k % 2 else 0x80 | (k & 7)  # dense, or padded rows / samples
            ys = 0x80 | ((k + 3) & 7) if k % 3 == 0 else 0
            ctx = 130 if k % 4 == 1 else 0  # a 2-thread pool, or none
            seeds.append(head + bytes([act, xs, 0, ys, ctx]) + filler(k, 200))
            k += 1
    # special data in bf16 and fp16, in place, an old struct_size, a bad dtype
    seeds.append(bytes([0, 0, 2, 200, 0]) + extent(2) + extent(3) + extent(4) +
                 bytes([0, 0, 0, 0xE0, 0, 0x90, 0x5F, 0]) + SPECIAL_DATA * 4 + filler(1, 60))
    seeds.append(bytes([6, 0, 1, 0, 0]) + extent(3) + extent(9) + bytes([0x10]) +
                 bytes([1, 0, 0, 0, 0xF0, 0, 0x5F]) + filler(2, 120))
    seeds.append(bytes([4, 205, 2, 200, 0]) + extent(2) + extent(3) + extent(5) + bytes([0]) +
                 filler(0, 120))
    seeds.append(bytes([5, 0, 3]) + filler(1, 80))
    return seeds


def backward():
    """fuzz_backward: op, struct_size choice, dtype, param_dtype, reserved2,
    extents (elemt: the empty-shard byte), layout, activation, alias, strides
    of x and y, context, eps / groups, the presence bits, elemt's count."""
    seeds = []
    shapes = [(2, 3, 5), (4, 8, 1), (1, 13, 9), (3, 2, 7), (0, 4, 3), (5, 17, 3)]
    # none, ReLU, LeakyReLU 0.2, LeakyReLU with a decoded alpha, SiLU (unsupported)
    acts = [bytes([0]), bytes([4]), bytes([2]), bytes([5, 0x78]), bytes([165, 0x70])]
    k = 0
    for op in range(8):
        rows = op >= 6
        for dt in range(3):
            n, c, sp = shapes[(op + dt) % len(shapes)]
            pb = 200 if (op + dt) % 2 else 0  # param_dtype = dtype, or fp32
            head = bytes([op, 0, dt, pb, 0]) + extent(n)
            if op == 3:
                head += bytes([0x80 if k % 2 else 0])  # an empty shard, or n as decoded
            head += extent(c)
            if rows:
                head += bytes([0x90]) + extent(sp) + bytes([1, 0])  # spatial extent, kept
            else:
                head += extent(sp) + bytes([(op + dt) & 1])
            head += acts[k % len(acts)]
            alias = b"" if op == 2 else bytes([210 if k % 4 == 3 else 0])
            xs = 0 if k % 2 else 0x80 | (k & 7)  # dense, or padded rows / samples
            strides = bytes([xs]) if alias == bytes([210]) else bytes([xs, 0x80 | ((k + 3) & 7)])
            ctx = (48, 0, 98, 96)[k % 4]  # serial, none, pools of 3 and 1 threads
            tail = bytes([0]) if op == 1 else bytes([3, 1]) if op == 5 else b""
            count = bytes([2]) if op == 3 else b""
            seeds.append(head + alias + strides + bytes([ctx]) + tail + bytes([0xFF] * 4) + count +
                         filler(k, 240))
            k += 1
    # large enough for the pools (a serial call against 1, 2 and 3 threads)
    for op, (n, c, sp), lay, ctx in ((0, (8, 64, 64), 0, 98), (4, (4, 64, 96), 1, 97),
                                     (5, (4, 64, 100), 0, 112), (6, (90, 100, 1), 1, 96),
                                     (3, (6, 64, 90), 1, 98)):
        head = bytes([op, 0, 0, 0, 0]) + extent(n) + (bytes([0x80]) if op == 3 else b"") + extent(c)
        head += (bytes([0x10, 1, 0]) if op >= 6 else extent(sp) + bytes([lay]))
        tail = bytes([3, 3]) if op == 5 else b""
        seeds.append(head + bytes([4, 0, 0, 0, ctx]) + tail + bytes([0xFF] * 4) +
                     (bytes([2]) if op == 3 else b"") + filler(op, 240))
    # special data, an old struct_size, special extents, a bad dtype, missing arrays
    seeds.append(bytes([0, 0, 2, 200, 0]) + extent(2) + extent(3) + extent(4) +
                 bytes([0, 0, 0, 0, 0, 48]) + bytes([0xFF] * 4) + SPECIAL_DATA * 6 + filler(1, 60))
    seeds.append(bytes([4, 205, 1, 0, 0]) + extent(2) + extent(3) + extent(5) +
                 bytes([1, 2, 0, 0, 0, 100]) + bytes([0xFF] * 4) + filler(0, 200))
    for op, sp in ((0, 5), (2, 6), (5, 3), (7, 0), (3, 19)):
        seeds.append(bytes([op, 0, 0, 0, 0]) + extent(2) + (bytes([0x80]) if op == 3 else b"") +
                     extent(("s", sp)) + (bytes([0x90]) if op >= 6 else b"") + extent(3) +
                     bytes([1, 1, 0, 0x40]) + filler(op, 40))
    seeds.append(bytes([1, 0, 3]) + filler(1, 80))
    seeds.append(bytes([3, 0, 0, 0, 0]) + extent(0) + bytes([0]) + extent(5) + extent(4) +
                 bytes([0, 0, 0, 0, 0, 48, 0xFF, 0x01, 0xFF, 0x07, 0]) + filler(2, 100))
    return seeds


def fused():
    """fuzz_fused: op (bit 0: RMSNorm), struct_size choice, dtype, param_dtype,
    reserved2, extents (cols >= 4000 as 0xF8 + 16 bits), spatial, layout,
    activation, strides of x, in place, strides of y, context, the fusion
    (present, struct_size, flags, reserved, skip and its strides, skip_bias,
    sum and its strides, quant, y_dtype, y_scale, y_zero_point, row_scale),
    eps, which arrays are given."""

    def cols(c):
        if c >= 4000:
            v = c - 4000
            return bytes([0xF8, v & 0xFF, v >> 8])
        if c > 110:
            return bytes([0xA0, c & 0xFF, c >> 8])  # 16 bits, 10 of them kept
        return extent(c)

    def head(op, dt, pb, n, c, sp, act=0, xs=0, inplace=False, ys=0, ctx=0):
        h = bytes([op, 0, dt, pb, 0]) + extent(n) + cols(c)
        h += bytes([0]) if sp == 1 else bytes([0x90]) + extent(sp)
        h += bytes([1, 0, act])
        if act & 1:
            h += bytes([0x78])  # alpha from the value grid
        h += bytes([xs, 0xF0 if inplace else 0])
        if not inplace:
            h += bytes([ys])
        return h + bytes([ctx])

    def fusion(skip=True, bc=False, kb=False, sum_=0, quant=0, ydt=0, scale=0, zp=0, rsc=True,
               skip_st=0, sum_st=0, size=0, flags=None, reserved=0):
        """sum_: 0 none, 128 own buffer, 190 x, 205 skip, 220 y; quant: 0 none,
        120 TENSOR, 200 ROW; scale: index into the harness's table."""
        f = bytes([0x40, size])
        f += bytes([flags if flags is not None else (0xA0 if bc else 0), reserved])
        f += bytes([0x80 if skip else 0])
        if skip:
            f += bytes([skip_st])
            if bc:
                f += bytes([0])
        f += bytes([1 if kb else 0, sum_])
        if not skip and sum_:
            f += bytes([0])
        if sum_ == 128:
            f += bytes([sum_st])
        elif sum_:
            f += bytes([0])
        f += bytes([quant, ydt, scale, zp, 0xFF if rsc else 0])
        return f

    tail = bytes([0, 0xFF, 0x0F])  # eps 1e-5, x and y given, weight, bias, both saves
    seeds = []
    k = 0
    shapes = [(3, 8, 1), (2, 13, 5), (4, 70, 1), (1, 100, 3), (0, 16, 1), (5, 33, 2)]
    configs = [
        dict(),  # residual
        dict(kb=True, sum_=128),  # residual, bias, sum output
        dict(bc=True, kb=True),  # broadcast skip
        dict(skip=False, quant=120, scale=4),  # per-tensor int8 without residual
        dict(kb=True, sum_=190, quant=120, ydt=1, scale=1, zp=100),  # uint8, sum over x
        dict(sum_=205, quant=200),  # per-row, sum over skip
        dict(skip=False, quant=200),  # per-row
        dict(kb=True, sum_=128, sum_st=0x86, skip_st=0x85, quant=120, scale=2, zp=3),
    ]
    for op in (0, 1):
        for dt in range(3):
            for ci, cfg in enumerate(configs):
                if (ci + dt + op) % 2 and dt:
                    continue
                n, c, sp = shapes[(k + dt) % len(shapes)]
                pb = 200 if (op + dt + ci) % 3 == 0 else 0
                act = (0, 2, 4, 3, 5)[k % 5]
                xs = 0 if k % 3 else 0x80 | (k & 7)
                ys = 0x80 | ((k + 3) & 7) if k % 4 == 0 else 0
                ctx = (48, 0, 98, 96, 97)[k % 5]
                seeds.append(head(op, dt, pb, n, c, sp, act, xs, False, ys, ctx) + fusion(**cfg) +
                             tail + filler(k, 240))
                k += 1
    # long rows: around the 4096-float column chunks, with pools
    for op, c, cfg in ((0, 4096, dict(kb=True, sum_=128)), (1, 4097, dict(quant=200)),
                       (0, 5000, dict(kb=True, sum_=190, quant=200)),
                       (1, 8300, dict(quant=120, scale=3, zp=5)), (0, 4500, dict(bc=True))):
        seeds.append(head(op, 0, 0, 3, c, 1, 0, 0, False, 0, 98) + fusion(**cfg) + tail +
                     filler(op, 200))
    # enough rows for the pools (a serial call against 1, 2 and 3 threads)
    for op, (n, c, sp), cfg in ((0, (64, 256, 1), dict(kb=True, sum_=128)),
                                (1, (8, 96, 40), dict(quant=200, sum_=205)),
                                (0, (90, 100, 1), dict(quant=120, scale=1)),
                                (1, (30, 64, 10), dict(bc=True, kb=True, sum_=128))):
        seeds.append(head(op, 0, 0, n, c, sp, 0, 0, False, 0, 98) + fusion(**cfg) + tail +
                     filler(op, 240))
    # in place (y == x) with a residual, NULL fusion, fp16 / bf16 residuals
    seeds.append(head(0, 0, 0, 3, 24, 1, 0, 0, True) + fusion(kb=True) + tail + filler(1, 200))
    seeds.append(head(1, 1, 0, 3, 24, 1) + bytes([0]) + tail + filler(2, 200))
    seeds.append(head(0, 2, 200, 4, 40, 1, 0, 0x85, False, 0x83, 97) +
                 fusion(kb=True, sum_=128, sum_st=0x84) + tail + filler(0, 240))
    # special data through a quantized output
    seeds.append(head(0, 0, 0, 4, 9, 1) + fusion(kb=True, sum_=128, quant=120, scale=0) + tail +
                 SPECIAL_DATA * 8 + filler(1, 60))
    seeds.append(head(1, 0, 0, 4, 9, 1) + fusion(quant=200) + tail + SPECIAL_DATA * 8 +
                 filler(2, 60))
    # fields the library must refuse: y_scale 0 / NaN / denormal, zero point out
    # of range, unknown flags, reserved, struct_size too small or with a tail,
    # quant and y_dtype garbage, ROW without row_scale, sum == y, sum without
    # skip, broadcast sum over skip
    bad = [dict(quant=120, scale=6), dict(quant=120, scale=8), dict(quant=120, scale=11),
           dict(quant=120, zp=220), dict(flags=0xF0), dict(reserved=0xFB), dict(size=220),
           dict(size=249), dict(quant=0xF0), dict(quant=120, ydt=0xF0), dict(quant=200, rsc=False),
           dict(sum_=220), dict(skip=False, sum_=128), dict(bc=True, sum_=205),
           dict(quant=200, ydt=201)]
    for i, cfg in enumerate(bad):
        seeds.append(head(i & 1, 0, 0, 2, 5 + i, 1) + fusion(**cfg) + tail + filler(i, 80))
    return seeds


if __name__ == "__main__":
    write("fuzz_functional", functional())
    write("fuzz_module", module())
    write("fuzz_ex", ex())
    write("fuzz_backward", backward())
    write("fuzz_fused", fused())
