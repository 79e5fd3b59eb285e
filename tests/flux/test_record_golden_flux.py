"""scripts/record-golden --backend flux, without a real Flux (it cannot be installed here):
fake_flux.py stands in as ``flux`` on PATH and replays the recorded 0.88.0 answers
(tests/golden/flux/0.88.0). The tool records three quick cases into a temp dir; then
every recorded command must be the one the dialect builds (argv, environment, stdin), so
an argv change the recordings do not cover fails here, and every recorded answer must go
through the Flux parsers to the verdicts written below by hand from the recordings.

The fake answers ``flux submit``/``flux batch`` with the id of the recorded case named by
``--job-name`` (else exit_0's), and ``flux jobs`` with that job's final INACTIVE answer:
exit_0 is COMPLETED (returncode 0), exit_137 FAILED with waitstatus 35072 (a plain exit
137), batch_exit_3 gets exit_0's id and answer (no recorded batch_exit_3 there).
tagged_submission is recorded alone (the fake gives it exit_0's id too, and a tag lookup
over two jobs with one id could not tell their tags apart): its production tag lookup
(``flux python``) runs on the flux088_stub bindings over the jobs the fake was asked to
submit, with the tags they were given (its log), and finds exit_0's id for its tag. ``flux version`` is
answered with what the real 0.88.0 printed."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from hpcstate import ExitStatus, State
from hpcstate.testing import load_recording
from hpcstate_flux import FluxDialect
from hpcstate_flux._parse import EVIDENCE_KEYS

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "record-golden"
FAKE = Path(__file__).resolve().parent / "fake_flux.py"
CASES = ("exit_0", "exit_137", "batch_exit_3")
#: The decimal ids of tests/golden/flux/0.88.0/{exit_0,exit_137}/jobs_json.out.
EXIT_0_ID = "7532969984"
EXIT_137_ID = "100411637760"
ASCII = {"FLUX_F58_FORCE_ASCII": "1"}


def _record(tmp_path_factory: pytest.TempPathFactory, cases: tuple[str, ...]) -> Path:
    bin_dir = tmp_path_factory.mktemp("bin")
    flux = bin_dir / "flux"
    flux.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{FAKE}" "$@"\n')
    flux.chmod(flux.stat().st_mode | stat.S_IXUSR)
    out = tmp_path_factory.mktemp("recorded")
    env = {
        **os.environ,
        "PATH": f"{bin_dir}:{os.environ.get('PATH', '/usr/bin:/bin')}",
        "FAKE_FLUX_LOG": str(bin_dir / "flux.log"),
    }
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--backend", "flux", "--only", ",".join(cases),
         "--out", str(out)],
        capture_output=True, text=True, timeout=300, check=False, env=env,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    return out


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _record(tmp_path_factory, CASES)


@pytest.fixture(scope="module")
def recorded_tagged(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _record(tmp_path_factory, ("tagged_submission",))


def test_the_recorded_argv_is_the_dialects(recorded: Path) -> None:
    dialect = FluxDialect()  # the backend's default options: flux="flux", no uri
    for name in CASES:
        case = load_recording(recorded / name)
        job = (case.path / "jobid.txt").read_text().strip()
        stems = case.stems()
        assert stems[0] == "submit", name
        assert "jobs_json" in stems, name
        built = dialect.submit_command(case.submitted_spec())
        submit = case.command("submit")
        assert (tuple(built.argv), dict(built.env), built.stdin) == (
            submit.argv,
            dict(submit.env),
            submit.stdin,
        ), name
        for command in case.commands:
            if command.stem.startswith("jobs_json"):
                expected = dialect.queue_command([job])
            elif command.stem == "evidence_all":
                expected = dialect.evidence_command({int(job): frozenset(EVIDENCE_KEYS)})
            elif command.stem == "cancel_ended":
                expected = dialect.cancel_command([job])
            elif command.stem == "evidence":
                requests = {int(job): frozenset(case.info["evidence_requests"][job])}
                expected = dialect.evidence_command(requests)
            else:
                assert command.stem == "submit", f"{name}: unexpected {command.stem}"
                continue
            assert expected is not None
            assert tuple(expected.argv) == command.argv, f"{name}/{command.stem}"
            assert dict(expected.env) == dict(command.env) == ASCII, f"{name}/{command.stem}"
            assert command.unset_env == ()


def test_the_specs_are_completed_as_the_tracker_does(recorded: Path) -> None:
    case = load_recording(recorded / "batch_exit_3")
    spec = case.submitted_spec()
    run_id = case.info["run_id"]
    assert spec.script == "#!/bin/sh\nsleep 2\nexit 3\n"
    assert spec.name == "batch_exit_3"
    assert spec.tag == f"hpcstate-{run_id}.0"
    assert spec.environment["HPCSTATE_ITEM_ID"] == f"{run_id}.0"
    assert spec.working_directory == str(recorded / "_work" / "batch_exit_3")
    # flux batch with the script on stdin, saved as case.sh
    submit = case.command("submit")
    assert submit.argv[:2] == ("flux", "batch")
    assert "--nslots=1" in submit.argv
    assert (case.path / "case.sh").read_text() == spec.script


def test_every_recorded_answer_parses_to_the_recorded_outcome(recorded: Path) -> None:
    dialect = FluxDialect()
    expected = {
        "exit_0": (EXIT_0_ID, State.COMPLETED, ExitStatus(code=0)),
        "exit_137": (EXIT_137_ID, State.FAILED, ExitStatus(code=137)),
        "batch_exit_3": (EXIT_0_ID, State.COMPLETED, ExitStatus(code=0)),
    }
    for name, (job, state, exit_status) in expected.items():
        case = load_recording(recorded / name)
        assert (case.path / "jobid.txt").read_text().strip() == job
        submission = dialect.parse_submit(case.command("submit").result, case.submitted_spec())
        assert submission.native_id == job
        final = case.command("jobs_json")
        (observation,) = dialect.parse_queue(final.result, native_ids=[job], observed_at=final.at)
        evidence = dialect.parse_evidence(case.command("evidence_all").result)
        assert set(evidence) == {int(job)}
        (refined,) = dialect.apply_evidence([observation], evidence)
        assert refined.state is state, name
        assert refined.stats.exit is not None
        assert (refined.stats.exit.code, refined.stats.exit.signal) == (
            exit_status.code,
            exit_status.signal,
        ), name
        assert case.info["ok"] is True
        assert case.info["parsed_queue"][0]["state"] == state.value


def test_the_case_actions_and_the_extra_folders(recorded: Path) -> None:
    # exit_0: the production flux cancel of the ended job (the fake accepts it: rc 0)
    cancel = load_recording(recorded / "exit_0").command("cancel_ended")
    assert cancel.argv == ("flux", "cancel", EXIT_0_ID)
    # exit_137 is FAILED with an exit code: the backend reads an eventlog for it, recorded
    # as `evidence`; exit_0 (COMPLETED) has none.
    assert "evidence" in load_recording(recorded / "exit_137").stems()
    assert "evidence" not in load_recording(recorded / "exit_0").stems()
    # every case's id at once
    many = load_recording(recorded / "_multi").command("jobs_json_many")
    # (batch_exit_3 got exit_0's id from the fake: the dialect asks each id once)
    assert sorted(many.argv[3:]) == sorted([EXIT_0_ID, EXIT_137_ID])
    assert len(json.loads(many.result.stdout)["jobs"]) == 2
    versions = load_recording(recorded / "_versions")
    assert versions.command("flux_version").argv == ("flux", "version")
    tsv = (recorded / "exit_137" / "commands.tsv").read_text().splitlines()
    assert len(tsv) == 1 + len(load_recording(recorded / "exit_137").commands)
    assert any("sh -c $'flux=$1\\nshift\\n" in line for line in tsv)


def test_the_tag_lookups_find_the_tagged_job(recorded_tagged: Path) -> None:
    recorded = recorded_tagged
    tagged = load_recording(recorded / "tagged_submission")
    tag = tagged.info["tag"]
    assert (tagged.path / "jobid.txt").read_text().strip() == EXIT_0_ID
    lookup = FluxDialect().find_submission_command(tag)
    assert lookup is not None
    assert tagged.command("find_submission").argv == tuple(lookup.argv)
    assert dict(tagged.command("find_submission").env) == dict(lookup.env) == ASCII
    # while it ran and after it ended: the production lookup found its own job
    assert tagged.info["parse_find_submission"] == EXIT_0_ID
    for stem in ("find_submission_active", "find_submission"):
        command = tagged.command(stem)
        assert command.result.returncode == 0, command.result.stderr
        assert json.loads(command.result.stdout.splitlines()[0]) == {
            "id": int(EXIT_0_ID),
            "tag": tag,
        }
    # after every case: the tag, and a tag no job has (None, not an error)
    found = json.loads((recorded / "_find_submission" / "case.json").read_text())
    assert found["parse_find_submission"] == {tag: EXIT_0_ID, tag[:-2] + ".9": None}


def test_flux_version_is_the_recorded_one(recorded: Path) -> None:
    version = load_recording(recorded / "_versions").command("flux_version")
    assert version.result.returncode == 0
    assert version.result.stdout.splitlines()[0].split() == ["commands:", "0.88.0"]
    listed = load_recording(recorded / "_versions").command("flux_resource_list")
    assert listed.result.returncode == 0
