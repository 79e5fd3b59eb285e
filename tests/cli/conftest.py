"""Fixtures for the CLI tests: the JSON Schema of the record, an isolated environment."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from attrs import frozen

from hpcstate.cli import run_cli

SCHEMA_PATH = Path(__file__).resolve().parents[2] / "docs" / "schema" / "record-v1.json"


@pytest.fixture(scope="session")
def record_validator() -> Any:
    # jsonschema is a test-only dependency (the record's schema is for consumers).
    import jsonschema

    schema = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(
        schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
    )


_INHERITED_HPCSTATE = (
    "HPCSTATE_CONFIG",
    "HPCSTATE_BACKEND",
    "HPCSTATE_DB",
    "HPCSTATE_RUN_ID",
    "HPCSTATE_ITEM_ID",
    "HPCSTATE_REPORT_FILE",
    "HPCSTATE_ARRAY_INDEX",
    "HPCSTATE_DEBUG",
)


@pytest.fixture
def cli_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """A fresh machine in tmp_path: HOME, XDG dirs, a state database, no config file.

    Also applied to os.environ, for the in-process tests (the local backend's job
    directories follow XDG_STATE_HOME)."""
    home = tmp_path / "home"
    home.mkdir()
    values = {
        "HOME": str(home),
        "XDG_CONFIG_HOME": str(tmp_path / "config"),
        "XDG_STATE_HOME": str(tmp_path / "state"),
        "HPCSTATE_DB": str(tmp_path / "state.db"),
    }
    for name in _INHERITED_HPCSTATE:
        monkeypatch.delenv(name, raising=False)
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    env = {k: v for k, v in os.environ.items() if k not in _INHERITED_HPCSTATE}
    env.update(values)
    return env


@frozen
class Result:
    code: int
    out: str
    err: str

    def records(self) -> list[dict[str, Any]]:
        """stdout as JSON Lines (what `--json` prints)."""
        return [json.loads(line) for line in self.out.splitlines() if line.strip()]


def hpcstate(*args: str, env: dict[str, str], timeout: float = 120) -> Result:
    """The installed console script, in a subprocess."""
    script = shutil.which("hpcstate", path=env.get("PATH"))
    assert script is not None, "the hpcstate console script is not installed (pip install -e .)"
    done = subprocess.run(
        [script, *args], env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    return Result(done.returncode, done.stdout, done.stderr)


def invoke(*args: str, env: dict[str, str]) -> Result:
    """``hpcstate`` in this process (``run_cli``), stdout not a terminal."""
    out, err = io.StringIO(), io.StringIO()
    code = run_cli(list(args), env=env, stdout=out, stderr=err, tty=False)
    return Result(code, out.getvalue(), err.getvalue())
