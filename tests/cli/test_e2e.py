"""End to end: the installed ``hpcstate`` script, the real local backend, a real SQLite
file in tmp_path, no configuration (the embedded local backend) unless a test writes one.

Expected exit statuses are written from what each job does, by the table in
docs/concepts/exit-status.md.
"""

from __future__ import annotations

import json
import re
import sqlite3
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

import hpcstate as h
from hpcstate import Observation, Run, Source, State
from hpcstate.runtime import Store

from .conftest import Result, hpcstate

RUN_ID = re.compile(r"\A[0-9]{8}-[0-9]{6}-[0-9a-f]{6}\Z")


def valid(result: Result, validator: Any) -> list[dict[str, Any]]:
    records = result.records()
    assert records
    for record in records:
        errors = [e.message for e in validator.iter_errors(record)]
        assert not errors, errors
    return records


def run_id_of(result: Result) -> str:
    first = result.out.splitlines()[0]
    assert RUN_ID.match(first), result.out
    return first


def test_readme_example(cli_env: dict[str, str]) -> None:
    result = hpcstate("submit", "--watch", "--", "sh", "-c", "echo hello; exit 3", env=cli_env)
    assert result.code == 3, result.err  # a failed verdict fails watch, as sbatch --wait
    run_id = run_id_of(result)
    assert result.out.splitlines()[-1] == f"{run_id} failed: exit 3 (confirmed by process)"
    logs = hpcstate("logs", run_id, env=cli_env)
    assert (logs.code, logs.out) == (0, "hello\n")


@pytest.mark.parametrize(
    ("script", "expected", "exit_code", "signal"),
    [
        ("exit 0", 0, 0, None),
        ("echo out; exit 3", 3, 3, None),
        ("exit 137", 137, 137, None),  # an exit code, not SIGKILL
        ("kill -SEGV $$", 139, None, 11),  # a signal, lossless from the wait status
    ],
)
def test_exit_status_is_the_jobs_own(
    cli_env: dict[str, str],
    record_validator: Any,
    script: str,
    expected: int,
    exit_code: int | None,
    signal: int | None,
) -> None:
    result = hpcstate(
        "submit", "--watch", "--exit-status", "--json", "--", "sh", "-c", script, env=cli_env
    )
    assert result.code == expected, result.err
    [record] = valid(result, record_validator)
    assert (record["exit_code"], record["signal"]) == (exit_code, signal)
    assert record["confirmed"] is True
    assert record["stats"]["confirmed_by"] == "process"


def test_time_limit_is_201(cli_env: dict[str, str], record_validator: Any) -> None:
    result = hpcstate(
        "submit", "--time-limit", "1s", "--watch", "--exit-status", "--json", "--",
        "sleep", "60",
        env=cli_env,
    )  # fmt: skip
    assert result.code == 201, result.err
    [record] = valid(result, record_validator)
    assert record["state"] == "timeout"


def test_cancel_is_202(cli_env: dict[str, str], record_validator: Any) -> None:
    submitted = hpcstate("submit", "--name", "long", "--", "sleep", "60", env=cli_env)
    assert submitted.code == 0, submitted.err
    run_id = run_id_of(submitted)
    cancelled = hpcstate("cancel", run_id, env=cli_env)
    assert (cancelled.code, cancelled.out) == (0, f"{run_id} cancel requested\n")
    watched = hpcstate("watch", "--exit-status", "--json", run_id, env=cli_env)
    assert watched.code == 202, watched.err
    [record] = valid(watched, record_validator)
    assert record["state"] == "cancelled"
    assert record["name"] == "long"
    assert "cancel_requested" in [m["code"] for m in record["markers"]]


def test_watch_timeout_is_124(cli_env: dict[str, str]) -> None:
    run_id = run_id_of(hpcstate("submit", "--", "sleep", "60", env=cli_env))
    try:
        result = hpcstate("watch", "--exit-status", "--timeout", "1s", run_id, env=cli_env)
        assert result.code == 124, result.err
        assert "--timeout expired" in result.err
        assert f"{run_id} running (no verdict yet)" in result.out
    finally:
        hpcstate("cancel", run_id, env=cli_env)


def test_gone_is_206(cli_env: dict[str, str], record_validator: Any) -> None:
    # A job whose every trace vanished (its directory is gone): hpcstate says "gone",
    # never a guess. (`track` refuses such an id up front, so the run is stored here.)
    _store_queued(cli_env["HPCSTATE_DB"], "local", "20000101000000-deadbeef")
    result = hpcstate("watch", "--json", "local:20000101000000-deadbeef", env=cli_env)
    assert result.code == 206, result.err
    [record] = valid(result, record_validator)
    assert (record["state"], record["confirmed"]) == ("gone", False)


def _store_queued(db: str, backend: str, native_id: str) -> str:
    """A run whose job was submitted (and is not known to have started)."""
    t0 = datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc)
    item = h.new_item(id="queued.0", run_id="queued", backend=backend, now=t0)
    item = h.submitted(item, native_id=native_id, at=t0).item
    with Store(db) as store:
        store.create_run(Run(id="queued", backend=backend, created_at=t0, items=[item]))
    return "queued"


def _store_unconfirmed_success(db: str) -> str:
    """A run whose job left the queue and whose grace ran out without a record."""
    t0 = datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc)
    item = h.new_item(id="manual.0", run_id="manual", backend="local", now=t0)
    item = h.submitted(item, native_id="4242", at=t0).item
    for state, seconds in ((State.RUNNING, 1), (State.COMPLETED, 2)):
        seen = Observation(
            native_id="4242",
            source=Source.QUEUE,
            observed_at=t0 + timedelta(seconds=seconds),
            state=state,
        )
        item = h.advance(item, seen).item
    item = h.tick(item, now=t0 + timedelta(hours=1)).item
    assert (item.state, item.confirmed) == (State.COMPLETED, False)
    with Store(db) as store:
        store.create_run(Run(id="manual", backend="local", created_at=t0, items=[item]))
    return "manual"


def test_unconfirmed_success_is_207_only_when_required(
    cli_env: dict[str, str], record_validator: Any
) -> None:
    run_id = _store_unconfirmed_success(cli_env["HPCSTATE_DB"])
    strict = hpcstate(
        "watch", "--exit-status", "--require-confirmed", "--json", run_id, env=cli_env
    )
    assert strict.code == 207, strict.err
    [record] = valid(strict, record_validator)
    assert (record["state"], record["confirmed"]) == ("completed", False)
    assert "unconfirmed" in [m["code"] for m in record["markers"]]
    lenient = hpcstate("watch", "--exit-status", run_id, env=cli_env)
    assert lenient.code == 0
    assert lenient.out.splitlines()[0] == f"{run_id} completed: no exit status (NOT confirmed)"


def test_unreachable_backend_past_timeout_is_69(cli_env: dict[str, str], tmp_path: Path) -> None:
    config = tmp_path / "hpcstate.toml"
    # Port 1 on loopback: the connection is refused at once, every time.
    config.write_text('[backends.far]\nkind = "slurm"\nhost = "nobody@127.0.0.1:1"\n')
    env = {**cli_env, "HPCSTATE_CONFIG": str(config)}
    # track asks the backend first: unreachable, so nothing is recorded.
    tracked = hpcstate("track", "far:123", env=env)
    assert tracked.code == 69, tracked.err
    assert hpcstate("list", "--json", "--cached", env=env).out == ""
    _store_queued(cli_env["HPCSTATE_DB"], "far", "123")
    result = hpcstate("watch", "--timeout", "3s", "far:123", env=env)
    assert result.code == 69, result.err
    assert "unreachable" in result.err
    # A transient error is never a verdict: the job is still waiting.
    status = hpcstate("status", "--json", "--cached", "far:123", env=env)
    assert status.records()[0]["state"] == "queued"


def test_backend_not_installed_is_69(cli_env: dict[str, str], tmp_path: Path) -> None:
    config = tmp_path / "hpcstate.toml"
    config.write_text('[backends.batch]\nkind = "nosuchsched"\n')
    env = {**cli_env, "HPCSTATE_CONFIG": str(config)}
    result = hpcstate("submit", "--backend", "batch", "--", "true", env=env)
    assert result.code == 69
    assert result.err.strip().endswith("to add it: pip install hpcstate-nosuchsched")


def test_unknown_run_is_66(cli_env: dict[str, str]) -> None:
    for args in (
        ("status", "no-such-run"),
        ("watch", "local:nope"),
        ("cancel", "x"),
        ("logs", "y"),
    ):
        result = hpcstate(*args, env=cli_env)
        assert result.code == 66, (args, result.err)
        assert len(result.err.strip().splitlines()) == 1


@pytest.mark.parametrize(
    "args",
    [
        ("submit",),
        ("submit", "--time-limit", "soon", "--", "true"),
        ("submit", "--env", "NOEQUALS", "--", "true"),
        ("watch",),
        ("decode", "banana"),
        ("list", "--state", "finished"),
        ("frobnicate",),
    ],
)
def test_usage_errors_are_64(cli_env: dict[str, str], args: tuple[str, ...]) -> None:
    result = hpcstate(*args, env=cli_env)
    assert result.code == 64, result.err
    assert "error:" in result.err


def test_malformed_config_is_78_with_the_exact_message(
    cli_env: dict[str, str], tmp_path: Path
) -> None:
    config = tmp_path / "config.toml"
    config.write_text('default_backend = "cluster"\n[backends.cluster]\nkind = 7\n')
    env = {**cli_env, "HPCSTATE_CONFIG": str(config)}
    result = hpcstate("list", env=env)
    assert result.code == 78
    assert result.err == (
        f"hpcstate: error: {config}: backends.cluster.kind: expected a string "
        '(e.g. kind = "slurm"), got integer 7\n'
    )
    missing = hpcstate("list", env={**cli_env, "HPCSTATE_CONFIG": str(tmp_path / "nope.toml")})
    assert missing.code == 78
    assert missing.err == (
        f"hpcstate: error: {tmp_path / 'nope.toml'} (named by $HPCSTATE_CONFIG): file not "
        "found; create it, fix the path, or unset it to use the embedded local backend\n"
    )


def test_default_config_location_is_xdg(cli_env: dict[str, str]) -> None:
    config = Path(cli_env["XDG_CONFIG_HOME"]) / "hpcstate" / "config.toml"
    config.parent.mkdir(parents=True)
    config.write_text('default_backend = "mine"\n[backends.mine]\nkind = "local"\n')
    result = hpcstate("submit", "--watch", "--json", "--", "true", env=cli_env)
    assert result.code == 0, result.err
    assert result.records()[0]["backend"] == "mine"


def test_corrupt_row_is_reported_and_the_others_still_listed(
    cli_env: dict[str, str], record_validator: Any
) -> None:
    good = run_id_of(hpcstate("submit", "--watch", "--", "true", env=cli_env))
    bad = run_id_of(hpcstate("submit", "--watch", "--", "false", env=cli_env))
    with sqlite3.connect(cli_env["HPCSTATE_DB"]) as db:
        db.execute("UPDATE items SET doc = ? WHERE run_id = ?", ("{not json", bad))
    listing = hpcstate("list", "--json", env=cli_env)
    assert listing.code == 65
    assert [r["id"] for r in valid(listing, record_validator)] == [good]
    # --json: the error is one JSON object on stderr, naming the run.
    [error] = [json.loads(line) for line in listing.err.splitlines()]
    assert (error["code"], error["refers_to"]) == (65, {"kind": "run", "value": bad})
    assert error["message"].startswith(f"run {bad} is damaged in the state database")
    status = hpcstate("status", bad, env=cli_env)
    assert status.code == 65
    assert status.err.startswith(f"hpcstate: error: run {bad} is damaged in the state database")
    assert len(status.err.splitlines()) == 1
    assert hpcstate("status", good, env=cli_env).code == 0


def test_once_runs_once(cli_env: dict[str, str], record_validator: Any) -> None:
    command = ("--", "sh", "-c", 'echo built >> "$HOME/count"')
    first = hpcstate("submit", "--once", "~/done/step1", "--watch", "--json", *command, env=cli_env)
    assert first.code == 0, first.err
    [record] = valid(first, record_validator)
    assert record["markers"] == []
    # The sentinel was made on the job's side, under the job's HOME.
    assert (Path(cli_env["HOME"]) / "done" / "step1").exists()
    second = hpcstate("submit", "--once", "~/done/step1", "--watch", *command, env=cli_env)
    assert second.code == 0, second.err
    assert "completed: exit 0 (confirmed by process)" in second.out
    home = cli_env["HOME"]
    assert f"  already_done: already there: {home}/done/step1" in second.out
    assert (Path(home) / "count").read_text() == "built\n"
    record = hpcstate("status", "--json", run_id_of(second), env=cli_env).records()[0]
    assert record["markers"][0]["code"] == "already_done"


def test_track_adopts_a_job_started_elsewhere(
    cli_env: dict[str, str], tmp_path: Path, record_validator: Any
) -> None:
    # Submitted by "someone else": another state database.
    other = {**cli_env, "HPCSTATE_DB": str(tmp_path / "other.db")}
    started = hpcstate("submit", "--json", "--", "sh", "-c", "sleep 0.5; exit 4", env=other)
    native = started.records()[0]["native_id"]
    adopted = hpcstate(
        "track", "--watch", "--exit-status", "--json", f"local:{native}", env=cli_env
    )
    assert adopted.code == 4, adopted.err
    [record] = valid(adopted, record_validator)
    assert (record["native_id"], record["exit_code"], record["confirmed"]) == (native, 4, True)
    assert hpcstate("status", f"local:{native}", env=cli_env).code == 0


def test_array_run_on_the_local_backend(cli_env: dict[str, str], record_validator: Any) -> None:
    result = hpcstate(
        "submit", "--array", "1-3", "--watch", "--exit-status", "--json", "--",
        "sh", "-c", 'exit "$HPCSTATE_ARRAY_INDEX"',
        env=cli_env,
    )  # fmt: skip
    assert result.code == 1, result.err  # the first failing task by index
    [record] = valid(result, record_validator)
    assert [(i["index"], i["exit_code"]) for i in record["items"]] == [(1, 1), (2, 2), (3, 3)]
    assert record["counts"] == {"failed": 3}


def test_report_from_inside_a_job(cli_env: dict[str, str]) -> None:
    result = hpcstate(
        "submit", "--watch", "--", "sh", "-c", "hpcstate report --exit-code 3 --json; exit 3",
        env=cli_env,
    )  # fmt: skip
    run_id = run_id_of(result)
    [reported] = hpcstate("logs", run_id, env=cli_env).records()
    assert reported["run_id"] == run_id
    assert (reported["exit"]["code"], reported["exit"]["signal"]) == (3, None)
    outside = hpcstate("report", "--exit-code", "3", env=cli_env)
    assert outside.code == 78
    assert "HPCSTATE_RUN_ID is not set" in outside.err


def test_decode_forms(cli_env: dict[str, str]) -> None:
    cases = {
        ("0:9",): (None, 9),
        ("137:0",): (137, None),
        ("35072",): (137, None),
        ("36352", "--from", "flux"): (142, None),
        ("137", "--from", "k8s"): (137, None),
        ("139", "--from", "wait"): (None, 11),
    }
    for args, (code, signal) in cases.items():
        result = hpcstate("decode", *args, "--json", env=cli_env)
        assert result.code == 0, result.err
        reading = result.records()[0]["readings"][0]
        assert (reading["exit_code"], reading["signal"]) == (code, signal), args
    human = hpcstate("decode", "137", "--from", "k8s", env=cli_env)
    assert "ambiguous: 137 = 128+9" in human.out


def test_backends_listing(cli_env: dict[str, str]) -> None:
    result = hpcstate("backends", "--json", env=cli_env)
    assert result.code == 0
    by_name = {r["name"]: r for r in result.records()}
    assert by_name["local"]["ok"] is True
    assert by_name["local"]["capabilities"]["lossless_signals"] is True
    human = hpcstate("backends", env=cli_env)
    assert human.out.splitlines()[0].split() == ["NAME", "VERSION", "API", "CAPABILITIES"]
    assert any(line.startswith("local ") for line in human.out.splitlines())


def test_python_dash_m(cli_env: dict[str, str]) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "hpcstate", "decode", "0:9"],
        env=cli_env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0
    assert done.stdout.startswith("0:9 read as a Slurm ExitCode (code:signal): killed by SIGKILL")


def test_prune(cli_env: dict[str, str]) -> None:
    run_id_of(hpcstate("submit", "--watch", "--", "true", env=cli_env))
    kept = hpcstate("prune", "--older-than", "1d", "--json", env=cli_env)
    assert kept.records() == [{"schema": 1, "pruned": 0}]
    gone = hpcstate("prune", "--older-than", "0s", env=cli_env)
    assert gone.out == "pruned 1 finished run(s) unchanged for 0s\n"
    assert hpcstate("list", "--json", env=cli_env).out == ""
