"""Ingestion routes: Sentry envelope/store endpoints and the plain JSON endpoint.

Authenticated by the project's DSN key (Sentry) or an ingest key, not by a login.
"""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter()
