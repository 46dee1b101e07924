"""Incident states, event kinds and roles, shared by service, API and CLI."""

from __future__ import annotations

from typing import Literal

STATUSES = ("investigating", "mitigating", "monitoring", "resolved", "closed")
OPEN_STATUSES = ("investigating", "mitigating", "monitoring")
Status = Literal["investigating", "mitigating", "monitoring", "resolved", "closed"]
Role = Literal["commander", "responder"]

# every kind of timeline entry
EVENT_KINDS = (
    "detected",  # opened from an alert
    "declared",  # opened by hand
    "alert",  # an alert joined, resolved, or was muted
    "notification_queued",
    "notification_sent",
    "notification_failed",
    "notification_deferred",  # held by a rate limit, with the time it goes out
    "notification_withdrawn",  # queued, then cancelled: an ack or resolution made it untrue
    "not_delivered",  # a page that no configured channel could carry to someone it was for
    "acknowledged",
    "status",
    "severity",
    "assigned",
    "escalated",
    "breach",
    "update",  # a status update was posted
    "update_overdue",
    "note",
    "resolved",
    "closed",
    "reopened",
    "external_support",
    "customer_communication",
)
