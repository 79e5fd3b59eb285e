"""States, sources, inputs, and THE transition table.

Everything that decides where an item may go lives in this file, as data
(h11's rule 1). ``docs/concepts/states.md`` is generated from :data:`TRANSITIONS`.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import Final


class State(enum.Enum):
    """Normalized state of one tracked job or array task. Values are persisted."""

    # Members compare by identity; hash them by identity too (C speed, not Enum's
    # Python-level name hash): the poll loop does millions of set/dict lookups.
    __hash__ = object.__hash__

    PENDING = "pending"  # known to hpcstate, not yet accepted by a scheduler (no native id)
    QUEUED = "queued"  # accepted, waiting: Slurm PD, Flux DEPEND..SCHED, k8s pending pods
    RUNNING = "running"  # Slurm R/S/CG..., Flux RUN/CLEANUP, k8s active
    SETTLING = "settling"  # ended as far as the queue can tell; the verdict awaits confirmation
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    TIMEOUT = "timeout"
    OUT_OF_MEMORY = "out_of_memory"
    NODE_FAIL = "node_fail"
    PREEMPTED = "preempted"
    BOOT_FAIL = "boot_fail"
    DEADLINE = "deadline"
    GONE = "gone"  # no source knows the job any more and none ever gave a verdict

    def __str__(self) -> str:
        return self.value


#: States with a verdict. An item in one of them is finished.
TERMINAL: Final = frozenset(
    {
        State.COMPLETED,
        State.FAILED,
        State.CANCELLED,
        State.TIMEOUT,
        State.OUT_OF_MEMORY,
        State.NODE_FAIL,
        State.PREEMPTED,
        State.BOOT_FAIL,
        State.DEADLINE,
        State.GONE,
    }
)
#: Terminal states that a scheduler may reopen by requeueing the same id (Slurm
#: JobRequeue=1 after a node failure; PreemptMode=REQUEUE).
REOPENABLE: Final = frozenset({State.NODE_FAIL, State.PREEMPTED})
#: Terminal states that are a failure of the job (everything but success and "gone").
FAILURES: Final = TERMINAL - {State.COMPLETED, State.GONE}
#: States that hold resources (or may still): a concurrency cap counts these.
OCCUPYING: Final = frozenset({State.RUNNING, State.SETTLING})
#: Not yet running.
WAITING: Final = frozenset({State.PENDING, State.QUEUED})
ACTIVE: Final = WAITING | OCCUPYING


class Source(enum.Enum):
    """Where an observation came from. Values are persisted."""

    # Members compare by identity; hash them by identity too (C speed, not Enum's
    # Python-level name hash): the poll loop does millions of set/dict lookups.
    __hash__ = object.__hash__

    QUEUE = "queue"  # squeue, flux jobs (active part), k8s Job status
    CONTROLLER = "controller"  # scontrol / squeue --json: lossless while the job is in memory
    ACCOUNTING = "accounting"  # sacct, flux job-list for inactive jobs
    SELF_REPORT = "self_report"  # the job's own `hpcstate report`
    PROCESS = "process"  # the local backend's own wait status: lossless and final
    OUTPUT_CHECK = "output_check"  # a user-configured check on the job's output
    TRACKER = "tracker"  # hpcstate itself (submission, grace expiry, cancel intent)

    def __str__(self) -> str:
        return self.value


#: Sources that only advise: their exit status never replaces a scheduler's.
ADVISORY: Final = frozenset({Source.SELF_REPORT, Source.OUTPUT_CHECK, Source.TRACKER})
#: Which source wins when two exact exit statuses disagree (higher wins).
EXIT_PRIORITY: Final[Mapping[Source, int]] = {
    Source.PROCESS: 6,
    Source.CONTROLLER: 5,
    Source.ACCOUNTING: 4,
    Source.QUEUE: 3,
    Source.SELF_REPORT: 2,
    Source.OUTPUT_CHECK: 1,
    Source.TRACKER: 0,
}


class Input(enum.Enum):
    """What an observation means for an item, once classified (see ``classify``)."""

    # Members compare by identity; hash them by identity too (C speed, not Enum's
    # Python-level name hash): the poll loop does millions of set/dict lookups.
    __hash__ = object.__hash__

    SUBMITTED = "submitted"  # the scheduler accepted it and gave a native id
    SUBMIT_REJECTED = "submit_rejected"  # the scheduler refused the submission
    CANCEL_BEFORE_SUBMIT = "cancel_before_submit"
    SEEN_QUEUED = "seen_queued"
    SEEN_RUNNING = "seen_running"
    SEEN_SUCCESS = "seen_success"  # a non-final source says it completed: settle, confirm later
    SEEN_FAILURE = "seen_failure"  # a scheduler says it failed/timed out/...: that is a verdict
    VANISHED = "vanished"  # the queue no longer lists it; accounting may know
    FORGOTTEN = "forgotten"  # no source knows it and none ever will (purged, deleted)
    NO_RECORD = "no_record"  # accounting has no record (yet)
    ACCOUNTING_ACTIVE = "accounting_active"  # accounting still says pending/running (lag)
    CONFIRMED = "confirmed"  # an authoritative source gives the terminal state
    LATE_CONFIRMATION = "late_confirmation"  # ...after an unconfirmed verdict
    SELF_REPORTED = "self_reported"  # the job says its payload ended
    GRACE_EXPIRED = "grace_expired"  # settled too long, known to have run: unconfirmed success
    GRACE_EXPIRED_UNSEEN = "grace_expired_unseen"  # settled too long, never known to have run
    REQUEUED = "requeued"  # a new run under the same id (restart count went up)
    # A cancel was requested (the stored cancel_requested marker, from any process), the
    # queue listed the job queued/running after that, and the job then vanished straight
    # from that live view (no source knows it). Never from SETTLING: a job that already
    # left the queue may have ended on its own before the cancel reached it.
    VANISHED_AFTER_CANCEL = "vanished_after_cancel"
    STALE = "stale"  # older than what the item already knows

    def __str__(self) -> str:
        return self.value


class Target(enum.Enum):
    """Table targets that are not a fixed state."""

    # Members compare by identity; hash them by identity too (C speed, not Enum's
    # Python-level name hash): the poll loop does millions of set/dict lookups.
    __hash__ = object.__hash__

    SAME = "same"  # stay; merge what is new (stats), emit StatsUpdated if anything changed
    OBSERVED = "observed"  # go to the terminal state the observation carries

    def __str__(self) -> str:
        return self.value


_S = State
_I = Input
SAME: Final = Target.SAME
OBSERVED: Final = Target.OBSERVED


def _rows() -> dict[tuple[State, Input], State | Target]:
    table: dict[tuple[State, Input], State | Target] = {
        (_S.PENDING, _I.SUBMITTED): _S.QUEUED,
        (_S.PENDING, _I.SUBMIT_REJECTED): _S.FAILED,
        (_S.PENDING, _I.CANCEL_BEFORE_SUBMIT): _S.CANCELLED,
        # Waiting in the queue.
        (_S.QUEUED, _I.SEEN_QUEUED): SAME,
        (_S.QUEUED, _I.SEEN_RUNNING): _S.RUNNING,
        (_S.QUEUED, _I.SEEN_SUCCESS): _S.SETTLING,  # polling can miss RUNNING entirely
        (_S.QUEUED, _I.SEEN_FAILURE): OBSERVED,
        (_S.QUEUED, _I.VANISHED): _S.SETTLING,  # e.g. cancelled while pending: ask accounting
        (_S.QUEUED, _I.FORGOTTEN): _S.GONE,
        (_S.QUEUED, _I.NO_RECORD): SAME,
        (_S.QUEUED, _I.ACCOUNTING_ACTIVE): SAME,
        (_S.QUEUED, _I.CONFIRMED): OBSERVED,
        (_S.QUEUED, _I.SELF_REPORTED): _S.SETTLING,
        (_S.QUEUED, _I.REQUEUED): _S.QUEUED,
        (_S.QUEUED, _I.VANISHED_AFTER_CANCEL): _S.CANCELLED,  # unconfirmed
        # Running.
        # Only a higher restart count is a requeue; a bare "queued" sighting of a running
        # job is a suspended (k8s) or glitching listing, never a new run.
        (_S.RUNNING, _I.SEEN_QUEUED): SAME,
        (_S.RUNNING, _I.SEEN_RUNNING): SAME,
        (_S.RUNNING, _I.SEEN_SUCCESS): _S.SETTLING,
        (_S.RUNNING, _I.SEEN_FAILURE): OBSERVED,
        (_S.RUNNING, _I.VANISHED): _S.SETTLING,
        (_S.RUNNING, _I.FORGOTTEN): _S.GONE,
        (_S.RUNNING, _I.NO_RECORD): SAME,
        (_S.RUNNING, _I.ACCOUNTING_ACTIVE): SAME,
        (_S.RUNNING, _I.CONFIRMED): OBSERVED,
        (_S.RUNNING, _I.SELF_REPORTED): _S.SETTLING,
        (_S.RUNNING, _I.REQUEUED): _S.QUEUED,
        (_S.RUNNING, _I.VANISHED_AFTER_CANCEL): _S.CANCELLED,  # unconfirmed
        # Settling: only a confirmation (or a failure, or the grace) ends it.
        (_S.SETTLING, _I.SEEN_QUEUED): SAME,  # listed again: the grace restarts
        (_S.SETTLING, _I.SEEN_RUNNING): SAME,  # queue lagging a self-report; grace restarts
        (_S.SETTLING, _I.SEEN_SUCCESS): SAME,
        (_S.SETTLING, _I.SEEN_FAILURE): OBSERVED,
        (_S.SETTLING, _I.VANISHED): SAME,
        (_S.SETTLING, _I.FORGOTTEN): _S.GONE,
        (_S.SETTLING, _I.NO_RECORD): SAME,
        (_S.SETTLING, _I.ACCOUNTING_ACTIVE): SAME,  # the database lags the controller
        (_S.SETTLING, _I.CONFIRMED): OBSERVED,
        (_S.SETTLING, _I.SELF_REPORTED): SAME,
        (_S.SETTLING, _I.GRACE_EXPIRED): _S.COMPLETED,  # unconfirmed, never FAILED
        (_S.SETTLING, _I.GRACE_EXPIRED_UNSEEN): _S.GONE,
        (_S.SETTLING, _I.REQUEUED): _S.QUEUED,
    }
    # Terminal states absorb: late or repeated observations only enrich stats.
    for state in TERMINAL:
        for absorbed in (
            _I.SEEN_QUEUED,  # a recycled id, or a stale snapshot: never the job
            _I.SEEN_RUNNING,
            _I.SEEN_SUCCESS,
            _I.SEEN_FAILURE,
            _I.VANISHED,  # normal: purged after the verdict
            _I.FORGOTTEN,
            _I.NO_RECORD,
            _I.ACCOUNTING_ACTIVE,
            _I.CONFIRMED,
            _I.SELF_REPORTED,  # too late: never overrides a verdict
        ):
            table[state, absorbed] = SAME
    # An unconfirmed verdict (grace fallback, or gone) is corrected by a late record.
    table[_S.COMPLETED, _I.LATE_CONFIRMATION] = OBSERVED
    table[_S.GONE, _I.LATE_CONFIRMATION] = OBSERVED
    table[_S.CANCELLED, _I.LATE_CONFIRMATION] = OBSERVED  # cancelled, then vanished
    # A node failure or preemption may be followed by a requeue under the same id.
    for state in REOPENABLE:
        table[state, _I.REQUEUED] = _S.QUEUED
    # Stale observations change nothing, anywhere.
    for state in State:
        table[state, _I.STALE] = SAME
    return table


#: (state, input) -> target. A pair that is missing is an illegal transition.
TRANSITIONS: Final[Mapping[tuple[State, Input], State | Target]] = _rows()
