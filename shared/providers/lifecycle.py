"""Life after a provider stops taking jobs: refuse doomed tunes up front, naming where the
same work can go instead, and warn before a tuned model's base shuts down."""

from __future__ import annotations

import contextlib
import time
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from shared import providers
from shared.config import get_settings
from shared.errors import InvalidInput, InvalidState
from shared.models import ProviderAccount, Tune
from shared.providers import catalog
from shared.providers.base import Provider
from shared.tunes import states
from shared.tunes.serialize import tune_dict
from shared.webhooks import service as webhooks

WARNING_EVENT = "model.deprecation_warning"


def overrides_for(session: Session, provider: Provider) -> dict[str, Any] | None:
    if provider.account_id is None:
        return None
    account = session.get(ProviderAccount, provider.account_id)
    return account.catalog if account is not None else None


def refusal(session: Session, provider: Provider, model: str, *, on: date) -> tuple[str, str] | None:
    """Why `provider` would not take a new job for `model` on `on` (code, message); None when
    it would."""
    kind = catalog.kind_terms(provider.kind)
    if kind.no_new_jobs_from is not None and on >= kind.no_new_jobs_from:
        return (
            "provider_not_accepting_jobs",
            f"{kind.label} stopped creating fine-tuning jobs on {kind.no_new_jobs_from.isoformat()} "
            f"(provider {provider.display_name!r}).",
        )
    terms = catalog.model_terms(provider.kind, model, overrides_for(session, provider))
    if terms is None:
        return (
            "model_not_tunable",
            f"Provider {provider.display_name!r} ({kind.label}) does not fine-tune {model}.",
        )
    if terms.shutdown_date is not None and on >= terms.shutdown_date:
        return (
            "model_shut_down",
            f"{terms.name} shut down at {provider.display_name!r} on {terms.shutdown_date.isoformat()}; "
            "a model tuned from it could not serve.",
        )
    return None


def check_accepts(session: Session, *, project_id: str, provider: Provider, model: str) -> None:
    """Raise a 4xx naming the alternatives when the job would be refused or die at once."""
    on = catalog.today()
    refused = refusal(session, provider, model, on=on)
    if refused is None:
        return
    code, reason = refused
    elsewhere = [
        p.display_name
        for p in candidates(session, project_id)
        if p.name != provider.name and refusal(session, p, model, on=on) is None
    ]
    here: list[str] = []
    kind = catalog.kind_terms(provider.kind)
    if kind.no_new_jobs_from is None or on < kind.no_new_jobs_from:
        overrides = overrides_for(session, provider)
        here = [
            m.name
            for m in catalog.tunable_models(provider.kind, overrides)
            if m.shutdown_date is None or on < m.shutdown_date
        ]
    options = []
    if elsewhere:
        options.append(f"tune {model} on {', '.join(elsewhere)}")
    if here:
        options.append(f"pick another base model at {provider.display_name!r}: {', '.join(here)}")
    if not options:
        options.append("add a provider that still tunes it (POST /v1/providers)")
    raise InvalidInput(
        f"{reason} Instead: {'; or '.join(options)}.",
        code=code,
        param="provider" if code == "provider_not_accepting_jobs" else "base_model",
        details={"alternatives": {"providers": elsewhere, "base_models": here}, "as_of": on.isoformat()},
    )


def candidates(session: Session, project_id: str) -> list[Provider]:
    """The providers a project can use now: its accounts, then the built-in default."""
    accounts = session.scalars(
        select(ProviderAccount).where(ProviderAccount.project_id == project_id).order_by(ProviderAccount.name)
    )
    found = []
    for account in accounts:
        with contextlib.suppress(InvalidState):  # an unreadable key is reported where it is used
            found.append(providers.from_account(account))
    with contextlib.suppress(InvalidInput):  # no built-in default without an OpenAI key
        found.append(providers.builtin("default"))
    return found


def shutdown_of(session: Session, tune: Tune) -> date | None:
    """When the base model of a tuned model stops serving at the tune's provider (read from the
    account row without decrypting its key: GET /v1/models asks this for every tuned model)."""
    if tune.provider_account_id is not None:
        account = session.get(ProviderAccount, tune.provider_account_id)
        if account is None:
            return None
        kind, overrides = account.kind, account.catalog
    elif tune.provider in providers.BUILTIN_NAMES:
        try:
            kind, overrides = providers.builtin(tune.provider).kind, None
        except InvalidInput:  # the openai built-in without a key any more
            return None
    else:  # its account was removed
        return None
    terms = catalog.model_terms(kind, tune.base_model, overrides)
    return terms.shutdown_date if terms else None


def warning_due(shutdown: date | None, *, on: date | None = None) -> bool:
    if shutdown is None:
        return False
    on = on or catalog.today()
    return shutdown <= on + timedelta(days=get_settings().deprecation_warning_days)


def warn_due(
    session: Session, *, now: datetime | None = None, project_id: str | None = None, page: int = 500
) -> list[str]:
    """The sweep step: one model.deprecation_warning per succeeded tune whose base shuts down
    within TUNEFORGE_DEPRECATION_WARNING_DAYS; returns the tunes warned. `project_id` narrows
    the pass (a test's own tenant)."""
    at = now or catalog.now()
    on = at.date()
    models = _models_shutting_down(session, on)
    if not models:
        return []
    warned: list[str] = []
    after = ""
    while True:
        stmt = (
            select(Tune)
            .where(
                Tune.status == states.SUCCEEDED,
                Tune.deprecation_warned_at.is_(None),
                Tune.base_model.in_(models),
                Tune.id > after,
            )
            .order_by(Tune.id)
            .limit(page)
            .with_for_update(skip_locked=True)
        )
        if project_id is not None:
            stmt = stmt.where(Tune.project_id == project_id)
        rows = list(session.scalars(stmt))
        for tune in rows:
            shutdown = shutdown_of(session, tune)
            if shutdown is not None and warning_due(shutdown, on=on):
                _warn(session, tune, shutdown, on, at)
                warned.append(tune.id)
        if len(rows) < page:
            break
        after = rows[-1].id
    session.flush()
    return warned


_last_pass = 0.0


def warn_due_every(session: Session, *, interval_seconds: float = 3600.0) -> list[str]:
    """`warn_due` at most once per interval in this process: shutdowns move by days, and a pass
    reads every candidate tune."""
    global _last_pass
    if time.monotonic() - _last_pass < interval_seconds and _last_pass:
        return []
    _last_pass = time.monotonic()
    return warn_due(session)


def _models_shutting_down(session: Session, on: date) -> list[str]:
    """Base models with a shutdown date inside the window at any kind of provider or account."""
    horizon = on + timedelta(days=get_settings().deprecation_warning_days)
    names = {
        m.name
        for kind in catalog.load()
        for m in catalog.tunable_models(kind)
        if m.shutdown_date is not None and m.shutdown_date <= horizon
    }
    for refreshed in session.scalars(
        select(ProviderAccount.catalog).where(ProviderAccount.catalog.is_not(None))
    ):
        for name, spec in ((refreshed or {}).get("models") or {}).items():
            if (
                isinstance(spec, dict)
                and spec.get("shutdown_date")
                and spec["shutdown_date"] <= horizon.isoformat()
            ):
                names.add(name)
    return sorted(names)


def _warn(session: Session, tune: Tune, shutdown: date, on: date, at: datetime) -> None:
    tune.deprecation_warned_at = at
    webhooks.emit(
        session,
        project_id=tune.project_id,
        event_type=WARNING_EVENT,
        data={
            **tune_dict(tune),
            "shutdown_date": shutdown.isoformat(),
            "days_left": (shutdown - on).days,
            "retune": f"POST /v1/tunes/{tune.id}/retune",
        },
        callback_url=tune.webhook_url,
        callback_events=(tune.webhook_events or {}).get("types"),
    )
