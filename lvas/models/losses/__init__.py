"""Training losses (``train.loss``), one registered entry per method."""

from lvas.models.losses import segmentation, referformer  # noqa: F401
from lvas.models.losses.segmentation import build_loss  # noqa: F401
