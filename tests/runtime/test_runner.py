"""LocalRunner with real processes, and the pure command-building helpers."""

from __future__ import annotations

import json
import os
import shlex
import time
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hpcstate import ConfigError
from hpcstate.backend import BackendConfig, Command
from hpcstate.runtime import LocalRunner, SshRunner, make_runner
from hpcstate.runtime._runner import clean_environment, parse_target
from hpcstate.runtime._ssh import remote_command_line, reporting_group, split_group_line

NASTY = ["a b", "it's", 'say "hi"', "$HOME", "; rm -rf /", "`id`", "tab\there", "new\nline", ""]


async def test_argv_reaches_the_program_unchanged() -> None:
    script = "import json, sys; print(json.dumps(sys.argv[1:]))"
    result = await LocalRunner().run(Command(argv=["python3", "-c", script, *NASTY]))
    assert result.returncode == 0
    assert json.loads(result.stdout) == NASTY


async def test_environment_is_cleaned_by_name_and_prefix() -> None:
    runner = LocalRunner(
        base_env={
            "PATH": os.environ["PATH"],
            "SLURM_JOB_ID": "7",
            "SLURM_CONF": "x",
            "KEEP": "1",
            "DROP": "1",
        }
    )
    command = Command(
        argv=["env"], unset_env=["SLURM_*", "DROP"], env={"SLURM_CONF": "/etc/slurm.conf"}
    )
    result = await runner.run(command)
    lines = set(result.stdout.splitlines())
    assert "KEEP=1" in lines
    assert "SLURM_CONF=/etc/slurm.conf" in lines  # set explicitly: kept
    assert not any(line.startswith(("SLURM_JOB_ID=", "DROP=")) for line in lines)


async def test_stdin_is_passed() -> None:
    result = await LocalRunner().run(Command(argv=["cat"], stdin="hello\n"))
    assert result.stdout == "hello\n"


async def test_timeout_gives_none_and_kills_the_process_group(tmp_path: Path) -> None:
    pidfile = tmp_path / "child.pid"
    # The shell starts a grandchild in the background, in the same process group.
    script = f"sleep 60 & echo $! > {pidfile}; echo started; wait"
    result = await LocalRunner().run(Command(argv=["sh", "-c", script], timeout=0.5))
    assert result.returncode is None
    assert "started" in result.stdout  # what it printed before the timeout is kept
    grandchild = int(pidfile.read_text())
    for _ in range(100):
        try:
            os.kill(grandchild, 0)
        except ProcessLookupError:
            break
        time.sleep(0.02)
    else:
        pytest.fail(f"grandchild {grandchild} survived the timeout")


async def test_missing_program_is_an_ordinary_failed_command() -> None:
    result = await LocalRunner().run(Command(argv=["/nonexistent/sbatch"]))
    assert result.returncode == 127
    assert "command not found" in result.stderr


async def test_non_zero_exit_is_reported() -> None:
    result = await LocalRunner().run(Command(argv=["sh", "-c", "echo oops >&2; exit 3"]))
    assert (result.returncode, result.stderr) == (3, "oops\n")


def test_bad_unset_pattern_is_refused() -> None:
    with pytest.raises(ValueError, match="not a variable name"):
        clean_environment({}, Command(argv=["x"], unset_env=["A;B*"]))


# -- the command line sent over SSH ---------------------------------------------------------


# Any text a program can receive: everything but NUL (a Command refuses it).
@given(st.lists(st.text(alphabet=st.characters(exclude_characters="\0")), min_size=1, max_size=6))
def test_remote_command_line_quotes_argv_exactly_once(argv: list[str]) -> None:
    line = remote_command_line(Command(argv=argv))
    # What a POSIX shell on the far side will split it into:
    assert shlex.split(line) == argv


def test_remote_environment_goes_in_an_env_prefix() -> None:
    line = remote_command_line(
        Command(argv=["squeue", "-j", "1 2"], env={"A": "x y"}, unset_env=["SLURM_CONF"])
    )
    assert shlex.split(line) == ["env", "-u", "SLURM_CONF", "A=x y", "squeue", "-j", "1 2"]


def test_remote_prefix_unset_runs_through_sh_with_argv_as_arguments() -> None:
    line = remote_command_line(Command(argv=["echo", "$x"], unset_env=["SLURM_*"]))
    words = shlex.split(line)
    assert words[0] == "env"
    assert "HPCSTATE_UNSET_PREFIXES=SLURM_" in words
    assert words[-2:] == ["echo", "$x"]  # still one argument each, never re-parsed


def test_group_wrapper_keeps_argv_and_is_stripped_from_stderr() -> None:
    line = reporting_group(remote_command_line(Command(argv=["echo", "a b", "$x"])))
    words = shlex.split(line)
    assert words[:4] == ["sh", "-c", 'echo "hpcstate-pgid:$$" >&2; exec "$@"', "sh"]
    assert words[4:] == ["echo", "a b", "$x"]
    assert split_group_line("hpcstate-pgid:4242\nreal error\n") == (4242, "real error\n")
    assert split_group_line("no wrapper line\n") == (None, "no wrapper line\n")


# -- targets and the factory ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("login1", (None, "login1", None)),
        ("alice@login1", ("alice", "login1", None)),
        ("alice@login1:2222", ("alice", "login1", 2222)),
        ("[::1]:22", (None, "::1", 22)),
        ("bob@[fe80::1]", ("bob", "fe80::1", None)),
    ],
)
def test_parse_target(text: str, expected: tuple[str | None, str, int | None]) -> None:
    assert parse_target(text) == expected


@pytest.mark.parametrize("text", ["@host", "host:99999", "host:abc", "[::1", ""])
def test_parse_target_errors_name_the_target(text: str) -> None:
    with pytest.raises(ConfigError, match="SSH target"):
        parse_target(text)


@given(st.text())
def test_parse_target_raises_only_config_error(text: str) -> None:
    try:
        user, host, port = parse_target(text)
    except ConfigError:
        return
    assert host  # a parsed target always names a host
    assert user is None or user
    assert port is None or 0 < port < 65536


def test_make_runner_local_and_ssh() -> None:
    assert isinstance(make_runner(BackendConfig(name="l", kind="slurm")), LocalRunner)
    runner = make_runner(
        BackendConfig(
            name="hpc",
            kind="slurm",
            host="alice@login1:2200",
            options={
                "known_hosts": "/kh",
                "client_keys": "/key",
                "jump_host": "gw",
                "connect_timeout": 3,
            },
        )
    )
    assert isinstance(runner, SshRunner)
    assert (runner.username, runner.host, runner.port) == ("alice", "login1", 2200)
    assert runner.known_hosts == "/kh"
    assert runner.client_keys == ("/key",)
    assert runner.jump_host == "gw"
    assert runner.connect_timeout == 3.0


def test_make_runner_options_come_from_options_when_not_in_host() -> None:
    runner = make_runner(
        BackendConfig(
            name="x", kind="slurm", host="login1", options={"ssh_port": 2201, "ssh_user": "bob"}
        )
    )
    assert isinstance(runner, SshRunner)
    assert (runner.username, runner.port) == ("bob", 2201)


def test_make_runner_rejects_bad_options_by_name() -> None:
    with pytest.raises(ConfigError, match="ssh_port must be a int"):
        make_runner(BackendConfig(name="x", kind="slurm", host="h", options={"ssh_port": "22"}))
    with pytest.raises(ConfigError, match="given but no host"):
        make_runner(BackendConfig(name="x", kind="slurm", options={"jump_host": "gw"}))


@pytest.mark.parametrize("port", ["²", "٢٢", "22²", "¹2"])
def test_a_port_of_non_ascii_digits_is_a_config_error(port: str) -> None:
    # str.isdigit() accepts "²" (int() does not) and "٢٢" (int() reads it as 22).
    with pytest.raises(ConfigError, match="is not 1-65535"):
        parse_target(f"host:{port}")


@pytest.mark.parametrize("number", ["²", "٣", "1²"])
def test_a_group_line_with_non_ascii_digits_is_left_in_stderr(number: str) -> None:
    stderr = f"hpcstate-pgid:{number}\nreal error\n"
    assert split_group_line(stderr) == (None, stderr)


@given(st.text())
def test_split_group_line_never_raises(text: str) -> None:
    group, rest = split_group_line("hpcstate-pgid:" + text)
    assert group is None or group >= 0
    assert isinstance(rest, str)
