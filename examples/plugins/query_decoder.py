"""A query-based mask decoder in one file of yours (the design of MTTR / ReferFormer, in miniature).

Use it from any experiment or sweep YAML, with no edit of lvas::

    imports: [examples/plugins/query_decoder.py]      # a path (relative to the YAML) or a module name
    model:
      decoder: {name: queries, queries: 5, channels: 64, layers: 1}

``lvas list decoder --import examples/plugins/query_decoder.py`` shows it with its settings, and
every process of a sweep (workers, torchrun ranks) imports the file itself.

How it works: the stride-4 maps of the stream(s) are projected to ``channels`` and (with two
streams) fused by the configured fusion; ``queries`` learned object queries, each shifted by the
sentence vector, attend to those pixels through ``layers`` transformer decoder layers; each query
gives a mask (the dot product of its embedding with every pixel's) and a score (how well it matches
the sentence). The logits lvas trains and scores are the score-weighted sum of the query masks, so
the method's loss and every protocol apply unchanged; ``query_logits`` and ``scores`` are returned
too for a loss of your own that matches queries (Hungarian, as MTTR) instead.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from lvas.registry import DECODERS
from lvas.settings import PositiveInt

STAGE = 1  # the stride-4 map (stage 2; index 1 of the five stages)


@DECODERS.register("queries")
class QueryDecoder(nn.Module):
    """Object queries conditioned on the sentence attend to the fused stride-4 map; score-weighted masks."""

    def __init__(self, branch_specs, text_channels, sentence_channels=None, fusion=None, modulated=(), *,
                 channels: PositiveInt = 64, queries: PositiveInt = 5, layers: PositiveInt = 1,
                 heads: PositiveInt = 4) -> None:
        super().__init__()
        self.branches = list(branch_specs)
        sentence_channels = sentence_channels or text_channels * len(self.branches)
        self.proj = nn.ModuleDict({b: nn.Conv2d(specs[STAGE].channels, channels, 1)
                                   for b, specs in branch_specs.items()})
        self.fuse = fusion(channels, sentence_channels) if len(self.branches) == 2 else None
        self.queries = nn.Embedding(queries, channels)
        self.sentence = nn.Linear(sentence_channels, channels)
        layer = nn.TransformerDecoderLayer(channels, heads, dim_feedforward=2 * channels, dropout=0.0,
                                           batch_first=True)
        self.decoder = nn.TransformerDecoder(layer, layers)
        self.mask_embed = nn.Linear(channels, channels)
        self.pixel_embed = nn.Conv2d(channels, channels, 1)

    def forward(self, feats, lang, out_size):
        """feats: branch -> five maps (B, C_i, H/2^i, W/2^i); lang: the sentence (``lang.joint`` (B, C_J));
        out_size: (H, W). Returns ``logits`` (B, 1, H, W), ``query_logits`` (B, Q, H/4, W/4),
        ``scores`` (B, Q) and no auxiliary outputs."""
        maps = [self.proj[b](feats[b][STAGE]) for b in self.branches]
        x = self.fuse(maps[0], maps[1], lang.joint) if self.fuse is not None else maps[0]  # (B, D, h, w)
        b, d, h, w = x.shape
        sentence = self.sentence(lang.joint)  # (B, D)
        q = self.queries.weight[None].expand(b, -1, -1) + sentence[:, None]  # (B, Q, D)
        q = self.decoder(q, x.flatten(2).transpose(1, 2))  # (B, Q, D)
        query_logits = torch.einsum("bqd,bdhw->bqhw", self.mask_embed(q), self.pixel_embed(x)) / d ** 0.5
        scores = (q * sentence[:, None]).sum(-1) / d ** 0.5  # (B, Q)
        weights = scores.softmax(-1)[..., None, None]
        logits = (weights * query_logits).sum(1, keepdim=True)  # (B, 1, h, w)
        return {"logits": F.interpolate(logits, size=out_size, mode="bilinear", align_corners=False),
                "query_logits": query_logits, "scores": scores, "aux": []}
