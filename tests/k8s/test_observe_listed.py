"""queue()'s judgement of one namespace's LISTs, as a pure function (observe_listed):
expected observations written by hand."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from hpcstate import Absence, Observation, Source, State
from hpcstate_k8s._observe import JobRef, cancel_requested, observe_listed

NOW = datetime(2026, 12, 6, 20, 0, tzinfo=timezone.utc)


def _job(name: str, uid: str, **meta: Any) -> dict[str, Any]:
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "namespace": "ns",
            "name": name,
            "uid": uid,
            "creationTimestamp": "2026-12-06T19:00:00Z",
            **meta,
        },
        "spec": {"completions": 1, "parallelism": 1, "template": {"spec": {"containers": []}}},
        "status": {},
    }


def _group(*names: str) -> list[tuple[str, JobRef]]:
    return [(f"ns/{n}", JobRef(namespace="ns", name=n)) for n in names]


def _listed(jobs: list[Any], pods: list[Any] | None = None, **state: Any) -> Any:
    return observe_listed(
        _group("a", "b"),
        jobs,
        [] if pods is None else pods,
        observed_at=NOW,
        kept=state.get("kept", {}),
        created=state.get("created", {}),
        cancelled=state.get("cancelled", {}),
    )


def test_a_listed_job_is_judged_and_a_missing_one_is_unknown() -> None:
    listing = _listed([_job("a", "u-a"), _job("other", "u-o")])
    a, b = listing.observations["ns/a"], listing.observations["ns/b"]
    assert (a.state, a.final, a.absence) == (State.QUEUED, False, None)  # docs: "otherwise QUEUED"
    assert (b.state, b.absence) == (None, Absence.UNKNOWN)  # gone before a verdict: unknown
    assert (listing.skipped, listing.unjudged) == ((), ())


def test_a_kept_watch_verdict_is_served_as_it_was() -> None:
    kept = Observation(
        native_id="ns/a", source=Source.QUEUE, observed_at=NOW, state=State.COMPLETED, final=True
    )
    listing = _listed([], kept={"ns/a": kept})
    assert listing.observations["ns/a"] is kept


def test_a_job_of_another_uid_is_not_ours_and_a_cancelled_one_reads_cancelled() -> None:
    listing = _listed(
        [_job("a", "someone-else"), _job("b", "u-b", deletionTimestamp="2026-12-06T19:30:00Z")],
        created={("ns", "a"): "u-a"},
        cancelled={("ns", "b"): "u-b"},
    )
    assert listing.observations["ns/a"].absence is Absence.UNKNOWN
    assert listing.observations["ns/b"].state is State.CANCELLED


def test_an_unreadable_object_costs_only_its_own_job() -> None:
    broken = _job("a", "u-a")
    broken["metadata"]["creationTimestamp"] = "yesterday"
    pod = {"kind": "Pod", "metadata": {"name": "b-x", "labels": {"job-name": "b"}}, "spec": 3}
    listing = _listed([broken, _job("b", "u-b")], [pod])
    a, b = listing.observations["ns/a"], listing.observations["ns/b"]
    assert (a.state, a.absence, [m.code for m in a.markers]) == (
        None,
        Absence.NO_RECORD,
        ["unreadable"],
    )
    assert (b.state, [m.code for m in b.markers]) == (State.QUEUED, ["unreadable"])
    assert len(listing.skipped) == 2  # the Job, then the pod


def test_cancel_requested_matches_the_name_and_the_uid_when_known() -> None:
    ref = JobRef(namespace="ns", name="a")
    assert not cancel_requested({}, ref, "u")
    assert cancel_requested({("ns", "a"): None}, ref, "u")
    assert cancel_requested({("ns", "a"): "u"}, ref, None)
    assert cancel_requested({("ns", "a"): "u"}, ref, "u")
    assert not cancel_requested({("ns", "a"): "u"}, ref, "v")
