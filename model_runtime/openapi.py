"""The runtime's OpenAPI 3.1 document, generated from the request models, served at /openapi.json so API
fuzzers and client generators can be pointed at it."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from . import __version__
from .schemas import ChatRequest, CompletionRequest, EmbeddingRequest

REF = "#/components/schemas/{model}"
ERROR = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["message", "type"],
            "properties": {
                "message": {"type": "string"},
                "type": {"type": "string"},
                "param": {"type": ["string", "null"]},
                "code": {"type": ["string", "null"]},
            },
        }
    },
}
ERROR_CODES = {
    "400": "invalid parameters, or a prompt over the token limit",
    "401": "a missing or wrong API key",
    "404": "a model this server does not serve",
    "413": "a body over the size limit",
    "422": "a body that does not fit the schema",
    "429": "the queue is full (see Retry-After)",
    "503": "not ready, or draining (see Retry-After)",
    "504": "no answer within the request timeout",
}


def _schemas(*models: type[BaseModel]) -> dict[str, Any]:
    components: dict[str, Any] = {}
    for model in models:
        schema = model.model_json_schema(ref_template=REF)
        components.update(schema.pop("$defs", {}))
        components[model.__name__] = schema
    components["Error"] = ERROR
    return components


def _operation(summary: str, request: type[BaseModel] | None, streams: bool) -> dict[str, Any]:
    ok: dict[str, Any] = {"application/json": {"schema": {"type": "object"}}}
    if streams:
        ok["text/event-stream"] = {"schema": {"type": "string"}}
    responses: dict[str, Any] = {"200": {"description": "the answer", "content": ok}}
    for code, why in ERROR_CODES.items():
        responses[code] = {
            "description": why,
            "content": {"application/json": {"schema": {"$ref": REF.format(model="Error")}}},
        }
    operation: dict[str, Any] = {"summary": summary, "responses": responses}
    if request is not None:
        operation["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": {"$ref": REF.format(model=request.__name__)}}},
        }
    return operation


def document(with_api_key: bool) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {"title": "ModelShip runtime (OpenAI-compatible)", "version": __version__},
        "paths": {
            "/v1/completions": {"post": _operation("Text completion", CompletionRequest, streams=True)},
            "/v1/chat/completions": {"post": _operation("Chat completion", ChatRequest, streams=True)},
            "/v1/embeddings": {"post": _operation("Embeddings", EmbeddingRequest, streams=False)},
            "/v1/models": {"get": _operation("The model served", None, streams=False)},
        },
        "components": {"schemas": _schemas(CompletionRequest, ChatRequest, EmbeddingRequest)},
    }
    if with_api_key:
        doc["components"]["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
        doc["security"] = [{"bearer": []}]
    return doc
