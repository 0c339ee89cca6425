"""Ref-YouTube-VOS (Seo et al., ECCV 2020) in its public on-disk layout.

::

    meta_expressions/<folder>/meta_expressions.json
        {"videos": {<video>: {"expressions": {<exp id>: {"exp": <query>, "obj_id": <object id>}},
                              "frames": [<frame name>, ...]}}}          (valid/test: no obj_id)
    <folder>/JPEGImages/<video>/<frame name>.jpg                      every 5th frame of the video
    <folder>/Annotations/<video>/<frame name>.png                     palette PNG: pixel = object id
    <folder>/meta.json   (train) {"videos": {<video>: {"objects": {<object id>: {"frames": [...]}}}}}

Splits (``data.train_split`` / ``data.test_split``):

* ``train``: the ``train`` folder less the held-out videos;
* ``heldout``: the held-out videos of the ``train`` folder (:func:`heldout_videos`, 10 %, fixed by
  the video ids alone) -- the official ``valid`` masks are not public, so this is where lvas scores
  J&F locally (a table row is never chosen on it: model selection uses ``train.select``'s own
  validation videos, carved from ``train``);
* ``valid`` / ``test``: the official folders, without masks: predictions only, written in the
  submission layout by ``lvas eval CKPT --submission OUT.zip``.

A sample is one (video, expression, frame). Training samples are the frames in which the referred
object is annotated (``meta.json``; without it, every listed frame that has an annotation PNG);
evaluation samples are every listed frame of every expression, so per-expression J and F
(:class:`lvas.metrics.VideoJF`) average over the whole expression as the benchmark does.

Clips are built over the listed frames, in list order: ``data.frame_stride`` counts listed frames
(the files are every 5th frame, so LBDT's "k = 5" difference is ``frame_stride: 1`` here), clamped
at the video's first listed frame as LBDT's loader falls back to it.
"""

from __future__ import annotations

import hashlib
import json
import warnings
import math
from pathlib import Path
from typing import Any, Iterator, Literal

import numpy as np
import pandas as pd
import torch

from lvas.data.clips import clip_indices
from lvas.data.errors import DataError
from lvas.data.samples import SampleDataset, check_pixels, make_item, plain_name, read_image, stack_frames
from lvas.data.vocab import Vocabulary, require_words
from lvas.inputs import input_spec

SPLITS = {"train": "train", "heldout": "train", "valid": "valid", "test": "test"}
HELDOUT_FRACTION = 0.1


def read_meta_expressions(path: Path, need_objects: bool) -> pd.DataFrame:
    """meta_expressions.json -> one row per expression: video, expression, query, obj_id, frames."""
    if not path.is_file():
        raise DataError(path, "missing (expected Ref-YouTube-VOS meta_expressions.json)")
    rows = []
    for vid, eid, e, frames in listed_expressions(path):
        obj = e.get("obj_id")
        if need_objects and obj is None:
            raise DataError(path, f"video {vid}, expression {eid}: no obj_id (needed for masks)")
        rows.append((vid, eid, e["exp"], None if obj is None else int(obj), frames))
    table = pd.DataFrame(rows, columns=["video", "expression", "query", "obj_id", "frames"])
    require_words(table["query"], path, first_row=1)
    return table


def listed_expressions(path: Path) -> Iterator[tuple[str, str, dict, list[str]]]:
    """(video, expression id, expression, listed frames) of a ``meta_expressions.json`` in the layout
    Ref-YouTube-VOS and MeViS share (``videos -> {frames, expressions -> {exp, ...}}``), videos by id and
    expressions by number; every name checked to be plain, every problem one DataError naming the file
    and the video / expression."""
    try:
        videos = json.loads(path.read_text())["videos"]
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(path, f"cannot be parsed as JSON: {e}") from None
    except (KeyError, TypeError):
        raise DataError(path, 'expected an object with a "videos" key') from None
    if not isinstance(videos, dict):
        raise DataError(path, '"videos" must map video ids to {expressions, frames}')
    for k, (vid, v) in enumerate(sorted(videos.items())):
        vid = plain_name(vid, "video id", path, f"video #{k + 1}")
        if not isinstance(v, dict) or not isinstance(v.get("expressions"), dict) or not isinstance(v.get("frames"), list):
            raise DataError(path, f"video {vid}: expected {{\"expressions\": {{...}}, \"frames\": [...]}}")
        frames = [plain_name(f, "frame name", path, f"video {vid}, frame #{j + 1}") for j, f in enumerate(v["frames"])]
        if not frames:
            raise DataError(path, f"video {vid}: no frames listed")
        for eid, e in sorted(v["expressions"].items(), key=lambda kv: (len(kv[0]), kv[0])):
            eid = plain_name(eid, "expression id", path, f"video {vid}")
            if not isinstance(e, dict) or not isinstance(e.get("exp"), str):
                raise DataError(path, f"video {vid}, expression {eid}: expected {{\"exp\": TEXT, ...}}")
            yield vid, eid, e, frames


def heldout_videos(videos: list[str], fraction: float = HELDOUT_FRACTION) -> list[str]:
    """The held-out videos of the train folder: the ``ceil(fraction * n)`` videos whose SHA-1 of the
    id is smallest -- fixed by the ids alone, whatever order or machine."""
    n = math.ceil(fraction * len(videos)) if len(videos) > 1 else 0
    return sorted(sorted(videos, key=lambda v: hashlib.sha1(v.encode()).hexdigest())[:n])


def read_annotation_ids(path: Path) -> np.ndarray:
    """(H, W) object ids of a palette (or grey) annotation PNG; a missing, corrupt or RGB file raises
    DataError naming it."""
    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                if im.mode not in ("P", "L"):
                    raise DataError(path, f"annotation PNG in mode {im.mode}; expected a palette (P) image of object ids")
                check_pixels(path, im.size[1], im.size[0], "annotation")
                arr = np.asarray(im)
    except FileNotFoundError:
        raise DataError(path, "missing annotation PNG") from None
    except (UnidentifiedImageError, OSError, SyntaxError, Image.DecompressionBombError) as e:
        raise DataError(path, "corrupt annotation PNG", quoted=e) from None
    return arr


def read_object_mask(path: Path, obj_id: int) -> np.ndarray:
    """(H, W) bool: the pixels of object ``obj_id`` in an annotation PNG."""
    return read_annotation_ids(path) == obj_id


def _object_frames(meta: Path, ann_dir: Path, table: pd.DataFrame) -> dict[tuple[str, int], set[str]]:
    """(video, object id) -> frames in which the object is annotated: from ``meta.json``, else
    every listed frame with an annotation PNG."""
    if meta.is_file():
        try:
            videos = json.loads(meta.read_text())["videos"]
            return {(vid, int(o)): {str(f) for f in spec["frames"]}
                    for vid, v in videos.items() for o, spec in v["objects"].items()}
        except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, ValueError, AttributeError) as e:
            raise DataError(meta, 'expected {"videos": {video: {"objects": {id: {"frames": [...]}}}}}',
                            quoted=f"{type(e).__name__}: {e}") from None
    out = {}
    for r in table.itertuples(index=False):
        out[(r.video, r.obj_id)] = {f for f in r.frames if (ann_dir / r.video / f"{f}.png").is_file()}
    return out


class RefYouTubeVOS(SampleDataset):
    """Ref-YouTube-VOS samples as model inputs; items as :class:`lvas.data.a2d.A2DSentences` with
    ``meta`` adding ``expression`` (id) and ``frame_name``; scored per frame and as DAVIS J&F per
    expression.

    Args:
        root: dataset folder (holding ``meta_expressions/``, ``train/``, ``valid/``).
        split: ``train``, ``heldout``, ``valid`` or ``test`` (see the module docstring).
        frames, frame_stride, size, vocab, max_words, skip_bad, input, tokenizer: as A2D Sentences.
        clips: evaluation samples (every split but ``train``): ``frame`` -- one per listed frame, a clip of
            ``data.frames`` around it; ``video`` -- one per expression, the clip being every listed frame
            of the video, each scored (how ReferFormer's and MTTR's video inference reads a video: a
            model that predicts every frame of its clip, ``decoder.frames: all``, picks one query for
            the whole video). Such clips differ in length: they are evaluated one per batch.
    """

    evaluators = ("segmentation", "video_jf")
    submission_prefix = "Annotations/"  # the challenge server's layout
    scored_split = "heldout"  # where masks are public
    SPLITS = SPLITS  # split -> folder
    MASKED = ("train",)  # the folders with public annotation PNGs
    NAME = "Ref-YouTube-VOS"

    def __init__(self, root: str | Path, split: str = "train", frames: int = 2, frame_stride: int = 1,
                 size: int = 320, vocab: Vocabulary | None = None, max_words: int = 20,
                 skip_bad: bool = False, input: str = "stretch", tokenizer: str = "words", *,
                 clips: Literal["frame", "video"] = "frame") -> None:
        if split not in self.SPLITS:
            raise DataError(Path(root), f"{self.NAME} has no split {split!r}; expected one of {', '.join(self.SPLITS)}")
        self.root = Path(root)
        if not self.root.is_dir():
            raise DataError(self.root, "dataset folder not found")
        self.split, self.folder = split, self.SPLITS[split]
        self.frames, self.frame_stride, self.size, self.max_words = frames, frame_stride, size, max_words
        self.skip_bad = skip_bad
        self.input = input_spec(input)
        self.images = self.root / self.folder / "JPEGImages"
        self.annotations = self.root / self.folder / "Annotations"
        self.has_masks = self.folder in self.MASKED
        table = self.read_table(self.root, self.folder, need_objects=self.has_masks)
        if "heldout" in self.SPLITS and self.folder == "train":
            held = set(heldout_videos(sorted(set(table["video"]))))
            table = table[table["video"].isin(held) == (split == "heldout")].reset_index(drop=True)
        self.table = table  # the split's expressions
        self.frame_lists = {r.video: r.frames for r in table.itertuples(index=False)}
        # training: the frames where the object is annotated; evaluation: every listed frame
        present = self.training_frames(table) if split == "train" else None
        self.whole_videos = clips == "video" and split != "train"
        self.variable_clips = self.whole_videos  # each clip its video's length: one per batch
        if self.whole_videos:  # one sample per expression (its middle frame names it)
            rows = [(r.video, r.expression, r.query, r.obj_id, len(r.frames) // 2 + 1, r.frames[len(r.frames) // 2])
                    for r in table.itertuples(index=False)]
        else:
            rows = [(r.video, r.expression, r.query, r.obj_id, i + 1, f) for r in table.itertuples(index=False)
                    for i, f in enumerate(r.frames) if present is None or f in present.get((r.video, r.obj_id), ())]
        self.index = pd.DataFrame(rows, columns=["video", "expression", "query", "obj_id", "frame", "frame_name"])
        if vocab is None:  # the training queries: already read when this is the training split
            vocab = (Vocabulary.build(table["query"], tokenizer=tokenizer) if split == "train"
                     else self.build_vocab(self.root, tokenizer))
        self.vocab = vocab
        self.notes: list[str] = []

    @staticmethod
    def read_table(root: Path, folder: str, need_objects: bool) -> pd.DataFrame:
        """The expressions of one folder (:func:`read_meta_expressions`)."""
        return read_meta_expressions(root / "meta_expressions" / folder / "meta_expressions.json", need_objects)

    def training_frames(self, table: pd.DataFrame) -> dict[tuple[str, int], set[str]] | None:
        """(video, object id) -> the frames a training sample may centre on (None: every listed frame)."""
        return _object_frames(self.root / "train" / "meta.json", self.annotations, table)

    @staticmethod
    def build_vocab(root: str | Path, tokenizer: str = "words") -> Vocabulary:
        """Vocabulary of the training queries (the train folder less the held-out videos)."""
        table = read_meta_expressions(Path(root) / "meta_expressions" / "train" / "meta_expressions.json", True)
        held = set(heldout_videos(sorted(set(table["video"]))))
        return Vocabulary.build(table.loc[~table["video"].isin(held), "query"], tokenizer=tokenizer)

    def extra_meta(self, row: pd.Series) -> dict[str, Any]:
        """What a dataset adds to a sample's ``meta`` (none here)."""
        return {}

    def load(self, i: int) -> dict[str, Any]:
        row = self.index.iloc[i]
        vid, frame = str(row["video"]), int(row["frame"])
        names = self.frame_lists[vid]
        idx = (list(range(1, len(names) + 1)) if self.whole_videos
               else clip_indices(frame, len(names), self.frames, self.frame_stride, self.input.clip_start))
        paths = [self.images / vid / f"{names[j - 1]}.jpg" for j in idx]
        imgs = stack_frames([read_image(p) for p in paths], paths)
        gts = {}
        for pos in (range(len(idx)) if self.whole_videos else [len(idx) // 2]):
            png = self.annotations / vid / f"{names[idx[pos] - 1]}.png"
            if self.has_masks:
                gts[pos] = (torch.from_numpy(read_object_mask(png, int(row["obj_id"]))), png)
            else:  # no public masks: a blank stand-in so the item has the frame's size; never scored
                gts[pos] = (torch.zeros(imgs.shape[-2:], dtype=torch.bool), png)
        meta = {"video": vid, "frame": frame, "instance": int(row["expression"]) if str(row["expression"]).isdigit()
                else 0, "expression": str(row["expression"]), "frame_name": str(row["frame_name"]), "kind": "",
                "frames": idx, "frame_names": [names[j - 1] for j in idx], **self.extra_meta(row)}
        gt, png = gts.pop(len(idx) // 2)
        return make_item(imgs, gt, png, self.size, self.vocab, str(row["query"]), self.max_words, meta, self.input,
                         gts)
