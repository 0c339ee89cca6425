"""Text encoders (``model.text``): per-word features and a sentence vector."""

from lvas.models.text import glove, gru, lstm, conv1d, roberta  # noqa: F401
