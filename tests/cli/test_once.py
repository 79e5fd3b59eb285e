"""``submit --once``: the generated wrapper, run for real with bash."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from hpcstate.cli._once import ALREADY_THERE, once_command, shell_path


def run(sentinel: str, command: list[str], home: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HOME": str(home)}
    return subprocess.run(
        once_command(sentinel, command), env=env, cwd=home, capture_output=True, text=True
    )


def test_runs_once_then_says_already_there(tmp_path: Path) -> None:
    counter = tmp_path / "count"
    command = ["sh", "-c", f"echo ran >> '{counter}'"]
    first = run("done/step1", command, tmp_path)
    assert first.returncode == 0
    assert (tmp_path / "done" / "step1").is_file()
    second = run("done/step1", command, tmp_path)
    assert second.returncode == 0
    assert second.stderr == f"{ALREADY_THERE}done/step1\n"
    assert counter.read_text() == "ran\n"  # the command did not run again


def test_tilde_expands_on_the_job_side(tmp_path: Path) -> None:
    # The job's HOME (tmp_path), not the HOME of whoever built the wrapper.
    result = run("~/out dir/it's done", ["true"], tmp_path)
    assert result.returncode == 0
    assert (tmp_path / "out dir" / "it's done").exists()
    assert "~" not in shell_path("~/x").replace('"$HOME"', "")


def test_failure_keeps_the_exit_code_and_removes_a_half_built_target(tmp_path: Path) -> None:
    target = tmp_path / "result.txt"
    result = run(str(target), ["sh", "-c", f"echo half > '{target}'; exit 3"], tmp_path)
    assert result.returncode == 3
    assert not target.exists()
    assert not (tmp_path / "result.txt.hpcstate-running").exists()


def test_a_command_that_builds_the_target_keeps_it(tmp_path: Path) -> None:
    target = tmp_path / "result.txt"
    result = run(str(target), ["sh", "-c", f"echo full > '{target}'"], tmp_path)
    assert result.returncode == 0
    assert target.read_text() == "full\n"


def test_the_wrapper_runs_under_strict_bash_options() -> None:
    argv = once_command("s", ["true"])
    assert argv[:2] == ("bash", "-c")
    assert argv[2].startswith("set -euo pipefail\n")
    assert argv[3:] == ("hpcstate-once", "true")


def test_leftovers_of_a_killed_attempt_are_cleaned(tmp_path: Path) -> None:
    target = tmp_path / "model.bin"
    target.write_text("half")
    (tmp_path / "model.bin.hpcstate-running").write_text("")
    result = run(str(target), ["sh", "-c", f"echo whole > '{target}'"], tmp_path)
    assert result.returncode == 0
    assert target.read_text() == "whole\n"  # rebuilt, not "already there"
    assert ALREADY_THERE not in result.stderr


def test_a_signalled_wrapper_cleans_up_and_dies_of_the_same_signal(tmp_path: Path) -> None:
    target = tmp_path / "t"
    env = {**os.environ, "HOME": str(tmp_path)}
    proc = subprocess.Popen(
        once_command(str(target), ["sleep", "30"]), env=env, start_new_session=True
    )
    running = tmp_path / "t.hpcstate-running"
    # Generous bounds on "it happened", not speed claims: a loaded machine is slow.
    deadline = time.monotonic() + 60
    while not running.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert running.exists()
    os.killpg(proc.pid, signal.SIGTERM)  # what a scheduler's cancel does
    assert proc.wait(timeout=120) == -signal.SIGTERM
    assert not running.exists()
    assert not target.exists()


def test_signal_inside_the_payload_is_an_exit_code(tmp_path: Path) -> None:
    # Documented: bash cannot tell "killed by SIGSEGV" from "exit 139" of its child.
    result = run("s", ["sh", "-c", "kill -SEGV $$"], tmp_path)
    assert result.returncode == 139
    assert not (tmp_path / "s").exists()


@pytest.mark.parametrize(
    ("path", "message"),
    [("", "empty"), ("~bob/x", "only '~' and '~/...' are expanded"), ("a\0b", "NUL")],
)
def test_bad_sentinels(path: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        once_command(path, ["true"])


def test_needs_a_command() -> None:
    with pytest.raises(ValueError, match="needs a command"):
        once_command("s", [])
