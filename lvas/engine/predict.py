"""Masks for every frame of a user's own video (sliding the clip window over it)."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from tqdm import tqdm

from lvas.data.clips import Letterbox, clip_indices
from lvas.models.inputs import input_spec
from lvas.data.errors import DataError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")


def iter_frames(path: str | Path, max_pixels: int = 40_000_000) -> Iterator[np.ndarray]:
    """The frames (H, W, 3) uint8 of a video file (PyAV) or a folder of images (sorted by name), one
    at a time. A frame over ``max_pixels`` (a decompression bomb, or simply too large) is refused from
    its header, before it is decoded; every frame must have the first one's size."""
    import warnings

    from PIL import Image

    p = Path(path)

    def check(where: Path, w: int, h: int, first: tuple[int, int] | None) -> tuple[int, int]:
        if w * h > max_pixels:
            raise DataError(where, f"frame of {w}x{h} pixels is over the limit of {max_pixels:,} (--max-pixels)")
        if first is not None and (h, w) != first:
            raise DataError(where, f"frame of {w}x{h} pixels; the first frame is {first[1]}x{first[0]}")
        return h, w

    first = None
    if p.is_dir():
        files = sorted(f for f in p.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise DataError(p, f"no frames ({', '.join(IMAGE_SUFFIXES)}) in this folder")
        for f in files:
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                    with Image.open(f) as im:  # reads the header only
                        first = check(f, *im.size, first)
                        frame = np.asarray(im.convert("RGB"))
            except Image.DecompressionBombError as e:
                raise DataError(f, f"refused: {e}") from None
            except OSError as e:
                raise DataError(f, f"corrupt frame image ({e})") from None
            yield frame
        return
    if not p.is_file():
        raise DataError(p, "video file or frame folder not found")
    import av

    n = 0
    try:
        with av.open(str(p)) as container:
            if not container.streams.video:
                raise DataError(p, "no video stream")
            ctx = container.streams.video[0].codec_context
            first = check(p, ctx.width, ctx.height, None)
            for f in container.decode(video=0):
                check(p, f.width, f.height, first)
                n += 1
                yield f.to_ndarray(format="rgb24")
    except (av.error.FFmpegError, OSError) as e:
        raise DataError(p, f"cannot decode video ({e})") from None
    if n == 0:
        raise DataError(p, "video has no frames")


@torch.no_grad()
def predict(model, vocab, cfg, video: str | Path, query: str, out: str | Path, *, batch_size: int = 4, fps: int = 8,
            threshold: float = 0.5, mp4: bool = False, max_pixels: int = 40_000_000, gif_side: int = 480,
            progress: bool = True) -> dict[str, Path | int]:
    """Masks for every frame of ``video``: frame t is the target of a clip centred on it.

    Writes ``mask_%05d.png`` per frame (0/255, original size), ``overlay.gif`` (at most ``gif_side``
    pixels a side) and, with ``mp4``, ``overlay.mp4`` (original size). Memory stays bounded whatever
    the frame size: the video is read twice, frame by frame; only the model-sized (3, S, S) uint8
    frames of the whole video are kept (clips need their neighbours), never the originals.
    """
    from PIL import Image

    device = next(model.parameters()).device
    model.eval()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    small, lb = [], None
    for frame in tqdm(iter_frames(video, max_pixels), desc="read", unit="frame", disable=not progress):
        if lb is None:
            lb = Letterbox.fit(frame.shape[:2], cfg.data.size, input_spec(cfg.model.input).geometry)
        small.append(lb.apply(torch.from_numpy(frame).permute(2, 0, 1)))  # (3, S, S) uint8
    n = len(small)
    tokens, mask = vocab.encode(query, cfg.model.text.max_words)
    frames = iter_frames(video, max_pixels)
    overlays: list[Image.Image] = []
    writer = _Mp4(out / "overlay.mp4", fps, lb.orig) if mp4 else None
    try:
        for start in tqdm(range(0, n, batch_size), desc="predict", unit="batch", disable=not progress):
            clips = []
            for t in range(start, min(n, start + batch_size)):
                idx = [i - 1 for i in clip_indices(t + 1, n, cfg.data.frames, cfg.data.frame_stride)]
                clips.append((torch.stack([small[i] for i in idx]).float() / 255.0).permute(1, 0, 2, 3))
            clip = torch.stack(clips).to(device)
            b = clip.shape[0]
            logits = model(clip, tokens[None].expand(b, -1).to(device), mask[None].expand(b, -1).to(device))["logits"]
            for k, lg in enumerate(logits[:, 0].float().cpu()):
                frame = next(frames)
                m = torch.sigmoid(lb.invert(lg)).numpy() > threshold
                Image.fromarray((m * 255).astype(np.uint8)).save(out / f"mask_{start + k + 1:05d}.png")
                o = frame.astype(np.float32)
                o[m] = 0.45 * o[m] + 0.55 * np.array([255, 40, 40], np.float32)
                img = Image.fromarray(o.astype(np.uint8))
                if writer is not None:
                    writer.add(np.asarray(img))
                img.thumbnail((gif_side, gif_side))
                overlays.append(img)
    finally:
        if writer is not None:
            writer.close()
    overlays[0].save(out / "overlay.gif", save_all=True, append_images=overlays[1:], duration=int(1000 / fps), loop=0)
    result: dict[str, Path | int] = {"masks": n, "gif": out / "overlay.gif"}
    if mp4:
        result["mp4"] = out / "overlay.mp4"
    return result


class _Mp4:
    """An MPEG-4 file written one RGB frame at a time (even width and height)."""

    def __init__(self, path: Path, fps: int, size: tuple[int, int]) -> None:
        import av

        self.container = av.open(str(path), "w")
        self.stream = self.container.add_stream("mpeg4", rate=fps)
        self.stream.height, self.stream.width = [d - d % 2 for d in size]
        self.stream.pix_fmt = "yuv420p"

    def add(self, rgb: np.ndarray) -> None:
        import av

        arr = np.ascontiguousarray(rgb[: self.stream.height, : self.stream.width])
        for pkt in self.stream.encode(av.VideoFrame.from_ndarray(arr, format="rgb24")):
            self.container.mux(pkt)

    def close(self) -> None:
        for pkt in self.stream.encode():
            self.container.mux(pkt)
        self.container.close()
