"""One settings object, read from the environment (and an optional .env file)."""

from __future__ import annotations

import os
from functools import lru_cache

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


def normalise_database_url(url: str) -> str:
    """Accept postgres://, postgresql:// and postgresql+asyncpg://; always hand SQLAlchemy the asyncpg one."""
    for prefix in ("postgresql+asyncpg://", "postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+asyncpg://" + url[len(prefix) :]
    raise ValueError("DATABASE_URL must be a postgres://, postgresql:// or postgresql+asyncpg:// URL")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", extra="ignore")

    database_url: str = Field(
        default="postgresql+asyncpg://postgres@127.0.0.1:5432/credit",
        description="PostgreSQL URL; postgres:// and postgresql:// are accepted and normalised.",
    )
    database_replica_urls: str = Field(
        default="",
        description="Comma-separated URLs of streaming replicas (hot standbys) of DATABASE_URL; empty = "
        "none. Single-statement reads go to them round-robin; writes and units of work stay on the primary "
        "(docs/scaling.md).",
    )
    replica_max_lag_ms: int = Field(
        default=1_000,
        ge=0,
        description="A replica further behind the primary than this (checked in the background) gets no "
        "reads until it catches up.",
    )
    replica_check_interval_s: float = Field(
        default=0.5, gt=0, description="How often each replica's state and lag are checked."
    )
    db_transaction_pooler: bool = Field(
        default=False,
        description="The database URLs point at PgBouncer (or another pooler) in transaction pooling mode: "
        "no prepared statement outlives its transaction, and no session setting is sent at connect "
        "(set statement_timeout and lock_timeout with ALTER ROLE instead; docs/scaling.md).",
    )
    redis_url: str = Field(default="redis://127.0.0.1:6379/0")
    arq_queue_name: str = Field(default="credit-approval:queue", description="ARQ queue in Redis.")
    # Connection budget: web_concurrency x (db_pool_size + db_max_overflow) + worker pool < max_connections.
    db_pool_size: int = Field(default=10, ge=1)
    # No overflow by default: under sustained load above the pool size SQLAlchemy opens an overflow
    # connection per request and closes it on return (a TCP + auth handshake each time); measured, that
    # halved check-eligibility's throughput. Requests beyond the pool wait up to db_pool_timeout_s instead.
    db_max_overflow: int = Field(default=0, ge=0)
    db_pool_timeout_s: float = Field(default=5.0, gt=0)
    db_statement_timeout_ms: int = Field(default=10_000, ge=0)
    db_connect_timeout_s: float = Field(default=5.0, gt=0)
    # A unit of work that hits a serialization failure or a deadlock is run again, at most this many times.
    db_retry_attempts: int = Field(default=3, ge=1)
    web_concurrency: int = Field(default_factory=lambda: os.cpu_count() or 1, ge=1)
    api_keys: str = Field(default="", description="Comma-separated API keys; empty = open access.")
    log_level: str = "INFO"
    log_format: str = Field(default="json", pattern="^(json|console)$")
    max_body_bytes: int = 64 * 1024
    idempotency_ttl_s: int = Field(default=24 * 3600, ge=1, description="How long an Idempotency-Key lives.")
    ingestion_batch_rows: int = Field(default=5_000, ge=1)
    ingestion_job_timeout_s: int = Field(default=3_600, ge=1)
    # Bounds on what a workbook may make the reader process do (app/ingestion/workbook_limits.py).
    ingestion_max_part_mb: int = Field(
        default=1_024,
        ge=1,
        description="Largest uncompressed size of one part of an .xlsx zip (a worksheet), in MB; "
        "a bigger part fails the file before it is inflated.",
    )
    ingestion_max_shared_strings_mb: int = Field(
        default=128,
        ge=1,
        description="Largest uncompressed size of a workbook's shared strings part, in MB "
        "(openpyxl holds every shared string in memory).",
    )
    ingestion_max_shared_strings: int = Field(
        default=3_000_000,
        ge=1,
        description="Most shared strings one workbook may have (~80 bytes of reader memory each).",
    )
    ingestion_reader_memory_mb: int = Field(
        default=1_024,
        ge=0,
        description="Address-space limit (RLIMIT_AS) of each workbook reader process, in MB; "
        "0 = none. A file that needs more fails with an out-of-memory error.",
    )
    ingestion_stall_timeout_s: float = Field(
        default=120,
        gt=0,
        description="A workbook reader that sends nothing for this long fails its job (the watchdog).",
    )
    ingestion_lease_s: int = Field(
        default=60,
        ge=5,
        description="A running job renews its claim this often x3; a job whose worker died is taken up "
        "by another worker once the claim lapses.",
    )

    worker_metrics_port: int = Field(
        default=0,
        ge=0,
        le=65535,
        description="The ARQ worker serves its own Prometheus /metrics (ingestion rows, job durations) on "
        "this port; 0 = off. The API's /metrics serves the API processes' metrics only.",
    )
    credit_policy_file: str = Field(
        default="",
        description="A TOML file setting the credit policy's numbers (app/policy_file.py); empty = the "
        "built-in policy. Validated at startup: an invalid file stops the API and the worker.",
    )

    @field_validator("database_url")
    @classmethod
    def _normalise(cls, value: str) -> str:
        return normalise_database_url(value)

    @field_validator("database_replica_urls")
    @classmethod
    def _normalise_replicas(cls, value: str) -> str:
        return ",".join(normalise_database_url(url.strip()) for url in value.split(",") if url.strip())

    @property
    def replica_url_list(self) -> list[str]:
        return [url for url in self.database_replica_urls.split(",") if url]

    @property
    def api_key_list(self) -> list[str]:
        return [key.strip() for key in self.api_keys.split(",") if key.strip()]


@lru_cache
def get_settings() -> Settings:
    return Settings()
