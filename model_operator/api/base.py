"""The base every API model shares: camelCase on the wire, unknown fields refused, docstrings as docs."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict
from pydantic.alias_generators import to_camel


def cel(rule: str, message: str, field_path: str | None = None) -> dict[str, str]:
    """One `x-kubernetes-validations` entry; the API server returns `message` when `rule` is false."""
    entry = {"rule": rule, "message": message}
    if field_path:
        entry["fieldPath"] = field_path
    return entry


def cel_rules(*rules: dict[str, str]) -> dict[str, Any]:
    """The json_schema_extra that carries CEL rules into the generated CRD."""
    return {"x-kubernetes-validations": list(rules)}


class ApiModel(BaseModel):
    """A part of the ModelDeployment resource."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        frozen=True,
        use_attribute_docstrings=True,
    )

    def to_api(self) -> dict[str, Any]:
        """The wire form: camelCase keys, no unset optional fields."""
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")
