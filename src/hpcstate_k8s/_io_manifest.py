"""A user's Job manifest, read from its file; a Job checked against lightkube's model.

The I/O half of ``_manifest`` (which builds the Job, purely): reading the file named by
``options['manifest']`` (JSON or YAML) and checking the finished Job's field types with
lightkube's typed ``Job`` before the API server sees it. Both raise ConfigError.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from hpcstate import ConfigError


def load_manifest(value: str) -> dict[str, Any]:
    """options['manifest']: a Job as JSON text, or the path of a JSON or YAML file."""
    text = value.strip()
    origin = "options['manifest']"
    if not text.startswith("{"):
        path = Path(text).expanduser()
        origin = str(path)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as error:
            raise ConfigError(f"cannot read the Job manifest {path}: {error.strerror}") from None
    try:
        if text.lstrip().startswith("{"):
            doc = json.loads(text)
        else:
            # PyYAML comes with lightkube; it ships no type hints, hence the dynamic import.
            yaml = importlib.import_module("yaml")
            doc = yaml.safe_load(text)
    except ValueError as error:
        raise ConfigError(f"the Job manifest {origin} is not valid JSON/YAML: {error}") from None
    except Exception as error:  # yaml.YAMLError does not derive from ValueError
        raise ConfigError(f"the Job manifest {origin} is not valid YAML: {error}") from None
    if not isinstance(doc, dict):
        raise ConfigError(f"the Job manifest {origin} must be one object (a Job)")
    return doc


def check_schema(body: Mapping[str, Any]) -> None:
    """Catch type mistakes (a string where an int belongs...) before the server does,
    with the path of the field, using lightkube's typed Job model."""
    from lightkube.resources.batch_v1 import Job

    try:
        Job.from_dict(dict(body), lazy=False)
    except ValueError as error:  # msgspec.ValidationError, with the field's path
        raise ConfigError(f"the Job to create is not a valid batch/v1 Job: {error}") from None
