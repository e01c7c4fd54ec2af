"""Aliases: stable model names with history, rollback and weighted traffic splits."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Query

from api import schemas
from api.deps import PrincipalDep, SessionDep
from api.schemas_aliases import Alias, AliasPut, AliasVersion, DeletedAlias, RollbackRequest
from shared.chat import aliases
from shared.evals import gate

router = APIRouter(prefix="/v1/aliases", tags=["aliases"])


@router.put("/{name}", response_model=Alias)
def put_alias(session: SessionDep, principal: PrincipalDep, name: str, body: AliasPut) -> dict[str, object]:
    """Create or change an alias; the next chat request naming it uses the new targets."""
    alias = aliases.put_alias(
        session,
        project_id=principal.project_id,
        name=name,
        targets=body.target_list(),
        log_requests=body.log_requests,
        key_id=principal.key_id,
        checks=[gate.check(gate.Requirement(**body.require_eval.model_dump()))] if body.require_eval else (),
    )
    return aliases.alias_dict(alias)


@router.get("", response_model=schemas.Page[Alias])
def list_aliases(session: SessionDep, principal: PrincipalDep) -> dict[str, object]:
    """The project's aliases, by name."""
    rows = aliases.list_aliases(session, project_id=principal.project_id)
    return {"object": "list", "data": [aliases.alias_dict(a) for a in rows], "has_more": False}


@router.get("/{name}", response_model=Alias)
def get_alias(session: SessionDep, principal: PrincipalDep, name: str) -> dict[str, object]:
    """An alias with its recent history (newest first)."""
    alias = aliases.get_alias(session, project_id=principal.project_id, name=name)
    versions, _ = aliases.history(session, project_id=principal.project_id, name=name, limit=20)
    return aliases.alias_dict(alias, versions)


@router.get("/{name}/versions", response_model=schemas.Page[AliasVersion])
def list_versions(
    session: SessionDep,
    principal: PrincipalDep,
    name: str,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    before: Annotated[int | None, Query(ge=1, description="Versions older than this one")] = None,
) -> dict[str, object]:
    """Every state the alias has had, newest first."""
    alias = aliases.get_alias(session, project_id=principal.project_id, name=name)
    rows, has_more = aliases.history(
        session, project_id=principal.project_id, name=name, limit=limit, before=before
    )
    return {
        "object": "list",
        "data": [aliases.version_dict(v, current=alias.version) for v in rows],
        "has_more": has_more,
    }


@router.post("/{name}/rollback", response_model=Alias)
def rollback_alias(
    session: SessionDep,
    principal: PrincipalDep,
    name: str,
    body: Annotated[RollbackRequest | None, Body()] = None,
) -> dict[str, object]:
    """Restore an earlier version (default: the previous one) as a new version."""
    alias = aliases.rollback(
        session,
        project_id=principal.project_id,
        name=name,
        version=body.version if body else None,
        key_id=principal.key_id,
    )
    return aliases.alias_dict(alias)


@router.delete("/{name}", response_model=DeletedAlias)
def delete_alias(session: SessionDep, principal: PrincipalDep, name: str) -> dict[str, object]:
    """Remove the alias and its history."""
    alias = aliases.delete_alias(session, project_id=principal.project_id, name=name)
    return {"id": alias.id, "object": "alias", "name": alias.name, "deleted": True}
