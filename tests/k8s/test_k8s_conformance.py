"""The shipped backend conformance suite, run against the real k8s backend.

The backend talks HTTP to the fake API server of fake_apiserver.py (no real cluster can
run here). Most payloads run for real as local processes; what cannot happen for real
(an OOM kill) is scripted in the fake's kubelet. Expected verdicts are written by hand
from what each job does.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import datetime, timedelta, timezone
from typing import Any, ClassVar

import pytest

from hpcstate import ExitStatus, State
from hpcstate.backend import Backend, JobSpec
from hpcstate.options import structure_options
from hpcstate.testing.conformance import BackendConformance
from hpcstate.testing.golden import Scenario
from hpcstate_k8s import K8sOptions

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


# -- the same suite against any real cluster -------------------------------------------------

#: Set to a kubeconfig file to run the suite below against that cluster; each test gets a
#: fresh namespace (created, then deleted). Optional: HPCSTATE_K8S_CONTEXT (the context),
#: HPCSTATE_K8S_IMAGE (an image with a POSIX sh, sleep and kill; default busybox:1.36).
CLUSTER_ENV = "HPCSTATE_K8S_KUBECONFIG"
CLUSTER_POLL_S = 1.0
CLUSTER_MAX_POLLS = 600  # image pulls and scheduling take real time


def cluster_scenarios() -> list[Scenario]:
    """What runs on a real cluster (nothing scripted), with verdicts by hand."""

    def scenario(name: str, spec: JobSpec, state: State, **verdict: Any) -> Scenario:
        return Scenario(name=name, spec=spec, state=state, max_polls=CLUSTER_MAX_POLLS, **verdict)

    tag = uuid.uuid4().hex[:8]
    return [
        scenario(
            "success",
            JobSpec(command=["true"], tag=f"ok-{tag}"),
            State.COMPLETED,
            exit=ExitStatus.exited(0),
        ),
        scenario(
            "exit-3",
            JobSpec(command=["sh", "-c", "exit 3"], tag=f"e3-{tag}"),
            State.FAILED,
            exit=ExitStatus.exited(3),
        ),
        scenario(
            "sigkill-without-wrapper",
            JobSpec(command=["sh", "-c", "kill -9 $$"], tag=f"k9-{tag}"),
            State.FAILED,
            exit=ExitStatus.exited(137, ambiguous=MAYBE_SIGNAL),
        ),
        # A real OOM kill: a shell string that doubles until the 64 MiB limit is hit.
        scenario(
            "oomkilled",
            JobSpec(
                command=["sh", "-c", "x=xxxxxxxxxxxxxxxx; while :; do x=$x$x; done"],
                memory_bytes=64 * 1024 * 1024,
                tag=f"oom-{tag}",
            ),
            State.OUT_OF_MEMORY,
        ),
        scenario(
            "active-deadline",
            JobSpec(command=["sleep", "300"], tag=f"slow-{tag}", time_limit=timedelta(seconds=5)),
            State.TIMEOUT,
        ),
        scenario(
            "cancel",
            JobSpec(command=["sleep", "300"], tag=f"cancel-{tag}"),
            State.CANCELLED,
            cancel=True,
        ),
        scenario(
            "array",
            JobSpec(command=["true"], array="0-2", tag=f"arr-{tag}"),
            State.COMPLETED,
            exit=ExitStatus.exited(0),
        ),
    ]


async def create_namespace(options: dict[str, Any]) -> str:
    """A fresh namespace on the cluster the options name; returns its name."""
    from hpcstate_k8s import _commands as commands
    from hpcstate_k8s._io_kubeconfig import make_http_client
    from hpcstate_k8s._io_rest import KubeApi

    http, _ = make_http_client(structure_options(K8sOptions, options, where="conformance"))
    api = KubeApi(http, request_timeout_s=30.0)
    name = f"hpcstate-conf-{uuid.uuid4().hex[:10]}"
    try:
        await api.create(
            commands.create(
                "api/v1/namespaces",
                {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}},
            )
        )
    finally:
        await api.close()
    return name


async def delete_namespace(options: dict[str, Any], name: str) -> None:
    from hpcstate_k8s import _commands as commands
    from hpcstate_k8s._io_kubeconfig import make_http_client
    from hpcstate_k8s._io_rest import KubeApi

    http, _ = make_http_client(structure_options(K8sOptions, options, where="conformance"))
    api = KubeApi(http, request_timeout_s=30.0)
    try:
        await api.delete(commands.delete(f"api/v1/namespaces/{name}", propagation="Background"))
    finally:
        await api.close()


def cluster_options() -> dict[str, Any]:
    options: dict[str, Any] = {"kubeconfig": os.environ[CLUSTER_ENV]}
    if os.environ.get("HPCSTATE_K8S_CONTEXT"):
        options["context"] = os.environ["HPCSTATE_K8S_CONTEXT"]
    return options


class TestK8sClusterConformance(BackendConformance):
    """The suite against a real cluster: ``HPCSTATE_K8S_KUBECONFIG=~/.kube/config pytest
    tests/k8s/test_k8s_conformance.py -k Cluster`` (skipped without it)."""

    pytestmark: ClassVar[list[pytest.MarkDecorator]] = [
        pytest.mark.asyncio,
        pytest.mark.skipif(
            not os.environ.get(CLUSTER_ENV),
            reason=f"set {CLUSTER_ENV} to a kubeconfig to run the suite against that cluster",
        ),
    ]

    @pytest.fixture
    async def namespace(self) -> AsyncIterator[str]:
        options = cluster_options()
        name = await create_namespace(options)
        try:
            yield name
        finally:
            await delete_namespace(options, name)

    @pytest.fixture
    async def backend(self, namespace: str) -> AsyncIterator[Backend]:
        from hpcstate.backend import BackendConfig
        from hpcstate_k8s import BACKEND

        options = {
            **cluster_options(),
            "namespace": namespace,
            "image": os.environ.get("HPCSTATE_K8S_IMAGE", "busybox:1.36"),
        }
        made = BACKEND.make_backend(BackendConfig(name="k8s", kind="k8s", options=options))
        try:
            yield made
        finally:
            await made.close()

    @pytest.fixture
    def scenarios(self) -> list[Scenario]:
        return cluster_scenarios()

    @pytest.fixture
    def clock(self) -> RealClock:
        return RealClock()

    @pytest.fixture
    def poll_interval(self) -> float:
        return CLUSTER_POLL_S


@pytest.mark.asyncio
async def test_the_cluster_suites_namespace_helpers_on_the_fake(
    cluster: FakeCluster, kubeconfig: Any
) -> None:
    # The plumbing of the real-cluster suite, on the fake: one namespace created, then
    # deleted, through the kubeconfig the suite is given.
    options = {"kubeconfig": str(kubeconfig)}
    name = await create_namespace(options)
    assert name.startswith("hpcstate-conf-")
    assert name in cluster.namespaces
    await delete_namespace(options, name)
    assert name not in cluster.namespaces
    assert [s.name for s in cluster_scenarios()] == [
        "success",
        "exit-3",
        "sigkill-without-wrapper",
        "oomkilled",
        "active-deadline",
        "cancel",
        "array",
    ]
