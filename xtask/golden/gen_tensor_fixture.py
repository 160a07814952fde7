#!/usr/bin/env python3
"""Fixture for `strata tensor` on the real model: gguf-py's dequantization of a few tensors of
different types, recorded as shape + SHA-256 of the float32 little-endian bytes.

Run by `cargo xtask golden` when the model is present; writes cli/tests/data/tensor_golden.txt,
which cli/tests/tensor.rs compares against `strata tensor` output (no Python needed there).
"""

import argparse
import hashlib
import sys

import numpy as np
from gguf import GGUFReader
from gguf.quants import dequantize

TENSORS = [
    "blk.0.attn_output.weight",  # Q4_K
    "blk.0.ffn_down.weight",     # Q6_K
    "blk.0.attn_k.weight",       # Q5_0
    "blk.0.attn_v.weight",       # Q8_0
    "output_norm.weight",        # F32
]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("--out", default="cli/tests/data/tensor_golden.txt")
    args = ap.parse_args()
    r = GGUFReader(args.model)
    by_name = {t.name: t for t in r.tensors}
    lines = ["# name type numpy-shape sha256(float32 LE) -- from gguf-py gguf.quants.dequantize"]
    for name in TENSORS:
        t = by_name[name]
        x = dequantize(t.data, t.tensor_type).astype("<f4")
        shape = tuple(int(d) for d in reversed(t.shape))  # ggml dims reversed = numpy order
        x = x.reshape(shape)
        digest = hashlib.sha256(np.ascontiguousarray(x).tobytes()).hexdigest()
        lines.append(f"{name} {t.tensor_type.name} {'x'.join(map(str, shape))} {digest}")
    with open(args.out, "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
