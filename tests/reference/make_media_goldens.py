#!/usr/bin/env python3
"""Record the HF ERNIE-4.5-VL image-processor goldens for tokenizers-mm's image pipeline.

Run from the repository root with the reference venv (Pillow 13.0.0, transformers 5.24.0,
numpy; torch is imported by transformers):

    /work/refenv/bin/python tests/reference/make_media_goldens.py          # rewrite the fixtures
    /work/refenv/bin/python tests/reference/make_media_goldens.py --check  # verify, write nothing

Writes
  tests/fixtures/media_goldens.json   expected sizes, grids, hashes, statistics and samples
  tests/fixtures/vl-preprocess/       preprocessor_config.json (transformers' default ERNIE-4.5-VL
                                      image processor, saved by save_pretrained) + the test
                                      tokenizer of tests/fixtures/tokenizer/ with three audio
                                      special tokens appended (ids 1010..1012)

Reference pipeline (what every number below comes from):
  img  = PIL.ImageOps.exif_transpose(PIL.Image.open(path))     # EXIF applied, as tokenizers-mm does
  out  = Ernie4_5_VLMoeImageProcessorPil()(images=[img], return_tensors="np")
The PIL backend is used on purpose (the default `Ernie4_5_VLMoeImageProcessor` resizes with
torchvision); its stages are recorded separately:
  decoded = transformers.image_transforms.convert_to_rgb(img, return_numpy=True)   # alpha on white
  resized = transformers.image_transforms.resize(decoded CHW, (h, w), BICUBIC)      # Pillow resize
and `pixel_values` / `image_grid_thw` from the processor itself. For RGBA inputs a second case
("alpha": "drop") feeds `img.convert("RGB")`, which is what the processor does when handed a
*path* (transformers.image_utils.load_image drops alpha).

Hashes are poly64 (see poly64(), hex) over the raw bytes: uint8 HWC arrays, float32 little-endian tensors.
Deterministic: two runs give byte-identical files (`--check` compares).
"""

import base64
import glob
import json
import os
import shutil
import sys
from types import SimpleNamespace

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

import numpy as np  # noqa: E402
import PIL  # noqa: E402
import transformers  # noqa: E402
from PIL import Image, ImageOps  # noqa: E402

PINNED = {"Pillow": "13.0.0", "transformers": "5.24.0"}
assert PIL.__version__ == PINNED["Pillow"], PIL.__version__
assert transformers.__version__ == PINNED["transformers"], transformers.__version__

from transformers import (  # noqa: E402
    AutoTokenizer,
    Ernie4_5_VLMoeImageProcessorPil,
    Ernie4_5_VLMoeProcessor,
    Ernie4_5_VLMoeVideoProcessor,
)
from transformers.image_transforms import convert_to_rgb, resize  # noqa: E402
from transformers.image_utils import PILImageResampling  # noqa: E402
from transformers.models.ernie4_5_vl_moe.modeling_ernie4_5_vl_moe import Ernie4_5_VLMoeModel  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MEDIA = os.path.join(os.path.dirname(ROOT), "shared", "media", "images")
FIXTURES = os.path.join(ROOT, "tests", "fixtures")
GOLDENS = os.path.join(FIXTURES, "media_goldens.json")
VL_DIR = os.path.join(FIXTURES, "vl-preprocess")
TOKENIZER_DIR = os.path.join(FIXTURES, "tokenizer")

SAMPLES = 1024  # strided pixel_values samples per case
FULL_U8_MAX = 45_000  # resized uint8 arrays up to this many bytes are stored whole (base64)
AUDIO_TOKENS = ["<|AUDIO_START|>", "<|AUDIO_PLACEHOLDER|>", "<|AUDIO_END|>"]
VL_TOKENS = dict(
    image_token="<|IMAGE_PLACEHOLDER|>",
    image_start_token="<|IMAGE_START|>",
    image_end_token="<|IMAGE_END|>",
    video_token="<|VIDEO_PLACEHOLDER|>",
    video_start_token="<|VIDEO_START|>",
    video_end_token="<|VIDEO_END|>",
)

# Synthetic edge sizes (height, width, max_pixels override or None). Pixels come from
# synthetic_rgb(), which tests/image_parity.rs reimplements.
SYNTHETIC = [
    ("syn_1x1", 1, 1, None),
    ("syn_27x257", 27, 257, None),
    ("syn_31x639_maxpix12544", 31, 639, 28 * 28 * 16),
    ("syn_70x70", 70, 70, None),
    ("syn_1000x1", 1000, 1, None),  # aspect ratio 1000 > 200: the processor raises
    ("syn_4000x40", 4000, 40, None),
    ("syn_1080x1920", 1080, 1920, None),  # the benchmark size
    # Pillow 13 runs the vertical pass first when in_h - out_h > 0 and > 2 * (in_w - out_w):
    ("syn_600x100_vertical_first", 600, 100, None),  # 600x100 -> 588x112
    ("syn_90x59_horizontal_first", 90, 59, None),  # 90x59 -> 84x56: dh = 6 = 2*dw, not above
    ("syn_91x59_vertical_first", 91, 59, None),  # 91x59 -> 84x56: dh = 7 > 2*dw
]


def poly64(data: bytes) -> str:
    """Polynomial hash mod 2^64: h = 0; for each byte b: h = h * P + (b + 1), P = 0x100000001B3.

    Vectorised as sum((b_i + 1) * P^(n-1-i)) with numpy's wrapping uint64 arithmetic; the Rust
    tests compute the same fold byte by byte.
    """
    a = np.frombuffer(data, dtype=np.uint8).astype(np.uint64) + np.uint64(1)
    if a.size == 0:
        return f"{0:016x}"
    pows = np.full(a.size, 0x100000001B3, dtype=np.uint64)
    pows[0] = 1
    with np.errstate(over="ignore"):
        pows = np.cumprod(pows, dtype=np.uint64)
        h = int(np.sum(a[::-1] * pows, dtype=np.uint64))
    return f"{h:016x}"


def hash_np(arr) -> str:
    return poly64(np.ascontiguousarray(arr).tobytes())


def synthetic_rgb(h: int, w: int) -> np.ndarray:
    """[h, w, 3] uint8: (7x + 13y + 101c + 3·((x·y) mod 31)) mod 256."""
    y, x, c = np.meshgrid(np.arange(h), np.arange(w), np.arange(3), indexing="ij")
    return ((7 * x + 13 * y + 101 * c + 3 * ((x * y) % 31)) % 256).astype(np.uint8)


def processor(max_pixels=None):
    kwargs = {}
    if max_pixels is not None:
        kwargs["size"] = {"shortest_edge": 56 * 56, "longest_edge": max_pixels}
    return Ernie4_5_VLMoeImageProcessorPil(**kwargs)


def tensor_record(pv: np.ndarray) -> dict:
    pv = np.ascontiguousarray(pv, dtype=np.float32)
    n, dim = pv.shape
    per_channel = pv.reshape(n, 3, dim // 3).astype(np.float64)
    stride = max(1, -(-pv.size // SAMPLES))
    flat = pv.reshape(-1)
    return {
        "shape": [n, dim],
        "hash": hash_np(pv.astype("<f4")),
        "channel_mean": per_channel.mean(axis=(0, 2)).tolist(),
        "channel_std": per_channel.std(axis=(0, 2)).tolist(),
        "first8": [float(v) for v in flat[:8]],
        "stride": stride,
        "samples": [float(v) for v in flat[::stride]],
    }


def run_case(name: str, rgb_input, source: dict, max_pixels=None) -> dict:
    """rgb_input: a PIL image as the processor receives it."""
    proc = processor(max_pixels)
    case = {"name": name, **source, "max_pixels": proc.size["longest_edge"], "min_pixels": proc.size["shortest_edge"]}
    decoded = convert_to_rgb(rgb_input, return_numpy=True)  # [H, W, 3] uint8, what the processor resizes
    h, w = decoded.shape[:2]
    case["decoded"] = {"height": h, "width": w, "hash": hash_np(decoded)}
    try:
        out = proc(images=[rgb_input], return_tensors="np")
    except ValueError as e:
        case["error"] = str(e)
        return case
    grid = [int(v) for v in out["image_grid_thw"][0]]
    rh, rw = grid[1] * proc.patch_size, grid[2] * proc.patch_size
    resized = resize(np.moveaxis(decoded, -1, 0), (rh, rw), resample=PILImageResampling.BICUBIC,
                     data_format="channels_last", input_data_format="channels_first")
    assert resized.dtype == np.uint8 and resized.shape == (rh, rw, 3)
    case["resized"] = {"height": rh, "width": rw, "hash": hash_np(resized)}
    if resized.nbytes <= FULL_U8_MAX:
        case["resized"]["u8_base64"] = base64.b64encode(resized.tobytes()).decode()
    case["grid_thw"] = grid
    case["n_tokens"] = grid[0] * grid[1] * grid[2] // proc.merge_size**2
    case["pixel_values"] = tensor_record(out["pixel_values"])
    # The processor resized exactly what we recorded (its pixels re-derived from `resized`).
    return case


def corpus_cases() -> list:
    cases = []
    for path in sorted(glob.glob(os.path.join(MEDIA, "*"))):
        fname = os.path.basename(path)
        if fname.endswith(".md"):
            continue
        im = Image.open(path)
        orientation = im.getexif().get(0x0112, 1)
        src = {"file": f"images/{fname}", "pil_mode": im.mode, "stored_size": [im.size[1], im.size[0]],
               "exif_orientation": int(orientation), "alpha": "composite"}
        upright = ImageOps.exif_transpose(im)
        cases.append(run_case(fname, upright, src))
        has_alpha = "A" in upright.getbands() or upright.info.get("transparency") is not None
        if has_alpha:
            cases.append(run_case(fname + "#drop_alpha", upright.convert("RGB"), {**src, "alpha": "drop"}))
    return cases


def synthetic_cases() -> list:
    cases = []
    for name, h, w, max_pixels in SYNTHETIC:
        img = Image.fromarray(synthetic_rgb(h, w), mode="RGB")
        cases.append(run_case(name, img, {"synthetic": [h, w]}, max_pixels))
    return cases


def composite_table() -> str:
    """Pillow's alpha_composite on white for every (value, alpha): rows = alpha, cols = value."""
    v = np.tile(np.arange(256, dtype=np.uint8), (256, 1))
    a = np.repeat(np.arange(256, dtype=np.uint8)[:, None], 256, axis=1)
    rgba = np.stack([v, v, v, a], axis=-1)
    white = Image.new("RGBA", (256, 256), (255, 255, 255, 255))
    out = np.array(Image.alpha_composite(white, Image.fromarray(rgba, mode="RGBA")).convert("RGB"))
    return hash_np(out[:, :, 0])


def make_vl_dir(out_dir: str) -> None:
    from tokenizers import AddedToken, Tokenizer

    os.makedirs(out_dir, exist_ok=True)
    Ernie4_5_VLMoeImageProcessorPil().save_pretrained(out_dir)
    shutil.copy(os.path.join(TOKENIZER_DIR, "special_tokens_map.json"), out_dir)
    tok = Tokenizer.from_file(os.path.join(TOKENIZER_DIR, "tokenizer.json"))
    n = tok.get_vocab_size(with_added_tokens=True)
    assert n == 1010, n
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in AUDIO_TOKENS])
    tok.save(os.path.join(out_dir, "tokenizer.json"))
    with open(os.path.join(TOKENIZER_DIR, "tokenizer_config.json")) as f:
        cfg = json.load(f)
    for i, t in enumerate(AUDIO_TOKENS):
        cfg["added_tokens_decoder"][str(n + i)] = {
            "content": t, "lstrip": False, "normalized": False, "rstrip": False, "single_word": False, "special": True}
    with open(os.path.join(out_dir, "tokenizer_config.json"), "w") as f:
        json.dump(cfg, f, indent=2, ensure_ascii=False)
        f.write("\n")


def stream_cases(vl_dir: str) -> list:
    """HF processor expansion + token types + get_rope_index for a few prompts (images only)."""
    tok = AutoTokenizer.from_pretrained(vl_dir, extra_special_tokens=VL_TOKENS)
    proc = Ernie4_5_VLMoeProcessor(image_processor=Ernie4_5_VLMoeImageProcessorPil(), tokenizer=tok,
                                   video_processor=Ernie4_5_VLMoeVideoProcessor(font="/nonexistent/Roboto-Regular.ttf"))
    fake = SimpleNamespace(config=SimpleNamespace(vision_config=SimpleNamespace(temporal_merge_size=2, spatial_merge_size=2)))
    fake.get_vision_position_ids = lambda *a, **k: Ernie4_5_VLMoeModel.get_vision_position_ids(fake, *a, **k)
    img = lambda h, w: Image.fromarray(synthetic_rgb(h, w), mode="RGB")  # noqa: E731
    pic = "Picture {}:<|IMAGE_START|><|IMAGE_PLACEHOLDER|><|IMAGE_END|>"
    gen = "\nAssistant: <think>\n\n</think>\n\n"
    prompts = [
        # (name, rendered ERNIE-4.5-VL chat text per spec 3.8, images as (h, w), Rust-side description)
        ("one_image_after_text", "<|begin_of_sentence|>User: What kind of dog is this?" + pic.format(1) + gen,
         [(70, 100)], [{"role": "user", "parts": ["What kind of dog is this?", "<image>"]}]),
        ("system_two_images", "<|begin_of_sentence|>Be brief.\nUser: " + pic.format(1) + "and " + pic.format(2)
         + " compare them" + gen, [(56, 56), (40, 300)],
         [{"role": "system", "parts": ["Be brief."]}, {"role": "user", "parts": ["<image>", "and ", "<image>", " compare them"]}]),
        ("multi_turn", "<|begin_of_sentence|>User: " + pic.format(1) + "Hi\nAssistant: Hello there<|end_of_sentence|>"
         + "User: again " + pic.format(2) + gen, [(100, 60), (8, 12)],
         [{"role": "user", "parts": ["<image>", "Hi"]}, {"role": "assistant", "parts": ["Hello there"]},
          {"role": "user", "parts": ["again ", "<image>"]}]),
    ]
    out = []
    for name, text, sizes, messages in prompts:
        enc = proc(text=[text], images=[img(h, w) for h, w in sizes], return_tensors="pt", return_mm_token_type_ids=True)
        pos, delta = Ernie4_5_VLMoeModel.get_rope_index(fake, enc["input_ids"], enc["mm_token_type_ids"],
                                                        image_grid_thw=enc["image_grid_thw"])
        out.append({
            "name": name,
            "images": [list(s) for s in sizes],
            "messages": messages,
            "input_ids": enc["input_ids"][0].tolist(),
            "moe_mm_token_type_ids": enc["moe_mm_token_type_ids"][0].tolist(),
            "image_grid_thw": enc["image_grid_thw"].tolist(),
            "positions_hf": pos[:, 0, :].T.tolist(),
            "rope_delta_hf": int(delta[0, 0]),
        })
    return out


def build() -> dict:
    return {
        "generator": "tests/reference/make_media_goldens.py",
        "versions": {"Pillow": PIL.__version__, "transformers": transformers.__version__, "numpy": np.__version__},
        "reference": "Ernie4_5_VLMoeImageProcessorPil on ImageOps.exif_transpose(Image.open(f))",
        "hash": "poly64: h = h * 0x100000001B3 + (byte + 1) mod 2^64, over raw bytes (uint8 HWC / float32 LE)",
        "synthetic_formula": "(7x + 13y + 101c + 3*((x*y) % 31)) % 256",
        "composite_on_white_hash": composite_table(),
        "cases": corpus_cases() + synthetic_cases(),
    }


def main() -> None:
    check = "--check" in sys.argv[1:]
    tmp_vl = VL_DIR if not check else os.path.join(FIXTURES, ".vl-preprocess-check")
    make_vl_dir(tmp_vl)
    goldens = build()
    goldens["stream"] = stream_cases(tmp_vl)
    text = json.dumps(goldens, indent=1, sort_keys=False) + "\n"
    if check:
        same = open(GOLDENS).read() == text
        for f in sorted(os.listdir(tmp_vl)):
            same &= open(os.path.join(tmp_vl, f), "rb").read() == open(os.path.join(VL_DIR, f), "rb").read()
        shutil.rmtree(tmp_vl)
        print("goldens up to date" if same else "goldens DIFFER")
        sys.exit(0 if same else 1)
    with open(GOLDENS, "w") as f:
        f.write(text)
    print(f"wrote {GOLDENS} ({len(text)} bytes) and {VL_DIR}/")


if __name__ == "__main__":
    main()
