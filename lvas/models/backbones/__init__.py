"""Visual encoders (``model.spatial``, ``model.temporal``): stage maps with declared channels and strides."""

from lvas.models.backbones import spatial, temporal, acga, frame_difference  # noqa: F401
