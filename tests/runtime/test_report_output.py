"""Self-report documents and the output checks (pure parts), and a remote-style
self-report file picked up by the tracker through a CommandBackend."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from hpcstate import ConfigError, ExitStatus, MarkerCode, SchemaError, Source, State
from hpcstate.backend import Capabilities, JobSpec
from hpcstate.runtime import (
    CommandBackend,
    ErrorPattern,
    OutputSnapshot,
    OutputStall,
    SelfReport,
    Store,
    SuccessMarker,
    Tracker,
    report,
)
from hpcstate.runtime._output import check_from_dict, check_to_dict
from hpcstate.runtime._report import REPORT_FILE_ENV, RUN_ID_ENV

from .fakes import VirtualClock
from .test_command_backend import make_backend

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc)


def snap(*lines: str, quiet_for: float | None = 0) -> OutputSnapshot:
    last = None if quiet_for is None else NOW - timedelta(seconds=quiet_for)
    return OutputSnapshot(tail=lines, last_output_at=last, size=sum(len(x) for x in lines))


# -- output checks -------------------------------------------------------------------------


def test_success_marker_settles_never_confirms() -> None:
    check = SuccessMarker(pattern=r"^ALL DONE$")
    assert check.check(snap("working", "ALL DONE?"), native_id="1", now=NOW) is None
    found = check.check(snap("working", "ALL DONE"), native_id="1", now=NOW)
    assert found is not None
    assert (found.state, found.final, found.source) == (State.COMPLETED, False, Source.OUTPUT_CHECK)


def test_error_pattern_only_looks_at_the_last_lines() -> None:
    check = ErrorPattern(patterns=["Traceback", "CUDA error"], last_lines=2)
    assert check.check(snap("Traceback (old)", "ok", "ok"), native_id="1", now=NOW) is None
    found = check.check(
        snap("ok", "RuntimeError: CUDA error: out of memory"), native_id="1", now=NOW
    )
    assert found is not None
    assert found.state is State.FAILED
    assert "CUDA error" in found.detail


def test_output_stall() -> None:
    check = OutputStall(limit_s=60)
    assert check.check(snap("x", quiet_for=59), native_id="1", now=NOW) is None
    assert check.check(snap("x", quiet_for=None), native_id="1", now=NOW) is None
    found = check.check(snap("x", quiet_for=61), native_id="1", now=NOW)
    assert found is not None
    assert found.state is State.FAILED
    assert "no output for 61 s" in found.detail


def test_checks_round_trip_as_documents() -> None:
    for check in (
        SuccessMarker(pattern="x"),
        ErrorPattern(patterns=["a", "b"]),
        OutputStall(limit_s=5),
    ):
        doc = check_to_dict(check)
        assert doc is not None
        assert check_from_dict(json.loads(json.dumps(doc))) == check


def test_bad_checks_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="not a valid regular expression"):
        ErrorPattern(patterns=["("])
    with pytest.raises(ConfigError, match="unknown output check kind"):
        check_from_dict({"kind": "telepathy"})
    with pytest.raises(ConfigError, match="limit_s must be > 0"):
        OutputStall(limit_s=0)


# -- self-report documents -------------------------------------------------------------------


def test_report_to_a_file_with_array_index(tmp_path: Path) -> None:
    env = {
        RUN_ID_ENV: "r1",
        REPORT_FILE_ENV: str(tmp_path / "rep-{array_index}.json"),
        "SLURM_ARRAY_TASK_ID": "7",
    }
    made = report(-9, environ=env, now=NOW, detail="killed myself")
    assert made.exit == ExitStatus.killed(9)  # a negative return code is a signal
    written = json.loads((tmp_path / "rep-7.json").read_text())
    back = SelfReport.from_dict(written)
    assert back == made
    assert back.array_index == 7


@pytest.mark.parametrize("index", ["²", "٣", "1²", "-1", ""])
def test_an_array_index_that_is_not_ascii_digits_is_ignored(tmp_path: Path, index: str) -> None:
    # "²".isdigit() is True but int("²") raises; "٣" would be read as 3.
    env = {
        RUN_ID_ENV: "r1",
        REPORT_FILE_ENV: str(tmp_path / "rep-{array_index}.json"),
        "SLURM_ARRAY_TASK_ID": index,
    }
    made = report(0, environ=env, now=NOW)
    assert made.array_index is None
    assert (tmp_path / "rep-.json").is_file()


def test_report_to_the_store(tmp_path: Path) -> None:
    db = tmp_path / "db"
    report(3, environ={RUN_ID_ENV: "r1", "HPCSTATE_ITEM_ID": "r1.0", "HPCSTATE_DB": str(db)})
    with Store(db) as store:
        (row,) = store.open_self_reports()
    assert row.item_id == "r1.0"
    assert SelfReport.from_dict(row.doc).exit == ExitStatus.exited(3)


def test_report_never_replaces_a_device_or_directory(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not a regular file"):
        report(0, environ={RUN_ID_ENV: "r"}, report_file=str(tmp_path))
    assert tmp_path.is_dir()


def test_report_outside_hpcstate_is_a_clear_error() -> None:
    with pytest.raises(ConfigError, match="HPCSTATE_RUN_ID is not set"):
        report(0, environ={})
    with pytest.raises(ConfigError, match="nowhere to report"):
        report(0, environ={RUN_ID_ENV: "r"})


def test_report_codes_above_128_stay_exit_codes(tmp_path: Path) -> None:
    made = report(137, environ={RUN_ID_ENV: "r"}, report_file=str(tmp_path / "r.json"))
    assert made.exit.code == 137
    assert made.exit.signal is None
    assert made.exit.ambiguous  # "maybe a signal", never decided here


def test_bad_report_document_is_a_schema_error() -> None:
    with pytest.raises(SchemaError, match="invalid self-report"):
        SelfReport.from_dict({"run_id": "r", "exit": "zero"})


# -- a remote-style report file, read through the backend ---------------------------------


async def test_tracker_reads_report_files_for_settling_items(tmp_path: Path, db_path: Path) -> None:
    toy = tmp_path / "toy"
    toy.mkdir()
    clock = VirtualClock()
    backend = make_backend(toy, clock)
    backend.capabilities = Capabilities(accounting=False, idempotent_submit=True, report_files=True)
    out_dir = tmp_path / "out"
    tracker = Tracker(store=db_path, backends={"toy": backend}, clock=clock)
    run = await tracker.submit(
        JobSpec(command=["x"], stdout=str(out_dir / "job.out")), backend="toy"
    )
    (toy / "state-101").write_text("running")
    await tracker.poll_once()
    # The job reports (through the file hpcstate told it about), then leaves the queue.
    spec_env = tracker.store.get_item_row(run.items[0].id).extra
    assert spec_env["report_file"] == str(out_dir / f"hpcstate-report-{run.items[0].id}.json")
    report(5, environ={RUN_ID_ENV: run.id, REPORT_FILE_ENV: spec_env["report_file"]})
    (toy / "state-101").unlink()
    clock.advance(2)
    await tracker.poll_once()
    item = tracker.get_run(run.id).items[0]
    assert item.state is State.SETTLING  # the job's word alone is never a verdict
    assert item.has_marker(MarkerCode.SELF_REPORTED.value)
    assert item.exit == ExitStatus.exited(5)
    await tracker.aclose()


async def _running_toy_jobs(
    tmp_path: Path, db_path: Path, *, self_report: bool, count: int
) -> tuple[Tracker, list[str], Path, VirtualClock]:
    toy = tmp_path / "toy"
    toy.mkdir()
    clock = VirtualClock()
    backend = make_backend(toy, clock)
    backend.capabilities = Capabilities(
        accounting=False, idempotent_submit=True, self_report=self_report, report_files=True
    )
    tracker = Tracker(store=db_path, backends={"toy": backend}, clock=clock)
    out = tmp_path / "out" / "job.out"
    runs = [
        await tracker.submit(JobSpec(command=["x"], stdout=str(out)), backend="toy")
        for _ in range(count)
    ]
    for native in range(101, 101 + count):
        (toy / f"state-{native}").write_text("running")
    await tracker.poll_once()
    return tracker, [r.id for r in runs], toy, clock


async def test_report_files_of_running_items_are_read_in_one_command(
    tmp_path: Path, db_path: Path
) -> None:
    tracker, run_ids, _, clock = await _running_toy_jobs(
        tmp_path, db_path, self_report=True, count=3
    )
    backend = tracker.backend("toy")
    assert isinstance(backend, CommandBackend)
    # The last job reports while the queue still lists it running (it has not ended yet
    # as far as the scheduler knows): its report alone moves it to SETTLING.
    last = tracker.get_run(run_ids[-1]).items[0]
    row = tracker.store.get_item_row(last.id)
    report(0, environ={RUN_ID_ENV: run_ids[-1], REPORT_FILE_ENV: row.extra["report_file"]})
    before = backend.commands_run
    clock.advance(2)
    await tracker.poll_once()
    assert backend.commands_run - before == 2  # one queue call, one read for every file
    states = [tracker.get_run(r).items[0].state for r in run_ids]
    assert states == [State.RUNNING, State.RUNNING, State.SETTLING]
    settled = tracker.get_run(run_ids[-1]).items[0]
    assert settled.has_marker(MarkerCode.SELF_REPORTED.value)
    # Once used, the report is not read again.
    before = backend.commands_run
    clock.advance(2)
    await tracker.poll_once()
    assert backend.commands_run - before == 2  # the queue, and the other two's files
    await tracker.aclose()


async def test_running_items_are_not_read_unless_the_backend_says_jobs_report(
    tmp_path: Path, db_path: Path
) -> None:
    tracker, run_ids, _, clock = await _running_toy_jobs(
        tmp_path, db_path, self_report=False, count=2
    )
    row = tracker.store.get_item_row(tracker.get_run(run_ids[-1]).items[0].id)
    report(0, environ={RUN_ID_ENV: run_ids[-1], REPORT_FILE_ENV: row.extra["report_file"]})
    backend = tracker.backend("toy")
    assert isinstance(backend, CommandBackend)
    before = backend.commands_run
    clock.advance(2)
    await tracker.poll_once()
    assert backend.commands_run - before == 1  # the queue only
    assert tracker.get_run(run_ids[-1]).items[0].state is State.RUNNING
    await tracker.aclose()
