"""docs/cli.md cannot drift from the code: every ``console`` block in it is run, in
order, by the installed ``hpcstate`` script on the local backend in a fresh home
directory, and each command's output is compared with the page (run ids, local job
ids and the home directory are the only things normalised; "RUN running" progress
lines depend on timing and are dropped). Every ``toml`` block loads, and the exit
status table lists every code the tool has."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest
from attrs import frozen

from hpcstate import registry
from hpcstate.cli._exitcodes import ToolExit
from hpcstate.config import parse_config

DOC = Path(__file__).resolve().parents[2] / "docs" / "cli.md"
FENCE = re.compile(r"^```(\w*)\n(.*?)^```\n", re.MULTILINE | re.DOTALL)
_NORMAL = (
    (re.compile(r"\b[0-9]{8}-[0-9]{6}-[0-9a-f]{6}\b"), "RUN"),
    (re.compile(r"\b[0-9]{14}-[0-9a-f]{8}\b"), "NATIVE"),
)
_PROGRESS = re.compile(r"\ARUN (queued|running|settling)\Z")


@frozen
class Step:
    command: str
    expected: tuple[str, ...]


def blocks(kind: str) -> list[str]:
    return [body for lang, body in FENCE.findall(DOC.read_text(encoding="utf-8")) if lang == kind]


def steps(block: str) -> list[Step]:
    found: list[Step] = []
    for line in block.splitlines():
        if line.startswith("$ "):
            found.append(Step(line[2:], ()))
        else:
            assert found, f"output before any command in a console block:\n{block}"
            last = found[-1]
            found[-1] = Step(last.command, (*last.expected, line))
    return found


def normal(lines: list[str] | tuple[str, ...], home: str) -> list[str]:
    out = []
    for line in lines:
        line = line.replace(home, "/home/alice")
        for pattern, word in _NORMAL:
            line = pattern.sub(word, line)
        # A table's columns widen with its longest cell; compare cells, not padding.
        line = re.sub(r" {2,}", "  ", line).rstrip()
        if not _PROGRESS.match(line):
            out.append(line)
    return out


def run_block(block: list[Step], env: dict[str, str], cwd: Path) -> list[list[str]]:
    """Run a block's commands in one bash (variables carry over; ``$?`` is the previous
    command's status); stdout and stderr together, per command."""
    script = []
    for n, step in enumerate(block):
        script.append(f"{step.command} 2>&1; __status=$?; printf '\\n@@%d@@\\n' {n}")
        script.append("(exit $__status)")
    done = subprocess.run(
        ["bash", "-c", "\n".join(script)],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.stderr == "", done.stderr
    parts = re.split(r"\n?@@[0-9]+@@\n", done.stdout)
    assert len(parts) == len(block) + 1, done.stdout
    return [part.splitlines() for part in parts[:-1]]


def test_every_console_block_prints_what_the_page_shows(
    cli_env: dict[str, str], tmp_path: Path
) -> None:
    home = tmp_path / "alice"
    home.mkdir()
    env = {k: v for k, v in cli_env.items() if not k.startswith(("XDG_", "HPCSTATE_"))}
    env["HOME"] = str(home)
    console = [steps(block) for block in blocks("console")]
    assert len(console) >= 6, "docs/cli.md lost its examples"
    for block in console:
        outputs = run_block(block, env, home)
        for step, output in zip(block, outputs, strict=True):
            assert normal(output, str(home)) == normal(step.expected, str(home)), (
                f"docs/cli.md: `{step.command}` printed:\n" + "\n".join(output)
            )


@pytest.mark.parametrize("block", blocks("toml"))
def test_every_toml_block_loads(block: str) -> None:
    config = parse_config(
        block, env={"HOME": "/home/alice"}, path="docs/cli.md", installed=registry.available()
    )
    assert config.backend(None).name == config.default_backend


def test_the_exit_status_table_lists_every_code() -> None:
    text = DOC.read_text(encoding="utf-8")
    table = text.split("## Exit status", 1)[1].split("\n## ", 1)[0]
    codes = [int(m) for m in re.findall(r"^\| ([0-9]+) \|", table, re.MULTILINE)]
    assert sorted(codes) == sorted(int(code) for code in ToolExit)


def test_the_runner_can_fail(cli_env: dict[str, str], tmp_path: Path) -> None:
    # The comparison above is not vacuous: a wrong expectation is caught.
    block = steps("$ hpcstate decode 0:9\n0:9 read as something else\n")
    env = {**cli_env, "HOME": str(tmp_path)}
    [output] = run_block(block, env, tmp_path)
    assert normal(output, str(tmp_path)) != normal(block[0].expected, str(tmp_path))
    assert os.path.isdir(tmp_path)
