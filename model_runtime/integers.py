"""Integers as JSON Schema (and the Kubernetes API server, OpenAI and vLLM) read them: a whole number such
as 2.0 or 1e3 is an integer, a fraction is not, and neither is a boolean. Shared by the runtime's request
bodies and the operator's API, which both validate in strict mode."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BeforeValidator
from pydantic_core import PydanticCustomError


def whole_number(value: Any) -> Any:
    """A whole float as an int; everything else as it is, for the strict int check to judge. A boolean is
    refused here, which Python would otherwise take for 0 or 1."""
    if isinstance(value, bool):
        raise PydanticCustomError("int_type", "Input should be a valid integer, not a boolean")
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


Integer = Annotated[int, BeforeValidator(whole_number)]
