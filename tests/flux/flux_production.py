"""The production recordings of flux-core 0.88.0 (tests/golden/flux/0.88.0-production).

Each case folder holds what the backend's OWN commands printed on a real flux-core
0.88.0 (see that folder's README.md): ``commands.json`` has each command's exact argv,
env and stdin file; ``<stem>.out/.err/.rc`` what it printed. These helpers only read
files; they never compute expected verdicts.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any, Final

from attrs import frozen

from hpcstate.backend import Command, CommandResult, JobSpec

PRODUCTION: Final = Path(__file__).resolve().parent.parent / "golden" / "flux" / "0.88.0-production"


@frozen
class Recorded:
    """One recorded command: what ran, and what it printed."""

    stem: str
    argv: tuple[str, ...]
    env: Mapping[str, str]
    stdin: str | None
    result: CommandResult

    def ran(self, command: Command) -> bool:
        """True when ``command`` is exactly this recorded command (argv, env, stdin)."""
        return (
            tuple(command.argv) == self.argv
            and dict(command.env) == dict(self.env)
            and command.stdin == self.stdin
            and not command.unset_env
        )


def case_dirs() -> list[str]:
    """Every job case (the _* folders hold several jobs or none)."""
    return sorted(p.name for p in PRODUCTION.iterdir() if p.is_dir() and not p.name.startswith("_"))


def read(folder: str, name: str) -> str:
    path = PRODUCTION / folder / name
    return path.read_text(encoding="utf-8") if path.exists() else ""


def case_json(folder: str) -> dict[str, Any]:
    value = json.loads(read(folder, "case.json"))
    assert isinstance(value, dict)
    return value


def jobid(folder: str) -> str:
    return read(folder, "jobid.txt").strip()


def commands(folder: str) -> dict[str, Recorded]:
    """Every recorded command of a folder, by file stem."""
    recorded: dict[str, Recorded] = {}
    for entry in json.loads(read(folder, "commands.json")):
        stem = entry["file"]
        stdin_file = entry.get("stdin_file")
        rc_text = read(folder, f"{stem}.rc").strip()
        recorded[stem] = Recorded(
            stem=stem,
            argv=tuple(entry["argv"]),
            env=dict(entry.get("env") or {}),
            stdin=read(folder, stdin_file) if stdin_file else None,
            result=CommandResult(
                argv=tuple(entry["argv"]),
                returncode=int(rc_text) if rc_text else None,
                stdout=read(folder, f"{stem}.out"),
                stderr=read(folder, f"{stem}.err"),
            ),
        )
    return recorded


def spec(folder: str) -> JobSpec:
    """The JobSpec the case submitted, from its case.json (as the recorder built it)."""
    raw = case_json(folder)["spec"]
    return JobSpec(
        command=tuple(raw.get("command", ())),
        script=raw.get("script"),
        name=raw.get("name") or "",
        working_directory=raw.get("working_directory"),
        environment=dict(raw.get("environment", {})),
        tag=raw.get("tag"),
        tasks=raw.get("tasks"),
        time_limit=(
            timedelta(seconds=raw["time_limit_s"]) if raw.get("time_limit_s") is not None else None
        ),
        options=dict(raw.get("options", {})),
    )


def matching(folder: str, command: Command, stems: Sequence[str]) -> Recorded | None:
    """The recorded command among ``stems`` that is exactly ``command`` (None if none)."""
    recorded = commands(folder)
    for stem in stems:
        if stem in recorded and recorded[stem].ran(command):
            return recorded[stem]
    return None
