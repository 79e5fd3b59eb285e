"""The Flux dialect: the thin class that composes commands, parsers and observations.

Pure: ``_commands`` builds the :class:`~hpcstate.backend.Command` records, ``_parse``
reads their answers into rows, ``_observe`` turns rows into Observations; the I/O is
``_io.FluxBackend``'s.

One poll is one ``flux jobs --json ID...`` (job-list serves queue and history alike,
so an inactive job's record is already the final, authoritative one), plus, only for
jobs that just ended FAILED or with an exit code above 128, one batched ``flux job
info`` script that reads the eventlogs which say whether a signal or an OOM kill ended
the task.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime

from attrs import field, frozen

from hpcstate import CommandFailed, Observation, ParseError
from hpcstate.backend import AccountingQuery, Command, CommandResult, JobSpec, Submission

from ._commands import FluxCommands
from ._ids import native_id, parse_jobid
from ._observe import apply_evidence, evidence_kinds, queue_observations
from ._parse import (
    JOBS_COMMAND,
    JobEvidence,
    cancel_already_done,
    looks_transient,
    parse_evidence,
    parse_jobs_json,
    parse_submit_output,
    parse_tagged_jobs,
)


@frozen(kw_only=True)
class FluxDialect:
    """Commands for one Flux instance, and the parsers for their output.

    ``flux`` is the flux executable on the scheduler's side; ``uri`` the instance's
    ``FLUX_URI`` when the commands do not run inside it.
    """

    flux: str = "flux"
    uri: str | None = None
    timeout: float = 60.0
    find_limit: int = 1000  # newest jobs of this user searched for a submission's tag
    xargs_threshold: int = 500  # more ids than this go through stdin + xargs
    #: the argv builder, made from the fields above
    commands: FluxCommands = field(init=False, eq=False, repr=False)

    @commands.default
    def _make_commands(self) -> FluxCommands:
        return FluxCommands(
            flux=self.flux,
            uri=self.uri,
            timeout=self.timeout,
            find_limit=self.find_limit,
            xargs_threshold=self.xargs_threshold,
        )

    # -- submit --------------------------------------------------------------------------
    def submit_command(self, spec: JobSpec) -> Command:
        """``flux submit`` for a command, ``flux batch`` for a script (stdin or a path)."""
        return self.commands.submit(spec)

    def parse_submit(self, result: CommandResult, spec: JobSpec) -> Submission:
        """The new job's id, as its decimal native id. A refusal is CommandFailed."""
        if result.returncode != 0:
            raise CommandFailed(result.argv, result.returncode, result.stderr)
        jobid = parse_submit_output(result.stdout, command=" ".join(result.argv[:2]))
        return Submission(native_id=native_id(jobid))

    # -- queue (= accounting: job-list serves both) ------------------------------------
    def queue_command(self, native_ids: Sequence[str]) -> Command:
        """``flux jobs --json ID...`` (see ``FluxCommands.queue``)."""
        return self.commands.queue(native_ids)

    def parse_queue(
        self, result: CommandResult, *, native_ids: Sequence[str], observed_at: datetime
    ) -> Sequence[Observation]:
        """One observation per asked id. ``flux jobs`` exits 1 when it listed no job
        (xargs: 123 when any chunk did); unknown ids and failed look-ups are named on
        stderr. An id with neither a record nor "unknown" raises (see
        ``queue_observations``): it never becomes an absence."""
        command = JOBS_COMMAND
        if result.returncode is None:
            raise ParseError("flux jobs timed out; no answer to parse", command=command)
        if result.returncode not in (0, 1, 123):
            raise CommandFailed(result.argv, result.returncode, result.stderr)
        jobs = parse_jobs_json(result.stdout, command=command)
        return queue_observations(
            jobs,
            native_ids=native_ids,
            stderr=result.stderr,
            observed_at=observed_at,
            command=command,
            argv=result.argv,
            returncode=result.returncode,
        )

    def accounting_command(self, query: AccountingQuery) -> Command | None:
        """The same job-list query: Flux has no separate accounting (no settling gap)."""
        return self.queue_command(query.native_ids)

    def parse_accounting(
        self, result: CommandResult, *, query: AccountingQuery, observed_at: datetime
    ) -> Sequence[Observation]:
        return self.parse_queue(result, native_ids=query.native_ids, observed_at=observed_at)

    # -- cancel --------------------------------------------------------------------------
    def cancel_command(self, native_ids: Sequence[str]) -> Command:
        return self.commands.cancel(native_ids)

    def check_cancel(self, result: CommandResult) -> None:
        """Cancelling a job that already ended (or was purged) is not an error; any
        other failure is, including a non-zero exit that nothing on stderr explains."""
        if result.returncode == 0:
            return
        if result.returncode is None or not cancel_already_done(result.stderr):
            raise CommandFailed(result.argv, result.returncode, result.stderr)

    # -- idempotent submit ---------------------------------------------------------------
    def find_submission_command(self, tag: str) -> Command | None:
        """Look for a job this user already submitted with ``tag`` (a retried submit)."""
        return self.commands.find_submission(tag)

    def parse_find_submission(self, result: CommandResult, tag: str) -> Submission | None:
        if result.returncode != 0:
            raise CommandFailed(result.argv, result.returncode, result.stderr)
        found = parse_tagged_jobs(result.stdout, tag)
        return Submission(native_id=native_id(found[0])) if found else None

    # -- errors --------------------------------------------------------------------------
    def is_transient(self, result: CommandResult) -> bool:
        """True when the instance could not be reached: retry later, never a verdict."""
        if result.returncode is None:
            return True
        if result.returncode == 255 and result.stderr.lstrip().startswith("ssh:"):
            return True
        return looks_transient(result.stderr)

    # -- eventlog evidence (lossless exit status, OOM) ---------------------------------
    def evidence_requests(self, observations: Sequence[Observation]) -> dict[int, frozenset[str]]:
        """Which eventlogs of which jobs could improve these observations."""
        requests: dict[int, frozenset[str]] = {}
        for observation in observations:
            kinds = evidence_kinds(observation)
            if kinds:
                jobid = parse_jobid(observation.native_id)
                requests[jobid] = requests.get(jobid, frozenset()) | kinds
        return requests

    def evidence_command(self, requests: Mapping[int, frozenset[str]]) -> Command | None:
        """One ``sh`` round trip reading every requested eventlog (None if none).

        Cost: one ``flux job info`` process per (job, eventlog) on the scheduler's side,
        only for jobs that just ended FAILED (the OOM check) or with an exit code above
        128; ``FluxBackend`` asks once per job."""
        return self.commands.evidence(requests)

    def evidence_transient_error(self, result: CommandResult) -> str | None:
        """Why the eventlog script's answer cannot be used yet (None: it can): it did
        not finish, or flux could not reach the broker for some job."""
        if result.returncode is None:
            return "the eventlog script timed out"
        if self.is_transient(result):
            return result.stderr.strip().splitlines()[-1]
        for line in result.stdout.splitlines():
            if not line.startswith("{") and looks_transient(line):
                return line.strip()
        return None

    def evidence_is_transient(self, result: CommandResult) -> bool:
        return self.evidence_transient_error(result) is not None

    def parse_evidence(self, result: CommandResult) -> dict[int, JobEvidence]:
        if result.returncode != 0:
            raise CommandFailed(result.argv, result.returncode, result.stderr)
        return parse_evidence(result.stdout)

    def apply_evidence(
        self, observations: Sequence[Observation], evidence: Mapping[int, JobEvidence]
    ) -> list[Observation]:
        """The observations with their jobs' eventlog evidence applied (others unchanged)."""
        applied: list[Observation] = []
        for observation in observations:
            if not evidence_kinds(observation):
                applied.append(observation)
                continue
            found = evidence.get(parse_jobid(observation.native_id))
            applied.append(observation if found is None else apply_evidence(observation, found))
        return applied
