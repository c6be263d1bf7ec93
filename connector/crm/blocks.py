"""The data lines of a CSV export read in bulk: runs of plain lines parsed by Arrow's CSV
reader, every other line handed to ``CsvSource`` one record at a time.

Python's ``csv`` module, as ``CsvSource`` drives it, defines how a line reads. A *plain* line is
one Arrow is certain to read the same way: one record on one line with the header's width,
no NUL, no carriage return but the one of a CRLF ending, valid in the file's encoding, and
either no quote at all or only fields quoted whole, with no space before a field. Anything
else (a quoted field running over lines, a broken quote, a NUL, bytes not in the encoding, a
line of the wrong width, a blank line) goes to ``CsvSource`` from that line on, until it stands
at a record boundary with a plain line next. So every line reads as the record-at-a-time
reader reads it, under the same line number; only the cost differs.

Blocks of ``BLOCK_BYTES`` are checked whole first (a few byte scans); only a block that fails
is looked at line by line. Memory holds one block and its columns.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv

from connector.crm.sniff import DELIMITERS, FileFormat
from connector.crm.sources import CsvSource

BLOCK_BYTES = 4 << 20
# After this many records in a row followed by an odd line, CsvSource reads the rest of the
# block without the next line being checked after each record: an export of odd lines (every
# field quoted after a space, say) would otherwise pay for the checks and gain nothing.
ODD_LINES_CHECKED = 64
# Byte-wise encodings whose lines can be checked and decoded a block at a time.
BULK_ENCODINGS = frozenset({"utf-8", "cp1252"})


@dataclass
class PlainRun:
    """Consecutive plain lines: one row per line, one string column per header column."""

    fields: pa.Table
    first_line: int


# A record ``CsvSource`` read: its fields (None when unreadable), line, problem and raw line.
# A plain tuple: an export of odd lines makes one per record.
OddRecord = tuple[list[str] | None, int, str, str]


def bulk_readable(fmt: FileFormat) -> bool:
    """Whether ``CsvBlocks`` can read a file of this format (else ``CsvSource`` reads it)."""
    return (
        fmt.kind == "csv"
        and not fmt.text_stream
        and fmt.encoding in BULK_ENCODINGS
        and fmt.delimiter in DELIMITERS
    )


class CsvBlocks:
    """The data lines after the header, as ``PlainRun``s and ``OddRecord``s in file order."""

    def __init__(
        self, path: Path, fmt: FileFormat, header: list[str], offset: int, first_line: int
    ) -> None:
        assert bulk_readable(fmt) and fmt.encoding and fmt.delimiter
        self.path = path
        self.format = fmt
        self.header = header
        self.offset = offset
        self.first_line = first_line
        self.blank = 0  # blank records skipped by CsvSource
        self.encoding = fmt.encoding
        self.width = len(header)
        self._delimiter = fmt.delimiter.encode()
        self._plain_quoted = _quoted_line(fmt.delimiter, self.width)
        names = [f"f{i}" for i in range(self.width)]
        self._read_options = pa_csv.ReadOptions(column_names=names, use_threads=True)
        self._convert_options = pa_csv.ConvertOptions(
            column_types=dict.fromkeys(names, pa.string()),
            strings_can_be_null=False,
            quoted_strings_can_be_null=False,
        )

    def __iter__(self) -> Iterator[PlainRun | OddRecord]:
        with self.path.open("rb") as raw:
            raw.seek(self.offset)
            feed = _Feed(raw, self)
            line = self.first_line
            while feed.fill():
                if feed.at_block_start():
                    table = self._whole_block(feed.block)
                    if table is not None:
                        feed.skip_block()
                        yield PlainRun(table, line)
                        line += table.num_rows
                        continue
                run = feed.take_plain_run()
                if run:
                    text = _utf8(b"\n".join(run), self.encoding)
                    table = None if text is None else self._parse(text, quoting=True)
                    if table is None or table.num_rows != len(run):
                        raise AssertionError(f"{self.path}: plain lines Arrow did not read")
                    yield PlainRun(table, line)
                    line += len(run)
                    continue
                source = CsvSource(
                    self.path, self.format, lines=feed, header=self.header, first_line=line
                )
                odd_next = 0  # records in a row whose next line was odd too
                for fields in source.records():
                    yield (fields, source.line, source.problem, source.raw)
                    if not source.at_record_boundary():
                        continue
                    if feed.at_block_end():
                        break  # the next block may be plain as a whole
                    if odd_next < ODD_LINES_CHECKED:
                        if feed.next_is_plain():
                            break
                        odd_next += 1
                line = source.next_line
                self.blank += source.blank

    def plain_line(self, part: bytes, terminated: bool) -> bool:
        """Whether one line (without its LF) is plain; see the module docstring."""
        if not part or b"\x00" in part:
            return False  # an empty line is a blank record, which CsvSource counts
        if len(part) > csv.field_size_limit():
            return False  # a field may be over csv's limit, which rejects the line
        cr = part.find(b"\r")
        if cr != -1 and (cr != len(part) - 1 or not terminated):
            return False
        if not part.isascii():
            try:
                part.decode(self.encoding)
            except UnicodeDecodeError:
                return False
        if b'"' in part:
            return self._plain_quoted.fullmatch(part) is not None
        delimiter = self._delimiter
        return (
            part.count(delimiter) == self.width - 1
            and not part.startswith(b" ")
            and delimiter + b" " not in part
        )

    def _whole_block(self, block: bytes) -> pa.Table | None:
        """The block's rows when every line in it is plain, else None."""
        if b"\x00" in block:
            return None
        if b"\r" in block and block.count(b"\r") != block.count(b"\r\n"):
            return None
        text = _utf8(block, self.encoding)
        if text is None:
            return None
        lines = text.count(b"\n") + (0 if text.endswith(b"\n") else 1)
        quoted = b'"' in text
        if quoted:
            if self.width < 2:
                return None
            every_line = pc.count_substring_regex(
                pa.array([text], pa.large_binary()),
                "(?m)^" + self._plain_quoted.pattern.decode() + "$",
            )
            if every_line[0].as_py() != lines:
                return None
        table = self._parse(text, quoting=quoted)
        if table is None or table.num_rows != lines:
            return None
        if len(text) > csv.field_size_limit() and _longest(table) > csv.field_size_limit():
            return None  # csv rejects a line with a field over its limit; Arrow has none
        if not quoted and b" " in text:
            # skipinitialspace: csv drops spaces before a field; unquoted, that is all it does
            # (a no-op on a field that starts otherwise, so not worth finding which do).
            table = pa.table(
                [pc.utf8_ltrim(column, characters=" ") for column in table.columns],
                names=table.column_names,
            )
        return table

    def _parse(self, text: bytes, *, quoting: bool) -> pa.Table | None:
        options = pa_csv.ParseOptions(
            delimiter=self.format.delimiter,
            quote_char='"' if quoting else False,
            double_quote=True,
            escape_char=False,
            newlines_in_values=False,
            ignore_empty_lines=False,
        )
        try:
            return pa_csv.read_csv(
                pa.py_buffer(text),
                read_options=self._read_options,
                parse_options=options,
                convert_options=self._convert_options,
            )
        except pa.ArrowInvalid:  # a line of another width: read line by line instead
            return None


class _Feed:
    """The data lines one block at a time: whole, as plain runs, or line by line for
    ``CsvSource`` (an iterator of lines with their LF, as reading the file gives them)."""

    def __init__(self, raw: BinaryIO, blocks: CsvBlocks) -> None:
        self._raw = raw
        self._blocks = blocks
        self.block = b""
        self._parts: list[bytes] | None = []  # the block's lines, split when needed
        self._index = 0  # next unread line of the block
        self._terminated = True  # whether the block's last line ends with an LF

    def fill(self) -> bool:
        """Make sure the current block has unread lines; False at the end of the file."""
        while self._parts is not None and self._index >= len(self._parts):
            block = self._raw.read(BLOCK_BYTES)
            if not block:
                return False
            if not block.endswith(b"\n"):
                block += self._raw.readline()
            self.block, self._parts, self._index = block, None, 0
            self._terminated = block.endswith(b"\n")
        return True

    def at_block_start(self) -> bool:
        """Whether nothing of the current block has been read (it may be read whole)."""
        return self._parts is None

    def skip_block(self) -> None:
        """The whole block was read in bulk."""
        self.block, self._parts, self._index = b"", [], 0

    def _split(self) -> list[bytes]:
        if self._parts is None:
            parts = self.block.split(b"\n")
            if self._terminated:
                parts.pop()
            self._parts, self._index = parts, 0
        return self._parts

    def _plain(self, index: int) -> bool:
        parts = self._split()
        terminated = self._terminated or index != len(parts) - 1
        return self._blocks.plain_line(parts[index], terminated)

    def take_plain_run(self) -> list[bytes]:
        """The plain lines from here to the next line that is not (or the block's end)."""
        parts = self._split()
        start = end = self._index
        while end < len(parts) and self._plain(end):
            end += 1
        self._index = end
        return parts[start:end]

    def at_block_end(self) -> bool:
        """Whether every line of the current block has been read."""
        return self._parts is not None and self._index >= len(self._parts)

    def next_is_plain(self) -> bool:
        """Whether the next unread line is plain (False at the end of the file)."""
        return self.fill() and self._plain(self._index)

    def __iter__(self) -> Iterator[bytes]:
        """The unread lines with their LF, as reading the file gives them (for CsvSource)."""
        while self.fill():
            parts = self._split()
            last = len(parts) - 1
            index = self._index
            while index <= last:
                # Moved on before the yield: CsvSource may stop reading after any line.
                self._index = index + 1
                if index == last and not self._terminated:
                    yield parts[index]
                else:
                    yield parts[index] + b"\n"
                index = self._index


def _longest(table: pa.Table) -> int:
    """The length (in characters, as csv counts) of the longest value in the table."""
    return max((pc.max(pc.utf8_length(column)).as_py() or 0) for column in table.columns)


def _utf8(block: bytes, encoding: str) -> bytes | None:
    """The block as UTF-8 (what Arrow reads), or None when a line is not valid."""
    if block.isascii():
        return block
    try:
        text = block.decode(encoding)
    except UnicodeDecodeError:
        return None
    return block if encoding == "utf-8" else text.encode()


def _quoted_line(delimiter: str, width: int) -> re.Pattern[bytes]:
    """A plain line with quotes: ``width`` fields, each quoted whole (quotes doubled inside)
    or unquoted without a quote and not starting with a space; a CR only before the LF."""
    d = re.escape(delimiter)
    field = rf'(?:"(?:[^"\r\n\x00]|"")*"|[^" {d}\r\n\x00][^"{d}\r\n\x00]*|)'
    return re.compile(rf"{field}(?:{d}{field}){{{width - 1}}}\r?".encode())
