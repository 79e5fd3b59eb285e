"""The Slurm backend's I/O: version detection once per connection, then the pure dialect
for that version driven by hpcstate.runtime.CommandBackend (retries, timeouts, one
command per call). Thin: it runs commands and hands their results to ``_observe``; the
rules are in ``_commands``, ``_parse`` and ``_observe``."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from datetime import timedelta

from hpcstate import (
    CommandFailed,
    ConfigError,
    Observation,
    ParseError,
    SchedulerUnavailable,
    TransportError,
)
from hpcstate.backend import (
    AccountingQuery,
    BackendConfig,
    Capabilities,
    JobSpec,
    OutputSnapshot,
    Runner,
    Submission,
)
from hpcstate.runtime import Clock, CommandBackend, make_runner

from . import _commands
from ._dialect import SlurmDialect, parse_version, version_command
from ._options import slurm_options
from ._versions import MINIMUM_VERSION, SlurmVersion, behaviour_for

_VERSION_ATTEMPTS = 3
#: The key of the detected release in facts() (interfaces: lease facts).
FACT_VERSION = "slurm_version"


class SlurmBackend:
    """A :class:`hpcstate.backend.Backend` for one Slurm cluster.

    The first call asks ``sbatch --version`` (once per backend, i.e. per connection) and
    picks the dialect for that release; ``version`` skips the question, and so does a
    version adopted from another process (``adopt_facts``: the lease holder before this
    one published it in the store, ``facts()``).
    """

    def __init__(
        self,
        *,
        name: str,
        runner: Runner,
        capabilities: Capabilities,
        version: SlurmVersion | None = None,
        clock: Clock | None = None,
        timeout: float = 60.0,
        accounting_margin: timedelta = timedelta(minutes=10),
        retries: int = 3,
        self_report_wrapper: bool = True,
    ) -> None:
        self.name = name
        self.capabilities = capabilities
        self.runner = runner
        self._clock = clock
        self._timeout = timeout
        self._margin = accounting_margin
        self._retries = retries
        self._self_report = self_report_wrapper
        self._version = version
        self._inner: CommandBackend | None = None
        self._lock = asyncio.Lock()

    @property
    def version(self) -> SlurmVersion | None:
        """The detected (or given) Slurm release; None before the first call."""
        return self._version

    # -- shared facts (Capabilities.shares_facts; hpcstate.backend.SharesFacts) ------------

    def facts(self) -> Mapping[str, str]:
        """What this backend learned that another process can reuse: the Slurm release
        (``{"slurm_version": "22.05.8"}``), once detected or given; empty before."""
        if self._version is None:
            return {}
        return {FACT_VERSION: str(self._version)}

    def adopt_facts(self, facts: Mapping[str, str]) -> None:
        """Use a release another process detected, so that no ``sbatch --version`` runs.

        Only before this backend knows its release (a detected or configured one wins);
        unknown keys are ignored, and a value that is not a supported release is not
        adopted (the first call then asks Slurm, as without it). Never raises."""
        text = facts.get(FACT_VERSION)
        if self._version is not None or self._inner is not None or not isinstance(text, str):
            return
        try:
            version = SlurmVersion.parse(f"slurm {text}")
        except ParseError:
            return
        if version < MINIMUM_VERSION or str(version) != text.strip():
            return
        self._version = version

    @property
    def commands_run(self) -> int:
        """Scheduler commands run so far, version detection excluded (for load figures)."""
        return self._inner.commands_run if self._inner is not None else 0

    async def _detect(self) -> SlurmVersion:
        last: Exception | None = None
        for attempt in range(_VERSION_ATTEMPTS):
            if attempt:
                await asyncio.sleep(0.5 * attempt)
            try:
                result = await self.runner.run(version_command())
            except TransportError as exc:
                last = exc
                continue
            if result.returncode is None:
                last = SchedulerUnavailable(f"backend {self.name!r}: sbatch --version timed out")
                continue
            return parse_version(result)
        assert last is not None
        raise last

    async def backend(self) -> CommandBackend:
        """The CommandBackend for the detected version (detecting it on first use)."""
        if self._inner is not None:
            return self._inner
        async with self._lock:
            if self._inner is None:
                version = self._version or await self._detect()
                if version < MINIMUM_VERSION:
                    raise ConfigError(
                        f"backend {self.name!r}: Slurm {version} is older than the oldest "
                        f"supported release {MINIMUM_VERSION}"
                    )
                self._version = version
                dialect = SlurmDialect(
                    behaviour=behaviour_for(version),
                    timeout=self._timeout,
                    accounting_margin=self._margin,
                    self_report_wrapper=self._self_report,
                )
                self._inner = CommandBackend(
                    name=self.name,
                    dialect=dialect,
                    runner=self.runner,
                    capabilities=self.capabilities,
                    clock=self._clock,
                    retries=self._retries,
                )
        return self._inner

    async def dialect(self) -> SlurmDialect:
        inner = await self.backend()
        assert isinstance(inner.dialect, SlurmDialect)
        return inner.dialect

    async def submit(self, spec: JobSpec) -> Submission:
        return await (await self.backend()).submit(spec)

    async def find_submission(self, tag: str) -> Submission | None:
        """The job an earlier submit with ``tag`` created: asked of the queue, then of
        accounting (a short job may have ended and left the queue before the lookup).

        None only when both answered and neither knows the tag: then it was never
        submitted. When accounting cannot answer, this raises: an unknown answer is
        never "not submitted", so the caller never submits the job a second time.
        """
        inner = await self.backend()
        found = await inner.find_submission(tag)
        if found is not None:
            return found
        dialect = await self.dialect()
        command = dialect.find_submission_accounting_command(tag)
        try:
            result = await self.runner.run(command)
        except TransportError as exc:
            raise SchedulerUnavailable(
                f"backend {self.name!r}: tag {tag} not in the queue, and accounting could "
                f"not be asked ({exc}); not known whether it was submitted"
            ) from exc
        if result.returncode is None:
            raise SchedulerUnavailable(
                f"backend {self.name!r}: tag {tag} not in the queue, and sacct timed out; "
                "not known whether it was submitted"
            )
        try:
            return dialect.parse_find_submission_accounting(result, tag)
        except (SchedulerUnavailable, CommandFailed, ParseError) as exc:
            raise SchedulerUnavailable(
                f"backend {self.name!r}: tag {tag} not in the queue, and accounting did not "
                f"answer ({exc}); not known whether it was submitted"
            ) from exc

    async def queue(self, native_ids: Sequence[str]) -> Sequence[Observation]:
        return await (await self.backend()).queue(native_ids)

    async def accounting(self, query: AccountingQuery) -> Sequence[Observation]:
        return await (await self.backend()).accounting(query)

    async def cancel(self, native_ids: Sequence[str]) -> None:
        await (await self.backend()).cancel(native_ids)

    def reports_itself(self, spec: JobSpec) -> bool:
        """True when the job runs through the report wrapper (any Slurm release)."""
        return _commands.reports_itself(spec, self_report=self._self_report)

    async def read_text_files(self, paths: Sequence[str]) -> Mapping[str, str]:
        """Small files on the cluster's side (the jobs' self-reports), one command for
        all of them; missing files are left out. Reads no Slurm state: no RPC."""
        return await (await self.backend()).read_text_files(paths)

    async def read_output(
        self, native_id: str, path: str | None, lines: int
    ) -> OutputSnapshot | None:
        """The end of a job's output file (for output checks), one command."""
        return await (await self.backend()).read_output(native_id, path, lines)

    async def close(self) -> None:
        await self.runner.close()


def make_backend(config: BackendConfig) -> SlurmBackend:
    """What ``hpcstate_slurm.BACKEND.make_backend`` builds from a configuration: its
    options structured as :class:`~hpcstate_slurm._options.SlurmOptions` (a ConfigError
    naming the key for a wrong or unknown one)."""
    from . import CAPABILITIES

    options = slurm_options(config.options, where=f"backend {config.name!r}")
    return SlurmBackend(
        name=config.name,
        runner=make_runner(config),
        capabilities=CAPABILITIES,
        version=options.version,
        timeout=options.command_timeout,
        accounting_margin=options.accounting_margin,
        retries=options.retries,
        self_report_wrapper=options.self_report_wrapper,
    )
