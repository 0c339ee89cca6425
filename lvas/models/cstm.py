"""The assembled CSTM model (spatial only, temporal only, or both) and its builder from a config."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from torch import nn

from lvas.models.base import StagedEncoder
from lvas.models.cmam import CMAM
from lvas.models.decoder import Decoder
from lvas.models.text import sentence_vector
from lvas.registry import SPATIAL_ENCODERS, TEMPORAL_ENCODERS, TEXT_ENCODERS

BRANCHES = ("spatial", "temporal")


class CSTM(nn.Module):
    """Collaborative Spatial-Temporal Modeling (CVPR 2021) as swappable parts.

    Top-level children are the parts of the FLOPs breakdown: ``spatial`` / ``temporal``
    (encoders), ``text``, ``cmam`` (``cmam.spatial.<stage>``, ``cmam.temporal.<stage>``) and
    ``decoder`` (projections, fusion, Eq. 9, heads).

    Args:
        spatial: 2D encoder of the target frame, or None (temporal-only mode).
        temporal: 3D encoder of the clip, or None (spatial-only mode).
        text: text encoder with one GRU per present branch.
        cmam_stages: stages (1..5) after which CMAM modulates each present encoder.
        cmam_channels: attention width of CMAM.
        fusion: fusion name for two branches.
        decoder_channels, refine, deep_supervision: see :class:`Decoder`.
    """

    def __init__(self, spatial: StagedEncoder | None, temporal: StagedEncoder | None, text: nn.Module,
                 cmam_stages: Sequence[int] = (), cmam_channels: int = 256, fusion: str = "lgfs",
                 decoder_channels: int = 256, refine: bool = True, deep_supervision: bool = True) -> None:
        super().__init__()
        if spatial is None and temporal is None:
            raise ValueError("CSTM needs at least one encoder")
        self.spatial = spatial
        self.temporal = temporal
        self.text = text
        c_l = text.out_channels
        encoders = self.encoders()
        self.cmam_stages = tuple(sorted(cmam_stages))
        self.cmam = nn.ModuleDict({
            b: nn.ModuleDict({
                str(i): CMAM(enc.stage_specs[i - 1].channels, c_l, cmam_channels, dims=3 if enc.is_3d else 2)
                for i in self.cmam_stages
            })
            for b, enc in encoders.items()
        })
        self.decoder = Decoder({b: enc.output_shape() for b, enc in encoders.items()}, c_l,
                               decoder_channels, fusion, refine, deep_supervision)

    @property
    def mode(self) -> str:
        return "both" if len(self.encoders()) == 2 else next(iter(self.encoders()))

    def encoders(self) -> dict[str, StagedEncoder]:
        return {b: e for b, e in (("spatial", self.spatial), ("temporal", self.temporal)) if e is not None}

    def forward(self, clip: torch.Tensor, tokens: torch.Tensor, mask: torch.Tensor) -> dict:
        """Segment the referred actor in the clip's middle frame.

        Args:
            clip: (B, 3, T, H, W) RGB in [0, 1]; the target frame is index T // 2.
            tokens: (B, N) word ids (0 = padding).
            mask: (B, N) bool, True for real words.

        Returns:
            ``logits`` (B, 1, H, W) mask logits of the target frame; ``aux`` list of
            (B, 1, H/2^i, W/2^i), i = 2..5 (deep supervision; may be empty).
        """
        words = self.text(tokens, mask)
        target = clip.shape[2] // 2
        feats, sentences = {}, {}
        for b, enc in self.encoders().items():
            cmams = self.cmam[b]
            hooks = {int(i): (lambda v, m=m, w=words[b]: m(v, w, mask)) for i, m in cmams.items()}
            if enc.is_3d:
                maps = enc(clip, hooks)
                feats[b] = [
                    f[:, :, min(target // s.t_stride, f.shape[2] - 1)] for f, s in zip(maps, enc.stage_specs)
                ]
            else:
                feats[b] = enc(clip[:, :, target], hooks)
            sentences[b] = sentence_vector(words[b], mask)
        return self.decoder(feats, sentences, (clip.shape[-2], clip.shape[-1]))


@dataclass
class CSTMKwargs:
    """The typed arguments :func:`build_model` derives from a ModelConfig."""

    mode: str
    spatial: tuple[str, str]
    temporal: tuple[str, str]
    text: dict
    cmam_stages: tuple[int, ...]
    cmam_channels: int
    fusion: str
    decoder_channels: int
    refine: bool
    deep_supervision: bool


def kwargs_from_config(model_cfg, load_weights: bool = True) -> CSTMKwargs:
    """Config -> constructor arguments (the only place that reads a ModelConfig)."""
    m = model_cfg
    pre = (lambda p: p) if load_weights else (lambda p: "none")
    return CSTMKwargs(
        mode=m.mode,
        spatial=(m.spatial.name, pre(m.spatial.pretrained)),
        temporal=(m.temporal.name, pre(m.temporal.pretrained)),
        text=dict(name=m.text.name, embedding=m.text.embedding, glove_path=m.text.glove_path,
                  vocab_size=m.text.vocab_size, embed_dim=m.text.embed_dim, hidden=m.text.hidden),
        cmam_stages=tuple(m.cmam.stages),
        cmam_channels=m.cmam.channels,
        fusion=m.fusion,
        decoder_channels=m.decoder.channels,
        refine=m.decoder.refine,
        deep_supervision=m.decoder.deep_supervision,
    )


def build_model(cfg, vocab: Sequence[str] | None = None, load_weights: bool = True,
                cache_dir: str | None = None) -> CSTM:
    """Build CSTM from an ExperimentConfig (or its ``model`` section) alone.

    Args:
        cfg: ExperimentConfig or ModelConfig.
        vocab: the dataset's words (index order); fixes the embedding size and selects GloVe rows.
        load_weights: False builds every encoder with random weights (FLOPs, loading a checkpoint).
        cache_dir: where the GloVe rows are cached.
    """
    model_cfg = getattr(cfg, "model", cfg)
    kw = kwargs_from_config(model_cfg, load_weights)
    spatial = SPATIAL_ENCODERS.build(kw.spatial[0], pretrained=kw.spatial[1]) if kw.mode in ("spatial", "both") else None
    temporal = (TEMPORAL_ENCODERS.build(kw.temporal[0], pretrained=kw.temporal[1])
                if kw.mode in ("temporal", "both") else None)
    t = kw.text
    vocab_size = len(vocab) if vocab is not None else t["vocab_size"]
    embeddings = None
    if t["embedding"] == "glove" and load_weights:
        if t["glove_path"] is None:
            raise ValueError("model.text.glove_path: required when model.text.embedding is 'glove'")
        if vocab is None:
            raise ValueError("GloVe embeddings need the dataset vocabulary")
        from lvas.models.text import load_glove

        embeddings, _ = load_glove(t["glove_path"], list(vocab), t["embed_dim"], cache_dir)
    branches = [b for b in BRANCHES if (b == "spatial" and spatial is not None) or (b == "temporal" and temporal is not None)]
    text = TEXT_ENCODERS.build(t["name"], vocab_size=vocab_size, embed_dim=t["embed_dim"], hidden=t["hidden"],
                               branches=branches, embeddings=embeddings)
    return CSTM(spatial, temporal, text, kw.cmam_stages, kw.cmam_channels, kw.fusion,
                kw.decoder_channels, kw.refine, kw.deep_supervision)


__all__ = ["CSTM", "build_model", "kwargs_from_config"]
