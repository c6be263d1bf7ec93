"""Certified (EviNotice) campaigns: the campaign file's fields and options, and the plan —
addresses EviNotice cannot take, placeholders without a column, splitting — on DuckDB and
PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from campaign_support import make_audience, open_warehouse, seed
from certified_support import make_certified

from connector.campaigns import CampaignError, CertifiedCampaign, load_campaign
from connector.campaigns import plan as campaign_plan
from connector.warehouse.engine import Warehouse

COLUMNS = "email, name, legal_name, policy"


@pytest.fixture(params=["duckdb", "postgres"])
def warehouse(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Warehouse]:
    yield from open_warehouse(request.param, tmp_path)


def test_a_certified_campaign_file_is_validated_with_the_options_model(tmp_path: Path) -> None:
    path = tmp_path / "notice.yaml"
    path.write_text(
        "name: notice\nprovider: evinotice\naudience: people\ndescription: Renewal\n"
        "subject: Renewal\nissuer_name: Legal\nbody: Hello {{DisplayName}}\n"
        "send_at: 2026-12-01T09:00:00+01:00\n"
        "options: {language: en, commitment_options: Accept, allow_refusal: true}\n"
    )
    campaign = load_campaign(path)
    assert isinstance(campaign, CertifiedCampaign)
    assert campaign.wire_options() == {
        "Language": "en",
        "CommitmentOptions": "Accept",
        "AllowRefusal": True,
    }
    with pytest.raises(
        CampaignError,
        match=r"options: .*CommitmentOptions must be one of Disabled, Accept, Reject, "
        r"AcceptOrReject",
    ):
        make_certified(options={"commitment_options": "Maybe"})
    with pytest.raises(CampaignError, match=r"options: .*unknown EviNotice option 'colour'"):
        make_certified(options={"colour": "red"})
    with pytest.raises(CampaignError, match=r"options: .*Subject are campaign fields"):
        make_certified(options={"Subject": "x"})
    with pytest.raises(CampaignError, match=r"issuer_name: Input should be a valid string"):
        make_certified(issuer_name=None)
    with pytest.raises(CampaignError, match=r"max_contacts_per_batch: .*100000"):
        make_certified(max_contacts_per_batch=100_001)


def test_a_placeholder_without_a_column_is_an_error_before_anything_is_planned(
    warehouse: Warehouse,
) -> None:
    make_audience(warehouse, [("a@example.com", "Ann", None, "P-1")], COLUMNS)
    campaign = make_certified(body="Dear {{DisplayName}}, policy {{policy}} of {{branch}}.")
    with pytest.raises(CampaignError, match=r"body: placeholder\(s\) \{\{branch\}\} have no"):
        campaign_plan.make_plan(warehouse, campaign, source="notice.yaml", run_id="r")
    assert warehouse.count("campaign_plan") == 0


def test_addresses_evinotice_cannot_take_are_excluded_with_the_reason(
    warehouse: Warehouse,
) -> None:
    seed(warehouse, crm=[{"email": "dne@example.com", "do_not_email": True}])
    make_audience(
        warehouse,
        [
            ("Ann@Example.com", "Ann", "Ann Ltd", "P-1"),
            ("+34 600 123 456", "Bo", None, "P-2"),  # SMS: a phone with its country code
            ("600123456", "Cy", None, "P-3"),  # no country code
            ("not-an-email@", "Di", None, "P-4"),
            (None, "Ed", None, "P-5"),
            ("fi@example.com", None, None, "P-6"),
            ("ann@example.com", "Ann again", None, "P-7"),
            ("dne@example.com", "Gus", None, "P-8"),
        ],
        COLUMNS,
    )
    campaign = make_certified()
    plan = campaign_plan.make_plan(warehouse, campaign, source="notice.yaml", run_id="r")
    guards = campaign_plan.evaluate_guards(plan, campaign)
    assert {g.name: g.passed for g in guards}["category_published"]
    assert {g.name: g.passed for g in guards}["max_snapshot_age"]
    assert plan.recipients == 2
    assert plan.excluded_by_reason == {
        "crm_do_not_email": 1,
        "duplicate": 1,
        "missing_display_name": 1,
        "missing_recipient": 1,
        "unusable_address": 2,
    }
    rows = warehouse.query(
        "select p.email, p.reason, v.legal_name, v.variables from campaign_plan as p "
        "join campaign_plan_variables as v using (campaign, audience_row) "
        "where p.included order by p.email"
    )
    assert [(r[0], r[2]) for r in rows] == [("+34600123456", None), ("ann@example.com", "Ann Ltd")]
    variables = [r[3] if isinstance(r[3], dict) else __import__("json").loads(r[3]) for r in rows]
    assert variables == [{"policy": "P-2"}, {"policy": "P-1"}]


def test_a_large_audience_is_split_into_batches_with_stable_keys(warehouse: Warehouse) -> None:
    make_audience(
        warehouse, [(f"p{n}@example.com", f"P {n}", None, str(n)) for n in range(7)], COLUMNS
    )
    campaign = make_certified(max_contacts_per_batch=3)
    plan = campaign_plan.make_plan(warehouse, campaign, source="notice.yaml", run_id="r")
    assert (plan.recipients, plan.batches) == (7, 3)
    keys = warehouse.query(
        "select batch_key, count(*) from campaign_plan where included group by batch_key"
    )
    assert sorted(n for _, n in keys) == [1, 3, 3]
    again = campaign_plan.make_plan(warehouse, campaign, source="notice.yaml", run_id="r2")
    assert again.batches == 3
    assert set(warehouse.query("select distinct batch_key from campaign_plan where included")) == {
        (k,) for k, _ in keys
    }


def test_the_readme_example_is_a_valid_certified_campaign(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
    section = readme.split("### Certified campaigns", 1)[1]
    example = section.split("```yaml\n", 1)[1].split("```", 1)[0]
    monkeypatch.chdir(tmp_path)
    (tmp_path / "terms.pdf").write_bytes(b"%PDF-1.4 terms")
    path = tmp_path / "renewal.yaml"
    path.write_text(example, encoding="utf-8")
    campaign = load_campaign(path)
    assert isinstance(campaign, CertifiedCampaign)
    assert campaign.wire_options()["CommitmentOptions"] == "AcceptOrReject"
