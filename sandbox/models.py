"""`/v1/models`: the base catalog plus the fine-tuned models sandbox jobs have produced.

Model ids contain colons (`ft:gpt-4o-mini-2024-07-18:org::abc12345`), hence `{model:path}`.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from sandbox.catalog import BASE_OWNER, BaseModel
from sandbox.errors import ApiError, not_found
from sandbox.store import store_of

router = APIRouter(prefix="/models")


def base_model_dict(name: str, model: BaseModel) -> dict[str, Any]:
    return {
        "id": name,
        "object": "model",
        "created": model.created,
        "owned_by": BASE_OWNER,
        "shutdown_date": model.shutdown_date,
    }


def model_not_found(name: str) -> ApiError:
    return not_found(
        f"The model '{name}' does not exist or you do not have access to it.",
        param="model",
        code="model_not_found",
    )


@router.get("")
def list_models(request: Request) -> dict[str, Any]:
    store = store_of(request)
    data = [base_model_dict(name, model) for name, model in store.catalog.names()]
    data += [tuned.to_dict() for tuned in store.tuned_models()]
    return {"object": "list", "data": data}


@router.get("/{model:path}")
def retrieve_model(request: Request, model: str) -> dict[str, Any]:
    store = store_of(request)
    base = store.catalog.resolve(model)
    if base is not None:
        return base_model_dict(model, base)
    tuned = store.find_tuned(model)
    if tuned is None or tuned.id != model:
        raise model_not_found(model)
    return tuned.to_dict()


@router.delete("/{model:path}")
def delete_model(request: Request, model: str) -> dict[str, Any]:
    if store_of(request).catalog.resolve(model) is not None:
        raise ApiError(
            403,
            f"You have insufficient permissions to delete '{model}': only fine-tuned models can be deleted.",
            param="model",
            code="model_not_deletable",
            headers={"x-should-retry": "false"},
        )
    if not store_of(request).delete_tuned(model):
        raise model_not_found(model)
    return {"id": model, "object": "model", "deleted": True}
