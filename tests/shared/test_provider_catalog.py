"""The provider catalog and lifecycle rules, without a stack: which kind tunes what until when."""

from __future__ import annotations

from datetime import date

import pytest

from shared.db import session_scope
from shared.errors import InvalidInput
from shared.providers import accounts, catalog, lifecycle
from shared.providers.base import Provider

OPENAI = Provider(
    name="openai", base_url="https://api.openai.com/v1", api_key="sk-secret-value-123456", kind="openai"
)
AZURE = Provider(
    name="prov_x",
    base_url="https://r.openai.azure.com",
    api_key="k",
    kind="azure_openai",
    api_version="2024-10-21",
)
COMPATIBLE = Provider(name="prov_y", base_url="https://llm.example/v1", api_key="k", kind="openai_compatible")


def test_a_provider_never_shows_its_keys() -> None:
    shown = repr(Provider(name="n", base_url="u", api_key="sk-secret", management_key="arm-secret"))
    assert "sk-secret" not in shown and "arm-secret" not in shown
    assert accounts.hint("sk-0123456789abcdef") == "…cdef"
    assert accounts.hint("short") == "…"


def test_azure_speaks_its_own_url_shape_and_auth() -> None:
    assert AZURE.chat_path("tune_01-x") == "openai/deployments/tune_01-x/chat/completions"
    assert AZURE.chat_query() == {"api-version": "2024-10-21"}
    assert AZURE.auth_headers() == {"api-key": "k"}
    assert OPENAI.chat_path("ft:gpt-4o-mini:o::x") == "chat/completions" and OPENAI.chat_query() == {}
    assert OPENAI.auth_headers() == {"Authorization": "Bearer sk-secret-value-123456"}


def test_model_terms_per_kind() -> None:
    openai_terms = catalog.model_terms("openai", "gpt-4o-mini")
    assert openai_terms is not None and openai_terms.shutdown_date == date(2027, 1, 14)
    azure_terms = catalog.model_terms("azure_openai", "gpt-4o-mini-2024-07-18")
    assert azure_terms is not None and azure_terms.shutdown_date is None  # Azure's own dates: refresh
    assert catalog.model_terms("azure_openai", "gpt-3.5-turbo-0125") is None  # not listed there
    assert catalog.model_terms("openai_compatible", "gpt-4.1-mini") is not None  # any priced model
    assert catalog.model_terms("openai", "llama-3-70b") is None
    refreshed = {"models": {"gpt-4o-mini-2024-07-18": {"shutdown_date": "2026-12-01"}}}
    overridden = catalog.model_terms("azure_openai", "gpt-4o-mini", refreshed)
    assert overridden is not None and overridden.shutdown_date == date(2026, 12, 1)


def test_shutdowns_read_from_a_models_list_in_either_shape() -> None:
    found = catalog.shutdown_from_models_list(
        [
            {"id": "gpt-4o-mini", "shutdown_date": "2027-02-01"},
            {"id": "gpt-4.1-2025-04-14", "deprecation": {"fine_tune": 1790000000, "inference": 1798761600}},
            {"id": "ft:gpt-4o-mini-2024-07-18:org::abc", "shutdown_date": "2027-01-14"},
            {"id": "unknown-model", "shutdown_date": "2027-01-01"},
            {"id": "gpt-4.1-mini", "shutdown_date": "not a date"},
            {"id": "gpt-4o-2024-08-06", "shutdown_date": None},
        ]
    )
    assert found == {
        "gpt-4o-mini-2024-07-18": {"shutdown_date": "2027-02-01"},
        "gpt-4.1-2025-04-14": {"shutdown_date": "2027-01-01"},
        "gpt-4o-2024-08-06": {"shutdown_date": None},
    }


@pytest.mark.parametrize(
    ("provider", "model", "on", "refused"),
    [
        (OPENAI, "gpt-4o-mini", date(2027, 1, 5), None),
        (OPENAI, "gpt-4o-mini", date(2027, 1, 6), "provider_not_accepting_jobs"),
        (OPENAI, "gpt-3.5-turbo", date(2026, 10, 22), None),
        (OPENAI, "gpt-3.5-turbo", date(2026, 10, 23), "model_shut_down"),
        (AZURE, "gpt-4o-mini", date(2030, 1, 1), None),
        (AZURE, "gpt-3.5-turbo", date(2026, 1, 1), "model_not_tunable"),
        (COMPATIBLE, "gpt-3.5-turbo", date(2030, 1, 1), None),
    ],
)
def test_when_a_provider_takes_a_job(database, provider, model, on, refused) -> None:  # type: ignore[no-untyped-def]
    with session_scope() as session:
        reason = lifecycle.refusal(session, provider, model, on=on)
    assert (reason[0] if reason else None) == refused


def test_the_warning_window() -> None:
    assert lifecycle.warning_due(date(2027, 1, 14), on=date(2026, 12, 15)) is True  # 30 days
    assert lifecycle.warning_due(date(2027, 1, 14), on=date(2026, 12, 14)) is False
    assert lifecycle.warning_due(None, on=date(2027, 1, 1)) is False


def test_base_urls_must_be_public(database) -> None:  # type: ignore[no-untyped-def]
    for url in ("http://127.0.0.2/v1", "http://[::1]/v1", "http://169.254.169.254/", "http://100.64.0.1/"):
        with pytest.raises(InvalidInput) as caught:
            accounts._check_url(url, "base_url")
        assert caught.value.code == "provider_destination_forbidden"
    with pytest.raises(InvalidInput):
        accounts._check_url("https://user:pw@api.openai.com/v1", "base_url")
    # The test environment allows 127.0.0.1 (TUNEFORGE_PROVIDER_ALLOWED_HOSTS), like an operator can.
    assert accounts._check_url("http://127.0.0.1:9/v1/", "base_url") == "http://127.0.0.1:9/v1"
