"""The Flux dialect: flux-core CLI commands as argv, and their output as Observations.

Pure: builds :class:`~hpcstate.backend.Command` records and reads
:class:`~hpcstate.backend.CommandResult` records; the I/O is ``_io.FluxBackend``'s.

One poll is one ``flux jobs --json ID...`` (job-list serves queue and history alike,
so an inactive job's record is already the final, authoritative one), plus, only for
jobs that just ended FAILED or with an exit code above 128, one batched ``flux job
info`` script that reads the eventlogs which say whether a signal or an OOM kill ended
the task.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Final

from attrs import frozen

from hpcstate import CommandFailed, Observation, ParseError
from hpcstate.backend import AccountingQuery, Command, CommandResult, JobSpec, Submission

from ._ids import native_id, parse_jobid
from ._parse import (
    EVIDENCE_KEYS,
    JobEvidence,
    apply_evidence,
    evidence_kinds,
    looks_transient,
    parse_evidence,
    parse_jobs_json,
    parse_submit_output,
    parse_tagged_jobs,
    queue_observations,
)

#: Set for every command: f58 ids print as ``f...`` instead of ``ƒ...``, so no locale or
#: transport encoding can mangle them (both forms are parsed anyway).
ASCII_IDS_ENV: Final = "FLUX_F58_FORCE_ASCII"
#: The jobspec attribute that carries a submission's idempotency tag.
TAG_ATTRIBUTE: Final = "user.hpcstate_tag"

# `flux cancel` answers for a job that already ended: that is what cancel wanted.
_CANCEL_ALREADY_DONE: Final = ("job is inactive", "unknown job id", "no such job")
_ENV_NAME: Final = re.compile(r"\A[A-Za-z_][A-Za-z0-9_]*\Z")
_URGENCY_WORDS: Final = frozenset({"hold", "default", "expedite"})
_URGENCY_NUMBER: Final = re.compile(r"\A[0-9]{1,2}\Z")  # ASCII: isdecimal() takes "٣"

# Reads the eventlogs of several jobs in ONE round trip: `sh -c SCRIPT NAME FLUX KIND:ID...`.
# Each request is framed by begin/end lines; stderr is folded in so errors stay attributed.
# guest.output can be large (unredirected job output lives there): grep keeps only the
# oom plugin's log lines and flux-job's own errors.
EVIDENCE_SCRIPT: Final = """\
flux=$1
shift
for request do
  kind=${request%%:*}
  id=${request#*:}
  echo "@@hpcstate-begin $kind $id"
  case $kind in
    exec) "$flux" job info "$id" guest.exec.eventlog 2>&1 ;;
    main) "$flux" job info "$id" eventlog 2>&1 ;;
    output) "$flux" job info "$id" guest.output 2>&1 | grep -e '"oom"' -e '^flux-job:' ;;
  esac
  rc=$?
  echo
  echo "@@hpcstate-end $kind $id $rc"
done
"""

# Finds jobs of this user carrying an hpcstate tag: job-list does not expose jobspec
# user attributes, so the newest LIMIT jobs' jobspecs are read (in parallel RPCs).
# job_info_lookup() returns a future on every flux-core this was checked on (0.88.0);
# job_kvs_lookup() there is synchronous and returns a dict. A job purged between the
# listing and the lookup (ENOENT), or not readable by this user (EPERM), is skipped;
# any other error fails the script (a traceback, a non-zero exit): a lookup that could
# not look is never "not found".
FIND_SCRIPT: Final = """\
import errno, json, sys
import flux, flux.job
tag, limit = sys.argv[1], int(sys.argv[2])
handle = flux.Flux()
jobs = flux.job.JobList(
    handle, filters=["pending", "running", "inactive"], max_entries=limit
).jobs()
lookups = [(job.id, flux.job.job_info_lookup(handle, job.id, keys=["jobspec"])) for job in jobs]
for jobid, future in lookups:
    try:
        jobspec = future.get_decode()["jobspec"]
    except OSError as exc:
        if exc.errno in (errno.ENOENT, errno.EPERM):
            continue
        raise
    value = jobspec.get("attributes", {}).get("user", {}).get("hpcstate_tag")
    if value is not None:
        print(json.dumps({"id": int(jobid), "tag": value}))
"""


def duration_fsd(limit: timedelta) -> str:
    """A time limit in Flux Standard Duration (``90s``, ``0.5s``); never minutes."""
    seconds = limit.total_seconds()
    if seconds <= 0:
        raise ValueError(f"time limit must be positive, got {limit}")
    if seconds == int(seconds):
        return f"{int(seconds)}s"
    return f"{seconds:.3f}".rstrip("0") + "s"


def _positive(value: int | None, what: str) -> int | None:
    if value is not None and value < 1:
        raise ValueError(f"{what} must be >= 1, got {value}")
    return value


def _dependency(text: str) -> str:
    """``afterok:ID`` and other RFC 26 URIs pass through; a bare id means afterok."""
    stripped = text.strip()
    if ":" in stripped:
        scheme, _, value = stripped.partition(":")
        try:
            return f"{scheme}:{parse_jobid(value)}"
        except ParseError:
            return stripped
    try:
        return f"afterok:{parse_jobid(stripped)}"
    except ParseError:
        raise ValueError(f"dependency {text!r} is neither a job id nor a Flux URI") from None


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

    # -- helpers ---------------------------------------------------------------------
    def _env(self) -> dict[str, str]:
        env = {ASCII_IDS_ENV: "1"}
        if self.uri:
            env["FLUX_URI"] = self.uri
        return env

    def _command(self, argv: Sequence[str], *, stdin: str | None = None) -> Command:
        return Command(argv=argv, env=self._env(), stdin=stdin, timeout=self.timeout)

    @staticmethod
    def _decimal_ids(native_ids: Sequence[str], command: str) -> list[str]:
        seen: dict[str, None] = {}
        for text in native_ids:
            seen.setdefault(native_id(parse_jobid(text, command=command)), None)
        return list(seen)

    # -- submit --------------------------------------------------------------------------
    def submit_command(self, spec: JobSpec) -> Command:
        """``flux submit`` for a command, ``flux batch`` for a script (stdin or a path)."""
        if spec.array:
            raise ValueError(
                "Flux has no array jobs: submit one job per task (capabilities.array_jobs is False)"
            )
        batch = not spec.command
        argv = [self.flux, "batch" if batch else "submit"]
        # The job inherits the submitting environment: keep our own switch out of it.
        argv.append(f"--env-remove={ASCII_IDS_ENV}")
        if spec.name:
            argv.append(f"--job-name={spec.name}")
        if spec.time_limit is not None:
            argv.append(f"--time-limit={duration_fsd(spec.time_limit)}")
        nodes = _positive(spec.nodes, "nodes")
        tasks = _positive(spec.tasks, "tasks")
        cpus = _positive(spec.cpus, "cpus")
        if nodes is not None:
            argv.append(f"--nodes={nodes}")
        if batch:
            # flux batch allocates slots and refuses to guess their number.
            if tasks is not None or nodes is None:
                argv.append(f"--nslots={tasks or 1}")
            if cpus is not None:
                argv.append(f"--cores-per-slot={cpus}")
        else:
            if tasks is not None:
                argv.append(f"--ntasks={tasks}")
            if cpus is not None:
                argv.append(f"--cores-per-task={cpus}")
        if spec.partition:
            argv.append(f"--queue={spec.partition}")
        if spec.account:
            # --setattr values are JSON when they parse as JSON: always give a JSON string.
            argv.append(f"--setattr=system.bank={json.dumps(spec.account)}")
        for name, value in spec.environment.items():
            if not _ENV_NAME.match(name):
                raise ValueError(f"environment variable name {name!r} is not valid")
            # flux expands $VAR in --env values (string.Template): $$ is a literal $.
            argv.append(f"--env={name}={value.replace('$', '$$')}")
        if spec.working_directory:
            argv.append(f"--cwd={spec.working_directory}")
        if spec.stdout:
            argv.append(f"--output={spec.stdout}")
        if spec.stderr:
            argv.append(f"--error={spec.stderr}")
        argv.extend(f"--dependency={_dependency(dep)}" for dep in spec.dependencies)
        if "urgency" in spec.options:
            urgency = str(spec.options["urgency"])  # TOML may give an int
            if urgency not in _URGENCY_WORDS and not (
                _URGENCY_NUMBER.match(urgency) and int(urgency) <= 31
            ):
                raise ValueError(f"urgency must be 0..31, hold, default or expedite: {urgency!r}")
            argv.append(f"--urgency={urgency}")
        if "begin_time" in spec.options:
            argv.append(f"--begin-time={spec.options['begin_time']}")
        if spec.tag:
            argv.append(f"--setattr={TAG_ATTRIBUTE}={json.dumps(spec.tag)}")
        argv.extend(spec.extra_args)
        if batch:
            if spec.script_path:
                argv.append(spec.script_path)
            return self._command(argv, stdin=spec.script)
        if spec.command[0].startswith("-"):
            raise ValueError(f"the command must not start with '-': {spec.command[0]!r}")
        argv.extend(spec.command)
        return self._command(argv)

    def parse_submit(self, result: CommandResult, spec: JobSpec) -> Submission:
        """The new job's id, as its decimal native id. A refusal is CommandFailed."""
        if result.returncode != 0:
            raise CommandFailed(result.argv, result.returncode, result.stderr)
        jobid = parse_submit_output(result.stdout, command=" ".join(result.argv[:2]))
        return Submission(native_id=native_id(jobid))

    # -- queue (= accounting: job-list serves both) ------------------------------------
    def queue_command(self, native_ids: Sequence[str]) -> Command:
        """``flux jobs --json ID...``: one job-list ``list-id`` per id, all users, no
        count cap (``-A``/``-c`` are ignored with ids, and ``--json`` would hide the
        truncation warning anyway). Many ids go through xargs, to stay under the
        kernel's 128 KiB limit for one argument (an SSH command line is one)."""
        ids = self._decimal_ids(native_ids, "flux jobs")
        if not ids:
            raise ValueError("queue_command needs at least one job id")
        if len(ids) > self.xargs_threshold:
            return self._command(["xargs", self.flux, "jobs", "--json"], stdin="\n".join(ids))
        return self._command([self.flux, "jobs", "--json", *ids])

    def parse_queue(
        self, result: CommandResult, *, native_ids: Sequence[str], observed_at: datetime
    ) -> Sequence[Observation]:
        """One observation per asked id. ``flux jobs`` exits 1 when it listed no job
        (xargs: 123 when any chunk did); unknown ids and failed look-ups are named on
        stderr. An id with neither a record nor "unknown" raises (see
        ``queue_observations``): it never becomes an absence."""
        command = "flux jobs --json"
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
        return self._command([self.flux, "cancel", *self._decimal_ids(native_ids, "flux cancel")])

    def check_cancel(self, result: CommandResult) -> None:
        """Cancelling a job that already ended (or was purged) is not an error; any
        other failure is, including a non-zero exit that nothing on stderr explains."""
        if result.returncode == 0:
            return
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        already_done = [
            line for line in lines if any(done in line.lower() for done in _CANCEL_ALREADY_DONE)
        ]
        if result.returncode is None or not lines or len(already_done) != len(lines):
            raise CommandFailed(result.argv, result.returncode, result.stderr)

    # -- idempotent submit ---------------------------------------------------------------
    def find_submission_command(self, tag: str) -> Command | None:
        """Look for a job this user already submitted with ``tag`` (a retried submit)."""
        if not tag:
            return None
        return self._command([self.flux, "python", "-c", FIND_SCRIPT, tag, str(self.find_limit)])

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
        args = [
            f"{kind}:{jobid}"
            for jobid, kinds in sorted(requests.items())
            for kind in sorted(kinds)
            if kind in EVIDENCE_KEYS
        ]
        if not args:
            return None
        return self._command(
            ["sh", "-c", EVIDENCE_SCRIPT, "hpcstate-flux-evidence", self.flux, *args]
        )

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
