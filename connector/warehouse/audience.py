"""Runs a campaign's audience — the user's own SQL select, or a table or view name — into a
temporary table of the current transaction, so the campaign plan is a join in the warehouse.

This is the one place a statement not written in ``sql/`` runs: the user's query, placed
inside ``sql/campaigns/create_audience_rows.sql``. A query that fails is reported with the
warehouse's message and the line of the query it points at.
"""

from __future__ import annotations

import re

import sqlalchemy as sa

from connector.errors import ConnectorError
from connector.warehouse.engine import Transaction
from connector.warehouse.sql_files import read_sql

RECIPIENT_COLUMNS = ("contact_id", "email", "name")
_LINE = re.compile(r"\bLINE (\d+):")


def _statement(name: str) -> str:
    """A file's statement without its comment lines (the user's query is spliced in as text)."""
    return "\n".join(
        line
        for line in read_sql(name).splitlines()
        if line.strip() and not line.lstrip().startswith("--")
    )


class AudienceQueryError(ConnectorError):
    """The audience query failed in the warehouse, or returns no recipient column."""


def load_audience(tx: Transaction, audience: str, *, is_table: bool, source: str) -> list[str]:
    """Create ``campaign_audience_rows`` from the audience; returns the columns it returned.

    ``contact_id``, ``email`` and ``name`` always exist afterwards (null when not returned);
    at least one of ``contact_id`` and ``email`` must come from the audience.
    """
    query = (
        _statement("campaigns/select_audience_table").replace("{table}", audience)
        if is_table
        else audience
    )
    # Temporary tables outlive a transaction on a pooled connection: start from none.
    tx.run("campaigns/drop_audience_rows")
    statement = _statement("campaigns/create_audience_rows").replace("{query}", query)
    if tx.connection.dialect.paramstyle in ("format", "pyformat"):
        statement = statement.replace("%", "%%")  # no parameters: % is the query's own
    try:
        tx.connection.exec_driver_sql(statement)
    except sa.exc.DBAPIError as exc:
        raise AudienceQueryError(_describe(source, query, exc)) from None
    result = tx.run("campaigns/select_audience_columns")
    columns = [c.lower() for c in result.keys()]  # noqa: SIM118 - a result, not a dict
    result.close()
    if "contact_id" not in columns and "email" not in columns:
        raise AudienceQueryError(
            f"{source}: audience returns no contact_id or email column "
            f"(it returns {', '.join(columns) or 'no columns'})"
        )
    for column in RECIPIENT_COLUMNS:
        if column not in columns:
            tx.run("campaigns/add_audience_column", column=column)
    return columns


def _describe(source: str, query: str, exc: sa.exc.DBAPIError) -> str:
    message = str(exc.orig).strip()
    headline = message.splitlines()[0] if message else type(exc.orig).__name__
    text = f"{source}: the audience query failed: {headline}"
    match = _LINE.search(message)
    lines = query.splitlines()
    if match and 1 <= int(match.group(1)) <= len(lines):
        number = int(match.group(1))
        text += f" (line {number} of the audience: {lines[number - 1].strip()})"
    return text
