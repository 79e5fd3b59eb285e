"""The Flux backend's options (the keys of a ``[backends.NAME]`` table) as a typed record.

Pure (no I/O). ``hpcstate_flux.BACKEND.options_type`` is :class:`FluxOptions`: the config
loader structures each Flux backend's table into it when the file is loaded, so a wrong
or unknown key is refused then, naming the file and the key (exit 78), before any
backend is made; ``FluxBackend.from_config`` structures the same way.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from attrs import field, frozen

from hpcstate.options import SshOptions, structure_options

from ._dialect import FluxDialect


def _above_zero(instance: object, attribute: Any, value: float) -> None:
    if not value > 0:
        raise ValueError(f"{attribute.name}: must be > 0 (seconds), got {value!r}")


def _at_least_one(instance: object, attribute: Any, value: int) -> None:
    if value < 1:
        raise ValueError(f"{attribute.name}: must be >= 1, got {value!r}")


@frozen(kw_only=True)
class FluxOptions(SshOptions):
    """``flux``: the flux executable on the scheduler's side; ``uri``: the instance's
    ``FLUX_URI`` when the commands do not run inside it; ``timeout``: seconds per
    command; ``find_limit``: how many of the user's newest jobs a retried submit searches
    for its tag.

    The SSH runner's keys (``SshOptions``: used when the table has a ``host``, read by
    ``hpcstate.runtime.make_runner``) are inherited."""

    flux: str = "flux"
    uri: str | None = None
    timeout: float = field(default=60.0, validator=_above_zero)
    find_limit: int = field(default=1000, validator=_at_least_one)

    def dialect(self) -> FluxDialect:
        return FluxDialect(
            flux=self.flux, uri=self.uri, timeout=self.timeout, find_limit=self.find_limit
        )


def flux_options(options: Mapping[str, Any], *, where: str = "flux backend") -> FluxOptions:
    """A backend configuration's options as :class:`FluxOptions`; ConfigError
    ``"{where}: <key>: <what is wrong>"`` for an unknown key or a wrong value."""
    return structure_options(FluxOptions, options, where=where)


def dialect_from_options(options: Mapping[str, Any], *, where: str = "flux backend") -> FluxDialect:
    """A FluxDialect from a backend configuration's options (see :class:`FluxOptions`)."""
    return flux_options(options, where=where).dialect()
