"""The FastAPI app factory. `serve` runs it with uvicorn; the engine lives in its lifespan."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from functools import cache
from pathlib import Path
from typing import Any, cast

from fastapi import Depends, FastAPI, Query, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.staticfiles import StaticFiles

from nachtwacht import __version__
from nachtwacht.agents import api as agents_api
from nachtwacht.alerts import pages as alerts_pages
from nachtwacht.alerts.api import ingest_router as alert_ingest_router
from nachtwacht.alerts.api import router as alerts_router
from nachtwacht.analytics import api as analytics_api
from nachtwacht.analytics import pages as analytics_pages
from nachtwacht.analytics.security import log_request
from nachtwacht.auth import pages as auth_pages
from nachtwacht.auth.api import router as auth_router
from nachtwacht.auth.deps import (
    LOGIN_REQUIRED,
    access,
    audit_change,
    ingest_key,
    login_redirect,
    optional_principal,
    recently_verified,
    require,
    wants_html,
)
from nachtwacht.backup import api as backup_api
from nachtwacht.checklist import api as checklist_api
from nachtwacht.clock import Clock
from nachtwacht.config.redact import settings_secrets
from nachtwacht.config.redactor import Redactor
from nachtwacht.config.schema import Settings
from nachtwacht.drills import api as drills_api
from nachtwacht.drills import pages as drills_pages
from nachtwacht.engine.runtime import Runtime
from nachtwacht.errors import api as errors_api
from nachtwacht.errors import ingest_api as errors_ingest
from nachtwacht.errors import pages as errors_pages
from nachtwacht.evidence import api as evidence_api
from nachtwacht.incidents import pages as incidents_pages
from nachtwacht.incidents.api import ack_router
from nachtwacht.incidents.api import router as incidents_router
from nachtwacht.notify import reach
from nachtwacht.notify.api import router as notify_router
from nachtwacht.oncall import pages as oncall_pages
from nachtwacht.oncall.api import router as oncall_router
from nachtwacht.probes import pages as probes_pages
from nachtwacht.probes.api import router as probes_router
from nachtwacht.reviews import api as reviews_api
from nachtwacht.reviews import pages as reviews_pages
from nachtwacht.runbooks import api as runbooks_api
from nachtwacht.runbooks import pages as runbooks_pages
from nachtwacht.security import api as security_api
from nachtwacht.security import pages as security_pages
from nachtwacht.spool import status as spool_status
from nachtwacht.statuspage import api as statuspage_api
from nachtwacht.statuspage import pages as statuspage_pages
from nachtwacht.store.db import Store, StoreError
from nachtwacht.watchdog import api as watchdog_api
from nachtwacht.web import errors, overview
from nachtwacht.web.bodies import BodyLimits
from nachtwacht.web.errors import ApiError
from nachtwacht.web.headers import SecurityHeaders
from nachtwacht.web.metrics import accepts_gzip, exposition
from nachtwacht.web.ping import router as ping_router
from nachtwacht.web.state import AppState, app_state, install, runtime_of
from nachtwacht.web.status import ResponseStatus


class WorkerOnly:
    """`serve --role worker`: answer /healthz and /metrics, refuse the rest with a pointer."""

    ALLOWED = ("/healthz", "/metrics")

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"] not in self.ALLOWED:
            response = JSONResponse(
                {
                    "detail": "this nachtwacht process is a worker (serve --role worker); "
                    "the dashboard, API and ingestion are on the web members"
                },
                status_code=404,
            )
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)


def create_app(
    settings: Settings,
    store: Store | None = None,
    clock: Clock | None = None,
    start_engine: bool = True,
    role: str = "all",
) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        runtime = Runtime.build(settings, store, clock, role=role)
        tokens = (p.token for p in settings.probes if p.kind == "heartbeat" and hasattr(p, "token"))
        install(app, AppState.of(runtime, heartbeat_tokens=tokens))
        if start_engine:
            runtime.start()
            # the objects of start-up live forever: keep them out of full collections, whose
            # pauses were the only outliers in alert latency (bench/alert_latency.py)
            gc.collect()
            gc.freeze()
        try:
            yield
        finally:
            await runtime.stop()
            if store is None:
                runtime.store.dispose()

    app = FastAPI(
        title="Nachtwacht",
        version=__version__,
        description="Monitoring and emergency response for small operations teams.",
        lifespan=lifespan,
        # the schema is served below, behind a login; the docs UI would load from a CDN
        openapi_url=None,
        docs_url=None,
        redoc_url=None,
    )
    errors.install(app)
    # errors.install registered an async handler; the dict is typed for sync ones too
    json_error = cast(
        Callable[[Request, Exception], Awaitable[Response]], app.exception_handlers[ApiError]
    )

    async def login_first(request: Request, exc: Exception) -> Response:
        # a browser opening a page without a session goes to the login form, and back after
        if isinstance(exc, ApiError) and exc.status_code == 401 and wants_html(request):
            return login_redirect(request)
        return await json_error(request, exc)

    app.add_exception_handler(ApiError, login_first)
    # innermost of ours: its refusals (401, 413, 422) are logged and get the security headers
    app.add_middleware(BodyLimits, settings=settings)
    # after each response: the audit of changes, then the security log (which writes only
    # while the `enable_security_logging` flag is on)
    app.add_middleware(ResponseStatus, hooks=(audit_change, log_request))
    # outermost: error answers and static files get the headers too
    app.add_middleware(SecurityHeaders)
    if settings.status_page.enabled and settings.status_page.host:
        # its own host name: every path there is the status page's
        app.add_middleware(
            statuspage_pages.HostRouting,
            host=settings.status_page.host,
            path=settings.status_page.path,
        )
    if role == "worker":
        # the engine without the dashboard: only what a load balancer or systemd asks
        app.add_middleware(WorkerOnly)
    # public: stylesheets and scripts, vendored so the dashboard works without the internet
    app.mount("/static", StaticFiles(directory=Path(__file__).parent / "static"), name="static")
    # first: every router matched before it costs the busiest route ~40 µs per request;
    # Sentry-compatible and JSON error ingestion authenticate with DSN or ingest keys
    app.include_router(errors_ingest.router)
    app.include_router(auth_router)
    # public: /healthz (its verdict; the details need a viewer), heartbeat pings and
    # acknowledge links (capability URLs with secret tokens); ingestion takes per-source keys;
    # everything else needs a login or API token
    protected = [Depends(access)]
    app.include_router(probes_router, dependencies=protected)
    app.include_router(agents_api.views, dependencies=protected)
    # an agent token, not a login: one location's agent endpoints and nothing else
    app.include_router(agents_api.router)
    app.include_router(incidents_router, dependencies=protected)
    app.include_router(alerts_router, dependencies=protected)
    app.include_router(notify_router, dependencies=protected)
    app.include_router(oncall_router, dependencies=protected)
    for domain in (
        errors_api,
        analytics_api,
        runbooks_api,
        evidence_api,
        checklist_api,
        reviews_api,
        backup_api,
        watchdog_api,
        security_api,
        drills_api,
        statuspage_api,
    ):
        app.include_router(domain.router, dependencies=protected)
    app.include_router(alert_ingest_router, dependencies=[Depends(ingest_key("alerts"))])
    app.include_router(ping_router)
    app.include_router(ack_router)
    app.include_router(oncall_pages.verify_router)
    # the dashboard: /login is public, every other page uses `access` like the API
    for domain_pages in (
        auth_pages,
        overview,
        probes_pages,
        incidents_pages,
        oncall_pages,
        alerts_pages,
        errors_pages,
        analytics_pages,
        runbooks_pages,
        reviews_pages,
        security_pages,
        drills_pages,
        statuspage_pages,
    ):
        app.include_router(domain_pages.router)
    page = settings.status_page
    if page.enabled:
        # public, no login: the status page, its feed and its subscription links
        app.include_router(statuspage_pages.public(settings))

    @app.get("/api/v1/openapi.json", include_in_schema=False)
    async def openapi(_: object = Depends(require("viewer"))) -> JSONResponse:
        return JSONResponse(app.openapi())

    @cache
    def health_redactor() -> Redactor:
        # built once, on first use: the settings never change, and a large config knows
        # thousands of secrets
        return Redactor(settings_secrets(settings))

    @app.get("/healthz", tags=["health"])
    async def healthz(
        request: Request,
        details: bool = Query(False, description="Refuse (401) rather than answer only status."),
    ) -> JSONResponse:
        runtime = runtime_of(request)
        modules = runtime.engine.health()
        # the store down, the spool near full or unwritable is degraded at once, not at the
        # next tick
        state = spool_status.snapshot(runtime, runtime.clock.now())
        # a monitor that can page nobody fails at its one job: degraded like a lost store
        paging = reach.paging_status(settings)
        member = (
            runtime.membership.snapshot(runtime.clock.now())
            if runtime.membership is not None
            else None
        )
        ok = (
            (member is None or member["active"])
            and all(m["healthy"] for m in modules)
            and state["store"]["available"]
            and not state["spool"]["alarm"]
            and not spool_status.failing(state)
            and paging["ok"]
        )
        # down: what arrives is kept nowhere, neither in the store nor in the spool
        down = not state["store"]["available"] and spool_status.failing(state)
        status = "ok" if ok else "down" if down else "degraded"
        code = 200 if ok else 503
        # anonymous callers (load balancers, a second Nachtwacht's probe) hear only the
        # verdict: the details name paths, hosts, raw errors and the version
        try:
            viewer = await optional_principal(request)
        except StoreError:
            viewer = recently_verified(request)
            if viewer is None and details:
                raise ApiError(
                    503,
                    "the store is down and cannot check who is asking; `nachtwacht status` "
                    "on the server shows the details",
                ) from None
        if viewer is None or not viewer.allows("viewer"):
            if details:
                raise ApiError(401, LOGIN_REQUIRED)
            return JSONResponse({"status": status}, status_code=code)
        watchdog = getattr(runtime, "watchdog", None)
        body: dict[str, Any] = {
            "status": status,
            # this instance's clock: a peer probe ages the heartbeat by it, not by its own
            "at": runtime.clock.now(),
            "version": __version__,
            "member": member,
            "modules": modules,
            "probes": len(runtime.scheduler.slots),
            "unwritten_results": runtime.writer.pending,
            "store": state["store"],
            "spool": state["spool"],
            "paging": paging,
            "summary": "; ".join(
                [
                    spool_status.describe(state),
                    *paging["problems"],
                    *([member["problem"]] if member and member["problem"] else []),
                ]
            ),
            "watchdog": watchdog.snapshot() if watchdog is not None else None,
        }
        # raw errors may quote a URL or a command line: nothing secret leaves through here
        return JSONResponse(health_redactor().data(body), status_code=code)

    @app.get("/metrics", tags=["health"])
    async def metrics(request: Request, _: object = Depends(require("metrics"))) -> Response:
        # a token of the metrics role reads this and nothing else (docs/api.md#metrics)
        state = app_state(request)
        await state.store_gauges.refresh()
        # in a thread: at 10,000 probes the per-probe series are 70,000 lines (~0.1 s of CPU
        # when not kept from a scrape < 5 s ago), which must not hold up the checks; the
        # collectors copy what they iterate. Prometheus asks for gzip: ~15x less to send
        gzip = accepts_gzip(request.headers.get("accept-encoding", ""))
        body, zipped = await asyncio.to_thread(exposition, state.metrics, state.probe_series, gzip)
        headers = {"Vary": "Accept-Encoding"}
        if zipped:
            headers["Content-Encoding"] = "gzip"
        return Response(body, media_type=CONTENT_TYPE_LATEST, headers=headers)

    return app
