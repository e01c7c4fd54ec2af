"""`tuneforge trainer`: the sandbox's HTTP layer with the real engine behind it."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI

from sandbox.app import create_app
from trainer.catalog import TrainerCatalog
from trainer.engine import DEFAULT_ORG, TrainerEngine
from trainer.training import BASE_LEARNING_RATE, LORA_RANK


def create_trainer_app(
    base_models: list[str],
    data_dir: Path,
    *,
    learning_rate: float = BASE_LEARNING_RATE,
    lora_rank: int = LORA_RANK,
    max_tokens: int = 1024,
    org: str = DEFAULT_ORG,
    threads: int | None = None,
) -> FastAPI:
    if threads:
        import torch

        torch.set_num_threads(threads)
    catalog = TrainerCatalog(base_models, max_tokens)
    engine = TrainerEngine(
        catalog, data_dir, learning_rate=learning_rate, lora_rank=lora_rank, max_tokens=max_tokens, org=org
    )
    app = create_app(time_scale=1.0, flavor="openai", engine=engine)
    app.router.on_shutdown.append(engine.close)
    return app
