"""The project's own backends are separate distributions: where one is not installed,
``hpcstate backends`` lists it with the command that installs it, and naming it says
so, instead of "no such backend"."""

from __future__ import annotations

import io
import json

import pytest

from hpcstate import ConfigError, registry
from hpcstate.cli._app import run_cli
from hpcstate.config import parse_config


@pytest.fixture
def only_local(monkeypatch: pytest.MonkeyPatch) -> None:
    # As after `pip install hpcstate` alone: only the core's own local backend.
    monkeypatch.setattr(registry, "available", lambda: ["local"])


def _run(*argv: str, tmp_home: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    env = {"HOME": tmp_home, "XDG_STATE_HOME": f"{tmp_home}/state"}
    code = run_cli(list(argv), env=env, stdout=out, stderr=err, tty=False)
    return code, out.getvalue(), err.getvalue()


@pytest.mark.usefixtures("only_local")
def test_backends_lists_the_missing_first_party_ones_with_their_install_command(
    tmp_path: object,
) -> None:
    code, out, err = _run("backends", tmp_home=str(tmp_path))
    assert code == 0, err
    assert err == ""
    lines = {line.split()[0]: line for line in out.splitlines()[1:]}
    assert sorted(lines) == ["flux", "k8s", "local", "slurm"]
    assert lines["slurm"].endswith("not installed: pip install 'hpcstate[slurm]'")
    assert lines["flux"].endswith("not installed: pip install 'hpcstate[flux]'")
    assert lines["k8s"].endswith("not installed: pip install 'hpcstate[k8s]'")
    assert "not installed" not in lines["local"]


@pytest.mark.usefixtures("only_local")
def test_backends_json_says_not_installed_and_how(tmp_path: object) -> None:
    code, out, _ = _run("backends", "--json", tmp_home=str(tmp_path))
    assert code == 0
    docs = {d["name"]: d for d in map(json.loads, out.splitlines())}
    assert docs["local"]["ok"] is True
    assert docs["k8s"]["ok"] is False
    assert docs["k8s"]["error"] == "not installed: pip install 'hpcstate[k8s]'"


@pytest.mark.usefixtures("only_local")
def test_naming_a_missing_first_party_backend_gives_its_install_command() -> None:
    config = parse_config(None, env={}, installed=["local"])
    with pytest.raises(ConfigError, match=r"the slurm backend is not installed: pip install "):
        config.backend("slurm")
    with pytest.raises(ConfigError, match="no backend named 'nosuch'"):
        config.backend("nosuch")
