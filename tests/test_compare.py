"""``lvas compare`` (issue 29 §2): the same sweep run twice, row by row, and every verdict checked."""

import json

import mlflow
import numpy as np
import pytest
import yaml
from scipy import stats

from lvas.cli import main
from lvas.stats import signed
from lvas.sweepspec import load_sweep
from test_report import ROOT, _tags

METRICS = ("P_at_0.5", "P_at_0.6", "P_at_0.7", "P_at_0.8", "P_at_0.9", "AP", "oIoU", "mIoU")
A = {"Base": [50.0, 51.0, 52.0], "Better": [60.0, 61.5, 62.5], "Same": [50.5, 51.0, 52.5]}


def _report(tmp_path, name: str, scores: dict[str, list[float]]) -> tuple:
    """A sweep (baseline Base, pair Better vs Same, a published Δ of 1.5 for Better over Base) whose
    rows scored ``scores`` per seed, tracked in its own store and reported: (report folder, sweep)."""
    folder = tmp_path / name
    folder.mkdir()
    sweep = folder / "cmp.yaml"
    sweep.write_text(yaml.safe_dump({
        "name": "cmp", "base": str(ROOT / "experiments/cpu_small.yaml"), "metric": {"name": "AP"}, "method": "grid",
        "seeds": [0, 1, 2],
        "report": {"table": "table3a", "baseline": "Base", "pairs": [["Better", "Same"]],
                   "effects": [["Better", "Base", 1.5, "a paper's Table 3"]]},
        "variants": [{"label": lab, "overrides": {"train.lr": 0.001 * (i + 1)}} for i, lab in enumerate(A)]}))
    spec = load_sweep(sweep)
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment("cmp")
    with mlflow.start_run(run_name="cmp", tags={"sweep": "cmp", "lvas_role": "sweep"}):
        for label, values in scores.items():
            for seed, v in enumerate(values):
                with mlflow.start_run(run_name=label, nested=True, tags=_tags(spec, label, seed)):
                    mlflow.log_metrics({f"test/{k}": v if k == "AP" else v + i for i, k in enumerate(METRICS)})
    mlflow.end_run()
    out = folder / "report"
    assert main(["report", str(sweep), "--tracking-uri", uri, "--out", str(out), "--no-figures"]) == 0
    return out / "cmp", sweep


def test_a_rerun_with_other_digits_keeps_every_verdict_and_a_flip_is_an_error(tmp_path, capsys):
    a, _ = _report(tmp_path, "a", A)
    verdicts = json.loads((a / "table3a_components.verdicts.json").read_text())
    by_pair = {(t["row"], t["other"]): t["verdict"] for t in verdicts["tests"]}
    assert by_pair == {("Better", "Base"): "higher", ("Same", "Base"): "not separated",
                       ("Better", "Same"): "higher"}
    assert verdicts["marks"]["bold"] == ["Better"] and verdicts["marks"]["dagger"] == []
    # the published Δ 1.5 at this spread (Better − Base per seed: 10, 10.5, 10.5, sd 0.29): with 2 seeds
    # (t crit 12.7 on 1 df) the test detects it less than 4 times in 5, with 3 (t crit 4.3) more often
    (effect,) = verdicts["effects"]
    assert effect["seeds_needed"] == 3
    # another machine: every digit moves, no verdict does
    rng = np.random.default_rng(0)
    b_scores = {k: [x + float(rng.normal(0, 0.2)) for x in v] for k, v in A.items()}
    b, _ = _report(tmp_path, "b", b_scores)
    capsys.readouterr()
    assert main(["compare", str(a), str(b), "--out", str(tmp_path / "cmp.md")]) == 0
    out = capsys.readouterr().out
    assert "5 of 5 verdicts the same" in out and "**no**" not in out
    # the Δ between the runs and its interval are Welch's over the two runs' seeds
    res = stats.ttest_ind(b_scores["Better"], A["Better"], equal_var=False)
    lo, hi = res.confidence_interval(0.95)
    d = np.mean(b_scores["Better"]) - np.mean(A["Better"])
    assert f"| Better | 61.3 ± {stats.t.ppf(0.975, 2) * np.std(A['Better'], ddof=1) / 3 ** 0.5:.1f} |" in out
    assert f"{signed(d)} [{signed(lo)}, {signed(hi)}]" in out
    assert (tmp_path / "cmp.md").read_text() == out
    # a rerun in which Better no longer beats the baseline: the verdict and the bold mark flip, exit 1
    c, _ = _report(tmp_path, "c", {**A, "Better": [50.0, 53.0, 51.0]})
    capsys.readouterr()
    assert main(["compare", str(a), str(c)]) == 1
    out = capsys.readouterr().out
    assert "| `Better` − `Base` | higher" in out and "not separated" in out and "flipped" in out


def test_compare_refuses_what_is_not_a_report(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["compare", str(tmp_path / "empty"), str(tmp_path / "nowhere")]) == 2
    err = capsys.readouterr().err
    assert "empty" in err and "verdicts.json" in err
    bad = tmp_path / "x.verdicts.json"
    bad.write_text("[1, 2]")
    assert main(["compare", str(bad), str(bad)]) == 2
    assert "not a verdicts file" in capsys.readouterr().err
