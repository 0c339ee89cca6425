"""Model components, grouped by role (as mmdetection groups backbones / necks / heads / losses):

    backbones/     visual encoders: spatial (2D) and temporal (3D, frame-difference, video transformer)
    text/          text encoders: GloVe + GRU, LSTM, Conv1d, RoBERTa
    cross_modal/   language acting inside an encoder: CMAM, LBDT's bridge, vision-language attention
    fusions/       spatial-temporal fusion of one decoder stage: add, max, LGFS, concat, BCA
    transformers/  attention blocks a decoder is built from: multi-scale deformable attention
    heads/         prediction heads: dynamic (conditional) mask convolutions, cross-modal FPN
    decoders/      stage maps -> masks: CSTM's Eq. 9 and released decoder, LBDT, ACGA, ReferFormer
    losses/        training losses: CSTM / ACGA / LBDT segmentation losses, ReferFormer's criterion
    layouts/       released checkpoint layouts mapped onto lvas keys

``base.py`` (the encoder contract), ``coords.py`` and ``model.py`` (the assembly) stay here. Every
component module is imported here explicitly so that each registry is complete as soon as
``lvas.models`` is imported."""

from lvas.models import base, coords  # noqa: F401
from lvas.models import backbones, text, cross_modal, fusions, transformers, heads, decoders, losses, layouts  # noqa: F401
from lvas.models.model import SegmentationModel, build_model  # noqa: F401
