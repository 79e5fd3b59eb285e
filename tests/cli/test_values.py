"""Values people type: durations, memory, K=V, run references."""

from __future__ import annotations

import contextlib
from datetime import timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hpcstate.cli._values import (
    parse_duration,
    parse_env_assignment,
    parse_memory,
    parse_native_ref,
    parse_run_ref,
)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("90", 90),
        ("0.5", 0.5),
        ("90s", 90),
        ("15m", 900),
        ("1h30m", 5400),
        ("2d", 172800),
        ("1w", 604800),
        ("1:30:00", 5400),
        ("5:30", 330),
        ("2-00:00:00", 172800),
    ],
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == timedelta(seconds=seconds)


@pytest.mark.parametrize("text", ["", "abc", "1x", "h", "1h 30m", "-5"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)


@pytest.mark.parametrize(
    ("text", "size"),
    [("512M", 512 * 2**20), ("4G", 4 * 2**30), ("1.5GiB", 3 * 2**29), ("4096", 4096 * 2**20)],
)
def test_memory(text: str, size: int) -> None:
    assert parse_memory(text) == size


@pytest.mark.parametrize("text", ["", "lots", "4X", "-1G", "0"])
def test_bad_memory(text: str) -> None:
    with pytest.raises(ValueError, match="memory size"):
        parse_memory(text)


def test_env_assignment() -> None:
    assert parse_env_assignment("A=b=c") == ("A", "b=c")
    assert parse_env_assignment("EMPTY=") == ("EMPTY", "")
    with pytest.raises(ValueError, match="expected NAME=VALUE"):
        parse_env_assignment("nothing")
    with pytest.raises(ValueError, match="not a valid environment variable name"):
        parse_env_assignment("1A=x")


def test_run_refs() -> None:
    backends = {"local", "cluster"}
    ref = parse_run_ref("cluster:12345_7", backends)
    assert (ref.backend, ref.native_id, ref.run_id) == ("cluster", "12345_7", None)
    plain = parse_run_ref("r-20260301-abcd", backends)
    assert (plain.run_id, plain.is_native) == ("r-20260301-abcd", False)
    # An unknown prefix is not a backend: the whole text is a run id (and will not be found).
    assert parse_run_ref("nosuch:1", backends).run_id == "nosuch:1"
    with pytest.raises(ValueError, match="no native id"):
        parse_run_ref("cluster:", backends)
    with pytest.raises(ValueError, match="not a configured backend"):
        parse_native_ref("nosuch:1", backends)
    with pytest.raises(ValueError, match="expected BACKEND:NATIVE_ID"):
        parse_native_ref("12345", backends)


@given(st.text(max_size=20))
def test_parsers_raise_only_value_error(text: str) -> None:
    for parse in (parse_duration, parse_memory, parse_env_assignment):
        with contextlib.suppress(ValueError):
            parse(text)  # type: ignore[operator]


# Numbers of every size, alone, with a unit, or as clock fields (issue 14: OverflowError
# from "1000000000d", "99999999999999999999s", "99999999999:00:00").
_DIGITS = st.text(alphabet="0123456789", min_size=1, max_size=400)
_DURATIONS = st.one_of(
    st.text(max_size=80),
    st.builds(lambda n, u: n + u, _DIGITS, st.sampled_from(["", "s", "m", "h", "d", "w"])),
    st.builds(lambda a, b, c: f"{a}:{b}:{c}", _DIGITS, _DIGITS, _DIGITS),
    st.builds(lambda d, a: f"{d}-{a}:00:00", _DIGITS, _DIGITS),
)


@given(_DURATIONS)
def test_parse_duration_returns_a_bounded_duration_or_value_error(text: str) -> None:
    with contextlib.suppress(ValueError):
        assert timedelta(0) <= parse_duration(text) <= timedelta(days=365000)


@given(
    st.one_of(
        st.text(max_size=80),
        st.builds(lambda n, u: n + u, _DIGITS, st.sampled_from(["", "K", "M", "G", "P", "b"])),
    )
)
def test_parse_memory_returns_a_bounded_size_or_value_error(text: str) -> None:
    with contextlib.suppress(ValueError):
        assert 0 <= parse_memory(text) <= 2**60
