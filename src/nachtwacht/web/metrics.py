"""/metrics in the Prometheus exposition format, straight from the scheduler's memory."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector, CollectorRegistry

from nachtwacht.engine.runtime import Runtime
from nachtwacht.probes.results import State
from nachtwacht.web.refused import Refusals, RefusedCollector

STATE_VALUES = [s.value for s in State]


class ProbeCollector(Collector):
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
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
        for slot in self.runtime.scheduler.slots.values():
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
        healthy = GaugeMetricFamily(
            "nachtwacht_engine_module_healthy",
            "1 when the engine module is healthy",
            labels=["module"],
        )
        for item in self.runtime.engine.health():
            healthy.add_metric([str(item["module"])], 1.0 if item["healthy"] else 0.0)
        yield healthy
        pending = GaugeMetricFamily(
            "nachtwacht_results_unwritten", "Results waiting to be written to the store"
        )
        pending.add_metric([], float(self.runtime.writer.pending))
        yield pending


def registry_for(runtime: Runtime, refusals: Refusals | None = None) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ProbeCollector(runtime))
    if refusals is not None:
        registry.register(RefusedCollector(refusals))
    return registry
