"""Benchmark: one poll cycle of the tracker over 100,000 tracked items.

    python bench/runtime_poll.py [--items 100000] [--repeat 5]

A fake backend answers instantly (its answers are built before the clock starts), so
what is measured is the tracker's own work: reconcile (classify + advance + tick for
every item) and persist (compare-and-set of every changed row, events appended) in a
real SQLite file. Scenarios:

* cold   - the first poll of a tracker on an existing store: loads every active item
* steady - every item running and still running: reconcile all, nothing to write
* churn  - 1 % of the items leave the queue and accounting confirms them in the same
           poll (two transitions each), the rest still run
* finish - every item leaves the queue and accounting confirms it in the same poll:
           100k rows written (running -> settling -> completed), 200k events appended
* close  - closing the tracker after the finish poll (the store waits there for a WAL
           checkpoint its thread is still running)

Each round runs in a fresh process, so its resident memory (VmRSS after the polls)
and peak (VmHWM) are the tracker's, including the fake backend's prepared answers.
Targets: < 2 s per cycle, < 300 MiB.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from datetime import datetime, timedelta, timezone
from pathlib import Path

import hpcstate as h
from hpcstate import Absence, ExitStatus, JobStats, Observation, Run, Source, State
from hpcstate.backend import AccountingQuery, Capabilities, JobSpec, Submission
from hpcstate.runtime import Store, Tracker
from hpcstate.runtime._store import Change

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc)


class Clock:
    def __init__(self) -> None:
        self.current = T0 + timedelta(minutes=10)

    def now(self) -> datetime:
        return self.current

    async def sleep(self, seconds: float) -> None:
        self.current += timedelta(seconds=seconds)


class InstantBackend:
    """Answers from prepared lists: the tracker's work is all that is timed."""

    name = "bench"
    capabilities = Capabilities(accounting=True)

    def __init__(self) -> None:
        self.queue_answer: Sequence[Observation] = ()
        self.accounting_answer: Sequence[Observation] = ()

    async def submit(self, spec: JobSpec) -> Submission:
        raise NotImplementedError

    async def queue(self, native_ids: Sequence[str]) -> Sequence[Observation]:
        return self.queue_answer

    async def accounting(self, query: AccountingQuery) -> Sequence[Observation]:
        return self.accounting_answer

    async def cancel(self, native_ids: Sequence[str]) -> None:
        return None

    async def close(self) -> None:
        return None


def build_store(path: Path, count: int, per_run: int = 1000) -> list[str]:
    """A store with ``count`` running items, ``per_run`` items per run."""
    native_ids: list[str] = []
    with Store(path, sweep=False) as store:
        for start in range(0, count, per_run):
            run_id = f"run{start // per_run:05d}"
            items = [
                h.new_item(
                    id=f"{run_id}.{i}", run_id=run_id, backend="bench", now=T0, array_index=i
                )
                for i in range(min(per_run, count - start))
            ]
            store.create_run(Run(id=run_id, backend="bench", created_at=T0, items=items))
            changes = []
            for item in items:
                native = str(1_000_000 + start + (item.array_index or 0))
                native_ids.append(native)
                queued = h.submitted(item, native_id=native, at=T0 + timedelta(seconds=1))
                running = h.advance(
                    queued.item,
                    Observation(
                        native_id=native,
                        source=Source.QUEUE,
                        observed_at=T0 + timedelta(seconds=2),
                        state=State.RUNNING,
                    ),
                )
                changes.append(
                    Change(
                        item=running.item,
                        expected_version=0,
                        events=queued.events + running.events,
                    )
                )
            store.commit(changes)
    return native_ids


def memory() -> tuple[float, float]:
    """(VmRSS, VmHWM) of this process in MiB."""
    values = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            values[key] = int(rest.split()[0]) / 1024
    return values["VmRSS"], values["VmHWM"]


def running_answer(native_ids: Sequence[str], at: datetime) -> list[Observation]:
    return [
        Observation(native_id=n, source=Source.QUEUE, observed_at=at, state=State.RUNNING)
        for n in native_ids
    ]


def ending_answers(
    native_ids: Sequence[str], ending: set[str], at: datetime
) -> tuple[list[Observation], list[Observation]]:
    queue = [
        Observation(native_id=n, source=Source.QUEUE, observed_at=at, absence=Absence.ABSENT)
        if n in ending
        else Observation(native_id=n, source=Source.QUEUE, observed_at=at, state=State.RUNNING)
        for n in native_ids
    ]
    record = JobStats(exit=ExitStatus.exited(0))
    accounting = [
        Observation(
            native_id=n,
            source=Source.ACCOUNTING,
            observed_at=at + timedelta(milliseconds=1),
            state=State.COMPLETED,
            final=True,
            stats=record,
        )
        for n in native_ids
        if n in ending
    ]
    return queue, accounting


async def one_round(template: Path, work: Path, native_ids: list[str]) -> dict[str, float]:
    shutil.copy(template, work)
    for suffix in ("-wal", "-shm"):
        Path(f"{work}{suffix}").unlink(missing_ok=True)
    clock = Clock()
    backend = InstantBackend()
    backend.queue_answer = running_answer(native_ids, clock.now())
    # accounting_lag=0: the settling items are confirmed in the poll that settles them
    # (the worst case: two transitions per item in one poll), not one poll later.
    tracker = Tracker(
        store=work, backends={"bench": backend}, clock=clock, sweep=False, accounting_lag=0
    )
    timings: dict[str, float] = {}

    async def timed(name: str, events: int | None) -> None:
        started = time.perf_counter()
        report = await tracker.poll_once()
        timings[name] = time.perf_counter() - started
        assert report.items >= len(native_ids) - len(ending_so_far), report
        if events is not None:
            assert report.events == events, report

    ending_so_far: set[str] = set()
    await timed("cold", None)

    clock.current += timedelta(seconds=30)
    backend.queue_answer = running_answer(native_ids, clock.now())
    await timed("steady", 0)

    clock.current += timedelta(seconds=30)
    churn = set(native_ids[::100])
    backend.queue_answer, backend.accounting_answer = ending_answers(native_ids, churn, clock.now())
    await timed("churn", 2 * len(churn))
    ending_so_far = churn

    clock.current += timedelta(seconds=30)
    rest = [n for n in native_ids if n not in churn]
    backend.queue_answer, backend.accounting_answer = ending_answers(rest, set(rest), clock.now())
    await timed("finish", 2 * len(rest))
    timings["rss"], timings["peak"] = memory()
    started = time.perf_counter()
    await tracker.aclose()  # includes waiting for a checkpoint still running
    timings["close"] = time.perf_counter() - started
    backend.queue_answer = backend.accounting_answer = ()
    return timings


def child(argv: list[str]) -> None:
    """``--build DB N`` or ``--round TEMPLATE WORK N``: one step in a fresh process."""
    if argv[0] == "--build":
        build_store(Path(argv[1]), int(argv[2]))
        return
    template, work, count = Path(argv[1]), Path(argv[2]), int(argv[3])
    native_ids = [str(1_000_000 + n) for n in range(count)]
    print(json.dumps(asyncio.run(one_round(template, work, native_ids))))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    me = [sys.executable, __file__]
    with tempfile.TemporaryDirectory() as tmp:
        template = Path(tmp) / "template.db"
        started = time.perf_counter()
        subprocess.run([*me, "--child", "--build", str(template), str(args.items)], check=True)
        print(
            f"built a store of {args.items} running items in {time.perf_counter() - started:.1f} s"
        )
        rounds = []
        for n in range(args.repeat):
            work = Path(tmp) / f"work{n}.db"
            out = subprocess.run(
                [*me, "--child", "--round", str(template), str(work), str(args.items)],
                check=True,
                capture_output=True,
                text=True,
            ).stdout
            rounds.append(json.loads(out.splitlines()[-1]))
            for suffix in ("", "-wal", "-shm"):
                Path(f"{work}{suffix}").unlink(missing_ok=True)
        print(f"{args.items} items, median of {args.repeat} runs (min .. max):")
        for key, label in (
            ("cold", "first poll (loads every item)"),
            ("steady", "steady poll (nothing changes)"),
            ("churn", "churn poll (1 % settle + confirm)"),
            ("finish", "finish poll (all settle + confirm)"),
            ("close", "close after it (waits for the checkpoint)"),
        ):
            values = [r.get(key, float("nan")) for r in rounds]
            print(
                f"  {label:42s} {statistics.median(values):6.2f} s"
                f"  ({min(values):.2f} .. {max(values):.2f})"
            )
        rss = [r["rss"] for r in rounds]
        peak = [r["peak"] for r in rounds]
        print(f"  {'resident memory after the polls':42s} {statistics.median(rss):6.0f} MiB")
        peak_text = f"{statistics.median(peak):6.0f} MiB (max {max(peak):.0f})"
        print(f"  {'peak resident memory':42s} {peak_text}")


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        child(sys.argv[2:])
    else:
        main()
