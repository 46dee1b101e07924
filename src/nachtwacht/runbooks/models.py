"""Config models of `runbooks:` in nachtwacht.yaml, and the shape of a runbook file.

A runbook file is YAML: a title, a description, optional `inputs` (values given when it is
run, such as the IP address to block) and ordered `steps`, each of one `kind`:

- `check`: run probes now (`probe: NAME | component:NAME | all`) or a command judged by its
  exit code;
- `command`: a shell command with a timeout and retries;
- `manual`: an instruction a person confirms;
- `notify`: send a notification template about the linked incident;
- `capture_evidence`: write an evidence bundle;
- `set_flag`: switch one of the protocol's run-time flags;
- `wait_for`: run probes until they are ok, up to a deadline.

Text may use `{{ variable }}`; the variables come from `runbooks.vars`, `runbooks.secret_vars`,
the built-ins (site, bench path, service names, database URL...) and the runbook's inputs.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from nachtwacht.config.redact import SecretNamed, SecretStr
from nachtwacht.durations import Duration

NAME_PATTERN = r"^[a-z0-9][a-z0-9_-]*$"
VAR_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RunbookSettings(Strict):
    # user runbooks (*.yaml); one named like a built-in replaces it
    # (default: <data_dir>/runbooks, else ./runbooks)
    dir: Path | None = None
    # which built-in commands to use: a plain systemd host, or a Frappe bench. The frappe
    # preset of `nachtwacht init` writes `variant: frappe`.
    variant: Literal["systemd", "frappe"] = "systemd"
    # variables for `{{ name }}` in runbooks; they override the built-ins of the same name
    vars: SecretNamed = Field(default_factory=dict)
    # like vars, but never shown: masked in dry runs, output, the store and the timeline
    secret_vars: dict[str, SecretStr] = Field(default_factory=dict)
    # directories put in front of PATH for runbook commands (where your tools live, or the
    # stand-ins of a rehearsal sandbox: see docs/runbooks.md)
    path: list[str] = Field(default_factory=list)
    env: SecretNamed = Field(default_factory=dict)  # extra environment for commands
    shell: str = "/bin/sh"
    command_timeout: Duration = 120.0  # a step's default timeout
    output_limit: int = Field(default=8000, ge=200, le=1_000_000)  # characters kept per step

    @field_validator("vars", "secret_vars", "env", mode="before")
    @classmethod
    def _scalars_as_text(cls, value: object) -> object:
        # YAML turns `db_port: 3306` into an int; variables are text
        if isinstance(value, dict):
            return {
                k: str(v) if isinstance(v, int | float) and not isinstance(v, bool) else v
                for k, v in value.items()
            }
        return value

    @model_validator(mode="after")
    def _names(self) -> RunbookSettings:
        for group in ("vars", "secret_vars"):
            for name in getattr(self, group):
                if not VAR_NAME.match(name):
                    raise ValueError(
                        f"{group} names are letters, digits and _ (not starting with a digit): "
                        f"'{name}'"
                    )
        both = sorted(set(self.vars) & set(self.secret_vars))
        if both:
            raise ValueError(f"secret_vars repeats vars: {', '.join(both)}; keep one of each")
        return self

    def directory(self, data_dir: Path) -> Path:
        if self.dir is not None:
            return self.dir
        return data_dir / "runbooks"


# -- the runbook file ---------------------------------------------------------------------------

OnFailure = Literal["stop", "continue", "escalate", "escalate_and_continue"]


class StepBase(Strict):
    id: str = Field(min_length=1, max_length=64, pattern=NAME_PATTERN)
    title: str = Field(default="", max_length=200)
    # only in this variant (systemd | frappe); omitted: in both
    variant: Literal["systemd", "frappe"] | None = None
    # run only when a variable is set (`if_var: suspicious_ip`) or has a value
    # (`if_var: db_kind=mysql`); otherwise the step is skipped
    if_var: str | None = None
    # run only when an earlier step failed (a repair after a failed check)
    only_if_failed: str | None = None
    destructive: bool = False  # restarts, repairs, restores, firewall changes: confirm first
    on_failure: OnFailure = "stop"
    retries: int = Field(default=0, ge=0, le=20)  # attempts after the first
    retry_delay: Duration = 10.0
    timeout: Duration | None = None  # default: runbooks.command_timeout

    @property
    def label(self) -> str:
        return self.title or self.id


class CommandFields(Strict):
    command: str | None = Field(default=None, min_length=1)
    env: dict[str, str] = Field(default_factory=dict)
    ok_exit: list[int] = Field(default_factory=lambda: [0])
    # output matching this regex fails the step even on exit 0 (mysqlcheck exits 0 on
    # corrupt tables and says so in its output)
    fail_if_output: str | None = None

    @field_validator("fail_if_output")
    @classmethod
    def _regex(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"not a regular expression: {exc}") from None
        return value


class CheckStep(StepBase, CommandFields):
    kind: Literal["check"]
    probe: str | None = Field(default=None, min_length=1)  # NAME | component:NAME | all
    accept_warning: bool = False

    @model_validator(mode="after")
    def _one_target(self) -> CheckStep:
        if (self.probe is None) == (self.command is None):
            raise ValueError("a check needs either probe or command (one of them)")
        return self


class CommandStep(StepBase, CommandFields):
    kind: Literal["command"]

    @model_validator(mode="after")
    def _has_command(self) -> CommandStep:
        if self.command is None:
            raise ValueError("command is required")
        return self


class ManualStep(StepBase):
    kind: Literal["manual"]
    instruction: str = Field(min_length=1)


class NotifyStep(StepBase):
    kind: Literal["notify"]
    template: Literal[
        "emergency_alert", "emergency_notification", "status_update", "customer_notice"
    ] = "status_update"
    to: str = "notified"  # notified | role:NAME | contact:ID
    # given: sent as written (an edited message); omitted: the template's text
    subject: str | None = Field(default=None, min_length=1, max_length=300)
    body: str | None = Field(default=None, min_length=1)

    @model_validator(mode="after")
    def _both(self) -> NotifyStep:
        if (self.subject is None) != (self.body is None):
            raise ValueError("subject and body go together: give both or neither")
        return self


class CaptureEvidenceStep(StepBase):
    kind: Literal["capture_evidence"]


class SetFlagStep(StepBase):
    kind: Literal["set_flag"]
    flag: str = Field(min_length=1, max_length=64)
    enabled: bool

    @field_validator("flag")
    @classmethod
    def _known(cls, value: str) -> str:
        from nachtwacht.analytics.models import FLAGS

        if value not in FLAGS:
            raise ValueError(f"unknown flag '{value}'; known flags: {', '.join(sorted(FLAGS))}")
        return value


class WaitForStep(StepBase):
    kind: Literal["wait_for"]
    probe: str = Field(min_length=1)  # NAME | component:NAME | all
    deadline: Duration = 300.0
    interval: Duration = 10.0
    accept_warning: bool = False

    @model_validator(mode="after")
    def _order(self) -> WaitForStep:
        if self.interval <= 0 or self.interval > self.deadline:
            raise ValueError("interval must be more than 0s and at most the deadline")
        return self


Step = Annotated[
    CheckStep
    | CommandStep
    | ManualStep
    | NotifyStep
    | CaptureEvidenceStep
    | SetFlagStep
    | WaitForStep,
    Field(discriminator="kind"),
]
STEP_KINDS: dict[str, type[StepBase]] = {
    "check": CheckStep,
    "command": CommandStep,
    "manual": ManualStep,
    "notify": NotifyStep,
    "capture_evidence": CaptureEvidenceStep,
    "set_flag": SetFlagStep,
    "wait_for": WaitForStep,
}


# what an input holds decides the checks beyond the safe characters (variables.check_input)
InputType = Literal["text", "name", "path", "address", "network"]


class Input(Strict):
    description: str = ""
    default: str | None = None  # None: must be given when the runbook runs
    # omitted: guessed from the input's name (`…_ip` is a network, `…_path` a path), so a
    # user runbook written before types existed still gets the address checks
    type: InputType | None = None


class Runbook(Strict):
    title: str = Field(min_length=1, max_length=200)
    description: str = ""
    # the protocol's section this runbook implements, shown with it
    protocol: str = ""
    inputs: dict[str, Input] = Field(default_factory=dict)
    steps: list[Step] = Field(min_length=1)

    @field_validator("inputs", mode="before")
    @classmethod
    def _short_inputs(cls, value: object) -> object:
        # `inputs: {suspicious_ip: "the address to block"}` is the short form
        if isinstance(value, dict):
            return {k: {"description": v} if isinstance(v, str) else v for k, v in value.items()}
        return value

    @model_validator(mode="after")
    def _references(self) -> Runbook:
        problems: list[str] = []
        seen: dict[str, int] = {}
        for i, step in enumerate(self.steps):
            if step.id in seen:
                problems.append(
                    f"steps[{i}].id: '{step.id}' is already used by steps[{seen[step.id]}]"
                )
            if step.only_if_failed is not None and step.only_if_failed not in seen:
                problems.append(
                    f"steps[{i}].only_if_failed: no earlier step is named '{step.only_if_failed}'"
                )
            seen.setdefault(step.id, i)
        for name in self.inputs:
            if not VAR_NAME.match(name):
                problems.append(f"inputs.{name}: names are letters, digits and _")
        if problems:
            raise ValueError("\n".join(problems))
        return self


class LoadedRunbook(BaseModel):
    """A runbook with where it came from, and the steps of the configured variant."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    name: str
    source: str  # builtin | the user file's path
    path: Path
    sha256: str
    runbook: Runbook
    variant: str

    @property
    def steps(self) -> list[StepBase]:
        return [s for s in self.runbook.steps if s.variant is None or s.variant == self.variant]
