"""The content key of a CRM export file, as the export sensor sees it: name and a hash of the
content, hashed again only when the file's size or modification time changed."""

from __future__ import annotations

import functools
import hashlib
from pathlib import Path

_CHUNK = 1 << 20


def export_run_key(path: Path) -> str:
    """The run key of an export: its name and a hash of its content (stat first, so an
    unchanged file is not read again on every sensor tick)."""
    stat = path.stat()
    return f"{path.name}:{_digest(str(path.resolve()), stat.st_size, stat.st_mtime_ns)}"


# One entry per version of a file seen; a new size or mtime is a new entry, hashed once.
@functools.lru_cache(maxsize=1024)
def _digest(path: str, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while chunk := file.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()[:20]
