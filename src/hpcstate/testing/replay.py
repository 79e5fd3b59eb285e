"""Replay a recorded timeline: the backend's real commands answered with real output.

A golden test parses one recorded answer at a time. A replay runs the whole path a user
meets, ``Tracker -> Backend -> dialect -> parser -> state machine -> verdict``, with only
the process boundary replaced: :class:`ReplayRunner` is a :class:`~hpcstate.backend.Runner`
that answers each command the backend runs with what the real scheduler printed for the
SAME command, in the order it printed it (pending, running, just ended, purged;
accounting right after the end, then after the purge...).

The recordings are the shared production layout (``shared/fixtures/slurm/
26.05.3-production``, ``shared/fixtures/flux/0.88.0-production``); one case directory::

    <case>/commands.json   [{"file": stem, "utc": ISO time, "argv": [...], "env": {...},
                             "unset_env": [...], "stdin_file": name or null, ...}, ...]
    <case>/<stem>.out/.err/.rc   stdout, stderr (optional), exit status ("timeout": none)
    <case>/case.json       the case: "spec" (the JobSpec as the backend got it), "run_id",
                           "tag", ... (optional)

Matching is exact, as in golden files: a command is answered only by a recorded command
with the same argv, the same ``env`` and ``unset_env``, and the same stdin (its
``stdin_file``'s bytes; none recorded means none sent). Each distinct command has its own
cursor: the first run gets its first recorded answer, the next run the next one, and once
they are used up the last one repeats (a purged job stays purged). A command with no
recorded answer raises :class:`~hpcstate.testing.fakes.UnexpectedCommand` (an
AssertionError) and is kept in :attr:`ReplayRunner.unexpected`, unless a ``fallback``
answers it (for example :func:`files_absent`, for the runtime's self-report read of a case
that recorded none).

A typical replay::

    case = load_recording("tests/golden/slurm/26.05.3-production/exit_3")
    versions = load_recording(".../26.05.3-production/_versions")
    clock = VirtualClock(case.started_at)
    runner = ReplayRunner(versions, case, clock=clock, fallback=files_absent)
    backend = SlurmBackend(name="slurm", runner=runner, capabilities=CAPABILITIES)
    async with Tracker(store=path, backends={"slurm": backend}, clock=clock) as tracker:
        run = await tracker.submit(case.tracker_spec(), backend="slurm", run_id=case.run_id)
        ...
        await tracker.poll_once()

With a ``clock`` (anything with ``now()`` and ``advance(seconds)``, such as
:class:`~hpcstate.testing.simulator.VirtualClock`), answering a command moves the clock
forward to the time that command was recorded at (never back), so times the backend derives
from "now" (an accounting window, say) are the recorded ones.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, Final, Protocol

from attrs import evolve, frozen

from hpcstate.backend import Command, CommandResult, JobSpec

from .fakes import UnexpectedCommand

# One reader of recorded files for golden checks and replays alike.
from .golden import GoldenError, _strings, spec_from_dict
from .golden import _read_rc as _rc
from .golden import _read_text as _text

#: Environment variables the tracker adds to every remote job's spec; a recording's spec
#: holds them, what a user gives the tracker does not.
TRACKER_ENV: Final = ("HPCSTATE_RUN_ID", "HPCSTATE_ITEM_ID", "HPCSTATE_REPORT_FILE")

#: The script of the runtime's self-report read (``CommandBackend.read_text_files``).
_READ_FILES_ARGV: Final = (
    "xargs",
    "-0",
    "sh",
    "-c",
    'for f; do [ -r "$f" ] && { printf "\\036%s\\n" "$f"; cat -- "$f"; }; done; exit 0',
    "sh",
)

Key = tuple[tuple[str, ...], tuple[tuple[str, str], ...], tuple[str, ...], str | None]
Fallback = Callable[[Command], CommandResult | None]


class _Advancing(Protocol):
    def now(self) -> datetime: ...

    def advance(self, seconds: float) -> None: ...


@frozen(kw_only=True)
class RecordedCommand:
    """One recorded command of a case: what ran, when, and what it printed."""

    stem: str
    at: datetime
    argv: tuple[str, ...]
    env: Mapping[str, str]
    unset_env: tuple[str, ...]
    stdin: str | None
    result: CommandResult
    note: str = ""

    @property
    def key(self) -> Key:
        return (self.argv, tuple(sorted(self.env.items())), self.unset_env, self.stdin)


@frozen(kw_only=True)
class RecordedCase:
    """One case directory of a production recording."""

    name: str
    path: Path
    commands: tuple[RecordedCommand, ...]
    #: ``case.json`` as recorded ({} when the case has none).
    info: Mapping[str, Any]

    @property
    def started_at(self) -> datetime:
        """When its first command ran (a replay's clock starts here)."""
        if not self.commands:
            raise GoldenError(f"{self.path}: no recorded command")
        return self.commands[0].at

    @property
    def run_id(self) -> str | None:
        value = self.info.get("run_id")
        return value if isinstance(value, str) else None

    def command(self, stem: str) -> RecordedCommand:
        for command in self.commands:
            if command.stem == stem:
                return command
        known = ", ".join(c.stem for c in self.commands) or "none"
        raise GoldenError(f"{self.path}: no command with stem {stem!r} (known: {known})")

    def stems(self, prefix: str = "") -> list[str]:
        """The stems that start with ``prefix``, in the order they ran."""
        return [c.stem for c in self.commands if c.stem.startswith(prefix)]

    def submitted_spec(self) -> JobSpec:
        """The JobSpec exactly as the backend was given it (``case.json`` ``spec``)."""
        raw = self.info.get("spec")
        if not isinstance(raw, dict):
            raise GoldenError(f"{self.path}/case.json: no 'spec' object")
        return spec_from_dict(raw, f"{self.path}/case.json spec")

    def tracker_spec(self) -> JobSpec:
        """The JobSpec a user gives the tracker for this case: the submitted one without
        what the tracker adds itself (its environment variables and the tag). Submitted
        with ``run_id=case.run_id``, the tracker builds the recorded submit again."""
        spec = self.submitted_spec()
        env = {k: v for k, v in spec.environment.items() if k not in TRACKER_ENV}
        return evolve(spec, environment=env, tag="")


def _entry(path: Path, raw: object, where: str) -> RecordedCommand:
    if not isinstance(raw, dict):
        raise GoldenError(f"{where}: expected an object")
    stem = raw.get("file")
    if not isinstance(stem, str) or not stem:
        raise GoldenError(f"{where}: 'file' must name the output files' stem")
    try:
        at = datetime.fromisoformat(str(raw.get("utc")))
    except ValueError:
        raise GoldenError(f"{where}: 'utc' is not an ISO time: {raw.get('utc')!r}") from None
    if at.utcoffset() is None:
        raise GoldenError(f"{where}: 'utc' has no time zone")
    argv = _strings(raw.get("argv"), f"{where} argv")
    if not argv:
        raise GoldenError(f"{where}: empty argv")
    env_raw = raw.get("env") or {}
    if not isinstance(env_raw, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in env_raw.items()
    ):
        raise GoldenError(f"{where}: 'env' must map names to strings")
    unset = _strings(raw.get("unset_env") or [], f"{where} unset_env")
    stdin_file = raw.get("stdin_file")
    stdin: str | None = None
    if stdin_file is not None:
        if not isinstance(stdin_file, str) or not (path / stdin_file).is_file():
            raise GoldenError(f"{where}: stdin_file {stdin_file!r} is not a file of the case")
        stdin = (path / stdin_file).read_bytes().decode("utf-8")
    result = CommandResult(
        argv=argv,
        returncode=_rc(path / f"{stem}.rc"),
        stdout=_text(path / f"{stem}.out"),
        stderr=_text(path / f"{stem}.err"),
    )
    note = raw.get("note")
    return RecordedCommand(
        stem=stem,
        at=at,
        argv=argv,
        env=dict(env_raw),
        unset_env=unset,
        stdin=stdin,
        result=result,
        note=note if isinstance(note, str) else "",
    )


def load_recording(path: str | Path) -> RecordedCase:
    """Read one case directory of a production recording (its ``commands.json``)."""
    path = Path(path)
    listing = path / "commands.json"
    if not listing.is_file():
        raise GoldenError(f"{path}: no commands.json")
    try:
        doc = json.loads(listing.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise GoldenError(f"{listing}: not JSON: {exc}") from None
    if not isinstance(doc, list):
        raise GoldenError(f"{listing}: expected a list of commands")
    commands = tuple(_entry(path, raw, f"{listing}[{i}]") for i, raw in enumerate(doc))
    info: Mapping[str, Any] = {}
    case_json = path / "case.json"
    if case_json.is_file():
        try:
            loaded = json.loads(case_json.read_text(encoding="utf-8"))
        except ValueError as exc:
            raise GoldenError(f"{case_json}: not JSON: {exc}") from None
        if not isinstance(loaded, dict):
            raise GoldenError(f"{case_json}: expected an object")
        info = loaded
    return RecordedCase(name=path.name, path=path, commands=commands, info=info)


def load_recordings(root: str | Path) -> list[RecordedCase]:
    """Every case directory under ``root`` (those with a commands.json), by name."""
    root = Path(root)
    if not root.is_dir():
        raise GoldenError(f"{root}: not a directory")
    cases = [load_recording(p) for p in sorted(root.iterdir()) if (p / "commands.json").is_file()]
    if not cases:
        raise GoldenError(f"{root}: no case directories (each needs a commands.json)")
    return cases


def files_absent(command: Command) -> CommandResult | None:
    """A fallback answering the runtime's own self-report read with "no such file".

    That command (``xargs -0 sh -c 'for f; do [ -r "$f" ] && ...; done; exit 0' sh``)
    prints nothing and exits 0 when none of the files exists (recorded: slurm
    26.05.3-production ``exit_3/read_text_files``). Any other command: None (unanswered).
    """
    if tuple(command.argv) == _READ_FILES_ARGV and not command.env and not command.unset_env:
        return CommandResult(argv=command.argv, returncode=0)
    return None


def _key(command: Command) -> Key:
    return (
        tuple(command.argv),
        tuple(sorted(command.env.items())),
        tuple(command.unset_env),
        command.stdin,
    )


class ReplayRunner:
    """A Runner answering with recorded output, argv (env, stdin) matched exactly.

    ``cases``: the recordings whose commands may be answered (a case plus shared ones such
    as ``_versions``); when two recorded commands are the same, the earlier case's come
    first. ``clock``: moved forward to each answer's recorded time. ``fallback``: asked
    for a command nothing recorded answers; None from it means unexpected.

    With both a clock and a fallback, a recorded answer is not given BEFORE its time: a
    command asked more than ``early_slack`` seconds before its next answer was recorded
    gets the fallback's answer if it has one (a self-report file read while the job still
    runs: not there yet), and the recorded answer waits for a later run. The commands
    that drive the timeline (the queue, polled in order) have no fallback and are always
    answered, moving the clock.

    After a replay, :attr:`calls` lists every command run, :attr:`answers` which recorded
    command answered it (None: the fallback did), :attr:`unexpected` those nobody could.
    """

    def __init__(
        self,
        *cases: RecordedCase,
        clock: _Advancing | None = None,
        fallback: Fallback | None = None,
        early_slack: float = 1.0,
    ) -> None:
        self.cases = cases
        self.clock = clock
        self.early_slack = early_slack
        self.fallback = fallback
        self._timelines: dict[Key, list[RecordedCommand]] = {}
        for case in cases:
            for recorded in case.commands:
                self._timelines.setdefault(recorded.key, []).append(recorded)
        self._cursor: dict[Key, int] = {}
        self.calls: list[Command] = []
        self.answers: list[RecordedCommand | None] = []
        self.unexpected: list[Command] = []
        self.closed = False

    def recorded(self, command: Command) -> Sequence[RecordedCommand]:
        """Every recorded answer for this exact command, in recorded order."""
        return tuple(self._timelines.get(_key(command), ()))

    def next_answer(self, command: Command) -> RecordedCommand | None:
        """The answer the next run of ``command`` would get (without running it)."""
        timeline = self._timelines.get(_key(command))
        if not timeline:
            return None
        return timeline[min(self._cursor.get(_key(command), 0), len(timeline) - 1)]

    def used(self) -> list[str]:
        """Stems of the recorded commands answered so far, in order (repeats included)."""
        return [answer.stem for answer in self.answers if answer is not None]

    def _early(self, answer: RecordedCommand) -> bool:
        """Asked before the moment it was recorded (by more than ``early_slack`` s)?"""
        if self.clock is None:
            return False
        return (answer.at - self.clock.now()).total_seconds() > self.early_slack

    async def run(self, command: Command) -> CommandResult:
        self.calls.append(command)
        key = _key(command)
        timeline = self._timelines.get(key)
        if timeline:
            index = self._cursor.get(key, 0)
            answer = timeline[min(index, len(timeline) - 1)]
            if self._early(answer):
                result = self.fallback(command) if self.fallback is not None else None
                if result is not None:
                    self.answers.append(None)
                    return result
            self._cursor[key] = index + 1
            self.answers.append(answer)
            if self.clock is not None:
                ahead = (answer.at - self.clock.now()).total_seconds()
                if ahead > 0:
                    self.clock.advance(ahead)
            return evolve(answer.result, argv=command.argv)
        if self.fallback is not None:
            result = self.fallback(command)
            if result is not None:
                self.answers.append(None)
                return result
        self.unexpected.append(command)
        raise UnexpectedCommand(command.argv, [k[0] for k in self._timelines])

    async def close(self) -> None:
        self.closed = True


def argv_of(cases: Iterable[RecordedCase], prefix: str) -> list[tuple[str, ...]]:
    """The recorded argv of every command whose stem starts with ``prefix``."""
    return [c.argv for case in cases for c in case.commands if c.stem.startswith(prefix)]


__all__ = [
    "TRACKER_ENV",
    "RecordedCase",
    "RecordedCommand",
    "ReplayRunner",
    "argv_of",
    "files_absent",
    "load_recording",
    "load_recordings",
]
