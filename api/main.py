"""The app factory: `uvicorn --factory api.main:create_app`."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from starlette.types import ASGIApp

from api import errors
from api.access_log import AccessLog
from api.chat_fastpath import ChatFastPath
from api.idempotency import IdempotencyMiddleware
from api.routes import (
    aliases,
    chat,
    datasets,
    evals,
    health,
    provider_webhooks,
    providers,
    tunes,
    webhooks,
)
from shared import logs
from shared.chat import accounting, gateway, limits


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    flusher = asyncio.create_task(accounting.recorder.run())
    limits.get_limiter().start()
    yield
    flusher.cancel()
    await gateway.close_all()


def create_app() -> ASGIApp:
    """The FastAPI app behind the chat fast path (api/chat_fastpath.py)."""
    logs.configure()
    app = FastAPI(
        title="Tuneforge",
        version="0.1.0",
        description="Fine-tuning control plane with an OpenAI-compatible chat endpoint.",
        lifespan=lifespan,
    )
    errors.install(app)
    app.add_middleware(IdempotencyMiddleware)
    for module in (health, datasets, tunes, webhooks, provider_webhooks, chat, aliases, evals, providers):
        app.include_router(module.router)
    return ChatFastPath(AccessLog(app))
