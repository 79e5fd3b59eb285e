"""FluxBackend.find_submission (the SubmissionFinder ability its ``idempotent_submit``
declares) replayed on what flux-core 0.88.0 printed (tests/golden/flux/0.88.0-production).

The lookup's recorded answer is ``_find_submission/diag_find_script_job_info_lookup``: the
lookup the recording shows working on 0.88.0. Its script differs from today's FIND_SCRIPT
only in which errors it lets through (test_flux_production.py
``test_the_lookup_is_the_one_recorded_working_on_0_88`` pins that), so the replay answers
today's command, same tag, limit and environment, with that recorded output. The
expected id is tagged_submission's (its ``jobid.txt``: 366917713920, written here by
hand); the lookups run with the old script (``find_submission``, which swallowed a
TypeError for every job and found nothing) are never used.
"""

from __future__ import annotations

from pathlib import Path

from attrs import evolve

from hpcstate import TERMINAL, State, TransportError
from hpcstate.backend import Command, CommandResult, abilities
from hpcstate.runtime import Tracker
from hpcstate.testing import VirtualClock
from hpcstate.testing.replay import RecordedCase, ReplayRunner, files_absent, load_recording
from hpcstate_flux import CAPABILITIES, FluxDialect
from hpcstate_flux._commands import FIND_SCRIPT
from hpcstate_flux._io import FluxBackend

ROOT = Path(__file__).resolve().parents[1] / "golden" / "flux" / "0.88.0-production"
TAG = "hpcstate-20261206-152907-d22c84.0"  # tagged_submission's tag (its case.json)
TAGGED_JOB = "366917713920"  # tagged_submission/jobid.txt
WORKING = "diag_find_script_job_info_lookup"


def _lookup() -> RecordedCase:
    """The recorded working lookup, as the command today's FIND_SCRIPT makes."""
    case = load_recording(ROOT / "_find_submission")
    recorded = case.command(WORKING)
    assert recorded.argv[:3] == ("flux", "python", "-c")
    assert recorded.argv[4:] == (TAG, "1000")
    assert recorded.argv[3] != FIND_SCRIPT
    today = evolve(recorded, argv=(*recorded.argv[:3], FIND_SCRIPT, *recorded.argv[4:]))
    return evolve(case, commands=(today,))


async def test_find_submission_finds_the_tagged_job_in_the_recorded_lookup() -> None:
    runner = ReplayRunner(_lookup())
    backend = FluxBackend(dialect=FluxDialect(), runner=runner, capabilities=CAPABILITIES)
    # declared (idempotent_submit) and there: the tracker's one way to reach it
    assert abilities(backend).finder is backend
    found = await backend.find_submission(TAG)
    assert found is not None
    assert found.native_id == TAGGED_JOB
    assert runner.used() == [WORKING]
    assert runner.unexpected == []
    assert await backend.find_submission("") is None  # no tag: nothing to look up
    assert len(runner.calls) == 1
    await backend.close()


class _SubmitAnswerLost:
    """The replay, except that the first ``flux submit``'s answer is lost on the way
    back: the job was created (the recorded submit is used), the caller hears a
    transport error."""

    def __init__(self, inner: ReplayRunner) -> None:
        self.inner = inner
        self.lost = 0

    async def run(self, command: Command) -> CommandResult:
        result = await self.inner.run(command)
        if command.argv[1:2] == ("submit",) and not self.lost:
            self.lost += 1
            raise TransportError("ssh: connection reset while reading the answer")
        return result

    async def close(self) -> None:
        await self.inner.close()


async def test_a_lost_submit_answer_is_found_by_its_tag_and_never_resubmitted(
    tmp_path: Path,
) -> None:
    case = load_recording(ROOT / "tagged_submission")
    clock = VirtualClock(case.started_at)
    replay = ReplayRunner(case, _lookup(), fallback=files_absent)
    runner = _SubmitAnswerLost(replay)
    backend = FluxBackend(dialect=FluxDialect(), runner=runner, name="flux", clock=clock)
    async with Tracker(
        store=tmp_path / "store.db", backends={"flux": backend}, clock=clock
    ) as tracker:
        run = await tracker.submit(case.tracker_spec(), backend="flux", run_id=case.run_id)
        for _ in range(100):
            await tracker.poll_once()
            (item,) = tracker.get_run(run.id).items
            if item.state in TERMINAL and item.confirmed:
                break
            clock.advance(max(tracker.next_interval(), 0.1))
        (item,) = tracker.get_run(run.id).items
    assert runner.lost == 1
    submits = [c for c in replay.calls if c.argv[1:2] == ("submit",)]
    assert len(submits) == 1  # looked up, never submitted again
    assert replay.used().count(WORKING) == 1
    assert replay.unexpected == []
    assert item.native_id == TAGGED_JOB
    assert (item.state, item.confirmed) == (State.COMPLETED, True)
    assert item.stats.exit is not None
    assert (item.stats.exit.code, item.stats.exit.signal) == (0, None)
