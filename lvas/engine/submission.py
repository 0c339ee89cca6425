"""The challenge submissions: one mask per (video, expression, frame), an 8-bit grey PNG (0 / 255)
inside a zip, where the dataset's server reads it: Ref-YouTube-VOS
``Annotations/<video>/<expression id>/<frame>.png``, MeViS (CodaBench) ``<video>/<expression id>/<frame>.png``
(the dataset's ``submission_prefix``); Ref-DAVIS17, the label maps the DAVIS toolkit reads, one
folder per annotator: ``anno_<k>/<video>/<frame>.png`` (palette PNG, pixel = object number + 1), as
ReferFormer's ``inference_davis.py`` writes them (:mod:`lvas.davis2017`)."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from lvas.engine.inference import forward, masks, scored_frames
from lvas.liveness import replace_atomic


def mask_png(mask: np.ndarray) -> bytes:
    """(H, W) bool -> PNG bytes of an 8-bit grey image, 255 on the mask."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(mask.astype(np.uint8) * 255, mode="L").save(buf, format="PNG")
    return buf.getvalue()


def label_png(labels: np.ndarray) -> bytes:
    """(H, W) uint8 labels -> PNG bytes of a palette image (DAVIS's colours)."""
    from PIL import Image

    from lvas.davis2017 import pascal_palette

    im = Image.fromarray(labels.astype(np.uint8), mode="P")
    im.putpalette(pascal_palette())
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


def is_submission(path: Path) -> bool:
    """Whether ``path`` is a submission zip lvas wrote: every member a mask ``[Annotations/]<video>/
    <expression>/<frame>.png``."""
    with zipfile.ZipFile(path) as zf:
        names = zf.namelist()
    return all(n.endswith(".png") and (len(n.split("/")) == 4 and n.startswith("Annotations/")
                                       or len(n.split("/")) == 3) for n in names)


def entry_name(meta: dict[str, Any], prefix: str = "Annotations/") -> str:
    """The zip member of one sample: ``<prefix><video>/<expression>/<frame name>.png``."""
    return f"{prefix}{meta['video']}/{meta['expression']}/{meta['frame_name']}.png"


@torch.no_grad()
def write_submission(model: torch.nn.Module, loader: DataLoader, out: str | Path, protocol: str = "lbdt",
                     device: torch.device | None = None, progress: bool = True) -> dict[str, int]:
    """Predict every sample of ``loader`` (a Ref-YouTube-VOS split) and zip the masks to ``out``.

    Each mask is binarised and brought to the frame's size as ``protocol`` does when it scores (so
    the submitted masks are the ones a local score would have measured). The zip is written to a
    temporary file and renamed: a killed run leaves no half zip.

    Ref-DAVIS17 (``submission_layout: davis17``): the objects of each annotator are merged into one
    label map per frame (:class:`lvas.davis2017.Merge`) whatever the protocol, written when the
    next video starts (the loader's samples come video by video).

    Returns: ``masks`` written (PNG files), ``videos``, ``expressions``.
    """
    device = device or next(model.parameters()).device
    model.eval()
    expressions, n = set(), 0
    dataset = getattr(loader.dataset, "dataset", loader.dataset)
    prefix = getattr(dataset, "submission_prefix", None)
    if prefix is None:
        raise ValueError("--submission: writes the masks of a challenge split (Ref-YouTube-VOS, MeViS, Ref-DAVIS17); "
                         "these samples are not from one (give --dataset ytvos|mevis|davis --root ROOT)")

    merged = getattr(dataset, "submission_layout", "") == "davis17"

    def write(tmp: Path) -> None:
        nonlocal n
        from lvas.davis2017 import VideoMerges, probability

        video: VideoMerges | None = None

        def flush() -> None:  # a video's merged label maps, once all its samples are in
            nonlocal n
            for (a, frame), m in sorted(video.frames.items()):
                zf.writestr(f"anno_{a}/{video.video}/{frame}.png", label_png(m.label.numpy()))
                n += 1

        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            for batch in tqdm(loader, desc="submission", unit="batch", disable=not progress, leave=False):
                if "clip" not in batch:
                    continue
                for lg, gt, meta in scored_frames(forward(model, batch, device), batch):
                    expressions.add((meta["video"], meta["expression"]))
                    if merged:  # Ref-DAVIS17: one label map per annotator and frame
                        if video is None or video.video != meta["video"]:
                            if video is not None:
                                flush()
                            video = VideoMerges(meta["video"], Path(meta["davis"]["annotations"]))
                        video.add(meta["davis"]["annotator"], meta["davis"]["object"], meta["frame_name"],
                                  probability(lg, meta["orig"], meta["resized"]))
                        continue
                    pred, _ = masks(lg, gt, meta, protocol)
                    zf.writestr(entry_name(meta, prefix), mask_png(pred.numpy()))
                    n += 1
            if video is not None:
                flush()

    replace_atomic(out, write)
    return {"masks": n, "videos": len({v for v, _ in expressions}), "expressions": len(expressions)}
