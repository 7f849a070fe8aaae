"""The ModelDeployment spec: what to serve, how to run it, how traffic moves, how a rollout is judged.

These models are the single source of truth: the CRD's schema (descriptions included) is generated from
them, and every CEL rule carried here into the CRD has a twin validator so the models and the API server
refuse the same specs with the same words.
"""

from __future__ import annotations

import re
from itertools import pairwise
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, ConfigDict, Field, WithJsonSchema, field_validator, model_validator

from .base import INT64_MAX, ApiModel, Int64, Integer, cel, cel_rules, whole_number
from .durations import DURATION_MAX_LENGTH, DurationRules, duration_nanoseconds

URI_SCHEMES = ("pvc", "file", "hf")
# Whitespace spelled out: `\s` is Unicode-aware in pydantic's regex engine and ASCII-only in the API
# server's, and the two must refuse the same values.
_NOT_SPACE = r"\t\n\f\r "
URI_PATTERN = (
    rf"^(pvc://[a-z0-9]([-a-z0-9]*[a-z0-9])?(/.*)?|file:///.+"
    rf"|hf://[^/@{_NOT_SPACE}]+/[^/@{_NOT_SPACE}]+(@[^@{_NOT_SPACE}]+)?)$"
)
# What Kubernetes accepts as the name of a Secret or a Gateway (RFC 1123 subdomain): a name it refuses
# would only fail later, when the operator applies the pods or the route.
DNS_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?([.][a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
# An http(s) URL with a host and no whitespace anywhere (a pasted trailing newline is the usual fault).
HTTP_URL_PATTERN = rf"^https?://[^/?#@{_NOT_SPACE}]+(@[^/?#@{_NOT_SPACE}]+)?([/?#][^{_NOT_SPACE}]*)?$"
# A resource quantity as Kubernetes writes one (the pattern controller-gen emits for resource.Quantity),
# without a sign: a Pod refuses negative requests and limits.
QUANTITY_PATTERN = (
    r"^(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"
)
QUANTITY_SCHEMA = {"anyOf": [{"type": "integer", "minimum": 0}, {"type": "string", "pattern": QUANTITY_PATTERN}]}


def _quantity(value: Any) -> Any:
    value = whole_number(value)
    if isinstance(value, int) and 0 <= value <= INT64_MAX:  # whole_number refused booleans
        return value
    if isinstance(value, str) and re.fullmatch(QUANTITY_PATTERN, value):
        return value
    raise ValueError(f"{value!r} is not a quantity such as 500m, 2, 1.5 or 8Gi (and not negative)")


Quantity = Annotated[int | str, BeforeValidator(_quantity), WithJsonSchema(QUANTITY_SCHEMA)]

# Each analysis queries Prometheus and each look reconciles: below a second an interval (or a blind
# timeout) only hammers both and decides nothing sooner, since Prometheus scrapes every few seconds.
# A pause of 0s is fine: the step then lasts until both tracks have `minRequests`, and the operator
# floors every requeue (rollout.MIN_REQUEUE_SECONDS).
PAUSE = DurationRules("pause")
INTERVAL = DurationRules("interval", "1s", "each look queries Prometheus")
NO_DATA_TIMEOUT = DurationRules("noDataTimeout", "1s")


class ModelSource(ApiModel):
    """Which model to serve and how to load it."""

    uri: str = Field(
        pattern=URI_PATTERN,
        json_schema_extra=cel_rules(
            cel(
                "self.startsWith('pvc://') || self.startsWith('file://') || self.startsWith('hf://')",
                "uri must use one of the schemes pvc://, file:// or hf://",
            ),
        ),
    )
    """Where the weights are: `pvc://CLAIM/PATH` (a PersistentVolumeClaim mounted read-only), `file:///PATH`
    (inside the image) or `hf://ORG/NAME[@REVISION]` (downloaded at start-up). A path ending in `.gguf`
    is loaded as a GGUF file; anything else as a Hugging Face model folder."""

    task: Literal["text-generation", "embeddings"] = "text-generation"
    """What the model does: `text-generation` serves completions and chat, `embeddings` serves embeddings."""

    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    """Weight precision. `auto` picks bfloat16 on a GPU that supports it (float16 on others); on CPU, bfloat16
    for text generation where the CPU computes it natively (AVX512_BF16 or AMX) and float32 otherwise, and
    float32 for embeddings, so that vectors do not depend on the node's CPU. Logits are always float32."""

    @field_validator("uri")
    @classmethod
    def _known_scheme(cls, uri: str) -> str:
        scheme = uri.split("://", 1)[0] if "://" in uri else ""
        if scheme not in URI_SCHEMES:
            raise ValueError("uri must use one of the schemes pvc://, file:// or hf://")
        return uri

    @property
    def scheme(self) -> str:
        return self.uri.split("://", 1)[0]


class Batching(ApiModel):
    """Dynamic batching: requests that arrive close together run through the model as one batch."""

    max_batch_size: Integer = Field(default=16, ge=1, le=256)
    """Most sequences decoded together in one forward pass."""

    max_batch_wait_ms: Integer = Field(default=5, ge=0, le=1000)
    """How long the first queued request may wait for others to join its batch, in milliseconds."""


class Limits(ApiModel):
    """What one request may ask for; anything beyond is refused with a clear error."""

    max_input_tokens: Integer = Field(default=2048, ge=1, le=1_048_576)
    """Most prompt tokens a request may carry."""

    max_new_tokens: Integer = Field(default=512, ge=1, le=1_048_576)
    """Cap on `max_tokens` a request may ask for."""

    max_concurrent_requests: Integer = Field(default=64, ge=1, le=100_000)
    """Requests a pod holds at once (running and queued); more get 429."""

    request_timeout_seconds: float = Field(default=60, gt=0, le=3600)
    """A request still unfinished after this many seconds gets 504."""

    truncation: Literal["error", "keep-last"] = "error"
    """What to do with a prompt over `maxInputTokens`: `error` refuses it (400), `keep-last` drops the
    oldest tokens."""


class ResourceRequirements(ApiModel):
    """Compute resources of each model container, as in a Pod spec."""

    limits: dict[str, Quantity] = Field(default_factory=dict)
    """Most of each resource a container may use, e.g. `{cpu: "2", memory: 8Gi}`."""

    requests: dict[str, Quantity] = Field(default_factory=dict)
    """Resources the scheduler reserves for each container."""


class Toleration(ApiModel):
    """A Pod toleration, as in a Pod spec."""

    key: str | None = None
    """The taint key the toleration applies to; empty means all keys."""

    operator: Literal["Exists", "Equal"] | None = None
    """`Equal` (default) or `Exists`."""

    value: str | None = None
    """The taint value the toleration matches."""

    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None
    """The taint effect to match; empty means all effects."""

    toleration_seconds: Int64 | None = None
    """For `NoExecute`: how long the pod stays bound after the taint appears."""


class EnvVar(ApiModel):
    """An environment variable for the model container, as in a Pod spec."""

    name: str = Field(min_length=1, pattern=r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")
    """The variable's name."""

    value: str | None = None
    """A literal value."""

    value_from: dict[str, Any] | None = None
    """A source for the value (secretKeyRef, configMapKeyRef, fieldRef, resourceFieldRef)."""


class SecretKeyRef(ApiModel):
    """A key of a Secret in the ModelDeployment's namespace."""

    name: str = Field(min_length=1, max_length=253, pattern=DNS_SUBDOMAIN)
    """The Secret's name."""

    key: str = Field(default="api-key", min_length=1, max_length=253, pattern=r"^[-._a-zA-Z0-9]+$")
    """The key inside the Secret."""


SERVERS = ("modelship", "vllm", "llamacpp", "custom")
HTTP_PATH_PATTERN = rf"^/[^{_NOT_SPACE}]*$"
ServerArgument = Annotated[str, Field(max_length=4096)]
CUSTOM_NEEDS = "runtime.server custom needs runtime.image and runtime.custom (the port it serves on)"
CUSTOM_ONLY = "runtime.custom is only read when runtime.server is custom"
ARGS_NOT_FOR_MODELSHIP = (
    "runtime.args is for the vllm, llamacpp and custom servers; ModelShip's runtime takes its settings from"
    " the spec's fields and runtime.env"
)


METRIC_NAME_PATTERN = r"^[a-zA-Z_:][a-zA-Z0-9_:]*$"
# One PromQL label matcher, `label="value"` (or !=, =~, !~), the value quoted and escaped as PromQL
# writes it: a matcher can then only ever narrow the selector the analysis builds, never add to the query.
LABEL_MATCHER_PATTERN = r'^[a-zA-Z_][a-zA-Z0-9_]*(=|!=|=~|!~)"([^"\\]|\\.)*"$'
IDENTITY_MATCHED = (
    "runtime.custom.metrics matchers cannot name namespace, model_deployment or revision: the analysis"
    " selects each revision by them itself"
)
_IDENTITY_MATCHER = "^(namespace|model_deployment|revision)[=!]"
_MATCHER_LISTS = ("requestsMatch", "serverErrorsMatch", "latencyMatch")
LabelMatcher = Annotated[str, Field(max_length=1024, pattern=LABEL_MATCHER_PATTERN)]
MetricName = Annotated[str, Field(min_length=1, max_length=256, pattern=METRIC_NAME_PATTERN)]


class ServerMetrics(ApiModel):
    """Which of a custom server's own Prometheus metrics give the request SLIs, so that the analysis can
    read them outside router mode (it reads them with the identity labels the pod's labels give every
    series). Each matcher is one PromQL label matcher such as `handler=~"/v1/.*"`."""

    model_config = ConfigDict(
        json_schema_extra=cel_rules(
            cel(
                " && ".join(
                    f"(!has(self.{field}) || self.{field}.all(m, !m.matches('{_IDENTITY_MATCHER}')))"
                    for field in _MATCHER_LISTS
                ),
                IDENTITY_MATCHED,
            )
        )
    )

    requests: MetricName
    """A counter of the requests the server answered, e.g. `http_requests_total`."""

    requests_match: list[LabelMatcher] = Field(default_factory=list, max_length=16)
    """Matchers that keep users' requests to the OpenAI endpoints (not health checks or /metrics)."""

    server_errors_match: list[LabelMatcher] = Field(min_length=1, max_length=16)
    """Matchers that, with `requestsMatch`, keep the requests that failed with a server error, e.g.
    `status=~"5.."`."""

    latency: MetricName
    """A histogram of request durations in seconds (its `_bucket` series is read), e.g.
    `http_request_duration_seconds`."""

    latency_match: list[LabelMatcher] = Field(default_factory=list, max_length=16)
    """Matchers that keep users' requests in the latency histogram."""

    @model_validator(mode="after")
    def _matchers_narrow(self) -> ServerMetrics:
        for matcher in (*self.requests_match, *self.server_errors_match, *self.latency_match):
            if re.match(_IDENTITY_MATCHER, matcher):
                raise ValueError(IDENTITY_MATCHED)
            regex = re.fullmatch(r'[a-zA-Z0-9_]+[=!]~"(.*)"', matcher)
            if regex is not None:
                value = re.sub(r"\\(.)", r"\1", regex[1])
                try:
                    re.compile(value)
                except re.error as error:
                    raise ValueError(f"matcher {matcher!r} ({error}) {REGEX_BROKEN}") from None
        return self


class CustomServer(ApiModel):
    """How to start and probe an OpenAI-compatible server ModelShip has no recipe for."""

    port: Integer = Field(ge=1, le=65535)
    """The port the server answers the OpenAI API on (and /metrics, if it has them)."""

    command: list[ServerArgument] = Field(default_factory=list, max_length=64)
    """The container's entrypoint; the image's own when empty. Arguments go in `runtime.args`; both may
    name `$(MODEL_PATH)` (where the model's URI is mounted, or the `hf://` URI itself) and `$(MODEL_NAME)`
    (the name clients ask for: the ModelDeployment's), which Kubernetes expands."""

    health_path: str = Field(default="/health", max_length=1024, pattern=HTTP_PATH_PATTERN)
    """An HTTP GET path that answers 2xx once the model is loaded: the startup, readiness and liveness
    probes."""

    metrics: ServerMetrics | None = None
    """The server's own metrics that give the request SLIs, on `port` at `/metrics`. With them the
    revision can run outside router mode; without them the analysis needs the router's."""


class Runtime(ApiModel):
    """How the model's pods run."""

    model_config = ConfigDict(
        json_schema_extra=cel_rules(
            cel("!has(self.server) || self.server != 'custom' || (has(self.image) && has(self.custom))", CUSTOM_NEEDS),
            cel("!has(self.custom) || (has(self.server) && self.server == 'custom')", CUSTOM_ONLY),
            cel(
                "!has(self.args) || size(self.args) == 0 || (has(self.server) && self.server != 'modelship')",
                ARGS_NOT_FOR_MODELSHIP,
            ),
        )
    )

    server: Literal["modelship", "vllm", "llamacpp", "custom"] = "modelship"
    """Which server runs the model: `modelship` (the bundled runtime), `vllm` (vLLM's OpenAI server),
    `llamacpp` (llama.cpp's `llama-server`, serving a GGUF file) or `custom` (any OpenAI-compatible image,
    with `runtime.custom`). The operator derives each server's arguments from the same fields (model URI,
    GPUs, batching, limits). For a server other than `modelship`, the analysis reads the router's metrics
    in router mode, vLLM's own outside it (`llamacpp` and `custom` need `traffic.mode` `router`), and the
    content SLI is not measured."""

    image: str | None = None
    """The server's image; the operator's default for `modelship`, `vllm` and `llamacpp` when unset,
    required for `custom`."""

    args: list[ServerArgument] = Field(default_factory=list, max_length=128)
    """Extra arguments for a `vllm`, `llamacpp` or `custom` server, after the ones the operator derives."""

    custom: CustomServer | None = None
    """The port and health path of a `custom` server."""

    replicas: Integer = Field(default=1, ge=1, le=1000)
    """Pods per revision. Changing it scales the stable revision in place; it does not start a rollout."""

    gpus: Integer = Field(default=0, ge=0, le=16)
    """GPUs per pod (`nvidia.com/gpu` limit and toleration); 0 runs on CPU."""

    resources: ResourceRequirements = Field(default_factory=ResourceRequirements)
    """CPU, memory and other resources of each model container."""

    node_selector: dict[str, str] = Field(default_factory=dict)
    """Node labels the pods must match."""

    tolerations: list[Toleration] = Field(default_factory=list, max_length=64)
    """Taints the pods tolerate."""

    env: list[EnvVar] = Field(default_factory=list, max_length=128)
    """Extra environment variables for the model container."""

    batching: Batching = Field(default_factory=Batching)
    """Dynamic batching settings."""

    limits: Limits = Field(default_factory=Limits)
    """Per-request limits."""

    api_key_secret: SecretKeyRef | None = None
    """A Secret holding an API key; when set, the router and the runtime require
    `Authorization: Bearer <key>` on inference requests."""

    @model_validator(mode="after")
    def _server_settings(self) -> Runtime:
        if self.server == "custom" and (self.image is None or self.custom is None):
            raise ValueError(CUSTOM_NEEDS)
        if self.custom is not None and self.server != "custom":
            raise ValueError(CUSTOM_ONLY)
        if self.args and self.server == "modelship":
            raise ValueError(ARGS_NOT_FOR_MODELSHIP)
        return self


class GatewayParentRef(ApiModel):
    """A Gateway the HTTPRoute attaches to."""

    name: str = Field(min_length=1, max_length=253, pattern=DNS_SUBDOMAIN)
    """The Gateway's name."""

    namespace: str | None = None
    """The Gateway's namespace; the ModelDeployment's when unset."""

    section_name: str | None = None
    """A listener of the Gateway."""


class EndpointPicker(ApiModel):
    """An endpoint picker (the Gateway API Inference Extension's EPP) that the operator runs beside each
    revision's InferencePool: a pool is picked from by its own picker, so each revision gets one."""

    image: str = Field(min_length=1, max_length=1024, pattern=rf"^[^{_NOT_SPACE}]+$")
    """The picker's image, e.g. the GIE reference EPP or llm-d's inference scheduler."""

    args: list[ServerArgument] = Field(default_factory=list, max_length=64)
    """Extra arguments, after the pool's name and namespace and the gRPC ports the operator sets."""

    service_account_name: str | None = Field(default=None, min_length=1, max_length=253, pattern=DNS_SUBDOMAIN)
    """The picker pods' ServiceAccount; it needs get, list and watch on pods and inferencepools in the
    namespace. The namespace's default account when unset."""

    failure_mode: Literal["FailOpen", "FailClose"] = "FailClose"
    """What the Gateway does when the picker does not answer: refuse the request or pick any pod."""


class InferencePoolSettings(ApiModel):
    """Each revision's pods in their own InferencePool (inference.networking.k8s.io/v1), the HTTPRoute's
    weights moving between the pools."""

    endpoint_picker: EndpointPicker | None = None
    """The picker the operator runs per pool; without one the pools name no picker and the Gateway's own
    default (if it has one) applies."""


class Gateway(ApiModel):
    """Settings of the `gatewayAPI` traffic mode."""

    parent_refs: list[GatewayParentRef] = Field(min_length=1, max_length=16)
    """Gateways the HTTPRoute attaches to."""

    hostnames: list[str] = Field(default_factory=list, max_length=16)
    """Host names the HTTPRoute matches; all when empty."""

    inference_pool: InferencePoolSettings | None = None
    """Route to one InferencePool per revision (Gateway API Inference Extension) instead of one Service per
    revision; the GIE CRDs must be installed."""


class Traffic(ApiModel):
    """How requests reach the revisions."""

    model_config = ConfigDict(
        json_schema_extra=cel_rules(
            cel(
                "!has(self.mode) || self.mode != 'gatewayAPI' || has(self.gateway)",
                "traffic.gateway is required when traffic.mode is gatewayAPI",
            ),
        )
    )

    mode: Literal["router", "gatewayAPI", "replicas"] = "router"
    """`router` (a ModelShip router Deployment splits by weight and mirrors), `gatewayAPI` (an HTTPRoute
    with weighted backends) or `replicas` (one Service over both revisions; the weight is approximated by
    replica counts)."""

    mirror_percent: float = Field(default=5, ge=0, le=100)
    """Share of requests (router mode) also sent to the other track, off the user's path, to measure how
    differently the canary answers."""

    sticky_header: str | None = Field(default=None, pattern=r"^[A-Za-z0-9-]+$", max_length=128)
    """A request header whose value keeps a client on one track for the whole rollout (router mode)."""

    router_replicas: Integer = Field(default=1, ge=1, le=100)
    """Router pods (router mode)."""

    gateway: Gateway | None = None
    """Gateway API settings; required in `gatewayAPI` mode."""

    @model_validator(mode="after")
    def _gateway_for_gateway_mode(self) -> Traffic:
        if self.mode == "gatewayAPI" and self.gateway is None:
            raise ValueError("traffic.gateway is required when traffic.mode is gatewayAPI")
        return self


class Step(ApiModel):
    """One canary step: send `weight` percent to the canary, judge it for at least `pause`."""

    weight: Integer = Field(gt=0, lt=100)
    """Percent of traffic the canary receives during the step, strictly between 0 and 100."""

    pause: str = Field(default="30s", max_length=DURATION_MAX_LENGTH, json_schema_extra=PAUSE.schema())
    """How long the step lasts at least, e.g. `30s`; the step passes only when the analysis also has
    `minRequests` on both tracks."""

    @field_validator("pause")
    @classmethod
    def _pause_is_a_duration(cls, value: str) -> str:
        return PAUSE.check(value)


class Thresholds(ApiModel):
    """Limits a canary must keep. Relative ones compare canary with stable over the same window; absolute
    ones cap the canary whatever stable does."""

    p99_latency_seconds: float = Field(default=0.5, gt=0)
    """Absolute cap on the canary's P99 request latency, in seconds."""

    error_rate: float = Field(default=0.01, gt=0, le=1)
    """Absolute cap on the canary's share of 5xx responses."""

    drift: float = Field(default=0.15, gt=0, le=1)
    """Cap on the mean Jensen-Shannon divergence (base 2, 0..1) between canary and stable next-token
    distributions on mirrored prompts."""

    max_latency_ratio: float = Field(default=1.25, gt=1)
    """Canary P99 may be at most this multiple of stable's P99 (beyond the noise floor)."""

    max_error_rate_increase: float = Field(default=0.005, gt=0, le=1)
    """Canary error rate may exceed stable's by at most this much before the one-sided test counts it."""

    latency_noise_floor_seconds: float = Field(default=0.01, gt=0)
    """P99 differences smaller than this are noise and never fail a step."""

    max_content_issue_increase: float = Field(default=0.05, gt=0, le=1)
    """Canary's share of generated choices with one kind of content issue (empty, undecodable, invalid JSON
    when JSON was asked for, cut by max_tokens) may exceed stable's share of that kind by at most this much
    before the test counts it."""


class Analysis(ApiModel):
    """How a canary is judged from Prometheus."""

    interval: str = Field(default="10s", max_length=DURATION_MAX_LENGTH, json_schema_extra=INTERVAL.schema())
    """How often the analysis queries Prometheus."""

    min_requests: Integer = Field(default=200, ge=1, le=1_000_000_000)
    """Requests each track must have served during a step before the step may pass."""

    confidence: float = Field(default=0.99, gt=0.5, lt=1)
    """Confidence of the one-sided test that fails a canary early on its error counts."""

    thresholds: Thresholds = Field(default_factory=Thresholds)
    """The limits the canary must keep."""

    on_no_data: Literal["pause", "rollback"] = "pause"
    """What to do once Prometheus has been unreachable or empty for `noDataTimeout`."""

    no_data_timeout: str = Field(
        default="10m", max_length=DURATION_MAX_LENGTH, json_schema_extra=NO_DATA_TIMEOUT.schema()
    )
    """How long the rollout holds its weight while blind before `onNoData` applies."""

    prometheus_url: str | None = Field(default=None, pattern=HTTP_URL_PATTERN, max_length=2048)
    """The Prometheus to query, `http(s)://HOST[:PORT][/PATH]`; the operator's default when unset."""

    @field_validator("interval")
    @classmethod
    def _interval_is_a_duration(cls, value: str) -> str:
        return INTERVAL.check(value)

    @field_validator("no_data_timeout")
    @classmethod
    def _no_data_timeout_is_a_duration(cls, value: str) -> str:
        return NO_DATA_TIMEOUT.check(value)


REGEX_BROKEN = "does not compile as a Python regular expression"
SCHEMA_BROKEN = "is not a valid JSON Schema"
VALIDATION_TIMEOUT = DurationRules("timeout", "1s", "the golden set goes to both revisions within it")
GOLDEN_NAME = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"


class ChatMessage(ApiModel):
    """One message of a chat prompt."""

    role: Literal["system", "user", "assistant"]
    """Who says it."""

    content: str = Field(max_length=65_536)
    """What is said."""


class Expectation(ApiModel):
    """What a right answer looks like; each revision's share of right answers is its correctness."""

    model_config = ConfigDict(
        json_schema_extra=cel_rules(
            cel(
                "has(self.contains) || has(self.regex) || has(self.validJson) || has(self.jsonSchema)",
                "an expectation needs contains, regex, validJson or jsonSchema",
            )
        )
    )

    contains: str | None = Field(default=None, min_length=1, max_length=4096)
    """The answer contains this text."""

    regex: str | None = Field(default=None, min_length=1, max_length=1024)
    """The answer matches this regular expression somewhere (Python's `re.search`)."""

    valid_json: bool | None = None
    """The answer, stripped, parses as JSON (true) or does not (false)."""

    json_schema: dict[str, Any] | None = None
    """The answer, stripped, parses as JSON and is valid under this JSON Schema (draft 2020-12)."""

    @field_validator("json_schema")
    @classmethod
    def _schema_is_one(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is not None:
            from jsonschema import Draft202012Validator, SchemaError

            try:
                Draft202012Validator.check_schema(value)
            except SchemaError as error:
                raise ValueError(f"jsonSchema {SCHEMA_BROKEN}: {error.message}") from None
        return value

    @field_validator("regex")
    @classmethod
    def _regex_compiles(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as error:
                raise ValueError(f"regex {value!r} ({error}) {REGEX_BROKEN}") from None
        return value

    @model_validator(mode="after")
    def _says_something(self) -> Expectation:
        if self.contains is None and self.regex is None and self.valid_json is None and self.json_schema is None:
            raise ValueError("an expectation needs contains, regex, validJson or jsonSchema")
        return self


class GoldenPrompt(ApiModel):
    """A prompt both revisions answer greedily before the canary gets any traffic."""

    model_config = ConfigDict(
        json_schema_extra=cel_rules(
            cel("has(self.prompt) != has(self.messages)", "a golden prompt needs exactly one of prompt or messages")
        )
    )

    name: str = Field(min_length=1, max_length=63, pattern=GOLDEN_NAME)
    """What the evidence calls it."""

    prompt: str | None = Field(default=None, min_length=1, max_length=262_144)
    """A completion prompt (sent to /v1/completions). Make some long: far positions break on their own."""

    messages: list[ChatMessage] | None = Field(default=None, min_length=1, max_length=64)
    """A chat prompt (sent to /v1/chat/completions)."""

    max_tokens: Integer = Field(default=16, ge=1, le=256)
    """Tokens each revision generates for it."""

    expect: Expectation | None = None
    """What a right answer looks like, when it is known."""

    @model_validator(mode="after")
    def _one_kind(self) -> GoldenPrompt:
        if (self.prompt is None) == (self.messages is None):
            raise ValueError("a golden prompt needs exactly one of prompt or messages")
        return self


class ConfigMapKey(ApiModel):
    """A key of a ConfigMap in the ModelDeployment's namespace."""

    name: str = Field(min_length=1, max_length=253, pattern=DNS_SUBDOMAIN)
    """The ConfigMap's name."""

    key: str = Field(default="prompts.json", min_length=1, max_length=253, pattern=r"^[-._a-zA-Z0-9]+$")
    """The key holding the prompts: a JSON (or YAML) list of golden prompts, as in `prompts`."""


class Validation(ApiModel):
    """A gate before the first step: once the canary is Ready and still at weight 0, the operator sends a
    golden prompt set to canary and stable, greedily, and compares them. Failing any limit rolls the canary
    back without it ever getting traffic."""

    model_config = ConfigDict(
        json_schema_extra=cel_rules(
            cel("has(self.prompts) || has(self.promptsFrom)", "validation needs prompts or promptsFrom")
        )
    )

    prompts: list[GoldenPrompt] | None = Field(default=None, min_length=1, max_length=200)
    """The golden set, inline."""

    prompts_from: ConfigMapKey | None = None
    """The golden set from a ConfigMap, after any inline `prompts`."""

    max_divergence: float = Field(default=0.1, gt=0, le=1)
    """Cap on each prompt's mean Jensen-Shannon divergence (base 2, 0..1) between the two revisions'
    next-token distributions, over the positions where their greedy answers still agree."""

    min_exact_match: float = Field(default=0.5, ge=0, le=1)
    """The share of prompts whose greedy answer must be exactly stable's."""

    max_correctness_drop: float = Field(default=0, ge=0, le=1)
    """How much lower than stable's the canary's share of right answers (prompts with `expect`) may be."""

    max_latency_ratio: float = Field(default=3, gt=1)
    """Canary's median time per golden prompt may be at most this multiple of stable's (beyond 50 ms)."""

    allow_tokenizer_change: bool = False
    """A canary whose tokenizer (vocabulary, merges, normalizer, special tokens, chat template) differs
    from stable's fails validation unless this says the change is intended."""

    timeout: str = Field(default="2m", max_length=DURATION_MAX_LENGTH, json_schema_extra=VALIDATION_TIMEOUT.schema())
    """How long one validation may take; a validation that cannot finish holds the canary at weight 0."""

    @field_validator("timeout")
    @classmethod
    def _timeout_is_a_duration(cls, value: str) -> str:
        return VALIDATION_TIMEOUT.check(value)

    @model_validator(mode="after")
    def _has_prompts(self) -> Validation:
        if self.prompts is None and self.prompts_from is None:
            raise ValueError("validation needs prompts or promptsFrom")
        return self


DEFAULT_STEPS = (Step(weight=10, pause="30s"), Step(weight=50, pause="60s"))


class Rollout(ApiModel):
    """How a new revision replaces the stable one."""

    steps: list[Step] = Field(
        default_factory=lambda: list(DEFAULT_STEPS),
        min_length=1,
        max_length=20,
        json_schema_extra=cel_rules(
            cel(
                "self.all(a, self.exists_one(b, b.weight == a.weight)) && self.map(s, s.weight).isSorted()",
                "steps' weights must be strictly rising",
            ),
        ),
    )
    """Canary steps; after the last one passes the canary is promoted (weight 100)."""

    analysis: Analysis = Field(default_factory=Analysis)
    """How each step is judged."""

    progress_deadline_seconds: Integer = Field(default=600, ge=1, le=86_400)
    """A canary not Ready this many seconds after it was created is rolled back, with or without
    Prometheus."""

    abort_scale_down_delay_seconds: Integer = Field(default=300, ge=0, le=86_400)
    """How long a rolled-back canary stays (at weight 0) for inspection before it is scaled down."""

    validation: Validation | None = None
    """A golden-prompt gate the canary passes before it gets any traffic; none when unset."""

    @field_validator("steps")
    @classmethod
    def _strictly_rising(cls, steps: list[Step]) -> list[Step]:
        weights = [step.weight for step in steps]
        if any(later <= earlier for earlier, later in pairwise(weights)):
            raise ValueError(f"steps' weights must be strictly rising, got {weights}")
        return steps


# Set on every ModelShip runtime container by the operator; a spec that sets them too would be ambiguous.
# The fault injection and thread settings (MODELSHIP_FAULT*, MODELSHIP_THREADS) stay open to users.
OPERATOR_ENV = frozenset(
    {
        "MODELSHIP_MODEL_PATH",
        "MODELSHIP_MODEL_NAME",
        "MODELSHIP_TASK",
        "MODELSHIP_DTYPE",
        "MODELSHIP_DEVICE",
        "MODELSHIP_MAX_BATCH_SIZE",
        "MODELSHIP_MAX_BATCH_WAIT_MS",
        "MODELSHIP_MAX_INPUT_TOKENS",
        "MODELSHIP_MAX_NEW_TOKENS",
        "MODELSHIP_MAX_CONCURRENT_REQUESTS",
        "MODELSHIP_REQUEST_TIMEOUT_SECONDS",
        "MODELSHIP_TRUNCATION",
        "MODELSHIP_NAMESPACE",
        "MODELSHIP_MODEL_DEPLOYMENT",
        "MODELSHIP_REVISION",
        "MODELSHIP_PORT",
        "MODELSHIP_HOST",
        "MODELSHIP_API_KEY",
        "MODELSHIP_SHUTDOWN_TIMEOUT_SECONDS",
    }
)


# The ends of the messages of the rules only the operator checks (condition InvalidSpec): everything else
# the models refuse, the API server refuses too (e2e/test_spec_agreement.py holds both to it).
OWNED_ENV = "is set by the operator; remove it"
GIVES_UP_BLIND = "the rollout would give up before a second look"
OPERATOR_ONLY_RULES = (OWNED_ENV, GIVES_UP_BLIND, REGEX_BROKEN, SCHEMA_BROKEN)


VALIDATION_WITH_KEY = (
    "rollout.validation cannot be used with runtime.apiKeySecret yet: the operator does not read Secrets"
)
UNMAPPED_SERVER_NEEDS_ROUTER = (
    "runtime.server llamacpp, and custom without runtime.custom.metrics, need traffic.mode router:"
    " llama.cpp's server counts no requests, status codes or latencies, and a custom image's metrics are"
    " unknown until runtime.custom.metrics names them, so the analysis reads the router's, which mean the"
    " same for every server"
)
# The servers whose own metrics the analysis can read outside router mode (promql.SERVER_SOURCES).
METRICS_MAPPED = ("modelship", "vllm")


def metrics_mapped(runtime: Runtime) -> bool:
    """Whether the analysis can read the revision's SLIs from its own server's metrics."""
    return runtime.server in METRICS_MAPPED or (runtime.custom is not None and runtime.custom.metrics is not None)


VALIDATION_NEEDS_MODELSHIP = (
    "rollout.validation needs runtime.server modelship for now: it compares tokenizer fingerprints that"
    " only ModelShip's runtime exports"
)
_FOREIGN = "has(self.runtime) && has(self.runtime.server) && self.runtime.server != 'modelship'"
_MAPPED_LIST = ", ".join(f"'{server}'" for server in METRICS_MAPPED)
_UNMAPPED = (
    f"has(self.runtime) && has(self.runtime.server) && !(self.runtime.server in [{_MAPPED_LIST}])"
    " && !(self.runtime.server == 'custom' && has(self.runtime.custom) && has(self.runtime.custom.metrics))"
)


class ModelDeploymentSpec(ApiModel):
    """The desired state of a ModelDeployment.

    Beyond what the CRD's schema and CEL rules check, the operator refuses (condition InvalidSpec) a spec
    that sets environment variables it owns, and an analysis whose noDataTimeout is shorter than its
    interval. Values are read as the API server reads them: `"5"` is not an integer nor `1` a boolean, and
    a whole number such as `5.0` is an integer."""

    model_config = ConfigDict(
        json_schema_extra=cel_rules(
            cel(
                "!has(self.rollout) || !has(self.rollout.validation) || !has(self.runtime)"
                " || !has(self.runtime.apiKeySecret)",
                VALIDATION_WITH_KEY,
            ),
            cel(
                f"!({_UNMAPPED}) || !has(self.traffic) || !has(self.traffic.mode) || self.traffic.mode == 'router'",
                UNMAPPED_SERVER_NEEDS_ROUTER,
            ),
            cel(f"!({_FOREIGN}) || !has(self.rollout) || !has(self.rollout.validation)", VALIDATION_NEEDS_MODELSHIP),
        )
    )

    model: ModelSource
    """The model to serve."""

    runtime: Runtime = Field(default_factory=Runtime)
    """How the model's pods run; any change here (except `replicas`) makes a new revision."""

    traffic: Traffic = Field(default_factory=Traffic)
    """How requests reach the revisions."""

    rollout: Rollout = Field(default_factory=Rollout)
    """How new revisions are canaried and judged."""

    paused: bool = False
    """Hold any rollout where it is (weights stay); the same as the `pause` action."""

    @model_validator(mode="after")
    def _operator_judged(self) -> ModelDeploymentSpec:
        if self.rollout.validation is not None and self.runtime.api_key_secret is not None:
            raise ValueError(VALIDATION_WITH_KEY)
        if not metrics_mapped(self.runtime) and self.traffic.mode != "router":
            raise ValueError(UNMAPPED_SERVER_NEEDS_ROUTER)
        if self.runtime.server != "modelship" and self.rollout.validation is not None:
            raise ValueError(VALIDATION_NEEDS_MODELSHIP)
        for index, variable in enumerate(self.runtime.env):
            if variable.name in OPERATOR_ENV and self.runtime.server == "modelship":
                raise ValueError(f"runtime.env[{index}]: {variable.name} {OWNED_ENV}")
        analysis = self.rollout.analysis
        if duration_nanoseconds(analysis.no_data_timeout) < duration_nanoseconds(analysis.interval):
            raise ValueError(
                f"rollout.analysis.noDataTimeout ({analysis.no_data_timeout}) is shorter than "
                f"rollout.analysis.interval ({analysis.interval}): {GIVES_UP_BLIND}"
            )
        return self
