"""Campaign files: valid ones load, malformed ones are refused naming the file and field."""

from __future__ import annotations

from pathlib import Path

import pytest

from connector.campaigns import CampaignError, MarketplaceCampaign, load_campaign

GOOD = """\
name: spring-news
audience: |
  select id as contact_id, name
  from contacts
  where status = 'Active'
category: NTC-0000-0001
subject: Spring news
body: Hello!
account: {id: ACC-1000-2000}
buyer: {id: BUY-1, externalIds: {erpCustomerId: ERP-9}}
max_contacts_per_batch: 500
send_at: 2026-12-01T09:00:00+01:00
exclusions: {frequency_cap_days: 3, allow_unknown_emails: false}
guards: {max_recipients: 2000}
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "campaign.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_a_good_file_loads_with_every_field(tmp_path: Path) -> None:
    campaign = load_campaign(write(tmp_path, GOOD))
    assert isinstance(campaign, MarketplaceCampaign)
    assert campaign.send_at_utc is not None and campaign.send_at_utc.hour == 8
    assert campaign.batch_fields() == {
        "category": {"id": "NTC-0000-0001"},
        "subject": "Spring news",
        "body": "Hello!",
        "account": {"id": "ACC-1000-2000"},
        "buyer": {"id": "BUY-1", "externalIds": {"erpCustomerId": "ERP-9"}},
    }
    assert campaign.exclusions.frequency_cap_days == 3
    assert not campaign.audience_is_table
    assert load_campaign(write(tmp_path, GOOD)).content_key() == campaign.content_key()


@pytest.mark.parametrize(
    ("change", "field", "problem"),
    [
        (("category: NTC-0000-0001", "category: NTC-42"), "category", "should match pattern"),
        (("subject: Spring news", "subject: ''"), "subject", "at least 1 character"),
        (("max_contacts_per_batch: 500", "max_contacts_per_batch: 0"), "max_contacts_per_batch",
         "greater than or equal to 1"),
        (("send_at: 2026-12-01T09:00:00+01:00", "send_at: 2026-12-01T09:00:00"), "send_at",
         "timezone"),
        (("guards: {max_recipients: 2000}", "guards: {max_recipient: 2000}"),
         "guards.max_recipient", "unknown field"),
        (("name: spring-news", "name: spring news!"), "name", "should match pattern"),
    ],
)  # fmt: skip
def test_a_bad_field_is_named_with_the_file(
    tmp_path: Path, change: tuple[str, str], field: str, problem: str
) -> None:
    path = write(tmp_path, GOOD.replace(*change))
    with pytest.raises(CampaignError) as caught:
        load_campaign(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: ")
    assert f"{field}: " in message and problem in message


def test_a_missing_field_and_bad_yaml_are_named(tmp_path: Path) -> None:
    with pytest.raises(CampaignError, match=r"campaign.yaml: subject: Field required"):
        load_campaign(write(tmp_path, GOOD.replace("subject: Spring news\n", "")))
    with pytest.raises(CampaignError, match=r"campaign.yaml: not valid YAML at line 3 \(.+\)"):
        load_campaign(write(tmp_path, "name: x\naudience: [unclosed\n"))


def test_an_unknown_provider_is_refused_with_the_known_ones(tmp_path: Path) -> None:
    with pytest.raises(
        CampaignError, match=r"provider: 'sendgrid' is not supported; use marketplace, evinotice"
    ):
        load_campaign(write(tmp_path, GOOD + "provider: sendgrid\n"))


def test_an_attachment_must_exist_and_changes_the_version(tmp_path: Path) -> None:
    with pytest.raises(CampaignError, match=r"attachments.0.path: Value error, attachment file"):
        load_campaign(write(tmp_path, GOOD + "attachments: [{path: nowhere.pdf}]\n"))
    attachment = tmp_path / "terms.pdf"
    attachment.write_bytes(b"%PDF-1.4 one")
    text = GOOD + f"attachments: [{{path: {attachment}}}]\n"
    first = load_campaign(write(tmp_path, text)).content_key()
    attachment.write_bytes(b"%PDF-1.4 two")
    assert load_campaign(write(tmp_path, text)).content_key() != first


def test_a_table_name_is_an_audience_too(tmp_path: Path) -> None:
    query = (
        "audience: |\n  select id as contact_id, name\n  from contacts\n  where status = 'Active'\n"
    )
    campaign = load_campaign(write(tmp_path, GOOD.replace(query, "audience: vip_contacts\n")))
    assert campaign.audience_is_table


def test_the_readme_example_is_a_valid_campaign(tmp_path: Path) -> None:
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("## Campaigns") :]
    example = section[section.index("```yaml") + len("```yaml") : section.index("```\n", 10)]
    campaign = load_campaign(write(tmp_path, example))
    assert campaign.name == "spring-offer" and campaign.exclusions.frequency_cap_days == 7
