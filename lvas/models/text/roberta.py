"""RoBERTa (Liu et al., 2019) as a text encoder, through Hugging Face ``transformers``, read from a
local folder -- ReferFormer's and MTTR's language model.

The folder holds what ``save_pretrained`` writes (``config.json``, the weights, and the tokenizer's
``vocab.json`` + ``merges.txt`` / ``tokenizer.json``); nothing is downloaded. Queries reach the model
already tokenised by the folder's own tokenizer (``model.text.tokenizer: subword`` with
``model.text.tokenizer_path`` naming the same folder; lvas/data/vocab.py). As ReferFormer:

    words    = resizer(last_hidden_state)         (B, N, C)
    sentence = resizer(pooler_output)             (B, C), the pooled <s> token
    resizer  = Dropout(LayerNorm_eps=1e-12(Linear(hidden -> C)))

``frozen: true`` (the released recipe's ``--freeze_text_encoder``) keeps RoBERTa fixed: no gradient,
and kept in eval mode; the resizer is always trained. ``pretrained: false`` builds RoBERTa with random
weights from the folder's ``config.json`` (roberta-base's when there is none).
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import nn

from lvas.registry import TEXT_ENCODERS
from lvas.settings import NonNegativeFloat, PositiveInt


class FeatureResizer(nn.Module):
    """Linear -> LayerNorm (eps 1e-12) -> Dropout (ReferFormer's ``FeatureResizer``)."""

    def __init__(self, cin: int, cout: int, dropout: float) -> None:
        super().__init__()
        self.fc = nn.Linear(cin, cout, bias=True)
        self.layer_norm = nn.LayerNorm(cout, eps=1e-12)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.layer_norm(self.fc(x)))


def load_roberta(path: str | None, load_weights: bool = True) -> nn.Module:
    """RobertaModel from the local folder ``path``: its weights, or (``load_weights`` False: FLOP
    counts, a checkpoint whose weights replace them, ``pretrained: false``) only its architecture --
    the folder's ``config.json``, or roberta-base's when the folder has none. Errors name the folder."""
    from transformers import RobertaConfig, RobertaModel

    folder = Path(path) if path else None
    has_config = folder is not None and (folder / "config.json").is_file()
    if not load_weights:
        config = RobertaConfig.from_pretrained(str(folder), local_files_only=True) if has_config else RobertaConfig()
        return RobertaModel(config)
    if not has_config:
        raise FileNotFoundError(f"model.text.path {folder}: no config.json there (expected the folder "
                                f"`save_pretrained` writes, e.g. weights/roberta-base, or pretrained: false)")
    try:
        return RobertaModel.from_pretrained(str(folder), local_files_only=True)
    except OSError as e:
        raise FileNotFoundError(f"model.text.path {folder}: {str(e).splitlines()[0][:200]}") from None


@TEXT_ENCODERS.register("roberta")
class RobertaTextEncoder(nn.Module):
    """RoBERTa from a local folder + ReferFormer's resizer to ``channels``; one sentence for every stream.

    Args (wiring, unused: RoBERTa has its own vocabulary and embeddings): vocab_size, embed_dim,
        branches, embeddings, frozen_embedding.
    """

    shared_sentence = True

    def __init__(self, vocab_size: int = 0, embed_dim: int = 0, branches: Sequence[str] = ("temporal",),
                 embeddings: np.ndarray | None = None, frozen_embedding: bool = False, *,
                 path: str | None = None, frozen: bool = True, channels: PositiveInt = 256,
                 dropout: NonNegativeFloat = 0.1, pretrained: bool = True) -> None:
        super().__init__()
        self.branches = tuple(branches)
        self.text_encoder = load_roberta(path, load_weights=pretrained)
        self.resizer = FeatureResizer(self.text_encoder.config.hidden_size, channels, dropout)
        self.frozen = frozen
        if frozen:
            self.text_encoder.requires_grad_(False)
        self.out_channels = channels

    def train(self, mode: bool = True) -> "RobertaTextEncoder":
        super().train(mode)
        if self.frozen:
            self.text_encoder.eval()
        return self

    def branch_keys(self, branch: str) -> tuple[str, ...]:
        return ("text_encoder.", "resizer.")

    def encode(self, tokens: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Words and sentence at once (what :meth:`lvas.models.model.SegmentationModel.language` asks a
        text encoder that has ``encode``).

        Args:
            tokens: (B, N) token ids of the folder's tokenizer; mask: (B, N) True for real tokens.

        Returns:
            words (B, N, C), sentence (B, C).
        """
        # (on the meta device a mask has no values, and transformers reads them to pick its attention
        # kernel: shapes are computed without it)
        attention = None if tokens.is_meta else mask.long()
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.frozen):
            out = self.text_encoder(input_ids=tokens, attention_mask=attention)
        return self.resizer(out.last_hidden_state), self.resizer(out.pooler_output)

    def forward(self, tokens: torch.Tensor, mask: torch.Tensor) -> dict[str, torch.Tensor]:
        """branch -> (B, N, C) word features (the same tensor for every branch)."""
        words = self.encode(tokens, mask)[0]
        return {b: words for b in self.branches}
