"""Helpers for the tests against the real loopback Slurm cluster (scripts/slurm-cluster):
its status and actions, and Driver, the reference poll loop as the live tests use it."""

from __future__ import annotations

import subprocess
from datetime import timedelta
from pathlib import Path

from hpcstate.backend import Backend
from hpcstate.testing.loop import ReferenceLoop

ROOT = Path(__file__).resolve().parents[2]
CLUSTER = ROOT / "scripts" / "slurm-cluster"
SSHD = ROOT / "scripts" / "sshd-loopback"


def cluster_status() -> str | None:
    """None when the cluster answers; otherwise why the tests must skip."""
    if not CLUSTER.exists():
        return "scripts/slurm-cluster is missing"
    try:
        done = subprocess.run(
            [str(CLUSTER), "status"], capture_output=True, text=True, timeout=60, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"scripts/slurm-cluster status failed: {exc}"
    if done.returncode != 0:
        tail = (done.stdout + done.stderr).strip().splitlines()[-3:]
        return "Slurm cluster not running (scripts/slurm-cluster start): " + " / ".join(tail)
    return None


def cluster(action: str) -> None:
    subprocess.run([str(CLUSTER), action], check=True, capture_output=True, timeout=120)


class Driver(ReferenceLoop):
    """The reference poll loop (hpcstate.testing.loop: the Tracker's poll rules, one queue
    call and at most one accounting call per poll for all items) on the wall clock, as
    the live tests use it: an item is done once accounting's final record was applied
    (an unconfirmed verdict, or one the controller stated, is not done: accounting is
    still asked)."""

    def __init__(self, backend: Backend, *, grace: timedelta = timedelta(minutes=5)) -> None:
        super().__init__(backend, grace=grace, run_id="live", await_final_record=True)

    async def poll(self) -> None:
        await self.poll_once()
