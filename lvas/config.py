"""Typed experiment configuration: YAML files as diffs on a base, validated before anything is built.

An experiment YAML may name a ``base:`` (a path relative to itself, or a list of them); the file is
merged over its base, then command-line overrides ``key.path=value`` (values parsed as YAML) are
applied, then the result is converted into :class:`ExperimentConfig`. Every unknown key, wrong type,
out-of-range value or unknown component name raises one :class:`ConfigError` that names the key path
and what was allowed.

**Slots.** Where the config picks a component (``model.fusion``, ``model.decoder``, ``train.loss``,
...), it holds a :class:`Component`: the entry's ``name``, the slot's own keys (e.g. ``stages`` of
``model.cmam``) and the entry's settings, which the entry declares itself (:mod:`lvas.registry`).
A slot is written as a name (``fusion: lgfs``) or a mapping (``fusion: {name: gated, temperature:
2}``). This module names no method's settings: it only knows the slots.

Merging a diff that names another component in a slot keeps the base's keys the new component also
has (``spatial.name: r50`` keeps ``pretrained``) and drops the others (``decoder.name: released``
drops ``eq9``'s ``refine``).

The resolved config is plain data (:func:`to_dict`), hashed stably (:func:`config_hash`) and stored
with every run and checkpoint; :func:`from_dict` rebuilds it (older lvas versions' configs are
upgraded first, :mod:`lvas.config_upgrade`). :func:`result_hash` ignores keys at their default, so a
key added later with a default does not make earlier runs stale.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import re
import typing
from pathlib import Path
from typing import Any, Sequence

import yaml

from lvas import yamlio
from lvas.config_upgrade import upgrade
from lvas.convert import Component, _from_mapping, _parse_slot, _slot_mapping  # noqa: F401  (Component: API)
from lvas.errors import ConfigError, did_you_mean, excerpt, redact, shown  # noqa: F401  (ConfigError, redact: API)
from lvas.registry import FAMILIES, RegistryError, import_plugins, plugin_imported
from lvas.schema import (DEVICE_NAMES, DataConfig, ExperimentConfig, ModelConfig,  # noqa: F401  (API)
                         TrackingConfig, TrainConfig, name_problem, safe_name)

VERSION = 3  # saved configs carry it; earlier ones are upgraded (lvas.config_upgrade)


def from_dict(data: dict, cls: type = ExperimentConfig, run_imports: bool = True) -> Any:
    """Validate plain data (upgraded from an earlier lvas when it is one) and return the typed config.

    ``run_imports``: import the modules its ``imports`` names (a YAML the user wrote); False for a
    config read back from a checkpoint or a record, whose plugins must already be imported (the user
    names them: ``--import``), so that no file lvas reads runs code by itself."""
    if not isinstance(data, dict):
        raise ConfigError(f"<root>: expected a mapping, got {type(data).__name__}")
    if cls is ExperimentConfig:
        data = upgrade(data, VERSION, ExperimentConfig)
        _import_plugins(data, run_imports)
    cfg = _from_mapping(cls, data, "")
    if isinstance(cfg, ExperimentConfig):
        _check_combinations(cfg)
    return cfg


def _import_plugins(data: dict, run: bool) -> None:
    imports = data.get("imports") or []
    if not isinstance(imports, list) or not all(isinstance(x, str) for x in imports):
        raise ConfigError("imports: expected a list of module names or .py files")
    if not run:
        missing = [x for x in imports if not plugin_imported(x)]
        if missing:
            raise ConfigError(f"imports: this config was made with components from {', '.join(map(shown, missing))}; "
                              f"lvas runs no code a stored config names: import them yourself (--import "
                              f"{missing[0]})")
        return
    try:
        import_plugins(imports)
    except RegistryError as e:
        raise ConfigError(str(e)) from None


def _check_combinations(cfg: ExperimentConfig) -> None:
    """Checks that involve more than one key (torch-free: the entries' declared attributes)."""
    from lvas.inputs import input_spec

    protocol = FAMILIES["protocol"].get(cfg.train.protocol.name)
    if protocol.meta.get("stretched") and input_spec(cfg.model.input).geometry != "stretch":
        raise ConfigError(f"train.protocol: {cfg.train.protocol.name!r} reproduces a released evaluation, whose frames "
                          f"are stretched to S x S; model.input {cfg.model.input.name!r} letterboxes them: use "
                          f"model.input: stretch or released, or train.protocol: strict")
    for i, name in enumerate(cfg.data.evaluators):
        if name not in FAMILIES["evaluator"]:
            raise ConfigError(f"data.evaluators[{i}]: {FAMILIES['evaluator'].unknown_message(name)}")
    if cfg.model.bridge.stages and cfg.model.mode != "both":
        raise ConfigError(f"model.bridge.stages: a bridge exchanges between two streams; model.mode is "
                          f"{cfg.model.mode!r} (use model.mode: both, or model.bridge.stages: [])")
    needs = FAMILIES["loss"].get(cfg.train.loss.name).meta.get("needs")
    if needs and FAMILIES["decoder"].get(cfg.model.decoder.name).meta.get("gives") != needs:
        raise ConfigError(f"train.loss: {cfg.train.loss.name!r} needs a decoder that gives {needs} (model.decoder "
                          f"{cfg.model.decoder.name!r} gives one mask per frame; use model.decoder: referformer, or "
                          f"another train.loss)")
    if cfg.train.precision == "float64" and cfg.train.amp == "bf16":
        raise ConfigError("train.precision: float64 cannot run under train.amp: bf16 (set train.amp: off or auto)")
    if cfg.model.mode in ("temporal", "both"):
        need = FAMILIES["temporal"].get(cfg.model.temporal.name).meta.get("min_frames", 1)
        if cfg.data.frames < need:
            raise ConfigError(f"data.frames: {cfg.data.frames} is too few for the {cfg.model.temporal.name} temporal "
                              f"encoder; it needs at least {need}")


def to_dict(cfg: Any) -> Any:
    """Plain nested data (the form saved in runs and checkpoints)."""
    if isinstance(cfg, Component):
        return {k: to_dict(v) for k, v in cfg.to_dict().items()}
    if dataclasses.is_dataclass(cfg) and not isinstance(cfg, type):
        return {f.name: to_dict(getattr(cfg, f.name)) for f in dataclasses.fields(cfg)}
    if isinstance(cfg, (list, tuple)):
        return [to_dict(v) for v in cfg]
    if isinstance(cfg, dict):
        return {k: to_dict(v) for k, v in cfg.items()}
    return copy.deepcopy(cfg)


def saved_dict(cfg: Any) -> dict:
    """:func:`to_dict` with credentials redacted and the schema version: the form written to files,
    checkpoints and MLflow."""
    data = redact_data(to_dict(cfg))
    return {"lvas_config": VERSION, **data} if isinstance(cfg, ExperimentConfig) else data


def to_yaml(cfg: Any) -> str:
    """The config as YAML, credentials redacted (what ``config.yaml`` files hold)."""
    return yaml.safe_dump(saved_dict(cfg), sort_keys=False)


def redact_data(value: Any) -> Any:
    """:func:`redact` applied to every string of nested dicts / lists (configs before they are saved)."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {k: redact_data(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(redact_data(v) for v in value)
    return value


def config_hash(cfg: Any, length: int = 12) -> str:
    """Stable short hash of the resolved config (independent of key order and YAML layout)."""
    data = saved_dict(cfg) if dataclasses.is_dataclass(cfg) else cfg
    blob = json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:length]


# Keys that say where or how fast a run goes, not what it computes: two configs that differ only
# here give the same numbers, so a sweep does not call its finished trials stale over them.
NOT_RESULT = ("name", "tracking", "lvas_config", "data.workers", "train.threads", "train.recipe.stage1_cache",
              "train.out_dir")


def flatten_dict(data: dict, prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}`` (lists stay values)."""
    out: dict[str, Any] = {}
    for k, v in data.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten_dict(v, key + "."))
        else:
            out[key] = v
    return out


def defaults_for(cfg: ExperimentConfig) -> dict[str, Any]:
    """Flattened default of every key of ``cfg``: for a slot, its entry's defaults (so a setting at
    its default is "not set" whichever component the slot names); the slot's name against the slot's
    default name."""
    out: dict[str, Any] = {}
    base = ExperimentConfig()
    flat = flatten_dict(to_dict(base))

    def walk(node: Any, default: Any, prefix: str) -> None:
        for f in dataclasses.fields(node):
            value, dflt = getattr(node, f.name), getattr(default, f.name)
            key = f"{prefix}{f.name}"
            if isinstance(value, Component):
                fresh = _parse_slot(value.name, value.family, value.name, f.metadata.get("keys"), key)
                out.update(flatten_dict({f.name: to_dict(fresh)}, prefix))
                out[f"{key}.name"] = dflt.name
            elif dataclasses.is_dataclass(value):
                walk(value, dflt, key + ".")

    walk(cfg, base, "")
    for k, v in flat.items():
        out.setdefault(k, v)
    return out


def result_config(cfg: Any) -> dict[str, Any]:
    """Everything that can change a run's numbers: the flattened config minus :data:`NOT_RESULT`
    and minus the keys at their default value (a key a newer lvas adds, with its default, changes
    nothing; a saved dict of an earlier lvas is upgraded first)."""
    typed = cfg if isinstance(cfg, ExperimentConfig) else from_dict(cfg, run_imports=False)
    flat = flatten_dict(to_dict(typed))
    dflt = defaults_for(typed)
    return {k: v for k, v in flat.items()
            if not any(k == n or k.startswith(n + ".") for n in NOT_RESULT) and (k not in dflt or dflt[k] != v)}


def result_hash(cfg: Any) -> str:
    """Hash of :func:`result_config`: equal hashes, same experiment (stale-trial detection)."""
    return config_hash(result_config(cfg))


def config_diff(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """``key: old -> new`` for every flattened key that differs (added / removed keys included)."""
    out = []
    for k in sorted(set(old) | set(new)):
        a, b = old.get(k, "<default>"), new.get(k, "<default>")
        if a != b:
            out.append(f"{k}: {json.dumps(a, default=str)} -> {json.dumps(b, default=str)}")
    return out


# --------------------------------------------------------------------------- merging: bases and overrides


def _slot_fields(cls: type) -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(cls)}


def _merge_slot(base: Any, diff: Any, f: dataclasses.Field, path: str) -> Any:
    """``diff`` over ``base`` in a slot; naming another component keeps only the base keys it (or the
    slot) also has."""
    if not isinstance(base, (str, dict)) or not isinstance(diff, (str, dict)):
        return copy.deepcopy(diff)
    default = f.metadata["default"]
    b, d = _slot_mapping(base, default, path), _slot_mapping(diff, default, path)
    if isinstance(diff, dict) and "name" not in diff:
        d.pop("name")
    if "name" in d and d["name"] != b.get("name"):
        reg = FAMILIES[f.metadata["slot"]]
        keys = f.metadata["keys"]
        keep = {x.name for x in dataclasses.fields(keys)} if keys else set()
        if d["name"] in reg:
            keep |= set(reg.get(d["name"]).settings())
            b = {k: v for k, v in b.items() if k in keep}
    return {**b, **copy.deepcopy(d)}


def merge(base: dict, diff: dict, cls: type = ExperimentConfig, path: str = "") -> dict:
    """``diff`` over ``base`` along the schema ``cls``: mappings merge recursively, slots as
    :func:`_merge_slot`, ``imports`` accumulate, everything else is replaced."""
    out = copy.deepcopy(base)
    fields = _slot_fields(cls) if cls is not None and dataclasses.is_dataclass(cls) else {}
    for k, v in diff.items():
        f = fields.get(k)
        key = f"{path}.{k}" if path else str(k)
        if f is not None and f.metadata.get("slot") and k in out:
            out[k] = _merge_slot(out[k], v, f, key)
        elif k == "imports" and not path and isinstance(v, list) and isinstance(out.get(k), list):
            out[k] = list(dict.fromkeys([*out[k], *v]))
        elif isinstance(v, dict) and isinstance(out.get(k), dict):
            sub = typing.get_type_hints(cls).get(k) if f is not None else None
            out[k] = merge(out[k], v, sub if dataclasses.is_dataclass(sub) else None, key)
        else:
            out[k] = copy.deepcopy(v)
    return out


def deep_merge(base: dict, diff: dict) -> dict:
    """Schema-free recursive merge (sweep files and other plain mappings)."""
    return merge(base, diff, None)


MAX_BASE_CHAIN = 32  # base: files deep (a chain longer than any real config is an error, not a recursion)


def read_yaml(path: str | Path, key_lines: dict | None = None) -> dict:
    """A YAML mapping from ``path``; a missing, unreadable, malformed or oversized file raises one
    ConfigError naming it (see :mod:`lvas.yamlio` for the limits). ``key_lines``: filled with the
    line of each top-level key."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{p}: config file not found")
    try:
        with p.open("rb") as f:
            raw = f.read(yamlio.MAX_BYTES * 64 + 1)
        data = yamlio.load(raw.decode("utf-8"), key_lines)
    except UnicodeDecodeError as e:
        raise ConfigError(f"{p}: not UTF-8 text (byte {e.start}); a config is a UTF-8 YAML file") from None
    except yamlio.YAMLLimit as e:
        raise ConfigError(f"{p}: {e}") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{p}: not valid YAML: {excerpt(e, 300, secrets=False)}") from None
    except OSError as e:
        raise ConfigError(f"{p}: cannot read ({e.strerror})") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: expected a YAML mapping at the top level")
    return data


TOP_KEYS = tuple(f.name for f in dataclasses.fields(ExperimentConfig)) + ("base", "lvas_config")
_PLAIN_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_.]{0,39}")


def _check_top_keys(path: Path, data: dict, lines: dict) -> None:
    """Every top-level key of an experiment file is a config key. A key that is not even key-like (a
    file that is not a config, such as a password file named as a base:) is never quoted: the message
    names the file and the line only."""
    for k in data:
        if k in TOP_KEYS:
            continue
        where = f"{path}: line {lines[k]}" if k in lines else str(path)
        if isinstance(k, str) and _PLAIN_KEY.fullmatch(k):
            raise ConfigError(f"{where}: {k}: unknown key; allowed keys here: {', '.join(TOP_KEYS[:-1])}"
                              + did_you_mean(k, TOP_KEYS))
        raise ConfigError(f"{where}: not a config key (expected one of {', '.join(TOP_KEYS[:-1])}); is {path.name} "
                          f"an experiment YAML?")


def resolve_imports(data: dict, folder: Path) -> dict:
    """``imports`` entries that are files, made absolute (relative to the YAML that names them)."""
    imports = data.get("imports")
    if isinstance(imports, list):
        data["imports"] = [str((folder / x).resolve()) if isinstance(x, str) and (x.endswith(".py") or "/" in x)
                           else x for x in imports]
    return data


def load_raw(path: str | Path, _seen: tuple[Path, ...] = ()) -> dict:
    """The file merged over its ``base:`` chain, as plain data (not yet validated)."""
    p = Path(path).resolve()
    if p in _seen:
        raise ConfigError(f"{p}: circular base: {' -> '.join(map(str, _seen + (p,)))}")
    if len(_seen) >= MAX_BASE_CHAIN:
        raise ConfigError(f"{_seen[0]}: base: a chain of more than {MAX_BASE_CHAIN} files (at {p})")
    lines: dict = {}
    data = resolve_imports(read_yaml(p, lines), p.parent)
    _check_top_keys(p, data, lines)
    _import_plugins(data, True)  # the user's components register before merging names them
    bases = data.pop("base", None)
    if bases is None:
        return data
    if isinstance(bases, str):
        bases = [bases]
    if not isinstance(bases, list) or not all(isinstance(b, str) for b in bases):
        raise ConfigError(f"{p}: base: expected a path or a list of paths")
    merged: dict = {}
    for b in bases:
        if Path(b).suffix.lower() not in (".yaml", ".yml"):  # a base is an experiment YAML, nothing else is read
            raise ConfigError(f"{p}: line {lines.get('base', '?')}: base: {shown(b)} is not an experiment YAML "
                              f"(.yaml or .yml)")
        merged = merge(merged, load_raw(p.parent / b, _seen + (p,)))
    return merge(merged, data)


_NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"a.b.c=value"`` -> (["a","b","c"], parsed YAML value)."""
    quoted = excerpt(text, 80, secrets=False)
    if "=" not in text:
        raise ConfigError(f"override {quoted}: expected key.path=value")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"override {quoted}: empty key path")
    try:
        value = yamlio.load(raw) if raw.strip() else ""
    except yamlio.YAMLLimit as e:
        raise ConfigError(f"{excerpt(key, 80, secrets=False)}: {e}") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"override {quoted}: value is not valid YAML: {excerpt(e, 200, secrets=False)}") from None
    if isinstance(value, str) and _NUMBER.fullmatch(value.strip()):
        value = float(value)  # YAML 1.1 reads 1e-5 (no dot) as a string
    return key.split("."), value


def apply_overrides(data: dict, overrides: Sequence[str]) -> dict:
    """Apply ``key.path=value`` strings (values parsed as YAML)."""
    return apply_values(data, [parse_override(t) for t in overrides])


def apply_values(data: dict, items) -> dict:
    """Apply (key parts or dotted key, value) pairs in order, each merged as a one-key diff (so a
    slot set to another component drops the settings of the old one)."""
    out = data
    for parts, value in (items.items() if isinstance(items, dict) else items):
        if isinstance(parts, str):
            parts = parts.split(".")
        node = out
        for i, part in enumerate(parts[:-1]):  # a scalar where a mapping is needed (not a slot name) is an error
            nxt = node.get(part) if isinstance(node, dict) else None
            if nxt is None or isinstance(nxt, dict):
                node = nxt if nxt is not None else {}
                continue
            if not isinstance(nxt, str):
                raise ConfigError(f"{'.'.join(parts[: i + 1])}: is not a mapping; cannot set {'.'.join(parts)}")
            node = {}
        diff: Any = value
        for part in reversed(parts):
            diff = {part: diff}
        out = merge(out, diff)
        if parts[0] == "imports":  # `imports=[my.py]` on the command line: relative to here, imported
            out = resolve_imports(out, Path.cwd())  # now, so that later overrides may name its components
            _import_plugins(out, True)
    return out


def load_config(path: str | Path, overrides: Sequence[str] = ()) -> ExperimentConfig:
    """Experiment YAML (+ its bases) + overrides -> validated :class:`ExperimentConfig`."""
    data = apply_overrides(load_raw(path), overrides)
    return from_dict(data)


def replace(cfg: ExperimentConfig, values: dict[str, Any]) -> ExperimentConfig:
    """A copy of ``cfg`` with dotted ``values`` applied (merged as overrides) and validated again."""
    return from_dict(apply_values(to_dict(cfg), values), run_imports=False)


UNUSED = "(unused)"


def slot_keys(cfg: ExperimentConfig) -> dict[str, Component]:
    """Every slot of ``cfg`` by its dotted path (``model.fusion`` -> its Component)."""
    out: dict[str, Component] = {}

    def walk(node: Any, prefix: str) -> None:
        for f in dataclasses.fields(node):
            value = getattr(node, f.name)
            if isinstance(value, Component):
                out[prefix + f.name] = value
            elif dataclasses.is_dataclass(value):
                walk(value, f"{prefix}{f.name}.")

    walk(cfg, "")
    return out


def unread_keys(cfg: ExperimentConfig, built: set[str]) -> set[str]:
    """Dotted keys this config holds but a run does not read: every key of a slot not in ``built``
    (the slots the run builds, which the model builder and the trainer report) and every slot key
    declared :func:`used_if` whose condition fails."""
    flat = flatten_dict(to_dict(cfg))
    out = set()
    for path, comp in slot_keys(cfg).items():
        if path not in built:
            out |= {k for k in flat if k == path or k.startswith(path + ".")}
            continue
        f = _field_at(path)
        keys = f.metadata.get("keys") if f is not None else None
        for kf in dataclasses.fields(keys) if keys else ():
            cond = kf.metadata.get("used_if")
            if cond is not None and not cond(comp):
                out.add(f"{path}.{kf.name}")
    return out


def _field_at(path: str) -> dataclasses.Field | None:
    cls: Any = ExperimentConfig
    f = None
    for part in path.split("."):
        fields = _slot_fields(cls)
        f = fields.get(part)
        if f is None:
            return None
        cls = typing.get_type_hints(cls).get(part)
    return f
