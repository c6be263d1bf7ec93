"""Reading CRM contact exports (CSV in any common dialect and encoding, or .xlsx).

    read = read_export("contacts.csv", mapping="auto")   # or "salesforce", a YAML path, ...
    for chunk in read:                                    # CrmChunk(contacts, rejected)
        ...
    for batch in read_export("contacts.csv").batches():  # or: CrmBatch(contacts as Arrow
        ...                                               # columns, rejected), read in bulk
    read.summary                                          # CrmSummary: counts, mapping, warnings
    read_export("book.xlsx", sheet="Leads")               # one sheet; default: every sheet
                                                          # whose header has the email column
    merged, conflicts = merge_duplicates(all_contact_rows)

``read_export`` checks the file before returning: a file that cannot be read at all (empty,
binary, no header, no email column for the mapping) raises ``CrmFileError`` and nothing is
read from it. Afterwards every data record becomes exactly one contact row or one rejected
row; only blank lines are skipped (counted in ``summary.blank``).

Row shapes (plain dicts; field order in ``CONTACT_FIELDS`` / ``REJECTED_FIELDS``):

    contact  = {source_file: str, line: int, email: str, email_original: str,
                name: str | None, do_not_email: bool, unsubscribed: bool, hard_bounced: bool,
                opted_out_category_ids: tuple[str, ...], mailable: bool}
    rejected = {source_file: str, line: int, kind: str, reason: str, raw: str,
                email: str | None}
    conflict = {email: str, lines: list[int], sources: list[str], resolution: str}

``batches()`` gives the same rows, contacts as an Arrow table (``CONTACTS_SCHEMA`` in
``bulk.py``; the category ids as JSON text): for a CSV export in UTF-8 or Windows-1252, lines
Arrow reads exactly as the ``csv`` module does are parsed and normalised a block at a time,
and only the others go through the record-at-a-time rules (see ``blocks.py`` and ``bulk.py``).

``opted_out_category_ids`` is a tuple, not a list: a row of only immutable values is not
tracked by the garbage collector, which makes reading a million rows a third faster.
``line`` is the 1-based physical line where the record starts, counting the header (for
.xlsx, the sheet row). ``email`` is trimmed, case-folded and IDNA-encoded; ``email_original``
is the cell as exported. ``mailable`` is ``not (do_not_email or unsubscribed or
hard_bounced)``; category opt-outs do not change it. ``kind`` is one of ``missing email``,
``invalid email``, ``missing field``, ``unreadable line``, ``unreadable flag`` (a
do-not-email, unsubscribed, bounced or category cell that reads neither true nor false: the
reason names the column and the value) and ``reason`` starts with it
(``invalid email: no @ sign ('ann.example.com')``). ``raw`` is the line (or the fields joined
with the delimiter) cut to 1,000 characters, a NUL byte shown as ``␀``. ``email`` is the
normalised email when the line had a valid one (``missing field``, ``unreadable flag``), else
None: the plan creates and unblocks nothing for an email with an ``unreadable flag`` line.
"""

from connector.crm.columns import ResolvedColumns, detect_mapping, resolve_columns
from connector.crm.errors import CrmError, CrmFileError, CrmMappingError
from connector.crm.mapping import (
    BUILTIN_NAMES,
    CategoryColumn,
    CrmMapping,
    FlagColumn,
    builtin_mappings,
    load_mapping,
    mapping_from_dict,
)
from connector.crm.merge import merge_duplicates
from connector.crm.reader import CrmBatch, CrmChunk, CrmRead, CrmSummary, read_export
from connector.crm.rows import (
    CONTACT_FIELDS,
    INVALID_EMAIL,
    MISSING_EMAIL,
    MISSING_FIELD,
    REJECTED_FIELDS,
    UNREADABLE_FLAG,
    UNREADABLE_LINE,
)
from connector.emails import normalize_email

__all__ = [
    "BUILTIN_NAMES",
    "CONTACT_FIELDS",
    "INVALID_EMAIL",
    "MISSING_EMAIL",
    "MISSING_FIELD",
    "REJECTED_FIELDS",
    "UNREADABLE_FLAG",
    "UNREADABLE_LINE",
    "CategoryColumn",
    "CrmBatch",
    "CrmChunk",
    "CrmError",
    "CrmFileError",
    "CrmMapping",
    "CrmMappingError",
    "CrmRead",
    "CrmSummary",
    "FlagColumn",
    "ResolvedColumns",
    "builtin_mappings",
    "detect_mapping",
    "load_mapping",
    "mapping_from_dict",
    "merge_duplicates",
    "normalize_email",
    "read_export",
    "resolve_columns",
]
