"""Incoming fine-tuning webhooks from a provider (OpenAI's `fine_tuning.job.*`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from standardwebhooks import Webhook, WebhookVerificationError

from shared.config import get_settings
from shared.errors import InvalidInput, NotFound


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
