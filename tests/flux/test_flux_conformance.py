"""hpcstate's conformance suite, run on the Flux backend.

The golden cases under tests/flux/conformance are recorded flux-core 0.88.0 outputs laid
out in hpcstate.testing.golden's format (commands.tsv notes how each recorded command
differed from the argv the dialect sends); their expected.json was written by hand.
The queue check is one case, poll_all, over the recorded ``flux jobs -a --json`` listing
of the instance all eight jobs ran in: the suite adds to a queue check ids its output
does not mention and wants absences for them, but ``flux jobs ID...`` answers every id
(a record or an error line), so this backend raises for an unmentioned id instead of
inventing an absence. Every queue check therefore mentions every id.
The backend half drives FluxBackend through the real LocalRunner and ``sh`` against
fake_flux.py, which replays the same recordings (Flux cannot run here).
"""

from __future__ import annotations

import stat
import sys
from pathlib import Path

import pytest

from hpcstate.backend import BackendInfo
from hpcstate.runtime import LocalRunner
from hpcstate.testing.conformance import BackendConformance, DialectConformance
from hpcstate.testing.golden import Scenario, load_scenarios
from hpcstate_flux import BACKEND, FluxDialect
from hpcstate_flux._io import FluxBackend

HERE = Path(__file__).resolve().parent
CASES = HERE / "conformance"


class TestFluxDialect(DialectConformance):
    @pytest.fixture(scope="class")
    @classmethod
    def backend_info(cls) -> BackendInfo:
        return BACKEND

    @pytest.fixture(scope="class")
    @classmethod
    def golden_dir(cls) -> Path:
        return CASES


class TestFluxBackend(BackendConformance):
    @pytest.fixture
    def backend(self, tmp_path: Path) -> FluxBackend:
        flux = tmp_path / "flux"
        flux.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{HERE / "fake_flux.py"}" "$@"\n')
        flux.chmod(flux.stat().st_mode | stat.S_IXUSR)
        # The log lets fake flux's tag lookup find what was submitted (the suite's
        # SubmissionFinder check).
        log = str(tmp_path / "flux.log")
        runner = LocalRunner(base_env={"PATH": "/usr/bin:/bin", "FAKE_FLUX_LOG": log})
        return FluxBackend(dialect=FluxDialect(flux=str(flux)), runner=runner)

    @pytest.fixture
    def scenarios(self) -> list[Scenario]:
        return load_scenarios(CASES)
