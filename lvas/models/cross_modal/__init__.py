"""Language acting inside the visual encoders (``model.cmam``, ``model.bridge``)."""

from lvas.models.cross_modal import cmam, lbdt_bridge, vision_language  # noqa: F401
