"""Reading the recorded Slurm outputs in tests/golden/slurm/<version>/<case>/ and driving
them through the dialect and the state machine, in the order they were taken."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta, timezone
from pathlib import Path

from attrs import frozen

import hpcstate
from hpcstate import Observation, RunItem, Step
from hpcstate.backend import AccountingQuery, CommandResult
from hpcstate_slurm import SlurmDialect
from hpcstate_slurm._parse import parse_squeue

GOLDEN = Path(__file__).resolve().parents[1] / "golden" / "slurm"
UTC = timezone.utc

#: Column layouts of the recorded squeue commands (keys of hpcstate_slurm SQUEUE_FIELDS).
# 26.05.3: squeue -h -t all -j ID -o '%i|%A|%F|%K|%T|%r|%j'
COLUMNS_26_O = ("id", "raw_id", "array_job_id", "array_task", "state", "reason", "name")
# 22.05.8: squeue -h -t all -r -j ID -o '%i|%A|%F|%K|%T|%r|%S|%e|%N|%j'
COLUMNS_22_O = (
    "id",
    "raw_id",
    "array_job_id",
    "array_task",
    "state",
    "reason",
    "start",
    "end",
    "nodes",
    "name",
)
# 22.05.8: squeue ... -O 'JobArrayID:|,JobID:|,...,NodeList:|,exit_code:|,DerivedEC:|,Name:0'
COLUMNS_22_BIG_O = (
    "id",
    "raw_id",
    "array_job_id",
    "array_task",
    "state",
    "reason",
    "start",
    "end",
    "nodes",
    "exit",
    "derived",
    "name",
)


def cases(version: str) -> list[str]:
    root = GOLDEN / version
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("_"))


def read(case: Path, stem: str) -> CommandResult | None:
    out = case / f"{stem}.out"
    if not out.exists():
        return None
    rc_file = case / f"{stem}.rc"
    err = case / f"{stem}.err"
    return CommandResult(
        argv=(stem,),
        returncode=int(rc_file.read_text().strip()) if rc_file.exists() else 0,
        stdout=out.read_text(encoding="utf-8", errors="replace"),
        stderr=err.read_text(encoding="utf-8", errors="replace") if err.exists() else "",
    )


def command_times(case: Path) -> dict[str, datetime]:
    """file stem -> when it was taken (commands*.tsv, UTC HH:MM:SS on the recording day)."""
    times: dict[str, datetime] = {}
    day = datetime(2026, 11, 23, tzinfo=UTC)
    for tsv in sorted(case.glob("commands*.tsv")):
        for line in tsv.read_text().splitlines()[1:]:
            parts = line.split("\t")
            if len(parts) >= 2 and parts[1].count(":") == 2:
                hours, minutes, seconds = (int(x) for x in parts[1].split(":"))
                times[parts[0]] = day + timedelta(hours=hours, minutes=minutes, seconds=seconds)
    return times


@frozen
class Snapshot:
    stem: str
    kind: str  # "queue" or "accounting"
    columns: tuple[str, ...] = ()


def queue_observations(
    dialect: SlurmDialect,
    result: CommandResult,
    columns: Sequence[str],
    native_ids: Sequence[str],
    at: datetime,
) -> list[Observation]:
    if result.returncode != 0:
        return dialect.parse_queue(result, native_ids=native_ids, observed_at=at)
    rows = parse_squeue(result.stdout, columns=columns, tz=dialect.tz)
    return dialect.queue_observations(rows, native_ids=native_ids, observed_at=at)


def accounting_observations(
    dialect: SlurmDialect, result: CommandResult, native_ids: Sequence[str], at: datetime
) -> list[Observation]:
    query = AccountingQuery(native_ids=native_ids)
    return dialect.parse_accounting(result, query=query, observed_at=at)


def drive(
    dialect: SlurmDialect,
    case: Path,
    native_ids: Sequence[str],
    snapshots: Sequence[Snapshot],
) -> tuple[dict[str, RunItem], list[hpcstate.Event]]:
    """Submit one item per id, then apply every recorded snapshot that exists, in order."""
    times = command_times(case)
    start = times.get("sbatch", datetime(2026, 11, 23, tzinfo=UTC))
    items: dict[str, RunItem] = {}
    events: list[hpcstate.Event] = []
    for native_id in native_ids:
        item = hpcstate.new_item(id=native_id, run_id="run", backend="slurm", now=start)
        step: Step = hpcstate.submitted(item, native_id=native_id, at=start)
        items[native_id] = step.item
        events.extend(step.events)
    last = start
    for snapshot in snapshots:
        result = read(case, snapshot.stem)
        if result is None:
            continue
        # Keep observation times increasing even where two files share one second.
        at = max(times.get(snapshot.stem, last), last + timedelta(milliseconds=1))
        last = at
        if dialect.is_transient(result):
            continue  # a transient error is never an observation
        if snapshot.kind == "queue":
            observations = queue_observations(dialect, result, snapshot.columns, native_ids, at)
        else:
            observations = accounting_observations(dialect, result, native_ids, at)
        for observation in observations:
            step = hpcstate.advance(items[observation.native_id], observation)
            items[observation.native_id] = step.item
            events.extend(step.events)
    return items, events
