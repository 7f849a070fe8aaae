# The operator image: `python -m model_operator`. No torch: the operator never loads a model.
# Build from the repository root: docker build -f docker/operator.Dockerfile -t modelship/operator:0.1.0 .
FROM python:3.11.7-slim-bookworm AS build
WORKDIR /src
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
COPY requirements.lock pyproject.toml README.md ./
COPY model_runtime ./model_runtime
COPY model_operator ./model_operator
RUN python -m venv /opt/modelship \
    && /opt/modelship/bin/pip install --constraint requirements.lock \
        kopf kubernetes pydantic prometheus-api-client prometheus-client pyyaml rich \
    && /opt/modelship/bin/pip install --no-deps .

FROM python:3.11.7-slim-bookworm
LABEL modelship.image="modelship/operator" \
      org.opencontainers.image.title="ModelShip operator" \
      org.opencontainers.image.source="https://github.com/modelship/modelship"
COPY --from=build /opt/modelship /opt/modelship
ENV PATH=/opt/modelship/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp
USER 1000:1000
EXPOSE 8000 8080
ENTRYPOINT ["python", "-m", "model_operator"]
