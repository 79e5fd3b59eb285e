"""docs/backends/k8s.md's configuration example works as written (issue 13: the old
``options = { kubeconfig = ... }`` form exited 78, "unknown k8s option(s) options").

The example's TOML block is copied from the page as it is and run through the real CLI,
in a separate process, against the fake API server, with ``~/.kube/config`` (HOME is a
temporary directory) holding the context ``prod`` the example names.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import sys
from pathlib import Path

import pytest

from hpcstate.config import parse_config

from .fake_apiserver import FakeCluster

DOC = Path(__file__).parents[2] / "docs" / "backends" / "k8s.md"


def config_example() -> str:
    blocks = re.findall(r"```toml\n(.*?)```", DOC.read_text(), re.DOTALL)
    [block] = [b for b in blocks if 'kind = "k8s"' in b]
    return block


def test_the_example_parses_to_the_documented_options() -> None:
    config = parse_config(config_example(), env={}, path="k8s.md", installed=["k8s"])
    backend = config.backends["cluster"]
    assert backend.kind == "k8s"
    assert dict(backend.options) == {
        "kubeconfig": "~/.kube/config",
        "context": "prod",
        "namespace": "batch",
        "image": "python:3.12-slim",
        "wrapper": True,
    }


@pytest.mark.asyncio
async def test_the_example_runs_through_the_cli(cluster: FakeCluster, tmp_path: Path) -> None:
    home = tmp_path / "home"
    (home / ".kube").mkdir(parents=True)
    kubeconfig = cluster.kubeconfig(namespace="default")
    kubeconfig["contexts"][0]["name"] = "prod"
    kubeconfig["current-context"] = "elsewhere"  # the example's `context` must be used
    kubeconfig["contexts"].append({"name": "elsewhere", "context": {"cluster": "x", "user": "y"}})
    (home / ".kube" / "config").write_text(json.dumps(kubeconfig))
    config = tmp_path / "config.toml"
    config.write_text(config_example())
    env = {k: v for k, v in os.environ.items() if not k.startswith("HPCSTATE_")}
    env["HOME"] = str(home)
    argv = [
        sys.executable,
        "-m",
        "hpcstate",
        "--config",
        str(config),
        "--db",
        str(tmp_path / "hpcstate.db"),
        "submit",
        "--backend",
        "cluster",
        "--watch",
        "--json",
        "--",
        "sh",
        "-c",
        "kill -KILL $$",
    ]
    proc = await asyncio.create_subprocess_exec(
        *argv,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode != 78, err.decode()  # 78: a configuration error
    records = [json.loads(line) for line in out.decode().splitlines() if line.strip()]
    assert records, err.decode()
    last = records[-1]
    # The Job went to the example's namespace, with the wrapper: SIGKILL is exact, and
    # the reason is the signal (the Job's BackoffLimitExceeded is only its detail).
    assert [ns for ns, _ in cluster.objects["jobs"]] == ["batch"]
    assert (last["state"], last["exit_code"], last["signal"]) == ("failed", None, 9)
    assert last["reason"]["kind"] == "raised_signal"
    assert proc.returncode == 128 + 9
