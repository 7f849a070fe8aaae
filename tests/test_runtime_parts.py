"""Settings, device and dtype choice, the float32 head, embeddings and input drift."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest
import torch

from model_runtime.drift import DriftMonitor, jensen_shannon
from model_runtime.model import Float32Head, ModelLoadError, Placement, choose_placement, cpu_computes_bf16, load
from model_runtime.settings import SettingsError, parse

GENERATE, EMBED = "text-generation", "embeddings"


@pytest.mark.parametrize(
    ("device", "dtype", "cuda", "bf16", "cpu_bf16", "task", "expected"),
    [
        ("auto", "auto", False, False, False, GENERATE, ("cpu", torch.float32)),
        ("auto", "auto", False, False, True, GENERATE, ("cpu", torch.bfloat16)),  # AVX512_BF16 or AMX
        ("auto", "auto", False, False, True, EMBED, ("cpu", torch.float32)),  # vectors must not move with the CPU
        ("auto", "auto", True, True, False, GENERATE, ("cuda", torch.bfloat16)),
        ("auto", "auto", True, True, False, EMBED, ("cuda", torch.bfloat16)),
        ("auto", "auto", True, False, True, GENERATE, ("cuda", torch.float16)),
        ("cpu", "auto", True, True, False, GENERATE, ("cpu", torch.float32)),
        ("cpu", "auto", True, True, True, GENERATE, ("cpu", torch.bfloat16)),
        ("auto", "float16", False, False, False, GENERATE, ("cpu", torch.float16)),
        ("auto", "float32", False, False, True, GENERATE, ("cpu", torch.float32)),  # asked for, whatever the CPU
        ("cpu", "bfloat16", False, False, False, EMBED, ("cpu", torch.bfloat16)),
        ("cuda", "float32", True, True, True, GENERATE, ("cuda", torch.float32)),
    ],
)
def test_placement(
    device: str, dtype: Any, cuda: bool, bf16: bool, cpu_bf16: bool, task: str, expected: tuple[str, torch.dtype]
) -> None:
    placement = choose_placement(device, dtype, cuda_available=cuda, cuda_bf16=bf16, cpu_bf16=cpu_bf16, task=task)
    assert (placement.device, placement.dtype) == expected


def test_the_cpu_check_agrees_with_the_cpus_flags() -> None:
    flags = set(Path("/proc/cpuinfo").read_text().split())
    assert cpu_computes_bf16() == bool({"avx512_bf16", "amx_bf16", "amx_tile"} & flags)


def test_cuda_requested_without_cuda_is_a_clear_error() -> None:
    with pytest.raises(ModelLoadError, match="no CUDA device"):
        choose_placement("cuda", "auto", cuda_available=False, cuda_bf16=False)


def test_logits_stay_float32_in_a_bfloat16_model(tiny_model_dir: Any) -> None:
    loaded = load(str(tiny_model_dir), "text-generation", Placement("cpu", torch.bfloat16))
    assert isinstance(loaded.model.get_output_embeddings(), Float32Head)
    assert next(loaded.model.transformer.parameters()).dtype == torch.bfloat16
    with torch.no_grad():
        logits = loaded.model(input_ids=torch.tensor([[1, 2, 3]])).logits
    assert logits.dtype == torch.float32


def test_missing_model_path_is_a_clear_error(tmp_path: Any) -> None:
    with pytest.raises(ModelLoadError, match=r"neither a \.gguf file nor a model folder"):
        load(str(tmp_path), "text-generation", Placement("cpu", torch.float32))
    with pytest.raises(ModelLoadError, match="does not exist"):
        load(str(tmp_path / "m.gguf"), "text-generation", Placement("cpu", torch.float32))


def test_settings_from_env_and_flags() -> None:
    env = {"MODELSHIP_MODEL_PATH": "/models/a", "MODELSHIP_MAX_BATCH_SIZE": "8", "MODELSHIP_PORT": "9000"}
    settings = parse(["--port", "9100"], env)
    assert settings.model_path == "/models/a"
    assert settings.max_batch_size == 8
    assert settings.port == 9100  # the flag wins


@pytest.mark.parametrize(
    ("argv", "env", "words"),
    [
        ([], {}, "--model-path / MODELSHIP_MODEL_PATH: Field required"),
        (["--model-path", "/m", "--port", "http"], {}, "--port: Input should be a valid integer"),
        (["--model-path", "/m"], {"MODELSHIP_MAX_BATCH_SIZE": "0"}, "MODELSHIP_MAX_BATCH_SIZE"),
        (["--model-path", "/m", "--task", "translation"], {}, "--task"),
        (["--model-path", "/m", "--bogus"], {}, "unknown arguments: --bogus"),
        (["--model-path", "/m"], {"MODELSHIP_FAULT_ERROR_RATE": "0.5"}, "MODELSHIP_FAULTS_ENABLED=true"),
        (["--model-path", "/m"], {"MODELSHIP_FAULT_EMPTY_RATE": "1"}, "MODELSHIP_FAULTS_ENABLED=true"),
        (["--model-path", "/m"], {"MODELSHIP_FAULT_EMPTY_RATE": "1.5"}, "MODELSHIP_FAULT_EMPTY_RATE"),
        (["--model-path", "/m"], {"MODELSHIP_KV_CACHE_TOKENS": "0"}, "MODELSHIP_KV_CACHE_TOKENS"),
        (["--model-path", "/m", "--kv-cache-tokens", "lots"], {}, "--kv-cache-tokens: Input should be a valid integer"),
    ],
)
def test_bad_settings_are_named(argv: list[str], env: dict[str, str], words: str) -> None:
    with pytest.raises(SettingsError) as error:
        parse(argv, env)
    assert words in str(error.value)


def test_jensen_shannon_bounds() -> None:
    assert jensen_shannon([0.5, 0.5], [0.5, 0.5]) == pytest.approx(0.0)
    assert jensen_shannon([1.0, 0.0], [0.0, 1.0]) == pytest.approx(1.0)


def _zipf_prompts(rng: random.Random, vocabulary: list[int], count: int) -> list[list[int]]:
    """Prompts whose tokens follow a Zipf law over `vocabulary` (most frequent first), as text does."""
    weights = [1 / (rank + 1) for rank in range(len(vocabulary))]
    return [rng.choices(vocabulary, weights, k=rng.randint(5, 30)) for _ in range(count)]


def test_input_drift_rises_for_shifted_prompts_only() -> None:
    rng = random.Random(7)
    usual = list(range(5000))
    rng.shuffle(usual)
    other_topic = list(range(5000))
    rng.shuffle(other_topic)  # the same vocabulary, other tokens frequent: a new topic or language
    steady, shifted = DriftMonitor(window=200), DriftMonitor(window=200)
    for monitor in (steady, shifted):
        for prompt in _zipf_prompts(rng, usual, 200):
            monitor.observe(prompt)
    assert steady.score() is None  # the current window is not full yet
    for prompt in _zipf_prompts(rng, usual, 200):
        steady.observe(prompt)
    for prompt in _zipf_prompts(rng, other_topic, 200):
        shifted.observe(prompt)
    steady_score, shifted_score = steady.score(), shifted.score()
    assert steady_score is not None
    assert shifted_score is not None
    assert steady_score < 0.05
    assert shifted_score > 0.15
    assert shifted_score > 4 * steady_score


async def test_embeddings_are_normalised_and_batched(tmp_path: Any) -> None:
    from transformers import BertConfig, BertModel

    from model_runtime.tinymodel import build_tokenizer
    from tests.runtime_helpers import running_app

    tokenizer = build_tokenizer()
    torch.manual_seed(0)
    BertModel(
        BertConfig(
            vocab_size=len(tokenizer),
            hidden_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=64,
            max_position_embeddings=128,
        )
    ).save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    loaded = load(str(tmp_path), "embeddings", Placement("cpu", torch.float32))
    async with running_app(loaded, task="embeddings", max_input_tokens=64) as (client, _):
        body = await (
            await client.post("/v1/embeddings", json={"model": "model", "input": ["hello", "world x"]})
        ).json()
        vectors = [item["embedding"] for item in body["data"]]
        assert len(vectors) == 2
        assert all(abs(sum(v * v for v in vector) - 1.0) < 1e-4 for vector in vectors)
        alone = await (await client.post("/v1/embeddings", json={"model": "model", "input": "world x"})).json()
        assert alone["data"][0]["embedding"] == pytest.approx(vectors[1], abs=1e-5)
        empty = await client.post("/v1/embeddings", json={"model": "model", "input": []})
        assert empty.status == 400
        generation = await client.post("/v1/completions", json={"model": "model", "prompt": "x"})
        assert generation.status == 400


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("hf://HuggingFaceTB/SmolLM2-135M-Instruct", ("HuggingFaceTB/SmolLM2-135M-Instruct", {}, False)),
        ("hf://org/name@v1.2", ("org/name", {"revision": "v1.2"}, False)),
    ],
)
def test_hub_uris_resolve_to_a_repository_and_revision(uri: str, expected: tuple[Any, ...]) -> None:
    from model_runtime.model import source_of

    assert source_of(uri) == expected


@pytest.mark.parametrize("uri", ["hf://justorg", "hf://a/b/c", "hf:///name"])
def test_bad_hub_uris_are_refused(uri: str) -> None:
    from model_runtime.model import source_of

    with pytest.raises(ModelLoadError, match="not hf://ORG/NAME"):
        source_of(uri)
