"""Drawing masks over frames: the one tint every picture uses (MLflow overlays, the report's Fig. 4,
``lvas predict``'s GIF and MP4)."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

PREDICTION = (0, 255, 255)  # cyan: a colour no synthetic sprite has
GROUND_TRUTH = (40, 220, 40)
OVERLAY_SIDE = 240  # an MLflow overlay's panels are at least this many pixels on their shorter side


def tint(image: np.ndarray, mask: np.ndarray, colour, weight: float = 0.55) -> np.ndarray:
    """``image`` (H, W, 3) uint8 or float with ``mask`` (H, W) bool blended towards ``colour`` (0-255)."""
    out = image.astype(np.float32).copy()
    m = np.asarray(mask, dtype=bool)
    scale = 255.0 if image.dtype == np.uint8 else 1.0
    out[m] = (1 - weight) * out[m] + weight * np.asarray(colour, np.float32) * (scale / 255.0)
    return out.astype(image.dtype) if image.dtype == np.uint8 else out


def target_frame(item: dict, size: tuple[int, int] | None = None) -> np.ndarray:
    """A dataset item's target frame (clip position T // 2) as (H, W, 3) uint8 at the original size
    (or ``size``), undoing the input pipeline's resize and padding."""
    clip, meta = item["clip"], item["meta"]
    h, w = meta["resized"]
    f = clip[:, clip.shape[1] // 2, :h, :w]
    f = F.interpolate(f[None], size=size or tuple(meta["orig"]), mode="bilinear", align_corners=False)[0]
    return (f.clamp(0, 1).permute(1, 2, 0).numpy() * 255).astype(np.uint8)


def overlay_image(item: dict, pred: torch.Tensor, gt: torch.Tensor):
    """frame | prediction (cyan) | ground truth (green), enlarged to a readable size, with the query and
    a colour key written under the panels; one PIL image (an MLflow run's ``overlay_<i>``)."""
    from PIL import Image, ImageDraw, ImageFont

    meta = item["meta"]
    scale = max(1.0, OVERLAY_SIDE / min(meta["orig"]))
    size = (round(meta["orig"][0] * scale), round(meta["orig"][1] * scale))
    base = target_frame(item, size)

    def big(mask: torch.Tensor) -> np.ndarray:
        return F.interpolate(mask[None, None].float(), size=size, mode="nearest")[0, 0].numpy() > 0.5

    panels = np.concatenate([base, tint(base, big(pred), PREDICTION, 0.65), tint(base, big(gt), GROUND_TRUTH, 0.65)],
                            axis=1)
    font = ImageFont.load_default(size=15)
    out = Image.new("RGB", (panels.shape[1], panels.shape[0] + 46), "white")
    out.paste(Image.fromarray(panels), (0, 0))
    draw = ImageDraw.Draw(out)
    draw.text((6, panels.shape[0] + 4), f'"{meta["query"]}"  ({meta["video"]}, frame {meta["frame"]})', fill="black",
              font=font)
    draw.text((6, panels.shape[0] + 24), "frame  |  prediction (cyan)  |  ground truth (green)", fill=(90, 90, 90),
              font=font)
    return out
