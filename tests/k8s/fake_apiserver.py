"""A fake Kubernetes API server on 127.0.0.1, for the k8s backend's tests.

No real cluster can run here (no kind, no kube-apiserver binaries), so this is a FAKE,
written from the Kubernetes source's behaviour as summarized in the project's reference
(job_controller.go, the TTL controller, the kubelet's container statuses):

* REST: GET/LIST (``labelSelector``, ``fieldSelector`` on ``metadata.name``,
  ``limit``/``continue``, ``resourceVersion``), POST
  (422 for invalid Jobs, 409 AlreadyExists), DELETE (``propagationPolicy`` Foreground:
  deletionTimestamp first, pods, then gone; Background: gone, then pods) for
  ``/apis/batch/v1/namespaces/{ns}/jobs`` and ``/api/v1/namespaces/{ns}/pods``.
* Watches (``?watch=true``): NDJSON ADDED/MODIFIED/DELETED/BOOKMARK/ERROR, replay from a
  resourceVersion, 410 Gone as an ERROR Status event after compaction, ``timeoutSeconds``
  clean ends, and injected faults: abrupt stream drops, forced 410s, paused streams,
  objects written as they are (malformed ones included).
* A controller + kubelet model that emits the object shapes of k8s >= 1.31 (interim
  FailureTarget/SuccessCriteriaMet, then Failed/Complete once pods are gone; ``terminating``;
  CompletionsReached) or <= 1.30 (no interim conditions, no reason on Complete).
* Containers either run FOR REAL as local processes (command + args, env, a termination-log
  file named by $HPCSTATE_TERMINATION_LOG, TERM then KILL on deletion: exit codes and
  signals are the kernel's), or follow a scripted :class:`Outcome` (OOMKilled, eviction...,
  which cannot happen for real here).
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import itertools
import json
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


_DROP = object()  # abruptly close the stream
_END = object()  # cleanly end the stream


class FakeCluster:
    """Objects, an event log with resourceVersions, watches, and the controller model."""

    def __init__(
        self,
        *,
        version: tuple[int, int] = (1, 31),
        token: str = "test-token",
        kill_grace_s: float = 2.0,
        tick_s: float = 0.02,
    ) -> None:
        self.version = version
        self.token = token
        self.kill_grace_s = kill_grace_s  # real seconds between TERM and KILL
        self.tick_s = tick_s
        self.rv = 0
        self.objects: dict[str, dict[Key, dict[str, Any]]] = {JOB_KIND: {}, POD_KIND: {}}
        self.log: list[tuple[int, str, str, str, dict[str, Any]]] = []
        self.compacted_rv = 0
        self.requests: list[tuple[str, str, dict[str, str]]] = []
        self.scripts: dict[str, list[Outcome]] = {}
        self.index_scripts: dict[tuple[str, int], list[Outcome]] = {}
        self.expire_watches: dict[str, int] = {JOB_KIND: 0, POD_KIND: 0}
        self.delay_pod_events_s = 0.0  # deliver pod watch events late (ordering tests)
        self.paused: set[str] = set()  # kinds whose open watches get no events (a stall)
        self.pod_list_forbidden = False
        self.fail_pod_lists: list[int] = []  # HTTP codes for the next pod LISTs (not watches)
        self._watchers: set[_Watcher] = set()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._containers: dict[Key, _Container] = {}
        self._pod_done: dict[Key, asyncio.Queue[Key]] = {}  # job -> finished pods
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
        response = web.StreamResponse(status=200)
        response.content_type = "application/json"
        await response.prepare(request)

        async def send(event: str, obj: dict[str, Any]) -> None:
            line = json.dumps({"type": event, "object": obj}) + "\n"
            await response.write(line.encode())

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
            await send("ERROR", status)
            await response.write_eof()
            return response
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
        loop = asyncio.get_running_loop()
        timeout = float(query.get("timeoutSeconds") or 3600)
        deadline = loop.time() + timeout
        try:
            for event, obj in backlog:
                await send(event, obj)
            while True:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                try:
                    item = await asyncio.wait_for(watcher.queue.get(), remaining)
                except asyncio.TimeoutError:
                    break
                if item is _END:
                    break
                if item is _DROP:
                    transport = request.transport
                    if transport is not None:
                        transport.abort()
                    return response
                event, obj = item
                if event == "BOOKMARK":
                    api = "batch/v1" if kind == JOB_KIND else "v1"
                    obj = {
                        "kind": "Job" if kind == JOB_KIND else "Pod",
                        "apiVersion": api,
                        "metadata": {"resourceVersion": str(self.rv)},
                    }
                await send(event, obj)
            await response.write_eof()
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            self._watchers.discard(watcher)
        return response

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
        spec = job["spec"]
        spec.setdefault("parallelism", 1)
        spec.setdefault("completionMode", "NonIndexed")
        if spec["completionMode"] == "NonIndexed":
            spec.setdefault("completions", 1)
        if spec.get("backoffLimitPerIndex") is not None:
            spec.setdefault("backoffLimit", 2147483647)
        spec.setdefault("backoffLimit", 6)
        spec.setdefault("suspend", False)
        controller_labels = {
            "batch.kubernetes.io/controller-uid": uid,
            "batch.kubernetes.io/job-name": name,
            "controller-uid": uid,
            "job-name": name,
        }
        spec["selector"] = {"matchLabels": {"batch.kubernetes.io/controller-uid": uid}}
        template_meta = spec["template"].setdefault("metadata", {})
        template_meta["labels"] = {**(template_meta.get("labels") or {}), **controller_labels}
        job["status"] = {}
        self._record(JOB_KIND, "ADDED", job)
        self._pod_done[ns, name] = asyncio.Queue()
        self._spawn(self._control((ns, name)))
        return web.json_response(copy.deepcopy(job), status=201)

    def _delete_job(self, key: Key, policy: str) -> dict[str, Any]:
        job = copy.deepcopy(self.objects[JOB_KIND][key])
        meta = job["metadata"]
        if meta.get("deletionTimestamp"):
            return job
        meta["deletionTimestamp"] = stamp()
        meta["deletionGracePeriodSeconds"] = 0
        if policy == "Foreground":
            meta["finalizers"] = [*meta.get("finalizers", []), "foregroundDeletion"]
            self._record(JOB_KIND, "MODIFIED", job)
            self._spawn(self._foreground(key))
            return copy.deepcopy(job)
        self._record(JOB_KIND, "DELETED", job)
        if policy != "Orphan":
            self._spawn(self._delete_pods(key, uid=meta["uid"]))
        return copy.deepcopy(job)

    async def _foreground(self, key: Key) -> None:
        uid = self.objects[JOB_KIND][key]["metadata"]["uid"]
        await self._delete_pods(key, uid=uid)
        job = self.objects[JOB_KIND].get(key)
        if job is not None:
            job = copy.deepcopy(job)
            job["metadata"]["finalizers"] = []
            self._record(JOB_KIND, "DELETED", job)

    async def _delete_pods(self, key: Key, *, uid: str) -> None:
        pods = [
            pkey
            for pkey, pod in self.objects[POD_KIND].items()
            if pod["metadata"]["labels"].get("controller-uid") == uid
        ]
        await asyncio.gather(*(self._delete_pod(p) for p in pods))

    async def _delete_pod(self, key: Key) -> None:
        """Graceful deletion: deletionTimestamp = now + grace, kill, then gone."""
        pod = self.objects[POD_KIND].get(key)
        if pod is None or pod["metadata"].get("deletionTimestamp"):
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
        pod = self.objects[POD_KIND].get(key)
        if pod is not None:
            pod = copy.deepcopy(pod)
            pod["metadata"]["finalizers"] = []
            self._record(POD_KIND, "DELETED", pod)

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

        self._update(JOB_KIND, key, change)

    def _add_condition(self, key: Key, ctype: str, reason: str, message: str) -> None:
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

        def change(obj: dict[str, Any]) -> None:
            obj.setdefault("status", {}).setdefault("conditions", []).append(cond)
            if ctype == "Complete":
                obj["status"]["completionTime"] = now

        self._update(JOB_KIND, key, change)

    @property
    def _new_shapes(self) -> bool:
        return self.version >= (1, 31)

    async def _control(self, key: Key) -> None:
        await asyncio.sleep(self.tick_s)
        if not self._job_alive(key):
            return
        job = self.objects[JOB_KIND][key]
        spec = job["spec"]
        status0: dict[str, Any] = {"startTime": stamp(), "active": 0, "ready": 0}
        if self._new_shapes:
            status0.update(terminating=0, uncountedTerminatedPods={})
        self._set_status(key, **status0)
        if spec.get("suspend"):
            self._add_condition(key, "Suspended", "JobSuspended", "Job suspended")
            return
        indexed = spec.get("completionMode") == "Indexed"
        completions = int(spec.get("completions") or 1)
        parallelism = int(spec.get("parallelism") or 1)
        backoff = int(spec.get("backoffLimit", 6))
        per_index = spec.get("backoffLimitPerIndex")
        deadline_s = spec.get("activeDeadlineSeconds")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + deadline_s if deadline_s else None
        done_queue = self._pod_done[key]
        active: dict[Key, int | None] = {}  # pod key -> index
        succeeded = failed = 0
        completed: set[int] = set()
        failed_indexes: set[int] = set()
        failures: dict[int, int] = {}

        while True:
            if not self._job_alive(key):
                return
            # Start pods up to parallelism.
            if indexed:
                busy = set(active.values())
                for index in range(completions):
                    if len(active) >= parallelism:
                        break
                    if index in completed or index in failed_indexes or index in busy:
                        continue
                    active[self._create_pod(key, index)] = index
            else:
                while len(active) < min(parallelism, completions - succeeded):
                    active[self._create_pod(key, None)] = None
            self._set_status(key, active=len(active))
            timeout = None if deadline is None else max(0.0, deadline - loop.time())
            try:
                pod_key = await asyncio.wait_for(done_queue.get(), timeout)
            except asyncio.TimeoutError:
                await self._fail(
                    key,
                    active,
                    "DeadlineExceeded",
                    "Job was active longer than specified deadline",
                    failed,
                )
                return
            finished_index = active.pop(pod_key, None)
            pod = self.objects[POD_KIND].get(pod_key)
            phase = pod["status"]["phase"] if pod is not None else "Failed"
            if phase == "Succeeded":
                succeeded += 1
                if finished_index is not None:
                    completed.add(finished_index)
            else:
                failed += 1
                if finished_index is not None:
                    failures[finished_index] = failures.get(finished_index, 0) + 1
                    if per_index is not None and failures[finished_index] > int(per_index):
                        failed_indexes.add(finished_index)
            fields: dict[str, Any] = {
                "active": len(active),
                "succeeded": succeeded or None,
                "failed": failed or None,
            }
            if indexed:
                fields["completedIndexes"] = compact_indexes(completed)
                if per_index is not None:
                    fields["failedIndexes"] = compact_indexes(failed_indexes)
            self._set_status(key, **fields)
            if (indexed and len(completed) == completions) or (
                not indexed and succeeded >= completions
            ):
                await self._succeed(key, active)
                return
            if failed > backoff:
                await self._fail(
                    key,
                    active,
                    "BackoffLimitExceeded",
                    "Job has reached the specified backoff limit",
                    failed,
                )
                return
            if indexed and failed_indexes and len(completed | failed_indexes) == completions:
                await self._fail(key, active, "FailedIndexes", "Job has failed indexes", failed)
                return

    async def _kill_active(self, key: Key, active: dict[Key, int | None]) -> int:
        """Delete the Job's running pods and wait until they have terminated."""
        pods = list(active)
        if not pods:
            return 0
        if self._new_shapes:
            self._set_status(key, active=0, terminating=len(pods))
        else:
            self._set_status(key, active=0)
        await asyncio.gather(*(self._delete_pod(p) for p in pods))
        return len(pods)

    async def _fail(
        self, key: Key, active: dict[Key, int | None], reason: str, message: str, failed: int
    ) -> None:
        if self._new_shapes:
            # >= 1.31: the interim condition first, the terminal one once pods are gone.
            self._add_condition(key, "FailureTarget", reason, message)
            killed = await self._kill_active(key, active)
            self._set_status(key, failed=(failed + killed) or None, terminating=0, ready=0)
            self._add_condition(key, "Failed", reason, message)
        else:
            # <= 1.30: Failed at once; the killed pods still terminate afterwards.
            pods = list(active)
            self._add_condition(key, "Failed", reason, message)
            self._set_status(key, active=0)
            await asyncio.gather(*(self._delete_pod(p) for p in pods))
            self._set_status(key, failed=(failed + len(pods)) or None)
        await self._ttl(key)

    async def _succeed(self, key: Key, active: dict[Key, int | None]) -> None:
        if self._new_shapes:
            reason, message = "CompletionsReached", "Reached expected number of succeeded pods"
            self._add_condition(key, "SuccessCriteriaMet", reason, message)
            await self._kill_active(key, active)
            self._set_status(key, terminating=0, ready=0)
            self._add_condition(key, "Complete", reason, message)
        else:
            self._add_condition(key, "Complete", "", "")
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

    def _create_pod(self, job_key: Key, index: int | None) -> Key:
        ns, job_name = job_key
        job = self.objects[JOB_KIND][job_key]
        template = copy.deepcopy(job["spec"]["template"])
        suffix = uuid.uuid4().hex[:5]
        name = f"{job_name}-{index}-{suffix}" if index is not None else f"{job_name}-{suffix}"
        labels = dict(template["metadata"].get("labels") or {})
        annotations = dict(template["metadata"].get("annotations") or {})
        if index is not None:
            labels["batch.kubernetes.io/job-completion-index"] = str(index)
            annotations["batch.kubernetes.io/job-completion-index"] = str(index)
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": name,
                "namespace": ns,
                "uid": str(uuid.uuid4()),
                "creationTimestamp": stamp(),
                "labels": labels,
                "annotations": annotations,
                "finalizers": ["batch.kubernetes.io/job-tracking"],
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
            },
            "spec": template["spec"],
            "status": {"phase": "Pending", "qosClass": "BestEffort"},
        }
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
        try:
            await self._kubelet_steps(key, index, outcome, container)
        finally:
            self._containers.pop(key, None)
            queue = self._pod_done.get(job_key)
            if queue is not None:
                queue.put_nowait(key)

    async def _kubelet_steps(
        self, key: Key, index: int | None, outcome: Outcome | None, container: _Container
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
        if outcome is not None:
            result = await self._scripted(outcome, container, started)
        else:
            result = await self._process(spec_container, index, container, started)
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
        self, spec: Mapping[str, Any], index: int | None, container: _Container, started: str
    ) -> _Result:
        argv = [*(spec.get("command") or []), *(spec.get("args") or [])]
        with tempfile.NamedTemporaryFile(
            dir=self.tmp.name, delete=False, suffix=".log"
        ) as log_file:
            pass  # the kubelet's terminationMessagePath: an empty file the container may write
        env = {k: v for k, v in os.environ.items() if not k.startswith("HPCSTATE_")}
        env.update({e["name"]: e.get("value", "") for e in spec.get("env") or []})
        env["HPCSTATE_TERMINATION_LOG"] = log_file.name
        if index is not None:
            env["JOB_COMPLETION_INDEX"] = str(index)
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
