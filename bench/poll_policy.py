"""Poll-policy benchmark: the cost of each pure decision of hpcstate._poll over many items.

Run: python bench/poll_policy.py [--items 100000] [--repeat 7]
Prints the median milliseconds per call over repeats, for the decisions the tracker takes
on every poll over its whole cache (next_interval, queue_due, plan: one backend's first
asks as the poller makes them, queue_due included, report_paths, accounting_items,
accounting_query). They are linear in the items; compare runs made in
the same hour (this machine is noisy: compare ratios, not absolutes).
"""

from __future__ import annotations

import argparse
import gc
import random
import statistics
import time
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta, timezone
from typing import Any

from attrs import field, frozen

import hpcstate as h
from hpcstate import Observation, RunItem, Source, State
from hpcstate import _poll as poll

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)


@frozen
class Entry:
    item: RunItem
    extra: Mapping[str, Any] = field(factory=dict)
    checked_at: datetime | None = None


def _entries(n: int, *, settling: float, reporting: float, seed: int = 1) -> list[Entry]:
    """``n`` submitted items, running since t=1; a fraction settling (seen COMPLETED at
    t=5); a fraction whose jobs report their own end (with a report file)."""
    rng = random.Random(seed)
    entries = []
    for i in range(n):
        run_id = f"run{i // 10}"
        item = h.new_item(id=f"{run_id}.{i % 10}", run_id=run_id, backend="slurm", now=T0)
        item = h.submitted(item, native_id=str(100_000 + i), at=T0).item
        seen = T0 + timedelta(seconds=1)
        item = h.advance(item, _seen(item, seen, State.RUNNING)).item
        if rng.random() < settling:
            item = h.advance(item, _seen(item, T0 + timedelta(seconds=5), State.COMPLETED)).item
        extra: dict[str, Any] = {}
        if rng.random() < reporting:
            extra = {"self_reports": True, "report_file": f"/jobs/{item.id}.json"}
        entries.append(Entry(item, extra))
    return entries


def _seen(item: RunItem, at: datetime, state: State) -> Observation:
    return Observation(
        native_id=item.native_id or "", source=Source.QUEUE, observed_at=at, state=state
    )


def _median_ms(call: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        gc.collect()
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    cadence = poll.Cadence()
    now = T0 + timedelta(seconds=60)
    ledger = poll.Ledger(
        last_queue_at={"slurm": now - timedelta(seconds=2)},
        last_accounting_at={"slurm": now - timedelta(seconds=10)},
        queue_quiet={"slurm": 3},
        quiet_polls=3,
    )
    print(f"{args.items} items, median of {args.repeat} (ms per call)")
    for label, settling, reporting in (
        ("all running, none reporting", 0.0, 0.0),
        ("all running, all reporting", 0.0, 1.0),
        ("all settling (every job ended at once)", 1.0, 0.0),
        ("half settling, half reporting", 0.5, 0.5),
    ):
        entries = _entries(args.items, settling=settling, reporting=reporting)
        working = {e.item.id: e.item for e in entries}
        asked = poll.accounting_items(cadence, ledger, "slurm", working, [], now)
        figures = {
            "next_interval": _median_ms(
                lambda e=entries: poll.next_interval(cadence, ledger, e, [], now, 0.5),
                args.repeat,
            ),
            "queue_due": _median_ms(
                lambda e=entries: poll.queue_due(cadence, ledger, "slurm", e, e, now),
                args.repeat,
            ),
            "plan": _median_ms(
                lambda e=entries: poll.plan(cadence, ledger, "slurm", e, [], now, accounting=True),
                args.repeat,
            ),
            "report_paths": _median_ms(
                lambda e=entries, w=working: poll.report_paths(e, w, running_too=True),
                args.repeat,
            ),
            "accounting_items": _median_ms(
                lambda w=working: poll.accounting_items(cadence, ledger, "slurm", w, [], now),
                args.repeat,
            ),
            "accounting_query": _median_ms(
                lambda a=asked: poll.accounting_query(a) if a else None, args.repeat
            ),
        }
        shown = "  ".join(f"{name} {ms:8.2f}" for name, ms in figures.items())
        print(f"{label:40} {shown}")


if __name__ == "__main__":
    main()
