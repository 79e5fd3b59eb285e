"""Golden files: recorded (or documented) scheduler output, and what it must parse to.

Layout of one case, the same as ``shared/fixtures/slurm/26.05.3``::

    <golden_dir>/<case>/commands.tsv     stem <TAB> time <TAB> exact command line
    <golden_dir>/<case>/<stem>.out       stdout ("" when missing)
    <golden_dir>/<case>/<stem>.err       stderr ("" when missing)
    <golden_dir>/<case>/<stem>.rc        exit status; "timeout" means the command timed out
    <golden_dir>/<case>/expected.json    hand-written expectations (optional)

``commands*.tsv`` files all count (``commands_pending.tsv``...). A note after the command
line, set off by two spaces and parentheses, is ignored: ``squeue --json  (re-serialized)``.

``expected.json`` is written by hand from what the job did, never copied from a parser's
output::

    {
      "about": "exit 3: the script ran `exit 3`",
      "checks": [
        {"stem": "qsub", "parse": "submit", "spec": {"script": "exit 3", "name": "exit_3"},
         "expect": {"native_id": "101.pbs"}},
        {"stem": "qstat_done", "parse": "queue", "native_ids": ["101.pbs"],
         "expect": {"101.pbs": {"state": "failed", "final": true, "exit": {"code": 3}}}},
        {"stem": "qdel", "parse": "cancel", "native_ids": ["101.pbs"], "expect": "ok"}
      ],
      "scenario": {"spec": {"script": "exit 3", "name": "exit_3"},
                   "verdict": {"state": "failed", "exit": {"code": 3}}}
    }

``parse`` is one of ``submit``, ``queue``, ``accounting``, ``cancel``. The command the
dialect builds for the check must be the recorded one (argv compared element by element).
An observation expectation may name ``state``, ``absence``, ``final``, ``source``,
``exit``, ``derived_exit``, ``restarts``, ``reason``, ``nodes``, ``started_at``,
``finished_at``; unnamed fields are not checked, unknown names are an error. An exit is
``{"code": 3}``, ``{"signal": 9}``, with ``"ambiguous": true`` when the value may not be
exact, or ``null`` for "no exit status".
"""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Final

from attrs import frozen

from hpcstate import ExitStatus, Observation, State
from hpcstate.backend import CommandResult, JobSpec

#: The observed_at golden checks parse with unless a case says otherwise: an odd
#: timezone, so that a parser which drops or replaces the offset is caught.
DEFAULT_OBSERVED_AT: Final = datetime(
    2026, 3, 1, 12, 0, tzinfo=timezone(timedelta(hours=5, minutes=30))
)

PARSE_KINDS: Final = frozenset({"submit", "queue", "accounting", "cancel"})
OBSERVATION_KEYS: Final = frozenset(
    {
        "state",
        "absence",
        "final",
        "source",
        "exit",
        "derived_exit",
        "restarts",
        "reason",
        "nodes",
        "started_at",
        "finished_at",
    }
)
_NOTE = re.compile(r"\s{2,}\(.*\)\s*\Z")


class GoldenError(ValueError):
    """A golden case is malformed; the message names the file and what is wrong."""


@frozen(kw_only=True)
class GoldenCommand:
    """One recorded command: its file stem, when it ran, and its argv."""

    stem: str
    time: str
    argv: tuple[str, ...]


@frozen(kw_only=True)
class Check:
    """One hand-written expectation from ``expected.json``."""

    stem: str
    parse: str
    native_ids: tuple[str, ...] = ()
    spec: JobSpec | None = None
    submitted_after: datetime | None = None
    expect: Any = None


@frozen(kw_only=True)
class Scenario:
    """A job's whole life for :class:`~hpcstate.testing.conformance.BackendConformance`:
    what to submit, and the verdict it must end with.

    ``exit`` is compared when set (an exact expected exit must be matched exactly);
    ``cancel`` cancels the job right after submitting it.
    """

    name: str
    spec: JobSpec
    state: State
    exit: ExitStatus | None = None
    derived_exit: ExitStatus | None = None
    confirmed: bool = True
    cancel: bool = False
    max_polls: int = 50


@frozen(kw_only=True)
class GoldenCase:
    """One case directory: its commands, their recorded results, its expectations."""

    name: str
    path: Path
    commands: tuple[GoldenCommand, ...]
    about: str = ""
    observed_at: datetime = DEFAULT_OBSERVED_AT
    checks: tuple[Check, ...] = ()
    scenario: Scenario | None = None

    def command(self, stem: str) -> GoldenCommand:
        for command in self.commands:
            if command.stem == stem:
                return command
        known = ", ".join(c.stem for c in self.commands) or "none"
        raise GoldenError(f"{self.path}: no command with stem {stem!r} (known: {known})")

    def result(self, stem: str) -> CommandResult:
        """The recorded result of command ``stem``."""
        command = self.command(stem)
        return CommandResult(
            argv=command.argv,
            returncode=_read_rc(self.path / f"{stem}.rc"),
            stdout=_read_text(self.path / f"{stem}.out"),
            stderr=_read_text(self.path / f"{stem}.err"),
        )


def _read_text(path: Path) -> str:
    return path.read_text(encoding="utf-8") if path.exists() else ""


def _read_rc(path: Path) -> int | None:
    if not path.exists():
        raise GoldenError(f"{path}: missing (every recorded command needs its exit status)")
    text = path.read_text(encoding="utf-8").strip()
    if text == "timeout":
        return None
    try:
        return int(text)
    except ValueError:
        raise GoldenError(f"{path}: expected an integer or 'timeout', got {text!r}") from None


def parse_commands_tsv(path: Path) -> list[GoldenCommand]:
    """Read one ``commands*.tsv`` (header ``file time command``)."""
    commands = []
    lines = path.read_text(encoding="utf-8").splitlines()
    for line_no, line in enumerate(lines, start=1):
        if not line.strip() or (line_no == 1 and line.startswith("file\t")):
            continue
        parts = line.split("\t")
        if len(parts) != 3:
            raise GoldenError(f"{path}:{line_no}: expected 3 tab-separated fields: {line!r}")
        stem, time, command_line = parts
        try:
            argv = tuple(shlex.split(_NOTE.sub("", command_line)))
        except ValueError as exc:
            raise GoldenError(f"{path}:{line_no}: cannot split command line: {exc}") from None
        if not argv:
            raise GoldenError(f"{path}:{line_no}: empty command line")
        commands.append(GoldenCommand(stem=stem, time=time, argv=argv))
    return commands


def load_case(path: str | Path) -> GoldenCase:
    """Read one case directory (its ``commands*.tsv`` and optional ``expected.json``)."""
    path = Path(path)
    tsvs = sorted(path.glob("commands*.tsv"), key=lambda p: (p.name != "commands.tsv", p.name))
    if not tsvs:
        raise GoldenError(f"{path}: no commands.tsv")
    commands = [command for tsv in tsvs for command in parse_commands_tsv(tsv)]
    expected_path = path / "expected.json"
    if not expected_path.exists():
        return GoldenCase(name=path.name, path=path, commands=tuple(commands))
    try:
        doc = json.loads(expected_path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise GoldenError(f"{expected_path}: not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise GoldenError(f"{expected_path}: expected a JSON object")
    where = str(expected_path)
    observed_at = (
        _datetime(doc["observed_at"], where) if "observed_at" in doc else DEFAULT_OBSERVED_AT
    )
    checks = tuple(
        _check(raw, f"{where} checks[{i}]") for i, raw in enumerate(doc.get("checks", []))
    )
    known = {c.stem for c in commands}
    for check in checks:
        if check.stem not in known:
            raise GoldenError(f"{where}: check names stem {check.stem!r}, not in commands.tsv")
    scenario = (
        _scenario(path.name, doc["scenario"], f"{where} scenario") if "scenario" in doc else None
    )
    return GoldenCase(
        name=path.name,
        path=path,
        commands=tuple(commands),
        about=str(doc.get("about", "")),
        observed_at=observed_at,
        checks=checks,
        scenario=scenario,
    )


def load_cases(golden_dir: str | Path) -> list[GoldenCase]:
    """Every case under ``golden_dir`` (directories with a commands.tsv), sorted by name."""
    root = Path(golden_dir)
    if not root.is_dir():
        raise GoldenError(f"{root}: not a directory")
    cases = [load_case(p) for p in sorted(root.iterdir()) if (p / "commands.tsv").exists()]
    if not cases:
        raise GoldenError(f"{root}: no case directories (each needs a commands.tsv)")
    return cases


def load_scenarios(golden_dir: str | Path) -> list[Scenario]:
    """The scenarios of every case that has one."""
    return [case.scenario for case in load_cases(golden_dir) if case.scenario is not None]


# -- expected.json ---------------------------------------------------------------------


def _datetime(value: object, where: str) -> datetime:
    if not isinstance(value, str):
        raise GoldenError(f"{where}: expected an ISO 8601 time string, got {value!r}")
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise GoldenError(f"{where}: not an ISO 8601 time: {value!r}") from None
    if parsed.utcoffset() is None:
        raise GoldenError(f"{where}: {value!r} has no timezone (write Z or +HH:MM)")
    return parsed


def _strings(value: object, where: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise GoldenError(f"{where}: expected a list of strings, got {value!r}")
    return tuple(value)


def spec_from_dict(raw: Mapping[str, Any], where: str = "spec") -> JobSpec:
    """A JobSpec from JSON: JobSpec's field names, ``time_limit_s`` for the time limit."""
    values = dict(raw)
    if "time_limit_s" in values:
        values["time_limit"] = timedelta(seconds=float(values.pop("time_limit_s")))
    try:
        return JobSpec(**values)
    except (TypeError, ValueError) as exc:
        raise GoldenError(f"{where}: not a valid JobSpec: {exc}") from None


def exit_from_json(value: object, where: str) -> ExitStatus | None:
    """``{"code": 3}`` / ``{"signal": 9}`` (``"ambiguous": true`` allowed) / ``null``."""
    if value is None:
        return None
    if not isinstance(value, dict) or not set(value) <= {"code", "signal", "ambiguous"}:
        raise GoldenError(f"{where}: expected {{'code': N}} or {{'signal': N}}, got {value!r}")
    ambiguous = "expected ambiguous" if value.get("ambiguous") else None
    try:
        if "code" in value and "signal" not in value:
            return ExitStatus.exited(int(value["code"]), ambiguous=ambiguous)
        if "signal" in value and "code" not in value:
            return ExitStatus.killed(int(value["signal"]))
    except (TypeError, ValueError) as exc:
        raise GoldenError(f"{where}: {exc}") from None
    raise GoldenError(f"{where}: an exit has exactly one of code and signal: {value!r}")


def _check(raw: object, where: str) -> Check:
    if not isinstance(raw, dict):
        raise GoldenError(f"{where}: expected an object")
    unknown = set(raw) - {"stem", "parse", "native_ids", "spec", "submitted_after", "expect"}
    if unknown:
        raise GoldenError(f"{where}: unknown keys {sorted(unknown)}")
    parse = raw.get("parse")
    if parse not in PARSE_KINDS:
        raise GoldenError(f"{where}: 'parse' must be one of {sorted(PARSE_KINDS)}, got {parse!r}")
    stem = raw.get("stem")
    if not isinstance(stem, str):
        raise GoldenError(f"{where}: 'stem' must be a string")
    spec = spec_from_dict(raw["spec"], f"{where} spec") if "spec" in raw else None
    if parse == "submit" and spec is None:
        raise GoldenError(f"{where}: a submit check needs the 'spec' that was submitted")
    native_ids = _strings(raw.get("native_ids", []), f"{where} native_ids")
    if parse != "submit" and not native_ids:
        raise GoldenError(f"{where}: a {parse} check needs 'native_ids'")
    expect = raw.get("expect")
    if parse in ("queue", "accounting"):
        if not isinstance(expect, dict):
            raise GoldenError(f"{where}: 'expect' must map native ids to observations")
        for native_id, fields in expect.items():
            if not isinstance(fields, dict):
                raise GoldenError(f"{where}: expect[{native_id!r}] must be an object")
            bad = set(fields) - OBSERVATION_KEYS
            if bad:
                raise GoldenError(f"{where}: expect[{native_id!r}]: unknown keys {sorted(bad)}")
    submitted_after = (
        _datetime(raw["submitted_after"], f"{where} submitted_after")
        if "submitted_after" in raw
        else None
    )
    return Check(
        stem=stem,
        parse=parse,
        native_ids=native_ids,
        spec=spec,
        submitted_after=submitted_after,
        expect=expect,
    )


def _scenario(name: str, raw: object, where: str) -> Scenario:
    if not isinstance(raw, dict) or "spec" not in raw or "verdict" not in raw:
        raise GoldenError(f"{where}: expected {{'spec': ..., 'verdict': ...}}")
    verdict = raw["verdict"]
    if not isinstance(verdict, dict) or "state" not in verdict:
        raise GoldenError(f"{where}: 'verdict' needs a 'state'")
    try:
        state = State(verdict["state"])
    except ValueError:
        raise GoldenError(f"{where}: unknown state {verdict['state']!r}") from None
    return Scenario(
        name=name,
        spec=spec_from_dict(raw["spec"], f"{where} spec"),
        state=state,
        exit=exit_from_json(verdict.get("exit"), f"{where} exit"),
        derived_exit=exit_from_json(verdict.get("derived_exit"), f"{where} derived_exit"),
        confirmed=bool(verdict.get("confirmed", True)),
        cancel=bool(raw.get("cancel", False)),
        max_polls=int(raw.get("max_polls", 50)),
    )


# -- comparing -------------------------------------------------------------------------


def exit_matches(expected: ExitStatus | None, actual: ExitStatus | None) -> bool:
    """Whether a parsed exit is the expected one (ambiguity must match too)."""
    if expected is None or actual is None:
        return expected is actual
    return (
        expected.code == actual.code
        and expected.signal == actual.signal
        and expected.exact == actual.exact
    )


def observation_mismatches(expected: Mapping[str, Any], obs: Observation) -> list[str]:
    """Sentences naming each field of ``obs`` that differs from ``expected``."""
    problems = []

    def differ(name: str, want: object, got: object) -> None:
        problems.append(f"{obs.native_id}: {name} expected {want!r}, got {got!r}")

    for key, want in expected.items():
        if key == "state":
            got_state = None if obs.state is None else obs.state.value
            if got_state != want:
                differ(key, want, got_state)
        elif key == "absence":
            got_absence = None if obs.absence is None else obs.absence.value
            if got_absence != want:
                differ(key, want, got_absence)
        elif key == "final":
            if obs.final is not want:
                differ(key, want, obs.final)
        elif key == "source":
            if obs.source.value != want:
                differ(key, want, obs.source.value)
        elif key in ("exit", "derived_exit"):
            wanted = exit_from_json(want, key)
            got = obs.stats.exit if key == "exit" else obs.stats.derived_exit
            if not exit_matches(wanted, got):
                differ(key, want, None if got is None else got.describe())
        elif key == "restarts":
            if obs.restarts != want:
                differ(key, want, obs.restarts)
        elif key == "reason":
            got_kind = None if obs.stats.reason is None else obs.stats.reason.kind.value
            if got_kind != want:
                differ(key, want, got_kind)
        elif key == "nodes":
            if list(obs.stats.nodes) != want:
                differ(key, want, list(obs.stats.nodes))
        elif key in ("started_at", "finished_at"):
            got_time = getattr(obs.stats, key)
            wanted_time = None if want is None else _datetime(want, key)
            if got_time != wanted_time:
                differ(key, want, None if got_time is None else got_time.isoformat())
    return problems


def stems_for(case: GoldenCase, kinds: Sequence[str]) -> list[Check]:
    return [check for check in case.checks if check.parse in kinds]
