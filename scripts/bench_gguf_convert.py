"""Convert the benchmark checkpoint to GGUF with llama.cpp's own converter (issue #13, item 6).

The checkpoint written by tests/reference/make_bench_checkpoint.py differs from what the vendored
`convert_hf_to_gguf.py` (llama-cpp-python 0.3.36 sdist) reads in two ways, handled here without
touching the checkpoint (other benchmarks use it as it is):

- experts are in the transformers-5 stacked layout (`mlp.experts.gate_up_proj [e, 2i, h]`, gate
  rows first, and `mlp.experts.down_proj [e, h, i]`); the converter's Ernie4_5MoeModel wants the
  per-expert `mlp.experts.{x}.{gate,up,down}_proj.weight` of the original release. A subclass,
  registered for the same architecture, unstacks them as they stream through (lazy tensors, so
  no layer is materialised twice); the correction bias moves from `mlp.gate.moe_statics.` to the
  original `mlp.moe_statics.`;
- it ships tokenizer.json only, and the converter's ERNIE vocabulary is SentencePiece
  (`tokenizer.model`). The staging directory gets the 700-piece ERNIE-style SentencePiece model
  of tests/fixtures/spm/ernie (ids < vocab_size; the converter pads the rest with [PADn]):
  llama-bench feeds random ids, so the vocabulary only has to be well formed.

Usage (numpy, torch, sentencepiece needed: the reference venv has them):
    python scripts/bench_gguf_convert.py LLAMA_CPP_SRC CHECKPOINT_DIR OUT.gguf bf16|f16
"""

import os
import re
import sys
import tempfile


def main(src, ckpt, out, outtype):
    sys.path.insert(0, src)
    sys.path.insert(1, os.path.join(src, "gguf-py"))
    import convert_hf_to_gguf as conv  # noqa: E402  (the vendored converter)
    from conversion.base import ModelBase  # noqa: E402
    from conversion.ernie import Ernie4_5MoeModel  # noqa: E402  (imported now, so ours registers last)

    @ModelBase.register("Ernie4_5_MoeForCausalLM")
    class StackedErnie4_5MoeModel(Ernie4_5MoeModel):
        model_arch = Ernie4_5MoeModel.model_arch  # the converter wants it on every class

        @classmethod
        def filter_tensors(cls, item):
            # transformers 5 keeps the correction bias under the router (`mlp.gate.moe_statics`).
            name, gen = item
            return super().filter_tensors((name.replace(".mlp.gate.moe_statics.", ".mlp.moe_statics."), gen))

        def modify_tensors(self, data_torch, name, bid):
            m = re.fullmatch(r"model\.layers\.(\d+)\.mlp\.experts\.(gate_up_proj|down_proj)", name)
            if m is None:
                yield from super().modify_tensors(data_torch, name, bid)
                return
            layer, kind = m.group(1), m.group(2)
            p = f"model.layers.{layer}.mlp.experts"
            for x in range(data_torch.shape[0]):
                if kind == "gate_up_proj":
                    i = data_torch.shape[1] // 2
                    parts = [("gate_proj", data_torch[x, :i]), ("up_proj", data_torch[x, i:])]
                else:
                    parts = [("down_proj", data_torch[x])]
                for proj, t in parts:
                    yield from super().modify_tensors(t, f"{p}.{x}.{proj}.weight", bid)

    here = os.path.dirname(os.path.abspath(__file__))
    spm = os.path.join(here, "..", "tests", "fixtures", "spm", "ernie")
    with tempfile.TemporaryDirectory(prefix="ernie-gguf-stage-") as stage:
        for f in ("config.json", "model.safetensors"):
            os.symlink(os.path.abspath(os.path.join(ckpt, f)), os.path.join(stage, f))
        for f in ("tokenizer.model", "tokenizer_config.json"):
            os.symlink(os.path.abspath(os.path.join(spm, f)), os.path.join(stage, f))
        sys.argv = ["convert_hf_to_gguf.py", stage, "--outfile", out, "--outtype", outtype]
        conv.main()


if __name__ == "__main__":
    if len(sys.argv) != 5 or sys.argv[4] not in ("bf16", "f16"):
        sys.exit(__doc__)
    main(*sys.argv[1:])
