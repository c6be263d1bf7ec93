"""Values as a query writes them: literals, the ``null()`` / ``empty()`` constants, and the
coercions a literal needs to compare with a record's value (bool, number, instant).

Quoted and bare values mean the same text: there are no escapes, inside quotes or out (a
quoted value ends at the next quote of the same kind). Timestamps are compared as instants
when both sides are ISO timestamps; the API's own canonical spelling
(``YYYY-MM-DDTHH:mm:ss.sssZ``) compares as plain text, which saves parsing one per record.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone

_INT_RE = re.compile(r"[+-]?[0-9]+")
_FLOAT_RE = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_TIMESTAMP_RE = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})"
    r"(?:[Tt ]([0-9]{2}):([0-9]{2})(?::([0-9]{2})(?:[.,]([0-9]+))?)?"
    r"(?:([Zz])|([+-])([0-9]{2}):?([0-9]{2}))?)?"
)


@dataclass(frozen=True, slots=True)
class Literal:
    """A value as written, quotes removed."""

    text: str

    def canonical(self) -> str:
        # A literal never holds both kinds of quote (a quoted one cannot hold its own kind,
        # a bare one none), so one of the two kinds always writes it back unchanged.
        return f'"{self.text}"' if '"' not in self.text else f"'{self.text}'"


@dataclass(frozen=True, slots=True)
class Constant:
    """``null()`` or ``empty()``."""

    name: str

    def canonical(self) -> str:
        return self.name + "()"


Value = Literal | Constant


def parse_instant(text: str) -> datetime | None:
    """An ISO-8601 date or timestamp as an aware UTC datetime; None if ``text`` is not one."""
    match = _TIMESTAMP_RE.fullmatch(text)
    if match is None:
        return None
    year, month, day, hour, minute, second, fraction, _zulu, sign, off_h, off_m = match.groups()
    micro = int((fraction + "000000")[:6]) if fraction else 0
    try:
        tz = UTC
        if sign:
            delta = timedelta(hours=int(off_h), minutes=int(off_m))
            tz = timezone(-delta if sign == "-" else delta)
        moment = datetime(
            int(year),
            int(month),
            int(day),
            int(hour or 0),
            int(minute or 0),
            int(second or 0),
            micro,
            tzinfo=tz,
        )
        return moment.astimezone(UTC)
    except (ValueError, OverflowError):
        return None


def canonical_timestamp(moment: datetime) -> str:
    """The API's spelling of an instant, ``YYYY-MM-DDTHH:mm:ss.sssZ``."""
    return (
        f"{moment.year:04d}-{moment.month:02d}-{moment.day:02d}T{moment.hour:02d}:"
        f"{moment.minute:02d}:{moment.second:02d}.{moment.microsecond // 1000:03d}Z"
    )


def looks_canonical(v: str) -> bool:
    """True for text in the API's own timestamp shape (same-shape texts compare in time order)."""
    return len(v) == 24 and v[23] == "Z" and v[10] == "T" and v[19] == "." and v[4] == "-"


def record_instant(v: str) -> datetime | None:
    """The instant a record's text value names, if it is a timestamp (cheap pre-check first)."""
    if len(v) < 10 or v[4] != "-" or v[7] != "-":
        return None
    return parse_instant(v)


def datetime_utc(v: datetime) -> datetime:
    """A datetime in UTC; a naive one is taken as UTC."""
    return v.replace(tzinfo=UTC) if v.tzinfo is None else v.astimezone(UTC)


@dataclass(frozen=True, slots=True)
class Coerced:
    """One literal in every type a record value may have, computed once per query."""

    text: str
    boolean: bool | None
    number: int | float | None
    instant: datetime | None
    canon: str | None  # canonical timestamp text when it loses nothing, for the fast path

    @classmethod
    def of(cls, text: str) -> Coerced:
        lowered = text.lower()
        boolean = True if lowered == "true" else False if lowered == "false" else None
        number: int | float | None = None
        try:
            if _INT_RE.fullmatch(text):
                number = int(text)
            elif _FLOAT_RE.fullmatch(text):
                number = float(text)
        except ValueError:  # an int too long to convert
            number = None
        instant = parse_instant(text)
        canon = None
        if instant is not None and instant.microsecond % 1000 == 0:
            canon = canonical_timestamp(instant)
        return cls(text, boolean, number, instant, canon)
