"""``python -m qmlx``: the ``qmlx`` command."""

import sys

from qmlx.cli import main

sys.exit(main())
