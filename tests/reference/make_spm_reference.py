#!/usr/bin/env python3
"""SentencePiece-only checkpoints (issue #12 item 5): train two small `tokenizer.model`s and record
what transformers' AutoTokenizer makes of them.

Run with the reference venv from the repository root:

    /work/refenv/bin/python tests/reference/make_spm_reference.py          # write
    /work/refenv/bin/python tests/reference/make_spm_reference.py --check  # verify, write nothing

Pinned: transformers 5.25.0, tokenizers 0.23.3, sentencepiece 0.2.3, protobuf 7.36.2.

Writes tests/fixtures/spm/{ernie,spm-prefix}/ (tokenizer.model, tokenizer_config.json,
config.json) and tests/fixtures/spm/golden.json.

What transformers 5.25.0 does with a folder that has `tokenizer.model` and no `tokenizer.json`
(read from tokenization_utils_tokenizers.py / convert_slow_tokenizer.py):
  * model_type `ernie4_5` / `ernie4_5_moe` is in MODELS_WITH_INCORRECT_HUB_TOKENIZER_CLASS, so the
    hub's `tokenizer_class: Ernie4_5_Tokenizer` + remote-code auto_map are ignored and
    `TokenizersBackend` loads the folder;
  * `_convert_from_sentencepiece`: `SentencePieceExtractor` reads the proto, control pieces
    (type 3) become special AddedTokens, user-defined pieces (type 4) stay in the model;
    `SpmConverter.build_tokenizer_from_spm_proto` then builds the backend from the proto's own
    settings: BPE (byte_fallback from trainer_spec, merges regenerated from piece scores, only
    normal pieces merge, `ignore_merges` when user-defined pieces exist), normalizer
    [Precompiled(charsmap)] + [strip / collapse spaces if remove_extra_whitespaces] +
    [Replace(" ", "▁") if escape_whitespaces] + [Replace(^▁, ▁▁) if add_dummy_prefix and legacy],
    pre-tokenizer [Metaspace(prepend always|first) if add_dummy_prefix] + [Split(user-defined,
    isolated)], decoder Replace(▁→" "), ByteFallback, Fuse, [Strip(1 left) if add_dummy_prefix];
  * tokenizer_config.json's `added_tokens_decoder` and named special tokens become added tokens.

Fixture `ernie`: configured like ERNIE 4.5's model (BPE, byte_fallback, identity normalization, no
dummy prefix, whitespace runs kept, digits split, ERNIE's control tokens) with the original
release's tokenizer_config.json keys. Fixture `spm-prefix`: the other branches (dummy prefix,
extra-whitespace removal, a small precompiled normalization rule, a user-defined piece).
Training is single-threaded and deterministic.
"""

import json
import os
import sys
import tempfile

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["TOKENIZERS_PARALLELISM"] = "false"

import google.protobuf  # noqa: E402
import sentencepiece as spm  # noqa: E402
import tokenizers  # noqa: E402
import transformers  # noqa: E402
from transformers import AutoTokenizer  # noqa: E402

PINNED = {"transformers": "5.25.0", "tokenizers": "0.23.3", "sentencepiece": "0.2.3", "protobuf": "7.36.2"}
for mod, name in [(transformers, "transformers"), (tokenizers, "tokenizers"), (spm, "sentencepiece"), (google.protobuf, "protobuf")]:
    assert mod.__version__ == PINNED[name], (name, mod.__version__)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OUT = os.path.join(ROOT, "tests", "fixtures", "spm")

CORPUS = """\
The quick brown fox jumps over the lazy dog. The dog does not mind; it is a very lazy dog.
A mixture of experts routes every token to a small number of expert networks.
The model reads the prompt, fills the key and value cache, and then generates one token at a time.
When a character is not in the vocabulary, the tokenizer falls back to its UTF-8 bytes.
Numbers such as 1, 2, 3, 10, 42, 100 and 2025 are split into single digits.
User: What is the capital of France?
Assistant: The capital of France is Paris.
def main():
    print("hello, world")
    return 0
Der schnelle braune Fuchs springt über den faulen Hund. Die Straße ist heute sehr schön.
你好，世界！我是一个语言模型。今天天气很好，我们去公园散步吧。
这是一个测试。中文和英文都可以用来和模型对话。
"""

ERNIE_CONTROL = [
    "<|begin_of_sentence|>", "<|end_of_sentence|>", "<cls>", "<sep>", "<pad>",
    "<mask:0>", "<mask:1>", "<mask:4>", "<mask:5>", "<mask:6>", "<mask:7>",
    "<think>", "</think>", "<|IMAGE_START|>", "<|IMAGE_END|>", "<|IMAGE_PLACEHOLDER|>",
    "<|VIDEO_START|>", "<|VIDEO_END|>", "<|AUDIO_PLACEHOLDER|>",
]

# Small custom normalization rule (TSV of code points): full-width A-C and digits → ASCII,
# "…" → "...", ligature "ﬁ" → "fi". Gives a precompiled charsmap of a few hundred bytes.
def rule_tsv():
    rows = []
    for c in "ABC0123456789":
        rows.append(f"{ord(c) + 0xFEE0:X}\t{ord(c):X}")
    rows.append("2026\t2E 2E 2E")
    rows.append("FB01\t66 69")
    return "\n".join(rows) + "\n"


def train(tmp, name, **kw):
    # Relative paths: the trainer_spec stores them, and the model bytes must not depend on `tmp`.
    os.chdir(tmp)
    corpus = "corpus.txt"
    with open(corpus, "w", encoding="utf-8") as f:
        f.write(CORPUS * 4)
    prefix = name
    spm.SentencePieceTrainer.train(
        input=corpus, model_prefix=prefix, model_type="bpe", vocab_size=700, byte_fallback=True,
        character_coverage=0.995, num_threads=1, shuffle_input_sentence=False, minloglevel=2, **kw,
    )
    with open(prefix + ".model", "rb") as f:
        return f.read()


CHAT_TEMPLATE = (
    "{%- if not add_generation_prompt is defined -%}\n    {%- set add_generation_prompt = true -%}\n{%- endif -%}\n"
    "{{- cls_token -}}\n{%- for message in messages -%}\n    {%- if message[\"role\"] == \"user\" -%}\n"
    "        {{- \"User: \" + message[\"content\"] + \"\\n\" -}}\n    {%- elif message[\"role\"] == \"assistant\" -%}\n"
    "        {{- \"Assistant: \" + message[\"content\"] + sep_token -}}\n    {%- elif message[\"role\"] == \"system\" -%}\n"
    "        {{- message[\"content\"] + \"\\n\" -}}\n    {%- endif -%}\n{%- endfor -%}\n"
    "{%- if add_generation_prompt -%}\n    {{- \"Assistant: \" -}}\n{%- endif -%}"
)


def ernie_files(model):
    sp = spm.SentencePieceProcessor(model_proto=model)
    def entry(tok):
        return {"content": tok, "lstrip": False, "normalized": False, "rstrip": False, "single_word": False, "special": True}
    decoder = {str(sp.piece_to_id(t)): entry(t) for t in ["<unk>", "<s>", "</s>"] + ERNIE_CONTROL}
    # The original release's tokenizer_config.json keys (baidu ERNIE 4.5, remote-code tokenizer).
    cfg = {
        "added_tokens_decoder": decoder,
        "auto_map": {"AutoTokenizer": ["tokenization_ernie4_5.Ernie4_5_Tokenizer", None]},
        "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "pad_token": "<unk>",
        "cls_token": "<|begin_of_sentence|>", "sep_token": "<|end_of_sentence|>", "mask_token": "<mask:1>",
        "sys_start_token": "<mask:4>", "sys_end_token": "<mask:5>",
        "header_start_token": "<mask:6>", "header_end_token": "<mask:7>",
        "additional_special_tokens": None,
        "chat_template": CHAT_TEMPLATE,
        "clean_up_tokenization_spaces": False,
        "model_max_length": 131072,
        "padding_side": "right",
        "split_special_tokens": False,
        "tokenizer_class": "Ernie4_5_Tokenizer",
    }
    return cfg, {"model_type": "ernie4_5", "architectures": ["Ernie4_5_ForCausalLM"]}


def prefix_files(model):
    cfg = {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "tokenizer_class": "LlamaTokenizer"}
    return cfg, {"model_type": "ernie4_5_moe", "architectures": ["Ernie4_5_MoeForCausalLM"]}


TEXTS = [
    "Hello world",
    "The quick brown fox jumps over the lazy dog.",
    "  leading spaces, trailing spaces   ",
    "tabs\tand\nnewlines\n\n  and   runs    of     spaces",
    "Numbers: 0 7 42 1234567890 3.14159 -12",
    "你好，世界！今天天气很好。",
    "日本語のテキストと한국어 텍스트",
    "emoji 😀🎉👍🏽 and ZWJ 👩‍💻 done",
    "rare bytes: \u00e9\u00e8 \u0416\u0436 \u2603 \U0001f9ec",
    "full-width ＡＢＣ １２３ … ﬁne",
    "<|begin_of_sentence|>User: hi<|end_of_sentence|><think>x</think>",
    "text<|IMAGE_PLACEHOLDER|><|IMAGE_PLACEHOLDER|>more <mask:1> tail",
    "def main():\n    print(\"hello, world\")\n    return 0\n",
    "▁already▁escaped and <unk> and <s>x</s>",
    "",
    " ",
    "a",
    "Über die Straße 🚗 – schön!",
]


def golden_for(dirname):
    tok = AutoTokenizer.from_pretrained(dirname)
    assert type(tok).__name__ == "TokenizersBackend", type(tok)
    out = []
    for t in TEXTS:
        ids = tok.encode(t, add_special_tokens=False)
        with_specials = tok(t)["input_ids"]
        out.append({
            "text": t,
            "ids": ids,
            "ids_add_special_tokens": with_specials,
            "decoded": tok.decode(ids),
            "decoded_skip_special": tok.decode(ids, skip_special_tokens=True),
        })
    return {
        "vocab_size": len(tok),
        "special_ids": sorted({tok.convert_tokens_to_ids(t) for t in tok.all_special_tokens}),
        "encodings": out,
    }


def main():
    check = "--check" in sys.argv[1:]
    cwd = os.getcwd()
    with tempfile.TemporaryDirectory() as tmp:
        models = {
            "ernie": train(
                tmp, "ernie", add_dummy_prefix=False, remove_extra_whitespaces=False, normalization_rule_name="identity",
                split_digits=True, allow_whitespace_only_pieces=True, control_symbols=ERNIE_CONTROL,
            ),
        }
        rule = "rule.tsv"
        with open(rule, "w") as f:
            f.write(rule_tsv())
        models["spm-prefix"] = train(
            tmp, "prefix", add_dummy_prefix=True, remove_extra_whitespaces=True, normalization_rule_tsv=rule,
            user_defined_symbols=["<|IMAGE_PLACEHOLDER|>", "@@"], control_symbols=["<|begin_of_sentence|>"],
        )
        files = {}
        golden = {"pinned": PINNED, "fixtures": {}}
        for name, model in models.items():
            cfg, config = (ernie_files if name == "ernie" else prefix_files)(model)
            d = os.path.join(tmp, "out", name)
            os.makedirs(d)
            fs = {
                "tokenizer.model": model,
                "tokenizer_config.json": (json.dumps(cfg, indent=2, ensure_ascii=False) + "\n").encode(),
                "config.json": (json.dumps(config, indent=2) + "\n").encode(),
            }
            for fn, data in fs.items():
                with open(os.path.join(d, fn), "wb") as f:
                    f.write(data)
                files[os.path.join(name, fn)] = data
            golden["fixtures"][name] = golden_for(d)
        os.chdir(cwd)
        files["golden.json"] = (json.dumps(golden, indent=1, ensure_ascii=False) + "\n").encode()
    bad = []
    for rel, data in files.items():
        path = os.path.join(OUT, rel)
        if check:
            if not os.path.exists(path) or open(path, "rb").read() != data:
                bad.append(rel)
        else:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "wb") as f:
                f.write(data)
    if check:
        print("differs:" if bad else "ok", *bad)
        sys.exit(1 if bad else 0)
    print("wrote", OUT, {k: len(v) for k, v in files.items()})


if __name__ == "__main__":
    main()
