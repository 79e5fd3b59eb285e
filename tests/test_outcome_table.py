"""docs/backends/outcomes.md is exactly what scripts/gen-outcome-table prints, covers every
recorded case, and a few of its cells say what the recordings' READMEs say (checked here
by hand: the raw recorded bytes first, then the page's row for that case)."""

from __future__ import annotations

import importlib.machinery
import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "gen-outcome-table"
PAGE = ROOT / "docs" / "backends" / "outcomes.md"
GOLDEN = ROOT / "tests" / "golden"
DASH = "\u2014"


def _generator() -> ModuleType:
    loader = importlib.machinery.SourceFileLoader("gen_outcome_table", str(SCRIPT))
    spec = importlib.util.spec_from_loader("gen_outcome_table", loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["gen_outcome_table"] = module  # dataclasses look their module up
    loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def page() -> str:
    return PAGE.read_text(encoding="utf-8")


def section(page: str, outcome: str) -> list[str]:
    """The table lines of one outcome's section ("### <outcome>")."""
    lines = page.split(f"\n### {outcome}\n", 1)[1].split("\n### ", 1)[0].splitlines()
    return [line for line in lines if line.startswith("| ")]


def row(page: str, outcome: str, system: str, case: str) -> str:
    [found] = [line for line in section(page, outcome) if line.startswith(f"| {system} | `{case}`")]
    return found


def test_the_page_is_what_the_generator_prints(page: str) -> None:
    result = subprocess.run(
        [sys.executable, str(SCRIPT)], capture_output=True, text=True, check=False, timeout=300
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == page, (
        "docs/backends/outcomes.md is stale: run scripts/gen-outcome-table > "
        "docs/backends/outcomes.md"
    )


def test_every_recorded_case_is_in_the_table() -> None:
    gen = _generator()
    shown: dict[str, set[str]] = {}
    for _, refs in gen.ROWS:
        for ref in refs:
            assert (gen.FOLDERS[ref.where] / ref.case).is_dir(), ref
            shown.setdefault(ref.where, set()).add(ref.case)

    def recorded(where: str) -> set[str]:
        folder = gen.FOLDERS[where]
        return {p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("_")}

    for where in ("s22", "s26", "flux", "k8s"):
        assert shown[where] == recorded(where), where
    # The other 26.05.3 recording fills in what the production one lacks, nothing else.
    assert shown["s26x"] == recorded("s26x") - recorded("s26")


def test_every_table_row_has_its_header_s_cells(page: str) -> None:
    """A raw | in a cell would split it: every row has as many cells as its header."""
    width = 0
    for line in page.splitlines():
        if not line.startswith("|"):
            width = 0
            continue
        cells = len(re.findall(r"(?<!\\)\|", line)) - 1
        if width == 0:
            width = cells
        assert cells == width, line


def test_slurm_26_05_sigsegv_prints_code_signal_and_reports_signal_11(page: str) -> None:
    # README (26.05.3-production): squeue_O terminal row FAILED RaisedSignal:11(...) 0:11 0:0
    raw = (GOLDEN / "slurm" / "26.05.3-production" / "sigsegv" / "squeue_O.out").read_text()
    assert "|FAILED|RaisedSignal:11(Segmentation fault)|" in raw
    assert "|0:11|0:0|" in raw
    line = row(page, "SIGSEGV: the job kills itself (`kill -SEGV $$`)", "Slurm 26.05.3", "sigsegv")
    assert "`FAILED RaisedSignal:11(Segmentation fault) exit_code 0:11 DerivedEC 0:0`" in line
    assert "68.batch: `CANCELLED 0:11`" in line
    assert line.endswith("| **failed** · signal 11 · raised_signal |")


def test_slurm_22_05_exit_137_prints_a_wait_status_and_a_lossy_sacct(page: str) -> None:
    # README (22.05.8): squeue -O exit_code 35072; sacct FAILED 9:0 (137 - 128)
    case = GOLDEN / "slurm" / "22.05.8" / "exit_137"
    assert "|35072|0|" in (case / "squeue_O.out").read_text()
    assert "|FAILED|9:0|0:0|" in (case / "sacct_P.out").read_text()
    line = row(page, "exit 137 (a plain exit code, not SIGKILL)", "Slurm 22.05.8", "exit_137")
    assert "exit_code 35072 DerivedEC 0`" in line
    assert "`FAILED 9:0 (derived 0:0)`" in line
    assert "| **failed** · exit 137 · non_zero_exit_code · sacct alone: exit 9 (ambiguous) |" in (
        line
    )


def test_flux_batch_sigterm_prints_an_exit_and_is_reported_ambiguous(page: str) -> None:
    # README (0.88.0-production): batch_sigterm returncode 143, task-exit "exit 143" (not
    # signaled): the broker turned the signal into a code.
    case = GOLDEN / "flux" / "0.88.0-production" / "batch_sigterm"
    job = json.loads((case / "jobs_json.out").read_text())
    assert (job["result"], job["returncode"], job["waitstatus"]) == ("FAILED", 143, 36608)
    assert '"signaled":0,"exitcode":143' in (case / "evidence_all.out").read_text()
    line = row(
        page, "SIGTERM: the job kills itself (`kill -TERM $$`)", "Flux 0.88.0", "batch_sigterm"
    )
    assert "`FAILED, returncode 143, waitstatus 36608`" in line
    assert "`shell.task-exit rank=0 exitcode=143`" in line
    assert "**failed** · exit 143 (ambiguous) · non_zero_exit_code · (truth: signal 15)" in line


def test_k8s_cells(page: str) -> None:
    # README (1.36.2): sigkill without the wrapper shows only exitCode 137; a foreground
    # cancel writes no condition before the Job's DELETED event.
    line = row(
        page, "SIGKILL: the job kills itself (`kill -KILL $$`)", "Kubernetes 1.36.2", "sigkill"
    )
    assert "Job `FailureTarget (BackoffLimitExceeded), Failed (BackoffLimitExceeded)`" in line
    assert "pods `exitCode 137 Error`" in line
    assert line.endswith("| **failed** · exit 137 (ambiguous) · non_zero_exit_code |")
    line = row(page, "cancelled while running", "Kubernetes 1.36.2", "cancel_running")
    assert "Job no condition, then DELETED" in line
    assert "**cancelled**" in line


def test_missing_data_is_an_em_dash(page: str) -> None:
    lines = section(page, "SIGSEGV: the job kills itself (`kill -SEGV $$`)")
    assert f"| Kubernetes 1.36.2 | {DASH} | {DASH} | {DASH} |" in lines
