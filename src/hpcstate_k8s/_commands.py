"""The API requests hpcstate makes, as pure records: method, path, query and body.

Pure: no I/O. Each builder returns a :class:`Request`; ``_io_rest.KubeApi`` sends it and
maps the answer. The Job body a submit POSTs is built by ``_manifest``; the label
selectors that keep every LIST and watch to hpcstate's own objects are decided here.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final

from attrs import evolve, field, frozen

from ._parse import CONTROLLER_UID_LABELS, JOB_NAME_LABELS, MANAGED_LABEL, TAG_HASH_LABEL

#: Objects per LIST page (the API server's ``limit``; ``continue`` fetches the rest).
PAGE_SIZE: Final = 500
#: Beyond this many Job names, a pod LIST selects by the job-name label's existence.
SELECTOR_NAMES_MAX: Final = 100
#: Controller uids per ``controller-uid in (...)`` selector (keeps the URL short).
SELECTOR_UIDS_MAX: Final = 100
#: The label selector of everything hpcstate created.
MANAGED_SELECTOR: Final = f"{MANAGED_LABEL}=true"
#: A watch stream that stays silent this long past its ``timeoutSeconds`` is a dead link.
WATCH_SILENCE_MARGIN_S: Final = 30.0


def _params(value: Mapping[str, str]) -> Mapping[str, str]:
    return dict(value)


@frozen(kw_only=True)
class Request:
    """One REST call. ``path`` has no leading slash (it is relative to the server);
    ``params`` keep their order (the query string is written in that order)."""

    method: str
    path: str
    params: Mapping[str, str] = field(factory=dict, converter=_params)
    body: Mapping[str, Any] | None = None
    #: For a watch: how long the stream may stay silent before the link counts as dead.
    read_timeout_s: float | None = None

    @property
    def where(self) -> str:
        """``"GET /apis/..."``: how errors name this call."""
        return f"{self.method} /{self.path}"


def jobs_path(namespace: str) -> str:
    return f"apis/batch/v1/namespaces/{namespace}/jobs"


def pods_path(namespace: str) -> str:
    return f"api/v1/namespaces/{namespace}/pods"


def job_path(namespace: str, name: str) -> str:
    return f"{jobs_path(namespace)}/{name}"


def list_objects(path: str, *, selector: str | None = None, fields: str | None = None) -> Request:
    """The first page of a LIST (label and field selectors optional)."""
    params = {"limit": str(PAGE_SIZE)}
    if selector:
        params["labelSelector"] = selector
    if fields:
        params["fieldSelector"] = fields
    return Request(method="GET", path=path, params=params)


def next_page(request: Request, continue_token: str) -> Request:
    """The same LIST, from where the previous page's ``continue`` token says."""
    return evolve(request, params={**request.params, "continue": continue_token})


def get_object(path: str) -> Request:
    return Request(method="GET", path=path)


def create(path: str, body: Mapping[str, Any]) -> Request:
    return Request(method="POST", path=path, body=body)


def delete(path: str, *, propagation: str) -> Request:
    """DELETE, with the pods deleted ``Foreground`` or ``Background``."""
    return Request(method="DELETE", path=path, params={"propagationPolicy": propagation})


def watch(path: str, *, selector: str | None, resource_version: str, timeout_s: int) -> Request:
    """One watch from ``resource_version``, with bookmarks; the server ends it after
    ``timeout_s``."""
    params = {
        "watch": "true",
        "allowWatchBookmarks": "true",
        "timeoutSeconds": str(timeout_s),
        "resourceVersion": resource_version,
    }
    if selector:
        params["labelSelector"] = selector
    return Request(
        method="GET", path=path, params=params, read_timeout_s=timeout_s + WATCH_SILENCE_MARGIN_S
    )


def job_by_name(namespace: str, name: str) -> Request:
    """The one Job of that name, ours or adopted (a field selector reads no other)."""
    return list_objects(jobs_path(namespace), fields=f"metadata.name={name}")


def jobs_by_tag(namespace: str, tag_hash: str) -> Request:
    """hpcstate's Jobs labelled with that tag's hash (``_manifest.tag_hash``)."""
    selector = f"{MANAGED_SELECTOR},{TAG_HASH_LABEL}={tag_hash}"
    return list_objects(jobs_path(namespace), selector=selector)


def pods_of_jobs(namespace: str, names: Iterable[str]) -> Request:
    """The pods of those Jobs, by job-name label (every labelled pod when there are many
    names or a name too long to be a label value)."""
    wanted = sorted(set(names))
    if len(wanted) <= SELECTOR_NAMES_MAX and all(len(n) <= 63 for n in wanted):
        selector = f"{JOB_NAME_LABELS[1]} in ({','.join(wanted)})"
    else:
        selector = JOB_NAME_LABELS[1]
    return list_objects(pods_path(namespace), selector=selector)


def pods_of_uids(namespace: str, uids: Sequence[str]) -> list[Request]:
    """The pods of those Job controllers, one LIST per chunk of uids (in sorted order)."""
    ordered = sorted(set(uids))
    return [
        list_objects(
            pods_path(namespace),
            selector=f"{CONTROLLER_UID_LABELS[1]} in ({','.join(chunk)})",
        )
        for chunk in (
            ordered[start : start + SELECTOR_UIDS_MAX]
            for start in range(0, len(ordered), SELECTOR_UIDS_MAX)
        )
    ]
