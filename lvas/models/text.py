"""Text encoder: word embeddings (GloVe-300d or learned) and one GRU per visual encoder (§4.2)."""

from __future__ import annotations

import hashlib
import io
import zipfile
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from lvas.registry import TEXT_ENCODERS
from lvas.settings import PositiveInt


def _glove_lines(path: Path):
    if path.suffix == ".zip":
        with zipfile.ZipFile(path) as zf:
            members = [n for n in zf.namelist() if n.endswith(".txt")]
            if not members:
                raise ValueError(f"{path}: no .txt file inside the zip archive")
            with zf.open(members[0]) as raw:
                yield from io.TextIOWrapper(raw, encoding="utf-8", errors="replace")
    else:
        with open(path, encoding="utf-8", errors="replace") as fh:
            yield from fh


def load_glove(path: str | Path, words: Sequence[str], dim: int = 300, cache_dir: str | Path | None = None,
               seed: int = 0, oov: str = "random") -> tuple[np.ndarray, int]:
    """Rows of a GloVe text file (``glove.840B.300d.txt`` or a ``.zip`` holding it) for ``words``.

    Only the vocabulary's rows are kept. Words GloVe lacks get small random vectors (``oov:
    random``) or zeros (``oov: zero``, what the released code's torchtext lookup gives); row 0
    (padding) is zero. The result is cached as ``.npy`` in ``cache_dir`` (keyed by the file and
    the vocabulary) so the 5 GB text file is read once.

    Returns:
        (len(words), dim) float32 matrix, number of words found in GloVe.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"GloVe file {path} not found (expected glove.840B.300d.txt or .zip)")
    if oov not in ("random", "zero"):
        raise ValueError(f"oov: expected 'random' or 'zero', got {oov!r}")
    key = hashlib.sha256(("\n".join(words) + f"|{path.resolve()}|{dim}|{oov}").encode()).hexdigest()[:16]
    cache = Path(cache_dir) / f"glove_{key}.npy" if cache_dir is not None else None
    if cache is not None and cache.is_file():
        data = np.load(cache, allow_pickle=False)
        return data[1:].astype(np.float32).reshape(len(words), dim), int(data[0, 0])
    index = {w: i for i, w in enumerate(words)}
    rng = np.random.default_rng(seed)
    out = rng.normal(0.0, 0.3, size=(len(words), dim)).astype(np.float32)
    if oov == "zero":
        out[:] = 0.0
    found = np.zeros(len(words), dtype=bool)
    for lineno, line in enumerate(_glove_lines(path), start=1):
        parts = line.rstrip("\n").rstrip(" ").split(" ")
        if len(parts) < dim + 1:
            raise ValueError(f"{path}:{lineno}: expected a word and {dim} numbers, got {len(parts)} fields")
        word = " ".join(parts[:-dim])  # a few glove.840B tokens contain spaces
        i = index.get(word)
        if i is None or found[i]:
            continue
        out[i] = np.asarray(parts[-dim:], dtype=np.float32)
        found[i] = True
    if len(words):
        out[0] = 0.0  # padding
    n_found = int(found.sum())
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        header = np.zeros((1, dim), dtype=np.float32)
        header[0, 0] = n_found
        tmp = cache.with_suffix(".tmp.npy")
        np.save(tmp, np.concatenate([header, out]))
        tmp.replace(cache)
    return out, n_found


class FrozenEmbedding(nn.Module):
    """A fixed word-vector table (the release looks GloVe vectors up, it does not train them).

    The table is a buffer: saved with the model, not a parameter (so not counted or trained).
    """

    def __init__(self, vectors: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("weight", vectors)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens (B, N) ids -> (B, N, D)."""
        return F.embedding(tokens, self.weight)


def _embedding(vocab_size: int, embed_dim: int, embeddings: np.ndarray | None, frozen: bool) -> nn.Module:
    if embeddings is not None and embeddings.shape != (vocab_size, embed_dim):
        raise ValueError(f"embedding matrix {embeddings.shape} != ({vocab_size}, {embed_dim})")
    if frozen:
        table = torch.zeros(vocab_size, embed_dim) if embeddings is None else torch.from_numpy(embeddings).float()
        return FrozenEmbedding(table)
    emb = nn.Embedding(vocab_size, embed_dim, padding_idx=0)
    if embeddings is not None:
        with torch.no_grad():
            emb.weight.copy_(torch.from_numpy(embeddings))
    return emb


@TEXT_ENCODERS.register("gru")
class GRUTextEncoder(nn.Module):
    """One word embedding and one GRU per visual branch (paper §4.2), words past the query zeroed.

    Each branch owns its embedding, so a network trained alone in stage 1 keeps exactly the
    word vectors it was trained with when stage 2 combines the two (``branch_keys``).
    """

    def __init__(self, vocab_size: int, embed_dim: int = 300, branches: Sequence[str] = ("spatial", "temporal"),
                 embeddings: np.ndarray | None = None, frozen_embedding: bool = False, *,
                 hidden: PositiveInt = 512) -> None:
        super().__init__()
        self.embedding = nn.ModuleDict({b: _embedding(vocab_size, embed_dim, embeddings, frozen_embedding)
                                        for b in branches})
        self.grus = nn.ModuleDict({b: nn.GRU(embed_dim, hidden, batch_first=True) for b in branches})
        self.out_channels = hidden

    @staticmethod
    def branch_keys(branch: str) -> tuple[str, ...]:
        """State-dict prefixes (inside this module) that belong to ``branch`` alone."""
        return (f"embedding.{branch}.", f"grus.{branch}.")

    @staticmethod
    def sentence(words: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(B, N, C) -> (B, C): the mean over real words (paper §3.2)."""
        return sentence_vector(words, mask)

    def forward(self, tokens: torch.Tensor, mask: torch.Tensor) -> dict[str, torch.Tensor]:
        """Per-word features for each branch.

        Args:
            tokens: (B, N) word ids, 0 = padding.
            mask: (B, N) bool, True for real words.

        Returns:
            branch -> (B, N, C_L) word features (zero at padding).
        """
        # Queries are left-aligned, so a forward GRU's outputs at real words do not depend on
        # the padding after them: no packing needed (which also keeps it traceable on "meta").
        keep = mask.unsqueeze(-1)
        out = {}
        for branch, gru in self.grus.items():
            emb = self.embedding[branch](tokens)
            out[branch] = gru(emb)[0] * keep.to(emb.dtype)
        return out


class SharedTextEncoder(nn.Module):
    """Base of the text encoders whose one set of word features serves every branch (CSTM's
    release, LBDT, ACGA): the word table, the branches, every parameter claimed by every branch,
    and a ``forward`` that hands :meth:`words` to each branch. A subclass adds its layers after
    ``super().__init__`` and defines ``words`` (and ``sentence``)."""

    def __init__(self, vocab_size: int, embed_dim: int, branches: Sequence[str], embeddings: np.ndarray | None,
                 frozen_embedding: bool) -> None:
        super().__init__()
        self.branches = tuple(branches)
        self.embedding = _embedding(vocab_size, embed_dim, embeddings, frozen_embedding)

    def branch_keys(self, branch: str) -> tuple[str, ...]:
        """Everything is shared: every branch claims every sub-module's keys."""
        return tuple(f"{name}." for name, _ in self.named_children())

    def words(self, embedded: torch.Tensor) -> torch.Tensor:
        """(B, N, E) word vectors -> (B, N, C) word features."""
        raise NotImplementedError

    def forward(self, tokens: torch.Tensor, mask: torch.Tensor) -> dict[str, torch.Tensor]:
        """tokens, mask: (B, N). Returns branch -> (B, N, C), the same tensor for every branch."""
        words = self.words(self.embedding(tokens))
        return {b: words for b in self.branches}


@TEXT_ENCODERS.register("gru_released")
class ReleasedGRUTextEncoder(SharedTextEncoder):
    """The released CSTM text encoder: one GRU without bias + LayerNorm + Tanh, shared by both branches.

    It runs over all N positions (padding included) and keeps their outputs, as the release does.
    With GloVe the vectors are a fixed table (unknown words and padding are zero vectors).
    """

    def __init__(self, vocab_size: int, embed_dim: int = 300, branches: Sequence[str] = ("spatial", "temporal"),
                 embeddings: np.ndarray | None = None, frozen_embedding: bool = True, *,
                 hidden: PositiveInt = 512) -> None:
        super().__init__(vocab_size, embed_dim, branches, embeddings, frozen_embedding)
        self.gru = nn.GRU(embed_dim, hidden, bias=False, batch_first=True)
        self.norm = nn.Sequential(nn.LayerNorm(hidden), nn.Tanh())
        self.out_channels = hidden

    @staticmethod
    def sentence(words: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(B, N, C) -> (B, C): the mean over real words."""
        return sentence_vector(words, mask)

    def words(self, embedded: torch.Tensor) -> torch.Tensor:
        """(B, N, E) -> (B, N, C_L): GRU over all positions, LayerNorm, Tanh."""
        return self.norm(self.gru(embedded)[0])


def sentence_vector(words: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of the word features over real words: (B, N, C) -> (B, C)."""
    m = mask.to(words.dtype).unsqueeze(-1)
    return (words * m).sum(1) / m.sum(1).clamp(min=1.0)
