"""A verdict's reason agrees with the verdict (issue 12), for every backend: the rule
lives in the core. Expected reasons are written by hand from what each scheduler
printed (the recordings' READMEs), never computed by the code under test."""

from __future__ import annotations

from datetime import timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

import hpcstate as h
from hpcstate import ExitStatus, JobStats, Reason, ReasonKind, Source, State

from .builders import at, obs, queued, running

K = ReasonKind


def accounting(seconds: float, state: State, **stats: object) -> h.Observation:
    return obs(seconds, state, source=Source.ACCOUNTING, final=True, stats=JobStats(**stats))  # type: ignore[arg-type]


def ended(*observations: h.Observation, start: h.RunItem | None = None) -> h.RunItem:
    item = start if start is not None else running()
    for observation in observations:
        item = h.advance(item, observation).item
    return item


# -- what each scheduler said, and what the verdict's reason must be ------------------


def test_slurm_2205_signalled_batch_script_is_raised_signal_not_launch_failure() -> None:
    # Slurm 22.05: `kill -TERM $$` in the batch script: sacct FAILED 0:15, Reason
    # JobLaunchFailure (22.05's own words for it).
    item = ended(
        accounting(
            5,
            State.FAILED,
            exit=ExitStatus.killed(15),
            reason=h.parse_slurm_reason("JobLaunchFailure"),
            finished_at=at(4),
        )
    )
    assert item.stats.reason == Reason(kind=K.RAISED_SIGNAL, text="JobLaunchFailure", signal=15)


def test_a_pending_reason_never_survives_into_a_verdict() -> None:
    # squeue listed the job PD (Priority); it then ran and completed (its step failed).
    item = ended(
        obs(2, State.RUNNING),
        accounting(
            5,
            State.COMPLETED,
            exit=ExitStatus.exited(0),
            derived_exit=ExitStatus.exited(2),
            finished_at=at(4),
        ),
        start=h.advance(
            queued(),
            obs(1.5, State.QUEUED, stats=JobStats(reason=h.parse_slurm_reason("Priority"))),
        ).item,
    )
    assert item.state is State.COMPLETED
    assert item.stats.reason == Reason(kind=K.NONE)


def test_a_pending_reason_is_dropped_even_when_the_end_brings_no_reason() -> None:
    waiting = h.advance(
        queued(), obs(1.5, State.QUEUED, stats=JobStats(reason=Reason.other("Resources")))
    ).item
    assert waiting.stats.reason == Reason.other("Resources")  # while waiting, it is the reason
    item = ended(obs(3, absence=h.Absence.UNKNOWN), start=waiting)
    assert item.state is State.GONE
    assert item.stats.reason is None


@pytest.mark.parametrize(
    ("state", "exit", "told", "expected"),
    [
        # Slurm 26.05: sacct Reason "None" on every finished job.
        (State.TIMEOUT, ExitStatus.killed(15), Reason(kind=K.NONE, text="None"),
         Reason(kind=K.TIME_LIMIT, text="None")),
        (State.FAILED, ExitStatus.exited(3), Reason(kind=K.NONE, text="None"),
         Reason(kind=K.NON_ZERO_EXIT_CODE, text="None")),
        (State.FAILED, ExitStatus.killed(11), Reason(kind=K.NONE, text="None"),
         Reason(kind=K.RAISED_SIGNAL, text="None", signal=11)),
        (State.COMPLETED, ExitStatus.exited(0), Reason(kind=K.NONE, text="None"),
         Reason(kind=K.NONE, text="None")),
        # No reason given at all.
        (State.FAILED, ExitStatus.exited(3), None, Reason(kind=K.NON_ZERO_EXIT_CODE)),
        (State.FAILED, ExitStatus.killed(9), None, Reason(kind=K.RAISED_SIGNAL, signal=9)),
        (State.COMPLETED, ExitStatus.exited(0), None, Reason(kind=K.NONE)),
        (State.TIMEOUT, None, None, Reason(kind=K.TIME_LIMIT)),
        # Kubernetes: the Job's BackoffLimitExceeded follows the container's exit.
        (State.FAILED, ExitStatus.exited(3),
         Reason(kind=K.BACKOFF_LIMIT, text="BackoffLimitExceeded"),
         Reason(kind=K.NON_ZERO_EXIT_CODE, text="BackoffLimitExceeded")),
        (State.FAILED, ExitStatus.killed(9),
         Reason(kind=K.BACKOFF_LIMIT, text="BackoffLimitExceeded"),
         Reason(kind=K.RAISED_SIGNAL, text="BackoffLimitExceeded", signal=9)),
        (State.FAILED, None, Reason(kind=K.BACKOFF_LIMIT, text="BackoffLimitExceeded"),
         Reason(kind=K.BACKOFF_LIMIT, text="BackoffLimitExceeded")),
        # End reasons a backend knows better than the exit stay as told.
        (State.FAILED, ExitStatus.killed(9), Reason(kind=K.OUT_OF_MEMORY, text="OOMKilled"),
         Reason(kind=K.OUT_OF_MEMORY, text="OOMKilled")),
        (State.OUT_OF_MEMORY, ExitStatus.exited(137), Reason(kind=K.OUT_OF_MEMORY, text="x"),
         Reason(kind=K.OUT_OF_MEMORY, text="x")),
        (State.CANCELLED, ExitStatus.killed(15),
         Reason(kind=K.CANCELLED, text="CANCELLED by 0", uid=0),
         Reason(kind=K.CANCELLED, text="CANCELLED by 0", uid=0)),
        (State.NODE_FAIL, None, Reason(kind=K.NODE_FAIL, text="NodeFail"),
         Reason(kind=K.NODE_FAIL, text="NodeFail")),
        (State.DEADLINE, None, None, Reason(kind=K.DEADLINE)),
        (State.FAILED, ExitStatus.exited(1),
         Reason(kind=K.EXCEPTION, text="lost", detail="node"),
         Reason(kind=K.EXCEPTION, text="lost", detail="node")),
        # A launch failure's code is the runtime's: it stays a launch failure.
        (State.FAILED, ExitStatus.exited(128),
         Reason(kind=K.JOB_LAUNCH_FAILURE, text="StartError"),
         Reason(kind=K.JOB_LAUNCH_FAILURE, text="StartError")),
        # The state names the reason, whatever the scheduler wrote.
        (State.CANCELLED, ExitStatus.killed(15),
         Reason(kind=K.RAISED_SIGNAL, text="RaisedSignal:15", signal=15),
         Reason(kind=K.CANCELLED, text="RaisedSignal:15")),
        (State.TIMEOUT, ExitStatus.exited(0), Reason.other("Priority"),
         Reason(kind=K.TIME_LIMIT, text="Priority")),
        # A wrong exit kind is corrected: the exit says a code, not a signal.
        (State.FAILED, ExitStatus.exited(3),
         Reason(kind=K.RAISED_SIGNAL, text="RaisedSignal:9", signal=9),
         Reason(kind=K.NON_ZERO_EXIT_CODE, text="RaisedSignal:9")),
        # ...but a lossy code ("9 or 137") beside Slurm's own RaisedSignal:9 keeps it.
        (State.FAILED, ExitStatus.from_slurm("9:0", high_codes_lossy=True),
         Reason(kind=K.RAISED_SIGNAL, text="RaisedSignal:9", signal=9),
         Reason(kind=K.RAISED_SIGNAL, text="RaisedSignal:9", signal=9)),
        # "none" never explains a failure.
        (State.FAILED, ExitStatus.exited(0), Reason(kind=K.NONE, text="None"), None),
        (State.GONE, None, Reason(kind=K.NONE), None),
    ],
)  # fmt: skip
def test_verdict_reason(
    state: State, exit: ExitStatus | None, told: Reason | None, expected: Reason | None
) -> None:
    assert h.verdict_reason(state, exit, told) == expected


@pytest.mark.parametrize("state", [State.QUEUED, State.RUNNING, State.SETTLING, State.PENDING])
def test_no_verdict_no_change(state: State) -> None:
    told = Reason.other("Priority")
    assert h.verdict_reason(state, None, told) is told


def test_the_machine_applies_it_on_every_path_to_a_verdict() -> None:
    # A queue failure (SEEN_FAILURE), a confirmation, a late correction, a grace expiry.
    seen = ended(obs(4, State.FAILED, stats=JobStats(exit=ExitStatus.killed(6))))
    assert seen.stats.reason == Reason(kind=K.RAISED_SIGNAL, signal=6)
    timed_out = ended(accounting(4, State.TIMEOUT, reason=Reason(kind=K.NONE, text="None")))
    assert timed_out.stats.reason == Reason(kind=K.TIME_LIMIT, text="None")
    grace = h.tick(ended(obs(4, State.COMPLETED)), now=at(4) + timedelta(seconds=601)).item
    assert (grace.state, grace.stats.reason) == (State.COMPLETED, Reason(kind=K.NONE))
    corrected = ended(accounting(700, State.FAILED, exit=ExitStatus.exited(2)), start=grace)
    assert (corrected.state, corrected.stats.reason) == (
        State.FAILED,
        Reason(kind=K.NON_ZERO_EXIT_CODE),
    )


def test_a_resolved_ambiguity_updates_the_reason() -> None:
    # A lossy 137 (exit 137, or SIGKILL) first, then a lossless source's exact SIGKILL.
    lossy = ExitStatus.from_shell_code(137)
    item = ended(accounting(4, State.FAILED, exit=lossy))
    assert item.stats.reason is not None
    assert item.stats.reason.kind is K.NON_ZERO_EXIT_CODE
    exact = obs(
        5, State.FAILED, source=Source.CONTROLLER, stats=JobStats(exit=ExitStatus.killed(9))
    )
    item = h.advance(item, exact).item
    assert item.stats.exit == ExitStatus.killed(9)
    assert item.stats.reason == Reason(kind=K.RAISED_SIGNAL, signal=9)


def test_a_pending_word_from_a_later_source_never_replaces_an_end_reason() -> None:
    item = ended(accounting(4, State.FAILED, exit=ExitStatus.exited(3)))
    again = accounting(6, State.FAILED, exit=ExitStatus.exited(3), reason=Reason.other("Priority"))
    item = h.advance(item, again).item
    assert item.stats.reason == Reason(kind=K.NON_ZERO_EXIT_CODE)


# -- properties -------------------------------------------------------------------------

reasons = st.one_of(
    st.none(),
    st.builds(
        Reason,
        kind=st.sampled_from(list(ReasonKind)),
        text=st.sampled_from(["", "None", "Priority", "JobLaunchFailure", "OOMKilled"]),
        signal=st.one_of(st.none(), st.integers(1, 64)),
        uid=st.one_of(st.none(), st.integers(0, 5)),
    ),
)
exits = st.one_of(
    st.none(),
    st.integers(0, 255).map(ExitStatus.exited),
    st.integers(1, 64).map(ExitStatus.killed),
    st.integers(0, 255).map(lambda c: ExitStatus.from_slurm(f"{c}:0", high_codes_lossy=True)),
)
TERMINAL = sorted(h.TERMINAL, key=lambda s: s.value)
NAMED = {
    State.TIMEOUT: K.TIME_LIMIT,
    State.CANCELLED: K.CANCELLED,
    State.OUT_OF_MEMORY: K.OUT_OF_MEMORY,
    State.NODE_FAIL: K.NODE_FAIL,
    State.PREEMPTED: K.PREEMPTED,
    State.DEADLINE: K.DEADLINE,
}
#: End reasons that a backend knows better than the exit status (they may stay).
BETTER = {K.TIME_LIMIT, K.OUT_OF_MEMORY, K.NODE_FAIL, K.PREEMPTED, K.CANCELLED, K.DEADLINE}
BETTER |= {K.SUBMIT_REJECTED, K.EXCEPTION}


def check_agrees(state: State, exit: ExitStatus | None, reason: Reason | None) -> None:
    """The brief's rules, stated independently of the implementation."""
    if state in NAMED:
        assert reason is not None
        assert reason.kind is NAMED[state]
        return
    if state is State.COMPLETED:
        assert reason is not None
        assert reason.kind is K.NONE
        return
    assert reason is None or reason.kind is not K.NONE  # "none" never explains a failure
    if reason is not None and reason.kind in BETTER:
        return
    if exit is not None and exit.signal is not None:
        assert reason == Reason(
            kind=K.RAISED_SIGNAL, text=reason.text, signal=exit.signal, uid=reason.uid,
            detail=reason.detail,
        )  # fmt: skip
    elif exit is not None and exit.code:
        assert reason is not None
        assert reason.kind in (K.NON_ZERO_EXIT_CODE, K.JOB_LAUNCH_FAILURE) or (
            reason.kind is K.RAISED_SIGNAL and reason.signal is not None and not exit.exact
        )


@given(st.sampled_from(TERMINAL), exits, reasons)
def test_every_verdict_reason_agrees_with_the_verdict(
    state: State, exit: ExitStatus | None, told: Reason | None
) -> None:
    reason = h.verdict_reason(state, exit, told)
    check_agrees(state, exit, reason)
    assert h.verdict_reason(state, exit, reason) == reason  # idempotent
    if told is not None and reason is not None:
        # The scheduler's own words stay beside the kind.
        assert (reason.text, reason.uid, reason.detail) == (told.text, told.uid, told.detail)


@given(
    pending_reason=st.sampled_from(["Priority", "Resources", "Dependency", "BeginTime"]),
    state=st.sampled_from([s for s in TERMINAL if s is not State.GONE]),
    exit=exits,
    told=reasons.filter(lambda r: r is None or r.text != "Priority"),
    source=st.sampled_from([Source.QUEUE, Source.CONTROLLER, Source.ACCOUNTING]),
    final=st.booleans(),
)
def test_through_the_machine_a_verdict_agrees_and_no_pending_reason_survives(
    pending_reason: str,
    state: State,
    exit: ExitStatus | None,
    told: Reason | None,
    source: Source,
    final: bool,
) -> None:
    waiting = h.advance(
        queued(), obs(1.5, State.QUEUED, stats=JobStats(reason=Reason.other(pending_reason)))
    ).item
    end = obs(4, state, source=source, final=final, stats=JobStats(exit=exit, reason=told))
    item = h.advance(waiting, end).item
    if item.state is State.SETTLING:  # a non-final COMPLETED: confirm it
        item = h.advance(item, accounting(5, State.COMPLETED, exit=exit)).item
    assert item.terminal
    check_agrees(item.state, item.stats.exit, item.stats.reason)
    assert item.stats.reason is None or item.stats.reason.text != pending_reason
