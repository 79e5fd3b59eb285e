"""The watch's pure memory (NamespaceTracker), fed hand-written objects directly."""

from __future__ import annotations

import copy
import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from hpcstate import Absence, ExitStatus, Observation, State, advance, new_item, submitted
from hpcstate_k8s._observe import UNREADABLE, JobRef
from hpcstate_k8s._tracking import NamespaceTracker

FIXTURES = Path(__file__).parent / "fixtures"
NOW = datetime(2026, 4, 26, 19, 0, 0, tzinfo=timezone.utc)
SIM = JobRef(namespace="batch", name="sim")


def load(case: str) -> dict[str, Any]:
    return json.loads((FIXTURES / f"{case}.json").read_text())  # type: ignore[no-any-return]


def tracker(*native_ids: str) -> NamespaceTracker:
    refs = [(i, JobRef(namespace="batch", name="sim", index=_index(i))) for i in native_ids]
    return NamespaceTracker("batch", refs or [("batch/sim", SIM)])


def _index(native_id: str) -> int | None:
    return int(native_id[native_id.index("[") + 1 : -1]) if "[" in native_id else None


def answer_pod_lists(t: NamespaceTracker, pods: list[dict[str, Any]]) -> list[Observation]:
    """What the client does: one LIST of the pods held-back verdicts wait for."""
    wanted = t.take_wanted_pod_lists()
    assert wanted, "no verdict was waiting for a pod LIST"
    uids = {r.uid for r in wanted}
    return t.job_pods_listed(
        wanted, [p for p in pods if p["metadata"]["labels"]["controller-uid"] in uids], NOW
    )


def test_a_deleted_event_carrying_the_verdict_gives_the_verdict() -> None:
    doc = load("exit3")
    t = tracker()
    t.pods_listed(doc["pods"], NOW)
    assert t.job_event("DELETED", doc["job"], NOW) == []  # its pods are listed first
    [obs] = answer_pod_lists(t, doc["pods"])
    assert (obs.state, obs.final, obs.stats.exit) == (State.FAILED, True, ExitStatus.exited(3))
    assert t.done()


def test_a_success_needs_no_pod_list() -> None:
    doc = load("complete_131")
    t = tracker()
    [obs] = t.job_event("MODIFIED", doc["job"], NOW)
    assert (obs.state, obs.final) == (State.COMPLETED, True)
    assert t.take_wanted_pod_lists() == []


def test_a_job_deleted_while_running_is_unknown_once() -> None:
    doc = load("running")
    t = tracker()
    assert t.pods_listed(doc["pods"], NOW) == []  # the Job itself is not known yet
    [running] = t.jobs_listed([doc["job"]], NOW)
    assert running.state is State.RUNNING
    [gone] = t.job_event("DELETED", doc["job"], NOW)
    assert gone.absence is Absence.UNKNOWN
    assert t.job_event("DELETED", doc["job"], NOW) == []
    assert t.jobs_listed([], NOW) == []


def test_a_job_missing_from_a_list_is_gone() -> None:
    t = tracker()
    [obs] = t.jobs_listed([], NOW)
    assert obs.absence is Absence.UNKNOWN


def test_the_same_event_twice_says_nothing_new() -> None:
    doc = load("running")
    t = tracker()
    t.pods_listed(doc["pods"], NOW)
    assert len(t.job_event("ADDED", doc["job"], NOW)) == 1
    assert t.job_event("MODIFIED", doc["job"], NOW) == []


def test_a_recreated_job_with_the_same_name_is_another_job() -> None:
    doc = load("running")
    t = tracker()
    t.pods_listed(doc["pods"], NOW)
    t.job_event("ADDED", doc["job"], NOW)
    impostor = copy.deepcopy(load("complete_130")["job"])
    impostor["metadata"]["uid"] = "22222222-2222-4222-8222-222222222222"
    [obs] = t.job_event("ADDED", impostor, NOW)
    assert obs.absence is Absence.UNKNOWN  # ours is gone; the new one is not ours


def test_a_failure_waits_for_its_pods_before_its_first_verdict() -> None:
    doc = load("oom")
    t = tracker()
    assert t.job_event("MODIFIED", doc["job"], NOW) == []  # Failed, but no pod seen yet
    [request] = t.take_wanted_pod_lists()
    assert (request.name, request.uid) == ("sim", doc["job"]["metadata"]["uid"])
    assert t.take_wanted_pod_lists() == []  # asked once
    [obs] = t.job_pods_listed([request], doc["pods"], NOW)
    assert obs.state is State.OUT_OF_MEMORY


def test_if_the_pods_are_gone_the_failure_is_told_without_them() -> None:
    doc = load("oom")
    t = tracker()
    t.job_event("MODIFIED", doc["job"], NOW)
    [request] = t.take_wanted_pod_lists()
    [obs] = t.job_pods_listed([request], [], NOW)
    assert (obs.state, obs.stats.exit) == (State.FAILED, None)


def _with_uid(doc: dict[str, Any], uid: str) -> dict[str, Any]:
    doc = copy.deepcopy(doc)
    for obj in (doc["job"], *doc["pods"]):
        obj["metadata"].setdefault("labels", {})["controller-uid"] = uid
        obj["metadata"]["labels"]["batch.kubernetes.io/controller-uid"] = uid
        for owner in obj["metadata"].get("ownerReferences", []):
            owner["uid"] = uid
    doc["job"]["metadata"]["uid"] = uid
    return doc


def test_the_first_verdict_waits_for_a_retry_the_pod_watch_has_not_delivered() -> None:
    # The reviewer's sequence: attempt 1's pod is known (exit 1); the Job's event says
    # failed=2 and Failed before the pod watch delivers attempt 2 (OOMKilled, 137).
    doc = load("retry_then_oom")
    first, retry = doc["pods"]
    running_job = copy.deepcopy(doc["job"])
    running_job["status"] = {"active": 1, "ready": 1, "startTime": "2026-04-26T18:35:42Z"}
    t = tracker()
    t.jobs_listed([running_job], NOW)
    t.pods_listed([first], NOW)
    assert t.job_event("MODIFIED", doc["job"], NOW) == []  # no verdict from attempt 1 alone
    [verdict] = answer_pod_lists(t, [first, retry])
    assert (verdict.state, verdict.final) == (State.OUT_OF_MEMORY, True)
    exit_ = verdict.stats.exit
    assert exit_ is not None
    assert exit_.code == 137
    # The late pod event then changes nothing.
    assert t.pod_event("MODIFIED", retry, NOW) == []
    # Through the machine: the first verdict is the one that stays.
    t0 = datetime(2026, 4, 26, 18, 0, tzinfo=timezone.utc)
    item = submitted(
        new_item(id="i", run_id="r", backend="k8s", now=t0), native_id="batch/sim", at=t0
    ).item
    step = advance(item, verdict)
    assert (step.item.state, step.item.confirmed) == (State.OUT_OF_MEMORY, True)


def test_pod_lists_for_several_verdicts_are_taken_together() -> None:
    docs = {
        "sim": load("oom"),
        "other": _with_uid(load("exit3"), "22222222-2222-4222-8222-222222222222"),
    }
    docs["other"]["job"]["metadata"]["name"] = "other"
    for pod in docs["other"]["pods"]:
        pod["metadata"]["labels"]["job-name"] = "other"
        pod["metadata"]["labels"]["batch.kubernetes.io/job-name"] = "other"
        pod["metadata"]["uid"] = "pod-other"
    t = NamespaceTracker(
        "batch",
        [("batch/sim", SIM), ("batch/other", JobRef(namespace="batch", name="other"))],
    )
    assert t.jobs_listed([docs["sim"]["job"], docs["other"]["job"]], NOW) == []
    wanted = t.take_wanted_pod_lists()
    assert {(r.name, r.uid) for r in wanted} == {
        ("sim", "11111111-1111-4111-8111-111111111111"),
        ("other", "22222222-2222-4222-8222-222222222222"),
    }
    pods = [*docs["sim"]["pods"], *docs["other"]["pods"]]
    verdicts = t.job_pods_listed(wanted, pods, NOW)
    exit_codes = {o.native_id: (o.state, o.stats.exit and o.stats.exit.code) for o in verdicts}
    assert exit_codes == {
        "batch/sim": (State.OUT_OF_MEMORY, 137),
        "batch/other": (State.FAILED, 3),
    }


def test_a_stale_pod_event_after_a_fresher_list_is_ignored() -> None:
    doc = load("oom")
    ended = doc["pods"][0]
    stale = load("running")["pods"][0]
    stale["metadata"]["uid"] = ended["metadata"]["uid"]
    t = tracker()
    t.job_event("MODIFIED", doc["job"], NOW)
    [verdict] = answer_pod_lists(t, [ended])
    assert verdict.state is State.OUT_OF_MEMORY
    assert t.done()
    assert t.pod_event("MODIFIED", stale, NOW) == []
    assert t.done()  # the pod did not come back to life


def test_an_unreadable_job_stops_nothing_and_decides_nothing() -> None:
    bad = load("exit3")["job"]
    bad["status"]["failed"] = "two"
    t = NamespaceTracker(
        "batch",
        [("batch/sim", SIM), ("batch/ok", JobRef(namespace="batch", name="ok"))],
    )
    good = load("complete_131")["job"]
    good["metadata"]["name"] = "ok"
    good["metadata"]["uid"] = "22222222-2222-4222-8222-222222222222"
    out = t.jobs_listed([bad, good], NOW)
    by_id = {o.native_id: o for o in out}
    assert by_id["batch/ok"].state is State.COMPLETED
    sim = by_id["batch/sim"]
    assert (sim.state, sim.absence, sim.final) == (None, Absence.NO_RECORD, False)
    assert [m.code for m in sim.markers] == [UNREADABLE]
    assert "status.failed" in sim.markers[0].text
    [problem] = t.take_problems()
    assert "status.failed" in problem
    assert t.take_problems() == []
    assert not t.done()
    # Once readable again, the verdict comes as usual.
    doc = load("exit3")
    t.pods_listed(doc["pods"], NOW)
    assert t.job_event("MODIFIED", doc["job"], NOW) == []
    [verdict] = answer_pod_lists(t, doc["pods"])
    assert (verdict.state, verdict.stats.exit) == (State.FAILED, ExitStatus.exited(3))


def test_an_unreadable_pod_is_skipped_and_marked() -> None:
    doc = load("running")
    bad = copy.deepcopy(doc["pods"][0])
    bad["metadata"]["uid"] = "pod-bad"
    bad["spec"]["containers"] = "main"
    t = tracker()
    t.jobs_listed([doc["job"]], NOW)
    [obs] = t.pods_listed([bad, doc["pods"][0]], NOW)
    assert obs.state is State.RUNNING
    assert [m.code for m in obs.markers] == [UNREADABLE]
    assert "spec.containers" in obs.markers[0].text
    assert len(t.take_problems()) == 1
    # The same broken pod again is not a new problem.
    assert t.pod_event("MODIFIED", bad, NOW) == []
    assert t.take_problems() == []


def test_a_pod_seen_ended_then_deleted_by_ttl_is_still_the_jobs_own_failure() -> None:
    # The pod ended and was deleted in the same second as the Job failed: the timestamps
    # alone would say "killed by the deletion"; the order the watch saw says otherwise.
    doc = load("exit3")
    pod = doc["pods"][0]
    deleted = copy.deepcopy(pod)
    deleted["metadata"]["deletionTimestamp"] = "2026-04-26T18:36:31Z"  # finishedAt + 30 s grace
    deleted["metadata"]["deletionGracePeriodSeconds"] = 30
    t = tracker()
    t.pod_event("MODIFIED", pod, NOW)
    t.pod_event("DELETED", deleted, NOW)
    assert t.job_event("MODIFIED", doc["job"], NOW) == []
    [obs] = answer_pod_lists(t, [])  # the pod is gone from the API by now
    assert (obs.state, obs.stats.exit) == (State.FAILED, ExitStatus.exited(3))


def test_cancel_request_turns_a_deleting_job_into_cancelled() -> None:
    doc = load("cancelled")
    t = tracker()
    t.pods_listed(doc["pods"], NOW)
    [running] = t.job_event("MODIFIED", doc["job"], NOW)
    assert running.state is State.RUNNING  # deleted by someone else: not our cancel
    [cancelled] = t.cancel_requested("sim", doc["job"]["metadata"]["uid"], NOW)
    assert (cancelled.state, cancelled.final) == (State.CANCELLED, True)
    assert not t.done()  # its pod still runs
    assert t.job_event("DELETED", doc["job"], NOW) == []  # never "gone" after that
    assert t.done()


def test_indexes_are_tracked_separately() -> None:
    doc = load("indexed_one_failed")
    t = tracker("batch/sim[0]", "batch/sim[1]")
    t.pods_listed(doc["pods"], NOW)
    observations = t.job_event("MODIFIED", doc["job"], NOW)
    assert [o.native_id for o in observations] == ["batch/sim[0]"]  # a success needs no LIST
    observations += answer_pod_lists(t, doc["pods"])
    assert {o.native_id: o.state for o in observations} == {
        "batch/sim[0]": State.COMPLETED,
        "batch/sim[1]": State.FAILED,
    }
    assert t.done()
