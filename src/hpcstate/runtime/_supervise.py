"""The local backend's supervisor: ``python -I -S .../_supervise.py JOBDIR``.

Reads ``JOBDIR/spec.json``, detaches (double fork, new session) so the job survives
the tracker, runs the payload in its own process group with its output in files,
waits for it and writes its raw wait status atomically to ``JOBDIR/status.json``:
a lossless exit-or-signal. A time limit or a SIGTERM to the supervisor sends TERM to
the payload's group, then KILL after a grace.

Files it writes (all atomically: temp file + rename):
  supervisor.json  {"pid", "start_time", "boot_id"}   once it is running, detached
  payload.json     {"pid", "start_time", "boot_id", "started_at"}   once the payload runs
  status.json      {"wait_status", "timed_out", "cancelled", "started_at", "finished_at",
                    "cpu_time_s", "max_rss_bytes"}   when the payload has ended
The launcher process exits 0 once supervisor.json exists (non-zero if it could not
start), so whoever launched it never has to reap the detached supervisor.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
from datetime import datetime, timezone
from pathlib import Path
from types import FrameType
from typing import Any

# Self-contained on purpose (stdlib only, no package imports): the backend starts it
# as ``python -I -S <this file>``, which takes milliseconds instead of importing
# hpcstate. Keep these two in step with _proc.py.


def boot_id() -> str:
    with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as handle:
        return handle.read().strip()


def process_start_time(pid: int) -> int:
    with open(f"/proc/{pid}/stat", encoding="utf-8", errors="replace") as handle:
        text = handle.read()
    return int(text[text.rindex(")") + 2 :].split()[19])


def write_json_atomic(path: Path, document: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8") as handle:
        json.dump(document, handle)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    # The rename itself must survive a crash too.
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat()


def _identity(pid: int) -> dict[str, Any]:
    return {"pid": pid, "start_time": process_start_time(pid), "boot_id": boot_id()}


class _Supervisor:
    def __init__(self, jobdir: Path, spec: dict[str, Any]) -> None:
        self.jobdir = jobdir
        self.spec = spec
        self.payload_pid: int | None = None
        self.cancelled = False
        self.timed_out = False
        self.killing = False  # TERM sent; the next alarm sends KILL
        self.kill_grace = float(spec.get("kill_grace", 5.0))

    def flags(self) -> tuple[bool, bool]:
        """(cancelled, killing): set by signal handlers at any time, so read fresh."""
        return self.cancelled, self.killing

    def _signal_payload(self, sig: int) -> None:
        if self.payload_pid is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.payload_pid, sig)

    def _start_killing(self) -> None:
        if self.killing:
            return
        self.killing = True
        self._signal_payload(signal.SIGTERM)
        signal.setitimer(signal.ITIMER_REAL, max(0.01, self.kill_grace))

    def on_term(self, signum: int, frame: FrameType | None) -> None:
        if not self.timed_out:
            self.cancelled = True
        self._start_killing()

    def on_alarm(self, signum: int, frame: FrameType | None) -> None:
        if self.killing:
            self._signal_payload(signal.SIGKILL)
            return
        self.timed_out = True
        self._start_killing()

    def run(self) -> int:
        signal.signal(signal.SIGTERM, self.on_term)
        signal.signal(signal.SIGINT, self.on_term)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        signal.signal(signal.SIGALRM, self.on_alarm)
        spec = self.spec
        stdout = os.open(spec["stdout"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        stderr = (
            stdout
            if spec.get("stderr") in (None, spec["stdout"])
            else os.open(spec["stderr"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        )
        if self.cancelled:  # cancelled before the payload started: it never runs
            write_json_atomic(
                self.jobdir / "status.json",
                {
                    "wait_status": None,
                    "timed_out": False,
                    "cancelled": True,
                    "started_at": None,
                    "finished_at": _now(),
                },
            )
            return 0
        # Block TERM between fork and recording the pid, so a cancel cannot be lost.
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT, signal.SIGALRM})
        pid = os.fork()
        if pid == 0:  # the payload
            try:
                signal.pthread_sigmask(
                    signal.SIG_UNBLOCK, {signal.SIGTERM, signal.SIGINT, signal.SIGALRM}
                )
                for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGALRM):
                    signal.signal(sig, signal.SIG_DFL)
                signal.signal(signal.SIGHUP, signal.SIG_DFL)
                os.setpgid(0, 0)
                devnull = os.open(os.devnull, os.O_RDONLY)
                os.dup2(devnull, 0)
                os.dup2(stdout, 1)
                os.dup2(stderr, 2)
                if spec.get("cwd"):
                    os.chdir(spec["cwd"])
                argv = spec["argv"]
                os.execvpe(argv[0], argv, spec["env"])
            except BaseException as exc:  # exec failed: report it as a shell would
                try:
                    os.write(2, f"hpcstate: cannot run {spec['argv'][0]!r}: {exc}\n".encode())
                finally:
                    os._exit(127 if isinstance(exc, FileNotFoundError) else 126)
        self.payload_pid = pid
        started_at = _now()
        try:
            identity = _identity(pid)
        except OSError:
            identity = {"pid": pid, "start_time": None, "boot_id": boot_id()}
        write_json_atomic(self.jobdir / "payload.json", {**identity, "started_at": started_at})
        limit = spec.get("time_limit")
        if limit:
            signal.setitimer(signal.ITIMER_REAL, float(limit))
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM, signal.SIGINT, signal.SIGALRM})
        if self.flags() == (True, True):
            # The cancel arrived while the payload was being forked: TERM it now
            # (the KILL timer is already running).
            self._signal_payload(signal.SIGTERM)
        _, wait_status, usage = os.wait4(pid, 0)  # retried across our signal handlers (PEP 475)
        signal.setitimer(signal.ITIMER_REAL, 0)
        finished_at = _now()
        # Like a scheduler: nothing of the job outlives it.
        self._signal_payload(signal.SIGKILL)
        write_json_atomic(
            self.jobdir / "status.json",
            {
                "wait_status": wait_status,
                "timed_out": self.timed_out,
                "cancelled": self.flags()[0] and not self.timed_out,
                "started_at": started_at,
                "finished_at": finished_at,
                "cpu_time_s": usage.ru_utime + usage.ru_stime,
                "max_rss_bytes": usage.ru_maxrss * 1024,  # Linux reports KiB
            },
        )
        return 0


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: _supervise.py JOBDIR", file=sys.stderr)
        return 2
    jobdir = Path(argv[0]).resolve()
    spec = json.loads((jobdir / "spec.json").read_text(encoding="utf-8"))
    read_end, write_end = os.pipe()
    if os.fork() != 0:
        # The launcher: wait until the supervisor says it is recorded, then exit.
        os.close(write_end)
        with os.fdopen(read_end, "rb") as pipe:
            answer = pipe.read()
        return 0 if answer == b"ok" else 1
    os.close(read_end)
    os.setsid()  # no controlling terminal; survives the tracker's session
    if os.fork() != 0:
        os._exit(0)  # the intermediate: the supervisor is now re-parented
    supervisor = _Supervisor(jobdir, spec)
    signal.signal(signal.SIGTERM, supervisor.on_term)
    try:
        write_json_atomic(jobdir / "supervisor.json", _identity(os.getpid()))
    except BaseException:
        os.close(write_end)
        raise
    os.write(write_end, b"ok")
    os.close(write_end)
    # Detach from whatever stdio the launcher had.
    devnull = os.open(os.devnull, os.O_RDWR)
    log = os.open(jobdir / "supervisor.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(devnull, 0)
    os.dup2(log, 1)
    os.dup2(log, 2)
    return supervisor.run()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
