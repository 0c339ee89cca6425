"""A synthetic language-queried actor segmentation set that makes appearance vs motion measurable.

Each clip shows 2-3 sprites (circle, square, triangle, diamond, in one of several colours and
two sizes) on a textured background; each sprite does one action (moving left / right / up /
down, jumping, standing still) at several pixels per frame. Queries are built from templates
("the small red circle moving left") and come in two kinds:

* ``motion``: a distractor looks exactly like the target but does another action, so only
  the motion resolves the query;
* ``appearance``: a distractor does the same action but looks different (colour, shape or
  size), so only the appearance resolves it.

Both the target and its distractor get a query (two samples per clip, same kind). The target
frame is the middle frame; the ground truth is the referred sprite's visible silhouette there.
The set is written in the A2D Sentences layout (videoset.csv, a2d_annotation.txt with an extra
``kind`` column, MATLAB-layout .h5 instance masks, JPEG frames), so it goes through exactly the
same loader as A2D. Generation is deterministic for a seed: video ``i`` depends only on
``(seed, i)``; every fifth video is in the test split.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

SHAPES = ("circle", "square", "triangle", "diamond")
COLOURS = {
    "red": (0.86, 0.16, 0.16), "green": (0.16, 0.70, 0.24), "blue": (0.20, 0.35, 0.90),
    "yellow": (0.90, 0.82, 0.16), "white": (0.95, 0.95, 0.95), "purple": (0.60, 0.24, 0.80),
}
SIZES = {"small": 0.085, "large": 0.14}  # radius as a fraction of the frame side
ACTIONS = ("moving left", "moving right", "moving up", "moving down", "jumping", "standing still")
KINDS = ("appearance", "motion")


@dataclass
class Actor:
    shape: str
    colour: str
    size: str
    action: str
    centre: tuple[float, float]  # (y, x) at the target frame
    speed: float = 0.07  # a fraction of the frame side per frame (~4.5 px at 64 px)

    def appearance(self) -> tuple[str, str, str]:
        return (self.shape, self.colour, self.size)

    def query(self) -> str:
        return f"the {self.size} {self.colour} {self.shape} {self.action}"

    def position(self, t: int, target: int, frame_size: int) -> tuple[float, float]:
        """Centre (y, x) at frame ``t`` (0-based); the target frame is ``target``."""
        speed = self.speed * frame_size
        dt = t - target
        y, x = self.centre
        if self.action == "moving left":
            return y, x - speed * dt
        if self.action == "moving right":
            return y, x + speed * dt
        if self.action == "moving up":
            return y - speed * dt, x
        if self.action == "moving down":
            return y + speed * dt, x
        if self.action == "jumping":  # a hop every 4 frames, on the ground at the target frame
            return y - 0.25 * frame_size * np.sin(np.pi * (dt % 4) / 4.0), x
        return y, x


def _silhouette(shape: str, cy: float, cx: float, r: float, n: int) -> np.ndarray:
    from skimage.draw import disk, polygon

    m = np.zeros((n, n), dtype=bool)
    if shape == "circle":
        rr, cc = disk((cy, cx), r, shape=(n, n))
    elif shape == "square":
        s = r * 0.9
        rr, cc = polygon([cy - s, cy - s, cy + s, cy + s], [cx - s, cx + s, cx + s, cx - s], shape=(n, n))
    elif shape == "triangle":
        rr, cc = polygon([cy - r, cy + r * 0.8, cy + r * 0.8], [cx, cx + r, cx - r], shape=(n, n))
    elif shape == "diamond":
        rr, cc = polygon([cy - r * 1.1, cy, cy + r * 1.1, cy], [cx, cx + r, cx, cx - r], shape=(n, n))
    else:
        raise ValueError(f"unknown shape {shape!r}")
    m[rr, cc] = True
    return m


def _background(rng: np.random.Generator, n: int) -> np.ndarray:
    from skimage.transform import resize

    coarse = rng.uniform(0.0, 1.0, size=(6, 6, 3))
    smooth = resize(coarse, (n, n, 3), order=3, mode="reflect")
    base = rng.uniform(0.25, 0.45, size=3)
    stripes = 0.04 * np.sin(np.arange(n) * rng.uniform(0.3, 0.9))[None, :, None]
    img = base + 0.18 * (smooth - 0.5) + stripes + rng.normal(0, 0.025, size=(n, n, 3))
    return np.clip(img, 0, 1)


def _different_appearance(rng: np.random.Generator, a: tuple[str, str, str]) -> tuple[str, str, str]:
    """Same as ``a`` but one attribute (shape, colour or size) changed."""
    shape, colour, size = a
    which = rng.integers(3)
    if which == 0:
        shape = rng.choice([s for s in SHAPES if s != shape])
    elif which == 1:
        colour = rng.choice([c for c in COLOURS if c != colour])
    else:
        size = "large" if size == "small" else "small"
    return (str(shape), str(colour), str(size))


def make_clip(seed: int, index: int, frames: int = 8, size: int = 64) -> dict:
    """One synthetic clip: frames (T, S, S, 3) uint8, actors, per-frame masks, queries."""
    rng = np.random.default_rng([seed, index])
    kind = KINDS[index % 2]
    target_t = frames // 2
    shape, colour, sz = str(rng.choice(SHAPES)), str(rng.choice(list(COLOURS))), str(rng.choice(list(SIZES)))
    action = str(rng.choice(ACTIONS))
    specs = [(shape, colour, sz, action)]
    if kind == "motion":
        specs.append((shape, colour, sz, str(rng.choice([a for a in ACTIONS if a != action]))))
    else:
        specs.append((*_different_appearance(rng, (shape, colour, sz)), action))
    if rng.random() < 0.5:  # a third, unrelated actor
        third = (str(rng.choice(SHAPES)), str(rng.choice(list(COLOURS))), str(rng.choice(list(SIZES))))
        while third in {s[:3] for s in specs}:
            third = (str(rng.choice(SHAPES)), str(rng.choice(list(COLOURS))), str(rng.choice(list(SIZES))))
        specs.append((*third, str(rng.choice(ACTIONS))))
    actors: list[Actor] = []
    for sh, co, si, ac in specs:
        r = SIZES[si] * size
        for _ in range(200):
            c = (float(rng.uniform(r + 1, size - r - 1)), float(rng.uniform(r + 1, size - r - 1)))
            if all(np.hypot(c[0] - o.centre[0], c[1] - o.centre[1]) > r + SIZES[o.size] * size + 2 for o in actors):
                break
        actors.append(Actor(sh, co, si, ac, c))
    order = rng.permutation(len(actors))  # drawing order (later ones occlude)
    bg = _background(rng, size)
    video = np.empty((frames, size, size, 3), dtype=np.uint8)
    visible = np.zeros((frames, len(actors), size, size), dtype=bool)
    for t in range(frames):
        img = bg.copy()
        for k in order:
            a = actors[k]
            cy, cx = a.position(t, target_t, size)
            sil = _silhouette(a.shape, cy, cx, SIZES[a.size] * size, size)
            img[sil] = np.asarray(COLOURS[a.colour]) + rng.normal(0, 0.02, size=(int(sil.sum()), 3))
            visible[t, :, sil] = False  # what this actor covers is no longer visible for earlier ones
            visible[t, k] = sil
        video[t] = (np.clip(img, 0, 1) * 255).round().astype(np.uint8)
    queries = [(0, actors[0].query(), kind), (1, actors[1].query(), kind)]
    return {"frames": video, "actors": actors, "masks": visible, "target": target_t, "queries": queries,
            "kind": kind}


def write_instance_h5(path: Path, ids: list[int], masks: np.ndarray) -> None:
    """Write one frame's instances as MATLAB v7.3 stores them: arrays transposed, reMask (N, W, H)
    (or (W, H) for a single instance), reBBox (4, N) with x1, y1, x2, y2, ids as doubles."""
    import h5py

    boxes = []
    for m in masks:
        ys, xs = np.nonzero(m)
        boxes.append([xs.min(), ys.min(), xs.max(), ys.max()] if len(xs) else [0, 0, 0, 0])
    rem = np.stack([m.T for m in masks]).astype(np.uint8)
    if len(ids) == 1:
        rem = rem[0]
    with h5py.File(path, "w") as f:
        f["instance"] = np.asarray(ids, dtype=np.float64).reshape(len(ids), 1)
        f["reMask"] = rem
        f["reBBox"] = np.asarray(boxes, dtype=np.float64).T


def generate(out: str | Path, videos: int = 400, frames: int = 8, size: int = 64, seed: int = 0,
             progress: bool = True, annotate: str = "target") -> dict[str, int]:
    """Write the synthetic set under ``out`` in the A2D Sentences layout.

    ``annotate``: ``target`` writes the masks of each clip's target frame (one sample per query, as
    the default set), ``all`` of every frame (a sample per query and frame; for models predicting
    several frames of a clip, with ``data.dataset: {name: synth, targets: clip}``)."""
    if annotate not in ("target", "all"):
        raise ValueError(f"annotate: {annotate!r}: expected 'target' or 'all'")
    from PIL import Image
    from tqdm import tqdm

    from lvas.data.a2d import A2DLayout, write_csv_rows

    lay = A2DLayout(Path(out))
    for d in (lay.videoset.parent, lay.instances, lay.frames):
        d.mkdir(parents=True, exist_ok=True)
    vs_rows, q_rows = [], []
    counts = {"train": 0, "test": 0, "appearance": 0, "motion": 0}
    for i in tqdm(range(videos), desc="synthetic clips", unit="clip", disable=not progress):
        clip = make_clip(seed, i, frames, size)
        vid = f"synth{i:05d}"
        subset = 1 if i % 5 == 4 else 0
        vs_rows.append([vid, ACTIONS.index(clip["actors"][0].action), 0, 0, size, size, frames,
                        frames if annotate == "all" else 1, subset])
        fdir = lay.frames / vid
        fdir.mkdir(parents=True, exist_ok=True)
        for t in range(frames):
            Image.fromarray(clip["frames"][t]).save(fdir / f"{t + 1:05d}.jpg", quality=95)
        (lay.instances / vid).mkdir(parents=True, exist_ok=True)
        n = len(clip["actors"])
        for t in (range(frames) if annotate == "all" else [clip["target"]]):
            write_instance_h5(lay.h5(vid, t + 1), list(range(n)), clip["masks"][t])
        for inst, query, kind in clip["queries"]:
            q_rows.append([vid, inst, query, kind])
            counts[kind] += 1
        counts["test" if subset else "train"] += 2
    write_csv_rows(lay.videoset, None, vs_rows)
    write_csv_rows(lay.annotations, ["video_id", "instance_id", "query", "kind"], q_rows)
    lay.missed.write_text("")
    (Path(out) / "SYNTHETIC.txt").write_text(
        f"lvas synthetic set: videos={videos} frames={frames} size={size} seed={seed}\n")
    return counts


# --------------------------------------------------------------------------- the MeViS layout
# Motion expressions with several actors: each clip has two actors doing the same action and a third
# doing another, one of which leaves the view halfway. Expressions (MeViS style, the target of a frame
# being the union of the objects it names): "the two moving left" (two objects), "the one leaving"
# (its last frames empty), and one single actor by its look and action. ``kind`` (an lvas key MeViS's
# files do not have) breaks the metrics down: ``multi-object``, ``leaving``, ``single``.

MEVIS_SPLITS = (("train", 3), ("valid_u", 1), ("valid", 1))  # of every 5 clips: 3 train, 1 valid_u, 1 valid
MOVES = ("moving left", "moving right", "moving up", "moving down")
_EXIT = {"moving left": (0.5, 0.15), "moving right": (0.5, 0.85), "moving up": (0.15, 0.5), "moving down": (0.85, 0.5)}


def make_motion_clip(seed: int, index: int, frames: int = 8, size: int = 64) -> dict:
    """One multi-actor clip: frames (T, S, S, 3) uint8, per-frame visible masks of each actor, and
    (expression, actor indices, kind) triples."""
    rng = np.random.default_rng([seed, index, 7])
    together, other = [str(a) for a in rng.choice(MOVES, size=2, replace=False)]
    looks = set()
    while len(looks) < 3:
        looks.add((str(rng.choice(SHAPES)), str(rng.choice(list(COLOURS))), str(rng.choice(list(SIZES)))))
    looks = sorted(looks)
    leaver = int(rng.integers(3))  # this actor starts near the edge its action leaves through
    target_t = frames // 2
    actors: list[Actor] = []
    for k, (sh, co, si) in enumerate(looks):
        action = together if k < 2 else other
        r = SIZES[si] * size
        speed = 0.07
        if k == leaver:  # at the target frame near its exit edge, twice as fast: gone two frames later
            fy, fx = _EXIT[action]
            c, speed = (fy * size, fx * size), 0.15
        else:
            for _ in range(200):
                c = (float(rng.uniform(r + 1, size - r - 1)), float(rng.uniform(r + 1, size - r - 1)))
                if all(np.hypot(c[0] - o.centre[0], c[1] - o.centre[1]) > r + SIZES[o.size] * size + 2 for o in actors):
                    break
        actors.append(Actor(sh, co, si, action, c, speed))
    bg = _background(rng, size)
    video = np.empty((frames, size, size, 3), dtype=np.uint8)
    visible = np.zeros((frames, 3, size, size), dtype=bool)
    for t in range(frames):
        img = bg.copy()
        for k, a in enumerate(actors):
            cy, cx = a.position(t, target_t, size)
            sil = _silhouette(a.shape, cy, cx, SIZES[a.size] * size, size)
            img[sil] = np.asarray(COLOURS[a.colour]) + rng.normal(0, 0.02, size=(int(sil.sum()), 3))
            visible[t, :, sil] = False
            visible[t, k] = sil
        video[t] = (np.clip(img, 0, 1) * 255).round().astype(np.uint8)
    direction = together.removeprefix("moving ")
    single = 2 if leaver != 2 else 0
    exps = [(f"the two moving {direction}", (0, 1), "multi-object"),
            (f"the one that leaves the view {actors[leaver].action.removeprefix('moving ')}", (leaver,), "leaving"),
            (actors[single].query(), (single,), "single")]
    return {"frames": video, "masks": visible, "expressions": exps}


def generate_mevis(out: str | Path, videos: int = 100, frames: int = 8, size: int = 64, seed: int = 0,
                   progress: bool = True) -> dict[str, int]:
    """Write multi-actor motion clips under ``out`` in the MeViS layout (``train``, ``valid_u``,
    ``valid``: 3 / 1 / 1 of every 5 clips), every frame annotated; read with ``data.dataset: mevis``."""
    import json

    from PIL import Image
    from tqdm import tqdm

    from pycocotools import mask as mask_utils

    def rle(m: np.ndarray) -> dict:
        r = mask_utils.encode(np.asfortranarray(m.astype(np.uint8)))
        return {"size": [int(v) for v in r["size"]], "counts": r["counts"].decode("ascii")}

    out = Path(out)
    metas = {split: {} for split, _ in MEVIS_SPLITS}
    masks = {split: {} for split, _ in MEVIS_SPLITS}
    which = [split for split, n in MEVIS_SPLITS for _ in range(n)]
    counts = {"expressions": 0, "multi-object": 0, "leaving": 0, "single": 0, "empty target frames": 0}
    anno = 0
    for i in tqdm(range(videos), desc="synthetic motion clips", unit="clip", disable=not progress):
        clip = make_motion_clip(seed, i, frames, size)
        split, vid = which[i % len(which)], f"motion{i:05d}"
        names = [f"{t:05d}" for t in range(frames)]
        fdir = out / split / "JPEGImages" / vid
        fdir.mkdir(parents=True, exist_ok=True)
        for t, name in enumerate(names):
            Image.fromarray(clip["frames"][t]).save(fdir / f"{name}.jpg", quality=95)
        ids = []
        for k in range(3):
            masks[split][str(anno)] = [rle(clip["masks"][t, k]) if clip["masks"][t, k].any() else None
                                       for t in range(frames)]
            ids.append(anno)
            anno += 1
        exps = {}
        for e, (text, objs, kind) in enumerate(clip["expressions"]):
            exps[str(e)] = {"exp": text, "obj_id": list(objs), "anno_id": [ids[o] for o in objs], "kind": kind}
            counts["expressions"] += 1
            counts[kind] += 1
            counts["empty target frames"] += int(sum(not clip["masks"][t, list(objs)].any() for t in range(frames)))
        metas[split][vid] = {"frames": names, "expressions": exps}
    for split, _ in MEVIS_SPLITS:
        (out / split).mkdir(parents=True, exist_ok=True)
        (out / split / "meta_expressions.json").write_text(json.dumps({"videos": metas[split]}))
        if split != "valid":
            (out / split / "mask_dict.json").write_text(json.dumps(masks[split]))
    (out / "SYNTHETIC.txt").write_text(f"lvas synthetic motion set (MeViS layout): videos={videos} frames={frames} "
                                       f"size={size} seed={seed}\n")
    return counts
