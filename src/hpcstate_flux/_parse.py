"""Pure parsers for flux-core's CLI output: ``flux jobs --json``, submit, eventlogs.

Every function returns a value or raises :class:`hpcstate.ParseError` naming the
command, the line and the field. Nothing here reads the clock: ``observed_at`` is an
argument.

The verdict comes from job-list (what ``flux jobs`` shows), never from
``flux job status`` / ``flux.job.result()``: job-list keeps the *first* exception of
the *lowest* severity and sets ``result`` once, at ``clean``; libjob's result.c lets a
later exception overwrite the fatal one.
"""

from __future__ import annotations

import json
import math
import re
import sys
from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime, timezone
from typing import Any, Final

from attrs import evolve, field, frozen

from hpcstate import (
    TERMINAL,
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
    signal_name,
)

from ._ids import parse_jobid

UTC: Final = timezone.utc

# -- states and results ----------------------------------------------------------------

#: libjob/job.h state bits, for job-list dicts that carry numbers (the Python bindings).
STATE_NAMES: Final[Mapping[int, str]] = {
    1: "NEW",
    2: "DEPEND",
    4: "PRIORITY",
    8: "SCHED",
    16: "RUN",
    32: "CLEANUP",
    64: "INACTIVE",
}
#: Active states. CLEANUP is RUNNING: the tasks are done and a waitstatus exists, but
#: the epilog or housekeeping may still fail the job, and job-list has no result yet.
ACTIVE_STATES: Final[Mapping[str, State]] = {
    "NEW": State.QUEUED,
    "DEPEND": State.QUEUED,
    "PRIORITY": State.QUEUED,
    "SCHED": State.QUEUED,
    "RUN": State.RUNNING,
    "CLEANUP": State.RUNNING,
}
RESULT_NAMES: Final[Mapping[int, str]] = {1: "COMPLETED", 2: "FAILED", 4: "CANCELED", 8: "TIMEOUT"}
#: An INACTIVE job's result -> hpcstate's verdict (job-list's derivation is authoritative).
RESULTS: Final[Mapping[str, State]] = {
    "COMPLETED": State.COMPLETED,
    "FAILED": State.FAILED,
    "CANCELED": State.CANCELLED,
    "CANCELLED": State.CANCELLED,  # tolerated spelling; flux-core prints CANCELED
    "TIMEOUT": State.TIMEOUT,
}

JOBS_COMMAND: Final = "flux jobs --json"

# Messages that mean "the instance could not be reached right now": retry, no verdict.
# flux_open()/flux.Flux() failures ("flux-job: flux_open: ...", "flux-jobs: ERROR: Unable
# to connect to Flux: broker socket /run/flux/local was not found"), connection errnos as
# the CLI and job-list's per-id "rpc: <strerror>" print them, and ENOSYS, which a broker
# returns while job-list/job-info are not loaded (instance starting or shutting down).
TRANSIENT_PATTERNS: Final = (
    "unable to connect to flux",
    "flux_open",
    "broker socket",
    "connection reset",
    "connection refused",
    "connection timed out",
    "broken pipe",
    "resource temporarily unavailable",
    "no route to host",
    "network is unreachable",
    "host is down",
    "function not implemented",
    "lost connection",
    "interrupted system call",
    "timer expired",
)


def looks_transient(text: str) -> bool:
    """True when ``text`` says the instance could not answer *now* (retry later)."""
    lowered = text.lower()
    return any(pattern in lowered for pattern in TRANSIENT_PATTERNS)


# -- small readers ---------------------------------------------------------------------

_FLOAT_MAX: Final = int(sys.float_info.max)


def _shorten(value: int) -> str:
    """An int for an error message: itself when short, else its size (str() of an int
    over 4300 digits raises ValueError)."""
    if value.bit_length() <= 64:
        return str(value)
    return f"{'-' if value < 0 else ''}an integer of {value.bit_length()} bits"


def _show(value: Any) -> str:
    """``repr(value)`` for an error message, bounded, and total: repr() raises
    ValueError on an int over 4300 digits (also nested in a list or dict)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return _shorten(value)
    try:
        text = repr(value)
    except (ValueError, RecursionError):
        return f"a {type(value).__name__} that cannot be shown"
    return text if len(text) <= 200 else text[:200] + "..."


def _number(value: Any, *, command: str, field_name: str) -> float | None:
    """A finite JSON number, or None when absent. bool is not a number here."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ParseError(
            f"expected a number, got {_show(value)}", command=command, field=field_name
        )
    if isinstance(value, int) and not -_FLOAT_MAX <= value <= _FLOAT_MAX:
        # math.isfinite() on an int too large for a float raises OverflowError.
        raise ParseError(
            f"number out of range: {_shorten(value)}", command=command, field=field_name
        )
    if not math.isfinite(value):
        raise ParseError(
            f"expected a finite number, got {_show(value)}", command=command, field=field_name
        )
    return value


def _integer(value: Any, *, command: str, field_name: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ParseError(
            f"expected an integer, got {_show(value)}", command=command, field=field_name
        )
    return value


def _text(value: Any, *, command: str, field_name: str) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise ParseError(
            f"expected a string, got {_show(value)}", command=command, field=field_name
        )
    return value


def epoch_time(value: Any, *, command: str, field_name: str) -> datetime | None:
    """A Flux timestamp (float seconds since the epoch, UTC) as an aware datetime.

    Flux uses 0.0 for "not set" in some raw job-list records; that is None here.
    """
    seconds = _number(value, command=command, field_name=field_name)
    if seconds is None or seconds == 0:
        return None
    try:
        return datetime.fromtimestamp(seconds, tz=UTC)
    except (OverflowError, OSError, ValueError):
        raise ParseError(
            f"timestamp out of range: {seconds!r}", command=command, field=field_name
        ) from None


_HOSTLIST_ENTRY: Final = re.compile(r"\A([^\[\]]*)\[([^\[\]]+)\]([^\[\]]*)\Z")
_RANGE: Final = re.compile(r"\A([0-9]{1,9})(?:-([0-9]{1,9}))?\Z")
_MAX_HOSTS: Final = 65536


def _split_top_level(text: str) -> list[str]:
    parts: list[str] = []
    current: list[str] = []
    depth = 0
    for char in text:
        if char == "[":
            depth += 1
        elif char == "]":
            depth -= 1
        if char == "," and depth == 0:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    return parts


def expand_hostlist(text: str) -> tuple[str, ...]:
    """RFC 29 hostlist (``vm``, ``node[1-3,7]``, ``r[01-02]x``) -> host names.

    Total: a list it cannot read (or an absurdly large one) is kept as the one raw
    string rather than failing the whole poll over a cosmetic field.
    """
    stripped = text.strip()
    if not stripped:
        return ()
    hosts: list[str] = []
    for entry in _split_top_level(stripped):
        if "[" not in entry and "]" not in entry:
            if not entry:
                return (stripped,)
            hosts.append(entry)
            continue
        match = _HOSTLIST_ENTRY.match(entry)
        if match is None:
            return (stripped,)
        prefix, ranges, suffix = match.groups()
        for part in ranges.split(","):
            bounds = _RANGE.match(part)
            if bounds is None:
                return (stripped,)
            low_text, high_text = bounds.group(1), bounds.group(2) or bounds.group(1)
            low, high = int(low_text), int(high_text)
            if high < low or len(hosts) + high - low + 1 > _MAX_HOSTS:
                return (stripped,)
            width = len(low_text)
            hosts.extend(f"{prefix}{number:0{width}d}{suffix}" for number in range(low, high + 1))
    return tuple(hosts)


# -- one job as job-list reports it ----------------------------------------------------


@frozen(kw_only=True)
class FluxException:
    """job-list's ``exception`` object: the first exception of the lowest severity."""

    occurred: bool = False
    severity: int | None = None
    type: str = ""
    note: str = ""

    @property
    def fatal(self) -> bool:
        """Only severity 0 ends a job; an epilog (2) or a warning (4) does not."""
        return self.occurred and self.severity == 0

    def describe(self) -> str:
        text = f"exception type={self.type} severity={self.severity}"
        return f"{text} note={self.note!r}" if self.note else text


@frozen(kw_only=True)
class FluxJob:
    """The fields of one job-list record that hpcstate uses. Absent keys are None."""

    id: int
    state: str
    result: str | None = None
    waitstatus: int | None = None
    exception: FluxException = field(factory=FluxException)
    name: str = ""
    ntasks: int | None = None
    nodelist: str = ""
    t_submit: datetime | None = None
    t_run: datetime | None = None
    t_cleanup: datetime | None = None
    t_inactive: datetime | None = None
    runtime: float | None = None
    #: The job's own ``FLUX_URI`` (its ``uri`` memo): set when the job is itself a Flux
    #: instance (``flux batch``, ``flux alloc``), whose one task is that instance's broker.
    uri: str = ""

    @property
    def inactive(self) -> bool:
        return self.state == "INACTIVE"

    @property
    def instance(self) -> bool:
        return bool(self.uri)


def _state_name(value: Any, *, command: str) -> str:
    if isinstance(value, str):
        name = value.upper()
        if name in ACTIVE_STATES or name == "INACTIVE":
            return name
    elif isinstance(value, int) and not isinstance(value, bool) and value in STATE_NAMES:
        return STATE_NAMES[value]
    raise ParseError(f"unknown Flux job state {_show(value)}", command=command, field="state")


def _result_name(value: Any, *, command: str) -> str | None:
    if value is None or value == "":
        return None
    if isinstance(value, str) and value.upper() in RESULTS:
        return value.upper()
    if isinstance(value, int) and not isinstance(value, bool) and value in RESULT_NAMES:
        return RESULT_NAMES[value]
    raise ParseError(f"unknown Flux job result {_show(value)}", command=command, field="result")


def _exception(job: Mapping[str, Any], *, command: str) -> FluxException:
    raw = job.get("exception")
    if isinstance(raw, Mapping):  # flux jobs --json: a nested object
        occurred, severity = raw.get("occurred"), raw.get("severity")
        kind, note = raw.get("type"), raw.get("note")
    elif raw is None:  # raw job-list records: flat exception_* keys
        occurred, severity = job.get("exception_occurred"), job.get("exception_severity")
        kind, note = job.get("exception_type"), job.get("exception_note")
    else:
        raise ParseError(
            f"expected an object, got {_show(raw)}", command=command, field="exception"
        )
    if occurred is None:
        occurred = False
    if not isinstance(occurred, bool):
        raise ParseError(
            f"expected true/false, got {_show(occurred)}",
            command=command,
            field="exception.occurred",
        )
    level = _integer(severity, command=command, field_name="exception.severity")
    if level is not None and not 0 <= level <= 7:
        raise ParseError(
            f"exception severity must be 0..7, got {level}",
            command=command,
            field="exception.severity",
        )
    return FluxException(
        occurred=occurred,
        severity=level,
        type=_text(kind, command=command, field_name="exception.type"),
        note=_text(note, command=command, field_name="exception.note"),
    )


def parse_job(job: Any, *, command: str = JOBS_COMMAND) -> FluxJob:
    """One job-list record (``flux jobs --json`` object, or a raw job-list dict)."""
    if not isinstance(job, Mapping):
        raise ParseError(f"expected a job object, got {type(job).__name__}", command=command)
    raw_id = job.get("id")
    if isinstance(raw_id, str):
        jobid = parse_jobid(raw_id, command=command)
    else:
        number = _integer(raw_id, command=command, field_name="id")
        if number is None or not 0 <= number < 2**64:
            raise ParseError(
                f"missing or invalid job id {_show(raw_id)}", command=command, field="id"
            )
        jobid = number
    ntasks = _integer(job.get("ntasks"), command=command, field_name="ntasks")
    runtime = _number(job.get("runtime"), command=command, field_name="runtime")
    waitstatus = _integer(job.get("waitstatus"), command=command, field_name="waitstatus")
    return FluxJob(
        id=jobid,
        state=_state_name(job.get("state"), command=command),
        result=_result_name(job.get("result"), command=command),
        waitstatus=waitstatus,
        exception=_exception(job, command=command),
        name=_text(job.get("name"), command=command, field_name="name"),
        ntasks=ntasks,
        nodelist=_text(job.get("nodelist"), command=command, field_name="nodelist"),
        t_submit=epoch_time(job.get("t_submit"), command=command, field_name="t_submit"),
        t_run=epoch_time(job.get("t_run"), command=command, field_name="t_run"),
        t_cleanup=epoch_time(job.get("t_cleanup"), command=command, field_name="t_cleanup"),
        t_inactive=epoch_time(job.get("t_inactive"), command=command, field_name="t_inactive"),
        runtime=runtime if runtime is not None and runtime >= 0 else None,
        uri=_text(job.get("uri"), command=command, field_name="uri"),
    )


def iter_json_documents(text: str, *, command: str) -> Iterator[Any]:
    """Every JSON document in ``text`` (``flux jobs`` run by xargs prints several)."""
    decoder = json.JSONDecoder()
    index, length = 0, len(text)
    while True:
        while index < length and text[index] in " \t\r\n":
            index += 1
        if index >= length:
            return
        try:
            document, index = decoder.raw_decode(text, index)
        except json.JSONDecodeError as exc:
            line_no = text.count("\n", 0, exc.pos) + 1
            lines = text.splitlines()
            line = lines[line_no - 1] if line_no <= len(lines) else text[exc.pos : exc.pos + 200]
            raise ParseError(
                f"not JSON: {exc.msg}", command=command, line_no=line_no, line=line
            ) from None
        except ValueError as exc:  # a number int() refuses to read (over 4300 digits)
            raise ParseError(f"not JSON: {exc}", command=command, line=text[index:][:200]) from None
        except RecursionError:  # absurdly deep nesting: not something flux prints
            raise ParseError("JSON nested too deeply", command=command) from None
        yield document


def parse_jobs_json(stdout: str, *, command: str = JOBS_COMMAND) -> list[FluxJob]:
    """``flux jobs --json``: one object for one id, ``{"jobs": [...]}`` otherwise."""
    jobs: list[FluxJob] = []
    for document in iter_json_documents(stdout, command=command):
        if isinstance(document, Mapping) and "jobs" in document and "id" not in document:
            listed = document["jobs"]
            if not isinstance(listed, list):
                raise ParseError("expected a list", command=command, field="jobs")
            jobs.extend(parse_job(job, command=command) for job in listed)
        else:
            jobs.append(parse_job(document, command=command))
    return jobs


_UNKNOWN_JOB: Final = re.compile(r"\AJobID (\S+) unknown\s*\Z")


def unknown_job_ids(stderr: str) -> dict[int, str]:
    """Ids that ``flux jobs ID...`` reported as unknown (purged, or never in this instance),
    with the line that said so."""
    unknown: dict[int, str] = {}
    for line in stderr.splitlines():
        match = _UNKNOWN_JOB.match(line.strip())
        if match is None:
            continue
        try:
            unknown[parse_jobid(match.group(1))] = line.strip()
        except ParseError:
            continue
    return unknown


# -- exit status and reason --------------------------------------------------------------


def instance_ambiguity(code: int, *, broker_exited: bool = False) -> str:
    """Why a Flux instance's (``flux batch``/``flux alloc``) exit code ``code`` > 128
    stays ambiguous: it is its broker's exit code, and the broker turns a signal that
    killed the script into an exit code 128+N (measured on flux-core 0.88.0).
    ``broker_exited``: the exec eventlog showed the broker exited (was not signalled)."""
    signal = f"{signal_name(code - 128)} ({code - 128})"
    if broker_exited:
        how = (
            f"the broker exited {code} (the exec eventlog): a script that ran 'exit {code}' "
            f"and a script killed by {signal} both make it do so"
        )
    else:
        how = (
            f"a script that ran 'exit {code}', a script killed by {signal} (the broker "
            f"then exits {code}) and a broker killed by {signal} all give it"
        )
    return (
        f"the batch job's exit code {code} is its Flux instance's broker's: {how}; no "
        "record hpcstate reads says which (the broker's log line in the job's output "
        "file does)"
    )


def exit_from_waitstatus(
    waitstatus: int, *, command: str = JOBS_COMMAND, instance: bool = False
) -> ExitStatus:
    """Decode job-list's ``waitstatus``: the raw wait status of the job *shell*.

    A signalled shell is exact. An exited shell's code is the largest task code, where
    a task killed by signal N counts as 128+N: above 128 it stays an exit code, marked
    ambiguous, until a lossless source (the exec eventlog) says which it was. For a
    job that is a Flux ``instance`` the one task is the instance's broker, which itself
    exits 128+N when the batch script dies of signal N: its ambiguity says so.
    """
    try:
        status = ExitStatus.from_wait_status(waitstatus)
    except ParseError as exc:
        raise ParseError(str(exc), command=command, field="waitstatus") from None
    if status.code is None:
        return status
    shell = ExitStatus.from_shell_code(status.code, source="the job shell's exit code")
    if instance and shell.ambiguous is not None:
        return ExitStatus.exited(status.code, ambiguous=instance_ambiguity(status.code))
    return shell


def exit_reason(exit_status: ExitStatus | None) -> Reason | None:
    """The reason a job with no fatal exception failed: its exit status."""
    if exit_status is None:
        return None
    if exit_status.signal is not None:
        return Reason(
            kind=ReasonKind.RAISED_SIGNAL, text=exit_status.describe(), signal=exit_status.signal
        )
    if exit_status.code:
        text = f"exit {exit_status.code}"
        if exit_status.ambiguous and exit_status.code > 128:
            text += f" (or {signal_name(exit_status.code - 128)}: ambiguous)"
        return Reason(kind=ReasonKind.NON_ZERO_EXIT_CODE, text=text)
    return None


#: The job shell's note on an ``exec`` exception when a task could not be started
#: (flux-core 0.88.0: "task 0 (host node1): start failed: CMD: No such file or directory").
_START_FAILED: Final = re.compile(r"\bstart failed\b")


def exception_reason(exception: FluxException) -> Reason:
    """A fatal exception as a Reason, the exception's note as its text and its type as
    its detail: ``cancel`` is CANCELLED, ``timeout`` TIME_LIMIT, an ``exec`` exception
    for a task that could not start JOB_LAUNCH_FAILURE, any other type EXCEPTION."""
    if exception.type == "cancel":
        return Reason(kind=ReasonKind.CANCELLED, text=exception.note, detail="cancel")
    if exception.type == "timeout":
        return Reason(kind=ReasonKind.TIME_LIMIT, text=exception.note, detail="timeout")
    if exception.type == "exec" and _START_FAILED.search(exception.note):
        return Reason(kind=ReasonKind.JOB_LAUNCH_FAILURE, text=exception.note, detail="exec")
    return Reason(kind=ReasonKind.EXCEPTION, text=exception.note, detail=exception.type)


def _inactive_reason(job: FluxJob, state: State, exit_status: ExitStatus | None) -> Reason | None:
    """An INACTIVE job's reason, from its final record only (job-list's result, its
    fatal exception, its exit status): never anything said while it was pending."""
    if job.exception.fatal:
        return exception_reason(job.exception)
    if state is State.CANCELLED:
        return Reason(kind=ReasonKind.CANCELLED)
    if state is State.TIMEOUT:
        return Reason(kind=ReasonKind.TIME_LIMIT)
    if state is State.COMPLETED:
        return Reason(kind=ReasonKind.NONE)
    return exit_reason(exit_status)


def job_observation(job: FluxJob, *, native_id: str, observed_at: datetime) -> Observation:
    """What job-list says of one job.

    Active jobs come from the queue side (never final). An INACTIVE job is a final,
    authoritative record (job-list serves queue and history: there is no settling gap).
    """
    nodes = expand_hostlist(job.nodelist)
    if not job.inactive:
        state = ACTIVE_STATES[job.state]
        detail = f"flux job-list: {job.state}"
        if job.state == "CLEANUP":
            detail += " (tasks ended; epilog or housekeeping still running, no result yet)"
        running = state is State.RUNNING
        return Observation(
            native_id=native_id,
            source=Source.QUEUE,
            observed_at=observed_at,
            state=state,
            stats=JobStats(
                submitted_at=job.t_submit,
                started_at=job.t_run if running else None,
                nodes=nodes if running else (),
            ),
            detail=detail,
        )
    if job.result is None:
        raise ParseError(
            f"job {job.id} is INACTIVE but has no result", command=JOBS_COMMAND, field="result"
        )
    state = RESULTS[job.result]
    exit_status = (
        None
        if job.waitstatus is None
        else exit_from_waitstatus(job.waitstatus, instance=job.instance)
    )
    details = [f"flux job-list: INACTIVE {job.result}"]
    if job.instance:
        details.append("a Flux instance (flux batch/alloc): its exit status is its broker's")
    if job.waitstatus is not None:
        details.append(f"waitstatus {job.waitstatus}")
    else:
        details.append("never ran (no waitstatus)")
    if job.exception.occurred:
        kind = "fatal" if job.exception.fatal else "non-fatal"
        details.append(f"{kind} {job.exception.describe()}")
    return Observation(
        native_id=native_id,
        source=Source.ACCOUNTING,
        observed_at=observed_at,
        state=state,
        final=True,
        stats=JobStats(
            exit=exit_status,
            exit_source=Source.ACCOUNTING if exit_status is not None else None,
            reason=_inactive_reason(job, state, exit_status),
            submitted_at=job.t_submit,
            started_at=job.t_run,
            finished_at=job.t_cleanup or job.t_inactive,
            elapsed_s=job.runtime if job.t_run is not None else None,
            nodes=nodes,
        ),
        detail="; ".join(details),
    )


class UnansweredJobs(CommandFailed):
    """``flux jobs`` failed for some asked ids: neither a record nor "unknown" for them.

    job-list serves queue and history alike, so an id it did not answer for is not
    "no longer queued": there is no answer for it at all, and never a verdict.
    """

    def __init__(
        self,
        argv: Sequence[str],
        returncode: int | None,
        stderr: str,
        *,
        native_ids: Sequence[str],
        said: str,
    ) -> None:
        super().__init__(argv, returncode, stderr)
        self.native_ids = tuple(native_ids)
        self.args = (
            f"{' '.join(self.argv[:3])} exited {returncode} without a record of job(s) "
            f"{', '.join(self.native_ids)} and without calling them unknown ({said}): no "
            "answer for them, not a verdict",
        )


#: How flux-jobs reports a failed job-list ``list-id`` that is not ENOENT ("unknown"):
#: ``rpc: <strerror>`` (flux.job.list), possibly behind a ``flux-jobs: ERROR:`` prefix.
_RPC_ERROR: Final = re.compile(r"\A(?:flux-jobs: ERROR: )?rpc: \S")


def _unanswered_error(
    native_ids: Sequence[str],
    *,
    stderr: str,
    argv: Sequence[str],
    returncode: int | None,
    command: str,
) -> Exception:
    """What to raise when ``flux jobs`` gave some asked ids no answer at all."""
    said_lines = [
        line.strip()
        for line in stderr.splitlines()
        if line.strip() and _UNKNOWN_JOB.match(line.strip()) is None
    ]
    said = "; ".join(said_lines[-3:]) if said_lines else "nothing on stderr"
    names = ", ".join(native_ids)
    if any(looks_transient(line) for line in said_lines):
        return SchedulerUnavailable(
            f"{command}: job-list could not answer for job(s) {names} now ({said}); "
            "retry later, no verdict"
        )
    if returncode or any(_RPC_ERROR.match(line) for line in said_lines):
        return UnansweredJobs(argv, returncode, stderr, native_ids=native_ids, said=said)
    # Exit 0 and no error line: flux-jobs always answers each id, so this output is
    # not an answer we can read.
    return ParseError(
        f"no record of job(s) {names} and no 'JobID ... unknown' for them ({said})",
        command=command,
        field="id",
    )


def queue_observations(
    jobs: Sequence[FluxJob],
    *,
    native_ids: Sequence[str],
    stderr: str,
    observed_at: datetime,
    command: str = JOBS_COMMAND,
    argv: Sequence[str] = ("flux", "jobs", "--json"),
    returncode: int | None = 0,
) -> list[Observation]:
    """One observation per asked id, in the asked order.

    An id that ``flux jobs`` reports unknown is UNKNOWN (purged, or its instance is
    gone: nobody will ever know its outcome; Flux keeps no other record). Every other
    id must be listed: an id job-list failed to answer for (``rpc: <error>``) has no
    answer, which is never absence. It raises SchedulerUnavailable when the error is
    transient, UnansweredJobs (a CommandFailed naming the ids) when job-list refused or
    the command failed, and ParseError when the output is silent about it.
    """
    by_id = {job.id: job for job in jobs}
    unknown = unknown_job_ids(stderr)
    asked = [(native, parse_jobid(native, command=command)) for native in native_ids]
    unanswered = [native for native, jobid in asked if jobid not in by_id and jobid not in unknown]
    if unanswered:
        raise _unanswered_error(
            unanswered, stderr=stderr, argv=argv, returncode=returncode, command=command
        )
    observations: list[Observation] = []
    for native, jobid in asked:
        job = by_id.get(jobid)
        if job is not None:
            observations.append(job_observation(job, native_id=native, observed_at=observed_at))
        else:
            observations.append(
                Observation(
                    native_id=native,
                    source=Source.ACCOUNTING,
                    observed_at=observed_at,
                    absence=Absence.UNKNOWN,
                    detail=(
                        f"flux job-list does not know job {jobid} ({unknown[jobid]}): it was "
                        "purged or its instance is gone (Flux keeps no other record); its "
                        "outcome is lost"
                    ),
                )
            )
    return observations


# -- eventlogs: the lossless exit of the first task, the fatal exception, OOM kills ----


@frozen(kw_only=True)
class EventlogEntry:
    """One RFC 18 eventlog entry."""

    name: str
    timestamp: float | None = None
    context: Mapping[str, Any] = field(factory=dict)


def parse_eventlog_entry(line: str, *, command: str = "flux job info") -> EventlogEntry:
    """One raw eventlog line: ``{"timestamp":..., "name":..., "context":{...}}``."""
    try:
        raw = json.loads(line)
    except (ValueError, RecursionError):
        raise ParseError("eventlog entry is not JSON", command=command, line=line) from None
    if not isinstance(raw, Mapping) or not isinstance(raw.get("name"), str):
        raise ParseError("eventlog entry has no name", command=command, line=line)
    context = raw.get("context", {})
    if not isinstance(context, Mapping):
        raise ParseError("eventlog context is not an object", command=command, line=line)
    timestamp = _number(raw.get("timestamp"), command=command, field_name="timestamp")
    return EventlogEntry(name=raw["name"], timestamp=timestamp, context=dict(context))


@frozen(kw_only=True)
class TaskExit:
    """``shell.task-exit``: how one task ended, losslessly (first task to exit only)."""

    rank: int | None
    exit: ExitStatus

    def describe(self) -> str:
        where = f"rank {self.rank}" if self.rank is not None else "a task"
        return f"{where}: {self.exit.describe()}"


def task_exit(entry: EventlogEntry, *, command: str = "flux job info") -> TaskExit:
    """Decode a ``shell.task-exit`` context (``wait_status``, ``signaled``, ``exitcode``)."""
    context = entry.context
    rank = _integer(context.get("rank"), command=command, field_name="rank")
    wait_status = _integer(context.get("wait_status"), command=command, field_name="wait_status")
    if wait_status is not None:
        try:
            return TaskExit(rank=rank, exit=ExitStatus.from_wait_status(wait_status))
        except ParseError as exc:
            raise ParseError(str(exc), command=command, field="wait_status") from None
    signaled = _integer(context.get("signaled"), command=command, field_name="signaled")
    code = _integer(context.get("exitcode"), command=command, field_name="exitcode")
    if signaled and 1 <= signaled <= 127:
        return TaskExit(rank=rank, exit=ExitStatus.killed(signaled))
    if code is not None and 0 <= code <= 255:
        return TaskExit(rank=rank, exit=ExitStatus.exited(code))
    raise ParseError("shell.task-exit has no usable exit status", command=command, field="exitcode")


_OOM_MESSAGE: Final = re.compile(r"out of memory", re.IGNORECASE)


@frozen(kw_only=True)
class JobEvidence:
    """What the eventlogs of one inactive job add to job-list's record."""

    jobid: int
    fetched: frozenset[str] = frozenset()  # eventlog kinds read without error
    #: kinds whose read ran to its end, with or without error: an inactive job's
    #: eventlog that could not be read (not a transient error) will not be readable later
    answered: frozenset[str] = frozenset()
    task_exits: tuple[TaskExit, ...] = ()
    exception_exit: ExitStatus | None = None  # wait_status of the first fatal exception
    oom_messages: tuple[str, ...] = ()
    errors: tuple[str, ...] = ()
    #: the main eventlog's ``memo`` ``uri``: the job is itself a Flux instance
    #: (flux batch/alloc), so its task exits are its broker's, not the script's
    instance_uri: str = ""

    def merged(self, other: JobEvidence) -> JobEvidence:
        return JobEvidence(
            jobid=self.jobid,
            fetched=self.fetched | other.fetched,
            answered=self.answered | other.answered,
            task_exits=self.task_exits + other.task_exits,
            exception_exit=self.exception_exit or other.exception_exit,
            oom_messages=self.oom_messages + other.oom_messages,
            errors=self.errors + other.errors,
            instance_uri=self.instance_uri or other.instance_uri,
        )


#: Which eventlog each evidence kind reads (``flux job info ID KEY``).
EVIDENCE_KEYS: Final[Mapping[str, str]] = {
    "exec": "guest.exec.eventlog",  # shell.task-exit: lossless, first task only
    "main": "eventlog",  # the fatal exception's wait_status; an instance's uri memo
    "output": "guest.output",  # the shell oom plugin's log lines
}
SECTION_BEGIN: Final = "@@hpcstate-begin"
SECTION_END: Final = "@@hpcstate-end"
#: A shell's $? (0-255): ASCII digits only (str.isdecimal() takes "٣"), and short
#: (int() refuses over 4300 digits with a bare ValueError).
_EXIT_STATUS: Final = re.compile(r"\A[0-9]{1,3}\Z")


def _section_evidence(
    kind: str, jobid: int, lines: Sequence[str], rc: int | None, *, command: str
) -> JobEvidence:
    task_exits: list[TaskExit] = []
    exception_exit: ExitStatus | None = None
    fatal_seen = False
    oom: list[str] = []
    errors: list[str] = []
    instance_uri = ""
    for line in lines:
        if not line.startswith("{"):
            errors.append(f"{EVIDENCE_KEYS[kind]}: {line}")
            continue
        try:
            entry = parse_eventlog_entry(line, command=command)
        except ParseError as exc:
            errors.append(f"{EVIDENCE_KEYS[kind]}: {exc}")
            continue
        context = entry.context
        try:
            if kind == "exec" and entry.name == "shell.task-exit":
                task_exits.append(task_exit(entry, command=command))
            elif kind == "main" and entry.name == "exception" and not fatal_seen:
                severity = _integer(context.get("severity"), command=command, field_name="severity")
                if severity == 0:
                    fatal_seen = True
                    status = _integer(
                        context.get("wait_status"), command=command, field_name="wait_status"
                    )
                    if status is not None:
                        exception_exit = ExitStatus.from_wait_status(status)
            elif kind == "main" and entry.name == "memo" and isinstance(context.get("uri"), str):
                instance_uri = instance_uri or context["uri"]
            elif kind == "output" and entry.name == "log" and context.get("component") == "oom":
                message = context.get("message")
                if isinstance(message, str) and _OOM_MESSAGE.search(message):
                    oom.append(message)
        except ParseError as exc:
            errors.append(f"{EVIDENCE_KEYS[kind]}: {exc}")
    # `output` is piped through grep, whose status says "matched or not": not an error.
    if kind != "output" and rc not in (0, None) and not errors:
        errors.append(f"flux job info {jobid} {EVIDENCE_KEYS[kind]} exited {rc}")
    return JobEvidence(
        jobid=jobid,
        fetched=frozenset() if errors else frozenset({kind}),
        answered=frozenset() if rc is None else frozenset({kind}),
        task_exits=tuple(task_exits),
        exception_exit=exception_exit,
        oom_messages=tuple(oom),
        errors=tuple(errors),
        instance_uri=instance_uri,
    )


def parse_evidence(stdout: str, *, command: str = "flux job info") -> dict[int, JobEvidence]:
    """The output of the batched eventlog script (see ``FluxDialect.evidence_command``).

    Sections look like ``@@hpcstate-begin KIND ID`` ... ``@@hpcstate-end KIND ID RC``;
    their lines are eventlog JSON or error text. Per-job problems are kept as errors in
    the evidence (the exit stays ambiguous), never raised: they cost precision, not truth.
    """
    evidence: dict[int, JobEvidence] = {}
    current: tuple[str, int] | None = None
    body: list[str] = []
    for line_no, raw_line in enumerate(stdout.splitlines(), start=1):
        line = raw_line.strip()
        if not line:
            continue
        words = line.split()
        if words[0] == SECTION_BEGIN:
            if current is not None or len(words) != 3 or words[1] not in EVIDENCE_KEYS:
                raise ParseError(
                    "malformed section start", command=command, line_no=line_no, line=line
                )
            current = (words[1], parse_jobid(words[2], command=command))
            body = []
        elif words[0] == SECTION_END:
            if current is None or len(words) != 4 or _EXIT_STATUS.match(words[3]) is None:
                raise ParseError(
                    "malformed section end", command=command, line_no=line_no, line=line
                )
            kind, jobid = current
            section = _section_evidence(kind, jobid, body, int(words[3]), command=command)
            previous = evidence.get(jobid)
            evidence[jobid] = section if previous is None else previous.merged(section)
            current = None
        elif current is None:
            raise ParseError(
                "text outside any section", command=command, line_no=line_no, line=line
            )
        else:
            body.append(line)
    if current is not None:
        kind, jobid = current
        truncated = _section_evidence(kind, jobid, body, None, command=command)
        truncated = evolve(
            truncated, fetched=frozenset(), errors=(*truncated.errors, "output ended mid-section")
        )
        previous = evidence.get(current[1])
        evidence[jobid] = truncated if previous is None else previous.merged(truncated)
    return evidence


def evidence_kinds(observation: Observation) -> frozenset[str]:
    """Which eventlogs could improve this observation (empty: job-list said it all).

    Only final verdicts of jobs that ran (they have an exit status) are enriched: an
    exit code above 128 needs the exec eventlog (and, after a fatal non-cancel,
    non-timeout exception, the main eventlog for its wait_status); every FAILED job is
    checked for an OOM kill, whatever its exit code: the oom plugin's log line in the
    output eventlog is the only trace of one, and a child killed for memory can leave
    the job any code.
    """
    if not observation.final or observation.state not in TERMINAL:
        return frozenset()
    status = observation.stats.exit
    if status is None:
        return frozenset()
    kinds: set[str] = set()
    if status.ambiguous and status.code is not None:
        kinds.add("exec")
        reason = observation.stats.reason
        if reason is not None and reason.kind in (
            ReasonKind.EXCEPTION,
            ReasonKind.JOB_LAUNCH_FAILURE,
        ):
            kinds.add("main")
    if observation.state is State.FAILED:
        kinds.add("output")
    return frozenset(kinds)


def refine_exit(code: int, evidence: JobEvidence, current: ExitStatus) -> ExitStatus:
    """The job shell's exit code ``code`` (> 128) made exact where a lossless record
    explains it; otherwise still ambiguous, saying what is known. Never invents."""
    # A Flux instance (job-list's uri, or the main eventlog's uri memo): its task is the
    # broker, which EXITS 128+N when the script dies of signal N. A record of the broker
    # exiting explains nothing more; one of the broker being killed is lossless.
    instance = bool(evidence.instance_uri) or current.ambiguous == instance_ambiguity(code)
    broker_exited = ExitStatus.exited(code, ambiguous=instance_ambiguity(code, broker_exited=True))
    exception_exit = evidence.exception_exit
    if exception_exit is not None and exception_exit.shell_code == code:
        return broker_exited if instance and exception_exit.signal is None else exception_exit
    matching = [task for task in evidence.task_exits if task.exit.shell_code == code]
    outcomes = {(task.exit.code, task.exit.signal) for task in matching}
    if len(outcomes) == 1:
        found = matching[0].exit
        return broker_exited if instance and found.signal is None else found
    signal = signal_name(code - 128) if 128 < code <= 128 + 64 else "a signal"
    if len(outcomes) > 1:
        said = ", ".join(task.describe() for task in matching)
        return ExitStatus.exited(
            code,
            ambiguous=(
                f"the job shell's exit code {code} was set by tasks that ended differently "
                f"({said}); which one it reports is not recorded"
            ),
        )
    if "exec" in evidence.fetched and evidence.task_exits:
        first = "; ".join(task.describe() for task in evidence.task_exits)
        return ExitStatus.exited(
            code,
            ambiguous=(
                f"the job shell's exit code {code} may be a plain exit {code} or a task killed "
                f"by {signal}; the exec eventlog records only the first task to exit ({first}), "
                f"not the task that set {code}"
            ),
        )
    return current


def apply_evidence(observation: Observation, evidence: JobEvidence) -> Observation:
    """An inactive job's observation with what its eventlogs say added."""
    stats = observation.stats
    status = stats.exit
    state = observation.state
    reason = stats.reason
    details = [observation.detail] if observation.detail else []
    if status is not None and status.ambiguous and status.code is not None:
        status = refine_exit(status.code, evidence, status)
        if reason is not None and reason.kind in (
            ReasonKind.NON_ZERO_EXIT_CODE,
            ReasonKind.RAISED_SIGNAL,
        ):
            reason = exit_reason(status)
    if evidence.oom_messages:
        details.append("oom plugin: " + " ".join(evidence.oom_messages))
        if state is State.FAILED:
            state = State.OUT_OF_MEMORY
            if reason is not None and reason.kind is ReasonKind.EXCEPTION:
                details.append(f"fatal exception {reason.detail}: {reason.text}")
            reason = Reason(kind=ReasonKind.OUT_OF_MEMORY, text=evidence.oom_messages[0])
    if evidence.errors:
        details.append("eventlog: " + "; ".join(evidence.errors))
    return evolve(
        observation,
        state=state,
        stats=evolve(stats, exit=status, reason=reason),
        detail="; ".join(details),
    )


# -- submit and find -------------------------------------------------------------------


def parse_submit_output(stdout: str, *, command: str = "flux submit") -> int:
    """``flux submit``/``flux batch`` print the new job's id (F58) on one line."""
    lines = [line.strip() for line in stdout.splitlines() if line.strip()]
    if len(lines) != 1:
        raise ParseError(
            f"expected exactly one job id line, got {len(lines)}",
            command=command,
            line=stdout[:200],
        )
    return parse_jobid(lines[0], command=command)


def parse_tagged_jobs(stdout: str, tag: str, *, command: str = "flux python") -> list[int]:
    """The find-by-tag script's JSON lines ``{"id": N, "tag": VALUE}`` -> ids whose
    ``attributes.user.hpcstate_tag`` equals ``tag``, oldest first."""
    found: list[int] = []
    for line_no, line in enumerate(stdout.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except (ValueError, RecursionError):
            raise ParseError(
                "expected a JSON line", command=command, line_no=line_no, line=line
            ) from None
        if not isinstance(record, Mapping):
            raise ParseError("expected a JSON object", command=command, line_no=line_no, line=line)
        jobid = _integer(record.get("id"), command=command, field_name="id")
        if jobid is None or not 0 <= jobid < 2**64:
            raise ParseError("missing job id", command=command, line_no=line_no, line=line)
        if record.get("tag") == tag:
            found.append(jobid)
    return sorted(found)
