"""``hpcstate decode``: what an exit value from a scheduler means, and what it cannot say.

Pure. Each reading states the facts the value carries and, separately, what stays
ambiguous, so a number is never presented as more than it is.
"""

from __future__ import annotations

import contextlib
import enum
import re
from typing import Any, Final

from attrs import frozen

from hpcstate import ExitStatus, ParseError, signal_name

# Where shells put "killed by signal N": 128+N for N up to the last real-time signal.
_SIGNAL_CODES: Final = range(129, 128 + 64 + 1)
_INTEGER: Final = re.compile(r"\A-?[0-9]{1,12}\Z")
_SLURM_FORM: Final = re.compile(r"\A[0-9]{1,10}:[0-9]{1,10}\Z")
_FLUX_CANCELLED: Final = -128
SLURM_SIG_OOM: Final = 125  # Slurm's SIG_OOM (253) as ExitCode shows it: 253 & 0x7f


class Form(str, enum.Enum):
    """Where a value came from (``--from``)."""

    SLURM = "slurm"  # ExitCode / DerivedExitCode "code:signal"
    WAIT = "wait"  # a raw POSIX wait status
    FLUX = "flux"  # a Flux waitstatus, or a negative returncode
    K8S = "k8s"  # a container's terminated.exitCode
    EXIT = "exit"  # a plain exit code as a shell shows it in $?

    def __str__(self) -> str:
        return self.value


_LABELS: Final = {
    Form.SLURM: "a Slurm ExitCode (code:signal)",
    Form.WAIT: "a raw wait status",
    Form.FLUX: "a Flux waitstatus",
    Form.K8S: "a Kubernetes container exit code",
    Form.EXIT: "an exit code ($?)",
}


@frozen(kw_only=True)
class Reading:
    """One interpretation of the value."""

    form: Form
    status: ExitStatus | None  # None: the value says the job never ended with a status
    summary: str
    known: tuple[str, ...] = ()
    ambiguous: tuple[str, ...] = ()
    what: str = ""  # what the value was read as, when not the form's usual label

    @property
    def label(self) -> str:
        return self.what or _LABELS[self.form]


@frozen(kw_only=True)
class Decoded:
    value: str
    readings: tuple[Reading, ...]


def _shell_notes(code: int, *, who: str) -> tuple[list[str], list[str]]:
    """What a plain exit code says by shell conventions: (known, ambiguous)."""
    known: list[str] = []
    doubts: list[str] = []
    if code == 0:
        known.append(f"{who} exited 0: success")
    else:
        known.append(f"{who} exited normally with code {code}; no signal ended it")
    if code in _SIGNAL_CODES:
        sig = code - 128
        doubts.append(
            f"{code} = 128+{sig}: a shell reports a child killed by {signal_name(sig)} ({sig}) "
            f"as {code}, and a program may also exit {code} itself; nothing here says which"
        )
    elif code == 126:
        known.append("126 is the shells' code for a command found but not executable")
    elif code == 127:
        known.append("127 is the shells' code for a command not found")
    elif code == 124:
        doubts.append("124 is also what GNU timeout(1) exits with when its command timed out")
    elif code == 255:
        doubts.append("255 is also what ssh exits with on a connection error, and exit(-1)")
    return known, doubts


def _from_exit(code: int) -> Reading:
    status = ExitStatus.from_shell_code(code)
    known, doubts = _shell_notes(code, who="the process")
    return Reading(
        form=Form.EXIT,
        status=status,
        summary=f"exit {code}",
        known=tuple(known),
        ambiguous=tuple(doubts),
    )


def _from_slurm(text: str) -> Reading:
    status = ExitStatus.from_slurm(text)
    known: list[str] = []
    doubts: list[str] = []
    if status.signal is not None:
        sig = status.signal
        if sig == SLURM_SIG_OOM:
            known.append(
                "signal 125 is Slurm's out-of-memory marker (SIG_OOM), not a real signal: "
                "the step was killed for exceeding its memory; it has no exit code"
            )
        else:
            known.append(
                f"the batch script (or step) was killed by {signal_name(sig)} ({sig}); "
                "it has no exit code"
            )
        if sig in (9, 15):
            doubts.append(
                f"Slurm itself sends {signal_name(sig)} on scancel, at the time limit and on "
                "preemption: the job's state (CANCELLED, TIMEOUT, PREEMPTED) says who sent it"
            )
    else:
        code = status.code if status.code is not None else 0
        script_known, script_doubts = _shell_notes(code, who="the batch script (or step)")
        known.extend(script_known)
        doubts.extend(script_doubts)
        if code < 128:
            doubts.append(
                f"if this came from sacct's text output on Slurm 22.05 (which subtracts 128 "
                f"from exit codes >= 128), the exit code may be {code + 128}; scontrol and "
                "squeue --json are exact while the job is still in the controller"
            )
    summary = status.describe()
    if status.signal == SLURM_SIG_OOM:
        summary = "killed for exceeding its memory (Slurm's SIG_OOM, shown as signal 125)"
    return Reading(
        form=Form.SLURM,
        status=status,
        summary=summary,
        known=tuple(known),
        ambiguous=tuple(doubts),
    )


def _from_wait(value: int, form: Form = Form.WAIT) -> Reading:
    status = ExitStatus.from_wait_status(value)
    known: list[str] = []
    doubts: list[str] = []
    who = "the Flux job shell" if form is Form.FLUX else "the process"
    if status.signal is not None:
        sig = status.signal
        text = f"{who} was killed by {signal_name(sig)} ({sig})"
        if status.core_dumped:
            text += " and dumped core"
        known.append(text + "; it has no exit code")
        if form is Form.FLUX:
            known.append(
                f"Flux shows this as returncode -{sig}: the shell itself died, not only a task"
            )
    else:
        code = status.code if status.code is not None else 0
        shell_known, shell_doubts = _shell_notes(code, who=who)
        known.extend(shell_known)
        if form is Form.FLUX and code in _SIGNAL_CODES:
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
    summary = status.describe()
    return Reading(
        form=form, status=status, summary=summary, known=tuple(known), ambiguous=tuple(doubts)
    )


def _from_flux(value: int) -> Reading:
    if value == _FLUX_CANCELLED:
        return Reading(
            form=Form.FLUX,
            status=None,
            what="a Flux returncode",
            summary="cancelled before it ran",
            known=("Flux returncode -128: the job was cancelled before it ran; no wait status",),
        )
    if value < 0:
        sig = -value
        if sig > 127:
            raise ParseError(f"Flux returncode out of range: {value}", field="value")
        return Reading(
            form=Form.FLUX,
            status=ExitStatus.killed(sig),
            what="a Flux returncode",
            summary=f"the job shell was killed by {signal_name(sig)} ({sig})",
            known=(
                f"Flux returncode {value}: the job shell itself was killed by "
                f"{signal_name(sig)} ({sig})",
            ),
        )
    return _from_wait(value, Form.FLUX)


_K8S_NOTES: Final = {
    137: (
        "137 is how SIGKILL shows, and also an OOM kill (terminated.reason OOMKilled), a pod "
        "killed after its grace period, and the kubelet's made-up ContainerStatusUnknown "
        "(not a real exit): read the container's terminated.reason"
    ),
    143: "143 is SIGTERM: pod deletion, a Job deadline, a preemption or an eviction",
    128: "containerd reports a container that could not start (reason StartError) as 128",
}


def _from_k8s(code: int) -> Reading:
    status = ExitStatus.from_shell_code(code, source="the container's exit code")
    known, doubts = _shell_notes(code, who="the container's main process")
    doubts.append(
        "Kubernetes never reports signals (the kubelet keeps no signal field), so no "
        "exit code above 128 is known to be a signal; hpcstate's wrapper entrypoint writes "
        "the exact status to the termination message"
    )
    if code in _K8S_NOTES:
        doubts.append(_K8S_NOTES[code])
    return Reading(
        form=Form.K8S,
        status=status,
        summary=f"exit {code}",
        known=tuple(known),
        ambiguous=tuple(doubts),
    )


def _integer(value: str, form: Form) -> int:
    if not _INTEGER.match(value):
        raise ParseError(f"expected an integer for --from {form}", field="value", line=value)
    return int(value)


def _code(value: str, form: Form) -> int:
    number = _integer(value, form)
    if not 0 <= number <= 255:
        raise ParseError(
            f"an exit code is 0..255 (for a raw wait status use --from wait), got {number}",
            field="value",
        )
    return number


def decode(value: str, form: Form | None = None) -> Decoded:
    """Every sensible reading of ``value``. Raises ParseError when there is none."""
    text = value.strip()
    if form is Form.SLURM:
        readings: tuple[Reading, ...] = (_from_slurm(text),)
    elif form is Form.WAIT:
        readings = (_from_wait(_integer(text, form)),)
    elif form is Form.FLUX:
        readings = (_from_flux(_integer(text, form)),)
    elif form is Form.K8S:
        readings = (_from_k8s(_code(text, form)),)
    elif form is Form.EXIT:
        readings = (_from_exit(_code(text, form)),)
    elif _SLURM_FORM.match(text):
        readings = (_from_slurm(text),)
    elif _INTEGER.match(text):
        readings = _guess_integer(int(text))
    else:
        raise ParseError(
            "expected CODE:SIGNAL (Slurm), an exit code, a wait status or a Flux returncode",
            field="value",
            line=value,
        )
    return Decoded(value=text, readings=readings)


def _guess_integer(number: int) -> tuple[Reading, ...]:
    if number < 0:
        return (_from_flux(number),)
    if number > 255:
        return (_from_wait(number),)
    # 0..255 is both a valid exit code and (often) a valid wait status: show both.
    readings = [_from_exit(number)]
    with contextlib.suppress(ParseError):  # 127 or 255 are no termination as wait statuses
        readings.append(_from_wait(number))
    return tuple(readings)


def reading_dict(reading: Reading) -> dict[str, Any]:
    status = reading.status
    return {
        "from": reading.form.value,
        "label": reading.label,
        "summary": reading.summary,
        "exit_code": None if status is None else status.code,
        "signal": None if status is None else status.signal,
        "signal_name": None if status is None else status.signal_name,
        "core_dumped": False if status is None else status.core_dumped,
        "shell_code": None if status is None else status.shell_code,
        "wait_status": None if status is None else status.wait_status,
        "exact": status is not None and status.exact,
        "known": list(reading.known),
        "ambiguous": list(reading.ambiguous),
    }


def decoded_dict(decoded: Decoded) -> dict[str, Any]:
    return {
        "schema": 1,
        "input": decoded.value,
        "readings": [reading_dict(r) for r in decoded.readings],
    }


def decoded_text(decoded: Decoded) -> str:
    lines: list[str] = []
    several = len(decoded.readings) > 1
    if several:
        lines.append(f"{decoded.value} can be read {len(decoded.readings)} ways (use --from):")
    for reading in decoded.readings:
        lines.append(f"{decoded.value} read as {reading.label}: {reading.summary}")
        lines.extend(f"  known: {fact}" for fact in reading.known)
        lines.extend(f"  ambiguous: {doubt}" for doubt in reading.ambiguous)
        if not reading.ambiguous:
            lines.append("  nothing about it is ambiguous")
    return "\n".join(lines)
