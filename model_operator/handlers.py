"""kopf wiring: every ModelDeployment watch event feeds its reconcile loop; Deployment events of its
children wake it. No daemons or timers: those make kopf put a finalizer on every resource, which blocks
deletion whenever the operator is not running (after an uninstall, say)."""

from __future__ import annotations

import logging
from typing import Any

import kopf
from kubernetes import client, config

from . import metrics
from .api.resource import GROUP, PLURAL, VERSION
from .kube import Kube
from .naming import LABEL_MODEL_DEPLOYMENT
from .reconciler import Operator
from .settings import load_settings


def _api_client() -> Any:
    try:
        config.load_incluster_config()  # type: ignore[no-untyped-call]
        return client.ApiClient()
    except config.ConfigException:
        return config.new_client_from_config()  # type: ignore[no-untyped-call]


@kopf.on.startup()
async def startup(settings: kopf.OperatorSettings, memo: Any, **_: Any) -> None:
    settings.posting.level = logging.WARNING  # kopf's own log lines become Events only when they matter
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    operator_settings = load_settings()
    memo["operator"] = Operator(operator_settings, Kube(_api_client()))
    metrics.serve(operator_settings.metrics_port, operator_settings.metrics_host)


@kopf.on.event(GROUP, VERSION, PLURAL)
async def model_deployment_event(event: kopf.RawEvent, body: kopf.Body, memo: Any, **_: Any) -> None:
    memo["operator"].observe(event.get("type"), dict(body))


@kopf.on.event("apps", "v1", "deployments", labels={LABEL_MODEL_DEPLOYMENT: kopf.PRESENT})
async def child_event(body: kopf.Body, memo: Any, **_: Any) -> None:
    labels = body.get("metadata", {}).get("labels", {})
    memo["operator"].poke(body["metadata"]["namespace"], labels[LABEL_MODEL_DEPLOYMENT])


@kopf.on.cleanup()
async def cleanup(memo: Any, **_: Any) -> None:
    await memo["operator"].stop()
