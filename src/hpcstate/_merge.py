"""Merging accounting rows into one verdict per job, the Slurm way.

Slurm's accounting has a job row, a ``.batch`` row (the script), an ``.extern`` row
(infrastructure, ignored) and one row per srun step. The shapes are generic so that any
scheduler with steps can reuse them:

* the job row gives the state, reason, times and node list;
* on a conflict about the exit status, the ``.batch`` row wins (for a TIMEOUT or a
  cancel the job row says ``0:0``, Slurm's own value, while ``.batch`` says ``0:15``);
* a job that never started has no exit status at all (not 0);
* DerivedExitCode is the maximum over user steps by raw wait status (any exit code beats
  any signal), with Slurm's out-of-memory signal 125 above everything.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from datetime import datetime

from attrs import evolve, frozen

from ._exit import MAX_SIGNAL, ExitStatus
from ._model import JobStats
from ._reasons import Reason
from ._states import Source, State

BATCH_STEP = "batch"
IGNORED_STEPS = frozenset({"extern"})
_NOT_USER_STEPS = IGNORED_STEPS | {BATCH_STEP}
SLURM_OOM_SIGNAL = 125


@frozen(kw_only=True)
class AccountingRow:
    """One accounting row as a parser read it (job row when ``step`` is None)."""

    job_id: str  # "123", "123_4", "123+1": the job part, without the step
    step: str | None = None  # None, "batch", "extern", "interactive", "0", "1"...
    raw_id: str = ""
    state: State | None = None  # normalized; None for states that are no verdict (REQUEUED)
    state_text: str = ""  # verbatim, e.g. "CANCELLED by 0"
    exit: ExitStatus | None = None
    derived_exit: ExitStatus | None = None
    reason: Reason | None = None
    submitted_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    elapsed_s: float | None = None
    cpu_time_s: float | None = None
    max_rss_bytes: int | None = None
    nodes: tuple[str, ...] = ()
    restarts: int | None = None
    name: str = ""

    @property
    def is_user_step(self) -> bool:
        return self.step is not None and self.step not in _NOT_USER_STEPS


def _raw_order(status: ExitStatus) -> int:
    if status.signal == SLURM_OOM_SIGNAL:
        return 1 << 20  # SIG_OOM overrides everything (stepmgr)
    return status.wait_status or 0


def derived_exit(steps: Sequence[AccountingRow]) -> ExitStatus | None:
    """The worst user step, Slurm's way; None when there are no user steps.

    With ambiguous step statuses (22.05's lossy "c or c+128", a shell's "128+N") the
    worst step may depend on the true values. When it does, the answer is marked
    ambiguous and its text names every value the worst step may have had; its
    ``admits()`` knows only its own code's pair, so ask :func:`possible_worsts` for the
    full list (the Slurm dialect does, to accept the job row's exact DerivedExitCode).
    """
    statuses = [row.exit for row in steps if row.is_user_step and row.exit is not None]
    if not statuses:
        return None
    if len(statuses) == 1 or all(status.exact for status in statuses):
        return max(statuses, key=_raw_order)
    return _ambiguous_worst(tuple(statuses))


@functools.lru_cache(maxsize=4096)
def _ambiguous_worst(statuses: tuple[ExitStatus, ...]) -> ExitStatus:
    # Cached: the steps of an array's tasks, and a poll's jobs, repeat the same statuses.
    worst = max(statuses, key=_raw_order)
    possible = _possible_worsts(statuses)
    if len(possible) == 1:
        (only,) = possible
        return only
    if all(worst.admits(value) for value in possible):
        return worst  # the same answer whatever the true values: its own ambiguity says it
    listed = ", ".join(value.describe() for value in possible)
    return evolve(worst, ambiguous=f"the worst step is not known; it may be {listed}")


def _candidates(status: ExitStatus) -> tuple[ExitStatus, ...]:
    """The exact values an exit status may stand for (what ``admits`` accepts)."""
    if status.exact or status.code is None:
        return (evolve(status, ambiguous=None),)
    if status.code < 128:
        return (ExitStatus.exited(status.code), ExitStatus.exited(status.code + 128))
    if not 1 <= status.code - 128 <= MAX_SIGNAL:
        return (ExitStatus.exited(status.code),)  # no signal has that number: as admits()
    return (ExitStatus.exited(status.code), ExitStatus.killed(status.code - 128))


def possible_worsts(statuses: Sequence[ExitStatus]) -> tuple[ExitStatus, ...]:
    """Every exact value the worst of ``statuses`` may be, in Slurm's order (pure).

    A candidate of one step can be the worst when it is at least as bad as every other
    step's mildest candidate.
    """
    return _possible_worsts(tuple(statuses))


@functools.lru_cache(maxsize=4096)
def _possible_worsts(statuses: tuple[ExitStatus, ...]) -> tuple[ExitStatus, ...]:
    choices = [_candidates(status) for status in statuses]
    mildest = [min(_raw_order(value) for value in values) for values in choices]
    found: dict[tuple[int | None, int | None, bool], ExitStatus] = {}
    for index, values in enumerate(choices):
        floor = max((m for i, m in enumerate(mildest) if i != index), default=-1)
        for value in values:
            if _raw_order(value) >= floor:
                found.setdefault((value.code, value.signal, value.core_dumped), value)
    return tuple(sorted(found.values(), key=_raw_order))


def merge_rows(job: AccountingRow, steps: Sequence[AccountingRow]) -> JobStats:
    """One JobStats from a job row and its step rows (pure)."""
    batch = next((row for row in steps if row.step == BATCH_STEP), None)
    exit_ = job.exit
    if batch is not None and batch.exit is not None:
        exit_ = batch.exit
    if job.started_at is None and batch is None:
        exit_ = None  # it never ran: Slurm's 0:0 is no exit status
    derived = derived_exit(steps)
    if derived is None:
        derived = job.derived_exit
    if job.started_at is None and derived is not None and derived.success and not steps:
        derived = None
    rss = [
        row.max_rss_bytes
        for row in (job, *steps)
        if row.max_rss_bytes is not None and row.step not in IGNORED_STEPS
    ]
    cpu = job.cpu_time_s
    if cpu is None:
        step_cpu = [
            row.cpu_time_s
            for row in steps
            if row.cpu_time_s is not None and row.step not in IGNORED_STEPS
        ]
        cpu = sum(step_cpu) if step_cpu else None
    return JobStats(
        exit=exit_,
        exit_source=Source.ACCOUNTING if exit_ is not None else None,
        derived_exit=derived,
        reason=job.reason,
        submitted_at=job.submitted_at,
        started_at=job.started_at,
        finished_at=job.finished_at,
        elapsed_s=job.elapsed_s,
        cpu_time_s=cpu,
        max_rss_bytes=max(rss) if rss else None,
        nodes=job.nodes,
    )
