"""J-HMDB Sentences (evaluation only, as in the paper's Table 2).

::

    Rename_Images/<action>/<video>/%05d.png
    puppet_mask/<action>/<video>/puppet_mask.mat   key 'part_mask', (H, W, T); trailing frames may lack masks
    jhmdb_annotation.txt                            header; columns video_id, query

Three frames per video are evaluated. They are chosen by a fixed rule (the frames at 1/4, 1/2 and
3/4 of the frames that have both an image and a mask) and stored in a samples file,
``jhmdb_samples.csv`` (video_id, frame), so that numbers repeat: the file shipped in
``lvas/data/`` is used when present, else the one in the dataset root, else it is made there once.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from lvas.data.clips import clip_indices
from lvas.inputs import input_spec
from lvas.data.errors import DataError
from lvas.data.samples import SampleDataset, check_pixels, make_item, plain_name, read_image, stack_frames
from lvas.data.vocab import Vocabulary, require_words

SHIPPED_SAMPLES = Path(__file__).with_name("jhmdb_samples.csv")
SAMPLES_NAME = "jhmdb_samples.csv"


def read_annotations(path: Path) -> pd.DataFrame:
    if not path.is_file():
        raise DataError(path, "missing (expected the CSV video_id,query)")
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False)
    except Exception as e:  # noqa: BLE001
        raise DataError(path, "cannot be parsed as CSV", quoted=e) from None
    if not {"video_id", "query"} <= set(df.columns):
        raise DataError(path, f"line 1: the header must name video_id,query; found {len(df.columns)} other column(s)")
    for i, vid in enumerate(df["video_id"]):
        plain_name(vid, "video_id", path, f"line {i + 2}")
    require_words(df["query"], path)
    return df[["video_id", "query"]]


def read_part_mask(path: Path) -> np.ndarray:
    """puppet_mask.mat -> (H, W, T) bool."""
    import scipy.io

    if not path.is_file():
        raise DataError(path, "missing puppet mask (.mat)")
    try:
        declared = {name: shape for name, shape, _ in scipy.io.whosmat(str(path))}
        shape = declared.get("part_mask", ())
        if len(shape) >= 2:  # sized from the header before anything is read
            check_pixels(path, shape[0], shape[1] * (shape[2] if len(shape) > 2 else 1), "part_mask")
        m = scipy.io.loadmat(str(path), variable_names=["part_mask"])["part_mask"]
    except DataError:
        raise
    except KeyError:
        raise DataError(path, "no 'part_mask' variable") from None
    except Exception as e:  # noqa: BLE001 - scipy raises several types for corrupt files
        raise DataError(path, "corrupt .mat file", quoted=e) from None
    if m.ndim == 2:
        m = m[:, :, None]
    if m.ndim != 3:
        raise DataError(path, f"part_mask has shape {m.shape}, expected (H, W, T)")
    return m > 0


def video_dirs(root: Path) -> dict[str, tuple[str, Path]]:
    """video id -> (action, frames folder)."""
    images = root / "Rename_Images"
    if not images.is_dir():
        raise DataError(images, "missing folder of frames (Rename_Images/<action>/<video>/%05d.png)")
    return {v.name: (a.name, v) for a in sorted(images.iterdir()) if a.is_dir()
            for v in sorted(a.iterdir()) if v.is_dir()}


def choose_frames(n_usable: int) -> list[int]:
    """The three evaluated frames (1-based) of a video with ``n_usable`` frames that have masks."""
    if n_usable < 1:
        return []
    return sorted({max(1, min(n_usable, round(n_usable * q))) for q in (0.25, 0.5, 0.75)})


def make_samples(root: str | Path) -> pd.DataFrame:
    """Apply :func:`choose_frames` to every annotated video of a root."""
    root = Path(root)
    ann = read_annotations(root / "jhmdb_annotation.txt")
    dirs = video_dirs(root)
    rows = []
    for vid in ann["video_id"]:
        if vid not in dirs:
            raise DataError(root / "Rename_Images" / "*" / vid, "annotated video has no frames folder")
        action, fdir = dirs[vid]
        n_png = len(list(fdir.glob("*.png")))
        n_mask = read_part_mask(root / "puppet_mask" / action / vid / "puppet_mask.mat").shape[2]
        rows += [(vid, f) for f in choose_frames(min(n_png, n_mask))]
    return pd.DataFrame(rows, columns=["video_id", "frame"])


def load_samples(root: str | Path) -> tuple[pd.DataFrame, Path]:
    """The fixed samples file: shipped, else in the root, else made and written to the root."""
    root = Path(root)
    for path in (SHIPPED_SAMPLES, root / SAMPLES_NAME):
        if path.is_file():
            return pd.read_csv(path, dtype={"video_id": str, "frame": int}), path
    df = make_samples(root)
    df.to_csv(root / SAMPLES_NAME, index=False)
    return df, root / SAMPLES_NAME


class JHMDBSentences(SampleDataset):
    """J-HMDB Sentences evaluation samples; items as :class:`lvas.data.a2d.A2DSentences`."""

    def __init__(self, root: str | Path, split: str = "test", frames: int = 8, frame_stride: int = 2,
                 size: int = 320, vocab: Vocabulary | None = None, max_words: int = 20,
                 skip_bad: bool = False, input: str = "stretch", tokenizer: str = "words") -> None:
        if split != "test":
            raise ValueError("J-HMDB Sentences is for evaluation only: split must be 'test'")
        self.root = Path(root)
        if not self.root.is_dir():
            raise DataError(self.root, "dataset folder not found")
        self.frames, self.frame_stride, self.size, self.max_words = frames, frame_stride, size, max_words
        self.skip_bad = skip_bad
        self.input = input_spec(input)
        ann = read_annotations(self.root / "jhmdb_annotation.txt")
        self.queries_by_video = dict(zip(ann["video_id"], ann["query"]))
        self.dirs = video_dirs(self.root)
        self.index, self.samples_path = load_samples(self.root)
        self.vocab = vocab if vocab is not None else Vocabulary.build(ann["query"], tokenizer=tokenizer)
        self.notes: list[str] = []

    def queries(self) -> list[str]:
        return [self.queries_by_video.get(str(v), "") for v in self.index["video_id"]]

    def load(self, i: int) -> dict[str, Any]:
        row = self.index.iloc[i]
        vid, frame = str(row["video_id"]), int(row["frame"])
        if vid not in self.dirs:
            raise DataError(self.root / "Rename_Images" / "*" / vid, "video in the samples file has no frames folder")
        action, fdir = self.dirs[vid]
        n_png = len(list(fdir.glob("*.png")))
        idx = clip_indices(frame, n_png, self.frames, self.frame_stride, self.input.clip_start)
        paths = [fdir / f"{j:05d}.png" for j in idx]
        imgs = stack_frames([read_image(p) for p in paths], paths)
        mat_path = self.root / "puppet_mask" / action / vid / "puppet_mask.mat"
        masks = read_part_mask(mat_path)
        if frame > masks.shape[2]:
            raise DataError(mat_path, f"no mask for frame {frame} (part_mask has {masks.shape[2]} frames)")
        gt = torch.from_numpy(masks[:, :, frame - 1].copy())
        meta = {"video": vid, "frame": frame, "instance": 0, "kind": action, "frames": idx,
                "image_id": f"v_{vid}_f_{frame}"}  # MTTR's COCO image id for J-HMDB (one query per video)
        return make_item(imgs, gt, mat_path, self.size, self.vocab, self.queries_by_video.get(vid, ""), self.max_words, meta,
                         self.input)
