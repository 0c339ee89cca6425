"""Masks for every frame of a user's own video (sliding the clip window over it)."""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from tqdm import tqdm

from lvas.data.clips import Letterbox, clip_indices
from lvas.inputs import input_spec
from lvas.data.errors import DataError
from lvas.liveness import replace_atomic, tmp_path

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
    try:  # a file object: a name such as 'concat:a.mp4' is a file here, never an FFmpeg protocol
        with open(p, "rb") as fh, av.open(fh) as container:
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


@dataclass(frozen=True)
class PredictOptions:
    """How ``lvas predict`` runs and what it writes (the command's options)."""

    batch_size: int = 4  # clips per forward pass
    fps: int = 8  # of the overlays
    mp4: bool = False  # also overlay.mp4 at the original size
    max_pixels: int = 40_000_000  # a larger frame is refused from its header
    gif_side: int = 480  # the GIF's longer side at most
    progress: bool = True


def model_frames(video: str | Path, cfg, opts: PredictOptions) -> tuple[list[torch.Tensor], Letterbox]:
    """Every frame of ``video`` resized as the dataset resizes under ``model.input``: (3, S, S) uint8
    each, and the geometry that maps a prediction back to the original size."""
    from lvas.data.samples import resize_frames

    spec = input_spec(cfg.model.input)
    small, lb = [], None
    for frame in tqdm(iter_frames(video, opts.max_pixels), desc="read", unit="frame", disable=not opts.progress):
        if lb is None:
            lb = Letterbox.fit(frame.shape[:2], cfg.data.size, spec.geometry)
        small.append(resize_frames(torch.from_numpy(frame.copy()).permute(2, 0, 1)[None], lb, spec)[0])
    return small, lb


def _clip(small: list[torch.Tensor], t: int, cfg) -> torch.Tensor:
    """(3, T, S, S) float: the clip whose target is frame ``t`` (0-based), as the dataset samples it."""
    spec = input_spec(cfg.model.input)
    idx = [i - 1 for i in clip_indices(t + 1, len(small), cfg.data.frames, cfg.data.frame_stride, spec.clip_start)]
    return (torch.stack([small[i] for i in idx]).float() / 255.0).permute(1, 0, 2, 3)


@torch.no_grad()
def predict(model, vocab, cfg, video: str | Path, query: str, out: str | Path,
            opts: PredictOptions = PredictOptions()) -> dict[str, Path | int]:
    """Masks for every frame of ``video``: frame t is the target of a clip around it, built exactly as
    the dataset builds it under the model's input pipeline (its resize, clip start and padding), and
    binarised as the model's protocol binarises (``train.protocol``).

    Writes ``mask_%05d.png`` per frame (0/255, original size), ``overlay.gif`` (at most ``gif_side``
    pixels a side) and, with ``mp4``, ``overlay.mp4`` (original size). Memory stays bounded whatever
    the length and frame size: the video is read twice, frame by frame, and the overlays are encoded
    as they are drawn; only the model-sized (3, S, S) uint8 frames of the whole video are kept (clips
    need their neighbours), never the originals.
    """
    from PIL import Image

    from lvas.engine.inference import forward, masks, predicted_frames
    from lvas.engine.overlays import tint

    device = next(model.parameters()).device
    model.eval()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    small, lb = model_frames(video, cfg, opts)
    n = len(small)
    tokens, mask = vocab.encode(query, cfg.model.text.max_words)
    frames = iter_frames(video, opts.max_pixels)
    meta = {"orig": lb.orig, "resized": lb.resized}
    blank = torch.zeros(lb.orig, dtype=torch.bool)  # no ground truth: the protocol's prediction side only
    writers = [_Video(out / "overlay.gif", opts.fps, _fit(lb.orig, opts.gif_side), "gif")]
    if opts.mp4:
        writers.append(_Video(out / "overlay.mp4", opts.fps, lb.orig, "mpeg4"))
    try:
        for start in tqdm(range(0, n, opts.batch_size), desc="predict", unit="batch", disable=not opts.progress):
            clips = [_clip(small, t, cfg) for t in range(start, min(n, start + opts.batch_size))]
            b = len(clips)
            batch = {"clip": torch.stack(clips), "tokens": tokens[None].expand(b, -1), "mask": mask[None].expand(b, -1)}
            outputs = forward(model, batch, device)
            k = predicted_frames(outputs, cfg.data.frames).index(cfg.data.frames // 2)  # the frame each clip is about
            for j, lg in enumerate(outputs["logits"][:, k].float().cpu()):
                frame = next(frames)
                m = masks(lg, blank, meta, cfg.train.protocol)[0].numpy()
                png = Image.fromarray((m * 255).astype(np.uint8))
                replace_atomic(out / f"mask_{start + j + 1:05d}.png", lambda tmp: png.save(tmp, format="PNG"))
                drawn = tint(frame, m, (255, 40, 40))
                for w in writers:
                    w.add(drawn)
    except BaseException:
        for w in writers:
            w.discard()
        raise
    for w in writers:
        w.close()
    result: dict[str, Path | int] = {"masks": n, "gif": out / "overlay.gif"}
    if opts.mp4:
        result["mp4"] = out / "overlay.mp4"
    return result


def _fit(size: tuple[int, int], side: int) -> tuple[int, int]:
    """(H, W) scaled to at most ``side`` pixels on its longer side."""
    scale = min(1.0, side / max(size))
    return max(2, round(size[0] * scale)), max(2, round(size[1] * scale))


class _Video:
    """A video file written one RGB frame at a time (``gif``: a 3-3-2 palette; ``mpeg4``: yuv420p at
    even width and height), so nothing but the current frame is held."""

    def __init__(self, path: Path, fps: int, size: tuple[int, int], codec: str) -> None:
        import av

        self.path, self.tmp = path, tmp_path(path)  # renamed into place when complete (never written through a link)
        self.file = open(self.tmp, "wb")
        self.container = av.open(self.file, "w", format="gif" if codec == "gif" else "mp4")
        self.stream = self.container.add_stream(codec, rate=fps)
        h, w = size if codec == "gif" else [d - d % 2 for d in size]
        self.stream.height, self.stream.width = max(2, h), max(2, w)
        self.stream.pix_fmt = "rgb8" if codec == "gif" else "yuv420p"

    def add(self, rgb: np.ndarray) -> None:
        import av

        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
        frame = frame.reformat(width=self.stream.width, height=self.stream.height,
                               format=self.stream.pix_fmt if self.stream.pix_fmt == "rgb8" else "yuv420p")
        for pkt in self.stream.encode(frame):
            self.container.mux(pkt)

    def close(self) -> None:
        try:
            for pkt in self.stream.encode():
                self.container.mux(pkt)
        finally:
            self.container.close()
            self.file.close()
        os.replace(self.tmp, self.path)

    def discard(self) -> None:
        with contextlib.suppress(Exception):
            self.container.close()
        self.file.close()
        with contextlib.suppress(OSError):
            self.tmp.unlink()
