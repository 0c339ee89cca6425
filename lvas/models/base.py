"""The encoder contract shared by every spatial and temporal encoder.

An encoder is stages applied in order (five for every backbone but ACGA's I3D, which stops at
Mixed_4f); stage ``i`` has a declared channel count, spatial stride ``2**i`` and temporal stride. CMAM modules are inserted between stages through
``hooks``; the output of a hook feeds the next stage. Encoders take images in [0, 1] and apply
their own input normalisation, so the data pipeline is the same for every backbone.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping

import torch
import torch.nn.functional as F
from torch import nn

NUM_STAGES = 5


@dataclass(frozen=True)
class StageSpec:
    """Output of one encoder stage: channels, spatial stride, temporal stride (1 for 2D)."""

    channels: int
    stride: int
    t_stride: int = 1


class StagedEncoder(nn.Module):
    """Base class: ``self.stages`` (5 modules) and ``self.stage_specs`` (5 StageSpec).

    Subclasses set ``is_3d``, ``mean`` and ``std`` (per-channel input normalisation).
    """

    is_3d: bool = False
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)
    min_input: int = 32  # smallest frame side the stages accept
    raw_input: bool = False  # True: skip ``normalize`` (the released code feeds [0, 1] pixels)
    temporal_reduce: str = "target"  # 3D maps -> the target frame: "target" slice or "mean" over time

    def __init__(self) -> None:
        super().__init__()
        self.stages = nn.ModuleList()
        self.stage_specs: list[StageSpec] = []

    def output_shape(self) -> list[StageSpec]:
        """The declared per-stage output (channels, strides)."""
        return list(self.stage_specs)

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        shape = (1, 3, 1, 1, 1) if self.is_3d else (1, 3, 1, 1)
        mean = torch.tensor(self.mean, device=x.device, dtype=x.dtype).view(shape)
        std = torch.tensor(self.std, device=x.device, dtype=x.dtype).view(shape)
        return (x - mean) / std

    def align(self, x: torch.Tensor, stage: int, size: tuple[int, int]) -> torch.Tensor:
        """Resize a stage map to the exact stride-``2**stage`` grid (ceil(H/s), ceil(W/s)).

        A no-op for encoders whose padding already lands on that grid; Inception-v3's
        valid convolutions do not (e.g. 157 instead of 160 at stride 2 for 320 px input).
        """
        s = self.stage_specs[stage - 1].stride
        target = (math.ceil(size[0] / s), math.ceil(size[1] / s))
        if tuple(x.shape[-2:]) == target:
            return x
        if x.dim() == 5:
            return F.interpolate(x, size=(x.shape[2], *target), mode="trilinear", align_corners=False)
        return F.interpolate(x, size=target, mode="bilinear", align_corners=False)

    def view(self, clip: torch.Tensor) -> torch.Tensor:
        """What this encoder sees of a clip (B, 3, T, H, W): the whole clip for a 3D encoder, the
        target frame (index T // 2) for a 2D one. Frame-difference encoders override it."""
        return clip if self.is_3d else clip[:, :, clip.shape[2] // 2]

    def prepare(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        """Check the frame size and normalise (unless ``raw_input``); returns the input of stage 1
        and the (H, W) every stage map is aligned to."""
        size = (x.shape[-2], x.shape[-1])
        if min(size) < self.min_input:
            raise ValueError(f"{type(self).__name__} needs frames of at least {self.min_input} px, got {size}")
        return (x if self.raw_input else self.normalize(x)), size

    def run_stage(self, i: int, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """Stage ``i`` (1-based) on ``x``, its output put on the stride-2^i grid of ``size``."""
        return self.align(self.stages[i - 1](x), i, size)

    def forward(
        self, x: torch.Tensor, hooks: Mapping[int, Callable[[torch.Tensor], torch.Tensor]] | None = None
    ) -> list[torch.Tensor]:
        """Run every stage.

        Args:
            x: (B, 3, H, W) for a 2D encoder or (B, 3, T, H, W) for a 3D one, values in [0, 1]
                (what :meth:`view` gives; normalised here with the encoder's mean/std unless ``raw_input``).
            hooks: stage number (1..n) -> callable applied to that stage's output; its result
                feeds the next stage (this is where CMAM goes).

        Returns:
            One map per stage; stage i is (B, C_i, ceil(H/2^i), ceil(W/2^i)) for 2D and
            (B, C_i, ceil(T/t_i), ceil(H/2^i), ceil(W/2^i)) for 3D.
        """
        x, size = self.prepare(x)
        feats = []
        for i in range(1, len(self.stages) + 1):
            # every stage map is put on the stride-2^i grid before CMAM sees it and before the next
            # stage runs, so coordinates, CMAM cost and the decoder see the same grid for every encoder
            x = self.run_stage(i, x, size)
            if hooks is not None and i in hooks:
                x = hooks[i](x)
            feats.append(x)
        return feats

    def frame_feature(self, x: torch.Tensor, stage: int, target: int) -> torch.Tensor:
        """The target-frame map of a stage output: the slice at ``target`` for 3D maps
        (``temporal_reduce = "target"``) or their mean over time (``"mean"``); 2D maps as they are."""
        if x.dim() == 4:
            return x
        if self.temporal_reduce == "mean":
            return x.mean(2)
        t = self.stage_specs[stage - 1].t_stride
        return x[:, :, min(target // t, x.shape[2] - 1)]


# --------------------------------------------------------------------------- weights


def read_checkpoint(path: str | Path) -> dict[str, torch.Tensor]:
    """A state dict from a local file (``.pt``/``.pth``), unwrapping ``state_dict``/``model`` keys
    and a DataParallel ``module.`` prefix. Errors name the file."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"pretrained checkpoint {p} not found (expected a local .pt/.pth file, "
                                f"or one of the named weights)")
    try:
        obj = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unreadable file gets the same clear message
        raise ValueError(f"pretrained checkpoint {p} could not be read as a PyTorch state dict: {e}") from None
    for key in ("state_dict", "model"):
        if isinstance(obj, dict) and key in obj and isinstance(obj[key], dict):
            obj = obj[key]
    if not isinstance(obj, dict):
        raise ValueError(f"pretrained checkpoint {p} does not hold a state dict")
    return {k.removeprefix("module."): v for k, v in obj.items()}


def load_into(module: nn.Module, state: dict[str, torch.Tensor], source: str, ignore: tuple[str, ...] = ()) -> None:
    """Load ``state`` into ``module`` strictly, except keys starting with one of ``ignore``."""
    state = {k: v for k, v in state.items() if not k.startswith(ignore) and not k.endswith("num_batches_tracked")}
    own = {k for k in module.state_dict() if not k.startswith(ignore) and not k.endswith("num_batches_tracked")}
    missing = sorted(own - set(state))
    unexpected = sorted(set(state) - own)
    if missing or unexpected:
        raise ValueError(
            f"pretrained weights {source} do not match {type(module).__name__}: "
            f"missing {missing[:5]}{'...' if len(missing) > 5 else ''}, "
            f"unexpected {unexpected[:5]}{'...' if len(unexpected) > 5 else ''}"
        )
    module.load_state_dict(state, strict=False)


def torchvision_state(weights, family: str) -> dict[str, torch.Tensor]:
    """A torchvision weights enum's state dict from the torch hub cache, downloading if absent.

    Without network access (or with a broken download) this raises one line that names the file
    to place and where, instead of urllib's traceback.
    """
    from urllib.parse import urlparse

    from torch.hub import get_dir

    cached = Path(get_dir()) / "checkpoints" / Path(urlparse(weights.url).path).name
    try:
        return weights.get_state_dict(progress=False, check_hash=True)
    except Exception as e:  # noqa: BLE001 - URLError, HTTPError, hash mismatch, truncated file ...
        raise ValueError(
            f"{family}: could not load {weights} ({type(e).__name__}: {str(e)[:120]}). Place the file "
            f"{cached.name} at {cached} (the torch hub cache; set TORCH_HOME to move it), or give a local "
            f"checkpoint path as pretrained:, or pretrained: none") from None


def resolve_weights(pretrained: str, named: Mapping[str, object], family: str) -> object | str | None:
    """``none`` -> None; a known name -> its torchvision weights enum; otherwise a local path."""
    if pretrained == "none":
        return None
    if pretrained in named:
        return named[pretrained]
    if Path(pretrained).suffix in (".pt", ".pth", ".pkl", ".bin") or "/" in pretrained:
        return pretrained
    raise ValueError(
        f"{family}: pretrained {pretrained!r} is not known; expected one of "
        f"{', '.join(['none', *named])} or a path to a local checkpoint"
    )


def to_channels_last(model: nn.Module) -> nn.Module:
    """Put every 2-D convolution's weight in channels_last (NHWC) memory format, in place.

    Convolutions then produce NHWC maps, which oneDNN (CPU) and cuDNN (GPU) run faster; 3-D
    convolutions, GRUs and linear layers are left as they are (``model.to(memory_format=...)``
    refuses models that hold non-4-D weights).
    """
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            m.weight.data = m.weight.data.contiguous(memory_format=torch.channels_last)
    return model
