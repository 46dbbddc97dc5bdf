"""``python -m lincheck FILE...``: see :mod:`lincheck.cli`."""

import sys

from lincheck.cli import main

sys.exit(main())
