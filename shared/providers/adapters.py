"""One interface over every provider: an official `openai` SDK client (OpenAI, or AzureOpenAI
for Azure, with its api-version) and, where a tuned model must be deployed before it serves
chat, the deployment step.

Azure's deployment step is a management-plane (Azure Resource Manager) call, not part of the
OpenAI protocol: PUT …/Microsoft.CognitiveServices/accounts/{resource}/deployments/{name}
with a bearer token, body `{"sku", "properties": {"model": {"format": "OpenAI", "name",
"version"}}}`, then `properties.provisioningState` moves from Creating to Succeeded. The
sandbox emulates it (`tuneforge sandbox --flavor azure`)."""

from __future__ import annotations

import hashlib
import re
import time
from dataclasses import dataclass
from functools import lru_cache
from typing import Any
from urllib.parse import quote

import httpx
from openai import AzureOpenAI, DefaultHttpx2Client, OpenAI, Timeout

from shared.config import get_settings
from shared.providers.base import AZURE, Provider

# Connect fast, read patiently (TUNEFORGE_PROVIDER_TIMEOUT_SECONDS): uploads and job creation
# can take a while upstream.
CONNECT_TIMEOUT = 5.0
MANAGEMENT_URL = "https://management.azure.com"
MANAGEMENT_API_VERSION = "2024-10-01"
MANAGEMENT_SCOPE = "https://management.azure.com/.default"
AUTHORITY_URL = "https://login.microsoftonline.com"
DEPLOYMENT_OPTIONS = ("subscription_id", "resource_group", "resource_name")
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")
# (authority, tenant, client, secret digest) -> (token, monotonic expiry)
_tokens: dict[tuple[str, str, str, str], tuple[str, float]] = {}


@lru_cache(maxsize=64)
def client(provider: Provider) -> OpenAI:
    """One client per provider and process, so connections are reused between tasks."""
    timeout = Timeout(get_settings().provider_timeout_seconds, connect=CONNECT_TIMEOUT)
    # A provider that redirects is misconfigured or compromised: never follow it with our key.
    http_client = DefaultHttpx2Client(follow_redirects=False, timeout=timeout)
    if provider.kind == AZURE:
        return AzureOpenAI(
            api_key=provider.api_key,
            api_version=provider.api_version,
            azure_endpoint=provider.base_url,
            timeout=timeout,
            max_retries=2,
            http_client=http_client,
        )
    return OpenAI(
        api_key=provider.api_key,
        base_url=provider.base_url,
        timeout=timeout,
        max_retries=2,
        http_client=http_client,
    )


def needs_deployment(provider: Provider) -> bool:
    return provider.kind == AZURE


def deployment_name(tune_id: str) -> str:
    """Azure deployment names: letters, digits, '-', '_', '.', at most 64 characters."""
    return _UNSAFE.sub("-", tune_id)[:64]


@dataclass(frozen=True)
class DeploymentState:
    state: str  # the provider's provisioningState: Creating, Succeeded, Failed, …
    message: str = ""

    @property
    def ready(self) -> bool:
        return self.state.lower() == "succeeded"

    @property
    def failed(self) -> bool:
        return self.state.lower() in ("failed", "canceled", "cancelled")


class DeploymentRefused(Exception):
    """The management plane refused the deployment for good (a 4xx other than 408/409/429)."""


class DeploymentUnavailable(Exception):
    """The management plane could not be reached or failed; try again later."""


def deploy(provider: Provider, *, deployment: str, model: str) -> DeploymentState:
    """Make sure `deployment` serves `model` and report its state; safe to repeat (a PUT of the
    same deployment is idempotent, and an existing one is only read)."""
    url = _deployment_url(provider, deployment)
    headers = {"Authorization": f"Bearer {management_token(provider)}"}
    params = {"api-version": provider.option("management_api_version", MANAGEMENT_API_VERSION)}
    body = {
        "sku": {"name": provider.option("sku", "standard"), "capacity": int(provider.option("capacity", 1))},
        "properties": {"model": {"format": "OpenAI", "name": model, "version": "1"}},
    }
    timeout = httpx.Timeout(get_settings().provider_timeout_seconds, connect=CONNECT_TIMEOUT)
    try:
        with httpx.Client(timeout=timeout, follow_redirects=False) as http:
            response = http.get(url, params=params, headers=headers)
            if response.status_code == 404:
                response = http.put(url, params=params, headers=headers, json=body)
    except httpx.HTTPError as exc:
        raise DeploymentUnavailable(f"{type(exc).__name__} reaching the management endpoint") from None
    if response.status_code >= 500 or response.status_code in (408, 409, 429):
        raise DeploymentUnavailable(f"the management endpoint answered {response.status_code}")
    if response.status_code >= 400:
        raise DeploymentRefused(f"HTTP {response.status_code}: {_error_message(response)}")
    properties = _json(response).get("properties") or {}
    deployed = ((properties.get("model") or {}).get("name")) if isinstance(properties, dict) else None
    if deployed and deployed != model:
        raise DeploymentRefused(f"deployment {deployment!r} already exists for another model ({deployed})")
    return DeploymentState(state=str(properties.get("provisioningState") or "Creating"))


def management_token(provider: Provider) -> str:
    """The management plane's bearer token. With `tenant_id` and `client_id` options the
    account's `management_key` is a service principal's secret, exchanged for a token by the
    client-credentials flow (Entra ID tokens last about an hour; cached until shortly before
    they expire); otherwise `management_key` is itself the token."""
    secret = provider.management_key or ""
    tenant, client_id = provider.option("tenant_id"), provider.option("client_id")
    if not (tenant and client_id):
        return secret
    authority = str(provider.option("authority_url") or AUTHORITY_URL).rstrip("/")
    cache_key = (authority, str(tenant), str(client_id), hashlib.sha256(secret.encode()).hexdigest())
    cached = _tokens.get(cache_key)
    if cached is not None and cached[1] > time.monotonic():
        return cached[0]
    try:
        response = httpx.post(
            f"{authority}/{quote(str(tenant), safe='')}/oauth2/v2.0/token",
            data={
                "grant_type": "client_credentials",
                "client_id": str(client_id),
                "client_secret": secret,
                "scope": MANAGEMENT_SCOPE,
            },
            timeout=httpx.Timeout(30.0, connect=CONNECT_TIMEOUT),
            follow_redirects=False,
        )
    except httpx.HTTPError as exc:
        raise DeploymentUnavailable(f"{type(exc).__name__} reaching the token endpoint") from None
    if response.status_code >= 500 or response.status_code == 429:
        raise DeploymentUnavailable(f"the token endpoint answered {response.status_code}")
    token = _json(response).get("access_token")
    if response.status_code >= 400 or not isinstance(token, str):
        # Entra's error_description names the problem (wrong secret, unknown client), never the secret.
        detail = str(_json(response).get("error_description") or response.status_code)[:300]
        raise DeploymentRefused(f"the token endpoint refused the service principal: {detail}")
    lifetime = float(_json(response).get("expires_in") or 300)
    _tokens[cache_key] = (token, time.monotonic() + max(lifetime - 120, 30))
    return token


def _deployment_url(provider: Provider, deployment: str) -> str:
    missing = [key for key in DEPLOYMENT_OPTIONS if not provider.option(key)]
    if missing:
        raise DeploymentRefused(
            f"the provider account lacks {', '.join(missing)} (options), needed to deploy tuned models"
        )
    root = str(provider.option("management_url") or MANAGEMENT_URL).rstrip("/")
    parts = [provider.option(key) for key in DEPLOYMENT_OPTIONS]
    sub, group, resource = (quote(str(p), safe="") for p in parts)
    return (
        f"{root}/subscriptions/{sub}/resourceGroups/{group}/providers/Microsoft.CognitiveServices"
        f"/accounts/{resource}/deployments/{quote(deployment, safe='')}"
    )


def _json(response: httpx.Response) -> dict[str, Any]:
    try:
        data = response.json()
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def _error_message(response: httpx.Response) -> str:
    error = _json(response).get("error")
    if isinstance(error, dict) and error.get("message"):
        return str(error["message"])[:500]
    return response.reason_phrase or "refused"
