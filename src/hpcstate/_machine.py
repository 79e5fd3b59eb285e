"""The pure state machine: (item, observation) -> (new item, events).

No I/O and no clock: every function takes the time it needs. The table in
``_states.TRANSITIONS`` decides *where* an item may go; this module decides what the
item looks like when it gets there, and checks the invariants before returning it.
An illegal transition raises and the caller's item is unchanged (records are frozen).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any, Final

from attrs import evolve, fields, frozen

from ._errors import IllegalTransition, InvariantViolation
from ._events import (
    AwaitingConfirmation,
    Corrected,
    Event,
    Finished,
    Requeued,
    Started,
    StatsUpdated,
    Submitted,
)
from ._exit import ExitStatus
from ._fast import positional_builder
from ._model import EMPTY_STATS, Absence, JobStats, Marker, MarkerCode, Observation, RunItem
from ._reasons import END_KINDS, Reason, ReasonKind, verdict_reason
from ._states import (
    ADVISORY,
    EXIT_PRIORITY,
    REOPENABLE,
    TERMINAL,
    TRANSITIONS,
    WAITING,
    Input,
    Source,
    State,
    Target,
)

# Enum members as module constants, for the hot paths: on Python 3.11 ``State.RUNNING``
# is a lookup on the enum class costing about 0.1 µs, a module global about 0.02 µs,
# and a transition makes dozens of them. Same objects, so ``is`` and ``in`` are unchanged.
_ABS_ABSENT: Final = Absence.ABSENT
_ABS_NO_RECORD: Final = Absence.NO_RECORD
_ABS_UNKNOWN: Final = Absence.UNKNOWN
_IN_ACCOUNTING_ACTIVE: Final = Input.ACCOUNTING_ACTIVE
_IN_CANCEL_BEFORE_SUBMIT: Final = Input.CANCEL_BEFORE_SUBMIT
_IN_CONFIRMED: Final = Input.CONFIRMED
_IN_FORGOTTEN: Final = Input.FORGOTTEN
_IN_GRACE_EXPIRED: Final = Input.GRACE_EXPIRED
_IN_GRACE_EXPIRED_UNSEEN: Final = Input.GRACE_EXPIRED_UNSEEN
_IN_LATE_CONFIRMATION: Final = Input.LATE_CONFIRMATION
_IN_NO_RECORD: Final = Input.NO_RECORD
_IN_REQUEUED: Final = Input.REQUEUED
_IN_SEEN_FAILURE: Final = Input.SEEN_FAILURE
_IN_SEEN_QUEUED: Final = Input.SEEN_QUEUED
_IN_SEEN_RUNNING: Final = Input.SEEN_RUNNING
_IN_SEEN_SUCCESS: Final = Input.SEEN_SUCCESS
_IN_SELF_REPORTED: Final = Input.SELF_REPORTED
_IN_STALE: Final = Input.STALE
_IN_SUBMITTED: Final = Input.SUBMITTED
_IN_SUBMIT_REJECTED: Final = Input.SUBMIT_REJECTED
_IN_VANISHED: Final = Input.VANISHED
_IN_VANISHED_AFTER_CANCEL: Final = Input.VANISHED_AFTER_CANCEL
_MC_CANCEL_FAILED: Final = MarkerCode.CANCEL_FAILED.value
_MC_CANCEL_LIVE: Final = MarkerCode.CANCEL_LIVE.value
_MC_CANCEL_REQUESTED: Final = MarkerCode.CANCEL_REQUESTED.value
_MC_EXIT_AMBIGUOUS: Final = MarkerCode.EXIT_AMBIGUOUS.value
_MC_GONE: Final = MarkerCode.GONE.value
_MC_REQUEUED: Final = MarkerCode.REQUEUED.value
_MC_SELF_REPORTED: Final = MarkerCode.SELF_REPORTED.value
_MC_SOURCES_DISAGREE: Final = MarkerCode.SOURCES_DISAGREE.value
_MC_STEP_FAILED: Final = MarkerCode.STEP_FAILED.value
_MC_UNCONFIRMED: Final = MarkerCode.UNCONFIRMED.value
_RK_CANCELLED: Final = ReasonKind.CANCELLED
_RK_NONE: Final = ReasonKind.NONE
_RK_SUBMIT_REJECTED: Final = ReasonKind.SUBMIT_REJECTED
_SRC_ACCOUNTING: Final = Source.ACCOUNTING
_SRC_CONTROLLER: Final = Source.CONTROLLER
_SRC_QUEUE: Final = Source.QUEUE
_SRC_SELF_REPORT: Final = Source.SELF_REPORT
_SRC_TRACKER: Final = Source.TRACKER
_ST_COMPLETED: Final = State.COMPLETED
_ST_GONE: Final = State.GONE
_ST_QUEUED: Final = State.QUEUED
_ST_RUNNING: Final = State.RUNNING
_ST_SETTLING: Final = State.SETTLING
_TO_OBSERVED: Final = Target.OBSERVED
_TO_SAME: Final = Target.SAME

DEFAULT_GRACE = timedelta(seconds=600)

# Markers about one run of a job, dropped when the scheduler starts it over.
_RUN_MARKERS = frozenset({_MC_UNCONFIRMED, _MC_SELF_REPORTED})

# Markers derived from an item's stats; recomputed on every change.
_DERIVED_MARKERS = frozenset({_MC_EXIT_AMBIGUOUS, _MC_STEP_FAILED})


@frozen
class Step:
    """The result of one transition: the new item and the events it emitted, in order."""

    item: RunItem
    events: tuple[Event, ...] = ()

    @property
    def changed(self) -> bool:
        return bool(self.events)


# -- classification --------------------------------------------------------------------


def classify(item: RunItem, observation: Observation) -> Input:
    """What an observation means for this item (pure; never raises on bad luck)."""
    obs = observation
    if obs.restarts is not None and obs.restarts < item.restarts:
        return _IN_STALE  # a record of an earlier run of a requeued job
    if obs.observed_at < item.updated_at and (
        not obs.final or (item.restarts > 0 and obs.restarts is None)
    ):
        # Older than what we know. A final record is truth whenever it was taken, unless
        # the job has been requeued since and the record cannot say which run it is of.
        return _IN_STALE
    if (
        obs.restarts is not None
        and obs.restarts > item.restarts
        and (item.state not in TERMINAL or item.state in REOPENABLE)
    ):
        # A verdict that no requeue reopens is only confirmed or corrected by a later
        # run's record, like any other late observation (falls through).
        return _IN_REQUEUED
    if obs.absence is _ABS_ABSENT:
        return _IN_VANISHED
    if obs.absence is _ABS_UNKNOWN:
        return _forgotten(item)
    if obs.absence is _ABS_NO_RECORD:
        return _IN_NO_RECORD
    state = obs.state
    if obs.source is _SRC_SELF_REPORT:
        return _IN_SELF_REPORTED
    if state in TERMINAL:
        if state is _ST_GONE:
            return _forgotten(item)
        unconfirmed_verdict = item.state in TERMINAL and not item.confirmed
        if obs.final:
            return _IN_LATE_CONFIRMATION if unconfirmed_verdict else _IN_CONFIRMED
        if state is _ST_COMPLETED:
            return _IN_SEEN_SUCCESS
        # A scheduler's failure is a verdict, so it also corrects an unconfirmed one.
        return _IN_LATE_CONFIRMATION if unconfirmed_verdict else _IN_SEEN_FAILURE
    if obs.source is _SRC_ACCOUNTING:
        return _IN_ACCOUNTING_ACTIVE
    return _IN_SEEN_QUEUED if state is _ST_QUEUED else _IN_SEEN_RUNNING


def _forgotten(item: RunItem) -> Input:
    """No source knows the job any more: cancelled if the cancel had a live job to act
    on (see ``_cancel_took_it``); else forgotten (GONE, outcome unknown)."""
    if _cancel_took_it(item):
        return _IN_VANISHED_AFTER_CANCEL
    return _IN_FORGOTTEN


#: Code of the marker the machine adds when the queue lists a job as queued or running
#: after a cancel was requested (the cancel_requested marker already on the item).
CANCEL_LIVE: Final = _MC_CANCEL_LIVE
#: Code of the marker the runtime adds when its cancel call to the backend failed (the
#: cancel may or may not have acted): the job's vanishing is then never the cancel's.
CANCEL_FAILED: Final = _MC_CANCEL_FAILED


def _cancel_took_it(item: RunItem) -> bool:
    """Whether a vanish is the cancel's doing: the job vanished straight from the queue's
    live view (it is still QUEUED or RUNNING here), a cancel was requested, and the queue
    listed the job as queued or running after that request (the ``cancel_live``
    marker). Anything less leaves room for the job to have ended on its own before the
    cancel reached it (the request came after the last live sighting, the job had
    already left the queue, or the cancel call failed: ``cancel_failed``): then only a
    record may say cancelled."""
    return (
        item.state in _LIVE
        and item.has_marker(_MC_CANCEL_REQUESTED)
        and item.has_marker(CANCEL_LIVE)
        and not item.has_marker(CANCEL_FAILED)
    )


def _needs_cancel_live(item: RunItem, active: bool) -> bool:
    """A live sighting that proves the cancel request found the job still there."""
    return (
        active
        and item.state in _LIVE
        and item.has_marker(_MC_CANCEL_REQUESTED)
        and not item.has_marker(CANCEL_LIVE)
    )


_LIVE = frozenset({_ST_QUEUED, _ST_RUNNING})


#: States whose stats describe the job's end (its reason included).
_ENDED = TERMINAL | {_ST_SETTLING}


# -- stats merging ---------------------------------------------------------------------


def _pick_exit(
    old: ExitStatus | None,
    old_source: Source | None,
    new: ExitStatus | None,
    new_source: Source,
) -> tuple[ExitStatus | None, Source | None]:
    """A scheduler beats an advisory source (the job's own report); then exact beats
    ambiguous; among equals, the more authoritative source wins."""
    if new is None:
        return old, old_source
    if old is None:
        return new, new_source
    old_advisory, new_advisory = old_source in ADVISORY, new_source in ADVISORY
    if old_advisory != new_advisory:
        ours: tuple[ExitStatus, Source | None] = (new, new_source)
        theirs: tuple[ExitStatus, Source | None] = (old, old_source)
        if new_advisory:
            ours, theirs = theirs, ours
        # The scheduler's value stands, unless it is ambiguous and the job's own exact
        # report is one of the values it admits (sacct's "9 or 137", the job said 137).
        if not ours[0].exact and theirs[0].exact and ours[0].admits(theirs[0]):
            return theirs
        return ours
    if old.exact != new.exact:
        return (old, old_source) if old.exact else (new, new_source)
    old_rank = EXIT_PRIORITY[old_source] if old_source is not None else -1
    if EXIT_PRIORITY[new_source] >= old_rank:
        return new, new_source
    return old, old_source


def merge_stats(old: JobStats, new: JobStats, source: Source, *, with_exit: bool) -> JobStats:
    """Combine what we knew with what a source just said, keeping the best of each."""
    return JobStats(**_merged(old, new, source, with_exit=with_exit))  # type: ignore[arg-type]


def _merged(old: JobStats, new: JobStats, source: Source, *, with_exit: bool) -> dict[str, object]:
    """The merged fields, in JobStats' field order (a test holds it to that)."""
    exit_, exit_source = old.exit, old.exit_source
    derived = old.derived_exit
    if with_exit:
        exit_, exit_source = _pick_exit(old.exit, old.exit_source, new.exit, source)
        derived_source = exit_source if old.derived_exit is not None else None
        derived, _ = _pick_exit(old.derived_exit, derived_source, new.derived_exit, source)
    reason = old.reason
    if new.reason is not None and (
        reason is None
        or (
            new.reason.kind is not _RK_NONE
            and (new.reason.kind in END_KINDS or reason.kind not in END_KINDS)
        )
    ):
        # What a source says replaces what we knew, but words that do not explain an
        # end (a pending reason, "none") never replace a reason that does.
        reason = new.reason
    finished_at, approx = old.finished_at, old.finished_at_approx
    if (
        with_exit
        and new.finished_at is not None
        and (finished_at is None or (approx and not new.finished_at_approx))
    ):
        finished_at, approx = new.finished_at, new.finished_at_approx
    return {
        "exit": exit_,
        "exit_source": exit_source,
        "derived_exit": derived,
        "reason": reason,
        "submitted_at": new.submitted_at or old.submitted_at,
        "started_at": old.started_at if new.started_at is None else new.started_at,
        "finished_at": finished_at,
        "finished_at_approx": approx,
        "elapsed_s": old.elapsed_s if new.elapsed_s is None else new.elapsed_s,
        "cpu_time_s": old.cpu_time_s if new.cpu_time_s is None else new.cpu_time_s,
        "max_rss_bytes": old.max_rss_bytes if new.max_rss_bytes is None else new.max_rss_bytes,
        "nodes": new.nodes or old.nodes,
        "confirmed_by": old.confirmed_by,
    }


def _disagreement(old: JobStats, new: JobStats, source: Source) -> Marker | None:
    if (
        old.exit is not None
        and new.exit is not None
        and old.exit.exact
        and new.exit.exact
        and (old.exit.code, old.exit.signal) != (new.exit.code, new.exit.signal)
    ):
        return Marker(
            code=_MC_SOURCES_DISAGREE,
            text=(
                f"{old.exit_source} said {old.exit.describe()}, {source} said {new.exit.describe()}"
            ),
        )
    return None


@functools.lru_cache(maxsize=1024)
def _ambiguity_marker(label: str, ambiguity: str) -> Marker:
    # Shared: thousands of items with the same lossy exit carry one Marker object.
    return Marker(code=_MC_EXIT_AMBIGUOUS, text=f"{label}: {ambiguity}")


def _derived_markers(state: State, stats: JobStats) -> list[Marker]:
    markers = []
    if state in TERMINAL or state is _ST_SETTLING:
        for label, status in (("exit", stats.exit), ("derived exit", stats.derived_exit)):
            if status is not None and status.ambiguous:
                markers.append(_ambiguity_marker(label, status.ambiguous))
    derived = stats.derived_exit
    if state is _ST_COMPLETED and derived is not None and not derived.success:
        markers.append(
            Marker(
                code=_MC_STEP_FAILED,
                text=f"the job ended 0 but a step ended with {derived.describe()}",
            )
        )
    return markers


def _markers_for(
    markers: tuple[Marker, ...], state: State, stats: JobStats, extra: list[Marker]
) -> tuple[Marker, ...]:
    derived = _derived_markers(state, stats)
    if not markers and not extra:
        return tuple(derived)  # the common case: nothing to keep or merge
    kept = [m for m in markers if m.code not in _DERIVED_MARKERS]
    for marker in [*extra, *derived]:
        if marker not in kept:
            kept.append(marker)
    return tuple(kept)


def _with_markers(item: RunItem, extra: list[Marker]) -> tuple[Marker, ...]:
    return _markers_for(item.markers, item.state, item.stats, extra)


# -- invariants ------------------------------------------------------------------------


@frozen
class _Invariant:
    """One rule every stored item keeps: when it is ``broken``, the ``problem`` as a
    sentence, and the ``fix`` that restores it without inventing facts (None: only a
    person can fix it). The machine checks these after every transition; the store's
    startup sweep repairs what breaks them (:func:`repair`). ``broken`` is source text
    so that all the rules compile into one expression: a sound item (every item the
    machine makes) is checked at the cost of hand-written ifs."""

    broken: str  # a Python expression over the item ``i`` (compiled once, below)
    problem: Callable[[RunItem], str]
    fix: Callable[[RunItem], RunItem] | None


def _with_stats(item: RunItem, **changes: Any) -> RunItem:
    return evolve(item, stats=evolve(item.stats, **changes))


def _approx_finished(item: RunItem, at: datetime) -> RunItem:
    return _with_stats(item, finished_at=at, finished_at_approx=True)


def _unended(item: RunItem) -> RunItem:
    """No end facts: what a waiting or running item must not hold."""
    return _with_stats(
        item,
        finished_at=None,
        finished_at_approx=False,
        exit=None,
        exit_source=None,
        derived_exit=None,
        confirmed_by=None,
    )


_UNENDED: Final = WAITING | {_ST_RUNNING}

#: In order: the fixes run one after another on the fixed item (a pending item that
#: holds a native id becomes queued first, and the rules after it see it queued).
_INVARIANTS: Final[tuple[_Invariant, ...]] = (
    _Invariant(
        "i.state is State.PENDING and i.native_id is not None",
        lambda i: "a pending item has no native id yet",
        # It reached a scheduler: it is queued, not pending (never submit it again).
        lambda i: evolve(i, state=State.QUEUED),
    ),
    _Invariant(
        "i.state in WAITING and i.handle is not None",
        lambda i: f"a {i.state} item owns no execution (handle {i.handle!r})",
        lambda i: evolve(i, handle=None),
    ),
    _Invariant(
        "i.state in WAITING and i.stats.started_at is not None",
        lambda i: f"a {i.state} item has no started_at",
        lambda i: _with_stats(i, started_at=None),
    ),
    _Invariant(
        "i.state in _UNENDED and i.stats.finished_at is not None",
        lambda i: f"a {i.state} item has no finished_at",
        _unended,
    ),
    _Invariant(
        "i.state in _UNENDED and (i.stats.exit is not None or i.stats.derived_exit is not None)",
        lambda i: f"a {i.state} item has no exit status yet",
        _unended,
    ),
    _Invariant(
        "i.state is State.SETTLING and i.settling_since is None",
        lambda i: "a settling item has settling_since",
        lambda i: evolve(i, settling_since=i.updated_at),
    ),
    _Invariant(
        "i.state is State.SETTLING and i.stats.finished_at is None",
        lambda i: "a settling item has an (approximate) finished_at",
        lambda i: _approx_finished(i, i.settling_since or i.updated_at),
    ),
    _Invariant(
        "i.state is not State.SETTLING and i.settling_since is not None",
        lambda i: f"a {i.state} item has no settling_since",
        lambda i: evolve(i, settling_since=None),
    ),
    _Invariant(
        "i.state is not State.SETTLING and i.settling_cause is not None",
        lambda i: f"a {i.state} item has no settling_cause",
        None,  # the sweep has always left this to a person
    ),
    _Invariant(
        "i.state in TERMINAL and i.stats.finished_at is None",
        lambda i: f"a {i.state} item has finished_at",
        lambda i: _approx_finished(i, i.updated_at),
    ),
    _Invariant(
        "i.stats.confirmed_by is not None and (i.state not in TERMINAL or i.state is State.GONE)",
        lambda i: f"a {i.state} item cannot be confirmed",
        lambda i: _with_stats(i, confirmed_by=None),
    ),
    _Invariant(
        "i.stats.exit is not None and i.stats.exit_source is None",
        lambda i: "an exit status has a source",
        lambda i: _with_stats(i, exit_source=Source.TRACKER),  # we do not know who said it
    ),
    _Invariant(
        "i.state is not State.PENDING and i.native_id is None"
        " and i.state not in (State.FAILED, State.CANCELLED)",
        lambda i: f"a {i.state} item has a native id",
        None,
    ),
)


# The rules' text (above, nothing else) compiled: one predicate per rule, and all of
# them in one expression for the common case of a sound item.
_RULE_NAMES: Final = {
    "State": State,
    "WAITING": WAITING,
    "TERMINAL": TERMINAL,
    "_UNENDED": _UNENDED,
}
_BROKEN: Final[tuple[Callable[[RunItem], bool], ...]] = tuple(
    eval(f"lambda i: {rule.broken}", dict(_RULE_NAMES)) for rule in _INVARIANTS
)


def _make_any_broken() -> Callable[[RunItem], bool]:
    """All the rules in one expression, for the common case of a sound item: the item's
    state and stats read once into locals, and each ``State.X`` a global constant
    (the same objects; a test holds it equal to the rules one by one)."""
    text = " or ".join(f"({rule.broken})" for rule in _INVARIANTS)
    text = re.sub(r"\bi\.state\b", "s", re.sub(r"\bi\.stats\b", "t", text))
    namespace: dict[str, Any] = dict(_RULE_NAMES)
    for state in State:
        text = re.sub(rf"\bState\.{state.name}\b", f"_ST_{state.name}", text)
        namespace[f"_ST_{state.name}"] = state
    source = f"def _any_broken(i):\n    s = i.state\n    t = i.stats\n    return {text}\n"
    exec(source, namespace)  # the text is the rules' own, above
    function: Callable[[RunItem], bool] = namespace["_any_broken"]
    return function


_ANY_BROKEN: Final[Callable[[RunItem], bool]] = _make_any_broken()


def check_invariants(item: RunItem) -> tuple[str, ...]:
    """Every problem with an item, as sentences. Empty means the item is sound."""
    if not _ANY_BROKEN(item):
        return ()
    return tuple(
        rule.problem(item)
        for rule, broken in zip(_INVARIANTS, _BROKEN, strict=True)
        if broken(item)
    )


def repaired(item: RunItem) -> RunItem:
    """The item with what :func:`check_invariants` complains about fixed, as far as
    that can be done without inventing facts (pure; the version is not bumped). A
    problem with no fix remains (check again)."""
    for rule, broken in zip(_INVARIANTS, _BROKEN, strict=True):
        if rule.fix is not None and broken(item):
            item = rule.fix(item)
    return item


def repair(item: RunItem, *, at: datetime) -> Step | None:
    """A broken item repaired (:func:`repaired`) as a change of its own: a new version,
    ``updated_at`` no earlier than ``at``, and a StatsUpdated event from the tracker.
    None when the item is sound, or when a problem remains that only a person can fix
    (the store's sweep counts it as unrepairable)."""
    if not check_invariants(item):
        return None
    fixed = repaired(item)
    if fixed == item or check_invariants(fixed):
        return None
    return _tracker_change(fixed, at)


def _tracker_change(changed: RunItem, at: datetime) -> Step:
    """A change the tracker makes outside a transition (a marker, a repair): one
    version more, ``updated_at`` no earlier than ``at``, a StatsUpdated event."""
    new = evolve(changed, version=changed.version + 1, updated_at=max(changed.updated_at, at))
    return Step(new, (StatsUpdated(**_event_fields(new, at, _SRC_TRACKER)),))  # type: ignore[arg-type]


# -- transitions -----------------------------------------------------------------------


def _target(item: RunItem, input: Input, observed: State | None) -> State | None:
    """The state the table allows, or None for 'stay'. Raises IllegalTransition."""
    try:
        target = TRANSITIONS[item.state, input]
    except KeyError:
        raise IllegalTransition(item.state, input) from None
    if target is _TO_SAME:
        return None
    if target is _TO_OBSERVED:
        if observed is None or observed not in TERMINAL:
            raise IllegalTransition(item.state, input, f"no terminal state in {observed}")
        return observed
    return target


def _event_fields(item: RunItem, at: datetime, source: Source) -> dict[str, object]:
    return {
        "item_id": item.id,
        "run_id": item.run_id,
        "native_id": item.native_id,
        "at": at,
        "version": item.version,
        "source": source,
        "state": item.state,
    }


def _finish(item: RunItem, new: RunItem, problems_input: Input) -> RunItem:
    if _ANY_BROKEN(new):
        raise InvariantViolation(item.state, problems_input, check_invariants(new))
    return new


def _classified(item: RunItem, observation: Observation) -> Input:
    """The observation's input for ``item``; IllegalTransition if it is not ``item``'s."""
    if item.native_id is None:
        raise IllegalTransition(item.state, "observation", "the item has no native id yet")
    if observation.native_id != item.native_id:
        raise IllegalTransition(
            item.state,
            "observation",
            f"observation of {observation.native_id!r} applied to item of {item.native_id!r}",
        )
    return classify(item, observation)


def _requeued(
    item: RunItem, observation: Observation, then: Callable[[RunItem, Observation], Step]
) -> Step:
    step = _requeue(item, observation)
    if observation.state in (None, _ST_QUEUED):
        return step
    # The new run may already be further along: apply the rest to the new item.
    rest = then(step.item, evolve(observation, restarts=None))
    return Step(rest.item, step.events + rest.events)


def advance(item: RunItem, observation: Observation) -> Step:
    """Apply one observation. Raises IllegalTransition (item unchanged) if not allowed."""
    input = _classified(item, observation)
    if input is _IN_REQUEUED:
        return _requeued(item, observation, advance)
    if input is _IN_VANISHED:
        if item.state in _SETTLE_ON_VANISH and observation.stats is EMPTY_STATS:
            return _settled_on_vanish(item, observation)
    elif input is _IN_CONFIRMED and item.state is _ST_SETTLING:
        return _confirmed_from_settling(item, observation)
    return _apply(item, input, observation)


def _advance_general(item: RunItem, observation: Observation) -> Step:
    """:func:`advance` without its fast paths: the rules as written in :func:`_apply`.
    A test holds the two equal (tests/core/test_machine_fast_paths.py)."""
    input = _classified(item, observation)
    if input is _IN_REQUEUED:
        return _requeued(item, observation, _advance_general)
    return _apply(item, input, observation)


# -- fast paths ------------------------------------------------------------------------
#
# The commonest pair of transitions in a poll (a job leaves the queue, then accounting
# confirms it) written out for exactly those inputs: what ``_apply`` computes for them,
# minus the branches that cannot apply. The result (item, events, exceptions) must be
# the general path's; tests/core/test_machine_fast_paths.py holds them equal over
# generated items and observations. The invariant check runs on both.

#: Live states a vanish settles (the table says so; checked here, not assumed).
_SETTLE_ON_VANISH: Final = frozenset(
    s for s in (_ST_QUEUED, _ST_RUNNING) if TRANSITIONS.get((s, _IN_VANISHED)) is _ST_SETTLING
)
if TRANSITIONS.get((_ST_SETTLING, _IN_CONFIRMED)) is not _TO_OBSERVED:  # pragma: no cover
    raise AssertionError("the fast confirm path assumes settling + confirmed -> observed")


def _settled_on_vanish(item: RunItem, obs: Observation) -> Step:
    """A queued or running job the queue no longer lists, with nothing else said (no
    stats): settling, with what the item knew, less a waiting reason, and an
    approximate end if it had none."""
    at = obs.observed_at
    old = item.stats
    reason = old.reason
    if reason is not None and reason.kind not in END_KINDS:
        reason = None
    finished_at, approx = old.finished_at, old.finished_at_approx
    if finished_at is None:
        finished_at, approx = at, True
    # Positional, in JobStats' field order (as ``_merged``; a reordering shows in the
    # fast paths' test as a different item).
    stats = _build_stats(
        old.exit,
        old.exit_source,
        old.derived_exit,
        reason,
        old.submitted_at,
        old.started_at,
        finished_at,
        approx,
        old.elapsed_s,
        old.cpu_time_s,
        old.max_rss_bytes,
        old.nodes,
        old.confirmed_by,
    )
    markers = _markers_for(item.markers, _ST_SETTLING, stats, list(obs.markers))
    new = _rebuilt(
        item,
        _ST_SETTLING,
        item.version + 1,
        stats,
        markers,
        item.restarts,
        item.handle,
        at,
        item.last_seen_at,
        item.last_active_at,
        at,
        _VANISHED,
    )
    new = _finish(item, new, _IN_VANISHED)
    event = _new_awaiting(new.id, new.run_id, new.native_id, at, new.version, obs.source, new.state)
    return _step(new, (event,))


_VANISHED: Final = _IN_VANISHED.value


def _confirmed_from_settling(item: RunItem, obs: Observation) -> Step:
    """A settling job an authoritative final record gives its verdict (``obs.state``,
    terminal: ``classify`` said CONFIRMED): the stats merged as on every end, the
    verdict's reason, confirmed by the record's source, seen now."""
    at = obs.observed_at
    new_state = obs.state
    assert new_state is not None  # CONFIRMED is a terminal state's input
    values = _merged(item.stats, obs.stats, obs.source, with_exit=True)
    values["reason"] = verdict_reason(new_state, values["exit"], values["reason"])
    if values["finished_at"] is None:
        values["finished_at"] = at
        values["finished_at_approx"] = True
    values["confirmed_by"] = obs.source
    stats = _build_stats(*values.values())
    extra = list(obs.markers)
    disagreement = _disagreement(item.stats, obs.stats, obs.source)
    if disagreement is not None:
        extra.append(disagreement)
    markers = _markers_for(item.markers, new_state, stats, extra)
    new = _rebuilt(
        item,
        new_state,
        item.version + 1,
        stats,
        markers,
        item.restarts,
        item.handle,
        at,
        at,
        item.last_active_at,
        None,
        None,
    )
    new = _finish(item, new, _IN_CONFIRMED)
    event = _new_finished(
        new.id,
        new.run_id,
        new.native_id,
        at,
        new.version,
        obs.source,
        new_state,
        new.confirmed,
        stats.exit,
    )
    return _step(new, (event,))


def _requeue(item: RunItem, obs: Observation) -> Step:
    _target(item, _IN_REQUEUED, None)
    restarts = obs.restarts if obs.restarts is not None else item.restarts + 1
    marker = Marker(
        code=_MC_REQUEUED,
        text=f"requeued under the same id (run {restarts + 1}) after {item.state}",
    )
    new = evolve(
        item,
        state=_ST_QUEUED,
        version=item.version + 1,
        stats=JobStats(submitted_at=obs.stats.submitted_at or item.stats.submitted_at),
        restarts=restarts,
        handle=None,
        settling_since=None,
        settling_cause=None,
        updated_at=max(item.updated_at, obs.observed_at),
        markers=(
            # What the earlier run's verdict or report said is not about the new run.
            *(m for m in item.markers if m.code not in _RUN_MARKERS),
            marker,
        ),
    )
    new = evolve(new, markers=_with_markers(new, []))
    new = _finish(item, new, _IN_REQUEUED)
    event = Requeued(
        **_event_fields(new, obs.observed_at, obs.source),  # type: ignore[arg-type]
        previous=item.state,
        restarts=restarts,
    )
    return Step(new, (event,))


def _brings_nothing(item: RunItem, obs: Observation) -> bool:
    """True when an observation could only confirm what the item already says."""
    return (
        (obs.stats is EMPTY_STATS or obs.stats == EMPTY_STATS)
        and (obs.handle is None or obs.handle == item.handle)
        and all(marker in item.markers for marker in obs.markers)
    )


_step = positional_builder(Step)  # (item, events): every advance returns one

# The machine rebuilds items and stats from values that already passed their checks (an
# earlier item, a validated Observation) and checks every invariant of the result, so it
# skips attrs' per-field checks on this path (see hpcstate._fast).
_build_item = positional_builder(RunItem, trusted=True)
_build_stats = positional_builder(JobStats, trusted=True)


def _copy(item: RunItem, **changes: object) -> RunItem:
    """``attrs.evolve`` for the rarer paths."""
    values = {name: getattr(item, name) for name in _ITEM_FIELDS}
    values.update(changes)
    return _build_item(**values)


_ITEM_FIELDS = tuple(attribute.name for attribute in fields(RunItem))


def _sighted(
    item: RunItem, last_seen_at: datetime | None, last_active_at: datetime | None, at: datetime
) -> RunItem:
    """The same item with new sighting times: the commonest change in a poll."""
    return _rebuilt(
        item,
        item.state,
        item.version,
        item.stats,
        item.markers,
        item.restarts,
        item.handle,
        at,
        last_seen_at,
        last_active_at,
        item.settling_since,
        item.settling_cause,
    )


#: What a transition may change (the arguments of :func:`_rebuilt` after ``item``, in
#: order; ``at`` moves ``updated_at`` forward). Every other RunItem field is kept.
_TRANSITION_FIELDS: Final = (
    "state",
    "version",
    "stats",
    "markers",
    "restarts",
    "handle",
    "at",
    "last_seen_at",
    "last_active_at",
    "settling_since",
    "settling_cause",
)


def _make_rebuilt() -> Callable[
    [
        RunItem,
        State,
        int,
        JobStats,
        tuple[Marker, ...],
        int,
        str | None,
        datetime,
        datetime | None,
        datetime | None,
        datetime | None,
        str | None,
    ],
    RunItem,
]:
    """``_rebuilt(item, *changes)``: ``item`` with what a transition changes, built
    positionally (the hot path) from RunItem's fields, so a field added to RunItem is
    kept with no edit here."""
    arguments = []
    for attribute in fields(RunItem):
        name = attribute.name
        if name == "updated_at":
            arguments.append("item.updated_at if item.updated_at >= at else at")
        elif name in _TRANSITION_FIELDS:
            arguments.append(name)
        else:
            arguments.append(f"item.{name}")
    source = (
        f"def _rebuilt(item, {', '.join(_TRANSITION_FIELDS)}):\n"
        f"    return _build_item({', '.join(arguments)})\n"
    )
    namespace: dict[str, Any] = {"_build_item": _build_item}
    exec(source, namespace)  # the names come from attrs.fields and the tuple above only
    rebuilt: Any = namespace["_rebuilt"]
    rebuilt.__doc__ = "``item`` with what a transition changes; what it never changes is kept."
    return rebuilt  # type: ignore[no-any-return]


_rebuilt: Final = _make_rebuilt()


def _without_waiting_reason(stats: JobStats) -> JobStats:
    """``stats`` without a reason that does not explain an end."""
    if stats.reason is not None and stats.reason.kind not in END_KINDS:
        return evolve(stats, reason=None)
    return stats


def _apply(item: RunItem, input: Input, obs: Observation) -> Step:
    target = _target(item, input, obs.state)
    at = obs.observed_at
    # "Seen": some source listed the job (it exists). "Active": the queue lists it as
    # queued/running, which restarts a settling item's grace; accounting's "still
    # running" is database lag and does not.
    seen = obs.state is not None and obs.source is not _SRC_SELF_REPORT
    active = obs.state in (_ST_QUEUED, _ST_RUNNING) and obs.source in (
        _SRC_QUEUE,
        _SRC_CONTROLLER,
    )

    if target is None and item.state in TERMINAL and not obs.final:
        # A verdict stands, and so does what we know of that run: a queue sighting after
        # the verdict is a stale snapshot or a recycled id, never this job's stats. One
        # exception: a lossless source resolving the verdict's ambiguous exit status to
        # one of the values it admits, for the same state (Slurm 22.05: sacct's "9 or
        # 137" confirmed first, the controller's exact 137 listed a moment later).
        return _resolve_ambiguity(item, obs)

    live_after_cancel = _needs_cancel_live(item, active)
    if target is None and _brings_nothing(item, obs) and not live_after_cancel:
        # The common case in a poll: the queue says what we already know. Only the
        # sighting times matter (the grace, "ever seen").
        if (active and item.state is _ST_SETTLING) or (seen and item.last_seen_at is None):
            return _step(_sighted(item, at, at if active else item.last_active_at, at), ())
        return _step(item, ())

    new_state = item.state if target is None else target
    finished = new_state in TERMINAL or new_state is _ST_SETTLING

    old_stats, new_stats = item.stats, obs.stats
    if finished:
        # The reason a job waited (Priority, Resources...) never survives its end, nor
        # does one said by a sighting of the job waiting or running.
        if item.state not in _ENDED:
            old_stats = _without_waiting_reason(old_stats)
        if obs.state not in TERMINAL:
            new_stats = _without_waiting_reason(new_stats)
    values = _merged(old_stats, new_stats, obs.source, with_exit=finished)
    if new_state in TERMINAL:
        values["reason"] = verdict_reason(new_state, values["exit"], values["reason"])
    extra: list[Marker] = list(obs.markers)
    if live_after_cancel and new_state in _LIVE:
        extra.append(
            Marker(
                code=CANCEL_LIVE,
                text=f"{obs.source} listed the job {obs.state} at {at.isoformat()}, after "
                "the cancel request: the cancel found it live",
            )
        )
    disagreement = _disagreement(item.stats, obs.stats, obs.source) if finished else None
    if disagreement is not None:
        extra.append(disagreement)

    if new_state is _ST_RUNNING and values["started_at"] is None:
        values["started_at"] = at
    if finished and values["finished_at"] is None:
        # The queue cannot say when it ended: stamp now, accounting corrects it later.
        values["finished_at"] = at
        values["finished_at_approx"] = True

    settling_since, settling_cause = item.settling_since, item.settling_cause
    if new_state is _ST_SETTLING and item.state is not _ST_SETTLING:
        settling_since, settling_cause = at, input.value
    elif new_state is not _ST_SETTLING:
        settling_since, settling_cause = None, None

    markers = item.markers
    restarts = item.restarts
    if (new_state in TERMINAL and item.state not in TERMINAL) or input is _IN_LATE_CONFIRMATION:
        confirmed = input in (_IN_CONFIRMED, _IN_SEEN_FAILURE, _IN_LATE_CONFIRMATION)
        values["confirmed_by"] = obs.source if confirmed else None
        if input is _IN_LATE_CONFIRMATION:
            dropped = {_MC_UNCONFIRMED, _MC_GONE}
            markers = tuple(m for m in markers if m.code not in dropped)
            if obs.restarts is not None and obs.restarts > restarts:
                restarts = obs.restarts
    if input is _IN_FORGOTTEN and new_state is _ST_GONE:
        extra.append(
            Marker(
                code=_MC_GONE,
                text=obs.detail
                or f"{obs.source} no longer knows this job and never gave a verdict",
            )
        )
    if input is _IN_VANISHED_AFTER_CANCEL:
        extra.append(
            Marker(
                code=_MC_UNCONFIRMED,
                text=f"a cancel was requested, the job was listed live after it, and then "
                f"{obs.source} no longer knew the job"
                + (f" ({obs.detail})" if obs.detail else "")
                + ": cancelled, not confirmed by a record",
            )
        )
    if input is _IN_SELF_REPORTED and obs.stats.exit is not None:
        extra.append(
            Marker(
                code=_MC_SELF_REPORTED,
                text=f"the job reported {obs.stats.exit.describe()}",
            )
        )

    handle = item.handle
    if new_state is _ST_RUNNING and obs.handle is not None:
        handle = obs.handle
    if new_state in WAITING:
        handle = None
        values["started_at"] = None
    stats = _build_stats(*values.values())  # _merged keeps JobStats' field order

    markers = _markers_for(markers, new_state, stats, extra)
    last_seen = at if seen else item.last_seen_at
    last_active = at if active else item.last_active_at
    if new_state is item.state and (stats, markers, handle) == (
        item.stats,
        item.markers,
        item.handle,
    ):
        # Nothing a consumer could see changed; keep the version (and emit nothing).
        if (last_seen, last_active) != (item.last_seen_at, item.last_active_at):
            return _step(_sighted(item, last_seen, last_active, at), ())
        return _step(item, ())
    new = _rebuilt(
        item,
        new_state,
        item.version + 1,
        stats,
        markers,
        restarts,
        handle,
        at,
        last_seen,
        last_active,
        settling_since,
        settling_cause,
    )
    new = _finish(item, new, input)
    return _step(new, (_event_for(item, new, input, obs.source, at),))


def _resolve_ambiguity(item: RunItem, obs: Observation) -> Step:
    known, seen = item.stats.exit, obs.stats.exit
    if (
        known is None
        or known.exact
        or seen is None
        or not seen.exact
        or obs.state is not item.state
        or not known.admits(seen)
    ):
        return Step(item)
    stats = _copy_stats_exit(item.stats, seen, obs.source)
    stats = evolve(stats, reason=verdict_reason(item.state, seen, stats.reason))
    markers = _markers_for(item.markers, item.state, stats, [])
    new = _copy(
        item,
        stats=stats,
        markers=markers,
        version=item.version + 1,
        updated_at=max(item.updated_at, obs.observed_at),
    )
    new = _finish(item, new, _IN_SEEN_FAILURE)
    return Step(new, (StatsUpdated(**_event_fields(new, obs.observed_at, obs.source)),))  # type: ignore[arg-type]


def _copy_stats_exit(stats: JobStats, exit_: ExitStatus, source: Source) -> JobStats:
    return evolve(stats, exit=exit_, exit_source=source)


_new_started = positional_builder(Started)
_new_submitted = positional_builder(Submitted)
_new_awaiting = positional_builder(AwaitingConfirmation)
_new_finished = positional_builder(Finished)
_new_corrected = positional_builder(Corrected)
_new_stats_updated = positional_builder(StatsUpdated)


def _event_for(old: RunItem, new: RunItem, input: Input, source: Source, at: datetime) -> Event:
    # Positional: item_id, run_id, native_id, at, version, source, state, then the extras.
    head = (new.id, new.run_id, new.native_id, at, new.version, source, new.state)
    if input is _IN_LATE_CONFIRMATION:
        return _new_corrected(*head, old.state, new.stats.exit)
    if new.state is old.state:
        return _new_stats_updated(*head)
    if new.state in TERMINAL:
        return _new_finished(*head, new.confirmed, new.stats.exit)
    if new.state is _ST_SETTLING:
        return _new_awaiting(*head)
    if new.state is _ST_RUNNING:
        return _new_started(*head)
    return _new_submitted(*head)


# -- tracker-side inputs ---------------------------------------------------------------


def new_item(
    *,
    id: str,
    run_id: str,
    backend: str,
    now: datetime,
    name: str = "",
    array_index: int | None = None,
) -> RunItem:
    """A PENDING item: known to hpcstate, not yet submitted."""
    return RunItem(
        id=id,
        run_id=run_id,
        backend=backend,
        name=name,
        array_index=array_index,
        created_at=now,
        updated_at=now,
    )


def submitted(
    item: RunItem, *, native_id: str, at: datetime, submitted_at: datetime | None = None
) -> Step:
    """The scheduler accepted the item (or we adopted an existing job by its id)."""
    _target(item, _IN_SUBMITTED, None)
    new = evolve(
        item,
        state=_ST_QUEUED,
        native_id=native_id,
        version=item.version + 1,
        stats=evolve(item.stats, submitted_at=submitted_at),
        updated_at=max(item.updated_at, at),
    )
    new = _finish(item, new, _IN_SUBMITTED)
    return Step(new, (Submitted(**_event_fields(new, at, _SRC_TRACKER)),))  # type: ignore[arg-type]


def _end_before_submit(item: RunItem, input: Input, at: datetime, reason: Reason) -> Step:
    target = _target(item, input, None)
    assert target is not None  # the table maps both inputs to a state
    # The tracker itself knows: nothing reached a scheduler, so this is confirmed.
    new = evolve(
        item,
        state=target,
        version=item.version + 1,
        stats=evolve(EMPTY_STATS, reason=reason, finished_at=at, confirmed_by=_SRC_TRACKER),
        updated_at=max(item.updated_at, at),
    )
    new = _finish(item, new, input)
    fields = _event_fields(new, at, _SRC_TRACKER)
    return Step(new, (Finished(**fields, confirmed=True),))  # type: ignore[arg-type]


def submit_rejected(item: RunItem, *, at: datetime, message: str) -> Step:
    """The scheduler refused the submission: a confirmed failure that never ran."""
    reason = Reason(kind=_RK_SUBMIT_REJECTED, text=message)
    return _end_before_submit(item, _IN_SUBMIT_REJECTED, at, reason)


def cancel_before_submit(item: RunItem, *, at: datetime) -> Step:
    reason = Reason(kind=_RK_CANCELLED, text="cancelled before submission")
    return _end_before_submit(item, _IN_CANCEL_BEFORE_SUBMIT, at, reason)


def add_marker(item: RunItem, marker: Marker, *, at: datetime) -> Step:
    """Attach a marker (e.g. cancel requested); a no-op if it is already there."""
    if marker in item.markers:
        return Step(item)
    return _tracker_change(evolve(item, markers=(*item.markers, marker)), at)


def remove_marker(item: RunItem, code: str, *, at: datetime) -> Step:
    """Take away every marker with ``code`` (e.g. unreachable, once the backend
    answers again); a no-op if there is none. Never touches the state or the verdict."""
    if not item.has_marker(code):
        return Step(item)
    return _tracker_change(
        evolve(item, markers=tuple(m for m in item.markers if m.code != code)), at
    )


def grace_deadline(item: RunItem, grace: timedelta) -> datetime | None:
    """When a settling item falls back to an unconfirmed verdict (None if not settling).

    The grace restarts whenever the queue still lists the job as queued or running.
    """
    if item.state is not _ST_SETTLING or item.settling_since is None:
        return None
    start = item.settling_since
    if item.last_active_at is not None and item.last_active_at > start:
        start = item.last_active_at
    return start + grace


# Settling causes that prove the job ran: the queue said it completed, or it reported.
_RAN_CAUSES = frozenset({_IN_SEEN_SUCCESS.value, _IN_SELF_REPORTED.value})


def _fallback(item: RunItem, grace: timedelta) -> tuple[Input, Marker]:
    """Which unconfirmed verdict a settling item gets when its grace runs out, and why.

    Success is assumed only for a job known to have run and not known to have failed;
    anything else is "gone": its outcome is unknown, and it is never called failed.
    """
    since = item.settling_since.isoformat() if item.settling_since else "?"
    seconds = f"{grace.total_seconds():.0f} s"
    stats = item.stats
    reported = stats.exit_source in ADVISORY and stats.exit is not None
    ran = stats.started_at is not None or item.settling_cause in _RAN_CAUSES
    if reported and stats.exit is not None and not stats.exit.success:
        text = (
            f"the job reported {stats.exit.describe()} but no scheduler record confirmed its "
            f"outcome within {seconds} (settling since {since}): its outcome is unknown"
        )
        return _IN_GRACE_EXPIRED_UNSEEN, Marker(code=_MC_GONE, text=text)
    if ran:
        text = (
            f"the job left the queue (settling since {since}) and no accounting record "
            f"confirmed its outcome within {seconds}; success is assumed, not confirmed"
        )
        return _IN_GRACE_EXPIRED, Marker(code=_MC_UNCONFIRMED, text=text)
    if item.last_seen_at is not None:
        text = (
            f"the job was never seen running, left the queue (settling since {since}) and no "
            f"accounting record appeared within {seconds}: its outcome is unknown"
        )
    else:
        text = (
            f"no queue ever listed this job and no accounting record appeared within "
            f"{seconds} of asking (since {since}): its outcome is unknown"
        )
    return _IN_GRACE_EXPIRED_UNSEEN, Marker(code=_MC_GONE, text=text)


def tick(item: RunItem, *, now: datetime, grace: timedelta = DEFAULT_GRACE) -> Step:
    """Let time pass: a settling item whose grace ran out gets its unconfirmed verdict."""
    deadline = grace_deadline(item, grace)
    if deadline is None or now < deadline:
        return Step(item)
    input, marker = _fallback(item, grace)
    target = _target(item, input, None)
    assert target is not None
    new = evolve(
        item,
        state=target,
        version=item.version + 1,
        settling_since=None,
        settling_cause=None,
        updated_at=max(item.updated_at, now),
        stats=evolve(
            item.stats,
            confirmed_by=None,
            reason=verdict_reason(target, item.stats.exit, item.stats.reason),
        ),
    )
    new = evolve(new, markers=_with_markers(new, [marker]))
    new = _finish(item, new, input)
    fields = _event_fields(new, now, _SRC_TRACKER)
    return Step(new, (Finished(**fields, confirmed=False, exit=new.stats.exit),))  # type: ignore[arg-type]
