"""The project's one email rule: normalising and validating an address, wherever it comes from.

CRM exports, the Marketplace row builders (``email_key``) and EviNotice recipients all use it.
``normalize_email`` turns what a cell or field holds (``" John.Smith@Example.COM "``,
``"mailto:ann@x.org"``, ``"Ann Lee <ann@bücher.de>"``) into the form the platform compares
on: trimmed, case-folded, the domain in IDNA ASCII form (``ann@xn--bcher-kva.de``);
``is_valid_email`` answers yes or no. The rule is deliberately strict enough to keep junk out
of a bulk create, not a full RFC 5322 parser: one ``@``, a dot-atom local part up to 64 octets
(ASCII atext, or letters, digits and marks of any script as RFC 6531 allows: ``jörg@…``), a
domain of at least two valid labels with a non-numeric top-level label, 254 characters at most,
no spaces. Quoted local parts and IP-literal domains are rejected; CRMs do not hold such
addresses in practice and the platform's mail path would not deliver them.
"""

from __future__ import annotations

import re
import unicodedata

import idna

MAX_LENGTH = 254
MAX_LOCAL_LENGTH = 64
MAX_LABEL_LENGTH = 63

_ATOM_CHAR = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]"
_ATOM = _ATOM_CHAR + "+"
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
# The common case, decided by one possessive (non-backtracking) regex: plain ASCII, already
# valid, only case to fold. Up to 64 characters every local part and label is within its
# length limit, so longer addresses take the slow path, which checks lengths.
PLAIN_LENGTH = 64
PLAIN_EMAIL = re.compile(
    rf"{_ATOM_CHAR}++(?:\.{_ATOM_CHAR}++)*+@"
    r"(?:[A-Za-z0-9][A-Za-z0-9-]*+(?<!-)\.)++[A-Za-z]{2,63}+"
)
_DOT_ATOM = re.compile(rf"{_ATOM}(?:\.{_ATOM})*")
_ATOM_CHAR_RE = re.compile(_ATOM_CHAR)
_ASCII_LABEL = re.compile(_LABEL)
# Characters that survive str.strip() but are invisible in a spreadsheet cell.
_INVISIBLE = dict.fromkeys(map(ord, "\u200b\u200c\u200d\u2060\ufeff\u00ad"))
_NAME_ADDR = re.compile(r"(?s)(.*)<([^<>]*)>")
_SPACE = re.compile(r"\s")


def normalize_email(value: str) -> tuple[str | None, str | None]:
    """``(normalised email, None)`` for a usable address, else ``(None, why not)``."""
    stripped = value.strip()
    if len(stripped) <= PLAIN_LENGTH and PLAIN_EMAIL.fullmatch(stripped):
        email = stripped.lower()
        # Reuse the original object when nothing changed: a million rows hold it twice.
        return (value if email == value else email), None
    return normalize_unusual(stripped)


def normalize_unusual(value: str) -> tuple[str | None, str | None]:
    """``normalize_email`` for anything but a plain address (IDN, ``mailto:``, junk)."""
    text = value.translate(_INVISIBLE).strip()
    if len(text) > 1 and text[0] == text[-1] and text[0] in "'\"":
        text = text[1:-1].strip()
    if not text:
        return None, "empty"
    match = _NAME_ADDR.fullmatch(text)
    if match:
        text = match.group(2).strip()
    if text[:7].lower() == "mailto:":
        text = text[7:].split("?", 1)[0].strip()
    if text.count("@") > 1 and any(sep in text for sep in ",; "):
        return None, "several addresses in one field"
    if _SPACE.search(text):
        return None, "contains spaces"
    if "@" not in text:
        return None, "no @ sign"
    if text.count("@") > 1:
        return None, "more than one @ sign"
    local, domain = text.split("@")
    if not local:
        return None, "nothing before the @"
    if not domain:
        return None, "nothing after the @"
    if not local.isascii():
        # RFC 6531: a UTF-8 local part. NFC so that "jörg" typed two ways compares equal.
        local = unicodedata.normalize("NFC", local)
    if len(local.encode()) > MAX_LOCAL_LENGTH:
        return None, f"part before the @ is longer than {MAX_LOCAL_LENGTH} characters"
    if not _valid_local(local):
        return None, "invalid characters or dots before the @"
    ascii_domain, problem = _normalize_domain(domain)
    if ascii_domain is None:
        return None, problem
    email = f"{local.lower()}@{ascii_domain}"
    if len(email) > MAX_LENGTH:
        return None, f"longer than {MAX_LENGTH} characters"
    return email, None


def is_valid_email(value: str) -> bool:
    """Whether ``normalize_email`` accepts the value."""
    return normalize_email(value)[0] is not None


def _valid_local(local: str) -> bool:
    if local.isascii():
        return _DOT_ATOM.fullmatch(local) is not None
    for atom in local.split("."):
        if not atom:
            return False
        for char in atom:
            if char.isascii():
                if not _ATOM_CHAR_RE.fullmatch(char):
                    return False
            # Letters, digits and combining marks of any script; not symbols, spaces or
            # invisible format characters, which would only hide junk.
            elif unicodedata.category(char)[0] not in "LMN":
                return False
    return True


def _normalize_domain(domain: str) -> tuple[str | None, str | None]:
    if domain.startswith("["):
        return None, "IP-address domains are not accepted"
    if domain.endswith("."):
        return None, "domain ends with a dot"
    if domain.isascii():
        ascii_domain = domain.lower()
    else:
        try:
            # UTS 46 mapping folds case and width the way browsers and mail servers do.
            ascii_domain = idna.encode(domain, uts46=True).decode("ascii")
        except (idna.IDNAError, UnicodeError) as exc:
            return None, f"domain is not a valid internationalised name ({exc})"
    labels = ascii_domain.split(".")
    if len(labels) < 2:
        return None, "domain has no dot"
    for label in labels:
        if not label:
            return None, "domain has an empty label"
        if len(label) > MAX_LABEL_LENGTH:
            return None, f"domain label longer than {MAX_LABEL_LENGTH} characters"
        if not _ASCII_LABEL.fullmatch(label):
            return None, f"invalid domain label {label!r}"
    if labels[-1].isdigit():
        return None, "top-level domain is numeric"
    return ascii_domain, None
