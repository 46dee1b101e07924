"""New issues and regressions alert through the pipeline, from an obligation committed with them.

`store_events` (the drainer's handler) sets `error_issues.alert_due` in the transaction that
creates or reopens an issue; `errors.alerting` claims it and raises the alert (dedup, muting,
grouping into an incident, paging). What must hold: one alert per issue however many events;
the project's rule decides; a crash between the event and the alert loses nothing; two workers
never raise it twice; a storm of new issues pages once.
"""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import func, select

from nachtwacht.alerts import service as pipeline
from nachtwacht.clock import FakeClock
from nachtwacht.config.loader import ConfigError
from nachtwacht.config.schema import Settings
from nachtwacht.engine.runtime import Runtime
from nachtwacht.errors import alerting, issues
from nachtwacht.errors.service import store_events
from nachtwacht.store import tables as t
from nachtwacht.store.db import Store
from tests.helpers import settings_for
from tests.incident_fixtures import SITE, site
from tests.test_errors_fixtures import add_project, exc_event, frame, msg_event, records

NOW = 1_800_000_000.0
NEW_ON = """
errors:
  projects:
    shop:
      alert_on: {new_issue: true, new_issue_severity: 3, regression_severity: 2}
"""


def settings(store: Store, yaml_text: str = NEW_ON) -> Settings:
    """The incident tests' site (people, channels: pages are queued) with `yaml_text`."""
    return site(store, yaml_text)


def error(n: int = 17, where: str = "parse_order", **extra: Any) -> dict[str, Any]:
    return exc_event(
        "ValueError",
        f"order {n} is invalid",
        [frame(where, "raise ValueError(number)")],
        ts=extra.pop("ts", NOW),
        release=extra.pop("release", "shop@1.4.2"),
        **extra,
    )


def ingest(store_: Store, project_id: int, *events: dict[str, Any], now: float = NOW) -> None:
    with store_.begin() as conn:
        store_events(conn, records(project_id, now, *events), now)


def alerts(store_: Store) -> list[dict[str, Any]]:
    a = t.alerts.c
    with store_.connect() as conn:
        rows = conn.execute(select(t.alerts).where(a.source == "errors").order_by(a.id))
        return [dict(r) for r in rows.mappings()]


def due(store_: Store) -> dict[int, str]:
    i = t.error_issues.c
    with store_.connect() as conn:
        rows = conn.execute(select(i.id, i.alert_due).where(i.alert_due.is_not(None)))
        return {r.id: r.alert_due for r in rows}


def scalar(store_: Store, query: Any) -> Any:
    with store_.connect() as conn:
        return conn.execute(query).scalar()


def test_a_new_issue_alerts_once_resolving_resolves_it_and_a_regression_alerts_again(
    store: Store,
) -> None:
    cfg = settings(store)
    shop = add_project(store, "shop")
    # 1,000 events of one new issue, in batches as the drainer hands them over
    for batch in range(4):
        ingest(store, shop["id"], *[error(n) for n in range(batch * 250, (batch + 1) * 250)])
    [issue_id] = due(store)
    assert due(store) == {issue_id: "new"}

    done = alerting.handle_due(store, cfg, NOW + 1)
    assert (done.handled, done.opened) == (1, 1) and done.queued >= 1
    [alert] = alerts(store)
    assert alert["fingerprint"] == f"error-issue:{issue_id}" and alert["status"] == "firing"
    assert alert["title"] == "New issue in shop: ValueError: order 0 is invalid"
    assert alert["severity"] == 3 and alert["component"] == "shop"
    assert f"http://127.0.0.1:8080/errors/{issue_id}" in alert["message"]
    assert "1000 events" in alert["message"] and "release shop@1.4.2" in alert["message"]
    assert due(store) == {}
    # nothing left to do: a second pass raises nothing
    assert alerting.handle_due(store, cfg, NOW + 2).handled == 0
    incidents = scalar(store, select(func.count()).select_from(t.incidents))
    assert incidents == 1
    assert scalar(store, select(func.count()).select_from(t.outbox)) >= 1

    # more events of the issue: no new obligation, no second alert
    ingest(store, shop["id"], error(5000, ts=NOW + 10))
    assert due(store) == {} and len(alerts(store)) == 1

    # resolved on the issue page: its alert is resolved by the next pass
    with store.begin() as conn:
        issues.set_status(conn, issue_id, "resolve", "alice", NOW + 60)
    assert due(store) == {issue_id: "resolved"}
    alerting.handle_due(store, cfg, NOW + 61)
    assert [a["status"] for a in alerts(store)] == ["resolved"]

    # seen again after the resolution, in a newer release: a regression, one alert of S2
    ingest(
        store,
        shop["id"],
        *[error(9000 + k, ts=NOW + 120 + k, release="shop@1.5.0") for k in range(30)],
        now=NOW + 200,
    )
    assert due(store) == {issue_id: "regression"}
    assert alerting.handle_due(store, cfg, NOW + 201).opened == 1
    old, regression = alerts(store)
    assert regression["status"] == "firing" and regression["severity"] == 2
    assert regression["title"] == "Regression in shop: ValueError: order 0 is invalid"
    assert "release shop@1.5.0" in regression["message"]
    assert f"/errors/{issue_id}" in regression["message"]
    assert '"kind": "regression"' in regression["labels_json"]


def test_the_shipped_rule_alerts_on_regressions_of_errors_only(sqlite_store: Store) -> None:
    cfg = settings(sqlite_store, "")
    rule = cfg.errors.rule_for("anything")
    assert (rule.new_issue, rule.regression, rule.regression_severity) == (False, True, 3)
    shop = add_project(sqlite_store, "shop")
    ingest(sqlite_store, shop["id"], error(), msg_event("cache warmed in 35 ms", timestamp=NOW))
    assert len(due(sqlite_store)) == 2
    # new issues are analytics' to announce by default: the obligations end without an alert
    assert alerting.handle_due(sqlite_store, cfg, NOW + 1).opened == 0
    assert due(sqlite_store) == {} and alerts(sqlite_store) == []
    with sqlite_store.begin() as conn:
        for row in issues.list_issues(conn, limit=None)[0]:
            issues.set_status(conn, row["id"], "resolve", "alice", NOW + 60)
    alerting.handle_due(sqlite_store, cfg, NOW + 61)
    ingest(
        sqlite_store,
        shop["id"],
        error(ts=NOW + 120),
        msg_event("cache warmed in 40 ms", timestamp=NOW + 120),
        now=NOW + 130,
    )
    assert sorted(due(sqlite_store).values()) == ["regression", "regression"]
    assert alerting.handle_due(sqlite_store, cfg, NOW + 131).opened == 1
    [alert] = alerts(sqlite_store)
    # the info-level message regressed too, but is below min_level
    assert alert["title"].startswith("Regression in shop: ValueError") and alert["severity"] == 3


def test_a_crash_before_the_alert_loses_nothing_and_two_workers_raise_it_once(
    sqlite_store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = settings(sqlite_store)
    shop = add_project(sqlite_store, "shop")
    ingest(sqlite_store, shop["id"], error(), error(where="load_customer"))
    # the process dies after the drainer's commit: only the store is left, and it says
    assert sorted(due(sqlite_store).values()) == ["new", "new"]

    # the alert's transaction fails half-way (the pipeline raises after the claim): rolled back
    real = pipeline.process
    calls = 0

    def failing(*args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("store went away")
        return real(*args, **kwargs)

    monkeypatch.setattr(pipeline, "process", failing)
    first = alerting.handle_due(sqlite_store, cfg, NOW + 1)
    assert first.opened == 1 and len(due(sqlite_store)) == 1  # the failed one is still due
    assert alerting.handle_due(sqlite_store, cfg, NOW + 2).opened == 1
    assert len(alerts(sqlite_store)) == 2 and due(sqlite_store) == {}

    # two workers read the same obligation; the one that claims second raises nothing
    ingest(sqlite_store, shop["id"], error(where="ship_order"))
    with sqlite_store.connect() as conn:
        [row] = alerting.due(conn)
    with sqlite_store.begin() as conn:
        assert alerting.handle(conn, cfg, row, NOW + 3) is not None
    with sqlite_store.begin() as conn:
        assert alerting.handle(conn, cfg, row, NOW + 3) is None
    assert len(alerts(sqlite_store)) == 3


def test_a_storm_of_500_new_issues_pages_once_and_folds_into_one_alert(
    sqlite_store: Store,
) -> None:
    cfg = settings(sqlite_store)
    shop = add_project(sqlite_store, "shop")
    ingest(sqlite_store, shop["id"], error(0, where="f0"))
    alerting.handle_due(sqlite_store, cfg, NOW + 1)
    pages_for_one = scalar(sqlite_store, select(func.count()).select_from(t.outbox))
    assert pages_for_one >= 1
    # 500 different errors within a minute (each its own function: its own issue)
    storm = [error(k, where=f"f{k}", ts=NOW + k * 0.1) for k in range(1, 501)]
    for start in range(0, 500, 100):
        ingest(sqlite_store, shop["id"], *storm[start : start + 100], now=NOW + 50)
    assert len(due(sqlite_store)) == 500
    done = alerting.handle_due(sqlite_store, cfg, NOW + 60)
    assert done.handled == 500 and done.queued == 0 and due(sqlite_store) == {}
    # one incident, paged once; 20 alerts of their own, the other 481 in one "and more" alert
    assert scalar(sqlite_store, select(func.count()).select_from(t.incidents)) == 1
    assert scalar(sqlite_store, select(func.count()).select_from(t.outbox)) == pages_for_one
    fired = alerts(sqlite_store)
    assert len(fired) == 21 and {a["incident_id"] for a in fired} == {1}
    folded = fired[-1]
    assert folded["fingerprint"] == "error-storm:shop"
    assert folded["title"] == "More new issues and regressions in shop"
    assert "ValueError: order 500 is invalid" in folded["message"]
    assert "/errors?project=shop" in folded["message"]

    # an issue first seen two days ago (an SDK's offline queue, a backfill) is no news
    ingest(sqlite_store, shop["id"], error(where="old", ts=NOW - 2 * 86400), now=NOW + 61)
    assert alerting.handle_due(sqlite_store, cfg, NOW + 62).handled == 1
    assert len(alerts(sqlite_store)) == 21

    # two hours later the storm is over: a new issue gets its own alert again
    ingest(sqlite_store, shop["id"], error(0, where="later", ts=NOW + 7200), now=NOW + 7200)
    alerting.handle_due(sqlite_store, cfg, NOW + 7201)
    assert alerts(sqlite_store)[-1]["title"] == "New issue in shop: ValueError: order 0 is invalid"
    assert alerts(sqlite_store)[-1]["fingerprint"].startswith("error-issue:")

    # the storm alert resolves with the last issue alert of the component
    with sqlite_store.begin() as conn:
        for alert in [*fired[:20], alerts(sqlite_store)[-1]]:
            issue_id = int(alert["fingerprint"].removeprefix("error-issue:"))
            issues.set_status(conn, issue_id, "resolve", "alice", NOW + 7300)
    alerting.handle_due(sqlite_store, cfg, NOW + 7301)
    assert {a["status"] for a in alerts(sqlite_store)} == {"resolved"}


async def test_the_engine_module_raises_it_and_analytics_leaves_the_project_alone(
    sqlite_store: Store,
) -> None:
    clock = FakeClock(NOW)
    yaml_text = SITE + "analytics:\n  alerts:\n    environments: []\n" + NEW_ON
    rt = Runtime.build(settings_for(yaml_text, sqlite_store.url), sqlite_store, clock)
    shop = add_project(sqlite_store, "shop")
    other = add_project(sqlite_store, "other")
    assert await rt.engine.tick_once("analytics")  # the first pass sets the watermark
    ingest(sqlite_store, shop["id"], error())
    ingest(sqlite_store, other["id"], error())
    assert await rt.engine.tick_once("error_alerts")
    assert [a["title"] for a in alerts(sqlite_store)] == [
        "New issue in shop: ValueError: order 17 is invalid"
    ]
    clock.advance(60)
    assert await rt.engine.tick_once("analytics")
    a = t.alerts.c
    with sqlite_store.connect() as conn:
        new = conn.execute(select(a.title).where(a.fingerprint.like("analytics:new-issue:%")))
        titles = [r.title for r in new]
    # other's issue is analytics' to announce; shop's has its own alert already
    assert titles == ["new error in no environment: ValueError: order 17 is invalid"]
    await rt.stop()


def test_a_project_rule_overrides_only_the_keys_it_sets(sqlite_store: Store) -> None:
    cfg = settings(
        sqlite_store,
        "errors:\n  alert_on: {regression_severity: 2, min_level: warning}\n"
        "  projects:\n    cron:\n      alert_on: {regression: false}\n",
    )
    cron, shop = cfg.errors.rule_for("cron"), cfg.errors.rule_for("shop")
    assert (cron.regression, cron.regression_severity, cron.min_level) == (False, 2, "warning")
    assert (shop.regression, shop.regression_severity) == (True, 2)
    assert shop.wants("warning") and shop.wants("fatal") and not shop.wants("info")
    with pytest.raises(ConfigError, match="regresion"):
        settings(sqlite_store, "errors:\n  alert_on: {regresion: false}\n")
    with pytest.raises(ConfigError, match="severity"):
        settings(sqlite_store, "errors:\n  alert_on: {regression_severity: 4}\n")
