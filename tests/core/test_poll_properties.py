"""Hypothesis: the poll policy's guarantees on a virtual clock (hpcstate._poll).

The loop is simulated as the tracker runs it: poll at ``now``, ask what is due, record
the calls in the Ledger, sleep ``next_interval`` (with a drawn jitter), repeat. Times are
seconds after T0 (tests/core/builders.py); the clock moves by timedeltas, as the real
one does (microseconds).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

import pytest
from attrs import evolve, field, frozen
from hypothesis import assume, given
from hypothesis import strategies as st

import hpcstate as h
from hpcstate import ConfigError, RunItem, Source, State
from hpcstate import _poll as poll
from hpcstate._poll import Cadence, Ledger

from .builders import at, obs, pending, running, unconfirmed_completed


@frozen
class Entry:
    item: RunItem
    extra: Mapping[str, Any] = field(factory=dict)
    checked_at: datetime | None = None


# -- strategies -------------------------------------------------------------------------

seconds = st.floats(min_value=0.0, max_value=500.0, allow_nan=False)
draws = st.floats(min_value=0.0, max_value=1.0, exclude_max=True)


@st.composite
def cadences(draw: st.DrawFn, *, min_fast: float = 0.01) -> Cadence:
    fast = draw(st.floats(min_value=min_fast, max_value=5.0))
    return Cadence(
        grace=timedelta(seconds=draw(st.floats(min_value=1.0, max_value=300.0))),
        fast_interval=fast,
        max_interval=draw(st.floats(min_value=0.01, max_value=120.0)),
        max_error_interval=draw(st.floats(min_value=0.01, max_value=600.0)),
        queue_interval=draw(st.floats(min_value=0.0, max_value=120.0)),
        accounting_lag=draw(st.floats(min_value=0.0, max_value=30.0)),
        accounting_interval=draw(st.floats(min_value=0.0, max_value=60.0)),
        late_check_interval=draw(st.floats(min_value=0.0, max_value=120.0)),
    )


def _settling(since: float, n: int, backend: str) -> RunItem:
    item = h.advance(running(), obs(3 + since, State.COMPLETED)).item
    return evolve(item, id=f"r{n}.0", run_id=f"r{n}", backend=backend, native_id=str(100 + n))


@st.composite
def active_entries(draw: st.DrawFn, now: float) -> list[Entry]:
    """Active items as the tracker caches them, every time at or before ``now``."""
    entries: list[Entry] = []
    for n in range(draw(st.integers(0, 6))):
        kind = draw(st.sampled_from(["pending", "running", "settling"]))
        backend = draw(st.sampled_from(["a", "b"]))
        extra = {"self_reports": True} if draw(st.booleans()) else {}
        if kind == "pending":
            item = evolve(pending(), id=f"r{n}.0", run_id=f"r{n}", backend=backend)
        elif kind == "running":
            item = evolve(
                running(), id=f"r{n}.0", run_id=f"r{n}", backend=backend, native_id=str(100 + n)
            )
        else:
            since = draw(st.floats(min_value=0.0, max_value=max(0.0, now - 3)))
            item = _settling(since, n, backend)
        entries.append(Entry(item, extra))
    return entries


@st.composite
def ledgers(draw: st.DrawFn, now: float, *, errors: bool = True) -> Ledger:
    def past() -> datetime | None:
        value = draw(st.none() | st.floats(min_value=0.0, max_value=now))
        return None if value is None else at(value)

    last_accounting = {b: t for b in ("a", "b") if (t := past()) is not None}
    last_queue = {b: t for b in ("a", "b") if (t := past()) is not None}
    return Ledger(
        last_queue_at=last_queue,
        last_accounting_at=last_accounting,
        queue_quiet={b: draw(st.integers(0, 5000)) for b in ("a", "b")},
        quiet_polls=draw(st.integers(0, 5000)),
        error_polls=draw(st.integers(0, 3000)) if errors and draw(st.booleans()) else 0,
        last_submit_at=past(),
    )


def _deadlines(cadence: Cadence, entries: list[Entry]) -> list[datetime]:
    found = (h.grace_deadline(e.item, cadence.grace) for e in entries)
    return [d for d in found if d is not None]


# -- the knobs --------------------------------------------------------------------------

KNOBS = ["fast_interval", "queue_interval", "accounting_lag", "accounting_interval", "lease_ttl"]


@given(st.lists(st.floats(allow_nan=True, allow_infinity=True), min_size=5, max_size=5))
def test_a_cadence_is_made_only_of_good_seconds_and_a_bad_one_is_named(
    values: list[float],
) -> None:
    knobs = dict(zip(KNOBS, values, strict=True))
    bad = [k for k, v in knobs.items() if math.isnan(v) or v < 0]
    if not bad:
        cadence = Cadence(**knobs)
        assert [getattr(cadence, k) for k in KNOBS] == values
    else:
        with pytest.raises(ConfigError, match=f"^{bad[0]} must be a number of seconds >= 0"):
            Cadence(**knobs)


# -- the loop's sleep -----------------------------------------------------------------------


@given(st.data(), cadences(), st.floats(min_value=3.0, max_value=2000.0), draws)
def test_the_next_wake_is_never_in_the_past_nor_beyond_the_slowest_pace(
    data: st.DataObject, cadence: Cadence, now: float, draw: float
) -> None:
    entries = data.draw(active_entries(now))
    ledger = data.draw(ledgers(now))
    unconfirmed = data.draw(st.lists(st.just(Entry(unconfirmed_completed())), max_size=1))
    interval = poll.next_interval(cadence, ledger, entries, unconfirmed, at(now), draw)
    assert interval > 0
    if ledger.error_polls:
        assert interval <= 1.2 * cadence.max_error_interval
    else:
        slowest = max(
            cadence.fast_interval,
            cadence.max_interval,
            cadence.accounting_lag,
            cadence.accounting_interval,
        )
        assert interval <= 1.2 * slowest
        if not any(e.item.state is State.SETTLING for e in entries):
            # Backing off never goes past max_interval (+ jitter) while jobs are active.
            assert interval <= 1.2 * max(cadence.max_interval, cadence.fast_interval)
    deadlines = _deadlines(cadence, entries)
    if deadlines:
        # Never sleep into the last GRACE_WAKE_LEAD fast intervals of a grace.
        latest = (min(deadlines) - at(now)).total_seconds() - 1.5 * cadence.fast_interval
        assert interval <= max(0.1, latest) + 1e-9


@given(cadences(), st.integers(0, 10**9), st.integers(0, 10**9))
def test_backoff_grows_with_quiet_polls_up_to_its_cap_and_never_raises(
    cadence: Cadence, quiet: int, more: int
) -> None:
    pace = poll.backoff(cadence, quiet)
    assert min(cadence.fast_interval, cadence.max_interval) <= pace <= cadence.max_interval
    assert poll.backoff(cadence, quiet + more) >= pace


@st.composite
def loop_setup(draw: st.DrawFn) -> tuple[Cadence, Ledger, list[Entry], float]:
    """A settling item (settled at t=s) among others, the loop polling from s."""
    cadence = draw(cadences())
    s = draw(st.floats(min_value=0.0, max_value=200.0))
    ledger = draw(ledgers(3 + s, errors=False))
    others = [e for e in draw(active_entries(3 + s)) if e.item.state is not State.SETTLING]
    return cadence, ledger, [Entry(_settling(s, 99, "a")), *others], 3 + s


@given(loop_setup(), st.lists(draws, min_size=1))
def test_a_settled_item_is_asked_about_once_due_and_no_later(
    setup: tuple[Cadence, Ledger, list[Entry], float], jitter: list[float]
) -> None:
    cadence, ledger, entries, settled = setup
    item = entries[0].item
    last = ledger.last_accounting_at.get("a")
    due = max(
        settled + cadence.accounting_lag,
        -math.inf if last is None else (last - at(0)).total_seconds() + cadence.accounting_interval,
    )
    deadline = h.grace_deadline(item, cadence.grace)
    assert deadline is not None
    early = (deadline - at(0)).total_seconds() - 2 * cadence.fast_interval  # grace lead
    now = at(settled)
    working = {e.item.id: e.item for e in entries if e.item.backend == "a"}
    for step in range(100_000):
        asked = poll.accounting_items(cadence, ledger, "a", working, [], now)
        if asked:
            break
        ledger = poll.record_poll(ledger, errors=False, changed=False)
        wait = poll.next_interval(cadence, ledger, entries, [], now, jitter[step % len(jitter)])
        now += timedelta(seconds=wait)
    else:  # pragma: no cover - the property failed
        raise AssertionError("accounting was never asked")
    at_s = (now - at(0)).total_seconds()
    assert item in asked
    # Not before it is due (unless the grace is about to run out)...
    assert at_s >= min(due, early) - 1e-6
    # ...and at the wake right after it falls due (ACCOUNTING_WAKE_AFTER), not later.
    assert at_s <= max(due, settled) + 0.01 + 1e-5


@given(
    cadences(min_fast=0.2),
    st.floats(min_value=0.0, max_value=100.0),
    st.lists(draws, min_size=1),
    st.floats(min_value=0.0, max_value=30.0),
)
def test_the_loop_polls_inside_the_grace_lead_and_then_the_queue_is_asked(
    cadence: Cadence, s: float, jitter: list[float], accounting_ago: float
) -> None:
    # The item's queue is a reporting job's safety net (asked every queue_interval),
    # its accounting was just asked: only the grace lead brings both back in time.
    entries = [Entry(_settling(s, 1, "a"), {"self_reports": True})]
    (deadline,) = _deadlines(cadence, entries)
    lead = deadline - cadence.grace_lead
    now = at(3 + s)
    ledger = Ledger(
        last_queue_at={"a": now}, last_accounting_at={"a": now - timedelta(seconds=accounting_ago)}
    )
    working = {e.item.id: e.item for e in entries}
    wakes = 0
    while now < lead:
        if poll.accounting_items(cadence, ledger, "a", working, [], now):
            ledger = poll.record_accounting_call(ledger, "a", now)
        wait = poll.next_interval(cadence, ledger, entries, [], now, jitter[wakes % len(jitter)])
        assert wait > 0
        now += timedelta(seconds=wait)
        wakes += 1
    assert now < deadline, "the loop slept past the end of the grace"
    assert poll.queue_due(cadence, ledger, "a", entries, entries, now)
    assert poll.accounting_items(cadence, ledger, "a", working, [], now) == [entries[0].item]


# -- late checks ---------------------------------------------------------------------------


@given(
    cadences(),
    st.floats(min_value=0.0, max_value=3000.0),
    st.lists(st.floats(min_value=0.001, max_value=200.0), min_size=1, max_size=60),
)
def test_late_checks_every_poll_in_the_grace_then_paced_then_none(
    cadence: Cadence, window: float, gaps: list[float]
) -> None:
    cadence = evolve(cadence, late_check_window=timedelta(seconds=window))
    item = unconfirmed_completed()
    entry = Entry(item)
    end_of_grace = item.updated_at + cadence.grace
    now = item.updated_at
    checks: list[datetime] = []
    for gap in gaps:
        now += timedelta(seconds=gap)
        if poll.expired_late_checks(cadence, {item.id: entry}, now):
            assert now - item.updated_at > cadence.late_check_window
            break
        if poll.late_check_due(cadence, entry, now):
            checks.append(now)
            entry = evolve(entry, checked_at=now)
        elif now < end_of_grace:
            raise AssertionError("a poll inside the grace did not check")
        else:
            assert checks, "never checked, yet not due"
            since = (now - checks[-1]).total_seconds()
            assert since < cadence.late_check_interval
    for before, after in itertools.pairwise(checks):
        if after >= end_of_grace:
            assert (after - before).total_seconds() >= cadence.late_check_interval
    assert all(t - item.updated_at <= cadence.late_check_window for t in checks)


# -- accounting batches ----------------------------------------------------------------------


@given(st.data(), cadences(), st.floats(min_value=3.0, max_value=1000.0))
def test_one_accounting_call_holds_every_settling_item_or_none(
    data: st.DataObject, cadence: Cadence, now: float
) -> None:
    entries = data.draw(active_entries(now))
    ledger = data.draw(ledgers(now))
    working = {e.item.id: e.item for e in entries if e.item.backend == "a"}
    asked = poll.accounting_items(cadence, ledger, "a", working, [], at(now))
    settling = [i for i in working.values() if i.state is State.SETTLING]
    assert asked in ([], settling)
    if asked:
        query = poll.accounting_query(asked)
        assert sorted(query.native_ids) == sorted({str(i.native_id) for i in asked})
        assert query.submitted_after is not None
        assert all(query.submitted_after <= (i.stats.submitted_at or i.created_at) for i in asked)
    # Once due, it stays due until called (time only makes it more due).
    if asked:
        later = at(now) + timedelta(seconds=data.draw(seconds))
        assert poll.accounting_items(cadence, ledger, "a", working, [], later) == settling


@given(st.data(), cadences(), st.floats(min_value=310.0, max_value=1000.0), draws, st.booleans())
def test_a_grace_about_to_run_out_always_asks_the_queue(
    data: st.DataObject, cadence: Cadence, now: float, where: float, reports: bool
) -> None:
    # Among any others, one settling item whose grace runs out within the lead.
    runs_out_in = where * 2 * cadence.fast_interval
    since = now - cadence.grace.total_seconds() + runs_out_in - 3
    expiring = Entry(_settling(since, 50, "a"), {"self_reports": True} if reports else {})
    (deadline,) = _deadlines(cadence, [expiring])
    assume(deadline <= at(now) + cadence.grace_lead)  # microsecond rounding aside
    entries = [*data.draw(active_entries(now)), expiring]
    ledger = data.draw(ledgers(now))
    polled = [e for e in entries if e.item.backend == "a" and e.item.state is not State.PENDING]
    assert poll.queue_due(cadence, ledger, "a", polled, entries, at(now))
    working = {e.item.id: e.item for e in polled}
    assert expiring.item in poll.accounting_items(cadence, ledger, "a", working, [], at(now))


# -- reconcile ---------------------------------------------------------------------------------

NATIVES = ("101", "102")
observations = st.builds(
    lambda native, t, state, source: h.Observation(
        native_id=native,
        source=source,
        observed_at=at(t),
        state=state,
        final=source is Source.ACCOUNTING,
    ),
    st.sampled_from(NATIVES),
    st.floats(min_value=3.0, max_value=50.0),
    st.sampled_from([State.QUEUED, State.RUNNING, State.COMPLETED, State.FAILED]),
    st.sampled_from([Source.QUEUE, Source.ACCOUNTING, Source.SELF_REPORT]),
)


def _folded(item: RunItem, seen: list[h.Observation]) -> tuple[RunItem, list[h.Event], int]:
    """The machine over ``seen`` in that order, skipping what it refuses."""
    events: list[h.Event] = []
    refused = 0
    for observation in seen:
        try:
            step = h.advance(item, observation)
        except h.IllegalTransition:
            refused += 1
            continue
        item = step.item
        events.extend(step.events)
    return item, events, refused


@given(st.lists(observations, max_size=12), st.lists(observations, max_size=6), st.booleans())
def test_reconcile_is_the_machine_over_each_items_answers_in_their_order(
    found: list[h.Observation], early: list[h.Observation], with_extras: bool
) -> None:
    items = [
        evolve(running(), id=f"r{n}.0", run_id=f"r{n}", native_id=native)
        for n, native in enumerate(NATIVES)
    ]
    working = {i.id: i for i in items}
    by_item = {i.native_id: i.id for i in items}
    extras: dict[str, list[h.Observation]] = {}
    if with_extras:  # the first item has extras (self-reports...): all its answers sorted
        extras[items[0].id] = [o for o in early if o.native_id == NATIVES[0]]
    done = poll.reconcile(working, poll.NativeIndex(items), found, extras)
    refused = 0
    for item in items:
        mine = [o for o in found if by_item[o.native_id] == item.id]
        if item.id in extras:
            mine = sorted([*extras[item.id], *mine], key=lambda o: o.observed_at)
        expected, events, bad = _folded(item, mine)
        refused += bad
        assert done.items.get(item.id, item) == expected
        assert done.events.get(item.id, []) == events
    assert done.illegal == refused
    assert done.applied == len(found) + sum(len(v) for v in extras.values())
    assert working == {i.id: i for i in items}
