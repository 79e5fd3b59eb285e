"""Running a Command: locally (asyncio subprocess) and the factory for every runner.

A command is argv, never a shell string. ``returncode`` None in the result means the
command timed out; its whole process group was killed.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
from collections.abc import Mapping, Sequence
from typing import Any, Final

from hpcstate import ConfigError
from hpcstate.backend import BackendConfig, Command, CommandResult, Runner

#: How long to wait for the output pipes to close after killing a timed-out command
#: (a grandchild that left the process group may hold them open).
_DRAIN_AFTER_KILL: Final = 2.0

_NAME: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


def check_unset_patterns(patterns: Sequence[str]) -> None:
    """Refuse patterns that are not a variable name or a name prefix ending in ``*``."""
    for pattern in patterns:
        name = pattern[:-1] if pattern.endswith("*") else pattern
        if not _NAME.match(name):
            raise ValueError(
                f"unset_env entry {pattern!r} is not a variable name or a prefix ending in '*'"
            )


def clean_environment(base: Mapping[str, str], command: Command) -> dict[str, str]:
    """``base`` minus ``command.unset_env`` (``"PREFIX*"`` removes by prefix), plus
    ``command.env``. Pure."""
    check_unset_patterns(command.unset_env)
    exact = {p for p in command.unset_env if not p.endswith("*")}
    prefixes = tuple(p[:-1] for p in command.unset_env if p.endswith("*"))
    env = {
        k: v for k, v in base.items() if k not in exact and not k.startswith(prefixes or ("\0",))
    }
    env.update(command.env)
    return env


def _decode(data: bytes) -> str:
    return data.decode("utf-8", errors="replace")


class LocalRunner:
    """Runs commands on this machine, each in its own process group."""

    def __init__(self, *, base_env: Mapping[str, str] | None = None) -> None:
        # None: the environment at the time of each call (os.environ).
        self._base_env = dict(base_env) if base_env is not None else None

    async def run(self, command: Command) -> CommandResult:
        if not command.argv:
            raise ValueError("cannot run an empty argv")
        env = clean_environment(
            self._base_env if self._base_env is not None else os.environ, command
        )
        try:
            proc = await asyncio.create_subprocess_exec(
                *command.argv,
                stdin=asyncio.subprocess.PIPE
                if command.stdin is not None
                else asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                env=env,
                start_new_session=True,  # its own process group: a timeout kills all of it
            )
        except FileNotFoundError:
            # What a shell would say: the dialect sees an ordinary failed command.
            return CommandResult(
                argv=command.argv, returncode=127, stderr=f"{command.argv[0]}: command not found\n"
            )
        except PermissionError as exc:
            return CommandResult(
                argv=command.argv, returncode=126, stderr=f"{command.argv[0]}: {exc.strerror}\n"
            )
        assert proc.stdout is not None
        assert proc.stderr is not None
        readers = [
            asyncio.ensure_future(proc.stdout.read()),
            asyncio.ensure_future(proc.stderr.read()),
        ]
        if command.stdin is not None:
            assert proc.stdin is not None
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                proc.stdin.write(command.stdin.encode())
                await proc.stdin.drain()
            proc.stdin.close()
        returncode: int | None
        try:
            returncode = await asyncio.wait_for(proc.wait(), command.timeout)
        except asyncio.TimeoutError:
            returncode = None
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()
        except BaseException:
            # Cancelled: do not leave the command running behind us.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            for reader in readers:
                reader.cancel()
            raise
        done, pending = await asyncio.wait(readers, timeout=_DRAIN_AFTER_KILL)
        for reader in pending:
            reader.cancel()
        out = readers[0].result() if readers[0] in done else b""
        err = readers[1].result() if readers[1] in done else b""
        return CommandResult(
            argv=command.argv, returncode=returncode, stdout=_decode(out), stderr=_decode(err)
        )

    async def close(self) -> None:
        return None


# -- the factory -----------------------------------------------------------------------

_SSH_OPTIONS: Final = frozenset(
    {"ssh_port", "ssh_user", "known_hosts", "client_keys", "jump_host", "connect_timeout"}
)


def parse_target(target: str) -> tuple[str | None, str, int | None]:
    """``"user@host:port"`` -> (user, host, port); user and port are optional.
    IPv6 addresses go in brackets: ``"user@[::1]:2222"``."""
    user: str | None = None
    rest = target.strip()
    if "@" in rest:
        user, _, rest = rest.rpartition("@")
        if not user:
            raise ConfigError(f"SSH target {target!r}: empty user name before '@'")
    port: int | None = None
    if rest.startswith("["):
        host, sep, tail = rest[1:].partition("]")
        if not sep:
            raise ConfigError(f"SSH target {target!r}: missing ']' after an IPv6 address")
        port_text = tail[1:] if tail.startswith(":") else None
        if tail and port_text is None:
            raise ConfigError(f"SSH target {target!r}: unexpected {tail!r} after ']'")
    elif rest.count(":") == 1:
        host, _, port_text = rest.partition(":")
    else:
        host, port_text = rest, None
    if port_text is not None:
        if not (port_text.isascii() and port_text.isdigit()) or not 0 < int(port_text) < 65536:
            raise ConfigError(f"SSH target {target!r}: port {port_text!r} is not 1-65535")
        port = int(port_text)
    if not host:
        raise ConfigError(f"SSH target {target!r}: no host name")
    return user, host, port


def _option(config: BackendConfig, key: str, kind: type | tuple[type, ...]) -> Any:
    value = config.options.get(key)
    if value is not None and not isinstance(value, kind):
        names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise ConfigError(f"backend {config.name!r}: option {key} must be a {names}, got {value!r}")
    return value


def make_runner(config: BackendConfig) -> Runner:
    """The Runner a backend configuration asks for: local when ``host`` is None, SSH
    otherwise (``host`` is ``"[user@]host[:port]"``; options ``ssh_port``, ``ssh_user``,
    ``known_hosts``, ``client_keys``, ``jump_host``, ``connect_timeout``)."""
    if config.host is None:
        stray = sorted(_SSH_OPTIONS & set(config.options))
        if stray:
            raise ConfigError(
                f"backend {config.name!r}: {', '.join(stray)} given but no host: "
                'set host = "user@host" to run commands over SSH'
            )
        return LocalRunner()
    from ._ssh import SshRunner  # asyncssh is an optional dependency

    user, host, port = parse_target(config.host)
    option_port = _option(config, "ssh_port", int)
    option_user = _option(config, "ssh_user", str)
    keys = _option(config, "client_keys", (str, list, tuple))
    if isinstance(keys, str):
        keys = [keys]
    if keys is not None and not all(isinstance(k, str) for k in keys):
        raise ConfigError(f"backend {config.name!r}: client_keys must be a list of paths")
    timeout = _option(config, "connect_timeout", (int, float))
    return SshRunner(
        host,
        port=port or option_port or 22,
        username=user or option_user,
        known_hosts=_option(config, "known_hosts", str),
        client_keys=tuple(keys) if keys is not None else None,
        jump_host=_option(config, "jump_host", str),
        connect_timeout=float(timeout) if timeout is not None else 15.0,
    )
