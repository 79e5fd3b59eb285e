"""The dialect on arbitrary shapes: it returns, or raises ParseError; nothing else.

Two sources of input: arbitrary JSON values, and the hand-written fixtures with one
random subtree replaced (which reaches deep fields that random JSON never would).
"""

from __future__ import annotations

import contextlib
import copy
import json
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from hpcstate import ConfigError, ParseError
from hpcstate_k8s._observe import JobRef, judge, parse_native_id
from hpcstate_k8s._parse import parse_index_set, read_job, read_pod
from hpcstate_k8s._tracking import NamespaceTracker

FIXTURES = sorted((Path(__file__).parent / "fixtures").glob("*.json"))
NOW = datetime(2026, 4, 26, 19, 0, 0, tzinfo=timezone.utc)

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**40), max_value=2**40)
    | st.floats(allow_nan=False)
    | st.text(max_size=30)
    | st.sampled_from(
        [
            "True",
            "False",
            "Failed",
            "Complete",
            "FailureTarget",
            "Indexed",
            "2026-04-26T18:36:01Z",
            "1970-01-01T00:00:00Z",
            "2026-02-30T25:61:00+99:99",
            "1,3-5",
            "9-2",
            '{"signal": 9}',
            '{"exit": 300}',
            "OOMKilled",
            "ContainerStatusUnknown",
        ]
    )
)
json_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=5)
    ),
    max_leaves=25,
)


def _assess_everything(job_obj: Any, pod_objs: list[Any]) -> None:
    job = read_job(job_obj)
    pods = [read_pod(p) for p in pod_objs]
    for index in (None, 0, 1):
        ref = JobRef(namespace=job.namespace or "batch", name=job.name, index=index)
        for gone in (False, True):
            for cancel in (False, True):
                # judge: assess without the net that turns a bug into a ParseError.
                result = judge(
                    ref.native_id,
                    ref,
                    job,
                    pods,
                    observed_at=NOW,
                    gone=gone,
                    cancel_requested=cancel,
                )
                assert result.observation.native_id == ref.native_id


@given(json_values)
def test_read_job_on_arbitrary_json(value: Any) -> None:
    with contextlib.suppress(ParseError):
        read_job(value)


@given(json_values)
def test_read_pod_on_arbitrary_json(value: Any) -> None:
    with contextlib.suppress(ParseError):
        read_pod(value)


def _mutate(doc: Any, data: st.DataObject, replacement: Any) -> Any:
    """Replace one randomly chosen subtree of doc (a copy) with replacement."""
    doc = copy.deepcopy(doc)
    node = doc
    while True:
        if isinstance(node, dict) and node:
            key = data.draw(st.sampled_from(sorted(node)))
        elif isinstance(node, list) and node:
            key = data.draw(st.integers(min_value=0, max_value=len(node) - 1))
        else:
            return replacement
        child = node[key]
        if not isinstance(child, dict | list) or not child or data.draw(st.booleans()):
            node[key] = replacement
            return doc
        node = child


@given(st.data(), st.sampled_from(FIXTURES), json_values)
def test_mutated_fixtures_return_or_raise_parse_error(
    data: st.DataObject, path: Path, replacement: Any
) -> None:
    doc = json.loads(path.read_text())
    mutated = _mutate({"job": doc["job"], "pods": doc["pods"]}, data, replacement)
    job, pods = mutated.get("job"), mutated.get("pods")
    with contextlib.suppress(ParseError):
        _assess_everything(job, pods if isinstance(pods, list) else [])


@given(st.data(), st.sampled_from(FIXTURES), json_values)
def test_tracker_on_mutated_events_never_raises(
    data: st.DataObject, path: Path, replacement: Any
) -> None:
    # A watch follows a whole namespace: no object, however broken, may stop it.
    doc = json.loads(path.read_text())
    tracker = NamespaceTracker("batch", [("batch/sim", JobRef(namespace="batch", name="sim"))])
    event = data.draw(st.sampled_from(["ADDED", "MODIFIED", "DELETED"]))
    tracker.job_event(event, _mutate(doc["job"], data, replacement), NOW)
    for pod in doc["pods"]:
        tracker.pod_event(event, _mutate(pod, data, replacement), NOW)
    tracker.jobs_listed([_mutate(doc["job"], data, replacement)], NOW)
    tracker.pods_listed([_mutate(p, data, replacement) for p in doc["pods"]], NOW)
    wanted = tracker.take_wanted_pod_lists()
    tracker.job_pods_listed(wanted, [_mutate(p, data, replacement) for p in doc["pods"]], NOW)
    tracker.take_problems()
    tracker.done()


# Digits that are not ASCII: "²" (No) passes str.isdigit, "٣" (Nd) passes isdecimal and
# int(), "Ⅻ" (Nl) passes isnumeric. Kubernetes writes none of them.
unicode_digits = st.text(
    st.characters(categories=["Nd", "No", "Nl"]), min_size=1, max_size=12
) | st.text(
    st.characters(categories=["Nd", "No", "Nl"]) | st.sampled_from("0123456789"), min_size=1
)
huge_digits = st.integers(min_value=10, max_value=6000).map(lambda n: "9" * n)


def _pod_with_index(text: str) -> dict[str, Any]:
    key = "batch.kubernetes.io/job-completion-index"
    return {"metadata": {"name": "p", "annotations": {key: text}, "labels": {key: text}}}


@given(unicode_digits | huge_digits)
def test_completion_indexes_take_ascii_digits_only(text: str) -> None:
    try:
        pod = read_pod(_pod_with_index(text))
    except ParseError:
        assert not (text.isascii() and text.isdigit() and len(text) <= 9)
        return
    assert text.isascii()
    assert pod.index == int(text)


@given(unicode_digits | huge_digits)
def test_index_lists_and_native_ids_take_ascii_digits_only(text: str) -> None:
    for candidate in (text, f"{text}-{text}", f"1,{text}"):
        try:
            indexes = parse_index_set(candidate)
        except ParseError:
            continue
        assert candidate.isascii()
        assert all(isinstance(i, int) for i in indexes)
    try:
        ref = parse_native_id(f"batch/sim[{text}]")
    except ParseError:
        return
    assert text.isascii()
    assert ref.native_id == f"batch/sim[{int(text)}]"


@given(unicode_digits | huge_digits)
def test_numeric_job_options_take_ascii_digits_only(text: str) -> None:
    from hpcstate_k8s._manifest import array_shape, resolve_settings

    try:
        settings = resolve_settings({"backoff_limit": text}, {}, namespace="batch")
    except ConfigError:
        pass
    else:
        assert text.strip().isascii()
        assert settings.backoff_limit == int(text)
    try:
        array_shape(f"0-3%{text}")
    except ConfigError:
        pass
    else:
        assert text.strip().isascii()


@given(st.text(max_size=40))
def test_native_ids_and_index_sets_on_arbitrary_text(text: str) -> None:
    for parse in (parse_native_id, parse_index_set):
        with contextlib.suppress(ParseError):
            parse(text)


def test_pure_modules_import_no_io() -> None:
    # Measured against the core's own imports: on Python 3.10, attrs imports platform,
    # which imports subprocess; that is not ours to avoid.
    code = (
        "import sys, hpcstate; before = set(sys.modules);"
        "import hpcstate_k8s, hpcstate_k8s._commands, hpcstate_k8s._manifest,"
        " hpcstate_k8s._parse, hpcstate_k8s._observe, hpcstate_k8s._tracking;"
        "print(sorted(m for m in set(sys.modules) - before if m.split('.')[0] in "
        "{'asyncio', 'subprocess', 'socket', 'lightkube', 'httpx2', 'aiohttp', 'yaml'}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@given(st.from_regex(r"\A\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,9})?(Z|[+-]\d\d:\d\d)\Z"))
def test_timestamps_that_look_right_parse_or_raise_parse_error(text: str) -> None:
    from hpcstate_k8s._parse import _Where, parse_time

    try:
        parsed = parse_time(text, where=_Where("Job"), path="status.startTime")
    except ParseError:
        return
    assert parsed is None or parsed.utcoffset() is not None


@given(st.integers(min_value=0, max_value=2**62))
def test_absurd_grace_periods_do_not_crash(grace: int) -> None:
    doc = json.loads((Path(__file__).parent / "fixtures" / "deadline.json").read_text())
    doc["pods"][0]["metadata"]["deletionGracePeriodSeconds"] = grace
    doc["pods"][0]["metadata"]["deletionTimestamp"] = "0001-01-01T00:00:01Z"
    _assess_everything(doc["job"], doc["pods"])
