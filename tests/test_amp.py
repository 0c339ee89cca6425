"""``train.amp: bf16`` on the CPU (issue 22 §1): the model runs under bf16 autocast, the loss is
computed in float32, and the checkpoint and the metrics are float32 as without it."""

from pathlib import Path

import pytest
import torch

from lvas.config import load_config
from lvas.engine.inference import forward, training_pairs
from lvas.models.losses.segmentation import build_loss
from lvas.engine.setup import amp_enabled
from lvas.engine.trainer import TrackOptions, train_experiment
from lvas.models import build_model

ROOT = Path(__file__).resolve().parents[1]
TINY = ["data.frames=4", "data.size=48", "data.workers=0", "train.batch_size=4", "train.lr=0.003", "train.epochs=2",
        "tracking.system_metrics=false", "tracking.overlays=0", "model.text.hidden=16", "model.text.embed_dim=8",
        "model.cmam.channels=8", "model.decoder.channels=8", "train.threads=1"]


def test_amp_setting_means_what_it_says():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert amp_enabled("bf16", cpu) and amp_enabled("bf16", cuda)
    assert not amp_enabled("auto", cpu) and amp_enabled("auto", cuda)
    assert not amp_enabled("off", cpu) and not amp_enabled("off", cuda)


def test_forward_under_bf16_loss_in_float32(synth):
    cfg = load_config(ROOT / "experiments" / "cpu_small.yaml", [f"data.root={synth}", *TINY])
    torch.manual_seed(0)
    model = build_model(cfg)
    seen = []
    conv = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d))
    conv.register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    b = 2
    batch = {"clip": torch.rand(b, 3, 4, 48, 48), "tokens": torch.randint(1, 20, (b, 20)),
             "mask": torch.ones(b, 20, dtype=torch.bool), "target": [torch.rand(1, 48, 48).round() for _ in range(b)],
             "target_frames": [[2]] * b}
    out = forward(model, batch, torch.device("cpu"), amp=True)
    assert seen == [torch.bfloat16] and out["logits"].dtype == torch.bfloat16  # autocast really ran
    flat, target = training_pairs(out, batch, torch.device("cpu"))
    loss = build_loss(cfg)(flat, target)
    assert loss.dtype == torch.float32
    loss.backward()
    assert all(p.grad is None or p.grad.dtype == torch.float32 for p in model.parameters())
    seen.clear()
    assert forward(model, batch, torch.device("cpu"), amp=False)["logits"].dtype == torch.float32 and seen == [torch.float32]


@pytest.fixture(scope="module")
def trained(synth, tmp_path_factory):
    out = {}
    for amp in ("off", "bf16"):
        cfg = load_config(ROOT / "experiments" / "cpu_small.yaml", [f"data.root={synth}", *TINY, f"train.amp={amp}"])
        result, _ = train_experiment(cfg, tmp_path_factory.mktemp(amp) / "run", progress=False,
                                     track=TrackOptions(active=False))
        out[amp] = result
    return out


def test_bf16_training_on_cpu_keeps_float32_checkpoint_and_metrics(trained):
    off, bf16 = trained["off"], trained["bf16"]
    state = torch.load(bf16.checkpoint, weights_only=True)
    assert state["config"]["train"]["amp"] == "bf16"
    floats = [v for v in state["model"].values() if v.is_floating_point()]
    assert floats and all(v.dtype == torch.float32 for v in floats)
    assert all(isinstance(v, float) for v in bf16.test.values() if not isinstance(v, int))
    # the same training in bf16: close to float32 (bf16 keeps 8 bits of mantissa), not identical
    lo, lb = [h["train_loss"] for h in off.history], [h["train_loss"] for h in bf16.history]
    assert lo != lb and all(abs(a - b) < 0.05 * a for a, b in zip(lo, lb)), (lo, lb)
