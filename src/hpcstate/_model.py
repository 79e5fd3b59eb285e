"""Frozen records: what we know of a job (JobStats), one tracked item (RunItem),
a run of items (Run), and one observation of a job (Observation)."""

from __future__ import annotations

import enum
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from attrs import evolve, field, frozen

from ._exit import ExitStatus
from ._reasons import Reason
from ._states import FAILURES, OCCUPYING, TERMINAL, WAITING, Source, State


def _aware(_: object, attribute: Any, value: Any) -> None:
    # Naive datetimes are how trackers get DST and timezone bugs: refuse them.
    if value is not None and value.utcoffset() is None:
        raise ValueError(f"{attribute.name} must be timezone-aware, got naive {value!r}")


def _non_negative(_: object, attribute: Any, value: float | None) -> None:
    if value is not None and value < 0:
        raise ValueError(f"{attribute.name} must be >= 0, got {value!r}")


@frozen(kw_only=True)
class Marker:
    """A note attached to an item: a stable ``code`` for programs, ``text`` for people."""

    code: str
    text: str


class MarkerCode(str, enum.Enum):
    UNCONFIRMED = "unconfirmed"  # a verdict no authoritative source confirmed
    EXIT_AMBIGUOUS = "exit_ambiguous"  # the exit status is not known exactly
    STEP_FAILED = "step_failed"  # the job ended 0 but a step (srun) failed
    SELF_REPORTED = "self_reported"  # the job reported its own outcome
    CANCEL_REQUESTED = "cancel_requested"
    CANCEL_LIVE = "cancel_live"  # the queue listed the job active after the cancel request
    CANCEL_FAILED = "cancel_failed"  # the cancel call failed: the job may run on
    SUBMIT_IN_DOUBT = "submit_in_doubt"  # the submit's answer was lost; never resubmitted
    REQUEUED = "requeued"
    SOURCES_DISAGREE = "sources_disagree"
    GONE = "gone"
    ALREADY_DONE = "already_done"  # submit --once found its sentinel
    OUTPUT_CHECK = "output_check"
    UNREACHABLE = "unreachable"  # the tracker cannot reach the backend right now
    UNREADABLE = "unreadable"  # a scheduler object could not be read (named in the text)

    def __str__(self) -> str:
        return self.value


@frozen(kw_only=True)
class JobStats:
    """What the sources told us about one job or array task. Every field may be unknown."""

    exit: ExitStatus | None = None
    exit_source: Source | None = None
    derived_exit: ExitStatus | None = None  # Slurm DerivedExitCode: worst srun step
    reason: Reason | None = None
    submitted_at: datetime | None = field(default=None, validator=_aware)
    started_at: datetime | None = field(default=None, validator=_aware)
    finished_at: datetime | None = field(default=None, validator=_aware)
    finished_at_approx: bool = False  # stamped from an observation time, not a record
    elapsed_s: float | None = field(default=None, validator=_non_negative)
    cpu_time_s: float | None = field(default=None, validator=_non_negative)
    max_rss_bytes: int | None = field(default=None, validator=_non_negative)
    nodes: tuple[str, ...] = ()
    confirmed_by: Source | None = None


EMPTY_STATS = JobStats()


@frozen(kw_only=True)
class RunItem:
    """One tracked job or array task.

    ``handle`` is the backend's handle on the *current* execution (a pid with its
    start time, a pod uid...). A waiting item owns no execution: no handle, no
    ``started_at``. ``version`` increases with every change, for compare-and-set.
    """

    id: str
    run_id: str
    backend: str
    native_id: str | None = None
    array_index: int | None = None
    name: str = ""
    state: State = State.PENDING
    version: int = 0
    stats: JobStats = EMPTY_STATS
    markers: tuple[Marker, ...] = ()
    restarts: int = 0
    handle: str | None = None
    # No validators here: the machine builds items only from validated Observations and
    # the deserializer checks offsets itself, and this constructor is on the poll path.
    created_at: datetime
    updated_at: datetime
    last_seen_at: datetime | None = None  # last time any source listed the job (ever seen?)
    last_active_at: datetime | None = None  # ... as queued/running in the queue (grace restart)
    settling_since: datetime | None = None
    settling_cause: str | None = None  # the Input that started settling (did it ever run?)

    def __attrs_post_init__(self) -> None:
        if self.created_at.utcoffset() is None:
            raise ValueError(f"created_at must be timezone-aware, got {self.created_at!r}")

    @property
    def terminal(self) -> bool:
        return self.state in TERMINAL

    @property
    def confirmed(self) -> bool:
        """True when an authoritative source gave this verdict (never for GONE or grace)."""
        return self.state in TERMINAL and self.stats.confirmed_by is not None

    @property
    def succeeded(self) -> bool:
        """Confirmed success: the only thing success hooks may fire on."""
        return self.state is State.COMPLETED and self.confirmed

    @property
    def failed(self) -> bool:
        return self.state in FAILURES

    @property
    def exit(self) -> ExitStatus | None:
        return self.stats.exit

    def has_marker(self, code: str) -> bool:
        return any(m.code == code for m in self.markers)


def _items(items: Sequence[RunItem]) -> tuple[RunItem, ...]:
    return tuple(items)


def status_of(states: Sequence[State]) -> State:
    """The status of a run whose items are in ``states`` (:attr:`Run.status`; a
    listing that counts states per run asks this without building the items)."""
    if not states:
        return State.PENDING
    if any(state in OCCUPYING for state in states):
        return State.RUNNING
    if any(state in WAITING for state in states):
        if any(state in TERMINAL for state in states):
            return State.RUNNING  # some done, some still to go: the run is under way
        return State.QUEUED if State.QUEUED in states else State.PENDING
    distinct = set(states)
    if len(distinct) == 1:
        return states[0]
    failures = distinct & FAILURES
    if failures:
        return State.FAILED if len(failures) > 1 else failures.pop()
    return State.GONE if State.GONE in distinct else State.FAILED


@frozen(kw_only=True)
class Run:
    """What a user submitted once: one item, or one per array task."""

    id: str
    backend: str
    name: str = ""
    created_at: datetime = field(validator=_aware)
    items: tuple[RunItem, ...] = field(converter=_items)

    @property
    def status(self) -> State:
        """Running while any item runs or settles; the common verdict once all are done.

        Mixed verdicts are FAILED (the worst wins), with the items telling which.
        """
        return status_of([item.state for item in self.items])

    @property
    def confirmed(self) -> bool:
        return bool(self.items) and all(item.confirmed for item in self.items)

    @property
    def running_count(self) -> int:
        """Items holding resources, settling ones included (a concurrency cap counts them)."""
        return sum(1 for item in self.items if item.state in OCCUPYING)

    @property
    def waiting_count(self) -> int:
        return sum(1 for item in self.items if item.state in WAITING)

    @property
    def completed_count(self) -> int:
        """Items with a verdict (settling ones excluded)."""
        return sum(1 for item in self.items if item.state in TERMINAL)

    @property
    def progress(self) -> float:
        return self.completed_count / len(self.items) if self.items else 0.0

    def with_item(self, item: RunItem) -> Run:
        return evolve(self, items=tuple(item if i.id == item.id else i for i in self.items))


class Absence(enum.Enum):
    """Why an observation carries no state."""

    ABSENT = "absent"  # the queue does not list it; another source may know
    UNKNOWN = "unknown"  # the scheduler has no trace and no other source ever will
    NO_RECORD = "no_record"  # accounting has no record (yet)

    def __str__(self) -> str:
        return self.value


@frozen(kw_only=True)
class Observation:
    """What one source said of one job (or array task) at one time.

    Exactly one of ``state`` and ``absence`` is set. ``final`` says the source is
    authoritative for a terminal ``state`` (accounting, Flux's job-list for an inactive
    job, the local process's wait status); a non-final terminal COMPLETED only settles.
    """

    native_id: str
    source: Source
    observed_at: datetime = field(validator=_aware)
    state: State | None = None
    absence: Absence | None = None
    final: bool = False
    stats: JobStats = EMPTY_STATS
    restarts: int | None = None
    handle: str | None = None
    detail: str = ""  # free text for markers ("queue listed COMPLETED", an error...)
    markers: tuple[Marker, ...] = ()  # notes the source wants on the item (e.g. "137 made up")

    def __attrs_post_init__(self) -> None:
        if (self.state is None) == (self.absence is None):
            raise ValueError("an Observation has exactly one of state and absence")
        if self.state in (State.PENDING, State.SETTLING):
            raise ValueError(f"{self.state} is hpcstate's own state, not an observation")
