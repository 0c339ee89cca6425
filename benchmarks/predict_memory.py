"""Peak memory of `lvas predict` on a long high-resolution video (figures for notes, not a test).

Writes an MPEG-4 video of N frames at W x H, trains nothing: it needs a checkpoint (``--checkpoint``,
e.g. the quickstart's ``runs/sweeps/quickstart/trials/*/model.pt``) and runs ``lvas predict`` in a
child process, reporting the child's peak resident memory (``ru_maxrss``) and wall time.

    python benchmarks/predict_memory.py --checkpoint CKPT [--frames 150] [--width 1920] [--height 1080]
        [--lvas "env PYTHONPATH=/path/to/other/checkout python -m lvas.cli"]   # compare another version

Run it from outside a checkout when comparing (``python -m`` puts the working directory first on
the path). Measured with lvas/ at 6886676 vs ceb1d13, 2-core CPU: 150 frames 1920x1080: 0.90 vs 4.97 GiB,
10.7 vs 51.8 s; 300 frames: 0.95 vs 8.99 GiB, 17.7 vs 113.2 s.
"""

from __future__ import annotations

import argparse
import resource
import shlex
import sys
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np


def write_video(path: Path, frames: int, width: int, height: int) -> None:
    import av

    with av.open(str(path), "w") as c:
        s = c.add_stream("mpeg4", rate=25)
        s.width, s.height, s.pix_fmt = width, height, "yuv420p"
        yy, xx = np.mgrid[0:height, 0:width]
        for t in range(frames):
            img = np.zeros((height, width, 3), np.uint8)
            cx, cy = (t * 13) % width, height // 2
            img[(xx - cx) ** 2 + (yy - cy) ** 2 < (height // 6) ** 2] = (220, 40, 40)
            img[..., 2] = (xx * 255 // width).astype(np.uint8)
            for pkt in s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                c.mux(pkt)
        for pkt in s.encode():
            c.mux(pkt)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--frames", type=int, default=150)
    ap.add_argument("--width", type=int, default=1920)
    ap.add_argument("--height", type=int, default=1080)
    ap.add_argument("--lvas", default=f"{sys.executable} -m lvas.cli", help="how to call lvas (another checkout to compare)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        video = Path(tmp) / "long.mp4"
        write_video(video, args.frames, args.width, args.height)
        t = time.perf_counter()
        subprocess.run([*shlex.split(args.lvas), "predict", args.checkpoint, "--video", str(video), "--query",
                        "the red ball", "--out", str(Path(tmp) / "out"), "--quiet"], check=True)
        wall = time.perf_counter() - t
        peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024 / 1024
        print(f"{args.frames} frames {args.width}x{args.height}: peak RSS {peak:.2f} GiB, {wall:.1f} s")


if __name__ == "__main__":
    main()
