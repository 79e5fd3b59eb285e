"""Scheduler load and verdict delay of tracking 100 short jobs on the real Slurm cluster.

    python bench/slurm_short_jobs.py [--jobs 100] [--modes default,opt-out] [--json out.json]

For each mode: submits N jobs through the real :class:`hpcstate.runtime.Tracker`
(SystemClock, a SQLite file in a temp dir, the Slurm backend with the local runner
wrapped in a counting runner), held, then releases them all at once, resets the counters
and tracks every job to its confirmed verdict. The jobs sleep 1 s and then end in one of
five ways, by index: exit 0, exit 1, exit 2, killed by SIGTERM (the shell kills itself),
and exit 143 (the code a shell gives for a SIGTERM death: it must stay an exit code).
"default" sets no option at all (the Tracker's defaults, the Slurm backend's defaults:
its push wrapper on); "opt-out" sets ``self_report_wrapper = false`` on the jobs (exec,
no push). Reported, per mode:

* slurmctld RPCs by type (``sdiag --reset`` / ``sdiag``), for the submissions and for
  the tracking separately; slurmdbd RPCs by type (``sacctmgr clear stats`` / ``show
  stats``). Both are cluster-wide: anyone else using the cluster shows up too, so the
  query types are also derived from the commands hpcstate ran (exact).
* the squeue, sacct and report-file commands hpcstate ran (the counting runner);
* per job, the delay from its End (sacct, epoch seconds) to the tracker's confirmed
  Finished event as a subscriber received it: median, p95, max;
* the fewest accounting queries ANY tracker would need to confirm every job within the
  target delay, given these End times and slurmdbd's measured lag (a lower bound).

Then it compares with PSI/J (14 controller RPCs) and submitit (7 sacct queries) for the
same workload. Needs root (sdiag --reset) and ``scripts/slurm-cluster start``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from _slurm_rpcs import (  # bench/ is on sys.path when a bench runs
    CTLD_QUERY_TYPES,
    DBD_QUERY_TYPES,
    read_counters,
    reset_counters,
)

from hpcstate import Corrected, Event, ExitStatus, Finished, MarkerCode, State
from hpcstate.backend import AccountingQuery, Command, CommandResult, JobSpec, Runner
from hpcstate.runtime import LocalRunner, SystemClock, Tracker
from hpcstate_slurm import CAPABILITIES
from hpcstate_slurm._io import SlurmBackend

#: What the founders measured for the peers on 100 short jobs.
PSIJ_CONTROLLER_RPCS = 14
SUBMITIT_SACCT_QUERIES = 7
TARGET_DELAY_S = 5.0
#: The settings compared: Tracker arguments, and job options (JobSpec.options). With
#: no option set, the jobs write their own reports (the Slurm backend's push wrapper is
#: on by default), so the report files are read every ``fast_interval`` (no RPC), the
#: queue is a safety net every ``queue_interval`` (60 s), and one batched sacct runs at
#: most every ``accounting_interval`` once a job has settled for ``accounting_lag``.
#: "opt-out" turns the wrapper off (no push: the queue is asked every poll); "frugal"
#: trades delay for fewer sacct calls; "every-poll" is the cadence before 2026-11-23
#: (queue and accounting on every 1 s poll), kept to compare; "tuned"/"psij-pace" poll
#: everything every ~40 s / ~30 s.
MODES: dict[str, tuple[dict[str, Any], dict[str, str]]] = {
    "default": ({}, {}),
    "opt-out": ({}, {"self_report_wrapper": "false"}),
    "frugal": ({"accounting_interval": 20.0}, {}),
    "every-poll": ({"queue_interval": 0.0, "accounting_lag": 0.0, "accounting_interval": 0.0}, {}),
    "tuned": ({"fast_interval": 40.0, "max_interval": 60.0}, {}),
    "psij-pace": ({"fast_interval": 30.0, "max_interval": 60.0}, {}),  # not run by default
}
#: How job ``i`` ends (``i % 5``): its command after ``sleep 1``, and the true outcome.
ENDINGS: tuple[tuple[str, State, ExitStatus], ...] = (
    ("exit 0", State.COMPLETED, ExitStatus.exited(0)),
    ("exit 1", State.FAILED, ExitStatus.exited(1)),
    ("exit 2", State.FAILED, ExitStatus.exited(2)),
    ("kill -TERM $$", State.FAILED, ExitStatus.killed(15)),
    ("exit 143", State.FAILED, ExitStatus.exited(143)),
)


class CountingRunner:
    """A Runner that counts (and times) the commands it runs, by program."""

    def __init__(self, inner: Runner) -> None:
        self.inner = inner
        self.counts: Counter[str] = Counter()
        self.calls: list[tuple[float, str]] = []

    @staticmethod
    def kind(command: Command) -> str:
        program = command.argv[0]
        return "report-file read" if program in ("xargs", "sh") else program

    async def run(self, command: Command) -> CommandResult:
        kind = self.kind(command)
        self.counts[kind] += 1
        self.calls.append((time.time(), kind))
        return await self.inner.run(command)

    async def close(self) -> None:
        await self.inner.close()

    def reset(self) -> None:
        self.counts.clear()
        self.calls.clear()


def run(*argv: str) -> str:
    env = {**os.environ, "SLURM_TIME_FORMAT": "%s", "TZ": "UTC"}
    done = subprocess.run(argv, capture_output=True, text=True, check=True, timeout=120, env=env)
    return done.stdout


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(fraction * len(ordered)) - 1)]


def fewest_queries(ends: list[float], *, target: float, lag: float) -> int:
    """The fewest accounting queries that confirm every job within ``target`` seconds
    of its end, if a record is complete ``lag`` seconds after the end (greedy cover:
    each query as late as the earliest unconfirmed job allows)."""
    window = target - lag
    if window < 0:
        return -1  # impossible whatever the number of queries
    count = 0
    covered_until = -math.inf
    for end in sorted(ends):
        if end + lag > covered_until:
            count += 1
            covered_until = end + lag + window
    return count


def model_push(
    ends: list[float], *, cadence: float, lag: float, read_every: float = 1.0
) -> tuple[int, list[float]]:
    """A MODEL (not a measurement) of the tracker's cadence on measured End times:
    report files read every ``read_every`` s (no Slurm RPC), and one batched sacct for
    every reported, unconfirmed job, at most once per ``cadence`` s and no sooner than
    ``lag`` s after the report was seen. Returns (sacct queries, delay per job)."""
    pending = sorted(ends)
    queries = 0
    delays: list[float] = []
    last = -math.inf
    while pending:
        seen = math.ceil(pending[0] / read_every) * read_every  # the next file read
        at = max(seen + lag, last + cadence)
        confirmed = [end for end in pending if end + lag <= at]
        queries += 1
        delays.extend(at - end for end in confirmed)
        pending = pending[len(confirmed) :]
        last = at
    return queries, delays


async def calibrate(native_ids: list[str]) -> tuple[int, int]:
    """What one of hpcstate's squeue calls costs slurmctld and one sacct call costs
    slurmdbd, in query RPCs: the median of five tries, each alone between a counter
    reset and a read, less the median cost of a reset and a read alone."""
    backend = SlurmBackend(name="slurm", runner=LocalRunner(), capabilities=CAPABILITIES)
    ctld_costs, dbd_costs, ctld_base, dbd_base = [], [], [], []

    def queries() -> tuple[int, int]:
        ctld, dbd = read_counters()
        return (
            sum(v for k, v in ctld.items() if k in CTLD_QUERY_TYPES),
            sum(v for k, v in dbd.items() if k in DBD_QUERY_TYPES),
        )

    try:
        await backend.backend()
        query = AccountingQuery(native_ids=native_ids)
        for _ in range(5):
            reset_counters()  # nothing: what resetting and reading cost themselves
            base = queries()
            ctld_base.append(base[0])
            dbd_base.append(base[1])
            reset_counters()
            await backend.queue(native_ids)
            ctld_costs.append(queries()[0])
            reset_counters()
            await backend.accounting(query)
            dbd_costs.append(queries()[1])
    finally:
        await backend.close()
    # Medians of five: other users of the cluster add to a try now and then (a minimum
    # taken apart from the base's minimum once gave 0 for a squeue).
    median = statistics.median_low
    return (
        max(1, median(ctld_costs) - median(ctld_base)),
        max(1, median(dbd_costs) - median(dbd_base)),
    )


def expected(index: int) -> tuple[State, ExitStatus]:
    _, state, exit_ = ENDINGS[index % len(ENDINGS)]
    return state, exit_


async def measure(mode: str, jobs: int, work: Path, timeout: float) -> dict[str, Any]:
    runner = CountingRunner(LocalRunner())
    backend = SlurmBackend(name="slurm", runner=runner, capabilities=CAPABILITIES)
    await backend.backend()  # detect the version now: sbatch --version is not tracking
    tracker = Tracker(
        store=work / "state.db",
        backends={"slurm": backend},
        clock=SystemClock(),
        **MODES[mode][0],
    )
    first_verdict: dict[str, float] = {}
    confirmed: dict[str, float] = {}
    all_confirmed = asyncio.Event()

    def on_event(event: Event) -> None:
        received = time.time()
        if isinstance(event, (Finished, Corrected)):
            first_verdict.setdefault(event.item_id, received)
            if not isinstance(event, Finished) or event.confirmed:
                confirmed.setdefault(event.item_id, received)
                if len(confirmed) == jobs:
                    all_confirmed.set()

    tracker.subscribe(on_event)
    runs: dict[str, int] = {}  # run id -> job index
    try:
        reset_counters()
        begin = time.time()
        for index in range(jobs):
            spec = JobSpec(
                command=["sh", "-c", f"sleep 1; {ENDINGS[index % len(ENDINGS)][0]}"],
                name=f"short-{index}",
                working_directory=str(work),
                stdout=str(work / "%j.out"),
                # held: released all at once below (not a tracking option)
                options={"hold": "true", **MODES[mode][1]},
            )
            run_ = await tracker.submit(spec, backend="slurm")
            runs[run_.id] = index
        native = {
            item.native_id: runs[run_id]
            for run_id in runs
            for item in tracker.get_run(run_id).items
            if item.native_id is not None
        }
        assert len(native) == jobs, "some submissions failed"
        run("scontrol", "release", ",".join(native))
        submit_s = time.time() - begin
        submit_ctld, _ = read_counters()
        submit_commands = dict(runner.counts)
        reset_counters()
        runner.reset()
        start = time.time()
        tracker.start()
        try:
            await asyncio.wait_for(all_confirmed.wait(), timeout)
        except asyncio.TimeoutError:
            print(f"{mode}: {len(confirmed)}/{jobs} confirmed after {timeout:.0f} s", flush=True)
        tracking_s = time.time() - start
        polls = tracker.polls
        items = {item.native_id: item for r in runs for item in tracker.get_run(r).items}
    finally:
        await tracker.aclose()
    ctld, dbd = read_counters()
    commands = dict(runner.counts)
    # End times, asked after the counters were read (not part of the tracking).
    sacct = run("sacct", "-P", "-n", "-X", "-j", ",".join(native), "-o", "JobIDRaw,End,State")
    ends = {}
    for line in sacct.splitlines():
        job_id, end, _state = line.split("|")
        if end.isdigit():
            ends[job_id] = float(end)
    delays, first_delays, wrong, ambiguous, self_reported = [], [], [], [], 0
    for native_id, index in native.items():
        item = items[native_id]
        state, exit_ = expected(index)
        got = item.stats.exit
        line = f"{native_id}: {item.state} {got} confirmed={item.confirmed}"
        if item.state is not state or got is None or not item.confirmed or not same(got, exit_):
            wrong.append(line)
        elif not got.exact:
            # Right, and honest about what it cannot know: 22.05's sacct prints c for
            # c+128, and the controller's exact record was not seen (see the docs).
            ambiguous.append(line)
        self_reported += item.has_marker(MarkerCode.SELF_REPORTED.value)
        if item.id in confirmed and native_id in ends:
            delays.append(confirmed[item.id] - ends[native_id])
            first_delays.append(first_verdict[item.id] - ends[native_id])
    per_squeue, per_sacct = await calibrate(list(native))
    # slurmdbd's lag (how long after its End a job's record is complete) is not seen
    # directly; the smallest confirmed delay bounds it from above.
    lag = max(0.0, min(delays)) if delays else 0.0
    end_times = list(ends.values())
    target = TARGET_DELAY_S
    return {
        "mode": mode,
        "settings": describe_mode(mode),
        "jobs": jobs,
        "submit_s": submit_s,
        "tracking_s": tracking_s,
        "polls": polls,
        "submit_ctld": submit_ctld,
        "submit_commands": submit_commands,
        "ctld": ctld,
        "dbd": dbd,
        "ctld_query": sum(v for k, v in ctld.items() if k in CTLD_QUERY_TYPES),
        "dbd_query": sum(v for k, v in dbd.items() if k in DBD_QUERY_TYPES),
        "commands": commands,
        "ctld_per_squeue": per_squeue,
        "dbd_per_sacct": per_sacct,
        "ctld_own": per_squeue * commands.get("squeue", 0),
        "dbd_own": per_sacct * commands.get("sacct", 0),
        "delays": delays,
        "first_delays": first_delays,
        "wrong": wrong,
        "ambiguous": ambiguous,
        "self_reported": self_reported,
        "ends_span_s": (max(end_times) - min(end_times)) if end_times else 0.0,
        "end_times": end_times,
        "record_lag_bound_s": lag,
        # With no lag at all: a bound no tracker can beat. With the lag bound: closer
        # to what this cluster allows.
        "fewest_sacct_no_lag": fewest_queries(end_times, target=target, lag=0.0),
        "fewest_sacct_with_lag": fewest_queries(end_times, target=target, lag=lag),
    }


def describe_mode(mode: str) -> str:
    tracker, options = MODES[mode]
    parts = [f"Tracker({', '.join(f'{k}={v}' for k, v in tracker.items())})" if tracker else ""]
    parts.append(f"job options {options}" if options else "")
    return "; ".join(p for p in parts if p) or "defaults, no option set"


def same(got: ExitStatus, want: ExitStatus) -> bool:
    """The code and the signal kept apart: an exact answer equal to the truth, or an
    honest ambiguous one that admits it (those are also listed as ambiguous)."""
    return got.admits(want)


def show(result: dict[str, Any]) -> None:
    commands = result["commands"]
    print(f"\n== {result['mode']}: {result['settings']}")
    print(
        f"submitted {result['jobs']} held jobs and released them in {result['submit_s']:.1f} s;"
        f" tracking took {result['tracking_s']:.1f} s, {result['polls']} polls;"
        f" the jobs' ends span {result['ends_span_s']:.0f} s"
    )
    print("slurmctld RPCs during the submissions:", fmt(result["submit_ctld"]))
    print("slurmctld RPCs during the tracking:   ", fmt(result["ctld"]))
    print("slurmdbd RPCs during the tracking:    ", fmt(result["dbd"]))
    print(
        f"query RPCs during the tracking, cluster-wide (anyone's): slurmctld"
        f" {result['ctld_query']}, slurmdbd {result['dbd_query']}"
    )
    print("commands hpcstate ran while tracking:", fmt(commands))
    print(
        f"hpcstate's own query RPCs: slurmctld {result['ctld_own']} (one squeue costs"
        f" {result['ctld_per_squeue']}), slurmdbd {result['dbd_own']} (one sacct costs"
        f" {result['dbd_per_sacct']}); measured alone after the tracking"
    )
    delays, first = result["delays"], result["first_delays"]
    if delays:
        print(
            f"End -> confirmed verdict: median {statistics.median(delays):.1f} s,"
            f" p95 {percentile(delays, 0.95):.1f} s, max {max(delays):.1f} s"
            f" (End is cut to the second: real delays are up to 1 s shorter)"
        )
        print(
            f"End -> first verdict:     median {statistics.median(first):.1f} s,"
            f" p95 {percentile(first, 0.95):.1f} s, max {max(first):.1f} s"
        )
    print(f"items whose self-report file was read before the verdict: {result['self_reported']}")
    print(
        f"fewest sacct queries ANY tracker needs to confirm every job within"
        f" {TARGET_DELAY_S:.0f} s of its end, given these End times:"
        f" {result['fewest_sacct_no_lag']} if records were complete at End,"
        f" {result['fewest_sacct_with_lag']} with a record lag of"
        f" {result['record_lag_bound_s']:.1f} s (the smallest delay seen)"
    )
    print(
        "MODEL of the cadence (report files read every 1 s, squeue only as"
        " a slow safety net, one batched sacct per cadence), on these End times:"
    )
    lag = max(1.0, result["record_lag_bound_s"])
    for cadence in (5.0, 10.0, 20.0, 30.0):
        queries, delays = model_push(result["end_times"], cadence=cadence, lag=lag)
        print(
            f"  sacct at most every {cadence:>4.0f} s: {queries:>3} sacct queries, delay median"
            f" {statistics.median(delays):.1f} s, p95 {percentile(delays, 0.95):.1f} s,"
            f" max {max(delays):.1f} s"
        )
    if result["wrong"]:
        print("WRONG VERDICTS:", *result["wrong"], sep="\n  ")
    else:
        print(f"all {result['jobs']} verdicts right and confirmed")
    if result["ambiguous"]:
        print(
            f"{len(result['ambiguous'])} of them give the exit code as ambiguous (sacct's"
            " lossy c-or-c+128; the controller record was not seen in time), e.g.",
            result["ambiguous"][0],
        )


def fmt(counts: dict[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(counts.items(), key=lambda kv: -kv[1]))


def compare(results: list[dict[str, Any]]) -> None:
    """The table of issue 17, from this run (the peers' rows are the founders'
    measurements of the same workload, quoted)."""
    print("\n== comparison (100 short jobs, one run of this bench)\n")
    print(
        "| tracker | slurmctld read RPCs | slurmdbd queries (sacct) "
        "| delay median / p95 / max | verdicts exact and right |"
    )
    print("|---|---|---|---|---|")
    for r in results:
        c = r["commands"]
        d = r["delays"] or [math.nan]
        exact = r["jobs"] - len(r["wrong"]) - len(r["ambiguous"])
        print(
            f"| hpcstate {r['mode']} ({r['settings']}) | {r['ctld_own']} | {c.get('sacct', 0)} "
            f"| {statistics.median(d):.1f} / {percentile(d, 0.95):.1f} / {max(d):.1f} s "
            f"| {exact}/{r['jobs']} ({len(r['ambiguous'])} ambiguous, {len(r['wrong'])} wrong) |"
        )
    print(f"| PSI/J 0.9.11 (founders) | {PSIJ_CONTROLLER_RPCS} | 0 | 16.6 / 29.6 / 30.7 s | 5/10 |")
    print("| submitit 1.5.4 (founders) | 0 | 144 | 1.0 / 9.3 / 18.3 s | 0/10 (no exit codes) |")
    print(
        f"\ntargets (issue 17, defaults): <= {PSIJ_CONTROLLER_RPCS} slurmctld read RPCs, <= 40"
        " slurmdbd queries, median <= 3 s and p95 <= 6 s after each job's End, every exit"
        " code and signal exact"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=100)
    parser.add_argument("--modes", default="default,opt-out", help=f"of {', '.join(MODES)}")
    parser.add_argument("--timeout", type=float, default=240.0, help="per mode, seconds")
    parser.add_argument("--json", type=Path, help="write the raw figures here")
    args = parser.parse_args()
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    unknown = [m for m in modes if m not in MODES]
    if unknown:
        parser.error(f"unknown modes {unknown}; known: {sorted(MODES)}")
    results = []
    for mode in modes:
        with tempfile.TemporaryDirectory(prefix="hpcstate-short-jobs-") as tmp:
            work = Path(tmp)
            work.chmod(0o777)
            result = asyncio.run(measure(mode, args.jobs, work, args.timeout))
        show(result)
        results.append(result)
    compare(results)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1, default=str))
    return 0 if all(not r["wrong"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
