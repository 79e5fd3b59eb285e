"""The configuration file and its environment overrides, read by a pure loader.

::

    # $HPCSTATE_CONFIG, else $XDG_CONFIG_HOME/hpcstate/config.toml (--config FILE wins)
    default_backend = "cluster"
    database = "~/.local/state/hpcstate/state.db"

    [backends.cluster]
    kind = "slurm"
    host = "alice@login.example.org:22"
    known_hosts = "~/.ssh/known_hosts"     # any other key is a backend option

Environment: ``HPCSTATE_BACKEND`` overrides ``default_backend``, ``HPCSTATE_DB``
overrides ``database``. With no file at all, the embedded ``local`` backend is the
default; it is always there unless the file defines its own ``[backends.local]``.

Every error is one line naming the file, the key, what was expected and what was found.
"""

from __future__ import annotations

import importlib
import re
import sys
from collections.abc import Callable, Mapping
from datetime import date, datetime, time
from typing import Any, Final

from attrs import field, frozen

from hpcstate import ConfigError
from hpcstate.backend import BackendConfig

CONFIG_ENV: Final = "HPCSTATE_CONFIG"
BACKEND_ENV: Final = "HPCSTATE_BACKEND"
DB_ENV: Final = "HPCSTATE_DB"
LOCAL: Final = "local"

_TOP_LEVEL_KEYS: Final = ("default_backend", "database", "backends")
# A backend name is used in run references (NAME:NATIVE_ID): no colon, no spaces.
_NAME: Final = re.compile(r"\A[A-Za-z0-9][A-Za-z0-9_.-]*\Z")


def _mapping(value: Mapping[str, BackendConfig]) -> Mapping[str, BackendConfig]:
    return dict(value)


@frozen(kw_only=True)
class Config:
    """What the CLI runs with. ``database`` None means the runtime's default path."""

    path: str | None = None  # the file it was read from; None when there was none
    backends: Mapping[str, BackendConfig] = field(converter=_mapping)
    default_backend: str = LOCAL
    database: str | None = None

    def backend(self, name: str | None) -> BackendConfig:
        """The named backend (the default one for None); ConfigError names the choices."""
        chosen = self.default_backend if name is None else name
        found = self.backends.get(chosen)
        if found is None:
            raise ConfigError(
                f"no backend named {chosen!r} is configured (configured: "
                f"{', '.join(sorted(self.backends))}); add a [backends.{chosen}] table to "
                f"{self.path or 'a config file (see docs/cli.md)'}"
            )
        return found


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


def _type_name(value: object) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "string"
    if isinstance(value, dict):
        return "table"
    if isinstance(value, list):
        return "array"
    if isinstance(value, datetime | date | time):
        return "date/time"
    return type(value).__name__


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
            f"got {_type_name(value)} {_shown(value)}"
        )
    if not value.strip():
        raise ConfigError(f"{where}: {key}: must not be empty (e.g. {example})")
    return value


def _backend(where: str, name: str, table: object) -> BackendConfig:
    key = f"backends.{name}"
    if not _NAME.match(name):
        raise ConfigError(
            f"{where}: [{key}]: a backend name uses letters, digits, '_', '.' and '-' only "
            "(it is written NAME:NATIVE_ID in run references)"
        )
    if not isinstance(table, dict):
        raise ConfigError(
            f"{where}: {key}: expected a table ([{key}] with kind = ...), "
            f"got {_type_name(table)} {_shown(table)}"
        )
    if "kind" not in table:
        raise ConfigError(
            f"{where}: [{key}]: missing required key 'kind' (e.g. kind = \"slurm\"; "
            "`hpcstate backends` lists the installed kinds)"
        )
    kind = _expect_str(where, f"{key}.kind", table["kind"], '"slurm"')
    host: str | None = None
    if "host" in table:
        host = _expect_str(where, f"{key}.host", table["host"], '"user@login.example.org:22"')
    options = {k: v for k, v in table.items() if k not in ("kind", "host")}
    return BackendConfig(name=name, kind=kind, host=host, options=options)


def parse_config(text: str | None, *, env: Mapping[str, str], path: str | None = None) -> Config:
    """The configuration from a file's text (None: no file) and the environment.

    Pure. Raises :class:`hpcstate.ConfigError` with a one-line message.
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
            f"got {_type_name(tables)} {_shown(tables)}"
        )
    for name, table in tables.items():
        backends[name] = _backend(where, name, table)

    default = LOCAL
    if "default_backend" in document:
        default = _expect_str(where, "default_backend", document["default_backend"], '"cluster"')
        if default not in backends:
            raise ConfigError(
                f"{where}: default_backend: {default!r} names no backend (defined: "
                f"{', '.join(sorted(backends))}); add [backends.{default}] or fix the name"
            )
    override = env.get(BACKEND_ENV)
    if override:
        if override not in backends:
            raise ConfigError(
                f"${BACKEND_ENV}={override!r} names no backend (defined in "
                f"{path or 'no config file'}: {', '.join(sorted(backends))})"
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
    return Config(path=path, backends=backends, default_backend=default, database=database)
