"""Provider accounts: create, read, change and remove a project's providers.

The API key (and Azure's management token) is encrypted with TUNEFORGE_SECRET_KEY before it
is stored, never returned, never logged; responses carry only `key_hint` (the last four
characters). Base URLs are user input the workers will send a key and a dataset to, so they
must be public http(s) addresses unless an operator allows a host
(TUNEFORGE_PROVIDER_ALLOWED_HOSTS) — checked when they are set; a name that later resolves
elsewhere is not re-checked per request."""

from __future__ import annotations

import ipaddress
import re
import socket
from typing import Any
from urllib.parse import urlsplit

import openai
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from shared import crypto, providers
from shared.chat import lookups
from shared.config import get_settings
from shared.errors import Conflict, InvalidInput, InvalidState, NotFound, UpstreamError
from shared.ids import new_id
from shared.models import ProviderAccount, Tune, unix, utcnow
from shared.providers import adapters, catalog
from shared.providers.base import AZURE, KINDS
from shared.tunes import states
from shared.webhooks.ssrf import is_public

NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
MAX_KEY_CHARS = 4096
OPTION_KEYS = {
    AZURE: {
        "management_url",
        "subscription_id",
        "resource_group",
        "resource_name",
        "sku",
        "capacity",
        # A service principal (management_key is then its secret), for tokens that outlive an hour.
        "tenant_id",
        "client_id",
        "authority_url",
    },
}


def create(
    session: Session,
    *,
    project_id: str,
    name: str,
    kind: str,
    base_url: str,
    api_key: str,
    api_version: str | None = None,
    is_default: bool = False,
    options: dict[str, Any] | None = None,
    management_key: str | None = None,
) -> ProviderAccount:
    _check_name(name)
    _check_kind(kind)
    if api_version is None and kind == AZURE:
        raise InvalidInput(
            "Azure OpenAI needs 'api_version' (e.g. 2024-10-21): every request carries it.",
            code="missing_api_version",
            param="api_version",
        )
    account = ProviderAccount(
        id=new_id("prov"),
        project_id=project_id,
        name=name,
        kind=kind,
        base_url=_check_url(base_url, "base_url"),
        api_version=api_version,
        api_key=crypto.encrypt(_check_key(api_key, "api_key")),
        key_hint=hint(api_key),
        is_default=False,
        options=_check_options(kind, options),
        management_key=crypto.encrypt(_check_key(management_key, "management_key"))
        if management_key
        else None,
    )
    session.add(account)
    try:
        session.flush()
    except IntegrityError:
        raise Conflict(
            f"This project already has a provider named {name!r}; PATCH it or pick another name.",
            code="provider_exists",
            param="name",
        ) from None
    if is_default:
        _make_default(session, account)
    lookups.invalidate_after_commit(session, project_id)
    return account


def list_accounts(session: Session, *, project_id: str) -> list[ProviderAccount]:
    stmt = (
        select(ProviderAccount).where(ProviderAccount.project_id == project_id).order_by(ProviderAccount.name)
    )
    return list(session.scalars(stmt))


def get(session: Session, *, project_id: str, name: str, for_update: bool = False) -> ProviderAccount:
    stmt = select(ProviderAccount).where(
        ProviderAccount.project_id == project_id,
        (ProviderAccount.name == name) | (ProviderAccount.id == name),
    )
    if for_update:
        stmt = stmt.with_for_update()
    account = session.scalar(stmt.limit(1))
    if account is None:
        raise NotFound(f"No provider {name!r} in this project.", code="provider_not_found", param="name")
    return account


def update(session: Session, *, project_id: str, name: str, changes: dict[str, Any]) -> ProviderAccount:
    """Change what is given; the kind and name stay (a new name would orphan the tunes and
    requests that use it)."""
    account = get(session, project_id=project_id, name=name, for_update=True)
    if "base_url" in changes and changes["base_url"] is not None:
        account.base_url = _check_url(changes["base_url"], "base_url")
    if changes.get("api_key") is not None:
        account.api_key = crypto.encrypt(_check_key(changes["api_key"], "api_key"))
        account.key_hint = hint(changes["api_key"])
    if "api_version" in changes:
        if changes["api_version"] is None and account.kind == AZURE:
            raise InvalidInput(
                "Azure OpenAI needs an api_version.", code="missing_api_version", param="api_version"
            )
        account.api_version = changes["api_version"]
    if changes.get("options") is not None:
        account.options = _check_options(account.kind, {**(account.options or {}), **changes["options"]})
    if "management_key" in changes:
        key = changes["management_key"]
        account.management_key = crypto.encrypt(_check_key(key, "management_key")) if key else None
    if changes.get("is_default") is True:
        _make_default(session, account)
    elif changes.get("is_default") is False:
        account.is_default = False
    account.updated_at = utcnow()
    session.flush()
    lookups.invalidate_after_commit(session, project_id)
    return account


def delete(session: Session, *, project_id: str, name: str) -> ProviderAccount:
    """Refused while a tune on it is in progress or serving: they would lose their provider."""
    account = get(session, project_id=project_id, name=name, for_update=True)
    in_use = list(
        session.scalars(
            select(Tune.id)
            .where(
                Tune.provider_account_id == account.id,
                Tune.status.not_in((states.FAILED, states.CANCELLED)),
            )
            .limit(5)
        )
    )
    if in_use:
        raise InvalidState(
            f"Provider {account.name!r} still runs or serves tunes ({', '.join(in_use)}); cancel them "
            "or retune them elsewhere (POST /v1/tunes/{id}/retune) first.",
            code="provider_in_use",
            param="name",
        )
    session.delete(account)
    session.flush()
    lookups.invalidate_after_commit(session, project_id)
    return account


def refresh(session: Session, *, project_id: str, name: str) -> ProviderAccount:
    """Read the provider's GET /models and keep the shutdown dates it reports."""
    account = get(session, project_id=project_id, name=name, for_update=True)
    sdk = adapters.client(providers.from_account(account)).with_options(max_retries=1)
    try:
        entries = [m.model_dump() for m in sdk.models.list()]
    except openai.APIStatusError as exc:
        raise UpstreamError(
            f"Provider {account.name!r} answered GET /models with {exc.status_code}; check its key and URL.",
            status=502,
            code="provider_refused",
        ) from None
    except openai.APIError as exc:
        raise UpstreamError(
            f"Provider {account.name!r} could not be reached ({type(exc).__name__}); retry shortly.",
            status=502,
            code="provider_unreachable",
        ) from None
    account.catalog = {"models": catalog.shutdown_from_models_list(entries)}
    account.catalog_refreshed_at = utcnow()
    session.flush()
    lookups.invalidate_after_commit(session, project_id)
    return account


def account_dict(account: ProviderAccount) -> dict[str, Any]:
    terms = catalog.kind_terms(account.kind)
    today = catalog.today()
    models = catalog.tunable_models(account.kind, account.catalog)
    return {
        "id": account.id,
        "object": "provider",
        "name": account.name,
        "kind": account.kind,
        "base_url": account.base_url,
        "api_version": account.api_version,
        "key_hint": account.key_hint,
        "has_management_key": account.management_key is not None,
        "is_default": account.is_default,
        "options": account.options or {},
        "capabilities": {
            "accepts_jobs": terms.no_new_jobs_from is None or today < terms.no_new_jobs_from,
            "no_new_jobs_from": terms.no_new_jobs_from.isoformat() if terms.no_new_jobs_from else None,
            "webhooks": terms.webhooks,
            "deployment_step": terms.deployment_step,
            "models": [
                {
                    "id": m.name,
                    "methods": list(m.methods),
                    "shutdown_date": m.shutdown_date.isoformat() if m.shutdown_date else None,
                    "max_tokens_per_example": m.max_tokens_per_example,
                    "training_per_1m": m.training_per_1m,
                }
                for m in models
            ],
        },
        "catalog_refreshed_at": unix(account.catalog_refreshed_at),
        "created_at": unix(account.created_at),
        "updated_at": unix(account.updated_at),
    }


def hint(key: str) -> str:
    # Enough to tell two keys apart, far too little to use one.
    return "…" + key[-4:] if len(key) >= 16 else "…"


def _make_default(session: Session, account: ProviderAccount) -> None:
    for other in list_accounts(session, project_id=account.project_id):
        other.is_default = other.id == account.id
    session.flush()


def _check_name(name: str) -> None:
    if not NAME_PATTERN.match(name) or name.startswith(providers.ACCOUNT_PREFIX) or name == "default":
        raise InvalidInput(
            f"Provider name {name!r} is not allowed: use 1 to 100 letters, digits, '.', '_' or '-', "
            "not starting with 'prov_' and not 'default'.",
            code="invalid_provider_name",
            param="name",
        )


def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise InvalidInput(
            f"Unknown provider kind {kind!r}; choose from {', '.join(KINDS)}.",
            code="invalid_provider_kind",
            param="kind",
        )


def _check_key(key: str | None, param: str) -> str:
    if not isinstance(key, str) or not key.strip() or len(key) > MAX_KEY_CHARS or key != key.strip():
        raise InvalidInput(
            f"'{param}' must be a non-empty key without surrounding spaces, at most "
            f"{MAX_KEY_CHARS} characters.",
            code="invalid_api_key_value",
            param=param,
        )
    return key


def _check_options(kind: str, options: dict[str, Any] | None) -> dict[str, Any]:
    options = dict(options or {})
    unknown = sorted(set(options) - OPTION_KEYS.get(kind, set()))
    if unknown:
        raise InvalidInput(
            f"Options {unknown} do not apply to {kind} providers"
            + (f"; allowed: {sorted(OPTION_KEYS[kind])}." if kind in OPTION_KEYS else "."),
            code="invalid_provider_options",
            param="options",
        )
    for key, value in options.items():
        if key == "capacity":
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 10_000:
                raise InvalidInput("options.capacity must be 1 to 10000.", code="invalid_provider_options")
        elif not isinstance(value, str) or not 0 < len(value) <= 500:
            raise InvalidInput(f"options.{key} must be a short string.", code="invalid_provider_options")
    for url_option in ("management_url", "authority_url"):
        if url_option in options:
            options[url_option] = _check_url(options[url_option], f"options.{url_option}")
    return options


def _check_url(url: str, param: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.username or parts.password:
        raise InvalidInput(
            f"'{param}' must be an absolute http(s) URL without credentials, e.g. https://api.openai.com/v1.",
            code="invalid_base_url",
            param=param,
        )
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise InvalidInput(f"'{param}' has an invalid port.", code="invalid_base_url", param=param) from None
    host = parts.hostname
    if host in get_settings().provider_allowed_hosts:
        return url.rstrip("/")
    try:
        infos = socket.getaddrinfo(host, port, proto=socket.IPPROTO_TCP)
    except (socket.gaierror, UnicodeError):
        raise InvalidInput(
            f"Cannot resolve the host of '{param}' ({host!r}).",
            code="provider_host_unresolvable",
            param=param,
        ) from None
    for info in infos:
        address = ipaddress.ip_address(str(info[4][0]).split("%", 1)[0])
        if not is_public(address):
            raise InvalidInput(
                f"'{param}' resolves to the non-public address {address}; providers must be public "
                "(operators can allow a host with TUNEFORGE_PROVIDER_ALLOWED_HOSTS).",
                code="provider_destination_forbidden",
                param=param,
            )
    return url.rstrip("/")
