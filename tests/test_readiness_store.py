"""The readiness tables on every backend: an obligation is claimed once per key (also when two
connections race for it), confirm links confirm once, a restore test's result is recorded."""

from __future__ import annotations

import re

from sqlalchemy import select

from nachtwacht.backup import restoretest
from nachtwacht.clock import FakeClock
from nachtwacht.config.loader import parse_config
from nachtwacht.oncall import verify
from nachtwacht.store import tables as t
from nachtwacht.store.db import Store
from nachtwacht.store.obligations import once


def test_an_obligation_is_claimed_once_per_key(store: Store, clock: FakeClock) -> None:
    now = clock.now()
    with store.begin() as conn:
        assert once(conn, "handoff:primary:1", "handoff", now)
        assert not once(conn, "handoff:primary:1", "handoff", now + 1)
        assert once(conn, "handoff:primary:2", "handoff", now)
    with store.begin() as conn:
        assert not once(conn, "handoff:primary:2", "handoff", now + 2)
        assert len(conn.execute(select(t.readiness_obligations)).all()) == 2


def test_an_obligation_row_another_process_inserted_first_is_theirs(
    store: Store, clock: FakeClock
) -> None:
    """The second insert hits the unique key; its savepoint rolls back, its transaction lives."""
    with store.begin() as conn:
        conn.execute(
            t.readiness_obligations.insert().values(
                key="reverify:a:mail:9", kind="reverify", created_at=clock.now(), done_at=1.0
            )
        )
    with store.begin() as conn:
        assert not once(conn, "reverify:a:mail:9", "reverify", clock.now())
        assert once(conn, "reverify:a:mail:10", "reverify", clock.now())


def test_links_and_restore_results_on_every_backend(store: Store, clock: FakeClock) -> None:
    settings = parse_config(
        f"store: {{url: '{store.url}'}}\n"
        "incidents: {public_url: 'https://nw.example.org'}\n"
        "notify:\n  channels:\n"
        "    mail: {kind: email, host: 127.0.0.1, port: 1, starttls: false}\n"
        "people:\n  contacts:\n    - {id: tina, name: Tina Techlead, email: t@example.org}\n",
        "test.yaml",
    )
    now = clock.now()
    with store.begin() as conn:
        [sent] = verify.send(conn, settings, now)
        body = conn.execute(select(t.outbox.c.body)).scalar_one()
        [token] = re.findall(r"/verify/([A-Za-z0-9_-]+)", body)
        assert verify.confirm(conn, token, now + 5)["status"] == "confirmed"
        assert verify.confirm(conn, token, now + 6)["confirmed_at"] == now + 5
        result = {
            "backup": None,
            "backup_created_at": None,
            "ok": False,
            "rows": 0,
            "problems": ["no backup"],
            "summary": "restore test FAILED: no backup",
        }
        restoretest.record(conn, settings, store, result, now, now + 1, "manual")
    with store.connect() as conn:
        [entry] = verify.state(conn, settings, now + 10)
        assert entry["status"] == "verified" and sent["outbox_id"] is not None
        last = restoretest.latest(conn)
    assert last is not None and last["ok"] is False and last["problems"] == ["no backup"]
