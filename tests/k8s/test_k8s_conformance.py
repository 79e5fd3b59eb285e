"""The shipped backend conformance suite, run against the real k8s backend.

The backend talks HTTP to the fake API server of fake_apiserver.py (no real cluster can
run here). Most payloads run for real as local processes; what cannot happen for real
(an OOM kill) is scripted in the fake's kubelet. Expected verdicts are written by hand
from what each job does.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from datetime import datetime, timedelta, timezone
from typing import Any, ClassVar

import pytest

from hpcstate import ExitStatus, State
from hpcstate.backend import Backend, JobSpec
from hpcstate.testing.conformance import BackendConformance
from hpcstate.testing.golden import Scenario

from .fake_apiserver import FakeCluster, Outcome

# The backend is driven by polling here (queue after queue), each poll a real LIST on the
# fake server; jobs end within a few real seconds, so poll often and long enough.
POLL_INTERVAL_S = 0.1
MAX_POLLS = 300

# "may be a signal": the kubelet turns a signal death into 128+N, so a 137 without the
# wrapper must stay an (ambiguous) exit code. The text is not compared, only exactness.
MAYBE_SIGNAL = "128+N from the kubelet"


class RealClock:
    """Wall time and real sleeps: the fake's kubelet runs in real time."""

    def now(self) -> datetime:
        return datetime.now(timezone.utc)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


def k8s_scenarios() -> list[Scenario]:
    """Each job's life and the verdict it must end with, by hand."""

    def scenario(name: str, spec: JobSpec, state: State, **verdict: Any) -> Scenario:
        return Scenario(name=name, spec=spec, state=state, max_polls=MAX_POLLS, **verdict)

    return [
        scenario(
            "success",
            JobSpec(command=["true"], tag="conf-ok"),
            State.COMPLETED,
            exit=ExitStatus.exited(0),
        ),
        scenario(
            "exit-3",
            JobSpec(command=["sh", "-c", "exit 3"], tag="conf-e3"),
            State.FAILED,
            exit=ExitStatus.exited(3),
        ),
        # Scripted (an OOM kill cannot happen for real here): the kubelet reports
        # OOMKilled with exit 137, which is a memory kill, not an exact SIGKILL.
        scenario(
            "oomkilled",
            JobSpec(command=["eat-memory"], options={"name": "conf-oom"}),
            State.OUT_OF_MEMORY,
            exit=ExitStatus.exited(137, ambiguous=MAYBE_SIGNAL),
        ),
        # A real SIGKILL without the wrapper: only "137" reaches the API server.
        scenario(
            "sigkill-without-wrapper",
            JobSpec(command=["sh", "-c", "kill -9 $$"], tag="conf-k9"),
            State.FAILED,
            exit=ExitStatus.exited(137, ambiguous=MAYBE_SIGNAL),
        ),
        # activeDeadlineSeconds=1 against a 30 s sleep: the controller kills it.
        scenario(
            "active-deadline",
            JobSpec(command=["sleep", "30"], tag="conf-slow", time_limit=timedelta(seconds=1)),
            State.TIMEOUT,
        ),
        # Cancelled right after submitting; it would otherwise sleep 30 s.
        scenario(
            "cancel",
            JobSpec(command=["sleep", "30"], tag="conf-cancel"),
            State.CANCELLED,
            cancel=True,
        ),
        # An Indexed Job of three tasks that all succeed.
        scenario(
            "array",
            JobSpec(command=["true"], array="0-2", options={"name": "conf-arr"}),
            State.COMPLETED,
            exit=ExitStatus.exited(0),
        ),
    ]


class TestK8sBackendConformance(BackendConformance):
    # Both object shapes: 1.36 as recorded (interim conditions first) and <= 1.30 (none).
    pytestmark: ClassVar[list[pytest.MarkDecorator]] = [
        pytest.mark.asyncio,
        pytest.mark.parametrize(
            "version", [(1, 36), (1, 30)], ids=["k8s-1.36", "k8s-1.30"], indirect=True
        ),
    ]

    @pytest.fixture
    async def backend(self, make_backend: Callable[..., Any]) -> AsyncIterator[Backend]:
        made: Backend = make_backend()
        try:
            yield made
        finally:
            await made.close()

    @pytest.fixture
    def scenarios(self, cluster: FakeCluster) -> list[Scenario]:
        cluster.script("conf-oom", Outcome(exit_code=137, reason="OOMKilled"))
        return k8s_scenarios()

    @pytest.fixture
    def clock(self) -> RealClock:
        return RealClock()

    @pytest.fixture
    def poll_interval(self) -> float:
        return POLL_INTERVAL_S
