"""Exit status: exit code and signal kept apart, never mixed up, never invented.

``None`` means "no data", never 0. A shell's ``128+N`` is an *exit code*: exit 137
stays exit 137 unless a lossless source says a signal killed the process.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Mapping
from typing import Any

from attrs import field, frozen

from ._errors import ParseError

# Linux signal numbers and glibc's strsignal() texts. Hard-coded rather than read
# from the running platform: the core must decode identically everywhere, and the
# texts are what Slurm prints (with '_' for ' ' in scontrol's Reason).
_SIGNALS: Mapping[int, tuple[str, str]] = {
    1: ("SIGHUP", "Hangup"),
    2: ("SIGINT", "Interrupt"),
    3: ("SIGQUIT", "Quit"),
    4: ("SIGILL", "Illegal instruction"),
    5: ("SIGTRAP", "Trace/breakpoint trap"),
    6: ("SIGABRT", "Aborted"),
    7: ("SIGBUS", "Bus error"),
    8: ("SIGFPE", "Floating point exception"),
    9: ("SIGKILL", "Killed"),
    10: ("SIGUSR1", "User defined signal 1"),
    11: ("SIGSEGV", "Segmentation fault"),
    12: ("SIGUSR2", "User defined signal 2"),
    13: ("SIGPIPE", "Broken pipe"),
    14: ("SIGALRM", "Alarm clock"),
    15: ("SIGTERM", "Terminated"),
    16: ("SIGSTKFLT", "Stack fault"),
    17: ("SIGCHLD", "Child exited"),
    18: ("SIGCONT", "Continued"),
    19: ("SIGSTOP", "Stopped (signal)"),
    20: ("SIGTSTP", "Stopped"),
    21: ("SIGTTIN", "Stopped (tty input)"),
    22: ("SIGTTOU", "Stopped (tty output)"),
    23: ("SIGURG", "Urgent I/O condition"),
    24: ("SIGXCPU", "CPU time limit exceeded"),
    25: ("SIGXFSZ", "File size limit exceeded"),
    26: ("SIGVTALRM", "Virtual timer expired"),
    27: ("SIGPROF", "Profiling timer expired"),
    28: ("SIGWINCH", "Window changed"),
    29: ("SIGIO", "I/O possible"),
    30: ("SIGPWR", "Power failure"),
    31: ("SIGSYS", "Bad system call"),
}
_BY_NAME: Mapping[str, int] = {posix: num for num, (posix, _) in _SIGNALS.items()}
_BY_TEXT: Mapping[str, int] = {text.lower(): num for num, (_, text) in _SIGNALS.items()}
# Slurm's sig_num2name() short names (data_parser v0.0.40+ JSON): "KILL", "TERM"...
MAX_SIGNAL = 127  # a wait status has 7 bits for the signal number (0x7f means "stopped")


def signal_name(signal: int) -> str:
    """POSIX name of a signal number: ``SIGSEGV``; real-time ones ``SIGRTMIN+N``."""
    if signal in _SIGNALS:
        return _SIGNALS[signal][0]
    if 34 <= signal <= 64:
        return f"SIGRTMIN+{signal - 34}"
    return f"SIG{signal}"


def signal_description(signal: int) -> str:
    """strsignal() text as Slurm's squeue prints it: ``Segmentation fault``."""
    if signal in _SIGNALS:
        return _SIGNALS[signal][1]
    if 34 <= signal <= 64:
        return f"Real-time signal {signal - 34}"
    return f"Unknown signal {signal}"


def slurm_signal_name(signal: int) -> str:
    """Slurm's display form in scontrol's Reason: ``Segmentation_fault``."""
    return signal_description(signal).replace(" ", "_")


def signal_number(name: str) -> int:
    """Read a signal given as ``9``, ``KILL``, ``SIGKILL``, ``Killed`` or ``Segmentation_fault``.

    Raises :class:`ParseError` for anything else.
    """
    text = name.strip()
    if text.isascii() and text.isdigit():
        number = int(text)
        if 1 <= number <= MAX_SIGNAL:
            return number
        raise ParseError(f"signal number out of range: {number}", field="signal")
    upper = text.upper()
    if upper in _BY_NAME:
        return _BY_NAME[upper]
    if "SIG" + upper in _BY_NAME:
        return _BY_NAME["SIG" + upper]
    spaced = text.replace("_", " ").lower()
    if spaced in _BY_TEXT:
        return _BY_TEXT[spaced]
    raise ParseError(f"unknown signal name {name!r}", field="signal")


def _check_code(_: object, attribute: Any, value: int | None) -> None:
    if value is not None and not 0 <= value <= 255:
        raise ValueError(f"{attribute.name} must be within 0..255, got {value}")


def _check_signal(_: object, attribute: Any, value: int | None) -> None:
    if value is not None and not 1 <= value <= MAX_SIGNAL:
        raise ValueError(f"{attribute.name} must be within 1..{MAX_SIGNAL}, got {value}")


@functools.lru_cache(maxsize=256)
def _lossy_text(code: int) -> str:
    # Cached: one shared string per code, not one per tracked job.
    return (
        f"this Slurm's sacct subtracts 128 from exit codes >= 128: "
        f"the exit code is {code} or {code + 128}"
    )


_MAX_MESSAGE = 16_384  # Kubernetes keeps at most 4096 bytes per container anyway

_SLURM_EXIT = re.compile(r"\A([0-9]{1,10}):([0-9]{1,10})\Z")


@frozen(kw_only=True)
class ExitStatus:
    """How a process (or job) ended: an exit code, or a signal, never both.

    ``ambiguous`` is ``None`` when the value is exact; otherwise it says what is
    uncertain (for example "Slurm 22.05's sacct subtracts 128 from exit codes >= 128"),
    and a consumer must not present the value as fact.
    """

    code: int | None = field(default=None, validator=_check_code)
    signal: int | None = field(default=None, validator=_check_signal)
    core_dumped: bool = False
    ambiguous: str | None = None

    def __attrs_post_init__(self) -> None:
        if self.code is not None and self.signal is not None:
            raise ValueError("an exit status has an exit code or a signal, not both")
        if self.core_dumped and self.signal is None:
            raise ValueError("core_dumped needs a signal")

    # -- named constructors ----------------------------------------------------------
    @classmethod
    def exited(cls, code: int, *, ambiguous: str | None = None) -> ExitStatus:
        return cls(code=code, ambiguous=ambiguous)

    @classmethod
    def killed(cls, signal: int, *, core_dumped: bool = False) -> ExitStatus:
        return cls(signal=signal, core_dumped=core_dumped)

    @classmethod
    def from_wait_status(cls, status: int) -> ExitStatus:
        """Decode a raw POSIX wait status (``waitpid``'s int), losslessly.

        Stopped/continued statuses are not terminations and raise :class:`ParseError`.
        """
        if not 0 <= status <= 0xFFFF:
            raise ParseError(f"wait status out of range 0..65535: {status}", field="status")
        low = status & 0x7F
        if low == 0:
            if status & 0x80:
                # "core dumped" without a signal: no process ends like that.
                raise ParseError(f"wait status {status} is not a valid termination", field="status")
            return cls(code=(status >> 8) & 0xFF)
        if low == 0x7F or status == 0xFFFF:
            raise ParseError(
                f"wait status {status} is a stopped/continued process, not an end",
                field="status",
            )
        if status >> 8:
            # WIFSIGNALED statuses have nothing above the low byte.
            raise ParseError(f"wait status {status} is not a valid termination", field="status")
        return cls(signal=low, core_dumped=bool(status & 0x80))

    @classmethod
    def from_slurm(cls, text: str, *, high_codes_lossy: bool = False) -> ExitStatus:
        """Decode Slurm's ``code:signal`` (``13:0``, ``0:9``).

        ``high_codes_lossy`` is for Slurm versions whose sacct subtracts 128 from exit
        codes >= 128 (22.05): the result then says it may be ``code + 128``.
        """
        match = _SLURM_EXIT.match(text.strip())
        if match is None:
            raise ParseError("expected Slurm exit status CODE:SIGNAL", field="ExitCode", line=text)
        code, signal = int(match.group(1)), int(match.group(2))
        if signal:
            if code:
                raise ParseError(
                    "Slurm exit status has both a code and a signal", field="ExitCode", line=text
                )
            if signal > MAX_SIGNAL:
                raise ParseError("signal number out of range", field="ExitCode", line=text)
            return cls(signal=signal)
        if code > 255:
            raise ParseError("exit code out of range 0..255", field="ExitCode", line=text)
        if high_codes_lossy and code < 128:
            return cls(code=code, ambiguous=_lossy_text(code))
        return cls(code=code)

    @classmethod
    def from_shell_code(cls, code: int, *, source: str = "the exit code") -> ExitStatus:
        """An exit code that may hide a signal as ``128+N`` (Flux tasks, Kubernetes).

        Kept as the exit code it is; if it is above 128 the result says it may be a signal.
        """
        if not 0 <= code <= 255:
            raise ParseError(f"exit code out of range 0..255: {code}", field="exit_code")
        if 128 < code <= 128 + 64:
            sig = code - 128
            return cls(
                code=code,
                ambiguous=(
                    f"{source} {code} may be a plain exit {code} or a process killed by "
                    f"{signal_name(sig)} ({sig}); nothing lossless says which"
                ),
            )
        return cls(code=code)

    @classmethod
    def from_termination_message(cls, message: str) -> ExitStatus:
        """Read the hpcstate wrapper's termination message: ``{"exit": 3}`` or ``{"signal": 9}``."""
        if len(message) > _MAX_MESSAGE:
            raise ParseError("termination message is too long", line=message[:200])
        try:
            doc = json.loads(message)
        except (ValueError, RecursionError):
            raise ParseError("termination message is not JSON", line=message) from None
        if not isinstance(doc, dict):
            raise ParseError("termination message is not a JSON object", line=message)
        code, sig = doc.get("exit"), doc.get("signal")
        if isinstance(code, int) and not isinstance(code, bool) and sig is None:
            if not 0 <= code <= 255:
                raise ParseError("exit out of range", field="exit", line=message)
            return cls(code=code)
        if isinstance(sig, int) and not isinstance(sig, bool) and code is None:
            if not 1 <= sig <= MAX_SIGNAL:
                raise ParseError("signal out of range", field="signal", line=message)
            return cls(signal=sig, core_dumped=bool(doc.get("core_dumped", False)))
        raise ParseError('expected {"exit": N} or {"signal": N}', line=message)

    # -- derived views --------------------------------------------------------------
    @property
    def exact(self) -> bool:
        return self.ambiguous is None

    def admits(self, other: ExitStatus) -> bool:
        """True if ``other`` is one of the values this (possibly ambiguous) status may be.

        An exact status admits only itself; Slurm 22.05's lossy ``c`` admits ``c`` and
        ``c + 128``; a shell's ``128+N`` admits exit ``128+N`` and signal ``N``.
        """
        key = (other.code, other.signal)
        if key == (self.code, self.signal):
            return True
        if self.exact or self.code is None:
            return False
        if self.code < 128:
            return key == (self.code + 128, None)
        return key == (None, self.code - 128)

    @property
    def success(self) -> bool:
        return self.code == 0

    @property
    def shell_code(self) -> int | None:
        """The number a POSIX shell would show in ``$?``: the code, or 128+signal."""
        if self.signal is not None:
            return 128 + self.signal
        return self.code

    @property
    def wait_status(self) -> int | None:
        """The raw wait status (Slurm's DerivedExitCode order: any exit beats any signal)."""
        if self.signal is not None:
            return self.signal | (0x80 if self.core_dumped else 0)
        if self.code is not None:
            return self.code << 8
        return None

    @property
    def signal_name(self) -> str | None:
        return None if self.signal is None else signal_name(self.signal)

    @property
    def slurm_signal_name(self) -> str | None:
        return None if self.signal is None else slurm_signal_name(self.signal)

    def as_slurm(self) -> str:
        """Slurm's ``code:signal`` form."""
        return f"{self.code or 0}:{self.signal or 0}"

    def describe(self) -> str:
        """One line for people: ``exit 137``, ``killed by SIGSEGV (11), core dumped``."""
        if self.signal is not None:
            text = f"killed by {signal_name(self.signal)} ({self.signal})"
            if self.core_dumped:
                text += ", core dumped"
        elif self.code is not None:
            text = f"exit {self.code}"
        else:
            text = "no exit status"
        if self.ambiguous:
            text += f" [ambiguous: {self.ambiguous}]"
        return text
