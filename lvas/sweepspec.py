"""Sweep YAML: schema, validation and expansion into trials.

::

    name: table3a                        # study / MLflow parent run name
    base: ../experiments/cstm_paper.yaml # experiment every trial starts from (relative to this file)
                                         # (a variant may name its own ``base:``: another method's YAML)
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
    report: table3a                      # which paper table the sweep feeds, or
    report: {table: table3a, baseline: Spatial+Temporal}   # ... and the row every other is tested against
    report: {table: table3a, pairs: [[+LGFS+CMAM, +LGFS]]} # ... and chosen pairs of rows (A vs B)
    seeds: 3                             # or [0, 1, 2]: every point once per seed (sets the config's seed)
    seeds: {min: 2, max: 6, until: separated}   # adaptive: add seeds to rows whose CI overlaps the baseline's
    top_k: 3                             # random / bayes: re-run the k best points (on validation) over seeds

Grid = variants x the cross product of parameter values x seeds; random / bayes draw the variant
as one more categorical parameter, each sampled point run with the first seed, and then (``top_k``)
the k best points by the validation score run with every other seed. Every trial is validated
(its full experiment config built) before anything runs.

Identity: a *point* is (variant, parameters) — one row of a table; a *trial* is a point and a seed.
A trial's resolved config is hashed (:func:`lvas.config.result_hash`) and stored with it, so a sweep
file edited after its trials ran is noticed (see :mod:`lvas.sweep.runner`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

from lvas import catalogue
from lvas.config import ConfigError, name_problem, read_yaml, resolve_imports
from lvas.errors import did_you_mean, shown
from lvas.registry import RegistryError, import_plugins
from lvas.sweepplan import Parameter, SeedPlan, SweepSpec, Trial, Variant  # noqa: F401  (Trial: re-exported)

METHODS = ("grid", "random", "bayes")
DISTRIBUTIONS = ("uniform", "log_uniform_values", "int_uniform", "q_uniform")
REPORTS = ("table1", "table2", "table3a", "table3b", "table3c", "table3d", "table4", "table_ytvos", "table_mevis", "methods",
           "ablation", "hparams", "none")
TOP_KEYS = ("name", "base", "imports", "overrides", "metric", "method", "parameters", "variants", "run_cap",
            "early_terminate", "report", "description", "seed", "seeds", "top_k")
SWEEP_FILE_TAG = "lvas.sweep_file"  # the sweep file a parent run (and its study) belongs to
MAX_SEEDS = 1000
MAX_TRIALS = 10_000  # a grid of more trials is refused before it is expanded (LVAS_MAX_TRIALS raises it)


def _seed_plan(path: Path, raw: Any) -> SeedPlan:
    if raw is None:
        return SeedPlan()
    if isinstance(raw, bool):
        raise _err(path, "seeds", "expected a count, a list of seeds or {min, max, until: separated}")
    if isinstance(raw, int):
        if not 1 <= raw <= MAX_SEEDS:
            raise _err(path, "seeds", f"{shown(raw)}: expected a count from 1 to {MAX_SEEDS}")
        return SeedPlan(tuple(range(raw)))
    if isinstance(raw, list):
        if not raw or len(raw) > MAX_SEEDS or not all(isinstance(x, int) and not isinstance(x, bool)
                                                     and 0 <= x < 2**32 for x in raw):
            raise _err(path, "seeds", f"expected a list of 1 to {MAX_SEEDS} integers from 0 to 2**32 - 1")
        if len(set(raw)) != len(raw):
            raise _err(path, "seeds", "seeds must be distinct")
        return SeedPlan(tuple(raw))
    if isinstance(raw, dict):
        extra = set(raw) - {"min", "max", "until"}
        if extra:
            raise _err(path, f"seeds.{sorted(extra)[0]}", "unknown key; allowed: min, max, until")
        lo, hi, until = raw.get("min"), raw.get("max"), raw.get("until", "separated")
        for k, v in (("min", lo), ("max", hi)):
            if not isinstance(v, int) or isinstance(v, bool):
                raise _err(path, f"seeds.{k}", "an integer is required")
        if lo < 2:
            raise _err(path, "seeds.min", f"{lo}: a confidence interval needs at least 2 seeds")
        if hi < lo:
            raise _err(path, "seeds.max", f"{hi} is below seeds.min ({lo})")
        if hi > MAX_SEEDS:
            raise _err(path, "seeds.max", f"{hi}: at most {MAX_SEEDS}")
        if until != "separated":
            raise _err(path, "seeds.until", f"{until!r}: expected 'separated'")
        return SeedPlan(tuple(range(hi)), adaptive=True, min=lo, until=until)
    raise _err(path, "seeds", "expected a count, a list of seeds or {min, max, until: separated}")


def _err(path: Path, key: str, msg: str) -> ConfigError:
    return ConfigError(f"{path}: {key}: {msg}")


def _command_line(path: Path, texts: Sequence[str], variants: list[Variant], params: dict, seeds: Any) -> dict[str, Any]:
    """Command-line overrides as {dotted key: value}; keys the sweep varies are refused."""
    from lvas.config import parse_override

    varied = {str(k): f"parameters.{k}" for k in params}
    for v in variants:
        for k in v.overrides:
            varied.setdefault(str(k), f"variant {v.label!r}")
    if seeds is not None:
        varied["seed"] = "seeds"
    out = {}
    for text in texts:
        parts, value = parse_override(text)
        key = ".".join(parts)
        for other, where in varied.items():
            if key == other or key.startswith(other + ".") or other.startswith(key + "."):
                raise ConfigError(f"{key}: {path.name} varies {other} ({where}); a command-line override applies "
                                  f"to every trial, so it cannot set it (edit the sweep file instead)")
        out[key] = value
    return out


def _parameter(path: Path, name: str, spec: Any) -> Parameter:
    key = f"parameters.{name}"
    if name == "imports":
        raise _err(path, key, "imports cannot be a parameter (the sweep's imports: and each row's overrides name them)")
    if not isinstance(spec, dict):
        raise _err(path, key, "expected a mapping with values, value or distribution")
    allowed = {"values", "value", "distribution", "min", "max", "q"}
    unknown = set(spec) - allowed
    if unknown:
        k = sorted(map(str, unknown))[0]
        raise _err(path, f"{key}.{k}", f"unknown key; allowed: {', '.join(sorted(allowed))}{did_you_mean(k, allowed)}")
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
        raise _err(path, f"{key}.distribution", f"{dist!r} is not known; expected one of {', '.join(DISTRIBUTIONS)}"
                   + did_you_mean(str(dist), DISTRIBUTIONS))
    for bound in ("min", "max"):
        if not isinstance(spec.get(bound), (int, float)) or isinstance(spec.get(bound), bool):
            raise _err(path, f"{key}.{bound}", f"a number is required for distribution {dist}")
    if spec["min"] >= spec["max"]:
        raise _err(path, key, f"min ({spec['min']}) must be below max ({spec['max']})")
    if dist == "log_uniform_values" and spec["min"] <= 0:
        raise _err(path, f"{key}.min", "must be > 0 for log_uniform_values")
    if dist == "q_uniform":
        q = spec.get("q")
        if not isinstance(q, (int, float)) or isinstance(q, bool) or not 0 < q <= spec["max"] - spec["min"]:
            raise _err(path, f"{key}.q", f"{q!r}: a step > 0 and at most max - min ({spec['max'] - spec['min']}) "
                                         f"is required for q_uniform")
    if dist == "int_uniform" and not all(isinstance(spec[b], int) for b in ("min", "max")):
        raise _err(path, key, "int_uniform needs integer min and max")
    return Parameter(name, distribution=dist, min=spec["min"], max=spec["max"], q=spec.get("q"))


def load_sweep(path: str | Path, cli_overrides: Sequence[str] = ()) -> SweepSpec:
    """Read and validate a sweep YAML, including every grid trial's experiment config.

    ``cli_overrides``: ``key.path=value`` strings from the command line (``lvas sweep FILE k=v``),
    applied to every trial on top of the file's ``overrides:``, as if the file said them. A key the
    sweep varies (a variant's override or a parameter) is refused: fixing it would make rows equal.
    """
    path = Path(path)
    raw = resolve_imports(read_yaml(path), path.parent)
    name, base, imports = _header(path, raw)
    metric, goal, method = _metric_and_method(path, raw)
    params_raw = raw.get("parameters") or {}
    if not isinstance(params_raw, dict):
        raise _err(path, "parameters", "expected a mapping of key.path -> spec")
    parameters = [_parameter(path, n, s) for n, s in params_raw.items()]
    if method == "grid":
        for p in parameters:
            if not p.is_discrete:
                raise _err(path, f"parameters.{p.name}", "grid sweeps need values or value, not a distribution")
    variants = _variants(path, raw.get("variants") or [])
    for i, v in enumerate(variants):  # a trial's run is named '<sweep>/<label>'
        if len(name) + 1 + len(v.label) > 200:
            raise _err(path, f"variants[{i}].label", f"{len(v.label)} characters: the run name '{name}/<label>' "
                                                     f"would have {len(name) + 1 + len(v.label)}, at most 200")
    labels = [v.label for v in variants]
    overrides = raw.get("overrides") or {}
    if not isinstance(overrides, dict):
        raise _err(path, "overrides", "expected a mapping of key.path -> value")
    overrides = {**({"imports": list(imports)} if imports else {}), **overrides,
                 **_command_line(path, cli_overrides, variants, params_raw, raw.get("seeds"))}
    ref = overrides.get("train.init_checkpoint")
    if isinstance(ref, str) and ref.startswith("sweep:") and not Path(ref[6:].split("#")[0]).is_absolute():
        overrides["train.init_checkpoint"] = "sweep:" + str((path.parent / ref[6:]).resolve())
    run_cap, et = _search_keys(path, raw, method)
    report, baseline, pairs, effects = _report(path, raw.get("report", "none"), labels)
    seeds = _seed_plan(path, raw.get("seeds"))
    top_k = _seed_rules(path, raw, method, seeds, baseline)
    sampler_seed = raw.get("seed", 0)
    if not isinstance(sampler_seed, int) or isinstance(sampler_seed, bool) or not 0 <= sampler_seed < 2**32:
        raise _err(path, "seed", f"{shown(sampler_seed)}: expected an integer from 0 to 2**32 - 1 (the search's "
                   f"sampler seed; the trials' seeds are `seeds:`)")
    if method == "grid":
        _bound_grid(path, variants, parameters, seeds)
    spec = SweepSpec(path, name, base, metric, goal, method, parameters, variants, dict(overrides),
                     run_cap, et, report, sampler_seed, str(raw.get("description", "")), seeds,
                     None if baseline is None else str(baseline), top_k, tuple((str(a), str(b)) for a, b in pairs),
                     tuple(cli_overrides), effects)
    _validate_trials(spec)
    return spec


def _header(path: Path, raw: dict) -> tuple[str, Path, list[str]]:
    """The sweep's name, its base experiment and the user's modules (imported here, so their components
    are registered before any trial config is validated)."""
    unknown = set(raw) - set(TOP_KEYS)
    if unknown:
        k = sorted(map(str, unknown))[0]
        raise _err(path, k, f"unknown key; allowed: {', '.join(TOP_KEYS)}{did_you_mean(k, TOP_KEYS)}")
    for k in ("name", "base", "metric"):
        if k not in raw:
            raise _err(path, k, "required key is missing")
    name = raw["name"]
    if not isinstance(name, str) or not name or any(c in name for c in "/\\ ") or name_problem(name):
        raise _err(path, "name", "expected a non-empty name without spaces, slashes, '..' or control characters")
    base = _experiment_file(path, "base", raw["base"])
    return name, base, _import_list(path, "imports", raw.get("imports") or [])


def _experiment_file(path: Path, key: str, value: Any) -> Path:
    """An experiment YAML named by the sweep file (relative to it): it must exist and be a YAML file
    (a base is never some other file whose content an error message would quote)."""
    f = (path.parent / str(value)).resolve()
    if f.suffix.lower() not in (".yaml", ".yml"):
        raise _err(path, key, f"{shown(str(value))} is not an experiment YAML (.yaml or .yml)")
    if not f.is_file():
        raise _err(path, key, f"experiment file {f} not found")
    return f


def _import_list(path: Path, key: str, imports: Any) -> list[str]:
    """The user's modules named at ``key`` of the sweep file, imported (the only code a sweep runs)."""
    if not isinstance(imports, list) or not all(isinstance(x, str) for x in imports):
        raise _err(path, key, "expected a list of module names or .py files")
    try:
        import_plugins(imports, key)
    except RegistryError as e:
        raise ConfigError(f"{path}: {e}") from None
    return imports


def _metric_and_method(path: Path, raw: dict) -> tuple[str, str, str]:
    metric = raw["metric"]
    if not isinstance(metric, dict) or set(metric) - {"name", "goal"} or "name" not in metric:
        raise _err(path, "metric", "expected {name: <metric>, goal: maximize|minimize}")
    if not isinstance(metric["name"], str) or metric["name"] not in catalogue.METRICS:
        raise _err(path, "metric.name", f"{shown(metric['name'])} is not known; expected one of "
                   f"{', '.join(catalogue.METRICS)}" + did_you_mean(str(metric["name"]), catalogue.METRICS))
    goal = metric.get("goal", "maximize")
    if goal not in ("maximize", "minimize"):
        raise _err(path, "metric.goal", f"{shown(goal)}: expected maximize or minimize")
    method = raw.get("method", "grid")
    if method not in METHODS:
        raise _err(path, "method", f"{shown(method)} is not known; expected one of {', '.join(METHODS)}"
                   + did_you_mean(str(method), METHODS))
    return metric["name"], goal, method


def _variants(path: Path, raw: Any) -> list[Variant]:
    if not isinstance(raw, list):
        raise _err(path, "variants", "expected a list of {label: ..., overrides: {...}}")
    variants = []
    for i, v in enumerate(raw):
        key = f"variants[{i}]"
        if isinstance(v, dict) and set(v) - {"label", "overrides", "base"}:
            k = sorted(map(str, set(v) - {"label", "overrides", "base"}))[0]
            raise _err(path, f"{key}.{k}", "unknown key; allowed: label, overrides, base"
                       + did_you_mean(k, ("label", "overrides", "base")))
        if not isinstance(v, dict) or "label" not in v:
            raise _err(path, key, "expected {label: ..., overrides: {key.path: value}, base: EXPERIMENT.yaml (optional)}")
        vbase = None if v.get("base") is None else _experiment_file(path, f"{key}.base", v["base"])
        ov = v.get("overrides") or {}
        if not isinstance(ov, dict):
            raise _err(path, f"{key}.overrides", "expected a mapping of key.path -> value")
        if "imports" in ov:  # a row's own plugins: imported now, as the sweep's (relative to this file)
            ov = dict(ov)
            ov["imports"] = _import_list(path, f"{key}.overrides.imports",
                                         resolve_imports({"imports": ov["imports"]}, path.parent)["imports"])
        label = str(v["label"])
        why = "expected no '/'" if "/" in label else name_problem(label)
        if why:
            raise _err(path, f"{key}.label", f"{shown(label)}: {why} (a label names runs and files)")
        variants.append(Variant(label, dict(ov), vbase))
    labels = [v.label for v in variants]
    if len(set(labels)) != len(labels):
        raise _err(path, "variants", "labels must be unique")
    return variants


def _search_keys(path: Path, raw: dict, method: str) -> tuple[int | None, dict | None]:
    """``run_cap`` and ``early_terminate``, validated."""
    run_cap = raw.get("run_cap")
    if run_cap is not None and (not isinstance(run_cap, int) or isinstance(run_cap, bool) or not 1 <= run_cap <= MAX_TRIALS):
        raise _err(path, "run_cap", f"expected an integer from 1 to {MAX_TRIALS}")
    if method != "grid" and run_cap is None:
        raise _err(path, "run_cap", f"required for method {method}")
    et = raw.get("early_terminate")
    if et is not None:
        if not isinstance(et, dict) or et.get("type") not in ("median", "hyperband"):
            raise _err(path, "early_terminate.type", "expected median or hyperband")
        extra = set(et) - {"type", "min_iter", "eta", "max_iter"}
        if extra:
            k = sorted(map(str, extra))[0]
            raise _err(path, f"early_terminate.{k}", "unknown key; allowed: type, min_iter, max_iter, eta"
                       + did_you_mean(k, ("type", "min_iter", "max_iter", "eta")))
        for k in ("min_iter", "eta", "max_iter"):
            v = et.get(k)
            if v is not None and (not isinstance(v, int) or isinstance(v, bool) or not 1 <= v <= 100_000):
                raise _err(path, f"early_terminate.{k}", f"{shown(v)}: expected an integer from 1 to 100000")
    return run_cap, et


def _report(path: Path, report: Any, labels: list[str]) -> tuple[str, str | None, list, tuple]:
    """``report``: a table name, or {table, baseline, pairs, effects} (rows tested against the baseline /
    each other; published differences whose seeds-needed the report gives: [row, other row, Δ, source])."""
    baseline, pairs, effects = None, [], []
    keys = ("table", "baseline", "pairs", "effects")
    if isinstance(report, dict):
        extra = set(report) - set(keys)
        if extra:
            k = sorted(map(str, extra))[0]
            raise _err(path, f"report.{k}", f"unknown key; allowed: {', '.join(keys)}" + did_you_mean(k, keys))
        effects = report.get("effects") or []
        if not isinstance(effects, list):
            raise _err(path, "report.effects", "expected a list of [row, other row, published Δ, source]")
        for i, e in enumerate(effects):
            if not (isinstance(e, list) and len(e) in (3, 4) and isinstance(e[2], (int, float))
                    and not isinstance(e[2], bool) and e[2] == e[2] and e[2] != 0):
                raise _err(path, f"report.effects[{i}]", "expected [row, other row, published Δ (a non-zero number), "
                                                         "source (optional text)]")
            for lab in e[:2]:
                if str(lab) not in labels:
                    raise _err(path, f"report.effects[{i}]", f"{shown(lab)} is not a variant label; labels: "
                                                             f"{', '.join(labels)}")
        report, baseline, pairs = report.get("table", "none"), report.get("baseline"), report.get("pairs") or []
        if baseline is not None and str(baseline) not in labels:
            raise _err(path, "report.baseline", f"{shown(baseline)} is not a variant label; labels: {', '.join(labels)}"
                       + did_you_mean(str(baseline), labels))
        if not isinstance(pairs, list) or not all(isinstance(x, list) and len(x) == 2 for x in pairs):
            raise _err(path, "report.pairs", "expected a list of [row, other row] label pairs")
        for i, pair in enumerate(pairs):
            for lab in pair:
                if str(lab) not in labels:
                    raise _err(path, f"report.pairs[{i}]", f"{shown(lab)} is not a variant label; labels: "
                                                           f"{', '.join(labels)}")
    if not isinstance(report, str) or report not in REPORTS:
        raise _err(path, "report", f"{shown(report)} is not known; expected one of {', '.join(REPORTS)}"
                   + did_you_mean(str(report), REPORTS))
    return report, baseline, pairs, tuple((str(e[0]), str(e[1]), float(e[2]), str(e[3]) if len(e) > 3 else "")
                                          for e in effects)


def _seed_rules(path: Path, raw: dict, method: str, seeds: SeedPlan, baseline: Any) -> int | None:
    """Which seed plans a method allows; ``top_k`` (searches only), validated."""
    if seeds.adaptive and (method != "grid" or baseline is None):
        raise _err(path, "seeds", "adaptive seeds compare rows with a baseline row: they need method: grid and "
                   "report: {table: ..., baseline: <variant label>}")
    top_k = raw.get("top_k")
    if top_k is not None:
        if method == "grid":
            raise _err(path, "top_k", "only for random / bayes (a grid runs every point with every seed)")
        if not isinstance(top_k, int) or isinstance(top_k, bool) or not 1 <= top_k <= MAX_TRIALS:
            raise _err(path, "top_k", "expected a positive integer")
    elif method != "grid" and len(seeds.values) > 1:
        raise _err(path, "seeds", f"method {method} runs each sampled point once; set top_k to re-run the k best "
                   f"points (on validation) with every seed")
    return top_k


def _bound_grid(path: Path, variants: list, parameters: list, seeds: SeedPlan) -> None:
    """Refuse a grid of more than MAX_TRIALS trials before expanding it (a few bytes can name 10^8)."""
    size = max(1, len(variants)) * len(seeds.values)
    for p in parameters:
        size *= len(p.values)
    limit = int(os.environ.get("LVAS_MAX_TRIALS", MAX_TRIALS))
    if size > limit:
        raise _err(path, "parameters", f"the grid has {size} trials (variants x parameter values x seeds); at most "
                   f"{limit} (LVAS_MAX_TRIALS raises the limit)")


def _validate_trials(spec: SweepSpec) -> None:
    """Every trial's full experiment config, before anything runs (a search: one probe per variant, and
    it must select on validation)."""
    if spec.method == "grid":
        for t in spec.grid(spec.seeds.values):
            spec.config_for(t)
        return
    for label in spec.labels():
        probe = {p.name: (p.values[0] if p.is_discrete else p.min) for p in spec.parameters}
        cfg = spec.config_for(spec.trial_for(label, probe, spec.seeds.values[0]))
        if cfg.train.select.name != "best_val":
            raise _err(spec.path, "overrides.train.select", f"method {spec.method} chooses among configurations, so it "
                       f"needs a validation split to choose on: set train.select: best_val (the test split "
                       f"is never used for selection)")


def resolve_checkpoint(ref: str, out: str | Path = "runs/sweeps", seed: int | None = None) -> Path:
    """``sweep:<sweep.yaml>#<variant label>[@seed]`` -> that trial's selected checkpoint; anything else
    is a path. Without ``@seed``: the trial of ``seed`` (the caller's own) when the sweep ran it,
    else the sweep's first seed."""
    if not ref.startswith("sweep:"):
        return Path(ref)
    file, _, label = ref[6:].partition("#")
    label, _, at = label.partition("@")
    spec = load_sweep(file)
    if spec.method != "grid" or label not in spec.labels():
        raise ConfigError(f"train.init_checkpoint: no variant {label!r} in {file} "
                          f"(variants: {', '.join(spec.labels())})")
    if at:
        if not at.isdigit() or int(at) not in spec.seeds.values:
            raise ConfigError(f"train.init_checkpoint: {ref!r}: seed {at!r} is not among the seeds of {file} "
                              f"({', '.join(map(str, spec.seeds.values))})")
        pick = int(at)
    else:
        pick = seed if seed in spec.seeds.values else spec.seeds.values[0]
    trial = spec.trial_for(label, {}, pick)
    path = Path(out) / spec.name / "trials" / spec.folder(trial) / "model.pt"
    if not path.is_file():
        raise ConfigError(f"train.init_checkpoint: {path} not found: run `lvas sweep {file}` first")
    return path


def check_owner(spec: SweepSpec, parent_tags: dict[str, str]) -> None:
    """Refuse to read a sweep's runs for another file of the same ``name:`` (whose report it would
    overwrite); a file that moved (the recorded one is gone) is the same sweep."""
    stored = parent_tags.get(SWEEP_FILE_TAG)
    if not stored:
        return
    owner, mine = Path(stored), Path(spec.path).resolve()
    if owner != mine and owner.exists() and not (mine.exists() and owner.samefile(mine)):
        raise ConfigError(f"{spec.path}: name: {spec.name!r} is the sweep of another file, {owner}: its runs and "
                          f"report are that file's; give this sweep another name:")


def check_processes(spec: SweepSpec, processes: int) -> None:
    """Every trial can be split over ``processes`` (``--gpus-per-trial``): its global batch gives each
    process one sample at least. Checked before anything starts (``--dry-run`` included)."""
    if processes <= 1:
        return
    trials = spec.grid(spec.seeds.values[:1]) if spec.method == "grid" else [spec.trial_for(spec.labels()[0], {})]
    sizes = {spec.config_for(t).train.batch_size: t for t in trials}
    for p in spec.parameters:
        if p.name == "train.batch_size" and p.is_discrete:
            sizes.update({v: None for v in p.values if isinstance(v, int)})
    for b, t in sorted(sizes.items(), key=lambda kv: kv[0]):
        if b < processes:
            row = f" (row {t.label!r})" if t is not None and t.label != "default" else ""
            raise ConfigError(f"train.batch_size: {b}{row} is smaller than --gpus-per-trial {processes}: the global "
                              f"batch is split over the processes, one sample each at least; raise it to {processes} "
                              f"or run fewer processes per trial")
