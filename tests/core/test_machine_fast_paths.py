"""The machine's fast paths (a queued or running job vanishing from the queue, a
settling job confirmed by a final record) give exactly what the general rules give:
the same item, the same events, the same exceptions, over generated items and
observations. ``_advance_general`` is ``advance`` with the fast paths left out."""

from __future__ import annotations

import contextlib
from datetime import datetime, timedelta
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

import hpcstate as h
from hpcstate import Absence, ExitStatus, JobStats, Marker, MarkerCode, Reason, Source, State
from hpcstate._machine import (
    _ANY_BROKEN,
    _BROKEN,
    _ITEM_FIELDS,
    _advance_general,
    _ambiguity_marker,
)
from hpcstate.serial import event_to_dict, item_to_dict

from .builders import NATIVE, T0, obs, queued, running, settling, settling_vanished
from .test_verdict_reasons import reasons

SOURCES = list(Source)
# Every state an item can hold, weighted to those the fast paths take.
STATES = [*[State.QUEUED, State.RUNNING, State.SETTLING] * 4, *h.TERMINAL, State.PENDING]
OBSERVABLE = [s for s in State if s not in (State.PENDING, State.SETTLING)]

exits = st.one_of(
    st.none(),
    st.integers(0, 255).map(ExitStatus.exited),
    st.integers(1, 64).map(ExitStatus.killed),
    st.integers(0, 127).map(lambda c: ExitStatus.from_slurm(f"{c}:0", high_codes_lossy=True)),
    st.integers(0, 255).map(lambda c: ExitStatus.exited(c, ambiguous="sacct lost it")),
)
times = st.one_of(st.none(), st.integers(-100, 2000).map(lambda s: T0 + timedelta(seconds=s)))
MARKERS = [
    Marker(code=MarkerCode.CANCEL_REQUESTED.value, text="cancel requested"),
    Marker(code=MarkerCode.CANCEL_LIVE.value, text="listed live after the cancel"),
    Marker(code=MarkerCode.CANCEL_FAILED.value, text="the cancel call failed"),
    Marker(code=MarkerCode.REQUEUED.value, text="requeued under the same id (run 2)"),
    Marker(code=MarkerCode.UNCONFIRMED.value, text="not confirmed"),
    Marker(code=MarkerCode.SELF_REPORTED.value, text="the job reported exit 0"),
    Marker(code=MarkerCode.GONE.value, text="gone"),
    Marker(code=MarkerCode.STEP_FAILED.value, text="a step failed"),
    Marker(code=MarkerCode.SOURCES_DISAGREE.value, text="queue said 1, accounting said 2"),
    _ambiguity_marker("exit", "sacct lost it"),
    Marker(code="custom", text="a user's note"),
]
markers = st.lists(st.sampled_from(MARKERS), max_size=4, unique=True).map(tuple)

stats = st.one_of(
    st.just(h.EMPTY_STATS),
    st.builds(
        JobStats,
        exit=exits,
        exit_source=st.one_of(st.none(), st.sampled_from(SOURCES)),
        derived_exit=exits,
        reason=reasons,
        submitted_at=times,
        started_at=times,
        finished_at=times,
        finished_at_approx=st.booleans(),
        elapsed_s=st.one_of(st.none(), st.floats(0, 1e6)),
        cpu_time_s=st.one_of(st.none(), st.floats(0, 1e6)),
        max_rss_bytes=st.one_of(st.none(), st.integers(0, 2**40)),
        nodes=st.lists(st.sampled_from(["n1", "n2"]), max_size=2).map(tuple),
        confirmed_by=st.one_of(st.none(), st.sampled_from(SOURCES)),
    ),
)


@st.composite
def items(draw: st.DrawFn) -> h.RunItem:
    """Any item, sound or not (a broken one must raise the same way on both paths)."""
    state = draw(st.sampled_from(STATES))
    updated = T0 + timedelta(seconds=draw(st.integers(0, 1000)))
    return h.RunItem(
        id="run1.0",
        run_id="run1",
        backend="test",
        native_id=draw(st.sampled_from([NATIVE, NATIVE, NATIVE, "9999"])),
        array_index=draw(st.one_of(st.none(), st.integers(0, 9))),
        name=draw(st.sampled_from(["", "job"])),
        state=state,
        version=draw(st.integers(1, 9)),
        stats=draw(stats),
        markers=draw(markers),
        restarts=draw(st.integers(0, 2)),
        handle=draw(st.one_of(st.none(), st.just("pid:1"))),
        created_at=T0,
        updated_at=updated,
        last_seen_at=draw(times),
        last_active_at=draw(times),
        settling_since=draw(times),
        settling_cause=draw(st.sampled_from([None, "vanished", "seen_success", "self_reported"])),
    )


@st.composite
def observations(draw: st.DrawFn) -> h.Observation:
    """Any observation; a third the queue's "not listed", a third a final record (the
    fast paths' inputs, with everything else varied)."""
    kind = draw(st.sampled_from(["any", "vanished", "record"]))
    if kind == "vanished":
        state, absence, final = None, Absence.ABSENT, False
    elif kind == "record":
        state, absence, final = (
            draw(st.sampled_from(sorted(h.TERMINAL, key=lambda s: s.value))),
            None,
            True,
        )
    else:
        state = draw(st.one_of(st.none(), st.sampled_from(OBSERVABLE)))
        absence = draw(st.sampled_from(list(Absence))) if state is None else None
        final = draw(st.booleans()) if state is not None else False
    return h.Observation(
        native_id=draw(st.sampled_from([NATIVE, NATIVE, NATIVE, "9999"])),
        source=draw(st.sampled_from(SOURCES)),
        observed_at=T0 + timedelta(seconds=draw(st.integers(-100, 2000))),
        state=state,
        absence=absence,
        final=final,
        stats=draw(st.one_of(st.just(h.EMPTY_STATS), stats)),
        restarts=draw(st.one_of(st.none(), st.integers(0, 3))),
        handle=draw(st.one_of(st.none(), st.just("pid:2"))),
        detail=draw(st.sampled_from(["", "purged"])),
        markers=draw(markers),
    )


def outcome(advance: Any, item: h.RunItem, observation: h.Observation) -> tuple[Any, ...]:
    try:
        step = advance(item, observation)
    except Exception as exc:
        return ("raised", type(exc), str(exc), getattr(exc, "args", None))
    return (
        "step",
        step.item,
        item_to_dict(step.item),
        step.events,
        [(type(e), event_to_dict(e)) for e in step.events],
        step.item is item,
    )


def check_same(item: h.RunItem, observation: h.Observation) -> None:
    fast = outcome(h.advance, item, observation)
    general = outcome(_advance_general, item, observation)
    assert fast == general, (item, observation)


@settings(max_examples=3000, deadline=None)
@given(item=items(), observation=observations())
def test_any_item_and_observation_give_the_same_result(
    item: h.RunItem, observation: h.Observation
) -> None:
    check_same(item, observation)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


@settings(max_examples=1500, deadline=None)
@given(
    start=st.sampled_from(["queued", "running", "settling", "settling_vanished"]),
    cancel=st.sampled_from([(), MARKERS[:1], MARKERS[:2], MARKERS[:3]]),
    state=st.sampled_from(sorted(h.TERMINAL - {State.GONE}, key=lambda s: s.value)),
    source=st.sampled_from([Source.ACCOUNTING, Source.CONTROLLER, Source.QUEUE, Source.PROCESS]),
    exit=exits,
    derived=exits,
    reason=reasons,
    finished_at=times,
    extra=markers,
    absence=st.sampled_from(list(Absence)),
)
def test_the_fast_pair_from_sound_items(
    start: str,
    cancel: tuple[Marker, ...],
    state: State,
    source: Source,
    exit: ExitStatus | None,
    derived: ExitStatus | None,
    reason: Reason | None,
    finished_at: datetime | None,
    extra: tuple[Marker, ...],
    absence: Absence,
) -> None:
    """What a poll does: a sound item, the queue stops listing it (any absence), then a
    final record (any source, exit, reason, markers) gives the verdict; each step is
    compared, and the second is applied to the first's result."""
    item = {
        "queued": queued,
        "running": running,
        "settling": settling,
        "settling_vanished": settling_vanished,
    }[start]()
    for marker in cancel:
        item = h.add_marker(item, marker, at=item.updated_at).item
    gone = obs(50, absence=absence)
    check_same(item, gone)
    with contextlib.suppress(h.IllegalTransition):
        item = h.advance(item, gone).item
    record = h.Observation(
        native_id=NATIVE,
        source=source,
        observed_at=at(60),
        state=state,
        final=True,
        stats=JobStats(exit=exit, derived_exit=derived, reason=reason, finished_at=finished_at),
        markers=extra,
    )
    check_same(item, record)


def test_the_fast_paths_are_taken() -> None:
    """The pair the bench and real polls make goes through the fast paths (else the
    comparisons above would compare the general path with itself)."""
    import hpcstate._machine as machine

    taken: list[str] = []
    originals = machine._settled_on_vanish, machine._confirmed_from_settling

    def settle(*args: Any) -> Any:
        taken.append("settle")
        return originals[0](*args)

    def confirm(*args: Any) -> Any:
        taken.append("confirm")
        return originals[1](*args)

    machine._settled_on_vanish, machine._confirmed_from_settling = settle, confirm  # type: ignore[assignment]
    try:
        settled = h.advance(running(), obs(50, absence=Absence.ABSENT)).item
        record = obs(
            60,
            State.COMPLETED,
            source=Source.ACCOUNTING,
            final=True,
            stats=JobStats(exit=ExitStatus.exited(0)),
        )
        done = h.advance(settled, record).item
    finally:
        machine._settled_on_vanish, machine._confirmed_from_settling = originals
    assert taken == ["settle", "confirm"]
    # Written by hand: the poll's pair ends completed, confirmed by accounting, exit 0.
    assert done.state is State.COMPLETED
    assert done.stats.confirmed_by is Source.ACCOUNTING
    assert done.stats.exit == ExitStatus.exited(0)
    assert done.version == settled.version + 1 == running().version + 2
    assert settled.settling_cause == "vanished"


@settings(max_examples=1500, deadline=None)
@given(item=items())
def test_the_one_expression_invariant_check_is_the_rules_one_by_one(item: h.RunItem) -> None:
    """``_ANY_BROKEN`` (the rules rewritten to read the state and stats once) says broken
    exactly when one of the rules, compiled from their own text, does."""
    assert bool(_ANY_BROKEN(item)) == any(broken(item) for broken in _BROKEN)


def test_the_invariant_check_sees_a_broken_item() -> None:
    sound = settling()
    assert not _ANY_BROKEN(sound)
    broken = h.RunItem(**{**{a: getattr(sound, a) for a in _ITEM_FIELDS}, "settling_since": None})
    assert _ANY_BROKEN(broken)
