"""CommandBackend: a tiny shell "scheduler" (real processes through LocalRunner, and
through the real sshd) exercises retries, timeouts and the lost-submit lookup."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

import pytest

from hpcstate import (
    Absence,
    CommandFailed,
    Observation,
    ParseError,
    SchedulerUnavailable,
    Source,
    State,
)
from hpcstate.backend import (
    AccountingQuery,
    Capabilities,
    Command,
    CommandResult,
    JobSpec,
    Submission,
)
from hpcstate.runtime import CommandBackend, LocalRunner, SshRunner

from .conftest import Sshd
from .fakes import VirtualClock

TRANSIENT = 75  # EX_TEMPFAIL: what our toy scheduler exits with when "busy"

# Fails with 75 while the file FAILS holds a positive count (decrementing it).
_MAYBE_FAIL = (
    'n=$(cat "$D/fails" 2>/dev/null || echo 0); '
    'if [ "$n" -gt 0 ]; then echo $((n-1)) > "$D/fails"; echo busy >&2; exit 75; fi; '
)


class ToyDialect:
    """A scheduler made of files under one directory (pure: it only builds argv)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def _sh(self, script: str, *args: str, timeout: float = 5.0) -> Command:
        return Command(
            argv=["sh", "-c", script, "sh", *args], env={"D": str(self.directory)}, timeout=timeout
        )

    def submit_command(self, spec: JobSpec) -> Command:
        script = (
            _MAYBE_FAIL
            + 'id=$(($(cat "$D/next" 2>/dev/null || echo 100) + 1)); echo $id > "$D/next"; '
            'echo "$1" >> "$D/submits"; [ -n "$1" ] && echo $id > "$D/tag-$1"; '
            'if [ -e "$D/slow-submit" ]; then rm "$D/slow-submit"; sleep 5; fi; echo "job $id"'
        )
        return self._sh(script, spec.tag, timeout=1.0)

    def parse_submit(self, result: CommandResult, spec: JobSpec) -> Submission:
        if result.returncode != 0 or not result.stdout.startswith("job "):
            raise ParseError("no job id", command="submit", line=result.stdout)
        return Submission(native_id=result.stdout.split()[1])

    def queue_command(self, native_ids: Sequence[str]) -> Command:
        script = _MAYBE_FAIL + (
            'if [ -e "$D/hang" ]; then sleep 5; fi; '
            'for i; do if [ -e "$D/state-$i" ]; then echo "$i $(cat "$D/state-$i")"; fi; done'
        )
        return self._sh(script, *native_ids, timeout=1.0)

    def parse_queue(
        self, result: CommandResult, *, native_ids: Sequence[str], observed_at: datetime
    ) -> Sequence[Observation]:
        if result.returncode != 0:
            raise ParseError(f"exit {result.returncode}", command="queue")
        listed = dict(line.split() for line in result.stdout.splitlines())
        return [
            Observation(
                native_id=n, source=Source.QUEUE, observed_at=observed_at, state=State(listed[n])
            )
            if n in listed
            else Observation(
                native_id=n, source=Source.QUEUE, observed_at=observed_at, absence=Absence.ABSENT
            )
            for n in native_ids
        ]

    def accounting_command(self, query: AccountingQuery) -> Command | None:
        return None

    def parse_accounting(
        self, result: CommandResult, *, query: AccountingQuery, observed_at: datetime
    ) -> Sequence[Observation]:
        return ()

    def cancel_command(self, native_ids: Sequence[str]) -> Command:
        return self._sh('for i; do echo cancelled > "$D/state-$i"; done', *native_ids)

    def check_cancel(self, result: CommandResult) -> None:
        if result.returncode != 0:
            raise ParseError("cancel failed", command="cancel")

    def find_submission_command(self, tag: str) -> Command | None:
        return self._sh('cat "$D/tag-$1"', tag)

    def parse_find_submission(self, result: CommandResult, tag: str) -> Submission | None:
        return Submission(native_id=result.stdout.strip()) if result.returncode == 0 else None

    def is_transient(self, result: CommandResult) -> bool:
        return result.returncode == TRANSIENT


@pytest.fixture
def toy(tmp_path: Path) -> Path:
    directory = tmp_path / "toy"
    directory.mkdir()
    return directory


def make_backend(directory: Path, clock: VirtualClock, runner: object = None) -> CommandBackend:
    return CommandBackend(
        name="toy",
        dialect=ToyDialect(directory),
        runner=runner or LocalRunner(),  # type: ignore[arg-type]
        capabilities=Capabilities(idempotent_submit=True),
        clock=clock,
        retries=3,
        random_source=lambda: 0.5,
    )


async def test_one_call_stamps_observed_at_from_the_clock(toy: Path, clock: VirtualClock) -> None:
    (toy / "state-7").write_text("running")
    backend = make_backend(toy, clock)
    found = await backend.queue(["7", "8"])
    assert [(o.native_id, o.state, o.absence) for o in found] == [
        ("7", State.RUNNING, None),
        ("8", None, Absence.ABSENT),
    ]
    assert all(o.observed_at == clock.now() for o in found)
    assert backend.commands_run == 1  # many ids, one command


async def test_transient_failures_are_retried_with_backoff(toy: Path, clock: VirtualClock) -> None:
    (toy / "state-7").write_text("queued")
    (toy / "fails").write_text("2")
    backend = make_backend(toy, clock)
    start = clock.now()
    found = await backend.queue(["7"])
    assert found[0].state is State.QUEUED
    assert backend.commands_run == 3
    # Two waits: 0.5 s and 1.0 s ceilings, each at 75 % with our fixed jitter.
    assert (clock.now() - start).total_seconds() == pytest.approx(0.375 + 0.75)


async def test_transient_forever_raises_and_never_observes(toy: Path, clock: VirtualClock) -> None:
    (toy / "fails").write_text("99")
    backend = make_backend(toy, clock)
    with pytest.raises(SchedulerUnavailable, match="gave up after 4 attempts"):
        await backend.queue(["7"])
    assert backend.commands_run == 4


async def test_timeouts_are_transient(toy: Path, clock: VirtualClock) -> None:
    (toy / "hang").touch()
    backend = make_backend(toy, clock)
    backend.retries = 1
    with pytest.raises(SchedulerUnavailable, match="timed out"):
        await backend.queue(["7"])
    assert backend.commands_run == 2


async def test_non_transient_failure_is_command_failed(toy: Path, clock: VirtualClock) -> None:
    backend = make_backend(toy, clock)
    # cancel of a directory we cannot write: a real, permanent error.
    (toy / "state-9").mkdir()
    with pytest.raises(CommandFailed) as info:
        await backend.cancel(["9"])
    assert info.value.returncode not in (None, 0)
    assert backend.commands_run == 1  # never retried


async def test_lost_submit_answer_is_looked_up_by_tag_not_resubmitted(
    toy: Path, clock: VirtualClock
) -> None:
    (toy / "slow-submit").touch()  # the first submit goes through, then hangs past its timeout
    backend = make_backend(toy, clock)
    answer = await backend.submit(JobSpec(command=["true"], tag="t-1"))
    assert answer.native_id == "101"
    assert (toy / "submits").read_text().splitlines() == ["t-1"]  # submitted exactly once


async def test_busy_submit_is_retried_when_the_tag_shows_nothing(
    toy: Path, clock: VirtualClock
) -> None:
    (toy / "fails").write_text("1")
    backend = make_backend(toy, clock)
    answer = await backend.submit(JobSpec(command=["true"], tag="t-2"))
    assert answer.native_id == "101"
    assert (toy / "submits").read_text().splitlines() == ["t-2"]


@pytest.mark.sshd
async def test_the_same_backend_over_real_ssh(toy: Path, clock: VirtualClock, sshd: Sshd) -> None:
    runner = SshRunner(
        "127.0.0.1",
        port=sshd.port,
        username="root",
        known_hosts=sshd.known_hosts,
        client_keys=[sshd.key],
    )
    (toy / "state-5").write_text("running")
    (toy / "fails").write_text("1")
    backend = make_backend(toy, clock, runner)
    try:
        found = await backend.queue(["5", "it's; $(x)"])
        assert [o.native_id for o in found] == ["5", "it's; $(x)"]
        assert found[0].state is State.RUNNING
        await backend.cancel(["5"])
        assert (toy / "state-5").read_text().strip() == "cancelled"
        files = await backend.read_text_files([str(toy / "state-5"), str(toy / "missing")])
        assert files == {str(toy / "state-5"): "cancelled\n"}
        assert runner.connections_opened == 1
    finally:
        await backend.close()
