"""`hpcstate fleet`: who polls each backend for the processes sharing the store, as a
table, JSON and Prometheus metrics (issue 16). A real `hpcstate watch` process holds the
local backend's lease while its job runs; `fleet` is the console script in another
process. The metrics are parsed by a strict reader of the text exposition format written
here (and by prometheus_client's own parser where it is installed)."""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import time
from datetime import datetime
from typing import Any

import pytest

from .conftest import hpcstate

_HELP = re.compile(r"^# HELP ([a-zA-Z_:][a-zA-Z0-9_:]*) (\S.*)$")
_TYPE = re.compile(r"^# TYPE ([a-zA-Z_:][a-zA-Z0-9_:]*) (counter|gauge|histogram|summary|untyped)$")
_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)\{(.*)\} (\S+)$")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\\\|\\"|\\n)*)"(,|$)')


def parse_exposition(text: str) -> dict[str, dict[str, Any]]:
    """Metric name -> {"help", "type", "samples": [(labels, value)]}; raises
    AssertionError on anything the text format (0.0.4) does not allow here: a sample
    before its metric's HELP and TYPE, a HELP or TYPE twice, a bad label or value."""
    assert text.endswith("\n")
    metrics: dict[str, dict[str, Any]] = {}
    for line in text.splitlines():
        if m := _HELP.match(line):
            assert m[1] not in metrics, f"HELP twice: {line}"
            metrics[m[1]] = {"help": m[2], "type": None, "samples": []}
        elif m := _TYPE.match(line):
            assert m[1] in metrics, f"TYPE before HELP: {line}"
            assert metrics[m[1]]["type"] is None, f"TYPE twice: {line}"
            assert not metrics[m[1]]["samples"], f"TYPE after samples: {line}"
            metrics[m[1]]["type"] = m[2]
        elif m := _SAMPLE.match(line):
            name, body, value = m[1], m[2], m[3]
            assert name in metrics, f"sample before HELP: {line}"
            assert metrics[name]["type"], f"sample before TYPE: {line}"
            labels, at = {}, 0
            while at < len(body):
                label = _LABEL.match(body, at)
                assert label is not None, f"bad labels: {line}"
                labels[label[1]] = label[2].replace('\\"', '"').replace("\\\\", "\\")
                at = label.end()
            metrics[name]["samples"].append((labels, float(value)))
        else:
            raise AssertionError(f"not a line of the text format: {line!r}")
    for name, metric in metrics.items():
        assert metric["type"], f"{name} has no TYPE"
        if metric["type"] == "counter":
            assert name.endswith("_total"), name
    return metrics


def _fleet(env: dict[str, str], *flags: str) -> Any:
    done = hpcstate("fleet", *flags, env=env)
    assert done.code == 0, done.err
    return done


def test_fleet_of_a_fresh_store_is_empty(cli_env: dict[str, str]) -> None:
    assert _fleet(cli_env, "--json").out == ""
    assert "no process has polled" in _fleet(cli_env).out
    metrics = parse_exposition(_fleet(cli_env, "--prometheus").out)
    assert "hpcstate_lease_held" in metrics
    assert all(not m["samples"] for m in metrics.values())


def test_fleet_json_and_prometheus_bad_together(cli_env: dict[str, str]) -> None:
    done = hpcstate("fleet", "--json", "--prometheus", env=cli_env)
    assert done.code == 64  # usage
    assert "choose one" in done.err


def test_fleet_shows_the_watch_process_that_polls_and_its_metrics(
    cli_env: dict[str, str],
) -> None:
    submitted = hpcstate("submit", "--json", "--", "sh", "-c", "sleep 8; exit 0", env=cli_env)
    assert submitted.code == 0, submitted.err
    run_id = submitted.records()[0]["id"]
    script = shutil.which("hpcstate", path=cli_env.get("PATH"))
    assert script is not None
    watch = subprocess.Popen(
        [script, "watch", run_id, "--json"],
        env=cli_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60  # generous: the watcher polls within a second
        while True:
            docs = [json.loads(line) for line in _fleet(cli_env, "--json").out.splitlines()]
            if docs and docs[0]["last_poll_at"] and docs[0]["scheduler_calls"] >= 1:
                break
            assert time.monotonic() < deadline, docs
            assert watch.poll() is None, watch.communicate()
            time.sleep(0.2)
        text = _fleet(cli_env, "--prometheus").out
        table = _fleet(cli_env).out
    finally:
        _, err = watch.communicate(timeout=120)
    assert watch.returncode == 0, err
    (doc,) = docs
    # The local backend's lease is per host and job directory; the holder names the
    # watch process (host:pid:random).
    assert doc["backend"].startswith(f"local@{socket.gethostname()}:")
    assert doc["holder"].startswith(f"{socket.gethostname()}:{watch.pid}:")
    assert doc["live"] is True
    assert doc["released"] is False
    assert doc["generation"] == 1

    def utc(text: str) -> datetime:  # Python 3.10's fromisoformat does not take "Z"
        return datetime.fromisoformat(text.replace("Z", "+00:00"))

    since = utc(doc["since"])
    assert since <= utc(doc["last_poll_at"])
    assert since < utc(doc["expires_at"])
    assert doc["holder"] in table
    assert "held (gen 1)" in table

    metrics = parse_exposition(text)
    assert {name: m["type"] for name, m in metrics.items()} == {
        "hpcstate_lease_held": "gauge",
        "hpcstate_lease_generation": "gauge",
        "hpcstate_lease_since_timestamp_seconds": "gauge",
        "hpcstate_lease_expires_timestamp_seconds": "gauge",
        "hpcstate_lease_last_poll_timestamp_seconds": "gauge",
        "hpcstate_lease_scheduler_calls_total": "counter",
    }
    labels = {"backend": doc["backend"], "holder": doc["holder"]}
    assert metrics["hpcstate_lease_held"]["samples"] == [(labels, 1.0)]
    assert metrics["hpcstate_lease_generation"]["samples"] == [(labels, 1.0)]
    assert metrics["hpcstate_lease_since_timestamp_seconds"]["samples"] == [
        (labels, pytest.approx(since.timestamp(), abs=1e-3))
    ]
    ((_, calls),) = metrics["hpcstate_lease_scheduler_calls_total"]["samples"]
    assert calls >= 1

    # A clean exit released the lease: the next process polls at once.
    (after,) = [json.loads(line) for line in _fleet(cli_env, "--json").out.splitlines()]
    assert after["released"] is True
    assert after["live"] is False
    held = parse_exposition(_fleet(cli_env, "--prometheus").out)["hpcstate_lease_held"]
    assert held["samples"] == [(labels, 0.0)]


def test_prometheus_client_reads_the_metrics_too(cli_env: dict[str, str]) -> None:
    parser = pytest.importorskip("prometheus_client.parser")
    from hpcstate.cli._fleet import prometheus_text
    from hpcstate.runtime import Lease

    at = datetime.fromisoformat("2026-12-06T12:00:00+00:00")
    lease = Lease(
        backend='odd "name"\\x',
        holder="h:1:ab",
        generation=3,
        since=at,
        renewed_at=at,
        expires_at=at,
        last_poll_at=at,
        scheduler_calls=7,
    )
    text = prometheus_text([lease], at)
    mine = parse_exposition(text)
    assert mine["hpcstate_lease_held"]["samples"] == [
        ({"backend": 'odd "name"\\x', "holder": "h:1:ab"}, 0.0)
    ]
    families = {f.name: f for f in parser.text_string_to_metric_families(text)}
    calls = families["hpcstate_lease_scheduler_calls"]
    assert calls.type == "counter"
    assert [(s.labels, s.value) for s in calls.samples] == [
        ({"backend": 'odd "name"\\x', "holder": "h:1:ab"}, 7.0)
    ]
