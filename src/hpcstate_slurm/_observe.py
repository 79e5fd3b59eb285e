"""What Slurm's answers mean: command results and parsed rows into Observations,
Submissions and errors.

Pure: no I/O, no clock (``observed_at`` is an argument). ``_parse`` turns text into rows;
this module decides what those rows say about a job, for the release whose
:class:`~hpcstate_slurm._versions.SlurmBehaviour` it is given.

Sources and what they are worth:

* ``squeue -O ...,exit_code,DerivedEC,...`` is the queue AND the controller record in one
  call: while a finished job is still in slurmctld (MinJobAge), its exit status is
  lossless, on every version (22.05 prints the raw wait status, 23.02 on ``code:signal``;
  either is read whatever the detected version). An observation that carries it has
  source CONTROLLER.
* ``sacct -P -D`` is the authoritative, final record. On versions whose sacct subtracts
  128 from exit codes >= 128 its exit code is marked ambiguous; the state machine keeps
  the controller's exact value over it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, tzinfo
from typing import Final

from attrs import evolve

from hpcstate import (
    FAILURES,
    STATE_REASON_KINDS,
    TERMINAL,
    Absence,
    CommandFailed,
    ExitStatus,
    JobStats,
    Observation,
    ParseError,
    Reason,
    ReasonKind,
    SchedulerUnavailable,
    Source,
    State,
    expand_array_spec,
    merge_rows,
    possible_worsts,
)
from hpcstate.backend import AccountingQuery, CommandResult, JobSpec, Submission

from ._commands import TAG_PREFIX
from ._parse import (
    SLURM_SET_EXIT_STATES,
    AccountingRecord,
    QueueRow,
    group_records,
    parse_sacct_text,
    parse_sbatch_output,
    parse_squeue,
    split_job_id,
    split_rows,
)
from ._versions import SlurmBehaviour, SlurmVersion

INVALID_JOB_ID: Final = "Invalid job id specified"
REJECTED_MARKER: Final = "Batch job submission failed"
_ALREADY_DONE = ("Job/step already completing or completed", INVALID_JOB_ID, "already completed")

#: Messages that mean "ask again later", never "the job failed" (slurm.md section 6).
TRANSIENT_MARKERS: Final = (
    "problem talking to the database",
    "unable to contact slurm controller",
    "socket timed out",
    "zero bytes were transmitted",
    "rate limit exceeded",
    "connection refused",
    "slurmdbd: connection",
    "unable to connect to database",
    "communication connection failure",
    "slurm_persist_conn_open",
    "resource temporarily unavailable",
    "temporarily unable to accept job",
    "transport endpoint is not connected",
    "connection timed out",
    "connection reset by peer",
    "no route to host",
    "send/recv operation",
)


def looks_transient(stderr: str) -> bool:
    text = stderr.lower()
    return any(marker in text for marker in TRANSIENT_MARKERS)


class SubmitRejected(CommandFailed):
    """sbatch refused the job (``Batch job submission failed: ...``): not transient.

    The tracker turns this into ``submit_rejected``; ``.message`` is Slurm's reason.
    """

    def __init__(self, argv: Sequence[str], returncode: int | None, stderr: str) -> None:
        super().__init__(argv, returncode, stderr)
        lines = [line for line in stderr.splitlines() if REJECTED_MARKER in line]
        text = lines[-1] if lines else stderr.strip()
        self.message = text.split(REJECTED_MARKER, 1)[-1].lstrip(": ").strip() or text


# -- errors -----------------------------------------------------------------------------------


def is_transient(result: CommandResult) -> bool:
    if result.returncode is None:
        return True  # timed out: says nothing about the job
    return result.returncode != 0 and looks_transient(result.stderr)


def raise_failure(result: CommandResult) -> None:
    """A failed command as an error: SchedulerUnavailable (ask again) or CommandFailed."""
    if is_transient(result):
        tail = result.stderr.strip().splitlines()[-1:] or ["timed out"]
        raise SchedulerUnavailable(f"{result.argv[0]}: {tail[0]}")
    raise CommandFailed(result.argv, result.returncode, result.stderr)


# -- answers ----------------------------------------------------------------------------------


def version(result: CommandResult) -> SlurmVersion:
    """``sbatch --version``'s answer."""
    if result.returncode != 0:
        raise CommandFailed(result.argv, result.returncode, result.stderr)
    return SlurmVersion.parse(result.stdout)


def submission(result: CommandResult, spec: JobSpec) -> Submission:
    """sbatch's answer: the job (and an array's task ids), or why not."""
    if result.returncode != 0:
        if REJECTED_MARKER in result.stderr:
            raise SubmitRejected(result.argv, result.returncode, result.stderr)
        raise_failure(result)
    job_id, _cluster = parse_sbatch_output(result.stdout)
    tasks: tuple[str, ...] = ()
    if spec.array:
        tasks = tuple(f"{job_id}_{index}" for index in expand_array_spec(spec.array))
    return Submission(native_id=job_id, array_task_ids=tasks)


def found_in_queue(result: CommandResult, tag: str) -> Submission | None:
    """The queued or running job whose comment is ``hpcstate:<tag>``, or None."""
    if result.returncode != 0:
        raise_failure(result)
    wanted = TAG_PREFIX + tag
    for _, fields in split_rows(
        result.stdout, columns=("id", "comment"), free_column="comment", command="squeue"
    ):
        if fields["comment"] == wanted:
            job_id = fields["id"].strip()
            if not job_id.isdecimal():
                raise ParseError("expected a job id", command="squeue", field="%F")
            return Submission(native_id=job_id)
    return None


def found_in_accounting(result: CommandResult, tag: str) -> Submission | None:
    """The job whose submit line carries ``--comment=hpcstate:<tag>``, or None."""
    if result.returncode != 0:
        raise_failure(result)
    wanted = f"--comment={TAG_PREFIX}{tag}"
    for _, fields in split_rows(
        result.stdout, columns=("id", "line"), free_column="line", command="sacct"
    ):
        if wanted in fields["line"].split():
            job, _step = split_job_id(fields["id"], command="sacct")
            base = job.split("_", 1)[0].split("+", 1)[0]
            return Submission(native_id=base)
    return None


def queue_answer(
    result: CommandResult,
    *,
    behaviour: SlurmBehaviour,
    tz: tzinfo,
    native_ids: Sequence[str],
    observed_at: datetime,
) -> list[Observation]:
    """squeue's answer: one observation per asked id."""
    if result.returncode != 0:
        # One id that slurmctld no longer knows (purged, or never existed): absence.
        if INVALID_JOB_ID in result.stderr and not looks_transient(result.stderr):
            return [absent(native_id, observed_at) for native_id in native_ids]
        raise_failure(result)
    rows = parse_squeue(
        result.stdout, tz=tz, exit_is_wait_status=behaviour.squeue_exit_code_is_wait_status
    )
    return queue_observations(rows, native_ids=native_ids, observed_at=observed_at)


def queue_observations(
    rows: Sequence[QueueRow], *, native_ids: Sequence[str], observed_at: datetime
) -> list[Observation]:
    """One observation per asked id from parsed squeue rows (absent ids: ABSENT)."""
    by_id = {row.job_id: row for row in rows}
    by_array: dict[str, list[QueueRow]] = {}
    for row in rows:
        if "_" in row.job_id:
            by_array.setdefault(row.job_id.split("_", 1)[0], []).append(row)
    observations = []
    for native_id in native_ids:
        found = by_id.get(native_id) or by_id.get(f"{native_id}+0")
        if found is not None:
            observations.append(_queue_observation(native_id, found, observed_at))
            continue
        tasks = by_array.get(native_id, [])
        if tasks:
            observations.append(_array_observation(native_id, tasks, observed_at))
        else:
            observations.append(absent(native_id, observed_at))
    return observations


def absent(native_id: str, observed_at: datetime) -> Observation:
    return Observation(
        native_id=native_id,
        source=Source.QUEUE,
        observed_at=observed_at,
        absence=Absence.ABSENT,
        detail="squeue does not list this job (finished past MinJobAge, or never existed)",
    )


def accounting_answer(
    result: CommandResult,
    *,
    behaviour: SlurmBehaviour,
    tz: tzinfo,
    query: AccountingQuery,
    observed_at: datetime,
) -> list[Observation]:
    """sacct's answer: one observation per asked id, from the newest record of each."""
    if result.returncode != 0:
        raise_failure(result)
    rows = parse_sacct_text(
        result.stdout,
        tz=tz,
        exit_lossy=behaviour.sacct_exit_high_codes_lossy,
        derived_lossy=behaviour.sacct_derived_high_codes_lossy,
    )
    return accounting_observations(
        group_records(rows), native_ids=query.native_ids, observed_at=observed_at
    )


def cancel_answer(result: CommandResult) -> None:
    """A cancel of a job that already ended (or was purged) is done, not an error."""
    if result.returncode == 0:
        return
    errors = [line for line in result.stderr.splitlines() if "error" in line.lower()]
    if errors and all(any(mark in line for mark in _ALREADY_DONE) for line in errors):
        return
    raise_failure(result)


# -- observations ------------------------------------------------------------------------------


def _worst(states: Sequence[State]) -> State:
    """An array's verdict from its tasks' verdicts: any failure fails it (one kind: that one)."""
    failures = {state for state in states if state in FAILURES}
    if not failures:
        return State.COMPLETED
    if len(failures) == 1:
        return failures.pop()
    return State.FAILED


#: Reasons that say why a job ENDED; any other reason on a finished job is a scheduling
#: reason left over from its wait (``Priority``, ``JobHeldUser``, ``BeginTime``...).
_END_REASONS: Final = frozenset(
    {
        ReasonKind.NON_ZERO_EXIT_CODE,
        ReasonKind.RAISED_SIGNAL,
        ReasonKind.TIME_LIMIT,
        ReasonKind.OUT_OF_MEMORY,
        ReasonKind.NODE_FAIL,
        ReasonKind.PREEMPTED,
        ReasonKind.CANCELLED,
        ReasonKind.JOB_LAUNCH_FAILURE,
        ReasonKind.DEADLINE,
    }
)


def final_reason(
    state: State | None, exit: ExitStatus | None, told: Reason | None
) -> Reason | None:
    """The reason of a FINISHED job, never a pending one; the scheduler's words kept.

    * A reason that says why a job ended is kept as Slurm gave it, except 22.05's
      ``JobLaunchFailure`` for a batch script that died of a signal (measured on 22.05.8:
      ``kill -TERM $$``), which is ``raised_signal`` with that signal, text kept.
    * Anything else (a pending reason left on the record: squeue keeps ``JobHeldUser`` on
      a cancelled held job, 22.05's sacct ``Priority`` on a completed one, 26.05's sacct
      ``BeginTime`` after a requeue, and 26.05's sacct ``None`` on EVERY finished job) is
      replaced by what the state or the exit says: ``time_limit``, ``cancelled``...;
      ``raised_signal`` with the signal; ``non_zero_exit_code``; ``none`` for exit 0.
    * None when nothing is known (a failure whose exit is not recorded yet).
    """
    if told is not None and told.kind in _END_REASONS:
        if (
            told.kind is ReasonKind.JOB_LAUNCH_FAILURE
            and exit is not None
            and exit.signal is not None
            and exit.exact
        ):
            return Reason(kind=ReasonKind.RAISED_SIGNAL, text=told.text, signal=exit.signal)
        return told
    kind = STATE_REASON_KINDS.get(state) if state is not None else None
    if kind is not None:
        return Reason(kind=kind)
    if exit is not None:
        if exit.signal is not None:
            return Reason(kind=ReasonKind.RAISED_SIGNAL, signal=exit.signal)
        if exit.code:
            return Reason(kind=ReasonKind.NON_ZERO_EXIT_CODE)
        if state is State.COMPLETED:
            return Reason(kind=ReasonKind.NONE)
        return None
    if state is State.COMPLETED:
        return Reason(kind=ReasonKind.NONE)
    return None


def _queue_observation(native_id: str, row: QueueRow, observed_at: datetime) -> Observation:
    terminal = row.state in TERMINAL
    # A finished row with the controller's wait status is the lossless controller record.
    source = Source.CONTROLLER if terminal and row.exit is not None else Source.QUEUE
    stats = JobStats(
        exit=row.exit if terminal else None,
        exit_source=source if terminal and row.exit is not None else None,
        derived_exit=row.derived_exit if terminal else None,
        reason=final_reason(row.state, row.exit, row.reason) if terminal else row.reason,
        submitted_at=row.submitted_at,
        started_at=row.started_at,
        finished_at=row.finished_at if terminal else None,
        nodes=row.nodes,
    )
    reason = f" ({row.reason.text})" if row.reason is not None and row.reason.text else ""
    return Observation(
        native_id=native_id,
        source=source,
        observed_at=observed_at,
        state=row.state,
        final=False,
        stats=stats,
        restarts=row.restarts,
        detail=f"squeue: {row.state_text}{reason}",
    )


def _array_observation(
    native_id: str, tasks: Sequence[QueueRow], observed_at: datetime
) -> Observation:
    """The whole array asked by its own id: active while any task is, else the worst verdict."""
    states = [task.state for task in tasks]
    if any(state is State.RUNNING for state in states) or (
        any(state is State.QUEUED for state in states) and any(s in TERMINAL for s in states)
    ):
        state = State.RUNNING
    elif all(state is State.QUEUED for state in states):
        state = State.QUEUED
    else:
        state = _worst(states)
    return Observation(
        native_id=native_id,
        source=Source.QUEUE,
        observed_at=observed_at,
        state=state,
        stats=JobStats(
            submitted_at=min((t.submitted_at for t in tasks if t.submitted_at), default=None)
        ),
        detail=f"squeue: array of {len(tasks)} listed tasks",
    )


def accounting_observations(
    records: Mapping[str, Sequence[AccountingRecord]],
    *,
    native_ids: Sequence[str],
    observed_at: datetime,
) -> list[Observation]:
    """One accounting observation per asked id, from the newest record of each."""
    by_array: dict[str, list[str]] = {}
    for job_id in records:
        if "_" in job_id:
            by_array.setdefault(job_id.split("_", 1)[0], []).append(job_id)
    observations = []
    for native_id in native_ids:
        runs = records.get(native_id) or records.get(f"{native_id}+0")
        if runs:
            observations.append(_record_observation(native_id, runs[-1], observed_at))
            continue
        task_ids = by_array.get(native_id, [])
        if task_ids:
            tasks = [_record_observation(t, records[t][-1], observed_at) for t in task_ids]
            observations.append(_array_record_observation(native_id, tasks, observed_at))
            continue
        observations.append(
            Observation(
                native_id=native_id,
                source=Source.ACCOUNTING,
                observed_at=observed_at,
                absence=Absence.NO_RECORD,
                detail="sacct has no record of this job (yet)",
            )
        )
    return observations


def _record_observation(
    native_id: str, record: AccountingRecord, observed_at: datetime
) -> Observation:
    job = record.job
    if job.state is None:
        # REQUEUED/RESIZING/REVOKED: this record was superseded; the next is not written yet.
        requeued = job.state_text == "REQUEUED"
        return Observation(
            native_id=native_id,
            source=Source.ACCOUNTING,
            observed_at=observed_at,
            state=State.QUEUED if requeued else State.RUNNING,
            restarts=record.index + 1 if requeued else record.index,
            stats=JobStats(submitted_at=job.submitted_at),
            detail=f"sacct: {job.state_text} (a superseded record, no verdict)",
        )
    if job.state not in TERMINAL:
        return Observation(
            native_id=native_id,
            source=Source.ACCOUNTING,
            observed_at=observed_at,
            state=job.state,
            restarts=record.index,
            stats=JobStats(
                submitted_at=job.submitted_at,
                started_at=job.started_at if job.state is State.RUNNING else None,
            ),
            detail=f"sacct: {job.state_text}",
        )
    if not job.nodes and not record.steps:
        # Cancelled while pending: Slurm may stamp Start=End at the cancel, but with no
        # node and no step it never ran, so its 0:0 is no exit status.
        job = evolve(job, started_at=None)
    stats = merge_rows(job, record.steps)
    derived = stats.derived_exit
    told = job.derived_exit
    if derived is not None and not derived.exact and told is not None and told.exact:
        # Step rows print ExitCode the lossy way; the job's DerivedExitCode column does not
        # (measured: a step exiting 133 shows 5:0, DerivedExitCode 133:0). It settles the
        # steps' ambiguity when it is one of the values their worst may be (a record
        # written before its steps says 0:0, which they rule out).
        steps = [row.exit for row in record.steps if row.is_user_step and row.exit is not None]
        possible = {(value.code, value.signal) for value in possible_worsts(steps)}
        if (told.code, told.signal) in possible:
            stats = evolve(stats, derived_exit=told)
    if job.state in SLURM_SET_EXIT_STATES and not any(s.step == "batch" for s in record.steps):
        # NODE_FAIL/BOOT_FAIL's 1:0 is Slurm's own value, not the job's.
        stats = evolve(stats, exit=None, exit_source=None)
    # A finished job that ran but has no step row at all, or no End: slurmdbd has part of
    # the record (measured: ~15 s with no steps and DerivedExitCode 0:0; and after an
    # outage, FAILED with ExitCode 0:0 and End=Unknown). Its exit fields are not written
    # yet and it is not final: a failure is still a verdict, a success waits.
    complete = (
        job.state in SLURM_SET_EXIT_STATES
        or not job.nodes
        or (bool(record.steps) and job.finished_at is not None)
    )
    if not complete:
        stats = evolve(stats, exit=None, exit_source=None, derived_exit=None)
    said = stats.reason
    stats = evolve(stats, reason=final_reason(job.state, stats.exit, said))
    left = (
        f"; Reason {said.text}"
        if said is not None and said.text and stats.reason is not said
        else ""
    )
    return Observation(
        native_id=native_id,
        source=Source.ACCOUNTING,
        observed_at=observed_at,
        state=job.state,
        final=complete,
        stats=stats,
        restarts=record.index,
        detail=f"sacct: {job.state_text}{left}"
        + ("" if complete else " (step rows not recorded yet)"),
    )


def _array_record_observation(
    native_id: str, tasks: Sequence[Observation], observed_at: datetime
) -> Observation:
    states = [task.state for task in tasks if task.state is not None]
    done = all(task.final for task in tasks)
    if done:
        state = _worst(states)
    elif any(state is State.RUNNING for state in states) or any(s in TERMINAL for s in states):
        state = State.RUNNING
    else:
        state = State.QUEUED
    finished = [t.stats.finished_at for t in tasks if t.stats.finished_at is not None]
    return Observation(
        native_id=native_id,
        source=Source.ACCOUNTING,
        observed_at=observed_at,
        state=state,
        final=done,
        stats=JobStats(finished_at=max(finished) if done and finished else None),
        detail=f"sacct: array of {len(tasks)} tasks",
    )
