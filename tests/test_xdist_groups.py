"""The suite's scheduling under xdist does what conftest says: every schemathesis operation runs
as its own test, and `serial` tests share one worker. Both failed silently under pytest 9 (107 of
108 operations never ran; kill -9 tests ran side by side), so a real xdist run checks them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

CONFTEST = """
from tests.conftest import pytest_collection_modifyitems  # noqa: F401
"""

TESTS = """
import os
from pathlib import Path

import pytest
import schemathesis

OUT = Path(os.environ["XDIST_GROUPS_OUT"])
schema = schemathesis.openapi.from_dict({
    "openapi": "3.0.0",
    "info": {"title": "t", "version": "1"},
    "paths": {f"/p{i}": {"get": {"responses": {"200": {"description": "ok"}}}} for i in range(5)},
})


@schema.parametrize()
def test_operation(case):
    with (OUT / "operations").open("a") as f:
        f.write(case.path + "\\n")


@pytest.mark.serial
@pytest.mark.parametrize("n", range(6))
def test_serial(n):
    with (OUT / "serial").open("a") as f:
        f.write(os.environ["PYTEST_XDIST_WORKER"] + "\\n")


@pytest.mark.parametrize("n", range(6))
def test_plain(n):
    with (OUT / "plain").open("a") as f:
        f.write(os.environ["PYTEST_XDIST_WORKER"] + "\\n")
"""


def test_operations_each_run_and_serial_tests_share_one_worker(tmp_path: Path) -> None:
    suite = tmp_path / "suite"
    suite.mkdir()
    (suite / "conftest.py").write_text(CONFTEST)
    (suite / "test_sched.py").write_text(TESTS)
    out = tmp_path / "out"
    out.mkdir()
    env = {**os.environ, "XDIST_GROUPS_OUT": str(out), "PYTHONPATH": str(ROOT)}
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-n",
            "3",
            "--dist",
            "loadgroup",
            "-p",
            "no:cacheprovider",
            "-o",
            "markers=serial: one worker",
            "--rootdir",
            str(suite),
            str(suite),
        ],
        cwd=suite,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert sorted(set((out / "operations").read_text().split())) == [f"/p{i}" for i in range(5)]
    serial_workers = (out / "serial").read_text().split()
    assert len(serial_workers) == 6 and len(set(serial_workers)) == 1, serial_workers
    assert len((out / "plain").read_text().split()) == 6
