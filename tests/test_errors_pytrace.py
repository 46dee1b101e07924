"""The one Python-traceback-text parser (`errors/pytrace.py`) and its two callers.

Frappe v15 logs tracebacks with the local variables under each frame; those must become frame
`vars`, never the exception. A bench's app files are named as sentry-sdk names them. The JSON
endpoint and the Frappe Error Log poller turn the same text into the same frames, so both
land in the same issue.
"""

from __future__ import annotations

import inspect
import traceback
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from nachtwacht.errors import pytrace
from nachtwacht.errors.fingerprint import group
from nachtwacht.errors.frappe.errorlog import build_event
from nachtwacht.errors.ingest_api import JsonEvent, JsonException, to_sentry
from nachtwacht.errors.models import FrappeErrorLog

REPO = str(Path(__file__).resolve().parents[1]) + "/"

# As Frappe v15 stores it in Error Log: traceback-with-variables' format (source 4 deep,
# variables 6 deep, a value's further lines 6 deep too, `...skipped...` for hidden ones), the
# bench path stripped, the exception as `module.Type: value`
FRAPPE_V15 = """Traceback with variables (most recent call last):
  File "apps/frappe/frappe/app.py", line 114, in application
    response = frappe.api.handle(request)
      request = <Request 'http://erp.example.com/api/method/savedocs' [POST]>
      response = None
  File "apps/frappe/frappe/desk/form/save.py", line 39, in savedocs
    doc.submit()
      doc = <SalesInvoice: ACC-SINV-2027-00017>
      action = 'Submit'
      __class__ = <class 'frappe.model.document.Document'>
  File "apps/erpnext/erpnext/accounts/general_ledger.py", line 61, in make_gl_entries
    save_entries(gl_map, adv_adj, update_outstanding, from_repost)
      gl_map = [{'account': 'Debtors - EX',
      'debit': 1200.0}]
      adv_adj = False
      ...skipped... 2 vars
  File "env/lib/python3.11/site-packages/pymysql/cursors.py", line 153, in execute
    result = self._query(query)
      self = <pymysql.cursors.Cursor object at 0x7f3b2c1d5e10>
      query = "UPDATE `tabGL Entry` SET is_cancelled = 1 WHERE name = 'ACC-GLE-2027-00017'"
pymysql.err.OperationalError: (1213, 'Deadlock found when trying to get lock; try restarting')
"""
DEADLOCK = "(1213, 'Deadlock found when trying to get lock; try restarting')"


def test_frappe_v15_variables_become_frame_vars_not_the_exception() -> None:
    (exc,) = pytrace.parse(FRAPPE_V15)
    assert (exc["type"], exc.get("module"), exc["value"]) == (
        "OperationalError",
        "pymysql.err",
        DEADLOCK,
    )
    frames = exc["stacktrace"]["frames"]
    assert [(f["module"], f["function"], f["lineno"], f["in_app"]) for f in frames] == [
        ("frappe.app", "application", 114, True),
        ("frappe.desk.form.save", "savedocs", 39, True),
        ("erpnext.accounts.general_ledger", "make_gl_entries", 61, True),
        ("pymysql.cursors", "execute", 153, False),
    ]
    assert [f["context_line"] for f in frames] == [
        "response = frappe.api.handle(request)",
        "doc.submit()",
        "save_entries(gl_map, adv_adj, update_outstanding, from_repost)",
        "result = self._query(query)",
    ]
    # dunder names are left out; a value's further lines are not variables
    assert frames[1]["vars"] == {"doc": "<SalesInvoice: ACC-SINV-2027-00017>", "action": "'Submit'"}
    assert frames[2]["vars"] == {"gl_map": "[{'account': 'Debtors - EX',", "adv_adj": "False"}
    assert frames[3]["vars"]["query"].startswith('"UPDATE `tabGL Entry`')
    # so the issue is titled and placed by the real exception
    g = group({"exception": {"values": [exc]}})
    assert g.title == f"OperationalError: {DEADLOCK}"
    assert g.culprit == "erpnext.accounts.general_ledger in make_gl_entries"
    assert g.category == "database"


def test_a_frame_without_source_keeps_its_variables_as_variables() -> None:
    text = """Traceback with variables (most recent call last):
  File "apps/frappe/frappe/utils/safe_exec.py", line 88, in safe_exec
    exec(compile(script, filename, "exec"), exec_globals, _locals)
      script = "frappe.throw('Credit limit crossed')"
  File "<serverscript>: before_submit_check", line 1, in <module>
      doc = <SalesInvoice: ACC-SINV-2027-00018>
      limit = 5000
frappe.exceptions.ValidationError: Credit limit crossed
"""
    (exc,) = pytrace.parse(text)
    assert (exc["type"], exc["module"], exc["value"]) == (
        "ValidationError",
        "frappe.exceptions",
        "Credit limit crossed",
    )
    script = exc["stacktrace"]["frames"][1]
    assert "context_line" not in script
    assert script["vars"] == {"doc": "<SalesInvoice: ACC-SINV-2027-00018>", "limit": "5000"}
    # a pseudo-file has no module: its name stands in, and it is the site's own code
    assert "module" not in script and script["filename"] == "<serverscript>: before_submit_check"
    assert script["in_app"] is True


# -- a real exception printed the way traceback-with-variables prints it ------------------------


def _with_variables(exc: BaseException) -> str:
    """`exc` in traceback-with-variables' format, the repository path stripped (as Frappe
    strips the bench's)."""
    lines = ["Traceback with variables (most recent call last):"]
    for info in inspect.getinnerframes(exc.__traceback__, context=1):
        lines.append(f'  File "{info.filename}", line {info.lineno}, in {info.function}')
        if info.code_context:
            lines.append(f"    {info.code_context[0].strip()}")
        for name, value in info.frame.f_locals.items():
            first, *more = repr(value).split("\n")
            lines.append(f"      {name} = {first}")
            lines += [f"      {line}" for line in more]
    kind = type(exc)
    lines.append(f"{kind.__module__}.{kind.__name__}: {exc}")
    return "\n".join(lines).replace(REPO, "")


def _descend(depth: int, path: list[str]) -> None:
    step = f"row-{depth}"
    if depth == 0:
        raise LookupError(f"no account below {path[-1]}")
    path.append(step)
    _descend(depth - 1, path)


def _deep_traceback(depth: int) -> str:
    try:
        _descend(depth, ["root"])
    except LookupError as exc:
        return _with_variables(exc)
    raise AssertionError("no exception")


def test_only_the_ten_innermost_frames_keep_their_variables() -> None:
    (exc,) = pytrace.parse(_deep_traceback(14))
    assert (exc["type"], exc["value"]) == ("LookupError", "no account below row-1")
    assert "module" not in exc  # builtins
    frames = exc["stacktrace"]["frames"]
    assert [f["function"] for f in frames] == ["_deep_traceback"] + ["_descend"] * 15
    assert {f["module"] for f in frames} == {"tests.test_errors_pytrace"}
    assert [("vars" in f) for f in frames] == [False] * 6 + [True] * pytrace.VARS_FRAMES
    assert frames[-1]["vars"] == {
        "depth": "0",
        "path": repr(["root"] + [f"row-{d}" for d in range(14, 0, -1)]),
        "step": "'row-0'",
    }
    assert frames[-1]["context_line"] == 'raise LookupError(f"no account below {path[-1]}")'
    assert frames[-1]["lineno"] == inspect.getsourcelines(_descend)[1] + 3


# -- module names ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "module", "in_app"),
    [
        # bench-relative, as Frappe writes paths: the app's package, as sentry-sdk names it
        ("apps/erpnext/erpnext/accounts/x.py", "erpnext.accounts.x", True),
        ("apps/frappe/frappe/__init__.py", "frappe", True),
        (
            "/home/frappe/frappe-bench/apps/erpnext/erpnext/accounts/x.py",
            "erpnext.accounts.x",
            True,
        ),
        # an "apps" directory above the bench is not the bench's
        ("/srv/apps/bench/apps/hrms/hrms/payroll/slip.py", "hrms.payroll.slip", True),
        # installed code counts from its root, wherever it is installed
        ("env/lib/python3.11/site-packages/pymysql/cursors.py", "pymysql.cursors", False),
        ("/opt/venv/lib/python3.12/site-packages/requests/api.py", "requests.api", False),
        ("/usr/lib/python3/dist-packages/redis/client.py", "redis.client", False),
        (r"C:\Py311\Lib\site-packages\requests\api.py", "requests.api", False),
        ("/usr/lib/python3.11/concurrent/futures/thread.py", "concurrent.futures.thread", False),
        ("<frozen importlib._bootstrap>", "importlib._bootstrap", False),
        # elsewhere: directory and file, not where it lives
        ("/srv/app/shop/views.py", "shop.views", True),
        ("/srv/rel-2/shop/views.py", "shop.views", True),
        ("<string>", None, True),
    ],
)
def test_module_names_do_not_depend_on_the_install_path(
    path: str, module: str | None, in_app: bool
) -> None:
    assert pytrace.module_name(path) == module
    assert pytrace.in_app(path) is in_app


# -- the standard format -----------------------------------------------------------------------


def _standard_traceback() -> str:
    try:
        _descend(2, ["root"])
    except LookupError:
        return traceback.format_exc()
    raise AssertionError("no exception")


def test_standard_tracebacks_read_the_same_with_or_without_header_or_indent() -> None:
    text = _standard_traceback()
    (exc,) = pytrace.parse(text)
    assert [f["function"] for f in exc["stacktrace"]["frames"]] == ["_standard_traceback"] + [
        "_descend"
    ] * 3
    assert all("vars" not in f for f in exc["stacktrace"]["frames"])
    frames_only = text.split("\n", 1)[1]  # a client that sent no "Traceback (...)" line
    indented = "".join(f"    {line}\n" for line in text.splitlines())  # pasted from a log
    assert pytrace.parse(frames_only) == pytrace.parse(indented) == [exc]


def test_text_without_a_traceback_gives_no_exception() -> None:
    assert pytrace.parse("") == []
    assert pytrace.parse("ValueError: a message, but no traceback") == []
    assert pytrace.parse("Payment Entry ACC-PAY-0042: gateway said 'card declined'") == []


# -- both callers ------------------------------------------------------------------------------

CFG = FrappeErrorLog(
    name="erp", url="https://erp.example.com", api_key="k", api_secret="s", project="erp"
)


def _via_json(text: str, kind: str, value: str) -> dict[str, Any]:
    body = JsonEvent(
        project="erp", exception=JsonException(type=kind, value=value, stacktrace=text)
    )
    return to_sentry(body, "a" * 32)


def _via_frappe(text: str) -> dict[str, Any]:
    row = {"name": "0a1b2c3d4e", "creation": "2027-01-15 08:45:00", "method": "x", "error": text}
    return build_event(row, "https://erp.example.com", CFG, ZoneInfo("Europe/Amsterdam"))


@pytest.mark.parametrize(
    ("text", "kind", "value"),
    [
        (FRAPPE_V15, "OperationalError", DEADLOCK),
        (_deep_traceback(12), "LookupError", "no account below row-1"),
        (_standard_traceback(), "LookupError", "no account below row-1"),
    ],
)
def test_the_json_endpoint_and_the_frappe_poller_give_the_same_frames_and_fingerprint(
    text: str, kind: str, value: str
) -> None:
    by_json = _via_json(text, kind, value)
    by_frappe = _via_frappe(text)
    (json_exc,) = by_json["exception"]["values"]
    (frappe_exc,) = by_frappe["exception"]["values"]
    assert (frappe_exc["type"], frappe_exc["value"]) == (kind, value)
    assert json_exc["stacktrace"] == frappe_exc["stacktrace"]
    assert len(json_exc["stacktrace"]["frames"]) >= 4
    a, b = group(by_json), group(by_frappe)
    assert a.kind == b.kind == "frames"
    assert a.current == b.current
    assert a.title == b.title == f"{kind}: {value}"
    assert a.culprit == b.culprit
