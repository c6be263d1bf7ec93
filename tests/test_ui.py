"""The Dagster UI as operators use it: a running ``dagster-webserver`` on loopback, driven
through its GraphQL API the way the UI's buttons are, against a sandbox and a temporary
Dagster instance.

"Materialize all" on a fresh instance succeeds; a UI materialisation of ``contacts`` leads
to the reports that read it being rebuilt once (the automation sensor's evaluation is run
with Dagster's test API, tick by tick, instead of waiting for the daemon); and after
``notifsync demo`` against the same instance, every synced table shows the demo's
materialisation.

The instance launches runs synchronously (``SyncInMemoryRunLauncher``), so a launch answers
once its run has finished: no polling, no sleeps.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from dagster import AssetKey, DagsterInstance, evaluate_automation_conditions

from assets.cli import DEFAULT_SEED
from assets.definitions import LocationSettings, build_definitions
from assets.reporting import REPORTS
from connector.warehouse.tables import TABLE_NAMES
from sandbox.app import Sandbox, SandboxConfig
from sandbox.server import serve_in_thread

PROJECT = Path(__file__).resolve().parent.parent
LOCATION = "assets.definitions"
CONTACTS = 300
INSTANCE_YAML = """\
run_coordinator:
  module: dagster._core.run_coordinator
  class: DefaultRunCoordinator
run_launcher:
  module: dagster._core.launcher.sync_in_memory_run_launcher
  class: SyncInMemoryRunLauncher
telemetry:
  enabled: false
"""
LAUNCH = """
mutation Launch($params: ExecutionParams!) {
  launchPipelineExecution(executionParams: $params) {
    __typename
    ... on LaunchRunSuccess { run { runId status } }
    ... on PythonError { message }
    ... on RunConfigValidationInvalid { errors { message } }
    ... on InvalidSubsetError { message }
  }
}
"""
RUN_STATUS = """
query Run($runId: ID!) {
  runOrError(runId: $runId) { __typename ... on Run { status jobName } }
}
"""
MATERIALIZATIONS = """
query Assets($keys: [AssetKeyInput!]) {
  assetNodes(assetKeys: $keys) {
    assetKey { path }
    assetMaterializations(limit: 50) { runId }
  }
}
"""
FAILURES = """
query Failures($runId: ID!) {
  logsForRun(runId: $runId) {
    ... on EventConnection {
      events {
        __typename
        ... on ExecutionStepFailureEvent { stepKey error { message } }
        ... on RunFailureEvent { message }
      }
    }
  }
}
"""
ALL_ASSETS = """
query { assetNodes { assetKey { path } isExecutable isMaterializable } }
"""


@dataclass
class Ui:
    url: str
    env: dict[str, str]
    home: Path
    cwd: Path

    def graphql(self, query: str, **variables: Any) -> dict[str, Any]:
        # The webserver logs that it serves a moment before it accepts connections: the
        # transport retries a refused connection (with httpx's own backoff).
        with httpx.Client(transport=httpx.HTTPTransport(retries=8), timeout=600) as client:
            response = client.post(
                f"{self.url}/graphql", json={"query": query, "variables": variables}
            )
        body = response.json()
        assert "errors" not in body, body
        return body["data"]

    def materialize(self, keys: list[str], partition: str | None = None) -> dict[str, Any]:
        """What the UI's "Materialize" button sends for these assets (with the partition picked
        in its dialog when a partitioned asset is among them); the finished run."""
        tags = [{"key": "dagster/partition", "value": partition}] if partition else []
        params = {
            "selector": {
                "repositoryLocationName": LOCATION,
                "repositoryName": "__repository__",
                "pipelineName": "__ASSET_JOB",
                "assetSelection": [{"path": [key]} for key in keys],
            },
            "mode": "default",
            "runConfigData": {},
            "executionMetadata": {"tags": tags},
        }
        launched = self.graphql(LAUNCH, params=params)["launchPipelineExecution"]
        assert launched["__typename"] == "LaunchRunSuccess", launched
        run_id = launched["run"]["runId"]
        run = {"runId": run_id, **self.graphql(RUN_STATUS, runId=run_id)["runOrError"]}
        if run["status"] != "SUCCESS":
            events = self.graphql(FAILURES, runId=run_id)["logsForRun"]["events"]
            run["failures"] = [e for e in events if "Failure" in e["__typename"]]
        return run

    def materializations(self, keys: list[str]) -> dict[str, list[str]]:
        """Run ids of each asset's materialisations, newest first."""
        nodes = self.graphql(MATERIALIZATIONS, keys=[{"path": [k]} for k in keys])["assetNodes"]
        return {
            node["assetKey"]["path"][-1]: [m["runId"] for m in node["assetMaterializations"]]
            for node in nodes
        }


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def ui(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Ui]:
    """A sandbox and ``dagster-webserver`` on loopback over a fresh instance and warehouse."""
    root = tmp_path_factory.mktemp("ui")
    home = root / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text(INSTANCE_YAML)
    sandbox = Sandbox(SandboxConfig(contacts=CONTACTS, seed=DEFAULT_SEED))
    with serve_in_thread(sandbox) as sandbox_url:
        config = sandbox.config
        exports = root / "crm_exports"
        # The watched folder is empty, as on a fresh install: "Materialize all" must still
        # succeed (no export is not an error).
        exports.mkdir()
        clean = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("MPT_", "EVINOTICE_", "WAREHOUSE_", "NOTIFSYNC_", "DAGSTER_"))
        }
        env = {
            **clean,
            "MPT_API_BASE_URL": sandbox_url,
            "MPT_API_TOKEN": config.token,
            "EVINOTICE_BASE_URL": sandbox_url,
            "EVINOTICE_USERNAME": config.evinotice_username,
            "EVINOTICE_PASSWORD": config.evinotice_password,
            "EVINOTICE_SITE_ID": config.evinotice_site_id,
            "WAREHOUSE_URL": f"duckdb:///{root / 'warehouse.duckdb'}",
            "CRM_EXPORT_DIR": str(exports),
            "NOTIFSYNC_CHART_DIR": str(root / "charts"),
            "NOTIFSYNC_MESSAGES_START_DATE": "2026-11-01",
            "DAGSTER_HOME": str(home),
            "PYTHONPATH": str(PROJECT),
        }
        port = _free_port()
        command = [sys.executable, "-m", "dagster_webserver", "-w", "workspace.yaml"]
        command += ["-h", "127.0.0.1", "-p", str(port)]
        server = subprocess.Popen(
            command,
            cwd=PROJECT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        serving = threading.Event()
        log: list[str] = []

        def drain() -> None:
            # The webserver says when it serves; its log is read to the end so that it never
            # blocks on a full pipe.
            assert server.stdout is not None
            for line in server.stdout:
                log.append(line)
                if "Serving dagster-webserver on" in line:
                    serving.set()
            serving.set()

        reader = threading.Thread(target=drain, daemon=True)
        reader.start()
        try:
            serving.wait()
            assert server.poll() is None, "".join(log[-50:])
            yield Ui(f"http://127.0.0.1:{port}", env, home, root)
        finally:
            server.terminate()
            server.wait(timeout=120)
            reader.join(timeout=60)


def _evaluate(ui: Ui, cursor: Any = None) -> Any:
    """One tick of the automation sensor against the UI's instance."""
    settings = LocationSettings(messages_start_date=ui.env["NOTIFSYNC_MESSAGES_START_DATE"])
    with DagsterInstance.from_config(str(ui.home)) as instance:
        return evaluate_automation_conditions(
            defs=build_definitions(settings), instance=instance, cursor=cursor
        )


def _requested(result: Any) -> set[str]:
    return {r.name for r in REPORTS if result.get_num_requested(AssetKey(r.name))}


# The tables the sync assets write (sync_state is the connector's own bookkeeping).
SYNCED_TABLE_NAMES = tuple(name for name in TABLE_NAMES if name != "sync_state")


# What "Materialize all" skips on a fresh install (no export, no campaign), and the reports
# that read those tables.
NOTHING_TO_DO = {
    "crm_contacts",
    "crm_rejected_rows",
    "crm_conflicts",
    "platform_contacts_missing_from_crm",
    "reconciliation_plan",
    "pushback_results",
    "reconciliation_runs",
    "campaign_plan",
    "campaign_results",
}
READ_THEM = {"contact_health", "reconciliation_history", "campaign_performance"}


# Dagster's own test API uses a beta parameter internally.
@pytest.mark.filterwarnings("ignore::dagster.BetaWarning")
def test_materialize_all_then_contacts_from_the_ui_rebuilds_the_reports_reading_it_once(
    ui: Ui,
) -> None:
    nodes = ui.graphql(ALL_ASSETS)["assetNodes"]
    everything = [n["assetKey"]["path"][-1] for n in nodes if n["isMaterializable"]]
    assert {r.name for r in REPORTS} <= set(everything)

    # "Materialize all" on a fresh instance, today's partition picked for messages.
    run = ui.materialize(everything, partition=datetime.now(UTC).date().isoformat())
    assert run["status"] == "SUCCESS", str(run)
    latest = ui.materializations(everything)
    skipped = {n for n in everything if not (latest[n] and latest[n][0] == run["runId"])}
    # A fresh install has no CRM export and no campaign: those steps record that there is
    # nothing to do and the steps after them are skipped, with the reports reading their
    # tables. Everything else was materialised by the run.
    assert skipped == NOTHING_TO_DO | READ_THEM, latest

    # The automation sensor's first tick takes what happened so far as its starting point:
    # those reports are built at the next change of an input (the next sync) or by
    # publish_reports.
    tick = _evaluate(ui)
    assert _requested(tick) == set()

    # The UI's "Materialize" on contacts alone.
    contacts = ui.materialize(["contacts"])
    assert contacts["status"] == "SUCCESS", contacts
    tick = _evaluate(ui, tick.cursor)
    readers = {r.name for r in REPORTS if "contacts" in r.deps}
    assert readers and _requested(tick) == readers
    # The automation sensor launches what it requested; then nothing is left to do.
    rebuilt = ui.materialize(sorted(readers))
    assert rebuilt["status"] == "SUCCESS", rebuilt
    tick = _evaluate(ui, tick.cursor)
    assert _requested(tick) == set()

    after = ui.materializations([r.name for r in REPORTS])
    for report in REPORTS:
        # Materialised once more by the rebuild if it reads contacts, else left as it was.
        runs = after[report.name]
        first = [] if report.name in READ_THEM else [run["runId"]]
        if report.name in readers:
            assert runs == [rebuilt["runId"], *first], report.name
        else:
            assert runs == first, report.name


def test_after_the_demo_every_synced_table_shows_its_materialisation(ui: Ui) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "assets.cli", "demo", "--contacts", str(CONTACTS), "--days", "1"],
        cwd=ui.cwd,
        env=ui.env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    # Each step says what it wrote.
    assert "contacts" in done.stdout and "Syncing messages" in done.stdout

    latest = ui.materializations(list(SYNCED_TABLE_NAMES))
    for name in SYNCED_TABLE_NAMES:
        assert latest[name], name
        job = ui.graphql(RUN_STATUS, runId=latest[name][0])["runOrError"]["jobName"]
        assert job in ("sync_platform", "sync_messages"), (name, job)
