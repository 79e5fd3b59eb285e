"""The dialect and the watch's memory on what a real 1.36.2 control plane sent.

Inputs: fixtures/1.36.2 (real kube-apiserver + kube-controller-manager 1.36.2; see its
README.md). Expected verdicts are written by hand from each case's definition in that
README (the "truth" column), never from the code under test.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any

import pytest
from attrs import evolve

from hpcstate import Absence, ExitStatus, Observation, ReasonKind, State
from hpcstate_k8s._observe import assess, parse_native_id
from hpcstate_k8s._parse import read_job, read_pod
from hpcstate_k8s._tracking import NamespaceTracker

from .recordings import CASES, JOBS, PODS, ROOT, load, replay_tracker

NOW = datetime(2026, 12, 6, 16, 0, tzinfo=timezone.utc)

#: case -> (state, exit, reason kind) of the first verdict, by hand from the README's table.
TRUTH: dict[str, tuple[State, ExitStatus | None, ReasonKind]] = {
    "ok": (State.COMPLETED, ExitStatus.exited(0), ReasonKind.NONE),
    "exit3": (State.FAILED, ExitStatus.exited(3), ReasonKind.NON_ZERO_EXIT_CODE),
    "sigkill": (
        State.FAILED,
        ExitStatus.exited(137, ambiguous="x"),  # 137 only: no wrapper, so ambiguous
        ReasonKind.NON_ZERO_EXIT_CODE,
    ),
    "w_sigkill": (State.FAILED, ExitStatus.killed(9), ReasonKind.RAISED_SIGNAL),
    "timeout": (State.TIMEOUT, None, ReasonKind.TIME_LIMIT),
    "retry_then_ok": (State.COMPLETED, ExitStatus.exited(0), ReasonKind.NONE),
    "ttl_fail": (State.FAILED, ExitStatus.exited(3), ReasonKind.NON_ZERO_EXIT_CODE),
}


def verdicts(seen: list[Observation]) -> dict[str, Observation]:
    """The first final observation of each id."""
    first: dict[str, Observation] = {}
    for obs in seen:
        if obs.final and obs.native_id not in first:
            first[obs.native_id] = obs
    return first


def same_exit(got: ExitStatus | None, want: ExitStatus | None) -> bool:
    if want is None or got is None:
        return got is want
    return (got.code, got.signal, got.ambiguous is not None) == (
        want.code,
        want.signal,
        want.ambiguous is not None,
    )


def test_every_recorded_case_is_covered() -> None:
    assert set(CASES) == {
        *TRUTH,
        "cancel_running",
        "deleted_mid_run",
        "indexed_one_fails",
    }


@pytest.mark.parametrize("case", sorted(TRUTH))
def test_watch_replay_gives_the_right_first_verdict(case: str) -> None:
    recording = load(case)
    seen = replay_tracker(recording)
    [verdict] = verdicts(seen).values()
    state, exit_, kind = TRUTH[case]
    assert verdict.state is state
    assert verdict.stats.reason is not None
    assert verdict.stats.reason.kind is kind
    if exit_ is not None:
        assert same_exit(verdict.stats.exit, exit_), verdict.stats.exit
    # Nothing final before the verdict, and never QUEUED again once RUNNING was said.
    before = seen[: seen.index(verdict)]
    assert not any(o.final for o in before)
    states = [o.state for o in before]
    if State.RUNNING in states:
        assert State.QUEUED not in states[states.index(State.RUNNING) :]


def test_timeout_sigterm_exit_is_143_ambiguous() -> None:
    # The deadline-killed pod ends 143 (SIGTERM from the stand-in kubelet), which without
    # the wrapper cannot be told from a plain exit 143.
    [verdict] = verdicts(replay_tracker(load("timeout"))).values()
    assert same_exit(verdict.stats.exit, ExitStatus.exited(143, ambiguous="x"))


def test_retry_then_ok_is_running_between_attempts_never_final() -> None:
    seen = replay_tracker(load("retry_then_ok"))
    finals = [o for o in seen if o.final]
    assert [o.state for o in finals] == [State.COMPLETED]
    # Two failed attempts (exit 1) are in the Job's failed counter: still not a verdict.
    assert {o.state for o in seen if not o.final} <= {State.QUEUED, State.RUNNING}


def test_indexed_job_one_failing_index() -> None:
    recording = load("indexed_one_fails")
    got = verdicts(replay_tracker(recording))
    base = recording.native_id
    assert {nid: o.state for nid, o in got.items()} == {
        f"{base}[0]": State.COMPLETED,
        f"{base}[1]": State.FAILED,
        f"{base}[2]": State.COMPLETED,
    }
    assert same_exit(got[f"{base}[1]"].stats.exit, ExitStatus.exited(3))
    assert same_exit(got[f"{base}[0]"].stats.exit, ExitStatus.exited(0))
    reason = got[f"{base}[1]"].stats.reason
    assert reason is not None
    assert reason.kind is ReasonKind.NON_ZERO_EXIT_CODE


def test_foreground_cancel_by_another_process_is_an_absence_not_a_failure() -> None:
    # Real 1.36 writes no condition on a Job deleted in the foreground: a watcher that did
    # not send the DELETE sees it vanish. That is an absence (the core turns it into
    # CANCELLED when the stored cancel_requested marker is there), never a failure.
    seen = replay_tracker(load("cancel_running"))
    assert not any(o.final for o in seen)
    assert seen[-1].absence is Absence.UNKNOWN
    assert seen[-1].state is None


def test_foreground_cancel_by_this_process_is_cancelled() -> None:
    seen = replay_tracker(load("cancel_running"), cancelled=True)
    [verdict] = verdicts(seen).values()
    assert verdict.state is State.CANCELLED
    assert verdict.stats.reason is not None
    assert verdict.stats.reason.kind is ReasonKind.CANCELLED


def test_background_delete_by_someone_else_is_gone() -> None:
    seen = replay_tracker(load("deleted_mid_run"))
    assert not any(o.final for o in seen)
    assert seen[-1].absence is Absence.UNKNOWN


def test_ttl_zero_verdict_comes_from_the_watch_before_the_deletion() -> None:
    recording = load("ttl_fail")
    seen = replay_tracker(recording)
    # Nothing after the verdict takes it back: the DELETED events add nothing.
    verdict = next(o for o in seen if o.final)
    assert seen[-1] is verdict or all(o.final for o in seen[seen.index(verdict) :])
    # And the recording really is the hard case: the TTL controller deleted the Job in
    # the same second as Failed, so a LIST made a second later finds nothing.
    failed = recording.first(
        JOBS,
        lambda o: any(c["type"] == "Failed" for c in o.get("status", {}).get("conditions", [])),
    )
    deleted = next(
        i for i, e in enumerate(recording.events) if e.kind == JOBS and e.type == "DELETED"
    )
    assert (recording.events[deleted].at - recording.events[failed].at).total_seconds() <= 1
    jobs, pods = recording.state_at(deleted + 1)
    assert jobs == []
    assert pods == []


# -- the LISTs (kubectl get -o json) at each stage, judged as queue() does -----------------

STAGE_TRUTH: dict[tuple[str, str], State] = {
    # by hand: a running pod (or ended attempt) is RUNNING; an interim condition too.
    ("ok", "running"): State.RUNNING,
    ("sigkill", "running"): State.RUNNING,
    ("timeout", "running"): State.RUNNING,
    ("timeout", "interim"): State.RUNNING,
    ("retry_then_ok", "running"): State.RUNNING,
    ("ttl_fail", "last"): State.RUNNING,
    ("cancel_running", "deleting"): State.RUNNING,  # deleting, not by us: not yet decided
    ("ok", "terminal"): State.COMPLETED,
    ("exit3", "terminal"): State.FAILED,
    ("sigkill", "terminal"): State.FAILED,
    ("w_sigkill", "terminal"): State.FAILED,
    ("timeout", "terminal"): State.TIMEOUT,
    ("retry_then_ok", "terminal"): State.COMPLETED,
}


def _judge_list(case: str, stage: str, *, cancel: bool = False) -> Observation:
    jobs = json.loads((ROOT / case / f"get_{stage}.jobs.json").read_text())["items"]
    pods = json.loads((ROOT / case / f"get_{stage}.pods.json").read_text())["items"]
    [job] = [read_job(o) for o in jobs]
    native_id = f"{job.namespace}/{job.name}"
    return assess(
        native_id,
        parse_native_id(native_id),
        job,
        [read_pod(p) for p in pods],
        observed_at=NOW,
        cancel_requested=cancel,
    ).observation


@pytest.mark.parametrize(("case", "stage"), sorted(STAGE_TRUTH))
def test_listed_objects_at_each_stage(case: str, stage: str) -> None:
    obs = _judge_list(case, stage)
    assert obs.state is STAGE_TRUTH[case, stage]
    assert obs.final is (STAGE_TRUTH[case, stage] not in (State.RUNNING, State.QUEUED))
    if (case, stage) in {(c, "terminal") for c in TRUTH}:
        _, exit_, kind = TRUTH[case]
        assert obs.stats.reason is not None
        assert obs.stats.reason.kind is kind
        if exit_ is not None:
            assert same_exit(obs.stats.exit, exit_)


def test_listed_objects_being_deleted_after_our_cancel_are_cancelled() -> None:
    obs = _judge_list("cancel_running", "deleting", cancel=True)
    assert (obs.state, obs.final) == (State.CANCELLED, True)


def test_every_recorded_object_reads() -> None:
    for case in CASES:
        for event in load(case).events:
            reader = read_job if event.kind == JOBS else read_pod
            reader(event.obj)  # raises ParseError if a real 1.36 field is misread
        for path in (ROOT / case).glob("get_*.json"):
            kind = JOBS if path.name.endswith(".jobs.json") else PODS
            for obj in json.loads(path.read_text())["items"]:
                (read_job if kind == JOBS else read_pod)(obj)


# -- a killed sibling (defect c): the shapes of 1.36, built from the recordings -----------


def _sibling_stream() -> tuple[list[tuple[str, str, dict[str, Any]]], str, dict[str, Any]]:
    """parallelism 2, backoffLimit 0: pod a exits 3 at :01; the Job controller decides
    (FailureTarget at :01, a's uid uncounted), deletes pod b (grace 30) while it runs; b
    ends 143 at :02; the final grace-0 DELETE rewrites b's deletionTimestamp to :03, after
    its finishedAt, as the real API server does (README: cancel_running, deleted_mid_run).
    Objects are the recorded exit3 Job and pod, with the fields changed that differ."""
    recording = load("exit3")
    job0 = recording.job
    pod0 = next(e.obj for e in recording.events if e.kind == PODS)
    uid = job0["metadata"]["uid"]

    def pod(name: str, pod_uid: str, **status: Any) -> dict[str, Any]:
        obj = json.loads(json.dumps(pod0))
        obj["metadata"].update(name=name, uid=pod_uid)
        obj["status"] = {"phase": "Running", **status}
        return obj

    def term(code: int, finished: str) -> dict[str, Any]:
        return {
            "containerStatuses": [
                {
                    "name": "main",
                    "state": {
                        "terminated": {
                            "exitCode": code,
                            "reason": "Error",
                            "startedAt": "2026-12-06T15:46:00Z",
                            "finishedAt": finished,
                        }
                    },
                }
            ]
        }

    running = {
        "containerStatuses": [
            {"name": "main", "state": {"running": {"startedAt": "2026-12-06T15:46:00Z"}}}
        ]
    }
    job = json.loads(json.dumps(job0))
    job["spec"]["parallelism"] = 2

    def job_status(status: dict[str, Any]) -> dict[str, Any]:
        obj = json.loads(json.dumps(job))
        obj["status"] = {"startTime": "2026-12-06T15:46:00Z", **status}
        return obj

    cond = {
        "status": "True",
        "reason": "BackoffLimitExceeded",
        "message": "Job has reached the specified backoff limit",
    }
    ft = {"type": "FailureTarget", "lastTransitionTime": "2026-12-06T15:46:01Z", **cond}
    failed = {"type": "Failed", "lastTransitionTime": "2026-12-06T15:46:03Z", **cond}
    a_failed = pod("sh-a", "uid-a", **{**term(3, "2026-12-06T15:46:01Z"), "phase": "Failed"})
    a_failed["status"]["phase"] = "Failed"
    b_running = pod("sh-b", "uid-b", **running)
    b_deleting = json.loads(json.dumps(b_running))
    b_deleting["metadata"].update(
        deletionTimestamp="2026-12-06T15:46:31Z", deletionGracePeriodSeconds=30
    )
    b_ended = json.loads(json.dumps(b_deleting))
    b_ended["status"] = {"phase": "Failed", **term(143, "2026-12-06T15:46:02Z")}
    b_final = json.loads(json.dumps(b_ended))
    b_final["metadata"].update(
        deletionTimestamp="2026-12-06T15:46:03Z", deletionGracePeriodSeconds=0
    )
    return (
        [
            (JOBS, "MODIFIED", job_status({"active": 2, "ready": 2, "terminating": 0})),
            (PODS, "MODIFIED", a_failed),
            (
                JOBS,
                "MODIFIED",
                job_status(
                    {
                        "terminating": 1,
                        "ready": 0,
                        "uncountedTerminatedPods": {"failed": ["uid-a"]},
                        "conditions": [ft],
                    }
                ),
            ),
            (PODS, "MODIFIED", b_deleting),
            (PODS, "MODIFIED", b_ended),
            (PODS, "MODIFIED", b_final),
            (PODS, "DELETED", b_final),
            (
                JOBS,
                "MODIFIED",
                job_status({"failed": 2, "terminating": 0, "ready": 0, "conditions": [ft, failed]}),
            ),
        ],
        uid,
        b_running,
    )


def test_the_killed_siblings_exit_is_not_the_verdict_in_a_watch() -> None:
    stream, _, b_running = _sibling_stream()
    first_job = stream[0][2]
    native_id = f"{first_job['metadata']['namespace']}/{first_job['metadata']['name']}"
    tracker = NamespaceTracker(
        first_job["metadata"]["namespace"], [(native_id, parse_native_id(native_id))]
    )
    seen: list[Observation] = []
    seen += tracker.jobs_listed([first_job], NOW)
    seen += tracker.pods_listed([b_running], NOW)
    for kind, etype, obj in stream[1:]:
        if kind == JOBS:
            seen += tracker.job_event(etype, obj, NOW)
        else:
            seen += tracker.pod_event(etype, obj, NOW)
        wanted = tracker.take_wanted_pod_lists()
        if wanted:
            seen += tracker.job_pods_listed(wanted, [], NOW)  # all deleted by then
    [verdict] = verdicts(seen).values()
    assert verdict.state is State.FAILED
    assert verdict.stats.exit == ExitStatus.exited(3)  # pod a's, not b's 143
    assert "sh-a" in verdict.detail


def test_the_killed_siblings_exit_is_not_the_verdict_in_a_list() -> None:
    # queue() sees only the last objects: b's deletionTimestamp (grace 0) is after its
    # finishedAt, as if it had died by itself; the Job's decision time still tells.
    stream, _, _ = _sibling_stream()
    job = read_job(stream[-1][2])
    a = read_pod(stream[1][2])
    b = read_pod(stream[5][2])
    native_id = f"{job.namespace}/{job.name}"
    obs = assess(native_id, parse_native_id(native_id), job, [b, a], observed_at=NOW).observation
    assert obs.state is State.FAILED
    assert obs.stats.exit == ExitStatus.exited(3)


def test_a_failure_written_after_someone_elses_delete_is_not_a_verdict() -> None:
    # cancel_running as recorded, plus what an older controller (and the old fake) wrote
    # after the foreground DELETE: Failed (BackoffLimitExceeded) for the pod it killed.
    # Another process (no cancel of its own) must not call that a failure.
    recording = load("cancel_running")
    deleting = recording.first(JOBS, lambda o: bool(o["metadata"].get("deletionTimestamp")))
    jobs, pods = recording.state_at(len(recording.events) - 2)  # before the last deletes
    [job_obj] = jobs
    assert job_obj["metadata"]["deletionTimestamp"] == "2026-12-06T15:46:32Z"
    job_obj["status"]["conditions"] = [
        {
            "type": "Failed",
            "status": "True",
            "reason": "BackoffLimitExceeded",
            "message": "Job has reached the specified backoff limit",
            "lastTransitionTime": "2026-12-06T15:46:33Z",
        }
    ]
    job_obj["status"]["failed"] = 1
    job = read_job(job_obj)
    native_id = f"{job.namespace}/{job.name}"
    # The pod's last object: ended 143, deletionTimestamp rewritten by the grace-0 DELETE;
    # the watch saw it being deleted while it ran.
    tracker_pods = [read_pod(p) for p in pods]
    assert deleting > 0
    seen_pods = [evolve(p, deleted_while_running=True) for p in tracker_pods]
    for gone in (False, True):
        obs = assess(
            native_id, parse_native_id(native_id), job, seen_pods, observed_at=NOW, gone=gone
        ).observation
        assert obs.state is not State.FAILED
        assert not obs.final
    obs = assess(
        native_id, parse_native_id(native_id), job, seen_pods, observed_at=NOW, gone=True
    ).observation
    assert obs.absence is Absence.UNKNOWN
    # The process that sent the DELETE still says CANCELLED.
    mine = assess(
        native_id,
        parse_native_id(native_id),
        job,
        seen_pods,
        observed_at=NOW,
        cancel_requested=True,
    ).observation
    assert mine.state is State.CANCELLED
