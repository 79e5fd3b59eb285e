"""The real backend (lightkube config + httpx2) against the fake API server over HTTP.

The payloads of most Jobs run for real as local processes (exit codes and signals are the
kernel's); OOM kills, evictions and the like are scripted in the fake (fake_apiserver.py).
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from hpcstate import (
    Absence,
    BackendError,
    ExitStatus,
    Observation,
    ReasonKind,
    RunItem,
    State,
    advance,
    new_item,
    submitted,
)
from hpcstate.backend import Backend, JobSpec, abilities

from .conftest import WRAPPER, collect
from .fake_apiserver import JOB_KIND, POD_KIND, FakeCluster, Outcome

both_versions = pytest.mark.parametrize(
    "version", [(1, 36), (1, 30)], ids=["k8s-1.36", "k8s-1.30"], indirect=True
)


def core_item(native_id: str, observations: Sequence[Observation]) -> RunItem:
    """Run the observations through hpcstate's state machine, as a tracker would."""
    t0 = datetime(2020, 1, 1, tzinfo=timezone.utc)
    item = new_item(id="i", run_id="r", backend="k8s", now=t0)
    item = submitted(item, native_id=native_id, at=t0).item
    for obs in observations:
        item = advance(item, obs).item
    return item


def finals(observations: Sequence[Observation]) -> list[Observation]:
    return [o for o in observations if o.final or o.absence is not None]


def verdict_of(observations: Sequence[Observation]) -> Observation:
    """The verdict: every final observation says the same state; later ones may add stats
    (an exit code from a pod that ended after the Job's condition, on k8s <= 1.30)."""
    found = finals(observations)
    assert found, "no verdict"
    assert len({o.state for o in found}) == 1, [o.state for o in found]
    return found[-1]


async def wait_for(predicate: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.02)


async def follow(backend: Any, native_ids: Sequence[str], seen: list[Observation]) -> None:
    async for obs in backend.watch(native_ids):
        seen.append(obs)  # noqa: PERF401 - tests read `seen` while the watch runs


async def run_to_end(backend: Any, spec: JobSpec) -> tuple[str, list[Observation]]:
    sub = await backend.submit(spec)
    return sub.native_id, await collect(backend.watch([sub.native_id]))


# -- outcomes ------------------------------------------------------------------------------


@both_versions
async def test_success(backend: Any, cluster: FakeCluster) -> None:
    assert isinstance(backend, Backend)
    assert abilities(backend).watcher is backend  # push is declared, and watch() exists
    native_id, seen = await run_to_end(backend, JobSpec(command=["true"], tag="ok"))
    states = [o.state for o in seen]
    assert states[-1] is State.COMPLETED
    assert seen[-1].final
    assert State.RUNNING in states
    assert seen[-1].stats.exit == ExitStatus.exited(0)
    item = core_item(native_id, seen)
    assert item.succeeded
    assert item.confirmed
    [queued] = await backend.queue([native_id])
    assert (queued.state, queued.final) == (State.COMPLETED, True)


@both_versions
async def test_exit_3(backend: Any) -> None:
    native_id, seen = await run_to_end(backend, JobSpec(command=["sh", "-c", "exit 3"], tag="e3"))
    verdict = verdict_of(seen)
    assert verdict.state is State.FAILED
    assert verdict.stats.exit == ExitStatus.exited(3)
    assert verdict.stats.reason is not None
    # Issue 13: the reason follows the container's exit, not the Job's backoff bookkeeping.
    assert verdict.stats.reason.kind is ReasonKind.NON_ZERO_EXIT_CODE
    assert verdict.stats.reason.text == "exit 3"
    assert verdict.stats.reason.detail.startswith("BackoffLimitExceeded")
    item = core_item(native_id, seen)
    assert (item.state, item.confirmed, item.exit) == (State.FAILED, True, ExitStatus.exited(3))


async def test_oomkilled(backend: Any, cluster: FakeCluster) -> None:
    cluster.script("oom", Outcome(exit_code=137, reason="OOMKilled"))
    _, seen = await run_to_end(backend, JobSpec(command=["eat-memory"], options={"name": "oom"}))
    verdict = verdict_of(seen)
    assert verdict.state is State.OUT_OF_MEMORY
    assert verdict.stats.exit is not None
    assert (verdict.stats.exit.code, verdict.stats.exit.exact) == (137, False)


async def test_sigkill_without_wrapper_stays_an_ambiguous_137(backend: Any) -> None:
    native_id, seen = await run_to_end(
        backend, JobSpec(command=["sh", "-c", "kill -9 $$"], tag="k9")
    )
    exit_ = verdict_of(seen).stats.exit
    assert exit_ is not None
    assert (exit_.code, exit_.signal, exit_.exact) == (137, None, False)
    item = core_item(native_id, seen)
    assert item.has_marker("exit_ambiguous")


async def test_sigkill_with_wrapper_is_exactly_sigkill(make_backend: Any) -> None:
    backend = make_backend(wrapper=True, wrapper_command=WRAPPER)
    try:
        native_id, seen = await run_to_end(
            backend, JobSpec(command=["sh", "-c", "kill -9 $$"], tag="k9w")
        )
    finally:
        await backend.close()
    verdict = verdict_of(seen)
    assert verdict.state is State.FAILED
    assert verdict.stats.exit == ExitStatus.killed(9)
    assert not core_item(native_id, seen).has_marker("exit_ambiguous")


async def test_wrapper_keeps_a_real_exit_137_an_exit(make_backend: Any) -> None:
    backend = make_backend(wrapper=True, wrapper_command=WRAPPER)
    try:
        _, seen = await run_to_end(backend, JobSpec(command=["sh", "-c", "exit 137"], tag="x137"))
    finally:
        await backend.close()
    assert verdict_of(seen).stats.exit == ExitStatus.exited(137)


async def test_backoff_limit_exceeded_after_retries(backend: Any, cluster: FakeCluster) -> None:
    spec = JobSpec(command=["sh", "-c", "exit 1"], tag="retry", options={"backoff_limit": "2"})
    native_id, seen = await run_to_end(backend, spec)
    verdict = verdict_of(seen)
    assert verdict.state is State.FAILED
    assert verdict.stats.exit == ExitStatus.exited(1)
    ns, name = native_id.split("/")
    assert len(cluster.pods_of(ns, name)) == 3  # the first try and two retries
    job = cluster.job(ns, name)
    assert job is not None
    assert job["status"]["failed"] == 3
    # Once a pod ran, a retry waiting for its pod never reads as "queued" (a requeue).
    states = [o.state for o in seen]
    first_running = states.index(State.RUNNING)
    assert State.QUEUED not in states[first_running:]


@both_versions
async def test_pods_killed_by_the_controller_are_not_the_failure(
    backend: Any, cluster: FakeCluster
) -> None:
    # Two pods in parallel: one fails by itself (exit 2); the controller then kills the
    # other (143), which the Job's `failed` counter includes too.
    manifest = (
        '{"apiVersion": "batch/v1", "kind": "Job", "spec": {"parallelism": 2, "completions": 2,'
        ' "template": {"spec": {"restartPolicy": "Never",'
        ' "containers": [{"name": "main", "image": "x"}]}}}}'
    )
    cluster.script("pair", Outcome(exit_code=2, run_s=0.2), Outcome(hang=True))
    spec = JobSpec(command=["x"], options={"name": "pair", "manifest": manifest})
    native_id, seen = await run_to_end(backend, spec)
    verdict = verdict_of(seen)
    assert (verdict.state, verdict.stats.exit) == (State.FAILED, ExitStatus.exited(2))
    await wait_for(
        lambda: (cluster.job("batch", "pair") or {}).get("status", {}).get("failed") == 2
    )
    assert core_item(native_id, seen).exit == ExitStatus.exited(2)


@both_versions
async def test_active_deadline_is_timeout(backend: Any) -> None:
    spec = JobSpec(command=["sleep", "30"], tag="slow", time_limit=timedelta(seconds=1))
    native_id, seen = await run_to_end(backend, spec)
    verdict = verdict_of(seen)
    assert verdict.state is State.TIMEOUT
    assert verdict.stats.reason is not None
    assert verdict.stats.reason.kind is ReasonKind.TIME_LIMIT
    item = core_item(native_id, seen)
    assert item.state is State.TIMEOUT
    # sleep was TERMed by the deletion: 143, which may be a plain exit for all anyone knows.
    assert item.exit is not None
    assert (item.exit.code, item.exit.exact) == (143, False)


async def test_start_error(backend: Any) -> None:
    _, seen = await run_to_end(backend, JobSpec(command=["/no/such/binary"], tag="nx"))
    verdict = verdict_of(seen)
    assert (verdict.state, verdict.stats.exit) == (State.FAILED, None)
    assert verdict.stats.reason is not None
    assert verdict.stats.reason.kind is ReasonKind.JOB_LAUNCH_FAILURE


async def test_eviction_is_node_fail(backend: Any, cluster: FakeCluster) -> None:
    cluster.script(
        "ev",
        Outcome(
            exit_code=137,
            pod_reason="Evicted",
            pod_message="The node was low on resource: memory.",
            disruption="TerminationByKubelet",
        ),
    )
    _, seen = await run_to_end(backend, JobSpec(command=["x"], options={"name": "ev"}))
    assert verdict_of(seen).state is State.NODE_FAIL


# -- TTL, deletion, cancel -------------------------------------------------------------------


async def test_ttl_deletion_after_the_verdict_keeps_it(backend: Any, cluster: FakeCluster) -> None:
    spec = JobSpec(
        command=["sh", "-c", "exit 3"], tag="ttl-after", options={"ttl_seconds_after_finished": "0"}
    )
    native_id, seen = await run_to_end(backend, spec)
    ns, name = native_id.split("/")
    await wait_for(lambda: cluster.job(ns, name) is None)
    [queued] = await backend.queue([native_id])
    # Issue 13: the API forgot the Job, but the watch carried the verdict: the next poll
    # (the runtime only wakes on the watch, then LISTs) gets that verdict, not "gone".
    assert queued.absence is None
    assert (queued.state, queued.final, queued.stats.exit) == (
        State.FAILED,
        True,
        ExitStatus.exited(3),
    )
    item = core_item(native_id, [*seen, queued])
    assert (item.state, item.exit) == (State.FAILED, ExitStatus.exited(3))


async def test_ttl_deletion_before_any_verdict_is_gone_not_failed(
    backend: Any, cluster: FakeCluster
) -> None:
    spec = JobSpec(
        command=["sh", "-c", "exit 3"],
        tag="ttl-before",
        options={"ttl_seconds_after_finished": "0"},
    )
    sub = await backend.submit(spec)
    ns, name = sub.native_id.split("/")
    await wait_for(lambda: cluster.job(ns, name) is None)
    [queued] = await backend.queue([sub.native_id])
    watched = await collect(backend.watch([sub.native_id]))
    for obs in (queued, *watched):
        assert (obs.state, obs.absence) == (None, Absence.UNKNOWN)
    item = core_item(sub.native_id, [queued])
    assert item.state is State.GONE
    assert not item.failed


async def test_cancel_is_reported_as_cancelled(
    make_backend: Any, cluster: FakeCluster, tmp_path: Path
) -> None:
    backend = make_backend(wrapper=True, wrapper_command=WRAPPER)
    ready = tmp_path / "ready"
    try:
        command = ["sh", "-c", f"touch {ready}; exec sleep 30"]
        sub = await backend.submit(JobSpec(command=command, tag="cancel-me"))
        seen: list[Observation] = []
        task = asyncio.ensure_future(follow(backend, [sub.native_id], seen))
        await wait_for(lambda: any(o.state is State.RUNNING for o in seen))
        await wait_for(ready.exists)  # the wrapper forwards signals once its child runs
        await backend.cancel([sub.native_id])
        await asyncio.wait_for(task, 20)
        [queued] = await backend.queue([sub.native_id])
    finally:
        await backend.close()
    verdicts = [o for o in seen if o.state is State.CANCELLED]
    assert verdicts
    assert all(o.final for o in verdicts)
    assert not any(o.absence is not None for o in seen)  # never "gone"
    assert queued.state is State.CANCELLED
    item = core_item(sub.native_id, seen)
    assert (item.state, item.confirmed) == (State.CANCELLED, True)
    # The wrapper saw the forwarded TERM kill sleep: exact, not "143".
    assert item.exit == ExitStatus.killed(15)
    name = sub.native_id.split("/")[1]
    deletes = [q for m, p, q in cluster.requests if m == "DELETE" and p.endswith(f"/jobs/{name}")]
    assert deletes == [{"propagationPolicy": "Foreground"}]


async def test_cancel_after_completion_keeps_the_verdict(backend: Any) -> None:
    native_id, seen = await run_to_end(backend, JobSpec(command=["true"], tag="done-then-cancel"))
    await backend.cancel([native_id])
    [queued] = await backend.queue([native_id])
    assert queued.state in (State.COMPLETED, None)  # finished before the delete, or gone
    assert queued.state is not State.CANCELLED
    assert core_item(native_id, [*seen, queued]).state is State.COMPLETED


# -- the watch machinery ------------------------------------------------------------------------


async def test_dropped_streams_and_410_never_lose_the_verdict(
    backend: Any, cluster: FakeCluster
) -> None:
    sub = await backend.submit(JobSpec(command=["sh", "-c", "sleep 1; exit 3"], tag="drops"))
    seen: list[Observation] = []
    task = asyncio.ensure_future(follow(backend, [sub.native_id], seen))
    await wait_for(lambda: any(o.state is State.RUNNING for o in seen))
    lists_before = cluster.count("GET", "/jobs", watch=False)
    # Everything the watch saw is compacted away and the streams die without a goodbye:
    # resuming from the last resourceVersion gets 410, the client must LIST again.
    cluster.compact()
    cluster.drop_streams(JOB_KIND)
    cluster.drop_streams(POD_KIND)
    await asyncio.wait_for(task, 20)
    assert cluster.count("GET", "/jobs", watch=False) > lists_before
    verdict = verdict_of(seen)
    assert (verdict.state, verdict.stats.exit) == (State.FAILED, ExitStatus.exited(3))


async def test_forced_410_on_every_rewatch_is_survived(backend: Any, cluster: FakeCluster) -> None:
    cluster.expire_watches[JOB_KIND] = 3
    cluster.expire_watches[POD_KIND] = 3
    spec = JobSpec(command=["sh", "-c", "sleep 1; exit 4"], tag="gone410")
    _, seen = await run_to_end(backend, spec)
    assert verdict_of(seen).stats.exit == ExitStatus.exited(4)
    assert cluster.expire_watches == {JOB_KIND: 0, POD_KIND: 0}


async def test_bookmarks_let_a_clean_reconnect_skip_the_list(
    backend: Any, cluster: FakeCluster
) -> None:
    sub = await backend.submit(JobSpec(command=["sh", "-c", "sleep 1"], tag="bookmarks"))
    seen: list[Observation] = []
    task = asyncio.ensure_future(follow(backend, [sub.native_id], seen))
    await wait_for(lambda: any(o.state is State.RUNNING for o in seen))
    await wait_for(lambda: cluster.count("GET", "/jobs", watch=True) >= 1)
    lists = cluster.count("GET", "/jobs", watch=False)
    cluster.send_bookmarks()
    await asyncio.sleep(0.2)
    bookmark_rv = cluster.rv
    cluster.compact()  # history before the bookmark is gone
    cluster.end_streams(JOB_KIND)  # a clean end, like timeoutSeconds
    await asyncio.wait_for(task, 20)
    job_watches = [
        q for m, p, q in cluster.requests if m == "GET" and p.endswith("/jobs") and q.get("watch")
    ]
    assert job_watches[-1]["resourceVersion"] == str(bookmark_rv)
    assert cluster.count("GET", "/jobs", watch=False) == lists  # no 410, so no new LIST
    assert verdict_of(seen).state is State.COMPLETED


async def test_pod_events_arriving_late_do_not_change_the_first_verdict(
    backend: Any, cluster: FakeCluster
) -> None:
    cluster.delay_pod_events_s = 0.5  # the Job's Failed arrives before the pod's OOMKilled
    cluster.script("late", Outcome(exit_code=137, reason="OOMKilled"))
    _, seen = await run_to_end(backend, JobSpec(command=["x"], options={"name": "late"}))
    first_verdict = next(o for o in seen if o.final)
    assert first_verdict.state is State.OUT_OF_MEMORY


@both_versions
async def test_a_late_retrys_oom_kill_is_the_first_verdict(
    backend: Any, cluster: FakeCluster
) -> None:
    # Attempt 1 exits 1 (its pod event arrives in time); the retry is OOM-killed and the
    # Job fails, but that pod's event arrives after the Job's Failed.
    cluster.delay_pod_events_s = 0.5
    cluster.script(
        "retry",
        Outcome(exit_code=1, run_s=0.05),
        Outcome(exit_code=137, reason="OOMKilled", run_s=0.8),
    )
    spec = JobSpec(command=["x"], options={"name": "retry", "backoff_limit": "1"})
    native_id, seen = await run_to_end(backend, spec)
    first_verdict = next(o for o in seen if o.final)
    assert first_verdict.state is State.OUT_OF_MEMORY
    assert first_verdict.stats.exit is not None
    assert first_verdict.stats.exit.code == 137
    assert core_item(native_id, seen).state is State.OUT_OF_MEMORY


async def test_a_transient_error_listing_pods_delays_the_verdict_not_degrades_it(
    backend: Any, cluster: FakeCluster
) -> None:
    cluster.delay_pod_events_s = 1.0  # the Job's Failed comes well before the pod's OOM
    cluster.script("flaky", Outcome(exit_code=137, reason="OOMKilled", run_s=0.3))
    sub = await backend.submit(JobSpec(command=["x"], options={"name": "flaky"}))
    seen: list[Observation] = []
    task = asyncio.ensure_future(follow(backend, [sub.native_id], seen))
    await wait_for(lambda: bool(seen))  # the first LISTs are done
    cluster.fail_pod_lists = [503, 503]
    await asyncio.wait_for(task, 20)
    assert cluster.fail_pod_lists == []  # both failed LISTs were retried
    first_verdict = next(o for o in seen if o.final)
    assert first_verdict.state is State.OUT_OF_MEMORY


def job_failed(job: dict[str, Any] | None) -> bool:
    """The Job carries the Failed condition (not the word anywhere: 1.36's default
    podReplacementPolicy is "TerminatingOrFailed")."""
    conditions = ((job or {}).get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Failed" and c.get("status") == "True" for c in conditions)


async def test_verdicts_waiting_for_pods_share_one_pod_list(
    backend: Any, cluster: FakeCluster
) -> None:
    names = ["f0", "f1", "f2"]
    for name in names:
        cluster.script(name, Outcome(exit_code=3, run_s=1.0))
    ids = [
        (await backend.submit(JobSpec(command=["x"], options={"name": n}))).native_id for n in names
    ]
    seen: list[Observation] = []
    task = asyncio.ensure_future(follow(backend, ids, seen))
    await wait_for(lambda: {o.native_id for o in seen if o.state is State.RUNNING} == set(ids))
    # The Job stream stalls while all three fail, then breaks: the Jobs' LIST brings
    # three failure verdicts at once, and their pods are listed once for all of them.
    cluster.paused.add(JOB_KIND)
    await wait_for(lambda: all(job_failed(cluster.job("batch", n)) for n in names))
    mark = len(cluster.requests)
    cluster.paused.clear()
    cluster.drop_streams(JOB_KIND)
    await asyncio.wait_for(task, 20)
    uid_lists = [
        q["labelSelector"]
        for m, part, q in _calls_since(cluster, mark)
        if part == "pods" and "watch" not in q and "controller-uid" in q.get("labelSelector", "")
    ]
    uids = sorted((cluster.job("batch", n) or {})["metadata"]["uid"] for n in names)
    assert uid_lists == [f"controller-uid in ({','.join(uids)})"]
    for native_id in ids:
        assert (verdict_of([o for o in seen if o.native_id == native_id]).stats.exit) == (
            ExitStatus.exited(3)
        )


async def test_a_watch_started_after_the_failures_needs_no_extra_pod_list(
    backend: Any, cluster: FakeCluster
) -> None:
    sub = await backend.submit(JobSpec(command=["sh", "-c", "exit 5"], tag="done-before"))
    ns, name = sub.native_id.split("/")
    await wait_for(lambda: job_failed(cluster.job(ns, name)))
    mark = len(cluster.requests)
    seen = await collect(backend.watch([sub.native_id]))
    assert verdict_of(seen).stats.exit == ExitStatus.exited(5)
    pod_lists = [
        q for m, part, q in _calls_since(cluster, mark) if part == "pods" and "watch" not in q
    ]
    assert pod_lists == [{"labelSelector": "hpcstate.io/managed=true"}]  # the namespace's LIST


def _broken_job(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": name,
            "namespace": "batch",
            "uid": "33333333-3333-4333-8333-333333333333",
            "labels": {"hpcstate.io/managed": "true"},
        },
        "spec": {"template": {"spec": {"containers": [{"name": "main", "image": "x"}]}}},
        "status": {"failed": "two"},  # no Kubernetes writes this
    }


async def test_an_unreadable_job_or_pod_does_not_stop_the_watch(
    backend: Any, cluster: FakeCluster
) -> None:
    cluster.inject(JOB_KIND, _broken_job("broken"))
    sub = await backend.submit(JobSpec(command=["sh", "-c", "sleep 0.5; exit 3"], tag="fine"))
    seen: list[Observation] = []
    task = asyncio.ensure_future(follow(backend, [sub.native_id, "batch/broken"], seen))
    await wait_for(lambda: any(o.native_id == "batch/broken" for o in seen))
    [broken] = [o for o in seen if o.native_id == "batch/broken"]
    assert (broken.absence, [m.code for m in broken.markers]) == (Absence.NO_RECORD, ["unreadable"])
    assert "status.failed" in broken.markers[0].text
    # A pod of the watched Job that cannot be read either.
    ns, name = sub.native_id.split("/")
    job = cluster.job(ns, name)
    assert job is not None
    bad_pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": f"{name}-bad",
            "namespace": ns,
            "uid": "pod-bad",
            "labels": {
                "hpcstate.io/managed": "true",
                "job-name": name,
                "controller-uid": job["metadata"]["uid"],
            },
        },
        "spec": {"containers": "main"},
        "status": {"phase": "Failed"},
    }
    cluster.inject(POD_KIND, bad_pod)
    await wait_for(lambda: any(o.native_id == sub.native_id and o.final for o in seen))
    verdict = verdict_of([o for o in seen if o.native_id == sub.native_id])
    assert (verdict.state, verdict.stats.exit) == (State.FAILED, ExitStatus.exited(3))
    # The broken Job gets fixed: its verdict comes through the same watch.
    fixed = _broken_job("broken")
    fixed["status"] = {
        "succeeded": 1,
        "conditions": [{"type": "Complete", "status": "True", "reason": "CompletionsReached"}],
    }
    cluster.inject(JOB_KIND, fixed, "MODIFIED")
    await asyncio.wait_for(task, 20)
    broken_states = [o.state for o in seen if o.native_id == "batch/broken"]
    assert broken_states == [None, State.COMPLETED]  # nothing known, then the verdict


async def test_queue_survives_an_unreadable_job(backend: Any, cluster: FakeCluster) -> None:
    cluster.inject(JOB_KIND, _broken_job("broken"))
    ours = (await backend.submit(JobSpec(command=["true"], tag="readable"))).native_id
    await wait_for(functools.partial(_finished, cluster, *ours.split("/")))
    broken, fine = await backend.queue(["batch/broken", ours])
    assert (broken.state, broken.absence) == (None, Absence.NO_RECORD)
    assert [m.code for m in broken.markers] == ["unreadable"]
    assert fine.state is State.COMPLETED
    item = core_item("batch/broken", [broken])
    assert item.state is State.QUEUED  # nothing decided
    assert item.has_marker("unreadable")


# -- arrays, idempotency, batching, adoption ------------------------------------------------------


async def test_indexed_job_with_one_failed_index(backend: Any, cluster: FakeCluster) -> None:
    cluster.script_index("arr", 1, Outcome(exit_code=5))
    cluster.script_index("arr", 0, Outcome(exit_code=0))
    cluster.script_index("arr", 2, Outcome(exit_code=0))
    sub = await backend.submit(JobSpec(command=["x"], array="0-2", options={"name": "arr"}))
    assert sub.array_task_ids == ("batch/arr[0]", "batch/arr[1]", "batch/arr[2]")
    seen = await collect(backend.watch(sub.array_task_ids))
    by_id = {o.native_id: o for o in seen if o.final}
    assert by_id["batch/arr[0]"].state is State.COMPLETED
    assert by_id["batch/arr[2]"].state is State.COMPLETED
    assert by_id["batch/arr[1]"].state is State.FAILED
    assert by_id["batch/arr[1]"].stats.exit == ExitStatus.exited(5)
    results = await backend.queue([*sub.array_task_ids, sub.native_id])
    assert [o.state for o in results] == [
        State.COMPLETED,
        State.FAILED,
        State.COMPLETED,
        State.FAILED,
    ]


async def test_every_array_task_sees_hpcstate_array_index(backend: Any) -> None:
    # docs/cli.md's promise, on the fake's kubelet, which resolves the Downward API
    # fieldRef from the pod (as JOB_COMPLETION_INDEX, recorded from 1.36, is resolved).
    script = (
        '[ -n "$HPCSTATE_ARRAY_INDEX" ] && [ "$HPCSTATE_ARRAY_INDEX" = "$JOB_COMPLETION_INDEX" ]'
        " || exit 99; exit $((HPCSTATE_ARRAY_INDEX + 10))"
    )
    sub = await backend.submit(JobSpec(command=["sh", "-c", script], array="0-2", tag="idx"))
    seen = await collect(backend.watch(list(sub.array_task_ids)))
    exits = {
        nid: verdict_of([o for o in seen if o.native_id == nid]).stats.exit
        for nid in sub.array_task_ids
    }
    assert exits == {f"{sub.native_id}[{i}]": ExitStatus.exited(10 + i) for i in range(3)}


async def test_submit_retry_finds_the_job_it_created(backend: Any, cluster: FakeCluster) -> None:
    spec = JobSpec(command=["sleep", "5"], tag="run-7/item-3", name="retry")
    first = await backend.submit(spec)
    second = await backend.submit(spec)  # e.g. the first answer was lost
    assert first.native_id == second.native_id
    assert cluster.count("POST", "/jobs") == 2
    assert len([k for k in cluster.objects[JOB_KIND] if k[1].startswith("retry-")]) == 1
    other = JobSpec(
        command=["sleep", "5"], tag="someone-else", options={"name": first.native_id.split("/")[1]}
    )
    with pytest.raises(BackendError, match="already exists"):
        await backend.submit(other)
    await backend.cancel([first.native_id])


def _calls_since(cluster: FakeCluster, mark: int) -> list[tuple[str, str, dict[str, str]]]:
    """(method, last path part, query without paging) of the requests after mark."""
    return [
        (m, p.rsplit("/", 1)[-1], {k: v for k, v in q.items() if k != "limit"})
        for m, p, q in cluster.requests[mark:]
    ]


async def _post_unlabeled_job(cluster: FakeCluster, name: str, command: str) -> None:
    import httpx2

    manifest = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name},
        "spec": {
            "backoffLimit": 0,
            "template": {
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [{"name": "c", "image": "x", "command": ["sh", "-c", command]}],
                }
            },
        },
    }
    async with httpx2.AsyncClient(base_url=cluster.url) as http:
        response = await http.post(
            "/apis/batch/v1/namespaces/batch/jobs",
            json=manifest,
            headers={"Authorization": f"Bearer {cluster.token}"},
        )
        assert response.status_code == 201


async def test_queue_makes_one_job_list_and_one_pod_list_per_namespace(
    backend: Any, cluster: FakeCluster
) -> None:
    await _post_unlabeled_job(cluster, "unrelated", "true")  # not asked about: not read
    ids = [
        (await backend.submit(JobSpec(command=["true"], tag=f"b-{i}"))).native_id for i in range(3)
    ]
    for native_id in ids:
        ns, name = native_id.split("/")
        await wait_for(functools.partial(_finished, cluster, ns, name))
    names = sorted(i.split("/")[1] for i in ids)
    mark = len(cluster.requests)
    results = await backend.queue(ids)
    assert _calls_since(cluster, mark) == [
        ("GET", "jobs", {"labelSelector": "hpcstate.io/managed=true"}),
        ("GET", "pods", {"labelSelector": f"job-name in ({','.join(names)})"}),
    ]
    assert [o.state for o in results] == [State.COMPLETED] * 3
    # One id: exactly that Job, by name (works for adopted Jobs too).
    mark = len(cluster.requests)
    [one] = await backend.queue(ids[:1])
    assert one.state is State.COMPLETED
    assert _calls_since(cluster, mark) == [
        ("GET", "jobs", {"fieldSelector": f"metadata.name={ids[0].split('/')[1]}"}),
        ("GET", "pods", {"labelSelector": f"job-name in ({ids[0].split('/')[1]})"}),
    ]


async def test_queue_tells_gone_from_adopted_with_one_more_list(
    backend: Any, cluster: FakeCluster
) -> None:
    await _post_unlabeled_job(cluster, "theirs", "exit 6")
    ours = (await backend.submit(JobSpec(command=["true"], tag="mine"))).native_id
    await wait_for(functools.partial(_finished, cluster, *ours.split("/")))
    await wait_for(lambda: job_failed(cluster.job("batch", "theirs")))
    # A name missing from the labelled LIST: gone, or an adopted Job without our label.
    mark = len(cluster.requests)
    gone, theirs, mine = await backend.queue(["batch/never-existed", "batch/theirs", ours])
    assert gone.absence is Absence.UNKNOWN
    assert (theirs.state, theirs.stats.exit) == (State.FAILED, ExitStatus.exited(6))
    assert mine.state is State.COMPLETED
    assert [(m, part, q.get("labelSelector")) for m, part, q in _calls_since(cluster, mark)] == [
        ("GET", "jobs", "hpcstate.io/managed=true"),
        ("GET", "jobs", None),
        ("GET", "pods", f"job-name in ({ours.split('/')[1]},never-existed,theirs)"),
    ]
    # The adopted Job is remembered: next poll, one LIST of Jobs again.
    mark = len(cluster.requests)
    theirs, mine = await backend.queue(["batch/theirs", ours])
    assert theirs.state is State.FAILED
    assert [(m, part) for m, part, _ in _calls_since(cluster, mark)] == [
        ("GET", "jobs"),
        ("GET", "pods"),
    ]


def _finished(cluster: FakeCluster, ns: str, name: str) -> bool:
    job = cluster.job(ns, name)
    conditions = (job or {}).get("status", {}).get("conditions", [])
    return any(c["type"] == "Complete" for c in conditions)


async def test_adopted_job_without_our_labels(backend: Any, cluster: FakeCluster) -> None:
    await _post_unlabeled_job(cluster, "theirs", "exit 6")
    seen = await collect(backend.watch(["batch/theirs"]))
    verdict = verdict_of(seen)
    assert (verdict.state, verdict.stats.exit) == (State.FAILED, ExitStatus.exited(6))
    watches = [q for m, p, q in cluster.requests if q.get("watch") and p.endswith("/jobs")]
    assert watches
    assert "labelSelector" not in watches[0]


async def test_without_pod_permissions_verdicts_come_from_the_job(
    backend: Any, cluster: FakeCluster
) -> None:
    cluster.pod_list_forbidden = True
    native_id, seen = await run_to_end(backend, JobSpec(command=["sh", "-c", "exit 2"], tag="rbac"))
    verdict = verdict_of(seen)
    assert (verdict.state, verdict.stats.exit) == (State.FAILED, None)  # no pods, no exit code
    [queued] = await backend.queue([native_id])
    assert queued.state is State.FAILED


async def test_bad_submission_is_refused_clearly(backend: Any) -> None:
    from hpcstate import CommandFailed, ConfigError

    with pytest.raises(ConfigError, match="not a valid batch/v1 Job"):
        await backend.submit(
            JobSpec(
                command=["true"],
                options={
                    "manifest": '{"apiVersion": "batch/v1", "kind": "Job", "spec": {"backoffLimit": "x", "template": {"spec": {"containers": [{"name": "main", "image": "i"}]}}}}'
                },
            )
        )
    with pytest.raises(CommandFailed, match="422"):
        await backend.submit(
            JobSpec(
                command=["true"],
                options={
                    "manifest": '{"apiVersion": "batch/v1", "kind": "Job", "spec": {"template": {"spec": {"restartPolicy": "Always", "containers": [{"name": "main", "image": "i"}]}}}}'
                },
            )
        )


async def test_manifest_file(backend: Any, tmp_path: Any) -> None:
    path = tmp_path / "job.yaml"
    path.write_text(
        "apiVersion: batch/v1\nkind: Job\nmetadata:\n  labels: {app: sim}\nspec:\n"
        "  template:\n    spec:\n      restartPolicy: Never\n"
        "      containers:\n      - name: main\n        image: sim:1\n"
    )
    _, seen = await run_to_end(
        backend, JobSpec(command=["sh", "-c", "exit 0"], options={"manifest": str(path)})
    )
    assert verdict_of(seen).state is State.COMPLETED


async def test_wrong_credentials_are_not_transient(make_backend: Any, cluster: FakeCluster) -> None:
    backend = make_backend()
    cluster.token = "rotated"
    try:
        with pytest.raises(BackendError, match="401"):
            await backend.queue(["batch/x"])
    finally:
        await backend.close()
