"""Running Commands over SSH with asyncssh: one multiplexed connection per runner.

The remote sshd hands our command string to the login shell, so argv is quoted
exactly once, with :func:`shlex.join`; the environment goes in an ``env`` prefix
built the same way. asyncssh is optional (``pip install 'hpcstate[ssh]'``) and is
imported only when a connection is made.
"""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import logging
import os
import shlex
import warnings
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any, Final

from hpcstate import ConfigError, TransportError
from hpcstate.backend import Command, CommandResult

from ._errors import AuthenticationFailed, HostKeyRejected
from ._runner import check_unset_patterns

log = logging.getLogger("hpcstate.runtime.ssh")

# Removes every variable whose name starts with one of the prefixes in
# $HPCSTATE_UNSET_PREFIXES, then runs "$@". The prefixes are checked to be plain
# names (check_unset_patterns), so they cannot inject anything into the sed script.
_UNSET_PREFIXES_SCRIPT: Final = (
    "for p in $HPCSTATE_UNSET_PREFIXES; do "
    'for v in $(env | sed -n "s/^\\($p[A-Za-z0-9_]*\\)=.*/\\1/p"); do unset "$v"; done; '
    'done; unset HPCSTATE_UNSET_PREFIXES; exec "$@"'
)


def remote_command_line(command: Command) -> str:
    """The one string sent to sshd for ``command`` (pure; argv quoted exactly once)."""
    if not command.argv:
        raise ValueError("cannot run an empty argv")
    check_unset_patterns(command.unset_env)
    exact = [p for p in command.unset_env if not p.endswith("*")]
    prefixes = [p[:-1] for p in command.unset_env if p.endswith("*")]
    for name in command.env:
        if not name or "=" in name:
            raise ValueError(f"environment variable name {name!r} is not valid")
    prefix: list[str] = []
    if exact or command.env or prefixes:
        prefix = ["env"]
        for name in exact:
            prefix += ["-u", name]
        if prefixes:
            prefix.append("HPCSTATE_UNSET_PREFIXES=" + " ".join(prefixes))
        prefix += [f"{name}={value}" for name, value in command.env.items()]
        if prefixes:
            # The prefix removal runs after env's assignments, so a variable that is
            # both set and matched by a prefix must not be removed: set it again.
            prefix += ["sh", "-c", _UNSET_PREFIXES_SCRIPT, "sh"]
            prefix += [
                "env",
                *(f"{n}={v}" for n, v in command.env.items() if n.startswith(tuple(prefixes))),
            ]
    return shlex.join([*prefix, *command.argv])


# sshd starts each command in a new session, so its pid is also its process group:
# the wrapper prints it first on stderr (and execs the command, keeping the pid), so a
# timed-out command can be killed with everything it started.
_GROUP_PREFIX: Final = "hpcstate-pgid:"
_GROUP_WRAPPER: Final = shlex.join(["sh", "-c", f'echo "{_GROUP_PREFIX}$$" >&2; exec "$@"', "sh"])


def reporting_group(line: str) -> str:
    """``line`` run through a wrapper that reports its process group (pure). The
    command's own words are not quoted again: they follow as the wrapper's arguments."""
    return f"{_GROUP_WRAPPER} {line}"


def split_group_line(stderr: str) -> tuple[int | None, str]:
    """(process group, stderr without the wrapper's line)."""
    if stderr.startswith(_GROUP_PREFIX):
        first, _, rest = stderr.partition("\n")
        number = first[len(_GROUP_PREFIX) :]
        if number.isascii() and number.isdigit():
            return int(number), rest
    return None, stderr


def _asyncssh() -> ModuleType:
    try:
        with warnings.catch_warnings():
            # asyncssh registers DSA and other legacy algorithms at import time, and
            # cryptography (>= 48) warns about each; the user asked for none of them.
            # Only cryptography's own deprecation class, only from asyncssh's import.
            _ignore_cryptography_deprecations()
            import asyncssh
    except ImportError as exc:
        raise ConfigError(
            "running commands over SSH needs asyncssh: pip install 'hpcstate[ssh]'"
        ) from exc
    return asyncssh


def _ignore_cryptography_deprecations() -> None:
    try:
        from cryptography.utils import CryptographyDeprecationWarning
    except ImportError:  # pragma: no cover - asyncssh requires cryptography
        return
    warnings.filterwarnings("ignore", category=CryptographyDeprecationWarning)


class SshRunner:
    """Runs commands on ``host`` over ONE SSH connection, opened on first use and
    reopened after a drop. Host keys are ALWAYS checked: against ``known_hosts`` if
    given, else ``~/.ssh/known_hosts`` (never the ssh config's ``UserKnownHostsFile``);
    a configuration that would turn checking off (``known_hosts = "none"``, or
    ``UserKnownHostsFile none`` / ``StrictHostKeyChecking no`` in ``~/.ssh/config`` for
    the host or a jump host) is refused with :class:`hpcstate.ConfigError`. An unknown or
    changed host key is :class:`HostKeyRejected` (permanent). The ssh config's other
    settings (user, identity files, ProxyJump) apply; ProxyJump hops are opened by us,
    with the same checks. Authentication uses the given keys, else the agent and ~/.ssh
    keys."""

    def __init__(
        self,
        host: str,
        *,
        port: int = 22,
        username: str | None = None,
        known_hosts: str | None = None,
        client_keys: Sequence[str] | None = None,
        jump_host: str | None = None,
        connect_timeout: float = 15.0,
        keepalive_interval: float = 30.0,
    ) -> None:
        self.host = host
        self.port = port
        self.username = username
        self.known_hosts = known_hosts
        self.client_keys = tuple(client_keys) if client_keys is not None else None
        self.jump_host = jump_host
        self.connect_timeout = connect_timeout
        self.keepalive_interval = keepalive_interval
        self._conn: Any = None
        self._jumps: list[Any] = []  # the open jump-host connections, in order
        self._lock = asyncio.Lock()
        #: How many connections this runner opened (1 unless it had to reconnect).
        self.connections_opened = 0

    @property
    def target(self) -> str:
        user = f"{self.username}@" if self.username else ""
        return f"{user}{self.host}:{self.port}"

    def _options(self, ssh: ModuleType) -> dict[str, Any]:
        options: dict[str, Any] = {
            "connect_timeout": self.connect_timeout,
            "keepalive_interval": self.keepalive_interval,
            # ALWAYS our own choice: left out, asyncssh would take the user's ssh config,
            # where `UserKnownHostsFile none` means "check nothing".
            "known_hosts": known_hosts_choice(ssh, self.known_hosts),
        }
        if self.client_keys is not None:
            options["client_keys"] = list(self.client_keys)
        return options

    def _hops(self) -> list[str]:
        """The jump hosts to go through, in order: ours, else the ssh config's ProxyJump
        for this host. We open each hop ourselves (asyncssh would open a ProxyJump with
        the ssh config's host-key settings, not ours)."""
        if self.jump_host is not None:
            return [h for h in self.jump_host.split(",") if h.strip()]
        proxy = _user_ssh_config(self.host, self.port, self.username).get("ProxyJump")
        if isinstance(proxy, str) and proxy.strip() and proxy.strip().lower() != "none":
            return [h for h in proxy.split(",") if h.strip()]
        return []

    async def _open(self) -> Any:
        ssh = _asyncssh()
        options = self._options(ssh)
        where = self.target
        refuse_unchecked_host_keys(self.host, self.port, self.username)
        hops = self._hops()
        try:
            tunnel: Any = None
            if hops:
                if not self._jumps or self._jumps[-1].is_closed():
                    from ._runner import parse_target

                    self._close_jumps()
                    for hop in hops:
                        j_user, j_host, j_port = parse_target(hop)
                        where = f"{hop} (jump host)"
                        refuse_unchecked_host_keys(j_host, j_port or 22, j_user or self.username)
                        self._jumps.append(
                            await ssh.connect(
                                j_host,
                                port=j_port or 22,
                                tunnel=self._jumps[-1] if self._jumps else None,
                                **_user(j_user or self.username),
                                **options,
                            )
                        )
                    where = self.target
                tunnel = self._jumps[-1]
            # tunnel is always given (None: direct) so that asyncssh never opens a
            # ProxyJump of the ssh config by itself, with that config's host-key rules.
            conn = await ssh.connect(
                self.host, port=self.port, tunnel=tunnel, **_user(self.username), **options
            )
        except ssh.HostKeyNotVerifiable as exc:
            raise HostKeyRejected(
                f"ssh {where}: host key not verifiable ({exc.reason}); check the server's key "
                f"and update {self.known_hosts or '~/.ssh/known_hosts'}"
            ) from None
        except ssh.PermissionDenied as exc:
            raise AuthenticationFailed(
                f"ssh {where}: authentication failed ({exc.reason}); keys tried: "
                f"{', '.join(self.client_keys) if self.client_keys else 'agent and ~/.ssh'}"
            ) from None
        except (OSError, ssh.Error, asyncio.TimeoutError) as exc:
            detail = getattr(exc, "reason", None) or str(exc) or type(exc).__name__
            raise TransportError(f"ssh {where}: cannot connect: {detail}") from exc
        self.connections_opened += 1
        log.debug("ssh %s: connected (connection %d)", where, self.connections_opened)
        return conn

    async def _connection(self) -> Any:
        async with self._lock:
            if self._conn is None or self._conn.is_closed():
                if self._conn is not None:
                    log.info("ssh %s: connection dropped, reconnecting", self.target)
                self._conn = None
                self._conn = await self._open()
            return self._conn

    async def run(self, command: Command) -> CommandResult:
        ssh = _asyncssh()
        line = reporting_group(remote_command_line(command))
        # A channel that fails to OPEN ran nothing, so one reconnect-and-retry is safe.
        for attempt in (1, 2):
            conn = await self._connection()
            try:
                process = await conn.create_process(
                    line, encoding="utf-8", errors="replace", stdin=ssh.PIPE
                )
            except (ssh.ChannelOpenError, ssh.ConnectionLost, ssh.DisconnectError, OSError) as exc:
                self._drop(conn)
                if attempt == 2:
                    raise TransportError(
                        f"ssh {self.target}: cannot open a channel: {exc}"
                    ) from exc
                continue
            return await self._finish(ssh, conn, process, command)
        raise AssertionError("unreachable")  # pragma: no cover

    async def _finish(
        self, ssh: ModuleType, conn: Any, process: Any, command: Command
    ) -> CommandResult:
        try:
            if command.stdin is not None:
                process.stdin.write(command.stdin)
            process.stdin.write_eof()
            completed = await process.wait(check=False, timeout=command.timeout)
        except ssh.TimeoutError as exc:
            # Closing the channel does not stop a command that neither reads nor writes
            # (OpenSSH ignores signal requests here): kill its process group instead.
            group, stderr = split_group_line(_text(exc.stderr))
            process.close()
            if group is not None:
                await self._kill_group(conn, group)
            return CommandResult(
                argv=command.argv, returncode=None, stdout=_text(exc.stdout), stderr=stderr
            )
        except (ssh.ConnectionLost, ssh.DisconnectError, ssh.ChannelOpenError, OSError) as exc:
            # The command may or may not have run: the caller must decide (never retry here).
            self._drop(conn)
            raise TransportError(
                f"ssh {self.target}: connection lost during command: {exc}"
            ) from exc
        returncode = completed.returncode
        _, stderr = split_group_line(_text(completed.stderr))
        if completed.exit_status is None or completed.exit_status == -1:
            if completed.exit_signal:
                # Killed by a signal on the remote side: report it as a shell would.
                name = completed.exit_signal[0]
                returncode = 128 + _signal_number(name)
            elif conn.is_closed():
                self._drop(conn)
                raise TransportError(f"ssh {self.target}: connection lost during command")
        return CommandResult(
            argv=command.argv,
            returncode=returncode,
            stdout=_text(completed.stdout),
            stderr=stderr,
        )

    async def _kill_group(self, conn: Any, group: int) -> None:
        with contextlib.suppress(Exception):
            await conn.run(
                shlex.join(["kill", "-KILL", "--", f"-{group}"]), check=False, timeout=10
            )

    def _drop(self, conn: Any) -> None:
        if self._conn is conn:
            self._conn = None
        with contextlib.suppress(Exception):
            conn.close()

    def _close_jumps(self) -> None:
        for conn in reversed(self._jumps):
            with contextlib.suppress(Exception):
                conn.close()
        self._jumps = []

    async def close(self) -> None:
        for conn in (self._conn, *reversed(self._jumps)):
            if conn is not None:
                conn.close()
                with contextlib.suppress(Exception):
                    await conn.wait_closed()
        self._conn = None
        self._jumps = []


# -- host-key checking: never off ----------------------------------------------------

#: StrictHostKeyChecking values that connect to a host whose key is not known.
_UNCHECKED: Final = frozenset({"no", "off"})


def _default_known_hosts() -> Path:
    return Path("~", ".ssh", "known_hosts").expanduser()


def known_hosts_choice(ssh: ModuleType, configured: str | None) -> Any:
    """What hpcstate passes to asyncssh as ``known_hosts``: the configured file, else the
    user's default ``~/.ssh/known_hosts`` (an empty list of known hosts when that file
    does not exist: every host is then unknown, and refused). Never None, never left out
    (either would let asyncssh, or the user's ssh config, turn checking off). A configured
    value that would turn checking off is a :class:`ConfigError`."""
    if configured is not None:
        if configured.strip().lower() in {"", "none"}:
            raise ConfigError(
                f"known_hosts = {configured!r} would turn SSH host-key checking off, which "
                "hpcstate never does: give the known_hosts file that holds the server's key"
            )
        path = Path(configured).expanduser()
        if not path.is_file():
            raise ConfigError(
                f"known_hosts file {configured!r} does not exist or is not a file "
                "(add the server's key to it after checking it, e.g. with ssh-keyscan)"
            )
        return str(path)
    default = _default_known_hosts()
    if default.is_file():
        return str(default)
    return ssh.import_known_hosts("")


def _config_class() -> Any:
    """asyncssh's ssh config reader, taught to keep StrictHostKeyChecking (which
    asyncssh itself ignores) so that we can refuse it."""
    from asyncssh.config import SSHClientConfig, SSHConfig

    class _Config(SSHClientConfig):
        _handlers = {  # noqa: RUF012 - asyncssh's own layout
            **SSHClientConfig._handlers,
            "stricthostkeychecking": ("StrictHostKeyChecking", SSHConfig._set_string),
        }

    return _Config


def _user_config_path() -> Path:
    return Path("~", ".ssh", "config").expanduser()


def _user_ssh_config(host: str, port: int, username: str | None) -> Any:
    """The user's ssh config (``~/.ssh/config``, as asyncssh reads it) for this host."""
    ssh = _asyncssh()
    path = _user_config_path()
    paths = [path] if os.access(path, os.R_OK) else []
    try:
        local_user = getpass.getuser()
    except (KeyError, OSError):
        local_user = ""
    try:
        return _config_class().load(
            None, paths, False, False, False, local_user, username or (), host, port
        )
    except (ssh.ConfigParseError, OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"ssh config {path}: cannot read it: {exc}") from None


def refuse_unchecked_host_keys(host: str, port: int, username: str | None) -> None:
    """Raise :class:`ConfigError` if the user's ssh config would turn host-key checking
    off for ``host`` (``UserKnownHostsFile none``, ``StrictHostKeyChecking no``).
    hpcstate would check anyway (it always passes its own known_hosts), but a user who
    wrote that expects unknown hosts to be accepted: say plainly that they are not."""
    config = _user_ssh_config(host, port, username)
    where = f"ssh config {_user_config_path()}"
    tail = (
        f"for host {host}: that turns host-key checking off, which hpcstate never does; "
        f"remove it for {host} (a `Host` block that excludes it: `Host * !{host}`) and "
        "keep the server's key in known_hosts"
    )
    if config.get("UserKnownHostsFile", ()) == []:
        raise ConfigError(f"{where} sets UserKnownHostsFile none {tail}")
    strict = config.get("StrictHostKeyChecking")
    if isinstance(strict, str) and strict.lower() in _UNCHECKED:
        raise ConfigError(f"{where} sets StrictHostKeyChecking {strict} {tail}")


def _user(name: str | None) -> dict[str, str]:
    # asyncssh wants the argument left out (not None) to use the local user name.
    return {"username": name} if name else {}


def _text(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return str(value)


def _signal_number(name: str) -> int:
    from hpcstate import signal_number

    try:
        return signal_number(name)
    except ValueError:
        return 0
