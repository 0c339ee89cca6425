"""Typed conversion of plain config data: values checked against their annotations, and component
slots (:class:`Component`) checked against the settings their registry entry declares. Every error
is one :class:`ConfigError` naming the key path and what was allowed."""

from __future__ import annotations

import copy
import dataclasses
import types
import typing
from dataclasses import field
from typing import Any, Literal

from lvas import settings as S
from lvas.errors import ConfigError, did_you_mean, shown
from lvas.registry import FAMILIES, REQUIRED, Entry


class Component:
    """A config slot's value: ``name`` (the registry entry), the slot's own keys and the entry's
    settings, all as attributes; :meth:`settings` gives the entry's settings alone (what its builder
    takes as keyword arguments)."""

    def __init__(self, family: str, name: str, values: dict[str, Any], setting_names: tuple[str, ...]) -> None:
        object.__setattr__(self, "family", family)
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "_values", dict(values))
        object.__setattr__(self, "_settings", tuple(setting_names))

    def __getattr__(self, key: str) -> Any:
        if key.startswith("_"):
            raise AttributeError(key)
        try:
            return self._values[key]
        except KeyError:
            raise AttributeError(f"{self.family} {self.name!r} has no key {key!r}") from None

    def __setattr__(self, key: str, value: Any) -> None:
        if key not in self._values:
            raise AttributeError(f"{self.family} {self.name!r} has no key {key!r}")
        self._values[key] = value

    def settings(self) -> dict[str, Any]:
        """The entry's own settings (keyword arguments of its builder)."""
        return {k: copy.deepcopy(self._values[k]) for k in self._settings}

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, **copy.deepcopy(self._values)}

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Component) and self.to_dict() == other.to_dict()

    def __reduce__(self):
        return (Component, (self.family, self.name, self._values, self._settings))

    def __repr__(self) -> str:
        return f"Component({self.family}: {self.to_dict()})"


def slot(family: str, default: str, keys: type | None = None, help: str = "") -> Any:
    """A config field that picks a component of ``family`` (default ``default``); ``keys`` is a
    dataclass of the slot's own keys (shared by every entry of the family, e.g. CMAM ``stages``)."""
    return field(default_factory=lambda: _parse_slot(default, family, default, keys, ""),
                 metadata={"slot": family, "default": default, "keys": keys, "help": help})


def used_if(predicate: typing.Callable[[Any], bool], default: Any = None, factory: Any = None) -> Any:
    """A slot key read only when ``predicate(slot value)`` holds (e.g. ``glove_path`` without GloVe is
    unused): runs show it as unused otherwise."""
    kw = {"default_factory": factory} if factory is not None else {"default": default}
    return field(metadata={"used_if": predicate}, **kw)


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is typing.Annotated:
        check = next((a for a in tp.__metadata__ if isinstance(a, S.Check)), None)
        return check.expected if check and isinstance(check.expected, str) else _type_name(typing.get_args(tp)[0])
    if origin is Literal:
        return " | ".join(repr(a) for a in typing.get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is list:
        (inner,) = typing.get_args(tp) or (Any,)
        return f"a list of {_type_name(inner)}"
    if tp is type(None):
        return "null"
    if tp is Any:
        return "plain data"
    if dataclasses.is_dataclass(tp):
        return "a mapping"
    return getattr(tp, "__name__", str(tp))


def _convert(value: Any, tp: Any, path: str) -> Any:
    origin = typing.get_origin(tp)
    if origin is typing.Annotated:
        base, *meta = typing.get_args(tp)
        out = _convert(value, base, path)
        for check in meta:
            if isinstance(check, S.Check) and not check.ok(out):
                expected = check.expected(out) if callable(check.expected) else check.expected
                raise ConfigError(f"{path}: {shown(value)} is not valid; expected {expected}")
        return out
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{path or '<root>'}: expected a mapping, got {shown(value)}")
        return _from_mapping(tp, value, path)
    if tp is Any:
        return copy.deepcopy(value)
    if origin is Literal:
        allowed = typing.get_args(tp)
        if not any(value == a and type(value) is type(a) for a in allowed):
            raise ConfigError(f"{path}: {shown(value)} is not allowed; expected one of {', '.join(map(repr, allowed))}")
        return value
    if origin in (typing.Union, types.UnionType):
        errors = []
        for arg in typing.get_args(tp):
            try:
                return _convert(value, arg, path)
            except ConfigError as e:
                errors.append(e)
        checked = [e for e in errors if "is not valid; expected" in str(e)]
        if len(checked) == 1:  # the value had the right type but not the right range: say that
            raise checked[0]
        raise ConfigError(f"{path}: expected {_type_name(tp)}, got {shown(value)}")
    if origin is list:
        (inner,) = typing.get_args(tp) or (Any,)
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
        if abs(value) > S.MAX_INT:
            raise ConfigError(f"{path}: {shown(value)} is out of range (at most {S.MAX_INT})")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{path}: expected a number, got {shown(value)}")
        if value != value or abs(value) == float("inf") or abs(value) > 1e300:
            raise ConfigError(f"{path}: {shown(value)} is not a finite number")
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


def _key_text(key: Any) -> str:
    return shown(key, 60)[1:-1] if isinstance(key, str) else shown(key, 60)


def _from_mapping(cls: type, data: dict, prefix: str) -> Any:
    hints = typing.get_type_hints(cls, include_extras=True)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key in data:
        if key not in fields:
            path = f"{prefix}.{_key_text(key)}" if prefix else _key_text(key)
            raise ConfigError(f"{path}: unknown key; allowed keys here: {', '.join(fields)}"
                              f"{did_you_mean(key, fields) or '.'}")
    kwargs = {}
    for name, f in fields.items():
        path = f"{prefix}.{name}" if prefix else name
        family = f.metadata.get("slot")
        if family is not None:
            raw = data.get(name, f.metadata["default"])
            kwargs[name] = _parse_slot(raw, family, f.metadata["default"], f.metadata["keys"], path)
            continue
        if name in data:
            value = _convert(data[name], hints[name], path)
        elif f.default is not dataclasses.MISSING:
            value = copy.deepcopy(f.default)
        elif f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
            value = f.default_factory()  # type: ignore[misc]
        else:
            raise ConfigError(f"{path}: required key is missing")
        kwargs[name] = value
    return cls(**kwargs)


def _entry(family: str, name: Any, path: str) -> Entry:
    reg = FAMILIES[family]
    if not isinstance(name, str) or name not in reg:
        raise ConfigError(f"{path}: {reg.unknown_message(name)}")
    return reg.get(name)


def _slot_mapping(raw: Any, default: str, path: str) -> dict:
    if isinstance(raw, str):
        return {"name": raw}
    if isinstance(raw, dict):
        return dict(raw) if "name" in raw else {"name": default, **raw}
    raise ConfigError(f"{path}: expected a component name or a mapping with its name and settings, got {shown(raw)}")


def _parse_slot(raw: Any, family: str, default: str, keys: type | None, path: str) -> Component:
    """A slot's raw value (a name, or a mapping with ``name``) -> :class:`Component`, validated
    against the slot's keys and the entry's declared settings."""
    data = _slot_mapping(raw, default, path)
    entry = _entry(family, data.pop("name"), f"{path}.name" if isinstance(raw, dict) and "name" in raw else path)
    key_fields = {f.name: f for f in dataclasses.fields(keys)} if keys else {}
    hints = typing.get_type_hints(keys, include_extras=True) if keys else {}
    params = entry.settings()
    allowed = ["name", *key_fields, *params]
    for key in data:
        if key not in key_fields and key not in params:
            raise ConfigError(f"{path}.{_key_text(key)}: unknown key for {FAMILIES[family].family} {entry.name!r}; "
                              f"allowed keys here: {', '.join(allowed)}{did_you_mean(key, allowed) or '.'}")
    values: dict[str, Any] = {}
    for k, f in key_fields.items():
        if k in data:
            values[k] = _convert(data[k], hints[k], f"{path}.{k}")
        else:
            values[k] = copy.deepcopy(f.default) if f.default is not dataclasses.MISSING else f.default_factory()
    for k, p in params.items():
        if k in data:
            values[k] = _convert(data[k], S.parse(p.type), f"{path}.{k}")
        elif p.default == REQUIRED:
            raise ConfigError(f"{path}.{k}: required by {FAMILIES[family].family} {entry.name!r} (type {p.type})")
        else:
            values[k] = copy.deepcopy(p.default)
    return Component(family, entry.name, values, tuple(params))
