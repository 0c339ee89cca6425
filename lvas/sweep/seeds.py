"""Where more seeds go: adaptive seeds (``seeds: {min, max, until: separated}``) and the top-k re-runs
of a search. Both are added once nothing is left to claim (:meth:`lvas.sweep.runner.SweepRunner.extend`)."""

from __future__ import annotations

import json
from typing import Any

from lvas.stats import ALPHA, compare


def scores(runner) -> dict[str, dict]:
    """Per point with finished current trials: ``scores`` ``{seed: score}`` and the ``split`` they are
    on — the sweep metric on validation when every such trial has one, else on test (the grid's only
    one)."""
    from optuna.trial import TrialState

    rows: dict[str, dict] = {}
    for t in runner.study.latest_by_id().values():
        if t.state != TrialState.COMPLETE or not runner.is_current(t):
            continue
        r = rows.setdefault(t.user_attrs["point"], {"val": {}, "test": {}})
        for split in ("val", "test"):
            v = t.user_attrs.get(f"{split}_score")
            if v is not None:
                r[split][t.user_attrs.get("seed")] = v
    for r in rows.values():
        r["split"] = "val" if r["val"] and len(r["val"]) == len(r["test"]) else "test"
        r["scores"] = r[r["split"]]
    return rows


def adaptive_additions(runner, rows: dict[str, dict]) -> list[tuple[Any, str]]:
    """The next seed of every row the report's test over seeds (:func:`lvas.stats.compare`, at
    α / looks) does not yet separate from the baseline, and the baseline's."""
    spec = runner.spec
    existing = {t.user_attrs.get("id") for t in runner.study.latest_by_id().values()}
    plan = spec.seeds
    out = []
    for label, params in spec.points():
        if label == spec.baseline:
            continue
        base = rows.get(spec.trial_for(spec.baseline, params).point)
        row = rows.get(spec.trial_for(label, params).point)
        if base is None or row is None:
            continue
        c = compare(row["scores"], base["scores"], ALPHA / plan.looks)
        if c is None or c.significant:
            continue  # separated (or not yet two seeds)
        for lab in (label, spec.baseline):
            nxt = next((s for s in plan.values if spec.trial_for(lab, params, s).id not in existing), None)
            if nxt is not None:
                t = spec.trial_for(lab, params, nxt)
                if t.id not in {x.id for x, _ in out}:
                    out.append((t, "adaptive"))
    return out


def top_k_additions(runner) -> list[tuple[Any, str]]:
    """Every other seed for the ``top_k`` best searched points (validation score), once."""
    from optuna.trial import TrialState

    spec = runner.spec
    if runner.searched() < (spec.run_cap or 0):
        return []
    best: dict[str, Any] = {}
    for t in runner.study.trials(TrialState.COMPLETE):
        if t.user_attrs.get("phase") != "search" or not runner.is_current(t) or t.value is None or t.value != t.value:
            continue
        p = t.user_attrs["point"]
        better = p not in best or (t.value > best[p].value if spec.goal == "maximize" else t.value < best[p].value)
        if better:
            best[p] = t
    ranked = sorted(best.values(), key=lambda t: t.value, reverse=spec.goal == "maximize")[: spec.top_k]
    existing = {t.user_attrs.get("id") for t in runner.study.latest_by_id().values()}
    out = []
    for t in ranked:
        params = json.loads(t.user_attrs.get("params") or "{}")
        for s in spec.seeds.values[1:]:
            trial = spec.trial_for(t.user_attrs["label"], params, s)
            if trial.id not in existing:
                out.append((trial, "top_k"))
    return out
