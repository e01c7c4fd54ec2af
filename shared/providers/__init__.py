"""Fine-tuning providers, all spoken to through the official `openai` SDK (DESIGN.md §2).

Two built-ins come from settings: `openai` (TUNEFORGE_OPENAI_API_KEY, optionally at
TUNEFORGE_OPENAI_BASE_URL) and, when no key is set, the bundled `sandbox`. A project adds its
own with POST /v1/providers (`accounts.py`): OpenAI, Azure OpenAI, any OpenAI-compatible server
or a sandbox, each under a name its tunes and chat requests use. `resolve` finds either kind;
`catalog.py` says what each accepts, `adapters.py` builds the SDK client."""

from __future__ import annotations

from cryptography.fernet import InvalidToken
from sqlalchemy import select
from sqlalchemy.orm import Session

from shared import crypto, db
from shared.config import get_settings
from shared.errors import InvalidInput, InvalidState
from shared.models import ProviderAccount, Tune
from shared.providers.adapters import client
from shared.providers.base import KINDS, Provider
from shared.providers.webhook_events import verify_webhook

ACCOUNT_PREFIX = "prov_"
BUILTIN_NAMES = ("openai", "sandbox", "default")


def default_name() -> str:
    return "sandbox" if get_settings().uses_sandbox else "openai"


def builtin(name: str) -> Provider:
    """One of BUILTIN_NAMES: the deployment's providers from settings."""
    settings = get_settings()
    chosen = default_name() if name == "default" else name
    if chosen not in BUILTIN_NAMES:
        raise InvalidInput(f"{name!r} is not a built-in provider.", code="unknown_provider", param="provider")
    if chosen == "openai" and settings.uses_sandbox:
        raise InvalidInput(
            "The openai provider needs TUNEFORGE_OPENAI_API_KEY; none is configured. Add your own "
            "with POST /v1/providers, or use the sandbox.",
            code="provider_not_configured",
            param="provider",
        )
    if chosen == "sandbox":
        base = settings.default_provider_base_url if settings.uses_sandbox else settings.sandbox_base_url
        return Provider(name="sandbox", base_url=base, api_key="sk-sandbox", kind="sandbox", label="sandbox")
    return Provider(
        name="openai",
        base_url=settings.default_provider_base_url,
        api_key=settings.default_provider_api_key,
        kind="openai",
        label="openai",
    )


def from_account(account: ProviderAccount) -> Provider:
    options = account.options or {}
    try:
        api_key = crypto.decrypt(account.api_key)
        management_key = crypto.decrypt(account.management_key) if account.management_key else None
    except InvalidToken:
        raise InvalidState(
            f"The key of provider {account.name!r} cannot be decrypted: TUNEFORGE_SECRET_KEY changed "
            "since it was stored. PATCH /v1/providers/{name} with the key again.",
            code="provider_key_unreadable",
            param="provider",
        ) from None
    return Provider(
        name=account.id,
        base_url=account.base_url,
        api_key=api_key,
        kind=account.kind,
        api_version=account.api_version,
        label=account.name,
        account_id=account.id,
        options=tuple(sorted((str(k), v) for k, v in options.items() if not isinstance(v, (dict, list)))),
        management_key=management_key,
    )


def resolve(name: str | None, *, session: Session | None = None, project_id: str | None = None) -> Provider:
    """A provider by what a request or a stored row names: an account id, an account name of
    `project_id`, a built-in name, or nothing (the project's default account, else the
    deployment's default). Without a session, one is opened when the database is needed."""
    if session is None and (project_id is not None or (name or "").startswith(ACCOUNT_PREFIX)):
        with db.session_scope() as own:
            return resolve(name, session=own, project_id=project_id)
    account = find_account(session, project_id, name) if session is not None else None
    if account is not None:
        return from_account(account)
    if name is None or name in BUILTIN_NAMES:
        return builtin(name or "default")
    known = [default_name()]
    if session is not None and project_id is not None:
        known += list(
            session.scalars(select(ProviderAccount.name).where(ProviderAccount.project_id == project_id))
        )
    raise InvalidInput(
        f"Unknown provider {name!r}. This project can use: {', '.join(sorted(set(known)))} "
        "(add one with POST /v1/providers).",
        code="unknown_provider",
        param="provider",
    )


def find_account(session: Session | None, project_id: str | None, name: str | None) -> ProviderAccount | None:
    if session is None:
        return None
    if name and name.startswith(ACCOUNT_PREFIX):
        account = session.get(ProviderAccount, name)
        return account if account is not None and project_id in (None, account.project_id) else None
    if project_id is None:
        return None
    stmt = select(ProviderAccount).where(ProviderAccount.project_id == project_id)
    if name is None or name == "default":
        stmt = stmt.where(ProviderAccount.is_default.is_(True))
    else:
        stmt = stmt.where(ProviderAccount.name == name)
    return session.scalar(stmt.limit(1))


def for_tune(session: Session | None, tune: Tune) -> Provider:
    return resolve(tune.provider_account_id or tune.provider, session=session)


__all__ = [
    "KINDS",
    "Provider",
    "builtin",
    "client",
    "default_name",
    "find_account",
    "for_tune",
    "from_account",
    "resolve",
    "verify_webhook",
]
