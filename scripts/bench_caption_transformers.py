#!/usr/bin/env python3
# Pinned reference versions (the reference env /work/refenv): Python 3.11, torch==2.15.0 (CPU),
# transformers==5.25.0, pillow. Benchmark helper only: never run by CI.
"""The transformers side of scripts/bench-caption.sh: time to the first caption token.

Loads `Ernie4_5_VLMoeForConditionalGeneration` from CHECKPOINT in the dtype its safetensors hold
(bf16 weights, f32 routers: `dtype="auto"`), builds the processor offline from the checkpoint's
files (as tests/reference/make_vl_reference.py does), captions IMAGE with the prompt PROMPT
(the image first, as `ernie caption` places it) and greedy `generate(max_new_tokens=1)`.

Prints one JSON line: load_secs (model + processor), preprocess_secs (chat template + processor
call: decode, resize, patchify, tokenize), generate_secs (vision tower + prefill + first token),
first_token_secs (= preprocess + generate: the first-token latency after load), prompt_tokens,
image_tokens, first_token (its id), top2_gap (logit of the top token minus the runner-up: the
slack within which a reimplementation may pick differently), dtype, threads, peak_rss_mib.

Usage: bench_caption_transformers.py CHECKPOINT IMAGE [--prompt TEXT] [--threads 2]
"""

import argparse
import json
import os
import resource
import time

import torch
from PIL import Image
from transformers import (
    AutoTokenizer,
    Ernie4_5_VLMoeForConditionalGeneration,
    Ernie4_5_VLMoeImageProcessorPil,
    Ernie4_5_VLMoeProcessor,
    Ernie4_5_VLMoeVideoProcessor,
)

# VL_TOKENS and make_processor repeat tests/reference/make_vl_reference.py's on purpose: importing
# that module would load torchvision and torchcodec too, inflating the process-start timing.
VL_TOKENS = dict(
    image_token="<|IMAGE_PLACEHOLDER|>", image_start_token="<|IMAGE_START|>", image_end_token="<|IMAGE_END|>",
    video_token="<|VIDEO_PLACEHOLDER|>", video_start_token="<|VIDEO_START|>", video_end_token="<|VIDEO_END|>",
)


def make_processor(folder):
    tok = AutoTokenizer.from_pretrained(folder, extra_special_tokens=VL_TOKENS)
    ip = Ernie4_5_VLMoeImageProcessorPil.from_pretrained(folder)
    vp = Ernie4_5_VLMoeVideoProcessor.from_pretrained(folder)
    with open(os.path.join(folder, "chat_template.jinja")) as f:
        template = f.read()
    return Ernie4_5_VLMoeProcessor(image_processor=ip, tokenizer=tok, video_processor=vp, chat_template=template)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("checkpoint")
    ap.add_argument("image")
    ap.add_argument("--prompt", default="Describe this image.")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    t0 = time.perf_counter()
    model = Ernie4_5_VLMoeForConditionalGeneration.from_pretrained(args.checkpoint, dtype="auto").eval()
    processor = make_processor(args.checkpoint)
    load = time.perf_counter() - t0
    dtypes = sorted({str(p.dtype).replace("torch.", "") for p in model.parameters()})

    t1 = time.perf_counter()
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": args.prompt}]}]
    text = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    image = Image.open(args.image).convert("RGB")
    inputs = processor(images=[image], text=[text], return_tensors="pt")
    t2 = time.perf_counter()
    with torch.inference_mode():
        out = model.generate(**inputs, max_new_tokens=1, do_sample=False, output_logits=True,
                             return_dict_in_generate=True)
    t3 = time.perf_counter()

    ids = inputs["input_ids"][0].tolist()
    logits = out.logits[0][0].float()
    top = logits.topk(2)
    print(json.dumps({
        "load_secs": load,
        "preprocess_secs": t2 - t1,
        "generate_secs": t3 - t2,
        "first_token_secs": t3 - t1,
        "prompt_tokens": len(ids),
        "image_tokens": ids.count(processor.image_token_id),
        "first_token": int(out.sequences[0, len(ids)]),
        "top2_ids": [int(i) for i in top.indices],
        "top2_gap": float(top.values[0] - top.values[1]),
        "dtype": "+".join(dtypes),
        "threads": torch.get_num_threads(),
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "torch": torch.__version__,
    }))


if __name__ == "__main__":
    main()
