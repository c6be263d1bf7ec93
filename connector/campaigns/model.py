"""The campaign file: a typed model per provider, loaded from YAML (or run config) with errors
that name the file and the field.

A campaign's ``name`` is its stable key (the ledger and "already reached" are per name); its
``content_key`` changes whenever anything that shapes the email changes, so a changed file is
a new version of the same campaign.
"""

from __future__ import annotations

import hashlib
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Literal

import orjson
import yaml
from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    field_validator,
)

from connector.errors import ConnectorError
from connector.evinotice.options import EviNoticeOptions

PROVIDERS = ("marketplace", "evinotice")
# A table or view name (optionally schema-qualified) rather than a query.
_TABLE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)?")


class CampaignError(ConnectorError, ValueError):
    """A campaign cannot be used: bad file, bad field, or a state that forbids the request."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Exclusions(_Strict):
    """Who is left out beyond the rules that always apply."""

    frequency_cap_days: int = Field(
        default=7,
        ge=0,
        description="Skip contacts messaged in this category within N days (0 = off).",
    )
    allow_unknown_emails: bool = Field(
        default=False,
        description="Send by email to addresses the synced contacts do not have.",
    )


class GuardLimits(_Strict):
    """Limits a plan must stay within unless a person overrides them with a reason."""

    max_recipients: int = Field(
        default=10_000, ge=0, description="Most recipients one campaign may send to."
    )
    max_excluded_share: float = Field(
        default=0.5, ge=0, le=1, description="Most audience rows that may be excluded."
    )
    max_snapshot_age_hours: float = Field(
        default=2.0, gt=0, description="Oldest contacts sync a plan may be made from."
    )
    max_send_delay_minutes: float = Field(
        default=60.0, ge=0, description="How late after send_at a campaign may still go out."
    )


class Reference(_Strict):
    id: Annotated[str, Field(min_length=1)]


class BuyerExternalIds(_Strict):
    erpCustomerId: str | None = None


class Buyer(_Strict):
    id: str | None = None
    externalIds: BuyerExternalIds | None = None


class CampaignBase(_Strict):
    """What every provider's campaign has."""

    name: Annotated[
        str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$", description="Stable key.")
    ]
    provider: str
    description: str = ""
    audience: Annotated[
        str,
        Field(
            min_length=1,
            description="A SQL select returning contact_id or email (and name), or a table/view.",
        ),
    ]
    max_contacts_per_batch: int = Field(default=1000, ge=1, le=100_000)
    send_at: AwareDatetime | None = Field(
        default=None, description="When to send (with a time zone); none = when the run starts."
    )
    exclusions: Exclusions = Exclusions()
    guards: GuardLimits = GuardLimits()

    @field_validator("audience")
    @classmethod
    def _audience_not_blank(cls, value: str) -> str:
        text = value.strip().rstrip(";").strip()
        if not text:
            raise ValueError("the audience is empty")
        return text

    @property
    def audience_is_table(self) -> bool:
        """True when the audience names a table or view instead of giving a query."""
        return bool(_TABLE_NAME.fullmatch(self.audience))

    @property
    def send_at_utc(self) -> datetime | None:
        return self.send_at.astimezone(UTC) if self.send_at else None

    def content_key(self) -> str:
        """A hash of everything that shapes the campaign (attachments by content)."""
        data = self.model_dump(mode="json")
        for attachment in data.get("attachments") or []:
            path = Path(attachment["path"])
            attachment["sha256"] = (
                hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None
            )
        return hashlib.sha256(orjson.dumps(data, option=orjson.OPT_SORT_KEYS)).hexdigest()[:32]


class Attachment(_Strict):
    """A file sent with every email of the campaign."""

    path: Path
    name: str | None = None

    @field_validator("path")
    @classmethod
    def _exists(cls, value: Path) -> Path:
        if not value.is_file():
            raise ValueError(f"attachment file {value} does not exist")
        return value


class MarketplaceCampaign(CampaignBase):
    """A Marketplace campaign: one Create Batch per chunk of the audience."""

    provider: Literal["marketplace"] = "marketplace"
    category: Annotated[str, Field(pattern=r"^NTC-\d{4}-\d{4}$", description="Category id.")]
    subject: Annotated[str, Field(min_length=1, max_length=998)]
    body: Annotated[str, Field(min_length=1)]
    account: Reference | None = None
    buyer: Buyer | None = None
    attachments: list[Attachment] = []

    def batch_fields(self) -> dict[str, Any]:
        """The Create Batch fields every chunk shares (contacts are added per chunk)."""
        fields: dict[str, Any] = {
            "category": {"id": self.category},
            "subject": self.subject,
            "body": self.body,
        }
        if self.account is not None:
            fields["account"] = self.account.model_dump()
        if self.buyer is not None:
            fields["buyer"] = self.buyer.model_dump(exclude_none=True)
        return fields


class CertifiedCampaign(CampaignBase):
    """A certified campaign through EviNotice: one batch per chunk of the audience (at most
    100,000 recipients each), built, configured and scheduled on the service."""

    provider: Literal["evinotice"] = "evinotice"
    description: Annotated[str, Field(min_length=1, max_length=200)]
    subject: Annotated[str, Field(min_length=1, max_length=998)]
    issuer_name: Annotated[str, Field(min_length=1)]
    body: Annotated[
        str, Field(min_length=1, description="Raw text; {{Variable}} from audience columns.")
    ]
    attachments: list[Attachment] = []
    options: dict[str, Any] = Field(
        default_factory=dict,
        description="EviNotice options (cost_centre, language, commitment_options, ...).",
    )

    @field_validator("options")
    @classmethod
    def _known_options(cls, value: dict[str, Any]) -> dict[str, Any]:
        parsed = EviNoticeOptions.parse(value)  # InvalidRequestError names field and values
        core = {"Description", "Subject", "IssuerName"} & parsed.wire().keys()
        if core:
            raise ValueError(
                f"{', '.join(sorted(core))} are campaign fields (description, subject, "
                "issuer_name), not options"
            )
        return value

    def wire_options(self) -> dict[str, Any]:
        """The options as the PATCH sends them (wire names)."""
        return EviNoticeOptions.parse(self.options).wire()


# One model per provider.
CAMPAIGN_MODELS: dict[str, type[CampaignBase]] = {
    "marketplace": MarketplaceCampaign,
    "evinotice": CertifiedCampaign,
}
Campaign = MarketplaceCampaign


def parse_campaign(data: Any, source: str = "campaign") -> CampaignBase:
    """Validate a campaign given as a mapping (run config or parsed YAML)."""
    if not isinstance(data, dict):
        raise CampaignError(f"{source}: a campaign must be a mapping of fields")
    provider = data.get("provider", "marketplace")
    model = CAMPAIGN_MODELS.get(provider) if isinstance(provider, str) else None
    if model is None:
        known = ", ".join(CAMPAIGN_MODELS)
        raise CampaignError(f"{source}: provider: {provider!r} is not supported; use {known}")
    try:
        return TypeAdapter(model).validate_python(data)
    except ValidationError as exc:
        raise CampaignError(f"{source}: " + "; ".join(_describe(e) for e in exc.errors())) from None


def load_campaign(path: Path | str) -> CampaignBase:
    """Read a campaign YAML file; errors name the file and the field."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise CampaignError(f"{path}: cannot read the campaign file ({exc})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None)
        raise CampaignError(
            f"{path}: not valid YAML{where}" + (f" ({problem})" if problem else "")
        ) from None
    return parse_campaign(data, str(path))


def _describe(error: Any) -> str:
    field = ".".join(str(p) for p in error["loc"]) or "(file)"
    message = error["msg"]
    if error["type"] == "extra_forbidden":
        message = "unknown field"
    return f"{field}: {message}"
