"""``python -m newsrank`` (and ``torchrun ... -m newsrank train ...``) runs the command line."""

import sys

from .cli import main

sys.exit(main())
