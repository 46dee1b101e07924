"""Config models of `analytics:` in nachtwacht.yaml (all have defaults; see docs/analytics.md)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from nachtwacht.durations import Duration

Severity = Literal[1, 2, 3]

# The run-time flags (analytics/flags.py stores and switches them). Their names are here, with
# the config, because a runbook's `set_flag` step is validated against them when it loads.
DISABLE_ANALYTICS = "disable_advanced_analytics"
PERFORMANCE = "enable_performance_optimization"
SECURITY_LOGGING = "enable_security_logging"

FLAGS: dict[str, str] = {
    DISABLE_ANALYTICS: "Fallback mode: pattern analysis, forecasts and analytics alerts stop; "
    "probes and paging go on untouched.",
    PERFORMANCE: "Cache analytics results longer and compute the dashboard's analytics ahead "
    "of time.",
    SECURITY_LOGGING: "Log every authentication, refusal and admin change to the security log.",
}


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PatternSettings(Strict):
    """How `analyze_error_patterns` judges what it counts."""

    # rising/falling when the least-squares slope per day exceeds this share of the daily mean
    # (0.1: the daily count moves by more than 10 % of its mean each day)
    trend_threshold: float = Field(default=0.1, gt=0)
    # a daily trend needs this many days of data (days after the first project could report)
    trend_min_days: int = Field(default=3, ge=2, le=90)
    # growing/shrinking when the second half of the window differs from the first by more
    growth_threshold: float = Field(default=0.05, ge=0)
    # an hour is a spike when its robust z-score (median and MAD of the hourly counts) is above
    # this (3.5 is Iglewicz and Hoaglin's cut-off for the modified z-score) ...
    spike_z: float = Field(default=3.5, gt=0)
    # ... and it holds at least this many events (one error in a silent system is no spike)
    spike_min_count: int = Field(default=5, ge=1)
    recurring_days: int = Field(default=3, ge=2)  # seen on at least this many distinct days
    top: int = Field(default=10, ge=1, le=200)  # top / new / recurring issues listed


class ForecastSettings(Strict):
    disk_window: Duration = 6 * 3600.0  # free-space history the disk fit uses (raw results)
    trend_window: Duration = 24 * 3600.0  # latency / failure-rate / error-rate trends (rollups)
    min_points: int = Field(default=6, ge=3)  # fewer: "not enough data"
    min_span: Duration = 1800.0  # the points must cover at least this much time
    # a fit explaining less of the variance than this is reported, never alerted on
    min_r2: float = Field(default=0.5, ge=0, le=1)
    # a latency or error-rate trend is rising/falling when the fitted line moves by more than
    # this share of its mean across the window ...
    trend_change: float = Field(default=0.2, gt=0)
    # ... and a probe's failure rate when it moves by more than this many percentage points
    failure_points: float = Field(default=5.0, gt=0)


class BaselineSettings(Strict):
    window: Duration = 24 * 3600.0  # default `baseline capture --window`
    # a probe regresses when its p95 is above ratio × the baseline's AND above it by min_ms
    latency_ratio: float = Field(default=1.5, gt=1)
    latency_min_ms: float = Field(default=50.0, ge=0)
    # error events per hour: above ratio × baseline and above it by min_per_hour
    error_ratio: float = Field(default=1.5, gt=1)
    error_min_per_hour: float = Field(default=1.0, ge=0)
    resource_points: float = Field(default=10.0, ge=0)  # host usage, percentage points up
    min_samples: int = Field(default=5, ge=1)  # fewer latency samples now: not compared
    # the first baseline is captured by itself once the system has been healthy this long (no
    # incident, no alert): a fresh install can pass the restoration checklist's performance
    # item without anyone knowing `baseline capture`; null: never by itself
    auto_after: Duration | None = Field(default=24 * 3600.0, gt=0)


class AlertSettings(Strict):
    """What the analytics engine module raises through the incident pipeline."""

    enabled: bool = True
    environments: list[str] = Field(default_factory=lambda: ["production"])
    errors_component: str = Field(default="errors", min_length=1, max_length=120)
    spike_severity: Severity = 3
    new_issue_severity: Severity = 3
    # an issue first seen longer ago than this (a backfill, a late import) never pages as new
    new_issue_max_age: Duration = 24 * 3600.0
    max_new_issue_alerts: int = Field(default=20, ge=1)  # per evaluation; the rest are counted
    spike_baseline: Duration = 7 * 86400.0  # the hourly history a current hour is judged against
    disk_s1_hours: float = Field(default=4.0, gt=0)
    disk_s2_hours: float = Field(default=24.0, gt=0)
    latency_severity: Severity = 3
    latency_window: Duration = 3600.0  # the recent window compared with the latest baseline

    @model_validator(mode="after")
    def _disk_order(self) -> AlertSettings:
        if self.disk_s1_hours >= self.disk_s2_hours:
            raise ValueError(
                f"disk_s1_hours ({self.disk_s1_hours:g}) must be below disk_s2_hours "
                f"({self.disk_s2_hours:g})"
            )
        return self


class AnalyticsSettings(Strict):
    patterns: PatternSettings = Field(default_factory=PatternSettings)
    forecast: ForecastSettings = Field(default_factory=ForecastSettings)
    baseline: BaselineSettings = Field(default_factory=BaselineSettings)
    alerts: AlertSettings = Field(default_factory=AlertSettings)
    interval: Duration = 300.0  # how often the analytics engine module runs
    cache_ttl: Duration = 60.0  # analytics results are cached this long ...
    optimized_cache_ttl: Duration = 900.0  # ... or this long under enable_performance_optimization
    flag_cache: Duration = 5.0  # how long a process trusts the flags it read from the store
    # where enable_security_logging writes (JSON lines); relative paths are under data_dir
    security_log: str = "security.log"
