"""An API server on 127.0.0.1 that replays one 1.36.2 recording (see recordings.py).

It serves what the real control plane served, byte for byte the recorded objects:

* ``POST .../jobs`` answers 201 with the recorded Job (after checking that the request is
  the recorded submission: namespace and the payload's argv) and starts the playback;
* the playback releases the recorded Job and pod events in resourceVersion order, with
  the recorded gaps between them (whole seconds, from managedFields) times ``scale``: a
  virtual clock, so 10 s and 20 s retry back-offs take 0.5 s and 1 s at scale 0.05, and
  events of the same second (Failed, then the TTL controller's deletion) are released
  together, in one write to each open watch;
* it starts only once the client watches both Jobs and pods (as the real watcher did:
  the recording's own watches began before the submit);
* ``GET`` LISTs answer the objects of that moment (label and field selectors, the last
  released resourceVersion); watches send every released event after the requested
  resourceVersion, then each new one; no BOOKMARK (none came within a minute);
* for a recording whose action is hpcstate's cancel, the playback stops before the first
  event the DELETE caused and goes on only when a ``DELETE`` arrives, answering with the
  Job as the API server did (its ``deletionTimestamp`` set). Anyone may send it: a second
  process, say.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Mapping
from typing import Any

from aiohttp import web

from .fake_apiserver import field_selector_matches, selector_matches
from .recordings import JOBS, PODS, Event, Recording
from .watch_stream import serve_watch


class ReplayServer:
    def __init__(self, recording: Recording, *, scale: float = 0.05, token: str = "t") -> None:
        self.recording = recording
        self.scale = scale
        self.token = token
        self.released = 0  # events[:released] have happened
        self.requests: list[tuple[str, str, dict[str, str]]] = []
        self.deletes: list[dict[str, str]] = []
        self.submitted: dict[str, Any] | None = None
        self.problems: list[str] = []  # requests that are not the recorded ones
        first_rv = recording.meta["watch_requests"]["jobs"].split("resourceVersion=")[1]
        self._initial_rv = first_rv.split("&")[0]
        self._watchers: set[tuple[str, asyncio.Queue[list[Event] | None]]] = set()
        self._watching: dict[str, asyncio.Event] = {JOBS: asyncio.Event(), PODS: asyncio.Event()}
        self._delete = asyncio.Event()
        self._submitted = asyncio.Event()
        self.finished = asyncio.Event()
        self._hold = self._hold_index()
        self._runner: web.AppRunner | None = None
        self._task: asyncio.Task[None] | None = None
        self.port = 0

    def _hold_index(self) -> int | None:
        """The first event hpcstate's cancel caused (the Job's deletionTimestamp)."""
        action = self.recording.meta.get("action") or ""
        if "hpcstate cancel" not in action:
            return None
        return self.recording.first(JOBS, lambda o: bool(o["metadata"].get("deletionTimestamp")))

    # -- lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/apis/batch/v1/namespaces/{ns}/jobs", self._collection)
        app.router.add_route("*", "/apis/batch/v1/namespaces/{ns}/jobs/{name}", self._single)
        app.router.add_route("*", "/api/v1/namespaces/{ns}/pods", self._collection)
        self._runner = web.AppRunner(app, handle_signals=False, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = int(self._runner.addresses[0][1])
        self._task = asyncio.ensure_future(self._play())

    async def stop(self) -> None:
        for _, queue in list(self._watchers):
            queue.put_nowait(None)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._runner is not None:
            await self._runner.cleanup()

    def kubeconfig(self) -> dict[str, Any]:
        return {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "rec", "cluster": {"server": f"http://127.0.0.1:{self.port}"}}],
            "users": [{"name": "u", "user": {"token": self.token}}],
            "contexts": [
                {
                    "name": "rec",
                    "context": {
                        "cluster": "rec",
                        "user": "u",
                        "namespace": self.recording.namespace,
                    },
                }
            ],
            "current-context": "rec",
        }

    # -- the playback --------------------------------------------------------------------

    async def _play(self) -> None:
        events = self.recording.events
        await self._submitted.wait()
        self._release(1)  # the Job, as created
        await self._watching[JOBS].wait()
        await self._watching[PODS].wait()
        i = 1
        while i < len(events):
            if i == self._hold:
                await self._delete.wait()
            gap = (events[i].at - events[i - 1].at).total_seconds()
            if gap > 0:
                await asyncio.sleep(gap * self.scale)
            # Events of the same second go out together.
            j = i + 1
            while j < len(events) and events[j].at == events[i].at and j != self._hold:
                j += 1
            self._release(j)
            i = j
        self.finished.set()

    def _release(self, upto: int) -> None:
        batch = self.recording.events[self.released : upto]
        self.released = upto
        for kind, queue in list(self._watchers):
            mine = [e for e in batch if e.kind == kind]
            if mine:
                queue.put_nowait(mine)

    @property
    def resource_version(self) -> str:
        if self.released == 0:
            return self._initial_rv
        return str(self.recording.events[self.released - 1].rv)

    # -- HTTP ----------------------------------------------------------------------------

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

    async def _collection(self, request: web.Request) -> web.StreamResponse:
        self.requests.append((request.method, request.path, dict(request.query)))
        if request.headers.get("Authorization") != f"Bearer {self.token}":
            return self._status(401, "Unauthorized", "Unauthorized")
        kind = JOBS if request.path.startswith("/apis/batch/") else PODS
        if request.match_info["ns"] != self.recording.namespace:
            self.problems.append(f"{request.method} {request.path}: another namespace")
        if request.method == "POST" and kind == JOBS:
            return await self._create(request)
        if request.method != "GET":
            return self._status(405, "MethodNotAllowed", request.method)
        if request.query.get("watch") in ("true", "1"):
            return await self._watch(request, kind)
        jobs, pods = self.recording.state_at(self.released)
        items = [o for o in (jobs if kind == JOBS else pods) if _selected(request.query, o)]
        kind_name = "JobList" if kind == JOBS else "PodList"
        return web.json_response(
            {
                "kind": kind_name,
                "apiVersion": "batch/v1" if kind == JOBS else "v1",
                "metadata": {"resourceVersion": self.resource_version},
                "items": items,
            }
        )

    async def _create(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.submitted = body
        container = body["spec"]["template"]["spec"]["containers"][0]
        argv = self.recording.argv
        if container["command"][-len(argv) :] != argv:
            self.problems.append(f"submitted {container['command']}, recorded {argv}")
        if self._submitted.is_set():
            return self._status(409, "AlreadyExists", "already exists")
        self._submitted.set()
        return web.json_response(self.recording.job, status=201)

    async def _watch(self, request: web.Request, kind: str) -> web.StreamResponse:
        since = int(request.query.get("resourceVersion") or 0)
        queue: asyncio.Queue[list[Event] | None] = asyncio.Queue()
        entry = (kind, queue)
        # Register and snapshot with no await in between: nothing can slip through.
        self._watchers.add(entry)
        backlog = [
            e for e in self.recording.events[: self.released] if e.kind == kind and e.rv > since
        ]
        self._watching[kind].set()

        def lines(batch: list[Event] | None) -> list[str] | None:
            if batch is None:
                return None  # stop(): a clean end
            return [e.line() for e in batch if _selected(request.query, e.obj)]

        return await serve_watch(
            request,
            lines(backlog) or [],
            queue,
            lines,
            on_close=lambda: self._watchers.discard(entry),
        )

    async def _single(self, request: web.Request) -> web.StreamResponse:
        self.requests.append((request.method, request.path, dict(request.query)))
        if request.headers.get("Authorization") != f"Bearer {self.token}":
            return self._status(401, "Unauthorized", "Unauthorized")
        name = request.match_info["name"]
        jobs, _ = self.recording.state_at(self.released)
        found = next((j for j in jobs if j["metadata"]["name"] == name), None)
        if found is None:
            return self._status(404, "NotFound", f'jobs.batch "{name}" not found')
        if request.method == "GET":
            return web.json_response(found)
        if request.method == "DELETE":
            self.deletes.append(dict(request.query))
            if self._hold is None or self._delete.is_set():
                return web.json_response(found)
            self._delete.set()
            # The API server's answer: the Job with its deletionTimestamp (Foreground).
            return web.json_response(self.recording.events[self._hold].obj)
        return self._status(405, "MethodNotAllowed", request.method)


def _selected(query: Mapping[str, str], obj: Mapping[str, Any]) -> bool:
    labels = obj.get("metadata", {}).get("labels") or {}
    return selector_matches(query.get("labelSelector"), labels) and field_selector_matches(
        query.get("fieldSelector"), obj
    )


def dump_kubeconfig(server: ReplayServer) -> str:
    return json.dumps(server.kubeconfig())
