"""Released checkpoint layouts (``lvas list layout``), each mapped key by key onto lvas's model."""

from lvas.models.layouts import base, cstm, lbdt, acga  # noqa: F401
