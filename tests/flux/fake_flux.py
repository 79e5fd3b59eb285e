"""A stand-in ``flux`` executable that replays recorded flux-core 0.88.0 output.

Flux cannot run on this machine, so the backend's I/O tests run the real LocalRunner
and the real ``sh`` evidence script against this program. It knows exactly the jobs
recorded in tests/golden/flux/0.88.0 and answers as flux-core does (the shapes are
the recorded ones; the rules for several ids follow flux-jobs.py):

* ``flux jobs --json ID...``: one object for one id, ``{"jobs": [...]}`` otherwise;
  ``JobID X unknown`` on stderr for ids it does not know; exit 1 if none was known.
* ``flux job info ID KEY``: the recorded ``eventlog`` / ``guest.exec.eventlog``
  output (or ``flux-job: KEY: key not found``, exit 1); ``guest.output`` is empty
  unless the state file gives an oom log line for that id.
* ``flux submit``/``flux batch``: prints the recorded id of the case named by
  ``--job-name=CASE``, else of the state file's ``submit_case``.
* ``flux cancel``: exit 0.
* ``flux version`` / ``flux resource list``: what the real 0.88.0 printed
  (tests/golden/flux/0.88.0-production/_versions).
* ``flux python ARGS...``: the real interpreter on ARGS with ``import flux`` resolving to
  tests/flux/flux088_stub (0.88.0's binding behaviour for the tag lookup). Its jobs are
  the ones this fake was asked to submit (read back from ``$FAKE_FLUX_LOG``), newest
  first, each with the ``user.hpcstate_tag`` its submit set (unless ``$STUB_FLUX_JOBS``
  is already given).

Every invocation is appended to ``$FAKE_FLUX_LOG``; ``$FAKE_FLUX_STATE`` (JSON) may say
``{"unreachable": true}`` (job info fails as an unreachable broker does), give
``oom`` lines by id, ``output_errors`` (ids whose guest.output cannot be read),
``rpc_errors`` (id -> the strerror job-list answers ``flux jobs`` with for it, printed
as flux-jobs does: ``rpc: <strerror>``), ``purged`` ids and the ``submit_case``.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

GOLDEN = Path(__file__).resolve().parent.parent / "golden" / "flux" / "0.88.0"
VERSIONS = GOLDEN.parent / "0.88.0-production" / "_versions"
STUB = Path(__file__).resolve().parent / "flux088_stub"
TAG_OPTION = "--setattr=user.hpcstate_tag="
STEMS = {"eventlog": "eventlog", "guest.exec.eventlog": "exec_eventlog"}


def _state() -> dict[str, object]:
    path = os.environ.get("FAKE_FLUX_STATE")
    return json.loads(Path(path).read_text()) if path and Path(path).exists() else {}


def _cases() -> dict[int, str]:
    cases = {}
    for folder in GOLDEN.iterdir():
        record = folder / "jobs_json.out"
        if record.exists():
            cases[json.loads(record.read_text())["id"]] = folder.name
    return cases


def _decimal(text: str) -> int:
    # The backend always passes decimal ids.
    return int(text)


def jobs(args: list[str], state: dict[str, object]) -> int:
    ids = [a for a in args if not a.startswith("-")]
    purged = {int(x) for x in state.get("purged", [])}  # type: ignore[union-attr]
    cases = _cases()
    found, unknown = [], []
    refused = state.get("rpc_errors", {})  # id -> strerror job-list answers for it
    assert isinstance(refused, dict)
    errors = []
    for text in ids:
        jobid = _decimal(text)
        if text in refused:
            errors.append(f"rpc: {refused[text]}")
        elif jobid in cases and jobid not in purged:
            found.append(json.loads((GOLDEN / cases[jobid] / "jobs_json.out").read_text()))
        else:
            unknown.append(text)
    for text in unknown:
        print(f"JobID {text} unknown", file=sys.stderr)
    for error in errors:
        print(error, file=sys.stderr)
    if len(ids) == 1:
        if found:
            print(json.dumps(found[0]))
    else:
        print(json.dumps({"jobs": found}))
    return 1 if ids and not found else 0


def job_info(jobid_text: str, key: str, state: dict[str, object]) -> int:
    if state.get("unreachable"):
        print("flux-job: flux_open: Connection refused", file=sys.stderr)
        return 1
    jobid = _decimal(jobid_text)
    case = _cases().get(jobid)
    if key == "guest.output":
        unreadable = state.get("output_errors", [])
        assert isinstance(unreadable, list)
        if str(jobid) in unreadable:
            print(f"flux-job: {key}: key not found", file=sys.stderr)
            return 1
        oom = state.get("oom", {})
        assert isinstance(oom, dict)
        if str(jobid) in oom:
            entry = {
                "timestamp": 1.0,
                "name": "log",
                "context": {
                    "rank": 0,
                    "level": 3,
                    "message": oom[str(jobid)],
                    "component": "oom",
                    "file": "oom.c",
                    "line": 80,
                },
            }
            print(json.dumps(entry, separators=(",", ":")))
        print('{"timestamp":1.0,"name":"header","context":{"version":1}}')
        return 0
    stem = STEMS.get(key)
    if case is None or stem is None:
        print(f"flux-job: {key}: key not found", file=sys.stderr)
        return 1
    folder = GOLDEN / case
    sys.stdout.write((folder / f"{stem}.out").read_text())
    err = folder / f"{stem}.err"
    if err.exists():
        sys.stderr.write(err.read_text())
    return int((folder / f"{stem}.rc").read_text())


def _submitted_case(argv: list[str], state: dict[str, object]) -> str:
    """The recorded case whose id a submit gets: --job-name=CASE, else the state's."""
    case = str(state.get("submit_case", "exit_0"))
    for arg in argv:
        name = arg.partition("--job-name=")[2]
        if name and (GOLDEN / name / "submit.out").exists():
            case = name
    return case


def _submitted_jobs(state: dict[str, object]) -> list[dict[str, object]]:
    """The jobs submitted through this fake (its log), newest first, with their tags."""
    log = os.environ.get("FAKE_FLUX_LOG")
    if not log or not Path(log).exists():
        return []
    jobs: list[dict[str, object]] = []
    for line in Path(log).read_text(encoding="utf-8").splitlines():
        argv = json.loads(line)
        if argv[:1] not in (["submit"], ["batch"]):
            continue
        record = GOLDEN / _submitted_case(argv, state) / "jobs_json.out"
        if not record.exists():
            continue
        tags = [json.loads(a[len(TAG_OPTION) :]) for a in argv if a.startswith(TAG_OPTION)]
        jobs.append({"id": json.loads(record.read_text())["id"], "tag": (tags or [None])[-1]})
    return jobs[::-1]


def python(args: list[str], state: dict[str, object]) -> int:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(STUB)
    env.setdefault("STUB_FLUX_JOBS", json.dumps(_submitted_jobs(state)))
    sys.stdout.flush()
    os.execve(sys.executable, [sys.executable, *args], env)
    return 127  # not reached


def recorded_version(stem: str) -> int:
    sys.stdout.write((VERSIONS / f"{stem}.out").read_text())
    return int((VERSIONS / f"{stem}.rc").read_text())


def main(argv: list[str]) -> int:
    log = os.environ.get("FAKE_FLUX_LOG")
    if log:
        with open(log, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(argv) + "\n")
    state = _state()
    if argv[:1] == ["jobs"]:
        return jobs(argv[1:], state)
    if argv[:2] == ["job", "info"] and len(argv) == 4:
        return job_info(argv[2], argv[3], state)
    if argv[:1] in (["submit"], ["batch"]):
        # --job-name=CASE picks that recorded case; otherwise the state file's.
        case = _submitted_case(argv, state)
        if argv[0] == "batch":
            sys.stdin.read()
        sys.stdout.write((GOLDEN / case / "submit.out").read_text())
        return 0
    if argv[:1] == ["cancel"]:
        return 0
    if argv[:1] == ["python"]:
        return python(argv[1:], state)
    if argv == ["version"]:
        return recorded_version("flux_version")
    if argv == ["resource", "list"]:
        return recorded_version("flux_resource_list")
    print(f"fake flux: unsupported command {argv}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
