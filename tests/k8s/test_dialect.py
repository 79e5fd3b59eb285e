"""Pure verdicts over hand-written Job/Pod fixtures (fixtures/README.md).

Every expected value below is written from the case's description (what the job did),
not copied from the dialect's output.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
from attrs import evolve

from hpcstate import (
    Absence,
    ExitStatus,
    ParseError,
    ReasonKind,
    Source,
    State,
    advance,
    new_item,
    submitted,
)
from hpcstate_k8s._observe import (
    MAX_TERMINATION_MESSAGE,
    UNREADABLE,
    WRAPPER_LOST_CHILD,
    JobRef,
    assess,
    decode_exit,
    killed_by_deletion,
    parse_native_id,
    unreadable,
)
from hpcstate_k8s._parse import Termination, parse_index_set, read_job, read_pod

FIXTURES = Path(__file__).parent / "fixtures"
NOW = datetime(2026, 4, 26, 19, 0, 0, tzinfo=timezone.utc)


def at(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def load(case: str) -> dict[str, Any]:
    return json.loads((FIXTURES / f"{case}.json").read_text())  # type: ignore[no-any-return]


def observe(
    case: str,
    native_id: str = "batch/sim",
    *,
    gone: bool = False,
    cancel_requested: bool = False,
    pods: bool = True,
) -> Any:
    doc = load(case)
    return assess(
        native_id,
        parse_native_id(native_id),
        read_job(doc["job"]),
        [read_pod(p) for p in doc["pods"]] if pods else None,
        observed_at=NOW,
        gone=gone,
        cancel_requested=cancel_requested,
    )


# -- verdicts from conditions --------------------------------------------------------------


def test_success_131_is_final_completed_with_exit_0() -> None:
    obs = observe("complete_131").observation
    assert (obs.state, obs.final, obs.source) == (State.COMPLETED, True, Source.QUEUE)
    assert obs.stats.exit == ExitStatus.exited(0)
    assert obs.stats.finished_at == at("2026-04-26T18:37:06Z")
    assert obs.stats.started_at == at("2026-04-26T18:35:42Z")  # no pods left: the Job's start
    assert obs.stats.reason is not None
    assert obs.stats.reason.text == "CompletionsReached"


def test_success_130_has_no_reason_and_is_still_completed() -> None:
    obs = observe("complete_130").observation
    assert (obs.state, obs.final) == (State.COMPLETED, True)
    assert obs.stats.exit == ExitStatus.exited(0)
    assert obs.stats.started_at == at("2026-04-26T18:35:44Z")
    assert obs.stats.finished_at == at("2026-04-26T18:36:02Z")
    assert obs.stats.nodes == ("node-1",)


def test_backoff_limit_131_is_failed_with_the_last_pods_exit() -> None:
    obs = observe("backoff_131").observation
    assert (obs.state, obs.final) == (State.FAILED, True)
    assert obs.stats.reason is not None
    # The reason is the pod's exit; the Job's backoff bookkeeping is only its detail.
    assert obs.stats.reason.kind is ReasonKind.NON_ZERO_EXIT_CODE
    assert obs.stats.reason.text == "exit 1"
    assert obs.stats.reason.detail.startswith("BackoffLimitExceeded")
    assert obs.stats.exit == ExitStatus.exited(1)
    assert obs.stats.finished_at == at("2026-04-26T18:47:32Z")
    assert "sim-f7" in obs.detail


def test_failure_130_without_interim_condition() -> None:
    obs = observe("failed_130").observation
    assert (obs.state, obs.final, obs.stats.exit) == (State.FAILED, True, ExitStatus.exited(2))


@pytest.mark.parametrize("case", ["interim_failure", "interim_success"])
def test_interim_conditions_are_running_not_a_verdict(case: str) -> None:
    obs = observe(case).observation
    assert (obs.state, obs.final) == (State.RUNNING, False)
    assert obs.stats.exit is None
    assert "terminating" in obs.detail


def test_suspended_is_queued_with_its_reason() -> None:
    obs = observe("suspended").observation
    assert obs.state is State.QUEUED
    assert obs.stats.reason is not None
    assert (obs.stats.reason.text, obs.stats.reason.detail) == ("JobSuspended", "Job suspended")


def _suspended_after_it_ran() -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The running fixture's Job, then suspended: the controller deletes its running pod."""
    doc = load("running")
    job = doc["job"]
    job["spec"]["suspend"] = True
    job["status"] = {
        "active": 0,
        "ready": 0,
        "conditions": [
            {
                "type": "Suspended",
                "status": "True",
                "reason": "JobSuspended",
                "message": "Job suspended",
                "lastTransitionTime": "2026-04-26T18:40:00Z",
            }
        ],
    }
    pod = doc["pods"][0]
    pod["metadata"]["deletionTimestamp"] = "2026-04-26T18:40:30Z"
    pod["metadata"]["deletionGracePeriodSeconds"] = 30
    return job, [pod]


def test_a_suspended_job_that_already_ran_is_held_running_not_queued() -> None:
    job, pods = _suspended_after_it_ran()
    ref = parse_native_id("batch/sim")
    running = observe("running").observation
    held = assess(
        "batch/sim", ref, read_job(job), [read_pod(p) for p in pods], observed_at=NOW
    ).observation
    assert (held.state, held.final) == (State.RUNNING, False)
    assert held.stats.reason is not None
    assert held.stats.reason.text == "JobSuspended"
    assert "suspended after it started" in held.detail
    # Through the machine: still running, no requeue, the reason is on the item.
    t0 = datetime(2026, 4, 26, 18, 0, tzinfo=timezone.utc)
    item = submitted(
        new_item(id="i", run_id="r", backend="k8s", now=t0), native_id="batch/sim", at=t0
    ).item
    item = advance(item, running).item
    step = advance(item, evolve(held, observed_at=NOW.replace(minute=1)))
    assert step.item.state is State.RUNNING
    assert step.item.restarts == 0
    assert [type(e).__name__ for e in step.events] == ["StatsUpdated"]
    assert step.item.stats.reason is not None
    assert step.item.stats.reason.text == "JobSuspended"


def test_a_pod_pulling_its_image_is_queued_with_the_waiting_reason() -> None:
    obs = observe("image_pull").observation
    assert obs.state is State.QUEUED  # active=1 counts a pending pod: not running yet
    assert obs.stats.reason is not None
    assert obs.stats.reason.text.startswith("ImagePullBackOff: Back-off pulling image")


def test_running_pod_is_running_with_its_start_and_the_job_uid_as_handle() -> None:
    obs = observe("running").observation
    assert (obs.state, obs.final) == (State.RUNNING, False)
    assert obs.stats.started_at == at("2026-04-26T18:35:44Z")
    assert obs.handle == "11111111-1111-4111-8111-111111111111"


def test_pods_unreadable_falls_back_to_counters() -> None:
    assert observe("running", pods=False).observation.state is State.RUNNING  # ready=1
    # active=1 but ready=0: the pod is pending (pulling its image), not running.
    pulling = observe("image_pull", pods=False).observation
    assert (pulling.state, pulling.stats.started_at) == (State.QUEUED, None)


def test_without_status_ready_active_is_all_there_is() -> None:
    doc = load("image_pull")
    del doc["job"]["status"]["ready"]  # a cluster older than status.ready
    job = read_job(doc["job"])
    obs = assess("batch/sim", parse_native_id("batch/sim"), job, None, observed_at=NOW)
    assert obs.observation.state is State.RUNNING


# -- the kind of failure and the exit status -------------------------------------------------


def test_oomkilled_is_out_of_memory_and_137_stays_ambiguous() -> None:
    obs = observe("oom").observation
    assert (obs.state, obs.final) == (State.OUT_OF_MEMORY, True)
    assert obs.stats.reason is not None
    assert obs.stats.reason.kind is ReasonKind.OUT_OF_MEMORY
    exit_ = obs.stats.exit
    assert exit_ is not None
    assert (exit_.code, exit_.signal) == (137, None)
    assert exit_.ambiguous is not None
    assert "SIGKILL" in exit_.ambiguous


def test_exit_3_is_failed_exit_3_exactly() -> None:
    obs = observe("exit3").observation
    assert obs.state is State.FAILED
    assert obs.stats.exit == ExitStatus.exited(3)
    assert obs.stats.exit_source is Source.QUEUE


def test_137_without_wrapper_is_never_a_made_up_signal() -> None:
    exit_ = observe("exit137_plain").observation.stats.exit
    assert exit_ is not None
    assert (exit_.code, exit_.signal, exit_.exact) == (137, None, False)


def test_137_with_wrapper_is_sigkill_exactly() -> None:
    obs = observe("exit137_wrapper").observation
    assert obs.state is State.FAILED
    assert obs.stats.exit == ExitStatus.killed(9)


def test_wrapper_tells_a_real_exit_137_from_a_kill() -> None:
    assert observe("wrapper_exit137").observation.stats.exit == ExitStatus.exited(137)


def test_wrapper_message_disagreeing_with_the_exit_code_is_not_trusted() -> None:
    obs = observe("wrapper_killed").observation
    exit_ = obs.stats.exit
    assert exit_ is not None
    assert (exit_.code, exit_.exact) == (137, False)
    assert "wrapper itself was killed" in obs.detail


def test_container_status_unknown_is_an_infrastructure_kill_without_exit() -> None:
    obs = observe("status_unknown").observation
    assert (obs.state, obs.stats.exit) == (State.NODE_FAIL, None)
    assert obs.stats.reason is not None
    assert obs.stats.reason.kind is ReasonKind.NODE_FAIL
    assert "synthesized" in obs.detail


def test_start_error_never_ran_so_128_is_not_its_exit() -> None:
    obs = observe("start_error").observation
    assert (obs.state, obs.stats.exit) == (State.FAILED, None)
    assert obs.stats.reason is not None
    assert obs.stats.reason.kind is ReasonKind.JOB_LAUNCH_FAILURE
    assert obs.stats.started_at is None or obs.stats.started_at.year != 1970


def test_eviction_is_node_fail() -> None:
    obs = observe("evicted").observation
    assert obs.state is State.NODE_FAIL
    assert obs.stats.reason is not None
    assert "TerminationByKubelet" in obs.stats.reason.text


def test_preemption_is_preempted() -> None:
    assert observe("preempted").observation.state is State.PREEMPTED


def test_active_deadline_is_timeout_and_the_killed_pod_exit_is_ambiguous() -> None:
    obs = observe("deadline").observation
    assert (obs.state, obs.final) == (State.TIMEOUT, True)
    assert obs.stats.reason is not None
    assert obs.stats.reason.kind is ReasonKind.TIME_LIMIT
    exit_ = obs.stats.exit
    assert exit_ is not None
    assert (exit_.code, exit_.exact) == (143, False)


def test_pods_the_controller_killed_are_not_the_jobs_failure() -> None:
    obs = observe("backoff_with_kill").observation
    assert obs.state is State.FAILED
    assert obs.stats.exit == ExitStatus.exited(2)  # a1's own exit, not b2's 143
    pods = [read_pod(p) for p in load("backoff_with_kill")["pods"]]
    assert [killed_by_deletion(p) for p in pods] == [False, True]


def test_pod_deleted_after_it_ended_was_not_killed() -> None:
    pod = read_pod(load("ttl_deleting")["pods"][0])
    assert not killed_by_deletion(pod)


# -- deletion, TTL and cancel ------------------------------------------------------------------


def test_job_deleted_before_any_verdict_is_unknown_never_failed() -> None:
    obs = assess("batch/sim", JobRef(namespace="batch", name="sim"), None, [], observed_at=NOW)
    result = obs.observation
    assert (result.state, result.absence) == (None, Absence.UNKNOWN)


def test_running_job_that_disappears_is_unknown() -> None:
    obs = observe("running", gone=True).observation
    assert obs.absence is Absence.UNKNOWN


def test_job_deleted_by_ttl_after_its_verdict_keeps_the_verdict() -> None:
    obs = observe("ttl_deleting", gone=True).observation
    assert (obs.state, obs.final, obs.stats.exit) == (State.FAILED, True, ExitStatus.exited(3))


def test_a_job_we_deleted_on_request_is_cancelled() -> None:
    obs = observe("cancelled", cancel_requested=True).observation
    assert (obs.state, obs.final) == (State.CANCELLED, True)
    assert obs.stats.reason is not None
    assert obs.stats.reason.kind is ReasonKind.CANCELLED
    assert obs.stats.finished_at == at("2026-04-26T18:36:10Z")


def test_a_job_someone_else_deletes_is_not_cancelled_while_it_exists() -> None:
    assert observe("cancelled").observation.state is State.RUNNING


def test_cancel_of_a_finished_job_keeps_its_verdict() -> None:
    assert observe("exit3", cancel_requested=True).observation.state is State.FAILED


def test_failure_without_any_failed_pod_seen_waits_for_pods() -> None:
    doc = load("oom")
    result = assess(
        "batch/sim",
        parse_native_id("batch/sim"),
        read_job(doc["job"]),
        [],
        observed_at=NOW,
    )
    assert result.awaiting_pods
    assert not observe("oom").awaiting_pods


def test_a_retry_that_failed_out_of_memory_decides_the_verdict() -> None:
    obs = observe("retry_then_oom")
    assert (obs.observation.state, obs.observation.final) == (State.OUT_OF_MEMORY, True)
    assert not obs.awaiting_pods
    exit_ = obs.observation.stats.exit
    assert exit_ is not None
    assert exit_.code == 137


def test_a_failure_the_job_counts_but_nobody_saw_yet_waits_for_pods() -> None:
    # The pod watch lags: only the first attempt (exit 1) is known when the Job says
    # failed=2 and Failed. Its exit 1 is not the reason the Job failed.
    doc = load("retry_then_oom")
    first_attempt_only = [read_pod(doc["pods"][0])]
    result = assess(
        "batch/sim",
        parse_native_id("batch/sim"),
        read_job(doc["job"]),
        first_attempt_only,
        observed_at=NOW,
    )
    assert result.awaiting_pods


def test_pods_the_controller_is_killing_count_as_seen() -> None:
    # backoff_with_kill: a1 failed by itself, b2 was killed by the controller (failed=2).
    assert not observe("backoff_with_kill").awaiting_pods


# -- Indexed Jobs (arrays) ---------------------------------------------------------------------


def test_indexed_job_gives_one_verdict_per_index() -> None:
    index0 = observe("indexed_one_failed", "batch/sim[0]").observation
    index1 = observe("indexed_one_failed", "batch/sim[1]").observation
    index2 = observe("indexed_one_failed", "batch/sim[2]").observation
    whole = observe("indexed_one_failed", "batch/sim").observation
    assert (index0.state, index0.final, index0.stats.exit) == (
        State.COMPLETED,
        True,
        ExitStatus.exited(0),
    )
    assert (index1.state, index1.final, index1.stats.exit) == (
        State.FAILED,
        True,
        ExitStatus.exited(5),
    )
    assert index2.state is State.COMPLETED
    assert index2.stats.finished_at == at("2026-04-26T18:36:04Z")
    assert whole.state is State.FAILED
    assert index1.native_id == "batch/sim[1]"


def test_index_out_of_range_is_unknown() -> None:
    assert observe("indexed_one_failed", "batch/sim[7]").observation.absence is Absence.UNKNOWN
    assert observe("exit3", "batch/sim[0]").observation.absence is Absence.UNKNOWN


# -- small parsers -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("batch/sim", JobRef(namespace="batch", name="sim")),
        ("batch/sim[12]", JobRef(namespace="batch", name="sim", index=12)),
        ("kube-system/a.b-c", JobRef(namespace="kube-system", name="a.b-c")),
    ],
)
def test_native_ids(text: str, expected: JobRef) -> None:
    assert parse_native_id(text) == expected
    assert expected.native_id == text


@pytest.mark.parametrize("text", ["sim", "Batch/sim", "batch/sim[-1]", "batch/", "a/b/c", "b/s[1"])
def test_bad_native_ids_raise_parse_error(text: str) -> None:
    with pytest.raises(ParseError, match="NAMESPACE/NAME"):
        parse_native_id(text)


def test_index_sets() -> None:
    assert parse_index_set("1,3-5,7") == {1, 3, 4, 5, 7}
    assert parse_index_set("") == frozenset()
    with pytest.raises(ParseError, match="backwards"):
        parse_index_set("5-3")


def test_unreadable_wrapper_message_falls_back_to_the_exit_code() -> None:
    term = Termination(
        container="main",
        init=False,
        exit_code=1,
        reason="Error",
        message="Traceback (most recent call last): ...",
        started_at=None,
        finished_at=None,
    )
    exit_, note = decode_exit(term, wrapper=True)
    assert exit_ == ExitStatus.exited(1)
    assert "unreadable" in note


def _term(message: str, code: int = 1) -> Termination:
    return Termination(
        container="main",
        init=False,
        exit_code=code,
        reason="Error",
        message=message,
        started_at=None,
        finished_at=None,
    )


@pytest.mark.parametrize(
    "message",
    [
        "[" * 3000,  # deep nesting under the length cap: the JSON parser would recurse
        "[" * (MAX_TERMINATION_MESSAGE + 1),  # longer than the kubelet keeps
        '{"exit": 1}' + " " * MAX_TERMINATION_MESSAGE,
    ],
    ids=["deep", "long", "padded"],
)
def test_a_hostile_termination_message_falls_back_to_the_exit_code(message: str) -> None:
    exit_, note = decode_exit(_term(message), wrapper=True)
    assert exit_ == ExitStatus.exited(1)
    assert "using the exit code" in note


def test_a_wrapper_that_lost_its_child_gives_no_exit_status() -> None:
    exit_, note = decode_exit(_term("", code=WRAPPER_LOST_CHILD), wrapper=True)
    assert exit_ is None
    assert "lost" in note
    # Without the wrapper, 125 is just the payload's exit code.
    plain, _ = decode_exit(_term("", code=WRAPPER_LOST_CHILD), wrapper=False)
    assert plain == ExitStatus.exited(WRAPPER_LOST_CHILD)


def test_the_dialect_and_the_wrapper_agree_on_the_lost_child_code() -> None:
    from hpcstate_k8s import wrapper

    assert wrapper.LOST_CHILD == WRAPPER_LOST_CHILD


def test_assess_turns_a_surprise_in_one_jobs_data_into_a_parse_error() -> None:
    # No reader makes this view: it stands for a bug that odd data could meet.
    job = evolve(read_job(load("exit3")["job"]), failed="two")  # type: ignore[arg-type]
    with pytest.raises(ParseError, match="cannot judge") as info:
        assess("batch/sim", parse_native_id("batch/sim"), job, [], observed_at=NOW)
    assert "Job batch/sim" in str(info.value)
    assert isinstance(info.value.__cause__, TypeError)


def test_an_unreadable_object_is_no_record_with_a_marker() -> None:
    error = ParseError("expected a list", command="Pod batch/sim-a1", field="spec.containers")
    obs = unreadable("batch/sim", [error], observed_at=NOW)
    assert (obs.state, obs.absence, obs.final) == (None, Absence.NO_RECORD, False)
    [marker] = obs.markers
    assert marker.code == UNREADABLE
    assert "spec.containers" in marker.text


def test_parse_errors_name_the_object_and_field() -> None:
    doc = load("exit3")
    doc["job"]["status"]["failed"] = "seven"
    with pytest.raises(ParseError) as info:
        read_job(doc["job"])
    assert info.value.field == "status.failed"
    assert "Job batch/sim" in str(info.value)


def test_a_failure_written_after_our_delete_is_the_cancel() -> None:
    # The controller counted the pods our DELETE killed and then wrote Failed at 18:36:20,
    # ten seconds after the deletion (18:36:10): hpcstate cancelled it, it did not fail.
    doc = load("cancelled")
    failed = {
        "type": "Failed",
        "status": "True",
        "reason": "BackoffLimitExceeded",
        "message": "Job has reached the specified backoff limit",
        "lastTransitionTime": "2026-04-26T18:36:20Z",
    }
    doc["job"]["status"] = {"conditions": [failed], "failed": 1, "active": 0}
    job = read_job(doc["job"])
    ref = parse_native_id("batch/sim")
    cancelled = assess("batch/sim", ref, job, [], observed_at=NOW, cancel_requested=True)
    assert cancelled.observation.state is State.CANCELLED
    # Another process (it did not send the DELETE) does not call it a failure either
    # (issue 13): undecided while the Job is there; its vanishing is an absence, which
    # the stored cancel request turns into CANCELLED.
    not_ours = assess("batch/sim", ref, job, [], observed_at=NOW, cancel_requested=False)
    assert not_ours.observation.state is not State.FAILED
    assert not not_ours.observation.final
    gone = assess("batch/sim", ref, job, [], observed_at=NOW, gone=True)
    assert gone.observation.absence is Absence.UNKNOWN
