"""The CRM export sensor's run key: name and content hash, the file read again only when its
size or modification time changed."""

from __future__ import annotations

import os
from pathlib import Path

from assets.export_files import export_run_key


def test_the_key_follows_the_content_and_an_unchanged_file_is_not_read_again(
    tmp_path: Path,
) -> None:
    export = tmp_path / "crm.csv"
    export.write_text("Email\na@example.com\n")
    first = export_run_key(export)
    assert first.startswith("crm.csv:")
    assert export_run_key(export) == first

    # Same size and modification time: the sensor trusts the stat and does not hash again
    # (so a rewrite that keeps both is, by design, the same file).
    stat = export.stat()
    export.write_text("Email\nb@example.com\n")
    os.utime(export, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert export_run_key(export) == first

    # A real change moves the modification time: a new key.
    os.utime(export, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    second = export_run_key(export)
    assert second != first

    # The same content under another name is another export.
    other = tmp_path / "other.csv"
    other.write_text("Email\nb@example.com\n")
    assert export_run_key(other).split(":")[1] == second.split(":")[1]
