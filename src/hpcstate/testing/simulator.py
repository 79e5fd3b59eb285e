"""A deterministic scheduler simulator: a fake Backend on a virtual clock.

Real clusters race. A job leaves the queue before accounting has its record; accounting
goes down for a while, sometimes longer than a tracker's grace; the queue says COMPLETED
while the real exit code is not zero; an old sacct subtracts 128 from exit codes (137
becomes an ambiguous 9); a node fails and the same id runs again with restarts+1;
records get purged; ids get recycled; commands are slow, time out or fail transiently.
:class:`SimulatedCluster` reproduces all of that from a seed, and knows the TRUE outcome
of every job (:meth:`SimulatedCluster.truth`), so a test can hold a tracker's FIRST
verdict against it. Nothing here sleeps for real: time is a :class:`VirtualClock`.

Used by hpcstate's own tracker tests; offered to backend authors to test code that sits
on top of a Backend. It models the *shape* of the races, not any one scheduler's texts.

::

    clock = VirtualClock()
    cluster = SimulatedCluster(clock=clock, seed=7, conditions=Conditions(transient_errors=0.1))
    backend = cluster.backend()            # a hpcstate.backend.Backend
    sub = await backend.submit(JobSpec(command=["true"]))
    await clock.sleep(600)
    cluster.truth(sub.native_id)           # Truth(state=State.COMPLETED, exit=exit 0, ...)
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta, timezone
from typing import Final

from attrs import define, evolve, field, frozen

from hpcstate import (
    TERMINAL,
    Absence,
    ExitStatus,
    JobStats,
    Observation,
    SchedulerUnavailable,
    Source,
    State,
    expand_array_spec,
)
from hpcstate.backend import AccountingQuery, Capabilities, JobSpec, Submission

#: Where virtual time starts unless told otherwise.
EPOCH: Final = datetime(2026, 1, 1, tzinfo=timezone.utc)

_OUTCOMES: Final = frozenset(
    {
        State.COMPLETED,
        State.FAILED,
        State.CANCELLED,
        State.TIMEOUT,
        State.OUT_OF_MEMORY,
        State.NODE_FAIL,
        State.PREEMPTED,
    }
)


class VirtualClock:
    """A Clock (``now()``, ``async sleep()``) whose time moves only when told.

    ``sleep`` moves time forward at once and yields to the event loop, so a tracker's
    poll loop runs hours of virtual time in milliseconds. ``advance(seconds)`` and
    setting ``current`` move it without yielding. The one virtual clock of hpcstate's
    own tests too (the simulator, the replays, the runtime's tracker tests).
    """

    def __init__(self, start: datetime = EPOCH) -> None:
        if start.utcoffset() is None:
            raise ValueError(f"VirtualClock needs a timezone-aware start, got {start!r}")
        self._now = start
        self.start = start

    def now(self) -> datetime:
        return self._now

    @property
    def current(self) -> datetime:
        """The clock's time; setting it jumps there (forward only)."""
        return self._now

    @current.setter
    def current(self, at: datetime) -> None:
        if at.utcoffset() is None:
            raise ValueError(f"VirtualClock needs a timezone-aware time, got {at!r}")
        if at < self._now:
            raise ValueError(f"time only moves forward (from {self._now} to {at})")
        self._now = at

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError(f"time only moves forward (got {seconds} s)")
        self._now += timedelta(seconds=seconds)

    async def sleep(self, seconds: float) -> None:
        self.advance(max(0.0, seconds))
        await asyncio.sleep(0)

    @property
    def elapsed(self) -> float:
        """Seconds since ``start``."""
        return (self._now - self.start).total_seconds()


# -- what a job will do ----------------------------------------------------------------


@frozen(kw_only=True)
class Outage:
    """Accounting is down from ``start_s`` to ``end_s`` (seconds of virtual time)."""

    start_s: float
    end_s: float


@frozen(kw_only=True)
class Conditions:
    """How hostile the simulated cluster is. Ranges are (low, high) in seconds."""

    queued_s: tuple[float, float] = (0.0, 300.0)
    running_s: tuple[float, float] = (1.0, 1800.0)
    #: Relative weights of the true outcomes.
    outcomes: Mapping[State, float] = field(
        factory=lambda: {
            State.COMPLETED: 6.0,
            State.FAILED: 3.0,
            State.TIMEOUT: 1.0,
            State.OUT_OF_MEMORY: 1.0,
            State.NODE_FAIL: 0.5,
        }
    )
    #: How long the queue still lists a finished job (0: it vanishes at once).
    queue_linger_s: tuple[float, float] = (0.0, 300.0)
    #: How long after submission accounting first has any record of the job.
    record_lag_s: tuple[float, float] = (0.0, 60.0)
    #: How long after the end accounting still shows the job active, not final.
    final_lag_s: tuple[float, float] = (0.0, 300.0)
    #: Chance the queue lists a failed job as COMPLETED (its exit code is not known there).
    queue_says_completed: float = 0.2
    #: Slurm 22.05's sacct: exit codes >= 128 lose 128 and every code is ambiguous.
    lossy_exit_codes: bool = False
    #: Chance a job's node fails and the job is requeued under the same id (per run).
    requeue: float = 0.1
    max_requeues: int = 2
    #: Every source forgets a job this long after its end (Flux purge); None: never.
    purge_after_s: float | None = None
    #: Chance that accounting holds an older job's final record under the same id.
    recycled_ids: float = 0.0
    #: A foreign job takes the id this long after the end; None: never.
    reuse_after_s: float | None = None
    #: Chance a call fails transiently, or is slow; slow calls past ``timeout_s`` time out.
    transient_errors: float = 0.0
    #: Of the submits that fail transiently, the share that created the job anyway (the
    #: answer was lost): only a lookup by tag (``find_submission``) can tell.
    lost_submit_answers: float = 0.5
    slow_calls: float = 0.0
    slow_s: tuple[float, float] = (5.0, 90.0)
    timeout_s: float = 60.0
    accounting_outages: tuple[Outage, ...] = ()

    def __attrs_post_init__(self) -> None:
        bad = set(self.outcomes) - _OUTCOMES
        if bad:
            raise ValueError(f"outcomes must be verdict states, got {sorted(map(str, bad))}")
        for name in ("queued_s", "running_s", "queue_linger_s", "record_lag_s", "final_lag_s"):
            low, high = getattr(self, name)
            if not 0 <= low <= high:
                raise ValueError(f"{name} must be (low, high) with 0 <= low <= high")


@frozen(kw_only=True)
class OldRecord:
    """A final accounting record left by an older job that had the same id."""

    submitted_at: datetime
    state: State
    exit: ExitStatus | None


@frozen(kw_only=True)
class JobPlan:
    """What one job will do. Runs before the last end in a node failure and a requeue."""

    queued_s: tuple[float, ...]
    running_s: tuple[float, ...]
    outcome: State
    exit: ExitStatus | None
    queue_says_completed: bool = False
    queue_linger_s: float = 60.0
    record_lag_s: float = 0.0
    final_lag_s: float = 0.0
    old_record: OldRecord | None = None

    def __attrs_post_init__(self) -> None:
        if not self.queued_s or len(self.queued_s) != len(self.running_s):
            raise ValueError("a plan needs one queued_s and one running_s per run")
        if self.outcome not in _OUTCOMES:
            raise ValueError(f"{self.outcome} is not an outcome a job can have")


def exit_for(outcome: State, rng: random.Random) -> ExitStatus | None:
    """A plausible true exit status for an outcome."""
    if outcome is State.COMPLETED:
        return ExitStatus.exited(0)
    if outcome is State.FAILED:
        if rng.random() < 0.25:
            return ExitStatus.killed(rng.choice((6, 9, 11, 15)))
        return ExitStatus.exited(rng.choice((1, 2, 3, 42, 127, 128, 137, 139, 143, 200, 255)))
    if outcome in (State.TIMEOUT, State.CANCELLED, State.PREEMPTED):
        return ExitStatus.killed(15)
    if outcome is State.OUT_OF_MEMORY:
        return ExitStatus.killed(9)
    return None


def _uniform(rng: random.Random, bounds: tuple[float, float]) -> float:
    return rng.uniform(*bounds)


def random_plan(conditions: Conditions, rng: random.Random, now: datetime) -> JobPlan:
    """Draw a job's plan from the conditions."""
    states = sorted(conditions.outcomes, key=lambda s: s.value)
    outcome = rng.choices(states, weights=[conditions.outcomes[s] for s in states])[0]
    runs = 1
    while runs <= conditions.max_requeues and rng.random() < conditions.requeue:
        runs += 1
    old = None
    if rng.random() < conditions.recycled_ids:
        old_state = rng.choice((State.COMPLETED, State.FAILED))
        old = OldRecord(
            submitted_at=now - timedelta(days=rng.uniform(30, 3000)),
            state=old_state,
            exit=exit_for(old_state, rng),
        )
    return JobPlan(
        queued_s=tuple(_uniform(rng, conditions.queued_s) for _ in range(runs)),
        running_s=tuple(_uniform(rng, conditions.running_s) for _ in range(runs)),
        outcome=outcome,
        exit=exit_for(outcome, rng),
        queue_says_completed=outcome is State.FAILED
        and rng.random() < conditions.queue_says_completed,
        queue_linger_s=_uniform(rng, conditions.queue_linger_s),
        record_lag_s=_uniform(rng, conditions.record_lag_s),
        final_lag_s=_uniform(rng, conditions.final_lag_s),
        old_record=old,
    )


def plan_from_options(spec: JobSpec, base: JobPlan) -> JobPlan:
    """Apply ``spec.options`` that pin a plan: ``sim.outcome`` (a state value),
    ``sim.exit`` (``"3"`` or ``"signal:9"``), ``sim.queued_s``, ``sim.running_s``."""
    options = spec.options
    plan = base
    if "sim.outcome" in options:
        outcome = State(options["sim.outcome"])
        plan = evolve(
            plan,
            outcome=outcome,
            exit=exit_for(outcome, random.Random(0)),
            queue_says_completed=False,
            queued_s=plan.queued_s[-1:],
            running_s=plan.running_s[-1:],
        )
    if "sim.exit" in options:
        text = options["sim.exit"]
        if text.startswith("signal:"):
            status = ExitStatus.killed(int(text.removeprefix("signal:")))
        else:
            status = ExitStatus.exited(int(text))
        plan = evolve(plan, exit=status)
    if "sim.queued_s" in options:
        plan = evolve(plan, queued_s=(float(options["sim.queued_s"]),) * len(plan.queued_s))
    if "sim.running_s" in options:
        plan = evolve(plan, running_s=(float(options["sim.running_s"]),) * len(plan.running_s))
    return plan


# -- the truth and the cluster ---------------------------------------------------------


@frozen(kw_only=True)
class Truth:
    """What really happened to a job (``state`` None while it has not ended)."""

    native_id: str
    state: State | None
    exit: ExitStatus | None
    ended_at: datetime | None
    restarts: int
    submitted_at: datetime
    cancel_requested: bool = False  # someone asked to cancel it (even after it ended)
    cancelled_live: bool = False  # a cancel reached it while queued or running, and ended it


@define
class _Segment:
    queued_at: datetime
    started_at: datetime | None  # None: never started (cancelled while queued)
    ended_at: datetime


@define
class _Job:
    native_id: str
    spec: JobSpec
    plan: JobPlan
    submitted_at: datetime
    segments: list[_Segment]
    outcome: State
    exit: ExitStatus | None
    cancel_requested: bool = False
    cancelled_live: bool = False

    @property
    def ended_at(self) -> datetime:
        return self.segments[-1].ended_at

    def where(self, now: datetime) -> tuple[State, int, _Segment] | None:
        """(QUEUED|RUNNING, restarts, segment) while active; None once ended."""
        for restarts, segment in enumerate(self.segments):
            if now < segment.ended_at:
                started = segment.started_at
                if started is None or now < started:
                    return State.QUEUED, restarts, segment
                return State.RUNNING, restarts, segment
        return None


def _segments(plan: JobPlan, submitted_at: datetime) -> list[_Segment]:
    segments = []
    at = submitted_at
    for queued, running in zip(plan.queued_s, plan.running_s, strict=True):
        start = at + timedelta(seconds=queued)
        end = start + timedelta(seconds=running)
        segments.append(_Segment(queued_at=at, started_at=start, ended_at=end))
        at = end  # a node failure: requeued under the same id at once
    return segments


class SimulatedCluster:
    """The cluster: jobs on a virtual timeline, the races of :class:`Conditions`.

    ``plan_for`` (optional) chooses each job's plan instead of drawing one at random.
    ``calls`` counts backend calls by method; ``outages`` can be added while running.
    """

    def __init__(
        self,
        *,
        clock: VirtualClock,
        seed: int = 0,
        conditions: Conditions | None = None,
        plan_for: Callable[[JobSpec, random.Random, datetime], JobPlan] | None = None,
        first_id: int = 1000,
    ) -> None:
        self.clock = clock
        self.conditions = conditions if conditions is not None else Conditions()
        self.rng = random.Random(seed)
        self._plan_for = plan_for
        self._next_id = first_id
        self._jobs: dict[str, _Job] = {}
        self._by_tag: dict[str, Submission] = {}
        self.outages: list[Outage] = list(self.conditions.accounting_outages)
        self.calls: Counter[str] = Counter()
        self.calm_since: datetime | None = None

    def calm(self) -> None:
        """From now on calls are neither slow nor failing, and accounting is up (a test
        uses it to bound how long a tracker may take once the storm is over)."""
        now = self.clock.now()
        self.calm_since = now
        seconds = (now - self.clock.start).total_seconds()
        self.outages = [evolve(o, end_s=min(o.end_s, seconds)) for o in self.outages]

    def add_outage(self, start_s: float, end_s: float) -> None:
        """Accounting goes down between two points of virtual time (seconds)."""
        if not 0 <= start_s <= end_s:
            raise ValueError(f"an outage needs 0 <= start <= end, got {start_s}..{end_s}")
        self.outages.append(Outage(start_s=start_s, end_s=end_s))

    # -- the truth ----------------------------------------------------------------------

    def truth(self, native_id: str) -> Truth:
        job = self._job(native_id)
        ended = self.clock.now() >= job.ended_at
        return Truth(
            native_id=native_id,
            state=job.outcome if ended else None,
            exit=job.exit if ended else None,
            ended_at=job.ended_at if ended else None,
            restarts=len(job.segments) - 1,
            submitted_at=job.submitted_at,
            cancel_requested=job.cancel_requested,
            cancelled_live=job.cancelled_live,
        )

    def plan(self, native_id: str) -> JobPlan:
        return self._job(native_id).plan

    @property
    def native_ids(self) -> list[str]:
        return list(self._jobs)

    def last_end(self) -> datetime | None:
        """When the last job ends (as planned now)."""
        return max((job.ended_at for job in self._jobs.values()), default=None)

    def accounting_down(self, at: datetime | None = None) -> bool:
        seconds = ((at or self.clock.now()) - self.clock.start).total_seconds()
        return any(o.start_s <= seconds < o.end_s for o in self.outages)

    def accounting_back_at(self) -> datetime:
        """When the last known outage ends (the clock's start if there is none)."""
        end = max((o.end_s for o in self.outages), default=0.0)
        return self.clock.start + timedelta(seconds=end)

    def _job(self, native_id: str) -> _Job:
        try:
            return self._jobs[native_id]
        except KeyError:
            raise KeyError(f"the simulator never submitted a job {native_id!r}") from None

    # -- scheduler actions --------------------------------------------------------------

    def submit(self, spec: JobSpec) -> Submission:
        now = self.clock.now()
        base = str(self._next_id)
        self._next_id += 1
        if spec.array:
            task_ids = tuple(f"{base}_{index}" for index in expand_array_spec(spec.array))
        else:
            task_ids = (base,)
        for native_id in task_ids:
            if self._plan_for is not None:
                plan = self._plan_for(spec, self.rng, now)
            else:
                plan = random_plan(self.conditions, self.rng, now)
            plan = plan_from_options(spec, plan)
            self._jobs[native_id] = _Job(
                native_id=native_id,
                spec=spec,
                plan=plan,
                submitted_at=now,
                segments=_segments(plan, now),
                outcome=plan.outcome,
                exit=plan.exit,
            )
        submission = Submission(
            native_id=base,
            array_task_ids=task_ids if spec.array else (),
            submitted_at=now,
        )
        if spec.tag:
            self._by_tag[spec.tag] = submission
        return submission

    def find_submission(self, tag: str) -> Submission | None:
        """The job a submit with this tag created, if any."""
        return self._by_tag.get(tag)

    def cancel(self, native_id: str) -> None:
        """Cancel now: a no-op for a job that already ended (it keeps its outcome)."""
        job = self._jobs.get(native_id)
        if job is None:
            return
        job.cancel_requested = True
        now = self.clock.now()
        where = job.where(now)
        if where is None:
            return
        state, restarts, segment = where
        del job.segments[restarts + 1 :]
        if state is State.QUEUED:
            segment.started_at = None
            job.exit = None
        else:
            job.exit = ExitStatus.killed(15)
        segment.ended_at = now
        job.outcome = State.CANCELLED
        job.cancelled_live = True

    # -- what the sources say -----------------------------------------------------------

    def queue_view(self, native_id: str) -> Observation:
        now = self.clock.now()
        job = self._jobs.get(native_id)
        if job is None:
            return Observation(
                native_id=native_id,
                source=Source.QUEUE,
                observed_at=now,
                absence=Absence.ABSENT,
                detail="not a job id",
            )
        where = job.where(now)
        if where is not None:
            state, restarts, segment = where
            started = segment.started_at if state is State.RUNNING else None
            return Observation(
                native_id=native_id,
                source=Source.QUEUE,
                observed_at=now,
                state=state,
                restarts=restarts,
                stats=JobStats(submitted_at=job.submitted_at, started_at=started),
            )
        end = job.ended_at
        since_end = (now - end).total_seconds()
        purge = self.conditions.purge_after_s
        if purge is not None and since_end >= purge:
            return Observation(
                native_id=native_id,
                source=Source.QUEUE,
                observed_at=now,
                absence=Absence.UNKNOWN,
                detail="purged",
            )
        reuse = self.conditions.reuse_after_s
        if reuse is not None and since_end >= reuse:
            # Another user's job now has this id.
            return Observation(
                native_id=native_id,
                source=Source.QUEUE,
                observed_at=now,
                state=State.RUNNING,
                restarts=0,
                stats=JobStats(submitted_at=end + timedelta(seconds=reuse)),
            )
        if since_end >= job.plan.queue_linger_s:
            return Observation(
                native_id=native_id, source=Source.QUEUE, observed_at=now, absence=Absence.ABSENT
            )
        # The queue only lies about failures: it lists them COMPLETED, with no exit.
        lie = job.plan.queue_says_completed and job.outcome is State.FAILED
        return Observation(
            native_id=native_id,
            source=Source.QUEUE,
            observed_at=now,
            state=State.COMPLETED if lie else job.outcome,
            restarts=len(job.segments) - 1,
            stats=JobStats(
                submitted_at=job.submitted_at,
                started_at=job.segments[-1].started_at,
                finished_at=end,
                exit=None if lie else job.exit,
            ),
        )

    def accounting_view(self, native_id: str, submitted_after: datetime | None) -> Observation:
        now = self.clock.now()
        job = self._jobs.get(native_id)
        if job is None:
            return Observation(
                native_id=native_id,
                source=Source.ACCOUNTING,
                observed_at=now,
                absence=Absence.NO_RECORD,
            )
        purge = self.conditions.purge_after_s
        if purge is not None and now >= job.ended_at + timedelta(seconds=purge):
            return Observation(
                native_id=native_id,
                source=Source.ACCOUNTING,
                observed_at=now,
                absence=Absence.UNKNOWN,
                detail="purged",
            )
        if now < job.submitted_at + timedelta(seconds=job.plan.record_lag_s):
            old = job.plan.old_record
            if old is not None and (submitted_after is None or old.submitted_at >= submitted_after):
                # An unbounded query finds the older job that had this id.
                return Observation(
                    native_id=native_id,
                    source=Source.ACCOUNTING,
                    observed_at=now,
                    state=old.state,
                    final=True,
                    stats=JobStats(
                        submitted_at=old.submitted_at,
                        finished_at=old.submitted_at + timedelta(hours=1),
                        exit=old.exit,
                    ),
                )
            return Observation(
                native_id=native_id,
                source=Source.ACCOUNTING,
                observed_at=now,
                absence=Absence.NO_RECORD,
            )
        if now < job.ended_at + timedelta(seconds=job.plan.final_lag_s):
            # The database lags: it still shows the job waiting or running.
            where = job.where(now)
            state, restarts = (
                (where[0], where[1])
                if where is not None
                else (State.RUNNING, len(job.segments) - 1)
            )
            return Observation(
                native_id=native_id,
                source=Source.ACCOUNTING,
                observed_at=now,
                state=state,
                restarts=restarts,
                stats=JobStats(submitted_at=job.submitted_at),
            )
        return Observation(
            native_id=native_id,
            source=Source.ACCOUNTING,
            observed_at=now,
            state=job.outcome,
            final=True,
            restarts=len(job.segments) - 1,
            stats=JobStats(
                submitted_at=job.submitted_at,
                started_at=job.segments[-1].started_at,
                finished_at=job.ended_at,
                exit=self._recorded_exit(job.exit),
            ),
        )

    def _recorded_exit(self, status: ExitStatus | None) -> ExitStatus | None:
        if status is None or status.code is None or not self.conditions.lossy_exit_codes:
            return status
        code = status.code - 128 if status.code >= 128 else status.code
        return ExitStatus.from_slurm(f"{code}:0", high_codes_lossy=True)

    # -- calls --------------------------------------------------------------------------

    async def call(self, method: str) -> None:
        """What every backend call goes through: slowness, timeouts, transient errors."""
        self.calls[method] += 1
        conditions = self.conditions
        if self.calm_since is not None:
            return
        if self.rng.random() < conditions.slow_calls:
            delay = _uniform(self.rng, conditions.slow_s)
            if delay >= conditions.timeout_s:
                await self.clock.sleep(conditions.timeout_s)
                raise SchedulerUnavailable(
                    f"simulated {method} timed out after {conditions.timeout_s:g} s"
                )
            await self.clock.sleep(delay)
        if self.rng.random() < conditions.transient_errors:
            raise SchedulerUnavailable(f"simulated {method}: Socket timed out on send/recv")

    def backend(self, name: str = "sim") -> SimulatedBackend:
        return SimulatedBackend(self, name=name)


class SimulatedBackend:
    """A :class:`hpcstate.backend.Backend` over a :class:`SimulatedCluster`.

    One call per method, one Observation per asked id; transient failures raise
    :class:`hpcstate.SchedulerUnavailable` and never become observations.
    """

    def __init__(self, cluster: SimulatedCluster, *, name: str = "sim") -> None:
        self.cluster = cluster
        self.name = name
        self.capabilities = Capabilities(
            array_jobs=True,
            lossless_signals=True,
            accounting=True,
            cancel=True,
            requeue=True,
            adopt=True,
            idempotent_submit=True,
        )
        self.closed = False

    async def submit(self, spec: JobSpec) -> Submission:
        cluster = self.cluster
        try:
            await cluster.call("submit")
        except SchedulerUnavailable:
            if cluster.rng.random() < cluster.conditions.lost_submit_answers:
                cluster.submit(spec)  # it went through; the answer did not come back
            raise
        return cluster.submit(spec)

    async def find_submission(self, tag: str) -> Submission | None:
        """Look a submit up by its tag (what makes a retried submit safe)."""
        await self.cluster.call("find_submission")
        return self.cluster.find_submission(tag)

    async def queue(self, native_ids: Sequence[str]) -> Sequence[Observation]:
        if not native_ids:
            return ()
        await self.cluster.call("queue")
        return [self.cluster.queue_view(native_id) for native_id in native_ids]

    async def accounting(self, query: AccountingQuery) -> Sequence[Observation]:
        if not query.native_ids:
            return ()
        await self.cluster.call("accounting")
        if self.cluster.accounting_down():
            raise SchedulerUnavailable("simulated accounting: slurmdbd is not responding")
        return [
            self.cluster.accounting_view(native_id, query.submitted_after)
            for native_id in query.native_ids
        ]

    async def cancel(self, native_ids: Sequence[str]) -> None:
        if not native_ids:
            return
        await self.cluster.call("cancel")
        for native_id in native_ids:
            self.cluster.cancel(native_id)

    async def close(self) -> None:
        self.closed = True


# -- judging verdicts ------------------------------------------------------------------


def exit_compatible(truth: ExitStatus | None, verdict: ExitStatus | None) -> bool:
    """Whether a verdict's exit status can be the true one.

    Missing on either side is compatible (nothing claimed, or nothing to compare). An
    exact value must be equal. An ambiguous code must be one of what it admits to: the
    code itself, a signal's shell code (128+N), or the code before a lossy sacct took
    128 off.
    """
    if truth is None or verdict is None:
        return True
    if verdict.exact:
        return (truth.code, truth.signal) == (verdict.code, verdict.signal)
    if verdict.code is None:
        return truth.signal == verdict.signal
    return verdict.code in (truth.code, truth.shell_code) or truth.code == verdict.code + 128


def judge_first_verdict(
    truth: Truth, state: State, *, confirmed: bool, exit: ExitStatus | None
) -> str | None:
    """Why a first verdict is wrong, or None when it is acceptable.

    The rules (the promise hpcstate makes about the FIRST verdict a consumer sees):

    1. A confirmed verdict must be the true state, with a compatible exit status.
    2. An unconfirmed verdict never claims a failure: it may only be COMPLETED (the
       grace fallback, flagged unconfirmed) or GONE (nobody knows).
    3. A failure verdict (any of FAILURES) for a job that truly succeeded is wrong,
       confirmed or not.
    4. A verdict before the job truly ended is wrong.

    One exception to 2: an unconfirmed CANCELLED is acceptable for a job that a cancel
    truly ended while it was queued or running (``Truth.cancelled_live``), with a
    compatible exit status. A cancel that reached a job after it had ended on its own
    changed nothing: CANCELLED for that job is wrong, confirmed or not.
    """
    if truth.state is None:
        return f"verdict {state} before the job ended"
    if state not in TERMINAL:
        return f"{state} is not a verdict"
    if state is State.CANCELLED and not confirmed and truth.cancelled_live:
        if not exit_compatible(truth.exit, exit):
            shown = "none" if exit is None else exit.describe()
            true_exit = "none" if truth.exit is None else truth.exit.describe()
            return f"unconfirmed cancelled with {shown}, truly {true_exit}"
        return None
    failure = state not in (State.COMPLETED, State.GONE)
    if failure and truth.state is State.COMPLETED:
        return f"{state} for a job that completed"
    if confirmed:
        if state is not truth.state:
            return f"confirmed {state}, truly {truth.state}"
        if not exit_compatible(truth.exit, exit):
            shown = "none" if exit is None else exit.describe()
            true_exit = "none" if truth.exit is None else truth.exit.describe()
            return f"confirmed {state} with {shown}, truly {true_exit}"
        return None
    if failure:
        return f"unconfirmed failure {state} (truly {truth.state})"
    return None
