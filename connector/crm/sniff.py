"""Decide how to read an export before reading it: format, encoding, delimiter.

Everything here looks at the first block of the file (and, for the UTF-8 / Windows-1252
choice, as far as the first non-ASCII byte), so a file that cannot be read is refused with a
``CrmFileError`` before any row is produced.
"""

from __future__ import annotations

import codecs
import csv
import io
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Literal

from connector.crm.errors import CrmFileError

HEAD_BYTES = 64 * 1024
SAMPLE_BYTES = 1 << 20  # how much text decides between UTF-8 and Windows-1252
DELIMITERS = (",", ";", "\t", "|")
DELIMITER_NAMES = {",": "comma", ";": "semicolon", "\t": "tab", "|": "pipe"}

_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"\x89PNG\r\n\x1a\n", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"GIF87a", "a GIF image"),
    (b"GIF89a", "a GIF image"),
    (b"%PDF-", "a PDF document"),
    (b"\x1f\x8b", "a gzip archive"),
    (b"7z\xbc\xaf\x27\x1c", "a 7-Zip archive"),
    (b"Rar!\x1a\x07", "a RAR archive"),
    (
        b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1",
        "a legacy Excel .xls (or other OLE) file; save it as .xlsx or CSV",
    ),
)
_BOMS: tuple[tuple[bytes, str], ...] = (
    # UTF-32 first: its little-endian BOM starts with UTF-16's.
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF8, "utf-8"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)
_CONTROL = re.compile(r"[\x00-\x08\x0e-\x1f\x7f]")
_NON_ASCII = re.compile(rb"[\x80-\xff]")
_SEP_HINT = re.compile(r"sep=(.)\s*", re.IGNORECASE)


@dataclass(frozen=True)
class FileFormat:
    """How to read one export file."""

    kind: Literal["csv", "xlsx"]
    encoding: str | None = None  # Python codec name; None for xlsx
    bom_length: int = 0
    # Decode through a text stream rather than line by line from bytes: UTF-16/32 (where a
    # b"\n" split would cut characters) and old Mac files ending lines with a bare CR.
    text_stream: bool = False
    delimiter: str | None = None
    sep_hint: bool = False  # the first line is Excel's "sep=;" hint, not the header


def detect_format(path: Path) -> FileFormat:
    """Format, encoding and delimiter of an export; ``CrmFileError`` when it is not one."""
    name = str(path)
    try:
        with path.open("rb") as raw:
            head = raw.read(HEAD_BYTES)
            if not head:
                raise CrmFileError(name, "the file is empty")
            if head.startswith(b"PK\x03\x04"):
                return _zip_format(path)
            if path.suffix.lower() in {".xlsx", ".xlsm"}:
                raise CrmFileError(
                    name, "not an Excel workbook (an .xlsx file is a ZIP archive; this one is not)"
                )
            for magic, what in _MAGIC:
                if head.startswith(magic):
                    raise CrmFileError(name, f"this is {what}, not a CSV export")
            encoding, bom = _text_encoding(raw, head, name)
    except OSError as exc:
        raise CrmFileError(name, f"cannot open the file ({exc.strerror or exc})") from exc
    text_stream = encoding.startswith(("utf-16", "utf-32"))
    # An incremental decoder so a character cut at the block's end is not counted as junk.
    text = codecs.getincrementaldecoder(encoding)("replace").decode(head[bom:], final=False)
    if not text.strip():
        raise CrmFileError(name, "the file is empty (no header line)")
    if len(_CONTROL.findall(text)) > max(4, len(text) // 100):
        raise CrmFileError(name, "binary data (control characters), not a text export")
    lowered = text.lstrip()[:200].lower()
    if lowered.startswith(("<!doctype html", "<html", "<?xml")):
        raise CrmFileError(name, "an HTML or XML page, not a CSV export")
    if "\n" not in text and "\r" in text:
        text_stream = True
    if "\n" not in text and "\r" not in text and len(head) == HEAD_BYTES:
        raise CrmFileError(name, f"no line break in the first {HEAD_BYTES // 1024} KB")
    delimiter, sep_hint = sniff_delimiter(text)
    return FileFormat("csv", encoding, bom, text_stream, delimiter, sep_hint)


def _zip_format(path: Path) -> FileFormat:
    try:
        with zipfile.ZipFile(path) as archive:
            names = set(archive.namelist())
    except zipfile.BadZipFile as exc:
        raise CrmFileError(str(path), f"a damaged ZIP archive ({exc})") from exc
    if "xl/workbook.xml" not in names:
        raise CrmFileError(str(path), "a ZIP archive, not a CSV export or an Excel .xlsx workbook")
    return FileFormat("xlsx")


def _text_encoding(raw: BinaryIO, head: bytes, name: str) -> tuple[str, int]:
    """Codec name and BOM length."""
    for bom, encoding in _BOMS:
        if head.startswith(bom):
            return encoding, (len(bom) if encoding == "utf-8" else 0)
    nuls = head.count(0)
    if nuls:
        # BOM-less UTF-16: one byte of every pair is NUL for Latin text.
        even, odd = head[0::2].count(0), head[1::2].count(0)
        if odd > len(head) // 4 and even == 0:
            return "utf-16-le", 0
        if even > len(head) // 4 and odd == 0:
            return "utf-16-be", 0
        # A stray NUL or two in a text export rejects only the lines holding them.
        if nuls > max(4, len(head) // 1000):
            raise CrmFileError(name, "binary data (NUL bytes), not a text export")
    return _utf8_or_cp1252(raw, head), 0


def _utf8_or_cp1252(raw: BinaryIO, head: bytes) -> str:
    """UTF-8 when most lines with non-ASCII bytes are valid UTF-8, else Windows-1252.

    Counted per line over the first megabyte from the first non-ASCII byte: a UTF-8 file with
    a few lines pasted from another encoding stays UTF-8 (those lines are rejected) rather than
    turn every accented name into mojibake. A tie goes to UTF-8: text in Windows-1252 almost
    never forms valid multi-byte UTF-8 sequences, so any valid one is strong evidence.
    """
    chunk = head
    while chunk.isascii():
        chunk = raw.read(1 << 20)
        if not chunk:
            return "utf-8"
    match = _NON_ASCII.search(chunk)
    assert match is not None
    start = chunk.rfind(b"\n", 0, match.start()) + 1
    sample = chunk[start : start + SAMPLE_BYTES]
    if len(sample) < SAMPLE_BYTES:
        sample += raw.read(SAMPLE_BYTES - len(sample))
    lines = sample.split(b"\n")
    if len(lines) > 1 and len(sample) >= SAMPLE_BYTES:
        lines.pop()  # possibly cut in the middle of a character
    valid = invalid = 0
    for line in lines:
        if line.isascii():
            continue
        try:
            line.decode("utf-8")
        except UnicodeDecodeError:
            invalid += 1
        else:
            valid += 1
    return "utf-8" if valid and valid >= invalid else "cp1252"


def sniff_delimiter(text: str) -> tuple[str, bool]:
    """The delimiter that splits the header and the first rows most consistently."""
    first_line = text.splitlines()[0] if text else ""
    hint = _SEP_HINT.fullmatch(first_line)
    if hint:
        return hint.group(1), True
    if "\n" in text[:-1]:
        # Drop the last, possibly cut, line of the block.
        text = text[: text.rindex("\n", 0, len(text) - 1) + 1]
    best: tuple[tuple[bool, float, bool, int], str] | None = None
    for delimiter in DELIMITERS:
        records = _parse_some(text, delimiter)
        if not records:
            continue
        header, rows = records[0], records[1:]
        width = len(header)
        consistent = sum(1 for r in rows if len(r) == width) / len(rows) if rows else 1.0
        email_like = any("mail" in h.casefold() for h in header)
        score = (width > 1, consistent, email_like, width)
        if best is None or score > best[0]:
            best = (score, delimiter)
    return (best[1] if best else ","), False


def _parse_some(text: str, delimiter: str, limit: int = 200) -> list[list[str]]:
    records: list[list[str]] = []
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, skipinitialspace=True)
    try:
        for record in reader:
            if record and any(f.strip() for f in record):
                records.append(record)
                if len(records) >= limit:
                    break
    except csv.Error:
        pass
    return records
