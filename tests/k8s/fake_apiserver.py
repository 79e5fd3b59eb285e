"""A fake Kubernetes API server on 127.0.0.1, for the k8s backend's tests.

No real cluster can run here (no kind, no kube-apiserver binaries), so this is a FAKE.
Its Job controller, garbage collector and TTL controller write what a real
kube-apiserver + kube-controller-manager 1.36.2 wrote in the recordings of
fixtures/1.36.2 (see its README.md); test_fake_vs_recordings.py checks it against them,
and where the two differ, the recordings win:

* REST: GET/LIST (``labelSelector``, ``fieldSelector`` on ``metadata.name``,
  ``limit``/``continue``, ``resourceVersion``), POST (422 for invalid Jobs, 409
  AlreadyExists), DELETE (``propagationPolicy``) for ``/apis/batch/v1/namespaces/{ns}/jobs``
  and ``/api/v1/namespaces/{ns}/pods``; 1.36's defaults on create
  (``podReplacementPolicy: TerminatingOrFailed``, ``manualSelector``, pod template
  defaults), ``managedFields``.
* Watches (``?watch=true``): NDJSON ADDED/MODIFIED/DELETED/ERROR, replay from a
  resourceVersion, 410 Gone as an ERROR Status event after compaction, ``timeoutSeconds``
  clean ends; a BOOKMARK only when a test sends one (1.36 sent none within a minute); and
  injected faults: abrupt stream drops, forced 410s, paused streams, objects written as
  they are (malformed ones included).
* The Job controller as 1.36 writes status (version >= (1, 31); (1, 30) keeps the older
  shapes: no interim conditions, Failed at once): zero ``active``/``succeeded``/``failed``
  omitted, ``ready`` (1 while a pod runs) and ``terminating`` always there; a pod that ends
  goes first into ``uncountedTerminatedPods`` (with FailureTarget/SuccessCriteriaMet when
  it decides the Job), then its ``job-tracking`` finalizer is removed, then the counter
  moves (with Failed/Complete); a deadline or a decided Job with pods still running:
  their deletion (grace 30), FailureTarget with ``terminating`` and the pods counted
  failed at once, Failed once they have ended; retries after 10 s, then 20 s... (times
  ``backoff_scale``: a virtual clock); Indexed pods get ``JOB_COMPLETION_INDEX`` as a
  fieldRef env entry and the ``job-index-failure-count`` annotation; ``failedIndexes: ""``
  from the first status with backoffLimitPerIndex.
* Deletion as 1.36 shows it: a Job deleted in the foreground gets NO condition (its
  pods' finalizers go at once, the garbage collector deletes them, then the Job goes
  with its status as it was); a background delete sends the Job's DELETED first, with no
  deletionTimestamp, then deletes the pods; TTL deletes in the foreground right after the
  verdict. A running pod's deletion is grace 30, then, once its container ended, the
  kubelet's final grace-0 DELETE rewrites ``deletionTimestamp`` to that moment; an ended
  pod is deleted with grace 0 at once.
* The kubelet: containers either run FOR REAL as local processes (command, env with
  ``valueFrom.fieldRef`` resolved from the pod, a termination-log file named by
  $HPCSTATE_TERMINATION_LOG, TERM then KILL on deletion: exit codes and signals are the
  kernel's), or follow a scripted :class:`Outcome` (OOMKilled, eviction..., which cannot
  happen for real here).
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import itertools
import os
import re
import signal
import ssl
import tempfile
import uuid
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

from aiohttp import web

from .watch_stream import DROP, serve_watch, watch_line

JOB_KIND = "jobs"
POD_KIND = "pods"
Key = tuple[str, str]  # (namespace, name)


def stamp(at: datetime | None = None) -> str:
    """Kubernetes' metav1.Time: RFC 3339, whole seconds, Z."""
    at = at or datetime.now(timezone.utc)
    return at.strftime("%Y-%m-%dT%H:%M:%SZ")


def compact_indexes(indexes: set[int]) -> str:
    """{1,3,4,5,7} -> "1,3-5,7" (the controller's completedIndexes format)."""
    parts: list[str] = []
    ordered = sorted(indexes)
    i = 0
    while i < len(ordered):
        j = i
        while j + 1 < len(ordered) and ordered[j + 1] == ordered[j] + 1:
            j += 1
        parts.append(str(ordered[i]) if i == j else f"{ordered[i]}-{ordered[j]}")
        i = j + 1
    return ",".join(parts)


# -- label selectors ---------------------------------------------------------------------

_SET_REQ = re.compile(r"\A\s*([^\s!=,()]+)\s+(in|notin)\s+\(([^)]*)\)\s*\Z")


def _split_selector(text: str) -> list[str]:
    parts, depth, current = [], 0, ""
    for char in text:
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        if char == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    if current.strip():
        parts.append(current)
    return parts


def field_selector_matches(selector: str | None, obj: Mapping[str, Any]) -> bool:
    """``metadata.name=X`` / ``metadata.name!=X`` (what the API allows on every kind)."""
    if not selector:
        return True
    meta = obj.get("metadata") or {}
    for req in selector.split(","):
        negate = "!=" in req
        key, value = (x.strip() for x in req.replace("!=", "=").replace("==", "=").split("=", 1))
        if key not in ("metadata.name", "metadata.namespace"):
            raise ValueError(f"field label not supported: {key}")
        if (meta.get(key.split(".", 1)[1]) == value) == negate:
            return False
    return True


def selector_matches(selector: str | None, labels: Mapping[str, str]) -> bool:
    if not selector:
        return True
    for req in _split_selector(selector):
        req = req.strip()
        match = _SET_REQ.match(req)
        if match:
            key, op, values = match.group(1), match.group(2), match.group(3)
            wanted = {v.strip() for v in values.split(",") if v.strip()}
            inside = key in labels and labels[key] in wanted
            if (op == "in") != inside:
                return False
        elif "!=" in req:
            key, value = (x.strip() for x in req.split("!=", 1))
            if labels.get(key) == value:
                return False
        elif "=" in req:
            key, value = (x.strip() for x in req.replace("==", "=").split("=", 1))
            if labels.get(key) != value:
                return False
        elif req.startswith("!"):
            if req[1:].strip() in labels:
                return False
        elif req not in labels:
            return False
    return True


# -- scripted container outcomes ---------------------------------------------------------


@dataclass
class Outcome:
    """How one container attempt ends, for what cannot run for real here."""

    exit_code: int = 0
    reason: str | None = None  # default: Completed for 0, Error otherwise
    message: str = ""
    run_s: float = 0.05
    hang: bool = False  # runs until the pod is deleted (then 143, like a TERMed process)
    pod_reason: str = ""  # pod status.reason, e.g. Evicted
    pod_message: str = ""
    disruption: str | None = None  # DisruptionTarget condition reason
    never_started: bool = False  # StartError-like: no running phase, startedAt 1970


@dataclass
class _Result:
    exit_code: int
    reason: str
    message: str
    started: str
    finished: str


@dataclass(eq=False)
class _Container:
    """A container's runtime side: kill() asks it to stop (TERM, then KILL after grace)."""

    kill: asyncio.Event = field(default_factory=asyncio.Event)


# -- the cluster -------------------------------------------------------------------------


@dataclass(eq=False)
class _Watcher:
    kind: str
    namespace: str
    selector: str | None
    bookmarks: bool
    queue: asyncio.Queue[Any] = field(default_factory=asyncio.Queue)


_DROP = DROP  # abruptly close the stream
_END = object()  # cleanly end the stream


def _no_lines(item: object) -> None:
    return None


class FakeCluster:
    """Objects, an event log with resourceVersions, watches, and the controller model."""

    def __init__(
        self,
        *,
        version: tuple[int, int] = (1, 36),
        token: str = "test-token",
        kill_grace_s: float = 2.0,
        tick_s: float = 0.02,
        backoff_scale: float = 0.01,
    ) -> None:
        self.version = version
        self.token = token
        self.kill_grace_s = kill_grace_s  # real seconds between TERM and KILL
        self.tick_s = tick_s
        # The Job controller waits 10 s, then 20 s... before recreating a failed pod;
        # here times this factor (a virtual clock: 0.01 makes them 0.1 s, 0.2 s).
        self.backoff_scale = backoff_scale
        self.rv = 0
        self.objects: dict[str, dict[Key, dict[str, Any]]] = {JOB_KIND: {}, POD_KIND: {}}
        self.log: list[tuple[int, str, str, str, dict[str, Any]]] = []
        self.compacted_rv = 0
        self.requests: list[tuple[str, str, dict[str, str]]] = []
        self.scripts: dict[str, list[Outcome]] = {}
        self.index_scripts: dict[tuple[str, int], list[Outcome]] = {}
        self.expire_watches: dict[str, int] = {JOB_KIND: 0, POD_KIND: 0}
        self.delay_pod_events_s = 0.0  # deliver pod watch events late (ordering tests)
        self.namespaces: set[str] = {"batch", "default"}  # namespaces created by POST
        self.paused: set[str] = set()  # kinds whose open watches get no events (a stall)
        self.pod_list_forbidden = False
        self.fail_pod_lists: list[int] = []  # HTTP codes for the next pod LISTs (not watches)
        self.lose_create_answers = 0  # the next Job POSTs create the Job, then drop the link
        self._watchers: set[_Watcher] = set()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._containers: dict[Key, _Container] = {}
        # job -> ("ready"|"done", pod) messages from the kubelet to the Job controller
        self._pod_done: dict[Key, asyncio.Queue[tuple[str, Key]]] = {}
        self._names = itertools.count(1)
        self._runner: web.AppRunner | None = None
        self.port = 0
        self.scheme = "http"
        self.tmp = tempfile.TemporaryDirectory(prefix="fake-k8s-")

    # -- server lifecycle --------------------------------------------------------------

    async def start(self, ssl_context: ssl.SSLContext | None = None) -> None:
        app = web.Application()
        app.router.add_route("*", "/apis/batch/v1/namespaces/{ns}/jobs", self._collection)
        app.router.add_route("*", "/apis/batch/v1/namespaces/{ns}/jobs/{name}", self._single)
        app.router.add_route("*", "/api/v1/namespaces/{ns}/pods", self._collection)
        app.router.add_route("POST", "/api/v1/namespaces", self._create_namespace)
        app.router.add_route("DELETE", "/api/v1/namespaces/{ns}", self._delete_namespace)
        app.router.add_route("*", "/api/v1/namespaces/{ns}/pods/{name}", self._single)
        self._runner = web.AppRunner(app, handle_signals=False, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0, ssl_context=ssl_context)
        await site.start()
        addresses = self._runner.addresses
        self.port = int(addresses[0][1])
        self.scheme = "https" if ssl_context is not None else "http"

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}"

    async def stop(self) -> None:
        for container in self._containers.values():
            container.kill.set()
        for watcher in list(self._watchers):
            watcher.queue.put_nowait(_END)
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._runner is not None:
            await self._runner.cleanup()
        self.tmp.cleanup()

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def kubeconfig(self, *, namespace: str = "default") -> dict[str, Any]:
        return {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "fake", "cluster": {"server": self.url}}],
            "users": [{"name": "tester", "user": {"token": self.token}}],
            "contexts": [
                {
                    "name": "fake",
                    "context": {"cluster": "fake", "user": "tester", "namespace": namespace},
                }
            ],
            "current-context": "fake",
        }

    # -- test controls -----------------------------------------------------------------

    def script(self, job_name: str, *outcomes: Outcome) -> None:
        """Pods of this Job end as scripted, one outcome per attempt (then succeed)."""
        self.scripts[job_name] = list(outcomes)

    def script_index(self, job_name: str, index: int, *outcomes: Outcome) -> None:
        self.index_scripts[job_name, index] = list(outcomes)

    def drop_streams(self, kind: str) -> None:
        """Abruptly close every open watch of that kind (no final chunk)."""
        for watcher in self._watchers:
            if watcher.kind == kind:
                watcher.queue.put_nowait(_DROP)

    def end_streams(self, kind: str) -> None:
        """Cleanly end every open watch of that kind (as timeoutSeconds would)."""
        for watcher in self._watchers:
            if watcher.kind == kind:
                watcher.queue.put_nowait(_END)

    def inject(self, kind: str, obj: dict[str, Any], event: str = "ADDED") -> None:
        """Store and announce an object as given (no validation, no controller): for
        objects the backend must survive, like a Job whose status it cannot read."""
        self._record(kind, event, copy.deepcopy(obj))

    def compact(self) -> None:
        """Forget the event history: watching from an older resourceVersion gets 410."""
        self.compacted_rv = self.rv

    def send_bookmarks(self) -> None:
        for watcher in self._watchers:
            if watcher.bookmarks:
                watcher.queue.put_nowait(("BOOKMARK", None))

    def count(self, method: str, path_suffix: str, *, watch: bool | None = None) -> int:
        total = 0
        for m, path, query in self.requests:
            if m != method or not path.endswith(path_suffix):
                continue
            is_watch = query.get("watch") in ("true", "1")
            if watch is None or watch == is_watch:
                total += 1
        return total

    def job(self, namespace: str, name: str) -> dict[str, Any] | None:
        found = self.objects[JOB_KIND].get((namespace, name))
        return copy.deepcopy(found) if found is not None else None

    def pods_of(self, namespace: str, name: str) -> list[dict[str, Any]]:
        return [
            copy.deepcopy(p)
            for (ns, _), p in self.objects[POD_KIND].items()
            if ns == namespace and p["metadata"]["labels"].get("job-name") == name
        ]

    # -- storage and events ------------------------------------------------------------

    def _record(self, kind: str, event: str, obj: dict[str, Any]) -> None:
        self.rv += 1
        obj["metadata"]["resourceVersion"] = str(self.rv)
        key = (obj["metadata"]["namespace"], obj["metadata"]["name"])
        if event == "DELETED":
            self.objects[kind].pop(key, None)
        else:
            self.objects[kind][key] = obj
        snapshot = copy.deepcopy(obj)
        self.log.append((self.rv, kind, event, key[0], snapshot))
        labels = snapshot["metadata"].get("labels") or {}
        for watcher in self._watchers:
            if (
                watcher.kind == kind
                and kind not in self.paused
                and watcher.namespace == key[0]
                and selector_matches(watcher.selector, labels)
            ):
                if kind == POD_KIND and self.delay_pod_events_s:
                    loop = asyncio.get_running_loop()
                    loop.call_later(
                        self.delay_pod_events_s, watcher.queue.put_nowait, (event, snapshot)
                    )
                else:
                    watcher.queue.put_nowait((event, snapshot))

    def _update(self, kind: str, key: Key, change: Callable[[dict[str, Any]], None]) -> None:
        obj = self.objects[kind].get(key)
        if obj is None:
            return
        obj = copy.deepcopy(obj)
        change(obj)
        self._record(kind, "MODIFIED", obj)

    # -- HTTP --------------------------------------------------------------------------

    async def _create_namespace(self, request: web.Request) -> web.Response:
        self.requests.append((request.method, request.path, dict(request.query)))
        body = await request.json()
        name = body["metadata"]["name"]
        if name in self.namespaces:
            return self._status(409, "AlreadyExists", f'namespaces "{name}" already exists')
        self.namespaces.add(name)
        return web.json_response(
            {
                **body,
                "status": {"phase": "Active"},
                "metadata": {**body["metadata"], "uid": str(uuid.uuid4())},
            },
            status=201,
        )

    async def _delete_namespace(self, request: web.Request) -> web.Response:
        self.requests.append((request.method, request.path, dict(request.query)))
        name = request.match_info["ns"]
        if name not in self.namespaces:
            return self._status(404, "NotFound", f'namespaces "{name}" not found')
        self.namespaces.discard(name)
        return web.json_response(
            {
                "kind": "Namespace",
                "apiVersion": "v1",
                "metadata": {"name": name},
                "status": {"phase": "Terminating"},
            }
        )

    def _status(self, code: int, reason: str, message: str) -> web.Response:
        body = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": message,
            "reason": reason,
            "code": code,
        }
        return web.json_response(body, status=code)

    def _authorized(self, request: web.Request) -> bool:
        return request.headers.get("Authorization") == f"Bearer {self.token}"

    @staticmethod
    def _kind(request: web.Request) -> str:
        return JOB_KIND if request.path.startswith("/apis/batch/") else POD_KIND

    async def _collection(self, request: web.Request) -> web.StreamResponse:
        self.requests.append((request.method, request.path, dict(request.query)))
        if not self._authorized(request):
            return self._status(401, "Unauthorized", "Unauthorized")
        kind, ns = self._kind(request), request.match_info["ns"]
        if request.method == "GET":
            if kind == POD_KIND and self.pod_list_forbidden:
                return self._status(
                    403, "Forbidden", 'pods is forbidden: User "tester" cannot list resource "pods"'
                )
            if request.query.get("watch") in ("true", "1"):
                return await self._watch(request, kind, ns)
            if kind == POD_KIND and self.fail_pod_lists:
                code = self.fail_pod_lists.pop(0)
                return self._status(code, "ServiceUnavailable", "etcd leader changed")
            return self._list(request, kind, ns)
        if request.method == "POST" and kind == JOB_KIND:
            return await self._create_job(request, ns)
        return self._status(405, "MethodNotAllowed", f"{request.method} not allowed")

    def _list(self, request: web.Request, kind: str, ns: str) -> web.Response:
        selector = request.query.get("labelSelector")
        fields = request.query.get("fieldSelector")
        try:
            field_selector_matches(fields, {})
        except ValueError as error:
            return self._status(400, "BadRequest", str(error))
        items = [
            copy.deepcopy(obj)
            for (namespace, _), obj in sorted(self.objects[kind].items())
            if namespace == ns
            and selector_matches(selector, obj["metadata"].get("labels") or {})
            and field_selector_matches(fields, obj)
        ]
        start = int(request.query.get("continue") or 0)
        limit = int(request.query.get("limit") or 0) or len(items) or 1
        chunk = items[start : start + limit]
        meta: dict[str, Any] = {"resourceVersion": str(self.rv)}
        if start + limit < len(items):
            meta["continue"] = str(start + limit)
        kind_name = "JobList" if kind == JOB_KIND else "PodList"
        api = "batch/v1" if kind == JOB_KIND else "v1"
        return web.json_response(
            {"kind": kind_name, "apiVersion": api, "metadata": meta, "items": chunk}
        )

    async def _watch(self, request: web.Request, kind: str, ns: str) -> web.StreamResponse:
        query = request.query
        since = query.get("resourceVersion") or ""
        expired = since not in ("", "0") and int(since) < self.compacted_rv
        if self.expire_watches[kind] > 0 or expired:
            self.expire_watches[kind] = max(0, self.expire_watches[kind] - 1)
            message = f"too old resource version: {since} ({self.compacted_rv})"
            status = {
                "kind": "Status",
                "apiVersion": "v1",
                "metadata": {},
                "status": "Failure",
                "message": message,
                "reason": "Expired",
                "code": 410,
            }
            return await serve_watch(request, [watch_line("ERROR", status)], None, _no_lines)
        watcher = _Watcher(
            kind=kind,
            namespace=ns,
            selector=query.get("labelSelector"),
            bookmarks=query.get("allowWatchBookmarks") == "true",
        )
        # Register and snapshot with no await in between: nothing can slip through.
        self._watchers.add(watcher)
        if since in ("", "0"):
            backlog = [
                ("ADDED", copy.deepcopy(obj))
                for (namespace, _), obj in sorted(self.objects[kind].items())
                if namespace == ns
                and selector_matches(watcher.selector, obj["metadata"].get("labels") or {})
            ]
        else:
            backlog = [
                (event, copy.deepcopy(obj))
                for rv, k, event, namespace, obj in self.log
                if rv > int(since)
                and k == kind
                and namespace == ns
                and selector_matches(watcher.selector, obj["metadata"].get("labels") or {})
            ]

        def lines(item: Any) -> list[str] | None:
            if item is _END:
                return None
            event, obj = item
            if event == "BOOKMARK":
                api = "batch/v1" if kind == JOB_KIND else "v1"
                obj = {
                    "kind": "Job" if kind == JOB_KIND else "Pod",
                    "apiVersion": api,
                    "metadata": {"resourceVersion": str(self.rv)},
                }
            return [watch_line(event, obj)]

        return await serve_watch(
            request,
            [watch_line(event, obj) for event, obj in backlog],
            watcher.queue,
            lines,
            on_close=lambda: self._watchers.discard(watcher),
        )

    async def _single(self, request: web.Request) -> web.StreamResponse:
        self.requests.append((request.method, request.path, dict(request.query)))
        if not self._authorized(request):
            return self._status(401, "Unauthorized", "Unauthorized")
        kind = self._kind(request)
        key = (request.match_info["ns"], request.match_info["name"])
        obj = self.objects[kind].get(key)
        noun = "jobs.batch" if kind == JOB_KIND else "pods"
        if obj is None:
            return self._status(404, "NotFound", f'{noun} "{key[1]}" not found')
        if request.method == "GET":
            return web.json_response(obj)
        if request.method == "DELETE" and kind == JOB_KIND:
            policy = request.query.get("propagationPolicy") or "Background"
            return web.json_response(self._delete_job(key, policy))
        return self._status(405, "MethodNotAllowed", f"{request.method} not allowed")

    # -- Jobs --------------------------------------------------------------------------

    def _managed(self, obj: dict[str, Any], manager: str, subresource: str | None = None) -> None:
        """Record a write in managedFields, as the API server does (one entry per manager
        and subresource, its time updated)."""
        fields = obj["metadata"].setdefault("managedFields", [])
        for entry in fields:
            if entry.get("manager") == manager and entry.get("subresource") == subresource:
                entry["time"] = stamp()
                return
        entry = {
            "manager": manager,
            "operation": "Update",
            "apiVersion": "batch/v1" if obj.get("kind") == "Job" else "v1",
            "time": stamp(),
            "fieldsType": "FieldsV1",
            "fieldsV1": {},
        }
        if subresource:
            entry["subresource"] = subresource
        fields.append(entry)

    async def _create_job(self, request: web.Request, ns: str) -> web.Response:
        try:
            body = await request.json()
        except ValueError:
            return self._status(400, "BadRequest", "the body is not JSON")
        problem = _invalid_job(body, ns)
        if problem:
            return self._status(422, "Invalid", f"Job.batch is invalid: {problem}")
        name = body["metadata"]["name"]
        if (ns, name) in self.objects[JOB_KIND]:
            return self._status(409, "AlreadyExists", f'jobs.batch "{name}" already exists')
        job = copy.deepcopy(body)
        uid = str(uuid.uuid4())
        meta = job["metadata"]
        meta.update(namespace=ns, uid=uid, creationTimestamp=stamp(), generation=1)
        self._managed(job, request.headers.get("User-Agent", "client").split("/")[0])
        spec = job["spec"]
        spec.setdefault("parallelism", 1)
        spec.setdefault("completionMode", "NonIndexed")
        if spec["completionMode"] == "NonIndexed":
            spec.setdefault("completions", 1)
        if spec.get("backoffLimitPerIndex") is not None:
            spec.setdefault("backoffLimit", 2147483647)
        spec.setdefault("backoffLimit", 6)
        spec.setdefault("suspend", False)
        spec.setdefault("manualSelector", False)
        if self._new_shapes and "podFailurePolicy" not in spec:
            spec.setdefault("podReplacementPolicy", "TerminatingOrFailed")
        controller_labels = {
            "batch.kubernetes.io/controller-uid": uid,
            "batch.kubernetes.io/job-name": name,
            "controller-uid": uid,
            "job-name": name,
        }
        spec["selector"] = {"matchLabels": {"batch.kubernetes.io/controller-uid": uid}}
        template_meta = spec["template"].setdefault("metadata", {})
        template_meta["labels"] = {**(template_meta.get("labels") or {}), **controller_labels}
        pod_spec = spec["template"]["spec"]
        pod_spec.setdefault("terminationGracePeriodSeconds", 30)
        pod_spec.setdefault("dnsPolicy", "ClusterFirst")
        pod_spec.setdefault("securityContext", {})
        pod_spec.setdefault("schedulerName", "default-scheduler")
        for container in pod_spec["containers"]:
            container.setdefault("resources", {})
            container.setdefault("terminationMessagePath", "/dev/termination-log")
            container.setdefault("terminationMessagePolicy", "File")
            container.setdefault("imagePullPolicy", "IfNotPresent")
        job["status"] = {}
        self._record(JOB_KIND, "ADDED", job)
        self._pod_done[ns, name] = asyncio.Queue()
        self._spawn(self._control((ns, name)))
        if self.lose_create_answers > 0:  # created, but the client never hears it
            self.lose_create_answers -= 1
            if request.transport is not None:
                request.transport.abort()
        return web.json_response(copy.deepcopy(job), status=201)

    def _delete_job(self, key: Key, policy: str) -> dict[str, Any]:
        job = copy.deepcopy(self.objects[JOB_KIND][key])
        meta = job["metadata"]
        if meta.get("deletionTimestamp"):
            return job
        if policy == "Foreground":
            meta["deletionTimestamp"] = stamp()
            meta["deletionGracePeriodSeconds"] = 0
            meta["finalizers"] = [*meta.get("finalizers", []), "foregroundDeletion"]
            self._record(JOB_KIND, "MODIFIED", job)
            self._spawn(self._foreground(key))
            return copy.deepcopy(job)
        # Background (and Orphan): the Job goes at once, with no deletionTimestamp in its
        # DELETED event (as 1.36 sends it); the garbage collector deletes the pods after.
        self._record(JOB_KIND, "DELETED", job)
        if policy != "Orphan":
            self._spawn(self._orphaned_pods(meta["uid"]))
        return copy.deepcopy(job)

    def _pods_of_uid(self, uid: str) -> list[Key]:
        return [
            pkey
            for pkey, pod in self.objects[POD_KIND].items()
            if pod["metadata"]["labels"].get("controller-uid") == uid
        ]

    async def _foreground(self, key: Key) -> None:
        """Foreground deletion of a Job: no condition is written (1.36); the Job controller
        drops the pods' tracking finalizers at once, the garbage collector deletes them
        (grace 30), and once they are gone the Job goes, its status as it was."""
        uid = self.objects[JOB_KIND][key]["metadata"]["uid"]
        pods = self._pods_of_uid(uid)
        for pkey in pods:
            self._drop_finalizer(pkey)
        await asyncio.gather(*(self._delete_pod(p) for p in pods))
        job = self.objects[JOB_KIND].get(key)
        if job is not None:
            job = copy.deepcopy(job)
            job["metadata"]["finalizers"] = []
            self._record(JOB_KIND, "DELETED", job)

    async def _orphaned_pods(self, uid: str) -> None:
        """Background deletion: GC deletes the pods (grace 30, finalizer still on); the
        Job controller then drops the finalizer of a pod whose Job is gone."""
        pods = self._pods_of_uid(uid)

        async def one(pkey: Key) -> None:
            killing = self._spawn(self._delete_pod(pkey))
            await asyncio.sleep(0)  # the deletion is marked (its first step awaits nothing)
            self._drop_finalizer(pkey)
            await killing

        await asyncio.gather(*(one(p) for p in pods))

    def _drop_finalizer(self, key: Key) -> None:
        pod = self.objects[POD_KIND].get(key)
        if pod is None or not pod["metadata"].get("finalizers"):
            return
        pod = copy.deepcopy(pod)
        pod["metadata"].pop("finalizers", None)
        self._managed(pod, "kube-controller-manager")
        if pod["metadata"].get("deletionGracePeriodSeconds") == 0 and _ended(pod):
            self._record(POD_KIND, "MODIFIED", pod)
            self._record(POD_KIND, "DELETED", copy.deepcopy(pod))
            return
        self._record(POD_KIND, "MODIFIED", pod)

    async def _delete_pod(self, key: Key) -> None:
        """A pod's deletion as 1.36 shows it. A running pod: deletionTimestamp = now +
        grace (30), its container stopped (TERM, then KILL), then the kubelet's final
        DELETE with grace 0, which rewrites deletionTimestamp to that moment; an ended
        pod: grace 0 at once. The object goes once no finalizer is left."""
        pod = self.objects[POD_KIND].get(key)
        if pod is None or pod["metadata"].get("deletionTimestamp"):
            return
        if _ended(pod):
            self._final_delete(key)
            return
        grace = 30

        def mark(obj: dict[str, Any]) -> None:
            obj["metadata"]["deletionTimestamp"] = stamp(
                datetime.now(timezone.utc) + timedelta(seconds=grace)
            )
            obj["metadata"]["deletionGracePeriodSeconds"] = grace

        self._update(POD_KIND, key, mark)
        container = self._containers.get(key)
        if container is not None:
            container.kill.set()
            while key in self._containers:  # the kubelet writes the terminated state
                await asyncio.sleep(self.tick_s)
        else:
            self._final_delete(key)
        while key in self.objects[POD_KIND]:  # until its finalizer is dropped
            await asyncio.sleep(self.tick_s)

    def _final_delete(self, key: Key) -> None:
        """The grace-0 DELETE: deletionTimestamp rewritten to now, then gone unless a
        finalizer holds it."""
        pod = self.objects[POD_KIND].get(key)
        if pod is None:
            return
        pod = copy.deepcopy(pod)
        pod["metadata"]["deletionTimestamp"] = stamp()
        pod["metadata"]["deletionGracePeriodSeconds"] = 0
        self._record(POD_KIND, "MODIFIED", pod)
        if not pod["metadata"].get("finalizers"):
            self._record(POD_KIND, "DELETED", copy.deepcopy(pod))

    # -- the job controller ------------------------------------------------------------

    def _job_alive(self, key: Key) -> bool:
        job = self.objects[JOB_KIND].get(key)
        return job is not None and not job["metadata"].get("deletionTimestamp")

    def _set_status(self, key: Key, **fields: Any) -> None:
        def change(obj: dict[str, Any]) -> None:
            status = obj.setdefault("status", {})
            for name, value in fields.items():
                if value is None:
                    status.pop(name, None)
                else:
                    status[name] = value
            self._managed(obj, "kube-controller-manager", "status")

        self._update(JOB_KIND, key, change)

    def _condition(self, ctype: str, reason: str, message: str) -> dict[str, Any]:
        now = stamp()
        cond: dict[str, Any] = {
            "type": ctype,
            "status": "True",
            "lastProbeTime": now,
            "lastTransitionTime": now,
        }
        if reason:
            cond["reason"] = reason
        if message:
            cond["message"] = message
        return cond

    def _add_condition(self, key: Key, ctype: str, reason: str, message: str) -> None:
        cond = self._condition(ctype, reason, message)

        def change(obj: dict[str, Any]) -> None:
            obj.setdefault("status", {}).setdefault("conditions", []).append(cond)
            if ctype == "Complete":
                obj["status"]["completionTime"] = cond["lastTransitionTime"]
            self._managed(obj, "kube-controller-manager", "status")

        self._update(JOB_KIND, key, change)

    @property
    def _new_shapes(self) -> bool:
        return self.version >= (1, 31)

    def _write(self, key: Key, st: _JobState, *conditions: dict[str, Any]) -> None:
        """The Job's status from the controller's counts, as 1.31+ writes it: zero
        counters omitted, ``ready``/``terminating``/``uncountedTerminatedPods`` always,
        ``failedIndexes`` from the first status with backoffLimitPerIndex."""
        ready = sum(
            1
            for pkey in st.active
            if (self.objects[POD_KIND].get(pkey) or {}).get("status", {}).get("phase") == "Running"
        )
        uncounted: dict[str, list[str]] = {}
        if st.uncounted_failed:
            uncounted["failed"] = list(st.uncounted_failed)
        if st.uncounted_succeeded:
            uncounted["succeeded"] = list(st.uncounted_succeeded)

        def change(obj: dict[str, Any]) -> None:
            status = obj.setdefault("status", {})
            status.setdefault("startTime", stamp())
            for name in ("active", "succeeded", "failed"):
                status.pop(name, None)
            values = {
                "active": len(st.active),
                "succeeded": st.succeeded,
                "failed": st.failed,
            }
            status.update({k: v for k, v in values.items() if v})
            status["terminating"] = st.terminating
            if st.indexed:
                if st.completed:
                    status["completedIndexes"] = compact_indexes(st.completed)
                if st.per_index is not None:
                    status["failedIndexes"] = compact_indexes(st.failed_indexes)
            status["uncountedTerminatedPods"] = uncounted
            status["ready"] = ready
            for cond in conditions:
                status.setdefault("conditions", []).append(cond)
                if cond["type"] == "Complete":
                    status["completionTime"] = cond["lastTransitionTime"]
            self._managed(obj, "kube-controller-manager", "status")

        self._update(JOB_KIND, key, change)

    async def _control(self, key: Key) -> None:
        await asyncio.sleep(self.tick_s)
        if not self._job_alive(key):
            return
        job = self.objects[JOB_KIND][key]
        spec = job["spec"]
        indexed = spec.get("completionMode") == "Indexed"
        st = _JobState(
            indexed=indexed,
            completions=int(spec.get("completions") or 1),
            parallelism=int(spec.get("parallelism") or 1),
            backoff=int(spec.get("backoffLimit", 6)),
            per_index=spec.get("backoffLimitPerIndex"),
        )
        if not self._new_shapes or spec.get("suspend"):
            self._set_status(key, startTime=stamp())
        if spec.get("suspend"):
            self._add_condition(key, "Suspended", "JobSuspended", "Job suspended")
            return
        deadline_s = spec.get("activeDeadlineSeconds")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + deadline_s if deadline_s else None
        queue = self._pod_done[key]
        if self._new_shapes:
            await self._control_new(key, st, queue, deadline)
        else:
            await self._control_old(key, st, queue, deadline)

    def _start_pods(self, key: Key, st: _JobState) -> bool:
        started = False
        if st.indexed:
            busy = set(st.active.values())
            for index in range(st.completions):
                if len(st.active) >= st.parallelism:
                    break
                if index in st.completed or index in st.failed_indexes or index in busy:
                    continue
                st.active[self._create_pod(key, index, st.failures.get(index, 0))] = index
                started = True
        else:
            while len(st.active) < min(st.parallelism, st.completions - st.succeeded):
                st.active[self._create_pod(key, None, 0)] = None
                started = True
        return started

    def _decide(self, st: _JobState) -> tuple[str, str, str] | None:
        """(condition, reason, message) once the Job's outcome is decided."""
        succeeded = st.succeeded + len(st.uncounted_succeeded)
        failed = st.failed + len(st.uncounted_failed)
        if (st.indexed and len(st.completed) == st.completions) or (
            not st.indexed and succeeded >= st.completions
        ):
            return ("Complete", "CompletionsReached", "Reached expected number of succeeded pods")
        if failed > st.backoff:
            return ("Failed", "BackoffLimitExceeded", "Job has reached the specified backoff limit")
        if (
            st.indexed
            and st.failed_indexes
            and len(st.completed | st.failed_indexes) == st.completions
        ):
            return ("Failed", "FailedIndexes", "Job has failed indexes")
        return None

    def _count_end(self, st: _JobState, pod_key: Key) -> str | None:
        """A pod of the Job ended: its uid into uncounted; which way it went."""
        index = st.active.pop(pod_key, None)
        pod = self.objects[POD_KIND].get(pod_key)
        if pod is None:
            return None
        uid = pod["metadata"]["uid"]
        if pod["status"].get("phase") == "Succeeded":
            st.uncounted_succeeded.append(uid)
            if index is not None:
                st.completed.add(index)
            return "succeeded"
        st.uncounted_failed.append(uid)
        if index is not None:
            st.failures[index] = st.failures.get(index, 0) + 1
            if st.per_index is not None and st.failures[index] > int(st.per_index):
                st.failed_indexes.add(index)
        return "failed"

    def _flush(self, key: Key, st: _JobState, *conditions: dict[str, Any]) -> None:
        """Step two of 1.36's pod accounting: drop the counted pods' finalizers, then
        move the counters (with the final condition, if any)."""
        by_uid = {p["metadata"]["uid"]: k for k, p in self.objects[POD_KIND].items()}
        for uid in (*st.uncounted_failed, *st.uncounted_succeeded):
            if uid in by_uid:
                self._drop_finalizer(by_uid[uid])
        st.failed += len(st.uncounted_failed)
        st.succeeded += len(st.uncounted_succeeded)
        st.uncounted_failed.clear()
        st.uncounted_succeeded.clear()
        self._write(key, st, *conditions)

    async def _next(
        self, key: Key, queue: asyncio.Queue[tuple[str, Key]], deadline: float | None
    ) -> tuple[str, Key] | None:
        """The next message from the kubelet: ("ready"|"done", pod); None at the deadline."""
        loop = asyncio.get_running_loop()
        timeout = None if deadline is None else max(0.0, deadline - loop.time())
        try:
            return await asyncio.wait_for(queue.get(), timeout)
        except asyncio.TimeoutError:
            return None

    async def _control_new(
        self,
        key: Key,
        st: _JobState,
        queue: asyncio.Queue[tuple[str, Key]],
        deadline: float | None,
    ) -> None:
        self._start_pods(key, st)
        self._write(key, st)
        while True:
            message = await self._next(key, queue, deadline)
            if not self._job_alive(key):
                return  # being deleted: 1.36 writes no condition on it
            if message is None:
                await self._end_killing(
                    key,
                    st,
                    "Failed",
                    "DeadlineExceeded",
                    "Job was active longer than specified deadline",
                )
                return
            what, pod_key = message
            if what == "ready":
                if pod_key in st.active:
                    self._write(key, st)
                continue
            way = self._count_end(st, pod_key)
            if way is None:
                continue
            decided = self._decide(st)
            if decided is None:
                self._write(key, st)
                self._flush(key, st)
                if way == "failed":
                    # The Job controller's back-off before a new pod: 10 s, then 20 s...
                    # (virtual: times backoff_scale); the Job shows no active meanwhile.
                    attempts = st.failed
                    await asyncio.sleep(10.0 * 2 ** (attempts - 1) * self.backoff_scale)
                    if not self._job_alive(key):
                        return
                if self._start_pods(key, st):
                    self._write(key, st)
                continue
            ctype, reason, message_text = decided
            if st.active:
                await self._end_killing(key, st, ctype, reason, message_text)
                return
            interim = "SuccessCriteriaMet" if ctype == "Complete" else "FailureTarget"
            self._write(key, st, self._condition(interim, reason, message_text))
            self._flush(key, st, self._condition(ctype, reason, message_text))
            await self._ttl(key)
            return

    async def _end_killing(
        self, key: Key, st: _JobState, ctype: str, reason: str, message: str
    ) -> None:
        """The Job is decided while pods still run: the interim condition, with the
        running pods counted failed at once (terminating); they are deleted; the final
        condition once they have ended."""
        interim = "SuccessCriteriaMet" if ctype == "Complete" else "FailureTarget"
        killed = list(st.active)
        for pkey in killed:
            pod = self.objects[POD_KIND].get(pkey)
            if pod is not None and ctype == "Failed":
                st.uncounted_failed.append(pod["metadata"]["uid"])
        st.active.clear()
        st.terminating = len(killed)
        # As 1.36 wrote it: the pods' deletions first (grace 30), then the interim
        # condition, then the finalizers go and the counters move, pods still running.
        deleting = [self._spawn(self._delete_pod(p)) for p in killed]
        await asyncio.sleep(0)  # the deletions are marked: their first steps await nothing
        self._write(key, st, self._condition(interim, reason, message))
        self._flush(key, st)
        await asyncio.gather(*deleting)
        st.terminating = 0
        self._write(key, st)
        self._write(key, st, self._condition(ctype, reason, message))
        await self._ttl(key)

    async def _control_old(
        self,
        key: Key,
        st: _JobState,
        queue: asyncio.Queue[tuple[str, Key]],
        deadline: float | None,
    ) -> None:
        """<= 1.30: no interim condition, Failed at once, counters moved directly."""
        self._set_status(key, active=0, ready=0)
        while True:
            if not self._job_alive(key):
                return
            self._start_pods(key, st)
            self._set_status(key, active=len(st.active))
            message = await self._next(key, queue, deadline)
            if not self._job_alive(key):
                return
            if message is None:
                await self._fail_old(
                    key, st, "DeadlineExceeded", "Job was active longer than specified deadline"
                )
                return
            what, pod_key = message
            if what == "ready":
                continue
            self._count_end(st, pod_key)
            self._drop_finalizer(pod_key)
            st.failed += len(st.uncounted_failed)
            st.succeeded += len(st.uncounted_succeeded)
            st.uncounted_failed.clear()
            st.uncounted_succeeded.clear()
            fields: dict[str, Any] = {
                "active": len(st.active),
                "succeeded": st.succeeded or None,
                "failed": st.failed or None,
            }
            if st.indexed:
                fields["completedIndexes"] = compact_indexes(st.completed)
                if st.per_index is not None:
                    fields["failedIndexes"] = compact_indexes(st.failed_indexes)
            self._set_status(key, **fields)
            decided = self._decide(st)
            if decided is None:
                continue
            ctype, reason, message_text = decided
            if ctype == "Complete":
                for pkey in st.active:
                    self._drop_finalizer(pkey)
                await asyncio.gather(*(self._delete_pod(p) for p in list(st.active)))
                self._add_condition(key, "Complete", "", "")
                await self._ttl(key)
                return
            await self._fail_old(key, st, reason, message_text)
            return

    async def _fail_old(self, key: Key, st: _JobState, reason: str, message: str) -> None:
        pods = list(st.active)
        self._add_condition(key, "Failed", reason, message)
        self._set_status(key, active=0)
        for pkey in pods:
            self._drop_finalizer(pkey)
        await asyncio.gather(*(self._delete_pod(p) for p in pods))
        self._set_status(key, failed=(st.failed + len(pods)) or None)
        await self._ttl(key)

    async def _ttl(self, key: Key) -> None:
        job = self.objects[JOB_KIND].get(key)
        if job is None:
            return
        ttl = job["spec"].get("ttlSecondsAfterFinished")
        if ttl is None:
            return
        await asyncio.sleep(float(ttl))
        if key in self.objects[JOB_KIND]:
            self._delete_job(key, "Foreground")

    # -- pods and the kubelet ----------------------------------------------------------

    def _create_pod(self, job_key: Key, index: int | None, failures: int) -> Key:
        ns, job_name = job_key
        job = self.objects[JOB_KIND][job_key]
        template = copy.deepcopy(job["spec"]["template"])
        suffix = uuid.uuid4().hex[:5]
        prefix = f"{job_name}-{index}-" if index is not None else f"{job_name}-"
        name = prefix + suffix
        labels = dict(template["metadata"].get("labels") or {})
        annotations = dict(template["metadata"].get("annotations") or {})
        pod_spec = template["spec"]
        if index is not None:
            labels["batch.kubernetes.io/job-completion-index"] = str(index)
            annotations["batch.kubernetes.io/job-completion-index"] = str(index)
            if self._new_shapes:
                if job["spec"].get("backoffLimitPerIndex") is not None:
                    annotations["batch.kubernetes.io/job-index-failure-count"] = str(failures)
                pod_spec["hostname"] = f"{job_name}-{index}"
                for container in pod_spec["containers"]:
                    env = [
                        e
                        for e in container.get("env") or []
                        if e.get("name") != "JOB_COMPLETION_INDEX"
                    ]
                    env.append(
                        {
                            "name": "JOB_COMPLETION_INDEX",
                            "valueFrom": {
                                "fieldRef": {
                                    "apiVersion": "v1",
                                    "fieldPath": "metadata.labels['batch.kubernetes.io/job-completion-index']",
                                }
                            },
                        }
                    )
                    container["env"] = env
        pod_spec.setdefault("serviceAccountName", "default")
        pod_spec.setdefault("serviceAccount", "default")
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": name,
                "generateName": prefix,
                "namespace": ns,
                "uid": str(uuid.uuid4()),
                "generation": 1,
                "creationTimestamp": stamp(),
                "labels": labels,
                "annotations": annotations,
                "ownerReferences": [
                    {
                        "apiVersion": "batch/v1",
                        "kind": "Job",
                        "name": job_name,
                        "uid": job["metadata"]["uid"],
                        "controller": True,
                        "blockOwnerDeletion": True,
                    }
                ],
                "finalizers": ["batch.kubernetes.io/job-tracking"],
            },
            "spec": pod_spec,
            "status": {"phase": "Pending", "qosClass": "BestEffort"},
        }
        self._managed(pod, "kube-controller-manager")
        self._record(POD_KIND, "ADDED", pod)
        key = (ns, name)
        outcome = self._next_outcome(job_name, index)
        container = _Container()
        self._containers[key] = container
        self._spawn(self._kubelet(job_key, key, index, outcome, container))
        return key

    def _next_outcome(self, job_name: str, index: int | None) -> Outcome | None:
        if index is not None and self.index_scripts.get((job_name, index)):
            return self.index_scripts[job_name, index].pop(0)
        if job_name in self.scripts:
            script = self.scripts[job_name]
            return script.pop(0) if script else Outcome()
        return None  # run the command for real

    async def _kubelet(
        self,
        job_key: Key,
        key: Key,
        index: int | None,
        outcome: Outcome | None,
        container: _Container,
    ) -> None:
        queue = self._pod_done.get(job_key)
        try:
            await self._kubelet_steps(key, index, outcome, container, queue)
        finally:
            self._containers.pop(key, None)
            if queue is not None:
                queue.put_nowait(("done", key))
            pod = self.objects[POD_KIND].get(key)
            if pod is not None and pod["metadata"].get("deletionTimestamp") and _ended(pod):
                # The kubelet's final DELETE of a pod being deleted, once its container
                # ended (grace 0: deletionTimestamp rewritten to now).
                self._final_delete(key)

    async def _kubelet_steps(
        self,
        key: Key,
        index: int | None,
        outcome: Outcome | None,
        container: _Container,
        queue: asyncio.Queue[tuple[str, Key]] | None,
    ) -> None:
        await asyncio.sleep(self.tick_s)
        scheduled_at = stamp()

        def schedule(pod: dict[str, Any]) -> None:
            pod["spec"]["nodeName"] = "node-1"
            pod["status"].update(
                conditions=[
                    {"type": "PodScheduled", "status": "True", "lastTransitionTime": scheduled_at}
                ],
                hostIP="10.0.0.1",
                startTime=scheduled_at,
            )

        self._update(POD_KIND, key, schedule)
        if container.kill.is_set():
            self._terminate(key, _Result(143, "Error", "", "", stamp()), outcome)
            return
        pod = self.objects[POD_KIND][key]
        spec_container = pod["spec"]["containers"][0]
        if outcome is not None and outcome.never_started:
            result = _Result(
                outcome.exit_code,
                outcome.reason or "StartError",
                outcome.message,
                "1970-01-01T00:00:00Z",
                stamp(),
            )
            self._terminate(key, result, outcome)
            return
        started = stamp()

        def run(pod: dict[str, Any]) -> None:
            pod["status"]["phase"] = "Running"
            pod["status"]["podIP"] = "10.1.0.7"
            pod["status"]["containerStatuses"] = [
                {
                    "name": spec_container["name"],
                    "image": spec_container.get("image", ""),
                    "imageID": "",
                    "containerID": f"containerd://{uuid.uuid4().hex}",
                    "ready": True,
                    "started": True,
                    "restartCount": 0,
                    "state": {"running": {"startedAt": started}},
                    "lastState": {},
                }
            ]

        self._update(POD_KIND, key, run)
        if queue is not None:
            queue.put_nowait(("ready", key))  # the Job's status.ready counts it
        if outcome is not None:
            result = await self._scripted(outcome, container, started)
        else:
            result = await self._process(key, spec_container, index, container, started)
        self._terminate(key, result, outcome)

    async def _scripted(self, outcome: Outcome, container: _Container, started: str) -> _Result:
        if outcome.hang:
            await container.kill.wait()
            return _Result(143, "Error", "", started, stamp())
        try:
            await asyncio.wait_for(container.kill.wait(), outcome.run_s)
        except asyncio.TimeoutError:
            reason = outcome.reason or ("Completed" if outcome.exit_code == 0 else "Error")
            return _Result(outcome.exit_code, reason, outcome.message, started, stamp())
        return _Result(143, "Error", "", started, stamp())

    async def _process(
        self,
        key: Key,
        spec: Mapping[str, Any],
        index: int | None,
        container: _Container,
        started: str,
    ) -> _Result:
        argv = [*(spec.get("command") or []), *(spec.get("args") or [])]
        with tempfile.NamedTemporaryFile(
            dir=self.tmp.name, delete=False, suffix=".log"
        ) as log_file:
            pass  # the kubelet's terminationMessagePath: an empty file the container may write
        env = {k: v for k, v in os.environ.items() if not k.startswith("HPCSTATE_")}
        pod = self.objects[POD_KIND].get(key) or {}
        for entry in spec.get("env") or []:
            env[entry["name"]] = _env_value(entry, pod)
        env["HPCSTATE_TERMINATION_LOG"] = log_file.name
        if index is not None and "JOB_COMPLETION_INDEX" not in env:
            env["JOB_COMPLETION_INDEX"] = str(index)  # <= 1.30 shapes: no fieldRef entry
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv,
                env=env,
                cwd=spec.get("workingDir") or self.tmp.name,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
                start_new_session=True,
            )
        except OSError as error:
            message = f'failed to create containerd task: exec: "{argv[0]}": {error.strerror}'
            return _Result(128, "StartError", message, "1970-01-01T00:00:00Z", stamp())
        output = asyncio.ensure_future(proc.communicate())
        killer = asyncio.ensure_future(container.kill.wait())
        await asyncio.wait([output, killer], return_when=asyncio.FIRST_COMPLETED)
        if not output.done():
            # The kubelet's stop: TERM to the container's first process, KILL after grace.
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGTERM)
            try:
                await asyncio.wait_for(asyncio.shield(output), self.kill_grace_s)
            except asyncio.TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
        killer.cancel()
        stdout, _ = await output
        returncode = proc.returncode if proc.returncode is not None else -9
        # A container runtime reports a signal death as 128+N, never as a signal.
        code = returncode if returncode >= 0 else 128 - returncode
        with open(log_file.name, encoding="utf-8", errors="replace") as handle:
            message = handle.read()[:4096]
        policy = spec.get("terminationMessagePolicy", "File")
        if not message and code != 0 and policy == "FallbackToLogsOnError":
            lines = stdout.decode(errors="replace").splitlines()[-80:]
            message = "\n".join(lines)[-2048:]
        return _Result(code, "Completed" if code == 0 else "Error", message, started, stamp())

    def _terminate(self, key: Key, result: _Result, outcome: Outcome | None) -> None:
        def end(pod: dict[str, Any]) -> None:
            status = pod["status"]
            status["phase"] = (
                "Succeeded"
                if result.exit_code == 0
                and not (outcome and (outcome.disruption or outcome.pod_reason))
                else "Failed"
            )
            terminated: dict[str, Any] = {
                "exitCode": result.exit_code,
                "reason": result.reason,
                "startedAt": result.started or stamp(),
                "finishedAt": result.finished,
                "containerID": f"containerd://{uuid.uuid4().hex}",
            }
            if result.message:
                terminated["message"] = result.message
            spec_container = pod["spec"]["containers"][0]
            statuses = status.get("containerStatuses") or [
                {
                    "name": spec_container["name"],
                    "image": spec_container.get("image", ""),
                    "imageID": "",
                    "restartCount": 0,
                    "lastState": {},
                }
            ]
            statuses[0].update(ready=False, started=False, state={"terminated": terminated})
            status["containerStatuses"] = statuses
            if outcome is not None and outcome.pod_reason:
                status["reason"] = outcome.pod_reason
                status["message"] = outcome.pod_message
            if outcome is not None and outcome.disruption:
                status.setdefault("conditions", []).append(
                    {
                        "type": "DisruptionTarget",
                        "status": "True",
                        "reason": outcome.disruption,
                        "message": outcome.pod_message,
                        "lastTransitionTime": result.finished,
                    }
                )

        self._update(POD_KIND, key, end)


@dataclass
class _JobState:
    """The Job controller's counts for one Job."""

    indexed: bool
    completions: int
    parallelism: int
    backoff: int
    per_index: int | None
    active: dict[Key, int | None] = field(default_factory=dict)  # pod -> index
    succeeded: int = 0
    failed: int = 0
    terminating: int = 0
    uncounted_failed: list[str] = field(default_factory=list)
    uncounted_succeeded: list[str] = field(default_factory=list)
    completed: set[int] = field(default_factory=set)
    failed_indexes: set[int] = field(default_factory=set)
    failures: dict[int, int] = field(default_factory=dict)


def _ended(pod: Mapping[str, Any]) -> bool:
    return (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed")


_FIELD_PATH = re.compile(r"\Ametadata\.(labels|annotations)\['([^']+)'\]\Z")


def _env_value(entry: Mapping[str, Any], pod: Mapping[str, Any]) -> str:
    """An env entry's value; ``valueFrom.fieldRef`` read from the pod (Downward API)."""
    if "value" in entry:
        return str(entry["value"])
    path = ((entry.get("valueFrom") or {}).get("fieldRef") or {}).get("fieldPath", "")
    meta = pod.get("metadata") or {}
    match = _FIELD_PATH.match(path)
    if match:
        return str((meta.get(match.group(1)) or {}).get(match.group(2), ""))
    if path in ("metadata.name", "metadata.namespace", "metadata.uid"):
        return str(meta.get(path.split(".", 1)[1], ""))
    return ""


def _invalid_job(body: object, ns: str) -> str:
    """What the API server's validation would refuse (the parts hpcstate can get wrong)."""
    if not isinstance(body, dict) or body.get("kind") != "Job":
        return "kind: Required value: expected Job"
    meta = body.get("metadata") or {}
    if not meta.get("name"):
        return "metadata.name: Required value"
    if meta.get("namespace") not in (None, ns):
        return "metadata.namespace: does not match the request's namespace"
    if not re.match(r"\A[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?\Z", meta["name"]):
        return f"metadata.name: Invalid value: {meta['name']!r}"
    template = (body.get("spec") or {}).get("template") or {}
    pod_spec = template.get("spec") or {}
    containers = pod_spec.get("containers") or []
    if not containers:
        return "spec.template.spec.containers: Required value"
    for i, container in enumerate(containers):
        if not container.get("image"):
            return f"spec.template.spec.containers[{i}].image: Required value"
    if pod_spec.get("restartPolicy") not in ("Never", "OnFailure"):
        return 'spec.template.spec.restartPolicy: Unsupported value: supported values: "OnFailure", "Never"'
    return ""
