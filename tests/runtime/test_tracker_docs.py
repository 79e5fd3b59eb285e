"""Every Python block of docs/concepts/runtime.md runs, as written, on the local backend
(issue 18: the docs cannot drift from the code).

Each block runs in a fresh interpreter (top-level ``await`` allowed, as in ``python -m
asyncio``), in order, in one scratch directory with its own HOME, XDG directories and no
config file, so every block sees what the earlier ones stored (the workflow example's
"restart" is a real new process). A block whose first line is ``# NAME.py`` is a file
the page tells the reader to save: it is written there, and later blocks import it.
The verdicts checked below are written by hand from what the page's tasks do."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from hpcstate import State
from hpcstate.runtime import Store

DOC = Path(__file__).resolve().parents[2] / "docs" / "concepts" / "runtime.md"
_BLOCK = re.compile(r"^```python\n(.*?)^```$", re.DOTALL | re.MULTILINE)
_FILE = re.compile(r"\A# ([A-Za-z_][A-Za-z0-9_]*\.py)\n")

# Runs one block: top-level await allowed, like `python -m asyncio`.
_RUNNER = """
import ast, asyncio, sys, types
source = sys.stdin.read()
code = compile(source, "<doc block>", "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
namespace = {"__name__": "__main__"}
result = eval(code, namespace)
if isinstance(result, types.CoroutineType):
    asyncio.run(result)
"""


def blocks() -> list[str]:
    return _BLOCK.findall(DOC.read_text(encoding="utf-8"))


@pytest.fixture
def scratch(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    home = tmp_path / "home"
    work = tmp_path / "work"
    for directory in (home, work, home / ".config", home / ".local" / "state"):
        directory.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HPCSTATE_", "XDG_", "SLURM_"))}
    env.update(
        HOME=str(home),
        XDG_CONFIG_HOME=str(home / ".config"),
        XDG_STATE_HOME=str(home / ".local" / "state"),
        PYTHONPATH=os.pathsep.join((str(work), str(DOC.parents[2] / "src"))),
    )
    return work, env


def test_every_python_block_of_the_runtime_page_runs(scratch: tuple[Path, dict[str, str]]) -> None:
    work, env = scratch
    found = blocks()
    assert len(found) >= 6  # the page's examples (a lost fence would silently skip some)
    outputs: list[str] = []
    for number, block in enumerate(found, 1):
        saved = _FILE.match(block)
        if saved is not None:
            (work / saved.group(1)).write_text(block, encoding="utf-8")
            outputs.append("")
            continue
        done = subprocess.run(
            [sys.executable, "-c", _RUNNER],
            input=block,
            cwd=work,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, f"block {number} of {DOC.name} failed:\n{block}\n{done.stderr}"
        outputs.append(done.stdout)

    # The quick start: a job that prints and exits 3.
    assert "Finished failed" in outputs[0]
    assert "failed exit 3 True" in outputs[0]
    # SyncTracker's blocking watch, to the end.
    assert outputs[1].splitlines()[-1] == "completed"
    # BackendConfig from Python.
    assert outputs[2].splitlines() == ["scratch completed", "True"]
    # The workflow: the first process submits and leaves; the restart submits nothing
    # again and gets each verdict (sleep n/2; exit n % 2).
    first, restart = outputs[-2], outputs[-1]
    assert first.strip() == "{}"
    assert restart.splitlines()[-1] == (
        "[('demo/task-0', 'completed'), ('demo/task-1', 'failed'), "
        "('demo/task-2', 'completed'), ('demo/task-3', 'failed')]"
    )
    with Store(Path(env["XDG_STATE_HOME"]) / "hpcstate" / "hpcstate.db", sweep=False) as store:
        demo = [r for r in store.list_runs() if r.name.startswith("demo/")]
        assert sorted(r.name for r in demo) == [f"demo/task-{n}" for n in range(4)]  # once each
        states = {r.name: r.status for r in demo}
    assert states == {
        "demo/task-0": State.COMPLETED,
        "demo/task-1": State.FAILED,
        "demo/task-2": State.COMPLETED,
        "demo/task-3": State.FAILED,
    }
