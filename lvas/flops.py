"""Counting the cost of a model: GMACs (papers' "GFLOPs"), 2-per-MAC GFLOPs, parameters.

Counted with ``torch.utils.flop_counter.FlopCounterMode`` on the ``meta`` device (no memory,
no arithmetic, under a second for the paper model). FlopCounterMode counts 2 FLOPs per
multiply-add and ignores element-wise ops; papers (and fvcore/thop/torchvision) count one
multiply-add as one "FLOP", i.e. MACs. We report both, named.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

PARTS = ("spatial encoder", "temporal encoder", "text", "CMAM", "fusion + decoder")


@dataclass
class FlopReport:
    """Cost of one forward pass on one clip."""

    frames: int
    size: int
    macs: int
    params: int
    parts: dict[str, int] = field(default_factory=dict)  # part -> MACs
    part_params: dict[str, int] = field(default_factory=dict)
    branch_params: dict[str, int] = field(default_factory=dict)  # branch -> encoder + its CMAMs + its text
    trainable: int = 0  # parameters the recipe trains (frozen encoders' stages, a frozen language model left out)

    @property
    def gmacs(self) -> float:
        return self.macs / 1e9

    @property
    def gflops(self) -> float:
        return 2 * self.macs / 1e9

    def spatial_part(self) -> int:
        """MACs of the spatial side alone: spatial encoder + its CMAMs + its text encoder."""
        return self.parts.get("spatial encoder", 0) + self.parts.get("CMAM spatial", 0) + self.parts.get(
            "text spatial", 0)

    def spatial_part_params(self) -> int:
        """Parameters of the same modules as :meth:`spatial_part`."""
        return self.branch_params.get("spatial", 0)


def count_macs(module: nn.Module, *inputs: torch.Tensor) -> int:
    """Multiply-adds of ``module(*inputs)`` (FlopCounterMode's count / 2)."""
    with FlopCounterMode(display=False) as fc:
        module(*inputs)
    return fc.get_total_flops() // 2


def _sum(counts: dict, key: str) -> int:
    return sum(counts.get(key, {}).values())


def measure_model(model: nn.Module, frames: int = 8, size: int = 320, words: int = 20) -> FlopReport:
    """Count a model's MACs per part for one clip of ``frames`` x ``size`` x ``size``.

    The model may live on the ``meta`` device (recommended: see :func:`measure_config`).
    """
    device = next(model.parameters()).device
    clip = torch.zeros(1, 3, frames, size, size, device=device)
    tokens = torch.ones(1, words, dtype=torch.long, device=device)
    mask = torch.ones(1, words, dtype=torch.bool, device=device)
    model.eval()
    lstm_macs: dict[str, int] = {}  # torch's counter does not see the fused LSTM kernels: count them here

    def lstm_hook(name: str):
        def hook(m: nn.LSTM, args, out) -> None:
            x = args[0]
            steps = x.shape[0] * x.shape[1]  # batch x time
            macs, cin = 0, m.input_size
            for _ in range(m.num_layers):
                macs += steps * 4 * m.hidden_size * (cin + m.hidden_size) * (2 if m.bidirectional else 1)
                cin = m.hidden_size * (2 if m.bidirectional else 1)
            lstm_macs[name] = lstm_macs.get(name, 0) + macs
        return hook

    handles = [m.register_forward_hook(lstm_hook(n)) for n, m in model.named_modules() if isinstance(m, nn.LSTM)]
    try:
        # grad stays on: on the meta device the graph costs nothing, and the counter's module tracker
        # cannot hook a parameter's view made under no_grad (ReferFormer's expanded query embeddings)
        with FlopCounterMode(display=False, depth=None) as fc:
            model(clip, tokens, mask)
    finally:
        for h in handles:
            h.remove()
    counts = {k: dict(v) for k, v in fc.get_flop_counts().items()}
    root = type(model).__name__
    for name, macs in lstm_macs.items():  # as 2 x MACs under the module and every parent, like the counter
        parts_of = name.split(".")
        for i in range(len(parts_of) + 1):
            key = ".".join([root, *parts_of[:i]])
            counts.setdefault(key, {})["lstm"] = counts.get(key, {}).get("lstm", 0) + 2 * macs
    parts: dict[str, int] = {}
    branch_params: dict[str, int] = {}
    cmam_total = 0
    modules = dict(model.named_modules())
    for branch in ("spatial", "temporal"):
        # the model runs each encoder stage by stage (CMAMs and bridges between them): count the stages
        enc = model.encoders().get(branch)
        enc_macs = sum(_sum(counts, f"{root}.{branch}.stages.{i}") for i in range(len(enc.stages))) if enc else 0
        cmams = model.cmam[branch] if branch in model.cmam else {}
        stages = [f"cmam.{branch}.{s}" for s in cmams]
        cmam = sum(_sum(counts, f"{root}.{name}") for name in stages)
        cmam_total += cmam
        text_mods = [f"text.{k.rstrip('.')}" for k in model.text.branch_keys(branch)] \
            if getattr(model, "text", None) is not None and branch in model.encoders() else []
        parts[f"{branch} encoder"] = enc_macs // 2
        parts[f"CMAM {branch}"] = cmam // 2
        parts[f"text {branch}"] = sum(_sum(counts, f"{root}.{name}") for name in text_mods) // 2
        # parameters over exactly the modules whose MACs are counted above (the encoder's stages, not
        # the whole encoder module: a classifier or auxiliary head it keeps would count params, no MACs)
        enc_mods = [f"{branch}.stages.{i}" for i in range(len(enc.stages))] if enc else []
        branch_params[branch] = sum(_params(modules.get(n)) for n in [*enc_mods, *stages, *text_mods])
    parts["text"] = _sum(counts, f"{root}.text") // 2
    parts["CMAM"] = cmam_total // 2
    parts["bridge"] = sum(_sum(counts, f"{root}.bridge.{s}") for s in getattr(model, "bridge", {})) // 2
    parts["fusion + decoder"] = _sum(counts, f"{root}.decoder") // 2
    total = (fc.get_total_flops() + 2 * sum(lstm_macs.values())) // 2
    part_params = {
        "spatial encoder": _params(getattr(model, "spatial", None)),
        "temporal encoder": _params(getattr(model, "temporal", None)),
        "text": _params(getattr(model, "text", None)),
        "CMAM": _params(getattr(model, "cmam", None)),
        "bridge": _params(getattr(model, "bridge", None)),
        "fusion + decoder": _params(getattr(model, "decoder", None)),
    }
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return FlopReport(frames, size, total, _params(model), parts, part_params, branch_params, trainable)


def _params(m: nn.Module | None) -> int:
    return 0 if m is None else sum(p.numel() for p in m.parameters())


def measure_config(cfg, frames: int | None = None, size: int | None = None) -> FlopReport:
    """Build the config's model on the meta device (no weights) and count it."""
    from lvas.models import build_model

    frames = frames or cfg.data.frames
    size = size or cfg.data.size
    with torch.device("meta"):
        model = build_model(cfg, load_weights=False)
    return measure_model(model, frames, size)


def cache_dir() -> Path:
    """Where lvas keeps derived, re-computable files: ``$LVAS_CACHE`` or ``~/.cache/lvas``."""
    return Path(os.environ.get("LVAS_CACHE") or Path.home() / ".cache" / "lvas")


@functools.lru_cache(maxsize=1)
def _source_digest() -> str:
    """Digest of the code that decides a count (the model definitions and this file)."""
    import hashlib

    root = Path(__file__).parent
    h = hashlib.sha256(torch.__version__.encode())
    for f in sorted([*root.glob("models/**/*.py"), root / "flops.py", root / "registry.py"]):
        h.update(str(f.relative_to(root)).encode() + f.read_bytes())
    return h.hexdigest()[:16]


def measure_config_cached(cfg, frames: int | None = None, size: int | None = None) -> FlopReport:
    """:func:`measure_config`, remembered in ``cache_dir()/flops`` as JSON, keyed by the model config,
    the clip size and a digest of the model code: every trial of a sweep with one model counts it once
    (a count took 0.27-0.52 s per trial)."""
    import dataclasses
    import json

    from lvas.config import config_hash, to_dict

    frames, size = frames or cfg.data.frames, size or cfg.data.size
    key = config_hash({"model": to_dict(cfg.model), "frames": frames, "size": size, "code": _source_digest()}, 20)
    path = cache_dir() / "flops" / f"{key}.json"
    if path.is_file():
        try:
            return FlopReport(**json.loads(path.read_text()))
        except (ValueError, TypeError):  # a damaged cache file is recomputed, never trusted
            pass
    report = measure_config(cfg, frames, size)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        from lvas.liveness import write_atomic

        write_atomic(path, json.dumps(dataclasses.asdict(report)))
    except OSError:  # a read-only home: the count is still right, just not remembered
        pass
    return report


def format_report(name: str, r: FlopReport) -> str:
    """The text ``lvas flops`` prints."""
    lines = [
        f"{name}: one clip of {r.frames}x{r.size}x{r.size}",
        f"  {'part':<22}{'GMACs':>10}{'GFLOPs(2/MAC)':>15}{'params (M)':>12}",
    ]
    for part in PARTS:
        m = r.parts.get(part, 0)
        lines.append(f"  {part:<22}{m / 1e9:>10.2f}{2 * m / 1e9:>15.2f}{r.part_params.get(part, 0) / 1e6:>12.2f}")
    lines.append(f"  {'total':<22}{r.gmacs:>10.2f}{r.gflops:>15.2f}{r.params / 1e6:>12.2f}")
    sp = r.spatial_part()
    lines.append(f"  spatial part alone (encoder + its CMAMs + its text encoder): {sp / 1e9:.2f} GMACs, "
                 f"{r.spatial_part_params() / 1e6:.2f} M params")
    lines.append("  (GMACs: one multiply-add = 1, the convention of papers' \"GFLOPs\"; GFLOPs(2/MAC) = 2 x GMACs)")
    return "\n".join(lines)
