# Stock Copilot: one image for the Ray head running `stockcopilot up` (docker-compose), the MLflow
# UI, and the head/worker pods of the KubeRay RayService (deploy/k8s/rayservice.yaml).
#
#   docker build -t stock-copilot:local .
#
# Dependencies come from the committed uv.lock only (`--frozen`), in a builder stage whose layer
# is reused until pyproject.toml or uv.lock change; the runtime stage gets the finished /app.

ARG PYTHON_IMAGE=python:3.12-slim-bookworm

FROM ghcr.io/astral-sh/uv:0.13.9 AS uv

FROM ${PYTHON_IMAGE} AS builder
COPY --from=uv /uv /uvx /bin/
ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_PROJECT_ENVIRONMENT=/app/.venv
WORKDIR /app
# Third-party dependencies first: this layer survives every source-only change.
RUN --mount=type=cache,target=/root/.cache/uv \
    --mount=type=bind,source=uv.lock,target=uv.lock \
    --mount=type=bind,source=pyproject.toml,target=pyproject.toml \
    uv sync --frozen --no-dev --no-install-project
COPY . /app
# Then the project itself, as a regular (non-editable) install: Ray workers import
# `serving.app` from site-packages whatever their working directory.
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-editable

FROM ${PYTHON_IMAGE} AS runtime
# tini reaps the many processes Ray starts and forwards SIGTERM to `stockcopilot up`, which stops
# Ray and Serve cleanly; wget is what KubeRay's readiness probes call inside Ray pods.
RUN apt-get update \
    && apt-get install -y --no-install-recommends tini wget \
    && rm -rf /var/lib/apt/lists/*
RUN groupadd --system --gid 10001 app \
    && useradd --system --uid 10001 --gid app --create-home --home-dir /home/app app
COPY --from=builder --chown=app:app /app /app
# Folders the product writes to (MLflow store, model cards, reports, features, Ray's session
# files) exist and belong to `app`, so volumes mounted on them start with the right owner.
RUN mkdir -p /app/mlruns /app/models /app/reports /app/data /app/.stockcopilot /tmp/ray \
    && chown app:app /app/mlruns /app/models /app/reports /app/data /app/.stockcopilot /tmp/ray
WORKDIR /app
ENV PATH=/app/.venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    HOST=0.0.0.0 \
    PORT=8000 \
    STOCKCOPILOT_DATA_DIR=/app/.stockcopilot \
    MLFLOW_TRACKING_URI=sqlite:////app/mlruns/mlflow.db
USER app
# API (Ray Serve proxy), Ray dashboard, Ray metrics export port (KubeRay's default; under
# `stockcopilot up` Ray picks the port and lists it in /tmp/ray/prom_metrics_service_discovery.json)
EXPOSE 8000 8265 8080
# Liveness of the API process; the first start ingests and trains a quick champion first,
# hence the long start period.
HEALTHCHECK --interval=30s --timeout=5s --start-period=600s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('PORT', '8000'), timeout=4)"]
ENTRYPOINT ["tini", "--"]
CMD ["stockcopilot", "up", "--host", "0.0.0.0"]
