"""Input that can never reach a payload is refused when the JobSpec is built (issue 14):
a NUL byte ends every C string, so argv, environment and file names cannot hold one."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hpcstate.backend import Command, JobSpec

CASES: list[tuple[dict[str, Any], str]] = [
    ({"command": ["echo", "a\0b"]}, "JobSpec command[1]"),
    ({"command": ["\0"]}, "JobSpec command[0]"),
    ({"script": "#!/bin/sh\necho \0\n"}, "JobSpec script"),
    ({"script_path": "/tmp/x\0.sh"}, "JobSpec script_path"),
    ({"command": ["true"], "name": "n\0"}, "JobSpec name"),
    ({"command": ["true"], "environment": {"A": "x\0y"}}, "JobSpec environment['A']"),
    ({"command": ["true"], "environment": {"A\0": "x"}}, "JobSpec environment name"),
    ({"command": ["true"], "working_directory": "/tmp/\0"}, "JobSpec working_directory"),
    ({"command": ["true"], "stdout": "out\0"}, "JobSpec stdout"),
    ({"command": ["true"], "stderr": "err\0"}, "JobSpec stderr"),
    ({"command": ["true"], "partition": "p\0"}, "JobSpec partition"),
    ({"command": ["true"], "account": "a\0"}, "JobSpec account"),
    ({"command": ["true"], "array": "1-2\0"}, "JobSpec array"),
    ({"command": ["true"], "dependencies": ["1", "2\0"]}, "JobSpec dependencies[1]"),
    ({"command": ["true"], "extra_args": ["--x=\0"]}, "JobSpec extra_args[0]"),
    ({"command": ["true"], "options": {"image": "i\0"}}, "JobSpec options['image']"),
    ({"command": ["true"], "tag": "t\0"}, "JobSpec tag"),
]


@pytest.mark.parametrize(("fields", "named"), CASES, ids=[c[1] for c in CASES])
def test_a_nul_byte_is_refused_naming_the_field(fields: dict[str, Any], named: str) -> None:
    with pytest.raises(ValueError, match="NUL byte") as refused:
        JobSpec(**fields)
    message = str(refused.value)
    assert message.startswith(f"{named} contains a NUL byte")
    assert "refused before anything runs" in message


def test_a_command_with_a_nul_byte_is_refused_too() -> None:
    with pytest.raises(ValueError, match=r"Command argv\[2\] contains a NUL byte"):
        Command(argv=["sbatch", "--wrap", "a\0"])
    with pytest.raises(ValueError, match=r"Command env\['X'\] contains a NUL byte"):
        Command(argv=["true"], env={"X": "\0"})


@given(st.lists(st.text(), min_size=1, max_size=5))
def test_refused_exactly_when_an_argument_holds_a_nul(argv: list[str]) -> None:
    bad = [i for i, a in enumerate(argv) if "\0" in a]
    if not bad:
        assert JobSpec(command=argv).command == tuple(argv)
        return
    with pytest.raises(ValueError, match=rf"\AJobSpec command\[{bad[0]}\] contains a NUL byte"):
        JobSpec(command=argv)


def test_values_that_are_not_text_are_not_mistaken_for_text() -> None:
    # A backend option may be a TOML integer, a path a Path: no NUL possible, no TypeError.
    from pathlib import Path

    spec = JobSpec(
        command=["true"],
        options={"gpus": 2},  # type: ignore[dict-item]
        working_directory=Path("/tmp"),  # type: ignore[arg-type]
    )
    assert spec.options == {"gpus": 2}
    with pytest.raises(ValueError, match="JobSpec working_directory contains a NUL byte"):
        JobSpec(command=["true"], working_directory=Path("/tmp/a\0b"))  # type: ignore[arg-type]
