"""Parsing the API server's answers: bytes -> JSON -> frozen views of Jobs and Pods.

Pure: no I/O, no clock. Two layers, each returning a result or raising
:class:`hpcstate.ParseError` naming what was being read (any other exception is a bug):

- the wire: JSON bodies, LIST bodies and watch-stream lines, whatever the bytes:
  malformed JSON, a value of the wrong shape, and JSON nested deeper than Python's
  decoder can recurse (an answer nested 1,000 levels deep makes ``json.loads`` raise
  ``RecursionError``, which is not a ``ValueError``);
- the objects: Job and Pod JSON -> :class:`JobView` / :class:`PodView`, naming the object
  and the field. Unknown fields are ignored, missing optional ones are ``None``/empty, so
  objects from Kubernetes 1.26 to 1.37 all read.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta, timezone
from typing import Any, Final

from attrs import frozen

from hpcstate import ParseError

# -- the wire: bytes -> JSON ---------------------------------------------------------------

#: Watch event types the API server sends (ERROR carries a Status object).
EVENT_TYPES: Final = frozenset({"ADDED", "MODIFIED", "DELETED", "BOOKMARK", "ERROR"})


def _shown(text: str | bytes) -> str:
    shown = text[:120]
    return shown.decode("utf-8", "replace") if isinstance(shown, bytes) else shown


def decode_json(text: str | bytes, *, what: str) -> Any:
    """One JSON document. Raises ParseError: bad JSON, or nested too deep to decode."""
    try:
        return json.loads(text)
    except RecursionError:
        raise ParseError(
            "JSON nested too deep to decode", command=what, line=_shown(text)
        ) from None
    except ValueError as error:  # UnicodeDecodeError is a ValueError
        raise ParseError(f"not JSON: {error}", command=what, line=_shown(text)) from None


@frozen(kw_only=True)
class ListAnswer:
    """A LIST response: its items (plain JSON), resourceVersion and continue token."""

    items: tuple[Any, ...]
    resource_version: str
    continue_token: str


def parse_list(text: str | bytes, *, what: str = "LIST") -> ListAnswer:
    """A ``...List`` body. Raises ParseError."""
    body = decode_json(text, what=what)
    if not isinstance(body, dict):
        raise ParseError(f"expected a List object, got {type(body).__name__}", command=what)
    items, meta = body.get("items"), body.get("metadata")
    if items is None:
        items = []  # an empty list may be sent as "items": null
    if not isinstance(items, list) or not isinstance(meta, dict):
        raise ParseError("not a list response (items, metadata)", command=what)
    rv, token = meta.get("resourceVersion"), meta.get("continue")
    if rv is not None and not isinstance(rv, str):
        raise ParseError("metadata.resourceVersion is not a string", command=what, field="rv")
    if token is not None and not isinstance(token, str):
        raise ParseError("metadata.continue is not a string", command=what, field="continue")
    return ListAnswer(items=tuple(items), resource_version=rv or "", continue_token=token or "")


@frozen(kw_only=True)
class WatchEvent:
    """One line of a watch stream: ``type`` and ``object``. An ERROR event's object is a
    Status (``code`` says 410 for an expired resourceVersion)."""

    type: str
    object: dict[str, Any]

    @property
    def code(self) -> int | None:
        code = self.object.get("code")
        return code if isinstance(code, int) and not isinstance(code, bool) else None

    @property
    def message(self) -> str:
        message = self.object.get("message")
        return message if isinstance(message, str) else ""


def parse_watch_event(line: str | bytes, *, what: str = "watch") -> WatchEvent:
    """One watch-stream line. Raises ParseError."""
    event = decode_json(line, what=what)
    if not isinstance(event, dict):
        raise ParseError(
            f"a watch event must be an object, got {type(event).__name__}", command=what
        )
    kind, obj = event.get("type"), event.get("object")
    if not isinstance(kind, str) or not isinstance(obj, dict):
        raise ParseError("a watch event needs a type and an object", command=what)
    if kind not in EVENT_TYPES:
        raise ParseError(f"unknown watch event type {kind[:40]!r}", command=what, field="type")
    return WatchEvent(type=kind, object=obj)


def status_message(text: str | bytes) -> str:
    """The ``message`` of an error answer (a Status), else the start of the text."""
    try:
        body = decode_json(text, what="error answer")
    except ParseError:
        return _shown(text)
    message = body.get("message") if isinstance(body, dict) else None
    return message if isinstance(message, str) else _shown(text)


# -- the objects: JSON -> views ------------------------------------------------------------

# Labels and annotations the Job controller puts on pods (old and new spellings).
CONTROLLER_UID_LABELS = ("batch.kubernetes.io/controller-uid", "controller-uid")
JOB_NAME_LABELS = ("batch.kubernetes.io/job-name", "job-name")
COMPLETION_INDEX_KEYS = ("batch.kubernetes.io/job-completion-index",)

# hpcstate's own labels and annotations.
MANAGED_LABEL = "hpcstate.io/managed"
TAG_HASH_LABEL = "hpcstate.io/tag-hash"
TAG_ANNOTATION = "hpcstate.io/tag"
WRAPPER_ANNOTATION = "hpcstate.io/wrapper"
CONTAINER_ANNOTATION = "hpcstate.io/container"

# re.ASCII: Kubernetes writes ASCII digits; "\d" alone would also take "٣" or "３".
_TIME = re.compile(
    r"\A(\d{4})-(\d\d)-(\d\d)[Tt ](\d\d):(\d\d):(\d\d)(?:\.(\d{1,9}))?(Z|z|[+-]\d\d:\d\d)\Z",
    re.ASCII,
)
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_INDEX_PART = re.compile(r"\A(\d{1,9})(?:-(\d{1,9}))?\Z", re.ASCII)
MAX_INDEXES = 1_000_000


class _Where:
    """Names the object being read, for error messages: 'Job default/x' + field path."""

    def __init__(self, what: str) -> None:
        self.what = what

    def error(self, message: str, path: str, value: object = None) -> ParseError:
        shown = None if value is None else _short(value)
        return ParseError(message, command=self.what, field=path, line=shown)


def parse_time(value: object, *, where: _Where, path: str) -> datetime | None:
    """An RFC 3339 timestamp as Kubernetes writes it; the Unix epoch means 'not set'."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise where.error("expected an RFC 3339 timestamp", path, value)
    match = _TIME.match(value.strip())
    if match is None:
        raise where.error("expected an RFC 3339 timestamp", path, value)
    year, month, day, hour, minute, second = (int(match.group(i)) for i in range(1, 7))
    fraction = match.group(7) or ""
    micro = int((fraction + "000000")[:6]) if fraction else 0
    zone = match.group(8)
    if zone in ("Z", "z"):
        tz = timezone.utc
    else:
        sign = 1 if zone[0] == "+" else -1
        hours, minutes = int(zone[1:3]), int(zone[4:6])
        if hours > 23 or minutes > 59:
            raise where.error("timestamp has a bad UTC offset", path, value)
        tz = timezone(sign * timedelta(hours=hours, minutes=minutes))
    try:
        stamp = datetime(year, month, day, hour, minute, second, micro, tzinfo=tz)
        stamp = stamp.astimezone(timezone.utc)
    except (ValueError, OverflowError):
        raise where.error("timestamp is not a real date", path, value) from None
    # containerd writes 1970-01-01 for "never started" (StartError).
    return None if stamp == _EPOCH else stamp


def parse_index_set(
    text: str, *, where: _Where | None = None, path: str = "indexes"
) -> frozenset[int]:
    """Kubernetes' compact index list: ``"1,3-5,7"`` (``completedIndexes``/``failedIndexes``)."""
    where = where or _Where("index list")
    stripped = text.strip()
    if not stripped:
        return frozenset()
    found: set[int] = set()
    for part in stripped.split(","):
        match = _INDEX_PART.match(part.strip())
        if match is None:
            raise where.error("bad index list (expected N or N-M, comma separated)", path, text)
        first = int(match.group(1))
        last = int(match.group(2)) if match.group(2) is not None else first
        if last < first:
            raise where.error("index range goes backwards", path, text)
        if last - first + 1 + len(found) > MAX_INDEXES:
            raise where.error(f"index list has more than {MAX_INDEXES} entries", path, text)
        found.update(range(first, last + 1))
    return frozenset(found)


# -- small typed accessors ---------------------------------------------------------------


def _mapping(value: object, where: _Where, path: str) -> Mapping[str, object]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise where.error("expected an object", path, value)
    return value


def _sequence(value: object, where: _Where, path: str) -> Sequence[object]:
    if value is None:
        return ()
    if not isinstance(value, list | tuple):
        raise where.error("expected a list", path, value)
    return value


def _text(value: object, where: _Where, path: str) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise where.error("expected a string", path, value)
    return value


def _count(value: object, where: _Where, path: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise where.error("expected a non-negative integer", path, value)
    return value


def _string_map(value: object, where: _Where, path: str) -> Mapping[str, str]:
    mapping = _mapping(value, where, path)
    result: dict[str, str] = {}
    for key, item in mapping.items():
        if not isinstance(key, str):
            raise where.error("expected string keys", path, key)
        result[key] = _text(item, where, f"{path}.{key}")
    return result


def _short(value: object) -> str:
    """The value as shown in an error: repr, cut at 120 characters."""
    if isinstance(value, int) and value.bit_length() > 256:
        return f"<a {value.bit_length()}-bit integer>"  # repr() of a huge int can raise
    try:
        text = repr(value)
    except (ValueError, RecursionError):  # deeply nested containers
        return f"<an unprintable {type(value).__name__}>"
    return text if len(text) <= 120 else text[:120] + "..."


def object_name(obj: object) -> str | None:
    """``metadata.name`` of a JSON object, if it has one (nothing else is read)."""
    if isinstance(obj, Mapping):
        meta = obj.get("metadata")
        if isinstance(meta, Mapping):
            name = meta.get("name")
            if isinstance(name, str):
                return name
    return None


def resource_version(obj: object) -> str | None:
    """``metadata.resourceVersion`` of a JSON object, if it is a non-empty string."""
    if isinstance(obj, Mapping):
        meta = obj.get("metadata")
        if isinstance(meta, Mapping):
            rv = meta.get("resourceVersion")
            if isinstance(rv, str) and rv:
                return rv
    return None


def labelled_job_name(obj: object) -> str | None:
    """The Job a pod belongs to, by its job-name label, without reading the rest of it
    (so a pod that cannot be read can still be blamed on its Job)."""
    if isinstance(obj, Mapping):
        meta = obj.get("metadata")
        labels = meta.get("labels") if isinstance(meta, Mapping) else None
        if isinstance(labels, Mapping):
            for key in JOB_NAME_LABELS:
                value = labels.get(key)
                if isinstance(value, str) and value:
                    return value
    return None


def _first(mapping: Mapping[str, str], keys: Sequence[str]) -> str | None:
    for key in keys:
        if mapping.get(key):
            return mapping[key]
    return None


# -- views -------------------------------------------------------------------------------


@frozen(kw_only=True)
class Condition:
    type: str
    status: str
    reason: str = ""
    message: str = ""
    last_transition: datetime | None = None

    @property
    def true(self) -> bool:
        return self.status == "True"

    def describe(self) -> str:
        text = self.type
        if self.reason:
            text += f" ({self.reason}"
            text += f": {self.message})" if self.message else ")"
        elif self.message:
            text += f" ({self.message})"
        return text


def _conditions(value: object, where: _Where, path: str) -> tuple[Condition, ...]:
    result = []
    for i, raw in enumerate(_sequence(value, where, path)):
        item = _mapping(raw, where, f"{path}[{i}]")
        ctype = _text(item.get("type"), where, f"{path}[{i}].type")
        if not ctype:
            raise where.error("condition has no type", f"{path}[{i}].type")
        result.append(
            Condition(
                type=ctype,
                status=_text(item.get("status"), where, f"{path}[{i}].status"),
                reason=_text(item.get("reason"), where, f"{path}[{i}].reason"),
                message=_text(item.get("message"), where, f"{path}[{i}].message"),
                last_transition=parse_time(
                    item.get("lastTransitionTime"),
                    where=where,
                    path=f"{path}[{i}].lastTransitionTime",
                ),
            )
        )
    return tuple(result)


@frozen(kw_only=True)
class ObjectMeta:
    namespace: str
    name: str
    uid: str
    resource_version: str
    created_at: datetime | None
    deleting_since: datetime | None  # metadata.deletionTimestamp
    deletion_grace_s: int | None  # metadata.deletionGracePeriodSeconds
    labels: Mapping[str, str]
    annotations: Mapping[str, str]

    @property
    def deletion_requested_at(self) -> datetime | None:
        """When someone asked to delete the object. A pod's deletionTimestamp is that time
        plus its grace period (when it will be force-killed), not the request time."""
        if self.deleting_since is None:
            return None
        try:
            return self.deleting_since - timedelta(seconds=self.deletion_grace_s or 0)
        except OverflowError:  # an absurd grace period: asked "long ago"
            return datetime.min.replace(tzinfo=timezone.utc)


def _meta(obj: Mapping[str, object], where: _Where) -> ObjectMeta:
    meta = _mapping(obj.get("metadata"), where, "metadata")
    name = _text(meta.get("name"), where, "metadata.name")
    if not name:
        raise where.error("object has no name", "metadata.name")
    return ObjectMeta(
        namespace=_text(meta.get("namespace"), where, "metadata.namespace"),
        name=name,
        uid=_text(meta.get("uid"), where, "metadata.uid"),
        resource_version=_text(meta.get("resourceVersion"), where, "metadata.resourceVersion"),
        created_at=parse_time(
            meta.get("creationTimestamp"), where=where, path="metadata.creationTimestamp"
        ),
        deleting_since=parse_time(
            meta.get("deletionTimestamp"), where=where, path="metadata.deletionTimestamp"
        ),
        deletion_grace_s=_count(
            meta.get("deletionGracePeriodSeconds"), where, "metadata.deletionGracePeriodSeconds"
        ),
        labels=_string_map(meta.get("labels"), where, "metadata.labels"),
        annotations=_string_map(meta.get("annotations"), where, "metadata.annotations"),
    )


def _where_for(kind: str, obj: object) -> _Where:
    # Best effort "Job ns/name" before the object is validated.
    if isinstance(obj, Mapping):
        meta = obj.get("metadata")
        if isinstance(meta, Mapping):
            ns, name = meta.get("namespace"), meta.get("name")
            if isinstance(ns, str) and isinstance(name, str):
                return _Where(f"{kind} {ns}/{name}")
            if isinstance(name, str):
                return _Where(f"{kind} {name}")
    return _Where(kind)


@frozen(kw_only=True)
class JobView:
    """What hpcstate reads from one batch/v1 Job."""

    meta: ObjectMeta
    indexed: bool
    completions: int | None
    parallelism: int | None
    backoff_limit: int | None
    backoff_limit_per_index: int | None
    active_deadline_s: int | None
    suspend: bool
    container: str | None  # the payload's container name (hpcstate.io/container annotation)
    wrapper: bool  # created with hpcstate's entrypoint wrapper
    conditions: tuple[Condition, ...]
    active: int
    ready: int | None
    terminating: int | None  # 1.28+
    succeeded: int
    failed: int
    completed_indexes: frozenset[int]
    failed_indexes: frozenset[int] | None  # only with backoffLimitPerIndex
    start_time: datetime | None
    completion_time: datetime | None

    @property
    def namespace(self) -> str:
        return self.meta.namespace

    @property
    def name(self) -> str:
        return self.meta.name

    @property
    def uid(self) -> str:
        return self.meta.uid

    def condition(self, ctype: str) -> Condition | None:
        """The condition of that type if its status is "True"."""
        for cond in self.conditions:
            if cond.type == ctype and cond.true:
                return cond
        return None

    @property
    def finished(self) -> bool:
        return self.condition("Complete") is not None or self.condition("Failed") is not None


def read_job(obj: object) -> JobView:
    """Read a batch/v1 Job object. Raises ParseError."""
    where = _where_for("Job", obj)
    if not isinstance(obj, Mapping):
        raise where.error("expected a Job object", "", obj)
    kind = obj.get("kind")
    if kind is not None and kind != "Job":
        raise where.error("expected kind Job", "kind", kind)
    meta = _meta(obj, where)
    spec = _mapping(obj.get("spec"), where, "spec")
    status = _mapping(obj.get("status"), where, "status")
    template = _mapping(spec.get("template"), where, "spec.template")
    template_meta = _mapping(template.get("metadata"), where, "spec.template.metadata")
    template_annotations = _string_map(
        template_meta.get("annotations"), where, "spec.template.metadata.annotations"
    )
    annotations = {**template_annotations, **meta.annotations}
    mode = _text(spec.get("completionMode"), where, "spec.completionMode") or "NonIndexed"
    suspend = spec.get("suspend")
    if suspend is not None and not isinstance(suspend, bool):
        raise where.error("expected a boolean", "spec.suspend", suspend)
    failed_indexes_text = status.get("failedIndexes")
    return JobView(
        meta=meta,
        indexed=mode == "Indexed",
        completions=_count(spec.get("completions"), where, "spec.completions"),
        parallelism=_count(spec.get("parallelism"), where, "spec.parallelism"),
        backoff_limit=_count(spec.get("backoffLimit"), where, "spec.backoffLimit"),
        backoff_limit_per_index=_count(
            spec.get("backoffLimitPerIndex"), where, "spec.backoffLimitPerIndex"
        ),
        active_deadline_s=_count(
            spec.get("activeDeadlineSeconds"), where, "spec.activeDeadlineSeconds"
        ),
        suspend=bool(suspend),
        container=annotations.get(CONTAINER_ANNOTATION) or None,
        wrapper=annotations.get(WRAPPER_ANNOTATION) == "true",
        conditions=_conditions(status.get("conditions"), where, "status.conditions"),
        active=_count(status.get("active"), where, "status.active") or 0,
        ready=_count(status.get("ready"), where, "status.ready"),
        terminating=_count(status.get("terminating"), where, "status.terminating"),
        succeeded=_count(status.get("succeeded"), where, "status.succeeded") or 0,
        failed=_count(status.get("failed"), where, "status.failed") or 0,
        completed_indexes=parse_index_set(
            _text(status.get("completedIndexes"), where, "status.completedIndexes"),
            where=where,
            path="status.completedIndexes",
        ),
        failed_indexes=None
        if failed_indexes_text is None
        else parse_index_set(
            _text(failed_indexes_text, where, "status.failedIndexes"),
            where=where,
            path="status.failedIndexes",
        ),
        start_time=parse_time(status.get("startTime"), where=where, path="status.startTime"),
        completion_time=parse_time(
            status.get("completionTime"), where=where, path="status.completionTime"
        ),
    )


@frozen(kw_only=True)
class Termination:
    """One container's ``state.terminated`` (or ``lastState.terminated``)."""

    container: str
    init: bool
    exit_code: int | None
    reason: str
    message: str
    started_at: datetime | None
    finished_at: datetime | None


@frozen(kw_only=True)
class PodView:
    """What hpcstate reads from one pod of a Job."""

    meta: ObjectMeta
    job_uid: str | None
    job_name: str | None
    index: int | None  # completion index (Indexed Jobs)
    phase: str
    reason: str  # status.reason: Evicted, DeadlineExceeded, Terminated...
    message: str
    node: str | None
    disruption: Condition | None  # DisruptionTarget=True: the infrastructure killed it
    unschedulable: Condition | None  # PodScheduled=False, reason Unschedulable
    running: bool  # the payload container is running now
    started_at: datetime | None  # when the payload container (first) started
    waiting: str  # the payload container's waiting reason (ImagePullBackOff...)
    waiting_message: str
    termination: Termination | None  # how the payload (or a failed init container) ended
    wrapper: bool
    ended_before_deletion: bool = False  # a watch saw it end before anyone deleted it
    # A watch saw a deletion asked for while it still ran (the Job controller killing a
    # sibling, a cancel, GC): the final grace-0 DELETE rewrites deletionTimestamp, so the
    # last object alone can make the kill look like the pod's own end.
    deleted_while_running: bool = False

    @property
    def name(self) -> str:
        return self.meta.name

    @property
    def uid(self) -> str:
        return self.meta.uid

    @property
    def ended(self) -> bool:
        return self.phase in ("Succeeded", "Failed")

    @property
    def ran(self) -> bool:
        """The pod got as far as starting (or ending) its payload."""
        return self.running or self.ended or self.started_at is not None

    @property
    def finished_at(self) -> datetime | None:
        return self.termination.finished_at if self.termination is not None else None


def _termination(
    raw: Mapping[str, object], *, name: str, init: bool, where: _Where, path: str
) -> Termination:
    exit_code = raw.get("exitCode")
    if exit_code is not None and (isinstance(exit_code, bool) or not isinstance(exit_code, int)):
        raise where.error("expected an integer", f"{path}.exitCode", exit_code)
    return Termination(
        container=name,
        init=init,
        exit_code=exit_code,
        reason=_text(raw.get("reason"), where, f"{path}.reason"),
        message=_text(raw.get("message"), where, f"{path}.message"),
        started_at=parse_time(raw.get("startedAt"), where=where, path=f"{path}.startedAt"),
        finished_at=parse_time(raw.get("finishedAt"), where=where, path=f"{path}.finishedAt"),
    )


@frozen
class _ContainerState:
    name: str
    running_since: datetime | None
    running: bool
    waiting: str
    waiting_message: str
    terminated: Termination | None


def _container_states(
    status: Mapping[str, object], key: str, *, init: bool, where: _Where
) -> list[_ContainerState]:
    states = []
    for i, raw in enumerate(_sequence(status.get(key), where, f"status.{key}")):
        path = f"status.{key}[{i}]"
        entry = _mapping(raw, where, path)
        name = _text(entry.get("name"), where, f"{path}.name")
        state = _mapping(entry.get("state"), where, f"{path}.state")
        last = _mapping(entry.get("lastState"), where, f"{path}.lastState")
        running = state.get("running")
        running_map = _mapping(running, where, f"{path}.state.running")
        waiting = _mapping(state.get("waiting"), where, f"{path}.state.waiting")
        terminated: Termination | None = None
        if state.get("terminated") is not None:
            terminated = _termination(
                _mapping(state.get("terminated"), where, f"{path}.state.terminated"),
                name=name,
                init=init,
                where=where,
                path=f"{path}.state.terminated",
            )
        elif last.get("terminated") is not None:
            # restartPolicy OnFailure: the pod lives on, the previous attempt's end is here.
            terminated = _termination(
                _mapping(last.get("terminated"), where, f"{path}.lastState.terminated"),
                name=name,
                init=init,
                where=where,
                path=f"{path}.lastState.terminated",
            )
        states.append(
            _ContainerState(
                name=name,
                running=running is not None,
                running_since=parse_time(
                    running_map.get("startedAt"),
                    where=where,
                    path=f"{path}.state.running.startedAt",
                ),
                waiting=_text(waiting.get("reason"), where, f"{path}.state.waiting.reason"),
                waiting_message=_text(
                    waiting.get("message"), where, f"{path}.state.waiting.message"
                ),
                terminated=terminated,
            )
        )
    return states


def _owner_uid(meta: Mapping[str, object], where: _Where) -> str | None:
    for i, raw in enumerate(
        _sequence(meta.get("ownerReferences"), where, "metadata.ownerReferences")
    ):
        ref = _mapping(raw, where, f"metadata.ownerReferences[{i}]")
        if ref.get("kind") == "Job" and ref.get("controller") is True:
            return _text(ref.get("uid"), where, f"metadata.ownerReferences[{i}].uid") or None
    return None


def _index(meta: ObjectMeta, where: _Where) -> int | None:
    text = _first(meta.annotations, COMPLETION_INDEX_KEYS) or _first(
        meta.labels, COMPLETION_INDEX_KEYS
    )
    if text is None:
        return None
    # ASCII only: "²".isdigit() and "٣".isdecimal() are True, and Kubernetes writes neither.
    if not (text.isascii() and text.isdigit()) or len(text) > 9:
        raise where.error("completion index is not a number", COMPLETION_INDEX_KEYS[0], text)
    return int(text)


def read_pod(obj: object) -> PodView:
    """Read a core/v1 Pod object of a Job. Raises ParseError."""
    where = _where_for("Pod", obj)
    if not isinstance(obj, Mapping):
        raise where.error("expected a Pod object", "", obj)
    kind = obj.get("kind")
    if kind is not None and kind != "Pod":
        raise where.error("expected kind Pod", "kind", kind)
    meta = _meta(obj, where)
    raw_meta = _mapping(obj.get("metadata"), where, "metadata")
    spec = _mapping(obj.get("spec"), where, "spec")
    status = _mapping(obj.get("status"), where, "status")
    conditions = _conditions(status.get("conditions"), where, "status.conditions")

    spec_names = []
    for i, raw in enumerate(_sequence(spec.get("containers"), where, "spec.containers")):
        spec_names.append(
            _text(
                _mapping(raw, where, f"spec.containers[{i}]").get("name"),
                where,
                f"spec.containers[{i}].name",
            )
        )
    main_name = meta.annotations.get(CONTAINER_ANNOTATION) or (
        spec_names[0] if spec_names else None
    )
    mains = _container_states(status, "containerStatuses", init=False, where=where)
    inits = _container_states(status, "initContainerStatuses", init=True, where=where)
    main = next((c for c in mains if c.name == main_name), mains[0] if mains else None)

    termination = main.terminated if main is not None else None
    if termination is None:
        # The payload never ran: a failed init container says why.
        termination = next(
            (
                c.terminated
                for c in inits
                if c.terminated is not None
                and (
                    c.terminated.exit_code not in (0, None)
                    or c.terminated.reason not in ("", "Completed")
                )
            ),
            None,
        )

    disruption = next((c for c in conditions if c.type == "DisruptionTarget" and c.true), None)
    unschedulable = next(
        (
            c
            for c in conditions
            if c.type == "PodScheduled" and c.status == "False" and c.reason == "Unschedulable"
        ),
        None,
    )
    started = None
    if main is not None:
        started = main.running_since or (termination.started_at if termination else None)
    return PodView(
        meta=meta,
        job_uid=_first(meta.labels, CONTROLLER_UID_LABELS) or _owner_uid(raw_meta, where),
        job_name=_first(meta.labels, JOB_NAME_LABELS),
        index=_index(meta, where),
        phase=_text(status.get("phase"), where, "status.phase"),
        reason=_text(status.get("reason"), where, "status.reason"),
        message=_text(status.get("message"), where, "status.message"),
        node=_text(spec.get("nodeName"), where, "spec.nodeName") or None,
        disruption=disruption,
        unschedulable=unschedulable,
        running=main is not None and main.running,
        started_at=started,
        waiting=main.waiting if main is not None else "",
        waiting_message=main.waiting_message if main is not None else "",
        termination=termination,
        wrapper=meta.annotations.get(WRAPPER_ANNOTATION) == "true",
    )
