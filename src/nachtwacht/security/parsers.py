"""Log lines → events: nginx/Apache combined, nginx JSON lines, sshd's auth.log.

Each parser is an object with `parse(line) -> event | None` and two counters: `malformed`
(a line that is not in the format: counted and skipped, never an exception) and `ignored` (a
well-formed line that says nothing the detectors use, e.g. sshd's "Connection closed").

Speed: one compiled regex per format, and a timestamp string is turned into epoch seconds
once: access logs repeat the same second for many lines, so a small cache (cleared when it
grows past `TIME_CACHE`) saves the date arithmetic on nearly every line.

Syslog timestamps (`Dec  8 03:10:00`) carry no year: the parser takes the year (of the
previous, current or next year) that puts the time nearest to the injected clock's now, so a
December line read on the 1st of January is last year's, and a January line read a few
seconds before the clock's new year (a host clock ahead of ours) is next year's. Those lines
are read in the host's time zone, `tz` (UTC unless told).
"""

from __future__ import annotations

import calendar
import json
import re
from datetime import UTC, datetime, tzinfo
from typing import Any

from nachtwacht.clock import Clock
from nachtwacht.security.models import AccessEvent, CsrfEvent, LoginEvent

TIME_CACHE = 4096
MAX_FIELD = 300  # addresses, users, paths and user agents are cut to this many characters
MONTHS = {m: i for i, m in enumerate(calendar.month_abbr) if m}

# $remote_addr - $remote_user [$time_local] "$request" $status $body_bytes_sent
# ["$http_referer" "$http_user_agent"]; a request that is not "METHOD PATH ..." (a TLS
# handshake sent to the plain port, "-") is still a request, with an empty method and path
COMBINED = re.compile(
    r"(?P<addr>[^ ]+) [^ ]+ (?P<user>[^ ]+) \[(?P<time>[^\]]+)\] "
    r'"(?:(?P<method>[A-Z]{1,16}) (?P<path>[^ "]*)[^"]*|[^"]*)" '
    r"(?P<status>\d{3}) (?:\d+|-)"
    r'(?: "[^"]*" "(?P<ua>[^"]*)")?'
)
# `Dec  8 03:10:00 host sshd[123]: msg` or RFC 3339 `2026-12-08T03:10:00.123+00:00 host ...`
SYSLOG = re.compile(
    r"(?:(?P<bsd>[A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d)|(?P<iso>\d{4}-\d\d-\d\dT[^ ]+)) "
    r"[^ ]+ (?P<prog>[^\[: ]+)(?:\[\d+\])?: (?P<msg>.*)"
)
# OpenSSH 9.8 split the per-connection work into `sshd-session`, which logs the logins
SSHD_PROGRAMS = frozenset(("sshd", "sshd-session"))
SSHD_FAILED = re.compile(
    r"Failed (?:password|publickey|keyboard-interactive/pam|none) for (?:invalid user )?"
    r"(?P<user>.*?) from (?P<addr>[^ ]+) port \d+"
)
SSHD_ACCEPTED = re.compile(
    r"Accepted (?:password|publickey|keyboard-interactive/pam|gssapi-with-mic) for "
    r"(?P<user>.*?) from (?P<addr>[^ ]+) port \d+"
)


def _cut(value: str) -> str:
    return value if len(value) <= MAX_FIELD else value[:MAX_FIELD]


def combined_time(text: str) -> float:
    """`10/Oct/2000:13:55:36 -0700` → epoch seconds; ValueError/KeyError when it is not that."""
    day, mon, year = int(text[0:2]), MONTHS[text[3:6]], int(text[7:11])
    hour, minute, second = int(text[12:14]), int(text[15:17]), int(text[18:20])
    if text[2] != "/" or text[6] != "/" or text[11] != ":" or len(text) != 26:
        raise ValueError(text)
    sign = -1 if text[21] == "-" else 1
    if text[21] not in "+-":
        raise ValueError(text)
    offset = sign * (int(text[22:24]) * 3600 + int(text[24:26]) * 60)
    return calendar.timegm((year, mon, day, hour, minute, second, 0, 0, 0)) - offset


class _Cached:
    def __init__(self) -> None:
        self.malformed = 0
        self.ignored = 0
        self._times: dict[str, float] = {}

    def _time(self, text: str, convert: Any) -> float:
        ts = self._times.get(text)
        if ts is None:
            if len(self._times) >= TIME_CACHE:
                self._times.clear()
            ts = self._times[text] = float(convert(text))
        return ts


class CombinedParser(_Cached):
    """nginx's `combined` log format, which is Apache's too."""

    def parse(self, line: str) -> AccessEvent | None:
        m = COMBINED.match(line)
        if m is None:
            self.malformed += 1
            return None
        try:
            ts = self._time(m["time"], combined_time)
        except (ValueError, KeyError, IndexError):
            self.malformed += 1
            return None
        user = m["user"]
        return AccessEvent(
            ts,
            _cut(m["addr"]),
            m["method"] or "",
            _cut(m["path"] or ""),
            int(m["status"]),
            _cut(m["ua"] or ""),
            "" if user == "-" else _cut(user),
        )


def _iso_time(text: str) -> float:
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def _json_time(record: dict[str, Any]) -> float | None:
    for key in ("msec", "timestamp", "ts"):
        value = record.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
    return None


class JsonParser(_Cached):
    """nginx JSON lines (`log_format ... escape=json '{...}'`) with nginx's variable names:
    remote_addr, time_iso8601 | time_local | msec, request_method + request_uri (or uri, or
    request "GET /x HTTP/1.1"), status, http_user_agent, remote_user."""

    def parse(self, line: str) -> AccessEvent | None:
        try:
            record = json.loads(line)
            if not isinstance(record, dict):
                raise ValueError("not an object")
            ts = _json_time(record)
            if ts is None:
                if isinstance(record.get("time_iso8601"), str):
                    ts = self._time(record["time_iso8601"], _iso_time)
                else:
                    ts = self._time(str(record["time_local"]), combined_time)
            method = str(record.get("request_method") or "")
            path = str(record.get("request_uri") or record.get("uri") or "")
            if not method and isinstance(record.get("request"), str):
                method, _, rest = record["request"].partition(" ")
                path = rest.split(" ", 1)[0]
            status = int(record["status"])
            addr = str(record["remote_addr"])
        except (ValueError, KeyError, IndexError, TypeError):
            self.malformed += 1
            return None
        user = str(record.get("remote_user") or "")
        return AccessEvent(
            ts,
            _cut(addr),
            _cut(method),
            _cut(path),
            status,
            _cut(str(record.get("http_user_agent") or "")),
            "" if user == "-" else _cut(user),
        )


def sshd_message(msg: str) -> tuple[str, str, bool] | None:
    """sshd's message without its syslog prefix → (user, address, succeeded), or None when it
    is not a failed or accepted login. Shared by auth.log lines and journal entries."""
    found = SSHD_FAILED.match(msg)
    ok = False
    if found is None:
        found = SSHD_ACCEPTED.match(msg)
        ok = True
    if found is None:
        return None
    return _cut(found["user"]), _cut(found["addr"]), ok


class SshdParser(_Cached):
    """sshd's lines in auth.log (or the journal's syslog export); other programs are ignored."""

    def __init__(self, clock: Clock, tz: tzinfo = UTC) -> None:
        super().__init__()
        self._clock = clock
        self._tz = tz
        self._cache_until = 0.0

    def parse(self, line: str) -> LoginEvent | None:
        m = SYSLOG.match(line)
        if m is None:
            self.malformed += 1
            return None
        if m["prog"] not in SSHD_PROGRAMS:
            self.ignored += 1
            return None
        login = sshd_message(m["msg"])
        if login is None:
            self.ignored += 1
            return None
        try:
            ts = self._syslog_time(m["bsd"]) if m["bsd"] else self._time(m["iso"], _iso_time)
        except (ValueError, KeyError):
            self.malformed += 1
            return None
        user, addr, ok = login
        return LoginEvent(ts, addr, user, ok)

    def _syslog_time(self, text: str) -> float:
        now = self._clock.now()
        if now > self._cache_until:
            # the nearest year of a cached line changes only months later: an hour is plenty
            self._times.clear()
            self._cache_until = now + 3600.0
        return self._time(text, lambda s: self._nearest_year(s, now))

    def _nearest_year(self, text: str, now: float) -> float:
        month, day = MONTHS[text[0:3]], int(text[4:6])
        hour, minute, second = int(text[7:9]), int(text[10:12]), int(text[13:15])
        year = datetime.fromtimestamp(now, self._tz).year
        candidates = []
        for y in (year - 1, year, year + 1):
            try:
                moment = datetime(y, month, day, hour, minute, second, tzinfo=self._tz)
            except ValueError:  # 29 Feb in a year without one
                continue
            candidates.append(moment.timestamp())
        if not candidates:
            raise ValueError(text)
        return min(candidates, key=lambda ts: abs(ts - now))


class NachtwachtParser(_Cached):
    """Nachtwacht's own security log (`analytics.security_log`, written while
    enable_security_logging is on; `analytics.security`): a failed dashboard login is a failed
    login, a refused request (401/403) a refusal, a missing CSRF token a CSRF failure; what
    else it logs (successes, admin actions) is ignored. Its failed logins name no account: the
    audit log holds the name."""

    def parse(self, line: str) -> AccessEvent | LoginEvent | CsrfEvent | None:
        try:
            record = json.loads(line)
            if not isinstance(record, dict):
                raise ValueError("not an object")
            event = record["event"]
            if event not in ("login.failure", "login.success", "auth.failure", "csrf.failure"):
                self.ignored += 1
                return None
            ts = self._time(str(record["ts"]), _iso_time)
            addr = str(record.get("ip") or "")
            if event == "csrf.failure":
                return CsrfEvent(ts, _cut(addr))
            if event == "auth.failure":
                return AccessEvent(
                    ts,
                    _cut(addr),
                    _cut(str(record.get("method") or "")),
                    _cut(str(record.get("path") or "")),
                    int(record["status"]),
                )
        except (ValueError, KeyError, TypeError):
            self.malformed += 1
            return None
        actor = record.get("actor")
        user = _cut(actor) if isinstance(actor, str) else ""
        return LoginEvent(ts, _cut(addr), user, event == "login.success")


def frappe_time(value: Any, tz: tzinfo) -> float:
    """A `creation` from Frappe's database: naive, in the site's time zone."""
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if not isinstance(value, datetime):
        raise ValueError(f"not a time: {value!r}")
    if value.tzinfo is None:
        value = value.replace(tzinfo=tz)
    return value.timestamp()


def frappe_login(
    creation: Any, user: Any, ip_address: Any, status: Any, tz: tzinfo
) -> LoginEvent | None:
    """One `tabActivity Log` row of operation 'Login' → a login event (None: not one)."""
    if status not in ("Success", "Failed"):
        return None
    return LoginEvent(
        frappe_time(creation, tz),
        _cut(str(ip_address or "")),
        _cut(str(user or "")),
        status == "Success",
    )
