"""Reference for elastic depth: the moe-f32 fixture with decoder layer 1 removed, run by transformers.

ERNIE 5.0's elastic depth drops layers (identity on the residual stream). The equivalent dense
checkpoint is the same weights with that layer deleted and the rest renumbered; this script builds
it in transformers (pinned below) and records its logits for the fixture prompt and its 32-token
greedy continuation into tests/fixtures/moe-f32/expected_drop_layer1.json.

Run from the repo root: python tests/reference/make_elastic_reference.py
"""

import json
import os

import torch
import transformers
from transformers import AutoModelForCausalLM, Ernie4_5_MoeConfig, Ernie4_5_MoeForCausalLM

assert torch.__version__.startswith("2.15.0"), torch.__version__
assert transformers.__version__ == "5.24.0", transformers.__version__

FIX = os.path.join(os.path.dirname(__file__), "..", "fixtures", "moe-f32")
DROP = 1


def main():
    torch.manual_seed(0)
    exp = json.load(open(os.path.join(FIX, "expected.json")))
    full = AutoModelForCausalLM.from_pretrained(FIX, dtype=torch.float32)
    cfg_dict = json.load(open(os.path.join(FIX, "config.json")))
    n = cfg_dict["num_hidden_layers"]
    cfg_dict["num_hidden_layers"] = n - 1
    # Layer 0 stays dense, the remaining layers are MoE (moe_layer_start_index 1 still holds).
    cfg = Ernie4_5_MoeConfig(**{k: v for k, v in cfg_dict.items() if k not in ("architectures", "transformers_version")})
    small = Ernie4_5_MoeForCausalLM(cfg).eval()
    sd = {}
    for k, v in full.state_dict().items():
        if k.startswith("model.layers."):
            idx = int(k.split(".")[2])
            if idx == DROP:
                continue
            new_idx = idx if idx < DROP else idx - 1
            k = k.replace(f"model.layers.{idx}.", f"model.layers.{new_idx}.", 1)
        sd[k] = v
    missing, unexpected = small.load_state_dict(sd, strict=False)
    assert not unexpected, unexpected
    assert all("lm_head" in m for m in missing) or not missing, missing
    ids = torch.tensor([exp["prompt_ids"]])
    with torch.no_grad():
        logits = small(ids).logits[0]
        out = small.generate(ids, max_new_tokens=32, do_sample=False, eos_token_id=exp["eos_token_ids"],
                             pad_token_id=0, output_scores=True, return_dict_in_generate=True)
    greedy = out.sequences[0, ids.shape[1]:].tolist()
    margins = []
    for s in out.scores:
        top = torch.topk(s[0], 2).values
        margins.append(float(top[0] - top[1]))
    result = {
        "dropped_layers": [DROP],
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__},
        "prompt_ids": exp["prompt_ids"],
        "logits": [[float(f"{x:.7g}") for x in row] for row in logits.tolist()],
        "greedy_ids": greedy,
        "greedy_min_margin": min(margins),
    }
    with open(os.path.join(FIX, "expected_drop_layer1.json"), "w") as f:
        json.dump(result, f, separators=(",", ":"))
    print("greedy", greedy, "min margin", min(margins))


if __name__ == "__main__":
    main()
