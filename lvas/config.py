"""Typed experiment configuration: YAML files as diffs on a base, validated before anything is built.

An experiment YAML may name a ``base:`` (a path relative to itself, or a list of them); the
file is deep-merged over its base, then command-line overrides ``key.path=value`` (values
parsed as YAML) are applied, then the result is converted into :class:`ExperimentConfig`.
Every unknown key, wrong type, out-of-range value or unknown component name raises one
:class:`ConfigError` that names the key path and what was allowed.

The resolved config is plain data (``to_dict``), hashed stably (``config_hash``) and
stored with every run and checkpoint; ``from_dict`` rebuilds it.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Sequence

import yaml

from lvas import yamlio
from lvas.errors import did_you_mean, excerpt, redact, shown  # noqa: F401  (redact: part of this module's API)


class ConfigError(ValueError):
    """A configuration is invalid; the message names the key path."""


def _component(family: str, default: str, help: str = "") -> Any:
    return field(default=default, metadata={"registry": family, "help": help})


# --------------------------------------------------------------------------- schema


@dataclass
class EncoderConfig:
    """One visual encoder.

    ``pretrained``: ``imagenet`` / ``kinetics400`` (the torchvision weights the encoder
    knows), ``none`` (random init), or a path to a local checkpoint file. ``trainable``: parameter
    name prefixes that are trained (e.g. ACGA's ``[stages.3.Mixed_4f.]``); [] trains all; frozen
    BatchNorm layers keep their running statistics.
    """

    name: str
    pretrained: str = "none"
    trainable: list[str] = field(default_factory=list)  # [] = all; else only parameters under these prefixes


@dataclass
class SpatialEncoderConfig(EncoderConfig):
    name: str = _component("spatial", "iv3")


@dataclass
class TemporalEncoderConfig(EncoderConfig):
    name: str = _component("temporal", "i3d")


@dataclass
class TextConfig:
    """Text encoder (``gru``: one embedding + GRU per visual encoder; ``gru_released``: the
    release's single GRU + LayerNorm + Tanh). ``embedding``: ``learned`` (random init),
    ``glove`` (GloVe init, trained), ``glove_frozen`` (a fixed GloVe table, as the release);
    ``oov``: vectors of words GloVe lacks, ``random`` or ``zero`` (the release); ``tokenizer``:
    ``words`` or ``released`` (punctuation kept as tokens, see lvas/data/vocab.py)."""

    name: str = _component("text", "gru")
    embedding: Literal["learned", "glove", "glove_frozen"] = "learned"
    glove_path: str | None = None
    oov: Literal["random", "zero"] = "random"
    tokenizer: Literal["words", "released"] = "words"
    vocab_size: int = 10000
    embed_dim: int = 300
    hidden: int = 512
    max_words: int = 20


@dataclass
class CMAMConfig:
    """Cross-Modal Adaptive Modulation after the listed encoder stages (1..5); [] = none.

    ``name``: ``cmam_eq6`` (the paper's Eq. 1-6) or ``cmam_released`` (the released code's form);
    ``channels``: width of the attention keys."""

    name: str = _component("cross_modal", "cmam_eq6")
    stages: list[int] = field(default_factory=list)
    channels: int = 256


@dataclass
class BridgeConfig:
    """Modules that exchange information between the two streams after the listed encoder stages
    ([] = none). ``lbdt``: LBDT's language-bridged duplex transfer (``layers`` x ``heads``
    attention at ``channels`` wide)."""

    name: str = _component("bridge", "lbdt")
    stages: list[int] = field(default_factory=list)
    channels: int = 512
    layers: int = 4
    heads: int = 8


@dataclass
class DecoderConfig:
    """Decoder: ``eq9`` (CSTM's Eq. 9), ``released`` (the released CSTM code's heads), ``lbdt``
    (LBDT's per-stream FPN, one fusion, conv tower) or ``acga`` (ACGA's co-attention and three heads).

    ``tile`` (eq9): whether a branch's projections see the coordinates and the sentence:
    ``auto`` only without CMAM (paper §4.4), ``always`` or ``never``."""

    name: str = _component("decoder", "eq9")
    channels: int = 256
    refine: bool = True
    deep_supervision: bool = True
    tile: Literal["auto", "always", "never"] = "auto"


@dataclass
class ModelConfig:
    mode: Literal["spatial", "temporal", "both"] = "both"
    spatial: SpatialEncoderConfig = field(default_factory=SpatialEncoderConfig)
    temporal: TemporalEncoderConfig = field(default_factory=TemporalEncoderConfig)
    text: TextConfig = field(default_factory=TextConfig)
    cmam: CMAMConfig = field(default_factory=CMAMConfig)
    bridge: BridgeConfig = field(default_factory=BridgeConfig)
    fusion: str = _component("fusion", "lgfs")
    decoder: DecoderConfig = field(default_factory=DecoderConfig)
    input: str = _component("input", "stretch", "frame geometry, pixel normalisation, clip sampling")


@dataclass
class DataConfig:
    """Dataset and clip geometry: ``frames`` frames every ``frame_stride`` around the target,
    resized and padded to ``size`` x ``size``."""

    dataset: str = _component("dataset", "synth")
    root: str = "data/synth"
    frames: int = 8
    frame_stride: int = 2
    size: int = 320
    train_split: str = "train"
    test_split: str = "test"
    val_fraction: float = 0.1
    skip_bad: bool = False
    workers: int | Literal["auto"] = "auto"  # DataLoader processes; auto: see lvas.engine.resources


@dataclass
class TrainConfig:
    """Optimisation (paper §4.2: Adam, lr 5e-4, batch 8, 12 epochs, lr / 10 every 8 epochs).

    ``recipe: two_stage`` trains the spatial and the temporal network separately (stage 1, each
    for ``epochs``), then freezes both encoders and trains a fresh decoder for ``stage2_epochs``.

    ``select``: which epoch becomes the model: ``last`` (default; the paper trains a fixed
    schedule) or ``best_val`` (best ``monitor`` on ``data.val_fraction`` of the training videos,
    held out from training). The test split is only read to score the selected model.
    """

    recipe: Literal["joint", "two_stage"] = "joint"
    loss: str = _component("loss", "cstm", "training loss (lvas list loss)")
    optimizer: Literal["adam", "adamw"] = "adam"
    epochs: int = 12
    batch_size: int = 8
    drop_last: bool = False  # drop each epoch's last incomplete training batch (LBDT's release does)
    lr: float = 5e-4
    lr_step: int = 8
    lr_milestones: list[int] = field(default_factory=list)  # epochs where lr *= lr_gamma; [] = every lr_step
    lr_gamma: float = 0.1
    weight_decay: float = 0.0
    pos_weight: float = 1.5
    aux_weight: float = 0.5
    grad_clip: float = 10.0
    stage2_epochs: int = 4
    stage2_lr: float = 5e-4
    stage1_cache: str | None = None
    init_checkpoint: str | None = None
    eval_only: bool = False
    device: str = "auto"
    threads: int | Literal["auto"] = "auto"  # torch CPU threads; auto: see lvas.engine.resources
    amp: bool = True
    channels_last: bool = True
    limit_batches: int = 0
    val_samples: int = 0
    select: Literal["last", "best_val"] = "last"
    monitor: str = "mIoU"
    protocol: str = _component("protocol", "paper", "how predictions are scored (lvas list protocol)")
    out_dir: str = "runs"


@dataclass
class TrackingConfig:
    """MLflow: ``uri`` (default ``sqlite:///mlflow.db`` in the working directory; the
    MLFLOW_TRACKING_URI environment variable and ``--tracking-uri`` take precedence)."""

    uri: str | None = None
    experiment: str | None = None
    system_metrics: bool = True
    log_checkpoint: bool = True
    overlays: int = 4


@dataclass
class ExperimentConfig:
    name: str = "experiment"
    seed: int = 0
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)


def name_problem(name: str) -> str | None:
    """Why ``name`` cannot name a run (it becomes a folder and an MLflow name), or None if it can:
    no ``..`` or ``.`` path part, no leading ``/``, no backslash or control character, 1-200 characters."""
    if not name or len(name) > 200:
        return "expected 1 to 200 characters"
    if any(ord(c) < 32 or c == "\\" for c in name) or name.startswith("/"):
        return "expected no backslash, control character or leading /"
    if any(part in (".", "..") for part in name.split("/")):
        return "expected no '.' or '..' path part (a name must not lead outside its folder)"
    return None


def safe_name(name: str) -> str:
    """A single folder name made of ``name``: anything but letters, digits and ``._+=@-`` becomes ``_``."""
    out = re.sub(r"[^A-Za-z0-9._+=@-]", "_", name).lstrip(".")
    return out[:200] or "_"


DEVICE_NAMES = r"auto|cpu|mps|cuda(:\d+)?"  # what train.device (and lvas bench --device) accept

# Extra checks beyond types: key path -> (predicate, what was expected).
_CHECKS: dict[str, tuple[typing.Callable[[Any], bool], str]] = {
    "name": (lambda v: name_problem(v) is None, "a name without '..' parts, backslashes or control characters"),
    "model.cmam.stages": (
        lambda v: all(1 <= s <= 5 for s in v) and len(set(v)) == len(v),
        "distinct stage numbers in 1..5",
    ),
    "model.cmam.channels": (lambda v: v > 0, "a positive integer"),
    "model.bridge.stages": (
        lambda v: all(1 <= s <= 5 for s in v) and len(set(v)) == len(v),
        "distinct stage numbers in 1..5",
    ),
    "model.bridge.channels": (lambda v: v > 0, "a positive integer"),
    "model.bridge.layers": (lambda v: v > 0, "a positive integer"),
    "model.bridge.heads": (lambda v: v > 0, "a positive integer"),
    "train.lr_milestones": (lambda v: all(m > 0 for m in v) and list(v) == sorted(set(v)),
                            "increasing positive epoch numbers"),
    "model.decoder.channels": (lambda v: v > 0, "a positive integer"),
    "model.text.max_words": (lambda v: v > 0, "a positive integer"),
    "model.text.vocab_size": (lambda v: v > 1, "an integer > 1"),
    "model.text.hidden": (lambda v: v > 0, "a positive integer"),
    "model.text.embed_dim": (lambda v: v > 0, "a positive integer"),
    "data.frames": (lambda v: v >= 1, "an integer >= 1"),
    "data.size": (lambda v: v >= 32, "an integer >= 32"),
    "data.frame_stride": (lambda v: v >= 1, "an integer >= 1"),
    "data.workers": (lambda v: v == "auto" or v >= 0, "auto or an integer >= 0"),
    "train.threads": (lambda v: v == "auto" or v >= 1, "auto or an integer >= 1"),
    "data.val_fraction": (lambda v: 0 < v < 1, "a number between 0 and 1 (exclusive)"),
    "train.epochs": (lambda v: v >= 1, "an integer >= 1"),
    "train.batch_size": (lambda v: v >= 1, "an integer >= 1"),
    "train.lr": (lambda v: v > 0, "a positive number"),
    "train.lr_step": (lambda v: v >= 1, "an integer >= 1"),
    "train.pos_weight": (lambda v: v > 0, "a positive number"),
    "train.stage2_epochs": (lambda v: v >= 1, "an integer >= 1"),
    "train.device": (lambda v: re.fullmatch(DEVICE_NAMES, v) is not None, "auto, cpu, mps, cuda or cuda:N"),
    "train.monitor": (lambda v: v in ("AP", "oIoU", "mIoU", "P@0.5", "P@0.6", "P@0.7", "P@0.8", "P@0.9"),
                      "one of AP, oIoU, mIoU, P@0.5 .. P@0.9"),
}


# --------------------------------------------------------------------------- conversion


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in typing.get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is list:
        (inner,) = typing.get_args(tp)
        return f"a list of {_type_name(inner)}"
    if tp is type(None):
        return "null"
    if dataclasses.is_dataclass(tp):
        return "a mapping"
    return getattr(tp, "__name__", str(tp))


def _convert(value: Any, tp: Any, path: str) -> Any:
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{path or '<root>'}: expected a mapping, got {shown(value)}")
        return _from_mapping(tp, value, path)
    if origin is Literal:
        allowed = typing.get_args(tp)
        if value not in allowed:
            raise ConfigError(f"{path}: {shown(value)} is not allowed; expected one of {', '.join(map(repr, allowed))}")
        return value
    if origin in (typing.Union, types.UnionType):
        errors = []
        for arg in typing.get_args(tp):
            try:
                return _convert(value, arg, path)
            except ConfigError as e:
                errors.append(e)
        raise ConfigError(f"{path}: expected {_type_name(tp)}, got {shown(value)}")
    if origin is list:
        (inner,) = typing.get_args(tp)
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{path}: expected {_type_name(tp)}, got {shown(value)}")
        return [_convert(v, inner, f"{path}[{i}]") for i, v in enumerate(value)]
    if tp is type(None):
        if value is not None:
            raise ConfigError(f"{path}: expected null, got {shown(value)}")
        return None
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{path}: expected true or false, got {shown(value)}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{path}: expected an integer, got {shown(value)}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{path}: expected a number, got {shown(value)}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{path}: expected a string, got {shown(value)}")
        return value
    if tp is dict or origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{path}: expected a mapping, got {shown(value)}")
        return dict(value)
    raise TypeError(f"unsupported config type {tp!r} at {path}")  # a bug in the schema


def _from_mapping(cls: type, data: dict, prefix: str) -> Any:
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key in data:
        if key not in fields:
            path = f"{prefix}.{shown(key, 60)[1:-1] if isinstance(key, str) else shown(key, 60)}" if prefix else shown(key, 60)
            raise ConfigError(f"{path}: unknown key; allowed keys here: {', '.join(fields)}"
                              f"{did_you_mean(key, fields) or '.'}")
    kwargs = {}
    for name, f in fields.items():
        path = f"{prefix}.{name}" if prefix else name
        if name in data:
            value = _convert(data[name], hints[name], path)
        elif f.default is not dataclasses.MISSING:
            value = copy.deepcopy(f.default)
        elif f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
            value = f.default_factory()  # type: ignore[misc]
        else:
            raise ConfigError(f"{path}: required key is missing")
        family = f.metadata.get("registry")
        if family is not None:
            from lvas.registry import all_families

            reg = all_families()[family]
            if value not in reg:
                raise ConfigError(f"{path}: {reg.unknown_message(value)}")
        check = _CHECKS.get(path)
        if check is not None and not check[0](value):
            raise ConfigError(f"{path}: {shown(value)} is not valid; expected {check[1]}")
        kwargs[name] = value
    return cls(**kwargs)


def from_dict(data: dict, cls: type = ExperimentConfig) -> Any:
    """Validate plain data and return the typed config."""
    if not isinstance(data, dict):
        raise ConfigError(f"<root>: expected a mapping, got {type(data).__name__}")
    cfg = _from_mapping(cls, data, "")
    if isinstance(cfg, ExperimentConfig):
        _check_combinations(cfg)
    return cfg


def _check_combinations(cfg: ExperimentConfig) -> None:
    """Checks that involve more than one key."""
    from lvas.metrics import get_protocol
    from lvas.models.inputs import input_spec
    from lvas.registry import TEMPORAL_ENCODERS

    if get_protocol(cfg.train.protocol).stretched and input_spec(cfg.model.input).geometry != "stretch":
        raise ConfigError(f"train.protocol: {cfg.train.protocol!r} reproduces a released evaluation, whose frames are stretched "
                          f"to S x S; model.input {cfg.model.input!r} letterboxes them: use model.input: stretch "
                          f"or released, or train.protocol: strict")
    if cfg.model.bridge.stages and cfg.model.mode != "both":
        raise ConfigError(f"model.bridge.stages: a bridge exchanges between two streams; model.mode is "
                          f"{cfg.model.mode!r} (use model.mode: both, or model.bridge.stages: [])")
    if cfg.model.mode in ("temporal", "both"):
        need = getattr(TEMPORAL_ENCODERS.get(cfg.model.temporal.name).builder, "min_frames", 1)
        if cfg.data.frames < need:
            raise ConfigError(f"data.frames: {cfg.data.frames} is too few for the {cfg.model.temporal.name} temporal "
                              f"encoder; it needs at least {need}")


def to_dict(cfg: Any) -> dict:
    """Plain nested dict (the form saved in runs and checkpoints)."""
    return dataclasses.asdict(cfg)


def saved_dict(cfg: Any) -> dict:
    """:func:`to_dict` with credentials redacted: the form written to files, checkpoints and MLflow."""
    return redact_data(to_dict(cfg))


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
    blob = json.dumps(saved_dict(cfg) if dataclasses.is_dataclass(cfg) else cfg, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:length]


# Keys that say where or how fast a run goes, not what it computes: two configs that differ only
# here give the same numbers, so a sweep does not call its finished trials stale over them.
NOT_RESULT = ("name", "tracking", "data.workers", "train.threads", "train.stage1_cache", "train.out_dir")


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


def result_config(cfg: Any) -> dict[str, Any]:
    """The flattened config minus :data:`NOT_RESULT`: everything that can change a run's numbers."""
    flat = flatten_dict(to_dict(cfg) if dataclasses.is_dataclass(cfg) else cfg)
    return {k: v for k, v in flat.items() if not any(k == n or k.startswith(n + ".") for n in NOT_RESULT)}


def result_hash(cfg: Any) -> str:
    """Hash of :func:`result_config`: equal hashes, same experiment (stale-trial detection)."""
    return config_hash(result_config(cfg))


def config_diff(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """``key: old -> new`` for every flattened key that differs (added / removed keys included)."""
    out = []
    for k in sorted(set(old) | set(new)):
        a, b = old.get(k, "<absent>"), new.get(k, "<absent>")
        if a != b:
            out.append(f"{k}: {json.dumps(a, default=str)} -> {json.dumps(b, default=str)}")
    return out


# --------------------------------------------------------------------------- YAML + overrides


def deep_merge(base: dict, diff: dict) -> dict:
    """``diff`` over ``base``; mappings merge recursively, everything else replaces."""
    out = copy.deepcopy(base)
    for k, v in diff.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


MAX_BASE_CHAIN = 32  # base: files deep (a chain longer than any real config is an error, not a recursion)


def read_yaml(path: str | Path) -> dict:
    """A YAML mapping from ``path``; a missing, unreadable, malformed or oversized file raises one
    ConfigError naming it (see :mod:`lvas.yamlio` for the limits)."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{p}: config file not found")
    try:
        with p.open("rb") as f:
            raw = f.read(yamlio.MAX_BYTES * 64 + 1)
        data = yamlio.load(raw.decode("utf-8"))
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


def load_raw(path: str | Path, _seen: tuple[Path, ...] = ()) -> dict:
    """The file merged over its ``base:`` chain, as plain data (not yet validated)."""
    p = Path(path).resolve()
    if p in _seen:
        raise ConfigError(f"{p}: circular base: {' -> '.join(map(str, _seen + (p,)))}")
    if len(_seen) >= MAX_BASE_CHAIN:
        raise ConfigError(f"{_seen[0]}: base: a chain of more than {MAX_BASE_CHAIN} files (at {p})")
    data = read_yaml(p)
    bases = data.pop("base", None)
    if bases is None:
        return data
    if isinstance(bases, str):
        bases = [bases]
    if not isinstance(bases, list) or not all(isinstance(b, str) for b in bases):
        raise ConfigError(f"{p}: base: expected a path or a list of paths")
    merged: dict = {}
    for b in bases:
        merged = deep_merge(merged, load_raw(p.parent / b, _seen + (p,)))
    return deep_merge(merged, data)


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"a.b.c=value"`` -> (["a","b","c"], parsed YAML value)."""
    shown = excerpt(text, 80, secrets=False)
    if "=" not in text:
        raise ConfigError(f"override {shown}: expected key.path=value")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"override {shown}: empty key path")
    try:
        value = yamlio.load(raw) if raw.strip() else ""
    except yamlio.YAMLLimit as e:
        raise ConfigError(f"{excerpt(key, 80, secrets=False)}: {e}") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"override {shown}: value is not valid YAML: {excerpt(e, 200, secrets=False)}") from None
    if isinstance(value, str) and _NUMBER.fullmatch(value.strip()):
        value = float(value)  # YAML 1.1 reads 1e-5 (no dot) as a string
    return key.split("."), value


_NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


def apply_overrides(data: dict, overrides: Sequence[str]) -> dict:
    """Apply ``key.path=value`` strings (values parsed as YAML)."""
    return apply_values(data, [parse_override(t) for t in overrides])


def apply_values(data: dict, items) -> dict:
    """Apply (key parts or dotted key, value) pairs, values taken as they are."""
    out = copy.deepcopy(data)
    for parts, value in (items.items() if isinstance(items, dict) else items):
        if isinstance(parts, str):
            parts = parts.split(".")
        node = out
        for i, part in enumerate(parts[:-1]):
            nxt = node.get(part)
            if nxt is None:
                nxt = node[part] = {}
            elif not isinstance(nxt, dict):
                raise ConfigError(f"{'.'.join(parts[: i + 1])}: is not a mapping; cannot set {'.'.join(parts)}")
            node = nxt
        node[parts[-1]] = copy.deepcopy(value)
    return out


def load_config(path: str | Path, overrides: Sequence[str] = ()) -> ExperimentConfig:
    """Experiment YAML (+ its bases) + overrides -> validated :class:`ExperimentConfig`."""
    data = apply_overrides(load_raw(path), overrides)
    return from_dict(data)


UNUSED = "(unused)"


def unused_keys(cfg: ExperimentConfig) -> set[str]:
    """Dotted keys whose values this config never reads, so a run does not show a base file's value
    as if it were used (e.g. ``model.fusion`` of a one-stream model, ``model.cmam.*`` without stages)."""
    flat = flatten_dict(to_dict(cfg))
    m, t = cfg.model, cfg.train
    prefixes: list[str] = []
    if m.mode != "both":
        prefixes += ["model.fusion", "model.bridge."]
        prefixes.append("model.temporal." if m.mode == "spatial" else "model.spatial.")
    if not m.cmam.stages:
        prefixes += ["model.cmam.name", "model.cmam.channels"]
    if not m.bridge.stages:
        prefixes += ["model.bridge.name", "model.bridge.channels", "model.bridge.layers", "model.bridge.heads"]
    if m.text.embedding == "learned":
        prefixes += ["model.text.glove_path", "model.text.oov"]
    if t.recipe != "two_stage":
        prefixes += ["train.stage2_epochs", "train.stage2_lr", "train.stage1_cache"]
    if t.lr_milestones:
        prefixes.append("train.lr_step")
    if t.optimizer == "adam" and not t.weight_decay:
        prefixes.append("train.weight_decay")
    if t.select != "best_val":
        prefixes += ["train.monitor", "train.val_samples", "data.val_fraction"]
    return {k for k in flat if any(k == p or (p.endswith(".") and k.startswith(p)) for p in prefixes)}
