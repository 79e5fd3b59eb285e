"""The reference poll loop: the Tracker's poll rules over one Backend, in memory.

:class:`hpcstate.runtime.Tracker` is the real thing (a store, pacing, leases, self-report
files, output checks). This loop keeps only the rules that decide a verdict, so that a
test can hold a backend, the simulator or a real cluster to them without a store:

1. **queue**: ONE call for every item the queue can still tell about (queued, running or
   settling, with a native id).
2. **settle**: each answer goes through :func:`hpcstate.advance`; a job that left the
   queue is settling, a failure the scheduler states is a verdict.
3. **accounting**: if the backend declares ``accounting`` and the queue answered, ONE call
   for the settling items and the unconfirmed verdicts (a late record corrects them; with
   ``await_final_record`` also the verdicts whose final record was not applied yet),
   bounded by the earliest submit time (``stats.submitted_at``, else when the item was
   made).
4. **grace**: :func:`hpcstate.tick` each settling item (unless ``grace`` is None).

A transient error (:class:`~hpcstate.SchedulerUnavailable`,
:class:`~hpcstate.TransportError`) is counted and written to :attr:`ReferenceLoop.errors`,
never turned into an observation; the next poll asks again. An answer for an id that was
not asked, or no answer for one that was, is written to :attr:`ReferenceLoop.problems`
(one observation per asked id is the Backend contract), and so is an illegal transition
(the Tracker logs and skips it). A cancel marks the items first (``cancel_requested``;
``cancel_failed`` if the call raised), as the Tracker does.

Used by the conformance suite (:class:`~hpcstate.testing.conformance.BackendConformance`),
hpcstate's simulator race tests and its live tests on a real Slurm cluster::

    loop = ReferenceLoop(backend, clock=VirtualClock())
    ids = await loop.submit(JobSpec(command=["true"]))
    await loop.run_until(max_polls=100, interval=30)   # every item done, or NotSettled
    loop.item(ids[0]).state                            # State.COMPLETED
"""

from __future__ import annotations

import asyncio
import itertools
from collections import Counter
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Final

from attrs import evolve

from hpcstate import (
    DEFAULT_GRACE,
    TERMINAL,
    Event,
    Finished,
    IllegalTransition,
    Marker,
    MarkerCode,
    Observation,
    RunItem,
    SchedulerUnavailable,
    Source,
    State,
    Step,
    TransportError,
    add_marker,
    advance,
    new_item,
    submitted,
    tick,
)
from hpcstate.backend import AccountingQuery, Backend, JobSpec, Submission, abilities

if TYPE_CHECKING:
    from hpcstate.runtime import Clock

__all__ = ["NotSettled", "ReferenceLoop"]

#: What the queue is asked about (the Tracker's polled states).
QUEUE_STATES: Final = frozenset({State.QUEUED, State.RUNNING, State.SETTLING})
#: Errors that say "not now", never "this job failed".
TRANSIENT: Final = (SchedulerUnavailable, TransportError)
#: Seconds between a lost submit answer and the lookup by tag.
LOOKUP_DELAY_S: Final = 5.0


class NotSettled(AssertionError):
    """:meth:`ReferenceLoop.run_until` ran out of time or polls; names what is open."""


class ReferenceLoop:
    """Tracks jobs of one backend through the pure core, keyed by native id.

    ``clock``: what time is and how to wait (default: the wall clock). ``grace``: the
    grace fallback's delay (None: no fallback, wait for a source's verdict).
    ``await_final_record``: an item is done only once accounting's final record was
    applied (live tests that check the record, not only the verdict). ``tag_prefix``:
    tag every untagged submit (``<prefix>-<n>``), so a submit whose answer was lost is
    found again by tag when the backend declares it can look submissions up.
    """

    def __init__(
        self,
        backend: Backend,
        *,
        clock: Clock | None = None,
        grace: timedelta | None = DEFAULT_GRACE,
        run_id: str = "reference",
        await_final_record: bool = False,
        tag_prefix: str | None = None,
    ) -> None:
        self.backend = backend
        if clock is None:
            from hpcstate.runtime import SystemClock  # the runtime only when asked for

            clock = SystemClock()
        self.clock: Clock = clock
        self.grace = grace
        self.run_id = run_id
        self.await_final_record = await_final_record
        self.tag_prefix = tag_prefix
        self.items: dict[str, RunItem] = {}  # by native id
        self.events: list[Event] = []
        self.first_verdicts: dict[str, Finished] = {}  # by native id
        #: Native ids whose final accounting record was applied (of their last run).
        self.final_seen: set[str] = set()
        #: Backend calls made, by method; and (queue, accounting) calls of each poll.
        self.calls: Counter[str] = Counter()
        self.calls_per_poll: list[tuple[int, int]] = []
        self.polls = 0
        #: Polls where a source raised a transient error, and what it said.
        self.unavailable = 0
        self.errors: list[str] = []
        #: Breaches of the Backend contract seen on the way (asked/answered ids, illegal
        #: transitions).
        self.problems: list[str] = []
        self.illegal_transitions = 0
        self._serial = itertools.count()
        self._tags = itertools.count()

    # -- items ----------------------------------------------------------------------

    def now(self) -> datetime:
        return self.clock.now()

    def track(
        self,
        native_id: str,
        *,
        name: str = "",
        item_id: str | None = None,
        submitted_at: datetime | None = None,
    ) -> RunItem:
        """Track a job the scheduler already has (submitted here, or adopted)."""
        at = self.now()
        item = new_item(
            id=item_id if item_id is not None else f"{self.run_id}.{next(self._serial)}",
            run_id=self.run_id,
            backend=self.backend.name,
            now=at,
            name=name,
        )
        self._record(
            native_id, submitted(item, native_id=native_id, at=at, submitted_at=submitted_at)
        )
        return self.items[native_id]

    def item(self, native_id: str) -> RunItem:
        return self.items[native_id]

    def native_id(self, key: str) -> str | None:
        return key  # items are keyed by native id

    def done(self, native_id: str) -> bool:
        """A verdict, confirmed (with ``await_final_record``: its final record applied;
        an unconfirmed verdict is not done, accounting is still asked)."""
        item = self.items[native_id]
        if item.state not in TERMINAL:
            return False
        if self.await_final_record:
            return native_id in self.final_seen
        return item.confirmed

    def settled(self) -> bool:
        return all(self.done(native_id) for native_id in self.items)

    # -- scheduler actions ----------------------------------------------------------

    async def submit(self, spec: JobSpec, *, name: str = "") -> list[str]:
        """Submit and track; returns the native ids tracked (the tasks of an array)."""
        submission = await self.submit_one(spec, name=name)
        return list(submission.array_task_ids or (submission.native_id,))

    async def submit_one(self, spec: JobSpec, *, name: str = "") -> Submission:
        """Submit and track; returns the scheduler's answer.

        A transient error on a tagged submit is not the end: the job may exist (the
        answer was lost), so it is looked up by tag (only if the backend declares
        ``idempotent_submit``: a SubmissionFinder) and, not found, submitted
        again. Without a tag or a lookup the error is raised."""
        if not spec.tag and self.tag_prefix is not None:
            spec = evolve(spec, tag=f"{self.tag_prefix}-{next(self._tags)}")
        while True:
            try:
                self.calls["submit"] += 1
                submission = await self.backend.submit(spec)
                break
            except TRANSIENT:
                if not spec.tag or abilities(self.backend).finder is None:
                    raise
                await self.clock.sleep(LOOKUP_DELAY_S)
                found = await self._find(spec.tag)
                if found is not None:
                    submission = found
                    break
        for native_id in submission.array_task_ids or (submission.native_id,):
            self.track(native_id, name=name, submitted_at=submission.submitted_at)
        return submission

    async def _find(self, tag: str) -> Submission | None:
        """The job a submit with this tag created (only a declared finder is asked)."""
        finder = abilities(self.backend).finder
        if finder is None:
            return None
        self.calls["find_submission"] += 1
        try:
            return await finder.find_submission(tag)
        except TRANSIENT:
            return None

    async def cancel(self, native_ids: Sequence[str]) -> None:
        """Ask to cancel, as the Tracker does: each unfinished item is marked
        ``cancel_requested`` first; if the call fails it is marked ``cancel_failed`` (it
        may or may not have acted) and the error goes to :attr:`errors`, never a verdict."""
        at = self.now()
        requested = Marker(code=MarkerCode.CANCEL_REQUESTED.value, text="cancel requested")
        for native_id in native_ids:
            item = self.items.get(native_id)
            if item is not None and not item.terminal:
                self._record(native_id, add_marker(item, requested, at=at))
        try:
            self.calls["cancel"] += 1
            await self.backend.cancel(list(native_ids))
        except TRANSIENT as exc:
            self.errors.append(f"cancel: {type(exc).__name__}: {exc}")
            failed = Marker(
                code=MarkerCode.CANCEL_FAILED.value,
                text=f"the cancel may not have reached backend {self.backend.name}: {exc}",
            )
            for native_id in native_ids:
                item = self.items.get(native_id)
                if item is not None and not item.terminal:
                    self._record(native_id, add_marker(item, failed, at=self.now()))

    # -- one poll -------------------------------------------------------------------

    def queue_ids(self) -> list[str]:
        """Who the queue is asked about this poll."""
        return [n for n, item in self.items.items() if item.state in QUEUE_STATES]

    def accounting_ids(self) -> list[str]:
        """Who accounting is asked about this poll (given the queue's answers)."""
        return [n for n, item in self.items.items() if self._needs_accounting(n, item)]

    def _needs_accounting(self, native_id: str, item: RunItem) -> bool:
        if item.state is State.SETTLING:
            return True
        if item.state not in TERMINAL:
            return False
        if self.await_final_record:
            return native_id not in self.final_seen
        return not item.confirmed  # a late record corrects an unconfirmed verdict

    def accounting_window(self, native_ids: Sequence[str]) -> datetime | None:
        """The query's lower bound: the earliest submit (an unbounded query may find an
        older job that had the same id)."""
        items = [self.items[n] for n in native_ids]
        return min(item.stats.submitted_at or item.created_at for item in items)

    async def poll_once(self) -> None:
        """One poll: queue, settle, accounting, grace (see the module's rules)."""
        self.polls += 1
        before = (self.calls["queue"], self.calls["accounting"])
        unavailable = False
        queue_ok = True
        asked = self.queue_ids()
        if asked:
            try:
                self.calls["queue"] += 1
                found = await self.backend.queue(asked)
            except TRANSIENT as exc:
                unavailable, queue_ok = True, False
                self.on_unavailable("queue", exc)
            else:
                self.apply(found, asked, "queue")
        if queue_ok and self.backend.capabilities.accounting:
            wanted = self.accounting_ids()
            if wanted:
                query = AccountingQuery(
                    native_ids=wanted, submitted_after=self.accounting_window(wanted)
                )
                try:
                    self.calls["accounting"] += 1
                    found = await self.backend.accounting(query)
                except TRANSIENT as exc:
                    unavailable = True
                    self.on_unavailable("accounting", exc)
                else:
                    self.apply(found, wanted, "accounting")
        if self.grace is not None:
            now = self.now()
            for native_id, item in list(self.items.items()):
                if item.state is State.SETTLING:
                    self._record(native_id, tick(item, now=now, grace=self.grace))
        self.unavailable += unavailable
        self.calls_per_poll.append(
            (self.calls["queue"] - before[0], self.calls["accounting"] - before[1])
        )

    def on_unavailable(self, what: str, exc: Exception) -> None:
        """A source failed transiently: written down, never a verdict."""
        self.errors.append(f"{what}: {type(exc).__name__}: {exc}")

    def apply(self, observations: Sequence[Observation], asked: Sequence[str], what: str) -> None:
        """Each observation through the machine; answers must match the ids asked."""
        got = sorted(obs.native_id for obs in observations)
        if got != sorted(asked):
            self.problems.append(f"{what} asked {sorted(asked)}, answered {got}")
        for obs in observations:
            item = self.items.get(obs.native_id)
            if item is None:
                continue
            try:
                step = self.advance(item, obs)
            except IllegalTransition as exc:
                self.illegal_transitions += 1
                self.problems.append(f"{obs.native_id}: {exc} ({what} observation)")
                continue
            self._record(obs.native_id, step)
            if (
                obs.source is Source.ACCOUNTING
                and obs.final
                and step.item.state in TERMINAL
                and step.item.restarts == (obs.restarts or 0)
            ):
                self.final_seen.add(obs.native_id)

    def advance(self, item: RunItem, obs: Observation) -> Step:
        """The machine (a test's subclass may get it wrong on purpose)."""
        return advance(item, obs)

    def _record(self, native_id: str, step: Step) -> None:
        self.items[native_id] = step.item
        for event in step.events:
            self.events.append(event)
            if isinstance(event, Finished) and native_id not in self.first_verdicts:
                self.first_verdicts[native_id] = event

    # -- driving --------------------------------------------------------------------

    async def run_until(
        self,
        predicate: Callable[[ReferenceLoop], bool] | None = None,
        *,
        interval: float = 1.0,
        timeout: float | None = 240.0,
        max_polls: int | None = None,
    ) -> None:
        """Poll every ``interval`` seconds (on the loop's clock) until ``predicate``
        (default: every item done). Raises :class:`NotSettled` after ``timeout`` seconds
        of the event loop's time or ``max_polls`` polls (None: no such limit)."""
        condition = predicate or ReferenceLoop.settled
        running = asyncio.get_running_loop()
        deadline = None if timeout is None else running.time() + timeout
        polls = 0
        while not condition(self):
            if (deadline is not None and running.time() > deadline) or (
                max_polls is not None and polls >= max_polls
            ):
                states = {n: str(i.state) for n, i in self.items.items() if not self.done(n)}
                raise NotSettled(f"not done after {polls} polls: {states}")
            await self.poll_once()
            polls += 1
            if not condition(self):
                await self.clock.sleep(interval)

    async def close(self) -> None:
        await self.backend.close()
