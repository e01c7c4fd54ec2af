"""Request-scoped dependencies: the session (the request edge commits) and the caller."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Header
from sqlalchemy.orm import Session

from shared import auth
from shared.auth import Principal
from shared.config import Settings, get_settings
from shared.db import session_scope


def get_session() -> Iterator[Session]:
    with session_scope() as session:
        yield session


# scope="function": commit (and publish enqueued tasks) before the response is sent, so a
# client that reads right after a 202 always finds the row.
SessionDep = Annotated[Session, Depends(get_session, scope="function")]
SettingsDep = Annotated[Settings, Depends(get_settings)]


def bearer_token(authorization: str | None) -> str | None:
    if authorization and authorization.lower().startswith("bearer "):
        return authorization[7:].strip() or None
    return None


def get_principal(session: SessionDep, authorization: Annotated[str | None, Header()] = None) -> Principal:
    return auth.authenticate(session, bearer_token(authorization))


PrincipalDep = Annotated[Principal, Depends(get_principal)]
