"""A cancel requested through the store, then the job vanishes: cancelled, not gone
(issue 13). The marker is what any process sharing the store wrote; the machine reads
it from the item, so the process that watches need not be the one that cancelled."""

from __future__ import annotations

from datetime import timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

import hpcstate as h
from hpcstate import Absence, ExitStatus, JobStats, MarkerCode, Reason, ReasonKind, Source, State

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


@pytest.mark.parametrize(
    ("start", "observation", "expected"),
    [
        # The Kubernetes case: a Job deleted in the foreground just disappears.
        ("running", "unknown", State.CANCELLED),
        ("queued", "unknown", State.CANCELLED),
        ("running", "gone", State.CANCELLED),  # a source that says GONE outright
        ("settling_vanished", "unknown", State.CANCELLED),
        # Seen to complete before it vanished: the cancel came too late to matter.
        ("settling", "unknown", State.GONE),
        # The queue dropped it: accounting may still know, so it settles first.
        ("running", "absent", State.SETTLING),
    ],
)
def test_a_cancelled_job_that_vanishes(start: str, observation: str, expected: State) -> None:
    builders = {
        "running": running,
        "queued": queued,
        "settling": settling,
        "settling_vanished": settling_vanished,
    }
    item = with_cancel_requested(builders[start]())
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


@pytest.mark.parametrize("observation", ["unknown", "gone"])
def test_without_the_marker_it_stays_gone(observation: str) -> None:
    seen = _unknown(20) if observation == "unknown" else obs(20, State.GONE)
    assert h.advance(running(), seen).item.state is State.GONE


def test_the_grace_of_a_cancelled_job_that_left_the_queue_ends_cancelled() -> None:
    item = h.advance(with_cancel_requested(running()), obs(20, absence=Absence.ABSENT)).item
    assert item.state is State.SETTLING
    step = h.tick(item, now=at(20) + timedelta(seconds=601))
    assert step.item.state is State.CANCELLED
    assert not step.item.confirmed
    assert step.item.stats.reason == Reason(kind=ReasonKind.CANCELLED)
    assert h.check_invariants(step.item) == ()


def test_the_grace_without_a_cancel_is_unchanged() -> None:
    item = h.advance(running(), obs(20, absence=Absence.ABSENT)).item
    assert h.tick(item, now=at(20) + timedelta(seconds=601)).item.state is State.COMPLETED


def test_a_cancel_requested_after_the_job_left_the_queue_also_counts() -> None:
    # Another process stored the cancel while this one had the item settling.
    item = with_cancel_requested(settling_vanished())
    assert h.advance(item, _unknown(30)).item.state is State.CANCELLED


def test_a_late_record_corrects_an_unconfirmed_cancel() -> None:
    # It had completed before the cancel reached it: the record wins.
    item = h.advance(with_cancel_requested(running()), _unknown(20)).item
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
    item = h.advance(with_cancel_requested(running()), record).item
    assert item.confirmed
    step = h.advance(item, _unknown(30))
    assert step.item.state is State.CANCELLED
    assert step.item.confirmed
    assert not step.events


@given(
    path=st.lists(
        st.sampled_from(["queued", "running", "absent", "completed_seen", "self_ok", "self_fail"]),
        max_size=4,
    ).filter(lambda p: sum(w.startswith("self") for w in p) <= 1),  # a job reports once
    cancel_at=st.integers(0, 4),
    end=st.sampled_from(["unknown", "gone", "grace"]),
)
def test_vanishing_after_a_cancel_is_cancelled_unless_seen_to_end_first(
    path: list[str], cancel_at: int, end: str
) -> None:
    item = queued()
    seen_to_end = False  # the queue said completed, or the job reported success
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
        try:
            step = h.advance(item, observation)
        except h.IllegalTransition:
            continue
        if step.item.state is State.SETTLING and item.state is not State.SETTLING:
            seen_to_end = what in ("completed_seen", "self_ok")
        item = step.item
    cancelled_asked = cancel_at <= len(path)
    if end == "grace":
        if item.state is not State.SETTLING:
            return
        final = h.tick(item, now=at(t) + timedelta(seconds=601)).item
    else:
        final = h.advance(
            item, _unknown(t + 1) if end == "unknown" else obs(t + 1, State.GONE)
        ).item
    assert h.check_invariants(final) == ()
    if cancelled_asked and not seen_to_end:
        assert final.state is State.CANCELLED
        assert not final.confirmed
    else:
        assert final.state is not State.CANCELLED
