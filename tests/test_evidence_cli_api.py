"""`nachtwacht evidence capture|verify|list` and /api/v1/evidence."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from nachtwacht.cli.main import app as cli
from nachtwacht.clock import FakeClock
from nachtwacht.config.loader import parse_config
from nachtwacht.incidents import service as incidents
from nachtwacht.store.db import Store
from nachtwacht.web.app import create_app
from tests.helpers import admin_token

runner = CliRunner()
PASSWORD = "cfg-secret-Pw-5521"


def config_text(store_url: str, tmp_path: Path) -> str:
    secret_file = tmp_path / "db.conf"
    secret_file.write_text(f"host=db\npassword={PASSWORD}\n")
    return f"""
site: evidence-cli
store:
  url: {store_url}
evidence:
  dir: "{tmp_path / "evidence"}"
  config_files: ["{secret_file}"]
"""


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "nachtwacht.yaml"
    path.write_text(config_text(f"sqlite:///{tmp_path / 'nw.db'}", tmp_path))
    return path


def invoke(*args: str, code: int = 0) -> str:
    result = runner.invoke(cli, ["evidence", *args])
    assert result.exit_code == code, result.output
    return result.output


def test_capture_list_verify_and_a_flipped_byte(config: Path) -> None:
    bundle = json.loads(invoke("capture", "-c", str(config), "--json"))
    path = Path(bundle["path"])
    assert path.is_file() and bundle["files"] == 7
    listed = invoke("list", "-c", str(config))
    assert f"#{bundle['id']}" in listed and str(path) in listed
    ok = invoke("verify", str(path), "-c", str(config))
    assert ok.startswith(f"OK  {path}: 7 files unchanged")
    assert f"store record #{bundle['id']}" in ok
    data = bytearray(path.read_bytes())
    data[len(data) // 3] ^= 0xFF
    path.write_bytes(bytes(data))
    changed = invoke("verify", str(path), "-c", str(config), code=1)
    assert changed.startswith(f"CHANGED  {path}")
    assert "the bundle file changed" in changed
    assert invoke("verify", str(path), "--no-store", code=1).startswith("CHANGED")
    assert "no such file" in invoke("verify", str(path) + ".nope", "--no-store", code=2)


def test_verify_takes_an_id_or_a_file_name_as_listed(config: Path) -> None:
    bundle = json.loads(invoke("capture", "-c", str(config), "--json"))
    path = Path(bundle["path"])
    by_id = invoke("verify", str(bundle["id"]), "-c", str(config))
    assert by_id.startswith(f"OK  {path}")
    by_name = invoke("verify", path.name, "-c", str(config))
    assert by_name.startswith(f"OK  {path}")
    missing = invoke("verify", "9999", "-c", str(config), code=2)
    assert "no evidence bundle #9999" in missing


def test_capture_on_an_incident_and_an_unknown_one(config: Path, tmp_path: Path) -> None:
    from nachtwacht.config.loader import load_config

    cfg = load_config(config)
    store = Store(cfg.store.url)
    store.migrate()
    with store.begin() as conn:
        incident_id = incidents.open_incident(conn, cfg, title="x", severity=2, now=1.8e9)
    store.dispose()
    out = invoke("capture", "--incident", str(incident_id), "-c", str(config))
    assert f"recorded on incident #{incident_id}" in out and "manifest sha256 " in out
    assert "error: no incident 77" in invoke("capture", "-i", "77", "-c", str(config), code=2)
    only = json.loads(invoke("list", "-i", str(incident_id), "-c", str(config), "--json"))
    assert [b["incident_id"] for b in only] == [incident_id]


@pytest.fixture
def api(store: Store, clock: FakeClock, tmp_path: Path) -> Iterator[TestClient]:
    settings = parse_config(config_text(store.url, tmp_path), "api.yaml")
    app = create_app(settings, store, clock, start_engine=False)
    token = admin_token(store, clock.now(), role="responder")
    with TestClient(app, headers={"Authorization": f"Bearer {token}"}) as client:
        yield client


def test_the_evidence_api(api: TestClient, store: Store, clock: FakeClock, tmp_path: Path) -> None:
    settings = api.app.state.nw.runtime.settings
    with store.begin() as conn:
        incident_id = incidents.open_incident(
            conn, settings, title="x", severity=1, now=clock.now()
        )
    created = api.post("/api/v1/evidence", json={"incident_id": incident_id})
    assert created.status_code == 201, created.text
    bundle = created.json()
    assert bundle["incident_id"] == incident_id and len(bundle["manifest_sha256"]) == 64
    assert PASSWORD.encode() not in Path(bundle["path"]).read_bytes()
    listed = api.get("/api/v1/evidence", params={"incident_id": incident_id})
    assert [b["id"] for b in listed.json()] == [bundle["id"]]
    assert listed.headers["X-Total-Count"] == "1"

    by_id = api.post("/api/v1/evidence/verify", json={"id": bundle["id"]}).json()
    assert by_id["ok"] is True and by_id["manifest_sha256"] == bundle["manifest_sha256"]
    by_name = api.post("/api/v1/evidence/verify", json={"bundle": bundle["name"]}).json()
    assert by_name["ok"] is True
    Path(bundle["path"]).write_bytes(Path(bundle["path"]).read_bytes()[:-10])
    broken = api.post("/api/v1/evidence/verify", json={"id": bundle["id"]}).json()
    assert broken["ok"] is False and broken["problems"]
    Path(bundle["path"]).unlink()
    gone = api.post("/api/v1/evidence/verify", json={"id": bundle["id"]}).json()
    assert gone["ok"] is False and "cannot read the bundle" in gone["problems"][0]


def test_the_evidence_api_refuses_bad_input(api: TestClient, tmp_path: Path) -> None:
    (tmp_path / "evidence").mkdir()
    cases = [
        ("/api/v1/evidence", {"incident_id": 404}, 404, "incident_id"),
        ("/api/v1/evidence", {"incident_id": -1}, 422, "incident_id"),
        ("/api/v1/evidence/verify", {"bundle": "/etc/passwd"}, 422, "bundle"),
        ("/api/v1/evidence/verify", {"bundle": "../../nw.db"}, 422, "bundle"),
        ("/api/v1/evidence/verify", {"bundle": "missing.tar.gz"}, 404, "bundle"),
        ("/api/v1/evidence/verify", {"bundle": "x" * 300}, 422, "bundle"),
        ("/api/v1/evidence/verify", {"bundle": "a\u0000b"}, 422, "bundle"),
        ("/api/v1/evidence/verify", {"id": 9}, 404, "id"),
        ("/api/v1/evidence/verify", {}, 422, None),
    ]
    for url, body, status, field in cases:
        response = api.post(url, json=body)
        assert response.status_code == status, (body, response.text)
        if field is not None:
            assert response.json()["field"] == field, body
