"""kopf wiring: every ModelDeployment watch event feeds its reconcile loop; Deployment events of its
children wake it. No daemons or timers: those make kopf put a finalizer on every resource, which blocks
deletion whenever the operator is not running (after an uninstall, say)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import struct
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import kopf
from kubernetes import client, config
from kubernetes.utils.keepalive import tcp_keepalive_socket_options

from . import metrics
from .api.resource import GROUP, PLURAL, VERSION
from .kube import Kube
from .leadership import LEASE_THREADS, Leadership
from .lease_store import KubernetesLeaseStore
from .naming import LABEL_MODEL_DEPLOYMENT
from .reconciler import Operator
from .settings import OperatorSettings, load_settings

log = logging.getLogger("model_operator")


def _identity() -> str:
    """The pod's name, and a part unique to this process: a restarted container is a new candidate."""
    return f"{socket.gethostname()}_{uuid.uuid4().hex[:8]}"


def _api_client(identity: str, connections: int) -> Any:
    """A client whose requests name this replica in the User-Agent (so the API server's audit log says which
    replica wrote what), and whose connections are reset, not drained, when the process exits: a request
    still queued in the kernel of a replica that lost the Lease must not reach the API server later."""
    configuration = client.Configuration()
    try:
        config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
    except config.ConfigException:
        config.load_kube_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
    configuration.socket_options = [
        *tcp_keepalive_socket_options(),
        (socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)),
    ]
    configuration.connection_pool_maxsize = connections  # one per worker thread, kept between calls
    api_client = client.ApiClient(configuration)
    api_client.user_agent = f"modelship-operator ({identity})"
    return api_client


def _leadership(settings: OperatorSettings, api_client: Any, identity: str) -> Leadership:
    store = KubernetesLeaseStore(api_client, settings.lease_namespace, settings.lease_name)
    return Leadership(store, identity, settings.lease_timing())


def _stop_acting() -> None:
    """A leader that could not renew its Lease in time exits at once: no thread of it may write again, and
    the restarted container comes back as a standby."""
    log.error("exiting: this replica no longer holds the lease")
    logging.shutdown()
    os._exit(1)


@kopf.on.startup()
async def startup(settings: kopf.OperatorSettings, memo: Any, **_: Any) -> None:
    # Every write goes through the leadership fence; kopf's own event posting would bypass it.
    settings.posting.enabled = False
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    operator_settings = load_settings()
    asyncio.get_running_loop().set_default_executor(
        ThreadPoolExecutor(max_workers=operator_settings.api_workers, thread_name_prefix="reconcile")
    )
    identity = _identity()
    # one pooled connection per thread that calls the API: the reconcile workers and the Lease's own
    api_client = _api_client(identity, operator_settings.api_workers + LEASE_THREADS)
    metrics.serve(operator_settings.metrics_port, operator_settings.metrics_host)
    if not operator_settings.leader_election:
        memo["operator"] = Operator(operator_settings, Kube(api_client))
        metrics.LEADER.set(1)
        return
    leadership = _leadership(operator_settings, api_client, identity)
    operator = Operator(operator_settings, Kube(api_client, may_write=leadership.holds), leading=False)
    memo["operator"], memo["leadership"] = operator, leadership
    log.info(
        "standing by for lease %s/%s as %s",
        operator_settings.lease_namespace,
        operator_settings.lease_name,
        leadership.identity,
    )

    async def lead() -> None:
        metrics.LEADER.set(1)
        operator.start_leading()

    memo["campaign"] = asyncio.create_task(leadership.run(lead, _stop_acting), name="leader-election")


@kopf.on.event(GROUP, VERSION, PLURAL)
async def model_deployment_event(event: kopf.RawEvent, body: kopf.Body, memo: Any, **_: Any) -> None:
    memo["operator"].observe(event.get("type"), dict(body))


@kopf.on.event("apps", "v1", "deployments", labels={LABEL_MODEL_DEPLOYMENT: kopf.PRESENT})
async def child_event(event: kopf.RawEvent, body: kopf.Body, memo: Any, **_: Any) -> None:
    labels = body.get("metadata", {}).get("labels", {})
    memo["operator"].child_changed(
        body["metadata"]["namespace"], labels[LABEL_MODEL_DEPLOYMENT], event.get("type"), dict(body)
    )


@kopf.on.cleanup()
async def cleanup(memo: Any, **_: Any) -> None:
    campaign = memo.get("campaign")
    if campaign is not None:
        campaign.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await campaign
    await memo["operator"].stop()
    if memo.get("leadership") is not None:
        await asyncio.to_thread(memo["leadership"].release)
