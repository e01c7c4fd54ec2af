"""Provider accounts on the wire (DESIGN.md §12: POST /v1/providers); keys go in, never out."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from api.schemas import Open

Kind = Literal["openai", "azure_openai", "openai_compatible", "sandbox"]


class ProviderCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=100, examples=["azure-eastus"])
    kind: Kind
    base_url: str = Field(
        max_length=2000,
        description="OpenAI-style base URL (https://api.openai.com/v1), or the Azure resource endpoint "
        "(https://<resource>.openai.azure.com)",
    )
    api_key: str = Field(min_length=1, max_length=4096, description="Stored encrypted; never returned")
    api_version: str | None = Field(default=None, max_length=40, examples=["2024-10-21"])
    default: bool = Field(default=False, description="Use it when a tune or chat request names no provider")
    options: dict[str, Any] | None = Field(
        default=None,
        description="Azure: management_url, subscription_id, resource_group, resource_name, sku, capacity "
        "(where tuned models are deployed)",
    )
    management_key: str | None = Field(
        default=None,
        max_length=8192,
        description="Azure: bearer token for the deployment step; never returned",
    )


class ProviderUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    base_url: str | None = Field(default=None, max_length=2000)
    api_key: str | None = Field(default=None, min_length=1, max_length=4096)
    api_version: str | None = Field(default=None, max_length=40)
    default: bool | None = None
    options: dict[str, Any] | None = None
    management_key: str | None = Field(default=None, max_length=8192)


class ProviderModel(Open):
    id: str
    methods: list[str]
    shutdown_date: str | None = None


class Capabilities(Open):
    accepts_jobs: bool
    no_new_jobs_from: str | None = None
    webhooks: bool
    deployment_step: bool
    models: list[ProviderModel]


class Provider(Open):
    id: str
    object: Literal["provider"] = "provider"
    name: str
    kind: str
    base_url: str
    api_version: str | None = None
    key_hint: str = Field(description="The last four characters of the key, to tell keys apart")
    is_default: bool
    capabilities: Capabilities
    created_at: int


class DeletedProvider(Open):
    id: str
    object: Literal["provider"] = "provider"
    name: str
    deleted: bool = True


class RetuneGate(BaseModel):
    """Move the alias only if the new tune beats its current targets in an eval run for it."""

    model_config = ConfigDict(extra="forbid")
    metric: str = Field(default="rouge_l", max_length=40)
    min_margin: float = Field(default=0.0, ge=0, le=100)
    max_items: int = Field(default=50, ge=1, le=2000)
    split: Literal["train", "validation"] = "validation"


class RetuneRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    provider: str | None = Field(default=None, description="Another provider (name); default: the tune's own")
    base_model: str | None = Field(default=None, description="Another base model; default: the tune's own")
    alias: str | None = Field(default=None, description="Point this alias at the new tune once it succeeds")
    require_eval: bool | RetuneGate = Field(
        default=False, description="Move the alias only if the new tune wins an eval (true: default settings)"
    )
