"""Shared records and helpers for the tests of the sandbox's RQL engine."""

from __future__ import annotations

from typing import Any

import pytest

from sandbox.marketplace.rql import FieldSet, RqlSyntaxError, parse_query

FIELDS = FieldSet.from_paths(
    [
        "id",
        "name",
        "email",
        "status",
        "count",
        "score",
        "flag",
        "blockedReason",
        "user",
        "user.id",
        "audit.created.at",
        "audit.updated.at",
        "category.id",
    ],
    collections={"optOuts": ["id", "name"], "tags": ["label"]},
)

RECORDS: list[dict[str, Any]] = [
    {
        "id": "CTT-0001",
        "name": "Buzz Lightyear",
        "email": "buzz@example.com",
        "status": "Active",
        "count": 5,
        "score": 1.5,
        "flag": True,
        "user": {"id": "USR-1"},
        "audit": {"updated": {"at": "2026-01-31T23:00:00.000Z"}},
        "category": {"id": "NTC-1234-9876"},
        "optOuts": [{"id": "NTC-1", "name": "News"}, {"id": "NTC-2", "name": "Offers"}],
    },
    {
        "id": "CTT-0002",
        "name": "woody",
        "email": "WOODY@Example.COM",
        "status": "Blocked",
        "count": 12,
        "score": -2.0,
        "flag": False,
        "blockedReason": "",
        "user": None,
        "audit": {"updated": {"at": "2026-02-01T09:30:15.250Z"}},
        "optOuts": [],
    },
    {
        "id": "CTT-0003",
        "name": 'Star * "Command" & co, (Ltd)',
        "email": "a&b@example.com",
        "status": "Active",
        "count": None,
        "flag": True,
        "audit": {"updated": {"at": "2026-01-31T22:59:59.999Z"}},
        "optOuts": [{"id": "NTC-1", "name": "News"}],
    },
    {"id": "CTT-0004", "status": "Deleted", "name": "Zurg"},
]


def ids(raw: str, records: list[dict[str, Any]] = RECORDS, fields: FieldSet = FIELDS) -> list[str]:
    """Ids of the records the query's filter keeps, in order."""
    query = parse_query(raw, fields)
    assert query.predicate is not None
    return [r["id"] for r in records if query.predicate(r)]


def syntax_error(raw: str, fields: FieldSet = FIELDS) -> RqlSyntaxError:
    with pytest.raises(RqlSyntaxError) as caught:
        parse_query(raw, fields)
    return caught.value
