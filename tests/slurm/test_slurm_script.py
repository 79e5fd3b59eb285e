"""The batch script the Slurm dialect generates for a command: its exact text, and what
it does when a real shell runs it (the self-report file it writes, how it exits)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Mapping
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hpcstate import ExitStatus
from hpcstate.backend import JobSpec
from hpcstate.runtime import _report
from hpcstate.runtime._report import SelfReport, report_file_name
from hpcstate_slurm import SlurmDialect
from hpcstate_slurm import _script as script_module

HERE = Path(__file__).resolve().parent
D22 = SlurmDialect.for_version("22.05.8")
UTC = timezone.utc
#: The shells a batch script meets as /bin/sh: dash (Debian, Ubuntu), bash (RHEL & co).
SHELLS = [pytest.param(name, id=name) for name in ("dash", "bash") if shutil.which(name)]
RUN_ID = "20261123-200000-a1b2c3"


def tracker_env(report_file: str, *, item_id: str = f"{RUN_ID}.0") -> dict[str, str]:
    """What hpcstate's tracker puts in a job's environment (see Tracker._spec_for)."""
    env = {"HPCSTATE_RUN_ID": RUN_ID}
    if item_id:
        env["HPCSTATE_ITEM_ID"] = item_id
    env["HPCSTATE_REPORT_FILE"] = report_file
    return env


def script_for(argv: list[str], env: Mapping[str, str], **options: str) -> str:
    options.setdefault("self_report_wrapper", "true")
    stdin = D22.submit_command(JobSpec(command=argv, environment=env, options=options)).stdin
    assert stdin is not None
    return stdin


def start(shell: str, script: str, tmp_path: Path, **env: str) -> subprocess.Popen[str]:
    path = tmp_path / "job.sh"
    path.write_text(script)
    return subprocess.Popen(
        [shell, str(path)],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **env},
        start_new_session=True,  # its own process group, like a Slurm job step
    )


def read_report(path: Path) -> SelfReport:
    return SelfReport.from_dict(json.loads(path.read_text()))


def wait_for_file(path: Path) -> None:
    deadline = time.monotonic() + 30
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.02)


# -- the text --------------------------------------------------------------------------


def test_golden_script_with_a_report_file() -> None:
    spec = JobSpec(
        command=["python3", "-c", "import sys; sys.exit(3)", "it's"],
        environment={
            "OMP_NUM_THREADS": "4",
            **tracker_env(f"/scratch/u/out/hpcstate-report-{RUN_ID}.{{array_index}}.json"),
        },
        options={"self_report_wrapper": "true"},
    )
    expected = (HERE / "scripts" / "command_with_report.sh").read_text()
    assert D22.submit_command(spec).stdin == expected


def test_without_a_report_file_the_payload_is_execd() -> None:
    spec = JobSpec(command=["sleep", "1"], environment={"A": "x y"})
    assert D22.submit_command(spec).stdin == "#!/bin/sh\nexport A='x y'\nexec sleep 1\n"


def test_the_wrapper_can_be_turned_off() -> None:
    env = tracker_env("r.json")
    text = script_for(["true"], env, self_report_wrapper="false")
    assert text.splitlines()[-1] == "exec true"
    assert "hpcstate_status" not in text
    with pytest.raises(ValueError, match="self_report_wrapper"):
        script_for(["true"], env, self_report_wrapper="maybe")


def test_a_run_id_alone_or_a_file_alone_is_no_target() -> None:
    assert script_for(["true"], {"HPCSTATE_RUN_ID": "r"}).endswith("exec true\n")
    assert script_for(["true"], {"HPCSTATE_REPORT_FILE": "f"}).endswith("exec true\n")


def test_script_specs_are_not_wrapped() -> None:
    user = "#!/bin/bash\n#SBATCH --time=5\nexit 3\n"
    command = D22.submit_command(JobSpec(script=user, environment=tracker_env("r.json")))
    assert command.stdin == user


def test_the_dialect_says_which_jobs_report_themselves() -> None:
    # The tracker stops asking the queue every poll only for jobs that say so: exactly
    # those whose batch script is the wrapper.
    env = tracker_env("r.json")
    on = {"self_report_wrapper": "true"}
    assert D22.reports_itself(JobSpec(command=["true"], environment=env, options=on))
    assert "hpcstate_status" in (
        D22.submit_command(JobSpec(command=["true"], environment=env, options=on)).stdin or ""
    )
    assert not D22.reports_itself(JobSpec(command=["true"], environment=env))
    assert not D22.reports_itself(JobSpec(command=["true"], options={"self_report_wrapper": "no"}))
    assert not D22.reports_itself(JobSpec(script="#!/bin/sh\nexit 3\n", options=on))
    # The backend the tracker holds answers before it has asked Slurm its version.
    from hpcstate.runtime import LocalRunner
    from hpcstate_slurm import CAPABILITIES
    from hpcstate_slurm._io import SlurmBackend

    backend = SlurmBackend(name="slurm", runner=LocalRunner(), capabilities=CAPABILITIES)
    assert backend.reports_itself(JobSpec(command=["true"], options=on))
    assert not backend.reports_itself(JobSpec(command=["true"]))
    assert backend.commands_run == 0


def test_names_agree_with_the_runtime() -> None:
    assert script_module.REPORT_FILE_ENV == _report.REPORT_FILE_ENV
    assert script_module.RUN_ID_ENV == _report.RUN_ID_ENV
    assert script_module.ITEM_ID_ENV == _report.ITEM_ID_ENV
    assert script_module.ARRAY_INDEX_ENVS == _report.ARRAY_INDEX_ENVS


# -- run by a real shell ---------------------------------------------------------------


@pytest.mark.parametrize("shell", SHELLS)
@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        ("exit 0", ExitStatus.exited(0)),
        ("exit 3", ExitStatus.exited(3)),
        ("exit 200", ExitStatus.exited(200)),  # above 128+64: no signal number
    ],
)
def test_exit_codes(shell: str, payload: str, expected: ExitStatus, tmp_path: Path) -> None:
    report = tmp_path / "out" / "report.json"
    before = datetime.now(UTC).replace(microsecond=0)
    job = start(shell, script_for(["sh", "-c", payload], tracker_env(str(report))), tmp_path)
    _, stderr = job.communicate(timeout=30)
    assert job.returncode == expected.code  # the payload's status, unchanged
    assert stderr == ""
    found = read_report(report)
    assert found.exit == expected
    assert (found.run_id, found.item_id, found.array_index) == (RUN_ID, f"{RUN_ID}.0", None)
    assert before <= found.reported_at <= datetime.now(UTC)
    assert sorted(p.name for p in report.parent.iterdir()) == ["report.json"]  # no temp file


@pytest.mark.parametrize("shell", SHELLS)
def test_payload_killed_by_term_alone_is_reported_as_its_code(shell: str, tmp_path: Path) -> None:
    """Only the payload got SIGTERM: the shell sees 143 and cannot tell it from exit 143."""
    report = tmp_path / "report.json"
    pid_file = tmp_path / "payload.pid"
    argv = ["sh", "-c", f"echo $$ > {pid_file}.tmp; mv {pid_file}.tmp {pid_file}; exec sleep 60"]
    job = start(shell, script_for(argv, tracker_env(str(report))), tmp_path)
    wait_for_file(pid_file)
    os.kill(int(pid_file.read_text()), signal.SIGTERM)
    _, stderr = job.communicate(timeout=30)
    assert job.returncode == 143  # an exit code, as the shell saw it: never a made-up signal
    assert stderr == ""  # no "Terminated" note from the wrapper's shell
    found = read_report(report)
    assert found.exit.code == 143
    assert found.exit.signal is None
    assert found.exit.ambiguous is not None
    assert "signal 15" in found.exit.ambiguous


@pytest.mark.parametrize("shell", SHELLS)
def test_job_killed_by_term_is_reported_as_the_signal(shell: str, tmp_path: Path) -> None:
    """SIGTERM to the whole job (what scancel and a time limit do): the wrapper got it
    too, so the payload's 143 is that signal; the wrapper dies of it, as the job did."""
    report = tmp_path / "report.json"
    pid_file = tmp_path / "payload.pid"
    argv = ["sh", "-c", f"echo $$ > {pid_file}.tmp; mv {pid_file}.tmp {pid_file}; exec sleep 60"]
    job = start(shell, script_for(argv, tracker_env(str(report))), tmp_path)
    wait_for_file(pid_file)
    os.killpg(job.pid, signal.SIGTERM)
    _, stderr = job.communicate(timeout=30)
    assert job.returncode == -signal.SIGTERM
    assert stderr == ""
    assert read_report(report).exit == ExitStatus.killed(15)


@pytest.mark.parametrize("shell", SHELLS)
def test_a_signal_the_payload_handles_does_not_end_the_job(shell: str, tmp_path: Path) -> None:
    """USR1 to the whole job (sbatch --signal): the payload handles it and goes on; the
    wrapper must not die of it (it would end the job), nor report a signal."""
    report = tmp_path / "report.json"
    ready = tmp_path / "ready"
    payload = f"trap 'echo usr1' USR1; touch {ready}; sleep 1; sleep 1; exit 4"
    job = start(shell, script_for(["sh", "-c", payload], tracker_env(str(report))), tmp_path)
    wait_for_file(ready)
    os.killpg(job.pid, signal.SIGUSR1)
    stdout, _ = job.communicate(timeout=30)
    assert job.returncode == 4
    assert stdout == "usr1\n"
    assert read_report(report).exit == ExitStatus.exited(4)


@pytest.mark.parametrize("shell", SHELLS)
def test_argv_stdin_and_stdout_reach_the_payload_untouched(shell: str, tmp_path: Path) -> None:
    report = tmp_path / "report.json"
    argv = ["sh", "-c", 'printf "%s\\n" "$@"; cat', "sh", "a b", "it's", "$HOME", "|", ""]
    path = tmp_path / "job.sh"
    path.write_text(script_for(argv, tracker_env(str(report))))
    done = subprocess.run(
        [shell, str(path)], input="from stdin\n", capture_output=True, text=True, timeout=30
    )
    assert done.stdout == "a b\nit's\n$HOME\n|\n\nfrom stdin\n"
    assert done.returncode == 0
    assert read_report(report).exit == ExitStatus.exited(0)


@pytest.mark.parametrize("shell", SHELLS)
def test_command_not_found(shell: str, tmp_path: Path) -> None:
    report = tmp_path / "report.json"
    job = start(shell, script_for(["no-such-command-xyz"], tracker_env(str(report))), tmp_path)
    _, stderr = job.communicate(timeout=30)
    assert job.returncode == 127
    assert "no-such-command-xyz" in stderr  # the shell's own message still reaches the job
    assert read_report(report).exit == ExitStatus.exited(127)


@pytest.mark.parametrize("shell", SHELLS)
def test_array_task_names_its_file_by_its_index(shell: str, tmp_path: Path) -> None:
    template = str(tmp_path / f"hpcstate-report-{RUN_ID}.{{array_index}}.json")
    env = tracker_env(template, item_id="")  # a whole array: no item id
    job = start(shell, script_for(["sh", "-c", "exit 2"], env), tmp_path, SLURM_ARRAY_TASK_ID="7")
    job.communicate(timeout=30)
    assert job.returncode == 2
    found = read_report(Path(report_file_name(template, 7)))
    assert (found.item_id, found.array_index, found.exit) == ("", 7, ExitStatus.exited(2))


@pytest.mark.parametrize("shell", SHELLS)
def test_a_report_path_that_is_not_a_file_is_left_alone(shell: str, tmp_path: Path) -> None:
    target = tmp_path / "a-directory"
    target.mkdir()
    job = start(shell, script_for(["sh", "-c", "exit 5"], tracker_env(str(target))), tmp_path)
    _, stderr = job.communicate(timeout=30)
    assert job.returncode == 5
    assert "not a regular file" in stderr
    assert list(target.iterdir()) == []


@pytest.mark.parametrize("shell", SHELLS)
def test_an_unwritable_report_keeps_the_exit_status(shell: str, tmp_path: Path) -> None:
    blocker = tmp_path / "plain-file"
    blocker.write_text("")
    report = blocker / "sub" / "report.json"  # its parent cannot be created
    job = start(shell, script_for(["sh", "-c", "exit 6"], tracker_env(str(report))), tmp_path)
    _, stderr = job.communicate(timeout=30)
    assert job.returncode == 6
    assert "could not write the self-report" in stderr


ID_TEXT = st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\0"), max_size=30)


@settings(max_examples=25, deadline=None)
@given(run_id=ID_TEXT.filter(bool), item_id=ID_TEXT, name=ID_TEXT)
def test_any_ids_and_file_name_make_a_readable_report(
    run_id: str, item_id: str, name: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Whatever the ids and the file name hold (quotes, $, backslashes, unicode), the
    file lands where the runtime looks for it and reads back as the same ids."""
    work = tmp_path_factory.mktemp("report")
    file_name = "r-" + name.replace("/", "_") + ".json"
    env = {
        "HPCSTATE_RUN_ID": run_id,
        "HPCSTATE_ITEM_ID": item_id,
        "HPCSTATE_REPORT_FILE": str(work / file_name),
    }
    path = work / "job.sh"
    path.write_text(script_for(["sh", "-c", "exit 1"], env))
    done = subprocess.run(["sh", str(path)], capture_output=True, text=True, timeout=30)
    assert done.returncode == 1
    found = read_report(Path(report_file_name(str(work / file_name), None)))
    assert (found.run_id, found.item_id, found.exit) == (run_id, item_id, ExitStatus.exited(1))
    assert found.reported_at > datetime.now(UTC) - timedelta(minutes=5)


def test_the_wrapper_is_off_by_default_so_signals_stay_lossless() -> None:
    # exec keeps "killed by SIGSEGV" for Slurm to record; the sh wrapper would turn it
    # into "exit 139". Push is opt-in.
    spec = JobSpec(command=["true"], environment=tracker_env("r.json"))
    stdin = D22.submit_command(spec).stdin
    assert stdin is not None
    assert stdin.splitlines()[-1] == "exec true"
