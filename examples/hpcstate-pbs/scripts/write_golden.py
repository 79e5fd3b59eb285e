"""Write the golden qstat/qsub/qdel outputs of tests/golden (run once; output checked in).

NOT RECORDED: no PBS server ran. Every output is written from OpenPBS's documentation:
the ``qstat -f -F json`` layout (PP-483 design page: ``timestamp``, ``pbs_version``,
``pbs_server``, ``Jobs`` keyed by full job id, attributes as in ``qstat -f``), state
letters and ``Exit_status`` ranges from ``qstat(1B)`` and ``pbs_job_attributes(7B)``,
JOB_EXEC_* codes and history substates (91..94) from ``src/include/job.h``, and
"qstat: Unknown Job Id" with exit status 153 (PBSE_UNKJOBID 15001 mod 256).

The expected results (``expected.json``) are NOT generated: they are written by hand
from what each job did.
"""

from __future__ import annotations

import json
import shlex
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

GOLDEN = Path(__file__).resolve().parent.parent / "tests" / "golden"
T0 = datetime(2026, 3, 1, 12, 0, 0, tzinfo=timezone.utc)
DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def ctime(seconds: float) -> str:
    """PBS prints times like ctime(3): 'Sun Mar  1 12:00:05 2026'."""
    t = T0 + timedelta(seconds=seconds)
    return f"{DAYS[t.weekday()]} {MONTHS[t.month - 1]} {t.day:2d} {t:%H:%M:%S} {t.year}"


def job(
    number: int,
    name: str,
    state: str,
    *,
    substate: int,
    submit: float = 0,
    start: float | None = None,
    end: float | None = None,
    exit_status: int | None = None,
    run_count: int | None = None,
    walltime: str = "00:00:01",
) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "Job_Name": name,
        "Job_Owner": "user@login1",
        "job_state": state,
        "queue": "workq",
        "server": "pbs",
        "Checkpoint": "u",
        "ctime": ctime(submit),
        "Error_Path": f"login1:/home/user/{name}.e{number}",
        "Hold_Types": "n",
        "Join_Path": "n",
        "Keep_Files": "n",
        "Mail_Points": "a",
        "mtime": ctime(end if end is not None else (start if start is not None else submit)),
        "Output_Path": f"login1:/home/user/{name}.o{number}",
        "Priority": 0,
        "qtime": ctime(submit),
        "Rerunable": "True",
        "Resource_List": {"ncpus": 1, "nodect": 1, "place": "pack", "select": "1:ncpus=1"},
        "substate": substate,
        "Variable_List": {"PBS_O_HOME": "/home/user", "PBS_O_WORKDIR": "/home/user"},
        "euser": "user",
        "egroup": "user",
        "queue_type": "E",
        "etime": ctime(submit),
        "Submit_arguments": f"-N {name}",
        "project": "_pbs_project_default",
        "Submit_Host": "login1",
    }
    if start is not None:
        doc["stime"] = ctime(start)
        doc["exec_host"] = "node1/0"
        doc["exec_vnode"] = "(node1:ncpus=1)"
        doc["session_id"] = 4000 + number
        doc["resources_used"] = {
            "cpupercent": 0,
            "cput": "00:00:00",
            "mem": "5244kb",
            "ncpus": 1,
            "vmem": "12816kb",
            "walltime": walltime,
        }
    if run_count is not None:
        doc["run_count"] = run_count
    if end is not None:
        doc["obittime"] = ctime(end)
        doc["history_timestamp"] = int((T0 + timedelta(seconds=end)).timestamp())
    if exit_status is not None:
        doc["Exit_status"] = exit_status
    return doc


def qstat(*jobs: tuple[str, dict[str, Any]], at: float) -> str:
    doc = {
        "timestamp": int((T0 + timedelta(seconds=at)).timestamp()),
        "pbs_version": "23.06.06",
        "pbs_server": "pbs",
        "Jobs": dict(jobs),
    }
    return json.dumps(doc, indent=4) + "\n"


class Case:
    def __init__(self, name: str) -> None:
        self.dir = GOLDEN / name
        self.dir.mkdir(parents=True, exist_ok=True)
        self.lines = ["file\ttime\tcommand"]

    def add(self, stem: str, at: float, argv: list[str], out: str, rc: int, err: str = "") -> None:
        t = T0 + timedelta(seconds=at)
        self.lines.append(f"{stem}\t{t:%H:%M:%S}\t{shlex.join(argv)}")
        (self.dir / f"{stem}.out").write_text(out)
        (self.dir / f"{stem}.rc").write_text(f"{rc}\n")
        if err:
            (self.dir / f"{stem}.err").write_text(err)

    def save(self) -> None:
        (self.dir / "commands.tsv").write_text("\n".join(self.lines) + "\n")


def qstat_argv(*ids: str) -> list[str]:
    return ["qstat", "-f", "-F", "json", "-x", *ids]


def simple(number: int, name: str, script: str, *, exit_status: int, substate: int = 92) -> None:
    """qsub, qstat while running, qstat once finished (history)."""
    jid = f"{number}.pbs"
    case = Case(name)
    case.add("qsub", 0, ["qsub", "-N", name, "--", "/bin/sh", "-c", script], f"{jid}\n", 0)
    running = job(number, name, "R", substate=42, start=2, run_count=1)
    case.add("qstat_running", 3, qstat_argv(jid), qstat((jid, running), at=3), 0)
    done = job(
        number, name, "F", substate=substate, start=2, end=8, exit_status=exit_status, run_count=1
    )
    case.add("qstat_done", 40, qstat_argv(jid), qstat((jid, done), at=40), 0)
    case.save()


def main() -> None:
    simple(101, "exit_0", "exit 0", exit_status=0)
    simple(102, "exit_3", "exit 3", exit_status=3)
    simple(103, "exit_137", "exit 137", exit_status=137)
    simple(104, "sigkill", "kill -KILL $$", exit_status=256 + 9)
    simple(105, "walltime", "sleep 300", exit_status=-29, substate=93)
    simple(109, "exec_fail", "true", exit_status=-1, substate=93)

    # Deleted while running: SIGTERM kills the job's top process (256 + 15).
    case = Case("cancel_running")
    jid = "106.pbs"
    argv = ["qsub", "-N", "cancel_running", "--", "/bin/sh", "-c", "sleep 300"]
    case.add("qsub", 0, argv, f"{jid}\n", 0)
    running = job(106, "cancel_running", "R", substate=42, start=2, run_count=1)
    case.add("qstat_running", 3, qstat_argv(jid), qstat((jid, running), at=3), 0)
    case.add("qdel", 4, ["qdel", jid], "", 0)
    done = job(
        106, "cancel_running", "F", substate=91, start=2, end=5, exit_status=271, run_count=1
    )
    case.add("qstat_done", 40, qstat_argv(jid), qstat((jid, done), at=40), 0)
    case.save()

    # Deleted while queued (held): never ran, no Exit_status.
    case = Case("cancel_queued")
    jid = "107.pbs"
    argv = ["qsub", "-N", "cancel_queued", "--", "/bin/sh", "-c", "true"]
    case.add("qsub", 0, argv, f"{jid}\n", 0)
    queued = job(107, "cancel_queued", "H", substate=20)
    case.add("qstat_queued", 2, qstat_argv(jid), qstat((jid, queued), at=2), 0)
    case.add("qdel", 3, ["qdel", jid], "", 0)
    done = job(107, "cancel_queued", "F", substate=91, end=3)
    case.add("qstat_done", 40, qstat_argv(jid), qstat((jid, done), at=40), 0)
    # A second qdel after the end: PBS says it has finished; that is not an error.
    err = "qdel: Job has finished 107.pbs\n"
    case.add("qdel_again", 41, ["qdel", "107.pbs"], "", 35, err)
    case.save()

    # Its node failed: PBS reran it under the same id (run_count 2), and it succeeded.
    case = Case("requeued")
    jid = "108.pbs"
    argv = ["qsub", "-N", "requeued", "--", "/bin/sh", "-c", "sleep 60"]
    case.add("qsub", 0, argv, f"{jid}\n", 0)
    first = job(108, "requeued", "R", substate=42, start=2, run_count=1)
    case.add("qstat_running", 3, qstat_argv(jid), qstat((jid, first), at=3), 0)
    back = job(108, "requeued", "Q", substate=10, run_count=1)
    case.add("qstat_requeued", 33, qstat_argv(jid), qstat((jid, back), at=33), 0)
    second = job(108, "requeued", "R", substate=42, start=40, run_count=2)
    case.add("qstat_rerun", 63, qstat_argv(jid), qstat((jid, second), at=63), 0)
    done = job(
        108,
        "requeued",
        "F",
        substate=92,
        start=40,
        end=100,
        exit_status=0,
        run_count=2,
        walltime="00:01:00",
    )
    case.add("qstat_done", 130, qstat_argv(jid), qstat((jid, done), at=130), 0)
    case.save()

    # Several ids in one call; one of them unknown to the server (history expired).
    case = Case("_many_ids")
    done = job(102, "exit_3", "F", substate=92, start=2, end=8, exit_status=3, run_count=1)
    err = "qstat: Unknown Job Id 999.pbs\n"
    case.add(
        "qstat_many",
        50,
        qstat_argv("102.pbs", "999.pbs"),
        qstat(("102.pbs", done), at=50),
        153,
        err,
    )
    case.add("qstat_none", 51, qstat_argv("998.pbs"), "", 153, "qstat: Unknown Job Id 998.pbs\n")
    err = "Connection refused\nqstat: cannot connect to server pbs (errno=15010)\n"
    case.add("qstat_down", 52, qstat_argv("101.pbs", "102.pbs"), "", 1, err)
    case.save()


if __name__ == "__main__":
    main()
