"""Portable resource options in ``submit`` (issue 18): one submit line for Slurm and
Flux, a clear refusal naming the backend where one cannot be expressed. The installed
``hpcstate`` script; the real loopback Slurm 22.05 cluster for what Slurm does with them
(read back with ``scontrol show job``)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from .conftest import hpcstate
from .test_newcomer import no_config_slurm as no_config_slurm  # the fixture


def test_time_is_not_ambiguous_any_more(cli_env: dict[str, str]) -> None:
    for flag in ("-t", "--time", "--time-limit"):
        result = hpcstate("submit", flag, "1s", "--watch", "--", "sleep", "30", env=cli_env)
        assert result.code == 201, result.err  # the time limit was applied: TIMEOUT


@pytest.mark.parametrize(
    ("backend", "args", "message"),
    [
        (
            "flux",
            ("-G", "1"),
            "-G/--gpus: backend 'flux' (flux) cannot express GPUs; choose a backend that "
            "can, or pass its own flag with --extra-arg",
        ),
        (
            "flux",
            ("--mem", "1G"),
            "--mem: backend 'flux' (flux) cannot express a memory size; choose a backend "
            "that can, or pass its own flag with --extra-arg",
        ),
        (
            "k8s",
            ("-n", "4"),
            "-n/--ntasks: backend 'k8s' (k8s) cannot express several tasks; choose a backend "
            "that can, or pass its own flag with --extra-arg",
        ),
        (
            "local",
            ("-N", "2"),
            "-N/--nodes: backend 'local' (local) cannot express several nodes; choose a "
            "backend that can, or pass its own flag with --extra-arg",
        ),
        (
            "local",
            ("--gpus", "a100:2"),
            "-G/--gpus: backend 'local' (local) cannot express GPUs; choose a backend that "
            "can, or pass its own flag with --extra-arg",
        ),
    ],
)
def test_a_resource_the_backend_cannot_express_is_refused_up_front(
    cli_env: dict[str, str], backend: str, args: tuple[str, ...], message: str
) -> None:
    result = hpcstate("submit", "--backend", backend, *args, "--", "true", env=cli_env)
    assert result.code == 64, result.err
    assert result.err.endswith(f"hpcstate: error: {message}\n")
    assert hpcstate("list", "--json", "--cached", env=cli_env).out == ""


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("-n", "0"), "argument -n/--ntasks: expected a whole number >= 1, got '0'"),
        (("-c", "two"), "argument -c/--cpus-per-task/--cpus: expected a whole number >= 1"),
        (("-G", "lots"), "-G/--gpus: expected a number of GPUs such as 2 or a100:2"),
    ],
)
def test_bad_resource_values_are_usage_errors(
    cli_env: dict[str, str], args: tuple[str, ...], message: str
) -> None:
    result = hpcstate("submit", *args, "--", "true", env=cli_env)
    assert result.code == 64
    assert f"hpcstate: error: {message}" in result.err


@pytest.mark.slurm
def test_slurm_receives_every_resource(no_config_slurm: dict[str, str], tmp_path: Path) -> None:
    result = hpcstate(
        "submit", "--backend", "slurm", "--chdir", str(tmp_path), "-t", "2m", "-n", "2",
        "-N", "1", "-c", "1", "--mem", "64M", "--json", "--", "sleep", "1",
        env=no_config_slurm, timeout=300,
    )  # fmt: skip
    assert result.code == 0, result.err
    [record] = result.records()
    shown = subprocess.run(
        ["scontrol", "show", "job", record["native_id"]],
        capture_output=True, text=True, timeout=60, check=True,
    ).stdout  # fmt: skip
    assert "TimeLimit=00:02:00" in shown
    assert re.search(r"NumNodes=1(-1)? ", shown)
    assert "NumTasks=2 CPUs/Task=1" in shown
    assert "MinMemoryNode=64M" in shown
    # GPUs reach sbatch as --gpus; this cluster has none, so Slurm refuses (69, its words).
    gpus = hpcstate(
        "submit", "--backend", "slurm", "--chdir", str(tmp_path), "-G", "1", "--", "true",
        env=no_config_slurm, timeout=300,
    )  # fmt: skip
    assert gpus.code == 69, gpus.err
    assert "Invalid generic resource (gres) specification" in gpus.err
