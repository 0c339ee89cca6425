"""Which epoch becomes the model (``train.select``): never chosen on the test split.

``last`` keeps the last epoch (the paper trains a fixed schedule). ``best_val`` holds out
``val_fraction`` of the training videos (the same for every seed, recorded as ``val_videos.json``),
scores them after every epoch and keeps the best ``monitor``.
"""

from __future__ import annotations

import random

from torch.utils.data import Subset

from lvas import catalogue
from lvas.config import ConfigError
from lvas.registry import SELECTORS
from lvas.settings import Fraction, MetricName, NonNegativeInt


@SELECTORS.register("last")
class Last:
    """The last epoch (the paper trains a fixed schedule); no validation split."""

    monitor = None

    def carve(self, train_set):
        """(training set, validation set or None, held-out videos)."""
        return train_set, None, []

    def better(self, metrics: dict, chosen: dict, epoch: int, epochs: int) -> bool:
        return epoch == epochs - 1


@SELECTORS.register("best_val")
class BestOnValidation:
    """The best ``monitor`` on ``val_fraction`` of the training videos, held out of training."""

    def __init__(self, *, monitor: MetricName = "mIoU", val_fraction: Fraction = 0.1,
                 val_samples: NonNegativeInt = 0) -> None:
        self.monitor, self.fraction, self.samples = monitor, val_fraction, val_samples
        self.sign = 1 if catalogue.get(monitor).goal == "maximize" else -1

    def carve(self, train_set):
        videos = train_set.videos()
        held = set(validation_videos(videos, self.fraction))
        train = Subset(train_set, [i for i, v in enumerate(videos) if v not in held])
        val_idx = [i for i, v in enumerate(videos) if v in held]
        if self.samples:
            val_idx = val_idx[: self.samples]
        return train, Subset(train_set, val_idx), sorted(held)

    def better(self, metrics: dict, chosen: dict, epoch: int, epochs: int) -> bool:
        score = metrics.get(self.monitor, float("nan"))
        best = chosen.get(f"val/{self.monitor}")
        return not chosen or (score == score and (best is None or self.sign * score > self.sign * best))


def validation_videos(videos: list[str], fraction: float) -> list[str]:
    """The training videos held out for validation: a fixed, seed-independent choice (sorted
    names shuffled with seed 0), at least one video, never all of them."""
    names = sorted(set(videos))
    if len(names) < 2:
        raise ConfigError("train.select: best_val needs a training split of at least 2 videos to hold some out")
    k = min(len(names) - 1, max(1, round(fraction * len(names))))
    random.Random(0).shuffle(names)
    return sorted(names[:k])


def build_selector(cfg):
    return SELECTORS.build(cfg.train.select.name, cfg.train.select.settings())
