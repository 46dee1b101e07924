"""The `logfile` probe on real files: tailing, windows, rotation, truncation and restarts."""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from pydantic import ValidationError

from nachtwacht import tailer
from nachtwacht.clock import FakeClock
from nachtwacht.probes.context import ProbeContext
from nachtwacht.probes.kinds import logfile
from nachtwacht.probes.kinds.logfile import Config, ProbeImpl
from nachtwacht.probes.results import Status
from nachtwacht.store.db import Store

PATTERN = r'" 5\d\d '
ERROR = '10.0.0.1 - - "GET /api HTTP/1.1" 502 157 "-"\n'
FINE = '10.0.0.1 - - "GET / HTTP/1.1" 200 612 "-"\n'
MINUTE = 60.0

Make = Callable[..., ProbeImpl]


@pytest.fixture
def log_path(tmp_path: Path) -> Path:
    path = tmp_path / "access.log"
    path.write_text(ERROR * 3)  # history: never counted unless from_start
    return path


@pytest.fixture
async def make(clock: FakeClock, log_path: Path) -> AsyncIterator[Make]:
    made: list[ProbeImpl] = []

    def factory(store: Store | None = None, name: str = "nginx-5xx", **keys) -> ProbeImpl:
        keys.setdefault("path", str(log_path))
        keys.setdefault("pattern", PATTERN)
        config = Config(name=name, kind="logfile", **keys)
        probe = ProbeImpl(config, ProbeContext(clock=clock, store=store))
        made.append(probe)
        return probe

    yield factory
    for probe in made:
        await probe.close()


def append(path: Path, text: str) -> None:
    with path.open("a") as f:
        f.write(text)


# -- config ----------------------------------------------------------------------------------


def test_bad_regex_is_rejected_at_config_time_with_a_clear_error() -> None:
    with pytest.raises(ValidationError) as err:
        Config(name="x", kind="logfile", path="/var/log/x.log", pattern="error (")
    text = str(err.value)
    assert "pattern 'error (' is not a valid Python regular expression" in text
    assert "missing ), unterminated subpattern at position 6" in text


def test_relative_path_is_rejected() -> None:
    with pytest.raises(ValidationError, match="path must be absolute"):
        Config(name="x", kind="logfile", path="logs/x.log", pattern="x")


def test_without_limits_any_match_is_critical_and_explicit_limits_replace_that() -> None:
    bare = Config(name="x", kind="logfile", path="/x.log", pattern="x")
    assert (bare.warn, bare.critical, bare.window, bare.from_start) == (None, 0, 300.0, False)
    assert Config(name="x", kind="logfile", path="/x.log", pattern="x", warn=3).critical is None
    fewer = Config(name="x", kind="logfile", path="/x.log", pattern="x", op="<", warn=1)
    assert fewer.critical is None


# -- counting --------------------------------------------------------------------------------


async def test_lines_appended_between_checks_are_counted_but_history_is_not(
    make: Make, log_path: Path, clock: FakeClock
) -> None:
    probe = make(warn=2, critical=5)
    first = await probe.check()
    assert (first.status, first.value) == (Status.OK, 0)
    append(log_path, ERROR * 2 + FINE)
    clock.advance(MINUTE)
    result = await probe.check()
    assert result.value == 2 and result.status is Status.OK
    assert result.message == "2 lines matching '\" 5\\d\\d ' in the last 5m"
    append(log_path, ERROR * 5)
    clock.advance(MINUTE)
    result = await probe.check()
    assert result.value == 7 and result.status is Status.CRITICAL
    assert result.message == "7 lines matching '\" 5\\d\\d ' in the last 5m (> 5)"


async def test_from_start_counts_existing_lines(make: Make, log_path: Path) -> None:
    result = await make(from_start=True).check()
    assert result.value == 3 and result.status is Status.CRITICAL


async def test_window_expiry_drops_old_counts(make: Make, log_path: Path, clock: FakeClock) -> None:
    probe = make(critical=2)
    await probe.check()
    append(log_path, ERROR * 2)
    assert (await probe.check()).value == 2
    clock.advance(4 * MINUTE)
    append(log_path, ERROR)
    result = await probe.check()
    assert (result.value, result.status) == (3, Status.CRITICAL)
    clock.advance(1 * MINUTE)  # the first two are now exactly 5m old: out of the window
    result = await probe.check()
    assert (result.value, result.status) == (1, Status.OK)
    clock.advance(4 * MINUTE)
    result = await probe.check()
    assert result.value == 0 and result.message.startswith("0 lines matching")


async def test_partial_line_is_counted_once_it_is_complete(make: Make, log_path: Path) -> None:
    probe = make()
    await probe.check()
    append(log_path, ERROR[:30])  # the writer is mid-line: '..."GET /api HTTP/1.1" 50'
    assert (await probe.check()).value == 0
    append(log_path, ERROR[30:] + FINE[:10])
    assert (await probe.check()).value == 1
    append(log_path, FINE[10:])
    assert (await probe.check()).value == 1


async def test_first_check_in_the_middle_of_a_line_does_not_count_its_tail(
    make: Make, log_path: Path
) -> None:
    append(log_path, ERROR[:20])
    probe = make()
    await probe.check()
    append(log_path, ERROR[20:])  # the rest of a line whose start is history
    assert (await probe.check()).value == 0
    append(log_path, ERROR)
    assert (await probe.check()).value == 1


async def test_crlf_lines_match_end_anchored_patterns(make: Make, log_path: Path) -> None:
    probe = make(pattern=r"FATAL$")
    await probe.check()
    append(log_path, "worker died FATAL\r\nworker ok\r\n")
    assert (await probe.check()).value == 1


# -- rotation and truncation -----------------------------------------------------------------


async def test_rename_rotation_counts_every_line_exactly_once(
    make: Make, log_path: Path, clock: FakeClock
) -> None:
    probe = make(window="1h")
    await probe.check()
    writer = log_path.open("a", buffering=1)  # like nginx: keeps its handle across the rename
    writer.write(ERROR * 2)
    assert (await probe.check()).value == 2
    writer.write(ERROR)  # not read yet when the rotation happens
    os.rename(log_path, f"{log_path}.1")
    writer.write(ERROR * 2)  # still appending to the renamed file until it reopens
    append(log_path, ERROR * 4)  # logrotate `create` + a new writer
    clock.advance(MINUTE)
    assert (await probe.check()).value == 2 + 3 + 4
    writer.write(ERROR.rstrip("\n"))  # a straggler, unterminated, before the writer reopens
    writer.close()
    append(log_path, ERROR)
    clock.advance(MINUTE)
    assert (await probe.check()).value == 2 + 3 + 4 + 1
    clock.advance(MINUTE)
    # the rotated file stayed quiet for a check: let go, its last line counted as a line
    assert (await probe.check()).value == 11
    assert probe._tailer is not None and probe._tailer.rotated == 0
    clock.advance(MINUTE)
    assert (await probe.check()).value == 11


async def test_deleted_file_is_critical_after_its_rest_is_counted(
    make: Make, log_path: Path
) -> None:
    probe = make(window="1h")
    await probe.check()
    append(log_path, ERROR)
    os.unlink(log_path)
    result = await probe.check()
    assert result.status is Status.CRITICAL and result.value == 1
    assert result.message == f"log file {log_path} not found"
    append(log_path, ERROR * 2)  # re-created: everything in it is new
    assert (await probe.check()).value == 3


async def test_copytruncate_restarts_at_the_beginning(make: Make, log_path: Path) -> None:
    probe = make(window="1h")
    await probe.check()
    append(log_path, ERROR * 2)
    assert (await probe.check()).value == 2
    shutil.copy(log_path, f"{log_path}.1")
    with log_path.open("r+") as f:
        f.truncate(0)
    append(log_path, ERROR)
    assert (await probe.check()).value == 3


# -- restarts --------------------------------------------------------------------------------


async def test_restart_resumes_from_the_persisted_offset_on_every_backend(
    make: Make, log_path: Path, clock: FakeClock, store: Store
) -> None:
    name = "n" * 120  # the longest probe name: its offset key must still fit engine_meta.key
    first = make(store, name=name)
    await first.check()
    cut = ERROR.index(" 157")  # the line matches only as a whole
    append(log_path, ERROR * 2 + ERROR[:cut])  # and half a line when the process stops
    clock.advance(MINUTE)
    assert (await first.check()).value == 2
    await first.close()

    append(log_path, ERROR[cut:] + ERROR * 3)
    clock.advance(MINUTE)
    second = make(store, name=name)
    # the 2 from before the restart are still in the window; nothing is recounted
    assert (await second.check()).value == 2 + 4
    clock.advance(5 * MINUTE)
    assert (await second.check()).value == 0


async def test_rotation_while_stopped_finishes_the_rotated_file(
    make: Make, log_path: Path, clock: FakeClock, sqlite_store: Store
) -> None:
    first = make(sqlite_store)
    await first.check()
    await first.close()
    append(log_path, ERROR)  # written while we were down, then rotated away
    os.rename(log_path, f"{log_path}.1")
    append(log_path, ERROR * 2)
    second = make(sqlite_store)
    assert (await second.check()).value == 3


async def test_without_a_store_a_restart_starts_at_the_end(
    make: Make, log_path: Path, clock: FakeClock
) -> None:
    await make().check()
    append(log_path, ERROR)
    assert (await make().check()).value == 0


# -- failures --------------------------------------------------------------------------------


async def test_missing_file_is_critical_and_counted_from_its_start_once_it_appears(
    make: Make, tmp_path: Path
) -> None:
    path = tmp_path / "later.log"
    probe = make(path=str(path))
    result = await probe.check()
    assert result.status is Status.CRITICAL
    assert result.message == f"log file {path} not found"
    path.write_text(ERROR * 2)
    assert (await probe.check()).value == 2


async def test_directory_instead_of_a_file_is_critical(make: Make, tmp_path: Path) -> None:
    result = await make(path=str(tmp_path)).check()
    assert result.status is Status.CRITICAL
    assert result.message == f"log file {tmp_path} is a directory"


async def test_unreadable_file_is_critical(make: Make, log_path: Path) -> None:
    if os.geteuid() == 0:
        pytest.skip("root reads files whatever their mode")
    log_path.chmod(0)
    result = await make().check()
    assert result.status is Status.CRITICAL
    assert result.message == f"log file {log_path} is not readable: Permission denied"


async def test_a_huge_backlog_is_read_in_capped_steps(
    make: Make, log_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(logfile, "MAX_BYTES_PER_CHECK", len(ERROR) * 10)
    monkeypatch.setattr(tailer, "CHUNK_BYTES", len(ERROR) * 3)
    probe = make(window="1h")
    await probe.check()
    append(log_path, ERROR * 25)
    first = await probe.check()
    assert first.value == 10 and "catching up" in first.message
    assert (await probe.check()).value == 20
    last = await probe.check()
    assert last.value == 25 and "catching up" not in last.message
