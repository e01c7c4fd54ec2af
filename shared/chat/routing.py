"""Which provider and upstream model a chat request's `model` means, and what a key may call."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from shared import pricing, providers
from shared.errors import DomainError, NotFound
from shared.models import Tune, unix
from shared.tunes import states


@dataclass(frozen=True)
class Route:
    provider: providers.Provider
    upstream_model: str
    tune_id: str | None = None


def _model_not_found(model: str) -> NotFound:
    return NotFound(
        f"The model {model!r} does not exist or you do not have access to it. "
        "Use a tune id, a fine-tuned model name from GET /v1/models, or a supported base model.",
        code="model_not_found",
        param="model",
    )


def resolve(session: Session, *, project_id: str, model: str) -> Route:
    tune: Tune | None = None
    if model.startswith("tune_"):
        tune = session.get(Tune, model)
        if tune is not None and tune.project_id != project_id:
            tune = None
    elif model.startswith("ft:"):
        tune = session.scalar(
            select(Tune).where(Tune.project_id == project_id, Tune.fine_tuned_model == model).limit(1)
        )
    else:
        try:
            base = pricing.resolve_model(model)
        except DomainError:
            raise _model_not_found(model) from None
        return Route(provider=providers.resolve(None), upstream_model=base.name)
    if tune is None or tune.status != states.SUCCEEDED or not tune.fine_tuned_model:
        raise _model_not_found(model)
    return Route(
        provider=providers.resolve(tune.provider), upstream_model=tune.fine_tuned_model, tune_id=tune.id
    )


def list_models(session: Session, *, project_id: str) -> list[dict[str, Any]]:
    """Fine-tuned models of the project first, then the base models it may call."""
    catalog = pricing.load_catalog()
    tuned = session.scalars(
        select(Tune)
        .where(Tune.project_id == project_id, Tune.status == states.SUCCEEDED)
        .order_by(Tune.id.desc())
    )
    models: list[dict[str, Any]] = []
    for tune in tuned:
        base = catalog.models.get(tune.base_model)
        models.append(
            {
                "id": tune.fine_tuned_model,
                "object": "model",
                "created": unix(tune.finished_at),
                "owned_by": project_id,
                "tune_id": tune.id,
                "base_model": tune.base_model,
                "shutdown_date": base.shutdown_date.isoformat() if base and base.shutdown_date else None,
            }
        )
    for name, price in sorted(catalog.models.items()):
        models.append(
            {
                "id": name,
                "object": "model",
                "created": 0,
                "owned_by": "system",
                "base_model": None,
                "shutdown_date": price.shutdown_date.isoformat() if price.shutdown_date else None,
            }
        )
    return models
