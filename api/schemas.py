"""The wire contract: request bodies and response shapes (DESIGN.md §12)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, HttpUrl

T = TypeVar("T")


class Open(BaseModel):
    # Responses may grow fields; clients must not break on them, and neither do we.
    model_config = ConfigDict(extra="allow")


class ErrorInfo(Open):
    type: str
    code: str
    message: str
    param: str | None = None


class ErrorResponse(Open):
    error: ErrorInfo


class Page(Open, Generic[T]):
    object: Literal["list"] = "list"
    data: list[T]
    has_more: bool = False


class ObjectError(Open):
    code: str
    message: str


class Dataset(Open):
    id: str = Field(examples=["ds_06h1a2b3c4d5e6f7g8h9i0j1k2"])
    object: Literal["dataset"] = "dataset"
    status: Literal["pending", "processing", "ready", "failed"]
    filename: str | None = None
    bytes: int
    options: dict[str, Any]
    error: ObjectError | None = None
    report: dict[str, Any] | None = None
    created_at: int


class DatasetFromLogsRequest(BaseModel):
    """Filters on the logged conversations (newest `limit` that match), then the options of an
    upload (preset is always `chat`)."""

    model_config = ConfigDict(extra="forbid")
    alias: str | None = None
    model: str | None = Field(default=None, description="The model that answered, or its tune id")
    user: str | None = None
    since: datetime | None = Field(default=None, description="ISO 8601 or Unix seconds; inclusive")
    until: datetime | None = Field(default=None, description="ISO 8601 or Unix seconds; exclusive")
    limit: int = Field(default=10_000, ge=1, le=100_000)
    system_prompt: str | None = None
    sample_size: int | None = Field(default=None, ge=1)
    seed: int = 0
    validation_fraction: float = Field(default=0.0, ge=0, lt=1)
    target_model: str = "gpt-4o-mini-2024-07-18"
    n_epochs: int | None = Field(default=None, ge=1, le=50)
    webhook_url: HttpUrl | None = None
    webhook_events: list[str] | None = None


class QuoteRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    dataset_id: str
    model: str = Field(examples=["gpt-4.1-mini-2025-04-14"])
    n_epochs: int | None = Field(default=None, ge=1, le=50)


class Quote(Open):
    model: str
    n_epochs: int
    billed_tokens: int
    cost_usd: float


class TuneRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    dataset_id: str
    base_model: str = Field(examples=["gpt-4o-mini-2024-07-18"])
    n_epochs: int | None = Field(default=None, ge=1, le=50)
    suffix: str | None = Field(default=None, max_length=64, pattern=r"^[A-Za-z0-9_-]*$")
    provider: str | None = None
    metadata: dict[str, str] | None = None
    max_cost_usd: float | None = Field(default=None, ge=0)
    webhook_url: HttpUrl | None = None
    webhook_events: list[str] | None = None


class Tune(Open):
    id: str
    object: Literal["tune"] = "tune"
    status: str
    dataset_id: str
    base_model: str
    provider: str
    fine_tuned_model: str | None = None
    error: ObjectError | None = None
    created_at: int


class TuneEvent(Open):
    id: str
    object: Literal["tune.event"] = "tune.event"
    source: str
    kind: str
    level: str
    message: str
    data: dict[str, Any] | None = None
    created_at: int


class MetricPoint(Open):
    step: int
    train_loss: float | None = None


class Checkpoint(Open):
    id: str
    step: int
    fine_tuned_model_checkpoint: str
    metrics: dict[str, Any] = {}


class WebhookEndpointRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    url: HttpUrl
    events: list[str] | None = None
    description: str | None = Field(default=None, max_length=500)


class WebhookEndpointUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    url: HttpUrl | None = None
    events: list[str] | None = Field(default=None, description="[] means every event")
    enabled: bool | None = None
    description: str | None = Field(default=None, max_length=500)


class RotateSecretRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    grace_period_seconds: int = Field(default=86400, ge=0, le=7 * 86400)

    def grace_period(self) -> timedelta:
        return timedelta(seconds=self.grace_period_seconds)


class WebhookEndpoint(Open):
    id: str
    object: Literal["webhook_endpoint"] = "webhook_endpoint"
    url: str
    events: list[str] | None = None
    enabled: bool
    disabled_reason: str | None = None
    created_at: int


class Event(Open):
    id: str
    type: str
    created_at: int
    data: dict[str, Any]


class CreatedWebhookEndpoint(WebhookEndpoint):
    secret: str = Field(description="The signing secret (whsec_…). Shown only in this response.")


class WebhookDelivery(Open):
    id: str
    object: Literal["webhook_delivery"] = "webhook_delivery"
    event_id: str
    event_type: str
    status: str
    attempts: int
    last_status_code: int | None = None
    next_attempt_at: int | None = None


class WebhookSecret(Open):
    secret: str
