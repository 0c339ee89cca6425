"""CSTM's text encoders (§4.2): ``gru`` -- one GRU per visual encoder over the word vectors;
``gru_released`` -- the released code's single GRU shared by both streams. ``SharedTextEncoder``
is the base of every text encoder whose one sequence model serves both streams (LBDT, ACGA).
"""

from __future__ import annotations

from typing import Sequence
import numpy as np
import torch
from torch import nn
from lvas.registry import TEXT_ENCODERS
from lvas.settings import PositiveInt
from lvas.models.text.glove import _embedding


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
