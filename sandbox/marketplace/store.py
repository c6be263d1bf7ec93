"""The sandbox's in-memory Marketplace data and the operations the API performs on it.

Records are kept in id (text) order, whatever the shape of the ids. An
unfiltered read in id order is a slice; a filtered or re-ordered read is computed once per
collection version and cached, so paging through a million records never rescans per page.
A short sorted read (a small offset + limit, like "the newest change") takes only its first
rows without sorting them all; a longer read of the same version then sorts them all, once.
"""

from __future__ import annotations

import bisect
import random
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from sandbox.clock import SandboxClock, format_timestamp
from sandbox.marketplace import data as gen
from sandbox.marketplace.rql import sort_key
from sandbox.marketplace.sending import Delivery

Record = dict[str, Any]
Predicate = Callable[[Record], bool]


class StoreError(Exception):
    """An operation the API refuses; ``status`` and ``title`` become problem details."""

    def __init__(
        self, status: int, title: str, detail: str, errors: dict[str, list[str]] | None = None
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.title = title
        self.detail = detail
        self.errors = errors or {}


# What the API keeps indexes for, as a database would: "the newest change" orders contacts by
# these (connector/marketplace/client.py ``latest_change``).
INDEXED_CONTACT_FIELDS = ("audit.created.at", "audit.updated.at")

Order = tuple[tuple[str, bool], ...]
SortKey = Callable[[Record], str]
Column = Callable[[str, SortKey], list[str]]
# rql.first_records: (records in id order, order, rows needed or None for all, predicate,
# Collection.column) -> (how many match, at least the rows needed, in order).
Arrange = Callable[
    [list[Record], Order, int | None, Predicate | None, Column], tuple[int, list[Record]]
]


@dataclass
class _Answer:
    """A cached read: its total, and its first rows in order (all of them when complete)."""

    version: int
    total: int
    rows: list[Record]

    @property
    def complete(self) -> bool:
        return len(self.rows) == self.total


class Collection:
    """Records of one resource in id order, with a per-version cache of query results."""

    def __init__(self, records: list[Record]) -> None:
        records = sorted(records, key=lambda r: r["id"])
        self._ids = [r["id"] for r in records]
        # The records themselves in id order beside their ids: a read walks this list instead
        # of looking each id up (a quarter of an unfiltered sort's time at 100k).
        self._records = records
        self._by_id = {r["id"]: r for r in records}
        self.version = 0
        self._cache: dict[tuple[str, Order], _Answer] = {}
        # The sort key of every record per field ordered by, in id order, kept up to date
        # record by record: under churn a read no longer computes one key per record.
        self._columns: dict[str, tuple[SortKey, list[str]]] = {}

    def __len__(self) -> int:
        return len(self._ids)

    def get(self, identifier: str) -> Record | None:
        return self._by_id.get(identifier)

    def all(self) -> Iterator[Record]:
        """Every record in id order (a snapshot of the order at call time)."""
        return iter(list(self._records))

    def put(self, record: Record) -> None:
        """Insert or replace a record."""
        identifier = record["id"]
        if identifier in self._by_id:
            at = bisect.bisect_left(self._ids, identifier)
            self._records[at] = record
            for key, keys in self._columns.values():
                keys[at] = key(record)
        elif not self._ids or identifier > self._ids[-1]:
            self._ids.append(identifier)
            self._records.append(record)
            for key, keys in self._columns.values():
                keys.append(key(record))
        else:
            at = bisect.bisect_left(self._ids, identifier)
            self._ids.insert(at, identifier)
            self._records.insert(at, record)
            for key, keys in self._columns.values():
                keys.insert(at, key(record))
        self._by_id[identifier] = record
        self._changed()

    def remove(self, identifier: str) -> Record | None:
        record = self._by_id.pop(identifier, None)
        if record is not None:
            at = bisect.bisect_left(self._ids, identifier)
            del self._ids[at]
            del self._records[at]
            for _, keys in self._columns.values():
                del keys[at]
            self._changed()
        return record

    def pick(self, rng: random.Random) -> Record:
        """A random record (the collection must not be empty)."""
        return self._records[rng.randrange(len(self._ids))]

    def touched(self) -> None:
        """A record changed in place."""
        self._columns.clear()  # which record, is not said: every key is recomputed when read
        self._changed()

    def column(self, path: str, key: SortKey) -> list[str]:
        """``key`` (the sort key of ``path``) of every record, in id order; read-only."""
        kept = self._columns.get(path)
        if kept is None:
            kept = self._columns[path] = (key, list(map(key, self._records)))
        return kept[1]

    def _changed(self) -> None:
        self.version += 1
        self._cache.clear()

    def query(
        self,
        cache_key: str,
        predicate: Predicate | None,
        order: Order,
        arrange: Arrange,
        need: int | None = None,
    ) -> tuple[int, Callable[[int, int], list[Record]]]:
        """Total count and a slicer ``(offset, limit) -> records`` for a filtered, ordered read.

        ``need`` (offset + limit; None for every row) lets ``arrange`` answer a short read
        without sorting every record; the slicer then serves offsets below ``need`` only.
        """
        records = self._records
        if order == (("id", False),):
            order = ()  # the records are in id order already
        if predicate is None and not order:
            return len(records), lambda offset, limit: records[offset : offset + limit]
        key = (cache_key, order)
        answer = self._cache.get(key)
        if answer is None or answer.version != self.version:
            answer = _Answer(self.version, *arrange(records, order, need, predicate, self.column))
            self._cache[key] = answer
        elif not answer.complete and (need is None or need > len(answer.rows)):
            # A longer read than the one cached: the next pages of a client paging through,
            # so they are all sorted, once. (After a count, a short read still selects.)
            wanted = need if not answer.rows else None
            answer = _Answer(self.version, *arrange(records, order, wanted, predicate, self.column))
            self._cache[key] = answer
        rows = answer.rows
        return answer.total, lambda offset, limit: rows[offset : offset + limit]


@dataclass(frozen=True)
class Attachment:
    """A file sent with a batch (multipart ``attachment`` part)."""

    filename: str
    content_type: str
    data: bytes


@dataclass
class ChurnStats:
    created: int = 0
    updated: int = 0
    blocked: int = 0
    unblocked: int = 0
    deleted: int = 0
    reinserted: int = 0
    deleted_ids: list[str] = field(default_factory=list)


class MarketplaceStore:
    """Categories, contacts, batches and messages, and the API's operations on them."""

    def __init__(self, clock: SandboxClock, *, contacts: int = 1000, seed: int = 1) -> None:
        self.clock = clock
        self.lock = threading.RLock()
        data = gen.generate(contacts, seed, clock.now())
        self.categories = Collection(data.categories)
        self.contacts = Collection(data.contacts)
        # Their sort keys made now, as the service has its indexes before any request: made
        # on the first such request instead, they held every other request on the sandbox's
        # one event loop meanwhile (about 0.2 s per field at 100k contacts), which the real
        # service, answering requests side by side, does not.
        for path in INDEXED_CONTACT_FIELDS:
            self.contacts.column(path, sort_key(path))
        self.batches = Collection(data.batches)
        self.messages = Collection(data.messages)
        self._emails = {c["email"].casefold(): c["id"] for c in data.contacts}
        self._next_contact = contacts + 1
        self._next_batch = len(data.batches) + 1
        self._churn_rng = random.Random(seed * 7919 + 17)
        self.churn = ChurnStats()
        self.delivery = Delivery(self, seed)  # queued messages settle over sandbox time
        # (timestamp, status) per category, kept sorted, so statistics are a bisect per window.
        self._message_times: dict[str, list[tuple[str, str]]] = {}
        for message in data.messages:
            self._index_message(message)
        for times in self._message_times.values():
            times.sort()

    def collection(self, name: str) -> Collection:
        self.delivery.settle()
        return {
            "contacts": self.contacts,
            "categories": self.categories,
            "batches": self.batches,
            "messages": self.messages,
        }[name]

    # -- categories -------------------------------------------------------------------------

    def category_with_statistics(self, category: Record) -> Record:
        """The category as the API shows it, statistics computed for the current windows."""
        return {**category, "statistics": self.statistics(category["id"])}

    def statistics(self, category: str) -> dict[str, dict[str, int]]:
        """Message counts per status for today, this week and this month (UTC calendar windows)."""
        self.delivery.settle()
        now = self.clock.now()
        day = now.replace(hour=0, minute=0, second=0, microsecond=0)
        windows = {
            "today": day,
            "week": day - timedelta(days=day.weekday()),
            "month": day.replace(day=1),
        }
        times = self._message_times.get(category, [])
        end = bisect.bisect_right(times, (format_timestamp(now), "\uffff"))
        result = {}
        for name, start in windows.items():
            begin = bisect.bisect_left(times, (format_timestamp(start), ""))
            counts = dict.fromkeys(("sent", "bounced", "complained", "discarded", "failed"), 0)
            for _, status in times[begin:end]:
                key = status.lower()
                if key in counts:
                    counts[key] += 1
            counts["total"] = sum(counts.values())
            result[name] = counts
        return result

    def _index_message(self, message: Record) -> None:
        self._message_times.setdefault(message["category"]["id"], []).append(
            (message["audit"]["created"]["at"], message["status"])
        )

    # -- contacts ---------------------------------------------------------------------------

    def create_contact(self, body: Any) -> Record:
        """POST /contacts."""
        email, name, opt_outs = self._contact_fields(body)
        with self.lock:
            if email.casefold() in self._emails:
                raise StoreError(
                    409,
                    "Conflict",
                    f"A contact with email {email} already exists.",
                    {"email": ["A contact with this email already exists."]},
                )
            identifier = gen.contact_id(gen.contact_number(self._next_contact))
            self._next_contact += 1
            return self._insert_contact(identifier, email, name, opt_outs)

    def _insert_contact(
        self, identifier: str, email: str, name: str | None, opt_outs: list[Record]
    ) -> Record:
        contact = gen.new_contact(identifier, email, name, opt_outs, self.clock.now())
        self.contacts.put(contact)
        self._emails[email.casefold()] = identifier
        return contact

    def update_contact(self, identifier: str, body: Any) -> Record:
        """PUT /contacts/{id}."""
        email, name, opt_outs = self._contact_fields(body)
        with self.lock:
            contact = self._contact(identifier, unknown_status=400)
            owner = self._emails.get(email.casefold())
            if owner is not None and owner != identifier:
                raise StoreError(
                    409, "Conflict", f"A contact with email {email} already exists.", {}
                )
            del self._emails[contact["email"].casefold()]
            self._emails[email.casefold()] = identifier
            updated = {**contact, "email": email, "name": name, "optOuts": opt_outs}
            return self._save(updated)

    def set_blocked(self, identifier: str, blocked: bool, reason: str | None = None) -> Record:
        """POST /contacts/{id}/block and /unblock."""
        with self.lock:
            contact = self._contact(identifier, unknown_status=400)
            target = "Blocked" if blocked else "Active"
            if contact["status"] == target:
                raise StoreError(
                    409,
                    "Conflict",
                    f"Contact {identifier} is already {target}.",
                    {"status": [f"Contact is already {target}."]},
                )
            updated = {
                **contact,
                "status": target,
                "blockedReason": (reason or "Blocked by API") if blocked else None,
            }
            return self._save(updated)

    def delete_contact(self, identifier: str) -> None:
        """DELETE /contacts/{id}."""
        with self.lock:
            contact = self._contact(identifier)
            self.contacts.remove(identifier)
            del self._emails[contact["email"].casefold()]

    def _contact(self, identifier: str, *, unknown_status: int = 404) -> Record:
        contact = self.contacts.get(identifier)
        if contact is None:
            # Block, unblock and update publish only 200 and 400: an unknown id is a 400.
            title = "Not Found" if unknown_status == 404 else "Bad Request"
            raise StoreError(unknown_status, title, f"Contact {identifier} was not found.")
        return contact

    def _save(self, contact: Record) -> Record:
        contact["audit"] = {
            "created": contact["audit"]["created"],
            "updated": {"at": format_timestamp(self.clock.now())},
        }
        self.contacts.put(contact)
        return contact

    def _contact_fields(self, body: Any) -> tuple[str, str | None, list[Record]]:
        if not isinstance(body, dict):
            raise StoreError(400, "Bad Request", "The request body must be a JSON object.")
        errors: dict[str, list[str]] = {}
        unknown = sorted(set(body) - {"email", "name", "optOuts"})
        for name in unknown:
            errors[name] = ["Unknown property."]
        email = body.get("email")
        if not isinstance(email, str) or not _looks_like_email(email):
            errors["email"] = ["A valid email address is required."]
        name = body.get("name")
        if name is not None and not isinstance(name, str):
            errors["name"] = ["The name must be a string."]
        opt_outs: list[Record] = []
        raw_opt_outs = body.get("optOuts") or []
        if not isinstance(raw_opt_outs, list):
            errors["optOuts"] = ["optOuts must be a list of category references."]
            raw_opt_outs = []
        for reference in raw_opt_outs:
            category = (
                self.categories.get(reference.get("id", ""))
                if isinstance(reference, dict)
                else None
            )
            if category is None:
                errors.setdefault("optOuts", []).append(f"Unknown category {reference!r}.")
            elif not category["optOutAllowed"]:
                errors.setdefault("optOuts", []).append(
                    f"Category {category['id']} does not allow opting out."
                )
            else:
                opt_outs.append(
                    {
                        "id": category["id"],
                        "name": category["name"],
                        "shortDescription": category["shortDescription"],
                    }
                )
        if errors:
            raise StoreError(400, "Bad Request", "One or more validation errors occurred.", errors)
        assert isinstance(email, str)
        return email.strip(), name, opt_outs

    # -- batches ----------------------------------------------------------------------------

    def create_batch(self, body: Any, attachments: Sequence[Attachment] = ()) -> Record:
        """POST /batches: one batch and a Queued message per contact."""
        if not isinstance(body, dict):
            raise StoreError(400, "Bad Request", "The request body must be a JSON object.")
        errors: dict[str, list[str]] = {}
        category = self.categories.get((body.get("category") or {}).get("id", ""))
        if category is None or category["status"] != "Published":
            errors["category.id"] = ["A published category is required."]
        if not isinstance(body.get("subject"), str) or not body["subject"].strip():
            errors["subject"] = ["A subject is required."]
        references = body.get("contacts")
        if not isinstance(references, list) or not references:
            errors["contacts"] = ["At least one contact is required."]
            references = []
        with self.lock:
            recipients = []
            for position, reference in enumerate(references):
                contact = self._resolve_contact(reference)
                if contact is None:
                    errors.setdefault(f"contacts[{position}]", []).append("Unknown contact.")
                else:
                    recipients.append(contact)
            if errors:
                raise StoreError(
                    400, "Bad Request", "One or more validation errors occurred.", errors
                )
            assert category is not None
            now = self.clock.now()
            number = self._next_batch
            self._next_batch += 1
            batch = {
                "id": gen.batch_id(number),
                "subject": body["subject"],
                "body": body.get("body"),
                "category": gen.category_ref(category),
                "account": dict(gen.ACCOUNT),
                "attachments": [
                    {
                        "id": f"ATT-{number:04d}-{position:04d}",
                        "name": attachment.filename,
                        "filename": attachment.filename,
                        "contentType": attachment.content_type,
                        "size": len(attachment.data),
                    }
                    for position, attachment in enumerate(attachments, start=1)
                ],
                "audit": gen.audit(now),
            }
            self.batches.put(batch)
            for position, contact in enumerate(recipients, start=1):
                # A blocked contact still gets a message, which the platform discards.
                status = "Discarded" if contact["status"] == "Blocked" else "Queued"
                message = gen.new_message(
                    batch, contact, gen.message_id(number, position), status, now, position
                )
                self.messages.put(message)
                if status == "Queued":
                    self.delivery.queued(message, contact)
                self._index_message(message)
                self._message_times[category["id"]].sort()
            return batch

    def _resolve_contact(self, reference: Any) -> Record | None:
        if not isinstance(reference, dict):
            return None
        if reference.get("id"):
            return self.contacts.get(reference["id"])
        email = reference.get("email")
        if isinstance(email, str):
            identifier = self._emails.get(email.strip().casefold())
            return self.contacts.get(identifier) if identifier else None
        return None

    # -- churn ------------------------------------------------------------------------------

    def churn_step(self, events: int = 1) -> None:
        """Apply ``events`` random contact changes: creates, updates, blocks, unblocks, deletes."""
        rng = self._churn_rng
        with self.lock:
            for _ in range(events):
                roll = rng.random()
                if roll < 0.3 or len(self.contacts) == 0:
                    number = self._next_contact
                    first, last = rng.choice(gen.FIRST_NAMES), rng.choice(gen.LAST_NAMES)
                    email = f"{first}.{last}.{number}@churn.test".lower()
                    self.create_contact({"email": email, "name": f"{first} {last}"})
                    self.churn.created += 1
                    continue
                contact = self.contacts.pick(rng)
                if roll < 0.6:
                    self._save({**contact, "name": f"{contact['name'] or ''} Jr.".strip()})
                    self.churn.updated += 1
                elif roll < 0.75:
                    blocked = contact["status"] == "Blocked"
                    self.set_blocked(contact["id"], not blocked, "Complained")
                    if blocked:
                        self.churn.unblocked += 1
                    else:
                        self.churn.blocked += 1
                else:
                    self.delete_contact(contact["id"])
                    self.churn.deleted += 1
                    self.churn.deleted_ids.append(contact["id"])

    def reinsert_step(self, events: int = 1) -> None:
        """Create ``events`` contacts whose ids sort among the existing ones, not after them:
        every row after such an id moves one position later, so a client paging by offset
        meets the row at a page boundary twice."""
        rng = self._churn_rng
        with self.lock:
            for _ in range(events):
                for _attempt in range(20):
                    number = 2 * rng.randrange(1, self._next_contact)  # even: between two
                    identifier = gen.contact_id(number)
                    if self.contacts.get(identifier) is None:
                        break
                else:
                    continue
                email = f"early.{number}@churn.test"
                if email in self._emails:
                    continue
                self._insert_contact(identifier, email, f"Early {number}", [])
                self.churn.reinserted += 1


def _looks_like_email(value: str) -> bool:
    local, _, domain = value.strip().rpartition("@")
    return bool(local) and "." in domain and " " not in value.strip() and len(value) <= 320
