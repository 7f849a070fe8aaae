"""Read a value out of a Prometheus text exposition, so metric assertions check numbers, not HELP lines."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families


def sample(text: str, name: str, **labels: str) -> float | None:
    """The value of the one sample named `name` whose labels include `labels`; None when there is none."""
    found = [
        s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
    ]
    if len(found) > 1:
        raise AssertionError(f"{len(found)} samples of {name} match {labels}; name more labels")
    return found[0] if found else None
