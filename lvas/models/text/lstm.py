"""LBDT's text encoder ``lstm``: one LSTM over the word vectors, shared by both streams; the
sentence is the sum of its outputs over all N positions (padding included, as the release).
"""

from __future__ import annotations

from typing import Sequence
import numpy as np
import torch
from torch import nn
from lvas.models.text.gru import SharedTextEncoder
from lvas.registry import TEXT_ENCODERS
from lvas.settings import PositiveInt


@TEXT_ENCODERS.register("lstm")
class LSTMTextEncoder(SharedTextEncoder):
    """Word vectors + one LSTM shared by both streams (LBDT); sentence = sum over all positions."""

    shared_sentence = True

    def __init__(self, vocab_size: int, embed_dim: int = 300, branches: Sequence[str] = ("spatial", "temporal"),
                 embeddings: np.ndarray | None = None, frozen_embedding: bool = True, *,
                 hidden: PositiveInt = 512) -> None:
        super().__init__(vocab_size, embed_dim, branches, embeddings, frozen_embedding)
        self.lstm = nn.LSTM(embed_dim, hidden, num_layers=1, batch_first=True)
        self.out_channels = hidden

    @staticmethod
    def sentence(words: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(B, N, C) -> (B, C): the sum over all N positions (the release sums padding outputs too)."""
        return words.sum(1)

    def words(self, embedded: torch.Tensor) -> torch.Tensor:
        """(B, N, E) -> (B, N, C): the LSTM's outputs at every position."""
        return self.lstm(embedded)[0]
