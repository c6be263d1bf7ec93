"""Certified campaigns in Dagster: the send_campaign job routes a ``provider: evinotice``
file to the EviNotice build, the change_certified_campaign job reverts and reschedules (a
refusal fails the run and is recorded), and the sensor builds a certified file at once
(its send_at is kept by the service)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import yaml
from conftest import load_definitions
from dagster import AssetKey, DagsterInstance, build_sensor_context
from test_campaign_dagster import Platform, materialized, platform, send_job  # noqa: F401

DESCRIPTION = "Dagster notice"


def certified_file(world: Platform, **fields: Any) -> Any:
    send_at = world.sandbox.clock.now() + timedelta(hours=3)
    data = {
        "name": "notice",
        "provider": "evinotice",
        "audience": "select email, name from contacts where status = 'Active' order by id limit 12",
        "description": DESCRIPTION,
        "subject": "Certified",
        "issuer_name": "Legal",
        "body": "Dear {{DisplayName}}",
        "max_contacts_per_batch": 10,
        "send_at": send_at.isoformat(),
        "options": {"language": "en"},
        **fields,
    }
    path = world.folder / "notice.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def change(campaign: str, action: str, at: str | None = None) -> Any:
    defs = load_definitions()
    config = {"campaign": campaign, "action": action, **({"at": at} if at else {})}
    return defs.resolve_job_def("change_certified_campaign").execute_in_process(
        run_config={"ops": {"change_certified_campaign_op": {"config": config}}},
        instance=DagsterInstance.ephemeral(),
        raise_on_error=False,
    )


def ours(world: Platform) -> list[dict[str, Any]]:
    return [
        b
        for b in world.sandbox.truth("evinotice-batches")
        if str(b["Description"]).startswith(DESCRIPTION)
    ]


def test_send_job_builds_a_certified_campaign_and_the_change_job_reverts_it(
    platform: Platform,  # noqa: F811
) -> None:
    path = certified_file(platform)
    result = send_job(path)
    assert result.success, [e.description for e in result.get_asset_check_evaluations()]
    meta = materialized(result)["campaign_results"]
    assert meta["provider"].value == "evinotice" and meta["batches_scheduled"].value == 2
    assert platform.posts.count == 0  # nothing went to the Marketplace
    assert {b["State"] for b in ours(platform)} == {"Scheduled"}
    (report,) = platform.rows("select * from campaign_performance where campaign = 'notice'")
    assert report["status"] == "scheduled" and report["certified_recipients"] == 12

    assert change("notice", "revert").success
    assert {b["State"] for b in ours(platform)} == {"Draft"}
    at = platform.sandbox.clock.now() + timedelta(minutes=5)
    assert change("notice", "reschedule", at.isoformat()).success
    assert {b["State"] for b in ours(platform)} == {"Scheduled"}
    platform.sandbox.clock.advance(3600)
    refused = change("notice", "revert")
    assert not refused.success
    (failure,) = [e for e in refused.all_events if e.event_type_value == "STEP_FAILURE"]
    assert "refused" in str(failure.event_specific_data.error.message)  # type: ignore[union-attr]
    rows = platform.rows("select distinct problem_title from campaign_results")
    assert rows == [{"problem_title": "Revert refused"}]

    # The evidence of the campaign's recipients, read by their LookupKeys.
    platform.sandbox.clock.advance(86400)
    job = load_definitions().get_implicit_global_asset_job_def()
    synced = job.execute_in_process(
        asset_selection=[AssetKey("evinotice_evidence")],
        run_config={"ops": {"evinotice_evidence": {"config": {"campaign": "notice"}}}},
        instance=DagsterInstance.ephemeral(),
        raise_on_error=False,
    )
    assert synced.success
    keys = platform.rows(
        "select e.lookup_key from evinotice_evidence as e "
        "join campaign_batch_recipients as b on e.lookup_key = md5(b.batch_key || '|' || "
        "b.recipient_key)"
    )
    assert len(keys) == 12 == len(platform.rows("select * from evinotice_evidence"))


def test_the_sensor_builds_a_certified_file_at_once(platform: Platform) -> None:  # noqa: F811
    certified_file(platform)
    defs = load_definitions()
    sensor = defs.get_sensor_def("campaign_sensor")
    with DagsterInstance.ephemeral() as instance:
        requests = list(sensor(build_sensor_context(instance=instance)))  # type: ignore[arg-type]
    assert [r.tags["campaign_step"] for r in requests] == ["send"]
