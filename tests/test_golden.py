"""Golden numbers: a refactor that moves a number is a behaviour change.

The same golden must hold on every x86-64 CPU, so none may depend on the CPU's floating-point path:

* **Trajectories in float64** (``train.precision: float64``): tiny trainings of the three methods
  (CSTM joint and two-stage, LBDT, ACGA; one thread), their per-epoch losses and test metrics. In
  float64 a different reduction order (AVX2 / AVX-512 / scalar kernels, oneDNN's ISA) moves a loss
  by ~1e-15, and two epochs of training amplify that to ~1e-13; in float32 the same two epochs had
  turned 1e-7 into 3e-3 (an Intel Xeon vs the AMD EPYC that recorded the old float32 goldens). The
  model is initialised in float64 too: float32 random draws differ in the last bit between kernels.
  Tolerance: relative 1e-7, which a change of loss, initialisation, data order or schedule exceeds
  by orders of magnitude.
* **The float32 path's first step**: each method's first-batch loss in float32 (before any update:
  only the forward at initialisation, rounding noise ~1e-7), relative 1e-5.

Recorded at the commit that introduced float64 goldens; checked equal under
``ATEN_CPU_CAPABILITY=default|avx2|avx512`` and ``ONEDNN_MAX_CPU_ISA=AVX2|AVX512_CORE``.
"""

from pathlib import Path

import pytest

from lvas.config import load_config
from lvas.engine.trainer import TrackOptions, train_experiment

ROOT = Path(__file__).resolve().parents[1]
# frames are generated at 48 px and read at 48 px: no resampling on the way in
BASE = ["data.frames=4", "data.size=48", "data.workers=0", "train.batch_size=4", "train.lr=0.003",
        "tracking.system_metrics=false", "tracking.overlays=0", "model.text.hidden=16", "model.text.embed_dim=8",
        "model.cmam.channels=8", "model.decoder.channels=8", "train.threads=1"]
SMALL = ["data.workers=0", "train.batch_size=4", "tracking.system_metrics=false", "tracking.overlays=0",
         "train.threads=1", "train.epochs=2", "data.size=64"]
TWO_STAGE = "train.recipe={name: two_stage, stage2_epochs: 2}"
SETUPS = {
    "cstm joint": ("cpu_small.yaml", BASE + ["train.epochs=3"]),
    "cstm two-stage": ("cpu_small.yaml", BASE + [TWO_STAGE, "train.epochs=2", "model.fusion=add"]),
    "lbdt": ("lbdt_cpu.yaml", SMALL + ["data.frames=2"]),
    "acga": ("acga_cpu.yaml", SMALL + ["data.frames=4"]),
}
# float64: per-epoch training losses and the test mIoU
FLOAT64 = {
    "cstm joint": ([0.9368552770265779, 0.7519290541091334, 0.6918952582712311], 17.192533657952644),
    "cstm two-stage": ([0.9600331017597437, 0.872243789366564], 1.9568462997517313),
    "lbdt": ([0.7407654025766512, 0.7110334650823562], 1.232998421903388e-06),
    "acga": ([2.177919212755432, 2.0978328552996928], 3.927951430586827),
}
# float32: the first batch's loss
FLOAT32_FIRST = {"cstm joint": 1.4430606365203857, "cstm two-stage": 1.235159158706665, "lbdt": 0.7893730401992798,
                 "acga": 2.0809969902038574}


@pytest.fixture(scope="module")
def synth10(tmp_path_factory):
    from lvas.data.synthetic import generate

    root = tmp_path_factory.mktemp("golden") / "synth"
    generate(root, videos=10, frames=4, size=48, progress=False)
    return root


def _train(case, root, tmp_path, extra):
    experiment, overrides = SETUPS[case]
    cfg = load_config(ROOT / "experiments" / experiment, [f"data.root={root}", *overrides, *extra])
    result, _ = train_experiment(cfg, tmp_path / "run", progress=False, track=TrackOptions(active=False))
    return result


@pytest.mark.parametrize("case", list(SETUPS))
def test_golden_float64_trajectory(case, synth10, tmp_path):
    losses, miou = FLOAT64[case]
    result = _train(case, synth10, tmp_path, ["train.precision=float64"])
    assert [h["train_loss"] for h in result.history] == pytest.approx(losses, rel=1e-7)
    assert result.test["mIoU"] == pytest.approx(miou, rel=1e-7, abs=1e-12)


@pytest.mark.parametrize("case", list(SETUPS))
def test_golden_float32_first_step(case, synth10, tmp_path):
    one = ["train.epochs=1", "train.limit_batches=1", "tracking.overlays=0"]
    if case == "cstm two-stage":
        one.append("train.recipe={name: two_stage, stage2_epochs: 1}")
    result = _train(case, synth10, tmp_path, one)
    assert result.history[0]["train_loss"] == pytest.approx(FLOAT32_FIRST[case], rel=1e-5)


def test_float64_runs_in_float64(synth10, tmp_path):
    """The float64 run really is: its checkpoint holds float64 weights and evaluates in float64."""
    import torch

    from lvas.engine.checkpoint import load_checkpoint, model_from_checkpoint

    result = _train("lbdt", synth10, tmp_path, ["train.precision=float64", "train.epochs=1", "train.limit_batches=1"])
    state = load_checkpoint(result.checkpoint)
    assert {v.dtype for v in state["model"].values() if v.is_floating_point()} == {torch.float64}
    _, model, _ = model_from_checkpoint(state)
    assert {p.dtype for p in model.parameters()} == {torch.float64}
