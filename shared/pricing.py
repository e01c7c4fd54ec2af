"""Prices, limits and the training-cost quote, read from the versioned `shared/data/prices.json`.

Prices change and models shut down, so they are data, never constants here (DESIGN §2). Money is
computed with `Decimal` so the documented figures come out exactly (100,000 tokens × 3 epochs at
$8/1M = $2.40); `cost_usd` is then rounded half-up to 4 decimal places — sub-cent precision, so a
small test dataset does not quote $0.00 — and handed out as a float.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass
from datetime import date
from decimal import ROUND_HALF_UP, Decimal
from functools import cache
from pathlib import Path
from typing import Any

import orjson

from shared.errors import InvalidInput
from shared.tokens import base_model_name

PRICES_PATH = Path(__file__).parent / "data" / "prices.json"

# The cookbook's default-epoch heuristic (training-data.md §5), kept verbatim.
TARGET_EPOCHS = 3
MIN_TARGET_EXAMPLES = 100
MAX_TARGET_EXAMPLES = 25000
MIN_DEFAULT_EPOCHS = 1
MAX_DEFAULT_EPOCHS = 25
# The fine-tuning API accepts n_epochs 1..50.
MAX_EPOCHS = 50

_MILLION = Decimal(1_000_000)
_COST_PLACES = Decimal("0.0001")
_INFERENCE_PLACES = Decimal("0.00000001")


@dataclass(frozen=True)
class ModelPrice:
    name: str
    training_per_1m: float
    input_per_1m: float
    cached_input_per_1m: float | None
    output_per_1m: float
    max_tokens_per_example: int
    encoding: str
    shutdown_date: date | None
    aliases: tuple[str, ...] = ()
    methods: tuple[str, ...] = ("supervised",)
    base_input_per_1m: float | None = None
    base_cached_input_per_1m: float | None = None
    base_output_per_1m: float | None = None


@dataclass(frozen=True)
class Catalog:
    version: str
    source: str
    models: dict[str, ModelPrice]
    aliases: dict[str, str]


@dataclass(frozen=True)
class Quote:
    model: str
    n_epochs: int
    n_epochs_auto: bool
    n_examples: int
    billed_tokens_per_epoch: int
    billed_tokens: int
    cost_usd: float
    price_per_million: float
    price_version: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _parse_model(name: str, raw: dict[str, Any]) -> ModelPrice:
    shutdown = raw.get("shutdown_date")
    return ModelPrice(
        name=name,
        training_per_1m=raw["training_per_1m"],
        input_per_1m=raw["input_per_1m"],
        cached_input_per_1m=raw.get("cached_input_per_1m"),
        output_per_1m=raw["output_per_1m"],
        max_tokens_per_example=int(raw["max_tokens_per_example"]),
        encoding=raw["encoding"],
        shutdown_date=date.fromisoformat(shutdown) if shutdown else None,
        aliases=tuple(raw.get("aliases", ())),
        methods=tuple(raw.get("methods", ("supervised",))),
        base_input_per_1m=raw.get("base_input_per_1m"),
        base_cached_input_per_1m=raw.get("base_cached_input_per_1m"),
        base_output_per_1m=raw.get("base_output_per_1m"),
    )


@cache
def load_catalog(path: Path = PRICES_PATH) -> Catalog:
    raw = orjson.loads(path.read_bytes())
    models = {name: _parse_model(name, spec) for name, spec in raw["models"].items()}
    aliases = {alias: m.name for m in models.values() for alias in m.aliases}
    return Catalog(version=raw["version"], source=raw.get("source", ""), models=models, aliases=aliases)


def resolve_model(name: str) -> ModelPrice:
    """Snapshot name, alias (`gpt-4o-mini`) or fine-tuned name (`ft:<base>:…`) → its price entry."""
    catalog = load_catalog()
    base = base_model_name(name.strip())
    snapshot = catalog.aliases.get(base, base)
    model = catalog.models.get(snapshot)
    if model is None:
        known = ", ".join(sorted(catalog.models))
        raise InvalidInput(
            f"Model '{name}' is not in the price catalog (version {catalog.version}); known models: {known}",
            code="unknown_model",
            param="model",
        )
    return model


def default_epochs(n_examples: int) -> int:
    """The cookbook's rule: aim for 3 epochs, but ≥ 100 and ≤ 25,000 example-passes in total.

    Below one example the formula divides by zero; it is treated as one example (25 epochs) —
    the quote is zero tokens either way.
    """
    n = max(1, n_examples)
    n_epochs = TARGET_EPOCHS
    if n * TARGET_EPOCHS < MIN_TARGET_EXAMPLES:
        n_epochs = min(MAX_DEFAULT_EPOCHS, MIN_TARGET_EXAMPLES // n)
    elif n * TARGET_EPOCHS > MAX_TARGET_EXAMPLES:
        n_epochs = max(MIN_DEFAULT_EPOCHS, MAX_TARGET_EXAMPLES // n)
    return n_epochs


def validate_n_epochs(n_epochs: int) -> None:
    if isinstance(n_epochs, bool) or not isinstance(n_epochs, int) or not 1 <= n_epochs <= MAX_EPOCHS:
        raise InvalidInput(
            f"n_epochs must be an integer from 1 to {MAX_EPOCHS}, or omitted for the default",
            code="invalid_n_epochs",
            param="n_epochs",
        )


def quote(
    model: str,
    *,
    example_token_counts: Iterable[int] | None = None,
    billed_tokens_per_epoch: int | None = None,
    n_examples: int | None = None,
    n_epochs: int | None = None,
) -> Quote:
    """Training cost of a file: epochs × Σ min(example tokens, model limit) × price.

    Give either every example's token count (`example_token_counts`; longer examples are billed
    at the limit, as the provider truncates them) or the already-capped per-epoch sum
    (`billed_tokens_per_epoch`, then `n_examples` is needed for the default epoch count).
    """
    price = resolve_model(model)
    if (example_token_counts is None) == (billed_tokens_per_epoch is None):
        raise ValueError("give exactly one of example_token_counts, billed_tokens_per_epoch")
    if example_token_counts is not None:
        limit = price.max_tokens_per_example
        counted = 0
        per_epoch = 0
        for tokens in example_token_counts:
            counted += 1
            per_epoch += min(tokens, limit)
        n_examples = counted if n_examples is None else n_examples
    else:
        per_epoch = int(billed_tokens_per_epoch)  # type: ignore[arg-type]
        if n_examples is None and n_epochs is None:
            raise ValueError("n_examples is needed to choose the default number of epochs")
    auto = n_epochs is None
    epochs = default_epochs(n_examples or 0) if n_epochs is None else n_epochs
    validate_n_epochs(epochs)
    billed = per_epoch * epochs
    cost = (Decimal(billed) * Decimal(str(price.training_per_1m)) / _MILLION).quantize(
        _COST_PLACES, rounding=ROUND_HALF_UP
    )
    return Quote(
        model=price.name,
        n_epochs=epochs,
        n_epochs_auto=auto,
        n_examples=n_examples or 0,
        billed_tokens_per_epoch=per_epoch,
        billed_tokens=billed,
        cost_usd=float(cost),
        price_per_million=price.training_per_1m,
        price_version=load_catalog().version,
    )


def inference_cost(
    model: str, prompt_tokens: int, completion_tokens: int, *, cached_tokens: int = 0
) -> float:
    """USD for one chat call, rounded half-up to 8 decimal places.

    `ft:` names pay fine-tuned prices. A plain base name pays the base model's own prices when the
    catalog knows them, else the fine-tuned ones (an upper bound, never an undercount).
    Cached prompt tokens are part of `prompt_tokens`, billed at the cached rate where one exists.
    """
    price = resolve_model(model)
    tuned = model.strip().startswith("ft:")
    rates = (price.input_per_1m, price.cached_input_per_1m, price.output_per_1m)
    if not tuned and price.base_input_per_1m is not None and price.base_output_per_1m is not None:
        rates = (price.base_input_per_1m, price.base_cached_input_per_1m, price.base_output_per_1m)
    input_rate, cached_rate, output_rate = rates
    cached = min(max(cached_tokens, 0), prompt_tokens)
    if cached_rate is None:
        cached_rate, cached = input_rate, 0
    total = (
        Decimal(prompt_tokens - cached) * Decimal(str(input_rate))
        + Decimal(cached) * Decimal(str(cached_rate))
        + Decimal(completion_tokens) * Decimal(str(output_rate))
    ) / _MILLION
    return float(total.quantize(_INFERENCE_PLACES, rounding=ROUND_HALF_UP))
