"""The exception tree of hpcstate.

::

    HpcStateError
    ├── IllegalTransition            .state .input  (the item is left unchanged)
    │   └── InvariantViolation       .problems
    ├── ParseError(ValueError)       .command .line_no .line .field
    ├── SchemaError(ValueError)      .version; __cause__ is cattrs' error
    ├── BackendNotFound(LookupError) message ends with the pip command to run
    │   └── IncompatibleBackend      the plugin targets another backend API version
    ├── ConfigError(ValueError)      a configuration file or value is wrong; says where
    └── BackendError                 raised by I/O code only, never by the pure core
        ├── CommandFailed            .argv .returncode .stderr
        ├── SchedulerUnavailable     transient: retrying is safe, never a verdict
        └── TransportError           SSH / connection problems (transient)

A parser returns a result or raises :class:`ParseError`; any other exception is a bug.
"""

from __future__ import annotations

from collections.abc import Sequence


class HpcStateError(Exception):
    """Base class of every exception hpcstate raises on purpose."""


class IllegalTransition(HpcStateError):
    """An observation that the transition table does not allow in the item's state."""

    def __init__(self, state: object, input: object, detail: str = "") -> None:
        self.state = state
        self.input = input
        message = f"illegal transition: {input!s} in state {state!s}"
        super().__init__(f"{message}: {detail}" if detail else message)


class InvariantViolation(IllegalTransition):
    """The transition would produce an item that breaks an invariant."""

    def __init__(self, state: object, input: object, problems: Sequence[str]) -> None:
        self.problems = tuple(problems)
        super().__init__(state, input, "; ".join(self.problems))


class ParseError(HpcStateError, ValueError):
    """A scheduler (or a user) said something we cannot read.

    The message names the command, the line and the field, so a bug report
    can be written from it alone.
    """

    def __init__(
        self,
        message: str,
        *,
        command: str = "",
        line_no: int | None = None,
        line: str | None = None,
        field: str | None = None,
    ) -> None:
        self.command = command
        self.line_no = line_no
        self.line = line
        self.field = field
        where = []
        if command:
            where.append(f"in output of {command}")
        if line_no is not None:
            where.append(f"line {line_no}")
        if field:
            where.append(f"field {field}")
        text = message
        if where:
            text += " (" + ", ".join(where) + ")"
        if line is not None:
            shown = line if len(line) <= 200 else line[:200] + "..."
            text += f": {shown!r}"
        super().__init__(text)


class SchemaError(HpcStateError, ValueError):
    """A stored document cannot be loaded (wrong version or shape)."""

    def __init__(self, message: str, *, version: object = None) -> None:
        self.version = version
        super().__init__(message)


class BackendNotFound(HpcStateError, LookupError):
    """No backend of that name is installed (the message says what to install)."""


class IncompatibleBackend(BackendNotFound):
    """A backend plugin targets a backend API version this hpcstate does not speak."""


class ConfigError(HpcStateError, ValueError):
    """A configuration file or value is wrong; the message says where and what to fix."""


class BackendError(HpcStateError):
    """Raised by I/O code talking to a scheduler; never by the pure core."""


class CommandFailed(BackendError):
    """A scheduler command exited non-zero with an error that is not transient."""

    def __init__(self, argv: Sequence[str], returncode: int | None, stderr: str) -> None:
        self.argv = tuple(argv)
        self.returncode = returncode
        self.stderr = stderr
        tail = stderr.strip().splitlines()[-1] if stderr.strip() else "(no stderr)"
        super().__init__(f"{' '.join(self.argv[:2])} exited {returncode}: {tail}")


class SchedulerUnavailable(BackendError):
    """Transient: the scheduler or its accounting did not answer. Retrying is safe."""


class TransportError(BackendError):
    """Transient: the connection to the scheduler's host failed."""
