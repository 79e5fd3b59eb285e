"""The takeover rule (hpcstate._poll: record_takeover, takeover_hold, takeover_wait),
on a virtual clock.

When a process takes a backend's lease over from ANOTHER holder, the previous holder
kept the queue's pace up to its last poll: the cadence carries on from there. Every
expected time below is worked out by hand from that rule as the poller applied it
before it moved here (runtime/_poller.py: the ledger seeding from ``Leases.taken_over``,
``_not_taken_just_now``, ``takeover_wait``), never computed by the code under test.
Times are seconds after T0 (tests/core/builders.py). Defaults: fast_interval 1 s, so a
fresh queue pace is 1 s and a held-back call is due QUEUE_EARLY (0.75) of it after the
previous holder's last poll; queue_interval 60 s; grace lead 2 s.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

import pytest
from attrs import evolve, field, frozen
from hypothesis import given
from hypothesis import strategies as st

import hpcstate as h
from hpcstate import RunItem, State
from hpcstate import _poll as poll
from hpcstate._poll import Cadence, Ledger

from .builders import at, obs, running


@frozen
class Entry:
    """What the tracker caches per item, as _poll reads it (hpcstate._poll.Tracked)."""

    item: RunItem
    extra: Mapping[str, Any] = field(factory=dict)
    checked_at: datetime | None = None


REPORTS = {"self_reports": True}


def on_a(item: RunItem, n: int = 1) -> RunItem:
    return evolve(item, id=f"r{n}.0", run_id=f"r{n}", backend="a", native_id=str(100 + n))


def silent(n: int = 1) -> Entry:
    return Entry(on_a(running(), n))


def reporting(n: int = 1) -> Entry:
    return Entry(on_a(running(), n), REPORTS)


def settled_at(seconds: float, n: int = 1) -> Entry:
    """Running since t=2, seen COMPLETED at ``seconds``: settling since then."""
    return Entry(on_a(h.advance(running(), obs(seconds, State.COMPLETED)).item, n))


def asks(
    cadence: Cadence, ledger: Ledger, entries: list[Entry], now: float
) -> poll.PollPlan[Entry]:
    return poll.plan(cadence, ledger, "a", entries, [], at(now), accounting=True)


# -- silent jobs: one queue pace after the previous holder's last poll -----------------


def test_silent_jobs_wait_for_the_previous_holders_last_poll_plus_the_pace() -> None:
    cadence = Cadence()
    entries = [silent()]
    # A fresh process takes the lease over at t=100.2; the previous holder polled at 100.
    ledger = poll.record_takeover(Ledger(), "a", at(100))
    assert ledger.taken_over == {"a": at(100)}
    assert ledger.last_queue_at == {"a": at(100)}  # its last poll counts as the last call
    # Silent jobs alone would have the queue asked at every poll: the takeover holds it
    # until 100 + 0.75 * 1 s.
    held = asks(cadence, ledger, entries, 100.2)
    assert (held.ask_queue, held.queue_ids, held.held_until) == (False, (), at(100.75))
    assert held.ledger is ledger
    assert asks(cadence, ledger, entries, 100.749).held_until == at(100.75)
    due = asks(cadence, ledger, entries, 100.75)
    assert (due.ask_queue, due.queue_ids, due.held_until) == (True, ("101",), None)
    # The first queue call ends the hold.
    assert due.ledger.taken_over == {}
    assert due.ledger.last_queue_at == {"a": at(100.75)}


def test_the_pace_is_the_queues_own_backoff() -> None:
    # This process polled the backend before (two quiet queue calls): pace 1 * 1.5**2 =
    # 2.25 s, so the call is due 0.75 * 2.25 = 1.6875 s after the previous holder's poll.
    ledger = poll.record_takeover(Ledger(queue_quiet={"a": 2}), "a", at(100))
    assert asks(Cadence(), ledger, [silent()], 101.6).held_until == at(101.6875)
    assert asks(Cadence(), ledger, [silent()], 101.6875).ask_queue


def test_after_the_first_call_the_hold_is_over_whatever_the_pace_becomes() -> None:
    ledger = poll.record_takeover(Ledger(), "a", at(100))
    first = asks(Cadence(), ledger, [silent()], 100.75)
    assert first.ask_queue
    # Five quiet calls later the pace is 1.5**5 = 7.59 s: a takeover still pending would
    # be due at 100 + 5.70 s; none is, so a poll at 101.75 asks (silent jobs alone).
    quiet = evolve(first.ledger, queue_quiet={"a": 5})
    later = asks(Cadence(), quiet, [silent()], 101.75)
    assert (later.ask_queue, later.held_until) == (True, None)
    assert poll.takeover_wait(Cadence(), quiet, at(101.75)) is None


def test_a_queue_call_that_is_not_due_is_not_reported_as_held() -> None:
    # A self-reporting job's safety net is not due (5 s of 60): nothing is held back.
    ledger = poll.record_takeover(Ledger(), "a", at(100))
    got = asks(Cadence(), ledger, [reporting()], 100.2)
    assert (got.ask_queue, got.held_until) == (False, None)


# -- self-reporting jobs: queue_interval apart across the takeover ---------------------


def test_self_reporting_jobs_keep_queue_interval_apart_across_a_takeover() -> None:
    entries = [reporting()]
    # The previous holder's last poll was at 100; this process takes over at 105. Without
    # the takeover a fresh process would ask at once (no queue call known).
    assert asks(Cadence(), Ledger(), entries, 105).ask_queue
    ledger = poll.record_takeover(Ledger(), "a", at(100))
    assert not asks(Cadence(), ledger, entries, 105).ask_queue
    assert not asks(Cadence(), ledger, entries, 159.99).ask_queue
    assert asks(Cadence(), ledger, entries, 160).ask_queue  # 100 + 60


def test_our_own_later_queue_call_is_kept() -> None:
    # We asked the queue at 103 (before our lease lapsed and another holder polled at
    # 100): the later call stays the one the pace counts from.
    ledger = poll.record_takeover(Ledger(last_queue_at={"a": at(103)}), "a", at(100))
    assert ledger.last_queue_at == {"a": at(103)}
    assert not asks(Cadence(), ledger, [reporting()], 162.99).ask_queue
    assert asks(Cadence(), ledger, [reporting()], 163).ask_queue
    # An older call of ours gives way to the previous holder's poll.
    older = poll.record_takeover(Ledger(last_queue_at={"a": at(50)}), "a", at(100))
    assert older.last_queue_at == {"a": at(100)}


# -- our own lapsed lease back: no takeover --------------------------------------------


def test_retaking_our_own_lapsed_lease_is_no_takeover() -> None:
    mine = Ledger(last_queue_at={"a": at(40)})
    # previous_poll None: a new lease, or our own back (Leases.hold says which).
    back = poll.record_takeover(mine, "a", None)
    assert back == mine
    got = asks(Cadence(), back, [silent()], 100.2)
    assert (got.ask_queue, got.held_until) == (True, None)
    # It also ends the hold of an earlier takeover from another holder.
    taken = poll.record_takeover(mine, "a", at(100))
    assert asks(Cadence(), taken, [silent()], 100.2).held_until == at(100.75)
    again = poll.record_takeover(taken, "a", None)
    assert again.taken_over == {}
    assert again.last_queue_at == {"a": at(100)}  # the cadence memory stays
    assert asks(Cadence(), again, [silent()], 100.2).ask_queue
    assert poll.takeover_wait(Cadence(), again, at(100.2)) is None


def test_a_takeover_of_one_backend_does_not_hold_another() -> None:
    ledger = poll.record_takeover(Ledger(), "b", at(100))
    assert asks(Cadence(), ledger, [silent()], 100.2).ask_queue


# -- the grace exception ---------------------------------------------------------------


def test_a_grace_about_to_run_out_is_asked_about_at_once() -> None:
    cadence = Cadence(grace=timedelta(seconds=10))
    ledger = poll.record_takeover(Ledger(), "a", at(99))  # due at 99.75
    # Settled at 89.3: the grace runs out at 99.3 - within the 2 s lead of 99.2.
    expiring = [settled_at(89.3)]
    assert h.grace_deadline(expiring[0].item, cadence.grace) == at(99.3)
    got = asks(cadence, ledger, expiring, 99.2)
    assert (got.ask_queue, got.held_until) == (True, None)
    assert got.ledger.taken_over == {}
    # Exactly at the lead's edge (99.2 + 2 = 101.2) still counts ...
    assert asks(cadence, ledger, [settled_at(91.2)], 99.2).ask_queue
    # ... and a grace that runs out later (101.3) waits with the rest.
    later = asks(cadence, ledger, [settled_at(91.3)], 99.2)
    assert (later.ask_queue, later.held_until) == (False, at(99.75))


def test_the_grace_exception_counts_any_of_the_backends_items() -> None:
    cadence = Cadence(grace=timedelta(seconds=10))
    ledger = poll.record_takeover(Ledger(), "a", at(99))
    got = asks(cadence, ledger, [silent(1), settled_at(89.3, 2)], 99.2)
    assert got.ask_queue
    assert got.queue_ids == ("101", "102")
    # takeover_hold itself, on the backend's items.
    assert poll.takeover_hold(cadence, ledger, "a", [silent(1)], at(99.2)) == at(99.75)
    assert poll.takeover_hold(cadence, ledger, "a", [settled_at(89.3, 2)], at(99.2)) is None


# -- the wake-up --------------------------------------------------------------------------


def test_the_wake_up_is_the_due_time() -> None:
    ledger = poll.record_takeover(Ledger(queue_quiet={"a": 2}), "a", at(100))
    wait = poll.takeover_wait(Cadence(), ledger, at(100.2))
    assert wait == pytest.approx(1.4875, abs=1e-9)  # 101.6875 - 100.2
    assert wait is not None
    assert at(100.2) + timedelta(seconds=wait) == at(101.6875)
    # Past the due time nothing is waited for (the call is made at the next poll).
    assert poll.takeover_wait(Cadence(), ledger, at(101.6875)) is None
    assert poll.takeover_wait(Cadence(), Ledger(), at(100.2)) is None


def test_the_soonest_of_several_takeovers_wakes_the_loop() -> None:
    ledger = poll.record_takeover(Ledger(), "a", at(100))  # due 100.75
    ledger = poll.record_takeover(ledger, "b", at(99.9))  # due 100.65
    assert poll.takeover_wait(Cadence(), ledger, at(100.2)) == pytest.approx(0.45, abs=1e-9)


@given(
    fast=st.floats(min_value=0.01, max_value=5.0),
    quiet=st.integers(0, 40),
    previous=st.floats(min_value=0.0, max_value=1000.0),
    after=st.floats(min_value=0.0, max_value=50.0),
    draws=st.lists(st.floats(min_value=0.0, max_value=1.0, exclude_max=True), min_size=1),
)
def test_the_loop_makes_the_first_queue_call_exactly_when_it_falls_due(
    fast: float, quiet: int, previous: float, after: float, draws: list[float]
) -> None:
    """Silent jobs, on a virtual clock: the loop sleeps next_interval, or takeover_wait
    when that is sooner; its first queue call comes exactly at the previous holder's last
    poll plus 0.75 of the pace (or at the takeover itself when that is already past)."""
    cadence = Cadence(fast_interval=fast)
    entries = [silent()]
    ledger = poll.record_takeover(Ledger(queue_quiet={"a": quiet}), "a", at(previous))
    pace = min(cadence.max_interval, fast * 1.5**quiet)  # the queue's backoff, by hand
    due = at(previous) + timedelta(seconds=0.75 * pace)
    now = at(previous + after)
    for step in range(10_000):
        got = poll.plan(cadence, ledger, "a", entries, [], now, accounting=True)
        if got.ask_queue:
            break
        assert now < due
        assert got.held_until == due
        wait = poll.takeover_wait(cadence, ledger, now)
        assert wait is not None
        sleep = min(
            poll.next_interval(cadence, ledger, entries, [], now, draws[step % len(draws)]), wait
        )
        now += timedelta(seconds=sleep)
    else:  # pragma: no cover - the property failed
        raise AssertionError("the queue was never asked")
    assert now == max(due, at(previous + after))
