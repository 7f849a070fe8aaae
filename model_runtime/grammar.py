"""JSON mode: `response_format` json_object and json_schema as a grammar over the model's vocabulary.

xgrammar (the engine vLLM uses) compiles a JSON grammar, or one for a JSON schema, against the
tokenizer; each sequence with a grammar gets its own matcher, which before every step masks the tokens
that cannot continue valid JSON and after it advances by the token chosen. Once the JSON is complete
only an end-of-sequence token is allowed, so the sequence stops there.
"""

from __future__ import annotations

import importlib
import json
import re
import threading
from types import ModuleType
from typing import TYPE_CHECKING, Any

import torch

from .model import LoadedModel

if TYPE_CHECKING:
    import xgrammar as xgr

MAX_SCHEMA_BYTES = 64 * 1024
MAX_CACHED_SCHEMAS = 64


def _xgrammar() -> ModuleType:
    # Imported on first use: a server that never sees JSON mode does not pay for it at start-up.
    return importlib.import_module("xgrammar")


class GrammarError(ValueError):
    """A json_schema xgrammar cannot compile; the request gets a 400 naming it."""


class Grammars:
    """Compiled grammars for one model, built on first use: the JSON grammar once, schemas in a small
    cache keyed by their canonical text."""

    def __init__(self, loaded: LoadedModel) -> None:
        self._loaded = loaded
        self._compiler: xgr.GrammarCompiler | None = None
        self._json: xgr.CompiledGrammar | None = None
        self._schemas: dict[str, xgr.CompiledGrammar] = {}
        self._xgr = _xgrammar()
        self._lock = threading.Lock()

    def _ready_compiler(self) -> xgr.GrammarCompiler:
        with self._lock:
            if self._compiler is None:
                info = self._xgr.TokenizerInfo.from_huggingface(
                    self._loaded.tokenizer,
                    vocab_size=self._loaded.vocab_size,
                    stop_token_ids=sorted(self._loaded.eos_token_ids),
                )
                self._compiler = self._xgr.GrammarCompiler(info, max_threads=1)
            return self._compiler

    def json_object(self) -> xgr.CompiledGrammar:
        compiler = self._ready_compiler()
        with self._lock:
            if self._json is None:
                self._json = compiler.compile_builtin_json_grammar()
            return self._json

    def json_schema(self, schema: dict[str, Any]) -> xgr.CompiledGrammar:
        text = json.dumps(schema, sort_keys=True)
        if len(text) > MAX_SCHEMA_BYTES:
            raise GrammarError(f"the JSON schema is {len(text)} bytes; the limit is {MAX_SCHEMA_BYTES}")
        compiler = self._ready_compiler()
        with self._lock:
            cached = self._schemas.get(text)
        if cached is not None:
            return cached
        try:
            # Compact JSON: small models given free whitespace tend to loop on it until max_tokens.
            grammar = self._xgr.Grammar.from_json_schema(text, any_whitespace=False)
            compiled = compiler.compile_grammar(self._xgr.Grammar.from_ebnf(_strict_strings(str(grammar))))
        except (RuntimeError, ValueError) as error:
            raise GrammarError(f"the JSON schema cannot be used: {_reason(error)}") from None
        with self._lock:
            if len(self._schemas) >= MAX_CACHED_SCHEMAS:
                self._schemas.pop(next(iter(self._schemas)))
            self._schemas[text] = compiled
        return compiled


# xgrammar 0.2 writes the characters of a length-bounded string as [^"\\\r\n]: that lets control
# characters through, which JSON forbids unescaped (RFC 8259 section 7; Python's json.loads refuses them).
_LAX_STRING_CHARACTER = r"[^\"\\\r\n]"
_STRICT_STRING_CHARACTER = r"[^\"\\\0-\x1f]"


def _strict_strings(ebnf: str) -> str:
    return ebnf.replace(_LAX_STRING_CHARACTER, _STRICT_STRING_CHARACTER)


def _reason(error: Exception) -> str:
    # xgrammar's messages start with a timestamp and its C++ source location: keep the reason only.
    first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return re.sub(r"^\[[^\]]*\]\s*\S+:\d+:\s*", "", first)[:200]


class Constraint:
    """One sequence's place in its grammar."""

    def __init__(self, grammar: Any) -> None:  # SamplingParams.grammar: an xgrammar CompiledGrammar
        self._xgr = _xgrammar()
        self._matcher = self._xgr.GrammarMatcher(grammar)
        self._bitmask = self._xgr.allocate_token_bitmask(1, grammar.tokenizer_info.vocab_size)

    def mask(self, logits: torch.Tensor) -> None:
        """Set to -inf, in place, the logits (one row) of tokens that cannot come next."""
        self._matcher.fill_next_token_bitmask(self._bitmask)
        self._xgr.apply_token_bitmask_inplace(logits.unsqueeze(0), self._bitmask.to(logits.device))

    def advance(self, token: int) -> bool:
        """Move past `token`; False when the grammar does not allow it."""
        return bool(self._matcher.accept_token(token))
