"""The serving process: listen at once (liveness), load and warm up in the background (readiness), and on
SIGTERM turn unready, refuse new work, let running requests finish, and exit within the shutdown timeout."""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
import time

import torch
from aiohttp import web

from . import kvbudget
from .dataplane import DataPlane
from .engine import EmbeddingEngine, EmbeddingWork, Engine, Finished, GenerationEngine, GenerationWork
from .metrics import RuntimeMetrics
from .model import LoadedModel, detect_placement, load
from .sampling import SamplingParams
from .server import Server
from .settings import RuntimeSettings

log = logging.getLogger("model_runtime")


def build_engine(settings: RuntimeSettings, loaded: LoadedModel, metrics: RuntimeMetrics) -> Engine:
    if settings.task != "text-generation":
        return EmbeddingEngine(loaded, settings.max_batch_size, settings.max_batch_wait_ms, metrics)
    capacity = settings.kv_cache_tokens or kv_capacity(loaded)
    metrics.kv_capacity(capacity)
    log.info("KV cache budget: %d tokens", capacity)
    return GenerationEngine(loaded, settings.max_batch_size, settings.max_batch_wait_ms, metrics, capacity)


def kv_capacity(loaded: LoadedModel) -> int:
    """Tokens of KV cache the memory left beside the loaded model holds (kvbudget)."""
    per_token = kvbudget.bytes_per_token(loaded.model.config, loaded.placement.dtype.itemsize)
    limit = kvbudget.memory_limit_bytes()
    return kvbudget.derive_tokens(limit, kvbudget.available_bytes(), kvbudget.resident_bytes(), per_token)


def warm_up(engine: Engine, loaded: LoadedModel, timeout: float = 300.0) -> None:
    """One real pass through the engine, so the first user request does not pay for lazy initialisation."""
    done = threading.Event()
    outcome: list[object] = []

    def sink(event: object) -> None:
        if isinstance(event, Finished) or not hasattr(event, "token_id"):
            outcome.append(event)
            done.set()

    ids = list(loaded.tokenizer.encode("Hello, world")) or [0]
    deadline = time.monotonic() + timeout
    if isinstance(engine, GenerationEngine):
        engine.submit(
            GenerationWork(
                sink=sink, deadline=deadline, prompt_ids=ids, params=SamplingParams(max_new_tokens=2, temperature=0.0)
            )
        )
    else:
        engine.submit(EmbeddingWork(sink=sink, deadline=deadline, token_ids=[ids]))
    if not done.wait(timeout) or not isinstance(outcome[0], Finished):
        raise RuntimeError(f"warm-up failed: {outcome[0] if outcome else 'no answer'}")


def load_and_start(settings: RuntimeSettings, dataplane: DataPlane) -> None:
    """Runs in a thread: load, start the engine, warm up, then become ready."""
    if settings.threads:
        torch.set_num_threads(settings.threads)
    started = time.monotonic()
    placement = detect_placement(settings.device, settings.dtype, settings.task)
    loaded = load(settings.model_path, settings.task, placement)
    engine = build_engine(settings, loaded, dataplane.metrics)
    engine.start()
    dataplane.attach(loaded, engine)
    warm_up(engine, loaded)
    if settings.fault_warmup_seconds:
        log.warning(
            "fault injection: warming up %.0fs longer (MODELSHIP_FAULT_WARMUP_SECONDS)", settings.fault_warmup_seconds
        )
        time.sleep(settings.fault_warmup_seconds)
    if settings.fault_never_ready:
        log.warning("fault injection: this pod will never report ready (MODELSHIP_FAULT_NEVER_READY)")
        return
    dataplane.admission.ready = True
    dataplane.metrics.ready(True)
    log.info("ready in %.1fs", time.monotonic() - started)


async def serve(settings: RuntimeSettings) -> int:
    metrics = RuntimeMetrics(settings.namespace, settings.model_deployment, settings.revision, settings.latency_bounds)
    dataplane = DataPlane(settings, metrics)
    metrics.ready(False)
    # handler_cancellation: a client that hangs up cancels its handler, and so its sequence in the engine.
    runner = web.AppRunner(Server(dataplane).app(), access_log=None, handle_signals=False, handler_cancellation=True)
    await runner.setup()
    site = web.TCPSite(runner, settings.host, settings.port, shutdown_timeout=settings.shutdown_timeout_seconds)
    await site.start()
    log.info("listening on %s:%d (model %s, task %s)", settings.host, settings.port, settings.model_name, settings.task)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loading: asyncio.Future[object] = loop.run_in_executor(None, load_and_start, settings, dataplane)
    stopped: asyncio.Future[object] = asyncio.ensure_future(stop.wait())
    done, _ = await asyncio.wait([loading, stopped], return_when=asyncio.FIRST_COMPLETED)
    if loading in done and loading.exception() is not None:
        log.error("could not start serving: %s", loading.exception())
        await runner.cleanup()
        return 1
    await stopped
    return await drain(dataplane, runner, settings.shutdown_timeout_seconds)


async def drain(dataplane: DataPlane, runner: web.AppRunner, timeout: float) -> int:  # noqa: ASYNC109
    """Readiness goes 503 and new requests get 503 at once; running ones get up to `timeout` to finish."""
    admission = dataplane.admission
    admission.draining = True
    dataplane.metrics.ready(False)
    log.info("draining: %d requests in flight, waiting up to %.0fs", admission.in_flight, timeout)
    try:
        await asyncio.wait_for(admission.idle.wait(), timeout=timeout)
        code = 0
    except TimeoutError:
        log.warning("shutdown timeout: %d requests still running are cut off", admission.in_flight)
        code = 0
    if dataplane.engine is not None:
        dataplane.engine.stop(timeout=5)
    await runner.cleanup()
    log.info("stopped")
    return code
