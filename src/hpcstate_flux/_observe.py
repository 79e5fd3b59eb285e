"""Flux rows -> Observations: what job-list's records and the eventlogs mean.

Pure: :class:`~hpcstate_flux._parse.FluxJob` rows (``flux jobs --json``) become one
Observation per asked id, and :class:`~hpcstate_flux._parse.JobEvidence` (the eventlogs of
an inactive job) refines a final one. ``observed_at`` is an argument; nothing here reads
the clock or runs a command.

The verdict comes from job-list (what ``flux jobs`` shows), never from
``flux job status`` / ``flux.job.result()``: job-list keeps the *first* exception of
the *lowest* severity and sets ``result`` once, at ``clean``; libjob's result.c lets a
later exception overwrite the fatal one.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Final

from attrs import evolve

from hpcstate import (
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
    signal_name,
)

from ._ids import parse_jobid
from ._parse import (
    JOBS_COMMAND,
    UNKNOWN_JOB_LINE,
    FluxException,
    FluxJob,
    JobEvidence,
    expand_hostlist,
    looks_transient,
    unknown_job_ids,
)

# -- states and results ----------------------------------------------------------------

#: Active states. CLEANUP is RUNNING: the tasks are done and a waitstatus exists, but
#: the epilog or housekeeping may still fail the job, and job-list has no result yet.
ACTIVE_STATES: Final[Mapping[str, State]] = {
    "NEW": State.QUEUED,
    "DEPEND": State.QUEUED,
    "PRIORITY": State.QUEUED,
    "SCHED": State.QUEUED,
    "RUN": State.RUNNING,
    "CLEANUP": State.RUNNING,
}
#: An INACTIVE job's result -> hpcstate's verdict (job-list's derivation is authoritative).
RESULTS: Final[Mapping[str, State]] = {
    "COMPLETED": State.COMPLETED,
    "FAILED": State.FAILED,
    "CANCELED": State.CANCELLED,
    "CANCELLED": State.CANCELLED,  # tolerated spelling; flux-core prints CANCELED
    "TIMEOUT": State.TIMEOUT,
}


# -- exit status and reason --------------------------------------------------------------


def instance_ambiguity(code: int, *, broker_exited: bool = False) -> str:
    """Why a Flux instance's (``flux batch``/``flux alloc``) exit code ``code`` > 128
    stays ambiguous: it is its broker's exit code, and the broker turns a signal that
    killed the script into an exit code 128+N (measured on flux-core 0.88.0).
    ``broker_exited``: the exec eventlog showed the broker exited (was not signalled)."""
    signal = f"{signal_name(code - 128)} ({code - 128})"
    if broker_exited:
        how = (
            f"the broker exited {code} (the exec eventlog): a script that ran 'exit {code}' "
            f"and a script killed by {signal} both make it do so"
        )
    else:
        how = (
            f"a script that ran 'exit {code}', a script killed by {signal} (the broker "
            f"then exits {code}) and a broker killed by {signal} all give it"
        )
    return (
        f"the batch job's exit code {code} is its Flux instance's broker's: {how}; no "
        "record hpcstate reads says which (the broker's log line in the job's output "
        "file does)"
    )


def exit_from_waitstatus(
    waitstatus: int, *, command: str = JOBS_COMMAND, instance: bool = False
) -> ExitStatus:
    """Decode job-list's ``waitstatus``: the raw wait status of the job *shell*.

    A signalled shell is exact. An exited shell's code is the largest task code, where
    a task killed by signal N counts as 128+N: above 128 it stays an exit code, marked
    ambiguous, until a lossless source (the exec eventlog) says which it was. For a
    job that is a Flux ``instance`` the one task is the instance's broker, which itself
    exits 128+N when the batch script dies of signal N: its ambiguity says so.
    """
    try:
        status = ExitStatus.from_wait_status(waitstatus)
    except ParseError as exc:
        raise ParseError(str(exc), command=command, field="waitstatus") from None
    if status.code is None:
        return status
    shell = ExitStatus.from_shell_code(status.code, source="the job shell's exit code")
    if instance and shell.ambiguous is not None:
        return ExitStatus.exited(status.code, ambiguous=instance_ambiguity(status.code))
    return shell


def exit_reason(exit_status: ExitStatus | None) -> Reason | None:
    """The reason a job with no fatal exception failed: its exit status."""
    if exit_status is None:
        return None
    if exit_status.signal is not None:
        return Reason(
            kind=ReasonKind.RAISED_SIGNAL, text=exit_status.describe(), signal=exit_status.signal
        )
    if exit_status.code:
        text = f"exit {exit_status.code}"
        if exit_status.ambiguous and exit_status.code > 128:
            text += f" (or {signal_name(exit_status.code - 128)}: ambiguous)"
        return Reason(kind=ReasonKind.NON_ZERO_EXIT_CODE, text=text)
    return None


#: The job shell's note on an ``exec`` exception when a task could not be started
#: (flux-core 0.88.0: "task 0 (host node1): start failed: CMD: No such file or directory").
_START_FAILED: Final = re.compile(r"\bstart failed\b")


def exception_reason(exception: FluxException) -> Reason:
    """A fatal exception as a Reason, the exception's note as its text and its type as
    its detail: ``cancel`` is CANCELLED, ``timeout`` TIME_LIMIT, an ``exec`` exception
    for a task that could not start JOB_LAUNCH_FAILURE, any other type EXCEPTION."""
    if exception.type == "cancel":
        return Reason(kind=ReasonKind.CANCELLED, text=exception.note, detail="cancel")
    if exception.type == "timeout":
        return Reason(kind=ReasonKind.TIME_LIMIT, text=exception.note, detail="timeout")
    if exception.type == "exec" and _START_FAILED.search(exception.note):
        return Reason(kind=ReasonKind.JOB_LAUNCH_FAILURE, text=exception.note, detail="exec")
    return Reason(kind=ReasonKind.EXCEPTION, text=exception.note, detail=exception.type)


def _inactive_reason(job: FluxJob, state: State, exit_status: ExitStatus | None) -> Reason | None:
    """An INACTIVE job's reason, from its final record only (job-list's result, its
    fatal exception, its exit status): never anything said while it was pending."""
    if job.exception.fatal:
        return exception_reason(job.exception)
    if state is State.CANCELLED:
        return Reason(kind=ReasonKind.CANCELLED)
    if state is State.TIMEOUT:
        return Reason(kind=ReasonKind.TIME_LIMIT)
    if state is State.COMPLETED:
        return Reason(kind=ReasonKind.NONE)
    return exit_reason(exit_status)


def job_observation(job: FluxJob, *, native_id: str, observed_at: datetime) -> Observation:
    """What job-list says of one job.

    Active jobs come from the queue side (never final). An INACTIVE job is a final,
    authoritative record (job-list serves queue and history: there is no settling gap).
    """
    nodes = expand_hostlist(job.nodelist)
    if not job.inactive:
        state = ACTIVE_STATES[job.state]
        detail = f"flux job-list: {job.state}"
        if job.state == "CLEANUP":
            detail += " (tasks ended; epilog or housekeeping still running, no result yet)"
        running = state is State.RUNNING
        return Observation(
            native_id=native_id,
            source=Source.QUEUE,
            observed_at=observed_at,
            state=state,
            stats=JobStats(
                submitted_at=job.t_submit,
                started_at=job.t_run if running else None,
                nodes=nodes if running else (),
            ),
            detail=detail,
        )
    if job.result is None:
        raise ParseError(
            f"job {job.id} is INACTIVE but has no result", command=JOBS_COMMAND, field="result"
        )
    state = RESULTS[job.result]
    exit_status = (
        None
        if job.waitstatus is None
        else exit_from_waitstatus(job.waitstatus, instance=job.instance)
    )
    details = [f"flux job-list: INACTIVE {job.result}"]
    if job.instance:
        details.append("a Flux instance (flux batch/alloc): its exit status is its broker's")
    if job.waitstatus is not None:
        details.append(f"waitstatus {job.waitstatus}")
    else:
        details.append("never ran (no waitstatus)")
    if job.exception.occurred:
        kind = "fatal" if job.exception.fatal else "non-fatal"
        details.append(f"{kind} {job.exception.describe()}")
    return Observation(
        native_id=native_id,
        source=Source.ACCOUNTING,
        observed_at=observed_at,
        state=state,
        final=True,
        stats=JobStats(
            exit=exit_status,
            exit_source=Source.ACCOUNTING if exit_status is not None else None,
            reason=_inactive_reason(job, state, exit_status),
            submitted_at=job.t_submit,
            started_at=job.t_run,
            finished_at=job.t_cleanup or job.t_inactive,
            elapsed_s=job.runtime if job.t_run is not None else None,
            nodes=nodes,
        ),
        detail="; ".join(details),
    )


class UnansweredJobs(CommandFailed):
    """``flux jobs`` failed for some asked ids: neither a record nor "unknown" for them.

    job-list serves queue and history alike, so an id it did not answer for is not
    "no longer queued": there is no answer for it at all, and never a verdict.
    """

    def __init__(
        self,
        argv: Sequence[str],
        returncode: int | None,
        stderr: str,
        *,
        native_ids: Sequence[str],
        said: str,
    ) -> None:
        super().__init__(argv, returncode, stderr)
        self.native_ids = tuple(native_ids)
        self.args = (
            f"{' '.join(self.argv[:3])} exited {returncode} without a record of job(s) "
            f"{', '.join(self.native_ids)} and without calling them unknown ({said}): no "
            "answer for them, not a verdict",
        )


#: How flux-jobs reports a failed job-list ``list-id`` that is not ENOENT ("unknown"):
#: ``rpc: <strerror>`` (flux.job.list), possibly behind a ``flux-jobs: ERROR:`` prefix.
_RPC_ERROR: Final = re.compile(r"\A(?:flux-jobs: ERROR: )?rpc: \S")


def _unanswered_error(
    native_ids: Sequence[str],
    *,
    stderr: str,
    argv: Sequence[str],
    returncode: int | None,
    command: str,
) -> Exception:
    """What to raise when ``flux jobs`` gave some asked ids no answer at all."""
    said_lines = [
        line.strip()
        for line in stderr.splitlines()
        if line.strip() and UNKNOWN_JOB_LINE.match(line.strip()) is None
    ]
    said = "; ".join(said_lines[-3:]) if said_lines else "nothing on stderr"
    names = ", ".join(native_ids)
    if any(looks_transient(line) for line in said_lines):
        return SchedulerUnavailable(
            f"{command}: job-list could not answer for job(s) {names} now ({said}); "
            "retry later, no verdict"
        )
    if returncode or any(_RPC_ERROR.match(line) for line in said_lines):
        return UnansweredJobs(argv, returncode, stderr, native_ids=native_ids, said=said)
    # Exit 0 and no error line: flux-jobs always answers each id, so this output is
    # not an answer we can read.
    return ParseError(
        f"no record of job(s) {names} and no 'JobID ... unknown' for them ({said})",
        command=command,
        field="id",
    )


def queue_observations(
    jobs: Sequence[FluxJob],
    *,
    native_ids: Sequence[str],
    stderr: str,
    observed_at: datetime,
    command: str = JOBS_COMMAND,
    argv: Sequence[str] = ("flux", "jobs", "--json"),
    returncode: int | None = 0,
) -> list[Observation]:
    """One observation per asked id, in the asked order.

    An id that ``flux jobs`` reports unknown is UNKNOWN (purged, or its instance is
    gone: nobody will ever know its outcome; Flux keeps no other record). Every other
    id must be listed: an id job-list failed to answer for (``rpc: <error>``) has no
    answer, which is never absence. It raises SchedulerUnavailable when the error is
    transient, UnansweredJobs (a CommandFailed naming the ids) when job-list refused or
    the command failed, and ParseError when the output is silent about it.
    """
    by_id = {job.id: job for job in jobs}
    unknown = unknown_job_ids(stderr)
    asked = [(native, parse_jobid(native, command=command)) for native in native_ids]
    unanswered = [native for native, jobid in asked if jobid not in by_id and jobid not in unknown]
    if unanswered:
        raise _unanswered_error(
            unanswered, stderr=stderr, argv=argv, returncode=returncode, command=command
        )
    observations: list[Observation] = []
    for native, jobid in asked:
        job = by_id.get(jobid)
        if job is not None:
            observations.append(job_observation(job, native_id=native, observed_at=observed_at))
        else:
            observations.append(
                Observation(
                    native_id=native,
                    source=Source.ACCOUNTING,
                    observed_at=observed_at,
                    absence=Absence.UNKNOWN,
                    detail=(
                        f"flux job-list does not know job {jobid} ({unknown[jobid]}): it was "
                        "purged or its instance is gone (Flux keeps no other record); its "
                        "outcome is lost"
                    ),
                )
            )
    return observations


def evidence_kinds(observation: Observation) -> frozenset[str]:
    """Which eventlogs could improve this observation (empty: job-list said it all).

    Only final verdicts of jobs that ran (they have an exit status) are enriched: an
    exit code above 128 needs the exec eventlog (and, after a fatal non-cancel,
    non-timeout exception, the main eventlog for its wait_status); every FAILED job is
    checked for an OOM kill, whatever its exit code: the oom plugin's log line in the
    output eventlog is the only trace of one, and a child killed for memory can leave
    the job any code.
    """
    if not observation.final or observation.state not in TERMINAL:
        return frozenset()
    status = observation.stats.exit
    if status is None:
        return frozenset()
    kinds: set[str] = set()
    if status.ambiguous and status.code is not None:
        kinds.add("exec")
        reason = observation.stats.reason
        if reason is not None and reason.kind in (
            ReasonKind.EXCEPTION,
            ReasonKind.JOB_LAUNCH_FAILURE,
        ):
            kinds.add("main")
    if observation.state is State.FAILED:
        kinds.add("output")
    return frozenset(kinds)


def refine_exit(code: int, evidence: JobEvidence, current: ExitStatus) -> ExitStatus:
    """The job shell's exit code ``code`` (> 128) made exact where a lossless record
    explains it; otherwise still ambiguous, saying what is known. Never invents."""
    # A Flux instance (job-list's uri, or the main eventlog's uri memo): its task is the
    # broker, which EXITS 128+N when the script dies of signal N. A record of the broker
    # exiting explains nothing more; one of the broker being killed is lossless.
    instance = bool(evidence.instance_uri) or current.ambiguous == instance_ambiguity(code)
    broker_exited = ExitStatus.exited(code, ambiguous=instance_ambiguity(code, broker_exited=True))
    exception_exit = evidence.exception_exit
    if exception_exit is not None and exception_exit.shell_code == code:
        return broker_exited if instance and exception_exit.signal is None else exception_exit
    matching = [task for task in evidence.task_exits if task.exit.shell_code == code]
    outcomes = {(task.exit.code, task.exit.signal) for task in matching}
    if len(outcomes) == 1:
        found = matching[0].exit
        return broker_exited if instance and found.signal is None else found
    signal = signal_name(code - 128) if 128 < code <= 128 + 64 else "a signal"
    if len(outcomes) > 1:
        said = ", ".join(task.describe() for task in matching)
        return ExitStatus.exited(
            code,
            ambiguous=(
                f"the job shell's exit code {code} was set by tasks that ended differently "
                f"({said}); which one it reports is not recorded"
            ),
        )
    if "exec" in evidence.fetched and evidence.task_exits:
        first = "; ".join(task.describe() for task in evidence.task_exits)
        return ExitStatus.exited(
            code,
            ambiguous=(
                f"the job shell's exit code {code} may be a plain exit {code} or a task killed "
                f"by {signal}; the exec eventlog records only the first task to exit ({first}), "
                f"not the task that set {code}"
            ),
        )
    return current


def apply_evidence(observation: Observation, evidence: JobEvidence) -> Observation:
    """An inactive job's observation with what its eventlogs say added."""
    stats = observation.stats
    status = stats.exit
    state = observation.state
    reason = stats.reason
    details = [observation.detail] if observation.detail else []
    if status is not None and status.ambiguous and status.code is not None:
        status = refine_exit(status.code, evidence, status)
        if reason is not None and reason.kind in (
            ReasonKind.NON_ZERO_EXIT_CODE,
            ReasonKind.RAISED_SIGNAL,
        ):
            reason = exit_reason(status)
    if evidence.oom_messages:
        details.append("oom plugin: " + " ".join(evidence.oom_messages))
        if state is State.FAILED:
            state = State.OUT_OF_MEMORY
            if reason is not None and reason.kind is ReasonKind.EXCEPTION:
                details.append(f"fatal exception {reason.detail}: {reason.text}")
            reason = Reason(kind=ReasonKind.OUT_OF_MEMORY, text=evidence.oom_messages[0])
    if evidence.errors:
        details.append("eventlog: " + "; ".join(evidence.errors))
    return evolve(
        observation,
        state=state,
        stats=evolve(stats, exit=status, reason=reason),
        detail="; ".join(details),
    )
