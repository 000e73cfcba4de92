# syntax=docker/dockerfile:1
#
# Bucket Registry image.
#   docker build -t bucket-registry .
#   docker run -p 8000:8000 -e BUCKET_REGISTRY_DATABASE_URL=... bucket-registry
#   docker run -e BUCKET_REGISTRY_DATABASE_URL=... bucket-registry migrate

ARG PYTHON_IMAGE=python:3.11-slim

# ---------------------------------------------------------------------------
# Builder: resolves and installs the runtime dependencies into a virtualenv.
# ---------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS builder

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

WORKDIR /src

# Dependencies first, against a stub package, so that code-only changes reuse
# this (slow) layer. Every dependency ships manylinux wheels for amd64 and
# arm64, so no compiler is needed here either.
COPY pyproject.toml README.md ./
RUN mkdir app && touch app/__init__.py \
    && pip install --prefer-binary . \
    && pip uninstall -y bucket-registry \
    && rm -rf app build ./*.egg-info

# The package itself; no dev extras. pip precompiles the bytecode here, since
# the runtime filesystem is read-only.
COPY app/ ./app/
RUN pip install --no-deps . \
    && bucket-registry --help >/dev/null

# ---------------------------------------------------------------------------
# Runtime: the virtualenv, the migrations, and nothing else.
# ---------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS runtime

LABEL org.opencontainers.image.title="bucket-registry" \
      org.opencontainers.image.description="Gen3 Bucket Registry" \
      org.opencontainers.image.licenses="Apache-2.0"

# Fixed ids: the Helm chart's securityContext (runAsUser/runAsGroup 10001,
# runAsNonRoot) checks against them.
RUN groupadd --system --gid 10001 bucketregistry \
    && useradd --system --uid 10001 --gid 10001 --no-create-home \
       --home-dir /nonexistent --shell /usr/sbin/nologin bucketregistry

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    BUCKET_REGISTRY_WORKERS=1

COPY --from=builder /opt/venv /opt/venv

WORKDIR /app
# `bucket-registry migrate` runs alembic from the working directory.
COPY alembic.ini ./
COPY alembic/ ./alembic/

# Code and migrations stay root-owned: the service user can read, not change them.
USER 10001:10001

EXPOSE 8000

# Docker/Compose only (Kubernetes uses the chart's probes). Python instead of
# curl, which the slim image lacks; the port is the one CMD serves on.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8000/_status', timeout=4).status == 200 else 1)"]

ENTRYPOINT ["bucket-registry"]
CMD ["serve", "--host", "0.0.0.0", "--port", "8000"]
