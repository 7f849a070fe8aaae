"""`python -m model_runtime router`: run the router until SIGTERM, then drain."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal

from model_runtime.settings import SettingsError, parse_settings

from .discovery import FileDiscovery, KubeDiscovery
from .metrics import RouterMetrics
from .proxy import Router
from .settings import RouterSettings
from .state import RouterState

log = logging.getLogger("model_runtime.router")


async def run(settings: RouterSettings) -> int:
    metrics = RouterMetrics(settings.namespace, settings.model_deployment, settings.latency_bounds)
    state = RouterState(metrics)
    router = Router(settings, state, metrics)
    await router.start()
    server = await router.serve(settings.host, settings.port)
    source = (
        FileDiscovery(settings.routing_file, state)
        if settings.routing_file
        else KubeDiscovery(
            settings.namespace, settings.model_deployment, settings.routing_configmap, settings.upstream_port, state
        )
    )
    discovery = asyncio.create_task(source.run())
    log.info("router listening on %s:%d", settings.host, settings.port)
    # The request path allocates short-lived objects only; collecting them every 700 allocations (the
    # default) puts millisecond pauses into the latency tail. Start-up objects are frozen out of the
    # collector's way and young collections made rarer; reference counting still frees almost everything.
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    router.draining = True
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(router.idle.wait(), timeout=settings.shutdown_timeout_seconds)
    discovery.cancel()
    server.close()
    await router.close()
    return 0


def main(argv: list[str]) -> int:
    try:
        settings = parse_settings(RouterSettings, argv, None, "python -m model_runtime router")
    except SettingsError as error:
        print(f"error: {error}")
        return 2
    with contextlib.suppress(ImportError):
        import uvloop

        uvloop.install()
    return asyncio.run(run(settings))
