"""A small tracking loop over the pure core, to hold the simulator's races against.

It does what a tracker must do and nothing more: one batched queue call and one batched
accounting call per poll (accounting only for items that need it, with the query window
bounded by the earliest submit time), then ``tick`` for the grace fallback. Transient
errors are skipped, never turned into verdicts. ``hpcstate.runtime.Tracker`` is the real
thing; this loop exists so the race tests run against the core whatever the runtime does,
and so the tests can prove they catch a loop that gets it wrong (``bounded_window=False``,
``vanished_means_success=True``, ``transient_means_failure=True``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from datetime import datetime, timedelta

from attrs import evolve

import hpcstate as h
from hpcstate import Event, Finished, Observation, RunItem, Source, State
from hpcstate.backend import AccountingQuery, Backend, JobSpec, Submission
from hpcstate.testing.simulator import VirtualClock


class ReferenceLoop:
    def __init__(
        self,
        backend: Backend,
        clock: VirtualClock,
        *,
        grace: timedelta = h.DEFAULT_GRACE,
        bounded_window: bool = True,
        vanished_means_success: bool = False,
        transient_means_failure: bool = False,
    ) -> None:
        self.backend = backend
        self.clock = clock
        self.grace = grace
        self.bounded_window = bounded_window
        self.vanished_means_success = vanished_means_success
        self.transient_means_failure = transient_means_failure
        self.items: dict[str, RunItem] = {}  # by native id
        self.events: list[Event] = []
        self.first_verdicts: dict[str, Finished] = {}  # by native id
        self.calls_per_poll: list[tuple[int, int]] = []
        self._count = 0
        self.workarounds = 0

    async def submit(self, spec: JobSpec) -> list[str]:
        """Submit; returns the native ids tracked (the tasks of an array)."""
        tag = f"ref-{self._count}-{len(self.items)}"
        spec = evolve(spec, tag=tag)
        while True:
            try:
                submission = await self.backend.submit(spec)
                break
            except h.SchedulerUnavailable:
                # The answer may be lost while the job exists: look the tag up first.
                await self.clock.sleep(5)
                found = await self._find(tag)
                if found is not None:
                    submission = found
                    break
        ids = submission.array_task_ids or (submission.native_id,)
        now = self.clock.now()
        for native_id in ids:
            self._count += 1
            item = h.new_item(id=f"item{self._count}", run_id="run", backend="sim", now=now)
            step = h.submitted(
                item, native_id=native_id, at=now, submitted_at=submission.submitted_at
            )
            self._record(native_id, step)
        return list(ids)

    async def _find(self, tag: str) -> Submission | None:
        finder = getattr(self.backend, "find_submission", None)
        if finder is None:
            return None
        try:
            found: Submission | None = await finder(tag)
        except h.SchedulerUnavailable:
            return None
        return found

    async def cancel(self, native_ids: Sequence[str]) -> None:
        # A lost cancel is retried by the user; it is never a verdict.
        with contextlib.suppress(h.SchedulerUnavailable, h.TransportError):
            await self.backend.cancel(native_ids)

    def _record(self, native_id: str, step: h.Step) -> None:
        self.items[native_id] = step.item
        for event in step.events:
            self.events.append(event)
            if isinstance(event, Finished) and native_id not in self.first_verdicts:
                self.first_verdicts[native_id] = event

    def _apply(self, observations: Sequence[Observation]) -> None:
        for obs in observations:
            item = self.items[obs.native_id]
            if self.vanished_means_success and obs.absence is h.Absence.ABSENT:
                # The mistake most peers make: not in the queue any more means done.
                obs = Observation(
                    native_id=obs.native_id,
                    source=Source.ACCOUNTING,
                    observed_at=obs.observed_at,
                    state=State.COMPLETED,
                    final=True,
                    stats=h.JobStats(exit=h.ExitStatus.exited(0)),
                )
            self._record(obs.native_id, self._advance(item, obs))

    def _advance(self, item: RunItem, obs: Observation) -> h.Step:
        return h.advance(item, obs)

    def _fail_settling(self, why: str) -> None:
        # The other classic mistake: "the scheduler did not answer" read as a failure.
        now = self.clock.now()
        self._apply(
            [
                Observation(
                    native_id=i.native_id,
                    source=Source.QUEUE,
                    observed_at=now,
                    state=State.FAILED,
                    detail=why,
                )
                for i in self.items.values()
                if i.state is State.SETTLING and i.native_id
            ]
        )

    def _needs_accounting(self, item: RunItem) -> bool:
        if item.state is State.SETTLING:
            return True
        # An unconfirmed verdict waits for the late record that corrects it.
        return item.terminal and not item.confirmed

    async def poll_once(self) -> None:
        before = (self.backend_calls("queue"), self.backend_calls("accounting"))
        active = [i.native_id for i in self.items.values() if not i.terminal and i.native_id]
        if active:
            with contextlib.suppress(h.SchedulerUnavailable, h.TransportError):
                self._apply(await self.backend.queue(active))
        wanted = [i for i in self.items.values() if self._needs_accounting(i)]
        if wanted:
            starts = [i.stats.submitted_at for i in wanted if i.stats.submitted_at is not None]
            after: datetime | None = min(starts) if starts and self.bounded_window else None
            query = AccountingQuery(
                native_ids=[i.native_id for i in wanted if i.native_id], submitted_after=after
            )
            try:
                self._apply(await self.backend.accounting(query))
            except (h.SchedulerUnavailable, h.TransportError) as exc:
                if self.transient_means_failure:
                    self._fail_settling(str(exc))
        now = self.clock.now()
        for native_id, item in list(self.items.items()):
            self._record(native_id, h.tick(item, now=now, grace=self.grace))
        after_calls = (self.backend_calls("queue"), self.backend_calls("accounting"))
        self.calls_per_poll.append((after_calls[0] - before[0], after_calls[1] - before[1]))

    def backend_calls(self, method: str) -> int:
        cluster = getattr(self.backend, "cluster", None)
        return 0 if cluster is None else cluster.calls[method]

    def item(self, native_id: str) -> RunItem:
        return self.items[native_id]

    def native_id(self, key: str) -> str | None:
        return key  # this loop keys its items by native id

    async def close(self) -> None:
        await self.backend.close()
