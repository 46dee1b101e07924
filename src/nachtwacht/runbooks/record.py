"""Recording a run: its rows, the incident's timeline, and the escalation a failure causes.

Every write is one short transaction run off the event loop (a runbook also runs inside the
server). Output is redacted, then cut to `runbooks.output_limit`, before it is stored.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select, update

from nachtwacht.clock import Clock
from nachtwacht.incidents import escalation
from nachtwacht.incidents import service as incidents
from nachtwacht.incidents.models import OPEN_STATUSES
from nachtwacht.problems import Problem
from nachtwacht.runbooks.models import ManualStep, StepBase
from nachtwacht.runbooks.steps import Outcome, describe
from nachtwacht.runbooks.variables import Variables
from nachtwacht.store import tables as t
from nachtwacht.store.db import Store


class RunError(Problem):
    """A runbook run that cannot be started, resumed or read; `field` names the culprit."""


@dataclass
class Who:
    name: str
    role: str  # viewer | responder | admin


class Recorder:
    def __init__(
        self,
        store: Store,
        settings: Any,
        clock: Clock,
        wake: Callable[[], None] | None = None,
    ) -> None:
        self.store = store
        self.settings = settings
        self.clock = clock
        self.wake = wake
        self._progress: Callable[[dict[str, Any]], None] | None = None

    # -- store helpers (off the event loop: runs happen inside the server too) --------------

    async def _tx(self, fn: Callable[[Any], Any]) -> Any:
        def work() -> Any:
            with self.store.begin() as conn:
                return fn(conn)

        return await asyncio.to_thread(work)

    def _event(
        self, conn: Any, run: dict[str, Any], kind: str, actor: str, text: str, data: dict
    ) -> None:
        if run["incident_id"] is not None:
            incidents.add_event(
                conn,
                run["incident_id"],
                self.clock.now(),
                kind,
                actor,
                text,
                data | {"run_id": run["id"]},
            )

    # -- recording --------------------------------------------------------------------------

    def _clip(self, text: str) -> str:
        limit = self.settings.runbooks.output_limit
        if len(text) <= limit:
            return text
        half = limit // 2
        return f"{text[:half]}\n[… {len(text) - limit} characters cut …]\n{text[-half:]}"

    def _insert_step(
        self, conn: Any, run_id: int, idx: int, step: StepBase, status: str, now: float, output: str
    ) -> None:
        conn.execute(
            t.runbook_steps.insert().values(
                run_id=run_id,
                idx=idx,
                name=step.id,
                kind=step.kind,  # type: ignore[attr-defined]
                status=status,
                started_at=now,
                finished_at=now if status == "planned" else None,
                attempts=0,
                output=self._clip(output),
            )
        )

    async def _record(
        self,
        run: dict[str, Any],
        idx: int,
        step: StepBase,
        outcome: Outcome,
        confirmed_by: str | None,
        values: Variables,
        who: Who,
        began: float,
    ) -> None:
        now = self.clock.now()
        shown = describe(step, values)
        output = self._clip(values.redact(f"{shown}\n{outcome.output}".strip()))
        kind = step.kind  # type: ignore[attr-defined]

        def work(conn: Any) -> dict[str, Any]:
            existing = conn.execute(
                select(t.runbook_steps.c.id).where(
                    t.runbook_steps.c.run_id == run["id"], t.runbook_steps.c.idx == idx
                )
            ).first()
            row = {
                "status": outcome.status,
                "finished_at": now,
                "attempts": outcome.attempts,
                "exit_code": outcome.exit_code,
                "output": output,
                "confirmed_by": confirmed_by,
            }
            if existing is None:
                conn.execute(
                    t.runbook_steps.insert().values(
                        run_id=run["id"], idx=idx, name=step.id, kind=kind, started_at=began, **row
                    )
                )
            else:
                # a step that waited: a manual one started when its instruction was shown,
                # any other when it was let go
                moved = {} if kind == "manual" else {"started_at": began}
                conn.execute(
                    update(t.runbook_steps)
                    .where(t.runbook_steps.c.id == existing.id)
                    .values(**row, **moved)
                )
            conn.execute(
                update(t.runbook_runs)
                .where(t.runbook_runs.c.id == run["id"])
                .values(next_step=idx + 1)
            )
            exit_text = f", exit {outcome.exit_code}" if outcome.exit_code not in (None, 0) else ""
            tries = f" after {outcome.attempts} attempts" if outcome.attempts > 1 else ""
            by = f"; confirmed by {confirmed_by}" if confirmed_by else ""
            harm = ", destructive" if step.destructive else ""
            self._event(
                conn,
                run,
                "runbook_step",
                confirmed_by or who.name,
                f"runbook {run['runbook']} step {idx + 1} {step.id} ({kind}{harm}): "
                f"{outcome.status}{tries}{exit_text}{by}",
                {
                    "step": idx,
                    "name": step.id,
                    "status": outcome.status,
                    "exit_code": outcome.exit_code,
                    "attempts": outcome.attempts,
                },
            )
            return row

        row = await self._tx(work)
        if self._progress is not None:
            self._progress({"idx": idx, "name": step.id, "kind": kind, **row})

    async def _pause(
        self, run: dict[str, Any], idx: int, step: StepBase, values: Variables
    ) -> None:
        now = self.clock.now()
        what = (
            "a person to confirm"
            if isinstance(step, ManualStep)
            else ("confirmation (destructive)" if step.destructive else "a go-ahead")
        )
        summary = f"waiting at step {idx + 1} {step.id} for {what}"

        def work(conn: Any) -> None:
            existing = conn.execute(
                select(t.runbook_steps.c.id).where(
                    t.runbook_steps.c.run_id == run["id"], t.runbook_steps.c.idx == idx
                )
            ).first()
            if existing is None:
                self._insert_step(
                    conn, run["id"], idx, step, "waiting", now, describe(step, values, plan=True)
                )
            conn.execute(
                update(t.runbook_runs)
                .where(t.runbook_runs.c.id == run["id"])
                .values(status="waiting", next_step=idx, summary=summary)
            )

        await self._tx(work)

    async def _finish(
        self,
        run: dict[str, Any],
        status: str,
        summary: str,
        actor: str,
        next_step: int | None = None,
    ) -> None:
        now = self.clock.now()

        def work(conn: Any) -> None:
            values: dict[str, Any] = {"status": status, "finished_at": now, "summary": summary}
            if next_step is not None:
                values["next_step"] = next_step
            conn.execute(
                update(t.runbook_runs).where(t.runbook_runs.c.id == run["id"]).values(**values)
            )
            self._event(
                conn,
                run,
                "runbook",
                actor,
                f"runbook {run['runbook']} {status.replace('_', ' ')}: {summary}",
                {"runbook": run["runbook"], "status": status},
            )

        await self._tx(work)

    async def _escalate(
        self, run: dict[str, Any], idx: int, step: StepBase, outcome: Outcome, who: Who
    ) -> bool:
        """Escalate the linked incident now (the protocol: a restart failing 3 times)."""
        reason = (
            f"runbook {run['runbook']} step {idx + 1} {step.id} failed after "
            f"{outcome.attempts} attempt(s)"
        )
        if run["incident_id"] is None:
            return False

        def work(conn: Any) -> bool:
            inc = incidents.get_incident(conn, run["incident_id"])
            if inc is None or inc["status"] not in OPEN_STATUSES:
                return False
            escalation.escalate_now(
                conn, self.settings, run["incident_id"], who.name, self.clock.now(), reason
            )
            return True

        done = await self._tx(work)
        if done and self.wake is not None:
            self.wake()
        return bool(done)
