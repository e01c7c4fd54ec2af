"""Fine-tuning providers, all spoken to through the official `openai` SDK.

v1 knows the default provider from settings: OpenAI (or any OpenAI-compatible base URL) when
TUNEFORGE_OPENAI_API_KEY is set, otherwise the bundled sandbox."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from openai import DefaultHttpx2Client, OpenAI, Timeout
from standardwebhooks import Webhook, WebhookVerificationError

from shared.config import get_settings
from shared.errors import InvalidInput, NotFound

# Connect fast, read patiently (TUNEFORGE_PROVIDER_TIMEOUT_SECONDS): uploads and job creation
# can take a while upstream.
CONNECT_TIMEOUT = 5.0


@dataclass(frozen=True)
class Provider:
    name: str
    base_url: str
    api_key: str


def default_name() -> str:
    return "sandbox" if get_settings().uses_sandbox else "openai"


def resolve(name: str | None) -> Provider:
    settings = get_settings()
    chosen = name or default_name()
    if chosen not in ("openai", "sandbox", "default"):
        raise InvalidInput(
            f"Unknown provider {chosen!r}. This deployment offers {default_name()!r}.",
            code="unknown_provider",
            param="provider",
        )
    if chosen == "openai" and settings.uses_sandbox:
        raise InvalidInput(
            "The openai provider needs TUNEFORGE_OPENAI_API_KEY; none is configured, so only the "
            "sandbox is available.",
            code="provider_not_configured",
            param="provider",
        )
    if chosen == "default":
        chosen = default_name()
    if chosen == "sandbox":
        return Provider(
            name="sandbox",
            base_url=settings.default_provider_base_url
            if settings.uses_sandbox
            else settings.sandbox_base_url,
            api_key="sk-sandbox",
        )
    return Provider(
        name="openai", base_url=settings.default_provider_base_url, api_key=settings.default_provider_api_key
    )


def verify_webhook(body: bytes, headers: Mapping[str, str]) -> dict[str, Any]:
    """Check a provider's Standard Webhooks signature and return the event it carries."""
    secret = get_settings().openai_webhook_secret
    if secret is None:
        raise NotFound(
            "Provider webhooks are off: set TUNEFORGE_OPENAI_WEBHOOK_SECRET to the signing secret "
            "shown when the webhook was created at the provider.",
            code="provider_webhooks_disabled",
        )
    try:
        event = Webhook(secret.get_secret_value()).verify(body, dict(headers))
    except WebhookVerificationError as exc:
        raise InvalidInput(
            f"The webhook signature does not verify: {exc}.", code="invalid_signature"
        ) from None
    if not isinstance(event, dict) or not isinstance(event.get("data"), dict):
        raise InvalidInput("The webhook body is not an event object.", code="invalid_event")
    return event


@lru_cache(maxsize=64)
def client(provider: Provider) -> OpenAI:
    """One client per provider and process, so connections are reused between tasks."""
    timeout = Timeout(get_settings().provider_timeout_seconds, connect=CONNECT_TIMEOUT)
    return OpenAI(
        api_key=provider.api_key,
        base_url=provider.base_url,
        timeout=timeout,
        max_retries=2,
        # A provider that redirects is misconfigured or compromised: never follow it with our key.
        http_client=DefaultHttpx2Client(follow_redirects=False, timeout=timeout),
    )
