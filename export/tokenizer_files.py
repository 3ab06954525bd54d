"""A small CLIP byte-level BPE tokenizer (vocab.json + merges.txt), learned in code from a built-in corpus."""
from __future__ import annotations

import collections
import json
from pathlib import Path

# Words the demo and tests use, so that common prompts tokenize into multi-character pieces.
_CORPUS = (
    "a an the of with and in on at by photo painting picture drawing image of an astronaut riding horse "
    "elephant cat dog bird car tree house mountain river sky sunset beach city street forest snow winter "
    "summer red green blue yellow black white orange purple small large old young happy portrait style "
    "oil watercolor sketch cartoon realistic high quality detailed lake boat flower field night day "
    "wearing hat glasses sitting standing running on top under next to"
)
BOS, EOS = "<|startoftext|>", "<|endoftext|>"


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's reversible byte -> printable-unicode table (256 entries)."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    printable += list(range(ord("®"), ord("ÿ") + 1))
    codes = printable[:]
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            codes.append(256 + extra)
            extra += 1
    return dict(zip(printable, (chr(c) for c in codes)))


def _word_symbols(word: str, table: dict[int, str]) -> tuple[str, ...]:
    chars = [table[b] for b in word.encode("utf-8")]
    return tuple(chars[:-1] + [chars[-1] + "</w>"])


def learn_merges(corpus: str, num_merges: int) -> list[tuple[str, str]]:
    """Plain BPE training: repeatedly merge the most frequent adjacent pair (ties broken by the pair itself)."""
    table = bytes_to_unicode()
    words = collections.Counter(_word_symbols(w, table) for w in corpus.lower().split())
    merges: list[tuple[str, str]] = []
    for _ in range(num_merges):
        pairs: collections.Counter[tuple[str, str]] = collections.Counter()
        for symbols, count in words.items():
            for pair in zip(symbols, symbols[1:]):
                pairs[pair] += count
        if not pairs:
            break
        best = min(pairs, key=lambda p: (-pairs[p], p))
        merges.append(best)
        words = collections.Counter({_merge(s, best): c for s, c in words.items()})
    return merges


def _merge(symbols: tuple[str, ...], pair: tuple[str, str]) -> tuple[str, ...]:
    out: list[str] = []
    i = 0
    while i < len(symbols):
        if i + 1 < len(symbols) and (symbols[i], symbols[i + 1]) == pair:
            out.append(symbols[i] + symbols[i + 1])
            i += 2
        else:
            out.append(symbols[i])
            i += 1
    return tuple(out)


def build_vocab(merges: list[tuple[str, str]]) -> dict[str, int]:
    """CLIP's vocab layout: 256 byte symbols, the same with '</w>', one entry per merge, then BOS and EOS."""
    symbols = list(bytes_to_unicode().values())
    tokens = symbols + [s + "</w>" for s in symbols] + ["".join(m) for m in merges] + [BOS, EOS]
    vocab: dict[str, int] = {}
    for token in tokens:
        vocab.setdefault(token, len(vocab))
    return vocab


def write_tokenizer(folder: Path, num_merges: int = 256) -> None:
    """Write vocab.json, merges.txt and the tokenizer configs that CLIPTokenizer.from_pretrained reads."""
    folder.mkdir(parents=True, exist_ok=True)
    merges = learn_merges(_CORPUS, num_merges)
    vocab = build_vocab(merges)
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    lines = ["#version: 0.2"] + [f"{a} {b}" for a, b in merges]
    (folder / "merges.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    config = {
        "tokenizer_class": "CLIPTokenizer",
        "model_max_length": 77,
        "bos_token": BOS,
        "eos_token": EOS,
        "unk_token": EOS,
        "pad_token": EOS,
        "do_lower_case": True,
    }
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
    special = {"bos_token": BOS, "eos_token": EOS, "unk_token": EOS, "pad_token": EOS}
    (folder / "special_tokens_map.json").write_text(json.dumps(special, indent=2), encoding="utf-8")
