"""Analytics results as lines of text for the terminal (the CLI's human output)."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

BARS = " ▁▂▃▄▅▆▇█"


def sparkline(values: list[int]) -> str:
    top = max(values, default=0)
    if top <= 0:
        return BARS[0] * len(values)
    return "".join(BARS[round(v / top * (len(BARS) - 1))] for v in values)


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{value * 100:.1f} %"


def _issue(i: dict[str, Any]) -> str:
    return (
        f"  #{i['id']:<5} {i['count']:>6}  {i['days_seen']}d  {i['category']:<13} "
        f"{i['status']:<10} {i['title'][:70]}"
    )


def error_lines(data: dict[str, Any]) -> list[str]:
    tot, trend, hours, growth = data["totals"], data["trend"], data["hourly"], data["growth"]
    cached = " (cached)" if data.get("cache", {}).get("hit") else ""
    envs = ", ".join(data["environments"]) if data.get("environments") else "all environments"
    lines = [
        f"Errors, last {data['days']} days, {envs} ({data['timezone']}){cached}",
        f"  events     {tot['events']:,} in {tot['issues']} issues ({tot['new_issues']} new, "
        f"{tot['recurring_issues']} recurring), {tot['per_day']:.1f} per day",
    ]
    if trend.get("message"):
        lines.append(f"  trend      {trend['message']}")
    elif trend.get("r2") is None:
        lines.append(f"  trend      {trend['direction']}")
    else:
        lines.append(
            f"  trend      {trend['direction']}: {trend['slope']:+.2f} per day per day "
            f"({trend['relative'] * 100:+.1f} % of the daily mean {trend['mean']:.1f}; "
            f"R² {trend['r2']:.2f})"
        )
    lines.append(f"  daily      {sparkline([d['count'] for d in data['daily']])}  "
                 f"{' '.join(str(d['count']) for d in data['daily'])}")  # fmt: skip
    if growth["growth"] is None:
        lines.append(f"  growth     {growth['direction']}")
    else:
        lines.append(
            f"  growth     {growth['direction']}: {growth['first_half']} → "
            f"{growth['second_half']} ({growth['growth'] * 100:+.1f} %) between the halves"
        )
    if hours["peak_hour"] is not None:
        peak = hours["peak_hour"]
        lines.append(
            f"  peak hour  {peak:02d}:00–{(peak + 1) % 24:02d}:00 ({hours['peak_count']} events); "
            f"business hours {_pct(hours['business_share'])} of events, "
            f"{hours['business_per_hour'] or 0:.1f}/h against "
            f"{hours['off_hours_per_hour'] or 0:.1f}/h off-hours"
        )
        lines.append(f"  by hour    {sparkline(hours['by_hour'])}  (00–23 local)")
    if data["categories"]:
        cats = ", ".join(f"{k} {v}" for k, v in data["categories"].items())
        lines.append(f"  categories {cats}")
    base = data["spike_baseline"]
    if data["spikes"]:
        lines.append(f"Spikes (median {base['median']:g}/h, robust z > {base['threshold']:g})")
        for s in data["spikes"]:
            lines.append(f"  {s['local'][:16].replace('T', ' ')}  {s['count']} events  z {s['z']}")
    else:
        lines.append(f"  spikes     none (median {base['median']:g}/h)")
    for title, key in (
        ("Top issues", "top_issues"),
        ("New issues", "new_issues"),
        ("Recurring issues", "recurring_issues"),
    ):
        if data[key]:
            lines.append(f"{title}  (id, events in window, days seen, category, status, title)")
            lines.extend(_issue(i) for i in data[key])
    return lines


def _confidence(c: dict[str, Any]) -> str:
    r2 = "—" if c["r2"] is None else f"{c['r2']:.2f}"
    return f"confidence {c['level']} (R² {r2}, {c['points']} points, {c['span_hours']:g} h)"


def _trend(label: str, t: dict[str, Any] | None, unit: str) -> str:
    if t is None:
        return f"{label} —"
    if t["direction"] == "unknown":
        return f"{label} {t['message']}"
    return f"{label} {t['direction']} {t['now']:g}{unit} ({t['change']:+g}{unit} over the window)"


def forecast_lines(data: dict[str, Any], zone: ZoneInfo) -> list[str]:
    lines = ["Disk"]
    if not data["disk"]:
        lines.append("  no host disk probes")
    for d in data["disk"]:
        used = "—" if d["used_percent"] is None else f"{d['used_percent']:.1f} % used"
        when = ""
        if d["full_at"] is not None:
            local = datetime.fromtimestamp(d["full_at"], zone).strftime("%Y-%m-%d %H:%M")
            when = f" (full at {local})"
        lines.append(
            f"  {d['name']} ({d['mount']})  {used}  {d['message'] or d['status']}{when}  "
            f"{_confidence(d['confidence'])}"
        )
    e = data["errors"]
    lines.append("Error events per hour")
    if e["direction"] == "unknown":
        lines.append(f"  {e['message']}")
    else:
        lines.append(
            f"  {e['direction']}: {e['now']:.1f}/h now, {e['slope_per_hour']:+.2f}/h per hour, "
            f"about {e.get('next_24h', 0)} in the next 24 h  {_confidence(e['confidence'])}"
        )
    lines.append("Probes (latency, failed checks)")
    if not data["probes"]:
        lines.append("  no rollups in the window yet")
    for p in data["probes"]:
        lines.append(
            f"  {p['probe']:<24} {_trend('latency', p['latency_ms'], ' ms')};  "
            f"{_trend('failures', p['failure_percent'], ' %')}"
        )
    return lines


def compare_lines(data: dict[str, Any]) -> list[str]:
    b = data["baseline"]
    lines = [f"Against baseline #{b['id']} “{b['name']}”"]
    for p in data["probes"]:
        if p["status"] in ("new", "no data"):
            lines.append(f"  {p['status']:<10} {p['probe']}")
            continue
        lines.append(
            f"  {p['status']:<10} {p['probe']:<24} p95 {p['baseline_p95']:g} → "
            f"{p['current_p95']:g} ms (×{p['ratio']}), p50 {p['baseline_p50']:g} → "
            f"{p['current_p50']:g} ms"
        )
    e = data["errors"]
    lines.append(
        f"  {e['status']:<10} error events "
        f"{e['baseline_per_hour']:g}/h → {e['current_per_hour']:g}/h"
    )
    for r in data["resources"]:
        lines.append(
            f"  {r['status']:<10} {r['probe']:<24} mean {r['baseline_mean']:g} → "
            f"{r['current_mean']:g} ({r['delta']:+g})"
        )
    for q in data["requests"]:
        lines.append(
            f"  {q['status']:<10} requests {q['source']}: p95 {q['baseline_p95']} → "
            f"{q['current_p95']} ms, 5xx {q['baseline_error_percent']} → "
            f"{q['current_error_percent']} %"
        )
    n = len(data["regressions"])
    lines.append("no regressions" if n == 0 else f"{n} regression{'s' if n != 1 else ''}")
    return lines
