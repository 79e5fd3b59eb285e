"""One poll's report (runtime/_poll_report): the backends' counts summed, the cache's
settling items and corrupt rows read, this poll's failures taken and cleared. Every
expected number below is written by hand from the inputs."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import attrs

import hpcstate.runtime
from hpcstate import State
from hpcstate._machine import new_item
from hpcstate.runtime import PollReport, Tracker
from hpcstate.runtime._cache import Cache, Entry, Totals
from hpcstate.runtime._poll_report import poll_report
from hpcstate.runtime._poller import BackendCounts
from hpcstate.runtime._store import ItemRow

AT = datetime(2026, 12, 6, 12, 0, tzinfo=timezone.utc)


def _entry(item_id: str, state: State) -> Entry:
    item = new_item(id=item_id, run_id=item_id.split(".")[0], backend="b", now=AT)
    row = ItemRow(
        item=attrs.evolve(item, state=state), extra={}, submit_tag=None, submit_started_at=None
    )
    return Entry(row)


def test_the_report_sums_each_backend_and_reads_the_cache() -> None:
    cache = Cache()
    for item_id, state in (
        ("r1.0", State.SETTLING),
        ("r1.1", State.RUNNING),
        ("r2.0", State.SETTLING),
        ("r3.0", State.QUEUED),
    ):
        cache.entries[item_id] = _entry(item_id, state)
    cache.unconfirmed["r4.0"] = _entry("r4.0", State.SETTLING)  # not an active entry
    cache.corrupt.update({"z.0", "a.0"})
    totals = Totals()
    totals.failure_texts.extend(["boom in x", "boom in y"])
    slurm = BackendCounts(
        queue_calls=1,
        accounting_calls=1,
        observations=5,
        events=3,
        illegal=1,
        conflicts=0,
        submitted=2,
        errors=("slurm: timeout",),
        polled=True,
    )
    flux = BackendCounts(queue_calls=1, observations=2, events=1, conflicts=2, errors=("f", "g"))
    report = poll_report(
        at=AT,
        items={"slurm": 4, "flux": 3},
        results=[slurm, flux],
        self_reports=2,
        cache=cache,
        totals=totals,
    )
    assert report == PollReport(
        at=AT,
        items=7,
        queue_calls=2,
        accounting_calls=1,
        observations=7,
        events=4,
        illegal=1,
        conflicts=2,
        submitted=2,
        self_reports=2,
        corrupt=("a.0", "z.0"),
        errors=("slurm: timeout", "f", "g"),
        settling=2,
        failures=("boom in x", "boom in y"),
    )
    assert totals.failure_texts == []  # taken by this report, not the next one's


def test_no_backend_is_an_empty_report() -> None:
    report = poll_report(
        at=AT, items={}, results=[], self_reports=0, cache=Cache(), totals=Totals()
    )
    assert report == PollReport(at=AT)


async def test_the_tracker_returns_the_public_class(tmp_path: Path) -> None:
    assert hpcstate.runtime.PollReport is PollReport
    tracker = Tracker(store=tmp_path / "s.db")
    try:
        report = await tracker.poll_once()
    finally:
        await tracker.aclose()
    assert type(report) is PollReport
    assert (report.items, report.queue_calls, report.failures) == (0, 0, ())
