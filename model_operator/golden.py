"""Golden-prompt validation, the judgment: how a canary answered the golden set next to stable -> a verdict.

Pure: the answers come in (golden_client gathers them), a ValidationOutcome goes out. Each check is one
MetricResult, like the analysis' SLIs, so status, Events and history show both the same way:

- tokenizer: the tokenizer digests differ (unless the spec says the change is intended);
- tokenIds: the golden prompts' token ids (each revision's /tokenize) differ, likewise;
- divergence: the worst prompt's mean Jensen-Shannon divergence of next-token distributions, over the
  positions where the greedy answers still agree (after the first different token the two revisions
  condition on different text, and any divergence there says nothing more);
- exactMatch: the share of prompts whose greedy answers are the same text;
- correctness: each revision's share of answers meeting the prompts' expectations;
- latencySeconds: the median time per prompt.

A check that cannot be made (no logprobs, no expectations, a runtime without digests) is NoData, never a
pass in disguise; only Fail fails.
"""

from __future__ import annotations

import json
import re
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import jsonschema

from model_runtime.router.divergence import mean_divergence

from .api.spec import Expectation, GoldenPrompt, Validation
from .api.status import Fingerprints, GoldenEvidence, MetricResult, Verdict

ANSWER_SHOWN = 200  # characters of each answer kept in status
WORST_SHOWN = 3
LATENCY_FLOOR_SECONDS = 0.05  # a median slower by less than this is noise whatever the ratio


@dataclass(frozen=True)
class Answer:
    """One revision's greedy answer to one golden prompt."""

    text: str
    tokens: tuple[str, ...] = ()  # the chosen tokens' texts, per position
    top: tuple[Mapping[str, float], ...] = ()  # per position: token text -> logprob
    seconds: float = 0.0
    prompt_ids: tuple[int, ...] | None = None  # what /tokenize made of the prompt; None where it is not served


@dataclass(frozen=True)
class Refusal:
    """A revision answered a golden prompt with an HTTP error."""

    status: int
    message: str


@dataclass(frozen=True)
class RevisionAnswers:
    revision: str
    fingerprints: Fingerprints
    answers: Mapping[str, Answer | Refusal]  # by prompt name


@dataclass(frozen=True)
class ValidationOutcome:
    canary: str
    stable: str
    verdict: Verdict  # Pass, Fail, or Error when it could not run
    message: str
    metrics: tuple[MetricResult, ...] = ()
    worst: tuple[GoldenEvidence, ...] = ()
    fingerprints: Mapping[str, Fingerprints] = field(default_factory=dict)

    @property
    def tokenizer_changed(self) -> bool:
        return bool(tokenizer_change(self.fingerprints.get(self.stable), self.fingerprints.get(self.canary)))


def tokenizer_change(stable: Fingerprints | None, canary: Fingerprints | None) -> bool | None:
    """Whether the canary tokenizes differently from stable; None when either digest is unknown."""
    if stable is None or canary is None or not stable.tokenizer or not canary.tokenizer:
        return None
    return stable.tokenizer != canary.tokenizer


def blocked(
    canary: str, stable: str, why: str, fingerprints: Mapping[str, Fingerprints] | None = None
) -> ValidationOutcome:
    """Validation could not run: no decision about the canary follows from it."""
    return ValidationOutcome(canary, stable, Verdict.ERROR, why, fingerprints=dict(fingerprints or {}))


def unanswered(canary: str, stable: str, why: str) -> ValidationOutcome:
    """The canary did not answer where stable did: a failure of the canary."""
    return _outcome(canary, stable, [_metric("answers", Verdict.FAIL, why)], (), {})


def meets(text: str, expect: Expectation) -> bool:
    if expect.contains is not None and expect.contains not in text:
        return False
    if expect.regex is not None and re.search(expect.regex, text) is None:
        return False
    if expect.valid_json is None and expect.json_schema is None:
        return True
    try:
        document, parses = json.loads(text.strip()), True
    except ValueError:
        document, parses = None, False
    if expect.valid_json is not None and parses != expect.valid_json:
        return False
    if expect.json_schema is not None:
        if not parses:
            return False
        try:
            return bool(jsonschema.Draft202012Validator(expect.json_schema).is_valid(document))
        except Exception:  # a schema that parses but cannot be evaluated (an unresolvable $ref): met by no one
            return False
    return True


def agreeing_positions(a: Answer, b: Answer) -> int:
    """Positions conditioned on the same text on both sides: up to and including the first different token."""
    same = 0
    for x, y in zip(a.tokens, b.tokens, strict=False):
        same += 1
        if x != y:
            break
    return same if a.tokens and b.tokens else min(len(a.top), len(b.top))


def prompt_divergence(stable: Answer, canary: Answer) -> float | None:
    n = agreeing_positions(stable, canary)
    return mean_divergence(list(stable.top[:n]), list(canary.top[:n]))


def _shown(text: str) -> str:
    return text if len(text) <= ANSWER_SHOWN else text[: ANSWER_SHOWN - 1] + "…"


def _metric(name: str, verdict: Verdict, reason: str, **values: float | int | None) -> MetricResult:
    return MetricResult(name=name, verdict=verdict, reason=reason, **values)


def _tokenizer(stable: Fingerprints, canary: Fingerprints, rules: Validation) -> MetricResult:
    changed = tokenizer_change(stable, canary)
    if changed is None:
        return _metric("tokenizer", Verdict.NO_DATA, "not measured: a runtime reported no tokenizer digest")
    if not changed:
        return _metric("tokenizer", Verdict.PASS, f"same tokenizer ({canary.tokenizer})")
    what = f"tokenizer changed: canary {canary.tokenizer}, stable {stable.tokenizer}"
    if rules.allow_tokenizer_change:
        return _metric("tokenizer", Verdict.PASS, f"{what} (allowTokenizerChange)")
    return _metric("tokenizer", Verdict.FAIL, f"{what}; set allowTokenizerChange if it is intended")


def _token_ids(
    prompts: Sequence[GoldenPrompt], stable: RevisionAnswers, canary: RevisionAnswers, rules: Validation
) -> MetricResult:
    pairs = []
    for prompt in prompts:
        s, c = stable.answers[prompt.name], canary.answers[prompt.name]
        if isinstance(s, Answer) and isinstance(c, Answer) and s.prompt_ids is not None and c.prompt_ids is not None:
            pairs.append((prompt.name, s.prompt_ids, c.prompt_ids))
    if not pairs:
        return _metric("tokenIds", Verdict.NO_DATA, "not measured: a runtime does not serve /tokenize")
    differ = [name for name, s, c in pairs if s != c]
    if not differ:
        return _metric(
            "tokenIds", Verdict.PASS, f"the same token ids for all {len(pairs)} prompts", canary_samples=len(pairs)
        )
    changed = f"token ids differ on {len(differ)} of {len(pairs)} prompts, first {differ[0]}"
    verdict = Verdict.PASS if rules.allow_tokenizer_change else Verdict.FAIL
    return _metric(
        "tokenIds",
        verdict,
        changed + (" (allowTokenizerChange)" if rules.allow_tokenizer_change else ""),
        canary=len(differ),
        canary_samples=len(pairs),
    )


def compare(
    prompts: Sequence[GoldenPrompt], stable: RevisionAnswers, canary: RevisionAnswers, rules: Validation
) -> ValidationOutcome:
    fingerprints = {stable.revision: stable.fingerprints, canary.revision: canary.fingerprints}
    for prompt in prompts:
        answer = stable.answers.get(prompt.name)
        if answer is None or isinstance(answer, Refusal):
            why = f"{answer.status} {answer.message}" if isinstance(answer, Refusal) else "no answer"
            return blocked(
                canary.revision,
                stable.revision,
                f"stable cannot answer golden prompt {prompt.name}: {why}",
                fingerprints,
            )
    refused = [
        (prompt.name, answer)
        for prompt in prompts
        if isinstance(answer := canary.answers.get(prompt.name), Refusal) or answer is None
    ]
    metrics = [_tokenizer(stable.fingerprints, canary.fingerprints, rules)]
    if refused:
        name, refusal = refused[0]
        why = f"{refusal.status} {refusal.message}" if isinstance(refusal, Refusal) else "no answer"
        metrics.append(
            _metric(
                "answers",
                Verdict.FAIL,
                f"canary refused {len(refused)} of {len(prompts)} golden prompts stable answered, first {name}: {why}",
                canary=len(prompts) - len(refused),
                stable=len(prompts),
            )
        )
        return _outcome(canary.revision, stable.revision, metrics, (), fingerprints)

    evidence = []
    for prompt in prompts:
        s, c = stable.answers[prompt.name], canary.answers[prompt.name]
        assert isinstance(s, Answer)
        assert isinstance(c, Answer)
        evidence.append(
            GoldenEvidence(
                name=prompt.name,
                divergence=prompt_divergence(s, c),
                exact_match=s.text == c.text,
                canary_correct=meets(c.text, prompt.expect) if prompt.expect else None,
                stable_correct=meets(s.text, prompt.expect) if prompt.expect else None,
                canary_answer=_shown(c.text),
                stable_answer=_shown(s.text),
            )
        )
    metrics.append(_token_ids(prompts, stable, canary, rules))
    metrics.append(_divergence(evidence, rules))
    metrics.append(_exact_match(evidence, rules))
    metrics.append(_correctness(evidence, rules))
    metrics.append(
        _latency(
            [a.seconds for a in stable.answers.values() if isinstance(a, Answer)],
            [a.seconds for a in canary.answers.values() if isinstance(a, Answer)],
            rules,
        )
    )
    worst = sorted(
        evidence,
        key=lambda e: (e.canary_correct is False and e.stable_correct is True, not e.exact_match, e.divergence or 0.0),
        reverse=True,
    )[:WORST_SHOWN]
    return _outcome(canary.revision, stable.revision, metrics, tuple(worst), fingerprints)


def _divergence(evidence: Sequence[GoldenEvidence], rules: Validation) -> MetricResult:
    measured = [e for e in evidence if e.divergence is not None]
    if not measured:
        return _metric("divergence", Verdict.NO_DATA, "not measured: no logprobs to compare")
    worst = max(measured, key=lambda e: e.divergence or 0.0)
    assert worst.divergence is not None
    mean = statistics.fmean(e.divergence or 0.0 for e in measured)
    over = worst.divergence > rules.max_divergence
    return _metric(
        "divergence",
        Verdict.FAIL if over else Verdict.PASS,
        f"worst prompt {worst.name} diverges {worst.divergence:.3f} ({'over' if over else 'within'} "
        f"{rules.max_divergence}); mean {mean:.3f} over {len(measured)} prompts",
        canary=worst.divergence,
        canary_samples=len(measured),
        threshold=rules.max_divergence,
    )


def _exact_match(evidence: Sequence[GoldenEvidence], rules: Validation) -> MetricResult:
    share = sum(e.exact_match for e in evidence) / len(evidence)
    low = share < rules.min_exact_match
    return _metric(
        "exactMatch",
        Verdict.FAIL if low else Verdict.PASS,
        f"{sum(e.exact_match for e in evidence)} of {len(evidence)} greedy answers are stable's "
        f"({'below' if low else 'at least'} {rules.min_exact_match:.0%})",
        canary=share,
        canary_samples=len(evidence),
        threshold=rules.min_exact_match,
    )


def _correctness(evidence: Sequence[GoldenEvidence], rules: Validation) -> MetricResult:
    judged = [e for e in evidence if e.canary_correct is not None]
    if not judged:
        return _metric("correctness", Verdict.NO_DATA, "not measured: no golden prompt has an expectation")
    canary = sum(bool(e.canary_correct) for e in judged) / len(judged)
    stable = sum(bool(e.stable_correct) for e in judged) / len(judged)
    worse = canary < stable - rules.max_correctness_drop - 1e-12
    return _metric(
        "correctness",
        Verdict.FAIL if worse else Verdict.PASS,
        f"canary right on {canary:.0%}, stable on {stable:.0%} of {len(judged)} prompts with expectations"
        + (f" (more than {rules.max_correctness_drop:.0%} lower)" if worse else ""),
        canary=canary,
        stable=stable,
        canary_samples=len(judged),
        stable_samples=len(judged),
        threshold=stable - rules.max_correctness_drop,
    )


def _latency(stable: Sequence[float], canary: Sequence[float], rules: Validation) -> MetricResult:
    s, c = statistics.median(stable), statistics.median(canary)
    slow = c > s * rules.max_latency_ratio and c - s > LATENCY_FLOOR_SECONDS
    return _metric(
        "latencySeconds",
        Verdict.FAIL if slow else Verdict.PASS,
        f"median per prompt: canary {c:.3f}s, stable {s:.3f}s"
        + (f" (over {rules.max_latency_ratio}x)" if slow else ""),
        canary=c,
        stable=s,
        canary_samples=len(canary),
        stable_samples=len(stable),
        threshold=s * rules.max_latency_ratio,
    )


def _outcome(
    canary: str,
    stable: str,
    metrics: Sequence[MetricResult],
    worst: tuple[GoldenEvidence, ...],
    fingerprints: Mapping[str, Fingerprints],
) -> ValidationOutcome:
    failed = [m for m in metrics if m.verdict == Verdict.FAIL]
    if failed:
        message = "; ".join(f"{m.name}: {m.reason}" for m in failed)
        return ValidationOutcome(canary, stable, Verdict.FAIL, message, tuple(metrics), worst, fingerprints)
    unmeasured = [m.name for m in metrics if m.verdict == Verdict.NO_DATA]
    message = f"passed {len(metrics) - len(unmeasured)} checks" + (
        f" ({', '.join(unmeasured)} not measured)" if unmeasured else ""
    )
    return ValidationOutcome(canary, stable, Verdict.PASS, message, tuple(metrics), worst, fingerprints)
