"""The accounting merge: .batch wins, extern ignored, DerivedExitCode the Slurm way."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from hpcstate import AccountingRow, ExitStatus, State, derived_exit, merge_rows

from .builders import at


def row(step: str | None, exit: str, **kw: object) -> AccountingRow:
    return AccountingRow(job_id="7", step=step, exit=ExitStatus.from_slurm(exit), **kw)  # type: ignore[arg-type]


def test_batch_wins_over_the_job_row() -> None:
    # TIMEOUT: the job row says 0:0 (Slurm's), .batch says 0:15 (the script's).
    job = row(None, "0:0", state=State.TIMEOUT, started_at=at(0))
    stats = merge_rows(job, [row("batch", "0:15"), row("extern", "0:0")])
    assert stats.exit == ExitStatus.killed(15)


def test_job_row_is_the_fallback_without_batch() -> None:
    job = row(None, "1:0", state=State.NODE_FAIL, started_at=at(0))
    assert merge_rows(job, []).exit == ExitStatus.exited(1)


def test_a_job_that_never_ran_has_no_exit_status() -> None:
    job = row(None, "0:0", state=State.CANCELLED)  # cancelled while pending: Start=None
    stats = merge_rows(job, [])
    assert stats.exit is None
    assert stats.derived_exit is None


def test_derived_exit_is_the_worst_user_step() -> None:
    steps = [
        row("batch", "2:0"),
        row("0", "7:0"),
        row("1", "3:0"),
        row("2", "2:0"),
        row("extern", "0:9"),
    ]
    assert derived_exit(steps) == ExitStatus.exited(7)
    # any exit code beats any signal (raw status order), batch and extern excluded
    assert derived_exit([row("0", "0:9"), row("1", "1:0")]) == ExitStatus.exited(1)
    # Slurm's OOM signal 125 beats everything
    assert derived_exit([row("0", "0:125"), row("1", "255:0")]) == ExitStatus.killed(125)
    assert derived_exit([row("batch", "3:0")]) is None


def test_step_failure_behind_a_zero_exit() -> None:
    job = row(
        None, "0:0", state=State.COMPLETED, started_at=at(0), derived_exit=ExitStatus.exited(5)
    )
    stats = merge_rows(job, [row("batch", "0:0"), row("0", "5:0")])
    assert stats.exit == ExitStatus.exited(0)
    assert stats.derived_exit == ExitStatus.exited(5)


def test_memory_and_cpu_come_from_steps() -> None:
    job = row(None, "0:0", state=State.COMPLETED, started_at=at(0))
    stats = merge_rows(
        job,
        [
            row("batch", "0:0", max_rss_bytes=100, cpu_time_s=1.5),
            row("0", "0:0", max_rss_bytes=300, cpu_time_s=2.0),
            row("extern", "0:0", max_rss_bytes=10_000),
        ],
    )
    assert stats.max_rss_bytes == 300
    assert stats.cpu_time_s == 3.5


@given(
    st.lists(st.tuples(st.sampled_from(["batch", "extern", "0", "1", "2"]), st.integers(0, 255)))
)
def test_derived_exit_is_a_max(steps: list[tuple[str, int]]) -> None:
    rows = [AccountingRow(job_id="1", step=s, exit=ExitStatus.exited(c)) for s, c in steps]
    user = [c for s, c in steps if s not in ("batch", "extern")]
    result = derived_exit(rows)
    assert (result.code if result else None) == (max(user) if user else None)
