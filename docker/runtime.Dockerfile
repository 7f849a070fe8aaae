# The model runtime and router image: `python -m model_runtime serve|router`.
# Build from the repository root: docker build -f docker/runtime.Dockerfile -t modelship/runtime:0.1.0 .
FROM python:3.11.7-slim-bookworm AS build
WORKDIR /src
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
COPY requirements.lock pyproject.toml README.md ./
COPY model_runtime ./model_runtime
COPY model_operator ./model_operator
# The lock is a constraints file: only what the package needs is installed, at the locked versions.
RUN python -m venv /opt/modelship \
    && /opt/modelship/bin/pip install --constraint requirements.lock .

FROM python:3.11.7-slim-bookworm
LABEL modelship.image="modelship/runtime" \
      org.opencontainers.image.title="ModelShip runtime" \
      org.opencontainers.image.source="https://github.com/modelship/modelship"
COPY --from=build /opt/modelship /opt/modelship
ENV PATH=/opt/modelship/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HF_HUB_OFFLINE=1 \
    HOME=/tmp
USER 1000:1000
EXPOSE 8080
ENTRYPOINT ["python", "-m", "model_runtime"]
CMD ["serve"]
