"""Fingerprints of what decides a model's answers besides its weights: the tokenizer (vocabulary, merges,
normalizer, pre-tokenizer, post-processor, special and added tokens, chat template) and the model's
config. Two revisions with the same fingerprint tokenize every prompt alike; a tokenizer swapped under the
same model path changes it. Short hex digests of a canonical JSON, so they fit in a metric label."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

DIGEST_HEX = 16


def _digest(document: Any) -> str:
    canonical = json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:DIGEST_HEX]


def tokenizer_document(tokenizer: Any) -> dict[str, Any]:
    """Everything that decides how text becomes token ids and back. A fast tokenizer serializes all of its
    pipeline (tokenizers' tokenizer.json); a slow one is described by its vocabulary and special tokens."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        pipeline: Any = json.loads(backend.to_str())
    else:
        pipeline = {"vocab": tokenizer.get_vocab()}
    return {
        "pipeline": pipeline,
        "special_tokens": {str(k): str(v) for k, v in (getattr(tokenizer, "special_tokens_map", None) or {}).items()},
        "chat_template": getattr(tokenizer, "chat_template", None),
    }


def model_config_document(config: Any) -> dict[str, Any]:
    """The model's config without what only records where and how it was saved."""
    document = dict(config.to_dict()) if hasattr(config, "to_dict") else dict(config)
    for volatile in ("_name_or_path", "transformers_version", "torch_dtype", "dtype", "_commit_hash"):
        document.pop(volatile, None)
    return document


@dataclass(frozen=True)
class Fingerprints:
    tokenizer: str
    config: str


def fingerprints(tokenizer: Any, config: Any) -> Fingerprints:
    return Fingerprints(_digest(tokenizer_document(tokenizer)), _digest(model_config_document(config)))
