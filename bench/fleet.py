"""One poller for many processes: scheduler load, verdict delay and failover of N
`hpcstate watch RUN --json` processes sharing one store, on the real Slurm cluster.

    python bench/fleet.py [--watchers 1,10,50] [--failover 10] [--db URL] [--json out.json]

For each N: submits N short jobs held (``sh -c "sleep 1; date ...; exit K"``, K = index % 3)
through a Tracker on a fresh store (a SQLite file in a temp dir, or a fresh schema of
the PostgreSQL server at ``--db``), closes it, starts N real ``hpcstate watch RUN --json``
processes (the console module, ``python -m hpcstate``; default settings, the Slurm
backend's push wrapper on), waits until one holds the lease, resets slurmctld's and
slurmdbd's counters (sdiag --reset, sacctmgr clear stats), releases every job at once
(scontrol release) and reads each watcher's line the moment it arrives. Reported:

* the squeue and sacct commands the watchers ran (exact: a PATH of logging wrappers),
  and slurmctld's and slurmdbd's RPCs of the query types (bench/_slurm_rpcs.py;
  cluster-wide, so other users of the cluster show up there too): with one poller
  they must not grow with N;
* per job, the delay from its end (the payload's last command writes ``date +%s.%N``
  just before ``exit K``) to the moment its watcher printed the verdict: median, p95,
  max; the same from sacct's End (``sacct_end_*``: End is cut to the second, so those
  read up to 1 s long); whether the record said ``confirmed``; wrong verdicts (exit K
  expected, by hand: 0 -> completed, else failed).

``--failover N``: the same with N watchers, and the holder is killed with SIGKILL as
soon as the jobs are released. Reported: the time from the kill until another process
holds the lease and has polled (``hpcstate fleet --json``, read every 0.2 s), and
whether every surviving watcher printed exactly one line with the right verdict and
the store's event log holds exactly one verdict per job (none lost, none repeated).

Needs root (sdiag --reset) and ``scripts/slurm-cluster start``. Figures: see
docs/concepts/fleet.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

from _slurm_rpcs import (  # bench/ is on sys.path when a bench runs
    CTLD_QUERY_TYPES,
    DBD_QUERY_TYPES,
    read_counters,
    reset_counters,
)

from hpcstate import Corrected, Finished
from hpcstate.backend import JobSpec
from hpcstate.runtime import Store, Tracker

SRC = Path(__file__).resolve().parents[1] / "src"
ENV = {
    **os.environ,
    "PYTHONPATH": os.pathsep.join(filter(None, [str(SRC), os.environ.get("PYTHONPATH")])),
}


def run(*argv: str) -> str:
    env = {**os.environ, "SLURM_TIME_FORMAT": "%s", "TZ": "UTC"}
    done = subprocess.run(argv, capture_output=True, text=True, check=True, timeout=120, env=env)
    return done.stdout


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(fraction * len(ordered) + 0.5) - 1))]


def fresh_store(db: str | None, work: Path) -> str:
    if db is None:
        return str(work / "state.db")
    import psycopg

    schema = f"bench_{secrets.token_hex(6)}"
    with psycopg.connect(db, autocommit=True) as admin:
        admin.execute(f"CREATE SCHEMA {schema}")
    joiner = "&" if "?" in db else "?"
    return f"{db}{joiner}options={quote(f'-csearch_path={schema}')}"


async def submit_held(location: str, count: int, work: Path) -> dict[str, tuple[str, int]]:
    """run id -> (native id, expected exit); submitted held, the tracker closed."""
    runs: dict[str, tuple[str, int]] = {}
    async with Tracker(store=location, backends={"slurm": _slurm_config()}) as tracker:
        for index in range(count):
            code = index % 3
            spec = JobSpec(
                # The payload's last act writes its end time to the nanosecond: sacct's
                # End is cut to the second (up to 1 s too early).
                command=["sh", "-c", f'sleep 1; date +%s.%N >"$SLURM_JOB_ID.end"; exit {code}'],
                name=f"fleet-{index}",
                working_directory=str(work),
                stdout=str(work / "%j.out"),
                options={"hold": "true"},
            )
            submitted = await tracker.submit(spec, backend="slurm")
            native = submitted.items[0].native_id
            assert native is not None, "a submission failed"
            runs[submitted.id] = (native, code)
    return runs


def _slurm_config() -> Any:
    from hpcstate.backend import BackendConfig

    return BackendConfig(name="slurm", kind="slurm")


def fleet(location: str) -> list[dict[str, Any]]:
    done = subprocess.run(
        [sys.executable, "-m", "hpcstate", "--db", location, "fleet", "--json"],
        capture_output=True,
        text=True,
        timeout=60,
        env=ENV,
        check=True,
    )
    return [json.loads(line) for line in done.stdout.splitlines()]


SLURM_COMMANDS = ("squeue", "sacct", "scontrol", "sbatch", "scancel", "sinfo")


def shim(work: Path) -> tuple[Path, Path]:
    """A directory of wrappers that log each Slurm command the watchers run (exact
    per-bench counts: sdiag's counters are cluster-wide, and other users' jobs and
    tests on the same cluster show up in them)."""
    import shutil

    bin_dir, log = work / "bin", work / "commands.log"
    bin_dir.mkdir()
    for name in SLURM_COMMANDS:
        real = shutil.which(name)
        if real is None:
            continue
        wrapper = bin_dir / name
        wrapper.write_text(f'#!/bin/sh\necho "{name} $*" >> "{log}"\nexec "{real}" "$@"\n')
        wrapper.chmod(0o755)
    return bin_dir, log


def one(
    count: int, db: str | None, *, kill_holder: bool = False, single: bool = False
) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="hpcstate-fleet-") as tmp:
        work = Path(tmp)
        location = fresh_store(db, work)
        bin_dir, log = shim(work)
        env = {**ENV, "PATH": f"{bin_dir}{os.pathsep}{ENV.get('PATH', '')}"}
        runs = asyncio.run(submit_held(location, count, work))
        lines: dict[str, list[tuple[float, dict[str, Any]]]] = {r: [] for r in runs}
        procs: dict[str, subprocess.Popen[str]] = {}

        def read(proc: subprocess.Popen[str]) -> None:
            assert proc.stdout is not None
            for line in proc.stdout:
                if line.strip():
                    record = json.loads(line)
                    lines[record["id"]].append((time.time(), record))

        readers = []
        # N processes watching one run each, or (the baseline) one watching all N.
        groups = [list(runs)] if single else [[run_id] for run_id in runs]
        for group in groups:
            run_id = group[0]
            proc = subprocess.Popen(
                [sys.executable, "-m", "hpcstate", "--db", location, "watch", *group, "--json"],
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                text=True,
                env=env,
            )
            procs[run_id] = proc
            reader = threading.Thread(target=read, args=(proc,), daemon=True)
            reader.start()
            readers.append(reader)
        deadline = time.monotonic() + 120
        while not any(lease["live"] and lease["last_poll_at"] for lease in fleet(location)):
            assert time.monotonic() < deadline, "no watcher took the lease"
            time.sleep(0.5)
        time.sleep(3)  # every watcher started (imports done, first look at the store)
        (lease,) = fleet(location)
        try:
            reset_counters()
        except subprocess.SubprocessError as exc:  # slurmdbd busy: the exact counts remain
            print(f"cannot reset the cluster's counters: {exc}", flush=True)
        log.write_text("")  # the counts start here too
        run("scontrol", "release", ",".join(native for native, _ in runs.values()))
        released = time.time()
        failover: dict[str, Any] = {}
        if kill_holder:
            holder_pid = int(lease["holder"].split(":")[1])
            killed = [r for r, p in procs.items() if p.pid == holder_pid]
            os.kill(holder_pid, signal.SIGKILL)
            killed_at = time.time()
            while True:
                now = fleet(location)
                taken = [
                    x
                    for x in now
                    if x["generation"] > lease["generation"] and x["live"] and x["last_poll_at"]
                ]
                if taken:
                    failover = {
                        "killed": killed,
                        "takeover_s": round(time.time() - killed_at, 2),
                        "new_holder": taken[0]["holder"],
                    }
                    break
                assert time.time() - killed_at < 120, "nobody took the lease over"
                time.sleep(0.2)
        give_up = time.monotonic() + 300
        for proc in procs.values():
            while proc.poll() is None and time.monotonic() < give_up:
                time.sleep(0.1)
            if proc.poll() is None:
                proc.kill()
        for reader in readers:
            reader.join(timeout=10)
        tracking_s = time.time() - released
        try:
            ctld, dbd = read_counters()
        except subprocess.SubprocessError as exc:
            print(f"cannot read the cluster's counters: {exc}", flush=True)
            ctld, dbd = {}, {}
        commands: dict[str, int] = {}
        calls = log.read_text().splitlines()
        for call in calls:
            name = call.split()[0]
            commands[name] = commands.get(name, 0) + 1
        natives = [native for native, _ in runs.values()]
        ends = {}
        for row in run(
            "sacct", "-P", "-n", "-X", "-j", ",".join(natives), "-o", "JobIDRaw,End"
        ).splitlines():
            job, end = row.split("|")
            if end.isdigit():
                ends[job] = float(end)
        with Store(location, sweep=False) as store:
            verdicts: dict[str, int] = {}
            for stored in store.events(after=0):
                if isinstance(stored.event, (Finished, Corrected)):
                    verdicts[stored.event.run_id] = verdicts.get(stored.event.run_id, 0) + 1
            states = {r: store.get_run(r).items[0] for r in runs}
        precise = {
            path.stem: float(text)
            for path in work.glob("*.end")
            if (text := path.read_text().strip()).replace(".", "", 1).isdigit()
        }
        delays, wrong, unconfirmed, repeated, missing = [], [], 0, [], []
        end_delays: list[float] = []
        for run_id, (native, code) in runs.items():
            item = states[run_id]
            want = "completed" if code == 0 else "failed"
            exit_ = item.stats.exit
            if item.state.value != want or exit_ is None or exit_.code != code:
                wrong.append(f"{native}: {item.state} {exit_}")
            if verdicts.get(run_id, 0) != 1:
                repeated.append(f"{native}: {verdicts.get(run_id, 0)} verdict events")
            seen = lines[run_id]
            if failover and run_id in failover["killed"]:
                continue
            if len(seen) != 1:
                missing.append(f"{native}: {len(seen)} lines")
                continue
            at, record = seen[0]
            if record["state"] != want or record["exit_code"] != code:
                wrong.append(
                    f"{native}: the watcher printed {record['state']} {record['exit_code']}"
                )
            unconfirmed += not record["confirmed"]
            if native in precise:
                delays.append(at - precise[native])
            if native in ends:
                end_delays.append(at - ends[native])
        ctld_q = sum(v for k, v in ctld.items() if k in CTLD_QUERY_TYPES)
        dbd_q = sum(v for k, v in dbd.items() if k in DBD_QUERY_TYPES)
        return {
            "watchers": 1 if single else count,
            "jobs": count,
            "store": "postgresql" if db else "sqlite",
            "commands": commands,
            "calls": calls,
            "ctld_queries": ctld_q,
            "dbd_queries": dbd_q,
            "ctld_by_type": {k: v for k, v in ctld.items() if k in CTLD_QUERY_TYPES},
            "dbd_by_type": {k: v for k, v in dbd.items() if k in DBD_QUERY_TYPES},
            "median_s": round(statistics.median(delays), 2) if delays else None,
            "p95_s": round(percentile(delays, 0.95), 2) if delays else None,
            "max_s": round(max(delays), 2) if delays else None,
            "delays_measured": len(delays),
            "sacct_end_median_s": round(statistics.median(end_delays), 2) if end_delays else None,
            "sacct_end_p95_s": round(percentile(end_delays, 0.95), 2) if end_delays else None,
            "printed_unconfirmed": unconfirmed,
            "wrong": wrong,
            "repeated_or_lost": repeated,
            "missing_lines": missing,
            "tracking_s": round(tracking_s, 1),
            **({"failover": failover} if failover else {}),
        }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--watchers", default="1,10,50")
    parser.add_argument("--failover", type=int, default=0, help="watchers in the failover run")
    parser.add_argument("--db", help="a postgresql:// URL (default: a SQLite file per run)")
    parser.add_argument("--json", type=Path, help="write the results here too")
    args = parser.parse_args()
    import faulthandler

    faulthandler.register(signal.SIGUSR1)  # kill -USR1 PID: where a run is stuck
    print(f"machine: {os.cpu_count()} CPUs, load {os.getloadavg()}", flush=True)
    results = []
    counts = [int(n) for n in args.watchers.split(",") if n]
    for count in counts:
        for single in (True, False) if count > 1 else (False,):
            result = one(count, args.db, single=single)
            results.append(result)
            print(json.dumps(result), flush=True)
    if args.failover:
        result = one(args.failover, args.db, kill_holder=True)
        results.append(result)
        print(json.dumps(result), flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    for r in results:
        if "failover" in r or r["watchers"] == 1:
            continue
        # The baseline: one process watching the same number of jobs.
        base = next(b for b in results if b["watchers"] == 1 and b["jobs"] == r["jobs"])
        for key in ("squeue", "sacct"):
            was, now = base["commands"].get(key, 0), r["commands"].get(key, 0)
            grew = now > was * 1.10 + 1
            print(
                f"{r['jobs']} jobs, {key} calls: {was} from 1 process -> {now} from"
                f" {r['watchers']} processes ({'GREW' if grew else 'flat'})"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
