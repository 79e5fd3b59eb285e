"""Hostile names and out-of-range values (issue 14): the installed ``hpcstate`` script,
the real local backend, a real SQLite file in tmp_path."""

from __future__ import annotations

from pathlib import Path

import pytest

from .conftest import hpcstate

HOSTILE = "a\nb\x1b[2J\x1b]0;owned\x07\u202ec"
SHOWN = "a\\nb\\x1b[2J\\x1b]0;owned\\x07\\u202ec"


def test_a_name_cannot_write_to_the_terminal(cli_env: dict[str, str]) -> None:
    submitted = hpcstate("submit", "--name", HOSTILE, "--watch", "--", "true", env=cli_env)
    assert submitted.code == 0, submitted.err
    run_id = submitted.out.splitlines()[0]
    listing = hpcstate("list", env=cli_env)
    assert listing.code == 0, listing.err
    lines = listing.out.splitlines()
    assert len(lines) == 2  # the header and one run: the newline did not start a row
    assert lines[1].startswith(run_id)
    assert lines[1].endswith(SHOWN)
    status = hpcstate("status", run_id, env=cli_env)
    assert f"name         {SHOWN}\n" in status.out
    for text in (listing.out, status.out, listing.err, status.err):
        assert not {"\x1b", "\x07", "\u202e"} & set(text)
    # --json keeps the name exact (JSON escapes it).
    [record] = hpcstate("list", "--json", env=cli_env).records()
    assert record["name"] == HOSTILE


@pytest.mark.parametrize("value", ["1000000000d", "99999999999999999999s", "99999999999:00:00"])
def test_an_enormous_time_limit_is_a_usage_error(cli_env: dict[str, str], value: str) -> None:
    result = hpcstate("submit", "--time-limit", value, "--", "true", env=cli_env)
    assert result.code == 64, result.err
    assert result.err.endswith(
        f"hpcstate: error: -t/--time: duration {value!r} is too long (at most 365000 days)\n"
    )
    assert "internal error" not in result.err
    assert hpcstate("list", "--json", "--cached", env=cli_env).out == ""


def test_an_enormous_memory_size_is_a_usage_error(cli_env: dict[str, str]) -> None:
    result = hpcstate("submit", "--mem", "9" * 400, "--", "true", env=cli_env)
    assert result.code == 64, result.err
    assert "is too large" in result.err


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("--timeout", "inf", "--timeout: cannot read duration 'inf'"),
        ("--timeout", "bogus", "--timeout: cannot read duration 'bogus'"),
        ("--interval", "nan", "--interval: cannot read duration 'nan'"),
        ("--interval", "0", "--interval: must be more than 0 seconds, got '0'"),
    ],
)
def test_watch_options_are_checked_before_anything_is_submitted(
    cli_env: dict[str, str], tmp_path: Path, option: str, value: str, message: str
) -> None:
    marker = tmp_path / "ran"
    result = hpcstate("submit", "--watch", option, value, "--", "touch", str(marker), env=cli_env)
    assert result.code == 64, result.err
    assert f"hpcstate: error: {message}" in result.err
    # Nothing was stored, so nothing was submitted (and the job cannot have run).
    assert hpcstate("list", "--json", "--cached", env=cli_env).out == ""
    assert not marker.exists()


def test_log_lines_are_escaped_too() -> None:
    import io
    import logging

    from hpcstate.cli._app import _Damage, _log_handler

    stream = io.StringIO()
    handler = _log_handler(stream, debug=False, damage=_Damage())
    record = logging.LogRecord("hpcstate.x", logging.WARNING, "f", 1, "job %s", (HOSTILE,), None)
    handler.handle(record)
    assert stream.getvalue() == f"hpcstate: warning: job {SHOWN}\n"
