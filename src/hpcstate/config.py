"""The configuration file the ``hpcstate`` command and ``Tracker.from_config`` read.

::

    # $HPCSTATE_CONFIG, else $XDG_CONFIG_HOME/hpcstate/config.toml (--config FILE wins)
    default_backend = "cluster"
    database = "~/.local/state/hpcstate/state.db"

    [backends.cluster]
    kind = "slurm"
    host = "alice@login.example.org:22"
    known_hosts = "~/.ssh/known_hosts"     # any other key is a backend option

    [tracker]                              # the tracker's cadence, each with its unit
    grace = "10m"
    queue_interval = "60s"

Environment: ``HPCSTATE_BACKEND`` overrides ``default_backend``, ``HPCSTATE_DB``
overrides ``database``. With no file at all, the embedded ``local`` backend is the
default. Every installed backend kind is usable by its name with its default options
(``slurm``, ``flux``, ``k8s``...) without a table; a table only changes options or adds
a remote host.

:func:`parse_config` is pure (text and environment in). :func:`load_config` finds and
reads the file. Every error is a :class:`hpcstate.ConfigError` with one line naming
the file, the key, what was expected and what was found.
"""

from __future__ import annotations

import importlib
import math
import os
import re
import sys
from collections.abc import Callable, Collection, Mapping
from datetime import timedelta
from typing import Any, Final

from attrs import field, frozen

from hpcstate._errors import BackendNotFound, ConfigError
from hpcstate.backend import BackendConfig
from hpcstate.options import structure_options, toml_type_name

__all__ = [
    "BACKEND_ENV",
    "CONFIG_ENV",
    "DB_ENV",
    "LOCAL",
    "TRACKER_KEYS",
    "Config",
    "ConfigLocation",
    "TrackerSettings",
    "load_config",
    "locate",
    "parse_config",
    "parse_duration",
]

CONFIG_ENV: Final = "HPCSTATE_CONFIG"
BACKEND_ENV: Final = "HPCSTATE_BACKEND"
DB_ENV: Final = "HPCSTATE_DB"
LOCAL: Final = "local"

_TOP_LEVEL_KEYS: Final = ("default_backend", "database", "backends", "tracker")
# A backend name is used in run references (NAME:NATIVE_ID): no colon, no spaces.
_NAME: Final = re.compile(r"\A[A-Za-z0-9][A-Za-z0-9_.-]*\Z")

# -- durations ------------------------------------------------------------------------------

_UNITS: Final = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_DURATION_PARTS: Final = re.compile(r"([0-9]+(?:\.[0-9]+)?)([smhdw])")
_CLOCK: Final = re.compile(r"\A(?:([0-9]+)-)?(?:([0-9]+):)?([0-9]+):([0-9]+)\Z")
_NUMBER: Final = re.compile(r"\A[0-9]+(?:\.[0-9]+)?\Z")
#: The longest duration anything accepts (timedelta's own limit is ~2.7 million years).
MAX_DURATION: Final = timedelta(days=365 * 1000)
_EXAMPLES: Final = "e.g. 90s, 15m, 1h30m, 2d, 1:30:00"


def _bounded(seconds: float, text: str) -> timedelta:
    if not math.isfinite(seconds) or seconds > MAX_DURATION.total_seconds():
        raise ValueError(f"duration {text!r} is too long (at most {MAX_DURATION.days} days)")
    return timedelta(seconds=seconds)


def parse_duration(text: str) -> timedelta:
    """``90``, ``90s``, ``1.5m``, ``1h30m``, ``2d``, ``1w``, ``1:30:00``, ``2-00:00:00``.

    A bare number is seconds. ``D-HH:MM:SS`` / ``HH:MM:SS`` / ``MM:SS`` as Slurm writes
    them. Raises ValueError (never OverflowError) for anything else, or for a duration
    longer than :data:`MAX_DURATION`.
    """
    value = text.strip().lower()
    if not value:
        raise ValueError(f"expected a duration ({_EXAMPLES})")
    if len(value) > 64:
        raise ValueError(f"cannot read duration {text[:40]!r}...: too long ({_EXAMPLES})")
    if _NUMBER.match(value):
        return _bounded(float(value), text)
    clock = _CLOCK.match(value)
    if clock is not None:
        # "MM:SS" leaves the hours group empty: the two numbers are minutes and seconds.
        days, hours, minutes, seconds = (int(g) if g else 0 for g in clock.groups())
        return _bounded(float(days * 86400 + hours * 3600 + minutes * 60 + seconds), text)
    position = 0
    total = 0.0
    for match in _DURATION_PARTS.finditer(value):
        if match.start() != position:
            break
        total += float(match.group(1)) * _UNITS[match.group(2)]
        position = match.end()
    if position != len(value) or position == 0:
        raise ValueError(f"cannot read duration {text!r}: expected {_EXAMPLES}")
    return _bounded(total, text)


# -- the tracker's cadence ------------------------------------------------------------------

#: ``[tracker]`` keys: name -> (what it is, whether the Tracker takes a timedelta).
TRACKER_KEYS: Final[Mapping[str, tuple[str, bool]]] = {
    "grace": ("how long a settling job waits for confirmation", True),
    "fast_interval": ("the fastest poll interval", False),
    "max_interval": ("the slowest poll interval of a quiet queue", False),
    "max_error_interval": ("the slowest retry interval of an unreachable backend", False),
    "queue_interval": ("the queue safety net of jobs that report their own end", False),
    "accounting_lag": ("how long after a job's end accounting is first asked", False),
    "accounting_interval": ("the least time between two accounting calls", False),
    "late_check_interval": ("how often an unconfirmed verdict is re-checked", False),
    "late_check_window": ("how long an unconfirmed verdict is re-checked", True),
    "retention": ("finished runs older than this are pruned", True),
    "lease_ttl": ("how long a poller's lease lasts without renewal", False),
    "wake_check_interval": ("how often the store is checked for others' changes", False),
}


def _durations(value: Mapping[str, timedelta]) -> Mapping[str, timedelta]:
    return dict(value)


@frozen(kw_only=True)
class TrackerSettings:
    """The ``[tracker]`` table: only the keys the file set (the Tracker's defaults hold
    for the others). Every value is a duration."""

    values: Mapping[str, timedelta] = field(factory=dict, converter=_durations)

    def kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``Tracker(...)``: timedeltas or seconds as it expects."""
        return {
            key: value if TRACKER_KEYS[key][1] else value.total_seconds()
            for key, value in self.values.items()
        }


def _tracker(where: str, table: object) -> TrackerSettings:
    if not isinstance(table, dict):
        raise ConfigError(
            f'{where}: tracker: expected a table ([tracker] with grace = "10m" ...), '
            f"got {toml_type_name(table)} {_shown(table)}"
        )
    values: dict[str, timedelta] = {}
    for key, value in table.items():
        if key not in TRACKER_KEYS:
            raise ConfigError(
                f"{where}: tracker.{key}: unknown key (known keys: {', '.join(TRACKER_KEYS)})"
            )
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            raise ConfigError(
                f"{where}: tracker.{key}: expected a duration with its unit (e.g. {key} = "
                f'"30s"), got {toml_type_name(value)} {_shown(value)}'
            )
        try:
            if isinstance(value, str):
                duration = parse_duration(value)
            elif not math.isfinite(value) or value < 0:
                raise ValueError(f"{value!r} is not a duration >= 0")
            else:
                duration = _bounded(float(value), str(value))
        except ValueError as exc:
            raise ConfigError(f"{where}: tracker.{key}: {exc}") from None
        values[key] = duration
    return TrackerSettings(values=values)


# -- the configuration ----------------------------------------------------------------------


def _mapping(value: Mapping[str, BackendConfig]) -> Mapping[str, BackendConfig]:
    return dict(value)


def _installed() -> list[str]:
    from hpcstate import registry

    return registry.available()


@frozen(kw_only=True)
class Config:
    """What the CLI (and ``Tracker.from_config``) runs with. ``database`` None means the
    runtime's default path."""

    path: str | None = None  # the file it was read from; None when there was none
    backends: Mapping[str, BackendConfig] = field(converter=_mapping)
    default_backend: str = LOCAL
    database: str | None = None
    tracker: TrackerSettings = field(factory=TrackerSettings)

    def names(self) -> list[str]:
        """Every backend name usable here: the configured ones and the installed kinds."""
        return sorted(set(self.backends) | set(_installed()))

    def backend(self, name: str | None) -> BackendConfig:
        """The named backend (the default one for None). A name with no table that is an
        installed backend kind is that kind with its default options; anything else is
        a ConfigError naming the choices."""
        chosen = self.default_backend if name is None else name
        found = self.backends.get(chosen)
        if found is not None:
            return found
        if chosen in _installed():
            return BackendConfig(name=chosen, kind=chosen)
        from hpcstate import registry

        if chosen in registry.FIRST_PARTY:
            raise ConfigError(
                f"the {chosen} backend is not installed: {registry.install_hint(chosen)} "
                f"(usable here: {', '.join(self.names())})"
            )
        raise ConfigError(
            f"no backend named {chosen!r}: it is neither configured nor an installed kind "
            f"(usable: {', '.join(self.names())}); add a [backends.{chosen}] table with its "
            f"kind to {self.path or 'the config file (~/.config/hpcstate/config.toml)'}"
        )


@frozen(kw_only=True)
class ConfigLocation:
    """Which file to read, and whether its absence is an error."""

    path: str
    required: bool  # named explicitly (--config or $HPCSTATE_CONFIG): it must exist
    origin: str  # "--config", "$HPCSTATE_CONFIG" or "the default location"


def locate(env: Mapping[str, str], explicit: str | None = None) -> ConfigLocation | None:
    """Where the configuration file is (pure: reads the given environment mapping only).

    None when no location can be worked out (no XDG_CONFIG_HOME and no HOME).
    """
    if explicit:
        return ConfigLocation(path=explicit, required=True, origin="--config")
    if env.get(CONFIG_ENV):
        return ConfigLocation(path=env[CONFIG_ENV], required=True, origin=f"${CONFIG_ENV}")
    base = env.get("XDG_CONFIG_HOME") or ""
    if not base.startswith("/"):
        # The XDG spec says a relative value is invalid and must be ignored.
        home = env.get("HOME")
        if not home:
            return None
        base = home.rstrip("/") + "/.config"
    return ConfigLocation(
        path=base.rstrip("/") + "/hpcstate/config.toml", required=False, origin="the default"
    )


def _shown(value: object) -> str:
    if isinstance(value, dict):
        return "a table"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _toml_loads() -> tuple[Callable[[str], dict[str, Any]], type[Exception]]:
    # tomllib is 3.11+; the tomli backport (a dependency on 3.10) has the same API.
    module = importlib.import_module("tomllib" if sys.version_info >= (3, 11) else "tomli")
    loads: Callable[[str], dict[str, Any]] = module.loads
    error: type[Exception] = module.TOMLDecodeError
    return loads, error


def expand_home(path: str, env: Mapping[str, str]) -> str:
    """``~`` and ``~/x`` with the given environment's HOME (pure, local paths only)."""
    home = env.get("HOME")
    if home and (path == "~" or path.startswith("~/")):
        return home.rstrip("/") + path[1:]
    return path


def _expect_str(where: str, key: str, value: object, example: str) -> str:
    if not isinstance(value, str):
        raise ConfigError(
            f"{where}: {key}: expected a string (e.g. {key.rsplit('.', 1)[-1]} = {example}), "
            f"got {toml_type_name(value)} {_shown(value)}"
        )
    if not value.strip():
        raise ConfigError(f"{where}: {key}: must not be empty (e.g. {example})")
    return value


def _backend(where: str, name: str, table: object, installed: Collection[str]) -> BackendConfig:
    key = f"backends.{name}"
    if not _NAME.match(name):
        raise ConfigError(
            f"{where}: [{key}]: a backend name uses letters, digits, '_', '.' and '-' only "
            "(it is written NAME:NATIVE_ID in run references)"
        )
    if not isinstance(table, dict):
        raise ConfigError(
            f"{where}: {key}: expected a table ([{key}] with kind = ...), "
            f"got {toml_type_name(table)} {_shown(table)}"
        )
    if "kind" in table:
        kind = _expect_str(where, f"{key}.kind", table["kind"], '"slurm"')
    elif name in installed:
        kind = name  # [backends.slurm] with no kind changes the slurm kind's options
    else:
        raise ConfigError(
            f"{where}: [{key}]: missing required key 'kind' (e.g. kind = \"slurm\"; "
            "`hpcstate backends` lists the installed kinds)"
        )
    host: str | None = None
    if "host" in table:
        host = _expect_str(where, f"{key}.host", table["host"], '"user@login.example.org:22"')
    options = {k: v for k, v in table.items() if k not in ("kind", "host")}
    return BackendConfig(name=name, kind=kind, host=host, options=options)


def _options_type(kind: str, given: Mapping[str, type | None] | None) -> type | None:
    if given is not None:
        return given.get(kind)
    from hpcstate import registry

    try:
        return registry.load(kind).options_type
    except BackendNotFound:  # not installed: said (with the pip command) when it is used
        return None


def _check_options(
    where: str, backend: BackendConfig, options_types: Mapping[str, type | None] | None
) -> None:
    """The table's options, structured into the backend's options record: a wrong or
    unknown key is refused now, before any backend is made."""
    record = _options_type(backend.kind, options_types)
    if record is not None:
        structure_options(record, backend.options, where=f"{where}: [backends.{backend.name}]")


def parse_config(
    text: str | None,
    *,
    env: Mapping[str, str],
    path: str | None = None,
    installed: Collection[str] | None = None,
    options_types: Mapping[str, type | None] | None = None,
) -> Config:
    """The configuration from a file's text (None: no file) and the environment.

    Pure. ``installed`` is the installed backend kinds a default may name without a table
    (None: ask the registry). Each ``[backends.NAME]`` table's options are structured into
    its kind's declared options record (``options_types``: kind -> record; None: each
    kind's ``BackendInfo.options_type`` from the registry; a kind that is not installed
    is checked when it is used). Raises :class:`hpcstate.ConfigError` with a one-line
    message naming the file and the key.
    """
    where = path or "config"
    document: dict[str, Any] = {}
    if text is not None:
        loads, decode_error = _toml_loads()
        try:
            document = loads(text)
        except decode_error as exc:
            raise ConfigError(f"{where}: invalid TOML: {exc}") from None
    unknown = sorted(set(document) - set(_TOP_LEVEL_KEYS))
    if unknown:
        raise ConfigError(
            f"{where}: unknown top-level key {unknown[0]!r} (known keys: "
            f"{', '.join(_TOP_LEVEL_KEYS)}; backend settings go in [backends.NAME])"
        )
    backends: dict[str, BackendConfig] = {LOCAL: BackendConfig(name=LOCAL, kind=LOCAL)}
    tables = document.get("backends", {})
    if not isinstance(tables, dict):
        raise ConfigError(
            f"{where}: backends: expected tables ([backends.NAME] with kind = ...), "
            f"got {toml_type_name(tables)} {_shown(tables)}"
        )
    kinds = _installed() if installed is None else installed
    for name, table in tables.items():
        backends[name] = _backend(where, name, table, kinds)
        _check_options(where, backends[name], options_types)
    tracker = _tracker(where, document["tracker"]) if "tracker" in document else TrackerSettings()

    def usable(name: str) -> bool:
        return name in backends or name in kinds

    default = LOCAL
    if "default_backend" in document:
        default = _expect_str(where, "default_backend", document["default_backend"], '"cluster"')
        if not usable(default):
            raise ConfigError(
                f"{where}: default_backend: {default!r} names no backend (defined: "
                f"{', '.join(sorted(backends))}); add [backends.{default}] or fix the name"
            )
    override = env.get(BACKEND_ENV)
    if override:
        if not usable(override):
            raise ConfigError(
                f"${BACKEND_ENV}={override!r} names no backend (defined in "
                f"{path or 'no config file'}: {', '.join(sorted(backends))}; or an installed "
                "kind, see `hpcstate backends`)"
            )
        default = override

    database: str | None = None
    if "database" in document:
        database = _expect_str(
            where, "database", document["database"], '"~/.local/state/hpcstate/state.db"'
        )
    if env.get(DB_ENV):
        database = env[DB_ENV]
    if database is not None:
        database = expand_home(database, env)
    return Config(
        path=path, backends=backends, default_backend=default, database=database, tracker=tracker
    )


def load_config(
    path: str | os.PathLike[str] | None = None, *, env: Mapping[str, str] | None = None
) -> Config:
    """Find, read and check the configuration file, as the ``hpcstate`` command does.

    ``path`` None: ``$HPCSTATE_CONFIG``, else ``$XDG_CONFIG_HOME/hpcstate/config.toml``
    (``~/.config/...``), which may be absent (then: the embedded local backend and every
    installed kind with its defaults). A ``path`` given (or ``$HPCSTATE_CONFIG``) must
    exist. ``env`` None: ``os.environ``. Raises :class:`hpcstate.ConfigError`.
    """
    environment = os.environ if env is None else env
    location = locate(environment, None if path is None else os.fspath(path))
    if location is None:
        return parse_config(None, env=environment)
    try:
        with open(location.path, encoding="utf-8") as handle:
            text: str | None = handle.read()
    except FileNotFoundError:
        if location.required:
            raise ConfigError(
                f"{location.path} (named by {location.origin}): file not found; create it, "
                "fix the path, or unset it to use the embedded local backend"
            ) from None
        text = None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{location.path}: cannot read it: {exc}") from None
    return parse_config(text, env=environment, path=location.path if text is not None else None)
