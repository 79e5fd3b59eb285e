from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_state_docs_are_generated_from_the_table() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "gen-state-docs"), "--check"], check=False
    )
    assert result.returncode == 0, "docs/concepts/states.md is stale: run scripts/gen-state-docs"
