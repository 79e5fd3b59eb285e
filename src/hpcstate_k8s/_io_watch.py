"""The watch follower: one namespace's LISTs and watch streams, fed to its tracker.

Thin: the requests come from ``_commands``, every decision (what an event means, which
pods a held-back verdict waits for) from ``_tracking.NamespaceTracker``; this module only
sends the requests, resumes after a clean end, LISTs again after a 410 or a broken stream
(with a capped backoff), and puts what the tracker says on the consumer's queue.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from typing import Any

from attrs import frozen

from hpcstate import Observation, SchedulerUnavailable, TransportError

from . import _commands as commands
from ._io_rest import Expired, Forbidden, KubeApi, StreamBroken
from ._parse import JOB_NAME_LABELS, object_name, resource_version
from ._tracking import NamespaceTracker, PodListRequest

log = logging.getLogger("hpcstate.k8s")


def now() -> datetime:
    """The time an answer is seen (the pure modules take it as an argument)."""
    return datetime.now(timezone.utc)


@frozen(kw_only=True)
class WatchSettings:
    timeout_s: int  # each watch request's timeoutSeconds
    retry_initial_s: float  # the first pause after a broken stream or failed LIST
    retry_max_s: float  # the pause doubles up to this


class Follower:
    """One namespace's watch: a tracker, the queue it feeds, and its two watch loops."""

    def __init__(
        self,
        *,
        api: KubeApi,
        settings: WatchSettings,
        tracker: NamespaceTracker,
        out: asyncio.Queue[Observation | BaseException | None],
        remember_verdict: Callable[[Observation], None],
    ) -> None:
        self.api = api
        self.settings = settings
        self.tracker = tracker
        self.out = out
        self._remember_verdict = remember_verdict
        self.finished = asyncio.Event()
        self.job_selector: str | None = commands.MANAGED_SELECTOR
        self.pod_selector: str | None = commands.MANAGED_SELECTOR

    @property
    def namespace(self) -> str:
        return self.tracker.namespace

    async def emit(self, observations: Sequence[Observation], *, list_pods: bool = True) -> None:
        """Send observations on; then LIST the pods that held-back failure verdicts wait
        for (one LIST for all of them), and send what those verdicts say."""
        self._send(observations)
        while list_pods:
            wanted = self.tracker.take_wanted_pod_lists()
            if not wanted:
                break
            items = await self._pods_of(wanted)
            if items is None:
                self._send(self.tracker.pods_unreadable(now()))
                break
            self._send(self.tracker.job_pods_listed(wanted, items, now()))
        if self.tracker.done():
            self.finished.set()

    def _send(self, observations: Sequence[Observation]) -> None:
        for problem in self.tracker.take_problems():
            log.warning(
                "k8s watch in %s: skipping an unreadable object: %s", self.namespace, problem
            )
        for obs in observations:
            if obs.final and obs.state is not None:
                self._remember_verdict(obs)
            self.out.put_nowait(obs)

    async def _pods_of(self, wanted: Sequence[PodListRequest]) -> list[Any] | None:
        """The pods of those Jobs, by controller uid, from LISTs made now (None: no
        permission). A transient error is retried: a verdict never goes without them."""
        items: list[Any] = []
        for request in commands.pods_of_uids(self.namespace, [w.uid for w in wanted]):
            delay = self.settings.retry_initial_s
            while True:
                try:
                    found, _ = await self.api.list(request)
                except Forbidden as error:
                    log.warning("cannot list pods in %s: %s", self.namespace, error)
                    return None
                except (TransportError, SchedulerUnavailable) as error:
                    log.info("listing pods in %s failed: %s; retrying", self.namespace, error)
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, self.settings.retry_max_s)
                    continue
                items.extend(found)
                break
        return items

    async def start(self) -> tuple[str, str | None]:
        """The first LISTs: decide the selectors, feed the tracker. Returns the RVs."""
        path = commands.jobs_path(self.namespace)
        items, job_rv = await self.api.list(commands.list_objects(path, selector=self.job_selector))
        missing = self.tracker.names - {object_name(obj) for obj in items}
        if missing:
            # Adopted Jobs do not carry hpcstate's label: watch the whole namespace.
            every, every_rv = await self.api.list(commands.list_objects(path))
            if any(object_name(obj) in missing for obj in every):
                self.job_selector, self.pod_selector = None, JOB_NAME_LABELS[1]
                items, job_rv = every, every_rv
        # The pod LIST below is newer than these Jobs: it answers the verdicts they hold.
        await self.emit(self.tracker.jobs_listed(items, now()), list_pods=False)
        wanted = self.tracker.take_wanted_pod_lists()
        try:
            pods, pod_rv = await self.api.list(
                commands.list_objects(
                    commands.pods_path(self.namespace), selector=self.pod_selector
                )
            )
        except Forbidden as error:
            log.warning(
                "cannot read pods in %s (%s): judging by Job counters", self.namespace, error
            )
            await self.emit(self.tracker.pods_unreadable(now()))
            return job_rv, None
        self._send(self.tracker.pods_listed(pods, now()))
        await self.emit(self.tracker.job_pods_listed(wanted, (), now()))
        return job_rv, pod_rv

    async def follow(self, kind: str, since: str) -> None:
        """Watch one kind from resourceVersion ``since``; LIST again after any broken stream."""
        settings = self.settings
        jobs = kind == "jobs"
        path = commands.jobs_path(self.namespace) if jobs else commands.pods_path(self.namespace)
        selector = self.job_selector if jobs else self.pod_selector
        delay = settings.retry_initial_s
        rv = since
        streak = 0  # failures since the last event: only a repeat waits before retrying
        while True:
            try:
                if not rv:
                    items, rv = await self.api.list(commands.list_objects(path, selector=selector))
                    feed = self.tracker.jobs_listed if jobs else self.tracker.pods_listed
                    await self.emit(feed(items, now()))
                events = 0
                request = commands.watch(
                    path, selector=selector, resource_version=rv, timeout_s=settings.timeout_s
                )
                async for event_type, obj in self.api.watch(request):
                    events += 1
                    streak, delay = 0, settings.retry_initial_s
                    rv = resource_version(obj) or rv
                    if event_type == "BOOKMARK":
                        continue
                    if jobs:
                        await self.emit(self.tracker.job_event(event_type, obj, now()))
                    else:
                        await self.emit(self.tracker.pod_event(event_type, obj, now()))
                # A clean end (timeoutSeconds): resume from the last resourceVersion seen.
                if events == 0:
                    await asyncio.sleep(delay)
                continue
            except Expired as error:
                log.info("watch %s in %s: %s; listing again", kind, self.namespace, error)
            except (StreamBroken, TransportError, SchedulerUnavailable) as error:
                log.info("watch %s in %s broke: %s; listing again", kind, self.namespace, error)
                streak += 1  # a broken link: always pause before the next LIST
            rv = ""
            if streak:
                await asyncio.sleep(delay)
                delay = min(delay * 2, settings.retry_max_s)
            streak += 1

    async def run(self) -> None:
        job_rv, pod_rv = await self.start()
        if self.finished.is_set():
            return
        tasks = [asyncio.ensure_future(self.follow("jobs", job_rv))]
        if pod_rv is not None:
            tasks.append(asyncio.ensure_future(self.follow("pods", pod_rv)))
        waiter = asyncio.ensure_future(self.finished.wait())
        try:
            done, _ = await asyncio.wait([*tasks, waiter], return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                if task is not waiter:
                    task.result()  # a loop only returns by raising a non-transient error
        finally:
            for task in (*tasks, waiter):
                task.cancel()
            await asyncio.gather(*tasks, waiter, return_exceptions=True)
