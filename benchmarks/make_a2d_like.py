"""Write an A2D-Sentences-layout folder with real-sized frames (320 x 560 JPEG, like clips320H)
for the data-loading benchmark: ``python benchmarks/make_a2d_like.py OUT [--videos 40]``,
then ``lvas bench data experiments/cstm_paper.yaml data.root=OUT``."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image

from lvas.data.a2d import A2DLayout, write_csv_rows
from lvas.data.synthetic import write_instance_h5


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("out")
    p.add_argument("--videos", type=int, default=40)
    p.add_argument("--frames", type=int, default=40)
    p.add_argument("--height", type=int, default=320)
    p.add_argument("--width", type=int, default=560)
    a = p.parse_args()
    lay = A2DLayout(Path(a.out))
    rng = np.random.default_rng(0)
    vs, q = [], []
    for i in range(a.videos):
        vid = f"vid{i:04d}"
        (lay.frames / vid).mkdir(parents=True, exist_ok=True)
        base = rng.integers(0, 255, size=(a.height // 8, a.width // 8, 3), dtype=np.uint8)
        for n in range(1, a.frames + 1):
            img = Image.fromarray(np.roll(base, n, axis=1)).resize((a.width, a.height), Image.BILINEAR)
            img.save(lay.frame(vid, n), quality=90)
        (lay.instances / vid).mkdir(parents=True, exist_ok=True)
        for n in (10, 20, 30):
            m = np.zeros((2, a.height, a.width), dtype=bool)
            m[0, 50:150, 100:200] = True
            m[1, 160:300, 300:500] = True
            write_instance_h5(lay.h5(vid, n), [0, 1], m)
        vs.append([vid, 0, 0, 0, a.height, a.width, a.frames, 3, 0])
        q += [[vid, 0, "a man walking"], [vid, 1, "the dog on the right"]]
    write_csv_rows(lay.videoset, None, vs)
    write_csv_rows(lay.annotations, ["video_id", "instance_id", "query"], q)
    print(f"wrote {a.videos} videos to {a.out}")


if __name__ == "__main__":
    main()
