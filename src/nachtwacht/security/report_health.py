"""The detector's health as the Security page and the report show it: the `security` engine
module's row in module_health, and how far each source's stored read position is behind its
file (a detector that falls behind its log says so instead of skipping lines)."""

from __future__ import annotations

import json
import os

from sqlalchemy import Connection, select

from nachtwacht.security.models import SecuritySettings
from nachtwacht.security.report_models import Health, SourceLag, cut
from nachtwacht.store import tables as t
from nachtwacht.store.db import meta_key

MODULE = "security"


def _lag(conn: Connection, settings: SecuritySettings) -> list[SourceLag]:
    out = []
    for source in settings.sources:
        row = conn.execute(
            select(t.engine_meta.c.value).where(
                t.engine_meta.c.key == meta_key("security.", source.name)
            )
        ).first()
        lag, note = None, "not read yet"
        where = source.path or source.kind
        if source.kind == "journal":
            place = source.directory or source.file
            where = f"journal: {', '.join(source.units)}" + (f" in {place}" if place else "")
        if row is not None and source.kind in ("journal", "frappe_activity"):
            # a cursor, not a byte offset: how far behind is the module's health ("behind")
            note = "read up to its stored cursor"
        elif not source.path:
            pass  # the own log without a path: analytics.security_log, not known here
        elif row is not None:
            pos = json.loads(row[0])
            try:
                st = os.stat(source.path)
            except OSError as exc:
                note = f"cannot read: {exc.strerror or exc}"
            else:
                if pos.get("inode") == st.st_ino and pos.get("dev") == st.st_dev:
                    lag = max(0, st.st_size - int(pos.get("offset") or 0))
                    note = "caught up" if lag == 0 else f"{lag} bytes not read yet"
                else:
                    note = "rotated: the new file is next"
        out.append(SourceLag(cut(source.name, 100), cut(where, 300), lag, note))
    return out


def health(conn: Connection, settings: SecuritySettings, now: float) -> Health:
    """The `security` engine module's row: `behind` when its last good tick is older than
    three intervals (30 s at least: the engine persists its health every 15 s)."""
    h = t.module_health.c
    row = conn.execute(select(t.module_health).where(h.module == MODULE)).mappings().first()
    interval = float(settings.interval)
    if row is None:
        state = "waiting" if settings.sources else "off"
        return Health(state, interval, None, None, None, None, 0, _lag(conn, settings))
    limit = max(3 * interval, 30.0)
    stale = row["last_ok"] is None or now - row["last_ok"] > limit
    ticking = row["last_tick"] is not None and now - row["last_tick"] <= limit
    # ticks that raise (a missing log) are "failing" even when no tick was ever good: "behind"
    # would send the reader looking for a slow watch; a module that stopped ticking is behind
    errors = bool(row["consecutive_errors"])
    state = "failing" if errors and (ticking or not stale) else ("behind" if stale else "ok")
    return Health(
        state=state,
        interval=interval,
        last_tick=row["last_tick"],
        last_ok=row["last_ok"],
        last_error=cut(row["last_error"], 500) or None,
        last_error_at=row["last_error_at"],
        consecutive_errors=int(row["consecutive_errors"] or 0),
        sources=_lag(conn, settings),
    )
