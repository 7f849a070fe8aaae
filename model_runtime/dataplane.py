"""The dataplane: validated requests in, OpenAI-shaped responses out. It knows the limits, admission,
tokenization and the engine, and nothing about HTTP; the server maps its ApiErrors to status codes."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import threading
import time
from collections.abc import AsyncGenerator, AsyncIterator, Iterator
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from .content import content_issues
from .contract import GENERATION_ENDPOINTS, OUTCOME_ALL
from .drift import DriftMonitor
from .engine import EmbeddingWork, Engine, Finished, GenerationWork, TokenEvent, kv_refusal
from .errors import (
    ApiError,
    InjectedFault,
    InvalidRequest,
    ModelNotFound,
    NotReady,
    QueueFull,
    SchemaError,
    Timeout,
)
from .fingerprint import Fingerprints, fingerprints
from .grammar import GrammarError, Grammars
from .kvbudget import Row
from .metrics import RuntimeMetrics
from .model import LoadedModel
from .responses import Choice, Generated, Shaper, choices_of, finished_usage
from .sampling import SamplingParams
from .schemas import (
    MAX_CHOICES,
    MAX_PROMPTS,
    ChatMessage,
    ChatRequest,
    CompletionRequest,
    EmbeddingRequest,
    Sampling,
    TokenizeRequest,
    classify,
)
from .settings import RuntimeSettings

RequestT = TypeVar("RequestT", bound=BaseModel)
COMPLETIONS, CHAT = GENERATION_ENDPOINTS
log = logging.getLogger("model_runtime.dataplane")


def parse(model: type[RequestT], document: Any) -> RequestT:
    """Validate a parsed JSON document against a request schema; 422 for shape, 400 for values. Unknown
    fields are ignored, as vLLM does, and named in a debug log (names only: values may hold prompts)."""
    if not isinstance(document, dict):
        raise SchemaError("the request body must be a JSON object")
    try:
        parsed = model.model_validate(document)
    except ValidationError as error:
        schema, message, param = classify(error)
        raise (SchemaError if schema else InvalidRequest)(message, param=param) from None
    unknown = sorted(set(document) - set(model.model_fields))
    if unknown and log.isEnabledFor(logging.DEBUG):
        log.debug("ignored unknown request fields: %s", ", ".join(str(name)[:40] for name in unknown[:20]))
    return parsed


class Admission:
    """Counts requests in flight and refuses what the pod cannot hold (429) or should not take (503)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.in_flight = 0
        self.ready = False
        self.draining = False
        self._lock = threading.Lock()
        self.idle = asyncio.Event()
        self.idle.set()

    def enter(self) -> None:
        with self._lock:
            if self.draining:
                raise NotReady("the server is shutting down")
            if not self.ready:
                raise NotReady("the model is not loaded yet")
            if self.in_flight >= self.limit:
                raise QueueFull(f"{self.in_flight} requests in flight, the limit is {self.limit}; retry later")
            self.in_flight += 1
            self.idle.clear()

    def leave(self) -> None:
        with self._lock:
            self.in_flight -= 1
            if self.in_flight == 0:
                self.idle.set()

    @contextlib.contextmanager
    def admitted(self) -> Iterator[None]:
        """A request's time in flight: refused (429/503) on entry, counted until it is answered."""
        self.enter()
        try:
            yield
        finally:
            self.leave()


class DataPlane:
    def __init__(self, settings: RuntimeSettings, metrics: RuntimeMetrics) -> None:
        self.settings = settings
        self.metrics = metrics
        self.admission = Admission(settings.max_concurrent_requests)
        metrics.bind_running(lambda: self.admission.in_flight)
        self.drift = DriftMonitor(settings.drift_window)
        self.loaded: LoadedModel | None = None
        self._grammars: Grammars | None = None
        self.engine: Engine | None = None
        self._random = random.Random()
        self.created = int(time.time())
        self.fingerprints = Fingerprints("", "")  # until a model is attached
        self.shaper = Shaper(settings.model_name, self._token_text)

    def attach(self, loaded: LoadedModel, engine: Engine) -> None:
        self.loaded, self.engine = loaded, engine
        self.fingerprints = fingerprints(loaded.tokenizer, loaded.model.config)
        self.metrics.describe_model(
            self.settings.task,
            loaded.placement.device,
            str(loaded.placement.dtype).removeprefix("torch."),
            self.fingerprints.tokenizer,
            self.fingerprints.config,
        )
        self.metrics.bind_gauges(lambda: engine.waiting, self.drift.score)

    # ---- shared steps -------------------------------------------------------------------------------
    def _check_model(self, name: str) -> None:
        if name != self.settings.model_name:
            raise ModelNotFound(
                f"model {name!r} is not served here; this server serves {self.settings.model_name!r}", param="model"
            )

    def _check_task(self, task: str) -> None:
        if self.settings.task != task:
            raise InvalidRequest(f"this server runs a {self.settings.task} model; it does not serve this endpoint")

    async def _faults(self) -> None:
        """Injected latency and errors, only when MODELSHIP_FAULTS_ENABLED is set (rollout tests)."""
        if not self.settings.faults_enabled:
            return
        if self.settings.fault_latency_seconds:
            await asyncio.sleep(self.settings.fault_latency_seconds)
        if self._random.random() < self.settings.fault_error_rate:
            raise InjectedFault("injected fault (MODELSHIP_FAULT_ERROR_RATE)")

    def _empty_fault(self) -> bool:
        """An injected answer that is empty, as from a model that emits its end token first (a 200)."""
        return self.settings.faults_enabled and self._random.random() < self.settings.fault_empty_rate

    def _count_content(self, endpoint: str, request: Sampling, texts: list[tuple[str, str]]) -> None:
        """Each finished choice's (text, finish_reason) by what its content is: the content SLI."""
        fmt = request.response_format
        json_asked = fmt is not None and fmt.type != "text"
        for text, finish_reason in texts:
            self.metrics.choice(endpoint, OUTCOME_ALL)
            for issue in content_issues(text, finish_reason, json_asked):
                self.metrics.choice(endpoint, issue)

    def _limit_prompt(self, ids: list[int], max_new: int) -> list[int]:
        if not ids:
            raise InvalidRequest("the prompt must not be empty", param="prompt")
        limit = self.settings.max_input_tokens
        assert self.loaded is not None
        if self.loaded.max_positions is not None:
            limit = min(limit, self.loaded.max_positions - max_new)
        if len(ids) > limit:
            if self.settings.truncation == "keep-last" and limit > 0:
                return ids[-limit:]
            raise InvalidRequest(
                f"the prompt has {len(ids)} tokens; the limit is {limit} "
                f"(maxInputTokens {self.settings.max_input_tokens}"
                + (
                    f", context {self.loaded.max_positions} minus max_tokens {max_new}"
                    if self.loaded.max_positions is not None
                    else ""
                )
                + ")",
                param="prompt",
                code="context_length_exceeded",
            )
        capacity = getattr(self.engine, "kv_capacity", None)
        if capacity is not None and len(ids) + max_new > capacity:  # it could never join a batch: say so now
            raise kv_refusal(Row(len(ids), max_new), capacity)
        return ids

    def _sampling(self, request: Sampling, max_new: int, top_logprobs: int | None) -> SamplingParams:
        """The engine's parameters for a request; 400 for token ids outside the vocabulary or a
        min_tokens above max_tokens, before the request joins a batch."""
        assert self.loaded is not None
        vocab = self.loaded.vocab_size
        try:
            bias = request.bias_by_token(vocab)
        except ValueError as error:
            raise InvalidRequest(str(error), param="logit_bias") from None
        stop_ids = tuple(request.stop_token_ids or ())
        if any(not 0 <= token < vocab for token in stop_ids):
            raise InvalidRequest(f"stop_token_ids must be token ids below {vocab}", param="stop_token_ids")
        if request.min_tokens > max_new:
            raise InvalidRequest(
                f"min_tokens ({request.min_tokens}) must be at most max_tokens ({max_new})", param="min_tokens"
            )
        return SamplingParams(
            grammar=self._grammar(request),
            max_new_tokens=max_new,
            temperature=request.temperature,
            top_p=request.top_p,
            seed=request.seed,
            stop=request.stop_sequences(),
            top_logprobs=top_logprobs,
            ignore_eos=request.ignore_eos,
            top_k=request.top_k,
            min_p=request.min_p,
            repetition_penalty=request.repetition_penalty,
            frequency_penalty=request.frequency_penalty,
            presence_penalty=request.presence_penalty,
            logit_bias=bias,
            min_tokens=request.min_tokens,
            stop_token_ids=stop_ids,
        )

    def _grammar(self, request: Sampling) -> object | None:
        """The compiled grammar JSON mode decodes under; 400 for a schema that cannot be compiled."""
        fmt = request.response_format
        if fmt is None or fmt.type == "text":
            return None
        assert self.loaded is not None
        if self._grammars is None:
            self._grammars = Grammars(self.loaded)
        if fmt.type == "json_object" or fmt.json_schema is None or fmt.json_schema.schema_ is None:
            return self._grammars.json_object()
        try:
            return self._grammars.json_schema(fmt.json_schema.schema_)
        except GrammarError as error:
            raise InvalidRequest(str(error), param="response_format") from None

    def _max_new(self, asked: int | None) -> int:
        value = asked if asked is not None else min(16, self.settings.max_new_tokens)
        if value > self.settings.max_new_tokens:
            raise InvalidRequest(
                f"max_tokens is {value}; the limit is {self.settings.max_new_tokens}", param="max_tokens"
            )
        return value

    async def _generate(
        self, prompt_ids: list[int], params: SamplingParams, stream: bool = True
    ) -> AsyncIterator[TokenEvent | Finished]:
        assert self.engine is not None
        loop = asyncio.get_running_loop()
        events: asyncio.Queue[TokenEvent | Finished | ApiError] = asyncio.Queue()
        deadline = time.monotonic() + self.settings.request_timeout_seconds

        def sink(event: TokenEvent | Finished | ApiError) -> None:
            loop.call_soon_threadsafe(events.put_nowait, event)

        self.drift.observe(prompt_ids)
        if self._empty_fault():
            self.metrics.tokens(len(prompt_ids), 0)
            yield Finished("stop", len(prompt_ids), 0)
            return
        work = GenerationWork(sink=sink, deadline=deadline, prompt_ids=prompt_ids, params=params, stream=stream)
        self.engine.submit(work)
        try:
            while True:
                remaining = deadline - time.monotonic()
                try:
                    event = await asyncio.wait_for(events.get(), timeout=max(remaining, 0) + 1.0)
                except TimeoutError:
                    raise Timeout(f"no answer within {self.settings.request_timeout_seconds:g}s") from None
                if isinstance(event, ApiError):
                    raise event
                if isinstance(event, Finished):
                    # Before the yield: a consumer that has what it needs closes the generator there.
                    self.metrics.tokens(event.prompt_tokens, event.completion_tokens)
                    yield event
                    return
                yield event
        finally:
            work.cancelled.set()  # a client that went away, or a timeout: the engine drops the sequence

    async def _collect(self, prompt_ids: list[int], params: SamplingParams) -> Generated:
        async for event in self._generate(prompt_ids, params, stream=False):
            if isinstance(event, Finished):
                text = "".join(token.text for token in event.tokens)
                tokens = [token for token in event.tokens if token.token_id >= 0]
                return Generated(text, event.finish_reason, event.prompt_tokens, event.completion_tokens, tokens)
        raise AssertionError("generation ended without a Finished event")

    async def _collect_all(self, choices: list[Choice]) -> list[Generated]:
        """Every choice's generation, side by side in the engine's batch; the first failure fails the
        request and cancels the rest."""
        if len(choices) == 1:
            return [await self._collect(choices[0].prompt_ids, choices[0].params)]
        try:
            async with asyncio.TaskGroup() as group:
                tasks = [group.create_task(self._collect(c.prompt_ids, c.params)) for c in choices]
        except ExceptionGroup as failures:
            raise failures.exceptions[0] from None
        return [task.result() for task in tasks]

    async def _merged(self, choices: list[Choice]) -> AsyncIterator[tuple[int, TokenEvent | Finished]]:
        """(choice index, event) from every choice's generation as they come; the first failure ends the
        stream, and closing it cancels every sequence."""
        if len(choices) == 1:
            async for event in self._generate(choices[0].prompt_ids, choices[0].params):
                yield choices[0].index, event
            return
        queue: asyncio.Queue[tuple[int, TokenEvent | Finished] | Exception] = asyncio.Queue()

        async def pump(choice: Choice) -> None:
            try:
                async for event in self._generate(choice.prompt_ids, choice.params):
                    queue.put_nowait((choice.index, event))
            except Exception as error:
                queue.put_nowait(error)

        tasks = [asyncio.create_task(pump(choice)) for choice in choices]
        try:
            done = 0
            while done < len(choices):
                item = await queue.get()
                if isinstance(item, Exception):
                    raise item
                done += isinstance(item[1], Finished)
                yield item
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    def _token_text(self, token_id: int) -> str:
        assert self.loaded is not None
        return str(self.loaded.tokenizer.decode([token_id]))

    # ---- /v1/completions ----------------------------------------------------------------------------
    def prepare_completion(self, document: Any) -> tuple[CompletionRequest, list[Choice], SamplingParams]:
        request = parse(CompletionRequest, document)
        self._check_model(request.model)
        self._check_task("text-generation")
        assert self.loaded is not None
        max_new = self._max_new(request.max_tokens)
        prompts = [self._limit_prompt(ids, max_new) for ids in self._prompt_ids(request.prompt)]
        if len(prompts) * request.n > MAX_CHOICES:
            raise InvalidRequest(
                f"{len(prompts)} prompts x n={request.n} is {len(prompts) * request.n} choices; the limit is "
                f"{MAX_CHOICES}",
                param="n",
            )
        params = self._sampling(request, max_new, request.logprobs)
        return request, choices_of(prompts, params, request.n), params

    def _prompt_ids(self, prompt: str | list[str] | list[int] | list[list[int]]) -> list[list[int]]:
        """Token ids per prompt: text is tokenized, token ids are taken as they are (each below the
        vocabulary size)."""
        assert self.loaded is not None
        if isinstance(prompt, str):
            prompts: list[str | list[int]] = [prompt]
        elif prompt and all(isinstance(item, int) for item in prompt):
            prompts = [[int(item) for item in prompt]]  # type: ignore[arg-type]
        else:
            prompts = list(prompt)  # type: ignore[arg-type]
        if not prompts:
            raise InvalidRequest("the prompt must not be empty", param="prompt")
        if len(prompts) > MAX_PROMPTS:
            raise InvalidRequest(f"at most {MAX_PROMPTS} prompts per request", param="prompt")
        vocab = self.loaded.vocab_size
        out = []
        for item in prompts:
            if isinstance(item, str):
                out.append(list(self.loaded.tokenizer.encode(item)) if item else [])
            elif any(not 0 <= token < vocab for token in item):
                raise InvalidRequest(f"prompt token ids must be below {vocab}", param="prompt")
            else:
                out.append(list(item))
        return out

    async def completion(
        self, request: CompletionRequest, choices: list[Choice], params: SamplingParams
    ) -> dict[str, Any]:
        await self._faults()
        results = await self._collect_all(choices)
        self._count_content(COMPLETIONS, request, [(r.text, r.finish_reason) for r in results])
        return self.shaper.completion(request, choices, results)

    async def completion_stream(
        self, request: CompletionRequest, choices: list[Choice], params: SamplingParams
    ) -> AsyncGenerator[dict[str, Any], None]:
        await self._faults()
        base = self.shaper.stream_base("cmpl", "text_completion")
        ends: dict[int, Finished] = {}
        texts: dict[int, list[str]] = {}
        async for index, event in self._merged(choices):
            if isinstance(event, Finished):
                ends[index] = event
                self._count_content(COMPLETIONS, request, [("".join(texts.pop(index, [])), event.finish_reason)])
            else:
                texts.setdefault(index, []).append(event.text)
            chunk = self.shaper.completion_chunk(request, base, index, event)
            if chunk is not None:
                yield chunk
        if request.include_usage:  # vLLM's convention: a last chunk with no choices, only usage
            yield base | {"choices": [], "usage": finished_usage(choices, ends)}

    # ---- /v1/chat/completions -----------------------------------------------------------------------
    def prepare_chat(self, document: Any) -> tuple[ChatRequest, list[Choice], SamplingParams]:
        request = parse(ChatRequest, document)
        self._check_model(request.model)
        self._check_task("text-generation")
        max_new = self._max_new(request.max_completion_tokens or request.max_tokens)
        ids = self._limit_prompt(self._chat_ids(request.messages, add_generation_prompt=True), max_new)
        top = request.top_logprobs if request.logprobs else None
        if request.logprobs and top is None:
            top = 0
        params = self._sampling(request, max_new, top)
        return request, choices_of([ids], params, request.n), params

    def _chat_ids(self, chat: list[ChatMessage], add_generation_prompt: bool) -> list[int]:
        assert self.loaded is not None
        tokenizer = self.loaded.tokenizer
        if not getattr(tokenizer, "chat_template", None):
            raise InvalidRequest("this model has no chat template; use /v1/completions")
        messages = [{"role": m.role, "content": m.text(), **({"name": m.name} if m.name else {})} for m in chat]
        if all(not m["content"] for m in messages):
            raise InvalidRequest("the messages must not all be empty", param="messages")
        try:
            rendered = tokenizer.apply_chat_template(
                messages, add_generation_prompt=add_generation_prompt, tokenize=False
            )
        except Exception as error:  # a template that refuses this conversation (e.g. roles out of order)
            raise InvalidRequest(f"the chat template refused these messages: {error}", param="messages") from None
        return list(tokenizer.encode(rendered, add_special_tokens=False))

    async def chat(self, request: ChatRequest, choices: list[Choice], params: SamplingParams) -> dict[str, Any]:
        await self._faults()
        results = await self._collect_all(choices)
        self._count_content(CHAT, request, [(r.text, r.finish_reason) for r in results])
        return self.shaper.chat(request, choices, results)

    async def chat_stream(
        self, request: ChatRequest, choices: list[Choice], params: SamplingParams
    ) -> AsyncGenerator[dict[str, Any], None]:
        await self._faults()
        base = self.shaper.stream_base("chatcmpl", "chat.completion.chunk")
        started: set[int] = set()
        ends: dict[int, Finished] = {}
        texts: dict[int, list[str]] = {}
        async for index, event in self._merged(choices):
            if isinstance(event, Finished):
                ends[index] = event
                self._count_content(CHAT, request, [("".join(texts.pop(index, [])), event.finish_reason)])
            else:
                texts.setdefault(index, []).append(event.text)
            chunk = self.shaper.chat_chunk(request, base, index, event, first=index not in started)
            if chunk is not None:
                if isinstance(event, TokenEvent):
                    started.add(index)
                yield chunk
        if request.include_usage:
            yield base | {"choices": [], "usage": finished_usage(choices, ends)}

    # ---- /v1/embeddings -----------------------------------------------------------------------------
    async def embeddings(self, document: Any) -> dict[str, Any]:
        request = parse(EmbeddingRequest, document)
        self._check_model(request.model)
        self._check_task("embeddings")
        assert self.loaded is not None
        assert self.engine is not None
        texts = [request.input] if isinstance(request.input, str) else list(request.input)
        if any(not text for text in texts):
            raise InvalidRequest("inputs must not be empty strings", param="input")
        token_ids = [self._limit_prompt(list(self.loaded.tokenizer.encode(text)), 0) for text in texts]
        await self._faults()
        loop = asyncio.get_running_loop()
        done: asyncio.Future[Finished] = loop.create_future()

        def sink(event: object) -> None:
            loop.call_soon_threadsafe(_settle, done, event)

        deadline = time.monotonic() + self.settings.request_timeout_seconds
        work = EmbeddingWork(sink=sink, deadline=deadline, token_ids=token_ids)
        for ids in token_ids:
            self.drift.observe(ids)
        self.engine.submit(work)
        try:
            finished = await asyncio.wait_for(done, timeout=self.settings.request_timeout_seconds + 1.0)
        except TimeoutError:
            raise Timeout(f"no answer within {self.settings.request_timeout_seconds:g}s") from None
        finally:
            work.cancelled.set()
        assert work.result is not None
        self.metrics.tokens(finished.prompt_tokens, 0)
        width = len(work.result[0]) if work.result else 0
        if request.dimensions is not None and request.dimensions != width:
            raise InvalidRequest(f"this model's embeddings have {width} dimensions", param="dimensions")
        return self.shaper.embeddings(work.result, finished.prompt_tokens, request.encoding_format == "base64")

    # ---- /tokenize ----------------------------------------------------------------------------------
    def tokenize(self, document: Any) -> dict[str, Any]:
        """The token ids a prompt or a chat becomes here, as vLLM's /tokenize answers: revisions that
        tokenize alike give the same ids (the operator's validation compares them)."""
        request = parse(TokenizeRequest, document)
        if request.model is not None:
            self._check_model(request.model)
        assert self.loaded is not None
        if request.messages is not None:
            ids = self._chat_ids(request.messages, request.add_generation_prompt)
        else:
            ids = list(self.loaded.tokenizer.encode(request.prompt)) if request.prompt else []
        longest = self.loaded.max_positions or self.settings.max_input_tokens
        return {"count": len(ids), "max_model_len": longest, "tokens": ids}

    def models(self) -> dict[str, Any]:
        return {
            "object": "list",
            "data": [
                {
                    "id": self.settings.model_name,
                    "object": "model",
                    "created": self.created,
                    "owned_by": "modelship",
                    "task": self.settings.task,
                    # what decides tokenization and the model's shape: equal for revisions that tokenize alike
                    "tokenizer_fingerprint": self.fingerprints.tokenizer or None,
                    "config_fingerprint": self.fingerprints.config or None,
                }
            ],
        }


def _settle(future: asyncio.Future[Finished], event: object) -> None:
    if future.done():
        return
    if isinstance(event, ApiError):
        future.set_exception(event)
    elif isinstance(event, Finished):
        future.set_result(event)
