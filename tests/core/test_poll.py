"""The pure poll policy (hpcstate._poll), by hand-written examples.

Every expected number below is worked out by hand from the tracker's rules as they
stood when the policy moved here (runtime/_tracker.py: next_interval, _queue_due,
_accounting, ...), never computed by the code under test. Times are seconds after T0.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Mapping
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from attrs import evolve, field, frozen

import hpcstate as h
from hpcstate import ConfigError, RunItem, Source, State
from hpcstate import _poll as poll
from hpcstate._poll import Cadence, Ledger

from .builders import CANCEL, at, obs, pending, queued, running, unconfirmed_completed


@frozen
class Entry:
    """What the tracker caches per item, as _poll reads it (hpcstate._poll.Tracked)."""

    item: RunItem
    extra: Mapping[str, Any] = field(factory=dict)
    checked_at: datetime | None = None


REPORTS = {"self_reports": True}


def approx(value: float) -> Any:
    """A float worked out by hand, to the last bits of its arithmetic."""
    return pytest.approx(value, rel=1e-12, abs=1e-12)


def named(item: RunItem, n: int, *, backend: str = "a", native: str | None = None) -> RunItem:
    """``item`` as item n of its own run on ``backend`` (native id ``native`` or 100+n)."""
    native_id = item.native_id if item.native_id is None else (native or str(100 + n))
    return evolve(item, id=f"r{n}.0", run_id=f"r{n}", backend=backend, native_id=native_id)


def settled_at(seconds: float, n: int = 1, *, backend: str = "a") -> RunItem:
    """Running since t=2, seen COMPLETED at ``seconds``: settling since then."""
    return named(h.advance(running(), obs(seconds, State.COMPLETED)).item, n, backend=backend)


# -- Cadence: the knobs ---------------------------------------------------------------


def test_cadence_defaults_are_the_trackers() -> None:
    cadence = Cadence()
    assert cadence.grace == timedelta(seconds=600)
    assert cadence.fast_interval == 1.0
    assert cadence.max_interval == 30.0
    assert cadence.max_error_interval == 120.0
    assert cadence.queue_interval == 60.0
    assert cadence.accounting_lag == 1.0
    assert cadence.accounting_interval == 4.0
    assert cadence.late_check_interval == 30.0
    assert cadence.late_check_window == timedelta(days=1)
    assert cadence.lease_ttl == 10.0
    assert cadence.wake_check_interval == 0.5
    assert cadence.grace_lead == timedelta(seconds=2)
    assert cadence.recent_submit_window == 10.0


def test_late_check_interval_follows_max_interval_unless_given() -> None:
    assert Cadence(max_interval=12.0).late_check_interval == 12.0
    assert Cadence(max_interval=12.0, late_check_interval=7.0).late_check_interval == 7.0


def test_derived_leads_scale_with_fast_interval() -> None:
    cadence = Cadence(fast_interval=2.5)
    assert cadence.grace_lead == timedelta(seconds=5)
    assert cadence.recent_submit_window == 25.0


SECONDS_KNOBS = [
    "fast_interval",
    "queue_interval",
    "accounting_lag",
    "accounting_interval",
    "lease_ttl",
    "max_interval",
    "max_error_interval",
    "late_check_interval",
    "wake_check_interval",
]


@pytest.mark.parametrize("knob", SECONDS_KNOBS)
@pytest.mark.parametrize("value", [-1.0, float("nan"), "1", True, None])
def test_a_bad_seconds_knob_is_refused_naming_it(knob: str, value: object) -> None:
    with pytest.raises(ConfigError, match=rf"^{knob} must be a number of seconds >= 0, got "):
        Cadence(**{knob: value})


@pytest.mark.parametrize("knob", SECONDS_KNOBS)
def test_zero_and_whole_seconds_are_accepted(knob: str) -> None:
    assert getattr(Cadence(**{knob: 0}), knob) == 0
    assert getattr(Cadence(**{knob: 3}), knob) == 3


@pytest.mark.parametrize("knob", ["grace", "late_check_window"])
def test_a_negative_or_untyped_duration_is_refused_naming_it(knob: str) -> None:
    with pytest.raises(ConfigError, match=rf"^{knob} must not be negative, got -1 day"):
        Cadence(**{knob: timedelta(seconds=-1)})
    with pytest.raises(ConfigError, match=rf"^{knob} must be a timedelta, got 600"):
        Cadence(**{knob: 600})


def test_cadence_and_ledger_are_frozen() -> None:
    import attrs

    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        Cadence().fast_interval = 2.0  # type: ignore[misc]
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        Ledger().error_polls = 1  # type: ignore[misc]


# -- the ledger --------------------------------------------------------------------


def test_the_ledger_records_calls_per_backend_and_never_changes_in_place() -> None:
    start = Ledger()
    ledger = poll.record_queue_call(start, "a", at(5))
    ledger = poll.record_accounting_call(ledger, "b", at(6))
    ledger = poll.record_submit(ledger, at(7))
    assert ledger.last_queue_at == {"a": at(5)}
    assert ledger.last_accounting_at == {"b": at(6)}
    assert ledger.last_submit_at == at(7)
    assert start == Ledger()  # a new record each time
    assert dict(start.last_queue_at) == {}


def test_quiet_queue_calls_count_up_per_backend_and_a_change_resets_them() -> None:
    ledger = Ledger()
    for _ in range(3):
        ledger = poll.record_queue_answer(ledger, "a", changed=False)
    ledger = poll.record_queue_answer(ledger, "b", changed=False)
    assert ledger.queue_quiet == {"a": 3, "b": 1}
    ledger = poll.record_queue_answer(ledger, "a", changed=True)
    assert ledger.queue_quiet == {"a": 0, "b": 1}


def test_whole_polls_count_quiet_and_errors_as_after_poll_did() -> None:
    ledger = poll.record_poll(Ledger(), errors=True, changed=False)
    ledger = poll.record_poll(ledger, errors=True, changed=False)
    assert (ledger.error_polls, ledger.quiet_polls) == (2, 2)
    ledger = poll.record_poll(ledger, errors=False, changed=True)
    assert (ledger.error_polls, ledger.quiet_polls) == (0, 0)
    ledger = poll.record_failed_poll(poll.record_failed_poll(ledger))
    assert (ledger.error_polls, ledger.quiet_polls) == (2, 0)


# -- the queue's pace ----------------------------------------------------------------


def test_backoff_is_one_and_a_half_times_per_quiet_poll_capped() -> None:
    cadence = Cadence(fast_interval=1.0, max_interval=30.0)
    assert poll.backoff(cadence, 0) == 1.0
    assert poll.backoff(cadence, 1) == 1.5
    assert poll.backoff(cadence, 2) == 2.25
    assert poll.backoff(cadence, 8) == 25.62890625  # 1.5 ** 8
    assert poll.backoff(cadence, 9) == 30.0  # 38.44... capped


def test_backoff_after_very_many_quiet_polls_is_the_cap_not_an_overflow() -> None:
    # The tracker's own formula raised OverflowError here (1.5 ** 1751 > max float):
    # some 14 hours of an unchanged long job at a 30 s pace killed its poll loop.
    assert poll.backoff(Cadence(), 1751) == 30.0
    assert poll.backoff(Cadence(), 10**6) == 30.0
    assert poll.backoff(Cadence(fast_interval=0.0), 10**6) == 0.0


def test_a_submit_keeps_the_pace_fast_for_ten_fast_intervals() -> None:
    cadence = Cadence(fast_interval=2.0)
    ledger = Ledger(last_submit_at=at(0), queue_quiet={"a": 3})
    assert poll.submitted_recently(cadence, ledger, at(19.9))
    assert not poll.submitted_recently(cadence, ledger, at(20))
    assert poll.queue_pace(cadence, ledger, "a", at(19.9)) == 2.0
    assert poll.queue_pace(cadence, ledger, "a", at(20)) == 6.75  # 2 * 1.5 ** 3
    assert poll.queue_pace(cadence, ledger, "b", at(20)) == 2.0  # never quiet yet
    assert not poll.submitted_recently(cadence, Ledger(), at(0))


def test_the_first_queue_call_of_a_backend_is_always_due() -> None:
    entries = [Entry(named(running(), 1), REPORTS)]
    assert poll.queue_due(Cadence(), Ledger(), "a", entries, entries, at(3))


def test_without_reporting_jobs_every_poll_asks_the_queue() -> None:
    silent = [Entry(named(running(), 1))]
    ledger = Ledger(last_queue_at={"a": at(10)}, queue_quiet={"a": 5})
    assert poll.queue_due(Cadence(), ledger, "a", silent, silent, at(10))


def test_silent_jobs_beside_reporting_ones_keep_their_own_pace() -> None:
    # "a" has a silent job and a reporting one: the loop runs fast for the reports, the
    # queue is asked at its backed-off pace: quiet 2 -> 2.25 s, due from 0.75 of it.
    silent = Entry(named(running(), 1))
    reporting = Entry(named(running(), 2), REPORTS)
    ledger = Ledger(last_queue_at={"a": at(10)}, queue_quiet={"a": 2})
    polled = [silent, reporting]
    assert not poll.queue_due(Cadence(), ledger, "a", polled, polled, at(11.6))
    assert poll.queue_due(Cadence(), ledger, "a", polled, polled, at(11.6875))


def test_a_reporting_job_of_another_backend_also_paces_a_silent_queue() -> None:
    silent = Entry(named(running(), 1, backend="a"))
    elsewhere = Entry(named(running(), 2, backend="b"), REPORTS)
    ledger = Ledger(last_queue_at={"a": at(10)})  # quiet 0: pace 1 s, due from 0.75 s
    everyone = [silent, elsewhere]
    assert not poll.queue_due(Cadence(), ledger, "a", [silent], everyone, at(10.7))
    assert poll.queue_due(Cadence(), ledger, "a", [silent], everyone, at(10.75))
    # A settling reporting job does not make the loop fast: the silent queue is asked.
    done = Entry(settled_at(5, 2, backend="b"), REPORTS)
    assert poll.queue_due(Cadence(), ledger, "a", [silent], [silent, done], at(10.1))


def test_only_reporting_jobs_make_the_queue_a_safety_net() -> None:
    reporting = [Entry(named(running(), 1), REPORTS)]
    ledger = Ledger(last_queue_at={"a": at(100)})
    cadence = Cadence(queue_interval=60.0)
    assert not poll.queue_due(cadence, ledger, "a", reporting, reporting, at(159.9))
    assert poll.queue_due(cadence, ledger, "a", reporting, reporting, at(160))


def test_a_cancel_request_brings_the_queue_back_to_its_own_pace() -> None:
    # A reporting job's queue waits queue_interval (60 s); once a cancel is asked for,
    # the job counts as silent: its queue is due from 0.75 of the pace (1 s, quiet 0).
    cancelled = named(h.add_marker(running(), CANCEL, at=at(5)).item, 1)
    entries = [Entry(cancelled, REPORTS)]
    ledger = Ledger(last_queue_at={"a": at(100)})
    assert not poll.queue_due(Cadence(), ledger, "a", entries, entries, at(100.7))
    assert poll.queue_due(Cadence(), ledger, "a", entries, entries, at(100.75))
    plain = [Entry(named(running(), 1), REPORTS)]
    assert not poll.queue_due(Cadence(), ledger, "a", plain, plain, at(100.75))


def test_a_grace_about_to_run_out_asks_the_queue_whatever_the_pace() -> None:
    # Settling since t=5 with a 20 s grace: it runs out at t=25; the queue is asked
    # from two fast intervals before (t=23), even for a reporting job's safety net.
    entries = [Entry(settled_at(5), REPORTS)]
    cadence = Cadence(grace=timedelta(seconds=20), queue_interval=60.0)
    ledger = Ledger(last_queue_at={"a": at(22)})
    assert not poll.queue_due(cadence, ledger, "a", entries, entries, at(22.9))
    assert poll.queue_due(cadence, ledger, "a", entries, entries, at(23))


# -- late checks ---------------------------------------------------------------------


def test_an_unconfirmed_verdict_is_checked_every_poll_in_its_grace_then_slowly() -> None:
    item = unconfirmed_completed()  # verdict at t=604 (grace 600 s after t=3)
    assert item.updated_at == at(604)
    cadence = Cadence(late_check_interval=30.0)
    asked = Entry(item, checked_at=at(1203))
    assert poll.late_check_due(cadence, asked, at(1203.5))  # grace: until t=1204
    assert poll.late_check_due(cadence, Entry(item), at(5000))  # never asked yet
    assert not poll.late_check_due(cadence, asked, at(1232.9))
    assert poll.late_check_due(cadence, asked, at(1233))


def test_late_checks_due_are_those_of_one_backend() -> None:
    mine = Entry(named(unconfirmed_completed(), 1, backend="a"), checked_at=at(1300))
    theirs = Entry(named(unconfirmed_completed(), 2, backend="b"))
    fresh = Entry(named(unconfirmed_completed(), 3, backend="a"))
    due = poll.late_checks_due(Cadence(), [mine, theirs, fresh], "a", at(1310))
    assert due == [fresh]


def test_late_checks_expire_after_the_window() -> None:
    entries = {
        "old": Entry(evolve(unconfirmed_completed(), updated_at=at(0))),
        "new": Entry(evolve(unconfirmed_completed(), updated_at=at(50))),
    }
    cadence = Cadence(late_check_window=timedelta(seconds=100))
    assert poll.expired_late_checks(cadence, entries, at(100)) == []  # exactly 100 s: kept
    assert poll.expired_late_checks(cadence, entries, at(100.5)) == ["old"]
    assert poll.expired_late_checks(cadence, entries, at(151)) == ["old", "new"]


def test_an_unconfirmed_verdict_in_its_grace_is_correctable_soon() -> None:
    entries = [Entry(unconfirmed_completed())]  # verdict at t=604
    assert poll.correctable_soon(Cadence(), entries, at(1203.9))
    assert not poll.correctable_soon(Cadence(), entries, at(1204))
    assert not poll.correctable_soon(Cadence(), [], at(0))


# -- accounting -----------------------------------------------------------------------


def test_accounting_waits_for_the_lag_after_settling() -> None:
    item = settled_at(5)
    working = {item.id: item}
    cadence = Cadence(accounting_lag=1.0)
    assert poll.accounting_items(cadence, Ledger(), "a", working, [], at(5.5)) == []
    assert poll.accounting_items(cadence, Ledger(), "a", working, [], at(6)) == [item]


def test_accounting_is_asked_at_most_once_per_interval_with_every_settling_item() -> None:
    first, second = settled_at(5, 1), settled_at(9, 2)
    pending_item = named(pending(), 3)
    working = {i.id: i for i in (first, second, pending_item)}
    ledger = Ledger(last_accounting_at={"a": at(7)})
    cadence = Cadence(accounting_lag=1.0, accounting_interval=4.0)
    assert poll.accounting_items(cadence, ledger, "a", working, [], at(10.9)) == []
    # The oldest waited its lag and the last call is 4 s old: both go in ONE call, the
    # second one although it settled only 2 s ago.
    assert poll.accounting_items(cadence, ledger, "a", working, [], at(11)) == [first, second]
    # Another backend's last call does not hold this one back.
    other = Ledger(last_accounting_at={"b": at(10.5)})
    assert poll.accounting_items(cadence, other, "a", working, [], at(11)) == [first, second]


def test_a_due_late_check_brings_the_settling_items_along_at_once() -> None:
    item = settled_at(5, 1)
    late = named(unconfirmed_completed(), 2)
    working = {item.id: item, late.id: late}
    ledger = Ledger(last_accounting_at={"a": at(5.2)})
    got = poll.accounting_items(Cadence(), ledger, "a", working, [Entry(late)], at(5.5))
    assert got == [item, late]
    # Alone, too.
    alone = poll.accounting_items(Cadence(), ledger, "a", {late.id: late}, [Entry(late)], at(5.5))
    assert alone == [late]


def test_the_late_item_is_taken_as_this_poll_has_it() -> None:
    late = named(unconfirmed_completed(), 2)
    newer = evolve(late, version=late.version + 1)
    got = poll.accounting_items(Cadence(), Ledger(), "a", {late.id: newer}, [Entry(late)], at(9))
    assert got == [newer]
    assert got[0] is newer


def test_a_grace_about_to_run_out_asks_accounting_whatever_the_rate() -> None:
    item = settled_at(5)  # grace 20 s: runs out at t=25, asked from t=23
    working = {item.id: item}
    cadence = Cadence(grace=timedelta(seconds=20), accounting_interval=30.0)
    ledger = Ledger(last_accounting_at={"a": at(22)})
    assert poll.accounting_items(cadence, ledger, "a", working, [], at(22.9)) == []
    assert poll.accounting_items(cadence, ledger, "a", working, [], at(23)) == [item]


def test_nothing_to_ask_is_no_call() -> None:
    working = {"r1.0": named(running(), 1), "r2.0": named(pending(), 2)}
    assert poll.accounting_items(Cadence(), Ledger(), "a", working, [], at(100)) == []


def test_the_accounting_query_names_each_job_once_from_the_earliest_submit() -> None:
    def task(n: int, native: str, created: float, submitted: float | None = None) -> RunItem:
        item = named(queued(), n, native=native)
        stats = evolve(item.stats, submitted_at=None if submitted is None else at(submitted))
        return evolve(item, created_at=at(created), stats=stats)

    # Two tasks of one job (same native id), then two other jobs; only the third carries
    # a submit time (t=3, after its creation at 2.5); the others count from their
    # creation (6.5, 7.5, 0.5).
    items = [task(1, "77", 6.5), task(2, "77", 7.5), task(3, "78", 2.5, 3), task(4, "79", 0.5)]
    query = poll.accounting_query(items)
    assert query.native_ids == ("77", "78", "79")
    assert query.submitted_after == at(0.5)
    assert poll.accounting_query(items[:3]).submitted_after == at(3)
    with pytest.raises(ValueError, match="no items"):
        poll.accounting_query([])


def test_accounting_due_in_is_the_later_of_lag_and_rate() -> None:
    cadence = Cadence(accounting_lag=1.0, accounting_interval=4.0)
    oldest = {"a": at(3), "b": at(0)}
    assert poll.accounting_due_in(cadence, Ledger(), oldest, at(3.25)) == [0.75, 0.0]
    ledger = Ledger(last_accounting_at={"a": at(2)})
    assert poll.accounting_due_in(cadence, ledger, oldest, at(3.25)) == [2.75, 0.0]


# -- report files ----------------------------------------------------------------------


def test_report_files_of_settling_items_and_of_running_ones_when_jobs_report() -> None:
    run_ = Entry(named(running(), 1), {"report_file": "/r/1.json"})
    queue_ = Entry(named(queued(), 2), {"report_file": "/r/2.json"})
    done = Entry(settled_at(5, 3), {"report_file": "/r/3.json"})
    no_file = Entry(settled_at(5, 4))
    bad_file = Entry(settled_at(5, 5), {"report_file": 5})
    reported = h.add_marker(
        settled_at(5, 6), h.Marker(code=h.MarkerCode.SELF_REPORTED.value, text="x"), at=at(6)
    ).item
    already = Entry(reported, {"report_file": "/r/6.json"})
    gone = Entry(named(running(), 7), {"report_file": "/r/7.json"})  # not in working
    polled = [run_, queue_, done, no_file, bad_file, already, gone]
    working = {e.item.id: e.item for e in polled if e is not gone}
    assert poll.report_paths(polled, working, running_too=False) == {"/r/3.json": done.item}
    assert list(poll.report_paths(polled, working, running_too=True)) == [
        "/r/1.json",
        "/r/2.json",
        "/r/3.json",
    ]


def test_report_files_use_the_item_as_this_poll_has_it() -> None:
    # Cached RUNNING, but this poll's queue answer settled it: its file is read.
    entry = Entry(named(running(), 1), {"report_file": "/r/1.json"})
    now_settling = settled_at(5, 1)
    found = poll.report_paths([entry], {now_settling.id: now_settling}, running_too=False)
    assert found == {"/r/1.json": now_settling}


# -- the loop's sleep ---------------------------------------------------------------------


def test_errors_double_the_interval_up_to_max_error_interval() -> None:
    cadence = Cadence(fast_interval=1.0, max_error_interval=120.0)
    assert poll.next_interval(cadence, Ledger(error_polls=3), [], [], at(0), 0.5) == 8.0
    assert poll.next_interval(cadence, Ledger(error_polls=3), [], [], at(0), 0.0) == approx(6.4)
    assert poll.next_interval(cadence, Ledger(error_polls=10), [], [], at(0), 0.5) == 120.0
    # Overflowing powers of two are the cap too (the tracker raised there).
    assert poll.next_interval(cadence, Ledger(error_polls=5000), [], [], at(0), 0.5) == 120.0


def test_fast_after_a_submit_while_a_job_reports_or_a_verdict_is_correctable() -> None:
    ledger = Ledger(quiet_polls=20)  # backed off to the 30 s cap
    submitted = evolve(ledger, last_submit_at=at(0))
    assert poll.next_interval(Cadence(), submitted, [], [], at(9), 0.5) == 1.0
    assert poll.next_interval(Cadence(), submitted, [], [], at(10), 0.5) == 30.0
    reporting = [Entry(named(running(), 1), REPORTS)]
    assert poll.next_interval(Cadence(), ledger, reporting, [], at(9), 0.25) == approx(0.9)
    unconfirmed = [Entry(unconfirmed_completed())]  # grace until t=1204
    assert poll.next_interval(Cadence(), ledger, [], unconfirmed, at(1200), 0.5) == 1.0
    assert poll.next_interval(Cadence(), ledger, [], unconfirmed, at(1204), 0.5) == 30.0


def test_a_quiet_loop_backs_off_but_pending_items_keep_it_within_five_intervals() -> None:
    running_ = [Entry(named(running(), 1))]
    waiting = [*running_, Entry(named(pending(), 2))]
    assert poll.next_interval(Cadence(), Ledger(quiet_polls=4), running_, [], at(50), 0.5) == (
        5.0625
    )
    assert poll.next_interval(Cadence(), Ledger(quiet_polls=10), running_, [], at(50), 0.5) == (
        30.0
    )
    assert poll.next_interval(Cadence(), Ledger(quiet_polls=10), waiting, [], at(50), 0.5) == 5.0
    # The jitter: 0.8 to 1.2 times the base.
    assert poll.next_interval(Cadence(), Ledger(quiet_polls=10), running_, [], at(50), 0.0) == (
        24.0
    )
    assert poll.next_interval(Cadence(), Ledger(quiet_polls=10), running_, [], at(50), 0.75) == (
        approx(33.0)
    )


def test_the_loop_wakes_just_after_accounting_falls_due() -> None:
    # Settled at t=3, lag 1 s: due at t=4. At t=3.25 the base is the fast interval (1 s,
    # jittered to 1.0), but accounting is due in 0.75 s: wake then, plus 0.01 s.
    entries = [Entry(settled_at(3))]
    got = poll.next_interval(Cadence(), Ledger(), entries, [], at(3.25), 0.5)
    assert got == approx(0.76)


def test_settling_items_wait_for_the_accounting_rate_not_the_backoff() -> None:
    # Settled long ago; the last call at t=100, every 4 s: due at 104. At t=101 the
    # base is 3 s (jittered by 1.0): the accounting time itself.
    entries = [Entry(settled_at(3))]
    ledger = Ledger(last_accounting_at={"a": at(100)}, quiet_polls=30)
    assert poll.next_interval(Cadence(), ledger, entries, [], at(101), 0.5) == 3.0
    # With the lowest draw (0.8 x 3 = 2.4 s) the loop wakes early, not late.
    assert poll.next_interval(Cadence(), ledger, entries, [], at(101), 0.0) == approx(2.4)


def test_the_loop_never_sleeps_past_the_lead_of_a_grace_running_out() -> None:
    # Grace 10 s after t=3: runs out at t=13. At t=12 with accounting asked at t=11.5
    # (every 4 s: due at 15.5), the wake is held to max(0.1, 13 - 12 - 1.5).
    entries = [Entry(settled_at(3))]
    cadence = Cadence(grace=timedelta(seconds=10))
    ledger = Ledger(last_accounting_at={"a": at(11.5)})
    assert poll.next_interval(cadence, ledger, entries, [], at(12), 0.5) == 0.1
    quiet = Ledger()  # no accounting call yet: it is due from t=4
    # t=5: base = fast 1 s, jittered (draw 0.75) to 1.1 s; the grace allows
    # 13 - 5 - 1.5 = 6.5 s: the 1.1 s stands.
    assert poll.next_interval(cadence, quiet, entries, [], at(5), 0.75) == approx(1.1)
    # t=10: lead 13 - 10 - 2 = 1 s -> base max(1, min(0, 1)) = 1; grace cap 1.5 s.
    assert poll.next_interval(cadence, quiet, entries, [], at(10), 0.75) == approx(1.1)
    # t=11.3: the cap 13 - 11.3 - 1.5 = 0.2 s wins over the 1.1 s.
    assert poll.next_interval(cadence, quiet, entries, [], at(11.3), 0.75) == approx(0.2)


def test_errors_override_the_accounting_wake() -> None:
    entries = [Entry(settled_at(3))]
    ledger = Ledger(error_polls=2)
    # base min(120, 4) = 4; no early wake for accounting while the backend fails;
    # the grace (600 s) is far.
    assert poll.next_interval(Cadence(), ledger, entries, [], at(3.25), 0.5) == 4.0


# -- purity --------------------------------------------------------------------------------

_ALLOWED_IMPORTS = {"__future__", "math", "collections.abc", "datetime", "typing", "attrs"}


def test_the_policy_module_imports_nothing_that_does_io_or_draws() -> None:
    source = Path(poll.__file__).read_text()
    imported: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            imported.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            imported.add(node.module)
    assert imported <= _ALLOWED_IMPORTS, imported - _ALLOWED_IMPORTS
    # No clock read, sleep or draw by attribute either (datetime.now, time.monotonic...).
    called = {
        node.func.attr
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
    }
    assert not called & {"now", "utcnow", "today", "time", "monotonic", "sleep", "random"}


def test_importing_the_policy_pulls_in_no_io_module() -> None:
    code = (
        "import hpcstate._poll, sys;"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in "
        "{'asyncio','subprocess','socket','asyncssh'} or m.startswith('hpcstate.runtime')))"
    )
    baseline = code.replace("import hpcstate._poll,", "import attrs, cattrs,")
    got = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    base = subprocess.run(
        [sys.executable, "-c", baseline], capture_output=True, text=True, check=True
    )
    assert got.stdout == base.stdout


def test_every_name_in_all_exists() -> None:
    for name in poll.__all__:
        assert hasattr(poll, name), name


# -- reconcile: answers through the machine ----------------------------------------------


def _queue(native: str, seconds: float, state: State) -> h.Observation:
    return obs(seconds, state, native_id=native)


def test_answers_are_routed_by_native_id_to_every_item_of_a_job() -> None:
    task0 = named(queued(), 1, native="77")
    task1 = named(queued(), 2, native="77")  # an array's second task: same job id
    other = named(running(), 3, native="78")
    working = {i.id: i for i in (task0, task1, other)}
    found = [
        _queue("77", 5, State.RUNNING),
        _queue("99", 5, State.RUNNING),  # not ours: ignored
        _queue("78", 6, State.COMPLETED),
    ]
    index = poll.NativeIndex(working.values())
    assert index.native_ids() == ("77", "78")
    done = poll.reconcile(working, index, found)
    assert done.applied == 3
    assert {i: item.state for i, item in done.items.items()} == {
        "r1.0": State.RUNNING,
        "r2.0": State.RUNNING,
        "r3.0": State.SETTLING,
    }
    assert [type(e).__name__ for e in done.events["r1.0"]] == ["Started"]
    assert [type(e).__name__ for e in done.events["r3.0"]] == ["AwaitingConfirmation"]
    assert done.refused == ()
    assert working["r1.0"] is task0  # read, never changed


def test_extras_go_first_and_every_observation_of_an_item_in_time_order() -> None:
    # The item's self-report (t=8) waits in extras; the queue's RUNNING (t=6) is routed to
    # it and joins them: applied t=6 then t=8 (running, then settling on the report).
    item = named(queued(), 1, native="77")
    report = h.Observation(
        native_id="77",
        source=Source.SELF_REPORT,
        observed_at=at(8),
        state=State.COMPLETED,
        stats=h.JobStats(exit=h.ExitStatus.exited(0)),
    )
    working = {item.id: item}
    extras = {item.id: [report]}
    done = poll.reconcile(
        working, poll.NativeIndex([item]), [_queue("77", 6, State.RUNNING)], extras
    )
    assert done.applied == 2
    assert done.items[item.id].state is State.SETTLING
    assert [type(e).__name__ for e in done.events[item.id]] == ["Started", "AwaitingConfirmation"]
    assert extras == {item.id: [report]}  # the caller's lists are not appended to


def test_an_illegal_observation_leaves_the_item_as_it_was_and_is_reported() -> None:
    item = named(pending(), 1)  # no native id yet: nothing can be observed of it
    stray = _queue("77", 5, State.RUNNING)
    done = poll.reconcile({item.id: item}, poll.NativeIndex([]), [], {item.id: [stray]})
    assert done.items[item.id] is item
    assert done.events == {}
    assert done.illegal == 1
    (refusal,) = done.refused
    assert refusal.item_id == item.id
    assert refusal.source is Source.QUEUE
    assert isinstance(refusal.error, h.IllegalTransition)


def test_an_output_check_verdict_is_marked_and_its_job_listed_for_cancelling() -> None:
    item = named(running(), 1, native="77")
    check = h.Observation(
        native_id="77",
        source=Source.OUTPUT_CHECK,
        observed_at=at(5),
        state=State.FAILED,
        detail="E" * 600,
    )
    done = poll.reconcile({item.id: item}, poll.NativeIndex([item]), [check])
    new = done.items[item.id]
    assert new.state is State.FAILED
    (marker,) = [m for m in new.markers if m.code == h.MarkerCode.OUTPUT_CHECK.value]
    assert marker.text == "E" * 500
    assert done.output_failures == ("77",)


def test_the_settling_tick_gives_an_ended_grace_its_unconfirmed_verdict() -> None:
    ended = settled_at(3, 1)  # grace 600 s: runs out at t=603
    later = settled_at(50, 2)
    active = named(running(), 3)
    working = {i.id: i for i in (ended, later, active)}
    assert poll.tick_settling(working, at(602.9), timedelta(seconds=600)).items == {}
    done = poll.tick_settling(working, at(603), timedelta(seconds=600))
    assert list(done.items) == ["r1.0"]
    assert done.items["r1.0"].state is State.COMPLETED
    assert not done.items["r1.0"].confirmed
    assert [type(e).__name__ for e in done.events["r1.0"]] == ["Finished"]


# -- plan: one backend's first asks ----------------------------------------------------------


def test_the_plan_asks_the_queue_about_the_backends_submitted_items_and_records_it() -> None:
    queued_ = Entry(named(queued(), 1))
    running_ = Entry(named(running(), 2), REPORTS)
    waiting = Entry(named(pending(), 3))  # no native id yet: not asked about
    theirs = Entry(named(running(), 4, backend="b"))
    everyone = [queued_, running_, waiting, theirs]
    first = poll.plan(Cadence(), Ledger(), "a", everyone, [], at(10), accounting=True)
    assert first.entries == (queued_, running_, waiting)  # what the poll works on
    assert first.polled == (queued_, running_)
    assert first.held_until is None
    assert first.ask_queue
    assert first.queue_ids == ("101", "102")
    assert first.ledger.last_queue_at == {"a": at(10)}
    assert first.late == first.forget == ()
    # 0.5 s later the silent job's queue (pace 1 s, due from 0.75 s) is not due yet.
    later = poll.plan(Cadence(), first.ledger, "a", everyone, [], at(10.5), accounting=True)
    assert not later.ask_queue
    assert later.queue_ids == ()
    assert later.ledger is first.ledger


def test_no_submitted_item_no_queue_call() -> None:
    waiting = [Entry(named(pending(), 1))]
    got = poll.plan(Cadence(), Ledger(), "a", waiting, [], at(10), accounting=True)
    assert (got.polled, got.ask_queue, got.queue_ids) == ((), False, ())
    assert got.ledger == Ledger()


def test_the_plan_takes_the_due_late_checks_or_forgets_them_without_accounting() -> None:
    asked = Entry(named(unconfirmed_completed(), 1), checked_at=at(1300))
    never = Entry(named(unconfirmed_completed(), 2))
    theirs = Entry(named(unconfirmed_completed(), 3, backend="b"))
    unconfirmed = [asked, never, theirs]
    got = poll.plan(Cadence(), Ledger(), "a", [], unconfirmed, at(1310), accounting=True)
    assert got.late == (never,)
    assert got.forget == ()
    blind = poll.plan(Cadence(), Ledger(), "a", [], unconfirmed, at(1310), accounting=False)
    assert blind.late == ()
    assert blind.forget == ("r1.0", "r2.0")


def test_purged_names_every_item_of_a_job_accounting_will_never_know() -> None:
    task0 = named(unconfirmed_completed(), 1, native="77")
    task1 = named(unconfirmed_completed(), 2, native="77")  # an array's second task
    other = named(unconfirmed_completed(), 3, native="78")
    kept = named(unconfirmed_completed(), 4, native="79")
    index = poll.NativeIndex([task0, task1, other, kept])
    unknown = obs(9, source=Source.ACCOUNTING, absence=h.Absence.UNKNOWN, native_id="77")
    gone = obs(9, State.GONE, source=Source.ACCOUNTING, native_id="78")
    absent = obs(9, source=Source.ACCOUNTING, absence=h.Absence.ABSENT, native_id="79")
    stranger = obs(9, source=Source.ACCOUNTING, absence=h.Absence.UNKNOWN, native_id="80")
    record = obs(9, State.COMPLETED, source=Source.ACCOUNTING, final=True, native_id="79")
    got = poll.purged(index, [unknown, gone, absent, stranger, record])
    assert got == [("r1.0", unknown), ("r2.0", unknown), ("r3.0", gone)]
    assert poll.purged(index, []) == []


def test_every_knob_says_what_it_is_and_the_config_file_agrees() -> None:
    import attrs

    from hpcstate.config import TRACKER_KEYS

    helps = {f.name: f.metadata.get("help") for f in attrs.fields(Cadence)}
    assert all(helps.values()), helps
    for key, (text, is_duration) in TRACKER_KEYS.items():
        if key == "retention":  # pruning, not the poll's cadence
            continue
        assert helps[key] == text
        assert (attrs.fields_dict(Cadence)[key].type in ("timedelta", timedelta)) is is_duration
