"""Development oracle: protocol ``paper`` against the released CSTM evaluation, on identical logits.

Not a test (the project's tests never depend on the released code). Given a checkout of the
released repository (RyanHTR/CSTM), draws random cases (smooth random logits at S x S, ground
truth blobs at A2D-like frame sizes), runs the release's own ``ResizeAnnotation`` and
``report_evaluation_result`` on them (a stand-in model returns the logits; ``.cuda()`` is a no-op)
and lvas's ``masks_for_protocol`` + ``MetricAccumulator`` under ``paper``, and prints both.

    python benchmarks/oracle_released_eval.py --released /path/to/CSTM [--cases 460]
"""

from __future__ import annotations

import argparse
import collections
import collections.abc
import sys
import types
from pathlib import Path

import torch
import torch.nn.functional as F

SIZES = [(320, 568), (320, 427), (320, 480), (320, 320), (240, 320), (320, 576)]


def cases(n: int, s: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    for i in range(n):
        h, w = SIZES[i % len(SIZES)]
        noise = F.interpolate(torch.randn(1, 1, 12, 12, generator=g), size=(s, s), mode="bicubic",
                              align_corners=False)[0, 0]
        yy, xx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
        cy, cx = torch.rand(2, generator=g) * torch.tensor([h, w])
        ry, rx = (torch.rand(2, generator=g) * 0.3 + 0.05) * torch.tensor([h, w])
        gt = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
        if i % 23 == 0:
            gt[:] = False  # some empty ground truths
        # a prediction that overlaps the ground truth to a varying degree, with smooth errors
        g_in = F.interpolate(gt[None, None].float(), size=(s, s), mode="bilinear", align_corners=False)[0, 0]
        logits = 8 * (g_in - 0.5) + noise * float(torch.rand(1, generator=g)) * 12
        yield logits, gt


def released_tools(repo: Path):
    sys.path.insert(0, str(repo))
    collections.Iterable = collections.abc.Iterable  # the release imports it from collections (Python < 3.10)
    sys.modules.setdefault("torchtext", types.ModuleType("torchtext"))
    tv = types.ModuleType("torchtext.vocab")
    tv.GloVe = None
    sys.modules["torchtext.vocab"] = tv
    torch.Tensor.cuda = lambda self, *a, **k: self  # run its evaluation on the CPU
    from datasets.a2d_dataset import ResizeAnnotation
    from utils.tool import report_evaluation_result

    return ResizeAnnotation, report_evaluation_result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--released", required=True, type=Path)
    ap.add_argument("--cases", type=int, default=460)
    ap.add_argument("--size", type=int, default=320)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    ResizeAnnotation, report = released_tools(a.released)
    from lvas.data.clips import Letterbox
    from lvas.metrics import METRIC_NAMES, MetricAccumulator, masks_for_protocol

    data = list(cases(a.cases, a.size, a.seed))
    resize = ResizeAnnotation(a.size)
    batches = []
    for lg, gt in data:
        m = resize(gt.float())
        m[m > 0] = 1
        batches.append((torch.tensor([list(gt.shape)]), torch.zeros(1), torch.zeros(1), torch.zeros(1), m[None], lg))
    loader = [b[:5] for b in batches]
    logits = iter([b[5] for b in batches])
    model = lambda *args: [next(logits)[None]]  # noqa: E731  the released code reads predictions[-1]
    import os

    os.environ["TQDM_DISABLE"] = "1"  # the release prints a progress line per case
    miou, oiou, p5, p6, p7, p8, p9, ap_ = report(loader, model, None)
    theirs = dict(zip(METRIC_NAMES, [100 * v for v in (p5, p6, p7, p8, p9, ap_, oiou, miou)]))
    acc = MetricAccumulator.for_protocol("paper")
    for lg, gt in data:
        pred, truth = masks_for_protocol(lg, gt, Letterbox.fit(tuple(gt.shape), a.size, "stretch"), "paper")
        acc.add(int((pred & truth).sum()), int((pred | truth).sum()))
    ours = acc.compute()
    print(f"{a.cases} cases, logits {a.size}x{a.size}, frames {', '.join(f'{h}x{w}' for h, w in SIZES)}")
    print(f"{'metric':<8}{'released':>12}{'lvas paper':>12}{'diff':>10}")
    for k in METRIC_NAMES:
        print(f"{k:<8}{theirs[k]:>12.4f}{ours[k]:>12.4f}{ours[k] - theirs[k]:>10.2g}")
    print("identical" if all(theirs[k] == ours[k] for k in METRIC_NAMES) else "NOT identical")


if __name__ == "__main__":
    main()
