"""Helpers to run the runtime's HTTP app in-process against the tiny model."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

from aiohttp.test_utils import TestClient, TestServer

from model_runtime.app import build_engine
from model_runtime.dataplane import DataPlane
from model_runtime.metrics import RuntimeMetrics
from model_runtime.server import Server
from model_runtime.settings import RuntimeSettings


def settings(**overrides: Any) -> RuntimeSettings:
    base: dict[str, Any] = {"model_path": "/unused", "namespace": "ns", "model_deployment": "md", "revision": "r1"}
    return RuntimeSettings.model_validate(base | overrides)


@contextlib.asynccontextmanager
async def running_app(
    loaded: Any, ready: bool = True, **overrides: Any
) -> AsyncIterator[tuple[TestClient[Any, Any], DataPlane]]:
    config = settings(**overrides)
    metrics = RuntimeMetrics(config.namespace, config.model_deployment, config.revision)
    dataplane = DataPlane(config, metrics)
    engine = build_engine(config, loaded, metrics)
    engine.start()
    dataplane.attach(loaded, engine)
    dataplane.admission.ready = ready
    client = TestClient(TestServer(Server(dataplane).app()))
    await client.start_server()
    try:
        yield client, dataplane
    finally:
        await client.close()
        engine.stop()
