"""MeViS (Ding et al., ICCV 2023, "MeViS: A Large-scale Benchmark for Video Segmentation with Motion
Expressions") in its public on-disk layout, one folder per split::

    <split>/JPEGImages/<video>/<frame>.jpg
    <split>/meta_expressions.json
        {"videos": {<video>: {"frames": [<frame>, ...],
                              "expressions": {<exp id>: {"exp": <query>, "obj_id": [...], "anno_id": [...]}}}}}
    <split>/mask_dict.json        (train, valid_u)   {<anno_id>: [<COCO RLE> or null, one per listed frame]}

Splits (``data.train_split`` / ``data.test_split``):

* ``train``: 1,662 videos with masks;
* ``valid_u``: 50 videos with masks, scored here (MeViS's own ``tools/eval_mevis.py`` on this split);
* ``valid``: 140 videos without masks: ``lvas eval CKPT --split valid --submission OUT.zip`` writes
  ``<video>/<expression>/<frame>.png`` for the CodaBench server.

An expression may name several objects (1.59 on average): its ground truth in a frame is the union of
its anno_ids' masks in that frame (their sum, as MeViS's script adds them), empty where none is visible
-- and such frames are scored (J = F = 1 for an empty prediction, 0 for anything else), never
skipped. J&F is MeViS's: per expression, J (region IoU) and F (boundary F, the DAVIS definition) are
averaged over every listed frame of the video, then over the expressions, and J&F = (J + F) / 2
(:class:`lvas.metrics.VideoJF`, the ``video_jf`` evaluator).

Samples: training, one per (expression, listed frame) -- every frame of MeViS is annotated, so a clip
may centre on any of them, including the frames where the target is absent or has left the view;
evaluation, one per (expression, frame), or with ``clips: video`` one per expression holding every
listed frame (a query-based model's video inference).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import torch

from lvas.data.clips import clip_indices
from lvas.data.errors import DataError
from lvas.data.samples import SampleDataset, make_item, plain_name, read_image, stack_frames
from lvas.data.vocab import Vocabulary, require_words
from lvas.data.ytvos import listed_expressions
from lvas.inputs import input_spec

SPLITS = ("train", "valid_u", "valid")
MASKED = ("train", "valid_u")


def read_expressions(path: Path) -> pd.DataFrame:
    """meta_expressions.json -> one row per expression: video, expression, query, anno_ids, frames.
    Every problem names the file and the video / expression it is in."""
    if not path.is_file():
        raise DataError(path, "missing (expected MeViS meta_expressions.json)")
    rows = []
    for vid, eid, e, frames in listed_expressions(path):
        where = f"video {vid}, expression {eid}"
        ids = e.get("anno_id")
        if not isinstance(ids, list) or not ids:
            raise DataError(path, f"{where}: no anno_id (every expression names at least one object)")
        if not all(isinstance(a, (int, str)) and not isinstance(a, bool) and str(a).isdigit() for a in ids):
            raise DataError(path, f"{where}: anno_id must be a list of integers")
        kind = e.get("kind", "")  # not in MeViS's files: lvas's synthetic set names a query kind here
        rows.append((vid, eid, e["exp"], tuple(str(int(a)) for a in ids), frames, kind if isinstance(kind, str) else ""))
    table = pd.DataFrame(rows, columns=["video", "expression", "query", "anno_ids", "frames", "kind"])
    require_words(table["query"], path, first_row=1)
    return table


def read_mask_dict(path: Path, table: pd.DataFrame) -> dict[str, list]:
    """mask_dict.json -> anno_id -> one COCO RLE (or None) per listed frame; an anno_id an expression
    names but the file lacks, or a list of the wrong length, is refused naming the video, the
    expression and the anno_id."""
    if not path.is_file():
        raise DataError(path, "missing (expected MeViS mask_dict.json: anno_id -> one RLE or null per frame)")
    try:
        masks = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise DataError(path, "cannot be parsed as JSON") from None
    if not isinstance(masks, dict):
        raise DataError(path, "expected an object mapping anno_id to a list of RLEs")
    for r in table.itertuples(index=False):
        for a in r.anno_ids:
            where = f"video {r.video}, expression {r.expression}, anno_id {a}"
            if a not in masks:
                raise DataError(path, f"{where}: not in the file")
            per_frame = masks[a]
            if not isinstance(per_frame, list) or len(per_frame) != len(r.frames):
                n = len(per_frame) if isinstance(per_frame, list) else "no list of"
                raise DataError(path, f"{where}: {n} RLEs for the video's {len(r.frames)} listed frames")
    return masks


def decode_rle(rle: Any, path: Path, where: str, hw: tuple[int, int]) -> np.ndarray:
    """(H, W) bool of one COCO RLE ``{"size": [h, w], "counts": ...}`` (None: an empty mask); its size
    must be the frame's."""
    if rle is None:
        return np.zeros(hw, bool)
    if not isinstance(rle, dict) or not isinstance(rle.get("size"), list) or "counts" not in rle:
        raise DataError(path, f"{where}: expected a COCO RLE {{\"size\": [h, w], \"counts\": ...}} or null")
    if tuple(rle["size"]) != tuple(hw):
        raise DataError(path, f"{where}: RLE of {rle['size'][1]}x{rle['size'][0]} pixels; the frame is "
                              f"{hw[1]}x{hw[0]}")
    from pycocotools import mask as mask_utils

    counts = rle["counts"]
    try:
        return mask_utils.decode({"size": list(hw), "counts": counts.encode() if isinstance(counts, str) else counts}
                                 ).astype(bool)
    except Exception:  # noqa: BLE001 - pycocotools raises bare exceptions on a damaged RLE
        raise DataError(path, f"{where}: the RLE cannot be decoded") from None


class MeViS(SampleDataset):
    """MeViS samples as model inputs; items as :class:`lvas.data.ytvos.RefYouTubeVOS` (``meta`` with
    ``expression``, ``frame_name``, ``frame_names``); the target of a frame is the union of the
    expression's objects there (see the module docstring).

    Args:
        root: dataset folder holding ``train/``, ``valid_u/`` and ``valid/``.
        split: ``train``, ``valid_u`` or ``valid``.
        clips: evaluation samples: ``frame`` (a clip around each listed frame) or ``video`` (one per
            expression, every listed frame; one per batch).
        other arguments: as A2D Sentences.
    """

    evaluators = ("segmentation", "video_jf")
    submission_prefix = ""  # CodaBench reads <video>/<expression>/<frame>.png at the top of the zip
    scored_split = "valid_u"  # where masks are public

    def __init__(self, root: str | Path, split: str = "train", frames: int = 2, frame_stride: int = 1,
                 size: int = 320, vocab: Vocabulary | None = None, max_words: int = 20,
                 skip_bad: bool = False, input: str = "stretch", tokenizer: str = "words", *,
                 clips: Literal["frame", "video"] = "frame") -> None:
        if split not in SPLITS:
            raise DataError(Path(root), f"MeViS has no split {split!r}; expected one of {', '.join(SPLITS)}")
        self.root = Path(root)
        if not self.root.is_dir():
            raise DataError(self.root, "dataset folder not found")
        self.split = split
        self.frames, self.frame_stride, self.size, self.max_words = frames, frame_stride, size, max_words
        self.skip_bad = skip_bad
        self.input = input_spec(input)
        self.images = self.root / split / "JPEGImages"
        self.has_masks = split in MASKED
        self.mask_file = self.root / split / "mask_dict.json"
        table = read_expressions(self.root / split / "meta_expressions.json")
        self.masks = read_mask_dict(self.mask_file, table) if self.has_masks else {}
        self.frame_lists = {r.video: r.frames for r in table.itertuples(index=False)}
        self.whole_videos = clips == "video" and split != "train"
        self.variable_clips = self.whole_videos
        if self.whole_videos:
            rows = [(r.video, r.expression, r.query, r.anno_ids, len(r.frames) // 2 + 1, r.frames[len(r.frames) // 2],
                     r.kind) for r in table.itertuples(index=False)]
        else:
            rows = [(r.video, r.expression, r.query, r.anno_ids, i + 1, f, r.kind) for r in table.itertuples(index=False)
                    for i, f in enumerate(r.frames)]
        self.index = pd.DataFrame(rows, columns=["video", "expression", "query", "anno_ids", "frame", "frame_name", "kind"])
        if vocab is None:
            vocab = (Vocabulary.build(table["query"], tokenizer=tokenizer) if split == "train"
                     else self.build_vocab(self.root, tokenizer))
        self.vocab = vocab
        self.notes: list[str] = []

    @staticmethod
    def build_vocab(root: str | Path, tokenizer: str = "words") -> Vocabulary:
        """Vocabulary of the training queries."""
        return Vocabulary.build(read_expressions(Path(root) / "train" / "meta_expressions.json")["query"],
                                tokenizer=tokenizer)

    def target(self, video: str, expression: str, anno_ids: tuple[str, ...], j: int, hw: tuple[int, int]) -> np.ndarray:
        """(H, W) bool: the union of the expression's objects in listed frame ``j`` (0-based)."""
        out = np.zeros(hw, bool)
        for a in anno_ids:
            where = f"video {video}, expression {expression}, anno_id {a}, frame {self.frame_lists[video][j]}"
            out |= decode_rle(self.masks[a][j], self.mask_file, where, hw)
        return out

    def load(self, i: int) -> dict[str, Any]:
        row = self.index.iloc[i]
        vid, frame, exp = str(row["video"]), int(row["frame"]), str(row["expression"])
        names = self.frame_lists[vid]
        idx = (list(range(1, len(names) + 1)) if self.whole_videos
               else clip_indices(frame, len(names), self.frames, self.frame_stride, self.input.clip_start))
        paths = [self.images / vid / f"{names[j - 1]}.jpg" for j in idx]
        imgs = stack_frames([read_image(p) for p in paths], paths)
        hw = tuple(imgs.shape[-2:])
        gts = {}
        for pos in (range(len(idx)) if self.whole_videos else [len(idx) // 2]):
            if self.has_masks:
                gts[pos] = (torch.from_numpy(self.target(vid, exp, row["anno_ids"], idx[pos] - 1, hw)), self.mask_file)
            else:  # valid: no public masks; a blank stand-in of the frame's size, never scored
                gts[pos] = (torch.zeros(hw, dtype=torch.bool), self.mask_file)
        meta = {"video": vid, "frame": frame, "instance": 0, "expression": exp, "frame_name": str(row["frame_name"]),
                "kind": str(row["kind"]), "frames": idx, "frame_names": [names[j - 1] for j in idx],
                "objects": len(row["anno_ids"])}
        gt, path = gts.pop(len(idx) // 2)
        return make_item(imgs, gt, path, self.size, self.vocab, str(row["query"]), self.max_words, meta, self.input,
                         gts)
