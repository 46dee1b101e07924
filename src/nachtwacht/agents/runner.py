"""The agent process: `nachtwacht agent --server URL --token T` at another site (decision 25).

It fetches the probes of its token's location, runs them with the server's own `Scheduler`
and probe kinds (same retries, same cadence), and appends each result, numbered, to a local
spool (`spool.log.SpoolLog`, fsync'd) before anything else happens to it. A sender posts the
spool in order, a batch at a time, and moves its cursor (`sent.json`, written atomically) only
after the server answered with the sequence number it stored up to. So:

- the server down: results pile up in the spool and go, in order, when it is back;
- the agent killed (-9) anywhere: what was appended is in the spool; what was sent but not
  yet marked sent is sent again, and the server skips it by its sequence number;
- the probe list is kept in `probes.json`, so an agent restarted while the server is down
  still runs its probes.

The agent imports no web stack: aiohttp (the probes' client) talks to the server.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from nachtwacht import __version__
from nachtwacht.clock import Clock, SystemClock
from nachtwacht.probes import registry
from nachtwacht.probes.base import ProbeConfig
from nachtwacht.probes.context import ProbeContext
from nachtwacht.probes.scheduler import Scheduler
from nachtwacht.probes.service import ResultRow
from nachtwacht.probes.state import ProbeState, Transition
from nachtwacht.spool.log import Position, SpoolError, SpoolLog

if TYPE_CHECKING:
    import aiohttp

log = logging.getLogger("nachtwacht.agent")

KIND = "agent_result"
USER_AGENT = f"nachtwacht-agent/{__version__}"


@dataclass
class AgentOptions:
    server: str
    token: str
    directory: Path
    refresh: float = 10.0  # how often the probe list is asked for (also the agent's heartbeat)
    batch: int = 200  # results per POST
    # bytes of results per POST: under the server's default body limit (64 KiB) with one more
    # result of the largest size (a 500-character message) on top
    batch_bytes: int = 40 * 1024
    timeout: float = 10.0  # per request to the server
    max_backoff: float = 5.0  # between attempts while the server cannot be reached
    drain_timeout: float = 5.0  # on SIGTERM: how long to go on sending what is spooled
    max_spool_bytes: int = 256 << 20
    startup_spread: float = 5.0


# -- small durable files ------------------------------------------------------------------------


def write_atomically(path: Path, data: bytes) -> None:
    """Replace `path` with `data`: a crash leaves the old file or the new one, never half."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


@dataclass
class Cursor:
    """What the server has confirmed: the spool position and the sequence number up to it."""

    position: Position | None = None
    seq: int = 0

    @classmethod
    def load(cls, path: Path) -> Cursor:
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            return cls()
        pos = data.get("position")
        return cls((int(pos[0]), int(pos[1])) if pos else None, int(data.get("seq", 0)))

    def save(self, path: Path) -> None:
        body = {"position": list(self.position) if self.position else None, "seq": self.seq}
        write_atomically(path, json.dumps(body).encode())


# -- the scheduler's sink -----------------------------------------------------------------------


class SpoolSink:
    """Numbers each result and appends it to the spool (fsync'd) as the scheduler hands it over."""

    def __init__(self, spool: SpoolLog, next_seq: int) -> None:
        self.spool = spool
        self.next_seq = next_seq
        self.lost = 0  # results the spool refused (full, or the disk failing)
        self.waiting: asyncio.Event | None = None

    def add(self, row: ResultRow, state: ProbeState, transition: Transition | None) -> None:
        seq = self.next_seq
        payload = orjson.dumps(
            {
                "seq": seq,
                "probe_id": row.probe_id,
                "ts": row.ts,
                "status": row.status,
                "value": row.value,
                "latency_ms": row.latency_ms,
                "lag_ms": row.lag_ms,
                "message": (row.message or "")[:500] or None,
            }
        )
        try:
            self.spool.append(KIND, payload)
        except SpoolError as exc:
            self.lost += 1
            log.error("result of probe %d not kept: %s", row.probe_id, exc)
            return
        self.next_seq = seq + 1
        if self.waiting is not None:
            self.waiting.set()

    @property
    def appended(self) -> int:
        return self.next_seq - 1


def last_seq_in(spool: SpoolLog, after: Position | None) -> int:
    """The highest sequence number spooled after `after` (0: none)."""
    last = 0
    while True:
        records = spool.read(after, 5000)
        if not records:
            return last
        for record in records:
            last = max(last, int(orjson.loads(record.payload)["seq"]))
        after = records[-1].end


# -- the agent ----------------------------------------------------------------------------------


@dataclass
class Agent:
    options: AgentOptions
    clock: Clock = field(default_factory=SystemClock)

    def __post_init__(self) -> None:
        directory = self.options.directory
        directory.mkdir(parents=True, exist_ok=True)
        self.cursor_path = directory / "sent.json"
        self.probes_path = directory / "probes.json"
        self.status_path = directory / "agent.json"
        self.spool = SpoolLog(directory / "spool", max_bytes=self.options.max_spool_bytes)
        self.cursor = Cursor.load(self.cursor_path)
        last = max(self.cursor.seq, last_seq_in(self.spool, self.cursor.position))
        self.sink = SpoolSink(self.spool, last + 1)
        self.ctx = ProbeContext(clock=self.clock, store=None, data_dir=directory)
        self.scheduler: Scheduler | None = None
        self._scheduler_stop: asyncio.Event | None = None
        self._scheduler_task: asyncio.Task[None] | None = None
        self.etag: str | None = None
        self.server_ok: bool | None = None
        self.last_error: str | None = None
        self.sent_batches = 0

    # -- the server ----------------------------------------------------------------------------

    def _headers(self) -> dict[str, str]:
        return {
            "Authorization": f"Bearer {self.options.token}",
            "User-Agent": USER_AGENT,
            "X-Nachtwacht-Agent": __version__,
        }

    async def fetch_probes(self, http: aiohttp.ClientSession) -> bool:
        """Ask for the probe list; apply it when it changed. False: the server did not answer."""
        import aiohttp

        headers = self._headers()
        if self.etag:
            headers["If-None-Match"] = self.etag
        url = self.options.server.rstrip("/") + "/api/v1/agent/probes"
        try:
            async with http.get(url, headers=headers) as response:
                if response.status == 304:
                    return True
                if response.status != 200:
                    self._failed(f"GET probes: HTTP {response.status} {await _detail(response)}")
                    return False
                body = await response.json(loads=orjson.loads)
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            self._failed(f"GET probes: {exc.__class__.__name__}: {exc}")
            return False
        # a fresh spool directory for a location the server knows: carry on its numbering
        self.sink.next_seq = max(self.sink.next_seq, int(body.get("last_seq", 0)) + 1)
        self.etag = response.headers.get("ETag")
        await self.apply_probes(body["probes"])
        write_atomically(self.probes_path, orjson.dumps(body["probes"]))
        return True

    async def apply_probes(self, probes: list[dict[str, Any]]) -> None:
        from pydantic import TypeAdapter

        adapter: TypeAdapter[Any] = TypeAdapter(registry.config_union())
        configs: list[ProbeConfig] = []
        ids: dict[str, int] = {}
        for item in probes:
            try:
                cfg = adapter.validate_python(item["config"])
            except Exception as exc:  # a kind this agent's version does not know
                log.error("probe %s not run here: %s", item.get("config", {}).get("name"), exc)
                continue
            configs.append(cfg)
            ids[cfg.name] = int(item["id"])
        old = self.scheduler
        states = {}
        if old is not None:
            states = {pid: slot.state for pid, slot in old.slots.items()}
            await self._stop_scheduler()
        self.scheduler = Scheduler(
            configs, ids, states, self.ctx, self.sink, self.clock,
            startup_spread=self.options.startup_spread,
        )  # fmt: skip
        self._scheduler_stop = asyncio.Event()
        self._scheduler_task = asyncio.create_task(self.scheduler.loop(self._scheduler_stop))
        log.info("running %d probes: %s", len(configs), ", ".join(c.name for c in configs))

    async def _stop_scheduler(self) -> None:
        if self._scheduler_stop is not None:
            self._scheduler_stop.set()
        if self._scheduler_task is not None:
            await asyncio.gather(self._scheduler_task, return_exceptions=True)
        if self.scheduler is not None:
            await self.scheduler.close()
        self._scheduler_task = self._scheduler_stop = None

    async def send_once(self, http: aiohttp.ClientSession) -> int:
        """Post the oldest unsent batch; return how many results the server took (0: none
        waiting). Raises `Unsent` when the server did not take it."""
        import aiohttp

        records = self.spool.read(
            self.cursor.position, self.options.batch, self.options.batch_bytes
        )
        if not records:
            return 0
        results = [orjson.loads(r.payload) for r in records]
        body = orjson.dumps({"results": results, "version": __version__})
        url = self.options.server.rstrip("/") + "/api/v1/agent/results"
        headers = {**self._headers(), "Content-Type": "application/json"}
        try:
            async with http.post(url, data=body, headers=headers) as response:
                if response.status == 413 and len(records) > 1:
                    # a server with a smaller body limit: send less at a time from now on
                    self.options.batch = max(1, len(records) // 2)
                    self.options.batch_bytes = max(1024, self.options.batch_bytes // 2)
                    raise Unsent(f"POST results: batch too large; sending {self.options.batch}")
                if response.status == 422:
                    # the server will never take this batch (a result a week old, a bad field):
                    # keeping it would stop every later result behind it
                    log.error("server refused %d results for good: %s", len(records),
                              await _detail(response))  # fmt: skip
                    answer = {"last_seq": results[-1]["seq"]}
                elif response.status != 200:
                    raise Unsent(f"POST results: HTTP {response.status} {await _detail(response)}")
                else:
                    answer = await response.json(loads=orjson.loads)
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            raise Unsent(f"POST results: {exc.__class__.__name__}: {exc}") from exc
        self.cursor = Cursor(records[-1].end, max(int(answer["last_seq"]), results[-1]["seq"]))
        self.cursor.save(self.cursor_path)
        self.spool.trim(records[-1].end)
        self.sent_batches += 1
        refused = int(answer.get("refused", 0) or 0)
        if refused:
            log.warning("server refused %d results: their probes are not at this location", refused)
        return len(records)

    def _failed(self, why: str) -> None:
        if self.server_ok is not False or why != self.last_error:
            log.warning("server unreachable or refusing: %s", why)
        self.server_ok = False
        self.last_error = why

    def status(self) -> dict[str, Any]:
        return {
            "server": self.options.server,
            "server_ok": self.server_ok,
            "last_error": self.last_error,
            "appended_seq": self.sink.appended,
            "sent_seq": self.cursor.seq,
            "unsent_bytes": self.spool.backlog(self.cursor.position),
            "lost": self.sink.lost,
            "probes": sorted(self.scheduler.by_name) if self.scheduler else [],
        }

    def write_status(self) -> None:
        with contextlib.suppress(OSError):
            write_atomically(self.status_path, orjson.dumps(self.status()))

    # -- loops ---------------------------------------------------------------------------------

    async def fetch_loop(self, http: aiohttp.ClientSession, stop: asyncio.Event) -> None:
        while not stop.is_set():
            if await self.fetch_probes(http):
                self.server_ok = True
            await _wait(stop, self.options.refresh)

    async def send_loop(self, http: aiohttp.ClientSession, stop: asyncio.Event) -> None:
        backoff = 0.5
        waiting = self.sink.waiting = asyncio.Event()
        while not stop.is_set():
            waiting.clear()
            try:
                sent = await self.send_once(http)
            except Unsent as exc:
                self._failed(str(exc))
                self.write_status()
                await _wait(stop, backoff)
                backoff = min(self.options.max_backoff, backoff * 2)
                continue
            if sent:
                backoff = 0.5
                if self.server_ok is False:
                    log.info("server reachable again; sending what was spooled")
                self.server_ok = True
                self.write_status()
                continue  # more may be waiting
            self.write_status()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(1.0):
                    stopper = asyncio.ensure_future(stop.wait())
                    waiter = asyncio.ensure_future(waiting.wait())
                    try:
                        await asyncio.wait({stopper, waiter}, return_when=asyncio.FIRST_COMPLETED)
                    finally:
                        stopper.cancel()
                        waiter.cancel()

    async def run(self, stop: asyncio.Event) -> None:
        import aiohttp

        timeout = aiohttp.ClientTimeout(total=self.options.timeout)
        async with aiohttp.ClientSession(timeout=timeout, trust_env=False) as http:
            if not await self.fetch_probes(http) and self.probes_path.exists():
                log.warning("server unreachable at start: running the probes it last gave")
                await self.apply_probes(orjson.loads(self.probes_path.read_bytes()))
            tasks = [
                asyncio.create_task(self.fetch_loop(http, stop), name="agent-fetch"),
                asyncio.create_task(self.send_loop(http, stop), name="agent-send"),
            ]
            await stop.wait()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await self._stop_scheduler()
            await self._drain(http)
        await self.ctx.close()
        self.write_status()
        self.spool.close()

    async def _drain(self, http: aiohttp.ClientSession) -> None:
        """On the way out: send what is spooled, for at most `drain_timeout`."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.options.drain_timeout):
                while True:
                    try:
                        if not await self.send_once(http):
                            return
                    except Unsent as exc:
                        log.warning("stopping with results unsent (sent at the next start): %s",
                                    exc)  # fmt: skip
                        return


class Unsent(Exception):
    """The server did not take a batch; it stays in the spool."""


async def _detail(response: Any) -> str:
    with contextlib.suppress(Exception):
        return (await response.text())[:200]
    return ""


async def _wait(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            await stop.wait()
