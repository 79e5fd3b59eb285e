"""``main(argv)`` in-process: output shapes, the progress display, broken plugins."""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import Any

import pytest

from hpcstate import State, registry
from hpcstate.cli import main, run_cli
from hpcstate.cli._progress import Progress, progress_line

from .conftest import invoke


def test_main_takes_argv_and_returns_the_status(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.startswith("hpcstate ")
    assert main([]) == 64  # no command: help on stderr, usage error


def test_submit_and_watch_in_process(cli_env: dict[str, str], record_validator: Any) -> None:
    result = invoke("submit", "--watch", "--exit-status", "--", "sh", "-c", "exit 5", env=cli_env)
    assert result.code == 5, result.err
    run_id = result.out.splitlines()[0]
    status = invoke("status", run_id, env=cli_env)
    assert status.code == 0
    lines = dict(line.split(None, 1) for line in status.out.splitlines() if " " in line)
    assert lines["run"].strip() == run_id
    assert lines["exit"].strip() == "exit 5"
    assert lines["state"].strip() == "failed (confirmed by process)"
    listing = invoke("list", "--state", "failed", "--json", env=cli_env)
    [record] = listing.records()
    assert record_validator.is_valid(record)
    assert record["id"] == run_id
    assert invoke("list", "--state", "completed", "--json", env=cli_env).out == ""


def test_progress_on_a_terminal(cli_env: dict[str, str]) -> None:
    out, err = io.StringIO(), io.StringIO()
    code = run_cli(
        ["submit", "--watch", "--", "sh", "-c", "sleep 1.5"],
        env=cli_env,
        stdout=out,
        stderr=err,
        tty=True,
    )
    assert code == 0, err.getvalue()
    text = out.getvalue()
    assert "\r\x1b[Kwatching 1 run, 0m0" in text  # the redrawn status line
    assert text.endswith("completed: exit 0 (confirmed by process)\n")


def test_no_progress_without_a_terminal(cli_env: dict[str, str]) -> None:
    result = invoke("submit", "--watch", "--", "sh", "-c", "sleep 1.5", env=cli_env)
    assert result.code == 0
    assert "\r" not in result.out
    assert "\x1b" not in result.out
    run_id = result.out.splitlines()[0]
    # Plain lines: each change once, then the verdict.
    assert result.out.splitlines()[1:] == [
        f"{run_id} running",
        f"{run_id} completed: exit 0 (confirmed by process)",
    ]


def test_progress_line_counts() -> None:
    states = {"a": State.RUNNING, "b": State.COMPLETED, "c": State.QUEUED, "d": State.COMPLETED}
    line = progress_line(states, runs=2, elapsed_s=65)
    assert line == "watching 2 runs (4 jobs), 1m05s: 1 queued, 1 running, 2 completed [2/4 done]"


def test_progress_redraws_only_on_a_terminal() -> None:
    tty, plain = io.StringIO(), io.StringIO()
    for stream, is_tty in ((tty, True), (plain, False)):
        progress = Progress(stream, tty=is_tty, runs=1)
        progress.status({"a": State.RUNNING}, elapsed_s=1)
        progress.line("r1 failed: exit 3 (confirmed by process)")
        progress.close()
    assert tty.getvalue() == (
        "\r\x1b[Kwatching 1 run, 0m01s: 1 running [0/1 done]"
        "\r\x1b[Kr1 failed: exit 3 (confirmed by process)\n"
    )
    assert plain.getvalue() == "r1 failed: exit 3 (confirmed by process)\n"


@pytest.fixture
def broken_backend() -> Iterator[str]:
    registry.register("broken", "hpcstate_no_such_module:BACKEND")
    try:
        yield "broken"
    finally:
        registry.unregister("broken")


def test_a_broken_backend_is_listed_with_its_error(
    cli_env: dict[str, str], broken_backend: str
) -> None:
    result = invoke("backends", env=cli_env)
    assert result.code == 0
    assert any(line.split()[:2] == ["broken", "-"] for line in result.out.splitlines())
    assert "No module named 'hpcstate_no_such_module'" in result.out
    records = {r["name"]: r for r in invoke("backends", "--json", env=cli_env).records()}
    assert records["broken"]["ok"] is False
    assert "cannot be imported" in records["broken"]["error"]
    assert records["local"]["ok"] is True


def test_submit_needs_exactly_one_payload(cli_env: dict[str, str], tmp_path: Any) -> None:
    script = tmp_path / "job.sh"
    script.write_text("#!/bin/sh\nexit 0\n")
    both = invoke("submit", "--script", str(script), "--", "true", env=cli_env)
    assert (both.code, both.err) == (
        64,
        "hpcstate: error: give either --script FILE or -- COMMAND, not both\n",
    )
    once = invoke("submit", "--script", str(script), "--once", "s", env=cli_env)
    assert once.code == 64
    assert "--once wraps a command" in once.err
    ok = invoke("submit", "--script", str(script), "--watch", "--exit-status", env=cli_env)
    assert ok.code == 0, ok.err


def test_help_lists_the_exit_statuses(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["watch", "--help"])
    text = capsys.readouterr().out
    for code in ("64", "66", "69", "124", "201", "207", "208"):
        assert f"\n  {code} " in text
