"""An export read in bulk, for the warehouse: ``CrmBatch``es of Arrow columns rather than a
dict per row (``CrmRead.batches()``).

A CSV export in UTF-8 or Windows-1252 is read by ``CsvBlocks`` (plain lines parsed by Arrow)
and its records are normalised a column at a time: an email matching ``PLAIN_EMAIL`` (plain
ASCII, only case to fold; connector/emails.py) is lower-cased by Arrow, each distinct
combination of flag cells is read once by ``FlagReader``, names are trimmed by Arrow (its
whitespace is Python's: Unicode category Zs or bidi class WS, B, S). A record that needs more
(an email that is not plain: IDN, spaces, junk; a missing required name; a flag cell that
reads neither true nor false; a line only ``CsvSource`` can read) goes through
``RecordRules``, one record at a time. Other exports (.xlsx, UTF-16) are read record by record
and their rows converted. Either way the rows are the ones iterating ``CrmRead`` gives.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from operator import itemgetter
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.compute as pc

from connector.crm.blocks import CsvBlocks, PlainRun
from connector.crm.columns import ResolvedColumns
from connector.crm.rows import CONTACT_FIELDS, FlagReader, RecordRules
from connector.emails import PLAIN_LENGTH

CONTACTS_SCHEMA = pa.schema(
    [
        ("source_file", pa.string()),
        ("line", pa.int64()),
        ("email", pa.string()),
        ("email_original", pa.string()),
        ("name", pa.string()),
        ("do_not_email", pa.bool_()),
        ("unsubscribed", pa.bool_()),
        ("hard_bounced", pa.bool_()),
        ("opted_out_category_ids", pa.string()),  # JSON text, as crm_contacts stores it
        ("mailable", pa.bool_()),
    ]
)
assert tuple(CONTACTS_SCHEMA.names) == CONTACT_FIELDS

# PLAIN_EMAIL in RE2 syntax (Arrow's): no possessive quantifiers or look-behind, the same
# language (a label may not end with "-"); a test holds the two to the same answers.
# Odd records in a row go out in batches of this many (an export of odd lines stays in memory
# a batch at a time, as the plain runs do).
ODD_BATCH = 50_000

PLAIN_EMAIL_RE2 = (
    r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*@"
    r"([A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?\.)+[A-Za-z]{2,63}$"
)


@dataclass
class CrmBatch:
    """A run of records: contact rows as Arrow columns (``CONTACTS_SCHEMA``), rejected rows."""

    contacts: pa.Table
    rejected: list[dict[str, Any]] = field(default_factory=list)


class BulkCsvPart:
    """One CSV export read by ``CsvBlocks`` into ``CrmBatch``es; counts as it goes."""

    def __init__(
        self,
        blocks: CsvBlocks,
        columns: ResolvedColumns,
        source_file: str,
        rejected_by_kind: dict[str, int],
    ) -> None:
        self.blocks = blocks
        self.columns = columns
        self.source_file = source_file
        self.flags = FlagReader(columns)
        assert blocks.format.delimiter is not None
        self.rules = RecordRules(
            columns, source_file, blocks.format.delimiter, self.flags, rejected_by_kind
        )
        self.contacts = 0

    @property
    def blank(self) -> int:
        """Blank records skipped so far."""
        return self.blocks.blank + self.rules.blank

    def batches(self) -> Iterator[CrmBatch]:
        """A batch per run of plain lines, with the odd records read before it; odd records
        in a row go out every ``ODD_BATCH`` records."""
        rules, add, unreadable = self.rules, self.rules.add, self.rules.unreadable
        odd = 0
        for item in self.blocks:
            if type(item) is tuple:
                fields, line, problem, raw = item
                if fields is None:
                    unreadable(line, problem, raw)
                else:
                    add(fields, line)
                odd += 1
                if odd >= ODD_BATCH:
                    odd = 0
                    yield self._batch(None)
                continue
            assert isinstance(item, PlainRun)
            odd = 0
            yield self._batch(self._plain_rows(item))
        if rules.rejected or odd:
            yield self._batch(None)

    def _batch(self, table: pa.Table | None) -> CrmBatch:
        """The rows the record rules made so far, with ``table``'s."""
        contacts, rejected = self.rules.take()
        if contacts:
            made = contacts_table(contacts)
            table = made if table is None else pa.concat_tables([made, table])
        if table is None:
            table = CONTACTS_SCHEMA.empty_table()
        self.contacts += table.num_rows
        return CrmBatch(table, rejected)

    def _plain_rows(self, run: PlainRun) -> pa.Table:
        """The run's contact rows; the records that need more go through ``RecordRules``."""
        columns, fields, count = self.columns, run.fields, run.fields.num_rows
        original = fields.column(columns.email).combine_chunks()
        plain = pc.and_(
            pc.match_substring_regex(original, PLAIN_EMAIL_RE2),
            pc.less_equal(pc.utf8_length(original), PLAIN_LENGTH),
        )
        name = self._names(fields)
        needs_rules = pc.invert(plain)
        if "name" in columns.mapping.required:
            needs_rules = pc.or_(needs_rules, pc.equal(name, ""))
        do_not_email, unsubscribed, bounced, categories, unreadable = self._flags(fields)
        if unreadable is not None:
            needs_rules = pc.or_(needs_rules, unreadable)
        lines = pc.add(_counting(count), run.first_line)
        if pc.any(needs_rules).as_py():
            positions = pc.indices_nonzero(needs_rules)
            records = fields.take(positions).to_pylist()
            for index, record in zip(positions.to_pylist(), records, strict=True):
                self.rules.add(list(record.values()), run.first_line + index)
        table = pa.Table.from_arrays(
            [
                pa.repeat(pa.scalar(self.source_file), count),
                lines,
                pc.utf8_lower(original),
                original,
                pc.if_else(pc.equal(name, ""), pa.scalar(None, pa.string()), name),
                do_not_email,
                unsubscribed,
                bounced,
                categories,
                pc.invert(pc.or_(pc.or_(do_not_email, unsubscribed), bounced)),
            ],
            schema=CONTACTS_SCHEMA,
        )
        return table.filter(pc.invert(needs_rules))

    def _names(self, fields: pa.Table) -> pa.Array:
        columns = self.columns
        empty = pa.repeat(pa.scalar(""), fields.num_rows)

        def trimmed(index: int | None) -> pa.Array:
            if index is None:
                return empty
            return pc.utf8_trim_whitespace(fields.column(index).combine_chunks())

        name = trimmed(columns.full_name)
        if columns.first_name is not None or columns.last_name is not None:
            parts = pc.utf8_trim_whitespace(
                pc.binary_join_element_wise(
                    trimmed(columns.first_name), trimmed(columns.last_name), " "
                )
            )
            name = pc.if_else(pc.equal(name, ""), parts, name)
        return name

    def _flags(
        self, fields: pa.Table
    ) -> tuple[pa.Array, pa.Array, pa.Array, pa.Array, pa.Array | None]:
        """Per record: the three flags, the categories as JSON text, and whether a flag cell
        is unreadable (None when none is); each distinct combination of cells read once."""
        count = fields.num_rows
        indexes = [cell.index for cell in self.flags.cells]
        if not indexes:
            false = pa.repeat(pa.scalar(False), count)
            return false, false, false, pa.repeat(pa.scalar("[]"), count), None
        cells = [fields.column(i).combine_chunks() for i in indexes]
        # Plain lines hold no NUL, so it separates the cells of a combination unambiguously.
        key = cells[0] if len(cells) == 1 else pc.binary_join_element_wise(*cells, "\x00")
        encoded = key.dictionary_encode()
        readings = [
            self.flags.read(value if len(cells) == 1 else tuple(value.split("\x00")))
            for value in encoded.dictionary.to_pylist()
        ]
        positions = encoded.indices

        def per_record(values: list[Any], arrow_type: pa.DataType) -> pa.Array:
            return pc.take(pa.array(values, arrow_type), positions)

        unreadable = [reading[4] is not None for reading in readings]
        return (
            per_record([r[0] for r in readings], pa.bool_()),
            per_record([r[1] for r in readings], pa.bool_()),
            per_record([r[2] for r in readings], pa.bool_()),
            per_record([json_text(r[3]) for r in readings], pa.string()),
            per_record(unreadable, pa.bool_()) if any(unreadable) else None,
        )


_COUNTING: list[pa.Array] = [pa.array([], pa.int64())]


def _counting(count: int) -> pa.Array:
    """0, 1, ..., count - 1 (a slice of one array kept for every run)."""
    if len(_COUNTING[0]) < count:
        _COUNTING[0] = pa.array(range(max(count, 2 * len(_COUNTING[0]))), pa.int64())
    return _COUNTING[0].slice(0, count)


def json_text(categories: tuple[str, ...]) -> str:
    """Opted-out category ids as the JSON text ``crm_contacts`` stores."""
    return orjson.dumps(categories).decode()


def contacts_table(rows: list[dict[str, Any]]) -> pa.Table:
    """Contact rows (dicts) as a ``CONTACTS_SCHEMA`` table."""
    columns = {name: list(map(itemgetter(name), rows)) for name in CONTACT_FIELDS}
    texts: dict[tuple[str, ...], str] = {}
    columns["opted_out_category_ids"] = [
        texts.get(value) or texts.setdefault(value, json_text(value))
        for value in columns["opted_out_category_ids"]
    ]
    return pa.Table.from_pydict(columns, schema=CONTACTS_SCHEMA)
