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

from hpcstate import Absence, ExitStatus, ReasonKind, SchedulerUnavailable, State
from hpcstate.backend import AccountingQuery, BackendConfig, JobSpec
from hpcstate.runtime import LocalRunner
from hpcstate_flux import BACKEND, FluxDialect, parse_jobid
from hpcstate_flux._io import FluxBackend, dialect_from_options

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
        runner = LocalRunner(
            base_env={
                "PATH": "/usr/bin:/bin",
                "FAKE_FLUX_LOG": str(self.log),
                "FAKE_FLUX_STATE": str(self.state_file),
            }
        )
        return FluxBackend(dialect=FluxDialect(flux=str(self.executable)), runner=runner)


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
    # eventlogs only for the ten ambiguous verdicts (exec), plus main / output where due
    assert {c[2] for c in info} == {
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

    with pytest.raises(ConfigError, match="'timeout' must be a int or float"):
        dialect_from_options({"timeout": "5"})
