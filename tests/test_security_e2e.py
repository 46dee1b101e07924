"""Issue 17 end to end: a scripted brute force against a real login page → a finding → an S1
incident with the security runbook → the responder's block in real nftables → the attacker is
refused → the report lists it.

Two network namespaces this test creates (as in test_security_firewall_netns): `fw` holds the
login page (an HTTP server writing nginx's combined log format) and the firewall; `cl` is the
attacker. Nachtwacht tails the page's access log with the shipped thresholds. The block goes
through `nachtwacht security block` (what the runbook's step runs), applied by the CLI with
`security.respond.netns`, so nothing touches the host's own network. The fake clock starts at
the wall time because the detectors read times from the log's lines.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from nachtwacht.clock import FakeClock
from nachtwacht.config.loader import parse_config
from nachtwacht.engine.runtime import Runtime
from nachtwacht.runbooks import service as runbooks
from nachtwacht.security import cli as security_cli
from nachtwacht.security import report as security_report
from nachtwacht.security.engine import MODULE
from nachtwacht.security.report_render import render
from nachtwacht.store import tables as t
from nachtwacht.store.db import Store
from tests.incident_fixtures import SITE
from tests.netns_fixtures import namespaces

pytestmark = pytest.mark.serial  # namespaces and nft: one at a time

SERVER, ATTACKER = "10.78.0.1", "10.78.0.2"
PORT = 8080
# Frappe's login endpoint answers 401 to a wrong password, 200 to the right one
LOGIN_PAGE = r"""
import sys, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

host, port, log = sys.argv[1], int(sys.argv[2]), sys.argv[3]

class Login(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        ok = self.path == "/api/method/login" and b"pwd=right" in body
        status = 200 if ok else 401
        reply = b'{"message": "Logged In"}' if ok else b'{"message": "Invalid login"}'
        self.send_response(status)
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)
        stamp = time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime())
        ua = self.headers.get("User-Agent", "-")
        with open(log, "a") as f:
            f.write(f'{self.client_address[0]} - - [{stamp}] "POST {self.path} HTTP/1.1" '
                    f'{status} {len(reply)} "-" "{ua}"\n')

    def log_message(self, *args):
        pass

server = ThreadingHTTPServer((host, port), Login)
print("ready", flush=True)
server.serve_forever()
"""
ATTEMPT = r"""
import http.client, sys
host, port, pwd, timeout = sys.argv[1], int(sys.argv[2]), sys.argv[3], float(sys.argv[4])
try:
    c = http.client.HTTPConnection(host, port, timeout=timeout)
    c.request("POST", "/api/method/login", body=f"usr=Administrator&pwd={pwd}",
              headers={"Content-Type": "application/x-www-form-urlencoded",
                       "User-Agent": "brute/1.0"})
    print(c.getresponse().status)
except OSError:
    print("refused")
"""


@dataclass
class Site:
    fw: str
    cl: str
    log: Path

    def login(self, password: str, timeout: float = 5.0) -> str:
        """One login attempt from the attacker's namespace: the status, or "refused"."""
        done = subprocess.run(
            ["ip", "netns", "exec", self.cl, sys.executable, "-c", ATTEMPT]
            + [SERVER, str(PORT), password, str(timeout)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        return done.stdout.strip()


@pytest.fixture
def login_site(tmp_path: Path) -> Iterator[Site]:
    log = tmp_path / "access.log"
    log.touch()
    serve = ["-c", LOGIN_PAGE, SERVER, str(PORT), str(log)]
    with namespaces("nwe2", SERVER, ATTACKER, serve) as (fw, cl):
        yield Site(fw=fw, cl=cl, log=log)


def _config(store: Store, s: Site) -> str:
    return (
        f"store:\n  url: {store.url}\n"
        + SITE
        + f"""
security:
  sources:
    - {{name: web, kind: nginx, path: "{s.log}", from_start: true}}
  respond:
    enabled: true
    netns: {s.fw}
"""
    )


async def test_a_brute_force_is_found_paged_blocked_and_reported(
    login_site: Site, sqlite_store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    text = _config(sqlite_store, login_site)
    config = tmp_path / "nachtwacht.yaml"
    config.write_text(text, encoding="utf-8")
    settings = parse_config(text, str(config))
    clock = FakeClock(time.time())
    monkeypatch.setattr(security_cli, "CLOCK", clock)

    # the attack: six wrong passwords, then the right one (the shipped threshold is 5 in 30 min)
    assert [login_site.login("guess") for _ in range(6)] == ["401"] * 6
    assert login_site.login("right") == "200"

    rt = Runtime.build(settings, sqlite_store, clock)
    try:
        clock.advance(1)
        assert await rt.engine.tick_once(MODULE), rt.engine.modules[MODULE].health.last_error
    finally:
        await rt.stop()

    with sqlite_store.connect() as conn:
        a = t.alerts.c
        found = dict(
            conn.execute(select(a.fingerprint, a.severity).where(a.source == "security")).all()
        )
        i = t.incidents.c
        [(incident_id, severity)] = conn.execute(select(i.id, i.severity)).all()
        [run] = runbooks.list_runs(conn, incident_id=incident_id)
        view = runbooks.run_view(conn, run["id"])
    # an access log does not name the account, so only the per-address rules can fire
    assert found == {
        f"security:failed_login:{ATTACKER}": 2,
        f"security:brute_force_success:{ATTACKER}": 1,
    }
    assert severity == 1
    assert (view["runbook"], view["status"]) == ("security-incident", "waiting")
    assert view["inputs"] == {"suspicious_ip": ATTACKER}

    # the responder blocks the address as the runbook's step does, in the real firewall
    clock.advance(60)
    runner = CliRunner()
    done = runner.invoke(
        security_cli.security_app,
        ["block", ATTACKER, "--incident", str(incident_id), "--reason", "brute force"]
        + ["--actor", "olga", "--config", str(config)],
    )
    assert done.exit_code == 0, done.output
    assert done.output.startswith(f"blocked {ATTACKER} until ")
    assert login_site.login("guess", timeout=2.0) == "refused"

    with sqlite_store.connect() as conn:
        e = t.incident_events.c
        said = conn.execute(
            select(e.kind, e.message).where(e.incident_id == incident_id).order_by(e.id)
        ).all()
        audited = conn.execute(
            select(t.audit_log.c.action, t.audit_log.c.target).where(
                t.audit_log.c.action.startswith("security.")
            )
        ).all()
        built = security_report.build(conn, clock.now(), 7, settings.security)
    blocked = [msg for kind, msg in said if kind == "security_block"]
    assert len(blocked) == 1 and blocked[0].startswith(f"blocked {ATTACKER}"), said
    assert ("security.block", ATTACKER) in audited

    # the report lists the finding, the failed logins and the block in force
    report = json.loads(render(built, "json", settings.site, settings.zone))
    flat = json.dumps(report)
    assert ATTACKER in flat and "brute_force_success" in flat
    md = render(built, "md", settings.site, settings.zone)
    assert ATTACKER in md and "brute force" in md
    listed = runner.invoke(security_cli.security_app, ["blocks", "--json", "--config", str(config)])
    [block] = json.loads(listed.output)
    assert (block["address"], block["state"], block["created_by"]) == (ATTACKER, "active", "olga")
