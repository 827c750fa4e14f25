#!/usr/bin/env python3
"""Regenerates tests/tok/: small byte-level BPE tokenizers with the pre-tokenizer, normalizer,
post-processor and decoder configuration of real MoE checkpoints, and the reference ids of
real text under each, written by Hugging Face's `tokenizers` (the reference moe.c must equal).

  qwen3/      Qwen2/Qwen3(-MoE): NFC, Split(Qwen2 regex, Isolated), ByteLevel(use_regex false),
              ByteLevel post-processor; merges in the [a, b] list form; tokenizer_config.json
  deepseek3/  DeepSeek-V3: empty normalizer Sequence, three Isolated Splits (digits in threes,
              CJK runs, the main regex), ByteLevel(use_regex false), TemplateProcessing with
              <｜begin▁of▁sentence｜>; merges in the "a b" string form
  gpt2/       GPT-2 style: ByteLevel(add_prefix_space true, use_regex true) alone
The Hugging Face hub is not reachable from here, so the vocabularies are trained on the
mathematics_dataset text (and the extra text below) instead of taken from the checkpoints.

usage: python3 -m venv /work/.venv-tok && /work/.venv-tok/bin/pip install tokenizers
       /work/.venv-tok/bin/python tests/tok/make_fixtures.py [DATA_DIR]
(DATA_DIR: the mathematics_dataset folder, /work/shared/data/mathematics_dataset by default)
"""
import json
import os
import sys

from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

HERE = os.path.dirname(os.path.abspath(__file__))
DATA = sys.argv[1] if len(sys.argv) > 1 else "/work/shared/data/mathematics_dataset"

# Qwen2/Qwen3's pre-tokenizer regex (tokenizer.json of Qwen/Qwen3-30B-A3B)
QWEN2 = r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
# DeepSeek-V3's three (tokenizer.json of deepseek-ai/DeepSeek-V3)
DS3 = [r"\p{N}{1,3}",
       r"[一-龥぀-ゟ゠-ヿ]+",
       r"""[!"#$%&'()*+,\-./:;<=>?@\[\\\]^_`{|}~][A-Za-z]+|[^""" + "\r\n" + r"""\p{L}\p{P}\p{S}]?[\p{L}\p{M}]+| ?[\p{P}\p{S}]+""" + "[\r\n]*" + r"""|\s*""" + "[\r\n]+" + r"""|\s+(?!\S)|\s+"""]
DS_BOS, DS_EOS, DS_PAD = "<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>", "<｜▁pad▁｜>"

EXTRA = [
    "Hello world! It's a test: don't we'll they've I'm you'd SHE'S.",
    "Grüße aus Köln — naïve café, façade; Ørsted & Æsir; ½ + ¼ = ¾.",
    "Décomposé: e\u0301te\u0301, A\u030a, n\u0303, Hangul \u1100\u1161\u11a8 (NFC composes them).",
    "Ελληνικά: Καλημέρα κόσμε. Русский: Привет, мир! Українська: Ґанок.",
    "中文：你好，世界！数学问题：12345 加 678 等于多少？",
    "日本語：こんにちは、世界。カタカナとひらがな、漢字。",
    "한국어: 안녕하세요 세계. 123 더하기 456.",
    "العربية: مرحبا بالعالم ١٢٣٤٥ و हिन्दी: नमस्ते दुनिया १२३४",
    "Emoji: 😀👍🏽 👨‍👩‍👧‍👦 🇫🇷 ✓ ★ ∑ ∫ √2 ≈ 1.41421356237",
    "Digits: 1 12 123 1234 12345 123456 1234567 3.14159 -0.000001 1e-9 0x1F 1,000,000",
    "Whitespace:  two  spaces,   three,\ttab,\t\ttwo tabs, trailing   ",
    "   leading spaces and a lone\r\nCRLF and\rCR and\n\n\nthree newlines\n",
    "line one\nline two\n  indented line\n\n",
    "Special tokens: <|endoftext|> and <|im_start|>user\nWhat is 2+2?<|im_end|>\n<think>hmm</think>",
    "DeepSeek markers: <｜begin▁of▁sentence｜>Question<｜end▁of▁sentence｜> and <｜▁pad▁｜>",
    "Unicode spaces: a\u00a0b\u2003c\u3000d\u0085e\u2028f\u200bg",
    "Code: def f(x): return x**2 + 3*x - 1  # comment\n    if (a && b) { c[i] = d->e; }",
    "URLs: https://example.com/path?q=1&r=two#frag and e-mail: someone@example.org",
    "Mixed: abc123def 4.5kg 10%off $5.99 €3,50 ¥100 #hashtag @user",
    "Quotes: «guillemets» „Anführung“ “curly” ‘single’ 'straight' \"double\"",
    "Math symbols: x² + y² = z², ∀x∈ℝ: x≥0 ⇒ √x ∈ ℝ, α+β=γ, ∞",
    "Repeated: aaaaaaaaaaaaaaaa ---------------- ================ !!!???...",
    "Tabs\tand\tnewlines\n\tat\tstart",
    "",
    " ",
    "\n",
    "a",
    "What is -12 + 7?  Let me think...\n\nIt is -5.",
]


def math_lines(per_file, split):
    out = []
    d = os.path.join(DATA, split)
    for f in sorted(os.listdir(d)):
        with open(os.path.join(d, f), encoding="utf-8") as fh:
            for i, line in enumerate(fh):
                if i >= per_file:
                    break
                out.append(line.rstrip("\n"))
    return out


def corpus():
    return math_lines(3000, "train") + EXTRA * 20


def train(tok, vocab, specials):
    tr = trainers.BpeTrainer(vocab_size=vocab, min_frequency=2, special_tokens=specials,
                             initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(corpus(), trainer=tr)
    return tok


def qwen3():
    t = Tokenizer(models.BPE())
    t.normalizer = normalizers.NFC()
    t.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN2), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)])
    t.post_processor = processors.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)
    t.decoder = decoders.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)
    train(t, 1500, ["<|endoftext|>", "<|im_start|>", "<|im_end|>"])
    from tokenizers import AddedToken
    t.add_tokens([AddedToken("<think>", special=False, normalized=False),
                  AddedToken("</think>", special=False, normalized=False)])
    return t


def deepseek3():
    t = Tokenizer(models.BPE())
    t.normalizer = normalizers.Sequence([])
    t.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Split(Regex(r), behavior="isolated", invert=False) for r in DS3] +
        [pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=False)])
    t.decoder = decoders.ByteLevel(add_prefix_space=True, trim_offsets=True, use_regex=True)
    train(t, 2000, [DS_BOS, DS_EOS, DS_PAD])
    bos = t.token_to_id(DS_BOS)
    t.post_processor = processors.TemplateProcessing(single=DS_BOS + " $A", pair=DS_BOS + " $A " + DS_BOS + " $B",
                                                     special_tokens=[(DS_BOS, bos)])
    return t


def gpt2():
    t = Tokenizer(models.BPE())
    t.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True, use_regex=True)
    t.decoder = decoders.ByteLevel()
    train(t, 1000, ["<|endoftext|>"])
    return t


def save(name, tok, string_merges=False, config=None):
    d = os.path.join(HERE, name)
    os.makedirs(d, exist_ok=True)
    js = json.loads(tok.to_str())
    if string_merges:   # the older "a b" form, as DeepSeek-V3's file has it
        js["model"]["merges"] = [" ".join(m) for m in js["model"]["merges"]]
    with open(os.path.join(d, "tokenizer.json"), "w", encoding="utf-8") as f:
        json.dump(js, f, ensure_ascii=False, separators=(",", ":"))
    if config:
        with open(os.path.join(d, "tokenizer_config.json"), "w", encoding="utf-8") as f:
            json.dump(config, f, ensure_ascii=False, indent=1)
    return Tokenizer.from_file(os.path.join(d, "tokenizer.json"))   # what moe.c will read


def main():
    toks = {
        "qwen3": save("qwen3", qwen3(), config={"bos_token": None, "eos_token": "<|im_end|>"}),
        "deepseek3": save("deepseek3", deepseek3(), string_merges=True),
        "gpt2": save("gpt2", gpt2()),
    }
    # the test text: questions and answers of every module, both splits, and the extra lines
    texts = math_lines(12, "train")[::1] + math_lines(4, "interpolate") + EXTRA
    n_tok = 0
    with open(os.path.join(HERE, "expected.jsonl"), "w", encoding="utf-8") as f:
        for text in texts:
            rec = {"text": text}
            for name, tok in toks.items():
                ids = tok.encode(text, add_special_tokens=False).ids
                rec[name] = ids
                n_tok += len(ids)
                dec = tok.decode(ids, skip_special_tokens=False)
                if dec != text:
                    rec[name + ".decoded"] = dec
            f.write(json.dumps(rec, ensure_ascii=False) + "\n")
    print(f"{len(texts)} texts, {n_tok} tokens under {len(toks)} tokenizers -> {HERE}/expected.jsonl")


if __name__ == "__main__":
    main()
