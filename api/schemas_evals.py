"""Wire shapes of evals (DESIGN.md §12: `POST /evals`, `GET /evals/{id}`)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, HttpUrl

from api.schemas import ObjectError, Open
from shared.evals.service import MAX_ITEMS, MAX_MODELS, EvalOptions, Generation, Judge


class GenerationSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    temperature: float = Field(default=0.0, ge=0, le=2)
    max_tokens: int = Field(default=512, ge=1, le=32768)
    top_p: float | None = Field(default=None, gt=0, le=1)
    seed: int | None = Field(default=None, ge=0, le=2**31 - 1)
    system_prompt: str | None = Field(
        default=None, max_length=20000, description="Replaces the dataset's system message"
    )


class JudgeSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    model: str = Field(min_length=1, max_length=200, examples=["gpt-4.1-2025-04-14"])


class EvalRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    dataset_id: str
    models: list[str] = Field(
        min_length=2,
        max_length=MAX_MODELS,
        description="Aliases, tune ids, fine-tuned or base models; the first is the judge's baseline",
        examples=[["gpt-4o-mini", "medqa@prod"]],
    )
    split: Literal["train", "validation"] = "validation"
    max_items: int = Field(default=100, ge=1, le=MAX_ITEMS)
    seed: int = Field(default=0, ge=0, le=2**31 - 1, description="Item sample and bootstrap seed")
    language: Literal["auto", "zh", "en"] = "auto"
    generation: GenerationSettings = Field(default_factory=GenerationSettings)
    judge: JudgeSettings | None = None
    concurrency: int = Field(default=4, ge=1, le=16, description="Provider calls in flight at once")
    bootstrap_samples: int = Field(default=1000, ge=100, le=10000)
    webhook_url: HttpUrl | None = None
    webhook_events: list[str] | None = None

    def options(self) -> EvalOptions:
        return EvalOptions(
            split=self.split,
            max_items=self.max_items,
            seed=self.seed,
            language=self.language,
            generation=Generation(**self.generation.model_dump()),
            judge=Judge(model=self.judge.model) if self.judge else None,
            concurrency=self.concurrency,
            bootstrap_samples=self.bootstrap_samples,
        )


class Eval(Open):
    id: str = Field(examples=["eval_06h1a2b3c4d5e6f7g8h9i0j1k2"])
    object: Literal["eval"] = "eval"
    status: Literal["queued", "running", "completed", "failed"]
    dataset_id: str
    split: str
    models: list[str]
    resolved_models: list[dict[str, Any]]
    options: dict[str, Any]
    items_total: int | None = None
    items_done: int | None = None
    language: str | None = None
    metrics: dict[str, Any] | None = Field(
        default=None,
        description="Per model: scores in [0, 100] (answer_length is a count) as {value, ci_low, ci_high}",
    )
    judge: dict[str, Any] | None = None
    error: ObjectError | None = None
    created_at: int
    completed_at: int | None = None
    items: list[dict[str, Any]] | None = None
