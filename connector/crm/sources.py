"""Record sources: the header and then the data records of one CSV or .xlsx export.

A source yields each data record as a list of strings at least as wide as the header's named
columns, or ``None`` for a record it could not read; after each yield ``line`` holds the
1-based physical line (or sheet row) where the record starts, and after a ``None``
``problem`` and ``raw`` say why and what the line held. Blank records are skipped and
counted in ``blank``. Memory stays flat: lines are read one at a time and only the lines of
the current record are kept.
"""

from __future__ import annotations

import csv
import io
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from datetime import date, datetime, time
from pathlib import Path
from typing import IO, Any

from connector.crm.errors import CrmFileError
from connector.crm.sniff import FileFormat

RAW_LIMIT = 1000
HEADER_SEARCH_ROWS = 20  # non-empty rows of a sheet searched for the header
NUL_SIGN = "\u2400"  # ␀, what a rejected line shows where the export held a NUL byte
NUL_PROBLEM = "a NUL byte (\\x00) in the line"
_CSV_PROBLEMS = {
    "unexpected end of data": "unterminated quote at the end of the file",
    "expected after": "misplaced quote",
    "field larger than field limit": "field longer than the CSV field limit",
    "new-line character seen in unquoted field": "stray carriage return inside a field",
}


def raw_text(text: str) -> str:
    """A raw line for a rejected row: line ending removed, NUL shown as ␀, cut to a sane length.

    PostgreSQL refuses NUL in text, so a stored raw line never holds one.
    """
    text = text.rstrip("\r\n")
    if "\x00" in text:
        text = text.replace("\x00", NUL_SIGN)
    return text if len(text) <= RAW_LIMIT else text[:RAW_LIMIT] + "…"


class CsvSource:
    """Records of a delimited text file, with line numbers and recovery from broken quoting."""

    def __init__(
        self,
        path: Path,
        fmt: FileFormat,
        *,
        lines: Iterable[bytes] | None = None,
        header: list[str] | None = None,
        first_line: int = 1,
    ) -> None:
        """``lines``: read these (bytes, line endings kept) instead of the file, as the data
        lines that follow ``header`` from ``first_line`` on (the bulk reader hands over the
        lines that need this reader); ``read_header`` is then not called."""
        self.path = path
        self.format = fmt
        self.line = 0
        self.problem = ""
        self.raw = ""
        self.blank = 0
        self.header: list[str] = []
        self.width = 0  # fields a record may have (the header's)
        self.min_width = 0  # fields it must have (up to the last named column)
        self._undecodable = [0]
        self._nuls = [0]  # lines holding a NUL byte, read so far
        self._buffer: list[str] = []
        self._pending: deque[str] = deque()
        self._split: deque[bytes] = deque()  # the rest of a line cut at a bare CR
        self._next_line = 1
        self._file: IO[Any] | None = None
        if lines is None:
            self._file = self._open()
            self._lines: Iterator[Any] = iter(self._file)
        else:
            self._lines = iter(lines)
            self._next_line = first_line
            self._set_header(header or [])
        self._reader = self._new_reader()

    def _open(self) -> IO[Any]:
        fmt = self.format
        assert fmt.encoding is not None
        raw = self.path.open("rb")
        raw.seek(fmt.bom_length)
        if fmt.text_stream:
            # Errors here are rare (UTF-16 is hard to get wrong); replacement keeps the line.
            return io.TextIOWrapper(raw, encoding=fmt.encoding, errors="replace", newline="")
        return raw

    def close(self) -> None:
        """Close the file."""
        if self._file is not None:
            self._file.close()

    @property
    def next_line(self) -> int:
        """The line the next record starts on (after a ``records`` item)."""
        return self._next_line

    def at_record_boundary(self) -> bool:
        """Whether every line read so far is done with: nothing is queued to be read again."""
        return not (self._buffer or self._pending or self._split)

    def data_offset(self) -> int | None:
        """After ``read_header``: the byte offset of the first data line, when the file is read
        as bytes and nothing read is held back (else None)."""
        if self._file is None or self.format.text_stream or not self.at_record_boundary():
            return None
        return self._file.tell()

    def _source(self) -> Iterator[str]:
        """Physical lines, decoded, each remembered until its record is done."""
        buffer, pending, split = self._buffer, self._pending, self._split
        undecodable, nuls = self._undecodable, self._nuls
        encoding = None if self.format.text_stream else self.format.encoding
        while True:
            while pending:
                line = pending.popleft()
                buffer.append(line)
                yield line
            while split:
                line = self._decode(split.popleft())
                buffer.append(line)
                yield line
            for item in self._lines:
                if encoding is None:
                    line = item
                else:
                    cr = item.find(b"\r")
                    if cr != -1 and cr < len(item) - 2:
                        # A bare CR inside an LF (or CRLF) file ends a line, as in a text
                        # editor: otherwise two people would merge into one broken record.
                        item, *rest = item.splitlines(keepends=True)
                        split.extend(rest)
                    try:
                        line = item.decode(encoding)
                    except UnicodeDecodeError:
                        undecodable[0] += 1
                        line = item.decode(encoding, "replace")
                if "\x00" in line:
                    nuls[0] += 1
                buffer.append(line)
                yield line
                if pending or split:
                    break
            else:
                return

    def _decode(self, item: bytes) -> str:
        """One line of bytes as text, counted if it is not valid or holds a NUL."""
        assert self.format.encoding is not None
        try:
            line = item.decode(self.format.encoding)
        except UnicodeDecodeError:
            self._undecodable[0] += 1
            line = item.decode(self.format.encoding, "replace")
        if "\x00" in line:
            self._nuls[0] += 1
        return line

    def _new_reader(self) -> Iterator[list[str]]:
        assert self.format.delimiter is not None
        # strict: an unterminated quote at the end of the file is an error, not a record.
        # skipinitialspace: some tools write `"a", "b"`; without it the quotes stay in the value.
        return csv.reader(
            self._source(), delimiter=self.format.delimiter, strict=True, skipinitialspace=True
        )

    def read_header(self) -> list[str]:
        """Read up to the header record; ``CrmFileError`` if there is none."""
        name = str(self.path)
        if self.format.sep_hint:
            next(self._lines, None)
            self._next_line += 1
        while True:
            self._buffer.clear()
            try:
                record = next(self._reader, None)
            except csv.Error as exc:
                raise CrmFileError(name, f"the header line cannot be parsed ({exc})") from exc
            self._next_line += len(self._buffer)
            if record is None:
                raise CrmFileError(name, "the file is empty (no header line)")
            if any(field.strip() for field in record):
                break
        if self._undecodable[0]:
            raise CrmFileError(name, f"the header line is not valid {self.format.encoding}")
        if self._nuls[0]:
            raise CrmFileError(name, "the header line holds a NUL byte")
        self._set_header([field.strip() for field in record])
        self._buffer.clear()
        return self.header

    def _set_header(self, header: list[str]) -> None:
        named = [i for i, label in enumerate(header) if label]
        self.header, self.width = header, len(header)
        self.min_width = named[-1] + 1 if named else 0

    def records(self) -> Iterator[list[str] | None]:
        """Data records after the header (``None`` for an unreadable one, see ``problem``)."""
        buffer, undecodable, nuls = self._buffer, self._undecodable, self._nuls
        width, min_width = self.width, self.min_width
        line = self._next_line
        seen_undecodable = undecodable[0]
        seen_nuls = nuls[0]
        while True:
            try:
                for fields in self._reader:
                    lines = len(buffer)
                    self.line = line
                    line += lines
                    if undecodable[0] != seen_undecodable:
                        # One reason is enough: a NUL in the same line must not reject the next.
                        seen_undecodable, seen_nuls = undecodable[0], nuls[0]
                        self.problem = f"undecodable bytes (not valid {self.format.encoding})"
                        self.raw = raw_text("".join(buffer))
                        buffer.clear()
                        self._next_line = line
                        yield None
                        continue
                    if nuls[0] != seen_nuls:
                        seen_nuls = nuls[0]
                        self.problem = NUL_PROBLEM
                        self.raw = raw_text("".join(buffer))
                        buffer.clear()
                        self._next_line = line
                        yield None
                        continue
                    count = len(fields)
                    if count < min_width or count > width:
                        if count > width and not any(fields[width:]):
                            del fields[width:]  # trailing delimiters: empty extra fields
                        elif not any(fields):
                            self.blank += 1
                            buffer.clear()
                            continue
                        elif lines > 1:
                            # A record running over several lines with the wrong width is a
                            # quote left open: reject its first line, read the others again.
                            line = self._reread(line - lines + 1, new_reader=False)
                            self.problem = (
                                f"unterminated quote (the record runs over {lines} lines and "
                                f"has {count} fields, the header has {width})"
                            )
                            self._next_line = line
                            yield None
                            continue
                        else:
                            which = "many" if count > width else "few"
                            self.problem = f"too {which} fields ({count}, the header has {width})"
                            self.raw = raw_text(buffer[0])
                            buffer.clear()
                            self._next_line = line
                            yield None
                            continue
                    elif not any(fields):
                        self.blank += 1
                        buffer.clear()
                        continue
                    buffer.clear()
                    self._next_line = line
                    yield fields
                return
            except csv.Error as exc:
                self.line = line
                self.problem = _csv_problem(str(exc))
                spread = len(buffer) - 1
                if spread and "end of the file" not in self.problem:
                    # The quote opened on this line; the parser only noticed lines later.
                    self.problem = f"unterminated quote ({self.problem} {spread} lines later)"
                if undecodable[0] != seen_undecodable:
                    seen_undecodable = undecodable[0]
                if nuls[0] != seen_nuls:
                    seen_nuls = nuls[0]
                    self.problem = NUL_PROBLEM
                line = self._reread(line + 1, new_reader=True)
                self._next_line = line
                yield None

    def _reread(self, next_line: int, new_reader: bool) -> int:
        """Reject the buffer's first line and queue the rest to be read again."""
        buffer = self._buffer
        self.raw = raw_text(buffer[0]) if buffer else ""
        self._pending.extend(buffer[1:])
        buffer.clear()
        if new_reader:
            # After a csv.Error the old line source may have run to the end of the file.
            self._reader = self._new_reader()
        return next_line


def _csv_problem(message: str) -> str:
    for key, problem in _CSV_PROBLEMS.items():
        if key in message:
            return problem
    return f"unreadable CSV ({message})"


class XlsxBook:
    """An .xlsx workbook opened in openpyxl's streaming mode; its sheets are read one by one."""

    def __init__(self, path: Path) -> None:
        import openpyxl  # imported here: only .xlsx exports need it

        self.path = path
        # A file object, not the path: openpyxl refuses names not ending in .xlsx, and an
        # export renamed to .csv is still a workbook.
        self._file = path.open("rb")
        try:
            self._book = openpyxl.load_workbook(self._file, read_only=True, data_only=True)
        except Exception as exc:  # openpyxl raises many kinds for a damaged workbook
            self._file.close()
            raise CrmFileError(str(path), f"not a readable .xlsx workbook ({exc})") from exc
        self.sheet_names: list[str] = [sheet.title for sheet in self._book.worksheets]
        if not self.sheet_names:
            self.close()
            raise CrmFileError(str(path), "the workbook has no sheets")

    def sheet(self, name: str) -> XlsxSource:
        """The rows of one sheet."""
        return XlsxSource(self.path, self._book[name])

    def close(self) -> None:
        """Close the workbook."""
        self._book.close()
        self._file.close()


class XlsxSource:
    """Rows of one sheet of an .xlsx workbook (the workbook is closed by its ``XlsxBook``)."""

    def __init__(self, path: Path, sheet: Any) -> None:
        self.path = path
        self.sheet_name: str = sheet.title
        self.line = 0
        self.problem = ""
        self.raw = ""
        self.blank = 0
        self.skipped_above_header = 0  # non-empty rows before the header: a title, notes
        self.header: list[str] = []
        self.width = 0
        self.min_width = 0
        # Dimensions written by other tools are often wrong; read every row there is.
        sheet.reset_dimensions()
        self._rows = enumerate(sheet.iter_rows(values_only=True), start=1)

    def close(self) -> None:
        """Nothing to release per sheet."""

    def find_header(
        self, fits: Callable[[list[str]], bool], limit: int = HEADER_SEARCH_ROWS
    ) -> list[str] | None:
        """The first of the first ``limit`` non-empty rows that ``fits``; None if none does.

        Rows above it (a report title, a note, the export date) are skipped and counted, as
        people save exports from Excel with such lines on top.
        """
        seen = 0
        for number, row in self._rows:
            cells = [cell_text(value).strip() for value in row]
            if not any(cells):
                continue
            named = [i for i, label in enumerate(cells) if label]
            header = cells[: named[-1] + 1]
            if fits(header):
                self.min_width = self.width = len(header)
                self.header = header
                self.line = number
                return header
            seen += 1
            self.skipped_above_header = seen
            if seen >= limit:
                break
        return None

    def records(self) -> Iterator[list[str] | None]:
        """Data rows after the header (``None`` for one with cells past the last column)."""
        width = self.width
        for number, row in self._rows:
            self.line = number
            fields = [cell_text(value) for value in row]
            if len(fields) > width and any(fields[width:]):
                extra = next(i for i in range(width, len(fields)) if fields[i])
                self.problem = (
                    f"a value in column {extra + 1}, past the last header column ({width})"
                )
                self.raw = raw_text("\t".join(fields))
                yield None
                continue
            if not any(fields):
                self.blank += 1
                continue
            if any("\x00" in f for f in fields):
                # Excel writes control characters as _x0000_, which openpyxl decodes.
                self.problem = NUL_PROBLEM
                self.raw = raw_text("\t".join(fields))
                yield None
                continue
            if len(fields) < width:
                fields.extend([""] * (width - len(fields)))
            yield fields


def cell_text(value: Any) -> str:
    """A spreadsheet cell as the text a CSV export would hold."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, (datetime, date, time)):
        return value.isoformat()
    return str(value)
