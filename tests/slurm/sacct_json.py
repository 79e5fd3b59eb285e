"""``sacct --json`` read into the same AccountingRows as the production text parser
(hpcstate_slurm._parse.parse_sacct_text): test-only, a second witness. The golden tests
check that the JSON and the text of the same jobs give the same records (where the
version's JSON is right), and the fuzz tests that it only ever raises ParseError.

Moved here from the backend, which never runs ``sacct --json`` (dbv0.0.37/38, data_parser
v0.0.39 .. v0.0.45).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any

from attrs import evolve

from hpcstate import (
    AccountingRow,
    ExitStatus,
    ParseError,
    Reason,
    ReasonKind,
    State,
    parse_slurm_reason,
)
from hpcstate_slurm._parse import ACCOUNTING_STATES, SUPERSEDED_STATES, parse_nodes

UTC = timezone.utc
# Times past 2^32 - 3 are Slurm's NO_VAL/INFINITE markers, not dates.
_MAX_EPOCH = 4_294_967_293


def _number(value: Any) -> int | None:
    """A plain int, or v0.0.40+'s ``{"set", "infinite", "number"}``; unset -> None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, dict):
        if not value.get("set", False) or value.get("infinite", False):
            return None
        number = value.get("number")
        if isinstance(number, int) and not isinstance(number, bool):
            return number
    return None


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [item for item in value if isinstance(item, str)]
    return []


def _json_time(value: Any) -> datetime | None:
    seconds = _number(value)
    if seconds is None or seconds <= 0 or seconds > _MAX_EPOCH:
        return None
    return datetime.fromtimestamp(seconds, tz=UTC)


def _json_state(value: Any, *, command: str) -> tuple[State | None, str]:
    """JSON state: ``"FAILED"``, ``["FAILED"]``, or a superseded ``["PENDING","REQUEUED"]``."""
    names = _strings(value.get("current") if isinstance(value, dict) else value)
    if not names:
        raise ParseError("job has no state", command=command, field="state")
    if any(name in SUPERSEDED_STATES for name in names):
        return None, "+".join(names)
    state = ACCOUNTING_STATES.get(names[0])
    if state is None:
        raise ParseError(f"unknown accounting state {names[0]!r}", command=command, field="state")
    return state, names[0]


def _json_exit(
    value: Any, *, state: State | None, faulty: bool, command: str, field: str
) -> ExitStatus | None:
    if not isinstance(value, dict):
        return None
    status = _strings(value.get("status"))
    signal = value.get("signal")
    if "SIGNALED" in status and isinstance(signal, dict):
        number = _number(signal.get("signal_id"))
        if number is None:
            number = _number(signal.get("id"))
        if number is not None and 1 <= number <= 127:
            return ExitStatus.killed(number)
        return None
    code = _number(value.get("return_code"))
    if code is None:
        return None
    if not 0 <= code <= 255:
        raise ParseError(f"exit code out of range: {code}", command=command, field=field)
    if faulty and code == 0 and state is not State.COMPLETED:
        # 21.08-23.02 say SUCCESS/0 for every plain exit, non-zero ones included.
        return None
    return ExitStatus.exited(code)


def _json_step_name(step: Mapping[str, Any], job_id: str) -> str:
    ident = step.get("step")
    if isinstance(ident, dict):
        raw = ident.get("id")
        if isinstance(raw, str):
            # v0.0.40+: "10.batch"; v0.0.38: "batch"
            return raw.split(".", 1)[1] if "." in raw else raw
        if isinstance(raw, dict):  # v0.0.39: {"job_id", "step_id"}
            step_id = raw.get("step_id")
            return str(step_id)
    return job_id


def _json_time_block(record: Mapping[str, Any]) -> Mapping[str, Any]:
    """A job's or step's ``time`` object; {} when it is missing or not an object."""
    time = record.get("time")
    return time if isinstance(time, dict) else {}


def _json_elapsed(time: Mapping[str, Any]) -> float | None:
    """``time.elapsed`` in seconds; None when unset or negative (never a duration)."""
    elapsed = _number(time.get("elapsed"))
    return float(elapsed) if elapsed is not None and elapsed >= 0 else None


def _json_cpu(time: Any) -> float | None:
    if not isinstance(time, dict):
        return None
    total = time.get("total")
    if not isinstance(total, dict):
        return None
    seconds = _number(total.get("seconds"))
    micros = _number(total.get("microseconds"))
    if seconds is None:
        return None
    return seconds + (micros or 0) / 1_000_000


def _json_rss(step: Mapping[str, Any]) -> int | None:
    tres = step.get("tres")
    if not isinstance(tres, dict):
        return None
    requested = tres.get("requested")
    if not isinstance(requested, dict):
        return None
    for item in requested.get("max") or []:
        if isinstance(item, dict) and item.get("type") == "mem":
            count = _number(item.get("count"))
            if count is not None and count >= 0:
                return count
    return None


def parse_sacct_json(
    stdout: str, *, exit_faulty: bool, command: str = "sacct --json"
) -> list[AccountingRow]:
    """``sacct --json`` into the same rows the text parser gives.

    ``exit_faulty``: the version reports plain non-zero exits as SUCCESS/0, so such a
    value on a job that did not complete is dropped (unknown), never read as success.
    """
    try:
        doc = json.loads(stdout)
    except ValueError as error:
        raise ParseError(f"not JSON: {error}", command=command) from None
    if not isinstance(doc, dict) or not isinstance(doc.get("jobs"), list):
        raise ParseError("expected an object with a 'jobs' list", command=command)
    rows: list[AccountingRow] = []
    for index, job in enumerate(doc["jobs"]):
        if not isinstance(job, dict):
            raise ParseError(f"jobs[{index}] is not an object", command=command)
        rows.extend(_json_job_rows(job, exit_faulty=exit_faulty, command=command))
    return rows


def _json_job_id(job: Mapping[str, Any], *, command: str) -> str:
    job_id = _number(job.get("job_id"))
    if job_id is None:
        raise ParseError("job has no job_id", command=command, field="job_id")
    array = job.get("array") if isinstance(job.get("array"), dict) else {}
    assert isinstance(array, dict)
    array_job = _number(array.get("job_id")) or 0
    task = _number(array.get("task_id"))
    if array_job and task is not None:
        return f"{array_job}_{task}"
    het = job.get("het") if isinstance(job.get("het"), dict) else {}
    assert isinstance(het, dict)
    het_job = _number(het.get("job_id")) or 0
    offset = _number(het.get("job_offset"))
    if het_job and offset is not None:
        return f"{het_job}+{offset}"
    return str(job_id)


def _json_job_rows(
    job: Mapping[str, Any], *, exit_faulty: bool, command: str
) -> list[AccountingRow]:
    job_id = _json_job_id(job, command=command)
    state, state_text = _json_state(job.get("state"), command=command)
    reason: Reason | None = None
    killer = job.get("kill_request_user")
    if state is State.CANCELLED and isinstance(killer, str) and killer:
        reason = Reason(kind=ReasonKind.CANCELLED, text=f"CANCELLED by {killer}")
    else:
        state_info = job.get("state")
        text = state_info.get("reason") if isinstance(state_info, dict) else None
        if isinstance(text, str) and text:
            reason = parse_slurm_reason(text)
    time = _json_time_block(job)
    row = AccountingRow(
        job_id=job_id,
        raw_id=str(_number(job.get("job_id"))),
        state=state,
        state_text=state_text,
        exit=_json_exit(
            job.get("exit_code"),
            state=state,
            faulty=exit_faulty,
            command=command,
            field="exit_code",
        ),
        derived_exit=_json_exit(
            job.get("derived_exit_code"),
            state=None,  # on faulty versions a derived SUCCESS/0 may hide a failed step
            faulty=exit_faulty,
            command=command,
            field="derived_exit_code",
        ),
        reason=reason,
        submitted_at=_json_time(time.get("submission")),
        started_at=_json_time(time.get("start")),
        finished_at=_json_time(time.get("end")),
        elapsed_s=_json_elapsed(time),
        cpu_time_s=_json_cpu(time),
        nodes=parse_nodes(_text(job.get("nodes"))),
        name=_text(job.get("name")),
    )
    rows = [row]
    array = job.get("array") if isinstance(job.get("array"), dict) else {}
    assert isinstance(array, dict)
    task_string = array.get("task")
    if (
        isinstance(task_string, str)
        and task_string.startswith("0x")
        and _number(array.get("task_id")) is None
    ):
        # A pending array group: the tasks are a hex bitmap ("0xE" = tasks 1-3), written
        # here the way the text prints a group, for group_records to expand.
        try:
            bitmap = int(task_string, 16)
        except ValueError:
            raise ParseError("bad array task bitmap", command=command, field="array.task") from None
        if bitmap.bit_length() > 1_000_001:
            raise ParseError("array task bitmap too large", command=command, field="array.task")
        tasks = [str(bit) for bit in range(bitmap.bit_length()) if bitmap >> bit & 1]
        if tasks:
            rows = [evolve(row, job_id=f"{job_id}_[{','.join(tasks)}]")]
    steps = job.get("steps") or []
    if not isinstance(steps, list):
        raise ParseError("steps is not a list", command=command, field="steps")
    for step in steps:
        if not isinstance(step, dict):
            raise ParseError("a step is not an object", command=command, field="steps")
        step_state, step_text = _json_state(step.get("state"), command=command)
        step_time = _json_time_block(step)
        rows.append(
            AccountingRow(
                job_id=job_id,
                step=_json_step_name(step, job_id),
                state=step_state,
                state_text=step_text,
                exit=_json_exit(
                    step.get("exit_code"),
                    state=step_state,
                    faulty=exit_faulty,
                    command=command,
                    field="steps.exit_code",
                ),
                started_at=_json_time(step_time.get("start")),
                finished_at=_json_time(step_time.get("end")),
                elapsed_s=_json_elapsed(step_time),
                cpu_time_s=_json_cpu(step_time),
                max_rss_bytes=_json_rss(step),
            )
        )
    return rows
