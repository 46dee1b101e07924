"""Config models for maintenance windows."""

from __future__ import annotations

import re
from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field, model_validator

RECURRING = re.compile(
    r"^(daily|(mon|tue|wed|thu|fri|sat|sun)(,(mon|tue|wed|thu|fri|sat|sun))*) "
    r"([01]\d|2[0-3]):([0-5]\d)-([01]\d|2[0-4]):([0-5]\d)$"
)


class Window(BaseModel):
    """A maintenance window: one-off (`start`/`end`) or recurring (`every`), always with an end.

    `every` is `daily HH:MM-HH:MM` or days such as `sun 02:00-04:00` / `sat,sun 01:00-05:00`, in
    the site's timezone; an end before the start means the window runs past midnight.
    Empty `components` and `probes` mean the whole site.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1)
    start: datetime | None = None
    end: datetime | None = None
    every: str | None = None
    components: list[str] = Field(default_factory=list)
    probes: list[str] = Field(default_factory=list)
    comment: str = ""

    @model_validator(mode="after")
    def _shape(self) -> Window:
        if self.every is not None:
            if not RECURRING.match(self.every):
                raise ValueError(
                    f"every '{self.every}' must look like 'sun 02:00-04:00' or 'daily 01:00-02:00'"
                )
            if self.start is not None or self.end is not None:
                raise ValueError("a recurring window (every) takes no start/end")
        else:
            if self.start is None or self.end is None:
                raise ValueError("a one-off window needs both start and end (windows always end)")
            if self.end <= self.start:
                raise ValueError("end must be after start")
        return self
