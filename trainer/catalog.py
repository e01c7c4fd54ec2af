"""The base models a trainer serves and tunes: `--base-model NAME=PATH_OR_HUB_ID`, repeatable.

`NAME` is what clients call the model (`model` in a job or a chat request); several names may
point at the same path (`--base-model gpt-4o-mini=/m --base-model gpt-4o-mini-2024-07-18=/m`), in
which case the first is the model's id, the others its aliases, and it is loaded once. A hub id is
resolved by transformers' own cache and download rules (HF_HOME, HF_HUB_OFFLINE).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from sandbox.catalog import BaseModel, Catalog


class BaseModelSpecError(ValueError):
    pass


@dataclass(frozen=True)
class LocalBase:
    id: str
    source: str


def parse_specs(specs: list[str]) -> list[tuple[str, str]]:
    pairs = []
    for spec in specs:
        name, sep, source = spec.partition("=")
        if not sep or not name.strip() or not source.strip():
            raise BaseModelSpecError(f"--base-model takes NAME=PATH_OR_HUB_ID, got {spec!r}")
        if name.startswith("ft:") or ":" in name:
            raise BaseModelSpecError(f"a base model name may not contain ':' (got {name!r})")
        pairs.append((name.strip(), source.strip()))
    return pairs


class TrainerCatalog(Catalog):
    """A `Catalog` (what the HTTP layer asks) that also knows where each model's weights are."""

    def __init__(self, specs: list[str], max_example_tokens: int) -> None:
        by_source: dict[str, list[str]] = {}
        for name, source in parse_specs(specs):
            names = by_source.setdefault(source, [])
            if name not in names:
                names.append(name)
        created = int(time.time())
        models = tuple(
            BaseModel(
                id=names[0],
                created=created,
                shutdown_date=None,
                encoding="o200k_base",  # only for the validation step's token estimate
                max_example_tokens=max_example_tokens,
                aliases=tuple(names[1:]),
                methods=frozenset({"supervised"}),
            )
            for names in by_source.values()
        )
        super().__init__(models)
        self.sources = {names[0]: source for source, names in by_source.items()}

    def source_of(self, base_id: str) -> str:
        return self.sources[base_id]
