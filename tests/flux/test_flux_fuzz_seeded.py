"""Fuzz every public Flux parser entry point from the golden files (issue 14).

Each target starts from real flux-core 0.88.0 output (tests/golden/flux/0.88.0 and
0.88.0-production), changes one value in it (a JSON field set to another value, a huge
integer included, or a line cut or spliced), and asks the parser: it must return a
result or raise ParseError (the dialect's parse_* may also raise CommandFailed /
SchedulerUnavailable for a failed or unreachable command). Nothing else: an
OverflowError from ``math.isfinite`` on an integer too large for a float (a huge
timestamp in ``flux jobs --json``) is what the first target was written to catch.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Final

import pytest
from flux_production import read as read_production
from hypothesis import given
from hypothesis import strategies as st

from hpcstate import (
    CommandFailed,
    ExitStatus,
    JobStats,
    Observation,
    ParseError,
    SchedulerUnavailable,
    Source,
    State,
)
from hpcstate.backend import AccountingQuery, CommandResult, JobSpec
from hpcstate_flux import FluxDialect, normalize_native_id, parse_jobid

GOLDEN: Final = Path(__file__).resolve().parent.parent / "golden" / "flux"
DIALECT: Final = FluxDialect()
OBSERVED_AT: Final = datetime(2026, 12, 6, 15, 30, tzinfo=timezone.utc)
ALLOWED: Final = (ParseError, CommandFailed, SchedulerUnavailable)


def _files(pattern: str) -> list[str]:
    found = sorted({p.read_text(encoding="utf-8") for p in GOLDEN.glob(f"*/*/{pattern}")})
    assert found, pattern
    return found


def _loads(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return None


JOBS_JSON: Final = _files("jobs_json*.out") + _files("jobs_a_json.out")
JOB_DOCUMENTS: Final = [seed for seed in JOBS_JSON if _loads(seed) is not None]
SUBMIT: Final = _files("submit.out")
EVIDENCE: Final = _files("evidence*.out")
ERRORS: Final = _files("*.err")
FIND: Final = _files("diag_find_script_job_info_lookup.out")
JOBIDS: Final = _files("jobid.f58") + _files("jobid.txt")

# A value to put in place of a recorded one: what flux prints, what it never prints,
# integers too large for a float (both signs), and nested junk.
huge_integers = st.integers(min_value=2**1024, max_value=2**1200) | st.integers(
    min_value=-(2**1200), max_value=-(2**1024)
)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    huge_integers,
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.sampled_from(["INACTIVE", "RUN", "FAILED", "CANCELED", "ƒ2", "-1", "1e400"]),
)
numbers = st.one_of(
    huge_integers,
    st.integers(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0, -1, 2**63, 2**64, 1e308, -1e308]),
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner),
    max_leaves=6,
)


def _mutate_json(document: Any, data: st.DataObject) -> Any:
    """``document`` with one value, at any depth, replaced (or one key removed)."""
    if isinstance(document, dict) and document:
        action = data.draw(st.sampled_from(["number", "replace", "descend", "delete"]))
        numeric = sorted(
            key
            for key, value in document.items()
            if isinstance(value, (int, float)) and not isinstance(value, bool)
        )
        if action == "number" and numeric:
            # a number flux printed, as another number: huge, negative, not finite...
            return {**document, data.draw(st.sampled_from(numeric)): data.draw(numbers)}
        key = data.draw(st.sampled_from(sorted(document)))
        copy = dict(document)
        if action == "delete":
            del copy[key]
        elif action == "descend" and isinstance(copy[key], (dict, list)) and copy[key]:
            copy[key] = _mutate_json(copy[key], data)
        else:
            copy[key] = data.draw(values)
        return copy
    if isinstance(document, list) and document:
        index = data.draw(st.integers(0, len(document) - 1))
        copy_list = list(document)
        copy_list[index] = _mutate_json(copy_list[index], data)
        return copy_list
    return data.draw(values)


def _dump(document: Any) -> str:
    try:
        return json.dumps(document)
    except ValueError:  # an int json cannot print (over 4300 digits): not reachable here
        return "null"


def _mutate_text(text: str, data: st.DataObject) -> str:
    """``text`` cut, spliced with junk, or with one JSON line's value changed."""
    lines = text.splitlines()
    action = data.draw(st.sampled_from(["json", "cut", "splice"]))
    if action == "json" and lines:
        index = data.draw(st.integers(0, len(lines) - 1))
        try:
            document = json.loads(lines[index])
        except ValueError:
            document = None
        if document is not None:
            lines[index] = _dump(_mutate_json(document, data))
            return "\n".join(lines) + "\n"
    position = data.draw(st.integers(0, len(text)))
    if action == "cut":
        return text[:position]
    return text[:position] + data.draw(st.text(max_size=20)) + text[position:]


def _only_allowed(function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    try:
        return function(*args, **kwargs)
    except ALLOWED:
        return None


def _result(stdout: str, stderr: str = "", rc: int | None = 0) -> CommandResult:
    return CommandResult(argv=("flux", "x"), returncode=rc, stdout=stdout, stderr=stderr)


def _ids_in(text: str) -> list[str]:
    """The asked ids: those of the seed's records (so the parser gets to read them)."""
    ids: list[str] = []
    for line in text.splitlines():
        try:
            document = json.loads(line)
        except ValueError:
            continue
        records = document.get("jobs", [document]) if isinstance(document, dict) else []
        ids.extend(str(r["id"]) for r in records if isinstance(r, dict) and "id" in r)
    return ids or ["1"]


@given(st.sampled_from(JOB_DOCUMENTS), st.data())
def test_parse_queue_and_parse_accounting(seed: str, data: st.DataObject) -> None:
    ids = _ids_in(seed)
    document = json.loads(seed)
    stdout = _dump(_mutate_json(document, data))
    rc = data.draw(st.sampled_from([0, 0, 0, 1, 123]))
    result = _result(stdout, rc=rc)
    _only_allowed(DIALECT.parse_queue, result, native_ids=ids, observed_at=OBSERVED_AT)
    query = AccountingQuery(native_ids=tuple(ids))
    _only_allowed(DIALECT.parse_accounting, result, query=query, observed_at=OBSERVED_AT)


@given(st.sampled_from(JOBS_JSON), st.data())
def test_parse_queue_on_damaged_text(seed: str, data: st.DataObject) -> None:
    stdout = _mutate_text(seed, data)
    result = _result(stdout, stderr=data.draw(st.sampled_from(ERRORS)))
    _only_allowed(DIALECT.parse_queue, result, native_ids=_ids_in(seed), observed_at=OBSERVED_AT)


@given(st.sampled_from(SUBMIT), st.data())
def test_parse_submit(seed: str, data: st.DataObject) -> None:
    result = _result(_mutate_text(seed, data), rc=data.draw(st.sampled_from([0, 1])))
    _only_allowed(DIALECT.parse_submit, result, JobSpec(command=("true",)))


@given(st.sampled_from(FIND), st.data())
def test_parse_find_submission(seed: str, data: st.DataObject) -> None:
    result = _result(_mutate_text(seed, data))
    _only_allowed(DIALECT.parse_find_submission, result, "hpcstate-20261206-152907-d22c84.0")


@given(st.sampled_from(EVIDENCE), st.data(), st.sampled_from([131, 137, 139, 142, 143]))
def test_parse_evidence_and_apply_it(seed: str, data: st.DataObject, code: int) -> None:
    result = _result(_mutate_text(seed, data))
    transient = DIALECT.evidence_transient_error(result)
    assert transient is None or isinstance(transient, str)
    evidence = _only_allowed(DIALECT.parse_evidence, result)
    if evidence is None:
        return
    for jobid in evidence:
        observation = Observation(
            native_id=str(jobid),
            source=Source.ACCOUNTING,
            observed_at=OBSERVED_AT,
            state=State.FAILED,
            final=True,
            stats=JobStats(exit=ExitStatus.from_shell_code(code), exit_source=Source.ACCOUNTING),
        )
        (applied,) = DIALECT.apply_evidence([observation], evidence)
        assert applied.stats.exit is not None
        assert applied.stats.exit.shell_code == code  # never changes the code it explains


@given(st.sampled_from(ERRORS), st.data())
def test_check_cancel_and_transient_checks(seed: str, data: st.DataObject) -> None:
    stderr = _mutate_text(seed, data)
    for rc in (0, 1, 2, 255, None):
        result = _result("", stderr=stderr, rc=rc)
        _only_allowed(DIALECT.check_cancel, result)
        assert isinstance(DIALECT.is_transient(result), bool)
        assert isinstance(DIALECT.evidence_is_transient(result), bool)


@given(st.sampled_from(JOBIDS), st.data())
def test_job_ids(seed: str, data: st.DataObject) -> None:
    text = _mutate_text(seed.strip(), data)
    _only_allowed(parse_jobid, text)
    _only_allowed(normalize_native_id, text)


@pytest.mark.parametrize("field_name", ["t_submit", "t_run", "t_cleanup", "t_inactive", "runtime"])
@pytest.mark.parametrize("huge", [2**1100, -(2**1100)])
def test_a_huge_integer_timestamp_is_a_parse_error_naming_the_field(
    field_name: str, huge: int
) -> None:
    """The crash the fuzz targets were written for (issue 14), as fixed examples."""
    record = json.loads(read_production("exit_3", "jobs_json.out"))
    result = _result(json.dumps({**record, field_name: huge}))
    native = [str(record["id"])]
    with pytest.raises(ParseError, match=rf"out of range.*field {field_name}"):
        DIALECT.parse_queue(result, native_ids=native, observed_at=OBSERVED_AT)
    query = AccountingQuery(native_ids=tuple(native))
    with pytest.raises(ParseError, match=rf"out of range.*field {field_name}"):
        DIALECT.parse_accounting(result, query=query, observed_at=OBSERVED_AT)
