"""idempotent_submit on Kubernetes: find_submission(tag) finds the Job a submit with that
tag created (by its tag-hash label, then its tag annotation), so the tracker never
submits twice when a submit's answer is lost."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from hpcstate import State
from hpcstate.backend import BackendConfig, JobSpec, abilities
from hpcstate.runtime import Tracker
from hpcstate_k8s._manifest import submission_for_tag, tag_hash

from .fake_apiserver import JOB_KIND, FakeCluster


@pytest.mark.asyncio
async def test_the_job_a_tagged_submit_created_is_found(backend: Any, cluster: FakeCluster) -> None:
    assert abilities(backend).finder is backend
    sub = await backend.submit(JobSpec(command=["true"], array="0-2", tag="tag-1"))
    cluster.requests.clear()
    found = await backend.find_submission("tag-1")
    assert found is not None
    assert (found.native_id, found.array_task_ids) == (sub.native_id, sub.array_task_ids)
    assert found.native_id.startswith("batch/")  # the kubeconfig's namespace
    # one LIST, selected by hpcstate's label and the tag's hash
    [(method, path, query)] = cluster.requests
    assert (method, path) == ("GET", "/apis/batch/v1/namespaces/batch/jobs")
    assert (
        query["labelSelector"]
        == f"hpcstate.io/managed=true,hpcstate.io/tag-hash={tag_hash('tag-1')}"
    )
    assert await backend.find_submission("tag-2") is None


@pytest.mark.asyncio
async def test_a_job_in_another_namespace_this_process_created_is_found(
    make_backend: Any,
) -> None:
    backend = make_backend()
    try:
        sub = await backend.submit(
            JobSpec(command=["true"], tag="t", options={"namespace": "default"})
        )
        assert sub.native_id.startswith("default/")
        found = await backend.find_submission("t")
        assert found is not None
        assert found.native_id == sub.native_id
    finally:
        await backend.close()
    other = make_backend()  # a new process knows only its own namespace
    try:
        assert await other.find_submission("t") is None
    finally:
        await other.close()


def _job(name: str, tag: str, created: str) -> dict[str, Any]:
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "namespace": "ns",
            "name": name,
            "uid": f"uid-{name}",
            "creationTimestamp": created,
            "labels": {"hpcstate.io/managed": "true", "hpcstate.io/tag-hash": tag_hash(tag)},
            "annotations": {"hpcstate.io/tag": tag},
        },
        "spec": {"completions": 1, "parallelism": 1, "template": {"spec": {"containers": []}}},
        "status": {},
    }


def test_only_the_tag_itself_counts_and_the_oldest_wins() -> None:
    forged = _job("forged", "t", "2026-12-06T10:00:00Z")
    forged["metadata"]["annotations"]["hpcstate.io/tag"] = "another tag, same label"
    newer = _job("newer", "t", "2026-12-06T12:00:00Z")
    older = _job("older", "t", "2026-12-06T11:00:00Z")
    assert submission_for_tag([forged], "t") is None
    found = submission_for_tag([forged, newer, older], "t")
    assert found is not None
    assert found.native_id == "ns/older"
    assert submission_for_tag([], "t") is None


@pytest.mark.asyncio
async def test_a_lost_submit_answer_is_found_not_submitted_again(
    cluster: FakeCluster, kubeconfig: Path, tmp_path: Path
) -> None:
    cluster.lose_create_answers = 1
    options = {
        "kubeconfig": str(kubeconfig),
        "image": "busybox:1.36",
        "retry_initial_s": 0.05,
        "retry_max_s": 0.2,
    }
    config = BackendConfig(name="k8s", kind="k8s", options=options)
    async with Tracker(
        store=tmp_path / "hpcstate.db",
        backends={"k8s": config},
        fast_interval=0.05,
        max_interval=0.5,
        seed=1,
    ) as tracker:
        run = await tracker.submit(JobSpec(command=["true"], tag="lost-answer"), backend="k8s")
        run = await asyncio.wait_for(tracker.wait(run.id, timeout=60), 90)
    [item] = run.items
    assert item.state is State.COMPLETED, json.dumps(str(item))
    posts = [r for r in cluster.requests if r[0] == "POST"]
    assert len(posts) == 1  # submitted once; the answer was lost, the Job found by its tag
    assert [name for _, name in cluster.objects[JOB_KIND]] == [item.native_id.split("/")[1]]
