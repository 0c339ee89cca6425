"""Model components (CSTM, ACGA, LBDT). Every component module is imported here explicitly so that each
registry is complete as soon as ``lvas.models`` is imported."""

from lvas.models import coords, base  # noqa: F401
from lvas.models import spatial  # noqa: F401  registers r50, iv3, tiny2d
from lvas.models import temporal  # noqa: F401  registers i3d, i3d_released, s3d, tiny3d
from lvas.models import text  # noqa: F401  registers gru, gru_released
from lvas.models import fusion  # noqa: F401  registers add, max, lgfs, concat
from lvas.models import cmam, decoder, model  # noqa: F401  registers cmam_*, eq9/released
from lvas.models import lbdt, acga  # noqa: F401  registers LBDT's and ACGA's parts
from lvas.models import released, released_lbdt, released_acga  # noqa: F401  registers the checkpoint layouts
from lvas.models.model import SegmentationModel, build_model  # noqa: F401
