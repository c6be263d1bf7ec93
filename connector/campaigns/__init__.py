"""Campaigns: send a message to the people an audience query returns — a typed campaign file,
a plan (every audience row included or excluded with a reason), guards, and a ledger so each
batch is sent exactly once. Marketplace now; the model and ledger leave room for EviNotice."""

from connector.campaigns.model import (
    Campaign,
    CampaignError,
    MarketplaceCampaign,
    load_campaign,
    parse_campaign,
)

__all__ = [
    "Campaign",
    "CampaignError",
    "MarketplaceCampaign",
    "load_campaign",
    "parse_campaign",
]
