"""The Flux backend's options (``[backends.X] options = {...}``) as a typed record.

Pure (no I/O): ``hpcstate_flux.BACKEND.options_type`` is :class:`FluxOptions`, and the
config loader structures each Flux backend's options into it when the file is loaded.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from attrs import frozen

from hpcstate import ConfigError

from ._dialect import FluxDialect


@frozen(kw_only=True)
class FluxOptions:
    """``flux``: the flux executable on the scheduler's side; ``uri``: the instance's
    ``FLUX_URI`` when the commands do not run inside it; ``timeout``: seconds per
    command; ``find_limit``: how many of the user's newest jobs a retried submit searches
    for its tag."""

    flux: str = "flux"
    uri: str | None = None
    timeout: float = 60.0
    find_limit: int = 1000

    def dialect(self) -> FluxDialect:
        return FluxDialect(
            flux=self.flux, uri=self.uri, timeout=float(self.timeout), find_limit=self.find_limit
        )


def _option(
    options: Mapping[str, Any], key: str, kind: type | tuple[type, ...], default: Any
) -> Any:
    value = options.get(key, default)
    if value is not None and (isinstance(value, bool) or not isinstance(value, kind)):
        kinds = kind if isinstance(kind, tuple) else (kind,)
        wanted = " or ".join(k.__name__ for k in kinds)
        raise ConfigError(f"flux backend option {key!r} must be a {wanted}, got {value!r}")
    return value


def structure_flux_options(options: Mapping[str, Any]) -> FluxOptions:
    """A backend configuration's options as :class:`FluxOptions` (ConfigError if wrong)."""
    timeout = _option(options, "timeout", (int, float), 60.0)
    return FluxOptions(
        flux=_option(options, "flux", str, "flux"),
        uri=_option(options, "uri", str, None),
        timeout=float(timeout),
        find_limit=_option(options, "find_limit", int, 1000),
    )


def dialect_from_options(options: Mapping[str, Any]) -> FluxDialect:
    """A FluxDialect from a backend configuration's options (see :class:`FluxOptions`)."""
    return structure_flux_options(options).dialect()
