"""The OpenPBS dialect: qsub / qstat -f -F json -x / qdel, and what their answers mean.

Pure: no I/O, no clock. Written from OpenPBS's documentation and headers (``qstat(1B)``,
``src/include/job.h``); no PBS server ran while writing it (see the README).

One ``qstat -x`` call is the queue *and* the history: a finished job stays listed in
state F (or X for array subjobs) with its ``Exit_status`` for ``job_history_duration``
when the server has ``job_history_enable = True``. That history record is the final,
authoritative verdict, so it is reported with source ACCOUNTING and ``final=True``.

``Exit_status`` (OpenPBS):

* ``< 0``: PBS itself could not run the job or killed it (``JOB_EXEC_*`` in job.h, e.g.
  -29 walltime exceeded, -27 memory exceeded, -1 exec failed). No process exit status.
* ``0..255``: the exit code of the job script's shell. 129..192 may be a child killed by
  signal ``N-128`` as bash reports it: kept as the exit code, marked ambiguous.
* ``> 256``: the job's top process was killed by signal ``Exit_status - 256`` (mom stores
  ``WTERMSIG + 0x100``): lossless.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta, timezone, tzinfo
from typing import Any, Final

from hpcstate import (
    Absence,
    CommandFailed,
    ExitStatus,
    JobStats,
    Observation,
    ParseError,
    Reason,
    ReasonKind,
    SchedulerUnavailable,
    Source,
    State,
)
from hpcstate.backend import AccountingQuery, Command, CommandResult, JobSpec, Submission

QSTAT: Final = "qstat -f -F json -x"
_JOB_ID = re.compile(r"\A[0-9]+(\[[0-9]*\])?(\.[A-Za-z0-9_.-]+)?\Z")
_UNKNOWN = "Unknown Job Id"
#: stderr texts meaning "the server did not answer", not "the job is...".
_TRANSIENT: Final = (
    "cannot connect to server",
    "connection refused",
    "communication failure",
    "timed out",
    "server is not ready",
    "end of file",
    "pbs_iff",
)
#: qdel answers that mean the job is already past cancelling: done, not an error.
_ALREADY_DONE: Final = (_UNKNOWN, "Job has finished", "Request invalid for state of job")

_QUEUED = frozenset("QHWT")
_RUNNING = frozenset("RESUB")  # E = exiting after having run: still holds its nodes
_FINISHED = frozenset("FX")  # F = finished (history), X = array subjob expired

#: History substates (OpenPBS job.h); 91 is the one a deleted (qdel) job ends in.
SUBSTATE_TERMINATED: Final = 91

#: JOB_EXEC_* codes that map to a specific verdict; other negatives are FAILED.
_EXEC_CODES: Final[Mapping[int, tuple[State, ReasonKind, str]]] = {
    -29: (State.TIMEOUT, ReasonKind.TIME_LIMIT, "JOB_EXEC_KILL_WALLTIME: walltime exceeded"),
    -28: (State.TIMEOUT, ReasonKind.TIME_LIMIT, "JOB_EXEC_KILL_CPUT: cput exceeded"),
    -27: (State.OUT_OF_MEMORY, ReasonKind.OUT_OF_MEMORY, "JOB_EXEC_KILL_MEM: mem exceeded"),
    -26: (State.OUT_OF_MEMORY, ReasonKind.OUT_OF_MEMORY, "JOB_EXEC_KILL_VMEM: vmem exceeded"),
    -20: (State.NODE_FAIL, ReasonKind.NODE_FAIL, "JOB_EXEC_RERUN_MS_FAIL: mother superior lost"),
    -14: (State.NODE_FAIL, ReasonKind.NODE_FAIL, "JOB_EXEC_RERUN_SIS_FAIL: sister node lost"),
}
_MONTHS: Final = {
    name: number
    for number, name in enumerate(
        ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"),
        start=1,
    )
}
_SIZE = re.compile(r"\A([0-9]+)(b|kb|mb|gb|tb|pb)?\Z", re.IGNORECASE)
_SIZE_FACTOR: Final = {"b": 1, "kb": 2**10, "mb": 2**20, "gb": 2**30, "tb": 2**40, "pb": 2**50}


class PbsDialect:
    """Builds OpenPBS commands and reads their answers.

    ``server_timezone`` is the zone the server prints its times in (``stime``,
    ``obittime``: ctime(3) strings without a zone). ``history`` says the server keeps job
    history (``job_history_enable``); without it a finished job simply vanishes and its
    outcome cannot be known, so a missing job is reported ABSENT rather than UNKNOWN.
    """

    def __init__(self, *, server_timezone: tzinfo = timezone.utc, history: bool = True) -> None:
        self.server_timezone = server_timezone
        self.history = history

    # -- submit -------------------------------------------------------------------------

    def submit_command(self, spec: JobSpec) -> Command:
        if spec.array:
            raise ValueError("hpcstate-pbs does not submit array jobs (qsub -J) yet")
        argv = ["qsub"]
        if spec.name:
            argv += ["-N", spec.name]
        if spec.time_limit is not None:
            argv += ["-l", f"walltime={_walltime(spec.time_limit)}"]
        chunk = []
        if spec.cpus is not None:
            chunk.append(f"ncpus={spec.cpus}")
        if spec.memory_bytes is not None:
            chunk.append(f"mem={-(-spec.memory_bytes // 1024)}kb")
        if chunk or spec.nodes is not None:
            argv += ["-l", ":".join([f"select={spec.nodes or 1}", *chunk])]
        if spec.partition:
            argv += ["-q", spec.partition]
        if spec.account:
            argv += ["-A", spec.account]
        if spec.stdout:
            argv += ["-o", spec.stdout]
        if spec.stderr:
            argv += ["-e", spec.stderr]
        if spec.environment:
            bad = [k for k, v in spec.environment.items() if "," in v or "'" in v or '"' in v]
            if bad:
                raise ValueError(
                    f"qsub -v cannot carry commas or quotes in values (variables {bad})"
                )
            argv += ["-v", ",".join(f"{k}={v}" for k, v in spec.environment.items())]
        if spec.dependencies:
            argv += ["-W", "depend=afterok:" + ":".join(spec.dependencies)]
        argv += list(spec.extra_args)
        stdin = None
        if spec.command:
            argv.append("--")
            if spec.working_directory:
                # qsub has no working-directory option: cd first, argv kept intact.
                argv += ["/bin/sh", "-c", 'cd -- "$1" && shift && exec "$@"', "sh"]
                argv.append(spec.working_directory)
            argv += list(spec.command)
        elif spec.working_directory:
            raise ValueError("with a batch script, set the working directory in the script")
        elif spec.script is not None:
            stdin = spec.script  # qsub reads the script from stdin
        elif spec.script_path is not None:
            argv.append(spec.script_path)
        return Command(argv=argv, stdin=stdin, timeout=60.0)

    def parse_submit(self, result: CommandResult, spec: JobSpec) -> Submission:
        if result.returncode != 0:
            self._raise_failure(result)
        text = result.stdout.strip()
        if not _JOB_ID.match(text):
            raise ParseError("expected a job id like 123.server", command="qsub", line=text)
        return Submission(native_id=text)

    def find_submission_command(self, tag: str) -> Command | None:
        return None  # no idempotent submit: PBS has no cheap lookup by tag

    def parse_find_submission(self, result: CommandResult, tag: str) -> Submission | None:
        return None

    # -- queue + history ---------------------------------------------------------------

    def queue_command(self, native_ids: Sequence[str]) -> Command:
        return Command(argv=["qstat", "-f", "-F", "json", "-x", *native_ids], timeout=60.0)

    def parse_queue(
        self, result: CommandResult, *, native_ids: Sequence[str], observed_at: datetime
    ) -> Sequence[Observation]:
        if result.returncode != 0:
            # qstat exits non-zero when any id is unknown, and still prints the others.
            others = [
                line for line in result.stderr.splitlines() if line.strip() and _UNKNOWN not in line
            ]
            if others or result.returncode is None:
                self._raise_failure(result)
        jobs = _jobs(result.stdout)
        observations = []
        for native_id in native_ids:
            job = _find(jobs, native_id)
            if job is None:
                absence = Absence.UNKNOWN if self.history else Absence.ABSENT
                detail = (
                    "qstat -x does not know this job (never existed, or its history expired)"
                    if self.history
                    else "not in the queue (the server keeps no job history)"
                )
                observations.append(
                    Observation(
                        native_id=native_id,
                        source=Source.QUEUE,
                        observed_at=observed_at,
                        absence=absence,
                        detail=detail,
                    )
                )
            else:
                observations.append(self._observation(native_id, job, observed_at))
        return observations

    def _observation(
        self, native_id: str, job: Mapping[str, Any], observed_at: datetime
    ) -> Observation:
        letter = _string(job, "job_state", native_id)
        run_count = _integer(job, "run_count", native_id)
        restarts = max(run_count - 1, 0) if run_count is not None else None
        submitted_at = self._time(job, "qtime", native_id)
        started_at = self._time(job, "stime", native_id)
        if letter in _QUEUED:
            return Observation(
                native_id=native_id,
                source=Source.QUEUE,
                observed_at=observed_at,
                state=State.QUEUED,
                stats=JobStats(submitted_at=submitted_at),
            )
        elapsed_s, cpu_time_s, max_rss_bytes = _usage(job, native_id)
        nodes = _nodes(job)
        if letter in _RUNNING:
            return Observation(
                native_id=native_id,
                source=Source.QUEUE,
                observed_at=observed_at,
                state=State.RUNNING,
                restarts=restarts,
                stats=JobStats(nodes=nodes, submitted_at=submitted_at, started_at=started_at),
            )
        if letter == "M":
            return Observation(
                native_id=native_id,
                source=Source.QUEUE,
                observed_at=observed_at,
                absence=Absence.UNKNOWN,
                detail="moved to another PBS server: its outcome is not visible here",
            )
        if letter not in _FINISHED:
            raise ParseError(
                f"unknown job_state {letter!r}", command=QSTAT, field="job_state", line=native_id
            )
        state, status, reason = _verdict(
            _integer(job, "Exit_status", native_id), _integer(job, "substate", native_id)
        )
        return Observation(
            native_id=native_id,
            source=Source.ACCOUNTING,
            observed_at=observed_at,
            state=state,
            final=True,
            restarts=restarts,
            stats=JobStats(
                exit=status,
                reason=reason,
                finished_at=self._time(job, "obittime", native_id),
                nodes=nodes,
                submitted_at=submitted_at,
                started_at=started_at,
                elapsed_s=elapsed_s,
                cpu_time_s=cpu_time_s,
                max_rss_bytes=max_rss_bytes,
            ),
        )

    def _time(self, job: Mapping[str, Any], key: str, native_id: str) -> datetime | None:
        value = job.get(key)
        if value is None:
            return None
        if not isinstance(value, str):
            raise ParseError("expected a time string", command=QSTAT, field=key, line=native_id)
        return parse_pbs_time(value, self.server_timezone, field=key)

    # -- accounting: qstat -x already gave the history ---------------------------------

    def accounting_command(self, query: AccountingQuery) -> Command | None:
        return None

    def parse_accounting(
        self, result: CommandResult, *, query: AccountingQuery, observed_at: datetime
    ) -> Sequence[Observation]:
        return [
            Observation(
                native_id=native_id,
                source=Source.ACCOUNTING,
                observed_at=observed_at,
                absence=Absence.NO_RECORD,
                detail="PBS history comes with qstat -x",
            )
            for native_id in query.native_ids
        ]

    # -- cancel -------------------------------------------------------------------------

    def cancel_command(self, native_ids: Sequence[str]) -> Command:
        return Command(argv=["qdel", *native_ids], timeout=60.0)

    def check_cancel(self, result: CommandResult) -> None:
        if result.returncode == 0:
            return
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        if lines and all(any(mark in line for mark in _ALREADY_DONE) for line in lines):
            return
        self._raise_failure(result)

    # -- errors -------------------------------------------------------------------------

    def is_transient(self, result: CommandResult) -> bool:
        if result.returncode is None:
            return True
        text = result.stderr.lower()
        return result.returncode != 0 and any(mark in text for mark in _TRANSIENT)

    def _raise_failure(self, result: CommandResult) -> None:
        if self.is_transient(result):
            tail = result.stderr.strip().splitlines()[-1:] or ["timed out"]
            raise SchedulerUnavailable(f"{result.argv[0] if result.argv else 'pbs'}: {tail[0]}")
        raise CommandFailed(result.argv, result.returncode, result.stderr)


# -- pieces (pure functions) -----------------------------------------------------------


def decode_exit_status(value: int) -> ExitStatus | None:
    """OpenPBS ``Exit_status`` as an ExitStatus (None for PBS's own negative codes)."""
    if value < 0:
        return None
    if value <= 255:
        return ExitStatus.from_shell_code(value, source="the job script's exit status")
    signal = value - 256
    if not 1 <= signal <= 127:
        raise ParseError(
            f"Exit_status {value} is neither an exit code nor 256+signal",
            command=QSTAT,
            field="Exit_status",
        )
    return ExitStatus.killed(signal)


def _verdict(
    exit_status: int | None, substate: int | None
) -> tuple[State, ExitStatus | None, Reason | None]:
    deleted = substate == SUBSTATE_TERMINATED
    if exit_status is None:
        if deleted:
            return State.CANCELLED, None, Reason(kind=ReasonKind.CANCELLED, text="deleted (qdel)")
        return State.FAILED, None, Reason.other("finished without an Exit_status")
    status = decode_exit_status(exit_status)
    if exit_status < 0:
        if deleted:
            return State.CANCELLED, None, Reason(kind=ReasonKind.CANCELLED, text="deleted (qdel)")
        state, kind, text = _EXEC_CODES.get(
            exit_status,
            (State.FAILED, ReasonKind.JOB_LAUNCH_FAILURE, f"JOB_EXEC code {exit_status}"),
        )
        return state, None, Reason(kind=kind, text=text)
    assert status is not None  # non-negative values decode
    if deleted:
        return State.CANCELLED, status, Reason(kind=ReasonKind.CANCELLED, text="deleted (qdel)")
    if status.signal is not None:
        return (
            State.FAILED,
            status,
            Reason(kind=ReasonKind.RAISED_SIGNAL, text=status.describe(), signal=status.signal),
        )
    if status.success:
        return State.COMPLETED, status, None
    return State.FAILED, status, Reason(kind=ReasonKind.NON_ZERO_EXIT_CODE, text=status.describe())


def parse_pbs_time(text: str, zone: tzinfo, *, field: str = "time") -> datetime:
    """``Sun Mar  1 12:00:05 2026`` (ctime(3), the server's local time) as aware datetime."""
    parts = text.split()
    if len(parts) != 5 or parts[1] not in _MONTHS:
        raise ParseError("expected a time like 'Sun Mar  1 12:00:05 2026'", field=field, line=text)
    _, month, day, clock, year = parts
    hms = clock.split(":")
    numbers = [day, year, *hms]
    if len(hms) != 3 or not all(n.isascii() and n.isdigit() for n in numbers):
        raise ParseError("expected a time like 'Sun Mar  1 12:00:05 2026'", field=field, line=text)
    try:
        return datetime(
            int(year), _MONTHS[month], int(day), int(hms[0]), int(hms[1]), int(hms[2]), tzinfo=zone
        )
    except ValueError as exc:
        raise ParseError(f"impossible time ({exc})", field=field, line=text) from None


def _walltime(limit: timedelta) -> str:
    total = max(int(-(-limit.total_seconds() // 1)), 1)
    hours, rest = divmod(total, 3600)
    return f"{hours:02d}:{rest // 60:02d}:{rest % 60:02d}"


def _seconds(text: str, field: str) -> float:
    parts = text.split(":")
    if len(parts) != 3 or not all(p.isascii() and p.isdigit() for p in parts):
        raise ParseError("expected HH:MM:SS", command=QSTAT, field=field, line=text)
    hours, minutes, seconds = (int(p) for p in parts)
    return float(hours * 3600 + minutes * 60 + seconds)


def _bytes(text: str, field: str) -> int:
    match = _SIZE.match(text.strip())
    if match is None:
        raise ParseError("expected a size like 5244kb", command=QSTAT, field=field, line=text)
    return int(match.group(1)) * _SIZE_FACTOR[(match.group(2) or "b").lower()]


def _usage(job: Mapping[str, Any], native_id: str) -> tuple[float | None, float | None, int | None]:
    """(walltime, cput, mem) from ``resources_used``, each None when not reported."""
    used = job.get("resources_used")
    if used is None:
        return None, None, None
    if not isinstance(used, dict):
        raise ParseError(
            "expected an object", command=QSTAT, field="resources_used", line=native_id
        )

    def text(key: str) -> str | None:
        value = used.get(key)
        if value is None or isinstance(value, str):
            return value
        raise ParseError("expected a string", command=QSTAT, field=f"resources_used.{key}")

    walltime, cput, mem = text("walltime"), text("cput"), text("mem")
    return (
        None if walltime is None else _seconds(walltime, "resources_used.walltime"),
        None if cput is None else _seconds(cput, "resources_used.cput"),
        None if mem is None else _bytes(mem, "resources_used.mem"),
    )


def _nodes(job: Mapping[str, Any]) -> tuple[str, ...]:
    """``exec_host`` ``node1/0*2+node2/0`` -> ("node1", "node2")."""
    value = job.get("exec_host")
    if not isinstance(value, str):
        return ()
    hosts = [part.split("/")[0] for part in value.split("+") if part.split("/")[0]]
    return tuple(dict.fromkeys(hosts))


def _jobs(stdout: str) -> Mapping[str, Mapping[str, Any]]:
    if not stdout.strip():
        return {}
    try:
        doc = json.loads(stdout)
    except ValueError as exc:
        raise ParseError(f"not JSON ({exc})", command=QSTAT) from None
    if not isinstance(doc, dict):
        raise ParseError("expected a JSON object", command=QSTAT)
    jobs = doc.get("Jobs", {})
    if not isinstance(jobs, dict) or not all(isinstance(v, dict) for v in jobs.values()):
        raise ParseError("expected 'Jobs' to map job ids to objects", command=QSTAT, field="Jobs")
    return jobs


def _find(jobs: Mapping[str, Mapping[str, Any]], native_id: str) -> Mapping[str, Any] | None:
    if native_id in jobs:
        return jobs[native_id]
    # "123" asked, "123.server" listed (or the reverse): the sequence number decides.
    wanted = native_id.split(".", 1)[0]
    matches = [job for key, job in jobs.items() if key.split(".", 1)[0] == wanted]
    return matches[0] if len(matches) == 1 else None


def _string(job: Mapping[str, Any], key: str, native_id: str) -> str:
    value = job.get(key)
    if not isinstance(value, str) or not value:
        raise ParseError("expected a non-empty string", command=QSTAT, field=key, line=native_id)
    return value


def _integer(job: Mapping[str, Any], key: str, native_id: str) -> int | None:
    value = job.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ParseError("expected an integer", command=QSTAT, field=key, line=native_id)
    if isinstance(value, str):
        text = value.strip()
        if not re.fullmatch(r"-?[0-9]{1,12}", text):
            raise ParseError("expected an integer", command=QSTAT, field=key, line=native_id)
        return int(text)
    return value
