"""Tune lifecycle, API side: create, read and control a tune. What the worker does with the
provider job is in `jobs`; the sweep's claims are in `claims`.

Domain functions flush and never commit."""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from shared import pricing, providers, queue
from shared.config import get_settings
from shared.datasets import service as datasets
from shared.errors import BudgetExceeded, InvalidInput, InvalidState, NotFound
from shared.ids import new_id
from shared.models import Tune, TuneEvent
from shared.providers import lifecycle
from shared.tunes import states
from shared.tunes.transitions import record, transition
from shared.webhooks import service as webhooks

log = logging.getLogger(__name__)


def create(
    session: Session,
    *,
    project_id: str,
    dataset_id: str,
    base_model: str,
    n_epochs: int | None = None,
    suffix: str | None = None,
    provider: str | None = None,
    metadata: dict[str, str] | None = None,
    max_cost_usd: float | None = None,
    webhook_url: str | None = None,
    webhook_events: list[str] | None = None,
) -> Tune:
    dataset = datasets.get(session, project_id=project_id, dataset_id=dataset_id)
    if dataset.status != "ready":
        raise InvalidState(
            f"Dataset {dataset_id} is {dataset.status}; wait for it to be ready before starting a tune.",
            code="dataset_not_ready",
            param="dataset_id",
        )
    chosen = providers.resolve(provider, session=session, project_id=project_id)
    model = pricing.resolve_model(base_model)
    lifecycle.check_accepts(session, project_id=project_id, provider=chosen, model=model.name)
    if metadata and len(metadata) > 15:
        raise InvalidInput(
            "metadata takes at most 15 pairs (one is reserved).", code="invalid_metadata", param="metadata"
        )
    webhooks.validate_callback(webhook_url, webhook_events)
    quote = datasets.quote(session, dataset, model=model.name, n_epochs=n_epochs)
    limits = [v for v in (max_cost_usd, get_settings().default_budget_usd) if v is not None]
    budget = min(limits) if limits else None
    if budget is not None and quote["cost_usd"] > budget:
        raise BudgetExceeded(
            f"This tune is quoted at ${quote['cost_usd']:.2f}, above the limit of ${budget:.2f}. "
            "Raise max_cost_usd, sample fewer examples, or pick a cheaper base model.",
            param="max_cost_usd",
            details={"quote": quote},
        )
    tune = Tune(
        id=new_id("tune"),
        project_id=project_id,
        dataset_id=dataset.id,
        status=states.CREATED,
        base_model=model.name,
        provider=chosen.display_name,
        provider_account_id=chosen.account_id,
        n_epochs=n_epochs,
        suffix=suffix,
        user_metadata=metadata,
        quote=quote,
        webhook_url=webhook_url,
        webhook_events={"types": webhook_events} if webhook_events else None,
    )
    session.add(tune)
    record(
        session,
        tune,
        "status",
        f"Tune created for {model.name} on {chosen.display_name}.",
        data={"status": states.CREATED},
    )
    session.flush()
    queue.enqueue(session, queue.TaskName.SUBMIT_TUNE, tune_id=tune.id)
    return tune


def get(session: Session, *, project_id: str, tune_id: str) -> Tune:
    tune = session.get(Tune, tune_id)
    if tune is None or tune.project_id != project_id:
        raise NotFound(f"No tune {tune_id!r} in this project.", code="tune_not_found", param="tune_id")
    return tune


def list_tunes(
    session: Session, *, project_id: str, limit: int, after: str | None
) -> tuple[list[Tune], bool]:
    stmt = select(Tune).where(Tune.project_id == project_id).order_by(Tune.id.desc()).limit(limit + 1)
    if after:
        stmt = stmt.where(Tune.id < after)
    rows = list(session.scalars(stmt))
    return rows[:limit], len(rows) > limit


def list_events(session: Session, *, project_id: str, tune_id: str) -> list[TuneEvent]:
    get(session, project_id=project_id, tune_id=tune_id)
    # Ids are monotonic per process, so id order is the order in which events were recorded;
    # provider timestamps have whole-second precision and would tie.
    stmt = select(TuneEvent).where(TuneEvent.tune_id == tune_id).order_by(TuneEvent.id)
    return list(session.scalars(stmt))


def metrics(session: Session, *, project_id: str, tune_id: str) -> list[dict[str, Any]]:
    """The loss curve: one point per step, merged from metrics events and the result file."""
    get(session, project_id=project_id, tune_id=tune_id)
    stmt = (
        select(TuneEvent)
        .where(TuneEvent.tune_id == tune_id, TuneEvent.kind == "metrics")
        .order_by(TuneEvent.step, TuneEvent.id)
    )
    points: dict[int, dict[str, Any]] = {}
    for event in session.scalars(stmt):
        if event.step is not None and event.data:
            points.setdefault(event.step, {}).update({k: v for k, v in event.data.items() if v is not None})
    return list(points.values())


def checkpoints(session: Session, *, project_id: str, tune_id: str) -> list[dict[str, Any]]:
    get(session, project_id=project_id, tune_id=tune_id)
    stmt = (
        select(TuneEvent)
        .where(TuneEvent.tune_id == tune_id, TuneEvent.kind == "checkpoint")
        .order_by(TuneEvent.step)
    )
    return [event.data for event in session.scalars(stmt) if event.data]


def cancel(session: Session, *, project_id: str, tune_id: str) -> Tune:
    tune = get(session, project_id=project_id, tune_id=tune_id)
    if tune.status in states.TERMINAL:
        raise InvalidState(f"Tune {tune_id} is already {tune.status}.", code="tune_not_cancellable")
    if tune.provider_job_id is None:
        transition(session, tune, states.CANCELLED, "Cancelled before submission to the provider.")
    else:
        tune.cancel_requested = True
        queue.enqueue(session, queue.TaskName.CONTROL_TUNE, tune_id=tune.id, action="cancel")
    session.flush()
    return tune


def pause(session: Session, *, project_id: str, tune_id: str) -> Tune:
    """Ask the provider to pause a queued or running job; `resume` picks it up again."""
    return _request_control(session, project_id, tune_id, "pause", allowed=states.PAUSABLE)


def resume(session: Session, *, project_id: str, tune_id: str) -> Tune:
    return _request_control(session, project_id, tune_id, "resume", allowed=frozenset({states.PAUSED}))


def _request_control(
    session: Session, project_id: str, tune_id: str, action: str, *, allowed: frozenset[str]
) -> Tune:
    tune = get(session, project_id=project_id, tune_id=tune_id)
    if tune.status not in allowed or tune.provider_job_id is None:
        raise InvalidState(
            f"Tune {tune_id} is {tune.status}; only a tune that is {' or '.join(sorted(allowed))} "
            f"at the provider can be {action}d.",
            code=f"tune_not_{action}able",
        )
    queue.enqueue(session, queue.TaskName.CONTROL_TUNE, tune_id=tune.id, action=action)
    return tune
