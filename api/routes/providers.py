"""Provider accounts: where a project's tunes run and its tuned models serve."""

from __future__ import annotations

from fastapi import APIRouter, Response

from api import schemas
from api.deps import PrincipalDep, SessionDep
from api.schemas_providers import DeletedProvider, Provider, ProviderCreate, ProviderUpdate
from shared.providers import accounts

router = APIRouter(prefix="/v1/providers", tags=["providers"])


@router.post("", status_code=201, response_model=Provider)
def create_provider(
    session: SessionDep, principal: PrincipalDep, body: ProviderCreate, response: Response
) -> dict[str, object]:
    """Add a provider; its key is stored encrypted and never shown again."""
    account = accounts.create(
        session,
        project_id=principal.project_id,
        name=body.name,
        kind=body.kind,
        base_url=body.base_url,
        api_key=body.api_key,
        api_version=body.api_version,
        is_default=body.default,
        options=body.options,
        management_key=body.management_key,
    )
    response.headers["Location"] = f"/v1/providers/{account.name}"
    return accounts.account_dict(account)


@router.get("", response_model=schemas.Page[Provider])
def list_providers(session: SessionDep, principal: PrincipalDep) -> dict[str, object]:
    """The project's providers, by name, with what each can tune now."""
    rows = accounts.list_accounts(session, project_id=principal.project_id)
    return {"object": "list", "data": [accounts.account_dict(a) for a in rows], "has_more": False}


@router.get("/{name}", response_model=Provider)
def get_provider(session: SessionDep, principal: PrincipalDep, name: str) -> dict[str, object]:
    """One provider (by name or id), without its key."""
    return accounts.account_dict(accounts.get(session, project_id=principal.project_id, name=name))


@router.patch("/{name}", response_model=Provider)
def update_provider(
    session: SessionDep, principal: PrincipalDep, name: str, body: ProviderUpdate
) -> dict[str, object]:
    """Change the URL, key, api-version, options or default flag; the next request uses them."""
    changes = body.model_dump(exclude_unset=True)
    if "default" in changes:
        changes["is_default"] = changes.pop("default")
    account = accounts.update(session, project_id=principal.project_id, name=name, changes=changes)
    return accounts.account_dict(account)


@router.post("/{name}/refresh", response_model=Provider)
def refresh_provider(session: SessionDep, principal: PrincipalDep, name: str) -> dict[str, object]:
    """Read the provider's GET /models and keep the shutdown dates it reports."""
    return accounts.account_dict(accounts.refresh(session, project_id=principal.project_id, name=name))


@router.delete("/{name}", response_model=DeletedProvider)
def delete_provider(session: SessionDep, principal: PrincipalDep, name: str) -> dict[str, object]:
    """Remove a provider no running or serving tune uses."""
    account = accounts.delete(session, project_id=principal.project_id, name=name)
    return {"id": account.id, "object": "provider", "name": account.name, "deleted": True}
