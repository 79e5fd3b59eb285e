"""Why a job is where it is: Slurm's reason vocabulary, unknown reasons kept verbatim."""

from __future__ import annotations

import enum
import functools
import re
from collections.abc import Mapping
from typing import Final

from attrs import frozen

from ._exit import ExitStatus, signal_number
from ._states import TERMINAL, State


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


# -- a verdict's reason ------------------------------------------------------------------

#: Reasons that say why a job ENDED. NONE and OTHER say nothing about the end (OTHER is
#: words hpcstate does not know: a queue's pending reason, or a scheduler's own term).
END_KINDS: Final = frozenset(ReasonKind) - {ReasonKind.NONE, ReasonKind.OTHER}

#: End reasons a backend knows better than an exit status: they stay on any failure.
#: (A time limit, an out-of-memory kill or a cancel often shows as a signal or a code;
#: the reason says what sent it. A launch failure's code is the runtime's, not the job's.)
_KEPT_ON_FAILURE: Final = frozenset(
    {
        ReasonKind.TIME_LIMIT,
        ReasonKind.OUT_OF_MEMORY,
        ReasonKind.NODE_FAIL,
        ReasonKind.PREEMPTED,
        ReasonKind.CANCELLED,
        ReasonKind.DEADLINE,
        ReasonKind.SUBMIT_REJECTED,
        ReasonKind.EXCEPTION,
    }
)


def _rekind(told: Reason | None, kind: ReasonKind, signal: int | None = None) -> Reason:
    """A reason of ``kind``, keeping the scheduler's words (text, uid, detail) if any."""
    if told is None:
        return Reason(kind=kind, signal=signal)
    return Reason(kind=kind, text=told.text, signal=signal, uid=told.uid, detail=told.detail)


@functools.lru_cache(maxsize=4096)
def verdict_reason(state: State, exit: ExitStatus | None, told: Reason | None) -> Reason | None:
    """The reason of an item in ``state``, agreeing with its verdict (pure, total).

    Not a verdict (queued, running, settling): ``told`` unchanged. For a verdict:

    * a state that names its reason (timeout, cancelled, out_of_memory, node_fail,
      preempted, deadline) has that kind;
    * success (completed) has kind ``none``;
    * a failure keeps an end reason a backend knows better than the exit (a time limit,
      an OOM kill, a node failure, a cancel, a deadline, a rejected submit, a Flux
      exception); otherwise an exact signal is ``raised_signal`` with that signal, a
      non-zero code ``non_zero_exit_code``, and a launch failure or a Kubernetes
      backoff limit with no such exit stays as told;
    * ``none`` never explains a failure, so with nothing better the reason is None.

    The scheduler's own words (``text``, ``uid``, ``detail``) are kept whenever the
    kind changes, so ``JobLaunchFailure`` on a signalled Slurm 22.05 batch script reads
    ``raised_signal`` with ``text="JobLaunchFailure"``. Idempotent. Which reason reaches
    here is the machine's business: one carried over from the wait (``Priority``) never
    does (see :func:`hpcstate.advance`).
    """
    if state not in TERMINAL:
        return told
    named = STATE_REASON_KINDS.get(state)
    if named is not None:
        return told if told is not None and told.kind is named else _rekind(told, named)
    if state is State.COMPLETED:
        return (
            told
            if told is not None and told.kind is ReasonKind.NONE
            else _rekind(told, ReasonKind.NONE)
        )
    told_kind = told.kind if told is not None else None
    if told_kind in _KEPT_ON_FAILURE:
        return told
    if exit is not None:
        if exit.signal is not None:
            if (
                told is not None
                and told_kind is ReasonKind.RAISED_SIGNAL
                and (told.signal == exit.signal)
            ):
                return told
            return _rekind(told, ReasonKind.RAISED_SIGNAL, exit.signal)
        if exit.code:
            if (
                told is not None
                and told_kind is ReasonKind.RAISED_SIGNAL
                and (told.signal is not None and not exit.exact)
            ):
                # A lossy code ("9 or 137") beside the scheduler's own RaisedSignal:9.
                return told
            if told_kind is ReasonKind.JOB_LAUNCH_FAILURE:
                return told  # the runtime's code: the payload never ran
            if told_kind is ReasonKind.NON_ZERO_EXIT_CODE:
                return told
            return _rekind(told, ReasonKind.NON_ZERO_EXIT_CODE)
    if told_kind is ReasonKind.NONE:
        return None
    return told


#: The reason a final state names by itself (a time limit is always ``time_limit``...).
STATE_REASON_KINDS: Final[Mapping[State, ReasonKind]] = {
    State.TIMEOUT: ReasonKind.TIME_LIMIT,
    State.CANCELLED: ReasonKind.CANCELLED,
    State.OUT_OF_MEMORY: ReasonKind.OUT_OF_MEMORY,
    State.NODE_FAIL: ReasonKind.NODE_FAIL,
    State.PREEMPTED: ReasonKind.PREEMPTED,
    State.DEADLINE: ReasonKind.DEADLINE,
}
