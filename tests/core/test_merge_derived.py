"""DerivedExitCode over ambiguous step statuses: never a guess presented as fact."""

from __future__ import annotations

import itertools

from hypothesis import given
from hypothesis import strategies as st

from hpcstate import AccountingRow, ExitStatus
from hpcstate._merge import derived_exit, possible_worsts


def _steps(*statuses: ExitStatus) -> list[AccountingRow]:
    return [
        AccountingRow(job_id="7", step=str(n), exit=status) for n, status in enumerate(statuses)
    ]


def lossy(code: int) -> ExitStatus:
    """22.05's sacct text: code c may be c or c+128."""
    return ExitStatus.from_slurm(f"{code}:0", high_codes_lossy=True)


def _rank(status: ExitStatus) -> int:
    # Slurm's order, written out here independently of the code under test: SIG_OOM (125)
    # above all, then any exit code above any signal (raw wait status).
    if status.signal == 125:
        return 1 << 20
    if status.signal is not None:
        return status.signal | (0x80 if status.core_dumped else 0)
    assert status.code is not None
    return status.code << 8


def _truths(status: ExitStatus) -> list[ExitStatus]:
    """What an ambiguous status may really be, from its documented meaning."""
    if status.exact or status.code is None:
        return [ExitStatus(code=status.code, signal=status.signal, core_dumped=status.core_dumped)]
    if status.code < 128:
        return [ExitStatus.exited(status.code), ExitStatus.exited(status.code + 128)]
    if status.code - 128 not in range(1, 128):  # 128, and codes past any signal number
        return [ExitStatus.exited(status.code)]
    return [ExitStatus.exited(status.code), ExitStatus.killed(status.code - 128)]


def _key(status: ExitStatus) -> tuple[int | None, int | None, bool]:
    return (status.code, status.signal, status.core_dumped)


def test_exact_steps_give_the_worst_by_slurms_order() -> None:
    steps = _steps(ExitStatus.exited(0), ExitStatus.exited(3), ExitStatus.killed(9))
    assert derived_exit(steps) == ExitStatus.exited(3)  # any exit code beats any signal
    oom = _steps(ExitStatus.exited(2), ExitStatus.killed(125))
    assert derived_exit(oom) == ExitStatus.killed(125)


def test_two_lossy_failures_do_not_pretend_to_know_the_worst() -> None:
    # 1 may be 129, 2 may be 130: the worst step was 2, 129 or 130.
    result = derived_exit(_steps(lossy(1), lossy(2)))
    assert result is not None
    assert not result.exact
    assert result.ambiguous is not None
    for text in ("exit 2", "exit 129", "exit 130"):
        assert text in result.ambiguous
    assert "exit 1," not in result.ambiguous  # exit 1 can never be the worst


def test_a_success_beside_a_lossy_failure_keeps_the_lossy_answer() -> None:
    result = derived_exit(_steps(ExitStatus.exited(0), lossy(2)))
    assert result == lossy(2)  # 2 or 130 either way: its own ambiguity says so


def test_an_exact_step_can_decide() -> None:
    # 1 may be 129, but an exact 200 is worse than both.
    assert derived_exit(_steps(lossy(1), ExitStatus.exited(200))) == ExitStatus.exited(200)
    # An exact 129 is at least as bad as anything lossy 1 may be: the worst is exit 129.
    result = derived_exit(_steps(lossy(1), ExitStatus.exited(129)))
    assert result == ExitStatus.exited(129)
    assert result is not None
    assert result.exact


def test_signals_rank_below_exit_codes() -> None:
    # A shell's 137 may be SIGKILL; with an exact exit 1 beside it, the worst is 137 if it
    # was an exit, else exit 1.
    result = derived_exit(_steps(ExitStatus.from_shell_code(137), ExitStatus.exited(1)))
    assert result is not None
    assert not result.exact
    assert result.ambiguous is not None
    assert "exit 137" in result.ambiguous
    assert "exit 1" in result.ambiguous


statuses = st.one_of(
    st.integers(0, 127).map(lossy),
    st.integers(129, 192).map(ExitStatus.from_shell_code),
    st.integers(128, 255).map(lambda code: ExitStatus.exited(code, ambiguous="said so")),
    st.integers(0, 255).map(ExitStatus.exited),
    st.builds(
        lambda signal, core: ExitStatus.killed(signal, core_dumped=core),
        st.integers(1, 125),
        st.booleans(),
    ),
)


@given(st.lists(statuses, min_size=1, max_size=4))
def test_the_answer_covers_every_possible_truth_and_nothing_else(
    step_statuses: list[ExitStatus],
) -> None:
    truths = {
        _key(max(assignment, key=_rank))
        for assignment in itertools.product(*(_truths(s) for s in step_statuses))
    }
    assert {_key(value) for value in possible_worsts(step_statuses)} == truths
    result = derived_exit(_steps(*step_statuses))
    assert result is not None
    if len(step_statuses) == 1:
        assert result == step_statuses[0]  # one step: its own status, ambiguity and all
    elif len(truths) == 1:
        assert result.exact
        assert {_key(result)} == truths
    else:
        assert not result.exact
        assert result.ambiguous is not None
        for value in possible_worsts(step_statuses):
            assert value.describe() in result.ambiguous or result.admits(value)
