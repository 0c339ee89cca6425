"""The same result on 1 or 2 processes, or with gradients accumulated (issue 22 §2), through the
path a sweep uses (``lvas sweep``, and ``--gpus-per-trial 2``: torchrun, DistributedDataParallel, gloo
on this CPU machine).

``train.batch_size`` is the global batch: 1 process x 4, 2 processes x 2 and 1 process x (2 + 2
accumulated) take the same 4 samples per step (lvas.engine.batching). Equal up to the order of float
sums: DDP averages two means of two where one process takes the mean of four, SyncBatchNorm sums the
two halves' statistics, accumulation adds two half gradients. After 2 epochs (8 steps of Adam) the
losses agree to 1e-5 and every weight to 1e-4 (absolute); without SyncBatchNorm, or accumulating
through BatchNorm layers that train (each piece normalised by its own 2 samples), they do not -- the
test shows that difference too, so it can fail.
"""

from pathlib import Path

import pytest
import torch
import yaml

from lvas.cli import main

ROOT = Path(__file__).resolve().parents[1]
TINY = {"data.frames": 4, "data.size": 48, "data.workers": 0, "train.epochs": 2, "train.batch_size": 4,
        "train.threads": 1, "train.lr": 0.01, "train.optimizer": {"name": "sgd", "momentum": 0.9}, "tracking.system_metrics": False, "tracking.overlays": 0,
        "tracking.log_checkpoint": False, "model.text.hidden": 16, "model.text.embed_dim": 8,
        "model.cmam.channels": 8, "model.decoder.channels": 8}
LOSS_TOL, WEIGHT_TOL = 1e-5, 1e-4


def _sweep(folder: Path, synth: Path, name: str, variants: dict[str, dict]) -> Path:
    p = folder / f"{name}.yaml"
    p.write_text(yaml.safe_dump({
        "name": name, "base": str(ROOT / "experiments" / "cpu_small.yaml"), "metric": {"name": "AP"},
        "report": "ablation", "overrides": {**TINY, "data.root": str(synth)},
        "variants": [{"label": k, "overrides": v} for k, v in variants.items()]}))
    return p


def _runs(uri: str) -> dict[str, dict]:
    """variant label -> the tags of its (one) finished run."""
    from mlflow import MlflowClient

    client = MlflowClient(uri)
    out = {}
    for exp in client.search_experiments():
        for r in client.search_runs([exp.experiment_id]):
            if "variant" in r.data.tags and r.info.status == "FINISHED":
                out[r.data.tags["variant"]] = r.data.tags
    return out


def _results(uri: str) -> dict[str, tuple[list[float], dict]]:
    """label -> (loss per epoch, final weights) of every trial."""
    import json

    res = {}
    for label, tags in _runs(uri).items():
        run_dir = Path(tags["run_dir"])
        hist = json.loads((run_dir / "history.json").read_text())
        state = torch.load(run_dir / "model.pt", weights_only=True)["model"]
        res[label] = ([h["train_loss"] for h in hist], state)
    return res


def _max_diff(a: dict, b: dict) -> float:
    """The largest absolute difference of any floating-point weight or buffer."""
    return max((a[k].float() - b[k].float()).abs().max().item() for k in a if a[k].is_floating_point())


@pytest.fixture(scope="module")
def runs(tmp_path_factory, synth):
    tmp = tmp_path_factory.mktemp("scale")
    one = _sweep(tmp, synth, "one", {
        "b4": {},
        "b4 frozen BN": {"train.freeze_bn": True},
        "2+2 frozen BN": {"train.freeze_bn": True, "train.max_per_device_batch": 2},
        "2+2": {"train.max_per_device_batch": 2},
    })
    two = _sweep(tmp, synth, "two", {"2x2": {}, "2x2 no SyncBN": {"train.sync_bn": False}})
    uri = f"sqlite:///{tmp / 'ml.db'}"
    assert main(["sweep", str(one), "--quiet", "--tracking-uri", uri, "--out", str(tmp / "sweeps")]) == 0
    assert main(["sweep", str(two), "--quiet", "--tracking-uri", uri, "--out", str(tmp / "sweeps"),
                 "--gpus-per-trial", "2"]) == 0
    res = _results(uri)
    for a, b in [("b4", "2x2"), ("b4", "2x2 no SyncBN"), ("b4 frozen BN", "2+2 frozen BN"), ("b4", "2+2")]:
        print(f"{a} vs {b}: loss {max(abs(x - y) for x, y in zip(res[a][0], res[b][0])):.2e}, "
              f"weights {_max_diff(res[a][1], res[b][1]):.2e}")  # the figures of the note (pytest -s)
    return res, uri


def test_two_processes_with_syncbn_train_as_one_process_at_the_same_global_batch(runs):
    res, _ = runs
    (loss_a, w_a), (loss_b, w_b) = res["b4"], res["2x2"]
    assert len(loss_a) == len(loss_b) == 2
    assert max(abs(x - y) for x, y in zip(loss_a, loss_b)) < LOSS_TOL, (loss_a, loss_b)
    assert _max_diff(w_a, w_b) < WEIGHT_TOL
    # BatchNorm over each process's own 2 samples is another computation: the test can tell
    loss_c, w_c = res["2x2 no SyncBN"]
    assert max(abs(x - y) for x, y in zip(loss_a, loss_c)) > 100 * LOSS_TOL and _max_diff(w_a, w_c) > 100 * WEIGHT_TOL


def test_accumulated_micro_batches_train_as_the_global_batch(runs):
    res, _ = runs
    (loss_a, w_a), (loss_b, w_b) = res["b4 frozen BN"], res["2+2 frozen BN"]
    assert max(abs(x - y) for x, y in zip(loss_a, loss_b)) < LOSS_TOL, (loss_a, loss_b)
    assert _max_diff(w_a, w_b) < WEIGHT_TOL
    # with BatchNorm layers that train, each piece is normalised by its own samples: not the same
    loss_c, w_c = res["2+2"]
    loss_d, w_d = res["b4"]
    assert max(abs(x - y) for x, y in zip(loss_c, loss_d)) > 100 * LOSS_TOL and _max_diff(w_c, w_d) > 100 * WEIGHT_TOL


def test_each_run_records_how_it_was_spread(runs):
    _, uri = runs
    tags = _runs(uri)
    two, acc = tags["2x2"], tags["2+2"]
    assert (two["dist.world_size"], two["dist.per_device_batch"], two["dist.accumulate"], two["dist.effective_batch"]) \
        == ("2", "2", "1", "4")
    assert two["dist.sync_bn"] == "True" and two["dist.devices"].startswith("2 x cpu")
    assert (acc["dist.world_size"], acc["dist.per_device_batch"], acc["dist.accumulate"], acc["dist.micro_batch"]) \
        == ("1", "4", "2", "2")
    assert tags["b4"]["dist.accumulate"] == "1" and tags["b4"]["dist.lr"] == "0.01"
