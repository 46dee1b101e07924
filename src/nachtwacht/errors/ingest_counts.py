"""What the error ingestion did in this process, for /metrics (read by web/metrics.py).

Requests refused by reason (an envelope of several events is one request), and events
accepted into the spool. `auth` is a key or project refused; which one is in
nachtwacht_ingest_refused_total{door="errors"} (web/refused.py). A JSON event refused by
validation before its handler runs (422), or by its ingest key, is counted only there.
"""

from __future__ import annotations

from nachtwacht.meter import Tally

# the spool record kind of an accepted event (what the drainer counts as stored)
RECORD_KIND = "error_event"
REFUSED_REASONS = ("invalid", "too_large", "auth", "busy", "spool_full", "unavailable")
REFUSED = Tally(REFUSED_REASONS)
ACCEPTED = Tally(("events",))
