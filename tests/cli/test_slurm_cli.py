"""The CLI against the real loopback Slurm cluster (scripts/slurm-cluster start)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from .conftest import hpcstate

CLUSTER = Path(__file__).resolve().parents[2] / "scripts" / "slurm-cluster"


def _cluster_problem() -> str | None:
    try:
        done = subprocess.run(
            [str(CLUSTER), "status"], capture_output=True, text=True, timeout=60, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"scripts/slurm-cluster status failed: {exc}"
    if done.returncode != 0:
        return "Slurm cluster not running (scripts/slurm-cluster start)"
    return None


@pytest.fixture
def slurm_env(cli_env: dict[str, str], tmp_path: Path) -> dict[str, str]:
    problem = _cluster_problem()
    if problem is not None:
        if os.environ.get("HPCSTATE_REQUIRE_CLUSTER") == "1":
            pytest.fail(f"required system missing under CI: {problem}")
        pytest.skip(problem)
    config = tmp_path / "config.toml"
    config.write_text('default_backend = "cluster"\n[backends.cluster]\nkind = "slurm"\n')
    return {**cli_env, "HPCSTATE_CONFIG": str(config)}


@pytest.mark.slurm
def test_exit_137_on_slurm_is_an_exit_code(
    slurm_env: dict[str, str], tmp_path: Path, record_validator: Any
) -> None:
    result = hpcstate(
        "submit", "--chdir", str(tmp_path), "--time-limit", "2m", "--watch", "--interval",
        "1s", "--exit-status", "--json", "--", "sh", "-c", "echo hi; exit 137",
        env=slurm_env,
        timeout=600,
    )  # fmt: skip
    assert result.code == 137, result.err
    [record] = result.records()
    assert record_validator.is_valid(record)
    assert (record["backend"], record["state"]) == ("cluster", "failed")
    assert (record["exit_code"], record["signal"], record["confirmed"]) == (137, None, True)
    logs = hpcstate("logs", record["id"], env=slurm_env)
    assert (logs.code, logs.out) == (0, "hi\n")
    by_native = hpcstate("status", "--json", f"cluster:{record['native_id']}", env=slurm_env)
    assert by_native.records()[0]["id"] == record["id"]


@pytest.mark.slurm
def test_a_rejected_submission_is_69_with_slurms_words(slurm_env: dict[str, str]) -> None:
    result = hpcstate("submit", "--partition", "nosuch", "--", "true", env=slurm_env)
    assert result.code == 69
    assert result.err == (
        "hpcstate: error: cluster rejected the submission: sbatch --parsable exited 1: "
        "sbatch: error: Batch job submission failed: Invalid partition name specified\n"
    )
