"""/metrics in the Prometheus exposition format, read at scrape time.

The counters and histograms are plain ints kept where the work happens (nachtwacht.meter):
the scheduler's check durations and results, the engine's tick durations, the sender's
deliveries, the alert pipeline, the error ingestion and the spool drainer. The collectors
here turn them into metric families only when Prometheus asks, so the hot paths never take a
lock for a metric. What only the store knows (open incidents, the outbox's oldest due
message) is read by `StoreGauges` with one cheap query each, at most every few seconds.

Cardinality, and why (docs/decisions/0023-metrics-and-their-cardinality.md): the per-probe
series (7 gauges and a counter) are the ones that existed before and scale with the number of
probes; everything added since is labelled by bounded sets only: probe kind, result status,
alert source, severity, channel name, engine module, spool record kind and fixed reasons.
Check durations are a histogram per kind, not per probe: 13 series per kind against 130,000
for 10,000 probes.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector, CollectorRegistry
from sqlalchemy import and_, func, select

from nachtwacht.alerts import service as alerts
from nachtwacht.engine.runtime import Runtime
from nachtwacht.errors import ingest_counts as error_ingest
from nachtwacht.incidents.models import OPEN_STATUSES
from nachtwacht.meter import Histograms, Tally
from nachtwacht.notify import outbox
from nachtwacht.probes.results import State, Status
from nachtwacht.store import claims
from nachtwacht.store import tables as t
from nachtwacht.web.refused import Refusals, RefusedCollector

log = logging.getLogger(__name__)

STATE_VALUES = [s.value for s in State]
STATUS_LABELS = [s.label for s in Status]
SEVERITIES = (1, 2, 3)
# how often the store is asked at most, whatever the number of scrapers
STORE_EVERY = 5.0


class ProbeCollector(Collector):
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    def collect(self) -> Iterator[Metric]:
        labels = ["probe", "kind", "component"]
        status = GaugeMetricFamily(
            "nachtwacht_probe_status",
            "Last check status: 0 ok, 1 warning, 2 critical, 3 unknown",
            labels=labels,
        )
        up = GaugeMetricFamily(
            "nachtwacht_probe_up", "1 when the probe's state is ok, else 0", labels=labels
        )
        state = GaugeMetricFamily(
            "nachtwacht_probe_state", "1 for the probe's current state", labels=[*labels, "state"]
        )
        latency = GaugeMetricFamily(
            "nachtwacht_probe_latency_seconds", "Latency of the last check", labels=labels
        )
        value = GaugeMetricFamily(
            "nachtwacht_probe_value", "The number the last check measured", labels=labels
        )
        last = GaugeMetricFamily(
            "nachtwacht_probe_last_check_timestamp_seconds",
            "When the probe last ran",
            labels=labels,
        )
        checks = CounterMetricFamily(
            "nachtwacht_probe_checks", "Checks run since the process started", labels=labels
        )
        scheduler = self.runtime.scheduler
        for slot in list(scheduler.slots.values()):
            cfg, st = slot.config, slot.state
            lv = [cfg.name, cfg.kind, cfg.component]
            checks.add_metric(lv, slot.checks)
            up.add_metric(lv, 1.0 if st.state is State.OK else 0.0)
            for name in STATE_VALUES:
                state.add_metric([*lv, name], 1.0 if st.state.value == name else 0.0)
            if st.last_status is not None:
                status.add_metric(lv, float(int(st.last_status)))
            if st.last_latency_ms is not None:
                latency.add_metric(lv, st.last_latency_ms / 1000)
            if st.last_value is not None:
                value.add_metric(lv, st.last_value)
            if st.last_check is not None:
                last.add_metric(lv, st.last_check)
        yield from (status, up, state, latency, value, last, checks)
        stats = scheduler.stats
        yield histograms(
            "nachtwacht_probe_check_duration_seconds",
            "How long checks took, by probe kind",
            "kind",
            stats.durations,
        )
        results = CounterMetricFamily(
            "nachtwacht_probe_check_results",
            "Checks run since the process started, by probe kind and result status",
            labels=["kind", "status"],
        )
        # every status of every kind configured, at 0 until it happens: rate() needs a start
        seen = {cfg.kind for cfg in (s.config for s in list(scheduler.slots.values()))}
        counts = dict(stats.results.items())
        for kind in sorted(seen | {k[0] for k in counts if isinstance(k, tuple)}):
            for label in STATUS_LABELS:
                results.add_metric([kind, label], float(counts.get((kind, label), 0)))
        yield results
        pending = GaugeMetricFamily(
            "nachtwacht_results_unwritten", "Results waiting to be written to the store"
        )
        pending.add_metric([], float(self.runtime.writer.pending))
        yield pending


class EngineCollector(Collector):
    """Engine modules: healthy, when they last ticked, and how long their ticks take."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    def collect(self) -> Iterator[Metric]:
        engine = self.runtime.engine
        healthy = GaugeMetricFamily(
            "nachtwacht_engine_module_healthy",
            "1 when the engine module is healthy",
            labels=["module"],
        )
        last_ok = GaugeMetricFamily(
            "nachtwacht_engine_module_last_success_timestamp_seconds",
            "When the engine module last ticked without an error (the engine's heartbeat)",
            labels=["module"],
        )
        interval = GaugeMetricFamily(
            "nachtwacht_engine_module_interval_seconds",
            "How often the engine module ticks",
            labels=["module"],
        )
        for item in engine.health():
            healthy.add_metric([str(item["module"])], 1.0 if item["healthy"] else 0.0)
        for module in list(engine.modules.values()):
            interval.add_metric([module.name], module.interval)
            if module.health.last_ok is not None:
                last_ok.add_metric([module.name], module.health.last_ok)
        yield from (healthy, last_ok, interval)
        yield histograms(
            "nachtwacht_engine_tick_duration_seconds",
            "How long engine module ticks took, failed ones included",
            "module",
            engine.tick_durations,
        )


class ActivityCollector(Collector):
    """What Nachtwacht itself did: alerts, notifications, error events, the spool."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    def collect(self) -> Iterator[Metric]:
        yield from self._alerts()
        yield from self._notifications()
        yield from self._errors()
        yield from self._spool()

    def _alerts(self) -> Iterator[Metric]:
        for what, help_text in (
            ("raised", "Alerts opened since the process started, by source"),
            ("resolved", "Alerts resolved since the process started, by source"),
        ):
            family = CounterMetricFamily(f"nachtwacht_alerts_{what}", help_text, labels=["source"])
            for key, n in sorted(alerts.COUNTS.items(), key=str):
                if isinstance(key, tuple) and key[1] == what:
                    family.add_metric([str(key[0])], float(n))
            yield family

    def _notifications(self) -> Iterator[Metric]:
        channels = set(self.runtime.settings.notify.channels)
        counts = dict(outbox.DELIVERIES.items())
        channels |= {str(k[0]) for k in counts if isinstance(k, tuple)}
        for what, help_text in (
            ("queued", "Notifications put in the outbox by this process, by channel"),
            ("sent", "Notifications delivered, by channel"),
            ("failed", "Delivery attempts that failed (retried or given up), by channel"),
            ("deferred", "Notifications the rate limit held back, by channel"),
        ):
            family = CounterMetricFamily(
                f"nachtwacht_notifications_{what}", help_text, labels=["channel"]
            )
            for channel in sorted(channels):
                family.add_metric([channel], float(counts.get((channel, what), 0)))
            yield family

    def _errors(self) -> Iterator[Metric]:
        accepted = CounterMetricFamily(
            "nachtwacht_error_events_accepted",
            "Error events accepted into the spool since the process started",
        )
        accepted.add_metric([], float(dict(error_ingest.ACCEPTED.items()).get("events", 0)))
        yield accepted
        yield tally(
            "nachtwacht_error_events_refused",
            "Error ingestion requests refused since the process started, by reason",
            "reason",
            error_ingest.REFUSED,
        )
        stored = CounterMetricFamily(
            "nachtwacht_error_events_stored",
            "Error events the spool drainer committed to the store since the process started",
        )
        kinds = dict(self.runtime.drainer.stored_kinds.items())
        stored.add_metric([], float(kinds.get(error_ingest.RECORD_KIND, 0)))
        yield stored

    def _spool(self) -> Iterator[Metric]:
        drainer, spool = self.runtime.drainer, self.runtime.spool
        now = self.runtime.clock.now()
        for name, help_text, value in (
            ("nachtwacht_spool_bytes", "Bytes the spool holds on disk", spool.bytes_used),
            ("nachtwacht_spool_max_bytes", "The spool's size limit", spool.max_bytes),
            (
                "nachtwacht_spool_backlog_bytes",
                "Bytes in the spool not yet stored (waiting for the drainer)",
                drainer.backlog_bytes,
            ),
            (
                "nachtwacht_spool_drain_lag_seconds",
                "Seconds since the drainer last stored all the spool held; 0 when none waits",
                drainer.lag(now),
            ),
            (
                "nachtwacht_store_available",
                "1 while the store takes writes, 0 while it is down and input is spooled",
                1 if drainer.store_down_since is None else 0,
            ),
        ):
            gauge = GaugeMetricFamily(name, help_text)
            gauge.add_metric([], float(value))
            yield gauge
        yield tally(
            "nachtwacht_spool_records_stored",
            "Spooled records committed to the store since the process started, by kind",
            "kind",
            drainer.stored_kinds,
        )


@dataclass(eq=False)  # the registry keeps collectors in a dict
class StoreGauges(Collector):
    """What only the store knows, read with one cheap query each (both on indexed columns)
    at most every STORE_EVERY seconds, in a thread, before a scrape is rendered. While the
    store cannot be read these series are left out; `nachtwacht_store_available` says why."""

    runtime: Runtime
    every: float = STORE_EVERY
    read_at: float | None = None
    open_incidents: dict[int, int] = field(default_factory=dict)
    due_messages: int = 0
    oldest_due: float | None = None  # when the oldest due message became due
    ok: bool = False
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    async def refresh(self) -> None:
        now = self.runtime.clock.now()
        async with self._lock:
            if self.read_at is not None and 0 <= now - self.read_at < self.every:
                return
            try:
                await asyncio.to_thread(self.read, now)
                self.ok = True
            except Exception as exc:  # the store is down: scrape the rest
                log.warning("metrics: cannot read the store: %s", exc)
                self.ok = False
            self.read_at = now

    def read(self, now: float) -> None:
        i, o = t.incidents.c, t.outbox.c
        with self.runtime.store.connect() as conn:
            rows = conn.execute(
                select(i.severity, func.count())
                .where(i.status.in_(OPEN_STATUSES), i.drill_id.is_(None))
                .group_by(i.severity)
            ).all()
            pending = conn.execute(
                select(func.count(), func.min(o.next_attempt_at)).where(
                    o.status == "pending", o.next_attempt_at <= now
                )
            ).one()
            # a sending row whose sender's lease ran out is due again from then
            orphaned = conn.execute(
                select(func.count(), func.min(o.claimed_until)).where(
                    and_(o.status == "sending", claims.lease_expired(t.outbox, now))
                )
            ).one()
        self.open_incidents = {int(sev): int(n) for sev, n in rows}
        self.due_messages = int(pending[0]) + int(orphaned[0])
        since = [float(v) for v in (pending[1], orphaned[1]) if v is not None]
        self.oldest_due = min(since) if since else None

    def collect(self) -> Iterator[Metric]:
        if not self.ok or self.read_at is None:
            return
        incidents = GaugeMetricFamily(
            "nachtwacht_incidents_open",
            "Incidents not yet resolved, by severity (1 = S1)",
            labels=["severity"],
        )
        for sev in sorted(set(SEVERITIES) | set(self.open_incidents)):
            incidents.add_metric([str(sev)], float(self.open_incidents.get(sev, 0)))
        yield incidents
        due = GaugeMetricFamily(
            "nachtwacht_outbox_due_messages", "Outbox messages due to be sent and not yet claimed"
        )
        due.add_metric([], float(self.due_messages))
        yield due
        age = GaugeMetricFamily(
            "nachtwacht_outbox_oldest_due_age_seconds",
            "How long the oldest due outbox message has waited since it became due; 0 if none",
        )
        age.add_metric(
            [], 0.0 if self.oldest_due is None else max(0.0, self.read_at - self.oldest_due)
        )
        yield age


def histograms(name: str, help_text: str, label: str, source: Histograms) -> Metric:
    family = HistogramMetricFamily(name, help_text, labels=[label])
    for key, hist in sorted(source.items()):
        family.add_metric([key], list(hist.cumulative()), sum_value=hist.sum)
    return family


def tally(name: str, help_text: str, label: str, source: Tally) -> Metric:
    family = CounterMetricFamily(name, help_text, labels=[label])
    for key, n in sorted(source.items(), key=lambda kv: str(kv[0])):
        family.add_metric([str(key)], float(n))
    return family


def registry_for(
    runtime: Runtime, refusals: Refusals | None = None, extra: Iterable[Collector] = ()
) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ProbeCollector(runtime))
    registry.register(EngineCollector(runtime))
    registry.register(ActivityCollector(runtime))
    for collector in extra:
        registry.register(collector)
    if refusals is not None:
        registry.register(RefusedCollector(refusals))
    return registry
