"""The assembled model: a composition of registered parts, wired by their declared shapes.

``build_model`` reads a config and picks one entry from each family: spatial / temporal encoder,
text encoder, cross-modal module (per stream, at chosen stages), bridge (across the two streams,
at chosen stages), decoder (with its fusion) and input pipeline. :class:`SegmentationModel`
only runs them in order; it knows no method by name. CSTM, ACGA and LBDT are three YAML files:

    CSTM   r50/iv3 + i3d/s3d, gru text, cmam_* at stages 3-5, eq9 decoder with lgfs    experiments/cstm_paper.yaml
    ACGA   i3d_mixed4f only, conv1d text, acga decoder (its co-attention + three heads)  experiments/acga_paper.yaml
    LBDT   r50 + diff_r50, lstm text, lbdt bridge at stages 4-5, lbdt decoder with bca   experiments/lbdt4_paper.yaml
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from torch import nn

from lvas.models.base import StagedEncoder
from lvas.models.inputs import input_spec
from lvas.registry import BRIDGES, CROSS_MODAL, DECODERS, SPATIAL_ENCODERS, TEMPORAL_ENCODERS, TEXT_ENCODERS

BRANCHES = ("spatial", "temporal")


@dataclass
class Language:
    """What the text encoder gives the decoder.

    ``words``: branch -> (B, N, C_L); ``mask``: (B, N) bool; ``sentences``: branch -> (B, C_L);
    ``joint``: (B, C_J), the sentence a fusion sees (the branches' sentences concatenated, or the
    one sentence of a text encoder shared by both streams).
    """

    words: dict[str, torch.Tensor]
    mask: torch.Tensor
    sentences: dict[str, torch.Tensor]
    joint: torch.Tensor


class SegmentationModel(nn.Module):
    """One or two visual streams, language, and a decoder, as swappable parts.

    Top-level children are the parts of the FLOPs breakdown: ``spatial`` / ``temporal``
    (encoders), ``text``, ``cmam`` (``cmam.<branch>.<stage>``, per-stream cross-modal modules),
    ``bridge`` (``bridge.<stage>``, modules that see both streams) and ``decoder``.

    Args:
        spatial: encoder of the target frame, or None.
        temporal: encoder of the clip (3D, or 2D on frame differences), or None.
        text: text encoder giving word features per present branch.
        cmam: branch -> {stage: cross-modal module} (empty dicts for none).
        decoder: a DECODERS module over the present branches.
        bridge: {stage: BRIDGES module} exchanging information between the two streams.
    """

    def __init__(self, spatial: StagedEncoder | None, temporal: StagedEncoder | None, text: nn.Module,
                 cmam: dict[str, dict[int, nn.Module]], decoder: nn.Module,
                 bridge: dict[int, nn.Module] | None = None) -> None:
        super().__init__()
        if spatial is None and temporal is None:
            raise ValueError("the model needs at least one encoder")
        self.spatial = spatial
        self.temporal = temporal
        self.text = text
        self.cmam = nn.ModuleDict({b: nn.ModuleDict({str(i): m for i, m in cmam.get(b, {}).items()})
                                   for b in self.encoders()})
        if bridge and len(self.encoders()) != 2:
            raise ValueError("a bridge needs both streams (model.mode: both)")
        self.bridge = nn.ModuleDict({str(i): m for i, m in (bridge or {}).items()})
        self.decoder = decoder

    @property
    def mode(self) -> str:
        return "both" if len(self.encoders()) == 2 else next(iter(self.encoders()))

    def encoders(self) -> dict[str, StagedEncoder]:
        return {b: e for b, e in (("spatial", self.spatial), ("temporal", self.temporal)) if e is not None}

    def branch_keys(self, branch: str) -> tuple[str, ...]:
        """State-dict prefixes of everything ``branch`` is trained with: encoder, CMAMs, text parts."""
        return (f"{branch}.", f"cmam.{branch}.", *(f"text.{k}" for k in self.text.branch_keys(branch)))

    def language(self, tokens: torch.Tensor, mask: torch.Tensor) -> Language:
        """Word features, sentence vectors and the joint sentence (see :class:`Language`)."""
        words = self.text(tokens, mask)
        sentences = {b: self.text.sentence(w, mask) for b, w in words.items()}
        shared = getattr(self.text, "shared_sentence", False)
        joint = next(iter(sentences.values())) if shared else torch.cat(list(sentences.values()), 1)
        return Language(words, mask, sentences, joint)

    def encode(self, clip: torch.Tensor, lang: Language) -> dict[str, list[torch.Tensor]]:
        """Target-frame features of each stream, stage by stage in lockstep, after its cross-modal
        modules and the bridges.

        Args:
            clip: (B, 3, T, H, W) RGB in [0, 1]; the target frame is index T // 2.
            lang: the query's :class:`Language`.

        Returns:
            branch -> one map per stage, (B, C_i, H/2^i, W/2^i).
        """
        target = clip.shape[2] // 2
        encs = self.encoders()
        x, size = {}, {}
        for b, enc in encs.items():
            x[b], size[b] = enc.prepare(enc.view(clip))
        feats: dict[str, list[torch.Tensor]] = {b: [] for b in encs}
        for i in range(1, max(len(e.stages) for e in encs.values()) + 1):
            for b, enc in encs.items():
                if i > len(enc.stages):
                    continue
                x[b] = enc.run_stage(i, x[b], size[b])
                if str(i) in self.cmam[b]:
                    x[b] = self.cmam[b][str(i)](x[b], lang.words[b], lang.mask)
            if str(i) in self.bridge:
                x = self.bridge[str(i)](x, lang, target, {b: e.stage_specs[i - 1] for b, e in encs.items()})
            for b, enc in encs.items():
                if i <= len(enc.stages):
                    feats[b].append(enc.frame_feature(x[b], i, target))
        return feats

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
        lang = self.language(tokens, mask)
        feats = self.encode(clip, lang)
        return self.decoder(feats, lang, (clip.shape[-2], clip.shape[-1]))


@dataclass
class ModelKwargs:
    """The typed arguments :func:`build_model` derives from a ModelConfig."""

    branches: tuple[str, ...]
    spatial: tuple[str, str]
    temporal: tuple[str, str]
    trainable: dict[str, tuple[str, ...]]
    raw_input: bool
    text: dict
    cross_modal: str
    cmam_stages: tuple[int, ...]
    cmam_channels: int
    bridge: dict
    fusion: str
    decoder: dict


def kwargs_from_config(model_cfg, load_weights: bool = True) -> ModelKwargs:
    """Config -> constructor arguments (the only place that reads a ModelConfig)."""
    m = model_cfg
    pre = (lambda p: p) if load_weights else (lambda p: "none")
    branches = tuple(b for b in BRANCHES if m.mode in (b, "both"))
    tile = {"always": branches, "never": (), "auto": branches if not m.cmam.stages else ()}[m.decoder.tile]
    return ModelKwargs(
        branches=branches,
        spatial=(m.spatial.name, pre(m.spatial.pretrained)),
        temporal=(m.temporal.name, pre(m.temporal.pretrained)),
        trainable={"spatial": tuple(m.spatial.trainable), "temporal": tuple(m.temporal.trainable)},
        raw_input=not input_spec(m.input).normalize,
        text=dict(name=m.text.name, embedding=m.text.embedding, glove_path=m.text.glove_path,
                  vocab_size=m.text.vocab_size, embed_dim=m.text.embed_dim, hidden=m.text.hidden,
                  oov=m.text.oov, max_words=m.text.max_words),
        cross_modal=m.cmam.name,
        cmam_stages=tuple(m.cmam.stages),
        cmam_channels=m.cmam.channels,
        bridge=dict(name=m.bridge.name, stages=tuple(m.bridge.stages), channels=m.bridge.channels,
                    layers=m.bridge.layers, heads=m.bridge.heads),
        fusion=m.fusion,
        decoder=dict(name=m.decoder.name, channels=m.decoder.channels, refine=m.decoder.refine,
                     deep_supervision=m.decoder.deep_supervision, tile=tuple(tile)),
    )


def build_model(cfg, vocab: Sequence[str] | None = None, load_weights: bool = True,
                cache_dir: str | None = None) -> SegmentationModel:
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
    for b, enc in encoders.items():
        enc.raw_input = kw.raw_input
        if kw.trainable[b]:
            names = [n for n, _ in enc.named_parameters()]
            if not any(n.startswith(kw.trainable[b]) for n in names):
                raise ValueError(f"model.{b}.trainable: {list(kw.trainable[b])} matches no parameter of {type(enc).__name__} "
                                 f"(its names start with e.g. {names[0]!r})")
            for n, p in enc.named_parameters():
                p.requires_grad_(n.startswith(kw.trainable[b]))
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
                               frozen_embedding=t["embedding"] == "glove_frozen", max_words=t["max_words"])
    c_l = text.out_channels
    joint = c_l if getattr(text, "shared_sentence", False) else c_l * len(kw.branches)
    cmam = {b: {i: CROSS_MODAL.build(kw.cross_modal, visual_channels=enc.stage_specs[i - 1].channels,
                                     text_channels=c_l, key_channels=kw.cmam_channels, dims=3 if enc.is_3d else 2)
                for i in sorted(kw.cmam_stages) if i <= len(enc.stage_specs)}
            for b, enc in encoders.items()}
    br = kw.bridge
    bridge = {i: BRIDGES.build(br["name"], stage_specs={b: e.stage_specs[i - 1] for b, e in encoders.items()},
                               text_channels=c_l, channels=br["channels"], layers=br["layers"], heads=br["heads"])
              for i in sorted(br["stages"])} if len(encoders) == 2 else {}
    d = kw.decoder
    decoder = DECODERS.build(d["name"], branch_specs={b: e.output_shape() for b, e in encoders.items()},
                             text_channels=c_l, sentence_channels=joint, channels=d["channels"], fusion=kw.fusion,
                             refine=d["refine"], deep_supervision=d["deep_supervision"], tile=d["tile"])
    return SegmentationModel(encoders.get("spatial"), encoders.get("temporal"), text, cmam, decoder, bridge)


__all__ = ["Language", "SegmentationModel", "build_model", "kwargs_from_config"]
