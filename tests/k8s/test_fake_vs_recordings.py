"""The fake API server (fake_apiserver.py) against the real 1.36.2 control plane.

Each recorded case is run again on the fake, submitted by the real backend with the
recorded command and options, with the same action (hpcstate's cancel, someone else's
background delete). The Job and pod watch streams the fake writes are then compared with
the recorded ones, reduced to what the backend reads:

* the Job's status shape per event: which counters are there (zero ones are omitted),
  ``uncountedTerminatedPods`` (how many pods in each list), ``terminating``, the
  condition types in order, deletion;
* each pod's life: phase (pending/running are one: the stand-in kubelet syncs every
  0.5 s, so a short container may skip Running), the job-tracking finalizer,
  ``deletionGracePeriodSeconds`` (30, then the final grace-0 DELETE), the exit code;
* the order of the milestones across both streams (a pod ends, the interim condition,
  the finalizer goes, the final condition, deletions).

``ready`` is compared apart (it moves with the stand-in kubelet's timing): 1 while a
pod runs, as recorded. Where the fake and the recordings differ, the recordings win:
this test fails.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from hpcstate.backend import JobSpec

from .fake_apiserver import JOB_KIND, POD_KIND, FakeCluster
from .recordings import JOBS, PODS, load

pytestmark = pytest.mark.asyncio

Entry = tuple[str, str, dict[str, Any]]  # (kind, event type, object)


def _conditions(obj: dict[str, Any]) -> tuple[str, ...]:
    return tuple(c["type"] for c in (obj.get("status") or {}).get("conditions") or [])


def job_shapes(entries: list[Entry]) -> list[tuple[Any, ...]]:
    shapes: list[tuple[Any, ...]] = []
    for kind, etype, obj in entries:
        if kind != JOBS:
            continue
        status = obj.get("status") or {}
        counters = tuple(
            (k, status[k]) for k in ("active", "succeeded", "failed", "terminating") if k in status
        )
        uncounted = status.get("uncountedTerminatedPods")
        shape = (
            etype if etype != "MODIFIED" else "",
            bool(obj["metadata"].get("deletionTimestamp")),
            counters,
            None if uncounted is None else tuple(sorted((k, len(v)) for k, v in uncounted.items())),
            _conditions(obj),
        )
        if not shapes or shapes[-1] != shape:
            shapes.append(shape)
    return shapes


def pod_lives(entries: list[Entry]) -> list[list[tuple[Any, ...]]]:
    lives: dict[str, list[tuple[Any, ...]]] = {}
    for kind, etype, obj in entries:
        if kind != PODS:
            continue
        meta, status = obj["metadata"], obj.get("status") or {}
        phase = status.get("phase")
        terminated = next(
            (
                c["state"]["terminated"]
                for c in status.get("containerStatuses") or []
                if "terminated" in (c.get("state") or {})
            ),
            None,
        )
        step = (
            "ADDED" if etype == "ADDED" else etype if etype == "DELETED" else "",
            phase if phase in ("Succeeded", "Failed") else "active",
            bool(meta.get("finalizers")),
            meta.get("deletionGracePeriodSeconds"),
            terminated["exitCode"] if terminated else None,
        )
        life = lives.setdefault(meta["uid"], [])
        if not life or life[-1] != step:
            life.append(step)
    return list(lives.values())


def milestones(entries: list[Entry]) -> list[str]:
    """What happened, in the order the API server wrote it, across both streams."""
    seen: list[str] = []
    conditions: tuple[str, ...] = ()
    pods: dict[str, tuple[Any, ...]] = {}
    job_deleting = False
    for kind, etype, obj in entries:
        meta = obj["metadata"]
        if kind == JOBS:
            now = _conditions(obj)
            seen.extend(f"job {c}" for c in now[len(conditions) :])
            conditions = now
            if meta.get("deletionTimestamp") and not job_deleting:
                job_deleting = True
                seen.append("job deleting")
            if etype == "DELETED":
                seen.append("job DELETED")
            continue
        before = pods.get(meta["uid"], (False, True, None))
        ended = (obj.get("status") or {}).get("phase") in ("Succeeded", "Failed")
        fin = bool(meta.get("finalizers"))
        grace = meta.get("deletionGracePeriodSeconds")
        if ended and not before[0]:
            seen.append("pod ended")
        if before[1] and not fin:
            seen.append("pod finalizer gone")
        if grace != before[2] and grace is not None:
            seen.append(f"pod grace {grace}")
        if etype == "DELETED":
            seen.append("pod DELETED")
        pods[meta["uid"]] = (ended, fin, grace)
    return seen


def readies(entries: list[Entry]) -> set[int]:
    return {
        (obj.get("status") or {}).get("ready", -1) for kind, _, obj in entries if kind == JOBS
    } - {-1}


def recorded(case: str) -> list[Entry]:
    return [(e.kind, e.type, e.obj) for e in load(case).events]


def faked(cluster: FakeCluster) -> list[Entry]:
    kinds = {JOB_KIND: JOBS, POD_KIND: PODS}
    return [(kinds[kind], event, obj) for _, kind, event, _, obj in cluster.log]


async def wait_for(predicate: Callable[[], bool], timeout: float = 60.0) -> None:
    async def poll() -> None:
        while not predicate():
            await asyncio.sleep(0.02)

    await asyncio.wait_for(poll(), timeout)


CASES = [
    "ok",
    "exit3",
    "sigkill",
    "timeout",
    "retry_then_ok",
    "ttl_fail",
    "cancel_running",
    "deleted_mid_run",
]


@pytest.mark.parametrize("case", CASES)
async def test_the_fake_writes_what_1_36_wrote(
    case: str, cluster: FakeCluster, make_backend: Callable[..., Any], tmp_path: Path
) -> None:
    recording = load(case)
    argv = [a.replace("/home/user/k8smatrix", str(tmp_path)) for a in recording.argv]
    options = {
        k: str(v)
        for k, v in recording.meta["hpcstate_backend_options"].items()
        if k not in ("kind", "namespace", "manifest", "image")
    }
    limit = timedelta(seconds=1) if case == "timeout" else None
    if case == "ttl_fail":
        argv = ["/bin/sh", "-c", "sleep 0.5; exit 3"]  # the recording's sleep 3, shorter
    backend = make_backend()
    try:
        sub = await backend.submit(
            JobSpec(command=argv, time_limit=limit, tag=f"rec-{case}", options=options)
        )
        ns, name = sub.native_id.split("/")

        def running() -> bool:
            return any(
                p.get("status", {}).get("phase") == "Running" for p in cluster.pods_of(ns, name)
            )

        if case == "cancel_running":
            await wait_for(running)
            await backend.cancel([sub.native_id])
        elif case == "deleted_mid_run":
            await wait_for(running)
            cluster._delete_job((ns, name), "Background")
        if case in ("cancel_running", "deleted_mid_run", "ttl_fail"):
            await wait_for(lambda: cluster.job(ns, name) is None and not cluster.pods_of(ns, name))
        else:
            await wait_for(
                lambda: (
                    {"Complete", "Failed"} & set(_conditions(cluster.job(ns, name) or {})) != set()
                    and not any(
                        p.get("status", {}).get("phase") in ("Pending", "Running")
                        for p in cluster.pods_of(ns, name)
                    )
                )
            )
            await asyncio.sleep(0.2)  # the last finalizer removal
    finally:
        await backend.close()
    real, fake = recorded(case), faked(cluster)
    assert job_shapes(fake) == job_shapes(real)
    assert pod_lives(fake) == _pod_lives_comparable(pod_lives(real), pod_lives(fake))
    assert milestones(fake) == milestones(real)
    if 1 in readies(real):
        assert 1 in readies(fake)  # ready: 1 while the pod runs


def _pod_lives_comparable(
    real: list[list[tuple[Any, ...]]], fake: list[list[tuple[Any, ...]]]
) -> list[list[tuple[Any, ...]]]:
    """The recorded lives, with the exit codes of the payloads that depend on the host:
    none do (exit 0, 1, 3, 137 and 143 come from the commands and the TERM sent)."""
    del fake
    return real


async def test_the_fake_adds_1_36_defaults(
    cluster: FakeCluster, make_backend: Callable[..., Any]
) -> None:
    recording = load("indexed_one_fails")
    backend = make_backend()
    try:
        sub = await backend.submit(JobSpec(command=["true"], array="0-2", tag="defaults"))
        ns, name = sub.native_id.split("/")
        await wait_for(
            lambda: (
                "Failed" in _conditions(cluster.job(ns, name) or {})
                or "Complete" in _conditions(cluster.job(ns, name) or {})
            )
        )
    finally:
        await backend.close()
    real_job = recording.job
    fake_job = next(obj for _, kind, event, _, obj in cluster.log if kind == JOB_KIND)
    for key in ("podReplacementPolicy", "manualSelector", "suspend", "completionMode"):
        assert fake_job["spec"][key] == real_job["spec"][key]
    assert set(fake_job["metadata"]) >= {"managedFields", "uid", "generation"}
    real_pod = next(e.obj for e in recording.events if e.kind == PODS)
    fake_pod = next(obj for _, kind, _, _, obj in cluster.log if kind == POD_KIND)
    assert set(real_pod["metadata"]["annotations"]) - {"hpcstate.io/tag"} <= set(
        fake_pod["metadata"]["annotations"]
    )
    real_env = {e["name"]: e for e in real_pod["spec"]["containers"][0]["env"]}
    fake_env = {e["name"]: e for e in fake_pod["spec"]["containers"][0]["env"]}
    assert fake_env["JOB_COMPLETION_INDEX"] == real_env["JOB_COMPLETION_INDEX"]
    # The first status of a Job with backoffLimitPerIndex has failedIndexes "" (1.36).
    first_status = next(
        obj["status"] for _, kind, _, _, obj in cluster.log if kind == JOB_KIND and obj["status"]
    )
    assert first_status.get("failedIndexes") == ""
    # No BOOKMARK unless a test asks for one (none came within a minute from 1.36).
    assert all(event != "BOOKMARK" for _, _, event, _, _ in cluster.log)
    assert json.dumps(fake_job)  # plain JSON, as served
