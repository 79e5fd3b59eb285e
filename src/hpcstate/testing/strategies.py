"""Hypothesis strategies for backend authors: job specs, command results, garbled output.

Needs hypothesis (``pip install 'hpcstate[testing]'``).
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from hypothesis import strategies as st

from hpcstate import ExitStatus
from hpcstate.backend import CommandResult, JobSpec

#: Text that schedulers' parsers meet in the wild: control characters, separators,
#: JSON punctuation, very long lines.
_NASTY = st.sampled_from(
    [
        "",
        "\n",
        "|",
        "^|^",
        ":",
        "{",
        "}",
        "[",
        "]",
        '"',
        "null",
        "\x00",
        "\t",
        "-1",
        "4294967296",
        "N/A",
        "(null)",
        "Unknown",
        "\u00e9",
        "\U0001f600",
        "1" * 400,
    ]
)


def _argv_text() -> st.SearchStrategy[str]:
    return st.text(
        st.characters(codec="utf-8", exclude_characters="\x00"),
        min_size=1,
        max_size=30,
    )


def aware_datetimes() -> st.SearchStrategy[datetime]:
    """Timezone-aware datetimes with odd offsets (naive ones are bugs in hpcstate)."""
    offsets = st.integers(-14 * 60, 14 * 60).map(lambda m: timezone(timedelta(minutes=m)))
    return st.datetimes(
        min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=offsets
    )


def exit_statuses() -> st.SearchStrategy[ExitStatus]:
    return st.one_of(
        st.integers(0, 255).map(ExitStatus.exited),
        st.integers(1, 64).map(ExitStatus.killed),
        st.integers(129, 192).map(lambda c: ExitStatus.from_shell_code(c)),
    )


def job_specs(*, with_array: bool = False) -> st.SearchStrategy[JobSpec]:
    """Valid JobSpecs whose user-supplied texts contain shell metacharacters."""
    names = st.text(
        st.characters(whitelist_categories=("L", "N"), whitelist_characters="_-."),
        min_size=1,
        max_size=20,
    )
    command = st.lists(_argv_text(), min_size=1, max_size=4).map(tuple)
    return st.builds(
        JobSpec,
        command=command,
        name=names,
        time_limit=st.none() | st.integers(60, 7 * 86400).map(lambda s: timedelta(seconds=s)),
        cpus=st.none() | st.integers(1, 128),
        memory_bytes=st.none() | st.integers(1, 2**40),
        array=st.just("1-3") if with_array else st.none(),
    )


def command_results(argv: tuple[str, ...] = ("cmd",)) -> st.SearchStrategy[CommandResult]:
    """Arbitrary results: any exit status, any text on stdout and stderr."""
    text = st.one_of(st.text(max_size=300), st.lists(_NASTY, max_size=20).map("".join))
    return st.builds(
        CommandResult,
        argv=st.just(argv),
        returncode=st.none() | st.integers(-255, 255),
        stdout=text,
        stderr=text,
    )


def garbled(text: str) -> st.SearchStrategy[str]:
    """Damaged versions of real output: cut short, lines dropped or swapped, bytes replaced.

    Reaches deeper into a parser than random text: most of the input still looks right.
    """
    if not text:
        return st.just("")
    lines = text.splitlines(keepends=True)

    def cut(at: int) -> str:
        return text[:at]

    def drop(index: int) -> str:
        return "".join(lines[:index] + lines[index + 1 :])

    def replace(args: tuple[int, str]) -> str:
        at, new = args
        return text[:at] + new + text[at + 1 :]

    position = st.integers(0, len(text) - 1)
    return st.one_of(
        position.map(cut),
        st.integers(0, max(0, len(lines) - 1)).map(drop),
        st.tuples(position, _NASTY).map(replace),
        st.tuples(position, st.text(max_size=3)).map(replace),
    )
