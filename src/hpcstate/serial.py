"""Documents at the edges: cattrs converters, schema versions, migrations, and the
one fast writer of item and event documents.

Every stored or printed document carries ``"schema": N``. :func:`migrate` upgrades
an old document step by step *before* structuring, so the classes always have the
newest shape; new fields always get defaults, so old documents load, and unknown
keys are ignored, so an older hpcstate reads a newer document.

:class:`DocumentWriter` writes the JSON text of :func:`item_to_dict` and
:func:`event_to_dict` (compact separators) without building the dicts: the store
writes 100k items and 200k events in the worst poll. Its encoders are generated
from the records' ``attrs`` fields and types when this module is imported, so a new
field needs no edit here; tests compare it with the converter byte for byte.

:func:`positional_builder` (records built from parsed rows on hot paths, see
``hpcstate._fast``) is public here: backends import it from this module.
"""

from __future__ import annotations

import enum
import json
import math
import types
import typing
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta, timezone
from json.encoder import encode_basestring_ascii
from typing import Any, Final, TypeVar

import attrs
import cattrs
from cattrs.preconf.json import make_converter as _make_json_converter
from cattrs.strategies import configure_tagged_union
from cattrs.v import format_exception

from ._errors import SchemaError
from ._events import EVENT_TYPES, AnyEvent, Event
from ._exit import ExitStatus
from ._fast import positional_builder as positional_builder
from ._model import Marker, Run, RunItem
from ._reasons import Reason
from .backend import JobSpec

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


def format_utc(value: datetime) -> str:
    """An aware datetime as every document writes it: ISO 8601 in UTC with "Z"
    (``2026-03-01T12:00:00.5Z``; consumers pipe documents to jq and compare strings)."""
    return value.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")


_from_datetime: Final = format_utc


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


# -- JobSpec documents (a run's job description, stored with the run) --------------------


def _spec_converter() -> cattrs.Converter:
    conv = make_converter()
    conv.register_unstructure_hook(timedelta, lambda td: td.total_seconds())
    conv.register_structure_hook(timedelta, lambda value, _: timedelta(seconds=float(value)))
    return conv


_SPEC_CONVERTER: Final = _spec_converter()


def spec_to_json(spec: JobSpec) -> str:
    """A JobSpec as JSON text (keys sorted; durations in seconds)."""
    return json.dumps(_SPEC_CONVERTER.unstructure(spec), sort_keys=True)


def spec_from_json(text: str) -> JobSpec:
    """The JobSpec of :func:`spec_to_json` text (raises on a document that is not one)."""
    spec: JobSpec = _SPEC_CONVERTER.structure(json.loads(text), JobSpec)
    return spec


# -- the fast writer ---------------------------------------------------------------------

#: One compact encoder for every document (json.dumps with options builds a new
#: encoder per call, which is a large share of writing 100k small documents).
_ENCODER: Final = json.JSONEncoder(separators=(",", ":"), check_circular=False)
dumps: Final = _ENCODER.encode
"""``json.dumps`` with compact separators: the text of every stored document."""

_json_str: Final = encode_basestring_ascii  # what _ENCODER does with a str (else TypeError)


def _json_number(value: object) -> str:
    """An int or float field (or None), as _ENCODER writes it."""
    if value is None:
        return "null"
    if type(value) is int or (type(value) is float and math.isfinite(value)):
        return repr(value)
    return dumps(value)  # NaN, infinities, bools, subclasses: exactly as json does it


def _json_bool(value: object) -> str:
    if value is True:
        return "true"
    if value is False:
        return "false"
    return dumps(value)


def _json_optional_str(value: str | None) -> str:
    return "null" if value is None else _json_str(value)


#: Records the core shares between items, so a commit writes the same object many
#: times: an exit status (the sacct parser's memo; an item's and its Finished event's),
#: a verdict's reason (``verdict_reason``'s cache), an ambiguity marker.
_SHARED_RECORDS: Final = frozenset({ExitStatus, Reason, Marker})
#: Texts of shared records one writer remembers (bounded: a commit of 100,000 distinct
#: exit statuses must not hold 100,000 more strings).
_SHARED_MEMO: Final = 4096


def _shared(encode: Callable[..., str], value: object, known: Any, time: Any) -> str:
    """``encode(value, known, time)``, remembered by identity for the writer's life.

    The memo is the writer's time table (``known`` is its ``dict.get``; int keys never
    meet its datetime keys), each entry holding the record itself, so an id is never
    reused while it is remembered. Records are frozen: same object, same text."""
    memo = known.__self__
    key = id(value)
    hit = memo.get(key)
    if hit is not None and hit[0] is value:
        return hit[1]  # type: ignore[no-any-return]
    text = encode(value, known, time)
    if len(memo) < _SHARED_MEMO:
        memo[key] = (value, text)
    return text


class _Codegen:
    """Encoders generated from attrs fields: ``enc(value, known, time) -> str`` per
    class, each writing exactly what ``dumps(_CONVERTER.unstructure(value, cls))``
    writes (same keys, same order), raising on a value of a type it does not expect
    (the caller then hands the record to the converter)."""

    def __init__(self) -> None:
        self.namespace: dict[str, Any] = {
            "_str": _json_str,
            "_opt_str": _json_optional_str,
            "_num": _json_number,
            "_bool": _json_bool,
            "_TypeError": TypeError,
            "_shared": _shared,
        }
        self.encoders: dict[tuple[type, str, str], str] = {}
        self._count = 0

    def _name(self, stem: str, value: object) -> str:
        self._count += 1
        name = f"_{stem}{self._count}"
        self.namespace[name] = value
        return name

    def expression(self, annotation: Any, value: str) -> str:
        """Python text that writes ``value`` (an expression) of type ``annotation``."""
        optional = False
        if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
            members = [a for a in typing.get_args(annotation) if a is not type(None)]
            optional = len(members) < len(typing.get_args(annotation))
            if len(members) == 1:
                annotation = members[0]
            else:
                return self._other(annotation, value)
        if annotation is str:
            return f"_opt_str({value})" if optional else f"_str({value})"
        if annotation in (int, float):
            return f"_num({value})"
        if annotation is bool:
            return f"_bool({value})"
        if annotation is datetime:
            return f"(known({value}) or time({value}))"
        if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
            table: dict[Any, str] = {m: dumps(m.value) for m in annotation}
            if optional:
                table[None] = "null"
            return f"{self._name('enum', types.MappingProxyType(table))}[{value}]"
        if isinstance(annotation, type) and attrs.has(annotation):
            call = f"{self.encoder(annotation)}({value}, known, time)"
            if annotation in _SHARED_RECORDS:
                call = f"_shared({self.encoder(annotation)}, {value}, known, time)"
            return f'("null" if {value} is None else {call})' if optional else call
        args = typing.get_args(annotation)
        if typing.get_origin(annotation) is tuple and len(args) == 2 and args[1] is Ellipsis:
            element = self.expression(args[0], "x")
            text = f'"[" + ",".join([{element} for x in {value}]) + "]"'
            # Most tuples are empty (nodes, markers): no comprehension for those.
            text = f'("[]" if {value} == () else {text})'
            return f'("null" if {value} is None else {text})' if optional else text
        return self._other(annotation, value)

    def _other(self, annotation: Any, value: str) -> str:
        """A type with no generated encoder: the converter writes that field."""
        name = self._name("other", lambda v: dumps(_CONVERTER.unstructure(v, annotation)))
        return f"{name}({value})"

    def encoder(self, cls: type, *, prefix: str = "{", suffix: str = "}") -> str:
        """The name of the generated encoder of ``cls`` (made once per prefix and
        suffix: an event's document starts with the schema and ends with its tag)."""
        key = (cls, prefix, suffix)
        if key in self.encoders:
            return self.encoders[key]
        hints = typing.get_type_hints(cls)
        pieces = [_literal(prefix)]
        for index, attribute in enumerate(attrs.fields(cls)):
            separator = "" if index == 0 else ","
            pieces.append(_literal(f"{separator}{dumps(attribute.name)}:"))
            pieces.append("{" + self.expression(hints[attribute.name], f"v.{attribute.name}") + "}")
        pieces.append(_literal(suffix))
        name = self._name(f"enc_{cls.__name__}_", cls)
        source = (
            f"def {name}_(v, known, time):\n"
            f"    if type(v) is not {name}:\n"
            f"        raise _TypeError({cls.__name__ + ' expected'!r})\n"
            f"    return f'{''.join(pieces)}'\n"
        )
        exec(source, self.namespace)  # names and keys come from attrs.fields only
        self.encoders[key] = f"{name}_"
        return f"{name}_"

    def function(self, name: str) -> Callable[..., str]:
        function: Callable[..., str] = self.namespace[name]
        return function


def _literal(text: str) -> str:
    """``text`` as the literal part of a single-quoted f-string."""
    if "'" in text or "\\" in text or "\n" in text:
        raise ValueError(f"cannot generate an encoder around {text!r}")
    return text.replace("{", "{{").replace("}", "}}")


_SCHEMA_PREFIX: Final = "{" + dumps("schema") + ":" + dumps(SCHEMA_VERSION) + ","


def _encoders() -> tuple[Callable[..., str], Mapping[type, Callable[..., str]]]:
    codegen = _Codegen()
    item = codegen.function(codegen.encoder(RunItem, prefix=_SCHEMA_PREFIX))
    events = {
        cls: codegen.function(
            codegen.encoder(
                cls, prefix=_SCHEMA_PREFIX, suffix=f",{dumps('type')}:{dumps(cls.TAG)}}}"
            )
        )
        for cls in EVENT_TYPES
    }
    return item, types.MappingProxyType(events)


_ITEM_ENCODER, _EVENT_ENCODERS = _encoders()


class DocumentWriter:
    """Item and event documents as JSON text: ``dumps(item_to_dict(item))`` and
    ``dumps(event_to_dict(event))``, byte for byte, several times faster. Use one per
    batch (a store commit): each distinct UTC timestamp is formatted once (a poll's
    items share their observation times). A record holding a value of a type its
    fields do not declare is written by the converter, exactly as before."""

    __slots__ = ("_known", "_times")

    def __init__(self) -> None:
        # UTC datetimes only: for them equal means the same instant, hence the same
        # text (two datetimes of one other zone compare equal across a DST fold).
        self._times: dict[datetime | None, str] = {None: "null"}
        self._known = self._times.get

    def time(self, value: datetime | None) -> str:
        """A timestamp as documents write it (:func:`format_utc`), quoted, or null."""
        text = self._times.get(value)
        if text is None:
            assert value is not None  # None is in the table
            text = _json_str(format_utc(value))
            if value.tzinfo is timezone.utc and type(value) is datetime:
                self._times[value] = text
        return text

    def item(self, item: RunItem) -> str:
        """``dumps(item_to_dict(item))``."""
        try:
            return _ITEM_ENCODER(item, self._known, self.time)
        except Exception:  # a value of an unexpected type: the converter decides
            return dumps(item_to_dict(item))

    def event(self, event: Event) -> str:
        """``dumps(event_to_dict(event))``."""
        encoder = _EVENT_ENCODERS.get(type(event))
        if encoder is not None:
            try:
                return encoder(event, self._known, self.time)
            except Exception:  # a value of an unexpected type: the converter decides
                pass
        return dumps(event_to_dict(event))

    def fast_item(self, item: RunItem) -> str:
        """The generated encoder alone, no fallback (for tests): raises on a value it
        does not expect."""
        return _ITEM_ENCODER(item, self._known, self.time)

    def fast_event(self, event: Event) -> str:
        """The generated encoder alone, no fallback (for tests)."""
        return _EVENT_ENCODERS[type(event)](event, self._known, self.time)
