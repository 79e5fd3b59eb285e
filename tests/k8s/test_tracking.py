"""The watch's pure memory (NamespaceTracker), fed hand-written objects directly."""

from __future__ import annotations

import copy
import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from hpcstate import Absence, ExitStatus, State
from hpcstate_k8s._dialect import JobRef
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


def test_a_deleted_event_carrying_the_verdict_gives_the_verdict() -> None:
    doc = load("exit3")
    t = tracker()
    t.pods_listed(doc["pods"], NOW)
    [obs] = t.job_event("DELETED", doc["job"], NOW)
    assert (obs.state, obs.final, obs.stats.exit) == (State.FAILED, True, ExitStatus.exited(3))
    assert t.done()


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
    [(name, uid)] = t.take_wanted_pod_lists()
    assert (name, uid) == ("sim", doc["job"]["metadata"]["uid"])
    assert t.take_wanted_pod_lists() == []  # asked once
    [obs] = t.job_pods_listed(name, uid, doc["pods"], NOW)
    assert obs.state is State.OUT_OF_MEMORY


def test_if_the_pods_are_gone_the_failure_is_told_without_them() -> None:
    doc = load("oom")
    t = tracker()
    t.job_event("MODIFIED", doc["job"], NOW)
    [(name, uid)] = t.take_wanted_pod_lists()
    [obs] = t.job_pods_listed(name, uid, [], NOW)
    assert (obs.state, obs.stats.exit) == (State.FAILED, None)


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
    [obs] = t.job_event("MODIFIED", doc["job"], NOW)
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
    assert {o.native_id: o.state for o in observations} == {
        "batch/sim[0]": State.COMPLETED,
        "batch/sim[1]": State.FAILED,
    }
    assert t.done()
