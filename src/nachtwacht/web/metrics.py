"""/metrics in the Prometheus exposition format, read at scrape time.

The counters and histograms are plain ints kept where the work happens (nachtwacht.meter):
the scheduler's check durations and results, the engine's tick durations, the sender's
deliveries, the alert pipeline, the error ingestion and the spool drainer. The collectors
here turn them into metric families only when Prometheus asks, so the hot paths never take a
lock for a metric. What only the store knows (open incidents, the outbox's oldest due
message) is read by `StoreGauges` with one cheap query each, at most every few seconds.

Cardinality, and why (docs/decisions/0023-metrics-and-their-cardinality.md): the per-probe
series (6 gauges and a counter, one series each per probe: the state only as its current
value) are the ones that existed before and scale with the number of probes; `ProbeSeries`
writes them as text, not as metric families, and keeps them 5 s (at 10,000 probes that is
70,000 lines). Everything added since is labelled by bounded sets only: probe kind, result status,
alert source, severity, channel name, engine module, spool record kind and fixed reasons.
Check durations are a histogram per kind, not per probe: 13 series per kind against 130,000
for 10,000 probes.

Why one module: every family /metrics serves is written here, so what one scrape costs and
how many series it makes can be read, and bounded, in one place (decision 23).
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector, CollectorRegistry
from prometheus_client.utils import floatToGoString
from sqlalchemy import and_, func, select

from nachtwacht.alerts import service as alerts
from nachtwacht.engine.runtime import Runtime
from nachtwacht.errors import ingest_counts as error_ingest
from nachtwacht.incidents.models import OPEN_STATUSES
from nachtwacht.meter import Histograms, Tally
from nachtwacht.notify import outbox
from nachtwacht.probes.base import ProbeConfig
from nachtwacht.probes.results import State, Status
from nachtwacht.store import claims
from nachtwacht.store import tables as t
from nachtwacht.web.refused import Refusals, RefusedCollector

log = logging.getLogger(__name__)

STATUS_LABELS = [s.label for s in Status]
SEVERITIES = (1, 2, 3)
# how often the store is asked at most, whatever the number of scrapers
STORE_EVERY = 5.0
# 10,000 probes' text (5.8 MB): level 1 takes 31 ms to 515 KB, zlib's default 6 75 ms to 450 KB;
# a scrape every 15-60 s renders (and compresses) anew each time, so CPU counts more than bytes
GZIP_LEVEL = 1


class ProbeCollector(Collector):
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    def collect(self) -> Iterator[Metric]:
        # the per-probe series are text from ProbeSeries; here what is per kind
        scheduler = self.runtime.scheduler
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


# the per-probe families, in the order they are written: (name, type, help)
PROBE_FAMILIES: tuple[tuple[str, str, str], ...] = (
    (
        "nachtwacht_probe_status",
        "gauge",
        "Last check status: 0 ok, 1 warning, 2 critical, 3 unknown",
    ),
    ("nachtwacht_probe_up", "gauge", "1 when the probe's state is ok, else 0"),
    (
        "nachtwacht_probe_state",
        "gauge",
        "1 for the probe's current state (only that state's series is exposed)",
    ),
    ("nachtwacht_probe_latency_seconds", "gauge", "Latency of the last check"),
    ("nachtwacht_probe_value", "gauge", "The number the last check measured"),
    ("nachtwacht_probe_last_check_timestamp_seconds", "gauge", "When the probe last ran"),
    ("nachtwacht_probe_checks_total", "counter", "Checks run since the process started"),
)


def _escape(value: str) -> str:
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


def _number(value: float) -> str:
    text = repr(float(value))
    # repr spells these inf and nan; the exposition format +Inf, -Inf and NaN
    return text if math.isfinite(value) else floatToGoString(value)


class ProbeSeries:
    """The per-probe series as exposition text, built with string joins and kept for `every`
    seconds (of the runtime's clock).

    At 10,000 probes they are ~70,000 lines: as prometheus_client metric families (a Sample
    tuple, a labels dict and a sort per line) one render took ~1 s of CPU on this VM, as text
    ~0.1 s. Kept: two Prometheus replicas scraping the same moment, or a scrape retried after a
    timeout, cost one render; a probe's values are anyway as old as its last check. Scrapes at
    the same time wait for one render (a lock: they come in threads). Only the gzip of the
    text is kept too, as a compressor halfway through (`zlib` `copy()`), so that the series
    read fresh at every scrape (a few hundred lines) are all that is compressed per scrape.
    """

    def __init__(self, runtime: Runtime, every: float = STORE_EVERY) -> None:
        self.runtime = runtime
        self.every = every
        self.rendered_at: float | None = None
        self._text = b""
        self._zipped: tuple[bytes, Any] | None = None  # (gzip so far, its compressor)
        self._lock = threading.Lock()
        # a probe's label set, escaped once per config (a reload makes new configs)
        self._labels: dict[int, tuple[ProbeConfig, str]] = {}

    def text(self) -> bytes:
        with self._lock:
            self._fresh()
            return self._text

    def gzip_with(self, rest: bytes) -> bytes:
        """One gzip member of the per-probe text followed by `rest`."""
        with self._lock:
            self._fresh()
            if self._zipped is None:
                compressor = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, 31)
                self._zipped = (compressor.compress(self._text), compressor)
            head, compressor = self._zipped
            compressor = compressor.copy()
        return head + compressor.compress(rest) + compressor.flush()

    def _fresh(self) -> None:
        now = self.runtime.clock.now()
        if self.rendered_at is not None and 0 <= now - self.rendered_at < self.every:
            return
        self._text = self.render().encode()
        self._zipped = None
        self.rendered_at = now

    def render(self) -> str:
        status: list[str] = []
        up: list[str] = []
        state: list[str] = []
        latency: list[str] = []
        value: list[str] = []
        last: list[str] = []
        checks: list[str] = []
        known = self._labels
        slots = list(self.runtime.scheduler.slots.values())
        if len(known) > 2 * len(slots) + 100:  # probes removed by reloads
            known.clear()
        for slot in slots:
            cfg, st = slot.config, slot.state
            cached = known.get(slot.probe_id)
            if cached is None or cached[0] is not cfg:
                labels = (
                    f'component="{_escape(cfg.component)}",kind="{_escape(cfg.kind)}",'
                    f'probe="{_escape(cfg.name)}"'
                )
                known[slot.probe_id] = (cfg, labels)
            else:
                labels = cached[1]
            lv = "{" + labels + "} "
            checks.append(f"{lv}{float(slot.checks)!r}")
            up.append(lv + ("1.0" if st.state is State.OK else "0.0"))
            state.append(f'{{{labels},state="{st.state.value}"}} 1.0')
            if st.last_status is not None:
                status.append(f"{lv}{float(int(st.last_status))!r}")
            if st.last_latency_ms is not None:
                # microseconds are all a check's latency can tell: shorter lines
                latency.append(lv + _number(round(st.last_latency_ms / 1000, 6)))
            if st.last_value is not None:
                value.append(lv + _number(st.last_value))
            if st.last_check is not None:
                last.append(lv + _number(round(st.last_check, 3)))
        out: list[str] = []
        for (name, kind, help_text), lines in zip(
            PROBE_FAMILIES, (status, up, state, latency, value, last, checks), strict=True
        ):
            out.append(f"# HELP {name} {help_text}\n# TYPE {name} {kind}\n")
            if lines:  # one join in C rather than a concatenation per line
                out.append(name + ("\n" + name).join(lines) + "\n")
        return "".join(out)


def exposition(
    registry: CollectorRegistry, probes: ProbeSeries | None, gzip: bool
) -> tuple[bytes, bool]:
    """The body of a scrape, gzipped when the scraper accepts it; and whether it is."""
    rest = generate_latest(registry)
    if probes is None:
        return (zlib_gzip(rest), True) if gzip else (rest, False)
    if gzip:
        return probes.gzip_with(rest), True
    return probes.text() + rest, False


def accepts_gzip(accept_encoding: str) -> bool:
    """Whether an Accept-Encoding header takes gzip (`gzip;q=0` refuses it)."""
    for part in accept_encoding.lower().split(","):
        name, _, params = part.partition(";")
        if name.strip() in ("gzip", "*"):
            q = params.strip().removeprefix("q=").strip() if "q=" in params else "1"
            try:
                return float(q) > 0
            except ValueError:
                return False
    return False


def zlib_gzip(data: bytes) -> bytes:
    compressor = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, 31)
    return compressor.compress(data) + compressor.flush()


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
