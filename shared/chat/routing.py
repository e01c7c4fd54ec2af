"""Which provider and upstream model a chat request's `model` means, and what a key may call.

Resolution has two halves so the gateway can cache the first: `lookup` reads the database once
per (project, name) and returns a `Resolution` (one route, or an alias's weighted routes);
`pick` chooses the route for one request without any I/O (sticky per user when one is given)."""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from shared import pricing, providers
from shared.errors import DomainError, NotFound
from shared.models import ChatAlias, Tune, unix
from shared.providers import lifecycle
from shared.tunes import states


@dataclass(frozen=True)
class Route:
    provider: providers.Provider
    upstream_model: str
    tune_id: str | None = None
    # The catalog name that prices this route (the `ft:` name or the base model).
    priced_as: str = ""
    alias: str | None = None
    log_requests: bool = False


@dataclass(frozen=True)
class Resolution:
    """Routes with their weights (one route with weight 1 for anything but a split alias)."""

    routes: tuple[Route, ...]
    weights: tuple[int, ...]
    alias: str | None = None


def _model_not_found(model: str) -> NotFound:
    return NotFound(
        f"The model {model!r} does not exist or you do not have access to it. "
        "Use an alias, a tune id, a fine-tuned model name from GET /v1/models, or a supported base model.",
        code="model_not_found",
        param="model",
    )


def resolve_target(session: Session, *, project_id: str, model: str, provider: str | None = None) -> Route:
    """A concrete model (not an alias): a tune id, a fine-tuned name or a catalog base model.
    `provider` (a request's `"provider"`) picks where a base model is called; a tune is always
    served where it was trained."""
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
            # Not a catalog model: a tuned model named the provider's way (Azure:
            # `<base>.ft-<id>`); `ix_tune_fine_tuned_model` keeps a bogus name one index probe.
            tune = session.scalar(
                select(Tune).where(Tune.project_id == project_id, Tune.fine_tuned_model == model).limit(1)
            )
            if tune is None:
                raise _model_not_found(model) from None
        else:
            chosen = providers.resolve(provider, session=session, project_id=project_id)
            return Route(provider=chosen, upstream_model=base.name, priced_as=base.name)
    if tune is None or tune.status != states.SUCCEEDED or not tune.fine_tuned_model:
        raise _model_not_found(model)
    return Route(
        provider=providers.for_tune(session, tune),
        # Azure serves a tuned model under its deployment's name.
        upstream_model=tune.deployment or tune.fine_tuned_model,
        tune_id=tune.id,
        # Fine-tuned prices of the base model, whatever the provider calls the tuned one.
        priced_as=tune.fine_tuned_model
        if tune.fine_tuned_model.startswith("ft:")
        else f"ft:{tune.base_model}",
    )


def lookup(session: Session, *, project_id: str, model: str, provider: str | None = None) -> Resolution:
    """An alias of the project first (aliases shadow base model names), then a concrete model."""
    alias = session.scalar(
        select(ChatAlias).where(ChatAlias.project_id == project_id, ChatAlias.name == model)
    )
    if alias is None:
        route = resolve_target(session, project_id=project_id, model=model, provider=provider)
        return Resolution(routes=(route,), weights=(1,))
    routes: list[Route] = []
    weights: list[int] = []
    for target in alias.targets:
        route = resolve_target(session, project_id=project_id, model=target["model"])
        routes.append(
            Route(
                provider=route.provider,
                upstream_model=route.upstream_model,
                tune_id=route.tune_id,
                priced_as=route.priced_as,
                alias=alias.name,
                log_requests=alias.log_requests,
            )
        )
        weights.append(int(target.get("weight", 1)))
    return Resolution(routes=tuple(routes), weights=tuple(weights), alias=alias.name)


def pick(resolution: Resolution, user: str | None = None) -> Route:
    """The route for one request. With a `user`, the same user always lands on the same target
    of a given split (a stable hash of alias and user), so a conversation does not flip models."""
    if len(resolution.routes) == 1:
        return resolution.routes[0]
    total = sum(resolution.weights)
    if user:
        digest = hashlib.blake2b(f"{resolution.alias}\0{user}".encode(), digest_size=8).digest()
        point = int.from_bytes(digest, "big") % total
    else:
        point = random.randrange(total)
    for route, weight in zip(resolution.routes, resolution.weights, strict=True):
        if point < weight:
            return route
        point -= weight
    return resolution.routes[-1]


def list_models(session: Session, *, project_id: str) -> list[dict[str, Any]]:
    """Aliases of the project, its fine-tuned models, then the base models it may call."""
    catalog = pricing.load_catalog()
    models: list[dict[str, Any]] = []
    for alias in session.scalars(
        select(ChatAlias).where(ChatAlias.project_id == project_id).order_by(ChatAlias.name)
    ):
        models.append(
            {
                "id": alias.name,
                "object": "model",
                "created": unix(alias.created_at),
                "owned_by": project_id,
                "alias": True,
                "targets": alias.targets,
            }
        )
    tuned = session.scalars(
        select(Tune)
        .where(Tune.project_id == project_id, Tune.status == states.SUCCEEDED)
        .order_by(Tune.id.desc())
    )
    for tune in tuned:
        shutdown = lifecycle.shutdown_of(session, tune)
        models.append(
            {
                "id": tune.fine_tuned_model,
                "object": "model",
                "created": unix(tune.finished_at),
                "owned_by": project_id,
                "tune_id": tune.id,
                "base_model": tune.base_model,
                "provider": tune.provider,
                "shutdown_date": shutdown.isoformat() if shutdown else None,
                # Its base shuts down within TUNEFORGE_DEPRECATION_WARNING_DAYS: retune it elsewhere.
                "deprecation_warning": lifecycle.warning_due(shutdown),
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
