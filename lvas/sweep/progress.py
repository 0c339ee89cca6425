"""What a sweep prints: the live progress line, the dry-run table and the summary table."""

from __future__ import annotations

import json
import time
from typing import Any

from lvas.sweepspec import SweepSpec, Trial


class Progress:
    """Live progress of a sweep: trials done / total, what is running, elapsed time and an ETA.

    The ETA adds, for every trial not yet finished, the mean wall time of the finished trials of
    the same variant (of all finished trials when none of its variant has finished; minus what a
    running one has already spent), and divides by the trials running side by side. Before any
    trial has finished, a running trial's own pace stands in: its time so far over its share of the
    epochs of every stage of its recipe (a two-stage trial is 3 trainings). Printed as one line per
    change (and every ``every`` seconds), also under ``--quiet``.
    """

    def __init__(self, runner, parallel: int = 1, every: float = 20.0) -> None:
        self.runner, self.parallel, self.every = runner, max(1, parallel), every
        self.t0 = time.time()
        self.last_line, self.last_time = "", 0.0

    def counts(self) -> dict[str, Any]:
        from optuna.trial import TrialState

        done = running = waiting = 0
        durations: dict[str, list[float]] = {}
        left: list[tuple[str, float]] = []  # (label, seconds already spent) of every unfinished trial
        paced: list[float] = []  # a running trial's whole time at its pace so far
        now_running = []
        for t in self.runner.latest_by_id().values():
            if not self.runner.is_current(t):
                continue
            a = t.user_attrs
            if t.state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL):
                done += 1
                if a.get("started") and a.get("finished") and a["started"] >= self.t0:
                    durations.setdefault(a.get("label"), []).append(a["finished"] - a["started"])
            elif t.state == TrialState.RUNNING:
                running += 1
                spent = time.time() - a.get("started", time.time())
                left.append((a.get("label"), spent))
                if a.get("progress") and a.get("started", 0) >= self.t0:
                    paced.append(spent / a["progress"])
                ep, seed = a.get("epoch"), a.get("seed")
                where = a.get("where") or (f"epoch {ep}" if ep else "")
                now_running.append(f"{a.get('label')}" + (f" seed {seed}" if seed is not None else "")
                                   + (f" {where}" if where else ""))
            elif t.state == TrialState.WAITING:
                waiting += 1
                left.append((a.get("label"), 0.0))
        eta = None
        if not durations and paced:  # nothing finished yet: the running trials' pace
            durations = {None: paced}
        if durations:
            overall = [d for ds in durations.values() for d in ds]
            fallback = sum(overall) / len(overall)
            mean = {k: sum(v) / len(v) for k, v in durations.items()}
            eta = sum(max(0.0, mean.get(lab, fallback) - spent) for lab, spent in left) / self.parallel
        return {"done": done, "running": running, "waiting": waiting, "eta": eta, "now": now_running}

    def line(self) -> str:
        c = self.counts()
        total = c["done"] + c["running"] + c["waiting"]
        left = c["running"] + c["waiting"]
        if c["eta"] is not None and left:
            eta = f"ETA {clock(c['eta'])}"
        else:
            eta = "ETA after the first trial" if left else "done"
        spec = self.runner.spec
        adaptive = " (adaptive: more may follow)" if spec.seeds.adaptive or spec.top_k else ""
        now = f" · running: {', '.join(c['now'])}" if c["now"] else ""
        return (f"[{spec.name}] {c['done']}/{total} trials done{adaptive} · {clock(time.time() - self.t0)} elapsed · "
                f"{eta}{now}")

    def tick(self, force: bool = False) -> None:
        line = self.line()
        core = line.split(" · ")[0]
        if force or core != self.last_line.split(" · ")[0] or time.time() - self.last_time >= self.every:
            print(line, flush=True)
            self.last_line, self.last_time = line, time.time()

    def starting(self, t: Trial, resume: bool) -> None:
        self.tick(force=True)
        if self.runner.opts.progress:
            print(f"[{self.runner.spec.name}] starting {t.name}" + (" (resuming)" if resume else ""), flush=True)


def clock(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}" if seconds >= 3600 else \
        f"{seconds // 60}:{seconds % 60:02d}"


def dry_run_table(spec: SweepSpec):
    import pandas as pd

    if spec.method == "grid":
        rows = [{"#": i, "variant": t.label, "params": json.dumps(t.params) if t.params else "",
                 "seed": t.seed if t.seed is not None else "", "overrides": " ".join(t.override_list()),
                 "key": spec.folder(t)} for i, t in enumerate(spec.grid())]
        return pd.DataFrame(rows)
    rows = [{"parameter": "variant", "space": ", ".join(spec.labels())}]
    for p in spec.parameters:
        space = ", ".join(map(str, p.values)) if p.is_discrete else f"{p.distribution}[{p.min}, {p.max}]" + (
            f" q={p.q}" if p.q else "")
        rows.append({"parameter": p.name, "space": space})
    if spec.top_k:
        rows.append({"parameter": "seeds", "space": f"{spec.seeds.values[0]} while searching; the top {spec.top_k} "
                     f"points by validation {spec.metric} then with {', '.join(map(str, spec.seeds.values[1:]))}"})
    return pd.DataFrame(rows)


def summary(runner):
    """One row per trial: label, parameters, seed, state, metric, trial number, MLflow run."""
    import pandas as pd

    rows = []
    for tid, t in sorted(runner.latest_by_id().items(), key=lambda kv: kv[1].number):
        if not runner.is_current(t):
            continue
        a = t.user_attrs
        rows.append({"trial": t.number, "variant": a.get("label"),
                     "params": a.get("params") if a.get("params") not in (None, "{}") else "",
                     "seed": a.get("seed"), "state": t.state.name,
                     runner.spec.metric: t.value if t.value is not None else float("nan"),
                     "mlflow_run": a.get("mlflow_run_id", ""), "key": tid})
    return pd.DataFrame(rows)
