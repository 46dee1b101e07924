"""The items of the protocol's Service Restoration Checklist that read the store and the config.

Each item is `async def item(ctx) -> ItemResult` and backs its line of the protocol with a
real check, run now. What is not configured here (no sql probes, no analytics engine) is said
in the item's detail, so a pass never hides that nothing was looked at. The HTTP-facing items
are in `live_items.py`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, case, func, select

from nachtwacht.backup.integrity import check_store
from nachtwacht.clock import Clock, iso
from nachtwacht.config.schema import Settings
from nachtwacht.probes import registry
from nachtwacht.probes.context import ProbeContext
from nachtwacht.probes.results import CheckResult, Status
from nachtwacht.reviews.models import ChecklistSettings
from nachtwacht.store import tables as t
from nachtwacht.store.db import Store, StoreError

# the protocol's words for each item, in its order
LABELS: dict[str, str] = {
    "database": "Database connectivity restored",
    "web": "Web services responding normally",
    "dashboard": "Monitoring dashboard accessible",
    "analytics": "Analytics engine functional",
    "performance": "Performance optimization operational (baseline)",
    "api": "All monitoring APIs responding",
    "caches": "Cache systems operational",
    "alerts": "Alert systems functional",
    "integrity": "Data integrity verified",
    "access": "Security access controls verified",
}
ITEMS: tuple[str, ...] = tuple(LABELS)
FAILING = (Status.CRITICAL, Status.UNKNOWN)


@dataclass
class ItemResult:
    item: str
    ok: bool
    detail: str
    skipped: bool = False
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "item": self.item,
            "label": LABELS.get(self.item, self.item),
            "ok": self.ok,
            "skipped": self.skipped,
            "detail": self.detail,
            "seconds": round(self.seconds, 3),
        }


@dataclass
class Context:
    """What one checklist run works with; `app` is set when the server itself runs it."""

    settings: Settings
    store: Store
    clock: Clock
    actor: str = "checklist"
    incident_id: int | None = None
    app: Any = None
    reached: tuple[bool, str] | None = field(default=None, repr=False)

    @classmethod
    def in_server(cls, runtime: Any, actor: str, incident_id: int | None, app: Any) -> Context:
        """A run by the server itself: the APIs are asked in-process, of this very app.

        Here rather than in checklist/api.py so that the review pages, another domain's door,
        start one without importing this one's.
        """
        return cls(
            runtime.settings, runtime.store, runtime.clock, actor, incident_id=incident_id, app=app
        )

    @property
    def cfg(self) -> ChecklistSettings:
        return self.settings.reviews.checklist

    @property
    def url(self) -> str:
        """Where the dashboard answers: configured, else the server's listen address."""
        if self.cfg.url:
            return self.cfg.url.rstrip("/")
        host = self.settings.server.host
        host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.settings.server.port}"


async def _read(ctx: Context, work: Callable[[Connection], Any]) -> Any:
    def run() -> Any:
        with ctx.store.connect() as conn:
            return work(conn)

    return await asyncio.to_thread(run)


# -- probes run now ------------------------------------------------------------------------


async def run_probes(ctx: Context, kind: str) -> list[tuple[str, CheckResult]]:
    """Every enabled probe of `kind` in the config, run once now (in parallel)."""
    configs = [p for p in ctx.settings.probes if p.kind == kind and p.enabled]
    if not configs:
        return []
    probe_ctx = ProbeContext(clock=ctx.clock, store=ctx.store, data_dir=ctx.settings.data_dir)
    probes = [registry.build(p, probe_ctx) for p in configs]
    try:
        results = await asyncio.gather(*(p.run() for p in probes))
    finally:
        for p in probes:
            await p.close()
        await probe_ctx.close()
    return [(p.name, r) for p, r in zip(configs, results, strict=True)]


def probe_lines(results: list[tuple[str, CheckResult]]) -> tuple[bool, list[str]]:
    """(no probe critical or unknown, one phrase per probe)."""
    ok = all(r.status not in FAILING for _, r in results)
    return ok, [f"{name} {r.status.label}: {r.message}" for name, r in results]


async def database(ctx: Context) -> ItemResult:
    started = time.perf_counter()
    try:
        await _read(ctx, lambda conn: conn.execute(select(1)).scalar_one())
    except StoreError as exc:
        return ItemResult("database", False, f"the store does not answer: {exc}")
    parts = [
        f"store {ctx.store.dialect} answered in {(time.perf_counter() - started) * 1000:.1f} ms"
    ]
    ok, lines = probe_lines(await run_probes(ctx, "sql"))
    parts += lines or ["no sql probes configured"]
    return ItemResult("database", ok, "; ".join(parts))


async def web(ctx: Context) -> ItemResult:
    results = await run_probes(ctx, "http")
    if not results:
        return ItemResult("web", True, "no http probes configured: nothing to check", skipped=True)
    ok, lines = probe_lines(results)
    return ItemResult("web", ok, "; ".join(lines))


async def caches(ctx: Context) -> ItemResult:
    now = ctx.clock.now()
    try:
        total, expired = await _read(
            ctx,
            lambda conn: conn.execute(
                select(
                    func.count(),
                    func.coalesce(
                        func.sum(case((t.analytics_cache.c.expires_at <= now, 1), else_=0)), 0
                    ),
                ).select_from(t.analytics_cache)
            ).one(),
        )
    except StoreError as exc:
        return ItemResult("caches", False, f"analytics cache unreadable: {exc}")
    ok, lines = probe_lines(await run_probes(ctx, "redis"))
    lines.append(f"analytics cache readable ({total} entries, {expired} expired)")
    if not any(p.kind == "redis" for p in ctx.settings.probes if p.enabled):
        lines.insert(0, "no redis probes configured")
    return ItemResult("caches", ok, "; ".join(lines))


# -- analytics and the performance baseline --------------------------------------------------
# The analytics package is called directly, uncached: its cache would hide an engine that
# fails now. A build without it (or with other names) is noted, and the flags and the error
# tables are still checked.


def _analyze(ctx: Context, conn: Connection) -> Any:
    from nachtwacht.analytics.patterns import analyze_error_patterns

    s = ctx.settings
    return analyze_error_patterns(
        conn, ctx.clock.now(), 1, s.zone, s.business_hours, s.analytics.patterns
    )


def _compare(ctx: Context, conn: Connection) -> Any:
    from nachtwacht.analytics.baselines import compare

    return compare(conn, ctx.clock.now(), ctx.settings.analytics.baseline)


def _flag(conn: Connection, name: str) -> bool | None:
    row = conn.execute(select(t.flags.c.enabled).where(t.flags.c.name == name)).first()
    return None if row is None else bool(row[0])


def _failing_modules(conn: Connection, prefix: str) -> list[str]:
    h = t.module_health.c
    rows = conn.execute(
        select(h.module, h.last_error).where(h.module.like(f"{prefix}%"), h.consecutive_errors > 0)
    ).all()
    return [f"{m}: {e}" for m, e in rows]


async def analytics(ctx: Context) -> ItemResult:
    def work(conn: Connection) -> ItemResult:
        problems: list[str] = []
        notes: list[str] = []
        if _flag(conn, "disable_advanced_analytics"):
            problems.append(
                "analytics is in fallback mode (flag disable_advanced_analytics is on; "
                "`nachtwacht flags set disable_advanced_analytics off`)"
            )
        problems += [f"engine module {m}" for m in _failing_modules(conn, "analytics")]
        issues = conn.execute(select(func.count()).select_from(t.error_issues)).scalar_one()
        events = conn.execute(select(func.count()).select_from(t.error_events)).scalar_one()
        notes.append(f"error tables readable ({issues} issues, {events} events)")
        started = time.perf_counter()
        try:
            _analyze(ctx, conn)
        except ImportError:
            notes.append("no analytics engine in this build: checked the flags and tables only")
        except Exception as exc:  # the engine failing is exactly what this item reports
            problems.append(f"analyze_error_patterns(days=1) failed: {exc!r}"[:300])
        else:
            took = (time.perf_counter() - started) * 1000
            notes.append(f"analyze_error_patterns(days=1) answered in {took:.0f} ms")
        return ItemResult("analytics", not problems, "; ".join(problems + notes))

    try:
        return await _read(ctx, work)
    except StoreError as exc:
        return ItemResult("analytics", False, f"cannot read the analytics state: {exc}")


async def performance(ctx: Context) -> ItemResult:
    def work(conn: Connection) -> ItemResult:
        b = t.baselines.c
        row = (
            conn.execute(select(t.baselines).order_by(b.captured_at.desc(), b.id.desc()).limit(1))
            .mappings()
            .first()
        )
        if row is None:
            # a fresh install has none until it has run healthy for a while: say what to do
            # rather than refuse every S1/S2 resolution until someone knows the command
            try:
                from nachtwacht.analytics.first_baseline import no_baseline_yet
            except ImportError:
                return ItemResult("performance", True, "no baseline comparison in this build")
            return ItemResult("performance", True, no_baseline_yet(ctx.settings.analytics.baseline))
        notes = [f"baseline '{row['name']}' captured {iso(row['captured_at'])}"]
        if _flag(conn, "enable_performance_optimization") is False:
            notes.append("performance optimisation is switched off (flag)")
        try:
            found = _compare(ctx, conn)
        except ImportError:
            notes.append("no baseline comparison in this build: checked that it exists")
            return ItemResult("performance", True, "; ".join(notes))
        except Exception as exc:
            return ItemResult("performance", False, f"baseline comparison failed: {exc!r}"[:300])
        regressions = found.get("regressions") if isinstance(found, dict) else None
        if regressions:
            names = [str(r.get("name", r)) if isinstance(r, dict) else str(r) for r in regressions]
            return ItemResult(
                "performance",
                False,
                f"{len(names)} regressions against the baseline: {', '.join(names[:5])}",
            )
        notes.append("no regressions against it")
        return ItemResult("performance", True, "; ".join(notes))

    try:
        return await _read(ctx, work)
    except StoreError as exc:
        return ItemResult("performance", False, f"cannot read the baselines: {exc}")


# -- data integrity --------------------------------------------------------------------------


def integrity_check(store: Store) -> tuple[bool, str]:
    """The store's own integrity check (`nachtwacht store check`): (ok, one line)."""
    report = check_store(store)
    if not report.ok:
        return False, report.summary()
    passed = ", ".join(c.name for c in report.checks if c.status == "ok")
    return True, f"{report.backend}: {passed} ok"


async def integrity(ctx: Context) -> ItemResult:
    ok, detail = await asyncio.to_thread(integrity_check, ctx.store)
    return ItemResult("integrity", ok, detail)
