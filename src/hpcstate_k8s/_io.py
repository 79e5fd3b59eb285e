"""The Kubernetes backend: submit, queue, watch and cancel, composed from thin parts.

What to ask is ``_commands``' (requests) and ``_manifest``'s (the Job to create); what
an answer says is ``_parse``'s, what it means ``_observe``'s and, over a watch,
``_tracking``'s. The I/O is ``_io_rest`` (REST calls), ``_io_watch`` (the watch follower),
``_io_kubeconfig`` (client and credentials) and ``_io_manifest`` (a manifest file).
This class holds only what one process learned: the uids of the Jobs it created, the
Jobs it deleted on request, and the verdicts its watches carried.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator, Sequence
from typing import Any

from hpcstate import (
    Absence,
    BackendError,
    ConfigError,
    Observation,
    ParseError,
    SchedulerUnavailable,
    Source,
)
from hpcstate.backend import AccountingQuery, BackendConfig, Capabilities, JobSpec, Submission
from hpcstate.options import structure_options

from . import _commands as commands
from ._io_kubeconfig import make_http_client
from ._io_manifest import check_schema, load_manifest
from ._io_rest import Conflict, Forbidden, KubeApi
from ._io_watch import Follower, WatchSettings, now
from ._manifest import (
    build_job,
    resolve_settings,
    submission_for_tag,
    submission_from_job,
    tag_hash,
)
from ._observe import JobRef, observe_listed, parse_native_id
from ._options import K8sOptions
from ._parse import (
    TAG_ANNOTATION,
    object_name,
    read_job,
)
from ._tracking import NamespaceTracker

log = logging.getLogger("hpcstate.k8s")

_VERDICTS_KEPT = 100_000  # watch-carried verdicts kept for queue(), oldest dropped first


class K8sBackend:
    """hpcstate's Kubernetes backend: batch/v1 Jobs, watched (push) or listed (queue)."""

    def __init__(
        self,
        *,
        api: KubeApi,
        namespace: str,
        options: K8sOptions,
        capabilities: Capabilities,
        name: str = "k8s",
    ) -> None:
        self.name = name
        self.capabilities = capabilities
        self.api = api
        self.options = options
        self.namespace = options.namespace or namespace
        self.watch_settings = WatchSettings(
            timeout_s=options.watch_timeout_whole_s,
            retry_initial_s=options.retry_initial_s,
            retry_max_s=options.retry_max_s,
        )
        self._defaults = options.submit_defaults()
        # What this process learned: uids of the Jobs it created, Jobs it deleted on request.
        self._uids: dict[tuple[str, str], str] = {}
        self._cancelled: dict[tuple[str, str], str | None] = {}
        self._unlabeled: set[tuple[str, str]] = set()  # adopted Jobs without our label
        self._followers: set[Follower] = set()
        # Verdicts a watch event carried, by native id: queue() serves them as they were
        # (a Job removed by ttlSecondsAfterFinished: 0 is gone by the next LIST).
        self._verdicts: OrderedDict[str, Observation] = OrderedDict()

    def remember_verdict(self, obs: Observation) -> None:
        """Keep a final observation a watch event carried, for the next queue() call."""
        self._verdicts[obs.native_id] = obs
        self._verdicts.move_to_end(obs.native_id)
        while len(self._verdicts) > _VERDICTS_KEPT:
            self._verdicts.popitem(last=False)

    @classmethod
    def from_config(cls, config: BackendConfig, capabilities: Capabilities) -> K8sBackend:
        if config.host is not None:
            raise ConfigError(
                f"backend {config.name!r}: the k8s backend talks to the API server named by its "
                "kubeconfig; 'host' (SSH) does not apply"
            )
        options = structure_options(K8sOptions, config.options, where=f"backend {config.name!r}")
        http, namespace = make_http_client(options)
        return cls(
            api=KubeApi(http, request_timeout_s=options.request_timeout_s),
            namespace=namespace,
            options=options,
            capabilities=capabilities,
            name=config.name,
        )

    # -- submit ------------------------------------------------------------------------

    async def submit(self, spec: JobSpec) -> Submission:
        tag = spec.tag or uuid.uuid4().hex
        options = dict(spec.options)
        manifest_option = options.pop("manifest", None) or self._defaults.get("manifest")
        manifest = load_manifest(str(manifest_option)) if manifest_option else None
        defaults = {k: v for k, v in self._defaults.items() if k != "manifest"}
        settings = resolve_settings(defaults, options, namespace=self.namespace)
        body = build_job(spec, tag=tag, settings=settings, manifest=manifest)
        check_schema(body)
        namespace, name = body["metadata"]["namespace"], body["metadata"]["name"]
        try:
            created = await self.api.create(commands.create(commands.jobs_path(namespace), body))
        except Conflict:
            # A retried submit (or a name clash): the Job must carry our tag to be ours.
            created = await self._existing(namespace, name, tag)
        submission = submission_from_job(created)
        uid = read_job(created).uid
        if uid:
            self._uids[namespace, name] = uid
        return submission

    async def find_submission(self, tag: str) -> Submission | None:
        """The Job a submit with this tag created, if any (idempotent_submit: the tracker
        asks when a submit's answer was lost). Looked for by its tag-hash label in the
        backend's namespace, then in each namespace this process created Jobs in; a Job
        a job's own options or manifest put elsewhere is not searched for."""
        namespaces = dict.fromkeys([self.namespace, *(ns for ns, _ in self._uids)])
        for namespace in namespaces:
            items, _ = await self.api.list(commands.jobs_by_tag(namespace, tag_hash(tag)))
            found = submission_for_tag(items, tag)
            if found is not None:
                return found
        return None

    async def _existing(self, namespace: str, name: str, tag: str) -> dict[str, Any]:
        found = await self.api.get(commands.get_object(commands.job_path(namespace, name)))
        if found is None:
            raise SchedulerUnavailable(
                f"Job {namespace}/{name} already existed, then vanished: submit again"
            )
        job = read_job(found)
        if job.meta.annotations.get(TAG_ANNOTATION) != tag:
            raise BackendError(
                f"a Job named {namespace}/{name} already exists and was not created by this "
                f"submission (its {TAG_ANNOTATION} annotation is "
                f"{job.meta.annotations.get(TAG_ANNOTATION)!r}); choose another name"
            )
        return found

    # -- reading -----------------------------------------------------------------------

    def _refs(self, native_ids: Sequence[str]) -> list[tuple[str, JobRef]]:
        return [(native_id, parse_native_id(native_id)) for native_id in native_ids]

    async def _pods_for(self, namespace: str, names: set[str]) -> list[Any] | None:
        try:
            items, _ = await self.api.list(commands.pods_of_jobs(namespace, names))
        except Forbidden:
            return None  # judged from the Jobs alone
        return items

    async def _jobs_for(self, namespace: str, names: set[str]) -> list[Any]:
        """The Job objects of those names: one LIST that reads no unrelated Job.

        One name: by ``fieldSelector=metadata.name``, ours or adopted. Several: by our
        label, unless one of them is an adopted Job known to lack it (then the whole
        namespace). A name missing from the labelled LIST is gone or adopted: one
        unselected LIST tells which, and an adopted Job is remembered.
        """
        path = commands.jobs_path(namespace)
        if len(names) == 1:
            [name] = names
            items, _ = await self.api.list(commands.job_by_name(namespace, name))
            return items
        if any((namespace, name) in self._unlabeled for name in names):
            items, _ = await self.api.list(commands.list_objects(path))
            return items
        items, _ = await self.api.list(
            commands.list_objects(path, selector=commands.MANAGED_SELECTOR)
        )
        missing = names - {object_name(obj) for obj in items}
        if missing:
            every, _ = await self.api.list(commands.list_objects(path))
            adopted = [o for o in every if object_name(o) in missing]
            self._unlabeled.update((namespace, o["metadata"]["name"]) for o in adopted)
            items = [*items, *adopted]
        return items

    async def queue(self, native_ids: Sequence[str]) -> Sequence[Observation]:
        """One LIST of Jobs (and one of their pods) per namespace, for all ids.

        An object that cannot be read costs only its own ids their answer (no record,
        with an ``unreadable`` marker), never the whole namespace's.
        """
        refs = self._refs(native_ids)
        by_namespace: dict[str, list[tuple[str, JobRef]]] = {}
        for native_id, ref in refs:
            by_namespace.setdefault(ref.namespace, []).append((native_id, ref))
        results: dict[str, Observation] = {}
        for namespace, group in by_namespace.items():
            names = {ref.name for _, ref in group}
            # Jobs first, then pods: a Job's verdict is never newer than its pods' states.
            jobs = await self._jobs_for(namespace, names)
            pods = await self._pods_for(namespace, names)
            listing = observe_listed(
                group,
                jobs,
                pods,
                observed_at=now(),
                kept=self._verdicts,
                created=self._uids,
                cancelled=self._cancelled,
            )
            for error in listing.skipped:
                log.warning("k8s queue in %s: skipping an unreadable object: %s", namespace, error)
            for native_id, error in listing.unjudged:
                log.warning("k8s queue: cannot judge %s: %s", native_id, error)
            results.update(listing.observations)
        return [results[native_id] for native_id in native_ids]

    async def accounting(self, query: AccountingQuery) -> Sequence[Observation]:
        """Kubernetes keeps no accounting: verdicts are final from the Job's conditions."""
        observed_at = now()
        return [
            Observation(
                native_id=native_id,
                source=Source.ACCOUNTING,
                observed_at=observed_at,
                absence=Absence.NO_RECORD,
                detail="Kubernetes keeps no accounting records",
            )
            for native_id in query.native_ids
        ]

    async def watch(self, native_ids: Sequence[str]) -> AsyncIterator[Observation]:
        """Observations as the Jobs change, until every id has its verdict.

        One watch of Jobs and one of pods per namespace, label-selected; each LISTs
        first, resumes from the last resourceVersion after a clean end, and LISTs again
        after a 410 or a broken stream, so a terminal state is never missed.
        """
        refs = self._refs(native_ids)
        by_namespace: dict[str, list[tuple[str, JobRef]]] = {}
        for native_id, ref in refs:
            by_namespace.setdefault(ref.namespace, []).append((native_id, ref))
        out: asyncio.Queue[Observation | BaseException | None] = asyncio.Queue()
        followers = []
        for namespace, group in by_namespace.items():
            names = {ref.name for _, ref in group}
            tracker = NamespaceTracker(
                namespace,
                group,
                uids={n: u for (ns, n), u in self._uids.items() if ns == namespace and n in names},
                cancelled={
                    n: u for (ns, n), u in self._cancelled.items() if ns == namespace and n in names
                },
            )
            followers.append(
                Follower(
                    api=self.api,
                    settings=self.watch_settings,
                    tracker=tracker,
                    out=out,
                    remember_verdict=self.remember_verdict,
                )
            )

        async def run(follower: Follower) -> None:
            self._followers.add(follower)
            try:
                await follower.run()
                out.put_nowait(None)
            except asyncio.CancelledError:
                raise
            except BaseException as error:  # handed to the consumer, raised there
                out.put_nowait(error)
            finally:
                self._followers.discard(follower)

        tasks = [asyncio.ensure_future(run(f)) for f in followers]
        remaining = len(tasks)
        try:
            while remaining:
                item = await out.get()
                if item is None:
                    remaining -= 1
                elif isinstance(item, BaseException):
                    raise item
                else:
                    yield item
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    # -- cancel ------------------------------------------------------------------------

    async def cancel(self, native_ids: Sequence[str]) -> None:
        """DELETE each Job once (an array task cancels its whole Indexed Job).

        The Job then reads as CANCELLED (unless it had already finished): from the
        watch, and from queue() while this process remembers deleting it.
        """
        jobs = dict.fromkeys((ref.namespace, ref.name) for _, ref in self._refs(native_ids))
        for namespace, name in jobs:
            left = await self.api.delete(
                commands.delete(
                    commands.job_path(namespace, name), propagation=self.options.propagation_policy
                )
            )
            if left is None:
                continue  # already gone: not something we cancelled
            is_job = left.get("kind") in (None, "Job") and object_name(left) is not None
            view = None
            if is_job:
                try:
                    view = read_job(left)
                except ParseError as error:  # deleted all the same; the watch says the rest
                    log.warning(
                        "cancel: the deleted Job %s/%s is unreadable: %s", namespace, name, error
                    )
            if view is not None and view.finished:
                continue  # it had its verdict before the DELETE: nothing was cancelled
            uid = view.uid if view is not None else None
            self._cancelled[namespace, name] = uid or None
            for follower in list(self._followers):
                if follower.namespace != namespace:
                    continue
                observed_at = now()
                changed = follower.tracker.cancel_requested(name, uid or None, observed_at)
                if is_job:
                    changed += follower.tracker.job_event("MODIFIED", left, observed_at)
                await follower.emit(changed)

    async def close(self) -> None:
        for follower in list(self._followers):
            follower.out.put_nowait(BackendError("the k8s backend was closed"))
        await self.api.close()
