"""Positional builders: the same record as __init__, or a refusal at import time."""

from __future__ import annotations

from datetime import datetime, timezone

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from hpcstate import AccountingRow, ExitStatus, JobStats, State
from hpcstate._fast import positional_builder

values = st.one_of(st.none(), st.integers(), st.text(max_size=5), st.sampled_from(State))


@given(st.lists(values, min_size=17, max_size=17))
def test_builder_equals_init_for_accounting_rows(cells: list[object]) -> None:
    # No validators on AccountingRow, so __init__ takes any value: so must the builder.
    names = [field.name for field in attrs.fields(AccountingRow)]
    assert len(names) == len(cells)
    built = positional_builder(AccountingRow)(*cells)
    made = AccountingRow(**dict(zip(names, cells, strict=True)))  # type: ignore[arg-type]
    assert built == made
    assert attrs.asdict(built, recurse=False) == attrs.asdict(made, recurse=False)
    assert hash(built) == hash(made)
    assert type(built) is AccountingRow


def test_builder_keywords_and_missing_fields() -> None:
    build = positional_builder(AccountingRow)
    names = [field.name for field in attrs.fields(AccountingRow)]
    row = build(**dict.fromkeys(names))
    assert row.job_id is None
    with pytest.raises(TypeError, match="name"):
        build(**dict.fromkeys(names[:-1]))  # a forgotten field is loud


def test_built_records_stay_frozen() -> None:
    names = [field.name for field in attrs.fields(AccountingRow)]
    row = positional_builder(AccountingRow)(**dict.fromkeys(names))
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        row.job_id = "1"  # type: ignore[misc]


def test_refuses_classes_whose_init_checks_or_converts() -> None:
    # JobStats validates its times and sizes: a builder would skip that, so none is made.
    with pytest.raises(TypeError, match="validates or converts"):
        positional_builder(JobStats)

    @attrs.frozen
    class Hooked:
        a: int

        def __attrs_post_init__(self) -> None:
            pass

    with pytest.raises(TypeError, match="__attrs_post_init__"):
        positional_builder(Hooked)

    @attrs.define(slots=False)
    class Dicty:
        a: int

    with pytest.raises(TypeError, match="not a slotted attrs class"):
        positional_builder(Dicty)


def test_builder_result_is_used_like_any_row() -> None:
    at = datetime(2026, 1, 1, tzinfo=timezone.utc)
    names = [field.name for field in attrs.fields(AccountingRow)]
    values = dict.fromkeys(names)
    values.update(job_id="7", step="batch", nodes=(), exit=ExitStatus.exited(2), started_at=at)
    row = positional_builder(AccountingRow)(**values)
    assert row == attrs.evolve(row)
    assert attrs.evolve(row, job_id="8").job_id == "8"


def test_machine_merge_keeps_the_field_order_its_builder_relies_on() -> None:
    # _apply builds JobStats positionally from _merged's values.
    from hpcstate import Source
    from hpcstate._machine import _merged

    merged = _merged(JobStats(), JobStats(), Source.QUEUE, with_exit=True)
    assert list(merged) == [field.name for field in attrs.fields(JobStats)]
