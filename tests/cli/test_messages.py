"""Help and messages as a newcomer meets them (issue 18), through the installed
``hpcstate`` script: subcommand usage for subcommand errors, one plain sentence per
damaged row, the install hint for a backend whose dependency is missing, a --help
that tells the truth and names no file the wheel does not ship."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pytest

from .conftest import hpcstate

COMMANDS = (
    "submit", "track", "watch", "status", "list", "cancel", "logs", "prune", "decode",
    "report", "backends", "schema",
)  # fmt: skip


def test_a_subcommand_error_shows_the_subcommands_usage(cli_env: dict[str, str]) -> None:
    result = hpcstate("list", "--bogus", env=cli_env)
    assert result.code == 64
    assert result.err.startswith("usage: hpcstate list [-h]")
    assert result.err.endswith("hpcstate: error: unrecognized arguments: --bogus\n")
    watch = hpcstate("watch", "x", "--bogus", env=cli_env)
    assert watch.err.startswith("usage: hpcstate watch [-h]")


def _damage_one_of_two_runs(env: dict[str, str]) -> tuple[str, str]:
    good = hpcstate("submit", "--name", "good", "--watch", "--", "true", env=env)
    bad = hpcstate("submit", "--name", "bad", "--watch", "--", "true", env=env)
    good_id, bad_id = good.out.split()[0], bad.out.split()[0]
    with sqlite3.connect(env["HPCSTATE_DB"]) as db:
        # Half a JSON document, as a torn write would leave it.
        db.execute("UPDATE items SET doc = '{\"id\": ' WHERE run_id = ?", (bad_id,))
    return good_id, bad_id


def test_a_damaged_row_is_one_plain_sentence_once(cli_env: dict[str, str]) -> None:
    good_id, bad_id = _damage_one_of_two_runs(cli_env)
    listing = hpcstate("list", env=cli_env)
    assert listing.code == 65
    assert listing.err == (
        f"hpcstate: error: run {bad_id} is damaged in the state database and cannot be read "
        "(its document cannot be read: Expecting value: line 1 column 8 (char 7)); the other "
        "runs are listed\n"
    )
    assert good_id in listing.out  # every readable run is still listed
    status = hpcstate("status", good_id, env=cli_env)
    assert status.code == 0
    assert status.err == (
        f"hpcstate: warning: the stored job {bad_id}.0 is damaged and cannot be read (its "
        "document cannot be read: Expecting value: line 1 column 8 (char 7)); it is skipped, "
        "the other runs are not affected\n"
    )
    for text in (listing.err, status.err):
        assert "sweep" not in text
        assert "invariant" not in text


def _plugin_missing_a_dependency(root: Path) -> dict[str, str]:
    """An installed backend (a real entry point in a dist-info) whose dependency is not."""
    (root / "gpuplug").mkdir(parents=True)
    (root / "gpuplug" / "__init__.py").write_text(
        "from hpcstate.backend import API_VERSION, BackendInfo, Capabilities\n"
        "def _make(config):\n    raise AssertionError('never made')\n"
        "INFO = BackendInfo(name='gpuplug', api_version=API_VERSION, version='0.1',\n"
        "    description='test', capabilities=Capabilities(), make_backend=_make,\n"
        "    requires=('no_such_module_for_hpcstate',),\n"
        "    install_hint=\"pip install 'gpuplug[all]'\")\n",
        encoding="utf-8",
    )
    info = root / "gpuplug-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: gpuplug\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[hpcstate.backends]\ngpuplug = gpuplug:INFO\n")
    return {"PYTHONPATH": os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")]))}


def test_backends_shows_the_install_hint(cli_env: dict[str, str], tmp_path: Path) -> None:
    env = {**cli_env, **_plugin_missing_a_dependency(tmp_path / "site")}
    result = hpcstate("backends", env=env)
    assert result.code == 0, result.err
    [row] = [line for line in result.out.splitlines() if line.startswith("gpuplug")]
    assert row.split(None, 3) == ["gpuplug", "-", "-", "needs: pip install 'gpuplug[all]'"]
    assert "BROKEN" not in result.out
    [local] = [line for line in result.out.splitlines() if line.startswith("local ")]
    assert "cancel" in local


def test_submit_help_shows_the_real_default_backend(cli_env: dict[str, str]) -> None:
    plain = hpcstate("submit", "--help", env=cli_env)
    assert "(default: local," in " ".join(plain.out.split())
    chosen = hpcstate("submit", "--help", env={**cli_env, "HPCSTATE_BACKEND": "slurm"})
    assert "(default: slurm," in " ".join(chosen.out.split())
    assert "default: default" not in plain.out


@pytest.mark.parametrize("command", [None, *COMMANDS])
def test_help_names_no_file_the_wheel_does_not_ship(
    cli_env: dict[str, str], command: str | None
) -> None:
    result = hpcstate(*([command] if command else []), "--help", env=cli_env)
    assert result.code == 0, result.err
    assert "docs/" not in result.out
    assert ".md" not in result.out
