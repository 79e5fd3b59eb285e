"""A fuzz target for every public Slurm parser entry point, seeded from the golden files.

Each target takes a REAL recorded answer (22.05.8 and 26.05.3, the production commands
included) and damages it: a field replaced (with huge or odd numbers, text, separators),
a line inserted, dropped, doubled or cut. A parser returns a result or raises
ParseError, never anything else (issue 14: a RestartCnt of more than 4,300 digits raised
ValueError from int()). Under HYPOTHESIS_PROFILE=ci these find that crash on the parser
before the fix.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from datetime import datetime, timezone
from functools import partial
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hpcstate import CommandFailed, ParseError, SchedulerUnavailable
from hpcstate.backend import AccountingQuery, CommandResult, JobSpec
from hpcstate_slurm import SlurmDialect, SlurmVersion, parse_version

GOLDEN = Path(__file__).resolve().parents[1] / "golden" / "slurm"
AT = datetime(2026, 12, 6, 16, 0, tzinfo=timezone.utc)
DIALECTS = (SlurmDialect.for_version("22.05.8"), SlurmDialect.for_version("26.05.3"))
IDS = ["64", "76", "76_1", "77_1", "62", "19+0"]


def _seeds(*patterns: str) -> list[str]:
    texts = {
        path.read_text(encoding="utf-8")
        for pattern in patterns
        for path in sorted(GOLDEN.glob(pattern))
        if path.stat().st_size < 200_000
    }
    texts.discard("")
    assert texts, patterns
    return sorted(texts)


QUEUE_SEEDS = _seeds("*/*/squeue_O*.out", "*/_all_jobs/squeue_*.out")
SACCT_SEEDS = _seeds("*/*/sacct_P*.out")
SUBMIT_SEEDS = _seeds("*/*/sbatch*.out")
FIND_SEEDS = _seeds("*/_find_submission/*.out")
VERSION_SEEDS = _seeds("*/_versions/*version*.out")

#: What a field becomes: numbers Python's int() refuses (> 4,300 digits) or that overflow
#: a float or a datetime, other digit systems, Slurm's own markers, separators, text.
VALUES = st.one_of(
    st.sampled_from([4301, 5000, 12000]).map(lambda n: "9" * n),
    st.integers(min_value=0, max_value=10**30).map(str),
    st.integers(min_value=-(10**12), max_value=-1).map(str),
    st.sampled_from(
        [
            "",
            "N/A",
            "None",
            "Unknown",
            "INVALID",
            "0:0",
            "3:0",
            "0:15",
            "0:999",
            "256:0",
            "99999999999:0",
            "65535",
            "35072",
            "4294967294",
            "1e400",
            "nan",
            "\u0663",  # ARABIC-INDIC DIGIT THREE
            "\uff11\uff12",  # fullwidth 12
            "|",
            "||",
            "\n",
            ":",
            "RaisedSignal:999(x)",
            "RaisedSignal:15(Terminated)",
            "CANCELLED by 99999999999",
            "76_[1-3]",
            "76_[1-99999999999]",
            "76_[",
            "1-00:00:00",
            "99:99:99",
            "1.5G",
            "2026-02-30T00:00:00",
            "9999-12-31T23:59:59",
        ]
    ),
    st.text(max_size=12),
)


SEEDS = {
    "queue": QUEUE_SEEDS,
    "sacct": SACCT_SEEDS,
    "submit": SUBMIT_SEEDS,
    "find": FIND_SEEDS,
    "version": VERSION_SEEDS,
    "any": QUEUE_SEEDS + SACCT_SEEDS,
}


@st.composite
def damaged(draw: st.DrawFn, kind: str) -> str:
    """A recorded answer of this kind (``SEEDS``), damaged one to three times."""
    seeds = SEEDS[kind]
    lines = seeds[draw(st.integers(min_value=0, max_value=len(seeds) - 1))].split("\n")
    for _ in range(draw(st.integers(min_value=1, max_value=3))):
        if not lines:
            lines = [""]
        index = draw(st.integers(min_value=0, max_value=len(lines) - 1))
        how = draw(
            st.sampled_from(
                ["field", "field", "field", "grow", "grow", "insert", "drop", "double", "cut"]
            )
        )
        if how == "grow":
            # A number of the record made huge (past int()'s 4,300 digits, or just long).
            fields = lines[index].split("|")
            numbers = [i for i, f in enumerate(fields) if f.strip().isdecimal()]
            if numbers:
                at = numbers[draw(st.integers(min_value=0, max_value=len(numbers) - 1))]
                fields[at] = draw(st.sampled_from(["9" * 4301, "1" * 20, "0" * 30 + "1"]))
                lines[index] = "|".join(fields)
        elif how == "field":
            fields = lines[index].split("|")
            at = draw(st.integers(min_value=0, max_value=len(fields) - 1))
            fields[at] = draw(VALUES)
            lines[index] = "|".join(fields)
        elif how == "insert":
            lines.insert(index, draw(VALUES))
        elif how == "drop":
            del lines[index]
        elif how == "double":
            lines.insert(index, lines[index])
        else:
            line = lines[index]
            lines[index] = line[: draw(st.integers(min_value=0, max_value=len(line)))]
    return "\n".join(lines)


#: Examples for the number-heavy targets (queue, accounting): 1,000 find the RestartCnt crash of issue 14 on the
#: old parser in every seeded run tried (5 of 5), where the profile's 150 did in 2 of 5.
FUZZ = settings(max_examples=max(1000, settings().max_examples))


def _total(call: Callable[[], object], *allowed: type[Exception]) -> None:
    with contextlib.suppress(ParseError, *allowed):
        call()


def _ok(stdout: str, argv: str) -> CommandResult:
    return CommandResult(argv=(argv,), returncode=0, stdout=stdout)


@FUZZ
@given(damaged("queue"))
def test_parse_queue_is_total(text: str) -> None:
    for dialect in DIALECTS:
        _total(partial(dialect.parse_queue, _ok(text, "squeue"), native_ids=IDS, observed_at=AT))


@FUZZ
@given(damaged("queue"), st.integers(min_value=1, max_value=2))
def test_parse_queue_of_a_failed_command_is_total(text: str, rc: int) -> None:
    result = CommandResult(argv=("squeue",), returncode=rc, stdout=text, stderr=text)
    for dialect in DIALECTS:
        _total(
            partial(dialect.parse_queue, result, native_ids=IDS, observed_at=AT),
            CommandFailed,
            SchedulerUnavailable,
        )


@FUZZ
@given(damaged("sacct"))
def test_parse_accounting_is_total(text: str) -> None:
    query = AccountingQuery(native_ids=IDS)
    for dialect in DIALECTS:
        _total(partial(dialect.parse_accounting, _ok(text, "sacct"), query=query, observed_at=AT))


@given(damaged("submit"), st.sampled_from([None, "0-3"]))
def test_parse_submit_is_total(text: str, array: str | None) -> None:
    spec = JobSpec(command=("true",), array=array)
    for dialect in DIALECTS:
        _total(partial(dialect.parse_submit, _ok(text, "sbatch"), spec))


@given(damaged("find"), st.sampled_from(["hpcstate-x.0", "", "a|b"]))
def test_parse_find_submission_is_total(text: str, tag: str) -> None:
    for dialect in DIALECTS:
        _total(partial(dialect.parse_find_submission, _ok(text, "squeue"), tag))


@given(damaged("any"), st.integers(min_value=0, max_value=1))
def test_parse_find_submission_accounting_is_total(text: str, rc: int) -> None:
    result = CommandResult(argv=("sacct",), returncode=rc, stdout=text, stderr=text)
    for dialect in DIALECTS:
        _total(
            partial(dialect.parse_find_submission_accounting, result, "hpcstate-x.0"),
            CommandFailed,
            SchedulerUnavailable,
        )


@given(damaged("version"))
def test_parse_version_is_total(text: str) -> None:
    _total(lambda: parse_version(_ok(text, "sbatch")))
    _total(lambda: SlurmVersion.parse(text))


@given(damaged("any"), st.integers(min_value=0, max_value=2))
def test_check_cancel_is_total(text: str, rc: int) -> None:
    result = CommandResult(argv=("scancel",), returncode=rc, stdout="", stderr=text)
    for dialect in DIALECTS:
        _total(partial(dialect.check_cancel, result), CommandFailed, SchedulerUnavailable)


def test_a_restart_count_past_python_int_digit_limit_is_a_parse_error() -> None:
    """The crash the fuzz run of issue 14 found, kept as a plain example."""
    seed = (GOLDEN / "26.05.3-production" / "requeue" / "squeue_O.out").read_text()
    fields = seed.rstrip("\n").split("|")
    fields[12] = "9" * 5000  # RestartCnt
    text = "|".join(fields) + "\n"
    for dialect in DIALECTS:
        with pytest.raises(ParseError, match="RestartCnt"):
            dialect.parse_queue(_ok(text, "squeue"), native_ids=["78"], observed_at=AT)
