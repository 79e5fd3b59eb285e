"""Positional builders for frozen records on hot paths (parsers, the reconcile loop).

An attrs frozen class sets each field through ``object.__setattr__`` by name and parses
keyword arguments: about 2 µs for a 17-field record, which is most of what a sacct row or
a transition costs. A builder sets the slots through their descriptors instead, with the
same result. By default it is only made for classes where that IS the same result:
slotted, and with no validator, converter, ``on_setattr`` hook or init hook; anything
else raises at import time rather than silently skipping a check.

``trusted=True`` allows validators and init hooks and skips them. It is for one case
only: a record rebuilt from values that already passed those checks (the machine's new
item is made of the old item's and a validated Observation's values), and whose result
is checked anyway (the machine checks every invariant). Converters are never skipped.

Callers pass every field, in the class's field order (``attrs.fields``), or by keyword;
tests compare builders with ``__init__``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import attrs

_R = TypeVar("_R")


def positional_builder(cls: type[_R], *, trusted: bool = False) -> Callable[..., _R]:
    """A function ``(field0, field1, ...) -> cls instance`` equal to ``cls(**fields)``.

    Every field is a required argument (no defaults): a field added to the class later
    breaks its callers loudly instead of leaving a slot unset. Keywords work too.
    """
    if not attrs.has(cls) or "__slots__" not in cls.__dict__:
        raise TypeError(f"{cls.__qualname__} is not a slotted attrs class")
    for hook in ("__attrs_pre_init__", "__attrs_post_init__"):
        if not trusted and getattr(cls, hook, None) is not None:
            raise TypeError(f"{cls.__qualname__} has {hook}")
    fields = attrs.fields(cls)
    for attribute in fields:
        if attribute.converter is not None or (not trusted and attribute.validator is not None):
            raise TypeError(f"{cls.__qualname__}.{attribute.name} validates or converts")
        if attribute.on_setattr not in (None, attrs.setters.NO_OP):
            raise TypeError(f"{cls.__qualname__}.{attribute.name} has an on_setattr hook")
        if not attribute.init:
            raise TypeError(f"{cls.__qualname__}.{attribute.name} is not set by __init__")
    names = [attribute.name for attribute in fields]
    namespace: dict[str, Any] = {"_new": object.__new__, "_cls": cls}
    lines = [f"def build({', '.join(names)}):", "    self = _new(_cls)"]
    for name in names:
        # Every class on the MRO may own the slot; the descriptor is found the usual way.
        namespace[f"_set_{name}"] = getattr(cls, name).__set__
        lines.append(f"    _set_{name}(self, {name})")
    lines.append("    return self")
    exec("\n".join(lines), namespace)  # the names come from attrs.fields only
    build: Callable[..., _R] = namespace["build"]
    build.__qualname__ = f"positional_builder({cls.__qualname__})"
    return build
