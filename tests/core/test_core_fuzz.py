"""Fuzz targets for the core's public parsers (issue 14): ``parse_slurm_reason`` and
``expand_array_spec``, seeded from the words and array specs of the golden recordings
(tests/golden), then damaged: digits of any length, non-ASCII digits, brackets, cut
and doubled text. A parser returns a result or raises ParseError, never anything else,
and what it returns is checked against rules written here, not taken from the parser."""

from __future__ import annotations

import re
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from hpcstate import ParseError, Reason, ReasonKind, expand_array_spec, parse_slurm_reason

GOLDEN = Path(__file__).resolve().parents[1] / "golden"


def _golden_text() -> str:
    parts = []
    for path in sorted(GOLDEN.rglob("*")):
        if path.is_file() and path.suffix in {"", ".txt", ".out", ".json", ".md", ".psv"}:
            try:
                parts.append(path.read_text(encoding="utf-8"))
            except (UnicodeDecodeError, OSError):
                continue
    return "\n".join(parts)


_TEXT = _golden_text()
#: Every reason-like word the recordings hold (squeue %r, sacct Reason, State "by N").
REASON_SEEDS = sorted(
    set(
        re.findall(
            r"RaisedSignal:[0-9]+\([^)|\t\n]*\)|CANCELLED by [0-9]+|\b(?:NonZeroExitCode|TimeLimit|"
            r"JobLaunchFailure|OutOfMemory|NodeFail|NodeDown|Priority|Resources|Dependency|"
            r"BeginTime|JobHeldUser|JobHeldAdmin|None|Prolog|DeadLine|Preempted)\b",
            _TEXT,
        )
    )
    | {"", "None", "(Priority)", "RaisedSignal:11(Segmentation_fault)"}
)
#: Every array spec the recordings hold (``123_[1-4]``, ``--array=0-15%4``...).
ARRAY_SEEDS = sorted(
    set(re.findall(r"_\[([0-9,%:\-]+)\]", _TEXT))
    | set(re.findall(r"--array[= ]([0-9,%:\-]+)", _TEXT))
    | {"1-10", "0,3,5-7", "1-9:2", "[5-9%2]", "0-15%4", "7"}
)

# Enough examples to matter in CI (both parsers take microseconds per input).
FUZZ = settings(max_examples=max(2000, settings().max_examples))

DIGITS = st.one_of(
    st.integers(min_value=0, max_value=10**12).map(str),
    st.integers(min_value=1, max_value=6000).map(lambda n: "9" * n),  # int() digit limit
    st.sampled_from(["٣", "１２", "²", "0x1F", "-1", "+5", "1_000", " 9 "]),  # non-ASCII digits
)
NOISE = st.one_of(
    st.text(max_size=20),
    DIGITS,
    st.sampled_from(["(", ")", "((", "))", ":", "%", ",", "-", "[", "]", "_", "\0", "\n", " "]),
)


@st.composite
def damaged(draw: st.DrawFn, seeds: list[str]) -> str:
    """A seed, damaged a few times: a digit run replaced, noise inserted, cut, doubled."""
    text = draw(st.sampled_from(seeds))
    for _ in range(draw(st.integers(min_value=0, max_value=4))):
        how = draw(st.sampled_from(["digits", "insert", "cut", "double", "wrap"]))
        if how == "digits" and re.search(r"[0-9]+", text):
            runs = list(re.finditer(r"[0-9]+", text))
            run = runs[draw(st.integers(min_value=0, max_value=len(runs) - 1))]
            text = text[: run.start()] + draw(DIGITS) + text[run.end() :]
        elif how == "insert":
            at = draw(st.integers(min_value=0, max_value=len(text)))
            text = text[:at] + draw(NOISE) + text[at:]
        elif how == "cut":
            text = text[: draw(st.integers(min_value=0, max_value=len(text)))]
        elif how == "double":
            text = text + draw(st.sampled_from([",", " ", ""])) + text
        else:
            text = "(" + text + ")" if draw(st.booleans()) else "[" + text + "]"
    return text


def test_the_seeds_come_from_the_recordings() -> None:
    assert "JobLaunchFailure" in REASON_SEEDS
    assert any(s.startswith("RaisedSignal:") for s in REASON_SEEDS)
    assert any(s.startswith("CANCELLED by ") for s in REASON_SEEDS)
    assert len(ARRAY_SEEDS) > 6  # the recordings added some


# -- parse_slurm_reason: total, and sound --------------------------------------------------


def check_reason(text: str, reason: Reason) -> None:
    assert isinstance(reason, Reason)
    assert isinstance(reason.kind, ReasonKind)
    stripped = text.strip()
    if stripped.startswith("(") and stripped.endswith(")"):
        stripped = stripped[1:-1]
    assert reason.text == stripped  # the scheduler's words, kept verbatim
    if reason.signal is not None:
        assert reason.kind is ReasonKind.RAISED_SIGNAL
        assert 1 <= reason.signal <= 127
    if reason.uid is not None:
        assert reason.kind is ReasonKind.CANCELLED
        assert 0 <= reason.uid < 10**10
    if not stripped:
        assert reason.kind is ReasonKind.NONE


@FUZZ
@given(damaged(REASON_SEEDS))
def test_parse_slurm_reason_is_total_on_damaged_recordings(text: str) -> None:
    check_reason(text, parse_slurm_reason(text))  # total: no exception of any kind


@FUZZ
@given(st.text())
def test_parse_slurm_reason_is_total_on_any_text(text: str) -> None:
    check_reason(text, parse_slurm_reason(text))


@given(st.integers(min_value=1, max_value=127), st.sampled_from(["", "(Killed)", "(x y)"]))
def test_a_raised_signal_is_read_exactly(number: int, tail: str) -> None:
    reason = parse_slurm_reason(f"RaisedSignal:{number}{tail}")
    assert (reason.kind, reason.signal) == (ReasonKind.RAISED_SIGNAL, number)


# -- expand_array_spec: a result or ParseError, and the right tasks ----------------------------


@FUZZ
@given(damaged(ARRAY_SEEDS))
def test_expand_array_spec_is_total_on_damaged_recordings(text: str) -> None:
    try:
        tasks = expand_array_spec(text)
    except ParseError as exc:
        refused = str(exc)
    else:
        refused = ""
    if refused:
        assert "array" in refused  # names what was wrong
        return
    assert tasks
    assert list(tasks) == sorted(set(tasks))
    assert all(isinstance(t, int) and 0 <= t < 10**9 for t in tasks)
    assert len(tasks) <= 1_000_000


RANGES = st.lists(
    st.tuples(
        st.integers(min_value=0, max_value=5000),
        st.integers(min_value=0, max_value=300),
        st.integers(min_value=1, max_value=7),
    ),
    min_size=1,
    max_size=6,
)


@FUZZ
@given(RANGES, st.one_of(st.none(), st.integers(min_value=1, max_value=99)), st.booleans())
def test_a_well_formed_spec_expands_to_exactly_its_tasks(
    ranges: list[tuple[int, int, int]], throttle: int | None, bracketed: bool
) -> None:
    parts, expected = [], set()
    for first, length, stride in ranges:
        last = first + length
        if length == 0:
            parts.append(str(first))
            expected.add(first)
        elif stride == 1:
            parts.append(f"{first}-{last}")
            expected.update(range(first, last + 1))
        else:
            parts.append(f"{first}-{last}:{stride}")
            expected.update(range(first, last + 1, stride))
    spec = ",".join(parts) + (f"%{throttle}" if throttle is not None else "")
    if bracketed:
        spec = f"[{spec}]"
    assert expand_array_spec(spec) == tuple(sorted(expected))
