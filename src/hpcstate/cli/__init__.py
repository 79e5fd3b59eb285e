"""The ``hpcstate`` command line. ``main(argv)`` returns the exit status.

Pure parts (configuration, exit statuses, the JSON record, ``decode``, ``--once``)
live in their own modules; ``_commands`` is where the runtime is used.
"""

from ._app import main as main
from ._app import run_cli as run_cli

__all__ = ["main", "run_cli"]
