"""Fingerprints, titles, culprits, categories, message normalisation and traceback parsing."""

from __future__ import annotations

import pytest

from nachtwacht.errors import fingerprint, normalize, pytrace
from nachtwacht.errors.fingerprint import FINGERPRINT_VERSION, digest, group
from tests.test_errors_fixtures import exc_event, frame, msg_event


def fp(event: dict) -> str:
    return group(event).current[1]


def test_message_normalisation_strips_variable_parts() -> None:
    text = (
        "User 42 'bob' (bob@example.org) from 10.0.0.17:5432 failed order "
        "9f1c2d3e-4b5a-6978-8a9b-0c1d2e3f4a5b at 0x7f3a2b1c, token deadbeef12345678"
    )
    assert normalize.normalize_text(text) == (
        "User <n> <str> (<email>) from <ip> failed order <uuid> at <hex>, token <hex>"
    )
    # words stay: a normalised message still says what happened
    assert normalize.normalize_text("Lock wait timeout exceeded; try restarting") == (
        "Lock wait timeout exceeded; try restarting"
    )
    assert (
        normalize.normalize_text('Row "SO-00123" not found, 3.5 s') == "Row <str> not found, <n> s"
    )


def test_same_frames_group_whatever_the_message_says() -> None:
    frames = [frame("checkout", "place(order)"), frame("place", "raise ValueError(msg)")]
    a = exc_event(value="order 17 is invalid", frames=frames)
    b = exc_event(value="order 4242 has no lines", frames=frames)
    assert fp(a) == fp(b)
    assert group(a).kind == "frames"


def test_a_different_function_or_line_is_another_issue() -> None:
    base = [frame("checkout", "place(order)"), frame("place", "raise ValueError(msg)")]
    other_func = [frame("checkout", "place(order)"), frame("refund", "raise ValueError(msg)")]
    other_line = [frame("checkout", "place(order)"), frame("place", "raise ValueError(other)")]
    assert len({fp(exc_event(frames=f)) for f in (base, other_func, other_line)}) == 3
    # whitespace and line numbers do not matter: code moving down a file keeps its issue
    moved = [frame("checkout", "place(order)", lineno=99), frame("place", "raise  ValueError(msg)")]
    assert fp(exc_event(frames=moved)) == fp(exc_event(frames=base))


def test_only_in_app_frames_count_when_some_are_marked() -> None:
    app = [frame("view", "do_it()")]
    lib_a = [frame("call", "return f()", module="django.core", in_app=False)]
    lib_b = [frame("dispatch", "return g()", module="flask.app", in_app=False)]
    assert fp(exc_event(frames=lib_a + app)) == fp(exc_event(frames=lib_b + app))
    # no frame marked in-app: all of them count
    assert fp(exc_event(frames=lib_a)) != fp(exc_event(frames=lib_b))


def test_recursion_depth_does_not_split_an_issue() -> None:
    rec = frame("walk", "return walk(node.child)")
    shallow = [frame("main", "walk(root)"), rec, rec]
    deep = [frame("main", "walk(root)"), *([rec] * 40)]
    assert fp(exc_event(frames=shallow)) == fp(exc_event(frames=deep))


def test_the_exception_type_takes_part_with_frames() -> None:
    frames = [frame("load", "return rows[key]")]
    assert fp(exc_event("KeyError", "'x'", frames)) != fp(exc_event("IndexError", "0", frames))


def test_without_frames_type_and_normalised_value_group() -> None:
    a = exc_event("TimeoutError", "no answer from 10.0.0.1 after 30 s")
    b = exc_event("TimeoutError", "no answer from 10.0.0.9 after 5 s")
    c = exc_event("TimeoutError", "connection reset")
    assert fp(a) == fp(b) != fp(c)
    assert group(a).kind == "exception"


def test_messages_group_by_their_normalised_text() -> None:
    a = msg_event("cache warmed in 35 ms for user 7")
    b = msg_event("cache warmed in 1200 ms for user 98")
    c = msg_event("cache cold")
    assert fp(a) == fp(b) != fp(c)
    assert group(a).kind == "message"
    logentry = {
        "event_id": "a" * 32,
        "logentry": {"message": "x %s", "formatted": "cache warmed in 5 ms for user 1"},
    }
    assert fp(logentry) == fp(a)


def test_client_fingerprint_wins_and_default_expands() -> None:
    frames = [frame("place", "raise ValueError(msg)")]
    a = exc_event(frames=frames, fingerprint=["payment-gateway"])
    b = exc_event("KeyError", "x", fingerprint=["payment-gateway"])
    assert fp(a) == fp(b)
    assert group(a).kind == "client"
    # {{ default }}: the default grouping, split further by what the client adds
    eu = exc_event(frames=frames, fingerprint=["{{ default }}", "eu"])
    us = exc_event(frames=frames, fingerprint=["{{default}}", "us"])
    eu2 = exc_event(value="other 5", frames=frames, fingerprint=["{{ default }}", "eu"])
    plain = exc_event(frames=frames)
    assert fp(eu) == fp(eu2)
    assert len({fp(eu), fp(us), fp(plain)}) == 3


def test_fingerprints_carry_their_version() -> None:
    event = exc_event(frames=[frame("f", "x()")])
    g = group(event)
    assert g.current[0] == FINGERPRINT_VERSION == 1
    assert len(g.current[1]) == 64
    kind, parts = fingerprint.ALGORITHMS[1](event)
    assert g.current[1] == digest(1, kind, parts) != digest(2, kind, parts)


def test_title_culprit_and_category_like_sentry() -> None:
    frames = [
        frame("handler", "return view()", module="shop.web"),
        frame("fetch", "cur.execute(q)", module="shop.db"),
        frame("execute", "raise", module="pymysql.cursors", in_app=False),
    ]
    g = group(exc_event("OperationalError", "(1213, 'Deadlock found')\nmore", frames))
    assert g.title == "OperationalError: (1213, 'Deadlock found')"
    assert g.culprit == "shop.db in fetch"
    assert g.exc_type == "OperationalError"
    assert g.category == "database"
    assert group(msg_event("hello\nworld")).title == "hello"


def node_capture_message(text: str, synthetic: bool = True) -> dict:
    """What `@sentry/node`'s `captureMessage` sends with `attachStacktrace`: the message, and an
    exception with no type carrying it and the stack trace."""
    exc: dict = {
        "value": text,
        "stacktrace": {"frames": [frame("warm", "Sentry.captureMessage(m)", module="app")]},
    }
    if synthetic:
        exc["mechanism"] = {"type": "generic", "handled": True, "synthetic": True}
    return {"event_id": "a" * 32, "level": "info", "message": text, "exception": {"values": [exc]}}


def test_a_node_capture_message_is_titled_by_its_message() -> None:
    assert group(node_capture_message("cache warmed in 35 ms")).title == "cache warmed in 35 ms"
    # no mechanism, but the value is the message: made up all the same
    assert group(node_capture_message("cache cold", synthetic=False)).title == "cache cold"
    # marked synthetic, without a top-level message: the value is the message
    event = node_capture_message("queue drained\nsecond line")
    del event["message"]
    assert group(event).title == "queue drained"
    # a real exception with no type still reads "Error: ..."
    real = {"exception": {"values": [{"value": "boom"}]}, "message": "something else"}
    assert group(real).title == "Error: boom"
    assert group(exc_event("TypeError", "x is undefined")).title == "TypeError: x is undefined"


@pytest.mark.parametrize(
    ("kind", "value", "expected"),
    [
        ("ConnectionRefusedError", "[Errno 111] Connection refused", "network"),
        ("ReadTimeout", "HTTPSConnectionPool read timed out", "timeout"),
        ("OperationalError", "Lock wait timeout exceeded", "timeout"),
        ("IntegrityError", "Duplicate entry 'x' for key 'PRIMARY'", "database"),
        ("PermissionError", "[Errno 13] Permission denied: '/etc/x'", "permission"),
        ("ValidationError", "Row 3: Qty is mandatory", "validation"),
        ("ModuleNotFoundError", "No module named 'foo'", "import"),
        ("MemoryError", "", "memory"),
        ("KeyError", "'customer'", "other"),
    ],
)
def test_categories(kind: str, value: str, expected: str) -> None:
    assert normalize.category(kind, value) == expected


def test_timestamps_epoch_iso_and_never_in_the_future() -> None:
    now = 1_800_000_000.0
    assert normalize.timestamp({"timestamp": now - 5}, now) == now - 5
    assert normalize.timestamp({"timestamp": "2027-01-15T07:59:55Z"}, now) == now - 5
    assert normalize.timestamp({"timestamp": "2027-01-15T07:59:55.5"}, now) == now - 4.5
    assert normalize.timestamp({"timestamp": now + 3600}, now) == now
    assert normalize.timestamp({"timestamp": "yesterday"}, now) == now
    assert normalize.timestamp({}, now) == now


def test_python_traceback_text_becomes_frames_that_group_like_the_sdk() -> None:
    text = """Traceback (most recent call last):
  File "/home/fr/bench/apps/erpnext/erpnext/stock/utils.py", line 40, in get_stock
    return frappe.db.sql(query)
  File "/home/fr/bench/env/lib/python3.11/site-packages/pymysql/cursors.py", line 153, in execute
    result = self._query(query)
           ^^^^^^^^^^^^^^^^^^^
pymysql.err.OperationalError: (1205, 'Lock wait timeout exceeded')

During handling of the above exception, another exception occurred:

Traceback (most recent call last):
  File "/srv/app/shop/views.py", line 7, in checkout
    stock = get_stock(item)
frappe.exceptions.ValidationError: Item 42 has no stock
"""
    chain = pytrace.parse(text)
    assert [(c["type"], c["value"]) for c in chain] == [
        ("OperationalError", "(1205, 'Lock wait timeout exceeded')"),
        ("ValidationError", "Item 42 has no stock"),
    ]
    first = chain[0]["stacktrace"]["frames"]
    assert [(f["module"], f["function"], f["lineno"], f["in_app"]) for f in first] == [
        ("erpnext.stock.utils", "get_stock", 40, True),
        ("pymysql.cursors", "execute", 153, False),
    ]
    assert first[1]["context_line"] == "result = self._query(query)"
    assert chain[1]["stacktrace"]["frames"][0]["module"] == "shop.views"
    # the same traceback from another bench directory groups together
    moved = text.replace("/home/fr/bench", "/opt/bench2").replace("/srv/app", "/srv/rel-2")
    a = {"exception": {"values": chain}}
    b = {"exception": {"values": pytrace.parse(moved)}}
    assert fp(a) == fp(b)
