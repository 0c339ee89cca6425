"""Development oracle: lvas's Ref-DAVIS17 J, F and J&F against the DAVIS-2017 toolkit itself.

Not a test (the project's tests never depend on released code). With ``--checkpoint``, runs ``lvas eval
CKPT --dataset davis --root ROOT --json`` and ``--submission`` (the merged ``anno_<k>/<video>/<frame>.png``
folders, as ReferFormer's ``inference_davis.py`` writes them); without, feeds lvas's ``davis17``
evaluator noisy logits made from each expression's ground truth (shifted, with noise, some empty) and
writes lvas's merged label maps of the same logits. Then runs the toolkit's ``DAVISEvaluation(task=
"unsupervised", gt_set="val")`` on each annotator's folder, as ReferFormer's ``eval_davis.py`` does,
over a DAVIS root made of links into ROOT (``JPEGImages/480p``, ``Annotations_unsupervised/480p``,
``ImageSets/2017/val.txt``), and prints both and the largest difference.

    python benchmarks/oracle_davis17.py --toolkit CHECKOUT --root ROOT [--checkpoint model.pt]

CHECKOUT holds the ``davis2017`` package (davisvideochallenge/davis2017-evaluation, or the copy in
ReferFormer); it needs OpenCV and scikit-image (both lvas dependencies) and pandas.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np


def davis_root(root: Path, out: Path) -> list[str]:
    """A DAVIS-2017 folder for the toolkit: links to ROOT's valid frames and annotations."""
    videos = sorted(json.loads((root / "meta_expressions" / "valid" / "meta_expressions.json").read_text())["videos"])
    for sub, src in (("JPEGImages/480p", "JPEGImages"), ("Annotations_unsupervised/480p", "Annotations")):
        (out / sub).mkdir(parents=True)
        for v in videos:
            (out / sub / v).symlink_to((root / "valid" / src / v).resolve())
    (out / "ImageSets" / "2017").mkdir(parents=True)
    (out / "ImageSets" / "2017" / "val.txt").write_text("".join(f"{v}\n" for v in videos))
    return videos


def noisy(root: Path, out: Path, seed: int) -> dict:
    """lvas's davis17 metrics of noisy logits, and lvas's merged label maps of them written to ``out``."""
    import torch
    import torch.nn.functional as F
    from PIL import Image

    from lvas.data.davis import RefDAVIS17
    from lvas.davis2017 import Davis17Evaluator, VideoMerges, probability

    rng = np.random.default_rng(seed)
    ds = RefDAVIS17(root, "valid", frames=1, size=64)
    ev, merges = Davis17Evaluator("strict"), {}
    for i in range(len(ds)):
        item = ds[i]
        meta = item["meta"]
        truth = np.roll(item["gt"][0].numpy(), int(rng.integers(-4, 5)), axis=int(rng.integers(0, 2)))
        grid = F.interpolate(torch.from_numpy(truth.astype(np.float32))[None, None], size=(64, 64), mode="bilinear",
                             align_corners=False)[0, 0]
        logits = 6 * (grid - 0.5) + torch.from_numpy(rng.normal(0, 1.5, (64, 64)).astype(np.float32))
        logits = logits - 20 if rng.random() < 0.1 else logits
        ev.process(None, item["gt"][0], {**meta, "logits": logits})
        d = meta["davis"]
        v = merges.setdefault(meta["video"], VideoMerges(meta["video"], Path(d["annotations"])))
        v.add(d["annotator"], d["object"], meta["frame_name"], probability(logits, meta["orig"], meta["resized"]))
    for v in merges.values():
        for (a, frame), m in v.frames.items():
            p = out / f"anno_{a}" / v.video / f"{frame}.png"
            p.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(m.label.numpy()).save(p)
    return ev.compute()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--toolkit", required=True, help="folder holding the davis2017 package")
    ap.add_argument("--root", required=True, help="Ref-DAVIS17 in ReferFormer's layout")
    ap.add_argument("--checkpoint", default=None, help="an lvas checkpoint (model.pt) or run id")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    sys.path.insert(0, args.toolkit)
    from davis2017.evaluation import DAVISEvaluation  # noqa: E402

    root = Path(args.root)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if args.checkpoint:
            lvas = [sys.executable, "-m", "lvas.cli", "eval", args.checkpoint, "--dataset", "davis", "--root",
                    str(root), "--quiet"]
            subprocess.run([*lvas, "--json", str(tmp / "m.json")], check=True)
            subprocess.run([*lvas, "--submission", str(tmp / "sub.zip")], check=True)
            ours = json.loads((tmp / "m.json").read_text())
            with zipfile.ZipFile(tmp / "sub.zip") as zf:
                zf.extractall(tmp / "res")
        else:
            ours = noisy(root, tmp / "res", args.seed)
        davis_root(root, tmp / "DAVIS")
        worst = 0.0
        theirs = {}
        for a in range(4):
            res = DAVISEvaluation(davis_root=str(tmp / "DAVIS"), task="unsupervised", gt_set="val").evaluate(
                str(tmp / "res" / f"anno_{a}"))
            j, f = np.mean(res["J"]["M"]), np.mean(res["F"]["M"])
            theirs[a] = {"J": 100 * j, "F": 100 * f, "JF": 100 * (j + f) / 2}
            for k in ("J", "F", "JF"):
                worst = max(worst, abs(theirs[a][k] - ours[f"anno_{a}/{k}"]))
                print(f"anno_{a} {k:<3} toolkit {theirs[a][k]:.10f}  lvas {ours[f'anno_{a}/{k}']:.10f}")
        for k in ("J", "F", "JF"):
            mean = float(np.mean([theirs[a][k] for a in range(4)]))
            worst = max(worst, abs(mean - ours[k]))
            print(f"mean    {k:<3} toolkit {mean:.10f}  lvas {ours[k]:.10f}")
        print(f"largest difference: {worst:.3g} (percent points)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
