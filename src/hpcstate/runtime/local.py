"""The embedded ``local`` backend: jobs are processes on this machine.

Each job gets a directory ``ROOT/<native id>/`` (ROOT defaults to
``$XDG_STATE_HOME/hpcstate/local``) holding its spec, its stdout/stderr (unless the
spec names other files) and the files its supervisor writes (see ``_supervise``).
The supervisor is detached, so jobs survive the tracker; its wait status is lossless
and final (Source.PROCESS). Processes are identified by pid AND start time AND boot
id, so a recycled pid is never mistaken for the job.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import secrets
import signal
import socket
import sys
from collections.abc import AsyncIterator, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Final

import attrs
from attrs import field, frozen

from hpcstate import (
    Absence,
    ConfigError,
    ExitStatus,
    JobStats,
    Observation,
    SchedulerUnavailable,
    Source,
    State,
)
from hpcstate.backend import (
    API_VERSION,
    AccountingQuery,
    BackendConfig,
    BackendInfo,
    Capabilities,
    JobSpec,
    OutputQuestion,
    OutputSnapshot,
    Submission,
)
from hpcstate.options import structure_options

from ._clock import Clock, SystemClock
from ._proc import ProcessHandle
from ._store import state_dir

CAPABILITIES: Final = Capabilities(
    array_jobs=False,  # the tracker starts one process per array task
    steps=False,
    lossless_signals=True,
    accounting=False,  # the wait status is final: nothing to confirm later
    cancel=True,
    requeue=False,
    adopt=True,
    push=True,  # watch() notices ends within a fraction of a second
    self_report=True,  # into the store (host_local), not a report file
    idempotent_submit=True,
    output=True,
    host_local=True,
)

_SUPERVISOR: Final = Path(__file__).with_name("_supervise.py")

#: Environment variable that carries the array index into a local array task.
ARRAY_INDEX_ENV: Final = "HPCSTATE_ARRAY_INDEX"


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except FileNotFoundError:
        return None
    except ValueError:
        return None  # being written (cannot happen with rename) or damaged: treat as absent
    return data if isinstance(data, dict) else None


def _time(text: object) -> datetime | None:
    if not isinstance(text, str):
        return None
    with contextlib.suppress(ValueError):
        return datetime.fromisoformat(text)
    return None


def _handle(doc: dict[str, Any] | None) -> ProcessHandle | None:
    if doc is None or doc.get("start_time") is None:
        return None
    try:
        return ProcessHandle(
            pid=int(doc["pid"]), start_time=int(doc["start_time"]), boot_id=str(doc["boot_id"])
        )
    except (KeyError, TypeError, ValueError):
        return None


class LocalBackend:
    """Runs each job as a detached, supervised local process."""

    def __init__(
        self,
        *,
        name: str = "local",
        root: str | os.PathLike[str] | None = None,
        clock: Clock | None = None,
        kill_grace: float = 5.0,
        watch_interval: float = 0.25,
        python: str | None = None,
    ) -> None:
        self.name = name
        self.capabilities = CAPABILITIES
        self.root = Path(root) if root is not None else state_dir() / "local"
        self.clock: Clock = clock if clock is not None else SystemClock()
        self.kill_grace = kill_grace
        self.watch_interval = watch_interval
        self.python = python or sys.executable
        self._host = socket.gethostname()

    # -- paths --------------------------------------------------------------------------

    def job_dir(self, native_id: str) -> Path:
        if not native_id or "/" in native_id or native_id.startswith("."):
            raise ValueError(f"not a local job id: {native_id!r}")
        return self.root / native_id

    def _tag_path(self, tag: str) -> Path:
        return self.root / "tags" / hashlib.sha256(tag.encode()).hexdigest()

    def output_paths(self, native_id: str) -> tuple[Path, Path]:
        spec = _read_json(self.job_dir(native_id) / "spec.json") or {}
        jobdir = self.job_dir(native_id)
        out = Path(spec.get("stdout") or jobdir / "stdout")
        err = Path(spec.get("stderr") or out)
        return out, err

    # -- Backend --------------------------------------------------------------------------

    async def submit(self, spec: JobSpec) -> Submission:
        if spec.array:
            raise ConfigError(
                "the local backend runs one process per job; submit array tasks one by one "
                "(the tracker does this for you)"
            )
        if spec.command:
            argv = list(spec.command)
        elif spec.script is not None:
            argv = []  # filled in below, once the job directory exists
        else:
            assert spec.script_path is not None
            argv = [spec.script_path]
        native_id = datetime.now(timezone.utc).strftime("%Y%m%d%H%M%S") + "-" + secrets.token_hex(4)
        jobdir = self.job_dir(native_id)
        jobdir.mkdir(parents=True)
        if spec.script is not None:
            script = jobdir / "script"
            script.write_text(spec.script, encoding="utf-8")
            script.chmod(0o755)
            argv = [str(script)]
        env = dict(os.environ)
        env.update(spec.environment)
        stdout = spec.stdout or str(jobdir / "stdout")
        stderr = spec.stderr or (str(jobdir / "stderr") if not spec.stdout else stdout)
        document = {
            "argv": argv,
            "env": env,
            "cwd": spec.working_directory,
            "stdout": stdout,
            "stderr": stderr,
            "time_limit": spec.time_limit.total_seconds() if spec.time_limit else None,
            "kill_grace": float(spec.options.get("kill_grace", self.kill_grace)),
            "tag": spec.tag,
            "name": spec.name,
        }
        (jobdir / "spec.json").write_text(json.dumps(document), encoding="utf-8")
        if spec.tag:
            # Recorded BEFORE the process starts: a lost answer is found again by tag.
            tag_path = self._tag_path(spec.tag)
            tag_path.parent.mkdir(parents=True, exist_ok=True)
            tag_path.write_text(native_id, encoding="utf-8")
        submitted_at = self.clock.now()
        proc = await asyncio.create_subprocess_exec(
            self.python,
            "-I",  # isolated: no user site, no PYTHON* variables
            "-S",  # stdlib only: starts in milliseconds
            str(_SUPERVISOR),
            str(jobdir),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,
        )
        _, err = await proc.communicate()
        if proc.returncode != 0:
            raise SchedulerUnavailable(
                f"local backend: the supervisor for {native_id} did not start "
                f"(exit {proc.returncode}): {err.decode(errors='replace').strip()[-500:]}"
            )
        return Submission(native_id=native_id, submitted_at=submitted_at)

    async def find_submission(self, tag: str) -> Submission | None:
        try:
            native_id = self._tag_path(tag).read_text(encoding="utf-8").strip()
        except FileNotFoundError:
            return None
        if not (self.job_dir(native_id) / "supervisor.json").exists():
            return None  # the tag was recorded but the process never started
        return Submission(native_id=native_id)

    def observe(self, native_id: str, observed_at: datetime) -> Observation:
        """What the job's directory and /proc say about one job (synchronous)."""
        try:
            jobdir = self.job_dir(native_id)
        except ValueError:
            return Observation(
                native_id=native_id,
                source=Source.PROCESS,
                observed_at=observed_at,
                absence=Absence.UNKNOWN,
                detail=f"{native_id!r} is not a local job id",
            )
        status = _read_json(jobdir / "status.json")
        if status is not None:
            return self._ended(native_id, status, observed_at)
        supervisor = _handle(_read_json(jobdir / "supervisor.json"))
        payload_doc = _read_json(jobdir / "payload.json")
        payload = _handle(payload_doc)
        supervisor_alive = supervisor is not None and supervisor.alive()
        if payload_doc is not None:
            if supervisor_alive or (payload is not None and payload.alive()):
                started = _time(payload_doc.get("started_at"))
                return Observation(
                    native_id=native_id,
                    source=Source.PROCESS,
                    observed_at=observed_at,
                    state=State.RUNNING,
                    handle=str(payload) if payload is not None else None,
                    stats=JobStats(started_at=started, nodes=(self._host,)),
                )
        elif supervisor_alive:
            return Observation(
                native_id=native_id,
                source=Source.PROCESS,
                observed_at=observed_at,
                state=State.QUEUED,
            )
        # Nobody is left to write a status: one last look (it may have just appeared).
        status = _read_json(jobdir / "status.json")
        if status is not None:
            return self._ended(native_id, status, observed_at)
        if not jobdir.exists():
            detail = f"local job {native_id}: its directory {jobdir} no longer exists"
        else:
            detail = (
                f"local job {native_id}: its supervisor died without recording how the job "
                "ended, and the job's process is gone"
            )
        return Observation(
            native_id=native_id,
            source=Source.PROCESS,
            observed_at=observed_at,
            absence=Absence.UNKNOWN,
            detail=detail,
        )

    def _ended(self, native_id: str, status: dict[str, Any], observed_at: datetime) -> Observation:
        raw = status.get("wait_status")
        exit_ = ExitStatus.from_wait_status(int(raw)) if isinstance(raw, int) else None
        if status.get("timed_out"):
            state = State.TIMEOUT
        elif status.get("cancelled"):
            state = State.CANCELLED
        elif exit_ is not None and exit_.success:
            state = State.COMPLETED
        else:
            state = State.FAILED
        started = _time(status.get("started_at"))
        finished = _time(status.get("finished_at"))
        elapsed = (finished - started).total_seconds() if started and finished else None
        cpu = status.get("cpu_time_s")
        rss = status.get("max_rss_bytes")
        return Observation(
            native_id=native_id,
            source=Source.PROCESS,
            observed_at=observed_at,
            state=state,
            final=True,
            stats=JobStats(
                exit=exit_,
                exit_source=Source.PROCESS if exit_ is not None else None,
                started_at=started,
                finished_at=finished,
                elapsed_s=max(0.0, elapsed) if elapsed is not None else None,
                cpu_time_s=float(cpu) if isinstance(cpu, int | float) else None,
                max_rss_bytes=int(rss) if isinstance(rss, int) else None,
                nodes=(self._host,),
            ),
        )

    async def queue(self, native_ids: Sequence[str]) -> Sequence[Observation]:
        now = self.clock.now()
        return [self.observe(native_id, now) for native_id in native_ids]

    async def accounting(self, query: AccountingQuery) -> Sequence[Observation]:
        # The wait status is the record: the same answer as the queue, final when ended.
        return await self.queue(query.native_ids)

    async def cancel(self, native_ids: Sequence[str]) -> None:
        for native_id in native_ids:
            jobdir = self.job_dir(native_id)
            if (jobdir / "status.json").exists():
                continue
            supervisor = _handle(_read_json(jobdir / "supervisor.json"))
            if supervisor is not None and supervisor.alive():
                # The supervisor sends TERM to the payload, KILL after the grace, and
                # records the cancellation with the wait status.
                with contextlib.suppress(ProcessLookupError):
                    os.kill(supervisor.pid, signal.SIGTERM)
                continue
            payload = _handle(_read_json(jobdir / "payload.json"))
            if payload is not None and payload.alive():
                # An orphan (its supervisor died): nobody will record its end.
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(payload.pid, signal.SIGTERM)

    def watch(self, native_ids: Sequence[str]) -> AsyncIterator[Observation]:
        """Yield an observation whenever one of the jobs changes (starts, ends)."""
        return self._watch(tuple(native_ids))

    async def _watch(self, native_ids: tuple[str, ...]) -> AsyncIterator[Observation]:
        seen: dict[str, tuple[bool, bool]] = {}
        while True:
            for native_id in native_ids:
                with contextlib.suppress(ValueError):
                    jobdir = self.job_dir(native_id)
                    marks = ((jobdir / "payload.json").exists(), (jobdir / "status.json").exists())
                    if seen.get(native_id) != marks:
                        first = native_id not in seen
                        seen[native_id] = marks
                        if not first:
                            yield self.observe(native_id, self.clock.now())
            await asyncio.sleep(self.watch_interval)

    async def read_output(
        self, native_id: str, path: str | None, lines: int
    ) -> OutputSnapshot | None:
        """The last ``lines`` lines of the job's stdout and when it last grew."""
        out, _ = self.output_paths(native_id)
        return read_output_file(out, lines)

    def lease_scope(self) -> str:
        """This host and job directory: a ``local`` backend on another host (a shared
        PostgreSQL store), or under another root, is another set of processes."""
        return f"{self._host}:{self.root}"

    async def close(self) -> None:
        return None


def read_output_file(path: Path, lines: int, *, chunk: int = 65536) -> OutputSnapshot | None:
    """The end of a local file, without reading all of a big one."""
    try:
        with open(path, "rb") as handle:
            info = os.fstat(handle.fileno())
            handle.seek(max(0, info.st_size - chunk))
            data = handle.read()
    except FileNotFoundError:
        return None
    text = data.decode("utf-8", errors="replace").splitlines()
    return OutputSnapshot(
        tail=tuple(text[-lines:]),
        last_output_at=datetime.fromtimestamp(info.st_mtime, tz=timezone.utc)
        if info.st_size
        else None,
        size=info.st_size,
    )


def _seconds(instance: object, attribute: attrs.Attribute[float], value: float) -> None:
    if value < 0:
        raise ValueError(f"{attribute.name}: must be seconds >= 0, got {value!r}")


@frozen(kw_only=True)
class LocalOptions:
    """The local backend's options (``[backends.NAME]`` with ``kind = "local"``)."""

    root: str | None = None  # the job directory (default: the state directory's local/)
    kill_grace: float = field(default=5.0, validator=_seconds)  # seconds SIGTERM -> SIGKILL


def make_backend(config: BackendConfig) -> LocalBackend:
    if config.host is not None:
        raise ConfigError(
            f"backend {config.name!r}: the local backend runs processes on this machine; "
            "it takes no host"
        )
    options = structure_options(LocalOptions, config.options, where=f"backend {config.name!r}")
    return LocalBackend(name=config.name, root=options.root, kill_grace=options.kill_grace)


def output_location(question: OutputQuestion) -> str | None:
    """Where a local job's output is: its spec's file, else its job directory's."""
    where = f"backend {question.config.name!r}"
    options = structure_options(LocalOptions, question.config.options, where=where)
    backend = LocalBackend(name=question.config.name, root=options.root)
    out, err = backend.output_paths(question.native_id)
    return str(err if question.stderr else out)


BACKEND: Final = BackendInfo(
    name="local",
    api_version=API_VERSION,
    version="0.1.0",
    description="jobs as supervised local processes (lossless wait status)",
    capabilities=CAPABILITIES,
    make_backend=make_backend,
    options_type=LocalOptions,
    output_location=output_location,
    resources=frozenset({"time_limit"}),  # a local process has a time limit, nothing else
)
