"""Pure parsers for Slurm's client output: sbatch, squeue, sacct: text into rows.

Every function returns a value or raises :class:`hpcstate.ParseError` naming the
command, the line and the field. Nothing here reads the clock or the environment:
the time zone that local timestamps are in is an argument.
"""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime, timezone, tzinfo
from typing import Any, Final, TypeVar

from attrs import evolve, field, frozen

from hpcstate import (
    TERMINAL,
    AccountingRow,
    ExitStatus,
    ParseError,
    Reason,
    ReasonKind,
    State,
    expand_array_spec,
    parse_slurm_reason,
)
from hpcstate.serial import positional_builder

UTC: Final = timezone.utc
_T = TypeVar("_T")
_log = logging.getLogger("hpcstate_slurm")

# -- job states ------------------------------------------------------------------------

#: Slurm's terminal base states, as squeue and sacct both name them.
_TERMINAL_STATES: Final[Mapping[str, State]] = {
    "COMPLETED": State.COMPLETED,
    "FAILED": State.FAILED,
    "CANCELLED": State.CANCELLED,
    "TIMEOUT": State.TIMEOUT,
    "OUT_OF_MEMORY": State.OUT_OF_MEMORY,
    "NODE_FAIL": State.NODE_FAIL,
    "PREEMPTED": State.PREEMPTED,
    "BOOT_FAIL": State.BOOT_FAIL,
    "DEADLINE": State.DEADLINE,
}

#: squeue/scontrol long state names -> what hpcstate observes. COMPLETING, STAGE_OUT and
#: the other flag names hide the base state, so they are RUNNING: never a verdict.
QUEUE_STATES: Final[Mapping[str, State]] = {
    "PENDING": State.QUEUED,
    "CONFIGURING": State.QUEUED,
    "REQUEUE_HOLD": State.QUEUED,
    "REQUEUE_FED": State.QUEUED,
    "SPECIAL_EXIT": State.QUEUED,
    "RESV_DEL_HOLD": State.QUEUED,
    "RUNNING": State.RUNNING,
    "SUSPENDED": State.RUNNING,
    "STOPPED": State.RUNNING,
    "COMPLETING": State.RUNNING,
    "STAGE_OUT": State.RUNNING,
    "SIGNALING": State.RUNNING,
    "RESIZING": State.RUNNING,
    "REQUEUED": State.RUNNING,  # completing before it goes back to PENDING
    "REVOKED": State.RUNNING,  # federation: another cluster runs it
    **_TERMINAL_STATES,
}
#: sacct stores base states only, plus three "this record was superseded" states.
SUPERSEDED_STATES: Final = frozenset({"REQUEUED", "RESIZING", "REVOKED"})
ACCOUNTING_STATES: Final[Mapping[str, State]] = {
    "PENDING": State.QUEUED,
    "RUNNING": State.RUNNING,
    "SUSPENDED": State.RUNNING,
    **_TERMINAL_STATES,
}
#: The exit status Slurm itself sets on these (1, i.e. raw 256 / "0:1") is not the job's.
SLURM_SET_EXIT_STATES: Final = frozenset({State.NODE_FAIL, State.BOOT_FAIL})

_CANCELLED_BY = re.compile(r"\ACANCELLED by (\d{1,10})\Z")
_JOB_ID = re.compile(
    r"\A(?P<job>\d{1,12}(?:_(?:\d{1,9}|\[[^\]]{1,4096}\]))?(?:\+\d{1,6})?)"
    r"(?:\.(?P<step>[A-Za-z0-9_+]{1,64}))?\Z"
)
_ARRAY_GROUP = re.compile(r"\A(\d{1,12})_\[([^\]]{1,4096})\]\Z")
_EMPTY_TIMES: Final = frozenset({"", "unknown", "none", "n/a", "none assigned", "invalid"})
# Times past 2^32 - 3 are Slurm's NO_VAL/INFINITE markers, not dates.
_MAX_EPOCH = 4_294_967_293
_ISO_LOCAL = re.compile(r"\A(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})\Z")
_ELAPSED = re.compile(r"\A(?:(\d{1,6})-)?(\d{1,2}):(\d{2}):(\d{2})\Z")
_CPU_SUBSEC = re.compile(r"\A(\d{1,2}):(\d{2})\.(\d{1,3})\Z")
_CPU_MINSEC = re.compile(r"\A(\d{1,2}):(\d{2})\Z")
_RSS = re.compile(r"\A(\d{1,20}(?:\.\d{1,6})?)([KMGTP]?)\Z")
_UNITS: Final[Mapping[str, int]] = {
    "": 1,
    "K": 1 << 10,
    "M": 1 << 20,
    "G": 1 << 30,
    "T": 1 << 40,
    "P": 1 << 50,
}


# -- small value parsers -----------------------------------------------------------------


def split_job_id(
    text: str, *, command: str = "", line: str | None = None
) -> tuple[str, str | None]:
    """``123.batch`` -> (``123``, ``batch``); ``16_[1-3]`` -> (``16_[1-3]``, None)."""
    match = _JOB_ID.match(text.strip())
    if match is None:
        raise ParseError("not a Slurm job id", command=command, field="JobID", line=line or text)
    return match.group("job"), match.group("step")


def expand_job_ids(job_id: str, *, command: str = "", line: str | None = None) -> tuple[str, ...]:
    """``16_[1-3%2]`` -> ``16_1 16_2 16_3``; any other id -> itself."""
    match = _ARRAY_GROUP.match(job_id)
    if match is None:
        return (job_id,)
    spec = match.group(2)
    if spec.endswith("..."):
        raise ParseError(
            "array task range cut short by Slurm (set SLURM_BITSTR_LEN=0)",
            command=command,
            field="JobID",
            line=line or job_id,
        )
    try:
        tasks = expand_array_spec(spec)
    except ParseError as error:
        raise ParseError(str(error), command=command, field="JobID", line=line) from None
    return tuple(f"{match.group(1)}_{task}" for task in tasks)


def parse_time(
    text: str, *, tz: tzinfo = UTC, command: str = "", field: str = "time"
) -> datetime | None:
    """A Slurm timestamp: epoch seconds (SLURM_TIME_FORMAT=%s) or local ``%FT%T``.

    ``Unknown``/``None``/``N/A``/``NONE``/0 mean "no time" and give None. Local times are
    read in ``tz`` (the time zone the command ran in) and returned in UTC.
    """
    value = text.strip()
    if value.isdecimal() and len(value) <= 12:
        seconds = int(value)
        if seconds == 0 or seconds > _MAX_EPOCH:
            return None
        return datetime.fromtimestamp(seconds, UTC)
    if value.lower() in _EMPTY_TIMES:
        return None
    match = _ISO_LOCAL.match(value)
    if match is None:
        raise ParseError(
            "expected a time as epoch seconds or YYYY-MM-DDTHH:MM:SS",
            command=command,
            field=field,
            line=text,
        )
    try:
        year, month, day, hour, minute, second = (int(part) for part in match.groups())
        local = datetime(year, month, day, hour, minute, second)
        # fold=0: in the hour a DST change repeats, Slurm's text cannot say which one it was.
        return local.replace(tzinfo=tz).astimezone(UTC)
    except (ValueError, OverflowError):  # no such day; or out of range once moved to UTC
        raise ParseError("impossible date", command=command, field=field, line=text) from None


def parse_elapsed(text: str, *, command: str = "", field: str = "Elapsed") -> float | None:
    """``D-HH:MM:SS`` or ``HH:MM:SS`` to seconds; blank or ``INVALID`` -> None."""
    value = text.strip()
    if value in ("", "INVALID"):
        return None
    match = _ELAPSED.match(value)
    if match is None:
        raise ParseError("expected [D-]HH:MM:SS", command=command, field=field, line=text)
    days, hours, minutes, seconds = match.groups()
    return float(int(days or 0) * 86400 + int(hours) * 3600 + int(minutes) * 60 + int(seconds))


def parse_cpu_time(text: str, *, command: str = "", field: str = "TotalCPU") -> float | None:
    """sacct's four CPU-time forms: ``D-HH:MM:SS``, ``HH:MM:SS``, ``MM:SS.mmm``, ``00:MM:SS``.

    ``01:05.123`` is one minute five seconds; ``01:05:07`` is one hour: the ``.`` decides.
    """
    value = text.strip()
    if value == "":
        return None
    match = _CPU_SUBSEC.match(value)
    if match is not None:
        minutes, seconds, millis = match.groups()
        return int(minutes) * 60 + int(seconds) + int(millis.ljust(3, "0")) / 1000
    match = _CPU_MINSEC.match(value)
    if match is not None:
        return float(int(match.group(1)) * 60 + int(match.group(2)))
    return parse_elapsed(value, command=command, field=field)


def parse_rss(text: str, *, command: str = "", field: str = "MaxRSS") -> int | None:
    """MaxRSS: plain bytes (``--noconvert``) or ``1234K``/``11.77M``/``2G`` (powers of 1024)."""
    value = text.strip()
    if value == "":
        return None
    match = _RSS.match(value)
    if match is None:
        raise ParseError("expected bytes or N[KMGTP]", command=command, field=field, line=text)
    number, unit = match.groups()
    factor = _UNITS[unit]
    if "." in number:
        return round(float(number) * factor)
    return int(number) * factor


def parse_nodes(text: str) -> tuple[str, ...]:
    """A node list as Slurm prints it; ``None assigned`` and ``(null)`` mean none.

    Compressed ranges (``node[1-3]``) are kept as one entry: expanding them needs
    the cluster's naming rules, and the text is what people search logs for.
    """
    value = text.strip()
    if value in ("", "None assigned", "(null)", "None", "N/A"):
        return ()
    parts: list[str] = []
    depth = 0
    current = ""
    for char in value:
        if char == "[":
            depth += 1
        elif char == "]":
            depth = max(0, depth - 1)
        if char == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    parts.append(current)
    return tuple(part for part in parts if part)


def parse_exit_text(
    text: str,
    *,
    high_codes_lossy: bool = False,
    known_success: bool = False,
    command: str = "",
    field: str = "ExitCode",
) -> ExitStatus | None:
    """sacct's ``code:signal``; blank -> None.

    ``known_success``: the row's state is COMPLETED, so ``0:0`` is exact even where
    the version subtracts 128 (a 128 would have made the state FAILED).
    """
    value = text.strip()
    if value == "":
        return None
    try:
        status = ExitStatus.from_slurm(value, high_codes_lossy=high_codes_lossy)
    except ParseError:
        raise ParseError(
            "expected Slurm exit status CODE:SIGNAL", command=command, field=field, line=text
        ) from None
    if known_success and status.code == 0:
        return ExitStatus.exited(0)
    return status


def parse_wait_status(
    text: str, *, command: str = "", field: str = "exit_code"
) -> ExitStatus | None:
    """A raw wait status as the controller keeps it (``35072`` is exit 137, ``9`` SIGKILL)."""
    value = text.strip()
    if value in ("", "N/A"):
        return None
    if not value.isdecimal() or len(value) > 10:
        raise ParseError("expected a raw wait status", command=command, field=field, line=text)
    number = int(value)
    if number > 0xFFFF:
        return None  # NO_VAL: the controller has no status for this job
    try:
        return ExitStatus.from_wait_status(number)
    except ParseError:
        raise ParseError(
            "not a termination wait status", command=command, field=field, line=text
        ) from None


def parse_code_signal(
    text: str, *, command: str = "", field: str = "exit_code"
) -> ExitStatus | None:
    """squeue's ``code:signal`` (23.02 and later: ``137:0`` is exit 137, ``0:15`` SIGTERM).

    Lossless, unlike sacct's text on older releases: squeue never subtracts 128.
    """
    value = text.strip()
    if value in ("", "N/A"):
        return None
    try:
        return ExitStatus.from_slurm(value, high_codes_lossy=False)
    except ParseError:
        raise ParseError(
            "expected an exit status CODE:SIGNAL", command=command, field=field, line=text
        ) from None


def parse_queue_exit(
    text: str,
    *,
    wait_status: bool,
    command: str = "",
    field: str = "exit_code",
) -> ExitStatus | None:
    """``squeue -O exit_code``/``DerivedEC`` in either of its two formats.

    ``wait_status`` says which format the detected release prints: the raw wait status
    (22.05: one integer, ``35072``) or ``code:signal`` (23.02 on: ``137:0``). The two
    cannot be confused (only ``code:signal`` has a colon), so an answer in the other
    format is read by the format it has, with a logged note (a misdetected or mixed
    release), never an error.
    """
    value = text.strip()
    colon = ":" in value
    if colon is not wait_status or value in ("", "N/A"):
        return (parse_wait_status if wait_status else parse_code_signal)(
            value, command=command, field=field
        )
    _log.info(
        "%s %s printed %r, the %s format, where the detected Slurm release prints %s; "
        "read by the format it has",
        command or "squeue",
        field,
        value[:40],
        "code:signal" if colon else "raw wait status",
        "a raw wait status" if wait_status else "code:signal",
    )
    return (parse_code_signal if colon else parse_wait_status)(value, command=command, field=field)


def accounting_state(
    text: str, *, command: str = "", line: str | None = None
) -> tuple[State | None, Reason | None]:
    """sacct State -> (state or None for a superseded record, the ``by N`` reason)."""
    value = text.strip()
    cancelled = _CANCELLED_BY.match(value)
    if cancelled is not None:
        return State.CANCELLED, Reason(
            kind=ReasonKind.CANCELLED, text=value, uid=int(cancelled.group(1))
        )
    if value in SUPERSEDED_STATES:
        return None, None
    state = ACCOUNTING_STATES.get(value)
    if state is None:
        raise ParseError(
            f"unknown accounting state {value!r}", command=command, field="State", line=line
        )
    return state, None


def queue_state(text: str, *, command: str = "", line: str | None = None) -> State:
    value = text.strip()
    state = QUEUE_STATES.get(value)
    if state is None:
        raise ParseError(f"unknown job state {value!r}", command=command, field="State", line=line)
    return state


# -- sbatch ------------------------------------------------------------------------------

_PARSABLE = re.compile(r"\A(\d{1,12})(?:;(\S+))?\Z")
_SUBMITTED = re.compile(r"\ASubmitted batch job (\d{1,12})(?: on cluster (\S+))?\Z")


def parse_sbatch_output(stdout: str) -> tuple[str, str | None]:
    """``12345``, ``12345;cluster`` (--parsable) or ``Submitted batch job 12345``."""
    lines = [line.strip() for line in stdout.splitlines() if line.strip()]
    for line in reversed(lines):  # warnings may come first; the id is the last line
        match = _PARSABLE.match(line) or _SUBMITTED.match(line)
        if match is not None:
            return match.group(1), match.group(2)
    raise ParseError(
        "expected a job id from sbatch --parsable",
        command="sbatch",
        line=lines[-1] if lines else "",
    )


# -- delimited tables (squeue -O ..., sacct -P) -------------------------------------------


def split_rows(
    text: str,
    *,
    columns: Sequence[str],
    free_column: str,
    command: str,
    first_line_no: int = 1,
) -> list[tuple[int, dict[str, str]]]:
    """Split ``|``-separated lines into dicts by column name.

    Slurm never escapes values, so a ``|`` in the free-text column (the job name) adds
    fields: that column absorbs them, wherever it is. A newline in a name makes a short
    line, which continues the previous row's free column when that column is last.
    """
    if free_column not in columns:
        raise ParseError(f"column {free_column} missing", command=command, field=free_column)
    width = len(columns)
    free = list(columns).index(free_column)
    rows: list[tuple[int, dict[str, str]]] = []
    lines = text.split("\n")
    last = len(lines) - 1
    for offset, raw_line in enumerate(lines):
        line_no = first_line_no + offset
        line = raw_line[:-1] if raw_line.endswith("\r") else raw_line
        if line == "" and offset == last:
            continue
        fields = line.split("|")
        if len(fields) < width:
            if rows and free == width - 1:
                previous = rows[-1][1]
                previous[free_column] += "\n" + line
                continue
            raise ParseError(
                f"expected {width} fields, got {len(fields)}",
                command=command,
                line_no=line_no,
                line=line,
            )
        extra = len(fields) - width
        merged = [
            *fields[:free],
            "|".join(fields[free : free + extra + 1]),
            *fields[free + extra + 1 :],
        ]
        rows.append((line_no, dict(zip(columns, merged, strict=True))))
    return rows


def _relocated(error: ParseError, *, command: str, line_no: int, line: str) -> ParseError:
    """The same error, placed on the line it came from."""
    if error.line_no is not None:
        return error
    located = ParseError(str(error), command=command, line_no=line_no, line=line)
    located.field = error.field
    return located


# -- squeue --------------------------------------------------------------------------------


@frozen(kw_only=True)
class QueueRow:
    """One squeue line (array groups already expanded into one row per task)."""

    job_id: str  # %i: "123", "123_4", "19+0"
    raw_id: str = ""  # %A: the record's own numeric id
    array_job_id: str = ""  # %F
    array_task: str = ""  # %K: "4", "1-3", "N/A"
    state: State
    state_text: str
    reason: Reason | None = None
    submitted_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    nodes: tuple[str, ...] = ()
    exit: ExitStatus | None = None  # from the controller's raw wait status
    derived_exit: ExitStatus | None = None
    restarts: int | None = None
    name: str = ""

    @property
    def is_array_task(self) -> bool:
        return self.array_task not in ("", "N/A")


#: squeue -O field names (with ``:|``: no padding, ``|`` after) and their column keys.
SQUEUE_FIELDS: Final[tuple[tuple[str, str], ...]] = (
    ("JobArrayID", "id"),
    ("JobID", "raw_id"),
    ("ArrayJobID", "array_job_id"),
    ("ArrayTaskID", "array_task"),
    ("State", "state"),
    ("Reason", "reason"),
    ("SubmitTime", "submit"),
    ("StartTime", "start"),
    ("EndTime", "end"),
    ("NodeList", "nodes"),
    ("exit_code", "exit"),
    ("DerivedEC", "derived"),
    ("RestartCnt", "restarts"),
    ("Name", "name"),  # last: a '|' in a name cannot shift the other fields
)
SQUEUE_COLUMNS: Final = tuple(key for _, key in SQUEUE_FIELDS)


def parse_squeue(
    stdout: str,
    *,
    columns: Sequence[str] = SQUEUE_COLUMNS,
    tz: tzinfo = UTC,
    exit_is_wait_status: bool = True,
    command: str = "squeue",
) -> list[QueueRow]:
    """``squeue -h`` output in the given column layout (keys of SQUEUE_FIELDS)."""
    rows: list[QueueRow] = []
    line_no, line = 0, ""
    try:
        for number, fields in split_rows(
            stdout, columns=columns, free_column="name", command=command
        ):
            line_no, line = number, "|".join(fields.values())
            rows.extend(_queue_rows(fields, tz=tz, exit_raw=exit_is_wait_status, command=command))
    except ParseError as error:
        raise _relocated(error, command=command, line_no=line_no, line=line) from None
    return rows


def _queue_rows(
    fields: Mapping[str, str], *, tz: tzinfo, exit_raw: bool, command: str
) -> list[QueueRow]:
    job_text = fields["id"].strip()
    job_id, step = split_job_id(job_text, command=command)
    if step is not None:
        raise ParseError("squeue listed a step, not a job", command=command, field="JobID")
    state_text = fields["state"].strip()
    state = queue_state(state_text, command=command)
    reason_text = fields.get("reason", "")
    reason = parse_slurm_reason(reason_text) if reason_text.strip() else None
    nodes = parse_nodes(fields.get("nodes", ""))
    ran = state is not State.QUEUED and (bool(nodes) or "nodes" not in fields)
    finished = state in TERMINAL
    exit_: ExitStatus | None = None
    derived: ExitStatus | None = None
    # The controller's status is the job's only once it ended after running, and not
    # when Slurm itself set it (NODE_FAIL/BOOT_FAIL store 1, which reads as SIGHUP).
    if finished and ran and state not in SLURM_SET_EXIT_STATES and "exit" in fields:
        exit_ = parse_queue_exit(fields["exit"], wait_status=exit_raw, command=command)
        derived = parse_queue_exit(
            fields.get("derived", ""), wait_status=exit_raw, command=command, field="DerivedEC"
        )
    restarts_text = fields.get("restarts", "").strip()
    # A restart count past 9 digits is no count (and int() refuses > 4,300 digits).
    if restarts_text and not (
        restarts_text.isascii() and restarts_text.isdecimal() and len(restarts_text) <= 9
    ):
        raise ParseError(
            "expected a restart count", command=command, field="RestartCnt", line=restarts_text
        )
    base = QueueRow(
        job_id=job_id,
        raw_id=fields.get("raw_id", "").strip(),
        array_job_id=fields.get("array_job_id", "").strip(),
        array_task=fields.get("array_task", "").strip(),
        state=state,
        state_text=state_text,
        reason=reason,
        submitted_at=parse_time(
            fields.get("submit", ""), tz=tz, command=command, field="SubmitTime"
        ),
        # A pending job's StartTime is a forecast, and a running job's EndTime its limit.
        started_at=(
            parse_time(fields.get("start", ""), tz=tz, command=command, field="StartTime")
            if ran
            else None
        ),
        finished_at=(
            parse_time(fields.get("end", ""), tz=tz, command=command, field="EndTime")
            if finished
            else None
        ),
        nodes=nodes,
        exit=exit_,
        derived_exit=derived,
        restarts=int(restarts_text) if restarts_text else None,
        name=fields.get("name", ""),
    )
    expanded = expand_job_ids(job_id, command=command)
    if len(expanded) == 1 and expanded[0] == job_id:
        return [base]
    return [
        evolve(base, job_id=task_id, array_task=task_id.rsplit("_", 1)[1]) for task_id in expanded
    ]


# -- sacct text ------------------------------------------------------------------------------

#: The sacct fields the dialect asks for, JobName last.
SACCT_FIELDS: Final = (
    "JobID",
    "JobIDRaw",
    "State",
    "ExitCode",
    "DerivedExitCode",
    "Reason",
    "Elapsed",
    "ElapsedRaw",
    "TotalCPU",
    "CPUTimeRAW",
    "MaxRSS",
    "Submit",
    "Start",
    "End",
    "NodeList",
    "JobName",
)
_REQUIRED_SACCT = ("JobID", "State")


def parse_sacct_text(
    stdout: str,
    *,
    tz: tzinfo = UTC,
    exit_lossy: bool = False,
    derived_lossy: bool = False,
    command: str = "sacct",
) -> list[AccountingRow]:
    """``sacct -P`` output WITH its header line; columns are found by name.

    The one sacct parser (the hot path of every poll: bench/sacct_parse.py). Columns are
    read by index; a ``|`` inside the free-text column (JobName, else the last) adds fields
    that this column absorbs, and a newline inside a last free column makes a short line
    that continues the previous row (Slurm escapes neither). Errors name the line (its
    number in the whole output, the header being line 1) and the field.
    """
    lines = stdout.split("\n", 1)
    header = lines[0].rstrip("\r")
    if header.strip() == "":
        if stdout.strip():
            raise ParseError("expected a header line first", command=command, line_no=1)
        return []
    columns = header.split("|")
    for required in _REQUIRED_SACCT:
        if required not in columns:
            raise ParseError(
                f"header has no {required} column", command=command, line_no=1, line=header
            )
    if len(set(columns)) != len(columns):
        raise ParseError("header repeats a column", command=command, line_no=1, line=header)
    free = columns.index("JobName") if "JobName" in columns else len(columns) - 1
    body = lines[1] if len(lines) > 1 else ""
    fields = _SacctFields(tz, exit_lossy=exit_lossy, derived_lossy=derived_lossy, command=command)
    lines = body.split("\n")
    if "\r" in body:
        lines = [line[:-1] if line.endswith("\r") else line for line in lines]
    if lines and lines[-1] == "":
        lines.pop()
    bars = len(columns) - 1
    if all(line.count("|") == bars for line in lines):  # the usual output
        return _sacct_rows(
            (line.split("|") for line in lines), None, columns=columns, fields=fields
        )
    table, numbers = _sacct_table(lines, width=len(columns), free=free, command=command)
    return _sacct_rows(table, numbers, columns=columns, fields=fields)


def _sacct_table(
    lines: Sequence[str], *, width: int, free: int, command: str
) -> tuple[list[list[str]], list[int]]:
    """The lines as rows of exactly ``width`` fields, and each row's line number: the
    free column absorbs a row's extra fields, and a short line continues the previous
    row's free column when that column is last."""
    rows: list[list[str]] = []
    numbers: list[int] = []
    for offset, line in enumerate(lines):
        fields = line.split("|")
        if len(fields) < width:
            if rows and free == width - 1:
                rows[-1][free] += "\n" + line
                continue
            raise ParseError(
                f"expected {width} fields, got {len(fields)}",
                command=command,
                line_no=offset + 2,
                line=line,
            )
        extra = len(fields) - width
        if extra:
            fields = [
                *fields[:free],
                "|".join(fields[free : free + extra + 1]),
                *fields[free + extra + 1 :],
            ]
        rows.append(fields)
        numbers.append(offset + 2)
    return rows, numbers


class _Memo(dict[str, _T]):
    """A cache for one parse: a hit is one dict lookup, a miss runs the parser once.

    Values repeat across rows (a job's steps share times, nodes and states), and the
    parsers are pure and return frozen values. Errors are not cached; the caller adds the
    line number and text to them.
    """

    __slots__ = ("_parse",)

    def __init__(self, parse: Callable[[str], _T]) -> None:
        super().__init__()
        self._parse = parse

    def __missing__(self, key: str) -> _T:
        value = self[key] = self._parse(key)
        return value


class _TimeMemo(_Memo["datetime | None"]):
    """Times are the values that repeat least (each job has its own), so a miss on the
    usual form, epoch seconds, skips the general parser."""

    __slots__ = ()

    def __missing__(self, key: str) -> datetime | None:
        if key.isdecimal() and 0 < len(key) <= 10:  # no surrounding space, not 0
            seconds = int(key)
            if 0 < seconds <= _MAX_EPOCH:
                value = self[key] = datetime.fromtimestamp(seconds, UTC)
                return value
        return super().__missing__(key)


_JOB_PART = re.compile(r"\d{1,12}(?:_(?:\d{1,9}|\[[^\]]{1,4096}\]))?(?:\+\d{1,6})?")
_STEP_PART = re.compile(r"[A-Za-z0-9_+]{1,64}")


def _matching(pattern: re.Pattern[str]) -> Callable[[str], str | None]:
    def check(text: str) -> str | None:
        return text if pattern.fullmatch(text) is not None else None

    return check


def _elapsed_seconds(raw: str, *, command: str) -> float:
    raw = raw.strip()
    if not (raw.isascii() and raw.isdecimal()) or len(raw) > 12:
        raise ParseError("expected seconds", command=command, field="ElapsedRaw", line=raw)
    return float(int(raw))


@frozen
class _SacctFields:
    """The per-field parsers of one sacct parse, memoized for that parse only."""

    tz: tzinfo
    exit_lossy: bool
    derived_lossy: bool
    command: str
    # "123.batch": the job part is checked once per job, the step once per step name.
    job_parts: _Memo[str | None] = field(init=False)
    step_parts: _Memo[str | None] = field(init=False)
    states: _Memo[tuple[State | None, Reason | None, str]] = field(init=False)  # + stripped
    reasons: _Memo[Reason | None] = field(init=False)
    exits: _Memo[ExitStatus | None] = field(init=False)
    exits_completed: _Memo[ExitStatus | None] = field(init=False)  # 0:0 of a COMPLETED row
    derived: _Memo[ExitStatus | None] = field(init=False)
    # One memo over Submit/Start/End (steps start when the job does); an error is
    # reported with the column it came from (_time_error).
    times: _Memo[datetime | None] = field(init=False)
    elapsed_raw: _Memo[float | None] = field(init=False)
    elapsed_text: _Memo[float | None] = field(init=False)
    cpu: _Memo[float | None] = field(init=False)
    rss: _Memo[int | None] = field(init=False)
    nodes: _Memo[tuple[str, ...]] = field(init=False)

    def __attrs_post_init__(self) -> None:
        tz, command = self.tz, self.command
        memos: dict[str, Callable[[str], Any]] = {
            "job_parts": _matching(_JOB_PART),
            "step_parts": _matching(_STEP_PART),
            "states": lambda text: (*accounting_state(text, command=command), text.strip()),
            "reasons": lambda text: parse_slurm_reason(text) if text.strip() else None,
            "exits": functools.partial(
                parse_exit_text, high_codes_lossy=self.exit_lossy, command=command
            ),
            "exits_completed": functools.partial(
                parse_exit_text,
                high_codes_lossy=self.exit_lossy,
                known_success=True,
                command=command,
            ),
            "derived": functools.partial(
                parse_exit_text,
                high_codes_lossy=self.derived_lossy,
                command=command,
                field="DerivedExitCode",
            ),
            "times": functools.partial(parse_time, tz=tz, command=command),
            "elapsed_raw": functools.partial(_elapsed_seconds, command=command),
            "elapsed_text": functools.partial(parse_elapsed, command=command),
            "cpu": functools.partial(parse_cpu_time, command=command),
            "rss": functools.partial(parse_rss, command=command),
            "nodes": parse_nodes,
        }
        for name, parse in memos.items():
            memo = _TimeMemo(parse) if name == "times" else _Memo(parse)
            object.__setattr__(self, name, memo)

    def split_id(self, text: str) -> tuple[str, str | None]:
        """split_job_id, checking each job's part once instead of each row's id."""
        head, dot, step = text.partition(".")
        job = self.job_parts[head]
        if job is not None:
            if not dot:
                return job, None
            if self.step_parts[step] is not None:
                return job, step
        return split_job_id(text, command=self.command)  # the exact rules, or its error


#: The columns parse_sacct_text reads (CPUTimeRAW is asked for, not read).
_SACCT_COLUMNS: Final = (
    "JobID",
    "JobIDRaw",
    "State",
    "ExitCode",
    "DerivedExitCode",
    "Reason",
    "ElapsedRaw",
    "Elapsed",
    "TotalCPU",
    "MaxRSS",
    "Submit",
    "Start",
    "End",
    "NodeList",
    "JobName",
)
_TIME_COLUMNS: Final = ("Submit", "Start", "End")


_new_accounting_row: Final = positional_builder(AccountingRow)


def _sacct_rows(
    table: Iterable[list[str]],
    numbers: list[int] | None,
    *,
    columns: Sequence[str],
    fields: _SacctFields,
) -> list[AccountingRow]:
    """The rows of a table of exactly ``len(columns)`` fields per line, read by index.

    This loop is the hot path of every poll, hence the local names, the memos and the
    positional builder. A column the header lacks reads as an empty value.
    """
    width = len(columns)
    where = {name: number for number, name in enumerate(columns)}
    pad = not where.keys() >= set(_SACCT_COLUMNS)
    (
        i_id,
        i_raw,
        i_state,
        i_exit,
        i_derived,
        i_reason,
        i_elapsed_raw,
        i_elapsed,
        i_cpu,
        i_rss,
        i_submit,
        i_start,
        i_end,
        i_nodes,
        i_name,
    ) = (where.get(name, width) for name in _SACCT_COLUMNS)  # `width`: the appended ""
    job_parts, step_parts, states, reasons = (
        fields.job_parts,
        fields.step_parts,
        fields.states,
        fields.reasons,
    )
    exits, exits_completed, derived = fields.exits, fields.exits_completed, fields.derived
    elapsed_raw, elapsed_text, times = fields.elapsed_raw, fields.elapsed_text, fields.times
    cpu, rss, nodes, split_id = fields.cpu, fields.rss, fields.nodes, fields.split_id
    completed = State.COMPLETED
    build = _new_accounting_row
    rows: list[AccountingRow] = []
    append = rows.append
    f: list[str] = []
    try:
        for f in table:
            if pad:
                f = [*f, ""]
            text = f[i_id]
            head, dot, step_text = text.partition(".")
            job_id = job_parts[head]
            step: str | None = None
            if job_id is None or (dot and step_parts[step_text] is None):
                job_id, step = split_id(text)
            elif dot:
                step = step_text
            state, reason, state_text = states[f[i_state]]
            if reason is None:
                reason = reasons[f[i_reason]]
            raw_elapsed = f[i_elapsed_raw]
            append(
                build(
                    job_id,
                    step,
                    f[i_raw].strip(),
                    state,
                    state_text,
                    (exits_completed if state is completed else exits)[f[i_exit]],
                    derived[f[i_derived]],
                    reason,
                    times[f[i_submit]],
                    times[f[i_start]],
                    times[f[i_end]],
                    elapsed_raw[raw_elapsed] if raw_elapsed.strip() else elapsed_text[f[i_elapsed]],
                    cpu[f[i_cpu]],
                    rss[f[i_rss]],
                    nodes[f[i_nodes]],
                    None,  # restarts: sacct -P has no such column
                    f[i_name],
                )
            )
    except ParseError as error:
        if error.field == "time":  # the shared memo does not know the column
            error = _time_error(f, (i_submit, i_start, i_end), fields) or error
        line_no = numbers[len(rows)] if numbers is not None else len(rows) + 2
        raise _relocated(
            error, command=fields.command, line_no=line_no, line="|".join(f[:width])
        ) from None
    return rows


def _time_error(
    row: Sequence[str], indexes: Sequence[int], fields: _SacctFields
) -> ParseError | None:
    """The error of the first of Submit/Start/End that does not parse, naming it."""
    for name, index in zip(_TIME_COLUMNS, indexes, strict=True):
        try:
            parse_time(row[index], tz=fields.tz, command=fields.command, field=name)
        except ParseError as error:  # noqa: PERF203 (an error path: runs once)
            return error
    return None


# -- records: a job row with its steps, several per id with -D ---------------------------------


@frozen(kw_only=True)
class AccountingRecord:
    """One run of one job id: its job row and step rows. ``index`` counts runs (requeues)."""

    job: AccountingRow
    steps: tuple[AccountingRow, ...] = ()
    index: int = 0


def group_records(rows: Iterable[AccountingRow]) -> dict[str, list[AccountingRecord]]:
    """Rows in sacct's order -> per job id, its records oldest first.

    A step row belongs to the latest job row of its id. A pending array group
    (``16_[3-4]``) stands for each of its tasks that has no row of its own: the group's
    record is not updated when a task splits off (measured on 22.05: ``78_[1-4]`` still
    PENDING next to finished ``78_1`` and ``78_2``). Raises ParseError for a group
    that Slurm cut short.
    """
    rows = list(rows)
    expanded: list[AccountingRow] = rows
    if any(row.step is None and "[" in row.job_id for row in rows):
        own = {row.job_id for row in rows if row.step is None and "[" not in row.job_id}
        expanded = []
        for row in rows:
            if row.step is None and "[" in row.job_id:
                tasks = expand_job_ids(row.job_id, command="sacct", line=row.job_id)
                expanded.extend(evolve(row, job_id=task) for task in tasks if task not in own)
            else:
                expanded.append(row)
    jobs: dict[str, list[tuple[AccountingRow, list[AccountingRow]]]] = {}
    for row in expanded:
        if row.step is None:
            jobs.setdefault(row.job_id, []).append((row, []))
        elif row.job_id in jobs:
            jobs[row.job_id][-1][1].append(row)
        # A step without its job row (a record sacct cut in half) is dropped.
    records: dict[str, list[AccountingRecord]] = {}
    for job_id, runs in jobs.items():
        if len(runs) == 1:  # the common case: never requeued
            job, steps = runs[0]
            records[job_id] = [AccountingRecord(job=job, steps=tuple(steps))]
            continue
        ordered = sorted(
            enumerate(runs),
            key=lambda pair: (
                pair[1][0].submitted_at or datetime.min.replace(tzinfo=UTC),
                pair[0],
            ),
        )
        records[job_id] = [
            AccountingRecord(job=job, steps=tuple(steps), index=index)
            for index, (_, (job, steps)) in enumerate(ordered)
        ]
    return records
