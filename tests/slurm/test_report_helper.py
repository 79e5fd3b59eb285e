"""The batch script's report helper (perl), run by real shells on this machine: the report
it writes, how it ends (the payload's exit code, or death by the payload's signal), the
signals it passes on, and that the payload's world (process group, stdin, signal
dispositions, environment) is what it is when the payload is exec'd.

Each run is compared with what is expected, written by hand, and where it matters with
the same payload exec'd (``self_report_wrapper=false``). The real cluster is
tests/slurm/test_report_helper_live.py.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import signal
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hpcstate import ExitStatus
from hpcstate.backend import JobSpec
from hpcstate.runtime._report import SelfReport, report_file_name
from hpcstate_slurm import SlurmDialect
from hpcstate_slurm._helper import HELPER_DETAIL, PERL_HELPER
from hpcstate_slurm._script import (
    HELPER_JOB_ENV,
    HELPER_PID_ENV,
    NO_HELPER_NOTE,
    command_script,
    script_interpreter,
    script_reports_itself,
    user_script,
)

D22 = SlurmDialect.for_version("22.05.8")
SHELLS = [pytest.param(name, id=name) for name in ("dash", "bash") if shutil.which(name)]
PERL = shutil.which("perl")
pytestmark = pytest.mark.skipif(PERL is None, reason="perl is not installed here")
RUN_ID = "20261206-170000-abcdef"


def tracker_env(report: Path | str, item_id: str = f"{RUN_ID}.0") -> dict[str, str]:
    return {
        "HPCSTATE_RUN_ID": RUN_ID,
        "HPCSTATE_ITEM_ID": item_id,
        "HPCSTATE_REPORT_FILE": str(report),
    }


def script_for(argv: list[str], env: Mapping[str, str], *, helper: bool = True) -> str:
    """The dialect's batch script, with its default (the helper) or exec'd."""
    options = {} if helper else {"self_report_wrapper": "false"}
    spec = JobSpec(command=argv, environment=dict(env), options=options)
    text = D22.submit_command(spec).stdin
    assert text is not None
    return text


def start(
    shell: str,
    script: str,
    where: Path,
    *,
    env: Mapping[str, str] | None = None,
    core: bool = False,
    ignore: tuple[signal.Signals, ...] = (),
    stdin: int | None = subprocess.DEVNULL,
) -> subprocess.Popen[str]:
    path = where / "job.sh"
    path.write_text(script)

    def setup() -> None:
        if core:
            resource.setrlimit(resource.RLIMIT_CORE, (resource.RLIM_INFINITY,) * 2)
        # slurmstepd starts a job with every disposition at its default; a test run
        # from a background shell (`cmd &`) inherits SIGINT and SIGQUIT ignored.
        for number in (signal.SIGINT, signal.SIGQUIT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(number, signal.SIG_DFL)
        for number in ignore:
            signal.signal(number, signal.SIG_IGN)

    return subprocess.Popen(
        [shell, str(path)],
        cwd=where,
        stdin=stdin,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {})},
        start_new_session=True,  # its own session and process group, like a job step
        preexec_fn=setup,
    )


def run(shell: str, script: str, where: Path, **kwargs: object) -> tuple[int, str, str]:
    job = start(shell, script, where, **kwargs)  # type: ignore[arg-type]
    out, err = job.communicate(timeout=60)
    return job.returncode, out, err


def read_report(path: Path) -> SelfReport:
    return SelfReport.from_dict(json.loads(path.read_text(encoding="utf-8")))


def wait_for(path: Path) -> None:
    deadline = time.monotonic() + 60
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.02)


def fresh(base: Path, name: str) -> Path:
    folder = base / name
    folder.mkdir()
    return folder


# -- the text --------------------------------------------------------------------------


def test_the_helper_is_the_default_and_can_be_turned_off(tmp_path: Path) -> None:
    env = tracker_env(tmp_path / "r.json")
    on = script_for(["true"], env)
    assert "exec perl -e " in on
    assert on.splitlines()[-2].startswith("echo 'hpcstate: no perl on this node")
    assert on.splitlines()[-1] == "exec true"  # the fallback
    assert D22.reports_itself(JobSpec(command=["true"]))
    off = script_for(["true"], env, helper=False)
    assert "perl" not in off
    assert off.splitlines()[-1] == "exec true"
    assert not D22.reports_itself(JobSpec(command=["true"], options={"self_report_wrapper": "no"}))


def test_without_a_report_target_the_payload_is_execd() -> None:
    assert (
        command_script(["sleep", "1"], {"A": "x y"}) == "#!/bin/sh\nexport A='x y'\nexec sleep 1\n"
    )
    assert command_script(["true"], {"HPCSTATE_RUN_ID": "r"}).endswith("\nexec true\n")
    assert "perl" not in command_script(["true"], {"HPCSTATE_REPORT_FILE": "f"})


@pytest.mark.parametrize("helper", [True, False], ids=["helper", "exec"])
@pytest.mark.parametrize("name", ["MY-VAR", "1X", "A B", "A=B", "A;touch x", ""])
def test_an_environment_name_sh_cannot_export_is_refused_before_submission(
    name: str, helper: bool, tmp_path: Path
) -> None:
    # `export MY-VAR=x` ends a dash batch script with exit 2 before the payload runs
    # (bash drops the variable): the job would "fail" without ever running.
    with pytest.raises(ValueError, match="environment variable name") as info:
        script_for(["true"], {name: "x", **tracker_env(tmp_path / "r.json")}, helper=helper)
    assert repr(name) in str(info.value)


def test_environment_names_sh_can_export_reach_the_payload(tmp_path: Path) -> None:
    env = {"_A1": "one", "b_2": "two two", **tracker_env(tmp_path / "r.json")}
    code, out, _ = run("sh", script_for(["sh", "-c", 'echo "$_A1/$b_2"'], env), tmp_path)
    assert (code, out) == (0, "one/two two\n")


def test_the_helper_source_is_valid_perl_without_modules_beyond_config() -> None:
    checked = subprocess.run(
        [str(PERL), "-c", "-Mstrict", "-Mwarnings", "-e", PERL_HELPER],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert checked.returncode == 0, checked.stderr
    # built-ins, Config (perl-base, perl-libs) and an optional POSIX inside eval
    assert [line for line in PERL_HELPER.splitlines() if "require" in line] == [
        "require Config;",
        "eval { require POSIX; POSIX::sigprocmask(POSIX::SIG_UNBLOCK(), "
        "POSIX::SigSet->new($signal)); };",
    ]
    assert "#" not in "".join(line[:1] for line in PERL_HELPER.splitlines())


@pytest.mark.parametrize(
    ("first_line", "name", "wrapped"),
    [
        ("#!/bin/bash", "bash", True),
        ("#!/bin/sh -e", "sh", True),
        ("#!/usr/bin/env bash", "bash", True),
        ("#!/usr/bin/env -S zsh -f", "zsh", True),
        ("#! /bin/ksh", "ksh", True),
        ("#!/usr/bin/python3", "python3", False),
        ("#!/usr/bin/env python3", "python3", False),
        ("#!/bin/csh", "csh", False),
        ("#!/usr/bin/perl -w", "perl", False),
        ("#!", None, False),
        ("echo no interpreter line", None, False),
    ],
)
def test_which_scripts_are_wrapped(first_line: str, name: str | None, wrapped: bool) -> None:
    script = f"{first_line}\n#SBATCH --time=5\nexit 3\n"
    assert script_interpreter(script) == name
    assert script_reports_itself(script) is wrapped
    env = tracker_env("r.json")
    assert (user_script(script, env) != script) is wrapped


def test_a_users_script_keeps_its_leading_block() -> None:
    script = (
        "#!/bin/bash\n"
        "#SBATCH --job-name=mine\n"
        "\n"
        "   # an indented comment\n"
        "#SBATCH --time=5\n"
        "set -eu\n"
        "#SBATCH --not-read-by-sbatch\n"
        "exit 3\n"
    )
    wrapped = user_script(script, tracker_env("r.json"))
    lines = wrapped.splitlines()
    assert lines[:5] == script.splitlines()[:5]  # every line sbatch reads, unchanged
    assert wrapped.endswith("set -eu\n#SBATCH --not-read-by-sbatch\nexit 3\n")
    block = lines[5 : lines.index("set -eu")]
    assert block[2] == (
        f'if [ "${{{HELPER_PID_ENV}-}}" != "$PPID" ] && '
        f'[ "${{{HELPER_JOB_ENV}-}}" != "job:${{SLURM_JOB_ID-}}" ]; then'
    )
    assert (block[0][:11], block[-2], block[-1]) == ("# hpcstate:", "  echo " + block[-2][7:], "fi")
    assert user_script(script, {}) == script  # no report target: unchanged
    assert user_script(script, tracker_env("r.json"), self_report=False) == script
    # a script of comments only, without a final newline
    assert user_script("#!/bin/sh\n#SBATCH -n 1", tracker_env("r")).startswith(
        "#!/bin/sh\n#SBATCH -n 1\n# hpcstate:"
    )


# -- exit codes and signals ------------------------------------------------------------


@pytest.mark.parametrize("shell", SHELLS)
@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        ("exit 0", ExitStatus.exited(0)),
        ("exit 3", ExitStatus.exited(3)),
        ("exit 137", ExitStatus.exited(137)),  # a code above 128 is a code
        ("exit 255", ExitStatus.exited(255)),
        ("kill -KILL $$", ExitStatus.killed(9)),
        ("kill -SEGV $$", ExitStatus.killed(11)),
        ("kill -TERM $$", ExitStatus.killed(15)),
        ("kill -ABRT $$", ExitStatus.killed(6)),
        ("kill -USR1 $$", ExitStatus.killed(10)),
    ],
)
def test_the_helper_ends_as_the_payload_did(
    shell: str, payload: str, expected: ExitStatus, tmp_path: Path
) -> None:
    report = tmp_path / "out" / "report.json"
    argv = ["sh", "-c", payload]
    helper = run(shell, script_for(argv, tracker_env(report)), fresh(tmp_path, "helper"))
    plain = run(shell, script_for(argv, tracker_env(report), helper=False), fresh(tmp_path, "exec"))
    returncode = -expected.signal if expected.signal is not None else expected.code
    assert helper == (returncode, "", "")
    assert plain[0] == returncode
    found = read_report(report)
    assert found.exit == expected
    assert (found.run_id, found.item_id, found.array_index) == (RUN_ID, f"{RUN_ID}.0", None)
    assert found.detail == HELPER_DETAIL
    assert sorted(p.name for p in report.parent.iterdir()) == ["report.json"]  # no temp file


def test_a_core_dump_is_the_payloads_alone(tmp_path: Path) -> None:
    """The payload dumps core in its own folder; the helper, dying of the same SIGSEGV
    with the core limit unlimited, leaves none (it makes itself non-dumpable)."""
    (tmp_path / "payload").mkdir()
    report = tmp_path / "report.json"
    argv = ["sh", "-c", "cd payload && kill -SEGV $$"]
    job = start("dash", script_for(argv, tracker_env(report)), tmp_path, core=True)
    _, status = os.waitpid(job.pid, 0)
    job.returncode = 0  # reaped here
    for pipe in (job.stdout, job.stderr):
        assert pipe is not None
        pipe.close()
    assert os.WIFSIGNALED(status)
    assert os.WTERMSIG(status) == signal.SIGSEGV
    assert not os.WCOREDUMP(status)
    found = read_report(report)
    assert (found.exit.signal, found.exit.core_dumped) == (11, True)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith("core")]


PID_THEN_WAIT = (
    'trap "echo got-usr1; touch got1" USR1; trap "echo got-term" TERM; trap "touch got2" WINCH; '
    "echo $$ > pid.tmp; mv pid.tmp pid; i=0; "
    "while [ $i -lt 200 ] && [ ! -e stop ]; do sleep 0.05; i=$((i + 1)); done; exit 4"
)


@pytest.mark.parametrize("shell", SHELLS)
def test_signals_to_the_batch_shell_alone(shell: str, tmp_path: Path) -> None:
    """USR1 (scancel -b, --signal=B:) is passed on; TERM is not (Slurm's cancel and time
    limit send it to every process, the payload included): the payload goes on."""
    report = tmp_path / "report.json"
    job = start(shell, script_for(["sh", "-c", PID_THEN_WAIT], tracker_env(report)), tmp_path)
    wait_for(tmp_path / "pid")
    os.kill(job.pid, signal.SIGUSR1)
    wait_for(tmp_path / "got1")
    # A TERM passed on would reach the payload before the WINCH sent after it (the
    # helper and the payload's shell both handle pending signals lowest number first).
    os.kill(job.pid, signal.SIGTERM)
    os.kill(job.pid, signal.SIGWINCH)
    wait_for(tmp_path / "got2")
    (tmp_path / "stop").touch()
    out, err = job.communicate(timeout=60)
    assert (job.returncode, out, err) == (4, "got-usr1\n", "")
    assert read_report(report).exit == ExitStatus.exited(4)


@pytest.mark.parametrize("shell", SHELLS)
def test_a_signal_to_the_whole_job(shell: str, tmp_path: Path) -> None:
    """SIGTERM to every process (cancel, time limit): the payload dies of it, the helper
    reports signal 15 and dies of it too."""
    report = tmp_path / "report.json"
    argv = ["sh", "-c", "echo $$ > pid.tmp; mv pid.tmp pid; exec sleep 60"]
    job = start(shell, script_for(argv, tracker_env(report)), tmp_path)
    wait_for(tmp_path / "pid")
    os.killpg(job.pid, signal.SIGTERM)
    _, err = job.communicate(timeout=60)
    assert (job.returncode, err) == (-15, "")
    assert read_report(report).exit == ExitStatus.killed(15)


def test_hup_to_the_helper_alone_ends_a_payload_that_does_not_catch_it(tmp_path: Path) -> None:
    report = tmp_path / "report.json"
    argv = ["sh", "-c", "echo $$ > pid.tmp; mv pid.tmp pid; exec sleep 60"]
    job = start("dash", script_for(argv, tracker_env(report)), tmp_path)
    wait_for(tmp_path / "pid")
    os.kill(job.pid, signal.SIGHUP)
    job.communicate(timeout=60)
    assert job.returncode == -1
    assert read_report(report).exit == ExitStatus.killed(1)


PROBE = (
    "echo pgid=$(ps -o pgid= -p $$ | tr -d ' ') parent=$(cat /proc/$PPID/comm); "
    "read line; echo stdin=$line; "
    "env | grep -E '^(PERL5OPT|PERL5LIB|PERLLIB|HPCSTATE_HELPER_PID)=' | sort; "
    "exec grep -E '^Sig(Blk|Ign|Cgt)' /proc/self/status"  # what the payload passes on
)


@pytest.mark.parametrize("shell", SHELLS)
def test_the_payloads_world_is_the_one_it_has_when_execd(shell: str, tmp_path: Path) -> None:
    """Process group, stdin, blocked/ignored/caught signals (USR2 and CHLD started
    ignored stay ignored) and Perl's variables: as with exec."""
    env = {"PERL5OPT": "-Mhpcstate_no_such_module", "PERL5LIB": "/nonexistent"}
    results = {}
    for helper in (True, False):
        where = fresh(tmp_path, "helper" if helper else "exec")
        report = where / "report.json"
        script = script_for(["sh", "-c", PROBE], tracker_env(report), helper=helper)
        job = start(
            shell,
            script,
            where,
            env=env,
            ignore=(signal.SIGUSR2, signal.SIGCHLD),
            stdin=subprocess.PIPE,
        )
        out, err = job.communicate("a line\n", timeout=60)
        assert (job.returncode, err) == (0, "")
        first, rest = out.split("\n", 1)
        pgid, parent = first.split()
        assert pgid == f"pgid={job.pid}"  # the job's own process group
        results[helper] = (parent, rest)
        assert report.exists() is helper
    assert results[True][0] == "parent=perl"
    assert results[False][0] != "parent=perl"
    helper_out, exec_out = results[True][1], results[False][1]
    assert helper_out == exec_out  # signal masks and dispositions, stdin, Perl's variables
    assert "stdin=a line" in helper_out
    assert "PERL5LIB=/nonexistent\nPERL5OPT=-Mhpcstate_no_such_module\n" in helper_out
    assert "SigIgn:\t0000000000000800" in helper_out  # USR2 (bit 12), as the job started
    assert "PERLLIB" not in helper_out  # unset stays unset


@pytest.mark.parametrize("shell", SHELLS)
@pytest.mark.parametrize(
    ("argv", "returncode"),
    [
        (["hpcstate-no-such-command"], 127),
        (["./not-executable"], 126),
        (["./no-interpreter-line"], 5),  # run by /bin/sh, as sh's exec does
    ],
)
def test_a_payload_that_cannot_be_run(
    shell: str, argv: list[str], returncode: int, tmp_path: Path
) -> None:
    report = tmp_path / "report.json"
    for helper in (True, False):
        where = fresh(tmp_path, "helper" if helper else "exec")
        (where / "not-executable").write_text("#!/bin/sh\nexit 0\n")
        (where / "no-interpreter-line").write_text("exit 5\n")
        (where / "no-interpreter-line").chmod(0o755)
        code, _, err = run(shell, script_for(argv, tracker_env(report), helper=helper), where)
        assert code == returncode, (helper, err)
    assert read_report(report).exit == ExitStatus.exited(returncode)


# -- without perl ------------------------------------------------------------------------


@pytest.mark.parametrize("shell", SHELLS)
def test_without_perl_the_payload_is_execd(shell: str, tmp_path: Path) -> None:
    report = tmp_path / "report.json"
    env = {**tracker_env(report), "PATH": str(tmp_path / "empty")}
    code, out, err = run(shell, script_for(["/bin/sh", "-c", "echo ran; exit 3"], env), tmp_path)
    assert out == "ran\n"
    assert code == 3
    assert err == NO_HELPER_NOTE + "\n"
    assert not report.exists()


# -- the report file -----------------------------------------------------------------------


def test_an_array_tasks_file(tmp_path: Path) -> None:
    template = str(tmp_path / "reports" / "r-{array_index}.json")
    script = script_for(["true"], tracker_env(template, item_id=""))
    code, _, err = run("dash", script, tmp_path, env={"SLURM_ARRAY_TASK_ID": " 007 "})
    assert (code, err) == (0, "")
    found = read_report(Path(report_file_name(template, 7)))
    assert (found.array_index, found.item_id) == (7, "")


def test_a_report_path_that_cannot_be_written(tmp_path: Path) -> None:
    (tmp_path / "a-dir.json").mkdir()
    (tmp_path / "a-file").write_text("")
    for target, why in [
        (tmp_path / "a-dir.json", "is not a regular file"),
        (tmp_path / "a-file" / "r.json", "could not write the self-report"),
    ]:
        code, _, err = run(
            "dash", script_for(["sh", "-c", "exit 3"], tracker_env(target)), tmp_path
        )
        assert code == 3  # the payload's status, whatever happened to the report
        assert why in err
    assert (tmp_path / "a-dir.json").is_dir()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-dir.json", "a-file", "job.sh"]


# -- a user's own script -------------------------------------------------------------------


USER = """#!{shell}
#SBATCH --job-name=mine
# a comment
echo "zero=$0 args=$# first=$1 second=$2 parent=$(cat /proc/$PPID/comm)"
kill -{signal} $$
"""


@pytest.mark.parametrize("shell", SHELLS)
def test_a_users_script_is_rerun_by_its_path_under_the_helper(shell: str, tmp_path: Path) -> None:
    report = tmp_path / "report.json"
    path = tmp_path / "job.sh"
    text = USER.format(shell=shutil.which(shell), signal="SEGV")
    path.write_text(user_script(text, tracker_env(report)))
    path.chmod(0o755)
    job = subprocess.run(
        [str(path), "a", "b c"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **tracker_env(report)},
        check=False,
    )
    assert job.returncode == -11
    assert job.stdout == f"zero={path} args=2 first=a second=b c parent=perl\n"  # once
    assert job.stderr == ""
    assert read_report(report).exit == ExitStatus.killed(11)


SELF_LAUNCHING = """#!{shell}
#SBATCH --ntasks=2
if [ -z "${{INNER-}}" ]; then
  # as `srun "$0"`: the script again, inside the job, not as the helper's child
  INNER=1 sh -c '"$0"' "$0"
  [ -e {report} ] && echo report-before-the-end || echo no-report-yet
  exit 3
fi
echo inner parent=$(cat /proc/$PPID/comm)
exit 5
"""


@pytest.mark.parametrize("shell", SHELLS)
def test_a_users_script_run_again_inside_its_job_writes_no_report(
    shell: str, tmp_path: Path
) -> None:
    # A step task running the script again (srun "$0") wrapped itself too: it wrote the
    # job's report, with the task's exit, while the batch script still ran.
    report = tmp_path / "report.json"
    path = tmp_path / "job.sh"
    text = SELF_LAUNCHING.format(shell=shutil.which(shell), report=report)
    path.write_text(user_script(text, tracker_env(report)))
    path.chmod(0o755)
    job = subprocess.run(
        [str(path)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **tracker_env(report), "SLURM_JOB_ID": "4242"},
        check=False,
    )
    assert (job.returncode, job.stderr) == (3, "")
    assert job.stdout == "inner parent=sh\nno-report-yet\n"
    assert read_report(report).exit == ExitStatus.exited(3)


def test_a_users_script_without_perl_runs_as_is(tmp_path: Path) -> None:
    report = tmp_path / "report.json"
    path = tmp_path / "job.sh"
    text = "#!/bin/sh\n#SBATCH -n 1\n/bin/echo ran; exit 3\n"
    path.write_text(user_script(text, tracker_env(report)))
    path.chmod(0o755)
    env = {**os.environ, **tracker_env(report), "PATH": str(tmp_path / "empty")}
    job = subprocess.run(
        [str(path)], capture_output=True, text=True, timeout=60, env=env, check=False
    )
    assert (job.returncode, job.stdout, job.stderr) == (3, "ran\n", NO_HELPER_NOTE + "\n")
    assert not report.exists()


# -- any ids and file names ----------------------------------------------------------------

TEXT = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
    min_size=1,
    max_size=30,
)
FILE_NAME = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00/"),
    min_size=1,
    max_size=30,
).filter(lambda name: name not in (".", ".."))


@settings(max_examples=40, deadline=None)
@given(run_id=TEXT, item_id=TEXT, name=FILE_NAME)
def test_any_ids_and_file_names_give_a_report_the_runtime_reads(
    tmp_path_factory: pytest.TempPathFactory, run_id: str, item_id: str, name: str
) -> None:
    where = tmp_path_factory.mktemp("any")
    report = where / "sub dir" / name
    env = {"HPCSTATE_RUN_ID": run_id, "HPCSTATE_ITEM_ID": item_id}
    env["HPCSTATE_REPORT_FILE"] = str(report)
    code, _, err = run("dash", script_for(["sh", "-c", "exit 7"], env), where)
    assert (code, err) == (7, "")
    target = Path(report_file_name(str(report), None))
    found = SelfReport.from_dict(json.loads(target.read_bytes().decode("utf-8")))
    assert (found.run_id, found.item_id, found.exit) == (run_id, item_id, ExitStatus.exited(7))
