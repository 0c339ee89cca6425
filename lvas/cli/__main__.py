"""``python -m lvas.cli``: what sweep workers and torchrun ranks start."""

import sys

from lvas.cli import main

sys.exit(main())
