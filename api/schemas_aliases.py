"""Wire shapes of aliases (DESIGN.md §12: `PUT /aliases/{name}`, `GET /aliases/{name}` with history)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt

from api.schemas import Open
from shared.errors import InvalidInput


class AliasTarget(BaseModel):
    model_config = ConfigDict(extra="forbid")
    model: str = Field(min_length=1, max_length=200, examples=["tune_06h1a2b3c4d5e6f7g8h9i0j1k2"])
    # Range checked by the domain, which explains what weights mean when one is wrong.
    weight: StrictInt | None = Field(default=None, examples=[90])


class EvalGate(BaseModel):
    """Refuse the change unless every model it brings in beats every current target in this eval."""

    model_config = ConfigDict(extra="forbid")
    eval_id: str = Field(max_length=40)
    metric: str = Field(default="rouge_l", max_length=40, examples=["rouge_l", "word.bleu_4"])
    min_margin: float = Field(default=0.0, ge=0, le=100, description="Points on the metric's 0-100 scale")


class AliasPut(BaseModel):
    """One target (`model`) or a weighted split (`targets`); `log_requests` omitted keeps the
    current setting."""

    model_config = ConfigDict(extra="forbid")
    model: str | None = Field(default=None, min_length=1, max_length=200, examples=["gpt-4o-mini"])
    targets: list[AliasTarget] | None = None
    log_requests: bool | None = None
    require_eval: EvalGate | None = None

    def target_list(self) -> list[dict[str, Any]]:
        if self.model is not None and self.targets is not None:
            raise InvalidInput(
                "Send either 'model' (one target) or 'targets' (a split), not both.",
                code="conflicting_targets",
                param="targets",
            )
        if self.model is not None:
            return [{"model": self.model}]
        return [t.model_dump(exclude_none=True) for t in self.targets or []]


class RollbackRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    version: StrictInt | None = Field(default=None, ge=1, description="Default: the previous version")


class AliasTargetOut(Open):
    model: str
    weight: int
    share: float = Field(description="This target's fraction of the traffic (weight / total)")


class AliasVersion(Open):
    object: Literal["alias.version"] = "alias.version"
    version: int
    targets: list[dict[str, Any]]
    log_requests: bool
    key_id: str | None = None
    current: bool
    created_at: int


class Alias(Open):
    id: str
    object: Literal["alias"] = "alias"
    name: str
    version: int
    targets: list[AliasTargetOut]
    log_requests: bool
    created_at: int
    updated_at: int
    history: list[AliasVersion] | None = None


class DeletedAlias(Open):
    id: str
    object: Literal["alias"] = "alias"
    name: str
    deleted: bool = True
