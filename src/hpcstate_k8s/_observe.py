"""Kubernetes Job and Pod status -> hpcstate Observations. Pure: no I/O, no clock.

The verdict comes from the Job's conditions (``Complete``/``Failed`` are final; the
interim ``FailureTarget``/``SuccessCriteriaMet`` mean "still terminating"); the *kind* of
failure and the exit status come from the Job's pods. See ``docs/backends/k8s.md``.

Native ids: ``NAMESPACE/NAME`` for a Job, ``NAMESPACE/NAME[INDEX]`` for one index of an
Indexed Job (an hpcstate array task).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime

from attrs import evolve, frozen

from hpcstate import (
    Absence,
    ExitStatus,
    JobStats,
    Marker,
    Observation,
    ParseError,
    Reason,
    ReasonKind,
    Source,
    State,
)

from ._parse import (
    Condition,
    JobView,
    PodView,
    Termination,
    labelled_job_name,
    object_name,
    read_job,
    read_pod,
)

_NAMESPACE = r"[a-z0-9](?:[-a-z0-9]{0,61}[a-z0-9])?"
_NAME = r"[a-z0-9](?:[-a-z0-9.]{0,251}[a-z0-9])?"
_NATIVE_ID = re.compile(rf"\A({_NAMESPACE})/({_NAME})(?:\[(\d{{1,9}})\])?\Z", re.ASCII)

#: Pod status.reason values that mean the node or kubelet ended the pod, not the payload.
_NODE_REASONS = frozenset({"Evicted", "Terminated", "NodeShutdown", "NodeLost", "Shutdown"})
#: Container reasons where the payload never ran: the exit code is the runtime's, not its.
_NEVER_RAN = frozenset({"StartError", "ContainerCannotRun"})
#: The kubelet keeps at most this many bytes of a termination message; a longer one is not
#: the wrapper's (and is never handed to a JSON parser).
MAX_TERMINATION_MESSAGE = 4096
#: wrapper.LOST_CHILD (not imported: the wrapper module does I/O): the wrapper lost its
#: child's status, wrote no message, and exited with this code.
WRAPPER_LOST_CHILD = 125
#: Marker code on an item whose Job or pod object could not be read.
UNREADABLE = "unreadable"


@frozen(kw_only=True)
class JobRef:
    """Which Job (and which index of an Indexed Job) a native id names."""

    namespace: str
    name: str
    index: int | None = None

    @property
    def native_id(self) -> str:
        base = f"{self.namespace}/{self.name}"
        return base if self.index is None else f"{base}[{self.index}]"

    @property
    def job(self) -> JobRef:
        return JobRef(namespace=self.namespace, name=self.name)


def parse_native_id(text: str) -> JobRef:
    """``ns/name`` or ``ns/name[3]``. Raises ParseError."""
    match = _NATIVE_ID.match(text.strip())
    if match is None:
        raise ParseError(
            "expected a Kubernetes job id NAMESPACE/NAME or NAMESPACE/NAME[INDEX]",
            field="native_id",
            line=text,
        )
    index = int(match.group(3)) if match.group(3) is not None else None
    return JobRef(namespace=match.group(1), name=match.group(2), index=index)


# -- exit status -------------------------------------------------------------------------


def decode_exit(term: Termination, *, wrapper: bool) -> tuple[ExitStatus | None, str]:
    """The exit status one terminated container stands for, and a note on how we know.

    Without the wrapper, a code above 128 stays an exit code, marked ambiguous (the
    kubelet never reports a signal). With the wrapper, its termination message is exact,
    as long as the container's own exit code agrees with it.
    """
    code = term.exit_code
    if term.reason == "ContainerStatusUnknown":
        return None, (
            f"container {term.container}: ContainerStatusUnknown: exit code {code} was "
            "synthesized by the kubelet, not a real exit"
        )
    if term.reason in _NEVER_RAN:
        return None, (
            f"container {term.container} never ran ({term.reason}); exit code {code} is the "
            "container runtime's"
        )
    if code is None:
        return None, f"container {term.container} has no exit code"
    note = ""
    message = term.message.strip()
    if wrapper and len(term.message) > MAX_TERMINATION_MESSAGE:
        note = (
            f"the termination message ({len(term.message)} characters) is longer than Kubernetes "
            "keeps, so it is not the wrapper's; using the exit code"
        )
    elif wrapper and message:
        try:
            reported = ExitStatus.from_termination_message(message)
        except (ParseError, RecursionError):
            note = "the wrapper's termination message is unreadable; using the exit code"
        else:
            if reported.shell_code == code:
                return reported, "exit status reported by the hpcstate wrapper"
            note = (
                f"the wrapper reported {reported.describe()} but the container exited {code}: "
                "the wrapper itself was killed; using the exit code"
            )
    elif wrapper and code == WRAPPER_LOST_CHILD:
        return None, (
            f"container {term.container}: the hpcstate wrapper lost its payload's exit status "
            f"(exit {code}, no termination message); the payload's exit is unknown"
        )
    elif wrapper:
        note = "the wrapper wrote no termination message (killed before it could)"
    try:
        status = ExitStatus.from_shell_code(code, source="the container's exit code")
    except ParseError:
        return None, f"container {term.container} exit code {code} is out of range 0..255"
    return status, note


# -- assessing one job or index -----------------------------------------------------------


@frozen(kw_only=True)
class Assessment:
    """An observation, and whether it is a failure verdict whose kind (OOM, node failure,
    plain failure) depends on pods not seen yet: a watcher should list them first."""

    observation: Observation
    awaiting_pods: bool = False


@frozen(kw_only=True)
class _Verdict:
    state: State
    reason: Reason
    pod: PodView | None  # the pod whose termination gives the exit status
    finished_at: datetime | None
    detail: str


def belongs(pod: PodView, job: JobView) -> bool:
    """The pod was created by this Job (same uid; by name only if the pod has no uid)."""
    if pod.job_uid is not None and job.uid:
        return pod.job_uid == job.uid
    return pod.job_name == job.name and pod.meta.namespace in ("", job.namespace)


def _latest(pods: Iterable[PodView]) -> PodView | None:
    def key(pod: PodView) -> tuple[float, float]:
        finished = pod.finished_at
        created = pod.meta.created_at
        return (
            finished.timestamp() if finished is not None else float("-inf"),
            created.timestamp() if created is not None else float("-inf"),
        )

    chosen = None
    for pod in pods:
        if chosen is None or key(pod) >= key(chosen):
            chosen = pod
    return chosen


def killed_by_deletion(pod: PodView) -> bool:
    """The pod ended because it was deleted (by the Job controller when the Job failed, by
    a cancel, by GC): it was still running when the deletion was asked for."""
    if pod.deleted_while_running:
        return True
    if pod.ended_before_deletion:
        return False
    asked = pod.meta.deletion_requested_at
    if asked is None:
        return False
    finished = pod.finished_at
    return finished is None or finished >= asked


def _own_failures(pods: Sequence[PodView]) -> list[PodView]:
    """Pods that failed by themselves: the controller's kills are not the job's failures."""
    return [p for p in pods if p.phase == "Failed" and not killed_by_deletion(p)]


def _decisive(pods: Sequence[PodView], decided_at: datetime | None) -> PodView | None:
    """The pod whose failure decided: the latest own failure that ended by the time the
    Job controller decided (``decided_at``, its FailureTarget or Failed time). Pods that
    ended after that were killed for it, even when their last object (the final grace-0
    DELETE rewrites ``deletionTimestamp``) no longer shows that their deletion came first.
    In a tie (whole seconds), a pod nobody deleted wins over one being deleted."""
    failures = _own_failures(pods)
    if decided_at is not None:
        before = [p for p in failures if p.finished_at is not None and p.finished_at <= decided_at]
        failures = before or failures

    def key(pod: PodView) -> tuple[float, bool, float]:
        finished = pod.finished_at
        created = pod.meta.created_at
        return (
            finished.timestamp() if finished is not None else float("-inf"),
            pod.meta.deleting_since is None,
            created.timestamp() if created is not None else float("-inf"),
        )

    chosen = None
    for pod in failures:
        if chosen is None or key(pod) >= key(chosen):
            chosen = pod
    return chosen


def _decided_at(job: JobView) -> datetime | None:
    cond = job.condition("FailureTarget") or job.condition("Failed")
    return cond.last_transition if cond is not None else None


def _failures_unseen(job: JobView, own: Sequence[PodView]) -> bool:
    """The Job counts more failed pods than we know of: a failure (maybe the one that
    decided the verdict) is not seen yet. Pods being deleted count as known: the
    controller counts the ones it killed, and how they end does not change the verdict."""
    known = sum(
        1
        for p in own
        if p.phase == "Failed"
        or (p.phase != "Succeeded" and p.meta.deletion_requested_at is not None)
    )
    return not _own_failures(own) or known < job.failed


def _infrastructure(pod: PodView) -> tuple[State, Reason] | None:
    if pod.disruption is not None:
        cond = pod.disruption
        text = f"DisruptionTarget: {cond.reason}" + (f": {cond.message}" if cond.message else "")
        if cond.reason == "PreemptionByScheduler":
            return State.PREEMPTED, Reason(kind=ReasonKind.OTHER, text=text)
        return State.NODE_FAIL, Reason(kind=ReasonKind.NODE_FAIL, text=text)
    if pod.reason in _NODE_REASONS:
        text = pod.reason + (f": {pod.message}" if pod.message else "")
        return State.NODE_FAIL, Reason(kind=ReasonKind.NODE_FAIL, text=text)
    term = pod.termination
    if term is not None and term.reason == "ContainerStatusUnknown":
        text = "ContainerStatusUnknown" + (f": {term.message}" if term.message else "")
        return State.NODE_FAIL, Reason(kind=ReasonKind.NODE_FAIL, text=text)
    return None


def exit_reason(status: ExitStatus | None, base: Reason) -> Reason:
    """The reason a pod's own exit gives (the Job's condition, e.g. BackoffLimitExceeded,
    is bookkeeping: it goes in ``detail``); ``base`` when the exit says nothing."""
    if status is None:
        return base
    if status.signal is not None:
        return Reason(
            kind=ReasonKind.RAISED_SIGNAL,
            text=status.describe(),
            signal=status.signal,
            detail=base.text,
        )
    if status.code:
        text = f"exit {status.code}"
        if status.ambiguous:
            text += " (ambiguous: maybe 128+signal)" if status.code > 128 else " (ambiguous)"
        return Reason(kind=ReasonKind.NON_ZERO_EXIT_CODE, text=text, detail=base.text)
    return base


def _pod_failure(pod: PodView, base: Reason, *, wrapper: bool = False) -> tuple[State, Reason]:
    """Why this pod's failure failed the job: infrastructure, OOM, never started, or its
    exit (``base``, the Job condition's reason, when the exit is not known)."""
    infra = _infrastructure(pod)
    if infra is not None:
        state, reason = infra
        return state, Reason(kind=reason.kind, text=reason.text, detail=base.text)
    if pod.reason == "DeadlineExceeded":  # the pod's own activeDeadlineSeconds
        text = "pod DeadlineExceeded" + (f": {pod.message}" if pod.message else "")
        return State.TIMEOUT, Reason(kind=ReasonKind.TIME_LIMIT, text=text, detail=base.text)
    term = pod.termination
    if term is not None and term.reason == "OOMKilled":
        text = f"OOMKilled (pod {pod.name}, container {term.container})"
        return State.OUT_OF_MEMORY, Reason(
            kind=ReasonKind.OUT_OF_MEMORY, text=text, detail=base.text
        )
    if term is not None and term.reason in _NEVER_RAN:
        text = term.reason + (f": {term.message}" if term.message else "")
        return State.FAILED, Reason(kind=ReasonKind.JOB_LAUNCH_FAILURE, text=text, detail=base.text)
    if term is not None:
        status, _ = decode_exit(term, wrapper=wrapper or pod.wrapper)
        return State.FAILED, exit_reason(status, base)
    return State.FAILED, base


def _condition_text(cond: Condition) -> str:
    return cond.reason + (f": {cond.message}" if cond.message else "")


def _failed_reason(cond: Condition) -> Reason:
    text = _condition_text(cond)
    if cond.reason == "BackoffLimitExceeded":
        return Reason(kind=ReasonKind.BACKOFF_LIMIT, text=text)
    return Reason(kind=ReasonKind.OTHER, text=text or "Failed")


def _failure_time(job: JobView, failed: Condition) -> datetime | None:
    target = job.condition("FailureTarget")
    if target is not None and target.last_transition is not None:
        return target.last_transition
    return failed.last_transition


def _job_verdict(job: JobView, scope: Sequence[PodView] | None) -> _Verdict | None:
    pods = scope or ()
    complete = job.condition("Complete")
    if complete is not None:
        succeeded = _latest(p for p in pods if p.phase == "Succeeded")
        return _Verdict(
            state=State.COMPLETED,
            reason=Reason(kind=ReasonKind.NONE, text=complete.reason),
            pod=succeeded,
            finished_at=job.completion_time or complete.last_transition,
            detail=f"Job condition {complete.describe()}",
        )
    failed = job.condition("Failed")
    if failed is None:
        return None
    detail = f"Job condition {failed.describe()}"
    if failed.reason == "DeadlineExceeded":
        return _deadline_verdict(failed, pods, detail)
    base = _failed_reason(failed)
    last = _decisive(pods, _decided_at(job))
    if last is None:
        return _Verdict(
            state=State.FAILED,
            reason=base,
            pod=_latest(p for p in pods if p.ended),
            finished_at=failed.last_transition,
            detail=detail,
        )
    state, reason = _pod_failure(last, base, wrapper=job.wrapper)
    return _Verdict(
        state=state,
        reason=reason,
        pod=last,
        finished_at=failed.last_transition,
        detail=f"{detail}; last failed pod {last.name}",
    )


def _deadline_verdict(failed: Condition, pods: Sequence[PodView], detail: str) -> _Verdict:
    # activeDeadlineSeconds is the time limit hpcstate sets from JobSpec.time_limit.
    return _Verdict(
        state=State.TIMEOUT,
        reason=Reason(kind=ReasonKind.TIME_LIMIT, text=_condition_text(failed)),
        pod=_latest(p for p in pods if p.ended),
        finished_at=failed.last_transition,
        detail=detail,
    )


def _index_verdict(job: JobView, index: int, scope: Sequence[PodView] | None) -> _Verdict | None:
    pods = scope or ()
    if index in job.completed_indexes:
        pod = _latest(p for p in pods if p.phase == "Succeeded")
        complete = job.condition("Complete")
        finished = pod.finished_at if pod is not None else None
        if finished is None and complete is not None:
            finished = job.completion_time or complete.last_transition
        return _Verdict(
            state=State.COMPLETED,
            reason=Reason(kind=ReasonKind.NONE, text="index completed"),
            pod=pod,
            finished_at=finished,
            detail=f"index {index} is in status.completedIndexes",
        )
    failed = job.condition("Failed")
    if job.failed_indexes is not None and index in job.failed_indexes:
        base = Reason(
            kind=ReasonKind.BACKOFF_LIMIT,
            text=f"index {index} failed (listed in status.failedIndexes)",
        )
        last = _decisive(pods, _decided_at(job))
        if last is None:
            return _Verdict(
                state=State.FAILED,
                reason=base,
                pod=_latest(p for p in pods if p.ended),
                finished_at=failed.last_transition if failed is not None else None,
                detail=f"index {index} is in status.failedIndexes",
            )
        state, reason = _pod_failure(last, base, wrapper=job.wrapper)
        return _Verdict(
            state=state,
            reason=reason,
            pod=last,
            finished_at=last.finished_at,
            detail=f"index {index} is in status.failedIndexes; last failed pod {last.name}",
        )
    complete = job.condition("Complete")
    if complete is not None:
        return _Verdict(
            state=State.CANCELLED,
            reason=Reason(
                kind=ReasonKind.CANCELLED,
                text=f"the Job completed ({complete.reason or 'Complete'}) without this index",
            ),
            pod=_latest(p for p in pods if p.ended),
            finished_at=job.completion_time or complete.last_transition,
            detail=f"Job condition {complete.describe()}; index {index} not completed",
        )
    if failed is None:
        return None
    detail = f"Job condition {failed.describe()}"
    if failed.reason == "DeadlineExceeded":
        return _deadline_verdict(failed, pods, detail)
    base = _failed_reason(failed)
    last = _decisive(pods, _decided_at(job))
    if last is not None:
        state, reason = _pod_failure(last, base, wrapper=job.wrapper)
        return _Verdict(
            state=state,
            reason=reason,
            pod=last,
            finished_at=last.finished_at or failed.last_transition,
            detail=f"{detail}; last failed pod {last.name}",
        )
    return _Verdict(
        state=State.CANCELLED,
        reason=Reason(
            kind=ReasonKind.CANCELLED,
            text=f"the Job failed ({failed.reason or 'Failed'}) before this index finished",
        ),
        pod=_latest(p for p in pods if p.ended),
        finished_at=failed.last_transition,
        detail=detail,
    )


def _started(job: JobView, pods: Sequence[PodView] | None, *, whole: bool) -> datetime | None:
    starts = [p.started_at for p in pods or () if p.started_at is not None]
    if starts:
        return min(starts)
    return job.start_time if whole else None


def _nodes(pods: Sequence[PodView] | None) -> tuple[str, ...]:
    return tuple(sorted({p.node for p in pods or () if p.node}))


def _elapsed(started: datetime | None, finished: datetime | None) -> float | None:
    if started is None or finished is None or finished < started:
        return None
    return (finished - started).total_seconds()


def _exit_of(pod: PodView | None, job: JobView) -> tuple[ExitStatus | None, str]:
    if pod is None or pod.termination is None:
        return None, ""
    return decode_exit(pod.termination, wrapper=job.wrapper or pod.wrapper)


def _join(*parts: str) -> str:
    return "; ".join(p for p in parts if p)


def absent(native_id: str, ref: JobRef, *, observed_at: datetime, why: str = "") -> Observation:
    """The Job does not exist (any more) and no verdict was seen: unknown, never failed."""
    detail = why or (
        f"Job {ref.namespace}/{ref.name} does not exist: deleted, or removed by "
        "ttlSecondsAfterFinished, before hpcstate saw a verdict"
    )
    return Observation(
        native_id=native_id,
        source=Source.QUEUE,
        observed_at=observed_at,
        absence=Absence.UNKNOWN,
        detail=detail,
    )


def _cancelled(
    native_id: str,
    job: JobView | None,
    scope: Sequence[PodView] | None,
    *,
    observed_at: datetime,
) -> Observation:
    pod = _latest(p for p in scope or () if p.ended)
    exit_, note = _exit_of(pod, job) if job is not None else (None, "")
    started = _started(job, scope, whole=False) if job is not None else None
    finished = job.meta.deleting_since if job is not None else None
    return Observation(
        native_id=native_id,
        source=Source.QUEUE,
        observed_at=observed_at,
        state=State.CANCELLED,
        final=True,
        stats=JobStats(
            exit=exit_,
            exit_source=Source.QUEUE if exit_ is not None else None,
            reason=Reason(kind=ReasonKind.CANCELLED, text="Job deleted on request (cancel)"),
            submitted_at=job.meta.created_at if job is not None else None,
            started_at=started,
            finished_at=finished,
            elapsed_s=_elapsed(started, finished),
            nodes=_nodes(scope),
        ),
        detail=_join("hpcstate deleted the Job on request before it finished", note),
    )


def unreadable_markers(errors: Iterable[ParseError | str]) -> tuple[Marker, ...]:
    """One ``unreadable`` marker per object that could not be read, naming it and the field."""
    markers = []
    for error in errors:
        text = str(error)
        if len(text) > 300:
            text = text[:300] + "..."
        markers.append(Marker(code=UNREADABLE, text=f"Kubernetes object unreadable: {text}"))
    return tuple(markers)


def unreadable(
    native_id: str, errors: Iterable[ParseError | str], *, observed_at: datetime
) -> Observation:
    """An id whose Job cannot be read: nothing is known, nothing is decided, and the item
    gets an ``unreadable`` marker per problem."""
    markers = unreadable_markers(errors)
    return Observation(
        native_id=native_id,
        source=Source.QUEUE,
        observed_at=observed_at,
        absence=Absence.NO_RECORD,
        detail="; ".join(m.text for m in markers) or "Kubernetes object unreadable",
        markers=markers,
    )


def assess(
    native_id: str,
    ref: JobRef,
    job: JobView | None,
    pods: Sequence[PodView] | None,
    *,
    observed_at: datetime,
    gone: bool = False,
    cancel_requested: bool = False,
) -> Assessment:
    """What the Job (or one index of it) says now.

    ``job`` is the latest Job object (the final one from a DELETED event, or None when it
    was never seen); ``gone`` says the Job no longer exists. ``pods`` are pods of the
    namespace (any job's: they are filtered by uid), or None when they cannot be read.
    ``cancel_requested`` says hpcstate deleted this Job on a user's request.

    Raises ParseError, and nothing else, whatever one Job's data holds: a caller watching
    many Jobs can set that one aside and go on.
    """
    try:
        return judge(
            native_id,
            ref,
            job,
            pods,
            observed_at=observed_at,
            gone=gone,
            cancel_requested=cancel_requested,
        )
    except ParseError:
        raise
    except Exception as error:  # a bug met on odd data: still only this Job's problem
        what = f"Job {ref.namespace}/{ref.name}"
        raise ParseError(
            f"cannot judge this Job's status ({type(error).__name__}: {error})",
            command=what,
        ) from error


def judge(
    native_id: str,
    ref: JobRef,
    job: JobView | None,
    pods: Sequence[PodView] | None,
    *,
    observed_at: datetime,
    gone: bool = False,
    cancel_requested: bool = False,
) -> Assessment:
    """``assess`` without its safety net: tests call this to see a bug as itself."""
    if job is None:
        if cancel_requested:
            return Assessment(
                observation=_cancelled(native_id, None, None, observed_at=observed_at)
            )
        return Assessment(observation=absent(native_id, ref, observed_at=observed_at))
    own = None if pods is None else [p for p in pods if belongs(p, job)]
    whole = ref.index is None
    scope = own
    if ref.index is not None:
        if not job.indexed:
            why = (
                f"Job {job.namespace}/{job.name} is not an Indexed Job: it has no index {ref.index}"
            )
            return Assessment(observation=absent(native_id, ref, observed_at=observed_at, why=why))
        if job.completions is not None and ref.index >= job.completions:
            why = f"Job {job.namespace}/{job.name} has {job.completions} indexes, not {ref.index}"
            return Assessment(observation=absent(native_id, ref, observed_at=observed_at, why=why))
        scope = None if own is None else [p for p in own if p.index == ref.index]
    # A failure whose kind depends on pods: wait for pods while a failure the Job counts
    # (maybe the decisive one) has not been seen.
    failed = job.condition("Failed")
    awaiting = (
        own is not None
        and (
            (failed is not None and failed.reason != "DeadlineExceeded") or bool(job.failed_indexes)
        )
        and job.failed > 0
        and _failures_unseen(job, own)
    )
    if ref.index is None:
        verdict = _job_verdict(job, scope)
    else:
        verdict = _index_verdict(job, ref.index, scope)
    deleted_at = job.meta.deleting_since
    # The Job controller keeps counting while a deleted Job's pods die, and may then write
    # Failed (the killed pods exceed backoffLimit): a verdict reached after our DELETE is
    # the cancel's doing. A completion of unknown date (an index whose pod is gone) stays.
    if (
        verdict is not None
        and cancel_requested
        and deleted_at is not None
        and (
            verdict.finished_at >= deleted_at
            if verdict.finished_at is not None
            else verdict.state is not State.COMPLETED
        )
    ):
        return Assessment(observation=_cancelled(native_id, job, scope, observed_at=observed_at))
    if (
        verdict is not None
        and deleted_at is not None
        and verdict.state is not State.COMPLETED
        and verdict.finished_at is not None
        and verdict.finished_at >= deleted_at
        and not _own_failures(scope or ())
    ):
        # Someone (another hpcstate process's cancel, kubectl) deleted the Job and only
        # then was a failure written, for pods that the deletion killed: not the job's
        # failure (1.36 writes none; older controllers could count the killed pods). It
        # is not decided here: the Job's vanishing is an absence, which a stored cancel
        # request turns into CANCELLED.
        verdict = None
    if verdict is not None:
        return Assessment(
            observation=_verdict_observation(native_id, job, scope, verdict, whole, observed_at),
            awaiting_pods=awaiting and verdict.state is not State.COMPLETED,
        )
    if cancel_requested and (gone or job.meta.deleting_since is not None):
        return Assessment(observation=_cancelled(native_id, job, scope, observed_at=observed_at))
    if gone:
        return Assessment(observation=absent(native_id, ref, observed_at=observed_at))
    return Assessment(observation=_activity(native_id, job, scope, whole, observed_at))


def _verdict_observation(
    native_id: str,
    job: JobView,
    scope: Sequence[PodView] | None,
    verdict: _Verdict,
    whole: bool,
    observed_at: datetime,
) -> Observation:
    exit_, note = _exit_of(verdict.pod, job)
    if exit_ is None and verdict.state is State.COMPLETED:
        # Complete (or a completed index) means the counted pods exited 0; the pod may be gone.
        exit_ = ExitStatus.exited(0)
    started = _started(job, scope, whole=whole)
    return Observation(
        native_id=native_id,
        source=Source.QUEUE,
        observed_at=observed_at,
        state=verdict.state,
        final=True,
        stats=JobStats(
            exit=exit_,
            exit_source=Source.QUEUE if exit_ is not None else None,
            reason=verdict.reason,
            submitted_at=job.meta.created_at,
            started_at=started,
            finished_at=verdict.finished_at,
            elapsed_s=_elapsed(started, verdict.finished_at),
            nodes=_nodes(scope),
        ),
        detail=_join(verdict.detail, note),
    )


def _pending_reason(pods: Sequence[PodView] | None) -> Reason | None:
    for pod in pods or ():
        if pod.ended:
            continue
        if pod.waiting and pod.waiting not in ("ContainerCreating", "PodInitializing"):
            text = pod.waiting + (f": {pod.waiting_message}" if pod.waiting_message else "")
            return Reason(kind=ReasonKind.OTHER, text=text)
        if pod.unschedulable is not None:
            cond = pod.unschedulable
            return Reason(
                kind=ReasonKind.OTHER,
                text=cond.reason + (f": {cond.message}" if cond.message else ""),
            )
    return None


def _activity(
    native_id: str,
    job: JobView,
    scope: Sequence[PodView] | None,
    whole: bool,
    observed_at: datetime,
) -> Observation:
    """Not decided yet: QUEUED or RUNNING, never back to QUEUED once an attempt ran."""
    suspended = job.condition("Suspended")
    interim = job.condition("FailureTarget") or job.condition("SuccessCriteriaMet")
    if scope is None:
        # Pods cannot be read: the counters are all we have. `active` counts pending
        # pods too, so only `ready` (1.24+) says one runs; without it, `active` must do.
        busy = (job.ready or 0) > 0 if job.ready is not None else job.active > 0
        ran = busy or job.succeeded > 0 or job.failed > 0 or interim is not None
        running_pod = None
    else:
        running = [p for p in scope if p.running and not p.ended]
        running_pod = _latest(running) if running else None
        ran = bool(running) or any(p.ran for p in scope) or interim is not None
        if whole:
            ran = ran or (job.ready or 0) > 0 or job.succeeded > 0 or job.failed > 0
    if suspended is not None and interim is None:
        reason = Reason(
            kind=ReasonKind.OTHER, text=suspended.reason or "JobSuspended", detail=suspended.message
        )
        if not ran:
            return Observation(
                native_id=native_id,
                source=Source.QUEUE,
                observed_at=observed_at,
                state=State.QUEUED,
                stats=JobStats(reason=reason, submitted_at=job.meta.created_at),
                detail=f"Job condition {suspended.describe()}",
            )
        # Suspending deletes the running pods, but this run has begun: it is not queued
        # again (that would read as a requeue), it is held.
        return Observation(
            native_id=native_id,
            source=Source.QUEUE,
            observed_at=observed_at,
            state=State.RUNNING,
            stats=JobStats(
                reason=reason,
                submitted_at=job.meta.created_at,
                started_at=_started(job, scope, whole=whole),
                nodes=_nodes(scope),
            ),
            handle=(job.uid or None) if whole else None,
            detail=f"Job condition {suspended.describe()}: suspended after it started",
        )
    if not ran:
        return Observation(
            native_id=native_id,
            source=Source.QUEUE,
            observed_at=observed_at,
            state=State.QUEUED,
            stats=JobStats(reason=_pending_reason(scope), submitted_at=job.meta.created_at),
            detail="no pod has started yet",
        )
    if interim is not None:
        detail = f"Job condition {interim.describe()}: pods are still terminating"
    elif running_pod is not None:
        detail = f"pod {running_pod.name} is running"
    else:
        detail = "between attempts" if scope is not None else "Job has running pods"
    handle = job.uid if whole else (running_pod.uid if running_pod is not None else None)
    return Observation(
        native_id=native_id,
        source=Source.QUEUE,
        observed_at=observed_at,
        state=State.RUNNING,
        stats=JobStats(
            submitted_at=job.meta.created_at,
            started_at=_started(job, scope, whole=whole),
            nodes=_nodes(scope),
        ),
        handle=handle or None,
        detail=detail,
    )


# -- a namespace's LISTs (queue) -------------------------------------------------------------


@frozen(kw_only=True)
class Listing:
    """What one namespace's LISTs say of the ids asked about."""

    observations: Mapping[str, Observation]  # by native id, one for each id asked
    skipped: tuple[ParseError, ...]  # objects that could not be read, in LIST order
    unjudged: tuple[tuple[str, ParseError], ...]  # (native id, why) its Job was not judged


def cancel_requested(
    cancelled: Mapping[tuple[str, str], str | None], ref: JobRef, uid: str | None
) -> bool:
    """Whether hpcstate deleted this Job on request: the Job of that name, or of that uid
    when both the request and the Job name one (``cancelled``: (namespace, name) -> the
    uid deleted, None if unknown)."""
    key = (ref.namespace, ref.name)
    if key not in cancelled:
        return False
    wanted = cancelled[key]
    return wanted is None or uid is None or wanted == uid


def _pod_or_error(obj: object) -> PodView | ParseError:
    try:
        return read_pod(obj)
    except ParseError as error:
        return error


def observe_listed(
    group: Sequence[tuple[str, JobRef]],
    job_objects: Sequence[object],
    pod_objects: Sequence[object] | None,
    *,
    observed_at: datetime,
    kept: Mapping[str, Observation],
    created: Mapping[tuple[str, str], str],
    cancelled: Mapping[tuple[str, str], str | None],
) -> Listing:
    """One namespace's ids judged from a LIST of its Jobs and one of their pods (None:
    the pods cannot be read). ``kept``: verdicts a watch event carried, by native id,
    served as they were; ``created``: (namespace, name) -> uid of the Jobs this process
    created (a Job of that name with another uid is not ours: ours is gone).

    An object that cannot be read costs only its own ids their answer (no record, with
    an ``unreadable`` marker), never the whole namespace's.
    """
    names = {ref.name for _, ref in group}
    problems: dict[str, list[str]] = {}
    skipped: list[ParseError] = []
    views: dict[str, JobView] = {}
    for obj in job_objects:
        name = object_name(obj)
        if name is not None and name in names:
            try:
                views[name] = read_job(obj)
            except ParseError as error:
                skipped.append(error)
                problems.setdefault(name, []).append(str(error))
    pods: list[PodView] | None = None
    if pod_objects is not None:
        pods = []
        for obj in pod_objects:
            pod = _pod_or_error(obj)
            if isinstance(pod, ParseError):
                skipped.append(pod)
                problems.setdefault(labelled_job_name(obj) or "", []).append(str(pod))
            else:
                pods.append(pod)
    observations: dict[str, Observation] = {}
    unjudged: list[tuple[str, ParseError]] = []
    for native_id, ref in group:
        held = kept.get(native_id)
        if held is not None:
            # Told by a watch event (DELETED included): never re-derived from a later LIST.
            observations[native_id] = held
            continue
        mine = problems.get(ref.name, [])
        job = views.get(ref.name)
        if job is None and mine:
            observations[native_id] = unreadable(native_id, mine, observed_at=observed_at)
            continue  # it exists, but cannot be read
        known = created.get((ref.namespace, ref.name))
        if job is not None and known is not None and job.uid and job.uid != known:
            job = None  # another Job reuses the name: ours is gone
        try:
            obs = assess(
                native_id,
                ref,
                job,
                pods,
                observed_at=observed_at,
                gone=job is None,
                cancel_requested=cancel_requested(cancelled, ref, job.uid if job else None),
            ).observation
        except ParseError as error:
            unjudged.append((native_id, error))
            obs = unreadable(native_id, [*mine, str(error)], observed_at=observed_at)
        else:
            if mine:
                obs = evolve(obs, markers=(*obs.markers, *unreadable_markers(mine)))
        observations[native_id] = obs
    return Listing(observations=observations, skipped=tuple(skipped), unjudged=tuple(unjudged))
