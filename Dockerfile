# syntax=docker/dockerfile:1
# One image runs every fleetgate service: `docker run IMAGE ingestor|assembler|connector ...`
# (the entrypoint is the `fleetgate` command). Build from the repository root:
#   docker build -t fleetgate:0.1.0 .
# Stage 1 builds the wheel and installs it, with the runtime dependencies pinned by the lock,
# into a virtualenv; stage 2 copies only that virtualenv onto a slim Python and runs it as an
# unprivileged user (uid 10001), fit for a read-only root filesystem.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_NO_PROGRESS=1
WORKDIR /src
COPY requirements/dev.txt requirements/dev.txt
# uv at the version the lock pins
RUN python -m pip install --no-cache-dir \
      "uv==$(sed -n 's/^uv==\([^ ;]*\).*/\1/p' requirements/dev.txt)"
COPY pyproject.toml README.md ./
COPY libs libs
COPY services services
RUN uv build --wheel --out-dir /dist \
 && uv venv /opt/fleetgate \
 && VIRTUAL_ENV=/opt/fleetgate uv pip install --constraint requirements/dev.txt /dist/*.whl \
 && /opt/fleetgate/bin/fleetgate --version

FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="fleetgate" \
      org.opencontainers.image.description="Gateway from telematics devices' TCP protocols to Kafka, S3 and webhooks" \
      org.opencontainers.image.licenses="Apache-2.0"
RUN groupadd --system --gid 10001 fleetgate \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin fleetgate
COPY --from=build /opt/fleetgate /opt/fleetgate
ENV PATH=/opt/fleetgate/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    FLEETGATE_METRICS_PORT=9090
USER 10001:10001
WORKDIR /tmp
# 5232: camera devices (ingestor); 9090: /metrics, /healthz, /readyz (every service)
EXPOSE 5232 9090
ENTRYPOINT ["fleetgate"]
CMD ["--help"]
