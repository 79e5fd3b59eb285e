"""Identifying a local process beyond its pid (Linux /proc).

A pid is recycled; (pid, start time in clock ticks since boot, boot id) is not: a
job's handle records all three, so a new process that got the same pid after a
reboot or a container restart is never taken for the job.
"""

from __future__ import annotations

from attrs import frozen

_BOOT_ID_PATH = "/proc/sys/kernel/random/boot_id"


def boot_id() -> str:
    with open(_BOOT_ID_PATH, encoding="ascii") as handle:
        return handle.read().strip()


def _stat_fields(pid: int) -> list[str]:
    """Fields 3.. of /proc/PID/stat (after ``pid (comm)``; comm may hold spaces and ')')."""
    with open(f"/proc/{pid}/stat", encoding="utf-8", errors="replace") as handle:
        text = handle.read()
    return text[text.rindex(")") + 2 :].split()


def process_start_time(pid: int) -> int:
    """Field 22 of /proc/PID/stat: start time in clock ticks after boot. Raises OSError
    (FileNotFoundError) if there is no such process."""
    return int(_stat_fields(pid)[19])


@frozen(kw_only=True)
class ProcessHandle:
    """A process identified lossless-ly: ``"pid:start_time:boot_id"`` as text."""

    pid: int
    start_time: int
    boot_id: str

    def __str__(self) -> str:
        return f"{self.pid}:{self.start_time}:{self.boot_id}"

    @classmethod
    def parse(cls, text: str) -> ProcessHandle:
        pid, start, boot = text.split(":", 2)
        return cls(pid=int(pid), start_time=int(start), boot_id=boot)

    @classmethod
    def of(cls, pid: int) -> ProcessHandle:
        return cls(pid=pid, start_time=process_start_time(pid), boot_id=boot_id())

    def alive(self) -> bool:
        """True only for this very process, still running (a zombie is not running)."""
        try:
            if self.boot_id != boot_id():
                return False
            fields = _stat_fields(self.pid)
        except (OSError, ValueError):
            return False
        return int(fields[19]) == self.start_time and fields[0] not in ("Z", "X", "x")
