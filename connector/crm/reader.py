"""``read_export``: one CRM export file to chunks of contact rows and rejected rows.

The file is checked before anything is returned (format, encoding, header, mapping), so an
unreadable file raises ``CrmFileError`` from ``read_export`` itself and yields nothing. Rows
are then built one record at a time and handed out in chunks; nothing holds the whole file.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from connector.crm.blocks import CsvBlocks, bulk_readable
from connector.crm.bulk import BulkCsvPart, CrmBatch, contacts_table
from connector.crm.columns import ResolvedColumns, detect_mapping, resolve_columns
from connector.crm.errors import CrmFileError
from connector.crm.mapping import CrmMapping, load_mapping
from connector.crm.rows import FlagReader, RecordRules
from connector.crm.sniff import DELIMITER_NAMES, FileFormat, detect_format
from connector.crm.sources import (
    HEADER_SEARCH_ROWS,
    CsvSource,
    XlsxBook,
    XlsxSource,
)

DEFAULT_CHUNK_SIZE = 50_000


@dataclass
class CrmChunk:
    """A run of consecutive records: the contacts and the rejected rows among them."""

    contacts: list[dict[str, Any]]
    rejected: list[dict[str, Any]]


@dataclass
class CrmSummary:
    """What was read from one export; counts are final once iteration has finished."""

    path: str
    source_file: str
    format: str
    encoding: str | None
    delimiter: str | None
    mapping: str
    header: list[str]
    columns: dict[str, str]  # logical field -> header label used for it
    warnings: list[str]
    records: int = 0  # data records read: contacts + rejected
    contacts: int = 0
    rejected: int = 0
    blank: int = 0  # empty lines / rows of empty cells, skipped
    rejected_by_kind: dict[str, int] = field(default_factory=dict)
    complete: bool = False
    sheets: list[str] = field(default_factory=list)  # .xlsx: the sheets read, in order


def read_export(
    path: str | Path,
    mapping: str | Path | CrmMapping | Mapping[str, Any] = "auto",
    *,
    sheet: str | None = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    source_name: str | None = None,
) -> CrmRead:
    """Open and check one export; iterate the result for ``CrmChunk``s.

    ``mapping`` is ``"auto"`` (the built-in that fits the header best), a built-in name, the
    path of a YAML mapping, a ``CrmMapping`` or a dict in the YAML format. For an .xlsx
    workbook, ``sheet`` names the one sheet to read; without it every sheet whose header has
    the mapping's email column is read, and ``summary.sheets`` / ``summary.warnings`` say which
    were read and which were not (``sheet`` is ignored for CSV files). ``source_name``
    replaces the file name in rows; rows of a workbook read from several sheets name the file
    and the sheet: ``book.xlsx[Leads]``.
    """
    path = Path(path)
    chosen = None if mapping == "auto" else load_mapping(mapping)
    if not path.is_file():
        raise CrmFileError(str(path), "no such file")
    fmt = detect_format(path)
    name = source_name or path.name
    if fmt.kind == "xlsx":
        book = XlsxBook(path)
        try:
            parts, warnings = _open_sheets(book, path, chosen, sheet, name)
        except BaseException:
            book.close()
            raise
        return CrmRead(path, fmt, parts, name, chunk_size, closer=book, warnings=warnings)
    source = CsvSource(path, fmt)
    try:
        header = source.read_header()
        try:
            resolved = resolve_columns(
                chosen or detect_mapping(header, str(path)), header, str(path)
            )
        except CrmFileError:
            if any("@" in label for label in header):
                raise CrmFileError(
                    str(path),
                    f"the first line looks like data, not a header (it holds an email "
                    f"address): {header[:20]}; an export needs a header line",
                ) from None
            raise
    except BaseException:
        source.close()
        raise
    return CrmRead(path, fmt, [_Part(source, resolved, name)], name, chunk_size, closer=source)


@dataclass
class _Part:
    """One run of records with one header: a CSV file, or one sheet of a workbook."""

    source: CsvSource | XlsxSource
    columns: ResolvedColumns
    source_file: str


def _open_sheets(
    book: XlsxBook, path: Path, chosen: CrmMapping | None, sheet: str | None, name: str
) -> tuple[list[_Part], list[str]]:
    """The sheets to read (the named one, or every one with the mapped header) and warnings."""
    if sheet is not None and sheet not in book.sheet_names:
        raise CrmFileError(str(path), f"no sheet {sheet!r} (the sheets are {book.sheet_names})")
    wanted = [sheet] if sheet is not None else book.sheet_names
    found: list[tuple[XlsxSource, ResolvedColumns]] = []
    skipped: list[str] = []
    for sheet_name in wanted:
        source = book.sheet(sheet_name)
        resolved: list[ResolvedColumns] = []

        def fits(
            header: list[str],
            sheet_name: str = sheet_name,
            resolved: list[ResolvedColumns] = resolved,
        ) -> bool:
            try:
                mapping = chosen or detect_mapping(header, str(path))
                resolved.append(resolve_columns(mapping, header, f"{path}[{sheet_name}]"))
            except CrmFileError:
                return False
            return True

        if source.find_header(fits) is None:
            skipped.append(sheet_name)
        else:
            found.append((source, resolved[-1]))
    what = f"mapping {chosen.name!r}" if chosen else "any built-in mapping"
    if not found:
        if sheet is not None:
            problem = f"sheet {sheet!r} has no header with an email column for {what}"
        else:
            problem = (
                f"no sheet has a header with an email column for {what} "
                f"(the sheets are {book.sheet_names})"
            )
        raise CrmFileError(str(path), f"{problem} in its first {HEADER_SEARCH_ROWS} rows")
    several = len(found) > 1
    parts = [
        _Part(source, columns, f"{name}[{source.sheet_name}]" if several else name)
        for source, columns in found
    ]
    warnings: list[str] = []
    if len(book.sheet_names) > 1:
        read = ", ".join(repr(source.sheet_name) for source, _ in found)
        text = f"read sheet{'s' if several else ''} {read} of {len(book.sheet_names)}"
        if skipped:
            text += f"; not read: {', '.join(map(repr, skipped))} (no email column for {what})"
        elif sheet is not None:
            others = [n for n in book.sheet_names if n != sheet]
            text += f"; not read: {', '.join(map(repr, others))} (the run names sheet {sheet!r})"
        warnings.append(text)
    for source, _ in found:
        if source.skipped_above_header:
            warnings.append(
                f"sheet {source.sheet_name!r}: {source.skipped_above_header} row(s) above the "
                f"header skipped (a title or notes); the header is row {source.line}"
            )
    return parts, warnings


class CrmRead:
    """One export being read: iterate once for chunks; ``summary`` describes the file."""

    def __init__(
        self,
        path: Path,
        fmt: FileFormat,
        parts: list[_Part],
        source_file: str,
        chunk_size: int,
        *,
        closer: CsvSource | XlsxBook,
        warnings: list[str] | None = None,
    ) -> None:
        self.path = path
        self.format = fmt
        self.columns = parts[0].columns
        self.source_file = source_file
        self.chunk_size = max(1, chunk_size)
        self._parts = parts
        self._closer = closer
        self._started = False
        mappings = list(dict.fromkeys(part.columns.mapping.name for part in parts))
        self.summary = CrmSummary(
            path=str(path),
            source_file=source_file,
            format=fmt.kind,
            encoding=fmt.encoding,
            delimiter=DELIMITER_NAMES.get(fmt.delimiter or "", fmt.delimiter),
            mapping=", ".join(mappings),
            header=list(parts[0].source.header),
            columns=dict(self.columns.used),
            warnings=[
                *(warnings or []),
                *(
                    f"sheet {part.source.sheet_name!r}: {w}"
                    if len(parts) > 1 and isinstance(part.source, XlsxSource)
                    else w
                    for part in parts
                    for w in part.columns.warnings
                ),
            ],
            sheets=[p.source.sheet_name for p in parts if isinstance(p.source, XlsxSource)],
        )

    @property
    def mapping(self) -> CrmMapping:
        """The mapping used (the detected one when ``auto``; the first sheet's)."""
        return self.columns.mapping

    def __enter__(self) -> CrmRead:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Release the file; iteration closes it too when it finishes."""
        self._closer.close()

    def __iter__(self) -> Iterator[CrmChunk]:
        if self._started:
            raise RuntimeError(f"{self.path}: a CrmRead can be iterated only once")
        self._started = True
        try:
            for part in self._parts:
                yield from self._chunks(part)
            self.summary.complete = True
        finally:
            self.close()

    def batches(self) -> Iterator[CrmBatch]:
        """The rows as ``CrmBatch``es of Arrow columns, read in bulk where the file allows
        (see ``connector/crm/bulk.py``); the same rows as iterating, in other chunks. Like
        iterating, this can be done once."""
        if self._started:
            raise RuntimeError(f"{self.path}: a CrmRead can be iterated only once")
        self._started = True
        summary = self.summary
        try:
            for part in self._parts:
                bulk = self._bulk_part(part)
                if bulk is None:
                    for chunk in self._chunks(part):
                        yield CrmBatch(contacts_table(chunk.contacts), chunk.rejected)
                    continue
                yield from bulk.batches()
                summary.contacts += bulk.contacts
                summary.blank += bulk.blank
                summary.rejected = sum(summary.rejected_by_kind.values())
                summary.records = summary.contacts + summary.rejected
            summary.complete = True
        finally:
            self.close()

    def _bulk_part(self, part: _Part) -> BulkCsvPart | None:
        source = part.source
        if not isinstance(source, CsvSource) or not bulk_readable(source.format):
            return None
        offset = source.data_offset()
        if offset is None:
            return None
        blocks = CsvBlocks(self.path, source.format, source.header, offset, source.next_line)
        return BulkCsvPart(blocks, part.columns, part.source_file, self.summary.rejected_by_kind)

    def read_all(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """Every contact and rejected row in lists: for small files and tests."""
        contacts: list[dict[str, Any]] = []
        rejected: list[dict[str, Any]] = []
        for chunk in self:
            contacts.extend(chunk.contacts)
            rejected.extend(chunk.rejected)
        return contacts, rejected

    def _chunks(self, part: _Part) -> Iterator[CrmChunk]:
        source, summary, chunk_size = part.source, self.summary, self.chunk_size
        rules = RecordRules(
            part.columns,
            part.source_file,
            self.format.delimiter or "\t",
            FlagReader(part.columns),
            summary.rejected_by_kind,
        )
        add, unreadable, take = rules.add, rules.unreadable, rules.take
        counted = 0
        budget = chunk_size + 1  # records left before the next chunk goes out
        for fields in source.records():
            budget -= 1
            if not budget:
                contacts, rejected = take()
                counted += len(contacts)
                yield CrmChunk(contacts, rejected)
                budget = chunk_size
            if fields is None:
                unreadable(source.line, source.problem, source.raw)
            else:
                add(fields, source.line)
        contacts, rejected = take()
        summary.contacts += counted + len(contacts)
        summary.rejected = sum(summary.rejected_by_kind.values())
        summary.records = summary.contacts + summary.rejected
        summary.blank += source.blank + rules.blank
        if contacts or rejected:
            yield CrmChunk(contacts, rejected)
