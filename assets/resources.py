"""Dagster resources: the two API clients and the warehouse, configured from the environment.

Settings are filled with ``EnvVar`` where the definitions are wired, so secrets stay out of
the UI and run config. A missing variable stops the run with an error naming it; there is no
silent fallback to the sandbox.
"""

from __future__ import annotations

from dagster import ConfigurableResource
from pydantic import Field

from connector.evinotice.client import EviNoticeClient
from connector.http import ClientLimits
from connector.marketplace.client import MarketplaceClient
from connector.settings import (
    EVINOTICE_BASE_URL,
    EVINOTICE_PASSWORD,
    EVINOTICE_SITE_ID,
    EVINOTICE_USERNAME,
    MPT_API_BASE_URL,
    MPT_API_TOKEN,
    EviNoticeSettings,
    MarketplaceSettings,
)
from connector.warehouse.engine import DEFAULT_WAREHOUSE_URL, Warehouse


class ClientLimitsConfig(ConfigurableResource):
    """Timeouts and limits shared by the API resources."""

    timeout_seconds: float = Field(default=10.0, description="Seconds per request.")
    max_concurrency: int = Field(default=8, description="Requests in flight at once.")
    rate_limit: float | None = Field(
        default=None, description="Client-side cap in requests per second (none if unset)."
    )

    def limits(self) -> ClientLimits:
        return ClientLimits(
            timeout=self.timeout_seconds,
            max_concurrency=self.max_concurrency,
            rate_limit=self.rate_limit,
        )


class MarketplaceResource(ClientLimitsConfig):
    """The SoftwareOne Marketplace Notifications API."""

    base_url: str = Field(description="API base URL (MPT_API_BASE_URL).")
    token: str = Field(description="API token (MPT_API_TOKEN).")

    def client(self) -> MarketplaceClient:
        """A new client; use it as an async context manager."""
        settings = MarketplaceSettings.from_env(
            {MPT_API_BASE_URL: self.base_url, MPT_API_TOKEN: self.token}
        )
        return MarketplaceClient(settings, limits=self.limits())


class EviNoticeResource(ClientLimitsConfig):
    """The EviNotice batches API."""

    base_url: str = Field(description="API base URL (EVINOTICE_BASE_URL).")
    username: str = Field(description="Basic-auth user (EVINOTICE_USERNAME).")
    password: str = Field(description="Basic-auth password (EVINOTICE_PASSWORD).")
    site_id: str = Field(description="Owner site whose batches are synced (EVINOTICE_SITE_ID).")

    def settings(self) -> EviNoticeSettings:
        # Through from_env so an empty value is an error naming its variable, as everywhere.
        return EviNoticeSettings.from_env(
            {
                EVINOTICE_BASE_URL: self.base_url,
                EVINOTICE_USERNAME: self.username,
                EVINOTICE_PASSWORD: self.password,
                EVINOTICE_SITE_ID: self.site_id,
            }
        )

    def client(self) -> EviNoticeClient:
        """A new client; use it as an async context manager."""
        return EviNoticeClient(self.settings(), limits=self.limits())


class WarehouseResource(ConfigurableResource):
    """The SQL warehouse the tables live in (WAREHOUSE_URL, a SQLAlchemy URL)."""

    url: str = Field(
        default=DEFAULT_WAREHOUSE_URL,
        description="SQLAlchemy URL; DuckDB file under data/ by default.",
    )

    def warehouse(self) -> Warehouse:
        """The warehouse, its tables created or upgraded."""
        warehouse = Warehouse(self.url)
        warehouse.ensure_tables()
        return warehouse
