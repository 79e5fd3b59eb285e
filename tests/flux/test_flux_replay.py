"""Replay: the real Tracker -> FluxBackend -> dialect -> parser -> verdict path on the
flux-core 0.88.0 production recordings (tests/golden/flux/0.88.0-production).

``hpcstate.testing.replay.ReplayRunner`` answers each command the backend runs with what
the real flux-core 0.88.0 printed for the SAME command (argv, environment and stdin
matched exactly), in recorded order: SCHED, RUN, CLEANUP, INACTIVE, then the eventlog
script. Only the process boundary is replaced. The expected verdicts are the ones
written by hand in test_flux_production.py from the recording's README.

Also: hpcstate's BackendConformance suite, run on FluxBackend over the same replay.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from test_flux_production import EXPECTED, Expected, _check_exit

from hpcstate import TERMINAL, MarkerCode, ReasonKind, RunItem
from hpcstate.runtime import Tracker
from hpcstate.testing import VirtualClock
from hpcstate.testing.conformance import BackendConformance
from hpcstate.testing.golden import Scenario
from hpcstate.testing.replay import RecordedCase, ReplayRunner, files_absent, load_recording
from hpcstate_flux import CAPABILITIES, FluxDialect
from hpcstate_flux._io import FluxBackend

ROOT = Path(__file__).resolve().parents[1] / "golden" / "flux" / "0.88.0-production"

#: Cases whose recording cancels the job with the backend's own ``flux cancel``, after
#: the queue answer named here (the cancel came right after it was recorded).
CANCELLED_AFTER = {
    "cancel_running": "jobs_json_run",
    "cancel_pending_hold": "jobs_json_sched",
    "batch_cancel_running": "jobs_json_run",
    "batch_cancel_pending_hold": "jobs_json_sched",
}


def _case(name: str) -> RecordedCase:
    return load_recording(ROOT / name)


class _Replay:
    """One case through a real Tracker (store, poll loop's one step, state machine)."""

    def __init__(self, name: str, tmp_path: Path) -> None:
        self.name = name
        self.case = _case(name)
        self.clock = VirtualClock(self.case.started_at)
        self.runner = ReplayRunner(self.case, clock=self.clock, fallback=files_absent)
        self.backend = FluxBackend(
            dialect=FluxDialect(), runner=self.runner, name="flux", clock=self.clock
        )
        self.tracker = Tracker(
            store=tmp_path / "store.db", backends={"flux": self.backend}, clock=self.clock
        )
        #: the poll that took the recorded INACTIVE answer (``jobs_json``)
        self.ended_at_poll: int | None = None
        #: the poll at which the item first had a verdict, and the item then
        self.first: tuple[int, RunItem] | None = None
        self.unreachable: list[tuple[int, str]] = []

    async def run(self, polls: int = 200) -> RunItem:
        run = await self.tracker.submit(
            self.case.tracker_spec(), backend="flux", run_id=self.case.run_id
        )
        cancel_after = CANCELLED_AFTER.get(self.name)
        for number in range(1, polls + 1):
            seen = len(self.runner.answers)
            await self.tracker.poll_once()
            stems = [a.stem for a in self.runner.answers[seen:] if a is not None]
            if "jobs_json" in stems and self.ended_at_poll is None:
                self.ended_at_poll = number
            status = self.tracker.backend_status("flux")
            if not status.reachable:
                self.unreachable.append((number, status.last_error))
            (item,) = self.tracker.get_run(run.id).items
            if item.state in TERMINAL and self.first is None:
                self.first = (number, item)
            if cancel_after is not None and cancel_after in stems:
                await self.tracker.cancel(run.id)
                cancel_after = None
            if item.state in TERMINAL and item.confirmed and self.ended_at_poll is not None:
                break
            self.clock.advance(max(self.tracker.next_interval(), 0.1))
        (item,) = self.tracker.get_run(run.id).items
        await self.tracker.aclose()
        return item


def _check_reason(item: RunItem, expected: Expected) -> None:
    reason = item.stats.reason
    assert reason is not None, item
    assert reason.kind is expected.reason, reason
    assert reason.detail == expected.reason_detail
    if reason.kind is ReasonKind.RAISED_SIGNAL:
        assert expected.shown is not None
        assert reason.signal == expected.shown.signal


@pytest.mark.parametrize("name", sorted(EXPECTED))
async def test_replay_first_verdict_is_right_at_the_first_poll_after_the_end(
    name: str, tmp_path: Path
) -> None:
    replay = _Replay(name, tmp_path)
    item = await replay.run()
    expected = EXPECTED[name]
    assert replay.runner.unexpected == [], replay.runner.unexpected
    assert replay.unreachable == []  # never unreachable on a recorded answer
    assert replay.ended_at_poll is not None, replay.runner.used()
    assert replay.first is not None
    poll, first = replay.first
    # the right verdict, first time, at the poll that took the INACTIVE answer
    assert poll == replay.ended_at_poll, (poll, replay.ended_at_poll, replay.runner.used())
    assert first.state is expected.state, first
    _check_exit(first.stats.exit, expected)
    assert first.confirmed
    # and it stays
    assert (item.state, item.confirmed) == (expected.state, True)
    _check_exit(item.stats.exit, expected)
    ambiguous = expected.shown is not None and not expected.shown.exact
    assert item.has_marker(MarkerCode.EXIT_AMBIGUOUS.value) is ambiguous
    _check_reason(item, expected)
    # every answer was used in recorded order: the queue's, then the eventlogs' (if any)
    queue = [s for s in replay.runner.used() if s.startswith("jobs_json")]
    recorded_polls = replay.case.stems("jobs_json")
    assert queue[: len(recorded_polls)] == recorded_polls
    if "evidence" in replay.case.stems():
        assert "evidence" in replay.runner.used()


async def test_replay_of_a_cancel_uses_the_backends_own_cancel(tmp_path: Path) -> None:
    replay = _Replay("batch_cancel_running", tmp_path)
    await replay.run()
    used = replay.runner.used()
    assert used.index("jobs_json_run") < used.index("cancel") < used.index("jobs_json")


# -- BackendConformance on the replay -------------------------------------------------


def _scenarios() -> list[Scenario]:
    scenarios = []
    for name, expected in sorted(EXPECTED.items()):
        scenarios.append(
            Scenario(
                name=name,
                spec=_case(name).submitted_spec(),
                state=expected.state,
                exit=expected.shown,
                cancel=name in CANCELLED_AFTER,
            )
        )
    return scenarios


class TestFluxReplayConformance(BackendConformance):
    """The suite's driver submits each recorded JobSpec (the tracker's env and tag
    included, as recorded) straight to FluxBackend and polls it through the pure core;
    the replay answers. A scenario with ``cancel`` cancels right after the submit: the
    recorded ``flux cancel`` answer is the same whenever it is asked."""

    @pytest.fixture
    def backend(self) -> FluxBackend:
        cases = [_case(name) for name in sorted(EXPECTED)]
        runner = ReplayRunner(*cases)
        return FluxBackend(dialect=FluxDialect(), runner=runner, capabilities=CAPABILITIES)

    @pytest.fixture
    def scenarios(self) -> list[Scenario]:
        return _scenarios()
