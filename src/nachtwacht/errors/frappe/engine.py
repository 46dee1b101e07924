"""Engine modules of the Frappe adapters: one per `errors.frappe_error_logs` entry (polls the
site's Error Log) and one per `errors.frappe_monitor_logs` entry (tails monitor.json.log).

Module names are `frappe_errors:<name>` and `frappe_monitor:<name>`; their health (a refused
API key, a missing project, a missing log file) shows in /healthz and `nachtwacht status`.
`install` is idempotent: a module already added under its name is left as it is.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from nachtwacht.errors.frappe.errorlog import ErrorLogPoller
from nachtwacht.errors.frappe.monitor import MonitorTail

if TYPE_CHECKING:
    from nachtwacht.engine.runtime import Runtime

MODULE_NAME_LEN = 64  # module_health.module


def module_name(kind: str, name: str) -> str:
    return f"{kind}:{name}"[:MODULE_NAME_LEN]


def install(runtime: Runtime) -> None:
    settings = runtime.settings
    engine = runtime.engine
    for cfg in settings.errors.frappe_error_logs:
        name = module_name("frappe_errors", cfg.name)
        if name not in engine.modules:
            poller = ErrorLogPoller(
                cfg,
                runtime.store,
                runtime.spool_put,
                runtime.ctx.http_session,
                settings.timezone,
            )
            engine.add(name, cfg.interval, poller.tick)
    for mcfg in settings.errors.frappe_monitor_logs:
        name = module_name("frappe_monitor", mcfg.name)
        if name not in engine.modules:
            engine.add(name, mcfg.interval, MonitorTail(mcfg, runtime.store).tick)
