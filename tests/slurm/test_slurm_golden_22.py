"""Every recorded Slurm 22.05.8 case (the version that runs here), through the dialect and
the state machine: the controller record makes exit codes exact where sacct is lossy."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import pytest
from sacct_json import parse_sacct_json
from slurm_expectations import CASES_22, Case22, Verdict
from slurm_golden import (
    COLUMNS_22_BIG_O,
    COLUMNS_22_O,
    GOLDEN,
    Snapshot,
    accounting_observations,
    cases,
    drive,
    queue_observations,
    read,
)

from hpcstate import (
    ExitStatus,
    Finished,
    MarkerCode,
    Observation,
    ReasonKind,
    Requeued,
    RunItem,
    Source,
    State,
)
from hpcstate_slurm import SlurmDialect, SlurmVersion
from hpcstate_slurm._parse import group_records, parse_sacct_text

VERSION = "22.05.8"
ROOT = GOLDEN / VERSION
DIALECT = SlurmDialect.for_version(VERSION)
AT = datetime(2026, 11, 23, 20, 0, tzinfo=timezone.utc)
#: Special cases with their own tests below.
OWN_TESTS = {"requeue", "dbd_outage_exit_3"}
#: What production does: the -O queue (with the controller's wait status), then sacct.
PRODUCTION = (
    Snapshot("squeue_O_pending", "queue", COLUMNS_22_BIG_O),
    Snapshot("squeue_O_running", "queue", COLUMNS_22_BIG_O),
    Snapshot("squeue_O", "queue", COLUMNS_22_BIG_O),
    Snapshot("squeue_o_after", "queue", COLUMNS_22_O),
    Snapshot("squeue_multi_after", "queue", COLUMNS_22_O),
    Snapshot("sacct_P", "accounting"),
)
TEXT_QUEUE = (
    Snapshot("squeue_o_pending", "queue", COLUMNS_22_O),
    Snapshot("squeue_o_running", "queue", COLUMNS_22_O),
    Snapshot("squeue_o", "queue", COLUMNS_22_O),
    Snapshot("squeue_o_after", "queue", COLUMNS_22_O),
    Snapshot("sacct_P", "accounting"),
)


def job_id(name: str) -> str:
    return (ROOT / name / "jobid.txt").read_text().strip()


def ids(name: str) -> dict[str, str]:
    """suffix -> native id."""
    base = job_id(name)
    return {suffix: base + suffix for suffix in CASES_22[name].items}


def recorded(name: str, *stems: str) -> Path:
    case = ROOT / name
    missing = [stem for stem in stems if not (case / f"{stem}.out").exists()]
    if missing:
        pytest.skip(f"{VERSION}/{name}: {', '.join(missing)} not recorded (yet)")
    return case


def test_every_recorded_case_has_a_hand_written_verdict() -> None:
    recorded_cases = cases(VERSION)
    if not recorded_cases:
        pytest.skip("no 22.05.8 golden files recorded yet")
    assert sorted({*CASES_22, *OWN_TESTS} & set(recorded_cases)) == recorded_cases


def test_version_file_says_22_05_8() -> None:
    result = read(ROOT / "_versions", "sbatch_version")
    assert result is not None
    assert SlurmVersion.parse(result.stdout) == SlurmVersion(major=22, minor=5, micro=8)
    assert DIALECT.behaviour.sacct_exit_high_codes_lossy
    assert DIALECT.behaviour.sacct_json_exit_faulty


def _same(actual: ExitStatus | None, expected: ExitStatus | None) -> bool:
    if expected is None:
        return actual is None
    return actual is not None and (actual.code, actual.signal) == (expected.code, expected.signal)


def check(item: RunItem, verdict: Verdict) -> None:
    assert item.state is verdict.state
    assert item.confirmed
    assert _same(item.stats.exit, verdict.exit), item.stats.exit
    if item.stats.exit is not None:
        assert item.stats.exit.exact, item.stats.exit
    if verdict.derived is not None:
        assert _same(item.stats.derived_exit, verdict.derived)
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


@pytest.mark.parametrize("name", sorted(CASES_22))
def test_controller_record_then_accounting_gives_the_exact_verdict(name: str) -> None:
    case_dir = recorded(name, "squeue_O", "sacct_P")
    mapping = ids(name)
    items, events = drive(DIALECT, case_dir, list(mapping.values()), PRODUCTION)
    for suffix, verdict in CASES_22[name].items.items():
        item = items[mapping[suffix]]
        check(item, verdict)
        if verdict.state is not State.COMPLETED and verdict.exit is not None:
            # The first verdict a consumer sees already carries the exact exit status.
            finished = [
                e for e in events if isinstance(e, Finished) and e.native_id == item.native_id
            ]
            assert finished
            assert _same(finished[0].exit, verdict.exit), finished[0]
            assert finished[0].exit is not None
            assert finished[0].exit.exact


@pytest.mark.parametrize("name", sorted(CASES_22))
def test_accounting_alone_is_ambiguous_where_22_05_is_lossy(name: str) -> None:
    """Purged before any poll: only sacct's lossy text is left, and the item says so."""
    case_dir = recorded(name, "sacct_P")
    case: Case22 = CASES_22[name]
    mapping = ids(name)
    items, _ = drive(
        DIALECT, case_dir, list(mapping.values()), (Snapshot("sacct_P", "accounting"),)
    )
    for suffix, verdict in case.items.items():
        item = items[mapping[suffix]]
        assert item.state is verdict.state
        assert item.confirmed
        expected = case.alone.get(suffix, verdict.exit)
        assert _same(item.stats.exit, expected), item.stats.exit
        if suffix in case.alone:
            assert item.stats.exit is not None
            assert not item.stats.exit.exact
            assert item.has_marker(MarkerCode.EXIT_AMBIGUOUS.value)
            assert item.stats.exit.ambiguous is not None
            assert str(expected.code) in item.stats.exit.ambiguous
            assert str(expected.code + 128) in item.stats.exit.ambiguous  # type: ignore[operator]
        else:
            assert not item.has_marker(MarkerCode.EXIT_AMBIGUOUS.value)


@pytest.mark.parametrize("name", sorted(CASES_22))
def test_text_queue_format_gives_the_same_states(name: str) -> None:
    """The brief's -o format (no exit column) reads the same states as the -O one."""
    case_dir = recorded(name, "squeue_o", "squeue_O")
    native_ids = list(ids(name).values())
    text = read(case_dir, "squeue_o")
    big = read(case_dir, "squeue_O")
    assert text is not None
    assert big is not None
    a = queue_observations(DIALECT, text, COLUMNS_22_O, native_ids, AT)
    b = queue_observations(DIALECT, big, COLUMNS_22_BIG_O, native_ids, AT)

    # The same words from Slurm; their kind may differ: without the exit column, 22.05's
    # JobLaunchFailure cannot be read as the signal death it is.
    def words(o: Observation) -> str | None:
        return o.stats.reason.text if o.stats.reason is not None else None

    assert [(o.native_id, o.state, words(o), o.stats.started_at) for o in a] == [
        (o.native_id, o.state, words(o), o.stats.started_at) for o in b
    ]
    assert all(o.source is Source.QUEUE for o in a)
    # -O's exit_code is the raw wait status: the controller record.
    assert all(o.source is Source.CONTROLLER for o in b if o.stats.exit is not None)
    # The text drive reaches the same verdicts (exit from accounting, maybe ambiguous).
    items, _ = drive(DIALECT, case_dir, native_ids, TEXT_QUEUE)
    for suffix, verdict in CASES_22[name].items.items():
        assert items[job_id(name) + suffix].state is verdict.state


@pytest.mark.parametrize("name", sorted(CASES_22))
def test_epoch_and_local_times_agree(name: str) -> None:
    """SLURM_TIME_FORMAT=%s is honoured by 22.05's sacct, and local time here is UTC."""
    case_dir = recorded(name, "sacct_P", "sacct_P_epoch")
    local = read(case_dir, "sacct_P")
    epoch = read(case_dir, "sacct_P_epoch")
    assert local is not None
    assert epoch is not None
    assert "T" not in epoch.stdout.splitlines()[1].split("|")[11]
    rows_local = parse_sacct_text(local.stdout, exit_lossy=True)
    rows_epoch = parse_sacct_text(epoch.stdout, exit_lossy=True)
    assert rows_local == rows_epoch
    assert any(row.submitted_at is not None for row in rows_epoch)


@pytest.mark.parametrize("name", sorted(CASES_22))
def test_no_d_gives_the_same_newest_record(name: str) -> None:
    case_dir = recorded(name, "sacct_P", "sacct_P_no_D")
    native_ids = list(ids(name).values())
    with_d = read(case_dir, "sacct_P")
    no_d = read(case_dir, "sacct_P_no_D")
    assert with_d is not None
    assert no_d is not None
    assert accounting_observations(DIALECT, with_d, native_ids, AT) == accounting_observations(
        DIALECT, no_d, native_ids, AT
    )


@pytest.mark.parametrize("name", sorted(CASES_22))
def test_json_accounting_never_invents_success(name: str) -> None:
    """22.05's sacct --json says SUCCESS/0 for every plain non-zero exit: the parser must
    drop those values (unknown), keep the right ones (signals, COMPLETED's 0) and agree
    with the text on everything else."""
    case_dir = recorded(name, "sacct_P", "sacct_json")
    text = read(case_dir, "sacct_P")
    doc = read(case_dir, "sacct_json")
    assert text is not None
    assert doc is not None
    text_records = group_records(parse_sacct_text(text.stdout, exit_lossy=True))
    json_records = group_records(parse_sacct_json(doc.stdout, exit_faulty=True))
    assert sorted(text_records) == sorted(json_records)
    for job, runs in text_records.items():
        mine, theirs = runs[-1].job, json_records[job][-1].job
        assert mine.state == theirs.state
        assert (mine.submitted_at, mine.started_at, mine.finished_at) == (
            theirs.submitted_at,
            theirs.started_at,
            theirs.finished_at,
        )
        if theirs.exit is not None:
            assert theirs.exit.code in (0, None) or theirs.exit.signal is not None
            if theirs.exit.code == 0:
                assert theirs.state is State.COMPLETED
        if mine.state is State.FAILED and mine.exit is not None and mine.exit.signal is None:
            assert theirs.exit is None  # SUCCESS/0 on a failed job: unknown, not success


def test_requeue_is_a_new_run_of_the_same_id() -> None:
    """scontrol requeue of a running job: COMPLETING, then PENDING with a restart; sacct -D
    shows a REQUEUED record and a new PENDING one. The item goes back to QUEUED with
    restarts=1 and emits Requeued; REQUEUED is never a verdict."""
    case_dir = recorded(
        "requeue", "squeue_O_running", "squeue_O_requeued", "sacct_P_requeued_pending"
    )
    native_id = job_id("requeue")
    snapshots = (
        Snapshot("squeue_O_running", "queue", COLUMNS_22_BIG_O),
        Snapshot("squeue_O_requeued", "queue", COLUMNS_22_BIG_O),
        Snapshot("sacct_P_requeued_pending", "accounting"),
    )
    items, events = drive(DIALECT, case_dir, [native_id], snapshots)
    item = items[native_id]
    assert item.state is State.QUEUED
    assert item.restarts == 1
    assert item.has_marker(MarkerCode.REQUEUED.value)
    assert not any(isinstance(e, Finished) for e in events)
    assert [e.restarts for e in events if isinstance(e, Requeued)] == [1]
    records = group_records(parse_sacct_text(read(case_dir, "sacct_P_requeued_pending").stdout))  # type: ignore[union-attr]
    assert [r.job.state_text for r in records[native_id]] == ["REQUEUED", "PENDING"]
    assert [r.index for r in records[native_id]] == [0, 1]


def test_slurmdbd_outage_then_replay() -> None:
    """slurmdbd down while `exit 3` ran: sacct fails (transient), then after the restart
    has no record, then a partial one (FAILED, ExitCode 0:0, End=Unknown, no steps), then
    the full one. The controller's exact 3 is kept throughout; nothing reads 0 as success."""
    case_dir = recorded("dbd_outage_exit_3", "squeue_O", "sacct_P_dbd_down", "sacct_P")
    native_id = job_id("dbd_outage_exit_3")
    down = read(case_dir, "sacct_P_dbd_down")
    assert down is not None
    assert DIALECT.is_transient(down)
    partial = read(case_dir, "sacct_P_replay_2")
    assert partial is not None
    (observation,) = accounting_observations(DIALECT, partial, [native_id], AT)
    assert observation.state is State.FAILED
    assert not observation.final
    assert observation.stats.exit is None
    replays = tuple(
        Snapshot(f"sacct_P_{stem}", "accounting")
        for stem in ("dbd_down", "replay_1", "replay_2", "replay_3")
    )
    with_queue = (Snapshot("squeue_O", "queue", COLUMNS_22_BIG_O), *replays)
    items, _ = drive(
        DIALECT, case_dir, [native_id], (*with_queue, Snapshot("sacct_P", "accounting"))
    )
    item = items[native_id]
    assert item.state is State.FAILED
    assert item.stats.exit == ExitStatus.exited(3)
    assert item.stats.exit_source is Source.CONTROLLER
    assert not item.has_marker(MarkerCode.EXIT_AMBIGUOUS.value)
    items, _ = drive(DIALECT, case_dir, [native_id], replays)
    item = items[native_id]
    assert item.state is State.FAILED  # the partial record's failure is a verdict
    assert item.stats.exit is not None
    assert item.stats.exit.code == 3
    assert not item.stats.exit.exact  # 3 or 131: sacct alone cannot tell on 22.05


def test_recorded_errors() -> None:
    errors = ROOT / "_errors"
    if not errors.is_dir():
        pytest.skip("22.05.8/_errors not recorded (yet)")
    from hpcstate import Absence, SchedulerUnavailable
    from hpcstate.backend import AccountingQuery, JobSpec
    from hpcstate_slurm import SubmitRejected

    never = read(errors, "squeue_never")
    assert never is not None
    assert never.returncode == 1
    assert not DIALECT.is_transient(never)
    (absent,) = DIALECT.parse_queue(never, native_ids=["999999"], observed_at=AT)
    assert absent.absence is Absence.ABSENT
    multi = read(errors, "squeue_never_multi")
    assert multi is not None
    assert [
        o.absence
        for o in DIALECT.parse_queue(multi, native_ids=["999998", "999999"], observed_at=AT)
    ] == [Absence.ABSENT, Absence.ABSENT]
    no_record = read(errors, "sacct_no_record")
    assert no_record is not None
    (missing,) = DIALECT.parse_accounting(
        no_record, query=AccountingQuery(native_ids=["999999"]), observed_at=AT
    )
    assert missing.absence is Absence.NO_RECORD
    json_none = read(errors, "sacct_json_no_record")
    assert json_none is not None
    assert parse_sacct_json(json_none.stdout, exit_faulty=True) == []
    for stem in ("sacct_dbd_down", "sacct_json_dbd_down"):
        down = read(errors, stem)
        assert down is not None
        assert DIALECT.is_transient(down)
        with pytest.raises(SchedulerUnavailable):
            DIALECT.parse_accounting(down, query=AccountingQuery(native_ids=["45"]), observed_at=AT)
    rejected = read(errors, "sbatch_bad_partition")
    assert rejected is not None
    assert not DIALECT.is_transient(rejected)
    with pytest.raises(SubmitRejected) as caught:
        DIALECT.parse_submit(rejected, JobSpec(command=["true"]))
    assert caught.value.message == "Invalid partition name specified"
