"""Read a value out of a Prometheus text exposition, so metric assertions check numbers, not HELP lines;
and read the selectors out of the analysis' PromQL, to hold them to what a server really exports."""

from __future__ import annotations

import re

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


def exported_series(text: str) -> dict[str, list[dict[str, str]]]:
    """The label sets of every sample in an exposition, by sample name."""
    series: dict[str, list[dict[str, str]]] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            series.setdefault(s.name, []).append(dict(s.labels))
    return series


def selectors(query: str) -> list[tuple[str, dict[str, str]]]:
    """(metric, {label: matcher value}) for every selector in a PromQL query (= and =~ matchers)."""
    found = []
    for metric, body in re.findall(r"([a-zA-Z_:][a-zA-Z0-9_:]*)\{([^}]*)\}", query):
        labels = dict(re.findall(r'([a-zA-Z_][a-zA-Z0-9_]*)=~?"([^"]*)"', body))
        found.append((metric, labels))
    return found


def matches(labels: dict[str, str], matchers: dict[str, str]) -> bool:
    return all(re.fullmatch(pattern, labels.get(name, "")) for name, pattern in matchers.items())


def selected_total(
    text: str, query: str, extra_labels: dict[str, str] | None = None, only: dict[str, str] | None = None
) -> float:
    """What the one selector of a `sum(increase(...))` query adds up in an exposition: the sum of the
    samples it matches, with `extra_labels` on every sample (as Prometheus' relabelling adds them) and
    `only` as further matchers (`le` for one bucket of a histogram)."""
    ((metric, matchers),) = selectors(query)
    wanted = {**matchers, **{name: re.escape(value) for name, value in (only or {}).items()}}
    return sum(
        s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == metric and matches({**s.labels, **(extra_labels or {})}, wanted)
    )
