"""Prometheus Alertmanager's webhook: the mapping, and Debian's real Alertmanager end to end."""

from __future__ import annotations

import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi.testclient import TestClient
from sqlalchemy import select

from nachtwacht.alerts.external import from_alertmanager, severity_from_label
from nachtwacht.clock import FakeClock, SystemClock
from nachtwacht.store import tables as t
from nachtwacht.store.db import Store
from tests.conftest import IN_CI, free_port
from tests.helpers import settings_for
from tests.test_alerts_external import alerts_app

NOW = 1_800_000_000.0  # 2027-01-15T08:00:00Z

# what Alertmanager 0.25 sends to a webhook_config receiver (payload version 4)
SAMPLE: dict[str, Any] = {
    "receiver": "nachtwacht",
    "status": "firing",
    "alerts": [
        {
            "status": "firing",
            "labels": {
                "alertname": "MariaDBDown",
                "instance": "db1:9104",
                "job": "mysqld",
                "severity": "critical",
            },
            "annotations": {
                "summary": "MariaDB on db1 is down",
                "description": "mysql_up has been 0 for 1 minute.",
            },
            "startsAt": "2027-01-15T07:58:45.828311972+01:00",
            "endsAt": "0001-01-01T00:00:00Z",
            "generatorURL": "http://prometheus:9090/graph?g0.expr=mysql_up+%3D%3D+0&g0.tab=1",
            "fingerprint": "1a30ba71cca2921f",
        },
        {
            "status": "resolved",
            "labels": {"alertname": "HighLoad", "instance": "web1:9100", "severity": "warning"},
            "annotations": {},
            "startsAt": "2027-01-15T06:00:00Z",
            "endsAt": "2027-01-15T06:30:00Z",
            "generatorURL": "",
            "fingerprint": "c6eadffa33fcdf37",
        },
    ],
    "groupLabels": {"alertname": "MariaDBDown"},
    "commonLabels": {"alertname": "MariaDBDown"},
    "commonAnnotations": {},
    "externalURL": "http://alertmanager:9093",
    "version": "4",
    "groupKey": '{}:{alertname="MariaDBDown"}',
    "truncatedAlerts": 0,
}


def test_alertmanager_sample_maps_onto_signals() -> None:
    firing, resolved = from_alertmanager(SAMPLE, NOW)

    assert firing.fingerprint == "am:1a30ba71cca2921f" and firing.source == "alertmanager"
    assert firing.title == "MariaDB on db1 is down"
    assert firing.message.startswith("mysql_up has been 0 for 1 minute.")
    assert "Source: http://prometheus:9090/graph" in firing.message
    assert firing.component == "mysqld"  # job, since there is no component or service label
    assert firing.severity == 1 and firing.firing
    # 07:58:45.828 at +01:00 is 06:58:45.828 UTC, an hour and a bit before NOW
    assert firing.started_at == pytest.approx(NOW - 3600 - 74.172, abs=0.001)
    assert firing.detected_at == NOW
    assert firing.labels["instance"] == "db1:9104"

    assert resolved.fingerprint == "am:c6eadffa33fcdf37" and not resolved.firing
    assert resolved.title == "HighLoad"  # no summary: the alert name (instance is the component)
    assert resolved.component == "web1:9100" and resolved.severity == 3
    assert resolved.message == ""


@pytest.mark.parametrize(
    ("labels", "component"),
    [
        ({"component": "database", "service": "mariadb", "job": "j", "instance": "i"}, "database"),
        ({"service": "mariadb", "job": "j", "instance": "i"}, "mariadb"),
        ({"job": "node", "instance": "i"}, "node"),
        ({"instance": "web1:9100"}, "web1:9100"),
        ({}, "external"),
    ],
)
def test_component_comes_from_the_first_label_present(
    labels: dict[str, str], component: str
) -> None:
    payload = {"alerts": [{"status": "firing", "labels": {"alertname": "A", **labels}}]}
    [signal] = from_alertmanager(payload, NOW)
    assert signal.component == component


def test_title_names_the_instance_when_it_is_not_the_component() -> None:
    payload = {
        "alerts": [
            {
                "status": "firing",
                "labels": {"alertname": "DiskFull", "job": "node", "instance": "a"},
            }
        ]
    }
    assert from_alertmanager(payload, NOW)[0].title == "DiskFull on a"


@pytest.mark.parametrize(
    ("label", "severity"),
    [
        ("critical", 1),
        ("page", 1),
        ("CRITICAL", 1),
        ("high", 2),
        ("error", 2),
        ("major", 2),
        ("warning", 3),
        ("medium", 3),
        ("minor", 3),
        ("info", 3),
        ("low", 3),
        ("disaster", 2),
        (None, 2),
    ],
)
def test_severity_label_maps_onto_s1_s2_s3(label: str | None, severity: int) -> None:
    assert severity_from_label(label) == severity


def test_missing_fingerprint_falls_back_to_a_stable_hash_of_the_labels() -> None:
    def alert(labels: dict[str, str]) -> dict[str, Any]:
        return {"alerts": [{"status": "firing", "labels": labels}]}

    a = from_alertmanager(alert({"alertname": "X", "job": "j"}), NOW)[0].fingerprint
    b = from_alertmanager(alert({"job": "j", "alertname": "X"}), NOW)[0].fingerprint
    c = from_alertmanager(alert({"alertname": "Y", "job": "j"}), NOW)[0].fingerprint
    assert a == b != c and a.startswith("am:")


@pytest.fixture
def am_client(sqlite_store: Store) -> Iterator[TestClient]:
    settings = settings_for("site: am-test\n", sqlite_store.url)
    app, _ = alerts_app(settings, sqlite_store, FakeClock(NOW))
    with TestClient(app) as client:
        yield client


def test_webhook_opens_resolves_and_deduplicates_in_one_request(am_client: TestClient) -> None:
    first = am_client.post("/api/v1/alerts/alertmanager", json=SAMPLE)
    assert first.status_code == 200, first.text
    assert [r["action"] for r in first.json()["alerts"]] == ["opened", "ignored"]

    # Alertmanager re-sends the whole group on every change: the old alert is a duplicate
    again = dict(SAMPLE)
    again["alerts"] = [
        SAMPLE["alerts"][0],
        {**SAMPLE["alerts"][0], "fingerprint": "2b41cb82ddb3a3f0", "labels": {"job": "mysqld"}},
    ]
    second = am_client.post("/api/v1/alerts/alertmanager", json=again).json()["alerts"]
    assert [r["action"] for r in second] == ["deduplicated", "opened"]
    # one outage of a component is one incident
    assert second[0]["incident_id"] == second[1]["incident_id"]

    resolved = {**SAMPLE, "alerts": [{**SAMPLE["alerts"][0], "status": "resolved"}]}
    third = am_client.post("/api/v1/alerts/alertmanager", json=resolved).json()["alerts"]
    assert third[0]["action"] == "resolved"


def test_bad_alert_in_a_notification_refuses_it_whole(
    am_client: TestClient, sqlite_store: Store
) -> None:
    bad = {**SAMPLE, "alerts": [SAMPLE["alerts"][0], {**SAMPLE["alerts"][1], "status": "odd"}]}
    response = am_client.post("/api/v1/alerts/alertmanager", json=bad)
    assert response.status_code == 422
    assert response.json()["field"] == "alerts.1.status"
    with sqlite_store.connect() as conn:
        assert conn.execute(select(t.alerts)).first() is None


# ---------------------------------------------------------------------------- end to end

ALERTMANAGER = shutil.which("prometheus-alertmanager") or "/usr/bin/prometheus-alertmanager"


def _need_alertmanager() -> str:
    if Path(ALERTMANAGER).is_file():
        return ALERTMANAGER
    message = (
        "prometheus-alertmanager is not installed (scripts/install-debian-packages.sh installs it)"
    )
    if IN_CI:
        pytest.fail(f"{message}; CI=true requires it")
    pytest.skip(message)


def _poll(what: str, fetch: Callable[[], Any], done: Callable[[Any], bool], limit: float) -> Any:
    """Poll until `done` (bounded): waiting for another process, not measuring time."""
    end = time.monotonic() + limit
    last: Any = None
    while time.monotonic() < end:
        try:
            last = fetch()
            if done(last):
                return last
        except httpx.HTTPError as exc:
            last = exc
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}; last seen: {last!r}")


@pytest.fixture
def nachtwacht_url(tmp_path: Path) -> Iterator[tuple[str, Store]]:
    """Nachtwacht's alert API served for real by uvicorn, on a tmp SQLite store."""
    store = Store(f"sqlite:///{tmp_path / 'nachtwacht.db'}")
    store.migrate()
    settings = settings_for("site: am-e2e\n", store.url)
    app, _ = alerts_app(settings, store, SystemClock())
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    _poll("nachtwacht to listen", lambda: httpx.get(f"{url}/api/v1/alerts"), bool, 10)
    try:
        yield url, store
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        store.dispose()


@pytest.fixture
def alertmanager(tmp_path: Path, nachtwacht_url: tuple[str, Store]) -> Iterator[str]:
    binary = _need_alertmanager()
    url, _ = nachtwacht_url
    config = tmp_path / "alertmanager.yml"
    config.write_text(
        f"""route:
  receiver: nachtwacht
  group_by: [alertname]
  group_wait: 0s
  group_interval: 1s
  repeat_interval: 1h
receivers:
  - name: nachtwacht
    webhook_configs:
      - url: {url}/api/v1/alerts/alertmanager
        send_resolved: true
""",
        encoding="utf-8",
    )
    port = free_port()
    storage = tmp_path / "am-data"
    storage.mkdir()
    log = (tmp_path / "alertmanager.log").open("wb")
    proc = subprocess.Popen(
        [
            binary,
            f"--config.file={config}",
            f"--storage.path={storage}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--cluster.listen-address=",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    am = f"http://127.0.0.1:{port}"
    try:
        _poll(
            "alertmanager to be ready",
            lambda: httpx.get(f"{am}/-/ready", timeout=2).status_code,
            lambda code: code == 200 or proc.poll() is not None,
            15,
        )
        if proc.poll() is not None:
            raise AssertionError(
                f"alertmanager exited: {(tmp_path / 'alertmanager.log').read_text()}"
            )
        yield am
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def _am_alert(starts: datetime, ends: datetime | None = None) -> list[dict[str, Any]]:
    alert: dict[str, Any] = {
        "labels": {
            "alertname": "RedisDown",
            "service": "redis",
            "instance": "127.0.0.1:6379",
            "severity": "critical",
        },
        "annotations": {
            "summary": "Redis is down",
            "description": "redis_up == 0 for 1 minute",
        },
        "startsAt": starts.isoformat(),
        "generatorURL": "http://prometheus.test/graph?g0.expr=redis_up",
    }
    if ends is not None:
        alert["endsAt"] = ends.isoformat()
    return [alert]


def test_real_alertmanager_opens_and_resolves_an_incident_in_nachtwacht(
    alertmanager: str, nachtwacht_url: tuple[str, Store]
) -> None:
    url, store = nachtwacht_url
    starts = datetime.now(UTC) - timedelta(minutes=2)
    posted = httpx.post(f"{alertmanager}/api/v2/alerts", json=_am_alert(starts), timeout=5)
    assert posted.status_code == 200, posted.text

    firing = _poll(
        "the alert to reach nachtwacht",
        lambda: httpx.get(f"{url}/api/v1/alerts", params={"status": "firing"}, timeout=2).json(),
        lambda alerts: len(alerts) == 1 and alerts[0]["incident_id"] is not None,
        20,
    )[0]
    # the fingerprint is Alertmanager's own, so both systems name the alert the same way
    am_alerts = httpx.get(f"{alertmanager}/api/v2/alerts", timeout=5).json()
    assert firing["fingerprint"] == f"am:{am_alerts[0]['fingerprint']}"
    assert firing["title"] == "Redis is down" and firing["source"] == "alertmanager"
    assert firing["component"] == "redis" and firing["severity"] == 1
    assert firing["started_at"] == starts.isoformat(timespec="seconds").replace("+00:00", "Z")
    with store.connect() as conn:
        incident = (
            conn.execute(select(t.incidents).where(t.incidents.c.id == firing["incident_id"]))
            .mappings()
            .one()
        )
    assert incident["component"] == "redis" and incident["severity"] == 1

    ended = datetime.now(UTC) - timedelta(seconds=5)
    posted = httpx.post(f"{alertmanager}/api/v2/alerts", json=_am_alert(starts, ended), timeout=5)
    assert posted.status_code == 200, posted.text
    resolved = _poll(
        "the resolution to reach nachtwacht",
        lambda: httpx.get(f"{url}/api/v1/alerts", params={"status": "resolved"}, timeout=2).json(),
        lambda alerts: len(alerts) == 1,
        20,
    )[0]
    assert resolved["id"] == firing["id"] and resolved["resolved_at"] is not None
    assert httpx.get(f"{url}/api/v1/alerts", timeout=2).json() == []
