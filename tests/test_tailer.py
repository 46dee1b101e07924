"""The shared log tailer (`nachtwacht.tailer`) on real files: rotation, truncation, partial and
huge lines, a file that goes away and comes back, budgets and resuming from a position."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from nachtwacht import tailer as tailer_module
from nachtwacht.tailer import Position, Read, Spot, Tailer


class Lines:
    """A sink that splits what the tailer hands over back into lines."""

    def __init__(self) -> None:
        self.lines: list[bytes] = []

    def __call__(self, blob: bytes) -> None:
        self.lines.extend(blob.split(b"\n"))

    def take(self) -> list[str]:
        out, self.lines = [line.decode() for line in self.lines], []
        return out


@pytest.fixture
def log(tmp_path: Path) -> Path:
    path = tmp_path / "app.log"
    path.write_text("old 1\nold 2\n")  # history
    return path


@pytest.fixture
def made() -> Iterator[list[Tailer]]:
    tailers: list[Tailer] = []
    yield tailers
    for t in tailers:
        t.close()


def make(made: list[Tailer], path: Path, **keys: object) -> Tailer:
    t = Tailer(str(path), **keys)  # type: ignore[arg-type]
    made.append(t)
    return t


def append(path: Path, text: str) -> None:
    with path.open("a") as f:
        f.write(text)


def read(t: Tailer, budget: int = 1 << 20) -> tuple[list[str], Read]:
    sink = Lines()
    outcome = t.read(sink, budget)
    return sink.take(), outcome


def test_history_is_skipped_and_appended_lines_are_read(log: Path, made: list[Tailer]) -> None:
    t = make(made, log)
    assert read(t)[0] == []
    append(log, "a\nb\n")
    assert read(t)[0] == ["a", "b"]
    assert read(t)[0] == []
    assert read(make(made, log, from_start=True))[0] == ["old 1", "old 2", "a", "b"]


def test_first_sight_in_the_middle_of_a_line_skips_its_rest(log: Path, made: list[Tailer]) -> None:
    append(log, "half of a li")
    t = make(made, log)
    assert read(t)[0] == []
    append(log, "ne\nnext\n")
    assert read(t)[0] == ["next"]


def test_a_partial_line_waits_for_its_newline(log: Path, made: list[Tailer]) -> None:
    t = make(made, log)
    read(t)
    append(log, "GET /a 5")
    lines, _ = read(t)
    assert lines == []
    assert t.position().current is not None
    resume_at = t.position().current.offset  # the unfinished line's start, not the end
    assert resume_at == log.stat().st_size - len("GET /a 5")
    append(log, "02\r\nGET /b")
    assert read(t)[0] == ["GET /a 502\r"]  # a CR is the caller's to strip
    append(log, " 200\n")
    assert read(t)[0] == ["GET /b 200"]


def test_rename_rotation_reads_the_old_file_to_its_end_then_lets_it_go(
    log: Path, made: list[Tailer]
) -> None:
    t = make(made, log)
    read(t)
    writer = log.open("a", buffering=1)  # like nginx: keeps its handle across the rename
    writer.write("1\n")
    os.rename(log, f"{log}.1")
    writer.write("2\n")  # the writer has not reopened yet
    log.write_text("new 1\n")  # logrotate's `create`, then a new writer
    assert read(t)[0] == ["1", "2", "new 1"]  # the old file first
    assert t.rotated == 1
    writer.write("3 unterminated")  # a straggler before the writer reopens
    writer.close()
    append(log, "new 2\n")
    assert read(t)[0] == ["new 2"]  # the straggler is not a line yet
    assert t.rotated == 1
    # quiet for a read: let go, and its unterminated last line is a line after all
    assert read(t)[0] == ["3 unterminated"]
    assert t.rotated == 0
    assert read(t)[0] == []


def test_two_rotations_between_reads_are_read_in_order(log: Path, made: list[Tailer]) -> None:
    t = make(made, log)
    read(t)
    append(log, "a\n")
    os.rename(log, f"{log}.1")
    log.write_text("b\n")
    assert read(t)[0] == ["a", "b"]
    append(log, "c\n")
    os.rename(f"{log}.1", f"{log}.2")
    os.rename(log, f"{log}.1")
    log.write_text("d\n")
    assert read(t)[0] == ["c", "d"]
    assert read(t)[0] == [] and t.rotated == 0


def test_copytruncate_restarts_at_the_beginning(log: Path, made: list[Tailer]) -> None:
    t = make(made, log)
    read(t)
    append(log, "a\nb\n")
    assert read(t)[0] == ["a", "b"]
    shutil.copy(log, f"{log}.1")
    with log.open("r+") as f:
        f.truncate(0)
    append(log, "c\n")
    assert read(t)[0] == ["c"]
    assert t.rotated == 0  # the same file: nothing to let go of


def test_a_file_that_disappears_and_comes_back(log: Path, made: list[Tailer]) -> None:
    t = make(made, log, label="monitor log")
    read(t)
    append(log, "last words\n")
    os.unlink(log)
    lines, outcome = read(t)
    assert lines == ["last words"]  # the open handle still reads what was written
    assert outcome.missing and outcome.error == f"monitor log {log} not found"
    lines, outcome = read(t)
    assert (lines, outcome.missing) == ([], True)
    log.write_text("back 1\nback 2\n")  # all of a re-created file is new
    lines, outcome = read(t)
    assert lines == ["back 1", "back 2"] and outcome.error is None


def test_a_file_missing_at_first_sight_is_read_from_its_start(
    tmp_path: Path, made: list[Tailer]
) -> None:
    path = tmp_path / "later.log"
    t = make(made, path)
    lines, outcome = read(t)
    assert outcome.error == f"log file {path} not found" and t.position() == Position()
    path.write_text("x\ny\n")
    assert read(t)[0] == ["x", "y"]


def test_a_directory_is_an_error(tmp_path: Path, made: list[Tailer]) -> None:
    _, outcome = read(make(made, tmp_path))
    assert outcome.error == f"log file {tmp_path} is a directory" and not outcome.missing


def test_a_huge_line_is_bounded(
    log: Path, made: list[Tailer], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tailer_module, "MAX_LINE_BYTES", 100)
    monkeypatch.setattr(tailer_module, "CHUNK_BYTES", 64)
    t = make(made, log)
    read(t)
    append(log, "x" * 10_000)  # no newline yet: buffered, but only its first 100 bytes
    assert read(t)[0] == []
    assert t._cur is not None and len(t._cur.partial) <= 100
    append(log, "y" * 5_000 + "\nshort\n")
    lines, _ = read(t)
    assert lines == ["x" * 100, "short"]
    # in one chunk too: a long line after a short one is cut as well
    monkeypatch.setattr(tailer_module, "CHUNK_BYTES", 1 << 20)
    append(log, "ok\n" + "z" * 300 + "\nend\n")
    assert read(t)[0] == ["ok", "z" * 100, "end"]


def test_a_backlog_is_read_within_the_budget(log: Path, made: list[Tailer]) -> None:
    t = make(made, log)
    read(t)
    append(log, "0123456789\n" * 10)  # 110 bytes
    lines, outcome = read(t, budget=50)
    assert len(lines) == 4 and outcome.used == 50 and outcome.behind == 60
    lines, outcome = read(t, budget=50)
    assert len(lines) == 5 and outcome.behind == 10
    lines, outcome = read(t, budget=50)
    assert len(lines) == 1 and outcome.behind == 0


def test_resume_from_a_position_neither_rereads_nor_skips(log: Path, made: list[Tailer]) -> None:
    first = make(made, log)
    read(first)
    append(log, "a\nhal")
    assert read(first)[0] == ["a"]
    saved = Position.load(first.position().dump())
    first.close()
    append(log, "f\nb\n")
    second = make(made, log, resume=saved)
    assert second.position() == saved  # nothing read yet: still where it was
    assert read(second)[0] == ["half", "b"]


def test_resume_after_a_rotation_while_stopped_finishes_the_rotated_file(
    log: Path, made: list[Tailer]
) -> None:
    first = make(made, log)
    read(first)
    saved = first.position()
    first.close()
    append(log, "while down\n")
    os.rename(log, f"{log}.1")
    log.write_text("new\n")
    second = make(made, log, resume=saved)
    assert read(second)[0] == ["while down", "new"]


def test_resume_with_a_rotated_file_still_open(log: Path, made: list[Tailer]) -> None:
    first = make(made, log)
    read(first)
    append(log, "a\n")
    os.rename(log, f"{log}.1")
    log.write_text("b\n")
    assert read(first)[0] == ["a", "b"]
    saved = Position.load(first.position().dump())
    assert saved is not None and len(saved.rotated) == 1
    first.close()
    append(Path(f"{log}.1"), "late\n")
    second = make(made, log, resume=saved)
    assert read(second)[0] == ["late"]
    assert read(second)[0] == [] and second.rotated == 0


def test_resume_with_a_rotated_file_that_is_gone_starts_the_new_one(
    log: Path, made: list[Tailer], caplog: pytest.LogCaptureFixture
) -> None:
    first = make(made, log)
    read(first)
    saved = first.position()
    first.close()
    os.rename(log, f"{log}.1")
    log.write_text("new\n")  # created before the old one goes, so it has another inode
    os.unlink(f"{log}.1")  # compressed or deleted while we were down
    second = make(made, log, resume=saved)
    assert read(second)[0] == ["new"]
    assert "gone" in caplog.text


def test_a_position_survives_its_json_form_and_reads_older_forms() -> None:
    pos = Position(Spot(1, 2, 3), (Spot(1, 9, 7),))
    assert Position.load(pos.dump()) == pos
    assert Position.load(Position().dump()) == Position()
    # the frappe monitor's older state: the position plus `"rotated": true`
    old = {"dev": 1, "inode": 2, "offset": 3, "rotated": True, "recent": []}
    assert Position.load(old) == Position(Spot(1, 2, 3))
    assert Position.load({"inode": "x", "dev": 1, "offset": 0}) is None
    assert Position.load(None) is None
