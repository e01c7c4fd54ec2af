"""Retune: the same dataset and settings on another provider and/or base model — the way out
when a provider stops taking jobs or a base model is about to shut down."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from shared.chat import aliases
from shared.errors import InvalidInput
from shared.models import Tune
from shared.tunes import service
from shared.tunes.jobs import METADATA_KEY


def retune(
    session: Session,
    *,
    project_id: str,
    tune_id: str,
    provider: str | None = None,
    base_model: str | None = None,
    alias: str | None = None,
    require_eval: bool | dict[str, Any] = False,
) -> Tune:
    """Start the new tune (refused up front like any tune, e.g. at a provider past its
    cutoff); with `alias`, the alias is pointed at it once it succeeds (and, with
    `require_eval`, once it passes the eval gate: `shared/tunes/promote.py`)."""
    old = service.get(session, project_id=project_id, tune_id=tune_id)
    if provider is None and base_model is None:
        raise InvalidInput(
            "Name another 'provider' and/or 'base_model' to retune on.",
            code="retune_unchanged",
            param="provider",
        )
    if require_eval and alias is None:
        raise InvalidInput("require_eval needs an 'alias' to move.", code="missing_alias", param="alias")
    if alias is not None and not aliases.NAME_PATTERN.match(alias):
        raise InvalidInput(f"Alias name {alias!r} is not allowed.", code="invalid_alias_name", param="alias")
    metadata = {k: v for k, v in (old.user_metadata or {}).items() if k != METADATA_KEY} or None
    tune = service.create(
        session,
        project_id=project_id,
        dataset_id=old.dataset_id,
        base_model=base_model or old.base_model,
        n_epochs=old.n_epochs,
        suffix=old.suffix,
        provider=provider or old.provider_account_id or old.provider,
        metadata=metadata,
        webhook_url=old.webhook_url,
        webhook_events=(old.webhook_events or {}).get("types"),
    )
    tune.retune_of = old.id
    if alias is not None:
        tune.on_success = {"alias": alias, "require_eval": require_eval}
    session.flush()
    return tune
