"""What the rest of Tuneforge knows about a provider: where it is, how to authenticate, and how
its chat endpoint is shaped. Adapters (`adapters.py`) turn one into an SDK client."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

KINDS = ("openai", "azure_openai", "openai_compatible", "sandbox")
AZURE = "azure_openai"


@dataclass(frozen=True)
class Provider:
    # What `resolve` takes back: a built-in name ("openai", "sandbox") or an account id, so a
    # worker or an eval can find the provider again without knowing the project.
    name: str
    base_url: str
    # Never in a repr: a Provider may end up in a log line or a traceback.
    api_key: str = field(repr=False)
    kind: str = "openai"
    api_version: str | None = None
    # The name users gave it (the account name); the built-ins' own name otherwise.
    label: str = ""
    account_id: str | None = None
    # Adapter settings as sorted pairs, so a Provider stays hashable (clients are cached by it).
    options: tuple[tuple[str, Any], ...] = ()
    management_key: str | None = field(default=None, repr=False)

    @property
    def display_name(self) -> str:
        return self.label or self.name

    def option(self, key: str, default: Any = None) -> Any:
        return dict(self.options).get(key, default)

    def chat_path(self, model: str) -> str:
        """The chat endpoint relative to `base_url`. Azure routes by deployment in the path."""
        if self.kind == AZURE:
            return f"openai/deployments/{quote(model, safe='')}/chat/completions"
        return "chat/completions"

    def chat_query(self) -> dict[str, str]:
        return {"api-version": self.api_version or ""} if self.kind == AZURE else {}

    def auth_headers(self) -> dict[str, str]:
        if self.kind == AZURE:
            return {"api-key": self.api_key}
        return {"Authorization": f"Bearer {self.api_key}"}
