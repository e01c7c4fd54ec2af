"""Chat routing for tunes on provider accounts, on the database: a tuned model named the
provider's way (Azure's `<base>.ft-<id>`) is found by that name, served
under the deployment, and priced as a fine-tune of its base."""

from __future__ import annotations

import uuid

import pytest
from cryptography.fernet import Fernet

from shared import auth, pricing, providers
from shared.chat import routing
from shared.db import session_scope
from shared.errors import InvalidInput, InvalidState
from shared.ids import new_id
from shared.models import Dataset, ProviderAccount, Tune
from shared.providers import accounts


def _azure_tune(session, project_id: str) -> Tune:  # type: ignore[no-untyped-def]
    account = accounts.create(
        session,
        project_id=project_id,
        name="azure",
        kind="azure_openai",
        base_url="http://127.0.0.1:9",
        api_key="azure-key-0123456789",
        api_version="2024-10-21",
    )
    dataset = Dataset(
        id=new_id("ds"), project_id=project_id, status="ready", options={}, raw_blob="x", raw_bytes=1
    )
    session.add(dataset)
    tune = Tune(
        id=new_id("tune"),
        project_id=project_id,
        dataset_id=dataset.id,
        status="succeeded",
        base_model="gpt-4o-mini-2024-07-18",
        provider="azure",
        provider_account_id=account.id,
        fine_tuned_model="gpt-4o-mini-2024-07-18.ft-0e208cf33a6a466994aff31a08aba678",
        deployment="tune-medqa",
    )
    session.add(tune)
    session.flush()
    return tune


def test_an_azure_named_tune_routes_to_its_deployment(database) -> None:  # type: ignore[no-untyped-def]
    with session_scope() as session:
        project = auth.get_or_create_project(session, f"routing-{uuid.uuid4().hex[:8]}")
        tune = _azure_tune(session, project.id)
        for name in (tune.id, tune.fine_tuned_model):
            route = routing.resolve_target(session, project_id=project.id, model=name)
            assert route.tune_id == tune.id and route.upstream_model == "tune-medqa"
            assert route.provider.kind == "azure_openai" and route.provider.api_key == "azure-key-0123456789"
            assert (
                route.provider.chat_path(route.upstream_model)
                == "openai/deployments/tune-medqa/chat/completions"
            )
        assert route.priced_as == "ft:gpt-4o-mini-2024-07-18"
        # Fine-tuned prices (0.30 / 1.20 per 1M), not zero and not the base model's.
        assert pricing.inference_cost(route.priced_as, 1_000_000, 1_000_000) == 1.5
        listed = {m["id"]: m for m in routing.list_models(session, project_id=project.id)}
        entry = listed[tune.fine_tuned_model]
        assert entry["provider"] == "azure" and entry["shutdown_date"] is None
        assert entry["deprecation_warning"] is False


def test_an_unknown_provider_names_the_ones_the_project_has(database) -> None:  # type: ignore[no-untyped-def]
    with session_scope() as session:
        project = auth.get_or_create_project(session, f"routing-{uuid.uuid4().hex[:8]}")
        _azure_tune(session, project.id)
        with pytest.raises(InvalidInput) as caught:
            providers.resolve("azur", session=session, project_id=project.id)
        assert caught.value.code == "unknown_provider"
        assert "azure" in caught.value.message and "sandbox" in caught.value.message
        # Another project's account is not reachable by name, nor by id.
        other = auth.get_or_create_project(session, f"routing-{uuid.uuid4().hex[:8]}")
        account_id = providers.resolve("azure", session=session, project_id=project.id).account_id
        with pytest.raises(InvalidInput):
            providers.resolve("azure", session=session, project_id=other.id)
        with pytest.raises(InvalidInput):
            providers.resolve(account_id, session=session, project_id=other.id)


def test_a_key_stored_under_another_secret_is_a_clear_error(database) -> None:  # type: ignore[no-untyped-def]
    with session_scope() as session:
        project = auth.get_or_create_project(session, f"routing-{uuid.uuid4().hex[:8]}")
        tune = _azure_tune(session, project.id)
        account = session.get(ProviderAccount, tune.provider_account_id)
        # What a row encrypted under an earlier TUNEFORGE_SECRET_KEY looks like to this one.
        account.api_key = Fernet(Fernet.generate_key()).encrypt(b"old-key").decode()
        session.flush()
        with pytest.raises(InvalidState) as caught:
            routing.resolve_target(session, project_id=project.id, model=tune.id)
        assert caught.value.code == "provider_key_unreadable" and "old-key" not in caught.value.message
        session.rollback()
