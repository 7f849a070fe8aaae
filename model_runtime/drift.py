"""Input drift: how far the prompts of the last N requests moved from a reference window.

Method: each prompt's tokens are hashed into 256 buckets; the reference window is the first N prompts the
pod serves, the current window a sliding one over the last N. The score is the Jensen-Shannon divergence
(base 2, so 0..1) between the two bucket histograms. JS is symmetric, bounded and defined when a bucket is
empty on one side (KL is not); hashing keeps the cost per prompt O(tokens) and the memory fixed whatever
the vocabulary; token identity (not length) is what shifts when users start asking about something else
or a client starts sending another language. Under a random traffic split input drift reaches stable and
canary alike, so the rollout engine does not gate on it; it is exported for alerting.
"""

from __future__ import annotations

import math
import threading
from collections import deque

BUCKETS = 256


def _bucket(token: int) -> int:
    # A multiplicative hash spreads consecutive token ids (common in BPE vocabularies) over the buckets.
    return (token * 2654435761) % (2**32) % BUCKETS


def histogram(prompts: list[list[int]]) -> list[float]:
    counts = [0.0] * BUCKETS
    for prompt in prompts:
        for token in prompt:
            counts[_bucket(token)] += 1
    total = sum(counts)
    return [c / total for c in counts] if total else counts


def jensen_shannon(p: list[float], q: list[float]) -> float:
    """Jensen-Shannon divergence in bits (0 identical, 1 disjoint)."""

    def kl(a: list[float], m: list[float]) -> float:
        return sum(x * math.log2(x / y) for x, y in zip(a, m, strict=True) if x > 0)

    m = [(x + y) / 2 for x, y in zip(p, q, strict=True)]
    return max(0.0, min(1.0, (kl(p, m) + kl(q, m)) / 2))


class DriftMonitor:
    """Thread-safe: `observe` per prompt, `score` whenever metrics are scraped."""

    def __init__(self, window: int) -> None:
        self.window = window
        self._reference: list[list[int]] = []
        self._recent: deque[list[int]] = deque(maxlen=window)
        self._lock = threading.Lock()
        self._reference_histogram: list[float] | None = None

    def observe(self, prompt_ids: list[int]) -> None:
        with self._lock:
            if len(self._reference) < self.window:
                self._reference.append(list(prompt_ids))
                if len(self._reference) == self.window:
                    self._reference_histogram = histogram(self._reference)
                return
            self._recent.append(list(prompt_ids))

    def score(self) -> float | None:
        """None until both windows are full: a half window would report sampling noise as drift."""
        with self._lock:
            if self._reference_histogram is None or len(self._recent) < self.window:
                return None
            return jensen_shannon(self._reference_histogram, histogram(list(self._recent)))
