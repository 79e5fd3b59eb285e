"""Fixtures for the k8s backend: a fake API server on 127.0.0.1 and a real client for it.

No Kubernetes cluster runs in this environment; see fake_apiserver.py for what is faked.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from hpcstate import Observation
from hpcstate.backend import BackendConfig

from .fake_apiserver import FakeCluster

pytest.importorskip(
    "lightkube", reason="the k8s backend needs lightkube: pip install 'hpcstate[k8s]'"
)
pytest.importorskip("aiohttp", reason="the fake API server needs aiohttp (dev dependency)")

WRAPPER = [sys.executable, "-m", "hpcstate_k8s.wrapper"]


@pytest.fixture(params=[(1, 36)], ids=["k8s-1.36"])
def version(request: pytest.FixtureRequest) -> tuple[int, int]:
    return request.param  # type: ignore[no-any-return]


@pytest.fixture
async def cluster(version: tuple[int, int]) -> AsyncIterator[FakeCluster]:
    fake = FakeCluster(version=version, kill_grace_s=2.0)
    await fake.start()
    try:
        yield fake
    finally:
        await fake.stop()


@pytest.fixture
def kubeconfig(cluster: FakeCluster, tmp_path: Path) -> Path:
    path = tmp_path / "kubeconfig"
    path.write_text(json.dumps(cluster.kubeconfig(namespace="batch")))
    return path


@pytest.fixture
def make_backend(kubeconfig: Path) -> Callable[..., Any]:
    from hpcstate_k8s import BACKEND

    made: list[Any] = []

    def make(**options: Any) -> Any:
        merged = {
            "kubeconfig": str(kubeconfig),
            "image": "busybox:1.36",
            "retry_initial_s": 0.05,
            "retry_max_s": 0.2,
            **options,
        }
        backend = BACKEND.make_backend(BackendConfig(name="k8s", kind="k8s", options=merged))
        made.append(backend)
        return backend

    return make


@pytest.fixture
async def backend(make_backend: Callable[..., Any]) -> AsyncIterator[Any]:
    made = make_backend()
    try:
        yield made
    finally:
        await made.close()


async def collect(
    stream: AsyncIterator[Observation], *, timeout: float = 20.0
) -> list[Observation]:
    """Everything a watch says until it ends by itself (all verdicts in)."""

    async def drain() -> list[Observation]:
        return [obs async for obs in stream]

    return await asyncio.wait_for(drain(), timeout)
