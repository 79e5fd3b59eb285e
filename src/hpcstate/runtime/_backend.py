"""CommandBackend: a Backend made of a pure Dialect and a Runner.

One command per method call. Transient failures (the dialect says so, the command
timed out, the transport failed) are retried with exponential backoff and jitter,
then raised as SchedulerUnavailable / TransportError: they never become observations.
"""

from __future__ import annotations

import logging
import random
import shlex
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timezone
from typing import Final

from hpcstate import (
    CommandFailed,
    Observation,
    ParseError,
    SchedulerUnavailable,
    TransportError,
)
from hpcstate.backend import (
    AccountingQuery,
    Capabilities,
    Command,
    CommandResult,
    Dialect,
    JobSpec,
    OutputSnapshot,
    Runner,
    Submission,
    expand_output_pattern,
)

from ._clock import Clock, SystemClock
from ._errors import AuthenticationFailed, HostKeyRejected

log = logging.getLogger("hpcstate.runtime.backend")

#: Transport errors that retrying cannot fix.
_PERMANENT: Final = (HostKeyRejected, AuthenticationFailed)


class _Transient(Exception):
    """Internal: one attempt failed in a way that retrying may fix."""

    def __init__(self, message: str, *, transport: bool, cause: BaseException | None = None):
        super().__init__(message)
        self.transport = transport
        self.cause = cause


#: Characters a file name must not hold to be read back by read_text_files.
_UNREADABLE_NAME: Final = frozenset("\n\x1e\0")


class CommandBackend:
    """A :class:`hpcstate.backend.Backend` for CLI schedulers (Slurm, Flux, PBS...).

    ``retries`` is how many times a transient failure is retried (so a call makes at
    most ``retries + 1`` attempts); waits grow from ``backoff`` seconds, doubling, up
    to ``max_backoff``, each with full jitter. Sleeping goes through ``clock``.
    """

    def __init__(
        self,
        *,
        name: str,
        dialect: Dialect,
        runner: Runner,
        capabilities: Capabilities,
        clock: Clock | None = None,
        retries: int = 3,
        backoff: float = 0.5,
        max_backoff: float = 10.0,
        random_source: Callable[[], float] | None = None,
    ) -> None:
        self.name = name
        self.dialect = dialect
        self.runner = runner
        self.capabilities = capabilities
        self.clock: Clock = clock if clock is not None else SystemClock()
        self.retries = retries
        self.backoff = backoff
        self.max_backoff = max_backoff
        self._random = random_source if random_source is not None else random.random
        #: Commands run so far (every attempt counts): tests and benchmarks read it.
        self.commands_run = 0

    # -- the one place commands run ---------------------------------------------------

    async def _attempt(self, command: Command) -> CommandResult:
        self.commands_run += 1
        try:
            result = await self.runner.run(command)
        except _PERMANENT:
            raise
        except TransportError as exc:
            raise _Transient(str(exc), transport=True, cause=exc) from exc
        except OSError as exc:
            raise _Transient(f"{command.argv[0]}: {exc}", transport=True, cause=exc) from exc
        if result.returncode is None:
            raise _Transient(
                f"{shlex.join(command.argv[:2])} timed out after {command.timeout:g} s",
                transport=False,
            )
        if self.dialect.is_transient(result):
            tail = result.stderr.strip().splitlines()[-1:] or ["(no stderr)"]
            raise _Transient(
                f"{shlex.join(command.argv[:2])} exited {result.returncode}: {tail[0]}",
                transport=False,
            )
        return result

    def _delay(self, attempt: int) -> float:
        ceiling = min(self.max_backoff, self.backoff * (2.0**attempt))
        return ceiling * (0.5 + 0.5 * self._random())  # jitter, never zero

    async def _run(self, command: Command) -> CommandResult:
        """Run with retries; raise SchedulerUnavailable/TransportError when they run out."""
        last: _Transient | None = None
        for attempt in range(self.retries + 1):
            if attempt:
                await self.clock.sleep(self._delay(attempt - 1))
            try:
                return await self._attempt(command)
            except _Transient as exc:
                last = exc
                log.info("%s: transient failure (attempt %d): %s", self.name, attempt + 1, exc)
        assert last is not None
        message = f"backend {self.name!r}: {last} (gave up after {self.retries + 1} attempts)"
        if last.transport:
            raise TransportError(message) from last.cause
        raise SchedulerUnavailable(message)

    def _parse_failed(self, result: CommandResult, exc: ParseError) -> Exception:
        # A non-zero exit that the dialect could not read is the command's failure.
        if result.returncode:
            return CommandFailed(result.argv, result.returncode, result.stderr or str(exc))
        return exc

    # -- Backend ------------------------------------------------------------------------

    async def submit(self, spec: JobSpec) -> Submission:
        """Submit once. If the answer is lost (timeout, dropped connection) and the spec
        has a tag, look the tag up before ever submitting again."""
        command = self.dialect.submit_command(spec)
        for attempt in range(self.retries + 1):
            if attempt:
                await self.clock.sleep(self._delay(attempt - 1))
                if spec.tag:
                    found = await self.find_submission(spec.tag)
                    if found is not None:
                        log.info("%s: lost submit answer; tag %s found", self.name, spec.tag)
                        return found
            try:
                result = await self._attempt(command)
            except _Transient as exc:
                log.info("%s: submit attempt %d failed: %s", self.name, attempt + 1, exc)
                if not spec.tag and exc.transport:
                    # Without a tag we cannot tell whether it went through: never retry.
                    raise TransportError(
                        f"backend {self.name!r}: submit answer lost ({exc}); not retried "
                        "because the spec has no tag to look the job up by"
                    ) from exc.cause
                last = exc
                continue
            try:
                return self.dialect.parse_submit(result, spec)
            except ParseError as exc:
                raise self._parse_failed(result, exc) from exc
        message = f"backend {self.name!r}: submit failed: {last} ({self.retries + 1} attempts)"
        if last.transport:
            raise TransportError(message) from last.cause
        raise SchedulerUnavailable(message)

    async def find_submission(self, tag: str) -> Submission | None:
        """The job an earlier submit with ``tag`` created, or None (one command)."""
        command = self.dialect.find_submission_command(tag)
        if command is None:
            return None
        result = await self._run(command)
        try:
            return self.dialect.parse_find_submission(result, tag)
        except ParseError as exc:
            raise self._parse_failed(result, exc) from exc

    async def queue(self, native_ids: Sequence[str]) -> Sequence[Observation]:
        if not native_ids:
            return ()
        result = await self._run(self.dialect.queue_command(native_ids))
        try:
            return self.dialect.parse_queue(
                result, native_ids=native_ids, observed_at=self.clock.now()
            )
        except ParseError as exc:
            raise self._parse_failed(result, exc) from exc

    async def accounting(self, query: AccountingQuery) -> Sequence[Observation]:
        if not query.native_ids:
            return ()
        command = self.dialect.accounting_command(query)
        if command is None:
            return ()
        result = await self._run(command)
        try:
            return self.dialect.parse_accounting(result, query=query, observed_at=self.clock.now())
        except ParseError as exc:
            raise self._parse_failed(result, exc) from exc

    async def cancel(self, native_ids: Sequence[str]) -> None:
        if not native_ids:
            return
        result = await self._run(self.dialect.cancel_command(native_ids))
        try:
            self.dialect.check_cancel(result)
        except ParseError as exc:
            raise self._parse_failed(result, exc) from exc

    def reports_itself(self, spec: JobSpec) -> bool:
        """True when the job built from ``spec`` writes its own report file when its
        payload ends (the dialect decides: ``reports_itself(spec)``, if it has one)."""
        decide = getattr(self.dialect, "reports_itself", None)
        return bool(decide is not None and decide(spec))

    async def read_text_files(self, paths: Sequence[str]) -> Mapping[str, str]:
        """Contents of small files on the scheduler's side (self-reports), one command.

        Missing files are left out. Each file is printed after a marker line naming it.
        The names go in on stdin, NUL-separated (``xargs -0`` splits them into as many
        ``sh`` runs as the argument limit needs): thousands of paths fit in one command.
        Names holding a newline or the marker byte cannot be told apart in the answer
        and are skipped.
        """
        names = [p for p in dict.fromkeys(paths) if p and not set(p) & _UNREADABLE_NAME]
        if not names:
            return {}
        script = 'for f; do [ -r "$f" ] && { printf "\\036%s\\n" "$f"; cat -- "$f"; }; done; exit 0'
        command = Command(
            argv=("xargs", "-0", "sh", "-c", script, "sh"), stdin="\0".join(names) + "\0"
        )
        result = await self._run(command)
        files: dict[str, str] = {}
        for chunk in result.stdout.split("\x1e")[1:]:
            name, _, body = chunk.partition("\n")
            files[name] = body
        return files

    async def read_output(
        self, native_id: str, path: str | None, lines: int
    ) -> OutputSnapshot | None:
        """The end of a job's output file on the scheduler's side (one command)."""
        if not path:
            return None
        index = native_id.partition("_")[2]
        path = expand_output_pattern(path, native_id, int(index) if index.isdigit() else None)
        script = 'stat -c %Y:%s -- "$1" && tail -n "$2" -- "$1"'
        result = await self._run(Command(argv=("sh", "-c", script, "sh", path, str(lines))))
        if result.returncode != 0:
            return None
        head, _, body = result.stdout.partition("\n")
        mtime, _, size = head.partition(":")
        try:
            last = datetime.fromtimestamp(int(mtime), tz=timezone.utc)
            length = int(size)
        except ValueError:
            return None
        return OutputSnapshot(
            tail=tuple(body.splitlines()), last_output_at=last if length else None, size=length
        )

    async def close(self) -> None:
        await self.runner.close()
