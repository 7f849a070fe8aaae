"""Choosing where a request goes: the track (by weight, or pinned by a sticky header) and the pod within
it (round robin over ready endpoints, skipping ones that recently failed to answer)."""

from __future__ import annotations

import hashlib
import itertools
import random
import time
from dataclasses import dataclass, field

from .config import RoutingConfig

EJECT_SECONDS = 5.0


@dataclass(frozen=True)
class Endpoint:
    address: str  # host:port
    revision: str


def sticky_bucket(value: str) -> int:
    """0-99, stable for a header value across router replicas and restarts."""
    return int.from_bytes(hashlib.blake2b(value.encode(), digest_size=4).digest(), "big") % 100


def choose_track(config: RoutingConfig, sticky_value: str | None, draw: float) -> str:
    """`draw` is uniform in [0, 100); a sticky value replaces it with its fixed bucket."""
    canary = config.canary_weight
    point = sticky_bucket(sticky_value) if sticky_value else draw
    return "canary" if point < canary else "stable"


@dataclass
class Pool:
    """The ready endpoints of one revision, in rotation."""

    endpoints: tuple[Endpoint, ...] = ()
    ejected: dict[str, float] = field(default_factory=dict)
    _turn: itertools.count[int] = field(default_factory=itertools.count)

    def pick(self, avoid: frozenset[str] = frozenset()) -> Endpoint | None:
        if not self.endpoints:
            return None
        now = time.monotonic()
        healthy = [e for e in self.endpoints if self.ejected.get(e.address, 0.0) <= now and e.address not in avoid]
        candidates = healthy or [e for e in self.endpoints if e.address not in avoid]
        if not candidates:
            return None
        return candidates[next(self._turn) % len(candidates)]

    def eject(self, address: str) -> None:
        """A pod that did not answer leaves rotation for a while, before the API says it is gone."""
        self.ejected[address] = time.monotonic() + EJECT_SECONDS


def uniform_draw() -> float:
    return random.random() * 100
