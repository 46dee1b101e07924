"""The two lock files: `make run` installs requirements.lock (the runtime only), `make test`
requirements-dev.lock (the runtime at the same pins, and the tools). ADR 22 says why."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# what a production install must not carry: test runners, browsers, fuzzers, linters, the
# error-reporting SDK the tests send events with, the mail server the tests receive with, and
# httpx (the runtime sends with aiohttp; FastAPI's TestClient needs httpx)
DEV_ONLY = (
    "pytest",
    "pytest-asyncio",
    "pytest-xdist",
    "playwright",
    "schemathesis",
    "hypothesis",
    "sentry-sdk",
    "ruff",
    "mypy",
    "aiosmtpd",
    "httpx",
)


def _name(raw: str) -> str:
    return re.sub(r"[-_.]+", "-", raw).lower()


def pins(path: Path) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, version = line.partition("==")
        assert sep, f"{path.name}: not pinned with ==: {line!r}"
        out[_name(name)] = version.strip()
    return out


def test_the_runtime_lock_is_the_dev_lock_less_the_tools() -> None:
    runtime = pins(ROOT / "requirements.lock")
    dev = pins(ROOT / "requirements-dev.lock")
    moved = {n: (v, dev.get(n)) for n, v in runtime.items() if dev.get(n) != v}
    assert not moved, f"runtime pins missing or different in the dev lock: {moved}"
    carried = sorted(set(DEV_ONLY) & set(runtime))
    assert not carried, f"the runtime lock carries dev tools: {carried}"
    assert set(DEV_ONLY) <= set(dev), sorted(set(DEV_ONLY) - set(dev))


def test_no_source_module_imports_httpx() -> None:
    """httpx is a dev dependency now: a source module importing it fails in production."""
    pattern = re.compile(r"^\s*(import httpx|from httpx\b)", re.MULTILINE)
    found = [
        str(path.relative_to(ROOT))
        for path in (ROOT / "src" / "nachtwacht").rglob("*.py")
        if pattern.search(path.read_text())
    ]
    assert not found, found


@pytest.mark.serial
def test_an_install_from_the_runtime_lock_has_no_test_tool(tmp_path: Path) -> None:
    """What `make run` does on a fresh clone, in a new venv: the runtime lock, then the
    package itself without its dependencies. pip's cache makes it take seconds, not minutes."""
    venv = tmp_path / "venv"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}

    def run(*args: str | Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [str(a) for a in args],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        assert done.returncode == 0, f"{args}: {done.stdout[-2000:]}\n{done.stderr[-3000:]}"
        return done

    base = getattr(sys, "_base_executable", sys.executable)
    run(base, "-m", "venv", venv)
    python = venv / "bin" / "python"
    run(python, "-m", "pip", "install", "-q", "-r", ROOT / "requirements.lock")
    # from a copy of the source: a build in the work tree would leave build/ behind there
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    skip = shutil.ignore_patterns("__pycache__", "*.egg-info")
    shutil.copytree(ROOT / "src", source / "src", ignore=skip)
    run(python, "-m", "pip", "install", "-q", "--no-deps", source)

    listed = json.loads(run(python, "-m", "pip", "list", "--format=json").stdout)
    installed = {_name(p["name"]) for p in listed}
    assert "nachtwacht" in installed
    carried = sorted(set(DEV_ONLY) & installed)
    assert not carried, f"a runtime install carries dev tools: {carried}"
    assert installed <= set(pins(ROOT / "requirements.lock")) | {"nachtwacht", "pip", "setuptools"}

    # the CLI, the server's app and every module that sends a request import in it
    assert "serve" in run(venv / "bin" / "nachtwacht", "--help").stdout
    run(
        python,
        "-c",
        "import nachtwacht.web.app, nachtwacht.notify.sender, nachtwacht.checklist.live_items,"
        " nachtwacht.watchdog.doctor, nachtwacht.watchdog.storealarm",
    )
