"""Baselines: capture known distributions, find the planted regressions; the CLI commands."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import insert
from typer.testing import CliRunner

from nachtwacht.analytics import baselines
from nachtwacht.analytics.baselines import BaselineError
from nachtwacht.analytics.models import BaselineSettings
from nachtwacht.cli.main import app
from nachtwacht.clock import SystemClock
from nachtwacht.store import tables as t
from nachtwacht.store.db import Store
from tests.test_analytics_data import add_events, add_issue, add_probe, add_results

NOW = 1_800_000_000.0
LATER = NOW + 2 * 86400
DAY = 86400.0
CFG = BaselineSettings()
runner = CliRunner()


def spread(end: float, values: list[float]) -> list[tuple[float, None, float]]:
    """Latency samples evenly over the day before `end`."""
    step = DAY / (len(values) + 1)
    return [(end - DAY + step * (k + 1), None, v) for k, v in enumerate(values)]


def minute(m: int, n_5xx: int, total: float, top: float, p95: float) -> dict:
    """One minute of Frappe requests: 100 requests, `total` ms in all."""
    return {
        "source": "erp",
        "minute": m,
        "n": 100,
        "n_5xx": n_5xx,
        "n_4xx": 0,
        "duration_sum_ms": total,
        "duration_max_ms": top,
        "p95_ms": p95,
    }


def plant(conn, end: float, *, api: list[float], fast: float, mem: list[float], errors: int):  # noqa: ANN001, ANN201
    ids = {
        "api": add_probe(conn, "api", "http", "web"),
        "fast": add_probe(conn, "fast", "tcp", "web"),
        "mem": add_probe(conn, "mem", "host", "host", {"metric": "memory"}),
    }
    add_results(conn, ids["api"], spread(end, api))
    add_results(conn, ids["fast"], spread(end, [fast] * 50))
    add_results(conn, ids["mem"], [(ts, v, None) for ts, _, v in spread(end, mem)])
    issue = add_issue(conn, "boom", end - DAY)
    add_events(conn, issue, [end - DAY + (k + 0.5) * DAY / errors for k in range(errors)])


def test_capture_then_compare_finds_exactly_the_planted_regressions(store: Store) -> None:
    with store.begin() as conn:
        plant(conn, NOW, api=[float(v) for v in range(1, 101)], fast=20.0,
              mem=[40.0 + k * 20 / 49 for k in range(50)], errors=48)  # fmt: skip
        add_events(conn, add_issue(conn, "old", NOW - 3 * DAY), [NOW - 2 * DAY])  # outside
        conn.execute(
            insert(t.request_minutes),
            [
                minute(int(NOW // 60) - 10, n_5xx=2, total=10_000.0, top=900.0, p95=200.0),
                minute(int(NOW // 60) - 5, n_5xx=0, total=30_000.0, top=800.0, p95=400.0),
            ],
        )
        base = baselines.capture(conn, NOW, DAY, "olga", "before the upgrade")

    data = base["data"]
    assert base["name"] == "before the upgrade" and base["captured_by"] == "olga"
    assert data["probes"]["api"]["p50"] == pytest.approx(50.5)
    assert data["probes"]["api"]["p95"] == pytest.approx(95.05)
    assert data["probes"]["api"]["samples"] == 100
    assert data["probes"]["fast"]["p95"] == 20.0
    assert "mem" not in data["probes"]  # no latency: a resource, not a latency
    assert data["resources"]["mem"]["metric"] == "memory"
    assert data["resources"]["mem"]["mean"] == pytest.approx(50.0)
    assert data["errors"]["events"] == 48 and data["errors"]["per_hour"] == pytest.approx(2.0)
    assert data["requests"]["erp"] == {
        "requests": 200,
        "mean_ms": 200.0,
        "p95": 300.0,
        "max_ms": 900.0,
        "error_percent": 1.0,
    }

    # two days later: api twice as slow plus 100 ms, fast 20 → 40 ms (×2 but only +20 ms),
    # memory 15 points up, errors 5 per hour
    with store.begin() as conn:
        plant(conn, LATER, api=[2.0 * v + 100 for v in range(1, 101)], fast=40.0,
              mem=[55.0 + k * 20 / 49 for k in range(50)], errors=120)  # fmt: skip
    with store.connect() as conn:
        report = baselines.compare(conn, LATER, CFG)

    assert report["baseline"]["id"] == base["id"]
    assert report["window"] == {"start": LATER - DAY, "end": LATER}
    probes = {p["probe"]: p for p in report["probes"]}
    assert probes["api"]["status"] == "regression"
    assert probes["api"]["current_p95"] == pytest.approx(290.1)
    assert probes["api"]["ratio"] == pytest.approx(290.1 / 95.05, abs=1e-3)
    assert probes["fast"]["status"] == "ok"  # 2× is not enough without +50 ms
    assert report["errors"]["status"] == "regression"
    assert report["errors"]["current_per_hour"] == pytest.approx(5.0)
    [mem] = report["resources"]
    assert mem["status"] == "regression" and mem["delta"] == pytest.approx(15.0)
    assert sorted((r["kind"], r["name"]) for r in report["regressions"]) == [
        ("errors", "error events"),
        ("latency", "api"),
        ("resource", "mem"),
    ]
    assert report["ok"] is False

    # margins are configuration: a looser ratio forgives the api probe
    loose = BaselineSettings(latency_ratio=4.0, error_ratio=3.0, resource_points=20)
    with store.connect() as conn:
        assert baselines.compare(conn, LATER, loose, against=base["id"])["ok"] is True


def test_compare_without_a_baseline_and_with_an_unknown_id(sqlite_store: Store) -> None:
    with sqlite_store.connect() as conn:
        with pytest.raises(BaselineError, match="no baseline yet") as exc:
            baselines.compare(conn, NOW, CFG)
        assert exc.value.kind == "not_found"
        with pytest.raises(BaselineError, match="no baseline 42"):
            baselines.compare(conn, NOW, CFG, against=42)


# ---------------------------------------------------------------------------- CLI


@pytest.fixture
def config(tmp_path: Path) -> str:
    path = tmp_path / "nachtwacht.yaml"
    path.write_text(f"site: test\nstore:\n  url: sqlite:///{tmp_path / 'nw.db'}\n")
    return str(path)


def _store(config: str) -> Store:
    store = Store(f"sqlite:///{Path(config).parent / 'nw.db'}")
    store.migrate()
    return store


def test_baseline_cli_capture_list_and_compare_with_check(config: str) -> None:
    now = SystemClock().now()
    store = _store(config)
    with store.begin() as conn:
        api = add_probe(conn, "api", "http", "web")
        add_results(conn, api, [(now - 1800 + k, None, 100.0) for k in range(20)])
    args = ["capture", "--name", "calm", "--window", "1h", "--actor", "olga", "-c", config]
    out = runner.invoke(app, ["baseline", *args])
    assert out.exit_code == 0, out.output
    assert "“calm” captured: 1 probes with latency" in out.output

    listed = runner.invoke(app, ["baseline", "list", "--json", "-c", config])
    [item] = json.loads(listed.output)
    assert (item["name"], item["captured_by"], item["probes"]) == ("calm", "olga", 1)

    same = runner.invoke(app, ["baseline", "compare", "--check", "-c", config])
    assert same.exit_code == 0, same.output
    assert "ok" in same.output and "no regressions" in same.output

    with store.begin() as conn:
        add_results(conn, api, [(now - 600 + k, None, 400.0) for k in range(80)])
    worse = runner.invoke(app, ["baseline", "compare", "--check", "-c", config])
    assert worse.exit_code == 1
    assert "regression" in worse.output and "api" in worse.output
    as_json = runner.invoke(app, ["baseline", "compare", "--json", "-c", config])
    assert json.loads(as_json.output)["regressions"][0]["name"] == "api"

    bad = runner.invoke(app, ["baseline", "compare", "--against", "99", "-c", config])
    assert bad.exit_code == 2 and "there is no baseline 99" in bad.output
    bad_window = runner.invoke(app, ["baseline", "capture", "--window", "soon", "-c", config])
    assert bad_window.exit_code == 2 and "--window" in bad_window.output
    store.dispose()
