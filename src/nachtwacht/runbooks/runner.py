"""Running a runbook: step by step, recorded, confirmed where it must be, escalated on failure.

A run is a row in `runbook_runs`, each step a row in `runbook_steps` (start, end, attempts,
exit code, redacted output, who confirmed). A run linked to an incident writes each step on the
incident's timeline. Three things stop a run before a step:

- a `manual` step waits for a person (`waiting`, `next_step` points at it) unless the caller
  already confirmed manual steps (`--yes`);
- a `destructive` step needs the responder role and a confirmation: given up front (`--yes`,
  `confirm: true`), asked for (an interactive CLI), or waited for (the incident page's
  step-by-step panel); refused otherwise, and recorded as refused;
- step-by-step mode (the panel) waits before every step.

A waiting run resumes with `resume`, claimed by a conditional update so that two responders
pressing the same button run the step once.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, TypeGuard

from sqlalchemy import select, update

from nachtwacht.auth.models import role_allows
from nachtwacht.incidents import service as incidents
from nachtwacht.runbooks import loader
from nachtwacht.runbooks.models import LoadedRunbook, StepBase
from nachtwacht.runbooks.record import Recorder, RunError, Who
from nachtwacht.runbooks.steps import Outcome, StepEnv, describe, execute
from nachtwacht.runbooks.variables import VariableError, Variables, known_names, variables
from nachtwacht.store import claims
from nachtwacht.store import tables as t
from nachtwacht.store.db import inserted_id

Answer = Literal["yes", "no", "pause", "ask"]
Action = Literal["run", "skip", "refuse"]
# step kinds that verify recovery: one of them failing as a run's last step fails the run
VERIFICATIONS = ("check", "wait_for")


def is_action(value: str) -> TypeGuard[Action]:
    return value in ("run", "skip", "refuse")


@dataclass
class Policy:
    """How the caller answers the questions a run asks."""

    destructive: Answer = "no"  # yes: confirmed up front; no: refuse; pause; ask
    manual: Answer = "pause"  # yes: confirmed up front; pause; ask
    step_by_step: bool = False  # wait before every step (the incident page)
    ask: Callable[[str], bool] | None = None  # the CLI's prompt
    progress: Callable[[dict[str, Any]], None] | None = None  # each recorded step, as it ends


def find(settings: Any, name: str) -> LoadedRunbook:
    runbooks, problems = loader.load_all(settings, known_names(settings))
    if name in runbooks:
        return runbooks[name]
    broken = [p for p in problems if p.file.endswith((f"/{name}.yaml", f"/{name}.yml"))]
    if broken:
        raise RunError("; ".join(str(p) for p in broken), "name")
    raise RunError(
        f"no runbook named '{name}'; see `nachtwacht runbook list`", "name", kind="not_found"
    )


class Runner(Recorder):
    # -- starting ---------------------------------------------------------------------------

    async def start(
        self,
        name: str,
        *,
        who: Who,
        incident_id: int | None = None,
        inputs: dict[str, str] | None = None,
        dry_run: bool = False,
        policy: Policy | None = None,
    ) -> int:
        loaded = find(self.settings, name)
        try:
            values = variables(self.settings, loaded.runbook, inputs, incident_id)
        except VariableError as exc:
            raise RunError(str(exc), exc.field) from None
        steps = loaded.steps
        now = self.clock.now()

        def create(conn: Any) -> dict[str, Any]:
            if incident_id is not None:
                inc = incidents.get_incident(conn, incident_id)
                if inc is None:
                    raise RunError(f"no incident {incident_id}", "incident_id", kind="not_found")
            run_id = inserted_id(
                conn.execute(
                    t.runbook_runs.insert().values(
                        runbook=loaded.name,
                        incident_id=incident_id,
                        status="planned" if dry_run else "running",
                        dry_run=dry_run,
                        started_by=who.name,
                        started_at=now,
                        next_step=0,
                        inputs_json=json.dumps(inputs or {}),
                        definition_sha256=loaded.sha256,
                    )
                )
            )
            run = {"id": run_id, "incident_id": incident_id}
            # "runbook X started by A: Title (9 steps)"; "runbook X dry run by A: ...; nothing ran"
            what = "dry run" if dry_run else "started"
            ran = "; nothing ran" if dry_run else ""
            self._event(
                conn,
                run,
                "runbook",
                who.name,
                f"runbook {loaded.name} {what} by {who.name}: {loaded.runbook.title} "
                f"({len(steps)} steps{ran})",
                {"runbook": loaded.name, "dry_run": dry_run},
            )
            if dry_run:
                for idx, step in enumerate(steps):
                    self._insert_step(
                        conn, run_id, idx, step, "planned", now, describe(step, values, plan=True)
                    )
                conn.execute(
                    update(t.runbook_runs)
                    .where(t.runbook_runs.c.id == run_id)
                    .values(finished_at=now, next_step=len(steps), summary="dry run: nothing ran")
                )
            return run

        run = await self._tx(create)
        if not dry_run:
            await self._advance(run["id"], loaded, values, who, policy or Policy(), None)
        return int(run["id"])

    # -- resuming ---------------------------------------------------------------------------

    async def resume(
        self, run_id: int, *, who: Who, action: Action = "run", policy: Policy | None = None
    ) -> int:
        """Answer the step a waiting run waits at (`run` it / confirm it, `skip`, `refuse`),
        then go on as `policy` says."""

        def claim(conn: Any) -> dict[str, Any]:
            run = (
                conn.execute(select(t.runbook_runs).where(t.runbook_runs.c.id == run_id))
                .mappings()
                .first()
            )
            if run is None:
                raise RunError(f"no runbook run {run_id}", "run_id", kind="not_found")
            if run["status"] != "waiting":
                raise RunError(
                    f"run {run_id} is {run['status']}, not waiting", "run_id", kind="conflict"
                )
            if not claims.claim(
                conn,
                t.runbook_runs,
                run_id,
                t.runbook_runs.c.status == "waiting",
                values={"status": "running"},
            ):
                raise RunError(
                    f"run {run_id} was just resumed by someone else", "run_id", kind="conflict"
                )
            return dict(run)

        run = await self._tx(claim)
        try:
            loaded = find(self.settings, run["runbook"])
            if loaded.sha256 != run["definition_sha256"]:
                raise RunError(
                    f"runbook {run['runbook']} changed since run {run_id} started; start a new run",
                    "run_id",
                    kind="conflict",
                )
            values = variables(
                self.settings,
                loaded.runbook,
                json.loads(run["inputs_json"] or "{}"),
                run["incident_id"],
            )
        except (RunError, VariableError) as exc:
            await self._finish(run, "failed", str(exc), who.name)
            if isinstance(exc, VariableError):
                raise RunError(str(exc), exc.field) from None
            raise
        await self._advance(run_id, loaded, values, who, policy or Policy(), action)
        return run_id

    # -- the loop ---------------------------------------------------------------------------

    async def _advance(
        self,
        run_id: int,
        loaded: LoadedRunbook,
        values: Variables,
        who: Who,
        policy: Policy,
        first_action: Action | None,
    ) -> None:
        try:
            await self._steps(run_id, loaded, values, who, policy, first_action)
        except Exception as exc:
            # a run must not stay `running` forever because a step broke in an unforeseen way
            run = await self._tx(lambda c: self._row(c, run_id))
            await self._finish(run, "failed", f"stopped by an error: {exc}"[:500], who.name)
            raise

    @staticmethod
    def _row(conn: Any, run_id: int) -> dict[str, Any]:
        query = select(t.runbook_runs).where(t.runbook_runs.c.id == run_id)
        return dict(conn.execute(query).mappings().one())

    async def _steps(
        self,
        run_id: int,
        loaded: LoadedRunbook,
        values: Variables,
        who: Who,
        policy: Policy,
        first_action: Action | None,
    ) -> None:
        run = await self._tx(lambda c: self._row(c, run_id))
        self._progress = policy.progress
        steps = loaded.steps
        start = run["next_step"]
        escalated = False
        for idx in range(start, len(steps)):
            step = steps[idx]
            action = first_action if idx == start else None
            why_skip = await self._skip_reason(run_id, step, values)
            began = self.clock.now()
            if why_skip is not None and action is None:
                skipped = Outcome("skipped", why_skip, attempts=0)
                await self._record(run, idx, step, skipped, None, values, who, began)
                continue
            decision, confirmed_by = self._decide(step, who, policy, action, idx)
            if decision == "pause":
                await self._pause(run, idx, step, values)
                return
            if decision == "skip":
                skipped = Outcome("skipped", f"skipped by {who.name}", attempts=0)
                await self._record(run, idx, step, skipped, who.name, values, who, began)
                continue
            if decision == "refuse":
                reason = self._refusal(step, who)
                refused = Outcome("refused", reason, attempts=0)
                await self._record(run, idx, step, refused, None, values, who, began)
                await self._finish(
                    run, "refused", f"step {idx + 1} {step.id} refused: {reason}", who.name, idx + 1
                )
                return
            if step.kind == "manual":  # type: ignore[attr-defined]
                outcome = Outcome("ok", f"done, confirmed by {confirmed_by}", attempts=1)
            else:
                outcome = await self._attempts(run, step, values, who)
            await self._record(run, idx, step, outcome, confirmed_by, values, who, began)
            if outcome.status != "failed" or step.on_failure == "continue":
                continue
            if step.on_failure in ("escalate", "escalate_and_continue"):
                escalated = await self._escalate(run, idx, step, outcome, who) or escalated
                if step.on_failure == "escalate_and_continue":
                    continue
                status = "escalated" if escalated else "failed"
            else:
                status = "failed"
            await self._finish(
                run,
                status,
                f"step {idx + 1} {step.id} failed after {outcome.attempts} attempt(s)",
                who.name,
                idx + 1,
            )
            return
        status, summary = await self._verdict(run_id, steps, escalated)
        await self._finish(run, status, summary, who.name, len(steps))

    async def _verdict(
        self, run_id: int, steps: list[StepBase], escalated: bool
    ) -> tuple[str, str]:
        """How a run that went through all its steps ended: `succeeded` only when no step
        failed; `failed` when its final verification (a check or wait_for as the last step
        that ran) failed, whatever came before; `partly_failed` otherwise."""
        recorded = await self._tx(
            lambda c: {
                row.idx: row.status
                for row in c.execute(
                    select(t.runbook_steps.c.idx, t.runbook_steps.c.status).where(
                        t.runbook_steps.c.run_id == run_id
                    )
                )
            }
        )
        failed = [idx for idx, status in recorded.items() if status == "failed"]
        ran = [idx for idx, status in recorded.items() if status not in ("skipped", "planned")]
        parts = ["completed"]
        if failed:
            parts.append(
                f"{len(failed)} of {len(steps)} step{'s' if len(steps) != 1 else ''} failed"
            )
        last = max(ran) if ran else None
        final_failed = (
            last is not None and recorded[last] == "failed" and steps[last].kind in VERIFICATIONS
        )
        if final_failed and last is not None:
            step = steps[last]
            parts.append(f"the final check {last + 1} {step.id} ({step.label}) failed")
        summary = ", ".join(parts)
        if escalated:
            summary += " (the incident was escalated on the way)"
        if final_failed:
            return "failed", summary
        return ("partly_failed" if failed else "succeeded"), summary

    def _decide(
        self, step: StepBase, who: Who, policy: Policy, action: Action | None, idx: int
    ) -> tuple[str, str | None]:
        """(run | skip | refuse | pause, who confirmed)."""
        manual = step.kind == "manual"  # type: ignore[attr-defined]
        if action == "skip":
            return "skip", who.name
        if action == "refuse":
            return "refuse", None
        if step.destructive and not role_allows(who.role, "responder"):
            return "refuse", None
        if action == "run":
            return "run", who.name if (manual or step.destructive) else None
        if policy.step_by_step:
            return "pause", None
        if manual:
            answer = policy.manual
            if answer == "ask" and policy.ask is not None:
                return (
                    ("run", who.name)
                    if policy.ask(f"step {idx + 1} {step.label}: done?")
                    else ("pause", None)
                )
            return ("run", who.name) if answer == "yes" else ("pause", None)
        if step.destructive:
            answer = policy.destructive
            if answer == "ask" and policy.ask is not None:
                prompt = f"step {idx + 1} {step.label} is destructive: run it?"
                return ("run", who.name) if policy.ask(prompt) else ("refuse", None)
            if answer == "yes":
                return "run", who.name
            if answer == "pause":
                return "pause", None
            return "refuse", None
        return "run", None

    @staticmethod
    def _refusal(step: StepBase, who: Who) -> str:
        if step.destructive and not role_allows(who.role, "responder"):
            return f"destructive step needs the responder role; {who.name} is {who.role}"
        if step.destructive:
            return "destructive step not confirmed (use --yes, confirm: true or the step's button)"
        return f"refused by {who.name}"

    async def _skip_reason(self, run_id: int, step: StepBase, values: Variables) -> str | None:
        if step.if_var is not None and not values.is_set(step.if_var):
            return f"skipped: {values.unmet(step.if_var)}"
        if step.only_if_failed is not None:
            failed = await self._tx(
                lambda c: c.execute(
                    select(t.runbook_steps.c.status).where(
                        t.runbook_steps.c.run_id == run_id,
                        t.runbook_steps.c.name == step.only_if_failed,
                    )
                ).scalar()
            )
            if failed != "failed":
                return f"skipped: {step.only_if_failed} did not fail"
        return None

    async def _attempts(
        self, run: dict[str, Any], step: StepBase, values: Variables, who: Who
    ) -> Outcome:
        env = StepEnv(
            settings=self.settings,
            store=self.store,
            clock=self.clock,
            variables=values,
            actor=who.name,
            incident_id=run["incident_id"],
            run_id=run["id"],
            wake=self.wake,
        )
        outputs: list[str] = []
        attempts = 0
        outcome = Outcome("failed", "", None)
        for attempt in range(step.retries + 1):
            if attempt:
                await self.clock.sleep(step.retry_delay)
            outcome = await execute(env, step)
            attempts += outcome.attempts
            outputs.append(outcome.output)
            if outcome.status != "failed":
                break
        outcome.attempts = attempts
        if len(outputs) > 1:
            outputs = [f"--- attempt {i + 1}:\n{text}" for i, text in enumerate(outputs)]
        outcome.output = "\n".join(outputs)
        return outcome
