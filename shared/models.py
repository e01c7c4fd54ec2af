"""ORM models. Table names are singular; every datetime is timezone-aware UTC and ends in `_at`."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Date,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    Numeric,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


def utcnow() -> datetime:
    return datetime.now(UTC)


def unix(value: datetime | None) -> int | None:
    """Seconds since the epoch, as the OpenAI API and our webhooks give times."""
    return int(value.timestamp()) if value is not None else None


class UTCDateTime(TypeDecorator[datetime]):
    """SQLite drops tzinfo; hand back aware datetimes on every backend."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value


JSONType = JSON().with_variant(JSONB(), "postgresql")

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map = {datetime: UTCDateTime(), dict[str, Any]: JSONType}


def _where(predicate: str) -> dict[str, Any]:
    """A partial index's predicate, on both backends."""
    return {"postgresql_where": text(predicate), "sqlite_where": text(predicate)}


class Timestamped:
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class Project(Timestamped, Base):
    __tablename__ = "project"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    # Signs per-request callbacks (`webhook_url`); encrypted at rest.
    default_webhook_secret: Mapped[str] = mapped_column(Text)


class ApiKey(Timestamped, Base):
    __tablename__ = "api_key"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    project_id: Mapped[str] = mapped_column(ForeignKey("project.id", ondelete="CASCADE"), index=True)
    name: Mapped[str | None] = mapped_column(String(200))
    prefix: Mapped[str] = mapped_column(String(16))
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    revoked_at: Mapped[datetime | None]
    last_used_at: Mapped[datetime | None]
    # Chat gateway limits per minute; null falls back to the TUNEFORGE_CHAT_* defaults.
    rpm_limit: Mapped[int | None]
    tpm_limit: Mapped[int | None]


class Dataset(Timestamped, Base):
    __tablename__ = "dataset"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    project_id: Mapped[str] = mapped_column(ForeignKey("project.id", ondelete="CASCADE"))
    status: Mapped[str] = mapped_column(String(20))
    filename: Mapped[str | None] = mapped_column(String(500))
    options: Mapped[dict[str, Any]]
    raw_blob: Mapped[str] = mapped_column(String(300))
    raw_bytes: Mapped[int] = mapped_column(BigInteger)
    train_blob: Mapped[str | None] = mapped_column(String(300))
    validation_blob: Mapped[str | None] = mapped_column(String(300))
    report: Mapped[dict[str, Any] | None]
    error_code: Mapped[str | None] = mapped_column(String(60))
    error_message: Mapped[str | None] = mapped_column(Text)
    webhook_url: Mapped[str | None] = mapped_column(Text)
    webhook_events: Mapped[dict[str, Any] | None]

    __table_args__ = (Index(None, "project_id", "id"),)


class Tune(Timestamped, Base):
    __tablename__ = "tune"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    project_id: Mapped[str] = mapped_column(ForeignKey("project.id", ondelete="CASCADE"))
    dataset_id: Mapped[str] = mapped_column(ForeignKey("dataset.id"), index=True)
    status: Mapped[str] = mapped_column(String(20))
    base_model: Mapped[str] = mapped_column(String(200))
    provider: Mapped[str] = mapped_column(String(100))
    n_epochs: Mapped[int | None]
    suffix: Mapped[str | None] = mapped_column(String(64))
    user_metadata: Mapped[dict[str, Any] | None] = mapped_column("metadata")
    quote: Mapped[dict[str, Any] | None]
    provider_file_id: Mapped[str | None] = mapped_column(String(200))
    provider_validation_file_id: Mapped[str | None] = mapped_column(String(200))
    provider_job_id: Mapped[str | None] = mapped_column(String(200), index=True)
    fine_tuned_model: Mapped[str | None] = mapped_column(String(300), index=True)
    trained_tokens: Mapped[int | None] = mapped_column(BigInteger)
    error_code: Mapped[str | None] = mapped_column(String(100))
    error_message: Mapped[str | None] = mapped_column(Text)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    # Set while the provider job is followed, None before submission and once finished.
    next_poll_at: Mapped[datetime | None]
    poll_failures: Mapped[int] = mapped_column(Integer, default=0)
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    webhook_url: Mapped[str | None] = mapped_column(Text)
    webhook_events: Mapped[dict[str, Any] | None]
    # Set when `provider` names one of the project's provider accounts (not a built-in).
    provider_account_id: Mapped[str | None] = mapped_column(
        ForeignKey("provider_account.id", ondelete="SET NULL"), index=True
    )
    # What chat calls the tuned model at the provider when that is not `fine_tuned_model`
    # (an Azure deployment name).
    deployment: Mapped[str | None] = mapped_column(String(200))
    # When the model.deprecation_warning webhook went out for this tune's base model.
    deprecation_warned_at: Mapped[datetime | None]
    # A retune: the tune it repeats, and what to do once it succeeds ({"alias", "require_eval"}).
    retune_of: Mapped[str | None] = mapped_column(String(40))
    on_success: Mapped[dict[str, Any] | None]

    __table_args__ = (
        Index(None, "project_id", "id"),
        # The sweep's two claims (shared/scheduler.py). Partial, so they hold only the tunes in
        # play, not the finished ones that pile up; `next_poll_at <= :now` implies the first
        # predicate, so even a generic (prepared) plan can use it.
        Index("ix_tune_next_poll_at", "next_poll_at", **_where("next_poll_at IS NOT NULL")),
        Index("ix_tune_unsubmitted_updated_at", "updated_at", **_where("status IN ('created', 'uploading')")),
    )


class ProviderAccount(Timestamped, Base):
    """A fine-tuning provider a project can name (`"provider": name` on tunes and chat)."""

    __tablename__ = "provider_account"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    project_id: Mapped[str] = mapped_column(ForeignKey("project.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(100))
    kind: Mapped[str] = mapped_column(String(30))  # openai | azure_openai | openai_compatible | sandbox
    base_url: Mapped[str] = mapped_column(Text)
    api_version: Mapped[str | None] = mapped_column(String(40))
    api_key: Mapped[str] = mapped_column(Text)  # encrypted
    key_hint: Mapped[str] = mapped_column(String(20))  # "…" + last 4 characters
    is_default: Mapped[bool] = mapped_column(Boolean, default=False)
    # Non-secret adapter settings (Azure: management_url, subscription_id, resource_group,
    # resource_name, sku, capacity).
    options: Mapped[dict[str, Any]]
    management_key: Mapped[str | None] = mapped_column(Text)  # encrypted (Azure's ARM token)
    # What the provider's GET /models said, merged over the shipped catalog.
    catalog: Mapped[dict[str, Any] | None]
    catalog_refreshed_at: Mapped[datetime | None]

    __table_args__ = (UniqueConstraint("project_id", "name"),)


class TuneEvent(Base):
    """Status changes of ours and events copied from the provider (messages and metrics)."""

    __tablename__ = "tune_event"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    tune_id: Mapped[str] = mapped_column(ForeignKey("tune.id", ondelete="CASCADE"))
    source: Mapped[str] = mapped_column(String(20))  # "tuneforge" | "provider"
    kind: Mapped[str] = mapped_column(String(20))  # "status" | "message" | "metrics"
    provider_event_id: Mapped[str | None] = mapped_column(String(200))
    level: Mapped[str] = mapped_column(String(20), default="info")
    message: Mapped[str] = mapped_column(Text)
    data: Mapped[dict[str, Any] | None]
    step: Mapped[int | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    __table_args__ = (
        UniqueConstraint("tune_id", "provider_event_id"),
        Index(None, "tune_id", "id"),
    )


class WebhookEndpoint(Timestamped, Base):
    __tablename__ = "webhook_endpoint"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    project_id: Mapped[str] = mapped_column(ForeignKey("project.id", ondelete="CASCADE"), index=True)
    url: Mapped[str] = mapped_column(Text)
    secret: Mapped[str] = mapped_column(Text)  # encrypted
    events: Mapped[dict[str, Any] | None]  # {"types": [...]}; null = every event
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    description: Mapped[str | None] = mapped_column(Text)
    # After a rotation the old secret keeps signing (a second signature) until this time.
    previous_secret: Mapped[str | None] = mapped_column(Text)
    previous_secret_expires_at: Mapped[datetime | None]
    failing_since: Mapped[datetime | None]
    disabled_reason: Mapped[str | None] = mapped_column(Text)


class WebhookEvent(Base):
    """Every event a project produced, whether or not anyone was listening: receivers reconcile
    from this list after an outage."""

    __tablename__ = "webhook_event"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    project_id: Mapped[str] = mapped_column(ForeignKey("project.id", ondelete="CASCADE"))
    type: Mapped[str] = mapped_column(String(60))
    payload: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    __table_args__ = (Index(None, "project_id", "id"),)


class WebhookDelivery(Base):
    """The outbox: one row per event and destination, written in the transaction of the change."""

    __tablename__ = "webhook_delivery"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    project_id: Mapped[str] = mapped_column(ForeignKey("project.id", ondelete="CASCADE"))
    event_id: Mapped[str] = mapped_column(String(40), index=True)
    event_type: Mapped[str] = mapped_column(String(60))
    endpoint_id: Mapped[str | None] = mapped_column(
        ForeignKey("webhook_endpoint.id", ondelete="CASCADE"), index=True
    )
    url: Mapped[str] = mapped_column(Text)
    payload: Mapped[str] = mapped_column(Text)  # the exact bytes signed, identical on every retry
    status: Mapped[str] = mapped_column(String(20), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime | None] = mapped_column(index=True)
    last_status_code: Mapped[int | None]
    last_error: Mapped[str | None] = mapped_column(Text)
    last_response_body: Mapped[str | None] = mapped_column(Text)
    delivered_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    __table_args__ = (Index(None, "project_id", "created_at"),)


class IdempotencyRecord(Base):
    """One `Idempotency-Key` of a project: the request it answered and the stored answer."""

    __tablename__ = "idempotency_record"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    project_id: Mapped[str] = mapped_column(ForeignKey("project.id", ondelete="CASCADE"))
    key: Mapped[str] = mapped_column(String(255))
    method: Mapped[str] = mapped_column(String(10))
    path: Mapped[str] = mapped_column(Text)
    state: Mapped[str] = mapped_column(String(20))  # "in_flight" | "completed"
    request_hash: Mapped[str | None] = mapped_column(String(64))
    response_status: Mapped[int | None]
    response_headers: Mapped[dict[str, Any] | None]
    response_body: Mapped[bytes | None] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(index=True)

    __table_args__ = (UniqueConstraint("project_id", "key"),)


class TaskAttempt(Base):
    """How often a task has started on one object without finishing: a worker that dies on the
    same object again and again (out of memory, a crash in a library) must stop retrying it."""

    __tablename__ = "task_attempt"

    key: Mapped[str] = mapped_column(String(200), primary_key=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class ChatAlias(Timestamped, Base):
    """A stable model name for frontends, pointing at one or more targets (a weighted split)."""

    __tablename__ = "chat_alias"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    project_id: Mapped[str] = mapped_column(ForeignKey("project.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(100))
    version: Mapped[int] = mapped_column(Integer, default=1)
    # [{"model": "<tune id | ft: name | base model>", "weight": 90}, ...]
    targets: Mapped[list[dict[str, Any]]] = mapped_column(JSONType)
    log_requests: Mapped[bool] = mapped_column(Boolean, default=False)

    __table_args__ = (UniqueConstraint("project_id", "name"),)


class ChatAliasVersion(Base):
    """Every state an alias has had, so it can be rolled back to any of them."""

    __tablename__ = "chat_alias_version"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    alias_id: Mapped[str] = mapped_column(ForeignKey("chat_alias.id", ondelete="CASCADE"))
    version: Mapped[int] = mapped_column(Integer)
    targets: Mapped[list[dict[str, Any]]] = mapped_column(JSONType)
    log_requests: Mapped[bool] = mapped_column(Boolean, default=False)
    key_id: Mapped[str | None] = mapped_column(String(40))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    __table_args__ = (UniqueConstraint("alias_id", "version"),)


class ChatUsage(Base):
    """Chat tokens and cost, summed per project, key, day, alias and served model.

    The gateway adds to these rows in batches off the request path (one upsert per group)."""

    __tablename__ = "chat_usage"

    project_id: Mapped[str] = mapped_column(ForeignKey("project.id", ondelete="CASCADE"), primary_key=True)
    day: Mapped[date] = mapped_column(Date, primary_key=True)
    key_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    # "" when the request named a model directly (a primary key column cannot be null).
    alias: Mapped[str] = mapped_column(String(100), primary_key=True)
    model: Mapped[str] = mapped_column(String(200), primary_key=True)
    requests: Mapped[int] = mapped_column(BigInteger, default=0)
    prompt_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    completion_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    cached_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    cost_usd: Mapped[Decimal] = mapped_column(Numeric(20, 10), default=Decimal(0))


class ChatLog(Base):
    """One logged conversation (opt-in per alias): the request's messages and the answer."""

    __tablename__ = "chat_log"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    project_id: Mapped[str] = mapped_column(ForeignKey("project.id", ondelete="CASCADE"))
    key_id: Mapped[str] = mapped_column(String(40))
    alias: Mapped[str | None] = mapped_column(String(100))
    model: Mapped[str] = mapped_column(String(200))
    user: Mapped[str | None] = mapped_column(String(200))
    messages: Mapped[list[dict[str, Any]]] = mapped_column(JSONType)
    response: Mapped[dict[str, Any] | None]
    prompt_tokens: Mapped[int] = mapped_column(Integer, default=0)
    completion_tokens: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    __table_args__ = (Index(None, "project_id", "created_at"),)


class Eval(Timestamped, Base):
    """Models compared on a dataset split: their answers per item, then metrics (shared/evals)."""

    __tablename__ = "eval"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    project_id: Mapped[str] = mapped_column(ForeignKey("project.id", ondelete="CASCADE"))
    dataset_id: Mapped[str] = mapped_column(ForeignKey("dataset.id"), index=True)
    split: Mapped[str] = mapped_column(String(20))
    status: Mapped[str] = mapped_column(String(20))
    # [{"model", "provider", "upstream_model", "tune_id"}]: resolved once, at creation, so an
    # alias moved mid-eval does not mix two models' answers under one name.
    models: Mapped[list[dict[str, Any]]] = mapped_column(JSONType)
    # max_items, seed, generation settings, language, judge, bootstrap settings.
    options: Mapped[dict[str, Any]]
    items_total: Mapped[int | None]
    metrics: Mapped[dict[str, Any] | None]
    error_code: Mapped[str | None] = mapped_column(String(60))
    error_message: Mapped[str | None] = mapped_column(Text)
    webhook_url: Mapped[str | None] = mapped_column(Text)
    webhook_events: Mapped[dict[str, Any] | None]
    completed_at: Mapped[datetime | None]

    __table_args__ = (
        Index(None, "project_id", "id"),
        # The sweep's claim of evals a lost message or a dead worker left unfinished.
        Index("ix_eval_unfinished_updated_at", "updated_at", **_where("status IN ('queued', 'running')")),
    )


class EvalItem(Base):
    """One prompt of an eval: the conversation sent (without the reference answer) and the reference."""

    __tablename__ = "eval_item"

    eval_id: Mapped[str] = mapped_column(ForeignKey("eval.id", ondelete="CASCADE"), primary_key=True)
    position: Mapped[int] = mapped_column(Integer, primary_key=True)
    messages: Mapped[list[dict[str, Any]]] = mapped_column(JSONType)
    question: Mapped[str] = mapped_column(Text)
    reference: Mapped[str] = mapped_column(Text)


class EvalOutput(Base):
    """One finished provider call of an eval, committed as soon as it returns, so a worker that
    dies mid-eval loses only the calls in flight. `slot` is the model's index ("0", "1", …) or a
    judge call ("judge:0:1:ab")."""

    __tablename__ = "eval_output"

    eval_id: Mapped[str] = mapped_column(ForeignKey("eval.id", ondelete="CASCADE"), primary_key=True)
    position: Mapped[int] = mapped_column(Integer, primary_key=True)
    slot: Mapped[str] = mapped_column(String(40), primary_key=True)
    answer: Mapped[str] = mapped_column(Text)
    finish_reason: Mapped[str | None] = mapped_column(String(40))
    prompt_tokens: Mapped[int] = mapped_column(Integer, default=0)
    completion_tokens: Mapped[int] = mapped_column(Integer, default=0)
    # {"code", "message"} when the provider refused the prompt for good (not retried).
    error: Mapped[dict[str, Any] | None]
    scores: Mapped[dict[str, Any] | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


__all__ = [
    "ApiKey",
    "Base",
    "ChatAlias",
    "ChatAliasVersion",
    "ChatLog",
    "ChatUsage",
    "Dataset",
    "Eval",
    "EvalItem",
    "EvalOutput",
    "IdempotencyRecord",
    "Project",
    "ProviderAccount",
    "TaskAttempt",
    "Tune",
    "TuneEvent",
    "WebhookDelivery",
    "WebhookEndpoint",
    "WebhookEvent",
    "unix",
    "utcnow",
]
