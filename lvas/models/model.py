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
from lvas.inputs import input_spec
from lvas.registry import BRIDGES, CROSS_MODAL, DECODERS, FUSIONS, SPATIAL_ENCODERS, TEMPORAL_ENCODERS, TEXT_ENCODERS

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
        if bridge and getattr(decoder, "all_frames", False):
            raise ValueError("model.bridge.stages: a bridge exchanges target-frame maps; this decoder reads every frame")
        if getattr(decoder, "all_frames", False):
            for b, enc in self.encoders().items():
                if not enc.is_3d and type(enc).view is not StagedEncoder.view:
                    raise ValueError(f"model.{b}: {type(enc).__name__} builds its input from several frames (a frame "
                                     f"difference); this decoder runs 2-D encoders on every frame: use a 2-D or 3-D "
                                     f"encoder of the frames themselves")
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
        if hasattr(self.text, "encode"):  # a pretrained language model: its own sentence vector
            w, sentence = self.text.encode(tokens, mask)
            branches = list(self.encoders())
            return Language({b: w for b in branches}, mask, {b: sentence for b in branches}, sentence)
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
            branch -> one map per stage, (B, C_i, H/2^i, W/2^i); for a decoder that asks for them
            (``temporal_maps = True``, e.g. one that predicts several frames), a 3D encoder's maps keep
            their time axis, (B, C_i, T_i, H/2^i, W/2^i); a decoder with ``all_frames = True`` (a
            query-based video model) also has every 2D encoder run on each of the T frames, its maps
            (B, C_i, T, H/2^i, W/2^i), the words repeated for each frame's CMAM.
        """
        target, frames = clip.shape[2] // 2, clip.shape[2]
        keep_time = getattr(self.decoder, "temporal_maps", False)
        every_frame = getattr(self.decoder, "all_frames", False)  # 2-D encoders run on every frame too
        encs = self.encoders()
        x, size, words, masks = {}, {}, {}, {}
        for b, enc in encs.items():
            per_frame = every_frame and not enc.is_3d
            view = clip.transpose(1, 2).flatten(0, 1) if per_frame else enc.view(clip)  # (B*T, 3, H, W)
            x[b], size[b] = enc.prepare(view)
            words[b], masks[b] = ((lang.words[b].repeat_interleave(frames, 0), lang.mask.repeat_interleave(frames, 0))
                                  if per_frame else (lang.words[b], lang.mask))
        feats: dict[str, list[torch.Tensor]] = {b: [] for b in encs}
        for i in range(1, max(len(e.stages) for e in encs.values()) + 1):
            for b, enc in encs.items():
                if i > len(enc.stages):
                    continue
                x[b] = enc.run_stage(i, x[b], size[b])
                if str(i) in self.cmam[b]:
                    x[b] = self.cmam[b][str(i)](x[b], words[b], masks[b])
            if str(i) in self.bridge:
                x = self.bridge[str(i)](x, lang, target, {b: e.stage_specs[i - 1] for b, e in encs.items()})
            for b, enc in encs.items():
                if i > len(enc.stages):
                    continue
                if every_frame and not enc.is_3d:  # (B*T, C, h, w) -> (B, C, T, h, w)
                    m = x[b]
                    feats[b].append(m.view(-1, frames, *m.shape[1:]).transpose(1, 2))
                else:
                    feats[b].append(x[b] if keep_time else enc.frame_feature(x[b], i, target))
        return feats

    def forward(self, clip: torch.Tensor, tokens: torch.Tensor, mask: torch.Tensor) -> dict:
        """Segment the referred actor in the clip's middle frame.

        Args:
            clip: (B, 3, T, H, W) RGB in [0, 1]; the target frame is index T // 2.
            tokens: (B, N) word ids (0 = padding).
            mask: (B, N) bool, True for real words.

        Returns:
            ``logits`` (B, K, H, W): K masks, by default K = 1 for the target frame; a decoder that
            predicts several frames also returns ``frames``, their K clip positions
            (:mod:`lvas.engine.inference`); ``aux``: coarser logits (deep supervision; may be empty).
        """
        lang = self.language(tokens, mask)
        feats = self.encode(clip, lang)
        return self.decoder(feats, lang, (clip.shape[-2], clip.shape[-1]))


def branches_of(model_cfg) -> tuple[str, ...]:
    """The streams a ``model`` config builds, in order."""
    return tuple(b for b in BRANCHES if model_cfg.mode in (b, "both"))


def model_plan(cfg) -> dict[str, object]:
    """The slots of the model config that the model is built from, by dotted path: its encoders,
    text encoder, decoder and input pipeline; CMAM only with stages; fusion and bridge only with two
    streams (and the bridge only with stages). :func:`build_model` builds exactly these, and a run
    marks every other slot unused (lvas.config.unread_keys)."""
    m = getattr(cfg, "model", cfg)
    branches = branches_of(m)
    plan = {f"model.{b}": getattr(m, b) for b in branches}
    plan.update({"model.text": m.text, "model.decoder": m.decoder, "model.input": m.input})
    if m.cmam.stages:
        plan["model.cmam"] = m.cmam
    if len(branches) == 2:
        plan["model.fusion"] = m.fusion
        if m.bridge.stages:
            plan["model.bridge"] = m.bridge
    return plan


class FusionFactory:
    """What a decoder calls to build the configured fusion: ``fusion(channels, text_channels, **wiring)``."""

    def __init__(self, component) -> None:
        self.name = component.name
        self._settings = component.settings()

    def __call__(self, channels: int, text_channels: int, **wiring) -> nn.Module:
        return FUSIONS.build(self.name, self._settings, channels=channels, text_channels=text_channels, **wiring)


def _encoder(component, family, load_weights: bool, raw_input: bool) -> StagedEncoder:
    settings = component.settings()
    if not load_weights and "pretrained" in settings:
        settings["pretrained"] = "none"
    enc = family.build(component.name, settings)
    enc.raw_input = raw_input
    prefixes = tuple(component.trainable)
    if prefixes:
        names = [n for n, _ in enc.named_parameters()]
        if not any(n.startswith(prefixes) for n in names):
            raise ValueError(f"model.{'spatial' if family is SPATIAL_ENCODERS else 'temporal'}.trainable: "
                             f"{list(prefixes)} matches no parameter of {type(enc).__name__} "
                             f"(its names start with e.g. {names[0]!r})")
        for n, p in enc.named_parameters():
            p.requires_grad_(n.startswith(prefixes))
    return enc


def _text(t, branches: tuple[str, ...], vocab, load_weights: bool, cache_dir: str | None) -> nn.Module:
    settings = t.settings()
    if not load_weights and isinstance(settings.get("pretrained"), bool):  # a language model's weights
        settings["pretrained"] = False
    embeddings = None
    if t.embedding in ("glove", "glove_frozen") and load_weights:
        if t.glove_path is None:
            raise ValueError("model.text.glove_path: required when model.text.embedding is 'glove'")
        if vocab is None:
            raise ValueError("GloVe embeddings need the dataset vocabulary")
        from lvas.models.text.glove import load_glove

        embeddings, _ = load_glove(t.glove_path, list(vocab), t.embed_dim, cache_dir, oov=t.oov)
    return TEXT_ENCODERS.build(t.name, settings, vocab_size=len(vocab) if vocab is not None else t.vocab_size,
                               embed_dim=t.embed_dim, branches=branches, embeddings=embeddings,
                               frozen_embedding=t.embedding == "glove_frozen")


def build_model(cfg, vocab: Sequence[str] | None = None, load_weights: bool = True,
                cache_dir: str | None = None) -> SegmentationModel:
    """Build the model from an ExperimentConfig (or its ``model`` section) alone: the slots of
    :func:`model_plan`, each from its own settings, wired by the encoders' declared shapes.

    Args:
        cfg: ExperimentConfig or ModelConfig.
        vocab: the dataset's words (index order); fixes the embedding size and selects GloVe rows.
        load_weights: False builds every encoder with random weights (FLOPs, loading a checkpoint).
        cache_dir: where the GloVe rows are cached.

    With ``train.precision: float64`` the model is initialised in float64 (the same initial weights on
    every CPU: float32 random draws differ in the last bit between instruction sets) and stays in it.
    """
    precision = getattr(getattr(cfg, "train", None), "precision", "float32")
    if precision == "float64":
        before = torch.get_default_dtype()
        torch.set_default_dtype(torch.float64)
        try:
            return _build(getattr(cfg, "model", cfg), vocab, load_weights, cache_dir).to(torch.float64)
        finally:
            torch.set_default_dtype(before)
    return _build(getattr(cfg, "model", cfg), vocab, load_weights, cache_dir)


def _build(m, vocab, load_weights: bool, cache_dir: str | None) -> SegmentationModel:
    plan = model_plan(m)
    branches = branches_of(m)
    raw = not input_spec(m.input).normalize
    families = {"spatial": SPATIAL_ENCODERS, "temporal": TEMPORAL_ENCODERS}
    encoders = {b: _encoder(getattr(m, b), families[b], load_weights, raw) for b in branches}
    text = _text(m.text, branches, vocab, load_weights, cache_dir)
    c_l = text.out_channels
    joint = c_l if getattr(text, "shared_sentence", False) else c_l * len(branches)
    cmam = {}
    if "model.cmam" in plan:
        cmam = {b: {i: CROSS_MODAL.build(m.cmam.name, m.cmam.settings(), visual_channels=enc.stage_specs[i - 1].channels,
                                         text_channels=c_l, dims=3 if enc.is_3d else 2)
                    for i in sorted(m.cmam.stages) if i <= len(enc.stage_specs)}
                for b, enc in encoders.items()}
    bridge = {}
    if "model.bridge" in plan:
        bridge = {i: BRIDGES.build(m.bridge.name, m.bridge.settings(), text_channels=c_l,
                                   stage_specs={b: e.stage_specs[i - 1] for b, e in encoders.items()})
                  for i in sorted(m.bridge.stages)}
    fusion = FusionFactory(m.fusion) if "model.fusion" in plan else None
    decoder = DECODERS.build(m.decoder.name, m.decoder.settings(), text_channels=c_l, sentence_channels=joint,
                             branch_specs={b: e.output_shape() for b, e in encoders.items()}, fusion=fusion,
                             modulated=tuple(b for b in branches if cmam.get(b)))
    return SegmentationModel(encoders.get("spatial"), encoders.get("temporal"), text, cmam, decoder, bridge)


__all__ = ["Language", "SegmentationModel", "build_model", "model_plan", "branches_of"]
