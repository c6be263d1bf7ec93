"""The project's one email rule (connector.emails): what it accepts, normalises and rejects."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from connector.crm import normalize_email
from connector.emails import PLAIN_EMAIL, normalize_unusual

# -- emails --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (" John.Smith@Example.COM ", "john.smith@example.com"),
        ("\u00a0ann@example.com\t", "ann@example.com"),
        ("mailto:Ann@X.org", "ann@x.org"),
        ("MAILTO:ann@x.org?subject=Hello", "ann@x.org"),
        ("Ann Lee <Ann@Example.com>", "ann@example.com"),
        ('"Lee, Ann" <ann@example.com>', "ann@example.com"),
        ("<ann@example.com>", "ann@example.com"),
        ("'ann@example.com'", "ann@example.com"),
        ("ann\u200b@example.com", "ann@example.com"),
        ("o'brien+news@example.co.uk", "o'brien+news@example.co.uk"),
        ("ann@bücher.de", "ann@xn--bcher-kva.de"),
        ("Ann@BÜCHER.DE", "ann@xn--bcher-kva.de"),
        ("ann@é.example", "ann@xn--9ca.example"),
        ("ann@xn--bcher-kva.de", "ann@xn--bcher-kva.de"),
        ("ann@mail.xn--p1ai", "ann@mail.xn--p1ai"),
        ("a" * 64 + "@example.com", "a" * 64 + "@example.com"),
        # RFC 6531: a UTF-8 local part, case-folded and NFC-normalised like the rest.
        ("jörg@example.de", "jörg@example.de"),
        ("JÖRG@Bücher.de", "jörg@xn--bcher-kva.de"),
        ("jo\u0308rg@example.de", "jörg@example.de"),
        ("josé.garcía@example.es", "josé.garcía@example.es"),
        ("用户@例子.广告", "用户@xn--fsqu00a.xn--4rr70v"),
    ],
)
def test_normalize_email_accepts(value: str, expected: str) -> None:
    assert normalize_email(value) == (expected, None)


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("", "empty"),
        ("  ", "empty"),
        ("ann.example.com", "no @ sign"),
        ("ann@@example.com", "more than one @ sign"),
        ("a@b@example.com", "more than one @ sign"),
        ("ann @example.com", "contains spaces"),
        ("a@x.com; b@x.com", "several addresses in one field"),
        ("a@x.com,b@x.com", "several addresses in one field"),
        ("@example.com", "nothing before the @"),
        ("ann@", "nothing after the @"),
        ("ann@localhost", "domain has no dot"),
        ("ann..lee@example.com", "invalid characters or dots before the @"),
        (".ann@example.com", "invalid characters or dots before the @"),
        ("ann(x)@example.com", "invalid characters or dots before the @"),
        ("jö rg@example.de", "contains spaces"),
        ("j☃rg@example.de", "invalid characters or dots before the @"),
        ("jörg..x@example.de", "invalid characters or dots before the @"),
        ("ö" * 33 + "@example.de", "part before the @ is longer than 64 characters"),
        ("ann@-example.com", "invalid domain label '-example'"),
        ("ann@example-.com", "invalid domain label 'example-'"),
        ("ann@exa_mple.com", "invalid domain label 'exa_mple'"),
        ("ann@example..com", "domain has an empty label"),
        ("ann@example.com.", "domain ends with a dot"),
        ("ann@example.123", "top-level domain is numeric"),
        ("ann@[10.0.0.1]", "IP-address domains are not accepted"),
        ("a" * 65 + "@example.com", "part before the @ is longer than 64 characters"),
        ("ann@" + "b" * 64 + ".com", "domain label longer than 63 characters"),
        ("a" * 60 + "@" + ("b" * 60 + ".") * 4 + "com", "longer than 254 characters"),
    ],
)
def test_normalize_email_rejects(value: str, problem: str) -> None:
    assert normalize_email(value) == (None, problem)


def test_normalize_email_rejects_invalid_internationalised_domain() -> None:
    email, problem = normalize_email("ann@☃.com")
    assert email is None
    assert problem is not None
    assert problem.startswith("domain is not a valid internationalised name (")


def test_normalize_email_reuses_unchanged_value() -> None:
    value = "ann@example.com"
    assert normalize_email(value)[0] is value


@given(
    st.from_regex(
        r"[A-Za-z0-9._%+'-]{1,20}@[A-Za-z0-9-]{1,12}(\.[A-Za-z0-9-]{1,8}){1,3}", fullmatch=True
    )
)
def test_plain_fast_path_agrees_with_the_full_rules(value: str) -> None:
    if PLAIN_EMAIL.fullmatch(value):
        assert normalize_unusual(value) == (value.lower(), None)
