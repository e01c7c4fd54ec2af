"""Fixtures of the provider tests (tests/e2e/test_providers.py, test_provider_lifecycle.py):
sandboxes that behave like a provider, and an API whose clock says FUTURE. Each module gets its
own processes, logged under its own names (the canary test reads every log)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.conftest import TEST_ENV
from tests.e2e.provider_support import FUTURE, serve


def _name(request: pytest.FixtureRequest, what: str) -> str:
    return f"{what}-{request.module.__name__.rsplit('.', 1)[-1]}"


@pytest.fixture(scope="module")
def azure_sandbox(stack, request: pytest.FixtureRequest) -> Iterator[str]:  # type: ignore[no-untyped-def]
    yield from serve(_name(request, "sandbox-azure"), ["sandbox", "--flavor", "azure"], TEST_ENV)


@pytest.fixture(scope="module")
def compatible_sandbox(stack, request: pytest.FixtureRequest) -> Iterator[str]:  # type: ignore[no-untyped-def]
    yield from serve(_name(request, "sandbox-compatible"), ["sandbox"], TEST_ENV)


@pytest.fixture(scope="module")
def future_api(stack, request: pytest.FixtureRequest) -> Iterator[str]:  # type: ignore[no-untyped-def]
    """The same database and queue, on an API whose clock says FUTURE."""
    yield from serve(_name(request, "api-future"), ["api"], {**TEST_ENV, "TUNEFORGE_NOW": FUTURE})
