"""What ``hpcstate`` exits with: the job's own status, or a documented code.

Pure: no I/O. ``docs/concepts/exit-status.md`` is the table for people; the tests
check every :class:`~hpcstate.State` against it.

A job can exit with any number from 0 to 255, so no code of ours is free of
collisions. The codes below sit where jobs rarely land: sysexits.h (64-78) for the
tool's own failures, 124 for "gave up waiting" as GNU timeout(1) does, and 200-208
(above the signal range 129-192 that shells use for 128+N, and below 255, which ssh
and ``exit(-1)`` produce) for verdicts that have no exit status of their own.
``--json`` carries everything without ambiguity.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable

from hpcstate import ExitStatus, RunItem, State

# Shells show "killed by signal N" as 128+N; real-time signals go up to 64.
_SIGNAL_CODES = range(129, 128 + 64 + 1)


class ToolExit(enum.IntEnum):
    """The tool's own outcome, for every command."""

    OK = 0
    USAGE = 64  # EX_USAGE: bad arguments or a value that cannot be read
    DATA_ERROR = 65  # EX_DATAERR: a stored record cannot be read (corrupt database row)
    UNKNOWN_RUN = 66  # EX_NOINPUT: no such run id or BACKEND:NATIVE_ID
    UNAVAILABLE = 69  # EX_UNAVAILABLE: backend not installed, refused or unreachable
    SOFTWARE = 70  # EX_SOFTWARE: a bug in hpcstate (please report it)
    CANNOT_CREATE = 73  # EX_CANTCREAT: the state directory or database cannot be created
    IO_ERROR = 74  # EX_IOERR: the state database cannot be written (read-only, disk full)
    CONFIG = 78  # EX_CONFIG: the configuration file or environment is wrong
    WATCH_TIMEOUT = 124  # --timeout expired before every verdict, as timeout(1) does
    INTERRUPTED = 130  # Ctrl-C while waiting: 128 + SIGINT, as shells do
    BROKEN_PIPE = 141  # the reader of stdout went away: 128 + SIGPIPE, as shells do


class VerdictExit(enum.IntEnum):
    """Verdicts that carry no exit status of the job itself (``--exit-status`` only)."""

    FAILED_WITHOUT_EXIT = 200  # failed, and no non-zero exit status says why
    TIMEOUT = 201  # the scheduler ended it at its time limit
    CANCELLED = 202
    OUT_OF_MEMORY = 203
    INFRASTRUCTURE = 204  # node failure, preemption or boot failure: not the job's fault
    DEADLINE = 205  # could not run before its deadline
    GONE = 206  # no source knows the job any more and none gave a verdict
    UNCONFIRMED = 207  # success nobody confirmed (only with --require-confirmed)
    EXIT_AMBIGUOUS = 208  # failed, and the exit code may be one of several values


_VERDICTS: dict[State, VerdictExit] = {
    State.TIMEOUT: VerdictExit.TIMEOUT,
    State.CANCELLED: VerdictExit.CANCELLED,
    State.OUT_OF_MEMORY: VerdictExit.OUT_OF_MEMORY,
    State.NODE_FAIL: VerdictExit.INFRASTRUCTURE,
    State.PREEMPTED: VerdictExit.INFRASTRUCTURE,
    State.BOOT_FAIL: VerdictExit.INFRASTRUCTURE,
    State.DEADLINE: VerdictExit.DEADLINE,
    State.GONE: VerdictExit.GONE,
}


def _failure_code(exit: ExitStatus | None) -> int:
    """The exit status of a job that failed: its own ``$?`` when that is known."""
    if exit is None:
        return VerdictExit.FAILED_WITHOUT_EXIT
    shell = exit.shell_code
    if shell is None or shell == 0:
        # A failure with exit 0 (a launch failure, a rejected submission): never say 0.
        return VerdictExit.FAILED_WITHOUT_EXIT
    if exit.ambiguous is not None and shell not in _SIGNAL_CODES:
        # "exit 137 or SIGKILL" reads 137 either way; "exit 3 or 131" does not.
        return VerdictExit.EXIT_AMBIGUOUS
    return shell


def exit_status_for(
    state: State, exit: ExitStatus | None, *, confirmed: bool, require_confirmed: bool = False
) -> int | None:
    """The number ``--exit-status`` exits with for one item; None while it has no verdict.

    * COMPLETED: 0 (:attr:`VerdictExit.UNCONFIRMED` if nobody confirmed it and
      ``require_confirmed``); a non-zero exit status recorded with it wins, so a
      success is never claimed against the evidence.
    * FAILED: the job's own ``$?`` (its exit code, or 128+N for signal N).
    * Every other verdict: its :class:`VerdictExit` code, whatever the exit status.
    """
    if state is State.COMPLETED:
        if exit is not None and exit.shell_code not in (None, 0):
            return _failure_code(exit)
        if require_confirmed and not confirmed:
            return VerdictExit.UNCONFIRMED
        return ToolExit.OK
    if state is State.FAILED:
        return _failure_code(exit)
    verdict = _VERDICTS.get(state)
    if verdict is not None:
        return verdict
    return None  # PENDING, QUEUED, RUNNING, SETTLING: no verdict yet


def item_exit_status(item: RunItem, *, require_confirmed: bool = False) -> int | None:
    return exit_status_for(
        item.state, item.stats.exit, confirmed=item.confirmed, require_confirmed=require_confirmed
    )


def combine(codes: Iterable[int]) -> int:
    """Several items' codes as one: the first non-zero, in the order given (runs in
    argument order, array tasks by index), else 0."""
    for code in codes:
        if code != 0:
            return code
    return 0


#: One line per code, for ``--help`` and the docs.
DESCRIPTIONS: dict[int, str] = {
    ToolExit.OK: "success (watch: the job succeeded)",
    ToolExit.USAGE: "usage error: bad arguments or a value that cannot be read",
    ToolExit.DATA_ERROR: "a stored record cannot be read (corrupt database row)",
    ToolExit.UNKNOWN_RUN: "unknown run: no such run id or BACKEND:NATIVE_ID (track: a job "
    "the backend never heard of)",
    ToolExit.UNAVAILABLE: "the backend's problem: not installed, refused the submission, or "
    "unreachable (at submit, or past --timeout)",
    ToolExit.SOFTWARE: "internal error in hpcstate (a bug: please report it)",
    ToolExit.CANNOT_CREATE: "the state directory or database cannot be created or opened",
    ToolExit.IO_ERROR: "the state database cannot be written (read-only, disk full)",
    ToolExit.CONFIG: "configuration error: the message names the file and key",
    ToolExit.WATCH_TIMEOUT: "watch --timeout expired before every verdict was in",
    ToolExit.INTERRUPTED: "interrupted (Ctrl-C)",
    ToolExit.BROKEN_PIPE: "the reader of the output went away (| head)",
    VerdictExit.FAILED_WITHOUT_EXIT: "failed, and no non-zero exit status says why",
    VerdictExit.TIMEOUT: "the job hit its time limit",
    VerdictExit.CANCELLED: "the job was cancelled",
    VerdictExit.OUT_OF_MEMORY: "the job ran out of memory",
    VerdictExit.INFRASTRUCTURE: "node failure, preemption or boot failure (not the job's fault)",
    VerdictExit.DEADLINE: "the job could not run before its deadline",
    VerdictExit.GONE: "the job is gone: no source knows it and none gave a verdict",
    VerdictExit.UNCONFIRMED: "success that no authoritative source confirmed (--require-confirmed)",
    VerdictExit.EXIT_AMBIGUOUS: "failed with an exit code that may be one of several values",
}
