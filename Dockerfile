# syntax=docker/dockerfile:1
# Multi-stage image: the build stage has compilers and uv; the final stage has only the
# virtualenv, runs as an unprivileged user and starts `arcana`.

FROM python:3.11-slim-bookworm AS build
ENV UV_COMPILE_BYTECODE=1 UV_LINK_MODE=copy UV_PYTHON_DOWNLOADS=never
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential=12.9 \
    && rm -rf /var/lib/apt/lists/*
RUN pip install --no-cache-dir uv==0.13.9
WORKDIR /src
COPY pyproject.toml uv.lock README.md ./
RUN uv sync --frozen --no-dev --no-install-project
COPY src ./src
RUN uv sync --frozen --no-dev --no-editable

FROM python:3.11-slim-bookworm AS runtime
RUN groupadd --system --gid 10001 arcana \
    && useradd --system --uid 10001 --gid arcana --home-dir /app --shell /usr/sbin/nologin arcana
WORKDIR /app
COPY --from=build /src/.venv /app/.venv
COPY plugins/*.wasm /app/plugins/
RUN mkdir -p /app/var && chown -R arcana:arcana /app/var
ENV PATH="/app/.venv/bin:$PATH" \
    PYTHONUNBUFFERED=1 \
    ARCANA_ENV=production \
    ARCANA_HTTP_HOST=0.0.0.0 \
    ARCANA_GRPC_HOST=0.0.0.0 \
    ARCANA_PLUGINS_DIR=/app/plugins \
    ARCANA_VAR_DIR=/app/var
USER 10001:10001
EXPOSE 8000 50051
HEALTHCHECK --interval=10s --timeout=3s --retries=3 \
    CMD ["python", "-c", "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2).status == 200 else 1)"]
ENTRYPOINT ["arcana"]
CMD ["serve"]
