"""CLI errors are one readable line on stderr and a non-zero exit, never a traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BIN = str(Path(sys.executable).parent / "nachtwacht")


def _run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([BIN, *args], capture_output=True, text=True, cwd=cwd, timeout=60)


@pytest.mark.parametrize(
    ("args", "code", "expected"),
    [
        (["bogus"], 2, "No such command 'bogus'"),
        (["incident", "declare", "--severity", "5", "--title", "x"], 2, "--severity"),
        (["incident", "declare", "--title", "x"], 2, "Missing option '--severity'"),
        (["incident", "show", "999"], 2, "no incident 999"),
        (["check", "nope"], 2, "no probe named nope"),
        (["status", "--config", "missing.yaml"], 2, "missing.yaml: no such file"),
    ],
)
def test_errors_are_one_line(tmp_path: Path, args: list[str], code: int, expected: str) -> None:
    (tmp_path / "nachtwacht.yaml").write_text("probes: []\n", encoding="utf-8")
    result = _run(*args, cwd=tmp_path)
    assert result.returncode == code, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ") and expected in lines[0]
    assert "Traceback" not in result.stderr


def test_version_and_help_exit_0(tmp_path: Path) -> None:
    assert _run("--version", cwd=tmp_path).stdout.strip() == "0.1.0"
    result = _run(cwd=tmp_path)
    assert result.returncode == 0 and "incident" in result.stdout
