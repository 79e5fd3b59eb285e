"""``hpcstate``: parse, load the configuration, run one command, map errors to codes."""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from collections.abc import Mapping, Sequence
from typing import TextIO

from attrs import frozen

import hpcstate
from hpcstate import (
    BackendError,
    BackendNotFound,
    ConfigError,
    HpcStateError,
    ParseError,
)
from hpcstate.config import Config
from hpcstate.config import load_config as _load_config

from ._exitcodes import ToolExit
from ._human import printable
from ._parser import PROG, UsageError, build_parser, split_command


class UnknownRun(HpcStateError):
    """The run reference names nothing in the state database."""


class DataError(HpcStateError):
    """A stored record cannot be read (the other records still can)."""


@frozen(kw_only=True)
class Console:
    """Where a command writes, and whether stdout is a terminal."""

    stdout: TextIO
    stderr: TextIO
    tty: bool
    env: Mapping[str, str]

    def out(self, text: str) -> None:
        # Callers escape what they embed; this keeps any escape sequence off the terminal.
        self.stdout.write(printable(text, keep_newlines=True) + "\n")
        self.stdout.flush()

    def error(self, text: str) -> None:
        self.stdout.flush()
        self.stderr.write(f"{PROG}: {printable(text, keep_newlines=True)}\n")
        self.stderr.flush()

    def warn(self, text: str) -> None:
        self.error(f"warning: {text}")


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
        return f"{PROG}: {record.levelname.lower()}: {record.getMessage()}"


def _log_handler(stream: TextIO, debug: bool) -> logging.Handler:
    handler = logging.StreamHandler(stream)
    handler.setFormatter(_Formatter())
    handler.setLevel(logging.DEBUG if debug else logging.WARNING)
    if not debug:
        handler.addFilter(_Once())
    return handler


def _exit_code_for(error: BaseException) -> int:
    if isinstance(error, UnknownRun):
        return ToolExit.UNKNOWN_RUN
    if isinstance(error, DataError):
        return ToolExit.DATA_ERROR
    if isinstance(error, ConfigError):
        return ToolExit.CONFIG
    if isinstance(error, BackendNotFound | BackendError):
        # Not installed, unreachable (SchedulerUnavailable, TransportError) or refused
        # the command (CommandFailed): the message says which.
        return ToolExit.UNAVAILABLE
    if isinstance(error, UsageError | ParseError):
        return ToolExit.USAGE
    from hpcstate.runtime import StoreError

    if isinstance(error, StoreError):
        return ToolExit.DATA_ERROR
    return ToolExit.SOFTWARE


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
    parser = build_parser()
    args_list, command_argv = _split_submit(list(argv))
    try:
        args = parser.parse_args(args_list)
        if command_argv is not None:
            args.command_argv = [*args.command_argv, *command_argv]
    except UsageError as exc:
        stderr.write(exc.usage)
        console.error(f"error: {exc}")
        return ToolExit.USAGE
    if args.version:
        console.out(f"{PROG} {hpcstate.__version__}")
        return ToolExit.OK
    if args.command is None:
        stderr.write(parser.format_help())
        return ToolExit.USAGE

    from . import _commands  # the runtime is imported only for commands that need it

    debug = bool(console.env.get("HPCSTATE_DEBUG"))
    logger = logging.getLogger("hpcstate")
    handler = _log_handler(stderr, debug)
    previous_level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG if debug else logging.WARNING)
    try:
        config = (
            None if args.command in _commands.CONFIG_FREE else load_config(console, args.config)
        )
        return asyncio.run(_commands.dispatch(args, config, console))
    except KeyboardInterrupt:
        console.error("interrupted")
        return ToolExit.INTERRUPTED
    except BrokenPipeError:
        # The reader went away (`hpcstate list --json | head -1`): stop quietly, as a
        # shell tool killed by SIGPIPE would.
        _silence(stdout)
        return ToolExit.BROKEN_PIPE
    except (HpcStateError, UsageError) as exc:
        console.error(f"error: {exc}")
        return _exit_code_for(exc)
    except Exception as exc:  # a bug: say so in one line, the traceback only on request
        if console.env.get("HPCSTATE_DEBUG"):
            raise
        console.error(
            f"internal error: {type(exc).__name__}: {exc} (this is a bug in hpcstate; "
            "set HPCSTATE_DEBUG=1 for the traceback)"
        )
        return ToolExit.SOFTWARE
    finally:
        logger.removeHandler(handler)
        logger.setLevel(previous_level)


def main(argv: Sequence[str] | None = None) -> int:
    """The ``hpcstate`` console script (``argv`` None: ``sys.argv[1:]``)."""
    return run_cli(
        sys.argv[1:] if argv is None else argv,
        env=os.environ,
        stdout=sys.stdout,
        stderr=sys.stderr,
    )
