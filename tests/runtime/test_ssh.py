"""SshRunner against a real OpenSSH server on 127.0.0.1 (scripts/sshd-loopback)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from hpcstate import ConfigError, TransportError
from hpcstate.backend import BackendConfig, Command, JobSpec
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


# -- host-key checking can never be turned off (issue 14) ------------------------------
#
# asyncssh reads ~/.ssh/config when it is not given known_hosts, and takes
# `UserKnownHostsFile none` as "check nothing". These run against the real sshd, whose key
# is NOT in the (temporary) user's known_hosts: connecting would be the vulnerability.


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A temporary HOME with an empty ~/.ssh (no known_hosts, no config yet)."""
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True, mode=0o700)
    monkeypatch.setenv("HOME", str(home))
    return home


def _ssh_config(home: Path, text: str) -> None:
    (home / ".ssh" / "config").write_text(text)


HOSTILE = [
    "Host *\n    UserKnownHostsFile none\n",
    "Host *\n    StrictHostKeyChecking no\n",
    "Host *\n    StrictHostKeyChecking off\n    UserKnownHostsFile /dev/null\n",
    "Host 127.0.0.1\n    UserKnownHostsFile none\n    StrictHostKeyChecking no\n",
]


@pytest.mark.parametrize("config", HOSTILE)
async def test_a_user_ssh_config_that_turns_checking_off_is_refused(
    sshd: Sshd, home: Path, tmp_path: Path, config: str
) -> None:
    _ssh_config(home, config)
    marker = tmp_path / "ran"
    ssh = SshRunner("127.0.0.1", port=sshd.port, username="root", client_keys=[sshd.key])
    try:
        with pytest.raises(ConfigError, match="turns host-key checking off") as refused:
            await ssh.run(Command(argv=["touch", str(marker)]))
    finally:
        await ssh.close()
    assert str(home / ".ssh" / "config") in str(refused.value)
    assert not marker.exists()
    assert ssh.connections_opened == 0


async def test_the_hostile_config_is_refused_even_with_our_own_known_hosts(
    sshd: Sshd, home: Path, tmp_path: Path
) -> None:
    _ssh_config(home, HOSTILE[0])
    marker = tmp_path / "ran"
    ssh = SshRunner(
        "127.0.0.1",
        port=sshd.port,
        username="root",
        known_hosts=sshd.known_hosts,
        client_keys=[sshd.key],
    )
    try:
        with pytest.raises(ConfigError, match="UserKnownHostsFile none"):
            await ssh.run(Command(argv=["touch", str(marker)]))
    finally:
        await ssh.close()
    assert not marker.exists()


async def test_without_known_hosts_the_default_file_is_used_and_an_unknown_host_refused(
    sshd: Sshd, home: Path, tmp_path: Path
) -> None:
    # A harmless ssh config (asyncssh would otherwise read it): checking still happens.
    _ssh_config(home, "Host *\n    ServerAliveInterval 30\n")
    marker = tmp_path / "ran"
    ssh = SshRunner("127.0.0.1", port=sshd.port, username="root", client_keys=[sshd.key])
    try:
        with pytest.raises(HostKeyRejected, match="host key not verifiable"):
            await ssh.run(Command(argv=["touch", str(marker)]))
        assert not marker.exists()
        # The user's default ~/.ssh/known_hosts is the one read: with the key there, it works.
        (home / ".ssh" / "known_hosts").write_text(Path(sshd.known_hosts).read_text())
        assert (await ssh.run(Command(argv=["echo", "known"]))).stdout == "known\n"
    finally:
        await ssh.close()


@pytest.mark.parametrize("value", ["none", "None", "", "  "])
async def test_our_own_known_hosts_cannot_turn_checking_off(
    sshd: Sshd, home: Path, tmp_path: Path, value: str
) -> None:
    marker = tmp_path / "ran"
    ssh = SshRunner(
        "127.0.0.1", port=sshd.port, username="root", known_hosts=value, client_keys=[sshd.key]
    )
    try:
        with pytest.raises(ConfigError, match="would turn SSH host-key checking off"):
            await ssh.run(Command(argv=["touch", str(marker)]))
    finally:
        await ssh.close()
    assert not marker.exists()


async def test_a_missing_known_hosts_file_is_a_config_error(sshd: Sshd, tmp_path: Path) -> None:
    ssh = SshRunner(
        "127.0.0.1",
        port=sshd.port,
        username="root",
        known_hosts=str(tmp_path / "nope"),
        client_keys=[sshd.key],
    )
    try:
        with pytest.raises(ConfigError, match="does not exist"):
            await ssh.run(Command(argv=["true"]))
    finally:
        await ssh.close()


async def test_a_proxyjump_of_the_ssh_config_cannot_skip_checking(
    sshd: Sshd, home: Path, tmp_path: Path
) -> None:
    # The jump host (the same sshd under an alias) has checking off in the user's config;
    # asyncssh would open that hop by itself, with that config's rules.
    _ssh_config(
        home,
        f"Host jumpbox\n    Hostname 127.0.0.1\n    Port {sshd.port}\n    User root\n"
        f"    IdentityFile {sshd.key}\n    UserKnownHostsFile none\n"
        "Host 127.0.0.1\n    ProxyJump jumpbox\n",
    )
    marker = tmp_path / "ran"
    ssh = SshRunner(
        "127.0.0.1",
        port=sshd.port,
        username="root",
        known_hosts=sshd.known_hosts,
        client_keys=[sshd.key],
    )
    try:
        with pytest.raises(ConfigError, match="for host jumpbox"):
            await ssh.run(Command(argv=["touch", str(marker)]))
    finally:
        await ssh.close()
    assert not marker.exists()


async def test_a_proxyjump_of_the_ssh_config_is_followed_with_our_known_hosts(
    sshd: Sshd, home: Path
) -> None:
    _ssh_config(home, f"Host 127.0.0.1\n    ProxyJump root@127.0.0.1:{sshd.port}\n")
    ssh = SshRunner(
        "127.0.0.1",
        port=sshd.port,
        username="root",
        known_hosts=sshd.known_hosts,
        client_keys=[sshd.key],
    )
    try:
        assert (await ssh.run(Command(argv=["echo", "hop"]))).stdout == "hop\n"
        assert len(ssh._jumps) == 1  # the hop was opened by us, with our known_hosts
    finally:
        await ssh.close()


async def test_a_refused_host_key_is_permanent_for_a_backend(
    sshd: Sshd, home: Path, tmp_path: Path
) -> None:
    # Through CommandBackend (what the CLI and the tracker use): no retry, HostKeyRejected.
    from hpcstate.runtime import CommandBackend

    from .fakes import VirtualClock
    from .test_command_backend import make_backend

    _ssh_config(home, "Host *\n    ServerAliveInterval 30\n")
    ssh = SshRunner("127.0.0.1", port=sshd.port, username="root", client_keys=[sshd.key])
    backend = make_backend(tmp_path, VirtualClock(), ssh)
    assert isinstance(backend, CommandBackend)
    try:
        with pytest.raises(HostKeyRejected):
            await backend.queue(["1"])
        assert backend.commands_run == 1  # never retried
    finally:
        await backend.close()


def test_the_cli_refuses_a_hostile_ssh_config(sshd: Sshd, home: Path, tmp_path: Path) -> None:
    _ssh_config(home, HOSTILE[0])
    marker = tmp_path / "ran"
    config = tmp_path / "config.toml"
    config.write_text(
        'default_backend = "remote"\n[backends.remote]\nkind = "slurm"\n'
        f'host = "root@127.0.0.1:{sshd.port}"\nclient_keys = ["{sshd.key}"]\n'
    )
    env = {
        **os.environ,
        "HOME": str(home),
        "HPCSTATE_CONFIG": str(config),
        "HPCSTATE_DB": str(tmp_path / "state.db"),
    }
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "hpcstate",
            "submit",
            "--backend",
            "remote",
            "--",
            "touch",
            str(marker),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert not marker.exists()
    assert done.returncode != 0, done.stdout + done.stderr
    assert "turns host-key checking off" in done.stderr


async def test_a_nul_byte_never_reaches_ssh(sshd: Sshd) -> None:
    # It used to surface as a transient "Connection lost" (sshd drops the channel);
    # now it is refused, naming the argument, before any connection is made.
    fresh = SshRunner(
        "127.0.0.1",
        port=sshd.port,
        username="root",
        known_hosts=sshd.known_hosts,
        client_keys=[sshd.key],
    )
    try:
        with pytest.raises(ValueError, match=r"argv\[1\] contains a NUL byte"):
            await fresh.run(Command(argv=["echo", "a\0b"]))
        assert fresh.connections_opened == 0
    finally:
        await fresh.close()
    with pytest.raises(ValueError, match=r"JobSpec command\[1\] contains a NUL byte"):
        JobSpec(command=["echo", "a\0b"])
