"""FluxBackend end to end: the real LocalRunner and the real ``sh`` evidence script,
against fake_flux.py (a ``flux`` that replays the recorded 0.88.0 outputs, because
Flux cannot run here; tests/flux/test_integration.py runs the real thing)."""

from __future__ import annotations

import json
import stat
import sys
from pathlib import Path

import pytest
from flux_golden import jobid_f58, read
from test_flux_golden import EXPECTED, _same_exit

from hpcstate import (
    Absence,
    CommandFailed,
    ExitStatus,
    ReasonKind,
    SchedulerUnavailable,
    State,
)
from hpcstate.backend import AccountingQuery, BackendConfig, Command, CommandResult, JobSpec
from hpcstate.runtime import LocalRunner
from hpcstate_flux import BACKEND, FluxDialect, parse_jobid
from hpcstate_flux._io import FluxBackend, dialect_from_options
from hpcstate_flux._parse import EVIDENCE_KEYS

FAKE = Path(__file__).resolve().parent / "fake_flux.py"


class FakeFlux:
    def __init__(self, tmp_path: Path) -> None:
        self.executable = tmp_path / "flux"
        self.executable.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{FAKE}" "$@"\n')
        self.executable.chmod(self.executable.stat().st_mode | stat.S_IXUSR)
        self.log = tmp_path / "flux.log"
        self.state_file = tmp_path / "state.json"
        self.state: dict[str, object] = {}

    def set(self, **state: object) -> None:
        self.state.update(state)
        self.state_file.write_text(json.dumps(self.state))

    def calls(self) -> list[list[str]]:
        if not self.log.exists():
            return []
        return [json.loads(line) for line in self.log.read_text().splitlines()]

    def backend(self) -> FluxBackend:
        self.runner = CountingRunner(
            LocalRunner(
                base_env={
                    "PATH": "/usr/bin:/bin",
                    "FAKE_FLUX_LOG": str(self.log),
                    "FAKE_FLUX_STATE": str(self.state_file),
                }
            )
        )
        return FluxBackend(dialect=FluxDialect(flux=str(self.executable)), runner=self.runner)

    def info_calls(self, kind: str) -> list[str]:
        """The job ids whose ``flux job info ID KEY`` ran, for one evidence kind."""
        key = EVIDENCE_KEYS[kind]
        return [c[2] for c in self.calls() if c[:2] == ["job", "info"] and c[3] == key]


class CountingRunner:
    """The real runner, remembering each command's argv (one round trip each)."""

    def __init__(self, runner: LocalRunner) -> None:
        self.runner = runner
        self.argvs: list[tuple[str, ...]] = []

    async def run(self, command: Command) -> CommandResult:
        self.argvs.append(tuple(command.argv))
        return await self.runner.run(command)

    async def close(self) -> None:
        await self.runner.close()

    def evidence_round_trips(self) -> int:
        return sum(1 for argv in self.argvs if argv[:1] == ("sh",))


@pytest.fixture
def fake(tmp_path: Path) -> FakeFlux:
    return FakeFlux(tmp_path)


def _native(case: str) -> str:
    return str(parse_jobid(jobid_f58(case)))


async def test_one_poll_every_case_and_a_purged_job(fake: FakeFlux) -> None:
    purged = str(parse_jobid(read("_retention/manual_purge", "jobid.f58").strip()))
    cases = sorted(EXPECTED)
    backend = fake.backend()
    observations = await backend.queue([*map(_native, cases), purged])
    for case, observation in zip(cases, observations[:-1], strict=True):
        expected = EXPECTED[case]
        assert observation.state is expected.state, case
        assert _same_exit(observation.stats.exit, expected.exit), case
    assert observations[-1].absence is Absence.UNKNOWN
    calls = fake.calls()
    assert [c[0] for c in calls].count("jobs") == 1  # ONE job-list call for all jobs
    info = [c for c in calls if c[:2] == ["job", "info"]]
    # the exec eventlog only for the ten ambiguous verdicts (code 129-192)
    assert set(fake.info_calls("exec")) == {
        _native(case)
        for case in (
            "exit_137",
            "sigint",
            "sigsegv",
            "sigkill",
            "sigterm",
            "timeout",
            "cancel_running",
            "cancel_running_with_message",
            "multi_task_sig_and_exit",
            "raise_exception",
        )
    }
    # the oom check for every job that ran and FAILED, whatever its exit code; not for
    # jobs that never ran (no shell, no oom plugin) nor for other verdicts
    ran_and_failed = [
        case
        for case, expected in EXPECTED.items()
        if expected.state is State.FAILED and expected.exit is not None
    ]
    assert "exit_13" in ran_and_failed
    assert "unsatisfiable" not in ran_and_failed
    assert sorted(fake.info_calls("output")) == sorted(map(_native, ran_and_failed))
    # ...all in ONE round trip
    assert fake.runner.evidence_round_trips() == 1
    # the second poll reads no eventlog again: inactive jobs' eventlogs never change
    again = await backend.queue([_native("sigkill")])
    assert again[0].stats.exit == ExitStatus.killed(9)
    assert len([c for c in fake.calls() if c[:2] == ["job", "info"]]) == len(info)
    await backend.close()


async def test_unreachable_broker_while_reading_eventlogs_is_no_verdict(fake: FakeFlux) -> None:
    fake.set(unreachable=True)
    backend = fake.backend()
    with pytest.raises(SchedulerUnavailable, match="Connection refused"):
        await backend.queue([_native("sigkill")])
    fake.set(unreachable=False)
    (observation,) = await backend.queue([_native("sigkill")])
    assert observation.stats.exit == ExitStatus.killed(9)


async def test_oom_line_in_the_output_eventlog(fake: FakeFlux) -> None:
    fake.set(oom={_native("sigkill"): "Memory cgroup out of memory: killed 1 task on vm."})
    (observation,) = await fake.backend().queue([_native("sigkill")])
    assert observation.state is State.OUT_OF_MEMORY
    assert observation.stats.exit == ExitStatus.killed(9)
    assert observation.stats.reason is not None
    assert observation.stats.reason.kind is ReasonKind.OUT_OF_MEMORY


async def test_oom_kill_of_a_child_with_another_exit_code(fake: FakeFlux) -> None:
    # A child killed for memory while the task exits 13: only the output log says so.
    fake.set(oom={_native("exit_13"): "Memory cgroup out of memory: killed 1 task on vm."})
    backend = fake.backend()
    (observation,) = await backend.queue([_native("exit_13")])
    assert observation.state is State.OUT_OF_MEMORY
    assert observation.stats.exit == ExitStatus.exited(13)
    assert observation.stats.reason is not None
    assert observation.stats.reason.kind is ReasonKind.OUT_OF_MEMORY


async def test_oom_check_runs_once_per_job_even_when_unreadable(fake: FakeFlux) -> None:
    # An inactive job's output eventlog that cannot be read (not a transient error) will
    # not become readable: it is not asked for again on every poll.
    fake.set(output_errors=[_native("exit_13")])
    backend = fake.backend()
    for _ in range(3):
        (observation,) = await backend.queue([_native("exit_13")])
        assert observation.state is State.FAILED
        assert "key not found" in observation.detail
    assert fake.info_calls("output") == [_native("exit_13")]
    assert fake.runner.evidence_round_trips() == 1
    # a job that ends later is read in the next poll's one round trip, the first one not
    await backend.queue([_native("exit_13"), _native("exit_200")])
    assert fake.info_calls("output") == [_native("exit_13"), _native("exit_200")]
    assert fake.runner.evidence_round_trips() == 2


async def test_an_id_job_list_refuses_is_no_observation(fake: FakeFlux) -> None:
    fake.set(rpc_errors={_native("exit_200"): "Operation not permitted"})
    backend = fake.backend()
    with pytest.raises(CommandFailed, match=_native("exit_200")):
        await backend.queue([_native("exit_13"), _native("exit_200")])
    with pytest.raises(CommandFailed, match="Operation not permitted"):
        await backend.queue([_native("exit_200")])  # flux jobs exits 1: nothing listed


async def test_all_ids_purged_exit_1_is_an_answer(fake: FakeFlux) -> None:
    natives = [_native("exit_0"), _native("exit_13")]
    fake.set(purged=natives)
    observations = await fake.backend().accounting(AccountingQuery(native_ids=natives))
    assert [o.absence for o in observations] == [Absence.UNKNOWN, Absence.UNKNOWN]


async def test_submit_and_cancel(fake: FakeFlux) -> None:
    fake.set(submit_case="exit_13")
    backend = fake.backend()
    submission = await backend.submit(JobSpec(command=("bash", "-c", "exit 13"), name="x"))
    assert submission.native_id == _native("exit_13")
    batch = await backend.submit(JobSpec(script="#!/bin/sh\ntrue\n"))
    assert batch.native_id == _native("exit_13")
    await backend.cancel([submission.native_id])
    submit_call = next(c for c in fake.calls() if c[0] == "submit")
    assert submit_call[-3:] == ["bash", "-c", "exit 13"]
    assert ["cancel", submission.native_id] in fake.calls()


def test_backend_from_configuration() -> None:
    backend = BACKEND.make_backend(
        BackendConfig(name="cluster", kind="flux", options={"flux": "/opt/flux/bin/flux"})
    )
    assert isinstance(backend, FluxBackend)
    assert backend.name == "cluster"
    dialect = dialect_from_options({"uri": "local:///run/flux/local", "timeout": 5})
    assert (dialect.uri, dialect.timeout) == ("local:///run/flux/local", 5.0)
    from hpcstate import ConfigError

    with pytest.raises(ConfigError) as info:
        dialect_from_options({"timeout": "5"})
    assert str(info.value) == "flux backend: timeout: expected a number, got string '5'"
