"""The routing config the operator writes (model_runtime.contract.RoutingConfig), validated. A config
that does not validate is refused whole: the router keeps routing by the last good one."""

from __future__ import annotations

import json

from pydantic import ValidationError

from model_runtime.contract import RoutingConfig


class RoutingError(ValueError):
    """The routing config cannot be used; the message says why."""


def parse_routing(text: str | bytes | None) -> RoutingConfig:
    if not text:
        raise RoutingError("the routing config is empty")
    try:
        document = json.loads(text)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise RoutingError(f"the routing config is not valid JSON: {error}") from None
    try:
        return RoutingConfig.model_validate(document)
    except ValidationError as error:
        first = error.errors(include_url=False)[0]
        where = ".".join(str(p) for p in first["loc"])
        raise RoutingError(f"invalid routing config: {where + ': ' if where else ''}{first['msg']}") from None


def check_revisions(config: RoutingConfig, known: set[str]) -> None:
    """A track with weight must name a revision whose pods exist; otherwise requests would go nowhere."""
    for track in config.tracks:
        if track.weight > 0 and track.revision not in known:
            raise RoutingError(f"the {track.name} track names revision {track.revision}, which has no pods")


__all__ = ["RoutingConfig", "RoutingError", "check_revisions", "parse_routing"]
