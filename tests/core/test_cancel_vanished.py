"""A cancel requested through the store, then the job vanishes (issue 13).

Cancelled (unconfirmed) only when the vanish can be the cancel's doing: the queue listed
the job queued or running AFTER the cancel was requested (the machine then adds the
``cancel_live`` marker), and the job then vanished straight from that live view. Anything
less leaves room for a job that ended on its own before the cancel reached it (the race
property found one: a job failed with exit 127, the cancel was asked for afterwards, and
it read ``cancelled``), so it stays GONE (outcome unknown) or waits for a record.

The marker is what any process sharing the store wrote; the machine reads it from the
item, so the process that watches need not be the one that cancelled.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

import hpcstate as h
from hpcstate import Absence, ExitStatus, JobStats, MarkerCode, Reason, ReasonKind, Source, State
from hpcstate._machine import CANCEL_FAILED, CANCEL_LIVE

from .builders import (
    at,
    obs,
    queued,
    running,
    settling,
    settling_vanished,
    with_cancel_requested,
)


def _unknown(seconds: float) -> h.Observation:
    return obs(seconds, absence=Absence.UNKNOWN)


def _seen_live_after_cancel(item: h.RunItem, seconds: float = 10) -> h.RunItem:
    """Cancel requested, then the queue lists the job as it was (queued or running)."""
    asked = with_cancel_requested(item)
    step = h.advance(asked, obs(seconds, item.state))
    assert step.item.state is item.state
    assert step.item.has_marker(CANCEL_LIVE)
    assert [type(e) for e in step.events] == [h.StatsUpdated]  # stored, like any marker
    return step.item


@pytest.mark.parametrize(
    ("start", "observation", "expected"),
    [
        # The Kubernetes case: a Job deleted in the foreground is listed while its pods
        # die, then just disappears.
        ("running", "unknown", State.CANCELLED),
        ("queued", "unknown", State.CANCELLED),
        ("running", "gone", State.CANCELLED),  # a source that says GONE outright
        # The queue dropped it: accounting may still know, so it settles first.
        ("running", "absent", State.SETTLING),
    ],
)
def test_a_job_seen_live_after_the_cancel_that_vanishes(
    start: str, observation: str, expected: State
) -> None:
    item = _seen_live_after_cancel(running() if start == "running" else queued())
    seen = {
        "unknown": _unknown(20),
        "gone": obs(20, State.GONE),
        "absent": obs(20, absence=Absence.ABSENT),
    }[observation]
    step = h.advance(item, seen)
    assert step.item.state is expected
    assert h.check_invariants(step.item) == ()
    if expected is State.CANCELLED:
        assert not step.item.confirmed
        assert step.item.has_marker(MarkerCode.UNCONFIRMED.value)
        assert step.item.has_marker(MarkerCode.CANCEL_REQUESTED.value)
        assert step.item.stats.reason == Reason(kind=ReasonKind.CANCELLED)
        assert [type(e) for e in step.events] == [h.Finished]
        assert step.events[0].confirmed is False  # type: ignore[attr-defined]


@pytest.mark.parametrize("start", ["running", "queued"])
def test_a_cancel_asked_after_the_last_live_sighting_is_not_a_verdict(start: str) -> None:
    # The example the race property found (seed 4294967295, purge_after_s=60,
    # slow_calls=0.25): last listed running, the job failed on its own (exit 127), the
    # cancel was asked for after that, and the next answer was "purged". Nothing says the
    # cancel took it: gone (outcome unknown), not cancelled.
    item = with_cancel_requested(running() if start == "running" else queued())
    step = h.advance(item, _unknown(240))
    assert step.item.state is State.GONE
    assert not step.item.confirmed
    assert not step.item.has_marker(CANCEL_LIVE)
    assert step.item.stats.reason is None or step.item.stats.reason.kind is not (
        ReasonKind.CANCELLED
    )


@pytest.mark.parametrize("observation", ["unknown", "gone"])
def test_without_the_marker_it_stays_gone(observation: str) -> None:
    seen = _unknown(20) if observation == "unknown" else obs(20, State.GONE)
    assert h.advance(running(), seen).item.state is State.GONE


def test_a_live_sighting_without_a_cancel_adds_no_marker() -> None:
    step = h.advance(running(), obs(10, State.RUNNING))
    assert not step.item.has_marker(CANCEL_LIVE)
    assert not step.events


def test_accounting_saying_running_is_not_a_live_sighting() -> None:
    # Accounting lags the controller: its "running" proves nothing about the job now.
    item = with_cancel_requested(running())
    item = h.advance(item, obs(10, State.RUNNING, source=Source.ACCOUNTING)).item
    assert not item.has_marker(CANCEL_LIVE)
    assert h.advance(item, _unknown(20)).item.state is State.GONE


@pytest.mark.parametrize("builder", [settling, settling_vanished])
def test_a_job_that_already_left_the_queue_is_not_cancelled_by_a_vanish(
    builder: object,
) -> None:
    # It may have ended on its own before the cancel reached it.
    item = with_cancel_requested(builder())  # type: ignore[operator]
    assert h.advance(item, _unknown(30)).item.state is State.GONE


def test_left_the_queue_after_a_live_sighting_still_needs_a_record() -> None:
    # Seen live after the cancel, then the queue dropped it (SETTLING), then purged:
    # between the two sightings it may have ended on its own; gone, not cancelled.
    item = h.advance(_seen_live_after_cancel(running()), obs(20, absence=Absence.ABSENT)).item
    assert item.state is State.SETTLING
    assert h.advance(item, _unknown(30)).item.state is State.GONE


def test_the_grace_of_a_cancelled_job_that_left_the_queue_is_not_cancelled() -> None:
    item = h.advance(_seen_live_after_cancel(running()), obs(20, absence=Absence.ABSENT)).item
    assert item.state is State.SETTLING
    step = h.tick(item, now=at(20) + timedelta(seconds=601))
    # The usual fallback (it was seen running): an unconfirmed COMPLETED, no failure.
    assert step.item.state is State.COMPLETED
    assert not step.item.confirmed
    assert h.check_invariants(step.item) == ()


def test_the_grace_without_a_cancel_is_unchanged() -> None:
    item = h.advance(running(), obs(20, absence=Absence.ABSENT)).item
    assert h.tick(item, now=at(20) + timedelta(seconds=601)).item.state is State.COMPLETED


def test_a_late_record_corrects_an_unconfirmed_cancel() -> None:
    # It had completed before the cancel reached it: the record wins.
    item = h.advance(_seen_live_after_cancel(running()), _unknown(20)).item
    assert item.state is State.CANCELLED
    record = obs(
        40,
        State.COMPLETED,
        source=Source.ACCOUNTING,
        final=True,
        stats=JobStats(exit=ExitStatus.exited(0), finished_at=at(15)),
    )
    step = h.advance(item, record)
    assert step.item.state is State.COMPLETED
    assert step.item.confirmed
    assert not step.item.has_marker(MarkerCode.UNCONFIRMED.value)
    assert isinstance(step.events[0], h.Corrected)


def test_a_confirmed_cancel_is_not_touched_by_a_vanish() -> None:
    record = obs(20, State.CANCELLED, source=Source.ACCOUNTING, final=True)
    item = h.advance(_seen_live_after_cancel(running()), record).item
    assert item.confirmed
    step = h.advance(item, _unknown(30))
    assert step.item.state is State.CANCELLED
    assert step.item.confirmed
    assert not step.events


@given(
    path=st.lists(
        st.sampled_from(["queued", "running", "absent", "completed_seen", "self_ok", "self_fail"]),
        max_size=5,
    ).filter(lambda p: sum(w.startswith("self") for w in p) <= 1),  # a job reports once
    cancel_at=st.integers(0, 5),
    end=st.sampled_from(["unknown", "gone", "grace"]),
)
def test_a_vanish_is_cancelled_only_straight_from_a_live_view_seen_after_the_cancel(
    path: list[str], cancel_at: int, end: str
) -> None:
    item = queued()
    live_after_cancel = False  # the queue listed it queued/running after the request
    t = 2.0
    for i, what in enumerate([*path, None]):
        if i == cancel_at:
            item = with_cancel_requested(item)
        if what is None:
            break
        t += 1
        observation = {
            "queued": obs(t, State.QUEUED),
            "running": obs(t, State.RUNNING),
            "absent": obs(t, absence=Absence.ABSENT),
            "completed_seen": obs(t, State.COMPLETED),
            "self_ok": obs(
                t, State.COMPLETED, source=Source.SELF_REPORT,
                stats=JobStats(exit=ExitStatus.exited(0)),
            ),
            "self_fail": obs(
                t, State.FAILED, source=Source.SELF_REPORT,
                stats=JobStats(exit=ExitStatus.exited(1)),
            ),
        }[what]  # fmt: skip
        if (
            what in ("queued", "running")
            and i >= cancel_at
            and item.state in (State.QUEUED, State.RUNNING)
        ):
            live_after_cancel = True
        try:
            item = h.advance(item, observation).item
        except h.IllegalTransition:
            continue
    still_live = item.state in (State.QUEUED, State.RUNNING)
    if end == "grace":
        if item.state is not State.SETTLING:
            return
        final = h.tick(item, now=at(t) + timedelta(seconds=601)).item
    else:
        final = h.advance(
            item, _unknown(t + 1) if end == "unknown" else obs(t + 1, State.GONE)
        ).item
    assert h.check_invariants(final) == ()
    if end != "grace" and still_live and live_after_cancel:
        assert final.state is State.CANCELLED
        assert not final.confirmed
    else:
        assert final.state is not State.CANCELLED


def test_a_failed_cancel_call_never_explains_a_vanish() -> None:
    # The runtime marks an item whose backend cancel call failed (timed out: it may or
    # may not have acted). The job may then run on and end on its own: seen live after
    # the request proves nothing, and its vanish is gone, not cancelled.
    item = _seen_live_after_cancel(running())
    failed = h.Marker(code=CANCEL_FAILED, text="the cancel may not have reached backend sim")
    item = h.add_marker(item, failed, at=at(11)).item
    assert h.advance(item, _unknown(600)).item.state is State.GONE
