"""ACGA's text encoder ``conv1d``: word vectors -> Conv1d(k = 3) -> Tanh over all N positions; the
sentence is the max over positions (the release's ``MaxPool1d(sentence_length)``).
"""

from __future__ import annotations

from typing import Sequence
import numpy as np
import torch
from torch import nn
from lvas.models.text.gru import SharedTextEncoder
from lvas.registry import TEXT_ENCODERS


@TEXT_ENCODERS.register("conv1d")
class Conv1dTextEncoder(SharedTextEncoder):
    """Word vectors -> Conv1d(k = 3, same width) -> Tanh (ACGA); sentence = max over all positions."""

    shared_sentence = True

    def __init__(self, vocab_size: int, embed_dim: int = 300, branches: Sequence[str] = ("temporal",),
                 embeddings: np.ndarray | None = None, frozen_embedding: bool = True) -> None:
        super().__init__(vocab_size, embed_dim, branches, embeddings, frozen_embedding)
        self.conv = nn.Conv1d(embed_dim, embed_dim, 3, padding=1)
        self.out_channels = embed_dim  # the release keeps the word width

    @staticmethod
    def sentence(words: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(B, N, E) -> (B, E): the max over all N positions (the release pools padding too)."""
        return words.amax(1)

    def words(self, embedded: torch.Tensor) -> torch.Tensor:
        """(B, N, E) -> (B, N, E): Conv1d (k = 3) over the words, Tanh."""
        return torch.tanh(self.conv(embedded.transpose(1, 2))).transpose(1, 2)
