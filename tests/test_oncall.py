"""People: rotation turns in Europe/Amsterdam (DST included), overrides, targets, CLI and API."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from types import SimpleNamespace
from zoneinfo import ZoneInfo

import pytest
import typer
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import insert
from typer.testing import CliRunner

from nachtwacht.clock import FakeClock
from nachtwacht.config.loader import parse_config
from nachtwacht.config.schema import Settings
from nachtwacht.oncall import api, service, turns
from nachtwacht.oncall.service import OncallError
from nachtwacht.store import tables as t
from nachtwacht.store.db import Store
from nachtwacht.web import errors
from nachtwacht.web.state import AppState, install
from tests.conftest import closed_port

AMS = ZoneInfo("Europe/Amsterdam")
HOUR = 3600.0

PEOPLE = """
site: vereniging
people:
  contacts:
    - {id: alice, name: Alice Anders, roles: [oncall_engineer], phone: "+31600000001",
       email: alice@example.org, backup: tina}
    - {id: bob, name: Bob Bakker, roles: [oncall_engineer], phone: "+31600000002"}
    - {id: carol, name: Carol Claes, roles: [oncall_engineer], email: carol@example.org}
    - {id: dave, name: Dave Dekker, roles: [devops], phone: "+31600000004"}
    - {id: tina, name: Tina Techlead, roles: [technical_lead], phone: "+31600000005"}
    - {id: mark, name: Mark Manager, roles: [operations_manager, management],
       phone: "+31600000006"}
    - {id: eve, name: Eve Exec, roles: [executives], phone: "+31600000007"}
  external:
    - {id: hoster, kind: hosting, provider: Hostco, emergency_number: "+31201234567",
       portal: "https://support.hostco.example", account_id: AC-42}
    - {id: dbsupport, kind: database, provider: MariaDB Support, contract_id: C-7}
"""

ROTATIONS = """
  rotations:
    # first turn: Monday 2026-10-05 09:00 (the first Monday 09:00 on or after Oct 1)
    - name: primary
      type: weekly
      handoff: "mon 09:00"
      start: 2026-10-01
      members: [alice, bob, carol]
      overrides:
        - {contact: dave, start: "2026-12-24 18:00", end: "2026-12-27 09:00"}
    - name: nights
      type: daily
      handoff: "18:00"
      start: 2027-03-20
      members: [bob, carol]
    - name: gap
      type: daily
      handoff: "02:30"
      start: 2026-10-20
      members: [alice, bob]
"""


def local(*args: int) -> float:
    return datetime(*args, tzinfo=AMS).timestamp()


def site(store_url: str = "sqlite:///unused.db", people: str = PEOPLE + ROTATIONS) -> Settings:
    return parse_config(f"store:\n  url: {store_url}\n" + people, "site.yaml")


def rotation(settings: Settings, name: str):  # noqa: ANN201
    return service.rotation_named(settings, name)


def who(settings: Settings, name: str, ts: float, conn=None) -> str | None:  # noqa: ANN001
    found = service.on_call(conn, settings, name, ts)
    return found.id if found else None


# -- rotation turns --------------------------------------------------------------------------


def test_weekly_rotation_starts_at_first_handoff_on_or_after_start_date() -> None:
    cfg = site()
    rot = rotation(cfg, "primary")
    assert turns.shift_at(cfg, rot, local(2026, 10, 5, 8, 59))[0] is None
    assert who(cfg, "primary", local(2026, 10, 5, 8, 59)) is None
    member, start, end = turns.shift_at(cfg, rot, local(2026, 10, 5, 9, 0))
    assert (member, start, end) == ("alice", local(2026, 10, 5, 9), local(2026, 10, 12, 9))


def test_weekly_rotation_hands_over_in_member_order_and_wraps() -> None:
    cfg = site()
    turns = [who(cfg, "primary", local(2026, 10, 5 + 7 * k, 12)) for k in range(4)]
    assert turns == ["alice", "bob", "carol", "alice"]
    # the handoff is at 09:00 sharp, not at midnight
    assert who(cfg, "primary", local(2026, 10, 12, 8, 59)) == "alice"
    assert who(cfg, "primary", local(2026, 10, 12, 9, 0)) == "bob"


def test_weekly_handoff_stays_at_local_time_across_october_dst_change() -> None:
    cfg = site()
    rot = rotation(cfg, "primary")
    # carol's turn contains Sunday 2026-10-25, when clocks go back: 169 hours long
    member, start, end = turns.shift_at(cfg, rot, local(2026, 10, 25, 12))
    assert member == "carol"
    assert (end - start) / HOUR == 169
    assert datetime.fromtimestamp(end, AMS).strftime("%a %H:%M %Z") == "Mon 09:00 CET"
    assert who(cfg, "primary", local(2026, 10, 26, 8, 59)) == "carol"
    assert who(cfg, "primary", local(2026, 10, 26, 9, 0)) == "alice"


def test_daily_handoff_stays_at_local_time_across_march_dst_change() -> None:
    cfg = site()
    rot = rotation(cfg, "nights")
    member, start, end = turns.shift_at(cfg, rot, local(2027, 3, 28, 12))
    # clocks go forward on 2027-03-28: the turn from Saturday 18:00 lasts 23 hours
    assert (end - start) / HOUR == 23
    assert datetime.fromtimestamp(start, AMS).strftime("%m-%d %H:%M %Z") == "03-27 18:00 CET"
    assert datetime.fromtimestamp(end, AMS).strftime("%m-%d %H:%M %Z") == "03-28 18:00 CEST"
    # 2027-03-20 is turn 0 (bob); 03-27 is turn 7: carol
    assert member == "carol"
    assert who(cfg, "nights", local(2027, 3, 28, 17, 59)) == "carol"
    assert who(cfg, "nights", local(2027, 3, 28, 18, 0)) == "bob"


def test_daily_rotation_alternates_and_hands_over_at_the_handoff_time() -> None:
    cfg = site()
    days = [who(cfg, "nights", local(2027, 3, 20 + d, 20)) for d in range(5)]
    assert days == ["bob", "carol", "bob", "carol", "bob"]
    assert who(cfg, "nights", local(2027, 3, 21, 17, 59)) == "bob"
    assert who(cfg, "nights", local(2027, 3, 20, 17, 59)) is None  # before the first turn


def test_handoff_inside_the_spring_gap_happens_when_the_gap_ends() -> None:
    cfg = site()
    rot = rotation(cfg, "gap")
    # 02:30 does not exist on 2027-03-28 in Amsterdam: the handoff is at 03:30 CEST
    _, start, end = turns.shift_at(cfg, rot, local(2027, 3, 28, 12))
    assert datetime.fromtimestamp(start, AMS).strftime("%m-%d %H:%M %Z") == "03-28 03:30 CEST"
    assert datetime.fromtimestamp(end, AMS).strftime("%m-%d %H:%M %Z") == "03-29 02:30 CEST"
    # 02:30 happens twice on 2026-10-25: the handoff is at the first one (CEST)
    _, start, _ = turns.shift_at(cfg, rot, local(2026, 10, 25, 12))
    assert datetime.fromtimestamp(start, AMS).strftime("%m-%d %H:%M %Z") == "10-25 02:30 CEST"


# -- overrides -------------------------------------------------------------------------------


def test_config_override_takes_precedence_and_ends() -> None:
    cfg = site()
    # 2026-12-21 09:00 starts turn 11 (11 mod 3 = 2): carol's week, overridden by dave
    assert who(cfg, "primary", local(2026, 12, 24, 17, 59)) == "carol"
    assert who(cfg, "primary", local(2026, 12, 24, 18, 0)) == "dave"
    assert who(cfg, "primary", local(2026, 12, 27, 8, 59)) == "dave"
    assert who(cfg, "primary", local(2026, 12, 27, 9, 0)) == "carol"


def test_store_override_wins_over_config_and_newest_store_override_wins(
    sqlite_store: Store,
) -> None:
    cfg = site(sqlite_store.url)
    now = local(2026, 12, 20, 12)
    with sqlite_store.begin() as conn:
        first = service.add_override(
            conn, cfg, "primary", "bob", local(2026, 12, 25, 0), local(2026, 12, 26, 0), "t", now
        )
        second = service.add_override(
            conn,
            cfg,
            "primary",
            "alice",
            local(2026, 12, 25, 12),
            local(2026, 12, 25, 14),
            "t",
            now,
        )
    assert second > first
    with sqlite_store.connect() as conn:
        assert who(cfg, "primary", local(2026, 12, 24, 20), conn) == "dave"  # config only
        assert who(cfg, "primary", local(2026, 12, 25, 1), conn) == "bob"  # store beats config
        assert who(cfg, "primary", local(2026, 12, 25, 13), conn) == "alice"  # newest wins
        assert who(cfg, "primary", local(2026, 12, 25, 14), conn) == "bob"  # alice's ended
        assert who(cfg, "primary", local(2026, 12, 26, 0), conn) == "dave"  # bob's ended
        assert who(cfg, "nights", local(2027, 3, 20, 20), conn) == "bob"  # other rotation as is
    with sqlite_store.begin() as conn:
        service.delete_override(conn, first)
    with sqlite_store.connect() as conn:
        assert who(cfg, "primary", local(2026, 12, 25, 1), conn) == "dave"


def test_override_of_a_contact_removed_from_config_is_ignored(sqlite_store: Store) -> None:
    cfg = site(sqlite_store.url)
    with sqlite_store.begin() as conn:
        conn.execute(
            insert(t.oncall_overrides).values(
                rotation="primary",
                contact="ghost",
                starts_at=local(2026, 11, 1),
                ends_at=local(2026, 11, 3),
                created_by="t",
            )
        )
    with sqlite_store.connect() as conn:
        assert who(cfg, "primary", local(2026, 11, 2), conn) == "alice"
        rows = service.list_overrides(conn, cfg, local(2026, 10, 1), "primary")
    assert [(r["contact"], r["stale"]) for r in rows] == [("ghost", True), ("dave", False)]


@pytest.mark.parametrize(
    ("rotation_name", "contact", "start", "end", "field", "words"),
    [
        ("nope", "bob", 1.0, 2.0, "rotation", "no rotation named 'nope'"),
        ("primary", "nobody", 1.0, 2.0, "contact", "no contact 'nobody'"),
        ("primary", "bob", 2.0, 2.0, "ends_at", "ends_at must be after starts_at"),
        ("primary", "bob", -5.0, -1.0, "ends_at", "is in the past"),
    ],
)
def test_add_override_rejects_bad_input_naming_the_field(
    sqlite_store: Store,
    rotation_name: str,
    contact: str,
    start: float,
    end: float,
    field: str,
    words: str,
) -> None:
    cfg = site(sqlite_store.url)
    now = local(2026, 12, 1)
    with pytest.raises(OncallError) as caught, sqlite_store.begin() as conn:
        service.add_override(
            conn, cfg, rotation_name, contact, now + start * HOUR, now + end * HOUR, "t", now
        )
    assert caught.value.field == field and words in str(caught.value)
    with sqlite_store.connect() as conn:
        assert service.list_overrides(conn, cfg, now, include_past=True)[0]["source"] == "config"
        assert len(service.list_overrides(conn, cfg, now, include_past=True)) == 1


def test_override_that_started_in_the_past_but_is_still_running_is_accepted(
    sqlite_store: Store,
) -> None:
    cfg = site(sqlite_store.url)
    now = local(2026, 11, 4, 12)
    with sqlite_store.begin() as conn:
        service.add_override(conn, cfg, "primary", "dave", now - 2 * HOUR, now + HOUR, "t", now)
    with sqlite_store.connect() as conn:
        assert who(cfg, "primary", now, conn) == "dave"


def test_overrides_add_list_delete_on_every_store(store: Store) -> None:
    cfg = site(store.url)
    now = local(2026, 11, 1)
    with store.begin() as conn:
        new_id = service.add_override(
            conn, cfg, "nights", "alice", local(2027, 3, 22, 18), local(2027, 3, 23, 18), "ops", now
        )
    with store.connect() as conn:
        rows = service.list_overrides(conn, cfg, now, "nights")
        assert who(cfg, "nights", local(2027, 3, 23, 3), conn) == "alice"
        assert who(cfg, "nights", local(2027, 3, 23, 18), conn) == "carol"
    assert rows == [
        {
            "id": new_id,
            "source": "store",
            "rotation": "nights",
            "contact": "alice",
            "name": "Alice Anders",
            "starts_at": "2027-03-22T17:00:00Z",
            "ends_at": "2027-03-23T17:00:00Z",
            "created_by": "ops",
            "stale": False,
        }
    ]
    with store.begin() as conn:
        assert service.delete_override(conn, new_id)["contact"] == "alice"
    with store.connect() as conn:
        assert service.list_overrides(conn, cfg, now, "nights") == []
        assert who(cfg, "nights", local(2027, 3, 23, 3), conn) == "bob"
    with pytest.raises(OncallError, match=f"no override with id {new_id}"), store.begin() as conn:
        service.delete_override(conn, new_id)


def test_ended_overrides_are_listed_only_when_asked(sqlite_store: Store) -> None:
    cfg = site(sqlite_store.url)
    later = local(2027, 1, 1)
    with sqlite_store.connect() as conn:
        assert service.list_overrides(conn, cfg, later) == []
        assert len(service.list_overrides(conn, cfg, later, include_past=True)) == 1


# -- next handoff and schedule ---------------------------------------------------------------


def test_next_handoff_is_the_next_turn_of_the_rotation() -> None:
    cfg = site()
    ts, contact = service.next_handoff(None, cfg, "primary", local(2026, 10, 20, 3))
    assert (ts, contact.id) == (local(2026, 10, 26, 9), "alice")
    ts, contact = service.next_handoff(None, cfg, "nights", local(2027, 3, 1))
    assert (ts, contact.id) == (local(2027, 3, 20, 18), "bob")  # before the first turn


def test_next_handoff_counts_overrides_both_ways() -> None:
    cfg = site()
    ts, contact = service.next_handoff(None, cfg, "primary", local(2026, 12, 22))
    assert (ts, contact.id) == (local(2026, 12, 24, 18), "dave")
    ts, contact = service.next_handoff(None, cfg, "primary", local(2026, 12, 25))
    assert (ts, contact.id) == (local(2026, 12, 27, 9), "carol")


def test_next_handoff_skips_a_boundary_where_the_same_person_stays(sqlite_store: Store) -> None:
    cfg = site(sqlite_store.url)
    now = local(2026, 10, 6)
    with sqlite_store.begin() as conn:
        # bob covers the end of alice's week and then has his own: no change at 10-12 09:00
        service.add_override(
            conn, cfg, "primary", "bob", local(2026, 10, 10), local(2026, 10, 13), "t", now
        )
    with sqlite_store.connect() as conn:
        ts, contact = service.next_handoff(conn, cfg, "primary", local(2026, 10, 11))
    assert (ts, contact.id) == (local(2026, 10, 19, 9), "carol")


def test_single_member_rotation_hands_over_to_itself_at_the_next_turn() -> None:
    cfg = site(
        people=PEOPLE
        + """
  rotations:
    - {name: solo, type: weekly, handoff: "fri 17:00", start: 2026-01-01, members: [dave]}
"""
    )
    ts, contact = service.next_handoff(None, cfg, "solo", local(2026, 11, 4))
    assert (ts, contact.id) == (local(2026, 11, 6, 17), "dave")


def test_schedule_lists_turns_with_overrides_cut_in() -> None:
    cfg = site()
    rows = service.schedule(None, cfg, "primary", local(2026, 12, 21, 9), local(2026, 12, 28, 9))
    assert [(r["contact"], r["start_ts"], r["end_ts"]) for r in rows] == [
        ("carol", local(2026, 12, 21, 9), local(2026, 12, 24, 18)),
        ("dave", local(2026, 12, 24, 18), local(2026, 12, 27, 9)),
        ("carol", local(2026, 12, 27, 9), local(2026, 12, 28, 9)),
    ]
    assert rows[1]["member"] == "carol" and rows[1]["override"]["source"] == "config"
    assert rows[0]["override"] is None and rows[0]["name"] == "Carol Claes"
    with pytest.raises(OncallError, match="until must be after since"):
        service.schedule(None, cfg, "primary", local(2026, 12, 2), local(2026, 12, 1))


# -- targets and people ----------------------------------------------------------------------


def test_resolve_target_for_every_form(sqlite_store: Store) -> None:
    cfg = site(sqlite_store.url)
    at = local(2027, 3, 22, 20)  # primary: week of 03-22 (turn 24 -> alice); nights: bob
    with sqlite_store.connect() as conn:

        def ids(target: str) -> list[str]:
            return [c.id for c in service.resolve_target(conn, cfg, target, at)]

        # gap (turn 153 -> bob) duplicates nights: each person is named once
        assert ids("oncall") == ["alice", "bob"]
        assert ids("oncall:nights") == ["bob"]
        assert ids("oncall:missing") == []
        assert ids("role:technical_lead") == ["tina"]
        assert ids("role:management") == ["mark"]
        assert ids("contact:eve") == ["eve"]
        assert ids("contact:nobody") == []
        assert ids("external:hoster") == []
        assert ids("channel:mail") == []


def test_oncall_target_without_rotations_is_the_oncall_engineer_role() -> None:
    cfg = site(people=PEOPLE)
    found = service.resolve_target(None, cfg, "oncall", local(2026, 12, 1))  # type: ignore[arg-type]
    assert [c.id for c in found] == ["alice", "bob", "carol"]


def test_oncall_target_falls_back_to_the_role_before_any_rotation_starts() -> None:
    cfg = site()
    found = service.resolve_target(None, cfg, "oncall", local(2026, 1, 1))  # type: ignore[arg-type]
    assert [c.id for c in found] == ["alice", "bob", "carol"]
    assert service.resolve_target(None, cfg, "oncall:nights", local(2026, 1, 1)) == []  # type: ignore[arg-type]


def test_external_contacts_by_id_or_kind_and_backups() -> None:
    cfg = site()
    assert [e.id for e in service.external_contacts(cfg, None)] == ["hoster", "dbsupport"]
    assert [e.provider for e in service.external_contacts(cfg, "database")] == ["MariaDB Support"]
    assert [e.id for e in service.external_contacts(cfg, "hoster")] == ["hoster"]
    assert service.external_contacts(cfg, "other") == []
    assert service.backup_of(cfg, "alice").id == "tina"  # type: ignore[union-attr]
    assert service.backup_of(cfg, cfg.people.contact("bob")) is None  # type: ignore[arg-type]
    assert service.backup_of(cfg, "nobody") is None


# -- CLI -------------------------------------------------------------------------------------


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "nachtwacht.yaml"
    path.write_text(f"store:\n  url: sqlite:///{tmp_path / 'nw.db'}\n" + PEOPLE + ROTATIONS)
    return path


def cli_app() -> typer.Typer:
    from nachtwacht.cli.main import app

    return app


def run(*args: str) -> object:
    return CliRunner().invoke(cli_app(), list(args))


def test_cli_oncall_shows_who_until_when_next_roles_and_external(config_file: Path) -> None:
    result = run("oncall", "-c", str(config_file), "--at", "2026-12-24 22:00")
    assert result.exit_code == 0, result.output
    out = result.output
    assert "on call at Thu 2026-12-24 22:00 CET" in out
    primary = out.split("rotation primary")[1].split("rotation nights")[0]
    assert "now:   Dave Dekker (+31600000004)" in primary
    assert "until: Sun 2026-12-27 09:00 CET" in primary
    assert "next:  Carol Claes (carol@example.org)" in primary
    assert "Technical lead       Tina Techlead (+31600000005)" in out
    assert "Operations manager   Mark Manager (+31600000006)" in out
    assert "Executives           Eve Exec (+31600000007)" in out
    assert (
        "Hostco [hosting]: emergency +31201234567, portal https://support.hostco.example, "
        "account AC-42" in out
    )
    nights = out.split("rotation nights")[1]
    assert "now:   nobody" in nights and "next:  Bob Bakker" in nights


def test_cli_oncall_json_matches_the_service(config_file: Path) -> None:
    result = run("oncall", "-c", str(config_file), "--at", "2026-10-20T12:00:00+02:00", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    primary = data["rotations"][0]
    assert primary["on_call"]["id"] == "carol" and primary["next"]["id"] == "alice"
    assert primary["until"] == "2026-10-26T08:00:00Z"
    assert primary["on_call"]["backup"] is None
    assert [r["role"] for r in data["roles"]] == [
        "technical_lead",
        "devops",
        "operations_manager",
        "management",
        "executives",
    ]
    assert data["external"][0]["account_id"] == "AC-42"


def test_cli_oncall_rejects_an_unreadable_time(config_file: Path) -> None:
    result = run("oncall", "-c", str(config_file), "--at", "christmas")
    assert result.exit_code == 2
    assert "'christmas' is not a time" in result.output and "Traceback" not in result.output


def test_cli_oncall_answers_from_config_when_the_store_is_down(tmp_path: Path) -> None:
    path = tmp_path / "nachtwacht.yaml"
    url = f"postgresql+psycopg://postgres@127.0.0.1:{closed_port()}/nowhere"
    path.write_text(f"store:\n  url: {url}\n" + PEOPLE + ROTATIONS)
    result = run("oncall", "-c", str(path), "--at", "2026-12-24 22:00", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["rotations"][0]["on_call"]["id"] == "dave"
    assert "showing the config only" in data["warning"]


def test_cli_override_add_list_delete(config_file: Path) -> None:
    add = run(
        "oncall", "override", "add", "primary", "dave", "--from", "2090-01-01 09:00",
        "--until", "2090-01-02 09:00", "--actor", "olga", "-c", str(config_file),
    )  # fmt: skip
    assert add.exit_code == 0, add.output
    assert "Dave Dekker on call in primary from Sun 2090-01-01 09:00 CET" in add.output
    override_id = int(add.output.split("#")[1].split(":")[0])

    listed = run("oncall", "override", "list", "primary", "--json", "-c", str(config_file))
    # (the config's Christmas override is listed too until it ends in real time)
    rows = [r for r in json.loads(listed.output) if r["source"] == "store"]
    assert [(r["id"], r["contact"], r["created_by"]) for r in rows] == [
        (override_id, "dave", "olga")
    ]
    at = run("oncall", "-c", str(config_file), "--at", "2090-01-01 12:00", "--json")
    assert json.loads(at.output)["rotations"][0]["override"]["id"] == override_id

    deleted = run("oncall", "override", "delete", str(override_id), "-c", str(config_file))
    assert deleted.exit_code == 0 and f"deleted override #{override_id}" in deleted.output
    again = run("oncall", "override", "delete", str(override_id), "-c", str(config_file))
    assert again.exit_code == 2 and f"no override with id {override_id}" in again.output
    listed = run("oncall", "override", "list", "--json", "-c", str(config_file))
    assert [r for r in json.loads(listed.output) if r["source"] == "store"] == []


def test_cli_override_add_with_unknown_contact_fails_in_one_line(config_file: Path) -> None:
    result = run(
        "oncall",
        "override",
        "add",
        "primary",
        "zoe",
        "--until",
        "2090-01-02 09:00",
        "-c",
        str(config_file),
    )
    assert result.exit_code == 2
    assert result.output.strip().startswith("error: no contact 'zoe'")
    assert len(result.output.strip().splitlines()) == 1


# -- API -------------------------------------------------------------------------------------


@pytest.fixture
def client(sqlite_store: Store) -> Iterator[TestClient]:
    app = FastAPI()
    errors.install(app)
    app.include_router(api.router)
    runtime = SimpleNamespace(
        settings=site(sqlite_store.url),
        store=sqlite_store,
        clock=FakeClock(local(2026, 12, 20, 12)),
    )
    install(app, AppState.of(runtime))
    with TestClient(app) as c:
        yield c


def test_api_oncall_returns_the_cli_data(client: TestClient) -> None:
    data = client.get("/api/v1/oncall").json()
    assert data["at"] == "2026-12-20T11:00:00Z"
    assert data["rotations"][0]["on_call"]["id"] == "bob"
    later = client.get("/api/v1/oncall", params={"at": "2026-12-25 12:00"}).json()
    assert later["rotations"][0]["on_call"]["id"] == "dave"
    bad = client.get("/api/v1/oncall", params={"at": "soon"})
    assert bad.status_code == 422 and bad.json()["field"] == "at"


@pytest.mark.parametrize("at", ["253402300800.0", "nan", "inf", "-1", "9999-12-31T23:59:59-14:00"])
def test_api_oncall_refuses_a_time_beyond_what_turns_can_count(client: TestClient, at: str) -> None:
    # found by schemathesis: a year past 9999 made the turn count raise (a 500)
    bad = client.get("/api/v1/oncall", params={"at": at})
    assert bad.status_code == 422 and bad.json()["field"] == "at", bad.text


def test_api_override_create_shows_in_schedule_and_delete(client: TestClient) -> None:
    created = client.post(
        "/api/v1/oncall/overrides",
        json={
            "rotation": "primary",
            "contact": "eve",
            "starts_at": "2026-12-22 09:00",
            "ends_at": "2026-12-22T12:00:00+01:00",
            "actor": "web",  # accepted from older clients, and ignored
        },
    )
    assert created.status_code == 201, created.text
    body = created.json()
    # the actor is the principal, and this router-only app has none (the real app needs one)
    assert body["starts_at"] == "2026-12-22T08:00:00Z" and body["created_by"] == "anonymous"
    listed = client.get("/api/v1/oncall/overrides").json()
    assert [r["id"] for r in listed] == [body["id"], None]  # then the config's Christmas one

    rows = client.get(
        "/api/v1/oncall/primary/schedule",
        params={"since": "2026-12-21 09:00", "until": "2026-12-23 00:00"},
    ).json()
    assert [(r["contact"], r["start"]) for r in rows] == [
        ("carol", "2026-12-21T08:00:00Z"),
        ("eve", "2026-12-22T08:00:00Z"),
        ("carol", "2026-12-22T11:00:00Z"),
    ]
    assert client.delete(f"/api/v1/oncall/overrides/{body['id']}").status_code == 200
    gone = client.delete(f"/api/v1/oncall/overrides/{body['id']}")
    assert gone.status_code == 404 and gone.json()["field"] == "id"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"rotation": "primary", "contact": "zoe", "ends_at": "2026-12-21 00:00"}, "contact"),
        ({"rotation": "other", "contact": "eve", "ends_at": "2026-12-21 00:00"}, "rotation"),
        ({"rotation": "primary", "contact": "eve", "ends_at": "2026-12-19 00:00"}, "ends_at"),
        ({"rotation": "primary", "contact": "eve"}, "ends_at"),
    ],
)
def test_api_override_errors_name_the_field(
    client: TestClient, body: dict[str, str], field: str
) -> None:
    response = client.post("/api/v1/oncall/overrides", json=body)
    assert response.status_code in (404, 422)
    assert response.json()["field"] == field
    assert client.get("/api/v1/oncall/overrides").json()[0]["source"] == "config"


def test_api_schedule_errors(client: TestClient) -> None:
    missing = client.get("/api/v1/oncall/nope/schedule")
    assert missing.status_code == 404 and missing.json()["field"] == "rotation"
    backwards = client.get(
        "/api/v1/oncall/primary/schedule", params={"since": "2026-12-02", "until": "2026-12-01"}
    )
    assert backwards.status_code == 422 and backwards.json()["field"] == "until"


def test_api_contacts_lists_people_and_external_support(client: TestClient) -> None:
    data = client.get("/api/v1/contacts").json()
    alice = data["contacts"][0]
    assert alice["id"] == "alice" and alice["backup"] == {
        "id": "tina",
        "name": "Tina Techlead",
        "phone": "+31600000005",
    }
    assert [e["provider"] for e in data["external"]] == ["Hostco", "MariaDB Support"]
