"""Shared by the provider tests: sandboxes that behave like a provider, an API on a future
clock, canary keys and a client that checks every response for them."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import httpx

from tests.conftest import WORK_DIR
from tests.e2e.story import upload_dataset, wait_dataset
from tests.support.paths import HUATUO
from tests.support.procs import Proc, free_port, wait_http

CANARY = "sk-canary-" + uuid.uuid4().hex
MANAGEMENT_CANARY = "arm-canary-" + uuid.uuid4().hex
API_VERSION = "2024-10-21"
# Past OpenAI's cutoff (2027-01-06) and gpt-4o-mini's shutdown there (2027-01-14).
FUTURE = "2027-01-15T12:00:00"
LOG_DIR = WORK_DIR / "logs"
QUESTION = [{"role": "user", "content": "头痛怎么办？"}]


def serve(name: str, args: list[str], env: dict[str, str]) -> Iterator[str]:
    port = free_port()
    proc = Proc(name, [*args, "--port", str(port)], env, LOG_DIR)
    try:
        wait_http(f"http://127.0.0.1:{port}/healthz", proc)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.stop()


class Checked(httpx.Client):
    """Every response is checked for the canary keys before the test sees it."""

    def send(self, request: httpx.Request, **kwargs: Any) -> httpx.Response:  # type: ignore[override]
        response = super().send(request, **kwargs)
        response.read()
        for canary in (CANARY, MANAGEMENT_CANARY):
            assert canary not in response.text, f"{request.method} {request.url} leaked a key"
        return response


def http_for(api_url: str, key: str) -> httpx.Client:
    return Checked(base_url=api_url, headers={"Authorization": f"Bearer {key}"}, timeout=30)


def add_provider(http: httpx.Client, **body: Any) -> dict[str, Any]:
    response = http.post("/v1/providers", json={"api_key": CANARY, **body})
    assert response.status_code == 201, response.text
    return response.json()


def azure_body(name: str, azure_url: str, *, principal: bool = False) -> dict[str, Any]:
    """An Azure account; with `principal`, management_key is a service principal's secret that
    Tuneforge exchanges for tokens, else it is the management token itself."""
    signin = {"tenant_id": "tenant-1", "client_id": "app-1", "authority_url": azure_url} if principal else {}
    return {
        "name": name,
        "kind": "azure_openai",
        "base_url": azure_url,
        "api_version": API_VERSION,
        "management_key": MANAGEMENT_CANARY,
        "options": {
            "management_url": azure_url,
            "subscription_id": "sub-1",
            "resource_group": "rg-1",
            "resource_name": "res-1",
            **signin,
        },
    }


def ready_dataset(http: httpx.Client) -> str:
    dataset = upload_dataset(http, HUATUO, preset="huatuo", sample_size="12", seed="3")
    dataset = wait_dataset(http, dataset["id"])
    assert dataset["status"] == "ready", dataset
    return str(dataset["id"])


def tune(http: httpx.Client, dataset_id: str, provider: str, model: str = "gpt-4o-mini") -> httpx.Response:
    return http.post("/v1/tunes", json={"dataset_id": dataset_id, "base_model": model, "provider": provider})


def error_code(response: httpx.Response) -> str:
    return str(response.json()["error"]["code"])


def azure_calls(azure_url: str) -> list[dict[str, Any]]:
    return list(httpx.get(f"{azure_url}/sandbox/azure/calls").json()["data"])


def management_calls(azure_url: str, deployment: str) -> list[dict[str, Any]]:
    calls = httpx.get(f"{azure_url}/sandbox/azure/calls").json()["management"]
    return [c for c in calls if c["path"].endswith(f"/deployments/{deployment}")]
