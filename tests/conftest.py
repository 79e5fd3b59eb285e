"""Shared test configuration. Subsystem fixtures live in each tests/<area>/conftest.py."""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

settings.register_profile("dev", max_examples=100, deadline=None)
settings.register_profile(
    "ci", max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))


def require_or_skip(reason: str) -> None:
    """Skip a test that needs a system that is not here, or fail under CI.

    CI sets HPCSTATE_REQUIRE_CLUSTER=1 after starting the loopback Slurm cluster and
    installing sshd, so a test that would silently skip there fails instead.
    """
    import pytest

    if os.environ.get("HPCSTATE_REQUIRE_CLUSTER") == "1":
        pytest.fail(f"required system missing under CI: {reason}")
    pytest.skip(reason)
