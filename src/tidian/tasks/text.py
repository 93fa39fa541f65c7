"""Word-level tokenisation for text tasks: a vocabulary built on the training split only.

Deliberately simple and dependency-free (lower-case, words and punctuation): it is the input
for the zoo's embedding models. Pretrained tokenisers belong to pretrained backbones.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Sequence

import numpy as np

from tidian.exceptions import bad_value

PAD, UNK = "<pad>", "<unk>"
_TOKEN = re.compile(r"\w+|[^\w\s]", re.UNICODE)


def tokenize(text: str, *, lowercase: bool = True) -> list[str]:
    return _TOKEN.findall(text.lower() if lowercase else text)


def build_vocab(
    tokenized: Iterable[Sequence[str]], *, max_vocab: int = 20000, min_freq: int = 1
) -> tuple[str, ...]:
    """Most frequent tokens first, ties broken alphabetically (a reproducible vocabulary)."""
    if not (isinstance(max_vocab, int) and max_vocab >= 3):
        raise bad_value("max_vocab", "an integer >= 3", max_vocab)
    if not (isinstance(min_freq, int) and min_freq >= 1):
        raise bad_value("min_freq", "an integer >= 1", min_freq)
    counts = Counter(token for tokens in tokenized for token in tokens)
    ranked = sorted((t for t, c in counts.items() if c >= min_freq), key=lambda t: (-counts[t], t))
    return (PAD, UNK, *ranked[: max_vocab - 2])


def encode(tokenized: Sequence[Sequence[str]], vocab: Sequence[str], *, max_len: int) -> np.ndarray:
    """Token lists → int64 ids (n, max_len): truncated, right-padded with 0, unknown → 1."""
    index = {token: i for i, token in enumerate(vocab)}
    ids = np.zeros((len(tokenized), max_len), dtype=np.int64)
    for row, tokens in enumerate(tokenized):
        coded = [index.get(t, 1) for t in tokens[:max_len]]
        ids[row, : len(coded)] = coded
    return ids
