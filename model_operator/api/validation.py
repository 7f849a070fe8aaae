"""Turn a raw spec into models, with errors that name the field in the resource's own words."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from .spec import ModelDeploymentSpec


class InvalidSpecError(ValueError):
    """A spec the operator cannot act on; `problems` lists one `path: message` per fault."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("; ".join(problems))


def _path(location: tuple[int | str, ...], root: str) -> str:
    text = root
    for part in location:
        text += f"[{part}]" if isinstance(part, int) else f".{part}"
    return text


def _message(error: Any) -> str:
    message = str(error["msg"])
    # Pydantic prefixes messages of our own validators; the field path already says where.
    return message.removeprefix("Value error, ")


def describe_errors(error: ValidationError, root: str = "spec") -> list[str]:
    """One `field.path: what is wrong` line per problem, with list indexes and camelCase names."""
    lines = []
    for item in error.errors(include_url=False):
        location = tuple(part for part in item["loc"] if not str(part).startswith("function-"))
        # Union members show up as loc parts named after the member type; they say nothing to a user.
        location = tuple(p for p in location if p not in ("str", "int", "float", "bool"))
        lines.append(f"{_path(location, root)}: {_message(item)}")
    return lines


def parse_spec(raw: Any) -> ModelDeploymentSpec:
    """Validate a raw spec (as stored in the API server); raises InvalidSpecError naming each field."""
    if not isinstance(raw, dict):
        raise InvalidSpecError([f"spec: must be an object, got {type(raw).__name__}"])
    try:
        return ModelDeploymentSpec.model_validate(raw)
    except ValidationError as error:
        raise InvalidSpecError(describe_errors(error)) from None
