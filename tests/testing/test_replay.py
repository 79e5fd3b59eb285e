"""hpcstate.testing.replay: the recorded-timeline runner, on a small hand-made recording
and on the real Slurm 26.05.3 production recording."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

import pytest

from hpcstate.backend import Command
from hpcstate.testing import UnexpectedCommand, VirtualClock
from hpcstate.testing.golden import GoldenError
from hpcstate.testing.replay import (
    ReplayRunner,
    files_absent,
    load_recording,
    load_recordings,
)

PRODUCTION = Path(__file__).resolve().parents[1] / "golden" / "slurm" / "26.05.3-production"


def _write_case(root: Path) -> Path:
    case = root / "job"
    case.mkdir()
    entries = [
        ("q_pending", "2026-01-01T10:00:00+00:00", ["q", "7"], {"TZ": "UTC"}, None),
        ("q_running", "2026-01-01T10:00:05+00:00", ["q", "7"], {"TZ": "UTC"}, None),
        ("q_gone", "2026-01-01T10:01:00+00:00", ["q", "7"], {"TZ": "UTC"}, None),
        ("sub", "2026-01-01T09:59:59+00:00", ["sub"], {}, "script.sh"),
    ]
    doc = []
    for stem, utc, argv, env, stdin_file in entries:
        doc.append(
            {
                "file": stem,
                "utc": utc,
                "argv": argv,
                "env": env,
                "unset_env": ["X_*"],
                "stdin_file": stdin_file,
                "timeout_s": 60.0,
            }
        )
        (case / f"{stem}.out").write_text(f"{stem}\n")
        (case / f"{stem}.rc").write_text("1\n" if stem == "q_gone" else "0\n")
    (case / "q_gone.err").write_text("no such job\n")
    (case / "script.sh").write_text("#!/bin/sh\nexit 0\n")
    (case / "commands.json").write_text(json.dumps(doc))
    (case / "case.json").write_text(
        json.dumps(
            {
                "run_id": "r1",
                "spec": {
                    "command": ["true"],
                    "tag": "hpcstate-r1.0",
                    "environment": {"HPCSTATE_RUN_ID": "r1", "KEEP": "1"},
                },
            }
        )
    )
    return case


def _q(argv: tuple[str, ...] = ("q", "7"), env: dict[str, str] | None = None) -> Command:
    return Command(argv=argv, env={"TZ": "UTC"} if env is None else env, unset_env=("X_*",))


async def test_answers_in_recorded_order_then_repeat_the_last(tmp_path: Path) -> None:
    runner = ReplayRunner(load_recording(_write_case(tmp_path)))
    outs = [(await runner.run(_q())).stdout for _ in range(4)]
    assert outs == ["q_pending\n", "q_running\n", "q_gone\n", "q_gone\n"]
    last = await runner.run(_q())
    assert (last.returncode, last.stderr) == (1, "no such job\n")
    assert runner.used() == ["q_pending", "q_running", "q_gone", "q_gone", "q_gone"]


async def test_matching_is_exact_argv_env_unset_and_stdin(tmp_path: Path) -> None:
    runner = ReplayRunner(load_recording(_write_case(tmp_path)))
    for wrong in (
        _q(("q", "8")),
        _q(env={}),
        _q(env={"TZ": "UTC", "LANG": "C"}),
        Command(argv=("q", "7"), env={"TZ": "UTC"}),  # no unset_env
        Command(argv=("sub",), unset_env=("X_*",), stdin="#!/bin/sh\nexit 1\n"),
        Command(argv=("sub",), unset_env=("X_*",)),  # no stdin where one was recorded
    ):
        with pytest.raises(UnexpectedCommand):
            await runner.run(wrong)
    assert len(runner.unexpected) == 6
    ok = await runner.run(Command(argv=("sub",), unset_env=("X_*",), stdin="#!/bin/sh\nexit 0\n"))
    assert ok.stdout == "sub\n"


async def test_the_clock_moves_to_the_recorded_times_never_back(tmp_path: Path) -> None:
    case = load_recording(_write_case(tmp_path))
    assert case.started_at == datetime(2026, 1, 1, 10, 0, tzinfo=timezone.utc)
    clock = VirtualClock(datetime(2026, 1, 1, 10, 0, 2, tzinfo=timezone.utc))
    runner = ReplayRunner(case, clock=clock)
    await runner.run(_q())  # recorded at 10:00:00: earlier than now, the clock stays
    assert clock.now() == datetime(2026, 1, 1, 10, 0, 2, tzinfo=timezone.utc)
    await runner.run(_q())
    assert clock.now() == datetime(2026, 1, 1, 10, 0, 5, tzinfo=timezone.utc)


async def test_fallback_answers_only_the_runtimes_report_read(tmp_path: Path) -> None:
    runner = ReplayRunner(load_recording(_write_case(tmp_path)), fallback=files_absent)
    recorded = load_recording(PRODUCTION / "exit_3").command("read_text_files")
    read = Command(argv=recorded.argv, stdin="/x/report.json\0")
    answer = await runner.run(read)
    assert (answer.returncode, answer.stdout) == (0, "")
    assert runner.answers == [None]
    with pytest.raises(UnexpectedCommand):
        await runner.run(Command(argv=("xargs", "-0", "cat")))


def test_tracker_spec_drops_what_the_tracker_adds(tmp_path: Path) -> None:
    case = load_recording(_write_case(tmp_path))
    assert case.run_id == "r1"
    assert case.submitted_spec().tag == "hpcstate-r1.0"
    spec = case.tracker_spec()
    assert spec.tag == ""
    assert dict(spec.environment) == {"KEEP": "1"}


def test_bad_recordings_are_named(tmp_path: Path) -> None:
    case = _write_case(tmp_path)
    (case / "q_running.rc").unlink()
    with pytest.raises(GoldenError, match=r"q_running\.rc: missing"):
        load_recording(case)
    with pytest.raises(GoldenError, match=r"no commands\.json"):
        load_recording(tmp_path)
    (case / "commands.json").write_text('[{"file": "q", "utc": "noon"}]')
    with pytest.raises(GoldenError, match="not an ISO time"):
        load_recording(case)


def test_every_production_case_loads_with_its_stdin() -> None:
    cases = load_recordings(PRODUCTION)
    assert len(cases) >= 30
    exit_3 = next(c for c in cases if c.name == "exit_3")
    sbatch = exit_3.command("sbatch")
    assert sbatch.stdin == (PRODUCTION / "exit_3" / "case.sh").read_text()
    assert sbatch.result.stdout.strip() == "64"
    assert exit_3.command("squeue_O_after").result.returncode == 1
