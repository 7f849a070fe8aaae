"""Analyses batched across ModelDeployments: when looks go out together, that the union query answers each
look exactly as its own query would (Prometheus' engine, through promtool, as the oracle), and that the
answer is split back to the right ModelDeployment and revision."""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from e2e.cluster import tools
from model_operator import promql
from model_operator.analysis import Measurement, TrackSample
from model_operator.analysis_batch import AnalysisBatcher, LookRequest, slot_end
from model_operator.prometheus import Look, PrometheusSource
from model_runtime.contract import IDENTITY_LABELS


@pytest.mark.parametrize(
    ("now", "slot", "expected"),
    [
        (100.2, 1.0, 101.0),
        (100.0, 1.0, 101.0),  # on a boundary: that slot's batch is the one starting now
        (100.99, 1.0, 101.0),
        (7.0, 2.5, 7.5),
        (12.3, 0.0, 12.3),  # no batching: at once
    ],
)
def test_a_look_goes_out_at_the_end_of_its_slot(now: float, slot: float, expected: float) -> None:
    assert slot_end(now, slot) == pytest.approx(expected)


class Recorder:
    """A measure_many that records each batch and answers each look with its own window."""

    def __init__(self, fail: bool = False) -> None:
        self.batches: list[list[Look]] = []
        self.fail = fail

    def __call__(self, looks: Sequence[Look]) -> list[Measurement]:
        self.batches.append(list(looks))
        if self.fail:
            raise RuntimeError("prometheus adapter bug")
        track = TrackSample(1.0, 0.0, None, scraped=True)
        return [Measurement(track, track, None, queries={"look": f"{lk.name}@{lk.window_seconds}"}) for lk in looks]


def request(name: str, window: float = 30.0) -> LookRequest:
    return LookRequest("ns", name, "s", "c", lambda _now: window, with_drift=False)


def run(coroutine: Any) -> Any:
    return asyncio.run(coroutine)


def test_looks_falling_due_in_one_slot_share_one_batch_and_each_gets_its_own_answer() -> None:
    recorder = Recorder()

    async def scenario() -> list[Measurement]:
        batcher = AnalysisBatcher(recorder, slot_seconds=0.2)
        return await asyncio.gather(*(batcher.measure(request(f"m{i}", window=i + 1)) for i in range(20)))

    answers = run(scenario())
    assert len(recorder.batches) == 1
    assert [lk.name for lk in recorder.batches[0]] == [f"m{i}" for i in range(20)]
    assert [a.queries["look"] for a in answers] == [f"m{i}@{i + 1}" for i in range(20)]


def test_a_batch_is_split_at_the_query_size_limit() -> None:
    recorder = Recorder()

    async def scenario() -> None:
        batcher = AnalysisBatcher(recorder, slot_seconds=0.1, max_looks=7)
        await asyncio.gather(*(batcher.measure(request(f"m{i}")) for i in range(20)))

    run(scenario())
    assert sorted(len(batch) for batch in recorder.batches) == [6, 7, 7]
    assert sorted(lk.name for batch in recorder.batches for lk in batch) == sorted(f"m{i}" for i in range(20))


def test_looks_in_later_slots_go_in_later_batches() -> None:
    recorder = Recorder()

    async def scenario() -> None:
        batcher = AnalysisBatcher(recorder, slot_seconds=0.1)
        await asyncio.gather(batcher.measure(request("a")), batcher.measure(request("b")))
        await batcher.measure(request("c"))

    run(scenario())
    assert [[lk.name for lk in batch] for batch in recorder.batches] == [["a", "b"], ["c"]]


def test_the_window_is_taken_when_the_batch_goes_out_not_when_the_look_fell_due() -> None:
    recorder = Recorder()
    started = datetime.now(UTC)
    seen: list[datetime] = []

    def window_at(now: datetime) -> float:
        seen.append(now)
        return (now - started).total_seconds()

    async def scenario() -> None:
        batcher = AnalysisBatcher(recorder, slot_seconds=0.5)
        await batcher.measure(LookRequest("ns", "m", "s", "c", window_at, with_drift=False))

    before = time.time()
    run(scenario())
    (sent,) = seen
    assert sent.timestamp() == pytest.approx(slot_end(before, 0.5), abs=0.05)


def test_a_cancelled_look_leaves_its_batch_and_the_others_are_answered() -> None:
    recorder = Recorder()

    async def scenario() -> Measurement:
        batcher = AnalysisBatcher(recorder, slot_seconds=0.2)
        gone = asyncio.create_task(batcher.measure(request("gone")))
        kept = asyncio.create_task(batcher.measure(request("kept")))
        await asyncio.sleep(0)
        gone.cancel()
        return await kept

    answer = run(scenario())
    assert answer.queries["look"] == "kept@30.0"
    assert [[lk.name for lk in batch] for batch in recorder.batches] == [["kept"]]


def test_an_adapter_failure_fails_every_look_of_the_batch_with_it() -> None:
    async def scenario() -> list[Any]:
        batcher = AnalysisBatcher(Recorder(fail=True), slot_seconds=0.05)
        return await asyncio.gather(*(batcher.measure(request(f"m{i}")) for i in range(3)), return_exceptions=True)

    answers = run(scenario())
    assert all(isinstance(answer, RuntimeError) for answer in answers)


# ---- the union query, evaluated by Prometheus' engine ------------------------------------------------

LOOKS = [
    Look("team-a", "chat", "s1", "c1", 60, with_drift=True, with_content=True),
    Look("team-a", "embed", "s1", "c2", 120, with_drift=False),  # the same stable revision name, another model
    Look("team-b", "chat", "s3", "c3", 90, with_drift=True, with_content=True),  # the same model name, elsewhere
    # from vLLM to ModelShip's runtime behind a gateway: each revision from its own server's series
    Look("team-c", "chat", "v1", "m1", 60, with_drift=False, sources=(promql.VLLM, promql.RUNTIME)),
]


def _series(metric: str, labels: dict[str, str], values: str) -> dict[str, str]:
    body = ",".join(f'{k}="{v}"' for k, v in labels.items())
    return {"series": f"{metric}{{{body}}}", "values": values}


def _input_series() -> list[dict[str, str]]:
    series = []
    identities = [(lk.namespace, lk.name, rev) for lk in LOOKS for rev in (lk.stable, lk.canary)]
    identities.append(("team-a", "chat", "old"))  # a revision nobody asks about
    for step, (namespace, name, revision) in enumerate(identities, start=1):
        identity = {"namespace": namespace, "model_deployment": name, "revision": revision}
        series.append(_series("modelship_model_ready", identity, "1x80"))
        for code, rate in (("200", step), ("503", step % 3 + 1)):
            labels = {**identity, "endpoint": "completions", "source": "user", "code": code}
            series.append(_series("modelship_requests_total", labels, f"0+{rate}x80"))
        mirror = {**identity, "endpoint": "completions", "source": "mirror", "code": "500"}
        series.append(_series("modelship_requests_total", mirror, "0+7x80"))
        for bound, share in (("0.5", 1), ("1", 2), ("+Inf", 3)):
            labels = {**identity, "endpoint": "completions", "source": "user", "le": bound}
            series.append(_series("modelship_request_duration_seconds_bucket", labels, f"0+{share * step}x80"))
        for bound, share in (("0.05", 1), ("+Inf", 2)):
            series.append(_series("modelship_output_divergence_bucket", {**identity, "le": bound}, f"0+{share}x80"))
        series.append(_series("modelship_output_divergence_sum", identity, "0+0.03x80"))
        for outcome, rate in (("all", step + 1), ("empty", 1)):
            labels = {**identity, "endpoint": "chat_completions", "source": "user", "outcome": outcome}
            series.append(_series("modelship_choices_total", labels, f"0+{rate}x80"))
        mirrored = {**identity, "endpoint": "completions", "source": "mirror", "outcome": "truncated"}
        series.append(_series("modelship_choices_total", mirrored, "0+5x80"))
        embedded = {**identity, "endpoint": "embeddings", "source": "user", "outcome": "all"}  # never counted
        series.append(_series("modelship_choices_total", embedded, "0+5x80"))
        series.extend(_vllm_series(identity, step))
    return series


def _vllm_series(identity: dict[str, str], step: int) -> list[dict[str, str]]:
    """What vLLM exports, with the identity labels the scrape's relabelling adds (every revision has them, so
    a query reading a revision from the wrong server's series would show in the totals)."""
    series = [_series("vllm:num_requests_running", identity, "1x80")]
    for status, rate in (("2xx", step), ("5xx", 1), ("4xx", 2)):
        labels = {**identity, "handler": "/v1/chat/completions", "method": "POST", "status": status}
        series.append(_series("http_requests_total", labels, f"0+{rate}x80"))
    health = {**identity, "handler": "/v1/models", "method": "GET", "status": "5xx"}  # not an answered route
    series.append(_series("http_requests_total", health, "0+9x80"))
    for bound, share in (("0.5", 1), ("1", 2), ("+Inf", 3)):
        labels = {**identity, "model_name": "chat", "engine": "0", "le": bound}
        series.append(_series("vllm:e2e_request_latency_seconds_bucket", labels, f"0+{share * step}x80"))
    return series


def _queries(look: Look) -> dict[str, str]:
    queries = {"scraped": look.scraped_query(), **look.queries()}
    if look.with_drift:
        queries["driftSum"] = promql.divergence_sum(look.namespace, look.name, look.canary, look.window_seconds)
    return queries


EXTRA_KEY = {"p99LatencySeconds": ["le"], "drift": ["le"], "contentIssues": ["outcome"]}


def test_the_union_answers_each_look_exactly_as_its_own_query(tmp_path: Path) -> None:
    """For every SLI: the batched query minus each look's own query, matched on the identity labels, is
    zero for exactly the look's series; and the batch holds no series beyond the looks'."""
    tests = []
    for sli in ("scraped", "requests", "errorRate", "p99LatencySeconds", "drift", "driftSum", "contentIssues"):
        parts = [(look, _queries(look)[sli]) for look in LOOKS if sli in _queries(look)]
        union = promql.union([query for _, query in parts])
        keys = [*IDENTITY_LABELS, *EXTRA_KEY[sli]] if sli in EXTRA_KEY else list(IDENTITY_LABELS)
        expected_total = 0
        for look, own in parts:
            revisions = [look.canary] if sli in ("drift", "driftSum") else [look.stable, look.canary]
            bounds = {
                "p99LatencySeconds": ["0.5", "1", "+Inf"],
                "drift": ["0.05", "+Inf"],
                "contentIssues": ["all", "empty"],
            }.get(sli, [None])
            samples = []
            for revision in revisions:
                for bound in bounds:
                    labels = f'namespace="{look.namespace}",model_deployment="{look.name}",revision="{revision}"'
                    labels += f',{EXTRA_KEY[sli][0]}="{bound}"' if bound else ""
                    samples.append({"labels": "{" + labels + "}", "value": 0})
            expected_total += len(samples)
            on = ", ".join(keys)
            tests.append({"expr": f"({union}) - on ({on}) ({own})", "eval_time": "10m", "exp_samples": samples})
            positive = [{**sample, "value": 1} for sample in samples]
            tests.append({"expr": f"({own}) > bool 0", "eval_time": "10m", "exp_samples": positive})
        tests.append(
            {"expr": f"count({union})", "eval_time": "10m", "exp_samples": [{"labels": "{}", "value": expected_total}]}
        )
    spec = {"tests": [{"interval": "15s", "input_series": _input_series(), "promql_expr_test": tests}]}
    path = tmp_path / "union_test.yaml"
    path.write_text(yaml.safe_dump(spec))
    promtool = tools.PROMETHEUS.binary("promtool")
    result = subprocess.run(
        [str(promtool), "test", "rules", str(path)], capture_output=True, text=True, check=False, timeout=120
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "SUCCESS" in result.stdout


class CannedPrometheus(PrometheusSource):
    """Answers each union with series for some looks only, as a Prometheus missing some targets would."""

    def __init__(self) -> None:
        super().__init__("http://127.0.0.1:9", 1.0)
        self.asked: list[str] = []

    def _query(self, query: str) -> list[dict[str, Any]]:
        self.asked.append(query)

        def series(namespace: str, name: str, revision: str, value: float, **extra: str) -> dict[str, Any]:
            labels = {"namespace": namespace, "model_deployment": name, "revision": revision, **extra}
            return {"metric": labels, "value": [0, str(value)]}

        if "modelship_model_ready" in query:  # scraped: team-b/chat's canary is not
            scraped = [("team-a", "chat", "s1"), ("team-a", "chat", "c1"), ("team-a", "embed", "s1")]
            scraped += [("team-a", "embed", "c2"), ("team-b", "chat", "s3")]
            return [series(*identity, 1) for identity in scraped]
        if "choices_total" in query:
            return [
                series("team-a", "chat", "s1", 90, outcome="all"),
                series("team-a", "chat", "s1", 10, outcome="empty"),
                series("team-a", "chat", "c1", 40, outcome="all"),
            ]
        if "_sum" in query:
            return [series("team-a", "chat", "c1", 0.6)]
        if "output_divergence_bucket" in query:
            return [series("team-a", "chat", "c1", 10, le="0.05"), series("team-a", "chat", "c1", 20, le="+Inf")]
        if "duration_seconds_bucket" in query:
            return [series("team-a", "embed", "c2", 4, le="+Inf"), series("team-a", "embed", "c2", 3, le="1")]
        if 'code=~"5.."' in query:
            return [series("team-a", "chat", "c1", 2)]
        return [
            series("team-a", "chat", "s1", 100),
            series("team-a", "chat", "c1", 50),
            series("team-a", "embed", "s1", 7),
        ]


def test_the_answer_is_split_back_by_namespace_model_and_revision() -> None:
    source = CannedPrometheus()
    chat, embed, other = source.measure_many(LOOKS[:3])
    assert len(source.asked) == 7  # one query per SLI for the three looks
    assert (chat.stable.requests, chat.canary.requests, chat.stable.errors, chat.canary.errors) == (100, 50, 0, 2)
    assert chat.drift is not None
    assert chat.drift.comparisons == 20
    assert chat.drift.mean == pytest.approx(0.03)
    assert chat.with_content
    assert chat.stable.content == {"all": 90, "empty": 10}
    assert chat.canary.content == {"all": 40}
    assert other.stable.content == {}  # scraped, no choice yet: none of any kind
    assert other.canary.content is None  # not scraped
    assert not embed.with_content
    assert embed.stable.content is None
    assert embed.stable.requests == 7
    assert embed.canary.requests == 0  # scraped, no request yet: zero, not blind
    assert embed.canary.buckets == ((1.0, 3.0), (float("inf"), 4.0))
    assert embed.drift is None
    assert other.canary.scraped is False
    assert other.canary.requests is None
    assert other.drift is not None
    assert (other.drift.comparisons, other.drift.mean) == (0, None)
    assert other.queries["requests"] == LOOKS[2].queries()["requests"]


def test_a_failed_union_query_fails_each_look_alike_with_its_own_queries() -> None:
    source = PrometheusSource("http://127.0.0.1:9", 0.5)  # nothing listens on the discard port
    answers = source.measure_many(LOOKS)
    assert all(answer.query_error for answer in answers)
    assert [answer.queries for answer in answers] == [look.queries() for look in LOOKS]
