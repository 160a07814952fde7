#!/usr/bin/env python3
"""Golden vectors for strata-quant, made with gguf-py's numpy reference (`gguf.quants`).

Run by `cargo xtask golden` (needs `pip install gguf numpy`); writes one small file per format to
the output directory (default quant/tests/data/). The Rust tests read them with no Python.

File layout (little-endian):
    b"SQGV", u32 version = 1, u32 ggml type id, u32 n            -- dequantize case
    row_size(n) bytes: the blocks
    n × f32: gguf-py's dequantization of those blocks
    u32 m                                                        -- quantize case (m = 0: none)
    m × f32: input
    row_size(m) bytes: gguf-py's quantization of the input

Blocks are random with edge cases: zero, subnormal, largest finite and negative f16 scales, quant
bytes all 0x00 / all 0xFF. gguf-py has no Q8_1 (its size table still says 40 bytes; ggml's
block_q8_1 is 36) and no Q8_K: for those two, this file carries a numpy port of ggml's
`dequantize_row_*` / `quantize_row_*_ref`, marked below.
"""

import argparse
import os
import struct
import sys

import numpy as np
from gguf import GGMLQuantizationType as T
from gguf import quants

QK_K = 256

# (type, elements per block, bytes per block, f16 scale field offsets, blocks in the dequantize case)
FORMATS = [
    (T.F32, 1, 4, [], 256),
    (T.F16, 1, 2, [], 256),
    (T.BF16, 1, 2, [], 256),
    (T.Q4_0, 32, 18, [0], 24),
    (T.Q4_1, 32, 20, [0, 2], 24),
    (T.Q5_0, 32, 22, [0], 24),
    (T.Q5_1, 32, 24, [0, 2], 24),
    (T.Q8_0, 32, 34, [0], 24),
    (T.Q8_1, 32, 36, [0, 2], 24),
    (T.Q2_K, 256, 84, [80, 82], 6),
    (T.Q3_K, 256, 110, [108], 6),
    (T.Q4_K, 256, 144, [0, 2], 6),
    (T.Q5_K, 256, 176, [0, 2], 6),
    (T.Q6_K, 256, 210, [208], 6),
    (T.Q8_K, 256, 292, [], 4),
    # Added with the IQ, ternary and MXFP4 formats (after the others, so that their files, drawn
    # from the same generator, did not change). Many blocks for the grid formats, so that most
    # grid rows occur.
    (T.IQ4_NL, 32, 18, [0], 24),
    (T.IQ4_XS, 256, 136, [0], 8),
    (T.IQ2_XXS, 256, 66, [0], 64),
    (T.IQ2_XS, 256, 74, [0], 64),
    (T.IQ2_S, 256, 82, [0], 64),
    (T.IQ3_XXS, 256, 98, [0], 32),
    (T.IQ3_S, 256, 110, [0], 32),
    (T.IQ1_S, 256, 50, [0], 64),
    (T.IQ1_M, 256, 56, [], 64),
    (T.TQ1_0, 256, 54, [52], 8),
    (T.TQ2_0, 256, 66, [64], 8),
    (T.MXFP4, 32, 17, [], 64),
]

# Formats gguf-py (or, for Q8_1/Q8_K, the ported ggml reference below) can quantize.
QUANTIZABLE = {T.F16, T.BF16, T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1, T.Q8_0, T.Q8_1, T.Q8_K}


def f16_scales(rng, n):
    """f16 bit patterns for n scale fields: mostly ordinary, plus every edge case."""
    vals = (rng.standard_normal(n) * 0.02).astype(np.float16).view(np.uint16).copy()
    edge = [0x0000, 0x8000, 0x0001, 0x03FF, 0x8200, 0x7BFF, 0xFBFF, 0x3C00, 0xBC00, 0x0400]
    for i, e in enumerate(edge):
        if i * 3 < n:
            vals[i * 3] = e
    return vals


def random_blocks(rng, ty, bsize, tsize, fields, nblocks):
    raw = rng.integers(0, 256, size=(nblocks, tsize), dtype=np.uint8)
    if nblocks > 4:
        raw[1, :] = 0x00  # all-zero block (then scales set below)
        raw[2, :] = 0xFF
    if ty == T.Q8_K:
        # f32 scale, quants −127..127 (activations never hold −128), consistent bsums.
        out = np.zeros((nblocks, tsize), dtype=np.uint8)
        for b in range(nblocks):
            d = np.float32(rng.standard_normal() * 0.01) if b != 1 else np.float32(0)
            q = rng.integers(-127, 128, size=QK_K, dtype=np.int8)
            if b == 2:
                q[:] = 127
            bs = q.astype(np.int32).reshape(16, 16).sum(axis=1).astype(np.int16)
            out[b] = np.frombuffer(np.float32(d).tobytes() + q.tobytes() + bs.tobytes(), dtype=np.uint8)
        return out.reshape(-1)
    scales = f16_scales(rng, nblocks * max(1, len(fields)))
    k = 0
    for b in range(nblocks):
        for off in fields:
            raw[b, off:off + 2] = np.frombuffer(scales[k].tobytes(), dtype=np.uint8)
            k += 1
    return raw.reshape(-1)


def float_values(rng, ty, n):
    v = rng.standard_normal(n).astype(np.float32)
    special = [0.0, -0.0, 1.0, -2.5, 65504.0, 6.1e-5, 6e-8, 1e-40, 3.4e38, np.inf, -np.inf]
    v[: len(special)] = special
    if ty == T.F32:
        return v.view(np.uint8)
    if ty == T.F16:
        with np.errstate(over="ignore"):
            h = v.astype(np.float16)  # 3.4e38 overflows to inf on purpose
        h[20] = np.float16(np.nan)
        return h.view(np.uint8)
    # BF16 bit patterns: the top halves, plus a NaN.
    b = (v.view(np.uint32) >> 16).astype(np.uint16)
    b[20] = 0x7FC0
    return b.view(np.uint8)


# --- numpy port of ggml's reference for the two formats gguf-py lacks -------------------------

def dequant_q8_1(blocks):
    b = blocks.reshape(-1, 36)
    d = b[:, 0:2].copy().view(np.float16).astype(np.float32)
    q = b[:, 4:].copy().view(np.int8).astype(np.float32)
    return (q * d).reshape(-1)


def dequant_q8_k(blocks):
    b = blocks.reshape(-1, 292)
    d = b[:, 0:4].copy().view(np.float32)
    q = b[:, 4:260].copy().view(np.int8).astype(np.float32)
    return (d * q).reshape(-1)


def quant_q8_1(x):
    out = []
    for blk in x.reshape(-1, 32):
        amax = np.float32(np.max(np.abs(blk)))
        d = np.float32(amax / np.float32(127))
        iv = np.float32(1) / d if d != 0 else np.float32(0)
        q = quants.np_roundf(blk * iv).astype(np.int8)
        s = np.float32(np.int32(q.astype(np.int32).sum())) * d
        out.append(np.float16(d).tobytes() + np.float16(s).tobytes() + q.tobytes())
    return np.frombuffer(b"".join(out), dtype=np.uint8)


def quant_q8_k(x):
    out = []
    for blk in x.reshape(-1, QK_K):
        a = np.abs(blk)
        i = int(np.argmax(a))  # first index of the maximum, as ggml's strict `>` loop
        amax, mx = a[i], blk[i]
        if amax == 0:
            out.append(np.float32(0).tobytes() + bytes(QK_K) + bytes(32))
            continue
        iscale = np.float32(np.float32(-127.0) / mx)
        v = np.rint(iscale * blk)  # ggml's nearest_int: round half to even
        q = np.minimum(v, 127).astype(np.int8)
        bs = q.astype(np.int32).reshape(16, 16).sum(axis=1).astype(np.int16)
        out.append(np.float32(np.float32(1) / iscale).tobytes() + q.tobytes() + bs.tobytes())
    return np.frombuffer(b"".join(out), dtype=np.uint8)


def dequantize(ty, blocks):
    if ty == T.Q8_1:
        return dequant_q8_1(blocks)
    if ty == T.Q8_K:
        return dequant_q8_k(blocks)
    return quants.dequantize(blocks, ty).astype(np.float32).reshape(-1)


def quantize(ty, x):
    if ty == T.Q8_1:
        return quant_q8_1(x)
    if ty == T.Q8_K:
        return quant_q8_k(x)
    return np.asarray(quants.quantize(x.reshape(1, -1), ty)).view(np.uint8).reshape(-1)


def quant_input(rng, bsize):
    """Inputs for quantization: 8 blocks of 32 (or 2 of 256) with edge cases."""
    n = 256 if bsize == 32 else 512
    x = (rng.standard_normal(n) * 0.7).astype(np.float32)
    x[0:32] = 0.0                                  # all-zero block
    x[32:64] = np.float32(0.3)                     # constant block (Q4_1/Q5_1: d = 0)
    x[64:96] = rng.standard_normal(32).astype(np.float32) * 1e-6  # tiny values
    x[100] = np.float32(-9.0)                      # negative outlier is the max
    x[140] = np.float32(12.0)
    # Values that land exactly on .5 after scaling by 127/amax = 1 (ties).
    x[160:192] = np.arange(32, dtype=np.float32) * 0.5 - 8.0
    x[160] = np.float32(127.0)
    return x


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="quant/tests/data")
    ap.add_argument("--seed", type=int, default=20240601)
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    rng = np.random.default_rng(args.seed)
    total = 0
    for ty, bsize, tsize, fields, nblocks in FORMATS:
        if bsize == 1:
            blocks = float_values(rng, ty, nblocks)
            n = nblocks
        else:
            blocks = random_blocks(rng, ty, bsize, tsize, fields, nblocks)
            n = nblocks * bsize
        assert blocks.size == n // bsize * tsize, ty.name
        deq = dequantize(ty, blocks)
        assert deq.size == n and deq.dtype == np.float32, ty.name
        parts = [b"SQGV", struct.pack("<III", 1, int(ty), n), blocks.tobytes(), deq.tobytes()]
        if ty in QUANTIZABLE:
            x = quant_input(rng, 32 if bsize == 1 else bsize)
            q = quantize(ty, x)
            assert q.size == x.size // bsize * tsize, ty.name
            parts += [struct.pack("<I", x.size), x.tobytes(), q.tobytes()]
        else:
            parts.append(struct.pack("<I", 0))
        data = b"".join(parts)
        path = os.path.join(args.out, f"{ty.name.lower()}.bin")
        with open(path, "wb") as f:
            f.write(data)
        total += len(data)
        print(f"{path}: {len(data)} bytes ({n} elements{', quantize case' if ty in QUANTIZABLE else ''})")
    print(f"total {total} bytes")


if __name__ == "__main__":
    sys.exit(main())
