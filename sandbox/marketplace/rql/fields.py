"""The fields of one resource a query may filter, order and select on."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

PATH_RE = re.compile(r"[A-Za-z_$][A-Za-z0-9_$]*(?:\.[A-Za-z_$][A-Za-z0-9_$]*)*")

FieldKind = Literal["value", "object", "collection"]


@dataclass(frozen=True)
class FieldSet:
    """The dotted paths of one resource that a query may filter, order and select on.

    ``paths`` are value fields (``status``, ``category.id``, ``audit.updated.at``); every prefix
    of one is an object field (``category``, ``audit``) usable in ``select`` and with
    ``null()``/``empty()``. ``collections`` maps a list field to the fields of its elements, for
    ``any``/``all``. ``select_required`` are the roots that must be selected before filtering or
    ordering on anything under them.
    """

    paths: frozenset[str]
    collections: tuple[tuple[str, FieldSet], ...] = ()
    select_required: frozenset[str] = frozenset({"audit"})
    _kinds: dict[str, FieldKind] = field(init=False, repr=False, compare=False, hash=False)
    _elements: dict[str, FieldSet] = field(init=False, repr=False, compare=False, hash=False)

    def __post_init__(self) -> None:
        kinds: dict[str, FieldKind] = {}
        elements = dict(self.collections)
        for path in (*self.paths, *elements):
            if not PATH_RE.fullmatch(path):
                raise ValueError(f"not a dotted field path: {path!r}")
            parts = path.split(".")
            for i in range(1, len(parts)):
                kinds.setdefault(".".join(parts[:i]), "object")
        for path in self.paths:
            # A path listed as well as something under it ("user" and "user.id") is an object.
            kinds.setdefault(path, "value")
        for path in elements:
            kinds[path] = "collection"
        object.__setattr__(self, "_kinds", kinds)
        object.__setattr__(self, "_elements", elements)

    @classmethod
    def from_paths(
        cls,
        paths: Iterable[str],
        *,
        collections: Mapping[str, FieldSet | Iterable[str]] | None = None,
        select_required: Iterable[str] = ("audit",),
    ) -> FieldSet:
        """Build a field set: value paths, plus collection fields with their elements' paths."""
        nested = tuple(
            (
                name,
                inner if isinstance(inner, FieldSet) else cls.from_paths(inner, select_required=()),
            )
            for name, inner in (collections or {}).items()
        )
        return cls(frozenset(paths), nested, frozenset(select_required))

    @classmethod
    def from_example(
        cls, record: Mapping[str, Any], *, select_required: Iterable[str] = ("audit",)
    ) -> FieldSet:
        """Derive a field set from one fully populated record (lists of objects = collections)."""
        paths: list[str] = []
        collections: dict[str, FieldSet] = {}

        def walk(prefix: str, value: Mapping[str, Any]) -> None:
            for key, item in value.items():
                path = f"{prefix}{key}"
                if not PATH_RE.fullmatch(path):
                    continue  # e.g. "$meta" sub-keys that are not addressable
                if isinstance(item, Mapping) and item:
                    walk(path + ".", item)
                elif isinstance(item, list) and item and isinstance(item[0], Mapping):
                    collections[path] = cls.from_example(item[0], select_required=())
                else:
                    paths.append(path)

        walk("", record)
        return cls.from_paths(paths, collections=collections, select_required=select_required)

    def kind(self, path: str) -> FieldKind | None:
        """What ``path`` is in this resource: a value, an object, a collection, or unknown."""
        return self._kinds.get(path)

    def element(self, path: str) -> FieldSet:
        """The field set of the elements of collection ``path``."""
        return self._elements[path]
