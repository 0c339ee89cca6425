"""Development oracle: the released LBDT and ACGA models and lvas's `lbdt4_paper` / `acga_paper` on the
same inputs.

Not a test (the project's tests never depend on the released code). Given checkouts of
dzh19990407/LBDT and haowang1992/ACGA, builds each released model with random weights (randomised
BatchNorm statistics), saves its state dict, loads it into lvas through the registered layout
(``lvas.models.layouts.base.load_layout``, strict) and compares the outputs in eval mode.

    python benchmarks/oracle_released_lbdt_acga.py --lbdt /path/to/LBDT --acga /path/to/ACGA [--size 320]

LBDT: image and frame-difference tensors are built the release's way (ImageNet-normalised frames,
|normalised I_t - normalised I_{t-k}|) from one two-frame clip; words are GloVe-like vectors fed to
the release directly and placed in lvas's frozen embedding table. ACGA: the release takes
precomputed Mixed_4e features; lvas runs I3D from pixels, so the comparison feeds the release the
Mixed_4e output of lvas's own (loaded) I3D stages 1-4 up to Mixed_4e.
"""

from __future__ import annotations

import argparse
import copy
import sys
import tempfile
import types
from pathlib import Path

import torch

from lvas.config import load_config
from lvas.models import build_model
from lvas.models.layouts.base import find_layout, load_layout


def randomise(model: torch.nn.Module, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
                m.weight.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)


def lvas_loaded(yaml: str, state: dict, vocab: int, size: int, frames: int):
    """lvas's model of ``yaml`` with the released ``state`` loaded strictly through its detected layout,
    and a random word-vector table (row 0 = padding) placed in its frozen embedding: (layout, model, table)."""
    cfg = load_config(Path(__file__).resolve().parents[1] / "experiments" / yaml)
    c = copy.deepcopy(cfg)
    c.model.spatial.pretrained = c.model.temporal.pretrained = "none"
    c.model.text.embedding = "glove_frozen"
    c.data.size, c.data.frames = size, frames
    ours = build_model(c, vocab=[f"w{i}" for i in range(vocab)], load_weights=False)
    table = torch.randn(vocab, 300) * 0.3
    table[0] = 0
    ours.text.embedding.weight.copy_(table)
    layout = find_layout(state)
    load_layout(ours, state, layout, f"released {layout.name} state dict")
    return layout, ours.eval(), table


def check_lbdt(repo: Path, size: int) -> float:
    sys.path.insert(0, str(repo))
    torch.Tensor.cuda = lambda self, *a, **k: self  # the release builds its positional encodings with .cuda()
    import torchvision
    from models.LBDT_4 import JointModel

    torch.manual_seed(0)
    released = JointModel(torchvision.models.resnet50(weights=None), torchvision.models.resnet50(weights=None)).eval()
    randomise(released, 1)
    state = released.state_dict()
    n_words, vocab = 25, 40
    layout, ours, table = lvas_loaded("lbdt4_paper.yaml", state, vocab, size, 2)
    clip = torch.rand(1, 3, 2, size, size)
    tokens = torch.randint(1, vocab, (1, n_words))
    tokens[:, 6:] = 0
    mask = tokens > 0
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    img = (clip[:, :, 1] - mean) / std
    flow = ((clip[:, :, 1] - mean) / std - (clip[:, :, 0] - mean) / std).abs()
    feat = size // 32
    with torch.no_grad():
        ref = released(img, flow, table[tokens], mask.long(), torch.ones(1, feat * feat, dtype=torch.long))
        out = ours(clip, tokens, mask)["logits"][:, 0]
    diff = (ref.reshape(out.shape) - out).abs().max().item()
    print(f"LBDT  layout {layout.name}: {len(state)} released keys loaded strictly; logits {tuple(out.shape)}, "
          f"max |released - lvas| = {diff:.3g} (logit range {ref.min().item():.2f}..{ref.max().item():.2f})")
    sys.path.remove(str(repo))
    for k in [k for k in sys.modules if k == "models" or k.startswith("models.")]:
        del sys.modules[k]
    return diff


def check_acga(repo: Path, size: int) -> float:
    sys.path.insert(0, str(repo))
    from model import acga as released_acga
    from model.pytorch_i3d import I3D

    torch.manual_seed(0)
    opt = types.SimpleNamespace(modality="rgb", project_root=str(tempfile.mkdtemp()), dim_visual_small=832,
                                dim_spatial=8, dim_semantic=300, image_small_size=size // 16, sentence_length=20,
                                dim_visual_medium=256, dim_visual_large=128)
    (Path(opt.project_root) / "model").mkdir()
    torch.save(I3D(num_classes=400).state_dict(), Path(opt.project_root) / "model" / "i3d_rgb.pth")
    released = released_acga.ACGA(opt).eval()
    randomise(released, 2)
    with torch.no_grad():  # its N(0, 0.02) init leaves the logits nearly constant: widen them to compare
        for m in released.modules():
            if isinstance(m, torch.nn.Linear):
                m.weight.mul_(25)
    state = released.state_dict()
    vocab = 40
    layout, ours, table = lvas_loaded("acga_paper.yaml", state, vocab, size, 16)
    clip = torch.rand(1, 3, 16, size, size)
    tokens = torch.randint(1, vocab, (1, 20))
    tokens[:, 7:] = 0
    mask = tokens > 0
    from lvas.models.coords import coord_feature

    with torch.no_grad():
        enc = ours.temporal
        x, sz = enc.prepare(enc.view(clip))
        for i in range(1, 4):
            x = enc.run_stage(i, x, sz)
        stage4 = enc.stages[3]
        for name, m in stage4.named_children():  # up to Mixed_4e: the release's precomputed input
            if name == "Mixed_4f":
                break
            x = m(x)
        s = size // 16
        sp = [coord_feature(h, h)[None] for h in (s, 4 * s, 16 * s)]
        ref = released(x[:, None], table[tokens].transpose(1, 2), *sp)[2]
        out = ours(clip, tokens, mask)["logits"][:, 0]
    diff = (ref - out).abs().max().item()
    print(f"ACGA  layout {layout.name}: {len(state)} released keys, {len(layout.convert(state))} loaded strictly; "
          f"logits {tuple(out.shape)}, max |released - lvas| = {diff:.3g} "
          f"(logit range {ref.min().item():.2f}..{ref.max().item():.2f})")
    return diff


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lbdt", type=Path, help="checkout of dzh19990407/LBDT")
    ap.add_argument("--acga", type=Path, help="checkout of haowang1992/ACGA")
    ap.add_argument("--size", type=int, default=320)
    a = ap.parse_args()
    torch.set_num_threads(2)
    if a.lbdt:
        check_lbdt(a.lbdt, a.size)
    if a.acga:
        check_acga(a.acga, a.size)


if __name__ == "__main__":
    main()
