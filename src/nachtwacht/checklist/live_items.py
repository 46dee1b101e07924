"""The checklist items that go through HTTP and the outbox: dashboard, APIs, access, alerts.

The dashboard is always asked over the network at its configured address: "accessible" means
a browser can reach it there. The APIs and the anonymous-access test go to the same running
server; when the server itself runs the checklist (POST /api/v1/checklist) they go in-process
to that very app instead, which needs no address. When no server answers, these items fail:
an API that only answers inside a test harness is not restored.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections import Counter
from typing import TYPE_CHECKING, Any

from nachtwacht.auth import tokens, users
from nachtwacht.checklist.items import Context, ItemResult
from nachtwacht.clock import iso
from nachtwacht.incidents.notifications import followup_channels
from nachtwacht.incidents.service import latest_id
from nachtwacht.notify.testmessage import NotifyTestError, send_test
from nachtwacht.oncall.service import resolve_target
from nachtwacht.store.db import StoreError

if TYPE_CHECKING:
    from nachtwacht.httpclient import HttpClient

DEFAULT_PASSWORDS = ("admin", "password", "changeme", "nachtwacht")
PARAM = re.compile(r"\{([^}]+)\}")
# answers that show an endpoint is up: 2xx; 403 (admin-only, the check's token is a viewer);
# 404 from a route the schema lists is the handler's own answer ("no baseline yet"), since the
# paths come from the schema; 409 (a state the check did not set up); 422 (it needs parameters
# the check does not invent)
ANSWERING = {403, 404, 409, 422}
# GET endpoints asked at once by the api item
API_CONCURRENCY = 6


def _network(ctx: Context, headers: dict[str, str] | None = None) -> HttpClient:
    from nachtwacht.httpclient import HttpClient

    return HttpClient(base_url=ctx.url, timeout=ctx.cfg.timeout, headers=headers)


def _client(ctx: Context, headers: dict[str, str] | None = None) -> HttpClient | None:
    """In-process to the running app, else over the network; None when nothing answers."""
    from nachtwacht.httpclient import HttpClient

    if ctx.app is not None:
        return HttpClient(
            app=ctx.app,
            base_url="http://nachtwacht.local",
            timeout=ctx.cfg.timeout,
            headers=headers,
        )
    if ctx.reached is not None and ctx.reached[0]:
        return _network(ctx, headers)
    return None


async def reach(ctx: Context) -> tuple[bool, str]:
    """GET /login at the dashboard's address, once per run."""
    from nachtwacht.httpclient import HttpError

    if ctx.reached is None:
        started = time.perf_counter()
        try:
            async with _network(ctx) as client:
                response = await client.get("/login")
        except HttpError as exc:
            reason = str(exc) or exc.__class__.__name__
            ctx.reached = (
                False,
                f"the dashboard does not answer at {ctx.url} ({reason}): is `nachtwacht serve` "
                "running there (reviews.checklist.url)?",
            )
        else:
            took = (time.perf_counter() - started) * 1000
            if response.status_code == 200 and 'name="password"' in response.text:
                ctx.reached = (True, f"GET {ctx.url}/login: login form in {took:.0f} ms")
            else:
                ctx.reached = (
                    False,
                    f"GET {ctx.url}/login answered {response.status_code} without a login form",
                )
    return ctx.reached


async def dashboard(ctx: Context) -> ItemResult:
    from nachtwacht.httpclient import HttpError

    ok, detail = await reach(ctx)
    if not ok:
        return ItemResult("dashboard", False, detail)
    # the engine modules are a detail of /healthz, which anonymous callers do not get
    try:
        token_id, token = await asyncio.to_thread(_token, ctx)
    except StoreError as exc:
        return ItemResult("dashboard", False, f"{detail}; cannot create the check's token: {exc}")
    try:
        async with _network(ctx, {"Authorization": f"Bearer {token}"}) as client:
            answer = await client.get("/healthz", params={"details": "true"})
            health = answer.json()
    except (HttpError, ValueError) as exc:
        return ItemResult("dashboard", False, f"{detail}; /healthz unreadable: {exc}")
    finally:
        await asyncio.to_thread(_revoke, ctx, token_id)
    if "modules" not in health:
        return ItemResult(
            "dashboard", False, f"{detail}; /healthz answered {answer.status_code}: {health}"
        )
    modules = health["modules"]
    failing = [
        f"{m['module']} ({m.get('last_error')})" for m in modules if m.get("consecutive_errors")
    ]
    if failing:
        return ItemResult(
            "dashboard", False, f"{detail}; engine modules failing: {', '.join(failing)}"
        )
    return ItemResult("dashboard", True, f"{detail}; {len(modules)} engine modules, none failing")


# -- every API answering ---------------------------------------------------------------------


def _token(ctx: Context) -> tuple[int, str]:
    now = ctx.clock.now()
    with ctx.store.begin() as conn:
        row = tokens.create_token(conn, f"checklist {iso(now)}", "viewer", now, actor=ctx.actor)
    return int(row["id"]), row["token"]


def _revoke(ctx: Context, token_id: int) -> None:
    with ctx.store.begin() as conn:
        tokens.revoke_token(conn, token_id, ctx.clock.now(), actor=ctx.actor)


def _fillers(ctx: Context) -> dict[str, str]:
    """Values for the path parameters the check can fill honestly."""
    out: dict[str, str] = {}
    probes = [p.name for p in ctx.settings.probes if p.enabled]
    if probes:
        out["name"] = probes[0]
    incident = ctx.incident_id
    if incident is None:
        with ctx.store.connect() as conn:
            incident = latest_id(conn)
    if incident is not None:
        out["incident_id"] = str(incident)
    return out


def _paths(schema: dict[str, Any], fillers: dict[str, str], exclude: list[str]) -> list[str]:
    out = []
    for path, operations in schema.get("paths", {}).items():
        if "get" not in operations or not path.startswith("/api/v1/") or path in exclude:
            continue
        if path.endswith("openapi.json"):
            continue
        names = PARAM.findall(path)
        # {name} is a probe's name only under /probes/
        if "name" in names and not path.startswith("/api/v1/probes/"):
            continue
        if any(n not in fillers for n in names):
            continue
        out.append(PARAM.sub(lambda m: fillers[m.group(1)], path))
    return sorted(out)


async def api(ctx: Context) -> ItemResult:
    if ctx.app is None:
        up, detail = await reach(ctx)
        if not up:
            return ItemResult("api", False, f"no API answers: {detail}")
    try:
        token_id, token = await asyncio.to_thread(_token, ctx)
    except StoreError as exc:
        return ItemResult("api", False, f"cannot create the check's API token: {exc}")
    try:
        client = _client(ctx, {"Authorization": f"Bearer {token}"})
        assert client is not None  # reached above, or in-process
        async with client:
            schema = await client.get("/api/v1/openapi.json")
            if schema.status_code != 200:
                return ItemResult(
                    "api", False, f"GET /api/v1/openapi.json answered {schema.status_code}"
                )
            fillers = await asyncio.to_thread(_fillers, ctx)
            paths = _paths(schema.json(), fillers, ctx.cfg.api_exclude)
            # a few at a time: all forty at once queue behind each other for the store and
            # the thread pool, and on a busy machine the last ones spend the whole timeout
            # waiting their turn (seen in-process, where nothing else bounds them)
            turns = asyncio.Semaphore(API_CONCURRENCY)
            answers = await asyncio.gather(*(_get(client, p, turns) for p in paths))
    finally:
        await asyncio.to_thread(_revoke, ctx, token_id)
    codes = Counter(code for _, code in answers)
    bad = [
        f"{path} {code}"
        for path, code in answers
        if not (isinstance(code, int) and (200 <= code < 300 or code in ANSWERING))
    ]
    summary = ", ".join(f"{n} × {code}" for code, n in sorted(codes.items(), key=str))
    where = "in-process" if ctx.app is not None else ctx.url
    if bad:
        return ItemResult("api", False, f"{len(bad)} of {len(paths)} failed: {'; '.join(bad[:8])}")
    return ItemResult("api", True, f"{len(paths)} GET endpoints answered ({where}): {summary}")


async def _get(client: HttpClient, path: str, turns: asyncio.Semaphore) -> tuple[str, int | str]:
    from nachtwacht.httpclient import HttpError

    try:
        async with turns:
            response = await client.get(path, params={"limit": 1})
    except HttpError as exc:
        return path, f"{exc.__class__.__name__}: {exc}"
    return path, response.status_code


# -- access controls -------------------------------------------------------------------------


def _accounts(ctx: Context) -> tuple[list[str], str]:
    """(problems with the accounts, what was checked)."""
    problems: list[str] = []
    with ctx.store.connect() as conn:
        admins = users.enabled_admins(conn)
        checked, weak = users.default_passwords(conn, DEFAULT_PASSWORDS)
    if not admins:
        problems.append("no enabled admin user")
    problems += [f"user {username} has a default password" for username in weak]
    return problems, (
        f"{admins} admins; no default passwords among {checked} admins and responders"
    )


async def access(ctx: Context) -> ItemResult:
    from nachtwacht.httpclient import HttpError

    try:
        problems, checked = await asyncio.to_thread(_accounts, ctx)
    except StoreError as exc:
        return ItemResult("access", False, f"cannot read the users: {exc}")
    notes = [] if problems else [checked]
    if ctx.app is None:
        await reach(ctx)
    client = _client(ctx)
    if client is None:
        problems.append("cannot check that the API refuses anonymous requests: no server answers")
    else:
        async with client:
            try:
                status: int | None = (await client.get("/api/v1/status")).status_code
            except HttpError as exc:
                status = None
                problems.append(f"anonymous GET /api/v1/status failed: {exc}")
        if status == 401:
            notes.insert(0, "anonymous API request refused (401)")
        elif status is not None:
            problems.append(f"an anonymous GET /api/v1/status got {status}, not 401")
    return ItemResult("access", not problems, "; ".join(problems + notes))


# -- alert delivery ----------------------------------------------------------------------------


def _test_contact(ctx: Context) -> str | None:
    people = ctx.settings.people
    if ctx.cfg.test_contact:
        return ctx.cfg.test_contact
    with ctx.store.connect() as conn:
        on_call = resolve_target(conn, ctx.settings, "oncall", ctx.clock.now())
    if on_call:
        return on_call[0].id
    return people.contacts[0].id if people.contacts else None


def _routes(ctx: Context) -> list[str] | None:
    """A follow-up of the incident tests the rooms its pages reached, not every room."""
    if ctx.incident_id is None:
        return None
    with ctx.store.connect() as conn:
        return followup_channels(conn, ctx.settings, ctx.incident_id)


async def alerts(ctx: Context) -> ItemResult:
    """A test message through the outbox to one contact, on every channel reaching them.

    Each message gets one delivery attempt within `notify_wait` (by this run's sender, or by
    a running server's if it takes the row first): the question is whether alerts go out now,
    so a failed first attempt fails the item rather than waiting out the retries.
    """
    contact = await asyncio.to_thread(_test_contact, ctx)
    if contact is None:
        return ItemResult(
            "alerts", False, "no contact to send the alert-delivery test to (people.contacts)"
        )
    try:
        routes = await asyncio.to_thread(_routes, ctx)
        rows = await send_test(
            ctx.settings,
            ctx.store,
            ctx.clock,
            contact,
            ctx.cfg.notify_wait,
            prefix="checklist",
            routes=routes,
            first_attempt=True,
        )
    except NotifyTestError as exc:
        # a contact named in the config but unknown: say which setting names it
        where = " (reviews.checklist.test_contact)" if ctx.cfg.test_contact == contact else ""
        return ItemResult("alerts", False, f"{exc}{where}")
    sent = [r["channel"] for r in rows if r["status"] == "sent"]
    failed = [
        f"{r['channel']}: {r['error'] or 'not sent within the wait'}"
        for r in rows
        if r["status"] != "sent"
    ]
    if failed:
        return ItemResult("alerts", False, f"test message to {contact} failed: {'; '.join(failed)}")
    return ItemResult("alerts", True, f"test message to {contact} sent via {', '.join(sent)}")
