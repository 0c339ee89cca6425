"""Decoders (``model.decoder``): the stage maps of one or two streams -> mask logits."""

from lvas.models.decoders import cstm, lbdt, acga, referformer  # noqa: F401
