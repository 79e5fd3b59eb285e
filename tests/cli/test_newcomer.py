"""The CLI as a newcomer meets it (issue 18): list filters before it limits, track
checks the id with the backend before recording anything, every installed backend kind
works by name with no configuration. The installed ``hpcstate`` script, the real local
backend, and the real loopback Slurm 22.05 cluster for the Slurm cases."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from .conftest import hpcstate
from .test_slurm_cli import _cluster_problem


@pytest.fixture
def no_config_slurm(cli_env: dict[str, str]) -> dict[str, str]:
    """The loopback cluster, and NO configuration file at all."""
    problem = _cluster_problem()
    if problem is not None:
        if os.environ.get("HPCSTATE_REQUIRE_CLUSTER") == "1":
            pytest.fail(f"required system missing under CI: {problem}")
        pytest.skip(problem)
    return cli_env


def test_list_filters_before_it_limits(cli_env: dict[str, str]) -> None:
    # Oldest first: two failures, then three successes (newer than both).
    for script in ("exit 1", "exit 2", "true", "true", "true"):
        done = hpcstate(
            "submit", "--watch", "--no-exit-status", "--", "sh", "-c", script, env=cli_env
        )
        assert done.code == 0, done.err
    result = hpcstate("list", "--state", "failed", "--limit", "2", env=cli_env)
    assert result.code == 0, result.err
    rows = result.out.splitlines()[1:]
    assert [row.split()[3:5] for row in rows] == [["failed", "exit"], ["failed", "exit"]]
    assert [row.split()[5] for row in rows] == ["2", "1"]  # newest first
    one = hpcstate("list", "--state", "completed", "--limit", "1", "--json", env=cli_env)
    assert [r["state"] for r in one.records()] == ["completed"]


def test_track_refuses_a_job_the_backend_never_heard_of(cli_env: dict[str, str]) -> None:
    result = hpcstate("track", "local:doesnotexist", env=cli_env)
    assert result.code == 66, result.err
    assert result.err == (
        "hpcstate: error: local has no job 'doesnotexist': neither its queue nor its "
        "accounting knows it (check the id; nothing was recorded)\n"
    )
    assert hpcstate("list", "--json", "--cached", env=cli_env).out == ""


def test_track_adopts_a_real_local_job(cli_env: dict[str, str]) -> None:
    first = hpcstate("submit", "--json", "--watch", "--", "true", env=cli_env)
    [record] = first.records()
    adopted = hpcstate("track", "--watch", f"local:{record['native_id']}", env=cli_env)
    assert adopted.code == 0, adopted.err
    assert adopted.out.splitlines()[-1].endswith("completed: exit 0 (confirmed by process)")


@pytest.mark.slurm
def test_slurm_by_name_with_no_configuration(
    no_config_slurm: dict[str, str], tmp_path: Path
) -> None:
    result = hpcstate(
        "submit", "--backend", "slurm", "--chdir", str(tmp_path), "--watch", "--interval",
        "1s", "--json", "--", "sh", "-c", "exit 3",
        env=no_config_slurm, timeout=600,
    )  # fmt: skip
    assert result.code == 3, result.err  # a failed verdict fails watch (docs/cli.md)
    [record] = result.records()
    assert (record["backend"], record["state"], record["exit_code"]) == ("slurm", "failed", 3)
    by_native = hpcstate("status", "--json", f"slurm:{record['native_id']}", env=no_config_slurm)
    assert by_native.records()[0]["id"] == record["id"]


@pytest.mark.slurm
def test_track_on_slurm_checks_the_id_first(
    no_config_slurm: dict[str, str], tmp_path: Path
) -> None:
    unknown = hpcstate("track", "slurm:987654321", env=no_config_slurm, timeout=300)
    assert unknown.code == 66, unknown.err
    assert "slurm has no job '987654321'" in unknown.err
    assert hpcstate("list", "--json", "--cached", env=no_config_slurm).out == ""
    sbatch = subprocess.run(
        ["sbatch", "--parsable", f"--chdir={tmp_path}", "--wrap", "true"],
        capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    native_id = sbatch.stdout.strip().split(";")[0]
    adopted = hpcstate("track", f"slurm:{native_id}", env=no_config_slurm, timeout=300)
    assert adopted.code == 0, adopted.err
    [record] = hpcstate("list", "--json", "--cached", env=no_config_slurm).records()
    assert (record["backend"], record["native_id"]) == ("slurm", native_id)


def test_a_failed_verdict_fails_watch_by_default(cli_env: dict[str, str]) -> None:
    # A CI gate that forgets a flag must not pass: watch exits as the job did, as
    # `sbatch --wait`, `bsub -K` and `flux run` do; --no-exit-status opts out.
    submitted = hpcstate("submit", "--", "sh", "-c", "exit 5", env=cli_env)
    run_id = submitted.out.strip()
    assert hpcstate("watch", run_id, env=cli_env).code == 5
    lenient = hpcstate("watch", "--no-exit-status", run_id, env=cli_env)
    assert lenient.code == 0, lenient.err
    assert lenient.out.endswith(f"{run_id} failed: exit 5 (confirmed by process)\n")
    both = hpcstate("watch", "--no-exit-status", "--require-confirmed", run_id, env=cli_env)
    assert both.code == 64
    killed = hpcstate("submit", "--watch", "--", "sh", "-c", "kill -TERM $$", env=cli_env)
    assert killed.code == 143  # 128 + SIGTERM, as a shell reports it
