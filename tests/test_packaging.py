"""What a user installs: four distributions, each carrying its license, metadata and entry
point, and a lock that pins everything the project's own files ask for.

Under CI these run against the wheels built by scripts/build-dists and installed (not
editable) by ``scripts/test --wheels``; from a checkout they check the editable install.
"""

from __future__ import annotations

import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - 3.10
    import tomli as tomllib

TOP = Path(__file__).resolve().parent.parent
BACKENDS = {"hpcstate-slurm": "slurm", "hpcstate-flux": "flux", "hpcstate-k8s": "k8s"}
PYTHONS = ("3.10", "3.11", "3.12", "3.13")


def _pyproject(path: Path) -> dict:
    with path.open("rb") as f:
        return tomllib.load(f)


def _name(requirement: str) -> str:
    return re.split(r"[\s\[<>=!~;]", requirement.strip(), maxsplit=1)[0].lower().replace("_", "-")


@pytest.mark.parametrize("dist", ["hpcstate", *BACKENDS])
def test_each_distribution_carries_license_classifiers_and_urls(dist: str) -> None:
    meta = metadata.metadata(dist)
    assert meta["License-Expression"] == "MIT"
    files = metadata.files(dist) or []
    assert any(f.name == "LICENSE" for f in files), f"{dist} ships no LICENSE file"
    classifiers = meta.get_all("Classifier") or []
    for version in PYTHONS:
        assert f"Programming Language :: Python :: {version}" in classifiers, (dist, version)
    urls = dict(u.split(", ", 1) for u in meta.get_all("Project-URL") or [])
    assert {"Homepage", "Documentation", "Source", "Issues"} <= set(urls), urls


@pytest.mark.parametrize(("dist", "kind"), sorted(BACKENDS.items()))
def test_each_backend_is_its_own_distribution_registered_by_entry_point(
    dist: str, kind: str
) -> None:
    points = [
        ep for ep in metadata.distribution(dist).entry_points if ep.group == "hpcstate.backends"
    ]
    assert [(ep.name, ep.value) for ep in points] == [(kind, f"hpcstate_{kind}:BACKEND")]
    requires = metadata.requires(dist) or []
    assert any(_name(r) == "hpcstate" for r in requires), requires
    # The core distribution ships none of the backends' code.
    core_files = {str(f) for f in metadata.files("hpcstate") or []}
    assert not any(f.startswith(f"hpcstate_{kind}/") for f in core_files)


@pytest.mark.parametrize(("dist", "kind"), sorted(BACKENDS.items()))
def test_the_core_extra_of_each_backend_pulls_its_distribution(dist: str, kind: str) -> None:
    requires = metadata.requires("hpcstate") or []
    marker = re.compile(rf"extra\s*==\s*['\"]{kind}['\"]")
    assert any(_name(r) == dist and marker.search(r) for r in requires), requires


def test_hpcstate_backends_lists_all_four_with_no_warning() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "hpcstate", "backends"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    listed = {line.split()[0] for line in done.stdout.splitlines()[1:] if line.strip()}
    assert {"local", "slurm", "flux", "k8s"} <= listed, done.stdout
    assert "BROKEN" not in done.stdout


def test_the_backend_distributions_build_from_the_one_source_tree() -> None:
    for dist, kind in BACKENDS.items():
        link = TOP / "packages" / dist / "src" / f"hpcstate_{kind}"
        assert link.is_symlink(), f"{link} must link to src/hpcstate_{kind}"
        assert link.resolve() == TOP / "src" / f"hpcstate_{kind}"
        assert (TOP / "packages" / dist / "LICENSE").read_bytes() == (TOP / "LICENSE").read_bytes()
        version = _pyproject(TOP / "packages" / dist / "pyproject.toml")["project"]["version"]
        assert version == _pyproject(TOP / "pyproject.toml")["project"]["version"], dist


def test_the_lock_pins_every_requirement_the_project_names() -> None:
    lock = (TOP / "requirements" / "dev.lock").read_text()
    pinned = {m.group(1).lower() for m in re.finditer(r"^([A-Za-z0-9._-]+)==", lock, re.M)}
    ours = {"hpcstate", *BACKENDS, "hpcstate-pbs"}
    named: set[str] = set()
    for path in [TOP / "pyproject.toml", *sorted((TOP / "packages").glob("*/pyproject.toml"))]:
        project = _pyproject(path)["project"]
        named.update(_name(r) for r in project.get("dependencies", []))
        for extra in project.get("optional-dependencies", {}).values():
            named.update(_name(r) for r in extra)
    missing = {n for n in named - ours if n.replace(".", "-") not in pinned}
    # tomli is only for Python 3.10; the lock pins it under a marker.
    assert not missing, f"requirements/dev.lock lacks {sorted(missing)}: run scripts/lock"
