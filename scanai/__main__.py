"""``python -m scanai`` = the ``scanai`` command."""

import sys

from scanai.cli import main

sys.exit(main())
