#!/usr/bin/env python3
# Pinned reference versions (asserted at run time):
#   torch==2.15.0
#   transformers==5.24.0
#   (also used: tokenizers==0.23.3; see requirements.txt)
"""Embedding reference for `tests/model/embed.rs`: transformers' final normalised hidden states and
pooled embeddings of the committed fixtures, written to `tests/fixtures/embeddings.json`.

For each fixture in FIXTURES, with the checkpoint loaded by `AutoModelForCausalLM.from_pretrained`
(f32, eager attention, CPU):

* `prompt_last_hidden_state`: `model.model(prompt_ids).last_hidden_state[0]` ([t][h]; the decoder
  output after the final RMSNorm) for the fixture's chat prompt ids from expected.json.
* `hidden_states_last_is_normed`: whether `output_hidden_states=True`'s last entry equals that
  (it does in transformers 5.24: the recorder replaces the last layer output with the normed one).
* `texts`: for each of TEXTS, the ids of `tokenizer(text, add_special_tokens=False)` and the
  embeddings pooled from the last hidden state: `last` (row t-1), `mean` (mean over rows), `eos`
  (`<|end_of_sentence|>` appended, its row), `last_norm` (L2-normalised `last`), and `mean_d16_norm`
  (`mean` truncated to 16 components, then L2-normalised).

Run from the repository root: `python tests/reference/embed_reference.py`. Deterministic; CI
never runs it; its output is committed.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
import transformers
from transformers import AutoModelForCausalLM, AutoTokenizer

PINNED = {"torch": "2.15.0", "transformers": "5.24.0"}
REPO_ROOT = Path(__file__).resolve().parents[2]
FIXTURES_DIR = REPO_ROOT / "tests" / "fixtures"
OUT = FIXTURES_DIR / "embeddings.json"
FIXTURES = ["dense-f32", "moe-f32"]
TEXTS = ["The sea is calm tonight.", "Wind, stars and salt: a poem in three words"]
EOS = "<|end_of_sentence|>"


def check_versions() -> dict:
    got = {"torch": torch.__version__.split("+")[0], "transformers": transformers.__version__}
    for name, want in PINNED.items():
        if got[name] != want:
            sys.exit(f"error: {name}=={got[name]} installed, but this reference is pinned to {name}=={want}")
    return {"torch": torch.__version__, "transformers": transformers.__version__}


def floats(t: torch.Tensor):
    # float32 -> Python float is exact, and json writes the shortest repr that round-trips.
    return t.tolist()


@torch.no_grad()
def fixture_reference(name: str) -> dict:
    d = FIXTURES_DIR / name
    tok = AutoTokenizer.from_pretrained(d)
    model = AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32, attn_implementation="eager").eval()
    expected = json.loads((d / "expected.json").read_text())
    ids = torch.tensor([expected["prompt_ids"]])

    base = model.model(input_ids=ids, output_hidden_states=True)
    last = base.last_hidden_state[0]  # [t, h], after model.norm
    # Independent check that last_hidden_state is the normed output: norm(last layer output).
    # hidden_states[-1] is either that normed tensor or the raw last-layer output; record which.
    hs_last = base.hidden_states[-1][0]
    is_normed = bool(torch.equal(hs_last, last))
    if not is_normed:
        assert torch.allclose(model.model.norm(hs_last), last, atol=1e-6), "last_hidden_state != norm(last layer)"

    eos_id = tok.convert_tokens_to_ids(EOS)
    texts = []
    for text in TEXTS:
        tids = tok(text, add_special_tokens=False)["input_ids"]
        h = model.model(input_ids=torch.tensor([tids])).last_hidden_state[0]  # [t, h]
        h_eos = model.model(input_ids=torch.tensor([tids + [eos_id]])).last_hidden_state[0]  # [t+1, h]
        mean = h.mean(dim=0)
        texts.append({
            "text": text,
            "ids": tids,
            "last": floats(h[-1]),
            "mean": floats(mean),
            "eos": floats(h_eos[-1]),
            "last_norm": floats(torch.nn.functional.normalize(h[-1], dim=0)),
            "mean_d16_norm": floats(torch.nn.functional.normalize(mean[:16], dim=0)),
        })
    return {
        "prompt_ids": expected["prompt_ids"],
        "hidden_states_last_is_normed": is_normed,
        "prompt_last_hidden_state": floats(last),
        "texts": texts,
    }


def main() -> None:
    versions = check_versions()
    torch.manual_seed(0)
    out = {"versions": versions, "eos_token": EOS, "fixtures": {n: fixture_reference(n) for n in FIXTURES}}
    OUT.write_text(json.dumps(out, separators=(",", ":")) + "\n")
    for n, f in out["fixtures"].items():
        print(f"{n}: hidden_states[-1] is normed: {f['hidden_states_last_is_normed']}")
    print(f"wrote {OUT.relative_to(REPO_ROOT)}")


if __name__ == "__main__":
    main()
