"""``python -m hpcstate``: the same as the ``hpcstate`` command."""

import sys

from hpcstate.cli import main

sys.exit(main())
