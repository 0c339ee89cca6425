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
from pathlib import Path
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


class SubwordVocabulary:
    """A pretrained subword tokenizer read from a local folder (``model.text.tokenizer: subword``,
    ``model.text.tokenizer_path``): RoBERTa's byte-level BPE for ReferFormer and MTTR, through Hugging
    Face ``transformers`` (``vocab.json`` + ``merges.txt``, or ``tokenizer.json``). ``encode`` gives
    the ids of ``<s> query </s>`` padded with the tokenizer's pad id, and the mask of real tokens, as
    the releases' ``batch_encode_plus(..., padding="longest")`` (the padding length does not change a
    masked model's outputs). Nothing of it is stored in a checkpoint (``itos`` holds only the two
    markers): the config names the folder."""

    def __init__(self, path: str | None) -> None:
        from lvas.data.errors import DataError

        if not path:
            raise DataError("model.text.tokenizer_path", "required when model.text.tokenizer is subword (the folder "
                                                         "of the text model's tokenizer files)")
        folder = Path(path)
        if not folder.is_dir():
            raise DataError(folder, "tokenizer folder not found (model.text.tokenizer_path)")
        from transformers import AutoTokenizer

        try:
            self.tok = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
        except (OSError, ValueError, TypeError) as e:
            raise DataError(folder, f"not a tokenizer folder ({str(e).splitlines()[0][:160]})") from None
        self.path = str(folder)
        self.tokenizer = "subword"
        self.itos = [PAD, UNK]
        self.pad_id = self.tok.pad_token_id if self.tok.pad_token_id is not None else 0

    def __len__(self) -> int:
        return len(self.tok)

    def encode(self, text: str, max_words: int = 20) -> tuple[torch.Tensor, torch.Tensor]:
        """ids (max_words,) long and mask (max_words,) bool of ``<s> text </s>``, cut to ``max_words``."""
        ids = self.tok(" ".join(text.lower().split()), truncation=True, max_length=max_words)["input_ids"]
        out = torch.full((max_words,), self.pad_id, dtype=torch.long)
        out[: len(ids)] = torch.tensor(ids, dtype=torch.long)
        mask = torch.zeros(max_words, dtype=torch.bool)
        mask[: len(ids)] = True
        return out, mask


def vocabulary(text_keys, itos: Sequence[str] | None = None):
    """The vocabulary a config's queries are encoded with: the subword tokenizer of
    ``model.text.tokenizer_path``, or (words / released) the stored word list ``itos`` (None: the
    dataset builds it from its training queries)."""
    if text_keys.tokenizer == "subword":
        return SubwordVocabulary(text_keys.tokenizer_path)
    return None if itos is None else Vocabulary(list(itos)[2:], text_keys.tokenizer)


def write_byte_bpe_tokenizer(folder, model_max_length: int = 512):
    """A byte-level BPE tokenizer of RoBERTa's form with no merges (every byte its own token): the
    real file format, read by the real loader, for tests and paper-size runs that must not download
    roberta-base's. Returns ``folder``."""
    import json

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    specials = ["<s>", "<pad>", "</s>", "<unk>"]
    vocab = {t: i for i, t in enumerate(specials)}
    for ch in byte_characters():
        vocab.setdefault(ch, len(vocab))
    vocab["<mask>"] = len(vocab)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    (folder / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "RobertaTokenizer",
                                                              "model_max_length": model_max_length}))
    (folder / "special_tokens_map.json").write_text(json.dumps(
        {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "sep_token": "</s>", "pad_token": "<pad>",
         "cls_token": "<s>", "mask_token": "<mask>"}))
    return folder


def byte_characters() -> list[str]:
    """The 256 printable characters byte-level BPE (GPT-2, RoBERTa) writes bytes as: printable Latin-1
    bytes stand for themselves, the others are shifted past 255, in byte order."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("\xa1"), ord("\xac") + 1), *range(ord("\xae"), ord("\xff") + 1)]
    out, extra = {}, 0
    for b in range(256):
        if b in keep:
            out[b] = chr(b)
        else:
            out[b] = chr(256 + extra)
            extra += 1
    return [out[b] for b in range(256)]
