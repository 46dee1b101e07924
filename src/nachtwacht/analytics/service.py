"""What the API, the CLI, the dashboard and the engine module call: analytics with the flags
and the results cache applied. Blocking (SQL): call from a thread on the event loop."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from nachtwacht.analytics import alerts, baselines, cache, flags
from nachtwacht.analytics.forecast import forecast
from nachtwacht.analytics.patterns import MAX_DAYS, analyze_error_patterns
from nachtwacht.config.schema import Settings
from nachtwacht.problems import Problem
from nachtwacht.store.db import Store

DISABLED_MESSAGE = (
    "advanced analytics are disabled: the flag disable_advanced_analytics is on (fallback "
    "mode). Probes, alerting and paging are not affected. "
    "`nachtwacht flags set disable_advanced_analytics off` turns analytics back on."
)


COMPARE_KEY = "analytics_baseline_compare"


class AnalyticsError(Problem):
    """An analytics question that cannot be answered as asked; `field` names the culprit."""


def disabled_answer() -> dict[str, Any]:
    return {"disabled": True, "flag": flags.DISABLE_ANALYTICS, "message": DISABLED_MESSAGE}


def current_flags(store: Store, settings: Settings) -> dict[str, bool]:
    return flags.current(store, flags.ttl_of(settings))


def is_disabled(store: Store, settings: Settings) -> bool:
    return current_flags(store, settings)[flags.DISABLE_ANALYTICS]


def cache_ttl(store: Store, settings: Settings) -> float:
    cfg = settings.analytics
    optimized = current_flags(store, settings)[flags.PERFORMANCE]
    return cfg.optimized_cache_ttl if optimized else cfg.cache_ttl


def errors_key(days: int, environments: Sequence[str] | None, project_id: int | None) -> str:
    envs = ",".join(sorted(environments)) if environments else "*"
    project = project_id if project_id is not None else "*"
    return f"analytics_errors:days={days}:env={envs}:project={project}"[: cache.KEY_MAX]


def error_patterns(
    store: Store,
    settings: Settings,
    now: float,
    days: int = 7,
    environments: Sequence[str] | None = None,
    project_id: int | None = None,
    use_cache: bool = True,
    min_remaining: float = 0.0,
) -> dict[str, Any]:
    """`analyze_error_patterns` for the configured timezone and business hours, cached."""
    if not 1 <= days <= MAX_DAYS:
        raise AnalyticsError(f"days must be between 1 and {MAX_DAYS}", field="days")
    if is_disabled(store, settings):
        return disabled_answer()
    envs = [e for e in (environments or []) if e] or None

    def compute(conn: Any) -> dict[str, Any]:
        return analyze_error_patterns(
            conn,
            now,
            days,
            settings.zone,
            settings.business_hours,
            settings.analytics.patterns,
            environments=envs,
            project_id=project_id,
        )

    ttl = cache_ttl(store, settings) if use_cache else 0.0
    key = errors_key(days, envs, project_id)
    value, meta = cache.cached(store, key, now, ttl, compute, min_remaining)
    return value | {"cache": meta}


def forecasts(
    store: Store,
    settings: Settings,
    now: float,
    use_cache: bool = True,
    min_remaining: float = 0.0,
) -> dict[str, Any]:
    if is_disabled(store, settings):
        return disabled_answer()
    ttl = cache_ttl(store, settings) if use_cache else 0.0
    value, meta = cache.cached(
        store,
        "analytics_forecast",
        now,
        ttl,
        lambda conn: forecast(conn, now, settings.analytics.forecast),
        min_remaining,
    )
    return value | {"cache": meta}


def capture_baseline(
    store: Store, settings: Settings, now: float, actor: str, name: str | None, window: float
) -> dict[str, Any]:
    """Baselines are measurement, not analysis: they work in fallback mode too (re-establishing
    the baseline is the protocol's recovery step)."""
    with store.begin() as conn:
        captured = baselines.capture(conn, now, window, actor, name)
        # the dashboard's cached comparison is against the previous baseline: drop it
        cache.clear(conn, COMPARE_KEY)
        return captured


def compare_baseline(
    store: Store,
    settings: Settings,
    now: float,
    against: int | None = None,
    window: float | None = None,
) -> dict[str, Any]:
    with store.connect() as conn:
        return baselines.compare(conn, now, settings.analytics.baseline, against, window)


def compare_baseline_cached(store: Store, settings: Settings, now: float) -> dict[str, Any]:
    """The latest baseline against its own length up to now, cached (the dashboard's view:
    measuring a day of raw results is too much for every page load)."""
    value, meta = cache.cached(
        store,
        COMPARE_KEY,
        now,
        cache_ttl(store, settings),
        lambda conn: baselines.compare(conn, now, settings.analytics.baseline),
    )
    return value | {"cache": meta}


def list_baselines(store: Store, limit: int = 50) -> list[dict[str, Any]]:
    with store.connect() as conn:
        return baselines.list_baselines(conn, limit)


def set_flags(
    store: Store, values: dict[str, bool], actor: str, now: float, ip: str | None = None
) -> list[dict[str, Any]]:
    """Switch flags in one transaction (all or none), each change audited."""
    for name in values:
        flags.check_name(name)
    with store.begin() as conn:
        for name, enabled in values.items():
            flags.set_flag(conn, name, enabled, actor, now, ip)
        items = flags.list_flags(conn)
    flags.invalidate()  # again after the commit: no reader re-cached the old value meanwhile
    return items


def set_flag(
    store: Store, name: str, enabled: bool, actor: str, now: float, ip: str | None = None
) -> dict[str, Any]:
    items = set_flags(store, {name: enabled}, actor, now, ip)
    return next(item for item in items if item["name"] == name)


def list_flags(store: Store) -> list[dict[str, Any]]:
    with store.connect() as conn:
        return flags.list_flags(conn)


def clear_cache(store: Store, pattern: str | None) -> int:
    with store.begin() as conn:
        return cache.clear(conn, pattern)


def run_engine_once(store: Store, settings: Settings, now: float) -> dict[str, Any]:
    """One pass of the analytics engine module: alerts, cache upkeep, pre-computation.

    Returns what it did ({"disabled": True} in fallback mode, where it does nothing at all).
    """
    if is_disabled(store, settings):
        return {"disabled": True, "outcomes": []}
    outcomes: list[dict[str, Any]] = []
    if settings.analytics.alerts.enabled:
        with store.begin() as conn:
            signals = alerts.evaluate(conn, store, settings, now)
            outcomes = alerts.apply(conn, settings, signals, now)
    with store.begin() as conn:
        purged = cache.purge_expired(conn, now)
    warmed = []
    if current_flags(store, settings)[flags.PERFORMANCE]:
        # the dashboard's default views, computed here so that no page load waits for them
        # (recomputed when the entry would expire before the next pass)
        ahead = 1.5 * settings.analytics.interval
        error_patterns(store, settings, now, days=7, min_remaining=ahead)
        forecasts(store, settings, now, min_remaining=ahead)
        warmed = [errors_key(7, None, None), "analytics_forecast"]
    return {"disabled": False, "outcomes": outcomes, "purged": purged, "warmed": warmed}
