"""FakeRunner: a Runner that answers from a table (or golden files) and records calls.

httpx's ``MockTransport`` idea: a dialect is tested through the real ``CommandBackend``
with only the process boundary replaced::

    runner = FakeRunner({
        ("qstat", "-f", "-F", "json", "-x", "*"): CommandResult(argv=["qstat"], returncode=0,
                                                              stdout=QSTAT_JSON),
        "qdel 12.pbs": CommandResult(argv=["qdel"], returncode=0),
    })
    backend = CommandBackend(name="pbs", dialect=PbsDialect(), runner=runner,
                             capabilities=BACKEND.capabilities)

Keys are argv patterns: a tuple whose elements are matched with :func:`fnmatch.fnmatchcase`
(``"*"`` any one argument's text, ``"**"`` as a whole element any run of arguments), or a
string, split with :func:`shlex.split` and matched exactly. Exact keys win over patterns;
patterns are tried in the order given. A value is one result, or a sequence played in
order whose last element then repeats (a job's life: running, then done).

A command that matches nothing raises :class:`UnexpectedCommand` (an AssertionError, so
no retry loop swallows it) showing the argv and what the runner knows.
"""

from __future__ import annotations

import shlex
from collections.abc import Callable, Iterable, Mapping, Sequence
from fnmatch import fnmatchcase
from pathlib import Path

from attrs import evolve

from hpcstate.backend import Command, CommandResult

from .golden import GoldenCase, load_case, load_cases

Pattern = tuple[str, ...]
Response = CommandResult | Sequence[CommandResult]
Handler = Callable[[Command], CommandResult | None]


class UnexpectedCommand(AssertionError):
    """The code under test ran a command the fake was not told about."""

    def __init__(self, argv: Sequence[str], known: Sequence[Pattern]) -> None:
        self.argv = tuple(argv)
        shown = "\n  ".join(shlex.join(p) for p in known[:20]) or "(nothing)"
        more = f"\n  ... and {len(known) - 20} more" if len(known) > 20 else ""
        super().__init__(
            f"FakeRunner got an unexpected command:\n  {shlex.join(self.argv)}\n"
            f"argv: {self.argv!r}\nit knows:\n  {shown}{more}"
        )


def _pattern(key: Pattern | str) -> Pattern:
    if isinstance(key, str):
        return tuple(shlex.split(key))
    return tuple(key)


def _is_pattern(pattern: Pattern) -> bool:
    return any(any(ch in part for ch in "*?[") for part in pattern)


def argv_matches(pattern: Sequence[str], argv: Sequence[str]) -> bool:
    """Whether ``argv`` matches ``pattern`` (fnmatch per element, ``"**"`` for any run)."""
    if not pattern:
        return not argv
    head, rest = pattern[0], pattern[1:]
    if head == "**":
        return any(argv_matches(rest, argv[i:]) for i in range(len(argv) + 1))
    return bool(argv) and fnmatchcase(argv[0], head) and argv_matches(rest, argv[1:])


class FakeRunner:
    """A :class:`hpcstate.backend.Runner` from a table of argv patterns to results.

    ``calls`` lists every Command it got, in order. ``handler`` (optional) is asked
    first and may return None to fall through to the table.
    """

    def __init__(
        self,
        responses: Mapping[Pattern | str, Response] | None = None,
        *,
        handler: Handler | None = None,
    ) -> None:
        self.calls: list[Command] = []
        self.closed = False
        self._handler = handler
        self._table: dict[Pattern, list[CommandResult]] = {}
        self._served: dict[Pattern, int] = {}
        for key, response in (responses or {}).items():
            self.add(key, response)

    # -- building ---------------------------------------------------------------------

    def add(self, key: Pattern | str, response: Response) -> None:
        """Answer commands matching ``key`` with ``response`` (appended if already known)."""
        pattern = _pattern(key)
        if not pattern:
            raise ValueError("an argv pattern needs at least one element")
        results = [response] if isinstance(response, CommandResult) else list(response)
        if not results:
            raise ValueError(f"no result given for {shlex.join(pattern)}")
        self._table.setdefault(pattern, []).extend(results)

    @classmethod
    def from_golden(
        cls, case: GoldenCase | str | Path, *, stems: Iterable[str] | None = None
    ) -> FakeRunner:
        """Answer a case's recorded commands with its recorded results.

        The same argv recorded several times (``squeue`` while running, then after the
        purge) is answered in ``commands.tsv`` order, the last answer repeating. ``stems``
        keeps only those commands, in the order given.
        """
        runner = cls()
        runner.add_golden(case, stems=stems)
        return runner

    @classmethod
    def from_golden_dir(cls, golden_dir: str | Path) -> FakeRunner:
        """Every case of a golden directory in one runner (job ids keep them apart)."""
        runner = cls()
        for case in load_cases(golden_dir):
            runner.add_golden(case)
        return runner

    def add_golden(
        self, case: GoldenCase | str | Path, *, stems: Iterable[str] | None = None
    ) -> None:
        case = case if isinstance(case, GoldenCase) else load_case(case)
        chosen = [case.command(s).stem for s in stems] if stems is not None else None
        for stem in chosen if chosen is not None else [c.stem for c in case.commands]:
            self.add(case.command(stem).argv, case.result(stem))

    # -- Runner -----------------------------------------------------------------------

    def _lookup(self, argv: tuple[str, ...]) -> Pattern | None:
        if argv in self._table:
            return argv
        for pattern in self._table:
            if _is_pattern(pattern) and argv_matches(pattern, argv):
                return pattern
        return None

    async def run(self, command: Command) -> CommandResult:
        self.calls.append(command)
        if self._handler is not None:
            answer = self._handler(command)
            if answer is not None:
                return evolve(answer, argv=command.argv)
        pattern = self._lookup(command.argv)
        if pattern is None:
            raise UnexpectedCommand(command.argv, list(self._table))
        results = self._table[pattern]
        index = self._served.get(pattern, 0)
        self._served[pattern] = index + 1
        return evolve(results[min(index, len(results) - 1)], argv=command.argv)

    async def close(self) -> None:
        self.closed = True

    # -- inspecting -------------------------------------------------------------------

    @property
    def argvs(self) -> list[tuple[str, ...]]:
        """The argv of every call, in order."""
        return [command.argv for command in self.calls]

    def count(self, program: str) -> int:
        """How many calls ran ``program`` (argv[0])."""
        return sum(1 for command in self.calls if command.argv[0] == program)
