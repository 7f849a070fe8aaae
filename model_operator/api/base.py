"""The base every API model shares: camelCase on the wire, unknown fields refused, docstrings as docs,
and no type coercion the API server would refuse."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict
from pydantic.alias_generators import to_camel

from model_runtime.integers import Integer, whole_number

__all__ = ["INT64_MAX", "INT64_MIN", "ApiModel", "Int64", "Integer", "cel", "cel_rules", "whole_number"]

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1


def cel(rule: str, message: str, field_path: str | None = None) -> dict[str, str]:
    """One `x-kubernetes-validations` entry; the API server returns `message` when `rule` is false."""
    entry = {"rule": rule, "message": message}
    if field_path:
        entry["fieldPath"] = field_path
    return entry


def cel_rules(*rules: dict[str, str]) -> dict[str, Any]:
    """The json_schema_extra that carries CEL rules into the generated CRD."""
    return {"x-kubernetes-validations": list(rules)}


def int64(value: int) -> int:
    if not INT64_MIN <= value <= INT64_MAX:
        raise ValueError(f"{value} does not fit in a 64-bit integer")
    return value


# Not a schema minimum/maximum: the API server keeps those as float64, where 2**63-1 rounds beyond int64
# and breaks the CRD. The API server's JSON decoding refuses integers outside int64 by itself.
Int64 = Annotated[int, BeforeValidator(whole_number), AfterValidator(int64)]
"""An integer field the Kubernetes API stores as int64."""


class ApiModel(BaseModel):
    """A part of the ModelDeployment resource."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        frozen=True,
        use_attribute_docstrings=True,
        # The API server refuses "5" for an integer and "true" for a boolean; so must the operator, or
        # the two would disagree on what a spec means.
        strict=True,
    )

    def to_api(self) -> dict[str, Any]:
        """The wire form: camelCase keys, no unset optional fields."""
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")
