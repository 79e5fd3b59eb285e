"""SshRunner against a real OpenSSH server on 127.0.0.1 (scripts/sshd-loopback)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from hpcstate import TransportError
from hpcstate.backend import BackendConfig, Command
from hpcstate.runtime import HostKeyRejected, SshRunner, make_runner

from .conftest import Sshd

pytestmark = pytest.mark.sshd

NASTY = ["a b", "it's", 'say "hi"', "$HOME", "; echo injected", "`id`", "*", "back\\slash", ""]


@pytest.fixture
async def runner(sshd: Sshd) -> AsyncIterator[SshRunner]:
    ssh = SshRunner(
        "127.0.0.1",
        port=sshd.port,
        username="root",
        known_hosts=sshd.known_hosts,
        client_keys=[sshd.key],
        connect_timeout=10,
    )
    yield ssh
    await ssh.close()


async def test_arguments_arrive_unchanged(runner: SshRunner) -> None:
    script = "import json, sys; print(json.dumps(sys.argv[1:]))"
    result = await runner.run(Command(argv=["python3", "-c", script, *NASTY]))
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == NASTY
    assert "injected" not in result.stdout.replace("; echo injected", "")


async def test_one_connection_for_many_commands(runner: SshRunner, sshd: Sshd) -> None:
    for n in range(5):
        result = await runner.run(Command(argv=["echo", str(n)]))
        assert result.stdout == f"{n}\n"
    assert runner.connections_opened == 1
    assert len(sshd.session_pids()) == 1  # one sshd session process serves them all


async def test_exit_status_and_stderr_and_stdin(runner: SshRunner) -> None:
    result = await runner.run(Command(argv=["sh", "-c", "cat; echo err >&2; exit 7"], stdin="in\n"))
    assert (result.returncode, result.stdout, result.stderr) == (7, "in\n", "err\n")


async def test_environment_set_and_unset_remotely(runner: SshRunner) -> None:
    command = Command(
        argv=["sh", "-c", 'echo "A=$A B=${B-unset} C=${SLURM_C-unset} D=${SLURM_D-unset}"'],
        env={"A": "x y", "B": "1", "SLURM_D": "kept"},
        unset_env=["B", "SLURM_*"],
    )
    # B is both unset and set: the set wins (env applies -u first, then assignments).
    result = await runner.run(command)
    assert result.stdout == "A=x y B=1 C=unset D=kept\n"


async def test_timeout_gives_none_and_kills_the_remote_command(
    runner: SshRunner, tmp_path: Path
) -> None:
    pidfile = tmp_path / "remote.pid"
    script = f"sleep 60 & echo $! > {pidfile}; wait"
    result = await runner.run(Command(argv=["sh", "-c", script], timeout=0.5))
    assert result.returncode is None
    assert "hpcstate-pgid" not in result.stderr
    remote_child = int(pidfile.read_text())
    for _ in range(200):
        if not Path(f"/proc/{remote_child}").exists():
            break
        await asyncio.sleep(0.02)
    else:
        pytest.fail(f"remote process {remote_child} survived the timeout")
    follow_up = await runner.run(Command(argv=["echo", "still usable"]))
    assert follow_up.stdout == "still usable\n"


async def test_reconnects_after_the_connection_is_killed(runner: SshRunner, sshd: Sshd) -> None:
    assert (await runner.run(Command(argv=["true"]))).returncode == 0
    sessions = sshd.session_pids()
    assert sessions
    for pid in sessions:
        os.kill(pid, signal.SIGKILL)
    # The next commands open a new connection by themselves.
    result = None
    for _ in range(3):
        try:
            result = await runner.run(Command(argv=["echo", "back"]))
            break
        except TransportError:
            continue  # the drop was noticed mid-command: that one is reported, not retried
    assert result is not None
    assert result.stdout == "back\n"
    assert runner.connections_opened == 2


async def test_a_drop_during_a_command_is_a_transport_error(runner: SshRunner) -> None:
    # The command kills its own sshd session: the answer is lost, which must not look
    # like an exit status.
    with pytest.raises(TransportError):
        await runner.run(Command(argv=["sh", "-c", "kill -KILL $PPID; sleep 5"]))
    assert (await runner.run(Command(argv=["echo", "ok"]))).stdout == "ok\n"


async def test_host_key_mismatch_is_refused(sshd: Sshd, tmp_path: Path) -> None:
    impostor = tmp_path / "impostor"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(impostor)], check=True)
    known = tmp_path / "known_hosts"
    known.write_text(
        f"[127.0.0.1]:{sshd.port} {' '.join(Path(f'{impostor}.pub').read_text().split()[:2])}\n"
    )
    ssh = SshRunner(
        "127.0.0.1", port=sshd.port, username="root", known_hosts=str(known), client_keys=[sshd.key]
    )
    with pytest.raises(HostKeyRejected, match="host key not verifiable"):
        await ssh.run(Command(argv=["true"]))
    await ssh.close()


async def test_unknown_host_is_refused_by_default(sshd: Sshd, tmp_path: Path) -> None:
    empty = tmp_path / "empty_known_hosts"
    empty.write_text("")
    ssh = SshRunner(
        "127.0.0.1", port=sshd.port, username="root", known_hosts=str(empty), client_keys=[sshd.key]
    )
    with pytest.raises(HostKeyRejected):
        await ssh.run(Command(argv=["true"]))
    await ssh.close()


async def test_make_runner_from_a_config(sshd: Sshd) -> None:
    runner = make_runner(
        BackendConfig(
            name="loop",
            kind="slurm",
            host=f"root@127.0.0.1:{sshd.port}",
            options={"known_hosts": sshd.known_hosts, "client_keys": [sshd.key]},
        )
    )
    try:
        assert (await runner.run(Command(argv=["echo", "hi"]))).stdout == "hi\n"
    finally:
        await runner.close()


async def test_jump_host(sshd: Sshd) -> None:
    # Jump through the same server to itself: the tunnel path is exercised for real.
    ssh = SshRunner(
        "127.0.0.1",
        port=sshd.port,
        username="root",
        known_hosts=sshd.known_hosts,
        client_keys=[sshd.key],
        jump_host=f"root@127.0.0.1:{sshd.port}",
    )
    try:
        assert (await ssh.run(Command(argv=["echo", "via jump"]))).stdout == "via jump\n"
    finally:
        await ssh.close()


async def test_connection_refused_is_a_transport_error() -> None:
    from .conftest import free_port

    ssh = SshRunner("127.0.0.1", port=free_port(), connect_timeout=5)
    with pytest.raises(TransportError, match="cannot connect"):
        await ssh.run(Command(argv=["true"]))
    await ssh.close()
