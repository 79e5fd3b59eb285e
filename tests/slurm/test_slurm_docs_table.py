"""The outcome x version table of docs/backends/slurm.md is generated from the recordings:
what Slurm 22.05.8 and 26.05.3 printed for each outcome (the queue within MinJobAge, and
sacct), and what hpcstate reports from that queue answer. The test fails when the table
in the docs is not what the recordings and today's parser give; to regenerate it::

    python tests/slurm/test_slurm_docs_table.py   # prints the table
"""

from __future__ import annotations

import sys
from datetime import datetime, timezone
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from slurm_golden import COLUMNS_22_BIG_O  # noqa: E402

from hpcstate import Observation  # noqa: E402
from hpcstate_slurm import SlurmDialect  # noqa: E402
from hpcstate_slurm._parse import parse_squeue  # noqa: E402

GOLDEN = HERE.parent / "golden" / "slurm"
DOC = HERE.parents[1] / "docs" / "backends" / "slurm.md"
START, END = "<!-- outcome-table:start -->", "<!-- outcome-table:end -->"
AT = datetime(2026, 12, 6, 16, 0, tzinfo=timezone.utc)
OLD = SlurmDialect.for_version("22.05.8")
NEW = SlurmDialect.for_version("26.05.3")

#: (outcome as the job's script did it, case in 22.05.8, case in 26.05.3-production)
ROWS = (
    ("`exit 0`", "exit_0", "exit_0"),
    ("`exit 3`", "exit_3", "exit_3"),
    ("`exit 137`", "exit_137", "exit_137"),
    ("`exit 200`", "exit_200", "exit_200"),
    ("command not found (127)", "command_not_found", "command_not_found"),
    ("`kill -TERM $$`", "sigterm", "sigterm"),
    ("`kill -SEGV $$`", "sigsegv", "sigsegv"),
    ("srun steps exit 7, 3, 2", "steps_7_3_2", "steps_7_3_2"),
    ("srun step exits 5, then `true`", "step_exit_5_then_true", "step_exit_5_then_true"),
    ("time limit", "timeout", "timeout"),
    ("scancel while running", "cancel_running", "cancel_running"),
    ("scancel while held", "cancel_pending_hold", "cancel_pending_hold"),
)


def _fields(path: Path, *names: int) -> list[str]:
    line = path.read_text(encoding="utf-8").splitlines()[0].split("|")
    return [line[i] for i in names]


def _sacct_job(path: Path) -> str:
    header, row = path.read_text(encoding="utf-8").splitlines()[:2]
    cells = dict(zip(header.split("|"), row.split("|"), strict=False))
    return f"{cells['State']} `{cells['ExitCode']}`"


def _reported(obs: Observation) -> str:
    state = obs.state.value if obs.state is not None else "?"
    exit_ = obs.stats.exit.describe() if obs.stats.exit is not None else "no exit"
    reason = obs.stats.reason.kind.value if obs.stats.reason is not None else "?"
    return f"{state}, {exit_}, reason `{reason}`"


def _old(case: str) -> tuple[str, str]:
    folder = GOLDEN / "22.05.8" / case
    state, reason, code = _fields(folder / "squeue_O.out", 4, 5, 9)
    (row,) = parse_squeue(
        (folder / "squeue_O.out").read_text(), columns=COLUMNS_22_BIG_O, tz=timezone.utc
    )
    (obs,) = OLD.queue_observations([row], native_ids=[row.job_id], observed_at=AT)
    printed = f"{state} {reason} `{code}`; sacct {_sacct_job(folder / 'sacct_P.out')}"
    return printed, _reported(obs)


def _new(case: str) -> tuple[str, str]:
    from hpcstate.backend import CommandResult

    folder = GOLDEN / "26.05.3-production" / case
    state, reason, code = _fields(folder / "squeue_O.out", 4, 5, 10)
    job = (folder / "jobid.txt").read_text().strip()
    result = CommandResult(
        argv=("squeue",), returncode=0, stdout=(folder / "squeue_O.out").read_text()
    )
    (obs,) = NEW.parse_queue(result, native_ids=[job], observed_at=AT)
    printed = f"{state} {reason} `{code}`; sacct {_sacct_job(folder / 'sacct_P.out')}"
    return printed, _reported(obs)


def table() -> str:
    lines = [
        "| outcome | Slurm 22.05.8 prints: squeue State Reason exit_code; sacct job row "
        "| hpcstate reports (22.05.8) | Slurm 26.05.3 prints | hpcstate reports (26.05.3) |",
        "|---|---|---|---|---|",
    ]
    for outcome, old_case, new_case in ROWS:
        old_printed, old_reported = _old(old_case)
        new_printed, new_reported = _new(new_case)
        lines.append(
            f"| {outcome} | {old_printed} | {old_reported} | {new_printed} | {new_reported} |"
        )
    return "\n".join(lines)


def test_the_docs_table_is_the_generated_one() -> None:
    text = DOC.read_text(encoding="utf-8")
    assert START in text
    assert END in text
    shown = text.split(START, 1)[1].split(END, 1)[0].strip()
    assert shown == table(), "regenerate: python tests/slurm/test_slurm_docs_table.py"


if __name__ == "__main__":
    print(table())
