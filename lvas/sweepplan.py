"""A sweep as data: its points (variant + parameters), trials (a point and a seed), seed plan, and
each trial's validated experiment config and result hash. Read from a YAML by :mod:`lvas.sweepspec`."""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lvas.config import ConfigError, ExperimentConfig, apply_values, from_dict, load_raw


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
    base: Path | None = None  # its own experiment file (a row of another method), else the sweep's base


def _digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:12]


@dataclass
class Trial:
    """One point (variant + parameters) with one seed; ``seed`` None keeps the base config's seed."""

    label: str
    overrides: dict[str, Any]
    params: dict[str, Any] = field(default_factory=dict)
    seed: int | None = None

    @property
    def point(self) -> str:
        """Identity of the table row: variant and parameters, not the seed."""
        return _digest({"label": self.label, "params": self.params})

    @property
    def id(self) -> str:
        """Identity of the trial within its sweep: point and seed (not the config, which may change)."""
        return _digest({"label": self.label, "params": self.params, "seed": self.seed})

    @property
    def name(self) -> str:
        """Human-readable: ``label [params] seed s``."""
        extra = f" {json.dumps(self.params, default=str)}" if self.params else ""
        return f"{self.label}{extra}" + (f" seed {self.seed}" if self.seed is not None else "")

    def override_list(self) -> list[str]:
        return [f"{k}={json.dumps(v)}" for k, v in self.overrides.items()]


@dataclass(frozen=True)
class SeedPlan:
    """Which seeds each point runs with.

    Fixed (``seeds: 3`` or ``[0, 1, 2]``): ``values``. Adaptive (``{min, max, until: separated}``):
    ``values`` = 0..max-1, of which the first ``min`` always run and the rest are added one at a time
    to rows whose confidence interval still overlaps the baseline row's. ``values == (None,)`` when
    the sweep names no seeds (the base config's seed).
    """

    values: tuple[int | None, ...] = (None,)
    adaptive: bool = False
    min: int = 1
    until: str = ""

    @property
    def initial(self) -> tuple[int | None, ...]:
        return self.values[: self.min] if self.adaptive else self.values

    @property
    def max(self) -> int:
        return len(self.values)

    @property
    def looks(self) -> int:
        """How often the plan may test a row: max − min + 1 for an adaptive plan (it looks after every
        added seed), 1 for a fixed one. Its rows are tested at α / looks (see lvas.stats)."""
        return self.max - self.min + 1 if self.adaptive else 1


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
    seeds: SeedPlan = field(default_factory=SeedPlan)
    baseline: str | None = None
    top_k: int | None = None
    pairs: tuple[tuple[str, str], ...] = ()
    cli_overrides: tuple[str, ...] = ()  # ``lvas sweep FILE k=v ...`` (already merged into ``overrides``)
    # ``report.effects``: (row, other row, a published Δ of the metric, where it is published): the
    # report says how many seeds would detect that Δ at the spread these runs show
    effects: tuple[tuple[str, str, float, str], ...] = ()
    _configs: dict = field(default_factory=dict, repr=False)  # trial key -> validated config
    _hashes: dict = field(default_factory=dict, repr=False)  # trial key -> result hash
    _base_raw: dict | None = field(default=None, repr=False)  # the base experiment, read once

    # -- expansion ----------------------------------------------------------
    def points(self) -> list[tuple[str, dict[str, Any]]]:
        """(variant label, parameters) of every grid point, in a fixed order."""
        names = [p.name for p in self.parameters]
        combos = list(itertools.product(*[p.values for p in self.parameters])) if names else [()]
        return [(v.label, dict(zip(names, combo))) for v in self.variants or [Variant("default", {})]
                for combo in combos]

    def grid(self, seeds: tuple[int | None, ...] | None = None) -> list[Trial]:
        """Points x seeds (grid method), seed-major: every row of the table once before any row twice.

        ``seeds``: default the seeds every point starts with (all of them, or ``min`` when adaptive).
        """
        return [self.trial_for(label, params, seed) for seed in (self.seeds.initial if seeds is None else seeds)
                for label, params in self.points()]

    def trial_for(self, label: str, params: dict[str, Any], seed: int | None = None) -> Trial:
        variant = next((v for v in self.variants if v.label == label), Variant(label, {}))
        over = {**self.overrides, **variant.overrides, **params}
        if seed is not None:
            over["seed"] = seed
        return Trial(label, over, dict(params), seed)

    def config_for(self, trial: Trial) -> ExperimentConfig:
        """The full experiment config of a trial (validated; remembered per trial)."""
        key = self._key(trial)
        if key not in self._configs:
            variant = next((v for v in self.variants if v.label == trial.label), None)
            if variant is not None and variant.base is not None:
                data = apply_values(load_raw(variant.base), trial.overrides)
            else:
                if self._base_raw is None:
                    self._base_raw = load_raw(self.base)
                data = apply_values(self._base_raw, trial.overrides)
            data["name"] = f"{self.name}/{trial.label}" if trial.label != "default" else self.name
            try:  # the sweep file's imports were imported when it was read; nothing else is
                self._configs[key] = from_dict(data, run_imports=False)
            except ConfigError as e:
                raise ConfigError(f"{self.path}: trial {trial.label!r}: {e}") from None
        return copy.deepcopy(self._configs[key])

    @staticmethod
    def _key(trial: Trial) -> str:
        return trial.id + _digest(trial.overrides)

    def result_hash(self, trial: Trial) -> str:
        """Hash of what the trial computes (:func:`lvas.config.result_hash` of its config; remembered)."""
        from lvas.config import result_hash

        key = self._key(trial)
        if key not in self._hashes:
            self._hashes[key] = result_hash(self.config_for(trial))
        return self._hashes[key]

    def folder(self, trial: Trial) -> str:
        """The trial's folder name under ``trials/``: its id and config, so an edited point starts afresh."""
        return f"{trial.id}-{self.result_hash(trial)[:8]}"

    def labels(self) -> list[str]:
        return [v.label for v in self.variants] or ["default"]

    def fingerprint(self) -> str:
        """Hash of the resolved spec: method, metric, seeds and every grid trial's resolved config."""
        trials = {t.id: self.result_hash(t) for t in self.grid(self.seeds.values)} if self.method == "grid" else {}
        return _digest({"method": self.method, "metric": [self.metric, self.goal], "seeds": self.seeds.values,
                        "adaptive": self.seeds.adaptive, "top_k": self.top_k, "trials": trials,
                        "base": self.result_hash(self.trial_for(self.labels()[0], {})) if self.method != "grid" else "",
                        "parameters": [repr(p) for p in self.parameters], "run_cap": self.run_cap})
