"""The one settings object. Nothing else in Tuneforge reads the environment."""

from __future__ import annotations

import os
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

_DEV_SECRET = "tuneforge-dev-secret-change-me"


class Settings(BaseSettings):
    # An empty variable means "not set" (compose files pass `KEY=` through); TUNEFORGE_ENV_FILE
    # picks the dotenv file, so a test run can ignore a developer's `.env`.
    model_config = SettingsConfigDict(
        env_prefix="TUNEFORGE_",
        env_file=os.environ.get("TUNEFORGE_ENV_FILE", ".env"),
        env_ignore_empty=True,
        extra="ignore",
        populate_by_name=True,
    )

    # Embedded defaults live under one folder so a fresh checkout runs with nothing configured.
    data_dir: Path = Path(".tuneforge")
    database_url: str | None = None
    broker_url: str | None = None
    blob_dir: Path | None = None
    celery_queue: str = "tuneforge"

    openai_api_key: SecretStr | None = None
    openai_base_url: str | None = None
    # Verifies OpenAI's fine_tuning.job.* webhooks (whsec_…), so finished jobs are seen at once.
    openai_webhook_secret: SecretStr | None = None
    secret_key: SecretStr = SecretStr(_DEV_SECRET)

    # Comma-separated in the environment: TUNEFORGE_WEBHOOK_ALLOWED_HOSTS=127.0.0.1,localhost
    webhook_allowed_hosts: Annotated[list[str], NoDecode] = Field(default_factory=list)
    webhook_allowed_ports: Annotated[list[int], NoDecode] = Field(default_factory=lambda: [80, 443])
    webhook_timeout_seconds: float = 15.0
    # At most this many deliveries to one endpoint (or one callback host) are in flight at once;
    # a batch that finds no slot free within webhook_busy_wait_seconds leaves its deliveries due
    # for the batch holding them (README, Webhooks).
    webhook_endpoint_concurrency: int = Field(default=4, ge=1)
    webhook_busy_wait_seconds: float = 0.2
    # Threads in the `tuneforge worker --queue webhooks` process (the webhook senders).
    webhook_worker_concurrency: int = Field(default=16, ge=1)
    # Deliveries one task sends at most (one destination's, over its in-flight slots), and how
    # long it keeps starting requests; what is left stays due (README, Webhooks).
    webhook_batch_size: int = Field(default=100, ge=1)
    webhook_batch_seconds: float = Field(default=2.0, gt=0)
    # An endpoint whose deliveries all fail for this long is disabled (Svix and Stripe: days).
    webhook_disable_after_seconds: float = 5 * 24 * 3600
    # Seconds before retry N (1-based); past the end the delivery is given up.
    webhook_retry_schedule: list[float] = Field(
        default_factory=lambda: [5, 300, 1800, 7200, 18000, 36000, 36000]
    )

    sandbox_host: str = "127.0.0.1"
    sandbox_port: int = 8001
    sandbox_time_scale: float = 1.0
    # `azure`: the sandbox answers like an Azure OpenAI resource (/openai/…, `api-key`,
    # `api-version`, deployments) instead of like OpenAI (README, Providers).
    sandbox_flavor: Literal["openai", "azure"] = "openai"

    # The date and time Tuneforge believes it is for provider lifecycles (job cutoffs, model
    # shutdowns, deprecation warnings); unset = the real clock. For tests and drills.
    now: datetime | None = None
    # A tuned model whose base shuts down within this many days is flagged in GET /v1/models
    # and announced once by a model.deprecation_warning webhook.
    deprecation_warning_days: int = Field(default=30, ge=0)
    # Provider base URLs may only point at public addresses, except these hosts (comma-separated).
    provider_allowed_hosts: Annotated[list[str], NoDecode] = Field(default_factory=list)

    api_host: str = "127.0.0.1"
    api_port: int = 8000
    # Processes of `tuneforge api`; above 1, chat limits need Redis to be shared between them.
    api_workers: int = Field(default=1, ge=1)

    poll_interval_seconds: float = 5.0
    scheduler_interval_seconds: float = 1.0
    # Provider request budget: polls the sweep may enqueue per second, across every provider (one
    # pass takes this times scheduler_interval_seconds, most overdue first). A poll is about two
    # provider requests (the job, then its newest events).
    provider_polls_per_second: float = Field(default=20.0, gt=0)
    # How long claimed work (a poll, a delivery) is left alone before the sweep hands it out again.
    lease_seconds: float = 60.0
    # Failed provider calls in a row for one tune (polls, or attempts to submit it) before it is
    # given up with provider_unreachable.
    provider_max_failures: int = 30
    # How long a tune may sit in created/uploading (a dataset in pending/processing) untouched
    # before the sweep assumes its message or its worker was lost and starts it again.
    stale_after_seconds: float = 120.0
    # Read timeout for each call to a provider (connecting gets 5 s); the SDK's default is 600 s.
    provider_timeout_seconds: float = 120.0
    upload_max_bytes: int = 512 * 1024 * 1024
    dataset_error_limit: int = 100
    # Token counting: "auto" uses the optional exact fast tokenizer when it is installed and
    # verified identical to tiktoken, "tiktoken" forces the reference; threads default to the CPUs.
    tokenizer: Literal["auto", "tiktoken", "quicktok"] = "auto"
    tokenizer_threads: int | None = Field(default=None, ge=1)
    # A gzip upload that inflates past this fails with decompressed_too_large (bomb guard).
    dataset_max_decompressed_bytes: int = 4 * 1024 * 1024 * 1024
    default_budget_usd: float | None = None

    # Chat gateway (README, Chat). Redis holds the per-key limits and the alias generation that
    # tells every API process to drop its cached routes; it defaults to the broker when that is
    # Redis. Without Redis (the embedded default) both live in the one API process.
    redis_url: str | None = None
    # Per-key defaults; a key's own rpm_limit / tpm_limit wins. None means unlimited.
    chat_requests_per_minute: int | None = Field(default=None, ge=1)
    chat_tokens_per_minute: int | None = Field(default=None, ge=1)
    # How long a key and a resolved model stay cached in an API process (alias changes are seen
    # at once through the generation; this bounds key revocation and deleted tunes).
    chat_cache_seconds: float = 30.0
    # Usage rows and request logs are written in batches this often, off the request path.
    chat_flush_seconds: float = 1.0
    chat_upstream_timeout_seconds: float = 600.0
    chat_upstream_max_connections: int = Field(default=256, ge=1)
    # Larger chat request bodies get 413 (images sent inline as base64 make bodies big).
    chat_max_body_bytes: int = Field(default=50 * 1024 * 1024, ge=1024)
    # One access-log line per chat request (api/access_log.py). Off: at gateway rates the lines
    # cost CPU and disk, and usage (GET /v1/usage) and per-alias request logs already count it.
    chat_access_log: bool = False

    @field_validator(
        "webhook_allowed_hosts", "webhook_allowed_ports", "provider_allowed_hosts", mode="before"
    )
    @classmethod
    def _split_hosts(cls, value: object) -> object:
        if isinstance(value, str):
            return [h.strip() for h in value.split(",") if h.strip()]
        return value

    @property
    def sqlalchemy_url(self) -> str:
        """The database URL with the driver Tuneforge uses (users give plain URLs)."""
        url = self.database_url or f"sqlite:///{self.data_dir / 'tuneforge.db'}"
        for plain in ("postgresql://", "postgres://"):
            if url.startswith(plain):
                return "postgresql+psycopg://" + url[len(plain) :]
        return url

    @property
    def is_sqlite(self) -> bool:
        return self.sqlalchemy_url.startswith("sqlite")

    @property
    def celery_broker_url(self) -> str:
        return self.broker_url or f"sqla+sqlite:///{self.data_dir / 'broker.db'}"

    @property
    def chat_redis_url(self) -> str | None:
        if self.redis_url:
            return self.redis_url
        if self.broker_url and self.broker_url.startswith(("redis://", "rediss://")):
            return self.broker_url
        return None

    @property
    def blob_root(self) -> Path:
        return self.blob_dir or self.data_dir / "blobs"

    @property
    def sandbox_base_url(self) -> str:
        return f"http://{self.sandbox_host}:{self.sandbox_port}/v1"

    @property
    def uses_sandbox(self) -> bool:
        return self.openai_api_key is None

    @property
    def default_provider_base_url(self) -> str:
        if self.uses_sandbox:
            return self.openai_base_url or self.sandbox_base_url
        return self.openai_base_url or "https://api.openai.com/v1"

    @property
    def default_provider_api_key(self) -> str:
        # The sandbox accepts any bearer token, but the openai SDK refuses to start without one.
        return self.openai_api_key.get_secret_value() if self.openai_api_key else "sk-sandbox"


@lru_cache
def get_settings() -> Settings:
    return Settings()
