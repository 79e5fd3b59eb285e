"""FluxBackend: the pure dialect run through a Runner, plus the eventlog step.

``hpcstate.runtime.CommandBackend`` does submit, queue and cancel (one command each,
transient errors retried per ``FluxDialect.is_transient``). This class adds the one
step a generic command backend cannot know about: jobs that just ended FAILED or with
an exit code above 128 get their eventlogs read, in one batched round trip per poll,
so a task killed by SIGKILL is told apart from ``exit 137`` and an OOM kill is seen
(whatever the exit code). Inactive jobs' eventlogs never change, so the evidence is
cached per job id.

The CLI is the only path: it works locally and over SSH alike, and needs nothing but
flux-core on the scheduler's side. (The Python bindings need libflux-core on the
tracker's host and are not used.)
"""

from __future__ import annotations

from collections.abc import Sequence

from hpcstate import Observation, SchedulerUnavailable, TransportError
from hpcstate.backend import (
    AccountingQuery,
    BackendConfig,
    Capabilities,
    JobSpec,
    Runner,
    Submission,
)
from hpcstate.runtime import Clock, CommandBackend, make_runner

from . import CAPABILITIES
from ._dialect import FluxDialect
from ._options import dialect_from_options
from ._parse import JobEvidence

__all__ = ["EVIDENCE_CACHE_SIZE", "FluxBackend", "dialect_from_options"]

#: Eventlog evidence kept per job id (inactive jobs' eventlogs are immutable).
EVIDENCE_CACHE_SIZE = 4096


class FluxBackend:
    """The Backend for one Flux instance."""

    def __init__(
        self,
        *,
        dialect: FluxDialect,
        runner: Runner,
        name: str = "flux",
        capabilities: Capabilities = CAPABILITIES,
        clock: Clock | None = None,
    ) -> None:
        self.name = name
        self.capabilities = capabilities
        self._dialect = dialect
        self._runner = runner
        self._commands = CommandBackend(
            name=name, dialect=dialect, runner=runner, capabilities=capabilities, clock=clock
        )
        self._evidence: dict[int, JobEvidence] = {}

    @classmethod
    def from_config(cls, config: BackendConfig) -> FluxBackend:
        dialect = dialect_from_options(config.options, where=f"backend {config.name!r}")
        return cls(dialect=dialect, runner=make_runner(config), name=config.name)

    async def submit(self, spec: JobSpec) -> Submission:
        return await self._commands.submit(spec)

    async def find_submission(self, tag: str) -> Submission | None:
        """The job an earlier submit with ``tag`` created, or None: one ``flux python``
        run of the tag lookup (``FIND_SCRIPT``) over this user's newest ``find_limit``
        jobs. A lookup that could not look raises; it never answers "not found"."""
        return await self._commands.find_submission(tag)

    async def queue(self, native_ids: Sequence[str]) -> Sequence[Observation]:
        if not native_ids:
            return []
        # CommandBackend hands every exit status to the dialect: `flux jobs` exiting 1
        # because all ids are unknown (purged) is parsed into UNKNOWN observations.
        observations = await self._commands.queue(native_ids)
        return await self._with_evidence(observations)

    async def accounting(self, query: AccountingQuery) -> Sequence[Observation]:
        # job-list is the history too: the same query answers for finished jobs.
        return await self.queue(query.native_ids)

    async def cancel(self, native_ids: Sequence[str]) -> None:
        if native_ids:
            await self._commands.cancel(native_ids)

    async def close(self) -> None:
        await self._commands.close()

    # -- internals -------------------------------------------------------------------
    async def _with_evidence(self, observations: Sequence[Observation]) -> Sequence[Observation]:
        requests = self._dialect.evidence_requests(observations)
        # Asked once per job and kind: a read that failed for good (not transiently)
        # would fail again, as an inactive job's eventlogs never change.
        missing = {
            jobid: kinds
            for jobid, kinds in requests.items()
            if jobid not in self._evidence or not kinds <= self._evidence[jobid].answered
        }
        command = self._dialect.evidence_command(missing) if missing else None
        if command is not None:
            try:
                result = await self._runner.run(command)
            except OSError as exc:
                raise TransportError(f"flux eventlogs could not be read: {exc}") from exc
            problem = self._dialect.evidence_transient_error(result)
            if problem is not None:
                raise SchedulerUnavailable(f"flux eventlogs could not be read: {problem}")
            for jobid, evidence in self._dialect.parse_evidence(result).items():
                self._remember(jobid, evidence)
        found = {jobid: self._evidence[jobid] for jobid in requests if jobid in self._evidence}
        return self._dialect.apply_evidence(observations, found)

    def _remember(self, jobid: int, evidence: JobEvidence) -> None:
        self._evidence.pop(jobid, None)
        self._evidence[jobid] = evidence
        while len(self._evidence) > EVIDENCE_CACHE_SIZE:
            del self._evidence[next(iter(self._evidence))]
