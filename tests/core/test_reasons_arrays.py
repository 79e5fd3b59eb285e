from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hpcstate import ParseError, ReasonKind, expand_array_spec, parse_slurm_reason


@pytest.mark.parametrize(
    ("text", "kind", "signal", "uid"),
    [
        ("NonZeroExitCode", ReasonKind.NON_ZERO_EXIT_CODE, None, None),
        ("RaisedSignal:11(Segmentation fault)", ReasonKind.RAISED_SIGNAL, 11, None),
        ("RaisedSignal:11(Segmentation_fault)", ReasonKind.RAISED_SIGNAL, 11, None),
        ("(RaisedSignal:9(Killed))", ReasonKind.RAISED_SIGNAL, 9, None),
        ("TimeLimit", ReasonKind.TIME_LIMIT, None, None),
        ("OutOfMemory", ReasonKind.OUT_OF_MEMORY, None, None),
        ("NodeFail", ReasonKind.NODE_FAIL, None, None),
        ("NodeDown", ReasonKind.NODE_FAIL, None, None),
        ("CANCELLED by 1000", ReasonKind.CANCELLED, None, 1000),
        ("JobLaunchFailure", ReasonKind.JOB_LAUNCH_FAILURE, None, None),
        ("None", ReasonKind.NONE, None, None),
        ("", ReasonKind.NONE, None, None),
        ("BeginTime", ReasonKind.OTHER, None, None),
    ],
)
def test_slurm_reasons(text: str, kind: ReasonKind, signal: int | None, uid: int | None) -> None:
    reason = parse_slurm_reason(text)
    assert reason.kind is kind
    assert reason.signal == signal
    assert reason.uid == uid


def test_unknown_reasons_are_kept_verbatim() -> None:
    reason = parse_slurm_reason("launch failure limit exceeded requeued held")
    assert reason.kind is ReasonKind.OTHER
    assert reason.text == "launch failure limit exceeded requeued held"


@given(st.text())
def test_reason_parser_is_total(text: str) -> None:
    parse_slurm_reason(text)


@pytest.mark.parametrize(
    ("spec", "tasks"),
    [
        ("1-4", (1, 2, 3, 4)),
        ("0,3,5-7", (0, 3, 5, 6, 7)),
        ("1-9:4", (1, 5, 9)),
        ("[5-9%2]", (5, 6, 7, 8, 9)),
        ("3", (3,)),
    ],
)
def test_array_specs(spec: str, tasks: tuple[int, ...]) -> None:
    assert expand_array_spec(spec) == tasks


@pytest.mark.parametrize("spec", ["", "a", "5-1", "1-3:0", "1-", "0-999999999"])
def test_bad_array_specs(spec: str) -> None:
    with pytest.raises(ParseError, match="array"):
        expand_array_spec(spec)


@given(st.text())
def test_array_parser_raises_only_parse_error(text: str) -> None:
    with contextlib.suppress(ParseError):
        expand_array_spec(text)
