"""Pure parsers for flux-core's CLI output: text in, rows out.

``flux jobs --json`` -> :class:`FluxJob` rows, the batched eventlog script ->
:class:`JobEvidence` per job, submit -> a job id, the tag lookup -> ids. Every function
returns a value or raises :class:`hpcstate.ParseError` naming the command, the line and
the field. Nothing here reads the clock or decides a verdict: ``_observe`` turns these
rows into Observations.
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

from hpcstate import ExitStatus, ParseError

from ._ids import parse_jobid

UTC: Final = timezone.utc

# -- state and result names ----------------------------------------------------------------

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
#: Every job-list state name (the active ones and INACTIVE).
STATE_NAME_SET: Final = frozenset(STATE_NAMES.values())
RESULT_NAMES: Final[Mapping[int, str]] = {1: "COMPLETED", 2: "FAILED", 4: "CANCELED", 8: "TIMEOUT"}
#: The result names a record may carry (flux-core prints CANCELED; CANCELLED is tolerated).
RESULT_NAME_SET: Final = frozenset({*RESULT_NAMES.values(), "CANCELLED"})

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
        if name in STATE_NAME_SET:
            return name
    elif isinstance(value, int) and not isinstance(value, bool) and value in STATE_NAMES:
        return STATE_NAMES[value]
    raise ParseError(f"unknown Flux job state {_show(value)}", command=command, field="state")


def _result_name(value: Any, *, command: str) -> str | None:
    if value is None or value == "":
        return None
    if isinstance(value, str) and value.upper() in RESULT_NAME_SET:
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


UNKNOWN_JOB_LINE: Final = re.compile(r"\AJobID (\S+) unknown\s*\Z")


def unknown_job_ids(stderr: str) -> dict[int, str]:
    """Ids that ``flux jobs ID...`` reported as unknown (purged, or never in this instance),
    with the line that said so."""
    unknown: dict[int, str] = {}
    for line in stderr.splitlines():
        match = UNKNOWN_JOB_LINE.match(line.strip())
        if match is None:
            continue
        try:
            unknown[parse_jobid(match.group(1))] = line.strip()
        except ParseError:
            continue
    return unknown


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
    """The output of the batched eventlog script (``_commands.EVIDENCE_SCRIPT``).

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


# -- submit, cancel and find -----------------------------------------------------------


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


# `flux cancel` answers for a job that already ended: that is what cancel wanted.
_CANCEL_ALREADY_DONE: Final = ("job is inactive", "unknown job id", "no such job")


def cancel_already_done(stderr: str) -> bool:
    """True when ``flux cancel``'s stderr says, on every line it printed (and it printed
    at least one), that the job had already ended or is unknown (purged)."""
    lines = [line for line in stderr.splitlines() if line.strip()]
    return bool(lines) and all(
        any(done in line.lower() for done in _CANCEL_ALREADY_DONE) for line in lines
    )


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
