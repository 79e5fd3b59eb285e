"""End to end: the real runtime Tracker and the real K8sBackend, against the recorded
1.36.2 control plane replayed by replay_server.py (the recorded watch streams, in order,
with their gaps on a virtual clock; see its docstring).

Every recorded case must get its right FIRST verdict (the first terminal state the
tracker stores), written by hand from the recordings' README. The cancel is sent by a
second process (the `hpcstate cancel` CLI sharing the store); TTL 0 deletes the Job in
the same second as Failed.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from hpcstate import ExitStatus, State
from hpcstate.backend import BackendConfig, JobSpec
from hpcstate.runtime import Tracker

from .recordings import load
from .replay_server import ReplayServer

pytestmark = pytest.mark.asyncio
TERMINAL = {
    State.COMPLETED,
    State.FAILED,
    State.TIMEOUT,
    State.CANCELLED,
    State.GONE,
    State.OUT_OF_MEMORY,
    State.NODE_FAIL,
    State.PREEMPTED,
}

#: case -> {array index or None: (state, exit)}, by hand from fixtures/1.36.2/README.md.
EXPECTED: dict[str, dict[int | None, tuple[State, ExitStatus | None]]] = {
    "ok": {None: (State.COMPLETED, ExitStatus.exited(0))},
    "exit3": {None: (State.FAILED, ExitStatus.exited(3))},
    "sigkill": {None: (State.FAILED, ExitStatus.exited(137, ambiguous="no wrapper"))},
    "w_sigkill": {None: (State.FAILED, ExitStatus.killed(9))},
    "timeout": {None: (State.TIMEOUT, None)},
    "retry_then_ok": {None: (State.COMPLETED, ExitStatus.exited(0))},
    "ttl_fail": {None: (State.FAILED, ExitStatus.exited(3))},
    "indexed_one_fails": {
        0: (State.COMPLETED, ExitStatus.exited(0)),
        1: (State.FAILED, ExitStatus.exited(3)),
        2: (State.COMPLETED, ExitStatus.exited(0)),
    },
    # No verdict was ever written (someone else's background delete): gone, not failed.
    "deleted_mid_run": {None: (State.GONE, None)},
}


def _spec(recording: Any) -> tuple[JobSpec, dict[str, Any]]:
    argv = list(recording.meta["submitted_with"])
    options = {
        k: v
        for k, v in recording.meta["hpcstate_backend_options"].items()
        if k not in ("kind", "namespace", "manifest")
    }
    array = argv[argv.index("--array") + 1] if "--array" in argv else None
    limit = None
    if "--time-limit" in argv:
        limit = timedelta(seconds=int(argv[argv.index("--time-limit") + 1].rstrip("s")))
    return JobSpec(command=recording.argv, array=array, time_limit=limit), options


def _same_exit(got: ExitStatus | None, want: ExitStatus | None) -> bool:
    if want is None:
        return True  # not part of the truth for this case
    return got is not None and (got.code, got.signal, got.ambiguous is not None) == (
        want.code,
        want.signal,
        want.ambiguous is not None,
    )


class Replay:
    def __init__(self, case: str, tmp_path: Path) -> None:
        self.recording = load(case)
        self.server = ReplayServer(self.recording, scale=0.05)
        self.tmp_path = tmp_path
        self.db = tmp_path / "hpcstate.db"
        self.kubeconfig = tmp_path / "kubeconfig"

    async def __aenter__(self) -> Replay:
        await self.server.start()
        self.kubeconfig.write_text(json.dumps(self.server.kubeconfig()))
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.server.stop()

    def options(self, extra: dict[str, Any]) -> dict[str, Any]:
        return {
            "kubeconfig": str(self.kubeconfig),
            "namespace": self.recording.namespace,
            "retry_initial_s": 0.05,
            "retry_max_s": 0.2,
            **extra,
        }

    def tracker(self, extra: dict[str, Any]) -> Tracker:
        config = BackendConfig(name="k8s", kind="k8s", options=self.options(extra))
        return Tracker(
            store=self.db,
            backends={"k8s": config},
            fast_interval=0.05,
            max_interval=0.5,
            wake_check_interval=0.05,
            seed=1,
        )

    def first_verdicts(self, tracker: Tracker, run_id: str) -> dict[int | None, Any]:
        """Each item's first terminal event, by array index."""
        index = {i.id: i.array_index for i in tracker.get_run(run_id).items}
        first: dict[int | None, Any] = {}
        for stored in tracker.store.events(run_id=run_id):
            event = stored.event
            if event.state in TERMINAL and index[event.item_id] not in first:
                first[index[event.item_id]] = event
        return first


def _exit_of(event: Any) -> ExitStatus | None:
    stats = getattr(event, "stats", None)
    return stats.exit if stats is not None else getattr(event, "exit", None)


@pytest.mark.parametrize("case", sorted(EXPECTED))
async def test_recorded_case_first_verdict_through_the_tracker(case: str, tmp_path: Path) -> None:
    async with Replay(case, tmp_path) as replay:
        spec, options = _spec(replay.recording)
        async with replay.tracker(options) as tracker:
            run = await tracker.submit(spec, backend="k8s")
            await asyncio.wait_for(replay.server.finished.wait(), 60)
            run = await tracker.wait(run.id, timeout=60)
            first = replay.first_verdicts(tracker, run.id)
            items = {i.array_index: i for i in run.items}
        assert replay.server.problems == []
        assert set(first) == set(EXPECTED[case])
        for index, (state, exit_) in EXPECTED[case].items():
            assert first[index].state is state, (index, first[index])
            assert items[index].state is state
            assert _same_exit(items[index].stats.exit, exit_), items[index].stats.exit


def _cli(replay: Replay, *args: str) -> subprocess.CompletedProcess[str]:
    config = replay.tmp_path / "config.toml"
    config.write_text(
        "[backends.k8s]\n"
        'kind = "k8s"\n'
        f"kubeconfig = {json.dumps(str(replay.kubeconfig))}\n"
        f"namespace = {json.dumps(replay.recording.namespace)}\n"
        'image = "busybox:1.36"\n'
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("HPCSTATE_")}
    return subprocess.run(
        [sys.executable, "-m", "hpcstate", "--config", str(config), "--db", str(replay.db), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )


async def test_cancel_from_a_second_process_is_cancelled(tmp_path: Path) -> None:
    # The core's rule (issue 13, ff4f206): an item carrying the stored cancel_requested
    # marker that then vanishes is CANCELLED; this process never sent the DELETE.
    async with Replay("cancel_running", tmp_path) as replay:
        spec, options = _spec(replay.recording)
        async with replay.tracker(options) as tracker:
            run = await tracker.submit(spec, backend="k8s")
            for _ in range(600):  # the payload runs: cancel it, as the recording did
                if tracker.get_run(run.id).items[0].state is State.RUNNING:
                    break
                await asyncio.sleep(0.05)
            assert tracker.get_run(run.id).items[0].state is State.RUNNING
            done = await asyncio.to_thread(_cli, replay, "cancel", run.id)
            assert done.returncode == 0, done.stderr
            run = await tracker.wait(run.id, timeout=60)
            first = replay.first_verdicts(tracker, run.id)
        # The second process sent one Foreground DELETE; the first saw the Job vanish
        # without a condition (real 1.36), and the stored marker makes it CANCELLED.
        assert [d.get("propagationPolicy") for d in replay.server.deletes] == ["Foreground"]
        assert first[None].state is State.CANCELLED
        assert run.items[0].state is State.CANCELLED


async def test_cancel_from_the_same_process_is_cancelled(tmp_path: Path) -> None:
    async with Replay("cancel_running", tmp_path) as replay:
        spec, options = _spec(replay.recording)
        async with replay.tracker(options) as tracker:
            run = await tracker.submit(spec, backend="k8s")
            for _ in range(600):
                if tracker.get_run(run.id).items[0].state is State.RUNNING:
                    break
                await asyncio.sleep(0.05)
            await tracker.cancel(run.id)
            run = await tracker.wait(run.id, timeout=60)
            first = replay.first_verdicts(tracker, run.id)
        assert [d.get("propagationPolicy") for d in replay.server.deletes] == ["Foreground"]
        assert first[None].state is State.CANCELLED
