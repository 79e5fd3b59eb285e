"""Test doubles for the runtime tests (never shipped)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timezone

from hpcstate import Observation
from hpcstate.backend import AccountingQuery, Capabilities, JobSpec, Submission
from hpcstate.testing import VirtualClock as PublicVirtualClock

# -- a tiny fake backend, only for races the local backend cannot produce ---------------


class ScriptedBackend:
    """A Backend whose answers the test sets per native id. Only for what no real
    system here can produce (a job that stays SETTLING, an accounting lag, an outage)."""

    def __init__(
        self, *, accounting: bool = True, name: str = "fake", array_jobs: bool = False
    ) -> None:
        self.name = name
        # find_submission below: the ability is declared (the tracker never probes).
        self.capabilities = Capabilities(
            accounting=accounting, adopt=True, array_jobs=array_jobs, idempotent_submit=True
        )
        self.queue_answers: dict[str, Observation | None] = {}
        self.accounting_answers: dict[str, Observation | None] = {}
        self.queue_calls: list[tuple[str, ...]] = []
        self.accounting_calls: list[AccountingQuery] = []
        self.submits: list[JobSpec] = []
        self.cancels: list[tuple[str, ...]] = []
        self.fail_with: Exception | None = None
        #: Raised by accounting only (an accounting outage while the queue answers).
        self.accounting_fail_with: Exception | None = None
        #: Raised by submit (a backend bug, or a transient error).
        self.submit_fail_with: Exception | None = None
        #: What find_submission answers, by tag (a submit whose answer was lost).
        self.tagged: dict[str, Submission] = {}
        self.lookups: list[str] = []
        self._next = 100

    async def submit(self, spec: JobSpec) -> Submission:
        self.submits.append(spec)
        if self.submit_fail_with is not None:
            raise self.submit_fail_with
        self._next += 1
        return Submission(native_id=str(self._next))

    async def find_submission(self, tag: str) -> Submission | None:
        self.lookups.append(tag)
        return self.tagged.get(tag)

    async def queue(self, native_ids: Sequence[str]) -> Sequence[Observation]:
        self.queue_calls.append(tuple(native_ids))
        if self.fail_with is not None:
            raise self.fail_with
        return [o for n in native_ids if (o := self.queue_answers.get(n)) is not None]

    async def accounting(self, query: AccountingQuery) -> Sequence[Observation]:
        self.accounting_calls.append(query)
        if self.fail_with is not None:
            raise self.fail_with
        if self.accounting_fail_with is not None:
            raise self.accounting_fail_with
        return [o for n in query.native_ids if (o := self.accounting_answers.get(n)) is not None]

    async def cancel(self, native_ids: Sequence[str]) -> None:
        self.cancels.append(tuple(native_ids))

    async def close(self) -> None:
        return None


class VirtualClock(PublicVirtualClock):
    """hpcstate.testing's VirtualClock, starting where the runtime tests' times do."""

    def __init__(self, start: datetime | None = None) -> None:
        super().__init__(start or datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc))
