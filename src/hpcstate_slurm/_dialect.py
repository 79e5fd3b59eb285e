"""The Slurm dialect: the :class:`hpcstate.backend.Dialect` that CommandBackend drives,
composed of ``_commands`` (what to run) and ``_observe`` (what the answer means) for one
Slurm release. Pure: no I/O, no clock; no rule of its own.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta, timezone, tzinfo

from attrs import field, frozen

from hpcstate import Observation
from hpcstate.backend import AccountingQuery, Command, CommandResult, JobSpec, Submission

from . import _commands, _observe
from ._commands import version_command as version_command
from ._observe import SubmitRejected as SubmitRejected
from ._observe import version as parse_version
from ._parse import QueueRow
from ._versions import MINIMUM_VERSION, SlurmBehaviour, SlurmVersion, behaviour_for

__all__ = ["SlurmDialect", "SubmitRejected", "parse_version", "version_command"]


@frozen(kw_only=True)
class SlurmDialect:
    """The pure half of the Slurm backend for one Slurm version."""

    behaviour: SlurmBehaviour = field(factory=lambda: behaviour_for(MINIMUM_VERSION))
    #: The zone Slurm prints local times in. Queries set TZ=UTC, so UTC unless a caller
    #: parses output taken without that (recorded golden files, for one).
    tz: tzinfo = timezone.utc
    #: How far before the earliest submit time the accounting window opens (clock skew).
    accounting_margin: timedelta = timedelta(minutes=10)
    timeout: float = 60.0
    #: Whether jobs run under the report helper when their options do not say
    #: (the backend option ``self_report_wrapper``).
    self_report_wrapper: bool = True

    @classmethod
    def for_version(cls, version: SlurmVersion | str, **kwargs: object) -> SlurmDialect:
        parsed = SlurmVersion.parse(f"slurm {version}") if isinstance(version, str) else version
        return cls(behaviour=behaviour_for(parsed), **kwargs)  # type: ignore[arg-type]

    # -- submit ---------------------------------------------------------------------------

    def submit_command(self, spec: JobSpec) -> Command:
        return _commands.submit_command(
            spec, timeout=self.timeout, self_report=self.self_report_wrapper
        )

    def reports_itself(self, spec: JobSpec) -> bool:
        """See :func:`hpcstate_slurm._commands.reports_itself`."""
        return _commands.reports_itself(spec, self_report=self.self_report_wrapper)

    def parse_submit(self, result: CommandResult, spec: JobSpec) -> Submission:
        return _observe.submission(result, spec)

    def find_submission_command(self, tag: str) -> Command | None:
        return _commands.find_submission_command(timeout=self.timeout)

    def parse_find_submission(self, result: CommandResult, tag: str) -> Submission | None:
        return _observe.found_in_queue(result, tag)

    def find_submission_accounting_command(self, tag: str) -> Command:
        return _commands.find_submission_accounting_command(
            tag, accounting_margin=self.accounting_margin, timeout=self.timeout
        )

    def parse_find_submission_accounting(
        self, result: CommandResult, tag: str
    ) -> Submission | None:
        return _observe.found_in_accounting(result, tag)

    # -- queue (and controller record) -----------------------------------------------------

    def queue_command(self, native_ids: Sequence[str]) -> Command:
        return _commands.queue_command(native_ids, timeout=self.timeout)

    def parse_queue(
        self, result: CommandResult, *, native_ids: Sequence[str], observed_at: datetime
    ) -> list[Observation]:
        return _observe.queue_answer(
            result,
            behaviour=self.behaviour,
            tz=self.tz,
            native_ids=native_ids,
            observed_at=observed_at,
        )

    def queue_observations(
        self, rows: Sequence[QueueRow], *, native_ids: Sequence[str], observed_at: datetime
    ) -> list[Observation]:
        """One observation per asked id from parsed squeue rows (absent ids: ABSENT)."""
        return _observe.queue_observations(rows, native_ids=native_ids, observed_at=observed_at)

    # -- accounting -------------------------------------------------------------------------

    def accounting_command(self, query: AccountingQuery) -> Command | None:
        return _commands.accounting_command(
            query, accounting_margin=self.accounting_margin, timeout=self.timeout
        )

    def parse_accounting(
        self, result: CommandResult, *, query: AccountingQuery, observed_at: datetime
    ) -> list[Observation]:
        return _observe.accounting_answer(
            result, behaviour=self.behaviour, tz=self.tz, query=query, observed_at=observed_at
        )

    # -- cancel, errors ---------------------------------------------------------------------

    def cancel_command(self, native_ids: Sequence[str]) -> Command:
        return _commands.cancel_command(native_ids, timeout=self.timeout)

    def check_cancel(self, result: CommandResult) -> None:
        _observe.cancel_answer(result)

    def is_transient(self, result: CommandResult) -> bool:
        return _observe.is_transient(result)
