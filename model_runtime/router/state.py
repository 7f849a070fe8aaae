"""What the router knows: the routing config in force and the ready pods of each revision. Updated by a
discovery source; read on every request. A config is applied whole or not at all."""

from __future__ import annotations

import logging

from .config import RoutingConfig, RoutingError, check_revisions, parse_routing
from .metrics import RouterMetrics
from .split import Endpoint, Pool

log = logging.getLogger("model_runtime.router")


class RouterState:
    def __init__(self, metrics: RouterMetrics) -> None:
        self.metrics = metrics
        self.config: RoutingConfig | None = None
        self.pools: dict[str, Pool] = {}
        self.known_revisions: set[str] = set()
        self._pending: str | None = None  # the newest text, kept to retry when pods appear
        self._pods_listed = False  # before the first pod listing every revision looks unknown

    def offer_config(self, text: str | None) -> None:
        """A new routing config from the source: applied if valid, else the last good one stays."""
        self._pending = text
        self._try_pending()

    def set_endpoints(self, ready: dict[str, list[str]], known: set[str]) -> None:
        """Ready addresses per revision, and every revision that has pods at all."""
        self.known_revisions = set(known)
        self._pods_listed = True
        for revision, addresses in ready.items():
            pool = self.pools.setdefault(revision, Pool())
            pool.endpoints = tuple(Endpoint(address, revision) for address in sorted(addresses))
        for revision in list(self.pools):
            if revision not in ready:
                self.pools[revision].endpoints = ()
        for revision in known | set(ready):
            self.metrics.endpoints.labels(*self.metrics.identity, revision).set(len(ready.get(revision, [])))
        if self._pending is not None:
            self._try_pending(quiet=True)

    def _try_pending(self, quiet: bool = False) -> None:
        text = self._pending
        try:
            config = parse_routing(text)
            check_revisions(config, self.known_revisions)
        except RoutingError as error:
            self.metrics.config_valid.labels(*self.metrics.identity).set(0)
            if not quiet and self._pods_listed:
                self.metrics.config_errors.labels(*self.metrics.identity).inc()
                log.warning("routing config refused, keeping the last good one (%s): %s", self.describe(), error)
            return
        if config != self.config:
            log.info("routing: %s", ", ".join(f"{t.name} {t.revision} {t.weight}%" for t in config.tracks))
        self.config = config
        self._pending = None
        self.metrics.config_valid.labels(*self.metrics.identity).set(1)
        self.metrics.weight.clear()
        for track in config.tracks:
            self.metrics.weight.labels(*self.metrics.identity, track.name, track.revision).set(track.weight)

    def describe(self) -> str:
        if self.config is None:
            return "no routing yet"
        return ", ".join(f"{t.name} {t.revision} {t.weight}%" for t in self.config.tracks)

    def pool(self, track: str) -> tuple[Pool | None, str]:
        if self.config is None:
            return None, ""
        chosen = self.config.track(track)
        if chosen is None:
            return None, ""
        return self.pools.get(chosen.revision), chosen.revision
