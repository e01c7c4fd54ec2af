"""The base models the sandbox knows, as data (pricing-and-models.md says the catalog must be data).

Dates come from the reference kit: shutdown dates from OpenAI's deprecations page and third-party
summaries of it; `created` values are the snapshots' publication times as `/v1/models` reports them.
The per-example token limit bounds billed tokens (longer examples are truncated, not rejected).
"""

from __future__ import annotations

from dataclasses import dataclass

ORG_ID = "org-tuneforge-sandbox"
ORG_SLUG = "tuneforge-sandbox"
BASE_OWNER = "system"


@dataclass(frozen=True)
class BaseModel:
    id: str
    created: int
    shutdown_date: str | None
    encoding: str
    max_example_tokens: int
    aliases: tuple[str, ...] = ()
    methods: frozenset[str] = frozenset({"supervised", "dpo"})


BASE_MODELS: tuple[BaseModel, ...] = (
    BaseModel("gpt-4o-mini-2024-07-18", 1721172717, "2027-01-14", "o200k_base", 65536, ("gpt-4o-mini",)),
    BaseModel("gpt-4o-2024-08-06", 1722814719, "2027-01-14", "o200k_base", 65536, ("gpt-4o",)),
    BaseModel("gpt-4.1-2025-04-14", 1744316542, "2027-01-14", "o200k_base", 65536, ("gpt-4.1",)),
    BaseModel("gpt-4.1-mini-2025-04-14", 1744317547, "2027-01-14", "o200k_base", 65536, ("gpt-4.1-mini",)),
    BaseModel(
        "gpt-4.1-nano-2025-04-14",
        1744321707,
        "2026-10-23",
        "o200k_base",
        65536,
        ("gpt-4.1-nano",),
        frozenset({"supervised"}),
    ),
    BaseModel(
        "gpt-3.5-turbo-0125",
        1706048358,
        "2026-10-23",
        "cl100k_base",
        16385,
        ("gpt-3.5-turbo",),
        frozenset({"supervised"}),
    ),
)

_BY_NAME: dict[str, BaseModel] = {}
for _model in BASE_MODELS:
    _BY_NAME[_model.id] = _model
    for _alias in _model.aliases:
        _BY_NAME[_alias] = _model


def resolve_base(name: str) -> BaseModel | None:
    """A snapshot or alias (`gpt-4o-mini`) → its snapshot entry; None when unknown."""
    return _BY_NAME.get(name)


def all_base_names() -> list[tuple[str, BaseModel]]:
    """Snapshots and aliases, as `/v1/models` lists them (the real API lists aliases too)."""
    names: list[tuple[str, BaseModel]] = []
    for model in BASE_MODELS:
        names.append((model.id, model))
        names.extend((alias, model) for alias in model.aliases)
    return names


def base_of_ft_name(name: str) -> BaseModel | None:
    """`ft:<base>:<org>:<suffix>:<id>[:ckpt-step-N]` → the base entry named in it."""
    if not name.startswith("ft:"):
        return None
    parts = name.split(":")
    return resolve_base(parts[1]) if len(parts) > 1 else None


class Catalog:
    """The base models one server tunes and serves: the sandbox's OpenAI snapshots, or the local
    models a trainer was started with (trainer/catalog.py). Routes ask the engine's catalog, so
    one HTTP layer serves both."""

    def __init__(self, models: tuple[BaseModel, ...]) -> None:
        self.models = models
        self._by_name = {name: m for m in models for name in (m.id, *m.aliases)}

    def resolve(self, name: str) -> BaseModel | None:
        return self._by_name.get(name)

    def names(self) -> list[tuple[str, BaseModel]]:
        return [(name, m) for m in self.models for name in (m.id, *m.aliases)]

    def base_of_ft_name(self, name: str) -> BaseModel | None:
        if not name.startswith("ft:"):
            return None
        parts = name.split(":")
        return self.resolve(parts[1]) if len(parts) > 1 else None


SANDBOX_CATALOG = Catalog(BASE_MODELS)


def encoding_for(model_name: str) -> str:
    """The tiktoken encoding for a model name; gpt-4o/4.1-era models use o200k_base."""
    base = resolve_base(model_name) or base_of_ft_name(model_name)
    if base is not None:
        return base.encoding
    bare = model_name.split(":")[1] if model_name.startswith("ft:") else model_name
    if bare.startswith(("gpt-3.5", "gpt-4-")) or bare == "gpt-4":
        return "cl100k_base"
    return "o200k_base"
