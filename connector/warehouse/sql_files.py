"""Reads the statements under ``sql/`` and fills in table names.

Only identifiers are substituted, and only ones that look like identifiers: values always
travel as bound parameters (``:name``).
"""

from __future__ import annotations

import functools
import re
from pathlib import Path

SQL_DIR = Path(__file__).resolve().parents[2] / "sql"
# A plain identifier, a comma-separated list of them (column lists), or words separated by
# single spaces (a column type such as ``double precision``): never quotes, never a semicolon.
_IDENTIFIER = re.compile(r"[a-z_][a-z0-9_]*(?:(?:\s*,\s*| )[a-z_][a-z0-9_]*)*")


@functools.cache
def read_sql(name: str) -> str:
    """The text of ``sql/<name>.sql`` (``name`` may include a subfolder, e.g. ``load/x``)."""
    return (SQL_DIR / f"{name}.sql").read_text(encoding="utf-8")


def statements(name: str, **identifiers: str) -> list[str]:
    """The statements of one file, identifiers filled in, split on top-level semicolons."""
    for value in identifiers.values():
        if not _IDENTIFIER.fullmatch(value):
            raise ValueError(f"not a plain SQL identifier: {value!r}")
    # Files without placeholders (the flatten statements, full of JSON braces) are taken as is.
    text = read_sql(name).format(**identifiers) if identifiers else read_sql(name)
    # Comments go before splitting (they may contain semicolons). The files under sql/ keep
    # "--" and ";" out of string literals, so this simple split is exact for them.
    body = "\n".join(line.split("--", 1)[0] for line in text.splitlines())
    return [s.strip() for s in body.split(";") if s.strip()]
