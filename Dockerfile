# No `# syntax=` line: it makes BuildKit fetch a frontend image from a registry; the built-in one is enough.
# Production image: the API (default CMD), the ARQ worker and the migrations all run from it.
# Dev-only files (tests, bench, app/devstack.py, the [dev] extra) stay out; see .dockerignore.

FROM python:3.11-slim AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH
RUN python -m venv /opt/venv
# A C compiler for the project's one extension (view-statement's rows, app/servicing/rows.py), in this
# stage only: the runtime image gets the built module, not the compiler. Python's headers come with the
# official image; a Debian-packaged Python (as in the stand-in images) needs its -dev package. Should the
# extension not build, the install still succeeds and the same rows come from Python, at more CPU: the
# build prints which.
RUN apt-get update \
    && apt-get install -y --no-install-recommends gcc libc6-dev \
    && if [ ! -e "$(python -c 'import sysconfig; print(sysconfig.get_paths()["include"])')/Python.h" ]; then \
        apt-get install -y --no-install-recommends python3-dev; fi \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# Runtime dependencies only (never the [dev] extra), exactly as locked (`make lock`), hashes checked, in a
# layer that is rebuilt only when the lock changes.
COPY requirements.lock ./
RUN pip install --require-hashes --no-deps -r requirements.lock
# The project itself, without dependencies: gives the venv the `credit-approval` console script.
COPY pyproject.toml README.md* ./
COPY app ./app
RUN pip install --no-deps . \
    && cd / && python -c "from app.servicing.rows import ACCELERATED; print('statement rows in C:', ACCELERATED)"

FROM python:3.11-slim AS runtime
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    WEB_CONCURRENCY=2 \
    PROMETHEUS_MULTIPROC_DIR=/tmp/prometheus
RUN useradd --system --uid 10001 --user-group --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin app
COPY --from=builder /opt/venv /opt/venv
WORKDIR /app
# Code stays root-owned: the service user can read it, not change it. The `app` package is in the venv
# (installed once, in the builder); /app holds only what runs from a working directory.
COPY alembic.ini worker.py ./
COPY migrations ./migrations
USER app
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/health', timeout=4)"]
# `credit-approval serve` is PID 1 (gets SIGTERM): it empties the metrics directory (/metrics sums every
# worker process's files), then runs uvicorn (uvloop, bounded httptools, WEB_CONCURRENCY workers) with its
# own lines in LOG_FORMAT from the first; the app writes its own access log, so uvicorn's is off.
CMD ["credit-approval", "serve", "--host", "0.0.0.0", "--port", "8000"]
