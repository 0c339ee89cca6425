"""Masks for every frame of a user's own video (sliding the clip window over it)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from lvas.data.clips import Letterbox, clip_indices
from lvas.models.inputs import input_spec
from lvas.data.errors import DataError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")


def read_video(path: str | Path) -> list[np.ndarray]:
    """All frames (H, W, 3) uint8 of a video file (PyAV) or a folder of images (sorted by name)."""
    from PIL import Image

    p = Path(path)
    if p.is_dir():
        files = sorted(f for f in p.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise DataError(p, f"no frames ({', '.join(IMAGE_SUFFIXES)}) in this folder")
        out = []
        for f in files:
            try:
                with Image.open(f) as im:
                    out.append(np.asarray(im.convert("RGB")))
            except OSError as e:
                raise DataError(f, f"corrupt frame image ({e})") from None
        return out
    if not p.is_file():
        raise DataError(p, "video file or frame folder not found")
    import av

    try:
        with av.open(str(p)) as container:
            frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    except (av.error.FFmpegError, OSError) as e:
        raise DataError(p, f"cannot decode video ({e})") from None
    if not frames:
        raise DataError(p, "video has no frames")
    return frames


@torch.no_grad()
def predict_video(model, vocab, cfg, frames: list[np.ndarray], query: str, batch_size: int = 4,
                  device: torch.device | None = None, progress: bool = True) -> list[np.ndarray]:
    """(H, W) probability map for every frame; frame t is the target of a clip centred on it."""
    device = device or next(model.parameters()).device
    model.eval()
    h, w = frames[0].shape[:2]
    lb = Letterbox.fit((h, w), cfg.data.size, input_spec(cfg.model.input).geometry)
    video = torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2)  # (N, 3, H, W) uint8
    tokens, mask = vocab.encode(query, cfg.model.text.max_words)
    probs: list[np.ndarray] = []
    n = len(frames)
    for start in tqdm(range(0, n, batch_size), desc="predict", unit="batch", disable=not progress):
        clips = []
        for t in range(start, min(n, start + batch_size)):
            idx = [i - 1 for i in clip_indices(t + 1, n, cfg.data.frames, cfg.data.frame_stride)]
            clips.append(lb.apply(video[idx].float() / 255.0).permute(1, 0, 2, 3))
        clip = torch.stack(clips).to(device)
        b = clip.shape[0]
        out = model(clip, tokens[None].expand(b, -1).to(device), mask[None].expand(b, -1).to(device))
        for lg in out["logits"][:, 0].float().cpu():
            probs.append(torch.sigmoid(lb.invert(lg)).numpy())
    return probs


def write_outputs(frames: list[np.ndarray], probs: list[np.ndarray], out: str | Path, fps: int = 8,
                  threshold: float = 0.5, mp4: bool = False) -> dict[str, Path | int]:
    """``mask_%05d.png`` per frame (0/255), ``overlay.gif`` (and ``overlay.mp4`` when asked)."""
    from PIL import Image

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    overlays = []
    for i, (f, p) in enumerate(zip(frames, probs), start=1):
        m = p > threshold
        Image.fromarray((m * 255).astype(np.uint8)).save(out / f"mask_{i:05d}.png")
        o = f.astype(np.float32).copy()
        o[m] = 0.45 * o[m] + 0.55 * np.array([255, 40, 40], np.float32)
        overlays.append(Image.fromarray(o.astype(np.uint8)))
    overlays[0].save(out / "overlay.gif", save_all=True, append_images=overlays[1:], duration=int(1000 / fps), loop=0)
    result: dict[str, Path | int] = {"masks": len(probs), "gif": out / "overlay.gif"}
    if mp4:
        import av

        with av.open(str(out / "overlay.mp4"), "w") as container:
            stream = container.add_stream("mpeg4", rate=fps)
            stream.height, stream.width = [d - d % 2 for d in frames[0].shape[:2]]
            stream.pix_fmt = "yuv420p"
            for img in overlays:
                arr = np.asarray(img)[: stream.height, : stream.width]
                for pkt in stream.encode(av.VideoFrame.from_ndarray(arr, format="rgb24")):
                    container.mux(pkt)
            for pkt in stream.encode():
                container.mux(pkt)
        result["mp4"] = out / "overlay.mp4"
    return result
