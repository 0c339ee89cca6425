"""Sweep YAML: schema, validation and expansion into trials.

::

    name: table3a                        # study / MLflow parent run name
    base: ../experiments/cstm_paper.yaml # experiment every trial starts from (relative to this file)
    overrides: {train.epochs: 12}        # applied to every trial
    metric: {name: AP, goal: maximize}   # a validation metric (AP, oIoU, mIoU, P@0.5 ...)
    method: grid                         # grid | random | bayes
    parameters:                          # W&B-sweeps vocabulary
      train.lr: {values: [1.0e-4, 5.0e-4]}
      train.pos_weight: {distribution: uniform, min: 1.0, max: 2.0}
      train.batch_size: {value: 8}
    variants:                            # labelled rows: bundles of overrides (a paper table's rows)
      - {label: Spatial, overrides: {model.mode: spatial, model.cmam.stages: []}}
    run_cap: 20                          # trials for random / bayes
    early_terminate: {type: median, min_iter: 2}    # or {type: hyperband, min_iter: 1, eta: 3}
    report: table3a                      # which paper table the sweep feeds

Grid = variants x the cross product of parameter values; random / bayes draw the variant as one
more categorical parameter. Every trial is validated (its full experiment config built) before
anything runs.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lvas.config import ConfigError, ExperimentConfig, apply_values, from_dict, load_raw, read_yaml

METHODS = ("grid", "random", "bayes")
DISTRIBUTIONS = ("uniform", "log_uniform_values", "int_uniform", "q_uniform")
REPORTS = ("table1", "table2", "table3a", "table3b", "table3c", "table3d", "table4", "hparams", "none")
METRICS = ("AP", "oIoU", "mIoU", "P@0.5", "P@0.6", "P@0.7", "P@0.8", "P@0.9")
TOP_KEYS = ("name", "base", "overrides", "metric", "method", "parameters", "variants", "run_cap",
            "early_terminate", "report", "description", "seed")


@dataclass(frozen=True)
class Parameter:
    name: str
    values: tuple | None = None
    distribution: str | None = None
    min: float | None = None
    max: float | None = None
    q: float | None = None

    @property
    def is_discrete(self) -> bool:
        return self.values is not None


@dataclass(frozen=True)
class Variant:
    label: str
    overrides: dict[str, Any]


@dataclass
class Trial:
    """One grid point (or, for random/bayes, one sampled point)."""

    label: str
    overrides: dict[str, Any]
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> str:
        blob = json.dumps({"label": self.label, "overrides": self.overrides}, sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:12]

    def override_list(self) -> list[str]:
        return [f"{k}={json.dumps(v)}" for k, v in self.overrides.items()]


@dataclass
class SweepSpec:
    path: Path
    name: str
    base: Path
    metric: str
    goal: str
    method: str
    parameters: list[Parameter]
    variants: list[Variant]
    overrides: dict[str, Any]
    run_cap: int | None
    early_terminate: dict[str, Any] | None
    report: str
    seed: int = 0
    description: str = ""

    # -- expansion ----------------------------------------------------------
    def grid(self) -> list[Trial]:
        """Variants x parameter values (grid method), in a fixed order."""
        names = [p.name for p in self.parameters]
        combos = list(itertools.product(*[p.values for p in self.parameters])) if names else [()]
        trials = []
        for v in self.variants or [Variant("default", {})]:
            for combo in combos:
                params = dict(zip(names, combo))
                trials.append(Trial(v.label, {**self.overrides, **v.overrides, **params}, params))
        return trials

    def trial_for(self, label: str, params: dict[str, Any]) -> Trial:
        variant = next((v for v in self.variants if v.label == label), Variant(label, {}))
        return Trial(label, {**self.overrides, **variant.overrides, **params}, dict(params))

    def config_for(self, trial: Trial) -> ExperimentConfig:
        """The full experiment config of a trial (validated)."""
        data = apply_values(load_raw(self.base), trial.overrides)
        data["name"] = f"{self.name}/{trial.label}" if trial.label != "default" else self.name
        try:
            return from_dict(data)
        except ConfigError as e:
            raise ConfigError(f"{self.path}: trial {trial.label!r}: {e}") from None

    def labels(self) -> list[str]:
        return [v.label for v in self.variants] or ["default"]


def _err(path: Path, key: str, msg: str) -> ConfigError:
    return ConfigError(f"{path}: {key}: {msg}")


def _parameter(path: Path, name: str, spec: Any) -> Parameter:
    key = f"parameters.{name}"
    if not isinstance(spec, dict):
        raise _err(path, key, "expected a mapping with values, value or distribution")
    allowed = {"values", "value", "distribution", "min", "max", "q"}
    unknown = set(spec) - allowed
    if unknown:
        raise _err(path, f"{key}.{sorted(unknown)[0]}", f"unknown key; allowed: {', '.join(sorted(allowed))}")
    if "values" in spec:
        if not isinstance(spec["values"], list) or not spec["values"]:
            raise _err(path, f"{key}.values", "expected a non-empty list")
        return Parameter(name, values=tuple(spec["values"]))
    if "value" in spec:
        return Parameter(name, values=(spec["value"],))
    dist = spec.get("distribution")
    if dist is None:
        raise _err(path, key, "expected one of values, value or distribution")
    if dist not in DISTRIBUTIONS:
        raise _err(path, f"{key}.distribution", f"{dist!r} is not known; expected one of {', '.join(DISTRIBUTIONS)}")
    for bound in ("min", "max"):
        if not isinstance(spec.get(bound), (int, float)) or isinstance(spec.get(bound), bool):
            raise _err(path, f"{key}.{bound}", f"a number is required for distribution {dist}")
    if spec["min"] >= spec["max"]:
        raise _err(path, key, f"min ({spec['min']}) must be below max ({spec['max']})")
    if dist == "log_uniform_values" and spec["min"] <= 0:
        raise _err(path, f"{key}.min", "must be > 0 for log_uniform_values")
    if dist == "q_uniform" and not isinstance(spec.get("q"), (int, float)):
        raise _err(path, f"{key}.q", "a number is required for q_uniform")
    return Parameter(name, distribution=dist, min=spec["min"], max=spec["max"], q=spec.get("q"))


def load_sweep(path: str | Path) -> SweepSpec:
    """Read and validate a sweep YAML, including every grid trial's experiment config."""
    path = Path(path)
    raw = read_yaml(path)
    unknown = set(raw) - set(TOP_KEYS)
    if unknown:
        k = sorted(unknown)[0]
        raise _err(path, k, f"unknown key; allowed: {', '.join(TOP_KEYS)}")
    for k in ("name", "base", "metric"):
        if k not in raw:
            raise _err(path, k, "required key is missing")
    name = raw["name"]
    if not isinstance(name, str) or not name or any(c in name for c in "/\\ "):
        raise _err(path, "name", "expected a non-empty name without spaces or slashes")
    base = (path.parent / str(raw["base"])).resolve()
    if not base.is_file():
        raise _err(path, "base", f"experiment file {base} not found")
    metric = raw["metric"]
    if not isinstance(metric, dict) or set(metric) - {"name", "goal"} or "name" not in metric:
        raise _err(path, "metric", "expected {name: <metric>, goal: maximize|minimize}")
    if metric["name"] not in METRICS:
        raise _err(path, "metric.name", f"{metric['name']!r} is not known; expected one of {', '.join(METRICS)}")
    goal = metric.get("goal", "maximize")
    if goal not in ("maximize", "minimize"):
        raise _err(path, "metric.goal", f"{goal!r}: expected maximize or minimize")
    method = raw.get("method", "grid")
    if method not in METHODS:
        raise _err(path, "method", f"{method!r} is not known; expected one of {', '.join(METHODS)}")
    params_raw = raw.get("parameters") or {}
    if not isinstance(params_raw, dict):
        raise _err(path, "parameters", "expected a mapping of key.path -> spec")
    parameters = [_parameter(path, n, s) for n, s in params_raw.items()]
    if method == "grid":
        for p in parameters:
            if not p.is_discrete:
                raise _err(path, f"parameters.{p.name}", "grid sweeps need values or value, not a distribution")
    variants = []
    for i, v in enumerate(raw.get("variants") or []):
        key = f"variants[{i}]"
        if not isinstance(v, dict) or "label" not in v or set(v) - {"label", "overrides"}:
            raise _err(path, key, "expected {label: ..., overrides: {key.path: value}}")
        ov = v.get("overrides") or {}
        if not isinstance(ov, dict):
            raise _err(path, f"{key}.overrides", "expected a mapping of key.path -> value")
        variants.append(Variant(str(v["label"]), dict(ov)))
    labels = [v.label for v in variants]
    if len(set(labels)) != len(labels):
        raise _err(path, "variants", "labels must be unique")
    overrides = raw.get("overrides") or {}
    if not isinstance(overrides, dict):
        raise _err(path, "overrides", "expected a mapping of key.path -> value")
    ref = overrides.get("train.init_checkpoint")
    if isinstance(ref, str) and ref.startswith("sweep:") and not Path(ref[6:].split("#")[0]).is_absolute():
        overrides["train.init_checkpoint"] = "sweep:" + str((path.parent / ref[6:]).resolve())
    run_cap = raw.get("run_cap")
    if run_cap is not None and (not isinstance(run_cap, int) or run_cap < 1):
        raise _err(path, "run_cap", "expected a positive integer")
    if method != "grid" and run_cap is None:
        raise _err(path, "run_cap", f"required for method {method}")
    et = raw.get("early_terminate")
    if et is not None:
        if not isinstance(et, dict) or et.get("type") not in ("median", "hyperband"):
            raise _err(path, "early_terminate.type", "expected median or hyperband")
        extra = set(et) - {"type", "min_iter", "eta", "max_iter"}
        if extra:
            raise _err(path, f"early_terminate.{sorted(extra)[0]}", "unknown key; allowed: type, min_iter, max_iter, eta")
    report = raw.get("report", "none")
    if report not in REPORTS:
        raise _err(path, "report", f"{report!r} is not known; expected one of {', '.join(REPORTS)}")
    spec = SweepSpec(path, name, base, metric["name"], goal, method, parameters, variants, dict(overrides),
                     run_cap, et, report, int(raw.get("seed", 0)), str(raw.get("description", "")))
    # validate every trial's config now, before anything runs
    if method == "grid":
        for t in spec.grid():
            spec.config_for(t)
    else:
        for label in spec.labels():
            probe = {p.name: (p.values[0] if p.is_discrete else p.min) for p in parameters}
            cfg = spec.config_for(spec.trial_for(label, probe))
            if cfg.train.select != "best_val":
                raise _err(path, "overrides.train.select", f"method {method} chooses among configurations, so it "
                           f"needs a validation split to choose on: set train.select: best_val (the test split "
                           f"is never used for selection)")
    return spec


def resolve_checkpoint(ref: str, out: str | Path = "runs/sweeps") -> Path:
    """``sweep:<sweep.yaml>#<variant label>`` -> that trial's selected checkpoint; anything else is a path."""
    if not ref.startswith("sweep:"):
        return Path(ref)
    file, _, label = ref[6:].partition("#")
    spec = load_sweep(file)
    trials = [t for t in spec.grid() if t.label == label] if spec.method == "grid" else []
    if not trials:
        raise ConfigError(f"train.init_checkpoint: no variant {label!r} in {file} "
                          f"(variants: {', '.join(spec.labels())})")
    path = Path(out) / spec.name / "trials" / trials[0].key / "model.pt"
    if not path.is_file():
        raise ConfigError(f"train.init_checkpoint: {path} not found: run `lvas sweep {file}` first")
    return path
