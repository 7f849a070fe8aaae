"""The routing config the operator writes (ConfigMap NAME-routing, key routing.json), validated. A config
that does not validate is refused whole: the router keeps routing by the last good one."""

from __future__ import annotations

import json
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator


class RoutingError(ValueError):
    """The routing config cannot be used; the message says why."""


class Track(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    name: Literal["stable", "canary"]
    revision: str = Field(min_length=1, max_length=63)
    weight: int = Field(ge=0, le=100)


class RoutingConfig(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True, populate_by_name=True)

    version: Literal[1] = 1
    tracks: tuple[Track, ...] = Field(min_length=1, max_length=2)
    mirror_percent: float = Field(default=0.0, ge=0, le=100, alias="mirrorPercent")
    sticky_header: str | None = Field(default=None, alias="stickyHeader")
    task: Literal["text-generation", "embeddings"] = "text-generation"

    @model_validator(mode="after")
    def _consistent(self) -> RoutingConfig:
        names = [t.name for t in self.tracks]
        if len(set(names)) != len(names):
            raise ValueError("each track may appear once")
        if "stable" not in names:
            raise ValueError("a stable track is required")
        if sum(t.weight for t in self.tracks) != 100:
            raise ValueError(f"track weights must add up to 100, got {sum(t.weight for t in self.tracks)}")
        return self

    def track(self, name: str) -> Track | None:
        return next((t for t in self.tracks if t.name == name), None)

    @property
    def canary_weight(self) -> int:
        canary = self.track("canary")
        return canary.weight if canary else 0


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
