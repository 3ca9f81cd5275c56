"""Files of a tiny CLIP tokenizer, written locally (no hub): a byte-level BPE vocabulary of the
256 byte symbols (alone and word-final), a few hundred merges learned from nothing but a fixed
word list, and the two special tokens. The content is a pure function of the word list, so the
files are byte-identical on every run."""

from __future__ import annotations

import json
from pathlib import Path

WORDS = (
    "a an the of and with red green blue yellow white black orange purple sphere blob cube "
    "cylinder cone capsule "
    "torus rock stone tree house chair mug vase apple shiny matte smooth rough small large "
    "round soft glowing wooden metal glass photo render"
).split()


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's reversible byte -> printable unicode character table."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, (chr(c) for c in cs)))


def _apply(symbols: list[str], ranks: dict[tuple[str, str], int]) -> list[str]:
    """Byte-pair encoding of one word: merge the adjacent pair of lowest rank until none is left."""
    while len(symbols) > 1:
        pairs = [(ranks.get(pair, len(ranks)), i) for i, pair in enumerate(zip(symbols, symbols[1:]))]
        rank, i = min(pairs)
        if rank == len(ranks):
            break
        symbols = symbols[:i] + [symbols[i] + symbols[i + 1]] + symbols[i + 2:]
    return symbols


def _merges(words: tuple[str, ...]) -> list[tuple[str, str]]:
    """Merges that make every word one token (ending in ``</w>``): each word is encoded with the
    merges so far, and what is left of it is merged left to right by new merges, which rank after
    every earlier one and so never change how an earlier word is encoded."""
    merges: list[tuple[str, str]] = []
    ranks: dict[tuple[str, str], int] = {}
    for word in words:
        symbols = _apply(list(word[:-1]) + [word[-1] + "</w>"], ranks)
        while len(symbols) > 1:
            pair = (symbols[0], symbols[1])
            ranks[pair] = len(merges)
            merges.append(pair)
            symbols = [symbols[0] + symbols[1]] + symbols[2:]
    return merges


def write_clip_tokenizer(folder: Path, max_length: int = 16) -> int:
    """Write vocab.json, merges.txt, special_tokens_map.json, tokenizer_config.json; return the
    vocabulary size."""
    folder.mkdir(parents=True, exist_ok=True)
    chars = list(bytes_to_unicode().values())
    tokens = chars + [c + "</w>" for c in chars]
    merges = _merges(WORDS)
    for a, b in merges:
        tokens.append(a + b)
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    vocab = {}
    for token in tokens:
        vocab.setdefault(token, len(vocab))
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False, sort_keys=False) + "\n", encoding="utf-8")
    lines = ["#version: 0.2"] + [f"{a} {b}" for a, b in merges]
    (folder / "merges.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    specials = {"bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>",
                "pad_token": "<|endoftext|>", "unk_token": "<|endoftext|>"}
    (folder / "special_tokens_map.json").write_text(json.dumps(specials, indent=2, sort_keys=True) + "\n")
    config = dict(specials, model_max_length=max_length, tokenizer_class="CLIPTokenizer",
                  do_lower_case=True, errors="replace", clean_up_tokenization_spaces=True)
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    return len(vocab)
