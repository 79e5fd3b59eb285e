"""A fuzz target per public Kubernetes parser entry point (issue 14), seeded from the real
1.36.2 recordings: each returns a result or raises ParseError, never anything else.

Inputs: the recorded watch lines and LIST bodies, truncated, with bytes flipped, and
wrapped in (or with a subtree replaced by) JSON nested up to thousands of levels deep.
An API answer nested 1,000 levels deep used to raise RecursionError (the JSON decoder
only caught ValueError); ``nested`` below reaches that depth in most examples, so the
CI profile's examples find it every run.
"""

from __future__ import annotations

import contextlib
import copy
import json
from datetime import datetime, timezone
from typing import Any

import httpx2
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from hpcstate import ParseError, SchedulerUnavailable
from hpcstate_k8s import _commands as commands
from hpcstate_k8s._io_rest import Expired, KubeApi, StreamBroken, watch_event
from hpcstate_k8s._manifest import submission_from_job
from hpcstate_k8s._observe import JobRef, assess, decode_exit, parse_native_id
from hpcstate_k8s._parse import (
    Termination,
    decode_json,
    parse_index_set,
    parse_list,
    parse_watch_event,
    read_job,
    read_pod,
    status_message,
)
from hpcstate_k8s._tracking import NamespaceTracker

from .recordings import CASES, ROOT

NOW = datetime(2026, 12, 6, 16, 0, tzinfo=timezone.utc)
LINES = [
    line
    for case in CASES
    for kind in ("jobs", "pods")
    for line in (ROOT / case / f"watch_{kind}.jsonl").read_text().splitlines()
    if line.strip()
]
BODIES = [path.read_text() for case in CASES for path in sorted((ROOT / case).glob("get_*.json"))]
OBJECTS = [json.loads(line)["object"] for line in LINES]

depths = st.integers(min_value=0, max_value=3000) | st.sampled_from([999, 1000, 1001, 5000])


@st.composite
def nested(draw: st.DrawFn) -> Any:
    """A JSON value nested ``depth`` levels deep (lists and objects)."""
    depth = draw(depths)
    value: Any = draw(st.sampled_from([None, 0, "x", {}, []]))
    opener = draw(st.sampled_from(["list", "dict", "mixed"]))
    for level in range(depth):
        as_list = opener == "list" or (opener == "mixed" and level % 2 == 0)
        value = [value] if as_list else {"a": value}
    return value


def _deep_text(depth: int, inner: str = "0") -> str:
    return "[" * depth + inner + "]" * depth


@st.composite
def nested_text(draw: st.DrawFn) -> str:
    """JSON text nested ``depth`` levels deep (json.dumps itself cannot write it)."""
    depth = draw(depths)
    inner = draw(st.sampled_from(["null", "0", '"x"', "{}", "[]"]))
    if draw(st.booleans()):
        return _deep_text(depth, inner)
    return '{"a":' * depth + inner + "}" * depth


@st.composite
def answers(draw: st.DrawFn, seeds: list[str]) -> str:
    """A recorded answer, damaged: truncated, a byte flipped, wrapped deep, or with a
    subtree replaced by a deep value."""
    text = draw(st.sampled_from(seeds))
    how = draw(st.sampled_from(["as is", "truncate", "flip", "wrap", "subtree"]))
    if how == "truncate":
        return text[: draw(st.integers(min_value=0, max_value=len(text)))]
    if how == "flip":
        i = draw(st.integers(min_value=0, max_value=len(text) - 1))
        return text[:i] + draw(st.sampled_from(list('{}[]",:0\\x'))) + text[i + 1 :]
    if how == "wrap":
        depth = draw(depths)
        return _deep_text(depth, text)
    doc = json.loads(text)
    hole = json.dumps(_replace(doc, draw, "\0deep\0"))
    return hole.replace(json.dumps("\0deep\0"), draw(nested_text()), 1)


def _replace(doc: Any, draw: st.DrawFn, replacement: Any) -> Any:
    doc = copy.deepcopy(doc)
    node = doc
    while isinstance(node, dict | list) and node:
        key = (
            draw(st.sampled_from(sorted(node)))
            if isinstance(node, dict)
            else draw(st.integers(min_value=0, max_value=len(node) - 1))
        )
        child = node[key]
        if not isinstance(child, dict | list) or not child or draw(st.booleans()):
            node[key] = replacement
            return doc
        node = child
    return replacement


def _deep_json(text: str) -> Any:
    """Decode as Python would, or None where the decoder itself gives up (too deep)."""
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        return None


# -- the wire: JSON answers, LISTs, watch lines --------------------------------------------


@given(answers(LINES))
@example(_deep_text(1000))
@example('{"type":"ADDED","object":' + _deep_text(1000, "{}") + "}")
def test_parse_watch_event(text: str) -> None:
    with contextlib.suppress(ParseError):
        event = parse_watch_event(text)
        assert isinstance(event.object, dict)
    with contextlib.suppress(ParseError):
        parse_watch_event(text.encode("utf-8", "surrogatepass"))


@given(answers(BODIES))
@example(_deep_text(1000))
@example('{"metadata":{},"items":' + _deep_text(1200) + "}")
def test_parse_list(text: str) -> None:
    with contextlib.suppress(ParseError):
        answer = parse_list(text)
        assert isinstance(answer.items, tuple)


@given(answers(LINES) | answers(BODIES))
def test_decode_json_and_status_message(text: str) -> None:
    with contextlib.suppress(ParseError):
        decode_json(text, what="fuzz")
    assert isinstance(status_message(text), str)


@given(answers(LINES))
@example(_deep_text(1000))
def test_the_clients_watch_line_reader(text: str) -> None:
    # What the watch loop does with a line: an event, or a broken stream (LIST again).
    with contextlib.suppress(StreamBroken, Expired):
        watch_event(text, "fuzz")


# -- objects and verdicts ------------------------------------------------------------------


@st.composite
def damaged_objects(draw: st.DrawFn) -> Any:
    obj = draw(st.sampled_from(OBJECTS))
    if draw(st.booleans()):
        return draw(nested())
    return _replace(obj, draw, draw(nested() | st.sampled_from([None, 1, "x", True, [], {}])))


@given(damaged_objects())
def test_read_job_and_read_pod(obj: Any) -> None:
    with contextlib.suppress(ParseError):
        read_job(obj)
    with contextlib.suppress(ParseError):
        read_pod(obj)


@given(damaged_objects())
def test_submission_from_job(obj: Any) -> None:
    with contextlib.suppress(ParseError):
        submission_from_job(obj)


@given(damaged_objects(), st.lists(damaged_objects(), max_size=3))
def test_assess(job_obj: Any, pod_objs: list[Any]) -> None:
    try:
        job = read_job(job_obj)
    except ParseError:
        return
    pods = []
    for obj in pod_objs:
        with contextlib.suppress(ParseError):
            pods.append(read_pod(obj))
    ref = JobRef(namespace=job.namespace or "ns", name=job.name)
    with contextlib.suppress(ParseError):
        assess(ref.native_id, ref, job, pods, observed_at=NOW)


@given(st.lists(damaged_objects(), max_size=4), st.sampled_from(["ADDED", "MODIFIED", "DELETED"]))
def test_namespace_tracker_events(objs: list[Any], event: str) -> None:
    # A watch follows a whole namespace: no object, however broken or deep, may stop it.
    first = OBJECTS[0]
    ns, name = first["metadata"]["namespace"], first["metadata"]["name"]
    tracker = NamespaceTracker(ns, [(f"{ns}/{name}", JobRef(namespace=ns, name=name))])
    tracker.jobs_listed([first], NOW)
    for obj in objs:
        tracker.job_event(event, obj, NOW)
        tracker.pod_event(event, obj, NOW)
    tracker.pods_listed(objs, NOW)
    tracker.take_problems()


@given(st.text(max_size=60) | nested_text())
def test_native_ids_and_index_sets(text: str) -> None:
    with contextlib.suppress(ParseError):
        parse_native_id(text)
    with contextlib.suppress(ParseError):
        parse_index_set(text)


@given(st.text(max_size=40) | nested_text(), st.integers(-(2**70), 2**70))
def test_decode_exit_of_any_termination_message(message: str, code: int) -> None:
    term = Termination(
        container="main",
        init=False,
        exit_code=code,
        reason="Error",
        message=message,
        started_at=None,
        finished_at=None,
    )
    for wrapper in (False, True):
        status, note = decode_exit(term, wrapper=wrapper)
        assert isinstance(note, str)
        del status


# -- the client on a deep answer (issue 14: RecursionError) --------------------------------


def _api(body: bytes) -> KubeApi:
    def handler(request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(200, content=body, headers={"content-type": "application/json"})

    client = httpx2.AsyncClient(transport=httpx2.MockTransport(handler), base_url="http://k")
    return KubeApi(client, request_timeout_s=5)


@pytest.mark.asyncio
@pytest.mark.parametrize("depth", [1000, 100_000])
async def test_a_deep_answer_is_a_server_problem_not_a_crash(depth: int) -> None:
    deep = ('{"metadata":{},"items":' + _deep_text(depth) + "}").encode()
    api = _api(deep)
    try:
        with pytest.raises(SchedulerUnavailable, match="too deep"):
            await api.list(commands.list_objects("apis/batch/v1/namespaces/ns/jobs"))
        with pytest.raises(SchedulerUnavailable, match="too deep"):
            await api.get(commands.get_object("apis/batch/v1/namespaces/ns/jobs/x"))
    finally:
        await api.close()
    with pytest.raises(StreamBroken, match="too deep"):
        watch_event('{"type":"ADDED","object":' + _deep_text(depth, "{}") + "}", "x")


@settings(max_examples=20)
@given(st.sampled_from(LINES))
def test_recorded_lines_parse(line: str) -> None:
    event = parse_watch_event(line)
    assert event.type in ("ADDED", "MODIFIED", "DELETED")
    reader = read_job if event.object.get("kind") == "Job" else read_pod
    reader(event.object)
    assert _deep_json(line) is not None
