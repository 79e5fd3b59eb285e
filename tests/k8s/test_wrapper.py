"""The entrypoint wrapper, run for real as a local process (no container needed)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hpcstate import ExitStatus

WRAPPER = [sys.executable, "-m", "hpcstate_k8s.wrapper"]


def run(tmp_path: Path, *command: str) -> tuple[int, str]:
    log = tmp_path / "termination-log"
    env = {**os.environ, "HPCSTATE_TERMINATION_LOG": str(log)}
    done = subprocess.run([*WRAPPER, "--", *command], env=env, timeout=60, check=False)
    return done.returncode, log.read_text() if log.exists() else ""


def test_exit_code_is_reported_and_kept(tmp_path: Path) -> None:
    code, message = run(tmp_path, "sh", "-c", "exit 3")
    assert code == 3
    assert json.loads(message) == {"exit": 3}
    assert ExitStatus.from_termination_message(message) == ExitStatus.exited(3)


def test_a_real_exit_137_is_an_exit_not_a_signal(tmp_path: Path) -> None:
    code, message = run(tmp_path, "sh", "-c", "exit 137")
    assert (code, json.loads(message)) == (137, {"exit": 137})


def test_sigkill_of_the_child_is_a_signal(tmp_path: Path) -> None:
    code, message = run(tmp_path, "sh", "-c", "kill -9 $$")
    assert code == 137  # what the container runtime will see, as for an unwrapped kill
    assert ExitStatus.from_termination_message(message) == ExitStatus.killed(9)


def test_command_not_found(tmp_path: Path) -> None:
    code, message = run(tmp_path, "/nonexistent/hpcstate-test-binary")
    assert (code, json.loads(message)) == (127, {"exit": 127})


def test_usage_error_writes_nothing(tmp_path: Path) -> None:
    log = tmp_path / "termination-log"
    env = {**os.environ, "HPCSTATE_TERMINATION_LOG": str(log)}
    done = subprocess.run([*WRAPPER, "sh"], env=env, capture_output=True, text=True, check=False)
    assert done.returncode == 2
    assert "usage" in done.stderr
    assert not log.exists()


def _start(tmp_path: Path, script: str) -> tuple[subprocess.Popen[bytes], Path]:
    log = tmp_path / "termination-log"
    ready = tmp_path / "ready"
    env = {**os.environ, "HPCSTATE_TERMINATION_LOG": str(log), "READY": str(ready)}
    proc = subprocess.Popen([*WRAPPER, "--", "sh", "-c", script], env=env)
    deadline = time.monotonic() + 30
    while not ready.exists():  # the child has installed its traps
        if time.monotonic() > deadline or proc.poll() is not None:
            proc.kill()
            pytest.fail("the wrapped child never started")
        time.sleep(0.01)
    return proc, log


def test_sigterm_is_forwarded_and_the_childs_death_reported(tmp_path: Path) -> None:
    # exec: the shell becomes sleep, whose default TERM action is to die.
    proc, log = _start(tmp_path, 'touch "$READY"; exec sleep 30')
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 143
    assert ExitStatus.from_termination_message(log.read_text()) == ExitStatus.killed(15)


def test_a_child_that_handles_sigterm_reports_its_own_exit(tmp_path: Path) -> None:
    proc, log = _start(tmp_path, 'trap "exit 7" TERM; touch "$READY"; while :; do sleep 0.05; done')
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 7
    assert json.loads(log.read_text()) == {"exit": 7}


def test_sigint_is_forwarded_too(tmp_path: Path) -> None:
    proc, log = _start(tmp_path, 'trap "exit 9" INT; touch "$READY"; while :; do sleep 0.05; done')
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=30) == 9
    assert json.loads(log.read_text()) == {"exit": 9}


def test_unwritable_log_still_exits_with_the_code(tmp_path: Path) -> None:
    env = {**os.environ, "HPCSTATE_TERMINATION_LOG": str(tmp_path / "no" / "such" / "dir")}
    done = subprocess.run(
        [*WRAPPER, "--", "sh", "-c", "exit 4"], env=env, capture_output=True, text=True, check=False
    )
    assert done.returncode == 4
    assert "cannot write" in done.stderr


def test_an_ignored_sigchld_inherited_from_the_parent_does_not_lose_the_exit(
    tmp_path: Path,
) -> None:
    # SIG_IGN survives exec; with it the kernel reaps the child itself and waitpid finds
    # nothing. The wrapper takes the default back, so the real exit 3 is reported.
    log = tmp_path / "termination-log"
    env = {**os.environ, "HPCSTATE_TERMINATION_LOG": str(log)}
    ignore_then_exec = (
        "import os, signal, sys\n"
        "signal.signal(signal.SIGCHLD, signal.SIG_IGN)\n"
        "os.execv(sys.executable, [sys.executable, *sys.argv[1:]])\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", ignore_then_exec, *WRAPPER[1:], "--", "sh", "-c", "exit 3"],
        env=env,
        timeout=60,
        check=False,
    )
    assert done.returncode == 3
    assert json.loads(log.read_text()) == {"exit": 3}


def test_a_lost_child_status_is_never_reported_as_success(tmp_path: Path) -> None:
    # waitpid finding no child (someone else reaped it): no message, a distinct code, why.
    from hpcstate_k8s.wrapper import LOST_CHILD

    log = tmp_path / "termination-log"
    env = {**os.environ, "HPCSTATE_TERMINATION_LOG": str(log)}
    script = (
        "import os, sys\n"
        "from hpcstate_k8s import wrapper\n"
        "def no_child(pid, options):\n"
        "    raise ChildProcessError(10, 'No child processes')\n"
        "os.waitpid = no_child\n"
        "sys.exit(wrapper.run(['--', 'sh', '-c', 'exit 3']))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == LOST_CHILD != 0
    assert not log.exists()
    assert "lost the exit status of sh" in done.stderr
    assert "No child processes" in done.stderr
