"""Every Flux parser, on arbitrary input, returns a result or raises ParseError.

(The dialect's parse_* may also raise CommandFailed for a failed command, or
SchedulerUnavailable when flux says it could not answer now: the command's failure,
reported as such, and never anything else.)
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from flux_golden import OBSERVED_AT
from hypothesis import given
from hypothesis import strategies as st

from hpcstate import CommandFailed, ParseError, SchedulerUnavailable
from hpcstate.backend import CommandResult, JobSpec
from hpcstate_flux import FluxDialect
from hpcstate_flux._observe import apply_evidence, job_observation
from hpcstate_flux._parse import (
    EVIDENCE_KEYS,
    SECTION_BEGIN,
    SECTION_END,
    JobEvidence,
    expand_hostlist,
    parse_eventlog_entry,
    parse_evidence,
    parse_job,
    parse_jobs_json,
    parse_submit_output,
    parse_tagged_jobs,
    task_exit,
    unknown_job_ids,
)

DIALECT = FluxDialect()

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=12,
)
JOB_KEYS = [
    "id",
    "state",
    "result",
    "waitstatus",
    "exception",
    "exception_occurred",
    "exception_severity",
    "exception_type",
    "exception_note",
    "name",
    "ntasks",
    "nodelist",
    "t_submit",
    "t_run",
    "t_cleanup",
    "t_inactive",
    "runtime",
]
plausible = st.one_of(
    json_values,
    st.sampled_from(["RUN", "CLEANUP", "INACTIVE", "SCHED", "FAILED", "COMPLETED", "CANCELED"]),
    st.sampled_from([0, 1, 2, 4, 8, 16, 32, 64, 256, 35072, 65535, 2**64, -1]),
    st.fixed_dictionaries(
        {},
        optional={
            "occurred": json_values | st.booleans(),
            "severity": json_values | st.integers(-1, 8),
            "type": json_values,
            "note": json_values,
        },
    ),
)
job_dicts = st.dictionaries(st.sampled_from(JOB_KEYS), plausible, max_size=len(JOB_KEYS))


def _parse_or_fail(function: Any, *args: Any, **kwargs: Any) -> Any:
    try:
        return function(*args, **kwargs)
    except (ParseError, CommandFailed, SchedulerUnavailable):
        return None


@given(job_dicts)
def test_parse_job_on_plausible_records(record: dict[str, Any]) -> None:
    job = _parse_or_fail(parse_job, record)
    if job is not None:
        _parse_or_fail(job_observation, job, native_id="1", observed_at=OBSERVED_AT)


@given(json_values)
def test_parse_job_on_any_json(value: Any) -> None:
    _parse_or_fail(parse_job, value)


@given(st.text() | json_values.map(json.dumps) | job_dicts.map(json.dumps))
def test_parse_jobs_json_and_parse_queue(text: str) -> None:
    _parse_or_fail(parse_jobs_json, text)
    for rc in (0, 1, 2, 123, None):
        _parse_or_fail(
            DIALECT.parse_queue,
            CommandResult(argv=("flux", "jobs"), returncode=rc, stdout=text, stderr=text),
            native_ids=["1", "2"],
            observed_at=OBSERVED_AT,
        )


@given(st.text())
def test_text_readers(text: str) -> None:
    unknown_job_ids(text)
    assert isinstance(expand_hostlist(text), tuple)
    _parse_or_fail(parse_submit_output, text)
    _parse_or_fail(parse_tagged_jobs, text, "tag")
    _parse_or_fail(parse_eventlog_entry, text)
    _parse_or_fail(parse_evidence, text)
    result = CommandResult(argv=("flux", "x"), returncode=0, stdout=text, stderr=text)
    assert isinstance(DIALECT.is_transient(result), bool)
    assert isinstance(DIALECT.evidence_is_transient(result), bool)
    _parse_or_fail(DIALECT.parse_submit, result, JobSpec(command=("true",)))
    _parse_or_fail(DIALECT.parse_find_submission, result, "tag")
    _parse_or_fail(DIALECT.check_cancel, result)


@given(st.dictionaries(st.sampled_from(["rank", "wait_status", "signaled", "exitcode"]), plausible))
def test_task_exit_contexts(context: dict[str, Any]) -> None:
    line = json.dumps({"name": "shell.task-exit", "context": context})
    entry = parse_eventlog_entry(line)
    _parse_or_fail(task_exit, entry)


section_lines = st.one_of(
    st.text(max_size=30),
    json_values.map(json.dumps),
    st.builds(
        lambda name, context: json.dumps({"timestamp": 1.0, "name": name, "context": context}),
        st.sampled_from(["shell.task-exit", "exception", "log", "finish"]),
        st.dictionaries(
            st.sampled_from(
                ["rank", "wait_status", "signaled", "exitcode", "severity", "component", "message"]
            ),
            plausible,
        ),
    ),
)


@given(
    st.lists(
        st.tuples(
            st.sampled_from(sorted(EVIDENCE_KEYS)),
            st.integers(0, 5),
            st.lists(section_lines, max_size=4),
            st.integers(0, 3),
        ),
        max_size=4,
    )
)
def test_framed_evidence_never_crashes(sections: list[tuple[str, int, list[str], int]]) -> None:
    lines = []
    for kind, jobid, body, rc in sections:
        lines.append(f"{SECTION_BEGIN} {kind} {jobid}")
        lines.extend(line.replace("\n", " ") for line in body)
        lines.append(f"{SECTION_END} {kind} {jobid} {rc}")
    evidence = _parse_or_fail(parse_evidence, "\n".join(lines))
    if evidence is None:
        return
    assert all(isinstance(item, JobEvidence) for item in evidence.values())
    from hpcstate import ExitStatus, JobStats, Observation, Source, State

    for jobid, item in evidence.items():
        for code in (130, 137, 143, 200):
            observation = Observation(
                native_id=str(jobid),
                source=Source.ACCOUNTING,
                observed_at=OBSERVED_AT,
                state=State.FAILED,
                final=True,
                stats=JobStats(
                    exit=ExitStatus.from_shell_code(code), exit_source=Source.ACCOUNTING
                ),
            )
            applied = apply_evidence(observation, item)
            status = applied.stats.exit
            assert status is not None
            assert status.shell_code == code  # evidence never changes the code it explains


# Numbers in the evidence frames are ASCII digits of bounded length: str.isdigit() and
# even isdecimal() accept other scripts' digits ("²", "٣"), and int() refuses more than
# 4300 digits with a plain ValueError.
non_ascii_digits = st.text(
    st.characters(categories=["Nd", "No", "Nl"]).filter(lambda char: not "0" <= char <= "9"),
    min_size=1,
    max_size=6,
)
long_digit_strings = st.integers(min_value=4, max_value=6000).map(lambda n: "9" * n)


@given(
    non_ascii_digits | long_digit_strings | st.builds(str.__add__, st.just("1"), non_ascii_digits)
)
def test_section_end_status_is_ascii_and_short(number: str) -> None:
    stdout = f"{SECTION_BEGIN} exec 123\n{SECTION_END} exec 123 {number}\n"
    with pytest.raises(ParseError, match="malformed section end"):
        parse_evidence(stdout)


@given(non_ascii_digits | long_digit_strings.filter(lambda text: len(text) > 20))
def test_section_begin_jobid_is_ascii_and_short(number: str) -> None:
    stdout = f"{SECTION_BEGIN} exec {number}\n{SECTION_END} exec {number} 0\n"
    with pytest.raises(ParseError):
        parse_evidence(stdout)


@given(st.integers(min_value=4301, max_value=6000).map(lambda n: "9" * n))
def test_huge_json_numbers_are_parse_errors(number: str) -> None:
    for text in (number, f'{{"id": {number}, "state": "RUN"}}', f'{{"jobs": [{number}]}}'):
        with pytest.raises(ParseError, match="not JSON"):
            parse_jobs_json(text)
    with pytest.raises(ParseError):
        DIALECT.parse_queue(
            CommandResult(argv=("flux", "jobs"), returncode=0, stdout=number, stderr=""),
            native_ids=["1"],
            observed_at=OBSERVED_AT,
        )
