"""The store being down is itself an S1 alert, paged without the store.

The outbox, incidents and on-call overrides all live in the store, so when the store is gone
the usual paging path is gone with it. This module watches the spool drainer: once the store
has been unavailable for `watchdog.store_down_grace` (60 s), it sends the page itself, straight
through the configured channels (`notify.channels.send`), to the first step of the S1
escalation policy (on call from the rotation schedule in the config: run-time overrides are in
the store), and repeats it at that step's `repeat` interval. When the store returns it sends a
recovery message, then records the outage as an incident through the normal alert pipeline
(fingerprint `nachtwacht:store`), with every direct page on its timeline; a silence covering
the outage keeps the pipeline from paging a second time for what was already paged.

What was sent is kept in `<spool dir>/watchdog-store-alarm.json` (fsync'd after each delivery),
so a restart does not page again before the repeat interval. A delivery is recorded after the
channel accepted it: a kill -9 between the two re-sends that one message after the restart,
with the same idempotency key (webhook `Idempotency-Key`, email Message-ID).

With the store up, a spool above `spool.alarm_fill` is an S1 alert through the normal pipeline
(fingerprint `nachtwacht:spool`); with the store down the page says how full the spool is.

Why one module of some 440 lines: it is one state machine (`StoreAlarm`: grace, page, repeat,
recover, record) over one state file, and every step reads and writes that state; what it hands
to the normal pipeline afterwards is already apart, in watchdog/outage.py.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from nachtwacht.clock import Clock, iso
from nachtwacht.config.schema import Settings
from nachtwacht.httpclient import HttpClient
from nachtwacht.notify import channels
from nachtwacht.notify.channels import DeliveryError
from nachtwacht.notify.compose import PER_CONTACT, fit
from nachtwacht.oncall.models import Contact
from nachtwacht.oncall.service import backup_of, resolve_target
from nachtwacht.spool.status import megabytes
from nachtwacht.store.db import Store
from nachtwacht.watchdog.outage import (
    FINGERPRINT,
    record_outage,
    spool_signal,
    words,
)

log = logging.getLogger(__name__)

STATE_FILE = "watchdog-store-alarm.json"
MAX_ATTEMPTS = 10
FAILING_SHOWN = 15


@dataclass
class StoreAlarm:
    settings: Settings
    store: Store
    clock: Clock
    drainer: Any  # spool.drain.Drainer
    directory: Path
    http: HttpClient | None = None
    outage: dict[str, Any] | None = None
    last: dict[str, Any] | None = None  # the previous outage, for /healthz and status
    _spool_firing: bool | None = None
    # the probes failing at this moment, from the scheduler's memory (the store is gone)
    failing: Callable[[], list[str]] = field(default=lambda: [], repr=False)
    _loaded: bool = field(default=False, repr=False)

    # -- state file ------------------------------------------------------------------------

    @property
    def path(self) -> Path:
        return self.directory / STATE_FILE

    def load(self) -> None:
        try:
            state = json.loads(self.path.read_text())
        except FileNotFoundError:
            state = {}
        except (OSError, ValueError) as exc:
            log.error("store alarm state %s unreadable (%s); starting afresh", self.path, exc)
            state = {}
        self.outage = state.get("outage")
        self.last = state.get("last")
        self._loaded = True

    def save(self) -> None:
        """Atomically and durably: a restart must see every delivery recorded here."""
        self.directory.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump({"outage": self.outage, "last": self.last}, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.path)
        fd = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    # -- the module ------------------------------------------------------------------------

    async def tick(self, now: float) -> None:
        if not self._loaded:
            self.load()
        if not self.settings.watchdog.store_alarm:
            return
        down = self.drainer.store_down_since
        if down is not None:
            await self._while_down(down, now)
        elif self.outage is not None:
            await self._after(now)
        else:
            await self._spool_alarm(now)
        self._raise_if_failing()

    async def _while_down(self, down: float, now: float) -> None:
        outage = self.outage
        if outage is None:
            outage = self.outage = {
                "since": down,
                "pages": 0,
                "last_page_at": None,
                "recovered_at": None,
                "recorded": False,
                "deliveries": [],
            }
        elif outage["recovered_at"] is not None:
            # down again before the recovery was told: the same outage goes on
            outage["recovered_at"] = None
            for d in outage["deliveries"]:
                if d["kind"] == "resolved" and d["sent_at"] is None:
                    d["attempts"], d["error"] = MAX_ATTEMPTS, "cancelled: the store went down again"
        outage["error"] = self.drainer.last_error
        grace = float(self.settings.watchdog.store_down_grace)
        if now - outage["since"] >= grace and self._page_due(outage, now):
            self._new_round(outage, now)
            self.save()
        await self._deliver(now)

    def _page_due(self, outage: dict[str, Any], now: float) -> bool:
        if outage["last_page_at"] is None:
            return True
        repeat = self._step().repeat
        return repeat is not None and now - outage["last_page_at"] >= float(repeat)

    async def _after(self, now: float) -> None:
        outage = self.outage
        assert outage is not None
        if outage["pages"] == 0:
            # back within the grace: nobody was paged, there is nothing to tell or record
            self.outage = None
            self.save()
            return
        if outage["recovered_at"] is None:
            outage["recovered_at"] = now
            self._recovery(outage, now)
            self.save()
        await self._deliver(now)
        if not outage["recorded"]:
            outage["incident_id"] = await asyncio.to_thread(self._record, outage, now)
            outage["recorded"] = True
            self.save()
        if all(
            d["sent_at"] is not None or d["attempts"] >= MAX_ATTEMPTS for d in outage["deliveries"]
        ):
            self.last, self.outage = outage, None
            self.save()

    def _raise_if_failing(self) -> None:
        outage = self.outage
        if outage is None:
            return
        failing = [d for d in outage["deliveries"] if d["sent_at"] is None and d["error"]]
        if failing:
            first = failing[0]
            target = first["channel"] if first["contact"] is None else first["who"]
            raise RuntimeError(
                f"store-down page not delivered to {target}: {first['error']} "
                f"({len(failing)} failing)"
            )
        if outage["pages"] and not outage["deliveries"]:
            raise RuntimeError("the store is down and the S1 policy reaches nobody to page")

    # -- whom, and what --------------------------------------------------------------------

    def _step(self) -> Any:
        _name, policy = self.settings.incidents.policy_for(1)
        return policy.steps[0]

    def recipients(self, now: float, round_no: int) -> list[tuple[str, Contact | None, str | None]]:
        """(channel, contact, address) per message, resolved from the config alone."""
        step = self._step()
        people: dict[str, Contact] = {}
        only: list[str] = []
        for target in step.notify:
            if target.startswith("channel:"):
                only.append(target.partition(":")[2])
                continue
            for contact in resolve_target(None, self.settings, target, now):
                people.setdefault(contact.id, contact)
        if step.backup_after is not None and round_no > step.backup_after:
            for contact in list(people.values()):
                backup = backup_of(self.settings, contact)
                if backup is not None:
                    people.setdefault(backup.id, backup)
        configured = self.settings.notify.channels
        if only:
            names = [n for n, c in configured.items() if c.kind in PER_CONTACT] + only
        else:
            names = list(configured)
        out: list[tuple[str, Contact | None, str | None]] = []
        for name in dict.fromkeys(names):
            cfg = configured.get(name)
            if cfg is None:
                continue
            if cfg.kind in PER_CONTACT:
                for person in people.values():
                    address = person.email if cfg.kind == "email" else person.phone
                    if address:
                        out.append((name, person, address))
            else:
                out.append((name, None, None))
        return out

    def _new_round(self, outage: dict[str, Any], now: float) -> None:
        outage["pages"] += 1
        outage["last_page_at"] = now
        n = outage["pages"]
        subject = f"[S1] {self.settings.site}: Nachtwacht's store is unavailable"
        text = self._page_text(outage, now)
        self._add(outage, "emergency_alert", f"page{n}", subject, text, now, n)
        log.error("store down for %.0f s: S1 page %d sent directly", now - outage["since"], n)

    def _recovery(self, outage: dict[str, Any], now: float) -> None:
        subject = f"[resolved] {self.settings.site}: Nachtwacht's store is available again"
        text = (
            f"Nachtwacht reaches its store ({self.store.describe()}) again since "
            f"{self._local(now)}, after {words(now - outage['since'])} down "
            f"(from {self._local(outage['since'])}).\n\n"
            "What arrived meanwhile is being replayed from the spool into the store. The "
            f"outage is recorded as an S1 incident (fingerprint {FINGERPRINT}) on its timeline."
        )
        # the recovery goes to everyone the outage paged
        seen = {
            (d["channel"], d["contact"]) for d in outage["deliveries"] if d["kind"] != "resolved"
        }
        self._add(outage, "resolved", "recovered", subject, text, now, None, only=seen)

    def _add(
        self,
        outage: dict[str, Any],
        kind: str,
        tag: str,
        subject: str,
        text: str,
        now: float,
        round_no: int | None,
        only: set[tuple[str, str | None]] | None = None,
    ) -> None:
        configured = self.settings.notify.channels
        for channel, person, address in self.recipients(now, round_no or outage["pages"]):
            contact = person.id if person else None
            if only is not None and (channel, contact) not in only:
                continue
            body = text
            cfg = configured[channel]
            if cfg.kind == "sms":
                body = fit(f"{subject}. {text}", None, cfg.max_length)
            outage["deliveries"].append(
                {
                    "key": f"{FINGERPRINT}:{int(outage['since'])}:{tag}:{channel}:{contact or '*'}",
                    "kind": kind,
                    "round": round_no,
                    "channel": channel,
                    "contact": contact,
                    "who": person.name if person else channel,
                    "address": address,
                    "subject": subject,
                    "body": body,
                    "created_at": now,
                    "sent_at": None,
                    "attempts": 0,
                    "error": None,
                }
            )

    def _page_text(self, outage: dict[str, Any], now: float) -> str:
        spool = self.drainer.spool
        step = self._step()
        repeat = (
            f"This page repeats every {words(float(step.repeat))} until the store is back."
            if step.repeat
            else "This page is not repeated."
        )
        full = ""
        if spool.fill >= self.settings.spool.alarm_fill:
            full = (
                f"\nTHE SPOOL IS {spool.fill:.0%} FULL: when it is full, new heartbeats, alerts "
                "and results are refused (503) until the store is back.\n"
            )
        return (
            f"Nachtwacht cannot reach its store ({self.store.describe()}) since "
            f"{self._local(outage['since'])} ({words(now - outage['since'])}).\n"
            f"Last error: {outage.get('error') or 'unknown'}\n\n"
            f"{self._failing_text()}"
            "Meanwhile Nachtwacht keeps accepting heartbeats, external alerts and probe results "
            f"into its local spool ({megabytes(self.drainer.backlog_bytes)} waiting, "
            f"{spool.fill:.1%} of {megabytes(spool.max_bytes)} used) and stores them when the "
            "store returns. Incidents cannot be opened, acknowledged or paged the usual way "
            "until then: this message was sent directly.\n"
            f"{full}\n"
            "What to do: check the database server, its disk and the network to it; "
            "`nachtwacht doctor` checks the whole installation.\n"
            f"{repeat}"
        )

    def _failing_text(self) -> str:
        try:
            failing = self.failing()
        except Exception:  # the page goes out whatever this costs
            log.exception("listing failing probes for the store-down page")
            return ""
        if not failing:
            return "No probe is failing at this moment.\n\n"
        shown = failing[:FAILING_SHOWN]
        more = len(failing) - len(shown)
        lines = "".join(f"- {line}\n" for line in shown)
        if more:
            lines += f"- and {more} more\n"
        return f"Probes failing at this moment ({len(failing)}):\n{lines}\n"

    def _local(self, ts: float) -> str:
        return datetime.fromtimestamp(ts, self.settings.zone).strftime("%Y-%m-%d %H:%M:%S %Z")

    # -- sending ---------------------------------------------------------------------------

    async def _deliver(self, now: float) -> None:
        outage = self.outage
        if outage is None:
            return
        due = [
            d for d in outage["deliveries"] if d["sent_at"] is None and d["attempts"] < MAX_ATTEMPTS
        ]
        if not due:
            return
        client = self.http or HttpClient(follow_redirects=False)
        try:
            await asyncio.gather(*(self._send_one(client, d, outage) for d in due))
        finally:
            if self.http is None:
                await client.aclose()

    async def _send_one(
        self, client: HttpClient, d: dict[str, Any], outage: dict[str, Any]
    ) -> None:
        cfg = self.settings.notify.channels.get(d["channel"])
        d["attempts"] += 1
        message = {
            "id": None,
            "key": d["key"],
            "kind": d["kind"],
            "channel": d["channel"],
            "contact": d["contact"],
            "contact_name": d["who"] if d["contact"] else None,
            "address": d["address"],
            "subject": d["subject"],
            "body": d["body"],
            "payload": {
                "kind": d["kind"],
                "site": self.settings.site,
                "fingerprint": FINGERPRINT,
                "severity": 1,
                "status": "resolved" if d["kind"] == "resolved" else "store_down",
                "down_since": iso(outage["since"]),
                "ack_url": None,
            },
            "incident_id": None,
            "attempt": d["attempts"],
            "now": self.clock.now(),
        }
        try:
            if cfg is None:
                raise DeliveryError(f"channel '{d['channel']}' is not in the config any more", True)
            async with asyncio.timeout(4 * float(getattr(cfg, "timeout", 10.0)) + 10):
                await channels.send(cfg, message, client)
        except DeliveryError as exc:
            d["error"] = str(exc)[:500]
            if exc.permanent:
                d["attempts"] = MAX_ATTEMPTS
        except Exception as exc:  # a broken channel must not stop the other pages
            d["error"] = f"{exc.__class__.__name__}: {exc}"[:500]
        else:
            d["sent_at"], d["error"] = self.clock.now(), None
        if d["error"]:
            target = d["channel"] if d["contact"] is None else f"{d['who']} by {d['channel']}"
            log.error("direct %s to %s failed: %s", d["kind"], target, d["error"])
        self.save()  # at once: a restart must not page this recipient again

    # -- after the outage, and the spool near full: through the alert pipeline ------------

    def _record(self, outage: dict[str, Any], now: float) -> int | None:
        grace = float(self.settings.watchdog.store_down_grace)
        return record_outage(self.settings, self.store, outage, grace, now)

    async def _spool_alarm(self, now: float) -> None:
        spool = self.drainer.spool
        firing = spool.fill >= self.settings.spool.alarm_fill
        if firing == self._spool_firing:
            return
        await asyncio.to_thread(spool_signal, self.settings, self.store, spool, firing, now)
        self._spool_firing = firing

    def snapshot(self) -> dict[str, Any]:
        def brief(o: dict[str, Any] | None) -> dict[str, Any] | None:
            if o is None:
                return None
            return {
                "since": iso(o["since"]),
                "recovered_at": iso(o.get("recovered_at")),
                "pages": o["pages"],
                "last_page_at": iso(o.get("last_page_at")),
                "delivered": sum(1 for d in o["deliveries"] if d["sent_at"] is not None),
                "failing": sum(1 for d in o["deliveries"] if d["sent_at"] is None and d["error"]),
                "incident_id": o.get("incident_id"),
            }

        return {
            "enabled": self.settings.watchdog.store_alarm,
            "grace": self.settings.watchdog.store_down_grace,
            "outage": brief(self.outage),
            "last": brief(self.last),
        }
