"""Visual encoders (``model.spatial``, ``model.temporal``): stage maps with declared channels and strides."""

from lvas.models.backbones import spatial, temporal, acga, frame_difference, video_swin  # noqa: F401
