"""The assembled model: a composition of registered parts, wired by their declared shapes.

``build_model`` reads a config and picks one entry from each family: spatial / temporal encoder,
text encoder, cross-modal module (CMAM form) at chosen stages, fusion, decoder and input
pipeline. ``CSTM`` only runs them in order; it knows no variant by name.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from torch import nn

from lvas.models.base import StagedEncoder
from lvas.models.inputs import input_spec
from lvas.models.text import sentence_vector
from lvas.registry import CROSS_MODAL, DECODERS, SPATIAL_ENCODERS, TEMPORAL_ENCODERS, TEXT_ENCODERS

BRANCHES = ("spatial", "temporal")


class CSTM(nn.Module):
    """Collaborative Spatial-Temporal Modeling (CVPR 2021) as swappable parts.

    Top-level children are the parts of the FLOPs breakdown: ``spatial`` / ``temporal``
    (encoders), ``text``, ``cmam`` (``cmam.spatial.<stage>``, ``cmam.temporal.<stage>``) and
    ``decoder`` (projections, fusion, top-down path, heads).

    Args:
        spatial: 2D encoder of the target frame, or None (temporal-only mode).
        temporal: 3D encoder of the clip, or None (spatial-only mode).
        text: text encoder giving word features per present branch.
        cmam: branch -> {stage: cross-modal module} (empty dicts for no CMAM).
        decoder: a DECODERS module over the present branches.
    """

    def __init__(self, spatial: StagedEncoder | None, temporal: StagedEncoder | None, text: nn.Module,
                 cmam: dict[str, dict[int, nn.Module]], decoder: nn.Module) -> None:
        super().__init__()
        if spatial is None and temporal is None:
            raise ValueError("CSTM needs at least one encoder")
        self.spatial = spatial
        self.temporal = temporal
        self.text = text
        self.cmam = nn.ModuleDict({b: nn.ModuleDict({str(i): m for i, m in cmam.get(b, {}).items()})
                                   for b in self.encoders()})
        self.decoder = decoder

    @property
    def mode(self) -> str:
        return "both" if len(self.encoders()) == 2 else next(iter(self.encoders()))

    def encoders(self) -> dict[str, StagedEncoder]:
        return {b: e for b, e in (("spatial", self.spatial), ("temporal", self.temporal)) if e is not None}

    def branch_keys(self, branch: str) -> tuple[str, ...]:
        """State-dict prefixes of everything ``branch`` is trained with: encoder, CMAMs, text parts."""
        return (f"{branch}.", f"cmam.{branch}.", *(f"text.{k}" for k in self.text.branch_keys(branch)))

    def encode(self, clip: torch.Tensor, tokens: torch.Tensor, mask: torch.Tensor):
        """Target-frame features of each branch after its CMAMs, and its sentence vector.

        Args:
            clip: (B, 3, T, H, W) RGB in [0, 1]; the target frame is index T // 2.
            tokens: (B, N) word ids (0 = padding).
            mask: (B, N) bool, True for real words.

        Returns:
            (feats, sentences): branch -> five maps (B, C_i, H/2^i, W/2^i); branch -> (B, C_L).
        """
        words = self.text(tokens, mask)
        target = clip.shape[2] // 2
        feats, sentences = {}, {}
        for b, enc in self.encoders().items():
            hooks = {int(i): (lambda v, m=m, w=words[b]: m(v, w, mask)) for i, m in self.cmam[b].items()}
            if enc.is_3d:
                maps = enc(clip, hooks)
                feats[b] = [f[:, :, min(target // s.t_stride, f.shape[2] - 1)] for f, s in zip(maps, enc.stage_specs)]
            else:
                feats[b] = enc(clip[:, :, target], hooks)
            sentences[b] = sentence_vector(words[b], mask)
        return feats, sentences

    def forward(self, clip: torch.Tensor, tokens: torch.Tensor, mask: torch.Tensor) -> dict:
        """Segment the referred actor in the clip's middle frame.

        Args:
            clip: (B, 3, T, H, W) RGB in [0, 1]; the target frame is index T // 2.
            tokens: (B, N) word ids (0 = padding).
            mask: (B, N) bool, True for real words.

        Returns:
            ``logits`` (B, 1, H, W) mask logits of the target frame; ``aux`` list of coarser
            logits (deep supervision; may be empty).
        """
        feats, sentences = self.encode(clip, tokens, mask)
        return self.decoder(feats, sentences, (clip.shape[-2], clip.shape[-1]))


@dataclass
class CSTMKwargs:
    """The typed arguments :func:`build_model` derives from a ModelConfig."""

    branches: tuple[str, ...]
    spatial: tuple[str, str]
    temporal: tuple[str, str]
    raw_input: bool
    text: dict
    cross_modal: str
    cmam_stages: tuple[int, ...]
    cmam_channels: int
    fusion: str
    decoder: dict


def kwargs_from_config(model_cfg, load_weights: bool = True) -> CSTMKwargs:
    """Config -> constructor arguments (the only place that reads a ModelConfig)."""
    m = model_cfg
    pre = (lambda p: p) if load_weights else (lambda p: "none")
    branches = tuple(b for b in BRANCHES if m.mode in (b, "both"))
    tile = {"always": branches, "never": (), "auto": branches if not m.cmam.stages else ()}[m.decoder.tile]
    return CSTMKwargs(
        branches=branches,
        spatial=(m.spatial.name, pre(m.spatial.pretrained)),
        temporal=(m.temporal.name, pre(m.temporal.pretrained)),
        raw_input=not input_spec(m.input).normalize,
        text=dict(name=m.text.name, embedding=m.text.embedding, glove_path=m.text.glove_path,
                  vocab_size=m.text.vocab_size, embed_dim=m.text.embed_dim, hidden=m.text.hidden,
                  oov=m.text.oov),
        cross_modal=m.cmam.name,
        cmam_stages=tuple(m.cmam.stages),
        cmam_channels=m.cmam.channels,
        fusion=m.fusion,
        decoder=dict(name=m.decoder.name, channels=m.decoder.channels, refine=m.decoder.refine,
                     deep_supervision=m.decoder.deep_supervision, tile=tuple(tile)),
    )


def build_model(cfg, vocab: Sequence[str] | None = None, load_weights: bool = True,
                cache_dir: str | None = None) -> CSTM:
    """Build the model from an ExperimentConfig (or its ``model`` section) alone.

    Args:
        cfg: ExperimentConfig or ModelConfig.
        vocab: the dataset's words (index order); fixes the embedding size and selects GloVe rows.
        load_weights: False builds every encoder with random weights (FLOPs, loading a checkpoint).
        cache_dir: where the GloVe rows are cached.
    """
    model_cfg = getattr(cfg, "model", cfg)
    kw = kwargs_from_config(model_cfg, load_weights)
    encoders: dict[str, StagedEncoder] = {}
    if "spatial" in kw.branches:
        encoders["spatial"] = SPATIAL_ENCODERS.build(kw.spatial[0], pretrained=kw.spatial[1])
    if "temporal" in kw.branches:
        encoders["temporal"] = TEMPORAL_ENCODERS.build(kw.temporal[0], pretrained=kw.temporal[1])
    for enc in encoders.values():
        enc.raw_input = kw.raw_input
    t = kw.text
    vocab_size = len(vocab) if vocab is not None else t["vocab_size"]
    embeddings = None
    if t["embedding"] in ("glove", "glove_frozen") and load_weights:
        if t["glove_path"] is None:
            raise ValueError("model.text.glove_path: required when model.text.embedding is 'glove'")
        if vocab is None:
            raise ValueError("GloVe embeddings need the dataset vocabulary")
        from lvas.models.text import load_glove

        embeddings, _ = load_glove(t["glove_path"], list(vocab), t["embed_dim"], cache_dir, oov=t["oov"])
    text = TEXT_ENCODERS.build(t["name"], vocab_size=vocab_size, embed_dim=t["embed_dim"], hidden=t["hidden"],
                               branches=kw.branches, embeddings=embeddings,
                               frozen_embedding=t["embedding"] == "glove_frozen")
    c_l = text.out_channels
    cmam = {b: {i: CROSS_MODAL.build(kw.cross_modal, visual_channels=enc.stage_specs[i - 1].channels,
                                     text_channels=c_l, key_channels=kw.cmam_channels, dims=3 if enc.is_3d else 2)
                for i in sorted(kw.cmam_stages)}
            for b, enc in encoders.items()}
    d = kw.decoder
    decoder = DECODERS.build(d["name"], branch_specs={b: e.output_shape() for b, e in encoders.items()},
                             text_channels=c_l, channels=d["channels"], fusion=kw.fusion, refine=d["refine"],
                             deep_supervision=d["deep_supervision"], tile=d["tile"])
    return CSTM(encoders.get("spatial"), encoders.get("temporal"), text, cmam, decoder)


__all__ = ["CSTM", "build_model", "kwargs_from_config"]
