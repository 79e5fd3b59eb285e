"""The memory of one namespace's watch: Jobs and Pods in, changed Observations out.

Pure (no I/O, no clock): the client feeds it LIST results and watch events with the time
they were seen, and sends on what it returns. It is a plain mutable object owned by one
watch; nothing here is global.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timezone

from attrs import evolve

from hpcstate import Observation, State

from ._dialect import JobRef, assess, belongs
from ._objects import JOB_NAME_LABELS, JobView, PodView, read_job, read_pod

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def _name_of(obj: object) -> str | None:
    if isinstance(obj, Mapping):
        meta = obj.get("metadata")
        if isinstance(meta, Mapping):
            name = meta.get("name")
            if isinstance(name, str):
                return name
    return None


def _pod_key(obj: object) -> str:
    if isinstance(obj, Mapping):
        meta = obj.get("metadata")
        if isinstance(meta, Mapping):
            for field in ("uid", "name"):
                value = meta.get(field)
                if isinstance(value, str) and value:
                    return value
    return ""


def _pod_job_name(obj: object) -> str | None:
    """The Job a pod belongs to, by label, without reading the rest of it."""
    if isinstance(obj, Mapping):
        meta = obj.get("metadata")
        labels = meta.get("labels") if isinstance(meta, Mapping) else None
        if isinstance(labels, Mapping):
            for key in JOB_NAME_LABELS:
                value = labels.get(key)
                if isinstance(value, str) and value:
                    return value
    return None


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
        self._pod_lists_done: set[str] = set()  # job uids whose pods were listed for a verdict
        self._wanted: dict[str, str] = {}  # job name -> uid: verdict waits for a pod list
        self._in_flight: set[str] = set()

    # -- what the client asks ------------------------------------------------------------

    @property
    def names(self) -> frozenset[str]:
        return frozenset(self._refs)

    def unseen(self) -> frozenset[str]:
        """Tracked Jobs never seen (and not known gone)."""
        return frozenset(n for n in self._refs if n not in self._jobs and n not in self._gone)

    def take_wanted_pod_lists(self) -> list[tuple[str, str]]:
        """(name, uid) of Jobs whose failure verdict waits for their pods to be listed."""
        wanted = [(n, u) for n, u in self._wanted.items() if u not in self._in_flight]
        self._in_flight.update(u for _, u in wanted)
        return wanted

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
            name = _name_of(obj)
            if name is None or name not in self._refs:
                continue
            if self._store_job(read_job(obj)):
                listed.add(name)
        for name in self._refs:
            if name not in listed:
                self._gone.add(name)  # deleted while nobody watched, or never existed
        return self._refresh(self._refs, observed_at)

    def job_event(self, kind: str, obj: object, observed_at: datetime) -> list[Observation]:
        name = _name_of(obj)
        if name is None or name not in self._refs:
            return []
        job = read_job(obj)
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
        return self._refresh(touched, observed_at)

    def pod_event(self, kind: str, obj: object, observed_at: datetime) -> list[Observation]:
        # A DELETED pod's final state is as good as a MODIFIED one; it just runs no more.
        touched = self._store_pods([obj])
        if kind == "DELETED":
            self._deleted_pods.add(_pod_key(obj))
        return self._refresh(touched, observed_at)

    def job_pods_listed(
        self, name: str, uid: str, objects: Sequence[object], observed_at: datetime
    ) -> list[Observation]:
        """The pod LIST asked for by take_wanted_pod_lists (empty if they are gone)."""
        self._store_pods(objects)
        self._pod_lists_done.add(uid)
        self._in_flight.discard(uid)
        self._wanted.pop(name, None)
        return self._refresh([name], observed_at)

    # -- internals -----------------------------------------------------------------------

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
            if _pod_job_name(obj) not in self._refs:
                continue  # another Job's pod: not read at all
            pod = read_pod(obj)
            name = pod.job_name
            if name is None or name not in self._refs:
                continue
            expected = self._uids.get(name)
            if expected is not None and pod.job_uid is not None and pod.job_uid != expected:
                continue
            key = _pod_key(obj)
            before = self._pods.get(key)
            if before is not None and (
                before.ended_before_deletion
                or (before.ended and before.meta.deleting_since is None and pod.ended)
            ):
                # Seen ended, then deleted (TTL, GC): the deletion did not kill it. The
                # timestamps alone (whole seconds) could not always tell.
                pod = evolve(pod, ended_before_deletion=True)
            self._pods[key] = pod
            touched.add(name)
        return touched

    def _refresh(self, names: Iterable[str], observed_at: datetime) -> list[Observation]:
        out: list[Observation] = []
        pods = list(self._pods.values()) if self._pods_readable else None
        for name in names:
            job = self._jobs.get(name)
            gone = name in self._gone
            if job is None and not gone:
                continue  # not listed yet: nothing to say
            cancelled = name in self._cancelled and (
                self._cancelled[name] is None or job is None or self._cancelled[name] == job.uid
            )
            for native_id, ref in self._refs.get(name, []):
                result = assess(
                    native_id,
                    ref,
                    job,
                    pods,
                    observed_at=observed_at,
                    gone=gone,
                    cancel_requested=cancelled,
                )
                if (
                    result.awaiting_pods
                    and job is not None
                    and job.uid not in self._pod_lists_done
                    and not gone
                ):
                    self._wanted[name] = job.uid
                    continue
                obs = result.observation
                if native_id in self._decided and not (obs.final and obs.state is not None):
                    continue  # after a verdict, "gone" or a stale state adds nothing
                key = evolve(obs, observed_at=_EPOCH)
                if self._last.get(native_id) == key:
                    continue
                self._last[native_id] = key
                if obs.final or obs.absence is not None or obs.state is State.CANCELLED:
                    self._decided.add(native_id)
                out.append(obs)
        return out
