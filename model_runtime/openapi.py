"""The runtime's OpenAPI 3.1 document, generated from the request and response models, served at
/openapi.json so API fuzzers and client generators can be pointed at it."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from . import __version__
from .response_models import (
    ChatCompletion,
    ChatCompletionChunk,
    Completion,
    CompletionChunk,
    Embeddings,
    ModelList,
    Tokenized,
)
from .schemas import ChatRequest, CompletionRequest, EmbeddingRequest, TokenizeRequest

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
        for name, definition in {**schema.pop("$defs", {}), model.__name__: schema}.items():
            if components.get(name, definition) != definition:
                raise ValueError(f"two models are named {name} in the OpenAPI document")
            components[name] = definition
    components["Error"] = ERROR
    return components


def ref(name: str) -> dict[str, str]:
    return {"$ref": REF.format(model=name)}


def _examples(model_name: str) -> dict[str, dict[str, Any]]:
    """One small valid body per endpoint: a client generator's starting point, and the cases an API
    fuzzer runs first (so the answers, not only the errors, are checked against the document)."""
    chat = [{"role": "user", "content": "hi"}]
    return {
        "CompletionRequest": {"model": model_name, "prompt": "hello", "max_tokens": 2, "logprobs": 1},
        "ChatRequest": {"model": model_name, "messages": chat, "max_tokens": 2, "logprobs": True, "top_logprobs": 1},
        "EmbeddingRequest": {"model": model_name, "input": ["hi", "there"]},
        "TokenizeRequest": {"model": model_name, "prompt": "hello"},
    }


def _operation(
    summary: str,
    request: type[BaseModel] | None,
    answer: type[BaseModel],
    chunk: type[BaseModel] | None,
    model_name: str,
) -> dict[str, Any]:
    ok: dict[str, Any] = {"application/json": {"schema": ref(answer.__name__)}}
    if chunk is not None:
        # One server-sent event (as OpenAPI 3.2 describes streams): its data is a JSON chunk, and the last
        # event's data the literal [DONE].
        chunk_data = {"type": "string", "contentMediaType": "application/json", "contentSchema": ref(chunk.__name__)}
        data = {"anyOf": [{"const": "[DONE]"}, chunk_data]}
        event = {"type": "object", "required": ["data"], "properties": {"data": data}}
        ok["text/event-stream"] = {"schema": event}
    responses: dict[str, Any] = {"200": {"description": "the answer", "content": ok}}
    for code, why in ERROR_CODES.items():
        responses[code] = {
            "description": why,
            "content": {"application/json": {"schema": ref("Error")}},
        }
    operation: dict[str, Any] = {"summary": summary, "responses": responses}
    if request is not None:
        operation["requestBody"] = {
            "required": True,
            "content": {
                "application/json": {
                    "schema": ref(request.__name__),
                    "example": _examples(model_name)[request.__name__],
                }
            },
        }
    return operation


def document(with_api_key: bool, model_name: str = "model") -> dict[str, Any]:
    doc: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {"title": "ModelShip runtime (OpenAI-compatible)", "version": __version__},
        "paths": {
            "/v1/completions": {
                "post": _operation("Text completion", CompletionRequest, Completion, CompletionChunk, model_name)
            },
            "/v1/chat/completions": {
                "post": _operation("Chat completion", ChatRequest, ChatCompletion, ChatCompletionChunk, model_name)
            },
            "/v1/embeddings": {"post": _operation("Embeddings", EmbeddingRequest, Embeddings, None, model_name)},
            "/v1/models": {"get": _operation("The model served", None, ModelList, None, model_name)},
            "/tokenize": {
                "post": _operation("Token ids of a prompt or a chat", TokenizeRequest, Tokenized, None, model_name)
            },
        },
        "components": {
            "schemas": _schemas(
                CompletionRequest,
                ChatRequest,
                EmbeddingRequest,
                TokenizeRequest,
                Completion,
                CompletionChunk,
                ChatCompletion,
                ChatCompletionChunk,
                Embeddings,
                ModelList,
                Tokenized,
            )
        },
    }
    if with_api_key:
        doc["components"]["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
        doc["security"] = [{"bearer": []}]
    return doc
