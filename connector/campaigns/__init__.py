"""Campaigns: send a message to the people an audience query returns — a typed campaign file,
a plan (every audience row included or excluded with a reason), guards, and a ledger so each
batch is sent exactly once. Marketplace, and certified campaigns through EviNotice."""

from connector.campaigns.model import (
    Campaign,
    CampaignError,
    CertifiedCampaign,
    MarketplaceCampaign,
    load_campaign,
    parse_campaign,
)

__all__ = [
    "Campaign",
    "CampaignError",
    "CertifiedCampaign",
    "MarketplaceCampaign",
    "load_campaign",
    "parse_campaign",
]
