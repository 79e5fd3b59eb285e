"""The Kubernetes backend's I/O: REST calls, the watch loop, submit and cancel.

Configuration and authentication come from lightkube (kubeconfig files with exec plugins,
client certificates and tokens, or the in-cluster service account); requests go through
the ``httpx2`` client lightkube builds from them. The watch loop is ours, so that it can
ask for bookmarks and LIST again after every broken stream (see docs/backends/k8s.md).
All decisions are made by the pure modules (_dialect, _tracking, _manifest).
"""

from __future__ import annotations

import asyncio
import importlib
import json
import logging
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator, Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Final

import httpx2
from attrs import evolve

from hpcstate import (
    Absence,
    BackendError,
    CommandFailed,
    ConfigError,
    Observation,
    ParseError,
    SchedulerUnavailable,
    Source,
    TransportError,
)
from hpcstate.backend import AccountingQuery, BackendConfig, Capabilities, JobSpec, Submission

from ._dialect import JobRef, assess, parse_native_id, unreadable, unreadable_markers
from ._manifest import (
    SUBMIT_OPTIONS,
    build_job,
    propagation_policy,
    resolve_settings,
    submission_from_job,
)
from ._objects import (
    CONTROLLER_UID_LABELS,
    JOB_NAME_LABELS,
    MANAGED_LABEL,
    TAG_ANNOTATION,
    JobView,
    PodView,
    labelled_job_name,
    read_job,
    read_pod,
)
from ._tracking import NamespaceTracker, PodListRequest
from ._wire import decode_json, parse_list, parse_watch_event, status_message

log = logging.getLogger("hpcstate.k8s")

BACKEND_OPTIONS: Final = frozenset(
    {
        "kubeconfig",
        "context",
        "in_cluster",
        "service_account_dir",
        "propagation_policy",
        "request_timeout_s",
        "watch_timeout_s",
        "retry_initial_s",
        "retry_max_s",
    }
)
_SELECTOR_NAMES_MAX = 100  # beyond this many names, select pods by label existence
_SELECTOR_UIDS_MAX = 100  # uids per `controller-uid in (...)` (keeps the URL short)
_MANAGED_SELECTOR = f"{MANAGED_LABEL}=true"
_VERDICTS_KEPT = 100_000  # watch-carried verdicts kept for queue(), oldest dropped first


def _jobs_path(namespace: str) -> str:
    return f"apis/batch/v1/namespaces/{namespace}/jobs"


def _pods_path(namespace: str) -> str:
    return f"api/v1/namespaces/{namespace}/pods"


def _now() -> datetime:
    return datetime.now(timezone.utc)


class _Expired(Exception):
    """410 Gone: the resourceVersion is too old; LIST again."""


class _StreamBroken(Exception):
    """The watch stream ended badly (dropped, undecodable, an ERROR event)."""


class _Conflict(Exception):
    """409: the object already exists."""


class Forbidden(BackendError):
    """403: the credentials work but RBAC does not allow this call."""


def _status_message(response: httpx2.Response) -> str:
    return status_message(response.content)


class KubeApi:
    """The handful of REST calls hpcstate makes, with errors mapped to hpcstate's."""

    def __init__(self, http: httpx2.AsyncClient, *, request_timeout_s: float) -> None:
        self._http = http
        self._request_timeout_s = request_timeout_s

    async def close(self) -> None:
        await self._http.aclose()

    def _check(self, response: httpx2.Response, method: str, path: str) -> None:
        code = response.status_code
        if code < 300:
            return
        message = _status_message(response)
        where = f"{method} /{path}"
        if code == 409:
            raise _Conflict(message)
        if code == 410:
            raise _Expired(message)
        if code == 429 or code >= 500:
            raise SchedulerUnavailable(f"{where}: HTTP {code}: {message}")
        if code in (401, 403):
            error = Forbidden if code == 403 else BackendError
            raise error(
                f"{where}: HTTP {code}: {message} (check the kubeconfig's credentials and "
                "RBAC: hpcstate needs create/get/list/watch/delete on jobs and "
                "get/list/watch on pods)"
            )
        raise CommandFailed((method, f"/{path}"), code, message)

    async def _send(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        body: Any = None,
    ) -> httpx2.Response:
        try:
            return await self._http.request(method, path, params=params, json=body)
        except httpx2.TransportError as error:
            raise TransportError(f"{method} /{path}: {type(error).__name__}: {error}") from error

    async def _json(self, response: httpx2.Response, where: str) -> dict[str, Any]:
        try:
            body = decode_json(response.content, what=where)
        except ParseError as error:
            raise SchedulerUnavailable(
                f"{where}: the API server sent no readable JSON: {error}"
            ) from None
        if not isinstance(body, dict):
            raise SchedulerUnavailable(f"{where}: the API server sent {type(body).__name__}")
        return body

    async def list(
        self, path: str, *, selector: str | None = None, fields: str | None = None
    ) -> tuple[list[Any], str]:
        """All objects (following ``continue``) and the list's resourceVersion."""
        items: list[Any] = []
        params: dict[str, str] = {"limit": "500"}
        if selector:
            params["labelSelector"] = selector
        if fields:
            params["fieldSelector"] = fields
        while True:
            response = await self._send("GET", path, params=params)
            self._check(response, "GET", path)
            try:
                answer = parse_list(response.content, what=f"GET /{path}")
            except ParseError as error:
                raise SchedulerUnavailable(f"GET /{path}: not a readable list: {error}") from None
            items.extend(answer.items)
            if not answer.continue_token:
                return items, answer.resource_version
            params["continue"] = answer.continue_token

    async def get(self, path: str) -> dict[str, Any] | None:
        response = await self._send("GET", path)
        if response.status_code == 404:
            return None
        self._check(response, "GET", path)
        return await self._json(response, f"GET /{path}")

    async def create(self, path: str, body: Mapping[str, Any]) -> dict[str, Any]:
        response = await self._send("POST", path, body=body)
        self._check(response, "POST", path)
        return await self._json(response, f"POST /{path}")

    async def delete(self, path: str, *, propagation: str) -> dict[str, Any] | None:
        """The object as the server left it (None if it did not exist)."""
        response = await self._send("DELETE", path, params={"propagationPolicy": propagation})
        if response.status_code == 404:
            return None
        self._check(response, "DELETE", path)
        return await self._json(response, f"DELETE /{path}")

    async def watch(
        self, path: str, *, selector: str | None, resource_version: str, timeout_s: int
    ) -> AsyncIterator[tuple[str, dict[str, Any]]]:
        """One watch request: (type, object) pairs until the server ends the stream.

        Raises _Expired on 410 (as a status or an ERROR event) and _StreamBroken when the
        stream breaks; a clean end just stops the iteration.
        """
        params = {
            "watch": "true",
            "allowWatchBookmarks": "true",
            "timeoutSeconds": str(timeout_s),
            "resourceVersion": resource_version,
        }
        if selector:
            params["labelSelector"] = selector
        # The server ends the stream after timeout_s; silence past that means a dead link.
        timeout = httpx2.Timeout(self._request_timeout_s, read=timeout_s + 30.0)
        try:
            async with self._http.stream("GET", path, params=params, timeout=timeout) as response:
                if response.status_code != 200:
                    await response.aread()
                    self._check(response, "GET", path)
                    raise _StreamBroken(f"watch /{path}: HTTP {response.status_code}")
                async for line in response.aiter_lines():
                    if not line.strip():
                        continue
                    yield _watch_event(line, path)
        except httpx2.TransportError as error:
            raise _StreamBroken(f"watch /{path}: {type(error).__name__}: {error}") from error


def _watch_event(line: str, path: str) -> tuple[str, dict[str, Any]]:
    try:
        event = parse_watch_event(line, what=f"watch /{path}")
    except ParseError as error:
        raise _StreamBroken(str(error)) from None
    if event.type == "ERROR":
        if event.code == 410:
            raise _Expired(event.message or "resource version too old")
        raise _StreamBroken(f"watch /{path}: ERROR event {event.code}: {event.message}")
    return event.type, event.object


def _resource_version(obj: Mapping[str, Any]) -> str | None:
    meta = obj.get("metadata")
    if isinstance(meta, Mapping):
        rv = meta.get("resourceVersion")
        if isinstance(rv, str) and rv:
            return rv
    return None


def _float(options: Mapping[str, Any], key: str, default: float) -> float:
    value = options.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ConfigError(f"k8s option {key!r} must be a number, got {value!r}")
    try:
        number = float(value)
    except ValueError:
        raise ConfigError(f"k8s option {key!r} must be a number, got {value!r}") from None
    if number <= 0:
        raise ConfigError(f"k8s option {key!r} must be > 0, got {number}")
    return number


def _flag(options: Mapping[str, Any], key: str) -> bool:
    value = options.get(key, False)
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "1", "yes"):
        return True
    if isinstance(value, str) and value.lower() in ("false", "0", "no", ""):
        return False
    raise ConfigError(f"k8s option {key!r} must be true or false, got {value!r}")


def make_http_client(
    options: Mapping[str, Any], *, request_timeout_s: float
) -> tuple[httpx2.AsyncClient, str]:
    """An authenticated httpx2 client and the context's namespace, via lightkube's config."""
    from lightkube.config import client_adapter
    from lightkube.config.kubeconfig import DEFAULT_KUBECONFIG, SERVICE_ACCOUNT, KubeConfig
    from lightkube.core.exceptions import ConfigError as KubeConfigError

    account = str(options.get("service_account_dir") or SERVICE_ACCOUNT)
    path = options.get("kubeconfig")
    context = options.get("context")
    if context is not None and not isinstance(context, str):
        raise ConfigError(f"k8s option 'context' must be a string, got {context!r}")
    in_cluster = _flag(options, "in_cluster")
    what = f"in-cluster service account ({account})" if in_cluster else "Kubernetes configuration"
    try:
        if in_cluster:
            config = KubeConfig.from_service_account(service_account=account)
        elif path is not None:
            config = KubeConfig.from_file(str(path))
        else:
            config = KubeConfig.from_env(service_account=account, default_config=DEFAULT_KUBECONFIG)
        single = config.get(context_name=context)
    except KubeConfigError as error:
        raise ConfigError(f"k8s: cannot load the {what}: {error}") from None
    except KeyError as error:
        raise ConfigError(
            f"k8s: in-cluster configuration needs the environment variable {error}"
        ) from None
    except (OSError, ValueError) as error:
        raise ConfigError(f"k8s: cannot read the kubeconfig {path}: {error}") from None
    if single is None:
        raise ConfigError("k8s: the kubeconfig has no current context; set options['context']")
    if single.user is None:
        raise ConfigError(f"k8s: kubeconfig context {single.context_name!r} names no user")
    params = client_adapter.ConnectionParams(timeout=httpx2.Timeout(request_timeout_s))
    try:
        http = client_adapter.AsyncClient(single, params)
    except (KubeConfigError, OSError, ValueError) as error:
        raise ConfigError(f"k8s: bad cluster or user settings in the kubeconfig: {error}") from None
    return http, single.namespace


def _load_manifest(value: str) -> dict[str, Any]:
    """options['manifest']: a Job as JSON text, or the path of a JSON or YAML file."""
    text = value.strip()
    origin = "options['manifest']"
    if not text.startswith("{"):
        path = Path(text).expanduser()
        origin = str(path)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as error:
            raise ConfigError(f"cannot read the Job manifest {path}: {error.strerror}") from None
    try:
        if text.lstrip().startswith("{"):
            doc = json.loads(text)
        else:
            # PyYAML comes with lightkube; it ships no type hints, hence the dynamic import.
            yaml = importlib.import_module("yaml")
            doc = yaml.safe_load(text)
    except ValueError as error:
        raise ConfigError(f"the Job manifest {origin} is not valid JSON/YAML: {error}") from None
    except Exception as error:  # yaml.YAMLError does not derive from ValueError
        raise ConfigError(f"the Job manifest {origin} is not valid YAML: {error}") from None
    if not isinstance(doc, dict):
        raise ConfigError(f"the Job manifest {origin} must be one object (a Job)")
    return doc


def _check_schema(body: Mapping[str, Any]) -> None:
    """Catch type mistakes (a string where an int belongs...) before the server does,
    with the path of the field, using lightkube's typed Job model."""
    from lightkube.resources.batch_v1 import Job

    try:
        Job.from_dict(dict(body), lazy=False)
    except ValueError as error:  # msgspec.ValidationError, with the field's path
        raise ConfigError(f"the Job to create is not a valid batch/v1 Job: {error}") from None


class _Follower:
    """One namespace's watch: a tracker, the queue it feeds, and its two watch loops."""

    def __init__(
        self,
        backend: K8sBackend,
        tracker: NamespaceTracker,
        out: asyncio.Queue[Observation | BaseException | None],
    ) -> None:
        self.backend = backend
        self.tracker = tracker
        self.out = out
        self.finished = asyncio.Event()
        self.job_selector: str | None = _MANAGED_SELECTOR
        self.pod_selector: str | None = _MANAGED_SELECTOR

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
                self._send(self.tracker.pods_unreadable(_now()))
                break
            self._send(self.tracker.job_pods_listed(wanted, items, _now()))
        if self.tracker.done():
            self.finished.set()

    def _send(self, observations: Sequence[Observation]) -> None:
        for problem in self.tracker.take_problems():
            log.warning(
                "k8s watch in %s: skipping an unreadable object: %s", self.namespace, problem
            )
        for obs in observations:
            if obs.final and obs.state is not None:
                self.backend.remember_verdict(obs)
            self.out.put_nowait(obs)

    async def _pods_of(self, wanted: Sequence[PodListRequest]) -> list[Any] | None:
        """The pods of those Jobs, by controller uid, from LISTs made now (None: no
        permission). A transient error is retried: a verdict never goes without them."""
        uids = sorted({request.uid for request in wanted})
        settings = self.backend.watch_settings
        items: list[Any] = []
        for start in range(0, len(uids), _SELECTOR_UIDS_MAX):
            chunk = uids[start : start + _SELECTOR_UIDS_MAX]
            selector = f"{CONTROLLER_UID_LABELS[1]} in ({','.join(chunk)})"
            delay = settings.retry_initial_s
            while True:
                try:
                    found, _ = await self.backend.api.list(
                        _pods_path(self.namespace), selector=selector
                    )
                except Forbidden as error:
                    log.warning("cannot list pods in %s: %s", self.namespace, error)
                    return None
                except (TransportError, SchedulerUnavailable) as error:
                    log.info("listing pods in %s failed: %s; retrying", self.namespace, error)
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, settings.retry_max_s)
                    continue
                items.extend(found)
                break
        return items

    async def start(self) -> tuple[str, str | None]:
        """The first LISTs: decide the selectors, feed the tracker. Returns the RVs."""
        api = self.backend.api
        path = _jobs_path(self.namespace)
        items, job_rv = await api.list(path, selector=self.job_selector)
        missing = self.tracker.names - {obj["metadata"]["name"] for obj in items if _has_name(obj)}
        if missing:
            # Adopted Jobs do not carry hpcstate's label: watch the whole namespace.
            every, every_rv = await api.list(path)
            if any(_has_name(obj) and obj["metadata"]["name"] in missing for obj in every):
                self.job_selector, self.pod_selector = None, JOB_NAME_LABELS[1]
                items, job_rv = every, every_rv
        # The pod LIST below is newer than these Jobs: it answers the verdicts they hold.
        await self.emit(self.tracker.jobs_listed(items, _now()), list_pods=False)
        wanted = self.tracker.take_wanted_pod_lists()
        try:
            pods, pod_rv = await api.list(_pods_path(self.namespace), selector=self.pod_selector)
        except Forbidden as error:
            log.warning(
                "cannot read pods in %s (%s): judging by Job counters", self.namespace, error
            )
            await self.emit(self.tracker.pods_unreadable(_now()))
            return job_rv, None
        self._send(self.tracker.pods_listed(pods, _now()))
        await self.emit(self.tracker.job_pods_listed(wanted, (), _now()))
        return job_rv, pod_rv

    async def follow(self, kind: str, resource_version: str) -> None:
        """Watch one kind from resource_version; LIST again after any broken stream."""
        api, settings = self.backend.api, self.backend.watch_settings
        path = _jobs_path(self.namespace) if kind == "jobs" else _pods_path(self.namespace)
        selector = self.job_selector if kind == "jobs" else self.pod_selector
        delay = settings.retry_initial_s
        rv = resource_version
        streak = 0  # failures since the last event: only a repeat waits before retrying
        while True:
            try:
                if not rv:
                    items, rv = await api.list(path, selector=selector)
                    feed = self.tracker.jobs_listed if kind == "jobs" else self.tracker.pods_listed
                    await self.emit(feed(items, _now()))
                events = 0
                async for event_type, obj in api.watch(
                    path, selector=selector, resource_version=rv, timeout_s=settings.timeout_s
                ):
                    events += 1
                    streak, delay = 0, settings.retry_initial_s
                    rv = _resource_version(obj) or rv
                    if event_type == "BOOKMARK":
                        continue
                    if kind == "jobs":
                        await self.emit(self.tracker.job_event(event_type, obj, _now()))
                    else:
                        await self.emit(self.tracker.pod_event(event_type, obj, _now()))
                # A clean end (timeoutSeconds): resume from the last resourceVersion seen.
                if events == 0:
                    await asyncio.sleep(delay)
                continue
            except _Expired as error:
                log.info("watch %s in %s: %s; listing again", kind, self.namespace, error)
            except (_StreamBroken, TransportError, SchedulerUnavailable) as error:
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


def _has_name(obj: object) -> bool:
    return (
        isinstance(obj, dict)
        and isinstance(obj.get("metadata"), dict)
        and isinstance(obj["metadata"].get("name"), str)
    )


def _pod_or_error(obj: object) -> PodView | ParseError:
    try:
        return read_pod(obj)
    except ParseError as error:
        return error


class _WatchSettings:
    def __init__(self, options: Mapping[str, Any]) -> None:
        self.timeout_s = int(_float(options, "watch_timeout_s", 290.0))
        self.retry_initial_s = _float(options, "retry_initial_s", 0.5)
        self.retry_max_s = _float(options, "retry_max_s", 30.0)


class K8sBackend:
    """hpcstate's Kubernetes backend: batch/v1 Jobs, watched (push) or listed (queue)."""

    def __init__(
        self,
        *,
        api: KubeApi,
        namespace: str,
        options: Mapping[str, Any],
        capabilities: Capabilities,
        name: str = "k8s",
    ) -> None:
        unknown = sorted(set(options) - BACKEND_OPTIONS - SUBMIT_OPTIONS)
        if unknown:
            known = ", ".join(sorted(BACKEND_OPTIONS | SUBMIT_OPTIONS))
            raise ConfigError(f"unknown k8s option(s) {', '.join(unknown)}; known: {known}")
        self.name = name
        self.capabilities = capabilities
        self.api = api
        self.namespace = str(options.get("namespace") or namespace)
        self.watch_settings = _WatchSettings(options)
        self._defaults = {k: v for k, v in options.items() if k in SUBMIT_OPTIONS}
        self._propagation = propagation_policy(options.get("propagation_policy"))
        # What this process learned: uids of the Jobs it created, Jobs it deleted on request.
        self._uids: dict[tuple[str, str], str] = {}
        self._cancelled: dict[tuple[str, str], str | None] = {}
        self._unlabeled: set[tuple[str, str]] = set()  # adopted Jobs without our label
        self._followers: set[_Follower] = set()
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
        options = dict(config.options)
        timeout = _float(options, "request_timeout_s", 30.0)
        http, namespace = make_http_client(options, request_timeout_s=timeout)
        return cls(
            api=KubeApi(http, request_timeout_s=timeout),
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
        manifest = _load_manifest(str(manifest_option)) if manifest_option else None
        defaults = {k: v for k, v in self._defaults.items() if k != "manifest"}
        settings = resolve_settings(defaults, options, namespace=self.namespace)
        body = build_job(spec, tag=tag, settings=settings, manifest=manifest)
        _check_schema(body)
        namespace, name = body["metadata"]["namespace"], body["metadata"]["name"]
        path = _jobs_path(namespace)
        try:
            created = await self.api.create(path, body)
        except _Conflict:
            # A retried submit (or a name clash): the Job must carry our tag to be ours.
            created = await self._existing(namespace, name, tag)
        submission = submission_from_job(created)
        uid = read_job(created).uid
        if uid:
            self._uids[namespace, name] = uid
        return submission

    async def _existing(self, namespace: str, name: str, tag: str) -> dict[str, Any]:
        found = await self.api.get(f"{_jobs_path(namespace)}/{name}")
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

    def _cancel_requested(self, ref: JobRef, uid: str | None) -> bool:
        key = (ref.namespace, ref.name)
        if key not in self._cancelled:
            return False
        wanted = self._cancelled[key]
        return wanted is None or uid is None or wanted == uid

    async def _pods_for(self, namespace: str, names: set[str]) -> list[Any] | None:
        if len(names) <= _SELECTOR_NAMES_MAX and all(len(n) <= 63 for n in names):
            selector = f"{JOB_NAME_LABELS[1]} in ({','.join(sorted(names))})"
        else:
            selector = JOB_NAME_LABELS[1]
        try:
            items, _ = await self.api.list(_pods_path(namespace), selector=selector)
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
        path = _jobs_path(namespace)
        if len(names) == 1:
            [name] = names
            items, _ = await self.api.list(path, fields=f"metadata.name={name}")
            return items
        if any((namespace, name) in self._unlabeled for name in names):
            items, _ = await self.api.list(path)
            return items
        items, _ = await self.api.list(path, selector=_MANAGED_SELECTOR)
        missing = names - {obj["metadata"]["name"] for obj in items if _has_name(obj)}
        if missing:
            every, _ = await self.api.list(path)
            adopted = [o for o in every if _has_name(o) and o["metadata"]["name"] in missing]
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
            pod_objects = await self._pods_for(namespace, names)
            observed_at = _now()
            problems: dict[str, list[str]] = {}
            views: dict[str, JobView] = {}
            for obj in jobs:
                if _has_name(obj) and obj["metadata"]["name"] in names:
                    name = obj["metadata"]["name"]
                    try:
                        views[name] = read_job(obj)
                    except ParseError as error:
                        self._skip(problems, namespace, name, error)
            pods = (
                None if pod_objects is None else self._read_pods(namespace, pod_objects, problems)
            )
            for native_id, ref in group:
                results[native_id] = self._observe(
                    native_id, ref, views, pods, problems.get(ref.name, []), observed_at
                )
        return [results[native_id] for native_id in native_ids]

    def _skip(
        self, problems: dict[str, list[str]], namespace: str, name: str, error: ParseError
    ) -> None:
        log.warning("k8s queue in %s: skipping an unreadable object: %s", namespace, error)
        problems.setdefault(name, []).append(str(error))

    def _read_pods(
        self, namespace: str, objects: Sequence[Any], problems: dict[str, list[str]]
    ) -> list[PodView]:
        pods = []
        for obj in objects:
            pod = _pod_or_error(obj)
            if isinstance(pod, ParseError):
                self._skip(problems, namespace, labelled_job_name(obj) or "", pod)
            else:
                pods.append(pod)
        return pods

    def _observe(
        self,
        native_id: str,
        ref: JobRef,
        views: Mapping[str, JobView],
        pods: Sequence[PodView] | None,
        problems: Sequence[str],
        observed_at: datetime,
    ) -> Observation:
        kept = self._verdicts.get(native_id)
        if kept is not None:
            # Told by a watch event (DELETED included): never re-derived from a later LIST.
            return kept
        job = views.get(ref.name)
        if job is None and problems:
            return unreadable(native_id, problems, observed_at=observed_at)  # it exists
        known = self._uids.get((ref.namespace, ref.name))
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
                cancel_requested=self._cancel_requested(ref, job.uid if job else None),
            ).observation
        except ParseError as error:
            log.warning("k8s queue: cannot judge %s: %s", native_id, error)
            return unreadable(native_id, [*problems, str(error)], observed_at=observed_at)
        if problems:
            obs = evolve(obs, markers=(*obs.markers, *unreadable_markers(problems)))
        return obs

    async def accounting(self, query: AccountingQuery) -> Sequence[Observation]:
        """Kubernetes keeps no accounting: verdicts are final from the Job's conditions."""
        observed_at = _now()
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
            followers.append(_Follower(self, tracker, out))

        async def run(follower: _Follower) -> None:
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
                f"{_jobs_path(namespace)}/{name}", propagation=self._propagation
            )
            if left is None:
                continue  # already gone: not something we cancelled
            is_job = left.get("kind") in (None, "Job") and _has_name(left)
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
                observed_at = _now()
                changed = follower.tracker.cancel_requested(name, uid or None, observed_at)
                if is_job:
                    changed += follower.tracker.job_event("MODIFIED", left, observed_at)
                await follower.emit(changed)

    async def close(self) -> None:
        for follower in list(self._followers):
            follower.out.put_nowait(BackendError("the k8s backend was closed"))
        await self.api.close()
