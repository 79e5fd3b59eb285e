"""``hpcstate schema`` (issue 11): the record's JSON Schema ships as package data, is
printed by the installed script, and stays the same file as docs/schema."""

from __future__ import annotations

import json
from importlib.resources import files
from pathlib import Path

import jsonschema

from .conftest import hpcstate

ROOT = Path(__file__).resolve().parents[2]
DOCS_COPY = ROOT / "docs" / "schema" / "record-v1.json"


def test_the_package_copy_is_the_docs_copy() -> None:
    shipped = files("hpcstate").joinpath("schema/record-v1.json").read_text(encoding="utf-8")
    assert shipped == DOCS_COPY.read_text(encoding="utf-8"), (
        "src/hpcstate/schema/record-v1.json and docs/schema/record-v1.json differ: "
        "change both (cp docs/schema/record-v1.json src/hpcstate/schema/)"
    )


def test_schema_prints_the_schema_records_validate_against(cli_env: dict[str, str]) -> None:
    result = hpcstate("schema", env=cli_env)
    assert result.code == 0, result.err
    assert result.out == DOCS_COPY.read_text(encoding="utf-8")
    schema = json.loads(result.out)
    jsonschema.Draft202012Validator.check_schema(schema)
    validator = jsonschema.Draft202012Validator(schema)
    submitted = hpcstate("submit", "--json", "--watch", "--", "sh", "-c", "exit 4", env=cli_env)
    [record] = submitted.records()
    assert list(validator.iter_errors(record)) == []
    assert not validator.is_valid({"schema": 1})  # it can fail: a record needs its fields
