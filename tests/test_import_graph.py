"""The import contract (tests/import_contract.py) holds, and the checker catches what it should.

The rules and their reasons: docs/decisions/0016-a-domain-graph-without-cycles.md.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from tests.import_contract import check, find_cycle

SRC = Path(__file__).resolve().parents[1] / "src" / "nachtwacht"


def test_the_source_keeps_the_import_contract() -> None:
    report = check(SRC)
    assert not report.violations, "\n".join(report.violations)


def test_a_notify_sender_writing_incident_events_again_closes_a_cycle(tmp_path: Path) -> None:
    """The edge this contract was written to keep out, added to a copy of the real tree."""
    copy = tmp_path / "nachtwacht"
    shutil.copytree(SRC, copy, ignore=shutil.ignore_patterns("__pycache__", "templates"))
    sender = copy / "notify" / "sender.py"
    sender.write_text(sender.read_text() + "\nfrom nachtwacht.incidents.service import add_event\n")
    [cycle] = check(copy).violations
    assert cycle.startswith("rule 3: domains import each other in a cycle: ")
    assert "incidents -> notify" in cycle and "notify -> incidents" in cycle
    assert "notify.sender -> incidents.service" in cycle


def package(root: Path, files: dict[str, str]) -> Path:
    """A synthetic `nachtwacht` package: {"notify/sender.py": "source", ...}."""
    top = root / "nachtwacht"
    for name, text in {"__init__.py": "", **files}.items():
        path = top / name
        path.parent.mkdir(parents=True, exist_ok=True)
        for parent in path.relative_to(top).parents:
            (top / parent / "__init__.py").touch()
        path.write_text(text)
    return top


BASE = {
    "config/schema.py": "from nachtwacht.incidents.models import IncidentSettings\n",
    "incidents/models.py": "from nachtwacht.clock import now\nIncidentSettings = object\n",
    "incidents/service.py": (
        "from nachtwacht.config.schema import Settings\n"
        "from nachtwacht.notify import outbox\n"
        "def add_event(): ...\n"
    ),
    "incidents/api.py": (
        "from nachtwacht.incidents import service\n"
        "from nachtwacht.web.errors import ApiError\n"
        "from nachtwacht.auth.deps import actor\n"
    ),
    "notify/outbox.py": "from nachtwacht.incidents.models import IncidentSettings\n",
    "notify/sender.py": "from nachtwacht.notify.outbox import enqueue\n",
    "auth/deps.py": "from nachtwacht.web.errors import ApiError\n",
    "clock.py": "def now(): ...\n",
    "web/errors.py": "",
    "cli/common.py": "",
    "engine/runtime.py": "",
    "web/app.py": "from nachtwacht.incidents import api\nfrom nachtwacht.notify import api\n",
    "notify/api.py": "from nachtwacht.notify import sender\n",
}


def violations(tmp_path: Path, **changes: str) -> list[str]:
    files = dict(BASE)
    for name, text in changes.items():
        path = name.replace("__", "/") + ".py"
        files[path] = files.get(path, "") + text
    return check(package(tmp_path, files)).violations


def test_the_synthetic_package_keeps_the_contract(tmp_path: Path) -> None:
    assert violations(tmp_path) == []


def test_a_cycle_is_reported_with_the_imports_that_make_it(tmp_path: Path) -> None:
    [found] = violations(
        tmp_path, notify__sender="\nfrom nachtwacht.incidents.service import add_event\n"
    )
    assert found.splitlines() == [
        "rule 3: domains import each other in a cycle: incidents -> notify -> incidents",
        "    incidents.service -> notify.outbox (line 2)",
        "    notify.sender -> incidents.service (line 3)",
    ]


def test_a_lazy_import_counts_and_one_for_type_checking_does_not(tmp_path: Path) -> None:
    lazy = "def f():\n    from nachtwacht.incidents import service\n"
    assert violations(tmp_path / "a", notify__sender=lazy)[0].startswith("rule 3")
    hinted = (
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n"
        "    from nachtwacht.incidents.service import add_event\n"
    )
    assert violations(tmp_path / "b", notify__sender=hinted) == []


def test_a_domain_core_may_not_import_web_cli_engine_or_a_door(tmp_path: Path) -> None:
    for n, line in enumerate(
        [
            "from nachtwacht.web.errors import ApiError\n",
            "import nachtwacht.cli.common\n",
            "from nachtwacht.engine import runtime\n",
            "from nachtwacht.incidents.api import router\n",
            "from nachtwacht.notify import api\n",
        ]
    ):
        [found] = violations(tmp_path / str(n), notify__sender=line)
        assert found.startswith("rule 1: a domain's core imports a "), found
        assert "notify.sender -> " in found


def test_a_models_module_imports_only_foundation_and_models(tmp_path: Path) -> None:
    [found] = violations(tmp_path, notify__models="from nachtwacht.incidents import service\n")
    assert found == (
        "rule 2: a models module imports beyond foundation and models: "
        "notify.models -> incidents.service (line 1)"
    )


def test_a_door_may_not_import_another_domains_door(tmp_path: Path) -> None:
    [found] = violations(tmp_path, notify__api="from nachtwacht.incidents.api import router\n")
    assert found == (
        "rule 4: a door imports another domain's door: notify.api -> incidents.api (line 2)"
    )


def test_foundation_may_not_import_a_domain_core(tmp_path: Path) -> None:
    [found] = violations(tmp_path, config__loader="from nachtwacht.notify import sender\n")
    assert found == "foundation imports a core module: config.loader -> notify.sender (line 1)"


def test_find_cycle_is_none_for_a_dag_and_names_a_loop_in_order() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"b"}}) == ["b", "c", "b"]
