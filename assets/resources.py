"""Dagster resources: the two API clients and the warehouse, as typed settings.

Fields are filled with ``EnvVar`` where the definitions are wired (``assets.definitions``), so
secrets stay out of the UI and run config; clients are built from the fields directly. A
missing value stops the run with an error naming every missing variable; there is no silent
fallback to the sandbox.
"""

from __future__ import annotations

import sqlalchemy as sa
from dagster import ConfigurableResource, InitResourceContext
from pydantic import Field, PrivateAttr

from connector.errors import ConfigurationError
from connector.evinotice.client import EviNoticeClient
from connector.http import ClientLimits
from connector.marketplace.client import MarketplaceClient
from connector.settings import EviNoticeSettings, MarketplaceSettings
from connector.warehouse.engine import DEFAULT_WAREHOUSE_URL, WAREHOUSE_URL, Warehouse


class ClientLimitsConfig(ConfigurableResource):
    """Timeouts and limits shared by the API resources."""

    timeout_seconds: float = Field(default=10.0, description="Seconds per request.")
    max_concurrency: int = Field(default=8, description="Requests in flight at once.")
    rate_limit: float | None = Field(
        default=None, description="Client-side cap in requests per second (none if unset)."
    )

    def limits(self) -> ClientLimits:
        """The client limits these fields describe."""
        return ClientLimits(
            timeout=self.timeout_seconds,
            max_concurrency=self.max_concurrency,
            rate_limit=self.rate_limit,
        )


class MarketplaceResource(ClientLimitsConfig):
    """The SoftwareOne Marketplace Notifications API."""

    base_url: str = Field(description="API base URL (MPT_API_BASE_URL).")
    token: str = Field(description="API token (MPT_API_TOKEN).")

    def settings(self) -> MarketplaceSettings:
        """The checked settings; an empty or invalid value is an error naming its variable."""
        return MarketplaceSettings.create(base_url=self.base_url, token=self.token)

    def client(self) -> MarketplaceClient:
        """A new client; use it as an async context manager."""
        return MarketplaceClient(self.settings(), limits=self.limits())


class EviNoticeResource(ClientLimitsConfig):
    """The EviNotice batches API."""

    base_url: str = Field(description="API base URL (EVINOTICE_BASE_URL).")
    username: str = Field(description="Basic-auth user (EVINOTICE_USERNAME).")
    password: str = Field(description="Basic-auth password (EVINOTICE_PASSWORD).")
    site_id: str = Field(description="Owner site whose batches are synced (EVINOTICE_SITE_ID).")

    def settings(self) -> EviNoticeSettings:
        """The checked settings; an empty or invalid value is an error naming its variable."""
        return EviNoticeSettings.create(
            base_url=self.base_url,
            username=self.username,
            password=self.password,
            site_id=self.site_id,
        )

    def client(self) -> EviNoticeClient:
        """A new client; use it as an async context manager."""
        return EviNoticeClient(self.settings(), limits=self.limits())


class WarehouseResource(ConfigurableResource):
    """The SQL warehouse the tables live in (WAREHOUSE_URL, a SQLAlchemy URL)."""

    url: str = Field(
        default=DEFAULT_WAREHOUSE_URL,
        description="SQLAlchemy URL (WAREHOUSE_URL); DuckDB file under data/ by default.",
    )
    _opened: Warehouse | None = PrivateAttr(default=None)

    def setup_for_execution(self, context: InitResourceContext) -> None:
        # Reached once, before any step uses it: a wrong URL, a server that is down or an
        # unknown database fails here with one line instead of one stack trace per step.
        self._opened = open_warehouse(self.url)

    def teardown_after_execution(self, context: InitResourceContext) -> None:
        if self._opened is not None:
            self._opened.dispose()
            self._opened = None

    def warehouse(self) -> Warehouse:
        """The warehouse, its tables created or upgraded."""
        if self._opened is None:
            self._opened = open_warehouse(self.url)
        return self._opened


def open_warehouse(url: str) -> Warehouse:
    """The warehouse at ``url`` with its tables ready, or one ``ConfigurationError`` line
    naming WAREHOUSE_URL, the URL without its password, and the cause."""
    warehouse = Warehouse(url)
    try:
        warehouse.ensure_tables()
    except sa.exc.DBAPIError as exc:
        warehouse.dispose()
        raise ConfigurationError(
            f"{WAREHOUSE_URL}={warehouse.url}: cannot open the warehouse: {_cause(exc, url)}"
        ) from None
    return warehouse


def _cause(exc: sa.exc.DBAPIError, url: str) -> str:
    # The driver's own first line says it best ("Connection refused", "database ... does not
    # exist", "Could not set lock on file ..."); the password is cut out in case it echoes it.
    lines = [line.strip() for line in str(exc.orig).splitlines() if line.strip()]
    cause = lines[0] if lines else type(exc.orig).__name__
    password = sa.engine.make_url(url).password
    return cause.replace(str(password), "***") if password else cause
