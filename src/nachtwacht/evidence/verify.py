"""Reading a bundle back and proving it unchanged.

Four independent checks, so that no single edit goes unnoticed:

1. the bundle file's own SHA-256 against the one recorded when it was written (the store's
   `evidence_bundles.bundle_sha256`, else the `<bundle>.sha256` file beside it): catches a
   change anywhere, even in bytes that decompress to the same content (the gzip header);
2. the gzip stream read to its end, so its CRC is checked;
3. every member's SHA-256 and size against `manifest.json`, and no member missing or added;
4. the manifest's own SHA-256 against the one recorded in the store and on the incident
   timeline: an attacker who edits a file and its manifest entry still changes this hash.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import tarfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MANIFEST = "manifest.json"
FORMAT = "nachtwacht-evidence/1"
CHUNK = 1 << 20


@dataclass
class Verification:
    path: str
    ok: bool = True
    problems: list[str] = field(default_factory=list)
    manifest_sha256: str | None = None
    bundle_sha256: str | None = None
    files_checked: int = 0
    manifest: dict[str, Any] | None = None
    checked_against: list[str] = field(default_factory=list)  # what the hashes were compared to

    def fail(self, problem: str) -> None:
        self.ok = False
        self.problems.append(problem)

    def as_dict(self) -> dict[str, Any]:
        m = self.manifest or {}
        return {
            "path": self.path,
            "ok": self.ok,
            "problems": self.problems,
            "manifest_sha256": self.manifest_sha256,
            "bundle_sha256": self.bundle_sha256,
            "files_checked": self.files_checked,
            "checked_against": self.checked_against,
            "host": m.get("host"),
            "created_at": m.get("created_at"),
            "incident_id": m.get("incident_id"),
        }


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def sidecar(bundle: Path) -> Path:
    """`<bundle>.sha256` in `sha256sum` format, so `sha256sum -c` works without Nachtwacht."""
    return bundle.with_name(bundle.name + ".sha256")


def read_sidecar(bundle: Path) -> str | None:
    try:
        text = sidecar(bundle).read_text(encoding="utf-8").strip()
    except OSError:
        return None
    return text.split()[0].lower() if text else None


def verify_bundle(
    path: Path, recorded_manifest: str | None = None, recorded_bundle: str | None = None
) -> Verification:
    """Check a bundle; `recorded_*` are the hashes the store holds for it (None: not known)."""
    result = Verification(str(path))
    try:
        result.bundle_sha256 = file_sha256(path)
    except OSError as exc:
        result.fail(f"cannot read the bundle: {exc.strerror or exc}")
        return result
    expected = recorded_bundle or read_sidecar(path)
    if expected is not None:
        result.checked_against.append("store" if recorded_bundle else "sidecar")
        if expected != result.bundle_sha256:
            result.fail(
                f"the bundle file changed: its SHA-256 is {result.bundle_sha256}, "
                f"recorded {expected}"
            )
    try:
        with gzip.open(path, "rb") as fh:  # to the end: the CRC and length are checked there
            while fh.read(CHUNK):
                pass
    except (OSError, EOFError, zlib.error) as exc:
        result.fail(f"the compressed stream is damaged: {exc}")
        return result
    members = _members(path, result)
    if members is None:
        return result
    _against_manifest(members, result)
    if recorded_manifest is not None and result.manifest_sha256 is not None:
        result.checked_against.append("recorded manifest hash")
        if recorded_manifest != result.manifest_sha256:
            result.fail(
                f"the manifest changed: its SHA-256 is {result.manifest_sha256}, "
                f"recorded {recorded_manifest}"
            )
    return result


def _members(path: Path, result: Verification) -> dict[str, tuple[str, int, bytes | None]] | None:
    """name inside the top folder -> (sha256, size, content if it is the manifest)."""
    found: dict[str, tuple[str, int, bytes | None]] = {}
    try:
        with tarfile.open(path, "r:gz") as tar:
            tops: set[str] = set()
            for info in tar:
                top, _, rest = info.name.partition("/")
                tops.add(top)
                if info.isdir():
                    continue
                if not info.isfile() or not rest or ".." in rest.split("/"):
                    result.fail(f"unexpected member {info.name!r} (not a plain file in the bundle)")
                    continue
                fh = tar.extractfile(info)
                assert fh is not None  # a regular file always has content
                digest, size, kept = hashlib.sha256(), 0, bytearray()
                while chunk := fh.read(CHUNK):
                    digest.update(chunk)
                    size += len(chunk)
                    if rest == MANIFEST:
                        kept.extend(chunk)
                if rest in found:
                    result.fail(f"member {rest} appears twice")
                found[rest] = (digest.hexdigest(), size, bytes(kept) if rest == MANIFEST else None)
            if len(tops) > 1:
                result.fail(f"the bundle holds more than one folder: {', '.join(sorted(tops))}")
    except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
        result.fail(f"cannot read the bundle as tar.gz: {exc}")
        return None
    return found


def _against_manifest(
    members: dict[str, tuple[str, int, bytes | None]], result: Verification
) -> None:
    entry = members.pop(MANIFEST, None)
    if entry is None or entry[2] is None:
        result.fail("the bundle has no manifest.json")
        return
    result.manifest_sha256 = entry[0]
    try:
        manifest = json.loads(entry[2])
        files = {f["path"]: f for f in manifest["files"]}
    except (ValueError, KeyError, TypeError) as exc:
        result.fail(f"manifest.json is not a valid manifest: {exc}")
        return
    result.manifest = manifest
    if manifest.get("format") != FORMAT:
        result.fail(f"unknown manifest format {manifest.get('format')!r}; expected {FORMAT}")
    for name, (digest, size, _) in sorted(members.items()):
        listed = files.pop(name, None)
        if listed is None:
            result.fail(f"{name}: not in the manifest (added after capture)")
            continue
        result.files_checked += 1
        if listed.get("sha256") != digest:
            result.fail(
                f"{name}: SHA-256 {digest} differs from the manifest's {listed.get('sha256')}"
            )
        elif listed.get("size") != size:
            result.fail(f"{name}: {size} bytes, the manifest says {listed.get('size')}")
    for name in sorted(files):
        result.fail(f"{name}: listed in the manifest but missing from the bundle")
