"""Flux commands as argv: :class:`~hpcstate.backend.Command` records, nothing else.

Pure: nothing here runs a command, reads an answer or the clock. ``_parse`` reads what
these commands print, ``_observe`` turns that into Observations, ``_io.FluxBackend``
runs them.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import Final

from attrs import frozen

from hpcstate import ParseError
from hpcstate.backend import Command, JobSpec

from ._ids import native_id, parse_jobid
from ._parse import EVIDENCE_KEYS

#: Set for every command: f58 ids print as ``f...`` instead of ``ƒ...``, so no locale or
#: transport encoding can mangle them (both forms are parsed anyway).
ASCII_IDS_ENV: Final = "FLUX_F58_FORCE_ASCII"
#: The jobspec attribute that carries a submission's idempotency tag.
TAG_ATTRIBUTE: Final = "user.hpcstate_tag"

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


def decimal_ids(native_ids: Sequence[str], command: str) -> list[str]:
    """The ids in their decimal form, each once, in the given order (ParseError if one
    is not a Flux job id)."""
    seen: dict[str, None] = {}
    for text in native_ids:
        seen.setdefault(native_id(parse_jobid(text, command=command)), None)
    return list(seen)


@frozen(kw_only=True)
class FluxCommands:
    """The argv of every command the backend runs against one Flux instance.

    ``flux`` is the flux executable on the scheduler's side; ``uri`` the instance's
    ``FLUX_URI`` when the commands do not run inside it; ``timeout`` seconds per command;
    ``find_limit`` the newest jobs of this user searched for a submission's tag; more
    ids than ``xargs_threshold`` go through stdin + xargs.
    """

    flux: str = "flux"
    uri: str | None = None
    timeout: float = 60.0
    find_limit: int = 1000
    xargs_threshold: int = 500

    def env(self) -> dict[str, str]:
        env = {ASCII_IDS_ENV: "1"}
        if self.uri:
            env["FLUX_URI"] = self.uri
        return env

    def command(self, argv: Sequence[str], *, stdin: str | None = None) -> Command:
        return Command(argv=argv, env=self.env(), stdin=stdin, timeout=self.timeout)

    def submit(self, spec: JobSpec) -> Command:
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
            return self.command(argv, stdin=spec.script)
        if spec.command[0].startswith("-"):
            raise ValueError(f"the command must not start with '-': {spec.command[0]!r}")
        argv.extend(spec.command)
        return self.command(argv)

    def queue(self, native_ids: Sequence[str]) -> Command:
        """``flux jobs --json ID...``: one job-list ``list-id`` per id, all users, no
        count cap (``-A``/``-c`` are ignored with ids, and ``--json`` would hide the
        truncation warning anyway). Many ids go through xargs, to stay under the
        kernel's 128 KiB limit for one argument (an SSH command line is one)."""
        ids = decimal_ids(native_ids, "flux jobs")
        if not ids:
            raise ValueError("queue_command needs at least one job id")
        if len(ids) > self.xargs_threshold:
            return self.command(["xargs", self.flux, "jobs", "--json"], stdin="\n".join(ids))
        return self.command([self.flux, "jobs", "--json", *ids])

    def cancel(self, native_ids: Sequence[str]) -> Command:
        return self.command([self.flux, "cancel", *decimal_ids(native_ids, "flux cancel")])

    def find_submission(self, tag: str) -> Command | None:
        """Look for a job this user already submitted with ``tag`` (None: no tag)."""
        if not tag:
            return None
        return self.command([self.flux, "python", "-c", FIND_SCRIPT, tag, str(self.find_limit)])

    def evidence(self, requests: Mapping[int, frozenset[str]]) -> Command | None:
        """One ``sh`` round trip reading every requested eventlog (None if none).

        Cost: one ``flux job info`` process per (job, eventlog) on the scheduler's side."""
        args = [
            f"{kind}:{jobid}"
            for jobid, kinds in sorted(requests.items())
            for kind in sorted(kinds)
            if kind in EVIDENCE_KEYS
        ]
        if not args:
            return None
        return self.command(
            ["sh", "-c", EVIDENCE_SCRIPT, "hpcstate-flux-evidence", self.flux, *args]
        )
