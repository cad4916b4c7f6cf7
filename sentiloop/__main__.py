"""``python -m sentiloop`` = the ``sentiloop`` command."""

import sys

from sentiloop.cli import main

sys.exit(main())
