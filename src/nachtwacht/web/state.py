"""What the app hands its doors: one typed `AppState`, set at lifespan start as `app.state.nw`.

Handlers reach it with `app_state(request)`, or the runtime alone with `runtime_of(request)`
(also usable as a FastAPI dependency), never with `request.app.state.<name>`: those are `Any`,
so mypy could not check what a handler uses.

An app built without the full lifespan (a router mounted alone in a test) installs one with
`install(app, AppState.of(runtime))`; its runtime may be a stand-in with only what the doors
under test use (`store`, `clock`, `settings`, ...).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from starlette.requests import HTTPConnection

if TYPE_CHECKING:
    from prometheus_client.registry import CollectorRegistry

    from nachtwacht.clock import Clock
    from nachtwacht.engine.runtime import Runtime
    from nachtwacht.probes.uptime import UptimeCache
    from nachtwacht.store.db import Store
    from nachtwacht.web.metrics import ProbeSeries, StoreGauges
    from nachtwacht.web.refused import Refusals


@dataclass(frozen=True)
class AppState:
    runtime: Runtime
    # ingestion requests refused, by door and reason (counted for /metrics, logged)
    refusals: Refusals
    # the Prometheus registry /metrics serves
    metrics: CollectorRegistry
    # its series read from the store, refreshed before a scrape is rendered
    store_gauges: StoreGauges
    # the per-probe series, rendered as text apart from the registry (web/metrics.py)
    probe_series: ProbeSeries
    # the tokens of the configured `heartbeat` probes: a ping for any other is refused
    heartbeat_tokens: frozenset[str] = frozenset()

    @property
    def store(self) -> Store:
        return self.runtime.store

    @property
    def clock(self) -> Clock:
        return self.runtime.clock

    @property
    def uptime_cache(self) -> UptimeCache:
        # kept warm by the rollups module
        return self.runtime.uptime_cache

    @classmethod
    def of(cls, runtime: Runtime, heartbeat_tokens: Iterable[str] = ()) -> AppState:
        # imported here: the metrics import the engine, which imports the doors, which import this
        from nachtwacht.web.metrics import ProbeSeries, StoreGauges, registry_for
        from nachtwacht.web.refused import Refusals

        refusals = Refusals(runtime.clock)
        gauges = StoreGauges(runtime)
        return cls(
            runtime,
            refusals,
            registry_for(runtime, refusals, [gauges]),
            gauges,
            ProbeSeries(runtime),
            frozenset(heartbeat_tokens),
        )


def install(app: Any, state: AppState) -> AppState:
    """Hand `state` to the app's doors (a Starlette/FastAPI app)."""
    app.state.nw = state
    return state


def state_of(app: Any) -> AppState:
    """The AppState of a Starlette/FastAPI app (for code holding the app, not a request)."""
    state: AppState = app.state.nw
    return state


def app_state(request: HTTPConnection) -> AppState:
    return state_of(request.app)


def runtime_of(request: HTTPConnection) -> Runtime:
    return state_of(request.app).runtime
