"""Secrets stay out of error messages and of the warehouse URL shown in logs and metadata."""

from __future__ import annotations

import pytest

from connector.errors import ConfigurationError
from connector.settings import MPT_API_BASE_URL, MarketplaceSettings
from connector.warehouse.engine import Warehouse

TOKEN = "eyJhbGciOiJSUzI1NiJ9.SECRET-TOKEN-VALUE"


@pytest.mark.parametrize(
    "value",
    [
        TOKEN,  # the token put in the URL variable by mistake
        f"https//user:{TOKEN}@host",  # a malformed URL carrying credentials
        f"ftp://host/?token={TOKEN}",
        f"https://host/?token={TOKEN}",
        f"http://user:{TOKEN}@example.com",
    ],
)
def test_a_bad_base_url_is_named_but_never_echoed(value: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        MarketplaceSettings.from_env({MPT_API_BASE_URL: value, "MPT_API_TOKEN": "t"})
    assert MPT_API_BASE_URL in str(caught.value)
    assert TOKEN not in str(caught.value)


def test_an_empty_token_is_named() -> None:
    with pytest.raises(ConfigurationError, match="MPT_API_TOKEN"):
        MarketplaceSettings.from_env({MPT_API_BASE_URL: "https://api.example.com"})


def test_the_warehouse_url_shown_hides_passwords_in_userinfo_and_query() -> None:
    warehouse = Warehouse(
        "postgresql+psycopg://analyst:s3cret@127.0.0.1:5432/db?password=q5ecret&sslpassword=zz"
    )
    for shown in (warehouse.url, repr(warehouse)):
        assert "s3cret" not in shown
        assert "q5ecret" not in shown
        assert "zz" not in shown
        assert "analyst" in shown and "127.0.0.1:5432/db" in shown
