"""ReferFormer's decoder ``referformer`` (Wu et al., CVPR 2022, "Language as Queries for Referring
Video Object Segmentation"): everything between the visual backbone and the masks.

For a clip of T frames (each frame its own batch element in the transformer, as the release):

1. **Feature levels** (§3.2): the backbone's maps at strides 8, 16, 32, each through a 1x1 conv +
   GroupNorm(32) to D; a fourth level by a stride-2 3x3 conv of the stride-32 map. Sine positions
   (lvas/models/transformers/position.py) and a learned embedding per level.
2. **Vision-language early fusion** on every level: ``v' = v * MHA(v, L + P_L, L)``
   (lvas/models/cross_modal/vision_language.py).
3. **Deformable transformer** (lvas/models/transformers/deformable.py): the encoder over the four
   levels of a frame; the decoder's Q queries start from the sentence vector (the same for every
   query) with learned query positions -- "language as queries" -- and refine reference boxes layer
   by layer.
4. **Heads** per decoder layer: class score (a linear layer: is this query the referred object),
   box (a 3-layer MLP, cx cy w h in [0, 1]), and the mask: the dynamic convolutions of each query
   (lvas/models/heads/dynamic_mask.py) on the cross-modal FPN's stride-4 features
   (lvas/models/heads/cross_modal_fpn.py).

Outputs: ``pred_logits`` (B, T, Q, 1), ``pred_boxes`` (B, T, Q, 4), ``pred_masks`` (B, T, Q, H/4, W/4)
of the last layer and ``aux_outputs`` of the others (the loss ``referformer``); ``logits`` (B, T, H, W):
the query with the best class score averaged over the clip's frames (as the release's video
inference), its masks bilinearly upsampled x4; ``scores`` (B, T) that query's score per frame; in
eval mode ``candidates``: every query's upsampled masks and scores (protocol ``coco`` submits them all,
as the release's A2D evaluation). ``frames``: all T clip positions, or with ``frames: target`` only the
middle one (the release's A2D and J-HMDB mode: one annotated frame per clip, the transformer and
heads on that frame alone).

With two streams (``model.mode: both``, a cross-generation ablation), each stage's maps are projected
(1x1 conv + GroupNorm) to the temporal stream's width and joined by the configured fusion (e.g.
CSTM's LGFS) per frame, before all of the above.
"""

from __future__ import annotations

import copy
import math
from typing import Literal, Sequence

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from lvas.models.base import StageSpec
from lvas.models.cross_modal.vision_language import VisionLanguageFusion
from lvas.models.heads.cross_modal_fpn import CrossModalFPN
from lvas.models.heads.dynamic_mask import MLP, DynamicMaskHead
from lvas.models.model import Language
from lvas.models.transformers.deformable import DeformableTransformer, inverse_sigmoid
from lvas.models.transformers.position import sine_1d, sine_2d
from lvas.registry import DECODERS
from lvas.settings import NonNegativeFloat, PositiveInt

BACKBONE_LEVELS = 4  # the backbone maps the decoder reads: strides 4, 8, 16, 32 (lvas stages 2..5)


def _group_norm_conv(cin: int, cout: int, kernel: int = 1, stride: int = 1, padding: int = 0) -> nn.Sequential:
    """Conv + GroupNorm(32 groups, or as many as divide ``cout``: the release's 32 at its widths)."""
    return nn.Sequential(nn.Conv2d(cin, cout, kernel, stride=stride, padding=padding),
                         nn.GroupNorm(math.gcd(32, cout), cout))


@DECODERS.register("referformer")
class ReferFormerDecoder(nn.Module):
    """Language as queries: deformable transformer, dynamic mask heads, cross-modal FPN (ReferFormer).

    Args:
        branch_specs: branch -> its encoder's StageSpecs (the last four are read).
        text_channels: width of the word features (must equal ``hidden``: RoBERTa's resizer gives it).
        sentence_channels: width of the sentence (the queries' initial content; ``hidden`` too).
        fusion: the two-stream fusion, per stage (None for one stream).
        modulated: unused.
        hidden: D, the transformer's width. queries: Q per frame. enc_layers / dec_layers, ffn, heads,
        levels, enc_points / dec_points, dropout: the deformable transformer's. mask_dim: channels of
        the mask features. controller_layers / dynamic_channels: the dynamic mask network. rel_coord:
        relative coordinates into it. box_refine: iterative box refinement (the released recipe's
        ``--with_box_refine``). frames: ``all`` frames of the clip, or the ``target`` (middle) one.
    """

    temporal_maps = True
    all_frames = True
    gives = "queries"  # pred_logits / pred_boxes / pred_masks per query (what the loss referformer needs)

    def __init__(self, branch_specs: dict[str, list[StageSpec]], text_channels: int, sentence_channels: int | None = None,
                 fusion=None, modulated: Sequence[str] = (), *, hidden: PositiveInt = 256, queries: PositiveInt = 5,
                 enc_layers: PositiveInt = 4, dec_layers: PositiveInt = 4, ffn: PositiveInt = 2048,
                 heads: PositiveInt = 8, levels: PositiveInt = 4, enc_points: PositiveInt = 4,
                 dec_points: PositiveInt = 4, dropout: NonNegativeFloat = 0.1, mask_dim: PositiveInt = 256,
                 controller_layers: PositiveInt = 3, dynamic_channels: PositiveInt = 8, rel_coord: bool = True,
                 box_refine: bool = True, frames: Literal["all", "target"] = "all") -> None:
        super().__init__()
        for name, width in (("text_channels", text_channels), ("sentence_channels", sentence_channels or hidden)):
            if width != hidden:
                raise ValueError(f"model.decoder.hidden: {hidden}, but the text encoder gives {name} {width} "
                                 f"(set model.text.channels to {hidden})")
        if levels != BACKBONE_LEVELS:
            raise ValueError(f"model.decoder.levels: {levels}; the release's four levels (strides 8, 16, 32 and one more) "
                             f"are supported")
        self.branches = list(branch_specs)
        specs = {b: s[-BACKBONE_LEVELS:] for b, s in branch_specs.items()}
        self.t_strides = {b: [s.t_stride for s in ss] for b, ss in specs.items()}
        for b, ss in specs.items():
            if len(ss) < BACKBONE_LEVELS or [s.stride for s in ss] != [4, 8, 16, 32]:
                raise ValueError(f"model.{b}: decoder referformer reads maps at strides 4, 8, 16, 32; this encoder's "
                                 f"last stages have strides {[s.stride for s in ss]}")
        main = specs["temporal"] if "temporal" in specs else next(iter(specs.values()))
        channels = [s.channels for s in main]
        self.align = nn.ModuleDict()
        self.fusions = None
        if len(self.branches) == 2:  # each stream to the main stream's widths, then fused per stage
            self.align = nn.ModuleDict({b: nn.ModuleList(_group_norm_conv(s.channels, c) for s, c in zip(specs[b], channels))
                                        for b in self.branches})
            self.fusions = nn.ModuleList(fusion(c, sentence_channels or hidden) for c in channels)
        self.hidden, self.queries, self.frames, self.box_refine = hidden, queries, frames, box_refine
        self.input_proj = nn.ModuleList([*(_group_norm_conv(c, hidden) for c in channels[-3:]),
                                         _group_norm_conv(channels[-1], hidden, 3, 2, 1)])
        for proj in self.input_proj:
            nn.init.xavier_uniform_(proj[0].weight, gain=1)
            nn.init.constant_(proj[0].bias, 0)
        self.fusion_module = VisionLanguageFusion(hidden, 8)
        self.transformer = DeformableTransformer(hidden, heads, enc_layers, dec_layers, ffn, dropout, levels,
                                                 enc_points, dec_points)
        self.query_embed = nn.Embedding(queries, hidden)
        cls, box = nn.Linear(hidden, 1), MLP(hidden, hidden, 4, 3)
        cls.bias.data = torch.ones(1) * -math.log((1 - 0.01) / 0.01)  # prior probability 0.01
        nn.init.constant_(box.layers[-1].weight.data, 0)
        nn.init.constant_(box.layers[-1].bias.data, 0)
        n_heads = dec_layers if box_refine else 1  # with refinement one head per layer, copies of one init
        self.class_embed = nn.ModuleList(copy.deepcopy(cls) for _ in range(n_heads))
        self.bbox_embed = nn.ModuleList(copy.deepcopy(box) for _ in range(n_heads))
        nn.init.constant_(self.bbox_embed[0].layers[-1].bias.data[2:], -2.0)
        self.pixel_decoder = CrossModalFPN([channels[0], hidden, hidden, hidden], hidden, mask_dim, ffn, 8)
        self.mask_head = DynamicMaskHead(hidden, mask_dim, dynamic_channels, controller_layers, rel_coord)

    def _head(self, kind: str, layer: int) -> nn.Module:
        heads = self.class_embed if kind == "class" else self.bbox_embed
        return heads[layer if self.box_refine else 0]

    def _levels(self, feats: dict[str, list[torch.Tensor]], lang: Language) -> tuple[list[torch.Tensor], int]:
        """The four backbone maps, frames folded into the batch: [(B*T', C_l, H_l, W_l)], and T'.

        Every clip frame takes the temporal cell of a map that covers it (frame t -> cell t // t_stride:
        a per-frame backbone's own map; an I3D's shared cell, as CSTM reads its target frame)."""
        total = clip_frames(feats)
        keep = [total // 2] if self.frames == "target" else list(range(total))  # target: the release's A2D mode
        maps = {}
        for b in self.branches:
            maps[b] = []
            for m, ts in zip(feats[b][-BACKBONE_LEVELS:], self.t_strides[b]):
                m = m if m.dim() == 5 else m.unsqueeze(2)
                cells = [min(f // ts, m.shape[2] - 1) for f in keep]
                maps[b].append(m[:, :, cells] if cells != list(range(m.shape[2])) else m)
        t = len(keep)
        fold = {b: [rearrange(m, "b c t h w -> (b t) c h w") for m in ms] for b, ms in maps.items()}
        if self.fusions is None:
            return fold[self.branches[0]], t
        sentence = lang.joint.repeat_interleave(t, 0)
        return [self.fusions[i](*(self.align[b][i](fold[b][i]) for b in ("spatial", "temporal")), sentence)
                for i in range(BACKBONE_LEVELS)], t

    def forward(self, feats: dict[str, list[torch.Tensor]], lang: Language, out_size: tuple[int, int]) -> dict:
        """
        Args:
            feats: branch -> stage maps (B, C_i, T, H_i, W_i) (the last four are read).
            lang: words (B, N, D) (the same for every branch), mask (B, N), joint sentence (B, D).
            out_size: (H, W) of the input.

        Returns:
            see the module docstring.
        """
        maps, t = self._levels(feats, lang)
        b = maps[0].shape[0] // t
        words = next(iter(lang.words.values()))
        word_pad = ~lang.mask
        word_pos = sine_1d(word_pad, self.hidden, dtype=words.dtype).permute(2, 0, 1).to(words.dtype)  # (N, B, D)
        pads = [torch.zeros(m.shape[0], *m.shape[-2:], dtype=torch.bool, device=m.device) for m in maps]
        poses = [sine_2d(p, self.hidden, dtype=maps[0].dtype).to(maps[0].dtype) for p in pads]
        srcs, src_pads, src_poses = [], [], []
        for lvl in range(len(self.input_proj)):
            src = self.input_proj[lvl](maps[-3 + lvl] if lvl < 3 else maps[-1])
            if lvl < 3:
                pad, pos = pads[-3 + lvl], poses[-3 + lvl]
            else:
                pad = torch.zeros(src.shape[0], *src.shape[-2:], dtype=torch.bool, device=src.device)
                pos = sine_2d(pad, self.hidden, dtype=src.dtype).to(src.dtype)
            h, w = src.shape[-2:]
            flat = rearrange(src, "(b t) c h w -> (t h w) b c", b=b, t=t)
            flat = self.fusion_module(flat, words.permute(1, 0, 2), word_pad, word_pos)
            srcs.append(rearrange(flat, "(t h w) b c -> (b t) c h w", t=t, h=h, w=w))
            src_pads.append(pad)
            src_poses.append(pos)
        tgt = lang.joint[:, None, None, :].expand(b, t, self.queries, self.hidden).reshape(b * t, self.queries, -1)
        hs, memory, init, inter = self.transformer(srcs, tgt, src_pads, src_poses, self.query_embed.weight,
                                                   self.bbox_embed if self.box_refine else None)
        classes, boxes = [], []
        for lvl in range(hs.shape[0]):
            ref = inverse_sigmoid(init if lvl == 0 else inter[lvl - 1])
            cls = self._head("class", lvl)(hs[lvl])
            box = self._head("box", lvl)(hs[lvl])
            if ref.shape[-1] == 4:
                box = box + ref
            else:
                box = torch.cat([box[..., :2] + ref, box[..., 2:]], -1)
            classes.append(cls)
            boxes.append(box.sigmoid())
        mask_features = rearrange(self.pixel_decoder(maps, pads, poses, memory, words, word_pad, t),
                                  "(b t) c h w -> b t c h w", b=b, t=t)
        masks = []
        for lvl in range(hs.shape[0]):
            params = rearrange(hs[lvl], "(b t) q n -> b (t q) n", b=b, t=t)
            points = rearrange(inter[lvl][..., :2], "(b t) q n -> b (t q) n", b=b, t=t)
            m = self.mask_head(mask_features, params, points, out_size)
            masks.append(rearrange(m, "b (t q) h w -> b t q h w", t=t))
        layer = [{"pred_logits": rearrange(c, "(b t) q k -> b t q k", b=b, t=t),
                  "pred_boxes": rearrange(x, "(b t) q n -> b t q n", b=b, t=t), "pred_masks": m}
                 for c, x, m in zip(classes, boxes, masks)]
        out = {**layer[-1], "aux_outputs": layer[:-1]}
        total = clip_frames(feats)
        out["frames"] = [total // 2] if self.frames == "target" else list(range(total))
        out.update(self.select(out, out_size, candidates=not self.training))
        return out

    @staticmethod
    def upsample(masks: torch.Tensor, out_size: tuple[int, int]) -> torch.Tensor:
        """(..., h, w) stride-4 mask logits -> (..., H, W): bilinear x4 (align_corners False, as the
        release's postprocessing), cut to the input."""
        lead = masks.shape[:-2]
        h, w = masks.shape[-2:]
        up = F.interpolate(masks.reshape(-1, 1, h, w), size=(4 * h, 4 * w), mode="bilinear",
                           align_corners=False)[..., :out_size[0], :out_size[1]]
        return up.reshape(*lead, *up.shape[-2:])

    def select(self, out: dict, out_size: tuple[int, int], candidates: bool) -> dict:
        """The clip's query (the best class score averaged over its frames, as the release's video
        inference): its upsampled masks ``logits`` (B, T, H, W) and per-frame ``scores`` (B, T); with
        ``candidates`` every query's masks and scores."""
        scores = out["pred_logits"][..., 0].sigmoid()  # (B, T, Q)
        best = scores.mean(1).argmax(-1)  # (B,)
        idx = best[:, None, None, None, None].expand(-1, scores.shape[1], 1, *out["pred_masks"].shape[-2:])
        chosen = out["pred_masks"].gather(2, idx)[:, :, 0]  # (B, T, h, w)
        res = {"logits": self.upsample(chosen, out_size), "query": best,
               "scores": scores.gather(2, best[:, None, None].expand(-1, scores.shape[1], 1))[..., 0]}
        if candidates:
            res["candidates"] = {"logits": self.upsample(out["pred_masks"], out_size), "scores": scores}
        return res


def clip_frames(feats: dict[str, list[torch.Tensor]]) -> int:
    """T of the clip the maps come from: the longest time axis of the finest maps (a per-frame encoder
    keeps every frame; a map without a time axis counts 1)."""
    return max((ms[0].shape[2] if ms[0].dim() == 5 else 1) for ms in feats.values())
