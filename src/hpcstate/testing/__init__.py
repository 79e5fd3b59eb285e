"""hpcstate.testing: what a backend author needs to test a backend (shipped, public).

* :mod:`~hpcstate.testing.fakes`: :class:`FakeRunner`, a Runner answering from a table of
  argv patterns or from golden files, recording its calls.
* :mod:`~hpcstate.testing.golden`: the golden-file layout and its hand-written
  expectations (:func:`load_cases`, :func:`load_scenarios`).
* :mod:`~hpcstate.testing.simulator`: :class:`SimulatedCluster`, a deterministic fake
  scheduler that races like a real one and knows the truth; :class:`VirtualClock`.
* :mod:`~hpcstate.testing.loop`: :class:`ReferenceLoop`, the one reference poll loop
  (the Tracker's poll rules over one Backend, in memory: queue, settle, accounting,
  grace) that the conformance suite, the simulator's race tests and the live tests drive.
* :mod:`~hpcstate.testing.conformance`: the suite to subclass (``DialectConformance``,
  ``BackendConformance``). Needs pytest, pytest-asyncio and hypothesis, so it is not
  imported here: ``from hpcstate.testing.conformance import DialectConformance``.
* :mod:`~hpcstate.testing.replay`: :class:`ReplayRunner`, a Runner that replays a
  recorded timeline (:func:`load_recording`): the backend's real commands answered with
  what the real scheduler printed for the same command, in order.
* :mod:`~hpcstate.testing.strategies`: hypothesis strategies (specs, results, garbling).
"""

from __future__ import annotations

from .fakes import FakeRunner as FakeRunner
from .fakes import UnexpectedCommand as UnexpectedCommand
from .fakes import argv_matches as argv_matches
from .golden import GoldenCase as GoldenCase
from .golden import GoldenError as GoldenError
from .golden import Scenario as Scenario
from .golden import load_case as load_case
from .golden import load_cases as load_cases
from .golden import load_scenarios as load_scenarios
from .loop import NotSettled as NotSettled
from .loop import ReferenceLoop as ReferenceLoop
from .replay import TRACKER_ENV as TRACKER_ENV
from .replay import RecordedCase as RecordedCase
from .replay import RecordedCommand as RecordedCommand
from .replay import ReplayRunner as ReplayRunner
from .replay import argv_of as argv_of
from .replay import files_absent as files_absent
from .replay import load_recording as load_recording
from .replay import load_recordings as load_recordings
from .simulator import Conditions as Conditions
from .simulator import JobPlan as JobPlan
from .simulator import Outage as Outage
from .simulator import SimulatedBackend as SimulatedBackend
from .simulator import SimulatedCluster as SimulatedCluster
from .simulator import Truth as Truth
from .simulator import VirtualClock as VirtualClock
from .simulator import judge_first_verdict as judge_first_verdict

__all__ = [
    "TRACKER_ENV",
    "Conditions",
    "FakeRunner",
    "GoldenCase",
    "GoldenError",
    "JobPlan",
    "NotSettled",
    "Outage",
    "RecordedCase",
    "RecordedCommand",
    "ReferenceLoop",
    "ReplayRunner",
    "Scenario",
    "SimulatedBackend",
    "SimulatedCluster",
    "Truth",
    "UnexpectedCommand",
    "VirtualClock",
    "argv_matches",
    "argv_of",
    "files_absent",
    "judge_first_verdict",
    "load_case",
    "load_cases",
    "load_recording",
    "load_recordings",
    "load_scenarios",
]
