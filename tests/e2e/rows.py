"""Rows written straight to the database, for states a test cannot reach through the API (a worker
that died mid-step, a delivery due far in the future, a URL that passed the checks once)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select

from shared.db import session_scope
from shared.ids import new_id
from shared.models import Dataset, Project, Tune, WebhookDelivery, utcnow


def insert_uploading_tune(tune_id: str, dataset_id: str, provider_file_id: str | None = None) -> None:
    """A tune as a worker leaves it mid-submission, so that no worker races the test."""
    with session_scope() as session:
        owner = session.get(Dataset, dataset_id)
        assert owner is not None
        session.add(
            Tune(
                id=tune_id,
                project_id=owner.project_id,
                dataset_id=owner.id,
                status="uploading",
                base_model="gpt-4o-mini-2024-07-18",
                provider="sandbox",
                provider_file_id=provider_file_id,
            )
        )


def insert_deliveries(
    project: str,
    urls: list[str],
    *,
    endpoint_id: str | None = None,
    due: datetime | None = None,
    event_type: str = "webhook.test",
    payload: str = "{}",
) -> list[str]:
    """Pending deliveries, one per URL, due at `due` (default now; a far-off `due` keeps the
    running sweep away from them); their ids."""
    ids = [new_id("whd") for _ in urls]
    with session_scope() as session:
        project_id = session.scalar(select(Project.id).where(Project.name == project))
        for delivery_id, url in zip(ids, urls, strict=True):
            session.add(
                WebhookDelivery(
                    id=delivery_id,
                    project_id=project_id,
                    event_id=new_id("evt"),
                    event_type=event_type,
                    endpoint_id=endpoint_id,
                    url=url,
                    payload=payload,
                    next_attempt_at=due or utcnow(),
                )
            )
    return ids
