"""Fixtures for hpcstate.runtime tests: real SQLite files, real processes, real sshd."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from hpcstate.runtime import Store
from hpcstate.runtime.local import LocalBackend

from .fakes import ScriptedBackend, VirtualClock

REPO = Path(__file__).resolve().parents[2]
SSHD_SCRIPT = REPO / "scripts" / "sshd-loopback"


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "state" / "hpcstate.db"


@pytest.fixture
def store(db_path: Path) -> Iterator[Store]:
    with Store(db_path) as opened:
        yield opened


@pytest.fixture
def local(tmp_path: Path) -> LocalBackend:
    return LocalBackend(root=tmp_path / "jobs", kill_grace=0.5, watch_interval=0.05)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class Sshd:
    """A running loopback OpenSSH server and the files to log in to it."""

    port: int
    directory: Path

    @property
    def key(self) -> str:
        return str(self.directory / "id_ed25519")

    @property
    def known_hosts(self) -> str:
        return str(self.directory / "known_hosts")

    @property
    def pid(self) -> int:
        return int((self.directory / "sshd.pid").read_text().strip())

    def session_pids(self) -> list[int]:
        """The per-connection sshd processes (children of the listener)."""
        out = subprocess.run(
            ["pgrep", "-P", str(self.pid)], capture_output=True, text=True, check=False
        )
        return [int(p) for p in out.stdout.split()]


def _start_sshd_directly(port: int, directory: Path) -> None:
    """The fallback when scripts/sshd-loopback is missing: the same steps, inline."""
    directory.mkdir(parents=True, exist_ok=True)
    host_key = directory / "ssh_host_ed25519_key"
    client_key = directory / "id_ed25519"
    for key in (host_key, client_key):
        if not key.exists():
            subprocess.run(
                ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True
            )
    shutil.copy(f"{client_key}.pub", directory / "authorized_keys")
    Path("/run/sshd").mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [
            "/usr/sbin/sshd",
            "-p",
            str(port),
            "-h",
            str(host_key),
            "-o",
            "ListenAddress=127.0.0.1",
            "-o",
            f"PidFile={directory / 'sshd.pid'}",
            "-o",
            f"AuthorizedKeysFile={directory / 'authorized_keys'}",
            "-o",
            "StrictModes=no",
            "-o",
            "PasswordAuthentication=no",
        ],
        check=True,
    )
    public = (directory / "ssh_host_ed25519_key.pub").read_text().split()[:2]
    (directory / "known_hosts").write_text(f"[127.0.0.1]:{port} {' '.join(public)}\n")


@pytest.fixture(scope="session")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sshd]:
    if os.geteuid() != 0 or not Path("/usr/sbin/sshd").exists():
        pytest.skip("needs root and Debian's openssh-server (apt-get install openssh-server)")
    directory = tmp_path_factory.mktemp("sshd")
    port = free_port()
    try:
        if SSHD_SCRIPT.exists():
            subprocess.run(
                [str(SSHD_SCRIPT), "start", str(port), str(directory)],
                check=True,
                capture_output=True,
                timeout=60,
            )
        else:
            _start_sshd_directly(port, directory)
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
        pytest.skip(f"cannot start a loopback sshd: {exc}")
    server = Sshd(port=port, directory=directory)
    try:
        yield server
    finally:
        if SSHD_SCRIPT.exists():
            subprocess.run([str(SSHD_SCRIPT), "stop", str(directory)], check=False, timeout=30)
        else:
            subprocess.run(["kill", str(server.pid)], check=False)


@pytest.fixture
def clock() -> VirtualClock:
    return VirtualClock()


@pytest.fixture
def fake() -> ScriptedBackend:
    return ScriptedBackend()
