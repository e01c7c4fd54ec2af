"""Which base models each kind of provider tunes, until when, and the clock that decides it.

The data is `shared/data/providers.json` (per kind: the date new jobs stop, the models, their
shutdown dates where they differ from prices.json) plus what an account's own GET /models said
(`refresh`). Nothing here is a constant in code (DESIGN.md §2)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime
from functools import cache
from pathlib import Path
from typing import Any

import orjson

from shared import pricing
from shared.config import get_settings

CATALOG_PATH = Path(__file__).parent.parent / "data" / "providers.json"


@dataclass(frozen=True)
class KindTerms:
    kind: str
    label: str
    no_new_jobs_from: date | None
    webhooks: bool
    deployment_step: bool
    # None: any model of the price catalog.
    models: dict[str, dict[str, Any]] | None
    # False: the price catalog's (OpenAI's) shutdown dates do not apply to this kind.
    shutdown_dates: bool = True


@dataclass(frozen=True)
class ModelTerms:
    name: str
    methods: tuple[str, ...]
    shutdown_date: date | None
    max_tokens_per_example: int
    training_per_1m: float


def now() -> datetime:
    """The time Tuneforge believes it is for lifecycles: TUNEFORGE_NOW, else the real clock."""
    configured = get_settings().now
    if configured is None:
        return datetime.now(UTC)
    return configured if configured.tzinfo else configured.replace(tzinfo=UTC)


def today() -> date:
    return now().date()


@cache
def load(path: Path = CATALOG_PATH) -> dict[str, KindTerms]:
    raw = orjson.loads(path.read_bytes())
    kinds: dict[str, KindTerms] = {}
    for kind, spec in raw["providers"].items():
        cutoff = spec.get("no_new_jobs_from")
        models = spec.get("models")
        kinds[kind] = KindTerms(
            kind=kind,
            label=spec.get("label", kind),
            no_new_jobs_from=date.fromisoformat(cutoff) if cutoff else None,
            webhooks=bool(spec.get("webhooks")),
            deployment_step=bool(spec.get("deployment_step")),
            models=None if models == "*" else dict(models or {}),
            shutdown_dates=bool(spec.get("shutdown_dates", True)),
        )
    return kinds


def kind_terms(kind: str) -> KindTerms:
    return load()[kind]


def model_terms(kind: str, model: str, overrides: dict[str, Any] | None = None) -> ModelTerms | None:
    """The terms of `model` (snapshot or alias) at a provider of `kind`; None when it is not
    tunable there. `overrides` is an account's refreshed catalog ({"models": {name: {...}}})."""
    terms = kind_terms(kind)
    try:
        price = pricing.resolve_model(model)
    except Exception:  # noqa: BLE001 - an unknown name is simply not tunable here
        return None
    if terms.models is not None and price.name not in terms.models:
        return None
    spec = dict((terms.models or {}).get(price.name) or {})
    spec.update(((overrides or {}).get("models") or {}).get(price.name) or {})
    shutdown: date | None = price.shutdown_date if terms.shutdown_dates else None
    if "shutdown_date" in spec:
        shutdown = date.fromisoformat(spec["shutdown_date"]) if spec["shutdown_date"] else None
    return ModelTerms(
        name=price.name,
        methods=tuple(spec.get("methods") or price.methods),
        shutdown_date=shutdown,
        max_tokens_per_example=price.max_tokens_per_example,
        training_per_1m=price.training_per_1m,
    )


def tunable_models(kind: str, overrides: dict[str, Any] | None = None) -> list[ModelTerms]:
    terms = kind_terms(kind)
    names = terms.models.keys() if terms.models is not None else pricing.load_catalog().models.keys()
    found = (model_terms(kind, name, overrides) for name in sorted(names))
    return [m for m in found if m is not None]


def shutdown_from_models_list(entries: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """What a provider's GET /models says about shutdowns: OpenAI's `shutdown_date`
    ("YYYY-MM-DD"), or Azure's `deprecation.inference` (Unix seconds)."""
    found: dict[str, dict[str, Any]] = {}
    for entry in entries:
        model_id = entry.get("id")
        if not isinstance(model_id, str) or model_id.startswith("ft:"):
            continue
        shutdown = entry.get("shutdown_date")
        deprecation = entry.get("deprecation")
        if shutdown is None and isinstance(deprecation, dict) and deprecation.get("inference"):
            try:
                shutdown = datetime.fromtimestamp(int(deprecation["inference"]), tz=UTC).date().isoformat()
            except (TypeError, ValueError, OverflowError):
                shutdown = None
        if "shutdown_date" in entry or shutdown is not None:
            try:
                name = pricing.resolve_model(model_id).name
            except Exception:  # noqa: BLE001 - models we cannot price are not tunable here
                continue
            if isinstance(shutdown, str):
                try:
                    date.fromisoformat(shutdown)
                except ValueError:
                    continue
            found[name] = {"shutdown_date": shutdown}
    return found
