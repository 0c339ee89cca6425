"""Component registries: one per family, lazy, each entry declaring its own settings, with loud errors.

Every swappable part of a model (spatial / temporal / text encoder, cross-modal module, bridge,
fusion, decoder, input pipeline), of its training (loss, optimizer, scheduler, recipe, epoch
selection) and of its scoring (protocol, evaluator, released checkpoint layout, dataset) lives in
exactly one :class:`Registry`. A component is one file: a class or function decorated with
``@REGISTRY.register("name")``.

**Settings.** The keyword-only parameters of a builder (those after ``*``) are its settings, read
from the config by name, typed by their annotations and defaulted by their defaults; everything
before ``*`` is wiring the framework passes (channels, specs of the stages, ...: each family says
which in :attr:`Registry.wiring`). So a fusion with a hyperparameter of its own is::

    @FUSIONS.register("gated")
    class GatedFusion(nn.Module):
        def __init__(self, channels: int, text_channels: int, *, temperature: float = 1.0): ...

and ``model.fusion: {name: gated, temperature: 2.0}`` in a YAML sets it.

**Lazy.** Validating a config, ``lvas config``, ``lvas list`` and ``lvas sweep --dry-run`` must not
import torch or a model. lvas's own entries are therefore described in ``registry_index.json``
(target ``module:attribute``, settings, description, declared attributes), generated from the
decorators by ``python -m lvas.registry --write-index`` and checked against them by the tests; an
entry's module is imported only when it is built. An index that no longer matches the sources (a
component file edited or added) is not trusted: the component modules are imported instead.

**Plugins.** ``imports: [my_fusion.py, mypkg.parts]`` in a YAML imports the user's own modules
(:func:`import_plugins`); their decorators register their entries, which ``lvas list`` shows with
the file they came from.

Contract: registering a name twice raises :class:`DuplicateComponentError`; an unknown name raises
:class:`UnknownComponentError` listing the registered names and the closest match.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import importlib.util
import inspect
import json
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

from lvas.errors import did_you_mean, shown

REQUIRED = "<required>"  # the default of a setting that has none
INDEX = Path(__file__).with_name("registry_index.json")
# where lvas's own components live: every module under these is scanned for the index
COMPONENT_PACKAGES = ("lvas.models", "lvas.data", "lvas.engine")
COMPONENT_MODULES = ("lvas.inputs", "lvas.metrics", "lvas.coco", "lvas.davis2017")


class RegistryError(Exception):
    """Base class of registry errors."""


class DuplicateComponentError(RegistryError):
    """A name was registered twice in one family."""


class UnknownComponentError(RegistryError, KeyError):
    """A name is not registered in a family."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0])


@dataclass(frozen=True)
class Param:
    """One setting of an entry: its name, its annotation as text, and its default (``REQUIRED`` if none)."""

    name: str
    type: str
    default: Any = REQUIRED


@dataclass
class Entry:
    """A registered component: ``target`` ``module:qualified.name``, declared ``params`` (settings),
    a one-line ``description``, ``origin`` (``lvas`` or the plugin file or module it came from) and
    ``meta`` (attributes its family records, e.g. an encoder's ``min_frames``). ``builder`` imports
    the target on first use."""

    name: str
    target: str
    params: tuple[Param, ...] = ()
    description: str = ""
    origin: str = "lvas"
    meta: dict[str, Any] = field(default_factory=dict)
    obj: Any = None
    module: str = ""  # the module whose import registers it

    @property
    def builder(self) -> Any:
        if self.obj is None:
            module, _, attr = self.target.partition(":")
            importlib.import_module(self.module or module)  # its decorator attaches the object (Registry.register)
            if self.obj is None:  # registered by a call, not a decorator, or under another name
                value: Any = sys.modules[module]
                for part in attr.split("."):
                    value = getattr(value, part)
                self.obj = value
        return self.obj

    def settings(self) -> dict[str, Param]:
        return {p.name: p for p in self.params}


def _annotation_text(annotation: Any) -> str:
    if annotation is inspect.Parameter.empty:
        return "Any"
    if isinstance(annotation, str):
        return annotation
    return inspect.formatannotation(annotation).replace("typing.", "")


def _plain_default(value: Any, where: str) -> Any:
    if isinstance(value, tuple):
        value = list(value)
    try:
        json.dumps(value)
    except TypeError:
        raise RegistryError(f"{where}: the default {value!r} is not plain data (a number, string, bool, None or a "
                            f"list of them): a config cannot hold it") from None
    return value


def declared_params(obj: Any, where: str = "") -> tuple[Param, ...]:
    """The settings of a builder: its keyword-only parameters (a class's ``__init__``'s)."""
    if inspect.isclass(obj):
        fn = obj.__init__
    elif inspect.isfunction(obj) or inspect.ismethod(obj):
        fn = obj
    else:
        return ()  # a registered object (a protocol, an input pipeline spec): nothing to set
    out = []
    for p in inspect.signature(fn).parameters.values():
        if p.kind is inspect.Parameter.KEYWORD_ONLY:
            default = REQUIRED if p.default is inspect.Parameter.empty else _plain_default(p.default, f"{where}.{p.name}")
            out.append(Param(p.name, _annotation_text(p.annotation), default))
    return tuple(out)


_ORIGIN: list[str] = []  # the plugin being imported (see import_plugins)


def summary(doc: str | None, limit: int = 200) -> str:
    """The first sentence of a docstring's first paragraph, on one line (at most ``limit`` characters)."""
    para = " ".join((doc or "").strip().split("\n\n")[0].split())
    first = re.split(r"(?<=[.!?])\s+(?=[A-Z(`])", para, maxsplit=1)[0]
    return first if len(first) <= limit else first[:limit - 1].rstrip() + "…"


class Registry:
    """A named family of component builders.

    Args:
        family: the family's name, used in messages (``"spatial encoder"``).
        description: one line that says what the family is for.
        wiring: the arguments lvas passes to every builder of the family (not settings).
        meta: attributes of an entry recorded in the index (read without importing it).
    """

    def __init__(self, family: str, description: str = "", wiring: tuple[str, ...] = (),
                 meta: tuple[str, ...] = ()) -> None:
        self.family = family
        self.description = description
        self.wiring = wiring
        self.meta_keys = meta
        self._entries: dict[str, Entry] = {}

    def register(self, name: str | None = None, description: str | None = None) -> Callable:
        """Decorator that registers a builder (a class, a function or an object) under ``name``."""

        def deco(obj: Any) -> Any:
            key = name or getattr(obj, "__name__", None)
            if not key:
                raise RegistryError(f"{self.family}: an object registered without a name")
            where = sys._getframe(1).f_globals.get("__name__", "?")  # the module that registers it
            target = _target_of(obj, where)
            known = self._entries.get(key)
            if known is not None:
                if known.target == target and known.obj is None:  # the lazy entry of this very object
                    known.obj = obj
                    return obj
                again = _ORIGIN[-1] if _ORIGIN else _origin_of(where)
                raise DuplicateComponentError(
                    f"{self.family} {key!r} is already registered (by {known.target}, from {known.origin}); "
                    f"{again} registers it again: give yours another name")
            doc = description or summary(getattr(obj, "__doc__", None))
            meta = {k: _plain_default(getattr(obj, k), f"{key}.{k}") for k in self.meta_keys if hasattr(obj, k)}
            self._entries[key] = Entry(key, target, declared_params(obj, f"{self.family} {key}"), doc.strip(),
                                       _ORIGIN[-1] if _ORIGIN else _origin_of(where), meta, obj, where)
            return obj

        return deco

    def add_lazy(self, entry: Entry) -> None:
        """An entry described by the index (not imported yet)."""
        self._entries.setdefault(entry.name, entry)

    def get(self, name: str) -> Entry:
        """The entry for ``name``; an unknown name raises with the choices."""
        load_catalogue()
        try:
            return self._entries[name]
        except (KeyError, TypeError):
            raise UnknownComponentError(self.unknown_message(name)) from None

    def unknown_message(self, name: object) -> str:
        names = self.names()
        return (f"unknown {self.family} {shown(name, 60)}; registered: {', '.join(names) or '(none)'}"
                + did_you_mean(name, names, cutoff=0.4))

    def build(self, name: str, settings: dict[str, Any] | None = None, **wiring: Any) -> Any:
        """Build ``name`` with the family's ``wiring`` and the entry's ``settings`` (keyword-only)."""
        return self.get(name).builder(**wiring, **(settings or {}))

    def names(self) -> list[str]:
        load_catalogue()
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        load_catalogue()
        return isinstance(name, str) and name in self._entries

    def __iter__(self) -> Iterator[Entry]:
        return iter(self._entries[k] for k in self.names())

    def __len__(self) -> int:
        return len(self.names())

    def __repr__(self) -> str:
        return f"Registry({self.family!r}, {self.names()})"


def _target_of(obj: Any, where: str) -> str:
    if inspect.isclass(obj) or inspect.isfunction(obj):
        return f"{obj.__module__}:{obj.__qualname__}"
    return f"{where}:<object>"  # an object: found again by importing the module that registers it


def _origin_of(module: str) -> str:
    return "lvas" if module == "lvas" or module.startswith("lvas.") else module


# --------------------------------------------------------------------------- the families

SPATIAL_ENCODERS = Registry("spatial encoder", "2D encoder of the target frame (5 stages, strides 2..32)")
TEMPORAL_ENCODERS = Registry("temporal encoder", "3D encoder of the whole clip (5 stages, strides 2..32)",
                             meta=("min_frames",))
TEXT_ENCODERS = Registry("text encoder", "sentence encoder giving per-word features",
                         wiring=("vocab_size", "embed_dim", "branches", "embeddings", "frozen_embedding"))
FUSIONS = Registry("fusion", "spatial-temporal fusion of one decoder stage", wiring=("channels", "text_channels"))
CROSS_MODAL = Registry("cross-modal", "language modulation of an encoder stage (CMAM forms)",
                       wiring=("visual_channels", "text_channels", "dims"))
BRIDGES = Registry("bridge", "cross-modal exchange between the two streams at an encoder stage (LBDT)",
                   wiring=("stage_specs", "text_channels"))
DECODERS = Registry("decoder", "stage maps of one or two branches -> mask logits",
                    wiring=("branch_specs", "text_channels", "sentence_channels", "fusion", "modulated"),
                    meta=("gives",))  # gives = "queries": per-query logits, boxes and masks (DETR-style)
LOSSES = Registry("loss", "training loss over the model's outputs", meta=("needs",))  # needs = what a decoder gives
OPTIMIZERS = Registry("optimizer", "torch optimizer over the trained parameters", wiring=("params", "lr"))
SCHEDULERS = Registry("scheduler", "learning-rate schedule, stepped once per epoch", wiring=("optimizer",))
RECIPES = Registry("recipe", "how a model is trained: jointly, or the paper's two stages")
SELECTORS = Registry("selection", "which epoch becomes the model (never on the test split)")
PROTOCOLS = Registry("protocol", "evaluation protocol: logits + ground truth -> two masks at the original size",
                     meta=("stretched",))
EVALUATORS = Registry("evaluator", "what a dataset's predictions are scored with (process / compute)", wiring=("protocol",))
LAYOUTS = Registry("layout", "a released checkpoint layout, mapped onto lvas keys")
INPUTS = Registry("input", "input pipeline: frame geometry, pixel normalisation, clip sampling")
DATASETS = Registry("dataset", "datasets read from their on-disk layout", meta=("evaluators",))

FAMILIES: dict[str, Registry] = {
    "spatial": SPATIAL_ENCODERS,
    "temporal": TEMPORAL_ENCODERS,
    "text": TEXT_ENCODERS,
    "fusion": FUSIONS,
    "cross_modal": CROSS_MODAL,
    "bridge": BRIDGES,
    "decoder": DECODERS,
    "loss": LOSSES,
    "optimizer": OPTIMIZERS,
    "scheduler": SCHEDULERS,
    "recipe": RECIPES,
    "selection": SELECTORS,
    "protocol": PROTOCOLS,
    "evaluator": EVALUATORS,
    "layout": LAYOUTS,
    "input": INPUTS,
    "dataset": DATASETS,
}


def all_families() -> dict[str, Registry]:
    """Every registry, complete (lvas's entries from the index, plugins already imported)."""
    load_catalogue()
    return FAMILIES


# --------------------------------------------------------------------------- the index

_LOADED: list[bool] = []


def _component_files() -> dict[str, Path]:
    """Every source file that may register lvas's own components, by module name."""
    root = Path(__file__).parent
    files = {m: root.joinpath(*m.split(".")[1:]).with_suffix(".py") for m in COMPONENT_MODULES}
    for pkg in COMPONENT_PACKAGES:
        folder = root.joinpath(*pkg.split(".")[1:])
        for p in sorted(folder.rglob("*.py")):
            rel = p.relative_to(root).with_suffix("")
            files[".".join(("lvas", *rel.parts)).removesuffix(".__init__")] = p
    return files


def _digest(files: dict[str, Path]) -> dict[str, str]:
    return {m: hashlib.sha1(p.read_bytes()).hexdigest() for m, p in sorted(files.items()) if p.is_file()}


def load_catalogue() -> None:
    """Make lvas's own entries known: lazily from the index when it matches the sources, else by
    importing every component module (slow: torch). Idempotent."""
    if _LOADED:
        return
    _LOADED.append(True)
    if not index_is_fresh():
        import_components()
        return
    index = json.loads(INDEX.read_text())
    for family, entries in index["families"].items():
        reg = FAMILIES[family]
        for name, e in entries.items():
            reg.add_lazy(Entry(name, e["target"], tuple(Param(*p) for p in e["params"]), e["description"], "lvas",
                               e.get("meta", {}), None, e["module"]))


def index_is_fresh() -> bool:
    """Whether ``registry_index.json`` still describes the sources: the same component files exist,
    and those that register something are unchanged."""
    try:
        index = json.loads(INDEX.read_text())
        files = _component_files()
        return index.get("files") == sorted(files) and \
            index.get("sources") == _digest({m: files[m] for m in index.get("sources", {}) if m in files})
    except (OSError, ValueError, KeyError, TypeError):
        return False


def import_components() -> None:
    """Import every module of lvas that registers components (what the index describes)."""
    for module in _component_files():
        importlib.import_module(module)


def build_index() -> dict[str, Any]:
    """The index of lvas's own entries, from their decorators (imports every component module)."""
    import_components()
    families, registering = {}, set()
    for key, reg in FAMILIES.items():
        own = [reg._entries[n] for n in sorted(reg._entries) if reg._entries[n].origin == "lvas"]
        families[key] = {e.name: {"target": e.target, "module": e.module, "description": e.description,
                                  "meta": e.meta, "params": [[p.name, p.type, p.default] for p in e.params]}
                         for e in own}
        registering |= {e.module for e in own} | {e.target.partition(":")[0] for e in own}
    files = _component_files()
    return {"files": sorted(files), "sources": _digest({m: files[m] for m in registering if m in files}),
            "families": families}


# --------------------------------------------------------------------------- plugins


def plugin_module_name(path: Path) -> str:
    return "lvas_plugin_" + hashlib.sha1(str(path).encode()).hexdigest()[:12] + "_" + \
        "".join(c if c.isalnum() else "_" for c in path.stem)


_PLUGIN_FILES: dict[str, str] = {}  # file name -> the resolved path of the plugin file imported under it


def plugin_imported(name: str) -> bool:
    """Whether the module or ``.py`` file ``name`` (as an ``imports:`` entry names it) is imported. A
    file is matched by its name, not its folder: a project moved elsewhere (its stored configs name
    the old paths) evaluates with ``--import`` of the file where it is now."""
    if _is_file(name):
        return plugin_module_name(Path(name).resolve()) in sys.modules or Path(name).name in _PLUGIN_FILES
    return name in sys.modules and _registered_by(name)


def _is_file(name: str) -> bool:
    return name.endswith(".py") or "/" in name


def _registered_by(origin: str) -> bool:
    return any(e.origin == origin for reg in FAMILIES.values() for e in reg._entries.values())


def import_plugins(names: list[str], where: str = "imports") -> None:
    """Import the user's modules (a dotted module name, or a path to a ``.py`` file): their
    decorators register their components. Importing runs their code: this is the one place lvas
    runs code a config names, and only code the user named. A module is imported once per process.

    Every problem is one RegistryError naming the entry: a missing file or module, a relative module
    name, a syntax error (file and line), a package the plugin imports that is not installed, an
    exception raised while importing it, and a module that registers no component (``json``: not a
    plugin)."""
    load_catalogue()
    for i, name in enumerate(names):
        key = f"{where}[{i}]"
        if _is_file(name):
            _import_file(key, name)
            continue
        if name.startswith(".") or not all(part.isidentifier() for part in name.split(".")):
            raise RegistryError(f"{key}: {shown(name)}: not a module name (a dotted name such as mypkg.parts, or a "
                                f"path to a .py file; relative names like .mod cannot be imported from a config)")
        if name in sys.modules:
            if not _registered_by(name):
                raise RegistryError(_not_a_plugin(key, name))
            continue
        try:
            with _importing(name):
                importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name and (e.name == name or name.startswith(e.name + ".")):
                raise RegistryError(f"{key}: {shown(name)}: module not found ({e.name})") from None
            raise RegistryError(f"{key}: {shown(name)} imports {e.name!r}, which is not installed") from None
        except RegistryError as e:
            raise RegistryError(f"{key}: {e}") from None
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException as e:
            raise _import_failed(key, shown(name), e) from None
        if not _registered_by(name):
            raise RegistryError(_not_a_plugin(key, name))


def _import_file(key: str, name: str) -> None:
    path = Path(name)
    if not path.is_file():
        raise RegistryError(f"{key}: {shown(name)}: no such Python file")
    module = plugin_module_name(path.resolve())
    if module in sys.modules:
        return
    spec = importlib.util.spec_from_file_location(module, path.resolve())
    with _importing(str(path.resolve())):
        mod = importlib.util.module_from_spec(spec)
        sys.modules[module] = mod
        try:
            spec.loader.exec_module(mod)
        except BaseException as e:
            sys.modules.pop(module, None)
            if isinstance(e, (KeyboardInterrupt, SystemExit)):
                raise
            if isinstance(e, RegistryError):
                raise RegistryError(f"{key}: {e}") from None
            if isinstance(e, SyntaxError):
                raise RegistryError(f"{key}: {path}: line {e.lineno}: syntax error ({e.msg})") from None
            if isinstance(e, ModuleNotFoundError):
                raise RegistryError(f"{key}: {path} imports {e.name!r}, which is not installed") from None
            raise _import_failed(key, str(path), e) from None
    _PLUGIN_FILES.setdefault(path.name, str(path.resolve()))


def _import_failed(key: str, what: str, e: BaseException) -> RegistryError:
    """An exception the user's module raised while being imported: its type, message and line."""
    import traceback

    frames = [f for f in traceback.extract_tb(e.__traceback__) if not f.filename.startswith(str(Path(__file__).parent))]
    at = f" (line {frames[-1].lineno} of {frames[-1].filename})" if frames else ""
    return RegistryError(f"{key}: importing {what} raised {type(e).__name__}: {str(e)[:300]}{at}")


def _not_a_plugin(key: str, name: str) -> str:
    return (f"{key}: {shown(name)} registers no component: not a plugin (a plugin's classes or functions carry "
            f"@REGISTRY.register(...), e.g. @FUSIONS.register('mine'))")


@contextlib.contextmanager
def _importing(origin: str) -> Iterator[None]:
    _ORIGIN.append(origin)
    try:
        yield
    finally:
        _ORIGIN.pop()


def main(argv: list[str] | None = None) -> int:
    """``python -m lvas.registry --write-index``: regenerate registry_index.json from the decorators."""
    args = sys.argv[1:] if argv is None else argv
    if args != ["--write-index"]:
        print("usage: python -m lvas.registry --write-index", file=sys.stderr)
        return 2
    INDEX.write_text(json.dumps(build_index(), indent=1, sort_keys=True) + "\n")
    print(f"wrote {INDEX}")
    return 0


if __name__ == "__main__":  # run as a script: use the lvas.registry module the components register in
    sys.exit(importlib.import_module("lvas.registry").main())
