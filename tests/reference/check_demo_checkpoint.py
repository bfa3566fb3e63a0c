#!/usr/bin/env python3
# Pinned reference versions: torch==2.15.0, transformers==5.24.0 (see requirements.txt).
"""Checks the built-in demo checkpoint (runtime/src/tools/demo/) against transformers.

1. Writes what transformers' own `save_pretrained` produces for the demo's config.json (a fresh
   bf16 `Ernie4_5_VLMoeForConditionalGeneration`) and asserts the demo's model.safetensors has
   exactly the same tensor names, shapes and dtypes.
2. Loads the folder with `from_pretrained(..., output_loading_info=True)`: asserts no missing,
   unexpected or mismatched keys and no load errors.
3. Loads `AutoProcessor.from_pretrained(dir)` (tokenizer + image + video processors + chat
   template + font) and captions one image with greedy `generate(max_new_tokens=8)`, printing
   the prompt ids and the generated ids (f32 compute, one thread, so the lead's CPU engine can be
   compared token for token).

Usage, from the repository root (no network):

    ERNIE_DEMO_OUT=/tmp/ernie-demo CARGO_TARGET_DIR=/work/target-b \\
        cargo test -p ernie-runtime --lib demo::tests::write_to_env_dir -- --ignored
    /work/refenv/bin/python tests/reference/check_demo_checkpoint.py /tmp/ernie-demo [--json out.json]

Exits non-zero on any mismatch.
"""

import argparse
import json
import os
import sys
import tempfile

import torch
import transformers
from safetensors import safe_open
from PIL import Image
from transformers import AutoConfig, AutoProcessor, Ernie4_5_VLMoeForConditionalGeneration

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
IMAGE_CANDIDATES = [
    os.path.join(ROOT, "assets", "media", "astronaut_rgb_512x512.png"),
    "/work/shared/media/images/astronaut_rgb_512x512.png",
]
# A second picture: with random weights the caption should still depend on the image.
SECOND_IMAGE_CANDIDATES = [
    os.path.join(ROOT, "assets", "media", "coffee_progressive_600x400.jpg"),
    "/work/shared/media/images/coffee_progressive_600x400.jpg",
]
PROMPT = "Describe the image."
MAX_NEW_TOKENS = 8
EXPECTED_TENSORS = 377

torch.set_num_threads(1)  # summation order independent of the core count
torch.use_deterministic_algorithms(True)


def tensor_table(path):
    """{name: (shape, dtype)} of a safetensors file."""
    with safe_open(path, "pt") as f:
        return {k: (tuple(f.get_slice(k).get_shape()), f.get_slice(k).get_dtype()) for k in f.keys()}


def check_layout(folder):
    demo = tensor_table(os.path.join(folder, "model.safetensors"))
    config = AutoConfig.from_pretrained(folder)
    fresh = Ernie4_5_VLMoeForConditionalGeneration._from_config(config, dtype=torch.bfloat16)
    with tempfile.TemporaryDirectory() as tmp:
        fresh.save_pretrained(tmp)
        want = tensor_table(os.path.join(tmp, "model.safetensors"))
    missing = sorted(set(want) - set(demo))
    extra = sorted(set(demo) - set(want))
    differ = sorted(k for k in set(want) & set(demo) if want[k] != demo[k])
    print(f"layout vs transformers save_pretrained: {len(demo)} tensors in the demo, {len(want)} saved by transformers")
    print(f"  missing {missing}\n  extra {extra}\n  shape/dtype differs {[(k, demo[k], want[k]) for k in differ]}")
    assert not missing and not extra and not differ
    assert len(demo) == EXPECTED_TENSORS, len(demo)
    f32 = sorted(k for k, (_, dt) in demo.items() if dt != "BF16")
    print(f"  non-bf16 tensors ({len(f32)}): {f32[:3]} ...")
    return len(demo)


def load_model(folder):
    model, info = Ernie4_5_VLMoeForConditionalGeneration.from_pretrained(
        folder, dtype=torch.float32, output_loading_info=True, attn_implementation="eager")
    print("from_pretrained loading info:", {k: (sorted(v) if isinstance(v, (set, list)) else v) for k, v in info.items()})
    for key in ("missing_keys", "unexpected_keys", "mismatched_keys", "error_msgs"):
        assert not info.get(key), (key, info.get(key))
    return model.eval()


def caption(processor, model, image_path):
    print(f"--- {os.path.basename(image_path)}")
    print(f"processor: {type(processor).__name__} image={type(processor.image_processor).__name__} "
          f"{dict(processor.image_processor.size)} video={type(processor.video_processor).__name__} "
          f"{dict(processor.video_processor.size)} font={os.path.basename(processor.video_processor.font)}")
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": PROMPT}]}]
    text = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    image = Image.open(image_path).convert("RGB")
    inputs = processor(images=[image], text=[text], return_tensors="pt")
    ids = inputs["input_ids"][0].tolist()
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=MAX_NEW_TOKENS, do_sample=False, output_logits=True,
                             return_dict_in_generate=True)
    new = out.sequences[0, len(ids):].tolist()
    # top1 - top2 of the raw logits per step: how much numerical slack a reimplementation has.
    gaps = [float(v[0] - v[1]) for v in (step[0].topk(2).values for step in out.logits)]
    result = {
        "image": os.path.relpath(image_path, ROOT) if image_path.startswith(ROOT) else image_path,
        "rendered_prompt": text,
        "image_grid_thw": inputs["image_grid_thw"].tolist(),
        "prompt_ids": ids,
        "generated_ids": new,
        "generated_text": processor.tokenizer.decode(new, skip_special_tokens=False),
        "min_logit_gap": min(gaps),
    }
    print(f"rendered prompt: {text!r}")
    print(f"image_grid_thw {result['image_grid_thw']}, prompt length {len(ids)} "
          f"({ids.count(processor.image_token_id)} image tokens)")
    print("prompt ids (placeholders collapsed):", collapse(ids, processor.image_token_id))
    print("generated ids:", new, f"(smallest top1-top2 logit gap {min(gaps):.4f})")
    print("generated text:", repr(result["generated_text"]))
    return result


def collapse(ids, placeholder):
    """ids with each run of `placeholder` written as 'placeholder×n'."""
    out, i = [], 0
    while i < len(ids):
        j = i
        while j < len(ids) and ids[j] == placeholder:
            j += 1
        if j > i:
            out.append(f"{placeholder}x{j - i}")
            i = j
        else:
            out.append(ids[i])
            i += 1
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("folder", help="the written demo checkpoint")
    ap.add_argument("--json", help="also write the prompt / generated ids here")
    args = ap.parse_args()
    print(f"torch {torch.__version__}, transformers {transformers.__version__}")
    with open(os.path.join(args.folder, "config.json")) as f:
        assert json.load(f)["model_type"] == "ernie4_5_vl_moe"
    n = check_layout(args.folder)
    model = load_model(args.folder)
    image_path = next((p for p in IMAGE_CANDIDATES if os.path.exists(p)), None)
    if image_path is None:
        sys.exit(f"no test image at {IMAGE_CANDIDATES}")
    processor = AutoProcessor.from_pretrained(args.folder)
    result = caption(processor, model, image_path)
    result["tensors"] = n
    second = next((p for p in SECOND_IMAGE_CANDIDATES if os.path.exists(p)), None)
    if second is not None:
        other = caption(processor, model, second)
        result["second_image"] = {k: other[k] for k in ("image", "image_grid_thw", "prompt_ids", "generated_ids", "generated_text",
                                                        "min_logit_gap")}
        if other["generated_ids"] == result["generated_ids"]:
            print("WARNING: both pictures give the same caption; is the image reaching the decoder?")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2, ensure_ascii=False)
            f.write("\n")
    print("OK")


if __name__ == "__main__":
    main()
