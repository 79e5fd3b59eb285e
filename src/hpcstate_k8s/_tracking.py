"""The memory of one namespace's watch: Jobs and Pods in, changed Observations out.

Pure (no I/O, no clock): the client feeds it LIST results and watch events with the time
they were seen, and sends on what it returns. It is a plain mutable object owned by one
watch; nothing here is global.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timezone

from attrs import evolve, frozen

from hpcstate import Absence, Observation, ParseError, State

from ._observe import JobRef, assess, belongs, unreadable, unreadable_markers
from ._parse import JobView, PodView, labelled_job_name, object_name, read_job, read_pod

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


@frozen(kw_only=True)
class PodListRequest:
    """A Job whose first failure verdict waits for a fresh LIST of its pods."""

    name: str
    uid: str
    mark: tuple[object, ...]  # the Job's failure state the LIST must be newer than


def _failure_mark(job: JobView) -> tuple[object, ...]:
    """What a pod LIST answers for: this Job's failures as far as they have got. One more
    failed pod or failed index needs a new LIST."""
    return (job.uid, job.failed, job.failed_indexes, job.condition("Failed") is not None)


def _pod_key(obj: object) -> str:
    if isinstance(obj, Mapping):
        meta = obj.get("metadata")
        if isinstance(meta, Mapping):
            for field in ("uid", "name"):
                value = meta.get(field)
                if isinstance(value, str) and value:
                    return value
    return ""


class NamespaceTracker:
    """Tracked Jobs of one namespace, their pods, and what was last said of each id."""

    def __init__(
        self,
        namespace: str,
        refs: Iterable[tuple[str, JobRef]],
        *,
        uids: Mapping[str, str] | None = None,
        cancelled: Mapping[str, str | None] | None = None,
    ) -> None:
        self.namespace = namespace
        self._refs: dict[str, list[tuple[str, JobRef]]] = {}
        for native_id, ref in refs:
            if ref.namespace != namespace:
                raise ValueError(f"{native_id} is not in namespace {namespace}")
            self._refs.setdefault(ref.name, []).append((native_id, ref))
        self._uids: dict[str, str] = dict(uids or {})  # name -> the uid we track
        self._cancelled: dict[str, str | None] = dict(cancelled or {})
        self._jobs: dict[str, JobView] = {}  # latest object of each tracked Job
        self._gone: set[str] = set()  # tracked Jobs that no longer exist
        self._pods: dict[str, PodView] = {}  # by pod uid (or name), deleted ones kept
        self._deleted_pods: set[str] = set()
        self._pods_readable = True
        self._last: dict[str, Observation] = {}  # last sent, observed_at blanked
        self._decided: set[str] = set()
        # Pod LISTs for failure verdicts: by Job name, the mark the last one answered.
        self._pods_listed_at: dict[str, tuple[object, ...]] = {}
        self._wanted: dict[str, PodListRequest] = {}  # verdicts waiting for a pod LIST
        self._in_flight: set[tuple[str, tuple[object, ...]]] = set()
        # Objects that could not be read, by Job name: object key -> the error.
        self._unreadable: dict[str, dict[str, str]] = {}
        self._problems: list[str] = []  # for the client to log

    # -- what the client asks ------------------------------------------------------------

    @property
    def names(self) -> frozenset[str]:
        return frozenset(self._refs)

    def unseen(self) -> frozenset[str]:
        """Tracked Jobs never seen (and not known gone)."""
        return frozenset(n for n in self._refs if n not in self._jobs and n not in self._gone)

    def take_wanted_pod_lists(self) -> list[PodListRequest]:
        """Jobs whose first failure verdict waits for a LIST of their pods (each once).

        The pod watch may lag the Job watch: a LIST made after the Job's failure was seen
        holds every pod state the Job controller counted, so the verdict names the
        failure that decided it (an OOM kill of the last retry, not the first exit 1).
        """
        wanted = [r for r in self._wanted.values() if (r.name, r.mark) not in self._in_flight]
        self._in_flight.update((r.name, r.mark) for r in wanted)
        return wanted

    def take_problems(self) -> list[str]:
        """Objects that could not be read since the last call (to log; tracking goes on)."""
        problems, self._problems = self._problems, []
        return problems

    def done(self) -> bool:
        """Every id has its verdict (or is known gone) and no pod of them still runs."""
        for name, refs in self._refs.items():
            if any(native_id not in self._decided for native_id, _ in refs):
                return False
            if name in self._gone or not self._pods_readable:
                continue
            job = self._jobs.get(name)
            if job is not None and any(
                belongs(p, job) and not p.ended and key not in self._deleted_pods
                for key, p in self._pods.items()
            ):
                return False
        return True

    # -- what the client feeds -----------------------------------------------------------

    def cancel_requested(
        self, name: str, uid: str | None, observed_at: datetime
    ) -> list[Observation]:
        if name not in self._refs:
            return []
        self._cancelled[name] = uid
        return self._refresh([name], observed_at)

    def jobs_listed(self, objects: Sequence[object], observed_at: datetime) -> list[Observation]:
        """A complete LIST of the tracked Jobs' namespace (or label selection)."""
        listed: set[str] = set()
        for obj in objects:
            name = object_name(obj)
            if name is None or name not in self._refs:
                continue
            job = self._read_job(name, obj)
            if job is None or self._store_job(job):
                listed.add(name)  # unreadable, but it exists: not gone
        for name in self._refs:
            if name not in listed:
                self._gone.add(name)  # deleted while nobody watched, or never existed
        return self._refresh(self._refs, observed_at)

    def job_event(self, kind: str, obj: object, observed_at: datetime) -> list[Observation]:
        name = object_name(obj)
        if name is None or name not in self._refs:
            return []
        job = self._read_job(name, obj)
        if job is None:
            return self._refresh([name], observed_at)  # the last readable state stands
        if not self._store_job(job):
            return self._refresh([name], observed_at)
        if kind == "DELETED":
            self._gone.add(name)
        return self._refresh([name], observed_at)

    def pods_unreadable(self, observed_at: datetime) -> list[Observation]:
        """Pods cannot be listed (RBAC): judge from the Job's counters alone."""
        self._pods_readable = False
        self._wanted.clear()
        return self._refresh(self._refs, observed_at)

    def pods_listed(self, objects: Sequence[object], observed_at: datetime) -> list[Observation]:
        """A LIST of pods. Pods missing from it were deleted meanwhile: their last state is
        kept (it may hold the only record of an exit code)."""
        touched = self._store_pods(objects)
        listed = {_pod_key(obj) for obj in objects}
        self._deleted_pods.update(key for key in self._pods if key not in listed)
        for name, problems in self._unreadable.items():
            for key in [k for k in problems if k.startswith("pod:") and k[4:] not in listed]:
                del problems[key]  # that broken pod is gone
                touched.add(name)
        return self._refresh(touched, observed_at)

    def pod_event(self, kind: str, obj: object, observed_at: datetime) -> list[Observation]:
        # A DELETED pod's final state is as good as a MODIFIED one; it just runs no more.
        touched = self._store_pods([obj])
        if kind == "DELETED":
            self._deleted_pods.add(_pod_key(obj))
        return self._refresh(touched, observed_at)

    def job_pods_listed(
        self,
        requests: Sequence[PodListRequest],
        objects: Sequence[object],
        observed_at: datetime,
    ) -> list[Observation]:
        """The pods of those Jobs, from a LIST made after take_wanted_pod_lists gave them
        (one LIST for all; empty if the pods are gone): their verdicts can now be told."""
        self._store_pods(objects)
        for request in requests:
            self._pods_listed_at[request.name] = request.mark
            self._in_flight.discard((request.name, request.mark))
            if self._wanted.get(request.name) == request:
                del self._wanted[request.name]
        return self._refresh(dict.fromkeys(r.name for r in requests), observed_at)

    # -- internals -----------------------------------------------------------------------

    def _read_job(self, name: str, obj: object) -> JobView | None:
        """The Job, or None if it cannot be read (noted, and marked on its items)."""
        try:
            job = read_job(obj)
        except ParseError as error:
            self._note_unreadable(name, f"job:{name}", error)
            return None
        self._unreadable.get(name, {}).pop(f"job:{name}", None)
        return job

    def _note_unreadable(self, name: str, key: str, error: ParseError) -> None:
        text = str(error)
        if self._unreadable.setdefault(name, {}).get(key) != text:
            self._problems.append(text)
        self._unreadable[name][key] = text

    def _store_job(self, job: JobView) -> bool:
        """Keep the latest object of the tracked Job; False if it is another Job that
        reuses the name (then the tracked one is gone)."""
        name = job.name
        expected = self._uids.get(name)
        if expected is None and job.uid:
            self._uids[name] = job.uid
        elif expected is not None and job.uid and job.uid != expected:
            self._gone.add(name)
            return False
        self._jobs[name] = job
        return True

    def _store_pods(self, objects: Iterable[object]) -> set[str]:
        touched: set[str] = set()
        for obj in objects:
            labelled = labelled_job_name(obj)
            if labelled is None or labelled not in self._refs:
                continue  # another Job's pod: not read at all
            key = _pod_key(obj)
            try:
                pod = read_pod(obj)
            except ParseError as error:
                # Skipped: the Job's verdict is told from its other pods and its status.
                self._note_unreadable(labelled, f"pod:{key}", error)
                touched.add(labelled)
                continue
            self._unreadable.get(labelled, {}).pop(f"pod:{key}", None)
            name = pod.job_name
            if name is None or name not in self._refs:
                continue
            expected = self._uids.get(name)
            if expected is not None and pod.job_uid is not None and pod.job_uid != expected:
                continue
            before = self._pods.get(key)
            if before is not None and before.ended and not pod.ended:
                continue  # a pod never un-ends: a stale event after a fresher LIST
            if before is not None and (
                before.ended_before_deletion
                or (before.ended and before.meta.deleting_since is None and pod.ended)
            ):
                # Seen ended, then deleted (TTL, GC): the deletion did not kill it. The
                # timestamps alone (whole seconds) could not always tell.
                pod = evolve(pod, ended_before_deletion=True)
            if not pod.ended_before_deletion and (
                (before is not None and before.deleted_while_running)
                or (pod.meta.deleting_since is not None and not pod.ended)
            ):
                # Seen being deleted while it ran: killed (the final grace-0 DELETE will
                # rewrite deletionTimestamp to a time after the container's end).
                pod = evolve(pod, deleted_while_running=True)
            self._pods[key] = pod
            touched.add(name)
        return touched

    def _refresh(self, names: Iterable[str], observed_at: datetime) -> list[Observation]:
        out: list[Observation] = []
        pods = list(self._pods.values()) if self._pods_readable else None
        for name in names:
            job = self._jobs.get(name)
            gone = name in self._gone
            problems = self._unreadable.get(name, {})
            if job is None and not gone and not problems:
                continue  # not listed yet: nothing to say
            cancelled = name in self._cancelled and (
                self._cancelled[name] is None or job is None or self._cancelled[name] == job.uid
            )
            for native_id, ref in self._refs.get(name, []):
                if job is None and not gone:
                    # Seen, but never readable: nothing known, nothing decided.
                    obs = unreadable(native_id, problems.values(), observed_at=observed_at)
                else:
                    try:
                        result = assess(
                            native_id,
                            ref,
                            job,
                            pods,
                            observed_at=observed_at,
                            gone=gone,
                            cancel_requested=cancelled,
                        )
                    except ParseError as error:
                        self._note_unreadable(name, f"assess:{native_id}", error)
                        problems = self._unreadable[name]
                        obs = unreadable(native_id, problems.values(), observed_at=observed_at)
                    else:
                        problems.pop(f"assess:{native_id}", None)
                        obs = result.observation
                        if job is not None and self._waits_for_pods(native_id, job, obs, cancelled):
                            self._wanted[name] = PodListRequest(
                                name=name, uid=job.uid, mark=_failure_mark(job)
                            )
                            continue
                        if problems and native_id not in self._decided:
                            markers = unreadable_markers(problems.values())
                            obs = evolve(obs, markers=(*obs.markers, *markers))
                if native_id in self._decided and not (obs.final and obs.state is not None):
                    continue  # after a verdict, "gone" or a stale state adds nothing
                key = evolve(obs, observed_at=_EPOCH)
                if self._last.get(native_id) == key:
                    continue
                self._last[native_id] = key
                if obs.final or obs.absence is Absence.UNKNOWN or obs.state is State.CANCELLED:
                    self._decided.add(native_id)
                out.append(obs)
        return out

    def _waits_for_pods(
        self, native_id: str, job: JobView, obs: Observation, cancelled: bool
    ) -> bool:
        """A first failure verdict waits for a LIST of the Job's pods made after it."""
        return (
            bool(job.uid)
            and self._pods_readable
            and native_id not in self._decided
            and obs.final
            and obs.state is not None
            and obs.state is not State.COMPLETED
            and not cancelled
            and self._pods_listed_at.get(job.name) != _failure_mark(job)
        )
