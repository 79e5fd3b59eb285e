"""`hpcstate watch --json` over many runs prints each record the moment its verdict lands
(issue 16): one line per run, flushed, in the order the verdicts land, so a wrapper can
act on each job while the others still run. The real console script and real local jobs
of different lengths; the lines are read as they arrive."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

from hpcstate import TERMINAL
from hpcstate.runtime import Store

from .conftest import hpcstate


def _submit(seconds: float, code: int, env: dict[str, str]) -> str:
    done = hpcstate("submit", "--json", "--", "sh", "-c", f"sleep {seconds}; exit {code}", env=env)
    assert done.code == 0, done.err
    (record,) = done.records()
    return str(record["id"])


def test_watch_json_prints_each_record_as_its_verdict_lands(
    cli_env: dict[str, str], tmp_path: Path
) -> None:
    long = _submit(12, 2, cli_env)
    short = _submit(0.2, 0, cli_env)
    middle = _submit(3, 1, cli_env)
    script = shutil.which("hpcstate", path=cli_env.get("PATH"))
    assert script is not None
    watch = subprocess.Popen(
        [script, "watch", "--json", long, short, middle],
        env=cli_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert watch.stdout is not None
        first = json.loads(watch.stdout.readline())
        # The first line is the short job's, printed while the long one still runs
        # (before this change every line came at the end, in argument order).
        assert first["id"] == short
        assert first["state"] == "completed"
        with Store(cli_env["HPCSTATE_DB"], sweep=False) as store:
            assert store.get_run(long).status not in TERMINAL
        second = json.loads(watch.stdout.readline())
        assert second["id"] == middle
        assert second["state"] == "failed"
        with Store(cli_env["HPCSTATE_DB"], sweep=False) as store:
            assert store.get_run(long).status not in TERMINAL
        third = json.loads(watch.stdout.readline())
        assert third["id"] == long
        assert third["state"] == "failed"
        assert watch.stdout.read() == ""  # one line per run, no more
        # The exit status is as documented: the first non-zero in argument order
        # (the long job's exit 2), not the order the verdicts landed in.
        assert watch.wait(timeout=120) == 2, watch.stderr.read() if watch.stderr else ""
    finally:
        if watch.poll() is None:
            watch.kill()
            watch.wait(timeout=10)


def test_watch_json_of_runs_already_finished_prints_them_in_argument_order(
    cli_env: dict[str, str],
) -> None:
    first = _submit(0, 3, cli_env)
    second = _submit(0, 0, cli_env)
    assert hpcstate("watch", first, second, "--json", env=cli_env).code == 3
    again = hpcstate("watch", second, first, "--json", env=cli_env)
    assert [(r["id"], r["state"]) for r in again.records()] == [
        (second, "completed"),
        (first, "failed"),
    ]
    assert again.code == 3
