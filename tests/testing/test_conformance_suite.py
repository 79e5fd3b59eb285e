"""The conformance suite itself: it runs on a correct toy backend, and it catches broken ones.

The toy scheduler ("toyq" prints ``ID STATE [EXIT]`` lines) exists only here; its golden
files are written into tmp directories by the fixtures below.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import datetime, timezone
from pathlib import Path

import pytest

from hpcstate import (
    TERMINAL,
    Absence,
    CommandFailed,
    ExitStatus,
    JobStats,
    Observation,
    ParseError,
    Source,
    State,
    registry,
)
from hpcstate.backend import (
    API_VERSION,
    AccountingQuery,
    BackendConfig,
    BackendInfo,
    Capabilities,
    Command,
    CommandResult,
    JobSpec,
    Submission,
)
from hpcstate.testing import Conditions, Scenario, SimulatedCluster, VirtualClock, load_cases
from hpcstate.testing.conformance import BackendConformance, DialectConformance


class ToyDialect:
    def submit_command(self, spec: JobSpec) -> Command:
        return Command(argv=("toysub", "--", *spec.command))

    def parse_submit(self, result: CommandResult, spec: JobSpec) -> Submission:
        text = result.stdout.strip()
        if not (text.isascii() and text.isdigit()):
            raise ParseError("expected a job number", command="toysub", line=text)
        return Submission(native_id=text)

    def queue_command(self, native_ids: Sequence[str]) -> Command:
        return Command(argv=("toyq", ",".join(native_ids)))

    def parse_queue(
        self, result: CommandResult, *, native_ids: Sequence[str], observed_at: datetime
    ) -> Sequence[Observation]:
        if result.returncode != 0:
            raise CommandFailed(result.argv, result.returncode, result.stderr)
        seen: dict[str, Observation] = {}
        for line_no, line in enumerate(result.stdout.splitlines(), start=1):
            parts = line.split()
            if len(parts) not in (2, 3) or parts[1] not in {s.value for s in State}:
                raise ParseError("expected ID STATE [EXIT]", command="toyq", line_no=line_no)
            state = State(parts[1])
            if state in (State.PENDING, State.SETTLING):
                raise ParseError("not a scheduler state", command="toyq", line_no=line_no)
            exit_ = None
            if len(parts) == 3:
                if not (parts[2].isascii() and parts[2].isdigit() and int(parts[2]) < 256):
                    raise ParseError("bad exit", command="toyq", line_no=line_no, field="exit")
                exit_ = ExitStatus.exited(int(parts[2]))
            if state is State.COMPLETED and exit_ is not None and not exit_.success:
                raise ParseError("COMPLETED with a failing exit", command="toyq", line=line)
            seen[parts[0]] = Observation(
                native_id=parts[0],
                source=Source.QUEUE,
                observed_at=observed_at,
                state=state,
                final=state in TERMINAL,
                stats=JobStats(exit=exit_),
            )
        return [
            seen.get(i)
            or Observation(
                native_id=i, source=Source.QUEUE, observed_at=observed_at, absence=Absence.ABSENT
            )
            for i in native_ids
        ]

    def accounting_command(self, query: AccountingQuery) -> Command | None:
        return None

    def parse_accounting(
        self, result: CommandResult, *, query: AccountingQuery, observed_at: datetime
    ) -> Sequence[Observation]:
        return [
            Observation(
                native_id=i,
                source=Source.ACCOUNTING,
                observed_at=observed_at,
                absence=Absence.NO_RECORD,
            )
            for i in query.native_ids
        ]

    def cancel_command(self, native_ids: Sequence[str]) -> Command:
        return Command(argv=("toycancel", *native_ids))

    def check_cancel(self, result: CommandResult) -> None:
        if result.returncode != 0:
            raise CommandFailed(result.argv, result.returncode, result.stderr)

    def find_submission_command(self, tag: str) -> Command | None:
        return None

    def parse_find_submission(self, result: CommandResult, tag: str) -> Submission | None:
        return None

    def is_transient(self, result: CommandResult) -> bool:
        return result.returncode is None


def _no_backend(config: BackendConfig) -> object:
    raise NotImplementedError


TOY = BackendInfo(
    name="toy-conformance",
    api_version=API_VERSION,
    version="1.0",
    description="a toy scheduler for the suite's own tests",
    capabilities=Capabilities(cancel=False, adopt=True),
    make_backend=_no_backend,  # type: ignore[arg-type]
    make_dialect=ToyDialect,
)


def write_golden(root: Path) -> Path:
    for name, number, state, code in (("ok", "11", "completed", "0"), ("bad", "12", "failed", "3")):
        case = root / name
        case.mkdir(parents=True)
        (case / "commands.tsv").write_text(
            f"file\ttime\tcommand\nsub\t10:00:00\ttoysub -- sh -c 'exit {code}'\n"
            f"q\t10:00:05\ttoyq {number}\n"
        )
        (case / "sub.out").write_text(f"{number}\n")
        (case / "sub.rc").write_text("0\n")
        (case / "q.out").write_text(f"{number} {state} {code}\n")
        (case / "q.rc").write_text("0\n")
        (case / "expected.json").write_text(
            '{"checks": ['
            f'{{"stem": "sub", "parse": "submit", "spec": {{"command": ["sh", "-c", "exit {code}"]}},'
            f' "expect": {{"native_id": "{number}"}}}},'
            f'{{"stem": "q", "parse": "queue", "native_ids": ["{number}"],'
            f' "expect": {{"{number}": {{"state": "{state}", "final": true, "exit": {{"code": {code}}}}}}}}}'
            "]}"
        )
    return root


@pytest.fixture(scope="module")
def toy_golden(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_golden(tmp_path_factory.mktemp("golden"))


@pytest.fixture(scope="module", autouse=True)
def _registered() -> Iterator[None]:
    registry.register(TOY.name, f"{__name__}:TOY")
    yield
    registry.unregister(TOY.name)


class TestToyDialect(DialectConformance):
    """The whole suite passes on a correct dialect."""

    @pytest.fixture(scope="class")
    @classmethod
    def backend_info(cls) -> BackendInfo:
        return TOY

    @pytest.fixture(scope="class")
    @classmethod
    def golden_dir(cls, toy_golden: Path) -> Path:
        return toy_golden


# -- it catches broken dialects --------------------------------------------------------

Caught = (AssertionError, pytest.fail.Exception)


class CrashesOnGarbage(ToyDialect):
    def parse_queue(self, result, *, native_ids, observed_at):  # type: ignore[no-untyped-def]
        int(result.stdout.split()[0]) if result.stdout.split() else None  # ValueError: a bug
        return super().parse_queue(result, native_ids=native_ids, observed_at=observed_at)


class ForgetsAbsentIds(ToyDialect):
    def parse_queue(self, result, *, native_ids, observed_at):  # type: ignore[no-untyped-def]
        found = super().parse_queue(result, native_ids=native_ids, observed_at=observed_at)
        return [obs for obs in found if obs.absence is None]


class DropsTheOffset(ToyDialect):
    def parse_queue(self, result, *, native_ids, observed_at):  # type: ignore[no-untyped-def]
        utc = observed_at.astimezone(timezone.utc)
        return super().parse_queue(result, native_ids=native_ids, observed_at=utc)


class ShellString(ToyDialect):
    def submit_command(self, spec: JobSpec) -> Command:
        return Command(argv=("sh", "-c", "toysub " + " ".join(spec.command)))


def test_a_crashing_parser_is_caught() -> None:
    with pytest.raises(Caught):
        DialectConformance().test_parsers_return_or_raise_parse_error(dialect=CrashesOnGarbage())


def test_missing_observations_are_caught(toy_golden: Path) -> None:
    cases = load_cases(toy_golden)
    with pytest.raises(Caught):
        DialectConformance().test_one_observation_per_asked_id(ForgetsAbsentIds(), cases)


def test_a_lost_timezone_offset_is_caught(toy_golden: Path) -> None:
    cases = load_cases(toy_golden)
    with pytest.raises(Caught):
        DialectConformance().test_observations_are_sound(DropsTheOffset(), cases)


def test_a_shell_string_is_caught() -> None:
    with pytest.raises(Caught):
        DialectConformance().test_submit_commands_are_argv(dialect=ShellString())


def test_a_declared_capability_without_evidence_is_caught(toy_golden: Path) -> None:
    cases = load_cases(toy_golden)
    with pytest.raises(Caught):
        DialectConformance().test_lossless_signals(cases, Capabilities(lossless_signals=True))
    with pytest.raises(pytest.skip.Exception, match="declared unsupported"):
        DialectConformance().test_lossless_signals(cases, Capabilities(lossless_signals=False))


# -- BackendConformance over the simulator ---------------------------------------------


def _sim_spec(outcome: str, **options: str) -> JobSpec:
    return JobSpec(
        command=["job"],
        options={"sim.outcome": outcome, "sim.queued_s": "10", "sim.running_s": "60", **options},
    )


class TestSimulatedBackend(BackendConformance):
    """The simulator is a conforming Backend, arrays and signals included."""

    @pytest.fixture
    def clock(self) -> VirtualClock:
        return VirtualClock()

    @pytest.fixture
    def backend(self, clock: VirtualClock) -> object:
        return SimulatedCluster(clock=clock, seed=3, conditions=Conditions(requeue=0.0)).backend()

    @pytest.fixture
    def scenarios(self) -> list[Scenario]:
        queued_long = {"sim.queued_s": "600"}
        return [
            Scenario(
                name="ok",
                spec=_sim_spec("completed"),
                state=State.COMPLETED,
                exit=ExitStatus.exited(0),
            ),
            Scenario(
                name="exit3",
                spec=_sim_spec("failed", **{"sim.exit": "3"}),
                state=State.FAILED,
                exit=ExitStatus.exited(3),
            ),
            Scenario(
                name="segv",
                spec=_sim_spec("failed", **{"sim.exit": "signal:11"}),
                state=State.FAILED,
                exit=ExitStatus.killed(11),
            ),
            Scenario(
                name="cancel",
                spec=_sim_spec("completed", **queued_long),
                state=State.CANCELLED,
                cancel=True,
            ),
            Scenario(
                name="array",
                spec=JobSpec(
                    command=["t"],
                    array="1-3",
                    options={"sim.outcome": "completed", "sim.running_s": "60"},
                ),
                state=State.COMPLETED,
            ),
        ]


def test_backend_suite_catches_a_wrong_expectation() -> None:
    clock = VirtualClock()
    backend = SimulatedCluster(clock=clock, seed=3).backend()
    wrong = Scenario(
        name="lie", spec=_sim_spec("failed", **{"sim.exit": "3"}), state=State.COMPLETED
    )

    async def run() -> list[str]:
        items, events, problems = await BackendConformance.drive(backend, wrong, clock, 30.0)
        return problems + BackendConformance.judge(wrong, items, events)

    import asyncio

    problems = asyncio.run(run())
    assert any("expected completed" in p for p in problems)


def test_now_is_aware() -> None:
    assert VirtualClock().now().utcoffset() is not None
    with pytest.raises(ValueError, match="aware"):
        VirtualClock(datetime(2026, 1, 1))


def test_the_clock_is_set_forward_only() -> None:
    clock = VirtualClock(datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc))
    later = datetime(2026, 3, 1, 15, 0, 1, tzinfo=timezone.utc)
    clock.current = later
    assert (clock.now(), clock.current, clock.elapsed) == (later, later, 3 * 3600 + 1)
    with pytest.raises(ValueError, match="forward"):
        clock.current = datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc)
    with pytest.raises(ValueError, match="aware"):
        clock.current = datetime(2026, 3, 2)
    assert clock.now() == later
