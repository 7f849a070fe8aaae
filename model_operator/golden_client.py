"""Golden-prompt validation, the adapter: reads the golden set, sends it greedily to both revisions'
Services, and hands the answers to golden.compare. Moves data only.

The operator sends the prompts itself, not a Job: it already holds what validation needs (the spec, both
revisions' Services, the status it must write the verdict into), a Job would need an image pull, a pod
start and a way back for its evidence on every rollout, and the golden set is small. Requests carry the
validation header, so the runtimes count them as source="validation", out of the analysis' SLIs.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import aiohttp
import yaml
from pydantic import TypeAdapter, ValidationError

from model_runtime.contract import VALIDATION_HEADER
from model_runtime.router.divergence import top_tokens

from .api.durations import parse_duration
from .api.spec import GoldenPrompt, Validation
from .api.status import Fingerprints
from .golden import Answer, Refusal, RevisionAnswers, ValidationOutcome, blocked, compare, unanswered

TOP_LOGPROBS = 5
_PROMPTS = TypeAdapter(list[GoldenPrompt])


class Unreachable(Exception):
    """A revision's Service could not be asked: no decision about the model follows."""


def golden_set(rules: Validation, read_config_map: Callable[[str, str], str]) -> list[GoldenPrompt]:
    """The inline prompts, then the ConfigMap's; raises LookupError or ValueError saying what is wrong."""
    prompts = list(rules.prompts or [])
    source = rules.prompts_from
    if source is not None:
        text = read_config_map(source.name, source.key)
        where = f"ConfigMap {source.name} key {source.key}"
        try:
            loaded = yaml.safe_load(text)
        except yaml.YAMLError as error:
            raise ValueError(f"{where} is not JSON or YAML: {error}") from None
        try:
            prompts += _PROMPTS.validate_python(loaded)
        except ValidationError as error:
            first = error.errors()[0]
            place = ".".join(str(part) for part in first["loc"])
            raise ValueError(f"{where}: [{place}] {first['msg']}") from None
    names = [prompt.name for prompt in prompts]
    if len(set(names)) != len(names):
        raise ValueError(f"golden prompt names repeat: {sorted({n for n in names if names.count(n) > 1})}")
    if not prompts:
        raise ValueError("the golden set is empty")
    return prompts


def request_of(prompt: GoldenPrompt, model: str) -> tuple[str, dict[str, Any]]:
    """(path, body): greedy, with the top logprobs the divergence compares."""
    common = {"model": model, "max_tokens": prompt.max_tokens, "temperature": 0}
    if prompt.messages is not None:
        messages = [message.model_dump() for message in prompt.messages]
        return "/v1/chat/completions", {
            **common,
            "messages": messages,
            "logprobs": True,
            "top_logprobs": TOP_LOGPROBS,
        }
    return "/v1/completions", {**common, "prompt": prompt.prompt, "logprobs": TOP_LOGPROBS}


def tokenize_request_of(prompt: GoldenPrompt, model: str) -> dict[str, Any]:
    """vLLM's /tokenize body for the same text the golden request sends."""
    if prompt.messages is not None:
        return {"model": model, "messages": [message.model_dump() for message in prompt.messages]}
    return {"model": model, "prompt": prompt.prompt}


def answer_of(body: Mapping[str, Any], seconds: float) -> Answer:
    choice = (body.get("choices") or [{}])[0]
    message = choice.get("message")
    text = str(message.get("content") or "") if isinstance(message, Mapping) else str(choice.get("text") or "")
    logprobs = choice.get("logprobs")
    tokens: list[str] = []
    if isinstance(logprobs, Mapping):
        if isinstance(logprobs.get("tokens"), list):
            tokens = [str(token) for token in logprobs["tokens"]]
        else:
            tokens = [str(entry.get("token")) for entry in logprobs.get("content") or [] if isinstance(entry, Mapping)]
    return Answer(
        text=text,
        tokens=tuple(tokens),
        top=tuple(top_tokens(body)),
        seconds=seconds,
    )


class RevisionClient:
    """One revision's Service."""

    def __init__(self, session: aiohttp.ClientSession, revision: str, url: str) -> None:
        self.session, self.revision, self.url = session, revision, url

    async def _call(self, method: str, path: str, body: Mapping[str, Any] | None = None) -> tuple[int, Any]:
        try:
            async with self.session.request(
                method, self.url + path, json=body, headers={VALIDATION_HEADER: "1"}
            ) as response:
                text = await response.text()
                try:
                    return response.status, json.loads(text)
                except ValueError:
                    return response.status, text
        except (aiohttp.ClientError, OSError) as error:
            raise Unreachable(
                f"{self.revision} at {self.url} is unreachable: {error or type(error).__name__}"
            ) from None

    async def model(self) -> tuple[str, Fingerprints]:
        status, body = await self._call("GET", "/v1/models")
        try:
            entry = body["data"][0]
            return str(entry["id"]), Fingerprints(
                tokenizer=entry.get("tokenizer_fingerprint"), config=entry.get("config_fingerprint")
            )
        except (KeyError, IndexError, TypeError):
            raise Unreachable(f"{self.revision}: /v1/models answered {status} without a model") from None

    async def ask(self, prompt: GoldenPrompt, model: str) -> Answer | Refusal:
        path, body = request_of(prompt, model)
        started = time.monotonic()
        status, answer = await self._call("POST", path, body)
        seconds = time.monotonic() - started
        if status != 200 or not isinstance(answer, Mapping):
            error = answer.get("error") if isinstance(answer, Mapping) else None
            message = error.get("message") if isinstance(error, Mapping) else str(answer)[:200]
            return Refusal(status, str(message))
        return dataclasses.replace(answer_of(answer, seconds), prompt_ids=await self.token_ids(prompt, model))

    async def token_ids(self, prompt: GoldenPrompt, model: str) -> tuple[int, ...] | None:
        """The prompt's token ids from /tokenize; None from a server without it (not every server has it)."""
        status, body = await self._call("POST", "/tokenize", tokenize_request_of(prompt, model))
        tokens = body.get("tokens") if status == 200 and isinstance(body, Mapping) else None
        if not isinstance(tokens, list) or not all(isinstance(token, int) for token in tokens):
            return None
        return tuple(tokens)


async def _answers(client: RevisionClient, prompts: Sequence[GoldenPrompt]) -> RevisionAnswers:
    model, fingerprints = await client.model()
    answers: dict[str, Answer | Refusal] = {}
    for prompt in prompts:  # one at a time: the latencies compared are each prompt's alone
        answers[prompt.name] = await client.ask(prompt, model)
    return RevisionAnswers(client.revision, fingerprints, answers)


async def validate(
    rules: Validation,
    prompts: Sequence[GoldenPrompt],
    stable: tuple[str, str],
    canary: tuple[str, str],
) -> ValidationOutcome:
    """Both revisions answer the golden set side by side; (revision, url) each. Stable not answering in
    time, or either being unreachable, blocks the gate; a canary slower than `timeout` where stable was
    not fails it."""
    budget = parse_duration(rules.timeout)
    # The whole set's budget is enforced below, per revision; the session's own limit only stops a request
    # that outlives it, so that a slow revision is told from an unreachable one.
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=budget + 5)) as session:
        stable_task = asyncio.create_task(_answers(RevisionClient(session, *stable), prompts))
        canary_task = asyncio.create_task(_answers(RevisionClient(session, *canary), prompts))
        _, pending = await asyncio.wait((stable_task, canary_task), timeout=budget)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
    for task in (stable_task, canary_task):
        if task.done() and not task.cancelled() and isinstance(task.exception(), Unreachable):
            return blocked(canary[0], stable[0], str(task.exception()))
    if stable_task in pending:
        return blocked(canary[0], stable[0], f"stable did not answer the golden set within timeout ({rules.timeout})")
    if canary_task in pending:
        return unanswered(
            canary[0], stable[0], f"canary did not answer the golden set within timeout ({rules.timeout})"
        )
    return compare(prompts, stable_task.result(), canary_task.result(), rules)
