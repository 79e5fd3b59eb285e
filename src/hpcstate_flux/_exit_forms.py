"""``hpcstate decode --from flux``: a Flux waitstatus or negative returncode, and what it
cannot say. Pure."""

from __future__ import annotations

import re
from typing import Final

from hpcstate import ExitStatus, ParseError, signal_name
from hpcstate.backend import SIGNAL_CODES, ExitForm, ExitReading, exit_code_notes, exit_integer

_INTEGER: Final = re.compile(r"\A-?[0-9]{1,12}\Z")
_CANCELLED: Final = -128
_RETURNCODE: Final = "a Flux returncode"
_WHO: Final = "the Flux job shell"


def read_exit_value(text: str) -> ExitReading:
    """One reading of a waitstatus (>= 0) or a returncode (< 0); ParseError otherwise."""
    value = exit_integer(text, "flux")
    if value == _CANCELLED:
        return ExitReading(
            label=_RETURNCODE,
            status=None,
            summary="cancelled before it ran",
            known=("Flux returncode -128: the job was cancelled before it ran; no wait status",),
        )
    if value < 0:
        sig = -value
        if sig > 127:
            raise ParseError(f"Flux returncode out of range: {value}", field="value")
        return ExitReading(
            label=_RETURNCODE,
            status=ExitStatus.killed(sig),
            summary=f"the job shell was killed by {signal_name(sig)} ({sig})",
            known=(
                f"Flux returncode {value}: the job shell itself was killed by "
                f"{signal_name(sig)} ({sig})",
            ),
        )
    return _read_wait_status(value)


def _read_wait_status(value: int) -> ExitReading:
    status = ExitStatus.from_wait_status(value)
    known: list[str] = []
    doubts: list[str] = []
    if status.signal is not None:
        sig = status.signal
        line = f"{_WHO} was killed by {signal_name(sig)} ({sig})"
        if status.core_dumped:
            line += " and dumped core"
        known.append(line + "; it has no exit code")
        known.append(
            f"Flux shows this as returncode -{sig}: the shell itself died, not only a task"
        )
    else:
        code = status.code if status.code is not None else 0
        shell_known, shell_doubts = exit_code_notes(code, who=_WHO)
        known.extend(shell_known)
        if code in SIGNAL_CODES:
            sig = code - 128
            doubts.append(
                f"the Flux shell exits 128+N when a task is killed by signal N, so a task was "
                f"probably killed by {signal_name(sig)} ({sig}), or it exited {code} itself; the "
                "exec eventlog's shell.task-exit signaled= field says which "
                "(flux job eventlog -p exec ID)"
            )
            if sig == 14:
                doubts.append("Flux ends a job at its time limit with SIGALRM (142)")
            elif sig == 9:
                doubts.append(
                    "an out-of-memory kill also ends as 137: Flux has no OOM state; the "
                    "shell's oom plugin only logs it to the output eventlog"
                )
        else:
            doubts.extend(shell_doubts)
    return ExitReading(
        label="a Flux waitstatus",
        status=status,
        summary=status.describe(),
        known=tuple(known),
        ambiguous=tuple(doubts),
    )


def _negative(text: str) -> bool:
    return _INTEGER.match(text) is not None and int(text) < 0


EXIT_FORMS: Final = {
    "flux": ExitForm(
        read=read_exit_value,
        claims=_negative,
        shape="a Flux returncode",
        integers=True,
    ),
}
