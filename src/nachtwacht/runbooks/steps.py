"""What each kind of step does when it runs: one attempt, returning an Outcome.

Retries, confirmation, recording and escalation are the runner's; a step only does its work
and says how it went. Output is redacted before it leaves this module.
"""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from nachtwacht.analytics import flags
from nachtwacht.clock import Clock
from nachtwacht.evidence import service as evidence
from nachtwacht.incidents import notifications
from nachtwacht.incidents.service import IncidentError, require
from nachtwacht.notify.templates import TemplateError
from nachtwacht.probes import registry
from nachtwacht.probes.context import ProbeContext
from nachtwacht.probes.kinds.command import run_process
from nachtwacht.probes.results import Status
from nachtwacht.runbooks.models import (
    CaptureEvidenceStep,
    CheckStep,
    CommandStep,
    NotifyStep,
    SetFlagStep,
    StepBase,
    WaitForStep,
)
from nachtwacht.runbooks.variables import Variables
from nachtwacht.store.db import Store

OUTPUT_READ = 256 * 1024  # bytes read from a command; what is stored is cut to output_limit


@dataclass
class Outcome:
    status: str  # ok | failed | skipped
    output: str
    exit_code: int | None = None
    attempts: int = 1


@dataclass
class StepEnv:
    """What a step needs: the config, the store, the clock, the variables, who and for what."""

    settings: Any
    store: Store
    clock: Clock
    variables: Variables
    actor: str
    incident_id: int | None
    run_id: int
    wake: Callable[[], None] | None = None


async def _db(fn: Callable[[], Any]) -> Any:
    """Store work off the event loop: a runbook runs inside the server too."""
    return await asyncio.to_thread(fn)


def command_env(env: StepEnv, extra: dict[str, str]) -> dict[str, str]:
    cfg = env.settings.runbooks
    out = dict(os.environ)
    out.update(cfg.env)
    if cfg.path:
        out["PATH"] = os.pathsep.join([*cfg.path, out.get("PATH", os.defpath)])
    out.update({k: env.variables.render(v, masked=False) for k, v in extra.items()})
    return out


async def run_shell(
    env: StepEnv, command: str, extra_env: dict[str, str], timeout: float
) -> Outcome:
    """One command through the shell, stderr merged into stdout, killed (with its children)
    at the timeout."""
    text = env.variables.render(command, masked=False, shell=True)
    argv = [env.settings.runbooks.shell, "-c", "exec 2>&1\n" + text]
    try:
        async with asyncio.timeout(timeout):
            done = await run_process(argv, env=command_env(env, extra_env), limit=OUTPUT_READ)
    except TimeoutError:
        return Outcome("failed", f"timed out after {timeout:g}s", None)
    except OSError as exc:
        return Outcome("failed", f"cannot start {argv[0]}: {exc.strerror or exc}", None)
    output = done.stdout.decode("utf-8", errors="replace")
    code = done.returncode
    return Outcome("ok", output, code)


def _judge(step: CheckStep | CommandStep, outcome: Outcome) -> Outcome:
    if outcome.exit_code is None:
        return outcome
    if outcome.exit_code not in step.ok_exit:
        outcome.status = "failed"
        outcome.output += f"\n[exit {outcome.exit_code}]"
    elif step.fail_if_output and re.search(step.fail_if_output, outcome.output):
        outcome.status = "failed"
        outcome.output += f"\n[output matches {step.fail_if_output!r}]"
    return outcome


async def command(env: StepEnv, step: CommandStep | CheckStep) -> Outcome:
    timeout = step.timeout or env.settings.runbooks.command_timeout
    assert step.command is not None  # the model requires it for command steps
    outcome = await run_shell(env, step.command, step.env, timeout)
    return _judge(step, outcome)


def select_probes(settings: Any, selector: str) -> tuple[list[Any], str | None]:
    """Probe configs for `NAME | component:NAME | all`; the second value says why none."""
    enabled = [p for p in settings.probes if p.enabled]
    if selector == "all":
        return enabled, None if enabled else "no probes are configured"
    kind, _, ref = selector.partition(":")
    if kind == "component" and ref:
        found = [p for p in enabled if p.component == ref]
        return found, None if found else f"no enabled probe in component {ref}"
    found = [p for p in settings.probes if p.name == selector]
    return found, None if found else f"no probe named {selector}"


async def _run_probes(env: StepEnv, configs: list[Any]) -> list[tuple[str, Status, str]]:
    ctx = ProbeContext(clock=env.clock, store=env.store, data_dir=env.settings.data_dir)
    probes = [registry.build(c, ctx) for c in configs]
    try:
        results = await asyncio.gather(*(p.run() for p in probes))
    finally:
        for p in probes:
            await p.close()
        await ctx.close()
    return [(c.name, r.status, r.message) for c, r in zip(configs, results, strict=True)]


def _probe_lines(results: list[tuple[str, Status, str]]) -> str:
    return "\n".join(f"{s.label.upper():<8} {name}: {message}" for name, s, message in results)


def _all_ok(results: list[tuple[str, Status, str]], accept_warning: bool) -> bool:
    good = {Status.OK, Status.WARNING} if accept_warning else {Status.OK}
    return all(s in good for _, s, _ in results)


async def check(env: StepEnv, step: CheckStep) -> Outcome:
    if step.command is not None:
        return await command(env, step)
    assert step.probe is not None
    selector = env.variables.render(step.probe, masked=False)
    configs, why = select_probes(env.settings, selector)
    if not configs:
        named = selector not in ("all",) and not selector.startswith("component:")
        return Outcome("failed" if named else "skipped", why or "", None)
    results = await _run_probes(env, configs)
    ok = _all_ok(results, step.accept_warning)
    return Outcome("ok" if ok else "failed", _probe_lines(results), 0 if ok else 1)


async def wait_for(env: StepEnv, step: WaitForStep) -> Outcome:
    """Check until every selected probe is ok; the clock's sleep, so tests fast-forward."""
    selector = env.variables.render(step.probe, masked=False)
    configs, why = select_probes(env.settings, selector)
    if not configs:
        named = selector != "all" and not selector.startswith("component:")
        return Outcome("failed" if named else "skipped", why or "", None)
    started = env.clock.now()
    deadline = started + step.deadline
    attempts = 0
    while True:
        attempts += 1
        results = await _run_probes(env, configs)
        if _all_ok(results, step.accept_warning):
            waited = env.clock.now() - started
            text = f"ok after {attempts} check(s), {waited:g}s\n{_probe_lines(results)}"
            return Outcome("ok", text, 0, attempts)
        left = deadline - env.clock.now()
        if left <= 0:
            text = f"not ok after {step.deadline:g}s ({attempts} checks)\n{_probe_lines(results)}"
            return Outcome("failed", text, 1, attempts)
        await env.clock.sleep(min(step.interval, left))


async def notify(env: StepEnv, step: NotifyStep) -> Outcome:
    if env.incident_id is None:
        return Outcome("skipped", "no incident is linked to this run: nothing to notify about")
    incident_id = env.incident_id
    now = env.clock.now()
    key = f"runbook:{env.run_id}:{step.id}:{int(now)}"

    def work() -> int:
        with env.store.begin() as conn:
            if step.subject is not None and step.body is not None:
                sent = notifications.send_custom(
                    conn,
                    env.settings,
                    incident_id,
                    kind=step.template,
                    subject=env.variables.render(step.subject, masked=True),
                    body=env.variables.render(step.body, masked=True),
                    to=step.to,
                    actor=env.actor,
                    now=now,
                )
                return int(sent["queued"])
            contacts, _ = notifications.recipients(conn, env.settings, incident_id, step.to, now)
            return notifications.queue(
                conn,
                env.settings,
                require(conn, incident_id),
                kind=step.template,
                key=key,
                contacts=contacts,
                now=now,
                actor=env.actor,
            )

    try:
        queued = await _db(work)
    except (IncidentError, TemplateError) as exc:
        return Outcome("failed", f"not sent: {exc}")
    if env.wake is not None:
        env.wake()
    if not queued:
        return Outcome("failed", f"nothing queued: no notification channel reaches {step.to}")
    return Outcome("ok", f"{step.template} queued for {step.to}: {queued} message(s)")


async def capture_evidence(env: StepEnv, step: CaptureEvidenceStep) -> Outcome:
    def work() -> dict[str, Any]:
        return evidence.capture_bundle(
            env.store,
            env.settings,
            env.clock,
            incident_id=env.incident_id,
            actor=env.actor,
        )

    try:
        bundle = await _db(work)
    except (OSError, evidence.EvidenceError) as exc:
        return Outcome("failed", f"evidence not captured: {exc}")
    notes = "".join(f"\nnote: {n}" for n in bundle.get("notes", []))
    return Outcome(
        "ok",
        f"bundle {bundle['path']} ({bundle['files']} files)\n"
        f"manifest sha256 {bundle['manifest_sha256']}{notes}",
    )


async def set_flag(env: StepEnv, step: SetFlagStep) -> Outcome:
    """Switch one of the protocol's flags through the analytics package (audited there)."""
    now = env.clock.now()

    def work() -> dict[str, Any]:
        with env.store.begin() as conn:
            before = {f["name"]: f["enabled"] for f in flags.list_flags(conn)}.get(step.flag)
            after = flags.set_flag(conn, step.flag, step.enabled, env.actor, now)
            return {"was": before, **after}

    try:
        row = await _db(work)
    except flags.FlagError as exc:
        return Outcome("failed", str(exc))
    was = "on" if row["was"] else "off"
    return Outcome("ok", f"flag {step.flag} {'on' if row['enabled'] else 'off'} (was {was})")


async def execute(env: StepEnv, step: StepBase) -> Outcome:
    """One attempt of an automated step."""
    if isinstance(step, CommandStep):
        return await command(env, step)
    if isinstance(step, CheckStep):
        return await check(env, step)
    if isinstance(step, WaitForStep):
        return await wait_for(env, step)
    if isinstance(step, NotifyStep):
        return await notify(env, step)
    if isinstance(step, CaptureEvidenceStep):
        return await capture_evidence(env, step)
    if isinstance(step, SetFlagStep):
        return await set_flag(env, step)
    raise TypeError(f"step kind {step.kind} is not automated")  # type: ignore[attr-defined]


def describe(step: StepBase, variables: Variables, plan: bool = False) -> str:
    """What a step would do, variables filled in and secrets masked; `plan` adds when it
    would not run and what it needs (dry runs, `show`)."""
    kind = step.kind  # type: ignore[attr-defined]
    text = ""
    if isinstance(step, CommandStep | CheckStep) and step.command is not None:
        text = "$ " + variables.render(step.command, masked=True, shell=True)
        if step.env:
            env = " ".join(f"{k}={variables.render(v, masked=True)}" for k, v in step.env.items())
            text = f"{text}\n  with {env}"
    elif isinstance(step, CheckStep | WaitForStep):
        target = variables.render(step.probe or "", masked=True)
        text = f"probes {target} ok"
        if isinstance(step, WaitForStep):
            text = f"wait until {text} (check every {step.interval:g}s, up to {step.deadline:g}s)"
    elif kind == "manual":
        text = "confirm: " + variables.render(step.instruction, masked=True)  # type: ignore[attr-defined]
    elif isinstance(step, NotifyStep):
        text = f"send {step.template} to {step.to}"
        if step.subject:
            text += f": {variables.render(step.subject, masked=True)}"
    elif isinstance(step, CaptureEvidenceStep):
        text = f"capture an evidence bundle into {variables.shown('evidence_dir')}"
    elif isinstance(step, SetFlagStep):
        text = f"set flag {step.flag} {'on' if step.enabled else 'off'}"
    if plan:
        text += "".join(f"\n  ({note})" for note in conditions(step, variables))
    return variables.redact(text)


def conditions(step: StepBase, variables: Variables) -> list[str]:
    notes = []
    if step.if_var is not None and not variables.is_set(step.if_var):
        notes.append(f"skipped here: {variables.unmet(step.if_var)}")
    if step.only_if_failed is not None:
        notes.append(f"only if step {step.only_if_failed} failed")
    if step.destructive:
        notes.append("destructive: needs confirmation and the responder role")
    if step.retries:
        notes.append(f"up to {step.retries + 1} attempts, {step.retry_delay:g}s apart")
    if step.on_failure != "stop":
        notes.append(f"on failure: {step.on_failure.replace('_', ' ')}")
    return notes
