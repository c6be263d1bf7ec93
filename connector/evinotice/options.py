"""The EviNotice batch options (the vendor's PATCH page), as one typed model.

Fields are snake_case in Python and PascalCase on the wire (``cost_centre`` ↔ ``CostCentre``);
either spelling is accepted. Values are checked strictly (a ``"yes"`` is not a boolean, ``True``
is not a number of years), and an error names the wire field and, for a choice, the allowed values.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr
from pydantic import ValidationError as PydanticValidationError
from pydantic.alias_generators import to_pascal

from connector.errors import ConnectorError

__all__ = ["COMMITMENT_OPTIONS", "EviNoticeOptions", "InvalidRequestError", "wire_options"]

COMMITMENT_OPTIONS = ("Disabled", "Accept", "Reject", "AcceptOrReject")

Url = Annotated[StrictStr, Field(pattern=r"^https?://[^\s/]+")]
Text = StrictStr
Texts = list[StrictStr]


class InvalidRequestError(ConnectorError, ValueError):
    """A request that breaks the API's documented rules, caught before it is sent."""


class EviNoticeOptions(BaseModel):
    """The options a batch is created or PATCHed with; unset fields are not sent."""

    model_config = ConfigDict(
        alias_generator=to_pascal, populate_by_name=True, extra="forbid", frozen=True
    )

    description: Text | None = None
    subject: Text | None = None
    issuer_name: Text | None = None
    cost_centre: Text | None = None
    affidavit_kinds: Texts | None = None
    language: Text | None = None
    affidavit_language: Text | None = None
    online_retention_period: Annotated[StrictInt, Field(ge=0)] | None = None  # years
    lta_storage: StrictBool | None = None
    push_notification_url: Url | None = None
    push_notification_filter: Texts | None = None
    push_notification_extra_data: Text | None = None
    commitment_options: Literal["Disabled", "Accept", "Reject", "AcceptOrReject"] | None = None
    commitment_comments_allowed: StrictBool | None = None
    reject_reasons: Texts | None = None
    accept_reasons: Texts | None = None
    require_reject_reason: StrictBool | None = None
    require_accept_reason: StrictBool | None = None
    batch_push_notification_url: Url | None = None
    allow_refusal: StrictBool | None = None

    @classmethod
    def parse(cls, options: Mapping[str, Any]) -> EviNoticeOptions:
        """The model from snake_case or wire names; ``InvalidRequestError`` names each bad field."""
        by_field: dict[str, str] = {}
        for name in options:
            field = _field_name(name)
            if field in by_field:
                raise InvalidRequestError(
                    f"EviNotice option {to_pascal(field)} given twice "
                    f"({by_field[field]!r} and {name!r})"
                )
            by_field[field] = name
        try:
            return cls.model_validate({_field_name(k): v for k, v in options.items()})
        except PydanticValidationError as exc:
            raise InvalidRequestError(_describe(exc)) from None

    def wire(self) -> dict[str, Any]:
        """The set options keyed by wire name; an option set to ``None`` is sent as null."""
        return self.model_dump(by_alias=True, exclude_unset=True)


def wire_options(options: Mapping[str, Any]) -> dict[str, Any]:
    """Options (snake_case or wire names) checked and keyed by wire name."""
    return EviNoticeOptions.parse(options).wire()


_FIELDS = {to_pascal(name): name for name in EviNoticeOptions.model_fields}


def _field_name(name: str) -> str:
    return _FIELDS.get(name, name)


def _describe(exc: PydanticValidationError) -> str:
    problems = []
    for error in exc.errors(include_url=False):
        field = ".".join(to_pascal(str(p)) if isinstance(p, str) else str(p) for p in error["loc"])
        if error["type"] == "extra_forbidden":
            given = error["loc"][0]
            problems.append(
                f"unknown EviNotice option {given!r}; known: {', '.join(sorted(_FIELDS))}"
            )
        elif error["loc"] and error["loc"][0] == "commitment_options":
            problems.append(f"{field} must be one of {', '.join(COMMITMENT_OPTIONS)}")
        else:
            problems.append(f"{field}: {error['msg']}")
    return "; ".join(problems)
