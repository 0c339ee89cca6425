"""Development oracle: the released CSTM model and lvas's `cstm_released` on the same inputs.

Not a test (the project's tests never depend on the released code). Given a checkout of the
released repository (RyanHTR/CSTM), builds its ``CSTMModel`` with random weights (randomised
BatchNorm statistics and CMAM gates, so nothing is trivially zero), saves its state dict, loads
that into lvas through ``lvas.models.layouts.cstm.load_released`` (strict) and compares the six
output maps on a random clip and query.

    python benchmarks/oracle_released_cstm.py --released /path/to/CSTM [--size 320 --frames 8]

With ``--time N`` it then times N forward passes of each model, interleaved (released, lvas,
released, ...), with ``--threads`` torch threads, and prints the median of each; ``--train-steps N``
times N training steps (train mode, the mean BCE of the six maps against one target, backward,
Adam) of each the same way.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import types
from pathlib import Path

import torch


def released_model(repo: Path, dim: int):
    sys.path.insert(0, str(repo))
    import models.cstm_model as cm
    from models.backbones.resnet import resnet50

    cm.resnet50 = lambda pretrained=True: resnet50(pretrained=False)  # its ImageNet file path is the authors' own
    CSTMModel = cm.CSTMModel

    root = Path(tempfile.mkdtemp())
    (root / "pretrained_weights").mkdir()
    torch.save({}, root / "pretrained_weights" / "i3d_rgb.pth")
    opt = types.SimpleNamespace(dim_semantic=dim, modality="rgb", skip="single", project_root=str(root), up_mask=False)
    return CSTMModel(opt)


def randomise(model: torch.nn.Module, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, m in model.named_modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
                m.weight.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
            if name.endswith("gamma.0"):
                m.weight.copy_(torch.randn(m.weight.shape, generator=g) * 0.05)
                m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--released", required=True, type=Path, help="checkout of the released CSTM repository")
    ap.add_argument("--size", type=int, default=320)
    ap.add_argument("--frames", type=int, default=8)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--time", type=int, default=0, help="time this many forward passes of each, interleaved")
    ap.add_argument("--channels-last", action="store_true", help="time lvas with channels_last weights (as lvas runs)")
    ap.add_argument("--train-steps", type=int, default=0, help="time this many training steps of each, interleaved")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    theirs = released_model(a.released, 512)
    randomise(theirs, 1)
    theirs.eval()
    from utils.tool import get_video_spatial_feature  # the release's coordinate map

    from lvas.config import load_config
    from lvas.models import build_model
    from lvas.models.layouts.cstm import load_released

    cfg = load_config(Path(__file__).resolve().parents[1] / "experiments" / "cstm_released.yaml",
                      [f"data.size={a.size}", f"data.frames={a.frames}"])
    ours = build_model(cfg, load_weights=False)
    table = torch.randn(ours.text.embedding.weight.shape[0], 300) * 0.3
    table[0] = 0
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "checkpoint.pth.tar"
        torch.save({"epoch": 12, "state_dict": theirs.state_dict()}, path)
        state = torch.load(path, map_location="cpu", weights_only=True)
    with torch.no_grad():
        ours.text.embedding.weight.copy_(table)
    load_released(ours, state, "oracle state dict")
    ours.eval()
    clip = torch.rand(1, 3, a.frames, a.size, a.size)
    tokens = torch.zeros(1, 20, dtype=torch.long)
    tokens[0, :7] = torch.randint(1, table.shape[0], (7,))
    mask = tokens > 0
    spatials = [torch.from_numpy(get_video_spatial_feature(a.size // 32 * 2**i, a.size // 32 * 2**i))[None]
                for i in range(5)]
    with torch.no_grad():
        ref = theirs(clip, table[tokens], mask, spatials)
        out = ours(clip, tokens, mask)
    got = [*out["aux"], out["logits"]]
    for i, (r, o) in enumerate(zip(ref, got)):
        d = (r - o[:, 0]).abs().max().item()
        print(f"map {i} {tuple(r.shape)}: max |released - lvas| = {d:.3g} (scale {r.abs().max().item():.3g})")
    n_theirs = sum(p.numel() for p in theirs.parameters())
    print(f"parameters: released {n_theirs / 1e6:.2f} M, lvas {sum(p.numel() for p in ours.parameters()) / 1e6:.2f} M")
    print("equal" if all(torch.equal(r, o[:, 0]) for r, o in zip(ref, got)) else "not bit-identical")
    if a.time:
        if a.channels_last:
            from lvas.models.base import to_channels_last

            to_channels_last(ours)
        times: dict[str, list[float]] = {"released": [], "lvas": []}
        with torch.no_grad():
            for _ in range(a.time):
                for name, run in (("released", lambda: theirs(clip, table[tokens], mask, spatials)),
                                  ("lvas", lambda: ours(clip, tokens, mask))):
                    t = time.perf_counter()
                    run()
                    times[name].append(time.perf_counter() - t)
        for name, ts in times.items():
            print(f"forward {name}: median {statistics.median(ts):.2f} s over {len(ts)} "
                  f"({', '.join(f'{x:.2f}' for x in ts)}), {a.threads} thread(s), 1x{a.frames}x{a.size}x{a.size}")
    if a.train_steps:
        train_timing(a, theirs, ours, clip, table, tokens, mask, spatials)


def train_timing(a, theirs, ours, clip, table, tokens, mask, spatials) -> None:
    """Interleaved training steps of both models on the same clip, query and target."""
    import torch.nn.functional as F

    target = (torch.rand(1, a.size, a.size) > 0.7).float()

    def loss_of(maps) -> torch.Tensor:
        return sum(F.binary_cross_entropy_with_logits(
            F.interpolate(m.reshape(1, 1, *m.shape[-2:]), size=target.shape[-2:], mode="bilinear"), target[None])
            for m in maps) / len(maps)

    theirs.train(), ours.train()
    opts = {"released": torch.optim.Adam(theirs.parameters(), lr=1e-6),
            "lvas": torch.optim.Adam(ours.parameters(), lr=1e-6)}
    steps = {"released": lambda: loss_of(theirs(clip, table[tokens], mask, spatials)),
             "lvas": lambda: loss_of([*(o := ours(clip, tokens, mask))["aux"], o["logits"]])}
    times: dict[str, list[float]] = {"released": [], "lvas": []}
    for _ in range(a.train_steps):
        for name in ("released", "lvas"):
            t = time.perf_counter()
            opts[name].zero_grad(set_to_none=True)
            steps[name]().backward()
            opts[name].step()
            times[name].append(time.perf_counter() - t)
    for name, ts in times.items():
        print(f"training step {name}: median {statistics.median(ts):.2f} s over {len(ts)} "
              f"({', '.join(f'{x:.2f}' for x in ts)}), {a.threads} thread(s), 1x{a.frames}x{a.size}x{a.size}")
    r, o = statistics.median(times["released"]), statistics.median(times["lvas"])
    print(f"lvas / released: {o / r:.2f} (training step)")


if __name__ == "__main__":
    main()
