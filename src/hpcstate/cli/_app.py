"""``hpcstate``: parse, load the configuration, run one command, map errors to codes."""

from __future__ import annotations

import asyncio
import errno
import json
import logging
import os
import re
import sqlite3
import sys
from collections.abc import Mapping, Sequence
from typing import Any, TextIO

import attrs
from attrs import frozen

import hpcstate
from hpcstate import (
    BackendError,
    BackendNotFound,
    ConfigError,
    HpcStateError,
    ParseError,
)
from hpcstate.config import Config, locate
from hpcstate.config import load_config as _load_config

from ._exitcodes import ToolExit
from ._human import printable
from ._parser import PROG, UsageError, build_parser, split_command


class UnknownRun(HpcStateError):
    """The run reference names nothing in the state database (or, for ``track``, a job
    the backend has never heard of)."""

    def __init__(self, message: str, *, ref: str) -> None:
        self.ref = ref
        super().__init__(message)


class DataError(HpcStateError):
    """A stored record (or a job's output) cannot be read; the others still can."""

    def __init__(self, message: str, *, run_id: str | None = None) -> None:
        self.run_id = run_id
        super().__init__(message)


#: The ``error`` field of a JSON error, by exit status.
ERROR_NAMES: dict[int, str] = {
    ToolExit.USAGE: "usage",
    ToolExit.DATA_ERROR: "data_error",
    ToolExit.UNKNOWN_RUN: "unknown_run",
    ToolExit.UNAVAILABLE: "unavailable",
    ToolExit.SOFTWARE: "internal",
    ToolExit.CANNOT_CREATE: "cannot_create",
    ToolExit.IO_ERROR: "io_error",
    ToolExit.CONFIG: "config",
    ToolExit.INTERRUPTED: "interrupted",
}


@frozen(kw_only=True)
class Failure:
    """An error as the user sees it: the exit status, one line, and what it is about
    (``refers_to``: ``{"kind": "option" | "config" | "run" | "backend" | "path" |
    "argument", "value": ...}``, or None)."""

    code: int
    message: str
    refers_to: dict[str, str] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": 1,
            "error": ERROR_NAMES.get(self.code, "error"),
            "code": self.code,
            "message": self.message,
            "refers_to": self.refers_to,
        }


@frozen(kw_only=True)
class Console:
    """Where a command writes, and whether stdout is a terminal."""

    stdout: TextIO
    stderr: TextIO
    tty: bool
    env: Mapping[str, str]
    json: bool = False  # errors as one JSON object per line on stderr
    #: Runs whose damage the command already reported (said once per command).
    reported: set[str] = attrs.field(factory=set)

    def out(self, text: str) -> None:
        # Callers escape what they embed; this keeps any escape sequence off the terminal.
        self.stdout.write(printable(text, keep_newlines=True) + "\n")
        self.stdout.flush()

    def error(self, text: str) -> None:
        self.stdout.flush()
        # One line, always: a message that quotes a name or a scheduler cannot add lines.
        self.stderr.write(f"{PROG}: {printable(text)}\n")
        self.stderr.flush()

    def warn(self, text: str) -> None:
        self.error(f"warning: {text}")

    def fail(self, failure: Failure) -> int:
        """Report an error (plain, or one JSON object under --json); returns its code."""
        if self.json:
            self.stdout.flush()
            document = json.dumps(failure.to_dict(), separators=(",", ":"), ensure_ascii=False)
            self.stderr.write(document + "\n")
            self.stderr.flush()
        else:
            self.error(f"error: {failure.message}")
        return failure.code


def load_config(console: Console, explicit: str | None) -> Config:
    """Read the configuration file the environment or --config names (the only I/O)."""
    return _load_config(explicit, env=console.env)


def _silence(stream: TextIO) -> None:
    """Point a closed pipe's descriptor at /dev/null, so the final flush cannot fail."""
    try:
        fd = stream.fileno()
    except (OSError, ValueError):
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, fd)
    os.close(devnull)


class _Once(logging.Filter):
    """Lets each distinct message through once: a backend that stays unreachable is
    said once, not at every poll."""

    def __init__(self) -> None:
        super().__init__()
        self._seen: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if message in self._seen:
            return False
        self._seen.add(message)
        return True


class _Formatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        # A log line may carry a job name or a scheduler's words: no control characters.
        return f"{PROG}: {record.levelname.lower()}: {printable(record.getMessage())}"


class _Damage(logging.Filter):
    """Takes the runtime's reports of damaged stored rows (the store's check at open,
    the tracker's skip) out of the log: the command says each in one plain sentence,
    once (:func:`damage_sentence`)."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: dict[str, Any] = {}  # row id -> its CorruptRow

    def filter(self, record: logging.LogRecord) -> bool:
        from hpcstate.runtime import CorruptRow

        args = record.args if isinstance(record.args, tuple) else ()
        found = [a for a in args if isinstance(a, CorruptRow)]
        if found:
            for row in found:
                self.rows.setdefault(row.row_id, row)
            return False
        # The store's summary of its check: the sentences above say it, row by row.
        if isinstance(record.msg, str) and record.msg.startswith("checked the %d stored jobs"):
            repaired, unrepairable = (args[2], args[3]) if len(args) >= 4 else (1, 1)
            return bool(repaired or unrepairable)
        return True


def damage_sentence(error: Any) -> str:
    """One plain sentence for a damaged stored row (a CorruptRow)."""
    what = "run" if error.table == "runs" else "job"
    return (
        f"the stored {what} {error.row_id} is damaged and cannot be read ({error.detail}); "
        "it is skipped, the other runs are not affected"
    )


def _log_handler(stream: TextIO, debug: bool, damage: _Damage) -> logging.Handler:
    handler = logging.StreamHandler(stream)
    handler.setFormatter(_Formatter())
    handler.setLevel(logging.DEBUG if debug else logging.WARNING)
    handler.addFilter(damage)
    if not debug:
        handler.addFilter(_Once())
    return handler


_OPTION = re.compile(r"\A(?:argument )?(--?[A-Za-z][\w-]*(?:/--?[A-Za-z][\w-]*)*)")
_SQLITE_IO_WORDS = ("readonly database", "disk is full", "disk i/o error")


def _option_of(message: str) -> dict[str, str] | None:
    found = _OPTION.match(message)
    return {"kind": "option", "value": found.group(1)} if found else None


def failure_for(error: BaseException, *, config_path: str | None = None) -> Failure | None:
    """The Failure for an error that is not a bug (None: it is one, exit 70)."""
    from hpcstate.runtime import StoreEnvironmentError, StoreError, StoreFull, StoreReadOnly

    message = str(error)
    if isinstance(error, UnknownRun):
        return Failure(code=ToolExit.UNKNOWN_RUN, message=message, refers_to=_run(error.ref))
    if isinstance(error, DataError):
        return Failure(code=ToolExit.DATA_ERROR, message=message, refers_to=_run(error.run_id))
    if isinstance(error, ConfigError):
        where = {"kind": "config", "value": config_path} if config_path else None
        return Failure(code=ToolExit.CONFIG, message=message, refers_to=where)
    if isinstance(error, BackendNotFound | BackendError):
        # Not installed, unreachable (SchedulerUnavailable, TransportError) or refused
        # (CommandFailed, the tracker's SubmitRefused): the message says which.
        run = getattr(error, "run", None)
        backend = getattr(run, "backend", None)
        where = {"kind": "backend", "value": backend} if isinstance(backend, str) else None
        return Failure(code=ToolExit.UNAVAILABLE, message=message, refers_to=where)
    if isinstance(error, UsageError | ParseError):
        return Failure(code=ToolExit.USAGE, message=message, refers_to=_option_of(message))
    if isinstance(error, StoreEnvironmentError):
        code = ToolExit.IO_ERROR if isinstance(error, StoreReadOnly | StoreFull) else None
        return Failure(
            code=code or ToolExit.CANNOT_CREATE,
            message=message,
            refers_to={"kind": "path", "value": error.location},
        )
    if isinstance(error, StoreError):
        return Failure(code=ToolExit.DATA_ERROR, message=message)
    if isinstance(error, sqlite3.OperationalError) and any(
        word in message.lower() for word in _SQLITE_IO_WORDS
    ):
        return Failure(
            code=ToolExit.IO_ERROR, message=f"the state database cannot be written: {message}"
        )
    if isinstance(error, OSError) and error.filename is not None:
        # The environment's: a state directory that cannot be made, a file not writable.
        code = (
            ToolExit.CANNOT_CREATE
            if isinstance(
                error, PermissionError | NotADirectoryError | IsADirectoryError | FileExistsError
            )
            or error.errno in (errno.ENOENT, errno.EROFS)
            else ToolExit.IO_ERROR
        )
        return Failure(
            code=code,
            message=f"{error.filename}: {error.strerror or error}",
            refers_to={"kind": "path", "value": os.fsdecode(error.filename)},
        )
    return None


def _run(ref: str | None) -> dict[str, str] | None:
    return {"kind": "run", "value": ref} if ref else None


def _exit_code_for(error: BaseException) -> int:
    found = failure_for(error)
    return ToolExit.SOFTWARE if found is None else found.code


def _shown_default(console: Console, args: Sequence[str]) -> str | None:
    """For ``--help`` only: the default backend this environment really has."""
    if "-h" not in args and "--help" not in args:
        return None
    explicit = None
    if "--config" in args and args.index("--config") + 1 < len(args):
        explicit = args[args.index("--config") + 1]
    try:
        return _load_config(explicit, env=console.env).default_backend
    except ConfigError:
        return None


def _split_submit(args: list[str]) -> tuple[list[str], list[str] | None]:
    # Only ``submit`` takes a command after "--"; elsewhere "--" is argparse's own.
    if "--" in args and "submit" in args[: args.index("--")]:
        return split_command(args)
    return args, None


def run_cli(
    argv: Sequence[str],
    *,
    env: Mapping[str, str],
    stdout: TextIO,
    stderr: TextIO,
    tty: bool | None = None,
) -> int:
    """Run one ``hpcstate`` command; returns the exit status (never raises, but for
    KeyboardInterrupt, which becomes 130)."""
    console = Console(
        stdout=stdout,
        stderr=stderr,
        tty=stdout.isatty() if tty is None else tty,
        env=dict(env),
    )
    args_list, command_argv = _split_submit(list(argv))
    parser = build_parser(_shown_default(console, args_list))
    if "--json" in args_list:
        # Known before parsing, so that even a usage error is one JSON object.
        console = attrs.evolve(console, json=True)
    try:
        args = parser.parse_args(args_list)
        if command_argv is not None:
            args.command_argv = [*args.command_argv, *command_argv]
    except UsageError as exc:
        if not console.json:
            stderr.write(exc.usage)
        return console.fail(
            Failure(code=ToolExit.USAGE, message=str(exc), refers_to=_option_of(str(exc)))
        )
    if args.version:
        console.out(f"{PROG} {hpcstate.__version__}")
        return ToolExit.OK
    if args.command is None:
        stderr.write(parser.format_help())
        return ToolExit.USAGE

    from . import _commands  # the runtime is imported only for commands that need it

    debug = bool(console.env.get("HPCSTATE_DEBUG"))
    logger = logging.getLogger("hpcstate")
    damage = _Damage()
    handler = _log_handler(stderr, debug, damage)
    previous_level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG if debug else logging.WARNING)
    location = locate(console.env, args.config)
    try:
        config = (
            None if args.command in _commands.CONFIG_FREE else load_config(console, args.config)
        )
        return asyncio.run(_commands.dispatch(args, config, console))
    except KeyboardInterrupt:
        return console.fail(Failure(code=ToolExit.INTERRUPTED, message="interrupted"))
    except BrokenPipeError:
        # The reader went away (`hpcstate list --json | head -1`): stop quietly, as a
        # shell tool killed by SIGPIPE would.
        _silence(stdout)
        return ToolExit.BROKEN_PIPE
    except Exception as exc:
        found = failure_for(exc, config_path=location.path if location else None)
        if found is not None:
            return console.fail(found)
        # A bug: say so in one line, the traceback only on request.
        if console.env.get("HPCSTATE_DEBUG"):
            raise
        return console.fail(
            Failure(
                code=ToolExit.SOFTWARE,
                message=f"internal error: {type(exc).__name__}: {exc} (this is a bug in "
                "hpcstate; set HPCSTATE_DEBUG=1 for the traceback)",
            )
        )
    finally:
        logger.removeHandler(handler)
        logger.setLevel(previous_level)
        for row_id, row in damage.rows.items():
            if row_id.rpartition(".")[0] not in console.reported and row_id not in console.reported:
                console.warn(damage_sentence(row))


def main(argv: Sequence[str] | None = None) -> int:
    """The ``hpcstate`` console script (``argv`` None: ``sys.argv[1:]``)."""
    return run_cli(
        sys.argv[1:] if argv is None else argv,
        env=os.environ,
        stdout=sys.stdout,
        stderr=sys.stderr,
    )
