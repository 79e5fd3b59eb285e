"""Typed backend options: a backend declares its options as a frozen attrs record with
defaults, and the ``[backends.NAME]`` table of the config file is structured into it
when the file is loaded, so a wrong or unknown key is a one-line error naming the file
and the key, before any backend is made.

::

    @frozen(kw_only=True)
    class PbsOptions:
        command_timeout: float = 60.0  # seconds
        queue: str | None = None

    BACKEND = BackendInfo(..., options_type=PbsOptions, make_backend=make_backend)

    def make_backend(config: BackendConfig) -> Backend:
        options = structure_options(PbsOptions, config.options, where=f"backend {config.name!r}")

Values are taken as TOML gives them, strictly: a ``str`` field wants a string, an
``int`` an integer, a ``float`` a number (an integer is fine), a ``bool`` a boolean;
``X | None`` also takes nothing, a ``tuple[str, ...]`` wants an array of strings, a
``Literal`` one of its words, a union of these the first that fits. Nothing is
converted silently (``"1.5"`` is not a number, ``"no"`` is not false). Durations stay
seconds in fields named for their unit (``*_s``). Range checks belong in the record's
attrs validators; their message (``'retries' must be >= 0: -1``) is shown after
``where``. Pure: no I/O.
"""

from __future__ import annotations

import math
import types
import typing
from collections.abc import Mapping, Sequence
from datetime import date, datetime, time
from typing import Any, Final, Literal, TypeVar, Union, get_args, get_origin

import attrs
import cattrs
from cattrs.errors import AttributeValidationNote, ClassValidationError, ForbiddenExtraKeysError

from ._errors import ConfigError

__all__ = ["OptionsError", "SshOptions", "structure_options"]

T = TypeVar("T")


class OptionsError(ConfigError):
    """An option's value does not fit its declared type (raised through cattrs, shown
    by :func:`structure_options` as ``"{where}: {key}: {message}"``)."""


@attrs.frozen(kw_only=True)
class SshOptions:
    """The options ``hpcstate.runtime.make_runner`` reads (a backend whose commands run
    over SSH when ``host`` is set): a CLI backend's options record inherits them,
    ``class PbsOptions(SshOptions): ...``. None: make_runner's default."""

    ssh_port: int | None = None
    ssh_user: str | None = None
    known_hosts: str | None = None
    client_keys: str | tuple[str, ...] | None = None
    jump_host: str | None = None
    connect_timeout: float | None = None  # seconds


def toml_type_name(value: object) -> str:
    """What a TOML value is called in an error message (a table, an array, ...)."""
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "string"
    if isinstance(value, Mapping):
        return "table"
    if isinstance(value, list | tuple):
        return "array"
    if isinstance(value, datetime | date | time):
        return "date/time"
    return type(value).__name__


def _shown(value: object) -> str:
    text = repr(dict(value) if isinstance(value, Mapping) else value)
    return text if len(text) <= 60 else text[:57] + "..."


def _wrong(expected: str, value: object) -> OptionsError:
    return OptionsError(f"expected {expected}, got {toml_type_name(value)} {_shown(value)}")


def _expected(tp: Any) -> str:
    """How a type is named to a user editing a TOML file."""
    if tp is str:
        return "a string"
    if tp is bool:
        return "a boolean (true or false)"
    if tp is int:
        return "an integer"
    if tp is float:
        return "a number"
    if tp is type(None):
        return "nothing"
    origin = get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in get_args(tp))
    if origin in (Union, types.UnionType):
        return " or ".join(_expected(a) for a in get_args(tp) if a is not type(None))
    if origin in (tuple, Sequence, list):
        args = [a for a in get_args(tp) if a is not Ellipsis]
        return f"an array of {_plural(args[0])}" if args else "an array"
    if origin in (Mapping, dict):
        pair = get_args(tp)
        return f"a table of {_plural(pair[1])}" if pair else "a table"
    return getattr(tp, "__name__", str(tp))


def _plural(tp: Any) -> str:
    return {str: "strings", int: "integers", float: "numbers", bool: "booleans"}.get(
        tp, _expected(tp)
    )


def _fits(tp: Any, value: object) -> bool:
    """Whether ``value`` is, as given, of type ``tp`` (the strict rules above)."""
    if tp is Any:
        return True
    if tp is type(None):
        return value is None
    if tp is bool:
        return isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if tp is float:
        return (
            isinstance(value, int | float)
            and not isinstance(value, bool)
            and math.isfinite(float(value))
        )
    if tp is str:
        return isinstance(value, str)
    origin = get_origin(tp)
    if origin is Literal:
        return any(type(value) is type(a) and value == a for a in get_args(tp))
    if origin in (Union, types.UnionType):
        return any(_fits(a, value) for a in get_args(tp))
    if origin in (tuple, Sequence, list):
        args = [a for a in get_args(tp) if a is not Ellipsis]
        item = args[0] if args else Any
        return isinstance(value, list | tuple) and all(_fits(item, v) for v in value)
    if origin in (Mapping, dict):
        key, item = get_args(tp) or (Any, Any)
        return isinstance(value, Mapping) and all(
            _fits(key, k) and _fits(item, v) for k, v in value.items()
        )
    return False


def _strict(value: Any, tp: Any) -> Any:
    if not _fits(tp, value):
        raise _wrong(_expected(tp), value)
    if tp is float:
        return float(value)
    origin = get_origin(tp)
    if origin in (tuple, Sequence):
        return tuple(value)
    if origin is list:
        return list(value)
    if origin in (Mapping, dict):
        return dict(value)
    if origin in (Union, types.UnionType):
        members = get_args(tp)
        if float in members and int not in members and type(value) is int:
            return float(value)  # float | None: an integer where a number is wanted
        return _strict(value, next(m for m in members if _fits(m, value)))
    return value


def _is_plain(tp: Any) -> bool:
    """Types the strict hook handles (everything but attrs classes)."""
    if tp in (str, bool, int, float, type(None), Any):
        return True
    origin = get_origin(tp)
    if origin is Literal:
        return True
    if origin in (Union, types.UnionType, tuple, Sequence, list, Mapping, dict):
        return all(a is Ellipsis or _is_plain(a) for a in get_args(tp))
    return False


def _converter() -> cattrs.Converter:
    converter = cattrs.Converter(forbid_extra_keys=True, detailed_validation=True)
    converter.register_structure_hook_func(_is_plain, _strict)
    for primitive in (str, bool, int, float):  # cattrs' own hooks convert (float("1.5"))
        converter.register_structure_hook(primitive, _strict)
    return converter


_CONVERTER: Final = _converter()


def _known(cls: type[Any]) -> str:
    return ", ".join(sorted(f.name for f in attrs.fields(cls))) or "none"


def _explain(cls: type[Any], where: str, error: BaseException) -> ConfigError:
    if isinstance(error, ForbiddenExtraKeysError):
        unknown = sorted(error.extra_fields)
        return ConfigError(
            f"{where}: {unknown[0]}: unknown option"
            + (f" (also unknown: {', '.join(unknown[1:])})" if unknown[1:] else "")
            + f"; known options: {_known(cls)}"
        )
    if isinstance(error, ClassValidationError):
        for inner in error.exceptions:
            if isinstance(inner, ForbiddenExtraKeysError):
                return _explain(cls, where, inner)
            notes = [
                n for n in getattr(inner, "__notes__", ()) if isinstance(n, AttributeValidationNote)
            ]
            if not notes:  # the record's own complaint (an attrs validator)
                return ConfigError(f"{where}: {inner}")
            key = notes[0].name
            if isinstance(inner, KeyError):
                return ConfigError(f"{where}: {key}: missing (this option has no default)")
            if isinstance(inner, ClassValidationError | ForbiddenExtraKeysError):
                field_type = notes[0].type
                if attrs.has(field_type):
                    return _explain(field_type, f"{where}: {key}", inner)
            return ConfigError(f"{where}: {key}: {inner}")
        return ConfigError(f"{where}: {error}")
    return ConfigError(f"{where}: {error}")


def structure_options(cls: type[T], raw: Mapping[str, Any], *, where: str) -> T:
    """``raw`` (a backend's options, e.g. a ``[backends.NAME]`` table without ``kind`` and
    ``host``) as the frozen attrs record ``cls``, whose fields have defaults.

    Raises :class:`hpcstate.ConfigError` whose message is ``"{where}: <key>: <what is
    wrong>"``: an unknown key lists the known ones; a wrong type says what was expected
    and what was given; a validator's complaint (a range) is shown as it says it.
    """
    if not attrs.has(cls):
        raise TypeError(f"structure_options needs an attrs class, got {cls!r}")
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where}: expected a table of options, got {toml_type_name(raw)}")
    try:
        made: Any = _CONVERTER.structure(dict(raw), cls)
        return typing.cast(T, made)
    except (ClassValidationError, ForbiddenExtraKeysError) as exc:
        raise _explain(cls, where, exc) from None
    except (ValueError, TypeError) as exc:  # an attrs validator (a range, a pattern...)
        raise ConfigError(f"{where}: {exc}") from None
