#!/usr/bin/env python3
"""Goldens for the quantised kernels (runtime/src/ops/quant) and the GGUF reader (runtime/src/gguf).

Reference: ggml itself, from the llama.cpp sources vendored by the pinned PyPI sdist
    llama-cpp-python==0.3.36  (sha256 832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e)
    -> vendor/llama.cpp (ggml 0.25.3, gguf-py 0.19.0), numpy 2.4.6.
Quantisation, dequantisation and dot products are ggml's own C code called through ctypes:
ggml_quantize_chunk (reference quantizers, no imatrix), the type traits' to_float, the CPU type
traits' from_float (activation side) and vec_dot. The GGUF fixture is written by that sdist's
gguf-py (GGUFWriter).

Build the reference library (outside the repo; CI never runs this script):
    mkdir -p /work/llama.cpp && cd /work/llama.cpp
    pip download --no-deps --no-binary :all: llama-cpp-python==0.3.36   # or fetch the sdist URL
    tar xzf llama_cpp_python-0.3.36.tar.gz && ln -sfn llama_cpp_python-0.3.36/vendor/llama.cpp src
    mkdir build && cd build
    cmake ../src -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON -DLLAMA_CURL=OFF -DBUILD_SHARED_LIBS=ON
    cmake --build . -j 2 --target ggml llama-quantize llama-bench llama-cli
Run:
    LLAMA_CPP=/work/llama.cpp python tests/reference/make_quant_reference.py
Writes tests/fixtures/quant/{quant_goldens.safetensors, tiny.gguf, tiny_gguf.json}.
"""
import ctypes
import json
import os
import sys
from pathlib import Path

import numpy as np

LLAMA = Path(os.environ.get("LLAMA_CPP", "/work/llama.cpp"))
sys.path.insert(0, str(LLAMA / "src" / "gguf-py"))
import gguf  # noqa: E402
from safetensors.numpy import save_file  # noqa: E402

OUT = Path(__file__).resolve().parents[1] / "fixtures" / "quant"
LIB = LLAMA / "build" / "bin"

GGML_TYPES = {"q8_0": 8, "q4_K": 12, "q6_K": 14, "q8_K": 15}
VEC_DOT_TYPE = {"q8_0": "q8_0", "q4_K": "q8_K", "q6_K": "q8_K"}
BLOCK = {"q8_0": (32, 34), "q4_K": (256, 144), "q6_K": (256, 210), "q8_K": (256, 292)}

base = ctypes.CDLL(str(LIB / "libggml-base.so"), mode=ctypes.RTLD_GLOBAL)
cpu = ctypes.CDLL(str(LIB / "libggml-cpu.so"), mode=ctypes.RTLD_GLOBAL)

TO_FLOAT = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64)
FROM_FLOAT = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64)
VEC_DOT = ctypes.CFUNCTYPE(None, ctypes.c_int, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p, ctypes.c_size_t,
                           ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)


class TypeTraits(ctypes.Structure):
    _fields_ = [("type_name", ctypes.c_char_p), ("blck_size", ctypes.c_int64), ("blck_size_interleave", ctypes.c_int64),
                ("type_size", ctypes.c_size_t), ("is_quantized", ctypes.c_bool), ("to_float", TO_FLOAT),
                ("from_float_ref", FROM_FLOAT)]


class TypeTraitsCpu(ctypes.Structure):
    _fields_ = [("from_float", FROM_FLOAT), ("vec_dot", VEC_DOT), ("vec_dot_type", ctypes.c_int), ("nrows", ctypes.c_int64)]


base.ggml_get_type_traits.restype = ctypes.POINTER(TypeTraits)
cpu.ggml_get_type_traits_cpu.restype = ctypes.POINTER(TypeTraitsCpu)
base.ggml_quantize_chunk.restype = ctypes.c_size_t
base.ggml_quantize_chunk.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64,
                                     ctypes.c_int64, ctypes.c_void_p]
cpu.ggml_cpu_init()


def ptr(a):
    return a.ctypes.data_as(ctypes.c_void_p)


def quantize(name, x):
    """ggml_quantize_chunk: x [rows, k] f32 -> [rows, row_bytes] u8 (reference quantizer)."""
    rows, k = x.shape
    qk, bs = BLOCK[name]
    out = np.zeros((rows, k // qk * bs), np.uint8)
    x = np.ascontiguousarray(x, np.float32)
    if name == "q8_K":  # not a storage type: the CPU trait's from_float (quantize_row_q8_K)
        f = cpu.ggml_get_type_traits_cpu(GGML_TYPES[name]).contents.from_float
        for r in range(rows):
            f(ptr(x[r]), ptr(out[r]), k)
        return out
    n = base.ggml_quantize_chunk(GGML_TYPES[name], ptr(x), ptr(out), 0, rows, k, None)
    assert n == out.nbytes, (name, n, out.nbytes)
    return out


def dequantize(name, q, k):
    tr = base.ggml_get_type_traits(GGML_TYPES[name]).contents
    out = np.zeros((q.shape[0], k), np.float32)
    for r in range(q.shape[0]):
        tr.to_float(ptr(np.ascontiguousarray(q[r])), ptr(out[r]), k)
    return out


def vec_dot(name, qx, qy, k):
    f = cpu.ggml_get_type_traits_cpu(GGML_TYPES[name]).contents.vec_dot
    out = np.zeros(qx.shape[0], np.float32)
    s = np.zeros(1, np.float32)
    for r in range(qx.shape[0]):
        f(k, ptr(s), 0, ptr(np.ascontiguousarray(qx[r])), 0, ptr(np.ascontiguousarray(qy[r])), 0, 1)
        out[r] = s[0]
    return out


def awkward_rows(rng, rows, k):
    """Seeded inputs with the cases that take the quantizers' odd branches."""
    x = rng.standard_normal((rows, k)).astype(np.float32)
    x[0] = 0.0                                          # all zeros
    x[1] = rng.standard_normal(k) * 0.02                # small, weight-like
    x[2, 7] = 300.0                                     # one outlier per block ...
    x[2, 300] = -450.0
    x[3, :] = 0.75                                      # constant blocks
    x[4] = -np.abs(x[4])                                # negative only
    x[5] = np.abs(x[5])                                 # positive only
    x[6] = rng.standard_normal(k) * 1e-20               # tiny: f16 scales underflow
    x[7, :256] = 0.0                                    # a zero super-block beside a normal one
    x[8] = np.round(x[8] * 4) / 4                       # many ties
    x[9] = rng.standard_normal(k) * 1e3                 # large
    x[10, ::2] = 0.0                                    # half zeros
    x[11] = (rng.standard_normal(k) ** 3).astype(np.float32)  # heavy tails
    for j in range(k // 32):                            # per-block scale changes
        x[12, 32 * j:32 * j + 32] *= 10.0 ** ((j % 7) - 3)
    x[13, :32] = -1.0                                   # a block of one negative constant
    return x.astype(np.float32)


def make_quant_goldens():
    rng = np.random.default_rng(20261206)
    rows, k = 24, 512
    x = awkward_rows(rng, rows, k)
    a = rng.standard_normal((rows, k)).astype(np.float32)
    a[0] = 0.0
    a[3] = -np.abs(a[3])
    a[5, 11] = 40.0
    t = {"x": x, "a": a}
    for name in ("q8_0", "q4_K", "q6_K"):
        q = quantize(name, x)
        t[f"q.{name}"] = q
        t[f"deq.{name}"] = dequantize(name, q, k)
        vdt = VEC_DOT_TYPE[name]
        aq = quantize(vdt, a)
        t[f"aq.{name}"] = aq
        t[f"dot.{name}"] = vec_dot(name, q, aq, k)
    t["aq.q8_K_deq"] = np.stack([np.frombuffer(b[:4].tobytes(), np.float32)[0] * b[4:260].view(np.int8).astype(np.float32)
                                 for r in t["aq.q4_K"] for b in [r[i * 292:(i + 1) * 292] for i in range(k // 256)]]).reshape(rows, k)
    OUT.mkdir(parents=True, exist_ok=True)
    save_file(t, str(OUT / "quant_goldens.safetensors"),
              metadata={"generator": "tests/reference/make_quant_reference.py", "ggml": "llama-cpp-python 0.3.36"})
    return t


def make_gguf(t):
    path = OUT / "tiny.gguf"
    w = gguf.GGUFWriter(str(path), "ernie4_5-moe")
    w.add_custom_alignment(64)
    w.add_uint8("test.u8", 200)
    w.add_int8("test.i8", -100)
    w.add_uint16("test.u16", 60000)
    w.add_int16("test.i16", -30000)
    w.add_uint32("test.u32", 4000000000)
    w.add_int32("test.i32", -2000000000)
    w.add_float32("test.f32", 1.5)
    w.add_bool("test.bool", True)
    w.add_string("test.string", "ERNIE 文心 ✓")
    w.add_uint64("test.u64", 18000000000000000000)
    w.add_int64("test.i64", -9000000000000000000)
    w.add_float64("test.f64", -2.25e-300)
    w.add_array("test.arr_i32", [1, -2, 3])
    w.add_array("test.arr_f32", [0.5, -0.25])
    w.add_array("test.arr_str", ["a", "", "ü"])
    w.add_array("test.arr_bool", [True, False])
    w.add_key_value("test.arr_u8", [1, 2, 255], gguf.GGUFValueType.ARRAY, sub_type=gguf.GGUFValueType.UINT8)
    w.add_key_value("test.arr_arr", [[1, 2], [3]], gguf.GGUFValueType.ARRAY)
    tensors = {
        "f32": np.arange(12, dtype=np.float32).reshape(3, 4) - 5.5,
        "f16": (np.arange(8, dtype=np.float32) / 3).astype(np.float16),
    }
    for name, arr in tensors.items():
        w.add_tensor(f"t.{name}", arr)
    bf = (np.arange(6, dtype=np.float32) * 0.5 - 1).view(np.uint32) >> 16
    w.add_tensor("t.bf16", bf.astype(np.uint16).view(np.uint8).reshape(2, 6), raw_dtype=gguf.GGMLQuantizationType.BF16)
    w.add_tensor("blk.0.ffn_down_exps.weight", t["q.q4_K"][:2], raw_dtype=gguf.GGMLQuantizationType.Q4_K)
    w.add_tensor("t.q6_K", t["q.q6_K"][:1], raw_dtype=gguf.GGMLQuantizationType.Q6_K)
    w.add_tensor("t.q8_0", t["q.q8_0"][:3], raw_dtype=gguf.GGMLQuantizationType.Q8_0)
    w.add_tensor("t.i32", np.array([7, -8, 9], dtype=np.int32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    # Expected values, read back with gguf-py's own reader (byte-shaped quant tensors: bytes only).
    r = gguf.GGUFReader(str(path))
    meta = {}
    for f in r.fields.values():
        if f.name.startswith("GGUF."):
            continue
        value = f.contents()
        if f.name == "test.arr_arr":  # gguf-py's contents() flattens nested arrays; the file keeps them
            value = [[1, 2], [3]]
        meta[f.name] = {"types": [int(x) for x in f.types], "value": value}
    ts = [{"name": x.name, "ggml_type": int(x.tensor_type), "dims": [int(d) for d in x.shape],
           "offset": int(x.data_offset), "nbytes": int(x.n_bytes),
           "hex": bytes(np.asarray(x.data).view(np.uint8).tobytes()).hex()} for x in r.tensors]
    doc = {"generator": "tests/reference/make_quant_reference.py (gguf-py 0.19.0 from llama-cpp-python 0.3.36)",
           "version": 3, "alignment": 64, "metadata": meta, "tensors": ts}
    (OUT / "tiny_gguf.json").write_text(json.dumps(doc, indent=1, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    make_gguf(make_quant_goldens())
    print("wrote", *sorted(p.name for p in OUT.iterdir()))
