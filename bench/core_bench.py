"""Core benchmark: reconcile throughput, the memory of a tracked RunItem, and the
cost of writing item and event documents (``hpcstate.serial.DocumentWriter``, what
the store writes per changed row).

Run: python bench/core_bench.py [--repeat 7]
Prints medians over repeats (this machine is noisy: compare ratios, not absolutes).
Targets (docs/concepts/performance.md): reconcile >= 200,000 observations/s on one core;
a tracked RunItem <= 1 KiB.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import time
import tracemalloc
from datetime import datetime, timedelta, timezone

import hpcstate as h
from hpcstate import ExitStatus, JobStats, Observation, Source, State
from hpcstate.serial import DocumentWriter

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)


def _items(n: int) -> list[h.RunItem]:
    # One timestamp per poll, shared by all its observations, as a real poll does.
    seen_at = T0 + timedelta(seconds=1)
    items = []
    for i in range(n):
        item = h.new_item(
            id=f"run{i // 10}.{i % 10}", run_id=f"run{i // 10}", backend="slurm", now=T0
        )
        item = h.submitted(item, native_id=str(100_000 + i), at=T0).item
        item = h.advance(
            item,
            Observation(
                native_id=item.native_id or "",
                source=Source.QUEUE,
                observed_at=seen_at,
                state=State.RUNNING,
            ),
        ).item
        items.append(item)
    return items


def steady_poll(items: list[h.RunItem], polls: int) -> float:
    """Observations/s when the queue repeats what we know (most of a poll's work)."""
    snapshots = [
        [
            Observation(
                native_id=item.native_id or "",
                source=Source.QUEUE,
                observed_at=T0 + timedelta(seconds=10 + p),
                state=State.RUNNING,
            )
            for item in items
        ]
        for p in range(polls)
    ]
    start = time.perf_counter()
    current = items
    for snapshot in snapshots:
        current = [h.advance(item, o).item for item, o in zip(current, snapshot, strict=True)]
    return len(items) * polls / (time.perf_counter() - start)


def _endings(
    items: list[h.RunItem],
) -> list[tuple[h.RunItem, Observation, Observation]]:
    """Each item with the queue's "completed" (it settles) and accounting's record of
    a failure (it is confirmed, exit and stats enriched)."""
    seq = []
    for item in items:
        nid = item.native_id or ""
        seq.append(
            (
                item,
                Observation(
                    native_id=nid,
                    source=Source.QUEUE,
                    observed_at=T0 + timedelta(seconds=20),
                    state=State.COMPLETED,
                ),
                Observation(
                    native_id=nid,
                    source=Source.ACCOUNTING,
                    observed_at=T0 + timedelta(seconds=21),
                    state=State.FAILED,
                    final=True,
                    stats=JobStats(
                        exit=ExitStatus.exited(3),
                        finished_at=T0 + timedelta(seconds=19),
                        max_rss_bytes=1 << 20,
                    ),
                ),
            )
        )
    return seq


def lifecycle(items: list[h.RunItem]) -> float:
    """Observations/s when every observation changes the item (settle, confirm, enrich)."""
    seq = _endings(items)
    start = time.perf_counter()
    for item, settle, confirm in seq:
        h.advance(h.advance(item, settle).item, confirm)
    return 2 * len(seq) / (time.perf_counter() - start)


def mixed_poll(items: list[h.RunItem]) -> float:
    """A realistic poll: 95% unchanged, 5% of jobs end and settle."""
    obs = []
    for i, item in enumerate(items):
        state = State.COMPLETED if i % 20 == 0 else State.RUNNING
        obs.append(
            Observation(
                native_id=item.native_id or "",
                source=Source.QUEUE,
                observed_at=T0 + timedelta(seconds=30),
                state=state,
            )
        )
    start = time.perf_counter()
    for item, o in zip(items, obs, strict=True):
        h.advance(item, o)
    return len(items) / (time.perf_counter() - start)


def documents(items: list[h.RunItem]) -> float:
    """Documents/s written as a store commit writes them: each item settled and
    confirmed (its document and its two events' documents), one writer per commit."""
    steps = []
    for item, settle, confirm in _endings(items):
        settled = h.advance(item, settle)
        confirmed = h.advance(settled.item, confirm)
        steps.append((confirmed.item, (*settled.events, *confirmed.events)))
    writer = DocumentWriter()
    start = time.perf_counter()
    written = 0
    for item, events in steps:
        writer.item(item)
        for event in events:
            writer.event(event)
        written += 1 + len(events)
    return written / (time.perf_counter() - start)


def item_memory(n: int) -> float:
    """Bytes per tracked RunItem (settled, with exit status, reason, times, markers)."""
    gc.collect()
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    items = _items(n)
    polled_at = T0 + timedelta(seconds=50)
    ended_at = T0 + timedelta(seconds=49)
    reason = h.parse_slurm_reason("NonZeroExitCode")
    items = [
        h.advance(
            item,
            Observation(
                native_id=item.native_id or "",
                source=Source.ACCOUNTING,
                observed_at=polled_at,
                state=State.FAILED,
                final=True,
                stats=JobStats(
                    exit=ExitStatus.from_slurm("9:0", high_codes_lossy=True),
                    finished_at=ended_at,
                    reason=reason,
                    nodes=("node1",),
                    max_rss_bytes=123456,
                ),
            ),
        ).item
        for item in items
    ]
    gc.collect()
    used = tracemalloc.get_traced_memory()[0] - base
    tracemalloc.stop()
    assert len(items) == n
    return used / n


def sacct_rows() -> float | None:
    """sacct rows parsed per second, if the Slurm dialect is installed."""
    try:
        from bench._sacct_corpus import parse_rows_per_second
    except ImportError:
        return None
    return parse_rows_per_second()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--items", type=int, default=20_000)
    args = parser.parse_args()
    items = _items(args.items)
    memory = item_memory(10_000)
    print(f"RunItem memory: {memory:,.0f} bytes/item (settled, failed, exit+reason+markers)")
    results: dict[str, list[float]] = {"steady": [], "mixed": [], "lifecycle": []}
    written: list[float] = []
    for _ in range(args.repeat):
        results["steady"].append(steady_poll(items, 3))
        results["mixed"].append(mixed_poll(items))
        results["lifecycle"].append(lifecycle(items[:5000]))
        written.append(documents(items[:5000]))
    for name, values in results.items():
        median = statistics.median(values)
        print(
            f"reconcile {name:<10} median {median:>10,.0f} obs/s"
            f"  (min {min(values):,.0f}, max {max(values):,.0f})"
        )
    print(
        f"documents written  median {statistics.median(written):>10,.0f} docs/s"
        f"  (min {min(written):,.0f}, max {max(written):,.0f})"
    )
    rows = sacct_rows()
    if rows is not None:
        print(f"sacct parse: {rows:,.0f} rows/s")


if __name__ == "__main__":
    main()
