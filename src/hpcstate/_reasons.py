"""Why a job is where it is: Slurm's reason vocabulary, unknown reasons kept verbatim."""

from __future__ import annotations

import enum
import re

from attrs import frozen

from ._exit import signal_number


class ReasonKind(enum.Enum):
    NONE = "none"
    NON_ZERO_EXIT_CODE = "non_zero_exit_code"
    RAISED_SIGNAL = "raised_signal"
    TIME_LIMIT = "time_limit"
    OUT_OF_MEMORY = "out_of_memory"
    NODE_FAIL = "node_fail"
    PREEMPTED = "preempted"
    CANCELLED = "cancelled"
    JOB_LAUNCH_FAILURE = "job_launch_failure"
    SUBMIT_REJECTED = "submit_rejected"
    DEADLINE = "deadline"
    BACKOFF_LIMIT = "backoff_limit"
    EXCEPTION = "exception"  # Flux: a fatal exception (type in .detail)
    OTHER = "other"  # kept verbatim in .text

    def __str__(self) -> str:
        return self.value


@frozen(kw_only=True)
class Reason:
    """A reason, normalized where we know the word, with the scheduler's text kept."""

    kind: ReasonKind
    text: str = ""
    signal: int | None = None  # RaisedSignal:N
    uid: int | None = None  # "CANCELLED by N"
    detail: str = ""  # e.g. the flux exception type

    @classmethod
    def other(cls, text: str) -> Reason:
        return cls(kind=ReasonKind.OTHER, text=text)

    def describe(self) -> str:
        if self.kind is ReasonKind.CANCELLED and self.uid is not None:
            return f"cancelled by uid {self.uid}"
        return self.text or str(self.kind)


_FIXED = {
    "none": ReasonKind.NONE,
    "nonzeroexitcode": ReasonKind.NON_ZERO_EXIT_CODE,
    "timelimit": ReasonKind.TIME_LIMIT,
    "outofmemory": ReasonKind.OUT_OF_MEMORY,
    "nodefail": ReasonKind.NODE_FAIL,
    "nodedown": ReasonKind.NODE_FAIL,
    "joblaunchfailure": ReasonKind.JOB_LAUNCH_FAILURE,
    "launchfailure": ReasonKind.JOB_LAUNCH_FAILURE,
    "deadline": ReasonKind.DEADLINE,
    "preempted": ReasonKind.PREEMPTED,
    "cancelled": ReasonKind.CANCELLED,
}
# squeue %r prints "RaisedSignal:11(Segmentation fault)", scontrol "...(Segmentation_fault)".
_RAISED = re.compile(r"\ARaisedSignal:([0-9]{1,3})(?:\((.*)\))?\Z")
_CANCELLED_BY = re.compile(r"\ACANCELLED by ([0-9]{1,10})\Z")


def parse_slurm_reason(text: str) -> Reason:
    """Read a Slurm reason (squeue %r, scontrol Reason=, sacct State's "by N").

    Total: never raises; anything unknown is kept verbatim as ``OTHER``.
    """
    stripped = text.strip()
    if stripped.startswith("(") and stripped.endswith(")"):
        stripped = stripped[1:-1]
    fixed = _FIXED.get(stripped.lower())
    if fixed is not None:
        return Reason(kind=fixed, text=stripped)
    match = _RAISED.match(stripped)
    if match is not None:
        number = int(match.group(1))
        signal: int | None = number if 1 <= number <= 127 else None
        if signal is None and match.group(2):
            try:
                signal = signal_number(match.group(2))
            except ValueError:
                signal = None
        return Reason(kind=ReasonKind.RAISED_SIGNAL, text=stripped, signal=signal)
    match = _CANCELLED_BY.match(stripped)
    if match is not None:
        return Reason(kind=ReasonKind.CANCELLED, text=stripped, uid=int(match.group(1)))
    if not stripped:
        return Reason(kind=ReasonKind.NONE, text="")
    return Reason.other(stripped)
