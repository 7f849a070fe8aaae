# The operator image: `python -m model_operator`. No torch: the operator never loads a model.
# Build from the repository root: docker build -f docker/operator.Dockerfile -t modelship/operator:0.1.0 .
# BASE is any Debian bookworm image with python3 and python3-venv; the e2e harness builds one with debootstrap.
ARG BASE=python:3.11.7-slim-bookworm

# The operator's dependencies alone (a change to ModelShip's code reuses this stage), at the locked versions.
FROM ${BASE} AS dependencies
ENV PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY requirements.lock ./
RUN --mount=type=cache,target=/root/.cache/pip python3 -m venv /opt/modelship \
    && /opt/modelship/bin/pip install --constraint requirements.lock \
        kopf kubernetes pydantic prometheus-api-client prometheus-client pyyaml rich aiohttp jsonschema

# ModelShip itself, as a wheel.
FROM ${BASE} AS package
ENV PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY requirements.lock pyproject.toml README.md ./
COPY model_runtime ./model_runtime
COPY model_operator ./model_operator
RUN --mount=type=cache,target=/root/.cache/pip python3 -m venv /tmp/builder \
    && /tmp/builder/bin/pip wheel --no-deps --wheel-dir /wheels .

FROM ${BASE}
LABEL modelship.image="modelship/operator" \
      org.opencontainers.image.title="ModelShip operator" \
      org.opencontainers.image.source="https://github.com/modelship/modelship"
COPY --from=dependencies /opt/modelship /opt/modelship
# A named user for uid 1000: libraries ask who they run as (getpass.getuser(), kopf's identity, torch's cache).
RUN groupadd --system --gid 1000 modelship \
    && useradd --system --uid 1000 --gid 1000 --home-dir /tmp --no-create-home --shell /usr/sbin/nologin modelship
# Copied, not bind-mounted from the stage: buildah cannot bind a stage it took from its layer cache.
COPY --from=package /wheels /tmp/wheels
RUN /opt/modelship/bin/pip install --no-deps --no-cache-dir --disable-pip-version-check /tmp/wheels/*.whl \
    && rm -rf /tmp/wheels
ENV PATH=/opt/modelship/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp
USER 1000:1000
EXPOSE 8000 8080
ENTRYPOINT ["python", "-m", "model_operator"]
