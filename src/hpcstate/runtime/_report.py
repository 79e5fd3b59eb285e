"""Self-report: a job tells the tracker how its payload ended.

Inside a job hpcstate submitted, the environment names where to report:

* ``HPCSTATE_DB`` (+ ``HPCSTATE_RUN_ID``, ``HPCSTATE_ITEM_ID``): the tracker's SQLite
  store, for jobs on this machine: the report is a row in ``self_reports``.
* ``HPCSTATE_REPORT_FILE``: a small JSON file next to the job's output, for jobs on a
  remote scheduler; the tracker reads it through the backend. ``{array_index}`` in
  the name is replaced by the task's index (from ``HPCSTATE_ARRAY_INDEX``,
  ``SLURM_ARRAY_TASK_ID`` or ``JOB_COMPLETION_INDEX``).

A self-report is never final: it moves a running item to SETTLING at most, and it
never overrides a scheduler's verdict (the core's transition table guarantees it).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Final

from attrs import frozen

from hpcstate import ConfigError, ExitStatus, JobStats, Observation, SchemaError, Source, State
from hpcstate.serial import make_converter

REPORT_FILE_ENV: Final = "HPCSTATE_REPORT_FILE"
RUN_ID_ENV: Final = "HPCSTATE_RUN_ID"
ITEM_ID_ENV: Final = "HPCSTATE_ITEM_ID"
DB_ENV: Final = "HPCSTATE_DB"
ARRAY_INDEX_ENVS: Final = ("HPCSTATE_ARRAY_INDEX", "SLURM_ARRAY_TASK_ID", "JOB_COMPLETION_INDEX")

_CONVERTER: Final = make_converter()


@frozen(kw_only=True)
class SelfReport:
    """What a job said about itself. ``item_id`` may be empty for a task of an array
    submitted as one job: ``run_id`` and ``array_index`` then name the item."""

    run_id: str
    item_id: str
    exit: ExitStatus
    reported_at: datetime
    detail: str = ""
    array_index: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": 1,
            "run_id": self.run_id,
            "item_id": self.item_id,
            "array_index": self.array_index,
            "exit": _CONVERTER.unstructure(self.exit),
            "reported_at": _CONVERTER.unstructure(self.reported_at),
            "detail": self.detail,
        }

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any]) -> SelfReport:
        """Raises SchemaError naming what is wrong."""
        try:
            index = doc.get("array_index")
            return cls(
                run_id=str(doc["run_id"]),
                item_id=str(doc.get("item_id") or ""),
                exit=_CONVERTER.structure(doc["exit"], ExitStatus),
                reported_at=_CONVERTER.structure(doc["reported_at"], datetime),
                detail=str(doc.get("detail") or ""),
                array_index=int(index) if index is not None else None,
            )
        except Exception as exc:  # cattrs raises many kinds; all mean "bad document"
            raise SchemaError(
                f"invalid self-report document: {exc}", version=doc.get("schema")
            ) from exc

    def observation(self, native_id: str, observed_at: datetime) -> Observation:
        """The report as what it is: the job's own word, never final."""
        return Observation(
            native_id=native_id,
            source=Source.SELF_REPORT,
            observed_at=observed_at,
            state=State.COMPLETED if self.exit.success else State.FAILED,
            final=False,
            stats=JobStats(exit=self.exit, finished_at=self.reported_at, finished_at_approx=True),
            detail=self.detail or f"the job reported {self.exit.describe()}",
        )


def _as_exit(value: ExitStatus | int) -> ExitStatus:
    if isinstance(value, ExitStatus):
        return value
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"report() takes an ExitStatus or an int return code, got {value!r}")
    if value < 0:
        return ExitStatus.killed(-value)  # subprocess's convention: -N is signal N
    return ExitStatus.from_shell_code(value)


def _array_index(env: Mapping[str, str]) -> int | None:
    for name in ARRAY_INDEX_ENVS:
        text = env.get(name, "").strip()
        if text.isascii() and text.isdigit():
            return int(text)
    return None


def report_file_name(template: str, array_index: int | None) -> str:
    return template.replace("{array_index}", "" if array_index is None else str(array_index))


def write_report_file(path: Path, report: SelfReport) -> None:
    """Write atomically (temp file + rename). Never replaces something that is not a
    regular file: a report path naming /dev/null or a directory is a mistake."""
    if path.exists() and not path.is_file():
        raise ConfigError(f"self-report file {path} exists and is not a regular file")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(report.to_dict()) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def report(
    exit_status: ExitStatus | int,
    *,
    detail: str = "",
    run_id: str | None = None,
    item_id: str | None = None,
    db_path: str | os.PathLike[str] | None = None,
    report_file: str | os.PathLike[str] | None = None,
    now: datetime | None = None,
    environ: Mapping[str, str] | None = None,
) -> SelfReport:
    """Report this job's outcome: an :class:`ExitStatus`, or a return code (negative
    means killed by that signal, as in :mod:`subprocess`). Where to report comes from
    the arguments, else from the environment hpcstate set at submit. Raises
    ConfigError when the job was not started by hpcstate."""
    env = os.environ if environ is None else environ
    status = _as_exit(exit_status)
    run = run_id or env.get(RUN_ID_ENV, "")
    item = item_id or env.get(ITEM_ID_ENV, "")
    if not run:
        raise ConfigError(
            f"hpcstate.runtime.report(): no run to report to: {RUN_ID_ENV} is not set "
            "(was this job submitted by hpcstate?) and no run_id was given"
        )
    index = _array_index(env)
    result = SelfReport(
        run_id=run,
        item_id=item,
        exit=status,
        reported_at=now or datetime.now(timezone.utc),
        detail=detail,
        array_index=index,
    )
    target_file = report_file if report_file is not None else env.get(REPORT_FILE_ENV)
    if target_file:
        write_report_file(Path(report_file_name(str(target_file), index)), result)
        return result
    database = db_path if db_path is not None else env.get(DB_ENV)
    if database:
        if not item:
            raise ConfigError(
                f"hpcstate.runtime.report(): {ITEM_ID_ENV} is not set and no item_id was given"
            )
        from ._store import Store

        with Store(database, sweep=False) as store:
            store.add_self_report(
                run_id=run, item_id=item, reported_at=result.reported_at, doc=result.to_dict()
            )
        return result
    raise ConfigError(
        f"hpcstate.runtime.report(): nowhere to report: set {DB_ENV} (local jobs) or "
        f"{REPORT_FILE_ENV} (remote jobs); hpcstate sets them in jobs it submits"
    )
