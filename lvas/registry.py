"""Component registries: one per family, with loud errors.

Every swappable part of a model (spatial encoder, temporal encoder, text encoder, cross-modal
module, bridge between the streams, fusion, decoder, input pipeline), of its training (loss) and
of its scoring (protocol, released checkpoint layout) lives in exactly one :class:`Registry`.
CSTM, ACGA and LBDT are each a YAML file choosing one entry per family. A component module registers its builders
with ``@REGISTRY.register("name")``; the package ``lvas.models`` imports every component
module explicitly, so a registered name can never be missing because an import was
forgotten.

Contract:

* registering a name twice raises :class:`DuplicateComponentError`;
* asking for an unknown name raises :class:`UnknownComponentError`, which lists the
  registered names and the closest match;
* each entry carries a one-line description (the first line of the builder's docstring
  unless given), printed by ``lvas list``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterator

from lvas.errors import did_you_mean, shown


class RegistryError(Exception):
    """Base class of registry errors."""


class DuplicateComponentError(RegistryError):
    """A name was registered twice in one family."""


class UnknownComponentError(RegistryError, KeyError):
    """A name is not registered in a family."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0])


@dataclass(frozen=True)
class Entry:
    name: str
    builder: Callable[..., Any]
    description: str


class Registry:
    """A named family of component builders.

    Args:
        family: the family's name, used in messages (``"spatial encoder"``).
        description: one line that says what the family is for.
    """

    def __init__(self, family: str, description: str = "") -> None:
        self.family = family
        self.description = description
        self._entries: dict[str, Entry] = {}

    def register(self, name: str | None = None, description: str | None = None) -> Callable:
        """Decorator that registers a builder (a class or a function) under ``name``."""

        def deco(builder: Callable[..., Any]) -> Callable[..., Any]:
            key = name or builder.__name__
            if key in self._entries:
                raise DuplicateComponentError(
                    f"{self.family} {key!r} is already registered "
                    f"(by {self._entries[key].builder.__module__}.{self._entries[key].builder.__qualname__})"
                )
            doc = description or (builder.__doc__ or "").strip().splitlines()[0:1]
            text = doc if isinstance(doc, str) else (doc[0] if doc else "")
            self._entries[key] = Entry(key, builder, text.strip())
            return builder

        return deco

    def get(self, name: str) -> Entry:
        """The entry for ``name``; an unknown name raises with the choices."""
        try:
            return self._entries[name]
        except KeyError:
            raise UnknownComponentError(self.unknown_message(name)) from None

    def unknown_message(self, name: object) -> str:
        names = self.names()
        return (f"unknown {self.family} {shown(name, 60)}; registered: {', '.join(names) or '(none)'}"
                + did_you_mean(name, names, cutoff=0.4))

    def build(self, name: str, **kwargs: Any) -> Any:
        """Build the component ``name`` with keyword arguments."""
        return self.get(name).builder(**kwargs)

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[Entry]:
        return iter(self._entries[k] for k in self.names())

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.family!r}, {self.names()})"


SPATIAL_ENCODERS = Registry("spatial encoder", "2D encoder of the target frame (5 stages, strides 2..32)")
TEMPORAL_ENCODERS = Registry("temporal encoder", "3D encoder of the whole clip (5 stages, strides 2..32)")
TEXT_ENCODERS = Registry("text encoder", "sentence encoder giving per-word features")
FUSIONS = Registry("fusion", "spatial-temporal fusion of one decoder stage")
CROSS_MODAL = Registry("cross-modal", "language modulation of an encoder stage (CMAM forms)")
BRIDGES = Registry("bridge", "cross-modal exchange between the two streams at an encoder stage (LBDT)")
DECODERS = Registry("decoder", "stage maps of one or two branches -> mask logits")
LOSSES = Registry("loss", "training loss over the model's outputs")
PROTOCOLS = Registry("protocol", "evaluation protocol: logits + ground truth -> two masks at the original size")
LAYOUTS = Registry("layout", "a released checkpoint layout, mapped onto lvas keys")
INPUTS = Registry("input", "input pipeline: frame geometry, pixel normalisation, clip sampling")
DATASETS = Registry("dataset", "datasets read from their on-disk layout")

FAMILIES: dict[str, Registry] = {
    "spatial": SPATIAL_ENCODERS,
    "temporal": TEMPORAL_ENCODERS,
    "text": TEXT_ENCODERS,
    "fusion": FUSIONS,
    "cross_modal": CROSS_MODAL,
    "bridge": BRIDGES,
    "decoder": DECODERS,
    "loss": LOSSES,
    "protocol": PROTOCOLS,
    "layout": LAYOUTS,
    "input": INPUTS,
    "dataset": DATASETS,
}


def all_families() -> dict[str, Registry]:
    """Every registry, after importing every component module."""
    import lvas.data  # noqa: F401  (registers the datasets)
    import lvas.engine.losses  # noqa: F401  (registers the losses)
    import lvas.metrics  # noqa: F401  (registers the protocols)
    import lvas.models  # noqa: F401  (imports each component module explicitly)

    return FAMILIES
