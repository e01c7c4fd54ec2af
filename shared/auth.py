"""Projects and their API keys. Keys are shown once and stored only as hashes."""

from __future__ import annotations

import base64
import secrets
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from shared import crypto
from shared.errors import InvalidInput, Unauthorized
from shared.ids import new_id
from shared.models import ApiKey, Project

KEY_PREFIX = "tf_"


@dataclass(frozen=True)
class Principal:
    """Who is calling: every query is scoped to `project_id`."""

    project_id: str
    key_id: str


def new_webhook_secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


def get_or_create_project(session: Session, name: str) -> Project:
    project = session.scalar(select(Project).where(Project.name == name))
    if project is None:
        project = Project(
            id=new_id("proj"), name=name, default_webhook_secret=crypto.encrypt(new_webhook_secret())
        )
        session.add(project)
        session.flush()
    return project


def create_key(
    session: Session,
    *,
    project: Project,
    name: str | None = None,
    requests_per_minute: int | None = None,
    tokens_per_minute: int | None = None,
) -> str:
    """Create a key and return its plaintext; this is the only time it exists unhashed.

    The per-minute limits apply to the chat gateway; None falls back to the deployment's
    TUNEFORGE_CHAT_REQUESTS_PER_MINUTE / TUNEFORGE_CHAT_TOKENS_PER_MINUTE."""
    for label, limit in (("requests", requests_per_minute), ("tokens", tokens_per_minute)):
        if limit is not None and limit < 1:
            raise InvalidInput(f"The {label} per minute limit must be at least 1.", code="invalid_limit")
    plaintext = KEY_PREFIX + secrets.token_urlsafe(24)
    session.add(
        ApiKey(
            id=new_id("key"),
            project_id=project.id,
            name=name,
            prefix=plaintext[:10],
            key_hash=crypto.hash_api_key(plaintext),
            rpm_limit=requests_per_minute,
            tpm_limit=tokens_per_minute,
        )
    )
    session.flush()
    return plaintext


def authenticate(session: Session, token: str | None) -> Principal:
    if not token:
        raise Unauthorized(
            "Missing API key. Send it as 'Authorization: Bearer <key>'; "
            "create one with 'tuneforge keys create --project NAME'."
        )
    key = session.scalar(
        select(ApiKey).where(ApiKey.key_hash == crypto.hash_api_key(token), ApiKey.revoked_at.is_(None))
    )
    if key is None:
        raise Unauthorized(
            "Invalid API key. Check the key, or create a new one with 'tuneforge keys create'."
        )
    return Principal(project_id=key.project_id, key_id=key.id)
