"""Nobody can be paged, and everyone can see it (issue 11, item 6).

The product's default is the config `nachtwacht init` writes: no channel, nobody to page. From
there: the timeline says what was queued and what was NOT delivered (never "paging X" when
nothing was queued for X), `/healthz` and `status` say degraded with the reason, the overview
and incident pages show a banner, `config validate` warns, and `init` shows the first edit.
"""

from __future__ import annotations

import json
import re
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from nachtwacht.alerts import service as alerts
from nachtwacht.cli.main import app as cli
from nachtwacht.clock import FakeClock, SystemClock
from nachtwacht.config import starter
from nachtwacht.config.loader import load_config, parse_config
from nachtwacht.config.schema import Settings
from nachtwacht.engine.runtime import Runtime
from nachtwacht.store.db import Store
from nachtwacht.watchdog.doctor import check_channels
from nachtwacht.web.app import create_app
from tests.helpers import admin_token
from tests.incident_fixtures import events, local, outbox, probe_signal, tick

runner = CliRunner()
NIGHT = local(2026, 12, 2, 3, 0)
TOKEN = "test-token_0123456789"
STARTER_STORE = "sqlite:///data/nachtwacht.db"

# the protocol's people, as docs/people.md introduces them
PEOPLE = """
people:
  contacts:
    - {id: olga, name: Olga Oncall, roles: [oncall_engineer], email: olga@example.org,
       backup: tina}
    - {id: tina, name: Tina Techlead, roles: [technical_lead], phone: "+31600000002"}
"""
MAIL = """
notify:
  channels:
    mail: {kind: email, host: 127.0.0.1, port: 2525, starttls: false}
"""
CHAT = """
notify:
  channels:
    chat: {kind: slack, url: "http://127.0.0.1:9/hook"}
"""
# someone for every step of the protocol's matrix, reached by email
EVERYONE = """
people:
  contacts:
    - {id: olga, name: Olga Oncall, email: olga@example.org,
       roles: [oncall_engineer, technical_lead, management, executives]}
"""


def starter_text() -> str:
    """What `nachtwacht init` writes on a host with no services (detection passed in)."""
    return starter.host_config(open_ports=set(), mounts=["/"], token=TOKEN, hostname="shop")


def init_settings(store: Store, extra: str = "") -> Settings:
    text = starter_text().replace(STARTER_STORE, store.url)
    return parse_config(text + extra, "nachtwacht.yaml")


def _fire(store: Store, settings: Settings, now: float) -> int:
    with store.begin() as conn:
        out = alerts.process(conn, settings, probe_signal("disk-root", "host", 1, now), now)
    assert out.incident_id is not None
    return out.incident_id


def _unacknowledged_for(store: Store, settings: Settings, minutes: int) -> int:
    clock = FakeClock(NIGHT)
    incident_id = _fire(store, settings, clock.now())
    for _ in range(minutes // 5):
        tick(store, settings, clock.advance(300))
    return incident_id


# -- the timeline says what was queued, and what was NOT delivered --------------------------


def test_with_the_init_config_the_timeline_says_nobody_was_paged(sqlite_store: Store) -> None:
    settings = init_settings(sqlite_store)
    incident_id = _unacknowledged_for(sqlite_store, settings, 15)
    assert outbox(sqlite_store) == []
    timeline = events(sqlite_store, incident_id)
    assert "notification_queued" not in [k for k, _ in timeline]
    missed = [m for k, m in timeline if k == "not_delivered"]
    assert missed[0] == (
        "page NOT delivered: no notification channel is configured (notify.channels); "
        "nobody is on call (no rotation has anyone, no contact has the role oncall_engineer)"
    )
    # the technical lead at 15 min
    assert (
        "notification NOT delivered: no notification channel is configured (notify.channels); "
        "nobody has the role technical_lead"
    ) in missed


def test_people_but_no_channel_never_claims_a_page(sqlite_store: Store) -> None:
    """The reported case: "paging backup Tina Techlead" with no outbox row."""
    settings = init_settings(sqlite_store, PEOPLE)
    incident_id = _unacknowledged_for(sqlite_store, settings, 15)
    assert outbox(sqlite_store) == []
    timeline = events(sqlite_store, incident_id)
    assert not [m for _, m in timeline if "paging" in m.lower()], timeline
    missed = [m for k, m in timeline if k == "not_delivered"]
    assert "no channel reaches Olga Oncall (oncall_engineer)" in missed[0]
    # page 3 adds the backup; nothing can carry it to her either
    assert any("no channel reaches Tina Techlead (technical_lead)" in m for m in missed[1:])
    backup = [m for k, m in timeline if k == "escalated" and "backup" in m]
    assert backup[0] == "page 3: not acknowledged yet; backup Tina Techlead added"


def test_the_timeline_names_only_who_a_message_was_queued_for(sqlite_store: Store) -> None:
    # email only: Olga has an address, her backup Tina only a phone
    settings = init_settings(sqlite_store, PEOPLE + MAIL)
    incident_id = _unacknowledged_for(sqlite_store, settings, 10)
    assert {r["contact"] for r in outbox(sqlite_store)} == {"olga"}
    timeline = events(sqlite_store, incident_id)
    queued = [m for k, m in timeline if k == "notification_queued"]
    assert queued[-1] == "page queued for Olga Oncall via mail"  # page 3
    assert (
        "not_delivered",
        "page NOT delivered: no channel reaches Tina Techlead (technical_lead)",
    ) in timeline


def test_a_role_nobody_holds_is_not_delivered_even_when_the_team_chat_hears_it(
    sqlite_store: Store,
) -> None:
    settings = init_settings(sqlite_store, PEOPLE + CHAT)
    incident_id = _unacknowledged_for(sqlite_store, settings, 30)
    timeline = events(sqlite_store, incident_id)
    step3 = timeline.index(next(e for e in timeline if e[1].startswith("Management notification")))
    assert timeline[step3 + 1] == (
        "notification_queued",
        "notification queued for team channels via chat",
    )
    assert timeline[step3 + 2] == (
        "not_delivered",
        "notification NOT delivered: nobody has the role management",
    )


# -- /healthz, `status` and /api/v1/status ----------------------------------------------------


@contextmanager
def serving(store: Store, clock: FakeClock, extra: str = "") -> Iterator[TestClient]:
    """The app on the init config, every engine module just ticked: only paging can differ."""
    token = admin_token(store, clock.now())
    app = create_app(init_settings(store, extra), store, clock, start_engine=False)
    with TestClient(app, headers={"Authorization": f"Bearer {token}"}) as client:
        for module in client.app.state.nw.runtime.engine.modules.values():
            module.health.last_ok = clock.now()
        yield client


@pytest.fixture
def http(sqlite_store: Store, clock: FakeClock) -> Iterator[TestClient]:
    with serving(sqlite_store, clock) as client:
        yield client


def test_healthz_is_degraded_with_the_reason_when_nobody_can_be_paged(
    sqlite_store: Store, clock: FakeClock
) -> None:
    with serving(sqlite_store, clock) as http:
        response = http.get("/healthz")
        status = http.get("/api/v1/status").json()
    assert response.status_code == 503  # as for a store that is down: the watcher pages
    body = response.json()
    assert body["status"] == "degraded"
    assert all(m["healthy"] for m in body["modules"]) and body["store"]["available"]
    assert body["paging"]["ok"] is False
    assert "no notification channel is configured" in body["paging"]["problems"][0]
    assert "nobody can be paged" in body["summary"]
    assert status["overall"] == "degraded" and status["paging"]["ok"] is False

    # the same server with someone to page and a channel to reach her: ok
    with serving(sqlite_store, clock, EVERYONE + MAIL) as client:
        healthy = client.get("/healthz")
    assert healthy.status_code == 200, healthy.json()
    assert healthy.json()["paging"] == {"ok": True, "problems": []}


async def test_status_is_degraded_when_nobody_can_be_paged(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        config = tmp_path / "nachtwacht.yaml"
        config.write_text(
            "site: shop\nprobes:\n  - {name: web, kind: tcp, host: 127.0.0.1, "
            f"port: {sock.getsockname()[1]}, component: web}}\n" + PEOPLE,
            encoding="utf-8",
        )
        rt = Runtime.build(load_config(config), clock=FakeClock(SystemClock().now()))
        await rt.scheduler.run_now()
        await rt.engine.tick_once("health")
        await rt.stop()
        rt.store.dispose()
    result = runner.invoke(cli, ["status", "--config", str(config)])
    assert result.exit_code == 1, result.output  # every probe is ok: degraded by paging alone
    assert "shop: DEGRADED" in result.output
    assert "PAGING BROKEN: no notification channel is configured" in result.output
    data = json.loads(runner.invoke(cli, ["status", "--json", "-c", str(config)]).output)
    assert data["overall"] == "degraded" and not data["paging"]["ok"]


def test_doctor_uses_the_same_verdict(sqlite_store: Store) -> None:
    # a channel, but not one that reaches the on-call engineer
    settings = init_settings(
        sqlite_store,
        """
people:
  contacts: [{id: olga, name: Olga Oncall, roles: [oncall_engineer], phone: "+31600000001"}]
"""
        + MAIL,
    )
    [paging] = [c for c in check_channels(settings) if c.name == "paging"]
    assert paging.level == "warn"
    from nachtwacht.notify.reach import paging_problems  # the one check everything shares

    assert paging.message == paging_problems(settings)[0]
    assert "no channel reaches Olga Oncall (oncall_engineer)" in paging.message


# -- the overview and the incident page -----------------------------------------------------


def test_the_overview_and_the_incident_page_show_a_banner(
    sqlite_store: Store, clock: FakeClock, http: TestClient
) -> None:
    overview = http.get("/", headers={"Accept": "text/html"})
    assert overview.status_code == 200
    assert 'id="paging-banner"' in overview.text and "Nobody can be paged" in overview.text

    made = http.post("/api/v1/incidents", json={"title": "Checkout is down", "severity": 1})
    assert made.status_code == 201, made.text
    page = http.get(f"/incidents/{made.json()['id']}", headers={"Accept": "text/html"}).text
    banner = page[page.index('id="incident-paging-banner"') :].split("</section>")[0]
    assert "Nobody was paged for this incident" in banner
    assert "page NOT delivered: no notification channel is configured" in banner
    assert 'data-kind="not_delivered"' in page


def test_no_banner_when_the_first_page_reaches_someone(
    sqlite_store: Store, clock: FakeClock
) -> None:
    with serving(sqlite_store, clock, EVERYONE + MAIL) as client:
        assert "paging-banner" not in client.get("/", headers={"Accept": "text/html"}).text
        made = client.post("/api/v1/incidents", json={"title": "Checkout is down", "severity": 1})
        page = client.get(f"/incidents/{made.json()['id']}", headers={"Accept": "text/html"})
    assert "paging-banner" not in page.text


# -- config validate and init ---------------------------------------------------------------


def test_validate_warns_about_the_init_config_and_still_passes(tmp_path: Path) -> None:
    path = tmp_path / "nachtwacht.yaml"
    written = runner.invoke(cli, ["init", "-o", str(path)])
    assert written.exit_code == 0
    assert "nobody is paged until you fill in its `people:` and `notify:`" in written.stdout
    result = runner.invoke(cli, ["config", "validate", "-c", str(path)])
    assert result.exit_code == 0, result.output  # warnings, not errors
    assert re.fullmatch(rf"{re.escape(str(path))}: ok \(.*; 7 warnings\)\n", result.stdout)
    warnings = result.stderr.splitlines()
    assert warnings[0] == (
        f"warning: {path}: notify.channels: no notification channel is configured: nobody "
        "can be paged; add an email, chat, webhook or SMS channel (docs/notifications.md)"
    )
    assert any(
        "incidents.policies.protocol.steps[1].notify: 'role:technical_lead': nobody has the "
        "role technical_lead, so 'Technical lead notification' pages no one" in w
        for w in warnings
    )


def test_validate_points_at_the_person_no_channel_reaches(tmp_path: Path) -> None:
    path = tmp_path / "nachtwacht.yaml"
    path.write_text(
        "probes: []\n"
        + EVERYONE
        + "    - {id: tina, name: Tina Techlead, roles: [technical_lead], phone: '+31600000002'}\n"
        + MAIL
        + "incidents: {public_url: 'https://nachtwacht.example.org'}\n",
        encoding="utf-8",
    )
    result = runner.invoke(cli, ["config", "validate", "-c", str(path)])
    assert result.exit_code == 0, result.output
    assert result.stderr == (
        f"warning: {path}:7: people.contacts[1]: no configured channel reaches Tina Techlead "
        "(technical_lead); give them email or add a chat or webhook channel\n"
    )
    from nachtwacht.config.loader import config_warnings
    from nachtwacht.notify.reach import config_warnings as reach_warnings

    warnings = config_warnings(load_config(path), path, checks=[reach_warnings])
    assert [str(w) for w in warnings] == [result.stderr.removeprefix("warning: ").strip()]


@pytest.mark.parametrize("preset", ["host", "frappe"])
def test_init_writes_a_commented_people_and_notify_example_that_works_uncommented(
    tmp_path: Path, preset: str
) -> None:
    if preset == "host":
        text = starter_text()
    else:
        bench = tmp_path / "frappe-bench"
        (bench / "sites" / "erp.example.org").mkdir(parents=True)
        text = starter.frappe_config("erp.example.org", bench, mounts=["/"])
    assert "\n# people:\n" in text and "\n# notify:\n" in text
    from nachtwacht.config.loader import config_warnings
    from nachtwacht.notify.reach import config_warnings as reach_warnings
    from nachtwacht.notify.reach import paging_problems

    # as written it loads with the defaults: nobody to page, which everything then reports
    as_written = parse_config(text, str(tmp_path / "nachtwacht.yaml"))
    assert as_written.people.contacts == [] and as_written.notify.channels == {}
    assert paging_problems(as_written)

    # the first edit: uncomment the two sections
    start, end = text.index("# people:\n"), text.index("\n\n", text.index("# notify:\n"))
    block = re.sub(r"(?m)^# ?(?=people:|notify:|incidents:|  )", "", text[start:end])
    edited = parse_config(text[:start] + block + text[end:], str(tmp_path / "nachtwacht.yaml"))
    assert [c.id for c in edited.people.contacts] == ["olga", "tina", "mia"]
    assert set(edited.notify.channels) == {"mail", "team-chat"}
    assert paging_problems(edited) == []
    path = tmp_path / "edited.yaml"
    path.write_text(text[:start] + block + text[end:], encoding="utf-8")
    assert config_warnings(load_config(path), path, checks=[reach_warnings]) == []


def test_doctor_warns_when_ack_links_point_at_this_machine(sqlite_store: Store) -> None:
    everyone = (
        "people:\n  contacts: [{id: olga, name: Olga, roles: [oncall_engineer], email: o@x.org}]\n"
    )
    settings = init_settings(sqlite_store, everyone + MAIL)
    [links] = [c for c in check_channels(settings) if c.name == "ack links"]
    assert links.level == "warn" and "http://127.0.0.1:8080" in links.message
    public = init_settings(
        sqlite_store, everyone + MAIL + "incidents: {public_url: 'https://nw.example.org'}\n"
    )
    assert not [c for c in check_channels(public) if c.name == "ack links"]
