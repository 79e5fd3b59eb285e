"""The tagged-submission lookup (FIND_SCRIPT), run for real against flux-core 0.88.0's
binding behaviour.

Flux cannot run here, so ``flux python`` is a stand-in executable that runs the real
interpreter on the dialect's real script, with ``import flux`` resolving to
tests/flux/flux088_stub: a stand-in for the bindings that behaves as the production
recordings show 0.88.0's do (``job_kvs_lookup`` returns a dict; ``job_info_lookup`` a
future). The jobs and tags are the recorded ones (``_find_submission``). The lookup is
``FluxBackend.find_submission`` (the SubmissionFinder ability its ``idempotent_submit``
declares), run through the real CommandBackend and LocalRunner. The same test against a real instance
is ``test_a_retried_submit_finds_its_tagged_job`` in test_integration.py.
"""

from __future__ import annotations

import errno
import json
import stat
import sys
from pathlib import Path

import pytest
from flux_production import commands, jobid

from hpcstate import CommandFailed
from hpcstate.runtime import LocalRunner
from hpcstate_flux import CAPABILITIES, FluxDialect
from hpcstate_flux._io import FluxBackend

HERE = Path(__file__).resolve().parent
STUB = HERE / "flux088_stub"
TAG = "hpcstate-20261206-152907-d22c84.0"  # tagged_submission's tag (its case.json)


def _recorded_jobs() -> list[dict[str, object]]:
    """The jobs and tags 0.88.0 listed, newest first (the working diagnostic lookup)."""
    recorded = commands("_find_submission")["diag_find_script_job_info_lookup"]
    return [json.loads(line) for line in recorded.result.stdout.splitlines()]


def _backend(tmp_path: Path, jobs: list[dict[str, object]]) -> FluxBackend:
    flux = tmp_path / "flux"
    flux.write_text(
        "#!/bin/sh\n"
        '[ "$1" = python ] || { echo "flux-stub: only python" >&2; exit 2; }\n'
        "shift\n"
        f'PYTHONPATH="{STUB}" exec "{sys.executable}" "$@"\n'
    )
    flux.chmod(flux.stat().st_mode | stat.S_IXUSR)
    runner = LocalRunner(base_env={"PATH": "/usr/bin:/bin", "STUB_FLUX_JOBS": json.dumps(jobs)})
    return FluxBackend(
        dialect=FluxDialect(flux=str(flux)), runner=runner, capabilities=CAPABILITIES
    )


async def test_a_retried_submit_finds_its_tagged_job(tmp_path: Path) -> None:
    backend = _backend(tmp_path, _recorded_jobs())
    found = await backend.find_submission(TAG)
    assert found is not None
    assert found.native_id == jobid("tagged_submission") == "366917713920"
    assert await backend.find_submission("hpcstate-no-such-tag") is None
    await backend.close()


async def test_a_job_purged_meanwhile_is_skipped(tmp_path: Path) -> None:
    jobs = [{"id": 1, "tag": None, "errno": errno.ENOENT}, *_recorded_jobs()]
    backend = _backend(tmp_path, jobs)
    found = await backend.find_submission(TAG)
    assert found is not None
    assert found.native_id == "366917713920"
    await backend.close()


@pytest.mark.parametrize("code", [errno.EIO, errno.EPROTO])
async def test_a_lookup_that_failed_is_an_error_never_not_found(tmp_path: Path, code: int) -> None:
    jobs = [*_recorded_jobs(), {"id": 1, "tag": None, "errno": code}]
    backend = _backend(tmp_path, jobs)
    with pytest.raises(CommandFailed) as raised:
        await backend.find_submission("hpcstate-no-such-tag")
    assert "OSError" in raised.value.stderr
    await backend.close()
