"""Query tokenisation and vocabulary, shared by the datasets and the text encoder.

Queries are lower-cased, split into words (letters, digits and apostrophes), cut to
``max_words`` (20, as in the paper) and padded; index 0 is padding, 1 unknown.
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Iterable, Sequence

import torch

PAD, UNK = "<pad>", "<unk>"
_WORD = re.compile(r"[a-z0-9']+")


def tokenize(text: str) -> list[str]:
    """Lower-case words of a query: ``"A man, jumping!"`` -> ``["a", "man", "jumping"]``."""
    return _WORD.findall(text.lower())


class Vocabulary:
    """Word <-> index map with ``<pad>`` = 0 and ``<unk>`` = 1."""

    def __init__(self, words: Sequence[str]) -> None:
        words = [w for w in words if w not in (PAD, UNK)]
        self.itos: list[str] = [PAD, UNK, *words]
        self.stoi: dict[str, int] = {w: i for i, w in enumerate(self.itos)}
        if len(self.stoi) != len(self.itos):
            raise ValueError("vocabulary words must be unique")

    @classmethod
    def build(cls, queries: Iterable[str], min_count: int = 1) -> "Vocabulary":
        """A vocabulary of every word seen at least ``min_count`` times, most frequent first."""
        counts = Counter(w for q in queries for w in tokenize(q))
        return cls([w for w, c in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])) if c >= min_count])

    def __len__(self) -> int:
        return len(self.itos)

    def encode(self, text: str, max_words: int = 20) -> tuple[torch.Tensor, torch.Tensor]:
        """Token ids and padding mask of one query.

        Returns:
            ids (max_words,) long, mask (max_words,) bool (True for real words; at least one,
            an empty query becomes a single ``<unk>``).
        """
        words = tokenize(text)[:max_words] or [UNK]
        ids = torch.zeros(max_words, dtype=torch.long)
        ids[: len(words)] = torch.tensor([self.stoi.get(w, 1) for w in words])
        mask = torch.zeros(max_words, dtype=torch.bool)
        mask[: len(words)] = True
        return ids, mask
