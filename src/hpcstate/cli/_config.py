"""The configuration file: the loader lives in :mod:`hpcstate.config` (shared with
``Tracker.from_config``); the CLI's names are re-exported here."""

from __future__ import annotations

from hpcstate.config import (
    BACKEND_ENV as BACKEND_ENV,
)
from hpcstate.config import (
    CONFIG_ENV as CONFIG_ENV,
)
from hpcstate.config import (
    DB_ENV as DB_ENV,
)
from hpcstate.config import (
    LOCAL as LOCAL,
)
from hpcstate.config import (
    Config as Config,
)
from hpcstate.config import (
    ConfigLocation as ConfigLocation,
)
from hpcstate.config import (
    TrackerSettings as TrackerSettings,
)
from hpcstate.config import (
    expand_home as expand_home,
)
from hpcstate.config import (
    load_config as load_config,
)
from hpcstate.config import (
    locate as locate,
)
from hpcstate.config import (
    parse_config as parse_config,
)
