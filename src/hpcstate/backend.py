"""The backend protocol (API version :data:`API_VERSION`).

A backend is two parts:

* a pure **dialect**: builds commands (or requests) and parses the answers into
  :class:`~hpcstate.Observation` records. No I/O, no clock: time comes in as
  ``observed_at``. This is where all the scheduler knowledge lives, and it is what
  golden files and the conformance suite test.
* thin **I/O**: :class:`Backend` is what the tracker calls. CLI schedulers (Slurm,
  Flux, PBS...) get it for free from ``hpcstate.runtime.CommandBackend(dialect,
  runner)``; API schedulers (Kubernetes) implement it directly.

Every method that reads the scheduler takes *many* ids and makes *one* call, so a
tracker's load does not grow with the number of jobs it tracks.

Optional abilities are **declared, not probed**: a backend sets a flag in its
:class:`Capabilities` and implements the matching protocol; the tracker, the CLI and the
registry ask :func:`abilities` for the backend typed as that protocol (or None). A flag
declared without its methods is refused with :class:`BackendContractError`.

* ``idempotent_submit``: :class:`SubmissionFinder` (``find_submission``)
* ``push``: :class:`Watching` (``watch``)
* ``report_files``: :class:`ReportFiles` (``reports_itself``, ``read_text_files``)
* ``output``: :class:`OutputReader` (``read_output``)
* ``shares_facts``: :class:`SharesFacts` (``facts``, ``adopt_facts``)
* ``host_local``: :class:`HostLocal` (``lease_scope``)

``self_report`` (running jobs report their own end) needs ``report_files`` (a report
file the tracker reads) or ``host_local`` (a report into the store).
"""

from __future__ import annotations

import os
import re
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, Final, Protocol, runtime_checkable

from attrs import field, frozen

from ._errors import ConfigError, ParseError
from ._exit import ExitStatus, signal_name
from ._model import Observation

#: Bumped when the Backend/Dialect protocol changes incompatibly. A plugin declares the
#: version it implements in its BackendInfo; the registry refuses a mismatch.
API_VERSION: Final = 1


def _tuple(value: Sequence[str]) -> tuple[str, ...]:
    if isinstance(value, str):
        raise TypeError("expected a sequence of strings (argv), got a single string")
    return tuple(value)


def _mapping(value: Mapping[str, str]) -> Mapping[str, str]:
    return dict(value)


def _refuse_nul(what: str, value: object) -> None:
    # Only text can hold a NUL: an option may be a TOML integer, a path a Path.
    text = os.fspath(value) if isinstance(value, os.PathLike) else value
    if isinstance(text, str) and "\0" in text:
        raise ValueError(
            f"{what} contains a NUL byte at offset {text.index(chr(0))} ({text!r}): no "
            "program can receive one (argv, environment and file names end at NUL); "
            "refused before anything runs"
        )


def _refuse_nul_in(what: str, values: Sequence[str]) -> None:
    for i, value in enumerate(values):
        _refuse_nul(f"{what}[{i}]", value)


def _refuse_nul_in_mapping(what: str, values: Mapping[str, str]) -> None:
    for key, value in values.items():
        _refuse_nul(f"{what} name", key)
        _refuse_nul(f"{what}[{key!r}]", value)


@frozen(kw_only=True)
class JobSpec:
    """What to run and with which resources. Backends ignore what they cannot express
    and say so in :class:`Capabilities`; ``options`` carries backend-specific settings
    (``image`` for Kubernetes, ``urgency`` for Flux...) and ``extra_args`` raw flags."""

    command: tuple[str, ...] = field(default=(), converter=_tuple)  # argv of the payload
    script: str | None = None  # a batch script's text (instead of command)
    script_path: str | None = None  # a batch script on the job's side
    name: str = ""
    time_limit: timedelta | None = None
    memory_bytes: int | None = None
    cpus: int | None = None
    tasks: int | None = None
    nodes: int | None = None
    partition: str | None = None
    account: str | None = None
    array: str | None = None  # "1-10%2", "0,3,5-7"
    environment: Mapping[str, str] = field(factory=dict, converter=_mapping)
    working_directory: str | None = None
    stdout: str | None = None
    stderr: str | None = None
    dependencies: tuple[str, ...] = field(default=(), converter=_tuple)
    extra_args: tuple[str, ...] = field(default=(), converter=_tuple)
    options: Mapping[str, str] = field(factory=dict, converter=_mapping)
    tag: str = ""  # idempotency tag: lets a retried submit find the job it already created

    def __attrs_post_init__(self) -> None:
        given = [x for x in (self.command, self.script, self.script_path) if x]
        if len(given) != 1:
            raise ValueError("a JobSpec needs exactly one of command, script, script_path")
        # A NUL cannot reach a payload: refuse it here, naming the field, rather than
        # as a job that "failed with 126" or a transport that "lost the connection".
        _refuse_nul_in("JobSpec command", self.command)
        for name in (
            "script",
            "script_path",
            "name",
            "partition",
            "account",
            "array",
            "working_directory",
            "stdout",
            "stderr",
            "tag",
        ):
            _refuse_nul(f"JobSpec {name}", getattr(self, name))
        _refuse_nul_in_mapping("JobSpec environment", self.environment)
        _refuse_nul_in("JobSpec dependencies", self.dependencies)
        _refuse_nul_in("JobSpec extra_args", self.extra_args)
        _refuse_nul_in_mapping("JobSpec options", self.options)


@frozen(kw_only=True)
class Command:
    """One command to run on the scheduler's side, as argv (never a shell string)."""

    argv: tuple[str, ...] = field(converter=_tuple)
    env: Mapping[str, str] = field(factory=dict, converter=_mapping)  # set these
    unset_env: tuple[str, ...] = field(default=(), converter=_tuple)  # remove these (prefixes
    # ending in "*" remove every variable that starts with the prefix)
    stdin: str | None = None
    timeout: float = 60.0

    def __attrs_post_init__(self) -> None:
        _refuse_nul_in("Command argv", self.argv)
        _refuse_nul_in_mapping("Command env", self.env)


@frozen(kw_only=True)
class CommandResult:
    """What a command printed and how it ended. ``returncode`` None means it timed out."""

    argv: tuple[str, ...] = field(converter=_tuple)
    returncode: int | None
    stdout: str = ""
    stderr: str = ""

    @property
    def command_line(self) -> str:
        return " ".join(self.argv)


@frozen(kw_only=True)
class Capabilities:
    """What a backend can do; the conformance suite and the tracker read these."""

    array_jobs: bool = False
    steps: bool = False  # reports per-step exit statuses (Slurm srun steps)
    lossless_signals: bool = False  # can tell "killed by signal N" from "exit 128+N"
    accounting: bool = False  # a separate accounting source confirms verdicts after the queue
    cancel: bool = True
    requeue: bool = False  # the same id may run again (NODE_FAIL/PREEMPTED + requeue)
    adopt: bool = True  # can track a job submitted by other means, by its native id
    push: bool = False  # offers a stream of changes (Watching: watch), not just snapshots
    # Running jobs report their own end: into a report file the tracker reads
    # (needs report_files), or into the store (needs host_local).
    self_report: bool = False
    # A lost submit answer is looked up by the JobSpec's tag (SubmissionFinder).
    idempotent_submit: bool = False
    report_files: bool = False  # reads small files on the jobs' side (ReportFiles)
    output: bool = False  # reads the end of a job's output (OutputReader)
    shares_facts: bool = False  # what it learned about its scheduler can be reused (SharesFacts)
    host_local: bool = False  # jobs are processes of this host (HostLocal)


@frozen(kw_only=True)
class Submission:
    """A scheduler's answer to a submit: its id for the job (the array's id for arrays)."""

    native_id: str
    array_task_ids: tuple[str, ...] = ()  # native ids of the tasks, when known at submit
    submitted_at: datetime | None = None


@frozen(kw_only=True)
class AccountingQuery:
    """One accounting question for many jobs: their ids and the earliest submit time,
    so the query window is bounded (never "since midnight", never a recycled id's past)."""

    native_ids: tuple[str, ...] = field(converter=_tuple)
    submitted_after: datetime | None = None


class Dialect(Protocol):
    """The pure half of a CLI backend. Parsers return records or raise ParseError."""

    def submit_command(self, spec: JobSpec) -> Command: ...

    def parse_submit(self, result: CommandResult, spec: JobSpec) -> Submission: ...

    def queue_command(self, native_ids: Sequence[str]) -> Command: ...

    def parse_queue(
        self, result: CommandResult, *, native_ids: Sequence[str], observed_at: datetime
    ) -> Sequence[Observation]: ...

    def accounting_command(self, query: AccountingQuery) -> Command | None: ...

    def parse_accounting(
        self, result: CommandResult, *, query: AccountingQuery, observed_at: datetime
    ) -> Sequence[Observation]: ...

    def cancel_command(self, native_ids: Sequence[str]) -> Command: ...

    def check_cancel(self, result: CommandResult) -> None: ...

    def find_submission_command(self, tag: str) -> Command | None: ...

    def parse_find_submission(self, result: CommandResult, tag: str) -> Submission | None: ...

    def is_transient(self, result: CommandResult) -> bool: ...


class Runner(Protocol):
    """Runs a Command where the scheduler is (locally, over SSH...)."""

    async def run(self, command: Command) -> CommandResult: ...

    async def close(self) -> None: ...


@runtime_checkable
class Backend(Protocol):
    """What the tracker calls. Every read takes many ids and makes one scheduler call.

    ``queue`` and ``accounting`` return one Observation per asked id (absent ids get
    an Observation with ``absence`` set); transient errors raise SchedulerUnavailable
    or TransportError and never become observations.
    """

    name: str
    capabilities: Capabilities

    async def submit(self, spec: JobSpec) -> Submission: ...

    async def queue(self, native_ids: Sequence[str]) -> Sequence[Observation]: ...

    async def accounting(self, query: AccountingQuery) -> Sequence[Observation]: ...

    async def cancel(self, native_ids: Sequence[str]) -> None: ...

    async def close(self) -> None: ...


@frozen(kw_only=True)
class OutputSnapshot:
    """The end of a job's output (its last lines) and when the output last grew."""

    tail: tuple[str, ...]
    last_output_at: datetime | None
    size: int


# -- optional abilities: each declared by a Capabilities flag -------------------------


@runtime_checkable
class SubmissionFinder(Protocol):
    """``idempotent_submit``: a backend that can find the job a lost submit answer
    already created (by the JobSpec's tag). The tracker uses it before ever submitting
    again."""

    async def find_submission(self, tag: str) -> Submission | None: ...


@runtime_checkable
class Watching(Protocol):
    """``push``: a backend that can push changes (Kubernetes watches, local processes)."""

    def watch(self, native_ids: Sequence[str]) -> AsyncIterator[Observation]: ...


#: The older name of :class:`Watching`.
WatchingBackend = Watching


@runtime_checkable
class ReportFiles(Protocol):
    """``report_files``: reads small files on the jobs' side (self-report files), many
    in one call. With ``self_report`` too, running jobs write such a file at their end."""

    def reports_itself(self, spec: JobSpec) -> bool:
        """True when the job built from ``spec`` writes its own report file at its end."""
        ...

    async def read_text_files(self, paths: Sequence[str]) -> Mapping[str, str]:
        """The contents of those files that exist (missing ones are left out)."""
        ...


@runtime_checkable
class OutputReader(Protocol):
    """``output``: reads the end of a job's output file (for output checks)."""

    async def read_output(
        self, native_id: str, path: str | None, lines: int
    ) -> OutputSnapshot | None: ...


@runtime_checkable
class SharesFacts(Protocol):
    """``shares_facts``: what the backend learned about its scheduler (e.g.
    ``{"slurm_version": "22.05.11"}``) that another process can reuse instead of asking
    again. ``facts()`` is empty until something is learned; ``adopt_facts`` ignores
    unknown keys and never raises on a bad value (it just does not adopt it)."""

    def facts(self) -> Mapping[str, str]: ...

    def adopt_facts(self, facts: Mapping[str, str]) -> None: ...


@runtime_checkable
class HostLocal(Protocol):
    """``host_local``: jobs are processes of this host. ``lease_scope()`` names the host
    and place they live in (e.g. ``"login1:/home/u/.local/state/hpcstate/local"``): the
    tracker's lease for such a backend is ``"<name>@<scope>"``, and it gives such jobs
    the store to report into instead of a report file."""

    def lease_scope(self) -> str: ...


class BackendContractError(ConfigError):
    """A backend declares an ability (a :class:`Capabilities` flag) without the methods
    that implement it. A ConfigError: the CLI reports it (exit 78) naming the backend,
    the flag and the missing method; the plugin, not the user's file, needs fixing."""


#: flag -> the methods that implement it (see the table in the module docstring).
ABILITY_METHODS: Final[Mapping[str, tuple[str, ...]]] = {
    "idempotent_submit": ("find_submission",),
    "push": ("watch",),
    "report_files": ("reports_itself", "read_text_files"),
    "output": ("read_output",),
    "shares_facts": ("facts", "adopt_facts"),
    "host_local": ("lease_scope",),
}


@frozen(kw_only=True)
class Abilities:
    """A backend's optional abilities: each field is the backend itself, typed as that
    protocol, when its Capabilities flag is declared, else None."""

    finder: SubmissionFinder | None = None
    watcher: Watching | None = None
    report_files: ReportFiles | None = None
    output: OutputReader | None = None
    facts: SharesFacts | None = None
    host_local: HostLocal | None = None


def check_abilities(
    name: str, capabilities: Capabilities, backend: object, *, plugin: str | None = None
) -> None:
    """Raise BackendContractError if a declared flag's methods are missing on ``backend``
    (or ``self_report`` is declared without ``report_files`` or ``host_local``)."""
    what = (
        type(backend).__name__ if plugin is None else f"plugin {plugin!r}, {type(backend).__name__}"
    )
    for flag, methods in ABILITY_METHODS.items():
        if not getattr(capabilities, flag):
            continue
        for method in methods:
            if not callable(getattr(backend, method, None)):
                raise BackendContractError(
                    f"backend {name!r} ({what}) declares {flag}=True but "
                    f"has no {method}() method; implement it or declare {flag}=False"
                )
    if capabilities.self_report and not (capabilities.report_files or capabilities.host_local):
        raise BackendContractError(
            f"backend {name!r} ({what}) declares self_report=True without "
            "report_files or host_local: its jobs' reports could not be read"
        )


def abilities(backend: Backend) -> Abilities:
    """The optional abilities ``backend`` declares, each typed as its protocol.

    Raises BackendContractError (naming backend, flag and method) when a flag is
    declared without its methods. Cheap: a few attribute lookups.
    """
    capabilities = backend.capabilities
    check_abilities(getattr(backend, "name", "?"), capabilities, backend)
    it: Any = backend  # checked above: each declared flag's methods exist
    return Abilities(
        finder=it if capabilities.idempotent_submit else None,
        watcher=it if capabilities.push else None,
        report_files=it if capabilities.report_files else None,
        output=it if capabilities.output else None,
        facts=it if capabilities.shares_facts else None,
        host_local=it if capabilities.host_local else None,
    )


@frozen(kw_only=True)
class BackendConfig:
    """How a user configured one backend instance (from the TOML file or arguments)."""

    name: str
    kind: str
    host: str | None = None  # SSH target; None means local
    options: Mapping[str, Any] = field(factory=dict)


def expand_output_pattern(path: str, native_id: str, array_index: int | None = None) -> str:
    """An output-file pattern for one job: ``%j`` the job's id, ``%A`` the array's id (the
    id before ``_``), ``%a`` the task index (empty when not an array task), ``%%`` a ``%``.
    The one copy of this rule (``hpcstate logs`` and ``CommandBackend.read_output`` use it)."""
    array_id = native_id.split("_", 1)[0]
    return (
        path.replace("%%", "\0")
        .replace("%j", native_id)
        .replace("%A", array_id)
        .replace("%a", "" if array_index is None else str(array_index))
        .replace("\0", "%")
    )


@frozen(kw_only=True)
class OutputQuestion:
    """Where did this job's stdout (``stderr``: its error stream) go, on the job's side?
    Asked of :attr:`BackendInfo.output_location` (by ``hpcstate logs``)."""

    config: BackendConfig
    spec: JobSpec | None  # as submitted; None for a job adopted by its id
    native_id: str
    array_index: int | None = None
    stderr: bool = False


#: The portable resource requests of a JobSpec (``hpcstate submit -t/--mem/-c/-n/-N/-G``;
#: "gpus" travels in ``JobSpec.options["gpus"]``): what ``BackendInfo.resources`` names.
PORTABLE_RESOURCES: Final = frozenset(
    {"time_limit", "memory_bytes", "cpus", "tasks", "nodes", "gpus"}
)


@frozen(kw_only=True)
class ExitReading:
    """One interpretation of an exit value (``hpcstate decode``): the status it says
    (None: the job never ended with one), a one-line summary, what it says for sure and,
    separately, what stays ambiguous."""

    label: str  # what the value was read as: "a Slurm ExitCode (code:signal)"
    status: ExitStatus | None
    summary: str
    known: tuple[str, ...] = ()
    ambiguous: tuple[str, ...] = ()


@frozen(kw_only=True)
class ExitForm:
    """A form of exit value a scheduler shows, declared in ``BackendInfo.exit_forms``
    under its name (``hpcstate decode --from NAME``).

    ``read`` is pure: the value's text (stripped) to one reading, or ParseError naming
    what is wrong. ``claims`` says whether a value of unknown origin has this form's
    shape (``decode`` without ``--from``; None: only read when asked by name);
    ``shape`` names that shape for the error when no form claims a value.
    ``integers``: the claimed values are plain integers (a negative returncode), so
    they are tried after the forms of other shapes and named after the plain exit code
    and wait status."""

    read: Callable[[str], ExitReading]
    claims: Callable[[str], bool] | None = None
    shape: str = ""
    integers: bool = False


_INTEGER: Final = re.compile(r"\A-?[0-9]{1,12}\Z")
# Where shells put "killed by signal N": 128+N for N up to the last real-time signal.
SIGNAL_CODES: Final = range(129, 128 + 64 + 1)


def exit_code_notes(code: int, *, who: str) -> tuple[list[str], list[str]]:
    """What a plain exit code says by shell conventions, for an :class:`ExitReading`:
    (known, ambiguous); ``who`` exited ("the container's main process")."""
    known: list[str] = []
    doubts: list[str] = []
    if code == 0:
        known.append(f"{who} exited 0: success")
    else:
        known.append(f"{who} exited normally with code {code}; no signal ended it")
    if code in SIGNAL_CODES:
        sig = code - 128
        doubts.append(
            f"{code} = 128+{sig}: a shell reports a child killed by {signal_name(sig)} ({sig}) "
            f"as {code}, and a program may also exit {code} itself; nothing here says which"
        )
    elif code == 126:
        known.append("126 is the shells' code for a command found but not executable")
    elif code == 127:
        known.append("127 is the shells' code for a command not found")
    elif code == 124:
        doubts.append("124 is also what GNU timeout(1) exits with when its command timed out")
    elif code == 255:
        doubts.append("255 is also what ssh exits with on a connection error, and exit(-1)")
    return known, doubts


def exit_integer(text: str, form: str) -> int:
    """``text`` as an integer of at most 12 digits, or ParseError naming ``--from form``."""
    if not _INTEGER.match(text):
        raise ParseError(f"expected an integer for --from {form}", field="value", line=text)
    return int(text)


def exit_code(text: str, form: str) -> int:
    """``text`` as an exit code 0..255, or ParseError."""
    number = exit_integer(text, form)
    if not 0 <= number <= 255:
        raise ParseError(
            f"an exit code is 0..255 (for a raw wait status use --from wait), got {number}",
            field="value",
        )
    return number


@frozen(kw_only=True)
class BackendInfo:
    """What a plugin's entry point names. ``make_backend`` does the imports that need
    optional dependencies, so listing backends never imports them."""

    name: str
    api_version: int
    version: str
    description: str
    capabilities: Capabilities
    make_backend: Callable[[BackendConfig], Backend]
    make_dialect: Callable[[], Dialect] | None = None
    requires: tuple[str, ...] = ()  # importable module names the backend needs
    install_hint: str = ""  # e.g. "pip install 'hpcstate[k8s]'"
    # The frozen attrs record of its options (fields with defaults): the config file's
    # [backends.NAME] table is structured into it when loaded (hpcstate.options), so a
    # wrong or unknown key is refused naming the file and key before anything is made.
    options_type: type | None = None
    # Where a job's output went when the backend decides it (its own job directory, its
    # scheduler's default file when the JobSpec names none): the path itself, patterns
    # expanded; None: the JobSpec's stdout/stderr, relative to its working directory.
    output_location: Callable[[OutputQuestion], str | None] | None = None
    # The portable resource requests (PORTABLE_RESOURCES) its submit expresses; the CLI
    # refuses the others up front, naming the backend. None: it takes every request and
    # decides itself (the default, for a plugin that does not say).
    resources: frozenset[str] | None = None
    # The forms of exit value its scheduler shows, by name (``hpcstate decode --from
    # NAME``): each a pure reader from text to an ExitReading.
    exit_forms: Mapping[str, ExitForm] = field(factory=dict)


__all__ = [
    "ABILITY_METHODS",
    "API_VERSION",
    "PORTABLE_RESOURCES",
    "SIGNAL_CODES",
    "Abilities",
    "AccountingQuery",
    "Backend",
    "BackendConfig",
    "BackendContractError",
    "BackendInfo",
    "Capabilities",
    "Command",
    "CommandResult",
    "Dialect",
    "ExitForm",
    "ExitReading",
    "HostLocal",
    "JobSpec",
    "OutputQuestion",
    "OutputReader",
    "OutputSnapshot",
    "ReportFiles",
    "Runner",
    "SharesFacts",
    "Submission",
    "SubmissionFinder",
    "Watching",
    "WatchingBackend",
    "abilities",
    "check_abilities",
    "exit_code",
    "exit_code_notes",
    "exit_integer",
    "expand_output_pattern",
]
