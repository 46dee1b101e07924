"""Evidence bundles: capture, the manifest, redaction, verification catching any change.

Real files, real commands (journalctl, df, free where installed), real stores; the bundle is
opened with tarfile and gzip, byte by byte.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import subprocess
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from nachtwacht.clock import FakeClock
from nachtwacht.config.loader import parse_config
from nachtwacht.config.redactor import Redactor
from nachtwacht.config.schema import Settings
from nachtwacht.evidence import service
from nachtwacht.incidents import service as incidents
from nachtwacht.store import tables as t
from nachtwacht.store.db import Store

DB_PASSWORD = "Xq7-site-db-pass-1138"
SMTP_PASSWORD = "smtp-pass-4711-secret"
API_TOKEN = "tok_9f8e7d6c5b4a3f2e1d0c"
INI_PASSWORD = "ini-hunter2-passphrase"
URL_PASSWORD = "url-pw-Zz9Yy8"
SECRETS = (DB_PASSWORD, SMTP_PASSWORD, API_TOKEN, INI_PASSWORD, URL_PASSWORD)


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    """A site's config files with secrets in every common form, and a long log."""
    root = tmp_path / "site"
    root.mkdir()
    site_config = root / "site_config.json"
    site_config.write_text(
        json.dumps(
            {"db_name": "_1bd3e0294da19198", "db_password": DB_PASSWORD, "db_type": "mariadb"},
            indent=1,
        )
    )
    env = root / "app.env"
    env.write_text(
        f"APP_MODE=production\nAPI_TOKEN={API_TOKEN}\nDB_URL=mysql://app:{URL_PASSWORD}@db/app\n"
    )
    ini = root / "my.cnf"
    ini.write_text(f"[client]\nuser = monitor\npassword = {INI_PASSWORD}\nhost = 127.0.0.1\n")
    log = root / "app.log"
    lines = [f"line {i} request ok" for i in range(1, 1501)]
    # a secret that leaked into a log line without any key= in front of it
    lines[1400] = f"line 1401 retrying with {DB_PASSWORD} for user app"
    log.write_text("\n".join(lines) + "\n")
    return {"site_config": site_config, "env": env, "ini": ini, "log": log}


def settings_for(store: Store, tmp_path: Path, files: dict[str, Path], extra: str = "") -> Settings:
    return parse_config(
        f"""
store:
  url: {store.url}
site: evidence-test
notify:
  channels:
    mail: {{kind: email, host: 127.0.0.1, port: 2525, username: nw, password: {SMTP_PASSWORD}}}
evidence:
  dir: "{tmp_path / "evidence"}"
  tail_lines: 200
  log_files: ["{files["log"]}", "{tmp_path}/missing/*.log"]
  config_files:
    - "{files["site_config"]}"
    - "{files["env"]}"
    - "{files["ini"]}"
{extra}""",
        "evidence.yaml",
    )


def members(path: Path) -> dict[str, bytes]:
    with tarfile.open(path, "r:gz") as tar:
        return {
            m.name.split("/", 1)[1]: tar.extractfile(m).read()  # type: ignore[union-attr]
            for m in tar.getmembers()
            if m.isfile()
        }


@pytest.fixture
def sleeper() -> Iterator[None]:
    """A process whose command line holds a password: the process list must not show it."""
    proc = subprocess.Popen(["sh", "-c", "sleep 60", "sh", f"--password={DB_PASSWORD}"])
    try:
        yield
    finally:
        proc.kill()
        proc.wait()


def test_capture_writes_a_hashed_bundle_and_records_it_on_the_incident(
    store: Store, clock: FakeClock, tmp_path: Path, files: dict[str, Path]
) -> None:
    settings = settings_for(store, tmp_path, files)
    with store.begin() as conn:
        incident_id = incidents.open_incident(
            conn, settings, title="Breach suspected", severity=1, now=clock.now()
        )
    bundle = service.capture_bundle(store, settings, clock, incident_id=incident_id, actor="rita")

    path = Path(bundle["path"])
    assert path.name == f"evidence-20270115T080000Z-inc{incident_id}.tar.gz"
    assert path.parent == tmp_path / "evidence"
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    content = members(path)
    manifest = json.loads(content["manifest.json"])
    assert manifest["incident_id"] == incident_id and manifest["created_by"] == "rita"
    assert manifest["created_at"] == "2027-01-15T08:00:00Z"
    assert manifest["host"] == os.uname().nodename
    listed = {f["path"]: f for f in manifest["files"]}
    assert set(listed) == set(content) - {"manifest.json"}
    for name, data in content.items():
        if name != "manifest.json":
            assert listed[name]["sha256"] == hashlib.sha256(data).hexdigest()
            assert listed[name]["size"] == len(data)
    for expected in (
        "system/journal.txt",
        "system/df.txt",
        "system/free.txt",
        "system/processes.txt",
        "system/load.json",
        "nachtwacht/state.json",
        f"logs{files['log']}",
        f"config{files['site_config']}",
        f"config{files['env']}",
        f"config{files['ini']}",
    ):
        assert expected in content, expected
    tail = content[f"logs{files['log']}"].decode().splitlines()
    assert (
        len(tail) == 200
        and tail[0] == "line 1301 request ok"
        and tail[-1] == "line 1500 request ok"
    )
    assert f"log: {tmp_path}/missing/*.log: no file matches" in manifest["notes"]
    state = json.loads(content["nachtwacht/state.json"])
    assert state["incident"]["title"] == "Breach suspected" and "ack_token" not in state["incident"]
    assert [i["id"] for i in state["incidents"]] == [incident_id]
    assert json.loads(content["system/load.json"])["cpus"] == os.cpu_count()

    manifest_sha = hashlib.sha256(content["manifest.json"]).hexdigest()
    assert bundle["manifest_sha256"] == manifest_sha
    with store.connect() as conn:
        row = conn.execute(select(t.evidence_bundles)).mappings().one()
        events = incidents.timeline(conn, incident_id)
    assert (row["manifest_sha256"], row["path"], row["incident_id"]) == (
        manifest_sha,
        str(path),
        incident_id,
    )
    assert row["bundle_sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert row["files"] == len(manifest["files"]) and row["size_bytes"] == path.stat().st_size
    evidence = [e for e in events if e["kind"] == "evidence"]
    assert len(evidence) == 1 and manifest_sha in evidence[0]["message"]
    assert evidence[0]["data"]["manifest_sha256"] == manifest_sha and evidence[0]["actor"] == "rita"
    # the .sha256 beside it works with the standard tool
    check = subprocess.run(
        ["sha256sum", "-c", path.name + ".sha256"], cwd=path.parent, capture_output=True
    )
    assert check.returncode == 0, check.stdout


def test_no_secret_of_a_copied_config_reaches_the_bundle(
    sqlite_store: Store, clock: FakeClock, tmp_path: Path, files: dict[str, Path], sleeper: None
) -> None:
    settings = settings_for(sqlite_store, tmp_path, files)
    bundle = service.capture_bundle(sqlite_store, settings, clock)
    path = Path(bundle["path"])
    # every byte of every member, the decompressed tar stream, the compressed file, the sidecar
    content = members(path)
    everything = b"".join(content.values())
    raw = gzip.decompress(path.read_bytes())
    for secret in SECRETS:
        token = secret.encode()
        for name, data in content.items():
            assert token not in data, f"{secret} in {name}"
        assert token not in raw and token not in path.read_bytes()
    assert f"password={DB_PASSWORD}".encode() not in everything
    site = json.loads(content[f"config{files['site_config']}"])
    assert site == {"db_name": "_1bd3e0294da19198", "db_password": "••••••", "db_type": "mariadb"}
    env = content[f"config{files['env']}"].decode()
    assert "API_TOKEN=••••••" in env and "APP_MODE=production" in env
    assert "mysql://app:••••••@db/app" in env
    assert "password = ••••••" in content[f"config{files['ini']}"].decode()
    assert "user = monitor" in content[f"config{files['ini']}"].decode()
    # the leaked line in the log is masked too, because the config taught the redactor
    assert "line 1401 retrying with •••••• for user app" in content[f"logs{files['log']}"].decode()
    assert "--password=••••••" in content["system/processes.txt"].decode()


def test_verify_passes_then_fails_after_one_flipped_byte(
    store: Store, clock: FakeClock, tmp_path: Path, files: dict[str, Path]
) -> None:
    settings = settings_for(store, tmp_path, files)
    path = Path(service.capture_bundle(store, settings, clock)["path"])
    good = service.verify(store, path)
    assert good.ok, good.problems
    assert good.files_checked == 10 and good.checked_against[0].startswith("store record #")
    original = path.read_bytes()
    for offset in (4, len(original) // 2, len(original) - 3):  # gzip header, data, trailer
        flipped = bytearray(original)
        flipped[offset] ^= 0x01
        path.write_bytes(bytes(flipped))
        result = service.verify(store, path)
        assert not result.ok, offset
        assert "the bundle file changed" in result.problems[0]
    path.write_bytes(original)
    assert service.verify(store, path).ok


def _rewrite(path: Path, change: str, fix_manifest: bool) -> None:
    """Change one member's bytes, optionally updating its manifest entry to match."""
    with tarfile.open(path, "r:gz") as tar:
        entries = [(m, tar.extractfile(m).read()) for m in tar.getmembers() if m.isfile()]  # type: ignore[union-attr]
    out = []
    for info, data in entries:
        if info.name.endswith(change):
            data = data.replace(b"free", b"FREE") + b"edited\n"
        out.append((info, data))
    if fix_manifest:
        manifest_i = next(i for i, (m, _) in enumerate(out) if m.name.endswith("manifest.json"))
        manifest = json.loads(out[manifest_i][1])
        for f in manifest["files"]:
            if f["path"] == change:
                data = next(d for m, d in out if m.name.endswith(change))
                f["sha256"], f["size"] = hashlib.sha256(data).hexdigest(), len(data)
        out[manifest_i] = (
            out[manifest_i][0],
            json.dumps(manifest, indent=2, sort_keys=True).encode(),
        )
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for info, data in out:
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    path.write_bytes(buffer.getvalue())


def test_a_changed_file_is_caught_even_with_a_forged_manifest_and_sidecar(
    sqlite_store: Store, clock: FakeClock, tmp_path: Path, files: dict[str, Path]
) -> None:
    settings = settings_for(sqlite_store, tmp_path, files)
    path = Path(service.capture_bundle(sqlite_store, settings, clock)["path"])
    backup = path.read_bytes()

    _rewrite(path, "system/free.txt", fix_manifest=False)
    result = service.verify(None, path)  # even without the store: against the manifest
    assert not result.ok
    assert any(p.startswith("system/free.txt: SHA-256") for p in result.problems)

    path.write_bytes(backup)
    _rewrite(path, "system/free.txt", fix_manifest=True)
    side = path.with_name(path.name + ".sha256")
    side.write_text(f"{hashlib.sha256(path.read_bytes()).hexdigest()}  {path.name}\n")
    assert service.verify(None, path).ok  # a perfect forgery fools a bundle alone ...
    result = service.verify(sqlite_store, path)  # ... but not the store's record
    assert not result.ok
    assert any("the manifest changed" in p for p in result.problems)
    assert any("the bundle file changed" in p for p in result.problems)


def test_a_host_without_journald_gets_a_note_not_a_failure(
    sqlite_store: Store,
    clock: FakeClock,
    tmp_path: Path,
    files: dict[str, Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    tools = tmp_path / "tools"
    tools.mkdir()
    for tool in ("df", "free"):
        found = subprocess.run(["sh", "-c", f"command -v {tool}"], capture_output=True, text=True)
        if found.stdout.strip():
            (tools / tool).symlink_to(found.stdout.strip())
    monkeypatch.setenv("PATH", str(tools))
    settings = settings_for(sqlite_store, tmp_path, files)
    bundle = service.capture_bundle(sqlite_store, settings, clock)
    content = members(Path(bundle["path"]))
    manifest = json.loads(content["manifest.json"])
    note = "journal: not collected: journalctl is not installed (not found on PATH)"
    assert note in manifest["notes"] and note in bundle["notes"]
    assert content["system/journal.txt"].startswith(b"journal not collected")
    assert service.verify(sqlite_store, Path(bundle["path"])).ok


def test_capture_for_an_unknown_incident_is_refused(
    sqlite_store: Store, clock: FakeClock, tmp_path: Path, files: dict[str, Path]
) -> None:
    settings = settings_for(sqlite_store, tmp_path, files)
    with pytest.raises(service.EvidenceError) as exc:
        service.capture_bundle(sqlite_store, settings, clock, incident_id=42)
    assert (exc.value.http_status, exc.value.field) == (404, "incident_id")
    assert not (tmp_path / "evidence").exists()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            '{"db_password": "abc123xyz", "db_name": "x"}',
            '{"db_password": "••••••", "db_name": "x"}',
        ),
        ("password: hunter22\nuser: bob", "password: ••••••\nuser: bob"),
        ("export AWS_SECRET_ACCESS_KEY='AKx/9+z'", "export AWS_SECRET_ACCESS_KEY='••••••'"),
        ("Authorization: Bearer eyJhbGciOi.abc.def", "Authorization: ••••••"),
        (
            "curl -H 'X-Token: abc' https://u:p4ss@h/x?token=zz9&a=1",
            "curl -H 'X-Token: ••••••' https://u:••••••@h/x?token=••••••&a=1",
        ),
        (
            "min_password_length = 8\npassword_reset = on",
            "min_password_length = 8\npassword_reset = on",
        ),
    ],
)
def test_redaction_of_the_common_forms(text: str, expected: str) -> None:
    assert Redactor().text(text) == expected


def test_the_redactor_masks_a_known_secret_anywhere() -> None:
    r = Redactor(["correct-horse-battery"])
    assert (
        r.text("login ok with correct-horse-battery from 10.0.0.1")
        == "login ok with •••••• from 10.0.0.1"
    )


def test_a_security_incident_bundle_holds_the_watched_logs_and_the_blocks(
    sqlite_store: Store, clock: FakeClock, tmp_path: Path, files: dict[str, Path]
) -> None:
    """The protocol's evidence for a security incident: the logs of the window (the logs the
    detectors read, even when evidence.log_files does not name them), and the blocks made."""
    access = tmp_path / "access.log"
    line = '203.0.113.9 - - [15/Jan/2027:07:5{i}:00 +0000] "GET /.env HTTP/1.1" 404 0 "-" "x"\n'
    access.write_text("".join(line.format(i=i) for i in range(3)))
    extra = f'security:\n  sources:\n    - {{name: web, kind: nginx, path: "{access}"}}\n'
    settings = settings_for(sqlite_store, tmp_path, files, extra)
    with sqlite_store.begin() as conn:
        conn.execute(
            t.security_blocks.insert().values(
                address="203.0.113.9", reason="scanner", created_by="olga",
                created_at=clock.now() - 60, expires_at=clock.now() + 3540, state="active",
                applied_at=clock.now() - 59,
            )
        )  # fmt: skip
    bundle = service.capture_bundle(sqlite_store, settings, clock, actor="rita")
    content = members(Path(bundle["path"]))
    assert content["security/web.log"] == access.read_bytes()
    state = json.loads(content["nachtwacht/state.json"])
    [block] = state["security_blocks"]
    assert (block["address"], block["state"], block["created_by"]) == (
        "203.0.113.9", "active", "olga",
    )  # fmt: skip
    assert block["expires_at"] == "2027-01-15T08:59:00Z"
