from __future__ import annotations

import os
from datetime import date
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
os.environ.setdefault("TIKTOKEN_CACHE_DIR", str(REPO / ".." / "shared" / "tiktoken"))

from shared import pricing, tokens  # noqa: E402
from shared.errors import InvalidInput  # noqa: E402


def test_walkthrough_figure_is_exact() -> None:
    # $0.008 / 1K training tokens: 100,000 tokens × 3 epochs = $2.40.
    q = pricing.quote("gpt-3.5-turbo", billed_tokens_per_epoch=100_000, n_epochs=3)
    assert q.model == "gpt-3.5-turbo-0125"
    assert q.price_per_million == 8.0
    assert q.billed_tokens == 300_000
    assert q.cost_usd == 2.40
    assert q.n_epochs_auto is False
    assert q.price_version == "2025-07"
    by_examples = pricing.quote("gpt-3.5-turbo-0125", example_token_counts=[1000] * 100, n_epochs=3)
    assert by_examples.cost_usd == 2.40
    assert by_examples.n_examples == 100
    assert pricing.quote("gpt-4o-mini", billed_tokens_per_epoch=100_000, n_epochs=3).cost_usd == 0.90


@pytest.mark.parametrize(
    ("n", "epochs"),
    [
        (1, 25),
        (4, 25),
        (5, 20),
        (10, 10),
        (11, 9),
        (20, 5),
        (33, 3),
        (8333, 3),
        (8334, 2),
        (12500, 2),
        (12501, 1),
        (1_000_000, 1),
    ],
)
def test_default_epochs_table(n: int, epochs: int) -> None:
    assert pricing.default_epochs(n) == epochs


def test_auto_epochs_and_limit_capping() -> None:
    q = pricing.quote("gpt-3.5-turbo-0125", example_token_counts=[100] * 10)
    assert (q.n_epochs, q.n_epochs_auto, q.billed_tokens) == (10, True, 10_000)
    capped = pricing.quote("gpt-3.5-turbo-0125", example_token_counts=[20_000, 100], n_epochs=1)
    assert capped.billed_tokens_per_epoch == 16_385 + 100
    q = pricing.quote("gpt-4o-2024-08-06", billed_tokens_per_epoch=12_345, n_examples=11)
    assert q.n_epochs == 9
    assert q.billed_tokens == 111_105
    assert q.cost_usd == 2.7776  # 111,105 × $25/1M = 2.777625 → 4 places, half-up


def test_quote_argument_errors() -> None:
    with pytest.raises(ValueError):
        pricing.quote("gpt-4o-mini", n_epochs=3)
    with pytest.raises(ValueError):
        pricing.quote("gpt-4o-mini", billed_tokens_per_epoch=10, example_token_counts=[10], n_epochs=1)
    for bad in (0, 51, True):
        with pytest.raises(InvalidInput) as err:
            pricing.quote("gpt-4o-mini", billed_tokens_per_epoch=10, n_epochs=bad)
        assert err.value.code == "invalid_n_epochs"
        assert err.value.param == "n_epochs"


def test_resolve_model() -> None:
    assert pricing.resolve_model("gpt-4o-mini").name == "gpt-4o-mini-2024-07-18"
    assert pricing.resolve_model("ft:gpt-4.1-mini-2025-04-14:acme:med:abc").name == "gpt-4.1-mini-2025-04-14"
    old = pricing.resolve_model("gpt-3.5-turbo")
    assert old.max_tokens_per_example == 16385
    assert old.shutdown_date == date(2026, 10, 23)
    assert (old.input_per_1m, old.output_per_1m) == (3.0, 6.0)
    with pytest.raises(InvalidInput) as err:
        pricing.resolve_model("gpt-9-turbo")
    assert err.value.code == "unknown_model"
    assert err.value.param == "model"


def test_catalog_covers_sft_models_and_agrees_with_tokenizer() -> None:
    catalog = pricing.load_catalog()
    assert catalog is pricing.load_catalog()  # cached
    expected = {
        "gpt-4.1-2025-04-14": 25.0,
        "gpt-4.1-mini-2025-04-14": 5.0,
        "gpt-4.1-nano-2025-04-14": 1.5,
        "gpt-4o-2024-08-06": 25.0,
        "gpt-4o-mini-2024-07-18": 3.0,
        "gpt-3.5-turbo-0125": 8.0,
    }
    for name, training in expected.items():
        assert catalog.models[name].training_per_1m == training
    for model in catalog.models.values():
        assert model.encoding == tokens.encoding_name_for_model(model.name)
        assert model.max_tokens_per_example > 0


def test_inference_cost() -> None:
    tuned = "ft:gpt-4o-mini-2024-07-18:acme::abc"
    assert pricing.inference_cost(tuned, 1_000_000, 1_000_000) == 1.50
    assert pricing.inference_cost("gpt-4o-mini", 1_000_000, 1_000_000) == 0.75
    # 400k cached at $0.15 + 600k fresh at $0.30 + 1k out at $1.20
    assert pricing.inference_cost(tuned, 1_000_000, 1_000, cached_tokens=400_000) == 0.2412
    # No cached rate: cached tokens pay the input rate.
    assert pricing.inference_cost("ft:gpt-3.5-turbo-0125:a::b", 1000, 1000, cached_tokens=500) == 0.009
