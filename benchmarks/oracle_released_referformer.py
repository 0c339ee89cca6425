"""Development oracle: the released ReferFormer model and lvas's ``referformer_*`` YAMLs on the same inputs.

Not a test (the project's tests never depend on the released code). Given a checkout of
wjn922/ReferFormer, builds its model (``models.build``, the A2D options: ``--with_box_refine --binary
--freeze_text_encoder``) with random weights for each backbone (ResNet-50, Video-Swin-T, Video-Swin-B),
its multi-scale deformable attention on the release's own pure-PyTorch path
(``ms_deform_attn_core_pytorch``: no compiled extension), and a small RoBERTa written here (hidden 768 as
the release's resizer wants, one layer) with a byte-level tokenizer read by the release's own
``from_pretrained`` call. Saves the state dict, loads it into lvas through the registered layout
(strict) and compares, in eval mode on the same clip and captions, every decoder layer's class logits,
boxes and masks, in both of the release's modes (all frames; A2D's one annotated frame).

    python benchmarks/oracle_released_referformer.py --referformer /path/to/ReferFormer [--size 96x128] [--frames 5]

Needs, beside lvas: ``timm``, ``fvcore`` (the release imports them) -- ``pip install --target DIR timm
fvcore iopath yacs termcolor portalocker`` and ``PYTHONPATH=DIR``.
"""

from __future__ import annotations

import argparse
import copy
import sys
import tempfile
import types
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
YAMLS = {"resnet50": "referformer_r50.yaml", "video_swin_t_p4w7": "referformer_swin_t.yaml",
         "video_swin_b_p4w7": "referformer_paper.yaml"}


def tiny_roberta(folder: Path) -> Path:
    """A 1-layer RoBERTa of hidden size 768 and a byte-level tokenizer, saved as `save_pretrained` does."""
    from transformers import RobertaConfig, RobertaModel

    from lvas.data.vocab import write_byte_bpe_tokenizer

    write_byte_bpe_tokenizer(folder)
    torch.manual_seed(0)
    cfg = RobertaConfig(vocab_size=262, hidden_size=768, num_hidden_layers=1, num_attention_heads=12,
                        intermediate_size=256, max_position_embeddings=80, type_vocab_size=1, pad_token_id=1)
    RobertaModel(cfg).save_pretrained(folder)
    return folder


def release(checkout: Path, roberta: Path):
    """The release's ``models`` package importable on a CPU, its text model read from ``roberta``."""
    sys.path.insert(0, str(checkout))
    sys.modules["MultiScaleDeformableAttention"] = types.ModuleType("MultiScaleDeformableAttention")
    import transformers

    from models.ops.functions import ms_deform_attn_func as func
    from models.ops.modules import ms_deform_attn as mod

    class PyTorchPath:  # the release's own reference implementation in place of its CUDA kernel
        @staticmethod
        def apply(value, shapes, level_start, locations, weights, im2col_step):
            return func.ms_deform_attn_core_pytorch(value, shapes, locations, weights)

    mod.MSDeformAttnFunction = PyTorchPath
    import models.referformer as rf

    tok = transformers.AutoTokenizer.from_pretrained(str(roberta))
    if not hasattr(tok, "batch_encode_plus"):  # transformers 5 dropped it: the same call
        type(tok).batch_encode_plus = lambda self, texts, **kw: self(texts, **kw)
    rf.RobertaTokenizerFast = types.SimpleNamespace(from_pretrained=lambda name: tok)
    rf.RobertaModel = types.SimpleNamespace(
        from_pretrained=lambda name: transformers.RobertaModel.from_pretrained(str(roberta)))
    import models.backbone as bb

    bb.is_main_process = lambda: False  # no ImageNet download
    from opts import get_args_parser

    return rf, get_args_parser()


def randomise(model: torch.nn.Module, seed: int) -> None:
    """Every parameter and norm statistic random (not the release's zero / constant inits)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(torch.randn(p.shape, generator=g) * (0.02 if p.dim() > 1 else 0.1) + (1.0 if "norm" in name and
                                                                                            name.endswith("weight") else 0.0))
        for name, b in model.named_buffers():
            if name.endswith("running_mean"):
                b.copy_(torch.randn(b.shape, generator=g) * 0.1)
            elif name.endswith("running_var"):
                b.copy_(torch.rand(b.shape, generator=g) + 0.5)


def compare(rf, parser, backbone: str, roberta: Path, size: tuple[int, int], frames: int, target: bool) -> dict:
    from einops import rearrange
    from util.misc import nested_tensor_from_videos_list

    from lvas.config import load_config
    from lvas.data.vocab import SubwordVocabulary
    from lvas.models import build_model
    from lvas.models.layouts.base import find_layout, load_layout

    args = parser.parse_args(["--backbone", backbone, "--with_box_refine", "--binary", "--freeze_text_encoder",
                              "--dataset_file", "a2d", "--masks", "--num_frames", str(frames), "--device", "cpu"])
    torch.manual_seed(1)
    model, _, _ = rf.build(args)
    randomise(model, 2)
    model.eval()
    state = {f"module.{k}": v for k, v in model.state_dict().items()}  # as saved from DistributedDataParallel
    cfg = load_config(ROOT / "experiments" / YAMLS[backbone],
                      [f"model.text.path={roberta}", f"model.text.tokenizer_path={roberta}", "model.text.pretrained=false",
                       f"data.frames={frames}", f"model.decoder.frames={'target' if target else 'all'}"])
    c = copy.deepcopy(cfg)
    c.model.spatial.pretrained = c.model.temporal.pretrained = "none"
    ours = build_model(c, vocab=None, load_weights=False)
    layout = find_layout({"model": state})
    load_layout(ours, {"model": state}, layout, "released ReferFormer state dict")
    ours.eval()
    g = torch.Generator().manual_seed(3)
    clip = torch.rand(2, 3, frames, *size, generator=g)  # [0, 1] RGB
    captions = ["a man in a red shirt is jumping", "the dog on the left"]
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1, 1)
    videos = [v for v in rearrange((clip - mean) / std, "b c t h w -> b t c h w")]
    targets = [{"size": torch.tensor(size)} for _ in captions]
    if target:
        for t in targets:
            t["valid_indices"] = torch.tensor([frames // 2])
    vocab = SubwordVocabulary(str(roberta))
    enc = [vocab.encode(q, 40) for q in captions]
    tokens, mask = torch.stack([e[0] for e in enc]), torch.stack([e[1] for e in enc])
    with torch.no_grad():
        ref = model(nested_tensor_from_videos_list(videos), captions, targets)
        got = ours(clip, tokens, mask)
    diff = {}
    for key in ("pred_logits", "pred_boxes", "pred_masks"):
        layers_ref = [*[a[key] for a in ref["aux_outputs"]], ref[key]]
        layers_got = [*[a[key] for a in got["aux_outputs"]], got[key]]
        diff[key] = max((a - b).abs().max().item() for a, b in zip(layers_ref, layers_got))
    n = sum(p.numel() for p in ours.parameters())
    return {"backbone": backbone, "mode": "target frame" if target else "all frames", "params_m": round(n / 1e6, 2),
            **{f"max |diff| {k}": f"{v:.2e}" for k, v in diff.items()}}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--referformer", required=True, help="a checkout of wjn922/ReferFormer")
    ap.add_argument("--size", default="96x128", help="frame size H x W (default 96x128)")
    ap.add_argument("--frames", type=int, default=5)
    ap.add_argument("--backbones", default="resnet50,video_swin_t_p4w7,video_swin_b_p4w7")
    a = ap.parse_args()
    size = tuple(int(v) for v in a.size.split("x"))
    with tempfile.TemporaryDirectory() as d:
        roberta = tiny_roberta(Path(d) / "roberta")
        rf, parser = release(Path(a.referformer), roberta)
        for backbone in a.backbones.split(","):
            for target in (False, True):
                print(compare(rf, parser, backbone, roberta, size, a.frames, target), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
