"""Input pipelines: how a clip becomes the model's input, as one registered choice.

An input pipeline fixes four things that the released CSTM code and the lean reading do
differently (every one moves numbers, so each is part of the recorded config):

* ``geometry``: ``stretch`` resizes every frame to S x S (the release) or ``letterbox`` keeps the
  aspect ratio and zero-pads to S x S;
* ``normalize``: each encoder's own mean/std (ImageNet, Kinetics, [-1, 1]) or ``raw`` [0, 1]
  pixels for every encoder (the release);
* ``clip_start``: ``centred`` (T frames around the target, clamped at the video's ends) or
  ``released`` (the window starts at max(1, f - T/2 * stride), so for early frames the frame at
  position T/2 is not the annotated one, as in the release);
* ``resampler``: ``torch`` (antialiased bilinear) or ``pil`` (Pillow's bilinear on the uint8
  frame, what torchvision's ``Resize`` on a PIL image does in the release), and the training
  target: ``area`` (resized mask > 0.5) or ``released`` (bilinear, align_corners, > 0).
"""

from __future__ import annotations

from dataclasses import dataclass

from lvas.registry import INPUTS


@dataclass(frozen=True)
class InputSpec:
    """One input pipeline (see the module docstring for each field)."""

    geometry: str = "stretch"
    normalize: bool = True
    clip_start: str = "centred"
    resampler: str = "torch"
    target: str = "area"


@INPUTS.register("stretch")
def stretch() -> InputSpec:
    """Stretch to S x S, each encoder's own normalisation, centred clip (default)."""
    return InputSpec("stretch", True, "centred", "torch", "area")


@INPUTS.register("letterbox")
def letterbox() -> InputSpec:
    """Keep the aspect ratio and zero-pad to S x S, each encoder's own normalisation, centred clip."""
    return InputSpec("letterbox", True, "centred", "torch", "area")


@INPUTS.register("released")
def released() -> InputSpec:
    """As the released CSTM loader: PIL stretch to S x S, raw [0, 1] pixels, its clip start and mask resize."""
    return InputSpec("stretch", False, "released", "pil", "released")


def input_spec(name) -> InputSpec:
    """The registered pipeline ``name`` (a name or the config's ``model.input``; unknown names raise
    with the choices)."""
    return INPUTS.build(getattr(name, "name", name))
