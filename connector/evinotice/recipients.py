"""The EviNotice recipients text and body template: who a batch is sent to and what each
recipient reads.

A recipients upload is a CSV-like text, header line first, ``|``-separated; ``Address`` (an
email address or a phone number with its country code) and ``DisplayName`` are required,
``LegalName`` and ``LookupKey`` optional, and every other column is a template variable that
fills the body's ``{{Variable}}`` placeholders.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from connector.emails import normalize_email
from connector.evinotice.options import InvalidRequestError

RESERVED_COLUMNS = ("Address", "DisplayName", "LegalName", "LookupKey")
_PLACEHOLDER = re.compile(r"\{\{\s*([^{}]+?)\s*\}\}")
_PHONE = re.compile(r"^\+[1-9]\d{6,14}$")
_PHONE_SEPARATORS = re.compile(r"[\s.\-()]")
# A field is quoted when it holds the separator, a quote, a line break, or edge whitespace the
# server would otherwise be free to trim.
_NEEDS_QUOTES = re.compile(r'[|"\r\n]|^\s|\s$')


@dataclass(frozen=True)
class Recipient:
    """One recipient line: an email address or a phone number with country code."""

    address: str
    display_name: str
    legal_name: str | None = None
    lookup_key: str | None = None
    variables: Mapping[str, str] = field(default_factory=dict)  # template variables


def format_recipients(recipients: Iterable[Recipient], *, first_number: int = 1) -> str:
    """The ``|``-separated recipients text: a header, then one escaped line per recipient."""
    rows = list(recipients)
    variables: dict[str, None] = {}  # ordered set of template variable names
    for number, recipient in enumerate(rows, start=first_number):
        _check_recipient(recipient, number)
        for name in recipient.variables:
            variables.setdefault(name, None)
    columns = ["Address", "DisplayName"]
    if any(r.legal_name for r in rows):
        columns.append("LegalName")
    if any(r.lookup_key for r in rows):
        columns.append("LookupKey")
    columns.extend(variables)
    lines = ["|".join(_escape(c) for c in columns)]
    for r in rows:
        fixed = {
            "Address": r.address.strip(),
            "DisplayName": r.display_name,
            "LegalName": r.legal_name or "",
            "LookupKey": r.lookup_key or "",
        }
        values = [fixed[c] if c in fixed else str(r.variables.get(c, "")) for c in columns]
        lines.append("|".join(_escape(v) for v in values))
    return "\n".join(lines) + "\n"


def missing_placeholders(body: str, columns: Iterable[str]) -> list[str]:
    """The ``{{Variable}}`` names of ``body`` no recipient column fills (case-insensitive)."""
    known = {c.lower() for c in (*RESERVED_COLUMNS, *columns)}
    missing: dict[str, None] = {}
    for name in _PLACEHOLDER.findall(body):
        if name.lower() not in known:
            missing.setdefault(name, None)
    return list(missing)


def fill_placeholders(body: str, recipient: Recipient) -> str:
    """The body one recipient receives; a placeholder no column fills stays as written."""
    values = {
        "address": recipient.address.strip(),
        "displayname": recipient.display_name,
        "legalname": recipient.legal_name or "",
        "lookupkey": recipient.lookup_key or "",
    }
    values.update({k.lower(): str(v) for k, v in recipient.variables.items()})
    return _PLACEHOLDER.sub(lambda m: values.get(m.group(1).lower(), m.group(0)), body)


def usable_address(address: str) -> str | None:
    """Why EviNotice cannot take ``address`` (an email or a phone with country code), or None."""
    address = address.strip()
    if "@" in address:
        _, why = normalize_email(address)
        return None if why is None else f"not a usable email address ({why})"
    if _PHONE.match(_PHONE_SEPARATORS.sub("", address)) is None:
        return "neither an email address nor a phone number with country code"
    return None


def _check_recipient(recipient: Recipient, number: int) -> None:
    address = recipient.address.strip()
    why = usable_address(address)
    if why is not None:
        raise InvalidRequestError(f"recipient {number}: address {address!r} is {why}")
    if not recipient.display_name.strip():
        raise InvalidRequestError(f"recipient {number}: display name is empty")
    for name in recipient.variables:
        if not name.strip() or name.strip() != name:
            raise InvalidRequestError(f"recipient {number}: bad variable name {name!r}")
        if name.lower() in (c.lower() for c in RESERVED_COLUMNS):
            raise InvalidRequestError(
                f"recipient {number}: variable {name!r} clashes with a fixed column"
            )


def _escape(value: str) -> str:
    if _NEEDS_QUOTES.search(value):
        return '"' + value.replace('"', '""') + '"'
    return value
