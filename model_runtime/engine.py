"""The batching engine: one worker thread owns the model; requests queue and run together.

Text generation uses continuous batching: a sequence joins the running batch at the next decode step
(its prompt is prefilled, left-padded, and its KV cache merged into the batch's), and leaves it the step
it finishes, so a short request never waits for a long one. Padding is masked and its cache entries
zeroed, so a sequence computes the same tokens alone or in a batch. Embeddings batch whole requests.
"""

from __future__ import annotations

import collections
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch

from .detokenize import Detokenizer
from .errors import ApiError, InvalidRequest, Timeout
from .grammar import Constraint
from .kvbudget import Row, peak_tokens
from .kvcache import BatchLayer, batch_cache, compaction_order
from .model import LoadedModel
from .sampling import History, SamplingParams, TokenLogprobs, choose, logprobs_of, make_generator

log = logging.getLogger("model_runtime.engine")


# Prompt tokens (rows x the longest, padding included) prefilled per cycle, between decode steps: a burst of
# prompts joins over several steps, and a longer prompt is read in pieces of this size, so the running
# sequences wait at most one piece for their next token.
PREFILL_TOKENS = 512


def kv_refusal(row: Row, capacity: int) -> InvalidRequest:
    return InvalidRequest(
        f"the prompt ({row.length} tokens) and max_tokens ({row.remaining}) need {row.length + row.remaining} "
        f"tokens of KV cache; this server holds {capacity} (MODELSHIP_KV_CACHE_TOKENS, or its memory limit)",
        param="max_tokens",
        code="context_length_exceeded",
    )


class EngineMetrics(Protocol):
    def batch(self, size: int) -> None: ...
    def queued(self, seconds: float) -> None: ...
    def prefill(self, seconds: float) -> None: ...
    def decode(self, seconds: float) -> None: ...
    def first_token(self, seconds: float) -> None: ...
    def running_sequences(self, count: int) -> None: ...
    def kv_cache_usage(self, ratio: float) -> None: ...


class NoMetrics:
    def batch(self, size: int) -> None: ...
    def queued(self, seconds: float) -> None: ...
    def prefill(self, seconds: float) -> None: ...
    def decode(self, seconds: float) -> None: ...
    def first_token(self, seconds: float) -> None: ...
    def running_sequences(self, count: int) -> None: ...
    def kv_cache_usage(self, ratio: float) -> None: ...


@dataclass
class TokenEvent:
    token_id: int
    text: str  # the text this token adds (may be empty while a multi-byte character is incomplete)
    logprobs: TokenLogprobs | None


@dataclass
class Finished:
    finish_reason: str  # "stop" or "length"
    prompt_tokens: int
    completion_tokens: int
    tokens: tuple[TokenEvent, ...] = ()  # for a request that does not stream: every token, delivered once


Sink = Callable[[TokenEvent | Finished | ApiError], None]


@dataclass
class Work:
    """One request as the engine sees it. `sink` receives events from the worker thread."""

    sink: Sink
    deadline: float
    enqueued: float = field(default_factory=time.monotonic)
    cancelled: threading.Event = field(default_factory=threading.Event)
    waited: bool = False  # its time in the queue is counted once, however often the KV budget defers it


@dataclass
class GenerationWork(Work):
    prompt_ids: list[int] = field(default_factory=list)
    params: SamplingParams = field(default_factory=lambda: SamplingParams(max_new_tokens=16))
    stream: bool = True  # False: tokens come with Finished, saving a cross-thread hand-off per token


@dataclass
class EmbeddingWork(Work):
    token_ids: list[list[int]] = field(default_factory=list)
    result: list[list[float]] | None = None


@dataclass
class _Sequence:
    work: GenerationWork
    generator: torch.Generator | None
    detokenizer: Detokenizer
    output_ids: list[int] = field(default_factory=list)
    text: str = ""
    emitted: int = 0
    started: float = 0.0
    held: list[TokenEvent] = field(default_factory=list)
    constraint: Constraint | None = None  # JSON mode

    def send(self, event: TokenEvent) -> None:
        if self.work.stream:
            self.work.sink(event)
        else:
            self.held.append(event)


@dataclass
class _Chunking:
    """A prompt being prefilled piece by piece: how far, and the cache of the pieces so far."""

    sequence: _Sequence
    done: int = 0
    cache: Any = None
    seconds: float = 0.0


class Engine:
    """The queue and the worker thread; subclasses say what one pass over a batch does."""

    def __init__(
        self, loaded: LoadedModel, max_batch_size: int, max_batch_wait_ms: int, metrics: EngineMetrics | None = None
    ) -> None:
        self.loaded = loaded
        self.max_batch_size = max_batch_size
        self.max_batch_wait = max_batch_wait_ms / 1000
        self.metrics: EngineMetrics = metrics or NoMetrics()
        self._queue: queue.Queue[Work] = queue.Queue()
        # Taken from the queue but not admitted yet (the KV budget is full): first in line at the next cycle.
        self._deferred: collections.deque[Work] = collections.deque()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="engine", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stopping.set()
        self._thread.join(timeout)

    def submit(self, work: Work) -> None:
        self._queue.put(work)

    @property
    def waiting(self) -> int:
        return self._queue.qsize() + len(self._deferred)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def _take(self, capacity: int, block: bool) -> list[Work]:
        """Up to `capacity` queued requests; when blocking, wait for one, then up to max_batch_wait for more."""
        taken: list[Work] = []
        if capacity <= 0:
            return taken
        while self._deferred and len(taken) < capacity:
            taken.append(self._deferred.popleft())
        if block and not taken:
            try:
                taken.append(self._queue.get(timeout=0.05))
            except queue.Empty:
                return taken
            window_ends = time.monotonic() + self.max_batch_wait
            while len(taken) < capacity:
                remaining = window_ends - time.monotonic()
                if remaining <= 0:
                    break
                try:
                    taken.append(self._queue.get(timeout=remaining))
                except queue.Empty:
                    break
        while len(taken) < capacity:
            try:
                taken.append(self._queue.get_nowait())
            except queue.Empty:
                break
        now = time.monotonic()
        live = []
        for work in taken:
            if work.cancelled.is_set():
                continue
            if now > work.deadline:
                work.sink(Timeout("the request timed out while queued"))
                continue
            if not work.waited:
                work.waited = True
                self.metrics.queued(now - work.enqueued)
            live.append(work)
        return live

    def _run(self) -> None:
        torch.set_grad_enabled(False)
        while not self._stopping.is_set():
            try:
                self._cycle()
            except Exception as error:  # a bug must not kill the worker: fail the batch, keep serving
                log.exception("engine cycle failed")
                self._fail_all(ApiError(f"internal error: {type(error).__name__}"))

    def _cycle(self) -> None:
        raise NotImplementedError

    def _fail_all(self, error: ApiError) -> None:
        raise NotImplementedError


class GenerationEngine(Engine):
    """Continuous batching for causal language models."""

    def __init__(
        self,
        loaded: LoadedModel,
        max_batch_size: int,
        max_batch_wait_ms: int,
        metrics: EngineMetrics | None = None,
        kv_capacity: int | None = None,
        prefill_tokens: int = PREFILL_TOKENS,
    ) -> None:
        super().__init__(loaded, max_batch_size, max_batch_wait_ms, metrics)
        self.kv_capacity = kv_capacity  # tokens of KV cache the batch's worst case must fit in (kvbudget)
        self.prefill_tokens = prefill_tokens
        self.chunking: _Chunking | None = None  # a prompt longer than prefill_tokens, prefilled a piece a cycle
        self.cache_tokens = 0  # rows x width of the cache now
        self.peak_cache_tokens = 0
        self.active: list[_Sequence] = []
        self.cache: Any = None
        self.mask: torch.Tensor | None = None  # [batch, cache length]; 0 marks padding
        self.positions: torch.Tensor | None = None  # next position id per sequence
        self.last_tokens: torch.Tensor | None = None

    # ---- the loop -----------------------------------------------------------------------------------
    def _cycle(self) -> None:
        busy = bool(self.active) or self.chunking is not None
        fresh = self._take(self.max_batch_size - len(self.active) - (self.chunking is not None), block=not busy)
        joining = []
        for work in self._within_prefill_budget(self._admitted(fresh)):
            try:
                generator = make_generator(work.params, self.loaded.device)
                grammar = work.params.grammar
                constraint = Constraint(grammar) if grammar is not None else None
                detokenizer = Detokenizer(self.loaded.tokenizer)
                joining.append(_Sequence(work, generator, detokenizer, constraint=constraint))
            except (ValueError, RuntimeError) as error:  # refused alone, before it joins the batch
                work.sink(InvalidRequest(str(error), param="seed"))
        if self.chunking is not None:
            self._prefill_chunk(self.chunking)
        elif len(joining) == 1 and len(joining[0].work.prompt_ids) > self.prefill_tokens:
            self.chunking = _Chunking(joining[0])
            self._prefill_chunk(self.chunking)
        elif joining:
            self._prefill(joining)
        if self.active:
            self._decode_step()
        self.metrics.running_sequences(len(self.active))
        self._measure_cache()

    def _row(self, sequence: _Sequence) -> Row:
        length = len(sequence.work.prompt_ids) + len(sequence.output_ids)
        return Row(length, max(0, sequence.work.params.max_new_tokens - len(sequence.output_ids)))

    def _within_prefill_budget(self, works: list[GenerationWork]) -> list[GenerationWork]:
        """The first requests whose prefill, padded to the longest, fits the cycle's prefill budget (at least
        one: a longer prompt is prefilled alone, in pieces); the rest wait for the next cycles, so a burst
        of prompts does not stall the running sequences for one long prefill. Nothing new while a long
        prompt is still being prefilled."""
        if self.chunking is not None:
            self._deferred.extendleft(reversed(works))
            return []
        taken = 0
        longest = 0
        for work in works:
            longest = max(longest, len(work.prompt_ids))
            if taken and (taken + 1) * longest > self.prefill_tokens:
                break
            taken += 1
        self._deferred.extendleft(reversed(works[taken:]))
        return works[:taken]

    def _admitted(self, fresh: list[Work]) -> list[GenerationWork]:
        """The fresh requests whose joining keeps the batch's worst case within the KV budget, in order; the
        first that does not fit and every one after it wait (deferred) for rows to finish. One that could
        not fit even alone is refused."""
        works = [work for work in fresh if isinstance(work, GenerationWork)]
        if self.kv_capacity is None or not works:  # the common cycle, a decode step with nobody new: no arithmetic
            return works
        rows = [self._row(sequence) for sequence in self.active]
        if self.chunking is not None:
            rows.append(self._row(self.chunking.sequence))
        admitted: list[GenerationWork] = []
        for index, work in enumerate(works):
            row = Row(len(work.prompt_ids), work.params.max_new_tokens)
            if peak_tokens([*rows, row]) <= self.kv_capacity:
                rows.append(row)
                admitted.append(work)
            elif not rows:
                work.sink(kv_refusal(row, self.kv_capacity))
            else:
                self._deferred.extendleft(reversed(works[index:]))
                break
        return admitted

    def _measure_cache(self) -> None:
        width = 0 if self.mask is None else int(self.mask.shape[1])
        self.cache_tokens = len(self.active) * width + (self.chunking.done if self.chunking is not None else 0)
        self.peak_cache_tokens = max(self.peak_cache_tokens, self.cache_tokens)
        if self.kv_capacity:
            self.metrics.kv_cache_usage(self.cache_tokens / self.kv_capacity)

    def _fail_all(self, error: ApiError) -> None:
        for sequence in self.active:
            sequence.work.sink(error)
        if self.chunking is not None:
            self.chunking.sequence.work.sink(error)
            self.chunking = None
        self.active, self.cache, self.mask, self.positions, self.last_tokens = [], None, None, None, None

    # ---- prefill: new sequences join ----------------------------------------------------------------
    def _prefill(self, sequences: list[_Sequence]) -> None:
        if not sequences:
            return
        started = time.monotonic()
        device = self.loaded.device
        longest = max(len(s.work.prompt_ids) for s in sequences)
        pad = int(self.loaded.tokenizer.pad_token_id or 0)
        ids = torch.full((len(sequences), longest), pad, dtype=torch.long)
        mask = torch.zeros((len(sequences), longest), dtype=torch.long)
        for row, sequence in enumerate(sequences):
            prompt = sequence.work.prompt_ids
            ids[row, longest - len(prompt) :] = torch.tensor(prompt, dtype=torch.long)
            mask[row, longest - len(prompt) :] = 1
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        ids, mask, positions = ids.to(device), mask.to(device), positions.to(device)
        self.metrics.batch(len(sequences))
        output = self.loaded.model(
            input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True, logits_to_keep=1
        )
        cache = output.past_key_values
        _zero_padding(cache, mask)
        logits = output.logits[:, -1, :].to(torch.float32)
        elapsed = time.monotonic() - started
        for sequence in sequences:
            sequence.started = started
            self.metrics.prefill(elapsed)
            self.metrics.first_token(time.monotonic() - sequence.work.enqueued)
        next_positions = mask.sum(-1)
        self._join(sequences, cache, mask, next_positions)
        self._advance(logits, first=len(self.active) - len(sequences))

    def _prefill_chunk(self, chunking: _Chunking) -> None:
        """The next piece of a long prompt, on top of the cache of its pieces so far; the sequence joins the
        batch with its first token once the last piece is in."""
        sequence = chunking.sequence
        work = sequence.work
        if work.cancelled.is_set() or time.monotonic() > work.deadline:
            if not work.cancelled.is_set():
                work.sink(Timeout("the request timed out while its prompt was read"))
            self.chunking = None
            return
        started = time.monotonic()
        prompt = work.prompt_ids
        end = min(len(prompt), chunking.done + self.prefill_tokens)
        device = self.loaded.device
        ids = torch.tensor([prompt[chunking.done : end]], dtype=torch.long, device=device)
        positions = torch.arange(chunking.done, end, dtype=torch.long, device=device).unsqueeze(0)
        self.metrics.batch(1)
        output = self.loaded.model(
            input_ids=ids, position_ids=positions, past_key_values=chunking.cache, use_cache=True, logits_to_keep=1
        )
        chunking.cache, chunking.done = output.past_key_values, end
        chunking.seconds += time.monotonic() - started
        if end < len(prompt):
            return
        self.chunking = None
        sequence.started = started
        self.metrics.prefill(chunking.seconds)
        self.metrics.first_token(time.monotonic() - work.enqueued)
        mask = torch.ones((1, len(prompt)), dtype=torch.long, device=device)
        self._join([sequence], chunking.cache, mask, torch.tensor([len(prompt)], device=device))
        self._advance(output.logits[:, -1, :].to(torch.float32), first=len(self.active) - 1)

    def _join(self, sequences: list[_Sequence], cache: Any, mask: torch.Tensor, positions: torch.Tensor) -> None:
        if not self.active:
            batch_cache(cache)  # in place when every layer is a plain one; else concatenated as below
            self.cache, self.mask, self.positions = cache, mask, positions
            self.active = list(sequences)
            return
        assert self.mask is not None
        assert self.positions is not None
        width = max(self.mask.shape[1], mask.shape[1])
        for old_layer, new_layer in zip(self.cache.layers, cache.layers, strict=True):
            if isinstance(old_layer, BatchLayer):
                old_layer.join(new_layer.keys, new_layer.values)
                continue
            old_layer.keys = torch.cat([_left_pad(old_layer.keys, width, -2), _left_pad(new_layer.keys, width, -2)])
            old_layer.values = torch.cat(
                [_left_pad(old_layer.values, width, -2), _left_pad(new_layer.values, width, -2)]
            )
        self.mask = torch.cat([_left_pad(self.mask, width, -1), _left_pad(mask, width, -1)])
        self.positions = torch.cat([self.positions, positions])
        self.active += sequences

    # ---- decode: every active sequence advances one token -------------------------------------------
    def _decode_step(self) -> None:
        assert self.mask is not None
        assert self.positions is not None
        assert self.last_tokens is not None
        started = time.monotonic()
        batch = len(self.active)
        ones = torch.ones((batch, 1), dtype=self.mask.dtype, device=self.mask.device)
        self.mask = torch.cat([self.mask, ones], dim=-1)
        self.metrics.batch(batch)
        by_rows: dict[str, Any] = {}
        if self.loaded.rows_attention and isinstance(self.cache.layers[0], BatchLayer):
            by_rows = {"row_lengths": self.mask.sum(-1).tolist()}  # each row's real tokens: the mask is moot
        output = self.loaded.model(
            input_ids=self.last_tokens.unsqueeze(-1),
            attention_mask=self.mask if not by_rows and self._padded() else None,
            position_ids=self.positions.unsqueeze(-1),
            past_key_values=self.cache,
            use_cache=True,
            **by_rows,
        )
        self.cache = output.past_key_values
        self.positions = self.positions + 1
        self._advance(output.logits[:, -1, :].to(torch.float32), first=0)
        self.metrics.decode(time.monotonic() - started)

    def _advance(self, logits: torch.Tensor, first: int) -> None:
        """Sample for rows `first`.. of the batch, emit tokens, and drop the sequences that finished."""
        rows = self.active[first:]
        params = [s.work.params for s in rows]
        histories = [
            History(s.work.prompt_ids, s.output_ids, self.loaded.eos_token_ids) if s.work.params.shapes_logits else None
            for s in rows
        ]
        masks = [s.constraint.mask if s.constraint is not None else None for s in rows]
        chosen, failed_rows = choose(logits, params, [s.generator for s in rows], histories, masks)
        reported = logprobs_of(logits, chosen, [p.top_logprobs for p in params])
        tokens = chosen.tolist()
        if first == 0:
            self.last_tokens = chosen
        else:
            assert self.last_tokens is not None
            self.last_tokens = torch.cat([self.last_tokens, chosen])
        finished: list[int] = []
        now = time.monotonic()
        for offset, (sequence, token, logprobs) in enumerate(zip(rows, tokens, reported, strict=True)):
            index = first + offset
            if sequence.work.cancelled.is_set():
                finished.append(index)
                continue
            if offset in failed_rows:  # this sequence alone ends; the rest of the batch goes on
                sequence.work.sink(ApiError(f"generation failed: {failed_rows[offset]}"))
                finished.append(index)
                continue
            if now > sequence.work.deadline:
                sequence.work.sink(Timeout("the request timed out while generating"))
                finished.append(index)
                continue
            if sequence.constraint is not None and not sequence.constraint.advance(token):
                sequence.work.sink(ApiError("generation failed: the token chosen is outside the JSON grammar"))
                finished.append(index)
                continue
            assert self.positions is not None
            reason = self._append(sequence, token, logprobs, int(self.positions[index]))
            if reason is not None:
                sequence.work.sink(
                    Finished(reason, len(sequence.work.prompt_ids), len(sequence.output_ids), tuple(sequence.held))
                )
                finished.append(index)
        if finished:
            self._drop(finished)

    def _padded(self) -> bool:
        """Whether any position is padding; without padding the model's causal fast path needs no mask."""
        return self.mask is not None and bool((self.mask[:, : self.mask.shape[1] - 1] == 0).any())

    def _append(self, sequence: _Sequence, token: int, logprobs: TokenLogprobs | None, position: int) -> str | None:
        """Add a token (which would be fed at `position`) to a sequence and emit its text; returns a finish
        reason when the sequence is done."""
        params = sequence.work.params
        if (token in self.loaded.eos_token_ids and not params.ignore_eos) or token in params.stop_token_ids:
            sequence.text = sequence.detokenizer.whole(sequence.output_ids)
            self._emit_rest(sequence)
            return "stop"
        sequence.output_ids.append(token)
        out_of_positions = self.loaded.max_positions is not None and position + 1 >= self.loaded.max_positions
        last = len(sequence.output_ids) >= params.max_new_tokens or out_of_positions
        searched_to = len(sequence.text)
        detokenizer = sequence.detokenizer
        sequence.text = detokenizer.whole(sequence.output_ids) if last else detokenizer.add(sequence.output_ids)
        longest_stop = max((len(stop) for stop in params.stop), default=0)
        stop_at = _first_stop(sequence.text, params.stop, start=max(0, searched_to - longest_stop + 1))
        if stop_at is not None:
            sequence.text = sequence.text[:stop_at]
            self._emit(sequence, token, logprobs, final=True)
            return "stop"
        if last:
            self._emit(sequence, token, logprobs, final=True)
            return "length"
        self._emit(sequence, token, logprobs, final=False)
        return None

    def _emit(self, sequence: _Sequence, token: int, logprobs: TokenLogprobs | None, final: bool) -> None:
        text = sequence.text
        safe = len(text)
        if not final:
            if text.endswith("\ufffd"):  # an incomplete multi-byte character: wait for the rest
                safe = len(text.rstrip("\ufffd"))
            if sequence.work.params.stop:  # hold back what could be the start of a stop string
                safe = min(safe, len(text) - max(len(s) for s in sequence.work.params.stop) + 1)
        safe = max(safe, sequence.emitted)
        delta = text[sequence.emitted : safe]
        sequence.emitted = safe
        sequence.send(TokenEvent(token, delta, logprobs))

    def _emit_rest(self, sequence: _Sequence) -> None:
        if sequence.emitted < len(sequence.text):
            sequence.send(TokenEvent(-1, sequence.text[sequence.emitted :], None))
            sequence.emitted = len(sequence.text)

    def _drop(self, indices: list[int]) -> None:
        order = compaction_order(len(self.active), indices)
        if not order:
            self.active, self.cache, self.mask, self.positions, self.last_tokens = [], None, None, None, None
            return
        assert self.mask is not None
        assert self.positions is not None
        assert self.last_tokens is not None
        index = torch.tensor(order, device=self.mask.device)
        self.active = [self.active[i] for i in order]
        self.mask = self.mask.index_select(0, index)
        self.positions = self.positions.index_select(0, index)
        self.last_tokens = self.last_tokens.index_select(0, index)
        # Columns that are padding for every remaining sequence are dead weight: cut them.
        used = self.mask.any(dim=0).nonzero()
        start = int(used[0]) if len(used) else 0
        self.mask = self.mask[:, start:]
        for layer in self.cache.layers:
            if isinstance(layer, BatchLayer):
                layer.select(order, start)
                continue
            layer.keys = layer.keys.index_select(0, index)[..., start:, :]
            layer.values = layer.values.index_select(0, index)[..., start:, :]


class EmbeddingEngine(Engine):
    """Whole requests batched together: one encoder pass, mean pooling over real tokens, L2 norm."""

    def _cycle(self) -> None:
        works = [w for w in self._take(self.max_batch_size, block=True) if isinstance(w, EmbeddingWork)]
        if not works:
            return
        texts = [ids for work in works for ids in work.token_ids]
        vectors: list[list[float]] = []
        for start in range(0, len(texts), self.max_batch_size):
            vectors += self._embed(texts[start : start + self.max_batch_size])
        offset = 0
        for work in works:
            count = len(work.token_ids)
            work.result = vectors[offset : offset + count]
            offset += count
            work.sink(Finished("stop", sum(len(t) for t in work.token_ids), 0))

    def _embed(self, texts: list[list[int]]) -> list[list[float]]:
        started = time.monotonic()
        longest = max(len(t) for t in texts)
        pad = int(self.loaded.tokenizer.pad_token_id or 0)
        ids = torch.full((len(texts), longest), pad, dtype=torch.long)
        mask = torch.zeros((len(texts), longest), dtype=torch.long)
        for row, tokens in enumerate(texts):
            ids[row, : len(tokens)] = torch.tensor(tokens)
            mask[row, : len(tokens)] = 1
        self.metrics.batch(len(texts))
        output = self.loaded.model(input_ids=ids.to(self.loaded.device), attention_mask=mask.to(self.loaded.device))
        hidden = output.last_hidden_state.to(torch.float32)
        weights = mask.to(hidden.device).unsqueeze(-1).to(torch.float32)
        pooled = (hidden * weights).sum(1) / weights.sum(1).clamp(min=1.0)
        normalized = torch.nn.functional.normalize(pooled, p=2, dim=-1)
        self.metrics.prefill(time.monotonic() - started)
        return [row.tolist() for row in normalized.cpu()]

    def _fail_all(self, error: ApiError) -> None:
        return  # each cycle finishes its own works; nothing stays active between cycles


def _left_pad(tensor: torch.Tensor, width: int, dim: int) -> torch.Tensor:
    missing = width - tensor.shape[dim]
    if missing <= 0:
        return tensor
    shape = list(tensor.shape)
    shape[dim] = missing
    return torch.cat([torch.zeros(shape, dtype=tensor.dtype, device=tensor.device), tensor], dim=dim)


def _zero_padding(cache: Any, mask: torch.Tensor) -> None:
    """Padding never attends to anything real, so its keys and values can be NaN on some kernels; zero them
    so that masked-out entries contribute exactly nothing (0 weight x NaN would still be NaN)."""
    keep = mask.bool()[:, None, :, None]
    for layer in cache.layers:
        layer.keys = torch.where(keep, layer.keys, torch.zeros((), dtype=layer.keys.dtype, device=layer.keys.device))
        layer.values = torch.where(
            keep, layer.values, torch.zeros((), dtype=layer.values.dtype, device=layer.values.device)
        )


def _first_stop(text: str, stops: tuple[str, ...], start: int = 0) -> int | None:
    """Where the first stop string begins in `text`, looking only from `start` (what came before was
    searched already)."""
    found = [at for stop in stops if stop and (at := text.find(stop, start)) >= 0]
    return min(found) if found else None
