"""JSON API routes under /api/v1 (protected by `access`, mounted in web/app.py)."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter()
