"""The experiment config's schema: what every run has (model mode, clip geometry, optimisation,
tracking) and the slots where it picks a component (lvas.convert.Component). No method's settings
live here: each component declares its own (lvas.registry)."""

from __future__ import annotations

import re
import typing
from dataclasses import dataclass, field
from typing import Any, Literal

from lvas import settings as S
from lvas.convert import Component, slot, used_if


# Constrained types are named here, at module level: a dataclass's annotations are evaluated with the
# class's namespace as globals, where a lambda written inline would not see this module's names.


def _range(lo: int, hi: int, auto: bool = False) -> Any:
    text = f"{'auto or ' if auto else ''}an integer from {lo} to {hi}"
    return typing.Annotated[int, S.Check(lambda v: lo <= v <= hi, text)]


def _device_ok(v: str) -> bool:
    return re.fullmatch(DEVICE_NAMES, v) is not None


def _name_ok(v: str) -> bool:
    return name_problem(v) is None


DEVICE_NAMES = r"auto|cpu|mps|cuda(:\d+)?"  # what train.device (and lvas bench --device) accept
VocabSize = typing.Annotated[int, S.Check(lambda v: v > 1, "an integer > 1")]
Frames, FrameStride, FrameSize = _range(1, 4096), _range(1, 10_000), _range(32, 8192)
Workers = _range(0, 256, auto=True) | Literal["auto"]
Threads = _range(1, 1024, auto=True) | Literal["auto"]
Epochs, BatchSize, Overlays = _range(1, 100_000), _range(1, 65_536), _range(0, 1000)
Accumulate = _range(1, 65_536, auto=True) | Literal["auto"]
Device = typing.Annotated[str, S.Check(_device_ok, "auto, cpu, mps, cuda or cuda:N")]
RunName = typing.Annotated[str, S.Check(_name_ok, lambda v: (name_problem(v) or "").removeprefix("expected ")
                                        + (f" (it has {len(v)})" if len(v) > 200 else ""))]
Seed = typing.Annotated[int, S.Check(lambda v: 0 <= v < 2**32, "an integer from 0 to 2**32 - 1")]



@dataclass
class EncoderKeys:
    """``trainable``: parameter-name prefixes that are trained (e.g. ACGA's ``[stages.3.Mixed_4f.]``);
    [] trains all; frozen BatchNorm layers keep their running statistics."""

    trainable: list[str] = field(default_factory=list)


@dataclass
class TextKeys:
    """How queries become word ids and vectors (the text encoder's own settings are its entry's).

    ``embedding``: ``learned`` (random init), ``glove`` (GloVe init, trained) or ``glove_frozen`` (a
    fixed table, as the releases); ``glove_path``; ``oov``: vectors of words GloVe lacks, ``random``
    or ``zero`` (the releases); ``tokenizer``: ``words``, ``released`` (punctuation kept as tokens)
    or ``subword`` (a pretrained language model's own tokenizer, read from ``tokenizer_path``; see
    lvas/data/vocab.py); ``max_words`` per query (tokens for ``subword``); ``vocab_size`` when no
    dataset gives a vocabulary (FLOP counts); ``embed_dim`` of the word vectors."""

    embedding: Literal["learned", "glove", "glove_frozen"] = "learned"
    glove_path: str | None = used_if(lambda t: t.embedding != "learned")
    oov: Literal["random", "zero"] = used_if(lambda t: t.embedding != "learned", "random")
    tokenizer: Literal["words", "released", "subword"] = "words"
    tokenizer_path: str | None = used_if(lambda t: t.tokenizer == "subword")
    max_words: S.PositiveInt = 20
    vocab_size: VocabSize = 10000
    embed_dim: S.PositiveInt = 300


@dataclass
class StageKeys:
    """``stages``: the encoder stages (1..5) after which the component acts; [] = none."""

    stages: S.Stages = field(default_factory=list)


@dataclass
class ModelConfig:
    mode: Literal["spatial", "temporal", "both"] = "both"
    spatial: Component = slot("spatial", "iv3", EncoderKeys)
    temporal: Component = slot("temporal", "i3d", EncoderKeys)
    text: Component = slot("text", "gru", TextKeys)
    cmam: Component = slot("cross_modal", "cmam_eq6", StageKeys)
    bridge: Component = slot("bridge", "lbdt", StageKeys)
    fusion: Component = slot("fusion", "lgfs")
    decoder: Component = slot("decoder", "eq9")
    input: Component = slot("input", "stretch", help="frame geometry, pixel normalisation, clip sampling")


@dataclass
class DataConfig:
    """Dataset and clip geometry: ``frames`` frames every ``frame_stride`` around the target, resized
    and padded to ``size`` x ``size``."""

    dataset: Component = slot("dataset", "synth")
    root: str = "data/synth"
    frames: Frames = 8
    frame_stride: FrameStride = 2
    size: FrameSize = 320
    train_split: str = "train"
    test_split: str = "test"
    skip_bad: bool = False
    workers: Workers = "auto"  # DataLoader processes; auto: see lvas.engine.resources
    evaluators: list[str] = field(default_factory=list)  # registered evaluators besides the dataset's own


@dataclass
class TrainConfig:
    """Optimisation (paper §4.2: Adam, lr 5e-4, batch 8, 12 epochs, lr / 10 every 8 epochs).

    ``recipe``: ``joint``, or ``two_stage`` (the paper: each branch alone, then a fresh decoder on the
    frozen branches). ``select``: which epoch becomes the model: ``last`` (the paper trains a fixed
    schedule) or ``best_val`` (on a validation split carved from the training videos). The test split
    is only read to score the selected model.
    """

    recipe: Component = slot("recipe", "joint")
    loss: Component = slot("loss", "cstm", help="training loss (lvas list loss)")
    optimizer: Component = slot("optimizer", "adam")
    scheduler: Component = slot("scheduler", "step")
    select: Component = slot("selection", "last")
    protocol: Component = slot("protocol", "paper", help="how predictions are scored (lvas list protocol)")
    epochs: Epochs = 12
    # the global batch: every optimiser step sees batch_size samples, whatever the number of processes
    # (lvas.engine.batching); each process takes batch_size / W, in `accumulate` micro-batches of at
    # most `max_per_device_batch` (0: no cap)
    batch_size: BatchSize = 8
    accumulate: Accumulate = "auto"
    max_per_device_batch: S.NonNegativeInt = 0
    sync_bn: bool = True  # under DDP, BatchNorm statistics over the global batch (lvas.engine.syncbn)
    freeze_bn: bool = False  # every BatchNorm uses its running statistics and is not trained
    drop_last: bool = False  # drop each epoch's last incomplete training batch (LBDT's release does)
    lr: S.PositiveFloat = 5e-4
    # the visual encoders' learning rate relative to lr (DETR-style models: ReferFormer trains its
    # backbone at 0.5 x, --lr_backbone 5e-5 beside --lr 1e-4)
    encoder_lr_mult: S.NonNegativeFloat = 1.0
    grad_clip: S.NonNegativeFloat = 10.0
    init_checkpoint: str | None = None
    eval_only: bool = False
    device: Device = "auto"
    threads: Threads = "auto"  # torch CPU threads; auto: see lvas.engine.resources
    # bf16 autocast: auto = on CUDA only (these CPUs have no bf16 arithmetic: slower, other numbers);
    # bf16 = on every device, CPU included (losses in float32); off
    amp: Literal["auto", "bf16", "off"] = "auto"
    # float64 runs the whole model and loss in double precision (CPU): slow, but a training's numbers
    # then depend on the CPU's kernels only at ~1e-12 instead of ~1e-3 (the golden tests use it)
    precision: Literal["float32", "float64"] = "float32"
    channels_last: bool = True
    limit_batches: S.NonNegativeInt = 0
    out_dir: str = "runs"


@dataclass
class TrackingConfig:
    """MLflow: ``uri`` (default ``sqlite:///mlflow.db`` in the working directory; the
    MLFLOW_TRACKING_URI environment variable and ``--tracking-uri`` take precedence)."""

    uri: str | None = None
    experiment: str | None = None
    system_metrics: bool = True
    log_checkpoint: bool = True
    overlays: Overlays = 4


@dataclass
class ExperimentConfig:
    name: RunName = "experiment"
    seed: Seed = 0
    imports: list[str] = field(default_factory=list)  # the user's modules / .py files registering components
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
