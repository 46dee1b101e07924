"""Dashboard pages (mounted in web/app.py behind `access`); helpers come from web.pages."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from nachtwacht.auth.deps import access

router = APIRouter(include_in_schema=False, dependencies=[Depends(access)])
