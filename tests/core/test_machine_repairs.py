"""Invariants are written once (``_machine._INVARIANTS``): the machine checks them, the
store's sweep repairs with them (``repair``), and changes the tracker makes outside a
transition (markers, repairs) are machine functions with one version bump and one
StatsUpdated event each. Expected items are written by hand."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

import attrs
from attrs import evolve

import hpcstate as h
from hpcstate import ExitStatus, JobStats, Marker, RunItem, Source, State, StatsUpdated
from hpcstate._machine import _rebuilt, remove_marker, repair, repaired

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc)
T1 = T0 + timedelta(seconds=5)
LATER = T0 + timedelta(minutes=1)


def item(state: State, *, native_id: str | None = "7", **changes: Any) -> RunItem:
    base = RunItem(
        id="r.0",
        run_id="r",
        backend="slurm",
        native_id=native_id,
        state=state,
        version=3,
        created_at=T0,
        updated_at=T1,
    )
    return evolve(base, **changes)


def test_a_pending_item_that_reached_a_scheduler_is_queued_and_owns_nothing() -> None:
    broken = item(State.PENDING, handle="pid:1", stats=JobStats(started_at=T0, finished_at=T1))
    assert h.check_invariants(broken) == (
        "a pending item has no native id yet",
        "a pending item owns no execution (handle 'pid:1')",
        "a pending item has no started_at",
        "a pending item has no finished_at",
    )
    assert repaired(broken) == item(State.QUEUED)


def test_a_running_item_loses_every_end_fact() -> None:
    broken = item(
        State.RUNNING,
        handle="pid:1",
        stats=JobStats(
            started_at=T0,
            finished_at=T1,
            finished_at_approx=True,
            exit=ExitStatus.exited(3),
            exit_source=Source.ACCOUNTING,
            derived_exit=ExitStatus.exited(1),
            confirmed_by=Source.ACCOUNTING,
            nodes=("n1",),
        ),
    )
    assert h.check_invariants(broken) == (
        "a running item has no finished_at",
        "a running item has no exit status yet",
        "a running item cannot be confirmed",
    )
    assert repaired(broken) == item(
        State.RUNNING, handle="pid:1", stats=JobStats(started_at=T0, nodes=("n1",))
    )


def test_a_settling_item_gets_its_settling_time_and_an_approximate_end() -> None:
    broken = item(State.SETTLING, stats=JobStats(confirmed_by=Source.QUEUE))
    assert h.check_invariants(broken) == (
        "a settling item has settling_since",
        "a settling item has an (approximate) finished_at",
        "a settling item cannot be confirmed",
    )
    assert repaired(broken) == item(
        State.SETTLING,
        settling_since=T1,
        stats=JobStats(finished_at=T1, finished_at_approx=True),
    )
    # With settling_since known, the end is stamped from it.
    since = item(State.SETTLING, settling_since=T0)
    assert repaired(since).stats == JobStats(finished_at=T0, finished_at_approx=True)


def test_an_ended_item_gets_an_approximate_end_and_a_source_for_its_exit() -> None:
    broken = item(State.FAILED, settling_since=T0, stats=JobStats(exit=ExitStatus.exited(2)))
    assert h.check_invariants(broken) == (
        "a failed item has no settling_since",
        "a failed item has finished_at",
        "an exit status has a source",
    )
    assert repaired(broken) == item(
        State.FAILED,
        stats=JobStats(
            exit=ExitStatus.exited(2),
            exit_source=Source.TRACKER,
            finished_at=T1,
            finished_at_approx=True,
        ),
    )
    gone = item(State.GONE, stats=JobStats(finished_at=T0, confirmed_by=Source.ACCOUNTING))
    assert h.check_invariants(gone) == ("a gone item cannot be confirmed",)
    assert repaired(gone) == item(State.GONE, stats=JobStats(finished_at=T0))


def test_repair_is_a_change_of_its_own_with_one_event() -> None:
    broken = item(State.QUEUED, handle="pid:1")
    step = repair(broken, at=LATER)
    assert step is not None
    assert step.item == item(State.QUEUED, version=4, updated_at=LATER)
    assert step.events == (
        StatsUpdated(
            item_id="r.0",
            run_id="r",
            native_id="7",
            at=LATER,
            version=4,
            source=Source.TRACKER,
            state=State.QUEUED,
        ),
    )
    assert h.check_invariants(step.item) == ()
    # updated_at never goes back.
    earlier = repair(broken, at=T0)
    assert earlier is not None
    assert earlier.item.updated_at == T1


def test_what_only_a_person_can_fix_is_not_repaired() -> None:
    sound = item(State.QUEUED)
    assert repair(sound, at=LATER) is None
    no_native = item(State.QUEUED, native_id=None, handle="pid:1")
    assert h.check_invariants(no_native) == (
        "a queued item owns no execution (handle 'pid:1')",
        "a queued item has a native id",
    )
    assert repaired(no_native) == item(State.QUEUED, native_id=None)  # what it can
    assert repair(no_native, at=LATER) is None
    stray_cause = item(
        State.COMPLETED, settling_cause="seen_success", stats=JobStats(finished_at=T0)
    )
    assert h.check_invariants(stray_cause) == ("a completed item has no settling_cause",)
    assert repair(stray_cause, at=LATER) is None


def test_a_marker_is_taken_away_with_one_event_and_absent_is_a_no_op() -> None:
    unreachable = Marker(code="unreachable", text="backend slurm unreachable")
    other = Marker(code="cancel_requested", text="by user")
    marked = item(State.RUNNING, markers=(unreachable, other, unreachable))
    step = remove_marker(marked, "unreachable", at=LATER)
    assert step.item == item(State.RUNNING, markers=(other,), version=4, updated_at=LATER)
    assert [type(e) for e in step.events] == [StatsUpdated]
    assert (step.events[0].version, step.events[0].source) == (4, Source.TRACKER)
    unchanged = remove_marker(step.item, "unreachable", at=LATER + timedelta(seconds=1))
    assert unchanged.item is step.item
    assert unchanged.events == ()
    # add_marker then remove_marker: the markers are back, two versions later.
    added = h.add_marker(step.item, unreachable, at=LATER)
    back = remove_marker(added.item, "unreachable", at=LATER)
    assert (back.item.markers, back.item.version) == ((other,), 6)


def test_rebuilt_keeps_every_field_a_transition_does_not_change() -> None:
    original = item(
        State.RUNNING,
        array_index=4,
        name="job",
        restarts=1,
        handle="pid:1",
        last_seen_at=T0,
        markers=(Marker(code="a", text="b"),),
    )
    stats = JobStats(started_at=T0)
    markers = (Marker(code="c", text="d"),)
    rebuilt = _rebuilt(
        original, State.SETTLING, 9, stats, markers, 2, None, LATER, LATER, T1, LATER, "x"
    )
    assert rebuilt == evolve(
        original,
        state=State.SETTLING,
        version=9,
        stats=stats,
        markers=markers,
        restarts=2,
        handle=None,
        updated_at=LATER,
        last_seen_at=LATER,
        last_active_at=T1,
        settling_since=LATER,
        settling_cause="x",
    )
    # An earlier time never moves updated_at back.
    assert (
        _rebuilt(
            original, State.RUNNING, 3, original.stats, (), 1, "pid:1", T0, None, None, None, None
        ).updated_at
        == T1
    )
    # Every field is passed through (none left unset by a positional builder).
    for attribute in attrs.fields(RunItem):
        getattr(rebuilt, attribute.name)
