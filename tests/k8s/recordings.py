"""The Kubernetes 1.36.2 recordings (fixtures/1.36.2, see its README.md), read for tests.

A recording holds two raw watch streams (Jobs, pods) of one namespace. etcd's
resourceVersion is one counter for all kinds, so the two streams merge into one timeline
in the order the API server wrote them. Each event gets a time: the latest ``time`` in
its object's ``managedFields`` (whole seconds, when a manager last wrote it), a Job's
``deletionTimestamp`` (a Job is deleted with grace 0: the moment of the DELETE), and
never earlier than the event before it.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from hpcstate import Observation
from hpcstate_k8s._observe import JobRef
from hpcstate_k8s._parse import _Where, parse_time
from hpcstate_k8s._tracking import NamespaceTracker

from .watch_stream import watch_line

ROOT = Path(__file__).parent / "fixtures" / "1.36.2"
CASES = sorted(p.name for p in ROOT.iterdir() if (p / "case.json").exists())
JOBS, PODS = "jobs", "pods"


def _time(value: object) -> datetime | None:
    return parse_time(value, where=_Where("recording"), path="time")


@dataclass(frozen=True)
class Event:
    rv: int
    kind: str  # JOBS or PODS
    type: str  # ADDED, MODIFIED, DELETED
    obj: dict[str, Any]
    at: datetime

    @property
    def name(self) -> str:
        return str(self.obj["metadata"]["name"])

    def line(self) -> str:
        return watch_line(self.type, self.obj)


@dataclass
class Recording:
    case: str
    meta: dict[str, Any]
    events: list[Event] = field(default_factory=list)

    @property
    def namespace(self) -> str:
        return str(self.events[0].obj["metadata"]["namespace"])

    @property
    def job(self) -> dict[str, Any]:
        """The Job as the API server first returned it (the POST's answer)."""
        return copy.deepcopy(next(e.obj for e in self.events if e.kind == JOBS))

    @property
    def job_name(self) -> str:
        return str(self.job["metadata"]["name"])

    @property
    def native_id(self) -> str:
        return f"{self.namespace}/{self.job_name}"

    @property
    def argv(self) -> list[str]:
        argv = list(self.meta["submitted_with"])
        return argv[argv.index("--") + 1 :]

    def native_ids(self) -> list[str]:
        job = self.job
        if job["spec"].get("completionMode") == "Indexed":
            return [f"{self.native_id}[{i}]" for i in range(int(job["spec"]["completions"]))]
        return [self.native_id]

    def state_at(self, upto: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """The Jobs and pods that existed once every event up to index ``upto`` (excluded)
        was applied: what a LIST at that moment would answer."""
        live: dict[tuple[str, str], dict[str, Any]] = {}
        for event in self.events[:upto]:
            key = (event.kind, event.name)
            if event.type == "DELETED":
                live.pop(key, None)
            else:
                live[key] = event.obj
        jobs = [copy.deepcopy(o) for (k, _), o in live.items() if k == JOBS]
        pods = [copy.deepcopy(o) for (k, _), o in live.items() if k == PODS]
        return jobs, pods

    def first(self, kind: str, predicate: Any) -> int:
        """Index of the first event of that kind whose object satisfies predicate."""
        return next(i for i, e in enumerate(self.events) if e.kind == kind and predicate(e.obj))


def load(case: str) -> Recording:
    folder = ROOT / case
    meta = json.loads((folder / "case.json").read_text())
    raw: list[tuple[int, str, str, dict[str, Any]]] = []
    for kind in (JOBS, PODS):
        for line in (folder / f"watch_{kind}.jsonl").read_text().splitlines():
            if line.strip():
                event = json.loads(line)
                obj = event["object"]
                raw.append((int(obj["metadata"]["resourceVersion"]), kind, event["type"], obj))
    raw.sort(key=lambda r: r[0])
    events: list[Event] = []
    last: datetime | None = None
    for rv, kind, etype, obj in raw:
        meta_ = obj["metadata"]
        times = [_time(f.get("time")) for f in meta_.get("managedFields") or []]
        if kind == JOBS and meta_.get("deletionTimestamp"):
            times.append(_time(meta_["deletionTimestamp"]))
        if kind == PODS and meta_.get("deletionGracePeriodSeconds") == 0:
            times.append(_time(meta_["deletionTimestamp"]))
        known = [t for t in times if t is not None]
        at = max([*known, *([last] if last else [])])
        last = at
        events.append(Event(rv=rv, kind=kind, type=etype, obj=obj, at=at))
    return Recording(case=case, meta=meta, events=events)


def gaps(recording: Recording) -> Iterator[tuple[Event, timedelta]]:
    """Each event and how long after the one before it the API server wrote it."""
    previous = recording.events[0].at
    for event in recording.events:
        yield event, event.at - previous
        previous = event.at


def replay_tracker(
    recording: Recording,
    *,
    cancelled: bool = False,
    observed_at: datetime | None = None,
) -> list[Observation]:
    """Drive the pure NamespaceTracker through the recording as the backend's watch does:
    a first LIST of Jobs and pods once the Job exists, then every later event in order;
    a pod LIST a held-back failure verdict asks for is answered with the pods of that
    moment. ``cancelled``: this process deleted the Job (at the first Job event that
    shows a deletionTimestamp)."""
    refs = [(nid, _ref(nid)) for nid in recording.native_ids()]
    tracker = NamespaceTracker(recording.namespace, refs)
    out: list[Observation] = []
    start = recording.first(JOBS, lambda o: True) + 1
    jobs, pods = recording.state_at(start)

    def when(i: int) -> datetime:
        return observed_at or recording.events[min(i, len(recording.events) - 1)].at

    def answer_wanted(i: int) -> None:
        wanted = tracker.take_wanted_pod_lists()
        if wanted:
            _, now_pods = recording.state_at(i)
            out.extend(tracker.job_pods_listed(wanted, now_pods, when(i)))

    out.extend(tracker.jobs_listed(jobs, when(start)))
    wanted = tracker.take_wanted_pod_lists()
    out.extend(tracker.pods_listed(pods, when(start)))
    out.extend(tracker.job_pods_listed(wanted, (), when(start)))
    for i in range(start, len(recording.events)):
        event = recording.events[i]
        if event.kind == JOBS:
            if (
                cancelled
                and event.obj["metadata"].get("deletionTimestamp")
                and event.name not in tracker._cancelled
            ):
                out.extend(
                    tracker.cancel_requested(event.name, event.obj["metadata"]["uid"], when(i))
                )
            out.extend(tracker.job_event(event.type, event.obj, when(i)))
        else:
            out.extend(tracker.pod_event(event.type, event.obj, when(i)))
        answer_wanted(i + 1)
    return out


def _ref(native_id: str) -> JobRef:
    from hpcstate_k8s._observe import parse_native_id

    return parse_native_id(native_id)
