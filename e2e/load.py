"""A load generator for the end-to-end scenarios: steady requests to pod addresses, with every answer
recorded (status, latency, serving revision). Bounded in count and time; loopback addresses, or any address
from inside a cluster's own network namespace (which has no way out), only."""

from __future__ import annotations

import asyncio
import ipaddress
import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from e2e.cluster.namespaces import in_cluster_network

MAX_REQUESTS = 200_000
MAX_SECONDS = 1800.0


@dataclass
class Result:
    at: float
    status: int  # 0 when the connection failed
    seconds: float
    revision: str
    error: str = ""


@dataclass
class LoadReport:
    results: list[Result] = field(default_factory=list)

    @property
    def failures(self) -> list[Result]:
        return [r for r in self.results if r.status != 200]

    def revisions(self, since: float = 0.0) -> Counter[str]:
        return Counter(r.revision for r in self.results if r.at >= since and r.status == 200)

    def describe(self) -> str:
        codes = Counter(r.status for r in self.results)
        return f"{len(self.results)} requests, codes {dict(codes)}, revisions {dict(self.revisions())}"


def _contained(url: str) -> None:
    host = url.split("//", 1)[1].split("/", 1)[0].rsplit(":", 1)[0]
    if not (ipaddress.ip_address(host).is_loopback or in_cluster_network()):
        raise ValueError(
            f"load tests only send traffic to 127.0.0.0/8 or inside a local cluster's network namespace, not {host}"
        )


class LoadGenerator:
    """Runs in its own thread and event loop; `targets()` returns the base URLs to spread requests over
    (re-read every second, as kube-proxy would follow endpoints)."""

    def __init__(
        self,
        targets: Callable[[], list[str]],
        rate: float = 20.0,
        concurrency: int = 8,
        body: dict[str, Any] | None = None,
        timeout: float = 30.0,
        max_seconds: float = 600.0,
        path: str = "/v1/completions",
    ) -> None:
        self.targets = targets
        self.path = path
        self.rate = rate
        self.concurrency = concurrency
        self.body = body or {"model": "tiny", "prompt": "hello world", "max_tokens": 4, "temperature": 0}
        self.timeout = timeout
        self.max_seconds = min(max_seconds, MAX_SECONDS)
        self.report = LoadReport()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True, name="load")

    def __enter__(self) -> LoadGenerator:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> LoadReport:
        self._stop.set()
        self._thread.join(timeout=self.timeout + 5)
        return self.report

    async def _main(self) -> None:
        started = time.monotonic()
        current: list[str] = []
        refreshed = 0.0
        gate = asyncio.Semaphore(self.concurrency)
        tasks: set[asyncio.Task[None]] = set()
        timeout = aiohttp.ClientTimeout(total=self.timeout)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            sent = 0
            while not self._stop.is_set() and sent < MAX_REQUESTS and time.monotonic() - started < self.max_seconds:
                if time.monotonic() - refreshed > 1.0:
                    fresh = await asyncio.to_thread(self.targets)
                    for url in fresh:
                        _contained(url)
                    current, refreshed = fresh or current, time.monotonic()
                if current:
                    await gate.acquire()
                    task = asyncio.create_task(self._one(session, random.choice(current), gate))
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)
                    sent += 1
                await asyncio.sleep(1.0 / self.rate)
            if tasks:
                await asyncio.wait(tasks, timeout=self.timeout)

    async def _one(self, session: aiohttp.ClientSession, base: str, gate: asyncio.Semaphore) -> None:
        began = time.monotonic()
        try:
            async with session.post(f"{base}{self.path}", json=self.body) as response:
                await response.read()
                self.report.results.append(
                    Result(
                        time.time(),
                        response.status,
                        time.monotonic() - began,
                        response.headers.get("x-modelship-revision", ""),
                    )
                )
        except (aiohttp.ClientError, TimeoutError) as error:
            self.report.results.append(Result(time.time(), 0, time.monotonic() - began, "", repr(error)))
        finally:
            gate.release()
