"""External alerts: a generic JSON body and Prometheus Alertmanager's webhook, as `Signal`s.

Both doors only translate; the pipeline in `alerts.service` decides what a signal means
(dedup, muting, grouping, paging). Parsing goes through pydantic models so that a bad request
is refused with the field it concerns and nothing is written.

Text is held to `nachtwacht.config.limits`: the generic door refuses what is longer (its caller
wrote it and hears why); Alertmanager's door cuts it instead, since a refused notification is
an alert nobody hears of and Alertmanager cannot shorten it anyway.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator

from nachtwacht.alerts.service import Signal
from nachtwacht.config import limits

FINGERPRINT_MAX = 200  # alerts.fingerprint is String(200)

# Alertmanager severities in the wild, mapped onto the protocol's S1/S2/S3
_SEVERITY = {
    "critical": 1,
    "page": 1,
    "high": 2,
    "error": 2,
    "major": 2,
    "warning": 3,
    "medium": 3,
    "minor": 3,
    "info": 3,
    "low": 3,
}
_COMPONENT_LABELS = ("component", "service", "job", "instance")


class GenericAlert(BaseModel):
    """The body of POST /api/v1/alerts."""

    model_config = ConfigDict(extra="forbid")

    title: str = Field(min_length=1, max_length=limits.TITLE)
    component: str = Field("external", min_length=1, max_length=limits.NAME)
    severity: Literal[1, 2, 3] = 2
    status: Literal["firing", "resolved"] = "firing"
    fingerprint: str | None = Field(None, min_length=1, max_length=FINGERPRINT_MAX - 4)
    message: str = Field("", max_length=limits.TEXT)
    started_at: AwareDatetime | None = None
    labels: dict[str, Any] = Field(default_factory=dict, max_length=limits.LABELS)

    @field_validator("labels")
    @classmethod
    def _short_labels(cls, labels: dict[str, Any]) -> dict[str, Any]:
        for key, value in labels.items():
            if len(key) > limits.LABEL_KEY:
                raise ValueError(f"a label name is longer than {limits.LABEL_KEY} characters")
            if len(value if isinstance(value, str) else json.dumps(value)) > limits.LABEL_VALUE:
                raise ValueError(
                    f"label '{key[:40]}' is longer than {limits.LABEL_VALUE} characters"
                )
        return labels


class AlertmanagerAlert(BaseModel):
    """One alert of an Alertmanager webhook notification (fields we do not use are kept)."""

    model_config = ConfigDict(extra="allow")

    status: Literal["firing", "resolved"]
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)
    startsAt: datetime | None = None  # noqa: N815 - Alertmanager's own spelling
    endsAt: datetime | None = None  # noqa: N815
    generatorURL: str = ""  # noqa: N815
    fingerprint: str | None = None


class AlertmanagerWebhook(BaseModel):
    """Alertmanager's webhook_config payload, version 4."""

    model_config = ConfigDict(extra="allow")

    version: str = "4"
    receiver: str = ""
    status: Literal["firing", "resolved"] = "firing"
    alerts: list[AlertmanagerAlert]
    groupKey: str = ""  # noqa: N815
    truncatedAlerts: int = 0  # noqa: N815


def generic_fingerprint(component: str, title: str) -> str:
    digest = hashlib.sha1(f"{component}\n{title}".encode(), usedforsecurity=False).hexdigest()
    return f"api:{digest}"


def _started(value: datetime | None, now: float) -> float:
    # a sender's clock may run ahead of ours; an alert cannot start after we heard of it
    if value is None:
        return now
    if value.tzinfo is None:  # Alertmanager always sends an offset; be lenient anyway
        value = value.replace(tzinfo=UTC)
    return min(value.timestamp(), now)


def signal_from_generic(body: GenericAlert, now: float) -> Signal:
    if body.fingerprint is None:
        fingerprint = generic_fingerprint(body.component, body.title)
    elif body.fingerprint.startswith("api:"):
        fingerprint = body.fingerprint
    else:
        # namespaced so that an API caller can never resolve or hijack a probe's alert
        fingerprint = f"api:{body.fingerprint}"
    return Signal(
        fingerprint=fingerprint,
        source="api",
        title=body.title,
        component=body.component,
        severity=body.severity,
        firing=body.status == "firing",
        started_at=_started(body.started_at, now),
        detected_at=now,
        message=body.message,
        labels=dict(body.labels),
    )


def from_generic(payload: dict[str, Any], now: float) -> Signal:
    """A Signal from the generic JSON body; raises pydantic.ValidationError on bad input."""
    return signal_from_generic(GenericAlert.model_validate(payload), now)


def severity_from_label(value: str | None) -> int:
    if not value:
        return 2
    return _SEVERITY.get(value.strip().lower(), 2)


def component_from_labels(labels: dict[str, str]) -> str:
    for key in _COMPONENT_LABELS:
        value = labels.get(key, "").strip()
        if value:
            return value[: limits.NAME]
    return "external"


def _am_fingerprint(alert: AlertmanagerAlert) -> str:
    if alert.fingerprint:
        return f"am:{alert.fingerprint}"[:FINGERPRINT_MAX]
    # Alertmanager before 0.19 sent no fingerprint; its own is a hash of the label set too
    canonical = json.dumps(alert.labels, sort_keys=True, separators=(",", ":"))
    return "am:" + hashlib.sha1(canonical.encode(), usedforsecurity=False).hexdigest()[:16]


def signal_from_alertmanager_alert(alert: AlertmanagerAlert, now: float) -> Signal:
    labels = alert.labels
    annotations = alert.annotations
    component = component_from_labels(labels)
    title = annotations.get("summary", "").strip()
    if not title:
        title = labels.get("alertname", "").strip() or "Alertmanager alert"
        instance = labels.get("instance", "").strip()
        if instance and instance != component:
            # several instances firing one rule would otherwise be indistinguishable
            title = f"{title} on {instance}"
    message = annotations.get("description", "").strip()[: limits.TEXT]
    if alert.generatorURL:
        message = f"{message}\nSource: {alert.generatorURL[: limits.TITLE]}".strip()
    return Signal(
        fingerprint=_am_fingerprint(alert),
        source="alertmanager",
        title=title[: limits.TITLE],
        component=component,
        severity=severity_from_label(labels.get("severity")),
        firing=alert.status == "firing",
        started_at=_started(alert.startsAt, now),
        detected_at=now,
        message=message,
        labels={
            k[: limits.LABEL_KEY]: v[: limits.LABEL_VALUE]
            for k, v in list(labels.items())[: limits.LABELS]
        },
    )


def signals_from_alertmanager(body: AlertmanagerWebhook, now: float) -> list[Signal]:
    return [signal_from_alertmanager_alert(a, now) for a in body.alerts]


def from_alertmanager(payload: dict[str, Any], now: float) -> list[Signal]:
    """Signals from an Alertmanager webhook body; raises pydantic.ValidationError on bad input."""
    return signals_from_alertmanager(AlertmanagerWebhook.model_validate(payload), now)


__all__ = [
    "AlertmanagerAlert",
    "AlertmanagerWebhook",
    "GenericAlert",
    "component_from_labels",
    "from_alertmanager",
    "from_generic",
    "generic_fingerprint",
    "severity_from_label",
    "signal_from_generic",
    "signals_from_alertmanager",
]
