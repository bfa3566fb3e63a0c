"""Write a Mimi codec at the published kyutai/mimi sizes with random f32 weights, for benchmarks.

Names and shapes are those of transformers 5.25.0 `MimiModel(MimiConfig())` as `save_pretrained`
writes them (the kyutai/mimi layout: 8 + 8 transformer layers of width 512, SEANet with 64
filters and ratios 8·6·5·4, 1 semantic + 31 acoustic levels of 2048 codes of dim 256; 350 tensors,
96 M values, 385 MB), taken from the committed tests/fixtures/mimi/real-shapes/{config,shapes}.json
(written by make_mimi_reference.py from transformers itself), so this script needs only numpy.

Weights: normal with std 1/sqrt(fan in) (activations stay O(1) through the SEANet stacks), norms
1, biases 0, layer scales 0.01 (MimiConfig's layer_scale_initial_scale), and filled codebooks
(embed_sum normal, cluster_usage 1: fresh ones are all zero and every frame would take code 0).
Timing does not depend on the values as long as they stay finite and normal (no denormals).

Usage, from the repo root:
    python tests/reference/make_bench_mimi.py OUT_DIR
"""

import json
import os
import struct
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
REAL = os.path.join(HERE, "..", "fixtures", "mimi", "real-shapes")


def write_safetensors(path, specs, fill):
    """Streams `specs` [(name, dtype, shape)] to `path`; `fill(name, dtype, shape)` returns the
    tensor's bytes (a numpy array of the right dtype and size). dtypes: "F32", "BF16" (uint16)."""
    header, offset = {}, 0
    for name, dt, shape in specs:
        n = int(np.prod(shape)) * (2 if dt == "BF16" else 4)
        header[name] = {"dtype": dt, "shape": list(shape), "data_offsets": [offset, offset + n]}
        offset += n
    hb = json.dumps(header).encode()
    hb += b" " * (-len(hb) % 8)
    tmp = path + ".partial"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(hb)))
        f.write(hb)
        for name, dt, shape in specs:
            a = fill(name, dt, shape)
            want = np.uint16 if dt == "BF16" else np.float32
            assert a.dtype == want and a.size == int(np.prod(shape)), name
            f.write(a.tobytes())
    os.replace(tmp, path)  # a killed run never leaves a truncated file that looks finished
    return offset


def mimi_fill(rng):
    def fill(name, dt, shape):
        n = int(np.prod(shape))
        if name.endswith("cluster_usage") or name.endswith("initialized") or (
            len(shape) == 1 and "layernorm.weight" in name
        ):
            return np.ones(n, dtype=np.float32)
        if name.endswith("layer_scale.scale"):
            return np.full(n, 0.01, dtype=np.float32)
        if name.endswith(".bias"):
            return np.zeros(n, dtype=np.float32)
        if name.endswith("embed_sum"):
            return rng.standard_normal(n, dtype=np.float32)
        fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else 1
        return rng.standard_normal(n, dtype=np.float32) * np.float32(1.0 / np.sqrt(fan_in))

    return fill


def main(out):
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(REAL, "shapes.json")) as f:
        shapes = json.load(f)
    specs = [(name, "F32", shape) for name, shape in sorted(shapes.items())]
    n = write_safetensors(os.path.join(out, "model.safetensors"), specs, mimi_fill(np.random.default_rng(0)))
    with open(os.path.join(REAL, "config.json")) as f:
        config = json.load(f)
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump(config, f, indent=2)
    print(f"wrote {out} ({len(specs)} tensors, {n / 1e6:.0f} MB)")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(sys.argv[1])
