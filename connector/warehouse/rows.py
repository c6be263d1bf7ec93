"""What a warehouse row is: a dict of column values, and the source record kept as JSON with a
stable hash, so unchanged rows are left alone on the next load."""

from __future__ import annotations

import hashlib
from typing import Any

import orjson

Row = dict[str, Any]


def encoded(record: dict[str, Any]) -> tuple[str, str]:
    """The record as JSON text and a hash of it (keys sorted, so the hash is stable)."""
    data = orjson.dumps(record, option=orjson.OPT_SORT_KEYS)
    return data.decode(), hashlib.blake2b(data, digest_size=16).hexdigest()
