"""Query tokenisation and vocabulary, shared by the datasets and the text encoder.

Two tokenisers (``model.text.tokenizer``): ``words`` lower-cases and keeps words (letters, digits
and apostrophes); ``released`` is the released CSTM code's: split on runs of non-word characters
*keeping* them as tokens (``"man's, red"`` -> ``man ' s , red``), drop single spaces and a final
``.``. Queries are cut to ``max_words`` (20, as in the paper) and padded; index 0 is padding, 1
unknown.
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Iterable, Sequence

import torch

PAD, UNK = "<pad>", "<unk>"
_WORD = re.compile(r"[a-z0-9']+")
_RELEASED_SPLIT = re.compile(r"(\W+)")


def tokenize(text: str) -> list[str]:
    """Lower-case words of a query: ``"A man, jumping!"`` -> ``["a", "man", "jumping"]``."""
    return _WORD.findall(text.lower())


def tokenize_released(text: str) -> list[str]:
    """The released CSTM tokeniser: ``"A man, jumping."`` -> ``["a", "man", ", ", "jumping"]``."""
    words = [w.lower() for w in _RELEASED_SPLIT.split(text.strip()) if w and w != " "]
    if words and words[-1] == ".":
        words = words[:-1]
    return words


TOKENIZERS = {"words": tokenize, "released": tokenize_released}


def require_words(queries: Iterable[str], path, first_row: int = 2) -> None:
    """Every query must name something: one with no word (empty, or punctuation only) cannot be
    encoded (its sentence vector would average nothing). Raises DataError naming the file, how many
    and the first row."""
    from lvas.errors import DataError

    bad = [i for i, q in enumerate(queries) if not tokenize(str(q))]
    if bad:
        raise DataError(path, f"{len(bad)} quer{'y has' if len(bad) == 1 else 'ies have'} no words (the first at row "
                              f"{bad[0] + first_row}): a query names the actor to segment")


class Vocabulary:
    """Word <-> index map with ``<pad>`` = 0 and ``<unk>`` = 1."""

    def __init__(self, words: Sequence[str], tokenizer: str = "words") -> None:
        if tokenizer not in TOKENIZERS:
            raise ValueError(f"tokenizer {tokenizer!r}: expected one of {', '.join(TOKENIZERS)}")
        self.tokenizer = tokenizer
        words = [w for w in words if w not in (PAD, UNK)]
        self.itos: list[str] = [PAD, UNK, *words]
        self.stoi: dict[str, int] = {w: i for i, w in enumerate(self.itos)}
        if len(self.stoi) != len(self.itos):
            raise ValueError("vocabulary words must be unique")

    @classmethod
    def build(cls, queries: Iterable[str], min_count: int = 1, tokenizer: str = "words") -> "Vocabulary":
        """A vocabulary of every word seen at least ``min_count`` times, most frequent first."""
        split = TOKENIZERS[tokenizer]
        counts = Counter(w for q in queries for w in split(q))
        return cls([w for w, c in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])) if c >= min_count],
                   tokenizer)

    def __len__(self) -> int:
        return len(self.itos)

    def encode(self, text: str, max_words: int = 20) -> tuple[torch.Tensor, torch.Tensor]:
        """Token ids and padding mask of one query.

        Returns:
            ids (max_words,) long, mask (max_words,) bool (True for real words; at least one,
            an empty query becomes a single ``<unk>``).
        """
        words = TOKENIZERS[self.tokenizer](text)[:max_words] or [UNK]
        ids = torch.zeros(max_words, dtype=torch.long)
        ids[: len(words)] = torch.tensor([self.stoi.get(w, 1) for w in words])
        mask = torch.zeros(max_words, dtype=torch.bool)
        mask[: len(words)] = True
        return ids, mask


def with_words_of(vocab: Vocabulary, queries: Iterable[str]) -> Vocabulary:
    """``vocab`` plus every new word of ``queries`` (appended, so existing ids keep their rows).

    For a fixed word-vector table only (the released code looks every word up in GloVe, with no
    vocabulary); a learned embedding has no row to give a new word.
    """
    split = TOKENIZERS[vocab.tokenizer]
    extra = dict.fromkeys(w for q in queries for w in split(q) if w not in vocab.stoi)
    return Vocabulary([*vocab.itos[2:], *extra], vocab.tokenizer)
