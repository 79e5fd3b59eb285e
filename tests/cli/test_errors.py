"""Exit statuses that say whose problem it is (issue 18), through the installed
``hpcstate`` script: the environment's (73, 74), the backend's (69), usage (64),
and ``--json`` errors as one JSON object on stderr.

The read-only and unwritable cases use a REAL tmpfs mounted by the test (the suite runs
as root, for whom file modes do not forbid anything); they skip, saying why, where
mounting is not permitted.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import hpcstate


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Path]:
    point = tmp_path / "tmpfs"
    point.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=4m,mode=0755", "tmpfs", str(point)],
        capture_output=True,
        text=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"mounting a tmpfs is not permitted here: {mounted.stderr.strip()}")
    try:
        yield point
    finally:
        if subprocess.run(["umount", str(point)], check=False).returncode != 0:
            subprocess.run(["umount", "-l", str(point)], check=False)


def _read_only(point: Path) -> None:
    subprocess.run(["mount", "-o", "remount,ro", str(point)], check=True)


def test_a_state_directory_under_a_file_is_73(cli_env: dict[str, str], tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("", encoding="utf-8")
    env = {**cli_env, "HPCSTATE_DB": str(blocker / "state" / "hpcstate.db")}
    result = hpcstate("submit", "--", "true", env=env)
    assert result.code == 73, result.err
    assert "internal error" not in result.err
    assert str(blocker / "state") in result.err
    as_json = hpcstate("list", "--json", env=env)
    assert as_json.code == 73
    [error] = [json.loads(line) for line in as_json.err.splitlines()]
    assert error["schema"] == 1
    assert (error["error"], error["code"]) == ("cannot_create", 73)
    assert error["refers_to"] == {"kind": "path", "value": str(blocker / "state")}


def test_a_state_directory_on_a_read_only_disk_is_73(cli_env: dict[str, str], tmpfs: Path) -> None:
    _read_only(tmpfs)
    env = {**cli_env, "HPCSTATE_DB": str(tmpfs / "state" / "hpcstate.db")}
    result = hpcstate("submit", "--", "true", env=env)
    assert result.code == 73, result.err
    assert "internal error" not in result.err
    assert f"cannot create the state directory {tmpfs / 'state'}" in result.err


def test_a_read_only_database_reads_and_refuses_writes_with_74(
    cli_env: dict[str, str], tmpfs: Path
) -> None:
    env = {**cli_env, "HPCSTATE_DB": str(tmpfs / "hpcstate.db")}
    first = hpcstate("submit", "--name", "before", "--watch", "--", "true", env=env)
    assert first.code == 0, first.err
    _read_only(tmpfs)
    listing = hpcstate("list", "--cached", env=env)
    assert listing.code == 0, listing.err
    assert listing.out.splitlines()[1].endswith("before")
    result = hpcstate("submit", "--", "true", env=env)
    assert result.code == 74, result.err
    assert "internal error" not in result.err
    assert "is read-only" in result.err or "not writable" in result.err
    as_json = hpcstate("submit", "--json", "--", "true", env=env)
    [error] = [json.loads(line) for line in as_json.err.splitlines()]
    assert (error["error"], error["code"]) == ("io_error", 74)
    assert error["refers_to"] == {"kind": "path", "value": str(tmpfs / "hpcstate.db")}


def test_json_usage_errors_are_one_object(cli_env: dict[str, str]) -> None:
    result = hpcstate("submit", "--json", "--time-limit", "soon", "--", "true", env=cli_env)
    assert result.code == 64
    assert json.loads(result.err) == {
        "schema": 1,
        "error": "usage",
        "code": 64,
        "message": "-t/--time: cannot read duration 'soon': expected e.g. 90s, 15m, 1h30m, 2d, "
        "1:30:00",
        "refers_to": {"kind": "option", "value": "-t/--time"},
    }
    bogus = hpcstate("list", "--json", "--bogus", env=cli_env)
    assert bogus.code == 64
    assert json.loads(bogus.err) == {
        "schema": 1,
        "error": "usage",
        "code": 64,
        "message": "unrecognized arguments: --bogus",
        "refers_to": None,
    }
    unknown = hpcstate("status", "--json", "nosuchrun", env=cli_env)
    assert unknown.code == 66
    error = json.loads(unknown.err)
    assert (error["error"], error["refers_to"]) == (
        "unknown_run",
        {"kind": "run", "value": "nosuchrun"},
    )


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])  # closed again when this returns


def test_an_unreachable_ssh_host_at_submit_is_69_not_pending(
    cli_env: dict[str, str], tmp_path: Path
) -> None:
    config = tmp_path / "config.toml"
    config.write_text(
        f'[backends.remote]\nkind = "slurm"\nhost = "root@127.0.0.1:{_closed_port()}"\n'
        "connect_timeout = 5\n",
        encoding="utf-8",
    )
    env = {**cli_env, "HPCSTATE_CONFIG": str(config)}
    result = hpcstate("submit", "--backend", "remote", "--", "true", env=env, timeout=600)
    assert result.code == 69, (result.out, result.err)
    assert result.out == ""  # no run id: nothing was queued
    assert "remote" in result.err
    runs = hpcstate("list", "--json", "--cached", env=env).records()
    states = [run["state"] for run in runs]
    # Never a silent "pending": failed, or kept pending only when the tracker cannot
    # tell whether the job was submitted, and then the message says so.
    assert states in ([], ["failed"], ["pending"])
    if states == ["pending"]:
        assert "the job may have been submitted" in result.err


@pytest.fixture
def sshd(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    """A real OpenSSH server on 127.0.0.1 (scripts/sshd-loopback), stopped afterwards."""
    script = Path(__file__).resolve().parents[2] / "scripts" / "sshd-loopback"
    directory = tmp_path / "sshd"
    port = _closed_port()
    started = subprocess.run(
        [str(script), "start", str(port), str(directory)],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    if started.returncode != 0:
        problem = f"scripts/sshd-loopback start failed: {started.stderr.strip()}"
        if os.environ.get("HPCSTATE_REQUIRE_CLUSTER") == "1":
            pytest.fail(f"required system missing under CI: {problem}")
        pytest.skip(problem)
    try:
        yield port, directory
    finally:
        subprocess.run([str(script), "stop", str(directory)], timeout=60, check=False)


@pytest.mark.sshd
def test_a_refused_host_key_at_submit_is_69_not_pending(
    cli_env: dict[str, str], tmp_path: Path, sshd: tuple[int, Path]
) -> None:
    port, directory = sshd
    empty = tmp_path / "known_hosts"  # the server's key is unknown here
    empty.write_text("", encoding="utf-8")
    config = tmp_path / "config.toml"
    config.write_text(
        f'[backends.remote]\nkind = "slurm"\nhost = "root@127.0.0.1:{port}"\n'
        f'known_hosts = "{empty}"\nclient_keys = ["{directory / "id_ed25519"}"]\n',
        encoding="utf-8",
    )
    env = {**cli_env, "HPCSTATE_CONFIG": str(config)}
    result = hpcstate("submit", "--backend", "remote", "--json", "--", "true", env=env)
    assert result.code == 69, result.err
    [error] = [json.loads(line) for line in result.err.splitlines()]
    assert (error["error"], error["refers_to"]) == (
        "unavailable",
        {"kind": "backend", "value": "remote"},
    )
    assert "host key" in error["message"].lower()
    [record] = result.records()  # the run, as stored: failed, it never ran
    assert (record["state"], record["reason"]["kind"]) == ("failed", "submit_rejected")
    [stored] = hpcstate("list", "--json", "--cached", env=env).records()
    assert stored["state"] == "failed"
