"""A2D Sentences (Gavrilyuk et al. 2018) in its public on-disk layout.

::

    Release/videoset.csv        no header: vid, label, start_time, end_time, height, width,
                                total_frames, annotated_frames, subset (0 train, 1 test)
    Release/clips320H/<vid>.mp4 the videos (320 px high); ``lvas data prepare a2d`` extracts
    Release/frames/<vid>/<frame:05d>.jpg   1-based frames (our prepared layout)
    text_annotations/a2d_annotation.txt    CSV with header video_id,instance_id,query
                                           (the synthetic set adds a ``kind`` column)
    text_annotations/a2d_missed_videos.txt one video id per line, excluded
    text_annotations/a2d_annotation_with_instances/<vid>/<frame:05d>.h5  (MATLAB v7.3)
        instance  instance ids in this frame
        reMask    (N, W, H) for N > 1, (W, H) for one instance: transposed MATLAB arrays
        reBBox    (4, N): x1, y1, x2, y2

A sample is one (query, annotated frame in which its instance appears); its clip is
``frames`` frames centred on that frame with ``frame_stride``, clamped at the video's ends.
"""

from __future__ import annotations

import contextlib
import csv
import io
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import torch
from lvas.data.clips import clip_indices
from lvas.inputs import input_spec
from lvas.data.errors import DataError
from lvas.errors import excerpt
from lvas.data.samples import (SampleDataset, check_pixels, collate, make_item, plain_name,  # noqa: F401  (re-exported)
                               read_image, stack_frames)
from lvas.data.vocab import Vocabulary, require_words

VIDEOSET_COLUMNS = ["vid", "label", "start_time", "end_time", "height", "width", "total_frames",
                    "annotated_frames", "subset"]
SPLITS = {"train": 0, "test": 1}


@dataclass(frozen=True)
class A2DLayout:
    """The paths of an A2D Sentences root."""

    root: Path

    @property
    def videoset(self) -> Path:
        return self.root / "Release" / "videoset.csv"

    @property
    def clips(self) -> Path:
        return self.root / "Release" / "clips320H"

    @property
    def frames(self) -> Path:
        return self.root / "Release" / "frames"

    @property
    def annotations(self) -> Path:
        return self.root / "text_annotations" / "a2d_annotation.txt"

    @property
    def missed(self) -> Path:
        return self.root / "text_annotations" / "a2d_missed_videos.txt"

    @property
    def instances(self) -> Path:
        return self.root / "text_annotations" / "a2d_annotation_with_instances"

    def frame(self, vid: str, number: int) -> Path:
        return self.frames / vid / f"{number:05d}.jpg"

    def h5(self, vid: str, number: int) -> Path:
        return self.instances / vid / f"{number:05d}.h5"


# --------------------------------------------------------------------------- readers


def read_videoset(path: Path) -> pd.DataFrame:
    """videoset.csv (no header, 9 columns) -> DataFrame with named columns."""
    if not path.is_file():
        raise DataError(path, "missing (expected the headerless 9-column videoset.csv of A2D)")
    try:
        df = pd.read_csv(path, header=None, dtype={0: str})
    except Exception as e:  # noqa: BLE001
        raise DataError(path, "cannot be parsed as CSV", quoted=e) from None
    if df.shape[1] != 9:
        raise DataError(path, f"expected 9 columns ({', '.join(VIDEOSET_COLUMNS)}), found {df.shape[1]}")
    df.columns = VIDEOSET_COLUMNS
    for i, vid in enumerate(df["vid"]):
        plain_name(vid, "video id", path, f"line {i + 1}")
    bad = ~df["subset"].isin([0, 1])
    if bad.any():
        raise DataError(path, f"row {int(bad.idxmax()) + 1}: subset must be 0 (train) or 1 (test)")
    return df


_INSTANCE = re.compile(r"^\s*(\d+)")


def read_queries(path: Path) -> tuple[pd.DataFrame, list[str]]:
    """a2d_annotation.txt -> (DataFrame video_id, instance_id (int), query, kind; notes).

    The public file has one malformed row (instance_id ``"1 (copy)"`` in T6bNPuKV-wY): the
    leading integer is kept and exact duplicates are dropped; each such fix is returned as a note.
    ``label`` keeps the instance_id as written: MTTR's COCO ground truth has no image for a row
    whose id is not a plain integer (protocols ``coco`` / ``coco_top1`` leave it out; see
    :func:`coco_image_id`).
    """
    if not path.is_file():
        raise DataError(path, "missing (expected the CSV video_id,instance_id,query)")
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False)
    except Exception as e:  # noqa: BLE001
        raise DataError(path, "cannot be parsed as CSV", quoted=e) from None
    need = {"video_id", "instance_id", "query"}
    if not need <= set(df.columns):
        # the header is not quoted: a file that is not the annotation (a link to a password file) stays unread
        raise DataError(path, f"line 1: the header must name video_id,instance_id,query; found {len(df.columns)} "
                              f"other column(s)")
    notes = []
    ids = []
    df["label"] = [raw.strip() for raw in df["instance_id"]]
    for i, raw in enumerate(df["instance_id"]):
        m = _INSTANCE.match(raw)
        if m is None:
            raise DataError(path, f"line {i + 2}: instance_id is not an integer")
        if m.group(0).strip() != raw.strip():
            notes.append(f"{path}: row {i + 2}: instance_id {excerpt(raw)} read as {m.group(1)}")
        ids.append(int(m.group(1)))
    df["instance_id"] = ids
    for i, vid in enumerate(df["video_id"]):
        plain_name(vid, "video_id", path, f"line {i + 2}")
    require_words(df["query"], path)
    if "kind" not in df:
        df["kind"] = ""
    before = len(df)
    df = df.drop_duplicates(["video_id", "instance_id", "query"]).reset_index(drop=True)
    if len(df) < before:
        notes.append(f"{path}: dropped {before - len(df)} duplicate row(s)")
    return df[["video_id", "instance_id", "query", "kind", "label"]], notes


def coco_image_id(video: str, frame: int, label: str) -> str | None:
    """MTTR's COCO image id of an A2D sample, ``v_<video>_f_<frame>_i_<instance_id>`` (the string
    COCOeval sorts images by, which orders tied scores); None for a row whose instance_id is not a
    plain integer (``1 (copy)``), which MTTR's ground-truth script leaves out."""
    return f"v_{video}_f_{frame}_i_{label}" if label.isdigit() else None


def read_missed(path: Path) -> set[str]:
    """a2d_missed_videos.txt -> set of excluded video ids (an absent file excludes none)."""
    if not path.is_file():
        return set()
    return {line.strip() for line in path.read_text().splitlines() if line.strip()}


@contextlib.contextmanager
def _instance_h5(path: Path):
    """Open one frame's instance .h5; a missing or corrupt file raises DataError naming it."""
    import h5py

    try:
        with h5py.File(path, "r") as f:
            yield f
    except FileNotFoundError:
        raise DataError(path, "missing instance annotation (.h5)") from None
    except (OSError, KeyError) as e:
        raise DataError(path, f"corrupt or not an A2D instance .h5 ({e})") from None


def _ids(f, path: Path) -> list[int]:
    if "instance" not in f or f["instance"].dtype.kind not in "biuf" or f["instance"].size > 10_000:
        raise DataError(path, "'instance' must hold the annotated instance ids as numbers")
    values = np.asarray(f["instance"]).ravel()
    if not np.isfinite(values).all():
        raise DataError(path, "'instance' holds a non-finite id")
    return [int(round(float(v))) for v in values]


def _mask_shape(f, path: Path) -> tuple[int, ...]:
    """The reMask dataset's shape from its header, checked: numbers, (W, H) or (N, W, H), not oversized."""
    if "reMask" not in f or not hasattr(f["reMask"], "dtype"):
        raise DataError(path, "no 'reMask' dataset")
    m = f["reMask"]
    if m.dtype.kind not in "biuf" or m.ndim not in (2, 3):
        raise DataError(path, f"'reMask' must be a 2-D or 3-D array of numbers (found {m.ndim}-D {m.dtype.kind!r})")
    check_pixels(path, m.shape[-1], m.shape[-2], "mask")
    return m.shape


def read_instance_info(path: Path) -> tuple[list[int], tuple[int, int]]:
    """Instance ids annotated in one frame's .h5 and the (H, W) of its masks (masks not read)."""
    with _instance_h5(path) as f:
        shape = _mask_shape(f, path)
        return _ids(f, path), (shape[-1], shape[-2])


def read_instance_ids(path: Path) -> list[int]:
    """Instance ids annotated in one frame's .h5."""
    with _instance_h5(path) as f:
        return _ids(f, path)


def read_instance_mask(path: Path, instance: int) -> np.ndarray:
    """The (H, W) bool mask of ``instance`` in one frame's .h5 (MATLAB layout transposed back); the
    header is checked before anything is decompressed."""
    with _instance_h5(path) as f:
        ids = _ids(f, path)
        _mask_shape(f, path)
        masks = np.asarray(f["reMask"])
    if masks.ndim == 2:  # one instance: (W, H)
        masks = masks[None]
    if masks.ndim != 3 or masks.shape[0] != len(ids):
        raise DataError(path, f"reMask has shape {masks.shape} for {len(ids)} instance(s)")
    if instance not in ids:
        raise DataError(path, f"instance {instance} is not annotated in this frame (instances: {ids})")
    return masks[ids.index(instance)].T > 0


def read_jpeg(path: Path) -> torch.Tensor:
    """An A2D frame: :func:`read_image` with the hint to extract frames first."""
    return read_image(path, "run `lvas data prepare a2d ROOT` to extract frames")


# --------------------------------------------------------------------------- index


def build_index(root: str | Path, split: str) -> tuple[pd.DataFrame, list[str]]:
    """One row per sample: video, frame, instance, query, kind, n_frames; plus notes on what was fixed.

    Reads every annotated frame's instance ids once. Raises DataError for missing top-level files.
    """
    lay = A2DLayout(Path(root))
    if split not in SPLITS:
        raise ValueError(f"split {split!r}: expected one of {', '.join(SPLITS)}")
    if not lay.root.is_dir():
        raise DataError(lay.root, "dataset folder not found")
    videos = read_videoset(lay.videoset)
    queries, notes = read_queries(lay.annotations)
    missed = read_missed(lay.missed)
    keep = set(videos.loc[videos["subset"] == SPLITS[split], "vid"]) - missed
    queries = queries[queries["video_id"].isin(keep)]
    rows = []
    for vid, group in queries.groupby("video_id", sort=True):
        inst_dir = lay.instances / vid
        if not inst_dir.is_dir():
            raise DataError(inst_dir, "missing instance annotation folder for a video with queries")
        frames_dir = lay.frames / vid
        n_frames = len(list(frames_dir.glob("*.jpg"))) if frames_dir.is_dir() else 0
        per_frame = {int(p.stem): read_instance_ids(p) for p in sorted(inst_dir.glob("*.h5"))}
        for q in group.itertuples(index=False):
            for frame, ids in per_frame.items():
                if q.instance_id in ids:
                    rows.append((vid, frame, q.instance_id, q.query, q.kind, n_frames, q.label))
    df = pd.DataFrame(rows, columns=["video", "frame", "instance", "query", "kind", "n_frames", "label"])
    return df, notes


# --------------------------------------------------------------------------- dataset


class A2DSentences(SampleDataset):
    """A2D Sentences samples as model inputs.

    Each item: ``clip`` (3, T, S, S) float in [0, 1]; ``tokens``/``mask`` (N,) query ids and
    padding mask; ``target`` (1, S, S) float ground truth on the padded input; ``gt`` (H, W) bool
    ground truth at the original frame size; ``meta`` (video, frame, instance, query, kind,
    letterbox geometry).

    Args:
        root: dataset folder.
        split: ``train`` or ``test``.
        frames, frame_stride, size: clip geometry.
        vocab: query vocabulary (default: built from this root's training queries).
        max_words: query length cap.
        skip_bad: return None for a sample whose files are missing or corrupt (the collate
            function drops and counts it) instead of raising.
        targets: ``target`` — the annotated frame alone (clip position T // 2); ``clip`` — also every
            other annotated frame of the instance inside the clip (for models predicting several).
    """

    def __init__(self, root: str | Path, split: str = "train", frames: int = 8, frame_stride: int = 2,
                 size: int = 320, vocab: Vocabulary | None = None, max_words: int = 20,
                 skip_bad: bool = False, input: str = "stretch", tokenizer: str = "words", *,
                 targets: Literal["target", "clip"] = "target") -> None:
        self.layout = A2DLayout(Path(root))
        self.split = split
        self.frames, self.frame_stride, self.size = frames, frame_stride, size
        self.max_words = max_words
        self.skip_bad = skip_bad
        self.input = input_spec(input)
        self.index, self.notes = build_index(root, split)
        self.vocab = vocab if vocab is not None else self.build_vocab(root, tokenizer)
        self.targets = targets
        self.annotated: dict[tuple[str, int], set[int]] = {}  # (video, instance) -> its annotated frames
        for vid, frame, inst in zip(self.index["video"], self.index["frame"], self.index["instance"]):
            self.annotated.setdefault((vid, int(inst)), set()).add(int(frame))

    @staticmethod
    def build_vocab(root: str | Path, tokenizer: str = "words") -> Vocabulary:
        """Vocabulary of the training queries of a root."""
        lay = A2DLayout(Path(root))
        videos = read_videoset(lay.videoset)
        queries, _ = read_queries(lay.annotations)
        train = set(videos.loc[videos["subset"] == 0, "vid"]) - read_missed(lay.missed)
        return Vocabulary.build(queries.loc[queries["video_id"].isin(train), "query"], tokenizer=tokenizer)

    def load(self, i: int) -> dict[str, Any]:
        row = self.index.iloc[i]
        vid, frame = row["video"], int(row["frame"])
        if int(row["n_frames"]) < 1:
            raise DataError(self.layout.frames / vid, "no extracted frames for this video "
                            "(run `lvas data prepare a2d ROOT`)")
        if frame > int(row["n_frames"]):
            raise DataError(self.layout.frame(vid, frame), f"annotated frame {frame} beyond the video's "
                            f"{int(row['n_frames'])} frames")
        idx = clip_indices(frame, int(row["n_frames"]), self.frames, self.frame_stride, self.input.clip_start)
        paths = [self.layout.frame(vid, j) for j in idx]
        imgs = stack_frames([read_jpeg(p) for p in paths], paths)  # (T, 3, H, W) uint8
        gt = torch.from_numpy(read_instance_mask(self.layout.h5(vid, frame), int(row["instance"])))
        meta = {"video": vid, "frame": frame, "instance": int(row["instance"]), "kind": row["kind"], "frames": idx,
                "image_id": coco_image_id(vid, frame, str(row["label"]))}
        more = {}
        if self.targets == "clip":  # every other annotated frame of this instance in the clip
            inst = int(row["instance"])
            more = {pos: (torch.from_numpy(read_instance_mask(self.layout.h5(vid, f), inst)), self.layout.h5(vid, f))
                    for pos, f in enumerate(idx) if f in self.annotated[(vid, inst)] and pos != len(idx) // 2}
        return make_item(imgs, gt, self.layout.h5(vid, frame), self.size, self.vocab, row["query"],
                         self.max_words, meta, self.input, more)


# --------------------------------------------------------------------------- prepare


def prepare_frames(root: str | Path, quality: int = 95, progress: bool = True) -> dict[str, Any]:
    """Extract ``Release/clips320H/*.mp4`` into ``Release/frames/<vid>/%05d.jpg`` with PyAV.

    Resumable: a video whose folder is complete (``.done`` marker) is skipped; a video is written
    to a temporary folder ``frames/.<vid>.partial`` and renamed, so an interrupted run leaves no
    half-extracted video. A file whose name is not a plain video id (``...mp4`` would name
    ``frames/..``) is refused before anything is created; a ``frames/<vid>`` folder that lvas did not
    complete (no ``.done``) is never removed: the run stops and names it.
    """
    import shutil

    import av
    from tqdm import tqdm

    lay = A2DLayout(Path(root))
    if not lay.clips.is_dir():
        raise DataError(lay.clips, "missing folder of .mp4 videos")
    videos = sorted(lay.clips.glob("*.mp4"))
    done = skipped = 0
    refused: list[str] = []
    for mp4 in tqdm(videos, desc="extracting frames", unit="video", disable=not progress):
        vid = mp4.name[: -len(".mp4")]
        try:
            if vid.startswith("."):
                raise DataError(mp4, "video id starts with '.'")
            plain_name(vid, "video id", mp4)
        except DataError:
            refused.append(mp4.name)
            continue
        out = lay.frames / vid
        if (out / ".done").is_file():
            skipped += 1
            continue
        if out.exists():
            raise DataError(out, "exists but was not completed by lvas (no .done marker): move it away and rerun")
        tmp = lay.frames / f".{vid}.partial"
        if tmp.exists():  # an interrupted extraction of this video (lvas's own name for it)
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True)
        try:
            n = _extract(mp4, tmp, quality, av)
            (tmp / ".done").write_text(str(n))
            tmp.rename(out)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        done += 1
    return {"extracted": done, "skipped": skipped, "refused": refused}


def _extract(mp4: Path, folder: Path, quality: int, av) -> int:
    """Decode every frame of ``mp4`` into ``folder/%05d.jpg``; returns the count (DataError if none)."""
    n = 0
    try:
        with open(mp4, "rb") as fh, av.open(fh) as container:  # a file, never an FFmpeg protocol ('concat:...')
            if not container.streams.video:
                raise DataError(mp4, "has no video stream (audio only?)")
            for n, frame in enumerate(container.decode(video=0), start=1):
                frame.to_image().save(folder / f"{n:05d}.jpg", quality=quality)
    except (av.error.FFmpegError, OSError, ValueError) as e:
        raise DataError(mp4, "cannot decode video", quoted=e) from None
    if n == 0:
        raise DataError(mp4, "has no decodable frames")
    return n


def write_csv_rows(path: Path, header: list[str] | None, rows: list[list[Any]]) -> None:
    """Small helper for writers (synthetic set): CSV with an optional header."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    if header:
        w.writerow(header)
    w.writerows(rows)
    path.write_text(buf.getvalue())
