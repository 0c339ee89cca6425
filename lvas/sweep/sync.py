"""Bringing a study in line with its sweep file: new points enqueued, unchanged ones reused, changed
ones refused (:class:`StaleSweep`, naming the keys) or, with ``--rerun-stale``, run again."""

from __future__ import annotations

import json

from lvas.config import ConfigError, config_diff, result_config


class StaleSweep(ConfigError):
    """Trials of this sweep ran under another config than the sweep file now resolves to."""


def sync(runner) -> dict[str, int]:
    """Enqueue the points the study has not seen, and deal with those whose resolved config changed.
    Returns counts of new and stale trials."""
    from optuna.trial import TrialState

    spec, study = runner.spec, runner.study
    if study.attrs.get("method", spec.method) != spec.method:
        raise StaleSweep(f"{spec.path}: method: the study {spec.name!r} ran with method {study.attrs['method']!r}, "
                         f"the file now says {spec.method!r}: give the sweep a new name")
    latest = study.latest_by_id()
    wanted = _wanted(runner, latest)
    new, stale = [], []
    for tid, (t, phase) in wanted.items():
        old = latest.get(tid)
        if old is None:
            new.append((t, phase))
        elif old.user_attrs.get("result_hash") != spec.result_hash(t):
            stale.append((t, phase, old))
    if stale and not runner.opts.rerun_stale:
        raise StaleSweep(stale_message(spec, stale))
    for t, phase, old in stale:
        if old.state == TrialState.RUNNING and not runner.dead(old):
            raise StaleSweep(f"{spec.path}: trial {t.name} is running under the old config "
                             f"(owner {old.user_attrs.get('owner')}): wait for it or stop it before --rerun-stale")
        if old.state in (TrialState.WAITING, TrialState.RUNNING):
            study.retire(old, "superseded")
        runner.enqueue(t, 0, phase)
    for t, phase in new:
        runner.enqueue(t, 0, phase)
    study.set_attr("fingerprint", spec.fingerprint())
    if runner.opts.progress and (new or stale) and "initialised" in study.attrs:
        print(f"[{spec.name}] the sweep file changed: {len(new)} new trial(s)"
              + (f", {len(stale)} stale trial(s) to rerun" if stale else ""), flush=True)
    return {"new": len(new), "stale": len(stale)}


def _wanted(runner, latest: dict) -> dict:
    """Trial id -> (trial, phase) of every trial the file gives: the grid's, and trials added later
    (seeds, searches) of points still in the file."""
    from optuna.trial import TrialState

    spec = runner.spec
    wanted = {}
    points = set()
    if spec.method == "grid":
        wanted = {t.id: (t, "grid") for t in spec.grid()}
        points = {(lab, json.dumps(p, sort_keys=True, default=str)) for lab, p in spec.points()}
    for frozen in latest.values():
        t = runner.trial_of(frozen)
        if t is None or t.id in wanted:
            continue
        if spec.method == "grid" and (t.label, json.dumps(t.params, sort_keys=True, default=str)) not in points:
            continue
        if spec.method != "grid" and t.label not in spec.labels():
            continue
        if frozen.state == TrialState.FAIL and not frozen.user_attrs.get("interrupted"):
            continue  # a failed trial is retried with --retry-failed, not here
        wanted[t.id] = (t, frozen.user_attrs.get("phase", "grid"))
    return wanted


def stale_message(spec, stale) -> str:
    changes: dict[str, int] = {}
    for t, _, old in stale:
        before = json.loads(old.user_attrs.get("config") or "{}")
        try:
            diff = config_diff(before, result_config(spec.config_for(t))) if before else \
                ["(the trial was recorded without its config)"]
        except ConfigError:
            diff = ["(recorded with a config this lvas cannot read)"]
        for line in diff:
            changes[line] = changes.get(line, 0) + 1
    names = ", ".join(t.name for t, _, _ in stale[:5]) + (f" and {len(stale) - 5} more" if len(stale) > 5 else "")
    shown = "; ".join(line + (f" ({n} of them)" if n != len(stale) else "") for line, n in sorted(changes.items())[:12])
    more = f" (+{len(changes) - 12} more keys)" if len(changes) > 12 else ""
    return (f"{spec.path}: changed since {len(stale)} of its trial(s) ran ({names}): {shown}{more}. "
            f"Rerun them under the new config with --rerun-stale (the old runs stay in MLflow and leave "
            f"the report), or give the sweep a new name.")
