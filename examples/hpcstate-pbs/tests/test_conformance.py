"""hpcstate's conformance suite, run against this backend: the whole file a plugin needs."""

from pathlib import Path

import hpcstate_pbs
import pytest

from hpcstate.runtime import CommandBackend
from hpcstate.testing import FakeRunner, load_scenarios
from hpcstate.testing.conformance import BackendConformance, DialectConformance

GOLDEN = Path(__file__).parent / "golden"


class TestPbsDialect(DialectConformance):
    @pytest.fixture(scope="class")
    @classmethod
    def backend_info(cls):
        return hpcstate_pbs.BACKEND

    @pytest.fixture(scope="class")
    @classmethod
    def golden_dir(cls):
        return GOLDEN


class TestPbsBackend(BackendConformance):
    @pytest.fixture
    def backend(self):
        runner = FakeRunner.from_golden_dir(GOLDEN)
        dialect = hpcstate_pbs.make_dialect()
        return CommandBackend(
            name="pbs", dialect=dialect, runner=runner, capabilities=hpcstate_pbs.CAPABILITIES
        )

    @pytest.fixture
    def scenarios(self):
        return load_scenarios(GOLDEN)
