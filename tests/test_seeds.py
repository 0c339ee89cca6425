"""Seeds as an axis, adaptive seeds, top-k re-runs, sweeps that notice their file changed, and the
statistics of the report (intervals; the secondary test over samples — the test over seeds is in
test_significance.py)."""

import itertools
import json
import sqlite3
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
import pytest
import yaml

from lvas.cli import main
from lvas.config import ConfigError
from lvas.metrics import MetricAccumulator
from lvas import stats
from lvas.report import sample_test
from lvas.sweepspec import load_sweep
from tests.test_sweep import TINY, write_sweep

ROOT = Path(__file__).resolve().parents[1]


def _study(out: Path, name: str):
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    return optuna.load_study(study_name=name, storage=JournalStorage(JournalFileBackend(str(out / name / "optuna.journal"))))


def _child_tags(db: Path, experiment: str) -> list[dict]:
    con = sqlite3.connect(db)
    rows = con.execute("SELECT r.run_uuid, t.key, t.value FROM runs r JOIN experiments e ON r.experiment_id = "
                       "e.experiment_id JOIN tags t ON t.run_uuid = r.run_uuid WHERE e.name = ?", (experiment,)).fetchall()
    runs: dict[str, dict] = {}
    for run, k, v in rows:
        runs.setdefault(run, {})[k] = v
    return [t for t in runs.values() if "mlflow.parentRunId" in t]


# --------------------------------------------------------------------------- spec


@pytest.mark.parametrize("seeds,values", [(3, (0, 1, 2)), ([4, 7], (4, 7)), (None, (None,))])
def test_seeds_multiply_the_grid_and_set_the_config_seed(tmp_path, synth, seeds, values):
    spec = load_sweep(write_sweep(tmp_path, synth, **({"seeds": seeds} if seeds is not None else {})))
    grid = spec.grid()
    assert [(t.label, t.seed) for t in grid] == [(lab, s) for s in values for lab in ("Spatial", "Temporal")]
    assert len({t.id for t in grid}) == len(grid) and len({t.point for t in grid}) == 2
    for t in grid:
        assert spec.config_for(t).seed == (t.seed if t.seed is not None else 0)
    assert len({spec.folder(t) for t in grid}) == len(grid)


@pytest.mark.parametrize("change,message", [
    ({"seeds": 0}, "seeds: 0: expected a count from 1 to 1000"),
    ({"seeds": [1, 1]}, "seeds: seeds must be distinct"),
    ({"seeds": {"min": 1, "max": 3}}, "seeds.min: 1: a confidence interval needs at least 2 seeds"),
    ({"seeds": {"min": 3, "max": 2}}, "seeds.max: 2 is below seeds.min (3)"),
    ({"seeds": {"min": 2, "max": 4, "until": "forever"}}, "seeds.until: 'forever'"),
    ({"seeds": {"min": 2, "max": 4}}, "adaptive seeds compare rows with a baseline row"),
    ({"report": {"table": "table3a", "baseline": "Nope"}}, "report.baseline: 'Nope' is not a variant label"),
    ({"report": {"table": "table3a", "base": "Spatial"}}, "report.base: unknown key"),
    ({"report": {"table": "table3a", "pairs": [["Spatial", "Nope"]]}}, "report.pairs[0]: 'Nope' is not a variant"),
    ({"report": {"table": "table3a", "pairs": ["Spatial"]}}, "report.pairs: expected a list of [row, other row]"),
    ({"top_k": 2}, "top_k: only for random / bayes"),
    ({"method": "random", "run_cap": 2, "seeds": 2, "overrides": {"train.select": "best_val"}},
     "seeds: method random runs each sampled point once; set top_k"),
])
def test_seed_and_report_keys_are_validated(tmp_path, synth, change, message):
    with pytest.raises(ConfigError) as e:
        load_sweep(write_sweep(tmp_path, synth, **change))
    assert message in str(e.value) and str(tmp_path) in str(e.value)


# --------------------------------------------------------------------------- running


def test_every_point_runs_once_per_seed_and_the_report_aggregates_them(tmp_path, synth, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    p = write_sweep(tmp_path, synth, name="seeded", seeds=2, metric={"name": "mIoU"},  # AP is 0 at this size
                    report={"table": "table3a", "baseline": "Spatial", "pairs": [["Temporal", "Spatial"]]})
    assert main(["sweep", str(p), "--quiet", "--out", str(tmp_path / "out")]) == 0
    printed = capsys.readouterr().out
    assert "[seeded] 0/4 trials done" in printed and "4/4 trials done" in printed and "ETA" in printed
    tags = _child_tags(tmp_path / "mlflow.db", "seeded")
    assert sorted((t["variant"], t["seed"]) for t in tags) == [("Spatial", "0"), ("Spatial", "1"),
                                                              ("Temporal", "0"), ("Temporal", "1")]
    # two seeds of one point: same point, same (seed-free) row, different runs and trial folders
    sp = [t for t in tags if t["variant"] == "Spatial"]
    assert sp[0]["point"] == sp[1]["point"] and sp[0]["trial_key"] != sp[1]["trial_key"]
    assert main(["report", str(p), "--no-figures"]) == 0
    csv = pd.read_csv(tmp_path / "reports" / "seeded" / "table3a_components.csv")
    ours = csv[csv["source"] == "lvas"].set_index("row")
    test = {}
    for t in tags:
        m = json.loads((Path(t["run_dir"]) / "test_metrics.json").read_text())
        test.setdefault(t["variant"], []).append(m["AP"])
    for label, values in test.items():
        assert ours.loc[label, "n"] == 2
        assert ours.loc[label, "AP"] == pytest.approx(np.mean(values))  # the mean, not the best seed
        assert ours.loc[label, "AP std"] == pytest.approx(np.std(values, ddof=1))
    # Δ vs the baseline row and its p-value over seeds: the paired t-test of the two seeds' runs
    from scipy.stats import ttest_rel

    by_seed = {}
    for t in tags:
        m = json.loads((Path(t["run_dir"]) / "test_metrics.json").read_text())
        by_seed.setdefault(t["variant"], {})[int(t["seed"])] = m["mIoU"]
    tem, spa = [by_seed["Temporal"][s] for s in (0, 1)], [by_seed["Spatial"][s] for s in (0, 1)]
    assert ours.loc["Spatial", "Δ mIoU vs baseline"] == 0.0
    assert ours.loc["Temporal", "Δ mIoU vs baseline"] == pytest.approx(np.mean(tem) - np.mean(spa))
    assert ours.loc["Temporal", "p (seeds)"] == pytest.approx(ttest_rel(tem, spa).pvalue, rel=1e-6)
    assert 0.0 <= ours.loc["Temporal", "p_samples (networks fixed)"] <= 1.0  # the secondary test, CSV only
    md = (tmp_path / "reports" / "seeded" / "table3a_components.md").read_text()
    assert "paired t-test over seeds" in md and "p_samples" not in md.split("Every row")[0]
    delta = np.mean(tem) - np.mean(spa)
    from lvas.report.build import p_text

    assert f"`Temporal` − `Spatial`: Δ mIoU {stats.signed(delta)}" in md  # the pair uses the same test
    # every run names its floating-point path, and the report names the machines its rows came from
    import torch

    from lvas.engine.resources import cpu_model

    assert {t["fp.cpu"] for t in tags} == {cpu_model()} and {t["fp.torch"] for t in tags} == {torch.__version__}
    assert all(t["fp.cpu_capability"] and t["fp.threads"].isdigit() and t["fp.device"] == "cpu" for t in tags)
    assert "Machines (what decides the floating-point path" in md and cpu_model() in md
    assert f"p {p_text(ours.loc['Temporal', 'p (seeds)'], '= ')}" in md


def test_an_edited_sweep_refuses_its_stale_trials_then_reruns_them(tmp_path, synth, monkeypatch, capsys):
    """The issue's measurement: edit the file (epochs 2 -> 1, one variant added) and rerun."""
    monkeypatch.chdir(tmp_path)
    out = str(tmp_path / "out")
    p = write_sweep(tmp_path, synth, name="edited")
    assert main(["sweep", str(p), "--quiet", "--out", out]) == 0
    spec = yaml.safe_load(p.read_text())
    spec["overrides"]["train.epochs"] = 1
    spec["variants"].append({"label": "Both", "overrides": {"model.mode": "both"}})
    p.write_text(yaml.safe_dump(spec))
    capsys.readouterr()
    assert main(["sweep", str(p), "--quiet", "--out", out]) == 2  # refused: nothing runs
    err = capsys.readouterr().err
    assert "changed since 2 of its trial(s) ran (Spatial, Temporal)" in err
    assert "train.epochs: 2 -> 1" in err and "--rerun-stale" in err and "Traceback" not in err
    assert len(_study(tmp_path / "out", "edited").trials) == 2
    # the report never shows the old runs under the new file (and, every row missing, exits 1)
    assert main(["report", str(p), "--no-figures"]) == 1
    csv = pd.read_csv(tmp_path / "reports" / "edited" / "table3a_components.csv")
    csv = csv[csv["source"] == "lvas"].set_index("row")
    assert csv.loc["Spatial", "status"].startswith("missing (stale: the sweep file changed")
    assert csv.loc["Both", "status"] == "missing"
    # --rerun-stale: the two stale points run again, the new one runs, all under the new config
    assert main(["sweep", str(p), "--quiet", "--out", out, "--rerun-stale"]) == 0
    study = _study(tmp_path / "out", "edited")
    assert len([t for t in study.trials if t.state.name == "COMPLETE"]) == 5  # 2 old, 2 rerun, 1 new
    assert main(["report", str(p), "--no-figures"]) == 0
    csv = pd.read_csv(tmp_path / "reports" / "edited" / "table3a_components.csv")
    csv = csv[csv["source"] == "lvas"].set_index("row")
    epochs = _epochs_by_run(tmp_path, "edited")
    assert sorted(epochs.values()) == [1, 1, 1, 2, 2]
    for label in ("Spatial", "Temporal", "Both"):
        assert csv.loc[label, "status"] == "FINISHED"
        assert epochs[csv.loc[label, "runs"]] == 1  # the row holds the 1-epoch run, never the old one
    # a third run of the same file: nothing is stale or new, nothing runs
    assert main(["sweep", str(p), "--quiet", "--out", out]) == 0
    assert len(_study(tmp_path / "out", "edited").trials) == len(study.trials)


def _epochs_by_run(tmp_path, experiment: str) -> dict[str, int]:
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    exp = client.get_experiment_by_name(experiment)
    out = {}
    for r in client.search_runs([exp.experiment_id]):
        steps = [m.step for m in client.get_metric_history(r.info.run_id, "train_loss")]
        if steps:
            out[r.info.run_id] = max(steps)
    return out


def test_adaptive_seeds_are_added_while_rows_overlap(tmp_path, synth, monkeypatch):
    """Two variants with one config give the same score seed by seed, so their intervals overlap
    until ``max``: both get ``min`` seeds, then one more each, then the sweep stops."""
    monkeypatch.chdir(tmp_path)
    p = write_sweep(tmp_path, synth, name="adapt", seeds={"min": 2, "max": 3, "until": "separated"},
                    report={"table": "table3a", "baseline": "A"},
                    variants=[{"label": "A", "overrides": {"model.mode": "spatial"}},
                              {"label": "B", "overrides": {"model.mode": "spatial"}}])
    assert main(["sweep", str(p), "--quiet", "--out", str(tmp_path / "out")]) == 0
    study = _study(tmp_path / "out", "adapt")
    seeds = sorted((t.user_attrs["label"], t.user_attrs["seed"], t.user_attrs["phase"]) for t in study.trials)
    assert seeds == [("A", 0, "grid"), ("A", 1, "grid"), ("A", 2, "adaptive"),
                     ("B", 0, "grid"), ("B", 1, "grid"), ("B", 2, "adaptive")]
    values = {(t.user_attrs["label"], t.user_attrs["seed"]): t.value for t in study.trials}
    assert all(values[("A", s)] == values[("B", s)] for s in range(3))
    # rerunning continues the plan: here nothing is left under max, so nothing runs
    assert main(["sweep", str(p), "--quiet", "--out", str(tmp_path / "out")]) == 0
    assert len(_study(tmp_path / "out", "adapt").trials) == 6


def test_adaptive_rule_adds_seeds_only_where_the_test_does_not_separate(tmp_path, synth, monkeypatch):
    from lvas.sweep.runner import SweepOptions, SweepRunner

    monkeypatch.chdir(tmp_path)
    p = write_sweep(tmp_path, synth, name="rule", seeds={"min": 2, "max": 4, "until": "separated"},
                    report={"table": "table3a", "baseline": "Spatial"},
                    variants=[{"label": "Spatial", "overrides": {"model.mode": "spatial"}},
                              {"label": "Near", "overrides": {"model.mode": "temporal"}},
                              {"label": "Far", "overrides": {"model.mode": "both"}}])
    spec = load_sweep(p)
    runner = SweepRunner(spec, SweepOptions(out=str(tmp_path / "out"), tracking_uri=f"sqlite:///{tmp_path}/m.db"))
    runner.open_study()
    # Near − Spatial by seed: +1.0, −0.5 (not separated); Far − Spatial: +40.0, +38.6 (p = 0.011 < 0.05 / 3 looks)
    scores = {"Spatial": {0: 50.0, 1: 52.0}, "Near": {0: 51.0, 1: 51.5}, "Far": {0: 90.0, 1: 90.6}}
    monkeypatch.setattr(runner, "scores", lambda: {spec.trial_for(k, {}).point: {"scores": v} for k, v in scores.items()})
    added = sorted((t.label, t.seed) for t, _ in runner.adaptive_additions())
    assert added == [("Near", 2), ("Spatial", 2)]  # Far is separated from the baseline: no more seeds for it
    # at α / looks: p = 0.025 separates at 0.05 but not at 0.05 / 3, so the row gets its next seed
    scores["Far"] = {0: 90.0, 1: 89.0}
    assert ("Far", 2) in [(t.label, t.seed) for t, _ in runner.adaptive_additions()]


def test_a_search_reruns_its_top_k_points_over_seeds(tmp_path, synth, monkeypatch):
    monkeypatch.chdir(tmp_path)
    p = write_sweep(tmp_path, synth, name="topk", method="random", run_cap=3, top_k=1, seeds=[0, 1],
                    report="hparams", overrides={**TINY, "data.root": str(synth), "train.select": "best_val"},
                    parameters={"train.lr": {"distribution": "log_uniform_values", "min": 1e-4, "max": 1e-2}})
    assert main(["sweep", str(p), "--quiet", "--out", str(tmp_path / "out")]) == 0
    trials = _study(tmp_path / "out", "topk").trials
    search = [t for t in trials if t.user_attrs["phase"] == "search"]
    rerun = [t for t in trials if t.user_attrs["phase"] == "top_k"]
    assert len(search) == 3 and all(t.user_attrs["seed"] == 0 for t in search)
    best = max((t for t in search if t.state.name == "COMPLETE"), key=lambda t: t.value)
    assert len(rerun) == 1 and rerun[0].user_attrs["seed"] == 1
    assert rerun[0].user_attrs["point"] == best.user_attrs["point"]  # the best on validation, not on test
    assert main(["report", str(p), "--no-figures"]) == 0
    csv = pd.read_csv(tmp_path / "reports" / "topk" / "hparams.csv")
    assert len(csv) == 1 and csv["n"].iloc[0] == 2


def test_checkpoint_reference_picks_the_callers_seed(tmp_path, synth, monkeypatch):
    from lvas.sweepspec import resolve_checkpoint

    monkeypatch.chdir(tmp_path)
    p = write_sweep(tmp_path, synth, name="src", seeds=[3, 5])
    spec = load_sweep(p)
    for seed in (3, 5):
        folder = tmp_path / "runs/sweeps/src/trials" / spec.folder(spec.trial_for("Spatial", {}, seed))
        folder.mkdir(parents=True)
        (folder / "model.pt").write_bytes(b"x")
    ref = f"sweep:{p}#Spatial"
    assert resolve_checkpoint(ref, seed=5).parent.name == spec.folder(spec.trial_for("Spatial", {}, 5))
    assert resolve_checkpoint(ref, seed=0).parent.name == spec.folder(spec.trial_for("Spatial", {}, 3))  # first
    assert resolve_checkpoint(ref + "@5").parent.name == spec.folder(spec.trial_for("Spatial", {}, 5))
    with pytest.raises(ConfigError, match="seed '4' is not among the seeds"):
        resolve_checkpoint(ref + "@4")


# --------------------------------------------------------------------------- statistics


def _records(rng, n, good):
    union = rng.integers(50, 200, n)
    inter = np.minimum(union, (union * np.clip(rng.normal(good, 0.2, n), 0, 1)).astype(int))
    inter[:3] = 0
    union[:2] = 0  # two samples with empty prediction and ground truth
    return [{"id": f"v/{i}", "I": int(a), "U": int(b)} for i, (a, b) in enumerate(zip(inter, union))]


@pytest.mark.parametrize("protocol", ["paper", "strict"])
def test_per_sample_scores_average_to_the_metrics(protocol):
    rng = np.random.default_rng(0)
    recs = _records(rng, 300, 0.7)
    acc = MetricAccumulator.for_protocol(protocol)
    for r in recs:
        acc.add(r["I"], r["U"])
    m = acc.compute()
    inter, union = np.array([r["I"] for r in recs]), np.array([r["U"] for r in recs])
    for name in ("AP", "P@0.5", "P@0.9", "mIoU"):
        assert sample_test.per_sample(inter, union, name, protocol).mean() == pytest.approx(m[name], abs=1e-9)


def _exact_p(a, b):
    """Two-sided exact p of the paired swap test, by enumerating every swap (independent of scipy)."""
    d = a - b
    obs = d.mean()
    null = np.array([(np.array(signs) * d).mean() for signs in itertools.product((1, -1), repeat=len(d))])
    eps = 1e-12
    return min(1.0, 2 * min((null <= obs + eps).mean(), (null >= obs - eps).mean()))


def test_paired_permutation_test_is_exact_on_small_sets():
    rng = np.random.default_rng(1)
    row = [_records(rng, 10, 0.75), _records(rng, 10, 0.8)]
    base = [_records(rng, 10, 0.6), _records(rng, 10, 0.55)]
    c = sample_test.compare_samples(row, base, "mIoU", "strict")
    a = np.mean([sample_test.per_sample([r["I"] for r in s], [r["U"] for r in s], "mIoU", "strict") for s in row], axis=0)
    b = np.mean([sample_test.per_sample([r["I"] for r in s], [r["U"] for r in s], "mIoU", "strict") for s in base], axis=0)
    assert c.delta == pytest.approx(a.mean() - b.mean())
    assert c.p == pytest.approx(_exact_p(a, b))
    assert c.samples == 10


def test_paired_test_separates_clear_differences_and_not_equal_rows():
    rng = np.random.default_rng(2)
    strong = [_records(rng, 200, 0.9) for _ in range(3)]
    weak = [_records(rng, 200, 0.4) for _ in range(3)]
    c = sample_test.compare_samples(strong, weak, "AP", "paper")
    assert c.delta > 20 and c.p < 0.001
    same = sample_test.compare_samples(weak, weak, "AP", "paper")
    assert same.delta == 0 and same.p == 1.0
    o = sample_test.compare_samples(strong, weak, "oIoU", "paper")  # ratio of sums, through the sample-index statistic
    pooled = lambda runs: 100 * sum(r["I"] for s in runs for r in s) / sum(r["U"] for s in runs for r in s)  # noqa: E731
    assert o.delta == pytest.approx(pooled(strong) - pooled(weak)) and o.p < 0.001
    assert sample_test.compare_samples(strong, [weak[0][:-1]], "AP", "paper") is None  # not the same samples: no test


def test_interval_is_student_t():
    from scipy import stats as st

    iv = stats.interval([60.0, 62.0, 67.0])
    sd = np.std([60.0, 62.0, 67.0], ddof=1)
    assert iv.mean == pytest.approx(63.0) and iv.std == pytest.approx(sd) and iv.n == 3
    assert iv.half == pytest.approx(st.t.ppf(0.975, 2) * sd / np.sqrt(3))
    assert iv.text() == f"63.0 ± {iv.half:.1f}"
    one = stats.interval([61.25])
    assert one.n == 1 and one.text() == "61.2" and one.half != one.half
