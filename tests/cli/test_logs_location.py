"""Where `hpcstate logs` looks: the backend's declared answer (BackendInfo.output_location:
its job directory, its scheduler's default file), else the JobSpec's file; the CLI knows
no backend by name. Expected paths written by hand."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest

from hpcstate import registry
from hpcstate.backend import (
    API_VERSION,
    Backend,
    BackendConfig,
    BackendInfo,
    Capabilities,
    JobSpec,
    OutputQuestion,
    expand_output_pattern,
)


@pytest.mark.parametrize(
    ("pattern", "native_id", "index", "expected"),
    [
        ("/w/slurm-%j.out", "123", None, "/w/slurm-123.out"),
        ("/w/slurm-%A_%a.out", "123_4", 4, "/w/slurm-123_4.out"),
        ("/w/%j.%a.out", "77", None, "/w/77..out"),
        ("/w/100%%-%j", "9", None, "/w/100%-9"),
        ("/w/%%j", "9", None, "/w/%j"),  # an escaped percent is not a pattern
        ("/w/plain.log", "9", None, "/w/plain.log"),
    ],
)
def test_expand_output_pattern(
    pattern: str, native_id: str, index: int | None, expected: str
) -> None:
    assert expand_output_pattern(pattern, native_id, index) == expected


def _question(spec: JobSpec | None, **kw: object) -> OutputQuestion:
    return OutputQuestion(
        config=BackendConfig(name="cluster", kind="slurm"),
        spec=spec,
        native_id=str(kw.get("native_id", "123")),
        array_index=kw.get("array_index"),  # type: ignore[arg-type]
        stderr=bool(kw.get("stderr", False)),
    )


def test_slurm_declares_sbatchs_default_file() -> None:
    locate = registry.load("slurm").output_location
    assert locate is not None
    in_dir = JobSpec(command=("true",), working_directory="/home/u/run/")
    assert locate(_question(in_dir)) == "/home/u/run/slurm-123.out"
    assert locate(_question(in_dir, stderr=True)) == "/home/u/run/slurm-123.out"
    array = JobSpec(command=("true",), working_directory="/w", array="0-3")
    assert locate(_question(array, native_id="55_2", array_index=2)) == "/w/slurm-55_2.out"
    # The JobSpec names a file, or nothing says where the job ran: not the backend's call.
    named = JobSpec(command=("true",), working_directory="/w", stdout="o.txt")
    assert locate(_question(named)) is None
    assert locate(_question(named, stderr=True)) is None
    assert locate(_question(JobSpec(command=("true",)))) is None
    assert locate(_question(None)) is None


def test_local_declares_its_job_directory(tmp_path: Path) -> None:
    info = registry.load("local")
    assert info.output_location is not None
    config = BackendConfig(name="here", kind="local", options={"root": str(tmp_path)})
    question = OutputQuestion(config=config, spec=None, native_id="job1")
    assert info.output_location(question) == str(tmp_path / "job1" / "stdout")


# -- through the command: a third-party backend's answer is used as is -------------------


def _never(config: BackendConfig) -> Backend:
    raise AssertionError("logs reads files; it makes no backend")


ELSEWHERE = BackendInfo(
    name="elsewhere",
    api_version=API_VERSION,
    version="0.0.1",
    description="declares where its jobs' output goes",
    capabilities=Capabilities(),
    make_backend=_never,
    output_location=lambda q: f"/spool/{q.native_id}.{'err' if q.stderr else 'out'}",
)

PLAIN = BackendInfo(
    name="plain",
    api_version=API_VERSION,
    version="0.0.1",
    description="declares nothing: the JobSpec's file is used",
    capabilities=Capabilities(),
    make_backend=_never,
)


@pytest.fixture
def plugins() -> Iterator[None]:
    registry.register("elsewhere", f"{__name__}:ELSEWHERE")
    registry.register("plain", f"{__name__}:PLAIN")
    yield
    registry.unregister("elsewhere")
    registry.unregister("plain")


class _Store:
    def __init__(self, spec: JobSpec | None) -> None:
        self.spec = spec

    def run_spec(self, run_id: str) -> JobSpec | None:
        return self.spec


class _Session:
    """What _output_path reads of a Session: the backend's config and the stored spec."""

    def __init__(self, kind: str, spec: JobSpec | None) -> None:
        self.kind = kind
        self.store = _Store(spec)

    def backend_config(self, name: str) -> BackendConfig:
        return BackendConfig(name=name, kind=self.kind)


def _path(
    kind: str, spec: JobSpec | None, *, stderr: bool = False, index: int | None = None
) -> str:
    from hpcstate.cli._commands import _output_path

    run = SimpleNamespace(id="r1", backend="b")
    item = SimpleNamespace(native_id="7" if index is None else f"7_{index}", array_index=index)
    return _output_path(_Session(kind, spec), run, item, stderr=stderr)  # type: ignore[arg-type]


@pytest.mark.usefixtures("plugins")
def test_logs_asks_the_backend_then_the_spec() -> None:
    from hpcstate.cli._app import DataError

    spec = JobSpec(command=("true",), working_directory="/w", stdout="out-%j.txt")
    assert _path("elsewhere", spec) == "/spool/7.out"
    assert _path("elsewhere", None, stderr=True) == "/spool/7.err"
    # No declared answer: the spec's file, in its working directory, patterns expanded.
    assert _path("plain", spec) == "/w/out-7.txt"
    assert _path("plain", spec, stderr=True) == "/w/out-7.txt"  # stderr goes with stdout
    errs = JobSpec(command=("true",), stdout="/o/%A-%a.out", stderr="/o/%A-%a.err", array="1-2")
    assert _path("plain", errs, stderr=True, index=2) == "/o/7-2.err"
    with pytest.raises(DataError, match="does not know where its output went"):
        _path("plain", JobSpec(command=("true",), working_directory="/w"))
    # Slurm's answer comes from its BackendInfo, as any backend's.
    assert _path("slurm", JobSpec(command=("true",), working_directory="/w")) == "/w/slurm-7.out"
