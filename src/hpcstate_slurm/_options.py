"""The Slurm backend's options (the keys of a ``[backends.NAME]`` table) as a typed record.

Pure (no I/O). ``hpcstate_slurm.BACKEND.options_type`` is :class:`SlurmOptions`: the config
loader structures each Slurm backend's table into it when the file is loaded, so a wrong
or unknown key is refused then, naming the file and the key (exit 78), before any backend
is made; ``make_backend`` structures the same way (:func:`slurm_options`).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from attrs import field, frozen

from hpcstate import ParseError
from hpcstate.options import SshOptions, structure_options

from ._versions import MINIMUM_VERSION, SlurmVersion


def _at_least_zero(instance: object, attribute: Any, value: float) -> None:
    if not value >= 0:
        raise ValueError(f"{attribute.name}: must be >= 0, got {value!r}")


def _release(instance: object, attribute: Any, value: str | None) -> None:
    if value is None:
        return
    version = parse_release(value)
    if version is None:
        raise ValueError(
            f"{attribute.name}: expected a Slurm release like '22.05.8', got {value!r}"
        )
    if version < MINIMUM_VERSION:
        raise ValueError(
            f"{attribute.name}: Slurm {version} is older than the oldest supported release "
            f"{MINIMUM_VERSION}"
        )


def parse_release(text: str) -> SlurmVersion | None:
    """``22.05.8`` (or ``22.05``) as a SlurmVersion; None when it is not one."""
    try:
        return SlurmVersion.parse(f"slurm {text}")
    except ParseError:
        return None


@frozen(kw_only=True)
class SlurmOptions(SshOptions):
    """The options of one Slurm backend, with today's names and defaults.

    * ``slurm_version``: the cluster's release (``"22.05.8"``); given, no
      ``sbatch --version`` is asked. Default: detected at the first call.
    * ``command_timeout``: seconds each Slurm command may take.
    * ``accounting_margin_s``: seconds before the earliest submit time at which a sacct
      window opens (clock skew between this host and slurmdbd).
    * ``retries``: attempts of a command that failed transiently.
    * ``self_report_wrapper``: whether jobs run under hpcstate's report helper unless
      their own ``JobSpec.options`` say otherwise (a TOML boolean).

    The SSH runner's keys (:class:`hpcstate.options.SshOptions`, used when the table has
    a ``host``; read by ``hpcstate.runtime.make_runner``) are accepted with its types.
    """

    slurm_version: str | None = field(default=None, validator=_release)
    command_timeout: float = field(default=60.0, validator=_at_least_zero)
    accounting_margin_s: float = field(default=600.0, validator=_at_least_zero)
    retries: int = field(default=3, validator=_at_least_zero)
    self_report_wrapper: bool = True

    @property
    def version(self) -> SlurmVersion | None:
        """``slurm_version`` as a release (checked when the record was made)."""
        return parse_release(self.slurm_version) if self.slurm_version is not None else None

    @property
    def accounting_margin(self) -> timedelta:
        return timedelta(seconds=self.accounting_margin_s)


def slurm_options(options: Mapping[str, Any], *, where: str = "slurm backend") -> SlurmOptions:
    """A backend configuration's options as :class:`SlurmOptions`; ConfigError
    ``"{where}: <key>: <what is wrong>"`` for an unknown key or a wrong value."""
    return structure_options(SlurmOptions, options, where=where)
