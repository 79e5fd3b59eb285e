"""Entrypoint wrapper: ``python -m hpcstate_k8s.wrapper -- CMD [ARG...]``.

Kubernetes reports a container killed by signal N as exit code 128+N, exactly like a
program that called ``exit(128+N)``. This wrapper runs the payload as a child, forwards
TERM/INT/HUP/QUIT/USR1/USR2 to it, and when it ends writes what really happened to the
termination log (``{"exit": 3}`` or ``{"signal": 9}``, plus ``"core_dumped": true``),
then exits with the same shell code. The backend reads that message from
``state.terminated.message`` for Jobs created with the wrapper.

The log path is ``$HPCSTATE_TERMINATION_LOG`` or ``/dev/termination-log`` (the kubelet's
default ``terminationMessagePath``). As PID 1 it also reaps orphaned grandchildren.

If the wrapper loses its child's status (``waitpid`` says it has no such child), it never
guesses: it writes no message, says why on stderr and exits ``LOST_CHILD`` (125), which
the backend reads as "exit status unknown".
The file has no dependency besides the standard library: it can be copied into an image
and run as ``python3 wrapper.py -- CMD``.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import Sequence
from types import FrameType

TERMINATION_LOG_ENV = "HPCSTATE_TERMINATION_LOG"
DEFAULT_TERMINATION_LOG = "/dev/termination-log"
FORWARDED = (
    signal.SIGTERM,
    signal.SIGINT,
    signal.SIGHUP,
    signal.SIGQUIT,
    signal.SIGUSR1,
    signal.SIGUSR2,
)
USAGE = "usage: python -m hpcstate_k8s.wrapper -- COMMAND [ARG...]"
#: Exit code when the child's status was lost: no message is written, nothing is invented.
LOST_CHILD = 125


class ChildLost(Exception):
    """waitpid found no child to wait for: the payload's status is gone."""


def message_for(status: int) -> tuple[dict[str, object], int]:
    """A raw wait status -> (termination message, the exit code to leave with)."""
    if os.WIFSIGNALED(status):
        number = os.WTERMSIG(status)
        doc: dict[str, object] = {"signal": number}
        if os.WCOREDUMP(status):
            doc["core_dumped"] = True
        return doc, 128 + number
    code = os.WEXITSTATUS(status)
    return {"exit": code}, code


def write_message(doc: dict[str, object]) -> None:
    path = os.environ.get(TERMINATION_LOG_ENV) or DEFAULT_TERMINATION_LOG
    try:
        with open(path, "w", encoding="utf-8") as handle:
            handle.write(json.dumps(doc, separators=(",", ":")))
    except OSError as error:
        print(f"hpcstate wrapper: cannot write {path}: {error}", file=sys.stderr)


def _wait_for(pid: int) -> int:
    """Wait for our child, reaping any other child (orphans re-parented to PID 1).

    Raises ChildLost if there is no child left to wait for (its status was reaped by
    someone else, or discarded by the kernel because SIGCHLD was ignored).
    """
    while True:
        try:
            reaped, status = os.waitpid(-1, 0)
        except ChildProcessError as error:
            raise ChildLost(f"waitpid: {error.strerror or error}") from None
        if reaped == pid:
            return status


def run(argv: Sequence[str]) -> int:
    args = list(argv)
    if not args or args[0] != "--" or len(args) < 2:
        print(USAGE, file=sys.stderr)
        return 2
    command = args[1:]
    child: subprocess.Popen[bytes] | None = None
    pending: list[int] = []

    def forward(number: int, frame: FrameType | None) -> None:
        del frame
        if child is None:
            pending.append(number)  # arrived before the child started: sent right after
            return
        # ProcessLookupError: it ended meanwhile, its status is on the way.
        with contextlib.suppress(ProcessLookupError):
            os.kill(child.pid, number)

    for forwarded in FORWARDED:
        signal.signal(forwarded, forward)
    # An ignored SIGCHLD is inherited across exec, and then the kernel reaps our child
    # itself and its status is lost: take the default back before starting it.
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    try:
        child = subprocess.Popen(command)
    except FileNotFoundError:
        print(f"hpcstate wrapper: {command[0]}: command not found", file=sys.stderr)
        write_message({"exit": 127})
        return 127
    except PermissionError:
        print(f"hpcstate wrapper: {command[0]}: permission denied", file=sys.stderr)
        write_message({"exit": 126})
        return 126
    for early in pending:
        forward(early, None)
    try:
        status = _wait_for(child.pid)
    except ChildLost as error:
        child.returncode = LOST_CHILD  # nothing left for Popen to wait on either
        print(
            f"hpcstate wrapper: lost the exit status of {command[0]} (pid {child.pid}): "
            f"{error}; writing no termination message, exiting {LOST_CHILD}",
            file=sys.stderr,
        )
        return LOST_CHILD
    child.returncode = 0  # reaped by hand: stop Popen from waiting on it again
    doc, code = message_for(status)
    write_message(doc)
    return code


def main() -> None:
    sys.exit(run(sys.argv[1:]))


if __name__ == "__main__":
    main()
