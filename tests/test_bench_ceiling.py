"""The roofline the runtime benchmark reports ModelShip against: bound by streaming the weights alone, by
matmul throughput in a batch, and the prompts' prefill counted in the work per generated token."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.runtime.peers_run import LEVELS, NEW_TOKENS, PROMPT_TOKENS, Ceiling, main, mean_prompt, table

# 1e8 parameters; 10 GB/s; 100 GFLOP/s in float32
ROOF = Ceiling(read_gb_per_s=10.0, matmul_gflops={"float32": 100.0, "bfloat16": 400.0}, parameters=100_000_000)


@pytest.mark.parametrize(
    ("concurrency", "dtype", "prompt", "expected"),
    [
        (1, "float32", 0.0, 25.0),  # 0.4 GB per step at 10 GB/s: 40 ms per token
        (8, "float32", 0.0, 200.0),  # still streaming: 8 tokens per 40 ms step
        (64, "float32", 0.0, 500.0),  # compute: 0.2 GFLOP per token at 100 GFLOP/s
        (64, "bfloat16", 0.0, 2000.0),  # half the bytes, four times the FLOP/s: still compute, 0.5 ms a token
        (64, "float32", float(NEW_TOKENS), 250.0),  # a prompt as long as the answer doubles the work
    ],
)
def test_the_ceiling_is_the_slower_of_streaming_and_compute(
    concurrency: int, dtype: str, prompt: float, expected: float
) -> None:
    assert ROOF.tokens_per_s(concurrency, dtype, prompt) == pytest.approx(expected)


def test_the_mean_prompt_is_of_the_requests_sent_at_each_level() -> None:
    assert mean_prompt(1) == pytest.approx(sum(PROMPT_TOKENS[:4]) / 4)
    assert mean_prompt(8) == pytest.approx(sum(PROMPT_TOKENS[index % 6] for index in range(LEVELS[8])) / LEVELS[8])


def test_the_table_puts_modelships_best_dtype_against_the_best_peer() -> None:
    def row(tps: float) -> dict[str, float]:
        return {"tokens_per_s": tps, "ttft_p50": 0.1, "ttft_p99": 0.2, "itl_p50": 0.01, "itl_p99": 0.02, "e2e_p99": 1}

    figures = {"modelship": [row(10)], "modelship-bf16": [row(20)], "vllm": [row(40)], "llamacpp": [row(30)]}
    ratios = table(figures, ROOF, [64]).splitlines()[-1]
    assert ratios.startswith("| 64 | vllm (40.0 tok/s) | 0.50 (modelship-bf16) |"), ratios


@pytest.mark.parametrize("content", [None, "not json", '{"ceiling": {}}', '{"ceiling": {"read_gb_per_s": 1}}'])
def test_table_from_a_file_that_is_not_a_saved_run_is_a_usage_error(
    content: str | None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "run.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(SystemExit) as exited:
        main(["--table-from", str(path)])
    assert exited.value.code == 2
    assert "not a run written with --json" in capsys.readouterr().err


def test_table_from_a_saved_run_prints_its_tables(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    figures = {"tokens_per_s": 50.0, "ttft_p50": 0.1, "ttft_p99": 0.2, "itl_p50": 0.01, "itl_p99": 0.02}
    saved = {
        "ceiling": {"read_gb_per_s": 10.0, "matmul_gflops": {"float32": 100.0}, "parameters": 100_000_000},
        "figures": {"modelship": [figures | {"e2e_p99": 1.0, "concurrency": 8}]},
    }
    path = tmp_path / "run.json"
    path.write_text(json.dumps(saved))
    assert main(["--table-from", str(path)]) == 0
    assert "| 8 | modelship | 50.0 |" in capsys.readouterr().out
