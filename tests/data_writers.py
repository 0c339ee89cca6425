"""Writers of tiny datasets in the exact public on-disk formats, independent of lvas's own code.

Frame n of every video is a flat grey image of level 10 * n, so a clip's frame numbers can be
read back from its pixels.
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
from PIL import Image


def level(n: int) -> int:
    return 10 * n


def write_h5(path: Path, ids: list[int], masks: list[np.ndarray]) -> None:
    """MATLAB v7.3 layout as h5py sees it: every array transposed; one instance -> (W, H)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as f:
        f.create_dataset("instance", data=np.array([ids], dtype=np.float64))  # MATLAB (N,1) -> (1,N)
        if len(masks) == 1:
            f.create_dataset("reMask", data=masks[0].T.astype(np.uint8))
        else:
            f.create_dataset("reMask", data=np.stack([m.T for m in masks]).astype(np.uint8))
        boxes = [[np.nonzero(m)[1].min(), np.nonzero(m)[0].min(), np.nonzero(m)[1].max(), np.nonzero(m)[0].max()]
                 for m in masks]
        f.create_dataset("reBBox", data=np.array(boxes, dtype=np.float64).T)


def rect_mask(h: int, w: int, y0: int, x0: int, y1: int, x1: int) -> np.ndarray:
    m = np.zeros((h, w), dtype=bool)
    m[y0:y1, x0:x1] = True
    return m


def write_a2d(root: Path, h: int = 48, w: int = 64, n_frames: int = 12, frames_as: str = "jpg") -> dict:
    """Three videos: v_train (2 instances), v_test (1 instance: the single-instance h5 case),
    v_missed (listed in a2d_missed_videos.txt). Includes the "1 (copy)" quirk."""
    rel = root / "Release"
    rel.mkdir(parents=True)
    (rel / "videoset.csv").write_text(
        f"v_train,11,0,0,{h},{w},{n_frames},2,0\n"
        f"v_test,12,0,0,{h},{w},{n_frames},1,1\n"
        f"v_missed,13,0,0,{h},{w},{n_frames},1,0\n"
    )
    ta = root / "text_annotations"
    ta.mkdir()
    (ta / "a2d_annotation.txt").write_text(
        "video_id,instance_id,query\n"
        "v_train,0,a man is walking\n"
        "v_train,1,the dog running left\n"
        "v_train,1 (copy),the dog running left\n"
        "v_test,0,a bird flying\n"
        "v_missed,0,an invisible cat\n"
    )
    (ta / "a2d_missed_videos.txt").write_text("v_missed\n")
    inst = ta / "a2d_annotation_with_instances"
    masks = {
        ("v_train", 3): ([0, 1], [rect_mask(h, w, 5, 5, 20, 30), rect_mask(h, w, 25, 10, 40, 60)]),
        ("v_train", 9): ([1], [rect_mask(h, w, 10, 40, 30, 63)]),
        ("v_test", 1): ([0], [rect_mask(h, w, 0, 0, 12, 12)]),
        ("v_missed", 5): ([0], [rect_mask(h, w, 1, 1, 5, 5)]),
    }
    for (vid, frame), (ids, ms) in masks.items():
        write_h5(inst / vid / f"{frame:05d}.h5", ids, ms)
    for vid in ("v_train", "v_test", "v_missed"):
        if frames_as == "jpg":
            d = rel / "frames" / vid
            d.mkdir(parents=True)
            for n in range(1, n_frames + 1):
                Image.fromarray(np.full((h, w, 3), level(n), np.uint8)).save(d / f"{n:05d}.jpg", quality=95)
        else:
            write_mp4(rel / "clips320H" / f"{vid}.mp4", n_frames, h, w)
    return masks


def write_mp4(path: Path, n_frames: int, h: int, w: int) -> None:
    import av

    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as out:
        stream = out.add_stream("mpeg4", rate=24)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        for n in range(1, n_frames + 1):
            frame = av.VideoFrame.from_ndarray(np.full((h, w, 3), level(n), np.uint8), format="rgb24")
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)


def write_jhmdb(root: Path, h: int = 40, w: int = 52) -> dict:
    """Two videos; the second's part_mask lacks its last 2 frames."""
    import scipy.io

    specs = {("catch", "vid_a"): (10, 10), ("run", "vid_b"): (9, 7)}  # (pngs, masked frames)
    (root).mkdir(parents=True, exist_ok=True)
    (root / "jhmdb_annotation.txt").write_text("video_id,query\nvid_a,a boy catching a ball\nvid_b,man running\n")
    truth = {}
    for (action, vid), (n_png, n_mask) in specs.items():
        d = root / "Rename_Images" / action / vid
        d.mkdir(parents=True)
        for n in range(1, n_png + 1):
            Image.fromarray(np.full((h, w, 3), level(n), np.uint8)).save(d / f"{n:05d}.png")
        part = np.zeros((h, w, n_mask), dtype=np.uint8)
        for t in range(n_mask):
            part[2 + t: 10 + t, 3: 20, t] = 1
        md = root / "puppet_mask" / action / vid
        md.mkdir(parents=True)
        scipy.io.savemat(md / "puppet_mask.mat", {"part_mask": part})
        truth[vid] = part
    return truth


YTVOS_PALETTE = [0, 0, 0, 236, 95, 103, 249, 145, 87, 250, 200, 99, 153, 199, 148] + [0] * (256 * 3 - 15)


def write_palette_png(path: Path, ids: np.ndarray) -> None:
    """A Ref-YouTube-VOS annotation: mode P, pixel value = object id (0 background)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    im = Image.fromarray(ids.astype(np.uint8), mode="P")
    im.putpalette(YTVOS_PALETTE)
    im.save(path)


def write_ytvos(root: Path, n_train: int = 10, n_valid: int = 2, h: int = 36, w: int = 48,
                n_listed: int = 5) -> dict:
    """Ref-YouTube-VOS layout: meta_expressions/{train,valid}/meta_expressions.json, train/meta.json,
    {train,valid}/JPEGImages/<video>/<frame>.jpg (frames named 00000, 00005, ...: every 5th frame),
    train/Annotations/<video>/<frame>.png (palette). Listed frame k (1-based) is a flat grey image of
    level(k). Each train video has objects 1 and 2; object 2 is absent from the first listed frame;
    expressions "0" (object 1) and "1" (object 2)."""
    import json

    names = [f"{5 * i:05d}" for i in range(n_listed)]
    truth = {}
    for folder, n in (("train", n_train), ("valid", n_valid)):
        meta_exp, meta_obj = {}, {}
        for v in range(n):
            vid = f"{folder[0]}{v:03d}vid"
            for k, name in enumerate(names, start=1):
                img = np.full((h, w, 3), level(k), dtype=np.uint8)
                p = root / folder / "JPEGImages" / vid / f"{name}.jpg"
                p.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(img).save(p, quality=100)
                if folder == "train":
                    ids = np.zeros((h, w), dtype=np.uint8)
                    ids[2 + k: 12 + k, 3:15] = 1
                    if k > 1:
                        ids[20:30, 20 + 2 * k: 30 + 2 * k] = 2
                    write_palette_png(root / folder / "Annotations" / vid / f"{name}.png", ids)
                    truth[(vid, name, 1)] = ids == 1
                    truth[(vid, name, 2)] = ids == 2
            exps = {"0": {"exp": "the red thing on the left"}, "1": {"exp": "the orange thing moving right"}}
            if folder == "train":
                exps["0"]["obj_id"], exps["1"]["obj_id"] = "1", "2"
                meta_obj[vid] = {"objects": {"1": {"category": "person", "frames": names},
                                             "2": {"category": "dog", "frames": names[1:]}}}
            meta_exp[vid] = {"expressions": exps, "frames": names}
        p = root / "meta_expressions" / folder / "meta_expressions.json"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(json.dumps({"videos": meta_exp}))
        if folder == "train":
            (root / "train" / "meta.json").write_text(json.dumps({"videos": meta_obj}))
    return {"names": names, "truth": truth, "h": h, "w": w}


def write_roberta(folder: Path, hidden: int = 64, layers: int = 1, seed: int = 0) -> Path:
    """A small RoBERTa saved as `save_pretrained` writes it, with a byte-level BPE tokenizer in RoBERTa's
    file format (vocab.json, merges.txt): what `model.text.path` / `tokenizer_path` read, no download."""
    import torch
    from transformers import RobertaConfig, RobertaModel

    from lvas.data.vocab import write_byte_bpe_tokenizer

    write_byte_bpe_tokenizer(folder)
    torch.manual_seed(seed)
    cfg = RobertaConfig(vocab_size=262, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=4,
                        intermediate_size=2 * hidden, max_position_embeddings=80, type_vocab_size=1, pad_token_id=1)
    RobertaModel(cfg).save_pretrained(folder)
    return folder


def _rle(mask: np.ndarray) -> dict | None:
    """A COCO RLE as MeViS's mask_dict.json stores it (counts as text); None for an empty mask."""
    from pycocotools import mask as mask_utils

    if not mask.any():
        return None
    r = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(r["size"][0]), int(r["size"][1])], "counts": r["counts"].decode("ascii")}


def write_mevis(root: Path, videos: dict[str, int] | None = None, h: int = 36, w: int = 48, seed: int = 0) -> dict:
    """The MeViS layout: <split>/JPEGImages/<video>/<frame>.jpg, <split>/meta_expressions.json and, for
    train and valid_u, <split>/mask_dict.json (anno_id -> one RLE or null per frame). Each video has
    three objects moving on their own paths: object 1 rightwards, object 2 downwards, object 3 leaves
    the frame halfway; expressions name one object, two objects (their union is the target) or the
    one that leaves (its last frames have an empty target). Returns the truth per (split, video,
    expression, frame) and the anno_id of each (split, video, object)."""
    import json

    rng = np.random.default_rng(seed)
    videos = videos or {"train": 4, "valid_u": 2, "valid": 2}
    truth, anno = {}, {}
    next_anno = 0
    for split, n in videos.items():
        meta, masks = {}, {}
        for v in range(n):
            vid = f"{split[:2]}{v:02d}{rng.integers(0, 10**6):06x}"
            n_frames = int(rng.integers(5, 8))
            names = [f"{i:05d}" for i in range(n_frames)]
            objs = {}
            for o in (1, 2, 3):
                per = []
                for k in range(n_frames):
                    m = np.zeros((h, w), bool)
                    if o == 1:
                        m[4:14, 2 + 3 * k: 12 + 3 * k] = True
                    elif o == 2:
                        m[2 + 2 * k: 10 + 2 * k, 30:40] = True
                    elif k < n_frames // 2:  # object 3 leaves the view halfway
                        m[20:30, 14 - 2 * k: 22 - 2 * k] = True
                    per.append(m)
                objs[o] = per
                anno[(split, vid, o)] = str(next_anno)
                masks[str(next_anno)] = [_rle(m) for m in per]
                next_anno += 1
            for k, name in enumerate(names):
                img = np.full((h, w, 3), 30 + 20 * k, dtype=np.uint8)
                for o, c in ((1, (200, 40, 40)), (2, (40, 200, 40)), (3, (40, 40, 200))):
                    img[objs[o][k]] = c
                p = root / split / "JPEGImages" / vid / f"{name}.jpg"
                p.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(img).save(p, quality=100)
            exps = {"0": ("the red one moving right", (1,)), "1": ("the two that move", (1, 2)),
                    "2": ("the blue one leaving to the left", (3,))}
            meta[vid] = {"frames": names, "expressions": {
                e: {"exp": text, "obj_id": list(ids), "anno_id": [int(anno[(split, vid, o)]) for o in ids]}
                for e, (text, ids) in exps.items()}}
            for e, (_, ids) in exps.items():
                for k, name in enumerate(names):
                    truth[(split, vid, e, name)] = np.logical_or.reduce([objs[o][k] for o in ids])
        (root / split).mkdir(parents=True, exist_ok=True)
        (root / split / "meta_expressions.json").write_text(json.dumps({"videos": meta}))
        if split != "valid":
            (root / split / "mask_dict.json").write_text(json.dumps(masks))
    return {"truth": truth, "anno": anno, "h": h, "w": w}


def write_davis(root: Path, videos: dict[str, int] | None = None, h: int = 36, w: int = 48, seed: int = 0) -> dict:
    """Ref-DAVIS17 as ReferFormer's convert_davis_to_ytvos.py leaves it: {train,valid}/JPEGImages/<video>/
    <frame>.jpg, {train,valid}/Annotations/<video>/<frame>.png (palette, DAVIS's unsupervised ids),
    {train,valid}/meta.json (objects -> category) and meta_expressions/{train,valid}/meta_expressions.json
    with four expressions per object (annotator 1 first-frame / full-video, annotator 2 the same), numbered
    0, 1, 2, ... object by object. Objects: 1 moves right, 2 moves down, 3 enters the view after the
    first frame (so the DAVIS evaluation, which counts the first frame's objects, does not score it);
    the valid annotations carry a void (255) border around object 1; the last valid video also has
    expressions for an object 4 that no annotation holds."""
    import json

    rng = np.random.default_rng(seed)
    videos = videos or {"train": 4, "valid": 3}
    words = {1: "red", 2: "green", 3: "blue", 4: "missing"}
    labels = {}
    for folder, n in videos.items():
        meta_exp, meta_obj = {}, {}
        for v in range(n):
            vid = f"{folder[0]}{v:02d}-{rng.integers(0, 10**6):06x}"
            n_frames = int(rng.integers(5, 8))
            names = [f"{i:05d}" for i in range(n_frames)]
            objects = [1, 2, 3] + ([4] if folder == "valid" and v == n - 1 else [])
            for k, name in enumerate(names):
                ids = np.zeros((h, w), np.uint8)
                img = np.full((h, w, 3), 30 + 20 * k, dtype=np.uint8)
                for o, box, colour in ((1, (4, 14, 2 + 3 * k, 12 + 3 * k), (200, 40, 40)),
                                       (2, (2 + 2 * k, 10 + 2 * k, 30, 40), (40, 200, 40)),
                                       (3, (22, 32, 4, 16) if k > 0 else None, (40, 40, 200))):
                    if box is None:
                        continue
                    y0, y1, x0, x1 = box
                    ids[y0:y1, x0:x1] = o
                    img[y0:y1, x0:x1] = colour
                if folder == "valid":  # void pixels on object 1's right edge
                    ids[4:14, 12 + 3 * k: 13 + 3 * k] = 255
                labels[(folder, vid, name)] = ids
                write_palette_png(root / folder / "Annotations" / vid / f"{name}.png", ids)
                p = root / folder / "JPEGImages" / vid / f"{name}.jpg"
                p.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(img).save(p, quality=100)
            exps, e = {}, 0
            for o in objects:
                for who in (1, 2):
                    for kind in ("in the first frame", "moving"):
                        exps[str(e)] = {"exp": f"the {words[o]} one {kind} as annotator {who} says", "obj_id": str(o)}
                        e += 1
            meta_exp[vid] = {"expressions": exps, "frames": names}
            meta_obj[vid] = {"objects": {str(o): {"category": "thing"} for o in (1, 2, 3)}}
        p = root / "meta_expressions" / folder / "meta_expressions.json"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(json.dumps({"videos": meta_exp}))
        (root / folder / "meta.json").write_text(json.dumps({"videos": meta_obj}))
    return {"labels": labels, "h": h, "w": w}
