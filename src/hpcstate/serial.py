"""Documents at the edges: cattrs converters, schema versions, migrations.

Every stored or printed document carries ``"schema": N``. :func:`migrate` upgrades
an old document step by step *before* structuring, so the classes always have the
newest shape; new fields always get defaults, so old documents load, and unknown
keys are ignored, so an older hpcstate reads a newer document.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime, timezone
from typing import Any, Final, TypeVar

import cattrs
from cattrs.preconf.json import make_converter as _make_json_converter
from cattrs.strategies import configure_tagged_union
from cattrs.v import format_exception

from ._errors import SchemaError
from ._events import AnyEvent, Event
from ._model import Run, RunItem

#: Version of the RunItem / Run / Event documents this hpcstate writes.
SCHEMA_VERSION: Final = 1

T = TypeVar("T")

# schema N -> function that turns a version-N document into a version-(N+1) one.
_MIGRATIONS: dict[int, Callable[[dict[str, Any]], dict[str, Any]]] = {}


def _to_datetime(value: Any, _: object) -> datetime:
    if isinstance(value, datetime):
        result = value
    elif isinstance(value, str):
        result = datetime.fromisoformat(value.replace("Z", "+00:00"))
    elif isinstance(value, int | float) and not isinstance(value, bool):
        result = datetime.fromtimestamp(value, tz=timezone.utc)
    else:
        raise TypeError(f"expected an ISO 8601 timestamp, got {value!r}")
    if result.utcoffset() is None:
        raise ValueError(f"timestamp {value!r} has no UTC offset")
    return result


def _from_datetime(value: datetime) -> str:
    # Always UTC with an explicit offset: consumers pipe this to jq and compare strings.
    return value.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")


def make_converter(*, forbid_extra_keys: bool = False) -> cattrs.Converter:
    """A fresh JSON-ready converter (there is no mutable global one)."""
    conv = _make_json_converter(forbid_extra_keys=forbid_extra_keys, omit_if_default=False)
    conv.register_structure_hook(datetime, _to_datetime)
    conv.register_unstructure_hook(datetime, _from_datetime)
    configure_tagged_union(
        AnyEvent,
        conv,
        tag_name="type",
        tag_generator=lambda cls: cls.TAG,  # type: ignore[attr-defined]
    )
    return conv


def migrate(document: Mapping[str, Any]) -> dict[str, Any]:
    """Upgrade a stored document to :data:`SCHEMA_VERSION` (pure; raises SchemaError)."""
    doc = dict(document)
    version = doc.get("schema")
    if not isinstance(version, int) or isinstance(version, bool):
        raise SchemaError(f"document has no integer 'schema' field: {version!r}", version=version)
    if version > SCHEMA_VERSION:
        # Unknown keys are ignored, so a newer document is read as far as we understand it.
        return doc
    if version < 1:
        raise SchemaError(f"schema version {version} was never released", version=version)
    while version < SCHEMA_VERSION:
        doc = _MIGRATIONS[version](doc)
        version += 1
        doc["schema"] = version
    return doc


_CONVERTER: Final = make_converter()


def _explain(exc: BaseException, type_: type | None) -> str:
    # Our own hooks and validators write messages meant for people: keep them.
    if isinstance(exc, ValueError) and str(exc):
        return str(exc)
    return format_exception(exc, type_)


def _structure(document: Mapping[str, Any], cls: type[T], what: str) -> T:
    doc = migrate(document)
    doc.pop("schema", None)
    try:
        return _CONVERTER.structure(doc, cls)
    except (cattrs.BaseValidationError, ValueError, TypeError, KeyError) as exc:
        if isinstance(exc, cattrs.BaseValidationError):
            detail = "; ".join(cattrs.transform_error(exc, format_exception=_explain))
        else:
            detail = str(exc)
        version = document.get("schema")
        raise SchemaError(f"invalid {what} document: {detail}", version=version) from exc


def _unstructure(obj: object) -> dict[str, Any]:
    doc: dict[str, Any] = {"schema": SCHEMA_VERSION}
    doc.update(_CONVERTER.unstructure(obj))
    return doc


def item_to_dict(item: RunItem) -> dict[str, Any]:
    return _unstructure(item)


def item_from_dict(document: Mapping[str, Any]) -> RunItem:
    return _structure(document, RunItem, "RunItem")


def run_to_dict(run: Run) -> dict[str, Any]:
    return _unstructure(run)


def run_from_dict(document: Mapping[str, Any]) -> Run:
    return _structure(document, Run, "Run")


def event_to_dict(event: Event) -> dict[str, Any]:
    doc: dict[str, Any] = {"schema": SCHEMA_VERSION}
    doc.update(_CONVERTER.unstructure(event, AnyEvent))
    return doc


def event_from_dict(document: Mapping[str, Any]) -> Event:
    event: Event = _structure(document, AnyEvent, "Event")  # type: ignore[arg-type]
    return event
