"""The security detectors (issue 17): real-looking log lines through the parsers and the
detectors on event time, each threshold at its count and window edges, dedup, brute-force
success, malformed lines, syslog years; and findings through the alert pipeline."""

from __future__ import annotations

import calendar
from datetime import UTC, datetime

import pytest
from sqlalchemy import select

from nachtwacht.alerts.silences import add_silence
from nachtwacht.clock import FakeClock
from nachtwacht.security.detectors import Detector
from nachtwacht.security.models import (
    BRUTE_FORCE_SUCCESS,
    CSRF,
    FAILED_LOGIN,
    FAILED_LOGIN_ACCOUNT,
    PROBE_PATHS,
    RATE_LIMIT,
    SCANNER_404,
    UNAUTHORIZED,
    AccessEvent,
    CsrfEvent,
    Finding,
    LoginEvent,
    Rule,
    Thresholds,
)
from nachtwacht.security.parsers import CombinedParser, JsonParser, SshdParser, combined_time
from nachtwacht.security.service import fingerprint, record, signal_for
from nachtwacht.store import tables as t
from nachtwacht.store.db import Store
from tests.incident_fixtures import site

T0 = calendar.timegm((2026, 12, 8, 3, 0, 0, 0, 0, 0))  # 08/Dec/2026:03:00:00 +0000


def stamp(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%d/%b/%Y:%H:%M:%S +0000")


def nginx(ts: float, addr: str, path: str, status: int, method: str = "GET") -> str:
    return (
        f'{addr} - - [{stamp(ts)}] "{method} {path} HTTP/1.1" {status} 153 '
        f'"-" "Mozilla/5.0 (X11; Linux x86_64; rv:120.0) Gecko/20100101 Firefox/120.0"'
    )


def syslog(ts: float, msg: str, prog: str = "sshd[4242]") -> str:
    when = datetime.fromtimestamp(ts, UTC)
    return f"{when:%b} {when.day:2d} {when:%H:%M:%S} web1 {prog}: {msg}"


def failed(ts: float, addr: str = "203.0.113.7", user: str = "root") -> str:
    return syslog(ts, f"Failed password for {user} from {addr} port 51234 ssh2")


class Feed:
    def __init__(self, thresholds: Thresholds | None = None) -> None:
        self.clock = FakeClock(T0)
        self.detector = Detector(self.clock, thresholds)
        self.nginx = CombinedParser()
        self.sshd = SshdParser(self.clock)

    def lines(self, *lines: str) -> list[Finding]:
        found: list[Finding] = []
        for line in lines:
            event = (self.sshd if " sshd[" in line else self.nginx).parse(line)
            assert event is not None, line
            found += self.detector.feed(event)
        return found


def rules(found: list[Finding]) -> list[tuple[str, str]]:
    return [(f.rule, f.key) for f in found]


# parsers


def test_a_combined_line_parses_to_an_access_event() -> None:
    line = (
        '198.51.100.23 - frank [10/Oct/2000:13:55:36 -0700] "GET /apache_pb.gif?x=1 HTTP/1.0" '
        '200 2326 "http://www.example.com/start.html" "Mozilla/4.08 [en] (Win98; I ;Nav)"'
    )
    event = CombinedParser().parse(line)
    assert event == AccessEvent(
        calendar.timegm((2000, 10, 10, 20, 55, 36, 0, 0, 0)),
        "198.51.100.23",
        "GET",
        "/apache_pb.gif?x=1",
        200,
        "Mozilla/4.08 [en] (Win98; I ;Nav)",
        "frank",
    )
    # Apache's common format (no referer, no agent), IPv6, a TLS handshake on the plain port
    parser = CombinedParser()
    common = parser.parse('2001:db8::1 - - [08/Dec/2026:03:00:00 +0100] "POST /x HTTP/1.1" 404 -')
    assert common is not None and common.addr == "2001:db8::1" and common.ts == T0 - 3600
    garbage = parser.parse(f'192.0.2.9 - - [{stamp(T0)}] "\\x16\\x03\\x01\\x02" 400 157 "-" "-"')
    assert garbage is not None and (garbage.method, garbage.path, garbage.status) == ("", "", 400)
    assert parser.malformed == 0


def test_malformed_lines_are_counted_and_skipped_never_raised() -> None:
    parser = CombinedParser()
    bad = [
        "",
        "not a log line at all",
        '1.2.3.4 - - [32/Foo/2026:25:00:00 +0000] "GET / HTTP/1.1" 200 1 "-" "-"',
        '1.2.3.4 - - [08/Dec/2026:03:00:00] "GET / HTTP/1.1" 200 1 "-" "-"',
        '1.2.3.4 - - [08/Dec/2026:03:00:00 +0000] "GET / HTTP/1.1" abc 1 "-" "-"',
        "\x00\xff" * 100,
    ]
    assert [parser.parse(line) for line in bad] == [None] * len(bad)
    assert parser.malformed == len(bad)
    js = JsonParser()
    for line in ("", "[1, 2]", "{}", '{"remote_addr": "1.2.3.4", "status": "x", "msec": 1}', "{"):
        assert js.parse(line) is None
    assert js.malformed == 5
    sshd = SshdParser(FakeClock(T0))
    assert sshd.parse("garbage") is None and sshd.malformed == 1
    assert sshd.parse(syslog(T0, "Connection closed by 1.2.3.4 port 22 [preauth]")) is None
    assert sshd.parse(syslog(T0, "Failed password for root", prog="CRON[1]")) is None
    assert sshd.ignored == 2 and sshd.malformed == 1


def test_nginx_json_lines_parse_with_nginx_variable_names() -> None:
    parser = JsonParser()
    iso = parser.parse(
        '{"time_iso8601": "2026-12-08T04:00:00+01:00", "remote_addr": "192.0.2.1", '
        '"request_method": "GET", "request_uri": "/.env", "status": "404", '
        '"http_user_agent": "zgrab/0.x", "remote_user": "-"}'
    )
    assert iso == AccessEvent(T0, "192.0.2.1", "GET", "/.env", 404, "zgrab/0.x", "")
    msec = parser.parse(
        '{"msec": "1796698800.123", "remote_addr": "192.0.2.2", '
        '"request": "POST /api/method/login HTTP/2.0", "status": 401}'
    )
    assert msec is not None and (msec.ts, msec.method, msec.path) == (
        1796698800.123,
        "POST",
        "/api/method/login",
    )
    local = parser.parse(
        f'{{"time_local": "{stamp(T0)}", "remote_addr": "192.0.2.3", "uri": "/", "status": 200}}'
    )
    assert local is not None and local.ts == T0


def test_combined_time_with_offsets_and_the_cache() -> None:
    assert combined_time("10/Oct/2000:13:55:36 -0700") == 971211336
    assert combined_time("10/Oct/2000:13:55:36 +0530") == 971211336 - 7 * 3600 - 5.5 * 3600
    parser = CombinedParser()
    first = parser.parse(nginx(T0, "192.0.2.1", "/", 200))
    again = parser.parse(nginx(T0, "192.0.2.2", "/", 200))
    assert first is not None and again is not None and first.ts == again.ts == T0


def test_sshd_lines_parse_to_login_events() -> None:
    sshd = SshdParser(FakeClock(T0))
    assert sshd.parse(failed(T0, user="root")) == LoginEvent(T0, "203.0.113.7", "root", False)
    invalid = syslog(T0, "Failed password for invalid user admin from 2001:db8::7 port 2 ssh2")
    assert sshd.parse(invalid) == LoginEvent(T0, "2001:db8::7", "admin", False)
    accepted = syslog(
        T0 + 5, "Accepted publickey for deploy from 198.51.100.4 port 40022 ssh2: ED25519 SHA256:x"
    )
    assert sshd.parse(accepted) == LoginEvent(T0 + 5, "198.51.100.4", "deploy", True)
    rfc = (
        "2026-12-08T03:00:00.123456+00:00 web1 sshd[9]: "
        "Accepted password for a from 1.2.3.4 port 9 ssh2"
    )
    event = sshd.parse(rfc)
    assert event is not None and event.ts == pytest.approx(T0 + 0.123456)
    assert (event.addr, event.user, event.ok) == ("1.2.3.4", "a", True)


TAIL = "web1 sshd[1]: Failed password for x from 1.2.3.4 port 1 ssh2"


def test_a_syslog_line_takes_the_year_nearest_the_clock() -> None:
    new_year = calendar.timegm((2027, 1, 1, 0, 0, 10, 0, 0, 0))
    clock = FakeClock(new_year)
    sshd = SshdParser(clock)
    # written on New Year's Eve, read ten seconds into the new year: last year's
    december = sshd.parse(f"Dec 31 23:59:50 {TAIL}")
    assert december is not None and december.ts == new_year - 20
    # a host clock a little ahead of ours: already next year's January
    clock.set(new_year - 30)
    january = sshd.parse(f"Jan  1 00:00:05 {TAIL}")
    assert january is not None and january.ts == new_year - 5
    # an impossible date (29 Feb is in none of the three years) is malformed
    assert sshd.parse(f"Feb 29 00:00:05 {TAIL}") is None
    assert sshd.malformed == 1


# thresholds at their count and window


def test_failed_ssh_logins_fire_at_the_fifth_within_30_minutes_not_before() -> None:
    feed = Feed()
    # four within the window, the fifth exactly 30 min after the first: the window's ends count
    assert feed.lines(*(failed(T0 + i * 60) for i in range(4))) == []
    found = feed.lines(failed(T0 + 1800))
    assert rules(found) == [(FAILED_LOGIN, "203.0.113.7"), (FAILED_LOGIN_ACCOUNT, "user:root")]
    assert found[0].first_ts == T0 and found[0].count == 5 and found[0].severity == 2


def test_five_failures_spread_over_more_than_30_minutes_do_not_fire() -> None:
    feed = Feed()
    assert feed.lines(*(failed(T0 + i * 451) for i in range(5))) == []  # 1804 s apart
    # a sixth makes the last five fit in the window
    assert rules(feed.lines(failed(T0 + 4 * 451 + 1))) == [
        (FAILED_LOGIN, "203.0.113.7"),
        (FAILED_LOGIN_ACCOUNT, "user:root"),
    ]


def test_failed_logins_per_account_across_addresses() -> None:
    feed = Feed()
    lines = [failed(T0 + i, addr=f"198.51.100.{i}", user="admin") for i in range(5)]
    assert rules(feed.lines(*lines)) == [(FAILED_LOGIN_ACCOUNT, "user:admin")]


def test_unauthorised_storm_fires_at_the_third_within_5_minutes() -> None:
    feed = Feed()
    a = "192.0.2.50"
    assert (
        feed.lines(nginx(T0, a, "/api/resource/User", 403), nginx(T0 + 100, a, "/app", 401)) == []
    )
    assert feed.lines(nginx(T0 + 301, a, "/app", 401)) == []  # 301 s after the first
    assert rules(feed.lines(nginx(T0 + 400, a, "/app", 403))) == [(UNAUTHORIZED, a)]


def test_rate_limit_violations_fire_at_the_tenth_within_the_hour() -> None:
    feed = Feed()
    a = "192.0.2.60"
    assert feed.lines(*(nginx(T0 + i * 400, a, "/api/method/ping", 429) for i in range(9))) == []
    found = feed.lines(nginx(T0 + 3600, a, "/api/method/ping", 429))
    assert rules(found) == [(RATE_LIMIT, a)] and found[0].severity == 3


def test_csrf_failures_fire_at_the_fifth_within_15_minutes() -> None:
    detector = Detector(FakeClock(T0))
    for i in range(4):
        assert detector.feed(CsrfEvent(T0 + i * 225, "192.0.2.70")) == []
    assert rules(detector.feed(CsrfEvent(T0 + 900, "192.0.2.70"))) == [(CSRF, "192.0.2.70")]


def test_a_404_storm_and_probe_paths_are_a_scanner() -> None:
    feed = Feed()
    a = "45.155.205.1"
    assert feed.lines(*(nginx(T0 + i, a, f"/missing/{i}", 404) for i in range(19))) == []
    assert rules(feed.lines(nginx(T0 + 19, a, "/missing/19", 404))) == [(SCANNER_404, a)]
    b = "45.155.205.2"
    assert feed.lines(nginx(T0, b, "/.env", 404), nginx(T0 + 1, b, "/.git/config", 404)) == []
    # the third probe path fires whatever the status, and case does not hide it
    assert rules(feed.lines(nginx(T0 + 2, b, "/WP-LOGIN.PHP", 200))) == [(PROBE_PATHS, b)]
    # an ordinary page is no probe path
    assert feed.lines(*(nginx(T0 + i, "192.0.2.80", "/environment", 200) for i in range(5))) == []


# dedup, clearing, sweeping


def test_a_finding_fires_once_per_address_while_it_holds_and_again_after_it_cleared() -> None:
    feed = Feed()
    a, b = "192.0.2.90", "192.0.2.91"
    burst = [nginx(T0 + i, a, "/app", 403) for i in range(10)]
    assert rules(feed.lines(*burst)) == [(UNAUTHORIZED, a)]
    # another address is its own key
    assert rules(feed.lines(*(nginx(T0 + i, b, "/app", 403) for i in range(3)))) == [
        (UNAUTHORIZED, b)
    ]
    # an hour later: the first event no longer holds, the key has cleared; a new burst fires
    later = T0 + 3600
    assert feed.lines(nginx(later, a, "/app", 403), nginx(later + 1, a, "/app", 403)) == []
    assert rules(feed.lines(nginx(later + 2, a, "/app", 403))) == [(UNAUTHORIZED, a)]


def test_a_sweep_clears_idle_keys_and_forgets_them() -> None:
    feed = Feed()
    a = "192.0.2.95"
    feed.lines(*(nginx(T0 + i, a, "/app", 401) for i in range(3)))
    feed.lines(nginx(T0 + 2, "192.0.2.96", "/app", 401))
    assert feed.detector.keys() == 2
    feed.clock.set(T0 + 2 + 300)  # the window's end: still held
    assert feed.detector.sweep() == [] and feed.detector.keys() == 2
    feed.clock.set(T0 + 2 + 301)
    [cleared] = feed.detector.sweep()
    assert (cleared.rule, cleared.key, cleared.firing) == (UNAUTHORIZED, a, False)
    assert feed.detector.keys() == 0
    # forgotten: three more fire again
    feed.clock.set(T0 + 4000)
    found = feed.lines(*(nginx(T0 + 4000 + i, a, "/app", 401) for i in range(3)))
    assert rules(found) == [(UNAUTHORIZED, a)]


def test_memory_is_bounded_by_max_keys() -> None:
    detector = Detector(FakeClock(T0), Thresholds(max_keys=100))
    for i in range(1000):
        detector.feed(AccessEvent(T0 + i, f"10.0.{i // 256}.{i % 256}", "GET", "/x", 404))
    assert detector.keys() == 100


def test_thresholds_are_configurable_and_rules_can_be_switched_off() -> None:
    tight = Thresholds(
        rules={UNAUTHORIZED: Rule(UNAUTHORIZED, "401/403", 2, 10.0, 2)}, probe_paths=("/secret",)
    )
    detector = Detector(FakeClock(T0), tight)
    a = "192.0.2.99"
    assert detector.feed(AccessEvent(T0, a, "GET", "/x", 401)) == []
    [found] = detector.feed(AccessEvent(T0 + 10, a, "GET", "/x", 401))
    assert found.severity == 2
    for i in range(30):  # 404s and probe paths: no rule
        assert detector.feed(AccessEvent(T0 + i, a, "GET", "/secret", 404)) == []


# brute force


def test_a_login_after_a_burst_of_failures_is_a_likely_compromise() -> None:
    feed = Feed()
    a = "203.0.113.66"
    feed.lines(*(failed(T0 + i * 10, addr=a, user=f"u{i}") for i in range(5)))
    found = feed.lines(syslog(T0 + 60, f"Accepted password for deploy from {a} port 50000 ssh2"))
    assert rules(found) == [(BRUTE_FORCE_SUCCESS, a)]
    assert found[0].severity == 1 and found[0].first_ts == T0 and found[0].count == 5
    # once per address: the next success is not another finding
    assert feed.lines(syslog(T0 + 70, f"Accepted password for deploy from {a} port 5 ssh2")) == []
    # and a brute-force finding does not resolve on a sweep: it waits for a human
    feed.clock.set(T0 + 10_000)
    assert [f for f in feed.detector.sweep() if f.rule == BRUTE_FORCE_SUCCESS] == []


def test_a_login_after_fewer_failures_or_after_the_window_is_no_compromise() -> None:
    feed = Feed()
    a = "203.0.113.67"
    feed.lines(*(failed(T0 + i, addr=a, user=f"u{i}") for i in range(4)))
    assert feed.lines(syslog(T0 + 10, f"Accepted password for me from {a} port 5 ssh2")) == []
    feed.lines(failed(T0 + 20, addr=a, user="u5"))  # the fifth: the burst is complete
    late = T0 + 1801  # 1801 s after the first failure: the window has let go of it
    assert feed.lines(syslog(late, f"Accepted password for me from {a} port 5 ssh2")) == []


def test_frappe_login_failures_in_the_access_log_then_a_success() -> None:
    feed = Feed()
    a = "198.51.100.200"
    login = "/api/method/login"
    found = feed.lines(*(nginx(T0 + i, a, login, 401, method="POST") for i in range(5)))
    # failed logins, not a 401 storm
    assert rules(found) == [(FAILED_LOGIN, a)]
    assert rules(feed.lines(nginx(T0 + 9, a, login, 200, method="POST"))) == [
        (BRUTE_FORCE_SUCCESS, a)
    ]


# into the alert pipeline


def test_findings_become_deduplicated_alerts_and_a_compromise_opens_an_s1(
    sqlite_store: Store,
) -> None:
    settings = site(sqlite_store)
    a = "203.0.113.77"
    scan = Finding(UNAUTHORIZED, a, True, T0 + 2, T0, 3, 3, "401/403 storm from one address")
    signal = signal_for(scan)
    assert (signal.fingerprint, signal.source, signal.severity, signal.component) == (
        f"security:unauthorized:{a}",
        "security",
        3,
        "security",
    )
    with sqlite_store.begin() as conn:
        outcomes = record(conn, settings, [scan, scan], T0 + 3)
    assert [o.action for o in outcomes] == ["opened", "deduplicated"]
    compromise = Finding(BRUTE_FORCE_SUCCESS, a, True, T0 + 60, T0, 5, 1, "likely compromise")
    with sqlite_store.begin() as conn:
        [opened] = record(conn, settings, [compromise], T0 + 61)
        incident = conn.execute(
            select(t.incidents.c.severity).where(t.incidents.c.id == opened.incident_id)
        ).scalar_one()
    assert opened.action == "opened" and incident == 1
    cleared = Finding(UNAUTHORIZED, a, False, T0 + 400, T0, 3, 3, "401/403 storm")
    with sqlite_store.begin() as conn:
        [resolved] = record(conn, settings, [cleared], T0 + 400)
    assert resolved.action == "resolved"


def test_a_backlog_read_late_is_detected_when_read_not_when_written(
    sqlite_store: Store,
) -> None:
    """A compromise 40 minutes back in the log (a first read, a restart): the S1's response
    target runs from the reading, so it is not breached, nor management paged, at once."""
    settings = site(sqlite_store)
    a = "203.0.113.77"
    old = Finding(BRUTE_FORCE_SUCCESS, a, True, T0 + 60, T0, 5, 1, "likely compromise")
    read_at = T0 + 40 * 60
    with sqlite_store.begin() as conn:
        [opened] = record(conn, settings, [old], read_at)
        inc = (
            conn.execute(select(t.incidents).where(t.incidents.c.id == opened.incident_id))
            .mappings()
            .one()
        )
        breaches = conn.execute(
            select(t.incident_events.c.id).where(
                t.incident_events.c.incident_id == inc["id"],
                t.incident_events.c.kind == "breach",
            )
        ).all()
    assert (inc["started_at"], inc["detected_at"]) == (T0, read_at)
    assert inc["response_due_at"] == read_at + 15 * 60
    assert breaches == []


def test_a_long_key_makes_a_fingerprint_that_fits_and_stays_distinct() -> None:
    one, two = "user:" + "a" * 500, "user:" + "a" * 499 + "b"
    assert len(fingerprint(BRUTE_FORCE_SUCCESS, one)) <= 200
    assert fingerprint(BRUTE_FORCE_SUCCESS, one) != fingerprint(BRUTE_FORCE_SUCCESS, two)


def test_a_silence_mutes_one_address_and_not_another(sqlite_store: Store) -> None:
    """An office's own scanner silenced by fingerprint: recorded, not paging; others page."""
    settings = site(sqlite_store)
    office, stranger = "198.51.100.10", "45.155.205.3"
    with sqlite_store.begin() as conn:
        silence = add_silence(
            conn,
            settings,
            matcher=f"fingerprint:{fingerprint(PROBE_PATHS, office)}",
            starts_at=T0,
            ends_at=T0 + 86_400,
            now=T0,
            created_by="olga",
        )
    feed = Feed()
    found = feed.lines(
        *(nginx(T0 + i, a, "/.env", 404) for a in (office, stranger) for i in range(3))
    )
    assert rules(found) == [(PROBE_PATHS, office), (PROBE_PATHS, stranger)]
    with sqlite_store.begin() as conn:
        outcomes = record(conn, settings, found, T0 + 10)
    assert [(o.action, o.muted_by) for o in outcomes] == [
        ("opened", f"silence:{silence}"),
        ("opened", None),
    ]
