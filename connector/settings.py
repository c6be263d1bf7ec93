"""Connection settings for both APIs, read from environment variables and checked early.

A missing or invalid setting is a ``ConfigurationError`` naming the variable; secret values are
kept in ``Secret`` wrappers so they never show up in a repr, a log line or an exception.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

from connector.errors import ConfigurationError

MPT_API_BASE_URL = "MPT_API_BASE_URL"
MPT_API_TOKEN = "MPT_API_TOKEN"
EVINOTICE_BASE_URL = "EVINOTICE_BASE_URL"
EVINOTICE_USERNAME = "EVINOTICE_USERNAME"
EVINOTICE_PASSWORD = "EVINOTICE_PASSWORD"
EVINOTICE_SITE_ID = "EVINOTICE_SITE_ID"

# Development defaults the sandbox accepts when no credentials are set. They open nothing real.
SANDBOX_TOKEN = "sandbox-token"
SANDBOX_EVINOTICE_USERNAME = "sandbox"
SANDBOX_EVINOTICE_PASSWORD = "sandbox-password"
SANDBOX_EVINOTICE_SITE_ID = "SITE-SANDBOX"


class Secret:
    """A string that refuses to show itself in reprs and formatting."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        """The secret itself, for the one place that must send it."""
        return self._value

    def __repr__(self) -> str:
        return "Secret('********')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


@dataclass(frozen=True)
class MarketplaceSettings:
    """Where the Marketplace API is and the token to reach it."""

    base_url: str
    token: Secret

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> MarketplaceSettings:
        """Read ``MPT_API_BASE_URL`` and ``MPT_API_TOKEN``."""
        env = os.environ if env is None else env
        return cls.create(base_url=env.get(MPT_API_BASE_URL), token=env.get(MPT_API_TOKEN))

    @classmethod
    def create(cls, *, base_url: str | None, token: str | None) -> MarketplaceSettings:
        """Checked settings from plain values; every missing one is named at once."""
        values = require_all({MPT_API_BASE_URL: base_url, MPT_API_TOKEN: token})
        return cls(
            base_url=validate_base_url(values[MPT_API_BASE_URL], MPT_API_BASE_URL),
            token=Secret(values[MPT_API_TOKEN]),
        )


@dataclass(frozen=True)
class EviNoticeSettings:
    """Where the EviNotice API is, its Basic-auth credentials and the owner site to list."""

    base_url: str
    username: str
    password: Secret
    site_id: str

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> EviNoticeSettings:
        """Read the ``EVINOTICE_*`` variables."""
        env = os.environ if env is None else env
        return cls.create(
            base_url=env.get(EVINOTICE_BASE_URL),
            username=env.get(EVINOTICE_USERNAME),
            password=env.get(EVINOTICE_PASSWORD),
            site_id=env.get(EVINOTICE_SITE_ID),
        )

    @classmethod
    def create(
        cls,
        *,
        base_url: str | None,
        username: str | None,
        password: str | None,
        site_id: str | None,
    ) -> EviNoticeSettings:
        """Checked settings from plain values; every missing one is named at once."""
        values = require_all(
            {
                EVINOTICE_BASE_URL: base_url,
                EVINOTICE_USERNAME: username,
                EVINOTICE_PASSWORD: password,
                EVINOTICE_SITE_ID: site_id,
            }
        )
        return cls(
            base_url=validate_base_url(values[EVINOTICE_BASE_URL], EVINOTICE_BASE_URL),
            username=values[EVINOTICE_USERNAME],
            password=Secret(values[EVINOTICE_PASSWORD]),
            site_id=values[EVINOTICE_SITE_ID],
        )


# Said with every missing setting: the way to try the connector without credentials.
SANDBOX_HINT = (
    "to try it without credentials, run `notifsync sandbox` (it prints the settings to "
    "export) or `make demo`"
)


def missing_message(names: Sequence[str]) -> str:
    """One line naming every missing setting and how to use the sandbox instead."""
    verb = "is" if len(names) == 1 else "are"
    return f"{', '.join(names)} {verb} not set; {SANDBOX_HINT}"


def require_all(values: Mapping[str, str | None]) -> dict[str, str]:
    """The stripped values, or one ConfigurationError naming every empty or missing one."""
    missing = [name for name, value in values.items() if not (value or "").strip()]
    if missing:
        raise ConfigurationError(missing_message(missing))
    return {name: (value or "").strip() for name, value in values.items()}


def require(env: Mapping[str, str], name: str) -> str:
    """The non-empty value of ``name``, or a ConfigurationError naming it."""
    return require_all({name: env.get(name)})[name]


def validate_base_url(url: str, name: str) -> str:
    """A base URL without trailing slash; https unless it points at this machine."""
    parts = urlsplit(url.strip())
    # Checked first so the URL is never echoed back while it may hold credentials.
    if "@" in parts.netloc:
        raise ConfigurationError(f"{name} must not carry credentials in the URL")
    # The value itself is never echoed: a misplaced token would land in logs and run errors.
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigurationError(f"{name} must be an http(s) URL with a host")
    if parts.query or parts.fragment:
        raise ConfigurationError(f"{name} must not have a query string or fragment")
    if parts.scheme == "http" and not is_loopback(parts.hostname):
        raise ConfigurationError(
            f"{name} must use https (plain http only for loopback), not http://{parts.hostname}"
        )
    return url.strip().rstrip("/")


def is_loopback(host: str) -> bool:
    """True for localhost and loopback addresses."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
