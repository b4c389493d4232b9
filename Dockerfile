# syntax=docker/dockerfile:1.7
# POLARIS digital twin image: runs the twin by default and the operator as
# `polaris-twin-operator` (the Helm chart sets that command).
#
#   docker build -t polaris-twin:dev .
#   docker run --rm -p 50051:50051 polaris-twin:dev                       # twin, built-in defaults, embedded NATS
#   docker run --rm polaris-twin:dev polaris-twin-operator --standalone   # operator (needs a kubeconfig)
#
# The root filesystem can be read-only: only /tmp must be writable (an emptyDir in Kubernetes).

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# ---------------------------------------------------------------- build: a self-contained venv
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
# gcc builds the detector's optional C kernel (setup.py); it stays in this stage.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends gcc libc6-dev \
 && rm -rf /var/lib/apt/lists/*
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
# Dependencies first (cached until pyproject.toml changes), then the sources.
COPY pyproject.toml README.md setup.py ./
COPY twin ./twin
COPY operator ./operator
ARG EXTRAS=statistical,operator,llm,otel
# DL3013: "." is this project; its dependencies are bounded in pyproject.toml.
# hadolint ignore=DL3013
RUN pip install --upgrade "pip==25.0.1" "wheel==0.45.1" \
 && pip install ".[${EXTRAS}]" \
 && python -m compileall -q /opt/venv/lib \
 && polaris-twin --help >/dev/null \
 && polaris-twin-operator --help >/dev/null

# ---------------------------------------------------------------- runtime: venv + non-root user
FROM ${PYTHON_IMAGE} AS runtime
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="polaris-twin" \
      org.opencontainers.image.description="POLARIS digital twin (gRPC world model fed by NATS) and its Kubernetes operator" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0"
RUN groupadd --system --gid 10001 polaris \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin polaris
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/tmp
WORKDIR /tmp
USER 10001:10001
# gRPC, HTTP (REST gateway and console); 9464 is the metrics port the operator sets.
EXPOSE 50051 8080 9464
# Docker only; Kubernetes uses the gRPC probes the operator puts on the Deployment.
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s \
  CMD ["polaris-twin", "--health-check", "--target", "127.0.0.1:50051"]
# Built-in defaults; in Kubernetes the operator runs `polaris-twin --config /etc/polaris-twin/config.yaml`.
CMD ["polaris-twin"]
