"""Helpers for the certified (EviNotice) campaign tests: a campaign, a sandbox client."""

from __future__ import annotations

from typing import Any

import httpx

from connector.campaigns import parse_campaign
from connector.campaigns.model import CertifiedCampaign
from connector.evinotice.client import EviNoticeClient
from connector.http import ClientLimits
from connector.settings import (
    SANDBOX_EVINOTICE_PASSWORD,
    SANDBOX_EVINOTICE_SITE_ID,
    SANDBOX_EVINOTICE_USERNAME,
    EviNoticeSettings,
    Secret,
)

FAST = ClientLimits(timeout=10.0, backoff_base=0.001, backoff_max=0.01, max_attempts=3)


def make_certified(**fields: Any) -> CertifiedCampaign:
    data = {
        "name": "notice",
        "provider": "evinotice",
        "audience": "select * from audience_table",
        "description": "Renewal notice",
        "subject": "Your renewal",
        "issuer_name": "Legal department",
        "body": "Dear {{DisplayName}}, your policy {{policy}} renews.",
        **fields,
    }
    campaign = parse_campaign(data, "notice.yaml")
    assert isinstance(campaign, CertifiedCampaign)
    return campaign


def evinotice_client(
    transport: httpx.AsyncBaseTransport, *, base_url: str = "http://sandbox", **settings: Any
) -> EviNoticeClient:
    return EviNoticeClient(
        EviNoticeSettings(
            base_url=base_url,
            username=SANDBOX_EVINOTICE_USERNAME,
            password=Secret(SANDBOX_EVINOTICE_PASSWORD),
            site_id=SANDBOX_EVINOTICE_SITE_ID,
        ),
        limits=FAST,
        transport=transport,
    )
