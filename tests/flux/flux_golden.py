"""Helpers over the recorded flux-core 0.88.0 outputs in tests/golden/flux/0.88.0.

Each case directory holds what real flux commands printed for one job (see that
directory's README.md). These helpers only read files and frame them the way the
backend's commands would print them; they never compute expected verdicts.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Final

from hpcstate.backend import CommandResult
from hpcstate_flux._parse import EVIDENCE_KEYS, SECTION_BEGIN, SECTION_END

GOLDEN: Final = Path(__file__).resolve().parent.parent / "golden" / "flux" / "0.88.0"
OBSERVED_AT: Final = datetime(2026, 11, 23, 19, 0, tzinfo=timezone.utc)

#: flux job info KEY -> the recorded file stem holding its raw output.
_RECORDED_STEM: Final[Mapping[str, str]] = {"exec": "exec_eventlog", "main": "eventlog"}


def case_dirs() -> list[str]:
    """Every recorded job case (the _* folders and submit_rejected hold no single job)."""
    return sorted(
        p.name
        for p in GOLDEN.iterdir()
        if p.is_dir() and not p.name.startswith("_") and p.name != "submit_rejected"
    )


def read(case: str, name: str) -> str:
    path = GOLDEN / case / name
    return path.read_text(encoding="utf-8") if path.exists() else ""


def rc(case: str, stem: str) -> int:
    return int(read(case, f"{stem}.rc").strip())


def jobid_f58(case: str) -> str:
    return read(case, "jobid.f58").strip()


def recorded(case: str, stem: str, *argv: str) -> CommandResult:
    """A command's recorded stdout/stderr/exit status as a CommandResult."""
    return CommandResult(
        argv=argv or ("flux", stem),
        returncode=rc(case, stem),
        stdout=read(case, f"{stem}.out"),
        stderr=read(case, f"{stem}.err"),
    )


def evidence_output(requests: Mapping[int, frozenset[str]], cases_by_id: Mapping[int, str]) -> str:
    """What the evidence script prints for these requests, built from the recorded
    ``flux job info ID guest.exec.eventlog`` / ``eventlog`` outputs of each job.

    ``guest.output`` was recorded only in its human form; no recorded job logged an
    oom line, so its grep-filtered section is empty (rc 1: grep matched nothing).
    """
    lines: list[str] = []
    for jobid in sorted(requests):
        case = cases_by_id[jobid]
        for kind in sorted(requests[jobid]):
            assert kind in EVIDENCE_KEYS
            lines.append(f"{SECTION_BEGIN} {kind} {jobid}")
            if kind == "output":
                code = 1
            else:
                stem = _RECORDED_STEM[kind]
                lines.append(read(case, f"{stem}.out") + read(case, f"{stem}.err"))
                code = rc(case, stem)
            lines.append("")
            lines.append(f"{SECTION_END} {kind} {jobid} {code}")
    return "\n".join(lines) + "\n"
