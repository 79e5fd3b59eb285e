"""The Slurm dialect: builds sbatch/squeue/sacct/scancel commands and reads their answers.

Pure: no I/O, no clock. One dialect per detected Slurm version; everything that differs
between versions comes from :class:`~hpcstate_slurm._versions.SlurmBehaviour`.

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

import re
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta, timezone, tzinfo
from math import ceil
from typing import Final

from attrs import evolve, field, frozen

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
from hpcstate.backend import AccountingQuery, Command, CommandResult, JobSpec, Submission

from ._parse import (
    SACCT_FIELDS,
    SLURM_SET_EXIT_STATES,
    SQUEUE_FIELDS,
    AccountingRecord,
    QueueRow,
    group_records,
    looks_transient,
    parse_sacct_text,
    parse_sbatch_output,
    parse_squeue,
    split_job_id,
    split_rows,
)
from ._script import command_script, script_reports_itself, user_script
from ._versions import MINIMUM_VERSION, SlurmBehaviour, SlurmVersion, behaviour_for

UTC: Final = timezone.utc
TAG_PREFIX: Final = "hpcstate:"
#: Variables that change what Slurm's clients print or which cluster they ask.
UNSET_ENV: Final = (
    "SQUEUE_*",
    "SACCT_*",
    "SLURM_TIME_FORMAT",
    "SLURM_CLUSTERS",
    "SLURM_BITSTR_LEN",
    "SLURM_ARRAY_*",
)
#: Set for every query: epoch times, and UTC so that ``-S`` (read as local time) is exact.
QUERY_ENV: Final[Mapping[str, str]] = {
    "SLURM_TIME_FORMAT": "%s",
    "TZ": "UTC",
    "SLURM_BITSTR_LEN": "0",  # whole array ranges, never cut with "..."
}
INVALID_JOB_ID: Final = "Invalid job id specified"
REJECTED_MARKER: Final = "Batch job submission failed"
_ALREADY_DONE = ("Job/step already completing or completed", INVALID_JOB_ID, "already completed")
#: JobSpec.options the dialect turns into sbatch flags (others are for other backends).
_OPTION_FLAGS: Final[Mapping[str, str]] = {
    "qos": "--qos",
    "constraint": "--constraint",
    "reservation": "--reservation",
    "gres": "--gres",
    "gpus": "--gpus",
    "begin": "--begin",
    "nice": "--nice",
    "licenses": "--licenses",
    "signal": "--signal",
    "wckey": "--wckey",
    "mem_per_cpu": "--mem-per-cpu",
}
_BOOLEAN_OPTIONS: Final[Mapping[str, tuple[str, str | None]]] = {
    "exclusive": ("--exclusive", None),
    "hold": ("--hold", None),
    "requeue": ("--requeue", "--no-requeue"),
}
_TRUE_WORDS: Final = frozenset({"1", "true", "yes", "on"})
_FALSE_WORDS: Final = frozenset({"0", "false", "no", "off"})
#: The run id's time in a tracker's tag: hpcstate-20261206-152617-49c6a1.0
_TAG_TIME: Final = re.compile(r"\Ahpcstate-(\d{8}-\d{6})-")
_TAG_CHARS: Final = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.:")


def _self_report(spec: JobSpec) -> bool:
    """The option ``self_report_wrapper`` (default true)."""
    return _yes_no("self_report_wrapper", spec.options.get("self_report_wrapper", True))


def _yes_no(key: str, value: object) -> bool:
    """A yes/no option: a boolean (a TOML ``true``) or one of the words ``true/yes/on/1``
    and ``false/no/off/0``; anything else is refused, naming the option."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        word = value.strip().lower()
        if word in _TRUE_WORDS:
            return True
        if word in _FALSE_WORDS:
            return False
    raise ValueError(
        f"option {key} must be true or false (a boolean, or one of the words "
        f"{', '.join(sorted(_TRUE_WORDS))} / {', '.join(sorted(_FALSE_WORDS))}), "
        f"got {value!r}"
    )


class SubmitRejected(CommandFailed):
    """sbatch refused the job (``Batch job submission failed: ...``): not transient.

    The tracker turns this into ``submit_rejected``; ``.message`` is Slurm's reason.
    """

    def __init__(self, argv: Sequence[str], returncode: int | None, stderr: str) -> None:
        super().__init__(argv, returncode, stderr)
        lines = [line for line in stderr.splitlines() if REJECTED_MARKER in line]
        text = lines[-1] if lines else stderr.strip()
        self.message = text.split(REJECTED_MARKER, 1)[-1].lstrip(": ").strip() or text


def _format_limit(limit: timedelta) -> str:
    seconds = ceil(limit.total_seconds())
    if seconds <= 0:
        raise ValueError(f"time_limit must be positive, got {limit}")
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{days}-{hours:02d}:{minutes:02d}:{secs:02d}"


def _dependency(entry: str) -> str:
    text = entry.strip()
    if not text:
        raise ValueError("an empty dependency")
    if text.replace("_", "").isdecimal():
        return f"afterok:{text}"
    return text


def _query_ids(native_ids: Sequence[str]) -> tuple[str, ...]:
    """Ids to ask for: an array's or het job's own id covers all its tasks or components."""
    seen: dict[str, None] = {}
    for native_id in native_ids:
        job, step = split_job_id(native_id, command="(native id)")
        if step is not None:
            raise ValueError(f"{native_id!r} is a step, not a job")
        base = job.split("_", 1)[0].split("+", 1)[0]
        seen.setdefault(base, None)
    return tuple(seen)


def _worst(states: Sequence[State]) -> State:
    """An array's verdict from its tasks' verdicts: any failure fails it (one kind: that one)."""
    failures = {state for state in states if state in FAILURES}
    if not failures:
        return State.COMPLETED
    if len(failures) == 1:
        return failures.pop()
    return State.FAILED


@frozen(kw_only=True)
class SlurmDialect:
    """The pure half of the Slurm backend for one Slurm version."""

    behaviour: SlurmBehaviour = field(factory=lambda: behaviour_for(MINIMUM_VERSION))
    #: The zone Slurm prints local times in. Queries set TZ=UTC, so UTC unless a caller
    #: parses output taken without that (recorded golden files, for one).
    tz: tzinfo = UTC
    #: How far before the earliest submit time the accounting window opens (clock skew).
    accounting_margin: timedelta = timedelta(minutes=10)
    timeout: float = 60.0

    @classmethod
    def for_version(cls, version: SlurmVersion | str, **kwargs: object) -> SlurmDialect:
        parsed = SlurmVersion.parse(f"slurm {version}") if isinstance(version, str) else version
        return cls(behaviour=behaviour_for(parsed), **kwargs)  # type: ignore[arg-type]

    # -- submit ---------------------------------------------------------------------------

    def submit_command(self, spec: JobSpec) -> Command:
        argv = ["sbatch", "--parsable"]
        name = spec.name or (spec.command[0].rsplit("/", 1)[-1] if spec.command else "")
        if name:
            if "\n" in name:
                raise ValueError("a job name cannot contain a newline")
            argv.append(f"--job-name={name}")
        if spec.time_limit is not None:
            argv.append(f"--time={_format_limit(spec.time_limit)}")
        if spec.memory_bytes is not None:
            if spec.memory_bytes <= 0:
                raise ValueError(f"memory_bytes must be positive, got {spec.memory_bytes}")
            argv.append(f"--mem={ceil(spec.memory_bytes / (1 << 20))}M")
        for flag, value in (
            ("--cpus-per-task", spec.cpus),
            ("--ntasks", spec.tasks),
            ("--nodes", spec.nodes),
        ):
            if value is not None:
                if value <= 0:
                    raise ValueError(f"{flag} must be positive, got {value}")
                argv.append(f"{flag}={value}")
        for flag, setting in (
            ("--partition", spec.partition),
            ("--account", spec.account),
            ("--chdir", spec.working_directory),
            ("--output", spec.stdout),
            ("--error", spec.stderr),
        ):
            if setting:
                argv.append(f"{flag}={setting}")
        if spec.array:
            expand_array_spec(spec.array)  # refuse a bad spec here, with a clear error
            argv.append(f"--array={spec.array}")
        if spec.dependencies:
            argv.append("--dependency=" + ",".join(_dependency(d) for d in spec.dependencies))
        if spec.environment and not spec.command:
            for key, env_value in spec.environment.items():
                if "," in env_value or "\n" in env_value:
                    raise ValueError(
                        f"environment value of {key} contains ',' or a newline, which "
                        "sbatch --export cannot carry; pass a command instead of a script"
                    )
            pairs = ",".join(f"{key}={value}" for key, value in spec.environment.items())
            argv.append(f"--export=ALL,{pairs}")
        for key, option in spec.options.items():
            if key in _OPTION_FLAGS:
                argv.append(f"{_OPTION_FLAGS[key]}={option}")
            elif key in _BOOLEAN_OPTIONS:
                on, off = _BOOLEAN_OPTIONS[key]
                if _yes_no(key, option):
                    argv.append(on)
                elif off is not None:
                    argv.append(off)
        if spec.tag:
            if not set(spec.tag) <= _TAG_CHARS:
                raise ValueError(f"tag {spec.tag!r} may use only letters, digits and -_.:")
            argv.append(f"--comment={TAG_PREFIX}{spec.tag}")
        argv.extend(spec.extra_args)
        stdin: str | None = None
        if spec.script_path:
            argv.append(spec.script_path)
        elif spec.script:
            stdin = user_script(spec.script, spec.environment, self_report=_self_report(spec))
        else:
            stdin = self._command_script(spec)
        return Command(argv=argv, stdin=stdin, timeout=self.timeout)

    @staticmethod
    def reports_itself(spec: JobSpec) -> bool:
        """Whether the job's batch script runs hpcstate's report helper, so that the job
        writes its own report: a command, or a user's script whose ``#!`` names a POSIX
        shell, unless the option ``self_report_wrapper`` is off; never a ``script_path``
        (its text is on the job's side). An option that is neither true nor false
        answers False here; submitting the spec refuses it, naming the option."""
        if spec.script_path:
            return False
        try:
            on = _self_report(spec)
        except ValueError:
            return False
        return on and (not spec.script or script_reports_itself(spec.script))

    @staticmethod
    def _command_script(spec: JobSpec) -> str:
        """A batch script that runs the argv as given (quoted once, no extra shell).

        On by default (option ``self_report_wrapper``): when the tracker named a report
        file, the payload runs under hpcstate's Perl helper, which writes the job's
        self-report from the payload's wait status and then ends as the payload did
        (the same exit code, or killed by the same signal), so Slurm's record is the one
        ``exec`` gives. Without perl on the node, or with the option off, the payload is
        exec'd and writes no report."""
        return command_script(spec.command, spec.environment, self_report=_self_report(spec))

    def parse_submit(self, result: CommandResult, spec: JobSpec) -> Submission:
        if result.returncode != 0:
            if REJECTED_MARKER in result.stderr:
                raise SubmitRejected(result.argv, result.returncode, result.stderr)
            self._raise_failure(result)
        job_id, _cluster = parse_sbatch_output(result.stdout)
        tasks: tuple[str, ...] = ()
        if spec.array:
            tasks = tuple(f"{job_id}_{index}" for index in expand_array_spec(spec.array))
        return Submission(native_id=job_id, array_task_ids=tasks)

    def find_submission_command(self, tag: str) -> Command | None:
        # The controller keeps the comment; 22.05's accounting stores it only with
        # AccountingStoreFlags=job_comment, so the queue is the place to look.
        return Command(
            argv=("squeue", "-h", "-t", "all", "-o", "%F|%k"),
            env=QUERY_ENV,
            unset_env=UNSET_ENV,
            timeout=self.timeout,
        )

    def find_submission_accounting_command(self, tag: str) -> Command:
        """The tag lookup in accounting, for a job that already left the queue.

        Every release from 21.08 stores the submit line (measured on 22.05.8:
        ``sbatch --parsable --job-name=x --chdir=/tmp --comment=hpcstate:TAG`` while the
        Comment column stays empty without ``AccountingStoreFlags=job_comment``). The
        window opens at the time in a tracker's tag (``hpcstate-YYYYMMDD-HHMMSS-...``,
        UTC) less the accounting margin, else 7 days back. Only the calling user's jobs
        (no ``-a``): the tracker submits as that user.
        """
        if not set(tag) <= _TAG_CHARS or not tag:
            raise ValueError(f"tag {tag!r} may use only letters, digits and -_.:")
        stamp = _TAG_TIME.search(tag)
        start = "now-7days"
        if stamp is not None:
            try:
                when = datetime.strptime(stamp.group(1), "%Y%m%d-%H%M%S").replace(tzinfo=UTC)
            except ValueError:
                pass
            else:
                start = (when - self.accounting_margin).strftime("%Y-%m-%dT%H:%M:%S")
        return Command(
            argv=("sacct", "-P", "-n", "-X", "-S", start, "-o", "JobID,SubmitLine"),
            env=QUERY_ENV,
            unset_env=UNSET_ENV,
            timeout=self.timeout,
        )

    def parse_find_submission_accounting(
        self, result: CommandResult, tag: str
    ) -> Submission | None:
        """The job whose submit line carries ``--comment=hpcstate:<tag>``, or None."""
        if result.returncode != 0:
            self._raise_failure(result)
        wanted = f"--comment={TAG_PREFIX}{tag}"
        for _, fields in split_rows(
            result.stdout, columns=("id", "line"), free_column="line", command="sacct"
        ):
            if wanted in fields["line"].split():
                job, _step = split_job_id(fields["id"], command="sacct")
                base = job.split("_", 1)[0].split("+", 1)[0]
                return Submission(native_id=base)
        return None

    def parse_find_submission(self, result: CommandResult, tag: str) -> Submission | None:
        if result.returncode != 0:
            self._raise_failure(result)
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

    # -- queue (and controller record) -----------------------------------------------------

    def queue_command(self, native_ids: Sequence[str]) -> Command:
        ids = _query_ids(native_ids)
        if not ids:
            raise ValueError("queue_command needs at least one id")
        fields = ",".join(
            f"{name}:0" if key == "name" else f"{name}:|" for name, key in SQUEUE_FIELDS
        )
        return Command(
            argv=("squeue", "-h", "-t", "all", "-r", "-j", ",".join(ids), "-O", fields),
            env=QUERY_ENV,
            unset_env=UNSET_ENV,
            timeout=self.timeout,
        )

    def parse_queue(
        self, result: CommandResult, *, native_ids: Sequence[str], observed_at: datetime
    ) -> list[Observation]:
        if result.returncode != 0:
            # One id that slurmctld no longer knows (purged, or never existed): absence.
            if INVALID_JOB_ID in result.stderr and not looks_transient(result.stderr):
                return [self._absent(native_id, observed_at) for native_id in native_ids]
            self._raise_failure(result)
        rows = parse_squeue(
            result.stdout,
            tz=self.tz,
            exit_is_wait_status=self.behaviour.squeue_exit_code_is_wait_status,
        )
        return self.queue_observations(rows, native_ids=native_ids, observed_at=observed_at)

    def queue_observations(
        self, rows: Sequence[QueueRow], *, native_ids: Sequence[str], observed_at: datetime
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
                observations.append(self._absent(native_id, observed_at))
        return observations

    @staticmethod
    def _absent(native_id: str, observed_at: datetime) -> Observation:
        return Observation(
            native_id=native_id,
            source=Source.QUEUE,
            observed_at=observed_at,
            absence=Absence.ABSENT,
            detail="squeue does not list this job (finished past MinJobAge, or never existed)",
        )

    # -- accounting -------------------------------------------------------------------------

    def accounting_command(self, query: AccountingQuery) -> Command | None:
        ids = _query_ids(query.native_ids)
        if not ids:
            return None
        argv = ["sacct", "-P", "-a", "-D", "-j", ",".join(ids)]
        if query.submitted_after is not None:
            start = query.submitted_after.astimezone(UTC) - self.accounting_margin
            argv += ["-S", start.strftime("%Y-%m-%dT%H:%M:%S")]  # read as UTC: TZ=UTC
        argv += ["--noconvert", "-o", ",".join(SACCT_FIELDS)]
        return Command(argv=argv, env=QUERY_ENV, unset_env=UNSET_ENV, timeout=self.timeout)

    def parse_accounting(
        self, result: CommandResult, *, query: AccountingQuery, observed_at: datetime
    ) -> list[Observation]:
        if result.returncode != 0:
            self._raise_failure(result)
        rows = parse_sacct_text(
            result.stdout,
            tz=self.tz,
            exit_lossy=self.behaviour.sacct_exit_high_codes_lossy,
            derived_lossy=self.behaviour.sacct_derived_high_codes_lossy,
        )
        return accounting_observations(
            group_records(rows), native_ids=query.native_ids, observed_at=observed_at
        )

    # -- cancel -----------------------------------------------------------------------------

    def cancel_command(self, native_ids: Sequence[str]) -> Command:
        if not native_ids:
            raise ValueError("cancel_command needs at least one id")
        for native_id in native_ids:
            split_job_id(native_id, command="(native id)")
        return Command(argv=("scancel", *native_ids), unset_env=UNSET_ENV, timeout=self.timeout)

    def check_cancel(self, result: CommandResult) -> None:
        """A cancel of a job that already ended (or was purged) is done, not an error."""
        if result.returncode == 0:
            return
        errors = [line for line in result.stderr.splitlines() if "error" in line.lower()]
        if errors and all(any(mark in line for mark in _ALREADY_DONE) for line in errors):
            return
        self._raise_failure(result)

    # -- errors -------------------------------------------------------------------------------

    def is_transient(self, result: CommandResult) -> bool:
        if result.returncode is None:
            return True  # timed out: says nothing about the job
        return result.returncode != 0 and looks_transient(result.stderr)

    def _raise_failure(self, result: CommandResult) -> None:
        if self.is_transient(result):
            tail = result.stderr.strip().splitlines()[-1:] or ["timed out"]
            raise SchedulerUnavailable(f"{result.argv[0]}: {tail[0]}")
        raise CommandFailed(result.argv, result.returncode, result.stderr)


def version_command() -> Command:
    return Command(argv=("sbatch", "--version"), unset_env=UNSET_ENV, timeout=30.0)


def parse_version(result: CommandResult) -> SlurmVersion:
    if result.returncode != 0:
        raise CommandFailed(result.argv, result.returncode, result.stderr)
    return SlurmVersion.parse(result.stdout)


# -- observations ----------------------------------------------------------------------------


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
