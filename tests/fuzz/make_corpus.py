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


if __name__ == "__main__":
    write("fuzz_functional", functional())
    write("fuzz_module", module())
    write("fuzz_ex", ex())
    write("fuzz_backward", backward())
