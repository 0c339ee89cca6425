"""``lvas data check``: validate a dataset folder, count it, and list every problem with its file."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from lvas.data.errors import DataError


@dataclass
class CheckReport:
    dataset: str
    root: Path
    counts: dict[str, int] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def format(self) -> str:
        lines = [f"{self.dataset} at {self.root}"]
        lines += [f"  {k:<28}{v:>8}" for k, v in self.counts.items()]
        lines += [f"  note: {n}" for n in self.notes]
        lines.append(f"  {len(self.problems)} problem(s)" + (":" if self.problems else ""))
        lines += [f"  - {p}" for p in self.problems]
        return "\n".join(lines)


def check_a2d(root: str | Path, frames: int = 8, dataset: str = "a2d", decode: bool = True) -> CheckReport:
    """Validate an A2D Sentences layout (also the synthetic set's)."""
    from lvas.data.a2d import A2DLayout, read_missed, read_queries, read_videoset

    lay = A2DLayout(Path(root))
    rep = CheckReport(dataset, lay.root)
    if not lay.root.is_dir():
        rep.problems.append(f"{lay.root}: dataset folder not found")
        return rep
    try:
        videos = read_videoset(lay.videoset)
        queries, notes = read_queries(lay.annotations)
    except DataError as e:
        rep.problems.append(str(e))
        return rep
    rep.notes += notes
    missed = read_missed(lay.missed)
    if not lay.missed.is_file():
        rep.notes.append(f"{lay.missed}: absent; no video excluded")
    if not lay.instances.is_dir():
        rep.problems.append(f"{lay.instances}: missing folder of per-frame instance .h5 files")
        return rep
    subset = dict(zip(videos["vid"], videos["subset"]))
    unknown = sorted(set(queries["video_id"]) - set(subset))
    for vid in unknown[:20]:
        rep.problems.append(f"{lay.annotations}: video {vid} has queries but is not in {lay.videoset.name}")
    queries = queries[queries["video_id"].isin(subset) & ~queries["video_id"].isin(missed)]
    counts: Counter = Counter()
    for split, code in (("train", 0), ("test", 1)):
        counts[f"videos ({split})"] = int((videos["subset"] == code).sum())
    counts["missed videos (excluded)"] = len(missed)
    short = 0
    for vid, group in queries.groupby("video_id", sort=True):
        split = "train" if subset[vid] == 0 else "test"
        counts[f"queries ({split})"] += len(group)
        short += _check_a2d_video(lay, vid, group, split, counts, rep, frames, decode)
    if short:
        rep.notes.append(f"{short} video(s) shorter than a {frames}-frame clip: indices are clamped at the ends")
    rep.counts = dict(sorted(counts.items()))
    for split in ("train", "test"):
        if not counts.get(f"samples ({split})"):
            rep.problems.append(f"{lay.root}: the {split} split has no samples (no {split} video with a query whose "
                                f"instance is annotated in some frame)")
    rep.problems = list(dict.fromkeys(rep.problems))  # a frame both unreadable and annotated: once
    return rep


def _check_a2d_video(lay, vid: str, group, split: str, counts: Counter, rep: CheckReport, frames: int,
                     decode: bool) -> bool:
    """Check one video's frames, masks and queries (problems into ``rep``, samples into ``counts``);
    True when it is shorter than a clip."""
    inst_dir = lay.instances / vid
    if not inst_dir.is_dir():
        rep.problems.append(f"{inst_dir}: missing instance folder for a video with {len(group)} queries")
        return False
    fdir = lay.frames / vid
    n_frames = len(list(fdir.glob("*.jpg"))) if fdir.is_dir() else 0
    if n_frames == 0:
        mp4 = lay.clips / f"{vid}.mp4"
        rep.problems.append(f"{fdir}: no frames" + (" (run `lvas data prepare a2d ROOT`)" if mp4.is_file()
                                                     else f" and no video {mp4}"))
    if n_frames and decode:
        rep.problems += frame_size_problems(sorted(fdir.glob("*.jpg")))
    per_frame = _check_a2d_masks(lay, vid, inst_dir, n_frames, rep, decode)
    for q in group.itertuples(index=False):
        n = sum(q.instance_id in ids for ids in per_frame.values())
        if per_frame and n == 0:
            rep.problems.append(f"{inst_dir}: instance {q.instance_id} of query {q.query!r} is absent "
                                f"from every annotated frame")
        counts[f"samples ({split})"] += n
        if q.kind:
            counts[f"samples ({split}, {q.kind})"] += n
    return 0 < n_frames < frames


def _check_a2d_masks(lay, vid: str, inst_dir: Path, n_frames: int, rep: CheckReport, decode: bool) -> dict:
    """Annotated frame number -> instance ids of one video; a mask beyond the video, of another size
    than its frame, or unreadable is a problem."""
    from lvas.data.a2d import read_instance_info, read_jpeg

    per_frame, mask_shapes = {}, {}
    for h5 in sorted(inst_dir.glob("*.h5")):
        try:
            per_frame[int(h5.stem)], mask_shapes[int(h5.stem)] = read_instance_info(h5)
        except (DataError, ValueError) as e:
            rep.problems.append(str(e) if isinstance(e, DataError) else f"{h5}: file name is not a frame number")
    if not per_frame:
        rep.problems.append(f"{inst_dir}: no annotated frames (.h5)")
    for number in per_frame:
        if n_frames and number > n_frames:
            rep.problems.append(f"{lay.h5(vid, number)}: annotated frame {number} beyond the video's {n_frames} frames")
        elif n_frames and decode:
            try:
                shape = tuple(read_jpeg(lay.frame(vid, number)).shape[-2:])
                if mask_shapes[number] != shape:
                    rep.problems.append(f"{lay.h5(vid, number)}: mask {mask_shapes[number]} but frame {shape}")
            except DataError as e:
                rep.problems.append(str(e))
    return per_frame


def frame_size_problems(paths: list[Path]) -> list[str]:
    """One problem per frame whose header is unreadable, oversized, or of another size than the video's
    first frame (training stacks a clip's frames: they must agree); headers only, nothing decoded."""
    from lvas.data.samples import check_pixels, image_size

    problems, first = [], None
    for p in paths:
        try:
            size = image_size(p)
            check_pixels(p, *size)
        except DataError as e:
            problems.append(str(e))
            continue
        if first is None:
            first = size
        elif size != first:
            problems.append(f"{p}: frame of {size[1]}x{size[0]} pixels; this video's frames are {first[1]}x{first[0]}")
    return problems


def check_jhmdb(root: str | Path, frames: int = 8) -> CheckReport:
    """Validate a J-HMDB Sentences layout."""
    from lvas.data.jhmdb import choose_frames, read_annotations, read_part_mask, video_dirs

    root = Path(root)
    rep = CheckReport("jhmdb", root)
    if not root.is_dir():
        rep.problems.append(f"{root}: dataset folder not found")
        return rep
    try:
        ann = read_annotations(root / "jhmdb_annotation.txt")
        dirs = video_dirs(root)
    except DataError as e:
        rep.problems.append(str(e))
        return rep
    counts: Counter = Counter(videos=len(dirs), queries=len(ann))
    for vid in ann["video_id"]:
        if vid not in dirs:
            rep.problems.append(f"{root / 'Rename_Images'}: no folder for annotated video {vid}")
            continue
        action, fdir = dirs[vid]
        pngs = sorted(fdir.glob("*.png"))
        n_png = len(pngs)
        if n_png == 0:
            rep.problems.append(f"{fdir}: no frames")
            continue
        rep.problems += frame_size_problems(pngs)
        try:
            masks = read_part_mask(root / "puppet_mask" / action / vid / "puppet_mask.mat")
        except DataError as e:
            rep.problems.append(str(e))
            continue
        if masks.shape[2] < n_png:
            counts["videos with unmasked trailing frames"] += 1
        counts["samples (test)"] += len(choose_frames(min(n_png, masks.shape[2])))
    rep.counts = dict(counts)
    if not counts.get("samples (test)"):
        rep.problems.append(f"{root}: no samples to evaluate (no annotated video with frames and masks)")
    return rep


def check_ytvos(root: str | Path, frames: int = 2) -> CheckReport:
    """Validate a Ref-YouTube-VOS layout: every listed frame's JPEG (and, in ``train``, its annotation
    PNG) exists; annotations are palette images holding their expressions' object ids somewhere."""
    import numpy as np

    from lvas.data.ytvos import heldout_videos, read_annotation_ids, read_meta_expressions

    root = Path(root)
    rep = CheckReport("ytvos", root)
    if not root.is_dir():
        rep.problems.append(f"{root}: dataset folder not found")
        return rep
    counts: Counter = Counter()
    for folder in ("train", "valid", "test"):
        meta = root / "meta_expressions" / folder / "meta_expressions.json"
        if not meta.is_file():
            if folder == "train":
                rep.problems.append(f"{meta}: missing (expected Ref-YouTube-VOS meta_expressions.json)")
            continue
        try:
            table = read_meta_expressions(meta, need_objects=folder == "train")
        except DataError as e:
            rep.problems.append(str(e))
            continue
        videos = sorted(set(table["video"]))
        counts[f"{folder}: videos"] = len(videos)
        counts[f"{folder}: expressions"] = len(table)
        if folder == "train":
            counts["train: held-out videos (heldout)"] = len(heldout_videos(videos))
        seen_ids: dict[str, set[int]] = {}
        for r in table.drop_duplicates("video").itertuples(index=False):
            if len(r.frames) < frames:
                counts[f"{folder}: videos shorter than a clip"] += 1
            jpgs = [root / folder / "JPEGImages" / r.video / f"{name}.jpg" for name in r.frames]
            rep.problems += [f"{jpg}: missing frame" for jpg in jpgs if not jpg.is_file()]
            rep.problems += frame_size_problems([jpg for jpg in jpgs if jpg.is_file()])
            for name in r.frames:
                if folder != "train":
                    continue
                png = root / folder / "Annotations" / r.video / f"{name}.png"
                try:
                    ids = read_annotation_ids(png)
                except DataError as e:  # missing, corrupt or not a palette image, named
                    rep.problems.append(str(e))
                    continue
                seen_ids.setdefault(r.video, set()).update(int(v) for v in np.unique(ids))
        if folder == "train":
            for r in table.itertuples(index=False):
                if r.video in seen_ids and r.obj_id not in seen_ids[r.video]:
                    rep.problems.append(f"{root / folder / 'Annotations' / r.video}: object {r.obj_id} of expression "
                                        f"{r.expression} appears in no annotation")
    rep.counts = dict(counts)
    return rep


def check_mevis(root: str | Path, frames: int = 2) -> CheckReport:
    """Validate a MeViS layout: per split, videos, expressions, objects per expression; every listed
    frame's JPEG exists and has its video's size; in ``train`` and ``valid_u`` every anno_id is in
    ``mask_dict.json`` with one RLE (or null) per frame, each of its frame's size and decodable."""
    from lvas.data.mevis import MASKED, SPLITS, decode_rle, read_expressions, read_mask_dict
    from lvas.data.samples import image_size

    root = Path(root)
    rep = CheckReport("mevis", root)
    if not root.is_dir():
        rep.problems.append(f"{root}: dataset folder not found")
        return rep
    counts: Counter = Counter()
    for split in SPLITS:
        meta = root / split / "meta_expressions.json"
        if not meta.is_file():
            if split == "train":
                rep.problems.append(f"{meta}: missing (expected MeViS meta_expressions.json)")
            continue
        try:
            table = read_expressions(meta)
            masks = read_mask_dict(root / split / "mask_dict.json", table) if split in MASKED else {}
        except DataError as e:
            rep.problems.append(str(e))
            continue
        counts[f"{split}: videos"] = table["video"].nunique()
        counts[f"{split}: expressions"] = len(table)
        counts[f"{split}: 2+ object exps"] = int((table["anno_ids"].map(len) > 1).sum())
        sizes: dict[str, tuple[int, int]] = {}
        for r in table.drop_duplicates("video").itertuples(index=False):
            if len(r.frames) < frames:
                counts[f"{split}: videos shorter than a clip"] += 1
            jpgs = [root / split / "JPEGImages" / r.video / f"{name}.jpg" for name in r.frames]
            missing = [j for j in jpgs if not j.is_file()]
            rep.problems += [f"{j}: missing frame (listed in {meta.name})" for j in missing]
            present = [j for j in jpgs if j.is_file()]
            rep.problems += frame_size_problems(present)
            if present:
                try:
                    h, w = image_size(present[0])
                    sizes[r.video] = (h, w)
                except DataError as e:
                    rep.problems.append(str(e))
        if split not in MASKED:
            continue
        mask_file = root / split / "mask_dict.json"
        checked: set[str] = set()
        for r in table.itertuples(index=False):
            hw = sizes.get(r.video)
            for a in r.anno_ids:
                if a in checked or hw is None:
                    continue
                checked.add(a)
                for j, name in enumerate(r.frames):
                    try:
                        decode_rle(masks[a][j], mask_file, f"video {r.video}, expression {r.expression}, "
                                                           f"anno_id {a}, frame {name}", hw)
                    except DataError as e:
                        rep.problems.append(str(e))
                        break  # one line per anno_id
        counts[f"{split}: anno_ids"] = len(checked)
    rep.counts = dict(counts)
    if not rep.problems and not counts.get("valid_u: expressions"):
        rep.notes.append("no valid_u split: nothing can be scored locally (valid is scored by the server)")
    return rep


def check_davis(root: str | Path, frames: int = 2) -> CheckReport:
    """Validate a Ref-DAVIS17 layout (ReferFormer's conversion): per folder, four expressions per object
    in groups; every listed frame has its JPEG and an annotation PNG of the same size; every annotated
    frame is listed (the DAVIS evaluation scores all of them); an expression whose object id is in no
    annotation of its video is counted (ReferFormer trains on it with an empty target)."""
    import numpy as np

    from lvas.data.davis import SPLITS, annotator_groups
    from lvas.data.samples import image_size
    from lvas.data.ytvos import read_annotation_ids, read_meta_expressions

    root = Path(root)
    rep = CheckReport("davis", root)
    if not root.is_dir():
        rep.problems.append(f"{root}: dataset folder not found")
        return rep
    counts: Counter = Counter()
    for folder in SPLITS:
        meta = root / "meta_expressions" / folder / "meta_expressions.json"
        try:
            table = annotator_groups(read_meta_expressions(meta, need_objects=True), meta)
        except DataError as e:
            rep.problems.append(str(e))
            continue
        counts[f"{folder}: videos"] = table["video"].nunique()
        counts[f"{folder}: expressions"] = len(table)
        counts[f"{folder}: objects"] = len(table) // 4
        seen_ids: dict[str, set[int]] = {}
        for r in table.drop_duplicates("video").itertuples(index=False):
            if len(r.frames) < frames:
                counts[f"{folder}: videos shorter than a clip"] += 1
            ann = root / folder / "Annotations" / r.video
            listed = set(r.frames)
            rep.problems += [f"{p}: annotated frame not listed in {meta} (the evaluation scores every annotated frame)"
                             for p in sorted(ann.glob("*.png")) if p.stem not in listed]
            for name in r.frames:
                jpg, png = root / folder / "JPEGImages" / r.video / f"{name}.jpg", ann / f"{name}.png"
                if not jpg.is_file():
                    rep.problems.append(f"{jpg}: missing frame (listed in {meta})")
                    continue
                try:
                    ids = read_annotation_ids(png)
                    if ids.shape != image_size(jpg):
                        rep.problems.append(f"{png}: {ids.shape[1]}x{ids.shape[0]} pixels; its frame is "
                                            f"{image_size(jpg)[1]}x{image_size(jpg)[0]}")
                except DataError as e:
                    rep.problems.append(str(e))
                    continue
                seen_ids.setdefault(r.video, set()).update(int(v) for v in np.unique(ids))
        counts[f"{folder}: expressions of an unannotated id"] = sum(
            1 for r in table.itertuples(index=False) if r.video in seen_ids and r.obj_id not in seen_ids[r.video])
    rep.counts = dict(counts)
    return rep
