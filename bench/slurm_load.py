"""Load of tracking a large array job on the real loopback Slurm cluster.

    python bench/slurm_load.py [--tasks 1000] [--interval 5] [--peer-sample 1000]

Submits one array of N tasks (every 10th exits 1), tracks every task to its confirmed
verdict with one squeue and at most one sacct per poll, and reports:

* slurmctld RPCs (``sdiag --reset`` before, ``sdiag`` after) and slurmdbd RPCs
  (``sacctmgr clear stats`` / ``sacctmgr show stats``) for the tracking, per poll and
  per job, counting the query message types only (not the jobs' own traffic);
* the delay from a task's end (sacct End) to its confirmed verdict;
* the tracker's own CPU time (this process: parsing, state machine);
* the peer way for comparison: one ``squeue -j ID`` and one ``sacct -j ID`` per job for
  one poll of all N jobs (or a sample, scaled up), and the ratio.

Needs root (sdiag --reset) and ``scripts/slurm-cluster start``.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

from _slurm_rpcs import (  # bench/ is on sys.path when a bench runs
    CTLD_QUERY_TYPES,
    DBD_QUERY_TYPES,
    queries_only,
    reset_counters,
)
from _slurm_rpcs import read_counters as read_all_counters

import hpcstate
from hpcstate import TERMINAL, SchedulerUnavailable, Source, State
from hpcstate.backend import AccountingQuery, BackendConfig, JobSpec
from hpcstate_slurm import BACKEND
from hpcstate_slurm._io import SlurmBackend

UTC = timezone.utc
ROOT = Path(__file__).resolve().parents[1]


def run(*argv: str) -> str:
    return subprocess.run(argv, capture_output=True, text=True, check=True, timeout=120).stdout


def read_counters() -> tuple[dict[str, int], dict[str, int]]:
    """The query RPCs only, by type: (slurmctld, slurmdbd)."""
    ctld, dbd = read_all_counters()
    return queries_only(ctld, CTLD_QUERY_TYPES), queries_only(dbd, DBD_QUERY_TYPES)


async def track(args: argparse.Namespace, work: Path) -> dict[str, object]:
    backend = BACKEND.make_backend(BackendConfig(name="slurm", kind="slurm"))
    assert isinstance(backend, SlurmBackend)
    spec = JobSpec(
        script="#!/bin/sh\nexit $(( SLURM_ARRAY_TASK_ID % 10 == 0 ))\n",
        array=f"1-{args.tasks}",
        working_directory=str(work),
        stdout="/dev/null",
    )
    submission = await backend.submit(spec)
    reset_counters()
    started = datetime.now(UTC)
    items = {}
    for task in submission.array_task_ids:
        item = hpcstate.new_item(id=task, run_id="bench", backend="slurm", now=started)
        items[task] = hpcstate.submitted(item, native_id=task, at=started).item
    confirmed_at: dict[str, datetime] = {}
    polls = 0
    cpu = 0.0
    commands_before = backend.commands_run
    try:
        while len(confirmed_at) < len(items):
            polls += 1
            active = [i for i in items if i not in confirmed_at]
            # process_time() counts this process only (not the squeue/sacct children):
            # the tracker's own work, parsing included, since parsing runs in-process.
            cpu_start = time.process_time()
            try:
                observations = list(await backend.queue(active))
            except SchedulerUnavailable as exc:  # never an observation: try next poll
                print(f"poll {polls}: {exc}", file=sys.stderr)
                observations = []
            for observation in observations:
                items[observation.native_id] = hpcstate.advance(
                    items[observation.native_id], observation
                ).item
            cpu += time.process_time() - cpu_start
            ask = [i for i in active if items[i].state not in (State.QUEUED, State.RUNNING)]
            if ask:
                query = AccountingQuery(native_ids=ask, submitted_after=started)
                cpu_start = time.process_time()
                try:
                    accounted = list(await backend.accounting(query))
                except SchedulerUnavailable as exc:
                    print(f"poll {polls}: {exc}", file=sys.stderr)
                    accounted = []
                now = datetime.now(UTC)
                for observation in accounted:
                    item = hpcstate.advance(items[observation.native_id], observation).item
                    items[observation.native_id] = item
                    if (
                        observation.source is Source.ACCOUNTING
                        and observation.final
                        and item.state in TERMINAL
                    ):
                        confirmed_at.setdefault(observation.native_id, now)
                cpu += time.process_time() - cpu_start
            done = len(confirmed_at)
            print(f"poll {polls}: {done}/{len(items)} confirmed", file=sys.stderr, flush=True)
            if done < len(items):
                await asyncio.sleep(args.interval)
        commands = backend.commands_run - commands_before
    finally:
        await backend.close()
    ctld, dbd = read_counters()
    delays = []
    for task, item in items.items():
        finished = item.stats.finished_at
        if finished is not None and not item.stats.finished_at_approx:
            delays.append((confirmed_at[task] - finished).total_seconds())
    failed = sum(1 for item in items.values() if item.state is State.FAILED)
    return {
        "tasks": len(items),
        "failed": failed,
        "polls": polls,
        "commands": commands,
        "ctld": ctld,
        "dbd": dbd,
        "delays": delays,
        "cpu": cpu,
        "wall": (datetime.now(UTC) - started).total_seconds(),
        "ids": list(items),
    }


def peer(ids: list[str], sample: int) -> dict[str, object]:
    """One poll the peer way: a squeue and a sacct per job."""
    chosen = ids[:sample]
    reset_counters()
    begin = time.monotonic()
    for native_id in chosen:
        subprocess.run(
            ["squeue", "-h", "-t", "all", "-j", native_id, "-o", "%i|%T"],
            capture_output=True,
            check=False,
            timeout=60,
        )
        subprocess.run(
            ["sacct", "-P", "-n", "-j", native_id, "-o", "JobID,State,ExitCode"],
            capture_output=True,
            check=False,
            timeout=60,
        )
    wall = time.monotonic() - begin
    ctld, dbd = read_counters()
    scale = len(ids) / len(chosen)
    return {
        "sample": len(chosen),
        "ctld": sum(ctld.values()) * scale,
        "dbd": sum(dbd.values()) * scale,
        "wall": wall * scale,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=1000)
    parser.add_argument("--interval", type=float, default=5.0)
    parser.add_argument("--peer-sample", type=int, default=1000)
    args = parser.parse_args()
    status = subprocess.run([str(ROOT / "scripts" / "slurm-cluster"), "status"], check=False)
    if status.returncode != 0:
        print("the Slurm cluster is not running: scripts/slurm-cluster start", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="hpcstate-bench-") as tmp:
        Path(tmp).chmod(0o777)
        ours = asyncio.run(track(args, Path(tmp)))
    theirs = peer(ours["ids"], min(args.peer_sample, ours["tasks"]))  # type: ignore[arg-type]
    polls = ours["polls"]
    tasks = ours["tasks"]
    ctld_total = sum(ours["ctld"].values())  # type: ignore[attr-defined]
    dbd_total = sum(ours["dbd"].values())  # type: ignore[attr-defined]
    delays = sorted(ours["delays"])  # type: ignore[type-var]
    print(f"Slurm load of tracking a {tasks}-task array ({ours['failed']} tasks fail)")
    print(f"  wall time to all confirmed: {ours['wall']:.0f} s, {polls} polls")
    print(f"  scheduler commands: {ours['commands']} ({ours['commands'] / polls:.2f} per poll)")
    print(
        f"  slurmctld query RPCs: {ctld_total} total, {ctld_total / polls:.1f} per poll, "
        f"{ctld_total / tasks:.3f} per job  {ours['ctld']}"
    )
    print(
        f"  slurmdbd query RPCs:  {dbd_total} total, {dbd_total / polls:.1f} per poll, "
        f"{dbd_total / tasks:.3f} per job  {ours['dbd']}"
    )
    if delays:
        p95 = delays[min(len(delays) - 1, int(0.95 * len(delays)))]
        print(
            f"  end -> confirmed verdict: median {statistics.median(delays):.1f} s, "
            f"p95 {p95:.1f} s, max {delays[-1]:.1f} s (poll interval {args.interval:g} s)"
        )
    print(f"  tracker CPU (parse + state machine): {ours['cpu']:.2f} s")
    print(
        f"Peer way, one poll of {tasks} jobs "
        f"(squeue -j + sacct -j each; sampled {theirs['sample']}):"
    )
    print(
        f"  slurmctld RPCs {theirs['ctld']:.0f}, slurmdbd RPCs {theirs['dbd']:.0f}, "
        f"{theirs['wall']:.0f} s of commands"
    )
    ours_per_poll = (ctld_total + dbd_total) / polls
    ratio = (theirs["ctld"] + theirs["dbd"]) / ours_per_poll  # type: ignore[operator]
    print(f"  ratio (peer RPCs per poll / hpcstate RPCs per poll): {ratio:.0f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
