"""Pages that read right the first time for the person woken at 3 a.m.: what needs a human comes
first, the first hour of data does not look like an outage, and times read one way.

Real app (create_app), real SQLite store; states and rollups are written as the engine would.
"""

from __future__ import annotations

import re

from sqlalchemy import delete, insert, select

from nachtwacht.store import tables as t
from tests.auth_helpers import fast_hashing  # noqa: F401 - fixture
from tests.test_pages import HTML, Site, cells, site  # noqa: F401 - fixture

ROW = re.compile(r'<tr data-incident="(\d+)"')
COMPONENT = re.compile(r'data-component="([^"]+)" data-state="([^"]+)"')


def set_state(on: Site, probe: str, state: str) -> None:
    store = on.client.app.state.nw.runtime.store
    now = on.clock.now()
    with store.begin() as conn:
        pid = conn.execute(select(t.probes.c.id).where(t.probes.c.name == probe)).scalar_one()
        conn.execute(delete(t.probe_state).where(t.probe_state.c.probe_id == pid))
        conn.execute(
            insert(t.probe_state).values(
                probe_id=pid, state=state, since=now, last_check=now, failures=0
            )
        )


def ack(on: Site, incident_id: int) -> None:
    response = on.client.post(
        f"/api/v1/incidents/{incident_id}/ack", headers={"X-CSRF-Token": on.csrf}
    )
    assert response.status_code == 200, response.text


def order(html: str) -> list[int]:
    return [int(i) for i in ROW.findall(html)]


# ---------------------------------------------------------------------------- 1. order


def test_incidents_list_puts_what_needs_a_human_first(site: Site) -> None:  # noqa: F811
    site.login("rita")
    s1 = site.declare("Checkout is down", severity=1)
    s3 = site.declare("A typo on the imprint", severity=3)
    overdue = site.declare("Search is slow", severity=2)
    site.clock.advance(3 * 3600)  # the S2 (and the S1) are past their response target now
    due = site.declare("Mails are late", severity=2)
    acked = site.declare("Reports are late", severity=2)
    ack(site, acked)
    unacked = site.declare("Exports are late", severity=2)
    wanted = [s1, overdue, unacked, due, acked, s3]
    page = site.client.get("/incidents", headers=HTML).text
    assert order(page) == wanted  # not newest first: the S3 no longer sits above the S1
    overview = site.client.get("/ui/overview/incidents", headers=HTML).text
    assert order(overview) == wanted
    # the API keeps its documented order: newest first
    api = site.client.get("/api/v1/incidents").json()
    assert [i["id"] for i in api] == sorted(wanted, reverse=True)


def test_status_grid_puts_the_failing_component_and_probe_first(site: Site) -> None:  # noqa: F811
    site.login("rita")
    for probe in ("web", "memory", "db"):
        set_state(site, probe, "ok")
    set_state(site, "orders", "critical")  # database: orders (critical), db (ok)
    html = site.client.get("/ui/overview/grid", headers=HTML).text
    comps = COMPONENT.findall(html)
    assert comps[0] == ("database", "critical")
    # the rest in the configured order (components named by probes: in probe order)
    assert [name for name, _ in comps] == ["database", "web", "host"]
    assert list(cells(html))[:2] == ["orders", "db"]  # the failing probe first, too
    set_state(site, "orders", "ok")
    set_state(site, "web", "warning")
    comps = COMPONENT.findall(site.client.get("/ui/overview/grid", headers=HTML).text)
    assert comps == [("web", "warning"), ("database", "ok"), ("host", "ok")]


# ---------------------------------------------------------------------------- 2. first hour


def test_pending_probes_give_a_pending_badge_not_warn(site: Site) -> None:  # noqa: F811
    site.login("rita")
    for probe in ("web", "memory", "db"):
        set_state(site, probe, "ok")
    set_state(site, "orders", "pending")
    html = site.client.get("/ui/overview/grid", headers=HTML).text
    assert 'data-overall="pending"' in html
    title = html[html.index('id="grid-title"') :][:300]
    assert "PEND" in title and "WARN" not in title
    set_state(site, "web", "warning")  # a real warning still wins
    html = site.client.get("/ui/overview/grid", headers=HTML).text
    assert 'data-overall="warning"' in html


def test_uptime_without_checks_in_the_window_is_no_data_yet_and_neutral(site: Site) -> None:  # noqa: F811
    from nachtwacht.probes import rollups

    site.login("rita")
    rt = site.client.app.state.nw.runtime
    site.check("web")
    site.clock.advance(90)  # the first minute is closed and rolled up; db was never checked
    while rollups.roll_minutes(rt.store, site.clock.now()):
        pass
    rollups.roll_hours(rt.store, site.clock.now())
    html = site.client.get("/", headers=HTML).text
    row = re.search(r'<tr data-uptime="db">.*?</tr>', html, re.S)
    assert row is not None
    # one neutral "no data yet" per window (each cell carries its window's name for phones)
    cells = re.findall(r'<td class="num up-none" data-label="[^"]+">no data yet</td>', row[0])
    assert len(cells) == 3, row[0]
    assert "0.00 %" not in row[0] and "up-poor" not in row[0]
    web = re.search(r'<tr data-uptime="web">.*?</tr>', html, re.S)
    assert web is not None and web[0].count("100 %") == 3  # the probe that was checked has data
    page = site.client.get("/probes/db", headers=HTML).text
    assert page.count('<dd class="up-none">no data yet</dd>') == 3


def test_analytics_says_a_trend_needs_more_days_than_one(site: Site) -> None:  # noqa: F811
    from tests.test_analytics_data import HOUR, add_hours, add_issue, ensure_project

    site.login("rita")
    now = site.clock.now()
    with site.client.app.state.nw.runtime.store.begin() as conn:
        ensure_project(conn, 1, now - 30 * HOUR)  # errors could be reported since yesterday
        issue = add_issue(conn, "boom", now - 20 * HOUR)
        add_hours(conn, issue, {int(now // HOUR) - 3: 50})
    html = site.client.get("/analytics?days=7", headers=HTML).text
    trend = html[html.index('id="trend"') :][:300]
    assert 'data-direction="unknown"' in trend and "rising" not in trend
    assert "a trend needs 3 days of data, there is 1" in trend
