"""Every recorded Slurm 26.05.3 case, through the dialect and the state machine."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest
from sacct_json import parse_sacct_json
from slurm_expectations import CASES_26, Case, Verdict
from slurm_golden import (
    COLUMNS_26_O,
    GOLDEN,
    Snapshot,
    accounting_observations,
    cases,
    drive,
    read,
)

from hpcstate import ExitStatus, MarkerCode, ReasonKind, RunItem, Source, State
from hpcstate_slurm import SlurmDialect
from hpcstate_slurm._parse import group_records, parse_sacct_text

VERSION = "26.05.3"
ROOT = GOLDEN / VERSION
DIALECT = SlurmDialect.for_version(VERSION)
AT = datetime(2026, 11, 23, 19, 0, tzinfo=timezone.utc)
SNAPSHOTS = (
    Snapshot("squeue_o_pending_parent_running", "queue", COLUMNS_26_O),
    Snapshot("squeue_o_pending_parent_failed", "queue", COLUMNS_26_O),
    Snapshot("squeue_o_pending", "queue", COLUMNS_26_O),
    Snapshot("squeue_o_running", "queue", COLUMNS_26_O),
    Snapshot("squeue_o", "queue", COLUMNS_26_O),
    Snapshot("squeue_o_after", "queue", COLUMNS_26_O),
    Snapshot("sacct_P", "accounting"),
)


def test_every_recorded_case_has_a_hand_written_verdict() -> None:
    recorded = cases(VERSION)
    assert len(recorded) >= 23
    assert sorted(CASES_26) == recorded


def _same_exit(actual: ExitStatus | None, expected: ExitStatus | None) -> bool:
    if expected is None:
        return actual is None
    return actual is not None and (actual.code, actual.signal) == (expected.code, expected.signal)


def check_item(item: RunItem, verdict: Verdict) -> None:
    assert item.state is verdict.state
    assert item.confirmed, f"{item.native_id} not confirmed: {item.markers}"
    assert _same_exit(item.stats.exit, verdict.exit), item.stats.exit
    if item.stats.exit is not None:
        assert item.stats.exit.exact, item.stats.exit
    if verdict.derived is not None:
        assert _same_exit(item.stats.derived_exit, verdict.derived), item.stats.derived_exit
    if verdict.reason is not None:
        assert item.stats.reason is not None
        assert item.stats.reason.kind is verdict.reason, item.stats.reason
        if verdict.reason is ReasonKind.RAISED_SIGNAL and verdict.exit is not None:
            assert item.stats.reason.signal == verdict.exit.signal, item.stats.reason
    if verdict.uid is not None:
        assert item.stats.reason is not None
        assert item.stats.reason.uid == verdict.uid
    assert item.has_marker(MarkerCode.STEP_FAILED.value) is verdict.step_failed
    assert not item.has_marker(MarkerCode.EXIT_AMBIGUOUS.value)
    if verdict.max_rss_at_least is not None:
        assert item.stats.max_rss_bytes is not None
        assert item.stats.max_rss_bytes >= verdict.max_rss_at_least
    if verdict.exit is not None:
        assert item.stats.started_at is not None
        assert item.stats.finished_at is not None
        assert not item.stats.finished_at_approx  # accounting's End, not a poll time


@pytest.mark.parametrize("name", sorted(CASES_26))
def test_case_reaches_its_verdict(name: str) -> None:
    case: Case = CASES_26[name]
    items, events = drive(DIALECT, ROOT / name, list(case.items), SNAPSHOTS)
    for native_id, verdict in case.items.items():
        check_item(items[native_id], verdict)
    assert events, "nothing happened"


@pytest.mark.parametrize("name", sorted(CASES_26))
def test_accounting_alone_gives_the_verdict(name: str) -> None:
    """A job known only to accounting (purged from the controller before any poll)."""
    case = CASES_26[name]
    items, _ = drive(DIALECT, ROOT / name, list(case.items), (Snapshot("sacct_P", "accounting"),))
    for native_id, verdict in case.items.items():
        item = items[native_id]
        assert item.state is verdict.state
        assert item.confirmed
        assert item.stats.confirmed_by is Source.ACCOUNTING
        assert _same_exit(item.stats.exit, verdict.exit)


@pytest.mark.parametrize("name", sorted(CASES_26))
def test_queue_verdicts_are_never_success_before_accounting(name: str) -> None:
    case = CASES_26[name]
    snapshots = [s for s in SNAPSHOTS if s.kind == "queue"]
    items, events = drive(DIALECT, ROOT / name, list(case.items), snapshots)
    for native_id, verdict in case.items.items():
        item = items[native_id]
        if verdict.state is State.COMPLETED:
            assert item.state is State.SETTLING  # waits for accounting, never guesses
            assert not any(
                getattr(e, "confirmed_success", False) for e in events if e.native_id == native_id
            )
        else:
            assert item.state is verdict.state  # a failure seen in the queue is a verdict


def test_without_d_the_newest_record_is_the_same() -> None:
    for name, case in CASES_26.items():
        with_d = read(ROOT / name, "sacct_P")
        no_d = read(ROOT / name, "sacct_P_no_D")
        assert with_d is not None
        assert no_d is not None
        ids = list(case.items)
        first = accounting_observations(DIALECT, with_d, ids, AT)
        second = accounting_observations(DIALECT, no_d, ids, AT)
        assert first == second, name


def _json_cases() -> list[tuple[str, str]]:
    pairs = []
    for name in sorted(CASES_26):
        pairs.extend(
            (name, path.name.removesuffix(".out"))
            for path in sorted((ROOT / name).glob("sacct_json*.out"))
        )
    return pairs


@pytest.mark.parametrize(("name", "stem"), _json_cases())
def test_text_and_json_accounting_agree(name: str, stem: str) -> None:
    """26.05's JSON exit codes are right (not faulty): both parsers must say the same."""
    case_dir = ROOT / name
    text = read(case_dir, "sacct_P")
    doc = read(case_dir, stem)
    assert text is not None
    assert doc is not None
    text_records = group_records(parse_sacct_text(text.stdout, exit_lossy=False))
    json_records = group_records(parse_sacct_json(doc.stdout, exit_faulty=False))
    assert sorted(text_records) == sorted(json_records)
    for job_id, runs in text_records.items():
        other = json_records[job_id]
        assert len(runs) == len(other)
        for mine, theirs in zip(runs, other, strict=True):
            a, b = mine.job, theirs.job
            assert (a.state, a.submitted_at, a.started_at, a.finished_at, a.elapsed_s) == (
                b.state,
                b.submitted_at,
                b.started_at,
                b.finished_at,
                b.elapsed_s,
            )
            assert a.exit == b.exit
            assert a.derived_exit == b.derived_exit
            assert a.name == b.name
            steps_a = {s.step: s for s in mine.steps}
            steps_b = {s.step: s for s in theirs.steps}
            assert sorted(steps_a) == sorted(steps_b)
            for step, row in steps_a.items():
                assert row.exit == steps_b[step].exit, (job_id, step)
                assert row.state == steps_b[step].state, (job_id, step)
    from_text = accounting_observations(DIALECT, text, list(CASES_26[name].items), AT)
    assert all(o.final for o in from_text)


def test_name_with_a_pipe_and_a_quote_survives() -> None:
    text = read(ROOT / "name_special_chars", "sacct_P")
    assert text is not None
    rows = parse_sacct_text(text.stdout)
    assert rows[0].name == "we|ird'name"
    assert rows[0].exit == ExitStatus.exited(4)
    assert rows[1].name == "batch"
