# The model runtime and router image: `python -m model_runtime serve|router`.
# Build from the repository root: docker build -f docker/runtime.Dockerfile -t modelship/runtime:0.1.0 .
# BASE is any Debian bookworm image with python3 and python3-venv; the e2e harness builds one with debootstrap.
ARG BASE=python:3.11.7-slim-bookworm

# The dependencies alone, so that a change to ModelShip's code reuses this stage and its multi-GB layer.
# The lock is a constraints file: only what the package needs is installed, at the locked versions.
# Downloads are cached between builds (torch's CUDA wheels are several GB), never kept in the image.
FROM ${BASE} AS dependencies
ENV PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY requirements.lock pyproject.toml ./
RUN --mount=type=cache,target=/root/.cache/pip python3 -m venv /opt/modelship \
    && python3 -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" > dependencies.txt \
    && /opt/modelship/bin/pip install --constraint requirements.lock --requirement dependencies.txt

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
LABEL modelship.image="modelship/runtime" \
      org.opencontainers.image.title="ModelShip runtime" \
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
    HF_HUB_OFFLINE=1 \
    HOME=/tmp
USER 1000:1000
EXPOSE 8080
ENTRYPOINT ["python", "-m", "model_runtime"]
CMD ["serve"]
