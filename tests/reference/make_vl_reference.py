#!/usr/bin/env python3
# Pinned reference versions (asserted at run time, see PINNED below):
#   torch==2.15.0  transformers==5.24.0  Pillow==13.0.0  torchvision==0.29.2  torchcodec==0.17.0
#   (also used: safetensors==0.8.0, tokenizers==0.23.3, numpy==2.4.6, jinja2==3.1.6; torchcodec
#   decodes the webm through Debian 12's FFmpeg 5.1 libraries; see requirements.txt)
"""Reference fixtures for ERNIE-4.5-VL (`ernie4_5_vl_moe`): a tiny random multimodal MoE model
in three checkpoint layouts, and transformers' outputs for image / two-image / video prompts.

Run from the repository root with the reference venv (no network, no model hub):

    /work/refenv/bin/python tests/reference/make_vl_reference.py          # rewrite the fixtures
    /work/refenv/bin/python tests/reference/make_vl_reference.py --check  # regenerate into a temp dir, compare bytes

Deterministic: two runs write byte-identical files (weights come from a seeded torch.Generator;
the seed search below is deterministic too). CI never runs this script; its outputs are committed.

Inputs
  assets/media/{astronaut_rgb_512x512.png, camera_gray8_512x512.png, testsrc2_256x144_vp9_opus_15frames.webm}
  tests/fixtures/vl-preprocess/{tokenizer.json, tokenizer_config.json, special_tokens_map.json}

Outputs (existing directories are replaced)
  tests/fixtures/vl-moe-f32/          transformers 5.x layout (`save_pretrained(save_original_format=False)`):
                                      config.json, generation_config.json, model.safetensors (f32), tokenizer
                                      files, preprocessor_config.json (image, PIL backend),
                                      video_preprocessor_config.json,
                                      chat_template.jinja (the VL chat template used for every case)
  tests/fixtures/vl-moe-f32/reference/{image,two_images,video,video_hf_rule}.safetensors + cases.json
  tests/fixtures/vl-moe-orig-f32/     the same weights in the original baidu "-PT" (remote-code) layout with an
                                      original-style config.json (model_type "ernie4_5_moe_vl")
  tests/fixtures/vl-unified-f32/      "unified routing" (ERNIE 5.0 style, one routing group): A's weights with each
                                      sparse layer reduced to its TEXT expert group under plain text-MoE names
  tests/fixtures/vl-unified-f32/reference/image_unified.safetensors + cases.json

How the reference numbers are produced
  * Processor = Ernie4_5_VLMoeProcessor(tokenizer, Ernie4_5_VLMoeImageProcessorPil, Ernie4_5_VLMoeVideoProcessor)
    built from the files written into vl-moe-f32/ (so the saved configs are what produced the numbers), with
    CHAT_TEMPLATE below (the ERNIE-4.5-VL template of transformers' converter, reduced to what is used here).
    `processor.apply_chat_template(..., tokenize=True)` loads the media itself: images through
    transformers.image_utils.load_image (PIL, convert("RGB")), the video through torchcodec with the video
    processor's default sampling; the timestamp overlay is off (`draw_on_frames: false`).
  * Model = Ernie4_5_VLMoeForConditionalGeneration re-loaded from vl-moe-f32/ with from_pretrained
    (eager attention, eager experts loop instead of transformers' default torch._grouped_mm, CPU, f32, one torch
    thread); the reload's logits are asserted bit-identical to the in-memory model's.
  * logits: one forward over the whole prompt. greedy_ids / decode_logits: model.generate(max_new_tokens=32,
    do_sample=False, output_logits=True) with eos disabled (generation_config.eos_token_id = None on the model
    and in the call, so exactly 32 tokens are produced); decode_logits are the RAW logits (output_logits), and
    greedy_ids[i] == argmax(decode_logits[i]) is asserted. The seed is also chosen so that no greedy token is an
    eos (2, 4), an image/video special token (8..13) or an id without a token (1013..1023): a runtime with eos
    enabled produces the same 32 tokens.
    A hand-written KV-cached decode loop with explicit 3-D positions (text index + rope delta) is checked
    against generate (greedy ids equal, logits within 1e-4).
  * position_ids: captured from the language model's forward (what the model actually used).
  * Position rule for the VIDEO case: transformers 5.24 `get_rope_index` advances the text position after a
    visual item by max(H', W') only; ERNIE-4.5-VL's original code and vLLM advance by max(T', H', W')
    (next = max of all positions used by the item + 1). `model.model.get_rope_index` is MONKEYPATCHED
    (get_rope_index_original below; identical to transformers' except for that advance) for video.safetensors;
    video_hf_rule.safetensors pins position_ids and logits under the unpatched transformers rule. The rope delta
    (max position + 1 - T) is carried into decode by transformers (model.model.rope_deltas / generate's
    position bookkeeping) in both cases. For images both rules agree (T' = 1), which is asserted.
  * image_unified: the model of vl-moe-f32 called WITHOUT moe_mm_token_type_ids (prefill and generate), so
    transformers routes every token, image tokens included, through text_moe (+ shared experts): exactly what
    vl-unified-f32's weights compute with one routing group.

Weights: transformers' init, then every parameter re-drawn from torch.Generator(seed), in named_parameters()
order: linear / expert weights N(0, (1.5/sqrt(fan_in))^2), RMSNorm and LayerNorm weights 1 + N(0, 0.1^2),
all biases N(0, 0.05^2), MoE router weights N(0, 0.5^2), e_score_correction_bias N(0, 0.05^2), embeddings
N(0, 1) (tied to lm_head). A seed is accepted only if (checked on the in-memory model, all four cases):
every greedy step has top1 - top2 raw-logit gap > GAP_MIN; every greedy continuation has >= MIN_DISTINCT
distinct ids and none of FORBIDDEN_GREEDY; the correction bias changes the selected expert set of >= 1
(token, layer) row in the text group AND in the vision group; every expert of both groups of both sparse
layers is selected by at least one prompt token.
"""

import copy
import hashlib
import itertools
import json
import os
import shutil
import sys
import tempfile
import types

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import PIL  # noqa: E402
import torch  # noqa: E402
import torchcodec  # noqa: E402
import torchvision  # noqa: E402
import transformers  # noqa: E402
from safetensors import safe_open  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

PINNED = {
    "torch": (torch.__version__.split("+")[0], "2.15.0"),
    "transformers": (transformers.__version__, "5.24.0"),
    "Pillow": (PIL.__version__, "13.0.0"),
    "torchvision": (torchvision.__version__.split("+")[0], "0.29.2"),
    "torchcodec": (torchcodec.__version__.split("+")[0], "0.17.0"),
}
for _name, (_have, _want) in PINNED.items():
    assert _have == _want, f"{_name} {_have} != pinned {_want}"

from transformers import (  # noqa: E402
    AutoTokenizer,
    Ernie4_5_VLMoeConfig,
    Ernie4_5_VLMoeForConditionalGeneration,
    Ernie4_5_VLMoeImageProcessorPil,
    Ernie4_5_VLMoeProcessor,
    Ernie4_5_VLMoeVideoProcessor,
    GenerationConfig,
)
from transformers.models.ernie4_5_vl_moe.modeling_ernie4_5_vl_moe import Ernie4_5_VLMoeMoeTopKRouter  # noqa: E402

torch.set_num_threads(1)  # one thread: summation order (and so every f32 bit) independent of the core count
torch.use_deterministic_algorithms(True)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MEDIA = "assets/media"  # relative to ROOT
FIXTURES = os.path.join(ROOT, "tests", "fixtures")
VL_PREPROCESS = os.path.join(FIXTURES, "vl-preprocess")
TOKENIZER_FILES = ["tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"]
PROCESSOR_FILES = TOKENIZER_FILES + ["preprocessor_config.json", "video_preprocessor_config.json",
                                     "chat_template.jinja"]

BASE_SEED = 4500
MAX_SEEDS = 200
MAX_NEW_TOKENS = 32
GAP_MIN = 1e-2  # acceptance threshold on top1 - top2 of the raw logits at every greedy step
MIN_DISTINCT = 6
# eos ids, image/video special tokens, and the embedding rows 1013..1023 that have no token
FORBIDDEN_GREEDY = {2, 4, 8, 9, 10, 11, 12, 13} | set(range(1013, 1024))

# Special token ids of the test tokenizer (asserted against tokenizer.json below).
TOKENS = {
    "<unk>": 0, "<s>": 1, "</s>": 2, "<|begin_of_sentence|>": 3, "<|end_of_sentence|>": 4,
    "<think>": 6, "</think>": 7,
    "<|IMAGE_START|>": 8, "<|IMAGE_END|>": 9, "<|IMAGE_PLACEHOLDER|>": 10,
    "<|VIDEO_START|>": 11, "<|VIDEO_END|>": 12, "<|VIDEO_PLACEHOLDER|>": 13,
}
VL_TOKENS = dict(
    image_token="<|IMAGE_PLACEHOLDER|>", image_start_token="<|IMAGE_START|>", image_end_token="<|IMAGE_END|>",
    video_token="<|VIDEO_PLACEHOLDER|>", video_start_token="<|VIDEO_START|>", video_end_token="<|VIDEO_END|>",
)

# ERNIE-4.5-VL chat template (structure of transformers' convert_ernie4_5_vl_moe_to_hf.py template: images
# render as "Picture k:<|IMAGE_START|><|IMAGE_PLACEHOLDER|><|IMAGE_END|>", videos as "Video k:<|VIDEO_START|>
# <|VIDEO_PLACEHOLDER|><|VIDEO_END|>", generation prompt "\nAssistant: " + "<think>\n\n</think>\n\n" unless
# enable_thinking). Assistant turns are rendered as "\nAssistant: " + text + "<|end_of_sentence|>".
CHAT_TEMPLATE = (
    "{%- set image_count = namespace(value=0) -%}"
    "{%- set video_count = namespace(value=0) -%}"
    "{{- '<|begin_of_sentence|>' -}}"
    "{%- for message in messages -%}"
    "{%- if message.role == 'user' -%}{{- 'User: ' -}}"
    "{%- elif message.role == 'assistant' -%}{{- '\\nAssistant: ' -}}{%- endif -%}"
    "{%- if message.content is string -%}{{- message.content -}}{%- else -%}"
    "{%- for item in message.content -%}"
    "{%- if item.type == 'text' -%}{{- item.text -}}"
    "{%- elif item.type in ['image', 'image_url'] -%}{%- set image_count.value = image_count.value + 1 -%}"
    "{{- 'Picture ' ~ image_count.value ~ ':<|IMAGE_START|><|IMAGE_PLACEHOLDER|><|IMAGE_END|>' -}}"
    "{%- elif item.type in ['video', 'video_url'] -%}{%- set video_count.value = video_count.value + 1 -%}"
    "{{- 'Video ' ~ video_count.value ~ ':<|VIDEO_START|><|VIDEO_PLACEHOLDER|><|VIDEO_END|>' -}}"
    "{%- endif -%}{%- endfor -%}{%- endif -%}"
    "{%- if message.role == 'system' -%}{{- '\\n' -}}"
    "{%- elif message.role == 'assistant' -%}{{- '<|end_of_sentence|>' -}}{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '\\nAssistant: ' -}}"
    "{%- if enable_thinking is defined and enable_thinking -%}{{- '<think>' -}}"
    "{%- else -%}{{- '<think>\\n\\n</think>\\n\\n' -}}{%- endif -%}"
    "{%- endif -%}"
)

TEXT_CONFIG = dict(
    vocab_size=1024, hidden_size=64, intermediate_size=96, num_hidden_layers=3,
    mlp_layer_types=["dense", "sparse", "sparse"], num_attention_heads=4, num_key_value_heads=2, head_dim=16,
    hidden_act="silu",
    rope_parameters={"rope_type": "default", "rope_theta": 500000.0, "mrope_section": [3, 3, 2]},
    moe_num_experts=8, moe_k=2, moe_intermediate_size=[32, 16], moe_num_shared_experts=1, moe_norm_min=1e-12,
    rms_norm_eps=1e-5, tie_word_embeddings=True, use_bias=False, max_position_embeddings=4096,
    bos_token_id=1, eos_token_id=[2, 4], pad_token_id=0,
)
VISION_CONFIG = dict(
    depth=2, hidden_size=32, num_heads=2, intermediate_size=128, patch_size=14, spatial_merge_size=2,
    temporal_merge_size=2, in_channels=3, hidden_act="quick_gelu", rms_norm_eps=1e-6,
)
TOP_CONFIG = dict(image_start_token_id=8, image_end_token_id=9, image_token_id=10, video_start_token_id=11,
                  video_end_token_id=12, video_token_id=13, tie_word_embeddings=True)
IMAGE_SIZE = {"shortest_edge": 56 * 56, "longest_edge": 28 * 28 * 36}  # <= 36 merged tokens per image
VIDEO_SIZE = {"shortest_edge": 28 * 28 * 2, "longest_edge": 28 * 28 * 4}  # per frame

# Original (baidu remote-code "-PT") config.json of the same model.
ORIG_CONFIG = {
    "architectures": ["Ernie4_5_VLMoeForConditionalGeneration"],
    "model_type": "ernie4_5_moe_vl",
    "hidden_size": 64, "intermediate_size": 96, "num_hidden_layers": 3, "num_attention_heads": 4,
    "num_key_value_heads": 2, "head_dim": 16, "vocab_size": 1024, "hidden_act": "silu", "rms_norm_eps": 1e-5,
    "rope_theta": 500000.0, "max_position_embeddings": 4096, "tie_word_embeddings": True, "use_bias": False,
    "use_cache": True, "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0, "torch_dtype": "float32",
    "moe_num_experts": [8, 8], "moe_intermediate_size": [32, 16], "moe_k": 2, "moe_num_shared_experts": 1,
    "moe_layer_start_index": [1, 1], "moe_layer_end_index": [2, 2], "moe_layer_interval": 1,
    "moe_norm_min": 1e-12, "moe_use_aux_free": True,
    "rope_3d": True, "freq_allocation": 2,
    "spatial_conv_size": 2, "temporal_conv_size": 2, "use_temporal_conv": True, "pixel_hidden_size": 32,
    "im_patch_id": 10,
    "vision_config": {"depth": 2, "embed_dim": 32, "hidden_size": 32, "num_heads": 2, "mlp_ratio": 4,
                      "patch_size": 14, "spatial_merge_size": 2, "in_channels": 3, "hidden_act": "quick_gelu"},
}

# (name, user text, media [(kind, file under assets/media)])
CASES = [
    ("image", "Describe this image.", [("image", "astronaut_rgb_512x512.png")]),
    ("two_images", "What differs between these pictures?",
     [("image", "astronaut_rgb_512x512.png"), ("image", "camera_gray8_512x512.png")]),
    ("video", "What happens in this video?", [("video", "testsrc2_256x144_vp9_opus_15frames.webm")]),
]
MODEL_INPUT_KEYS = ["input_ids", "attention_mask", "mm_token_type_ids", "moe_mm_token_type_ids", "pixel_values",
                    "image_grid_thw", "pixel_values_videos", "video_grid_thw"]


# ----------------------------------------------------------------------------------------------
# The original / vLLM position rule (monkeypatched onto model.model for the video case)
# ----------------------------------------------------------------------------------------------

def get_rope_index_original(self, input_ids, mm_token_type_ids, image_grid_thw=None, video_grid_thw=None,
                            attention_mask=None, **kwargs):
    """transformers 5.24 Ernie4_5_VLMoeModel.get_rope_index with ONE change: after a visual item the next
    text position is max(all t/h/w positions used by the item) + 1, i.e. the start advances by
    max(T', H', W') (ERNIE-4.5-VL original code, vLLM `get_mrope_input_positions`), instead of transformers'
    max(H', W')."""
    temporal_merge_size = self.config.vision_config.temporal_merge_size
    spatial_merge_size = self.config.vision_config.spatial_merge_size
    deltas = []
    position_ids = torch.zeros(3, input_ids.shape[0], input_ids.shape[1], dtype=input_ids.dtype,
                               device=input_ids.device)
    grid_iters = {1: iter(image_grid_thw) if image_grid_thw is not None else None,
                  2: iter(video_grid_thw) if video_grid_thw is not None else None}
    for b, ids in enumerate(input_ids):
        types_ = mm_token_type_ids[b]
        if attention_mask is not None:
            ids = ids[attention_mask[b].bool()]
            types_ = types_[attention_mask[b].bool()]
        groups = []
        for key, group in itertools.groupby(enumerate(types_.tolist()), lambda x: x[1]):
            group = list(group)
            groups.append((key, group[0][0], group[-1][0] + 1))
        current_pos = 0
        parts = []
        for modality, start, end in groups:
            if modality == 0:
                n = end - start
                parts.append(torch.arange(n, device=input_ids.device).view(1, -1).expand(3, -1) + current_pos)
                current_pos += n
            else:
                grid_thw = next(grid_iters[modality])
                t_merge = 1 if modality == 1 else temporal_merge_size
                vis = self.get_vision_position_ids(current_pos, grid_thw, t_merge, spatial_merge_size,
                                                   device=input_ids.device)
                parts.append(vis)
                current_pos = int(vis.max()) + 1  # <- the only difference to transformers 5.24
        pos = torch.cat(parts, dim=1).reshape(3, -1)
        if attention_mask is not None:
            position_ids[:, b, attention_mask[b].bool()] = pos.to(position_ids.device)
        else:
            position_ids[:, b] = pos.to(position_ids.device)
        deltas.append(pos.max() + 1 - len(ids))
    return position_ids, torch.tensor(deltas, device=input_ids.device).unsqueeze(1)


# ----------------------------------------------------------------------------------------------
# Helpers
# ----------------------------------------------------------------------------------------------

def hf_config():
    cfg = Ernie4_5_VLMoeConfig(text_config=copy.deepcopy(TEXT_CONFIG), vision_config=copy.deepcopy(VISION_CONFIG),
                               **TOP_CONFIG)
    cfg.architectures = ["Ernie4_5_VLMoeForConditionalGeneration"]
    return cfg


def redraw_weights(model, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():  # lm_head.weight is tied -> not listed
            leaf = name.rsplit(".", 1)[-1]
            if "embed_tokens" in name:
                mean, std = 0.0, 1.0
            elif leaf == "e_score_correction_bias":
                mean, std = 0.0, 0.05
            elif name.endswith("_moe.gate.weight"):  # text_moe / vision_moe router [E, H]
                mean, std = 0.0, 0.5
            elif leaf == "bias":
                mean, std = 0.0, 0.05
            elif p.ndim == 1:  # RMSNorm / LayerNorm weight
                mean, std = 1.0, 0.1
            elif leaf in ("gate_up_proj", "down_proj") and p.ndim == 3:  # [E, out, in]
                mean, std = 0.0, 1.5 / p.shape[2] ** 0.5
            elif p.ndim == 2:  # nn.Linear [out, in]
                mean, std = 0.0, 1.5 / p.shape[1] ** 0.5
            else:
                raise AssertionError(f"unhandled parameter {name} {tuple(p.shape)}")
            p.copy_(torch.randn(p.shape, generator=g, dtype=torch.float32) * std + mean)
    assert model.lm_head.weight is model.model.language_model.embed_tokens.weight


def build_model(seed):
    torch.manual_seed(seed)
    cfg = hf_config()
    cfg._attn_implementation = "eager"
    cfg._experts_implementation = "eager"  # transformers 5.24 would default to torch._grouped_mm on CPU
    model = Ernie4_5_VLMoeForConditionalGeneration(cfg).eval()
    assert model.get_experts_implementation() and set(model.get_experts_implementation().values()) <= {"eager", None}
    redraw_weights(model, seed)
    model.generation_config.eos_token_id = None  # eos disabled: exactly MAX_NEW_TOKENS tokens
    return model


def load_model(path):
    model = Ernie4_5_VLMoeForConditionalGeneration.from_pretrained(path, dtype=torch.float32,
                                                                    attn_implementation="eager",
                                                                    experts_implementation="eager").eval()
    assert set(model.get_experts_implementation().values()) <= {"eager", None}
    model.generation_config.eos_token_id = None
    return model


def state_dict_of(model):
    return {k: v.detach().contiguous().clone() for k, v in model.state_dict().items() if k != "lm_head.weight"}


def write_json(path, obj):
    with open(path, "w") as f:
        json.dump(obj, f, indent=2, ensure_ascii=False)
        f.write("\n")


def make_processor(folder):
    tok = AutoTokenizer.from_pretrained(folder, extra_special_tokens=VL_TOKENS)
    ip = Ernie4_5_VLMoeImageProcessorPil.from_pretrained(folder)
    vp = Ernie4_5_VLMoeVideoProcessor.from_pretrained(folder)
    with open(os.path.join(folder, "chat_template.jinja")) as f:
        template = f.read()
    return Ernie4_5_VLMoeProcessor(image_processor=ip, tokenizer=tok, video_processor=vp, chat_template=template)


def write_processor_files(folder):
    for f in TOKENIZER_FILES:
        shutil.copy(os.path.join(VL_PREPROCESS, f), os.path.join(folder, f))
    Ernie4_5_VLMoeImageProcessorPil(size=dict(IMAGE_SIZE)).save_pretrained(folder)
    Ernie4_5_VLMoeVideoProcessor(size=dict(VIDEO_SIZE), draw_on_frames=False).save_pretrained(folder)
    with open(os.path.join(folder, "chat_template.jinja"), "w") as f:
        f.write(CHAT_TEMPLATE)


def check_tokenizer():
    with open(os.path.join(VL_PREPROCESS, "tokenizer.json")) as f:
        tj = json.load(f)
    added = {t["content"]: t["id"] for t in tj["added_tokens"]}
    for tok, i in TOKENS.items():
        assert added[tok] == i, (tok, added.get(tok), i)
    n = max(max(tj["model"]["vocab"].values()), max(added.values())) + 1
    assert n == 1013 and n <= TEXT_CONFIG["vocab_size"], n
    return n


def encode_cases(processor):
    out = []
    for name, text, media in CASES:
        content = [{"type": kind, "path": os.path.join(ROOT, MEDIA, f)} for kind, f in media]
        content.append({"type": "text", "text": text})
        messages = [{"role": "user", "content": content}]
        rendered = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        enc = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=True,
                                            return_tensors="pt")
        enc = {k: v for k, v in enc.items() if k in MODEL_INPUT_KEYS}
        # the tokenized ids are the rendered text with each placeholder expanded
        ids = enc["input_ids"][0].tolist()
        out.append(dict(name=name, text=text, media=[f"{MEDIA}/{f}" for _, f in media], rendered=rendered, enc=enc,
                        ids=ids))
    return out


class Recorder:
    """Captures router inputs (per MoE gate) and the position ids the language model used."""

    def __init__(self, model):
        self.handles = []
        self.router_inputs = {}
        self.position_ids = []
        for name, mod in model.named_modules():
            if isinstance(mod, Ernie4_5_VLMoeMoeTopKRouter):
                self.handles.append(mod.register_forward_hook(self._router_hook(name, mod)))
        lm = model.model.language_model
        self.handles.append(lm.register_forward_pre_hook(self._lm_hook, with_kwargs=True))

    def _router_hook(self, name, mod):
        def hook(module, args, output):
            self.router_inputs.setdefault(name, []).append(args[0].detach().float().clone())
        return hook

    def _lm_hook(self, module, args, kwargs):
        self.position_ids.append(kwargs.get("position_ids"))

    def reset(self):
        self.router_inputs = {}
        self.position_ids = []

    def remove(self):
        for h in self.handles:
            h.remove()


def routing_stats(model, router_inputs):
    """Per group (text / vision): (token,layer) rows whose top-k set differs with vs without the correction
    bias, total rows, and the set of (layer, expert) pairs selected (with the bias, as the model does)."""
    stats = {"text": [0, 0, set()], "vision": [0, 0, set()]}
    modules = dict(model.named_modules())
    for name, xs in router_inputs.items():
        mod = modules[name]
        group = "text" if ".text_moe." in name else "vision"
        layer = int(name.split(".layers.")[1].split(".")[0])
        for x in xs:
            if x.shape[0] == 0:
                continue
            p = torch.softmax(x @ mod.weight.float().T, dim=-1)
            b = mod.moe_statics.e_score_correction_bias.float().squeeze(0)
            with_b = torch.topk(p + b, mod.top_k, dim=-1).indices.sort(-1).values
            without = torch.topk(p, mod.top_k, dim=-1).indices.sort(-1).values
            stats[group][0] += int((with_b != without).any(-1).sum())
            stats[group][1] += x.shape[0]
            stats[group][2].update((layer, int(e)) for e in with_b.flatten())
    return stats


def model_kwargs(enc, unified):
    kw = {k: v for k, v in enc.items()}
    if unified:
        kw.pop("moe_mm_token_type_ids")
    return kw


def run_case(model, enc, *, video_rule, unified, rec, with_generate=True):
    """Prefill logits (+ router inputs, positions), and greedy generate with raw logits."""
    model.model.rope_deltas = None
    if video_rule == "original":
        model.model.get_rope_index = types.MethodType(get_rope_index_original, model.model)
    else:
        model.model.__dict__.pop("get_rope_index", None)
    try:
        rec.reset()
        with torch.no_grad():
            out = model(**model_kwargs(enc, unified), use_cache=False)
        logits = out.logits[0].float().clone()
        positions = rec.position_ids[0]
        assert positions is not None and positions.shape[0] == 3, positions
        positions = positions[:, 0, :].clone()
        router_inputs = rec.router_inputs
        res = dict(logits=logits, position_ids=positions, router_inputs=router_inputs)
        if with_generate:
            model.model.rope_deltas = None
            rec.reset()
            gc = GenerationConfig(max_new_tokens=MAX_NEW_TOKENS, do_sample=False, eos_token_id=None, pad_token_id=0,
                                  bos_token_id=1, use_cache=True, output_logits=True, return_dict_in_generate=True)
            with torch.no_grad():
                gen = model.generate(**model_kwargs(enc, unified), generation_config=gc)
            T = enc["input_ids"].shape[1]
            greedy = gen.sequences[0, T:].clone()
            assert greedy.shape[0] == MAX_NEW_TOKENS, greedy.shape
            dec = torch.stack([x[0].float() for x in gen.logits]).clone()
            assert torch.equal(dec.argmax(-1), greedy), "greedy ids != argmax(raw logits)"
            top2 = dec.topk(2, dim=-1).values
            res.update(greedy_ids=greedy, decode_logits=dec, gaps=(top2[:, 0] - top2[:, 1]),
                       gen_positions=rec.position_ids[0], rope_delta=int(model.model.rope_deltas.flatten()[0]))
        return res
    finally:
        model.model.__dict__.pop("get_rope_index", None)
        model.model.rope_deltas = None


def manual_decode(model, enc, positions, unified, n):
    """Independent KV-cached greedy loop with explicit 3-D positions: prompt positions as given, decode step i at
    text position T + i + delta (delta = max(prompt positions) + 1 - T)."""
    T = enc["input_ids"].shape[1]
    delta = int(positions.max()) + 1 - T
    kw = model_kwargs(enc, unified)
    for k in ("mm_token_type_ids",):
        kw.pop(k, None)
    model.model.rope_deltas = None
    with torch.no_grad():
        out = model(**kw, position_ids=positions[:, None, :].clone(), use_cache=True)
        cache = out.cache
        logits = [out.logits[0, -1].float()]
        ids = [int(logits[-1].argmax())]
        for i in range(1, n):
            p = torch.full((3, 1, 1), T + i - 1 + delta, dtype=torch.long)
            mask = torch.ones(1, T + i, dtype=torch.long)
            out = model(input_ids=torch.tensor([[ids[-1]]]), attention_mask=mask, position_ids=p, cache=cache,
                        use_cache=True)
            cache = out.cache
            logits.append(out.logits[0, -1].float())
            ids.append(int(logits[-1].argmax()))
    model.model.rope_deltas = None
    return torch.tensor(ids), torch.stack(logits), delta


def evaluate(model, encoded, rec):
    """Run all cases on a model. Returns {case: result}."""
    results = {}
    for c in encoded:
        rule = "original" if c["name"] == "video" else "hf"
        results[c["name"]] = run_case(model, c["enc"], video_rule=rule, unified=False, rec=rec)
    img = next(c for c in encoded if c["name"] == "image")
    results["image_unified"] = run_case(model, img["enc"], video_rule="hf", unified=True, rec=rec)
    vid = next(c for c in encoded if c["name"] == "video")
    results["video_hf_rule"] = run_case(model, vid["enc"], video_rule="hf", unified=False, rec=rec,
                                        with_generate=False)
    return results


def accept(model, results):
    reasons = []
    bias_changed = {"text": 0, "vision": 0}
    selected = {"text": set(), "vision": set()}
    per_case = {}
    for name in ["image", "two_images", "video", "image_unified"]:
        r = results[name]
        g = r["greedy_ids"].tolist()
        if float(r["gaps"].min()) <= GAP_MIN:
            reasons.append(f"{name}: min greedy gap {float(r['gaps'].min()):.2e}")
        if len(set(g)) < MIN_DISTINCT:
            reasons.append(f"{name}: only {len(set(g))} distinct greedy ids")
        if set(g) & FORBIDDEN_GREEDY:
            reasons.append(f"{name}: greedy hits {sorted(set(g) & FORBIDDEN_GREEDY)}")
        st = routing_stats(model, r["router_inputs"])
        per_case[name] = {k: [v[0], v[1]] for k, v in st.items()}
        for grp in ("text", "vision"):
            bias_changed[grp] += st[grp][0]
            selected[grp] |= st[grp][2]
    for grp in ("text", "vision"):
        if bias_changed[grp] == 0:
            reasons.append(f"correction bias never changes a {grp} selection")
        missing = {(l, e) for l in (1, 2) for e in range(8)} - selected[grp]
        if missing:
            reasons.append(f"{grp} experts never selected: {sorted(missing)}")
    return reasons, per_case


# ----------------------------------------------------------------------------------------------
# Checkpoint layouts
# ----------------------------------------------------------------------------------------------

def to_original_layout(sd, cfg):
    """Reverse of transformers' conversion_mapping.py entry "ernie4_5_vl_moe" (written by hand)."""
    tc = cfg.text_config
    E = tc.moe_num_experts
    out = {}
    for k, v in sd.items():
        if k.startswith("model.vision_tower."):
            out["vision_model." + k[len("model.vision_tower."):]] = v
            continue
        if k.startswith("model.resampler_model."):
            nk = k
            for lin in ("spatial_linear", "temporal_linear"):
                for hf, orig in (("fc1", "0"), ("fc2", "2"), ("ln", "3")):
                    nk = nk.replace(f".{lin}.{hf}.", f".{lin}.{orig}.")
            out[nk] = v
            continue
        assert k.startswith("model.language_model."), k
        nk = "model." + k[len("model.language_model."):]
        if ".mlp.text_moe." in nk or ".mlp.vision_moe." in nk:
            pre, rest = nk.split(".mlp.", 1)
            group, rest = rest.split(".", 1)
            off = 0 if group == "text_moe" else E
            if rest == "gate.weight":
                out[f"{pre}.mlp.gate.weight" + ("" if group == "text_moe" else "_1")] = v.t().contiguous()
            elif rest == "gate.moe_statics.e_score_correction_bias":
                out.setdefault(f"{pre}.mlp.moe_statics.e_score_correction_bias", [None, None])[off // E] = v
            elif rest == "experts.gate_up_proj":
                inter = v.shape[1] // 2
                for e in range(E):
                    out[f"{pre}.mlp.experts.{e + off}.gate_proj.weight"] = v[e, :inter].contiguous()
                    out[f"{pre}.mlp.experts.{e + off}.up_proj.weight"] = v[e, inter:].contiguous()
            elif rest == "experts.down_proj":
                for e in range(E):
                    out[f"{pre}.mlp.experts.{e + off}.down_proj.weight"] = v[e].contiguous()
            else:
                raise AssertionError(k)
            continue
        out[nk] = v
    for k in list(out):
        if isinstance(out[k], list):
            out[k] = torch.cat(out[k], dim=0).contiguous()
    return out


def to_unified_layout(sd):
    out = {}
    for k, v in sd.items():
        if ".mlp.vision_moe." in k:
            continue
        out[k.replace(".mlp.text_moe.", ".mlp.")] = v
    return out


def save_tensors(path, tensors):
    save_file({k: tensors[k].contiguous() for k in sorted(tensors)}, path, metadata={"format": "pt"})


def load_tensors(path):
    with safe_open(path, "pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}


# ----------------------------------------------------------------------------------------------
# Main
# ----------------------------------------------------------------------------------------------

def generate(root_out):
    fx = lambda *p: os.path.join(root_out, *p)  # noqa: E731
    dir_a, dir_c, dir_d = fx("vl-moe-f32"), fx("vl-moe-orig-f32"), fx("vl-unified-f32")
    for d in (dir_a, dir_c, dir_d):
        shutil.rmtree(d, ignore_errors=True)
        os.makedirs(d)
    n_tok = check_tokenizer()
    print(f"tokenizer: {n_tok} ids (0..{n_tok - 1}), special ids verified: {TOKENS}")

    # Processor files first: the processor used below is built from what was written.
    write_processor_files(dir_a)
    processor = make_processor(dir_a)
    encoded = encode_cases(processor)
    for c in encoded:
        e = c["enc"]
        print(f"\n[{c['name']}] rendered prompt: {c['rendered']!r}")
        print(f"  T={e['input_ids'].shape[1]} " + " ".join(
            f"{k}={list(e[k].shape)}" for k in ("pixel_values", "pixel_values_videos", "image_grid_thw",
                                                  "video_grid_thw") if k in e))
        grid = e.get("image_grid_thw", e.get("video_grid_thw"))
        print(f"  grid_thw={grid.tolist()}")
    vid = next(c for c in encoded if c["name"] == "video")
    t, h, w = vid["enc"]["video_grid_thw"][0].tolist()
    Tp, Hp, Wp = t // 2, h // 2, w // 2
    print(f"\nvideo merged grid: T'={Tp} H'={Hp} W'={Wp}; advance after the video:"
          f" transformers max(H',W')={max(Hp, Wp)},"
          f" original/vLLM max(T',H',W')={max(Tp, Hp, Wp)}")
    assert Tp > max(Hp, Wp), "pick a video where the position rule matters"
    meta_vp = Ernie4_5_VLMoeVideoProcessor.from_pretrained(dir_a)
    meta = meta_vp(videos=[os.path.join(ROOT, MEDIA, "testsrc2_256x144_vp9_opus_15frames.webm")], return_metadata=True,
                   return_tensors="pt")["video_metadata"][0]
    frames_info = dict(total_num_frames=meta.total_num_frames, fps=meta.fps,
                       sampled_indices=meta.frames_indices.tolist(),
                       frames_after_padding=t, backend=meta.video_backend)
    print(f"video sampling: {frames_info}")

    # Seed search on the in-memory model.
    rec = None
    for seed in range(BASE_SEED, BASE_SEED + MAX_SEEDS):
        model = build_model(seed)
        rec = Recorder(model)
        results = evaluate(model, encoded, rec)
        reasons, per_case = accept(model, results)
        rec.remove()
        if not reasons:
            break
        print(f"seed {seed} rejected: {'; '.join(reasons)}")
    else:
        raise SystemExit("no seed accepted")
    print(f"\nseed {seed} accepted")
    mem_logits = {k: v["logits"] for k, v in results.items()}

    # A: transformers 5.x layout.
    cfg = model.config
    model.save_pretrained(dir_a, save_original_format=False)
    with open(os.path.join(dir_a, "config.json")) as f:
        cfg_a = json.load(f)
    sd = state_dict_of(model)
    saved = load_tensors(os.path.join(dir_a, "model.safetensors"))
    assert sorted(saved) == sorted(sd), sorted(set(saved) ^ set(sd))
    assert all(torch.equal(saved[k], sd[k]) for k in sd)

    # Reload and take every reference output from the reloaded model.
    model = load_model(dir_a)
    sd2 = state_dict_of(model)
    assert all(torch.equal(sd2[k], sd[k]) for k in sd)
    rec = Recorder(model)
    results = evaluate(model, encoded, rec)
    for k, v in results.items():
        assert torch.equal(v["logits"], mem_logits[k]), f"{k}: reloaded logits differ from in-memory"
    reasons, per_case = accept(model, results)
    assert not reasons, reasons
    print("reloaded model: logits bit-identical to the in-memory model")

    # Cross-checks.
    for name in ("image", "two_images"):
        c = next(x for x in encoded if x["name"] == name)
        pos_orig, _ = get_rope_index_original(model.model, c["enc"]["input_ids"], c["enc"]["mm_token_type_ids"],
                                              image_grid_thw=c["enc"]["image_grid_thw"])
        assert torch.equal(pos_orig[:, 0], results[name]["position_ids"]), f"{name}: rules differ for images"
    pos_hf, _ = model.model.get_rope_index(vid["enc"]["input_ids"], vid["enc"]["mm_token_type_ids"],
                                           video_grid_thw=vid["enc"]["video_grid_thw"])
    assert torch.equal(pos_hf[:, 0], results["video_hf_rule"]["position_ids"])
    assert not torch.equal(pos_hf[:, 0], results["video"]["position_ids"])
    max_dec_diff = 0.0
    for name in ["image", "two_images", "video", "image_unified"]:
        c = next(x for x in encoded if x["name"] == name.replace("_unified", ""))
        r = results[name]
        # generate's first step == prefill's last position
        d0 = float((r["decode_logits"][0] - r["logits"][-1]).abs().max())
        assert d0 < 1e-4, (name, d0)
        # generate's prompt positions (rows 1..3 of its [4, 1, T] ids) == the recorded prefill positions
        gp = r["gen_positions"]
        gp = gp[1:, 0] if gp.shape[0] == 4 else gp[:, 0]
        assert torch.equal(gp, r["position_ids"]), name
        ids, logits, delta = manual_decode(model, c["enc"], r["position_ids"], name.endswith("_unified"),
                                           MAX_NEW_TOKENS)
        assert delta == r["rope_delta"], (name, delta, r["rope_delta"])
        assert torch.equal(ids, r["greedy_ids"]), (name, ids.tolist(), r["greedy_ids"].tolist())
        dd = float((logits - r["decode_logits"]).abs().max())
        assert dd < 1e-4, (name, dd)
        max_dec_diff = max(max_dec_diff, dd, d0)
    print(f"manual KV-cached decode with explicit positions == generate (max |dlogit| {max_dec_diff:.2e})")

    # Reference files.
    ref_a = os.path.join(dir_a, "reference")
    ref_d = os.path.join(dir_d, "reference")
    os.makedirs(ref_a)
    os.makedirs(ref_d)
    cases_json = []
    for name in ["image", "two_images", "video", "image_unified"]:
        c = next(x for x in encoded if x["name"] == name.replace("_unified", ""))
        e, r = c["enc"], results[name]
        is_video = "video_grid_thw" in e
        pv = e["pixel_values_videos"] if is_video else e["pixel_values"]
        grid = e["video_grid_thw"] if is_video else e["image_grid_thw"]
        with torch.no_grad():
            vt = model.model.vision_tower(pv, grid_thw=grid).last_hidden_state.float()
            rs = model.model.resampler_model(vt, grid).float()
        token = 13 if is_video else 10
        n_merged = int((e["input_ids"][0] == token).sum())
        assert rs.shape == (n_merged, 64), (rs.shape, n_merged)
        tensors = {
            "input_ids": e["input_ids"][0].long(),
            "mm_token_type_ids": e["mm_token_type_ids"][0].long(),
            "moe_mm_token_type_ids": e["moe_mm_token_type_ids"][0].long(),
            "position_ids": r["position_ids"].long(),
            "pixel_values_videos" if is_video else "pixel_values": pv.float(),
            "grid_thw": grid.long(),
            "vision_tower_out": vt,
            "resampler_out": rs,
            "logits": r["logits"],
            "greedy_ids": r["greedy_ids"].long(),
            "decode_logits": r["decode_logits"],
        }
        out_dir = ref_d if name.endswith("_unified") else ref_a
        save_tensors(os.path.join(out_dir, f"{name}.safetensors"), tensors)
        T = e["input_ids"].shape[1]
        st = per_case[name]
        entry = {
            "case": name,
            "file": "tests/fixtures/" + os.path.relpath(os.path.join(out_dir, f"{name}.safetensors"), root_out),
            "checkpoint": "tests/fixtures/" + ("vl-unified-f32" if name.endswith("_unified") else "vl-moe-f32"),
            "prompt": c["text"],
            "media": c["media"],
            "rendered_prompt": c["rendered"],
            "num_tokens": T,
            "num_patches": int(pv.shape[0]),
            "grid_thw": grid.tolist(),
            "num_merged_tokens": n_merged,
            "moe_routing": "unified (moe_mm_token_type_ids not passed: every token through text_moe)"
            if name.endswith("_unified") else "modality (moe_mm_token_type_ids from the processor)",
            "position_rule": ("original/vLLM: next = max(item positions) + 1 (get_rope_index monkeypatched)"
                              if name == "video" else "transformers 5.24 get_rope_index (same as original for images)"),
            "rope_delta": r["rope_delta"],
            "max_new_tokens": MAX_NEW_TOKENS,
            "eos": "disabled (generation_config.eos_token_id = None); no greedy token is 2 or 4",
            "greedy_min_top1_top2_gap": round(float(r["gaps"].min()), 6),
            "bias_changed_selections": {g: {"rows_changed": v[0], "rows": v[1]} for g, v in st.items()},
        }
        if is_video:
            entry["video_sampling"] = frames_info
        cases_json.append(entry)
        print(f"\n[{name}] T={T} N={pv.shape[0]} grid_thw={grid.tolist()} merged={n_merged}"
              f" rope_delta={r['rope_delta']}"
              f" min_gap={float(r['gaps'].min()):.4f} greedy={r['greedy_ids'].tolist()}")
        print(f"  bias-changed selections (rows changed / rows): "
              f"text {st['text'][0]}/{st['text'][1]}, vision {st['vision'][0]}/{st['vision'][1]}")
    r = results["video_hf_rule"]
    save_tensors(os.path.join(ref_a, "video_hf_rule.safetensors"),
                 {"position_ids": r["position_ids"].long(), "logits": r["logits"]})
    cases_json.append({
        "case": "video_hf_rule", "file": "tests/fixtures/vl-moe-f32/reference/video_hf_rule.safetensors",
        "checkpoint": "tests/fixtures/vl-moe-f32", "inputs": "same as video",
        "position_rule": "transformers 5.24 get_rope_index unpatched: advance max(H', W') after the video",
        "keys": ["position_ids", "logits"],
    })
    vp, vh = results["video"]["position_ids"], results["video_hf_rule"]["position_ids"]
    print(f"\nvideo: last position original rule {int(vp.max())} (delta {results['video']['rope_delta']}),"
          f" transformers rule {int(vh.max())}; max |logit diff| between rules "
          f"{float((results['video']['logits'] - r['logits']).abs().max()):.4f}")
    header = {
        "generator": "tests/reference/make_vl_reference.py",
        "versions": {k: v[0] for k, v in PINNED.items()} | {"python": sys.version.split()[0]},
        "seed": seed,
        "model": "tests/fixtures/vl-moe-f32 (transformers Ernie4_5_VLMoeForConditionalGeneration, eager, CPU, f32)",
        "generation": {"max_new_tokens": MAX_NEW_TOKENS, "do_sample": False, "eos_token_id": None,
                       "decode_logits": "generate(output_logits=True): raw logits, not processed scores"},
        "cases": cases_json,
    }
    write_json(os.path.join(ref_a, "cases.json"), header)
    write_json(os.path.join(ref_d, "cases.json"), header | {"cases": [x for x in cases_json
                                                                       if x["case"] == "image_unified"]})

    # C: original layout.
    orig = to_original_layout(sd, cfg)
    tmp = tempfile.mkdtemp()
    try:
        # transformers' own reverse conversion (save_original_format=True). It needs a model that was built in
        # memory (or loaded from an original-layout checkpoint): the model re-loaded from vl-moe-f32's
        # transformers-layout file saves that layout again.
        fresh = build_model(seed)
        assert all(torch.equal(v, sd[k]) for k, v in state_dict_of(fresh).items())
        fresh.save_pretrained(tmp)
        del fresh
        hf_rev = load_tensors(os.path.join(tmp, "model.safetensors"))
    finally:
        shutil.rmtree(tmp)
    hf_rev = {("vision_model." + k[len("model.vision_model."):] if k.startswith("model.vision_model.") else k): v
              for k, v in hf_rev.items()}
    assert sorted(hf_rev) == sorted(orig), sorted(set(hf_rev) ^ set(orig))
    assert all(torch.equal(hf_rev[k], orig[k]) for k in orig)
    print("\noriginal layout: hand-written reverse mapping == transformers' save_pretrained reverse conversion "
          "(modulo the vision prefix: transformers writes model.vision_model.*, the baidu checkpoints vision_model.*)")
    save_tensors(os.path.join(dir_c, "model.safetensors"), orig)
    write_json(os.path.join(dir_c, "config.json"), ORIG_CONFIG)
    shutil.copy(os.path.join(dir_a, "generation_config.json"), dir_c)
    for f in PROCESSOR_FILES:
        shutil.copy(os.path.join(dir_a, f), dir_c)
    # Load the original folder back through transformers' conversion_mapping (with the HF config object: the
    # original-style config.json has model_type "ernie4_5_moe_vl", which transformers does not register).
    mc, info = Ernie4_5_VLMoeForConditionalGeneration.from_pretrained(dir_c, config=hf_config(), dtype=torch.float32,
                                                                       output_loading_info=True)
    assert not any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys")), info
    sdc = state_dict_of(mc)
    assert sorted(sdc) == sorted(sd)
    bad = [k for k in sd if not torch.equal(sdc[k], sd[k])]
    assert not bad, bad
    print(f"original layout reloaded by transformers (conversion_mapping): {len(sd)} tensors, all equal to vl-moe-f32")
    del mc

    # D: unified routing.
    uni = to_unified_layout(sd)
    save_tensors(os.path.join(dir_d, "model.safetensors"), uni)
    cfg_d = copy.deepcopy(cfg_a)
    cfg_d["text_config"]["moe_intermediate_size"] = TEXT_CONFIG["moe_intermediate_size"][0]
    cfg_d["text_config"]["moe_routing"] = "unified"
    write_json(os.path.join(dir_d, "config.json"), cfg_d)
    shutil.copy(os.path.join(dir_a, "generation_config.json"), dir_d)
    for f in PROCESSOR_FILES:
        shutil.copy(os.path.join(dir_a, f), dir_d)
    # the unified tensors are exactly the text-group tensors of A
    for k, v in uni.items():
        src = k if k in sd else k.replace(".mlp.", ".mlp.text_moe.", 1)
        assert torch.equal(sd[src], v), k
    rec.remove()
    return seed


def tree_digest(d):
    out = {}
    for root, _, files in os.walk(d):
        for f in files:
            p = os.path.join(root, f)
            with open(p, "rb") as fh:
                out[os.path.relpath(p, d)] = hashlib.sha256(fh.read()).hexdigest()
    return out


def print_sizes(base):
    total = 0
    for d in ("vl-moe-f32", "vl-moe-orig-f32", "vl-unified-f32"):
        for root, _, files in sorted(os.walk(os.path.join(base, d))):
            for f in sorted(files):
                p = os.path.join(root, f)
                total += os.path.getsize(p)
                print(f"  {os.path.getsize(p):>9}  {os.path.relpath(p, base)}")
    print(f"  {total:>9}  total")


def main():
    if "--check" in sys.argv[1:]:
        tmp = tempfile.mkdtemp()
        try:
            generate(tmp)
            same = True
            for d in ("vl-moe-f32", "vl-moe-orig-f32", "vl-unified-f32"):
                a, b = tree_digest(os.path.join(tmp, d)), tree_digest(os.path.join(FIXTURES, d))
                if a != b:
                    same = False
                    print(f"{d} DIFFERS: {sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))}")
        finally:
            shutil.rmtree(tmp)
        print("fixtures up to date" if same else "fixtures DIFFER")
        sys.exit(0 if same else 1)
    generate(FIXTURES)
    print("\nsizes:")
    print_sizes(FIXTURES)


if __name__ == "__main__":
    main()
