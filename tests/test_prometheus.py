"""/metrics for Prometheus: the metrics-only token role, the counters and histograms of what
Nachtwacht does, `promtool check metrics/rules`, and Debian's real Prometheus scraping a real
`nachtwacht serve` with a metrics token while a probe fails, an event arrives and a page goes.
"""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import bindparam, update
from typer.testing import CliRunner

from nachtwacht.auth import tokens, users
from nachtwacht.auth.checks import AuthError
from nachtwacht.auth.models import lesser_role, role_allows
from nachtwacht.cli.main import app as main_app
from nachtwacht.clock import FakeClock
from nachtwacht.errors import projects
from nachtwacht.meter import Histogram
from nachtwacht.probes import service as probe_service
from nachtwacht.store import tables as t
from nachtwacht.store.db import Store
from nachtwacht.web.app import create_app
from nachtwacht.web.metrics import accepts_gzip
from tests.browser_fixtures import serving
from tests.conftest import IN_CI, closed_port, free_port
from tests.helpers import settings_for, until_sync

ROOT = Path(__file__).resolve().parents[1]
RULES = ROOT / "docs" / "prometheus-rules.yml"
RULE_TESTS = ROOT / "tests" / "prometheus" / "rules_test.yml"
runner = CliRunner()


def _need(binary: str) -> str:
    found = shutil.which(binary) or f"/usr/bin/{binary}"
    if Path(found).is_file():
        return found
    message = f"{binary} is not installed (scripts/install-debian-packages.sh installs prometheus)"
    if IN_CI:
        pytest.fail(f"{message}; CI=true requires it")
    pytest.skip(message)


def _promtool(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [_need("promtool"), *args], input=stdin, capture_output=True, text=True, timeout=60
    )


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def _value(text: str, name: str, **labels: str) -> float:
    return _samples(text).get((name, tuple(sorted(labels.items()))), 0.0)


# -- the metrics role ------------------------------------------------------------------------


def test_metrics_is_outside_the_role_ladder() -> None:
    assert role_allows("metrics", "metrics")
    for role in ("viewer", "responder", "admin"):
        assert role_allows(role, "metrics")  # every user role may scrape too
        assert not role_allows("metrics", role)
        assert lesser_role("metrics", role) == lesser_role(role, "metrics") == "metrics"
    assert lesser_role("viewer", "admin") == "viewer"


def test_a_user_cannot_have_the_metrics_role(sqlite_store: Store, clock: FakeClock) -> None:
    with sqlite_store.begin() as conn, pytest.raises(AuthError, match="API tokens only"):
        users.add_user(conn, "scraper", "a long password 1", "metrics", clock.now(), actor="t")


def test_a_metrics_token_of_an_admin_is_still_a_metrics_token(
    sqlite_store: Store, clock: FakeClock
) -> None:
    with sqlite_store.begin() as conn:
        users.add_user(conn, "ada", "a long password 1", "admin", clock.now(), actor="t")
        made = tokens.create_token(conn, "scrape", "metrics", clock.now(), actor="t", owner="ada")
        principal = tokens.resolve_token(conn, made["token"], clock.now())
    assert principal is not None and principal.role == "metrics"
    assert principal.allows("metrics") and not principal.allows("viewer")


def test_the_cli_makes_a_metrics_token_and_its_help_lists_the_role(tmp_path: Path) -> None:
    config = tmp_path / "nachtwacht.yaml"
    config.write_text(f"site: t\nstore:\n  url: sqlite:///{tmp_path / 'nw.db'}\n")
    helped = runner.invoke(main_app, ["token", "create", "--help"])
    assert helped.exit_code == 0 and "metrics" in helped.output
    made = runner.invoke(
        main_app, ["token", "create", "prometheus", "--role", "metrics", "--config", str(config)]
    )
    assert made.exit_code == 0, made.output
    assert "'prometheus' (metrics)" in made.output
    assert made.output.splitlines()[1].startswith("nwt_")
    refused = runner.invoke(
        main_app, ["user", "add", "scraper", "--role", "metrics", "--config", str(config)]
    )
    assert refused.exit_code == 2 and "API tokens only" in refused.output


@pytest.fixture
def app_client(sqlite_store: Store, clock: FakeClock) -> Iterator[TestClient]:
    settings = settings_for(
        f"""
site: metrics-test
people:
  contacts:
    - {{id: olga, name: Olga, roles: [oncall_engineer], phone: "+31600000001"}}
probes:
  - {{name: down, kind: tcp, host: 127.0.0.1, port: {closed_port()}, retries: 0,
      component: database, severity: 1}}
""",
        sqlite_store.url,
    )
    with TestClient(create_app(settings, sqlite_store, clock, start_engine=False)) as client:
        yield client


def _token(store: Store, role: str, now: float) -> dict[str, str]:
    with store.begin() as conn:
        made = tokens.create_token(conn, f"t-{role}", role, now, actor="tests")
    return {"Authorization": f"Bearer {made['token']}"}


def _get_paths(routes: list[Any], prefix: str = "") -> Iterator[str]:
    for route in routes:
        if isinstance(route, APIRoute):
            if "GET" in (route.methods or ()) and "{" not in route.path:
                yield prefix + route.path
        elif hasattr(route, "original_router"):  # FastAPI's lazily included router
            context = getattr(route, "include_context", None)
            inner = prefix + (getattr(context, "prefix", "") or "")
            yield from _get_paths(route.original_router.routes, inner)


def test_a_metrics_token_reads_metrics_and_nothing_an_anonymous_caller_cannot(
    app_client: TestClient, sqlite_store: Store, clock: FakeClock
) -> None:
    scrape = _token(sqlite_store, "metrics", clock.now())
    assert app_client.get("/metrics", headers=scrape).status_code == 200
    assert app_client.get("/metrics").status_code == 401
    # every GET route without path parameters: the token gets no more than anonymous does
    paths = sorted(set(_get_paths(app_client.app.routes)) - {"/metrics", "/logout"})  # type: ignore[attr-defined]
    assert "/api/v1/status" in paths and len(paths) > 20
    more = []
    for path in paths:
        anonymous = app_client.get(path, follow_redirects=False).status_code
        token = app_client.get(path, headers=scrape, follow_redirects=False).status_code
        if 200 <= token < 300 and not 200 <= anonymous < 300:
            more.append(f"{path}: {token} (anonymous {anonymous})")
    assert more == []
    contacts = app_client.get("/api/v1/status", headers=scrape)
    assert contacts.status_code == 403
    assert "needs the viewer role" in contacts.json()["detail"]
    # changing anything is refused too
    check = app_client.post("/api/v1/probes/down/check", headers=scrape)
    assert check.status_code == 403


# -- the counters move -----------------------------------------------------------------------


def test_histogram_buckets_are_cumulative_and_le_is_inclusive() -> None:
    hist = Histogram((0.1, 1.0))
    for value in (0.05, 0.1, 0.5, 3.0):
        hist.observe(value)
    assert list(hist.cumulative()) == [("0.1", 2.0), ("1.0", 3.0), ("+Inf", 4.0)]
    assert hist.sum == pytest.approx(3.65)


def test_a_failing_check_moves_the_histogram_and_the_result_counter(
    app_client: TestClient, sqlite_store: Store, clock: FakeClock
) -> None:
    scrape = _token(sqlite_store, "metrics", clock.now())
    before = app_client.get("/metrics", headers=scrape).text
    runtime = app_client.app.state.nw.runtime  # type: ignore[attr-defined]
    assert app_client.post("/api/v1/probes/down/check", headers=_admin(sqlite_store)).is_success
    asyncio.run(runtime.engine.tick_once("health"))
    after = app_client.get("/metrics", headers=scrape).text

    count = "nachtwacht_probe_check_duration_seconds_count"
    assert _value(after, count, kind="tcp") == _value(before, count, kind="tcp") + 1
    inf = "nachtwacht_probe_check_duration_seconds_bucket"
    assert _value(after, inf, kind="tcp", le="+Inf") == _value(after, count, kind="tcp")
    results = "nachtwacht_probe_check_results_total"
    assert _value(before, results, kind="tcp", status="critical") == 0
    assert _value(after, results, kind="tcp", status="critical") == 1
    assert _value(after, results, kind="tcp", status="ok") == 0  # listed before it happens
    ticks = "nachtwacht_engine_tick_duration_seconds_count"
    assert _value(after, ticks, module="health") == _value(before, ticks, module="health") + 1
    assert _value(after, "nachtwacht_engine_module_interval_seconds", module="health") == 15
    # the store's gauges: no incident yet (the alert worker is not running), nothing due
    assert _value(after, "nachtwacht_incidents_open", severity="1") == 0
    assert _value(after, "nachtwacht_outbox_oldest_due_age_seconds") == 0
    assert _value(after, "nachtwacht_spool_backlog_bytes") == 0
    # the old names still answer
    assert ("nachtwacht_probe_checks_total", (("component", "database"), ("kind", "tcp"),
            ("probe", "down"))) in _samples(after)  # fmt: skip

    linted = _promtool("check", "metrics", stdin=after)
    assert linted.returncode == 0, linted.stdout + linted.stderr


def test_error_events_are_counted_accepted_refused_by_reason_and_stored(
    app_client: TestClient, sqlite_store: Store, clock: FakeClock
) -> None:
    scrape = _token(sqlite_store, "metrics", clock.now())
    with sqlite_store.begin() as conn:
        project = projects.add_project(conn, "shop", clock.now(), actor="t", base="http://x")
    before = app_client.get("/metrics", headers=scrape).text
    key = {"sentry_key": project["public_key"]}
    store_url = f"/api/{project['id']}/store/"
    assert app_client.post(store_url, params=key, json={"message": "boom"}).status_code == 200
    assert app_client.post(store_url, params=key, content=b"not json").status_code == 400
    assert app_client.post("/api/9999/store/", json={"message": "x"}).status_code == 401
    app_client.app.state.nw.runtime.drainer.drain_all()  # type: ignore[attr-defined]
    after = app_client.get("/metrics", headers=scrape).text

    def moved(name: str, **labels: str) -> float:
        return _value(after, name, **labels) - _value(before, name, **labels)

    assert moved("nachtwacht_error_events_accepted_total") == 1
    assert moved("nachtwacht_error_events_refused_total", reason="invalid") == 1
    assert moved("nachtwacht_error_events_refused_total", reason="auth") == 1
    assert moved("nachtwacht_error_events_refused_total", reason="too_large") == 0
    assert moved("nachtwacht_error_events_stored_total") == 1
    assert moved("nachtwacht_spool_records_stored_total", kind="error_event") == 1
    assert _value(after, "nachtwacht_spool_backlog_bytes") == 0
    assert _value(after, "nachtwacht_spool_drain_lag_seconds") == 0


def _admin(store: Store) -> dict[str, str]:
    return _token(store, "admin", 1_800_000_000.0)


# -- the per-probe series at scale -----------------------------------------------------------


def _many_probes(store: Store, clock: FakeClock, n: int) -> Any:
    """`n` tcp probes, and a committed state for all but the first (never checked yet)."""
    port = closed_port()
    lines = "\n".join(
        f"  - {{name: p{i:03d}, kind: tcp, host: 127.0.0.1, port: {port}, component: c{i % 7}}}"
        for i in range(n)
    )
    settings = settings_for(f"site: many\nprobes:\n{lines}\n", store.url)
    states = ("ok", "warning", "critical", "pending", "unknown")
    with store.begin() as conn:
        ids = probe_service.sync_probes(conn, settings.probes, clock.now())
        rows = [
            {
                "pid": ids[f"p{i:03d}"],
                "s_state": states[i % len(states)],
                "s_last_check": clock.now() - i,
                "s_last_status": min(i % len(states), 3),
                "s_last_value": i + 0.5,
                "s_last_latency_ms": float(i),
            }
            for i in range(1, n)
        ]
        conn.execute(
            update(t.probe_state)
            .where(t.probe_state.c.probe_id == bindparam("pid"))
            .values(
                state=bindparam("s_state"),
                last_check=bindparam("s_last_check"),
                last_status=bindparam("s_last_status"),
                last_value=bindparam("s_last_value"),
                last_latency_ms=bindparam("s_last_latency_ms"),
            ),
            rows,
        )
    return settings


def test_the_exposition_at_500_probes_parses_and_has_every_probe(
    sqlite_store: Store, clock: FakeClock
) -> None:
    n = 500
    settings = _many_probes(sqlite_store, clock, n)
    scrape = _token(sqlite_store, "metrics", clock.now())
    with TestClient(create_app(settings, sqlite_store, clock, start_engine=False)) as client:
        zipped = client.get("/metrics", headers={**scrape, "Accept-Encoding": "gzip"})
        plain = client.get("/metrics", headers={**scrape, "Accept-Encoding": "identity"})
    assert zipped.headers["content-encoding"] == "gzip"
    assert "content-encoding" not in plain.headers
    assert zipped.text == plain.text  # the same scrape, kept: one render for both
    families = {f.name: f for f in text_string_to_metric_families(plain.text)}

    def by_probe(name: str) -> dict[str, Any]:
        return {s.labels["probe"]: s for s in families[name].samples}

    up, state = by_probe("nachtwacht_probe_up"), by_probe("nachtwacht_probe_state")
    checks = by_probe("nachtwacht_probe_checks")
    names = {f"p{i:03d}" for i in range(n)}
    assert set(up) == set(state) == set(checks) == names
    # one state series per probe, the current one, with its kind and component
    assert len(families["nachtwacht_probe_state"].samples) == n
    assert state["p000"].labels == {"probe": "p000", "kind": "tcp", "component": "c0",
                                     "state": "new"}  # fmt: skip
    assert state["p002"].labels["state"] == "critical" and state["p002"].value == 1
    assert up["p005"].value == 1 and up["p001"].value == 0 and up["p000"].value == 0
    # what the last check said, for every probe that had one
    checked = names - {"p000"}
    status = by_probe("nachtwacht_probe_status")
    latency = by_probe("nachtwacht_probe_latency_seconds")
    value = by_probe("nachtwacht_probe_value")
    last = by_probe("nachtwacht_probe_last_check_timestamp_seconds")
    assert set(status) == set(latency) == set(value) == set(last) == checked
    assert status["p003"].value == 3 and status["p004"].value == 3
    assert latency["p250"].value == pytest.approx(0.25)
    assert value["p250"].value == 250.5
    assert last["p250"].value == pytest.approx(clock.now() - 250)
    # the rest of the scrape is still there
    assert "nachtwacht_probe_check_results" in families
    assert "nachtwacht_engine_module_healthy" in families
    linted = _promtool("check", "metrics", stdin=plain.text)
    assert linted.returncode == 0, linted.stdout + linted.stderr


@pytest.mark.parametrize(
    ("header", "gzip"),
    [
        ("gzip", True),  # what Prometheus sends
        ("deflate, gzip;q=0.5", True),
        ("*", True),
        ("", False),
        ("identity", False),
        ("gzip;q=0", False),
        ("br, GZIP ;q=0.0", False),
    ],
)
def test_gzip_only_when_the_scraper_accepts_it(header: str, gzip: bool) -> None:
    assert accepts_gzip(header) is gzip


def test_per_probe_series_are_kept_5_seconds_and_the_rest_is_read_each_scrape(
    app_client: TestClient, sqlite_store: Store, clock: FakeClock
) -> None:
    scrape = _token(sqlite_store, "metrics", clock.now())
    before = app_client.get("/metrics", headers=scrape).text
    assert app_client.post("/api/v1/probes/down/check", headers=_admin(sqlite_store)).is_success
    kept = app_client.get("/metrics", headers=scrape).text
    clock.advance(5)
    after = app_client.get("/metrics", headers=scrape).text

    probe = {"component": "database", "kind": "tcp", "probe": "down"}
    results = "nachtwacht_probe_check_results_total"
    assert _value(kept, results, kind="tcp", status="critical") == 1  # read at each scrape
    assert _value(kept, "nachtwacht_probe_checks_total", **probe) == _value(
        before, "nachtwacht_probe_checks_total", **probe
    )
    assert _value(after, "nachtwacht_probe_checks_total", **probe) == 1
    assert _value(after, "nachtwacht_probe_status", **probe) == 2


# -- the rules -------------------------------------------------------------------------------


def test_the_shipped_rules_are_valid_and_fire_when_they_should() -> None:
    checked = _promtool("check", "rules", str(RULES))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "SUCCESS" in checked.stdout
    tested = _promtool("test", "rules", str(RULE_TESTS))
    assert tested.returncode == 0, tested.stdout + tested.stderr


# -- a real Prometheus -----------------------------------------------------------------------


class _Hook(BaseHTTPRequestHandler):
    got: list[bytes]

    def do_POST(self) -> None:  # noqa: N802 - the http.server API
        self.got.append(self.rfile.read(int(self.headers.get("content-length", 0))))
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def webhook() -> Iterator[tuple[int, list[bytes]]]:
    got: list[bytes] = []
    handler = type("Hook", (_Hook,), {"got": got})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1], got
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


@contextmanager
def _prometheus(tmp: Path, target: str, token: str) -> Iterator[str]:
    binary = _need("prometheus")
    (tmp / "scrape.token").write_text(token + "\n")
    config = tmp / "prometheus.yml"
    # the scrape config of docs/api.md, with a 1 s interval
    config.write_text(
        f"""global:
  scrape_interval: 1s
  evaluation_interval: 1s
rule_files: [{RULES}]
scrape_configs:
  - job_name: nachtwacht
    authorization:
      type: Bearer
      credentials_file: {tmp / "scrape.token"}
    static_configs: [{{targets: ["{target}"]}}]
""",
        encoding="utf-8",
    )
    port = free_port()
    log = (tmp / "prometheus.log").open("wb")
    proc = subprocess.Popen(
        [
            binary,
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"prometheus exited: {(tmp / 'prometheus.log').read_text()}")
        try:
            return httpx.get(f"{url}/-/ready", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        until_sync(ready, "prometheus to be ready", 60, interval=0.2)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def _query(prom: str, expr: str) -> float | None:
    body = httpx.get(f"{prom}/api/v1/query", params={"query": expr}, timeout=5).json()
    result = body["data"]["result"]
    return float(result[0]["value"][1]) if result else None


def test_real_prometheus_scrapes_with_a_metrics_token_and_sees_the_counters_move(
    tmp_path: Path, webhook: tuple[int, list[bytes]]
) -> None:
    _need("prometheus")
    hook_port, pages = webhook
    target = socket.socket()
    target.bind(("127.0.0.1", 0))
    target.listen(16)  # the database answers, until the test closes it
    config = tmp_path / "nachtwacht.yaml"
    config.write_text(
        f"""site: prometheus-e2e
store: {{url: "sqlite:///{tmp_path / "nw.db"}"}}
engine: {{startup_spread: 0.1s, flush_interval: 0.1s}}
people:
  contacts:
    - {{id: olga, name: Olga, roles: [oncall_engineer], chat: "@olga"}}
notify:
  channels:
    hook: {{kind: webhook, url: "http://127.0.0.1:{hook_port}/hook"}}
probes:
  - {{name: db, kind: tcp, host: 127.0.0.1, port: {target.getsockname()[1]}, interval: 1s,
      retries: 0, component: database, severity: 1}}
""",
        encoding="utf-8",
    )
    made = runner.invoke(
        main_app, ["token", "create", "prometheus", "--role", "metrics", "--config", str(config)]
    )
    assert made.exit_code == 0, made.output
    token = made.output.splitlines()[1]
    store = Store(f"sqlite:///{tmp_path / 'nw.db'}")
    with store.begin() as conn:
        project = projects.add_project(conn, "shop", 0.0, actor="t", base="http://x")
    store.dispose()

    with serving(config, tmp_path, {"db": target}) as server:
        scrape = {"Authorization": f"Bearer {token}"}
        assert httpx.get(f"{server.url}/api/v1/status", headers=scrape).status_code == 403
        host = server.url.removeprefix("http://")
        with _prometheus(tmp_path, host, token) as prom:
            until_sync(
                lambda: (
                    _query(prom, 'up{job="nachtwacht"}') == 1.0
                    and (_query(prom, 'nachtwacht_probe_check_results_total{status="ok"}') or 0) > 0
                ),
                "prometheus to scrape nachtwacht and see a check",
                60,
                interval=0.2,
            )
            zero: dict[str, Any] = {
                "critical": 'nachtwacht_probe_check_results_total{kind="tcp",status="critical"}',
                "raised": 'nachtwacht_alerts_raised_total{source="probe"}',
                "queued": 'nachtwacht_notifications_queued_total{channel="hook"}',
                "sent": 'nachtwacht_notifications_sent_total{channel="hook"}',
                "accepted": "nachtwacht_error_events_accepted_total",
                "stored": "nachtwacht_error_events_stored_total",
            }
            before = {k: _query(prom, q) for k, q in zero.items()}
            assert before == dict.fromkeys(zero, 0.0), before
            checks = 'nachtwacht_probe_check_duration_seconds_count{kind="tcp"}'
            first = _query(prom, checks)
            assert first is not None and first > 0

            target.close()  # the database goes away: the probe fails and pages
            sent = httpx.post(
                f"{server.url}/api/{project['id']}/store/",
                params={"sentry_key": project["public_key"]},
                json={"message": "checkout failed", "level": "error"},
                timeout=10,
            )
            assert sent.status_code == 200, sent.text
            until_sync(lambda: pages, "the page to reach the webhook", 60, interval=0.1)

            def moved() -> bool:
                now = {k: _query(prom, q) or 0.0 for k, q in zero.items()}
                return all(v >= 1 for v in now.values()) and (_query(prom, checks) or 0) > first

            until_sync(moved, "the counters to move in prometheus", 60, interval=0.25)
            # read from the store at most every 5 s: it follows a scrape or two later
            until_sync(
                lambda: _query(prom, 'nachtwacht_incidents_open{severity="1"}') == 1.0,
                "the open S1 incident in prometheus",
                60,
                interval=0.25,
            )
            bucket = 'nachtwacht_probe_check_duration_seconds_bucket{kind="tcp",le="+Inf"}'
            assert _query(prom, bucket) == _query(prom, checks)
            assert _query(prom, 'nachtwacht_engine_tick_duration_seconds_count{module="health"}')
            # the heartbeat rule is loaded and quiet: the engine ticks
            rules = httpx.get(f"{prom}/api/v1/rules", timeout=5).json()["data"]["groups"]
            names = {r["name"]: r["state"] for g in rules for r in g["rules"]}
            assert names["NachtwachtNoEngineHeartbeat"] == "inactive"
            assert names["NachtwachtOutboxStuck"] == "inactive"
            text = httpx.get(f"{server.url}/metrics", headers=scrape, timeout=10).text
    linted = _promtool("check", "metrics", stdin=text)
    assert linted.returncode == 0, linted.stdout + linted.stderr
