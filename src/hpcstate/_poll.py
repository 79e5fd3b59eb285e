"""The poll, pure: when to ask a backend what, how long to sleep, what answers make of items.

Everything here is a function of its arguments: a :class:`Cadence` (the knobs, each with
its unit), a :class:`Ledger` (what the loop remembers between polls: the last queue and
accounting call per backend, quiet and failed polls, the last submit), the tracker's
cached items (anything shaped like :class:`Tracked`) and ``now``. No I/O, no clock reads,
no asyncio, no random generator: the loop's jitter is a draw in [0, 1) that the caller
makes and passes in (``next_interval(..., draw=rng.random())``), so the same draw gives
the same interval. The numbers are the tracker's own (runtime/_tracker.py before this
module existed), expression for expression; every factor of ``fast_interval`` that was
spelled out in six methods is a named constant below, with the reason it has that value.

Public signatures (``hpcstate._poll``)::

    class Cadence(*, grace: timedelta = DEFAULT_GRACE, fast_interval: float = 1.0,
                  max_interval: float = 30.0, max_error_interval: float = 120.0,
                  queue_interval: float = 60.0, accounting_lag: float = 1.0,
                  accounting_interval: float = 4.0,
                  late_check_interval: float = <max_interval>,
                  late_check_window: timedelta = timedelta(days=1),
                  lease_ttl: float = 10.0, wake_check_interval: float = 0.5)
        .grace_lead -> timedelta                         # GRACE_LEAD fast intervals
        .recent_submit_window -> float                   # seconds
    class Ledger(*, last_queue_at: Mapping[str, datetime] = {},
                 queue_quiet: Mapping[str, int] = {},
                 last_accounting_at: Mapping[str, datetime] = {},
                 quiet_polls: int = 0, error_polls: int = 0,
                 last_submit_at: datetime | None = None,
                 taken_over: Mapping[str, datetime] = {})
    class Tracked(Protocol): item: RunItem; extra: Mapping[str, Any];
                             checked_at: datetime | None           (read-only)

    # What the ledger remembers (each returns a new Ledger)
    record_submit(ledger, now) -> Ledger
    record_queue_call(ledger, backend, now) -> Ledger       # ends a takeover's hold
    record_takeover(ledger, backend, previous_poll: datetime | None) -> Ledger
    record_queue_answer(ledger, backend, *, changed: bool) -> Ledger
    record_accounting_call(ledger, backend, now) -> Ledger
    record_poll(ledger, *, errors: bool, changed: bool) -> Ledger
    record_failed_poll(ledger) -> Ledger

    # Decisions
    reports_itself(entry: Tracked) -> bool
    reporting_anywhere(entries: Iterable[Tracked]) -> bool
    submitted_recently(cadence, ledger, now) -> bool
    backoff(cadence, quiet: int) -> float
    queue_pace(cadence, ledger, backend, now) -> float
    queue_due(cadence, ledger, backend, polled: Iterable[Tracked],
              entries: Iterable[Tracked], now) -> bool
    takeover_due(cadence, ledger, backend, now) -> datetime | None
    takeover_hold(cadence, ledger, backend, mine: Iterable[Tracked], now) -> datetime | None
    takeover_wait(cadence, ledger, now) -> float | None
    late_check_due(cadence, entry: Tracked, now) -> bool
    late_checks_due(cadence, unconfirmed: Iterable[Tracked], backend, now) -> list[Tracked]
    expired_late_checks(cadence, unconfirmed: Mapping[str, Tracked], now) -> list[str]
    purged(index: NativeIndex, found: Sequence[Observation]) -> list[tuple[str, Observation]]
    correctable_soon(cadence, unconfirmed: Iterable[Tracked], now) -> bool
    accounting_items(cadence, ledger, backend, working: Mapping[str, RunItem],
                     late: Sequence[Tracked], now) -> list[RunItem]
    accounting_query(items: Sequence[RunItem]) -> AccountingQuery
    accounting_due_in(cadence, ledger, oldest_settling: Mapping[str, datetime],
                      now) -> list[float]
    report_paths(polled: Iterable[Tracked], working: Mapping[str, RunItem], *,
                 running_too: bool) -> dict[str, RunItem]
    next_interval(cadence, ledger, entries: Iterable[Tracked],
                  unconfirmed: Iterable[Tracked], now, draw: float) -> float

    # Answers through the machine
    class NativeIndex(items: Iterable[RunItem]): .first, .more, .native_ids()
    class Applied(*, applied: int, refused, output_failures, reached: frozenset[str])
    apply_answers(working: dict[str, RunItem], index: NativeIndex,
                  found: Sequence[Observation], extras=None, events=None) -> Applied
                  # in place: what the tracker's poller runs
    class Refused(*, item_id, source: Source, error: Exception): .illegal -> bool
    class Reconciled(*, items: dict[str, RunItem], events: dict[str, list[Event]],
                     applied: int = 0, refused: tuple[Refused, ...] = (),
                     output_failures: tuple[str, ...] = ()): .illegal -> int
    reconcile(working: Mapping[str, RunItem], index: NativeIndex,
              found: Sequence[Observation],
              extras: Mapping[str, Sequence[Observation]] | None = None) -> Reconciled
              # apply_answers on a copy (working is read, never changed)
    tick_settling(working: Mapping[str, RunItem], now, grace: timedelta) -> Reconciled

    # Plan: one backend's first asks, before any answer
    class PollPlan(Generic[T], *, entries: tuple[T, ...], polled: tuple[T, ...],
                   index: NativeIndex, ask_queue: bool, held_until: datetime | None,
                   late: tuple[T, ...], forget: tuple[str, ...], ledger: Ledger)
        .queue_ids -> tuple[str, ...]
    plan(cadence, ledger, backend, entries: Collection[T],
         unconfirmed: Iterable[T], now, *, accounting: bool) -> PollPlan[T]

One backend's poll, as the tracker's poller (runtime/_poller.py) runs it: after a newly
held lease, ``record_takeover``; ``p = plan(...)`` (the queue yes/no and its ids, a
takeover's hold, the late checks, the verdicts to forget, the ledger with the queue call
recorded); read the self-reports and output checks of ``p.polled``; ask the queue about
``p.queue_ids`` (if ``p.ask_queue``); ``apply_answers`` (with ``p.index``); read
``report_paths`` of the items as the queue left them and ``apply_answers`` those; ask
accounting about ``accounting_items`` (``accounting_query``, ``record_accounting_call``)
and ``apply_answers``; ``tick_settling``; commit; ``record_queue_answer``. After every
backend, ``record_poll``; the loop sleeps ``next_interval``, or less when
``takeover_wait`` says a held-back queue call falls due first. The later stages are not
in the plan on purpose: which files are read and which items accounting is asked about
depend on what the queue just said.

Everything here is used by the runtime (or by a function it uses), except
:func:`reconcile` (the copying form of :func:`apply_answers`, for tests/core and
bench/core_bench.py, bench/runtime_poll.py; the poller applies in place, see
:func:`apply_answers`).

Which tracker method each replaces: ``_recent_submit`` -> :func:`submitted_recently`,
``_backoff`` -> :func:`backoff`, ``_queue_pace`` -> :func:`queue_pace`, ``_queue_due`` ->
:func:`queue_due` (with ``_reporting_anywhere`` -> :func:`reporting_anywhere`, asked
lazily as before), ``_late_check_due`` -> :func:`late_check_due`, the filter of
``_late_checks`` -> :func:`late_checks_due` (through :func:`plan`), ``_expire_late_checks`` ->
:func:`expired_late_checks` (the tracker logs and forgets the ids returned), the choice
of ``_drop_forgotten`` -> :func:`purged`,
``_correctable_soon`` -> :func:`correctable_soon`, the gate and item list of
``_accounting`` -> :func:`accounting_items` and :func:`accounting_query`,
``_accounting_due_in`` -> :func:`accounting_due_in`, the file choice of
``_remote_reports`` -> :func:`report_paths`, ``next_interval`` -> :func:`next_interval`,
``_after_poll`` -> :func:`record_poll`, and the loop's bookkeeping (``_last_queue_at``,
``_queue_quiet``, ``_last_accounting_at``, ``_last_submit_at``, ``_quiet_polls``,
``_error_polls``) -> the :class:`Ledger` and its ``record_*`` functions; ``_apply`` and
``_advance`` -> :func:`apply_answers` (the shell logs ``refused``, counts ``illegal`` and
cancels ``output_failures``), ``_NativeIndex`` -> :class:`NativeIndex`, the tick loop of
``_poll_backend`` -> :func:`tick_settling`; the takeover rule (the poller's
``_not_taken_just_now``, ``takeover_wait`` and the ledger seeding from
``Leases.taken_over``) -> :func:`record_takeover`, :func:`takeover_hold`,
:func:`takeover_wait`. The late-check
time of each unconfirmed verdict stays on the tracker's entry (``Tracked.checked_at``):
it is per item, and the tracker sets it when it asks.

One difference, on purpose: :func:`backoff` caps the interval when ``1.5 ** quiet``
overflows a float (after about 1,750 quiet polls, some 14 hours at a 30 s pace), where
the tracker's formula raised ``OverflowError`` from ``next_interval`` (outside the loop's
``try``: the poll loop died). Below that, the numbers are the same.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, Final, Generic, Protocol, TypeVar

from attrs import Factory, evolve, field, frozen

from ._errors import ConfigError, IllegalTransition
from ._events import Event
from ._machine import DEFAULT_GRACE, Step, add_marker, advance, grace_deadline, tick
from ._model import Absence, Marker, MarkerCode, Observation, RunItem
from ._states import FAILURES, Source, State
from .backend import AccountingQuery

__all__ = [
    "ACCOUNTING_WAKE_AFTER",
    "BACKOFF",
    "ERROR_BACKOFF",
    "GRACE_LEAD",
    "GRACE_WAKE_LEAD",
    "JITTER_LOW",
    "JITTER_SPAN",
    "MIN_GRACE_WAKE",
    "PENDING_EVERY",
    "QUEUE_EARLY",
    "RECENT_SUBMIT",
    "Cadence",
    "Ledger",
    "NativeIndex",
    "PollPlan",
    "Reconciled",
    "Refused",
    "Tracked",
    "accounting_due_in",
    "accounting_items",
    "accounting_query",
    "backoff",
    "correctable_soon",
    "expired_late_checks",
    "late_check_due",
    "late_checks_due",
    "next_interval",
    "plan",
    "purged",
    "queue_due",
    "queue_pace",
    "reconcile",
    "record_accounting_call",
    "record_failed_poll",
    "record_poll",
    "record_queue_answer",
    "record_queue_call",
    "record_submit",
    "record_takeover",
    "report_paths",
    "reporting_anywhere",
    "reports_itself",
    "submitted_recently",
    "takeover_due",
    "takeover_hold",
    "takeover_wait",
    "tick_settling",
]

# -- the factors of fast_interval, and why -------------------------------------------------

#: The loop sleeps its interval times a factor drawn uniformly from
#: [JITTER_LOW, JITTER_LOW + JITTER_SPAN) = [0.8, 1.2): processes that share a scheduler
#: drift apart instead of polling it in step.
JITTER_LOW: Final = 0.8
JITTER_SPAN: Final = 0.4
#: A backend's queue call is due once this fraction of its pace has passed, not all of
#: it: the jitter may wake the loop at 0.8 of an interval, and a call due "now" must not
#: slip to the poll after. Below JITTER_LOW on purpose.
QUEUE_EARLY: Final = 0.75
#: Each quiet poll (queue call, or whole poll, that changed nothing) stretches the
#: interval by this factor, up to ``max_interval``: long jobs are asked less often.
BACKOFF: Final = 1.5
#: Each poll in a row that met an error doubles the interval, up to
#: ``max_error_interval``: an unreachable scheduler is not hammered.
ERROR_BACKOFF: Final = 2.0
#: For this many fast intervals after a submit the loop polls at ``fast_interval``: the
#: first sightings (queued, running, a short job's end) come soon after a submit.
RECENT_SUBMIT: Final = 10
#: While items wait to be submitted (PENDING, e.g. behind a concurrency limit), the loop
#: polls at least every this many fast intervals, so that a freed slot is filled soon.
PENDING_EVERY: Final = 5
#: This many fast intervals before a settling item's grace runs out, the queue and
#: accounting are asked whatever their pace: only the queue can say the job is still
#: listed (which restarts the grace); otherwise the unconfirmed fallback is taken.
GRACE_LEAD: Final = 2
#: The loop wakes no later than this many fast intervals before a grace runs out, so
#: its poll lands inside the GRACE_LEAD window even half an interval late.
GRACE_WAKE_LEAD: Final = 1.5
#: Seconds after accounting falls due that the loop wakes for it: just after, so that
#: the due test (``elapsed >= lag``) holds despite rounding.
ACCOUNTING_WAKE_AFTER: Final = 0.01
#: The shortest sleep before a grace runs out (a grace already inside its lead is
#: asked about at the next poll, without a busy loop).
MIN_GRACE_WAKE: Final = 0.1

_POLLED: Final = frozenset({State.QUEUED, State.RUNNING, State.SETTLING})
_CANCEL_REQUESTED: Final = MarkerCode.CANCEL_REQUESTED.value
_SELF_REPORTED: Final = MarkerCode.SELF_REPORTED.value
_OUTPUT_CHECK: Final = MarkerCode.OUTPUT_CHECK.value
#: Read once per observation in apply_answers: a module constant is about four times
#: cheaper than ``Source.OUTPUT_CHECK`` (a lookup on the enum class) on Python 3.11.
_OUTPUT_CHECK_SOURCE: Final = Source.OUTPUT_CHECK


# -- the knobs -----------------------------------------------------------------------------

_SECONDS_KNOBS: Final = (
    # The order in which the tracker has always checked them (the first bad one is named).
    "fast_interval",
    "queue_interval",
    "accounting_lag",
    "accounting_interval",
    "lease_ttl",
    "max_interval",
    "max_error_interval",
    "late_check_interval",
    "wake_check_interval",
)


@frozen(kw_only=True)
class Cadence:
    """Every knob of the poll cadence, with its unit; the defaults are the Tracker's.

    ``grace`` (timedelta): how long a settling item waits for confirmation before the
    unconfirmed fallback verdict. ``fast_interval`` (s): the fastest poll interval.
    ``max_interval`` (s): the slowest interval of a quiet queue. ``max_error_interval``
    (s): the slowest retry interval of an unreachable backend. ``queue_interval`` (s): the
    queue's safety-net pace when every active job reports its own end.
    ``accounting_lag`` (s): how long after a job settles accounting is first asked.
    ``accounting_interval`` (s): the least time between two accounting calls of one
    backend. ``late_check_interval`` (s, default ``max_interval``): how often an
    unconfirmed verdict is asked about after its grace. ``late_check_window``
    (timedelta): how long after its verdict it is asked about at all. ``lease_ttl`` (s):
    how long a poller's lease lasts without renewal. ``wake_check_interval`` (s): how often the
    store is looked at for other processes' news.

    A negative or NaN value raises :class:`~hpcstate.ConfigError` naming the knob.
    """

    # Each knob's metadata: "help" (what it is, as the docs and the config file say it).
    grace: timedelta = field(
        default=DEFAULT_GRACE, metadata={"help": "how long a settling job waits for confirmation"}
    )
    fast_interval: float = field(default=1.0, metadata={"help": "the fastest poll interval"})
    max_interval: float = field(
        default=30.0, metadata={"help": "the slowest poll interval of a quiet queue"}
    )
    max_error_interval: float = field(
        default=120.0,
        metadata={"help": "the slowest retry interval of an unreachable backend"},
    )
    queue_interval: float = field(
        default=60.0,
        metadata={"help": "the queue safety net of jobs that report their own end"},
    )
    accounting_lag: float = field(
        default=1.0, metadata={"help": "how long after a job's end accounting is first asked"}
    )
    accounting_interval: float = field(
        default=4.0, metadata={"help": "the least time between two accounting calls"}
    )
    late_check_interval: float = field(
        default=Factory(lambda self: self.max_interval, takes_self=True),
        metadata={"help": "how often an unconfirmed verdict is re-checked"},
    )
    late_check_window: timedelta = field(
        default=timedelta(days=1),
        metadata={"help": "how long an unconfirmed verdict is re-checked"},
    )
    lease_ttl: float = field(
        default=10.0, metadata={"help": "how long a poller's lease lasts without renewal"}
    )
    wake_check_interval: float = field(
        default=0.5, metadata={"help": "how often the store is checked for others' changes"}
    )

    def __attrs_post_init__(self) -> None:
        # The one place the knobs are checked (the Tracker's messages, word for word).
        if not isinstance(self.late_check_window, timedelta):
            raise ConfigError(
                f"late_check_window must be a timedelta, got {self.late_check_window!r}"
            )
        if self.late_check_window < timedelta(0):
            raise ConfigError(
                f"late_check_window must not be negative, got {self.late_check_window}"
            )
        for knob in _SECONDS_KNOBS:
            seconds = getattr(self, knob)
            if (
                isinstance(seconds, bool)
                or not isinstance(seconds, int | float)
                or not seconds >= 0  # also refuses NaN
            ):
                raise ConfigError(f"{knob} must be a number of seconds >= 0, got {seconds!r}")
        if not isinstance(self.grace, timedelta):
            raise ConfigError(f"grace must be a timedelta, got {self.grace!r}")
        if self.grace < timedelta(0):
            raise ConfigError(f"grace must not be negative, got {self.grace}")

    @property
    def grace_lead(self) -> timedelta:
        """How long before a grace runs out queue and accounting are asked regardless."""
        return timedelta(seconds=GRACE_LEAD * self.fast_interval)

    @property
    def recent_submit_window(self) -> float:
        """Seconds after a submit during which the loop polls fast."""
        return RECENT_SUBMIT * self.fast_interval


# -- what the loop remembers ---------------------------------------------------------------


def _frozen_map(value: Mapping[str, Any]) -> Mapping[str, Any]:
    return dict(value)


@frozen(kw_only=True)
class Ledger:
    """The poll loop's memory between polls (per process, not stored).

    ``last_queue_at`` / ``last_accounting_at``: backend -> when its last queue /
    accounting call was made. ``queue_quiet``: backend -> queue calls in a row that
    changed nothing. ``quiet_polls`` / ``error_polls``: whole polls in a row without a
    change / with an error. ``last_submit_at``: the last submit this process made or saw.
    ``taken_over``: backend -> the previous holder's last poll, for a lease this process
    took over from ANOTHER holder and whose first queue call it has not made yet (see
    :func:`takeover_hold`). Change it only through the ``record_*`` functions (each
    returns a new Ledger)."""

    last_queue_at: Mapping[str, datetime] = field(factory=dict, converter=_frozen_map)
    queue_quiet: Mapping[str, int] = field(factory=dict, converter=_frozen_map)
    last_accounting_at: Mapping[str, datetime] = field(factory=dict, converter=_frozen_map)
    quiet_polls: int = 0
    error_polls: int = 0
    last_submit_at: datetime | None = None
    taken_over: Mapping[str, datetime] = field(factory=dict, converter=_frozen_map)


def record_submit(ledger: Ledger, now: datetime) -> Ledger:
    """A submit was made (or another process's new item was seen) at ``now``."""
    return evolve(ledger, last_submit_at=now)


def record_queue_call(ledger: Ledger, backend: str, now: datetime) -> Ledger:
    """``backend``'s queue is asked at ``now`` (answered or not). The first queue call
    after a takeover ends its hold (:func:`takeover_hold`)."""
    if backend in ledger.taken_over:
        taken = {k: v for k, v in ledger.taken_over.items() if k != backend}
        return evolve(
            ledger, last_queue_at={**ledger.last_queue_at, backend: now}, taken_over=taken
        )
    return evolve(ledger, last_queue_at={**ledger.last_queue_at, backend: now})


def record_takeover(ledger: Ledger, backend: str, previous_poll: datetime | None) -> Ledger:
    """This process newly holds ``backend``'s lease. ``previous_poll``: the previous
    holder's last poll when the lease was taken from ANOTHER holder (None for a new
    lease, or for our own lease back after it lapsed: our own cadence memory is the
    better guide, and any hold of an earlier takeover ends).

    A takeover carries the cadence on from the previous holder's last poll: it counts as
    the last queue call (unless ours is later), so a self-reporting job's safety net stays
    ``queue_interval`` apart across the takeover, and the first queue call is held back
    until that poll plus the queue's pace (:func:`takeover_hold`)."""
    if previous_poll is None:
        if backend not in ledger.taken_over:
            return ledger
        return evolve(
            ledger, taken_over={k: v for k, v in ledger.taken_over.items() if k != backend}
        )
    last = ledger.last_queue_at.get(backend)
    queue = ledger.last_queue_at
    if last is None or last < previous_poll:
        queue = {**queue, backend: previous_poll}
    return evolve(
        ledger,
        last_queue_at=queue,
        taken_over={**ledger.taken_over, backend: previous_poll},
    )


def record_queue_answer(ledger: Ledger, backend: str, *, changed: bool) -> Ledger:
    """After a poll that called ``backend``'s queue: ``changed`` (an item changed, or
    something was submitted) resets its quiet count, else it grows by one."""
    quiet = 0 if changed else ledger.queue_quiet.get(backend, 0) + 1
    return evolve(ledger, queue_quiet={**ledger.queue_quiet, backend: quiet})


def record_accounting_call(ledger: Ledger, backend: str, now: datetime) -> Ledger:
    """``backend``'s accounting is asked at ``now`` (answered or not)."""
    return evolve(ledger, last_accounting_at={**ledger.last_accounting_at, backend: now})


def record_poll(ledger: Ledger, *, errors: bool, changed: bool) -> Ledger:
    """After a whole poll: ``errors`` (any backend's), ``changed`` (events or submits)."""
    return evolve(
        ledger,
        error_polls=ledger.error_polls + 1 if errors else 0,
        quiet_polls=0 if changed else ledger.quiet_polls + 1,
    )


def record_failed_poll(ledger: Ledger) -> Ledger:
    """A poll raised (a store hiccup, a bug): it counts as an error poll."""
    return evolve(ledger, error_polls=ledger.error_polls + 1)


# -- the tracker's items, as this module reads them ----------------------------------------


class Tracked(Protocol):
    """One cached item as the tracker holds it (its ``_Entry`` is one)."""

    @property
    def item(self) -> RunItem: ...

    @property
    def extra(self) -> Mapping[str, Any]:
        """The item's submit-time extras: ``self_reports`` (bool), ``report_file``."""
        ...

    @property
    def checked_at(self) -> datetime | None:
        """When accounting was last asked about this unconfirmed verdict."""
        ...


_T = TypeVar("_T", bound=Tracked)


def reports_itself(entry: Tracked) -> bool:
    """The job writes its own report file when its payload ends (decided at submit)."""
    return entry.extra.get("self_reports") is True


def reporting_anywhere(entries: Iterable[Tracked]) -> bool:
    """A job that reports its own end is queued or running (the loop runs fast)."""
    settling = State.SETTLING
    return any(
        e.item.state in _POLLED and e.item.state is not settling and reports_itself(e)
        for e in entries
    )


# -- the queue -----------------------------------------------------------------------------


def submitted_recently(cadence: Cadence, ledger: Ledger, now: datetime) -> bool:
    """Within RECENT_SUBMIT fast intervals of a submit: its first sightings come soon."""
    return (
        ledger.last_submit_at is not None
        and (now - ledger.last_submit_at).total_seconds() < RECENT_SUBMIT * cadence.fast_interval
    )


def backoff(cadence: Cadence, quiet: int) -> float:
    """The interval after ``quiet`` polls that changed nothing: BACKOFF (1.5x) each,
    capped at ``max_interval`` (also when the power overflows a float)."""
    try:
        pace: float = cadence.fast_interval * BACKOFF ** float(quiet)
    except OverflowError:
        pace = math.inf if cadence.fast_interval > 0 else 0.0
    return min(cadence.max_interval, pace)


def queue_pace(cadence: Cadence, ledger: Ledger, backend: str, now: datetime) -> float:
    """The adaptive interval of ``backend``'s queue calls: fast after a submit, then
    1.5x per queue call that changed nothing, up to ``max_interval``."""
    if submitted_recently(cadence, ledger, now):
        return cadence.fast_interval
    return backoff(cadence, ledger.queue_quiet.get(backend, 0))


def queue_due(
    cadence: Cadence,
    ledger: Ledger,
    backend: str,
    polled: Iterable[Tracked],
    entries: Iterable[Tracked],
    now: datetime,
) -> bool:
    """Is ``backend``'s queue asked this poll? ``polled``: its items that are queued,
    running or settling, with a native id; ``entries``: every active item of every
    backend (read only when needed).

    Jobs that report their own end make the loop poll every ``fast_interval`` to read
    their files; the queue is then a safety net, asked every ``queue_interval``. Other
    jobs keep the pace they would have without them (fast after a submit, backing off
    while nothing changes), not the report files' pace. Without reporting jobs every poll
    asks the queue, as the loop's own interval already paces the polls. A settling item
    whose grace is about to run out is asked about in any case: only the queue can say it
    is still there."""
    last = ledger.last_queue_at.get(backend)
    if last is None:
        return True
    elapsed = (now - last).total_seconds()
    silent = reporting = False
    soon = now + cadence.grace_lead
    grace = cadence.grace
    settling = State.SETTLING
    for entry in polled:
        item = entry.item
        if entry.extra.get("self_reports") is True and not item.has_marker(_CANCEL_REQUESTED):
            reporting = True
        else:
            silent = True
        if item.state is settling:  # only a settling item has a grace deadline
            deadline = grace_deadline(item, grace)
            if deadline is not None and deadline <= soon:
                return True
    if silent:
        if not reporting and not reporting_anywhere(entries):
            return True
        return elapsed >= QUEUE_EARLY * queue_pace(cadence, ledger, backend, now)
    return elapsed >= cadence.queue_interval


# -- a takeover ----------------------------------------------------------------------------


def takeover_due(cadence: Cadence, ledger: Ledger, backend: str, now: datetime) -> datetime | None:
    """When ``backend``'s first queue call after a takeover is due: the previous holder's
    last poll plus QUEUE_EARLY of the queue's pace (as a due call counts it); None when
    no takeover waits for its first queue call."""
    since = ledger.taken_over.get(backend)
    if since is None:
        return None
    return since + timedelta(seconds=QUEUE_EARLY * queue_pace(cadence, ledger, backend, now))


def takeover_hold(
    cadence: Cadence,
    ledger: Ledger,
    backend: str,
    mine: Iterable[Tracked],
    now: datetime,
) -> datetime | None:
    """THE takeover rule: is ``backend``'s queue call held back at ``now``? Returns when
    it is due (the loop's wake-up, :func:`takeover_wait`), or None: this poll may call
    the queue. ``mine``: the backend's active items.

    After a lease is taken over from another holder (:func:`record_takeover`), the
    previous holder kept the queue's pace up to its last poll: the first queue call waits
    for that poll plus the pace (:func:`takeover_due`), even where every poll would ask
    (silent jobs alone). A settling item whose grace runs out within the grace lead is
    asked about at once (only the queue can say the job is still listed). The hold ends
    with the first queue call (:func:`record_queue_call`)."""
    due = takeover_due(cadence, ledger, backend, now)
    if due is None or now >= due:
        return None
    soon = now + cadence.grace_lead
    grace = cadence.grace
    for entry in mine:
        deadline = grace_deadline(entry.item, grace)
        if deadline is not None and deadline <= soon:
            return None
    return due


def takeover_wait(cadence: Cadence, ledger: Ledger, now: datetime) -> float | None:
    """Seconds from ``now`` until the soonest queue call held back by a takeover is due
    (:func:`takeover_due` of each backend taken over), or None: none is still ahead."""
    waits = [
        wait
        for backend in ledger.taken_over
        if (due := takeover_due(cadence, ledger, backend, now)) is not None
        and (wait := (due - now).total_seconds()) > 0
    ]
    return min(waits) if waits else None


# -- late checks of unconfirmed verdicts ---------------------------------------------------


def late_check_due(cadence: Cadence, entry: Tracked, now: datetime) -> bool:
    """Is accounting asked about this unconfirmed verdict now? Every poll during the
    grace after the verdict (and until first asked), then every ``late_check_interval``."""
    if entry.item.updated_at + cadence.grace > now or entry.checked_at is None:
        return True
    return (now - entry.checked_at).total_seconds() >= cadence.late_check_interval


def late_checks_due(
    cadence: Cadence, unconfirmed: Iterable[_T], backend: str, now: datetime
) -> list[_T]:
    """``backend``'s unconfirmed verdicts whose late check is due now (for a backend
    with accounting; without it the tracker stops carrying them)."""
    return [e for e in unconfirmed if e.item.backend == backend and late_check_due(cadence, e, now)]


def expired_late_checks(
    cadence: Cadence, unconfirmed: Mapping[str, Tracked], now: datetime
) -> list[str]:
    """The ids of the unconfirmed verdicts older than ``late_check_window``: no longer
    asked about."""
    cutoff = now - cadence.late_check_window
    return [i for i, e in unconfirmed.items() if e.item.updated_at < cutoff]


def purged(index: NativeIndex, found: Sequence[Observation]) -> list[tuple[str, Observation]]:
    """The items (routed by native id through ``index``) whose job an answer says is
    unknown and will stay so (purged: ``Absence.UNKNOWN``, or GONE), with that answer:
    an unconfirmed verdict among them can no longer be corrected, so it is no longer
    asked about."""
    found_ids: list[tuple[str, Observation]] = []
    for obs in found:
        if obs.absence is not Absence.UNKNOWN and obs.state is not State.GONE:
            continue
        first = index.first.get(obs.native_id)
        if first is None:
            continue
        found_ids.extend((item_id, obs) for item_id in (first, *index.more.get(obs.native_id, ())))
    return found_ids


def correctable_soon(cadence: Cadence, unconfirmed: Iterable[Tracked], now: datetime) -> bool:
    """An unconfirmed verdict is still inside its grace (asked about every poll)."""
    grace = cadence.grace
    return any(e.item.updated_at + grace > now for e in unconfirmed)


# -- accounting ----------------------------------------------------------------------------


def accounting_items(
    cadence: Cadence,
    ledger: Ledger,
    backend: str,
    working: Mapping[str, RunItem],
    late: Sequence[Tracked],
    now: datetime,
) -> list[RunItem]:
    """What ``backend``'s ONE accounting call asks about this poll; empty: no call.

    ``working``: its items as this poll has them so far (every ``late`` one included);
    ``late``: its unconfirmed verdicts due for a late check. The call is made when a
    late check is due, or when the oldest settling item has waited ``accounting_lag``
    and the last call is ``accounting_interval`` old, or when a settling item's grace
    is about to run out; every settling item with a native id goes in it, then the late
    ones (as ``working`` has them)."""
    settling = State.SETTLING
    needs = [
        item for item in working.values() if item.state is settling and item.native_id is not None
    ]
    if needs and not late:
        lag = timedelta(seconds=cadence.accounting_lag)
        oldest = min(item.settling_since or now for item in needs)
        last = ledger.last_accounting_at.get(backend)
        soon = now + cadence.grace_lead
        grace = cadence.grace
        expiring = any(
            (deadline := grace_deadline(item, grace)) is not None and deadline <= soon
            for item in needs
        )
        if not expiring and (
            now - oldest < lag
            or (last is not None and (now - last).total_seconds() < cadence.accounting_interval)
        ):
            return []  # next_interval wakes the loop when it is due
    needs += [working[e.item.id] for e in late if e.item.native_id is not None]
    return needs


def accounting_query(items: Sequence[RunItem]) -> AccountingQuery:
    """The accounting question for ``items`` (not empty): each native id once, in
    order, and the earliest submit (or creation) time, which bounds the query window."""
    if not items:
        raise ValueError("accounting_query: no items to ask about")
    natives = dict.fromkeys(i.native_id for i in items if i.native_id is not None)
    times = [i.stats.submitted_at or i.created_at for i in items]
    return AccountingQuery(native_ids=tuple(natives), submitted_after=min(times))


def accounting_due_in(
    cadence: Cadence, ledger: Ledger, oldest_settling: Mapping[str, datetime], now: datetime
) -> list[float]:
    """Per backend with settling items (backend -> its oldest ``settling_since``):
    seconds until its accounting call is due (0 when it is)."""
    due: list[float] = []
    for name, since in oldest_settling.items():
        wait = cadence.accounting_lag - (now - since).total_seconds()
        last = ledger.last_accounting_at.get(name)
        if last is not None:
            wait = max(wait, cadence.accounting_interval - (now - last).total_seconds())
        due.append(max(0.0, wait))
    return due


# -- report files --------------------------------------------------------------------------


def report_paths(
    polled: Iterable[Tracked], working: Mapping[str, RunItem], *, running_too: bool
) -> dict[str, RunItem]:
    """Which self-report files to read this poll (path -> item as ``working`` has it):
    those of the items that left the queue and await their verdict (SETTLING) and, when
    the backend's jobs report (``running_too``), of the queued and running ones too (a
    short job runs and ends between two slow queue calls); never one already reported."""
    readable = {State.SETTLING}
    if running_too:
        readable.update((State.QUEUED, State.RUNNING))
    wanted: dict[str, RunItem] = {}
    for entry in polled:
        path = entry.extra.get("report_file")
        if not path:
            continue
        item = working.get(entry.item.id)
        if (
            isinstance(path, str)
            and item is not None
            and item.state in readable
            and not item.has_marker(_SELF_REPORTED)
        ):
            wanted[path] = item
    return wanted


# -- the loop's sleep ----------------------------------------------------------------------


def next_interval(
    cadence: Cadence,
    ledger: Ledger,
    entries: Iterable[Tracked],
    unconfirmed: Iterable[Tracked],
    now: datetime,
    draw: float,
) -> float:
    """Seconds until the next poll. ``entries``: the active items (PENDING included);
    ``unconfirmed``: the verdicts still late-checked; ``draw``: a uniform draw in [0, 1)
    for the jitter (one per call).

    Fast after a submit, while jobs that report their own end are active, and when an
    unconfirmed verdict may be corrected soon; when items settle, as soon as accounting
    is due for them (or a grace is about to run out); backing off for long-running
    work, longer after errors; with jitter, never past a grace's lead."""
    fast = cadence.fast_interval
    grace = cadence.grace
    oldest_settling: dict[str, datetime] = {}
    first_deadline: datetime | None = None  # of the settling items' graces
    reporting = pending = False
    for entry in entries:
        item = entry.item
        if item.state is State.SETTLING:
            deadline = grace_deadline(item, grace)
            if deadline is not None and (first_deadline is None or deadline < first_deadline):
                first_deadline = deadline
            since = item.settling_since or now
            if item.backend not in oldest_settling or since < oldest_settling[item.backend]:
                oldest_settling[item.backend] = since
        elif item.state is State.PENDING:
            pending = True
        elif item.state in _POLLED and reports_itself(entry):
            reporting = True
    base: float
    if ledger.error_polls:
        try:
            errors = fast * ERROR_BACKOFF ** float(ledger.error_polls)
        except OverflowError:
            errors = math.inf if fast > 0 else 0.0
        base = min(cadence.max_error_interval, errors)
    elif (
        submitted_recently(cadence, ledger, now)
        or reporting
        or correctable_soon(cadence, unconfirmed, now)
    ):
        base = fast
    elif oldest_settling:
        due = accounting_due_in(cadence, ledger, oldest_settling, now)
        if first_deadline is not None:
            # GRACE_LEAD fast intervals before a grace runs out, queue and accounting
            # are asked whatever their pace (the queue may still list the job).
            lead = GRACE_LEAD * fast
            due.append((first_deadline - now).total_seconds() - lead)
        base = max(fast, min(due))
    else:
        base = backoff(cadence, ledger.quiet_polls)
        if pending:
            base = min(base, PENDING_EVERY * fast)
    interval = base * (JITTER_LOW + JITTER_SPAN * draw)
    if oldest_settling and not ledger.error_polls:
        # Wake when accounting becomes due, not at the first poll after it (a reporting
        # job keeps the pace at fast_interval, which would add up to one interval to
        # every verdict).
        soonest = min(accounting_due_in(cadence, ledger, oldest_settling, now))
        if 0 < soonest < interval:
            interval = soonest + ACCOUNTING_WAKE_AFTER
    if first_deadline is not None:
        # Never jitter past the poll that asks about a grace running out.
        left = (first_deadline - now).total_seconds() - GRACE_WAKE_LEAD * fast
        interval = min(interval, max(MIN_GRACE_WAKE, left))
    return interval


# -- reconcile: answers through the machine --------------------------------------------


class NativeIndex:
    """native id -> item ids, without a list per job in the common one-item case (an
    array's tasks, or a re-tracked job, share a native id)."""

    __slots__ = ("first", "more")

    def __init__(self, items: Iterable[RunItem]) -> None:
        self.first: dict[str, str] = {}
        self.more: dict[str, list[str]] = {}
        for item in items:
            native = item.native_id
            if native is None:
                continue
            if native in self.first:
                self.more.setdefault(native, []).append(item.id)
            else:
                self.first[native] = item.id

    def native_ids(self) -> tuple[str, ...]:
        """Each native id once, in the order of the items."""
        return tuple(self.first)


@frozen(kw_only=True)
class Refused:
    """An observation the machine did not apply to an item: ``error`` is the
    IllegalTransition (the table has no such pair) or, for a bug, any other exception."""

    item_id: str
    source: Source
    error: Exception

    @property
    def illegal(self) -> bool:
        return isinstance(self.error, IllegalTransition)


@frozen(kw_only=True)
class Reconciled:
    """What :func:`reconcile` (or :func:`tick_settling`) made of the answers.

    ``items``: item id -> the new item, for every item an observation reached (changed or
    not); ``events``: item id -> its events, in order; ``applied``: observations applied
    (or refused); ``refused``: the refusals, in order; ``output_failures``: native ids
    an output check just found failed (the shell cancels those jobs)."""

    items: dict[str, RunItem]
    events: dict[str, list[Event]]
    applied: int = 0
    refused: tuple[Refused, ...] = ()
    output_failures: tuple[str, ...] = ()

    @property
    def illegal(self) -> int:
        return sum(1 for r in self.refused if r.illegal)


@frozen(kw_only=True)
class Applied:
    """What :func:`apply_answers` did: observations applied (or refused), the refusals in
    order, the native ids an output check just found failed (the shell cancels those
    jobs), and the ids of the items an observation reached (changed or not)."""

    applied: int
    refused: tuple[Refused, ...]
    output_failures: tuple[str, ...]
    reached: frozenset[str]


def apply_answers(
    working: dict[str, RunItem],
    index: NativeIndex,
    found: Sequence[Observation],
    extras: Mapping[str, Sequence[Observation]] | None = None,
    events: dict[str, list[Event]] | None = None,
) -> Applied:
    """Apply ``found`` (routed to items by native id through ``index``) after each item's
    ``extras`` (self-reports, output checks: older than the queue), every item's
    observations in ``observed_at`` order, through the machine, writing each new item
    into ``working`` and its events into ``events``.

    In place, on purpose: the tracker hands in its own per-poll copy, and a second dict
    of every item raised a 100,000-item poll's peak by 13 MiB (bench/runtime_poll.py),
    past its 300 MiB target; :func:`reconcile` is the copying form. No I/O, no clock.

    An item with extras gets its routed observations appended to them, and the lot,
    sorted by ``observed_at`` (stably), is applied after the routed ones of the other
    items; an item without extras gets each routed observation as it comes. An illegal
    transition (or a bug in one item's step) leaves that item as it was and is
    reported in ``refused``. An output check's verdict gets the ``output_check`` marker
    with the check's detail (500 characters at most)."""
    if events is None:
        events = {}
    refused: list[Refused] = []
    output_failures: list[str] = []
    reached: set[str] = set()
    pending: dict[str, list[Observation]] = {k: list(v) for k, v in (extras or {}).items()}
    applied = 0
    first = index.first
    more = index.more

    def step(item: RunItem, obs: Observation) -> RunItem:
        try:
            done = advance(item, obs)
        except Exception as exc:  # an illegal pair, or a bug: this item only
            refused.append(Refused(item_id=item.id, source=obs.source, error=exc))
            return item
        if done.events:
            if obs.source is _OUTPUT_CHECK_SOURCE:
                marker = Marker(code=_OUTPUT_CHECK, text=obs.detail[:500])
                marked = add_marker(done.item, marker, at=obs.observed_at)
                done = Step(marked.item, done.events + marked.events)
                if done.item.state in FAILURES and item.native_id is not None:
                    output_failures.append(item.native_id)
            events.setdefault(item.id, []).extend(done.events)
        return done.item

    for obs in found:
        item_id = first.get(obs.native_id)
        if item_id is None:
            continue
        targets = (item_id, *more[obs.native_id]) if more and obs.native_id in more else (item_id,)
        for target in targets:
            waiting = pending.get(target)
            if waiting is not None:
                waiting.append(obs)
                continue
            item = working.get(target)
            if item is None:
                continue
            applied += 1
            reached.add(target)
            new = step(item, obs)
            if new is not item:
                working[target] = new
    for target, waiting in pending.items():
        item = working.get(target)
        if item is None:
            continue
        waiting.sort(key=_observed_at)
        for obs in waiting:
            applied += 1
            item = step(item, obs)
        reached.add(target)
        working[target] = item
    return Applied(
        applied=applied,
        refused=tuple(refused),
        output_failures=tuple(output_failures),
        reached=frozenset(reached),
    )


def reconcile(
    working: Mapping[str, RunItem],
    index: NativeIndex,
    found: Sequence[Observation],
    extras: Mapping[str, Sequence[Observation]] | None = None,
) -> Reconciled:
    """:func:`apply_answers` without touching ``working``: the new items (every item an
    observation reached, changed or not) and their events come back in a
    :class:`Reconciled`."""
    copy = dict(working)
    events: dict[str, list[Event]] = {}
    done = apply_answers(copy, index, found, extras, events)
    return Reconciled(
        items={item_id: copy[item_id] for item_id in done.reached},
        events=events,
        applied=done.applied,
        refused=done.refused,
        output_failures=done.output_failures,
    )


def tick_settling(working: Mapping[str, RunItem], now: datetime, grace: timedelta) -> Reconciled:
    """The machine's clock over the settling items: those whose grace ran out get their
    unconfirmed verdict. ``items`` holds only the items that changed; a bug in one
    item's tick is reported in ``refused`` (source TRACKER) and leaves it as it was."""
    items: dict[str, RunItem] = {}
    events: dict[str, list[Event]] = {}
    refused: list[Refused] = []
    settling = State.SETTLING
    for item_id, item in working.items():
        if item.state is settling:
            try:
                done = tick(item, now=now, grace=grace)
            except Exception as exc:
                refused.append(Refused(item_id=item_id, source=Source.TRACKER, error=exc))
                continue
            if done.item is not item:
                items[item_id] = done.item
                events.setdefault(item_id, []).extend(done.events)
    return Reconciled(items=items, events=events, refused=tuple(refused))


def _observed_at(observation: Observation) -> datetime:
    return observation.observed_at


# -- plan: one backend's first asks ------------------------------------------------------


@frozen(kw_only=True)
class PollPlan(Generic[_T]):
    """What one backend's poll asks before any answer comes (what the poller runs).

    ``entries``: the backend's active items (PENDING included): what the poll works on;
    ``polled``: those queued, running or settling, with a native id (self-reports and
    output checks are read for them); ``index``: them by native id (routes the queue's
    answers: :func:`apply_answers`); ``ask_queue``: whether the queue is asked (about
    ``queue_ids``); ``held_until``: when a queue call that was due is held back by a
    takeover (:func:`takeover_hold`), the time it falls due, else None; ``late``: its
    unconfirmed verdicts due for a late check; ``forget``: the ids of its unconfirmed
    verdicts nothing will ever confirm (a backend without accounting); ``ledger``: the
    ledger with the queue call recorded.

    What comes after depends on the answers, so it is decided by the functions of the
    answers: :func:`report_paths` on the items as the queue left them, then
    :func:`accounting_items` (with ``late``) and :func:`accounting_query`, then
    :func:`tick_settling`."""

    entries: tuple[_T, ...]
    polled: tuple[_T, ...]
    index: NativeIndex
    ask_queue: bool
    held_until: datetime | None
    late: tuple[_T, ...]
    forget: tuple[str, ...]
    ledger: Ledger

    @property
    def queue_ids(self) -> tuple[str, ...]:
        """The native ids the queue call names (each once), or none."""
        return self.index.native_ids() if self.ask_queue else ()


def plan(
    cadence: Cadence,
    ledger: Ledger,
    backend: str,
    entries: Collection[_T],
    unconfirmed: Iterable[_T],
    now: datetime,
    *,
    accounting: bool,
) -> PollPlan[_T]:
    """``backend``'s first asks this poll. ``entries``: every active item of every
    backend (as for :func:`queue_due`; read again only if needed); ``unconfirmed``: every
    late-checked verdict; ``accounting``: whether the backend has accounting (its
    capability). The queue is asked when it is due (:func:`queue_due`) and no takeover
    holds it back (:func:`takeover_hold`)."""
    mine = tuple(e for e in entries if e.item.backend == backend)
    polled = tuple(e for e in mine if e.item.state in _POLLED and e.item.native_id is not None)
    index = NativeIndex(e.item for e in polled)
    ask = False
    held: datetime | None = None
    if polled and queue_due(cadence, ledger, backend, polled, entries, now):
        held = takeover_hold(cadence, ledger, backend, mine, now)
        if held is None:
            ask = True
            ledger = record_queue_call(ledger, backend, now)
    if accounting:
        late = tuple(late_checks_due(cadence, unconfirmed, backend, now))
        forget: tuple[str, ...] = ()
    else:
        late, forget = (), tuple(e.item.id for e in unconfirmed if e.item.backend == backend)
    return PollPlan(
        entries=mine,
        polled=polled,
        index=index,
        ask_queue=ask,
        held_until=held,
        late=late,
        forget=forget,
        ledger=ledger,
    )
