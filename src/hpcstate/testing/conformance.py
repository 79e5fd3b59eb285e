"""The conformance suite a backend runs in its own tests.

fsspec's mixins plus SQLAlchemy's requirements: subclass, override the REQUIRED fixtures,
and every test of the suite runs against your backend. What the suite expects is read
from the :class:`~hpcstate.backend.Capabilities` your :class:`~hpcstate.backend.BackendInfo`
declares (the object the registry hands to users), so the two cannot drift: a capability
you declare must be shown by your golden files or scenarios, and one you do not declare
is skipped with "declared unsupported" (and must not be claimed by your parsers). The
optional abilities (:func:`hpcstate.backend.abilities`: finding a submission by tag,
watching, report files, output, shared facts, host-local jobs) are checked on the
backend under test: a declared one must work, an undeclared one is never looked up.
Jobs are polled by the reference loop (:class:`~hpcstate.testing.loop.ReferenceLoop`).

A backend's whole test file::

    from pathlib import Path
    import pytest
    from hpcstate.testing.conformance import DialectConformance
    import hpcstate_pbs

    class TestPbsDialect(DialectConformance):
        @pytest.fixture(scope="class")
        @classmethod
        def backend_info(cls): return hpcstate_pbs.BACKEND

        @pytest.fixture(scope="class")
        @classmethod
        def golden_dir(cls): return Path(__file__).parent / "golden"

There is no pytest plugin (no ``pytest11`` entry point): nothing here runs unless a test
module imports it. Needs pytest, pytest-asyncio and hypothesis (``hpcstate[testing]``).
Fixtures are class-scoped where hypothesis uses them (it refuses function-scoped ones).
"""

from __future__ import annotations

import asyncio
import contextlib
import shlex
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, NoReturn

import pytest
from attrs import evolve
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hpcstate import (
    TERMINAL,
    BackendError,
    CommandFailed,
    Event,
    Finished,
    Observation,
    ParseError,
    RunItem,
    SchedulerUnavailable,
    State,
    expand_array_spec,
    registry,
)
from hpcstate.backend import (
    ABILITY_METHODS,
    API_VERSION,
    PORTABLE_RESOURCES,
    AccountingQuery,
    Backend,
    BackendContractError,
    BackendInfo,
    Capabilities,
    Command,
    CommandResult,
    Dialect,
    ExitForm,
    ExitReading,
    JobSpec,
    OutputSnapshot,
    abilities,
)

from . import strategies
from .fakes import UnexpectedCommand
from .golden import (
    Check,
    GoldenCase,
    Scenario,
    exit_matches,
    load_cases,
    observation_mismatches,
)
from .loop import NotSettled, ReferenceLoop

if TYPE_CHECKING:
    from hpcstate.runtime import Clock

__all__ = ["BackendConformance", "DialectConformance", "declaration_problems"]

# Several subclasses (one per backend) run the same inherited test: "differing
# executors" is expected here, and each run draws its own examples.
_FUZZ = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.function_scoped_fixture,
        HealthCheck.differing_executors,
    ],
)
_SHELL_META = set(" \t\n;&|<>()$`\\\"'*?[]#~")


#: The exit-value forms ``hpcstate decode`` reads itself: a backend's form of one of these
#: names would never be used.
_POSIX_FORMS = frozenset({"exit", "wait"})
#: Values (as decode passes them: stripped) every exit form's reader must answer.
_EXIT_SAMPLES = (
    *("0", "1", "137", "255", "256", "35072", "-1", "-9", "-128", "-300"),
    *("0:9", "137:0", "0:125", "", "x", "1e3", "99999999999999999999", "-"),
)


def _exit_form_problems(name: str, form: ExitForm, value: str) -> list[str]:
    """What is wrong with ``form``'s answer to ``value``."""
    problems: list[str] = []
    try:
        reading: object = form.read(value)
    except ParseError:
        pass
    except Exception as exc:
        problems.append(
            f"exit form {name!r}: read({value!r}) raised {type(exc).__name__}: {exc} "
            "(a reader returns an ExitReading or raises ParseError)"
        )
    else:
        if not isinstance(reading, ExitReading):
            problems.append(f"exit form {name!r}: read({value!r}) returned {reading!r}")
        elif not (reading.label and reading.summary):
            problems.append(f"exit form {name!r}: read({value!r}) has no label or summary")
    if form.claims is not None:
        try:
            claimed: object = form.claims(value)
        except Exception as exc:
            problems.append(f"exit form {name!r}: claims({value!r}) raised {exc!r}")
        else:
            if not isinstance(claimed, bool):
                problems.append(f"exit form {name!r}: claims({value!r}) is not a bool")
    return problems


def declaration_problems(info: BackendInfo, values: Iterable[str] = _EXIT_SAMPLES) -> list[str]:
    """What is wrong with what ``info`` declares for the CLI: ``resources`` names only
    portable requests (:data:`~hpcstate.backend.PORTABLE_RESOURCES`); each exit form has
    a name ``hpcstate decode --from`` can take and is not one decode reads itself, a
    reader that returns an ExitReading or raises ParseError for each of ``values``
    (never another exception), a ``claims`` that answers a bool, and a ``shape`` if it
    claims."""
    problems: list[str] = []
    resources: object = info.resources  # as a plugin wrote it, checked here
    if resources is not None:
        if not isinstance(resources, frozenset):
            problems.append(f"resources is a {type(resources).__name__}, not a frozenset")
        unknown = sorted(set(info.resources or ()) - PORTABLE_RESOURCES)
        if unknown:
            problems.append(
                f"resources names {', '.join(unknown)}, which no JobSpec asks for (known: "
                f"{', '.join(sorted(PORTABLE_RESOURCES))})"
            )
    forms: Mapping[str, object] = info.exit_forms
    for name, form in forms.items():
        if not name or name != name.strip() or any(c.isspace() for c in name):
            problems.append(f"exit form name {name!r}: one word, as --from takes it")
        if name in _POSIX_FORMS:
            problems.append(f"exit form {name!r}: hpcstate decode reads that form itself")
        if not isinstance(form, ExitForm):
            problems.append(f"exit form {name!r} is a {type(form).__name__}, not an ExitForm")
            continue
        if form.claims is not None and not form.shape:
            problems.append(f"exit form {name!r} claims values but names no shape")
        for value in values:
            problems += _exit_form_problems(name, form, value)
    return problems


def _required(name: str, what: str) -> NoReturn:
    pytest.fail(
        f"the conformance suite needs the fixture {name!r}: override it in your subclass ({what})",
        pytrace=False,
    )


def _report(problems: Sequence[str], title: str) -> None:
    if problems:
        shown = "\n  ".join(problems[:40])
        more = f"\n  ... and {len(problems) - 40} more" if len(problems) > 40 else ""
        pytest.fail(f"{title}:\n  {shown}{more}", pytrace=False)


def _checks(cases: Iterable[GoldenCase], *kinds: str) -> Iterator[tuple[GoldenCase, Check]]:
    for case in cases:
        for check in case.checks:
            if check.parse in kinds:
                yield case, check


def _query(check: Check) -> AccountingQuery:
    return AccountingQuery(native_ids=check.native_ids, submitted_after=check.submitted_after)


def _parse(
    dialect: Dialect, check: Check, result: CommandResult, observed_at: datetime
) -> Sequence[Observation]:
    if check.parse == "queue":
        return dialect.parse_queue(result, native_ids=check.native_ids, observed_at=observed_at)
    return dialect.parse_accounting(result, query=_query(check), observed_at=observed_at)


def _expected_command(dialect: Dialect, check: Check) -> Command | None:
    if check.parse == "submit":
        assert check.spec is not None
        return dialect.submit_command(check.spec)
    if check.parse == "queue":
        return dialect.queue_command(check.native_ids)
    if check.parse == "accounting":
        return dialect.accounting_command(_query(check))
    return dialect.cancel_command(check.native_ids)


def _soundness(obs: Observation, observed_at: datetime) -> list[str]:
    """What is wrong with an observation whatever the scheduler said."""
    problems = []
    who = obs.native_id
    if obs.observed_at != observed_at or obs.observed_at.utcoffset() != observed_at.utcoffset():
        problems.append(f"{who}: observed_at {obs.observed_at} is not the {observed_at} passed in")
    for name in ("submitted_at", "started_at", "finished_at"):
        value = getattr(obs.stats, name)
        if value is not None and value.utcoffset() is None:
            problems.append(f"{who}: stats.{name} is naive")
    if obs.final and obs.state not in TERMINAL:
        problems.append(f"{who}: final=True on non-terminal state {obs.state}")
    exit_ = obs.stats.exit
    if obs.state is State.COMPLETED and exit_ is not None and exit_.exact and not exit_.success:
        problems.append(f"{who}: COMPLETED with {exit_.describe()}")
    if obs.restarts is not None and obs.restarts < 0:
        problems.append(f"{who}: negative restarts {obs.restarts}")
    return problems


# ======================================================================================
# The pure half
# ======================================================================================


class DialectConformance:
    """Tests of a pure Dialect against its golden files. Subclass it.

    REQUIRED fixtures (class-scoped): ``backend_info`` (your BackendInfo) and
    ``golden_dir`` (see :mod:`hpcstate.testing.golden` for the layout). Optional:
    ``dialect`` (default ``backend_info.make_dialect()``).
    """

    # -- fixtures ---------------------------------------------------------------------

    @pytest.fixture(scope="class")
    @classmethod
    def backend_info(cls) -> BackendInfo:
        _required("backend_info", "return your package's BACKEND")

    @pytest.fixture(scope="class")
    @classmethod
    def golden_dir(cls) -> Path:
        _required("golden_dir", "return the directory holding your golden cases")

    @pytest.fixture(scope="class")
    @classmethod
    def dialect(cls, backend_info: BackendInfo) -> Dialect:
        if backend_info.make_dialect is None:
            _required("dialect", "your BackendInfo has no make_dialect")
        return backend_info.make_dialect()

    @pytest.fixture(scope="class")
    @classmethod
    def capabilities(cls, backend_info: BackendInfo) -> Capabilities:
        return backend_info.capabilities

    @pytest.fixture(scope="class")
    @classmethod
    def golden_cases(cls, golden_dir: Path) -> list[GoldenCase]:
        return load_cases(golden_dir)

    # -- the plugin -------------------------------------------------------------------

    def test_backend_info_is_sound(self, backend_info: BackendInfo) -> None:
        assert isinstance(backend_info, BackendInfo)
        assert backend_info.api_version == API_VERSION, (
            f"BackendInfo.api_version is {backend_info.api_version}; this hpcstate speaks "
            f"backend API v{API_VERSION}"
        )
        assert backend_info.name, "BackendInfo.name: the name users configure"
        assert backend_info.name == backend_info.name.strip()
        assert backend_info.version, "BackendInfo.version: your distribution's version"
        assert isinstance(backend_info.capabilities, Capabilities)

    def test_backend_info_is_registered(self, backend_info: BackendInfo) -> None:
        """The entry point in group ``hpcstate.backends`` names this very BackendInfo."""
        try:
            loaded = registry.load(backend_info.name)
        except LookupError as exc:
            pytest.fail(
                f"registry.load({backend_info.name!r}) failed: {exc}. Declare the entry "
                f'point ([project.entry-points."hpcstate.backends"] {backend_info.name} = '
                f'"yourpackage:BACKEND") and install the distribution (pip install -e .)',
                pytrace=False,
            )
        assert loaded == backend_info, "the registered BackendInfo is another object"

    def test_declarations_are_sound(self, backend_info: BackendInfo) -> None:
        """``resources`` names portable requests only; each exit form reads its samples
        to an ExitReading or raises ParseError (:func:`declaration_problems`)."""
        _report(declaration_problems(backend_info), "BackendInfo declarations")

    @_FUZZ
    @given(value=st.text(max_size=24))
    def test_exit_forms_read_or_raise_parse_error(
        self, backend_info: BackendInfo, value: str
    ) -> None:
        problems: list[str] = []
        for name, form in backend_info.exit_forms.items():
            problems += _exit_form_problems(name, form, value.strip())
        assert not problems, problems

    # -- golden files -----------------------------------------------------------------

    def test_golden_cases_have_expectations(self, golden_cases: list[GoldenCase]) -> None:
        with_checks = [case for case in golden_cases if case.checks]
        assert with_checks, "no golden case has an expected.json with checks: nothing is tested"

    def test_dialect_builds_the_recorded_commands(
        self, dialect: Dialect, golden_cases: list[GoldenCase]
    ) -> None:
        problems = []
        for case, check in _checks(golden_cases, "submit", "queue", "accounting", "cancel"):
            command = _expected_command(dialect, check)
            recorded = case.command(check.stem).argv
            if command is None:
                problems.append(f"{case.name}/{check.stem}: the dialect builds no command")
            elif command.argv != recorded:
                problems.append(
                    f"{case.name}/{check.stem}: dialect builds {shlex.join(command.argv)}; "
                    f"recorded {shlex.join(recorded)}"
                )
        _report(problems, "commands differ from the recorded ones")

    def test_golden_outputs_parse_to_the_expected(
        self, dialect: Dialect, golden_cases: list[GoldenCase]
    ) -> None:
        problems: list[str] = []
        for case in golden_cases:
            for check in case.checks:
                where = f"{case.name}/{check.stem}"
                result = case.result(check.stem)
                try:
                    problems += [
                        f"{where}: {p}" for p in self._golden_check(dialect, case, check, result)
                    ]
                except (ParseError, BackendError) as exc:
                    problems.append(f"{where}: raised {type(exc).__name__}: {exc}")
        _report(problems, "golden outputs do not parse to the hand-written expectations")

    @staticmethod
    def _golden_check(
        dialect: Dialect, case: GoldenCase, check: Check, result: CommandResult
    ) -> list[str]:
        if check.parse == "submit":
            assert check.spec is not None
            submission = dialect.parse_submit(result, check.spec)
            expect = check.expect or {}
            problems = []
            if "native_id" in expect and submission.native_id != expect["native_id"]:
                problems.append(
                    f"native_id {submission.native_id!r}, expected {expect['native_id']!r}"
                )
            if (
                "array_task_ids" in expect
                and list(submission.array_task_ids) != expect["array_task_ids"]
            ):
                problems.append(f"array_task_ids {submission.array_task_ids!r}")
            return problems
        if check.parse == "cancel":
            try:
                dialect.check_cancel(result)
                outcome = "ok"
            except (CommandFailed, SchedulerUnavailable, ParseError) as exc:
                outcome = "error"
                detail = str(exc)
            if outcome != check.expect:
                return [
                    f"cancel check says {outcome}, expected {check.expect!r}"
                    + (f" ({detail})" if outcome == "error" else "")
                ]
            return []
        observations = _parse(dialect, check, result, case.observed_at)
        problems = []
        by_id = {obs.native_id: obs for obs in observations}
        for native_id, fields in check.expect.items():
            if native_id not in by_id:
                problems.append(f"no observation of {native_id}")
                continue
            problems += observation_mismatches(fields, by_id[native_id])
        return problems

    def test_one_observation_per_asked_id(
        self, dialect: Dialect, golden_cases: list[GoldenCase]
    ) -> None:
        """Exactly one Observation per asked id, in any order; ids the output does not
        mention (taken from other cases) come back with ``absence`` set, or the parser
        raises ParseError/BackendError naming them (it must never invent a state)."""
        all_ids = sorted(
            {i for _, c in _checks(golden_cases, "queue", "accounting") for i in c.native_ids}
        )
        problems = []
        for case, check in _checks(golden_cases, "queue", "accounting"):
            result = case.result(check.stem)
            text = result.stdout + result.stderr
            strangers = [i for i in all_ids if i not in check.native_ids and i not in text][:3]
            for asked in (check.native_ids, (*check.native_ids, *strangers)):
                widened = Check(
                    stem=check.stem,
                    parse=check.parse,
                    native_ids=tuple(asked),
                    submitted_after=check.submitted_after,
                    expect=check.expect,
                )
                where = f"{case.name}/{check.stem} asked {list(asked)}"
                try:
                    observations = _parse(dialect, widened, result, case.observed_at)
                except (ParseError, BackendError) as exc:
                    # Refusing to answer for ids the output does not mention is also
                    # honest (a backend without separate accounting cannot call them
                    # absent), as long as the error names them.
                    named = bool(strangers) and all(s in str(exc) for s in strangers)
                    if asked == check.native_ids or not named:
                        problems.append(f"{where}: raised {type(exc).__name__}: {exc}")
                    continue
                got = sorted(obs.native_id for obs in observations)
                if got != sorted(asked):
                    problems.append(f"{where}: got observations of {got}")
                problems.extend(
                    f"{where}: {obs.native_id} is not in the output, yet is {obs.state}"
                    for obs in observations
                    if obs.native_id in strangers and obs.absence is None
                )
        _report(problems, "queue/accounting parsers must answer each asked id exactly once")

    def test_observations_are_sound(self, dialect: Dialect, golden_cases: list[GoldenCase]) -> None:
        """observed_at is the one passed in (offset kept), no naive datetimes, final only
        on verdicts, COMPLETED never with an exact non-zero exit."""
        problems = []
        for case, check in _checks(golden_cases, "queue", "accounting"):
            odd = datetime(2031, 7, 4, 3, 2, 1, 123456, tzinfo=timezone.utc).astimezone(
                case.observed_at.tzinfo
            )
            for obs in _parse(dialect, check, case.result(check.stem), odd):
                problems += [f"{case.name}/{check.stem}: {p}" for p in _soundness(obs, odd)]
        _report(problems, "unsound observations")

    # -- every parser is total: a result or ParseError --------------------------------

    @_FUZZ
    @given(result=strategies.command_results(), data=st.data())
    def test_parsers_return_or_raise_parse_error(
        self, dialect: Dialect, result: CommandResult, data: st.DataObject
    ) -> None:
        self._fuzz_all(dialect, result, data)

    @_FUZZ
    @given(data=st.data())
    def test_parsers_survive_garbled_golden_output(
        self, dialect: Dialect, golden_cases: list[GoldenCase], data: st.DataObject
    ) -> None:
        recorded = [(case, c) for case in golden_cases for c in case.commands]
        case, command = data.draw(st.sampled_from(recorded), label="golden command")
        result = case.result(command.stem)
        stdout = data.draw(strategies.garbled(result.stdout), label="garbled stdout")
        self._fuzz_all(
            dialect,
            CommandResult(
                argv=result.argv, returncode=result.returncode, stdout=stdout, stderr=result.stderr
            ),
            data,
        )

    @staticmethod
    def _fuzz_all(dialect: Dialect, result: CommandResult, data: st.DataObject) -> None:
        ids = tuple(
            data.draw(
                st.lists(
                    st.sampled_from(["1", "42", "7.server", "9_3", "x"]),
                    min_size=1,
                    max_size=3,
                    unique=True,
                ),
                label="ids",
            )
        )
        at = data.draw(strategies.aware_datetimes(), label="observed_at")
        spec = JobSpec(command=("true",))
        allowed: tuple[type[Exception], ...] = (ParseError,)
        if result.returncode != 0:
            allowed = (ParseError, CommandFailed, SchedulerUnavailable)
        calls: dict[str, Callable[[], object]] = {
            "parse_submit": lambda: dialect.parse_submit(result, spec),
            "parse_queue": lambda: dialect.parse_queue(result, native_ids=ids, observed_at=at),
            "parse_accounting": lambda: dialect.parse_accounting(
                result, query=AccountingQuery(native_ids=ids), observed_at=at
            ),
            "check_cancel": lambda: dialect.check_cancel(result),
            "parse_find_submission": lambda: dialect.parse_find_submission(result, "tag"),
        }
        for name, call in calls.items():
            try:
                answer = call()
            except allowed:
                continue
            except Exception as exc:  # the bug this test exists to find
                raise AssertionError(
                    f"{name} raised {type(exc).__name__}: {exc} (a parser returns or raises "
                    f"ParseError; CommandFailed/SchedulerUnavailable only for a failed command)"
                ) from exc
            if name in ("parse_queue", "parse_accounting"):
                assert isinstance(answer, Sequence)
                observations = [obs for obs in answer if isinstance(obs, Observation)]
                got = sorted(obs.native_id for obs in observations)
                assert got == sorted(ids), f"{name} answered {got} for {sorted(ids)}"
                for obs in observations:
                    assert not _soundness(obs, at), _soundness(obs, at)
        assert isinstance(dialect.is_transient(result), bool)

    # -- commands ---------------------------------------------------------------------

    @_FUZZ
    @given(spec=strategies.job_specs())
    def test_submit_commands_are_argv(self, dialect: Dialect, spec: JobSpec) -> None:
        """argv tuples only: the payload reaches the scheduler verbatim, as separate
        arguments or shell-quoted by shlex, never pasted into a shell string."""
        try:
            command = dialect.submit_command(spec)
        except ValueError:
            return  # a spec the scheduler cannot express, refused with a message
        _check_argv(command)
        payload = list(spec.command)
        argv = list(command.argv)
        as_args = any(argv[i : i + len(payload)] == payload for i in range(len(argv)))
        quoted = shlex.join(payload)
        as_quoted = any(quoted in part for part in argv) or quoted in (command.stdin or "")
        assert as_args or as_quoted, (
            f"payload {payload!r} is neither separate argv elements nor shlex-quoted in "
            f"{command.argv!r} / stdin"
        )

    def test_read_commands_take_many_ids(self, dialect: Dialect) -> None:
        """One command for many ids, each id in it."""
        ids = ["101", "102", "103"]
        commands = [dialect.queue_command(ids), dialect.cancel_command(ids)]
        accounting = dialect.accounting_command(AccountingQuery(native_ids=ids))
        if accounting is not None:
            commands.append(accounting)
        for command in commands:
            _check_argv(command)
            joined = " ".join(command.argv)
            missing = [i for i in ids if i not in joined]
            assert not missing, f"{shlex.join(command.argv)} does not name {missing}"

    # -- capabilities: declared means shown; undeclared means skipped -----------------

    def test_idempotent_submit(self, dialect: Dialect, capabilities: Capabilities) -> None:
        if not capabilities.idempotent_submit:
            pytest.skip("declared unsupported: idempotent_submit")
        tag = "hpcstate-conformance-tag-7f3a"
        command = dialect.submit_command(JobSpec(command=("true",), tag=tag))
        carried = " ".join([*command.argv, command.stdin or "", *command.env.values()])
        assert tag in carried, "a submit with a tag must carry it (argv, stdin or env)"
        find = dialect.find_submission_command(tag)
        assert find is not None, "idempotent_submit needs find_submission_command(tag)"
        assert tag in " ".join(find.argv) or tag in " ".join(find.env.values())

    def test_array_jobs(self, golden_cases: list[GoldenCase], capabilities: Capabilities) -> None:
        if not capabilities.array_jobs:
            pytest.skip("declared unsupported: array_jobs")
        shown = [
            c for _, c in _checks(golden_cases, "submit") if c.spec is not None and c.spec.array
        ]
        assert shown, "array_jobs is declared: add a golden case that submits an array"

    def test_steps(self, golden_cases: list[GoldenCase], capabilities: Capabilities) -> None:
        if not capabilities.steps:
            pytest.skip("declared unsupported: steps")
        assert _expectations_with(golden_cases, "derived_exit"), (
            "steps is declared: add a golden expectation with a derived_exit"
        )

    def test_lossless_signals(
        self, golden_cases: list[GoldenCase], capabilities: Capabilities
    ) -> None:
        if not capabilities.lossless_signals:
            pytest.skip("declared unsupported: lossless_signals")
        signals = [
            v
            for v in _expectations_with(golden_cases, "exit")
            if isinstance(v, dict) and "signal" in v and not v.get("ambiguous")
        ]
        assert signals, "lossless_signals is declared: add a golden case killed by a signal"

    def test_accounting(self, golden_cases: list[GoldenCase], capabilities: Capabilities) -> None:
        if not capabilities.accounting:
            pytest.skip("declared unsupported: accounting")
        assert list(_checks(golden_cases, "accounting")), (
            "accounting is declared: add golden accounting output with expectations"
        )

    def test_cancel(self, golden_cases: list[GoldenCase], capabilities: Capabilities) -> None:
        if not capabilities.cancel:
            pytest.skip("declared unsupported: cancel")
        assert list(_checks(golden_cases, "cancel")), "cancel is declared: add a golden cancel"

    def test_requeue(self, golden_cases: list[GoldenCase], capabilities: Capabilities) -> None:
        if not capabilities.requeue:
            pytest.skip("declared unsupported: requeue")
        counts = [
            v for v in _expectations_with(golden_cases, "restarts") if isinstance(v, int) and v > 0
        ]
        assert counts, "requeue is declared: add a golden case of a requeued job (restarts > 0)"

    def test_undeclared_capabilities_are_not_claimed(
        self, dialect: Dialect, golden_cases: list[GoldenCase], capabilities: Capabilities
    ) -> None:
        """A parser must not report what the backend says it cannot know."""
        problems = []
        for case, check in _checks(golden_cases, "queue", "accounting"):
            for obs in _parse(dialect, check, case.result(check.stem), case.observed_at):
                where = f"{case.name}/{check.stem}: {obs.native_id}"
                exit_ = obs.stats.exit
                if (
                    not capabilities.lossless_signals
                    and exit_ is not None
                    and exit_.signal
                    and exit_.exact
                ):
                    problems.append(f"{where}: exact signal, but lossless_signals is not declared")
                if not capabilities.steps and obs.stats.derived_exit is not None:
                    problems.append(f"{where}: derived_exit, but steps is not declared")
                if not capabilities.requeue and obs.restarts:
                    problems.append(
                        f"{where}: restarts {obs.restarts}, but requeue is not declared"
                    )
        _report(problems, "observations claim undeclared capabilities")


def _check_argv(command: Command) -> None:
    assert isinstance(command.argv, tuple)
    assert command.argv, "a Command needs a non-empty argv"
    assert all(isinstance(part, str) for part in command.argv)
    program = command.argv[0]
    assert program, "argv[0] is empty"
    assert not (set(program) & _SHELL_META), (
        f"argv[0] {program!r} looks like a shell string; commands are argv tuples"
    )


def _expectations_with(cases: Iterable[GoldenCase], key: str) -> list[Any]:
    return [
        fields[key]
        for _, check in _checks(cases, "queue", "accounting")
        for fields in check.expect.values()
        if key in fields
    ]


# ======================================================================================
# The async half
# ======================================================================================


class BackendConformance:
    """Tests of a whole Backend (e.g. ``CommandBackend(dialect, FakeRunner(...))`` or the
    simulator): submit, queue, accounting and cancel, driven through the pure core.

    REQUIRED fixtures: ``backend`` (a fresh Backend per test) and ``scenarios`` (a list
    of :class:`~hpcstate.testing.golden.Scenario`; ``load_scenarios(golden_dir)`` reads
    them from golden cases). Optional: ``clock`` (a Clock to wait on between polls;
    default: no waiting, for replayed output) and ``poll_interval`` (seconds).
    """

    pytestmark: ClassVar[list[pytest.MarkDecorator]] = [pytest.mark.asyncio]

    @pytest.fixture
    def backend(self) -> Backend:
        _required("backend", "return a fresh Backend, e.g. CommandBackend over a FakeRunner")

    @pytest.fixture
    def scenarios(self) -> list[Scenario]:
        _required("scenarios", "return load_scenarios(your_golden_dir) or your own list")

    @pytest.fixture
    def clock(self) -> Clock | None:
        return None

    @pytest.fixture
    def poll_interval(self) -> float:
        return 30.0

    # -- the driver -------------------------------------------------------------------

    @staticmethod
    async def drive(
        backend: Backend, scenario: Scenario, clock: Clock | None, poll_interval: float
    ) -> tuple[dict[str, RunItem], list[Event], list[str]]:
        """Submit a scenario's job and poll it to its verdict with the reference poll loop
        (:class:`~hpcstate.testing.loop.ReferenceLoop`: the Tracker's poll rules, no
        grace fallback: the verdict must come from the backend's sources).

        Returns the items by native id, the events, and the problems seen on the way
        (ids asked and not answered, transient errors, illegal transitions).
        """
        loop = ReferenceLoop(backend, clock=clock, grace=None, run_id=scenario.name)
        submission = await loop.submit_one(scenario.spec)
        if scenario.cancel:
            await loop.cancel([submission.native_id])

        def finished(loop: ReferenceLoop) -> bool:
            return all(
                item.terminal and (item.confirmed or not scenario.confirmed)
                for item in loop.items.values()
            )

        with contextlib.suppress(NotSettled):  # judge() says what has no verdict
            await loop.run_until(
                finished,
                interval=poll_interval if clock is not None else 0.0,
                timeout=None,
                max_polls=scenario.max_polls,
            )
        return loop.items, loop.events, [*loop.problems, *loop.errors]

    @staticmethod
    def judge(
        scenario: Scenario, items: Mapping[str, RunItem], events: Sequence[Event]
    ) -> list[str]:
        problems = []
        first: dict[str, Finished] = {}
        for event in events:
            if isinstance(event, Finished) and event.item_id not in first:
                first[event.item_id] = event
        for native_id, item in items.items():
            where = f"{scenario.name} ({native_id})"
            if not item.terminal:
                problems.append(
                    f"{where}: no verdict after {scenario.max_polls} polls ({item.state})"
                )
                continue
            verdict = first.get(item.id)
            if verdict is None:
                problems.append(f"{where}: terminal without a Finished event")
                continue
            if verdict.state is not scenario.state:
                problems.append(
                    f"{where}: first verdict {verdict.state}, expected {scenario.state}"
                )
            if verdict.confirmed is not scenario.confirmed:
                problems.append(
                    f"{where}: first verdict confirmed={verdict.confirmed}, "
                    f"expected {scenario.confirmed}"
                )
            if scenario.exit is not None and not exit_matches(scenario.exit, item.stats.exit):
                shown = item.stats.exit.describe() if item.stats.exit else "no exit status"
                problems.append(f"{where}: exit {shown}, expected {scenario.exit.describe()}")
            if scenario.derived_exit is not None and not exit_matches(
                scenario.derived_exit, item.stats.derived_exit
            ):
                problems.append(
                    f"{where}: derived exit {item.stats.derived_exit}, "
                    f"expected {scenario.derived_exit.describe()}"
                )
        return problems

    # -- tests ------------------------------------------------------------------------

    async def test_scenarios_reach_their_verdicts(
        self,
        backend: Backend,
        scenarios: list[Scenario],
        clock: Clock | None,
        poll_interval: float,
    ) -> None:
        assert scenarios, "no scenarios: nothing is tested"
        problems = []
        for scenario in scenarios:
            try:
                items, events, seen = await self.drive(backend, scenario, clock, poll_interval)
            except Exception as exc:
                problems.append(f"{scenario.name}: {type(exc).__name__}: {exc}")
                continue
            problems += [f"{scenario.name}: {p}" for p in seen]
            problems += self.judge(scenario, items, events)
        await backend.close()
        _report(problems, "scenarios did not end with their expected first verdicts")

    async def test_empty_reads_make_no_call(self, backend: Backend) -> None:
        assert list(await backend.queue([])) == []
        assert list(await backend.accounting(AccountingQuery(native_ids=()))) == []

    async def test_capabilities_are_exercised(
        self, backend: Backend, scenarios: list[Scenario]
    ) -> None:
        """A declared capability needs a scenario that shows it."""
        caps = backend.capabilities
        problems = []
        if caps.cancel and not any(s.cancel for s in scenarios):
            problems.append("cancel is declared: add a scenario with cancel=True")
        if caps.array_jobs and not any(s.spec.array for s in scenarios):
            problems.append("array_jobs is declared: add a scenario submitting an array")
        if caps.steps and not any(s.derived_exit is not None for s in scenarios):
            problems.append("steps is declared: add a scenario expecting a derived_exit")
        if caps.lossless_signals and not any(
            s.exit is not None and s.exit.signal and s.exit.exact for s in scenarios
        ):
            problems.append("lossless_signals is declared: add a scenario killed by a signal")
        _report(problems, "declared capabilities no scenario exercises")

    async def test_cancel(
        self,
        backend: Backend,
        scenarios: list[Scenario],
        clock: Clock | None,
        poll_interval: float,
    ) -> None:
        if not backend.capabilities.cancel:
            pytest.skip("declared unsupported: cancel")
        cancels = [s for s in scenarios if s.cancel]
        if not cancels:
            pytest.fail("cancel is declared but no scenario cancels a job", pytrace=False)
        for scenario in cancels:
            items, events, problems = await self.drive(backend, scenario, clock, poll_interval)
            problems += self.judge(scenario, items, events)
            assert not problems, problems
            assert all(item.state is State.CANCELLED for item in items.values()), (
                f"{scenario.name}: cancelled, yet {[i.state.value for i in items.values()]}"
            )

    async def test_arrays_track_every_task(
        self,
        backend: Backend,
        scenarios: list[Scenario],
        clock: Clock | None,
        poll_interval: float,
    ) -> None:
        if not backend.capabilities.array_jobs:
            pytest.skip("declared unsupported: array_jobs")
        arrays = [s for s in scenarios if s.spec.array]
        if not arrays:
            pytest.fail("array_jobs is declared but no scenario submits an array", pytrace=False)
        for scenario in arrays:
            assert scenario.spec.array is not None
            items, _, problems = await self.drive(backend, scenario, clock, poll_interval)
            assert not problems, problems
            expected = len(expand_array_spec(scenario.spec.array))
            assert len(items) == expected, (
                f"{scenario.name}: {len(items)} tasks tracked, {expected} submitted"
            )

    # -- declared abilities (hpcstate.backend.abilities) ------------------------------

    @pytest.fixture
    def ability_scenario(self, scenarios: list[Scenario]) -> Scenario:
        """The scenario whose job the ability tests submit: by default the first that is
        neither cancelled nor an array (override it to choose another)."""
        plain = [s for s in scenarios if not s.cancel and not s.spec.array]
        if not plain:
            _required("ability_scenario", "no scenario is a plain job: return one")
        return plain[0]

    async def test_declared_abilities_are_implemented(self, backend: Backend) -> None:
        """Every Capabilities flag that declares an ability has its methods."""
        try:
            abilities(backend)
        except BackendContractError as exc:
            pytest.fail(str(exc), pytrace=False)

    async def test_a_declared_finder_finds_a_tagged_submit(
        self, backend: Backend, ability_scenario: Scenario
    ) -> None:
        finder = abilities(backend).finder
        if finder is None:
            pytest.skip("declared unsupported: idempotent_submit")
        spec = ability_scenario.spec
        if not spec.tag:
            spec = evolve(spec, tag=f"hpcstate-conformance-{uuid.uuid4().hex[:12]}")
        with _answerable("idempotent_submit"):
            submission = await backend.submit(spec)
            found = await finder.find_submission(spec.tag)
        assert found is not None, f"find_submission({spec.tag!r}) found nothing after the submit"
        assert found.native_id == submission.native_id, (
            f"find_submission({spec.tag!r}) found {found.native_id}, "
            f"the submit said {submission.native_id}"
        )

    async def test_a_declared_watch_yields_an_observation(
        self, backend: Backend, ability_scenario: Scenario
    ) -> None:
        watcher = abilities(backend).watcher
        if watcher is None:
            pytest.skip("declared unsupported: push")
        with _answerable("push"):
            submission = await backend.submit(ability_scenario.spec)
            ids = submission.array_task_ids or (submission.native_id,)
            stream = watcher.watch(ids)
            try:
                # Generous: a real cluster may take a while to schedule the job.
                first = await asyncio.wait_for(anext(stream), timeout=_ABILITY_TIMEOUT_S)
            finally:
                close = getattr(stream, "aclose", None)
                if close is not None:
                    await close()
        assert isinstance(first, Observation)
        assert first.native_id in ids, f"watch({list(ids)}) yielded {first.native_id}"

    async def test_declared_report_files_are_read(
        self, backend: Backend, scenarios: list[Scenario]
    ) -> None:
        reader = abilities(backend).report_files
        if reader is None:
            pytest.skip("declared unsupported: report_files")
        for scenario in scenarios:
            says = reader.reports_itself(scenario.spec)
            assert isinstance(says, bool), f"{scenario.name}: reports_itself gave {says!r}"
        missing = f"/nonexistent-hpcstate-conformance/{uuid.uuid4().hex}/report.json"
        with _answerable("report_files"):
            found = await reader.read_text_files([missing])
        assert dict(found) == {}, f"read_text_files of a missing file gave {dict(found)!r}"

    async def test_a_declared_output_reader_reads(
        self,
        backend: Backend,
        ability_scenario: Scenario,
        clock: Clock | None,
        poll_interval: float,
    ) -> None:
        output = abilities(backend).output
        if output is None:
            pytest.skip("declared unsupported: output")
        items, _, problems = await self.drive(backend, ability_scenario, clock, poll_interval)
        assert not problems, problems
        for native_id in items:
            with _answerable("output"):
                snapshot = await output.read_output(native_id, ability_scenario.spec.stdout, 5)
            assert snapshot is None or isinstance(snapshot, OutputSnapshot), snapshot
            if snapshot is not None:
                assert len(snapshot.tail) <= 5, f"{native_id}: asked 5 lines, got {snapshot}"
                assert snapshot.size >= 0

    async def test_declared_facts_are_shared(
        self, backend: Backend, ability_scenario: Scenario
    ) -> None:
        sharer = abilities(backend).facts
        if sharer is None:
            pytest.skip("declared unsupported: shares_facts")
        loop = ReferenceLoop(backend, grace=None)
        with _answerable("shares_facts"):
            ids = await loop.submit(ability_scenario.spec)
            await loop.poll_once()  # something to learn from
        learned = dict(sharer.facts())
        values: list[object] = [*learned, *learned.values()]
        assert all(isinstance(v, str) for v in values), f"facts() must be text: {learned!r}"
        # Unknown keys are ignored, a bad value is not adopted: never an exception.
        sharer.adopt_facts({})
        sharer.adopt_facts({"hpcstate-conformance-unknown": "?"})
        sharer.adopt_facts(dict.fromkeys(learned, "\x00 not a value"))
        sharer.adopt_facts(learned)
        assert dict(sharer.facts()) == learned, "adopting what it learned changed its facts"
        assert ids

    async def test_declared_host_local_names_its_scope(self, backend: Backend) -> None:
        local = abilities(backend).host_local
        if local is None:
            pytest.skip("declared unsupported: host_local")
        scope = local.lease_scope()
        assert isinstance(scope, str)
        assert scope.strip(), "lease_scope() is empty"

    async def test_undeclared_abilities_are_not_called(
        self,
        backend: Backend,
        ability_scenario: Scenario,
        clock: Clock | None,
        poll_interval: float,
    ) -> None:
        """The reference loop reaches an ability only through ``abilities()``: a method
        of an undeclared flag is never looked up, even where the backend has it."""
        spy = _AbilitySpy(backend)
        _, _, problems = await self.drive(spy, ability_scenario, clock, poll_interval)
        assert not problems, problems
        assert not spy.touched, f"undeclared abilities used: {sorted(spy.touched)}"


_ABILITY_TIMEOUT_S = 300.0


@contextlib.contextmanager
def _answerable(flag: str) -> Iterator[None]:
    """A replayed backend (FakeRunner, ReplayRunner) answers only the commands it
    recorded: an ability whose commands were not recorded is skipped, saying which."""
    try:
        yield
    except UnexpectedCommand as exc:
        pytest.skip(
            f"{flag}: not exercised: the runner under test has no answer for "
            f"{' '.join(shlex.join(exc.argv).split())[:120]} (a replay answers only "
            "recorded commands)"
        )


class _AbilitySpy:
    """A backend seen through: records every lookup of a method whose flag it does not
    declare (see ``hpcstate.backend.ABILITY_METHODS``)."""

    def __init__(self, inner: Backend) -> None:
        self._inner = inner
        caps = inner.capabilities
        self._undeclared = {
            method
            for flag, methods in ABILITY_METHODS.items()
            if not getattr(caps, flag)
            for method in methods
        }
        self.touched: set[str] = set()

    def __getattr__(self, name: str) -> Any:
        if name in self._undeclared:
            self.touched.add(name)
        return getattr(self._inner, name)
