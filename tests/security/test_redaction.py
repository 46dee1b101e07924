"""What a viewer, an evidence bundle or an export sees of the config's secrets: nothing.

One config holds a secret of every kind the schema knows; each test looks where one of the
findings of issue 12 saw it in clear. Pages are read as a viewer through the real app.
"""

from __future__ import annotations

import json
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from nachtwacht.backup import export
from nachtwacht.clock import FakeClock
from nachtwacht.config.loader import load_config
from nachtwacht.config.schema import Settings
from nachtwacht.evidence import service as evidence
from nachtwacht.store import tables as t
from nachtwacht.store.db import Store
from nachtwacht.web.app import create_app
from tests.auth_helpers import add_user, fast_hashing, login  # noqa: F401 - fixture
from tests.conftest import free_port

SMTP_PASS = "SMTP-pass-4711"
DB_PASSWORD = "DB/pass-1138"  # a `/` ended the old URL pattern: the rest was shown
X_AUTH = "XAUTH-secret-7731"
API_SECRET = "APISECRET-value-8842"
BODY_PIN = "BODY-pin-9953"
COMMAND_PASSWORD = "CMD-pass-4242"
SIGNATURE = "SIG0a1b2c3d4e5f6a7b"
DEADMAN_TOKEN = "DEADMAN-token-4c1f9e"
SLACK_HOOK = "SLACKHOOK-secret-0099"
SECRETS = {
    "smtp_pass": SMTP_PASS,
    "database password with a slash": DB_PASSWORD,
    "X-Auth header": X_AUTH,
    "X-Api-Secret-Value header": API_SECRET,
    "http probe body": BODY_PIN,
    "command --password=": COMMAND_PASSWORD,
    "?sig=": SIGNATURE,
    "dead man's switch token": DEADMAN_TOKEN,
    "slack webhook": SLACK_HOOK,
}


def config_text(path: Path, store_url: str) -> str:
    return f"""
site: secrets-test
store:
  url: {store_url}
notify:
  channels:
    chat: {{kind: slack, url: "https://hooks.slack.example/services/T01/B02/{SLACK_HOOK}"}}
watchdog:
  deadman_url: "https://hc-ping.example/{DEADMAN_TOKEN}"
runbooks:
  vars: {{smtp_pass: {SMTP_PASS}}}
evidence:
  dir: "{path.parent / "evidence"}"
  config_files: ["{path}"]
probes:
  - {{name: orders, kind: sql, component: database,
      url: "mysql+pymysql://app:{DB_PASSWORD}@127.0.0.1:{free_port()}/shop"}}
  - name: shop
    kind: http
    url: "https://shop.example/health?sig={SIGNATURE}"
    method: POST
    headers: {{X-Auth: {X_AUTH}, X-Api-Secret-Value: {API_SECRET}, Accept: application/json}}
    body: '{{"login": "monitor", "pin": "{BODY_PIN}"}}'
  - {{name: queue, kind: command, command: "mysqladmin --password={COMMAND_PASSWORD} ping"}}
"""


@dataclass
class Site:
    client: TestClient
    settings: Settings
    store: Store
    clock: FakeClock

    def page(self, path: str) -> str:
        response = self.client.get(path, headers={"Accept": "text/html"})
        assert response.status_code == 200, response.text
        return response.text


@pytest.fixture
def site(
    tmp_path: Path,
    sqlite_store: Store,
    clock: FakeClock,
    fast_hashing: None,  # noqa: F811
) -> Iterator[Site]:
    path = tmp_path / "nachtwacht.yaml"
    path.write_text(config_text(path, sqlite_store.url), encoding="utf-8")
    settings = load_config(path)
    app = create_app(settings, sqlite_store, clock, start_engine=False)
    add_user(sqlite_store, clock, "vic", "viewer")
    with TestClient(app) as client:
        login(client, "vic")
        yield Site(client, settings, sqlite_store, clock)


def leaked(text: str, *names: str) -> list[str]:
    """Which of the named secrets (all when none are named) appear in `text`."""
    return [n for n in (names or SECRETS) if SECRETS[n] in text]


def test_smtp_pass_is_masked_on_the_settings_page(site: Site) -> None:
    html = site.page("/settings")
    assert "smtp_pass" in html  # the key is shown, its value is not
    assert leaked(html, "smtp_pass") == []


def test_a_database_password_containing_a_slash_is_masked_on_settings_and_probe_pages(
    site: Site,
) -> None:
    for path in ("/settings", "/probes/orders"):
        html = site.page(path)
        assert leaked(html, "database password with a slash") == [], path
        assert "pass-1138" not in html, path  # not even the part after the slash
        assert "127.0.0.1" in html, path  # where it points is still readable


def test_http_probe_header_values_and_body_are_masked_on_settings_and_probe_pages(
    site: Site,
) -> None:
    for path in ("/settings", "/probes/shop"):
        html = site.page(path)
        names = ("X-Auth header", "X-Api-Secret-Value header", "http probe body")
        assert leaked(html, *names) == [], path
        assert "X-Api-Secret-Value" in html and "application/json" in html, path


def test_a_command_probes_password_argument_is_masked_on_settings_and_probe_pages(
    site: Site,
) -> None:
    for path in ("/settings", "/probes/queue"):
        html = site.page(path)
        assert leaked(html, "command --password=") == [], path
        assert "mysqladmin --password=" in html, path


def test_a_url_signature_is_masked_on_settings_probe_and_runbook_pages(site: Site) -> None:
    runbooks = site.page("/runbooks")
    assert "https://shop.example/health?sig=" in runbooks  # the built-ins curl {{ site_url }}
    for path in ("/settings", "/probes/shop"):
        assert leaked(site.page(path), "?sig=") == [], path
    assert leaked(runbooks, "?sig=") == []


def test_the_dead_mans_switch_token_is_masked_on_the_settings_page_and_the_api(
    site: Site,
) -> None:
    html = site.page("/settings")
    assert leaked(html, "dead man's switch token") == []
    assert "https://hc-ping.example/" in html
    watchdog = site.client.get("/api/v1/watchdog").text
    assert leaked(watchdog, "dead man's switch token") == []


def test_no_page_or_api_a_viewer_reads_shows_any_secret(site: Site) -> None:
    pages = ["/settings", "/probes/orders", "/probes/shop", "/probes/queue", "/runbooks"]
    for path in pages:
        assert leaked(site.page(path)) == [], path
    for path in ("/api/v1/probes", "/api/v1/probes/shop", "/api/v1/status", "/api/v1/watchdog"):
        answer = site.client.get(path)
        assert answer.status_code == 200, path
        assert leaked(answer.text) == [], path


def test_healthz_shows_none_of_the_configs_secrets(site: Site) -> None:
    site.client.cookies.clear()  # anonymous, as a load balancer asks
    assert leaked(site.client.get("/healthz").text) == []


def test_an_evidence_bundle_holds_none_of_the_configs_secrets(site: Site) -> None:
    bundle = evidence.capture_bundle(site.store, site.settings, site.clock)
    path = Path(bundle["path"])
    with tarfile.open(path, "r:gz") as tar:
        files = {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}  # type: ignore[union-attr]
    copy = next(data for name, data in files.items() if name.endswith("nachtwacht.yaml"))
    assert b"hooks.slack.example" in copy and b"smtp_pass" in copy  # the copy is there
    for name, data in files.items():
        assert leaked(data.decode("utf-8", errors="replace")) == [], name


def test_an_export_holds_none_of_the_probes_secrets(site: Site, tmp_path: Path) -> None:
    out = tmp_path / "export.json"
    now = site.clock.now()
    export.export(site.store, out, since=None, until=now + 1, now=now, site="secrets-test")
    text = out.read_text(encoding="utf-8")
    assert {p["name"] for p in json.loads(text)["probes"]} == {"orders", "shop", "queue"}
    assert leaked(json.dumps(json.loads(text), ensure_ascii=False)) == []


def test_the_stored_probe_configs_hold_no_secret(site: Site) -> None:
    # the probes table goes into backups and store dumps: it keeps what pages show
    with site.store.connect() as conn:
        stored = "\n".join(conn.execute(select(t.probes.c.config_json)).scalars())
    assert "shop.example" in stored and leaked(stored) == []
