"""The batch script the Slurm dialect generates for a command: its exact text, and what
it does when a real shell runs it (the self-report file it writes, how it exits)."""

from __future__ import annotations

import json
import os
import shlex
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
from hpcstate_slurm._helper import PERL_HELPER

HERE = Path(__file__).resolve().parent
D22 = SlurmDialect.for_version("22.05.8")
UTC = timezone.utc
#: The shells a batch script meets as /bin/sh: dash (Debian, Ubuntu), bash (RHEL & co).
SHELLS = [pytest.param(name, id=name) for name in ("dash", "bash") if shutil.which(name)]
RUN_ID = "20261123-200000-a1b2c3"
#: A user's own batch script (JobSpec.script), as ``hpcstate submit --script`` sends it.
USER_SCRIPT = """#!/bin/bash
#SBATCH --job-name=mine
#SBATCH --output=out-%j.log

# the payload
srun hostname
exit 3
"""


def tracker_env(report_file: str, *, item_id: str = f"{RUN_ID}.0") -> dict[str, str]:
    """What hpcstate's tracker puts in a job's environment (see Tracker._spec_for)."""
    env = {"HPCSTATE_RUN_ID": RUN_ID}
    if item_id:
        env["HPCSTATE_ITEM_ID"] = item_id
    env["HPCSTATE_REPORT_FILE"] = report_file
    return env


def script_for(argv: list[str], env: Mapping[str, str], **options: object) -> str:
    """The dialect's batch script for ``argv`` (the helper by default)."""
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

#: In the golden scripts, the helper's Perl source (one shell word, ``shlex.quote`` of
#: ``PERL_HELPER``) stands as this word: the helper's own text is checked by what it does
#: (tests/slurm/test_report_helper.py), every line hpcstate writes around it here.
HELPER_WORD = "@@PERL_HELPER@@"


def golden(name: str) -> str:
    return (HERE / "scripts" / name).read_text().replace(HELPER_WORD, shlex.quote(PERL_HELPER))


def test_golden_script_with_a_report_file() -> None:
    spec = JobSpec(
        command=["python3", "-c", "import sys; sys.exit(3)", "it's"],
        environment={
            "OMP_NUM_THREADS": "4",
            **tracker_env(f"/scratch/u/out/hpcstate-report-{RUN_ID}.{{array_index}}.json"),
        },
    )
    assert D22.submit_command(spec).stdin == golden("command_with_report.sh")


def test_golden_user_script_with_a_report_file() -> None:
    """A user's own shell script: its #SBATCH block unchanged, the helper's lines after
    it, the rest of the script unchanged."""
    spec = JobSpec(script=USER_SCRIPT, environment=tracker_env("/scratch/u/r.json"))
    command = D22.submit_command(spec)
    assert command.stdin == golden("user_script_with_report.sh")
    # the environment reaches the job as sbatch --export, as without hpcstate
    assert command.argv[-1] == (
        f"--export=ALL,HPCSTATE_RUN_ID={RUN_ID},HPCSTATE_ITEM_ID={RUN_ID}.0,"
        "HPCSTATE_REPORT_FILE=/scratch/u/r.json"
    )


def test_without_a_report_file_the_payload_is_execd() -> None:
    spec = JobSpec(command=["sleep", "1"], environment={"A": "x y"})
    assert D22.submit_command(spec).stdin == "#!/bin/sh\nexport A='x y'\nexec sleep 1\n"


@pytest.mark.parametrize("off", ["false", "no", "off", "0", " False ", False])
def test_the_wrapper_can_be_turned_off(off: object) -> None:
    env = tracker_env("r.json")
    text = script_for(["true"], env, self_report_wrapper=off)
    assert text == (
        "#!/bin/sh\nexport HPCSTATE_RUN_ID=20261123-200000-a1b2c3\n"
        "export HPCSTATE_ITEM_ID=20261123-200000-a1b2c3.0\n"
        "export HPCSTATE_REPORT_FILE=r.json\nexec true\n"
    )
    spec = JobSpec(script=USER_SCRIPT, environment=env, options={"self_report_wrapper": off})
    assert D22.submit_command(spec).stdin == USER_SCRIPT
    assert not D22.reports_itself(spec)


@pytest.mark.parametrize("on", ["true", "yes", "on", "1", "TRUE", True])
def test_the_wrapper_option_as_a_word_or_a_toml_boolean(on: object) -> None:
    text = script_for(["true"], tracker_env("r.json"), self_report_wrapper=on)
    assert "exec perl -e " in text
    assert D22.reports_itself(JobSpec(command=["true"], options={"self_report_wrapper": on}))


@pytest.mark.parametrize("bad", ["maybe", "", 1, 0, 2.5, None, ["true"]])
def test_a_wrapper_option_that_is_no_yes_or_no_is_refused_naming_it(bad: object) -> None:
    for spec in (
        JobSpec(command=["true"], options={"self_report_wrapper": bad}),
        JobSpec(script=USER_SCRIPT, options={"self_report_wrapper": bad}),
    ):
        with pytest.raises(ValueError, match="option self_report_wrapper must be") as info:
            D22.submit_command(spec)
        assert repr(bad) in str(info.value)
        # asked before submitting, it says no (the submit then refuses it, as above)
        assert not D22.reports_itself(spec)


def test_a_run_id_alone_or_a_file_alone_is_no_target() -> None:
    assert script_for(["true"], {"HPCSTATE_RUN_ID": "r"}).endswith("exec true\n")
    assert script_for(["true"], {"HPCSTATE_REPORT_FILE": "f"}).endswith("exec true\n")


def test_which_user_scripts_are_wrapped() -> None:
    env = tracker_env("r.json")
    python = "#!/usr/bin/env python3\n#SBATCH --time=5\nraise SystemExit(3)\n"
    assert D22.submit_command(JobSpec(script=python, environment=env)).stdin == python
    assert not D22.reports_itself(JobSpec(script=python, environment=env))
    # a script on the job's side: sbatch reads it there, hpcstate never sees its text
    on_disk = D22.submit_command(JobSpec(script_path="/home/u/job.sh", environment=env))
    assert (on_disk.stdin, on_disk.argv[-1]) == (None, "/home/u/job.sh")
    assert not D22.reports_itself(JobSpec(script_path="/home/u/job.sh", environment=env))
    # no report target named: the script goes as written
    assert D22.submit_command(JobSpec(script=USER_SCRIPT)).stdin == USER_SCRIPT


def test_the_dialect_says_which_jobs_report_themselves() -> None:
    # The tracker stops asking the queue every poll only for jobs that say so: exactly
    # those whose batch script runs the helper (on by default).
    env = tracker_env("r.json")
    off = {"self_report_wrapper": "false"}
    assert D22.reports_itself(JobSpec(command=["true"], environment=env))
    assert D22.reports_itself(JobSpec(script=USER_SCRIPT, environment=env))
    assert D22.reports_itself(JobSpec(script="#!/usr/bin/env -S zsh -f\nexit 3\n"))
    assert not D22.reports_itself(JobSpec(command=["true"], options=off))
    assert not D22.reports_itself(JobSpec(script=USER_SCRIPT, options=off))
    assert not D22.reports_itself(JobSpec(script="#!/usr/bin/python3\nprint(1)\n"))
    assert not D22.reports_itself(JobSpec(script_path="job.sh"))
    # The backend the tracker holds answers before it has asked Slurm its version.
    from hpcstate.runtime import LocalRunner
    from hpcstate_slurm import CAPABILITIES
    from hpcstate_slurm._io import SlurmBackend

    backend = SlurmBackend(name="slurm", runner=LocalRunner(), capabilities=CAPABILITIES)
    assert backend.reports_itself(JobSpec(command=["true"]))
    assert backend.reports_itself(JobSpec(script=USER_SCRIPT))
    assert not backend.reports_itself(JobSpec(command=["true"], options=off))
    assert not backend.reports_itself(JobSpec(script="#!/usr/bin/python3\nprint(1)\n"))
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
def test_payload_killed_by_term_alone_is_reported_as_the_signal(shell: str, tmp_path: Path) -> None:
    """Only the payload got SIGTERM: the helper reads its wait status, so the report is
    exactly signal 15 (not an ambiguous 143), and the helper dies of it, as the payload
    run with exec would have."""
    report = tmp_path / "report.json"
    pid_file = tmp_path / "payload.pid"
    argv = ["sh", "-c", f"echo $$ > {pid_file}.tmp; mv {pid_file}.tmp {pid_file}; exec sleep 60"]
    job = start(shell, script_for(argv, tracker_env(str(report))), tmp_path)
    wait_for_file(pid_file)
    os.kill(int(pid_file.read_text()), signal.SIGTERM)
    _, stderr = job.communicate(timeout=30)
    assert job.returncode == -signal.SIGTERM  # the batch shell's process died of TERM
    assert stderr == ""  # no "Terminated" note
    assert read_report(report).exit == ExitStatus.killed(15)
    assert read_report(report).exit.ambiguous is None


@pytest.mark.parametrize("shell", SHELLS)
def test_a_payload_that_exits_143_is_reported_as_the_code(shell: str, tmp_path: Path) -> None:
    """The other half: exit(143) is a code, never signal 15."""
    report = tmp_path / "report.json"
    job = start(shell, script_for(["sh", "-c", "exit 143"], tracker_env(str(report))), tmp_path)
    job.communicate(timeout=30)
    assert job.returncode == 143
    assert read_report(report).exit == ExitStatus.exited(143)


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
    """USR1 to the whole job (``scancel -f -s USR1``): the payload handles it and goes
    on; the helper must not die of it (it would end the job), nor report a signal. The
    payload gets USR1 twice, from the sender and passed on by the helper; standard
    signals do not queue, so it may run its handler once or twice (docs/backends/slurm.md,
    "What is different from exec")."""
    report = tmp_path / "report.json"
    ready = tmp_path / "ready"
    payload = f"trap 'echo usr1' USR1; touch {ready}; sleep 1; sleep 1; exit 4"
    job = start(shell, script_for(["sh", "-c", payload], tracker_env(str(report))), tmp_path)
    wait_for_file(ready)
    os.killpg(job.pid, signal.SIGUSR1)
    stdout, _ = job.communicate(timeout=30)  # stderr: the payload's shell notes its
    assert job.returncode == 4  # `sleep` killed by the USR1 it got too, as with exec
    assert stdout in ("usr1\n", "usr1\nusr1\n")
    assert read_report(report).exit == ExitStatus.exited(4)


@pytest.mark.parametrize("shell", SHELLS)
def test_a_signal_to_the_batch_shell_alone_reaches_the_payload_once(
    shell: str, tmp_path: Path
) -> None:
    """USR1 to the batch shell's process alone (``scancel -b -s USR1``, ``--signal=B:``):
    the helper passes it on, as exec would have delivered it to the payload itself."""
    report = tmp_path / "report.json"
    ready = tmp_path / "ready"
    payload = f"trap 'echo usr1' USR1; touch {ready}; sleep 1; sleep 1; exit 4"
    job = start(shell, script_for(["sh", "-c", payload], tracker_env(str(report))), tmp_path)
    wait_for_file(ready)
    os.kill(job.pid, signal.SIGUSR1)
    stdout, _ = job.communicate(timeout=30)
    assert (job.returncode, stdout) == (4, "usr1\n")
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


def test_the_helper_is_on_by_default_and_falls_back_to_exec() -> None:
    # Push by default (issue 17): the helper keeps Slurm's lossless record, so no option
    # is needed; the script's last line is the exec used where the node has no perl.
    spec = JobSpec(command=["true"], environment=tracker_env("r.json"))
    stdin = D22.submit_command(spec).stdin
    assert stdin is not None
    assert stdin.endswith(
        "if command -v perl >/dev/null 2>&1; then\n"
        "  PERL5OPT= PERL5LIB= PERLLIB= exec perl -e " + shlex.quote(PERL_HELPER) + " -- "
        '"${PERL5OPT+=$PERL5OPT}" "${PERL5LIB+=$PERL5LIB}" "${PERLLIB+=$PERLLIB}" true\n'
        "fi\n"
        "echo 'hpcstate: no perl on this node: the job runs without hpcstate'\"'\"'s helper "
        "and writes no self-report' >&2\n"
        "exec true\n"
    )
