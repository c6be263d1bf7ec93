"""CRM export reading speed: a synthetic Salesforce-style CSV read and normalised.

Writes N rows (a tenth of them opted out or bounced, a few invalid emails, some quoted
names with commas) to a temporary directory, then times ``read_export`` over it (row dicts,
and in bulk: ``batches()``) and reports rows per second and peak memory. Peak memory is
traced Python allocations during the read
(tracemalloc, run separately from the timed pass so tracing does not slow the timing). A
second timed pass also folds the rows into one per email with ``merge_duplicates``.

    python -m benchmarks.crm_read [--rows 1000000] [--chunk-size 50000]
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
import tracemalloc
from pathlib import Path

from connector.crm import merge_duplicates, read_export

_FIRST = ["Ann", "Bob", "Chloé", "Dmitri", "Eva", "François", "Günther", "Hana", "Iñigo", "Jo"]
_LAST = ["Lee", "Smith", "Müller", "O'Brien", "García", "Nguyen", "Rossi", "Kowalski"]
_DOMAINS = ["example.com", "Example.ORG", "mail.example.net", "corp.example.co.uk"]


def write_salesforce_csv(path: Path, rows: int, seed: int = 1) -> int:
    """Write a Salesforce Data Loader style contact export; returns its size in bytes."""
    rng = random.Random(seed)
    with path.open("w", encoding="utf-8", newline="") as out:
        out.write(
            "Id,AccountId,FirstName,LastName,Email,HasOptedOutOfEmail,IsEmailBounced,"
            "EmailBouncedReason,Title,MailingCity\r\n"
        )
        for i in range(rows):
            first, last = rng.choice(_FIRST), rng.choice(_LAST)
            local = f"{first}.{last}{i}".encode("ascii", "ignore").decode()
            email = f"{local}@{rng.choice(_DOMAINS)}"
            if i % 997 == 0:
                email = email.replace("@", " at ")  # a few invalid addresses
            opted = "true" if i % 10 == 3 else "false"
            bounced = "true" if i % 50 == 7 else "false"
            reason = "550 5.1.1 user unknown" if bounced == "true" else ""
            title = '"Director, Sales"' if i % 3 == 0 else "Engineer"
            out.write(
                f"003{i:015d},001{i % 5000:015d},{first},{last},{email},{opted},{bounced},"
                f"{reason},{title},Zürich\r\n"
            )
    return path.stat().st_size


def _read(path: Path, chunk_size: int) -> tuple[int, int]:
    contacts = rejected = 0
    for chunk in read_export(path, "auto", chunk_size=chunk_size):
        contacts += len(chunk.contacts)
        rejected += len(chunk.rejected)
    return contacts, rejected


def _read_in_bulk(path: Path) -> tuple[int, int]:
    contacts = rejected = 0
    for batch in read_export(path, "auto").batches():
        contacts += batch.contacts.num_rows
        rejected += len(batch.rejected)
    return contacts, rejected


def _read_and_merge(path: Path, chunk_size: int) -> tuple[int, int]:
    rows = (
        row for chunk in read_export(path, "auto", chunk_size=chunk_size) for row in chunk.contacts
    )
    merged, conflicts = merge_duplicates(rows)
    return len(merged), len(conflicts)


def bench_read(rows: int, chunk_size: int = 50_000) -> dict[str, float]:
    """Read+normalise rows/s and peak traced memory for a synthetic export of ``rows`` rows."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "salesforce_contacts.csv"
        size = write_salesforce_csv(path, rows)
        started = time.perf_counter()
        contacts, rejected = _read(path, chunk_size)
        seconds = time.perf_counter() - started
        assert contacts + rejected == rows, (contacts, rejected, rows)
        started = time.perf_counter()
        assert _read_in_bulk(path) == (contacts, rejected)
        bulk_seconds = time.perf_counter() - started
        started = time.perf_counter()
        merged, _ = _read_and_merge(path, chunk_size)
        merge_seconds = time.perf_counter() - started
        tracemalloc.start()
        _read(path, chunk_size)
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    result = {
        "rows": float(rows),
        "contacts": float(contacts),
        "rejected": float(rejected),
        "seconds": seconds,
        "rows_per_second": rows / seconds,
        "mb_per_second": size / seconds / 1e6,
        "peak_traced_mb": peak / 1e6,
        "read_and_merge_seconds": merge_seconds,
        "bulk_seconds": bulk_seconds,
        "file_mb": size / 1e6,
    }
    print(f"\n== CRM export read: {rows:,} rows, {size / 1e6:,.1f} MB, chunks of {chunk_size:,} ==")
    print(
        f"read + normalise: {seconds:6.2f} s = {rows / seconds:>10,.0f} rows/s "
        f"({size / seconds / 1e6:,.0f} MB/s); {contacts:,} contacts, {rejected:,} rejected"
    )
    print(
        f"read in bulk (batches(), Arrow columns, as the reconcile load does): "
        f"{bulk_seconds:6.2f} s = {rows / bulk_seconds:>10,.0f} rows/s"
    )
    print(f"peak traced memory during the read: {peak / 1e6:,.1f} MB")
    print(
        f"read + merge_duplicates (one row per email): {merge_seconds:6.2f} s = "
        f"{rows / merge_seconds:>10,.0f} rows/s; {merged:,} distinct emails"
    )
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--chunk-size", type=int, default=50_000)
    args = parser.parse_args()
    bench_read(args.rows, args.chunk_size)


if __name__ == "__main__":
    main()
