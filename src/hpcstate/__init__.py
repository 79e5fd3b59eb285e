"""hpcstate: the true outcome of batch jobs.

This package is the pure core: records, the state machine, exit-status decoding and
the backend protocol. It does no I/O at all (no subprocess, no asyncio, no sockets,
no clock reads); ``hpcstate.runtime`` is where I/O lives.
"""

from ._arrays import expand_array_spec as expand_array_spec
from ._errors import BackendError as BackendError
from ._errors import BackendNotFound as BackendNotFound
from ._errors import CommandFailed as CommandFailed
from ._errors import ConfigError as ConfigError
from ._errors import HpcStateError as HpcStateError
from ._errors import IllegalTransition as IllegalTransition
from ._errors import IncompatibleBackend as IncompatibleBackend
from ._errors import InvariantViolation as InvariantViolation
from ._errors import ParseError as ParseError
from ._errors import SchedulerUnavailable as SchedulerUnavailable
from ._errors import SchemaError as SchemaError
from ._errors import TransportError as TransportError
from ._events import AnyEvent as AnyEvent
from ._events import AwaitingConfirmation as AwaitingConfirmation
from ._events import Corrected as Corrected
from ._events import Event as Event
from ._events import Finished as Finished
from ._events import Requeued as Requeued
from ._events import Started as Started
from ._events import StatsUpdated as StatsUpdated
from ._events import Submitted as Submitted
from ._exit import ExitStatus as ExitStatus
from ._exit import signal_description as signal_description
from ._exit import signal_name as signal_name
from ._exit import signal_number as signal_number
from ._exit import slurm_signal_name as slurm_signal_name
from ._machine import DEFAULT_GRACE as DEFAULT_GRACE
from ._machine import Step as Step
from ._machine import add_marker as add_marker
from ._machine import advance as advance
from ._machine import cancel_before_submit as cancel_before_submit
from ._machine import check_invariants as check_invariants
from ._machine import classify as classify
from ._machine import grace_deadline as grace_deadline
from ._machine import merge_stats as merge_stats
from ._machine import new_item as new_item
from ._machine import submit_rejected as submit_rejected
from ._machine import submitted as submitted
from ._machine import tick as tick
from ._merge import AccountingRow as AccountingRow
from ._merge import derived_exit as derived_exit
from ._merge import merge_rows as merge_rows
from ._merge import possible_worsts as possible_worsts
from ._model import EMPTY_STATS as EMPTY_STATS
from ._model import Absence as Absence
from ._model import JobStats as JobStats
from ._model import Marker as Marker
from ._model import MarkerCode as MarkerCode
from ._model import Observation as Observation
from ._model import Run as Run
from ._model import RunItem as RunItem
from ._reasons import END_KINDS as END_KINDS
from ._reasons import STATE_REASON_KINDS as STATE_REASON_KINDS
from ._reasons import Reason as Reason
from ._reasons import ReasonKind as ReasonKind
from ._reasons import parse_slurm_reason as parse_slurm_reason
from ._reasons import verdict_reason as verdict_reason
from ._states import ACTIVE as ACTIVE
from ._states import FAILURES as FAILURES
from ._states import OCCUPYING as OCCUPYING
from ._states import REOPENABLE as REOPENABLE
from ._states import TERMINAL as TERMINAL
from ._states import TRANSITIONS as TRANSITIONS
from ._states import WAITING as WAITING
from ._states import Input as Input
from ._states import Source as Source
from ._states import State as State
from ._states import Target as Target
from .backend import BackendContractError as BackendContractError

__version__ = "0.1.0"

# Listed, not computed: documentation tools (and readers) take the public API from here.
__all__ = [
    "ACTIVE",
    "DEFAULT_GRACE",
    "EMPTY_STATS",
    "END_KINDS",
    "FAILURES",
    "OCCUPYING",
    "REOPENABLE",
    "STATE_REASON_KINDS",
    "TERMINAL",
    "TRANSITIONS",
    "WAITING",
    "Absence",
    "AccountingRow",
    "AnyEvent",
    "AwaitingConfirmation",
    "BackendContractError",
    "BackendError",
    "BackendNotFound",
    "CommandFailed",
    "ConfigError",
    "Corrected",
    "Event",
    "ExitStatus",
    "Finished",
    "HpcStateError",
    "IllegalTransition",
    "IncompatibleBackend",
    "Input",
    "InvariantViolation",
    "JobStats",
    "Marker",
    "MarkerCode",
    "Observation",
    "ParseError",
    "Reason",
    "ReasonKind",
    "Requeued",
    "Run",
    "RunItem",
    "SchedulerUnavailable",
    "SchemaError",
    "Source",
    "Started",
    "State",
    "StatsUpdated",
    "Step",
    "Submitted",
    "Target",
    "TransportError",
    "add_marker",
    "advance",
    "cancel_before_submit",
    "check_invariants",
    "classify",
    "derived_exit",
    "expand_array_spec",
    "grace_deadline",
    "merge_rows",
    "merge_stats",
    "new_item",
    "parse_slurm_reason",
    "possible_worsts",
    "signal_description",
    "signal_name",
    "signal_number",
    "slurm_signal_name",
    "submit_rejected",
    "submitted",
    "tick",
    "verdict_reason",
]
